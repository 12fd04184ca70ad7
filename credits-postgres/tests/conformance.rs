//! The shared backend conformance suite, on PostgreSQL: with row locks under READ
//! COMMITTED, under SERIALIZABLE, and through group commit.

// Tests and benchmarks act as applications: they spawn tasks and sleep on tokio's timer.
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::Arc;

use credits_core::LedgerStore;
use credits_core::conformance::CHECKS;
use credits_postgres::{GroupCommitConfig, Isolation};
use metered_clock::ManualClock;

#[derive(Clone, Copy, Debug)]
enum Variant {
    ReadCommitted,
    Serializable,
    GroupCommit,
}

async fn run(variant: Variant) {
    for (name, check) in CHECKS {
        let Some(db) = common::test_db(&format!("conf_{name}")).await else {
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
        check(store).await;
        db.drop_schema().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_read_committed() {
    run(Variant::ReadCommitted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_serializable() {
    run(Variant::Serializable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_group_commit() {
    run(Variant::GroupCommit).await;
}
