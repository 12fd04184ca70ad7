//! The writer task: gathers batches, sequences them into the log, writes them to the sink,
//! acknowledges each entry and makes checkpoints.

use std::collections::HashMap;
use std::sync::Arc;

use metered_clock::{Clock, Tick};
use tokio::sync::{mpsc, oneshot};

use super::{Msg, Shared, WriterConfig};
use crate::chain::StreamHead;
use crate::entry::{LogRecord, SealedEntry};
use crate::sink::AuditSink;
use crate::{AuditError, Checkpoint, LogHead, NoteSigner};

/// The one task behind every [`AuditWriter`](super::AuditWriter) handle.
pub(super) struct Task {
    rx: mpsc::Receiver<Msg>,
    sink: Arc<dyn AuditSink>,
    shared: Arc<Shared>,
    clock: Arc<dyn Clock>,
    signer: Option<NoteSigner>,
    config: WriterConfig,
    last_cp_size: u64,
    last_cp_tick: Tick,
}

type Waiter = (SealedEntry, oneshot::Sender<Result<u64, AuditError>>);

/// A batch after sequencing: the records that extend their streams, in log order, with
/// what must happen once they are durable.
struct Sequenced {
    records: Vec<LogRecord>,
    replies: Vec<oneshot::Sender<Result<u64, AuditError>>>,
    leaves: Vec<crate::Hash>,
    heads: HashMap<String, StreamHead>,
}

impl Task {
    pub(super) fn new(
        rx: mpsc::Receiver<Msg>,
        sink: Arc<dyn AuditSink>,
        shared: Arc<Shared>,
        clock: Arc<dyn Clock>,
        signer: Option<NoteSigner>,
        config: WriterConfig,
    ) -> Self {
        Task {
            rx,
            sink,
            shared,
            last_cp_size: u64::MAX,
            last_cp_tick: clock.monotonic(),
            clock,
            signer,
            config,
        }
    }

    pub(super) async fn run(mut self) {
        loop {
            let Some(first) = self.rx.recv().await else {
                // Every writer handle was dropped: nothing can be waiting.
                return;
            };
            let mut batch: Vec<Waiter> = Vec::new();
            let mut control = None;
            match first {
                Msg::Append(e, tx) => batch.push((e, tx)),
                other => control = Some(other),
            }
            if control.is_none() {
                control = self.gather(&mut batch).await;
            }
            if !batch.is_empty() {
                self.commit(batch).await;
                self.maybe_checkpoint().await;
            }
            match control {
                Some(Msg::Flush(reply)) => {
                    let _ = reply.send(self.checkpoint().await);
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
    /// other flush or close), and makes the final checkpoint.
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
        self.checkpoint().await
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

    /// Sequences and writes one batch; acknowledges each entry.
    async fn commit(&mut self, batch: Vec<Waiter>) {
        let Sequenced {
            records,
            replies,
            leaves,
            heads,
        } = self.sequence(batch);
        if records.is_empty() {
            return;
        }
        let first = records[0].index;
        match self.sink.append(&records).await {
            Ok(()) => {
                {
                    let mut tree = self.shared.tree.write();
                    for leaf in leaves {
                        tree.push(leaf);
                    }
                }
                self.shared.heads.write().extend(heads);
                metrics::counter!("audit_chain_entries_written_total")
                    .increment(records.len() as u64);
                metrics::histogram!("audit_chain_batch_entries").record(records.len() as f64);
                for (i, reply) in replies.into_iter().enumerate() {
                    let _ = reply.send(Ok(first + i as u64));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, entries = records.len(), "audit batch write failed");
                metrics::counter!("audit_chain_batch_failures_total").increment(1);
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Gives each entry that extends its stream's head (as of the log plus the entries
    /// before it in the batch) the next log index; rejects the others with
    /// [`AuditError::OutOfOrder`] at once. Changes no shared state.
    fn sequence(&self, batch: Vec<Waiter>) -> Sequenced {
        let mut out = Sequenced {
            records: Vec::with_capacity(batch.len()),
            replies: Vec::with_capacity(batch.len()),
            leaves: Vec::with_capacity(batch.len()),
            heads: HashMap::new(),
        };
        let heads = self.shared.heads.read();
        let base = self.shared.tree.read().size();
        for (entry, reply) in batch {
            let stream = entry.stream();
            let head = out
                .heads
                .get(stream)
                .or_else(|| heads.get(stream))
                .copied()
                .unwrap_or_default();
            if entry.seq != head.next_seq || entry.prev_hash != head.last_hash {
                tracing::error!(
                    stream,
                    seq = entry.seq,
                    expected = head.next_seq,
                    "audit entry does not extend its stream; rejected"
                );
                metrics::counter!("audit_chain_out_of_order_total").increment(1);
                let _ = reply.send(Err(AuditError::OutOfOrder {
                    stream: stream.to_owned(),
                    expected: head.next_seq,
                    got: entry.seq,
                }));
                continue;
            }
            out.heads.insert(
                stream.to_owned(),
                StreamHead {
                    next_seq: entry.seq.saturating_add(1),
                    last_hash: entry.entry_hash,
                },
            );
            out.leaves.push(entry.leaf_hash());
            out.records
                .push(LogRecord::new(base + out.records.len() as u64, entry));
            out.replies.push(reply);
        }
        out
    }

    async fn maybe_checkpoint(&mut self) {
        let size = self.shared.tree.read().size();
        let since = size.saturating_sub(if self.last_cp_size == u64::MAX {
            0
        } else {
            self.last_cp_size
        });
        let elapsed = self
            .clock
            .monotonic()
            .saturating_duration_since(self.last_cp_tick);
        let due = since >= self.config.checkpoint_every_entries
            || (size != self.last_cp_size && elapsed >= self.config.checkpoint_interval);
        if due && let Err(e) = self.checkpoint().await {
            tracing::warn!(error = %e, "storing audit checkpoint failed");
        }
    }

    async fn checkpoint(&mut self) -> Result<Checkpoint, AuditError> {
        let cp = {
            let tree = self.shared.tree.read();
            Checkpoint {
                origin: self.config.origin.clone(),
                size: tree.size(),
                root: tree.root(),
            }
        };
        let signed = self.signer.as_ref().map(|s| s.sign_checkpoint(&cp));
        let note = signed
            .as_ref()
            .map_or_else(|| cp.to_body(), |s| s.note.clone());
        self.sink.store_checkpoint(&note).await?;
        let head = LogHead {
            frontier: self.shared.tree.read().frontier(),
            streams: self
                .shared
                .heads
                .read()
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        };
        self.sink.store_head(&head).await?;
        self.last_cp_size = cp.size;
        self.last_cp_tick = self.clock.monotonic();
        *self.shared.latest.write() = Some((cp.clone(), signed));
        Ok(cp)
    }
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
