//! Rollouts (operator only): create a canary rollout, read its status and trail, feed it
//! observations, and promote, pause, resume, roll back or abort it. Every transition and
//! check is written to the audit log (stream `canary/<id>`).
//!
//! A rollout is judged either on observations the operator pushes
//! (`POST /v1/rollouts/{id}/observations`) or, when created with a `provider`, on Prometheus:
//! the service then queries it at every check ([`Rollouts::observe_due`](crate::registry::Rollouts)).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use canary::{
    Action, Actor, ArmLabels, ArmObservation, Direction, Directive, Event, HealthPolicy,
    LimitAction, MannWhitneyJudge, MetricCheck, MetricQuery, Observations, Plan,
    PrometheusProvider, ProviderSource, Rollout, SampleMetric, Step,
};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::json::{ApiJson, ApiPath};
use crate::registry::rollouts::Entry;
use crate::state::AppState;

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/rollouts", post(create))
        .route("/v1/rollouts/{id}", get(status))
        .route("/v1/rollouts/{id}/trail", get(trail))
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
    /// Flag a canary/baseline traffic split that does not match the step's weight as
    /// inconclusive (default true; turn it off when the traffic is not split by weight).
    srm_check: Option<bool>,
    /// Consecutive metric-source errors (no data, failed queries) that roll back
    /// (default 4).
    source_error_limit: Option<u32>,
    /// Judge the rollout on Prometheus instead of pushed observations.
    provider: Option<ProviderDto>,
    /// Start at once (default true).
    #[serde(default = "yes")]
    start: bool,
}

/// Where a provider-driven rollout's metrics come from: Prometheus, with PromQL templates in
/// which `{{arm}}` becomes the arm's label value and `{{window}}` the window since the step
/// began (e.g. `15s`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderDto {
    /// Prometheus's base URL, `http://host[:port][/prefix]`.
    prometheus_url: String,
    /// Time limit of one query attempt (default 5000 ms).
    timeout_ms: Option<u64>,
    /// The label value that selects the canary.
    canary: String,
    /// The label value that selects the stable version.
    baseline: String,
    /// The label value of a freshly started baseline, if any.
    fresh_baseline: Option<String>,
    /// An aggregate query: the arm's request count over the window.
    requests: String,
    /// An aggregate query: the arm's error count over the window.
    errors: String,
    /// A samples query (e.g. a latency quantile) compared between the arms by the
    /// Mann-Whitney, spread and sparse-data judges.
    latency: Option<LatencyDto>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LatencyDto {
    /// A samples (range) query.
    query: String,
    /// Distance between points (default 1000 ms, at least 1000).
    step_ms: Option<u64>,
    /// A failure rolls back at once (default false).
    #[serde(default)]
    critical: bool,
    /// Judged and recorded, never acted on (default false).
    #[serde(default)]
    dry_run: bool,
}

/// Longest per-attempt query timeout a rollout may set.
const PROVIDER_TIMEOUT_MAX_MS: u64 = 60_000;

/// The metrics source `dto` describes, and whether it brings samples for the judge.
fn provider_source(
    dto: ProviderDto,
    clock: &Arc<dyn metered_clock::Clock>,
) -> Result<(ProviderSource<PrometheusProvider>, bool), ApiError> {
    let timeout_ms = dto.timeout_ms.unwrap_or(5_000);
    if !(1..=PROVIDER_TIMEOUT_MAX_MS).contains(&timeout_ms) {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("provider.timeout_ms must be 1..={PROVIDER_TIMEOUT_MAX_MS}"),
        ));
    }
    let prometheus = PrometheusProvider::builder(dto.prometheus_url.as_str())
        .timeout(Duration::from_millis(timeout_ms))
        .clock(Arc::clone(clock))
        .build()?;
    let mut arms = ArmLabels::new(&dto.canary, &dto.baseline)?;
    if let Some(fresh) = &dto.fresh_baseline {
        arms = arms.with_fresh_baseline(fresh)?;
    }
    let mut source = ProviderSource::new(
        prometheus,
        arms,
        MetricQuery::aggregate("requests", &dto.requests)?,
        MetricQuery::aggregate("errors", &dto.errors)?,
    )?;
    let samples = dto.latency.is_some();
    if let Some(l) = dto.latency {
        let step = Duration::from_millis(l.step_ms.unwrap_or(1_000));
        let mut metric = SampleMetric::new(MetricQuery::samples("latency", &l.query, step)?);
        metric.direction = Direction::Increase;
        metric.critical = l.critical;
        metric.dry_run = l.dry_run;
        source = source.with_samples(metric)?;
    }
    Ok((source, samples))
}

fn yes() -> bool {
    true
}

#[derive(Debug, Serialize)]
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
    let source = match body.provider {
        Some(p) => Some(provider_source(p, &state.clock)?),
        None => None,
    };
    let mut policy = HealthPolicy::builder().check(MetricCheck::error_rate_max(
        body.error_rate_max.unwrap_or(0.05),
    ));
    if body.srm_check == Some(false) {
        policy = policy.srm_p_value(None);
    }
    if let Some(n) = body.source_error_limit {
        policy = policy.source_error_limit(n, LimitAction::RollBack);
    }
    if source.as_ref().is_some_and(|(_, samples)| *samples) {
        policy = policy.mann_whitney(MannWhitneyJudge::default());
    }
    let mut rollout = Rollout::new(body.id.as_str(), plan, policy.build()?)?;
    if body.start {
        let _ = rollout.start(state.clock.now(), Actor::operator("admin"))?;
    }
    let rollouts = &state.rollouts;
    let cell = rollouts.insert(body.id.clone(), rollout, source.map(|(s, _)| s))?;
    let mut entry = cell.lock().await;
    rollouts.write_trail(&body.id, &mut entry).await;
    tracing::info!(rollout = %body.id, metrics = status_dto(&entry).metrics, "rollout created");
    Ok((StatusCode::CREATED, Json(status_dto(&entry))))
}

async fn status(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<StatusDto>, ApiError> {
    state.auth.admin(&headers)?;
    let cell = state.rollouts.get(&id)?;
    let entry = cell.lock().await;
    Ok(Json(status_dto(&entry)))
}

/// Most trail events one answer lists (the newest are kept).
const TRAIL_EVENTS_MAX: usize = 1_000;

#[derive(Debug, Serialize)]
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

#[derive(Debug, Serialize)]
struct TrailDto {
    id: String,
    /// Events in the trail in all (`events` holds the newest [`TRAIL_EVENTS_MAX`]).
    total: usize,
    events: Vec<TrailEventDto>,
}

/// The rollout's decisions as the audit log holds them (events not yet integrated into the
/// log appear once they are).
async fn trail(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TrailDto>, ApiError> {
    state.auth.admin(&headers)?;
    // 404 for an unknown rollout, before reading the log.
    drop(state.rollouts.get(&id)?);
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
    if entry.source.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "provider_driven",
            "this rollout is judged on its metrics provider; observations cannot be pushed",
        ));
    }
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
