//! The crate's one error type.

/// Everything that can go wrong in `bayes-ab`.
///
/// Input errors (every variant except [`Error::VersionConflict`] and [`Error::Storage`]) mean
/// the call changed nothing; fix the input and call again. Storage errors come from an
/// [`ExperimentStore`](crate::ExperimentStore) backend; [`Error::is_retryable`] says whether
/// the same call may succeed later.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
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
    /// The storage backend failed.
    #[error("storage failure: {message}")]
    Storage {
        /// Backend message.
        message: String,
        /// Whether retrying may succeed.
        retryable: bool,
    },
}

impl Error {
    /// Whether the same call may succeed if retried (after reloading state for a
    /// [`Error::VersionConflict`]). Input errors are never retryable.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::VersionConflict { .. } => true,
            Self::Storage { retryable, .. } => *retryable,
            _ => false,
        }
    }
}

/// Shorthand for `Result<T, bayes_ab::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn check_probability(name: &'static str, value: f64) -> Result<f64> {
    if value > 0.0 && value < 1.0 {
        Ok(value)
    } else {
        Err(Error::InvalidProbability { name, value })
    }
}
