//! The [`Participant`] contract: a resource that takes part in transactions.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use super::BranchId;
use crate::LedgerError;

/// A branch whose participant still holds resources for it, as the participant itself
/// records (found by [`Participant::in_flight`], reconciled against the log by
/// [`TransactionManager::recover`](super::TransactionManager::recover)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InFlight {
    /// The branch.
    pub branch: BranchId,
    /// The participant's record of the prepared work (what `prepare` answered).
    pub prepared: String,
}

/// A resource that takes part in transactions (the ledger's holds are one; a host
/// application implements it for its own resources).
///
/// Every step names the branch it is about ([`BranchId`]: the transaction and the branch's
/// index), so two branches of one participant in one transaction never share work.
#[async_trait]
pub trait Participant: Send + Sync + fmt::Debug {
    /// The name branches use to refer to it (unique within a manager).
    fn name(&self) -> &str;

    /// Phase one: make the branch's work durable and ready to commit, and answer with the
    /// participant's record of it (the coordinator logs the answers of every branch with the
    /// `Prepared` phase and hands it back in phase two), or refuse with an error (which
    /// aborts the transaction). May be repeated: a repeat answers the same record.
    async fn prepare(&self, branch: BranchId, payload: &str) -> Result<Arc<str>, LedgerError>;

    /// Phase two, commit, with what phase one answered. Must be idempotent.
    async fn commit(
        &self,
        branch: BranchId,
        payload: &str,
        prepared: &str,
    ) -> Result<(), LedgerError>;

    /// Phase two, abort: undo whatever `prepare` did, if anything. `prepared` is phase one's
    /// answer when the coordinator logged it; `None` when it never learnt it (phase one was
    /// refused, failed or interrupted), in which case the participant must find the
    /// branch's work from its own durable state. Must be idempotent and accept a branch
    /// that was never prepared.
    async fn abort(
        &self,
        branch: BranchId,
        payload: &str,
        prepared: Option<&str>,
    ) -> Result<(), LedgerError>;

    /// Branches for which this participant still holds prepared work, from its own durable
    /// state (at most `limit`, after `after` in [`BranchId`] order). Recovery resolves those
    /// whose transaction the log says is over. The default reports none.
    async fn in_flight(
        &self,
        after: Option<BranchId>,
        limit: usize,
    ) -> Result<Vec<InFlight>, LedgerError> {
        let _ = (after, limit);
        Ok(Vec::new())
    }

    /// The participant's own housekeeping, run first by
    /// [`TransactionManager::recover`](super::TransactionManager::recover) (the ledger
    /// applies its due expiries). The default does nothing.
    async fn recover(&self) -> Result<(), LedgerError> {
        Ok(())
    }
}
