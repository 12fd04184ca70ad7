//! The decision trail: events through audit-chain and back, and replay equality.

use std::sync::Arc;
use std::time::Duration;

use audit_chain::{
    AuditLog, AuditTrail, AuditWriter, HmacKey, Keyring, MaskingPolicy, MemorySink, WriterConfig,
    verify_sink,
};
use canary::*;
use metered_clock::{ManualClock, Timestamp};

const MINUTE: Duration = Duration::from_secs(60);
const T0: Timestamp = Timestamp::from_unix_millis(1_700_000_000_000);

fn plan() -> Plan {
    Plan::progressive(MINUTE, 2 * MINUTE, 200).unwrap()
}

fn policy() -> HealthPolicy {
    HealthPolicy::builder()
        .check(MetricCheck::error_rate_max(0.05).critical())
        .check(MetricCheck::error_rate_relative(0.25))
        .inconclusive_limit(2)
        .build()
        .unwrap()
}

/// A rollout that goes through checks of every verdict, a source error, a manual pause, an
/// inconclusive pause and a rollback; returns it with all its events.
fn eventful_rollout() -> (Rollout, Vec<Event>) {
    let mut r = Rollout::new("search-v3", plan(), policy()).unwrap();
    let mut events = Vec::new();
    let mut now = T0;
    let _ = r.start(now, Actor::operator("ana")).unwrap();
    let obs = |cr, ce, br, be| {
        Observations::new(
            ArmObservation::counts(cr, ce),
            ArmObservation::counts(br, be),
        )
    };
    let script: Vec<Observations> = vec![
        obs(100, 1, 1_900, 19),    // insufficient data
        obs(500, 5, 9_500, 95),    // healthy, step time served: 10 %
        obs(1_000, 10, 9_000, 90), // healthy, step time not served
        obs(2_000, 20, 8_000, 80), // sample-ratio mismatch: inconclusive
        obs(2_000, 20, 8_000, 80), // inconclusive: paused
        obs(1_000, 10, 9_000, 90), // healthy: resumed
    ];
    let mut actions = Vec::new();
    for o in &script {
        now = now.saturating_add(MINUTE);
        actions.push(r.tick(now, o).unwrap().action);
    }
    assert_eq!(
        actions,
        [
            Action::Hold,
            Action::SetWeight(10),
            Action::Hold,
            Action::Hold,
            Action::Pause(PauseReason::Inconclusive),
            Action::SetWeight(10),
        ]
    );
    now = now.saturating_add(MINUTE);
    let _ = r.tick_source_error(now, "scrape timed out");
    let _ = r
        .pause(now, Actor::operator("bo"), "waiting for the support queue")
        .unwrap();
    let _ = r.resume(now, Actor::operator("bo")).unwrap();
    now = now.saturating_add(MINUTE);
    let _ = r.tick(now, &obs(1_000, 40, 9_000, 90)).unwrap(); // unhealthy
    now = now.saturating_add(MINUTE);
    let _ = r.tick(now, &obs(1_000, 40, 9_000, 90)).unwrap();
    now = now.saturating_add(MINUTE);
    let d = r.tick(now, &obs(1_000, 40, 9_000, 90)).unwrap();
    assert_eq!(d.action, Action::RollBack);
    let _ = r.tick(now, &Observations::default()).unwrap();
    events.extend(r.take_events());
    (r, events)
}

#[test]
fn replaying_the_events_rebuilds_the_same_state() {
    let (live, events) = eventful_rollout();
    assert_eq!(live.phase(), Phase::RolledBack);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e {
            Event::Checked { .. } => "check",
            Event::SourceError { .. } => "source_error",
            Event::Transition { .. } => "transition",
            _ => "other",
        })
        .collect();
    assert!(kinds.contains(&"source_error"));
    let replayed = Rollout::replay("search-v3", plan(), policy(), &events).unwrap();
    assert_eq!(replayed.state(), live.state());
    // Every prefix of the trail is a consistent history too.
    for n in 0..events.len() {
        assert!(Rollout::replay("search-v3", plan(), policy(), &events[..n]).is_ok());
    }
}

#[test]
fn a_trail_with_a_missing_transition_does_not_replay() {
    let (_, mut events) = eventful_rollout();
    let i = events
        .iter()
        .rposition(|e| {
            matches!(
                e,
                Event::Transition {
                    to: Phase::RollingBack,
                    ..
                }
            )
        })
        .unwrap();
    events.remove(i);
    assert!(matches!(
        Rollout::replay("search-v3", plan(), policy(), &events),
        Err(CanaryError::TrailMismatch { index, .. }) if index == i
    ));
}

#[test]
fn every_event_round_trips_through_an_audit_entry() {
    let (_, events) = eventful_rollout();
    for (i, e) in events.iter().enumerate() {
        let entry = trail::to_audit_entry("search-v3", e);
        entry.validate().unwrap();
        let back = trail::from_audit_entry(&entry, i).unwrap();
        match (e, &back) {
            (
                Event::Checked {
                    report: a,
                    at: t1,
                    step: s1,
                },
                Event::Checked {
                    report: b,
                    at: t2,
                    step: s2,
                },
            ) => {
                assert_eq!(
                    (t1, s1, a.verdict, a.canary_requests),
                    (t2, s2, b.verdict, b.canary_requests)
                );
                assert_eq!(a.baseline_requests, b.baseline_requests);
                assert_eq!(a.metrics.len(), b.metrics.len());
                for (m, n) in a.metrics.iter().zip(&b.metrics) {
                    assert_eq!(
                        (&m.name, m.verdict, m.critical),
                        (&n.name, n.verdict, n.critical)
                    );
                    for (x, y) in [
                        (m.observed, n.observed),
                        (m.threshold, n.threshold),
                        (m.statistic, n.statistic),
                    ] {
                        assert!(x == y || (x.is_nan() && y.is_nan()));
                    }
                }
            }
            _ => assert_eq!(e, &back),
        }
    }
    let wrong = audit_chain::AuditEntry::new("canary/x", "balance", "debit", T0);
    assert!(matches!(
        trail::from_audit_entry(&wrong, 3),
        Err(CanaryError::TrailDecode { index: 3, .. })
    ));
    let mut broken = trail::to_audit_entry("x", &events[0]);
    broken.metadata.remove("step");
    assert!(matches!(
        trail::from_audit_entry(&broken, 0),
        Err(CanaryError::TrailDecode { .. })
    ));
}

#[tokio::test]
async fn the_trail_written_to_an_audit_sink_replays_to_the_same_state() {
    let sink = Arc::new(MemorySink::new());
    let clock = Arc::new(ManualClock::new(T0));
    let writer = AuditWriter::open(
        sink.clone(),
        WriterConfig::builder("test/canary").build().unwrap(),
        clock,
        None,
    )
    .await
    .unwrap();
    let keyring = Keyring::new(HmacKey::new(1, [7u8; 32]).unwrap());
    let log = AuditLog::new(writer.clone(), keyring.clone(), MaskingPolicy::standard());

    let (live, mut events) = eventful_rollout();
    // Another rollout's entries interleave in the same log.
    let mut other = Rollout::new("other", plan(), policy()).unwrap();
    let _ = other.start(T0, Actor::System).unwrap();
    let mut other_events = other.take_events();
    trail::record_events(&log, "other", &mut other_events)
        .await
        .unwrap();
    let n = events.len();
    trail::record_events(&log as &dyn AuditTrail, "search-v3", &mut events)
        .await
        .unwrap();
    assert!(events.is_empty(), "written events are removed");
    let cp = writer.flush().await.unwrap();
    assert!(
        verify_sink(sink.as_ref(), &keyring, Some(&cp))
            .await
            .unwrap()
            .is_intact()
    );

    let loaded = trail::load_events(sink.as_ref(), "search-v3")
        .await
        .unwrap();
    assert_eq!(loaded.len(), n);
    let replayed = Rollout::replay("search-v3", plan(), policy(), &loaded).unwrap();
    assert_eq!(replayed.state(), live.state());
}
