//! Per-stream hash chains: seal entries in order, cheaply, without I/O.

use serde::{Deserialize, Serialize};

use crate::entry::{AuditEntry, Hash, SealedEntry, body_hash};
use crate::{AuditError, Keyring, MaskingPolicy};

/// Where a stream's chain stands: the next sequence number and the hash of the last entry
/// (all zeros before the first).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamHead {
    /// Sequence number the next entry of the stream gets.
    pub next_seq: u64,
    /// Entry hash of the last entry (zeros when `next_seq` is 0).
    #[serde(with = "crate::hex::serde32")]
    pub last_hash: Hash,
}

/// The hash chain of one stream (one tenant).
///
/// `seal` is synchronous, does no I/O and costs one SHA-256 of the entry plus one HMAC, so it
/// can run inside the caller's per-tenant critical section; tenants never wait on each other.
/// Hand the sealed entries of one stream to the writer **in the order they were sealed**
/// (enqueue them inside the same critical section).
///
/// ```
/// use audit_chain::{AuditEntry, HmacKey, Keyring, MaskingPolicy, StreamChain};
/// use metered_clock::Timestamp;
///
/// let keyring = Keyring::new(HmacKey::new(1, [9u8; 32])?);
/// let policy = MaskingPolicy::standard();
/// let mut chain = StreamChain::new("tenant-a");
/// let first = chain.seal(&keyring, &policy, AuditEntry::new("tenant-a", "balance", "credit", Timestamp::EPOCH)
///     .with_metadata("ip", "192.0.2.10"))?;
/// let second = chain.seal(&keyring, &policy, AuditEntry::new("tenant-a", "balance", "debit", Timestamp::EPOCH))?;
/// assert_eq!((first.seq(), second.seq()), (0, 1));
/// assert_eq!(second.prev_hash(), first.entry_hash());
/// assert_eq!(first.entry().metadata["ip"], "192.0.2.0/24"); // masked before hashing
/// assert_eq!(first.policy_id(), "pii-v1");
/// # Ok::<(), audit_chain::AuditError>(())
/// ```
#[derive(Clone, Debug)]
pub struct StreamChain {
    stream: String,
    head: StreamHead,
    /// Reused encoding buffer (not part of the chain's state).
    scratch: Vec<u8>,
}

impl StreamChain {
    /// A new, empty stream.
    #[must_use]
    pub fn new(stream: impl Into<String>) -> Self {
        Self::resume(stream, StreamHead::default())
    }

    /// Continues a stream from a head persisted earlier (or read from the writer after a
    /// restart with [`AuditWriter::stream_head`](crate::AuditWriter::stream_head)).
    #[must_use]
    pub fn resume(stream: impl Into<String>, head: StreamHead) -> Self {
        StreamChain {
            stream: stream.into(),
            head,
            // One entry's canonical body is a few hundred bytes: one allocation, not a
            // series of doublings, for a chain resumed to seal one change.
            scratch: Vec::with_capacity(512),
        }
    }

    /// The stream id.
    #[must_use]
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The current head.
    #[must_use]
    pub fn head(&self) -> StreamHead {
        self.head
    }

    /// Masks `entry` with `policy`, links it to the previous entry, hashes it and MACs it with
    /// the keyring's active key; advances the head.
    ///
    /// # Errors
    /// [`AuditError::InvalidEntry`] if the entry names another stream or a field is over its
    /// limit (after masking). The head does not move on error.
    pub fn seal(
        &mut self,
        keyring: &Keyring,
        policy: &MaskingPolicy,
        mut entry: AuditEntry,
    ) -> Result<SealedEntry, AuditError> {
        if entry.stream != self.stream {
            return Err(AuditError::InvalidEntry {
                field: "stream",
                reason: format!("is {:?} but this chain is {:?}", entry.stream, self.stream),
            });
        }
        policy.apply(&mut entry.metadata);
        entry.validate()?;
        let next = self
            .head
            .next_seq
            .checked_add(1)
            .ok_or_else(|| AuditError::InvalidEntry {
                field: "seq",
                reason: "stream is full (u64 sequence numbers exhausted)".into(),
            })?;
        let key = keyring.active();
        let seq = self.head.next_seq;
        let prev_hash = self.head.last_hash;
        let entry_hash = body_hash(
            &entry,
            seq,
            &prev_hash,
            policy.id(),
            key.id(),
            &mut self.scratch,
        );
        let mac = key.mac(&entry_hash);
        self.head = StreamHead {
            next_seq: next,
            last_hash: entry_hash,
        };
        Ok(SealedEntry {
            entry,
            seq,
            prev_hash,
            policy_id: policy.id().to_owned(),
            key_id: key.id(),
            entry_hash,
            mac,
        })
    }
}
