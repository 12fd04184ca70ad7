//! Audit entries, sealed entries and their canonical binary encoding.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

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
        Fields::of(self).validate()?;
        validate_metadata(self.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

/// A borrowed audit entry: the same fields as [`AuditEntry`], sealed by
/// [`StreamHead::seal`](crate::StreamHead::seal) without building owned strings or a map
/// (the fast path for producers that already hold the values, such as the ledger).
/// `metadata` must be in strictly ascending key order.
///
/// ```
/// use audit_chain::{AuditEntry, EntryView};
/// use metered_clock::Timestamp;
/// let view = EntryView {
///     metadata: &[("lot", "3"), ("seq", "9")],
///     ..EntryView::new("tenant-1", "balance", "debit", Timestamp::EPOCH)
/// };
/// let owned = AuditEntry::from(view);
/// assert_eq!(owned.metadata["seq"], "9");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryView<'a> {
    /// The stream (see [`AuditEntry::stream`]).
    pub stream: &'a str,
    /// Kind of event.
    pub event_type: &'a str,
    /// What happened.
    pub action: &'a str,
    /// Amount moved, if any.
    pub amount: Option<u64>,
    /// Balance before the change, if any.
    pub balance_before: Option<u64>,
    /// Balance after the change, if any.
    pub balance_after: Option<u64>,
    /// The transaction (idempotency) id, if any.
    pub transaction_id: Option<&'a str>,
    /// Whether the operation succeeded.
    pub success: bool,
    /// Key/value pairs in strictly ascending key order.
    pub metadata: &'a [(&'a str, &'a str)],
    /// When it happened (wall clock).
    pub timestamp: Timestamp,
}

impl<'a> EntryView<'a> {
    /// A successful entry with no amount, balances, transaction id or metadata.
    #[must_use]
    pub fn new(
        stream: &'a str,
        event_type: &'a str,
        action: &'a str,
        timestamp: Timestamp,
    ) -> Self {
        EntryView {
            stream,
            event_type,
            action,
            amount: None,
            balance_before: None,
            balance_after: None,
            transaction_id: None,
            success: true,
            metadata: &[],
            timestamp,
        }
    }

    pub(crate) fn fields(&self) -> Fields<'a> {
        Fields {
            stream: self.stream,
            event_type: self.event_type,
            action: self.action,
            amount: self.amount,
            balance_before: self.balance_before,
            balance_after: self.balance_after,
            transaction_id: self.transaction_id,
            success: self.success,
            timestamp: self.timestamp,
        }
    }
}

impl From<EntryView<'_>> for AuditEntry {
    fn from(v: EntryView<'_>) -> Self {
        AuditEntry {
            stream: v.stream.to_owned(),
            event_type: v.event_type.to_owned(),
            action: v.action.to_owned(),
            amount: v.amount,
            balance_before: v.balance_before,
            balance_after: v.balance_after,
            transaction_id: v.transaction_id.map(str::to_owned),
            success: v.success,
            metadata: v
                .metadata
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            timestamp: v.timestamp,
        }
    }
}

/// The fields of an entry other than its metadata, borrowed.
#[derive(Clone, Copy)]
pub(crate) struct Fields<'a> {
    pub(crate) stream: &'a str,
    pub(crate) event_type: &'a str,
    pub(crate) action: &'a str,
    pub(crate) amount: Option<u64>,
    pub(crate) balance_before: Option<u64>,
    pub(crate) balance_after: Option<u64>,
    pub(crate) transaction_id: Option<&'a str>,
    pub(crate) success: bool,
    pub(crate) timestamp: Timestamp,
}

impl<'a> Fields<'a> {
    pub(crate) fn of(e: &'a AuditEntry) -> Self {
        Fields {
            stream: &e.stream,
            event_type: &e.event_type,
            action: &e.action,
            amount: e.amount,
            balance_before: e.balance_before,
            balance_after: e.balance_after,
            transaction_id: e.transaction_id.as_deref(),
            success: e.success,
            timestamp: e.timestamp,
        }
    }

    /// Checks every field but the metadata against the encoding limits.
    pub(crate) fn validate(&self) -> Result<(), AuditError> {
        if self.stream.is_empty() {
            return Err(AuditError::InvalidEntry {
                field: "stream",
                reason: "must not be empty".into(),
            });
        }
        text_limit("stream", self.stream, STREAM_LEN_MAX)?;
        text_limit("event_type", self.event_type, TEXT_LEN_MAX)?;
        text_limit("action", self.action, TEXT_LEN_MAX)?;
        if let Some(tx) = self.transaction_id {
            text_limit("transaction_id", tx, TEXT_LEN_MAX)?;
        }
        Ok(())
    }
}

fn text_limit(field: &'static str, s: &str, max: usize) -> Result<(), AuditError> {
    if s.len() > max {
        return Err(AuditError::InvalidEntry {
            field,
            reason: format!("is {} bytes long (max {max})", s.len()),
        });
    }
    Ok(())
}

/// Checks metadata pairs against the limits, and their keys for strictly ascending order.
pub(crate) fn validate_metadata<'m>(
    pairs: impl ExactSizeIterator<Item = (&'m str, &'m str)>,
) -> Result<(), AuditError> {
    if pairs.len() > METADATA_PAIRS_MAX {
        return Err(AuditError::InvalidEntry {
            field: "metadata",
            reason: format!("has {} pairs (max {METADATA_PAIRS_MAX})", pairs.len()),
        });
    }
    let mut last: Option<&str> = None;
    for (k, v) in pairs {
        text_limit("metadata key", k, METADATA_KEY_LEN_MAX)?;
        text_limit("metadata value", v, METADATA_VALUE_LEN_MAX)?;
        if last.is_some_and(|l| l >= k) {
            return Err(AuditError::InvalidEntry {
                field: "metadata",
                reason: format!("key {k:?} is not after the previous key (keys must ascend)"),
            });
        }
        last = Some(k);
    }
    Ok(())
}

/// An entry after masking and sealing: its place in its stream's chain, its hash and MAC.
///
/// Made by [`StreamChain::seal`](crate::StreamChain::seal) or
/// [`StreamHead::seal`](crate::StreamHead::seal), or decoded from storage; a decoded entry is
/// only trusted once a verifier has checked it. It keeps its canonical encoding (what the
/// hash covers and what sinks store), so writing it is a copy and reading its stream, place
/// and hashes decodes nothing; [`entry`](Self::entry) decodes the content on first use. The
/// JSON view (`serde_json::to_string`) shows the content and hashes (lowercase hex).
#[derive(Clone, Serialize, Deserialize)]
#[serde(into = "SealedRepr", try_from = "SealedRepr")]
pub struct SealedEntry {
    /// The canonical body (see [`encode_body`]), valid by construction.
    body: Box<[u8]>,
    pub(crate) seq: u64,
    pub(crate) prev_hash: Hash,
    pub(crate) key_id: u32,
    timestamp: Timestamp,
    stream: (u32, u32),
    policy: (u32, u32),
    pub(crate) entry_hash: Hash,
    pub(crate) mac: [u8; 32],
    /// The decoded content, made on first use (or kept from sealing).
    entry: OnceLock<AuditEntry>,
}

impl PartialEq for SealedEntry {
    fn eq(&self, other: &Self) -> bool {
        self.body == other.body && self.entry_hash == other.entry_hash && self.mac == other.mac
    }
}

impl Eq for SealedEntry {}

impl fmt::Debug for SealedEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedEntry")
            .field("entry", self.entry())
            .field("seq", &self.seq)
            .field("prev_hash", &crate::hex::encode(&self.prev_hash))
            .field("policy_id", &self.policy_id())
            .field("key_id", &self.key_id)
            .field("entry_hash", &crate::hex::encode(&self.entry_hash))
            .finish_non_exhaustive()
    }
}

impl SealedEntry {
    /// An entry sealed from fields that were validated before [`encode_body`] wrote them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn sealed(
        body: Body,
        f: &Fields<'_>,
        seal: &Seal<'_>,
        entry_hash: Hash,
        mac: [u8; 32],
    ) -> Self {
        debug_assert!(parse_body(&body.bytes).is_ok_and(|p| p.end == body.bytes.len()));
        SealedEntry {
            body: body.bytes.into_boxed_slice(),
            seq: seal.seq,
            prev_hash: *seal.prev_hash,
            key_id: seal.key_id,
            timestamp: f.timestamp,
            stream: body.stream,
            policy: body.policy,
            entry_hash,
            mac,
            entry: OnceLock::new(),
        }
    }

    /// Keeps `entry` as the decoded content (it must be what the body encodes).
    pub(crate) fn keep_entry(&self, entry: AuditEntry) {
        debug_assert!(decode_entry(&self.body).is_ok_and(|e| e == entry));
        let _ = self.entry.set(entry);
    }

    /// The (masked) entry content.
    #[must_use]
    pub fn entry(&self) -> &AuditEntry {
        self.entry.get_or_init(|| {
            decode_entry(&self.body).expect("a sealed entry's body is validated when it is made")
        })
    }
    /// The stream the entry belongs to.
    #[must_use]
    pub fn stream(&self) -> &str {
        self.text(self.stream)
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
        self.text(self.policy)
    }
    /// Id of the HMAC key that produced [`mac`](Self::mac).
    #[must_use]
    pub fn key_id(&self) -> u32 {
        self.key_id
    }
    /// When it happened (wall clock), without decoding the content.
    #[must_use]
    pub fn timestamp(&self) -> Timestamp {
        self.timestamp
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
        hash_body(&self.body)
    }

    /// Appends the canonical encoding (body ‖ entry hash ‖ MAC) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.extend_from_slice(&self.body);
        out.extend_from_slice(&self.entry_hash);
        out.extend_from_slice(&self.mac);
    }

    /// Length of [`encode`](Self::encode)'s output.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        self.body.len() + 64
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

    fn text(&self, (start, end): (u32, u32)) -> &str {
        // The range was checked to be UTF-8 when the body was made.
        std::str::from_utf8(&self.body[start as usize..end as usize]).unwrap_or_default()
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

/// What a seal adds to an entry's fields in its body.
#[derive(Clone, Copy)]
pub(crate) struct Seal<'a> {
    pub(crate) seq: u64,
    pub(crate) prev_hash: &'a Hash,
    pub(crate) policy_id: &'a str,
    pub(crate) key_id: u32,
}

/// The canonical, versioned, length-prefixed body. Integers are big-endian; strings are a
/// u32 length then UTF-8 bytes; options a 0/1 tag then the value; metadata a u32 count then
/// pairs in ascending key order. Written into a buffer of exactly its size.
pub(crate) fn encode_body<'m, M>(f: &Fields<'_>, metadata: M, seal: &Seal<'_>) -> Body
where
    M: ExactSizeIterator<Item = (&'m str, &'m str)> + Clone,
{
    let str_len = |s: &str| 4 + s.len();
    let opt_len = |v: Option<u64>| if v.is_some() { 9 } else { 1 };
    let len = 1
        + str_len(f.stream)
        + 8
        + 32
        + 8
        + str_len(f.event_type)
        + str_len(f.action)
        + opt_len(f.amount)
        + opt_len(f.balance_before)
        + opt_len(f.balance_after)
        + 1
        + f.transaction_id.map_or(0, str_len)
        + 1
        + str_len(seal.policy_id)
        + 4
        + 4
        + metadata
            .clone()
            .map(|(k, v)| str_len(k) + str_len(v))
            .sum::<usize>();
    let mut w = Vec::with_capacity(len);
    w.push(FORMAT_VERSION);
    put_str(&mut w, f.stream);
    w.extend_from_slice(&seal.seq.to_be_bytes());
    w.extend_from_slice(seal.prev_hash);
    w.extend_from_slice(&f.timestamp.as_unix_millis().to_be_bytes());
    put_str(&mut w, f.event_type);
    put_str(&mut w, f.action);
    put_opt_u64(&mut w, f.amount);
    put_opt_u64(&mut w, f.balance_before);
    put_opt_u64(&mut w, f.balance_after);
    match f.transaction_id {
        None => w.push(0),
        Some(t) => {
            w.push(1);
            put_str(&mut w, t);
        }
    }
    w.push(u8::from(f.success));
    let policy_at = w.len() + 4;
    put_str(&mut w, seal.policy_id);
    w.extend_from_slice(&seal.key_id.to_be_bytes());
    let pairs = u32::try_from(metadata.len()).unwrap_or(u32::MAX);
    w.extend_from_slice(&pairs.to_be_bytes());
    for (k, v) in metadata {
        put_str(&mut w, k);
        put_str(&mut w, v);
    }
    debug_assert_eq!(w.len(), len);
    // Lengths were validated (an entry is far below 4 GiB), so the offsets fit in u32.
    let at = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Body {
        stream: (5, at(5 + f.stream.len())),
        policy: (at(policy_at), at(policy_at + seal.policy_id.len())),
        bytes: w,
    }
}

/// An encoded body and where its stream and policy id are.
pub(crate) struct Body {
    pub(crate) bytes: Vec<u8>,
    stream: (u32, u32),
    policy: (u32, u32),
}

/// The entry hash of a body: `SHA-256(domain ‖ body)`.
pub(crate) fn hash_body(body: &[u8]) -> Hash {
    Sha256::new()
        .chain_update(DOMAIN_ENTRY)
        .chain_update(body)
        .finalize()
        .into()
}

/// A body's fixed fields and where its strings are, after checking its whole structure.
struct Parsed {
    seq: u64,
    prev_hash: Hash,
    timestamp: Timestamp,
    key_id: u32,
    stream: (u32, u32),
    policy: (u32, u32),
    /// Where the metadata pairs start, and how many there are.
    metadata: (usize, usize),
    /// Where the body ends.
    end: usize,
}

/// Checks a body's structure (version, limits, UTF-8, tags, ascending metadata keys)
/// without copying anything out of it. Trailing bytes are the caller's business.
fn parse_body(buf: &[u8]) -> Result<Parsed, AuditError> {
    let mut r = Reader { buf, pos: 0 };
    let version = r.u8()?;
    if version != FORMAT_VERSION {
        return Err(AuditError::decode(
            "entry",
            format!("unknown format version {version}"),
        ));
    }
    let stream = r.str_range("stream", STREAM_LEN_MAX)?;
    let seq = r.u64()?;
    let prev_hash = r.array()?;
    let timestamp = Timestamp::from_unix_millis(r.u64()?);
    r.str_range("event_type", TEXT_LEN_MAX)?;
    r.str_range("action", TEXT_LEN_MAX)?;
    r.opt_u64("amount")?;
    r.opt_u64("balance_before")?;
    r.opt_u64("balance_after")?;
    if r.flag("transaction_id")? {
        r.str_range("transaction_id", TEXT_LEN_MAX)?;
    }
    r.flag("success")?;
    let policy = r.str_range("policy_id", TEXT_LEN_MAX)?;
    let key_id = r.u32()?;
    let pairs = r.u32()? as usize;
    if pairs > METADATA_PAIRS_MAX {
        return Err(AuditError::decode(
            "entry",
            format!("{pairs} metadata pairs over limit {METADATA_PAIRS_MAX}"),
        ));
    }
    let start = r.pos;
    let mut last: Option<(u32, u32)> = None;
    for _ in 0..pairs {
        let k = r.str_range("metadata key", METADATA_KEY_LEN_MAX)?;
        r.str_range("metadata value", METADATA_VALUE_LEN_MAX)?;
        let key = |(a, b): (u32, u32)| &buf[a as usize..b as usize];
        if last.is_some_and(|l| key(l) >= key(k)) {
            return Err(AuditError::decode(
                "entry",
                "metadata keys not in strictly ascending order",
            ));
        }
        last = Some(k);
    }
    Ok(Parsed {
        seq,
        prev_hash,
        timestamp,
        key_id,
        stream,
        policy,
        metadata: (start, pairs),
        end: r.pos,
    })
}

/// The content of a body [`parse_body`] accepts.
fn decode_entry(body: &[u8]) -> Result<AuditEntry, AuditError> {
    let p = parse_body(body)?;
    let mut r = Reader { buf: body, pos: 0 };
    r.u8()?;
    let stream = r.string("stream", STREAM_LEN_MAX)?;
    r.take(8 + 32 + 8)?;
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
    r.pos = p.metadata.0;
    let mut metadata = BTreeMap::new();
    for _ in 0..p.metadata.1 {
        let k = r.string("metadata key", METADATA_KEY_LEN_MAX)?;
        let v = r.string("metadata value", METADATA_VALUE_LEN_MAX)?;
        metadata.insert(k, v);
    }
    Ok(AuditEntry {
        stream,
        event_type,
        action,
        amount,
        balance_before,
        balance_after,
        transaction_id,
        success,
        metadata,
        timestamp: p.timestamp,
    })
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
    /// A length-prefixed UTF-8 string's byte range, checked.
    fn str_range(&mut self, what: &str, max: usize) -> Result<(u32, u32), AuditError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(AuditError::decode(
                "entry",
                format!("{what}: length {len} over limit {max}"),
            ));
        }
        let start = self.pos;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map_err(|_| AuditError::decode("entry", format!("{what}: not UTF-8")))?;
        let at = |n: usize| {
            u32::try_from(n).map_err(|_| AuditError::decode("entry", "longer than 4 GiB"))
        };
        Ok((at(start)?, at(self.pos)?))
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
    let rest = &r.buf[r.pos..];
    let parsed = parse_body(rest)?;
    let body = &rest[..parsed.end];
    r.pos += parsed.end;
    let entry_hash = r.array()?;
    let mac = r.array()?;
    Ok(SealedEntry {
        body: body.into(),
        seq: parsed.seq,
        prev_hash: parsed.prev_hash,
        key_id: parsed.key_id,
        timestamp: parsed.timestamp,
        stream: parsed.stream,
        policy: parsed.policy,
        entry_hash,
        mac,
        entry: OnceLock::new(),
    })
}

/// The JSON (serde) form of a [`SealedEntry`]: its content and seal, hashes in hex.
#[derive(Serialize, Deserialize)]
struct SealedRepr {
    entry: AuditEntry,
    seq: u64,
    #[serde(with = "crate::hex::serde32")]
    prev_hash: Hash,
    policy_id: String,
    key_id: u32,
    #[serde(with = "crate::hex::serde32")]
    entry_hash: Hash,
    #[serde(with = "crate::hex::serde32")]
    mac: [u8; 32],
}

impl From<SealedEntry> for SealedRepr {
    fn from(e: SealedEntry) -> Self {
        SealedRepr {
            entry: e.entry().clone(),
            seq: e.seq,
            prev_hash: e.prev_hash,
            policy_id: e.policy_id().to_owned(),
            key_id: e.key_id,
            entry_hash: e.entry_hash,
            mac: e.mac,
        }
    }
}

impl TryFrom<SealedRepr> for SealedEntry {
    type Error = AuditError;
    fn try_from(r: SealedRepr) -> Result<Self, AuditError> {
        r.entry.validate()?;
        text_limit("policy_id", &r.policy_id, TEXT_LEN_MAX)?;
        let fields = Fields::of(&r.entry);
        let seal = Seal {
            seq: r.seq,
            prev_hash: &r.prev_hash,
            policy_id: &r.policy_id,
            key_id: r.key_id,
        };
        let body = encode_body(
            &fields,
            r.entry
                .metadata
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
            &seal,
        );
        let sealed = SealedEntry::sealed(body, &fields, &seal, r.entry_hash, r.mac);
        sealed.keep_entry(r.entry);
        Ok(sealed)
    }
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
