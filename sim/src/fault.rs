//! Fault injection: a [`LedgerStore`] and a [`TxLog`] wrapper that fail on command.
//!
//! The simulator arms a [`Faults`] controller before an operation: "the `n`-th storage
//! mutation from now fails, before or after the inner store applied it, and maybe the
//! process dies with it". A dead process fails every later call (reads included) until the
//! simulator restarts it, so a crash in the middle of a multi-call operation (a two-phase
//! commit between its decision and phase two, say) leaves exactly what the durable
//! backend had at that moment.

use std::sync::Arc;

use async_trait::async_trait;
use credits_core::store::{Page, PageRequest, SweepReport};
use credits_core::tx::{Branch, Decision, TxId, TxLog, TxRecord};
use credits_core::{
    Balance, HoldId, HoldState, IdempotencyKey, IdempotencyRecord, LedgerError, LedgerStore,
    Outcome, Request, StorageError, TenantId, TenantSettings, Totals,
};
use metered_clock::Timestamp;
use parking_lot::Mutex;

/// What an injected fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The call fails without reaching the backend (nothing happened).
    Before,
    /// The backend applies the call, then the acknowledgement is lost.
    After,
    /// Like [`Before`](Self::Before), and the process dies.
    CrashBefore,
    /// Like [`After`](Self::After), and the process dies.
    CrashAfter,
}

impl FaultKind {
    /// Whether the process dies with this fault.
    #[must_use]
    pub fn crashes(self) -> bool {
        matches!(self, FaultKind::CrashBefore | FaultKind::CrashAfter)
    }

    fn applies(self) -> bool {
        matches!(self, FaultKind::After | FaultKind::CrashAfter)
    }
}

#[derive(Debug, Default)]
struct FaultState {
    /// (mutations still to pass, then this fault).
    armed: Option<(u32, FaultKind)>,
    crashed: bool,
    injected: u64,
}

/// The shared fault controller of one simulated process.
#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<FaultState>,
}

/// What one call should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gate {
    Pass,
    FailBefore,
    FailAfter,
}

impl Faults {
    /// A controller with nothing armed.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// After `skip` mutations pass, the next one gets `kind`.
    pub fn arm(&self, skip: u32, kind: FaultKind) {
        self.state.lock().armed = Some((skip, kind));
    }

    /// Removes an armed fault that did not fire.
    pub fn disarm(&self) {
        self.state.lock().armed = None;
    }

    /// Whether the process is dead.
    #[must_use]
    pub fn crashed(&self) -> bool {
        self.state.lock().crashed
    }

    /// Brings a dead process back (the simulator reopens everything from durable state).
    pub fn restart(&self) {
        let mut s = self.state.lock();
        s.crashed = false;
        s.armed = None;
    }

    /// Faults injected so far.
    #[must_use]
    pub fn injected(&self) -> u64 {
        self.state.lock().injected
    }

    fn read(&self) -> Result<(), LedgerError> {
        if self.state.lock().crashed {
            return Err(dead());
        }
        Ok(())
    }

    fn mutation(&self) -> Result<Gate, LedgerError> {
        let mut s = self.state.lock();
        if s.crashed {
            return Err(dead());
        }
        let Some((skip, kind)) = s.armed else {
            return Ok(Gate::Pass);
        };
        if skip > 0 {
            s.armed = Some((skip - 1, kind));
            return Ok(Gate::Pass);
        }
        s.armed = None;
        s.injected += 1;
        if kind.crashes() {
            s.crashed = true;
        }
        Ok(if kind.applies() {
            Gate::FailAfter
        } else {
            Gate::FailBefore
        })
    }

    async fn run<T>(
        &self,
        call: impl Future<Output = Result<T, LedgerError>>,
    ) -> Result<T, LedgerError> {
        match self.mutation()? {
            Gate::Pass => call.await,
            Gate::FailBefore => Err(injected()),
            Gate::FailAfter => {
                let _lost = call.await;
                Err(injected())
            }
        }
    }
}

fn injected() -> LedgerError {
    LedgerError::Storage(StorageError::new("injected fault", true))
}

fn dead() -> LedgerError {
    LedgerError::Storage(StorageError::new("process crashed", true))
}

/// Whether an error is one this module injected (or a call into a dead process).
#[must_use]
pub fn is_injected(e: &LedgerError) -> bool {
    e.is_storage()
}

/// A [`LedgerStore`] that consults a [`Faults`] controller on every call.
#[derive(Debug)]
pub struct FaultyStore<S: ?Sized> {
    inner: Arc<S>,
    faults: Arc<Faults>,
}

impl<S: ?Sized> FaultyStore<S> {
    /// Wraps `inner`.
    pub fn new(inner: Arc<S>, faults: Arc<Faults>) -> Self {
        FaultyStore { inner, faults }
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
    async fn apply(&self, request: &Request, now: Timestamp) -> Result<Outcome, LedgerError> {
        self.faults.run(self.inner.apply(request, now)).await
    }
    async fn apply_batch(
        &self,
        requests: &[Request],
        now: Timestamp,
    ) -> Result<Vec<Outcome>, LedgerError> {
        self.faults.run(self.inner.apply_batch(requests, now)).await
    }
    async fn idempotency_record(
        &self,
        tenant: &TenantId,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>, LedgerError> {
        self.faults.read()?;
        self.inner.idempotency_record(tenant, key).await
    }
    async fn balance(&self, tenant: &TenantId, now: Timestamp) -> Result<Balance, LedgerError> {
        self.faults.run(self.inner.balance(tenant, now)).await
    }
    async fn balance_at(&self, tenant: &TenantId, at: Timestamp) -> Result<Balance, LedgerError> {
        self.faults.read()?;
        self.inner.balance_at(tenant, at).await
    }
    async fn history(&self, tenant: &TenantId, page: PageRequest) -> Result<Page, LedgerError> {
        self.faults.read()?;
        self.inner.history(tenant, page).await
    }
    async fn hold(&self, tenant: &TenantId, hold: HoldId) -> Result<HoldState, LedgerError> {
        self.faults.read()?;
        self.inner.hold(tenant, hold).await
    }
    async fn sweep(&self, now: Timestamp, tenants_max: usize) -> Result<SweepReport, LedgerError> {
        self.faults.run(self.inner.sweep(now, tenants_max)).await
    }
    async fn totals(&self, tenant: &TenantId) -> Result<Totals, LedgerError> {
        self.faults.read()?;
        self.inner.totals(tenant).await
    }
    async fn totals_all(&self) -> Result<Totals, LedgerError> {
        self.faults.read()?;
        self.inner.totals_all().await
    }
}

/// A [`TxLog`] that consults a [`Faults`] controller on every call.
#[derive(Debug)]
pub struct FaultyTxLog<L: ?Sized> {
    inner: Arc<L>,
    faults: Arc<Faults>,
}

impl<L: ?Sized> FaultyTxLog<L> {
    /// Wraps `inner`.
    pub fn new(inner: Arc<L>, faults: Arc<Faults>) -> Self {
        FaultyTxLog { inner, faults }
    }
}

#[async_trait]
impl<L: TxLog + ?Sized> TxLog for FaultyTxLog<L> {
    async fn begin(&self, deadline: Timestamp) -> Result<TxId, LedgerError> {
        self.faults.run(self.inner.begin(deadline)).await
    }
    async fn enlist(&self, tx: TxId, branch: Branch) -> Result<(), LedgerError> {
        self.faults.run(self.inner.enlist(tx, branch)).await
    }
    async fn mark_prepared(&self, tx: TxId) -> Result<(), LedgerError> {
        self.faults.run(self.inner.mark_prepared(tx)).await
    }
    async fn decide(&self, tx: TxId, decision: Decision) -> Result<Decision, LedgerError> {
        self.faults.run(self.inner.decide(tx, decision)).await
    }
    async fn finish(&self, tx: TxId) -> Result<(), LedgerError> {
        self.faults.run(self.inner.finish(tx)).await
    }
    async fn get(&self, tx: TxId) -> Result<Option<TxRecord>, LedgerError> {
        self.faults.read()?;
        self.inner.get(tx).await
    }
    async fn unfinished(&self) -> Result<Vec<TxRecord>, LedgerError> {
        self.faults.read()?;
        self.inner.unfinished().await
    }
}
