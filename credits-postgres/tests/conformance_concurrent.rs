//! The conformance suite's concurrency checks on PostgreSQL (READ COMMITTED, SERIALIZABLE
//! and group commit): every request a task of a multi-threaded runtime, released together
//! by a barrier, so the requests really overlap on separate connections.

// Tests act as applications: they spawn the suite's request tasks.
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::Arc;

use credits_core::LedgerStore;
use credits_core::conformance::{CONCURRENT_CHECKS, Spawner, Task};
use credits_postgres::{GroupCommitConfig, Isolation};
use metered_clock::ManualClock;

#[derive(Clone, Copy, Debug)]
enum Variant {
    ReadCommitted,
    Serializable,
    GroupCommit,
}

fn spawner() -> Spawner {
    let handle = tokio::runtime::Handle::current();
    Arc::new(move |task: Task| -> Task {
        let running = handle.spawn(task);
        Box::pin(async move { running.await.expect("a request task panicked") })
    })
}

async fn run(variant: Variant) {
    for (name, check) in CONCURRENT_CHECKS {
        let Some(db) = common::test_db(&format!("conc_{name}")).await else {
            return;
        };
        let mut config = db.config();
        if matches!(variant, Variant::Serializable) {
            config = config.isolation(Isolation::Serializable);
        }
        let store = db
            .store(config, Arc::new(ManualClock::new(common::START)))
            .await;
        let store: Arc<dyn LedgerStore> = match variant {
            Variant::GroupCommit => Arc::new(
                store.with_group_commit(GroupCommitConfig::new(2, 64, 1_024).expect("config")),
            ),
            _ => Arc::new(store),
        };
        check(store, spawner()).await;
        db.drop_schema().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency_checks_read_committed() {
    run(Variant::ReadCommitted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency_checks_serializable() {
    run(Variant::Serializable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency_checks_group_commit() {
    run(Variant::GroupCommit).await;
}
