//! The checks every [`ExperimentStore`] backend must pass (feature `conformance`).
//!
//! A backend's tests call [`check_experiment_store`] with a store and an id prefix no other
//! check uses (ids are `<prefix>/…`, so a store that keys experiments by tenant sees one
//! tenant). The checks panic with a message on the first violated expectation, as tests do.
//! Concurrency (merges from many tasks at once) needs the caller's runtime and is left to
//! the backend's own tests.
//!
//! ```
//! use bayes_ab::InMemoryExperimentStore;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! bayes_ab::conformance::check_experiment_store(&InMemoryExperimentStore::new(), "acme").await;
//! # });
//! ```

use metered_clock::Timestamp;

use crate::{BayesError, ExperimentState, ExperimentStore, TrafficSplit, UnitOutcome};

/// The time the checks' experiments start at.
pub const START: Timestamp = Timestamp::from_unix_millis(1_700_000_000_000);

/// A fresh two-arm experiment `id` (no counts).
///
/// # Panics
/// Never for an id `ExperimentState::new` accepts.
#[must_use]
pub fn fresh(id: &str) -> ExperimentState {
    ExperimentState::new(id, TrafficSplit::even(2).expect("split"), START).expect("state")
}

/// One unit's outcome on `arm` of the two-arm experiment `id`, as a delta to merge.
///
/// # Panics
/// For an arm other than 0 or 1.
#[must_use]
pub fn delta(id: &str, arm: usize, converted: bool) -> ExperimentState {
    let mut d = fresh(id);
    d.record(
        arm,
        UnitOutcome {
            converted,
            ..UnitOutcome::default()
        },
    )
    .expect("record");
    d
}

fn conversions(s: &ExperimentState, arm: usize) -> (u64, u64) {
    let c = &s.arms()[arm].conversions;
    (c.successes(), c.trials())
}

/// Creation, loads, merges, optimistic saves and deletion, with every refusal changing
/// nothing; then [`check_merge_once`] under `prefix/once`. Uses ids under `prefix/`.
///
/// # Panics
/// On the first expectation the store does not meet.
pub async fn check_experiment_store(store: &dyn ExperimentStore, prefix: &str) {
    let id = format!("{prefix}/exp-1");
    assert_eq!(store.create(fresh(&id)).await.expect("create"), 1);
    assert!(
        matches!(
            store.create(fresh(&id)).await,
            Err(BayesError::ExperimentExists { .. })
        ),
        "a taken id is refused"
    );
    assert!(matches!(
        store.load(&format!("{prefix}/nope")).await,
        Err(BayesError::ExperimentNotFound { .. })
    ));

    // Merges add counts and bump the version.
    assert_eq!(store.merge(&delta(&id, 0, true)).await.expect("merge"), 2);
    assert_eq!(store.merge(&delta(&id, 1, false)).await.expect("merge"), 3);
    let (loaded, version) = store.load(&id).await.expect("load");
    assert_eq!(version, 3);
    assert_eq!(conversions(&loaded, 0), (1, 1));
    assert_eq!(conversions(&loaded, 1), (0, 1));

    // A delta that does not fit (three arms) changes nothing.
    let mut wrong =
        ExperimentState::new(&id, TrafficSplit::even(3).expect("split"), START).expect("state");
    wrong.record(2, UnitOutcome::default()).expect("record");
    assert!(
        store.merge(&wrong).await.is_err(),
        "a misfit delta is refused"
    );
    assert_eq!(store.load(&id).await.expect("load"), (loaded.clone(), 3));

    // Optimistic saves: a stale version is refused with the version found, nothing changes.
    let mut replaced = loaded.clone();
    replaced
        .record(
            0,
            UnitOutcome {
                converted: true,
                ..UnitOutcome::default()
            },
        )
        .expect("record");
    match store.save(&replaced, 2).await {
        Err(BayesError::VersionConflict {
            expected: 2,
            found: 3,
            ..
        }) => {}
        other => panic!("a stale save must conflict: {other:?}"),
    }
    assert_eq!(store.load(&id).await.expect("load"), (loaded, 3));
    assert_eq!(store.save(&replaced, 3).await.expect("save"), 4);
    assert_eq!(store.load(&id).await.expect("load"), (replaced.clone(), 4));
    assert!(matches!(
        store.save(&replaced, u64::MAX).await,
        Err(BayesError::VersionConflict { found: 4, .. })
    ));

    // Another experiment is its own.
    let other = format!("{prefix}/exp-2");
    assert_eq!(store.create(fresh(&other)).await.expect("create"), 1);
    assert_eq!(store.load(&id).await.expect("load").1, 4);

    // Deletion.
    store.delete(&id).await.expect("delete");
    assert!(matches!(
        store.load(&id).await,
        Err(BayesError::ExperimentNotFound { .. })
    ));
    assert!(matches!(
        store.delete(&id).await,
        Err(BayesError::ExperimentNotFound { .. })
    ));
    assert!(matches!(
        store.save(&replaced, 4).await,
        Err(BayesError::ExperimentNotFound { .. })
    ));
    assert!(matches!(
        store.merge(&delta(&id, 0, true)).await,
        Err(BayesError::ExperimentNotFound { .. })
    ));
    assert_eq!(store.load(&other).await.expect("load").1, 1);
    // A deleted id can be taken again, from version 1.
    assert_eq!(store.create(fresh(&id)).await.expect("create again"), 1);
    assert_eq!(
        conversions(&store.load(&id).await.expect("load").0, 0),
        (0, 0)
    );

    check_merge_once(store, &format!("{prefix}/once")).await;
}

/// The request fingerprint [`check_merge_once`] passes with every key it applies.
const FP_A: [u8; 16] = [0xa5; 16];
/// Another request's fingerprint.
const FP_B: [u8; 16] = [0x5a; 16];

/// [`ExperimentStore::merge_once`]: a key applies once, a replay (same fingerprint) returns
/// `false` and changes nothing, the key with another fingerprint is refused with
/// [`BayesError::IdempotencyConflict`] and changes nothing, different keys both apply, an experiment's keys are its own, a refused
/// merge records no key, and the keys of a deleted experiment do not outlive it (a
/// recreated one of the same id accepts them again). Uses ids under `prefix/`.
///
/// # Panics
/// On the first expectation the store does not meet.
pub async fn check_merge_once(store: &dyn ExperimentStore, prefix: &str) {
    let id = format!("{prefix}/exp-1");
    let other = format!("{prefix}/exp-2");
    assert!(matches!(
        store.merge_once(&delta(&id, 0, true), "k1", FP_A).await,
        Err(BayesError::ExperimentNotFound { .. })
    ));
    assert_eq!(store.create(fresh(&id)).await.expect("create"), 1);
    assert_eq!(store.create(fresh(&other)).await.expect("create"), 1);

    // Applied once; the replay changes nothing.
    assert!(
        store
            .merge_once(&delta(&id, 0, true), "k1", FP_A)
            .await
            .expect("merge_once"),
        "a new key applies"
    );
    let (after_one, version) = store.load(&id).await.expect("load");
    assert_eq!(version, 2);
    assert_eq!(conversions(&after_one, 0), (1, 1));
    assert!(
        !store
            .merge_once(&delta(&id, 0, true), "k1", FP_A)
            .await
            .expect("replay"),
        "a replayed key does not apply"
    );
    assert_eq!(
        store.load(&id).await.expect("load"),
        (after_one.clone(), 2),
        "a replay changes nothing"
    );

    // The same key with another request fingerprint is refused and changes nothing, also
    // when the delta is the one first applied.
    for conflicting in [delta(&id, 0, true), delta(&id, 1, false)] {
        match store.merge_once(&conflicting, "k1", FP_B).await {
            Err(BayesError::IdempotencyConflict { id: got, key }) => {
                assert_eq!((got.as_str(), key.as_str()), (id.as_str(), "k1"));
            }
            other => panic!("a key reused with another fingerprint: {other:?}"),
        }
        assert_eq!(
            store.load(&id).await.expect("load"),
            (after_one.clone(), 2),
            "a conflict changes nothing"
        );
    }
    // The first fingerprint still replays.
    assert!(
        !store
            .merge_once(&delta(&id, 0, true), "k1", FP_A)
            .await
            .expect("replay after a conflict")
    );

    // A refused merge under a new key records nothing, so the key still applies after.
    let mut wrong =
        ExperimentState::new(&id, TrafficSplit::even(3).expect("split"), START).expect("state");
    wrong.record(2, UnitOutcome::default()).expect("record");
    assert!(store.merge_once(&wrong, "k2", FP_A).await.is_err());
    assert_eq!(store.load(&id).await.expect("load"), (after_one, 2));

    // Different keys both apply.
    assert!(
        store
            .merge_once(&delta(&id, 1, false), "k2", FP_A)
            .await
            .expect("merge_once")
    );
    let (loaded, version) = store.load(&id).await.expect("load");
    assert_eq!(version, 3);
    assert_eq!(conversions(&loaded, 0), (1, 1));
    assert_eq!(conversions(&loaded, 1), (0, 1));

    // Another experiment's keys are its own.
    assert!(
        store
            .merge_once(&delta(&other, 0, true), "k1", FP_A)
            .await
            .expect("merge_once")
    );
    assert_eq!(
        conversions(&store.load(&other).await.expect("load").0, 0),
        (1, 1)
    );

    // Deleting drops the keys: a recreated experiment accepts them again.
    store.delete(&id).await.expect("delete");
    assert_eq!(store.create(fresh(&id)).await.expect("create again"), 1);
    assert!(
        store
            .merge_once(&delta(&id, 0, true), "k1", FP_A)
            .await
            .expect("merge_once after recreate"),
        "a deleted experiment's keys do not leak into its successor"
    );
    let (loaded, version) = store.load(&id).await.expect("load");
    assert_eq!(version, 2);
    assert_eq!(conversions(&loaded, 0), (1, 1));
    // The other experiment kept its key.
    assert!(
        !store
            .merge_once(&delta(&other, 0, true), "k1", FP_A)
            .await
            .expect("replay")
    );
}
