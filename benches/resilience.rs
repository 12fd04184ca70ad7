//! Resilience primitives side by side with the crates users would pick instead:
//! `failsafe` and `recloser` (circuit breakers) and `governor` (GCRA rate limiter).
//!
//! `cargo bench --bench resilience -- --warm-up-time 1 --measurement-time 3`
//!
//! Two-thread groups report the time per operation *per thread*: both threads run the
//! same number of operations at once and the wall time is divided by that number.
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::future::Future;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::pin::pin;
use std::sync::Barrier;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use failsafe::CircuitBreaker as _;
use governor::clock::FakeRelativeClock;
use metered_suite::clock::{Clock, ManualClock, SystemClock, Timestamp};
use metered_suite::resilience::{
    Backoff, BreakerConfig, CircuitBreaker, Jitter, KeyedRateLimiter, OpenWait, QuantaClock, Quota,
    RateLimiter, Retry, RetryDecision, TokioSleeper, timeout,
};

/// Runs `op` `iters` times on each of two threads at once; returns the wall time.
fn two_threads<T: Sync>(shared: &T, iters: u64, op: impl Fn(&T) + Sync) -> Duration {
    let clock = SystemClock::new();
    let barrier = Barrier::new(2);
    let (a, b) = std::thread::scope(|s| {
        let run = || {
            barrier.wait();
            let start = clock.monotonic();
            for _ in 0..iters {
                op(shared);
            }
            clock.monotonic().saturating_duration_since(start)
        };
        let t = s.spawn(run);
        let mine = run();
        (mine, t.join().unwrap())
    });
    a.max(b)
}

fn our_breaker<C: Clock>(clock: C) -> CircuitBreaker<C> {
    let config = BreakerConfig::builder()
        .name("bench")
        .count_window(100)
        .minimum_calls(100)
        .failure_rate_threshold(50)
        .open_wait(OpenWait::Fixed(Duration::from_secs(3_600)))
        .build()
        .unwrap();
    CircuitBreaker::with_clock(config, clock)
}

fn recloser() -> recloser::Recloser {
    recloser::Recloser::custom()
        .error_rate(0.5)
        .closed_len(100)
        .half_open_len(10)
        .open_wait(Duration::from_secs(3_600))
        .build()
}

fn breaker_closed(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker_closed_permit_record");
    let ours = our_breaker(SystemClock::new());
    g.bench_function("resilience", |b| {
        b.iter(|| black_box(&ours).try_acquire().unwrap().record_success());
    });
    let metered = CircuitBreaker::with_clock(
        BreakerConfig::builder()
            .count_window(100)
            .minimum_calls(100)
            .metrics(true)
            .build()
            .unwrap(),
        SystemClock::new(),
    );
    g.bench_function("resilience_metrics_no_recorder", |b| {
        b.iter(|| black_box(&metered).try_acquire().unwrap().record_success());
    });
    let slow = CircuitBreaker::with_clock(
        BreakerConfig::builder()
            .count_window(100)
            .minimum_calls(100)
            .slow_calls(Duration::from_secs(1), 100)
            .build()
            .unwrap(),
        SystemClock::new(),
    );
    g.bench_function("resilience_slow_call_timing", |b| {
        b.iter(|| black_box(&slow).try_acquire().unwrap().record_success());
    });
    let timed = CircuitBreaker::with_clock(
        BreakerConfig::builder()
            .time_window_secs(60)
            .build()
            .unwrap(),
        SystemClock::new(),
    );
    g.bench_function("resilience_time_window", |b| {
        b.iter(|| black_box(&timed).try_acquire().unwrap().record_success());
    });
    let fs = failsafe::Config::new().build();
    g.bench_function("failsafe", |b| {
        b.iter(|| {
            let _ = black_box(&fs).call(|| Ok::<(), ()>(()));
        });
    });
    let rc = recloser();
    g.bench_function("recloser", |b| {
        b.iter(|| {
            let _ = black_box(&rc).call(|| Ok::<(), ()>(()));
        });
    });
    g.finish();

    let mut g = c.benchmark_group("breaker_closed_permit_record_2_threads");
    g.bench_function("resilience", |b| {
        b.iter_custom(|iters| {
            two_threads(&ours, iters, |br| {
                br.try_acquire().unwrap().record_success()
            })
        });
    });
    g.bench_function("failsafe", |b| {
        b.iter_custom(|iters| {
            two_threads(&fs, iters, |br| {
                let _ = br.call(|| Ok::<(), ()>(()));
            })
        });
    });
    g.bench_function("recloser", |b| {
        b.iter_custom(|iters| {
            two_threads(&rc, iters, |br| {
                let _ = br.call(|| Ok::<(), ()>(()));
            })
        });
    });
    g.finish();
}

fn breaker_open(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker_open_reject");
    let ours = our_breaker(SystemClock::new());
    ours.open();
    g.bench_function("resilience", |b| {
        b.iter(|| black_box(&ours).try_acquire().is_err());
    });
    let quanta = our_breaker(QuantaClock::new());
    quanta.open();
    g.bench_function("resilience_quanta_clock", |b| {
        b.iter(|| black_box(&quanta).try_acquire().is_err());
    });
    let manual = our_breaker(ManualClock::new(Timestamp::EPOCH));
    manual.open();
    g.bench_function("resilience_manual_clock", |b| {
        b.iter(|| black_box(&manual).try_acquire().is_err());
    });
    // A one-hour open wait, so the breaker stays open for the whole measurement.
    let fs = failsafe::Config::new()
        .failure_policy(failsafe::failure_policy::consecutive_failures(
            3,
            failsafe::backoff::constant(Duration::from_secs(3_600)),
        ))
        .build();
    while fs.is_call_permitted() {
        fs.on_error();
    }
    g.bench_function("failsafe", |b| {
        b.iter(|| black_box(&fs).call(|| Ok::<(), ()>(())).is_err());
    });
    let rc = recloser();
    for _ in 0..200 {
        let _ = rc.call(|| Err::<(), ()>(()));
    }
    assert!(matches!(
        rc.call(|| Ok::<(), ()>(())),
        Err(recloser::Error::Rejected)
    ));
    g.bench_function("recloser", |b| {
        b.iter(|| black_box(&rc).call(|| Ok::<(), ()>(())).is_err());
    });
    g.finish();

    let mut g = c.benchmark_group("breaker_open_reject_2_threads");
    g.bench_function("resilience", |b| {
        b.iter_custom(|iters| two_threads(&ours, iters, |br| assert!(br.try_acquire().is_err())));
    });
    g.bench_function("failsafe", |b| {
        b.iter_custom(|iters| {
            two_threads(&fs, iters, |br| {
                assert!(br.call(|| Ok::<(), ()>(())).is_err())
            })
        });
    });
    g.finish();
}

const FAST: u32 = 1_000_000_000; // a quota that never runs out: measures the granting path

fn limiter(c: &mut Criterion) {
    let mut g = c.benchmark_group("limiter_try_acquire");
    let ours = RateLimiter::with_clock(Quota::per_second(FAST).unwrap(), SystemClock::new());
    g.bench_function("resilience", |b| {
        b.iter(|| black_box(&ours).try_acquire(1).is_ok())
    });
    let gov =
        governor::RateLimiter::direct(governor::Quota::per_second(NonZeroU32::new(FAST).unwrap()));
    g.bench_function("governor", |b| b.iter(|| black_box(&gov).check().is_ok()));
    let ours_quanta = RateLimiter::with_clock(Quota::per_second(FAST).unwrap(), QuantaClock::new());
    g.bench_function("resilience_quanta_clock", |b| {
        b.iter(|| black_box(&ours_quanta).try_acquire(1).is_ok());
    });
    let ours_manual = RateLimiter::with_clock(
        Quota::per_second(FAST).unwrap(),
        ManualClock::new(Timestamp::EPOCH),
    );
    g.bench_function("resilience_manual_clock", |b| {
        b.iter(|| black_box(&ours_manual).try_acquire(1).is_ok());
    });
    let gov_fake = governor::RateLimiter::direct_with_clock(
        governor::Quota::per_second(NonZeroU32::new(FAST).unwrap()),
        FakeRelativeClock::default(),
    );
    g.bench_function("governor_fake_clock", |b| {
        b.iter(|| black_box(&gov_fake).check().is_ok())
    });
    // Rejection: an exhausted limiter.
    let ours_empty = RateLimiter::with_clock(
        Quota::per_minute(1).unwrap(),
        ManualClock::new(Timestamp::EPOCH),
    );
    let _ = ours_empty.try_acquire(1);
    g.bench_function("resilience_reject_manual_clock", |b| {
        b.iter(|| black_box(&ours_empty).try_acquire(1).is_err());
    });
    let gov_empty = governor::RateLimiter::direct_with_clock(
        governor::Quota::per_minute(NonZeroU32::new(1).unwrap()),
        FakeRelativeClock::default(),
    );
    let _ = gov_empty.check();
    g.bench_function("governor_reject_fake_clock", |b| {
        b.iter(|| black_box(&gov_empty).check().is_err());
    });
    g.finish();

    let mut g = c.benchmark_group("limiter_try_acquire_2_threads");
    g.bench_function("resilience", |b| {
        b.iter_custom(|iters| two_threads(&ours, iters, |l| assert!(l.try_acquire(1).is_ok())));
    });
    g.bench_function("resilience_quanta_clock", |b| {
        b.iter_custom(|iters| {
            two_threads(&ours_quanta, iters, |l| assert!(l.try_acquire(1).is_ok()))
        });
    });
    g.bench_function("governor", |b| {
        b.iter_custom(|iters| two_threads(&gov, iters, |l| assert!(l.check().is_ok())));
    });
    g.finish();

    let mut g = c.benchmark_group("keyed_limiter_try_acquire");
    for keys in [1u64, 1_000] {
        let ours = KeyedRateLimiter::<u64, _>::with_clock(
            Quota::per_second(FAST).unwrap(),
            100_000,
            SystemClock::new(),
        )
        .unwrap();
        let gov = governor::RateLimiter::<u64, _, _>::keyed(governor::Quota::per_second(
            NonZeroU32::new(FAST).unwrap(),
        ));
        let mut k = 0u64;
        g.bench_with_input(BenchmarkId::new("resilience", keys), &keys, |b, &keys| {
            b.iter(|| {
                k = (k + 1) % keys;
                black_box(&ours).try_acquire(&k, 1).is_ok()
            });
        });
        let ours_quanta = KeyedRateLimiter::<u64, _>::with_clock(
            Quota::per_second(FAST).unwrap(),
            100_000,
            QuantaClock::new(),
        )
        .unwrap();
        g.bench_with_input(
            BenchmarkId::new("resilience_quanta_clock", keys),
            &keys,
            |b, &keys| {
                b.iter(|| {
                    k = (k + 1) % keys;
                    black_box(&ours_quanta).try_acquire(&k, 1).is_ok()
                });
            },
        );
        g.bench_with_input(BenchmarkId::new("governor", keys), &keys, |b, &keys| {
            b.iter(|| {
                k = (k + 1) % keys;
                black_box(&gov).check_key(&k).is_ok()
            });
        });
    }
    g.finish();
}

/// Polls a future once with a no-op waker; the benches' futures are ready at once.
fn poll_once<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("bench future was not ready"),
    }
}

fn happy_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("happy_path");
    let clock = SystemClock::new();
    let breaker = our_breaker(clock);
    let limiter = RateLimiter::with_clock(Quota::per_second(FAST).unwrap(), clock);
    let policy = Backoff::exponential(Duration::from_millis(10))
        .max_attempts(3)
        .build()
        .unwrap();
    let retry = Retry::new(policy, TokioSleeper, clock).with_seed(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    g.bench_function("timeout+breaker+limiter+retry", |b| {
        b.iter(|| {
            let out: Result<u32, &str> = poll_once(retry.run(
                |_| async {
                    limiter.try_acquire(1).map_err(|_| "limited")?;
                    let permit = breaker.try_acquire().map_err(|_| "open")?;
                    let out = timeout(&TokioSleeper, Duration::from_secs(1), async {
                        Ok::<u32, &str>(black_box(7))
                    })
                    .await
                    .map_err(|_| "timeout")?;
                    permit.record_success();
                    out
                },
                |_| RetryDecision::Retry,
            ));
            out.unwrap()
        });
    });
    g.finish();

    let mut g = c.benchmark_group("backoff_delay");
    let policy = Backoff::exponential(Duration::from_millis(10))
        .jitter(Jitter::Full)
        .build()
        .unwrap();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3);
    g.bench_function("full_jitter", |b| {
        b.iter(|| policy.delay(black_box(5), None, &mut rng))
    });
    g.finish();
}

/// Per-decision latency of the Redis-backed limiter (one `EVALSHA` round trip to the local
/// Redis at 127.0.0.1:6379) beside the local keyed limiter, in the same run. Criterion
/// reports the mean; each decision is also timed on its own into a histogram, whose p50 and
/// p99 are printed at the end (the target: at most 0.3 ms p99 added per request).
/// Skipped, with a message, when no Redis answers.
#[allow(clippy::print_stderr)] // the percentiles criterion does not report
fn redis_limiter(c: &mut Criterion) {
    use std::sync::Mutex;

    if std::net::TcpStream::connect_timeout(
        &"127.0.0.1:6379".parse().unwrap(),
        Duration::from_secs(1),
    )
    .is_err()
    {
        eprintln!("redis_limiter_decision: skipped (no Redis at 127.0.0.1:6379)");
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Every decision is a grant: the bench measures the path, not the rejections.
    let quota = Quota::per_second(1_000_000_000).unwrap();
    let clock = SystemClock::new();
    let redis = rt.block_on(async {
        resilience::RedisRateLimiter::builder("redis://127.0.0.1:6379", quota)
            .prefix(format!("bench:{}:", std::process::id()))
            .build()
            .unwrap()
    });
    let local =
        KeyedRateLimiter::<String, _>::with_clock(quota, 100_000, SystemClock::new()).unwrap();
    let key = "tenant".to_owned();
    let timed = |name: &str, hist: &Mutex<hdrhistogram::Histogram<u64>>| {
        let h = hist.lock().unwrap();
        eprintln!(
            "redis_limiter_decision/{name}: p50 {:.1} us, p99 {:.1} us, max {:.1} us ({} decisions)",
            h.value_at_quantile(0.5) as f64 / 1e3,
            h.value_at_quantile(0.99) as f64 / 1e3,
            h.max() as f64 / 1e3,
            h.len()
        );
    };
    let new_hist = || Mutex::new(hdrhistogram::Histogram::<u64>::new(3).unwrap());
    let mut g = c.benchmark_group("redis_limiter_decision");
    let local_hist = new_hist();
    g.bench_function("local_keyed", |b| {
        b.iter_custom(|iters| {
            let mut h = local_hist.lock().unwrap();
            let start = clock.monotonic();
            for _ in 0..iters {
                let t = clock.monotonic();
                assert!(black_box(&local).try_acquire(&key, 1).is_ok());
                let _ = h.record(duration_ns(clock.monotonic().saturating_duration_since(t)));
            }
            clock.monotonic().saturating_duration_since(start)
        });
    });
    let redis_hist = new_hist();
    g.bench_function("redis", |b| {
        b.iter_custom(|iters| {
            let (elapsed, h) = rt.block_on(async {
                let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
                let start = clock.monotonic();
                for _ in 0..iters {
                    let t = clock.monotonic();
                    let d = redis.decide("tenant", 1).await;
                    assert_eq!(d.path, resilience::DecisionPath::Redis);
                    assert!(d.result.is_ok());
                    let _ = h.record(duration_ns(clock.monotonic().saturating_duration_since(t)));
                }
                (clock.monotonic().saturating_duration_since(start), h)
            });
            let _ = redis_hist.lock().unwrap().add(&h);
            elapsed
        });
    });
    g.finish();
    timed("local_keyed", &local_hist);
    timed("redis", &redis_hist);
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

criterion_group!(
    benches,
    breaker_closed,
    breaker_open,
    limiter,
    happy_path,
    redis_limiter
);
criterion_main!(benches);
