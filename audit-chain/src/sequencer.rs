//! The sequencer's logic, without I/O: which entries extend their streams, which log index
//! each gets, the Merkle tree over the log, and when a checkpoint is due.
//!
//! [`AuditWriter`](crate::AuditWriter) is the driver (a Tokio task that gathers entries from
//! its buffer and from an [`AuditQueue`](crate::AuditQueue), writes batches to a sink and
//! stores checkpoints); anything else that integrates entries into a log (a simulator, a
//! test, another runtime) uses the same [`Sequencer`].
//!
//! ```
//! use audit_chain::*;
//! use metered_clock::Timestamp;
//!
//! let keyring = Keyring::new(HmacKey::new(1, [1; 32])?);
//! let mut chain = StreamChain::new("ledger/acme");
//! let mut seal = |action: &str| {
//!     chain.seal(&keyring, &MaskingPolicy::standard(),
//!                AuditEntry::new("ledger/acme", "credits", action, Timestamp::EPOCH))
//! };
//! let (a, b) = (seal("granted")?, seal("consumed")?);
//!
//! let mut sequencer = Sequencer::new();
//! let mut batch = sequencer.batch();
//! // `b` does not extend the stream yet: it waits for `a`.
//! assert_eq!(batch.admit(&sequencer, b.clone()), Admission::OutOfOrder { expected: 0 });
//! assert_eq!(batch.admit(&sequencer, a.clone()), Admission::Admitted { index: 0 });
//! assert_eq!(batch.admit(&sequencer, b), Admission::Admitted { index: 1 });
//! // ... write `batch.records()` to the sink; once durable:
//! sequencer.apply(batch)?;
//! assert_eq!(sequencer.size(), 2);
//! // An entry already in the log is recognised (a queue may offer it again after a crash).
//! assert_eq!(sequencer.batch().admit(&sequencer, a), Admission::Integrated);
//! # Ok::<(), AuditError>(())
//! ```

use std::collections::HashMap;

/// Stream heads by stream name (the names come from the store, so a fast hash is enough).
type Heads = HashMap<String, StreamHead, foldhash::fast::RandomState>;
use std::sync::Arc;
use std::time::Duration;

use crate::chain::StreamHead;
use crate::entry::{Hash, LogRecord, SealedEntry};
use crate::merkle::{MerkleFrontier, MerkleTree};
use crate::{AuditError, Checkpoint, LogHead};

/// The sequencer's view of the Merkle tree: all of it, or just the frontier.
#[derive(Debug)]
pub(crate) enum Tree {
    Full(MerkleTree),
    Frontier(MerkleFrontier),
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
}

/// Where an entry stands against the log (see [`SequencedBatch::admit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// It extends its stream: it was given log index `index`.
    Admitted {
        /// Its place in the log.
        index: u64,
    },
    /// Its stream already has an entry with this sequence number in the log (a queue
    /// offered it again, for example after a crash between writing and dequeuing). The
    /// sequencer does not re-read the log to compare the two: a store must never seal two
    /// entries with one stream sequence number (the tenant's lock and, on PostgreSQL, the
    /// `(stream, stream_seq)` primary key ensure it).
    Integrated,
    /// It does not extend its stream: the stream's next sequence number is `expected`, or
    /// the entry does not link to the stream's last hash.
    OutOfOrder {
        /// The stream's next sequence number.
        expected: u64,
    },
}

/// The log's sequencing state: the Merkle tree (whole, for proofs, or just its frontier)
/// and the head of every stream. Pure: it never does I/O and never waits.
#[derive(Debug)]
pub struct Sequencer {
    tree: Tree,
    heads: Heads,
}

impl Default for Sequencer {
    fn default() -> Self {
        Sequencer::new()
    }
}

impl Sequencer {
    /// An empty log that keeps the whole tree (so it can make proofs).
    #[must_use]
    pub fn new() -> Self {
        Sequencer {
            tree: Tree::Full(MerkleTree::new()),
            heads: Heads::default(),
        }
    }

    /// A log continued from a snapshot, keeping only the Merkle frontier (no proofs).
    #[must_use]
    pub fn from_head(head: LogHead) -> Self {
        Sequencer {
            tree: Tree::Frontier(head.frontier),
            heads: head.streams.into_iter().collect(),
        }
    }

    /// An empty log keeping only the Merkle frontier.
    #[must_use]
    pub fn frontier_only() -> Self {
        Sequencer {
            tree: Tree::Frontier(MerkleFrontier::new()),
            heads: Heads::default(),
        }
    }

    /// Adds a record read back from storage (replay after a restart).
    ///
    /// # Errors
    /// [`AuditError::Corrupt`] if its index is not the next one (nothing changes).
    pub fn replay(&mut self, record: &LogRecord) -> Result<(), AuditError> {
        let at = self.tree.size();
        if record.index != at {
            return Err(AuditError::Corrupt {
                location: format!("record {at}"),
                reason: format!("stored index {}", record.index),
            });
        }
        self.tree.push(record.entry.leaf_hash());
        self.heads
            .insert(record.entry.stream().to_owned(), next_head(&record.entry));
        Ok(())
    }

    /// Number of entries in the log.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// Merkle root of the log.
    #[must_use]
    pub fn root(&self) -> Hash {
        self.tree.root()
    }

    /// The unsigned checkpoint of the log as it stands, under `origin`.
    #[must_use]
    pub fn checkpoint(&self, origin: &str) -> Checkpoint {
        Checkpoint {
            origin: origin.to_owned(),
            size: self.size(),
            root: self.root(),
        }
    }

    /// The head of `stream` (the default head if it has no entry).
    #[must_use]
    pub fn head(&self, stream: &str) -> StreamHead {
        self.heads.get(stream).copied().unwrap_or_default()
    }

    /// Number of streams with entries in the log.
    #[must_use]
    pub fn stream_count(&self) -> usize {
        self.heads.len()
    }

    /// A snapshot to restart from without replaying the log.
    #[must_use]
    pub fn log_head(&self) -> LogHead {
        LogHead {
            frontier: self.tree.frontier(),
            streams: self.heads.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        }
    }

    /// The whole tree (for inclusion and consistency proofs), when this sequencer keeps it.
    #[must_use]
    pub fn full_tree(&self) -> Option<&MerkleTree> {
        match &self.tree {
            Tree::Full(t) => Some(t),
            Tree::Frontier(_) => None,
        }
    }

    /// Starts a batch at the end of the log.
    #[must_use]
    pub fn batch(&self) -> SequencedBatch {
        SequencedBatch {
            base: self.size(),
            records: Vec::new(),
            heads: Heads::default(),
        }
    }

    /// Adds a batch whose records are now durable. A batch made before another was applied
    /// is stale and is refused.
    ///
    /// # Errors
    /// [`AuditError::InvalidEntry`] if the batch does not start at the end of the log
    /// (nothing changes).
    pub fn apply(&mut self, batch: SequencedBatch) -> Result<(), AuditError> {
        if batch.base != self.size() {
            return Err(AuditError::InvalidEntry {
                field: "index",
                reason: format!(
                    "batch starts at {}, the log has {} entries",
                    batch.base,
                    self.size()
                ),
            });
        }
        for r in &batch.records {
            self.tree.push(r.entry.leaf_hash());
        }
        self.heads.extend(batch.heads);
        Ok(())
    }
}

fn next_head(entry: &SealedEntry) -> StreamHead {
    StreamHead {
        next_seq: entry.seq.saturating_add(1),
        last_hash: entry.entry_hash,
    }
}

/// Entries given consecutive log indices after the log's current end, not yet durable:
/// write [`records`](Self::records) to the sink, then [`Sequencer::apply`] the batch.
#[derive(Debug)]
pub struct SequencedBatch {
    base: u64,
    records: Vec<LogRecord>,
    heads: Heads,
}

impl SequencedBatch {
    /// Gives `entry` the next log index if it extends its stream (as of the log plus the
    /// entries admitted to this batch before it); otherwise says why not and drops it.
    pub fn admit(
        &mut self,
        sequencer: &Sequencer,
        entry: impl Into<Arc<SealedEntry>>,
    ) -> Admission {
        let entry: Arc<SealedEntry> = entry.into();
        let stream = entry.stream();
        let in_batch = self.heads.get_mut(stream);
        let head = match &in_batch {
            Some(h) => **h,
            None => sequencer.head(stream),
        };
        if entry.seq < head.next_seq {
            return Admission::Integrated;
        }
        if entry.seq != head.next_seq || entry.prev_hash != head.last_hash {
            return Admission::OutOfOrder {
                expected: head.next_seq,
            };
        }
        let index = self.base + self.records.len() as u64;
        match in_batch {
            Some(h) => *h = next_head(&entry),
            None => {
                self.heads.insert(stream.to_owned(), next_head(&entry));
            }
        }
        self.records.push(LogRecord::new(index, entry));
        Admission::Admitted { index }
    }

    /// The records admitted, in log order.
    #[must_use]
    pub fn records(&self) -> &[LogRecord] {
        &self.records
    }

    /// Number of records admitted.
    #[must_use]
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing was admitted.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The log index of the first record.
    #[must_use]
    pub fn first_index(&self) -> u64 {
        self.base
    }
}

/// When a checkpoint is due: after `every_entries` new entries, or once `interval` has
/// passed since the last one while the log grew.
///
/// ```
/// use std::time::Duration;
/// use audit_chain::checkpoint_due;
/// let second = Duration::from_secs(1);
/// assert!(checkpoint_due(4096, Duration::ZERO, 4096, second));
/// assert!(checkpoint_due(1, second, 4096, second));
/// assert!(!checkpoint_due(0, second * 10, 4096, second)); // nothing new
/// ```
#[must_use]
pub fn checkpoint_due(
    new_entries: u64,
    since_last: Duration,
    every_entries: u64,
    interval: Duration,
) -> bool {
    new_entries >= every_entries.max(1) || (new_entries > 0 && since_last >= interval)
}
