//! The checks the fuzz targets in `fuzz/` run, one function per target. Each takes
//! arbitrary bytes and returns `Err` with a description when a property fails (the fuzz
//! target turns that into a crash). They live here, not in the fuzz crate, so that the
//! test suite replays the committed corpora through the very same code on stable Rust.
//!
//! ```
//! // Any bytes: never a panic, and whatever decodes re-encodes to the same bytes.
//! sim::fuzz::audit_decode(b"\x00\x01garbage").unwrap();
//! sim::fuzz::bayes(&[7; 40]).unwrap();
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

use audit_chain::merkle::{MerkleTree, leaf_hash, verify_consistency, verify_inclusion};
use audit_chain::{
    AuditEntry, Checkpoint, FileSink, HmacKey, Keyring, LogRecord, MaskingPolicy, NoteSigner,
    NoteVerifier, SealedEntry, StreamChain, scan_dir, verify_dir, verify_records,
};
use bayes_ab::{Beta, CompareConfig, Counts, best_arm, compare, expected_losses, prob_b_beats_a};
use credits_core::{
    Amount, Command, Effect, EntrySeq, HoldId, IdempotencyKey, Ledger, LedgerError,
    MemoryLedgerStore, Receipt, Request, TenantId, TenantSettings,
};
use metered_clock::{Clock, ManualClock, Timestamp};

/// What a check found wrong.
pub type Finding = Result<(), String>;

/// A fuzz target's check function.
pub type Check = fn(&[u8]) -> Finding;

/// The names of the fuzz targets, with their check functions (for corpus replays).
pub const TARGETS: [(&str, Check); 5] = [
    ("audit_decode", audit_decode),
    ("file_recovery", file_recovery),
    ("checkpoint_proof", checkpoint_proof),
    ("ledger_ops", ledger_ops),
    ("bayes", bayes),
];

/// Reads fuzz bytes as small numbers; past the end every read is zero.
#[derive(Debug)]
struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bytes<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bytes { data, pos: 0 }
    }
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.u8();
        }
        u64::from_be_bytes(b)
    }
    fn f64(&mut self) -> f64 {
        f64::from_bits(self.u64())
    }
    fn rest(&mut self) -> &'a [u8] {
        let r = self.data.get(self.pos..).unwrap_or(&[]);
        self.pos = self.data.len();
        r
    }
}

fn keyring() -> Result<Keyring, String> {
    Ok(Keyring::new(
        HmacKey::new(1, [0x42; 32]).map_err(|e| e.to_string())?,
    ))
}

/// Audit entry decoding: never panics; whatever decodes re-encodes to the same bytes, and
/// verifying it does not panic either.
///
/// # Errors
/// A non-canonical encoding that decodes.
pub fn audit_decode(data: &[u8]) -> Finding {
    if let Ok(r) = LogRecord::decode(data) {
        let mut again = Vec::new();
        r.encode(&mut again);
        if again != data {
            return Err("a log record decoded from bytes that are not its encoding".into());
        }
        let _report = verify_records(&keyring()?, &[r], None);
    }
    if let Ok(e) = SealedEntry::decode(data) {
        let mut again = Vec::new();
        e.encode(&mut again);
        if again != data {
            return Err("a sealed entry decoded from bytes that are not its encoding".into());
        }
        let _ = e.compute_hash();
    }
    Ok(())
}

/// File-sink recovery on arbitrary bytes: a segment made of a real prefix (0–3 records)
/// followed by the fuzz bytes, or of the fuzz bytes alone. Opening never panics; when it
/// succeeds the recovered log is a prefix of what was written, the files scan and verify
/// the same way, a second open cuts nothing more, and the log accepts the next record.
///
/// # Errors
/// A broken recovery property.
pub fn file_recovery(data: &[u8]) -> Finding {
    let mut b = Bytes::new(data);
    let mode = b.u8();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let keys = keyring()?;
    let mut chain = StreamChain::new("fz");
    let mut written = Vec::new();
    let seg = dir.path().join(format!("{:020}.seg", 0));
    if mode.is_multiple_of(4) {
        fs::write(&seg, b.rest()).map_err(|e| e.to_string())?;
    } else {
        let (sink, _) = FileSink::open(dir.path()).map_err(|e| e.to_string())?;
        for i in 0..u64::from(mode % 4) {
            let e = chain
                .seal(
                    &keys,
                    &MaskingPolicy::none(),
                    AuditEntry::new("fz", "e", "a", Timestamp::EPOCH).with_amount(i),
                )
                .map_err(|e| e.to_string())?;
            let r = LogRecord::new(i, e);
            sink.append_blocking(std::slice::from_ref(&r))
                .map_err(|e| e.to_string())?;
            written.push(r);
        }
        drop(sink);
        let mut bytes = fs::read(&seg).map_err(|e| e.to_string())?;
        let cut = usize::from(b.u8()) % (bytes.len() + 1);
        if mode & 0x80 != 0 {
            bytes.truncate(cut.max(1));
        }
        bytes.extend_from_slice(b.rest());
        fs::write(&seg, bytes).map_err(|e| e.to_string())?;
    }
    let Ok((sink, recovery)) = FileSink::open(dir.path()) else {
        // Refusing damaged files is allowed; they must still scan and verify without panics.
        let _ = scan_dir(dir.path());
        let _ = verify_dir(dir.path(), &keys, None);
        return Ok(());
    };
    let records = sink
        .read_blocking(0, 1_000)
        .map_err(|e| format!("reading a recovered log: {e}"))?;
    if records.len() as u64 != recovery.records {
        return Err("recovery counted records it cannot read".into());
    }
    if !mode.is_multiple_of(4) && mode & 0x80 == 0 && records.len() < written.len() {
        return Err("recovery lost records that were written before the damage".into());
    }
    for (r, w) in records.iter().zip(&written) {
        if r != w {
            return Err("a recovered record differs from the one written".into());
        }
    }
    drop(sink);
    let (sink, again) = FileSink::open(dir.path()).map_err(|e| format!("second open: {e}"))?;
    if again.torn_bytes_cut != 0 || again.records != recovery.records {
        return Err(format!(
            "recovery is not idempotent: {recovery:?} then {again:?}"
        ));
    }
    let scanned = scan_dir(dir.path()).map_err(|e| format!("scan after recovery: {e}"))?;
    if scanned.records != records || scanned.torn_bytes != 0 {
        return Err("the scan disagrees with the recovered sink".into());
    }
    let _ = verify_dir(dir.path(), &keys, None).map_err(|e| e.to_string())?;
    // The log goes on: one more record at the next index.
    let mut next_chain = StreamChain::new("next");
    let e = next_chain
        .seal(
            &keys,
            &MaskingPolicy::none(),
            AuditEntry::new("next", "e", "a", Timestamp::EPOCH),
        )
        .map_err(|e| e.to_string())?;
    sink.append_blocking(&[LogRecord::new(recovery.records, e)])
        .map_err(|e| format!("appending after recovery: {e}"))?;
    Ok(())
}

/// Checkpoint and proof parsing and verification: parsing arbitrary text never panics and
/// what parses round-trips; signed-note verification of arbitrary text never panics and
/// never accepts an unsigned note; inclusion and consistency proofs made of arbitrary
/// hashes are accepted only when they equal the real proof.
///
/// # Errors
/// A broken property.
pub fn checkpoint_proof(data: &[u8]) -> Finding {
    let mut b = Bytes::new(data);
    let size = u64::from(b.u8() % 40) + 1;
    let index = u64::from(b.u8()) % size;
    let old = u64::from(b.u8()) % size + 1;
    let len_byte = b.u8();
    let text_len = usize::from(len_byte);
    let start = b.pos.min(data.len());
    let end = (start + text_len).min(data.len());
    let text = String::from_utf8_lossy(&data[start..end]).into_owned();
    b.pos = end;
    let proof: Vec<[u8; 32]> = b
        .rest()
        .chunks(32)
        .map(|c| {
            let mut h = [0u8; 32];
            h[..c.len()].copy_from_slice(c);
            h
        })
        .collect();

    if let Ok(cp) = Checkpoint::parse_body(&text)
        && Checkpoint::parse_body(&cp.to_body()).ok().as_ref() != Some(&cp)
    {
        return Err("a parsed checkpoint does not round-trip".into());
    }
    let signer = NoteSigner::new("fuzz.example", [9; 32]).map_err(|e| e.to_string())?;
    let verifier = NoteVerifier::new(&signer.verifier_key()).map_err(|e| e.to_string())?;
    // Ed25519 cannot be forged by a fuzzer: a note opens only if it carries the signer's
    // own (deterministic) signature of its body.
    if let Ok(body) = verifier.open(&text) {
        let signed = signer.sign(body).map_err(|e| e.to_string())?;
        let line = signed.lines().last().unwrap_or_default();
        if !text.lines().any(|l| l == line) {
            return Err("a note verified without the signer's signature".into());
        }
    }
    let _ = verifier.verify_checkpoint(&text, "fuzz.example/log");
    let _ = NoteVerifier::new(&text);

    let mut tree = MerkleTree::new();
    for i in 0..size {
        tree.push(leaf_hash(&i.to_be_bytes()));
    }
    let root = tree.root();
    let leaf = leaf_hash(&index.to_be_bytes());
    let real = tree
        .inclusion_proof(index, size)
        .map_err(|e| e.to_string())?;
    verify_inclusion(&leaf, index, size, &real, &root)
        .map_err(|e| format!("a real inclusion proof failed: {e}"))?;
    if verify_inclusion(&leaf, index, size, &proof, &root).is_ok() && proof != real {
        return Err(format!(
            "a forged inclusion proof verified (index {index}, size {size})"
        ));
    }
    let old_root = tree.root_at(old).map_err(|e| e.to_string())?;
    let real = tree
        .consistency_proof(old, size)
        .map_err(|e| e.to_string())?;
    verify_consistency(old, size, &real, &old_root, &root)
        .map_err(|e| format!("a real consistency proof failed: {e}"))?;
    if verify_consistency(old, size, &proof, &old_root, &root).is_ok() && proof != real {
        return Err(format!(
            "a forged consistency proof verified ({old} → {size})"
        ));
    }
    // Garbage roots and sizes: errors, not panics.
    let _ = verify_inclusion(
        &leaf,
        u64::from(len_byte),
        size,
        &proof,
        &proof.first().copied().unwrap_or_default(),
    );
    let _ = verify_consistency(old, u64::from(len_byte), &proof, &old_root, &root);
    Ok(())
}

/// The reference model of one tenant for [`ledger_ops`]: grants never expire, so only
/// holds expire; amounts are small so nothing overflows.
#[derive(Debug, Default)]
struct Model {
    available: u64,
    overdrawn: u64,
    limit: u64,
    /// Active holds: id → (amount, expires_at ms).
    holds: BTreeMap<u64, (u64, u64)>,
    /// Resolved holds: id → how.
    resolved: BTreeMap<u64, &'static str>,
    /// Refundable entries: seq → (spent, refunded).
    spent: BTreeMap<u64, (u64, u64)>,
    next_hold: u64,
}

impl Model {
    fn credit(&mut self, n: u64) {
        let pay = n.min(self.overdrawn);
        self.overdrawn -= pay;
        self.available += n - pay;
    }

    fn expire(&mut self, now: u64) {
        let due: Vec<u64> = self
            .holds
            .iter()
            .filter(|(_, (_, e))| *e <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some((amount, _)) = self.holds.remove(&id) {
                self.available += amount;
                self.resolved.insert(id, "expired");
            }
        }
    }

    /// The expected result: `Ok(())` (balance compared separately) or the error's name.
    fn apply(&mut self, command: &Command, now: u64) -> Result<(), &'static str> {
        self.expire(now);
        match *command {
            Command::Grant { amount, .. } => {
                self.credit(amount.units());
                Ok(())
            }
            Command::Consume { amount } => {
                let n = amount.units();
                if n > self.available + (self.limit - self.overdrawn) {
                    return Err("insufficient");
                }
                let from_available = n.min(self.available);
                self.available -= from_available;
                self.overdrawn += n - from_available;
                Ok(())
            }
            Command::Reserve { amount, ttl } => {
                let n = amount.units();
                if n > self.available {
                    return Err("insufficient");
                }
                self.available -= n;
                self.next_hold += 1;
                let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
                self.holds.insert(self.next_hold, (n, now + ttl_ms));
                Ok(())
            }
            Command::Commit { hold, amount } => {
                let (held, _) = self.active(hold.get())?;
                if amount.units() > held {
                    return Err("exceeds");
                }
                self.holds.remove(&hold.get());
                self.resolved.insert(hold.get(), "committed");
                self.available += held - amount.units();
                Ok(())
            }
            Command::Cancel { hold } => {
                let (held, _) = self.active(hold.get())?;
                self.holds.remove(&hold.get());
                self.resolved.insert(hold.get(), "cancelled");
                self.available += held;
                Ok(())
            }
            Command::Refund { entry, amount } => {
                let Some((spent, refunded)) = self.spent.get_mut(&entry.get()) else {
                    return Err("unknown-entry");
                };
                if amount.units() > *spent - *refunded {
                    return Err("exceeds");
                }
                *refunded += amount.units();
                self.credit(amount.units());
                Ok(())
            }
            _ => Err("unmodelled"),
        }
    }

    fn active(&self, id: u64) -> Result<(u64, u64), &'static str> {
        if let Some(h) = self.holds.get(&id) {
            return Ok(*h);
        }
        Err(match self.resolved.get(&id) {
            Some(&"committed") => "already-committed",
            Some(&"cancelled") => "already-cancelled",
            Some(_) => "expired",
            None => "unknown-hold",
        })
    }
}

fn error_name(e: &LedgerError) -> &'static str {
    match e {
        LedgerError::InsufficientCredits { .. } => "insufficient",
        LedgerError::CommitExceedsHold { .. } | LedgerError::RefundExceedsConsumed { .. } => {
            "exceeds"
        }
        LedgerError::HoldAlreadyCommitted(_) => "already-committed",
        LedgerError::HoldAlreadyCancelled(_) => "already-cancelled",
        LedgerError::HoldExpired(_) => "expired",
        LedgerError::UnknownHold(_) => "unknown-hold",
        LedgerError::UnknownEntry(_) | LedgerError::NotRefundable(_) => "unknown-entry",
        _ => "other",
    }
}

/// Ledger operation sequences against a reference model: every answer (success and its
/// balance, or the kind of refusal) equals the model's, a retried request replays its
/// first answer, and conservation holds after every step.
///
/// # Errors
/// The first disagreement.
pub fn ledger_ops(data: &[u8]) -> Finding {
    futures::executor::block_on(ledger_ops_async(data))
}

async fn ledger_ops_async(data: &[u8]) -> Finding {
    let mut b = Bytes::new(data);
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_000_000));
    let ledger = Ledger::new(MemoryLedgerStore::new(), clock.clone());
    let t = TenantId::new("fuzz").map_err(|e| e.to_string())?;
    let mut model = Model {
        limit: u64::from(b.u8() % 4) * 10,
        ..Model::default()
    };
    ledger
        .create_tenant(
            &t,
            TenantSettings {
                overdraft_limit: Amount::new(model.limit),
                ..TenantSettings::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut sent: Vec<(Request, Result<Receipt, LedgerError>)> = Vec::new();
    let mut refundable: Vec<EntrySeq> = Vec::new();
    let mut step = 0u32;
    while !b.done() && step < 400 {
        step += 1;
        let op = b.u8();
        let n = u64::from(b.u8()) + 1;
        let command = match op % 8 {
            0 => Command::Grant {
                amount: Amount::new(n),
                expires_at: None,
                priority: 0,
            },
            1 => Command::Consume {
                amount: Amount::new(n),
            },
            2 => Command::Reserve {
                amount: Amount::new(n),
                ttl: Duration::from_millis(u64::from(b.u16()) + 1),
            },
            3 => Command::Commit {
                hold: HoldId::new(u64::from(b.u8() % 8) + 1),
                amount: Amount::new(n),
            },
            4 => Command::Cancel {
                hold: HoldId::new(u64::from(b.u8() % 8) + 1),
            },
            5 => {
                let i = usize::from(b.u8());
                let entry = refundable
                    .get(i % refundable.len().max(1))
                    .copied()
                    .unwrap_or(EntrySeq::new(9_999));
                Command::Refund {
                    entry,
                    amount: Amount::new(n),
                }
            }
            6 => {
                clock.advance(Duration::from_millis(n * 100));
                continue;
            }
            _ => {
                // Retry an earlier request: the first answer again, nothing applied.
                let Some((req, first)) = sent.get(usize::from(b.u8()) % sent.len().max(1)).cloned()
                else {
                    continue;
                };
                let again = ledger.apply(&req).await;
                if again != first {
                    return Err(format!(
                        "step {step}: retry answered {again:?}, first {first:?}"
                    ));
                }
                continue;
            }
        };
        let now = clock.now().as_unix_millis();
        let key = IdempotencyKey::new(format!("op-{step}")).map_err(|e| e.to_string())?;
        let req = Request::new(t.clone(), key, command.clone());
        let got = ledger.apply(&req).await;
        let want = model.apply(&command, now);
        match (&got, want) {
            (Ok(o), Ok(())) => {
                let bal = o.balance;
                if (bal.available.units(), bal.overdrawn.units())
                    != (model.available, model.overdrawn)
                    || bal.held.units() != model.holds.values().map(|(a, _)| a).sum::<u64>()
                {
                    return Err(format!(
                        "step {step} {command:?}: ledger {bal:?}, model {model:?}"
                    ));
                }
                if let Effect::Reserved { hold, .. } = o.effect
                    && hold.get() != model.next_hold
                {
                    return Err(format!(
                        "step {step}: hold {hold} where the model made {}",
                        model.next_hold
                    ));
                }
                match (&command, o.effect) {
                    (Command::Consume { amount }, _) => {
                        model.spent.insert(o.entry.get(), (amount.units(), 0));
                        refundable.push(o.entry);
                    }
                    (_, Effect::Committed { committed, .. }) => {
                        model.spent.insert(o.entry.get(), (committed.units(), 0));
                        refundable.push(o.entry);
                    }
                    _ => {}
                }
            }
            (Err(e), Err(name)) if error_name(e) == name => {}
            _ => {
                return Err(format!(
                    "step {step} {command:?}: ledger {got:?}, model {want:?}"
                ));
            }
        }
        sent.push((req, got));
        let totals = ledger
            .check_conservation(Some(&t))
            .await
            .map_err(|e| e.to_string())?;
        totals.map_err(|v| format!("step {step}: {v}"))?;
    }
    Ok(())
}

/// bayes-ab on any counts and priors: no panic; every probability is in `[0, 1]`, every
/// expected loss finite and non-negative, and the best-arm probabilities sum to one.
///
/// # Errors
/// A result out of range.
pub fn bayes(data: &[u8]) -> Finding {
    let mut b = Bytes::new(data);
    let prior = |b: &mut Bytes<'_>| {
        if b.u8().is_multiple_of(2) {
            b.f64()
        } else {
            f64::from(b.u16()) / 64.0
        }
    };
    let mut arms = Vec::new();
    for _ in 0..2 + usize::from(b.u8() % 3) {
        let (alpha, beta) = (prior(&mut b), prior(&mut b));
        let (s, n) = if b.u8().is_multiple_of(2) {
            (b.u64(), b.u64())
        } else {
            (u64::from(b.u16()), u64::from(b.u16()))
        };
        let Ok(p) = Beta::new(alpha, beta) else {
            continue;
        };
        let Ok(c) = Counts::new(s, n) else {
            continue;
        };
        arms.push(p.update(c));
    }
    let in_unit = |x: f64| (0.0..=1.0).contains(&x);
    for w in arms.windows(2) {
        let (a, c) = (w[0], w[1]);
        let p = prob_b_beats_a(a, c);
        if !in_unit(p) {
            return Err(format!("P(B > A) = {p} for {a:?} vs {c:?}"));
        }
        let (la, lb) = expected_losses(a, c);
        if !(la.is_finite() && lb.is_finite() && la >= 0.0 && lb >= 0.0) {
            return Err(format!("expected losses {la}, {lb} for {a:?} vs {c:?}"));
        }
        let s = compare(a, c, &CompareConfig::default());
        if !in_unit(s.prob_b_beats_a) {
            return Err(format!("compare: {s:?}"));
        }
    }
    if arms.len() >= 2
        && let Ok(best) = best_arm(&arms)
    {
        let sum: f64 = best.prob_best.iter().sum();
        if best.prob_best.iter().any(|p| !in_unit(*p)) || (sum - 1.0).abs() > 1e-6 {
            return Err(format!(
                "best arm probabilities {:?} for {arms:?}",
                best.prob_best
            ));
        }
    }
    Ok(())
}

/// Hand-made starting inputs for a target (valid encodings, a real signed checkpoint, a
/// typical operation sequence), from which the fuzzers mutate. Empty for unknown targets.
#[must_use]
pub fn seed_inputs(target: &str) -> Vec<Vec<u8>> {
    let Ok(keys) = keyring() else {
        return Vec::new();
    };
    let sealed = |n: u64| -> Vec<LogRecord> {
        let mut chain = StreamChain::new("seed");
        (0..n)
            .filter_map(|i| {
                let e =
                    AuditEntry::new("seed", "ledger", "consumed", Timestamp::from_unix_millis(i))
                        .with_amount(i)
                        .with_balances(100, 100 - i)
                        .with_transaction_id(format!("k{i}"))
                        .with_metadata("seq", i.to_string());
                chain
                    .seal(&keys, &MaskingPolicy::none(), e)
                    .ok()
                    .map(|s| LogRecord::new(i, s))
            })
            .collect()
    };
    match target {
        "audit_decode" => sealed(3)
            .into_iter()
            .flat_map(|r| {
                let mut a = Vec::new();
                r.encode(&mut a);
                let mut b = Vec::new();
                r.entry.encode(&mut b);
                [a, b]
            })
            .collect(),
        "file_recovery" => vec![
            vec![0],
            vec![1, 40, 0, 0, 1, 0, 7],
            vec![3, 200],
            vec![0x82, 30, 1, 2, 3],
        ],
        "checkpoint_proof" => {
            let Ok(signer) = NoteSigner::new("fuzz.example", [9; 32]) else {
                return Vec::new();
            };
            let cp = Checkpoint {
                origin: "fuzz.example/log".into(),
                size: 5,
                root: [3; 32],
            };
            let note = signer.sign_checkpoint(&cp).note;
            let mut out = Vec::new();
            for text in [cp.to_body(), note] {
                let mut v = vec![7, 3, 4, u8::try_from(text.len()).unwrap_or(u8::MAX)];
                v.extend_from_slice(text.as_bytes());
                v.extend_from_slice(&[0xab; 96]);
                out.push(v);
            }
            out
        }
        "ledger_ops" => vec![
            vec![
                1, 0, 200, 1, 30, 2, 50, 0, 100, 3, 20, 1, 5, 2, 1, 4, 40, 0, 2, 6, 50, 3, 10, 2,
                7, 0, 0, 5, 9, 0,
            ],
            vec![3, 1, 20, 0, 10, 2, 9, 0, 5, 6, 200, 3, 4, 1, 7, 1, 0],
        ],
        "bayes" => vec![
            vec![
                0, 1, 0, 64, 1, 0, 64, 1, 0, 40, 0, 100, 1, 0, 64, 1, 0, 64, 1, 0, 45, 0, 100,
            ],
            vec![1; 64],
            vec![0xff; 64],
        ],
        _ => Vec::new(),
    }
}
