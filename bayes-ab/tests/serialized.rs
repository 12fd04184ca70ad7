//! Golden tests of the serialized forms that leave the process: [`ExperimentState`] (what an
//! [`ExperimentStore`](bayes_ab::ExperimentStore) persists, [`UnitOutcome`] included) and the
//! [`Recommendation`] an [`ExperimentEvaluation`](bayes_ab::ExperimentEvaluation) carries to
//! API clients. Renaming a Rust type is free; renaming a variant or a field changes the bytes
//! pinned here, and must fail here first.

use std::fmt::Debug;
use std::time::Duration;

use bayes_ab::{
    BayesError, ContinueReason, DecisionRule, ExperimentState, GuardrailKind, GuardrailVerdict,
    Guardrails, InconclusiveReason, Recommendation, RollbackReason, TrafficSplit, UnitOutcome,
};
use metered_clock::Timestamp;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Serializes `value`, compares with `expect`, and reads `expect` back into `value`.
fn check<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T, expect: &str) {
    let json = serde_json::to_string(value).unwrap();
    assert_eq!(json, expect, "the serialized form of {value:?} changed");
    let back: T = serde_json::from_str(expect).unwrap();
    assert_eq!(&back, value, "the pinned form no longer reads back");
}

#[test]
fn experiment_state_is_pinned() {
    let mut s = ExperimentState::new(
        "checkout-v2",
        TrafficSplit::new(vec![5_000, 5_000]).unwrap(),
        Timestamp::from_unix_millis(1_700_000_000_000),
    )
    .unwrap();
    let champion = UnitOutcome {
        converted: true,
        value: Some(20.0),
        ..UnitOutcome::default()
    };
    let challenger = UnitOutcome {
        error: true,
        latency: Some(Duration::from_millis(12)),
        ..UnitOutcome::default()
    };
    s.record(0, champion).unwrap();
    s.record(1, challenger).unwrap();
    // The latency sketches are HdrHistogram V2 encodings (empty for the champion).
    check(
        &s,
        concat!(
            r#"{"id":"checkout-v2","split":[5000,5000],"started_at":1700000000000,"arms":["#,
            r#"{"conversions":{"successes":1,"trials":1},"errors":{"successes":0,"trials":1},"#,
            r#""latency":[28,132,147,19,0,0,0,1,0,0,0,0,0,0,0,3,0,0,0,0,0,0,0,1,0,0,0,0,214,147,164,0,63,240,0,0,0,0,0,0,0],"#,
            r#""value":{"count":1,"mean":20.0,"m2":0.0}},"#,
            r#"{"conversions":{"successes":0,"trials":1},"errors":{"successes":1,"trials":1},"#,
            r#""latency":[28,132,147,19,0,0,0,3,0,0,0,0,0,0,0,3,0,0,0,0,0,0,0,1,0,0,0,0,214,147,164,0,63,240,0,0,0,0,0,0,183,71,2],"#,
            r#""value":{"count":0,"mean":0.0,"m2":0.0}}],"#,
            // CUPED's statistics of the primary conversion: one pair per challenger.
            r#""cuped":[{"challenger_share":0.5,"bounds":[0.0,1.0],"#,
            r#""champion":{"count":1,"mean_x":0.0,"mean_y":1.0,"m2_x":0.0,"m2_y":0.0,"c_xy":0.0},"#,
            r#""challenger":{"count":1,"mean_x":0.0,"mean_y":0.0,"m2_x":0.0,"m2_y":0.0,"c_xy":0.0},"#,
            r#""betting":{"count":2,"sum":0.25,"sum_squared_deviations":0.078125,"sum_lambda":1.0,"#,
            r#""sum_lambda_z":0.125,"sum_penalty":0.03923302105123889}}]}"#,
        ),
    );
}

#[test]
fn a_state_stored_before_cuped_still_reads_and_refuses_cuped() {
    let old = concat!(
        r#"{"id":"checkout-v2","split":[5000,5000],"started_at":1700000000000,"arms":["#,
        r#"{"conversions":{"successes":1,"trials":1},"errors":{"successes":0,"trials":0},"#,
        r#""latency":[28,132,147,19,0,0,0,1,0,0,0,0,0,0,0,3,0,0,0,0,0,0,0,1,0,0,0,0,214,147,164,0,63,240,0,0,0,0,0,0,0],"#,
        r#""value":{"count":0,"mean":0.0,"m2":0.0}},"#,
        r#"{"conversions":{"successes":0,"trials":1},"errors":{"successes":0,"trials":0},"#,
        r#""latency":[28,132,147,19,0,0,0,1,0,0,0,0,0,0,0,3,0,0,0,0,0,0,0,1,0,0,0,0,214,147,164,0,63,240,0,0,0,0,0,0,0],"#,
        r#""value":{"count":0,"mean":0.0,"m2":0.0}}]}"#,
    );
    let state: ExperimentState = serde_json::from_str(old).unwrap();
    assert!(state.cuped_pairs().is_empty());
    let now = Timestamp::from_unix_millis(1_700_000_000_001);
    let plain = DecisionRule::builder()
        .min_trials_per_arm(1)
        .build()
        .unwrap();
    assert!(state.evaluate(&plain, &Guardrails::default(), now).is_ok());
    let cuped = DecisionRule::builder()
        .min_trials_per_arm(1)
        .cuped(true)
        .build()
        .unwrap();
    assert!(matches!(
        state.evaluate(&cuped, &Guardrails::default(), now),
        Err(BayesError::Incompatible { .. })
    ));
    // A new delta (with CUPED statistics) still merges into it, as a service's recorder
    // does; the merged state has no CUPED statistics, and says so when asked for CUPED.
    let mut merged = state.clone();
    let mut delta = ExperimentState::new(
        "checkout-v2",
        TrafficSplit::new(vec![5_000, 5_000]).unwrap(),
        Timestamp::from_unix_millis(1_700_000_000_000),
    )
    .unwrap();
    delta.record(1, UnitOutcome::default()).unwrap();
    merged.merge(&delta).unwrap();
    assert_eq!(merged.arms()[1].conversions.trials(), 2);
    assert!(merged.cuped_pairs().is_empty());
    assert!(merged.evaluate(&plain, &Guardrails::default(), now).is_ok());
    assert!(
        merged
            .evaluate(&cuped, &Guardrails::default(), now)
            .is_err()
    );
}

#[test]
fn unit_outcome_is_pinned() {
    check(
        &UnitOutcome {
            converted: true,
            error: false,
            latency: Some(Duration::from_millis(1_500)),
            value: Some(2.5),
        },
        r#"{"converted":true,"error":false,"latency":{"secs":1,"nanos":500000000},"value":2.5}"#,
    );
}

#[test]
fn every_recommendation_is_pinned() {
    let breach = GuardrailVerdict {
        kind: GuardrailKind::ErrorRateRelative,
        breached: true,
        observed: 0.25,
        limit: 0.125,
        probability: Some(0.5),
        interval: None,
    };
    let cases = [
        (
            Recommendation::Continue {
                reason: ContinueReason::MinimumSample,
            },
            r#"{"Continue":{"reason":"MinimumSample"}}"#,
        ),
        (
            Recommendation::Continue {
                reason: ContinueReason::NotConclusive,
            },
            r#"{"Continue":{"reason":"NotConclusive"}}"#,
        ),
        (Recommendation::Winner, r#""Winner""#),
        (
            Recommendation::Inconclusive {
                reason: InconclusiveReason::Equivalent,
            },
            r#"{"Inconclusive":{"reason":"Equivalent"}}"#,
        ),
        (
            Recommendation::Inconclusive {
                reason: InconclusiveReason::MaxDuration,
            },
            r#"{"Inconclusive":{"reason":"MaxDuration"}}"#,
        ),
        (
            Recommendation::Inconclusive {
                reason: InconclusiveReason::SampleRatioMismatch,
            },
            r#"{"Inconclusive":{"reason":"SampleRatioMismatch"}}"#,
        ),
        (
            Recommendation::Inconclusive {
                reason: InconclusiveReason::CovariateImbalance,
            },
            r#"{"Inconclusive":{"reason":"CovariateImbalance"}}"#,
        ),
        (
            Recommendation::Rollback {
                reason: RollbackReason::ChallengerWorse,
            },
            r#"{"Rollback":{"reason":"ChallengerWorse"}}"#,
        ),
        (
            Recommendation::Rollback {
                reason: RollbackReason::Guardrail(breach),
            },
            concat!(
                r#"{"Rollback":{"reason":{"Guardrail":{"kind":"ErrorRateRelative","breached":true,"#,
                r#""observed":0.25,"limit":0.125,"probability":0.5,"interval":null}}}}"#,
            ),
        ),
    ];
    for (value, expect) in &cases {
        check(value, expect);
    }
}

#[test]
fn states_with_metrics_round_trip_and_invalid_declarations_do_not_read() {
    use bayes_ab::{Correction, EffectPrior, Metric, MetricSet};
    let set = MetricSet::new(
        vec![
            Metric::conversion("signup").unwrap(),
            Metric::continuous("revenue")
                .unwrap()
                .with_cuped(true)
                .with_bounds(0.0, 100.0)
                .unwrap()
                .with_effect_prior(EffectPrior::normal(0.0, 2.0).unwrap()),
        ],
        Correction::BenjaminiHochberg,
        0.05,
    )
    .unwrap();
    let mut s = ExperimentState::new(
        "metrics",
        TrafficSplit::new(vec![5_000, 5_000]).unwrap(),
        Timestamp::from_unix_millis(0),
    )
    .unwrap()
    .with_metrics(set)
    .unwrap();
    for i in 0..20u32 {
        let arm = (i % 2) as usize;
        let x = f64::from(i);
        s.record_with_covariate(arm, UnitOutcome::default(), Some(x))
            .unwrap();
        s.record_metric(arm, 0, f64::from(i % 3 == 0), None)
            .unwrap();
        s.record_metric(arm, 1, 2.0 * x, Some(x)).unwrap();
    }
    let json = serde_json::to_string(&s).unwrap();
    let back: ExperimentState = serde_json::from_str(&json).unwrap();
    // (serde_json may read a float back an ulp off, so compare what is exact.)
    assert_eq!(back.metrics(), s.metrics());
    let counts = |state: &ExperimentState| -> Vec<u64> {
        let pairs = state.cuped_pairs().iter();
        let metric_pairs = (0..2).filter_map(|m| state.metric_pair(m, 1));
        pairs
            .chain(metric_pairs)
            .flat_map(|p| [p.champion().count(), p.challenger().count()])
            .collect()
    };
    assert_eq!(counts(&back), counts(&s));
    assert_eq!(counts(&s), [10, 10, 10, 10, 10, 10]);
    // Tampered declarations and statistics are refused on the way in.
    for (from, to) in [
        (r#""challenger_share":0.5"#, r#""challenger_share":1.5"#),
        (r#""sd":2.0"#, r#""sd":0.0"#),
        (r#""alpha":0.05"#, r#""alpha":1.0"#),
        (r#""name":"revenue""#, r#""name":"signup""#),
        (r#""bounds":[0.0,100.0]"#, r#""bounds":[100.0,0.0]"#),
    ] {
        assert!(json.contains(from), "{from} not in {json}");
        let bad = json.replacen(from, to, 1);
        assert!(
            serde_json::from_str::<ExperimentState>(&bad).is_err(),
            "{to} was accepted"
        );
    }
}
