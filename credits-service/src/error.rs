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

    /// A stable snake_case name of the variant, for logs and metrics labels, in the same
    /// style as the library crates' `code()`. Codes never change once released; a new
    /// variant gets a new one.
    ///
    /// | variant | code |
    /// |---|---|
    /// | [`Config`](Self::Config) | `config` |
    /// | [`Bind`](Self::Bind) | `bind` |
    /// | [`Backend`](Self::Backend) | `backend` |
    /// | [`Serve`](Self::Serve) | `serve` |
    ///
    /// ```
    /// use credits_service::ServiceError;
    ///
    /// let e = ServiceError::Backend("database unreachable".to_owned());
    /// assert_eq!(e.code(), "backend");
    /// assert!(e.is_retryable());
    /// ```
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::Config { .. } => "config",
            ServiceError::Bind { .. } => "bind",
            ServiceError::Backend(_) => "backend",
            ServiceError::Serve(_) => "serve",
        }
    }
}

/// The body of every error response: `{"error": {"code": "...", "message": "..."}}`.
///
/// `code` is stable (clients branch on it); `message` is for people and may change.
/// `retryable` says whether the same request (with the same `Idempotency-Key`) may succeed
/// later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `insufficient_credits`.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// Whether retrying the same request may succeed.
    pub retryable: bool,
}

/// What every error response carries: `{"error": ErrorBody}` (the `ErrorResponse` schema
/// of `/openapi.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ErrorResponse {
    /// The error.
    pub error: ErrorBody,
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
        Self::internal_code("internal", message)
    }

    /// 500 with `code`.
    pub(crate) fn internal_code(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, axum::Json(ErrorResponse { error: self.body })).into_response();
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

impl ApiError {
    /// The answer to a library error: `status`, the crate's own `code()`, its message, and
    /// its `is_retryable()`. Every `From<XError>` below goes through here, so the service
    /// sends exactly the codes the crates define and only the status is the service's choice.
    fn from_library(
        status: StatusCode,
        code: &'static str,
        message: String,
        retryable: bool,
    ) -> Self {
        if status.is_server_error() {
            tracing::warn!(%status, code, error = %message, "library call failed");
        }
        let mut api = ApiError::new(status, code, message);
        api.body.retryable = retryable;
        api
    }
}

/// 503 when a retry may succeed, 500 when it will not.
fn unavailable_or_internal(retryable: bool) -> StatusCode {
    if retryable {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

/// The HTTP status of a ledger error: bad input 400, missing things 404, states that forbid
/// the change 409, arithmetic limits 422, a short balance 402, storage 503 or 500.
fn ledger_status(e: &LedgerError) -> StatusCode {
    use StatusCode as S;
    match e {
        LedgerError::ZeroAmount
        | LedgerError::ZeroTtl
        | LedgerError::InvalidTenantId { .. }
        | LedgerError::InvalidIdempotencyKey { .. }
        | LedgerError::ExpiryNotInFuture
        | LedgerError::EmptyBatch
        | LedgerError::BatchTooLarge { .. }
        | LedgerError::DuplicateKeyInBatch(_)
        | LedgerError::UnknownParticipant(_)
        | LedgerError::InvalidPayload(_)
        | LedgerError::InvalidReason { .. }
        | LedgerError::InvalidRollover { .. }
        | LedgerError::InvalidThresholds { .. }
        | LedgerError::ImportInFuture { .. } => S::BAD_REQUEST,
        LedgerError::InsufficientCredits { .. } => S::PAYMENT_REQUIRED,
        LedgerError::UnknownTenant(_)
        | LedgerError::UnknownHold(_)
        | LedgerError::UnknownEntry(_)
        | LedgerError::UnknownTransaction(_)
        | LedgerError::UnknownLot(_) => S::NOT_FOUND,
        LedgerError::TenantExists(_)
        | LedgerError::HoldAlreadyCommitted(_)
        | LedgerError::HoldAlreadyCancelled(_)
        | LedgerError::HoldExpired(_)
        | LedgerError::NotRefundable(_)
        | LedgerError::IdempotencyConflict(_)
        | LedgerError::TransactionState { .. }
        | LedgerError::BranchNotPrepared { .. }
        | LedgerError::BranchAlreadyPrepared { .. }
        | LedgerError::HoldOwnedByTransaction { .. }
        | LedgerError::TransactionTimedOut(_)
        | LedgerError::TransactionAborted { .. }
        | LedgerError::LotEmpty(_)
        | LedgerError::ImportOutOfOrder { .. }
        | LedgerError::TenantFrozen(_)
        | LedgerError::TenantNotFrozen(_)
        | LedgerError::TenantClosed(_)
        | LedgerError::HoldsOpen { .. } => S::CONFLICT,
        LedgerError::AmountOverflow
        | LedgerError::CommitExceedsHold { .. }
        | LedgerError::RefundExceedsConsumed { .. } => S::UNPROCESSABLE_ENTITY,
        // A batch fails as its failing operation does.
        LedgerError::BatchRejected { source, .. } => ledger_status(source),
        LedgerError::Storage(s) => unavailable_or_internal(s.retryable),
        // The audit log is behind: nothing was applied; retry once it catches up.
        LedgerError::AuditBacklogFull { .. } => S::SERVICE_UNAVAILABLE,
        _ => S::INTERNAL_SERVER_ERROR,
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        ApiError::from_library(ledger_status(&e), e.code(), e.to_string(), e.is_retryable())
    }
}

impl From<resilience::ResilienceError> for ApiError {
    fn from(e: resilience::ResilienceError) -> Self {
        use resilience::ResilienceError as R;
        let status = match &e {
            R::RateLimited { .. } | R::KeyCapacityExhausted { .. } => StatusCode::TOO_MANY_REQUESTS,
            R::CircuitOpen { .. } | R::BulkheadFull { .. } | R::Timeout(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            // The service asked for more than it configured, or configured nonsense.
            _ => unavailable_or_internal(e.is_retryable()),
        };
        let after = e.retry_after().or(match e {
            R::CircuitOpen { .. } | R::KeyCapacityExhausted { .. } => Some(Duration::from_secs(1)),
            _ => None,
        });
        ApiError::from_library(status, e.code(), e.to_string(), e.is_retryable()).retry_after(after)
    }
}

impl From<bayes_ab::BayesError> for ApiError {
    fn from(e: bayes_ab::BayesError) -> Self {
        use bayes_ab::BayesError as B;
        let status = match &e {
            B::ExperimentNotFound { .. } => StatusCode::NOT_FOUND,
            B::ExperimentExists { .. }
            | B::VersionConflict { .. }
            | B::IdempotencyConflict { .. } => StatusCode::CONFLICT,
            B::CountOverflow => StatusCode::UNPROCESSABLE_ENTITY,
            B::Storage { retryable, .. } => unavailable_or_internal(*retryable),
            // Every other variant is a setting or an input out of its domain.
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::from_library(status, e.code(), e.to_string(), e.is_retryable())
    }
}

impl From<canary::CanaryError> for ApiError {
    fn from(e: canary::CanaryError) -> Self {
        use canary::CanaryError as C;
        let status = match &e {
            C::InvalidPlan { .. }
            | C::InvalidPolicy { .. }
            | C::InvalidObservation { .. }
            | C::InvalidCommand { .. } => StatusCode::BAD_REQUEST,
            C::IllegalTransition { .. } | C::DuplicateRollout { .. } => StatusCode::CONFLICT,
            C::UnknownRollout { .. } => StatusCode::NOT_FOUND,
            // The metrics backend answered, but not with something usable: a refused query,
            // an HTTP error or an undecodable answer is the upstream's fault (502).
            C::MetricsQuery { .. } | C::MetricsHttp { .. } | C::MetricsDecode { .. } => {
                StatusCode::BAD_GATEWAY
            }
            // No answer in time from the metrics backend.
            C::MetricsTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            // Unreachable backend or open breaker, or nothing to judge yet: ask again later.
            C::MetricsUnavailable { .. } | C::NoData { .. } => StatusCode::SERVICE_UNAVAILABLE,
            C::MetricsSource { retryable, .. } => {
                if *retryable {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::BAD_GATEWAY
                }
            }
            // The audit trail failed, or a trail does not replay.
            _ => unavailable_or_internal(e.is_retryable()),
        };
        ApiError::from_library(status, e.code(), e.to_string(), e.is_retryable())
    }
}

impl From<audit_chain::AuditError> for ApiError {
    fn from(e: audit_chain::AuditError) -> Self {
        let status = match &e {
            audit_chain::AuditError::InvalidProof(_) => StatusCode::BAD_REQUEST,
            _ => unavailable_or_internal(e.is_retryable()),
        };
        ApiError::from_library(status, e.code(), e.to_string(), e.is_retryable())
    }
}
