//! The row builders: each collects the rows of one write statement as column arrays (one
//! `Vec` per column, all the same length), the parameters of an `INSERT … SELECT * FROM
//! unnest(…)` or `UPDATE … FROM unnest(…)` in `sql.rs`, in its column order.
//!
//! Every value is checked into `bigint` range here ([`PgError::OutOfRange`]) before
//! anything is sent.

use audit_chain::{SealedEntry, StreamHead};
use credits_core::backend::{AccountHeader, Hold, LotKey};
use credits_core::{
    Amount, BalanceEvent, EntrySeq, HoldId, HoldResolution, IdempotencyKey, IdempotencyRecord,
    JournalEntry, LotId, Reason,
};
use metered_clock::Timestamp;
use tokio_postgres::types::ToSql;

use crate::PgError;
use crate::codec::{self, i};

/// A statement's parameters.
pub(super) type Params<'p> = Vec<&'p (dyn ToSql + Sync)>;

/// `sql::UPDATE_ACCOUNTS`: changed `accounts` rows.
#[derive(Default)]
pub(super) struct AccountRows<'a> {
    tenant: Vec<&'a str>,
    values: [Vec<i64>; 11],
    next_deadline: Vec<Option<i64>>,
    audit_seq: Vec<i64>,
    audit_hash: Vec<Vec<u8>>,
    status: Vec<i16>,
    next_event: Vec<i64>,
}

impl<'a> AccountRows<'a> {
    pub(super) fn push(
        &mut self,
        h: &'a AccountHeader,
        next_deadline: Option<Timestamp>,
        audit: StreamHead,
    ) -> Result<(), PgError> {
        let t = &h.totals;
        let values = [
            t.granted.units(),
            t.refunded.units(),
            t.consumed.units(),
            t.expired.units(),
            t.available.units(),
            t.held.units(),
            t.overdrawn.units(),
            h.next_entry,
            h.next_lot,
            h.next_hold,
            h.last_at.as_unix_millis(),
        ];
        for (column, v) in self.values.iter_mut().zip(values) {
            column.push(i(v, "account counter")?);
        }
        self.tenant.push(h.tenant.as_str());
        self.next_deadline.push(
            next_deadline
                .map(|d| i(d.as_unix_millis(), "deadline"))
                .transpose()?,
        );
        self.audit_seq.push(i(audit.next_seq, "audit sequence")?);
        self.audit_hash.push(audit.last_hash.to_vec());
        self.status.push(codec::status_code(h.status));
        self.next_event.push(i(h.next_event, "next event")?);
        Ok(())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.tenant.is_empty()
    }

    pub(super) fn params(&self) -> Params<'_> {
        let mut p: Params<'_> = vec![&self.tenant];
        for v in &self.values {
            p.push(v);
        }
        p.push(&self.next_deadline);
        p.push(&self.audit_seq);
        p.push(&self.audit_hash);
        p.push(&self.status);
        p.push(&self.next_event);
        p
    }
}

/// `sql::UPSERT_LOTS`: lots created or drawn from.
#[derive(Default)]
pub(super) struct LotRows<'a> {
    tenant: Vec<&'a str>,
    id: Vec<i64>,
    expires_at: Vec<Option<i64>>,
    priority: Vec<i32>,
    remaining: Vec<i64>,
}

impl<'a> LotRows<'a> {
    pub(super) fn push(
        &mut self,
        tenant: &'a str,
        key: &LotKey,
        remaining: Amount,
    ) -> Result<(), PgError> {
        self.tenant.push(tenant);
        self.id.push(i(key.id.get(), "lot id")?);
        self.expires_at.push(codec::expiry(key.expires_at)?);
        self.priority.push(i32::from(key.priority));
        self.remaining.push(i(remaining.units(), "lot remaining")?);
        Ok(())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.tenant.is_empty()
    }

    pub(super) fn params(&self) -> Params<'_> {
        vec![
            &self.tenant,
            &self.id,
            &self.expires_at,
            &self.priority,
            &self.remaining,
        ]
    }
}

/// `sql::DELETE_LOTS`: lots used up or expired.
#[derive(Default)]
pub(super) struct GoneLotRows<'a> {
    tenant: Vec<&'a str>,
    id: Vec<i64>,
}

impl<'a> GoneLotRows<'a> {
    pub(super) fn push(&mut self, tenant: &'a str, id: LotId) -> Result<(), PgError> {
        self.tenant.push(tenant);
        self.id.push(i(id.get(), "lot id")?);
        Ok(())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.tenant.is_empty()
    }

    pub(super) fn params(&self) -> Params<'_> {
        vec![&self.tenant, &self.id]
    }
}

/// `sql::UPSERT_HOLDS`: holds created or resolved.
#[derive(Default)]
pub(super) struct HoldRows<'a> {
    tenant: Vec<&'a str>,
    id: Vec<i64>,
    amount: Vec<i64>,
    expires_at: Vec<i64>,
    state: Vec<&'static str>,
    committed: Vec<Option<i64>>,
    draws: Vec<String>,
    owner_tx: Vec<Option<i64>>,
    owner_branch: Vec<Option<i32>>,
}

impl<'a> HoldRows<'a> {
    /// `hold` as it stands: active (`resolution` is `None`) or resolved.
    pub(super) fn push(
        &mut self,
        tenant: &'a str,
        hold: &Hold,
        resolution: Option<HoldResolution>,
    ) -> Result<(), PgError> {
        let (state, committed) = codec::hold_state(resolution)?;
        self.tenant.push(tenant);
        self.id.push(i(hold.id().get(), "hold id")?);
        self.amount.push(i(hold.amount().units(), "hold amount")?);
        self.expires_at.push(codec::hold_expiry(hold.expires_at())?);
        self.state.push(state);
        self.committed.push(committed);
        self.draws.push(codec::draws_text(hold.draws())?);
        let (tx, branch) = codec::owner_columns(hold.owner())?;
        self.owner_tx.push(tx);
        self.owner_branch.push(branch);
        Ok(())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.tenant.is_empty()
    }

    pub(super) fn params(&self) -> Params<'_> {
        vec![
            &self.tenant,
            &self.id,
            &self.amount,
            &self.expires_at,
            &self.state,
            &self.committed,
            &self.draws,
            &self.owner_tx,
            &self.owner_branch,
        ]
    }
}

/// `sql::INSERT_ENTRIES`: new journal entries.
#[derive(Default)]
pub(super) struct EntryRows<'a> {
    tenant: Vec<&'a str>,
    seq: Vec<i64>,
    at: Vec<i64>,
    kind: Vec<i16>,
    amounts: [Vec<i64>; 7],
    hold: Vec<Option<i64>>,
    lot: Vec<Option<i64>>,
    refers_to: Vec<Option<i64>>,
    key: Vec<Option<&'a str>>,
    reason: Vec<Option<&'a str>>,
}

impl<'a> EntryRows<'a> {
    pub(super) fn push(&mut self, e: &'a JournalEntry) -> Result<(), PgError> {
        let opt = |v: Option<u64>| v.map(|v| i(v, "entry reference")).transpose();
        self.tenant.push(e.tenant.as_str());
        self.seq.push(i(e.seq.get(), "entry seq")?);
        self.at.push(i(e.at.as_unix_millis(), "entry time")?);
        self.kind.push(codec::kind_code(e.kind));
        let amounts = [
            e.amount,
            e.before.available,
            e.before.held,
            e.before.overdrawn,
            e.after.available,
            e.after.held,
            e.after.overdrawn,
        ];
        for (column, a) in self.amounts.iter_mut().zip(amounts) {
            column.push(i(a.units(), "entry amount")?);
        }
        self.hold.push(opt(e.hold.map(HoldId::get))?);
        self.lot.push(opt(e.lot.map(LotId::get))?);
        self.refers_to.push(opt(e.refers_to.map(EntrySeq::get))?);
        self.key.push(e.key.as_ref().map(IdempotencyKey::as_str));
        self.reason.push(e.reason.as_ref().map(Reason::as_str));
        Ok(())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.tenant.is_empty()
    }

    pub(super) fn params(&self) -> Params<'_> {
        let mut p: Params<'_> = vec![&self.tenant, &self.seq, &self.at, &self.kind];
        for v in &self.amounts {
            p.push(v);
        }
        p.push(&self.hold);
        p.push(&self.lot);
        p.push(&self.refers_to);
        p.push(&self.key);
        p.push(&self.reason);
        p
    }
}

/// `sql::INSERT_EVENTS`: balance events emitted by the change.
#[derive(Default)]
pub(super) struct EventRows<'a> {
    tenant: Vec<&'a str>,
    seq: Vec<i64>,
    at: Vec<i64>,
    threshold: Vec<i64>,
    entry: Vec<i64>,
    available: Vec<i64>,
}

impl<'a> EventRows<'a> {
    pub(super) fn push(&mut self, e: &'a BalanceEvent) -> Result<(), PgError> {
        self.tenant.push(e.tenant.as_str());
        self.seq.push(i(e.seq.get(), "event seq")?);
        self.at.push(i(e.at.as_unix_millis(), "event time")?);
        self.threshold.push(i(e.threshold.units(), "threshold")?);
        self.entry.push(i(e.entry.get(), "event entry")?);
        self.available
            .push(i(e.available.units(), "event available")?);
        Ok(())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.tenant.is_empty()
    }

    pub(super) fn params(&self) -> Params<'_> {
        vec![
            &self.tenant,
            &self.seq,
            &self.at,
            &self.threshold,
            &self.entry,
            &self.available,
        ]
    }
}

/// `sql::UPSERT_REFUNDS`: how much of each refunded entry has been given back.
#[derive(Default)]
pub(super) struct RefundRows<'a> {
    tenant: Vec<&'a str>,
    seq: Vec<i64>,
    refunded: Vec<i64>,
}

impl<'a> RefundRows<'a> {
    pub(super) fn push(
        &mut self,
        tenant: &'a str,
        entry: EntrySeq,
        refunded: Amount,
    ) -> Result<(), PgError> {
        self.tenant.push(tenant);
        self.seq.push(i(entry.get(), "entry")?);
        self.refunded.push(i(refunded.units(), "refunded")?);
        Ok(())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.tenant.is_empty()
    }

    pub(super) fn params(&self) -> Params<'_> {
        vec![&self.tenant, &self.seq, &self.refunded]
    }
}

/// `sql::INSERT_RECORDS`: new idempotency records.
#[derive(Default)]
pub(super) struct RecordRows<'a> {
    tenant: Vec<&'a str>,
    key: Vec<&'a str>,
    at: Vec<i64>,
    record: Vec<String>,
}

impl<'a> RecordRows<'a> {
    pub(super) fn push(
        &mut self,
        tenant: &'a str,
        key: &'a IdempotencyKey,
        record: &IdempotencyRecord,
    ) -> Result<(), PgError> {
        self.tenant.push(tenant);
        self.key.push(key.as_str());
        self.at.push(i(record.at.as_unix_millis(), "record time")?);
        self.record.push(codec::record_text(record)?);
        Ok(())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.tenant.is_empty()
    }

    pub(super) fn params(&self) -> Params<'_> {
        vec![&self.tenant, &self.key, &self.at, &self.record]
    }
}

/// `sql::INSERT_AUDIT`: sealed audit entries of new journal entries.
#[derive(Default)]
pub(super) struct AuditRows<'a> {
    stream: Vec<&'a str>,
    seq: Vec<i64>,
    journal_seq: Vec<i64>,
    at: Vec<i64>,
    hash: Vec<Vec<u8>>,
    record: Vec<Vec<u8>>,
    /// Refuse the change while this many entries or more wait for the sequencer.
    pub(super) backlog_max: i64,
}

impl<'a> AuditRows<'a> {
    pub(super) fn push(
        &mut self,
        e: &'a JournalEntry,
        sealed: &'a SealedEntry,
    ) -> Result<(), PgError> {
        let mut bytes = Vec::with_capacity(256);
        sealed.encode(&mut bytes);
        self.stream.push(sealed.stream());
        self.seq.push(i(sealed.seq(), "audit sequence")?);
        self.journal_seq.push(i(e.seq.get(), "entry seq")?);
        self.at.push(i(e.at.as_unix_millis(), "entry time")?);
        self.hash.push(sealed.entry_hash().to_vec());
        self.record.push(bytes);
        Ok(())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.stream.is_empty()
    }

    pub(super) fn params(&self) -> Params<'_> {
        vec![
            &self.stream,
            &self.seq,
            &self.journal_seq,
            &self.at,
            &self.hash,
            &self.record,
            &self.backlog_max,
        ]
    }
}
