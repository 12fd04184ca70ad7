//! Verification of a log or a range of it, with a structured result naming the first bad
//! entry and the check that failed.

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;

use crate::chain::StreamHead;
use crate::entry::{Hash, LogRecord};
use crate::merkle::{EMPTY_ROOT, MerkleFrontier};
use crate::{AuditError, Checkpoint, Keyring};

/// The check that found a problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub enum IntegrityCheck {
    /// The stored bytes could not be read or decoded.
    Decode,
    /// The record's log index is not the next one (a deleted, duplicated or moved record).
    Index,
    /// The entry hash does not match the content (the content was altered).
    Hash,
    /// The entry's MAC does not verify under its key (forged or altered).
    Mac,
    /// The entry names a key id the keyring does not hold.
    UnknownKey,
    /// The stream sequence number is not the next one (a deleted or reordered entry).
    Sequence,
    /// The previous-hash link does not match the stream's last entry.
    Link,
    /// The Merkle root at the trusted checkpoint's size differs from the checkpoint.
    MerkleRoot,
    /// The log is shorter than the trusted checkpoint (newest entries deleted).
    Truncated,
}

impl fmt::Display for IntegrityCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            IntegrityCheck::Decode => "decode",
            IntegrityCheck::Index => "log index",
            IntegrityCheck::Hash => "entry hash",
            IntegrityCheck::Mac => "HMAC",
            IntegrityCheck::UnknownKey => "unknown key",
            IntegrityCheck::Sequence => "sequence gap",
            IntegrityCheck::Link => "chain link",
            IntegrityCheck::MerkleRoot => "Merkle root",
            IntegrityCheck::Truncated => "truncation",
        };
        f.write_str(s)
    }
}

/// The first problem found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// Log index of the first bad entry. For [`IntegrityCheck::MerkleRoot`] the damage is at or before
    /// this index (the last one the checkpoint covers); for [`IntegrityCheck::Truncated`] it is the
    /// first missing index.
    pub index: u64,
    /// The entry's stream, when the entry could be read.
    pub stream: Option<String>,
    /// The entry's sequence number in its stream, when it could be read.
    pub seq: Option<u64>,
    /// The check that failed.
    pub check: IntegrityCheck,
    /// Human-readable details.
    pub detail: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entry {}: {} check failed", self.index, self.check)?;
        if let (Some(s), Some(q)) = (&self.stream, self.seq) {
            write!(f, " (stream {s:?} seq {q})")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// What a verification covered and what it found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// First log index examined.
    pub start: u64,
    /// Number of entries that passed every check.
    pub entries_ok: u64,
    /// Number of distinct streams seen.
    pub streams: usize,
    /// Merkle root over the entries examined (full verification only, when intact).
    #[serde(with = "opt_hex")]
    pub root: Option<Hash>,
    /// Whether a trusted checkpoint was given and matched.
    pub checkpoint_matched: bool,
    /// The first problem, or `None` if everything verified.
    pub failure: Option<Failure>,
}

mod opt_hex {
    use serde::Serializer;
    pub(super) fn serialize<S: Serializer>(v: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(h) => s.serialize_some(&crate::hex::encode(h)),
            None => s.serialize_none(),
        }
    }
}

impl VerifyReport {
    /// True when no check failed.
    #[must_use]
    pub fn is_intact(&self) -> bool {
        self.failure.is_none()
    }
}

/// Incremental verifier: feed it records in log order with [`push`](Self::push), then call
/// [`finish`](Self::finish). Memory is one head per stream plus an O(log n) frontier.
///
/// Full verification ([`ChainVerifier::new`]) starts at index 0 and checks, for every entry:
/// log index, entry hash, MAC, stream sequence and link; then the Merkle root against a
/// trusted checkpoint, and that the log is not shorter than it. Range verification
/// ([`ChainVerifier::for_range`]) checks the same per-entry properties inside the range,
/// taking the first entry of each stream in the range as its anchor; it cannot check roots.
///
/// ```
/// use audit_chain::*;
/// use metered_clock::Timestamp;
///
/// let keyring = Keyring::new(HmacKey::new(1, [3u8; 32])?);
/// let mut chain = StreamChain::new("t");
/// let mut records = Vec::new();
/// for i in 0..4 {
///     let e = chain.seal(&keyring, &MaskingPolicy::none(), AuditEntry::new("t", "e", "a", Timestamp::EPOCH))?;
///     records.push(LogRecord::new(i, e));
/// }
/// assert!(verify_records(&keyring, &records, None).is_intact());
///
/// records.remove(2); // delete a middle entry
/// let report = verify_records(&keyring, &records, None);
/// let failure = report.failure.unwrap();
/// assert_eq!((failure.index, failure.check), (2, IntegrityCheck::Index));
/// # Ok::<(), AuditError>(())
/// ```
#[derive(Debug)]
pub struct ChainVerifier<'k> {
    keyring: &'k Keyring,
    start: u64,
    next_index: u64,
    anchored: bool,
    heads: HashMap<String, StreamHead>,
    frontier: Option<MerkleFrontier>,
    checkpoint: Option<Checkpoint>,
    checkpoint_matched: bool,
    failure: Option<Failure>,
}

impl<'k> ChainVerifier<'k> {
    /// Full verification from index 0.
    #[must_use]
    pub fn new(keyring: &'k Keyring) -> Self {
        ChainVerifier {
            keyring,
            start: 0,
            next_index: 0,
            anchored: false,
            heads: HashMap::new(),
            frontier: Some(MerkleFrontier::new()),
            checkpoint: None,
            checkpoint_matched: false,
            failure: None,
        }
    }

    /// Verification of a range starting at log index `start`.
    #[must_use]
    pub fn for_range(keyring: &'k Keyring, start: u64) -> Self {
        if start == 0 {
            return Self::new(keyring);
        }
        ChainVerifier {
            start,
            next_index: start,
            anchored: true,
            frontier: None,
            ..Self::new(keyring)
        }
    }

    /// Checks the log against `checkpoint` (kept somewhere the log's writer cannot alter):
    /// the root at its size must match, and the log must not be shorter.
    /// Ignored for range verification.
    #[must_use]
    pub fn with_checkpoint(mut self, checkpoint: Checkpoint) -> Self {
        if self.frontier.is_some() {
            if checkpoint.size == 0 {
                self.checkpoint_matched = checkpoint.root == EMPTY_ROOT;
                if !self.checkpoint_matched {
                    self.failure = Some(Failure {
                        index: 0,
                        stream: None,
                        seq: None,
                        check: IntegrityCheck::MerkleRoot,
                        detail: "checkpoint of size 0 with a non-empty root".into(),
                    });
                }
            }
            self.checkpoint = Some(checkpoint);
        }
        self
    }

    /// The first failure so far.
    #[must_use]
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// Records that the entry at the next index could not be read.
    pub fn push_unreadable(&mut self, error: &AuditError) {
        if self.failure.is_none() {
            self.failure = Some(Failure {
                index: self.next_index,
                stream: None,
                seq: None,
                check: IntegrityCheck::Decode,
                detail: error.to_string(),
            });
        }
    }

    /// Checks the next record.
    ///
    /// # Errors
    /// The first [`Failure`] (also kept for [`finish`](Self::finish)); once a check has
    /// failed every later call returns it again.
    pub fn push(&mut self, record: &LogRecord) -> Result<(), Failure> {
        if let Some(f) = &self.failure {
            return Err(f.clone());
        }
        match self.check(record) {
            Ok(()) => Ok(()),
            Err((check, detail)) => {
                let f = Failure {
                    index: self.next_index,
                    stream: Some(record.entry.stream().to_owned()),
                    seq: Some(record.entry.seq),
                    check,
                    detail,
                };
                self.failure = Some(f.clone());
                Err(f)
            }
        }
    }

    fn check(&mut self, record: &LogRecord) -> Result<(), (IntegrityCheck, String)> {
        let e = &record.entry;
        if record.index != self.next_index {
            return Err((
                IntegrityCheck::Index,
                format!("found index {}, expected {}", record.index, self.next_index),
            ));
        }
        if e.compute_hash() != e.entry_hash {
            return Err((
                IntegrityCheck::Hash,
                "content does not match the entry hash".into(),
            ));
        }
        match self.keyring.verify_mac(e.key_id, &e.entry_hash, &e.mac) {
            Ok(true) => {}
            Ok(false) => {
                return Err((
                    IntegrityCheck::Mac,
                    format!("MAC invalid under key {}", e.key_id),
                ));
            }
            Err(_) => {
                return Err((
                    IntegrityCheck::UnknownKey,
                    format!("key id {} is not in the keyring", e.key_id),
                ));
            }
        }
        let stream = e.stream();
        let expected = match self.heads.get(stream) {
            Some(h) => Some(*h),
            None if self.anchored => None,
            None => Some(StreamHead::default()),
        };
        if let Some(h) = expected {
            if e.seq != h.next_seq {
                return Err((
                    IntegrityCheck::Sequence,
                    format!("stream seq {}, expected {}", e.seq, h.next_seq),
                ));
            }
            if e.prev_hash != h.last_hash {
                return Err((
                    IntegrityCheck::Link,
                    "previous hash does not match the stream's last entry".into(),
                ));
            }
        }
        let head = StreamHead {
            next_seq: e.seq.saturating_add(1),
            last_hash: e.entry_hash,
        };
        match self.heads.get_mut(stream) {
            Some(h) => *h = head,
            None => {
                self.heads.insert(stream.to_owned(), head);
            }
        }
        if let Some(frontier) = &mut self.frontier {
            frontier.push(e.leaf_hash());
            if let Some(cp) = &self.checkpoint
                && frontier.size() == cp.size
            {
                if frontier.root() != cp.root {
                    return Err((
                        IntegrityCheck::MerkleRoot,
                        format!(
                            "root at size {} differs from the trusted checkpoint",
                            cp.size
                        ),
                    ));
                }
                self.checkpoint_matched = true;
            }
        }
        self.next_index += 1;
        Ok(())
    }

    /// Ends verification: checks truncation against the checkpoint and builds the report.
    #[must_use]
    pub fn finish(mut self) -> VerifyReport {
        if self.failure.is_none()
            && let Some(cp) = &self.checkpoint
            && self.next_index < cp.size
        {
            self.failure = Some(Failure {
                index: self.next_index,
                stream: None,
                seq: None,
                check: IntegrityCheck::Truncated,
                detail: format!(
                    "log has {} entries but the trusted checkpoint covers {}",
                    self.next_index, cp.size
                ),
            });
        }
        let intact = self.failure.is_none();
        VerifyReport {
            start: self.start,
            entries_ok: self.next_index - self.start,
            streams: self.heads.len(),
            root: self
                .frontier
                .as_ref()
                .filter(|_| intact)
                .map(MerkleFrontier::root),
            checkpoint_matched: intact && self.checkpoint_matched,
            failure: self.failure,
        }
    }
}

/// Fully verifies `records` (log order from index 0), optionally against a trusted
/// checkpoint.
#[must_use]
pub fn verify_records(
    keyring: &Keyring,
    records: &[LogRecord],
    checkpoint: Option<&Checkpoint>,
) -> VerifyReport {
    let mut v = ChainVerifier::new(keyring);
    if let Some(cp) = checkpoint {
        v = v.with_checkpoint(cp.clone());
    }
    for r in records {
        if v.push(r).is_err() {
            break;
        }
    }
    v.finish()
}
