//! [`Work`]: one tenant inside a store transaction — its account rebuilt from the locked
//! rows, and everything the operations changed, to be written back before `COMMIT`.

use std::collections::BTreeSet;

use audit_chain::{SealedEntry, StreamHead};
use credits_core::backend::{Account, AccountHeader, AccountParts, Applied, Hold, LotKey};
use credits_core::{
    BalanceEvent, EntrySeq, HoldId, IdempotencyKey, IdempotencyRecord, JournalEntry, LedgerError,
    Receipt, Request,
};
use hashbrown::HashMap;
use metered_clock::Timestamp;

use super::transaction::receipt;
use crate::PgError;

/// One tenant inside a transaction: its rebuilt account and everything to write back.
pub(super) struct Work {
    pub(super) account: Account,
    /// The `accounts` row as loaded: written back only if it changed.
    pub(super) before: AccountHeader,
    pub(super) audit_head: StreamHead,
    pub(super) audit_head_before: StreamHead,
    /// Every hold known in this transaction (loaded active ones and ones created here), so a
    /// hold created and resolved in one transaction can still be written in full.
    pub(super) hold_details: HashMap<HoldId, Hold>,
    pub(super) lots_changed: BTreeSet<LotKey>,
    pub(super) holds_changed: BTreeSet<HoldId>,
    pub(super) refunds_changed: BTreeSet<EntrySeq>,
    /// New journal entries, in order.
    pub(super) entries: Vec<JournalEntry>,
    /// New balance events, in order.
    pub(super) events: Vec<BalanceEvent>,
    /// The audit entries sealed for `entries`, one each (with [`LedgerAudit`](crate::LedgerAudit)).
    pub(super) sealed: Vec<SealedEntry>,
    /// New idempotency records, in order.
    pub(super) records: Vec<(IdempotencyKey, IdempotencyRecord)>,
    /// The records of the keys the operations use: loaded ones and new ones.
    known: HashMap<IdempotencyKey, IdempotencyRecord>,
    /// The journal entries refunds name, as loaded.
    targets: HashMap<EntrySeq, JournalEntry>,
}

impl Work {
    /// Rebuilds the account from `parts` (checking it), with the chain head, the known
    /// idempotency records and the refund targets loaded beside it.
    ///
    /// # Errors
    /// [`PgError::Corrupt`] when the rows do not make a consistent account.
    pub(super) fn new(
        parts: AccountParts,
        audit_head: StreamHead,
        known: HashMap<IdempotencyKey, IdempotencyRecord>,
        targets: Vec<JournalEntry>,
    ) -> Result<Self, PgError> {
        let hold_details = parts.holds.iter().map(|h| (h.id(), h.clone())).collect();
        let before = parts.header.clone();
        let account = Account::from_parts(parts)
            .map_err(PgError::corrupt)?
            .with_value_limit(crate::codec::BIGINT_MAX);
        Ok(Work {
            account,
            before,
            audit_head,
            audit_head_before: audit_head,
            hold_details,
            lots_changed: BTreeSet::new(),
            holds_changed: BTreeSet::new(),
            refunds_changed: BTreeSet::new(),
            entries: Vec::new(),
            events: Vec::new(),
            sealed: Vec::new(),
            records: Vec::new(),
            known,
            targets: targets.into_iter().map(|e| (e.seq, e)).collect(),
        })
    }

    /// Answers `request`: replays its key's record if the key is known, otherwise applies
    /// it and records the result (success or domain failure) under the key.
    pub(super) fn apply(
        &mut self,
        request: &Request,
        now: Timestamp,
    ) -> Result<Receipt, LedgerError> {
        if let Some(record) = self.known.get(&request.key) {
            return record.replay(request);
        }
        let target = request.command.refers_to().and_then(|seq| {
            self.targets
                .get(&seq)
                .or_else(|| self.entries.iter().find(|e| e.seq == seq))
                .cloned()
        });
        let applied = self.account.apply(request, now, target.as_ref());
        let result = receipt(applied.result.clone());
        self.absorb(applied);
        let record = IdempotencyRecord {
            command: request.command.clone(),
            result: result.clone(),
            // Retention counts from when it was applied, also for an import dated in the
            // past.
            at: result.as_ref().map_or(now, |r| r.at.max(now)),
        };
        self.known.insert(request.key.clone(), record.clone());
        self.records.push((request.key.clone(), record));
        result
    }

    /// Applies the expiries due by `now`.
    pub(super) fn expire(&mut self, now: Timestamp) {
        let applied = self.account.expire_due(now);
        self.absorb(applied);
    }

    fn absorb(&mut self, applied: Applied) {
        for id in &applied.holds_changed {
            if let Some(h) = self.account.hold(*id) {
                self.hold_details.insert(*id, h.clone());
            }
        }
        self.lots_changed.extend(applied.lots_changed);
        self.holds_changed.extend(applied.holds_changed);
        self.refunds_changed.extend(applied.refund_changed);
        self.entries.extend(applied.entries);
        self.events.extend(applied.events);
    }
}
