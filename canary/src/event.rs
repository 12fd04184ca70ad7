//! The entries of a rollout's trail: checks, metric-source errors and transitions.

use metered_clock::Timestamp;

#[cfg(doc)]
use crate::Rollout;
use crate::command::{Actor, RolloutCommand};
use crate::health::HealthReport;
use crate::phase::{Phase, PhaseKind};

/// One entry of a rollout's trail: a check or a transition. Every state change goes through
/// [`Rollout::apply`] with one of these, so the events are the rollout's history and
/// replaying them rebuilds its state.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A health check ran.
    Checked {
        /// When.
        at: Timestamp,
        /// Step judged.
        step: usize,
        /// Its report (inputs, limits, statistics, verdict).
        report: HealthReport,
    },
    /// The metrics source failed to answer.
    SourceError {
        /// When.
        at: Timestamp,
        /// Step at the time.
        step: usize,
        /// The source's message.
        message: String,
    },
    /// The rollout moved to another phase or step.
    Transition {
        /// When.
        at: Timestamp,
        /// Who.
        actor: Actor,
        /// What caused it.
        command: RolloutCommand,
        /// Phase before.
        from: PhaseKind,
        /// Phase after.
        to: Phase,
        /// Step after.
        step: usize,
        /// Canary weight after, in percent.
        weight_percent: u8,
        /// Why, in words.
        reason: String,
    },
}

impl Event {
    /// When the event happened.
    #[must_use]
    pub fn at(&self) -> Timestamp {
        match self {
            Event::Checked { at, .. }
            | Event::SourceError { at, .. }
            | Event::Transition { at, .. } => *at,
        }
    }
}
