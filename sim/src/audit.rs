//! The audit side of the in-memory simulation, on the production path: the
//! `MemoryLedgerStore` seals every journal entry into its tenant's chain under the tenant's
//! lock and queues it in a [`MemoryAuditQueue`] in the same step ([`MemoryAudit`]); an
//! [`AuditWriter`] opened with [`open_with_queue`](AuditWriter::open_with_queue) over a
//! [`FileSink`] integrates the queue into the Merkle log. The simulator adds only the
//! fault-injecting wrapper around the shipped sink (audit-chain's [`FaultySink`]) and a witness: the
//! latest checkpoint the writer returned, kept outside the files.
//!
//! The queue belongs to the store, so it outlives a simulated crash as the store does; the
//! writer and its open sink are process state: a crash abandons them (a write in flight
//! finishes first, none starts after) and a restart opens a new sink and a new writer over
//! the same queue.
//!
//! The disk's faults: an outage (every write fails for a while, or for good), the next
//! write failing once ([`SimAudit::fail_once`]), a death right after a write, and a slow
//! disk ([`SimAudit::set_slow`]): each write waits until the disk is fast again, so the
//! writer's task sits inside a write while the ledger keeps committing. The slow disk is
//! the one switch `SinkFaults` does not have; it sits between `FaultySink` and the shipped
//! `FileSink` ([`SlowDisk`]), so a crash still waits for a write in flight.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use audit_chain::merkle::verify_consistency;
use audit_chain::testing::{FaultySink, SinkFaults};
use audit_chain::{
    AuditError, AuditQueue, AuditSink, AuditWriter, Checkpoint, FileSink, HmacKey, Keyring,
    LogHead, LogRecord, MaskingPolicy, MemoryAuditQueue, WriterConfig, scan_dir, verify_dir,
};
use credits_core::audit::{LedgerAudit, MemoryAudit};
use metered_clock::Clock;

/// The origin line of the simulator's checkpoints.
pub const ORIGIN: &str = "sim.metered.invalid/audit";

/// Capacity of the audit queue: far above any backlog a run builds (the writer integrates
/// it every other step and after every outage), so no change is refused for a full backlog
/// and both backends give the same answers.
pub const BACKLOG_MAX: usize = 1 << 20;

/// A slow disk: while it is slow, every write waits (reads answer at once) until
/// [`set_slow(false)`](Self::set_slow). Shared by every process's sink, like
/// [`SinkFaults`].
#[derive(Debug, Default)]
pub struct SlowDisk {
    slow: AtomicBool,
    fast_again: tokio::sync::Notify,
    /// Writes that entered the disk and have not returned.
    writing: AtomicUsize,
}

impl SlowDisk {
    /// Makes every write wait, or lets the waiting ones (and every later one) through.
    pub fn set_slow(&self, slow: bool) {
        self.slow.store(slow, Ordering::SeqCst);
        if !slow {
            self.fast_again.notify_waiters();
        }
    }

    /// Whether the disk is slow.
    #[must_use]
    pub fn is_slow(&self) -> bool {
        self.slow.load(Ordering::SeqCst)
    }

    /// Writes that entered the disk and have not returned.
    #[must_use]
    pub fn writing(&self) -> usize {
        self.writing.load(Ordering::SeqCst)
    }

    /// Runs one write: waits while the disk is slow, then writes.
    async fn write(
        &self,
        call: impl std::future::Future<Output = Result<(), AuditError>>,
    ) -> Result<(), AuditError> {
        self.writing.fetch_add(1, Ordering::SeqCst);
        loop {
            let fast = self.fast_again.notified();
            if !self.is_slow() {
                break;
            }
            fast.await;
        }
        let result = call.await;
        self.writing.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

/// How long [`SimAudit::set_slow`] waits for the writes a fast disk released.
pub const SLOW_WRITE_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The shipped sink behind a [`SlowDisk`].
#[derive(Debug)]
struct SlowSink {
    inner: Arc<dyn AuditSink>,
    disk: Arc<SlowDisk>,
}

#[async_trait]
impl AuditSink for SlowSink {
    async fn append(&self, records: &[LogRecord]) -> Result<(), AuditError> {
        self.disk.write(self.inner.append(records)).await
    }

    async fn read(&self, start: u64, limit: usize) -> Result<Vec<LogRecord>, AuditError> {
        self.inner.read(start, limit).await
    }

    async fn size(&self) -> Result<u64, AuditError> {
        self.inner.size().await
    }

    async fn store_checkpoint(&self, note: &str) -> Result<(), AuditError> {
        self.disk.write(self.inner.store_checkpoint(note)).await
    }

    async fn load_checkpoint(&self) -> Result<Option<String>, AuditError> {
        self.inner.load_checkpoint().await
    }

    async fn store_head(&self, head: &LogHead) -> Result<(), AuditError> {
        self.disk.write(self.inner.store_head(head)).await
    }

    async fn load_head(&self) -> Result<Option<LogHead>, AuditError> {
        self.inner.load_head().await
    }
}

/// What one [`SimAudit::sync`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Synced {
    /// Everything queued is in the log; the witness moved to this checkpoint.
    Flushed(Checkpoint),
    /// The flush failed as the injected fault explains (the disk is down, or the process
    /// died after a write); nothing was taken off the queue that is not in the files.
    Failed(String),
}

/// The running process's side of the audit log.
#[derive(Debug)]
struct Live {
    writer: AuditWriter,
    sink: Arc<FaultySink>,
}

/// The in-memory backend's audit log: the store's queue (durable state), the writer and
/// its sink (process state), the sink's fault switches and the witness.
#[derive(Debug)]
pub struct SimAudit {
    dir: PathBuf,
    keyring: Arc<Keyring>,
    queue: Arc<MemoryAuditQueue>,
    faults: Arc<SinkFaults>,
    slow: Arc<SlowDisk>,
    /// A [`fail_once`](Self::fail_once) armed for the next [`sync`](Self::sync).
    fail_once: bool,
    clock: Arc<dyn Clock>,
    live: Option<Live>,
    witness: Option<Checkpoint>,
}

impl SimAudit {
    /// Opens (creating) the log in `dir` and starts the first process's writer; the queue
    /// holds at most `backlog_max` entries (past it the store refuses changes). Must run
    /// inside a Tokio runtime (the writer's task is spawned on it).
    ///
    /// # Errors
    /// The sink's or the writer's open error, as text.
    pub async fn open(
        dir: &Path,
        clock: Arc<dyn Clock>,
        backlog_max: usize,
    ) -> Result<Self, String> {
        let key = HmacKey::new(1, [0x5a; 32]).map_err(|e| e.to_string())?;
        let mut audit = SimAudit {
            dir: dir.to_owned(),
            keyring: Arc::new(Keyring::new(key)),
            queue: Arc::new(MemoryAuditQueue::new(backlog_max)),
            faults: Arc::new(SinkFaults::default()),
            slow: Arc::new(SlowDisk::default()),
            fail_once: false,
            clock,
            live: None,
            witness: None,
        };
        audit.reopen().await?;
        Ok(audit)
    }

    /// What the memory store is built with: it seals with [`LedgerAudit`] (the one journal
    /// mapping) and queues into this log's queue.
    ///
    /// Not [`resuming_from`](MemoryAudit::resuming_from) a writer: here the store outlives
    /// every writer (it plays the disk), and every tenant is created before the first
    /// entry, so a tenant's chain never has to resume from the log.
    #[must_use]
    pub fn memory_audit(&self) -> MemoryAudit {
        let audit = LedgerAudit::new(Arc::clone(&self.keyring), MaskingPolicy::none());
        MemoryAudit::new(audit, Arc::clone(&self.queue))
    }

    /// The keyring entries are MACed with.
    #[must_use]
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The disk's fault switches.
    #[must_use]
    pub fn faults(&self) -> &SinkFaults {
        &self.faults
    }

    /// Makes the disk slow (every write waits) or fast again; then lets the writes that
    /// waited finish (so that what they wrote is in the files before the next step).
    ///
    /// A released write still does real file I/O (on Tokio's blocking threads, with an
    /// fsync), whose duration depends on the machine's load, so the wait is bounded in
    /// time, not in turns of the runtime (a count of turns failed soak runs on a loaded
    /// machine with a write that was merely slow).
    ///
    /// # Errors
    /// A write still unfinished after [`SLOW_WRITE_LIMIT`], as text.
    // The simulator's driver waits for real I/O here, in real time (the simulated clock
    // does not move while a file is written).
    #[allow(clippy::disallowed_methods)]
    pub async fn set_slow(&self, slow: bool) -> Result<(), String> {
        self.slow.set_slow(slow);
        if slow {
            return Ok(());
        }
        let deadline = std::time::Instant::now() + SLOW_WRITE_LIMIT;
        while self.slow.writing() != 0 {
            if std::time::Instant::now() >= deadline {
                return Err(format!(
                    "{} writes still waiting {SLOW_WRITE_LIMIT:?} after the audit disk became fast",
                    self.slow.writing()
                ));
            }
            tokio::task::yield_now().await;
            if self.slow.writing() != 0 {
                tokio::time::sleep(std::time::Duration::from_micros(200)).await;
            }
        }
        Ok(())
    }

    /// Whether the disk is slow.
    #[must_use]
    pub fn is_slow(&self) -> bool {
        self.slow.is_slow()
    }

    /// The next write fails once (the next [`sync`](Self::sync) expects it).
    pub fn fail_once(&mut self) {
        self.faults.fail_next(1);
        self.fail_once = true;
    }

    /// The queue's capacity: the backlog at which the store refuses changes.
    #[must_use]
    pub fn backlog_max(&self) -> usize {
        self.queue.capacity()
    }

    /// Entries in the running writer's log.
    #[must_use]
    pub fn log_size(&self) -> Option<u64> {
        self.live.as_ref().map(|l| l.writer.size())
    }

    /// Entries in the store's queue: committed and not yet taken off by a writer (after a
    /// death right after a write, some of them are in the log already).
    #[must_use]
    pub fn backlog(&self) -> usize {
        self.queue.len()
    }

    /// The witness: the latest checkpoint a flush returned, kept outside the files.
    #[must_use]
    pub fn witness(&self) -> Option<&Checkpoint> {
        self.witness.as_ref()
    }

    /// The process dies: a write in flight finishes, no later one starts, the writer is
    /// abandoned (its queued entries stay queued), an armed death is removed, and with
    /// `torn` the last segment ends in a frame the crash cut short.
    ///
    /// # Errors
    /// Writing the torn tail failed, as text.
    pub async fn crash(&mut self, torn: Option<&[u8]>) -> Result<(), String> {
        // A slow write in flight finishes (the crash waits for it, as for any write), and
        // the new process's disk is fast: its writer's first writes would wait otherwise.
        self.set_slow(false).await?;
        self.fail_once = false;
        if let Some(live) = self.live.take() {
            live.sink.kill().await;
        }
        self.faults.disarm();
        match torn {
            Some(bytes) => self
                .tear(bytes)
                .map_err(|e| format!("writing a torn audit tail: {e}")),
            None => Ok(()),
        }
    }

    fn tear(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut segments: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        segments.sort();
        let Some(last) = segments.last() else {
            return Ok(());
        };
        // A frame header announcing more bytes than follow: a write the crash interrupted.
        let mut f = OpenOptions::new().append(true).open(last)?;
        let announced = u32::try_from(bytes.len() + 64).unwrap_or(u32::MAX);
        f.write_all(&announced.to_be_bytes())?;
        f.write_all(bytes)?;
        f.sync_all()
    }

    /// Boots the process's side: reopens the [`FileSink`] (which cuts a torn tail) and
    /// opens a new writer over it and the same queue (it integrates what the queue holds).
    /// Returns the number of torn bytes cut.
    ///
    /// # Errors
    /// The sink's or the writer's open error, as text (a log shorter than its recorded
    /// durable size, damage other than a torn tail).
    pub async fn reopen(&mut self) -> Result<u64, String> {
        let (file, recovery) =
            FileSink::open(&self.dir).map_err(|e| format!("opening the audit files: {e}"))?;
        let disk: Arc<dyn AuditSink> = Arc::new(SlowSink {
            inner: Arc::new(file),
            disk: Arc::clone(&self.slow),
        });
        let sink = Arc::new(FaultySink::new(disk, Arc::clone(&self.faults)));
        let config = WriterConfig::builder(ORIGIN)
            .build()
            .map_err(|e| e.to_string())?;
        let writer = AuditWriter::open_with_queue(
            Arc::clone(&sink) as Arc<dyn AuditSink>,
            Arc::clone(&self.queue) as Arc<dyn AuditQueue>,
            config,
            Arc::clone(&self.clock),
            None,
        )
        .await
        .map_err(|e| format!("opening the audit writer: {e}"))?;
        self.live = Some(Live { writer, sink });
        Ok(recovery.torn_bytes_cut)
    }

    /// The reopened log still holds what the witness saw: at least as many entries, and
    /// the same root at the witness's size.
    ///
    /// # Errors
    /// What differs, as text.
    pub fn check_witness(&self) -> Result<(), String> {
        let (Some(w), Some(live)) = (&self.witness, &self.live) else {
            return Ok(());
        };
        let size = live.writer.size();
        if size < w.size {
            return Err(format!(
                "the reopened log holds {size} entries, the witness saw {}",
                w.size
            ));
        }
        if w.size > 0 {
            let root = live.writer.root_at(w.size).map_err(|e| e.to_string())?;
            if root != w.root {
                return Err(format!(
                    "the reopened log's root at size {} differs from the witness's",
                    w.size
                ));
            }
        }
        Ok(())
    }

    /// Committed entries not yet in `writer`'s log: the queued entries past their stream's
    /// head there (a process that died right after writing left its entries queued and
    /// in the log).
    async fn pending(&self, writer: &AuditWriter) -> Result<u64, String> {
        let queued = self
            .queue
            .peek(usize::MAX)
            .await
            .map_err(|e| format!("reading the audit queue: {e}"))?;
        Ok(queued
            .iter()
            .filter(|e| e.seq() >= writer.stream_head(e.stream()).next_seq)
            .count() as u64)
    }

    /// Lets the writer run until it has integrated everything queued (a flush, so that
    /// what the files hold does not depend on scheduling).
    ///
    /// With the disk up and no death armed the flush must succeed, leave nothing queued,
    /// and return a checkpoint of exactly the entries that were in the log or pending
    /// before, consistent with the witness (an RFC 9162 consistency proof); it becomes
    /// the new witness. Otherwise the flush must fail; with the disk down the log must not
    /// grow and every pending entry must still be queued. With one failure armed
    /// ([`fail_once`](Self::fail_once)) the flush may fail, or succeed when the writer
    /// tried again (then it is checked as above); a failure not used is removed.
    /// Never call it while the disk is slow: the flush would wait for the disk.
    ///
    /// # Errors
    /// A broken expectation, as text.
    pub async fn sync(&mut self) -> Result<Synced, String> {
        let live = self
            .live
            .as_ref()
            .ok_or("the audit writer is not running")?;
        if self.slow.is_slow() {
            return Err("a flush while the disk is slow would wait for it".into());
        }
        let down = self.faults.is_down();
        let death = self.faults.death_armed();
        let once = std::mem::take(&mut self.fail_once);
        let faulted = down || death || once;
        let size = live.writer.size();
        let pending = self.pending(&live.writer).await?;
        let flushed = live.writer.flush().await;
        // Only one failure was armed: a flush that succeeded all the same (the writer tried
        // again, or wrote nothing) is checked like any other; remove an unused failure.
        let flushed = match flushed {
            Ok(cp) if once && !down && !death => {
                self.faults.disarm();
                return self.flushed(cp, size, pending).await;
            }
            other => other,
        };
        let cp = match (flushed, faulted) {
            (Err(e), true) => {
                if down {
                    let (size_after, pending_after) =
                        (live.writer.size(), self.pending(&live.writer).await?);
                    if (size_after, pending_after) != (size, pending) {
                        return Err(format!(
                            "a flush onto a disk that is down: log {size} and {pending} \
                             pending before, log {size_after} and {pending_after} pending after"
                        ));
                    }
                }
                return Ok(Synced::Failed(e.to_string()));
            }
            (Ok(cp), true) => {
                return Err(format!(
                    "a flush through a failing disk succeeded (checkpoint of {})",
                    cp.size
                ));
            }
            (Err(e), false) => return Err(format!("flushing the audit writer: {e}")),
            (Ok(cp), false) => cp,
        };
        self.flushed(cp, size, pending).await
    }

    /// The checks of a successful flush that started with `size` entries in the log and
    /// `pending` queued past it; the checkpoint becomes the witness.
    async fn flushed(&mut self, cp: Checkpoint, size: u64, pending: u64) -> Result<Synced, String> {
        let live = self
            .live
            .as_ref()
            .ok_or("the audit writer is not running")?;
        if cp.size != size + pending {
            return Err(format!(
                "the log held {size} entries and {pending} were pending, but the flush \
                 returned a checkpoint of {}",
                cp.size
            ));
        }
        if !self.queue.is_empty() {
            return Err(format!(
                "{} committed entries still queued after a flush",
                self.queue.len()
            ));
        }
        if let Some(w) = &self.witness {
            if cp.size < w.size {
                return Err(format!(
                    "a flush returned a checkpoint of {} entries, the witness has {}",
                    cp.size, w.size
                ));
            }
            if w.size > 0 {
                let proof = live
                    .writer
                    .consistency_proof(w.size, cp.size)
                    .map_err(|e| format!("consistency proof {}→{}: {e}", w.size, cp.size))?;
                verify_consistency(w.size, cp.size, &proof, &w.root, &cp.root).map_err(|e| {
                    format!(
                        "the checkpoint of {} does not extend the witness's {}: {e}",
                        cp.size, w.size
                    )
                })?;
            }
        }
        self.witness = Some(cp.clone());
        Ok(Synced::Flushed(cp))
    }

    /// Verifies the files against the witness checkpoint (chains, MACs, Merkle root) and
    /// returns every record. Call after a successful [`sync`](Self::sync).
    ///
    /// # Errors
    /// The first verification failure, as text.
    pub fn verify(&self) -> Result<Vec<LogRecord>, String> {
        let cp = self
            .witness
            .as_ref()
            .ok_or("no flush succeeded: there is no witness checkpoint")?;
        let v = verify_dir(&self.dir, &self.keyring, Some(cp)).map_err(|e| e.to_string())?;
        if let Some(f) = v.report.failure {
            return Err(format!("audit log does not verify: {f}"));
        }
        if v.report.entries_ok != cp.size {
            return Err(format!(
                "audit log holds {} records, the witness saw {}",
                v.report.entries_ok, cp.size
            ));
        }
        let scanned = scan_dir(&self.dir).map_err(|e| e.to_string())?;
        Ok(scanned.records)
    }
}
