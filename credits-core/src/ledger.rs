//! [`Ledger`]: the front door, over any [`LedgerStore`] and [`Clock`].

use std::sync::Arc;
use std::time::Duration;

use metered_clock::{Clock, Timestamp};

use crate::store::{LedgerStore, Page, PageRequest, SweepReport};
use crate::{
    Amount, Balance, Batch, Command, ConservationViolation, DeliveryReport, EntrySeq,
    EventDispatcher, EventPage, EventSeq, EventSink, GrantTag, HoldId, HoldState, IdempotencyKey,
    LedgerError, LotId, MemoryLedgerStore, Reason, Receipt, Request, Reservation, StorageError,
    TenantId, TenantSettings, Totals,
};

/// Optional settings of a grant.
///
/// ```
/// use credits_core::GrantOptions;
/// use metered_clock::Timestamp;
///
/// let opts = GrantOptions::default()
///     .expires_at(Timestamp::from_unix_millis(2_000_000_000_000))
///     .priority(1);
/// assert_eq!(opts.priority, 1);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct GrantOptions {
    /// When the lot expires (`None`: never).
    pub expires_at: Option<Timestamp>,
    /// Among lots with the same expiry, lower numbers are spent first (default 0).
    pub priority: u16,
    /// The caller's fingerprint of the grant's context, compared under the key
    /// ([`Command::TaggedGrant`]); `None` (the default) sends a plain [`Command::Grant`].
    pub tag: Option<GrantTag>,
}

impl GrantOptions {
    /// Sets the expiry.
    pub fn expires_at(mut self, at: Timestamp) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: u16) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the tag (see [`GrantTag`]).
    pub fn tag(mut self, tag: GrantTag) -> Self {
        self.tag = Some(tag);
        self
    }
}

/// The credits ledger: every operation, stamped with the clock's time, applied through a
/// [`LedgerStore`].
///
/// `Ledger` is cheap to clone (two `Arc`s) and safe to share between tasks.
///
/// ```
/// use std::time::Duration;
/// use credits_core::{Amount, GrantOptions, IdempotencyKey, Ledger, LedgerError, TenantId, TenantSettings};
/// use metered_clock::{ManualClock, Timestamp};
///
/// # futures::executor::block_on(async {
/// let clock = ManualClock::new(Timestamp::from_unix_millis(1_700_000_000_000));
/// let ledger = Ledger::in_memory(clock.clone());
/// let acme = TenantId::new("acme")?;
/// let key = |k: &str| IdempotencyKey::new(k).unwrap();
///
/// ledger.create_tenant(&acme, TenantSettings::default()).await?;
/// ledger.grant(&acme, key("topup-1"), Amount::new(100), GrantOptions::default()).await?;
/// let hold = ledger.reserve(&acme, key("job-7/hold"), Amount::new(40), Duration::from_secs(60)).await?.hold;
/// ledger.commit(&acme, key("job-7/commit"), hold, Amount::new(25)).await?;
/// assert_eq!(ledger.balance(&acme).await?.available, Amount::new(75));
///
/// let err = ledger.consume(&acme, key("big"), Amount::new(500)).await.unwrap_err();
/// assert!(matches!(err, LedgerError::InsufficientCredits { .. }));
/// ledger.check_conservation(Some(&acme)).await?.unwrap();
/// # Ok::<(), LedgerError>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct Ledger<S: ?Sized = dyn LedgerStore> {
    store: Arc<S>,
    clock: Arc<dyn Clock>,
}

impl<S: ?Sized> Clone for Ledger<S> {
    fn clone(&self) -> Self {
        Ledger {
            store: Arc::clone(&self.store),
            clock: Arc::clone(&self.clock),
        }
    }
}

impl Ledger<MemoryLedgerStore> {
    /// A ledger over a fresh [`MemoryLedgerStore`] with default settings.
    pub fn in_memory(clock: impl Clock + 'static) -> Self {
        Ledger::new(MemoryLedgerStore::new(), clock)
    }
}

impl<S: LedgerStore> Ledger<S> {
    /// A ledger over `store`, reading time from `clock`.
    pub fn new(store: S, clock: impl Clock + 'static) -> Self {
        Ledger {
            store: Arc::new(store),
            clock: Arc::new(clock),
        }
    }
}

impl<S: LedgerStore + ?Sized> Ledger<S> {
    /// A ledger over a shared store and clock (e.g. `Arc<dyn LedgerStore>`).
    pub fn from_shared(store: Arc<S>, clock: Arc<dyn Clock>) -> Self {
        Ledger { store, clock }
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// The clock.
    #[must_use]
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Creates a tenant.
    ///
    /// # Errors
    /// [`LedgerError::TenantExists`]; storage failures.
    pub async fn create_tenant(
        &self,
        tenant: &TenantId,
        settings: TenantSettings,
    ) -> Result<(), LedgerError> {
        self.store
            .create_tenant(tenant, settings, self.clock.now())
            .await
    }

    /// Applies one request (or replays its key).
    ///
    /// # Errors
    /// See [`LedgerStore::apply`].
    pub async fn apply(&self, request: &Request) -> Result<Receipt, LedgerError> {
        let result = self.store.apply(request, self.clock.now()).await;
        record_metrics(request.command.name(), &result);
        result
    }

    async fn run(
        &self,
        tenant: &TenantId,
        key: IdempotencyKey,
        command: Command,
    ) -> Result<Receipt, LedgerError> {
        self.apply(&Request::new(tenant.clone(), key, command))
            .await
    }

    /// Adds `amount` credits as a lot (see [`Command::Grant`]).
    ///
    /// # Errors
    /// [`LedgerError::ZeroAmount`], [`LedgerError::ExpiryNotInFuture`],
    /// [`LedgerError::AmountOverflow`], [`LedgerError::UnknownTenant`], key conflicts,
    /// storage failures.
    pub async fn grant(
        &self,
        tenant: &TenantId,
        key: IdempotencyKey,
        amount: Amount,
        options: GrantOptions,
    ) -> Result<Receipt, LedgerError> {
        let command = match options.tag {
            None => Command::Grant {
                amount,
                expires_at: options.expires_at,
                priority: options.priority,
            },
            Some(tag) => Command::TaggedGrant {
                amount,
                expires_at: options.expires_at,
                priority: options.priority,
                tag,
            },
        };
        self.run(tenant, key, command).await
    }

    /// Spends `amount` now.
    ///
    /// # Errors
    /// [`LedgerError::ZeroAmount`], [`LedgerError::InsufficientCredits`],
    /// [`LedgerError::UnknownTenant`], key conflicts, storage failures.
    pub async fn consume(
        &self,
        tenant: &TenantId,
        key: IdempotencyKey,
        amount: Amount,
    ) -> Result<Receipt, LedgerError> {
        self.run(tenant, key, Command::Consume { amount }).await
    }

    /// Imports a grant made at `at` in another system ([`Command::ImportGrant`]): a lot of
    /// `amount` expiring at `expires_at` (`None`: never), recorded as an `imported_grant`
    /// entry dated `at`. Put the other system's id in `key`.
    ///
    /// # Errors
    /// [`LedgerError::ImportOutOfOrder`], [`LedgerError::ImportInFuture`], and the errors
    /// of [`grant`](Self::grant) (`ExpiryNotInFuture` when `expires_at` is not after `at`).
    pub async fn import_grant(
        &self,
        tenant: &TenantId,
        key: IdempotencyKey,
        amount: Amount,
        expires_at: Option<Timestamp>,
        at: Timestamp,
    ) -> Result<Receipt, LedgerError> {
        let command = Command::ImportGrant {
            amount,
            expires_at,
            priority: 0,
            at,
        };
        self.run(tenant, key, command).await
    }

    /// Imports a consumption made at `at` in another system ([`Command::ImportConsume`]),
    /// recorded as an `imported_consume` entry dated `at`. Put the other system's id in
    /// `key`.
    ///
    /// # Errors
    /// [`LedgerError::ImportOutOfOrder`], [`LedgerError::ImportInFuture`], and the errors
    /// of [`consume`](Self::consume) as of `at`.
    pub async fn import_consume(
        &self,
        tenant: &TenantId,
        key: IdempotencyKey,
        amount: Amount,
        at: Timestamp,
    ) -> Result<Receipt, LedgerError> {
        self.run(tenant, key, Command::ImportConsume { amount, at })
            .await
    }

    /// Sets `amount` aside in a hold living `ttl`; [`Receipt::hold`] names it.
    ///
    /// # Errors
    /// [`LedgerError::ZeroAmount`], [`LedgerError::ZeroTtl`],
    /// [`LedgerError::InsufficientCredits`], [`LedgerError::UnknownTenant`], key conflicts,
    /// storage failures.
    pub async fn reserve(
        &self,
        tenant: &TenantId,
        key: IdempotencyKey,
        amount: Amount,
        ttl: Duration,
    ) -> Result<Reservation, LedgerError> {
        let receipt = self
            .run(tenant, key, Command::Reserve { amount, ttl })
            .await?;
        receipt.reservation().ok_or_else(|| {
            LedgerError::Storage(StorageError::permanent(
                "the store answered a reserve with another command's receipt",
            ))
        })
    }

    /// Spends `amount` of a hold and releases the rest.
    ///
    /// # Errors
    /// [`LedgerError::ZeroAmount`], [`LedgerError::UnknownHold`],
    /// [`LedgerError::HoldAlreadyCommitted`], [`LedgerError::HoldAlreadyCancelled`],
    /// [`LedgerError::HoldExpired`], [`LedgerError::CommitExceedsHold`], key conflicts,
    /// storage failures.
    pub async fn commit(
        &self,
        tenant: &TenantId,
        key: IdempotencyKey,
        hold: HoldId,
        amount: Amount,
    ) -> Result<Receipt, LedgerError> {
        self.run(tenant, key, Command::Commit { hold, amount })
            .await
    }

    /// Releases a whole hold.
    ///
    /// # Errors
    /// [`LedgerError::UnknownHold`], [`LedgerError::HoldAlreadyCommitted`],
    /// [`LedgerError::HoldAlreadyCancelled`], [`LedgerError::HoldExpired`], key conflicts,
    /// storage failures.
    pub async fn cancel(
        &self,
        tenant: &TenantId,
        key: IdempotencyKey,
        hold: HoldId,
    ) -> Result<Receipt, LedgerError> {
        self.run(tenant, key, Command::Cancel { hold }).await
    }

    /// Gives back `amount` of a `Consumed` or `Committed` entry as a new entry.
    ///
    /// # Errors
    /// [`LedgerError::ZeroAmount`], [`LedgerError::UnknownEntry`],
    /// [`LedgerError::NotRefundable`], [`LedgerError::RefundExceedsConsumed`], key conflicts,
    /// storage failures.
    pub async fn refund(
        &self,
        tenant: &TenantId,
        key: IdempotencyKey,
        entry: EntrySeq,
        amount: Amount,
    ) -> Result<Receipt, LedgerError> {
        self.run(tenant, key, Command::Refund { entry, amount })
            .await
    }

    /// Removes what is left of `lot` now, recording `reason` ([`Command::VoidLot`]).
    ///
    /// # Errors
    /// [`LedgerError::UnknownLot`], [`LedgerError::LotEmpty`],
    /// [`LedgerError::TenantClosed`], [`LedgerError::UnknownTenant`], key conflicts,
    /// storage failures.
    pub async fn void_lot(
        &self,
        tenant: &TenantId,
        key: IdempotencyKey,
        lot: LotId,
        reason: Reason,
    ) -> Result<Receipt, LedgerError> {
        self.run(tenant, key, Command::VoidLot { lot, reason })
            .await
    }

    /// Freezes the tenant ([`Command::Freeze`]).
    ///
    /// # Errors
    /// [`LedgerError::TenantFrozen`] (already frozen), [`LedgerError::TenantClosed`],
    /// [`LedgerError::UnknownTenant`], key conflicts, storage failures.
    pub async fn freeze(
        &self,
        tenant: &TenantId,
        key: IdempotencyKey,
    ) -> Result<Receipt, LedgerError> {
        self.run(tenant, key, Command::Freeze).await
    }

    /// Lifts a freeze ([`Command::Unfreeze`]).
    ///
    /// # Errors
    /// [`LedgerError::TenantNotFrozen`], [`LedgerError::TenantClosed`],
    /// [`LedgerError::UnknownTenant`], key conflicts, storage failures.
    pub async fn unfreeze(
        &self,
        tenant: &TenantId,
        key: IdempotencyKey,
    ) -> Result<Receipt, LedgerError> {
        self.run(tenant, key, Command::Unfreeze).await
    }

    /// Closes the tenant for good, voiding what is left ([`Command::Close`]).
    ///
    /// # Errors
    /// [`LedgerError::HoldsOpen`], [`LedgerError::TenantClosed`],
    /// [`LedgerError::UnknownTenant`], key conflicts, storage failures.
    pub async fn close(
        &self,
        tenant: &TenantId,
        key: IdempotencyKey,
    ) -> Result<Receipt, LedgerError> {
        self.run(tenant, key, Command::Close).await
    }

    /// Applies several requests all or nothing (see [`LedgerStore::apply_batch`]).
    ///
    /// # Errors
    /// The [`Batch`] checks ([`LedgerError::EmptyBatch`], [`LedgerError::BatchTooLarge`],
    /// [`LedgerError::DuplicateKeyInBatch`]); see [`LedgerStore::apply_batch`].
    pub async fn batch(&self, requests: &[Request]) -> Result<Vec<Receipt>, LedgerError> {
        let batch = Batch::new(requests.to_vec())?;
        let result = self.store.apply_batch(&batch, self.clock.now()).await;
        if let Err(e) = &result {
            tracing::debug!(error = %e, "batch rejected");
        }
        result
    }

    /// The current balance (due expiries applied first).
    ///
    /// # Errors
    /// [`LedgerError::UnknownTenant`]; storage failures.
    pub async fn balance(&self, tenant: &TenantId) -> Result<Balance, LedgerError> {
        self.store.balance(tenant, self.clock.now()).await
    }

    /// The balance right after the last entry at or before `at`.
    ///
    /// # Errors
    /// [`LedgerError::UnknownTenant`]; storage failures.
    pub async fn balance_at(
        &self,
        tenant: &TenantId,
        at: Timestamp,
    ) -> Result<Balance, LedgerError> {
        self.store.balance_at(tenant, at).await
    }

    /// A page of the tenant's journal, oldest first.
    ///
    /// # Errors
    /// [`LedgerError::UnknownTenant`]; storage failures.
    pub async fn history(&self, tenant: &TenantId, page: PageRequest) -> Result<Page, LedgerError> {
        self.store.history(tenant, page).await
    }

    /// A page of the tenant's balance events ([`BalanceEvent`](crate::BalanceEvent)), oldest
    /// first, after `after` (`None`: from the first), at most `limit` (clamped to
    /// `1..=PAGE_LEN_MAX`); pass [`EventPage::next`] as `after` for the next page.
    ///
    /// # Errors
    /// [`LedgerError::UnknownTenant`]; storage failures.
    pub async fn events(
        &self,
        tenant: &TenantId,
        after: Option<EventSeq>,
        limit: usize,
    ) -> Result<EventPage, LedgerError> {
        self.store.events(tenant, after, limit).await
    }

    /// Delivers the tenant's pending balance events to `sink` with `dispatcher`
    /// ([`EventDispatcher::deliver`]): in order, after the stored delivery cursor, which
    /// moves only once the sink took a batch.
    ///
    /// # Errors
    /// [`LedgerError::UnknownTenant`]; storage failures (a failing sink is reported in
    /// [`DeliveryReport::failed`]).
    pub async fn deliver_events(
        &self,
        dispatcher: &EventDispatcher,
        tenant: &TenantId,
        sink: &(impl EventSink + ?Sized),
    ) -> Result<DeliveryReport, LedgerError> {
        dispatcher.deliver(&*self.store, tenant, sink).await
    }

    /// What is known about a hold.
    ///
    /// # Errors
    /// [`LedgerError::UnknownTenant`], [`LedgerError::UnknownHold`]; storage failures.
    pub async fn hold(&self, tenant: &TenantId, hold: HoldId) -> Result<HoldState, LedgerError> {
        self.store.hold(tenant, hold).await
    }

    /// Checks conservation for one tenant, or for the whole ledger with `None`. The outer
    /// `Result` is the store's; the inner one the check's.
    ///
    /// # Errors
    /// [`LedgerError::UnknownTenant`]; storage failures.
    pub async fn check_conservation(
        &self,
        tenant: Option<&TenantId>,
    ) -> Result<Result<Totals, ConservationViolation>, LedgerError> {
        let totals = match tenant {
            Some(t) => self.store.totals(t).await?,
            None => self.store.totals_all().await?,
        };
        Ok(totals.check().map(|()| totals).inspect_err(|v| {
            tracing::error!(violation = %v, "credits conservation violated");
        }))
    }

    /// Replays `tenant`'s journal from its first entry and checks it against the stored
    /// counters ([`JournalReplay`](crate::JournalReplay)): gap-free entry numbers, continuity, conservation after
    /// every entry, and the replayed sums and last balance equal to the counters. A lost,
    /// doubled or altered journal row shows up as the first entry that disagrees. Reads
    /// the whole journal (in pages of 1,000).
    ///
    /// The outer `Result` is the store's; the inner one the check's (`Ok` holds the
    /// number of entries replayed).
    ///
    /// # Errors
    /// [`LedgerError::UnknownTenant`]; storage failures.
    pub async fn verify_journal(
        &self,
        tenant: &TenantId,
    ) -> Result<Result<u64, crate::JournalMismatch>, LedgerError> {
        let mut replay = crate::JournalReplay::new();
        let mut page = PageRequest::first(1_000);
        loop {
            let p = self.store.history(tenant, page).await?;
            for e in &p.entries {
                replay.push(e);
            }
            match p.next {
                Some(after) => page.after = Some(after),
                None => break,
            }
        }
        let totals = self.store.totals(tenant).await?;
        Ok(replay.finish(&totals).inspect_err(|m| {
            tracing::error!(%tenant, entry = ?m.entry, check = ?m.check, detail = %m.detail,
                "journal replay disagrees with the stored counters");
        }))
    }

    /// One bounded sweeper step: applies due expiries of at most `tenants_max` tenants.
    /// Drive it from a timer (or step by step in tests).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn sweep_step(&self, tenants_max: usize) -> Result<SweepReport, LedgerError> {
        let report = self.store.sweep(self.clock.now(), tenants_max).await?;
        metrics::counter!("credits_holds_expired_total").increment(report.holds_expired as u64);
        metrics::counter!("credits_lots_expired_total").increment(report.lots_expired as u64);
        Ok(report)
    }

    /// The start-up recovery pass: sweeps until nothing is due, so holds orphaned by a crash
    /// (their owner is gone) and lots that expired while the process was down are reclaimed.
    /// Returns the summed report.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn recover(&self) -> Result<SweepReport, LedgerError> {
        let mut total = SweepReport::default();
        loop {
            let step = self.sweep_step(1_024).await?;
            total.tenants += step.tenants;
            total.holds_expired += step.holds_expired;
            total.lots_expired += step.lots_expired;
            if !step.more {
                break;
            }
        }
        tracing::info!(
            holds = total.holds_expired,
            lots = total.lots_expired,
            "credits recovery pass done"
        );
        Ok(total)
    }
}

fn record_metrics(op: &'static str, result: &Result<Receipt, LedgerError>) {
    // Literal labels only: the `metrics` macros then build the key statically, with no
    // allocation on the hot path.
    macro_rules! count {
        ($result:literal) => {
            match op {
                "grant" => metrics::counter!("credits_operations_total", "op" => "grant", "result" => $result).increment(1),
                "consume" => metrics::counter!("credits_operations_total", "op" => "consume", "result" => $result).increment(1),
                "consume_up_to" => metrics::counter!("credits_operations_total", "op" => "consume_up_to", "result" => $result).increment(1),
                "reserve" => metrics::counter!("credits_operations_total", "op" => "reserve", "result" => $result).increment(1),
                "commit" => metrics::counter!("credits_operations_total", "op" => "commit", "result" => $result).increment(1),
                "commit_up_to" => metrics::counter!("credits_operations_total", "op" => "commit_up_to", "result" => $result).increment(1),
                "cancel" => metrics::counter!("credits_operations_total", "op" => "cancel", "result" => $result).increment(1),
                "refund" => metrics::counter!("credits_operations_total", "op" => "refund", "result" => $result).increment(1),
                "prepare" => metrics::counter!("credits_operations_total", "op" => "prepare", "result" => $result).increment(1),
                "commit_prepared" => metrics::counter!("credits_operations_total", "op" => "commit_prepared", "result" => $result).increment(1),
                "abort_prepared" => metrics::counter!("credits_operations_total", "op" => "abort_prepared", "result" => $result).increment(1),
                _ => metrics::counter!("credits_operations_total", "op" => "other", "result" => $result).increment(1),
            }
        };
    }
    match result {
        Ok(_) => count!("ok"),
        Err(e) if e.is_storage() => count!("storage_error"),
        Err(e) => {
            tracing::debug!(op, error = %e, "credits request rejected");
            count!("rejected");
        }
    }
}
