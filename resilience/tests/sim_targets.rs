//! The targets, asserted on the deterministic simulation (`resilience::sim`), with
//! the figures printed (`cargo test -p resilience --all-features --test sim_targets -- --nocapture`)
//! and recorded in `docs/resilience.md`.
#![allow(clippy::print_stdout)] // The figures are the point: they go into the docs.

use std::sync::Arc;
use std::time::Duration;

use resilience::sim::{Admission, Backend, Report, Scenario};
use resilience::{
    AdaptiveConfig, AdaptiveLimiter, Aimd, Algorithm, Gradient2, LoadShedder, QueueConfig, Vegas,
};

const SEED: u64 = 1;
const CAPACITY: u32 = 100;
const BASE: Duration = Duration::from_millis(10);

/// Capacity 200 for 10 s, then 100 (halved) for 20 s; 20,000 calls/s throughout: 2× the
/// new capacity (100 slots / 10 ms). Measured over 15..30 s.
fn halving() -> Scenario {
    Scenario::new(Backend::new(CAPACITY, BASE), 20_000)
        .capacity_change(Duration::ZERO, 2 * CAPACITY)
        .capacity_change(Duration::from_secs(10), CAPACITY)
        .duration(Duration::from_secs(30))
        .measure_from(Duration::from_secs(15))
}

fn limiter(
    s: &Scenario,
    algorithm: Algorithm,
    initial: u32,
) -> Arc<AdaptiveLimiter<metered_clock::ManualClock>> {
    let config = AdaptiveConfig::builder()
        .algorithm(algorithm)
        .initial_limit(initial)
        .max_limit(1_000)
        .build()
        .unwrap();
    Arc::new(AdaptiveLimiter::with_clock(config, s.clock()))
}

fn unloaded_p99() -> Duration {
    Scenario::new(Backend::new(CAPACITY, BASE), 1_000)
        .run(Admission::Unlimited, SEED)
        .latency_p99()
}

fn line(name: &str, r: &Report, unloaded: Duration) -> String {
    format!(
        "| {name} | {:.1} % | {:.2} ms | {:.2}× | {} |",
        r.goodput_permille() as f64 / 10.0,
        r.latency_p99().as_secs_f64() * 1e3,
        r.latency_p99().as_secs_f64() / unloaded.as_secs_f64(),
        r.converged_after(Duration::from_secs(10), 90..=150)
            .map_or("never".to_string(), |d| format!("{:.1} s", d.as_secs_f64())),
    )
}

/// The figure-of-merit check: goodput ≥ 90 % of capacity and p99 ≤ 2× unloaded.
fn meets(r: &Report, unloaded: Duration) -> bool {
    r.goodput_permille() >= 900 && r.latency_p99() <= unloaded * 2
}

#[test]
fn adaptive_limit_keeps_goodput_and_latency_under_2x_overload_after_capacity_halves() {
    let unloaded = unloaded_p99();
    println!("unloaded p99: {unloaded:?}");
    println!(
        "| admission | goodput (% of C) | p99 | p99 / unloaded | limit in 90..=150 after the halving |"
    );
    println!("|---|---|---|---|---|");

    let s = halving();
    let gradient2 = s.run(
        Admission::Limiter(limiter(&s, Algorithm::Gradient2(Gradient2::new()), 20)),
        SEED,
    );
    println!(
        "{}",
        line("adaptive, Gradient2 (default)", &gradient2, unloaded)
    );
    let s = halving();
    let aimd = s.run(
        Admission::Limiter(limiter(
            &s,
            Algorithm::Aimd(Aimd::new().latency_threshold(BASE * 13 / 10)),
            20,
        )),
        SEED,
    );
    println!(
        "{}",
        line("adaptive, AIMD (latency threshold 13 ms)", &aimd, unloaded)
    );
    let s = halving();
    let vegas = s.run(
        Admission::Limiter(limiter(&s, Algorithm::Vegas(Vegas::new()), 20)),
        SEED,
    );
    println!("{}", line("adaptive, Vegas", &vegas, unloaded));
    let s = halving();
    let fixed = s.run(
        Admission::Limiter(limiter(&s, Algorithm::Fixed, 2 * CAPACITY)),
        SEED,
    );
    println!(
        "{}",
        line(
            "fixed limit 200 (set for the old capacity)",
            &fixed,
            unloaded
        )
    );
    let s = halving();
    let none = s.run(Admission::Unlimited, SEED);
    println!("{}", line("no limit", &none, unloaded));

    assert!(
        meets(&gradient2, unloaded),
        "Gradient2 must meet the target"
    );
    assert!(meets(&aimd, unloaded), "AIMD must meet the target");
    assert!(
        !meets(&fixed, unloaded),
        "the fixed limit fails goodput or latency"
    );
    assert!(!meets(&none, unloaded), "no limit fails goodput or latency");
    for (name, r) in [("Gradient2", &gradient2), ("AIMD", &aimd)] {
        let t = r
            .converged_after(Duration::from_secs(10), 90..=150)
            .unwrap_or(Duration::MAX);
        assert!(t <= Duration::from_secs(5), "{name} converged after {t:?}");
    }
}

#[test]
fn critical_requests_succeed_under_2x_overload_with_shedding() {
    // 30 % critical, 20 % sheddable, 50 % default; 2× the capacity, constant capacity.
    let s = Scenario::new(Backend::new(CAPACITY, BASE), 20_000)
        .priorities(30, 20)
        .duration(Duration::from_secs(20))
        .measure_from(Duration::from_secs(5));
    let shedder =
        LoadShedder::new(limiter(&s, Algorithm::Gradient2(Gradient2::new()), 20), 50).unwrap();
    let r = s.run(Admission::Shedder(shedder), SEED);
    let pct = |c: usize| r.classes[c].succeeded as f64 * 100.0 / r.classes[c].offered as f64;
    println!(
        "shedding: critical {:.2} %, default {:.2} %, sheddable {:.2} % succeeded; goodput {:.1} % of C; p99 {:?}",
        pct(0),
        pct(1),
        pct(2),
        r.goodput_permille() as f64 / 10.0,
        r.latency_p99()
    );
    // Without priorities, the same limiter serves every class alike (about half).
    let s2 = Scenario::new(Backend::new(CAPACITY, BASE), 20_000)
        .priorities(30, 20)
        .duration(Duration::from_secs(20))
        .measure_from(Duration::from_secs(5));
    let plain = s2.run(
        Admission::Limiter(limiter(&s2, Algorithm::Gradient2(Gradient2::new()), 20)),
        SEED,
    );
    let pct2 = plain.classes[0].succeeded as f64 * 100.0 / plain.classes[0].offered as f64;
    println!("same limiter without priorities: critical {pct2:.2} % succeeded");
    assert!(
        r.classes[0].succeeded * 100 >= r.classes[0].offered * 99,
        "critical {:.2} %",
        pct(0)
    );
    assert!(pct(2) < pct(1), "sheddable goes before default");
}

#[test]
fn a_codel_queue_with_adaptive_lifo_keeps_critical_success_and_bounds_the_wait() {
    let s = Scenario::new(Backend::new(CAPACITY, BASE), 20_000)
        .priorities(30, 20)
        .duration(Duration::from_secs(20))
        .measure_from(Duration::from_secs(5));
    let queue = QueueConfig::new(200, Duration::from_millis(5), Duration::from_millis(100))
        .unwrap()
        .adaptive_lifo(true);
    let shedder = LoadShedder::with_queue(
        limiter(&s, Algorithm::Gradient2(Gradient2::new()), 20),
        50,
        queue,
    )
    .unwrap();
    let r = s.run(Admission::QueuedShedder(shedder), SEED);
    let pct = |c: usize| r.classes[c].succeeded as f64 * 100.0 / r.classes[c].offered as f64;
    let unloaded = unloaded_p99();
    println!(
        "queued shedding (200 waiters, target 5 ms, interval 100 ms, adaptive LIFO): critical {:.2} %, default {:.2} %, sheddable {:.2} % succeeded; goodput {:.1} % of C; p99 {:?} (waiting included)",
        pct(0),
        pct(1),
        pct(2),
        r.goodput_permille() as f64 / 10.0,
        r.latency_p99()
    );
    assert!(r.classes[0].succeeded * 100 >= r.classes[0].offered * 99);
    assert!(r.goodput_permille() >= 900);
    assert!(
        r.latency_p99() <= unloaded * 2,
        "the sojourn limit bounds the wait"
    );
}
