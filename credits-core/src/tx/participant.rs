//! The [`Participant`] contract: a resource that takes part in transactions.

use std::fmt;

use async_trait::async_trait;

use super::TxId;
use crate::LedgerError;

/// A resource that takes part in transactions (the ledger's holds are one; a host
/// application implements it for its own resources).
#[async_trait]
pub trait Participant: Send + Sync + fmt::Debug {
    /// The name branches use to refer to it (unique within a manager).
    fn name(&self) -> &str;
    /// Phase one: make the branch's work durable and ready to commit, or refuse with an
    /// error (which aborts the transaction). May be repeated.
    async fn prepare(&self, tx: TxId, payload: &str) -> Result<(), LedgerError>;
    /// Phase two, commit. Must be idempotent.
    async fn commit(&self, tx: TxId, payload: &str) -> Result<(), LedgerError>;
    /// Phase two, abort: undo whatever `prepare` did, if anything. Must be idempotent and
    /// accept a branch that was never prepared.
    async fn abort(&self, tx: TxId, payload: &str) -> Result<(), LedgerError>;
}
