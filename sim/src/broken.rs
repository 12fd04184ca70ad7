//! Deliberately broken stores: the simulator must catch each of them within the CI seeds
//! (that is what shows its checks have teeth).

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use credits_core::store::{Page, PageRequest, SweepReport};
use credits_core::{
    Balance, Command, HoldId, HoldState, IdempotencyKey, IdempotencyRecord, LedgerError,
    LedgerStore, Outcome, Request, TenantId, TenantSettings, Totals,
};
use metered_clock::Timestamp;
use parking_lot::Mutex;

/// Which bug a [`BrokenStore`] has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bug {
    /// Commits and cancels of a hold past its expiry are applied as if it had not expired
    /// (the store stamps them just before the hold's expiry): the hold-expiry check is
    /// skipped.
    SkipHoldExpiry,
    /// A request whose key was seen before is applied again under a fresh key instead of
    /// being replayed: a retry double-applies.
    DoubleApplyRetry,
}

impl Bug {
    /// Parses `skip-hold-expiry` / `double-apply-retry`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Bug> {
        match s {
            "skip-hold-expiry" => Some(Bug::SkipHoldExpiry),
            "double-apply-retry" => Some(Bug::DoubleApplyRetry),
            _ => None,
        }
    }
}

/// A [`LedgerStore`] wrapper with one deliberate [`Bug`].
#[derive(Debug)]
pub struct BrokenStore {
    inner: Arc<dyn LedgerStore>,
    bug: Bug,
    seen: Mutex<BTreeSet<(TenantId, IdempotencyKey)>>,
}

impl BrokenStore {
    /// Wraps `inner` with `bug`.
    pub fn new(inner: Arc<dyn LedgerStore>, bug: Bug) -> Self {
        BrokenStore {
            inner,
            bug,
            seen: Mutex::new(BTreeSet::new()),
        }
    }

    async fn rewrite(&self, request: &Request, now: Timestamp) -> (Request, Timestamp) {
        match self.bug {
            Bug::SkipHoldExpiry => {
                let hold = match request.command {
                    Command::Commit { hold, .. } | Command::Cancel { hold } => hold,
                    _ => return (request.clone(), now),
                };
                match self.inner.hold(&request.tenant, hold).await {
                    Ok(HoldState::Active { expires_at, .. }) if expires_at <= now => {
                        let before = Timestamp::from_unix_millis(
                            expires_at.as_unix_millis().saturating_sub(1),
                        );
                        (request.clone(), before)
                    }
                    _ => (request.clone(), now),
                }
            }
            Bug::DoubleApplyRetry => {
                let id = (request.tenant.clone(), request.key.clone());
                let again = !self.seen.lock().insert(id);
                if again {
                    let key = IdempotencyKey::new(format!("{}~again", request.key))
                        .unwrap_or_else(|_| request.key.clone());
                    (
                        Request::new(request.tenant.clone(), key, request.command.clone()),
                        now,
                    )
                } else {
                    (request.clone(), now)
                }
            }
        }
    }
}

#[async_trait]
impl LedgerStore for BrokenStore {
    async fn create_tenant(
        &self,
        tenant: &TenantId,
        settings: TenantSettings,
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        self.inner.create_tenant(tenant, settings, now).await
    }
    async fn apply(&self, request: &Request, now: Timestamp) -> Result<Outcome, LedgerError> {
        let (request, now) = self.rewrite(request, now).await;
        self.inner.apply(&request, now).await
    }
    async fn apply_batch(
        &self,
        requests: &[Request],
        now: Timestamp,
    ) -> Result<Vec<Outcome>, LedgerError> {
        self.inner.apply_batch(requests, now).await
    }
    async fn idempotency_record(
        &self,
        tenant: &TenantId,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>, LedgerError> {
        self.inner.idempotency_record(tenant, key).await
    }
    async fn balance(&self, tenant: &TenantId, now: Timestamp) -> Result<Balance, LedgerError> {
        self.inner.balance(tenant, now).await
    }
    async fn balance_at(&self, tenant: &TenantId, at: Timestamp) -> Result<Balance, LedgerError> {
        self.inner.balance_at(tenant, at).await
    }
    async fn history(&self, tenant: &TenantId, page: PageRequest) -> Result<Page, LedgerError> {
        self.inner.history(tenant, page).await
    }
    async fn hold(&self, tenant: &TenantId, hold: HoldId) -> Result<HoldState, LedgerError> {
        self.inner.hold(tenant, hold).await
    }
    async fn sweep(&self, now: Timestamp, tenants_max: usize) -> Result<SweepReport, LedgerError> {
        self.inner.sweep(now, tenants_max).await
    }
    async fn totals(&self, tenant: &TenantId) -> Result<Totals, LedgerError> {
        self.inner.totals(tenant).await
    }
    async fn totals_all(&self) -> Result<Totals, LedgerError> {
        self.inner.totals_all().await
    }
}
