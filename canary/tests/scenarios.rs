//! Deterministic rollout scenarios on a manual clock.

use std::time::Duration;

use canary::*;
use metered_clock::{Clock, ManualClock, Timestamp};

const MINUTE: Duration = Duration::from_secs(60);
const T0: Timestamp = Timestamp::from_unix_millis(1_700_000_000_000);

/// Traffic per minute and error rates of both arms, as a function of the canary weight.
#[derive(Clone, Copy)]
struct Traffic {
    requests_per_minute: u64,
    /// Share of the canary's requests the router really sends (1.0: as configured).
    canary_share_factor: f64,
    baseline_error_rate: f64,
    canary_error_rate: f64,
}

impl Traffic {
    fn healthy() -> Self {
        Traffic {
            requests_per_minute: 10_000,
            canary_share_factor: 1.0,
            baseline_error_rate: 0.01,
            canary_error_rate: 0.01,
        }
    }
}

/// Drives a rollout minute by minute, observing since the step started.
struct Harness {
    rollout: Rollout,
    clock: ManualClock,
    window: (u64, u64, u64, u64),
    decisions: Vec<Directive>,
    events: Vec<Event>,
}

#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
fn count(n: u64, rate: f64) -> u64 {
    (n as f64 * rate).round() as u64
}

impl Harness {
    fn new(plan: Plan, policy: HealthPolicy) -> Self {
        let mut rollout = Rollout::new("checkout-v2", plan, policy).unwrap();
        let clock = ManualClock::new(T0);
        let d = rollout.start(clock.now(), Actor::operator("ana")).unwrap();
        Harness {
            rollout,
            clock,
            window: (0, 0, 0, 0),
            decisions: vec![d],
            events: Vec::new(),
        }
    }

    fn observations(&self) -> Observations {
        let (cr, ce, br, be) = self.window;
        Observations::new(
            ArmObservation::counts(cr, ce),
            ArmObservation::counts(br, be),
        )
    }

    /// One minute of traffic, then a tick.
    fn minute(&mut self, traffic: Traffic) -> Directive {
        let w = f64::from(self.rollout.weight_percent()) / 100.0;
        let canary = count(
            traffic.requests_per_minute,
            (w * traffic.canary_share_factor).min(1.0),
        );
        let baseline = traffic.requests_per_minute - canary;
        self.window.0 += canary;
        self.window.1 += count(canary, traffic.canary_error_rate);
        self.window.2 += baseline;
        self.window.3 += count(baseline, traffic.baseline_error_rate);
        self.clock.advance(MINUTE);
        let step_before = (self.rollout.state().step, self.rollout.step_started_at());
        let d = self
            .rollout
            .tick(self.clock.now(), &self.observations())
            .unwrap();
        if (self.rollout.state().step, self.rollout.step_started_at()) != step_before {
            self.window = (0, 0, 0, 0);
        }
        self.events.extend(self.rollout.take_events());
        self.decisions.push(d.clone());
        d
    }

    fn run_until(
        &mut self,
        traffic: Traffic,
        minutes_max: u32,
        stop: impl Fn(&Directive) -> bool,
    ) -> Directive {
        for _ in 0..minutes_max {
            let d = self.minute(traffic);
            if stop(&d) {
                return d;
            }
        }
        panic!(
            "no stop condition within {minutes_max} minutes; state {:?}",
            self.rollout.state()
        );
    }

    fn all_events(&mut self) -> Vec<Event> {
        let mut all = std::mem::take(&mut self.events);
        all.extend(self.rollout.take_events());
        all
    }
}

fn plan() -> Plan {
    Plan::progressive(MINUTE, 3 * MINUTE, 500).unwrap()
}

fn policy() -> HealthPolicy {
    HealthPolicy::builder()
        .check(MetricCheck::error_rate_max(0.05).critical())
        .check(MetricCheck::error_rate_relative(0.25))
        .build()
        .unwrap()
}

fn weights(decisions: &[Directive]) -> Vec<u8> {
    decisions
        .iter()
        .filter_map(|d| match d.action {
            Action::SetWeight(w) => Some(w),
            Action::Promote => Some(100),
            _ => None,
        })
        .collect()
}

#[test]
fn healthy_rollout_reaches_100_percent_through_every_step() {
    let mut h = Harness::new(plan(), policy());
    let d = h.run_until(Traffic::healthy(), 60, |d| d.action == Action::Promote);
    assert_eq!(d.phase, PhaseKind::Promoting);
    assert_eq!(d.weight_percent, 100);
    assert_eq!(weights(&h.decisions), [5, 10, 25, 50, 100]);
    // Each step served its minimum time (3 checks of one minute), no more.
    let started = T0;
    assert_eq!(h.clock.now(), started.saturating_add(12 * MINUTE));
    let d = h.minute(Traffic::healthy());
    assert_eq!((d.action, d.phase), (Action::Done, PhaseKind::Succeeded));
    assert_eq!(d.next_check_at, None);
    let c = h.rollout.state().counters;
    assert_eq!((c.total_failures, c.checks), (0, 12));
}

#[test]
fn regression_at_25_percent_rolls_back_within_interval_times_failure_limit() {
    let mut h = Harness::new(plan(), policy());
    let _ = h.run_until(Traffic::healthy(), 60, |d| d.weight_percent == 25);
    let entered = h.clock.now();
    let bad = Traffic {
        canary_error_rate: 0.03,
        ..Traffic::healthy()
    };
    let d = h.run_until(bad, 60, |d| d.action == Action::RollBack);
    assert_eq!(
        (d.phase, d.weight_percent, d.step),
        (PhaseKind::RollingBack, 0, 2)
    );
    let elapsed = h.clock.now().saturating_duration_since(entered);
    let limit = plan().check_interval() * policy().failure_limit();
    assert!(
        elapsed <= limit,
        "rolled back after {elapsed:?}, limit {limit:?}"
    );
    let report = d.report.expect("a check decided it");
    assert_eq!(report.verdict, Verdict::Unhealthy);
    assert!(
        report.reason().contains("error_rate_vs_baseline"),
        "{}",
        report.reason()
    );
    let d = h.minute(bad);
    assert_eq!((d.action, d.phase), (Action::Done, PhaseKind::RolledBack));
}

#[test]
fn low_traffic_holds_and_never_fails() {
    let mut h = Harness::new(plan(), policy());
    let trickle = Traffic {
        requests_per_minute: 100, // 5 canary requests a minute: 500 take 100 minutes
        ..Traffic::healthy()
    };
    for _ in 0..99 {
        let d = h.minute(trickle);
        assert_eq!(d.action, Action::Hold);
        assert_eq!(d.report.unwrap().verdict, Verdict::InsufficientData);
    }
    let s = h.rollout.state();
    assert_eq!(
        (s.phase, s.step, s.counters.total_failures),
        (Phase::Progressing, 0, 0)
    );
    // The 100th minute brings the 500th canary request: judged, healthy, next step.
    assert_eq!(h.minute(trickle).action, Action::SetWeight(10));
}

#[test]
fn critical_check_judges_before_the_minimum_sample_and_rolls_back_at_once() {
    let mut h = Harness::new(plan(), policy());
    let broken = Traffic {
        canary_error_rate: 0.5,
        ..Traffic::healthy()
    };
    // 500 canary requests in the first minute at 5 % of 10,000: the critical 5 % limit fails.
    let d = h.minute(broken);
    assert_eq!(d.action, Action::RollBack);
    assert_eq!(d.report.unwrap().verdict, Verdict::Critical);
    assert_eq!(h.rollout.state().counters.consecutive_failures, 1);
}

#[test]
fn a_critical_failure_below_the_minimum_sample_still_needs_the_critical_sample() {
    let policy = HealthPolicy::builder()
        .check(MetricCheck::error_rate_max(0.05).critical())
        .critical_min_sample(50)
        .build()
        .unwrap();
    let plan = Plan::progressive(MINUTE, MINUTE, 10_000).unwrap();
    let mut h = Harness::new(plan, policy);
    let trickle = Traffic {
        requests_per_minute: 400, // 20 canary requests a minute
        canary_error_rate: 0.5,
        ..Traffic::healthy()
    };
    assert_eq!(h.minute(trickle).action, Action::Hold); // 20 < 50
    assert_eq!(h.minute(trickle).action, Action::Hold); // 40 < 50
    assert_eq!(h.minute(trickle).action, Action::RollBack); // 60, half of them errors
}

#[test]
fn inconclusive_checks_pause_then_a_healthy_check_resumes() {
    let mut h = Harness::new(plan(), policy());
    // The router sends 8 % instead of 5 %: a sample-ratio mismatch, so results are suspect.
    let skewed = Traffic {
        canary_share_factor: 1.6,
        ..Traffic::healthy()
    };
    for _ in 0..2 {
        let d = h.minute(skewed);
        assert_eq!(d.action, Action::Hold);
        let r = d.report.unwrap();
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert!(r.sample_ratio_mismatch);
    }
    let d = h.minute(skewed);
    assert_eq!(d.action, Action::Pause(PauseReason::Inconclusive));
    let Phase::Paused {
        deadline: Some(deadline),
        ..
    } = h.rollout.phase()
    else {
        panic!("not paused: {:?}", h.rollout.phase());
    };
    assert_eq!(
        deadline,
        h.clock.now().saturating_add(Duration::from_secs(1800))
    );
    // While paused at the mismatch, checks keep running and holding.
    assert_eq!(
        h.minute(skewed).action,
        Action::Pause(PauseReason::Inconclusive)
    );
    // The router is fixed; the window restarts (an operator would reset it, as here).
    h.window = (0, 0, 0, 0);
    let d = h.minute(Traffic::healthy());
    assert_eq!(
        (d.action, d.phase),
        (Action::SetWeight(5), PhaseKind::Progressing)
    );
    // And the rollout goes on to the next step at its next healthy check.
    let d = h.minute(Traffic::healthy());
    assert_eq!(d.action, Action::SetWeight(10));
}

#[test]
fn an_inconclusive_pause_ends_with_the_configured_outcome() {
    for (outcome, phase, action) in [
        (
            LimitAction::RollBack,
            PhaseKind::RollingBack,
            Action::RollBack,
        ),
        (
            LimitAction::Resume,
            PhaseKind::Progressing,
            Action::SetWeight(5),
        ),
        (
            LimitAction::Advance,
            PhaseKind::Progressing,
            Action::SetWeight(10),
        ),
    ] {
        let policy = HealthPolicy::builder()
            .check(MetricCheck::error_rate_max(0.05))
            .inconclusive_limit(1)
            .max_pause(Duration::from_secs(300), outcome)
            .build()
            .unwrap();
        let mut h = Harness::new(plan(), policy);
        let skewed = Traffic {
            canary_share_factor: 1.6,
            ..Traffic::healthy()
        };
        assert_eq!(
            h.minute(skewed).action,
            Action::Pause(PauseReason::Inconclusive)
        );
        for _ in 0..4 {
            assert_eq!(
                h.minute(skewed).action,
                Action::Pause(PauseReason::Inconclusive)
            );
        }
        let d = h.minute(skewed); // five minutes after the pause began
        assert_eq!((d.phase, d.action), (phase, action), "{outcome:?}");
    }
}

#[test]
fn manual_abort_sends_traffic_back_and_ends_the_rollout() {
    let mut h = Harness::new(plan(), policy());
    let _ = h.run_until(Traffic::healthy(), 60, |d| d.weight_percent == 10);
    let now = h.clock.now();
    let d = h
        .rollout
        .abort(now, Actor::operator("bo"), "customer complaint")
        .unwrap();
    assert_eq!(
        (d.action, d.phase, d.weight_percent),
        (Action::RollBack, PhaseKind::Aborted, 0)
    );
    assert!(matches!(
        h.rollout.resume(now, Actor::operator("bo")),
        Err(CanaryError::IllegalTransition {
            phase: PhaseKind::Aborted,
            command: RolloutCommand::Resume,
            ..
        })
    ));
    assert_eq!(h.minute(Traffic::healthy()).action, Action::Done);
    let events = h.all_events();
    let Some(Event::Transition { actor, reason, .. }) = events.last() else {
        panic!("last event is not the abort");
    };
    assert_eq!(
        (actor, reason.as_str()),
        (&Actor::operator("bo"), "customer complaint")
    );
}

#[test]
fn metric_source_errors_roll_back_at_their_limit() {
    let mut h = Harness::new(plan(), policy());
    for i in 1..=4 {
        h.clock.advance(MINUTE);
        let d = h
            .rollout
            .tick_source_error(h.clock.now(), "prometheus: connection refused");
        let want = if i < 4 {
            Action::Hold
        } else {
            Action::RollBack
        };
        assert_eq!(d.action, want, "error {i}");
    }
    // A successful check in between resets the count.
    let mut h = Harness::new(plan(), policy());
    for _ in 0..3 {
        h.clock.advance(MINUTE);
        assert_eq!(
            h.rollout.tick_source_error(h.clock.now(), "timeout").action,
            Action::Hold
        );
    }
    // (the step's three minutes have passed, so the healthy check also moves on)
    assert_eq!(h.minute(Traffic::healthy()).action, Action::SetWeight(10));
    assert_eq!(h.rollout.state().counters.consecutive_source_errors, 0);
}

#[test]
fn ticks_before_the_next_check_wait_and_change_nothing() {
    let mut h = Harness::new(plan(), policy());
    let before = h.rollout.state().clone();
    let early = T0.saturating_add(Duration::from_secs(59));
    let d = h.rollout.tick(early, &h.observations()).unwrap();
    assert_eq!(d.action, Action::Wait);
    assert_eq!(d.next_check_at, Some(T0.saturating_add(MINUTE)));
    assert_eq!(h.rollout.state(), &before);
}

#[test]
fn consecutive_successes_complete_a_step_early() {
    let policy = HealthPolicy::builder()
        .check(MetricCheck::error_rate_max(0.05))
        .success_limit(2)
        .build()
        .unwrap();
    let plan = Plan::progressive(MINUTE, Duration::from_secs(3600), 500).unwrap();
    let mut h = Harness::new(plan, policy);
    assert_eq!(h.minute(Traffic::healthy()).action, Action::Hold);
    assert_eq!(h.minute(Traffic::healthy()).action, Action::SetWeight(10));
}

#[test]
fn approval_gates_wait_for_promote() {
    let steps = vec![
        Step::new(10, MINUTE, 100),
        Step::new(50, MINUTE, 100).with_approval(),
        Step::new(100, Duration::ZERO, 0),
    ];
    let mut h = Harness::new(Plan::new(steps, MINUTE).unwrap(), policy());
    let d = h.minute(Traffic::healthy());
    assert_eq!(d.action, Action::Pause(PauseReason::AwaitingApproval));
    assert_eq!(d.weight_percent, 10);
    // Healthy checks do not pass the gate; resume is refused with a hint.
    assert_eq!(
        h.minute(Traffic::healthy()).action,
        Action::Pause(PauseReason::AwaitingApproval)
    );
    let now = h.clock.now();
    assert!(matches!(
        h.rollout.resume(now, Actor::operator("ana")),
        Err(CanaryError::IllegalTransition {
            command: RolloutCommand::Resume,
            ..
        })
    ));
    let d = h.rollout.promote(now, Actor::operator("ana")).unwrap();
    assert_eq!(
        (d.action, d.phase),
        (Action::SetWeight(50), PhaseKind::Progressing)
    );
}

/// Each command in each phase: allowed (and where it leads) or refused.
#[test]
fn commands_and_illegal_transitions() {
    type Cmd = fn(&mut Rollout, Timestamp) -> Result<Directive, CanaryError>;
    let op = || Actor::operator("ana");
    let commands: [(RolloutCommand, Cmd); 8] = [
        (RolloutCommand::Start, |r, t| {
            r.start(t, Actor::operator("ana"))
        }),
        (RolloutCommand::Promote, |r, t| {
            r.promote(t, Actor::operator("ana"))
        }),
        (RolloutCommand::PromoteFull, |r, t| {
            r.promote_full(t, Actor::operator("ana"))
        }),
        (RolloutCommand::SkipStep, |r, t| {
            r.skip_step(t, Actor::operator("ana"))
        }),
        (RolloutCommand::Pause, |r, t| {
            r.pause(t, Actor::operator("ana"), "look")
        }),
        (RolloutCommand::Resume, |r, t| {
            r.resume(t, Actor::operator("ana"))
        }),
        (RolloutCommand::RollBack, |r, t| {
            r.rollback(t, Actor::operator("ana"), "no")
        }),
        (RolloutCommand::Abort, |r, t| {
            r.abort(t, Actor::operator("ana"), "stop")
        }),
    ];
    // Rollouts in each phase.
    let fresh = || Rollout::new("r", plan(), policy()).unwrap();
    let t = T0;
    let pending = fresh();
    let mut progressing = fresh();
    let _ = progressing.start(t, op()).unwrap();
    let mut paused = progressing.clone();
    let _ = paused.pause(t, op(), "hold").unwrap();
    let mut promoting = progressing.clone();
    let _ = promoting.promote_full(t, op()).unwrap();
    let mut rolling_back = progressing.clone();
    let _ = rolling_back.rollback(t, op(), "x").unwrap();
    let mut aborted = progressing.clone();
    let _ = aborted.abort(t, op(), "x").unwrap();
    let mut succeeded = promoting.clone();
    let _ = succeeded.tick(t, &Observations::default()).unwrap();

    use PhaseKind as P;
    // (phase, command) → phase after, or None when refused.
    let expect = |phase: P, command: RolloutCommand| -> Option<P> {
        match (phase, command) {
            (P::Pending, RolloutCommand::Start) => Some(P::Progressing),
            (P::Pending, RolloutCommand::Abort) => Some(P::Aborted),
            (P::Progressing | P::Paused, RolloutCommand::Promote) => Some(P::Progressing),
            (P::Progressing | P::Paused, RolloutCommand::PromoteFull) => Some(P::Promoting),
            (P::Progressing, RolloutCommand::SkipStep) => Some(P::Progressing),
            (P::Progressing, RolloutCommand::Pause) => Some(P::Paused),
            (P::Paused, RolloutCommand::Resume) => Some(P::Progressing),
            (P::Progressing | P::Paused, RolloutCommand::RollBack) => Some(P::RollingBack),
            (P::Progressing | P::Paused | P::Promoting | P::RollingBack, RolloutCommand::Abort) => {
                Some(P::Aborted)
            }
            _ => None,
        }
    };
    for base in [
        pending,
        progressing,
        paused,
        promoting,
        rolling_back,
        aborted,
        succeeded,
    ] {
        for (command, run) in commands {
            let mut r = base.clone();
            let phase = r.phase().kind();
            let got = run(&mut r, t);
            match expect(phase, command) {
                Some(after) => {
                    let d = got.unwrap_or_else(|e| panic!("{command:?} in {phase:?}: {e}"));
                    assert_eq!(d.phase, after, "{command:?} in {phase:?}");
                }
                None => {
                    match got {
                        Err(CanaryError::IllegalTransition {
                            phase: p,
                            command: c,
                            ..
                        }) => {
                            assert_eq!((p, c), (phase, command));
                        }
                        other => {
                            panic!("{command:?} in {phase:?}: expected refusal, got {other:?}")
                        }
                    }
                    assert_eq!(r.state(), base.state(), "a refused command changed state");
                    assert_eq!(r.pending_events(), base.pending_events());
                }
            }
        }
    }
}

#[test]
fn promote_skip_and_promote_full_move_through_the_plan() {
    let mut r = Rollout::new("r", plan(), policy()).unwrap();
    let op = || Actor::operator("ana");
    assert_eq!(r.start(T0, op()).unwrap().weight_percent, 5);
    assert_eq!(r.skip_step(T0, op()).unwrap().action, Action::SetWeight(10));
    assert_eq!(r.promote(T0, op()).unwrap().action, Action::SetWeight(25));
    assert_eq!(r.promote(T0, op()).unwrap().action, Action::SetWeight(50));
    assert_eq!(r.promote(T0, op()).unwrap().action, Action::Promote);
    let mut r = Rollout::new("r", plan(), policy()).unwrap();
    let _ = r.start(T0, op()).unwrap();
    let d = r.promote_full(T0, op()).unwrap();
    assert_eq!(
        (d.action, d.weight_percent, d.step),
        (Action::Promote, 100, 4)
    );
}

#[test]
fn inconsistent_observations_are_refused_without_change() {
    let mut h = Harness::new(plan(), policy());
    h.clock.advance(MINUTE);
    let before = h.rollout.state().clone();
    let bad = Observations::canary_only(ArmObservation::counts(10, 11));
    assert!(matches!(
        h.rollout.tick(h.clock.now(), &bad),
        Err(CanaryError::InvalidObservation { .. })
    ));
    let bad = Observations::new(ArmObservation::counts(10, 1), ArmObservation::counts(5, 6));
    assert!(matches!(
        h.rollout.tick(h.clock.now(), &bad),
        Err(CanaryError::InvalidObservation { .. })
    ));
    assert_eq!(h.rollout.state(), &before);
}
