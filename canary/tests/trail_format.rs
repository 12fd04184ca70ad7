//! Golden test of the persisted form of a rollout's trail: the `audit_chain` entry that
//! [`trail::to_audit_entry`] writes for each kind of [`Event`]. Audit logs outlive releases,
//! so renaming a phase, command, verdict or metadata key must fail here before it makes old
//! trails unreadable. Every pinned entry must also parse back into its event.

use std::sync::Arc;

use canary::{
    Actor, CheckVerdict, Event, HealthReport, MetricResult, PauseReason, Phase, PhaseKind,
    RolloutCommand, Verdict, trail,
};
use metered_clock::Timestamp;

/// The pinned entry: stream, event type, action, success, timestamp, then every metadata
/// key and value in key order.
struct Expect {
    action: &'static str,
    success: bool,
    at_ms: u64,
    metadata: &'static [(&'static str, &'static str)],
}

fn check(event: &Event, expect: &Expect) {
    let entry = trail::to_audit_entry("api-v2", event);
    assert_eq!(entry.stream, "canary/api-v2");
    assert_eq!(entry.event_type, trail::EVENT_TYPE);
    assert_eq!(entry.event_type, "canary");
    assert_eq!(entry.action, expect.action);
    assert_eq!(entry.success, expect.success);
    assert_eq!(entry.timestamp.as_unix_millis(), expect.at_ms);
    assert_eq!(
        (entry.amount, entry.balance_before, entry.balance_after),
        (None, None, None)
    );
    assert_eq!(entry.transaction_id, None);
    let metadata: Vec<(&str, &str)> = entry
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        metadata, expect.metadata,
        "the persisted form of {event:?} changed"
    );
    assert_eq!(&trail::from_audit_entry(&entry, 0).unwrap(), event);
}

fn metric(name: &str, verdict: CheckVerdict, critical: bool, figures: [f64; 3]) -> MetricResult {
    MetricResult {
        name: Arc::from(name),
        verdict,
        critical,
        dry_run: false,
        observed: figures[0],
        threshold: figures[1],
        statistic: figures[2],
    }
}

#[test]
fn every_kind_of_event_has_a_pinned_audit_entry() {
    let at = Timestamp::from_unix_millis(1_700_000_060_000);
    let checked = Event::Checked {
        at,
        step: 1,
        report: HealthReport {
            verdict: Verdict::Unhealthy,
            canary_requests: 1_200,
            baseline_requests: Some(22_800),
            fresh_baseline_requests: None,
            metrics: vec![
                metric("error_rate", CheckVerdict::Pass, true, [0.0125, 0.05, 0.5]),
                metric(
                    "error_rate_vs_baseline",
                    CheckVerdict::Fail,
                    false,
                    [0.03125, 0.0125, 0.9990234375],
                ),
            ],
            srm_p_value: Some(0.25),
            sample_ratio_mismatch: false,
            judge: None,
        },
    };
    let source_error = Event::SourceError {
        at,
        step: 0,
        message: "prometheus: timeout".into(),
    };
    let started = Event::Transition {
        at: Timestamp::from_unix_millis(1_700_000_000_000),
        actor: Actor::operator("ana"),
        command: RolloutCommand::Start,
        from: PhaseKind::Pending,
        to: Phase::Progressing,
        step: 0,
        weight_percent: 5,
        reason: "started".into(),
    };
    let paused = Event::Transition {
        at,
        actor: Actor::System,
        command: RolloutCommand::Tick,
        from: PhaseKind::Progressing,
        to: Phase::Paused {
            reason: PauseReason::Inconclusive,
            since: at,
            deadline: Some(Timestamp::from_unix_millis(1_700_001_860_000)),
        },
        step: 2,
        weight_percent: 25,
        reason: "3 inconclusive checks in a row".into(),
    };
    let cases = [
        (
            checked,
            Expect {
                action: "check",
                success: false,
                at_ms: 1_700_000_060_000,
                metadata: &[
                    ("baseline_requests", "22800"),
                    ("canary_requests", "1200"),
                    ("metric.00", "pass|true|0.0125|0.05|0.5|error_rate"),
                    (
                        "metric.01",
                        "fail|false|0.03125|0.0125|0.9990234375|error_rate_vs_baseline",
                    ),
                    (
                        "reason",
                        "error_rate_vs_baseline Fail: observed 0.031250 vs limit 0.012500 (statistic 0.9990)",
                    ),
                    ("rollout", "api-v2"),
                    ("sample_ratio_mismatch", "false"),
                    ("srm_p_value", "0.25"),
                    ("step", "1"),
                    ("verdict", "unhealthy"),
                ],
            },
        ),
        (
            source_error,
            Expect {
                action: "source_error",
                success: false,
                at_ms: 1_700_000_060_000,
                metadata: &[
                    ("message", "prometheus: timeout"),
                    ("rollout", "api-v2"),
                    ("step", "0"),
                ],
            },
        ),
        (
            started,
            Expect {
                action: "transition",
                success: true,
                at_ms: 1_700_000_000_000,
                metadata: &[
                    ("actor", "operator:ana"),
                    ("command", "start"),
                    ("from", "pending"),
                    ("reason", "started"),
                    ("rollout", "api-v2"),
                    ("step", "0"),
                    ("to", "progressing"),
                    ("weight_percent", "5"),
                ],
            },
        ),
        (
            paused,
            Expect {
                action: "transition",
                success: true,
                at_ms: 1_700_000_060_000,
                metadata: &[
                    ("actor", "system"),
                    ("command", "tick"),
                    ("from", "progressing"),
                    ("pause_deadline", "1700001860000"),
                    ("pause_reason", "inconclusive"),
                    ("pause_since", "1700000060000"),
                    ("reason", "3 inconclusive checks in a row"),
                    ("rollout", "api-v2"),
                    ("step", "2"),
                    ("to", "paused"),
                    ("weight_percent", "25"),
                ],
            },
        ),
    ];
    for (event, expect) in &cases {
        check(event, expect);
    }
}

/// The words the trail uses for phases and commands: `as_str` is the persisted form, and
/// `parse` reads it back.
#[test]
fn phase_command_and_verdict_words_are_pinned() {
    let phases = [
        (PhaseKind::Pending, "pending"),
        (PhaseKind::Progressing, "progressing"),
        (PhaseKind::Paused, "paused"),
        (PhaseKind::Promoting, "promoting"),
        (PhaseKind::Succeeded, "succeeded"),
        (PhaseKind::RollingBack, "rolling_back"),
        (PhaseKind::RolledBack, "rolled_back"),
        (PhaseKind::Aborted, "aborted"),
    ];
    for (phase, word) in phases {
        assert_eq!(phase.as_str(), word);
    }
    let commands = [
        (RolloutCommand::Start, "start"),
        (RolloutCommand::Tick, "tick"),
        (RolloutCommand::Promote, "promote"),
        (RolloutCommand::PromoteFull, "promote_full"),
        (RolloutCommand::SkipStep, "skip_step"),
        (RolloutCommand::Pause, "pause"),
        (RolloutCommand::Resume, "resume"),
        (RolloutCommand::RollBack, "rollback"),
        (RolloutCommand::Abort, "abort"),
    ];
    for (command, word) in commands {
        assert_eq!(command.as_str(), word);
        assert_eq!(RolloutCommand::parse(word), Some(command));
    }
    let verdicts = [
        (Verdict::InsufficientData, "insufficient_data"),
        (Verdict::Healthy, "healthy"),
        (Verdict::Inconclusive, "inconclusive"),
        (Verdict::Unhealthy, "unhealthy"),
        (Verdict::Critical, "critical"),
    ];
    for (verdict, word) in verdicts {
        assert_eq!(verdict.as_str(), word);
        assert_eq!(Verdict::parse(word), Some(verdict));
    }
}
