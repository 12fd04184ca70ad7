//! The service's state stores: one set of checks run against the in-memory stores
//! (`bayes_ab::InMemoryExperimentStore`, `canary::MemoryRolloutStore`) and the PostgreSQL ones
//! (`PgExperimentStore`, `PgRolloutStore`); then what only a shared database shows: a
//! per-tenant quota and a rollout limit that hold across two processes' pools, one of two
//! concurrent saves of one rollout kept with its trail entries (the other's never written),
//! and everything still there through a new pool (a restart).

// Tests act as applications: they spawn tasks.
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::Arc;

use audit_chain::{
    AuditTrail, AuditWriter, HmacKey, Keyring, MaskingPolicy, MemorySink, WriterConfig,
};
use bayes_ab::conformance::{delta, fresh as state};
use bayes_ab::{ExperimentState, ExperimentStore, InMemoryExperimentStore};
use canary::conformance::{
    advance, check_rollout_store, plan_and_policy, started, trail_entries as entries,
};
use canary::{
    CanaryError, MemoryRolloutStore, PhaseKind, Rollout, RolloutAdmission, RolloutStore,
    StoredRollout,
};
use common::START;
use credits_postgres::{ExperimentAdmission, PgExperimentStore, PgLedgerStore, PgRolloutStore};
use metered_clock::ManualClock;

fn keyring() -> Arc<Keyring> {
    Arc::new(Keyring::new(HmacKey::new(1, [7u8; 32]).expect("key")))
}

fn trials(s: &ExperimentState, arm: usize) -> (u64, u64) {
    let c = &s.arms()[arm].conversions;
    (c.successes(), c.trials())
}

/// bayes-ab's checks, then merges from many tasks at once (they all count).
async fn check_experiment_store(store: Arc<dyn ExperimentStore>, prefix: &str) {
    bayes_ab::conformance::check_experiment_store(store.as_ref(), prefix).await;
    let id = format!("{prefix}/concurrent");
    assert_eq!(store.create(state(&id)).await.expect("create"), 1);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = Arc::clone(&store);
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            store.merge(&delta(&id, 1, i % 2 == 0)).await
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("merge");
    }
    let (after, version) = store.load(&id).await.expect("load");
    assert_eq!(version, 17);
    assert_eq!(trials(&after, 1), (8, 16));
}

async fn memory_trail() -> (Arc<MemorySink>, Arc<dyn AuditTrail>) {
    let sink = Arc::new(MemorySink::new());
    let writer = AuditWriter::open(
        sink.clone(),
        WriterConfig::builder("test/rollouts").build().unwrap(),
        Arc::new(ManualClock::new(START)),
        None,
    )
    .await
    .unwrap();
    let log = audit_chain::AuditLog::new(
        writer,
        Keyring::clone(&keyring()),
        MaskingPolicy::standard(),
    );
    (sink, Arc::new(log))
}

#[tokio::test]
async fn the_memory_stores_pass_the_checks() {
    check_experiment_store(Arc::new(InMemoryExperimentStore::new()), "acme").await;
    let (_sink, trail) = memory_trail().await;
    let store = Arc::new(MemoryRolloutStore::new(trail));
    let written = check_rollout_store(store.as_ref(), "mem").await;
    assert!(written >= 3);
    assert_eq!(store.unwritten().await, 0);
}

fn pg_rollouts(store: &PgLedgerStore) -> PgRolloutStore {
    store
        .audit_trail(keyring(), MaskingPolicy::standard())
        .rollout_store()
}

#[tokio::test]
async fn the_postgres_stores_pass_the_checks() {
    let Some(db) = common::test_db("state_checks").await else {
        return;
    };
    let store = db.default_store().await;
    check_experiment_store(Arc::new(store.experiment_store()), "acme").await;
    let written = check_rollout_store(&pg_rollouts(&store), "pg").await;
    // The trail went with the changes kept (two starts and one step), queued for the
    // sequencer; nothing of the refused ones.
    let n = db
        .count("SELECT count(*) FROM audit_log WHERE stream LIKE 'canary/pg-%'")
        .await;
    assert_eq!(usize::try_from(n).unwrap(), written);
    assert_eq!(
        db.count("SELECT count(*) FROM audit_pending WHERE stream LIKE 'canary/pg-%'")
            .await,
        n
    );
    db.drop_schema().await;
}

#[tokio::test]
async fn quotas_hold_across_two_pools_and_a_restart_keeps_everything() {
    let Some(db) = common::test_db("state_two_pools").await else {
        return;
    };
    let a = db.default_store().await;
    let b = db.default_store().await;
    let (ea, eb) = (a.experiment_store(), b.experiment_store());

    // Twelve creations at once for acme through two pools, at most 3 per tenant.
    let mut tasks = Vec::new();
    for i in 0..12 {
        let store: PgExperimentStore = if i % 2 == 0 { ea.clone() } else { eb.clone() };
        tasks.push(tokio::spawn(async move {
            store
                .create_within(state(&format!("acme/e{i}")), Some("{}"), 3)
                .await
        }));
    }
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap().expect("create") {
            ExperimentAdmission::Created { version: 1 } => created += 1,
            ExperimentAdmission::Full { max: 3 } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(created, 3);
    assert_eq!(ea.count("acme").await.unwrap(), 3);
    // Another tenant is not affected, and a tenant name with '/' counts on its own.
    assert_eq!(
        eb.create_within(state("globex/e0"), Some(r#"{"x":1}"#), 3)
            .await
            .unwrap(),
        ExperimentAdmission::Created { version: 1 }
    );
    assert_eq!(eb.count("globex").await.unwrap(), 1);

    // Rollouts: the limit holds across both pools.
    let (ra, rb) = (pg_rollouts(&a), pg_rollouts(&b));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let store = if i % 2 == 0 { ra.clone() } else { rb.clone() };
        tasks.push(tokio::spawn(async move {
            let (_, stored, trail) = started(&format!("r{i}"));
            store.create(&stored, &trail, 4).await
        }));
    }
    let mut created = 0;
    for t in tasks {
        if t.await.unwrap().expect("create") == (RolloutAdmission::Created { version: 1 }) {
            created += 1;
        }
    }
    assert_eq!(created, 4);
    let id = ra.ids().await.unwrap()[0].clone();

    // Both processes decide the next step from the same version: one save is kept, with its
    // trail entries; the other's entries are never written.
    let loaded_a = ra.load(&id).await.unwrap();
    let loaded_b = rb.load(&id).await.unwrap();
    assert_eq!(loaded_a, loaded_b);
    let (plan, policy) = plan_and_policy();
    let (plan, policy) = (Arc::new(plan), Arc::new(policy));
    let mut saves = Vec::new();
    let mut step_entries = 0;
    for (store, loaded) in [(ra.clone(), loaded_a), (rb.clone(), loaded_b)] {
        let mut r = Rollout::restore(
            id.as_str(),
            Arc::clone(&plan),
            Arc::clone(&policy),
            loaded.state.clone(),
        )
        .unwrap();
        advance(&mut r, START);
        let trail = entries(&mut r);
        assert!(!trail.is_empty());
        step_entries = trail.len();
        let next = StoredRollout {
            state: r.state().clone(),
            ..loaded
        };
        saves.push(tokio::spawn(async move { store.save(&next, &trail).await }));
    }
    let mut kept = 0;
    let mut conflicts = 0;
    for s in saves {
        match s.await.unwrap() {
            Ok(2) => kept += 1,
            Err(CanaryError::VersionConflict { .. }) => conflicts += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((kept, conflicts), (1, 1));
    let stream = format!("canary/{id}");
    let entries_now: i64 = db
        .admin
        .query_one(
            "SELECT count(*) FROM audit_log WHERE stream = $1",
            &[&stream],
        )
        .await
        .unwrap()
        .get(0);
    let (_, _, start) = started(&id);
    assert_eq!(
        usize::try_from(entries_now).unwrap(),
        start.len() + step_entries,
        "the start and one step, not two"
    );

    // A restart: new pools see everything.
    drop((ea, eb, ra, rb, a, b));
    let c = db.default_store().await;
    let (loaded, version) = c.experiment_store().load("globex/e0").await.unwrap();
    assert_eq!((loaded.id(), version), ("globex/e0", 1));
    assert_eq!(
        c.experiment_store()
            .spec("globex/e0")
            .await
            .unwrap()
            .as_deref(),
        Some(r#"{"x":1}"#)
    );
    let r = pg_rollouts(&c).load(&id).await.unwrap();
    assert_eq!((r.version, r.state.step), (2, 1));
    assert_eq!(r.state.phase.kind(), PhaseKind::Progressing);
    assert_eq!(pg_rollouts(&c).ids().await.unwrap().len(), 4);
    db.drop_schema().await;
}

/// `url` without its user, as keywords (another `user=` is appended).
fn keyword_url(url: &str) -> String {
    let config: credits_postgres::tokio_postgres::Config = url.parse().expect("DATABASE_URL");
    let mut parts = Vec::new();
    for h in config.get_hosts() {
        if let credits_postgres::tokio_postgres::config::Host::Tcp(h) = h {
            parts.push(format!("host={h}"));
        }
    }
    if let Some(p) = config.get_ports().first() {
        parts.push(format!("port={p}"));
    }
    if let Some(d) = config.get_dbname() {
        parts.push(format!("dbname={d}"));
    }
    parts.join(" ")
}

#[tokio::test]
async fn the_application_role_may_use_the_service_tables() {
    let Some(db) = common::test_db("state_role").await else {
        return;
    };
    // Migrations as the owner; the stores as a login role in credits_app (the docs' set-up).
    drop(db.default_store().await);
    db.admin
        .batch_execute(
            "DO $$ BEGIN CREATE ROLE cp_test_service LOGIN IN ROLE credits_app; \
             EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        )
        .await
        .expect("role");
    let url = format!("{} user=cp_test_service", keyword_url(&db.url));
    let config = credits_postgres::PgConfig::builder(&url)
        .search_path(&db.schema)
        .pool_max_size(4)
        .build()
        .expect("config");
    let store = PgLedgerStore::connect(config, Arc::new(ManualClock::new(START))).expect("store");
    check_experiment_store(Arc::new(store.experiment_store()), "acme").await;
    let written = check_rollout_store(&pg_rollouts(&store), "role").await;
    assert_eq!(
        usize::try_from(
            db.count("SELECT count(*) FROM audit_pending WHERE stream LIKE 'canary/role-%'")
                .await
        )
        .unwrap(),
        written
    );
    db.drop_schema().await;
}
