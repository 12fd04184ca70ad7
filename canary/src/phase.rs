//! Where a rollout is: its [`Phase`], the data-free [`PhaseKind`], and why it is paused.

#[cfg(doc)]
use crate::{LimitAction, Rollout};
use metered_clock::Timestamp;
use serde::{Deserialize, Serialize};

/// Why a rollout is paused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PauseReason {
    /// An operator paused it; only an operator resumes it.
    Manual,
    /// Too many inconclusive checks in a row; a healthy check resumes it, and the policy's
    /// maximum pause ends it with the configured [`LimitAction`].
    Inconclusive,
    /// The next step needs an approval ([`Rollout::promote`]).
    AwaitingApproval,
}

/// Where a rollout is.
///
/// ```text
/// pending ─start─▶ progressing(step) ⇄ paused(reason)
///                    │  │                 │  │
///                    │  └──▶ promoting ◀──┘  │ ──▶ succeeded
///                    └─────▶ rolling back ◀──┘ ──▶ rolled back
///   (any non-final phase) ─abort─▶ aborted
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Phase {
    /// Created, not started; the canary gets no traffic.
    Pending,
    /// At a step, checked every interval.
    Progressing,
    /// Held at the current step's weight; checks still run and can still roll back.
    Paused {
        /// Why.
        reason: PauseReason,
        /// When the pause began.
        since: Timestamp,
        /// When an inconclusive pause ends with the policy's outcome.
        deadline: Option<Timestamp>,
    },
    /// The canary is to become the stable version (100 %); the next tick completes it.
    Promoting,
    /// Final: the canary is the stable version.
    Succeeded,
    /// All traffic is to go back to stable; the next tick completes it.
    RollingBack,
    /// Final: the canary was rolled back.
    RolledBack,
    /// Final: an operator aborted the rollout; all traffic is on stable.
    Aborted,
}

/// [`Phase`] without its data, for errors and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PhaseKind {
    /// [`Phase::Pending`].
    Pending,
    /// [`Phase::Progressing`].
    Progressing,
    /// [`Phase::Paused`].
    Paused,
    /// [`Phase::Promoting`].
    Promoting,
    /// [`Phase::Succeeded`].
    Succeeded,
    /// [`Phase::RollingBack`].
    RollingBack,
    /// [`Phase::RolledBack`].
    RolledBack,
    /// [`Phase::Aborted`].
    Aborted,
}

impl PhaseKind {
    /// Stable lower-case name (used in the trail and metrics).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseKind::Pending => "pending",
            PhaseKind::Progressing => "progressing",
            PhaseKind::Paused => "paused",
            PhaseKind::Promoting => "promoting",
            PhaseKind::Succeeded => "succeeded",
            PhaseKind::RollingBack => "rolling_back",
            PhaseKind::RolledBack => "rolled_back",
            PhaseKind::Aborted => "aborted",
        }
    }

    /// Whether the rollout is over.
    #[must_use]
    pub fn is_final(self) -> bool {
        matches!(
            self,
            PhaseKind::Succeeded | PhaseKind::RolledBack | PhaseKind::Aborted
        )
    }
}

impl Phase {
    /// The phase without its data.
    #[must_use]
    pub fn kind(&self) -> PhaseKind {
        match self {
            Phase::Pending => PhaseKind::Pending,
            Phase::Progressing => PhaseKind::Progressing,
            Phase::Paused { .. } => PhaseKind::Paused,
            Phase::Promoting => PhaseKind::Promoting,
            Phase::Succeeded => PhaseKind::Succeeded,
            Phase::RollingBack => PhaseKind::RollingBack,
            Phase::RolledBack => PhaseKind::RolledBack,
            Phase::Aborted => PhaseKind::Aborted,
        }
    }
}
