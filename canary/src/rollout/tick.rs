//! `tick`: health checks and timeouts, and what their results lead to.

use metered_clock::Timestamp;

use super::Rollout;
use crate::command::{Actor, COMMAND_TEXT_LEN_MAX, RolloutCommand};
use crate::directive::{Action, Directive};
use crate::error::Result;
use crate::event::Event;
use crate::health::{HealthReport, LimitAction, Observations, Verdict};
use crate::phase::{PauseReason, Phase};
#[cfg(doc)]
use crate::{CanaryError, HealthPolicy};

impl Rollout {
    /// Runs a health check if one is due, and whatever it leads to; completes a promotion or
    /// rollback; ends a timed-out pause. Never sleeps: call it again at
    /// [`Directive::next_check_at`].
    ///
    /// # Errors
    /// [`CanaryError::InvalidObservation`] for inconsistent observations (nothing changes).
    pub fn tick(&mut self, now: Timestamp, obs: &Observations) -> Result<Directive> {
        if let Some(d) = self.tick_without_check(now) {
            return Ok(d);
        }
        let step = &self.plan.steps()[self.state.step];
        let report = self.policy.judge(step, obs)?;
        Ok(self.apply_check(now, report))
    }

    /// Like [`tick`](Rollout::tick), when the metrics source failed: counts the error and,
    /// at the policy's limit, applies its limit_action.
    pub fn tick_source_error(&mut self, now: Timestamp, message: impl Into<String>) -> Directive {
        if let Some(d) = self.tick_without_check(now) {
            return d;
        }
        let step = self.state.step;
        let mut message = message.into();
        if message.len() > COMMAND_TEXT_LEN_MAX {
            let mut end = COMMAND_TEXT_LEN_MAX;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        self.record(Event::SourceError {
            at: now,
            step,
            message,
        });
        if self.state.counters.consecutive_source_errors >= self.policy.source_error_limit() {
            let limit_action = self.policy.source_error_action();
            let reason = format!(
                "{} consecutive metric-source errors",
                self.state.counters.consecutive_source_errors
            );
            if let Some(d) = self.apply_limit_action(now, limit_action, reason) {
                return d;
            }
        }
        self.directive(Action::Hold, None)
    }

    /// Applies a check whose report was computed elsewhere (by [`HealthPolicy::judge`]),
    /// when one is due. Returns `None` when no check is due (then nothing changes).
    pub fn tick_with_report(&mut self, now: Timestamp, report: HealthReport) -> Option<Directive> {
        if self.tick_without_check(now).is_some() {
            return None;
        }
        Some(self.apply_check(now, report))
    }

    /// The part of a tick that needs no observations: `Some` when the tick is finished
    /// without a check (not due, final, completing, timed out).
    fn tick_without_check(&mut self, now: Timestamp) -> Option<Directive> {
        match self.state.phase {
            Phase::Pending => Some(self.directive(Action::Wait, None)),
            Phase::Succeeded | Phase::RolledBack | Phase::Aborted => {
                Some(self.directive(Action::Done, None))
            }
            Phase::Promoting => {
                self.transition(
                    now,
                    Actor::System,
                    RolloutCommand::Tick,
                    Phase::Succeeded,
                    self.state.step,
                    "promotion completed".into(),
                );
                Some(self.directive(Action::Done, None))
            }
            Phase::RollingBack => {
                self.transition(
                    now,
                    Actor::System,
                    RolloutCommand::Tick,
                    Phase::RolledBack,
                    self.state.step,
                    "rollback completed".into(),
                );
                Some(self.directive(Action::Done, None))
            }
            Phase::Paused {
                reason,
                deadline: Some(deadline),
                ..
            } if now >= deadline => {
                let limit_action = self.policy.pause_action();
                let why = format!(
                    "{reason:?} pause reached its maximum of {:?}",
                    self.policy.max_pause()
                );
                self.apply_limit_action(now, limit_action, why)
                    .or_else(|| Some(self.directive(Action::Hold, None)))
            }
            Phase::Progressing | Phase::Paused { .. } => {
                if self.state.next_check_at.is_some_and(|t| now < t) {
                    Some(self.directive(Action::Wait, None))
                } else {
                    None
                }
            }
        }
    }

    /// Records a check and applies what it leads to: a rollback at the failure limits, a
    /// step completed or an inconclusive pause while progressing, or the end of an
    /// inconclusive pause when healthy again.
    fn apply_check(&mut self, now: Timestamp, report: HealthReport) -> Directive {
        let verdict = report.verdict;
        metrics::counter!("canary_checks_total", "verdict" => verdict.as_str()).increment(1);
        let step = self.state.step;
        self.record(Event::Checked {
            at: now,
            step,
            report: report.clone(),
        });
        if let Some(reason) = self.failed_out(&report) {
            self.transition(
                now,
                Actor::System,
                RolloutCommand::Tick,
                Phase::RollingBack,
                step,
                reason,
            );
            return self.directive(Action::RollBack, Some(report));
        }
        match self.state.phase {
            Phase::Progressing => self.after_progressing_check(now, report),
            Phase::Paused {
                reason: PauseReason::Inconclusive,
                ..
            } if verdict == Verdict::Healthy => {
                self.transition(
                    now,
                    Actor::System,
                    RolloutCommand::Resume,
                    Phase::Progressing,
                    step,
                    "healthy again".into(),
                );
                let weight = self.weight_percent();
                self.directive(Action::SetWeight(weight), Some(report))
            }
            Phase::Paused { reason, .. } => self.directive(Action::Pause(reason), Some(report)),
            _ => self.directive(Action::Hold, Some(report)),
        }
    }

    /// Why the recorded check rolls the canary back (a critical failure, or the consecutive
    /// or total failure limit reached); `None` when it does not.
    fn failed_out(&self, report: &HealthReport) -> Option<String> {
        let c = self.state.counters;
        let p = &self.policy;
        match report.verdict {
            Verdict::Critical => Some(format!("critical check failed: {}", report.reason())),
            Verdict::Unhealthy
                if c.consecutive_failures >= p.failure_limit()
                    || c.total_failures >= p.total_failure_limit() =>
            {
                Some(format!(
                    "{} consecutive / {} total failed checks: {}",
                    c.consecutive_failures,
                    c.total_failures,
                    report.reason()
                ))
            }
            _ => None,
        }
    }

    /// After a recorded check that did not fail out, while progressing: complete the step
    /// (healthy past its minimum time, or healthy `success_limit` times in a row), pause
    /// (inconclusive `inconclusive_limit` times in a row), or hold.
    fn after_progressing_check(&mut self, now: Timestamp, report: HealthReport) -> Directive {
        let verdict = report.verdict;
        let step = self.state.step;
        let c = self.state.counters;
        let p = &self.policy;
        let min = self.plan.steps()[step].min_duration();
        let elapsed = self
            .state
            .step_started_at
            .map(|s| now.saturating_duration_since(s))
            .unwrap_or_default();
        let early = p
            .success_limit()
            .is_some_and(|n| c.consecutive_successes >= n);
        if verdict == Verdict::Healthy && (elapsed >= min || early) {
            let reason = if elapsed >= min {
                format!("step {step} healthy after {elapsed:?}")
            } else {
                format!(
                    "step {step} healthy {} checks in a row",
                    c.consecutive_successes
                )
            };
            let action = self.advance(now, Actor::System, RolloutCommand::Tick, reason);
            return self.directive(action, Some(report));
        }
        if verdict == Verdict::Inconclusive && c.consecutive_inconclusive >= p.inconclusive_limit()
        {
            let to = Phase::Paused {
                reason: PauseReason::Inconclusive,
                since: now,
                deadline: Some(now.saturating_add(p.max_pause())),
            };
            let reason = format!(
                "{} inconclusive checks in a row: {}",
                c.consecutive_inconclusive,
                report.reason()
            );
            self.transition(now, Actor::System, RolloutCommand::Tick, to, step, reason);
            return self.directive(Action::Pause(PauseReason::Inconclusive), Some(report));
        }
        self.directive(Action::Hold, Some(report))
    }

    /// Applies `limit_action`; `None` when it leaves the phase as it is.
    fn apply_limit_action(
        &mut self,
        now: Timestamp,
        limit_action: LimitAction,
        reason: String,
    ) -> Option<Directive> {
        let step = self.state.step;
        match limit_action {
            LimitAction::RollBack => {
                self.transition(
                    now,
                    Actor::System,
                    RolloutCommand::Tick,
                    Phase::RollingBack,
                    step,
                    reason,
                );
                Some(self.directive(Action::RollBack, None))
            }
            LimitAction::Resume => match self.state.phase {
                Phase::Paused { .. } => {
                    self.transition(
                        now,
                        Actor::System,
                        RolloutCommand::Resume,
                        Phase::Progressing,
                        step,
                        reason,
                    );
                    let w = self.weight_percent();
                    Some(self.directive(Action::SetWeight(w), None))
                }
                _ => None,
            },
            LimitAction::Advance => {
                let action = self.advance(now, Actor::System, RolloutCommand::Tick, reason);
                Some(self.directive(action, None))
            }
        }
    }
}
