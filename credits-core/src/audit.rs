//! The journal's audit trail: one sealed [`audit_chain`] entry per [`JournalEntry`],
//! committed together with the change (feature `audit`).
//!
//! [`AuditJournalHook`] is a [`JournalHook`]: inside the tenant's critical section it seals
//! each new journal entry into the tenant's hash chain (stream `ledger/<tenant>`, see
//! [`stream_name`]) and hands it to an [`AuditWriter`] without waiting
//! ([`AuditWriter::try_enqueue`]). When the writer cannot take an entry (its buffer is full,
//! it is closed, the entry is invalid) the hook refuses the ledger change: the caller gets a
//! [`LedgerError::Storage`] (retryable for backpressure) and the ledger stays as it was, so
//! a retry with the same idempotency key applies the change once.
//!
//! ```
//! use std::sync::Arc;
//! use audit_chain::{AuditWriter, HmacKey, Keyring, MaskingPolicy, MemorySink, WriterConfig};
//! use credits_core::audit::AuditJournalHook;
//! use credits_core::{Amount, GrantOptions, IdempotencyKey, Ledger, MemoryLedgerStore, TenantId, TenantSettings};
//! use metered_clock::{ManualClock, Timestamp};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let clock = ManualClock::new(Timestamp::from_unix_millis(1_700_000_000_000));
//! let sink = Arc::new(MemorySink::new());
//! let config = WriterConfig::builder("example.com/ledger-audit").build()?;
//! let writer = AuditWriter::open(sink.clone(), config, Arc::new(clock.clone()), None).await?;
//! let keyring = Arc::new(Keyring::new(HmacKey::new(1, [7u8; 32])?));
//! let hook = AuditJournalHook::new(writer.clone(), keyring.clone(), MaskingPolicy::standard());
//! let store = MemoryLedgerStore::builder().journal_hook(Arc::new(hook)).build();
//! let ledger = Ledger::new(store, clock);
//!
//! let acme = TenantId::new("acme")?;
//! ledger.create_tenant(&acme, TenantSettings::default()).await?;
//! ledger.grant(&acme, IdempotencyKey::new("g-1")?, Amount::new(100), GrantOptions::default()).await?;
//! ledger.consume(&acme, IdempotencyKey::new("c-1")?, Amount::new(30)).await?;
//!
//! let checkpoint = writer.flush().await?;
//! assert_eq!(checkpoint.size, 2); // one audit entry per journal entry
//! assert!(audit_chain::verify_sink(&*sink, &keyring, Some(&checkpoint)).await?.is_intact());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # What it does not do
//!
//! * It does not wait for durability: an entry is *enqueued* with the change and written by
//!   the writer's group commit afterwards. Await [`AuditWriter::flush`] (or close the
//!   writer) before relying on the log; a failed sink write is reported by the writer
//!   (`audit_chain_batch_failures_total`), not by the ledger call.
//! * A change's entries are enqueued all or none ([`AuditWriter::try_enqueue_all`]), but an
//!   atomic batch over several tenants calls the hook once per tenant: if a later tenant's
//!   entries are refused, the earlier tenants' entries stay in the log although the batch is
//!   refused. Their chains stay valid, so the log still verifies.

use std::collections::HashMap;
use std::sync::Arc;

use audit_chain::{AuditEntry, AuditError, AuditWriter, Keyring, MaskingPolicy, StreamChain};
use parking_lot::Mutex;

use crate::{JournalEntry, JournalHook, LedgerError, StorageError, TenantId};

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
    format!("ledger/{tenant}")
}

/// The audit entry a journal entry is recorded as, in `stream`: event type
/// [`EVENT_TYPE`], action [`EntryKind::as_str`](crate::EntryKind::as_str), the amount, the
/// available balance before and after, the idempotency key as transaction id, and as
/// metadata the journal sequence number (`seq`), `held_after`, `overdrawn_after` and, when
/// set, `hold`, `lot` and `refers_to`.
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
/// };
/// let a = audit_entry("ledger/acme", &e);
/// assert_eq!((a.action.as_str(), a.amount, a.balance_after), ("consumed", Some(30), Some(70)));
/// assert_eq!(a.metadata["seq"], "4");
/// # Ok::<(), credits_core::LedgerError>(())
/// ```
#[must_use]
pub fn audit_entry(stream: &str, e: &JournalEntry) -> AuditEntry {
    let mut entry = AuditEntry::new(stream, EVENT_TYPE, e.kind.as_str(), e.at)
        .with_amount(e.amount.units())
        .with_balances(e.before.available.units(), e.after.available.units())
        .with_metadata("seq", e.seq.get().to_string())
        .with_metadata("held_after", e.after.held.units().to_string())
        .with_metadata("overdrawn_after", e.after.overdrawn.units().to_string());
    if let Some(key) = &e.key {
        entry = entry.with_transaction_id(key.as_str());
    }
    if let Some(hold) = e.hold {
        entry = entry.with_metadata("hold", hold.get().to_string());
    }
    if let Some(lot) = e.lot {
        entry = entry.with_metadata("lot", lot.get().to_string());
    }
    if let Some(r) = e.refers_to {
        entry = entry.with_metadata("refers_to", r.get().to_string());
    }
    entry
}

/// A [`JournalHook`] that records every journal entry in an audit log, or refuses the
/// change (see the [module docs](self)).
///
/// Each tenant has its own chain, resumed from the writer's head of its stream the first
/// time the tenant changes, so tenants never wait on each other. Use one hook per writer
/// and one writer per log; nothing else may write to the `ledger/…` streams.
#[derive(Debug)]
pub struct AuditJournalHook {
    writer: AuditWriter,
    keyring: Arc<Keyring>,
    policy: MaskingPolicy,
    chains: Mutex<HashMap<TenantId, Arc<Mutex<StreamChain>>>>,
}

impl AuditJournalHook {
    /// A hook sealing with the active key of `keyring` after masking with `policy`, and
    /// appending through `writer`.
    #[must_use]
    pub fn new(writer: AuditWriter, keyring: Arc<Keyring>, policy: MaskingPolicy) -> Self {
        AuditJournalHook {
            writer,
            keyring,
            policy,
            chains: Mutex::new(HashMap::new()),
        }
    }

    /// The writer entries go to (flush or close it to make them durable).
    #[must_use]
    pub fn writer(&self) -> &AuditWriter {
        &self.writer
    }

    fn chain(&self, tenant: &TenantId) -> Arc<Mutex<StreamChain>> {
        let mut chains = self.chains.lock();
        if let Some(chain) = chains.get(tenant) {
            return Arc::clone(chain);
        }
        let stream = stream_name(tenant);
        let head = self.writer.stream_head(&stream);
        let chain = Arc::new(Mutex::new(StreamChain::resume(stream, head)));
        chains.insert(tenant.clone(), Arc::clone(&chain));
        chain
    }
}

fn refusal(error: &AuditError) -> LedgerError {
    let message = format!("audit log refused the change: {error}");
    LedgerError::Storage(if error.is_retryable() {
        StorageError::retryable(message)
    } else {
        StorageError::permanent(message)
    })
}

impl JournalHook for AuditJournalHook {
    fn on_entries(&self, tenant: &TenantId, entries: &[JournalEntry]) -> Result<(), LedgerError> {
        let chain = self.chain(tenant);
        let mut chain = chain.lock();
        let head = chain.head();
        let sealed: Result<Vec<_>, AuditError> = entries
            .iter()
            .map(|e| {
                let entry = audit_entry(chain.stream(), e);
                chain.seal(&self.keyring, &self.policy, entry)
            })
            .collect();
        // All of the change's entries are taken, or none: the change is logged whole or
        // refused whole. Durability is the writer's group commit; the ledger does not wait.
        match sealed.and_then(|sealed| self.writer.try_enqueue_all(sealed)) {
            Ok(receipts) => {
                drop(receipts);
                Ok(())
            }
            Err(error) => {
                // Back to the last entry the writer took, so the next change links to it.
                *chain = StreamChain::resume(chain.stream().to_owned(), head);
                metrics::counter!("credits_audit_refusals_total").increment(1);
                tracing::warn!(%tenant, entries = entries.len(), %error,
                    "audit log refused a ledger change");
                Err(refusal(&error))
            }
        }
    }
}
