//! The decision trail: rollout [`Event`]s as `audit_chain` entries, written through an
//! [`AuditTrail`] and read back from an [`AuditSink`] for replay.
//!
//! Each rollout writes to its own audit stream, `canary/<id>`, with event type `canary`. The
//! action is `check`, `source_error` or `transition`; the metadata holds every input,
//! threshold, statistic, verdict, reason, actor, step and phase, as text a person can read
//! and [`from_audit_entry`] can parse back.

use std::sync::Arc;

use audit_chain::{AuditEntry, AuditSink, AuditTrail};
use metered_clock::Timestamp;

use crate::command::{Actor, RolloutCommand};
use crate::error::{CanaryError, Result};
use crate::event::Event;
use crate::health::{CheckVerdict, HealthReport, MetricResult, Verdict};
use crate::phase::{PauseReason, Phase, PhaseKind};

/// The audit event type of every rollout entry.
pub const EVENT_TYPE: &str = "canary";

/// Records read from a sink per call while loading a trail.
const READ_CHUNK: usize = 4096;

/// The audit stream of rollout `id`.
#[must_use]
pub fn stream_name(id: &str) -> String {
    format!("canary/{id}")
}

/// The audit entry for one event of rollout `id`.
///
/// ```
/// use canary::{Actor, RolloutCommand, Event, Phase, PhaseKind, trail};
/// use metered_clock::Timestamp;
///
/// let event = Event::Transition {
///     at: Timestamp::from_unix_millis(1_000),
///     actor: Actor::operator("ana"),
///     command: RolloutCommand::Start,
///     from: PhaseKind::Pending,
///     to: Phase::Progressing,
///     step: 0,
///     weight_percent: 5,
///     reason: "started".into(),
/// };
/// let entry = trail::to_audit_entry("api-v2", &event);
/// assert_eq!(entry.stream, "canary/api-v2");
/// assert_eq!(entry.metadata["actor"], "operator:ana");
/// assert_eq!(trail::from_audit_entry(&entry, 0)?, event);
/// # Ok::<(), canary::CanaryError>(())
/// ```
#[must_use]
pub fn to_audit_entry(id: &str, event: &Event) -> AuditEntry {
    let base = |action: &str, at: Timestamp, step: usize| {
        AuditEntry::new(stream_name(id), EVENT_TYPE, action, at)
            .with_metadata("rollout", id)
            .with_metadata("step", step.to_string())
    };
    match event {
        Event::Checked { at, step, report } => {
            let mut e = base("check", *at, *step)
                .with_success(!matches!(
                    report.verdict,
                    Verdict::Unhealthy | Verdict::Critical
                ))
                .with_metadata("verdict", report.verdict.as_str())
                .with_metadata("reason", report.reason())
                .with_metadata("canary_requests", report.canary_requests.to_string())
                .with_metadata(
                    "sample_ratio_mismatch",
                    report.sample_ratio_mismatch.to_string(),
                );
            if let Some(b) = report.baseline_requests {
                e = e.with_metadata("baseline_requests", b.to_string());
            }
            if let Some(b) = report.fresh_baseline_requests {
                e = e.with_metadata("fresh_baseline_requests", b.to_string());
            }
            if let Some(p) = report.srm_p_value {
                e = e.with_metadata("srm_p_value", p.to_string());
            }
            if let Some(j) = &report.judge {
                e = e.with_metadata("judge_score", j.score.to_string());
                e = e.with_metadata("judge_class", format!("{:?}", j.class));
                // For people (not parsed back): class, dry run, p-values, name.
                let p = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |p| p.to_string());
                for (i, m) in j.metrics.iter().enumerate() {
                    e = e.with_metadata(
                        format!("judge.{i:02}"),
                        format!(
                            "{:?}|{}|{}|{}|{}|{}",
                            m.class,
                            m.dry_run,
                            p(m.shift.map(|t| t.p_value)),
                            p(m.spread.map(|t| t.p_value)),
                            p(m.nonzero.map(|t| t.p_value)),
                            m.name
                        ),
                    );
                }
            }
            for (i, m) in report.metrics.iter().enumerate() {
                e = e.with_metadata(
                    format!("metric.{i:02}"),
                    format!(
                        "{}|{}|{}|{}|{}|{}",
                        check_verdict_str(m.verdict),
                        m.critical,
                        m.observed,
                        m.threshold,
                        m.statistic,
                        m.name
                    ),
                );
                if m.dry_run {
                    e = e.with_metadata(format!("metric.{i:02}.dry_run"), "true");
                }
            }
            e
        }
        Event::SourceError { at, step, message } => base("source_error", *at, *step)
            .with_success(false)
            .with_metadata("message", message.clone()),
        Event::Transition {
            at,
            actor,
            command,
            from,
            to,
            step,
            weight_percent,
            reason,
        } => {
            let mut e = base("transition", *at, *step)
                .with_metadata("actor", actor.to_string())
                .with_metadata("command", command.as_str())
                .with_metadata("from", from.as_str())
                .with_metadata("to", to.kind().as_str())
                .with_metadata("weight_percent", weight_percent.to_string())
                .with_metadata("reason", reason.clone());
            if let Phase::Paused {
                reason,
                since,
                deadline,
            } = to
            {
                e = e
                    .with_metadata("pause_reason", pause_reason_str(*reason))
                    .with_metadata("pause_since", since.as_unix_millis().to_string());
                if let Some(d) = deadline {
                    e = e.with_metadata("pause_deadline", d.as_unix_millis().to_string());
                }
            }
            e
        }
    }
}

/// Parses an entry written by [`to_audit_entry`] back into its event. The report of a check
/// comes back with every figure except the Mann-Whitney judge's (its score, class and
/// per-metric lines `judge.NN` are written for people and not parsed back).
///
/// # Errors
/// [`CanaryError::TrailDecode`] (naming `index`) for an entry of another type or with a
/// missing or malformed field.
pub fn from_audit_entry(entry: &AuditEntry, index: usize) -> Result<Event> {
    let bad = |reason: String| CanaryError::TrailDecode { index, reason };
    if entry.event_type != EVENT_TYPE {
        return Err(bad(format!(
            "event type {:?} is not {EVENT_TYPE:?}",
            entry.event_type
        )));
    }
    let get = |key: &str| {
        entry
            .metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| bad(format!("missing {key:?}")))
    };
    let parse_u64 = |key: &str| -> Result<u64> {
        get(key)?
            .parse::<u64>()
            .map_err(|e| bad(format!("{key:?}: {e}")))
    };
    let at = entry.timestamp;
    let step = usize::try_from(parse_u64("step")?).map_err(|e| bad(format!("step: {e}")))?;
    match entry.action.as_str() {
        "check" => {
            let verdict =
                Verdict::parse(get("verdict")?).ok_or_else(|| bad("unknown verdict".into()))?;
            let mut metrics = Vec::new();
            for i in 0.. {
                let Some(v) = entry.metadata.get(&format!("metric.{i:02}")) else {
                    break;
                };
                let mut m = parse_metric(v).ok_or_else(|| bad(format!("metric {i}: {v:?}")))?;
                m.dry_run = entry
                    .metadata
                    .get(&format!("metric.{i:02}.dry_run"))
                    .is_some_and(|v| v == "true");
                metrics.push(m);
            }
            let baseline_requests = match entry.metadata.get("baseline_requests") {
                Some(_) => Some(parse_u64("baseline_requests")?),
                None => None,
            };
            let fresh_baseline_requests = match entry.metadata.get("fresh_baseline_requests") {
                Some(_) => Some(parse_u64("fresh_baseline_requests")?),
                None => None,
            };
            let srm_p_value = match entry.metadata.get("srm_p_value") {
                Some(v) => Some(
                    v.parse::<f64>()
                        .map_err(|e| bad(format!("srm_p_value: {e}")))?,
                ),
                None => None,
            };
            Ok(Event::Checked {
                at,
                step,
                report: HealthReport {
                    verdict,
                    canary_requests: parse_u64("canary_requests")?,
                    baseline_requests,
                    fresh_baseline_requests,
                    metrics,
                    srm_p_value,
                    sample_ratio_mismatch: get("sample_ratio_mismatch")? == "true",
                    judge: None,
                },
            })
        }
        "source_error" => Ok(Event::SourceError {
            at,
            step,
            message: get("message")?.to_owned(),
        }),
        "transition" => {
            let actor = match get("actor")? {
                "system" => Actor::System,
                other => Actor::Operator(
                    other
                        .strip_prefix("operator:")
                        .ok_or_else(|| bad(format!("actor {other:?}")))?
                        .to_owned(),
                ),
            };
            let command = RolloutCommand::parse(get("command")?)
                .ok_or_else(|| bad("unknown command".into()))?;
            let from = phase_kind(get("from")?).ok_or_else(|| bad("unknown from-phase".into()))?;
            let to_kind = phase_kind(get("to")?).ok_or_else(|| bad("unknown to-phase".into()))?;
            let to = match to_kind {
                PhaseKind::Pending => Phase::Pending,
                PhaseKind::Progressing => Phase::Progressing,
                PhaseKind::Paused => Phase::Paused {
                    reason: pause_reason(get("pause_reason")?)
                        .ok_or_else(|| bad("unknown pause reason".into()))?,
                    since: Timestamp::from_unix_millis(parse_u64("pause_since")?),
                    deadline: match entry.metadata.get("pause_deadline") {
                        Some(_) => Some(Timestamp::from_unix_millis(parse_u64("pause_deadline")?)),
                        None => None,
                    },
                },
                PhaseKind::Promoting => Phase::Promoting,
                PhaseKind::Succeeded => Phase::Succeeded,
                PhaseKind::RollingBack => Phase::RollingBack,
                PhaseKind::RolledBack => Phase::RolledBack,
                PhaseKind::Aborted => Phase::Aborted,
            };
            let weight_percent = u8::try_from(parse_u64("weight_percent")?)
                .map_err(|e| bad(format!("weight_percent: {e}")))?;
            Ok(Event::Transition {
                at,
                actor,
                command,
                from,
                to,
                step,
                weight_percent,
                reason: get("reason")?.to_owned(),
            })
        }
        other => Err(bad(format!("unknown action {other:?}"))),
    }
}

/// Writes `events` of rollout `id` to `trail` in order, removing each from the front of the
/// vector once durable; on error the unwritten events stay in `events` for a retry.
///
/// # Errors
/// [`CanaryError::Audit`] from the trail.
pub async fn record_events(
    trail: &dyn AuditTrail,
    id: &str,
    events: &mut Vec<Event>,
) -> Result<()> {
    let mut written = 0;
    let mut result = Ok(());
    for event in events.iter() {
        if let Err(e) = trail.record(to_audit_entry(id, event)).await {
            result = Err(CanaryError::Audit(e));
            break;
        }
        written += 1;
    }
    events.drain(..written);
    result
}

/// Reads every event of rollout `id` from `sink`, in log order (entries of other streams are
/// skipped). Feed them to [`Rollout::replay`](crate::Rollout::replay).
///
/// # Errors
/// [`CanaryError::Audit`] when reading fails; [`CanaryError::TrailDecode`] for an entry of the
/// rollout's stream that does not parse.
pub async fn load_events(sink: &dyn AuditSink, id: &str) -> Result<Vec<Event>> {
    let stream = stream_name(id);
    let size = sink.size().await?;
    let mut out = Vec::new();
    let mut at = 0;
    while at < size {
        let chunk = sink.read(at, READ_CHUNK).await?;
        if chunk.is_empty() {
            break;
        }
        at += chunk.len() as u64;
        for record in &chunk {
            let entry = record.entry.entry();
            if entry.stream == stream && entry.event_type == EVENT_TYPE {
                out.push(from_audit_entry(entry, out.len())?);
            }
        }
    }
    Ok(out)
}

fn check_verdict_str(v: CheckVerdict) -> &'static str {
    match v {
        CheckVerdict::NoData => "no_data",
        CheckVerdict::Pass => "pass",
        CheckVerdict::Fail => "fail",
        CheckVerdict::Inconclusive => "inconclusive",
    }
}

fn parse_metric(s: &str) -> Option<MetricResult> {
    let mut parts = s.splitn(6, '|');
    let verdict = match parts.next()? {
        "no_data" => CheckVerdict::NoData,
        "pass" => CheckVerdict::Pass,
        "fail" => CheckVerdict::Fail,
        "inconclusive" => CheckVerdict::Inconclusive,
        _ => return None,
    };
    let critical = parts.next()?.parse().ok()?;
    let observed = parts.next()?.parse().ok()?;
    let threshold = parts.next()?.parse().ok()?;
    let statistic = parts.next()?.parse().ok()?;
    let name: Arc<str> = parts.next()?.into();
    Some(MetricResult {
        name,
        verdict,
        critical,
        dry_run: false,
        observed,
        threshold,
        statistic,
    })
}

fn pause_reason_str(r: PauseReason) -> &'static str {
    match r {
        PauseReason::Manual => "manual",
        PauseReason::Inconclusive => "inconclusive",
        PauseReason::AwaitingApproval => "awaiting_approval",
    }
}

fn pause_reason(s: &str) -> Option<PauseReason> {
    Some(match s {
        "manual" => PauseReason::Manual,
        "inconclusive" => PauseReason::Inconclusive,
        "awaiting_approval" => PauseReason::AwaitingApproval,
        _ => return None,
    })
}

fn phase_kind(s: &str) -> Option<PhaseKind> {
    Some(match s {
        "pending" => PhaseKind::Pending,
        "progressing" => PhaseKind::Progressing,
        "paused" => PhaseKind::Paused,
        "promoting" => PhaseKind::Promoting,
        "succeeded" => PhaseKind::Succeeded,
        "rolling_back" => PhaseKind::RollingBack,
        "rolled_back" => PhaseKind::RolledBack,
        "aborted" => PhaseKind::Aborted,
        _ => return None,
    })
}
