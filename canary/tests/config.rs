//! Bad plans and policies are refused with typed errors naming the problem.

use std::time::Duration;

use canary::*;

const MINUTE: Duration = Duration::from_secs(60);

fn plan_error(steps: &[u8], interval: Duration) -> Option<String> {
    let steps = steps.iter().map(|&w| Step::new(w, MINUTE, 100)).collect();
    match Plan::new(steps, interval) {
        Ok(_) => None,
        Err(CanaryError::InvalidPlan { reason }) => Some(reason),
        Err(other) => panic!("unexpected error kind: {other:?}"),
    }
}

#[test]
fn plans() {
    let check = |steps: &[u8], interval: Duration, expect: Option<&str>| {
        let got = plan_error(steps, interval);
        match (expect, got) {
            (None, None) => {}
            (Some(want), Some(got)) => {
                assert!(got.contains(want), "{steps:?}: {got:?} lacks {want:?}")
            }
            (want, got) => panic!("{steps:?}: expected {want:?}, got {got:?}"),
        }
    };
    check(&[5, 10, 25, 50, 100], MINUTE, None);
    check(&[100], MINUTE, None);
    check(&[], MINUTE, Some("at least one step"));
    check(&[10, 10, 100], MINUTE, Some("does not exceed"));
    check(&[50, 20, 100], MINUTE, Some("does not exceed"));
    check(&[0, 100], MINUTE, Some("outside 1..=100"));
    check(&[10, 101], MINUTE, Some("outside 1..=100"));
    check(&[10, 50], MINUTE, Some("last step must send 100"));
    check(
        &[10, 100],
        Duration::ZERO,
        Some("interval must be positive"),
    );
    check(&[10, 100], Duration::from_secs(2 * 86_400), Some("exceeds"));
    let many: Vec<u8> = (1..=100).collect();
    check(&many, MINUTE, None);
    let ids = [String::new(), "x".repeat(ID_LEN_MAX + 1), "a\nb".into()];
    for id in ids {
        let plan = Plan::progressive(MINUTE, MINUTE, 1).unwrap();
        let policy = HealthPolicy::builder()
            .check(MetricCheck::error_rate_max(0.1))
            .build()
            .unwrap();
        assert!(matches!(
            Rollout::new(id, plan, policy),
            Err(CanaryError::InvalidPlan { .. })
        ));
    }
}

#[test]
fn policies() {
    let base = || HealthPolicy::builder().check(MetricCheck::error_rate_max(0.05));
    let cases: Vec<(&str, HealthPolicyBuilder)> = vec![
        ("checks", HealthPolicy::builder()),
        (
            "checks",
            (0..=CHECKS_MAX).fold(HealthPolicy::builder(), |b, _| {
                b.check(MetricCheck::error_rate_max(0.1))
            }),
        ),
        (
            "checks",
            HealthPolicy::builder().check(MetricCheck::error_rate_max(0.0)),
        ),
        (
            "checks",
            HealthPolicy::builder().check(MetricCheck::error_rate_max(1.0)),
        ),
        (
            "checks",
            HealthPolicy::builder().check(MetricCheck::error_rate_max(f64::NAN)),
        ),
        (
            "checks",
            HealthPolicy::builder().check(MetricCheck::error_rate_relative(-0.1)),
        ),
        (
            "checks",
            HealthPolicy::builder().check(MetricCheck::latency_max(1.0, 100.0)),
        ),
        (
            "checks",
            HealthPolicy::builder().check(MetricCheck::latency_max(0.95, 0.0)),
        ),
        (
            "checks",
            HealthPolicy::builder().check(MetricCheck::latency_relative(0.95, f64::INFINITY)),
        ),
        (
            "checks",
            HealthPolicy::builder().check(MetricCheck::new(
                "",
                MetricKind::ErrorRate,
                Limit::Absolute(0.1),
            )),
        ),
        (
            "checks",
            HealthPolicy::builder().check(MetricCheck::new(
                "x".repeat(101),
                MetricKind::ErrorRate,
                Limit::Absolute(0.1),
            )),
        ),
        ("prior", base().prior(0.0, 1.0)),
        ("fail_confidence", base().fail_confidence(1.0)),
        ("fail_confidence", base().fail_confidence(0.4)),
        ("pass_below", base().pass_below(0.0)),
        ("pass_below", base().fail_confidence(0.9).pass_below(0.95)),
        ("failure_limit", base().failure_limit(0)),
        ("total_failure_limit", base().total_failure_limit(0)),
        (
            "total_failure_limit",
            base().failure_limit(5).total_failure_limit(4),
        ),
        ("inconclusive_limit", base().inconclusive_limit(0)),
        (
            "source_error_limit",
            base().source_error_limit(0, LimitAction::RollBack),
        ),
        ("success_limit", base().success_limit(0)),
        (
            "max_pause",
            base().max_pause(Duration::ZERO, LimitAction::Resume),
        ),
        ("srm_p_value", base().srm_p_value(Some(1.5))),
    ];
    for (want, builder) in cases {
        match builder.build() {
            Err(CanaryError::InvalidPolicy { field, .. }) => assert_eq!(field, want),
            other => panic!("expected InvalidPolicy({want}), got {other:?}"),
        }
    }
    assert!(base().srm_p_value(None).success_limit(3).build().is_ok());
}

#[test]
fn judges() {
    assert!(matches!(
        MannWhitneyJudge::new(0.0, 95.0, 75.0),
        Err(CanaryError::InvalidPolicy { .. })
    ));
    assert!(matches!(
        MannWhitneyJudge::new(0.05, 70.0, 75.0),
        Err(CanaryError::InvalidPolicy { .. })
    ));
    assert!(matches!(
        MannWhitneyJudge::new(0.05, 101.0, 75.0),
        Err(CanaryError::InvalidPolicy { .. })
    ));
    let judge = MannWhitneyJudge::default();
    assert!(matches!(
        judge.judge(&[]),
        Err(CanaryError::InvalidObservation { .. })
    ));
    let mut m = MetricSamples::new("x", vec![1.0], vec![2.0]);
    m.weight = 0.0;
    assert!(matches!(
        judge.judge(&[m]),
        Err(CanaryError::InvalidObservation { .. })
    ));
    assert!(mann_whitney_u(&[], &[1.0]).is_err());
    assert!(mann_whitney_u(&[f64::NAN], &[1.0]).is_err());
}

#[test]
fn errors_say_whether_to_retry() {
    let e = CanaryError::MetricsSource {
        message: "timeout".into(),
        retryable: true,
    };
    assert!(e.is_retryable());
    assert!(
        !CanaryError::InvalidPlan {
            reason: String::new()
        }
        .is_retryable()
    );
    assert!(!CanaryError::UnknownRollout { id: "x".into() }.is_retryable());
}

#[test]
fn overlong_command_text_is_refused_without_change() {
    let plan = Plan::progressive(MINUTE, MINUTE, 1).unwrap();
    let policy = HealthPolicy::builder()
        .check(MetricCheck::error_rate_max(0.1))
        .build()
        .unwrap();
    let mut r = Rollout::new("r", plan, policy).unwrap();
    let t = metered_clock::Timestamp::EPOCH;
    let long = "x".repeat(COMMAND_TEXT_LEN_MAX + 1);
    assert!(matches!(
        r.start(t, Actor::Operator(long.clone())),
        Err(CanaryError::InvalidCommand { .. })
    ));
    let _ = r.start(t, Actor::System).unwrap();
    let before = r.state().clone();
    assert!(matches!(
        r.pause(t, Actor::System, &long),
        Err(CanaryError::InvalidCommand { .. })
    ));
    assert!(matches!(
        r.abort(t, Actor::System, &long),
        Err(CanaryError::InvalidCommand { .. })
    ));
    assert_eq!(r.state(), &before);
    // A long metric-source message is truncated, not refused.
    let _ = r.tick_source_error(t.saturating_add(MINUTE), "é".repeat(COMMAND_TEXT_LEN_MAX));
    let events = r.take_events();
    let Some(Event::SourceError { message, .. }) = events.last() else {
        panic!("no source error")
    };
    assert!(message.len() <= COMMAND_TEXT_LEN_MAX);
}
