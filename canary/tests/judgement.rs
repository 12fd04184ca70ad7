//! Health judgement: latency quantiles, the Mann-Whitney judge, sticky routing and SRM, and
//! the manager's batch operations.

use std::time::Duration;

use canary::*;
use metered_clock::Timestamp;
use proptest::prelude::*;

const MINUTE: Duration = Duration::from_secs(60);

/// Latencies cycling through 0.1..=100 ms in 0.1 ms steps, `n` of them, times `factor`.
fn latencies(n: u64, factor: u64) -> LatencySketch {
    let mut s = LatencySketch::new();
    for i in 0..n {
        s.record(Duration::from_micros((i % 1000 + 1) * 100 * factor));
    }
    s
}

fn latency_policy(check: MetricCheck) -> HealthPolicy {
    HealthPolicy::builder()
        .check(check)
        .srm_p_value(None)
        .build()
        .unwrap()
}

fn judge_latency(
    policy: &HealthPolicy,
    canary: LatencySketch,
    baseline: Option<LatencySketch>,
) -> Verdict {
    let step = Step::new(10, MINUTE, 100);
    let c = ArmObservation::counts(canary.count(), 0).with_latency(canary);
    let obs = match baseline {
        Some(b) => Observations::new(c, ArmObservation::counts(b.count(), 0).with_latency(b)),
        None => Observations::canary_only(c),
    };
    policy.judge(&step, &obs).unwrap().verdict
}

#[test]
fn p95_against_an_absolute_limit() {
    // p95 of 0.1..=100 ms is 95 ms.
    let check = |limit_ms: f64, n: u64| {
        judge_latency(
            &latency_policy(MetricCheck::latency_max(0.95, limit_ms * 1000.0)),
            latencies(n, 1),
            None,
        )
    };
    assert_eq!(check(120.0, 10_000), Verdict::Healthy);
    assert_eq!(check(80.0, 10_000), Verdict::Unhealthy);
    // At the limit a breach is a coin flip: below `pass_below` (0.8), so it passes.
    assert_eq!(check(95.0, 10_000), Verdict::Healthy);
    // Just below it a breach is likely (> 0.8) but not sure (< 0.99): undecided.
    assert_eq!(check(94.65, 10_000), Verdict::Inconclusive);
    // With more data the same gap is sure.
    assert_eq!(check(94.65, 1_000_000), Verdict::Unhealthy);
    // Without latencies there is nothing to judge.
    let policy = latency_policy(MetricCheck::latency_max(0.95, 1e5));
    let obs = Observations::canary_only(ArmObservation::counts(10_000, 0));
    assert_eq!(
        policy
            .judge(&Step::new(10, MINUTE, 100), &obs)
            .unwrap()
            .verdict,
        Verdict::InsufficientData
    );
}

#[test]
fn p95_relative_to_the_baseline() {
    let policy = latency_policy(MetricCheck::latency_relative(0.95, 0.10));
    assert_eq!(
        judge_latency(&policy, latencies(10_000, 1), Some(latencies(90_000, 1))),
        Verdict::Healthy
    );
    assert_eq!(
        judge_latency(&policy, latencies(10_000, 2), Some(latencies(90_000, 1))),
        Verdict::Unhealthy
    );
    assert_eq!(
        judge_latency(&policy, latencies(10_000, 1), None),
        Verdict::InsufficientData
    );
}

#[test]
fn mann_whitney_judge_scores_the_check() {
    let base: Vec<f64> = (0..400).map(|i| f64::from(i % 97)).collect();
    let shifted: Vec<f64> = base.iter().map(|x| x * 1.5 + 5.0).collect();
    let policy = HealthPolicy::builder()
        .check(MetricCheck::error_rate_max(0.05))
        .mann_whitney(MannWhitneyJudge::default())
        .srm_p_value(None)
        .build()
        .unwrap();
    let step = Step::new(10, MINUTE, 100);
    let judge = |metrics: Vec<MetricSamples>| {
        let obs = Observations::canary_only(ArmObservation::counts(1_000, 1)).with_samples(metrics);
        policy.judge(&step, &obs).unwrap()
    };
    let same = |name: &str| MetricSamples::new(name, base.clone(), base.clone());
    let worse = |name: &str| MetricSamples::new(name, base.clone(), shifted.clone());

    let r = judge((0..20).map(|i| same(&format!("m{i}"))).collect());
    assert_eq!(
        (r.verdict, r.judge.as_ref().unwrap().score),
        (Verdict::Healthy, 100.0)
    );
    // 1 of 20 failing: score 95, still a pass.
    let mut m: Vec<_> = (0..19).map(|i| same(&format!("m{i}"))).collect();
    m.push(worse("cpu"));
    let r = judge(m);
    assert_eq!(
        (r.verdict, r.judge.unwrap().class),
        (Verdict::Healthy, ScoreClass::Pass)
    );
    // 1 of 5: score 80, marginal, inconclusive.
    let mut m: Vec<_> = (0..4).map(|i| same(&format!("m{i}"))).collect();
    m.push(worse("cpu"));
    let r = judge(m);
    assert_eq!(
        (r.verdict, r.judge.unwrap().class),
        (Verdict::Inconclusive, ScoreClass::Marginal)
    );
    // 1 of 2: score 50, a failure.
    assert_eq!(
        judge(vec![same("a"), worse("b")]).verdict,
        Verdict::Unhealthy
    );
    // A critical metric failing is critical whatever the score.
    let mut crit = worse("errors");
    crit.critical = true;
    let mut m: Vec<_> = (0..30).map(|i| same(&format!("m{i}"))).collect();
    m.push(crit);
    let r = judge(m);
    assert_eq!(
        (r.verdict, r.judge.unwrap().score),
        (Verdict::Critical, 0.0)
    );
    // A decrease is no regression for an "increase is bad" metric.
    assert_eq!(
        judge(vec![MetricSamples::new(
            "latency",
            shifted.clone(),
            base.clone()
        )])
        .verdict,
        Verdict::Healthy
    );
}

#[test]
fn mann_whitney_u_matches_a_hand_computed_case() {
    // Canary [3, 4], baseline [1, 2, 3]: pairs where canary wins: 3>1, 3>2, 3=3 (½), 4>1, 4>2, 4>3 → 5.5.
    let t = mann_whitney_u(&[1.0, 2.0, 3.0], &[3.0, 4.0]).unwrap();
    assert!((t.u - 5.5).abs() < 1e-12);
    assert!((t.common_language_effect - 5.5 / 6.0).abs() < 1e-12);
    assert!(t.z > 0.0 && t.p_value > 0.05 && t.p_value < 1.0);
}

#[test]
fn srm_p_values() {
    assert_eq!(srm_p_value(0, 0, 10), None);
    assert_eq!(srm_p_value(100, 0, 100), None);
    assert!(srm_p_value(500, 9_500, 5).unwrap() > 0.99);
    assert!(srm_p_value(800, 9_200, 5).unwrap() < 1e-6);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Raising the weight never moves a canary key back to stable, and routing is
    /// deterministic.
    #[test]
    fn routing_is_sticky_and_monotone(salt in "[a-z0-9-]{1,16}", key in "[ -~]{0,40}", w1 in 0u8..=100, w2 in 0u8..=100) {
        let router = Router::new(salt);
        let (lo, hi) = (w1.min(w2), w1.max(w2));
        let a = router.route(&key, lo);
        prop_assert_eq!(a, router.route(&key, lo));
        if a == Arm::Canary {
            prop_assert_eq!(router.route(&key, hi), Arm::Canary);
        }
        prop_assert_eq!(router.route(&key, 0), Arm::Stable);
        prop_assert_eq!(router.route(&key, 100), Arm::Canary);
    }
}

#[test]
fn routed_shares_match_the_weight_and_pass_the_srm_check() {
    let router = Router::new("payments-v4");
    for w in [5u8, 10, 25, 50] {
        let n = 20_000u64;
        let canary = (0..n)
            .filter(|i| router.route(&format!("user-{i}"), w) == Arm::Canary)
            .count() as u64;
        let p = srm_p_value(canary, n - canary, w).unwrap();
        assert!(p > 1e-4, "weight {w}: {canary} of {n} canary, p = {p}");
    }
}

#[test]
fn manager_batch_operations_split_promotion_and_rollback() {
    let plan = Plan::progressive(MINUTE, Duration::ZERO, 100).unwrap();
    let policy = HealthPolicy::builder()
        .check(MetricCheck::error_rate_max(0.05))
        .failure_limit(1)
        .build()
        .unwrap();
    let mut m = RolloutManager::new();
    let t0 = Timestamp::from_unix_millis(0);
    for id in ["a-good", "b-bad", "c-silent", "d-pending"] {
        let mut r = Rollout::new(id, plan.clone(), policy.clone()).unwrap();
        if id != "d-pending" {
            let _ = r.start(t0, Actor::System).unwrap();
        }
        m.insert(r).unwrap();
    }
    assert!(matches!(
        m.insert(Rollout::new("a-good", plan.clone(), policy.clone()).unwrap()),
        Err(CanaryError::DuplicateRollout { .. })
    ));
    assert!(matches!(
        m.get("nope"),
        Err(CanaryError::UnknownRollout { .. })
    ));
    let observe = |r: &Rollout| -> Observed {
        match r.id() {
            "a-good" => Ok(Observations::canary_only(ArmObservation::counts(1_000, 5))),
            "b-bad" => Ok(Observations::canary_only(ArmObservation::counts(
                1_000, 300,
            ))),
            _ => Err("no such series".into()),
        }
    };
    let now = t0.saturating_add(MINUTE);
    // Nothing is due before the interval.
    assert!(m.tick_all(t0, observe).directives.is_empty());
    let promote = m.auto_promote_canary(now, observe);
    assert_eq!(promote.checked, 2);
    assert_eq!(
        promote
            .with_action(Action::SetWeight(10))
            .collect::<Vec<_>>(),
        ["a-good"]
    );
    assert_eq!(
        promote.directives.len(),
        1,
        "failures and source errors are left to the rollback job"
    );
    let rollback = m.auto_rollback_unhealthy_canaries(now, observe);
    assert_eq!(
        rollback.with_action(Action::RollBack).collect::<Vec<_>>(),
        ["b-bad"]
    );
    assert_eq!(
        rollback.with_action(Action::Hold).collect::<Vec<_>>(),
        ["c-silent"]
    );
    // The applied check is not applied again within the interval.
    assert!(m.auto_promote_canary(now, observe).directives.is_empty());
    // The rollback job completes rollbacks; the promote job does not.
    assert!(
        m.auto_promote_canary(now, observe)
            .with_action(Action::Done)
            .next()
            .is_none()
    );
    let done = m.auto_rollback_unhealthy_canaries(now, observe);
    assert_eq!(
        done.with_action(Action::Done).collect::<Vec<_>>(),
        ["b-bad"]
    );
    assert_eq!(m.get("b-bad").unwrap().phase(), Phase::RolledBack);
    assert_eq!(m.get("d-pending").unwrap().phase(), Phase::Pending);
    let events = m.take_events();
    assert!(events.iter().any(|(id, e)| &**id == "b-bad"
        && matches!(
            e,
            Event::Transition {
                to: Phase::RolledBack,
                ..
            }
        )));
    assert_eq!(m.remove("b-bad").unwrap().id(), "b-bad");
    assert_eq!(m.len(), 3);
}

#[test]
fn a_pause_timing_out_into_a_rollback_belongs_to_the_rollback_job() {
    let plan = Plan::progressive(MINUTE, Duration::ZERO, 100).unwrap();
    let policy = HealthPolicy::builder()
        .check(MetricCheck::error_rate_max(0.05))
        .inconclusive_limit(1)
        .max_pause(MINUTE, LimitAction::RollBack)
        .build()
        .unwrap();
    let mut m = RolloutManager::new();
    let t0 = Timestamp::from_unix_millis(0);
    let mut r = Rollout::new("p", plan, policy).unwrap();
    let _ = r.start(t0, Actor::System).unwrap();
    m.insert(r).unwrap();
    // 10 % of traffic instead of 5 %: a sample-ratio mismatch, inconclusive, paused.
    let skewed = |_: &Rollout| -> Observed {
        Ok(Observations::new(
            ArmObservation::counts(1_000, 5),
            ArmObservation::counts(9_000, 45),
        ))
    };
    let t1 = t0.saturating_add(MINUTE);
    let paused = m.auto_promote_canary(t1, skewed);
    assert_eq!(
        paused
            .with_action(Action::Pause(PauseReason::Inconclusive))
            .count(),
        1
    );
    let t2 = t1.saturating_add(MINUTE);
    assert!(m.auto_promote_canary(t2, skewed).directives.is_empty());
    let rolled = m.auto_rollback_unhealthy_canaries(t2, skewed);
    assert_eq!(
        rolled.with_action(Action::RollBack).collect::<Vec<_>>(),
        ["p"]
    );
}
