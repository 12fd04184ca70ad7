//! [`FaultyStore`]: the one fault-injecting, delegating [`LedgerStore`].

use std::sync::Arc;

use async_trait::async_trait;
use metered_clock::Timestamp;

use super::bug::{Bug, BugState};
use super::faults::Faults;
use crate::store::{Page, PageRequest, PreparedHold, SweepReport};
use crate::tx::BranchId;
use crate::{
    Balance, Batch, EventPage, EventSeq, HoldId, HoldState, IdempotencyKey, IdempotencyRecord,
    LedgerError, LedgerStore, Receipt, Request, TenantId, TenantSettings, Totals,
};

/// A [`LedgerStore`] that delegates to `inner` and consults a [`Faults`] controller on
/// every call; optionally it carries one deliberate [`Bug`].
#[derive(Debug)]
pub struct FaultyStore<S: ?Sized> {
    faults: Arc<Faults>,
    bug: Option<(Bug, BugState)>,
    inner: Arc<S>,
}

impl<S: ?Sized> FaultyStore<S> {
    /// Wraps `inner`, failing as `faults` says.
    pub fn new(inner: Arc<S>, faults: Arc<Faults>) -> Self {
        FaultyStore {
            faults,
            bug: None,
            inner,
        }
    }

    /// The same store with a deliberate defect (see [`Bug`]).
    #[must_use]
    pub fn with_bug(mut self, bug: Bug) -> Self {
        self.bug = Some((bug, BugState::default()));
        self
    }

    /// The wrapped store.
    #[must_use]
    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    /// The controller.
    #[must_use]
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }
}

#[async_trait]
impl<S: LedgerStore + ?Sized> LedgerStore for FaultyStore<S> {
    async fn create_tenant(
        &self,
        tenant: &TenantId,
        settings: TenantSettings,
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        self.faults
            .run(self.inner.create_tenant(tenant, settings, now))
            .await
    }

    async fn apply(&self, request: &Request, now: Timestamp) -> Result<Receipt, LedgerError> {
        match &self.bug {
            None => self.faults.run(self.inner.apply(request, now)).await,
            Some((bug, state)) => {
                let (request, now) = state.rewrite(*bug, &*self.inner, request, now).await?;
                self.faults.run(self.inner.apply(&request, now)).await
            }
        }
    }

    async fn apply_batch(
        &self,
        batch: &Batch,
        now: Timestamp,
    ) -> Result<Vec<Receipt>, LedgerError> {
        self.faults.run(self.inner.apply_batch(batch, now)).await
    }

    async fn idempotency_record(
        &self,
        tenant: &TenantId,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>, LedgerError> {
        self.faults
            .run_read(self.inner.idempotency_record(tenant, key))
            .await
    }

    async fn balance(&self, tenant: &TenantId, now: Timestamp) -> Result<Balance, LedgerError> {
        // A balance applies due expiries: a mutation.
        self.faults.run(self.inner.balance(tenant, now)).await
    }

    async fn balance_at(&self, tenant: &TenantId, at: Timestamp) -> Result<Balance, LedgerError> {
        self.faults
            .run_read(self.inner.balance_at(tenant, at))
            .await
    }

    async fn history(&self, tenant: &TenantId, page: PageRequest) -> Result<Page, LedgerError> {
        let mut page = self
            .faults
            .run_read(self.inner.history(tenant, page))
            .await?;
        if matches!(self.bug, Some((Bug::DropJournalRow, _))) {
            page.entries.retain(|e| e.seq.get() != Bug::DROPPED_ROW);
        }
        Ok(page)
    }

    async fn hold(&self, tenant: &TenantId, hold: HoldId) -> Result<HoldState, LedgerError> {
        self.faults.run_read(self.inner.hold(tenant, hold)).await
    }

    async fn sweep(&self, now: Timestamp, tenants_max: usize) -> Result<SweepReport, LedgerError> {
        self.faults.run(self.inner.sweep(now, tenants_max)).await
    }

    async fn totals(&self, tenant: &TenantId) -> Result<Totals, LedgerError> {
        self.faults.run_read(self.inner.totals(tenant)).await
    }

    async fn totals_all(&self) -> Result<Totals, LedgerError> {
        self.faults.run_read(self.inner.totals_all()).await
    }

    async fn forget_keys(&self, older_than: Timestamp) -> Result<u64, LedgerError> {
        self.faults.run(self.inner.forget_keys(older_than)).await
    }

    async fn prepared_holds(
        &self,
        after: Option<BranchId>,
        limit: usize,
    ) -> Result<Vec<PreparedHold>, LedgerError> {
        self.faults
            .run_read(self.inner.prepared_holds(after, limit))
            .await
    }

    async fn events(
        &self,
        tenant: &TenantId,
        after: Option<EventSeq>,
        limit: usize,
    ) -> Result<EventPage, LedgerError> {
        self.faults
            .run_read(self.inner.events(tenant, after, limit))
            .await
    }

    async fn event_cursor(&self, tenant: &TenantId) -> Result<Option<EventSeq>, LedgerError> {
        self.faults.run_read(self.inner.event_cursor(tenant)).await
    }

    async fn advance_event_cursor(
        &self,
        tenant: &TenantId,
        delivered: EventSeq,
    ) -> Result<(), LedgerError> {
        self.faults
            .run(self.inner.advance_event_cursor(tenant, delivered))
            .await
    }

    async fn tenants_with_pending_events(
        &self,
        after: Option<TenantId>,
        limit: usize,
    ) -> Result<Vec<TenantId>, LedgerError> {
        self.faults
            .run_read(self.inner.tenants_with_pending_events(after, limit))
            .await
    }

    fn value_limit(&self) -> u64 {
        self.inner.value_limit()
    }
}
