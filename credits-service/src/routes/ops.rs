//! Operations: liveness, readiness, Prometheus metrics, circuit-breaker stats and reset.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use resilience::State as BreakerState;
use serde::Serialize;

use crate::error::ApiError;
use crate::state::AppState;

/// The OpenAPI description of these routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(health, ready, metrics, breaker_stats, breaker_reset))]
pub(crate) struct Api;

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/circuit-breaker/stats", get(breaker_stats))
        .route("/circuit-breaker/reset", post(breaker_reset))
        .route("/openapi.json", get(openapi))
}

/// The OpenAPI 3.1 document of the service (`docs/openapi.json`).
async fn openapi() -> Response {
    let mut response = crate::openapi::openapi_json().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Liveness: the process answers. Never checks dependencies (a database outage must not
/// get every replica restarted).
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    summary = "Liveness: the process answers",
    responses((status = 200, description = "Alive", body = serde_json::Value))
)]
async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Readiness {
    ready: bool,
    backend: &'static str,
    backend_reachable: bool,
    breaker: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// Readiness: the backend answers and the breaker would let a call through. An open
/// breaker whose wait is over counts as ready: the next call is its trial call, and no
/// call would come if readiness kept the replica out of the load balancer.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    summary = "Readiness: the backend answers and the breaker lets calls through",
    responses((status = 200, description = "Ready", body = Readiness), (status = 503, description = "Not ready", body = Readiness))
)]
async fn ready(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Readiness>) {
    let breaker = state.breaker.state();
    let breaker_blocks = match breaker {
        BreakerState::ForcedOpen => true,
        BreakerState::Open => state
            .breaker
            .remaining_open_wait()
            .is_some_and(|d| !d.is_zero()),
        _ => false,
    };
    let ping = tokio::time::timeout(state.request_timeout, state.backend.ping()).await;
    let (reachable, reason) = match ping {
        Ok(Ok(())) => (true, None),
        Ok(Err(e)) => (false, Some(format!("backend: {e}"))),
        Err(_) => (false, Some("backend: ping timed out".to_owned())),
    };
    let ready = reachable && !breaker_blocks;
    let reason = reason.or_else(|| breaker_blocks.then(|| "circuit breaker open".to_owned()));
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            ready,
            backend: state.backend.name(),
            backend_reachable: reachable,
            breaker: breaker.as_str(),
            reason,
        }),
    )
}

/// Prometheus text exposition.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus text format",
    responses((status = 200, description = "The metrics", body = String, content_type = "text/plain"))
)]
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let body = state.metrics.render();
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct BreakerStats {
    name: String,
    state: &'static str,
    calls: u64,
    failed_calls: u64,
    slow_calls: u64,
    not_permitted_calls: u64,
    failure_rate_percent: Option<u8>,
    remaining_open_wait_ms: Option<u64>,
}

fn stats(state: &AppState) -> BreakerStats {
    let s = state.breaker.stats();
    BreakerStats {
        name: state.breaker.name().to_owned(),
        state: s.state.as_str(),
        calls: s.calls,
        failed_calls: s.failed_calls,
        slow_calls: s.slow_calls,
        not_permitted_calls: s.not_permitted_calls,
        failure_rate_percent: s.failure_rate_percent(),
        remaining_open_wait_ms: state
            .breaker
            .remaining_open_wait()
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    }
}

/// The breaker around the store: state and window counts (the same figures as `/metrics`).
#[utoipa::path(
    get,
    path = "/circuit-breaker/stats",
    tag = "operations",
    summary = "Breaker state and window counts",
    responses((status = 200, description = "The stats", body = BreakerStats))
)]
async fn breaker_stats(State(state): State<Arc<AppState>>) -> Json<BreakerStats> {
    Json(stats(&state))
}

/// Closes the breaker and clears its window (operator only).
#[utoipa::path(
    post,
    path = "/circuit-breaker/reset",
    tag = "operations",
    summary = "Close the breaker now (admin)",
    responses((status = 200, description = "The stats after the reset", body = BreakerStats))
)]
async fn breaker_reset(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<BreakerStats>, ApiError> {
    state.auth.admin(&headers)?;
    state.breaker.reset();
    tracing::warn!("circuit breaker reset by the operator");
    Ok(Json(stats(&state)))
}
