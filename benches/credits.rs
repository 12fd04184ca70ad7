//! credits-core on the in-memory store, with the peers `doubleentry` 0.8 (in-memory
//! `Journal`) and `rustlavel-ledger` 0.9 measured on the same workload in the same run.
//!
//! `cargo bench --bench credits -- --warm-up-time 1 --measurement-time 3`
//!
//! Workloads (10,000 tenants, each funded so that no operation fails for lack of credits):
//!
//! * `consume/1-thread/uniform`: one consume of 1 unit per operation, tenant drawn uniformly;
//!   `…/audited`: the same with the audit on (sealed under the tenant's lock, integrated by
//!   the default `AuditWriter` into a memory sink on a second thread, timed until every
//!   entry is in the Merkle log), against `doubleentry`, whose `Journal` keeps its own
//!   Merkle log; `…/audited/thresholds+rollover`: the same with every tenant's four balance
//!   thresholds checked on each entry and a rollover policy set (the grant lifecycle's
//!   per-change cost; no threshold is crossed and no lot expires);
//! * `reserve+commit/1-thread`: reserve 10 then commit 7 of it (one element = one pair);
//! * `consume/zipf/{1,2}-threads`: consumes over Zipf(s = 1.1) skewed tenants, the same total
//!   work done by one thread or split over two (time per operation: two threads should be
//!   at most as slow as one);
//! * `sweep/1M-expired-holds`: `Ledger::recover` over 1,000,000 expired holds (100 per
//!   tenant);
//! * `consume/latency`: one consume at a time timed individually into an HDR histogram
//!   (timer overhead included); p50/p99/p99.9 are printed once, not by criterion.
//!
//! Requests (tenant, idempotency key, command) are built before the timed loop, in chunks,
//! for us and for the peers alike, so the figures are the ledgers' cost, not `format!`'s.
#![allow(clippy::print_stdout)] // the latency percentiles are printed
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::executor::block_on;
use metered_suite::audit::{
    AuditWriter, HmacKey, Keyring, MaskingPolicy, MemoryAuditQueue, MemorySink, WriterConfig,
};
use metered_suite::clock::{Clock, ManualClock, SystemClock, Timestamp};
use metered_suite::credits::audit::{LedgerAudit, MemoryAudit};
use metered_suite::credits::{
    Amount, BalanceThresholds, Command, GrantOptions, IdempotencyKey, Ledger, MemoryLedgerStore,
    MemoryLedgerStoreBuilder, Request, RolloverPolicy, TenantId, TenantSettings,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use std::sync::Arc;

const TENANTS: usize = 10_000;
const CHUNK: u64 = 100_000;
const FUNDS: u64 = 1_000_000_000_000;

fn timer() -> SystemClock {
    SystemClock::new()
}

struct Fixture {
    ledger: Ledger<MemoryLedgerStore>,
    tenants: Vec<TenantId>,
    clock: ManualClock,
}

fn fixture(tenants: usize) -> Fixture {
    fixture_with(tenants, MemoryLedgerStore::builder())
}

fn fixture_with(tenants: usize, store: MemoryLedgerStoreBuilder) -> Fixture {
    fixture_with_settings(tenants, store, TenantSettings::default())
}

/// Tenant settings with the grant-lifecycle policies on: four balance thresholds (checked
/// on every journal entry; the funding keeps the balance above them, so none is crossed)
/// and a rollover policy (read when a lot expires; the funding never does).
fn with_policies() -> TenantSettings {
    let thresholds = [1_000, 100_000, 10_000_000, 1_000_000_000].map(Amount::new);
    TenantSettings {
        rollover: Some(
            RolloverPolicy::new(50, Some(Amount::new(1_000)), Duration::from_secs(86_400)).unwrap(),
        ),
        thresholds: BalanceThresholds::new(thresholds).unwrap(),
        ..TenantSettings::default()
    }
}

fn fixture_with_settings(
    tenants: usize,
    store: MemoryLedgerStoreBuilder,
    settings: TenantSettings,
) -> Fixture {
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_767_225_600_000));
    // Default settings: idempotency keys are kept for 24 hours, so nothing is evicted here.
    let store = store.build();
    let ledger = Ledger::new(store, clock.clone());
    let tenants: Vec<TenantId> = (0..tenants)
        .map(|i| TenantId::new(format!("tenant-{i}")).unwrap())
        .collect();
    block_on(async {
        for t in &tenants {
            ledger.create_tenant(t, settings).await.unwrap();
            ledger
                .grant(
                    t,
                    IdempotencyKey::new("funding").unwrap(),
                    Amount::new(FUNDS),
                    GrantOptions::default(),
                )
                .await
                .unwrap();
        }
    });
    Fixture {
        ledger,
        tenants,
        clock,
    }
}

fn uniform(rng: &mut StdRng) -> usize {
    rng.random_range(0..TENANTS)
}

fn zipf_sampler() -> impl FnMut(&mut StdRng) -> usize {
    let zipf = Zipf::new(TENANTS as f64, 1.1).unwrap();
    move |rng| {
        #[allow(clippy::cast_possible_truncation)] // 1 ≤ sample ≤ TENANTS
        let i = zipf.sample(rng) as usize;
        i.saturating_sub(1).min(TENANTS - 1)
    }
}

/// `n` consume requests with fresh keys, tenants from `pick`.
fn consumes(
    f: &Fixture,
    base: u64,
    n: u64,
    rng: &mut StdRng,
    pick: &mut dyn FnMut(&mut StdRng) -> usize,
) -> Vec<Request> {
    (base..base + n)
        .map(|i| {
            Request::new(
                f.tenants[pick(rng)].clone(),
                IdempotencyKey::new(format!("c{i}")).unwrap(),
                Command::Consume {
                    amount: Amount::new(1),
                },
            )
        })
        .collect()
}

/// Runs `iters` consumes in chunks on a fresh fixture; returns the time spent applying.
/// Gives every tenant some history first (`ops` consumes each, untimed), so the timed
/// operations meet grown tables and journals as in a ledger that has been running.
fn warm_up(f: &Fixture, ops: u64) {
    let mut rng = StdRng::seed_from_u64(3);
    let mut next = 0;
    let mut round_robin = |_: &mut StdRng| {
        next = (next + 1) % TENANTS;
        next
    };
    let reqs = consumes(
        f,
        u64::MAX / 2,
        ops * TENANTS as u64,
        &mut rng,
        &mut round_robin,
    );
    block_on(async {
        for r in &reqs {
            f.ledger.apply(r).await.unwrap();
        }
    });
}

fn run_consumes(iters: u64, warm_ops: u64, pick: &mut dyn FnMut(&mut StdRng) -> usize) -> Duration {
    let f = fixture(TENANTS);
    warm_up(&f, warm_ops);
    run_consumes_on(&f, 0, iters, &mut StdRng::seed_from_u64(7), pick)
}

/// Runs `iters` consumes on `f` in chunks, keys numbered from `base`; returns the time
/// spent applying.
fn run_consumes_on(
    f: &Fixture,
    base: u64,
    iters: u64,
    rng: &mut StdRng,
    pick: &mut dyn FnMut(&mut StdRng) -> usize,
) -> Duration {
    let clock = timer();
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = CHUNK.min(iters - done);
        let reqs = consumes(f, base + done, n, rng, pick);
        let start = clock.monotonic();
        block_on(async {
            for r in &reqs {
                black_box(f.ledger.apply(r).await.unwrap());
            }
        });
        total += clock.monotonic().saturating_duration_since(start);
        done += n;
    }
    total
}

/// Consumes with the audit on, as the service runs it: the memory store seals every entry
/// under the tenant's lock and queues it; the default `AuditWriter` integrates the queue
/// into a `MemorySink` on the runtime's worker thread. The timed region ends once every
/// entry of the chunk is in the Merkle log (a `flush`), so it is end-to-end audited work.
fn run_consumes_audited(iters: u64) -> Duration {
    run_consumes_audited_with(iters, TenantSettings::default())
}

fn run_consumes_audited_with(iters: u64, settings: TenantSettings) -> Duration {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let queue = Arc::new(MemoryAuditQueue::new(1_000_000));
    let writer = rt.block_on(async {
        AuditWriter::open_with_queue(
            Arc::new(MemorySink::new()),
            queue.clone(),
            WriterConfig::builder("bench.invalid/audit")
                .build()
                .unwrap(),
            Arc::new(ManualClock::new(Timestamp::from_unix_millis(0))),
            None,
        )
        .await
        .unwrap()
    });
    let keyring = Arc::new(Keyring::new(HmacKey::new(1, [7; 32]).unwrap()));
    let audit = MemoryAudit::new(LedgerAudit::new(keyring, MaskingPolicy::standard()), queue);
    let f = fixture_with_settings(TENANTS, MemoryLedgerStore::builder().audit(audit), settings);
    rt.block_on(writer.flush()).unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let clock = timer();
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = CHUNK.min(iters - done);
        let reqs = consumes(&f, done, n, &mut rng, &mut uniform);
        let start = clock.monotonic();
        block_on(async {
            for r in &reqs {
                black_box(f.ledger.apply(r).await.unwrap());
            }
        });
        rt.block_on(writer.flush()).unwrap();
        total += clock.monotonic().saturating_duration_since(start);
        done += n;
    }
    total
}

fn run_consumes_threads(iters: u64, threads: u64) -> Duration {
    let f = fixture(TENANTS);
    let per_thread = iters / threads + 1;
    let mut sampler = zipf_sampler();
    let mut rng = StdRng::seed_from_u64(11);
    let work: Vec<Vec<Request>> = (0..threads)
        .map(|t| consumes(&f, t * per_thread, per_thread, &mut rng, &mut sampler))
        .collect();
    let clock = timer();
    let start = clock.monotonic();
    std::thread::scope(|s| {
        for reqs in &work {
            let ledger = f.ledger.clone();
            s.spawn(move || {
                block_on(async {
                    for r in reqs {
                        black_box(ledger.apply(r).await.unwrap());
                    }
                });
            });
        }
    });
    clock.monotonic().saturating_duration_since(start)
}

fn run_reserve_commit(iters: u64) -> Duration {
    let f = fixture(TENANTS);
    let mut rng = StdRng::seed_from_u64(9);
    let clock = timer();
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = CHUNK.min(iters - done);
        let pairs: Vec<(TenantId, IdempotencyKey, IdempotencyKey)> = (done..done + n)
            .map(|i| {
                (
                    f.tenants[uniform(&mut rng)].clone(),
                    IdempotencyKey::new(format!("r{i}")).unwrap(),
                    IdempotencyKey::new(format!("m{i}")).unwrap(),
                )
            })
            .collect();
        let start = clock.monotonic();
        block_on(async {
            for (t, r, m) in pairs {
                let hold = f
                    .ledger
                    .reserve(&t, r, Amount::new(10), Duration::from_secs(60))
                    .await
                    .unwrap();
                let hold = hold.hold;
                black_box(f.ledger.commit(&t, m, hold, Amount::new(7)).await.unwrap());
            }
        });
        total += clock.monotonic().saturating_duration_since(start);
        done += n;
    }
    total
}

/// Two-phase commit over the ledger's holds: begin, two branches on two tenants, commit
/// (which prepares both, logs the decision, then commits both), in memory on one thread.
fn run_two_phase(iters: u64) -> Duration {
    use metered_suite::credits::tx::{HoldBranch, LedgerHolds, MemoryTxLog, TransactionManager};
    let f = fixture(TENANTS);
    let ledger: Ledger = Ledger::from_shared(
        std::sync::Arc::clone(f.ledger.store())
            as std::sync::Arc<dyn metered_suite::credits::LedgerStore>,
        std::sync::Arc::new(f.clock.clone()),
    );
    let tm = TransactionManager::builder(
        std::sync::Arc::new(MemoryTxLog::new()),
        std::sync::Arc::new(f.clock.clone()),
    )
    .participant(std::sync::Arc::new(LedgerHolds::new("credits", ledger)))
    .build();
    let mut rng = StdRng::seed_from_u64(11);
    let clock = timer();
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = CHUNK.min(iters - done);
        let payloads: Vec<(String, String)> = (0..n)
            .map(|_| {
                let branch = |t: &TenantId| {
                    HoldBranch::new(t.clone(), Amount::new(10), Amount::new(7))
                        .unwrap()
                        .payload()
                };
                let a = uniform(&mut rng);
                let b = (a + 1 + uniform(&mut rng) % (TENANTS - 1)) % TENANTS;
                (branch(&f.tenants[a]), branch(&f.tenants[b]))
            })
            .collect();
        let start = clock.monotonic();
        block_on(async {
            for (a, b) in payloads {
                let tx = tm.begin(Duration::from_secs(30)).await.unwrap();
                tm.enlist(tx, "credits", a).await.unwrap();
                tm.enlist(tx, "credits", b).await.unwrap();
                let _committed = black_box(tm.commit(tx).await.unwrap());
            }
        });
        total += clock.monotonic().saturating_duration_since(start);
        done += n;
    }
    total
}

fn ours(c: &mut Criterion) {
    let mut g = c.benchmark_group("credits");
    g.throughput(Throughput::Elements(1));
    g.bench_function(
        BenchmarkId::new("consume/1-thread/uniform", "credits-core"),
        |b| b.iter_custom(|iters| run_consumes(iters, 0, &mut uniform)),
    );
    g.bench_function(
        BenchmarkId::new("consume/1-thread/uniform/audited", "credits-core"),
        |b| b.iter_custom(run_consumes_audited),
    );
    g.bench_function(
        BenchmarkId::new(
            "consume/1-thread/uniform/audited/thresholds+rollover",
            "credits-core",
        ),
        |b| b.iter_custom(|iters| run_consumes_audited_with(iters, with_policies())),
    );
    g.finish();
    // The same on one store warmed once with 32 operations per tenant, which keeps growing
    // as the samples run (warming a store per sample left criterion timing a few dozen
    // cache-cold operations after each warm-up).
    let warm = fixture(TENANTS);
    warm_up(&warm, 32);
    let mut next_key = 0;
    let mut rng = StdRng::seed_from_u64(7);
    let mut g = c.benchmark_group("credits");
    g.throughput(Throughput::Elements(1));
    g.bench_function(
        BenchmarkId::new("consume/1-thread/uniform/warm", "credits-core"),
        |b| {
            b.iter_custom(|iters| {
                next_key += iters;
                run_consumes_on(&warm, next_key - iters, iters, &mut rng, &mut uniform)
            })
        },
    );
    g.finish();
    drop(warm);
    let mut g = c.benchmark_group("credits");
    g.throughput(Throughput::Elements(1));
    g.bench_function(
        BenchmarkId::new("reserve+commit/1-thread", "credits-core"),
        |b| b.iter_custom(run_reserve_commit),
    );
    g.bench_function(
        BenchmarkId::new("two-phase/2-participants/1-thread", "credits-core"),
        |b| b.iter_custom(run_two_phase),
    );
    g.bench_function(
        BenchmarkId::new("consume/zipf/1-thread", "credits-core"),
        |b| b.iter_custom(|iters| run_consumes_threads(iters, 1)),
    );
    g.bench_function(
        BenchmarkId::new("consume/zipf/2-threads", "credits-core"),
        |b| b.iter_custom(|iters| run_consumes_threads(iters, 2)),
    );
    g.finish();
}

fn sweep(c: &mut Criterion) {
    let mut g = c.benchmark_group("credits-sweep");
    g.sample_size(10);
    g.throughput(Throughput::Elements(1_000_000));
    g.bench_function(
        BenchmarkId::new("sweep/1M-expired-holds", "credits-core"),
        |b| {
            b.iter_custom(|iters| {
                let clock = timer();
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let f = fixture(TENANTS);
                    block_on(async {
                        for (i, t) in f.tenants.iter().enumerate() {
                            for h in 0..100 {
                                let key = IdempotencyKey::new(format!("h{i}-{h}")).unwrap();
                                f.ledger
                                    .reserve(t, key, Amount::new(5), Duration::from_secs(30))
                                    .await
                                    .unwrap();
                            }
                        }
                    });
                    f.clock.advance(Duration::from_secs(31));
                    let start = clock.monotonic();
                    let report = block_on(f.ledger.recover()).unwrap();
                    total += clock.monotonic().saturating_duration_since(start);
                    assert_eq!(report.holds_expired, 1_000_000);
                }
                total
            })
        },
    );
    g.finish();
}

fn latency(_c: &mut Criterion) {
    let f = fixture(TENANTS);
    let mut rng = StdRng::seed_from_u64(5);
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).unwrap();
    let clock = timer();
    for round in 0..10 {
        let reqs = consumes(&f, round * CHUNK, CHUNK, &mut rng, &mut uniform);
        block_on(async {
            for r in &reqs {
                let start = clock.monotonic();
                black_box(f.ledger.apply(r).await.unwrap());
                let ns = clock
                    .monotonic()
                    .saturating_duration_since(start)
                    .as_nanos();
                hist.saturating_record(u64::try_from(ns).unwrap_or(u64::MAX).max(1));
            }
        });
    }
    let mut empty = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).unwrap();
    for _ in 0..100_000 {
        let start = clock.monotonic();
        let ns = clock
            .monotonic()
            .saturating_duration_since(start)
            .as_nanos();
        empty.saturating_record(u64::try_from(ns).unwrap_or(u64::MAX).max(1));
    }
    println!(
        "credits/consume/latency (1,000,000 single consumes, 10,000 tenants): p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns; timer overhead p50 {} ns",
        hist.value_at_quantile(0.50),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max(),
        empty.value_at_quantile(0.50),
    );
}

mod peers {
    //! The same workloads on the peers.
    use super::*;
    use doubleentry::{
        AccountKind, BalanceLimit, Entry, IdempotencyKey as DeKey, Journal, LedgerId, PostAmount,
        currency::EUR, date,
    };

    type DeAmount = doubleentry::Amount;

    pub(super) struct De {
        books: Journal,
        wallets: Vec<String>,
    }

    pub(super) fn doubleentry_fixture() -> De {
        let day = date!("2026-01-01");
        let mut books =
            Journal::new(LedgerId::new("bench.example/credits").unwrap()).as_actor("bench");
        books.declare_currency(EUR, 2, day).unwrap();
        books.define_months(2026, 1..=12).unwrap();
        books.open("Assets:Bank", AccountKind::Asset, day).unwrap();
        books
            .open("Income:Usage", AccountKind::Income, day)
            .unwrap();
        books
            .open("Liabilities:Holds", AccountKind::Liability, day)
            .unwrap();
        let wallets: Vec<String> = (0..TENANTS)
            .map(|i| format!("Liabilities:Wallets:t{i}"))
            .collect();
        for (i, w) in wallets.iter().enumerate() {
            books.open(w, AccountKind::Liability, day).unwrap();
            books
                .set_limit(w.as_str(), BalanceLimit::NoDebitBalance, day)
                .unwrap();
            books
                .record(
                    Entry::new(format!("fund-{i}").as_str(), date!("2026-01-02"))
                        .debit(
                            "Assets:Bank",
                            DeAmount::from_minor(i128::from(FUNDS)).unwrap(),
                            EUR,
                        )
                        .credit(
                            w.as_str(),
                            DeAmount::from_minor(i128::from(FUNDS)).unwrap(),
                            EUR,
                        ),
                )
                .unwrap();
        }
        De { books, wallets }
    }

    fn de_consumes(iters: u64) -> Duration {
        let mut de = doubleentry_fixture();
        let mut rng = StdRng::seed_from_u64(7);
        let one = DeAmount::from_minor(1).unwrap();
        let clock = timer();
        let mut total = Duration::ZERO;
        let mut done = 0;
        while done < iters {
            let n = CHUNK.min(iters - done);
            let work: Vec<(usize, DeKey)> = (done..done + n)
                .map(|i| {
                    (
                        uniform(&mut rng),
                        DeKey::try_from(format!("c{i}").as_str()).unwrap(),
                    )
                })
                .collect();
            let start = clock.monotonic();
            for (t, key) in work {
                let e = Entry::new(key, date!("2026-01-03"))
                    .debit(de.wallets[t].as_str(), one, EUR)
                    .credit("Income:Usage", one, EUR);
                black_box(de.books.record(e).unwrap());
            }
            total += clock.monotonic().saturating_duration_since(start);
            done += n;
        }
        total
    }

    fn de_reserve_commit(iters: u64) -> Duration {
        let mut de = doubleentry_fixture();
        let mut rng = StdRng::seed_from_u64(9);
        let ten = DeAmount::from_minor(10).unwrap();
        let seven = DeAmount::from_minor(7).unwrap();
        let clock = timer();
        let mut total = Duration::ZERO;
        let mut done = 0;
        while done < iters {
            let n = CHUNK.min(iters - done);
            let work: Vec<(usize, DeKey, DeKey)> = (done..done + n)
                .map(|i| {
                    (
                        uniform(&mut rng),
                        DeKey::try_from(format!("r{i}").as_str()).unwrap(),
                        DeKey::try_from(format!("m{i}").as_str()).unwrap(),
                    )
                })
                .collect();
            let start = clock.monotonic();
            for (t, r, m) in work {
                let hold = de
                    .books
                    .record(
                        Entry::open_hold(r, date!("2026-01-03"))
                            .expires(date!("2026-01-31"))
                            .debit(de.wallets[t].as_str(), ten, EUR)
                            .credit("Liabilities:Holds", ten, EUR),
                    )
                    .unwrap();
                let post =
                    Entry::post_hold(m, date!("2026-01-03"), hold.id, PostAmount::Partial(seven));
                black_box(de.books.record(post).unwrap());
            }
            total += clock.monotonic().saturating_duration_since(start);
            done += n;
        }
        total
    }

    /// rustlavel-ledger keeps its book in SQL; its lightest backend is SQLite in memory.
    fn rustlavel_fixture(rt: &tokio::runtime::Runtime) -> (rustlavel_ledger::Ledger, Vec<String>) {
        rt.block_on(async {
            let db = rustlavel_db::Database::connect("sqlite://:memory:")
                .await
                .unwrap();
            rustlavel_ledger::create_tables(&rustlavel_db::Schema::new(&db))
                .await
                .unwrap();
            let ledger = rustlavel_ledger::Ledger::new(db, "credits");
            let owners: Vec<String> = (0..TENANTS).map(|i| format!("tenant-{i}")).collect();
            for (i, o) in owners.iter().enumerate() {
                #[allow(clippy::cast_possible_wrap)] // FUNDS < i64::MAX
                ledger
                    .top_up(o, FUNDS as i64, &format!("fund-{i}"), None)
                    .await
                    .unwrap();
            }
            (ledger, owners)
        })
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn rl_consumes(iters: u64) -> Duration {
        let rt = runtime();
        let (ledger, owners) = rustlavel_fixture(&rt);
        let mut rng = StdRng::seed_from_u64(7);
        let refs: Vec<(usize, String)> = (0..iters)
            .map(|i| (uniform(&mut rng), format!("c{i}")))
            .collect();
        let clock = timer();
        let start = clock.monotonic();
        rt.block_on(async {
            for (t, r) in &refs {
                black_box(ledger.consume(&owners[*t], 1, r).await.unwrap());
            }
        });
        clock.monotonic().saturating_duration_since(start)
    }

    fn rl_reserve_commit(iters: u64) -> Duration {
        let rt = runtime();
        let (ledger, owners) = rustlavel_fixture(&rt);
        let mut rng = StdRng::seed_from_u64(9);
        let refs: Vec<(usize, String)> = (0..iters)
            .map(|i| (uniform(&mut rng), format!("r{i}")))
            .collect();
        let clock = timer();
        let start = clock.monotonic();
        rt.block_on(async {
            for (t, r) in &refs {
                // rustlavel captures a whole hold (no partial capture).
                let hold = ledger
                    .hold(&owners[*t], 10, r, Duration::from_secs(60))
                    .await
                    .unwrap();
                black_box(ledger.capture(&hold.id).await.unwrap());
            }
        });
        clock.monotonic().saturating_duration_since(start)
    }

    pub(super) fn bench(c: &mut Criterion) {
        let mut g = c.benchmark_group("credits");
        g.throughput(Throughput::Elements(1));
        g.bench_function(
            BenchmarkId::new("consume/1-thread/uniform", "doubleentry"),
            |b| b.iter_custom(de_consumes),
        );
        g.bench_function(
            BenchmarkId::new("reserve+commit/1-thread", "doubleentry"),
            |b| b.iter_custom(de_reserve_commit),
        );
        g.finish();
        let mut g = c.benchmark_group("credits-sql-peer");
        g.throughput(Throughput::Elements(1));
        g.sample_size(10);
        g.bench_function(
            BenchmarkId::new("consume/1-thread/uniform", "rustlavel-ledger"),
            |b| b.iter_custom(rl_consumes),
        );
        g.bench_function(
            BenchmarkId::new("reserve+commit/1-thread", "rustlavel-ledger"),
            |b| b.iter_custom(rl_reserve_commit),
        );
        g.finish();
    }
}

/// A batch of 8 consumes on one tenant, fresh or with 100,000 resolved holds in its history:
/// what a batch costs must not grow with the tenant's history (it takes a savepoint of the
/// live state, not a copy of the account).
fn history(c: &mut Criterion) {
    const RESOLVED: usize = 100_000;
    let mut g = c.benchmark_group("credits-history");
    g.throughput(Throughput::Elements(1));
    for resolved in [0, RESOLVED] {
        let f = fixture(1);
        let t = f.tenants[0].clone();
        block_on(async {
            for i in 0..resolved {
                let r = f
                    .ledger
                    .reserve(
                        &t,
                        IdempotencyKey::new(format!("h{i}")).unwrap(),
                        Amount::new(1),
                        Duration::from_secs(60),
                    )
                    .await
                    .unwrap();
                f.ledger
                    .cancel(&t, IdempotencyKey::new(format!("x{i}")).unwrap(), r.hold)
                    .await
                    .unwrap();
            }
        });
        let mut next = 0u64;
        g.bench_function(
            BenchmarkId::new("batch-of-8/1-tenant", format!("{resolved}-resolved-holds")),
            |b| {
                b.iter_custom(|iters| {
                    let batches: Vec<Vec<Request>> = (0..iters)
                        .map(|_| {
                            (0..8)
                                .map(|_| {
                                    next += 1;
                                    Request::new(
                                        t.clone(),
                                        IdempotencyKey::new(format!("b{next}")).unwrap(),
                                        Command::Consume {
                                            amount: Amount::new(1),
                                        },
                                    )
                                })
                                .collect()
                        })
                        .collect();
                    let clock = timer();
                    let start = clock.monotonic();
                    block_on(async {
                        for batch in &batches {
                            black_box(f.ledger.batch(batch).await.unwrap());
                        }
                    });
                    clock.monotonic().saturating_duration_since(start)
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, ours, peers::bench, sweep, latency, history);
criterion_main!(benches);
