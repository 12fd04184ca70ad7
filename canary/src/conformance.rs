//! The checks every [`RolloutStore`] backend must pass (feature `conformance`).
//!
//! A backend's tests call [`check_rollout_store`] with an **empty** store and an id prefix;
//! it returns how many trail entries went with the changes the store kept, for the backend
//! to compare with what its trail holds. The checks panic with a message on the first
//! violated expectation, as tests do.
//!
//! ```
//! use std::sync::Arc;
//! use audit_chain::*;
//! use canary::MemoryRolloutStore;
//! use metered_clock::ManualClock;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let sink = Arc::new(MemorySink::new());
//! let clock = Arc::new(ManualClock::new(canary::conformance::START));
//! let writer = AuditWriter::open(sink, WriterConfig::builder("example/audit").build()?, clock, None).await?;
//! let trail = AuditLog::new(writer, Keyring::new(HmacKey::new(1, [5u8; 32])?), MaskingPolicy::standard());
//! let store = MemoryRolloutStore::new(Arc::new(trail));
//! let written = canary::conformance::check_rollout_store(&store, "mem").await;
//! assert!(written >= 3);
//! # Ok::<(), AuditError>(())
//! # }).unwrap();
//! ```

use std::sync::Arc;
use std::time::Duration;

use audit_chain::AuditEntry;
use metered_clock::Timestamp;

use crate::{
    Actor, ArmObservation, CanaryError, HealthPolicy, MetricCheck, Observations, Plan, Rollout,
    RolloutAdmission, RolloutStore, StoredRollout,
};

/// The time the checks' rollouts start at.
pub const START: Timestamp = Timestamp::from_unix_millis(1_700_000_000_000);

/// The plan (5 → 10 → 25 → 50 → 100 %, checked every minute) and policy (error rate at
/// most 5 %) of the checks' rollouts.
///
/// # Panics
/// Never.
#[must_use]
pub fn plan_and_policy() -> (Plan, HealthPolicy) {
    let plan = Plan::progressive(Duration::from_secs(60), Duration::ZERO, 10).expect("plan");
    let policy = HealthPolicy::builder()
        .check(MetricCheck::error_rate_max(0.05))
        .build()
        .expect("policy");
    (plan, policy)
}

/// The trail entries of the events `rollout` recorded since they were last taken.
pub fn trail_entries(rollout: &mut Rollout) -> Vec<AuditEntry> {
    let id = rollout.id().to_owned();
    rollout
        .take_events()
        .iter()
        .map(|e| crate::trail::to_audit_entry(&id, e))
        .collect()
}

/// A rollout `id` started at [`START`], its stored form (version 0: not stored yet) and the
/// trail entries of its start.
///
/// # Panics
/// For an id [`Rollout::new`] refuses.
#[must_use]
pub fn started(id: &str) -> (Rollout, StoredRollout, Vec<AuditEntry>) {
    let (plan, policy) = plan_and_policy();
    let mut rollout = Rollout::new(id, plan, policy).expect("rollout");
    let _ = rollout.start(START, Actor::operator("ana")).expect("start");
    let trail = trail_entries(&mut rollout);
    let stored = StoredRollout {
        id: id.to_owned(),
        spec: r#"{"error_rate_max":0.05}"#.to_owned(),
        state: rollout.state().clone(),
        version: 0,
    };
    (rollout, stored, trail)
}

/// A healthy check a minute after `at`: the rollout moves one step. Returns the check's time.
///
/// # Panics
/// When the rollout refuses the tick.
pub fn advance(rollout: &mut Rollout, at: Timestamp) -> Timestamp {
    let now = at.saturating_add(Duration::from_secs(60));
    let obs = Observations::canary_only(ArmObservation::counts(1_000, 1));
    let _ = rollout.tick(now, &obs).expect("tick");
    now
}

/// Creation (duplicates, the limit), loads, restoring, optimistic saves and their trail
/// entries, with every refusal changing nothing. `store` must be empty; ids start with
/// `prefix`. Returns how many trail entries went with the changes the store kept.
///
/// # Panics
/// On the first expectation the store does not meet.
pub async fn check_rollout_store(store: &dyn RolloutStore, prefix: &str) -> usize {
    let id = format!("{prefix}-a");
    let (mut rollout, stored, trail) = started(&id);
    assert_eq!(
        store.create(&stored, &trail, 2).await.expect("create"),
        RolloutAdmission::Created { version: 1 }
    );
    assert!(
        matches!(
            store.create(&stored, &trail, 2).await,
            Err(CanaryError::DuplicateRollout { .. })
        ),
        "a taken id is refused"
    );
    let (_, other, other_trail) = started(&format!("{prefix}-b"));
    assert_eq!(
        store.create(&other, &other_trail, 2).await.expect("create"),
        RolloutAdmission::Created { version: 1 }
    );
    let (_, third, third_trail) = started(&format!("{prefix}-c"));
    assert_eq!(
        store.create(&third, &third_trail, 2).await.expect("create"),
        RolloutAdmission::Full { max: 2 }
    );
    assert!(matches!(
        store.load(&third.id).await,
        Err(CanaryError::UnknownRollout { .. })
    ));
    assert_eq!(
        store.ids().await.expect("ids"),
        vec![format!("{prefix}-a"), format!("{prefix}-b")]
    );

    // Loaded as stored; restored, the rollout is where it was.
    let loaded = store.load(&id).await.expect("load");
    assert_eq!(loaded.version, 1);
    assert_eq!(loaded.spec, stored.spec);
    assert_eq!(&loaded.state, rollout.state());
    let (plan, policy) = plan_and_policy();
    let restored = Rollout::restore(
        id.as_str(),
        Arc::new(plan),
        Arc::new(policy),
        loaded.state.clone(),
    )
    .expect("restore");
    assert_eq!(restored.state(), rollout.state());
    assert_eq!(restored.weight_percent(), 5);

    // A step decided from version 1 is kept once: a second save from version 1 conflicts.
    advance(&mut rollout, START);
    let step_trail = trail_entries(&mut rollout);
    let next = StoredRollout {
        state: rollout.state().clone(),
        ..loaded.clone()
    };
    assert_eq!(store.save(&next, &step_trail).await.expect("save"), 2);
    match store.save(&next, &step_trail).await {
        Err(CanaryError::VersionConflict {
            expected: 1,
            found: 2,
            ..
        }) => {}
        other => panic!("a stale save must conflict: {other:?}"),
    }
    let now = store.load(&id).await.expect("load");
    assert_eq!((now.version, now.state.step), (2, 1));

    // Trail entries of another stream are refused, and nothing changes.
    let (_, _, foreign) = started(&format!("{prefix}-b"));
    let at_2 = StoredRollout { version: 2, ..next };
    assert!(matches!(
        store.save(&at_2, &foreign).await,
        Err(CanaryError::InvalidCommand { .. })
    ));
    assert!(matches!(
        store.create(&third, &foreign, 10).await,
        Err(CanaryError::InvalidCommand { .. })
    ));
    assert_eq!(store.load(&id).await.expect("load").version, 2);
    assert_eq!(store.ids().await.expect("ids").len(), 2);

    // Unknown rollouts.
    let ghost = StoredRollout {
        id: format!("{prefix}-ghost"),
        ..at_2
    };
    assert!(matches!(
        store.save(&ghost, &[]).await,
        Err(CanaryError::UnknownRollout { .. })
    ));
    trail.len() + other_trail.len() + step_trail.len()
}
