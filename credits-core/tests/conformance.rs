//! The memory store passes the shared backend conformance suite, its concurrency checks
//! with every request a task of a multi-threaded runtime.

use std::sync::Arc;

use credits_core::MemoryLedgerStore;
use credits_core::conformance::{Spawner, Task, run_all_spawning};

/// Spawns each request of a concurrency check onto the test's multi-threaded runtime.
// The suite's requests must run in parallel: that is what the concurrency checks check.
#[allow(clippy::disallowed_methods)]
fn spawner() -> Spawner {
    let handle = tokio::runtime::Handle::current();
    Arc::new(move |task: Task| -> Task {
        let running = handle.spawn(task);
        Box::pin(async move { running.await.expect("a request task panicked") })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_passes_conformance_suite() {
    run_all_spawning(|| async { MemoryLedgerStore::new() }, spawner()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_with_one_shard_passes_conformance_suite() {
    run_all_spawning(
        || async { MemoryLedgerStore::builder().shards(1).build() },
        spawner(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_limited_to_a_bigint_passes_conformance_suite() {
    // What a PostgreSQL store stores: the limit checks then run below `u64::MAX`, in memory.
    run_all_spawning(
        || async {
            MemoryLedgerStore::builder()
                .value_limit(i64::MAX.unsigned_abs())
                .build()
        },
        spawner(),
    )
    .await;
}

#[test]
fn the_concurrency_checks_also_pass_inline_on_one_thread() {
    // `run_all`'s way (and the doc example's): no runtime, requests polled on one task.
    futures::executor::block_on(credits_core::conformance::run_all(|| async {
        MemoryLedgerStore::new()
    }));
}
