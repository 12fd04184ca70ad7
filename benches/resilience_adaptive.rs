//! Overhead of the adaptive concurrency limiter per call, next to tower's fixed
//! `ConcurrencyLimit` in the same run.
//!
//! `cargo bench --bench resilience_adaptive -- --warm-up-time 1 --measurement-time 3`
//!
//! "acquire + record" is `try_acquire` followed by dropping the permit (a success: the
//! latency is a sample). The tower rows go through `poll_ready` + `call` + polling the
//! response of a `service_fn` that is ready at once; the `layer` rows do the same through
//! our `AdaptiveLimitLayer`. Two-thread groups report the time per operation *per thread*.
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use metered_suite::clock::{Clock, ManualClock, SystemClock, Timestamp};
use metered_suite::resilience::{
    AdaptiveConfig, AdaptiveLimitLayer, AdaptiveLimiter, Algorithm, Gradient2, QuantaClock,
};
use tower::limit::ConcurrencyLimit;
use tower::{Layer, Service, service_fn};

fn poll_once<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("bench future was not ready"),
    }
}

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

fn limiter<C: Clock>(clock: C) -> AdaptiveLimiter<C> {
    let config = AdaptiveConfig::builder()
        .algorithm(Algorithm::Gradient2(Gradient2::new()))
        .initial_limit(1_000)
        .max_limit(1_000)
        .build()
        .unwrap();
    AdaptiveLimiter::with_clock(config, clock)
}

fn tower_limit() -> impl Service<u64, Response = u64, Error = ()> + Clone {
    ConcurrencyLimit::new(service_fn(|x: u64| async move { Ok::<_, ()>(x) }), 1_000)
}

fn call<S: Service<u64, Response = u64>>(svc: &mut S, x: u64) -> bool {
    let _ = poll_once(std::future::poll_fn(|cx| svc.poll_ready(cx)));
    poll_once(svc.call(x)).is_ok()
}

fn one_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("adaptive_acquire_record");
    let quanta = limiter(QuantaClock::new());
    g.bench_function("resilience_quanta_clock", |b| {
        b.iter(|| drop(black_box(&quanta).try_acquire().unwrap()));
    });
    let system = limiter(SystemClock::new());
    g.bench_function("resilience_system_clock", |b| {
        b.iter(|| drop(black_box(&system).try_acquire().unwrap()));
    });
    let manual = limiter(ManualClock::new(Timestamp::EPOCH));
    g.bench_function("resilience_manual_clock", |b| {
        b.iter(|| drop(black_box(&manual).try_acquire().unwrap()));
    });
    let mut ours = AdaptiveLimitLayer::new(Arc::new(limiter(QuantaClock::new())))
        .layer(service_fn(|x: u64| async move { Ok::<_, ()>(x) }));
    g.bench_function("resilience_layer_quanta_clock", |b| {
        b.iter(|| call(&mut ours, black_box(1)));
    });
    let mut theirs = tower_limit();
    g.bench_function("tower_concurrency_limit", |b| {
        b.iter(|| call(&mut theirs, black_box(1)));
    });
    g.finish();
}

fn two(c: &mut Criterion) {
    let mut g = c.benchmark_group("adaptive_acquire_record_2_threads");
    let quanta = limiter(QuantaClock::new());
    g.bench_function("resilience_quanta_clock", |b| {
        b.iter_custom(|iters| {
            two_threads(&quanta, iters, |l| {
                drop(black_box(l).try_acquire().unwrap())
            })
        });
    });
    let system = limiter(SystemClock::new());
    g.bench_function("resilience_system_clock", |b| {
        b.iter_custom(|iters| {
            two_threads(&system, iters, |l| {
                drop(black_box(l).try_acquire().unwrap())
            })
        });
    });
    let manual = limiter(ManualClock::new(Timestamp::EPOCH));
    g.bench_function("resilience_manual_clock", |b| {
        b.iter_custom(|iters| {
            two_threads(&manual, iters, |l| {
                drop(black_box(l).try_acquire().unwrap())
            })
        });
    });
    let theirs = tower_limit();
    g.bench_function("tower_concurrency_limit", |b| {
        b.iter_custom(|iters| {
            // Each thread drives its own clone; the clones share one semaphore.
            let clock = SystemClock::new();
            let barrier = Barrier::new(2);
            let (x, y) = std::thread::scope(|s| {
                let run = || {
                    let mut svc = theirs.clone();
                    barrier.wait();
                    let start = clock.monotonic();
                    for _ in 0..iters {
                        call(&mut svc, black_box(1));
                    }
                    clock.monotonic().saturating_duration_since(start)
                };
                let t = s.spawn(run);
                let mine = run();
                (mine, t.join().unwrap())
            });
            x.max(y)
        });
    });
    g.finish();
}

criterion_group!(benches, one_thread, two);
criterion_main!(benches);
