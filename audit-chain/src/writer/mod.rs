//! The batching writer (group commit with a bounded buffer) and the sequencer that
//! integrates sealed entries from every stream into the one Merkle log.
//!
//! `config.rs` holds the settings, `task.rs` the task that gathers, sequences, writes and
//! checkpoints; this file the handle callers hold and the state it shares with the task.

mod config;
mod task;

use std::sync::Arc;

use metered_clock::Clock;
use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot};

pub use self::config::{WriterConfig, WriterConfigBuilder};
use self::task::Task;
use crate::chain::StreamHead;
use crate::entry::{Hash, SealedEntry};
use crate::merkle::MerkleTree;
use crate::queue::AuditQueue;
use crate::sequencer::Sequencer;
use crate::sink::{AuditSink, READ_CHUNK};
use crate::{AuditError, Checkpoint, NoteSigner, SignedCheckpoint};

// Appends dominate the channel; boxing them would add an allocation per entry.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Append(SealedEntry, oneshot::Sender<Result<u64, AuditError>>),
    Flush(oneshot::Sender<Result<Checkpoint, AuditError>>),
    Close(oneshot::Sender<Result<Checkpoint, AuditError>>),
}

/// The promise of an enqueued entry: await [`durable`](Self::durable) for its log index.
#[derive(Debug)]
#[must_use = "an entry is only known to be stored once `durable` returns Ok"]
pub struct Receipt {
    rx: oneshot::Receiver<Result<u64, AuditError>>,
}

impl Receipt {
    /// Waits until the entry is durable and returns its log index.
    ///
    /// # Errors
    /// The sink's error if its batch could not be written (the entry is not stored),
    /// [`AuditError::OutOfOrder`] if it did not extend its stream, or
    /// [`AuditError::Closed`] if the writer stopped first.
    pub async fn durable(self) -> Result<u64, AuditError> {
        self.rx.await.map_err(|_| AuditError::Closed)?
    }
}

#[derive(Debug, Default)]
struct Shared {
    sequencer: RwLock<Sequencer>,
    latest: RwLock<Option<(Checkpoint, Option<SignedCheckpoint>)>>,
}

/// The batching writer and sequencer.
///
/// Sealed entries from any number of streams go into one bounded buffer; a single task
/// takes them in batches (up to `batch_max`, waiting at most `linger`), checks that each
/// extends its stream's head, gives them consecutive log indices, writes the batch to the
/// sink (durable on return), then adds them to the Merkle tree and acknowledges them. A
/// failed write changes nothing: every entry of the batch gets the error.
///
/// Checkpoints are made every N entries, every T, on [`flush`](Self::flush) and on
/// [`close`](Self::close); signed when a [`NoteSigner`] is given, and stored in the sink.
///
/// Cloning is cheap; all clones feed the same task. Must be created inside a Tokio runtime.
#[derive(Clone, Debug)]
pub struct AuditWriter {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    capacity: usize,
    origin: Arc<str>,
}

impl AuditWriter {
    /// Opens a writer over `sink`, replaying what it holds to rebuild the Merkle tree and the
    /// stream heads (O(n) in the log size), then starts the writer task.
    ///
    /// A sink holding fewer entries than its stored [`LogHead`](crate::LogHead) or stored
    /// checkpoint covers has lost acknowledged entries: the writer refuses to continue it
    /// (continuing would give new entries the indices of lost ones and replace the stored
    /// checkpoint with one that no longer extends it).
    ///
    /// # Errors
    /// Storage errors while replaying; [`AuditError::Truncated`] if the sink is shorter than
    /// its stored head or checkpoint; [`AuditError::Decode`] or
    /// [`AuditError::InvalidCheckpoint`] if the stored head or checkpoint cannot be read;
    /// [`AuditError::Corrupt`] if the stored indices are not consecutive.
    pub async fn open(
        sink: Arc<dyn AuditSink>,
        config: WriterConfig,
        clock: Arc<dyn Clock>,
        signer: Option<NoteSigner>,
    ) -> Result<Self, AuditError> {
        Self::start(sink, None, config, clock, signer).await
    }

    /// Like [`open`](Self::open), and also integrates the entries a store commits to
    /// `queue` (see [`AuditQueue`]): the writer takes them in commit order, writes them to
    /// the sink with the entries enqueued here, and removes them from the queue only once
    /// they are durable. When the sink fails they stay queued and the writer retries
    /// (backing off from 10 ms to 1 s): nothing is lost or skipped, and the queue's length
    /// (metric `audit_chain_backlog`) is the delay. An entry already in the log is removed
    /// without being written again; one that does not extend its stream stays queued and is
    /// reported (`audit_chain_out_of_order_total`). [`flush`](Self::flush) and
    /// [`close`](Self::close) integrate everything queued before they return.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub async fn open_with_queue(
        sink: Arc<dyn AuditSink>,
        queue: Arc<dyn AuditQueue>,
        config: WriterConfig,
        clock: Arc<dyn Clock>,
        signer: Option<NoteSigner>,
    ) -> Result<Self, AuditError> {
        Self::start(sink, Some(queue), config, clock, signer).await
    }

    async fn start(
        sink: Arc<dyn AuditSink>,
        queue: Option<Arc<dyn AuditQueue>>,
        config: WriterConfig,
        clock: Arc<dyn Clock>,
        signer: Option<NoteSigner>,
    ) -> Result<Self, AuditError> {
        let shared = Arc::new(Shared::default());
        *shared.sequencer.write() = replay(sink.as_ref(), config.retain_proofs()).await?;
        let (tx, rx) = mpsc::channel(config.buffer_max());
        let writer = AuditWriter {
            tx,
            shared: Arc::clone(&shared),
            capacity: config.buffer_max(),
            origin: Arc::from(config.origin()),
        };
        spawn(Task::new(rx, sink, queue, shared, clock, signer, config));
        Ok(writer)
    }

    /// Puts `entry` in the buffer, waiting for room if it is full (backpressure). Call it in
    /// the same critical section that sealed the entry so a stream's entries stay in order;
    /// await the receipt outside it if you like.
    ///
    /// # Errors
    /// [`AuditError::Closed`] if the writer has stopped.
    pub async fn enqueue(&self, entry: SealedEntry) -> Result<Receipt, AuditError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Append(entry, tx))
            .await
            .map_err(|_| AuditError::Closed)?;
        Ok(Receipt { rx })
    }

    /// Like [`enqueue`](Self::enqueue) but never waits.
    ///
    /// # Errors
    /// [`AuditError::Backpressure`] if the buffer is full, [`AuditError::Closed`] if the
    /// writer has stopped. Nothing is enqueued on error.
    pub fn try_enqueue(&self, entry: SealedEntry) -> Result<Receipt, AuditError> {
        let (tx, rx) = oneshot::channel();
        match self.tx.try_send(Msg::Append(entry, tx)) {
            Ok(()) => Ok(Receipt { rx }),
            Err(mpsc::error::TrySendError::Full(_)) => Err(AuditError::Backpressure {
                capacity: self.capacity,
            }),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(AuditError::Closed),
        }
    }

    /// Puts every entry of `entries` in the buffer, in order, or none of them: a change that
    /// produced several entries is logged whole or refused whole. Never waits.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use audit_chain::*;
    /// use metered_clock::{ManualClock, Timestamp};
    ///
    /// let clock = Arc::new(ManualClock::new(Timestamp::EPOCH));
    /// let config = WriterConfig::builder("example/audit").buffer_max(2).build()?;
    /// let writer = AuditWriter::open(Arc::new(MemorySink::new()), config, clock, None).await?;
    /// let keyring = Keyring::new(HmacKey::new(1, [7; 32])?);
    /// let mut chain = StreamChain::new("tenant-1");
    /// let mut seal = |action: &str| {
    ///     let entry = AuditEntry::new("tenant-1", "ledger", action, Timestamp::EPOCH);
    ///     chain.seal(&keyring, &MaskingPolicy::standard(), entry)
    /// };
    /// let three = vec![seal("a")?, seal("b")?, seal("c")?];
    /// // Three entries do not fit in a buffer of two: none is taken.
    /// assert!(matches!(writer.try_enqueue_all(three), Err(AuditError::Backpressure { .. })));
    /// # Ok::<(), AuditError>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    /// [`AuditError::Backpressure`] if the buffer has no room for all of them,
    /// [`AuditError::Closed`] if the writer has stopped. Nothing is enqueued on error.
    pub fn try_enqueue_all(&self, entries: Vec<SealedEntry>) -> Result<Vec<Receipt>, AuditError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let permits = match self.tx.try_reserve_many(entries.len()) {
            Ok(permits) => permits,
            Err(mpsc::error::TrySendError::Full(())) => {
                return Err(AuditError::Backpressure {
                    capacity: self.capacity,
                });
            }
            Err(mpsc::error::TrySendError::Closed(())) => return Err(AuditError::Closed),
        };
        let receipts = permits
            .zip(entries)
            .map(|(permit, entry)| {
                let (tx, rx) = oneshot::channel();
                permit.send(Msg::Append(entry, tx));
                Receipt { rx }
            })
            .collect();
        Ok(receipts)
    }

    /// Enqueues `entry` and waits until it is durable; returns its log index.
    ///
    /// # Errors
    /// See [`enqueue`](Self::enqueue) and [`Receipt::durable`].
    pub async fn append(&self, entry: SealedEntry) -> Result<u64, AuditError> {
        self.enqueue(entry).await?.durable().await
    }

    /// Waits until everything enqueued before is written, then makes, signs and stores a
    /// checkpoint of the current tree and returns it.
    ///
    /// # Errors
    /// [`AuditError::Closed`] if the writer has stopped; the sink's error if storing the
    /// checkpoint failed.
    pub async fn flush(&self) -> Result<Checkpoint, AuditError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Flush(tx))
            .await
            .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Writes everything enqueued, makes a final checkpoint and stops the writer task.
    /// Later calls on any clone fail with [`AuditError::Closed`].
    ///
    /// # Errors
    /// As [`flush`](Self::flush).
    pub async fn close(&self) -> Result<Checkpoint, AuditError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Close(tx))
            .await
            .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// The log's origin line.
    #[must_use]
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Number of durable entries.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.shared.sequencer.read().size()
    }

    /// Merkle root over the durable entries.
    #[must_use]
    pub fn root(&self) -> Hash {
        self.shared.sequencer.read().root()
    }

    /// The head of `stream` in the log (default head if the stream has no entry yet): use it
    /// to [`StreamChain::resume`](crate::StreamChain::resume) after a restart.
    #[must_use]
    pub fn stream_head(&self, stream: &str) -> StreamHead {
        self.shared.sequencer.read().head(stream)
    }

    /// The latest checkpoint made (unsigned form).
    #[must_use]
    pub fn latest_checkpoint(&self) -> Option<Checkpoint> {
        self.shared.latest.read().as_ref().map(|(c, _)| c.clone())
    }

    /// The latest signed checkpoint, when the writer has a signer. Publish it or hand it to
    /// witnesses: verifiers need a copy the log's storage cannot alter.
    #[must_use]
    pub fn latest_signed_checkpoint(&self) -> Option<SignedCheckpoint> {
        self.shared
            .latest
            .read()
            .as_ref()
            .and_then(|(_, s)| s.clone())
    }

    /// Inclusion proof of entry `index` in the tree of size `size`.
    ///
    /// # Errors
    /// [`AuditError::InvalidProof`] unless `index < size ≤` durable size;
    /// [`AuditError::InvalidConfig`] if the writer does not retain the tree.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, AuditError> {
        full(&self.shared.sequencer.read())?.inclusion_proof(index, size)
    }

    /// Consistency proof from tree size `old` to `new`.
    ///
    /// # Errors
    /// [`AuditError::InvalidProof`] unless `0 < old ≤ new ≤` durable size;
    /// [`AuditError::InvalidConfig`] if the writer does not retain the tree.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, AuditError> {
        full(&self.shared.sequencer.read())?.consistency_proof(old, new)
    }

    /// Root of the tree when it had `size` entries.
    ///
    /// # Errors
    /// [`AuditError::InvalidProof`] if `size` is beyond the durable size;
    /// [`AuditError::InvalidConfig`] if the writer does not retain the tree.
    pub fn root_at(&self, size: u64) -> Result<Hash, AuditError> {
        full(&self.shared.sequencer.read())?.root_at(size)
    }
}

/// Rebuilds the Merkle tree and the stream heads from what `sink` holds: from the start
/// when the writer retains proofs, otherwise from the sink's stored [`LogHead`] and then
/// only the entries written after it. Refuses a sink shorter than its stored head or
/// checkpoint.
///
/// [`LogHead`]: crate::LogHead
async fn replay(sink: &dyn AuditSink, retain_proofs: bool) -> Result<Sequencer, AuditError> {
    let size = sink.size().await?;
    let head = sink.load_head().await?;
    let truncated = |recorded: u64, recorded_by: &'static str| {
        tracing::error!(
            size,
            recorded,
            recorded_by,
            "the audit log is shorter than its stored {recorded_by}; refusing to continue it"
        );
        AuditError::Truncated {
            found: size,
            recorded,
            recorded_by,
        }
    };
    if let Some(h) = &head
        && h.size() > size
    {
        return Err(truncated(h.size(), "log head"));
    }
    if let Some(note) = sink.load_checkpoint().await? {
        let stored = Checkpoint::parse_note_unverified(&note)?;
        if stored.size > size {
            return Err(truncated(stored.size, "checkpoint"));
        }
    }
    let mut sequencer = match head {
        Some(head) if !retain_proofs => Sequencer::from_head(head),
        _ if retain_proofs => Sequencer::new(),
        _ => Sequencer::frontier_only(),
    };
    let mut at = sequencer.size();
    tracing::debug!(from = at, to = size, "replaying the audit log");
    while at < size {
        let chunk = sink.read(at, READ_CHUNK).await?;
        if chunk.is_empty() {
            break;
        }
        for r in &chunk {
            sequencer.replay(r)?;
            at += 1;
        }
    }
    Ok(sequencer)
}

fn full(sequencer: &Sequencer) -> Result<&MerkleTree, AuditError> {
    sequencer.full_tree().ok_or_else(|| {
        AuditError::InvalidConfig(
            "this writer keeps only the Merkle frontier (retain_proofs(false)); \
             build proofs from the sink"
                .into(),
        )
    })
}

/// Starts the writer task on the current Tokio runtime.
// The writer is a driver: its task does the waiting so that callers and the sequencing
// logic do not. The one place audit-chain spawns.
#[allow(clippy::disallowed_methods)]
fn spawn(task: Task) {
    tokio::spawn(task.run());
}
