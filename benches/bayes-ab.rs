//! bayes-ab: exact two-arm evaluation against the common approach, a Monte Carlo estimate
//! with 20,000 draws, on speed and on error; the normal-approximation regime; k-arm
//! quadrature; a 10-arm Thompson allocation; exact evaluation at a million and a billion
//! trials; a full two-arm evaluation with CUPED, as free functions and through
//! `ExperimentState::evaluate` with a CUPED rule in each stopping mode; a 10-arm, 5-metric
//! evaluation with Holm and Benjamini–Hochberg corrections, as free functions and through
//! `ExperimentState::evaluate` with declared metrics; one anytime-valid update, with and
//! without CUPED.
//!
//! `cargo bench --bench bayes-ab -- --warm-up-time 1 --measurement-time 3`
//!
//! Before timing, the bench prints the Monte Carlo error against the exact value over 200
//! seeds (the exact figures are checked against mpmath references in the crate's tests).

// The error table is the point of this bench's output.
#![allow(clippy::print_stdout)]
// `criterion_group!` generates an undocumented function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use metered_suite::bayes_ab::{
    Beta, BoundedStats, CompareConfig, Correction, Counts, CovariateStats, CupedPair, DecisionRule,
    EffectPrior, ExperimentState, Guardrails, Hypothesis, Metric, MetricSet, PairArm, StoppingMode,
    ThompsonBandit, TrafficSplit, UnitOutcome, anytime_bounded_difference,
    anytime_confidence_sequence, best_arm, best_arm_monte_carlo, compare, correct, cuped_compare,
};
use metered_suite::clock::Timestamp;
use rand::{SeedableRng, rngs::StdRng};

const MC_DRAWS: u32 = 20_000;

fn posterior(successes: u64, trials: u64) -> Beta {
    Beta::UNIFORM.update(Counts::new(successes, trials).expect("valid counts"))
}

/// (label, champion, challenger)
fn cases() -> [(&'static str, Beta, Beta); 3] {
    [
        ("49of100_vs_51of100", posterior(49, 100), posterior(51, 100)),
        (
            "1000of10k_vs_1100of10k",
            posterior(1_000, 10_000),
            posterior(1_100, 10_000),
        ),
        (
            "10000of100k_vs_10100of100k",
            posterior(10_000, 100_000),
            posterior(10_100, 100_000),
        ),
    ]
}

/// Monte Carlo error against the exact figures, over 200 seeds: mean and max absolute error.
fn print_monte_carlo_error() {
    println!("Monte Carlo ({MC_DRAWS} draws) error against the exact value, 200 seeds:");
    println!("case | P(B>A) mean abs err | P(B>A) max | loss(B) mean abs err | loss(B) max");
    for (label, a, b) in cases() {
        let exact = compare(a, b, &CompareConfig::default());
        let (mut p_sum, mut p_max, mut l_sum, mut l_max) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for seed in 0..200u64 {
            let mc = best_arm_monte_carlo(&[a, b], MC_DRAWS, &mut StdRng::seed_from_u64(seed))
                .expect("two arms");
            let p_err = (mc.prob_best[1] - exact.prob_b_beats_a).abs();
            let l_err = (mc.expected_loss[1] - exact.expected_loss_b).abs();
            p_sum += p_err;
            p_max = p_max.max(p_err);
            l_sum += l_err;
            l_max = l_max.max(l_err);
        }
        println!(
            "{label} | {:.2e} | {:.2e} | {:.2e} | {:.2e}",
            p_sum / 200.0,
            p_max,
            l_sum / 200.0,
            l_max
        );
    }
}

fn two_arm(c: &mut Criterion) {
    print_monte_carlo_error();
    let exact_config = CompareConfig::default();
    let mut group = c.benchmark_group("bayes-ab/two_arm");
    for (label, a, b) in cases() {
        group.bench_with_input(
            BenchmarkId::new("exact_full", label),
            &(a, b),
            |bench, &(a, b)| {
                bench.iter(|| compare(black_box(a), black_box(b), &exact_config));
            },
        );
        group.bench_with_input(
            BenchmarkId::new("monte_carlo_20k", label),
            &(a, b),
            |bench, &(a, b)| {
                let mut rng = StdRng::seed_from_u64(1);
                bench.iter(|| {
                    best_arm_monte_carlo(&[black_box(a), black_box(b)], MC_DRAWS, &mut rng)
                });
            },
        );
    }
    // The normal-approximation regime: every parameter above the configured size.
    let normal = CompareConfig::new(0.95, 1e5).expect("valid config");
    let (a, b) = (posterior(200_000, 1_000_000), posterior(201_000, 1_000_000));
    group.bench_function("normal_approximation/200k_of_1M", |bench| {
        bench.iter(|| compare(black_box(a), black_box(b), &normal));
    });
    group.bench_function("exact_full/200k_of_1M", |bench| {
        bench.iter(|| compare(black_box(a), black_box(b), &exact_config));
    });
    // Beyond the closed form's range (quadrature, fixed cost): a million and a billion trials.
    for (label, a, b) in [
        (
            "1M_of_10M",
            posterior(1_000_000, 10_000_000),
            posterior(1_001_000, 10_000_000),
        ),
        (
            "100M_of_1G",
            posterior(100_000_000, 1_000_000_000),
            posterior(100_020_000, 1_000_000_000),
        ),
        (
            "3_of_1G",
            posterior(1, 1_000_000_000),
            posterior(3, 1_000_000_000),
        ),
    ] {
        group.bench_with_input(
            BenchmarkId::new("exact_full", label),
            &(a, b),
            |bench, &(a, b)| {
                bench.iter(|| compare(black_box(a), black_box(b), &exact_config));
            },
        );
    }
    group.finish();
}

/// Per-arm CUPED statistics of a conversion metric (`successes` of `trials` units convert)
/// with a pre-period covariate correlated with conversion.
fn covariate_stats(successes: u64, trials: u64) -> CovariateStats {
    let mut stats = CovariateStats::default();
    for unit in 0..trials {
        let converted = unit * successes / trials != (unit + 1) * successes / trials;
        #[allow(clippy::cast_precision_loss)]
        let pre_period = (unit % 7) as f64 + if converted { 3.0 } else { 0.0 };
        stats
            .record(f64::from(u8::from(converted)), pre_period)
            .expect("finite");
    }
    stats
}

/// A full two-arm evaluation with CUPED, as a decision service makes it at every look: the
/// exact comparison (`compare`: P(B > A), both losses, both intervals) and the CUPED-adjusted
/// comparison of the same conversions (`cuped_compare`).
fn two_arm_with_cuped(c: &mut Criterion) {
    let mut group = c.benchmark_group("bayes-ab/two_arm_with_cuped");
    let config = CompareConfig::default();
    for (label, (sa, na), (sb, nb)) in [
        ("1000of10k_vs_1100of10k", (1_000, 10_000), (1_100, 10_000)),
        (
            "10000of100k_vs_10100of100k",
            (10_000, 100_000),
            (10_100, 100_000),
        ),
        (
            "10000of20k_vs_10100of20k",
            (10_000, 20_000),
            (10_100, 20_000),
        ),
        (
            "100k_of_1M_vs_100.3k_of_1M",
            (100_000, 1_000_000),
            (100_300, 1_000_000),
        ),
    ] {
        let (a, b) = (posterior(sa, na), posterior(sb, nb));
        let (ca, cb) = (covariate_stats(sa, na), covariate_stats(sb, nb));
        group.bench_function(BenchmarkId::new("full", label), |bench| {
            bench.iter(|| {
                let s = compare(black_box(a), black_box(b), &config);
                let cuped = cuped_compare(black_box(ca), black_box(cb), 0.95).expect("cuped");
                (s, cuped)
            });
        });
    }
    group.finish();
}

/// The pre-period covariate of unit `unit` that converted or not (as in `covariate_stats`).
#[allow(clippy::cast_precision_loss)]
fn pre_period(unit: u64, converted: bool) -> f64 {
    (unit % 7) as f64 + if converted { 3.0 } else { 0.0 }
}

/// An experiment state with `arms[i] = (conversions, units)` recorded unit by unit with a
/// covariate (the primary conversion's CUPED pairs), and, with `metrics`, five declared
/// metrics recorded for every unit.
fn experiment(arms: &[(u64, u64)], metrics: Option<MetricSet>) -> ExperimentState {
    let split = TrafficSplit::even(arms.len()).expect("split");
    let mut state =
        ExperimentState::new("bench", split, Timestamp::from_unix_millis(0)).expect("state");
    if let Some(set) = metrics {
        state = state.with_metrics(set).expect("metrics");
    }
    let declared = state.metrics().map_or(0, |m| m.metrics().len());
    let units_max = arms.iter().map(|&(_, n)| n).max().unwrap_or(0);
    // Interleave the arms, as traffic arrives.
    for unit in 0..units_max {
        for (arm, &(successes, trials)) in arms.iter().enumerate() {
            if unit >= trials {
                continue;
            }
            let converted = unit * successes / trials != (unit + 1) * successes / trials;
            let x = pre_period(unit, converted);
            let outcome = UnitOutcome {
                converted,
                ..UnitOutcome::default()
            };
            state
                .record_with_covariate(arm, outcome, Some(x))
                .expect("record");
            for metric in 0..declared {
                #[allow(clippy::cast_precision_loss)]
                let value = match metric {
                    // signup, retained, upgrade: conversions
                    0 | 2 | 4 => f64::from(u8::from(
                        (unit + metric as u64 + arm as u64).is_multiple_of(9),
                    )),
                    _ => x + ((unit * 31 + arm as u64) % 17) as f64,
                };
                state
                    .record_metric(arm, metric, value, Some(x))
                    .expect("metric");
            }
        }
    }
    state
}

/// A full two-arm evaluation with CUPED through the high-level API: `ExperimentState::evaluate`
/// with a rule that asks for CUPED (SRM, covariate balance, the exact summary, the adjusted
/// comparison and the mode's sequence), in each stopping mode.
fn experiment_with_cuped(c: &mut Criterion) {
    let mut group = c.benchmark_group("bayes-ab/experiment_with_cuped");
    let modes = [
        (
            "sequential",
            StoppingMode::sequential(0.05, 100_000.0).expect("mode"),
        ),
        (
            "anytime_valid",
            StoppingMode::anytime_valid(0.05).expect("mode"),
        ),
        (
            "bayesian",
            StoppingMode::bayesian(0.95, 0.001).expect("mode"),
        ),
    ];
    let now = Timestamp::from_unix_millis(1);
    for (label, arms) in [
        ("1000of10k_vs_1100of10k", [(1_000, 10_000), (1_100, 10_000)]),
        (
            "10000of100k_vs_10100of100k",
            [(10_000, 100_000), (10_100, 100_000)],
        ),
    ] {
        let state = experiment(&arms, None);
        for (mode, stopping) in modes {
            let rule = DecisionRule::builder()
                .stopping(stopping)
                .cuped(true)
                .build()
                .expect("rule");
            group.bench_function(BenchmarkId::new(mode, label), |bench| {
                bench.iter(|| {
                    black_box(&state)
                        .evaluate(&rule, &Guardrails::default(), now)
                        .expect("evaluation")
                });
            });
        }
    }
    group.finish();
}

/// One anytime-valid update: record one observation per arm's counts and recompute the
/// confidence sequence of the difference (what a look after every observation costs).
fn anytime(c: &mut Criterion) {
    let mut group = c.benchmark_group("bayes-ab/anytime_valid");
    let a = Counts::new(1_000, 10_000).expect("valid");
    group.bench_function("conversion_update_and_sequence", |bench| {
        let mut i = 0u64;
        bench.iter(|| {
            i += 1;
            let b = Counts::new(1_100 + (i & 1), 10_001).expect("valid");
            anytime_confidence_sequence(black_box(a), black_box(b), 0.05)
        });
    });
    let (mut sa, mut sb) = (
        BoundedStats::new(0.0, 100.0).expect("bounds"),
        BoundedStats::new(0.0, 100.0).expect("bounds"),
    );
    for i in 0..10_000 {
        sa.record(f64::from(i % 100)).expect("in range");
        sb.record(f64::from((i * 7) % 100)).expect("in range");
    }
    group.bench_function("bounded_update_and_sequence", |bench| {
        bench.iter(|| {
            sb.record(black_box(42.0)).expect("in range");
            anytime_bounded_difference(black_box(&sa), black_box(&sb), 0.05)
        });
    });
    // With CUPED: one unit into the pair (prediction, bet, moments) and the sequence.
    let mut pair = CupedPair::conversion(0.5).expect("pair");
    for unit in 0..20_000u64 {
        let converted = unit.is_multiple_of(10);
        let arm = if unit.is_multiple_of(2) {
            PairArm::Champion
        } else {
            PairArm::Challenger
        };
        pair.record(
            arm,
            f64::from(u8::from(converted)),
            pre_period(unit, converted),
        )
        .expect("record");
    }
    group.bench_function("cuped_update_and_sequence", |bench| {
        let mut unit = 20_000u64;
        bench.iter(|| {
            unit += 1;
            let converted = unit.is_multiple_of(10);
            let arm = if unit.is_multiple_of(2) {
                PairArm::Champion
            } else {
                PairArm::Challenger
            };
            pair.record(
                arm,
                f64::from(u8::from(converted)),
                pre_period(unit, converted),
            )
            .expect("record");
            black_box(&pair).anytime_confidence_sequence(0.05)
        });
    });
    group.finish();
}

/// Ten arms (a champion and nine challengers) on five conversion metrics at about 10,000
/// users per arm: every challenger compared exactly with the champion on every metric
/// (`compare`), then Holm and Benjamini–Hochberg across the 45 comparisons.
fn ten_arms_five_metrics(c: &mut Criterion) {
    let metrics: Vec<Vec<Beta>> = (0..5u64)
        .map(|metric| {
            (0..10u64)
                .map(|arm| posterior(200 * (metric + 1) + 7 * arm, 10_000))
                .collect()
        })
        .collect();
    let config = CompareConfig::default();
    let mut group = c.benchmark_group("bayes-ab/ten_arms_five_metrics");
    group.bench_function("compare_and_correct", |bench| {
        bench.iter(|| {
            let mut family = Vec::with_capacity(45);
            for arms in black_box(&metrics) {
                for &challenger in &arms[1..] {
                    let summary = compare(arms[0], challenger, &config);
                    let _ = black_box(summary);
                    family.push(Hypothesis::from_posteriors(arms[0], challenger));
                }
            }
            let holm = correct(&family, 0.05, Correction::Holm).expect("valid family");
            let bh = correct(&family, 0.05, Correction::BenjaminiHochberg).expect("valid family");
            (holm, bh)
        });
    });
    // The same through the high-level API: a champion and nine challengers at 10,000 units
    // each, five declared metrics (two conversions with their own Beta priors, one conversion
    // and one revenue metric with CUPED, one continuous metric with an effect prior), Holm
    // across the 45 metric × challenger comparisons, beside the primary conversion's
    // evaluation with CUPED for each challenger (sequential mode), SRM and covariate balance.
    let set = MetricSet::new(
        vec![
            Metric::conversion("signup")
                .and_then(|m| m.with_rate_prior(Beta::new(2.0, 18.0)?))
                .expect("metric"),
            Metric::continuous("revenue")
                .expect("metric")
                .with_cuped(true),
            Metric::conversion("retained")
                .expect("metric")
                .with_cuped(true),
            Metric::continuous("pages")
                .expect("metric")
                .with_effect_prior(EffectPrior::normal(0.0, 0.5).expect("prior")),
            Metric::conversion("upgrade")
                .and_then(|m| m.with_rate_prior(Beta::new(1.0, 30.0)?))
                .expect("metric"),
        ],
        Correction::Holm,
        0.05,
    )
    .expect("metric set");
    let arms: Vec<(u64, u64)> = (0..10u64).map(|arm| (1_000 + 15 * arm, 10_000)).collect();
    let state = experiment(&arms, Some(set));
    let now = Timestamp::from_unix_millis(1);
    // Sequential: the family's tests are the fixed-horizon Gaussian ones; anytime-valid: the
    // three conversion metrics are judged by their anytime-valid CUPED sequences.
    for (label, stopping) in [
        (
            "experiment_evaluate",
            StoppingMode::sequential(0.05, 100_000.0).expect("mode"),
        ),
        (
            "experiment_evaluate_anytime",
            StoppingMode::anytime_valid(0.05).expect("mode"),
        ),
    ] {
        let rule = DecisionRule::builder()
            .stopping(stopping)
            .cuped(true)
            .build()
            .expect("rule");
        group.bench_function(label, |bench| {
            bench.iter(|| {
                black_box(&state)
                    .evaluate(&rule, &Guardrails::default(), now)
                    .expect("evaluation")
            });
        });
    }
    group.finish();
}

fn ten_arms() -> Vec<Beta> {
    (0..10).map(|i| posterior(1_000 + 15 * i, 10_000)).collect()
}

fn many_arms(c: &mut Criterion) {
    let mut group = c.benchmark_group("bayes-ab/ten_arms");
    let arms = ten_arms();
    group.bench_function("best_arm_quadrature", |bench| {
        bench.iter(|| best_arm(black_box(&arms)));
    });
    group.bench_function("best_arm_monte_carlo_20k", |bench| {
        let mut rng = StdRng::seed_from_u64(2);
        bench.iter(|| best_arm_monte_carlo(black_box(&arms), MC_DRAWS, &mut rng));
    });
    let bandit = ThompsonBandit::builder().build().expect("default bandit");
    group.bench_function("thompson_allocation_1000_draws", |bench| {
        let mut rng = StdRng::seed_from_u64(3);
        bench.iter(|| bandit.allocate(black_box(&arms), &mut rng));
    });
    let top_two = ThompsonBandit::builder()
        .top_two(0.5)
        .min_share(0.02)
        .build()
        .expect("top-two bandit");
    group.bench_function("top_two_allocation_1000_draws", |bench| {
        let mut rng = StdRng::seed_from_u64(4);
        bench.iter(|| top_two.allocate(black_box(&arms), &mut rng));
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = two_arm, two_arm_with_cuped, experiment_with_cuped, ten_arms_five_metrics, anytime, many_arms
}
criterion_main!(benches);
