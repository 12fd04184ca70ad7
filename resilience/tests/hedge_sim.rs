//! Hedging on a simulated backend with a slow tail, on tokio's paused clock (deterministic:
//! one thread, virtual time, seeded draws), next to tower's `hedge` on the same backend.
//! `cargo test -p resilience --all-features --test hedge_sim -- --nocapture` prints the
//! figures recorded in `docs/resilience.md`.
#![allow(clippy::print_stdout)]
// The figures are the point: they go into the docs.
// This test is a driver on tokio's virtual clock: it sleeps and reads tokio's time.
#![allow(clippy::disallowed_methods)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use metered_clock::{Clock, Tick, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use resilience::sim::Backend;
use resilience::{Hedge, HedgeConfig, HedgeLayer, TokioSleeper};
use tower::{Layer, Service, ServiceExt, service_fn};

/// tokio's clock (paused in these tests) as a `metered_clock::Clock`.
#[derive(Debug, Clone, Copy)]
struct TokioClock(tokio::time::Instant);

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        Timestamp::EPOCH
    }
    fn monotonic(&self) -> Tick {
        Tick::from_nanos(u64::try_from(self.0.elapsed().as_nanos()).unwrap())
    }
}

const REQUESTS: u64 = 20_000;
const SLOW_PERMILLE: u32 = 12;
const SLOW_FACTOR: u32 = 20;

/// Each attempt: 10 ms ± 20 %, or 20× that with probability 1.2 % (independent per
/// attempt, like a GC pause on one replica). Counts attempts.
fn backend(
    seed: u64,
    attempts: Arc<AtomicU64>,
) -> impl Service<u64, Response = (), Error = Infallible, Future: Send> + Clone + Send + 'static {
    let rng = Arc::new(Mutex::new(StdRng::seed_from_u64(seed)));
    let model = Backend::new(1_000, Duration::from_millis(10)).jitter_percent(20);
    service_fn(move |_req: u64| {
        attempts.fetch_add(1, Ordering::Relaxed);
        let latency = {
            let mut rng = rng.lock().unwrap();
            let work = model.draw_work(&mut *rng);
            if rng.random_range(0..1_000) < SLOW_PERMILLE {
                work * SLOW_FACTOR
            } else {
                work
            }
        };
        async move {
            tokio::time::sleep(latency).await;
            Ok::<_, Infallible>(())
        }
    })
}

/// One request per millisecond; returns the sorted latencies.
async fn drive<S>(svc: S) -> Vec<Duration>
where
    S: Service<u64> + Clone,
    S::Error: std::fmt::Debug,
{
    let start = tokio::time::Instant::now();
    let mut running: FuturesUnordered<_> = (0..REQUESTS)
        .map(|i| {
            let svc = svc.clone();
            async move {
                tokio::time::sleep_until(start + Duration::from_millis(i)).await;
                let t = tokio::time::Instant::now();
                svc.oneshot(i).await.unwrap();
                t.elapsed()
            }
        })
        .collect();
    let mut latencies = Vec::new();
    while let Some(l) = running.next().await {
        latencies.push(l);
    }
    latencies.sort_unstable();
    latencies
}

fn at(latencies: &[Duration], permille: usize) -> Duration {
    latencies[(latencies.len() * permille).div_ceil(1_000) - 1]
}

#[derive(Clone)]
struct AlwaysHedge;

impl tower::hedge::Policy<u64> for AlwaysHedge {
    fn clone_request(&self, req: &u64) -> Option<u64> {
        Some(*req)
    }
    fn can_retry(&self, _: &u64) -> bool {
        true
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn hedging_halves_p99_for_at_most_5_percent_extra_load() {
    let attempts = Arc::new(AtomicU64::new(0));
    let plain = drive(backend(1, Arc::clone(&attempts))).await;
    let plain_attempts = attempts.swap(0, Ordering::Relaxed);

    let hedge = Hedge::with_clock(
        HedgeConfig::builder()
            .quantile_permille(950)
            .budget_percent(5)
            .build()
            .unwrap(),
        TokioClock(tokio::time::Instant::now()),
    );
    let ours =
        HedgeLayer::new(hedge.clone(), TokioSleeper).layer(backend(1, Arc::clone(&attempts)));
    let hedged = drive(ours).await;
    let ours_attempts = attempts.swap(0, Ordering::Relaxed);

    let theirs = tower::hedge::Hedge::new(
        backend(1, Arc::clone(&attempts)),
        AlwaysHedge,
        100,
        0.95,
        Duration::from_secs(1),
    );
    // tower's `Hedge` is not `Clone`: share it through a `Buffer`, as tower users do.
    let tower_hedged = drive(tower::buffer::Buffer::new(theirs, 1_024)).await;
    let tower_attempts = attempts.swap(0, Ordering::Relaxed);

    let extra = |a: u64| (a as f64 - REQUESTS as f64) * 100.0 / REQUESTS as f64;
    println!("| | p50 | p99 | p99.9 | extra attempts |");
    println!("|---|---|---|---|---|");
    for (name, l, a) in [
        ("no hedging", &plain, plain_attempts),
        (
            "resilience `HedgeLayer` (p95, budget 5 %)",
            &hedged,
            ours_attempts,
        ),
        (
            "tower `hedge` (p95, no budget)",
            &tower_hedged,
            tower_attempts,
        ),
    ] {
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {:.1} ms | {:.2} % |",
            at(l, 500).as_secs_f64() * 1e3,
            at(l, 990).as_secs_f64() * 1e3,
            at(l, 999).as_secs_f64() * 1e3,
            extra(a)
        );
    }
    let (requests, hedges) = hedge.counts();
    println!("resilience hedges: {hedges} of {requests} requests");
    assert_eq!(plain_attempts, REQUESTS);
    assert!(
        at(&hedged, 990) * 2 <= at(&plain, 990),
        "p99 must fall by half"
    );
    assert!(
        (ours_attempts - REQUESTS) * 100 <= REQUESTS * 5,
        "extra load ≤ 5 %"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn no_hedge_without_data_and_first_answer_wins() {
    let hedge = Hedge::with_clock(
        HedgeConfig::builder().samples_min(1).build().unwrap(),
        TokioClock(tokio::time::Instant::now()),
    );
    // No data: a single attempt.
    let calls = AtomicU64::new(0);
    let out = hedge
        .call(&TokioSleeper, |a| {
            calls.fetch_add(1, Ordering::Relaxed);
            async move { a }
        })
        .await;
    assert_eq!((out, calls.load(Ordering::Relaxed)), (0, 1));
    hedge.record(Duration::from_millis(5));
    for _ in 0..100 {
        hedge.deposit();
    }
    // The first attempt hangs for 1 s; the hedge (after ~5 ms) answers in 1 ms and wins.
    let t = tokio::time::Instant::now();
    let out = hedge
        .call(&TokioSleeper, |a| async move {
            let d = if a == 0 { 1_000 } else { 1 };
            tokio::time::sleep(Duration::from_millis(d)).await;
            a
        })
        .await;
    assert_eq!(out, 1);
    assert!(t.elapsed() < Duration::from_millis(10));
    assert!(
        HedgeConfig::builder()
            .quantile_permille(1_000)
            .build()
            .is_err()
    );
    assert!(HedgeConfig::builder().budget_percent(0).build().is_err());
}
