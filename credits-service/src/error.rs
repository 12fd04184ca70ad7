//! [`ServiceError`] (start-up failures) and [`ApiError`] (the one JSON error format).

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use credits_core::LedgerError;
use serde::Serialize;

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// A setting is malformed, out of range or unknown. Fix the variable and start again.
    #[error("configuration: {var}: {reason}")]
    Config {
        /// The environment variable at fault.
        var: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The listening socket could not be opened (address in use, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A backend (database, audit log) could not be set up.
    #[error("backend: {0}")]
    Backend(String),
    /// The HTTP server failed while running.
    #[error("server: {0}")]
    Serve(std::io::Error),
}

impl ServiceError {
    /// Whether starting again unchanged may work (a busy port or an unreachable database may
    /// come back; a bad setting will not).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ServiceError::Bind { .. } | ServiceError::Backend(_) | ServiceError::Serve(_)
        )
    }
}

/// The body of every error response: `{"error": {"code": "...", "message": "..."}}`.
///
/// `code` is stable (clients branch on it); `message` is for people and may change.
/// `retryable` says whether the same request (with the same `Idempotency-Key`) may succeed
/// later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `insufficient_credits`.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// Whether retrying the same request may succeed.
    pub retryable: bool,
}

/// An error answered to a client: a status, a stable code, a message, and optionally a
/// `Retry-After` delay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: ErrorBody,
    /// Sent as `Retry-After` (whole seconds, rounded up).
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    #[must_use]
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                code,
                message: message.into(),
                retryable: status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::SERVICE_UNAVAILABLE,
            },
            retry_after: None,
        }
    }

    /// 400 with `code`.
    #[must_use]
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 with `code`.
    #[must_use]
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// Adds a `Retry-After`.
    #[must_use]
    pub fn retry_after(mut self, after: Option<Duration>) -> Self {
        self.retry_after = after;
        self
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Wrapper<'a> {
            error: &'a ErrorBody,
        }
        let mut response = (self.status, axum::Json(Wrapper { error: &self.body })).into_response();
        if let Some(after) = self.retry_after {
            let secs = after.as_millis().div_ceil(1_000).max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"credits\""),
            );
        }
        response
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        use StatusCode as S;
        let (status, code) = match &e {
            LedgerError::ZeroAmount => (S::BAD_REQUEST, "zero_amount"),
            LedgerError::ZeroTtl => (S::BAD_REQUEST, "zero_ttl"),
            LedgerError::InvalidTenantId { .. } => (S::BAD_REQUEST, "invalid_tenant_id"),
            LedgerError::InvalidIdempotencyKey { .. } => {
                (S::BAD_REQUEST, "invalid_idempotency_key")
            }
            LedgerError::ExpiryNotInFuture => (S::BAD_REQUEST, "expiry_not_in_future"),
            LedgerError::AmountOverflow => (S::UNPROCESSABLE_ENTITY, "amount_overflow"),
            LedgerError::UnknownTenant(_) => (S::NOT_FOUND, "unknown_tenant"),
            LedgerError::TenantExists(_) => (S::CONFLICT, "tenant_exists"),
            LedgerError::InsufficientCredits { .. } => {
                (S::PAYMENT_REQUIRED, "insufficient_credits")
            }
            LedgerError::UnknownHold(_) => (S::NOT_FOUND, "unknown_hold"),
            LedgerError::HoldAlreadyCommitted(_) => (S::CONFLICT, "hold_already_committed"),
            LedgerError::HoldAlreadyCancelled(_) => (S::CONFLICT, "hold_already_cancelled"),
            LedgerError::HoldExpired(_) => (S::CONFLICT, "hold_expired"),
            LedgerError::CommitExceedsHold { .. } => {
                (S::UNPROCESSABLE_ENTITY, "commit_exceeds_hold")
            }
            LedgerError::UnknownEntry(_) => (S::NOT_FOUND, "unknown_entry"),
            LedgerError::NotRefundable(_) => (S::CONFLICT, "not_refundable"),
            LedgerError::RefundExceedsConsumed { .. } => {
                (S::UNPROCESSABLE_ENTITY, "refund_exceeds_consumed")
            }
            LedgerError::IdempotencyConflict(_) => (S::CONFLICT, "idempotency_conflict"),
            LedgerError::Storage(s) if s.retryable => {
                (S::SERVICE_UNAVAILABLE, "storage_unavailable")
            }
            LedgerError::Storage(_) => (S::INTERNAL_SERVER_ERROR, "storage_failure"),
            _ => (S::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status.is_server_error() {
            tracing::warn!(error = %e, code, "ledger call failed");
        }
        let mut api = ApiError::new(status, code, e.to_string());
        api.body.retryable = e.is_retryable();
        api
    }
}

impl From<resilience::ResilienceError> for ApiError {
    fn from(e: resilience::ResilienceError) -> Self {
        let (status, code) = match &e {
            resilience::ResilienceError::RateLimited { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
            }
            resilience::ResilienceError::KeyCapacityExhausted { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limiter_full")
            }
            resilience::ResilienceError::CircuitOpen { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "circuit_open")
            }
            resilience::ResilienceError::Timeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            _ => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        let after = e.retry_after().or(match e {
            resilience::ResilienceError::CircuitOpen { .. }
            | resilience::ResilienceError::KeyCapacityExhausted { .. } => {
                Some(Duration::from_secs(1))
            }
            _ => None,
        });
        ApiError::new(status, code, e.to_string()).retry_after(after)
    }
}

impl From<bayes_ab::BayesError> for ApiError {
    fn from(e: bayes_ab::BayesError) -> Self {
        let (status, code) = match &e {
            bayes_ab::BayesError::ExperimentNotFound { .. } => {
                (StatusCode::NOT_FOUND, "unknown_experiment")
            }
            bayes_ab::BayesError::ExperimentExists { .. } => {
                (StatusCode::CONFLICT, "experiment_exists")
            }
            bayes_ab::BayesError::VersionConflict { .. } => {
                (StatusCode::CONFLICT, "experiment_conflict")
            }
            bayes_ab::BayesError::Storage {
                retryable: true, ..
            } => (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable"),
            bayes_ab::BayesError::Storage { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "storage_failure")
            }
            bayes_ab::BayesError::CountOverflow => {
                (StatusCode::UNPROCESSABLE_ENTITY, "count_overflow")
            }
            bayes_ab::BayesError::UnknownArm { .. } => (StatusCode::BAD_REQUEST, "unknown_arm"),
            _ => (StatusCode::BAD_REQUEST, "invalid_experiment"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<canary::CanaryError> for ApiError {
    fn from(e: canary::CanaryError) -> Self {
        use canary::CanaryError as C;
        let (status, code) = match &e {
            C::InvalidPlan { .. } => (StatusCode::BAD_REQUEST, "invalid_plan"),
            C::InvalidPolicy { .. } => (StatusCode::BAD_REQUEST, "invalid_policy"),
            C::InvalidObservation { .. } => (StatusCode::BAD_REQUEST, "invalid_observation"),
            C::IllegalTransition { .. } => (StatusCode::CONFLICT, "illegal_transition"),
            C::UnknownRollout { .. } => (StatusCode::NOT_FOUND, "unknown_rollout"),
            C::DuplicateRollout { .. } => (StatusCode::CONFLICT, "rollout_exists"),
            C::Audit(_) => (StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<audit_chain::AuditError> for ApiError {
    fn from(e: audit_chain::AuditError) -> Self {
        match &e {
            audit_chain::AuditError::InvalidProof(_) => {
                ApiError::bad_request("invalid_proof_request", e.to_string())
            }
            _ if e.is_retryable() => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_unavailable",
                e.to_string(),
            ),
            _ => ApiError::internal(e.to_string()),
        }
    }
}
