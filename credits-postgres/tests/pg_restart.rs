//! A PostgreSQL restart during a load, on a private throwaway cluster: while clients keep
//! granting, consuming and resolving holds through the shipped store (half of them in
//! group-commit mode), each request retried under the same idempotency key until it gets
//! a definitive answer, and the store's own audit sequencer integrates the log, the server
//! is restarted twice with Debian's `pg_ctlcluster`: once in its default ("fast") mode,
//! once in "immediate" mode (a crash: no shutdown checkpoint, recovery from the WAL at the
//! next start). Afterwards, through a store opened afresh: conservation, `verify_journal`
//! for every tenant, every acknowledged request in the journal exactly once under its key
//! (and no other key), and the audit log, one entry per journal entry, verified against
//! its last checkpoint (the checks of `common::load`, shared with `real_faults.rs`).
//!
//! The shared server (`DATABASE_URL`) is never touched: the test creates its own cluster
//! (`pg_createcluster <major> credits_restart_<pid>`, with the newest server installed
//! under `/usr/lib/postgresql`, on a free port, trust authentication on loopback), and
//! drops it at the end, on failure too; clusters left by earlier runs whose process is gone
//! are dropped first. It needs Debian's `postgresql-common` tools, a PostgreSQL server and
//! root (or the clusters' owner). Like every database test it is skipped without
//! `DATABASE_URL`, and fails instead when `REQUIRE_DATABASE=1` and it cannot run.
//! `PG_RESTART_SEED` (default 0) varies the clients' choices and when the restarts come
//! (`scripts/soak.sh` sets it). The test is alone in its binary: nothing else shares its
//! runtime or waits behind its restarts.

// The test drives processes and tasks, waits on timers and prints what it injected.
#![allow(clippy::disallowed_methods, clippy::print_stderr)]

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use audit_chain::WriterConfig;
use common::load::{self, Counters, LoadConfig};
use credits_core::{Ledger, TenantId, TenantSettings};
use credits_postgres::GroupCommitConfig;
use metered_clock::{Clock, SystemClock};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use resilience::{BreakerConfig, OpenWait};

/// The names of this test's clusters: the prefix, then the process id.
const PREFIX: &str = "credits_restart_";
const CLIENTS: usize = 6;
const TENANTS: usize = 3;
/// Each request is tried for up to 800 × 25 ms (plus the calls themselves): longer than a
/// restart, bounded.
const LOAD: LoadConfig = LoadConfig {
    ops_min: 40,
    ops_max: 5_000,
    attempts_max: 800,
    retry_pause: Duration::from_millis(25),
};
/// The restarts, in order: `pg_ctlcluster` options before the version.
const RESTARTS: [(&str, &[&str]); 2] = [("fast", &[]), ("immediate", &["--mode=immediate"])];
/// Requests answered before the first restart, after each restart before the next and after
/// the last one (drawn from this range per gap).
const ANSWERED_PER_GAP: std::ops::Range<u64> = 100..250;
/// The whole load (restarts included) must end within this.
const LOAD_TIME_MAX: Duration = Duration::from_secs(40);

/// A throwaway cluster, dropped (stopped first) when this value is.
struct Cluster {
    version: String,
    name: String,
    port: u16,
}

/// Runs a cluster tool; `Err` with what it printed if it could not run or failed.
fn tool(program: &str, args: &[&str]) -> Result<Output, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{program} {}: {}\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Cluster {
    /// Creates and starts a cluster on a free loopback port, trusting local connections.
    fn create() -> Result<Cluster, String> {
        let version = server_version()?;
        drop_stale_clusters()?;
        let name = format!("{PREFIX}{}", std::process::id());
        // A port nothing listens on now (PostgreSQL binds it a moment later).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let port_s = port.to_string();
        tool(
            "pg_createcluster",
            &[
                &version,
                &name,
                "--port",
                &port_s,
                "--start-conf=manual",
                "--quiet",
                "-o",
                "max_connections=40",
                "-o",
                "shared_buffers=16MB",
                "--",
                "--auth=trust",
            ],
        )?;
        // From here on the cluster exists: dropping the value removes it.
        let cluster = Cluster {
            version,
            name,
            port,
        };
        pg_ctlcluster(&cluster.version, &cluster.name, &[], "start")?;
        Ok(cluster)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = tool("pg_dropcluster", &["--stop", &self.version, &self.name]) {
            eprintln!("could not drop cluster {}: {e}", self.name);
        }
    }
}

/// The newest PostgreSQL server installed the Debian way (`/usr/lib/postgresql/<major>`).
fn server_version() -> Result<String, String> {
    let dir = "/usr/lib/postgresql";
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{dir}: {e}"))?;
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|v| Path::new(&format!("{dir}/{v}/bin/postgres")).exists())
        .max()
        .map(|v| v.to_string())
        .ok_or_else(|| format!("no PostgreSQL server under {dir}"))
}

/// `pg_ctlcluster [options] version name action`, supervised by nothing but this test
/// (not redirected to systemd).
fn pg_ctlcluster(
    version: &str,
    name: &str,
    options: &[&str],
    action: &str,
) -> Result<Output, String> {
    let mut args = vec!["--skip-systemctl-redirect"];
    args.extend_from_slice(options);
    args.extend_from_slice(&[version, name, action]);
    tool("pg_ctlcluster", &args)
}

/// Drops clusters named by [`PREFIX`] whose process is gone (a run killed before its
/// clean-up), and one with this process's name (a reused process id).
fn drop_stale_clusters() -> Result<(), String> {
    let out = tool("pg_lsclusters", &["--no-header"])?;
    let me = std::process::id().to_string();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut fields = line.split_whitespace();
        let (Some(version), Some(name)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some(pid) = name.strip_prefix(PREFIX) else {
            continue;
        };
        if pid == me || !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("dropping stale cluster {name}");
            tool("pg_dropcluster", &["--stop", version, name])?;
        }
    }
    Ok(())
}

/// A breaker like the store's default but waiting 100 ms (not 60 s) once open, so the load
/// goes on soon after the server is back.
fn breaker() -> BreakerConfig {
    BreakerConfig::builder()
        .name("postgres")
        .failure_rate_threshold(50)
        .count_window(40)
        .minimum_calls(20)
        .open_wait(OpenWait::Fixed(Duration::from_millis(100)))
        .build()
        .expect("breaker")
}

/// Waits (polling) until `counters` answered `n` requests; panics after [`LOAD_TIME_MAX`].
async fn answered_at_least(counters: &Counters, n: u64) {
    let polls = LOAD_TIME_MAX.as_millis() / 10;
    for _ in 0..polls {
        if counters.answered() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "only {} requests answered, waiting for {n}",
        counters.answered()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_loses_no_acknowledged_request_and_applies_none_twice() {
    let required = common::database_required();
    if std::env::var("DATABASE_URL").is_err() && !required {
        eprintln!("pg_restart: skipped (set DATABASE_URL to run the database tests)");
        return;
    }
    let cluster = match Cluster::create() {
        Ok(c) => c,
        Err(e) if required => panic!("pg_restart: no private cluster (REQUIRE_DATABASE=1): {e}"),
        Err(e) => {
            eprintln!("pg_restart: skipped, no private cluster: {e}");
            return;
        }
    };
    let seed: u64 = std::env::var("PG_RESTART_SEED")
        .ok()
        .map_or(0, |s| s.parse().expect("PG_RESTART_SEED is a number"));
    let mut db = common::TestDb::create(cluster.url(), "pg_restart").await;
    // Real time: the stores' breakers must see their open wait pass.
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let config = |db: &common::TestDb| {
        db.config()
            .pool_max_size(4)
            .breaker(breaker())
            .audit(load::audit())
    };
    // Three processes as the database sees them: one applying each request in its own
    // transaction, one in group-commit mode, one running the audit sequencer.
    let direct = db.store(config(&db), Arc::clone(&clock)).await;
    let grouped = db
        .store(config(&db), Arc::clone(&clock))
        .await
        .with_group_commit(GroupCommitConfig::new(2, 64, 1_024).expect("group config"));
    let ledgers = [
        Ledger::from_shared(Arc::new(direct), Arc::clone(&clock)),
        Ledger::from_shared(Arc::new(grouped), Arc::clone(&clock)),
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
    let origin = "test.invalid/pg-restart";
    let sequencer_store = db.store(config(&db), Arc::clone(&clock)).await;
    let leaderships = Arc::new(AtomicU64::new(0));
    let (stop_sequencer, stopped) = tokio::sync::oneshot::channel::<()>();
    let sequencer = {
        let sequencer = sequencer_store.audit_sequencer(
            WriterConfig::builder(origin).build().expect("config"),
            Arc::clone(&clock),
            None,
        );
        let leaderships = Arc::clone(&leaderships);
        tokio::spawn(async move {
            let on_lead = move |writer: Option<_>| {
                if writer.is_some() {
                    leaderships.fetch_add(1, Ordering::Relaxed);
                }
            };
            let stop = async {
                let _ = stopped.await;
            };
            sequencer
                .run(Duration::from_millis(50), on_lead, stop)
                .await;
        })
    };

    // The restarter: after some answered requests, each restart in turn; then more answered
    // requests (the load recovered) before the clients may stop.
    let counters = Arc::new(Counters::default());
    let restarter = {
        let counters = Arc::clone(&counters);
        let (version, name) = (cluster.version.clone(), cluster.name.clone());
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            for (mode, options) in RESTARTS {
                let target = counters.answered() + rng.random_range(ANSWERED_PER_GAP);
                answered_at_least(&counters, target).await;
                let (version, name) = (version.clone(), name.clone());
                let out = tokio::task::spawn_blocking(move || {
                    pg_ctlcluster(&version, &name, options, "restart")
                })
                .await
                .expect("restart task");
                out.unwrap_or_else(|e| panic!("{mode} restart failed: {e}"));
                counters.faults.fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "restarted ({mode}) after {} answered requests, {} retries so far",
                    target,
                    counters.retries()
                );
            }
            let target = counters.answered() + rng.random_range(ANSWERED_PER_GAP);
            answered_at_least(&counters, target).await;
            counters.enough.store(true, Ordering::Relaxed);
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
    let acked = tokio::time::timeout(LOAD_TIME_MAX, async {
        restarter.await.expect("restarter");
        let mut acked = Vec::new();
        for c in clients {
            acked.extend(c.await.expect("client"));
        }
        acked
    })
    .await
    .unwrap_or_else(|_| panic!("the load did not end within {LOAD_TIME_MAX:?}"));
    let _ = stop_sequencer.send(());
    sequencer.await.expect("sequencer");
    let (restarts, retries) = (counters.faults(), counters.retries());
    let leaderships = leaderships.load(Ordering::Relaxed);
    eprintln!(
        "pg restart seed {seed}: {} requests, {restarts} restarts, {retries} retries, \
         {} answered from an earlier attempt's commit, {leaderships} sequencer leaderships",
        acked.len(),
        counters.in_doubt()
    );
    assert_eq!(restarts, RESTARTS.len() as u64);
    // Each restart failed requests in flight (or about to be sent) on both stores.
    assert!(retries >= restarts, "only {retries} retries");
    // The sequencer lost its lock connection to a restart and led again.
    assert!(leaderships >= 2, "{leaderships} sequencer leaderships");
    let kinds = load::assert_every_kind_succeeded(&acked, 5);
    eprintln!("successes (grant, consume, reserve, commit, cancel): {kinds:?}");

    // Checked through a store opened now, as a restarted process would.
    db.reconnect().await;
    let reopened = db.store(config(&db), Arc::clone(&clock)).await;
    let checked = load::check_after_load(&reopened, clock, &tenants, &acked, origin).await;
    eprintln!(
        "checked: {} journal entries, audit log verified against its last checkpoint",
        checked.journal_len
    );
    drop(ledgers);
    drop(cluster);
}
