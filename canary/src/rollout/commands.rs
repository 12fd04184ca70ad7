//! Operator commands: start, promote, skip a step, pause, resume, roll back, abort.

use metered_clock::Timestamp;

use super::Rollout;
use crate::command::{Actor, COMMAND_TEXT_LEN_MAX, RolloutCommand};
use crate::directive::{Action, Directive};
use crate::error::{CanaryError, Result};
use crate::phase::{PauseReason, Phase, PhaseKind};

impl Rollout {
    /// Starts the rollout at its first step (starting counts as approving it).
    ///
    /// # Errors
    /// [`CanaryError::InvalidCommand`] for an operator name or note longer than
    /// [`COMMAND_TEXT_LEN_MAX`]; [`CanaryError::IllegalTransition`] unless pending.
    pub fn start(&mut self, now: Timestamp, actor: Actor) -> Result<Directive> {
        Self::check_text(&actor, "")?;
        self.require(
            RolloutCommand::Start,
            &[PhaseKind::Pending],
            "a rollout starts once",
        )?;
        self.transition(
            now,
            actor,
            RolloutCommand::Start,
            Phase::Progressing,
            0,
            "started".into(),
        );
        Ok(self.directive(Action::SetWeight(self.weight_percent()), None))
    }

    /// Moves to the next step now (approving its gate), whatever the checks say; from the
    /// last step below 100 % this promotes.
    ///
    /// # Errors
    /// [`CanaryError::InvalidCommand`] for an operator name or note longer than
    /// [`COMMAND_TEXT_LEN_MAX`]; [`CanaryError::IllegalTransition`] unless progressing or paused.
    pub fn promote(&mut self, now: Timestamp, actor: Actor) -> Result<Directive> {
        Self::check_text(&actor, "")?;
        self.require(
            RolloutCommand::Promote,
            &[PhaseKind::Progressing, PhaseKind::Paused],
            "only a running rollout can move on",
        )?;
        let reason = format!("promoted by {actor}");
        let action = self.advance(now, actor, RolloutCommand::Promote, reason);
        Ok(self.directive(action, None))
    }

    /// Promotes the canary to 100 % now, skipping the remaining steps.
    ///
    /// # Errors
    /// [`CanaryError::InvalidCommand`] for an operator name or note longer than
    /// [`COMMAND_TEXT_LEN_MAX`]; [`CanaryError::IllegalTransition`] unless progressing or paused.
    pub fn promote_full(&mut self, now: Timestamp, actor: Actor) -> Result<Directive> {
        Self::check_text(&actor, "")?;
        self.require(
            RolloutCommand::PromoteFull,
            &[PhaseKind::Progressing, PhaseKind::Paused],
            "only a running rollout can be promoted",
        )?;
        let reason = format!("fully promoted by {actor}");
        let last = self.plan.last_index();
        self.transition(
            now,
            actor,
            RolloutCommand::PromoteFull,
            Phase::Promoting,
            last,
            reason,
        );
        Ok(self.directive(Action::Promote, None))
    }

    /// Skips the rest of the current step (its minimum time and sample) and moves on; unlike
    /// [`promote`](Rollout::promote) it refuses a paused rollout, which must be resumed or
    /// promoted deliberately.
    ///
    /// # Errors
    /// [`CanaryError::InvalidCommand`] for an operator name or note longer than
    /// [`COMMAND_TEXT_LEN_MAX`]; [`CanaryError::IllegalTransition`] unless progressing.
    pub fn skip_step(&mut self, now: Timestamp, actor: Actor) -> Result<Directive> {
        Self::check_text(&actor, "")?;
        self.require(
            RolloutCommand::SkipStep,
            &[PhaseKind::Progressing],
            "resume or promote a paused rollout instead",
        )?;
        let reason = format!("step {} skipped by {actor}", self.state.step);
        let action = self.advance(now, actor, RolloutCommand::SkipStep, reason);
        Ok(self.directive(action, None))
    }

    /// Pauses at the current weight until [`resume`](Rollout::resume)d. Checks keep running
    /// and can still roll back.
    ///
    /// # Errors
    /// [`CanaryError::InvalidCommand`] for an operator name or note longer than
    /// [`COMMAND_TEXT_LEN_MAX`]; [`CanaryError::IllegalTransition`] unless progressing.
    pub fn pause(&mut self, now: Timestamp, actor: Actor, note: &str) -> Result<Directive> {
        Self::check_text(&actor, note)?;
        self.require(
            RolloutCommand::Pause,
            &[PhaseKind::Progressing],
            "only a progressing rollout can be paused",
        )?;
        let to = Phase::Paused {
            reason: PauseReason::Manual,
            since: now,
            deadline: None,
        };
        let step = self.state.step;
        self.transition(now, actor, RolloutCommand::Pause, to, step, note.to_owned());
        Ok(self.directive(Action::Pause(PauseReason::Manual), None))
    }

    /// Resumes a manually or inconclusively paused rollout at its current step.
    ///
    /// # Errors
    /// [`CanaryError::InvalidCommand`] for an operator name or note longer than
    /// [`COMMAND_TEXT_LEN_MAX`]; [`CanaryError::IllegalTransition`] unless paused; a rollout awaiting approval is
    /// continued with [`promote`](Rollout::promote).
    pub fn resume(&mut self, now: Timestamp, actor: Actor) -> Result<Directive> {
        Self::check_text(&actor, "")?;
        self.require(
            RolloutCommand::Resume,
            &[PhaseKind::Paused],
            "only a paused rollout can resume",
        )?;
        if let Phase::Paused {
            reason: PauseReason::AwaitingApproval,
            ..
        } = self.state.phase
        {
            return Err(CanaryError::IllegalTransition {
                phase: PhaseKind::Paused,
                command: RolloutCommand::Resume,
                hint: "the next step needs approval: promote to approve it",
            });
        }
        let step = self.state.step;
        let reason = format!("resumed by {actor}");
        self.transition(
            now,
            actor,
            RolloutCommand::Resume,
            Phase::Progressing,
            step,
            reason,
        );
        Ok(self.directive(Action::SetWeight(self.weight_percent()), None))
    }

    /// Rolls the canary back now.
    ///
    /// # Errors
    /// [`CanaryError::InvalidCommand`] for an operator name or note longer than
    /// [`COMMAND_TEXT_LEN_MAX`]; [`CanaryError::IllegalTransition`] unless progressing or paused.
    pub fn rollback(&mut self, now: Timestamp, actor: Actor, note: &str) -> Result<Directive> {
        Self::check_text(&actor, note)?;
        self.require(
            RolloutCommand::RollBack,
            &[PhaseKind::Progressing, PhaseKind::Paused],
            "only a running rollout can be rolled back",
        )?;
        let step = self.state.step;
        self.transition(
            now,
            actor,
            RolloutCommand::RollBack,
            Phase::RollingBack,
            step,
            note.to_owned(),
        );
        Ok(self.directive(Action::RollBack, None))
    }

    /// Aborts the rollout: all traffic to stable, final.
    ///
    /// # Errors
    /// [`CanaryError::InvalidCommand`] for an operator name or note longer than
    /// [`COMMAND_TEXT_LEN_MAX`]; [`CanaryError::IllegalTransition`] when the rollout is already over.
    pub fn abort(&mut self, now: Timestamp, actor: Actor, note: &str) -> Result<Directive> {
        Self::check_text(&actor, note)?;
        self.require(
            RolloutCommand::Abort,
            &[
                PhaseKind::Pending,
                PhaseKind::Progressing,
                PhaseKind::Paused,
                PhaseKind::Promoting,
                PhaseKind::RollingBack,
            ],
            "the rollout is already over",
        )?;
        let step = self.state.step;
        self.transition(
            now,
            actor,
            RolloutCommand::Abort,
            Phase::Aborted,
            step,
            note.to_owned(),
        );
        Ok(self.directive(Action::RollBack, None))
    }

    fn check_text(actor: &Actor, note: &str) -> Result<()> {
        let name_len = match actor {
            Actor::System => 0,
            Actor::Operator(n) => n.len(),
        };
        if name_len > COMMAND_TEXT_LEN_MAX || note.len() > COMMAND_TEXT_LEN_MAX {
            return Err(CanaryError::InvalidCommand {
                reason: format!(
                    "operator names and notes are limited to {COMMAND_TEXT_LEN_MAX} bytes"
                ),
            });
        }
        Ok(())
    }

    fn require(
        &self,
        command: RolloutCommand,
        allowed: &[PhaseKind],
        hint: &'static str,
    ) -> Result<()> {
        let phase = self.state.phase.kind();
        if allowed.contains(&phase) {
            Ok(())
        } else {
            Err(CanaryError::IllegalTransition {
                phase,
                command,
                hint,
            })
        }
    }
}
