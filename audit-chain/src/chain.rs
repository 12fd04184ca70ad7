//! Per-stream hash chains: seal entries in order, cheaply, without I/O.

use serde::{Deserialize, Serialize};

use std::borrow::Cow;

use crate::entry::{
    AuditEntry, EntryView, Fields, Hash, Seal, SealedEntry, encode_body, hash_body,
    validate_metadata,
};
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

impl StreamHead {
    /// Seals `entry` as the next entry of its stream, whose chain stands at `self`, and
    /// advances `self`: the same entry, hash and MAC as [`StreamChain::seal`] gives the
    /// owned [`AuditEntry`] with the same fields, without building it. Metadata values the
    /// policy masks are masked first.
    ///
    /// ```
    /// use audit_chain::{AuditEntry, EntryView, HmacKey, Keyring, MaskingPolicy, StreamChain, StreamHead};
    /// use metered_clock::Timestamp;
    ///
    /// let keyring = Keyring::new(HmacKey::new(1, [9u8; 32])?);
    /// let policy = MaskingPolicy::standard();
    /// let view = EntryView {
    ///     amount: Some(5),
    ///     metadata: &[("ip", "192.0.2.10"), ("seq", "0")],
    ///     ..EntryView::new("t", "balance", "debit", Timestamp::EPOCH)
    /// };
    /// let mut head = StreamHead::default();
    /// let fast = head.seal(&keyring, &policy, &view)?;
    /// let owned = StreamChain::new("t").seal(&keyring, &policy, AuditEntry::from(view))?;
    /// assert_eq!(fast, owned);
    /// assert_eq!(fast.entry().metadata["ip"], "192.0.2.0/24");
    /// assert_eq!(head.next_seq, 1);
    /// # Ok::<(), audit_chain::AuditError>(())
    /// ```
    ///
    /// # Errors
    /// [`AuditError::InvalidEntry`] if a field is over its limit (after masking), the
    /// metadata keys do not ascend, or the stream's sequence numbers are exhausted. The head
    /// does not move on error.
    pub fn seal(
        &mut self,
        keyring: &Keyring,
        policy: &MaskingPolicy,
        entry: &EntryView<'_>,
    ) -> Result<SealedEntry, AuditError> {
        let fields = entry.fields();
        fields.validate()?;
        let pairs = entry.metadata.iter().map(|(k, v)| (*k, *v));
        if entry.metadata.iter().any(|(k, _)| policy.masks(k)) {
            let masked: Vec<(&str, Cow<'_, str>)> = pairs
                .map(|(k, v)| (k, policy.mask(k, v).map_or(Cow::Borrowed(v), Cow::Owned)))
                .collect();
            let masked = masked.iter().map(|(k, v)| (*k, v.as_ref()));
            validate_metadata(masked.clone())?;
            self.seal_fields(keyring, policy.id(), &fields, masked)
        } else {
            validate_metadata(pairs.clone())?;
            self.seal_fields(keyring, policy.id(), &fields, pairs)
        }
    }

    /// Seals validated fields as the next entry; advances the head.
    fn seal_fields<'m, M>(
        &mut self,
        keyring: &Keyring,
        policy_id: &str,
        fields: &Fields<'_>,
        metadata: M,
    ) -> Result<SealedEntry, AuditError>
    where
        M: ExactSizeIterator<Item = (&'m str, &'m str)> + Clone,
    {
        let next = self
            .next_seq
            .checked_add(1)
            .ok_or_else(|| AuditError::InvalidEntry {
                field: "seq",
                reason: "stream is full (u64 sequence numbers exhausted)".into(),
            })?;
        let key = keyring.active();
        let seal = Seal {
            seq: self.next_seq,
            prev_hash: &self.last_hash,
            policy_id,
            key_id: key.id(),
        };
        let body = encode_body(fields, metadata, &seal);
        let entry_hash = hash_body(&body.bytes);
        let mac = key.mac(&entry_hash);
        let sealed = SealedEntry::sealed(body, fields, &seal, entry_hash, mac);
        *self = StreamHead {
            next_seq: next,
            last_hash: entry_hash,
        };
        Ok(sealed)
    }
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
        // The fields are borrowed from the entry, which then moves into the sealed entry
        // (its decoded content): encode first, keep the entry.
        let mut head = self.head;
        let sealed = {
            let fields = Fields::of(&entry);
            let pairs = entry.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            head.seal_fields(keyring, policy.id(), &fields, pairs)?
        };
        sealed.keep_entry(entry);
        self.head = head;
        Ok(sealed)
    }
}
