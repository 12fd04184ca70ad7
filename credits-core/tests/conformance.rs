//! The memory store passes the shared backend conformance suite.

use credits_core::MemoryLedgerStore;

#[tokio::test]
async fn memory_store_passes_conformance_suite() {
    credits_core::conformance::run_all(|| async { MemoryLedgerStore::new() }).await;
}

#[tokio::test]
async fn memory_store_with_one_shard_passes_conformance_suite() {
    credits_core::conformance::run_all(|| async { MemoryLedgerStore::builder().shards(1).build() })
        .await;
}

#[tokio::test]
async fn memory_store_limited_to_a_bigint_passes_conformance_suite() {
    // What a PostgreSQL store stores: the limit checks then run below `u64::MAX`, in memory.
    credits_core::conformance::run_all(|| async {
        MemoryLedgerStore::builder()
            .value_limit(i64::MAX.unsigned_abs())
            .build()
    })
    .await;
}
