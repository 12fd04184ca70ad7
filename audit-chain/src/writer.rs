//! The batching writer (group commit with a bounded buffer) and the sequencer that
//! integrates sealed entries from every stream into the one Merkle log.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use metered_clock::{Clock, Tick};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot};

use crate::chain::{StreamChain, StreamHead};
use crate::entry::{AuditEntry, Hash, LogRecord, SealedEntry};
use crate::merkle::{MerkleFrontier, MerkleTree};
use crate::sink::{AuditSink, READ_CHUNK};
use crate::{
    AuditError, Checkpoint, Keyring, LogHead, MaskingPolicy, NoteSigner, SignedCheckpoint,
};

/// Settings of an [`AuditWriter`]. Build with [`WriterConfig::builder`].
#[derive(Clone, Debug)]
pub struct WriterConfig {
    origin: String,
    batch_max: usize,
    buffer_max: usize,
    linger: Duration,
    checkpoint_every_entries: u64,
    checkpoint_interval: Duration,
    retain_proofs: bool,
}

impl WriterConfig {
    /// Starts a configuration for the log named `origin` (the first line of its
    /// checkpoints; make it unique, e.g. `"billing.example.com/audit"`).
    ///
    /// Defaults: batches of at most 256 entries, a buffer of 16,384 entries, no linger
    /// (entries that arrive while a batch is being written form the next batch), a
    /// checkpoint every 4,096 entries and at least every second while entries arrive.
    ///
    /// ```
    /// use std::time::Duration;
    /// use audit_chain::WriterConfig;
    /// let config = WriterConfig::builder("example.com/audit")
    ///     .batch_max(512)
    ///     .linger(Duration::from_millis(2))
    ///     .build()?;
    /// assert_eq!(config.batch_max(), 512);
    /// assert!(WriterConfig::builder("x").batch_max(0).build().is_err());
    /// # Ok::<(), audit_chain::AuditError>(())
    /// ```
    pub fn builder(origin: impl Into<String>) -> WriterConfigBuilder {
        WriterConfigBuilder {
            config: WriterConfig {
                origin: origin.into(),
                batch_max: 256,
                buffer_max: 16_384,
                linger: Duration::ZERO,
                checkpoint_every_entries: 4096,
                checkpoint_interval: Duration::from_secs(1),
                retain_proofs: true,
            },
        }
    }

    /// The log's origin line.
    #[must_use]
    pub fn origin(&self) -> &str {
        &self.origin
    }
    /// Most entries written per batch.
    #[must_use]
    pub fn batch_max(&self) -> usize {
        self.batch_max
    }
    /// Most entries waiting in the buffer.
    #[must_use]
    pub fn buffer_max(&self) -> usize {
        self.buffer_max
    }
    /// Whether the writer keeps the whole Merkle tree (and so serves proofs).
    #[must_use]
    pub fn retain_proofs(&self) -> bool {
        self.retain_proofs
    }
}

/// Builds a [`WriterConfig`].
#[derive(Debug)]
#[must_use]
pub struct WriterConfigBuilder {
    config: WriterConfig,
}

impl WriterConfigBuilder {
    /// Most entries per batch (one sink write and one fsync each). 1 to 65,536.
    pub fn batch_max(mut self, n: usize) -> Self {
        self.config.batch_max = n;
        self
    }
    /// Most entries buffered before `enqueue` waits and `try_enqueue` fails with
    /// [`AuditError::Backpressure`]. 1 to 16,777,216.
    pub fn buffer_max(mut self, n: usize) -> Self {
        self.config.buffer_max = n;
        self
    }
    /// How long the writer waits for a batch to fill before writing it (the age bound of
    /// group commit). At most 10 s.
    pub fn linger(mut self, d: Duration) -> Self {
        self.config.linger = d;
        self
    }
    /// Emit a checkpoint once this many entries were added since the last one (≥ 1).
    pub fn checkpoint_every_entries(mut self, n: u64) -> Self {
        self.config.checkpoint_every_entries = n;
        self
    }
    /// Emit a checkpoint once this long passed since the last one (checked after each batch).
    pub fn checkpoint_interval(mut self, d: Duration) -> Self {
        self.config.checkpoint_interval = d;
        self
    }
    /// Keep the whole Merkle tree in memory (about 64 bytes per entry) to serve inclusion and
    /// consistency proofs; this is the default. With `false` the writer keeps only the
    /// O(log n) frontier, cannot serve proofs (build them offline from the sink with
    /// [`MerkleTree`](crate::merkle::MerkleTree)), and restarts from the sink's stored
    /// [`LogHead`](crate::LogHead), replaying only the entries written after it.
    pub fn retain_proofs(mut self, retain: bool) -> Self {
        self.config.retain_proofs = retain;
        self
    }

    /// The configuration.
    ///
    /// # Errors
    /// [`AuditError::InvalidConfig`] naming the first setting out of range.
    pub fn build(self) -> Result<WriterConfig, AuditError> {
        let c = self.config;
        let bad = |m: &str| Err(AuditError::InvalidConfig(m.to_owned()));
        if c.origin.is_empty() || c.origin.contains('\n') {
            return bad("origin must be one non-empty line");
        }
        if !(1..=65_536).contains(&c.batch_max) {
            return bad("batch_max must be 1 to 65536");
        }
        if !(1..=16_777_216).contains(&c.buffer_max) {
            return bad("buffer_max must be 1 to 16777216");
        }
        if c.linger > Duration::from_secs(10) {
            return bad("linger must be at most 10 s");
        }
        if c.checkpoint_every_entries == 0 {
            return bad("checkpoint_every_entries must be at least 1");
        }
        Ok(c)
    }
}

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

/// The writer's view of the Merkle tree: all of it, or just the frontier.
#[derive(Debug)]
enum Tree {
    Full(MerkleTree),
    Frontier(MerkleFrontier),
}

impl Default for Tree {
    fn default() -> Self {
        Tree::Full(MerkleTree::new())
    }
}

impl Tree {
    fn push(&mut self, leaf: Hash) {
        match self {
            Tree::Full(t) => t.push(leaf),
            Tree::Frontier(f) => f.push(leaf),
        }
    }
    fn size(&self) -> u64 {
        match self {
            Tree::Full(t) => t.size(),
            Tree::Frontier(f) => f.size(),
        }
    }
    fn root(&self) -> Hash {
        match self {
            Tree::Full(t) => t.root(),
            Tree::Frontier(f) => f.root(),
        }
    }
    fn frontier(&self) -> MerkleFrontier {
        match self {
            Tree::Full(t) => t.frontier(),
            Tree::Frontier(f) => f.clone(),
        }
    }
    fn full(&self) -> Result<&MerkleTree, AuditError> {
        match self {
            Tree::Full(t) => Ok(t),
            Tree::Frontier(_) => Err(AuditError::InvalidConfig(
                "this writer keeps only the Merkle frontier (retain_proofs(false)); \
                 build proofs from the sink"
                    .into(),
            )),
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    tree: RwLock<Tree>,
    heads: RwLock<HashMap<String, StreamHead>>,
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
    /// # Errors
    /// Storage errors while replaying, or [`AuditError::Corrupt`] if the stored indices are
    /// not consecutive.
    pub async fn open(
        sink: Arc<dyn AuditSink>,
        config: WriterConfig,
        clock: Arc<dyn Clock>,
        signer: Option<NoteSigner>,
    ) -> Result<Self, AuditError> {
        let shared = Arc::new(Shared::default());
        let size = sink.size().await?;
        {
            let (mut tree, mut heads, mut at) = match config.retain_proofs {
                true => (Tree::Full(MerkleTree::new()), HashMap::new(), 0),
                false => match sink.load_head().await? {
                    Some(head) if head.size() <= size => {
                        let at = head.size();
                        (
                            Tree::Frontier(head.frontier),
                            head.streams.into_iter().collect(),
                            at,
                        )
                    }
                    _ => (Tree::Frontier(MerkleFrontier::new()), HashMap::new(), 0),
                },
            };
            tracing::debug!(from = at, to = size, "replaying the audit log");
            while at < size {
                let chunk = sink.read(at, READ_CHUNK).await?;
                if chunk.is_empty() {
                    break;
                }
                for r in &chunk {
                    if r.index != at {
                        return Err(AuditError::Corrupt {
                            location: format!("record {at}"),
                            reason: format!("stored index {}", r.index),
                        });
                    }
                    tree.push(r.entry.leaf_hash());
                    heads.insert(
                        r.entry.entry.stream.clone(),
                        StreamHead {
                            next_seq: r.entry.seq.saturating_add(1),
                            last_hash: r.entry.entry_hash,
                        },
                    );
                    at += 1;
                }
            }
            *shared.tree.write() = tree;
            *shared.heads.write() = heads;
        }
        let (tx, rx) = mpsc::channel(config.buffer_max);
        let origin: Arc<str> = Arc::from(config.origin.as_str());
        let task = Task {
            rx,
            sink,
            shared: Arc::clone(&shared),
            last_cp_size: u64::MAX,
            last_cp_tick: clock.monotonic(),
            clock,
            signer,
            config: config.clone(),
        };
        tokio::spawn(task.run());
        Ok(AuditWriter {
            tx,
            shared,
            capacity: config.buffer_max,
            origin,
        })
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
        self.shared.tree.read().size()
    }

    /// Merkle root over the durable entries.
    #[must_use]
    pub fn root(&self) -> Hash {
        self.shared.tree.read().root()
    }

    /// The head of `stream` in the log (default head if the stream has no entry yet): use it
    /// to [`StreamChain::resume`] after a restart.
    #[must_use]
    pub fn stream_head(&self, stream: &str) -> StreamHead {
        self.shared
            .heads
            .read()
            .get(stream)
            .copied()
            .unwrap_or_default()
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
        self.shared.tree.read().full()?.inclusion_proof(index, size)
    }

    /// Consistency proof from tree size `old` to `new`.
    ///
    /// # Errors
    /// [`AuditError::InvalidProof`] unless `0 < old ≤ new ≤` durable size;
    /// [`AuditError::InvalidConfig`] if the writer does not retain the tree.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, AuditError> {
        self.shared.tree.read().full()?.consistency_proof(old, new)
    }

    /// Root of the tree when it had `size` entries.
    ///
    /// # Errors
    /// [`AuditError::InvalidProof`] if `size` is beyond the durable size;
    /// [`AuditError::InvalidConfig`] if the writer does not retain the tree.
    pub fn root_at(&self, size: u64) -> Result<Hash, AuditError> {
        self.shared.tree.read().full()?.root_at(size)
    }
}

struct Task {
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

impl Task {
    async fn run(mut self) {
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
                    self.rx.close();
                    // Entries enqueued before the close are still written.
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
                    let _ = reply.send(self.checkpoint().await);
                    return;
                }
                Some(Msg::Append(..)) | None => {}
            }
        }
    }

    /// Fills `batch` up to `batch_max`, waiting at most `linger`; returns a control message
    /// if one arrived (it is handled after the batch, keeping FIFO order).
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
        let mut records = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        let mut leaves = Vec::with_capacity(batch.len());
        let mut overlay: HashMap<String, StreamHead> = HashMap::new();
        {
            let heads = self.shared.heads.read();
            let base = self.shared.tree.read().size();
            for (entry, reply) in batch {
                let stream = entry.stream();
                let head = overlay
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
                overlay.insert(
                    stream.to_owned(),
                    StreamHead {
                        next_seq: entry.seq.saturating_add(1),
                        last_hash: entry.entry_hash,
                    },
                );
                leaves.push(entry.leaf_hash());
                records.push(LogRecord::new(base + records.len() as u64, entry));
                replies.push(reply);
            }
        }
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
                self.shared.heads.write().extend(overlay);
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

/// Where an appended entry ended up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Log index (Merkle leaf index).
    pub index: u64,
    /// Sequence number in its stream.
    pub seq: u64,
    /// Entry hash.
    pub entry_hash: Hash,
}

/// Anything that records [`AuditEntry`]s durably; what components such as rollouts write
/// their decision trail to. [`AuditLog`] is the implementation.
#[async_trait]
pub trait AuditTrail: Send + Sync {
    /// Masks, seals and durably appends `entry` to its stream.
    async fn record(&self, entry: AuditEntry) -> Result<Appended, AuditError>;
}

/// Entry-level front end: one [`StreamChain`] per stream, sealed with a shared keyring and
/// masking policy, written through an [`AuditWriter`].
///
/// Appends to one stream are serialised (each waits for durability while holding its
/// stream's lock, so a failed write can be rolled back); appends to different streams run
/// in parallel and share group commits.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use audit_chain::*;
/// use metered_clock::{ManualClock, Timestamp};
///
/// let sink = Arc::new(MemorySink::new());
/// let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(1_700_000_000_000)));
/// let writer = AuditWriter::open(sink.clone(), WriterConfig::builder("example/audit").build()?, clock, None).await?;
/// let keyring = Keyring::new(HmacKey::new(1, [5u8; 32])?);
/// let log = AuditLog::new(writer.clone(), keyring.clone(), MaskingPolicy::standard());
///
/// let at = Timestamp::from_unix_millis(1_700_000_000_000);
/// let a = log.record(AuditEntry::new("canary", "rollout", "promote", at).with_metadata("step", "2")).await?;
/// assert_eq!((a.index, a.seq), (0, 0));
///
/// let cp = writer.flush().await?;
/// assert!(verify_sink(sink.as_ref(), &keyring, Some(&cp)).await?.is_intact());
/// # Ok::<(), AuditError>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct AuditLog {
    writer: AuditWriter,
    keyring: RwLock<Arc<Keyring>>,
    policy: Arc<MaskingPolicy>,
    streams: Mutex<HashMap<String, Arc<tokio::sync::Mutex<StreamChain>>>>,
}

impl AuditLog {
    /// A log front end writing through `writer`.
    #[must_use]
    pub fn new(writer: AuditWriter, keyring: Keyring, policy: MaskingPolicy) -> Self {
        AuditLog {
            writer,
            keyring: RwLock::new(Arc::new(keyring)),
            policy: Arc::new(policy),
            streams: Mutex::new(HashMap::new()),
        }
    }

    /// The writer underneath (for proofs, checkpoints, flush and close).
    #[must_use]
    pub fn writer(&self) -> &AuditWriter {
        &self.writer
    }

    /// Makes `key` the active sealing key; older keys stay for verification.
    ///
    /// # Errors
    /// [`AuditError::InvalidKey`] if its id is already in the keyring (nothing changes).
    pub fn rotate_key(&self, key: crate::HmacKey) -> Result<(), AuditError> {
        let mut guard = self.keyring.write();
        let mut ring = Keyring::clone(&guard);
        ring.rotate(key)?;
        *guard = Arc::new(ring);
        Ok(())
    }

    /// A copy of the current keyring.
    #[must_use]
    pub fn keyring(&self) -> Arc<Keyring> {
        Arc::clone(&self.keyring.read())
    }

    fn chain(&self, stream: &str) -> Arc<tokio::sync::Mutex<StreamChain>> {
        let mut streams = self.streams.lock();
        if let Some(c) = streams.get(stream) {
            return Arc::clone(c);
        }
        let chain = StreamChain::resume(stream, self.writer.stream_head(stream));
        let c = Arc::new(tokio::sync::Mutex::new(chain));
        streams.insert(stream.to_owned(), Arc::clone(&c));
        c
    }
}

#[async_trait]
impl AuditTrail for AuditLog {
    async fn record(&self, entry: AuditEntry) -> Result<Appended, AuditError> {
        entry.validate()?;
        let chain = self.chain(&entry.stream);
        let mut chain = chain.lock().await;
        let before = chain.clone();
        let keyring = self.keyring();
        let sealed = chain.seal(&keyring, &self.policy, entry)?;
        let (seq, entry_hash) = (sealed.seq, sealed.entry_hash);
        match self.writer.append(sealed).await {
            Ok(index) => Ok(Appended {
                index,
                seq,
                entry_hash,
            }),
            Err(e) => {
                *chain = before;
                Err(e)
            }
        }
    }
}
