//! The journal's audit trail (feature `audit`): one sealed [`audit_chain`] entry per
//! [`JournalEntry`], sealed inside the change's own atomic step by every backend, then
//! integrated into one Merkle log by a sequencer.
//!
//! * **One mapping**: [`audit_entry`] turns a journal entry into an audit entry in the
//!   tenant's stream `ledger/<tenant>` ([`stream_name`]); [`LedgerAudit::seal`] seals a
//!   change's entries into the tenant's hash chain. The memory store and
//!   `credits-postgres` both use them, so the same change seals to the same bytes.
//! * **Atomic with the change**: the memory store ([`MemoryLedgerStore`] built with
//!   [`MemoryAudit`]) seals under the tenant's lock (the chain head is part of the tenant's
//!   state) and puts the entries in its [`MemoryAuditQueue`] in the same step; PostgreSQL
//!   writes them in the change's transaction. An entry exists if and only if its change
//!   committed, for every tenant of a batch.
//! * **Integrated by the sequencer**: an [`AuditWriter`] opened with
//!   [`open_with_queue`](AuditWriter::open_with_queue) takes queued entries in commit order
//!   per stream, writes them to its sink and removes them only once durable. A failing sink
//!   delays integration and loses nothing; past the queue's capacity the store refuses
//!   changes with [`LedgerError::AuditBacklogFull`] instead of leaving them un-audited.
//!
//! ```
//! use std::sync::Arc;
//! use audit_chain::{AuditWriter, HmacKey, Keyring, MaskingPolicy, MemoryAuditQueue, MemorySink, WriterConfig};
//! use credits_core::audit::{LedgerAudit, MemoryAudit};
//! use credits_core::{Amount, GrantOptions, IdempotencyKey, Ledger, MemoryLedgerStore, TenantId, TenantSettings};
//! use metered_clock::{ManualClock, Timestamp};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let clock = ManualClock::new(Timestamp::from_unix_millis(1_700_000_000_000));
//! let sink = Arc::new(MemorySink::new());
//! let queue = Arc::new(MemoryAuditQueue::new(100_000)); // the backlog limit
//! let config = WriterConfig::builder("example.com/ledger-audit").build()?;
//! let writer = AuditWriter::open_with_queue(sink.clone(), queue.clone(), config, Arc::new(clock.clone()), None).await?;
//! let keyring = Arc::new(Keyring::new(HmacKey::new(1, [7u8; 32])?));
//! let audit = LedgerAudit::new(keyring.clone(), MaskingPolicy::standard());
//! let store = MemoryLedgerStore::builder().audit(MemoryAudit::new(audit, queue)).build();
//! let ledger = Ledger::new(store, clock);
//!
//! let acme = TenantId::new("acme")?;
//! ledger.create_tenant(&acme, TenantSettings::default()).await?;
//! ledger.grant(&acme, IdempotencyKey::new("g-1")?, Amount::new(100), GrantOptions::default()).await?;
//! ledger.consume(&acme, IdempotencyKey::new("c-1")?, Amount::new(30)).await?;
//!
//! let checkpoint = writer.flush().await?; // integrates everything queued, then checkpoints
//! assert_eq!(checkpoint.size, 2); // one audit entry per journal entry
//! assert!(audit_chain::verify_sink(&*sink, &keyring, Some(&checkpoint)).await?.is_intact());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # What it does not do
//!
//! * A change does not wait for its entries to reach the log: they are committed with it
//!   (durable as the store is) and integrated afterwards. Await
//!   [`AuditWriter::flush`] before relying on the log's checkpoint covering them.
//! * The memory queue lives in the process, like the memory store: both end with it.
//!
//! [`MemoryLedgerStore`]: crate::MemoryLedgerStore

use std::sync::Arc;

use audit_chain::{
    AuditEntry, AuditError, AuditWriter, EntryView, Keyring, MaskingPolicy, MemoryAuditQueue,
    SealedEntry, StreamHead,
};

use crate::{IdempotencyKey, JournalEntry, LedgerError, StorageError, TenantId};

/// The event type of every ledger audit entry.
pub const EVENT_TYPE: &str = "credits";

/// The audit stream of a tenant's journal: `ledger/<tenant>`.
///
/// ```
/// use credits_core::{TenantId, audit::stream_name};
/// assert_eq!(stream_name(&TenantId::new("acme")?), "ledger/acme");
/// # Ok::<(), credits_core::LedgerError>(())
/// ```
#[must_use]
pub fn stream_name(tenant: &TenantId) -> String {
    with_stream(tenant, str::to_owned)
}

/// The audit entry a journal entry is recorded as, in `stream`: event type
/// [`EVENT_TYPE`], action [`EntryKind::as_str`](crate::EntryKind::as_str), the amount, the
/// available balance before and after, the idempotency key as transaction id, and as
/// metadata the journal sequence number (`seq`), `held_after`, `overdrawn_after` and, when
/// set, `hold`, `lot`, `reason` (a void's) and `refers_to`.
///
/// ```
/// use credits_core::audit::audit_entry;
/// use credits_core::{Amount, Balance, EntryKind, EntrySeq, IdempotencyKey, JournalEntry, TenantId};
/// use metered_clock::Timestamp;
///
/// let e = JournalEntry {
///     tenant: TenantId::new("acme")?,
///     seq: EntrySeq::new(4),
///     at: Timestamp::from_unix_millis(1_000),
///     kind: EntryKind::Consumed,
///     amount: Amount::new(30),
///     before: Balance { available: Amount::new(100), ..Balance::default() },
///     after: Balance { available: Amount::new(70), ..Balance::default() },
///     hold: None,
///     lot: None,
///     refers_to: None,
///     key: Some(IdempotencyKey::new("c-1")?),
///     reason: None,
/// };
/// let a = audit_entry("ledger/acme", &e);
/// assert_eq!((a.action.as_str(), a.amount, a.balance_after), ("consumed", Some(30), Some(70)));
/// assert_eq!(a.metadata["seq"], "4");
/// # Ok::<(), credits_core::LedgerError>(())
/// ```
#[must_use]
pub fn audit_entry(stream: &str, e: &JournalEntry) -> AuditEntry {
    with_view(stream, e, |view| AuditEntry::from(*view))
}

/// The one mapping: calls `f` with the audit entry of `e` in `stream`, borrowed (numbers
/// formatted on the stack), which [`audit_entry`] copies and [`LedgerAudit::seal`] seals
/// without copying.
fn with_view<R>(stream: &str, e: &JournalEntry, f: impl FnOnce(&EntryView<'_>) -> R) -> R {
    let mut held = itoa::Buffer::new();
    let mut hold = itoa::Buffer::new();
    let mut lot = itoa::Buffer::new();
    let mut overdrawn = itoa::Buffer::new();
    let mut refers_to = itoa::Buffer::new();
    let mut seq = itoa::Buffer::new();
    // In ascending key order, as the audit format requires.
    let mut pairs = [("", ""); 7];
    let mut n = 0;
    let mut push = |key, value| {
        pairs[n] = (key, value);
        n += 1;
    };
    push("held_after", held.format(e.after.held.units()));
    if let Some(h) = e.hold {
        push("hold", hold.format(h.get()));
    }
    if let Some(l) = e.lot {
        push("lot", lot.format(l.get()));
    }
    push(
        "overdrawn_after",
        overdrawn.format(e.after.overdrawn.units()),
    );
    if let Some(r) = &e.reason {
        push("reason", r.as_str());
    }
    if let Some(r) = e.refers_to {
        push("refers_to", refers_to.format(r.get()));
    }
    push("seq", seq.format(e.seq.get()));
    f(&EntryView {
        amount: Some(e.amount.units()),
        balance_before: Some(e.before.available.units()),
        balance_after: Some(e.after.available.units()),
        transaction_id: e.key.as_ref().map(IdempotencyKey::as_str),
        metadata: &pairs[..n],
        ..EntryView::new(stream, EVENT_TYPE, e.kind.as_str(), e.at)
    })
}

/// Calls `f` with the tenant's stream name, `ledger/<tenant>`, built on the stack.
fn with_stream<R>(tenant: &TenantId, f: impl FnOnce(&str) -> R) -> R {
    const PREFIX: &str = "ledger/";
    let mut buf = [0u8; PREFIX.len() + crate::ids::NAME_LEN_MAX];
    let name = tenant.as_str().as_bytes();
    let len = PREFIX.len() + name.len();
    buf[..PREFIX.len()].copy_from_slice(PREFIX.as_bytes());
    buf[PREFIX.len()..len].copy_from_slice(name);
    // Both parts are UTF-8, so the concatenation is.
    f(std::str::from_utf8(&buf[..len]).unwrap_or_default())
}

/// How the ledger seals its audit entries: the HMAC keyring and the masking policy. Every
/// backend seals a change's journal entries with [`seal`](Self::seal) (one mapping,
/// [`audit_entry`]) inside the change's own atomic step.
///
/// ```
/// use std::sync::Arc;
/// use audit_chain::{HmacKey, Keyring, MaskingPolicy, StreamHead};
/// use credits_core::audit::LedgerAudit;
/// let audit = LedgerAudit::new(Arc::new(Keyring::new(HmacKey::new(1, [7u8; 32])?)), MaskingPolicy::standard());
/// let (sealed, head) = audit.seal(&credits_core::TenantId::new("acme").unwrap(), StreamHead::default(), &[])?;
/// assert!(sealed.is_empty() && head == StreamHead::default());
/// # Ok::<(), audit_chain::AuditError>(())
/// ```
#[derive(Clone, Debug)]
pub struct LedgerAudit {
    keyring: Arc<Keyring>,
    policy: Arc<MaskingPolicy>,
}

impl LedgerAudit {
    /// Seal with `keyring`'s active key after masking with `policy`.
    #[must_use]
    pub fn new(keyring: Arc<Keyring>, policy: MaskingPolicy) -> Self {
        LedgerAudit {
            keyring,
            policy: Arc::new(policy),
        }
    }

    /// The keyring (verify with the same one).
    #[must_use]
    pub fn keyring(&self) -> &Arc<Keyring> {
        &self.keyring
    }

    /// The masking policy.
    #[must_use]
    pub fn policy(&self) -> &MaskingPolicy {
        &self.policy
    }

    /// Seals one audit entry per journal entry of `tenant`, continuing its chain from
    /// `head`; returns them with the chain's new head.
    ///
    /// # Errors
    /// [`AuditError::InvalidEntry`] only if the stream's sequence numbers are exhausted: a
    /// ledger entry always fits the audit format's limits (a test checks the bounds).
    pub fn seal(
        &self,
        tenant: &TenantId,
        head: StreamHead,
        entries: &[JournalEntry],
    ) -> Result<(Vec<SealedEntry>, StreamHead), AuditError> {
        if entries.is_empty() {
            return Ok((Vec::new(), head));
        }
        let mut head = head;
        let sealed = with_stream(tenant, |stream| {
            entries
                .iter()
                .map(|e| with_view(stream, e, |v| head.seal(&self.keyring, &self.policy, v)))
                .collect::<Result<Vec<_>, _>>()
        })?;
        Ok((sealed, head))
    }
}

/// A memory store's audit: how it seals, and the queue its sealed entries go to (the queue
/// an [`AuditWriter`] opened with
/// [`open_with_queue`](audit_chain::AuditWriter::open_with_queue) integrates).
#[derive(Clone, Debug)]
pub struct MemoryAudit {
    pub(crate) audit: LedgerAudit,
    pub(crate) queue: Arc<MemoryAuditQueue>,
    pub(crate) log: Option<AuditWriter>,
}

impl MemoryAudit {
    /// Seals with `audit` and queues into `queue`; the queue's capacity is the backlog
    /// limit past which changes are refused ([`LedgerError::AuditBacklogFull`]).
    #[must_use]
    pub fn new(audit: LedgerAudit, queue: Arc<MemoryAuditQueue>) -> Self {
        MemoryAudit {
            audit,
            queue,
            log: None,
        }
    }

    /// Continues each tenant's chain from `log` when the tenant is created: needed when the
    /// log outlives the store (a file sink kept across restarts of an in-memory ledger),
    /// so a re-created tenant's entries extend its stream instead of restarting it.
    #[must_use]
    pub fn resuming_from(mut self, log: AuditWriter) -> Self {
        self.log = Some(log);
        self
    }

    /// Where a new tenant's chain starts.
    pub(crate) fn start(&self, tenant: &TenantId) -> StreamHead {
        match &self.log {
            None => StreamHead::default(),
            Some(log) => {
                let stream = stream_name(tenant);
                let head = log.stream_head(&stream);
                self.queue.head_after(&stream, head)
            }
        }
    }

    /// Refuses a change while the backlog is at its limit (call before applying it).
    pub(crate) fn check_room(&self) -> Result<(), LedgerError> {
        if !self.queue.has_room() {
            metrics::counter!("credits_audit_refusals_total").increment(1);
            return Err(LedgerError::AuditBacklogFull {
                backlog: self.queue.len() as u64,
                limit: self.queue.capacity() as u64,
            });
        }
        Ok(())
    }

    /// Seals one change's entries for `tenant` from `head`; returns them and the new head.
    pub(crate) fn seal(
        &self,
        tenant: &TenantId,
        head: StreamHead,
        entries: &[JournalEntry],
    ) -> Result<(Vec<SealedEntry>, StreamHead), LedgerError> {
        self.audit.seal(tenant, head, entries).map_err(|e| {
            tracing::error!(%tenant, error = %e, "sealing ledger audit entries failed");
            LedgerError::Storage(StorageError::permanent(format!(
                "sealing the audit entries failed: {e}"
            )))
        })
    }

    /// Queues sealed entries of changes being committed (never refuses: room was checked).
    pub(crate) fn queue(&self, sealed: Vec<SealedEntry>) {
        self.queue.push_committed(sealed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sealing a ledger entry cannot fail on the audit format's limits.
    #[test]
    fn ledger_entries_fit_the_audit_format() {
        const {
            assert!(crate::ids::NAME_LEN_MAX + "ledger/".len() <= audit_chain::STREAM_LEN_MAX);
            assert!(crate::ids::NAME_LEN_MAX <= audit_chain::TEXT_LEN_MAX);
            assert!(crate::ids::REASON_LEN_MAX <= audit_chain::METADATA_VALUE_LEN_MAX);
        }
        let tenant = TenantId::new("t".repeat(crate::ids::NAME_LEN_MAX)).unwrap();
        let key = crate::IdempotencyKey::new("k".repeat(crate::ids::NAME_LEN_MAX)).unwrap();
        let e = JournalEntry {
            tenant: tenant.clone(),
            seq: crate::EntrySeq::new(u64::MAX),
            at: metered_clock::Timestamp::from_unix_millis(u64::MAX),
            kind: crate::EntryKind::Refunded,
            amount: crate::Amount::new(u64::MAX),
            before: crate::Balance::default(),
            after: crate::Balance::default(),
            hold: Some(crate::HoldId::new(u64::MAX)),
            lot: Some(crate::LotId::new(u64::MAX)),
            refers_to: Some(crate::EntrySeq::new(u64::MAX)),
            key: Some(key),
            reason: Some(crate::Reason::new("r".repeat(crate::ids::REASON_LEN_MAX)).unwrap()),
        };
        let audit = LedgerAudit::new(
            Arc::new(Keyring::new(audit_chain::HmacKey::new(1, [1; 32]).unwrap())),
            MaskingPolicy::standard(),
        );
        let (sealed, _) = audit.seal(&tenant, StreamHead::default(), &[e]).unwrap();
        assert_eq!(sealed.len(), 1);
    }
}
