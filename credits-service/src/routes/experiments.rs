//! Experiments (per tenant): create a champion/challenger test, assign units, record
//! results, evaluate.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bayes_ab::{ExperimentEvaluation, UnitOutcome};
use credits_core::TenantId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::json::{ApiJson, ApiPath};
use crate::registry::experiments::{ExperimentSpec, StoppingSpec};
use crate::routes::credits::{IDEMPOTENCY_KEY, idempotency_key};
use crate::state::AppState;

/// Longest experiment id accepted.
const ID_LEN_MAX: usize = 128;

/// The OpenAPI description of these routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(create, assign, record, evaluate, remove))]
pub(crate) struct Api;

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/tenants/{tenant}/experiments", post(create))
        .route("/v1/tenants/{tenant}/experiments/{id}/assign", post(assign))
        .route(
            "/v1/tenants/{tenant}/experiments/{id}/results",
            post(record),
        )
        .route(
            "/v1/tenants/{tenant}/experiments/{id}/evaluation",
            get(evaluate),
        )
        .route("/v1/tenants/{tenant}/experiments/{id}", delete(remove))
}

fn key(tenant: &TenantId, id: &str) -> Result<String, ApiError> {
    if id.is_empty()
        || id.len() > ID_LEN_MAX
        || !id.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
    {
        return Err(ApiError::bad_request(
            "invalid_experiment_id",
            format!("an experiment id is 1 to {ID_LEN_MAX} printable ASCII bytes without '/'"),
        ));
    }
    Ok(format!("{tenant}/{id}"))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateExperiment {
    id: String,
    /// Champion and challenger weights in basis points (default 5000/5000).
    weights: Option<Vec<u32>>,
    stopping: Option<StoppingSpec>,
    min_trials_per_arm: Option<u64>,
    max_duration_ms: Option<u64>,
    /// Roll back when the challenger's error rate is above this with 95 % confidence.
    error_rate_max: Option<f64>,
    /// Roll back when the challenger's p95 latency is above this with 95 % confidence.
    latency_p95_max_ms: Option<u64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ExperimentDto {
    id: String,
    weights: Vec<u32>,
    started_at_ms: u64,
}

#[utoipa::path(
    post,
    operation_id = "create_experiment",
    path = "/v1/tenants/{tenant}/experiments",
    tag = "experiments",
    summary = "Create a champion/challenger experiment",
    params(("tenant" = String, Path, description = "The tenant id (1 to 128 printable ASCII bytes, no spaces).", pattern = "^[!-~]{1,128}$", example = "acme")),
    request_body = CreateExperiment,
    responses((status = 201, description = "Created", body = ExperimentDto), (status = 409, description = "`experiment_exists`", body = crate::error::ErrorResponse), (status = 507, description = "`too_many_experiments`", body = crate::error::ErrorResponse))
)]
async fn create(
    State(state): State<Arc<AppState>>,
    ApiPath(tenant): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateExperiment>,
) -> Result<impl IntoResponse, ApiError> {
    let tenant = state.tenant_access(&headers, &tenant).await?;
    let key = key(&tenant, &body.id)?;
    let description = ExperimentSpec {
        weights: body.weights,
        stopping: body.stopping,
        min_trials_per_arm: body.min_trials_per_arm,
        max_duration_ms: body.max_duration_ms,
        error_rate_max: body.error_rate_max,
        latency_p95_max_ms: body.latency_p95_max_ms,
    };
    let now = state.clock.now();
    let spec = state
        .experiments
        .create(tenant.as_str(), key, &description, now)
        .await?;
    let weights = spec.split.weights().to_vec();
    Ok((
        StatusCode::CREATED,
        Json(ExperimentDto {
            id: body.id,
            weights,
            started_at_ms: now.as_unix_millis(),
        }),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Assign {
    unit: String,
}

/// A unit's sticky arm.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct AssignmentDto {
    /// 0 (champion) or 1 (challenger).
    arm: usize,
    /// `champion` or `challenger`.
    variant: &'static str,
}

fn arm_name(arm: usize) -> &'static str {
    if arm == 0 { "champion" } else { "challenger" }
}

/// The sticky arm of a unit: the same unit always gets the same arm.
#[utoipa::path(
    post,
    operation_id = "assign_unit",
    path = "/v1/tenants/{tenant}/experiments/{id}/assign",
    tag = "experiments",
    summary = "The sticky arm of a unit",
    params(("tenant" = String, Path, description = "The tenant id (1 to 128 printable ASCII bytes, no spaces).", pattern = "^[!-~]{1,128}$", example = "acme"), ("id" = String, Path, description = "The experiment id (1 to 128 printable ASCII bytes without '/').", pattern = "^[!-.0-~]{1,128}$", example = "e1")),
    request_body = Assign,
    responses((status = 200, description = "The arm", body = AssignmentDto))
)]
async fn assign(
    State(state): State<Arc<AppState>>,
    ApiPath((tenant, id)): ApiPath<(String, String)>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Assign>,
) -> Result<Json<AssignmentDto>, ApiError> {
    let tenant = state.tenant_access(&headers, &tenant).await?;
    let key = key(&tenant, &id)?;
    if body.unit.is_empty() || body.unit.len() > 256 {
        return Err(ApiError::bad_request(
            "invalid_unit",
            "a unit id is 1 to 256 bytes",
        ));
    }
    let spec = state.experiments.spec(&key).await?;
    let arm = spec.split.assign(&key, &body.unit);
    Ok(Json(AssignmentDto {
        arm,
        variant: arm_name(arm),
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RecordResult {
    arm: usize,
    #[serde(default)]
    converted: bool,
    #[serde(default)]
    error: bool,
    latency_ms: Option<f64>,
    value: Option<f64>,
}

impl RecordResult {
    /// The request's fingerprint, stored with its `Idempotency-Key`: the first 16 bytes of a
    /// SHA-256 over a version byte and every field in a fixed order (the arm as a `u64`,
    /// `converted` and `error` as a byte each, `latency_ms` and `value` as a presence byte
    /// and, when present, the `f64`'s bits with `-0` read as `0`), all big-endian. Two
    /// bodies that parse to the same fields have the same fingerprint, whatever their key
    /// order or whitespace.
    fn fingerprint(&self) -> [u8; 16] {
        fn number(h: &mut Sha256, n: Option<f64>) {
            match n {
                None => h.update([0u8]),
                Some(x) => {
                    let x = if x == 0.0 { 0.0 } else { x };
                    h.update([1u8]);
                    h.update(x.to_bits().to_be_bytes());
                }
            }
        }
        let mut h = Sha256::new();
        h.update([1u8]);
        h.update((self.arm as u64).to_be_bytes());
        h.update([u8::from(self.converted), u8::from(self.error)]);
        number(&mut h, self.latency_ms);
        number(&mut h, self.value);
        let full: [u8; 32] = h.finalize().into();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }
}

/// Adds one unit's outcome to an arm (an atomic merge in the store). With an
/// `Idempotency-Key` the outcome is counted at most once per (tenant, experiment, key), on
/// every replica and across restarts; a repeat of the same request answers 202 again and
/// adds nothing, the key with a different request answers 409 `idempotency_conflict` and
/// adds nothing.
#[utoipa::path(
    post,
    operation_id = "record_result",
    path = "/v1/tenants/{tenant}/experiments/{id}/results",
    tag = "experiments",
    summary = "Record one outcome",
    params(("tenant" = String, Path, description = "The tenant id (1 to 128 printable ASCII bytes, no spaces).", pattern = "^[!-~]{1,128}$", example = "acme"), ("id" = String, Path, description = "The experiment id (1 to 128 printable ASCII bytes without '/').", pattern = "^[!-.0-~]{1,128}$", example = "e1"), ("Idempotency-Key" = Option<String>, Header, nullable = false, description = "Optional. 1 to 128 printable ASCII bytes, no spaces: the outcome is counted at most once per experiment and key; a repeat of the same request answers 202 again and counts nothing, the key with a different request answers 409 `idempotency_conflict`.", pattern = "^[!-~]{1,128}$")),
    request_body = RecordResult,
    responses((status = 202, description = "Recorded (or, for a repeated Idempotency-Key, recorded before)"), (status = 409, description = "`idempotency_conflict` (the Idempotency-Key was used with a different request; nothing counted) or `version_conflict`", body = crate::error::ErrorResponse), (status = 422, description = "`count_overflow`", body = crate::error::ErrorResponse))
)]
async fn record(
    State(state): State<Arc<AppState>>,
    ApiPath((tenant, id)): ApiPath<(String, String)>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RecordResult>,
) -> Result<StatusCode, ApiError> {
    let tenant = state.tenant_access(&headers, &tenant).await?;
    let key = key(&tenant, &id)?;
    let once = if headers.contains_key(IDEMPOTENCY_KEY) {
        Some(idempotency_key(&headers)?)
    } else {
        None
    };
    let spec = state.experiments.spec(&key).await?;
    let latency = match body.latency_ms {
        None => None,
        Some(ms) if ms.is_finite() && (0.0..=3_600_000.0).contains(&ms) => {
            Some(Duration::from_secs_f64(ms / 1_000.0))
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_latency",
                "latency_ms must be a finite number from 0 to 3600000",
            ));
        }
    };
    let outcome = UnitOutcome {
        converted: body.converted,
        error: body.error,
        latency,
        value: body.value,
    };
    state
        .experiments
        .record(
            key,
            &spec,
            body.arm,
            outcome,
            state.clock.now(),
            once.as_ref().map(|k| (k.as_str(), body.fingerprint())),
        )
        .await?;
    Ok(StatusCode::ACCEPTED)
}

/// Evaluates the experiment now: decision, posterior summary, guardrails, sample-ratio
/// check. Publishes `ab_test_probability_beat` and `ab_test_variants`.
#[utoipa::path(
    get,
    operation_id = "evaluate_experiment",
    path = "/v1/tenants/{tenant}/experiments/{id}/evaluation",
    tag = "experiments",
    summary = "Decision, P(B > A), losses, guardrails, SRM",
    params(("tenant" = String, Path, description = "The tenant id (1 to 128 printable ASCII bytes, no spaces).", pattern = "^[!-~]{1,128}$", example = "acme"), ("id" = String, Path, description = "The experiment id (1 to 128 printable ASCII bytes without '/').", pattern = "^[!-.0-~]{1,128}$", example = "e1")),
    responses((status = 200, description = "The evaluation (bayes-ab's `ExperimentEvaluation`)", body = serde_json::Value), (status = 422, description = "`count_overflow`", body = crate::error::ErrorResponse))
)]
async fn evaluate(
    State(state): State<Arc<AppState>>,
    ApiPath((tenant, id)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<ExperimentEvaluation>, ApiError> {
    let tenant = state.tenant_access(&headers, &tenant).await?;
    let key = key(&tenant, &id)?;
    let spec = state.experiments.spec(&key).await?;
    let experiment = state.experiments.load(&key).await?;
    let evaluation = experiment.evaluate(&spec.rule, &spec.guardrails, state.clock.now())?;
    let summary = &evaluation.evaluation.summary;
    if state.experiments.publishable(&key) {
        metrics::gauge!("ab_test_probability_beat", "test_id" => key.clone())
            .set(summary.prob_b_beats_a);
        metrics::gauge!("ab_test_variants", "test_id" => key.clone(), "type" => "champion")
            .set(summary.mean_a);
        metrics::gauge!("ab_test_variants", "test_id" => key, "type" => "challenger")
            .set(summary.mean_b);
    } else {
        metrics::counter!("ab_test_gauges_suppressed_total").increment(1);
    }
    Ok(Json(evaluation))
}

/// Deletes an experiment and its counts (204), freeing its place in the tenant's quota.
#[utoipa::path(
    delete,
    operation_id = "delete_experiment",
    path = "/v1/tenants/{tenant}/experiments/{id}",
    tag = "experiments",
    summary = "Delete an experiment and its counts",
    params(("tenant" = String, Path, description = "The tenant id (1 to 128 printable ASCII bytes, no spaces).", pattern = "^[!-~]{1,128}$", example = "acme"), ("id" = String, Path, description = "The experiment id (1 to 128 printable ASCII bytes without '/').", pattern = "^[!-.0-~]{1,128}$", example = "e1")),
    responses((status = 204, description = "Deleted"), (status = 409, description = "`version_conflict`", body = crate::error::ErrorResponse))
)]
async fn remove(
    State(state): State<Arc<AppState>>,
    ApiPath((tenant, id)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let tenant = state.tenant_access(&headers, &tenant).await?;
    let key = key(&tenant, &id)?;
    state.experiments.delete(tenant.as_str(), &key).await?;
    Ok(StatusCode::NO_CONTENT)
}
