//! The vocabulary of two-phase commit: ids, decisions, phases and records. Nothing here
//! depends on the ledger's error type, so [`LedgerError`](crate::LedgerError) can name these
//! types.

use std::fmt;
use std::sync::Arc;

use metered_clock::Timestamp;
use serde::{Deserialize, Serialize};

/// A transaction's number, assigned by the [`TxLog`](super::TxLog).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TxId(u64);

impl TxId {
    /// Wraps a raw number (as read back from storage).
    #[must_use]
    pub const fn new(raw: u64) -> Self {
        TxId(raw)
    }
    /// The raw number.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tx-{}", self.0)
    }
}

/// One branch of a transaction: the transaction and the branch's position in it (0 first).
/// A hold prepared for a branch is owned by it ([`Command::Prepare`](crate::Command)):
/// only that branch's decision resolves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BranchId {
    /// The transaction.
    pub tx: TxId,
    /// The branch's position in the transaction (enlistment order, from 0).
    pub index: u32,
}

impl BranchId {
    /// Branch `index` of `tx`.
    #[must_use]
    pub const fn new(tx: TxId, index: u32) -> Self {
        BranchId { tx, index }
    }
}

impl fmt::Display for BranchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tx, self.index)
    }
}

/// The coordinator's decision, logged before phase two.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxDecision {
    /// Every branch prepared: commit all.
    Commit,
    /// Abort all.
    Abort,
}

/// One participant's part of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Branch {
    /// The participant's registered name.
    pub participant: Arc<str>,
    /// What the participant should do, in its own format.
    pub payload: Arc<str>,
    /// What the participant answered to phase one (its record of the prepared work, e.g.
    /// the hold it took), logged with the transaction's `Prepared` phase; `None` before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepared: Option<Arc<str>>,
}

impl Branch {
    /// A branch not yet prepared.
    #[must_use]
    pub fn new(participant: impl Into<Arc<str>>, payload: impl Into<Arc<str>>) -> Self {
        Branch {
            participant: participant.into(),
            payload: payload.into(),
            prepared: None,
        }
    }
}

/// Where a transaction stands in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxPhase {
    /// Begun; branches may be enlisted.
    Active,
    /// Every branch prepared.
    Prepared,
    /// Decided; phase two may not have reached every branch yet.
    Decided(TxDecision),
    /// Phase two reached every branch.
    Finished(TxDecision),
}

impl TxPhase {
    /// The phase's stable name, as a durable log stores it: `active`, `prepared`,
    /// `committing`, `aborting`, `committed`, `aborted`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            TxPhase::Active => "active",
            TxPhase::Prepared => "prepared",
            TxPhase::Decided(TxDecision::Commit) => "committing",
            TxPhase::Decided(TxDecision::Abort) => "aborting",
            TxPhase::Finished(TxDecision::Commit) => "committed",
            TxPhase::Finished(TxDecision::Abort) => "aborted",
        }
    }

    /// Reads a name written by [`as_str`](Self::as_str) back (`None` for any other text).
    ///
    /// ```
    /// use credits_core::tx::{TxDecision, TxPhase};
    ///
    /// let phase = TxPhase::Decided(TxDecision::Commit);
    /// assert_eq!(TxPhase::parse(phase.as_str()), Some(phase));
    /// assert_eq!(TxPhase::parse("done"), None);
    /// ```
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "active" => TxPhase::Active,
            "prepared" => TxPhase::Prepared,
            "committing" => TxPhase::Decided(TxDecision::Commit),
            "aborting" => TxPhase::Decided(TxDecision::Abort),
            "committed" => TxPhase::Finished(TxDecision::Commit),
            "aborted" => TxPhase::Finished(TxDecision::Abort),
            _ => return None,
        })
    }
}

impl fmt::Display for TxPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step a caller asked of a transaction (named in
/// [`LedgerError::TransactionState`](crate::LedgerError::TransactionState) when the
/// transaction's phase does not allow it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TxAction {
    /// Add a branch.
    Enlist,
    /// Phase one.
    Prepare,
    /// Decide to commit (and run phase two).
    Commit,
    /// Decide to abort (and run phase two).
    Abort,
    /// Record a decision in the log.
    Decide,
    /// Mark phase two complete.
    Finish,
}

impl TxAction {
    /// The action's stable name (`enlist`, `prepare`, `commit`, `abort`, `decide`, `finish`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            TxAction::Enlist => "enlist",
            TxAction::Prepare => "prepare",
            TxAction::Commit => "commit",
            TxAction::Abort => "abort",
            TxAction::Decide => "decide",
            TxAction::Finish => "finish",
        }
    }
}

impl fmt::Display for TxAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transaction as the log knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxRecord {
    /// Its id.
    pub id: TxId,
    /// After this, an undecided transaction is aborted.
    pub deadline: Timestamp,
    /// Its branches, in enlistment order.
    pub branches: Vec<Branch>,
    /// Where it stands.
    pub phase: TxPhase,
}

/// How a transaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[must_use]
pub enum TxOutcome {
    /// Every branch committed.
    Committed,
    /// Every branch aborted.
    Aborted,
}

/// What [`TransactionManager::recover`](super::TransactionManager::recover) did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxRecoveryReport {
    /// Transactions driven to commit.
    pub committed: usize,
    /// Transactions driven (or decided) to abort.
    pub aborted: usize,
    /// Undecided transactions still within their deadline (left alone).
    pub pending: usize,
    /// Transactions whose phase two failed again (retry later).
    pub failed: usize,
    /// Of those, transactions past their deadline: in doubt, holding resources (also the
    /// `credits_tx_in_doubt` gauge and a warning per transaction).
    pub in_doubt: usize,
    /// Prepared work of finished transactions that a participant still held and recovery
    /// resolved (a phase-one call that landed after its transaction was decided).
    pub orphans_resolved: usize,
    /// Prepared work whose transaction this log does not know (left alone: it may belong
    /// to another coordinator's log).
    pub orphans_unknown: usize,
    /// Records the log's own housekeeping touched ([`TxLog::maintain`](super::TxLog::maintain)).
    pub maintained: u64,
}
