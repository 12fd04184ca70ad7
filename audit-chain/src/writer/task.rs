//! The writer task: gathers batches from its buffer and from the store's queue, sequences
//! them into the log ([`Sequencer`]), writes them to the sink, acknowledges each entry,
//! removes integrated entries from the queue and makes checkpoints.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use metered_clock::{Clock, Tick};
use tokio::sync::{mpsc, oneshot};

use super::{Msg, Shared, WriterConfig};
use crate::entry::SealedEntry;
use crate::queue::AuditQueue;
use crate::sequencer::{Admission, Sequencer, checkpoint_due};
use crate::sink::AuditSink;
use crate::{AuditError, Checkpoint, NoteSigner};

/// The first and the longest wait before integrating the queue again after a failure.
const RETRY_MIN: Duration = Duration::from_millis(10);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// The one task behind every [`AuditWriter`](super::AuditWriter) handle.
pub(super) struct Task {
    rx: mpsc::Receiver<Msg>,
    sink: Arc<dyn AuditSink>,
    queue: Option<Arc<dyn AuditQueue>>,
    shared: Arc<Shared>,
    clock: Arc<dyn Clock>,
    signer: Option<NoteSigner>,
    config: WriterConfig,
    last_cp_size: Option<u64>,
    last_cp_tick: Tick,
    /// Log size covered by the last stored [`LogHead`](crate::LogHead).
    last_head_size: Option<u64>,
    /// Set while the queue's last integration failed: how long to wait before the next.
    retry: Option<Duration>,
    /// The last round took a full batch from the queue: take the next without waiting.
    more: bool,
}

type Waiter = (SealedEntry, oneshot::Sender<Result<u64, AuditError>>);

/// What woke the task.
// Appends dominate; boxing them would add an allocation per entry.
#[allow(clippy::large_enum_variant)]
enum Wake {
    Msg(Msg),
    Queue,
    Stop,
}

/// What one integration round did with the queue.
#[derive(Default)]
struct Round {
    /// Queue entries now in the log (written this round, or found there already).
    integrated: usize,
    /// Queue entries that stayed queued because they do not extend their stream.
    stuck: usize,
    /// The queue offered a full batch: it may hold more.
    more: bool,
}

impl Task {
    pub(super) fn new(
        rx: mpsc::Receiver<Msg>,
        sink: Arc<dyn AuditSink>,
        queue: Option<Arc<dyn AuditQueue>>,
        shared: Arc<Shared>,
        clock: Arc<dyn Clock>,
        signer: Option<NoteSigner>,
        config: WriterConfig,
    ) -> Self {
        Task {
            rx,
            sink,
            queue,
            shared,
            last_cp_size: None,
            last_cp_tick: clock.monotonic(),
            last_head_size: None,
            clock,
            signer,
            config,
            retry: None,
            more: false,
        }
    }

    /// Waits for a message, for the queue to change, or for the retry delay to pass.
    // The writer task is a driver: waiting is its job.
    #[allow(clippy::disallowed_methods)]
    async fn wake(&mut self) -> Wake {
        let queue = self.queue.clone();
        let retry = self.retry;
        let more = self.more;
        let queued = async move {
            match (queue, retry) {
                (None, _) => std::future::pending::<()>().await,
                (Some(_), Some(delay)) => tokio::time::sleep(delay).await,
                (Some(_), None) if more => {}
                (Some(q), None) => q.changed().await,
            }
        };
        tokio::select! {
            biased;
            m = self.rx.recv() => m.map_or(Wake::Stop, Wake::Msg),
            () = queued => Wake::Queue,
        }
    }

    pub(super) async fn run(mut self) {
        // Entries a previous process committed but did not integrate.
        if self.queue.is_some() {
            self.commit(Vec::new()).await;
            self.maybe_checkpoint().await;
        }
        loop {
            let mut batch: Vec<Waiter> = Vec::new();
            let mut control = None;
            match self.wake().await {
                // Every writer handle was dropped: nothing can be waiting.
                Wake::Stop => return,
                Wake::Queue => {}
                Wake::Msg(Msg::Append(e, tx)) => {
                    batch.push((e, tx));
                    control = self.gather(&mut batch).await;
                }
                Wake::Msg(other) => control = Some(other),
            }
            self.commit(batch).await;
            self.maybe_checkpoint().await;
            match control {
                Some(Msg::Flush(reply)) => {
                    let result = match self.drain().await {
                        Ok(()) => self.checkpoint().await,
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(result);
                }
                Some(Msg::Close(reply)) => {
                    let result = self.close().await;
                    let _ = reply.send(result);
                    return;
                }
                Some(Msg::Append(..)) | None => {}
            }
        }
    }

    /// Stops taking messages, writes the entries enqueued before the close (refusing any
    /// other flush or close), integrates the queue, and makes the final checkpoint.
    async fn close(&mut self) -> Result<Checkpoint, AuditError> {
        self.rx.close();
        let mut rest = Vec::new();
        while let Ok(m) = self.rx.try_recv() {
            match m {
                Msg::Append(e, tx) => rest.push((e, tx)),
                Msg::Flush(r) | Msg::Close(r) => {
                    let _ = r.send(Err(AuditError::Closed));
                }
            }
        }
        for chunk in chunks(rest, self.config.batch_max) {
            self.commit(chunk).await;
        }
        self.drain().await?;
        self.checkpoint().await
    }

    /// Integrates every entry queued now (those that extend their streams).
    ///
    /// # Errors
    /// The queue's or the sink's error if a round failed (the entries stay queued).
    async fn drain(&mut self) -> Result<(), AuditError> {
        if self.queue.is_none() {
            return Ok(());
        }
        loop {
            let round = self.integrate(Vec::new()).await?;
            if round.integrated == 0 {
                return Ok(());
            }
        }
    }

    /// Fills `batch` up to `batch_max`, waiting at most `linger`; returns a control message
    /// if one arrived (it is handled after the batch, keeping FIFO order).
    // The writer task is a driver: waiting for a batch to fill is its job.
    #[allow(clippy::disallowed_methods)]
    async fn gather(&mut self, batch: &mut Vec<Waiter>) -> Option<Msg> {
        let linger = tokio::time::sleep(self.config.linger);
        tokio::pin!(linger);
        while batch.len() < self.config.batch_max {
            let msg = match self.rx.try_recv() {
                Ok(m) => m,
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if self.config.linger.is_zero() {
                        return None;
                    }
                    tokio::select! {
                        m = self.rx.recv() => match m {
                            Some(m) => m,
                            None => return None,
                        },
                        () = &mut linger => return None,
                    }
                }
            };
            match msg {
                Msg::Append(e, tx) => batch.push((e, tx)),
                other => return Some(other),
            }
        }
        None
    }

    /// Integrates `batch` and what the queue holds (up to `batch_max` entries in all);
    /// remembers a failure of the queue's part so the next round waits before retrying.
    async fn commit(&mut self, batch: Vec<Waiter>) {
        self.more = false;
        match self.integrate(batch).await {
            Ok(round) => {
                self.retry = None;
                self.more = round.more && round.integrated > 0;
                if round.stuck > 0 && round.integrated == 0 {
                    // Only entries that cannot go in yet: poll instead of spinning.
                    self.retry = Some(RETRY_MAX);
                }
            }
            Err(e) => {
                let delay = self.retry.map_or(RETRY_MIN, |d| (d * 2).min(RETRY_MAX));
                tracing::warn!(error = %e, retry_in = ?delay,
                    "integrating queued audit entries failed; they stay queued");
                self.retry = Some(delay);
            }
        }
    }

    /// One round: sequences the waiters' entries and up to the rest of a batch from the
    /// queue, writes them in one sink append, then acknowledges the waiters and removes the
    /// queue's entries. A failed write changes nothing: the waiters get the error and the
    /// queue keeps its entries.
    ///
    /// # Errors
    /// The queue's or the sink's error (the waiters have been answered).
    async fn integrate(&mut self, batch: Vec<Waiter>) -> Result<Round, AuditError> {
        let mut round = Round::default();
        // A queue that cannot be read does not hold back the waiters' entries; its failure
        // is reported once they are written.
        let (queued, unread) = match &self.queue {
            Some(q) if batch.len() < self.config.batch_max => {
                let limit = self.config.batch_max - batch.len();
                match q.peek(limit).await {
                    Ok(v) => {
                        round.more = v.len() == limit;
                        (v, None)
                    }
                    Err(e) => (Vec::new(), Some(e)),
                }
            }
            _ => (Vec::new(), None),
        };
        let mut replies = Vec::with_capacity(batch.len());
        let mut done: Vec<Arc<SealedEntry>> = Vec::new();
        let mut plan;
        {
            let sequencer = self.shared.sequencer.read();
            plan = sequencer.batch();
            for (entry, reply) in batch {
                let (stream, seq) = (entry.stream().to_owned(), entry.seq);
                match plan.admit(&sequencer, entry) {
                    Admission::Admitted { .. } => replies.push(reply),
                    refused => {
                        let expected = expected(&sequencer, &stream, refused);
                        out_of_order(&stream, seq, expected);
                        let _ = reply.send(Err(AuditError::OutOfOrder {
                            stream,
                            expected,
                            got: seq,
                        }));
                    }
                }
            }
            let mut blocked: HashSet<String> = HashSet::new();
            for entry in queued {
                // A stream whose entry could not go in keeps its later entries back too.
                if blocked.contains(entry.stream()) {
                    round.stuck += 1;
                    continue;
                }
                match plan.admit(&sequencer, Arc::clone(&entry)) {
                    Admission::Admitted { .. } | Admission::Integrated => done.push(entry),
                    refused @ Admission::OutOfOrder { .. } => {
                        let expected = expected(&sequencer, entry.stream(), refused);
                        out_of_order(entry.stream(), entry.seq, expected);
                        round.stuck += 1;
                        blocked.insert(entry.stream().to_owned());
                    }
                }
            }
        }
        let written = plan.len();
        if written > 0 {
            match self.sink.append(plan.records()).await {
                Ok(()) => {
                    let first = plan.first_index();
                    if let Err(e) = self.shared.sequencer.write().apply(plan) {
                        // Only this task applies batches: a stale one is a bug.
                        tracing::error!(error = %e, "audit batch could not be applied");
                        return Err(e);
                    }
                    metrics::counter!("audit_chain_entries_written_total")
                        .increment(written as u64);
                    metrics::histogram!("audit_chain_batch_entries").record(written as f64);
                    for (i, reply) in replies.into_iter().enumerate() {
                        let _ = reply.send(Ok(first + i as u64));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, entries = written, "audit batch write failed");
                    metrics::counter!("audit_chain_batch_failures_total").increment(1);
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                    return Err(e);
                }
            }
        }
        if !done.is_empty()
            && let Some(q) = &self.queue
        {
            q.remove(&done).await?;
        }
        round.integrated = done.len();
        match unread {
            Some(e) => Err(e),
            None => Ok(round),
        }
    }

    async fn maybe_checkpoint(&mut self) {
        let size = self.shared.sequencer.read().size();
        // Before the first checkpoint, an opened log is due one once the interval passes.
        let new_entries = match self.last_cp_size {
            Some(last) => size.saturating_sub(last),
            None => size.max(1),
        };
        let elapsed = self
            .clock
            .monotonic()
            .saturating_duration_since(self.last_cp_tick);
        let due = checkpoint_due(
            new_entries,
            elapsed,
            self.config.checkpoint_every_entries,
            self.config.checkpoint_interval,
        );
        if due && let Err(e) = self.checkpoint().await {
            tracing::warn!(error = %e, "storing audit checkpoint failed");
        }
    }

    async fn checkpoint(&mut self) -> Result<Checkpoint, AuditError> {
        let (cp, head) = {
            let sequencer = self.shared.sequencer.read();
            // A head snapshot copies every stream's head: it is stored with a checkpoint
            // once at least as many entries as there are streams (and at least a
            // checkpoint's worth) were integrated since the last one, so its cost stays
            // constant per entry however many streams there are. A restart replays only
            // the entries after it.
            let size = sequencer.size();
            let due = self.last_head_size.is_none_or(|last| {
                size.saturating_sub(last)
                    >= (sequencer.stream_count() as u64).max(self.config.checkpoint_every_entries)
            });
            (
                sequencer.checkpoint(&self.config.origin),
                due.then(|| sequencer.log_head()),
            )
        };
        let signed = self.signer.as_ref().map(|s| s.sign_checkpoint(&cp));
        let note = signed
            .as_ref()
            .map_or_else(|| cp.to_body(), |s| s.note.clone());
        self.sink.store_checkpoint(&note).await?;
        if let Some(head) = head {
            self.sink.store_head(&head).await?;
            self.last_head_size = Some(head.size());
        }
        self.last_cp_size = Some(cp.size);
        self.last_cp_tick = self.clock.monotonic();
        *self.shared.latest.write() = Some((cp.clone(), signed));
        Ok(cp)
    }
}

/// The next sequence number of `entry`'s stream, for a refusal.
fn expected(sequencer: &Sequencer, stream: &str, admission: Admission) -> u64 {
    match admission {
        Admission::OutOfOrder { expected } => expected,
        Admission::Integrated | Admission::Admitted { .. } => sequencer.head(stream).next_seq,
    }
}

fn out_of_order(stream: &str, seq: u64, expected: u64) {
    tracing::error!(
        stream,
        seq,
        expected,
        "audit entry does not extend its stream; not integrated"
    );
    metrics::counter!("audit_chain_out_of_order_total").increment(1);
}

fn chunks<T>(mut v: Vec<T>, n: usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    while v.len() > n {
        let rest = v.split_off(n);
        out.push(v);
        v = rest;
    }
    if !v.is_empty() {
        out.push(v);
    }
    out
}
