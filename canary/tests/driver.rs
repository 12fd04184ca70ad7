//! The async driver against a scripted metrics source.
#![cfg(feature = "tokio")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use canary::*;
use metered_clock::{ManualClock, SystemClock, Timestamp};
use parking_lot::Mutex;

struct Source {
    calls: AtomicU32,
    fail_first: u32,
}

#[async_trait]
impl MetricsSource for Source {
    async fn observe(
        &self,
        _: &Rollout,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Observations, CanaryError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n < self.fail_first {
            return Err(source_error("scrape failed", true));
        }
        assert!(since <= until);
        Ok(Observations::canary_only(ArmObservation::counts(1_000, 3)))
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Action>>);

#[async_trait]
impl Actuator for Recorder {
    async fn apply(&self, _: &Rollout, d: &Directive) -> Result<(), CanaryError> {
        self.0.lock().push(d.action);
        Ok(())
    }
}

fn rollout(interval: Duration) -> Rollout {
    let plan = Plan::progressive(interval, Duration::ZERO, 100).unwrap();
    let policy = HealthPolicy::builder()
        .check(MetricCheck::error_rate_max(0.05))
        .build()
        .unwrap();
    let mut r = Rollout::new("driven", plan, policy).unwrap();
    let _ = r
        .start(Timestamp::from_unix_millis(0), Actor::System)
        .unwrap();
    r
}

#[tokio::test]
async fn step_observes_ticks_actuates_and_counts_source_errors() {
    let clock = ManualClock::new(Timestamp::from_unix_millis(0));
    let recorder = Arc::new(Recorder::default());
    let source = Source {
        calls: AtomicU32::new(0),
        fail_first: 1,
    };
    let mut driver = Driver::new(
        rollout(Duration::from_secs(60)),
        source,
        recorder.clone(),
        Arc::new(clock.clone()),
    );
    assert_eq!(driver.step().await.unwrap().action, Action::Wait);
    clock.advance(Duration::from_secs(60));
    assert_eq!(driver.step().await.unwrap().action, Action::Hold); // the source failed
    assert_eq!(
        driver.rollout().state().counters.consecutive_source_errors,
        1
    );
    clock.advance(Duration::from_secs(60));
    assert_eq!(driver.step().await.unwrap().action, Action::SetWeight(10));
    assert_eq!(*recorder.0.lock(), [Action::Hold, Action::SetWeight(10)]);
}

#[tokio::test]
async fn run_drives_a_rollout_to_success_and_writes_the_trail() {
    let sink = Arc::new(audit_chain::MemorySink::new());
    let clock: Arc<SystemClock> = Arc::new(SystemClock::new());
    let writer = audit_chain::AuditWriter::open(
        sink.clone(),
        audit_chain::WriterConfig::builder("test/driver")
            .build()
            .unwrap(),
        clock.clone(),
        None,
    )
    .await
    .unwrap();
    let keyring = audit_chain::Keyring::new(audit_chain::HmacKey::new(1, [3u8; 32]).unwrap());
    let log = Arc::new(audit_chain::AuditLog::new(
        writer.clone(),
        keyring,
        audit_chain::MaskingPolicy::standard(),
    ));
    let recorder = Arc::new(Recorder::default());
    let source = Source {
        calls: AtomicU32::new(0),
        fail_first: 0,
    };
    let driver = Driver::new(
        rollout(Duration::from_millis(5)),
        source,
        recorder.clone(),
        clock,
    )
    .with_trail(log);
    let done = tokio::time::timeout(Duration::from_secs(10), driver.run())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.phase(), Phase::Succeeded);
    assert_eq!(
        *recorder.0.lock(),
        [
            Action::SetWeight(10),
            Action::SetWeight(25),
            Action::SetWeight(50),
            Action::Promote,
            Action::Done
        ]
    );
    let _ = writer.flush().await.unwrap();
    let events = trail::load_events(sink.as_ref(), "driven").await.unwrap();
    // The start, recorded before the driver took over, was written with the rest.
    assert!(matches!(
        events[0],
        Event::Transition {
            command: RolloutCommand::Start,
            ..
        }
    ));
    let replayed = Rollout::replay(
        "driven",
        done.plan().clone(),
        done.policy().clone(),
        &events,
    )
    .unwrap();
    assert_eq!(replayed.state(), done.state());
}

/// A source whose query never answers, announcing each query it starts.
struct Hanging(tokio::sync::Notify);

#[async_trait]
impl MetricsSource for Hanging {
    async fn observe(
        &self,
        _: &Rollout,
        _: Timestamp,
        _: Timestamp,
    ) -> Result<Observations, CanaryError> {
        self.0.notify_one();
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_fast_rollback_does_not_wait_for_the_analysis_in_flight() {
    let sink = Arc::new(audit_chain::MemorySink::new());
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(60_000)));
    let writer = audit_chain::AuditWriter::open(
        sink.clone(),
        audit_chain::WriterConfig::builder("test/fast")
            .build()
            .unwrap(),
        clock.clone(),
        None,
    )
    .await
    .unwrap();
    let keyring = audit_chain::Keyring::new(audit_chain::HmacKey::new(1, [3u8; 32]).unwrap());
    let log = Arc::new(audit_chain::AuditLog::new(
        writer.clone(),
        keyring,
        audit_chain::MaskingPolicy::standard(),
    ));
    let recorder = Arc::new(Recorder::default());
    let source = Arc::new(Hanging(tokio::sync::Notify::new()));
    let mut driver = Driver::new(
        rollout(Duration::from_secs(60)),
        source.clone(),
        recorder.clone(),
        clock,
    )
    .with_trail(log);
    let handle = driver.rollback_handle();
    assert!(!handle.is_requested());
    let trigger = async {
        source.0.notified().await; // the query is in flight
        handle
            .roll_back(Actor::operator("ana"), "pager: checkout errors")
            .unwrap();
    };
    let (d, ()) = tokio::time::timeout(Duration::from_secs(5), async {
        tokio::join!(driver.step(), trigger)
    })
    .await
    .expect("the fast rollback must not wait for the hanging query");
    let d = d.unwrap();
    assert_eq!((d.action, d.phase), (Action::Done, PhaseKind::RolledBack));
    assert_eq!(*recorder.0.lock(), [Action::RollBack, Action::Done]);
    assert!(handle.is_requested());
    // The rollback is the operator's, in the trail with its note, and replays.
    let _ = writer.flush().await.unwrap();
    let events = trail::load_events(sink.as_ref(), "driven").await.unwrap();
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Transition { command: RolloutCommand::RollBack, actor: Actor::Operator(who), reason, .. }
                if who == "ana" && reason.contains("pager")
        )),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| matches!(e, Event::Checked { .. })));
    // Too long a note is refused, and changes nothing.
    assert!(matches!(
        handle.roll_back(Actor::System, "x".repeat(COMMAND_TEXT_LEN_MAX + 1)),
        Err(CanaryError::InvalidCommand { .. })
    ));
}

#[tokio::test]
async fn a_fast_rollback_ends_the_drivers_sleep_and_aborts_a_pending_rollout() {
    // A one-hour check interval on the real clock: run() sleeps for an hour unless woken.
    let recorder = Arc::new(Recorder::default());
    let source = Arc::new(Source {
        calls: AtomicU32::new(0),
        fail_first: 0,
    });
    let driver = Driver::new(
        rollout(Duration::from_secs(3_600)),
        source,
        recorder.clone(),
        Arc::new(SystemClock::new()),
    );
    let handle = driver.rollback_handle();
    let run = driver.run();
    let trigger = async {
        tokio::task::yield_now().await;
        handle.roll_back(Actor::System, "alert fired").unwrap();
    };
    let (done, ()) =
        tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(run, trigger) })
            .await
            .expect("the rollback must end the sleep");
    assert_eq!(done.unwrap().phase(), Phase::RolledBack);
    assert!(recorder.0.lock().contains(&Action::RollBack));

    // A pending rollout cannot be rolled back; it is aborted (all traffic on stable).
    let plan = Plan::progressive(Duration::from_secs(60), Duration::ZERO, 100).unwrap();
    let policy = HealthPolicy::builder()
        .check(MetricCheck::error_rate_max(0.05))
        .build()
        .unwrap();
    let pending = Rollout::new("pending", plan, policy).unwrap();
    let source = Arc::new(Source {
        calls: AtomicU32::new(0),
        fail_first: 0,
    });
    let recorder = Arc::new(Recorder::default());
    let mut driver = Driver::new(
        pending,
        source,
        recorder.clone(),
        Arc::new(SystemClock::new()),
    );
    driver
        .rollback_handle()
        .roll_back(Actor::System, "never mind")
        .unwrap();
    let d = driver.step().await.unwrap();
    assert_eq!((d.action, d.phase), (Action::RollBack, PhaseKind::Aborted));
}
