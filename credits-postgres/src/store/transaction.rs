//! One store transaction: lock and load the tenants ([`load`](super::load)), apply the
//! operations in Rust ([`apply_ops`], pure), write the changes and `COMMIT`
//! ([`write`](super::write)). [`PgLedgerStore::execute`] runs it through the pool, which
//! retries serialization failures.

use std::collections::BTreeMap;

use credits_core::{Balance, EntryKind, LedgerError, Receipt, Request, StorageError, TenantId};
use deadpool_postgres::Object;
use hashbrown::HashMap;
use metered_clock::Timestamp;

use super::PgLedgerStore;
use super::work::Work;
use crate::PgError;
use crate::pool::TxConn;

/// One unit of work inside a store transaction.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op<'a> {
    /// Apply (or replay) a request.
    Apply(&'a Request),
    /// Apply the expiries due by `now`.
    Expire(&'a TenantId),
}

impl Op<'_> {
    pub(super) fn tenant(&self) -> &TenantId {
        match self {
            Op::Apply(r) => &r.tenant,
            Op::Expire(t) => t,
        }
    }
}

/// Whether one failing request fails the whole transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// All or nothing ([`LedgerStore::apply_batch`](credits_core::LedgerStore::apply_batch)).
    Atomic,
    /// Each request has its own result (single requests, sweeps, group commit).
    Independent,
}

/// What a transaction did.
#[derive(Debug, Default)]
pub(crate) struct Done {
    /// One per operation, in order: `Ok(None)` for an expiry pass.
    pub(crate) results: Vec<Result<Option<Receipt>, LedgerError>>,
    /// Every locked tenant's balance after the transaction.
    pub(crate) balances: HashMap<TenantId, Balance>,
    pub(crate) holds_expired: usize,
    pub(crate) lots_expired: usize,
}

/// The receipt of an operation that must have one (an [`Op::Apply`]).
pub(crate) fn receipt(r: Result<Option<Receipt>, LedgerError>) -> Result<Receipt, LedgerError> {
    r.and_then(|o| {
        o.ok_or_else(|| {
            LedgerError::Storage(StorageError::permanent("a command produced no outcome"))
        })
    })
}

impl PgLedgerStore {
    /// Runs `ops` in one SQL transaction (retried as a whole on serialization failures).
    ///
    /// # Errors
    /// Storage failures; in [`Mode::Atomic`], the first failing operation as
    /// [`LedgerError::BatchRejected`] (nothing written).
    pub(crate) async fn execute(
        &self,
        ops: &[Op<'_>],
        now: Timestamp,
        mode: Mode,
    ) -> Result<Done, LedgerError> {
        let done = self
            .db
            .run("transaction", |conn| self.attempt(conn, ops, now, mode))
            .await;
        metrics::counter!("credits_postgres_transactions_total",
            "outcome" => if done.is_ok() { "ok" } else { "error" })
        .increment(1);
        done?
    }

    /// One try of one transaction. The outer error is a storage failure (retried by the
    /// caller when it is a serialization failure); the inner one a batch's definite answer.
    async fn attempt(
        &self,
        conn: Object,
        ops: &[Op<'_>],
        now: Timestamp,
        mode: Mode,
    ) -> Result<Result<Done, LedgerError>, PgError> {
        let conn = TxConn::new(conn);
        let mut works = match self.load(&conn, ops).await {
            Ok(w) => w,
            Err(e) => {
                conn.rollback().await;
                return Err(e);
            }
        };
        let done = match apply_ops(&mut works, ops, now, mode) {
            Ok(done) => done,
            Err(rejected) => {
                conn.rollback().await;
                return Ok(Err(rejected));
            }
        };
        // On failure the server rolled back (an error aborts the transaction, and COMMIT
        // was sent behind the writes); the connection is closed to be sure.
        self.write(&conn, &mut works).await?;
        conn.finish();
        Ok(Ok(done))
    }
}

/// Applies `ops`, in order, to the loaded tenants.
///
/// # Errors
/// In [`Mode::Atomic`], the first failing operation as [`LedgerError::BatchRejected`]: the
/// transaction must be rolled back. In [`Mode::Independent`] every failure is that
/// operation's result.
fn apply_ops(
    works: &mut BTreeMap<TenantId, Work>,
    ops: &[Op<'_>],
    now: Timestamp,
    mode: Mode,
) -> Result<Done, LedgerError> {
    let mut done = Done::default();
    for (index, op) in ops.iter().enumerate() {
        let result = match works.get_mut(op.tenant()) {
            None => Err(LedgerError::UnknownTenant(op.tenant().clone())),
            Some(w) => match op {
                Op::Expire(_) => {
                    w.expire(now);
                    Ok(None)
                }
                Op::Apply(request) => w.apply(request, now).map(Some),
            },
        };
        if mode == Mode::Atomic
            && let Err(e) = result
        {
            return Err(LedgerError::BatchRejected {
                index,
                source: Box::new(e),
            });
        }
        done.results.push(result);
    }
    for (tenant, w) in works.iter() {
        done.balances.insert(tenant.clone(), w.account.balance());
        for e in &w.entries {
            match e.kind {
                EntryKind::HoldExpired => done.holds_expired += 1,
                EntryKind::LotExpired => done.lots_expired += 1,
                _ => {}
            }
        }
    }
    Ok(done)
}
