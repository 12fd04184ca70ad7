//! Random sequences of ticks and commands: invariants hold after every step, refused
//! operations change nothing, and the trail always replays to the live state.

use std::time::Duration;

use canary::*;
use metered_clock::Timestamp;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Advance(u16),
    Tick {
        canary: u32,
        canary_errors_permille: u16,
        baseline_errors_permille: u16,
    },
    SourceError,
    Start,
    Promote,
    PromoteFull,
    SkipStep,
    Pause,
    Resume,
    RollBack,
    Abort,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u16..600).prop_map(Op::Advance),
        6 => (0u32..5_000, 0u16..80, 0u16..30).prop_map(|(canary, c, b)| Op::Tick {
            canary,
            canary_errors_permille: c,
            baseline_errors_permille: b,
        }),
        1 => Just(Op::SourceError),
        1 => Just(Op::Start),
        1 => Just(Op::Promote),
        1 => Just(Op::PromoteFull),
        1 => Just(Op::SkipStep),
        1 => Just(Op::Pause),
        1 => Just(Op::Resume),
        1 => Just(Op::RollBack),
        1 => Just(Op::Abort),
    ]
}

fn plan() -> Plan {
    let steps = vec![
        Step::new(5, Duration::from_secs(120), 200),
        Step::new(25, Duration::from_secs(120), 200).with_approval(),
        Step::new(50, Duration::from_secs(60), 200),
        Step::new(100, Duration::ZERO, 0),
    ];
    Plan::new(steps, Duration::from_secs(60)).unwrap()
}

fn policy() -> HealthPolicy {
    HealthPolicy::builder()
        .check(MetricCheck::error_rate_max(0.05).critical())
        .check(MetricCheck::error_rate_relative(0.25))
        .inconclusive_limit(2)
        .max_pause(Duration::from_secs(300), LimitAction::Advance)
        .source_error_limit(2, LimitAction::RollBack)
        .build()
        .unwrap()
}

fn expected_weight(r: &Rollout) -> u8 {
    match r.phase().kind() {
        PhaseKind::Pending
        | PhaseKind::RollingBack
        | PhaseKind::RolledBack
        | PhaseKind::Aborted => 0,
        PhaseKind::Promoting | PhaseKind::Succeeded => 100,
        _ => r.plan().steps()[r.state().step].weight_percent(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn random_operations_keep_the_invariants_and_replay(ops in prop::collection::vec(op(), 1..80)) {
        let mut r = Rollout::new("model", plan(), policy()).unwrap();
        let mut now = Timestamp::from_unix_millis(1_000_000);
        let mut events = Vec::new();
        let actor = || Actor::operator("op");
        for op in ops {
            let before = r.state().clone();
            let result: Result<Directive, CanaryError> = match op {
                Op::Advance(s) => {
                    now = now.saturating_add(Duration::from_secs(u64::from(s)));
                    continue;
                }
                Op::Tick { canary, canary_errors_permille, baseline_errors_permille } => {
                    let c = u64::from(canary);
                    let w = u64::from(r.weight_percent().clamp(1, 99));
                    let b = c * (100 - w) / w;
                    let obs = Observations::new(
                        ArmObservation::counts(c, c * u64::from(canary_errors_permille) / 1000),
                        ArmObservation::counts(b, b * u64::from(baseline_errors_permille) / 1000),
                    );
                    r.tick(now, &obs)
                }
                Op::SourceError => Ok(r.tick_source_error(now, "down")),
                Op::Start => r.start(now, actor()),
                Op::Promote => r.promote(now, actor()),
                Op::PromoteFull => r.promote_full(now, actor()),
                Op::SkipStep => r.skip_step(now, actor()),
                Op::Pause => r.pause(now, actor(), "look"),
                Op::Resume => r.resume(now, actor()),
                Op::RollBack => r.rollback(now, actor(), "no"),
                Op::Abort => r.abort(now, actor(), "stop"),
            };
            match result {
                Ok(d) => {
                    prop_assert_eq!(d.phase, r.phase().kind());
                    prop_assert_eq!(d.weight_percent, r.weight_percent());
                    if d.phase.is_final() {
                        prop_assert_eq!(d.next_check_at, None);
                    }
                }
                Err(CanaryError::IllegalTransition { phase, .. }) => {
                    prop_assert_eq!(phase, before.phase.kind());
                    prop_assert_eq!(r.state(), &before);
                }
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
            if before.phase.kind().is_final() {
                prop_assert_eq!(r.phase(), before.phase, "a final phase is final");
            }
            prop_assert_eq!(r.weight_percent(), expected_weight(&r));
            let c = r.state().counters;
            prop_assert!(c.total_failures >= c.consecutive_failures);
            prop_assert!(r.state().step <= r.plan().last_index());
            if let Phase::Paused { deadline: Some(d), since, .. } = r.phase() {
                prop_assert!(d > since);
            }
            events.extend(r.take_events());
            let replayed = Rollout::replay("model", plan(), policy(), &events).unwrap();
            prop_assert_eq!(replayed.state(), r.state());
        }
    }
}
