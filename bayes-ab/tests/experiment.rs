//! Experiment state: create / record / evaluate, serialization, merging, and the store.

use std::sync::Arc;
use std::time::Duration;

use bayes_ab::{
    ArmState, BayesError, DecisionRule, ErrorRateGuardrail, Experiment, ExperimentEvaluation,
    ExperimentState, ExperimentStore, Guardrails, InMemoryExperimentStore, InconclusiveReason,
    Recommendation, RollbackReason, StoppingMode, TrafficSplit, UnitOutcome,
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
    // Any split is an experiment: a champion and up to 63 challengers.
    let three = TrafficSplit::new(vec![4_000, 3_000, 3_000]).unwrap();
    let mut s3 = ExperimentState::new("x", three, Timestamp::EPOCH).unwrap();
    assert_eq!(s3.arms().len(), 3);
    assert!(matches!(
        s3.record(3, UnitOutcome::default()),
        Err(BayesError::UnknownArm { index: 3, arms: 3 })
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

/// Records `units` per arm, arm `k` converting at `rates[k]` percent and erring at
/// `errors[k]` percent, interleaved so that every arm grows at the same pace.
fn record_arms(exp: &mut Experiment, units: u64, rates: &[u64], errors: &[u64]) {
    for i in 0..units {
        let n = i % 100;
        for arm in 0..rates.len() {
            exp.record(arm, outcome(n < rates[arm], n < errors[arm], 50))
                .unwrap();
        }
    }
}

fn three_arms(id: &str, guardrails: Guardrails, clock: Arc<ManualClock>) -> Experiment {
    let split = TrafficSplit::new(vec![3_334, 3_333, 3_333]).unwrap();
    Experiment::create(id, split, rule(), guardrails, clock).unwrap()
}

#[test]
fn every_challenger_is_judged_and_the_winner_leads() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(1_000)));
    let mut exp = three_arms("k-arms", Guardrails::default(), clock.clone());
    // Champion 10 %, challenger 1 the same, challenger 2 at 15 %.
    record_arms(&mut exp, 2_000, &[10, 10, 15], &[0, 0, 0]);
    clock.advance(Duration::from_secs(3_600));
    let e = exp.evaluate().unwrap();
    assert_eq!(e.challengers.len(), 2);
    assert_eq!(
        e.challengers.iter().map(|c| c.arm).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_ne!(e.challengers[0].evaluation.decision, Recommendation::Winner);
    assert_eq!(e.challengers[1].evaluation.decision, Recommendation::Winner);
    assert_eq!(e.lead, 2);
    assert_eq!(e.evaluation, e.challengers[1].evaluation);
    assert!(!e.srm.unwrap().mismatch);
    // The same data in the other order: the lead follows the winner, not the arm number.
    let mut swapped = three_arms("k-arms-swapped", Guardrails::default(), clock.clone());
    record_arms(&mut swapped, 2_000, &[10, 15, 10], &[0, 0, 0]);
    let e = swapped.evaluate().unwrap();
    assert_eq!((e.lead, e.evaluation.decision), (1, Recommendation::Winner));
}

#[test]
fn a_challenger_that_breaches_a_guardrail_leads_even_beside_a_winner() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(1_000)));
    let guardrails = Guardrails {
        error_rate: Some(ErrorRateGuardrail::relative(0.5, 0.95).unwrap()),
        latency: None,
    };
    let mut exp = three_arms("k-rollback", guardrails, clock.clone());
    // Challenger 1 wins on conversions, challenger 2 errs ten times as often as the champion.
    record_arms(&mut exp, 2_000, &[10, 15, 10], &[1, 1, 10]);
    clock.advance(Duration::from_secs(3_600));
    let e = exp.evaluate().unwrap();
    assert_eq!(e.challengers[0].evaluation.decision, Recommendation::Winner);
    assert!(matches!(
        e.challengers[1].evaluation.decision,
        Recommendation::Rollback { .. }
    ));
    assert_eq!(e.lead, 2);
    assert!(matches!(
        e.evaluation.decision,
        Recommendation::Rollback { .. }
    ));
    assert_eq!(e.guardrails, e.challengers[1].guardrails);
    assert!(e.guardrails.iter().any(|v| v.breached));
}

#[test]
fn sample_ratio_mismatch_across_three_arms_stops_every_challenger() {
    let mut s = ExperimentState::new(
        "k-srm",
        TrafficSplit::new(vec![3_334, 3_333, 3_333]).unwrap(),
        Timestamp::EPOCH,
    )
    .unwrap();
    // Arm 2 gets half the traffic it should.
    for i in 0..5_000u64 {
        let arm = [0, 1, 0, 1, 2][usize::try_from(i % 5).unwrap()];
        s.record(arm, outcome((i / 5) % 10 == 0, false, 50))
            .unwrap();
    }
    let e = s
        .evaluate(&rule(), &Guardrails::default(), Timestamp::EPOCH)
        .unwrap();
    assert!(e.srm.unwrap().mismatch);
    for c in &e.challengers {
        assert_eq!(
            c.evaluation.decision,
            Recommendation::Inconclusive {
                reason: InconclusiveReason::SampleRatioMismatch
            }
        );
    }
}

#[test]
fn two_arm_evaluations_keep_their_shape() {
    let mut s = ExperimentState::new("two", split(), Timestamp::EPOCH).unwrap();
    for i in 0..400u64 {
        s.record(usize::from(i % 2 == 1), outcome(i % 7 == 0, false, 50))
            .unwrap();
    }
    let e = s
        .evaluate(&rule(), &Guardrails::default(), Timestamp::EPOCH)
        .unwrap();
    assert_eq!((e.lead, e.challengers.len()), (1, 1));
    assert_eq!(e.challengers[0].evaluation, e.evaluation);
    // An evaluation serialized before `lead` and `challengers` existed still reads.
    let mut json = serde_json::to_value(&e).unwrap();
    let object = json.as_object_mut().unwrap();
    object.remove("lead");
    object.remove("challengers");
    let old: ExperimentEvaluation = serde_json::from_value(json).unwrap();
    assert_eq!((old.lead, old.challengers.len()), (1, 0));
    assert_eq!(old.evaluation, e.evaluation);
}
