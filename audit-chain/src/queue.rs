//! Committed entries waiting to be integrated into the log: the [`AuditQueue`] trait (the
//! in-memory queue is in `memory_queue.rs`).
//!
//! A store that seals audit entries inside its own atomic step (the ledger: under the
//! tenant's lock in memory, in the change's transaction on PostgreSQL) puts them in a
//! queue it owns, in the same step. An [`AuditWriter`](crate::AuditWriter) opened with
//! [`open_with_queue`](crate::AuditWriter::open_with_queue) takes them from there, writes
//! them to its sink and only then removes them: a failing sink delays integration and
//! never loses, reorders or skips an entry. The queue's length is the backlog.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::AuditError;
use crate::entry::SealedEntry;

/// A durable queue of committed, sealed entries not yet in the log.
///
/// Contract (checked for every implementation by `tests/queue_conformance.rs`):
/// * [`peek`](Self::peek) returns the oldest entries first and each stream's entries in
///   stream order (a stream's entry is never offered before an earlier one of the same
///   stream that is still queued);
/// * [`remove`](Self::remove) removes exactly the given entries (identified by stream and
///   stream sequence number); naming one that is not
///   queued is not an error (removal is idempotent, so a sequencer that crashed between
///   writing and removing can simply remove again);
/// * entries are never changed while queued.
#[async_trait]
pub trait AuditQueue: Send + Sync + fmt::Debug {
    /// Up to `limit` of the oldest queued entries, without removing them (shared, so a
    /// queue in memory hands them out without copying).
    async fn peek(&self, limit: usize) -> Result<Vec<Arc<SealedEntry>>, AuditError>;
    /// Removes these entries, as [`peek`](Self::peek) returned them (they are in the log
    /// now).
    async fn remove(&self, entries: &[Arc<SealedEntry>]) -> Result<(), AuditError>;
    /// Number of queued entries: the integration backlog.
    async fn backlog(&self) -> Result<u64, AuditError>;
    /// Returns once entries may have been queued since the last call, or after a poll
    /// interval. The default waits 20 ms (a queue in another process cannot notify).
    ///
    /// Without the `tokio` feature the default returns at once: the driver paces itself.
    async fn changed(&self) {
        // A queue in another process (a database) is polled; the wait is the poll interval.
        #[cfg(feature = "tokio")]
        #[allow(clippy::disallowed_methods)]
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
