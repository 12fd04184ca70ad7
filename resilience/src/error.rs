//! The crate's error type.

use std::time::Duration;

/// Everything this crate can refuse or reject.
///
/// Rejections (`CircuitOpen`, `RateLimited`, `BulkheadFull`, `Timeout`,
/// `KeyCapacityExhausted`) are domain outcomes: the protected call was not made or did not
/// finish, and trying again later may work ([`is_retryable`](Error::is_retryable)).
/// `InsufficientCapacity` and `InvalidConfig` are caller mistakes that no retry fixes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The circuit breaker did not permit the call. Retry after `retry_after` when known
    /// (the rest of the open wait); fail fast or use a fallback meanwhile.
    #[error("circuit breaker open: call not permitted")]
    CircuitOpen {
        /// Time left in the open wait; `None` when forced open or half-open.
        retry_after: Option<Duration>,
    },
    /// The rate limiter has no permit now; one will be available after `retry_after`
    /// (suitable for an HTTP `Retry-After` header).
    #[error("rate limited: next permit in {retry_after:?}")]
    RateLimited {
        /// Time until the requested permits are available.
        retry_after: Duration,
    },
    /// More permits were requested at once than the limiter's burst: this can never
    /// succeed. Ask for fewer or raise the burst.
    #[error("requested {requested} permits at once but the burst is {burst}")]
    InsufficientCapacity {
        /// Permits requested.
        requested: u32,
        /// The limiter's burst.
        burst: u32,
    },
    /// The keyed limiter holds its maximum number of keys and none is idle. Retry later
    /// (keys become idle as their buckets refill) or raise `max_keys`.
    #[error("keyed rate limiter is full: {max_keys} keys, none idle")]
    KeyCapacityExhausted {
        /// The configured maximum.
        max_keys: usize,
    },
    /// The bulkhead has no free slot and the call could not wait (or waited too long).
    #[error("bulkhead full: {max_concurrent} calls in flight")]
    BulkheadFull {
        /// The configured concurrency limit.
        max_concurrent: u32,
    },
    /// The call did not complete within its time limit; it was dropped (cancelled).
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A configuration value is invalid; nothing was built.
    #[error("invalid {field}: {reason}")]
    InvalidConfig {
        /// The setting at fault.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl Error {
    /// Whether the same call may succeed if tried again later.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::CircuitOpen { .. }
            | Error::RateLimited { .. }
            | Error::KeyCapacityExhausted { .. }
            | Error::BulkheadFull { .. }
            | Error::Timeout(_) => true,
            Error::InsufficientCapacity { .. } | Error::InvalidConfig { .. } => false,
        }
    }

    /// How long to wait before trying again, when the rejecting primitive knows.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::CircuitOpen { retry_after } => *retry_after,
            Error::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

/// The result of a protected call: either this crate rejected it, or the call itself failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    /// Not made or not finished: rejected by a breaker, limiter or bulkhead, or timed out.
    #[error(transparent)]
    Rejected(#[from] Error),
    /// The call ran and returned this error.
    #[error(transparent)]
    Inner(E),
}

impl<E> CallError<E> {
    /// The call's own error, if it ran and failed.
    pub fn into_inner(self) -> Option<E> {
        match self {
            CallError::Inner(e) => Some(e),
            CallError::Rejected(_) => None,
        }
    }

    /// The rejection, if this crate refused or cut the call.
    #[must_use]
    pub fn rejection(&self) -> Option<&Error> {
        match self {
            CallError::Rejected(e) => Some(e),
            CallError::Inner(_) => None,
        }
    }
}
