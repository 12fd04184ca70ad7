//! [`MemoryLedgerStore`]: the embedded default backend.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::BuildHasher;
use std::ops::Bound;
use std::time::Duration;

use async_trait::async_trait;
use foldhash::fast::FixedState;
use hashbrown::HashMap;
use metered_clock::Timestamp;
use parking_lot::{Mutex, MutexGuard};

use crate::Batch;
use crate::backend::{Account, Applied, Savepoint};
use crate::store::{LedgerStore, PAGE_LEN_MAX, Page, PageRequest, PreparedHold, SweepReport};
use crate::tx::BranchId;
use crate::{
    Balance, BalanceEvent, Command, EntrySeq, EventPage, EventSeq, HoldId, HoldState,
    IdempotencyKey, IdempotencyRecord, JournalEntry, LedgerError, Receipt, Request, StorageError,
    TenantId, TenantSettings, Totals,
};

/// Settings of a [`MemoryLedgerStore`]; build with [`MemoryLedgerStore::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct MemoryLedgerStoreBuilder {
    shards: usize,
    idempotency_window: Duration,
    idempotency_keys_max: usize,
    value_limit: u64,
    audit: Option<Audit>,
}

/// The store's audit (feature `audit`); without the feature, a type with no values.
#[cfg(feature = "audit")]
type Audit = crate::audit::MemoryAudit;
#[cfg(not(feature = "audit"))]
#[derive(Clone, Debug)]
enum Audit {}

/// A tenant's audit chain head (nothing without the feature).
#[cfg(feature = "audit")]
type ChainHead = audit_chain::StreamHead;
#[cfg(not(feature = "audit"))]
type ChainHead = ();

/// A sealed audit entry (nothing without the feature).
#[cfg(feature = "audit")]
type Sealed = audit_chain::SealedEntry;
#[cfg(not(feature = "audit"))]
type Sealed = ();

#[cfg(feature = "audit")]
impl MemoryLedgerStoreBuilder {
    /// Seals one audit entry per journal entry under the tenant's lock and queues it in
    /// the same step (see [`crate::audit`]). Changes are refused with
    /// [`LedgerError::AuditBacklogFull`] while the queue is at its capacity.
    pub fn audit(mut self, audit: crate::audit::MemoryAudit) -> Self {
        self.audit = Some(audit);
        self
    }
}

/// What auditing does inside a change: refuse before it while the backlog is full, and
/// seal and queue its entries once applied. Without the feature there is nothing to do.
#[cfg(feature = "audit")]
impl Audit {
    fn start_head(&self, tenant: &TenantId) -> ChainHead {
        self.start(tenant)
    }
    fn before(&self) -> Result<(), LedgerError> {
        self.check_room()
    }
    fn seal_entries(
        &self,
        tenant: &TenantId,
        head: ChainHead,
        entries: &[JournalEntry],
    ) -> Result<(Vec<audit_chain::SealedEntry>, ChainHead), LedgerError> {
        self.seal(tenant, head, entries)
    }
    fn commit(&self, sealed: Vec<audit_chain::SealedEntry>) {
        self.queue(sealed);
    }
}

#[cfg(not(feature = "audit"))]
impl Audit {
    fn start_head(&self, _: &TenantId) -> ChainHead {
        match *self {}
    }
    fn before(&self) -> Result<(), LedgerError> {
        match *self {}
    }
    fn seal_entries(
        &self,
        _: &TenantId,
        _: ChainHead,
        _: &[JournalEntry],
    ) -> Result<(Vec<()>, ChainHead), LedgerError> {
        match *self {}
    }
    fn commit(&self, _: Vec<()>) {
        match *self {}
    }
}

impl MemoryLedgerStoreBuilder {
    /// Number of lock shards (rounded up to a power of two, 1..=4096; default 64). More
    /// shards mean less contention between tasks working on different tenants.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards.clamp(1, 4096).next_power_of_two();
        self
    }

    /// How long an idempotency key is remembered (default 24 hours). A key older than this
    /// is forgotten and a request reusing it is applied again.
    pub fn idempotency_window(mut self, window: Duration) -> Self {
        self.idempotency_window = window;
        self
    }

    /// The most idempotency keys remembered per tenant (default 1,000,000; at least 1); the
    /// oldest are forgotten first.
    pub fn idempotency_keys_max(mut self, max: usize) -> Self {
        self.idempotency_keys_max = max.max(1);
        self
    }

    /// The largest value a counter, an amount or an expiry (Unix milliseconds) may take
    /// (default `u64::MAX`). A change that would pass it is refused with
    /// [`LedgerError::AmountOverflow`] and changes nothing
    /// ([`Account::with_value_limit`]). Set `i64::MAX as u64` to refuse in memory exactly
    /// what a PostgreSQL store refuses.
    pub fn value_limit(mut self, limit: u64) -> Self {
        self.value_limit = limit;
        self
    }

    /// Builds the store.
    pub fn build(self) -> MemoryLedgerStore {
        MemoryLedgerStore {
            shards: (0..self.shards)
                .map(|_| Mutex::new(Shard::default()))
                .collect(),
            mask: self.shards - 1,
            // A fixed seed: a tenant lands in the same shard in every run, so sweeps visit
            // tenants in the same order and a seeded simulation replays exactly.
            hasher: FixedState::with_seed(0x6372_6564_6974_7331),
            idempotency_window: self.idempotency_window,
            idempotency_keys_max: self.idempotency_keys_max,
            value_limit: self.value_limit,
            audit: self.audit,
        }
    }
}

/// The in-memory [`LedgerStore`]: tenants spread over mutex-protected shards, so tasks on
/// different tenants rarely wait for each other and never for a global lock.
///
/// Each shard holds its tenants' [`Account`](crate::backend::Account)s, journals and idempotency records, plus an
/// index of the earliest expiry per tenant for the sweeper. Nothing survives the process.
///
/// ```
/// use credits_core::{Amount, Ledger, MemoryLedgerStore, TenantId, TenantSettings};
/// use metered_clock::{ManualClock, Timestamp};
///
/// # futures::executor::block_on(async {
/// let store = MemoryLedgerStore::builder().shards(16).build();
/// let ledger = Ledger::new(store, ManualClock::new(Timestamp::from_unix_millis(0)));
/// let acme = TenantId::new("acme")?;
/// ledger.create_tenant(&acme, TenantSettings::default()).await?;
/// assert_eq!(ledger.balance(&acme).await?.available, Amount::ZERO);
/// # Ok::<(), credits_core::LedgerError>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct MemoryLedgerStore {
    shards: Box<[Mutex<Shard>]>,
    mask: usize,
    hasher: FixedState,
    idempotency_window: Duration,
    idempotency_keys_max: usize,
    value_limit: u64,
    audit: Option<Audit>,
}

#[derive(Debug, Default)]
struct Shard {
    tenants: HashMap<TenantId, Tenant>,
    /// At most one entry per tenant: a time at or before its earliest expiry (it may be
    /// stale-early; the sweeper re-indexes such tenants).
    deadlines: BTreeSet<(Timestamp, TenantId)>,
    /// The active holds its tenants' transaction branches own, by branch: what
    /// [`LedgerStore::prepared_holds`] reads without walking every tenant.
    prepared: BTreeMap<BranchId, PreparedHold>,
}

#[derive(Debug)]
struct Tenant {
    account: Account,
    journal: Vec<JournalEntry>,
    keys: HashMap<IdempotencyKey, IdempotencyRecord>,
    key_order: VecDeque<(Timestamp, IdempotencyKey)>,
    indexed: Option<Timestamp>,
    /// The head of the tenant's audit chain: changed with the account, under its lock.
    audit_head: ChainHead,
    /// The tenant's balance events (the outbox), event `n` at index `n - 1`: appended with
    /// the change that emitted them, under its lock.
    events: Vec<BalanceEvent>,
    /// The last event delivered ([`LedgerStore::advance_event_cursor`]).
    delivered: Option<EventSeq>,
}

impl Default for MemoryLedgerStore {
    fn default() -> Self {
        MemoryLedgerStore::builder().build()
    }
}

impl MemoryLedgerStore {
    /// A store with default settings.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder for the settings.
    pub fn builder() -> MemoryLedgerStoreBuilder {
        MemoryLedgerStoreBuilder {
            shards: 64,
            idempotency_window: Duration::from_secs(24 * 60 * 60),
            idempotency_keys_max: 1_000_000,
            value_limit: u64::MAX,
            audit: None,
        }
    }

    fn shard_index(&self, tenant: &TenantId) -> usize {
        // Truncation is the point: the low bits pick the shard.
        #[allow(clippy::cast_possible_truncation)]
        let h = self.hasher.hash_one(tenant.as_str()) as usize;
        h & self.mask
    }

    fn lock(&self, tenant: &TenantId) -> MutexGuard<'_, Shard> {
        self.shards[self.shard_index(tenant)].lock()
    }

    /// Number of tenants.
    #[must_use]
    pub fn tenant_count(&self) -> usize {
        self.shards.iter().map(|s| s.lock().tenants.len()).sum()
    }

    /// A batch's requests applied in place, each touched tenant under a savepoint recorded
    /// in `work` (the caller rolls them all back on `Err`), then every tenant's new entries
    /// sealed (nothing is visible yet, so a failure refuses the whole batch; each tenant's
    /// new chain head is kept in its `Work`). Returns the outcomes and the sealed entries.
    fn batch_in_place(
        &self,
        guards: &mut [MutexGuard<'_, Shard>],
        shard_ids: &[usize],
        requests: &[Request],
        now: Timestamp,
        work: &mut HashMap<TenantId, Work>,
    ) -> Result<(Vec<Receipt>, Vec<Sealed>), LedgerError> {
        let slot = |shard: usize| shard_ids.binary_search(&shard).unwrap_or(0);
        let mut outcomes = Vec::with_capacity(requests.len());
        for (index, request) in requests.iter().enumerate() {
            let reject = |source| LedgerError::BatchRejected {
                index,
                source: Box::new(source),
            };
            let shard = slot(self.shard_index(&request.tenant));
            let Some(tenant) = guards[shard].tenants.get_mut(&request.tenant) else {
                return Err(reject(LedgerError::UnknownTenant(request.tenant.clone())));
            };
            if let Some(record) = tenant.keys.get(&request.key) {
                outcomes.push(record.replay(request).map_err(reject)?);
                continue;
            }
            let w = match work.entry(request.tenant.clone()) {
                hashbrown::hash_map::Entry::Occupied(w) => w.into_mut(),
                hashbrown::hash_map::Entry::Vacant(v) => v.insert(Work {
                    shard,
                    savepoint: tenant.account.savepoint(),
                    head: tenant.audit_head,
                    entries: Vec::new(),
                    events: Vec::new(),
                    records: Vec::new(),
                }),
            };
            let target = request.command.refers_to().and_then(|seq| {
                tenant
                    .entry(seq)
                    .or_else(|| w.entries.iter().find(|e| e.seq == seq))
                    .cloned()
            });
            let applied = tenant.account.apply(request, now, target.as_ref());
            let outcome = unwrap_outcome(applied.result).map_err(reject)?;
            w.entries.extend(applied.entries);
            w.events.extend(applied.events);
            w.records.push((
                request.key.clone(),
                IdempotencyRecord {
                    command: request.command.clone(),
                    result: Ok(outcome),
                    // Retention counts from when it was applied, also for an import
                    // dated in the past.
                    at: outcome.at.max(now),
                },
            ));
            outcomes.push(outcome);
        }
        let mut sealed = Vec::new();
        if let Some(audit) = &self.audit {
            // In tenant order, so that the queue's order does not depend on hashing.
            let mut ids: Vec<TenantId> = work.keys().cloned().collect();
            ids.sort();
            for id in ids {
                let Some(w) = work.get_mut(&id).filter(|w| !w.entries.is_empty()) else {
                    continue;
                };
                let (s, head) = audit.seal_entries(&id, w.head, &w.entries)?;
                sealed.extend(s);
                w.head = head;
            }
        }
        Ok((outcomes, sealed))
    }
}

fn internal(what: &str) -> LedgerError {
    LedgerError::Storage(StorageError::permanent(what))
}

fn unwrap_outcome(result: Result<Option<Receipt>, LedgerError>) -> Result<Receipt, LedgerError> {
    result.and_then(|o| o.ok_or_else(|| internal("a command produced no outcome")))
}

impl Shard {
    /// Runs `change` on the tenant's account (it also gets the journal, to look up a refund
    /// target) and makes the result visible: account, journal entries, deadline index and,
    /// with an audit, the sealed entries queued in the same step.
    ///
    /// With an audit whose backlog is full the change is refused before anything happens.
    fn change(
        deadlines: &mut BTreeSet<(Timestamp, TenantId)>,
        tenant: &mut Tenant,
        audit: Option<&Audit>,
        change: impl FnOnce(&mut Account, &[JournalEntry]) -> Applied,
    ) -> Result<Result<Option<Receipt>, LedgerError>, LedgerError> {
        if let Some(audit) = audit {
            audit.before()?;
        }
        let applied = change(&mut tenant.account, &tenant.journal);
        if let Some(audit) = audit
            && !applied.entries.is_empty()
        {
            let (sealed, head) =
                audit.seal_entries(tenant.account.tenant(), tenant.audit_head, &applied.entries)?;
            audit.commit(sealed);
            tenant.audit_head = head;
        }
        tenant.journal.extend(applied.entries);
        tenant.events.extend(applied.events);
        Self::reindex(deadlines, tenant);
        Ok(applied.result)
    }

    /// Keeps [`Shard::prepared`] in step with an applied command (only transaction steps
    /// change it; expiry never touches a branch's hold).
    fn note_prepared(
        prepared: &mut BTreeMap<BranchId, PreparedHold>,
        tenant: &TenantId,
        command: &Command,
        result: &Result<Receipt, LedgerError>,
    ) {
        match (command, result) {
            (Command::Prepare { branch, amount }, Ok(receipt)) => {
                if let Some(hold) = receipt.hold() {
                    prepared.insert(
                        *branch,
                        PreparedHold {
                            branch: *branch,
                            tenant: tenant.clone(),
                            hold,
                            amount: *amount,
                        },
                    );
                }
            }
            (
                Command::CommitPrepared { branch, .. } | Command::AbortPrepared { branch, .. },
                Ok(_),
            ) => {
                prepared.remove(branch);
            }
            _ => {}
        }
    }

    fn reindex(deadlines: &mut BTreeSet<(Timestamp, TenantId)>, tenant: &mut Tenant) {
        let next = tenant.account.next_deadline();
        // Only move the index entry earlier; a stale-early entry is fixed by the sweeper.
        let earlier = match (next, tenant.indexed) {
            (Some(n), Some(i)) => n < i,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if earlier {
            let id = tenant.account.tenant().clone();
            if let Some(old) = tenant.indexed {
                deadlines.remove(&(old, id.clone()));
            }
            if let Some(n) = next {
                deadlines.insert((n, id));
            }
            tenant.indexed = next;
        }
    }
}

impl Tenant {
    fn remember(
        &mut self,
        key: IdempotencyKey,
        record: IdempotencyRecord,
        window: Duration,
        max: usize,
    ) {
        let at = record.at;
        self.keys.insert(key.clone(), record);
        self.key_order.push_back((at, key));
        let horizon = Timestamp::from_unix_millis(
            at.as_unix_millis()
                .saturating_sub(u64::try_from(window.as_millis()).unwrap_or(u64::MAX)),
        );
        while let Some((t, _)) = self.key_order.front() {
            if *t >= horizon && self.key_order.len() <= max {
                break;
            }
            if let Some((_, k)) = self.key_order.pop_front() {
                self.keys.remove(&k);
            }
        }
    }

    /// Forgets the idempotency records applied before `horizon`; returns how many.
    fn forget_before(&mut self, horizon: Timestamp) -> u64 {
        let mut forgotten = 0;
        while let Some((t, _)) = self.key_order.front() {
            if *t >= horizon {
                break;
            }
            if let Some((_, k)) = self.key_order.pop_front() {
                self.keys.remove(&k);
                forgotten += 1;
            }
        }
        forgotten
    }

    fn entry(&self, seq: EntrySeq) -> Option<&JournalEntry> {
        journal_entry(&self.journal, seq)
    }
}

fn journal_entry(journal: &[JournalEntry], seq: EntrySeq) -> Option<&JournalEntry> {
    let index = usize::try_from(seq.get().checked_sub(1)?).ok()?;
    journal.get(index)
}

/// What a batch did to one tenant: its account is changed in place under a savepoint
/// (rolled back unless every request succeeds); the journal entries and idempotency records
/// wait here until then.
struct Work {
    shard: usize,
    savepoint: Savepoint,
    /// The tenant's audit chain head once the batch's entries are sealed.
    head: ChainHead,
    entries: Vec<JournalEntry>,
    events: Vec<BalanceEvent>,
    records: Vec<(IdempotencyKey, IdempotencyRecord)>,
}

#[async_trait]
impl LedgerStore for MemoryLedgerStore {
    async fn create_tenant(
        &self,
        tenant: &TenantId,
        settings: TenantSettings,
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        let mut shard = self.lock(tenant);
        if shard.tenants.contains_key(tenant) {
            return Err(LedgerError::TenantExists(tenant.clone()));
        }
        shard.tenants.insert(
            tenant.clone(),
            Tenant {
                account: Account::new(tenant.clone(), settings, now)
                    .with_value_limit(self.value_limit),
                journal: Vec::new(),
                keys: HashMap::new(),
                key_order: VecDeque::new(),
                indexed: None,
                audit_head: self
                    .audit
                    .as_ref()
                    .map(|a| a.start_head(tenant))
                    .unwrap_or_default(),
                events: Vec::new(),
                delivered: None,
            },
        );
        Ok(())
    }

    async fn apply(&self, request: &Request, now: Timestamp) -> Result<Receipt, LedgerError> {
        let mut guard = self.lock(&request.tenant);
        let shard = &mut *guard;
        let Some(tenant) = shard.tenants.get_mut(&request.tenant) else {
            return Err(LedgerError::UnknownTenant(request.tenant.clone()));
        };
        if let Some(record) = tenant.keys.get(&request.key) {
            return record.replay(request);
        }
        let refers_to = request.command.refers_to();
        let result = Shard::change(
            &mut shard.deadlines,
            tenant,
            self.audit.as_ref(),
            |account, journal| {
                let target = refers_to.and_then(|seq| journal_entry(journal, seq));
                account.apply(request, now, target)
            },
        )?;
        let result = unwrap_outcome(result);
        Shard::note_prepared(
            &mut shard.prepared,
            &request.tenant,
            &request.command,
            &result,
        );
        // Retention counts from when it was applied, also for an import dated in the past.
        let at = result.as_ref().map_or(now, |o| o.at.max(now));
        let record = IdempotencyRecord {
            command: request.command.clone(),
            result: result.clone(),
            at,
        };
        tenant.remember(
            request.key.clone(),
            record,
            self.idempotency_window,
            self.idempotency_keys_max,
        );
        result
    }

    async fn apply_batch(
        &self,
        batch: &Batch,
        now: Timestamp,
    ) -> Result<Vec<Receipt>, LedgerError> {
        let requests = batch.requests();
        if let Some(audit) = &self.audit {
            audit.before()?;
        }
        // Lock every shard involved, in ascending order (no deadlock with other batches).
        let mut shard_ids: Vec<usize> = requests
            .iter()
            .map(|r| self.shard_index(&r.tenant))
            .collect();
        shard_ids.sort_unstable();
        shard_ids.dedup();
        let mut guards: Vec<MutexGuard<'_, Shard>> =
            shard_ids.iter().map(|&i| self.shards[i].lock()).collect();
        let mut work: HashMap<TenantId, Work> = HashMap::new();
        let outcome = self.batch_in_place(&mut guards, &shard_ids, requests, now, &mut work);
        let (outcomes, sealed) = match outcome {
            Ok(done) => done,
            Err(e) => {
                // Undo every tenant the batch touched: nothing of it remains.
                for (id, w) in work {
                    if let Some(tenant) = guards[w.shard].tenants.get_mut(&id) {
                        tenant.account.rollback(w.savepoint);
                    }
                }
                return Err(e);
            }
        };
        if let Some(audit) = &self.audit {
            audit.commit(sealed);
        }
        for (id, w) in work {
            let shard = &mut *guards[w.shard];
            let Some(tenant) = shard.tenants.get_mut(&id) else {
                return Err(internal("tenant vanished while its shard was locked"));
            };
            tenant.account.release(w.savepoint);
            tenant.audit_head = w.head;
            tenant.journal.extend(w.entries);
            tenant.events.extend(w.events);
            Shard::reindex(&mut shard.deadlines, tenant);
            for (_, record) in &w.records {
                Shard::note_prepared(&mut shard.prepared, &id, &record.command, &record.result);
            }
            for (key, record) in w.records {
                tenant.remember(
                    key,
                    record,
                    self.idempotency_window,
                    self.idempotency_keys_max,
                );
            }
        }
        Ok(outcomes)
    }

    async fn idempotency_record(
        &self,
        tenant: &TenantId,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>, LedgerError> {
        let shard = self.lock(tenant);
        let Some(t) = shard.tenants.get(tenant) else {
            return Err(LedgerError::UnknownTenant(tenant.clone()));
        };
        Ok(t.keys.get(key).cloned())
    }

    async fn balance(&self, tenant: &TenantId, now: Timestamp) -> Result<Balance, LedgerError> {
        let mut guard = self.lock(tenant);
        let shard = &mut *guard;
        let Some(t) = shard.tenants.get_mut(tenant) else {
            return Err(LedgerError::UnknownTenant(tenant.clone()));
        };
        if t.account.next_deadline().is_some_and(|d| d <= now) {
            // An expiry pass has no result of its own; only a refusal by the hook matters.
            Shard::change(
                &mut shard.deadlines,
                t,
                self.audit.as_ref(),
                |account, _| account.expire_due(now),
            )
            .map(drop)?;
        }
        Ok(t.account.balance())
    }

    async fn balance_at(&self, tenant: &TenantId, at: Timestamp) -> Result<Balance, LedgerError> {
        let shard = self.lock(tenant);
        let Some(t) = shard.tenants.get(tenant) else {
            return Err(LedgerError::UnknownTenant(tenant.clone()));
        };
        let n = t.journal.partition_point(|e| e.at <= at);
        Ok(n.checked_sub(1)
            .and_then(|i| t.journal.get(i))
            .map(|e| e.after)
            .unwrap_or_default())
    }

    async fn history(&self, tenant: &TenantId, page: PageRequest) -> Result<Page, LedgerError> {
        let shard = self.lock(tenant);
        let Some(t) = shard.tenants.get(tenant) else {
            return Err(LedgerError::UnknownTenant(tenant.clone()));
        };
        let start = page
            .after
            .map_or(0, |s| usize::try_from(s.get()).unwrap_or(usize::MAX))
            .min(t.journal.len());
        let end = start
            .saturating_add(page.clamped_limit())
            .min(t.journal.len());
        let entries = t.journal[start..end].to_vec();
        let next = (end < t.journal.len())
            .then(|| entries.last().map(|e| e.seq))
            .flatten();
        Ok(Page { entries, next })
    }

    async fn hold(&self, tenant: &TenantId, hold: HoldId) -> Result<HoldState, LedgerError> {
        let shard = self.lock(tenant);
        let Some(t) = shard.tenants.get(tenant) else {
            return Err(LedgerError::UnknownTenant(tenant.clone()));
        };
        t.account
            .hold_state(hold)
            .ok_or(LedgerError::UnknownHold(hold))
    }

    async fn sweep(&self, now: Timestamp, tenants_max: usize) -> Result<SweepReport, LedgerError> {
        let mut report = SweepReport::default();
        for shard in &self.shards {
            let mut guard = shard.lock();
            let shard = &mut *guard;
            while let Some((deadline, _)) = shard.deadlines.first() {
                if *deadline > now {
                    break;
                }
                if report.tenants >= tenants_max {
                    report.more = true;
                    break;
                }
                let Some((deadline, id)) = shard.deadlines.pop_first() else {
                    break;
                };
                let Some(t) = shard.tenants.get_mut(&id) else {
                    continue;
                };
                t.indexed = None;
                let seen = t.journal.len();
                let changed =
                    Shard::change(&mut shard.deadlines, t, self.audit.as_ref(), |a, _| {
                        a.expire_due(now)
                    });
                if let Err(e) = changed {
                    // Refused: the tenant's expiries are still due, so it stays indexed.
                    t.indexed = Some(deadline);
                    shard.deadlines.insert((deadline, id));
                    return Err(e);
                }
                report.tenants += 1;
                for e in &t.journal[seen..] {
                    match e.kind {
                        crate::EntryKind::HoldExpired => report.holds_expired += 1,
                        crate::EntryKind::LotExpired => report.lots_expired += 1,
                        _ => {}
                    }
                }
            }
        }
        Ok(report)
    }

    async fn totals(&self, tenant: &TenantId) -> Result<Totals, LedgerError> {
        let shard = self.lock(tenant);
        shard
            .tenants
            .get(tenant)
            .map(|t| t.account.totals())
            .ok_or_else(|| LedgerError::UnknownTenant(tenant.clone()))
    }

    async fn totals_all(&self) -> Result<Totals, LedgerError> {
        let mut sum = Totals::default();
        for shard in &self.shards {
            let shard = shard.lock();
            for t in shard.tenants.values() {
                sum.accumulate(&t.account.totals())?;
            }
        }
        Ok(sum)
    }

    async fn forget_keys(&self, older_than: Timestamp) -> Result<u64, LedgerError> {
        let mut forgotten = 0;
        for shard in &self.shards {
            let mut shard = shard.lock();
            for t in shard.tenants.values_mut() {
                forgotten += t.forget_before(older_than);
            }
        }
        Ok(forgotten)
    }

    async fn prepared_holds(
        &self,
        after: Option<BranchId>,
        limit: usize,
    ) -> Result<Vec<PreparedHold>, LedgerError> {
        let limit = limit.clamp(1, PAGE_LEN_MAX);
        let mut found = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock();
            let from = match after {
                Some(a) => Bound::Excluded(a),
                None => Bound::Unbounded,
            };
            found.extend(
                shard
                    .prepared
                    .range((from, Bound::Unbounded))
                    .take(limit)
                    .map(|(_, h)| h.clone()),
            );
        }
        found.sort_unstable_by_key(|h| h.branch);
        found.truncate(limit);
        Ok(found)
    }

    async fn events(
        &self,
        tenant: &TenantId,
        after: Option<EventSeq>,
        limit: usize,
    ) -> Result<EventPage, LedgerError> {
        let shard = self.lock(tenant);
        let Some(t) = shard.tenants.get(tenant) else {
            return Err(LedgerError::UnknownTenant(tenant.clone()));
        };
        let start = after
            .map_or(0, |s| usize::try_from(s.get()).unwrap_or(usize::MAX))
            .min(t.events.len());
        let end = start
            .saturating_add(limit.clamp(1, PAGE_LEN_MAX))
            .min(t.events.len());
        let events = t.events[start..end].to_vec();
        let next = (end < t.events.len())
            .then(|| events.last().map(|e| e.seq))
            .flatten();
        Ok(EventPage { events, next })
    }

    async fn event_cursor(&self, tenant: &TenantId) -> Result<Option<EventSeq>, LedgerError> {
        let shard = self.lock(tenant);
        shard
            .tenants
            .get(tenant)
            .map(|t| t.delivered)
            .ok_or_else(|| LedgerError::UnknownTenant(tenant.clone()))
    }

    async fn advance_event_cursor(
        &self,
        tenant: &TenantId,
        delivered: EventSeq,
    ) -> Result<(), LedgerError> {
        let mut shard = self.lock(tenant);
        let Some(t) = shard.tenants.get_mut(tenant) else {
            return Err(LedgerError::UnknownTenant(tenant.clone()));
        };
        let last = t.events.last().map(|e| e.seq);
        let to = last.map(|l| l.min(delivered));
        if to > t.delivered {
            t.delivered = to;
        }
        Ok(())
    }

    async fn tenants_with_pending_events(
        &self,
        after: Option<TenantId>,
        limit: usize,
    ) -> Result<Vec<TenantId>, LedgerError> {
        let limit = limit.clamp(1, PAGE_LEN_MAX);
        let mut found = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock();
            found.extend(
                shard
                    .tenants
                    .iter()
                    .filter(|(id, t)| {
                        after.as_ref().is_none_or(|a| *id > a)
                            && t.events.last().map(|e| e.seq) > t.delivered
                    })
                    .map(|(id, _)| id.clone()),
            );
        }
        found.sort_unstable();
        found.truncate(limit);
        Ok(found)
    }

    fn value_limit(&self) -> u64 {
        self.value_limit
    }
}
