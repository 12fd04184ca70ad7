//! [`FaultyTxLog`]: a [`TxLog`] that fails on command.

use std::sync::Arc;

use async_trait::async_trait;
use metered_clock::Timestamp;

use super::faults::Faults;
use crate::LedgerError;
use crate::tx::{Branch, TxDecision, TxId, TxLog, TxRecord};

/// A [`TxLog`] that delegates to `inner` and consults a [`Faults`] controller on every call
/// (writes count down the armed schedule; reads fail only while crashed or down).
#[derive(Debug)]
pub struct FaultyTxLog<L: ?Sized> {
    faults: Arc<Faults>,
    inner: Arc<L>,
}

impl<L: ?Sized> FaultyTxLog<L> {
    /// Wraps `inner`, failing as `faults` says.
    pub fn new(inner: Arc<L>, faults: Arc<Faults>) -> Self {
        FaultyTxLog { faults, inner }
    }
}

#[async_trait]
impl<L: TxLog + ?Sized> TxLog for FaultyTxLog<L> {
    async fn begin(&self, deadline: Timestamp) -> Result<TxId, LedgerError> {
        self.faults.run(self.inner.begin(deadline)).await
    }
    async fn enlist(&self, tx: TxId, branch: Branch) -> Result<u32, LedgerError> {
        self.faults.run(self.inner.enlist(tx, branch)).await
    }
    async fn mark_prepared(&self, tx: TxId, prepared: Vec<Arc<str>>) -> Result<(), LedgerError> {
        self.faults
            .run(self.inner.mark_prepared(tx, prepared))
            .await
    }
    async fn decide(&self, tx: TxId, decision: TxDecision) -> Result<TxDecision, LedgerError> {
        self.faults.run(self.inner.decide(tx, decision)).await
    }
    async fn prepare_and_commit(
        &self,
        tx: TxId,
        prepared: Vec<Arc<str>>,
    ) -> Result<TxDecision, LedgerError> {
        self.faults
            .run(self.inner.prepare_and_commit(tx, prepared))
            .await
    }
    async fn finish(&self, tx: TxId) -> Result<(), LedgerError> {
        self.faults.run(self.inner.finish(tx)).await
    }
    async fn get(&self, tx: TxId) -> Result<Option<TxRecord>, LedgerError> {
        self.faults.run_read(self.inner.get(tx)).await
    }
    async fn unfinished(&self) -> Result<Vec<TxRecord>, LedgerError> {
        self.faults.run_read(self.inner.unfinished()).await
    }
    async fn maintain(&self, now: Timestamp) -> Result<u64, LedgerError> {
        self.faults.run(self.inner.maintain(now)).await
    }
}
