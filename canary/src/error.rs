//! The crate's one error type.

use crate::command::RolloutCommand;
use crate::phase::PhaseKind;

/// Everything that can go wrong in `canary`.
///
/// Configuration, observation, command and transition errors mean the call changed nothing: fix the
/// input (or issue a command that is legal in the current phase) and call again. Trail and
/// metrics-source errors come from I/O outside this crate; [`CanaryError::is_retryable`] says
/// whether the same call may succeed later.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CanaryError {
    /// The rollout plan is not valid (no steps, weights not strictly increasing, last weight
    /// not 100, zero check interval, …). Nothing was created.
    #[error("invalid plan: {reason}")]
    InvalidPlan {
        /// What is wrong with it.
        reason: String,
    },
    /// A health-policy setting is out of its domain. Nothing was created.
    #[error("invalid health policy: {field}: {reason}")]
    InvalidPolicy {
        /// Which setting.
        field: &'static str,
        /// What it must satisfy.
        reason: String,
    },
    /// Observations are inconsistent (more errors than requests, a non-finite latency, …).
    /// The rollout did not change.
    #[error("invalid observation: {reason}")]
    InvalidObservation {
        /// What is wrong with them.
        reason: String,
    },
    /// The command is not allowed in the rollout's current phase. The rollout did not change;
    /// [`PhaseKind`] says where it is.
    #[error("{command:?} is not allowed while the rollout is {phase:?}: {hint}")]
    IllegalTransition {
        /// The phase the rollout is in.
        phase: PhaseKind,
        /// The command refused.
        command: RolloutCommand,
        /// What to do instead.
        hint: &'static str,
    },
    /// A command's text (operator name, note) is too long for the trail. The rollout did not
    /// change.
    #[error("invalid command input: {reason}")]
    InvalidCommand {
        /// What is wrong with it.
        reason: String,
    },
    /// No rollout with this id is managed.
    #[error("no rollout with id {id:?}")]
    UnknownRollout {
        /// The id asked for.
        id: String,
    },
    /// A rollout with this id is already managed; remove it first.
    #[error("a rollout with id {id:?} already exists")]
    DuplicateRollout {
        /// The id given.
        id: String,
    },
    /// A trail entry could not be decoded into a rollout event.
    #[error("trail entry {index} cannot be decoded: {reason}")]
    TrailDecode {
        /// Position of the entry in the replayed sequence.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A decoded trail event does not fit the state rebuilt so far (a transition from a
    /// different phase, an event for another rollout, …): the trail is not this rollout's, or
    /// entries are missing.
    #[error("trail event {index} does not fit the rebuilt state: {reason}")]
    TrailMismatch {
        /// Position of the event in the replayed sequence.
        index: usize,
        /// Why it does not fit.
        reason: String,
    },
    /// Writing to or reading from the audit trail failed.
    #[error("audit trail: {0}")]
    Audit(#[from] audit_chain::AuditError),
    /// The metrics source failed (only returned by the async driver).
    #[error("metrics source: {message}")]
    MetricsSource {
        /// The source's message.
        message: String,
        /// Whether asking again may succeed.
        retryable: bool,
    },
}

impl CanaryError {
    /// Whether the same call may succeed if retried. Configuration, observation, transition
    /// and trail-content errors never are; trail storage and metrics-source failures may be.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Audit(e) => e.is_retryable(),
            Self::MetricsSource { retryable, .. } => *retryable,
            _ => false,
        }
    }
}

/// Shorthand for `Result<T, CanaryError>` inside the crate (not exported, so that globs of
/// several crates never clash on `Result`).
pub(crate) type Result<T, E = CanaryError> = std::result::Result<T, E>;
