//! Simulated rollouts: false rollbacks of A/A canaries, detection of a doubled error rate, and
//! (with the judges combined) detection of twice the variance at the same median.
//!
//! Debug builds run a scaled-down count; the full 10,000-rollout figures come from
//! `cargo test --release -p canary --test simulation -- --nocapture` (see docs/canary.md).
#![allow(clippy::print_stderr)] // the tests report the simulated figures

use std::time::Duration;

use canary::*;

fn plan() -> Plan {
    Plan::progressive(Duration::from_secs(60), Duration::from_secs(300), 500).unwrap()
}

fn policy() -> HealthPolicy {
    HealthPolicy::builder()
        .check(MetricCheck::error_rate_max(0.05).critical())
        .check(MetricCheck::error_rate_relative(0.25))
        .build()
        .unwrap()
}

fn rollouts() -> u32 {
    if cfg!(debug_assertions) { 300 } else { 10_000 }
}

#[test]
fn aa_rollouts_are_rarely_rolled_back() {
    let report = simulate(&plan(), &policy(), &SimConfig::aa(rollouts(), 1)).unwrap();
    eprintln!(
        "A/A: {report:?}; false-rollback rate {:.4}",
        report.rollback_rate()
    );
    assert_eq!(
        report.rollouts,
        report.promoted + report.rolled_back + report.unfinished
    );
    // The requirement is ≤ 5 %. The release run (10,000 rollouts) measures the true rate far
    // below it (docs/canary.md), so the scaled-down debug count stays under 5 % with margin.
    assert!(report.rollback_rate() <= 0.05, "{report:?}");
    assert_eq!(report.unfinished, 0, "no A/A rollout may get stuck");
}

#[test]
fn doubled_error_rates_are_detected() {
    let config = SimConfig {
        canary_error_rate: 0.02,
        ..SimConfig::aa(rollouts(), 2)
    };
    let report = simulate(&plan(), &policy(), &config).unwrap();
    eprintln!(
        "2x errors: {report:?}; detection rate {:.4}, mean time to rollback {:.0} s",
        report.rollback_rate(),
        report.mean_seconds_to_rollback
    );
    assert!(report.rollback_rate() >= 0.8, "{report:?}");
}

#[test]
fn bad_simulation_settings_are_refused() {
    let bad = [
        SimConfig {
            canary_error_rate: 1.5,
            ..SimConfig::aa(1, 0)
        },
        SimConfig {
            requests_per_minute: 0.0,
            ..SimConfig::aa(1, 0)
        },
        SimConfig {
            rollouts: SIM_ROLLOUTS_MAX + 1,
            ..SimConfig::aa(1, 0)
        },
    ];
    for config in bad {
        assert!(matches!(
            simulate(&plan(), &policy(), &config),
            Err(CanaryError::InvalidPolicy { .. })
        ));
    }
    // Same seed, same report.
    let a = simulate(&plan(), &policy(), &SimConfig::aa(5, 9)).unwrap();
    assert_eq!(
        a,
        simulate(&plan(), &policy(), &SimConfig::aa(5, 9)).unwrap()
    );
}

// The judges combined: the error-rate checks above plus the Mann-Whitney judge with its
// spread test on a latency metric (30 values per arm and minute, as a `query_range` gives one
// point per pod and step). Targets (issue 21), over 10,000 rollouts each in release builds:
// A/A false rollbacks ≤ 1 %, a doubled error rate detected ≥ 99 %, the same median with twice
// the variance detected ≥ 95 %. Debug builds (CI) run `combined_rollouts()` each and assert
// that an exact binomial test does not reject the target at the 0.1 % level: the run fails
// when the rate is clearly worse than the target, and a rate at the release figures passes
// with near certainty. The seeds are fixed, so every run gives the same figures.

fn combined_policy() -> HealthPolicy {
    HealthPolicy::builder()
        .check(MetricCheck::error_rate_max(0.05).critical())
        .check(MetricCheck::error_rate_relative(0.25))
        .mann_whitney(
            MannWhitneyJudge::new(0.0005, 95.0, 75.0)
                .unwrap()
                .with_spread_alpha(Some(0.0005))
                .unwrap(),
        )
        .build()
        .unwrap()
}

fn latency() -> SimLatency {
    SimLatency {
        samples_per_interval: 30,
        ..SimLatency::aa()
    }
}

fn combined_rollouts() -> u32 {
    if cfg!(debug_assertions) {
        1_000
    } else {
        10_000
    }
}

/// Whether `count` events in `n` runs are consistent with a true rate of at most `rate_max`
/// (`upper`) or at least `rate_min` (`!upper`): an exact one-sided binomial test at 0.1 %.
/// With 10,000 runs the target is asserted on the measured rate itself.
fn consistent(count: u32, n: u32, target: f64, upper: bool) -> bool {
    use statrs::distribution::{Binomial, DiscreteCDF};
    let observed = f64::from(count) / f64::from(n);
    if n >= 10_000 {
        return if upper {
            observed <= target
        } else {
            observed >= target
        };
    }
    let b = Binomial::new(target, u64::from(n)).unwrap();
    let p = if upper {
        // P(X >= count | rate = target)
        if count == 0 {
            1.0
        } else {
            b.sf(u64::from(count) - 1)
        }
    } else {
        // P(X <= count | rate = target)
        b.cdf(u64::from(count))
    };
    p >= 0.001
}

#[test]
fn combined_judges_aa_false_rollbacks_at_most_one_percent() {
    let n = combined_rollouts();
    let config = SimConfig::aa(n, 11).with_latency(latency());
    let report = simulate(&plan(), &combined_policy(), &config).unwrap();
    eprintln!(
        "combined A/A: {report:?}; false-rollback rate {:.4}",
        report.rollback_rate()
    );
    assert_eq!(report.unfinished, 0, "{report:?}");
    assert!(consistent(report.rolled_back, n, 0.01, true), "{report:?}");
    // The test can fail: a judge at α = 0.05 without the binomial margin rolls back far
    // more than 1 % of A/A canaries.
    let loose = HealthPolicy::builder()
        .check(MetricCheck::error_rate_relative(0.25))
        .mann_whitney(MannWhitneyJudge::new(0.05, 95.0, 75.0).unwrap())
        .build()
        .unwrap();
    let loose_report = simulate(
        &plan(),
        &loose,
        &SimConfig::aa(200, 11).with_latency(latency()),
    )
    .unwrap();
    assert!(
        !consistent(loose_report.rolled_back, 200, 0.01, true),
        "{loose_report:?}"
    );
}

#[test]
fn combined_judges_detect_a_doubled_error_rate() {
    let n = combined_rollouts();
    let config = SimConfig {
        canary_error_rate: 0.02,
        ..SimConfig::aa(n, 12)
    }
    .with_latency(latency());
    let report = simulate(&plan(), &combined_policy(), &config).unwrap();
    eprintln!(
        "combined 2x errors: {report:?}; detection rate {:.4}",
        report.rollback_rate()
    );
    assert!(consistent(report.rolled_back, n, 0.99, false), "{report:?}");
}

#[test]
fn combined_judges_detect_twice_the_variance_at_the_same_median() {
    let n = combined_rollouts();
    let config = SimConfig::aa(n, 13).with_latency(SimLatency {
        canary_variance_factor: 2.0,
        ..latency()
    });
    let report = simulate(&plan(), &combined_policy(), &config).unwrap();
    eprintln!(
        "combined 2x variance: {report:?}; detection rate {:.4}",
        report.rollback_rate()
    );
    assert!(consistent(report.rolled_back, n, 0.95, false), "{report:?}");
    // Kayenta's judge (no spread test) misses it: most such canaries are promoted.
    let kayenta = HealthPolicy::builder()
        .check(MetricCheck::error_rate_max(0.05).critical())
        .check(MetricCheck::error_rate_relative(0.25))
        .mann_whitney(
            MannWhitneyJudge::new(0.0005, 95.0, 75.0)
                .unwrap()
                .with_spread_alpha(None)
                .unwrap(),
        )
        .build()
        .unwrap();
    let missed = simulate(
        &plan(),
        &kayenta,
        &SimConfig {
            rollouts: 200,
            ..config
        },
    )
    .unwrap();
    eprintln!(
        "2x variance, Mann-Whitney alone: detection rate {:.4}",
        missed.rollback_rate()
    );
    assert!(missed.rollback_rate() < 0.2, "{missed:?}");
}
