//! The one fault-injecting [`AuditSink`] wrapper (feature `testing`), for tests and
//! simulators: wrap the shipped sink, never a private copy of one.
//!
//! [`SinkFaults`] are the switches of a simulated disk, shared by every process's
//! [`FaultySink`]: an outage during which every write fails, a number of next writes that
//! fail, and a death of the process right after its next write. A [`FaultySink`] is one
//! process's view: once that process is dead ([`FaultySink::kill`], or an armed death)
//! every call fails without reaching the inner sink.
//!
//! ```
//! use std::sync::Arc;
//! use audit_chain::testing::{FaultySink, SinkFaults};
//! use audit_chain::{AuditSink, MemorySink};
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let faults = Arc::new(SinkFaults::default());
//! let sink = FaultySink::new(Arc::new(MemorySink::new()), faults.clone());
//! faults.fail_next(1);
//! assert!(sink.store_checkpoint("x").await.is_err()); // the injected failure
//! assert!(sink.store_checkpoint("x").await.is_ok());
//! assert_eq!(faults.failures(), 1);
//! # });
//! ```

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;

use crate::{AuditError, AuditSink, LogHead, LogRecord};

/// The switches of a simulated disk (see the [module docs](self)).
#[derive(Debug, Default)]
pub struct SinkFaults {
    down: AtomicBool,
    fail_next: AtomicUsize,
    die_after_write: AtomicBool,
    lose_next: AtomicBool,
    failures: AtomicUsize,
}

impl SinkFaults {
    /// Takes the disk down (every write fails before reaching it; reads work) or brings it
    /// back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Whether the disk is down.
    #[must_use]
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// The next `n` writes fail (after any already armed).
    pub fn fail_next(&self, n: usize) {
        self.fail_next.fetch_add(n, Ordering::SeqCst);
    }

    /// The process dies right after its next write reaches the disk (before it learns
    /// that it did): a crash between writing entries and taking them off their queue.
    pub fn arm_death(&self) {
        self.die_after_write.store(true, Ordering::SeqCst);
    }

    /// A broken disk, for checking a checker: the next append acknowledges every record
    /// but writes all except its last one (an acknowledged audit entry is lost).
    pub fn lose_next(&self) {
        self.lose_next.store(true, Ordering::SeqCst);
    }

    /// Whether a death is armed.
    #[must_use]
    pub fn death_armed(&self) -> bool {
        self.die_after_write.load(Ordering::SeqCst)
    }

    /// Removes an armed death and armed failures that did not happen.
    pub fn disarm(&self) {
        self.die_after_write.store(false, Ordering::SeqCst);
        self.fail_next.store(0, Ordering::SeqCst);
    }

    /// Writes refused so far (outage or armed failure).
    #[must_use]
    pub fn failures(&self) -> usize {
        self.failures.load(Ordering::SeqCst)
    }

    /// Whether the write about to start fails (and counts it).
    fn refuse(&self) -> Option<AuditError> {
        let armed = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if !(armed || self.is_down()) {
            return None;
        }
        self.failures.fetch_add(1, Ordering::SeqCst);
        Some(injected("simulated disk", "injected write failure"))
    }
}

/// An injected I/O failure.
fn injected(context: &str, what: &str) -> AuditError {
    AuditError::Io {
        context: context.to_owned(),
        source: Arc::new(std::io::Error::other(what.to_owned())),
    }
}

/// A shipped sink as one (simulated) process sees it: its writes go through the
/// [`SinkFaults`], and once the process is dead every call fails.
#[derive(Debug)]
pub struct FaultySink {
    inner: Arc<dyn AuditSink>,
    faults: Arc<SinkFaults>,
    dead: AtomicBool,
    /// Held shared by every call, exclusively by [`kill`](Self::kill): a call in flight
    /// finishes before the process counts as dead.
    gate: tokio::sync::RwLock<()>,
}

impl FaultySink {
    /// Wraps `inner` for one process.
    #[must_use]
    pub fn new(inner: Arc<dyn AuditSink>, faults: Arc<SinkFaults>) -> Self {
        FaultySink {
            inner,
            faults,
            dead: AtomicBool::new(false),
            gate: tokio::sync::RwLock::new(()),
        }
    }

    /// The process dies: waits for a call in flight, then refuses every later one.
    pub async fn kill(&self) {
        let _exclusive = self.gate.write().await;
        self.dead.store(true, Ordering::SeqCst);
    }

    /// Whether this process is dead.
    #[must_use]
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    fn alive(&self) -> Result<(), AuditError> {
        if self.is_dead() {
            return Err(injected("simulated process", "process crashed"));
        }
        Ok(())
    }

    /// Runs one write: refused while the disk is down or a failure is armed; with an armed
    /// death the write happens and then the process dies.
    async fn write(
        &self,
        call: impl Future<Output = Result<(), AuditError>>,
    ) -> Result<(), AuditError> {
        let _shared = self.gate.read().await;
        self.alive()?;
        if let Some(e) = self.faults.refuse() {
            return Err(e);
        }
        call.await?;
        if self.faults.die_after_write.swap(false, Ordering::SeqCst) {
            self.dead.store(true, Ordering::SeqCst);
        }
        self.alive()
    }
}

#[async_trait]
impl AuditSink for FaultySink {
    async fn append(&self, records: &[LogRecord]) -> Result<(), AuditError> {
        let kept = match records.split_last() {
            Some((_, rest)) if self.faults.lose_next.swap(false, Ordering::SeqCst) => rest,
            _ => records,
        };
        if kept.is_empty() && !records.is_empty() {
            // Nothing left to write: acknowledged all the same.
            let _shared = self.gate.read().await;
            return self.alive();
        }
        self.write(self.inner.append(kept)).await
    }

    async fn read(&self, start: u64, limit: usize) -> Result<Vec<LogRecord>, AuditError> {
        let _shared = self.gate.read().await;
        self.alive()?;
        self.inner.read(start, limit).await
    }

    async fn size(&self) -> Result<u64, AuditError> {
        let _shared = self.gate.read().await;
        self.alive()?;
        self.inner.size().await
    }

    async fn store_checkpoint(&self, note: &str) -> Result<(), AuditError> {
        self.write(self.inner.store_checkpoint(note)).await
    }

    async fn load_checkpoint(&self) -> Result<Option<String>, AuditError> {
        let _shared = self.gate.read().await;
        self.alive()?;
        self.inner.load_checkpoint().await
    }

    async fn store_head(&self, head: &LogHead) -> Result<(), AuditError> {
        self.write(self.inner.store_head(head)).await
    }

    async fn load_head(&self) -> Result<Option<LogHead>, AuditError> {
        let _shared = self.gate.read().await;
        self.alive()?;
        self.inner.load_head().await
    }
}
