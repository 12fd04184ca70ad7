//! Audit entries, sealed entries and their canonical binary encoding.

use std::collections::BTreeMap;
use std::sync::Arc;

use metered_clock::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::AuditError;

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// Version byte that starts every encoded entry body. Bumped on any encoding change.
pub const FORMAT_VERSION: u8 = 1;

/// Domain tag prefixed to the entry body before hashing it into the chain.
pub(crate) const DOMAIN_ENTRY: &[u8] = b"audit-chain/v1/entry\0";
/// Domain tag prefixed to the entry hash before computing its HMAC.
pub(crate) const DOMAIN_MAC: &[u8] = b"audit-chain/v1/mac\0";
/// Domain tag prefixed to the entry hash to form the Merkle leaf data.
pub(crate) const DOMAIN_LEAF: &[u8] = b"audit-chain/v1/leaf\0";

/// Longest stream (tenant) id, in bytes.
pub const STREAM_LEN_MAX: usize = 256;
/// Longest event type, action, transaction id or masking-policy id, in bytes.
pub const TEXT_LEN_MAX: usize = 1024;
/// Most metadata pairs in one entry.
pub const METADATA_PAIRS_MAX: usize = 64;
/// Longest metadata key, in bytes.
pub const METADATA_KEY_LEN_MAX: usize = 128;
/// Longest metadata value, in bytes (nested data can be stored as a JSON string).
pub const METADATA_VALUE_LEN_MAX: usize = 16 * 1024;

/// One auditable event, as the application describes it (before masking and sealing).
///
/// Amounts and balances are unsigned integers of the smallest unit. `metadata` is free-form
/// key/value text (store structured data as a JSON string value); the masking policy rewrites
/// values of the keys it knows before anything is hashed.
///
/// ```
/// use audit_chain::AuditEntry;
/// use metered_clock::Timestamp;
///
/// let entry = AuditEntry::new("tenant-42", "balance", "debit", Timestamp::from_unix_millis(1_700_000_000_000))
///     .with_amount(250)
///     .with_balances(1_000, 750)
///     .with_transaction_id("tx-9")
///     .with_metadata("ip", "203.0.113.77");
/// assert!(entry.success);
/// assert_eq!(entry.metadata["ip"], "203.0.113.77");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The stream (one per tenant) the entry belongs to; its own hash chain.
    pub stream: String,
    /// Kind of event (`"balance"`, `"canary"`, …).
    pub event_type: String,
    /// What happened (`"debit"`, `"credit"`, `"promote"`, …).
    pub action: String,
    /// Amount moved, in the smallest unit, if any.
    pub amount: Option<u64>,
    /// Balance before the change, if any.
    pub balance_before: Option<u64>,
    /// Balance after the change, if any.
    pub balance_after: Option<u64>,
    /// The transaction (idempotency) id, if any.
    pub transaction_id: Option<String>,
    /// Whether the operation succeeded.
    pub success: bool,
    /// Free-form key/value data, kept sorted by key.
    pub metadata: BTreeMap<String, String>,
    /// When it happened (wall clock).
    pub timestamp: Timestamp,
}

impl AuditEntry {
    /// A successful entry with no amount, balances, transaction id or metadata.
    #[must_use]
    pub fn new(
        stream: impl Into<String>,
        event_type: impl Into<String>,
        action: impl Into<String>,
        timestamp: Timestamp,
    ) -> Self {
        AuditEntry {
            stream: stream.into(),
            event_type: event_type.into(),
            action: action.into(),
            amount: None,
            balance_before: None,
            balance_after: None,
            transaction_id: None,
            success: true,
            metadata: BTreeMap::new(),
            timestamp,
        }
    }

    /// Sets the amount.
    #[must_use]
    pub fn with_amount(mut self, amount: u64) -> Self {
        self.amount = Some(amount);
        self
    }

    /// Sets the balances before and after the change.
    #[must_use]
    pub fn with_balances(mut self, before: u64, after: u64) -> Self {
        self.balance_before = Some(before);
        self.balance_after = Some(after);
        self
    }

    /// Sets the transaction id.
    #[must_use]
    pub fn with_transaction_id(mut self, id: impl Into<String>) -> Self {
        self.transaction_id = Some(id.into());
        self
    }

    /// Sets the success flag.
    #[must_use]
    pub fn with_success(mut self, success: bool) -> Self {
        self.success = success;
        self
    }

    /// Adds (or replaces) one metadata pair.
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Checks every field against the encoding limits.
    ///
    /// # Errors
    /// [`AuditError::InvalidEntry`] naming the first field out of bounds.
    pub fn validate(&self) -> Result<(), AuditError> {
        fn text(field: &'static str, s: &str, max: usize) -> Result<(), AuditError> {
            if s.len() > max {
                return Err(AuditError::InvalidEntry {
                    field,
                    reason: format!("is {} bytes long (max {max})", s.len()),
                });
            }
            Ok(())
        }
        if self.stream.is_empty() {
            return Err(AuditError::InvalidEntry {
                field: "stream",
                reason: "must not be empty".into(),
            });
        }
        text("stream", &self.stream, STREAM_LEN_MAX)?;
        text("event_type", &self.event_type, TEXT_LEN_MAX)?;
        text("action", &self.action, TEXT_LEN_MAX)?;
        if let Some(tx) = &self.transaction_id {
            text("transaction_id", tx, TEXT_LEN_MAX)?;
        }
        if self.metadata.len() > METADATA_PAIRS_MAX {
            return Err(AuditError::InvalidEntry {
                field: "metadata",
                reason: format!(
                    "has {} pairs (max {METADATA_PAIRS_MAX})",
                    self.metadata.len()
                ),
            });
        }
        for (k, v) in &self.metadata {
            text("metadata key", k, METADATA_KEY_LEN_MAX)?;
            text("metadata value", v, METADATA_VALUE_LEN_MAX)?;
        }
        Ok(())
    }
}

/// An entry after masking and sealing: its place in its stream's chain, its hash and MAC.
///
/// Made by [`StreamChain::seal`](crate::StreamChain::seal) or decoded from storage; a decoded
/// entry is only trusted once a verifier has checked it. The JSON view
/// (`serde_json::to_string`) shows hashes as lowercase hex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedEntry {
    pub(crate) entry: AuditEntry,
    pub(crate) seq: u64,
    #[serde(with = "crate::hex::serde32")]
    pub(crate) prev_hash: Hash,
    pub(crate) policy_id: String,
    pub(crate) key_id: u32,
    #[serde(with = "crate::hex::serde32")]
    pub(crate) entry_hash: Hash,
    #[serde(with = "crate::hex::serde32")]
    pub(crate) mac: [u8; 32],
}

impl SealedEntry {
    /// The (masked) entry content.
    #[must_use]
    pub fn entry(&self) -> &AuditEntry {
        &self.entry
    }
    /// The stream the entry belongs to.
    #[must_use]
    pub fn stream(&self) -> &str {
        &self.entry.stream
    }
    /// Position in its stream, from 0.
    #[must_use]
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// Hash of the previous entry of the stream (all zeros for seq 0).
    #[must_use]
    pub fn prev_hash(&self) -> &Hash {
        &self.prev_hash
    }
    /// Id of the masking policy applied before hashing.
    #[must_use]
    pub fn policy_id(&self) -> &str {
        &self.policy_id
    }
    /// Id of the HMAC key that produced [`mac`](Self::mac).
    #[must_use]
    pub fn key_id(&self) -> u32 {
        self.key_id
    }
    /// `SHA-256(domain ‖ canonical body)`; the next entry of the stream links to it.
    #[must_use]
    pub fn entry_hash(&self) -> &Hash {
        &self.entry_hash
    }
    /// `HMAC-SHA256(key, domain ‖ entry hash)`.
    #[must_use]
    pub fn mac(&self) -> &[u8; 32] {
        &self.mac
    }
    /// The RFC 9162 Merkle leaf hash of this entry: `SHA-256(0x00 ‖ domain ‖ entry hash)`.
    #[must_use]
    pub fn leaf_hash(&self) -> Hash {
        leaf_hash_of(&self.entry_hash)
    }

    /// Recomputes the entry hash from the content (what a verifier compares against
    /// [`entry_hash`](Self::entry_hash)).
    #[must_use]
    pub fn compute_hash(&self) -> Hash {
        self.compute_hash_with(&mut Vec::with_capacity(512))
    }

    pub(crate) fn compute_hash_with(&self, scratch: &mut Vec<u8>) -> Hash {
        body_hash(
            &self.entry,
            self.seq,
            &self.prev_hash,
            &self.policy_id,
            self.key_id,
            scratch,
        )
    }

    /// Appends the canonical encoding (body ‖ entry hash ‖ MAC) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_body(
            &self.entry,
            self.seq,
            &self.prev_hash,
            &self.policy_id,
            self.key_id,
            out,
        );
        out.extend_from_slice(&self.entry_hash);
        out.extend_from_slice(&self.mac);
    }

    /// Decodes one entry written by [`encode`](Self::encode); the whole input must be used.
    ///
    /// Decoding checks structure only; hashes and MACs are checked by the verifier.
    ///
    /// # Errors
    /// [`AuditError::Decode`] on truncated, trailing or malformed bytes, an unknown version,
    /// or a field over its limit.
    pub fn decode(bytes: &[u8]) -> Result<Self, AuditError> {
        let mut r = Reader { buf: bytes, pos: 0 };
        let e = decode_sealed(&mut r)?;
        r.finish()?;
        Ok(e)
    }
}

/// The Merkle leaf hash for an entry hash.
pub(crate) fn leaf_hash_of(entry_hash: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(DOMAIN_LEAF);
    h.update(entry_hash);
    h.finalize().into()
}

/// Where the canonical encoding is written.
pub(crate) trait Put {
    fn put(&mut self, bytes: &[u8]);
}

impl Put for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

fn put_str(w: &mut impl Put, s: &str) {
    // Lengths are validated (≤ 16 KiB) before encoding, so they fit in u32.
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    w.put(&len.to_be_bytes());
    w.put(s.as_bytes());
}

fn put_opt_u64(w: &mut impl Put, v: Option<u64>) {
    match v {
        None => w.put(&[0]),
        Some(v) => {
            w.put(&[1]);
            w.put(&v.to_be_bytes());
        }
    }
}

/// The canonical, versioned, length-prefixed body. Integers are big-endian; strings are a
/// u32 length then UTF-8 bytes; options a 0/1 tag then the value; metadata a u32 count then
/// pairs in ascending key order.
pub(crate) fn encode_body(
    e: &AuditEntry,
    seq: u64,
    prev_hash: &Hash,
    policy_id: &str,
    key_id: u32,
    w: &mut impl Put,
) {
    w.put(&[FORMAT_VERSION]);
    put_str(w, &e.stream);
    w.put(&seq.to_be_bytes());
    w.put(prev_hash);
    w.put(&e.timestamp.as_unix_millis().to_be_bytes());
    put_str(w, &e.event_type);
    put_str(w, &e.action);
    put_opt_u64(w, e.amount);
    put_opt_u64(w, e.balance_before);
    put_opt_u64(w, e.balance_after);
    match &e.transaction_id {
        None => w.put(&[0]),
        Some(t) => {
            w.put(&[1]);
            put_str(w, t);
        }
    }
    w.put(&[u8::from(e.success)]);
    put_str(w, policy_id);
    w.put(&key_id.to_be_bytes());
    let pairs = u32::try_from(e.metadata.len()).unwrap_or(u32::MAX);
    w.put(&pairs.to_be_bytes());
    for (k, v) in &e.metadata {
        put_str(w, k);
        put_str(w, v);
    }
}

/// The entry hash. The body is encoded into `scratch` (reused between calls) and hashed in
/// one pass, which is much cheaper than feeding the hasher field by field.
pub(crate) fn body_hash(
    e: &AuditEntry,
    seq: u64,
    prev_hash: &Hash,
    policy_id: &str,
    key_id: u32,
    scratch: &mut Vec<u8>,
) -> Hash {
    scratch.clear();
    scratch.extend_from_slice(DOMAIN_ENTRY);
    encode_body(e, seq, prev_hash, policy_id, key_id, scratch);
    Sha256::digest(&scratch[..]).into()
}

/// A bounds-checked cursor: every read returns a typed error instead of panicking.
pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], AuditError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| {
                AuditError::decode(
                    "entry",
                    format!("truncated: need {n} bytes at offset {}", self.pos),
                )
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], AuditError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, AuditError> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, AuditError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, AuditError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn flag(&mut self, what: &str) -> Result<bool, AuditError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(AuditError::decode(
                "entry",
                format!("{what}: tag {b} is neither 0 nor 1"),
            )),
        }
    }
    fn string(&mut self, what: &str, max: usize) -> Result<String, AuditError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(AuditError::decode(
                "entry",
                format!("{what}: length {len} over limit {max}"),
            ));
        }
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| AuditError::decode("entry", format!("{what}: not UTF-8")))
    }
    fn opt_u64(&mut self, what: &str) -> Result<Option<u64>, AuditError> {
        Ok(if self.flag(what)? {
            Some(self.u64()?)
        } else {
            None
        })
    }
    pub(crate) fn finish(&self) -> Result<(), AuditError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(AuditError::decode(
                "entry",
                format!("{} trailing bytes", self.buf.len() - self.pos),
            ))
        }
    }
}

pub(crate) fn decode_sealed(r: &mut Reader<'_>) -> Result<SealedEntry, AuditError> {
    let version = r.u8()?;
    if version != FORMAT_VERSION {
        return Err(AuditError::decode(
            "entry",
            format!("unknown format version {version}"),
        ));
    }
    let stream = r.string("stream", STREAM_LEN_MAX)?;
    let seq = r.u64()?;
    let prev_hash = r.array()?;
    let timestamp = Timestamp::from_unix_millis(r.u64()?);
    let event_type = r.string("event_type", TEXT_LEN_MAX)?;
    let action = r.string("action", TEXT_LEN_MAX)?;
    let amount = r.opt_u64("amount")?;
    let balance_before = r.opt_u64("balance_before")?;
    let balance_after = r.opt_u64("balance_after")?;
    let transaction_id = if r.flag("transaction_id")? {
        Some(r.string("transaction_id", TEXT_LEN_MAX)?)
    } else {
        None
    };
    let success = r.flag("success")?;
    let policy_id = r.string("policy_id", TEXT_LEN_MAX)?;
    let key_id = r.u32()?;
    let pairs = r.u32()? as usize;
    if pairs > METADATA_PAIRS_MAX {
        return Err(AuditError::decode(
            "entry",
            format!("{pairs} metadata pairs over limit {METADATA_PAIRS_MAX}"),
        ));
    }
    let mut metadata = BTreeMap::new();
    let mut last: Option<String> = None;
    for _ in 0..pairs {
        let k = r.string("metadata key", METADATA_KEY_LEN_MAX)?;
        let v = r.string("metadata value", METADATA_VALUE_LEN_MAX)?;
        if last.as_ref().is_some_and(|l| *l >= k) {
            return Err(AuditError::decode(
                "entry",
                "metadata keys not in strictly ascending order",
            ));
        }
        last = Some(k.clone());
        metadata.insert(k, v);
    }
    let entry_hash = r.array()?;
    let mac = r.array()?;
    Ok(SealedEntry {
        entry: AuditEntry {
            stream,
            event_type,
            action,
            amount,
            balance_before,
            balance_after,
            transaction_id,
            success,
            metadata,
            timestamp,
        },
        seq,
        prev_hash,
        policy_id,
        key_id,
        entry_hash,
        mac,
    })
}

/// One entry at its place in the log: the global index (Merkle leaf position) and the entry.
///
/// ```
/// # use audit_chain::*;
/// # use metered_clock::Timestamp;
/// let keyring = Keyring::new(HmacKey::new(1, [7u8; 32])?);
/// let mut chain = StreamChain::new("t1");
/// let sealed = chain.seal(&keyring, &MaskingPolicy::none(), AuditEntry::new("t1", "e", "a", Timestamp::EPOCH))?;
/// let record = LogRecord::new(0, sealed);
/// let mut bytes = Vec::new();
/// record.encode(&mut bytes);
/// assert_eq!(LogRecord::decode(&bytes)?, record);
/// # Ok::<(), AuditError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Position in the log (0-based); also the Merkle leaf index.
    pub index: u64,
    /// The sealed entry, shared: a queue, the writer and a memory sink hold one entry
    /// without copying it.
    pub entry: Arc<SealedEntry>,
}

impl LogRecord {
    /// A record for `entry` at `index`.
    #[must_use]
    pub fn new(index: u64, entry: impl Into<Arc<SealedEntry>>) -> Self {
        LogRecord {
            index,
            entry: entry.into(),
        }
    }

    /// Appends `index (u64 BE) ‖ sealed entry encoding` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.index.to_be_bytes());
        self.entry.encode(out);
    }

    /// Decodes one record; the whole input must be used.
    ///
    /// # Errors
    /// [`AuditError::Decode`] on malformed bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, AuditError> {
        let mut r = Reader { buf: bytes, pos: 0 };
        let index = r.u64()?;
        let entry = decode_sealed(&mut r)?;
        r.finish()?;
        Ok(LogRecord::new(index, entry))
    }
}
