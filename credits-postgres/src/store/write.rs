//! Persisting a transaction: seal the audit entries of the new journal entries (queued for
//! the sequencer in the same statement), gather
//! every tenant's change set ([`Applied`](credits_core::backend::Applied), accumulated in
//! [`Work`]) and its idempotency records into the row builders, and send every write
//! statement and `COMMIT` in one round trip.

use std::collections::BTreeMap;
use std::pin::Pin;

use credits_core::TenantId;
use futures::future::try_join_all;

use super::PgLedgerStore;
use super::rows::{
    AccountRows, AuditRows, EntryRows, EventRows, GoneLotRows, HoldRows, LotRows, Params,
    RecordRows, RefundRows,
};
use super::work::Work;
use crate::pool::TxConn;
use crate::{Isolation, LedgerAudit, PgError, sql};

/// Every row a transaction writes, by statement.
#[derive(Default)]
struct Changes<'a> {
    accounts: AccountRows<'a>,
    lots: LotRows<'a>,
    gone: GoneLotRows<'a>,
    holds: HoldRows<'a>,
    entries: EntryRows<'a>,
    events: EventRows<'a>,
    refunds: RefundRows<'a>,
    records: RecordRows<'a>,
    audit: AuditRows<'a>,
}

impl PgLedgerStore {
    /// Writes every change set and commits, in one round trip.
    pub(super) async fn write(
        &self,
        conn: &TxConn,
        works: &mut BTreeMap<TenantId, Work>,
    ) -> Result<(), PgError> {
        if let Some(audit) = &self.audit {
            for w in works.values_mut() {
                seal(audit, w)?;
            }
        }
        let mut changes = Changes::default();
        changes.audit.backlog_max = self.audit_backlog_max;
        for (tenant, w) in works.iter() {
            changes.push(tenant.as_str(), w)?;
        }
        let commit = if self.db.isolation == Isolation::Serializable {
            "COMMIT; SELECT pg_advisory_unlock_all()"
        } else {
            "COMMIT"
        };
        changes.send(conn, commit).await
    }
}

/// Seals an audit entry for each of `w`'s new journal entries into the tenant's chain.
fn seal(audit: &LedgerAudit, w: &mut Work) -> Result<(), PgError> {
    let (sealed, head) = audit
        .seal(w.account.tenant(), w.audit_head, &w.entries)
        .map_err(PgError::corrupt)?;
    w.sealed = sealed;
    w.audit_head = head;
    Ok(())
}

impl<'a> Changes<'a> {
    /// Adds what `w` changed for `tenant`.
    fn push(&mut self, tenant: &'a str, w: &'a Work) -> Result<(), PgError> {
        for (e, sealed) in w.entries.iter().zip(&w.sealed) {
            self.audit.push(e, sealed)?;
        }
        let header = w.account.header();
        if *header != w.before || w.audit_head != w.audit_head_before {
            self.accounts
                .push(header, w.account.next_deadline(), w.audit_head)?;
        }
        for key in &w.lots_changed {
            match w.account.lot(key) {
                Some(remaining) => self.lots.push(tenant, key, remaining)?,
                None => self.gone.push(tenant, key.id)?,
            }
        }
        for id in &w.holds_changed {
            let Some(hold) = w.hold_details.get(id) else {
                return Err(PgError::corrupt(format_args!(
                    "hold {id} changed but is unknown"
                )));
            };
            let resolution = match w.account.hold(*id) {
                Some(_) => None,
                None => Some(
                    w.account
                        .resolution(*id)
                        .ok_or_else(|| PgError::corrupt(format_args!("hold {id} vanished")))?,
                ),
            };
            self.holds.push(tenant, hold, resolution)?;
        }
        for seq in &w.refunds_changed {
            self.refunds.push(tenant, *seq, w.account.refunded(*seq))?;
        }
        for e in &w.entries {
            self.entries.push(e)?;
        }
        for e in &w.events {
            self.events.push(e)?;
        }
        for (key, record) in &w.records {
            self.records.push(tenant, key, record)?;
        }
        Ok(())
    }

    /// Sends every non-empty statement, then `commit`, pipelined, and waits for them all.
    async fn send(&self, conn: &TxConn, commit: &'static str) -> Result<(), PgError> {
        let c = conn.client();
        // Order matters: journal entries before the refund tallies that reference them.
        let statements: [(&str, Params<'_>, bool); 9] = [
            (
                sql::UPDATE_ACCOUNTS,
                self.accounts.params(),
                self.accounts.is_empty(),
            ),
            (sql::UPSERT_LOTS, self.lots.params(), self.lots.is_empty()),
            (sql::DELETE_LOTS, self.gone.params(), self.gone.is_empty()),
            (
                sql::UPSERT_HOLDS,
                self.holds.params(),
                self.holds.is_empty(),
            ),
            (
                &sql::INSERT_ENTRIES,
                self.entries.params(),
                self.entries.is_empty(),
            ),
            (
                sql::INSERT_EVENTS,
                self.events.params(),
                self.events.is_empty(),
            ),
            (
                sql::UPSERT_REFUNDS,
                self.refunds.params(),
                self.refunds.is_empty(),
            ),
            (
                sql::INSERT_RECORDS,
                self.records.params(),
                self.records.is_empty(),
            ),
            (
                sql::INSERT_AUDIT,
                self.audit.params(),
                self.audit.is_empty(),
            ),
        ];
        let mut prepared = Vec::with_capacity(statements.len());
        for (statement, _, _) in &statements {
            prepared.push(c.prepare_cached(statement).await?);
        }
        let mut pending: Vec<Pin<Box<dyn Future<Output = _> + Send + '_>>> = Vec::new();
        for ((_, params, empty), statement) in statements.iter().zip(&prepared) {
            if !empty {
                pending.push(Box::pin(c.execute(statement, params)));
            }
        }
        pending.push(Box::pin(async move {
            c.batch_execute(commit).await.map(|()| 0)
        }));
        try_join_all(pending).await?;
        Ok(())
    }
}
