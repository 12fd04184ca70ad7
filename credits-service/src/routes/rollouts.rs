//! Rollouts (operator only): create a canary rollout, read its status and trail, feed it
//! observations, and promote, pause, resume, roll back or abort it. Every transition and
//! check is written to the audit log (stream `canary/<id>`).
//!
//! A rollout is judged either on observations the operator pushes
//! (`POST /v1/rollouts/{id}/observations`) or, when created with a `provider`, on Prometheus:
//! the service then queries it at every check ([`Rollouts::observe_due`](crate::registry::Rollouts)).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use canary::{Action, Actor, ArmObservation, Directive, Event, Observations};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::json::{ApiJson, ApiPath};
use crate::registry::rollouts::{Entry, ProviderSpec, RolloutSpec, StepSpec};
use crate::state::AppState;

/// The OpenAPI description of these routes.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(create, status, trail, observe, command),
    components(schemas(RolloutCommand))
)]
pub(crate) struct Api;

/// The operator commands of `POST /v1/rollouts/{id}/{command}` (documentation only: the
/// handler matches the path segment and answers 404 `unknown_command` to any other).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
enum RolloutCommand {
    Start,
    Promote,
    PromoteFull,
    Pause,
    Resume,
    Rollback,
    Abort,
}

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/rollouts", post(create))
        .route("/v1/rollouts/{id}", get(status))
        .route("/v1/rollouts/{id}/trail", get(trail))
        .route("/v1/rollouts/{id}/observations", post(observe))
        .route("/v1/rollouts/{id}/{command}", post(command))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateRollout {
    id: String,
    /// Steps (default 5 → 10 → 25 → 50 → 100 %, 2 minutes and 200 requests each).
    steps: Option<Vec<StepSpec>>,
    /// How often health is checked (default 60 s).
    check_interval_ms: Option<u64>,
    /// Largest healthy canary error rate (default 0.05).
    error_rate_max: Option<f64>,
    /// Flag a canary/baseline traffic split that does not match the step's weight as
    /// inconclusive (default true; turn it off when the traffic is not split by weight).
    srm_check: Option<bool>,
    /// Consecutive metric-source errors (no data, failed queries) that roll back
    /// (default 4).
    source_error_limit: Option<u32>,
    /// Judge the rollout on Prometheus instead of pushed observations.
    provider: Option<ProviderSpec>,
    /// Start at once (default true).
    #[serde(default = "yes")]
    start: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct StatusDto {
    id: String,
    /// `prometheus` (the service queries it) or `pushed` (observations are posted).
    metrics: &'static str,
    phase: &'static str,
    step: usize,
    steps: usize,
    weight_percent: u8,
    next_check_at_ms: Option<u64>,
    checks: u64,
    last_verdict: Option<&'static str>,
}

fn status_dto(entry: &Entry) -> StatusDto {
    let r = &entry.rollout;
    let s = r.state();
    StatusDto {
        id: r.id().to_owned(),
        metrics: if entry.source.is_some() {
            "prometheus"
        } else {
            "pushed"
        },
        phase: s.phase.kind().as_str(),
        step: s.step,
        steps: r.plan().steps().len(),
        weight_percent: r.weight_percent(),
        next_check_at_ms: s.next_check_at.map(|t| t.as_unix_millis()),
        checks: s.counters.checks,
        last_verdict: s.last_verdict.map(|v| v.as_str()),
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
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

#[utoipa::path(
    post,
    operation_id = "create_rollout",
    path = "/v1/rollouts",
    tag = "rollouts",
    summary = "Create (and start) a canary rollout (admin)",
    request_body = CreateRollout,
    responses((status = 201, description = "Created", body = StatusDto), (status = 409, description = "`duplicate_rollout`", body = crate::error::ErrorResponse), (status = 507, description = "`too_many_rollouts`", body = crate::error::ErrorResponse))
)]
async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateRollout>,
) -> Result<impl IntoResponse, ApiError> {
    state.auth.admin(&headers)?;
    let spec = RolloutSpec {
        steps: body.steps,
        check_interval_ms: body.check_interval_ms,
        error_rate_max: body.error_rate_max,
        srm_check: body.srm_check,
        source_error_limit: body.source_error_limit,
        provider: body.provider,
    };
    let start = body
        .start
        .then(|| (state.clock.now(), Actor::operator("admin")));
    let entry = state.rollouts.create(&body.id, &spec, start).await?;
    tracing::info!(rollout = %body.id, metrics = status_dto(&entry).metrics, "rollout created");
    Ok((StatusCode::CREATED, Json(status_dto(&entry))))
}

#[utoipa::path(
    get,
    operation_id = "rollout_status",
    path = "/v1/rollouts/{id}",
    tag = "rollouts",
    summary = "A rollout's phase, step, weight and next check (admin)",
    params(("id" = String, Path, description = "The rollout id.", example = "r1")),
    responses((status = 200, description = "The status", body = StatusDto))
)]
async fn status(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<StatusDto>, ApiError> {
    state.auth.admin(&headers)?;
    let entry = state.rollouts.get(&id).await?;
    Ok(Json(status_dto(&entry)))
}

/// Most trail events one answer lists (the newest are kept).
const TRAIL_EVENTS_MAX: usize = 1_000;

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct TrailEventDto {
    /// `checked`, `source_error` or `transition`.
    kind: &'static str,
    at_ms: u64,
    step: usize,
    /// Check: the verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    verdict: Option<&'static str>,
    /// Transition: phase before and after, weight after, who.
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    weight_percent: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<String>,
    /// Why: a check's reason, a source error's message, a transition's reason.
    reason: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct TrailDto {
    id: String,
    /// Events in the trail in all (`events` holds the newest [`TRAIL_EVENTS_MAX`]).
    total: usize,
    events: Vec<TrailEventDto>,
}

/// The rollout's decisions as the audit log holds them (events not yet integrated into the
/// log appear once they are).
#[utoipa::path(
    get,
    operation_id = "rollout_trail",
    path = "/v1/rollouts/{id}/trail",
    tag = "rollouts",
    summary = "A rollout's decisions as the audit log holds them (admin)",
    params(("id" = String, Path, description = "The rollout id.", example = "r1")),
    responses((status = 200, description = "The newest 1,000 events", body = TrailDto))
)]
async fn trail(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TrailDto>, ApiError> {
    state.auth.admin(&headers)?;
    // 404 for an unknown rollout, before reading the log.
    drop(state.rollouts.get(&id).await?);
    let events = canary::trail::load_events(state.audit.sink.as_ref(), &id).await?;
    let total = events.len();
    let events = events
        .iter()
        .skip(total.saturating_sub(TRAIL_EVENTS_MAX))
        .filter_map(trail_event_dto)
        .collect();
    Ok(Json(TrailDto { id, total, events }))
}

fn trail_event_dto(e: &Event) -> Option<TrailEventDto> {
    let base = |kind, at: metered_clock::Timestamp, step, reason| TrailEventDto {
        kind,
        at_ms: at.as_unix_millis(),
        step,
        verdict: None,
        from: None,
        to: None,
        weight_percent: None,
        actor: None,
        reason,
    };
    Some(match e {
        Event::Checked { at, step, report } => TrailEventDto {
            verdict: Some(report.verdict.as_str()),
            ..base("checked", *at, *step, report.reason())
        },
        Event::SourceError { at, step, message } => {
            base("source_error", *at, *step, message.clone())
        }
        Event::Transition {
            at,
            actor,
            from,
            to,
            step,
            weight_percent,
            reason,
            ..
        } => TrailEventDto {
            from: Some(from.as_str()),
            to: Some(to.kind().as_str()),
            weight_percent: Some(*weight_percent),
            actor: Some(actor.to_string()),
            ..base("transition", *at, *step, reason.clone())
        },
        _ => return None,
    })
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ArmDto {
    requests: u64,
    errors: u64,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Observe {
    canary: ArmDto,
    baseline: Option<ArmDto>,
}

/// Feeds the step's observations (canary and optional baseline request and error counts)
/// and runs the health check if one is due.
#[utoipa::path(
    post,
    operation_id = "observe_rollout",
    path = "/v1/rollouts/{id}/observations",
    tag = "rollouts",
    summary = "Feed metrics; runs the health check if due (admin)",
    params(("id" = String, Path, description = "The rollout id.", example = "r1")),
    request_body = Observe,
    responses((status = 200, description = "The decision", body = DecisionDto), (status = 409, description = "`provider_driven`, `illegal_transition`, `version_conflict`", body = crate::error::ErrorResponse))
)]
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
    let (decision, _) = state
        .rollouts
        .update(&id, |entry| {
            if entry.source.is_some() {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "provider_driven",
                    "this rollout is judged on its metrics provider; observations cannot be pushed",
                ));
            }
            Ok(entry.rollout.tick(state.clock.now(), &obs)?)
        })
        .await?;
    Ok(Json(decision_dto(&decision)))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CommandBody {
    /// Who asks (recorded in the trail; default `admin`).
    actor: Option<String>,
    /// Why (recorded in the trail).
    note: Option<String>,
}

/// `start`, `promote`, `promote_full`, `pause`, `resume`, `rollback` or `abort`.
#[utoipa::path(
    post,
    operation_id = "rollout_command",
    path = "/v1/rollouts/{id}/{command}",
    tag = "rollouts",
    summary = "An operator command (admin)",
    params(("id" = String, Path, description = "The rollout id.", example = "r1"), ("command" = RolloutCommand, Path, description = "The command.")),
    request_body = CommandBody,
    responses((status = 200, description = "The decision", body = DecisionDto), (status = 409, description = "`illegal_transition`, `version_conflict`", body = crate::error::ErrorResponse))
)]
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
    let (decision, _) = state
        .rollouts
        .update(&id, |entry| {
            let now = state.clock.now();
            let actor = actor.clone();
            let r = &mut entry.rollout;
            Ok(match command.as_str() {
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
            }?)
        })
        .await?;
    tracing::info!(rollout = %id, command, phase = decision.phase.as_str(), "rollout command");
    Ok(Json(decision_dto(&decision)))
}
