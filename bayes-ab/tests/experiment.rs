//! Experiment state: create / record / evaluate, serialization, merging, and the store.

use std::sync::Arc;
use std::time::Duration;

use bayes_ab::{
    ArmState, BayesError, DecisionRule, ErrorRateGuardrail, Experiment, ExperimentState,
    ExperimentStore, Guardrails, InMemoryExperimentStore, InconclusiveReason, Recommendation,
    RollbackReason, StoppingMode, TrafficSplit, UnitOutcome,
};
use metered_clock::{Clock, ManualClock, Timestamp};

fn split() -> TrafficSplit {
    TrafficSplit::new(vec![5_000, 5_000]).unwrap()
}

fn outcome(converted: bool, error: bool, latency_ms: u64) -> UnitOutcome {
    UnitOutcome {
        converted,
        error,
        latency: Some(Duration::from_millis(latency_ms)),
        value: Some(if converted { 20.0 } else { 0.0 }),
    }
}

fn rule() -> DecisionRule {
    DecisionRule::builder()
        .stopping(StoppingMode::sequential(0.05, 10_000.0).unwrap())
        .min_trials_per_arm(200)
        .max_duration(Duration::from_secs(7 * 86_400))
        .build()
        .unwrap()
}

#[test]
fn a_better_challenger_wins_and_a_failing_one_is_rolled_back() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(1_000)));
    let mut exp = Experiment::create(
        "checkout",
        split(),
        rule(),
        Guardrails::default(),
        clock.clone(),
    )
    .unwrap();
    for i in 0..4_000u64 {
        // Champion converts 10 %, challenger 15 %.
        let arm = usize::from(i % 2 == 1);
        let converted = (i / 2) % 100 < if arm == 0 { 10 } else { 15 };
        exp.record(arm, outcome(converted, false, 50)).unwrap();
    }
    clock.advance(Duration::from_secs(3_600));
    let e = exp.evaluate().unwrap();
    assert_eq!(e.evaluation.decision, Recommendation::Winner);
    assert!(!e.srm.unwrap().mismatch);

    let guardrails = Guardrails {
        error_rate: Some(ErrorRateGuardrail::relative(0.5, 0.95).unwrap()),
        latency: None,
    };
    let mut bad =
        Experiment::create("checkout-2", split(), rule(), guardrails, clock.clone()).unwrap();
    for i in 0..400u64 {
        let arm = usize::from(i % 2 == 1);
        let error = (i / 2) % 100 < if arm == 0 { 1 } else { 10 };
        bad.record(arm, outcome(false, error, 50)).unwrap();
    }
    let e = bad.evaluate().unwrap();
    match e.evaluation.decision {
        Recommendation::Rollback {
            reason: RollbackReason::Guardrail(v),
        } => assert!(v.breached),
        other => panic!("expected a guardrail rollback, got {other:?}"),
    }
}

#[test]
fn sample_ratio_mismatch_stops_the_experiment() {
    let mut s = ExperimentState::new("srm", split(), Timestamp::EPOCH).unwrap();
    for i in 0..3_000u64 {
        let arm = usize::from(i % 3 == 0); // one third to the challenger instead of half
        s.record(arm, outcome(i % 10 == 0, false, 5)).unwrap();
    }
    let e = s
        .evaluate(
            &rule(),
            &Guardrails::default(),
            Timestamp::from_unix_millis(60_000),
        )
        .unwrap();
    assert!(e.srm.unwrap().mismatch);
    assert_eq!(
        e.evaluation.decision,
        Recommendation::Inconclusive {
            reason: InconclusiveReason::SampleRatioMismatch
        }
    );
}

#[test]
fn units_in_an_arm_without_traffic_are_an_error() {
    let ramp = TrafficSplit::new(vec![10_000, 0]).unwrap();
    let mut s = ExperimentState::new("ramp", ramp, Timestamp::EPOCH).unwrap();
    s.record(0, outcome(true, false, 1)).unwrap();
    assert!(
        s.evaluate(&rule(), &Guardrails::default(), Timestamp::EPOCH)
            .is_ok()
    );
    s.record(1, outcome(true, false, 1)).unwrap();
    assert!(matches!(
        s.evaluate(&rule(), &Guardrails::default(), Timestamp::EPOCH),
        Err(BayesError::InvalidWeights { .. })
    ));
}

#[test]
fn max_duration_comes_from_the_clock() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(0)));
    let mut exp = Experiment::create(
        "slow",
        split(),
        rule(),
        Guardrails::default(),
        clock.clone(),
    )
    .unwrap();
    for i in 0..1_000u64 {
        exp.record(
            usize::from(i % 2 == 1),
            outcome((i / 2) % 20 == 0, false, 5),
        )
        .unwrap();
    }
    assert!(!exp.evaluate().unwrap().evaluation.decision.is_final());
    clock.advance(Duration::from_secs(7 * 86_400));
    assert_eq!(
        exp.evaluate().unwrap().evaluation.decision,
        Recommendation::Inconclusive {
            reason: InconclusiveReason::MaxDuration
        }
    );
    assert_eq!(exp.state().started_at(), Timestamp::from_unix_millis(0));
    assert_eq!(clock.now(), Timestamp::from_unix_millis(7 * 86_400_000));
}

#[test]
fn partial_states_merge_to_the_whole() {
    let mut whole = ExperimentState::new("m", split(), Timestamp::from_unix_millis(5)).unwrap();
    let mut left = ExperimentState::new("m", split(), Timestamp::from_unix_millis(5)).unwrap();
    let mut right = ExperimentState::new("m", split(), Timestamp::from_unix_millis(9)).unwrap();
    for i in 0..500u64 {
        let o = outcome(i % 7 == 0, i % 50 == 0, 10 + i % 90);
        let arm = usize::from(i % 2 == 0);
        whole.record(arm, o).unwrap();
        if i % 3 == 0 {
            left.record(arm, o).unwrap()
        } else {
            right.record(arm, o).unwrap()
        }
    }
    left.merge(&right).unwrap();
    assert_eq!(left.arms()[0].conversions, whole.arms()[0].conversions);
    assert_eq!(left.arms()[1].errors, whole.arms()[1].errors);
    assert_eq!(left.arms()[1].latency, whole.arms()[1].latency);
    assert_eq!(left.arms()[0].value.count(), whole.arms()[0].value.count());
    assert!(
        (left.arms()[0].value.mean().unwrap() - whole.arms()[0].value.mean().unwrap()).abs()
            < 1e-12
    );
    assert_eq!(left.started_at(), Timestamp::from_unix_millis(5));
    // Other experiments do not merge, and a failed merge changes nothing.
    let other = ExperimentState::new("n", split(), Timestamp::EPOCH).unwrap();
    let before = left.clone();
    assert!(matches!(
        left.merge(&other),
        Err(BayesError::Incompatible { .. })
    ));
    assert_eq!(left, before);
}

#[test]
fn state_round_trips_through_json() {
    let mut s = ExperimentState::new("json", split(), Timestamp::from_unix_millis(42)).unwrap();
    for i in 0..300u64 {
        s.record(
            usize::from(i % 2 == 0),
            outcome(i % 4 == 0, i % 30 == 0, 1 + i),
        )
        .unwrap();
    }
    let json = serde_json::to_string(&s).unwrap();
    let back: ExperimentState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    // Invalid counts are refused on the way in.
    let bad = json.replacen("\"successes\":", "\"successes\":9999", 1);
    assert!(serde_json::from_str::<ExperimentState>(&bad).is_err());
}

#[test]
fn bad_records_change_nothing() {
    let mut s = ExperimentState::new("bad", split(), Timestamp::EPOCH).unwrap();
    let before = s.clone();
    assert!(matches!(
        s.record(2, UnitOutcome::default()),
        Err(BayesError::UnknownArm { index: 2, arms: 2 })
    ));
    let nan = UnitOutcome {
        converted: true,
        value: Some(f64::NAN),
        ..UnitOutcome::default()
    };
    assert!(matches!(
        s.record(0, nan),
        Err(BayesError::InvalidParameter { .. })
    ));
    assert_eq!(s, before);
    assert!(matches!(
        ExperimentState::new("", split(), Timestamp::EPOCH),
        Err(BayesError::InvalidParameter { .. })
    ));
    let three = TrafficSplit::new(vec![4_000, 3_000, 3_000]).unwrap();
    assert!(matches!(
        ExperimentState::new("x", three, Timestamp::EPOCH),
        Err(BayesError::ArmCount { .. })
    ));
    let mut arm = ArmState::default();
    assert!(
        arm.record(UnitOutcome {
            value: Some(f64::INFINITY),
            ..UnitOutcome::default()
        })
        .is_err()
    );
    assert_eq!(arm, ArmState::default());
}

#[tokio::test]
async fn in_memory_store_versions_and_merges() {
    let store = InMemoryExperimentStore::new();
    let s = ExperimentState::new("store", split(), Timestamp::EPOCH).unwrap();
    assert_eq!(store.create(s.clone()).await.unwrap(), 1);
    let err = store.create(s.clone()).await.unwrap_err();
    assert!(matches!(err, BayesError::ExperimentExists { .. }) && !err.is_retryable());
    let (mut loaded, v) = store.load("store").await.unwrap();
    loaded.record(0, outcome(true, false, 3)).unwrap();
    assert_eq!(store.save(&loaded, v).await.unwrap(), 2);
    // A stale writer loses.
    let stale = store.save(&loaded, v).await.unwrap_err();
    assert!(matches!(
        stale,
        BayesError::VersionConflict {
            expected: 1,
            found: 2,
            ..
        }
    ));
    // Deltas from elsewhere add up.
    let mut delta = ExperimentState::new("store", split(), Timestamp::EPOCH).unwrap();
    delta.record(1, outcome(false, true, 9)).unwrap();
    assert_eq!(store.merge(&delta).await.unwrap(), 3);
    let (now, _) = store.load("store").await.unwrap();
    assert_eq!(now.arms()[0].conversions.trials(), 1);
    assert_eq!(now.arms()[1].errors.successes(), 1);
    assert!(matches!(
        store.load("missing").await,
        Err(BayesError::ExperimentNotFound { .. })
    ));
    assert!(!BayesError::ExperimentNotFound { id: "x".into() }.is_retryable());
}

/// Optimistic concurrency: writers that load, record and save, retrying on a version
/// conflict, never lose an update; writers that send deltas through `merge` need no retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The test is the driver here: it spawns racing writers to exercise the store, which
// itself never spawns.
#[allow(clippy::disallowed_methods)]
async fn concurrent_writers_lose_no_update() {
    let store = Arc::new(InMemoryExperimentStore::new());
    store
        .create(ExperimentState::new("race", split(), Timestamp::EPOCH).unwrap())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for w in 0..8u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u32;
            for i in 0..50u64 {
                loop {
                    let (mut s, v) = store.load("race").await.unwrap();
                    s.record(usize::from((w + i) % 2 == 0), outcome(i % 3 == 0, false, 1))
                        .unwrap();
                    match store.save(&s, v).await {
                        Ok(_) => break,
                        Err(e) if e.is_retryable() => {
                            conflicts += 1;
                            tokio::task::yield_now().await;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                let mut delta = ExperimentState::new("race", split(), Timestamp::EPOCH).unwrap();
                delta.record(0, outcome(true, true, 2)).unwrap();
                store.merge(&delta).await.unwrap();
            }
            conflicts
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (s, _) = store.load("race").await.unwrap();
    let total: u64 = s.arms().iter().map(|a| a.conversions.trials()).sum();
    assert_eq!(total, 8 * 50 * 2);
    assert_eq!(s.arms()[0].errors.successes(), 8 * 50);
}
