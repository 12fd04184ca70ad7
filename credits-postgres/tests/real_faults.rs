//! Real faults on a real server: while clients keep granting, consuming and resolving
//! holds (retrying under the same idempotency key until they get a definitive answer), an
//! admin connection kills random backends of the test's own connections with
//! `pg_terminate_backend`. Afterwards conservation holds, every tenant's journal replays
//! to its counters, the audit log verifies with one entry per journal entry, and every
//! acknowledged request has its effect in the journal exactly once, under its key (and no
//! other key is there).
//!
//! The server is never restarted: only backends whose `application_name` is this test's
//! are terminated. `REAL_FAULTS_SEED` (default 0) varies the clients' and the killer's
//! choices (`scripts/soak.sh` sets it).

// Tests wait for the database like an application does, run their clients and the killer
// as tasks, and print what they injected.
#![allow(clippy::disallowed_methods, clippy::print_stderr)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use audit_chain::{HmacKey, Keyring, MaskingPolicy, WriterConfig, verify_sink};
use credits_core::{
    Amount, EntryKind, GrantOptions, HoldId, IdempotencyKey, Ledger, LedgerError, LedgerStore,
    PageRequest, Receipt, TenantId, TenantSettings,
};
use credits_postgres::{GroupCommitConfig, LedgerAudit};
use metered_clock::ManualClock;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Attempts per request before the test gives up on an answer (with a pause between).
const ATTEMPTS_MAX: u32 = 400;
const RETRY_PAUSE: Duration = Duration::from_millis(10);
const CLIENTS: usize = 6;
/// Each client sends at least this many requests, and goes on (up to
/// [`OPS_PER_CLIENT_MAX`]) until [`TERMINATED_MIN`] backends were killed and
/// [`RETRIES_MIN`] requests retried, however fast the machine.
const OPS_PER_CLIENT: usize = 80;
const OPS_PER_CLIENT_MAX: usize = 2_000;
const TERMINATED_MIN: u64 = 20;
const RETRIES_MIN: u64 = 10;
const TENANTS: usize = 3;

fn keyring() -> Arc<Keyring> {
    Arc::new(Keyring::new(HmacKey::new(1, [0x44; 32]).expect("key")))
}

/// What a client asked, for the journal check.
#[derive(Clone, Copy, Debug)]
enum Sent {
    Grant(u64),
    Consume(u64),
    Reserve(u64),
    Commit(HoldId, u64),
    Cancel(HoldId),
}

/// A request and its definitive answer.
#[derive(Debug)]
struct Acked {
    tenant: usize,
    key: IdempotencyKey,
    sent: Sent,
    answer: Result<Receipt, LedgerError>,
}

#[derive(Default)]
struct Counters {
    retries: AtomicU64,
    terminated: AtomicU64,
}

/// Sends one request until it gets a definitive answer (success or a domain refusal).
async fn until_answered<S: LedgerStore + ?Sized>(
    ledger: &Ledger<S>,
    tenant: &TenantId,
    key: &IdempotencyKey,
    sent: Sent,
    counters: &Counters,
) -> Result<Receipt, LedgerError> {
    for _ in 0..ATTEMPTS_MAX {
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
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            answer => return answer,
        }
    }
    panic!("{sent:?} under {key} on {tenant}: no answer after {ATTEMPTS_MAX} attempts");
}

async fn client<S: LedgerStore + ?Sized>(
    ledger: Ledger<S>,
    tenants: Arc<Vec<TenantId>>,
    id: usize,
    counters: Arc<Counters>,
    seed: u64,
) -> Vec<Acked> {
    let mut rng = StdRng::seed_from_u64(seed ^ ((id as u64 + 1) << 32));
    let mut holds: Vec<(usize, HoldId, u64)> = Vec::new();
    let mut out = Vec::with_capacity(OPS_PER_CLIENT);
    for n in 0..OPS_PER_CLIENT_MAX {
        if n >= OPS_PER_CLIENT
            && counters.terminated.load(Ordering::Relaxed) >= TERMINATED_MIN
            && counters.retries.load(Ordering::Relaxed) >= RETRIES_MIN
        {
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
        let answer = until_answered(&ledger, &tenants[tenant], &key, sent, &counters).await;
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

/// Every journal entry of `tenant`, oldest first.
async fn journal<S: LedgerStore + ?Sized>(
    ledger: &Ledger<S>,
    tenant: &TenantId,
) -> Vec<credits_core::JournalEntry> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backends_lose_no_acknowledged_request_and_apply_none_twice() {
    let Some(db) = common::test_db("real_faults").await else {
        return;
    };
    let seed: u64 = std::env::var("REAL_FAULTS_SEED")
        .ok()
        .map_or(0, |s| s.parse().expect("REAL_FAULTS_SEED is a number"));
    let clock = ManualClock::new(common::START);
    let app = format!("t_{}", db.schema);
    let config = || {
        db.config()
            .pool_max_size(4)
            .audit(LedgerAudit::new(keyring(), MaskingPolicy::standard()))
    };
    // Two processes as the database sees them: one applying each request in its own
    // transaction, one in group-commit mode (a killed backend fails a whole group).
    let direct = db.store(config(), Arc::new(clock.clone())).await;
    let grouped = db
        .store(config(), Arc::new(clock.clone()))
        .await
        .with_group_commit(GroupCommitConfig::new(2, 64, 1_024).expect("group config"));
    let ledgers = [
        Ledger::new(direct.clone(), clock.clone()),
        Ledger::new(grouped, clock.clone()),
    ];
    let tenants: Arc<Vec<TenantId>> = Arc::new(
        (0..TENANTS)
            .map(|i| TenantId::new(format!("hot-{i}")).expect("tenant"))
            .collect(),
    );
    for t in tenants.iter() {
        ledgers[0]
            .create_tenant(t, TenantSettings::default())
            .await
            .expect("tenant");
    }

    // The killer: every 20–60 ms, one random backend of this test's connections.
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let (counters, stop, url) = (Arc::clone(&counters), Arc::clone(&stop), db.url.clone());
        let app = app.clone();
        tokio::spawn(async move {
            let (admin, conn) = credits_postgres::tokio_postgres::connect(
                &url,
                credits_postgres::tokio_postgres::NoTls,
            )
            .await
            .expect("killer connects");
            tokio::spawn(conn);
            let mut rng = StdRng::seed_from_u64(seed);
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(rng.random_range(20..60))).await;
                let killed: i64 = admin
                    .query_one(
                        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) AS done \
                         FROM pg_stat_activity WHERE application_name = $1 \
                         AND pid <> pg_backend_pid() ORDER BY random() LIMIT 1) k WHERE done",
                        &[&app],
                    )
                    .await
                    .expect("terminate")
                    .get(0);
                counters
                    .terminated
                    .fetch_add(killed as u64, Ordering::Relaxed);
            }
        })
    };

    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let ledger = ledgers[id % ledgers.len()].clone();
            tokio::spawn(client(
                ledger,
                Arc::clone(&tenants),
                id,
                Arc::clone(&counters),
                seed,
            ))
        })
        .collect();
    let mut acked = Vec::new();
    for c in clients {
        acked.extend(c.await.expect("client"));
    }
    stop.store(true, Ordering::Relaxed);
    killer.await.expect("killer");
    let terminated = counters.terminated.load(Ordering::Relaxed);
    let retries = counters.retries.load(Ordering::Relaxed);
    eprintln!(
        "real faults seed {seed}: {} requests, {terminated} backends terminated, {retries} retries",
        acked.len()
    );
    assert!(
        terminated >= TERMINATED_MIN,
        "only {terminated} backends terminated"
    );
    assert!(retries >= RETRIES_MIN, "only {retries} retries");
    // Every kind of request succeeded often enough for the checks below to mean something.
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
    eprintln!("successes (grant, consume, reserve, commit, cancel): {kinds:?}");
    assert!(kinds.iter().all(|&n| n >= 5), "{kinds:?}");

    // Checked through a store opened now, as a restarted process would: the killer may have
    // terminated an idle pooled connection of the load's stores just before it stopped,
    // and its first use would answer a (retryable) 57P01 instead of the checks' answer.
    let reopened = db.store(config(), Arc::new(clock.clone())).await;
    let ledger = &Ledger::new(reopened.clone(), clock.clone());
    // Conservation, and each journal replays to its counters.
    ledger
        .check_conservation(None)
        .await
        .expect("totals")
        .expect("conservation");
    let mut journal_len = 0;
    for (i, t) in tenants.iter().enumerate() {
        let replayed = ledger
            .verify_journal(t)
            .await
            .expect("read")
            .unwrap_or_else(|m| panic!("{t}: {m:?}"));
        let entries = journal(ledger, t).await;
        assert_eq!(replayed, entries.len() as u64);
        journal_len += entries.len();

        // Every acknowledged request exactly once, under its key; nothing else.
        let mut by_key: BTreeMap<&str, Vec<&credits_core::JournalEntry>> = BTreeMap::new();
        for e in &entries {
            let key = e.key.as_ref().expect("no expiry runs in this test");
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

    // The audit log: every change was sealed in its transaction; integrate and verify.
    let leader = reopened
        .audit_sequencer(
            WriterConfig::builder("test.invalid/real-faults")
                .build()
                .expect("config"),
            Arc::new(clock.clone()),
            None,
        )
        .try_lead()
        .await
        .expect("lead")
        .expect("no other sequencer leads");
    let cp = leader.writer().flush().await.expect("flush");
    assert_eq!(
        cp.size, journal_len as u64,
        "one audit record per journal entry"
    );
    assert_eq!(db.count("SELECT count(*) FROM audit_pending").await, 0);
    let report = verify_sink(&reopened.audit_sink(), &keyring(), Some(&cp))
        .await
        .expect("verify");
    assert!(report.is_intact(), "{:?}", report.failure);
    assert_eq!(report.entries_ok, cp.size);
    leader.resign().await.expect("resign");
    drop(ledgers);
    db.drop_schema().await;
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
