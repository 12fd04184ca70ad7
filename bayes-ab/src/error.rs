//! The crate's one error type.

/// Everything that can go wrong in `bayes-ab`.
///
/// Input errors (every variant except [`BayesError::VersionConflict`] and [`BayesError::Storage`]) mean
/// the call changed nothing; fix the input and call again. Storage errors come from an
/// [`ExperimentStore`](crate::ExperimentStore) backend; [`BayesError::is_retryable`] says whether
/// the same call may succeed later.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BayesError {
    /// A Beta prior or distribution parameter is not finite and strictly positive.
    #[error("invalid Beta parameters: alpha = {alpha}, beta = {beta}; both must be finite and > 0")]
    InvalidBetaParameters {
        /// The α (successes) parameter given.
        alpha: f64,
        /// The β (failures) parameter given.
        beta: f64,
    },
    /// More successes than trials were reported for one arm.
    #[error("successes ({successes}) exceed trials ({trials})")]
    SuccessesExceedTrials {
        /// Successes reported.
        successes: u64,
        /// Trials reported.
        trials: u64,
    },
    /// A probability-like setting (credible level, threshold, confidence, quantile) is not
    /// strictly between 0 and 1.
    #[error("{name} must be strictly between 0 and 1, got {value}")]
    InvalidProbability {
        /// Which setting.
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// A numeric setting is out of its domain (negative, NaN, infinite, zero where a positive
    /// number is needed).
    #[error("invalid {name}: {reason}")]
    InvalidParameter {
        /// Which setting or input.
        name: &'static str,
        /// What it must satisfy.
        reason: &'static str,
    },
    /// Traffic weights are empty, contain a zero, or do not sum to 100 % (10,000 basis
    /// points).
    #[error("invalid traffic weights: {reason}")]
    InvalidWeights {
        /// What is wrong with them.
        reason: &'static str,
    },
    /// The number of arms is outside what the operation supports.
    #[error("{operation} needs between {min} and {max} arms, got {got}")]
    ArmCount {
        /// The operation called.
        operation: &'static str,
        /// Arms given.
        got: usize,
        /// Fewest arms supported.
        min: usize,
        /// Most arms supported.
        max: usize,
    },
    /// An arm index is not part of the experiment.
    #[error("arm {index} does not exist (the experiment has {arms} arms)")]
    UnknownArm {
        /// The index given.
        index: usize,
        /// Arms in the experiment.
        arms: usize,
    },
    /// There is not enough data for the estimate asked for (for example a mean from no
    /// observations, or a quantile from an empty sketch).
    #[error("not enough data: {what}")]
    InsufficientData {
        /// What was missing.
        what: &'static str,
    },
    /// Two states cannot be merged (different experiments or different arm layouts).
    #[error("cannot merge: {reason}")]
    Incompatible {
        /// Why.
        reason: &'static str,
    },
    /// A count would overflow `u64`.
    #[error("count overflow")]
    CountOverflow,
    /// The experiment is not in the store.
    #[error("experiment {id:?} not found")]
    ExperimentNotFound {
        /// The experiment id.
        id: String,
    },
    /// An experiment with this id is already stored.
    #[error("experiment {id:?} already exists")]
    ExperimentExists {
        /// The experiment id.
        id: String,
    },
    /// Another writer updated the experiment first (optimistic concurrency); reload and retry.
    #[error("experiment {id:?} changed concurrently: expected version {expected}, found {found}")]
    VersionConflict {
        /// The experiment id.
        id: String,
        /// The version the caller read.
        expected: u64,
        /// The version in the store.
        found: u64,
    },
    /// [`ExperimentStore::merge_once`](crate::ExperimentStore::merge_once) saw the key
    /// before with a different request fingerprint: the merge was refused and nothing
    /// changed. Not retryable (the same call conflicts again); use a new key.
    #[error("idempotency key {key:?} of experiment {id:?} was used with a different request")]
    IdempotencyConflict {
        /// The experiment id.
        id: String,
        /// The idempotency key.
        key: String,
    },
    /// The storage backend failed.
    #[error("storage failure: {message}")]
    Storage {
        /// Backend message.
        message: String,
        /// Whether retrying may succeed.
        retryable: bool,
    },
}

impl BayesError {
    /// Whether the same call may succeed if retried (after reloading state for a
    /// [`BayesError::VersionConflict`]). Input errors are never retryable.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::VersionConflict { .. } => true,
            Self::Storage { retryable, .. } => *retryable,
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
    /// use bayes_ab::{BayesError, Counts};
    ///
    /// let e = Counts::new(3, 2).unwrap_err();
    /// assert_eq!(e.code(), "successes_exceed_trials");
    /// assert!(matches!(e, BayesError::SuccessesExceedTrials { .. }));
    /// ```
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidBetaParameters { .. } => "invalid_beta_parameters",
            Self::SuccessesExceedTrials { .. } => "successes_exceed_trials",
            Self::InvalidProbability { .. } => "invalid_probability",
            Self::InvalidParameter { .. } => "invalid_parameter",
            Self::InvalidWeights { .. } => "invalid_weights",
            Self::ArmCount { .. } => "arm_count",
            Self::UnknownArm { .. } => "unknown_arm",
            Self::InsufficientData { .. } => "insufficient_data",
            Self::Incompatible { .. } => "incompatible",
            Self::CountOverflow => "count_overflow",
            Self::ExperimentNotFound { .. } => "experiment_not_found",
            Self::ExperimentExists { .. } => "experiment_exists",
            Self::VersionConflict { .. } => "version_conflict",
            Self::Storage { .. } => "storage",
            Self::IdempotencyConflict { .. } => "idempotency_conflict",
        }
    }
}

/// Shorthand for `Result<T, BayesError>` inside the crate (not exported, so that globs of
/// several crates never clash on `Result`).
pub(crate) type Result<T, E = BayesError> = std::result::Result<T, E>;

pub(crate) fn check_probability(name: &'static str, value: f64) -> Result<f64> {
    if value > 0.0 && value < 1.0 {
        Ok(value)
    } else {
        Err(BayesError::InvalidProbability { name, value })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::BayesError;

    /// Every variant with its pinned code. The exhaustive match in `variant_index` stops
    /// compiling when a variant is added, so the table cannot silently fall behind.
    fn table() -> Vec<(BayesError, &'static str)> {
        let id = || "exp".to_owned();
        vec![
            (
                BayesError::InvalidBetaParameters {
                    alpha: 0.0,
                    beta: 1.0,
                },
                "invalid_beta_parameters",
            ),
            (
                BayesError::SuccessesExceedTrials {
                    successes: 2,
                    trials: 1,
                },
                "successes_exceed_trials",
            ),
            (
                BayesError::InvalidProbability {
                    name: "p",
                    value: 2.0,
                },
                "invalid_probability",
            ),
            (
                BayesError::InvalidParameter {
                    name: "n",
                    reason: "must be > 0",
                },
                "invalid_parameter",
            ),
            (
                BayesError::InvalidWeights { reason: "empty" },
                "invalid_weights",
            ),
            (
                BayesError::ArmCount {
                    operation: "op",
                    got: 1,
                    min: 2,
                    max: 2,
                },
                "arm_count",
            ),
            (BayesError::UnknownArm { index: 3, arms: 2 }, "unknown_arm"),
            (
                BayesError::InsufficientData { what: "samples" },
                "insufficient_data",
            ),
            (BayesError::Incompatible { reason: "ids" }, "incompatible"),
            (BayesError::CountOverflow, "count_overflow"),
            (
                BayesError::ExperimentNotFound { id: id() },
                "experiment_not_found",
            ),
            (
                BayesError::ExperimentExists { id: id() },
                "experiment_exists",
            ),
            (
                BayesError::VersionConflict {
                    id: id(),
                    expected: 1,
                    found: 2,
                },
                "version_conflict",
            ),
            (
                BayesError::Storage {
                    message: "down".into(),
                    retryable: true,
                },
                "storage",
            ),
            (
                BayesError::IdempotencyConflict {
                    id: id(),
                    key: "k".into(),
                },
                "idempotency_conflict",
            ),
        ]
    }

    fn variant_index(e: &BayesError) -> usize {
        match e {
            BayesError::InvalidBetaParameters { .. } => 0,
            BayesError::SuccessesExceedTrials { .. } => 1,
            BayesError::InvalidProbability { .. } => 2,
            BayesError::InvalidParameter { .. } => 3,
            BayesError::InvalidWeights { .. } => 4,
            BayesError::ArmCount { .. } => 5,
            BayesError::UnknownArm { .. } => 6,
            BayesError::InsufficientData { .. } => 7,
            BayesError::Incompatible { .. } => 8,
            BayesError::CountOverflow => 9,
            BayesError::ExperimentNotFound { .. } => 10,
            BayesError::ExperimentExists { .. } => 11,
            BayesError::VersionConflict { .. } => 12,
            BayesError::Storage { .. } => 13,
            BayesError::IdempotencyConflict { .. } => 14,
        }
    }

    #[test]
    fn every_variant_has_its_pinned_code_and_codes_are_unique() {
        let table = table();
        let variants: BTreeSet<usize> = table.iter().map(|(e, _)| variant_index(e)).collect();
        assert_eq!(variants, (0..15).collect(), "every variant, once");
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
