//! credits-postgres against a real PostgreSQL server (`DATABASE_URL`), with pgbench driving
//! the equivalent SQL transaction in the same run.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo bench --bench credits-postgres            # BENCH_SECS=10 by default
//! ```
//!
//! Workloads (8 connections, 10,000 tenants with one lot each, consumes of 1 unit, a fresh
//! idempotency key per request):
//! * `single`: 8 tasks, one request per SQL transaction, uniform tenants;
//! * `single+audit`: the same with an audit entry sealed per journal entry and the audit
//!   sequencer integrating them meanwhile; `group-commit+audit` likewise; each with the
//!   integration lag (commit → log index, p50/p99); `BENCH_ONLY=audit` alternates rounds
//!   with and without the audit (`BENCH_AUDIT_ROUNDS`, default 3) and prints the medians;
//! * `group-commit`: 512 concurrent callers through group commit (`PgLedgerStore::with_group_commit`, 8 workers);
//! * `apply_group`: 8 tasks, each sending groups of 100 requests;
//! * `hot/single`, `hot/group-commit`: the same on one tenant;
//! * `half-load`: open loop at half of `single`'s throughput, latency from the scheduled
//!   start (no coordinated omission);
//! * `pgbench`: the same transaction as SQL (custom script, 8 clients, prepared);
//! * `tx` (`two-phase/2-participants`): 8 tasks, each transaction two branches on two
//!   tenants through the ledger's holds and PostgreSQL's transaction log;
//! * bytes per operation: growth of every table and index ÷ operations;
//! * `partitions` (issue #22, only when `BENCH_ONLY` names it): single consumes, group commit and bytes per consume on a
//!   schema with migration 10's monthly partitions and on one without (every other migration),
//!   alternated (`BENCH_PARTITION_ROUNDS`, default 4);
//! * `history` (issue #22, only when named): `balance_at` of a random tenant at a random time over 10
//!   million journal entries in 24 monthly partitions (1 and 8 tasks); with
//!   `BENCH_HISTORY_FLAT=1` the same history in the unpartitioned journal.
#![allow(clippy::print_stdout, clippy::print_stderr)]
// a benchmark report

// Tests and benchmarks act as applications: they spawn tasks and sleep on tokio's timer.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use credits_core::{Amount, Command, IdempotencyKey, LedgerStore, Request, TenantId};
use credits_postgres::tokio_postgres::{self, NoTls};
use credits_postgres::{GroupCommitConfig, LedgerAudit, PgConfig, PgLedgerStore};
use hdrhistogram::Histogram;
use metered_clock::{Clock, SystemClock, Timestamp};
use rand::Rng;

const TENANTS: u32 = 10_000;
const CONNECTIONS: usize = 8;
const FUNDS: u64 = 1_000_000_000;

struct Bench {
    url: String,
    schema: String,
    admin: tokio_postgres::Client,
    clock: Arc<SystemClock>,
    secs: u64,
    run: AtomicU64,
}

struct Report {
    ops: u64,
    secs: f64,
    hist: Histogram<u64>,
}

impl Report {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.secs
    }
    fn print(&self, name: &str) {
        println!(
            "credits-postgres/{name:<18} {:>9.0} ops/s  p50 {:>6} µs  p99 {:>6} µs  p99.9 {:>6} µs  ({} ops in {:.1} s)",
            self.rate(),
            self.hist.value_at_quantile(0.50),
            self.hist.value_at_quantile(0.99),
            self.hist.value_at_quantile(0.999),
            self.ops,
            self.secs
        );
    }
}

fn tenant(i: u32) -> TenantId {
    TenantId::new(format!("b{i}")).unwrap_or_else(|e| panic!("{e}"))
}

fn consume(tenant: TenantId, key: String) -> Request {
    Request::new(
        tenant,
        IdempotencyKey::new(key).unwrap_or_else(|e| panic!("{e}")),
        Command::Consume {
            amount: Amount::new(1),
        },
    )
}

impl Bench {
    async fn store(&self, audit: bool) -> PgLedgerStore {
        let mut config = PgConfig::builder(&self.url)
            .search_path(&self.schema)
            .pool_max_size(CONNECTIONS);
        if audit {
            let key = audit_chain::HmacKey::new(1, [7u8; 32]).unwrap_or_else(|e| panic!("{e}"));
            config = config.audit(LedgerAudit::new(
                Arc::new(audit_chain::Keyring::new(key)),
                audit_chain::MaskingPolicy::standard(),
            ));
        }
        let config = config.build().unwrap_or_else(|e| panic!("{e}"));
        PgLedgerStore::connect(config, self.clock.clone()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn prefix(&self) -> String {
        format!("k{}-", self.run.fetch_add(1, Ordering::Relaxed))
    }

    async fn size(&self) -> i64 {
        self.admin
            .query_one(
                "SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relkind = 'r'",
                &[&self.schema],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Closed loop: `tasks` tasks call `op(task, i)` back to back for `secs`.
    async fn closed<F, Fut>(&self, tasks: usize, op: F) -> Report
    where
        F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let op = Arc::new(op);
        let stop = Arc::new(AtomicBool::new(false));
        let start = self.clock.monotonic();
        let handles: Vec<_> = (0..tasks)
            .map(|task| {
                let (op, stop, clock) = (op.clone(), stop.clone(), self.clock.clone());
                tokio::spawn(async move {
                    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                        .unwrap_or_else(|e| panic!("{e}"));
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let t0 = clock.monotonic();
                        op(task, i).await;
                        let us = clock.monotonic().saturating_duration_since(t0).as_micros();
                        hist.saturating_record(u64::try_from(us).unwrap_or(u64::MAX).max(1));
                        i += 1;
                    }
                    hist
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(self.secs)).await;
        stop.store(true, Ordering::Relaxed);
        let mut hist =
            Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|e| panic!("{e}"));
        for h in handles {
            hist.add(h.await.unwrap_or_else(|e| panic!("{e}")))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let secs = self
            .clock
            .monotonic()
            .saturating_duration_since(start)
            .as_secs_f64();
        Report {
            ops: hist.len(),
            secs,
            hist,
        }
    }

    /// Open loop at `rate` requests/s over `tasks` tasks; latency counted from each
    /// request's scheduled start.
    async fn open<F, Fut>(&self, tasks: usize, rate: f64, op: F) -> Report
    where
        F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let op = Arc::new(op);
        let interval = Duration::from_secs_f64(tasks as f64 / rate);
        let total = Duration::from_secs(self.secs);
        let start = self.clock.monotonic();
        let handles: Vec<_> = (0..tasks)
            .map(|task| {
                let (op, clock) = (op.clone(), self.clock.clone());
                let offset = interval.mul_f64(task as f64 / tasks as f64);
                tokio::spawn(async move {
                    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                        .unwrap_or_else(|e| panic!("{e}"));
                    let mut i: u32 = 0;
                    loop {
                        let due = offset + interval * i;
                        if due >= total {
                            break hist;
                        }
                        let now = clock.monotonic().saturating_duration_since(start);
                        if due > now {
                            tokio::time::sleep(due - now).await;
                        }
                        op(task, u64::from(i)).await;
                        let done = clock.monotonic().saturating_duration_since(start);
                        let us = done.saturating_sub(due).as_micros();
                        hist.saturating_record(u64::try_from(us).unwrap_or(u64::MAX).max(1));
                        i += 1;
                    }
                })
            })
            .collect();
        let mut hist =
            Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|e| panic!("{e}"));
        for h in handles {
            hist.add(h.await.unwrap_or_else(|e| panic!("{e}")))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let secs = self
            .clock
            .monotonic()
            .saturating_duration_since(start)
            .as_secs_f64();
        Report {
            ops: hist.len(),
            secs,
            hist,
        }
    }
}

async fn single(b: &Bench, store: PgLedgerStore, hot: bool) -> Report {
    let prefix = b.prefix();
    let clock = b.clock.clone();
    b.closed(CONNECTIONS, move |task, i| {
        let store = store.clone();
        let t = if hot {
            tenant(0)
        } else {
            tenant(rand::rng().random_range(0..TENANTS))
        };
        let r = consume(t, format!("{prefix}{task}-{i}"));
        let now = clock.now();
        async move {
            store.apply(&r, now).await.unwrap_or_else(|e| panic!("{e}"));
        }
    })
    .await
}

/// Two-phase commit over the ledger's holds, with PostgreSQL's transaction log: 8 tasks,
/// each transaction two branches on two uniform tenants (begin, enlist twice, prepare
/// both, decide, commit both, finish: 9 SQL transactions).
async fn two_phase(b: &Bench, store: &PgLedgerStore) -> Report {
    use credits_core::tx::{HoldBranch, LedgerHolds, TransactionManager};
    let clock: Arc<dyn Clock> = b.clock.clone();
    let ledger = credits_core::Ledger::from_shared(Arc::new(store.clone()), clock.clone());
    let tm = Arc::new(
        TransactionManager::builder(Arc::new(store.tx_log()), clock)
            .participant(Arc::new(LedgerHolds::new("credits", ledger)))
            .build(),
    );
    b.closed(CONNECTIONS, move |_, _| {
        let tm = Arc::clone(&tm);
        let mut rng = rand::rng();
        let a = rng.random_range(0..TENANTS);
        let other = (a + 1 + rng.random_range(0..TENANTS - 1)) % TENANTS;
        let branch = |t: u32| {
            HoldBranch::new(tenant(t), Amount::new(10), Amount::new(7))
                .unwrap_or_else(|e| panic!("{e}"))
                .payload()
        };
        let (pa, pb) = (branch(a), branch(other));
        async move {
            let tx = tm
                .begin(Duration::from_secs(30))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            tm.enlist(tx, "credits", pa)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            tm.enlist(tx, "credits", pb)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let _committed = tm.commit(tx).await.unwrap_or_else(|e| panic!("{e}"));
        }
    })
    .await
}

async fn group_commit(b: &Bench, store: &PgLedgerStore, hot: bool) -> Report {
    let gc = store.clone().with_group_commit(
        GroupCommitConfig::new(CONNECTIONS, 1_000, 65_536).unwrap_or_else(|e| panic!("{e}")),
    );
    let prefix = b.prefix();
    let clock = b.clock.clone();
    b.closed(512, move |task, i| {
        let gc = gc.clone();
        let t = if hot {
            tenant(0)
        } else {
            tenant(rand::rng().random_range(0..TENANTS))
        };
        let r = consume(t, format!("{prefix}{task}-{i}"));
        let now = clock.now();
        async move {
            gc.apply(&r, now).await.unwrap_or_else(|e| panic!("{e}"));
        }
    })
    .await
}

async fn apply_group(b: &Bench, store: &PgLedgerStore) -> Report {
    const GROUP: u64 = 100;
    let prefix = b.prefix();
    let clock = b.clock.clone();
    let store = store.clone();
    let mut report = b
        .closed(CONNECTIONS, move |task, i| {
            let store = store.clone();
            let mut rng = rand::rng();
            let requests: Vec<Request> = (0..GROUP)
                .map(|j| {
                    consume(
                        tenant(rng.random_range(0..TENANTS)),
                        format!("{prefix}{task}-{i}-{j}"),
                    )
                })
                .collect();
            let now = clock.now();
            async move {
                for r in store
                    .apply_group(&requests, now)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
                {
                    r.unwrap_or_else(|e| panic!("{e}"));
                }
            }
        })
        .await;
    report.ops *= GROUP;
    report
}

fn pgbench(b: &Bench, hot: bool) -> Option<f64> {
    let pick = if hot {
        "\\set t 0\n"
    } else {
        "\\set t random(0, 9999)\n"
    };
    let script = pick.to_owned()
        + "\
\\set k random(1, 1000000000000000)\n\
BEGIN;\n\
SELECT tenant, overdraft_limit, granted, refunded, consumed, expired, available, held, overdrawn, next_entry, next_lot, next_hold, last_at, audit_next_seq, audit_last_hash FROM accounts WHERE tenant = 'b' || :t FOR UPDATE;\n\
SELECT tenant, lot_id, expires_at, priority, remaining FROM credit_lots WHERE tenant = 'b' || :t;\n\
SELECT tenant, hold_id, amount, expires_at, draws FROM holds WHERE tenant = 'b' || :t AND state = 'active';\n\
SELECT record FROM idempotency_keys WHERE tenant = 'b' || :t AND key = 'p' || :k;\n\
UPDATE accounts SET consumed = consumed + 1, available = available - 1, next_entry = next_entry + 1, last_at = last_at + 1 WHERE tenant = 'b' || :t RETURNING next_entry - 1 AS seq, available + 1 AS before, available AS after \\gset\n\
UPDATE credit_lots SET remaining = remaining - 1 WHERE tenant = 'b' || :t AND lot_id = 1;\n\
INSERT INTO journal_entries (tenant, seq, at, kind, amount, before_available, before_held, before_overdrawn, after_available, after_held, after_overdrawn, idempotency_key) VALUES ('b' || :t, :seq, 1764000000000, 2, 1, :before, 0, 0, :after, 0, 0, 'p' || :k);\n\
INSERT INTO idempotency_keys (tenant, key, at, record) VALUES ('b' || :t, 'p' || :k, 1764000000000, '{\"command\":{\"Consume\":{\"amount\":1}},\"result\":{\"Ok\":{\"entry\":' || :seq || ',\"at\":1764000000000,\"balance\":{\"available\":' || :after || ',\"held\":0,\"overdrawn\":0},\"effect\":\"Consumed\"}},\"at\":1764000000000}');\n\
END;\n";
    let path = std::env::temp_dir().join(format!("{}.pgbench.sql", b.schema));
    std::fs::write(&path, script).ok()?;
    let out = std::process::Command::new("pgbench")
        .env("PGOPTIONS", format!("-c search_path={}", b.schema))
        .args([
            "-n",
            "-M",
            "prepared",
            "-c",
            &CONNECTIONS.to_string(),
            "-j",
            "2",
            "-T",
            &b.secs.to_string(),
            "-f",
        ])
        .arg(&path)
        .arg(&b.url)
        .output();
    let _ = std::fs::remove_file(&path);
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            eprintln!("pgbench not run: {e}");
            return None;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse::<f64>().ok());
    let latency = text
        .lines()
        .find(|l| l.starts_with("latency average"))
        .unwrap_or("");
    if tps.is_none() {
        eprintln!(
            "pgbench failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!(
        "credits-postgres/pgbench{}   {:>9.0} tps   ({latency})",
        if hot { "/hot    " } else { "        " },
        tps.unwrap_or(0.0)
    );
    tps
}

/// Integration lag: how long committed audit entries wait before the sequencer gives them
/// a log index. Every 50 ms the monitor notes the newest queued id; the sample ends when
/// every entry up to it has left the queue (polled every 10 ms), so each figure is an
/// upper bound of the lag of the entries committed by then.
struct Lag {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Histogram<u64>>,
}

impl Lag {
    async fn start(url: &str, schema: &str, clock: Arc<SystemClock>) -> Lag {
        let (client, conn) = tokio_postgres::connect(url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(conn);
        let query = format!("SELECT min(id), max(id) FROM {schema}.audit_pending");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
                .unwrap_or_else(|e| panic!("{e}"));
            let mut waiting: std::collections::VecDeque<(metered_clock::Tick, i64)> =
                std::collections::VecDeque::new();
            let mut last_note = clock.monotonic();
            while !stopped.load(Ordering::Relaxed) || !waiting.is_empty() {
                let row = client
                    .query_one(&query, &[])
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let (min, max): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
                let now = clock.monotonic();
                while let Some(&(at, upto)) = waiting.front() {
                    if min.is_some_and(|m| m <= upto) {
                        break;
                    }
                    let us = now.saturating_duration_since(at).as_micros();
                    hist.saturating_record(u64::try_from(us).unwrap_or(u64::MAX).max(1));
                    waiting.pop_front();
                }
                if !stopped.load(Ordering::Relaxed)
                    && now.saturating_duration_since(last_note) >= Duration::from_millis(50)
                {
                    last_note = now;
                    if let Some(upto) = max {
                        waiting.push_back((now, upto));
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            hist
        });
        Lag { stop, task }
    }

    async fn stop(self) -> LagReport {
        self.stop.store(true, Ordering::Relaxed);
        LagReport(self.task.await.unwrap_or_else(|e| panic!("{e}")))
    }
}

struct LagReport(Histogram<u64>);

impl LagReport {
    fn print(&self, name: &str) {
        let ms = |q: f64| self.0.value_at_quantile(q) as f64 / 1_000.0;
        println!(
            "credits-postgres/{name:<28} samples {:>5}  p50 {:>8.1} ms  p99 {:>8.1} ms  max {:>8.1} ms",
            self.0.len(),
            ms(0.5),
            ms(0.99),
            self.0.max() as f64 / 1_000.0
        );
    }
}

async fn run(url: String) {
    let secs = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let schema = format!("bench_{:08x}", rand::rng().random::<u32>());
    let (admin, conn) = tokio_postgres::connect(&url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(conn);
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let sync: String = admin
        .query_one("SHOW synchronous_commit", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or_default();
    println!(
        "credits-postgres bench: schema {schema}, {TENANTS} tenants, {CONNECTIONS} connections, {secs} s per workload, synchronous_commit={sync}"
    );
    let b = Bench {
        url,
        schema,
        admin,
        clock: Arc::new(SystemClock::new()),
        secs,
        run: AtomicU64::new(0),
    };
    let store = b.store(false).await;
    let _ = store.migrate().await.unwrap_or_else(|e| panic!("{e}"));
    b.admin
        .execute(
            &format!(
                "INSERT INTO {}.accounts (tenant, overdraft_limit, last_at) \
                 SELECT 'b' || g, 0, $1 FROM generate_series(0, $2::bigint - 1) g",
                b.schema
            ),
            &[
                &i64::try_from(b.now().as_unix_millis()).unwrap_or(0),
                &i64::from(TENANTS),
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for chunk in (0..TENANTS).collect::<Vec<_>>().chunks(1_000) {
        let grants: Vec<Request> = chunk
            .iter()
            .map(|&t| {
                Request::new(
                    tenant(t),
                    IdempotencyKey::new("fund").unwrap_or_else(|e| panic!("{e}")),
                    Command::Grant {
                        amount: Amount::new(FUNDS),
                        expires_at: None,
                        priority: 0,
                    },
                )
            })
            .collect();
        let grants = credits_core::Batch::new(grants).unwrap_or_else(|e| panic!("{e}"));
        store
            .apply_batch(&grants, b.now())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    b.admin
        .batch_execute(&format!(
            "VACUUM ANALYZE {0}.accounts, {0}.credit_lots",
            b.schema
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let want = |name: &str| only.is_empty() || only.split(',').any(|w| w == name);
    // Warm up: open the connections, prepare the statements, touch every tenant's pages.
    let warm_secs = b.secs.clamp(1, 3);
    let warm = Bench {
        secs: warm_secs,
        url: b.url.clone(),
        schema: b.schema.clone(),
        admin: tokio_postgres::connect(&b.url, NoTls)
            .await
            .map(|(c, conn)| {
                tokio::spawn(conn);
                c
            })
            .unwrap_or_else(|e| panic!("{e}")),
        clock: b.clock.clone(),
        run: AtomicU64::new(1_000_000),
    };
    let _ = single(&warm, store.clone(), false).await;
    let before = b.size().await;
    let peak = single(&b, store.clone(), false).await;
    let grown = b.size().await - before;
    peak.print("single");
    println!(
        "credits-postgres/bytes-per-op       {:>9.0} B/op   (all tables + indexes grew {grown} B over {} consumes)",
        grown as f64 / peak.ops as f64,
        peak.ops
    );
    if want("audit") {
        // As users run it: the ledger seals and queues in each transaction, and the
        // sequencer integrates the queue into the Merkle log meanwhile. Rounds alternate the
        // store without the audit and the audited one, so both see the same server state;
        // the medians are compared.
        let audited = b.store(true).await;
        // The service's writer settings.
        let config = audit_chain::WriterConfig::builder("bench.invalid/audit")
            .buffer_max(65_536)
            .batch_max(1_024)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let leader = audited
            .audit_sequencer(config, b.clock.clone(), None)
            .try_lead()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("another sequencer leads the bench schema"));
        let rounds: usize = std::env::var("BENCH_AUDIT_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3);
        let (mut single_off, mut single_on, mut group_off, mut group_on) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let plain = single(&b, store.clone(), false).await;
            plain.print("single");
            single_off.push(plain.rate());
            let before = b.size().await;
            let lag = Lag::start(&b.url, &b.schema, b.clock.clone()).await;
            let audit = single(&b, audited.clone(), false).await;
            let grown_audit = b.size().await - before;
            audit.print("single+audit");
            lag.stop().await.print("single+audit/integration-lag");
            println!(
                "credits-postgres/bytes-per-op+audit {:>9.0} B/op",
                grown_audit as f64 / audit.ops as f64
            );
            single_on.push(audit.rate());
            let plain = group_commit(&b, &store, false).await;
            plain.print("group-commit");
            group_off.push(plain.rate());
            let lag = Lag::start(&b.url, &b.schema, b.clock.clone()).await;
            let audit = group_commit(&b, &audited, false).await;
            audit.print("group-commit+audit");
            lag.stop().await.print("group-commit+audit/integration-lag");
            group_on.push(audit.rate());
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        };
        let (so, sa) = (median(&mut single_off), median(&mut single_on));
        let (go, ga) = (median(&mut group_off), median(&mut group_on));
        println!(
            "credits-postgres/audit medians over {rounds} alternated rounds: single {so:.0} → {sa:.0} ops/s \
             (ratio {:.2}), group commit {go:.0} → {ga:.0} ops/s (ratio {:.2})",
            sa / so.max(1.0),
            ga / go.max(1.0)
        );
        let cp = leader.resign().await.unwrap_or_else(|e| panic!("{e}"));
        println!("credits-postgres/audit-log-size    {:>9} entries", cp.size);
    }
    if want("half") {
        let store = store.clone();
        let prefix = b.prefix();
        let clock = b.clock.clone();
        b.open(CONNECTIONS, peak.rate() / 2.0, move |task, i| {
            let store = store.clone();
            let r = consume(
                tenant(rand::rng().random_range(0..TENANTS)),
                format!("{prefix}{task}-{i}"),
            );
            let now = clock.now();
            async move {
                store.apply(&r, now).await.unwrap_or_else(|e| panic!("{e}"));
            }
        })
        .await
        .print("half-load");
    }
    if want("group") {
        group_commit(&b, &store, false).await.print("group-commit");
        apply_group(&b, &store).await.print("apply_group");
    }
    if want("hot") {
        single(&b, store.clone(), true).await.print("hot/single");
        group_commit(&b, &store, true)
            .await
            .print("hot/group-commit");
    }
    if want("pgbench") {
        // Alternate our single path and pgbench so both see the same background load.
        let mut ratios = Vec::new();
        for _ in 0..3 {
            let ours = single(&b, store.clone(), false).await;
            ours.print("single");
            if let Some(tps) = pgbench(&b, false) {
                ratios.push(ours.rate() / tps);
            }
        }
        ratios.sort_by(f64::total_cmp);
        println!(
            "credits-postgres/ratio single/pgbench: {:?}, median {:.2}",
            ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>(),
            ratios.get(ratios.len() / 2).copied().unwrap_or(0.0)
        );
        let _ = pgbench(&b, true);
    }
    if want("tx") {
        two_phase(&b, &store)
            .await
            .print("two-phase/2-participants");
    }
    if want("peers") {
        peers::rustlavel(&b).await;
        peers::doubleentry(&b).await;
    }
    // Opt-in (named in BENCH_ONLY): minutes of set-up each.
    let named = |name: &str| only.split(',').any(|w| w == name);
    if named("partitions") {
        partitions::throughput(&b.url, &b.schema, b.secs, b.clock.clone()).await;
    }
    if named("history") {
        partitions::history(&b.url, &b.schema, b.secs, b.clock.clone()).await;
    }
    store.pool().close();
    b.admin
        .batch_execute(&format!("DROP SCHEMA {} CASCADE", b.schema))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

mod peers {
    //! The Rust peers that keep credits in PostgreSQL, on the same server and workload.
    use super::*;

    /// The server URL with another database name.
    fn url_with_db(url: &str, db: &str) -> String {
        let base = url.split('?').next().unwrap_or(url);
        let cut = base.rfind('/').map_or(base.len(), |i| i);
        format!("{}/{db}", &base[..cut])
    }

    /// Wallets opened in doubleentry: opening an account is one locked, fsynced transaction
    /// (no batch open), so 10,000 would take minutes; one writer per ledger makes the count
    /// irrelevant to consume throughput.
    const DE_WALLETS: u32 = 1_000;

    /// `doubleentry` 0.8 with its PostgreSQL store: one ledger, wallets as liability
    /// accounts that may not go negative, a consume is a balanced entry (wallet → income)
    /// under its idempotency key, RFC 6962 log, one writer per ledger (advisory lock).
    pub(super) async fn doubleentry(b: &Bench) {
        use doubleentry::store::{Postgres, SqlOptions, SqlStore};
        use doubleentry::{AccountKind, BalanceLimit, Entry, Ledger, LedgerId, currency::EUR};
        let schema = format!("bench_de_{:08x}", rand::rng().random::<u32>());
        let store = SqlStore::<Postgres>::postgres_with(
            &b.url,
            SqlOptions {
                schema: schema.clone(),
                max_connections: u32::try_from(CONNECTIONS).unwrap_or(8),
                ..SqlOptions::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let books = Ledger::new(
            store,
            LedgerId::new("bench.example/credits").unwrap_or_else(|e| panic!("{e}")),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let day = doubleentry::date!("2026-01-01");
        let on = doubleentry::date!("2026-01-02");
        books
            .declare_currency(EUR, 2, day)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        books
            .define_months(2026, 1..=12)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        books
            .open("Assets:Bank", AccountKind::Asset, day)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        books
            .open("Income:Usage", AccountKind::Income, day)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let opening: Vec<_> = (0..CONNECTIONS)
            .map(|task| {
                let books = books.clone();
                tokio::spawn(async move {
                    for t in (0..DE_WALLETS).filter(|t| *t as usize % CONNECTIONS == task) {
                        books
                            .register(
                                doubleentry::AccountSpec::new(
                                    format!("Liabilities:Wallets:b{t}"),
                                    AccountKind::Liability,
                                    day,
                                )
                                .limit(BalanceLimit::NoDebitBalance),
                            )
                            .await
                            .unwrap_or_else(|e| panic!("{e}"));
                    }
                })
            })
            .collect();
        for o in opening {
            o.await.unwrap_or_else(|e| panic!("{e}"));
        }
        let funds =
            doubleentry::Amount::from_minor(i128::from(FUNDS)).unwrap_or_else(|e| panic!("{e}"));
        books
            .record_batch((0..DE_WALLETS).map(|t| {
                Entry::new(format!("fund-{t}"), on)
                    .debit("Assets:Bank", funds, EUR)
                    .credit(format!("Liabilities:Wallets:b{t}"), funds, EUR)
            }))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let one = doubleentry::Amount::from_minor(1).unwrap_or_else(|e| panic!("{e}"));
        let prefix = b.prefix();
        let report = {
            let books = books.clone();
            b.closed(CONNECTIONS, move |task, i| {
                let books = books.clone();
                let wallet = format!(
                    "Liabilities:Wallets:b{}",
                    rand::rng().random_range(0..DE_WALLETS)
                );
                let entry = Entry::new(format!("{prefix}{task}-{i}"), on)
                    .debit(wallet, one, EUR)
                    .credit("Income:Usage", one, EUR);
                async move {
                    books.record(entry).await.unwrap_or_else(|e| panic!("{e}"));
                }
            })
            .await
        };
        report.print("doubleentry");
        let size: i64 = b
            .admin
            .query_one(
                "SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relkind = 'r'",
                &[&schema],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"));
        println!(
            "credits-postgres/doubleentry schema size after the run: {:.0} B per operation (set-up included)",
            size as f64 / (report.ops + 2 * u64::from(DE_WALLETS)) as f64
        );
        drop(books);
        let _ = b
            .admin
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await;
    }

    /// `rustlavel-ledger` 0.9: a guarded `UPDATE … WHERE balance - held >= amount` per
    /// consume, lots drawn soonest-expiring first, double-entry transfer rows. Its tables have
    /// fixed names, so it gets a database of its own.
    pub(super) async fn rustlavel(b: &Bench) {
        let db = format!("bench_rl_{:08x}", rand::rng().random::<u32>());
        b.admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let url = format!("{}?max_connections={CONNECTIONS}", url_with_db(&b.url, &db));
        let database = rustlavel_db::Database::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        rustlavel_ledger::create_tables(&rustlavel_db::Schema::new(&database))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let ledger = Arc::new(rustlavel_ledger::Ledger::new(database, "credits"));
        let funds = i64::try_from(FUNDS).unwrap_or(i64::MAX);
        let fund: Vec<_> = (0..CONNECTIONS)
            .map(|task| {
                let ledger = ledger.clone();
                tokio::spawn(async move {
                    for t in (0..TENANTS).filter(|t| *t as usize % CONNECTIONS == task) {
                        ledger
                            .top_up(&format!("b{t}"), funds, &format!("fund-{t}"), None)
                            .await
                            .unwrap_or_else(|e| panic!("{e}"));
                    }
                })
            })
            .collect();
        for f in fund {
            f.await.unwrap_or_else(|e| panic!("{e}"));
        }
        let prefix = b.prefix();
        let report = {
            let ledger = ledger.clone();
            b.closed(CONNECTIONS, move |task, i| {
                let ledger = ledger.clone();
                let owner = format!("b{}", rand::rng().random_range(0..TENANTS));
                let reference = format!("{prefix}{task}-{i}");
                async move {
                    ledger
                        .consume(&owner, 1, &reference)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                }
            })
            .await
        };
        report.print("rustlavel-ledger");
        let size: i64 = {
            let (c, conn) = tokio_postgres::connect(&url_with_db(&b.url, &db), NoTls)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            tokio::spawn(conn);
            c.query_one(
                "SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = 'public' AND c.relkind = 'r'",
                &[],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"))
        };
        println!(
            "credits-postgres/rustlavel-ledger database size after the run: {:.0} B per operation (funding included)",
            size as f64 / (report.ops + u64::from(TENANTS)) as f64
        );
        drop(ledger);
        let _ = b
            .admin
            .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
            .await;
    }
}

fn main() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        println!("credits-postgres bench skipped: set DATABASE_URL");
        return;
    };
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run only when
    // benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        println!("credits-postgres bench: run with `cargo bench --bench credits-postgres`");
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
        .block_on(run(url));
}

mod partitions {
    //! Issue #22's figures: the monthly partitions of migration 10 against the same schema
    //! without them (every other migration), alternated in one run, and a point-in-time balance
    //! over 10 million journal entries in 24 monthly partitions.
    use super::*;

    /// A fresh schema `name` with the ledger (all migrations, or all but `without`) and
    /// every tenant funded, like the main bench's schema.
    pub(super) async fn bench_on(
        url: &str,
        name: String,
        secs: u64,
        clock: Arc<SystemClock>,
        without: Option<i64>,
    ) -> (Bench, PgLedgerStore) {
        let (admin, conn) = tokio_postgres::connect(url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(conn);
        admin
            .batch_execute(&format!("CREATE SCHEMA {name}; SET search_path = {name}"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let b = Bench {
            url: url.to_owned(),
            schema: name,
            admin,
            clock,
            secs,
            run: AtomicU64::new(0),
        };
        let store = b.store(false).await;
        match without {
            None => {
                let _ = store.migrate().await.unwrap_or_else(|e| panic!("{e}"));
            }
            Some(skipped) => {
                // Every migration but `skipped`, recorded as `migrate` records them (the
                // later ones do not depend on migration 10: they run on the flat tables).
                b.admin
                    .batch_execute(
                        "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, \
                         name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT clock_timestamp())",
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{e:?}"));
                for m in credits_postgres::MIGRATIONS
                    .iter()
                    .filter(|m| m.version != skipped)
                {
                    b.admin
                        .batch_execute(&format!(
                            "BEGIN; {} INSERT INTO schema_migrations (version, name) \
                             VALUES ({}, '{}'); COMMIT;",
                            m.sql, m.version, m.name
                        ))
                        .await
                        .unwrap_or_else(|e| panic!("migration {}: {e:?}", m.version));
                }
            }
        }
        b.admin
            .execute(
                "INSERT INTO accounts (tenant, overdraft_limit, last_at) \
                 SELECT 'b' || g, 0, $1 FROM generate_series(0, $2::bigint - 1) g",
                &[
                    &i64::try_from(b.now().as_unix_millis()).unwrap_or(0),
                    &i64::from(TENANTS),
                ],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for chunk in (0..TENANTS).collect::<Vec<_>>().chunks(1_000) {
            let grants: Vec<Request> = chunk
                .iter()
                .map(|&t| {
                    Request::new(
                        tenant(t),
                        IdempotencyKey::new("fund").unwrap_or_else(|e| panic!("{e}")),
                        Command::Grant {
                            amount: Amount::new(FUNDS),
                            expires_at: None,
                            priority: 0,
                        },
                    )
                })
                .collect();
            let grants = credits_core::Batch::new(grants).unwrap_or_else(|e| panic!("{e}"));
            store
                .apply_batch(&grants, b.now())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        b.admin
            .batch_execute("VACUUM ANALYZE accounts, credit_lots")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        (b, store)
    }

    fn median(v: &mut [f64]) -> f64 {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    }

    /// Single consumes and group commit on both schemas, alternated (ABBA) over
    /// `BENCH_PARTITION_ROUNDS` rounds (default 4), with bytes per consume.
    pub(super) async fn throughput(url: &str, base: &str, secs: u64, clock: Arc<SystemClock>) {
        let rounds: usize = std::env::var("BENCH_PARTITION_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4);
        let (part, part_store) =
            bench_on(url, format!("{base}_part"), secs, clock.clone(), None).await;
        let (flat, flat_store) =
            bench_on(url, format!("{base}_flat"), secs, clock.clone(), Some(10)).await;
        let partitioned: i64 = part
            .admin
            .query_one(
                "SELECT count(*) FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid \
                 WHERE c.relnamespace = current_schema()::regnamespace",
                &[],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"));
        println!(
            "credits-postgres/partitions: {} (every migration, {partitioned} partitioned tables) vs {} (every migration but 10), {rounds} alternated rounds",
            part.schema, flat.schema
        );
        for (b, store) in [(&part, &part_store), (&flat, &flat_store)] {
            let warm = Bench {
                secs: secs.clamp(1, 3),
                url: b.url.clone(),
                schema: b.schema.clone(),
                admin: tokio_postgres::connect(&b.url, NoTls)
                    .await
                    .map(|(c, conn)| {
                        tokio::spawn(conn);
                        c
                    })
                    .unwrap_or_else(|e| panic!("{e}")),
                clock: b.clock.clone(),
                run: AtomicU64::new(1_000_000),
            };
            let _ = single(&warm, store.clone(), false).await;
        }
        let (mut single_part, mut single_flat, mut group_part, mut group_flat) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut bytes_part, mut bytes_flat) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let order: [bool; 2] = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for is_part in order {
                let (b, store) = if is_part {
                    (&part, &part_store)
                } else {
                    (&flat, &flat_store)
                };
                let name = if is_part { "partitioned" } else { "flat" };
                let before = b.size().await;
                let r = single(b, store.clone(), false).await;
                let bytes = (b.size().await - before) as f64 / r.ops as f64;
                r.print(&format!("single/{name}"));
                println!("credits-postgres/bytes-per-op/{name:<12} {bytes:>9.0} B/op");
                if is_part {
                    single_part.push(r.rate());
                    bytes_part.push(bytes);
                } else {
                    single_flat.push(r.rate());
                    bytes_flat.push(bytes);
                }
            }
            for is_part in order {
                let (b, store) = if is_part {
                    (&part, &part_store)
                } else {
                    (&flat, &flat_store)
                };
                let name = if is_part { "partitioned" } else { "flat" };
                let r = group_commit(b, store, false).await;
                r.print(&format!("group/{name}"));
                if is_part {
                    group_part.push(r.rate());
                } else {
                    group_flat.push(r.rate());
                }
            }
        }
        // Each round's pair ran back to back, so its ratio sees one background load: the
        // median of the per-round ratios is the figure (the load moves between rounds).
        let ratios = |p: &[f64], f: &[f64]| -> Vec<f64> {
            p.iter().zip(f).map(|(p, f)| p / f.max(1.0)).collect()
        };
        let show = |v: &[f64]| {
            v.iter()
                .map(|r| format!("{r:.3}"))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        for (what, p, f) in [
            ("single", &single_part, &single_flat),
            ("group commit", &group_part, &group_flat),
            ("bytes per consume", &bytes_part, &bytes_flat),
        ] {
            let mut r = ratios(p, f);
            println!(
                "credits-postgres/partitions {what}: per-round ratios {}, median ratio {:.3}; medians {:.0} vs {:.0}",
                show(&r),
                median(&mut r),
                median(&mut p.clone()),
                median(&mut f.clone())
            );
        }
        // Bytes per journal entry over the whole run (set-up, warm-up and every round): the
        // per-round growth moves by whole pages of many relations; this does not.
        for b in [&part, &flat] {
            let entries: i64 = b
                .admin
                .query_one("SELECT count(*) FROM journal_entries", &[])
                .await
                .map(|r| r.get(0))
                .unwrap_or_else(|e| panic!("{e}"));
            let size = b.size().await;
            println!(
                "credits-postgres/partitions {}: {size} B in all tables and indexes for {entries} journal entries: {:.0} B per entry",
                b.schema,
                size as f64 / entries.max(1) as f64
            );
        }
        for (b, store) in [(part, part_store), (flat, flat_store)] {
            store.pool().close();
            b.admin
                .batch_execute(&format!("DROP SCHEMA {} CASCADE", b.schema))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// Tenants of the history and entries per tenant: 10 million journal entries.
    const HISTORY_TENANTS: i64 = 1_000;
    const HISTORY_ENTRIES: i64 = 10_000;
    /// Monthly partitions the history spans.
    const HISTORY_MONTHS: i32 = 24;

    /// A point-in-time balance (`LedgerStore::balance_at`) of a random tenant at a random
    /// time of a 24-month history of 10 million journal entries: one task, then
    /// `CONNECTIONS` tasks, `secs` each.
    pub(super) async fn history(url: &str, base: &str, secs: u64, clock: Arc<SystemClock>) {
        let (admin, conn) = tokio_postgres::connect(url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(conn);
        let name = format!("{base}_hist");
        admin
            .batch_execute(&format!("CREATE SCHEMA {name}; SET search_path = {name}"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let b = Bench {
            url: url.to_owned(),
            schema: name,
            admin,
            clock: clock.clone(),
            secs,
            run: AtomicU64::new(0),
        };
        let store = b.store(false).await;
        // BENCH_HISTORY_FLAT=1: the same history in the unpartitioned journal (every
        // migration but 10), for comparison.
        let flat = std::env::var("BENCH_HISTORY_FLAT").as_deref() == Ok("1");
        if flat {
            b.admin
                .batch_execute(
                    "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, \
                     name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT clock_timestamp())",
                )
                .await
                .unwrap_or_else(|e| panic!("{e:?}"));
            for m in credits_postgres::MIGRATIONS
                .iter()
                .filter(|m| m.version != 10)
            {
                b.admin
                    .batch_execute(&format!(
                        "BEGIN; {} INSERT INTO schema_migrations (version, name) \
                         VALUES ({}, '{}'); COMMIT;",
                        m.sql, m.version, m.name
                    ))
                    .await
                    .unwrap_or_else(|e| panic!("migration {}: {e:?}", m.version));
            }
        } else {
            let _ = store.migrate().await.unwrap_or_else(|e| panic!("{e}"));
        }
        // 24 months: this one and the 23 before it, every month its partition.
        let months = if flat {
            "SELECT m::text, (extract(epoch FROM m::timestamp AT TIME ZONE 'UTC') * 1000)::bigint, 0 \
             FROM (SELECT (date_trunc('month', clock_timestamp() AT TIME ZONE 'UTC') \
                           - make_interval(months => $1))::date AS m) s"
        } else {
            "SELECT m::text, (credits_month_range(m)).lo, \
                    credits_create_partitions(m, current_date) \
             FROM (SELECT (date_trunc('month', clock_timestamp() AT TIME ZONE 'UTC') \
                           - make_interval(months => $1))::date AS m) s"
        };
        let row = b
            .admin
            .query_one(months, &[&(HISTORY_MONTHS - 1)])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (first, lo): (String, i64) = (row.get(0), row.get(1));
        let hi = i64::try_from(b.now().as_unix_millis()).unwrap_or(i64::MAX);
        let step = (hi - lo) / HISTORY_ENTRIES;
        let t0 = b.clock.monotonic();
        b.admin
            .execute(
                "INSERT INTO accounts (tenant, overdraft_limit, last_at, granted, consumed, available) \
                 SELECT 'h' || t, 0, $1::bigint, 10000000, $2::bigint - 1, \
                        10000000 - ($2::bigint - 1) \
                 FROM generate_series(0, $3::bigint - 1) t",
                &[&hi, &HISTORY_ENTRIES, &HISTORY_TENANTS],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Time-major, like a real journal: every tenant's entry s, then s + 1, ...
        let chunk = HISTORY_ENTRIES / 20;
        for c in 0..20 {
            b.admin
                .execute(
                    "INSERT INTO journal_entries (tenant, seq, at, kind, amount, before_available, \
                       before_held, before_overdrawn, after_available, after_held, after_overdrawn) \
                     SELECT 'h' || t, s, $1::bigint + (s - 1) * $2::bigint + t, \
                            CASE WHEN s = 1 THEN 1 ELSE 2 END, \
                            CASE WHEN s = 1 THEN 10000000 ELSE 1 END, \
                            CASE WHEN s = 1 THEN 0 ELSE 10000000 - (s - 2) END, 0, 0, \
                            10000000 - greatest(s - 1, 0), 0, 0 \
                     FROM generate_series($3::bigint, $4::bigint) s, \
                          generate_series(0::bigint, $5::bigint - 1) t",
                    &[&lo, &step, &(c * chunk + 1), &((c + 1) * chunk), &HISTORY_TENANTS],
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        b.admin
            .batch_execute("VACUUM ANALYZE journal_entries, accounts")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let loaded = b.clock.monotonic().saturating_duration_since(t0);
        let row = b
            .admin
            .query_one(
                "SELECT (SELECT count(*) FROM journal_entries), \
                        (SELECT count(*) FROM pg_inherits WHERE inhparent = 'journal_entries'::regclass), \
                        (SELECT count(DISTINCT tableoid) FROM journal_entries), \
                        pg_size_pretty(coalesce((SELECT sum(pg_total_relation_size(inhrelid)) \
                                                 FROM pg_inherits \
                                                 WHERE inhparent = 'journal_entries'::regclass), \
                                                pg_total_relation_size('journal_entries')))",
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (entries, partitions, used, size): (i64, i64, i64, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        println!(
            "credits-postgres/history: {entries} journal entries of {HISTORY_TENANTS} tenants from {first} to now in {used} monthly partitions ({partitions} with the default and the months ahead), {size}, loaded and vacuumed in {:.0} s",
            loaded.as_secs_f64()
        );
        // The plan of the store's statement once generic (as a pooled connection runs it).
        let probe_at = lo + (hi - lo) / 3;
        let plan: Vec<String> = b
            .admin
            .simple_query(&format!(
                "SET plan_cache_mode = force_generic_plan; \
                 PREPARE balance_at_probe (text, bigint) AS \
                 SELECT j.after_available, j.after_held, j.after_overdrawn \
                 FROM accounts a LEFT JOIN LATERAL ( \
                   SELECT after_available, after_held, after_overdrawn FROM journal_entries \
                   WHERE tenant = a.tenant AND at <= $2 ORDER BY seq DESC LIMIT 1) j ON true \
                 WHERE a.tenant = $1; \
                 EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) \
                   EXECUTE balance_at_probe('h7', {probe_at})"
            ))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .collect();
        println!(
            "credits-postgres/history: EXPLAIN ANALYZE of balance_at 8 months into the history (generic plan):"
        );
        for line in &plan {
            println!("    {line}");
        }
        for tasks in [1, CONNECTIONS] {
            let store = store.clone();
            let r = b
                .closed(tasks, move |_, _| {
                    let store = store.clone();
                    let mut rng = rand::rng();
                    let t = TenantId::new(format!("h{}", rng.random_range(0..HISTORY_TENANTS)))
                        .unwrap_or_else(|e| panic!("{e}"));
                    let at = Timestamp::from_unix_millis(
                        u64::try_from(rng.random_range(lo..hi)).unwrap_or(0),
                    );
                    async move {
                        let balance = store
                            .balance_at(&t, at)
                            .await
                            .unwrap_or_else(|e| panic!("{e}"));
                        assert!(balance.available.units() > 0);
                    }
                })
                .await;
            r.print(&format!("balance_at/{tasks}-task"));
        }
        store.pool().close();
        if std::env::var("BENCH_KEEP_HISTORY").as_deref() != Ok("1") {
            b.admin
                .batch_execute(&format!("DROP SCHEMA {} CASCADE", b.schema))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
