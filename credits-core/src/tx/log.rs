//! The durable record of transactions: the [`TxLog`] trait and the in-memory [`MemoryTxLog`].

use std::collections::BTreeSet;

use hashbrown::HashMap;
use std::fmt;
use std::sync::Arc;

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
    /// Adds a branch (only while `Active`) and returns its index (0 for the first).
    async fn enlist(&self, tx: TxId, branch: Branch) -> Result<u32, LedgerError>;
    /// Moves `Active` to `Prepared`, recording what each branch answered to phase one
    /// (`prepared[i]` for branch `i`). Succeeds only for the branch set that was prepared:
    /// [`LedgerError::TransactionState`] if the transaction now has another number of
    /// branches (one was enlisted while the others prepared). Repeating it with the same
    /// answers once `Prepared` succeeds.
    async fn mark_prepared(&self, tx: TxId, prepared: Vec<Arc<str>>) -> Result<(), LedgerError>;
    /// Records a decision. The first decision wins: returns the decision now on record
    /// (which differs from `decision` if another one was recorded first). A commit needs
    /// the `Prepared` phase ([`LedgerError::TransactionState`] otherwise).
    async fn decide(&self, tx: TxId, decision: TxDecision) -> Result<TxDecision, LedgerError>;
    /// [`mark_prepared`](Self::mark_prepared) then [`decide`](Self::decide) to commit, as one
    /// write where the log can (what a commit of an `Active` transaction does once every
    /// branch prepared): the same answers and refusals as the two calls. The default makes
    /// the two calls.
    async fn prepare_and_commit(
        &self,
        tx: TxId,
        prepared: Vec<Arc<str>>,
    ) -> Result<TxDecision, LedgerError> {
        self.mark_prepared(tx, prepared).await?;
        self.decide(tx, TxDecision::Commit).await
    }
    /// Marks phase two complete.
    async fn finish(&self, tx: TxId) -> Result<(), LedgerError>;
    /// One transaction.
    async fn get(&self, tx: TxId) -> Result<Option<TxRecord>, LedgerError>;
    /// Every transaction not yet `Finished`, oldest first.
    async fn unfinished(&self) -> Result<Vec<TxRecord>, LedgerError>;
    /// Housekeeping a durable log needs besides the coordinator's recovery (for example
    /// PostgreSQL's clean-up of transactions whose coordinator stalled); returns how many
    /// records it touched. [`TransactionManager::recover`](super::TransactionManager::recover)
    /// calls it first. The default does nothing.
    async fn maintain(&self, now: Timestamp) -> Result<u64, LedgerError> {
        let _ = now;
        Ok(0)
    }
}

/// The in-memory [`TxLog`] (decisions survive only as long as the process; use a durable log
/// for crash recovery across restarts).
///
/// Transaction ids are unique across logs and processes, not only within one log: each log
/// starts counting at a random point of the 63-bit id space, so a new log (after a restart,
/// in another process) never reuses the ids — and so the idempotency keys — of an earlier
/// one that wrote to the same ledger.
#[derive(Debug)]
pub struct MemoryTxLog {
    inner: Mutex<MemoryTxLogInner>,
}

#[derive(Debug)]
struct MemoryTxLogInner {
    next: u64,
    records: HashMap<TxId, TxRecord>,
    /// The transactions not yet `Finished`, oldest first: what recovery reads, without
    /// walking the whole history.
    unfinished: BTreeSet<TxId>,
}

impl Default for MemoryTxLog {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryTxLog {
    /// An empty log whose ids start at a random point (see the type's docs).
    #[must_use]
    pub fn new() -> Self {
        // Room for 2^32 transactions above the start, below 2^63 (PostgreSQL's bigint).
        let start = rand::random_range(1..(1u64 << 63) - (1u64 << 32));
        Self::starting_at(start)
    }

    /// An empty log whose first transaction id is `first` (at least 1), for deterministic
    /// runs (a simulator, a test). Ids are unique only as far as the caller makes the
    /// starting points distinct.
    #[must_use]
    pub fn starting_at(first: u64) -> Self {
        MemoryTxLog {
            inner: Mutex::new(MemoryTxLogInner {
                next: first.max(1),
                records: HashMap::new(),
                unfinished: BTreeSet::new(),
            }),
        }
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
        let id = TxId::new(inner.next);
        inner.next = inner
            .next
            .checked_add(1)
            .ok_or(LedgerError::AmountOverflow)?;
        inner.records.insert(
            id,
            TxRecord {
                id,
                deadline,
                branches: Vec::new(),
                phase: TxPhase::Active,
            },
        );
        inner.unfinished.insert(id);
        Ok(id)
    }

    async fn enlist(&self, tx: TxId, branch: Branch) -> Result<u32, LedgerError> {
        self.with(tx, |r| match r.phase {
            TxPhase::Active => {
                let index =
                    u32::try_from(r.branches.len()).map_err(|_| LedgerError::AmountOverflow)?;
                r.branches.push(branch);
                Ok(index)
            }
            phase => Err(LedgerError::TransactionState {
                tx,
                state: phase,
                action: TxAction::Enlist,
            }),
        })
    }

    async fn mark_prepared(&self, tx: TxId, prepared: Vec<Arc<str>>) -> Result<(), LedgerError> {
        self.with(tx, |r| mark_prepared_in(r, prepared))
    }

    async fn decide(&self, tx: TxId, decision: TxDecision) -> Result<TxDecision, LedgerError> {
        self.with(tx, |r| decide_in(r, decision))
    }

    async fn prepare_and_commit(
        &self,
        tx: TxId,
        prepared: Vec<Arc<str>>,
    ) -> Result<TxDecision, LedgerError> {
        // One lock, one lookup: the two steps on the same record.
        self.with(tx, |r| {
            mark_prepared_in(r, prepared)?;
            decide_in(r, TxDecision::Commit)
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
        })?;
        self.inner.lock().unfinished.remove(&tx);
        Ok(())
    }

    async fn get(&self, tx: TxId) -> Result<Option<TxRecord>, LedgerError> {
        Ok(self.inner.lock().records.get(&tx).cloned())
    }

    async fn unfinished(&self) -> Result<Vec<TxRecord>, LedgerError> {
        let inner = self.inner.lock();
        Ok(inner
            .unfinished
            .iter()
            .filter_map(|id| inner.records.get(id).cloned())
            .collect())
    }

    /// Decides to abort every undecided transaction past its deadline by `now`, as
    /// PostgreSQL's `recover_stalled_transactions(now)` does (the coordinator's recovery
    /// then tells the participants); returns how many.
    async fn maintain(&self, now: Timestamp) -> Result<u64, LedgerError> {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let mut aborted = 0;
        for id in &inner.unfinished {
            if let Some(r) = inner.records.get_mut(id)
                && matches!(r.phase, TxPhase::Active | TxPhase::Prepared)
                && r.deadline < now
            {
                r.phase = TxPhase::Decided(TxDecision::Abort);
                aborted += 1;
            }
        }
        Ok(aborted)
    }
}

/// [`TxLog::mark_prepared`] on one record.
fn mark_prepared_in(r: &mut TxRecord, prepared: Vec<Arc<str>>) -> Result<(), LedgerError> {
    match r.phase {
        TxPhase::Active if r.branches.len() == prepared.len() => {
            for (branch, answer) in r.branches.iter_mut().zip(prepared) {
                branch.prepared = Some(answer);
            }
            r.phase = TxPhase::Prepared;
            Ok(())
        }
        TxPhase::Prepared
            if r.branches.len() == prepared.len()
                && r.branches
                    .iter()
                    .zip(&prepared)
                    .all(|(b, p)| b.prepared.as_deref() == Some(&**p)) =>
        {
            Ok(())
        }
        phase => Err(LedgerError::TransactionState {
            tx: r.id,
            state: phase,
            action: TxAction::Prepare,
        }),
    }
}

/// [`TxLog::decide`] on one record.
fn decide_in(r: &mut TxRecord, decision: TxDecision) -> Result<TxDecision, LedgerError> {
    match (r.phase, decision) {
        (TxPhase::Prepared, _) | (TxPhase::Active, TxDecision::Abort) => {
            r.phase = TxPhase::Decided(decision);
            Ok(decision)
        }
        (TxPhase::Decided(d) | TxPhase::Finished(d), _) => Ok(d),
        (phase @ TxPhase::Active, TxDecision::Commit) => Err(LedgerError::TransactionState {
            tx: r.id,
            state: phase,
            action: TxAction::Decide,
        }),
    }
}
