//! canary: health decisions on pre-aggregated counts (against calling bayes-ab's exact
//! guardrail directly), the p95 of 100,000 raw latency samples with its interval (against
//! sorting them), one manager tick over 10,000 rollouts, and the Mann-Whitney judge.
//!
//! `cargo bench --bench canary -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use metered_suite::bayes_ab::{Counts, ErrorRateGuardrail};
use metered_suite::canary::{
    Actor, ArmObservation, HealthPolicy, LatencySketch, MannWhitneyJudge, MetricCheck,
    MetricSamples, Observations, Observed, Plan, Rollout, RolloutManager, Step,
};
use metered_suite::clock::{Clock, SystemClock, Timestamp};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn policy() -> HealthPolicy {
    HealthPolicy::builder()
        .check(MetricCheck::error_rate_max(0.05).critical())
        .check(MetricCheck::error_rate_relative(0.25))
        .build()
        .expect("valid policy")
}

/// 1,024 realistic count pairs: canary 1–3 % errors over 2k–50k requests at 10 %.
fn count_cases() -> Vec<Observations> {
    let mut rng = StdRng::seed_from_u64(1);
    (0..1024)
        .map(|_| {
            let canary = rng.random_range(2_000..50_000u64);
            let baseline = canary * 9;
            let c_err = canary * rng.random_range(10..30u64) / 1000;
            let b_err = baseline / 100;
            Observations::new(
                ArmObservation::counts(canary, c_err),
                ArmObservation::counts(baseline, b_err),
            )
        })
        .collect()
}

fn health_decisions(c: &mut Criterion) {
    let policy = policy();
    let step = Step::new(10, Duration::from_secs(300), 500);
    let cases = count_cases();
    let mut g = c.benchmark_group("canary/health_decision");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("judge_counts", |b| {
        b.iter(|| {
            i = (i + 1) % cases.len();
            black_box(policy.judge(&step, black_box(&cases[i])).expect("valid"))
        });
    });
    // Baseline: the same two limits through bayes-ab's guardrails (exact quadrature).
    let abs = ErrorRateGuardrail::absolute(0.05, 0.99).expect("valid");
    let rel = ErrorRateGuardrail::relative(0.25, 0.99).expect("valid");
    let counts: Vec<(Counts, Counts)> = cases
        .iter()
        .map(|o| {
            let b = o.baseline.as_ref().expect("baseline");
            (
                Counts::new(o.canary.errors, o.canary.requests).expect("valid"),
                Counts::new(b.errors, b.requests).expect("valid"),
            )
        })
        .collect();
    g.bench_function("bayes_ab_guardrails", |b| {
        b.iter(|| {
            i = (i + 1) % counts.len();
            let (c, base) = counts[i];
            let a = abs.check(c, None).expect("valid");
            let r = rel.check(c, Some(base)).expect("valid");
            black_box((a, r))
        });
    });
    g.finish();
}

fn p95(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(2);
    // Log-normal-ish latencies around 20 ms.
    let samples: Vec<u64> = (0..100_000)
        .map(|_| {
            // 7.4 ms ..= 54 ms: positive and far below u64::MAX.
            let u: f64 = rng.random_range(0.0..1.0);
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let micros = (20_000.0 * (2.0 * u - 1.0).exp()) as u64;
            micros
        })
        .collect();
    let mut g = c.benchmark_group("canary/p95_100k_raw");
    g.throughput(Throughput::Elements(samples.len() as u64));
    g.bench_function("sketch_record_and_interval", |b| {
        b.iter(|| {
            let mut s = LatencySketch::new();
            for &us in &samples {
                s.record(Duration::from_micros(us));
            }
            black_box(s.quantile_interval(0.95, 0.98).expect("non-empty"))
        });
    });
    g.bench_function("sort_exact", |b| {
        b.iter(|| {
            let mut v = samples.clone();
            v.sort_unstable();
            black_box(v[v.len() * 95 / 100])
        });
    });
    g.finish();
}

fn manager(c: &mut Criterion) {
    const N: usize = 10_000;
    let plan = Plan::progressive(
        Duration::from_secs(60),
        Duration::from_secs(30 * 86_400),
        500,
    )
    .expect("valid plan");
    let policy = policy();
    let plan = std::sync::Arc::new(plan);
    let policy = std::sync::Arc::new(policy);
    let mut m = RolloutManager::new();
    let t0 = Timestamp::from_unix_millis(1_700_000_000_000);
    for i in 0..N {
        let mut r = Rollout::with_shared(format!("svc-{i:05}"), plan.clone(), policy.clone())
            .expect("valid id");
        let _ = r.start(t0, Actor::System).expect("pending");
        m.insert(r).expect("unique");
    }
    // Healthy canaries at their 5 % share (1 % errors like the baseline), so every rollout
    // stays at its first step and is checked at every tick.
    let cases: Vec<Observations> = (0..1024u64)
        .map(|i| {
            let canary = 5_000 + i;
            Observations::new(
                ArmObservation::counts(canary, canary / 100),
                ArmObservation::counts(canary * 19, canary * 19 / 100),
            )
        })
        .collect();
    let clock = SystemClock::new();
    let mut now = t0;
    let mut g = c.benchmark_group("canary/manager");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(20);
    g.bench_function("tick_all_10k_rollouts", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                now = now.saturating_add(Duration::from_secs(60));
                let mut k = 0;
                let observe = |_: &Rollout| -> Observed {
                    k = (k + 1) % cases.len();
                    Ok(cases[k].clone())
                };
                let start = clock.monotonic();
                let report = m.tick_all(now, observe);
                total += clock.monotonic().saturating_duration_since(start);
                assert_eq!(
                    report.checked,
                    N,
                    "{:?}",
                    m.iter().next().map(Rollout::state)
                );
                black_box(m.take_events());
            }
            total
        });
    });
    g.finish();
}

fn mann_whitney(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(3);
    let mut draw = |n: usize, scale: f64| -> Vec<f64> {
        (0..n).map(|_| rng.random_range(0.0..1.0) * scale).collect()
    };
    let metrics: Vec<MetricSamples> = (0..10)
        .map(|i| MetricSamples::new(format!("m{i}"), draw(1_000, 1.0), draw(1_000, 1.02)))
        .collect();
    let judge = MannWhitneyJudge::default();
    let mut g = c.benchmark_group("canary/mann_whitney");
    g.throughput(Throughput::Elements(10));
    g.bench_function("judge_10_metrics_1k_vs_1k", |b| {
        b.iter(|| black_box(judge.judge(black_box(&metrics)).expect("valid")));
    });
    g.finish();
}

criterion_group!(benches, health_decisions, p95, manager, mann_whitney);
criterion_main!(benches);
