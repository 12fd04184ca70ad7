//! Rollouts (operator only): create a canary rollout, read its status, feed it observations,
//! and promote, pause, resume, roll back or abort it. Every transition and check is written
//! to the audit log (stream `canary/<id>`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use canary::{
    Action, Actor, ArmObservation, Directive, HealthPolicy, MetricCheck, Observations, Plan,
    Rollout, Step,
};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::json::{ApiJson, ApiPath};
use crate::state::AppState;

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/rollouts", post(create))
        .route("/v1/rollouts/{id}", get(status))
        .route("/v1/rollouts/{id}/observations", post(observe))
        .route("/v1/rollouts/{id}/{command}", post(command))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepDto {
    weight_percent: u8,
    #[serde(default)]
    min_duration_ms: u64,
    #[serde(default)]
    min_sample: u64,
    #[serde(default)]
    requires_approval: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRollout {
    id: String,
    /// Steps (default 5 → 10 → 25 → 50 → 100 %, 2 minutes and 200 requests each).
    steps: Option<Vec<StepDto>>,
    /// How often health is checked (default 60 s).
    check_interval_ms: Option<u64>,
    /// Largest healthy canary error rate (default 0.05).
    error_rate_max: Option<f64>,
    /// Start at once (default true).
    #[serde(default = "yes")]
    start: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Serialize)]
struct StatusDto {
    id: String,
    phase: &'static str,
    step: usize,
    steps: usize,
    weight_percent: u8,
    next_check_at_ms: Option<u64>,
    checks: u64,
    last_verdict: Option<&'static str>,
}

fn status_dto(r: &Rollout) -> StatusDto {
    let s = r.state();
    StatusDto {
        id: r.id().to_owned(),
        phase: s.phase.kind().as_str(),
        step: s.step,
        steps: r.plan().steps().len(),
        weight_percent: r.weight_percent(),
        next_check_at_ms: s.next_check_at.map(|t| t.as_unix_millis()),
        checks: s.counters.checks,
        last_verdict: s.last_verdict.map(|v| v.as_str()),
    }
}

#[derive(Debug, Serialize)]
struct DecisionDto {
    action: &'static str,
    weight_percent: u8,
    phase: &'static str,
    step: usize,
    next_check_at_ms: Option<u64>,
    verdict: Option<&'static str>,
    reason: Option<String>,
}

fn decision_dto(d: &Directive) -> DecisionDto {
    DecisionDto {
        action: match d.action {
            Action::Wait => "wait",
            Action::Hold => "hold",
            Action::SetWeight(_) => "set_weight",
            Action::Pause(_) => "pause",
            Action::Promote => "promote",
            Action::RollBack => "roll_back",
            Action::Done => "done",
            _ => "other",
        },
        weight_percent: d.weight_percent,
        phase: d.phase.as_str(),
        step: d.step,
        next_check_at_ms: d.next_check_at.map(|t| t.as_unix_millis()),
        verdict: d.report.as_ref().map(|r| r.verdict.as_str()),
        reason: d.report.as_ref().map(|r| r.reason()),
    }
}

async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateRollout>,
) -> Result<impl IntoResponse, ApiError> {
    state.auth.admin(&headers)?;
    let interval = Duration::from_millis(body.check_interval_ms.unwrap_or(60_000));
    let plan = match body.steps {
        None => Plan::progressive(interval, Duration::from_secs(120), 200)?,
        Some(steps) => Plan::new(
            steps
                .iter()
                .map(|s| {
                    let step = Step::new(
                        s.weight_percent,
                        Duration::from_millis(s.min_duration_ms),
                        s.min_sample,
                    );
                    if s.requires_approval {
                        step.with_approval()
                    } else {
                        step
                    }
                })
                .collect(),
            interval,
        )?,
    };
    let policy = HealthPolicy::builder()
        .check(MetricCheck::error_rate_max(
            body.error_rate_max.unwrap_or(0.05),
        ))
        .build()?;
    let mut rollout = Rollout::new(body.id.as_str(), plan, policy)?;
    if body.start {
        let _ = rollout.start(state.clock.now(), Actor::operator("admin"))?;
    }
    let rollouts = &state.rollouts;
    let cell = rollouts.insert(body.id.clone(), rollout)?;
    let mut entry = cell.lock().await;
    rollouts.write_trail(&body.id, &mut entry).await;
    tracing::info!(rollout = %body.id, "rollout created");
    Ok((StatusCode::CREATED, Json(status_dto(&entry.rollout))))
}

async fn status(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<StatusDto>, ApiError> {
    state.auth.admin(&headers)?;
    let cell = state.rollouts.get(&id)?;
    let entry = cell.lock().await;
    Ok(Json(status_dto(&entry.rollout)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArmDto {
    requests: u64,
    errors: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Observe {
    canary: ArmDto,
    baseline: Option<ArmDto>,
}

/// Feeds the step's observations (canary and optional baseline request and error counts)
/// and runs the health check if one is due.
async fn observe(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Observe>,
) -> Result<Json<DecisionDto>, ApiError> {
    state.auth.admin(&headers)?;
    let canary = ArmObservation::counts(body.canary.requests, body.canary.errors);
    let obs = match body.baseline {
        Some(b) => Observations::new(canary, ArmObservation::counts(b.requests, b.errors)),
        None => Observations::canary_only(canary),
    };
    let cell = state.rollouts.get(&id)?;
    let mut entry = cell.lock().await;
    let decision = entry.rollout.tick(state.clock.now(), &obs)?;
    state.rollouts.write_trail(&id, &mut entry).await;
    Ok(Json(decision_dto(&decision)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandBody {
    /// Who asks (recorded in the trail; default `admin`).
    actor: Option<String>,
    /// Why (recorded in the trail).
    note: Option<String>,
}

/// `start`, `promote`, `promote_full`, `pause`, `resume`, `rollback` or `abort`.
async fn command(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiPath((id, command)): ApiPath<(String, String)>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<DecisionDto>, ApiError> {
    state.auth.admin(&headers)?;
    let body = body.map_err(|e| crate::json::body_error(e.status(), e.body_text()))?;
    let body: CommandBody = if body.iter().all(u8::is_ascii_whitespace) {
        CommandBody::default()
    } else {
        crate::json::require_object(&body)?;
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?
    };
    let actor_name = body.actor.unwrap_or_else(|| "admin".to_owned());
    if actor_name.is_empty()
        || actor_name.len() > 64
        || body.note.as_ref().is_some_and(|n| n.len() > 512)
    {
        return Err(ApiError::bad_request(
            "invalid_request",
            "actor is 1 to 64 bytes, note at most 512",
        ));
    }
    let actor = Actor::operator(actor_name);
    let note = body.note.unwrap_or_default();
    let cell = state.rollouts.get(&id)?;
    let mut entry = cell.lock().await;
    let now = state.clock.now();
    let r = &mut entry.rollout;
    let decision = match command.as_str() {
        "start" => r.start(now, actor),
        "promote" => r.promote(now, actor),
        "promote_full" => r.promote_full(now, actor),
        "pause" => r.pause(now, actor, &note),
        "resume" => r.resume(now, actor),
        "rollback" => r.rollback(now, actor, &note),
        "abort" => r.abort(now, actor, &note),
        _ => {
            return Err(ApiError::not_found(
                "unknown_command",
                "commands: start, promote, promote_full, pause, resume, rollback, abort",
            ));
        }
    }?;
    state.rollouts.write_trail(&id, &mut entry).await;
    tracing::info!(rollout = %id, command, phase = decision.phase.as_str(), "rollout command");
    Ok(Json(decision_dto(&decision)))
}
