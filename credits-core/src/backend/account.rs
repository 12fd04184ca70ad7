//! The pure, storage-independent ledger rules: one tenant's [`Account`] state machine.
//!
//! Every backend runs the same code: load the tenant's state under its lock, call
//! [`Account::apply`] (or [`Account::expire_due`]), then persist what the returned
//! [`Applied`] change set names, atomically, together with the idempotency record.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hashbrown::HashMap;
use metered_clock::Timestamp;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::tx::BranchId;
use crate::{
    AccountStatus, Amount, Balance, BalanceEvent, CLOSE_REASON, Command, Effect, EntryKind,
    EntrySeq, EventSeq, HoldId, HoldResolution, HoldState, IdempotencyKey, JournalEntry,
    LedgerError, LotId, Reason, Receipt, Request, TenantId, TenantSettings, Totals,
};

/// Where a lot sits in the spending order: soonest expiry first, then ascending priority,
/// then oldest first. Also the lot's identity in storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LotKey {
    /// When the lot expires ([`Timestamp::MAX`]: never).
    pub expires_at: Timestamp,
    /// Lower numbers are spent first among lots expiring at the same time.
    pub priority: u16,
    /// The lot's number.
    pub id: LotId,
}

impl LotKey {
    fn expired_at(&self, at: Timestamp) -> bool {
        self.expires_at != Timestamp::MAX && self.expires_at <= at
    }
}

/// A live credit lot: its key and what remains of it (> 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lot {
    /// Order and identity.
    pub key: LotKey,
    /// Remaining credits.
    pub remaining: Amount,
}

/// Part of a hold taken from one lot; released parts go back to that lot (and expire at
/// once if the lot expired meanwhile).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draw {
    /// The lot it came from.
    pub lot: LotKey,
    /// How much.
    pub amount: Amount,
}

/// An active hold. Rebuild one read from storage with [`Hold::from_parts`], which checks it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hold {
    id: HoldId,
    amount: Amount,
    expires_at: Timestamp,
    /// Nearly every hold draws on one lot: kept inline, no allocation of its own.
    draws: SmallVec<[Draw; 1]>,
    owner: Option<BranchId>,
}

impl Hold {
    /// Rebuilds a hold read back from storage.
    ///
    /// # Errors
    /// [`LedgerError::ZeroAmount`] if the draws are empty, contain a zero or do not add up to
    /// `amount`; [`LedgerError::AmountOverflow`] if they overflow.
    pub fn from_parts(
        id: HoldId,
        amount: Amount,
        expires_at: Timestamp,
        draws: Vec<Draw>,
    ) -> Result<Hold, LedgerError> {
        let mut sum = Amount::ZERO;
        for d in &draws {
            if d.amount.is_zero() {
                return Err(LedgerError::ZeroAmount);
            }
            sum = sum.checked_add(d.amount)?;
        }
        if draws.is_empty() || sum != amount {
            return Err(LedgerError::ZeroAmount);
        }
        Ok(Hold {
            id,
            amount,
            expires_at,
            draws: SmallVec::from_vec(draws),
            owner: None,
        })
    }

    /// The same hold, owned by a transaction branch (as read back from storage): only that
    /// branch's decision resolves it, and it never expires on its own.
    #[must_use]
    pub fn owned_by(mut self, owner: BranchId) -> Hold {
        self.owner = Some(owner);
        self
    }

    /// Its number.
    #[must_use]
    pub fn id(&self) -> HoldId {
        self.id
    }
    /// What it holds.
    #[must_use]
    pub fn amount(&self) -> Amount {
        self.amount
    }
    /// When it expires unless resolved.
    #[must_use]
    pub fn expires_at(&self) -> Timestamp {
        self.expires_at
    }
    /// Which lots it came from (in spending order).
    #[must_use]
    pub fn draws(&self) -> &[Draw] {
        &self.draws
    }
    /// The transaction branch that owns it (`None`: an ordinary hold).
    #[must_use]
    pub fn owner(&self) -> Option<BranchId> {
        self.owner
    }
}

/// A tenant's row: settings, counters, id generators and the time of its last entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountHeader {
    /// Whose account.
    pub tenant: TenantId,
    /// Fixed settings.
    pub settings: TenantSettings,
    /// Lifetime counters and current balance (`lots`/`holds` are not stored).
    pub totals: Totals,
    /// The next journal entry's number (first is 1).
    pub next_entry: u64,
    /// The next lot's number.
    pub next_lot: u64,
    /// The next hold's number.
    pub next_hold: u64,
    /// Time of the latest entry; later entries never carry an earlier time.
    pub last_at: Timestamp,
    /// Open, frozen or closed ([`Command::Freeze`], [`Command::Close`]).
    #[serde(default)]
    pub status: AccountStatus,
    /// The next balance event's number (first is 1; [`BalanceEvent`]).
    #[serde(default = "first_event")]
    pub next_event: u64,
}

fn first_event() -> u64 {
    1
}

/// Everything a backend loads to rebuild an [`Account`] for one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountParts {
    /// The tenant row.
    pub header: AccountHeader,
    /// Every live lot.
    pub lots: Vec<Lot>,
    /// Every active hold.
    pub holds: Vec<Hold>,
    /// Resolved holds; at least the one the command names ([`Command::hold`]).
    pub resolved: Vec<(HoldId, HoldResolution)>,
    /// The owners of resolved holds that a transaction branch owned; at least for the hold
    /// the command names and the hold of the journal entry a refund names.
    pub owners: Vec<(HoldId, BranchId)>,
    /// Amounts already refunded per entry; at least for the entry a refund names.
    pub refunded: Vec<(EntrySeq, Amount)>,
}

/// The change set of one [`Account::apply`] or [`Account::expire_due`]: what a backend must
/// persist, atomically, for the account to match. Always persist it, even when `result` is an
/// error: due expiries run first and are kept (the operation itself changed nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The command's result (`Ok(None)` for a pure expiry pass).
    pub result: Result<Option<Receipt>, LedgerError>,
    /// New journal entries, in order. (Inline vectors: the common changes (a consume, a
    /// reserve, a commit with its release) allocate nothing for their change set.)
    pub entries: SmallVec<[JournalEntry; 2]>,
    /// Lots whose remaining amount changed: upsert [`Account::lot`] or delete when `None`.
    pub lots_changed: SmallVec<[LotKey; 2]>,
    /// Holds created or resolved: upsert [`Account::hold`] or record
    /// [`Account::resolution`].
    pub holds_changed: SmallVec<[HoldId; 1]>,
    /// An entry whose refunded amount changed ([`Account::refunded`]).
    pub refund_changed: Option<EntrySeq>,
    /// Balance events the entries emitted (a downward crossing of one of the tenant's
    /// [`BalanceThresholds`](crate::BalanceThresholds) each), in order: append them to the
    /// tenant's outbox in the same atomic step.
    pub events: SmallVec<[BalanceEvent; 1]>,
}

impl Applied {
    fn new() -> Self {
        Applied {
            result: Ok(None),
            entries: SmallVec::new(),
            lots_changed: SmallVec::new(),
            holds_changed: SmallVec::new(),
            refund_changed: None,
            events: SmallVec::new(),
        }
    }

    /// Whether anything must be written (besides an idempotency record).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// One tenant's ledger state and rules. Pure: no I/O, no clock, no locks.
///
/// ```
/// use std::time::Duration;
/// use credits_core::backend::Account;
/// use credits_core::{Amount, Command, IdempotencyKey, Request, TenantId, TenantSettings};
/// use metered_clock::Timestamp;
///
/// let tenant = TenantId::new("acme")?;
/// let now = Timestamp::from_unix_millis(1_000);
/// let mut account = Account::new(tenant.clone(), TenantSettings::default(), now);
/// let req = |key: &str, command| Request::new(tenant.clone(), IdempotencyKey::new(key).unwrap(), command);
///
/// let grant = Command::Grant { amount: Amount::new(100), expires_at: None, priority: 0 };
/// account.apply(&req("g", grant), now, None).result?;
/// let hold = account
///     .apply(&req("r", Command::Reserve { amount: Amount::new(60), ttl: Duration::from_secs(5) }), now, None)
///     .result?
///     .and_then(|o| o.hold())
///     .unwrap();
/// account.apply(&req("c", Command::Commit { hold, amount: Amount::new(25) }), now, None).result?;
/// assert_eq!(account.balance().available, Amount::new(75));
/// account.totals().check().unwrap();
/// # Ok::<(), credits_core::LedgerError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Account {
    header: AccountHeader,
    lots: BTreeMap<LotKey, Amount>,
    holds: HashMap<HoldId, Hold>,
    deadlines: BTreeSet<(Timestamp, HoldId)>,
    resolved: HashMap<HoldId, HoldResolution>,
    /// Owners of resolved holds that a transaction branch owned.
    owners: HashMap<HoldId, BranchId>,
    refunded: HashMap<EntrySeq, Amount>,
    /// The largest value a counter, an amount or an expiry (Unix milliseconds) may take:
    /// what the backend can store ([`Account::with_value_limit`]).
    limit: u64,
    /// While a [`Savepoint`] is open: how to undo each change to the history maps
    /// (`resolved`, `owners`, `refunded`), newest last.
    undo: Option<Vec<Undo>>,
}

/// One change to an account's history maps, as [`Account::rollback`] undoes it: the key
/// and the value it had before (`None`: absent).
#[derive(Clone, Debug)]
enum Undo {
    Resolved(HoldId, Option<HoldResolution>),
    Owner(HoldId, Option<BranchId>),
    Refunded(EntrySeq, Option<Amount>),
}

/// The state an account returns to on [`Account::rollback`]: a copy of its live parts
/// (counters, lots, active holds), not of its history, so a savepoint costs the same on a
/// tenant with a million resolved holds as on a new one. Take it with
/// [`Account::savepoint`].
#[derive(Clone, Debug)]
#[must_use = "a savepoint is either rolled back to or released"]
pub struct Savepoint {
    header: AccountHeader,
    lots: BTreeMap<LotKey, Amount>,
    holds: HashMap<HoldId, Hold>,
    deadlines: BTreeSet<(Timestamp, HoldId)>,
}

impl Account {
    /// A new, empty account.
    #[must_use]
    pub fn new(tenant: TenantId, settings: TenantSettings, now: Timestamp) -> Account {
        Account {
            header: AccountHeader {
                tenant,
                settings,
                totals: Totals::default(),
                next_entry: 1,
                next_lot: 1,
                next_hold: 1,
                last_at: now,
                status: AccountStatus::Open,
                next_event: 1,
            },
            lots: BTreeMap::new(),
            holds: HashMap::new(),
            deadlines: BTreeSet::new(),
            resolved: HashMap::new(),
            owners: HashMap::new(),
            refunded: HashMap::new(),
            limit: u64::MAX,
            undo: None,
        }
    }

    /// The same account, refusing every change that would take a counter, an amount or an
    /// expiry above `limit` (PostgreSQL stores `bigint`: `i64::MAX`). The change is refused
    /// with [`LedgerError::AmountOverflow`] before anything moves, exactly as an overflow of
    /// a `u64` is; an expiry of [`Timestamp::MAX`] ("never") is not a stored time and stays
    /// allowed. The default is `u64::MAX`.
    ///
    /// Every stock (available, held, consumed, expired) is part of the inflow side of the
    /// conservation equation (granted + refunded + overdrawn), so bounding that sum bounds
    /// every counter.
    #[must_use]
    pub fn with_value_limit(mut self, limit: u64) -> Account {
        self.limit = limit;
        self
    }

    /// The limit set by [`with_value_limit`](Self::with_value_limit).
    #[must_use]
    pub fn value_limit(&self) -> u64 {
        self.limit
    }

    /// Opens a savepoint: changes from now on can be undone with
    /// [`rollback`](Self::rollback), or kept with [`release`](Self::release). What a backend
    /// applying several requests all or nothing uses instead of a copy of the account: it
    /// copies the live parts only (counters, lots, active holds) and logs how to undo each
    /// change to the history (resolved holds, refund tallies), so its cost does not grow
    /// with the tenant's history. One savepoint at a time: opening another replaces it.
    pub fn savepoint(&mut self) -> Savepoint {
        self.undo = Some(Vec::new());
        Savepoint {
            header: self.header.clone(),
            lots: self.lots.clone(),
            holds: self.holds.clone(),
            deadlines: self.deadlines.clone(),
        }
    }

    /// Returns the account to `savepoint`: every change since is undone.
    pub fn rollback(&mut self, savepoint: Savepoint) {
        for undo in self.undo.take().unwrap_or_default().into_iter().rev() {
            match undo {
                Undo::Resolved(id, before) => restore(&mut self.resolved, id, before),
                Undo::Owner(id, before) => restore(&mut self.owners, id, before),
                Undo::Refunded(entry, before) => restore(&mut self.refunded, entry, before),
            }
        }
        let Savepoint {
            header,
            lots,
            holds,
            deadlines,
        } = savepoint;
        self.header = header;
        self.lots = lots;
        self.holds = holds;
        self.deadlines = deadlines;
    }

    /// Keeps every change since the savepoint (closes it).
    pub fn release(&mut self, savepoint: Savepoint) {
        drop(savepoint);
        self.undo = None;
    }

    fn set_resolved(&mut self, id: HoldId, resolution: HoldResolution) {
        let before = self.resolved.insert(id, resolution);
        if let Some(undo) = &mut self.undo {
            undo.push(Undo::Resolved(id, before));
        }
    }

    fn set_owner(&mut self, id: HoldId, owner: BranchId) {
        let before = self.owners.insert(id, owner);
        if let Some(undo) = &mut self.undo {
            undo.push(Undo::Owner(id, before));
        }
    }

    fn set_refunded(&mut self, entry: EntrySeq, amount: Amount) {
        let before = self.refunded.insert(entry, amount);
        if let Some(undo) = &mut self.undo {
            undo.push(Undo::Refunded(entry, before));
        }
    }

    /// Rebuilds an account from what a backend stored, checking that the counters agree with
    /// the lots and holds.
    ///
    /// # Errors
    /// [`LedgerError::Storage`] (not retryable) if the parts are inconsistent.
    pub fn from_parts(parts: AccountParts) -> Result<Account, LedgerError> {
        let corrupt = |what: &str| {
            LedgerError::Storage(crate::StorageError::permanent(format!(
                "inconsistent account {}: {what}",
                parts.header.tenant
            )))
        };
        let mut account = Account {
            header: parts.header.clone(),
            lots: BTreeMap::new(),
            holds: HashMap::with_capacity(parts.holds.len()),
            deadlines: BTreeSet::new(),
            resolved: parts.resolved.iter().copied().collect(),
            owners: parts.owners.iter().copied().collect(),
            refunded: parts.refunded.iter().copied().collect(),
            limit: u64::MAX,
            undo: None,
        };
        let mut lots = Amount::ZERO;
        for lot in &parts.lots {
            if lot.remaining.is_zero() || account.lots.insert(lot.key, lot.remaining).is_some() {
                return Err(corrupt("empty or duplicate lot"));
            }
            lots = lots.checked_add(lot.remaining)?;
        }
        let mut held = Amount::ZERO;
        for hold in parts.holds {
            held = held.checked_add(hold.amount)?;
            if hold.owner.is_none() {
                // A transaction's hold never expires on its own.
                account.deadlines.insert((hold.expires_at, hold.id));
            }
            if account.holds.insert(hold.id, hold).is_some() {
                return Err(corrupt("duplicate hold"));
            }
        }
        account.header.totals.lots = lots;
        account.header.totals.holds = held;
        if lots != account.header.totals.available || held != account.header.totals.held {
            return Err(corrupt("counters do not match lots and holds"));
        }
        Ok(account)
    }

    /// The tenant.
    #[must_use]
    pub fn tenant(&self) -> &TenantId {
        &self.header.tenant
    }

    /// The tenant row to persist.
    #[must_use]
    pub fn header(&self) -> &AccountHeader {
        &self.header
    }

    /// Current balance (as of the last applied change; call [`expire_due`](Self::expire_due)
    /// first to account for the passage of time).
    #[must_use]
    pub fn balance(&self) -> Balance {
        self.header.totals.balance()
    }

    /// What can be consumed right now: available credits plus unused overdraft allowance.
    #[must_use]
    pub fn spendable(&self) -> Amount {
        let t = &self.header.totals;
        let headroom = self
            .header
            .settings
            .overdraft_limit
            .saturating_sub(t.overdrawn);
        Amount::new(t.available.units().saturating_add(headroom.units()))
    }

    /// Counters and current balance, with `lots` and `holds` recomputed from live state.
    #[must_use]
    pub fn totals(&self) -> Totals {
        let mut t = self.header.totals;
        t.lots = Amount::new(self.lots.values().map(|a| a.units()).sum());
        t.holds = Amount::new(self.holds.values().map(|h| h.amount.units()).sum());
        t
    }

    /// A live lot's remaining amount (`None` once spent or expired).
    #[must_use]
    pub fn lot(&self, key: &LotKey) -> Option<Amount> {
        self.lots.get(key).copied()
    }

    /// Live lots in spending order.
    pub fn lots(&self) -> impl Iterator<Item = Lot> + '_ {
        self.lots.iter().map(|(k, a)| Lot {
            key: *k,
            remaining: *a,
        })
    }

    /// An active hold.
    #[must_use]
    pub fn hold(&self, id: HoldId) -> Option<&Hold> {
        self.holds.get(&id)
    }

    /// Active holds (in no particular order).
    pub fn holds(&self) -> impl Iterator<Item = &Hold> + '_ {
        self.holds.values()
    }

    /// Number of active holds.
    #[must_use]
    pub fn active_holds(&self) -> usize {
        self.holds.len()
    }

    /// How a resolved hold ended.
    #[must_use]
    pub fn resolution(&self, id: HoldId) -> Option<HoldResolution> {
        self.resolved.get(&id).copied()
    }

    /// The transaction branch that owns (or owned) a hold, if one does.
    #[must_use]
    pub fn owner(&self, id: HoldId) -> Option<BranchId> {
        self.holds
            .get(&id)
            .and_then(|h| h.owner)
            .or_else(|| self.owners.get(&id).copied())
    }

    /// What is known about a hold.
    #[must_use]
    pub fn hold_state(&self, id: HoldId) -> Option<HoldState> {
        if let Some(h) = self.holds.get(&id) {
            return Some(HoldState::Active {
                amount: h.amount,
                expires_at: h.expires_at,
            });
        }
        self.resolved.get(&id).map(|r| HoldState::Resolved(*r))
    }

    /// How much of a `Consumed`/`Committed` entry has been refunded so far.
    #[must_use]
    pub fn refunded(&self, entry: EntrySeq) -> Amount {
        self.refunded.get(&entry).copied().unwrap_or(Amount::ZERO)
    }

    /// The earliest time at which something (a hold or a lot) expires, if any.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let hold = self.deadlines.first().map(|(t, _)| *t);
        let lot = self
            .lots
            .keys()
            .next()
            .map(|k| k.expires_at)
            .filter(|t| *t != Timestamp::MAX);
        match (hold, lot) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Applies one request at `now`: first every expiry due by then, then the command.
    ///
    /// `refund_target` is the journal entry the command refers to ([`Command::refers_to`]),
    /// which the caller looks up; pass `None` for other commands. Idempotency is the caller's
    /// job (look the key up first, [`IdempotencyRecord::replay`](crate::IdempotencyRecord::replay)
    /// on a hit, store the record with the change set otherwise).
    ///
    /// On a domain error the command changed nothing, but due expiries in the change set
    /// still happened and must be persisted.
    pub fn apply(
        &mut self,
        request: &Request,
        now: Timestamp,
        refund_target: Option<&JournalEntry>,
    ) -> Applied {
        let mut fx = Applied::new();
        let at = match request.command.import_time() {
            // An import happens at its own time, in order (after the tenant's last entry;
            // a tenant without entries takes any past time), never after now; a refused
            // one applies nothing (not even expiries).
            Some(t) if self.header.next_entry > 1 && t < self.header.last_at => {
                fx.result = Err(LedgerError::ImportOutOfOrder {
                    at: t,
                    last: self.header.last_at,
                });
                return fx;
            }
            Some(t) if t > now => {
                fx.result = Err(LedgerError::ImportInFuture { at: t, now });
                return fx;
            }
            Some(t) => t,
            None => now.max(self.header.last_at),
        };
        self.expire_holds(at, &mut fx);
        self.expire_lots(at, &mut fx);
        let key = Some(&request.key);
        let result = match self.admits(&request.command) {
            Err(e) => Err(e),
            Ok(()) => self.run(&mut fx, at, key, &request.command, refund_target),
        };
        // Credits released into lots that expired meanwhile stop counting at once.
        self.expire_lots(at, &mut fx);
        fx.result = result.map(|mut o| {
            o.balance = self.balance();
            Some(o)
        });
        fx
    }

    /// The tenant's status ([`Command::Freeze`], [`Command::Close`]).
    #[must_use]
    pub fn status(&self) -> AccountStatus {
        self.header.status
    }

    /// Whether the tenant's status lets `command` run: a closed tenant refuses everything,
    /// a frozen one refuses what spends or sets credits aside (and a second freeze).
    fn admits(&self, command: &Command) -> Result<(), LedgerError> {
        let tenant = || self.header.tenant.clone();
        match (self.header.status, command) {
            (AccountStatus::Closed, _) => Err(LedgerError::TenantClosed(tenant())),
            (
                AccountStatus::Frozen,
                Command::Consume { .. }
                | Command::ImportConsume { .. }
                | Command::ConsumeUpTo { .. }
                | Command::Reserve { .. }
                | Command::Prepare { .. }
                | Command::Freeze,
            ) => Err(LedgerError::TenantFrozen(tenant())),
            (AccountStatus::Open, Command::Unfreeze) => Err(LedgerError::TenantNotFrozen(tenant())),
            _ => Ok(()),
        }
    }

    fn run(
        &mut self,
        fx: &mut Applied,
        at: Timestamp,
        key: Option<&IdempotencyKey>,
        command: &Command,
        refund_target: Option<&JournalEntry>,
    ) -> Result<Receipt, LedgerError> {
        match *command {
            Command::Grant {
                amount,
                expires_at,
                priority,
            }
            | Command::TaggedGrant {
                amount,
                expires_at,
                priority,
                ..
            }
            | Command::ImportGrant {
                amount,
                expires_at,
                priority,
                ..
            } => {
                let kind = if command.import_time().is_some() {
                    EntryKind::ImportedGrant
                } else {
                    EntryKind::Granted
                };
                self.grant(fx, at, key, amount, expires_at, priority, kind)
            }
            Command::Consume { amount } => self.consume(fx, at, key, amount, EntryKind::Consumed),
            Command::ImportConsume { amount, .. } => {
                self.consume(fx, at, key, amount, EntryKind::ImportedConsume)
            }
            Command::ConsumeUpTo { max } => self.consume_up_to(fx, at, key, max),
            Command::Reserve { amount, ttl } => self.reserve(fx, at, key, amount, ttl),
            Command::Commit { hold, amount } => self.resolve(fx, at, key, hold, Some(amount), None),
            Command::CommitUpTo { hold, max } => {
                if max.is_zero() {
                    Err(LedgerError::ZeroAmount)
                } else {
                    let held = self.holds.get(&hold).map_or(max, |h| h.amount);
                    self.resolve(fx, at, key, hold, Some(max.min(held)), None)
                }
            }
            Command::Cancel { hold } => self.resolve(fx, at, key, hold, None, None),
            Command::Prepare { amount, branch } => self.prepare(fx, at, key, amount, branch),
            Command::CommitPrepared {
                branch,
                hold,
                amount,
            } => {
                let spend = (!amount.is_zero()).then_some(amount);
                self.resolve(fx, at, key, hold, spend, Some(branch))
            }
            Command::AbortPrepared { branch, hold } => {
                match hold.or_else(|| self.hold_of(branch)) {
                    Some(hold) => self.resolve(fx, at, key, hold, None, Some(branch)),
                    None => Err(LedgerError::BranchNotPrepared { branch }),
                }
            }
            Command::Refund { entry, amount } => {
                self.refund(fx, at, key, entry, amount, refund_target)
            }
            Command::VoidLot { lot, ref reason } => self
                .void_lot(fx, at, key, lot, reason.clone())
                .map(|(seq, voided)| Self::outcome(seq, at, Effect::Voided { lot, voided })),
            Command::Freeze => Ok(self.set_status(fx, at, key, AccountStatus::Frozen)),
            Command::Unfreeze => Ok(self.set_status(fx, at, key, AccountStatus::Open)),
            Command::Close => self.close(fx, at, key),
        }
    }

    /// Expires every hold and lot due by `now` (what a sweeper or a read does).
    pub fn expire_due(&mut self, now: Timestamp) -> Applied {
        let mut fx = Applied::new();
        let at = now.max(self.header.last_at);
        self.expire_holds(at, &mut fx);
        self.expire_lots(at, &mut fx);
        fx
    }

    // ---- the rules -------------------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        fx: &mut Applied,
        at: Timestamp,
        kind: EntryKind,
        amount: Amount,
        before: Balance,
        hold: Option<HoldId>,
        lot: Option<LotId>,
        refers_to: Option<EntrySeq>,
        key: Option<&IdempotencyKey>,
    ) -> EntrySeq {
        let seq = EntrySeq::new(self.header.next_entry);
        self.header.next_entry = self.header.next_entry.saturating_add(1);
        self.header.last_at = at;
        let after = self.balance();
        // Events come from this entry's own before/after balances: a threshold is armed
        // exactly while available is at or above it, so no state is kept anywhere else.
        let thresholds = self.header.settings.thresholds;
        for threshold in thresholds.crossed(before.available, after.available) {
            fx.events.push(BalanceEvent {
                tenant: self.header.tenant.clone(),
                seq: EventSeq::new(self.header.next_event),
                at,
                threshold,
                entry: seq,
                available: after.available,
            });
            self.header.next_event = self.header.next_event.saturating_add(1);
        }
        fx.entries.push(JournalEntry {
            tenant: self.header.tenant.clone(),
            seq,
            at,
            kind,
            amount,
            before,
            after,
            hold,
            lot,
            refers_to,
            key: key.cloned(),
            reason: None,
        });
        seq
    }

    /// Checks that the inflow side of the conservation equation still fits in a `u64` and
    /// under the account's [value limit](Self::with_value_limit); then every stock
    /// (available, held, consumed, expired) and every sum of them fits too.
    fn check_inflow(
        &self,
        granted: Amount,
        refunded: Amount,
        overdrawn: Amount,
    ) -> Result<(), LedgerError> {
        let inflow = granted.checked_add(refunded)?.checked_add(overdrawn)?;
        if inflow.units() > self.limit {
            return Err(LedgerError::AmountOverflow);
        }
        Ok(())
    }

    /// Checks that an expiry is "never" or a time the backend can store.
    fn check_expiry(&self, t: Timestamp) -> Result<(), LedgerError> {
        if t != Timestamp::MAX && t.as_unix_millis() > self.limit {
            return Err(LedgerError::AmountOverflow);
        }
        Ok(())
    }

    fn outcome(entry: EntrySeq, at: Timestamp, effect: Effect) -> Receipt {
        Receipt {
            entry,
            at,
            balance: Balance::default(),
            effect,
        }
    }

    /// Adds credits: pays overdraft debt first, the rest becomes a new lot.
    /// Validation is the caller's; this only mutates.
    fn credit(
        &mut self,
        fx: &mut Applied,
        amount: Amount,
        expires_at: Timestamp,
        priority: u16,
    ) -> Option<LotId> {
        let t = &mut self.header.totals;
        let pay = amount.min(t.overdrawn);
        let rest = amount.saturating_sub(pay);
        t.overdrawn = t.overdrawn.saturating_sub(pay);
        if rest.is_zero() {
            return None;
        }
        t.available = Amount::new(t.available.units().saturating_add(rest.units()));
        let id = LotId::new(self.header.next_lot);
        self.header.next_lot = self.header.next_lot.saturating_add(1);
        let key = LotKey {
            expires_at,
            priority,
            id,
        };
        self.lots.insert(key, rest);
        fx.lots_changed.push(key);
        Some(id)
    }

    #[allow(clippy::too_many_arguments)] // a grant's fields, and the kind of its entry
    fn grant(
        &mut self,
        fx: &mut Applied,
        at: Timestamp,
        key: Option<&IdempotencyKey>,
        amount: Amount,
        expires_at: Option<Timestamp>,
        priority: u16,
        kind: EntryKind,
    ) -> Result<Receipt, LedgerError> {
        if amount.is_zero() {
            return Err(LedgerError::ZeroAmount);
        }
        let expires_at = match expires_at {
            Some(t) if t <= at => return Err(LedgerError::ExpiryNotInFuture),
            Some(t) => t,
            None => Timestamp::MAX,
        };
        self.check_expiry(expires_at)?;
        let t = self.header.totals;
        let granted = t.granted.checked_add(amount)?;
        self.check_inflow(granted, t.refunded, t.overdrawn)?;
        let before = self.balance();
        self.header.totals.granted = granted;
        let lot = self.credit(fx, amount, expires_at, priority);
        let seq = self.push(fx, at, kind, amount, before, None, lot, None, key);
        Ok(Self::outcome(seq, at, Effect::Granted { lot }))
    }

    /// Takes `amount` (≤ available) from lots in spending order.
    fn take_from_lots(
        &mut self,
        fx: &mut Applied,
        amount: Amount,
        draws: Option<&mut SmallVec<[Draw; 1]>>,
    ) {
        let mut need = amount;
        let mut draws = draws;
        while !need.is_zero() {
            let Some(mut entry) = self.lots.first_entry() else {
                break;
            };
            let lot = *entry.key();
            let have = *entry.get();
            let take = have.min(need);
            need = need.saturating_sub(take);
            if take == have {
                entry.remove();
            } else {
                *entry.get_mut() = have.saturating_sub(take);
            }
            fx.lots_changed.push(lot);
            if let Some(d) = draws.as_deref_mut() {
                d.push(Draw { lot, amount: take });
            }
        }
        let t = &mut self.header.totals;
        t.available = t.available.saturating_sub(amount);
    }

    /// [`Command::ConsumeUpTo`]: a consume of `min(max, spendable)`, refused only when
    /// nothing is spendable.
    fn consume_up_to(
        &mut self,
        fx: &mut Applied,
        at: Timestamp,
        key: Option<&IdempotencyKey>,
        max: Amount,
    ) -> Result<Receipt, LedgerError> {
        if max.is_zero() {
            return Err(LedgerError::ZeroAmount);
        }
        let spendable = self.spendable();
        let amount = max.min(spendable);
        if amount.is_zero() {
            return Err(LedgerError::InsufficientCredits {
                requested: max,
                spendable,
            });
        }
        let mut receipt = self.consume(fx, at, key, amount, EntryKind::Consumed)?;
        receipt.effect = Effect::Taken { amount };
        Ok(receipt)
    }

    fn consume(
        &mut self,
        fx: &mut Applied,
        at: Timestamp,
        key: Option<&IdempotencyKey>,
        amount: Amount,
        kind: EntryKind,
    ) -> Result<Receipt, LedgerError> {
        if amount.is_zero() {
            return Err(LedgerError::ZeroAmount);
        }
        let spendable = self.spendable();
        if amount > spendable {
            return Err(LedgerError::InsufficientCredits {
                requested: amount,
                spendable,
            });
        }
        let t = self.header.totals;
        let consumed = t.consumed.checked_add(amount)?;
        let from_lots = amount.min(t.available);
        let debt = amount.saturating_sub(from_lots);
        let overdrawn = t.overdrawn.checked_add(debt)?;
        self.check_inflow(t.granted, t.refunded, overdrawn)?;
        let before = self.balance();
        self.take_from_lots(fx, from_lots, None);
        self.header.totals.overdrawn = overdrawn;
        self.header.totals.consumed = consumed;
        let seq = self.push(fx, at, kind, amount, before, None, None, None, key);
        Ok(Self::outcome(seq, at, Effect::Consumed))
    }

    fn reserve(
        &mut self,
        fx: &mut Applied,
        at: Timestamp,
        key: Option<&IdempotencyKey>,
        amount: Amount,
        ttl: Duration,
    ) -> Result<Receipt, LedgerError> {
        if amount.is_zero() {
            return Err(LedgerError::ZeroAmount);
        }
        if ttl.is_zero() {
            return Err(LedgerError::ZeroTtl);
        }
        // Round up to whole milliseconds so a sub-millisecond TTL is not an instant expiry.
        let ttl_ms = u64::try_from(ttl.as_nanos().div_ceil(1_000_000))
            .map_err(|_| LedgerError::AmountOverflow)?;
        let expires_at = at
            .checked_add(Duration::from_millis(ttl_ms))
            .filter(|t| *t != Timestamp::MAX)
            .ok_or(LedgerError::AmountOverflow)?;
        self.check_expiry(expires_at)?;
        self.take_hold(fx, at, key, amount, expires_at, None)
    }

    /// Phase one of a transaction branch: a hold owned by `branch`, which never expires on
    /// its own. A branch holds at most one hold: preparing it again while its hold is active
    /// answers [`LedgerError::BranchAlreadyPrepared`] naming that hold.
    fn prepare(
        &mut self,
        fx: &mut Applied,
        at: Timestamp,
        key: Option<&IdempotencyKey>,
        amount: Amount,
        branch: BranchId,
    ) -> Result<Receipt, LedgerError> {
        if amount.is_zero() {
            return Err(LedgerError::ZeroAmount);
        }
        if let Some(hold) = self.hold_of(branch) {
            return Err(LedgerError::BranchAlreadyPrepared { branch, hold });
        }
        self.take_hold(fx, at, key, amount, Timestamp::MAX, Some(branch))
    }

    /// The active hold `branch` owns, if any.
    fn hold_of(&self, branch: BranchId) -> Option<HoldId> {
        self.holds
            .values()
            .find(|h| h.owner == Some(branch))
            .map(|h| h.id)
    }

    fn take_hold(
        &mut self,
        fx: &mut Applied,
        at: Timestamp,
        key: Option<&IdempotencyKey>,
        amount: Amount,
        expires_at: Timestamp,
        owner: Option<BranchId>,
    ) -> Result<Receipt, LedgerError> {
        let t = self.header.totals;
        if amount > t.available {
            return Err(LedgerError::InsufficientCredits {
                requested: amount,
                spendable: t.available,
            });
        }
        let held = t.held.checked_add(amount)?;
        let before = self.balance();
        let id = HoldId::new(self.header.next_hold);
        self.header.next_hold = self.header.next_hold.saturating_add(1);
        let mut draws = SmallVec::new();
        self.take_from_lots(fx, amount, Some(&mut draws));
        self.header.totals.held = held;
        self.holds.insert(
            id,
            Hold {
                id,
                amount,
                expires_at,
                draws,
                owner,
            },
        );
        if owner.is_none() {
            self.deadlines.insert((expires_at, id));
        }
        fx.holds_changed.push(id);
        let seq = self.push(
            fx,
            at,
            EntryKind::Reserved,
            amount,
            before,
            Some(id),
            None,
            None,
            key,
        );
        Ok(Self::outcome(
            seq,
            at,
            Effect::Reserved {
                hold: id,
                expires_at,
            },
        ))
    }

    /// Returns the draws of a hold, after skipping the first `skip` units (the spent part),
    /// to their lots; moves them from `held` to `available`.
    fn release_draws(&mut self, fx: &mut Applied, draws: &[Draw], skip: Amount) -> Amount {
        let mut skip = skip;
        let mut released = Amount::ZERO;
        for d in draws {
            let spent = d.amount.min(skip);
            skip = skip.saturating_sub(spent);
            let back = d.amount.saturating_sub(spent);
            if back.is_zero() {
                continue;
            }
            let slot = self.lots.entry(d.lot).or_insert(Amount::ZERO);
            *slot = Amount::new(slot.units().saturating_add(back.units()));
            fx.lots_changed.push(d.lot);
            released = Amount::new(released.units().saturating_add(back.units()));
        }
        let t = &mut self.header.totals;
        t.held = t.held.saturating_sub(released);
        t.available = Amount::new(t.available.units().saturating_add(released.units()));
        released
    }

    /// Commits (`commit` is `Some`) or cancels a hold. `by` is the transaction branch
    /// asking (`None`: an ordinary caller); a hold owned by a branch answers only to it.
    fn resolve(
        &mut self,
        fx: &mut Applied,
        at: Timestamp,
        key: Option<&IdempotencyKey>,
        id: HoldId,
        commit: Option<Amount>,
        by: Option<BranchId>,
    ) -> Result<Receipt, LedgerError> {
        if commit.is_some_and(Amount::is_zero) {
            return Err(LedgerError::ZeroAmount);
        }
        match (self.owner(id), by) {
            (Some(owner), by) if by != Some(owner) => {
                return Err(LedgerError::HoldOwnedByTransaction { hold: id, owner });
            }
            // A branch names a hold it does not own.
            (None, Some(branch)) => return Err(LedgerError::BranchNotPrepared { branch }),
            _ => {}
        }
        let Some(hold) = self.holds.get(&id) else {
            return Err(match self.resolved.get(&id) {
                Some(HoldResolution::Committed { .. }) => LedgerError::HoldAlreadyCommitted(id),
                Some(HoldResolution::Cancelled) => LedgerError::HoldAlreadyCancelled(id),
                Some(HoldResolution::Expired) => LedgerError::HoldExpired(id),
                None => LedgerError::UnknownHold(id),
            });
        };
        let held = hold.amount;
        let t = self.header.totals;
        let spend = commit.unwrap_or(Amount::ZERO);
        if spend > held {
            return Err(LedgerError::CommitExceedsHold {
                hold: id,
                held,
                requested: spend,
            });
        }
        let consumed = t.consumed.checked_add(spend)?;
        let Some(hold) = self.holds.remove(&id) else {
            return Err(LedgerError::UnknownHold(id));
        };
        self.deadlines.remove(&(hold.expires_at, id));
        if let Some(owner) = hold.owner {
            self.set_owner(id, owner);
        }
        fx.holds_changed.push(id);
        let (seq, effect) = if commit.is_some() {
            self.set_resolved(id, HoldResolution::Committed { committed: spend });
            let before = self.balance();
            self.header.totals.held = t.held.saturating_sub(spend);
            self.header.totals.consumed = consumed;
            let seq = self.push(
                fx,
                at,
                EntryKind::Committed,
                spend,
                before,
                Some(id),
                None,
                None,
                key,
            );
            let rest = held.saturating_sub(spend);
            if !rest.is_zero() {
                let before = self.balance();
                self.release_draws(fx, &hold.draws, spend);
                self.push(
                    fx,
                    at,
                    EntryKind::Released,
                    rest,
                    before,
                    Some(id),
                    None,
                    None,
                    key,
                );
            }
            let effect = Effect::Committed {
                hold: id,
                committed: spend,
                released: rest,
            };
            (seq, effect)
        } else {
            self.set_resolved(id, HoldResolution::Cancelled);
            let before = self.balance();
            self.release_draws(fx, &hold.draws, Amount::ZERO);
            let seq = self.push(
                fx,
                at,
                EntryKind::Cancelled,
                held,
                before,
                Some(id),
                None,
                None,
                key,
            );
            (
                seq,
                Effect::Cancelled {
                    hold: id,
                    released: held,
                },
            )
        };
        Ok(Self::outcome(seq, at, effect))
    }

    fn refund(
        &mut self,
        fx: &mut Applied,
        at: Timestamp,
        key: Option<&IdempotencyKey>,
        entry: EntrySeq,
        amount: Amount,
        target: Option<&JournalEntry>,
    ) -> Result<Receipt, LedgerError> {
        if amount.is_zero() {
            return Err(LedgerError::ZeroAmount);
        }
        // An entry made by this very call's expiry pass is an expiry: not refundable.
        let target = target
            .filter(|e| e.seq == entry && e.tenant == self.header.tenant)
            .or_else(|| fx.entries.iter().find(|e| e.seq == entry));
        let Some(target) = target else {
            return Err(LedgerError::UnknownEntry(entry));
        };
        if !target.kind.is_refundable() {
            return Err(LedgerError::NotRefundable(entry));
        }
        if let Some(owner) = target.hold.and_then(|h| self.owners.get(&h)) {
            // A transaction's charge is the transaction's: its own decision made it.
            return Err(LedgerError::HoldOwnedByTransaction {
                hold: target.hold.unwrap_or(HoldId::new(0)),
                owner: *owner,
            });
        }
        let already = self.refunded(entry);
        let refundable = target.amount.saturating_sub(already);
        if amount > refundable {
            return Err(LedgerError::RefundExceedsConsumed {
                entry,
                refundable,
                requested: amount,
            });
        }
        let t = self.header.totals;
        let refunded = t.refunded.checked_add(amount)?;
        self.check_inflow(t.granted, refunded, t.overdrawn)?;
        let before = self.balance();
        self.header.totals.refunded = refunded;
        self.set_refunded(
            entry,
            Amount::new(already.units().saturating_add(amount.units())),
        );
        fx.refund_changed = Some(entry);
        let lot = self.credit(fx, amount, Timestamp::MAX, 0);
        let seq = self.push(
            fx,
            at,
            EntryKind::Refunded,
            amount,
            before,
            None,
            lot,
            Some(entry),
            key,
        );
        Ok(Self::outcome(seq, at, Effect::Refunded { lot }))
    }

    /// Removes what is left of `lot` (see [`Command::VoidLot`]); returns the entry and the
    /// amount removed.
    fn void_lot(
        &mut self,
        fx: &mut Applied,
        at: Timestamp,
        key: Option<&IdempotencyKey>,
        lot: LotId,
        reason: Reason,
    ) -> Result<(EntrySeq, Amount), LedgerError> {
        if lot.get() == 0 || lot.get() >= self.header.next_lot {
            return Err(LedgerError::UnknownLot(lot));
        }
        let Some(lot_key) = self.lots.keys().find(|k| k.id == lot).copied() else {
            return Err(LedgerError::LotEmpty(lot));
        };
        let t = self.header.totals;
        let remaining = self.lots.get(&lot_key).copied().unwrap_or(Amount::ZERO);
        let expired = t.expired.checked_add(remaining)?;
        let before = self.balance();
        self.lots.remove(&lot_key);
        fx.lots_changed.push(lot_key);
        // Credits of the lot sitting in holds stay held; should a hold release them, they
        // go back to the lot under a key that is already due, so they expire at once.
        let voided_key = LotKey {
            expires_at: at,
            ..lot_key
        };
        for hold in self.holds.values_mut() {
            if hold.draws.iter().any(|d| d.lot == lot_key) {
                for d in hold.draws.iter_mut().filter(|d| d.lot == lot_key) {
                    d.lot = voided_key;
                }
                fx.holds_changed.push(hold.id);
            }
        }
        let t = &mut self.header.totals;
        t.available = t.available.saturating_sub(remaining);
        t.expired = expired;
        let seq = self.push(
            fx,
            at,
            EntryKind::LotVoided,
            remaining,
            before,
            None,
            Some(lot),
            None,
            key,
        );
        if let Some(e) = fx.entries.last_mut() {
            e.reason = Some(reason);
        }
        Ok((seq, remaining))
    }

    /// Changes the tenant's status with one entry (amount zero).
    fn set_status(
        &mut self,
        fx: &mut Applied,
        at: Timestamp,
        key: Option<&IdempotencyKey>,
        status: AccountStatus,
    ) -> Receipt {
        let (kind, effect) = match status {
            AccountStatus::Frozen => (EntryKind::Frozen, Effect::Frozen),
            AccountStatus::Open => (EntryKind::Unfrozen, Effect::Unfrozen),
            AccountStatus::Closed => (
                EntryKind::Closed,
                Effect::Closed {
                    voided: Amount::ZERO,
                },
            ),
        };
        let before = self.balance();
        self.header.status = status;
        let seq = self.push(fx, at, kind, Amount::ZERO, before, None, None, None, key);
        Self::outcome(seq, at, effect)
    }

    /// [`Command::Close`]: refused while holds are open; voids every live lot, then closes.
    fn close(
        &mut self,
        fx: &mut Applied,
        at: Timestamp,
        key: Option<&IdempotencyKey>,
    ) -> Result<Receipt, LedgerError> {
        if !self.holds.is_empty() {
            return Err(LedgerError::HoldsOpen {
                tenant: self.header.tenant.clone(),
                holds: u64::try_from(self.holds.len()).unwrap_or(u64::MAX),
            });
        }
        let reason = Reason::new(CLOSE_REASON)?;
        let lots: Vec<LotId> = self.lots.keys().map(|k| k.id).collect();
        let mut voided = Amount::ZERO;
        for lot in lots {
            let (_, amount) = self.void_lot(fx, at, key, lot, reason.clone())?;
            voided = voided.checked_add(amount)?;
        }
        let mut receipt = self.set_status(fx, at, key, AccountStatus::Closed);
        receipt.effect = Effect::Closed { voided };
        Ok(receipt)
    }

    fn expire_holds(&mut self, at: Timestamp, fx: &mut Applied) {
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > at {
                break;
            }
            self.deadlines.pop_first();
            let Some(hold) = self.holds.remove(&id) else {
                continue;
            };
            self.set_resolved(id, HoldResolution::Expired);
            fx.holds_changed.push(id);
            let before = self.balance();
            self.release_draws(fx, &hold.draws, Amount::ZERO);
            self.push(
                fx,
                at,
                EntryKind::HoldExpired,
                hold.amount,
                before,
                Some(id),
                None,
                None,
                None,
            );
        }
    }

    fn expire_lots(&mut self, at: Timestamp, fx: &mut Applied) {
        while let Some(entry) = self.lots.first_entry() {
            if !entry.key().expired_at(at) {
                break;
            }
            let (lot, remaining) = entry.remove_entry();
            fx.lots_changed.push(lot);
            let rolled = self.roll_over(fx, at, lot, remaining);
            let rest = remaining.saturating_sub(rolled);
            if rest.is_zero() {
                continue;
            }
            let before = self.balance();
            let t = &mut self.header.totals;
            t.available = t.available.saturating_sub(rest);
            t.expired = Amount::new(t.expired.units().saturating_add(rest.units()));
            self.push(
                fx,
                at,
                EntryKind::LotExpired,
                rest,
                before,
                None,
                Some(lot.id),
                None,
                None,
            );
        }
    }

    /// Under the tenant's [`RolloverPolicy`](crate::RolloverPolicy), grants what rolls over
    /// of an expiring lot's `remaining` credits as a new lot (same priority, expiring the
    /// policy's ttl after `at`); returns how much. Nothing rolls over when the new expiry
    /// would pass what the backend stores.
    fn roll_over(
        &mut self,
        fx: &mut Applied,
        at: Timestamp,
        lot: LotKey,
        remaining: Amount,
    ) -> Amount {
        let Some(policy) = self.header.settings.rollover else {
            return Amount::ZERO;
        };
        let rolled = policy.rolled(remaining);
        let Some(expires_at) = at.checked_add(policy.ttl()) else {
            return Amount::ZERO;
        };
        if rolled.is_zero() || self.check_expiry(expires_at).is_err() {
            return Amount::ZERO;
        }
        let id = LotId::new(self.header.next_lot);
        self.header.next_lot = self.header.next_lot.saturating_add(1);
        let key = LotKey {
            expires_at,
            priority: lot.priority,
            id,
        };
        self.lots.insert(key, rolled);
        fx.lots_changed.push(key);
        let before = self.balance();
        self.push(
            fx,
            at,
            EntryKind::RolledOver,
            rolled,
            before,
            None,
            Some(id),
            None,
            None,
        );
        rolled
    }
}

/// Puts `before` back under `key` (removes the key when it was absent).
fn restore<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, key: K, before: Option<V>) {
    match before {
        Some(v) => {
            map.insert(key, v);
        }
        None => {
            map.remove(&key);
        }
    }
}
