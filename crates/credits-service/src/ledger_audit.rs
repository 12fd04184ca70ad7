//! The bridge from the ledger's journal to the audit log: one sealed audit entry per journal
//! entry, appended inside the ledger's per-tenant critical section.

use std::collections::HashMap;
use std::sync::Arc;

use audit_chain::{AuditEntry, AuditWriter, Keyring, MaskingPolicy, StreamChain};
use credits_core::{JournalEntry, JournalHook, TenantId};
use parking_lot::Mutex;

/// The audit stream of a tenant's ledger entries.
pub(crate) fn stream_name(tenant: &TenantId) -> String {
    format!("ledger/{tenant}")
}

/// Seals each journal entry into its tenant's hash chain and hands it to the writer without
/// waiting ([`AuditWriter::try_enqueue`]): the ledger's critical section never blocks on
/// audit I/O. If the writer's buffer is full the entry is not logged, the chain is rolled
/// back (so later entries still link), and `audit_entries_dropped_total` counts it.
#[derive(Debug)]
pub(crate) struct LedgerAuditHook {
    writer: AuditWriter,
    keyring: Arc<Keyring>,
    policy: MaskingPolicy,
    chains: Mutex<HashMap<TenantId, Arc<Mutex<StreamChain>>>>,
}

impl LedgerAuditHook {
    pub(crate) fn new(writer: AuditWriter, keyring: Arc<Keyring>, policy: MaskingPolicy) -> Self {
        LedgerAuditHook {
            writer,
            keyring,
            policy,
            chains: Mutex::new(HashMap::new()),
        }
    }

    fn chain(&self, tenant: &TenantId) -> Arc<Mutex<StreamChain>> {
        let mut chains = self.chains.lock();
        Arc::clone(chains.entry(tenant.clone()).or_insert_with(|| {
            let stream = stream_name(tenant);
            let head = self.writer.stream_head(&stream);
            Arc::new(Mutex::new(StreamChain::resume(stream, head)))
        }))
    }
}

fn to_audit_entry(stream: &str, e: &JournalEntry) -> AuditEntry {
    let mut entry = AuditEntry::new(stream, "credits", e.kind.as_str(), e.at)
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

impl JournalHook for LedgerAuditHook {
    fn on_entries(&self, tenant: &TenantId, entries: &[JournalEntry]) {
        let chain = self.chain(tenant);
        let mut chain = chain.lock();
        for e in entries {
            let before = chain.clone();
            let entry = to_audit_entry(chain.stream(), e);
            let result = chain
                .seal(&self.keyring, &self.policy, entry)
                .and_then(|sealed| self.writer.try_enqueue(sealed));
            // The receipt is dropped: durability is the writer's job; the ledger does not wait.
            if let Err(error) = result {
                *chain = before;
                metrics::counter!("audit_entries_dropped_total").increment(1);
                tracing::error!(%tenant, seq = e.seq.get(), %error, "audit entry not logged");
            }
        }
    }
}
