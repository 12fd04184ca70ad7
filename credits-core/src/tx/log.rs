//! The durable record of transactions: the [`TxLog`] trait and the in-memory [`MemoryTxLog`].

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use metered_clock::Timestamp;
use parking_lot::Mutex;

use super::{Branch, TxAction, TxDecision, TxId, TxPhase, TxRecord};
use crate::LedgerError;

/// Durable record of transactions. A decision must be durable when
/// [`decide`](TxLog::decide) returns: that is what makes recovery after a crash correct.
#[async_trait]
pub trait TxLog: Send + Sync + fmt::Debug {
    /// Logs a new transaction and returns its id.
    async fn begin(&self, deadline: Timestamp) -> Result<TxId, LedgerError>;
    /// Adds a branch (only while `Active`).
    async fn enlist(&self, tx: TxId, branch: Branch) -> Result<(), LedgerError>;
    /// Moves `Active` to `Prepared`.
    async fn mark_prepared(&self, tx: TxId) -> Result<(), LedgerError>;
    /// Records a decision. The first decision wins: returns the decision now on record
    /// (which differs from `decision` if another one was recorded first).
    async fn decide(&self, tx: TxId, decision: TxDecision) -> Result<TxDecision, LedgerError>;
    /// Marks phase two complete.
    async fn finish(&self, tx: TxId) -> Result<(), LedgerError>;
    /// One transaction.
    async fn get(&self, tx: TxId) -> Result<Option<TxRecord>, LedgerError>;
    /// Every transaction not yet `Finished`, oldest first.
    async fn unfinished(&self) -> Result<Vec<TxRecord>, LedgerError>;
}

/// The in-memory [`TxLog`] (decisions survive only as long as the process; use a durable log
/// for crash recovery across restarts).
#[derive(Debug, Default)]
pub struct MemoryTxLog {
    inner: Mutex<MemoryTxLogInner>,
}

#[derive(Debug, Default)]
struct MemoryTxLogInner {
    next: u64,
    records: BTreeMap<TxId, TxRecord>,
}

impl MemoryTxLog {
    /// An empty log.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(
        &self,
        tx: TxId,
        f: impl FnOnce(&mut TxRecord) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let mut inner = self.inner.lock();
        let record = inner
            .records
            .get_mut(&tx)
            .ok_or(LedgerError::UnknownTransaction(tx))?;
        f(record)
    }
}

#[async_trait]
impl TxLog for MemoryTxLog {
    async fn begin(&self, deadline: Timestamp) -> Result<TxId, LedgerError> {
        let mut inner = self.inner.lock();
        inner.next += 1;
        let id = TxId::new(inner.next);
        inner.records.insert(
            id,
            TxRecord {
                id,
                deadline,
                branches: Vec::new(),
                phase: TxPhase::Active,
            },
        );
        Ok(id)
    }

    async fn enlist(&self, tx: TxId, branch: Branch) -> Result<(), LedgerError> {
        self.with(tx, |r| match r.phase {
            TxPhase::Active => {
                r.branches.push(branch);
                Ok(())
            }
            phase => Err(LedgerError::TransactionState {
                tx,
                state: phase,
                action: TxAction::Enlist,
            }),
        })
    }

    async fn mark_prepared(&self, tx: TxId) -> Result<(), LedgerError> {
        self.with(tx, |r| match r.phase {
            TxPhase::Active | TxPhase::Prepared => {
                r.phase = TxPhase::Prepared;
                Ok(())
            }
            phase => Err(LedgerError::TransactionState {
                tx,
                state: phase,
                action: TxAction::Prepare,
            }),
        })
    }

    async fn decide(&self, tx: TxId, decision: TxDecision) -> Result<TxDecision, LedgerError> {
        self.with(tx, |r| match r.phase {
            TxPhase::Active | TxPhase::Prepared => {
                r.phase = TxPhase::Decided(decision);
                Ok(decision)
            }
            TxPhase::Decided(d) | TxPhase::Finished(d) => Ok(d),
        })
    }

    async fn finish(&self, tx: TxId) -> Result<(), LedgerError> {
        self.with(tx, |r| match r.phase {
            TxPhase::Decided(d) | TxPhase::Finished(d) => {
                r.phase = TxPhase::Finished(d);
                Ok(())
            }
            phase => Err(LedgerError::TransactionState {
                tx,
                state: phase,
                action: TxAction::Finish,
            }),
        })
    }

    async fn get(&self, tx: TxId) -> Result<Option<TxRecord>, LedgerError> {
        Ok(self.inner.lock().records.get(&tx).cloned())
    }

    async fn unfinished(&self) -> Result<Vec<TxRecord>, LedgerError> {
        Ok(self
            .inner
            .lock()
            .records
            .values()
            .filter(|r| !matches!(r.phase, TxPhase::Finished(_)))
            .cloned()
            .collect())
    }
}
