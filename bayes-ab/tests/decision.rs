//! The decision rule, the sequential-safe mode and the A/A simulation.

use std::time::Duration;

use bayes_ab::{
    AaConfig, BayesError, ContinueReason, Counts, DecisionRule, GuardrailKind, GuardrailVerdict,
    InconclusiveReason, Recommendation, RollbackReason, StoppingMode, confidence_sequence,
    simulate_aa,
};
use metered_clock::Timestamp;
use rand::{SeedableRng, rngs::StdRng};

const DAY_MS: u64 = 86_400_000;

fn counts(s: u64, n: u64) -> Counts {
    Counts::new(s, n).unwrap()
}

fn at(days: u64) -> Timestamp {
    Timestamp::from_unix_millis(days * DAY_MS)
}

fn bayesian_rule() -> DecisionRule {
    DecisionRule::builder()
        .stopping(StoppingMode::bayesian(0.95, 0.001).unwrap())
        .min_trials_per_arm(500)
        .max_duration(Duration::from_secs(14 * 86_400))
        .build()
        .unwrap()
}

fn sequential_rule() -> DecisionRule {
    DecisionRule::builder()
        .stopping(StoppingMode::sequential(0.05, 10_000.0).unwrap())
        .min_trials_per_arm(500)
        .max_duration(Duration::from_secs(14 * 86_400))
        .build()
        .unwrap()
}

/// (rule, champion, challenger, day, expected decision)
#[test]
fn decisions_follow_the_rule() {
    let cases: Vec<(&str, DecisionRule, Counts, Counts, u64, Recommendation)> = vec![
        (
            "below minimum sample",
            bayesian_rule(),
            counts(10, 100),
            counts(40, 100),
            1,
            Recommendation::Continue {
                reason: ContinueReason::MinimumSample,
            },
        ),
        (
            "below minimum sample after max duration",
            bayesian_rule(),
            counts(10, 100),
            counts(40, 100),
            20,
            Recommendation::Inconclusive {
                reason: InconclusiveReason::MaxDuration,
            },
        ),
        (
            "clear winner",
            bayesian_rule(),
            counts(1000, 10_000),
            counts(1200, 10_000),
            3,
            Recommendation::Winner,
        ),
        (
            "clear loser",
            bayesian_rule(),
            counts(1200, 10_000),
            counts(1000, 10_000),
            3,
            Recommendation::Rollback {
                reason: RollbackReason::ChallengerWorse,
            },
        ),
        (
            "undecided",
            bayesian_rule(),
            counts(100, 1_000),
            counts(105, 1_000),
            3,
            Recommendation::Continue {
                reason: ContinueReason::NotConclusive,
            },
        ),
        (
            "undecided at max duration",
            bayesian_rule(),
            counts(100, 1_000),
            counts(105, 1_000),
            14,
            Recommendation::Inconclusive {
                reason: InconclusiveReason::MaxDuration,
            },
        ),
        (
            "equivalent: both losses below the threshold of caring",
            bayesian_rule(),
            counts(10_000, 100_000),
            counts(10_010, 100_000),
            3,
            Recommendation::Inconclusive {
                reason: InconclusiveReason::Equivalent,
            },
        ),
        (
            "sequential winner",
            sequential_rule(),
            counts(1000, 10_000),
            counts(1200, 10_000),
            3,
            Recommendation::Winner,
        ),
        (
            "sequential loser",
            sequential_rule(),
            counts(1200, 10_000),
            counts(1000, 10_000),
            3,
            Recommendation::Rollback {
                reason: RollbackReason::ChallengerWorse,
            },
        ),
        // P(B > A) = 0.989 passes a Bayesian 95 % rule but not the always-valid sequence.
        (
            "sequential is more demanding",
            sequential_rule(),
            counts(1000, 10_000),
            counts(1100, 10_000),
            3,
            Recommendation::Continue {
                reason: ContinueReason::NotConclusive,
            },
        ),
    ];
    for (what, rule, a, b, day, want) in cases {
        let e = rule.evaluate(a, b, at(0), at(day), &[]);
        assert_eq!(e.decision, want, "{what}");
    }
    let labels = [
        Recommendation::Continue {
            reason: ContinueReason::NotConclusive,
        }
        .label(),
        Recommendation::Winner.label(),
        Recommendation::Inconclusive {
            reason: InconclusiveReason::Equivalent,
        }
        .label(),
        Recommendation::Rollback {
            reason: RollbackReason::ChallengerWorse,
        }
        .label(),
    ];
    assert_eq!(labels, ["continue", "winner", "inconclusive", "rollback"]);
}

#[test]
fn a_breached_guardrail_rolls_back_even_below_the_minimum_sample() {
    let breach = GuardrailVerdict {
        kind: GuardrailKind::ErrorRateAbsolute,
        breached: true,
        observed: 0.05,
        limit: 0.01,
        probability: Some(0.999),
        interval: None,
    };
    let ok = GuardrailVerdict {
        breached: false,
        ..breach.clone()
    };
    let e = bayesian_rule().evaluate(
        counts(1, 10),
        counts(1, 10),
        at(0),
        at(1),
        &[ok.clone(), breach.clone()],
    );
    assert_eq!(
        e.decision,
        Recommendation::Rollback {
            reason: RollbackReason::Guardrail(breach)
        }
    );
    let e = bayesian_rule().evaluate(counts(1, 10), counts(1, 10), at(0), at(1), &[ok]);
    assert_eq!(
        e.decision,
        Recommendation::Continue {
            reason: ContinueReason::MinimumSample
        }
    );
}

#[test]
fn confidence_sequence_is_wider_than_the_fixed_horizon_interval_and_shrinks() {
    let small =
        confidence_sequence(counts(100, 1_000), counts(110, 1_000), 0.05, 10_000.0).unwrap();
    let large = confidence_sequence(
        counts(10_000, 100_000),
        counts(11_000, 100_000),
        0.05,
        10_000.0,
    )
    .unwrap();
    assert!(small.contains(0.01) && large.contains(0.01));
    assert!(large.width() < small.width() / 5.0);
    // Fixed-horizon 95 % half-width at n = 1,000 per arm is 1.96 · 0.0137 ≈ 0.027.
    assert!(small.width() / 2.0 > 0.027);
    let empty = confidence_sequence(Counts::ZERO, counts(1, 2), 0.05, 10_000.0).unwrap();
    assert_eq!((empty.lower, empty.upper), (-1.0, 1.0));
}

#[test]
fn bad_settings_are_typed_errors() {
    assert!(matches!(
        StoppingMode::bayesian(1.0, 0.01),
        Err(BayesError::InvalidProbability { .. })
    ));
    assert!(matches!(
        StoppingMode::bayesian(f64::NAN, 0.01),
        Err(BayesError::InvalidProbability { .. })
    ));
    assert!(matches!(
        StoppingMode::bayesian(0.95, -1.0),
        Err(BayesError::InvalidParameter { .. })
    ));
    assert!(matches!(
        StoppingMode::bayesian(0.95, f64::NAN),
        Err(BayesError::InvalidParameter { .. })
    ));
    assert!(matches!(
        StoppingMode::sequential(0.0, 100.0),
        Err(BayesError::InvalidProbability { .. })
    ));
    assert!(matches!(
        StoppingMode::sequential(0.05, 0.5),
        Err(BayesError::InvalidParameter { .. })
    ));
    assert!(matches!(
        DecisionRule::builder().max_duration(Duration::ZERO).build(),
        Err(BayesError::InvalidParameter {
            name: "max_duration",
            ..
        })
    ));
    // A hand-built invalid mode is caught by the builder too.
    assert!(
        DecisionRule::builder()
            .stopping(StoppingMode::Sequential {
                alpha: 2.0,
                tuning_sample: 10.0
            })
            .build()
            .is_err()
    );
    assert!(matches!(
        confidence_sequence(Counts::ZERO, Counts::ZERO, 1.5, 10.0),
        Err(BayesError::InvalidProbability { .. })
    ));
}

/// A/A: both arms convert at 10 %; 20 looks of 500 visitors per arm. In debug builds the test
/// runs a smaller number of experiments; `examples/ab_test.rs --aa` reports the full figures.
#[test]
fn aa_simulation_sequential_mode_keeps_the_false_positive_rate() {
    let experiments = if cfg!(debug_assertions) { 300 } else { 2_000 };
    let config = AaConfig {
        experiments,
        looks: 20,
        trials_per_look: 500,
        rate: 0.1,
    };
    let naive = StoppingMode::bayesian(0.95, f64::INFINITY).unwrap();
    let sequential = StoppingMode::sequential(0.05, 10_000.0).unwrap();
    let report = simulate_aa(
        &config,
        &[naive, sequential],
        &mut StdRng::seed_from_u64(2024),
    )
    .unwrap();
    let (naive, sequential) = (report[0], report[1]);
    // Naive peeking at P > 95 % in either direction declares a difference far more often than
    // 10 % (a single fixed-horizon look of this two-sided rule would be ~10 %).
    assert!(
        naive.rate_peeking() > 0.2,
        "naive peeking rate {}",
        naive.rate_peeking()
    );
    assert!(
        naive.rate_final_look() < 0.2,
        "naive final look {}",
        naive.rate_final_look()
    );
    // The always-valid sequence stays below alpha = 5 % despite peeking. Its true rate is
    // ~1-2 %; with n = 300, P(observed > 5 %) is below 1e-4.
    assert!(
        sequential.rate_peeking() <= 0.05,
        "sequential rate {}",
        sequential.rate_peeking()
    );
    // Deterministic for a seed.
    let again = simulate_aa(
        &config,
        &[report[0].mode, report[1].mode],
        &mut StdRng::seed_from_u64(2024),
    )
    .unwrap();
    assert_eq!(report, again);
}

#[test]
fn aa_simulation_rejects_bad_configs() {
    let ok = AaConfig {
        experiments: 10,
        looks: 2,
        trials_per_look: 10,
        rate: 0.1,
    };
    let mode = [StoppingMode::sequential(0.05, 1_000.0).unwrap()];
    let mut rng = StdRng::seed_from_u64(0);
    for bad in [
        AaConfig {
            experiments: 0,
            ..ok
        },
        AaConfig { looks: 0, ..ok },
        AaConfig {
            trials_per_look: 0,
            ..ok
        },
        AaConfig { rate: 0.0, ..ok },
        AaConfig {
            rate: f64::NAN,
            ..ok
        },
    ] {
        assert!(simulate_aa(&bad, &mode, &mut rng).is_err(), "{bad:?}");
    }
    let bad_mode = [StoppingMode::Bayesian {
        prob_threshold: 1.2,
        loss_threshold: 1.0,
    }];
    assert!(simulate_aa(&ok, &bad_mode, &mut rng).is_err());
}
