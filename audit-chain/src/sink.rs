//! Storage for sequenced records: the [`AuditSink`] trait and the in-memory sink.

use std::fmt;
use std::ops::Range;

use async_trait::async_trait;
use parking_lot::RwLock;

use crate::entry::LogRecord;
use crate::verify::{ChainVerifier, VerifyReport};
use crate::{AuditError, Checkpoint, Keyring, LogHead};

/// Records read per call while verifying or replaying a sink.
pub(crate) const READ_CHUNK: usize = 4096;

/// Durable, append-only storage of log records.
///
/// Implementations must make a batch durable before `append` returns `Ok` (that is what
/// lets the writer acknowledge entries), must reject a batch that does not start at
/// [`size`](Self::size) or is not consecutive, and must change nothing when they return an
/// error they can undo. Every implementation must pass the shared conformance checks in
/// `tests/sink_conformance.rs`.
#[async_trait]
pub trait AuditSink: Send + Sync + fmt::Debug {
    /// Appends consecutive records starting at index [`size`](Self::size); durable on `Ok`.
    async fn append(&self, records: &[LogRecord]) -> Result<(), AuditError>;
    /// Up to `limit` records from index `start` (fewer at the end of the log).
    async fn read(&self, start: u64, limit: usize) -> Result<Vec<LogRecord>, AuditError>;
    /// Number of records stored.
    async fn size(&self) -> Result<u64, AuditError>;
    /// Stores the latest checkpoint note (a convenience copy: verifiers must keep their
    /// trusted checkpoint elsewhere).
    async fn store_checkpoint(&self, note: &str) -> Result<(), AuditError>;
    /// The last stored checkpoint note, if any.
    async fn load_checkpoint(&self) -> Result<Option<String>, AuditError>;
    /// Stores a snapshot of the log's state so a writer can restart without replaying the
    /// whole log. Optional: the default keeps nothing (restarts then replay everything).
    async fn store_head(&self, head: &LogHead) -> Result<(), AuditError> {
        let _ = head;
        Ok(())
    }
    /// The last stored snapshot, if any. The default has none.
    async fn load_head(&self) -> Result<Option<LogHead>, AuditError> {
        Ok(None)
    }
}

pub(crate) fn check_batch(size: u64, records: &[LogRecord]) -> Result<(), AuditError> {
    for (i, r) in records.iter().enumerate() {
        let want = size + i as u64;
        if r.index != want {
            return Err(AuditError::InvalidEntry {
                field: "index",
                reason: format!("record has index {}, sink expects {want}", r.index),
            });
        }
    }
    Ok(())
}

/// An in-memory sink: for tests, examples and as the reference for the conformance suite.
///
/// ```
/// # tokio_test_block(async {
/// use audit_chain::{AuditSink, MemorySink};
/// let sink = MemorySink::new();
/// assert_eq!(sink.size().await?, 0);
/// # Ok::<(), audit_chain::AuditError>(())
/// # });
/// # fn tokio_test_block<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, Default)]
pub struct MemorySink {
    records: RwLock<Vec<LogRecord>>,
    checkpoint: RwLock<Option<String>>,
    head: RwLock<Option<LogHead>>,
}

impl MemorySink {
    /// An empty sink.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of all records (for tests and tooling).
    #[must_use]
    pub fn snapshot(&self) -> Vec<LogRecord> {
        self.records.read().clone()
    }
}

#[async_trait]
impl AuditSink for MemorySink {
    async fn append(&self, records: &[LogRecord]) -> Result<(), AuditError> {
        let mut all = self.records.write();
        check_batch(all.len() as u64, records)?;
        all.extend_from_slice(records);
        Ok(())
    }

    async fn read(&self, start: u64, limit: usize) -> Result<Vec<LogRecord>, AuditError> {
        let all = self.records.read();
        let start = usize::try_from(start).unwrap_or(usize::MAX).min(all.len());
        let end = start.saturating_add(limit).min(all.len());
        Ok(all[start..end].to_vec())
    }

    async fn size(&self) -> Result<u64, AuditError> {
        Ok(self.records.read().len() as u64)
    }

    async fn store_checkpoint(&self, note: &str) -> Result<(), AuditError> {
        *self.checkpoint.write() = Some(note.to_owned());
        Ok(())
    }

    async fn load_checkpoint(&self) -> Result<Option<String>, AuditError> {
        Ok(self.checkpoint.read().clone())
    }

    async fn store_head(&self, head: &LogHead) -> Result<(), AuditError> {
        *self.head.write() = Some(head.clone());
        Ok(())
    }

    async fn load_head(&self) -> Result<Option<LogHead>, AuditError> {
        Ok(self.head.read().clone())
    }
}

/// Fully verifies everything in `sink`, optionally against a trusted checkpoint.
///
/// # Errors
/// Only storage errors while reading; problems with the data are in the report.
pub async fn verify_sink(
    sink: &dyn AuditSink,
    keyring: &Keyring,
    checkpoint: Option<&Checkpoint>,
) -> Result<VerifyReport, AuditError> {
    let size = sink.size().await?;
    let mut v = ChainVerifier::new(keyring);
    if let Some(cp) = checkpoint {
        v = v.with_checkpoint(cp.clone());
    }
    feed(sink, &mut v, 0..size).await?;
    Ok(v.finish())
}

/// Verifies log indices `range` of `sink`: hashes, MACs, links and sequence numbers inside
/// the range (the first entry of each stream in the range is taken as its anchor). A range
/// starting at 0 is a full verification without checkpoint.
///
/// # Errors
/// Only storage errors while reading.
pub async fn verify_range(
    sink: &dyn AuditSink,
    keyring: &Keyring,
    range: Range<u64>,
) -> Result<VerifyReport, AuditError> {
    let size = sink.size().await?;
    let end = range.end.min(size);
    let mut v = ChainVerifier::for_range(keyring, range.start);
    feed(sink, &mut v, range.start..end).await?;
    Ok(v.finish())
}

async fn feed(
    sink: &dyn AuditSink,
    v: &mut ChainVerifier<'_>,
    range: Range<u64>,
) -> Result<(), AuditError> {
    let mut at = range.start;
    while at < range.end {
        let want = usize::try_from(range.end - at)
            .unwrap_or(usize::MAX)
            .min(READ_CHUNK);
        let chunk = sink.read(at, want).await?;
        if chunk.is_empty() {
            break;
        }
        for r in &chunk {
            if v.push(r).is_err() {
                return Ok(());
            }
        }
        at += chunk.len() as u64;
    }
    Ok(())
}
