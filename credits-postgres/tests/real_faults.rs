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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::load::{self, Counters, LoadConfig};
use credits_core::{Ledger, TenantId, TenantSettings};
use credits_postgres::GroupCommitConfig;
use metered_clock::ManualClock;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CLIENTS: usize = 6;
/// Each client sends at least `ops_min` requests, and goes on (up to `ops_max`) until
/// [`TERMINATED_MIN`] backends were killed and [`RETRIES_MIN`] requests retried, however
/// fast the machine; each request is tried up to 400 times, 10 ms apart.
const LOAD: LoadConfig = LoadConfig {
    ops_min: 80,
    ops_max: 2_000,
    attempts_max: 400,
    retry_pause: Duration::from_millis(10),
};
const TERMINATED_MIN: u64 = 20;
const RETRIES_MIN: u64 = 10;
const TENANTS: usize = 3;

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
    let config = || db.config().pool_max_size(4).audit(load::audit());
    // Two processes as the database sees them: one applying each request in its own
    // transaction, one in group-commit mode (a killed backend fails a whole group).
    let direct = db.store(config(), Arc::new(clock.clone())).await;
    let grouped = db
        .store(config(), Arc::new(clock.clone()))
        .await
        .with_group_commit(GroupCommitConfig::new(2, 64, 1_024).expect("group config"));
    let ledgers = [
        Ledger::new(direct, clock.clone()),
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
                counters.faults.fetch_add(killed as u64, Ordering::Relaxed);
                if counters.faults() >= TERMINATED_MIN && counters.retries() >= RETRIES_MIN {
                    counters.enough.store(true, Ordering::Relaxed);
                }
            }
        })
    };

    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let ledger = ledgers[id % ledgers.len()].clone();
            tokio::spawn(load::client(
                ledger,
                Arc::clone(&tenants),
                id,
                Arc::clone(&counters),
                seed,
                LOAD,
            ))
        })
        .collect();
    let mut acked = Vec::new();
    for c in clients {
        acked.extend(c.await.expect("client"));
    }
    stop.store(true, Ordering::Relaxed);
    killer.await.expect("killer");
    let (terminated, retries) = (counters.faults(), counters.retries());
    eprintln!(
        "real faults seed {seed}: {} requests, {terminated} backends terminated, {retries} retries",
        acked.len()
    );
    assert!(
        terminated >= TERMINATED_MIN,
        "only {terminated} backends terminated"
    );
    assert!(retries >= RETRIES_MIN, "only {retries} retries");
    let kinds = load::assert_every_kind_succeeded(&acked, 5);
    eprintln!("successes (grant, consume, reserve, commit, cancel): {kinds:?}");

    // Checked through a store opened now, as a restarted process would: the killer may have
    // terminated an idle pooled connection of the load's stores just before it stopped,
    // and its first use would answer a (retryable) 57P01 instead of the checks' answer.
    let reopened = db.store(config(), Arc::new(clock.clone())).await;
    load::check_after_load(
        &reopened,
        Arc::new(clock.clone()),
        &tenants,
        &acked,
        "test.invalid/real-faults",
    )
    .await;
    drop(ledgers);
    db.drop_schema().await;
}
