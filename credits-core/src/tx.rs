//! Two-phase commit across participants: [`TransactionManager`], [`Participant`], [`TxLog`].
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use credits_core::tx::{HoldBranch, LedgerHolds, MemoryTxLog, TransactionManager, TxOutcome};
//! use credits_core::{Amount, GrantOptions, IdempotencyKey, Ledger, TenantId, TenantSettings};
//! use metered_clock::{ManualClock, Timestamp};
//!
//! # futures::executor::block_on(async {
//! let clock = ManualClock::new(Timestamp::from_unix_millis(1_700_000_000_000));
//! let ledger = Ledger::in_memory(clock.clone());
//! let acme = TenantId::new("acme")?;
//! ledger.create_tenant(&acme, TenantSettings::default()).await?;
//! ledger.grant(&acme, IdempotencyKey::new("g")?, Amount::new(100), GrantOptions::default()).await?;
//!
//! let holds = Arc::new(LedgerHolds::new("credits", ledger.clone()));
//! let tm = TransactionManager::builder(Arc::new(MemoryTxLog::new()), Arc::new(clock.clone()))
//!     .participant(holds.clone())
//!     .build();
//! let tx = tm.begin(Duration::from_secs(30)).await?;
//! let branch = HoldBranch::new(acme.clone(), Amount::new(40), Amount::new(30));
//! tm.enlist(tx, "credits", branch.payload()).await?;
//! tm.prepare(tx).await?;                 // phase one: the hold exists until phase two
//! assert_eq!(tm.commit(tx).await?, TxOutcome::Committed); // decision logged, then phase two
//! assert_eq!(ledger.balance(&acme).await?.available, Amount::new(70));
//! # Ok::<(), credits_core::LedgerError>(())
//! # }).unwrap();
//! ```
//!
//! # Protocol
//!
//! `begin` logs the transaction with its deadline; `enlist` logs a branch (a participant
//! name and an opaque payload that tells the participant what to do). `prepare` asks every
//! branch to get ready (phase one); a refusal or a passed deadline aborts. `commit` (which
//! prepares first if needed) **logs the decision before phase two**, then tells every
//! branch. After a crash, [`TransactionManager::recover`] reads the log: decided
//! transactions are driven to their decision; undecided ones past their deadline are
//! aborted. Participants' `commit` and `abort` must be idempotent (they may be repeated).
//!
//! A participant that prepared keeps its resources until it learns the outcome, however
//! long that takes (a coordinator outage included): only the log's decision releases them.
//! [`LedgerHolds`] therefore takes holds that do not expire on their own
//! ([`PREPARED_HOLD_TTL`]); a transaction whose coordinator never decides is aborted by
//! [`recover`](TransactionManager::recover) once past its deadline, which cancels its
//! holds. So run `recover` at start-up and periodically.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hashbrown::HashMap;
use metered_clock::{Clock, Timestamp};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::store::LedgerStore;
use crate::{Amount, Command, HoldId, IdempotencyKey, Ledger, LedgerError, Request, TenantId};

/// A transaction's number, assigned by the [`TxLog`].
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

/// The coordinator's decision, logged before phase two.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// Every branch prepared: commit all.
    Commit,
    /// Abort all.
    Abort,
}

/// One participant's part of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Branch {
    /// The participant's registered name.
    pub participant: String,
    /// What the participant should do, in its own format.
    pub payload: String,
}

/// Where a transaction stands in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxPhase {
    /// Begun; branches may be enlisted.
    Active,
    /// Every branch prepared.
    Prepared,
    /// Decided; phase two may not have reached every branch yet.
    Decided(Decision),
    /// Phase two reached every branch.
    Finished(Decision),
}

impl TxPhase {
    fn name(self) -> &'static str {
        match self {
            TxPhase::Active => "active",
            TxPhase::Prepared => "prepared",
            TxPhase::Decided(Decision::Commit) => "committing",
            TxPhase::Decided(Decision::Abort) => "aborting",
            TxPhase::Finished(Decision::Commit) => "committed",
            TxPhase::Finished(Decision::Abort) => "aborted",
        }
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

/// Durable record of transactions. A decision must be durable when
/// [`decide`](TxLog::decide) returns: that is what makes recovery after a crash correct.
#[async_trait]
pub trait TxLog: Send + Sync + fmt::Debug {
    /// Logs a new transaction and returns its id.
    async fn begin(&self, deadline: Timestamp) -> Result<TxId, LedgerError>;
    /// Adds a branch (only while `Active`).
    async fn enlist(&self, tx: TxId, branch: Branch) -> Result<(), LedgerError>;
    /// Moves `Active` to `Prepared`.
    async fn mark_prepared(&self, tx: TxId) -> Result<(), LedgerError>;
    /// Records a decision. The first decision wins: returns the decision now on record
    /// (which differs from `decision` if another one was recorded first).
    async fn decide(&self, tx: TxId, decision: Decision) -> Result<Decision, LedgerError>;
    /// Marks phase two complete.
    async fn finish(&self, tx: TxId) -> Result<(), LedgerError>;
    /// One transaction.
    async fn get(&self, tx: TxId) -> Result<Option<TxRecord>, LedgerError>;
    /// Every transaction not yet `Finished`, oldest first.
    async fn unfinished(&self) -> Result<Vec<TxRecord>, LedgerError>;
}

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

/// How a transaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[must_use]
pub enum TxOutcome {
    /// Every branch committed.
    Committed,
    /// Every branch aborted.
    Aborted,
}

/// What [`TransactionManager::recover`] did.
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
}

/// Builds a [`TransactionManager`].
#[derive(Debug)]
#[must_use]
pub struct TransactionManagerBuilder {
    log: Arc<dyn TxLog>,
    clock: Arc<dyn Clock>,
    participants: HashMap<String, Arc<dyn Participant>>,
}

impl TransactionManagerBuilder {
    /// Registers a participant under its [`name`](Participant::name) (a later one with the
    /// same name replaces it).
    pub fn participant(mut self, participant: Arc<dyn Participant>) -> Self {
        self.participants
            .insert(participant.name().to_owned(), participant);
        self
    }

    /// Builds the manager.
    pub fn build(self) -> TransactionManager {
        TransactionManager {
            log: self.log,
            clock: self.clock,
            participants: self.participants,
        }
    }
}

/// The two-phase-commit coordinator.
#[derive(Debug)]
pub struct TransactionManager {
    log: Arc<dyn TxLog>,
    clock: Arc<dyn Clock>,
    participants: HashMap<String, Arc<dyn Participant>>,
}

impl TransactionManager {
    /// Starts building a manager over a log and a clock.
    pub fn builder(log: Arc<dyn TxLog>, clock: Arc<dyn Clock>) -> TransactionManagerBuilder {
        TransactionManagerBuilder {
            log,
            clock,
            participants: HashMap::new(),
        }
    }

    /// The log.
    #[must_use]
    pub fn log(&self) -> &Arc<dyn TxLog> {
        &self.log
    }

    /// Begins a transaction that must be decided within `timeout`.
    ///
    /// # Errors
    /// [`LedgerError::ZeroTtl`] for a zero timeout; [`LedgerError::AmountOverflow`] if the
    /// deadline does not fit; log failures.
    pub async fn begin(&self, timeout: Duration) -> Result<TxId, LedgerError> {
        if timeout.is_zero() {
            return Err(LedgerError::ZeroTtl);
        }
        let deadline = self
            .clock
            .now()
            .checked_add(timeout)
            .ok_or(LedgerError::AmountOverflow)?;
        self.log.begin(deadline).await
    }

    async fn record(&self, tx: TxId) -> Result<TxRecord, LedgerError> {
        self.log
            .get(tx)
            .await?
            .ok_or(LedgerError::UnknownTransaction(tx.get()))
    }

    fn state_error(tx: TxId, phase: TxPhase, action: &str) -> LedgerError {
        LedgerError::TransactionState {
            tx: tx.get(),
            state: phase.name().to_owned(),
            action: action.to_owned(),
        }
    }

    /// Adds a branch for a registered participant.
    ///
    /// # Errors
    /// [`LedgerError::UnknownParticipant`], [`LedgerError::UnknownTransaction`],
    /// [`LedgerError::TransactionState`] unless `Active`,
    /// [`LedgerError::TransactionTimedOut`] past the deadline (the transaction is aborted).
    pub async fn enlist(
        &self,
        tx: TxId,
        participant: &str,
        payload: impl Into<String>,
    ) -> Result<(), LedgerError> {
        if !self.participants.contains_key(participant) {
            return Err(LedgerError::UnknownParticipant(participant.to_owned()));
        }
        let record = self.record(tx).await?;
        if record.phase != TxPhase::Active {
            return Err(Self::state_error(tx, record.phase, "enlist"));
        }
        if self.clock.now() > record.deadline {
            self.finish_as(&record, Decision::Abort).await?;
            return Err(LedgerError::TransactionTimedOut(tx.get()));
        }
        self.log
            .enlist(
                tx,
                Branch {
                    participant: participant.to_owned(),
                    payload: payload.into(),
                },
            )
            .await
    }

    fn participant(&self, name: &str) -> Result<&Arc<dyn Participant>, LedgerError> {
        self.participants
            .get(name)
            .ok_or_else(|| LedgerError::UnknownParticipant(name.to_owned()))
    }

    /// Phase one: every branch prepares. On a refusal or past the deadline, the transaction
    /// is aborted (decision logged, every branch told).
    ///
    /// # Errors
    /// [`LedgerError::TransactionAborted`], [`LedgerError::TransactionTimedOut`],
    /// [`LedgerError::TransactionState`] if already decided; log failures.
    pub async fn prepare(&self, tx: TxId) -> Result<(), LedgerError> {
        let record = self.record(tx).await?;
        match record.phase {
            TxPhase::Prepared => return Ok(()),
            TxPhase::Active => {}
            phase => return Err(Self::state_error(tx, phase, "prepare")),
        }
        if self.clock.now() > record.deadline {
            self.finish_as(&record, Decision::Abort).await?;
            return Err(LedgerError::TransactionTimedOut(tx.get()));
        }
        for branch in &record.branches {
            let refusal = match self.participant(&branch.participant) {
                Ok(p) => p.prepare(tx, &branch.payload).await.err(),
                Err(e) => Some(e),
            };
            if let Some(reason) = refusal {
                tracing::info!(%tx, participant = %branch.participant, %reason, "prepare refused; aborting");
                self.finish_as(&record, Decision::Abort).await?;
                return Err(LedgerError::TransactionAborted {
                    tx: tx.get(),
                    participant: branch.participant.clone(),
                    reason: reason.to_string(),
                });
            }
        }
        if self.clock.now() > record.deadline {
            self.finish_as(&record, Decision::Abort).await?;
            return Err(LedgerError::TransactionTimedOut(tx.get()));
        }
        self.log.mark_prepared(tx).await
    }

    /// Commits: prepares first if needed, logs the decision, then runs phase two.
    ///
    /// # Errors
    /// As [`prepare`](Self::prepare); [`LedgerError::TransactionState`] if already aborted;
    /// a participant's phase-two failure (the decision stands: call
    /// [`recover`](Self::recover) later).
    pub async fn commit(&self, tx: TxId) -> Result<TxOutcome, LedgerError> {
        let record = self.record(tx).await?;
        match record.phase {
            TxPhase::Finished(Decision::Commit) => return Ok(TxOutcome::Committed),
            TxPhase::Active => self.prepare(tx).await?,
            TxPhase::Prepared | TxPhase::Decided(Decision::Commit) => {}
            phase => return Err(Self::state_error(tx, phase, "commit")),
        }
        let record = self.record(tx).await?;
        if record.phase == TxPhase::Prepared && self.clock.now() > record.deadline {
            self.finish_as(&record, Decision::Abort).await?;
            return Err(LedgerError::TransactionTimedOut(tx.get()));
        }
        match self.finish_as(&record, Decision::Commit).await? {
            Decision::Commit => Ok(TxOutcome::Committed),
            Decision::Abort => Err(Self::state_error(
                tx,
                TxPhase::Finished(Decision::Abort),
                "commit",
            )),
        }
    }

    /// Aborts (allowed until a commit decision is logged).
    ///
    /// # Errors
    /// [`LedgerError::TransactionState`] if already decided to commit; a participant's
    /// phase-two failure (the decision stands: call [`recover`](Self::recover) later).
    pub async fn abort(&self, tx: TxId) -> Result<TxOutcome, LedgerError> {
        let record = self.record(tx).await?;
        match self.finish_as(&record, Decision::Abort).await? {
            Decision::Abort => Ok(TxOutcome::Aborted),
            Decision::Commit => Err(Self::state_error(tx, record.phase, "abort")),
        }
    }

    /// Logs `decision` (unless one is on record) and drives every branch to the recorded
    /// decision. Returns the recorded decision.
    async fn finish_as(
        &self,
        record: &TxRecord,
        decision: Decision,
    ) -> Result<Decision, LedgerError> {
        let decided = match record.phase {
            TxPhase::Finished(d) => return Ok(d),
            TxPhase::Decided(d) => d,
            TxPhase::Active | TxPhase::Prepared => self.log.decide(record.id, decision).await?,
        };
        // Phase two: the decision is durable, now tell every branch.
        for branch in &record.branches {
            let p = self.participant(&branch.participant)?;
            match decided {
                Decision::Commit => p.commit(record.id, &branch.payload).await?,
                Decision::Abort => p.abort(record.id, &branch.payload).await?,
            }
        }
        self.log.finish(record.id).await?;
        Ok(decided)
    }

    /// Drives every unfinished transaction: decided ones to their decision, undecided ones
    /// past their deadline to abort. Call at start-up (and periodically).
    ///
    /// # Errors
    /// Log failures. A participant failure is counted in `failed`, not returned.
    pub async fn recover(&self) -> Result<TxRecoveryReport, LedgerError> {
        let mut report = TxRecoveryReport::default();
        let now = self.clock.now();
        for record in self.log.unfinished().await? {
            let target = match record.phase {
                TxPhase::Decided(d) => d,
                _ if now > record.deadline => Decision::Abort,
                _ => {
                    report.pending += 1;
                    continue;
                }
            };
            match self.finish_as(&record, target).await {
                Ok(Decision::Commit) => report.committed += 1,
                Ok(Decision::Abort) => report.aborted += 1,
                Err(e) => {
                    tracing::warn!(tx = %record.id, error = %e, "recovery of transaction failed; will retry");
                    report.failed += 1;
                }
            }
        }
        Ok(report)
    }
}

/// The in-memory [`TxLog`] (decisions survive only as long as the process; use a durable log
/// for crash recovery across restarts).
#[derive(Debug, Default)]
pub struct MemoryTxLog {
    inner: Mutex<MemoryTxLogInner>,
}

#[derive(Debug, Default)]
struct MemoryTxLogInner {
    next: u64,
    records: BTreeMap<TxId, TxRecord>,
}

impl MemoryTxLog {
    /// An empty log.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(
        &self,
        tx: TxId,
        f: impl FnOnce(&mut TxRecord) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let mut inner = self.inner.lock();
        let record = inner
            .records
            .get_mut(&tx)
            .ok_or(LedgerError::UnknownTransaction(tx.get()))?;
        f(record)
    }
}

#[async_trait]
impl TxLog for MemoryTxLog {
    async fn begin(&self, deadline: Timestamp) -> Result<TxId, LedgerError> {
        let mut inner = self.inner.lock();
        inner.next += 1;
        let id = TxId(inner.next);
        inner.records.insert(
            id,
            TxRecord {
                id,
                deadline,
                branches: Vec::new(),
                phase: TxPhase::Active,
            },
        );
        Ok(id)
    }

    async fn enlist(&self, tx: TxId, branch: Branch) -> Result<(), LedgerError> {
        self.with(tx, |r| match r.phase {
            TxPhase::Active => {
                r.branches.push(branch);
                Ok(())
            }
            phase => Err(TransactionManager::state_error(tx, phase, "enlist")),
        })
    }

    async fn mark_prepared(&self, tx: TxId) -> Result<(), LedgerError> {
        self.with(tx, |r| match r.phase {
            TxPhase::Active | TxPhase::Prepared => {
                r.phase = TxPhase::Prepared;
                Ok(())
            }
            phase => Err(TransactionManager::state_error(tx, phase, "prepare")),
        })
    }

    async fn decide(&self, tx: TxId, decision: Decision) -> Result<Decision, LedgerError> {
        self.with(tx, |r| match r.phase {
            TxPhase::Active | TxPhase::Prepared => {
                r.phase = TxPhase::Decided(decision);
                Ok(decision)
            }
            TxPhase::Decided(d) | TxPhase::Finished(d) => Ok(d),
        })
    }

    async fn finish(&self, tx: TxId) -> Result<(), LedgerError> {
        self.with(tx, |r| match r.phase {
            TxPhase::Decided(d) | TxPhase::Finished(d) => {
                r.phase = TxPhase::Finished(d);
                Ok(())
            }
            phase => Err(TransactionManager::state_error(tx, phase, "finish")),
        })
    }

    async fn get(&self, tx: TxId) -> Result<Option<TxRecord>, LedgerError> {
        Ok(self.inner.lock().records.get(&tx).cloned())
    }

    async fn unfinished(&self) -> Result<Vec<TxRecord>, LedgerError> {
        Ok(self
            .inner
            .lock()
            .records
            .values()
            .filter(|r| !matches!(r.phase, TxPhase::Finished(_)))
            .cloned()
            .collect())
    }
}

/// The time-to-live of the holds [`LedgerHolds`] takes in phase one: 2^62 ms (about 146
/// million years), so in effect they never expire on their own. A participant that voted
/// to commit must keep the credits until the coordinator's decision reaches it, after an
/// outage of any length; holds of transactions that are never decided are reclaimed by
/// [`TransactionManager::recover`], which aborts them past their deadline. (It is the
/// longest time-to-live whose expiry every store can record, PostgreSQL's `bigint`
/// included, from any present-day clock.)
pub const PREPARED_HOLD_TTL: Duration = Duration::from_millis(1 << 62);

/// The ledger's holds as a transaction [`Participant`]: prepare reserves credits, commit
/// commits (part of) them, abort cancels the hold.
///
/// Branch payloads are [`HoldBranch::payload`]s. Every step uses idempotency keys
/// derived from the transaction id (`tx-<id>/<participant>/reserve`, `…/commit`,
/// `…/cancel`), so repeating a step (after a crash, in recovery) applies it once. The
/// holds do not expire on their own ([`PREPARED_HOLD_TTL`]): only phase two releases them,
/// so a decided commit still applies after a coordinator outage of any length. Until then
/// the credits are held (not spendable), also while the coordinator is down: run
/// [`TransactionManager::recover`] at start-up and periodically so that undecided
/// transactions past their deadline are aborted and their holds cancelled.
#[derive(Debug)]
pub struct LedgerHolds<S: ?Sized = dyn LedgerStore> {
    name: String,
    ledger: Ledger<S>,
}

/// What a [`LedgerHolds`] branch does: hold `reserve` credits of `tenant` in phase one
/// (until phase two: the hold does not expire on its own), spend `commit` of them (the
/// rest is released; zero cancels) in phase two.
///
/// ```
/// use credits_core::tx::HoldBranch;
/// use credits_core::{Amount, TenantId};
///
/// let branch = HoldBranch::new(TenantId::new("acme")?, Amount::new(40), Amount::new(30));
/// assert_eq!(HoldBranch::parse(&branch.payload())?, branch);
/// # Ok::<(), credits_core::LedgerError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldBranch {
    /// Whose credits.
    pub tenant: TenantId,
    /// How much to hold in phase one.
    pub reserve: Amount,
    /// How much of it to spend in phase two (≤ `reserve`).
    pub commit: Amount,
}

impl HoldBranch {
    /// A branch description.
    #[must_use]
    pub fn new(tenant: TenantId, reserve: Amount, commit: Amount) -> Self {
        HoldBranch {
            tenant,
            reserve,
            commit,
        }
    }

    /// The payload to [`enlist`](TransactionManager::enlist).
    #[must_use]
    pub fn payload(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a payload back.
    ///
    /// # Errors
    /// [`LedgerError::InvalidPayload`] if it is not a `HoldBranch`.
    pub fn parse(payload: &str) -> Result<Self, LedgerError> {
        serde_json::from_str(payload).map_err(|e| LedgerError::InvalidPayload(e.to_string()))
    }
}

impl<S: LedgerStore + ?Sized> LedgerHolds<S> {
    /// A participant named `name` over `ledger`.
    pub fn new(name: impl Into<String>, ledger: Ledger<S>) -> Self {
        LedgerHolds {
            name: name.into(),
            ledger,
        }
    }

    fn key(&self, tx: TxId, step: &str) -> Result<IdempotencyKey, LedgerError> {
        IdempotencyKey::new(format!("{tx}/{}/{step}", self.name))
    }

    fn reserve_command(p: &HoldBranch) -> Command {
        Command::Reserve {
            amount: p.reserve,
            ttl: PREPARED_HOLD_TTL,
        }
    }

    /// The hold phase one created, if it did: a successful reservation of the branch's
    /// amount under the branch's key (whatever its time-to-live, so that holds prepared
    /// with an earlier, expiring time-to-live are still found).
    async fn prepared_hold(&self, tx: TxId, p: &HoldBranch) -> Result<Option<HoldId>, LedgerError> {
        let key = self.key(tx, "reserve")?;
        let record = self
            .ledger
            .store()
            .idempotency_record(&p.tenant, &key)
            .await?;
        Ok(record.and_then(|r| match r.command {
            Command::Reserve { amount, .. } if amount == p.reserve => {
                r.result.ok().and_then(|o| o.hold())
            }
            _ => None,
        }))
    }
}

#[async_trait]
impl<S: LedgerStore + ?Sized> Participant for LedgerHolds<S> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn prepare(&self, tx: TxId, payload: &str) -> Result<(), LedgerError> {
        let p = HoldBranch::parse(payload)?;
        if p.commit > p.reserve {
            return Err(LedgerError::CommitExceedsHold {
                hold: HoldId::new(0),
                held: p.reserve,
                requested: p.commit,
            });
        }
        let request = Request::new(
            p.tenant.clone(),
            self.key(tx, "reserve")?,
            Self::reserve_command(&p),
        );
        self.ledger.apply(&request).await.map(|_| ())
    }

    async fn commit(&self, tx: TxId, payload: &str) -> Result<(), LedgerError> {
        let p = HoldBranch::parse(payload)?;
        let hold =
            self.prepared_hold(tx, &p)
                .await?
                .ok_or_else(|| LedgerError::TransactionState {
                    tx: tx.get(),
                    state: "unprepared".to_owned(),
                    action: "commit".to_owned(),
                })?;
        let key = self.key(tx, "commit")?;
        let result = if p.commit.is_zero() {
            self.ledger.cancel(&p.tenant, key, hold).await
        } else {
            self.ledger.commit(&p.tenant, key, hold, p.commit).await
        };
        result.map(|_| ())
    }

    async fn abort(&self, tx: TxId, payload: &str) -> Result<(), LedgerError> {
        // An unreadable payload was refused by `prepare` too: nothing to undo.
        let Ok(p) = HoldBranch::parse(payload) else {
            return Ok(());
        };
        let Some(hold) = self.prepared_hold(tx, &p).await? else {
            return Ok(()); // never prepared: nothing to undo
        };
        match self
            .ledger
            .cancel(&p.tenant, self.key(tx, "cancel")?, hold)
            .await
        {
            Ok(_) | Err(LedgerError::HoldAlreadyCancelled(_) | LedgerError::HoldExpired(_)) => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
