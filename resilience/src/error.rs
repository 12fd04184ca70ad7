//! The crate's error type.

use std::time::Duration;

/// Everything this crate can refuse or reject.
///
/// Rejections (`CircuitOpen`, `RateLimited`, `BulkheadFull`, `ConcurrencyLimited`,
/// `LoadShed`, `Timeout`, `KeyCapacityExhausted`) are domain outcomes: the protected call was not made or did not
/// finish, and trying again later may work ([`is_retryable`](ResilienceError::is_retryable)).
/// `InsufficientCapacity` and `InvalidConfig` are caller mistakes that no retry fixes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResilienceError {
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
    /// The adaptive concurrency limiter is at its current limit. Retry after `retry_after`
    /// (about one recent call latency, when a slot is likely to be free) or fail fast.
    #[error("concurrency limited: {limit} calls in flight")]
    ConcurrencyLimited {
        /// The limit at the time of the rejection.
        limit: u32,
        /// A hint: the recent average call latency.
        retry_after: Duration,
    },
    /// The load shedder rejected a request of this priority because the service is
    /// overloaded (lower priorities go first), or the request waited in the shedder's queue
    /// past its sojourn limit. Retry after `retry_after`, or give up if the work is optional.
    #[error("load shed: priority {priority} rejected under overload")]
    LoadShed {
        /// The rejected request's priority (0 = most sheddable, 255 = most critical).
        priority: u8,
        /// A hint: the recent average call latency.
        retry_after: Duration,
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

impl ResilienceError {
    /// Whether the same call may succeed if tried again later.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            ResilienceError::CircuitOpen { .. }
            | ResilienceError::RateLimited { .. }
            | ResilienceError::KeyCapacityExhausted { .. }
            | ResilienceError::BulkheadFull { .. }
            | ResilienceError::ConcurrencyLimited { .. }
            | ResilienceError::LoadShed { .. }
            | ResilienceError::Timeout(_) => true,
            ResilienceError::InsufficientCapacity { .. }
            | ResilienceError::InvalidConfig { .. } => false,
        }
    }

    /// A stable, machine-readable name for the variant, in snake_case: log it, count it,
    /// put it in an API response. Codes never change once released and are never reused;
    /// a new variant gets a new code. The message ([`Display`](std::fmt::Display)) may
    /// change; the code does not.
    ///
    /// | variant | code |
    /// |---|---|
    /// | [`CircuitOpen`](Self::CircuitOpen) | `circuit_open` |
    /// | [`RateLimited`](Self::RateLimited) | `rate_limited` |
    /// | [`InsufficientCapacity`](Self::InsufficientCapacity) | `insufficient_capacity` |
    /// | [`KeyCapacityExhausted`](Self::KeyCapacityExhausted) | `key_capacity_exhausted` |
    /// | [`BulkheadFull`](Self::BulkheadFull) | `bulkhead_full` |
    /// | [`Timeout`](Self::Timeout) | `timeout` |
    /// | [`ConcurrencyLimited`](Self::ConcurrencyLimited) | `concurrency_limited` |
    /// | [`LoadShed`](Self::LoadShed) | `load_shed` |
    /// | [`InvalidConfig`](Self::InvalidConfig) | `invalid_config` |
    ///
    /// ```
    /// use resilience::ResilienceError;
    /// assert_eq!(ResilienceError::CircuitOpen { retry_after: None }.code(), "circuit_open");
    /// ```
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            ResilienceError::CircuitOpen { .. } => "circuit_open",
            ResilienceError::RateLimited { .. } => "rate_limited",
            ResilienceError::InsufficientCapacity { .. } => "insufficient_capacity",
            ResilienceError::KeyCapacityExhausted { .. } => "key_capacity_exhausted",
            ResilienceError::BulkheadFull { .. } => "bulkhead_full",
            ResilienceError::Timeout(_) => "timeout",
            ResilienceError::InvalidConfig { .. } => "invalid_config",
            ResilienceError::ConcurrencyLimited { .. } => "concurrency_limited",
            ResilienceError::LoadShed { .. } => "load_shed",
        }
    }

    /// How long to wait before trying again, when the rejecting primitive knows.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ResilienceError::CircuitOpen { retry_after } => *retry_after,
            ResilienceError::RateLimited { retry_after }
            | ResilienceError::ConcurrencyLimited { retry_after, .. }
            | ResilienceError::LoadShed { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// The result of a protected call: either this crate rejected it, or the call itself failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    /// Not made or not finished: rejected by a breaker, limiter or bulkhead, or timed out.
    #[error(transparent)]
    Rejected(#[from] ResilienceError),
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
    pub fn rejection(&self) -> Option<&ResilienceError> {
        match self {
            CallError::Rejected(e) => Some(e),
            CallError::Inner(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use super::ResilienceError;

    /// One value of every variant with its pinned code. The exhaustive match in `ordinal`
    /// stops compiling when a variant is added, until it is listed here too.
    fn every_variant() -> Vec<(ResilienceError, &'static str)> {
        vec![
            (
                ResilienceError::CircuitOpen {
                    retry_after: Some(Duration::from_secs(1)),
                },
                "circuit_open",
            ),
            (
                ResilienceError::RateLimited {
                    retry_after: Duration::from_millis(10),
                },
                "rate_limited",
            ),
            (
                ResilienceError::InsufficientCapacity {
                    requested: 5,
                    burst: 4,
                },
                "insufficient_capacity",
            ),
            (
                ResilienceError::KeyCapacityExhausted { max_keys: 8 },
                "key_capacity_exhausted",
            ),
            (
                ResilienceError::BulkheadFull { max_concurrent: 2 },
                "bulkhead_full",
            ),
            (ResilienceError::Timeout(Duration::from_secs(2)), "timeout"),
            (
                ResilienceError::InvalidConfig {
                    field: "burst",
                    reason: "must be at least 1",
                },
                "invalid_config",
            ),
            (
                ResilienceError::ConcurrencyLimited {
                    limit: 10,
                    retry_after: Duration::from_millis(5),
                },
                "concurrency_limited",
            ),
            (
                ResilienceError::LoadShed {
                    priority: 0,
                    retry_after: Duration::from_millis(5),
                },
                "load_shed",
            ),
        ]
    }

    fn ordinal(e: &ResilienceError) -> usize {
        match e {
            ResilienceError::CircuitOpen { .. } => 0,
            ResilienceError::RateLimited { .. } => 1,
            ResilienceError::InsufficientCapacity { .. } => 2,
            ResilienceError::KeyCapacityExhausted { .. } => 3,
            ResilienceError::BulkheadFull { .. } => 4,
            ResilienceError::Timeout(_) => 5,
            ResilienceError::InvalidConfig { .. } => 6,
            ResilienceError::ConcurrencyLimited { .. } => 7,
            ResilienceError::LoadShed { .. } => 8,
        }
    }
    const VARIANTS: usize = 9;

    #[test]
    fn every_variant_has_its_pinned_code_and_codes_are_unique() {
        let table = every_variant();
        let listed: HashSet<usize> = table.iter().map(|(e, _)| ordinal(e)).collect();
        assert_eq!(listed, (0..VARIANTS).collect(), "list every variant once");
        assert_eq!(table.len(), VARIANTS);
        let mut seen = HashSet::new();
        for (error, code) in &table {
            assert_eq!(error.code(), *code, "{error:?}");
            assert!(seen.insert(*code), "code {code} used twice");
            assert!(
                !code.is_empty()
                    && code
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{code} is not snake_case"
            );
        }
    }
}
