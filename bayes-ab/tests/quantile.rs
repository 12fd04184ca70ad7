//! Quantile metrics: the difference in p50 / p95 / p99 between two latency sketches, with a
//! distribution-free interval whose coverage is checked by simulation.

use std::time::Duration;

use bayes_ab::{BayesError, LatencySketch, quantile_difference};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Exp};

fn sketch(values: impl IntoIterator<Item = u64>) -> LatencySketch {
    let mut s = LatencySketch::new();
    for v in values {
        s.record(Duration::from_micros(v));
    }
    s
}

#[test]
fn a_shifted_challenger_is_measured_at_every_quantile() {
    let a = sketch((0..5_000u64).map(|i| 2_000 + (i * 7_919) % 3_000));
    let b = sketch((0..5_000u64).map(|i| 2_500 + (i * 7_919) % 3_000));
    for q in [0.5, 0.95, 0.99] {
        let d = quantile_difference(&a, &b, q, 0.95).unwrap();
        assert!((d.difference_micros - 500.0).abs() <= 5.0, "{q}: {d:?}");
        assert!(d.lower_bounded && d.upper_bounded, "{q}");
        assert!(d.difference_interval.contains(500.0), "{q}: {d:?}");
        assert!(
            d.difference_interval.lower > 0.0,
            "{q}: a real slowdown: {d:?}"
        );
        assert!(
            d.relative_change_interval.contains(d.relative_change),
            "{q}"
        );
        assert!(d.relative_change > 0.0);
    }
}

/// Simulated coverage: exponential latencies (mean 1 ms) against a challenger 20 % slower,
/// whose true p95 difference is known (600 µs), 400 seeded experiments of 400 units per arm;
/// the 90 % interval must cover the truth at least 90 % of the time (less three standard
/// errors). The union bound makes it conservative.
#[test]
fn the_interval_covers_the_true_difference() {
    let q: f64 = 0.95;
    let (mean_a, mean_b) = (1_000.0, 1_200.0);
    let truth = (mean_b - mean_a) * -(1.0 - q).ln();
    let mut rng = StdRng::seed_from_u64(2026);
    let (ea, eb) = (
        Exp::new(1.0 / mean_a).unwrap(),
        Exp::new(1.0 / mean_b).unwrap(),
    );
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let mut run = |units: usize| {
        let a = sketch((0..units).map(|_| ea.sample(&mut rng).round() as u64));
        let b = sketch((0..units).map(|_| eb.sample(&mut rng).round() as u64));
        quantile_difference(&a, &b, q, 0.9).unwrap()
    };
    let experiments = 400u32;
    let mut covered = 0u32;
    for _ in 0..experiments {
        let d = run(400);
        assert!(d.lower_bounded && d.upper_bounded);
        covered += u32::from(d.difference_interval.contains(truth));
    }
    let rate = f64::from(covered) / f64::from(experiments);
    let se = (0.9 * 0.1 / f64::from(experiments)).sqrt();
    assert!(rate >= 0.9 - 3.0 * se, "coverage {rate}");
    // And informative: with 5,000 units per arm it finds the slowdown nearly every time.
    let detected = (0..40)
        .filter(|_| run(5_000).difference_interval.lower > 0.0)
        .count();
    assert!(detected >= 36, "detected in only {detected} of 40");
}

#[test]
fn small_samples_leave_ends_unbounded() {
    // 20 values cannot bound a p95 from above at 95 %.
    let a = sketch(1..=20);
    let b = sketch(11..=30);
    let d = quantile_difference(&a, &b, 0.95, 0.95).unwrap();
    assert!(!d.upper_bounded);
    assert_eq!(d.difference_interval.upper, f64::INFINITY);
    assert_eq!(d.relative_change_interval.upper, f64::INFINITY);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let a = sketch(1..=100);
    assert!(matches!(
        quantile_difference(&a, &LatencySketch::new(), 0.5, 0.95),
        Err(BayesError::InsufficientData { .. })
    ));
    assert!(matches!(
        quantile_difference(&a, &a, 1.0, 0.95),
        Err(BayesError::InvalidProbability { .. })
    ));
    assert!(matches!(
        quantile_difference(&a, &a, 0.5, 0.0),
        Err(BayesError::InvalidProbability { .. })
    ));
}
