//! The service answers a library error with the library's own `code()`: one set of codes for
//! the crates and the HTTP API. Each table row is a representative value of one variant and
//! the status the service must answer with; the body's `code` and `retryable` must be the
//! error's `code()` and `is_retryable()`.

use std::time::Duration;

use axum::response::IntoResponse;
use credits_core::tx::{BranchId, TxAction, TxId, TxPhase};
use credits_core::{
    Amount, EntrySeq, HoldId, IdempotencyKey, LedgerError, LotId, StorageError, TenantId,
};
use credits_service::ApiError;
use http_body_util::BodyExt;
use serde_json::Value;

/// The status, the JSON body and the `Retry-After` header the service sends for `error`.
async fn answer(error: impl Into<ApiError>) -> (u16, Value, Option<String>) {
    let response = error.into().into_response();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap(), retry_after)
}

/// Checks one row: the status is `status`, the body is the one JSON error format with the
/// crate's `code` and `retryable`, and nothing else.
async fn check(
    error: impl Into<ApiError> + std::fmt::Debug,
    code: &str,
    retryable: bool,
    status: u16,
) {
    let what = format!("{error:?}");
    let (got_status, body, _) = answer(error).await;
    assert_eq!(got_status, status, "{what}: {body}");
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    assert_eq!(body["error"]["retryable"], retryable, "{what}: {body}");
    assert!(body["error"]["message"].is_string(), "{what}: {body}");
    assert_eq!(body.as_object().unwrap().len(), 1, "{what}: {body}");
    assert_eq!(
        body["error"].as_object().unwrap().len(),
        3,
        "{what}: {body}"
    );
}

/// One value of every `LedgerError` variant and the status the service answers it with.
fn ledger_table() -> Vec<(LedgerError, u16)> {
    let tenant = TenantId::new("acme").unwrap();
    let key = IdempotencyKey::new("k").unwrap();
    let hold = HoldId::new(1);
    let entry = EntrySeq::new(1);
    let tx = TxId::new(7);
    let amount = Amount::new(1);
    vec![
        (LedgerError::ZeroAmount, 400),
        (LedgerError::ZeroTtl, 400),
        (
            LedgerError::InvalidTenantId {
                reason: "empty".to_owned(),
            },
            400,
        ),
        (
            LedgerError::InvalidIdempotencyKey {
                reason: "empty".to_owned(),
            },
            400,
        ),
        (LedgerError::ExpiryNotInFuture, 400),
        (LedgerError::AmountOverflow, 422),
        (LedgerError::UnknownTenant(tenant.clone()), 404),
        (LedgerError::TenantExists(tenant), 409),
        (
            LedgerError::InsufficientCredits {
                requested: Amount::new(5),
                spendable: amount,
            },
            402,
        ),
        (LedgerError::UnknownHold(hold), 404),
        (LedgerError::HoldAlreadyCommitted(hold), 409),
        (LedgerError::HoldAlreadyCancelled(hold), 409),
        (LedgerError::HoldExpired(hold), 409),
        (
            LedgerError::CommitExceedsHold {
                hold,
                held: amount,
                requested: Amount::new(2),
            },
            422,
        ),
        (LedgerError::UnknownEntry(entry), 404),
        (LedgerError::NotRefundable(entry), 409),
        (
            LedgerError::RefundExceedsConsumed {
                entry,
                refundable: amount,
                requested: Amount::new(2),
            },
            422,
        ),
        (LedgerError::IdempotencyConflict(key.clone()), 409),
        (LedgerError::EmptyBatch, 400),
        (LedgerError::BatchTooLarge { max: 1, len: 2 }, 400),
        (LedgerError::DuplicateKeyInBatch(key), 400),
        // A batch fails with the status of its failing operation ...
        (
            LedgerError::BatchRejected {
                index: 0,
                source: Box::new(LedgerError::ZeroAmount),
            },
            400,
        ),
        // ... a storage failure among them (retryable, like the operation).
        (
            LedgerError::BatchRejected {
                index: 3,
                source: Box::new(LedgerError::Storage(StorageError::retryable("reset"))),
            },
            503,
        ),
        (LedgerError::UnknownTransaction(tx), 404),
        (
            LedgerError::TransactionState {
                tx,
                state: TxPhase::Active,
                action: TxAction::Finish,
            },
            409,
        ),
        (
            LedgerError::BranchNotPrepared {
                branch: BranchId::new(tx, 0),
            },
            409,
        ),
        (
            LedgerError::BranchAlreadyPrepared {
                branch: BranchId::new(tx, 0),
                hold: HoldId::new(3),
            },
            409,
        ),
        (
            LedgerError::HoldOwnedByTransaction {
                hold: HoldId::new(3),
                owner: BranchId::new(tx, 0),
            },
            409,
        ),
        (LedgerError::TransactionTimedOut(tx), 409),
        (
            LedgerError::TransactionAborted {
                tx,
                participant: "credits".to_owned(),
                reason: "no".to_owned(),
            },
            409,
        ),
        (LedgerError::UnknownParticipant("x".to_owned()), 400),
        (LedgerError::InvalidPayload("x".to_owned()), 400),
        (
            LedgerError::InvalidReason {
                reason: "empty".to_owned(),
            },
            400,
        ),
        (LedgerError::UnknownLot(LotId::new(9)), 404),
        (LedgerError::LotEmpty(LotId::new(9)), 409),
        (
            LedgerError::TenantFrozen(TenantId::new("acme").unwrap()),
            409,
        ),
        (
            LedgerError::TenantNotFrozen(TenantId::new("acme").unwrap()),
            409,
        ),
        (
            LedgerError::TenantClosed(TenantId::new("acme").unwrap()),
            409,
        ),
        (
            LedgerError::HoldsOpen {
                tenant: TenantId::new("acme").unwrap(),
                holds: 1,
            },
            409,
        ),
        (
            LedgerError::Storage(StorageError::retryable("connection reset")),
            503,
        ),
        (
            LedgerError::Storage(StorageError::permanent("corrupt row")),
            500,
        ),
    ]
}

#[tokio::test]
async fn ledger_errors_answer_with_the_ledger_code_and_their_status() {
    for (error, status) in ledger_table() {
        let (code, retryable) = (error.code(), error.is_retryable());
        check(error, code, retryable, status).await;
    }
}

#[tokio::test]
async fn resilience_errors_answer_with_the_crate_code() {
    use resilience::ResilienceError as R;
    let table = [
        (
            R::RateLimited {
                retry_after: Duration::from_millis(1_500),
            },
            429,
        ),
        (R::KeyCapacityExhausted { max_keys: 10 }, 429),
        (
            R::CircuitOpen {
                retry_after: Some(Duration::from_secs(3)),
            },
            503,
        ),
        (R::BulkheadFull { max_concurrent: 4 }, 503),
        (R::Timeout(Duration::from_secs(5)), 503),
        (
            R::InsufficientCapacity {
                requested: 9,
                burst: 1,
            },
            500,
        ),
        (
            R::InvalidConfig {
                field: "burst",
                reason: "must be positive",
            },
            500,
        ),
    ];
    for (error, status) in table {
        let (code, retryable) = (error.code(), error.is_retryable());
        check(error, code, retryable, status).await;
    }
    // Rejections that know their wait say so, rounded up to whole seconds.
    let (_, _, after) = answer(R::RateLimited {
        retry_after: Duration::from_millis(1_500),
    })
    .await;
    assert_eq!(after.as_deref(), Some("2"));
    let (_, _, after) = answer(R::KeyCapacityExhausted { max_keys: 10 }).await;
    assert_eq!(after.as_deref(), Some("1"));
}

#[tokio::test]
async fn bayes_errors_answer_with_the_crate_code() {
    use bayes_ab::BayesError as B;
    let id = || "acme/checkout".to_owned();
    let table = [
        (
            B::InvalidWeights {
                reason: "must sum to 10000",
            },
            400,
        ),
        (
            B::InvalidProbability {
                name: "prob_threshold",
                value: 1.5,
            },
            400,
        ),
        (B::UnknownArm { index: 2, arms: 2 }, 400),
        (B::CountOverflow, 422),
        (B::ExperimentNotFound { id: id() }, 404),
        (B::ExperimentExists { id: id() }, 409),
        (
            B::VersionConflict {
                id: id(),
                expected: 1,
                found: 2,
            },
            409,
        ),
        (
            B::IdempotencyConflict {
                id: id(),
                key: "k1".to_owned(),
            },
            409,
        ),
        (
            B::Storage {
                message: "reset".to_owned(),
                retryable: true,
            },
            503,
        ),
        (
            B::Storage {
                message: "corrupt".to_owned(),
                retryable: false,
            },
            500,
        ),
    ];
    for (error, status) in table {
        let (code, retryable) = (error.code(), error.is_retryable());
        check(error, code, retryable, status).await;
    }
}

#[tokio::test]
async fn canary_and_audit_errors_answer_with_the_crate_code() {
    use audit_chain::AuditError as A;
    use canary::CanaryError as C;
    let canary = [
        (
            C::InvalidPlan {
                reason: "no steps".to_owned(),
            },
            400,
        ),
        (
            C::InvalidCommand {
                reason: "note too long".to_owned(),
            },
            400,
        ),
        (
            C::UnknownRollout {
                id: "api".to_owned(),
            },
            404,
        ),
        (
            C::DuplicateRollout {
                id: "api".to_owned(),
            },
            409,
        ),
        (C::Audit(A::Backpressure { capacity: 8 }), 503),
        (C::Audit(A::Closed), 500),
        // The metrics backend: its refusals and bad answers are the upstream's (502), no
        // answer in time 504, unreachable or nothing to judge yet 503; never a 500.
        (
            C::NoData {
                metric: "errors".to_owned(),
                reason: canary::NoDataReason::Empty,
            },
            503,
        ),
        (
            C::MetricsQuery {
                metric: "errors".to_owned(),
                error_type: "bad_data".to_owned(),
                message: "parse error".to_owned(),
            },
            502,
        ),
        (
            C::MetricsHttp {
                status: 503,
                message: "overloaded".to_owned(),
            },
            502,
        ),
        (
            C::MetricsHttp {
                status: 401,
                message: "unauthorized".to_owned(),
            },
            502,
        ),
        (C::MetricsTimeout(Duration::from_secs(5)), 504),
        (
            C::MetricsUnavailable {
                message: "connection refused".to_owned(),
            },
            503,
        ),
        (
            C::MetricsDecode {
                message: "not JSON".to_owned(),
            },
            502,
        ),
        (
            C::MetricsSource {
                message: "down".to_owned(),
                retryable: true,
            },
            503,
        ),
        (
            C::MetricsSource {
                message: "bad query".to_owned(),
                retryable: false,
            },
            502,
        ),
    ];
    for (error, status) in canary {
        let (code, retryable) = (error.code(), error.is_retryable());
        check(error, code, retryable, status).await;
    }
    let audit = [
        (A::InvalidProof("size 9 > 4".to_owned()), 400),
        (A::Backpressure { capacity: 8 }, 503),
        (A::Closed, 500),
    ];
    for (error, status) in audit {
        let (code, retryable) = (error.code(), error.is_retryable());
        check(error, code, retryable, status).await;
    }
}
