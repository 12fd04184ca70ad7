//! The crate's one error type.

use std::time::Duration;

use crate::command::RolloutCommand;
use crate::phase::PhaseKind;

/// Why a metrics query gave no usable value ([`CanaryError::NoData`]). No data is never
/// read as healthy: the driver counts it as a metric-source error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NoDataReason {
    /// The query matched no series (no traffic yet, a wrong label value, a metric that
    /// was never exported).
    Empty,
    /// A value was NaN (a 0/0 rate, a quantile of an empty histogram).
    NotANumber,
    /// A value was +∞ or −∞.
    Infinite,
}

impl NoDataReason {
    /// Stable lower-case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            NoDataReason::Empty => "empty",
            NoDataReason::NotANumber => "nan",
            NoDataReason::Infinite => "infinite",
        }
    }
}

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
    /// A metrics query answered, but with nothing to judge (an empty result, NaN, ±∞).
    /// Never read as healthy; ask again at the next check (the data may appear), and check
    /// the query's label values if it persists.
    #[error("metric {metric:?}: no data ({})", reason.as_str())]
    NoData {
        /// The metric (query name).
        metric: String,
        /// Why.
        reason: NoDataReason,
    },
    /// The metrics backend refused the query (Prometheus's error JSON: `bad_data`,
    /// `execution`, …), or it returned a shape the query's kind cannot use (several series
    /// for an aggregate). Fix the query template; retrying does not help.
    #[error("metric {metric:?}: query refused ({error_type}): {message}")]
    MetricsQuery {
        /// The metric (query name).
        metric: String,
        /// The backend's error type (`bad_data`, `execution`, `shape`, …).
        error_type: String,
        /// The backend's message.
        message: String,
    },
    /// The metrics backend answered with an HTTP error status. Retryable for 429 and 5xx.
    #[error("metrics backend: HTTP {status}: {message}")]
    MetricsHttp {
        /// The HTTP status code.
        status: u16,
        /// The start of the body, or the backend's error message.
        message: String,
    },
    /// A metrics query did not answer within its timeout. Retryable.
    #[error("metrics backend: no answer within {0:?}")]
    MetricsTimeout(Duration),
    /// The metrics backend could not be reached (connection refused or reset), or its
    /// circuit breaker is open after repeated failures. Retryable later.
    #[error("metrics backend unavailable: {message}")]
    MetricsUnavailable {
        /// What happened.
        message: String,
    },
    /// The metrics backend's answer could not be decoded (not JSON, an unknown result type,
    /// a value that is not a number, a body over the size limit). Not retryable.
    #[error("metrics backend: undecodable answer: {message}")]
    MetricsDecode {
        /// What is wrong with it.
        message: String,
    },
    /// A `RolloutStore` (feature `tokio`) backend failed; nothing was stored.
    /// [`CanaryError::is_retryable`] says whether the same call may succeed later.
    #[error("rollout storage: {message}")]
    Storage {
        /// The backend's message.
        message: String,
        /// Whether retrying may succeed.
        retryable: bool,
    },
    /// A rollout was saved from a stale version: another writer (another replica) changed it
    /// first, and nothing was stored. Load it again, decide again and save. Retryable.
    #[error("rollout {id:?} changed: expected version {expected}, found {found}")]
    VersionConflict {
        /// The rollout.
        id: String,
        /// The version the write was based on.
        expected: u64,
        /// The version stored now.
        found: u64,
    },
}

impl CanaryError {
    /// Whether the same call may succeed if retried. Configuration, observation, transition
    /// and trail-content errors never are; trail storage and metrics-source failures may be,
    /// and so may no data, timeouts, an unreachable backend and HTTP 429 / 5xx; refused
    /// queries and undecodable answers are not.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Audit(e) => e.is_retryable(),
            Self::Storage { retryable, .. } => *retryable,
            Self::VersionConflict { .. } => true,
            Self::MetricsSource { retryable, .. } => *retryable,
            Self::MetricsHttp { status, .. } => *status == 429 || *status >= 500,
            Self::NoData { .. } | Self::MetricsTimeout(_) | Self::MetricsUnavailable { .. } => true,
            _ => false,
        }
    }

    /// A short snake_case name of the variant, for logs, metrics labels and API error
    /// bodies.
    ///
    /// The codes are **stable**: a code never changes meaning and is never reused, whatever
    /// happens to the variant's name or message. A new variant gets a new code.
    ///
    /// ```
    /// use canary::{CanaryError, Plan};
    ///
    /// let e: CanaryError = Plan::new(vec![], std::time::Duration::from_secs(60)).unwrap_err();
    /// assert_eq!(e.code(), "invalid_plan");
    /// ```
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidPlan { .. } => "invalid_plan",
            Self::InvalidPolicy { .. } => "invalid_policy",
            Self::InvalidObservation { .. } => "invalid_observation",
            Self::IllegalTransition { .. } => "illegal_transition",
            Self::InvalidCommand { .. } => "invalid_command",
            Self::UnknownRollout { .. } => "unknown_rollout",
            Self::DuplicateRollout { .. } => "duplicate_rollout",
            Self::TrailDecode { .. } => "trail_decode",
            Self::TrailMismatch { .. } => "trail_mismatch",
            Self::Audit(_) => "audit",
            Self::MetricsSource { .. } => "metrics_source",
            Self::NoData { .. } => "no_data",
            Self::MetricsQuery { .. } => "metrics_query",
            Self::MetricsHttp { .. } => "metrics_http",
            Self::MetricsTimeout(_) => "metrics_timeout",
            Self::MetricsUnavailable { .. } => "metrics_unavailable",
            Self::MetricsDecode { .. } => "metrics_decode",
            Self::Storage { .. } => "storage",
            Self::VersionConflict { .. } => "version_conflict",
        }
    }
}

/// Shorthand for `Result<T, CanaryError>` inside the crate (not exported, so that globs of
/// several crates never clash on `Result`).
pub(crate) type Result<T, E = CanaryError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::CanaryError;
    use crate::command::RolloutCommand;
    use crate::phase::PhaseKind;

    /// Every variant with its pinned code. The exhaustive match in `variant_index` stops
    /// compiling when a variant is added, so the table cannot silently fall behind.
    fn table() -> Vec<(CanaryError, &'static str)> {
        let reason = || "why".to_owned();
        let id = || "api-v2".to_owned();
        vec![
            (
                CanaryError::InvalidPlan { reason: reason() },
                "invalid_plan",
            ),
            (
                CanaryError::InvalidPolicy {
                    field: "checks",
                    reason: reason(),
                },
                "invalid_policy",
            ),
            (
                CanaryError::InvalidObservation { reason: reason() },
                "invalid_observation",
            ),
            (
                CanaryError::IllegalTransition {
                    phase: PhaseKind::Pending,
                    command: RolloutCommand::Resume,
                    hint: "start it",
                },
                "illegal_transition",
            ),
            (
                CanaryError::InvalidCommand { reason: reason() },
                "invalid_command",
            ),
            (CanaryError::UnknownRollout { id: id() }, "unknown_rollout"),
            (
                CanaryError::DuplicateRollout { id: id() },
                "duplicate_rollout",
            ),
            (
                CanaryError::TrailDecode {
                    index: 0,
                    reason: reason(),
                },
                "trail_decode",
            ),
            (
                CanaryError::TrailMismatch {
                    index: 0,
                    reason: reason(),
                },
                "trail_mismatch",
            ),
            (
                CanaryError::Audit(audit_chain::AuditError::InvalidConfig(reason())),
                "audit",
            ),
            (
                CanaryError::MetricsSource {
                    message: reason(),
                    retryable: true,
                },
                "metrics_source",
            ),
            (
                CanaryError::NoData {
                    metric: reason(),
                    reason: super::NoDataReason::Empty,
                },
                "no_data",
            ),
            (
                CanaryError::MetricsQuery {
                    metric: reason(),
                    error_type: "bad_data".into(),
                    message: reason(),
                },
                "metrics_query",
            ),
            (
                CanaryError::MetricsHttp {
                    status: 500,
                    message: reason(),
                },
                "metrics_http",
            ),
            (
                CanaryError::MetricsTimeout(std::time::Duration::from_secs(1)),
                "metrics_timeout",
            ),
            (
                CanaryError::MetricsUnavailable { message: reason() },
                "metrics_unavailable",
            ),
            (
                CanaryError::MetricsDecode { message: reason() },
                "metrics_decode",
            ),
            (
                CanaryError::Storage {
                    message: reason(),
                    retryable: true,
                },
                "storage",
            ),
            (
                CanaryError::VersionConflict {
                    id: id(),
                    expected: 1,
                    found: 2,
                },
                "version_conflict",
            ),
        ]
    }

    fn variant_index(e: &CanaryError) -> usize {
        match e {
            CanaryError::InvalidPlan { .. } => 0,
            CanaryError::InvalidPolicy { .. } => 1,
            CanaryError::InvalidObservation { .. } => 2,
            CanaryError::IllegalTransition { .. } => 3,
            CanaryError::InvalidCommand { .. } => 4,
            CanaryError::UnknownRollout { .. } => 5,
            CanaryError::DuplicateRollout { .. } => 6,
            CanaryError::TrailDecode { .. } => 7,
            CanaryError::TrailMismatch { .. } => 8,
            CanaryError::Audit(_) => 9,
            CanaryError::MetricsSource { .. } => 10,
            CanaryError::NoData { .. } => 11,
            CanaryError::MetricsQuery { .. } => 12,
            CanaryError::MetricsHttp { .. } => 13,
            CanaryError::MetricsTimeout(_) => 14,
            CanaryError::MetricsUnavailable { .. } => 15,
            CanaryError::MetricsDecode { .. } => 16,
            CanaryError::Storage { .. } => 17,
            CanaryError::VersionConflict { .. } => 18,
        }
    }

    #[test]
    fn every_variant_has_its_pinned_code_and_codes_are_unique() {
        let table = table();
        let variants: BTreeSet<usize> = table.iter().map(|(e, _)| variant_index(e)).collect();
        assert_eq!(variants, (0..19).collect(), "every variant, once");
        let mut codes = BTreeSet::new();
        for (error, code) in &table {
            assert_eq!(error.code(), *code, "{error:?}");
            assert!(codes.insert(*code), "code {code:?} used twice");
            let snake = code
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            assert!(snake && !code.is_empty(), "{code:?} is not snake_case");
        }
    }
}
