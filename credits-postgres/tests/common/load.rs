//! The load and the checks of the real-fault tests (`real_faults.rs`, `pg_restart.rs`).
//!
//! Clients grant, consume, reserve, commit and cancel on a few hot tenants, each request
//! sent again under the same idempotency key after every retryable (ambiguous) failure
//! until it gets a definitive answer. After the fault, [`check_after_load`] checks through
//! a store opened afresh (as a restarted process would): conservation, every tenant's
//! journal replayed to its counters (`verify_journal`), every acknowledged request in the
//! journal exactly once under its key with the answered effect (and no other key there),
//! and the audit log: one entry per journal entry, verified against the last checkpoint.

// The clients wait between attempts, like an application does.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use audit_chain::{AuditQueue, HmacKey, Keyring, MaskingPolicy, WriterConfig, verify_sink};
use credits_core::{
    Amount, EntryKind, GrantOptions, HoldId, IdempotencyKey, JournalEntry, Ledger, LedgerError,
    LedgerStore, PageRequest, Receipt, TenantId,
};
use credits_postgres::{LedgerAudit, PgLedgerStore};
use metered_clock::Clock;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The audit key of every real-fault test.
pub(crate) fn keyring() -> Arc<Keyring> {
    Arc::new(Keyring::new(HmacKey::new(1, [0x44; 32]).expect("key")))
}

/// The audit settings of every store of a real-fault test.
pub(crate) fn audit() -> LedgerAudit {
    LedgerAudit::new(keyring(), MaskingPolicy::standard())
}

/// How long each client runs and how patiently it retries.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LoadConfig {
    /// Each client sends at least this many requests…
    pub(crate) ops_min: usize,
    /// …and goes on until the fault injector says [`Counters::enough`], at most this many.
    pub(crate) ops_max: usize,
    /// Attempts per request before the client gives up (and the test fails).
    pub(crate) attempts_max: u32,
    /// The pause after a retryable failure.
    pub(crate) retry_pause: Duration,
}

/// What a client asked, for the journal check.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Sent {
    Grant(u64),
    Consume(u64),
    Reserve(u64),
    Commit(HoldId, u64),
    Cancel(HoldId),
}

/// A request and its definitive answer.
#[derive(Debug)]
pub(crate) struct Acked {
    pub(crate) tenant: usize,
    pub(crate) key: IdempotencyKey,
    pub(crate) sent: Sent,
    pub(crate) answer: Result<Receipt, LedgerError>,
}

/// What the load and the fault injector did, shared between them.
#[derive(Default)]
pub(crate) struct Counters {
    /// Requests that got a definitive answer.
    pub(crate) answered: AtomicU64,
    /// Attempts that failed retryably and were sent again.
    pub(crate) retries: AtomicU64,
    /// Faults injected (backends terminated, server restarts).
    pub(crate) faults: AtomicU64,
    /// Successes answered from an earlier attempt's commit: an attempt that failed (the
    /// outcome was unknown) had applied the request, and a retry got its stored answer.
    /// Counted when the receipt's time precedes the last attempt's start, so only with a
    /// clock that moves (always 0 under a manual clock).
    pub(crate) in_doubt: AtomicU64,
    /// Set by the fault injector once it injected what it meant to: clients then stop after
    /// their minimum.
    pub(crate) enough: AtomicBool,
}

impl Counters {
    pub(crate) fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }
    pub(crate) fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
    pub(crate) fn faults(&self) -> u64 {
        self.faults.load(Ordering::Relaxed)
    }
    pub(crate) fn in_doubt(&self) -> u64 {
        self.in_doubt.load(Ordering::Relaxed)
    }
}

/// Sends one request until it gets a definitive answer (success or a domain refusal).
pub(crate) async fn until_answered<S: LedgerStore + ?Sized>(
    ledger: &Ledger<S>,
    tenant: &TenantId,
    key: &IdempotencyKey,
    sent: Sent,
    counters: &Counters,
    config: LoadConfig,
) -> Result<Receipt, LedgerError> {
    let mut last = None;
    for attempt in 0..config.attempts_max {
        let started = ledger.clock().now();
        let k = key.clone();
        let result = match sent {
            Sent::Grant(a) => {
                ledger
                    .grant(tenant, k, Amount::new(a), GrantOptions::default())
                    .await
            }
            Sent::Consume(a) => ledger.consume(tenant, k, Amount::new(a)).await,
            Sent::Reserve(a) => ledger
                .reserve(tenant, k, Amount::new(a), Duration::from_secs(3_600))
                .await
                .map(|r| r.receipt),
            Sent::Commit(h, a) => ledger.commit(tenant, k, h, Amount::new(a)).await,
            Sent::Cancel(h) => ledger.cancel(tenant, k, h).await,
        };
        match result {
            Err(e) if e.is_retryable() => {
                counters.retries.fetch_add(1, Ordering::Relaxed);
                last = Some(e);
                tokio::time::sleep(config.retry_pause).await;
            }
            answer => {
                counters.answered.fetch_add(1, Ordering::Relaxed);
                if attempt > 0 && answer.as_ref().is_ok_and(|r| r.at < started) {
                    counters.in_doubt.fetch_add(1, Ordering::Relaxed);
                }
                return answer;
            }
        }
    }
    panic!(
        "{sent:?} under {key} on {tenant}: no answer after {} attempts (last: {last:?})",
        config.attempts_max
    );
}

/// One client: random requests on random tenants (commits and cancels of its own holds),
/// each until answered; returns every request with its answer.
pub(crate) async fn client<S: LedgerStore + ?Sized>(
    ledger: Ledger<S>,
    tenants: Arc<Vec<TenantId>>,
    id: usize,
    counters: Arc<Counters>,
    seed: u64,
    config: LoadConfig,
) -> Vec<Acked> {
    let mut rng = StdRng::seed_from_u64(seed ^ ((id as u64 + 1) << 32));
    let mut holds: Vec<(usize, HoldId, u64)> = Vec::new();
    let mut out = Vec::with_capacity(config.ops_min);
    for n in 0..config.ops_max {
        if n >= config.ops_min && counters.enough.load(Ordering::Relaxed) {
            break;
        }
        let roll = rng.random_range(0..100);
        let (tenant, sent) = if roll >= 70 && !holds.is_empty() {
            let (t, h, amount) = holds.swap_remove(rng.random_range(0..holds.len()));
            if roll >= 85 {
                (t, Sent::Cancel(h))
            } else {
                (t, Sent::Commit(h, rng.random_range(1..=amount)))
            }
        } else {
            let t = rng.random_range(0..tenants.len());
            let sent = match roll % 3 {
                0 => Sent::Grant(rng.random_range(1..50)),
                1 => Sent::Consume(rng.random_range(1..60)),
                _ => Sent::Reserve(rng.random_range(1..40)),
            };
            (t, sent)
        };
        let key = IdempotencyKey::new(format!("c{id}-{n}")).expect("key");
        let answer = until_answered(&ledger, &tenants[tenant], &key, sent, &counters, config).await;
        if let (Sent::Reserve(amount), Ok(r)) = (sent, &answer) {
            holds.push((
                tenant,
                r.hold().expect("a reserve's receipt names its hold"),
                amount,
            ));
        }
        out.push(Acked {
            tenant,
            key,
            sent,
            answer,
        });
    }
    out
}

/// Successes per kind of request (grant, consume, reserve, commit, cancel); asserts each
/// kind succeeded at least `min` times, so that the checks mean something for every kind.
pub(crate) fn assert_every_kind_succeeded(acked: &[Acked], min: usize) -> [usize; 5] {
    let mut kinds = [0usize; 5];
    for a in acked.iter().filter(|a| a.answer.is_ok()) {
        kinds[match a.sent {
            Sent::Grant(_) => 0,
            Sent::Consume(_) => 1,
            Sent::Reserve(_) => 2,
            Sent::Commit(..) => 3,
            Sent::Cancel(_) => 4,
        }] += 1;
    }
    assert!(
        kinds.iter().all(|&n| n >= min),
        "successes (grant, consume, reserve, commit, cancel) {kinds:?}: each kind needs {min}"
    );
    kinds
}

/// Every journal entry of `tenant`, oldest first.
pub(crate) async fn journal<S: LedgerStore + ?Sized>(
    ledger: &Ledger<S>,
    tenant: &TenantId,
) -> Vec<JournalEntry> {
    let mut all = Vec::new();
    let mut page = PageRequest::first(1_000);
    loop {
        let p = ledger.history(tenant, page).await.expect("history");
        all.extend(p.entries);
        match p.next {
            Some(after) => page.after = Some(after),
            None => return all,
        }
    }
}

/// Attempts (20 ms apart) of [`check_after_load`] to lead the audit log's sequencer.
const LEAD_ATTEMPTS_MAX: u32 = 250;

/// What [`check_after_load`] found (all of it consistent, or it panicked).
#[derive(Debug)]
pub(crate) struct Checked {
    /// Journal entries over all tenants (= audit log entries).
    pub(crate) journal_len: u64,
}

/// The checks after a fault, through `store` (opened after the load: no connection of the
/// load's pools is reused) with `clock`: conservation of the whole ledger;
/// `verify_journal` for every tenant; every acknowledged request in the journal exactly
/// once under its key with the effect its answer reported, every refused one absent, no
/// other key present, and the granted total equal to the acknowledged grants; then the
/// audit log: this test leads its sequencer (no other may lead once a sequencer that ran
/// during the load let go of its lock), integrates the queue, checkpoints, and verifies
/// the whole log against that checkpoint with one entry per journal entry and nothing left
/// queued.
pub(crate) async fn check_after_load(
    store: &PgLedgerStore,
    clock: Arc<dyn Clock>,
    tenants: &[TenantId],
    acked: &[Acked],
    origin: &str,
) -> Checked {
    let ledger = &Ledger::from_shared(Arc::new(store.clone()), Arc::clone(&clock));
    ledger
        .check_conservation(None)
        .await
        .expect("totals")
        .expect("conservation");
    let mut journal_len = 0u64;
    for (i, t) in tenants.iter().enumerate() {
        let replayed = ledger
            .verify_journal(t)
            .await
            .expect("read")
            .unwrap_or_else(|m| panic!("{t}: {m:?}"));
        let entries = journal(ledger, t).await;
        assert_eq!(replayed, entries.len() as u64);
        journal_len += replayed;

        // Every acknowledged request exactly once, under its key; nothing else.
        let mut by_key: BTreeMap<&str, Vec<&JournalEntry>> = BTreeMap::new();
        for e in &entries {
            let key = e.key.as_ref().expect("no expiry runs in these tests");
            by_key.entry(key.as_str()).or_default().push(e);
        }
        let mine: Vec<&Acked> = acked.iter().filter(|a| a.tenant == i).collect();
        let mut granted = 0;
        for a in &mine {
            let found = by_key.remove(a.key.as_str()).unwrap_or_default();
            let receipt = match &a.answer {
                Ok(r) => r,
                Err(e) => {
                    assert!(
                        found.is_empty(),
                        "{} refused ({e}) but in the journal: {found:?}",
                        a.key
                    );
                    continue;
                }
            };
            let kinds: Vec<(EntryKind, u64)> =
                found.iter().map(|e| (e.kind, e.amount.units())).collect();
            let expected: Vec<(EntryKind, u64)> = match a.sent {
                Sent::Grant(n) => {
                    granted += n;
                    vec![(EntryKind::Granted, n)]
                }
                Sent::Consume(n) => vec![(EntryKind::Consumed, n)],
                Sent::Reserve(n) => vec![(EntryKind::Reserved, n)],
                Sent::Commit(_, n) => {
                    let held = receipt_held(&mine, a);
                    let mut v = vec![(EntryKind::Committed, n)];
                    if held > n {
                        v.push((EntryKind::Released, held - n));
                    }
                    v
                }
                Sent::Cancel(_) => vec![(EntryKind::Cancelled, receipt_held(&mine, a))],
            };
            assert_eq!(kinds, expected, "{t} {}: {found:?}", a.key);
            assert_eq!(found[0].seq, receipt.entry, "{t} {}", a.key);
            assert_eq!(
                found.last().unwrap().after,
                receipt.balance,
                "{t} {}",
                a.key
            );
        }
        assert!(
            by_key.is_empty(),
            "{t}: entries under keys no client was answered for: {by_key:?}"
        );
        let totals = ledger.store().totals(t).await.expect("totals");
        assert_eq!(
            totals.granted.units(),
            granted,
            "{t}: granted = acknowledged grants"
        );
    }

    // The audit log: every change was sealed in its transaction; integrate and verify. A
    // sequencer that resigned just before released its lock by closing its connection; the
    // server lets go of the lock once that backend has gone, a moment later.
    let sequencer = store.audit_sequencer(
        WriterConfig::builder(origin).build().expect("config"),
        clock,
        None,
    );
    let mut leader = None;
    for _ in 0..LEAD_ATTEMPTS_MAX {
        leader = sequencer.try_lead().await.expect("lead");
        if leader.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let leader = leader.expect("no other sequencer leads (within 5 s)");
    let cp = leader.writer().flush().await.expect("flush");
    assert_eq!(cp.size, journal_len, "one audit record per journal entry");
    assert_eq!(
        store.audit_queue().backlog().await.expect("backlog"),
        0,
        "nothing left queued"
    );
    let report = verify_sink(&store.audit_sink(), &keyring(), Some(&cp))
        .await
        .expect("verify");
    assert!(report.is_intact(), "{:?}", report.failure);
    assert!(report.checkpoint_matched, "{report:?}");
    assert_eq!(report.entries_ok, cp.size);
    leader.resign().await.expect("resign");
    Checked { journal_len }
}

/// How much the hold a commit or cancel resolved was holding: the amount of its reserve.
fn receipt_held(mine: &[&Acked], resolving: &Acked) -> u64 {
    let hold = match resolving.sent {
        Sent::Commit(h, _) | Sent::Cancel(h) => h,
        _ => unreachable!("only commits and cancels resolve a hold"),
    };
    mine.iter()
        .find_map(|a| match (a.sent, &a.answer) {
            (Sent::Reserve(n), Ok(r)) if r.hold() == Some(hold) => Some(n),
            _ => None,
        })
        .expect("the hold's reserve was acknowledged")
}
