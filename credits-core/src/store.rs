//! The storage boundary: [`LedgerStore`] and the types it speaks.

use std::fmt;

use async_trait::async_trait;
use metered_clock::Timestamp;
use serde::{Deserialize, Serialize};

use crate::tx::BranchId;
use crate::{
    Amount, Balance, Batch, EntrySeq, EventPage, EventSeq, HoldId, HoldState, IdempotencyKey,
    IdempotencyRecord, JournalEntry, LedgerError, Receipt, Request, TenantId, TenantSettings,
    Totals,
};

/// The most journal entries one history page may hold.
pub const PAGE_LEN_MAX: usize = 1_000;

/// Where a history page starts and how long it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    /// Return entries after this one (`None`: from the first).
    pub after: Option<EntrySeq>,
    /// At most this many entries (clamped to `1..=PAGE_LEN_MAX`).
    pub limit: usize,
}

impl PageRequest {
    /// The first page of `limit` entries.
    #[must_use]
    pub fn first(limit: usize) -> Self {
        PageRequest { after: None, limit }
    }

    /// The limit clamped to `1..=PAGE_LEN_MAX`.
    #[must_use]
    pub fn clamped_limit(&self) -> usize {
        self.limit.clamp(1, PAGE_LEN_MAX)
    }
}

/// One page of a tenant's journal, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// The entries.
    pub entries: Vec<JournalEntry>,
    /// Pass as `after` to get the next page; `None` when this is the last.
    pub next: Option<EntrySeq>,
}

/// A hold owned by a transaction branch that is still active
/// ([`LedgerStore::prepared_holds`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedHold {
    /// The owner.
    pub branch: BranchId,
    /// Whose credits.
    pub tenant: TenantId,
    /// The hold.
    pub hold: HoldId,
    /// What it holds.
    pub amount: Amount,
}

/// What one sweep step did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepReport {
    /// Tenants whose due expiries were applied.
    pub tenants: usize,
    /// Holds that expired.
    pub holds_expired: usize,
    /// Lots that expired.
    pub lots_expired: usize,
    /// Whether tenants with due expiries remain (call again).
    pub more: bool,
}

/// Durable storage for the ledger. Object-safe: use it as `Arc<dyn LedgerStore>`.
///
/// # Contract (checked by `credits_core::conformance`)
///
/// A backend keeps, per tenant, the [`Account`](crate::backend::Account) state (header row, live lots,
/// active and resolved holds, refunded amounts), the journal and the idempotency records.
/// Every mutation follows the same recipe, in **one atomic write per call**:
///
/// 1. lock the tenant(s) — several tenants always in ascending [`TenantId`] order;
/// 2. for each request: if its key has an
///    [`IdempotencyRecord`](crate::IdempotencyRecord), answer with
///    [`replay`](crate::IdempotencyRecord::replay) and apply nothing; otherwise rebuild the
///    [`Account`](crate::backend::Account) ([`Account::from_parts`](crate::backend::Account::from_parts)), run
///    [`Account::apply`](crate::backend::Account::apply) (the pure rules every backend shares), and
///    record the idempotency record `(command, result)`;
/// 3. write the [`Applied`](crate::backend::Applied) change set (header, changed lots and holds,
///    refund amounts, journal entries), the idempotency records and, when the backend is
///    audited, one sealed audit entry per journal entry (`credits_core::audit`, feature
///    `audit`: the tenant's chain continued in the same step, queued for the sequencer);
///    commit. A storage failure leaves nothing behind.
///
/// Domain failures are results, not storage errors: they are recorded under the key and
/// returned as `Err` — the same `Err` on every replay.
#[async_trait]
pub trait LedgerStore: Send + Sync + fmt::Debug {
    /// Creates a tenant.
    ///
    /// # Errors
    /// [`LedgerError::TenantExists`] if it exists; storage failures.
    async fn create_tenant(
        &self,
        tenant: &TenantId,
        settings: TenantSettings,
        now: Timestamp,
    ) -> Result<(), LedgerError>;

    /// Applies one request (or replays its idempotency key).
    ///
    /// # Errors
    /// [`LedgerError::UnknownTenant`]; the domain failure of the command (also on replay);
    /// [`LedgerError::IdempotencyConflict`]; storage failures.
    async fn apply(&self, request: &Request, now: Timestamp) -> Result<Receipt, LedgerError>;

    /// Applies several requests, possibly on several tenants, all or nothing, in order (a
    /// later request sees the effect of earlier ones). Requests whose keys were used before
    /// are replayed; a replayed failure fails the batch. On failure nothing is written, not
    /// even idempotency records: a failed batch can be retried as a whole. The [`Batch`]
    /// type has already refused empty, oversized and duplicate-key batches.
    ///
    /// # Errors
    /// [`LedgerError::BatchRejected`] naming the failing request; storage failures.
    async fn apply_batch(&self, batch: &Batch, now: Timestamp)
    -> Result<Vec<Receipt>, LedgerError>;

    /// The idempotency record of a tenant's key, if remembered (a read: applies nothing).
    ///
    /// # Errors
    /// [`LedgerError::UnknownTenant`]; storage failures.
    async fn idempotency_record(
        &self,
        tenant: &TenantId,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>, LedgerError>;

    /// The current balance, after applying expiries due by `now`.
    ///
    /// # Errors
    /// [`LedgerError::UnknownTenant`]; storage failures.
    async fn balance(&self, tenant: &TenantId, now: Timestamp) -> Result<Balance, LedgerError>;

    /// The balance right after the last entry at or before `at` (zero before the first).
    /// Expiries not yet applied by then are not included.
    ///
    /// # Errors
    /// [`LedgerError::UnknownTenant`]; storage failures.
    async fn balance_at(&self, tenant: &TenantId, at: Timestamp) -> Result<Balance, LedgerError>;

    /// A page of the tenant's journal.
    ///
    /// # Errors
    /// [`LedgerError::UnknownTenant`]; storage failures.
    async fn history(&self, tenant: &TenantId, page: PageRequest) -> Result<Page, LedgerError>;

    /// What is known about a hold (without applying expiries: an active hold past its
    /// expiry is reported active until touched or swept).
    ///
    /// # Errors
    /// [`LedgerError::UnknownTenant`], [`LedgerError::UnknownHold`]; storage failures.
    async fn hold(&self, tenant: &TenantId, hold: HoldId) -> Result<HoldState, LedgerError>;

    /// Applies the expiries due by `now` of at most `tenants_max` tenants (one atomic write
    /// per tenant). Call until `more` is false to sweep everything.
    ///
    /// # Errors
    /// Storage failures (tenants already swept stay swept).
    async fn sweep(&self, now: Timestamp, tenants_max: usize) -> Result<SweepReport, LedgerError>;

    /// Counters and balance of one tenant, with `lots`/`holds` recomputed from live state.
    ///
    /// # Errors
    /// [`LedgerError::UnknownTenant`]; storage failures.
    async fn totals(&self, tenant: &TenantId) -> Result<Totals, LedgerError>;

    /// The sum of [`totals`](Self::totals) over every tenant.
    ///
    /// # Errors
    /// [`LedgerError::AmountOverflow`] if a sum overflows; storage failures.
    async fn totals_all(&self) -> Result<Totals, LedgerError>;

    /// Forgets the idempotency records of requests applied before `older_than`, on every
    /// tenant (what a retention policy does; the memory store also forgets on its own past
    /// its window). A request retried after its record is forgotten is a new request.
    /// Returns how many records were removed.
    ///
    /// # Errors
    /// Storage failures.
    async fn forget_keys(&self, older_than: Timestamp) -> Result<u64, LedgerError>;

    /// The active holds owned by transaction branches, in [`BranchId`] order, after `after`
    /// (`None`: from the first), at most `limit` (clamped to `1..=PAGE_LEN_MAX`): what
    /// transaction recovery reconciles against its log.
    ///
    /// # Errors
    /// Storage failures.
    async fn prepared_holds(
        &self,
        after: Option<BranchId>,
        limit: usize,
    ) -> Result<Vec<PreparedHold>, LedgerError>;

    /// A page of the tenant's balance events ([`BalanceEvent`](crate::BalanceEvent)), in
    /// order, after `after` (`None`: from the first), at most `limit` (clamped to
    /// `1..=PAGE_LEN_MAX`). Events are written with the change that emitted them, so a page
    /// never shows an event of an uncommitted change and never misses one before the last.
    ///
    /// # Errors
    /// [`LedgerError::UnknownTenant`]; storage failures.
    async fn events(
        &self,
        tenant: &TenantId,
        after: Option<EventSeq>,
        limit: usize,
    ) -> Result<EventPage, LedgerError>;

    /// The tenant's durably stored event delivery cursor: the last event a
    /// [`EventDispatcher`](crate::EventDispatcher) delivered (`None`: none yet).
    ///
    /// # Errors
    /// [`LedgerError::UnknownTenant`]; storage failures.
    async fn event_cursor(&self, tenant: &TenantId) -> Result<Option<EventSeq>, LedgerError>;

    /// Moves the tenant's delivery cursor forward to `delivered` (never backward; never past
    /// the tenant's last event: a larger number stops there), durably.
    ///
    /// # Errors
    /// [`LedgerError::UnknownTenant`]; storage failures.
    async fn advance_event_cursor(
        &self,
        tenant: &TenantId,
        delivered: EventSeq,
    ) -> Result<(), LedgerError>;

    /// Tenants whose delivery cursor is behind their last event, in [`TenantId`] order,
    /// after `after` (`None`: from the first), at most `limit` (clamped to
    /// `1..=PAGE_LEN_MAX`).
    ///
    /// # Errors
    /// Storage failures.
    async fn tenants_with_pending_events(
        &self,
        after: Option<TenantId>,
        limit: usize,
    ) -> Result<Vec<TenantId>, LedgerError>;

    /// The largest value this backend stores in a counter, an amount or an expiry (Unix
    /// milliseconds): `u64::MAX` unless it says otherwise (PostgreSQL's `bigint`:
    /// `i64::MAX`). A change that would pass it is refused with
    /// [`LedgerError::AmountOverflow`] before it reaches storage, like an overflow.
    fn value_limit(&self) -> u64 {
        u64::MAX
    }
}
