//! Simulated rollouts: false rollbacks of A/A canaries and detection of a doubled error rate.
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
