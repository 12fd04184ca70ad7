//! [`PgLedgerStore`]: the ledger on PostgreSQL.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use audit_chain::{AuditEntry, SealedEntry, StreamChain, StreamHead};
use credits_core::backend::{Account, AccountHeader, AccountParts, Applied, Draw, Hold, Lot, LotKey};
use credits_core::store::{LedgerStore, Page, PageRequest, SweepReport};
use credits_core::{
    Amount, BATCH_LEN_MAX, Balance, Batch, EntryKind, EntrySeq, HoldId, HoldResolution, HoldState,
    IdempotencyKey, IdempotencyRecord, JournalEntry, LedgerError, LotId, Receipt, Request,
    TenantId, TenantSettings, Totals,
};
use deadpool_postgres::{Object, Pool};
use futures::future::try_join_all;
use hashbrown::HashMap;
use metered_clock::{Clock, Timestamp};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::codec::{self, i};
use crate::migrate::{MigrationReport, migrate};
use crate::pool::{Db, TxConn, build_pool};
use crate::group::GroupQueue;
use crate::{GroupCommitConfig, Isolation, LedgerAudit, PgConfig, PgError, sql};

/// Most tenants expired in one SQL transaction by [`LedgerStore::sweep`].
pub const SWEEP_CHUNK_MAX: usize = 64;

/// The ledger on PostgreSQL: a [`LedgerStore`] whose every mutation is one SQL transaction.
///
/// Each call locks the tenant row(s) (`SELECT … FOR UPDATE`, ascending tenant order for
/// batches), loads the live state (lots, active holds, the idempotency records and whatever
/// the commands name), runs credits-core's pure rules ([`Account::apply`]) and writes the
/// change set, the idempotency records and — when [`LedgerAudit`] is configured — the sealed
/// audit entries, then commits. The reads go in one round trip, the writes and `COMMIT` in
/// another. A crash, a killed connection or a cancelled future leaves all of it or none of
/// it.
///
/// Cheap to clone (shared pool).
///
/// ```no_run
/// use std::sync::Arc;
/// use credits_core::{Amount, GrantOptions, IdempotencyKey, Ledger, TenantId, TenantSettings};
/// use credits_postgres::{PgConfig, PgLedgerStore};
/// use metered_clock::SystemClock;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let clock = Arc::new(SystemClock::new());
/// let config = PgConfig::builder("postgres://postgres@127.0.0.1:5432/test").build()?;
/// let store = PgLedgerStore::connect(config, clock.clone())?;
/// store.migrate().await?;
/// let ledger = Ledger::from_shared(Arc::new(store), clock);
/// let acme = TenantId::new("acme")?;
/// ledger.create_tenant(&acme, TenantSettings::default()).await?;
/// ledger.grant(&acme, IdempotencyKey::new("topup-1")?, Amount::new(1_000), GrantOptions::default()).await?;
/// ledger.consume(&acme, IdempotencyKey::new("call-1")?, Amount::new(5)).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgLedgerStore {
    pub(crate) db: Arc<Db>,
    audit: Option<LedgerAudit>,
    /// Set in group-commit mode: single requests go through this queue.
    group: Option<GroupQueue>,
}

impl fmt::Debug for PgLedgerStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgLedgerStore")
            .field("db", &self.db)
            .field("audit", &self.audit.is_some())
            .field("group_commit", &self.group.is_some())
            .finish()
    }
}

/// One unit of work inside a store transaction.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op<'a> {
    /// Apply (or replay) a request.
    Apply(&'a Request),
    /// Apply the expiries due by `now`.
    Expire(&'a TenantId),
}

impl Op<'_> {
    fn tenant(&self) -> &TenantId {
        match self {
            Op::Apply(r) => &r.tenant,
            Op::Expire(t) => t,
        }
    }
}

/// Whether one failing request fails the whole transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// All or nothing ([`LedgerStore::apply_batch`]).
    Atomic,
    /// Each request has its own result (single requests, sweeps, group commit).
    Independent,
}

/// What a transaction did.
#[derive(Debug, Default)]
pub(crate) struct Done {
    pub(crate) results: Vec<Result<Option<Receipt>, LedgerError>>,
    pub(crate) balances: HashMap<TenantId, Balance>,
    pub(crate) holds_expired: usize,
    pub(crate) lots_expired: usize,
}

/// One tenant inside a transaction: its rebuilt account and everything to write back.
struct Work {
    account: Account,
    before: AccountHeader,
    audit_head: StreamHead,
    audit_head_before: StreamHead,
    /// Every hold known in this transaction (loaded active ones and ones created here), so a
    /// hold created and resolved in one transaction can still be written in full.
    hold_details: HashMap<HoldId, Hold>,
    lots_changed: BTreeSet<LotKey>,
    holds_changed: BTreeSet<HoldId>,
    refunds_changed: BTreeSet<EntrySeq>,
    entries: Vec<JournalEntry>,
    sealed: Vec<SealedEntry>,
    records: Vec<(IdempotencyKey, IdempotencyRecord)>,
    known: HashMap<IdempotencyKey, IdempotencyRecord>,
    targets: HashMap<EntrySeq, JournalEntry>,
}

impl Work {
    fn absorb(&mut self, applied: Applied) {
        for id in &applied.holds_changed {
            if let Some(h) = self.account.hold(*id) {
                self.hold_details.insert(*id, h.clone());
            }
        }
        self.lots_changed.extend(applied.lots_changed);
        self.holds_changed.extend(applied.holds_changed);
        self.refunds_changed.extend(applied.refund_changed);
        self.entries.extend(applied.entries);
    }
}

fn corrupt(e: impl fmt::Display) -> PgError {
    PgError::Corrupt(e.to_string())
}

fn resolution(state: &str, committed: Option<i64>) -> Result<Option<HoldResolution>, PgError> {
    Ok(match state {
        "active" => None,
        "committed" => Some(HoldResolution::Committed {
            committed: codec::amount(committed.unwrap_or(0), "committed")?,
        }),
        "cancelled" => Some(HoldResolution::Cancelled),
        "expired" => Some(HoldResolution::Expired),
        other => return Err(corrupt(format!("unknown hold state {other:?}"))),
    })
}

fn slot<'a>(
    parts: &'a mut BTreeMap<String, (AccountParts, StreamHead)>,
    tenant: &str,
) -> Result<&'a mut AccountParts, PgError> {
    parts
        .get_mut(tenant)
        .map(|(p, _)| p)
        .ok_or_else(|| corrupt(format!("row of unlocked tenant {tenant}")))
}

fn parse_amount_text(s: &str) -> Result<Amount, LedgerError> {
    s.parse::<u64>()
        .map(Amount::new)
        .map_err(|_| LedgerError::AmountOverflow)
}

/// The audit entry recording one journal entry.
pub(crate) fn audit_entry(e: &JournalEntry) -> AuditEntry {
    let mut entry = AuditEntry::new(e.tenant.as_str(), "credits", e.kind.as_str(), e.at)
        .with_amount(e.amount.units())
        .with_balances(e.before.available.units(), e.after.available.units())
        .with_metadata("entry", e.seq.to_string());
    if let Some(k) = &e.key {
        entry = entry.with_transaction_id(k.as_str());
    }
    if !e.after.held.is_zero() || !e.before.held.is_zero() {
        entry = entry.with_metadata("held", format!("{}>{}", e.before.held, e.after.held));
    }
    if !e.after.overdrawn.is_zero() || !e.before.overdrawn.is_zero() {
        entry = entry.with_metadata(
            "overdrawn",
            format!("{}>{}", e.before.overdrawn, e.after.overdrawn),
        );
    }
    if let Some(h) = e.hold {
        entry = entry.with_metadata("hold", h.to_string());
    }
    if let Some(l) = e.lot {
        entry = entry.with_metadata("lot", l.to_string());
    }
    if let Some(r) = e.refers_to {
        entry = entry.with_metadata("refers_to", r.to_string());
    }
    entry
}

impl PgLedgerStore {
    /// A store over a new pool for `config` (no connection is opened until first use; call
    /// [`migrate`](Self::migrate) once at start-up).
    ///
    /// # Errors
    /// [`PgError::InvalidConfig`] if the pool cannot be built.
    pub fn connect(config: PgConfig, clock: Arc<dyn Clock>) -> Result<Self, PgError> {
        let pool = build_pool(&config)?;
        Ok(Self::from_pool(pool, &config, clock))
    }

    /// A store over an existing pool (its connections must use the schema the migrations
    /// ran in). The pool settings in `config` are ignored; isolation, retries, breaker and
    /// audit apply.
    #[must_use]
    pub fn from_pool(pool: Pool, config: &PgConfig, clock: Arc<dyn Clock>) -> Self {
        PgLedgerStore {
            db: Arc::new(Db::new(pool, config, clock)),
            audit: config.audit.clone(),
            group: None,
        }
    }

    /// The same store in group-commit mode: concurrent single requests
    /// ([`LedgerStore::apply`]) are queued, and each of `config.workers()` background tasks
    /// takes every request waiting (up to `config.group_max()`) and applies them with
    /// [`apply_group`](Self::apply_group) — one SQL transaction, one commit, one fsync.
    /// Each request keeps its own result; no request waits for a timer (a group is whatever
    /// arrived while the previous one was committing). Batches, reads and sweeps are not
    /// queued.
    ///
    /// Must be called inside a Tokio runtime; the workers stop when the last clone of the
    /// returned store is dropped.
    ///
    /// The trade-off: a storage failure (a lost connection, a killed transaction) fails the
    /// whole group (each request with a retryable error; nothing was written), and a
    /// request waits for the slowest of its group.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use credits_postgres::{GroupCommitConfig, PgConfig, PgLedgerStore};
    /// use metered_clock::SystemClock;
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let config = PgConfig::builder("postgres://postgres@127.0.0.1:5432/test").build()?;
    /// let store = PgLedgerStore::connect(config, Arc::new(SystemClock::new()))?
    ///     .with_group_commit(GroupCommitConfig::new(8, 256, 65_536)?);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn with_group_commit(self, config: GroupCommitConfig) -> Self {
        let direct = PgLedgerStore {
            group: None,
            ..self
        };
        let group = GroupQueue::start(&direct, config);
        PgLedgerStore {
            group: Some(group),
            ..direct
        }
    }

    /// Whether single requests go through group commit.
    #[must_use]
    pub fn is_group_commit(&self) -> bool {
        self.group.is_some()
    }

    /// The connection pool.
    #[must_use]
    pub fn pool(&self) -> &Pool {
        &self.db.pool
    }

    /// The state of the circuit breaker around the pool.
    #[must_use]
    pub fn breaker_state(&self) -> resilience::State {
        self.db.breaker_state()
    }

    /// Applies the embedded migrations (idempotent; safe to run from several processes).
    ///
    /// # Errors
    /// See [`migrate`](crate::migrate()).
    pub async fn migrate(&self) -> Result<MigrationReport, PgError> {
        let mut conn = self.db.get().await?;
        migrate(&mut conn).await
    }

    /// Applies `requests` in one SQL transaction, each with its own result (as if applied
    /// one after another with [`LedgerStore::apply`], but with one commit): the group-commit
    /// building block. A domain failure of one request does not affect the others; a
    /// storage failure fails them all (and nothing is written). A key used twice in the
    /// group replays the first use.
    ///
    /// # Errors
    /// [`LedgerError::EmptyBatch`], [`LedgerError::BatchTooLarge`]; storage failures.
    pub async fn apply_group(
        &self,
        requests: &[Request],
        now: Timestamp,
    ) -> Result<Vec<Result<Receipt, LedgerError>>, LedgerError> {
        check_len(requests)?;
        let ops: Vec<Op<'_>> = requests.iter().map(Op::Apply).collect();
        let done = self.execute(&ops, now, Mode::Independent).await?;
        Ok(done.results.into_iter().map(unwrap_outcome).collect())
    }

    /// A page of the audit entries sealed for `tenant`'s journal, from its stream sequence
    /// number `from` (0 is the first), at most `limit` (clamped to 1..=10,000). Empty when
    /// the store runs without [`LedgerAudit`].
    ///
    /// # Errors
    /// Storage failures; [`PgError::Corrupt`] for an undecodable row.
    pub async fn audit_entries(
        &self,
        tenant: &TenantId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<SealedEntry>, PgError> {
        let from = i(from, "audit sequence")?;
        let limit = i64::try_from(limit.clamp(1, 10_000)).unwrap_or(10_000);
        let rows = self
            .query(
                "audit_entries",
                sql::AUDIT_STREAM,
                &[&tenant.as_str(), &from, &limit],
            )
            .await?;
        rows.iter()
            .map(|r| SealedEntry::decode(r.get::<_, &[u8]>(0)).map_err(corrupt))
            .collect()
    }

    pub(crate) async fn query(
        &self,
        what: &'static str,
        statement: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, PgError> {
        self.db
            .run(what, |conn| async move {
                let st = conn.prepare_cached(statement).await?;
                Ok(conn.query(&st, params).await?)
            })
            .await
    }

    pub(crate) async fn execute(
        &self,
        ops: &[Op<'_>],
        now: Timestamp,
        mode: Mode,
    ) -> Result<Done, LedgerError> {
        let done = self
            .db
            .run("transaction", |conn| self.attempt(conn, ops, now, mode))
            .await;
        metrics::counter!("credits_postgres_transactions_total",
            "outcome" => if done.is_ok() { "ok" } else { "error" })
        .increment(1);
        done?
    }

    /// One try of one transaction. The outer error is a storage failure (retried by the
    /// caller when it is a serialization failure); the inner one a batch's definite answer.
    async fn attempt(
        &self,
        conn: Object,
        ops: &[Op<'_>],
        now: Timestamp,
        mode: Mode,
    ) -> Result<Result<Done, LedgerError>, PgError> {
        let conn = TxConn::new(conn);
        let mut works = match self.load(&conn, ops).await {
            Ok(w) => w,
            Err(e) => {
                conn.rollback().await;
                return Err(e);
            }
        };
        let mut done = Done::default();
        for (index, op) in ops.iter().enumerate() {
            let reject = |e: LedgerError| LedgerError::BatchRejected {
                index,
                source: Box::new(e),
            };
            let Some(w) = works.get_mut(op.tenant()) else {
                let e = LedgerError::UnknownTenant(op.tenant().clone());
                if mode == Mode::Atomic {
                    conn.rollback().await;
                    return Ok(Err(reject(e)));
                }
                done.results.push(Err(e));
                continue;
            };
            let request = match op {
                Op::Expire(_) => {
                    let applied = w.account.expire_due(now);
                    w.absorb(applied);
                    done.results.push(Ok(None));
                    continue;
                }
                Op::Apply(r) => *r,
            };
            if let Some(record) = w.known.get(&request.key) {
                let replay = record.replay(request);
                if mode == Mode::Atomic
                    && let Err(e) = replay
                {
                    conn.rollback().await;
                    return Ok(Err(reject(e)));
                }
                done.results.push(replay.map(Some));
                continue;
            }
            let target = request.command.refers_to().and_then(|seq| {
                w.targets
                    .get(&seq)
                    .or_else(|| w.entries.iter().find(|e| e.seq == seq))
                    .cloned()
            });
            let applied = w.account.apply(request, now, target.as_ref());
            let result = unwrap_outcome(applied.result.clone());
            w.absorb(applied);
            if mode == Mode::Atomic
                && let Err(e) = &result
            {
                conn.rollback().await;
                return Ok(Err(reject(e.clone())));
            }
            let record = IdempotencyRecord {
                command: request.command.clone(),
                result: result.clone(),
                at: result.as_ref().map_or(now, |o| o.at),
            };
            w.known.insert(request.key.clone(), record.clone());
            w.records.push((request.key.clone(), record));
            done.results.push(result.map(Some));
        }
        for (tenant, w) in &works {
            done.balances.insert(tenant.clone(), w.account.balance());
            for e in &w.entries {
                match e.kind {
                    EntryKind::HoldExpired => done.holds_expired += 1,
                    EntryKind::LotExpired => done.lots_expired += 1,
                    _ => {}
                }
            }
        }
        match self.write(&conn, &mut works).await {
            Ok(()) => {
                conn.finish();
                Ok(Ok(done))
            }
            // The server rolled back (an error aborts the transaction, and COMMIT was sent
            // behind the writes); the connection is closed to be sure.
            Err(e) => Err(e),
        }
    }

    /// Locks the tenants and loads what the operations need, in one round trip.
    async fn load(
        &self,
        conn: &TxConn,
        ops: &[Op<'_>],
    ) -> Result<BTreeMap<TenantId, Work>, PgError> {
        let c = conn.client();
        let mut tenants: Vec<&str> = ops.iter().map(|o| o.tenant().as_str()).collect();
        tenants.sort_unstable();
        tenants.dedup();
        let (mut hold_t, mut hold_id) = (Vec::new(), Vec::new());
        let (mut target_t, mut target_seq) = (Vec::new(), Vec::new());
        let (mut key_t, mut key_k) = (Vec::new(), Vec::new());
        for op in ops {
            let Op::Apply(r) = op else { continue };
            key_t.push(r.tenant.as_str());
            key_k.push(r.key.as_str());
            if let Some(h) = r.command.hold()
                && let Ok(h) = i64::try_from(h.get())
            {
                hold_t.push(r.tenant.as_str());
                hold_id.push(h);
            }
            if let Some(seq) = r.command.refers_to()
                && let Ok(seq) = i64::try_from(seq.get())
            {
                target_t.push(r.tenant.as_str());
                target_seq.push(seq);
            }
        }
        let s_lock = c.prepare_cached(&sql::LOCK_ACCOUNTS).await?;
        let s_lots = c.prepare_cached(sql::LOTS).await?;
        let s_holds = c.prepare_cached(sql::ACTIVE_HOLDS).await?;
        let s_resolved = c.prepare_cached(sql::RESOLVED_HOLDS).await?;
        let s_records = c.prepare_cached(sql::RECORDS).await?;
        let s_targets = c.prepare_cached(&sql::TARGETS).await?;
        // Pipelined: every statement is sent before the first answer is awaited. They run
        // in order, so the reads after the lock see the latest committed state.
        let by_tenant: [&(dyn ToSql + Sync); 1] = [&tenants];
        let by_hold: [&(dyn ToSql + Sync); 2] = [&hold_t, &hold_id];
        let by_key: [&(dyn ToSql + Sync); 2] = [&key_t, &key_k];
        let by_target: [&(dyn ToSql + Sync); 2] = [&target_t, &target_seq];
        // Under SERIALIZABLE, a row lock waited for inside the transaction fails with 40001
        // once the holder commits (the row changed after our snapshot). So the tenants are
        // first locked with session advisory locks, in ascending tenant order and outside
        // the transaction (each lock statement is its own implicit transaction); the
        // snapshot is then taken after the previous holder committed. They are released
        // after COMMIT or ROLLBACK (or with the connection).
        let serializable = self.db.isolation == Isolation::Serializable;
        let s_advisory = if serializable {
            Some(c.prepare_cached(sql::ADVISORY_LOCK).await?)
        } else {
            None
        };
        let advisory = async {
            if let Some(st) = &s_advisory {
                for t in &tenants {
                    c.execute(st, &[t]).await?;
                }
            }
            Ok::<_, tokio_postgres::Error>(())
        };
        let (_, _, lock_rows, lot_rows, hold_rows, resolved_rows, record_rows, target_rows) = futures::try_join!(
            advisory,
            c.batch_execute(self.db.isolation.begin_sql()),
            c.query(&s_lock, &by_tenant),
            c.query(&s_lots, &by_tenant),
            c.query(&s_holds, &by_tenant),
            async {
                if hold_t.is_empty() {
                    Ok(Vec::new())
                } else {
                    c.query(&s_resolved, &by_hold).await
                }
            },
            async {
                if key_t.is_empty() {
                    Ok(Vec::new())
                } else {
                    c.query(&s_records, &by_key).await
                }
            },
            async {
                if target_t.is_empty() {
                    Ok(Vec::new())
                } else {
                    c.query(&s_targets, &by_target).await
                }
            },
        )?;
        let mut parts: BTreeMap<String, (AccountParts, StreamHead)> = BTreeMap::new();
        for row in &lock_rows {
            let header = codec::header(row)?;
            let hash: &[u8] = row.get(14);
            let head = StreamHead {
                next_seq: codec::u(row.get(13), "audit_next_seq")?,
                last_hash: hash
                    .try_into()
                    .map_err(|_| corrupt("audit_last_hash is not 32 bytes"))?,
            };
            parts.insert(
                header.tenant.as_str().to_owned(),
                (
                    AccountParts {
                        header,
                        lots: Vec::new(),
                        holds: Vec::new(),
                        resolved: Vec::new(),
                        refunded: Vec::new(),
                    },
                    head,
                ),
            );
        }
        for row in &lot_rows {
            let expires_at = match row.get::<_, Option<i64>>(2) {
                None => Timestamp::MAX,
                Some(t) => codec::ts(t, "lot expiry")?,
            };
            let priority = u16::try_from(row.get::<_, i32>(3))
                .map_err(|_| corrupt("lot priority out of range"))?;
            slot(&mut parts, row.get(0))?.lots.push(Lot {
                key: LotKey {
                    expires_at,
                    priority,
                    id: LotId::new(codec::u(row.get(1), "lot_id")?),
                },
                remaining: codec::amount(row.get(4), "remaining")?,
            });
        }
        for row in &hold_rows {
            let draws: Vec<Draw> = serde_json::from_str(row.get(4)).map_err(corrupt)?;
            let hold = Hold::from_parts(
                HoldId::new(codec::u(row.get(1), "hold_id")?),
                codec::amount(row.get(2), "hold amount")?,
                codec::ts(row.get(3), "hold expiry")?,
                draws,
            )
            .map_err(corrupt)?;
            slot(&mut parts, row.get(0))?.holds.push(hold);
        }
        for row in &resolved_rows {
            if let Some(r) = resolution(row.get(2), row.get(3))? {
                let id = HoldId::new(codec::u(row.get(1), "hold_id")?);
                slot(&mut parts, row.get(0))?.resolved.push((id, r));
            }
        }
        let mut targets: HashMap<String, Vec<JournalEntry>> = HashMap::new();
        for row in &target_rows {
            let entry = codec::entry(row)?;
            let refunded = codec::amount(row.get(15), "refunded")?;
            if !refunded.is_zero() {
                slot(&mut parts, entry.tenant.as_str())?
                    .refunded
                    .push((entry.seq, refunded));
            }
            targets
                .entry(entry.tenant.as_str().to_owned())
                .or_default()
                .push(entry);
        }
        let mut known: HashMap<String, HashMap<IdempotencyKey, IdempotencyRecord>> = HashMap::new();
        for row in &record_rows {
            let record: IdempotencyRecord = serde_json::from_str(row.get(2)).map_err(corrupt)?;
            let key = IdempotencyKey::new(row.get::<_, &str>(1)).map_err(corrupt)?;
            known
                .entry(row.get::<_, &str>(0).to_owned())
                .or_default()
                .insert(key, record);
        }
        let mut works = BTreeMap::new();
        for (name, (p, head)) in parts {
            let hold_details = p.holds.iter().map(|h| (h.id(), h.clone())).collect();
            let before = p.header.clone();
            let account = Account::from_parts(p).map_err(corrupt)?;
            let tenant = account.tenant().clone();
            works.insert(
                tenant,
                Work {
                    account,
                    before,
                    audit_head: head,
                    audit_head_before: head,
                    hold_details,
                    lots_changed: BTreeSet::new(),
                    holds_changed: BTreeSet::new(),
                    refunds_changed: BTreeSet::new(),
                    entries: Vec::new(),
                    sealed: Vec::new(),
                    records: Vec::new(),
                    known: known.remove(&name).unwrap_or_default(),
                    targets: targets
                        .remove(&name)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|e| (e.seq, e))
                        .collect(),
                },
            );
        }
        Ok(works)
    }

    /// Writes every change set and commits, in one round trip.
    async fn write(
        &self,
        conn: &TxConn,
        works: &mut BTreeMap<TenantId, Work>,
    ) -> Result<(), PgError> {
        let c = conn.client();
        let mut acc = AccountRows::default();
        let mut lots = LotRows::default();
        let mut gone = (Vec::<&str>::new(), Vec::<i64>::new());
        let mut holds = HoldRows::default();
        let mut refunds = (Vec::<&str>::new(), Vec::<i64>::new(), Vec::<i64>::new());
        let mut entries = EntryRows::default();
        let mut records = (
            Vec::<&str>::new(),
            Vec::<&str>::new(),
            Vec::<i64>::new(),
            Vec::<String>::new(),
        );
        let mut audit = AuditRows::default();
        if let Some(cfg) = &self.audit {
            for w in works.values_mut() {
                if w.entries.is_empty() {
                    continue;
                }
                let mut chain = StreamChain::resume(w.account.tenant().as_str(), w.audit_head);
                for e in &w.entries {
                    let sealed = chain
                        .seal(cfg.keyring(), cfg.policy(), audit_entry(e))
                        .map_err(corrupt)?;
                    w.sealed.push(sealed);
                }
                w.audit_head = chain.head();
            }
        }
        for (tenant, w) in works.iter() {
            let t = tenant.as_str();
            for (e, sealed) in w.entries.iter().zip(&w.sealed) {
                audit.push(e, sealed)?;
            }
            let header = w.account.header();
            if *header != w.before || w.audit_head != w.audit_head_before {
                acc.push(header, w.account.next_deadline(), w.audit_head)?;
            }
            for key in &w.lots_changed {
                match w.account.lot(key) {
                    Some(remaining) => {
                        lots.tenant.push(t);
                        lots.id.push(i(key.id.get(), "lot id")?);
                        lots.expires_at.push(codec::expiry(key.expires_at)?);
                        lots.priority.push(i32::from(key.priority));
                        lots.remaining.push(i(remaining.units(), "lot remaining")?);
                    }
                    None => {
                        gone.0.push(t);
                        gone.1.push(i(key.id.get(), "lot id")?);
                    }
                }
            }
            for id in &w.holds_changed {
                let Some(detail) = w.hold_details.get(id) else {
                    return Err(corrupt(format!("hold {id} changed but is unknown")));
                };
                let (state, committed) = match w.account.hold(*id) {
                    Some(_) => ("active", None),
                    None => match w.account.resolution(*id) {
                        Some(HoldResolution::Committed { committed }) => {
                            ("committed", Some(i(committed.units(), "committed")?))
                        }
                        Some(HoldResolution::Cancelled) => ("cancelled", None),
                        Some(HoldResolution::Expired) => ("expired", None),
                        None => return Err(corrupt(format!("hold {id} vanished"))),
                    },
                };
                holds.tenant.push(t);
                holds.id.push(i(id.get(), "hold id")?);
                holds
                    .amount
                    .push(i(detail.amount().units(), "hold amount")?);
                holds
                    .expires_at
                    .push(i(detail.expires_at().as_unix_millis(), "hold expiry")?);
                holds.state.push(state);
                holds.committed.push(committed);
                holds
                    .draws
                    .push(serde_json::to_string(detail.draws()).map_err(corrupt)?);
            }
            for seq in &w.refunds_changed {
                refunds.0.push(t);
                refunds.1.push(i(seq.get(), "entry")?);
                refunds
                    .2
                    .push(i(w.account.refunded(*seq).units(), "refunded")?);
            }
            for e in &w.entries {
                entries.push(e)?;
            }
            for (key, record) in &w.records {
                records.0.push(t);
                records.1.push(key.as_str());
                records
                    .2
                    .push(i(record.at.as_unix_millis(), "record time")?);
                records
                    .3
                    .push(serde_json::to_string(record).map_err(corrupt)?);
            }
        }
        let s_acc = c.prepare_cached(sql::UPDATE_ACCOUNTS).await?;
        let s_lots = c.prepare_cached(sql::UPSERT_LOTS).await?;
        let s_gone = c.prepare_cached(sql::DELETE_LOTS).await?;
        let s_holds = c.prepare_cached(sql::UPSERT_HOLDS).await?;
        let s_entries = c.prepare_cached(&sql::INSERT_ENTRIES).await?;
        let s_refunds = c.prepare_cached(sql::UPSERT_REFUNDS).await?;
        let s_records = c.prepare_cached(sql::INSERT_RECORDS).await?;
        let s_audit = c.prepare_cached(sql::INSERT_AUDIT).await?;
        let acc_p = acc.params();
        let lots_p: [&(dyn ToSql + Sync); 5] = [
            &lots.tenant,
            &lots.id,
            &lots.expires_at,
            &lots.priority,
            &lots.remaining,
        ];
        let gone_p: [&(dyn ToSql + Sync); 2] = [&gone.0, &gone.1];
        let holds_p: [&(dyn ToSql + Sync); 7] = [
            &holds.tenant,
            &holds.id,
            &holds.amount,
            &holds.expires_at,
            &holds.state,
            &holds.committed,
            &holds.draws,
        ];
        let entries_p = entries.params();
        let refunds_p: [&(dyn ToSql + Sync); 3] = [&refunds.0, &refunds.1, &refunds.2];
        let records_p: [&(dyn ToSql + Sync); 4] = [&records.0, &records.1, &records.2, &records.3];
        let audit_p = audit.params();
        // Order matters: journal entries before the refund tallies that reference them.
        let statements = [
            (&s_acc, &acc_p[..], acc.tenant.is_empty()),
            (&s_lots, &lots_p[..], lots.tenant.is_empty()),
            (&s_gone, &gone_p[..], gone.0.is_empty()),
            (&s_holds, &holds_p[..], holds.tenant.is_empty()),
            (&s_entries, &entries_p[..], entries.tenant.is_empty()),
            (&s_refunds, &refunds_p[..], refunds.0.is_empty()),
            (&s_records, &records_p[..], records.0.is_empty()),
            (&s_audit, &audit_p[..], audit.stream.is_empty()),
        ];
        let mut pending: Vec<std::pin::Pin<Box<dyn Future<Output = _> + Send + '_>>> = Vec::new();
        for (statement, params, empty) in statements {
            if !empty {
                pending.push(Box::pin(c.execute(statement, params)));
            }
        }
        let end = if self.db.isolation == Isolation::Serializable {
            "COMMIT; SELECT pg_advisory_unlock_all()"
        } else {
            "COMMIT"
        };
        pending.push(Box::pin(
            async move { c.batch_execute(end).await.map(|()| 0) },
        ));
        try_join_all(pending).await?;
        Ok(())
    }
}

#[derive(Default)]
struct AccountRows<'a> {
    tenant: Vec<&'a str>,
    values: [Vec<i64>; 11],
    next_deadline: Vec<Option<i64>>,
    audit_seq: Vec<i64>,
    audit_hash: Vec<Vec<u8>>,
}

impl<'a> AccountRows<'a> {
    fn push(
        &mut self,
        h: &'a AccountHeader,
        next_deadline: Option<Timestamp>,
        audit: StreamHead,
    ) -> Result<(), PgError> {
        let t = &h.totals;
        let values = [
            t.granted.units(),
            t.refunded.units(),
            t.consumed.units(),
            t.expired.units(),
            t.available.units(),
            t.held.units(),
            t.overdrawn.units(),
            h.next_entry,
            h.next_lot,
            h.next_hold,
            h.last_at.as_unix_millis(),
        ];
        for (column, v) in self.values.iter_mut().zip(values) {
            column.push(i(v, "account counter")?);
        }
        self.tenant.push(h.tenant.as_str());
        self.next_deadline.push(
            next_deadline
                .map(|d| i(d.as_unix_millis(), "deadline"))
                .transpose()?,
        );
        self.audit_seq.push(i(audit.next_seq, "audit sequence")?);
        self.audit_hash.push(audit.last_hash.to_vec());
        Ok(())
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let mut p: Vec<&(dyn ToSql + Sync)> = vec![&self.tenant];
        for v in &self.values {
            p.push(v);
        }
        p.push(&self.next_deadline);
        p.push(&self.audit_seq);
        p.push(&self.audit_hash);
        p
    }
}

#[derive(Default)]
struct LotRows<'a> {
    tenant: Vec<&'a str>,
    id: Vec<i64>,
    expires_at: Vec<Option<i64>>,
    priority: Vec<i32>,
    remaining: Vec<i64>,
}

#[derive(Default)]
struct HoldRows<'a> {
    tenant: Vec<&'a str>,
    id: Vec<i64>,
    amount: Vec<i64>,
    expires_at: Vec<i64>,
    state: Vec<&'static str>,
    committed: Vec<Option<i64>>,
    draws: Vec<String>,
}

#[derive(Default)]
struct EntryRows<'a> {
    tenant: Vec<&'a str>,
    seq: Vec<i64>,
    at: Vec<i64>,
    kind: Vec<i16>,
    amounts: [Vec<i64>; 7],
    hold: Vec<Option<i64>>,
    lot: Vec<Option<i64>>,
    refers_to: Vec<Option<i64>>,
    key: Vec<Option<&'a str>>,
}

impl<'a> EntryRows<'a> {
    fn push(&mut self, e: &'a JournalEntry) -> Result<(), PgError> {
        let opt = |v: Option<u64>| v.map(|v| i(v, "entry reference")).transpose();
        self.tenant.push(e.tenant.as_str());
        self.seq.push(i(e.seq.get(), "entry seq")?);
        self.at.push(i(e.at.as_unix_millis(), "entry time")?);
        self.kind.push(codec::kind_code(e.kind));
        let amounts = [
            e.amount,
            e.before.available,
            e.before.held,
            e.before.overdrawn,
            e.after.available,
            e.after.held,
            e.after.overdrawn,
        ];
        for (column, a) in self.amounts.iter_mut().zip(amounts) {
            column.push(i(a.units(), "entry amount")?);
        }
        self.hold.push(opt(e.hold.map(HoldId::get))?);
        self.lot.push(opt(e.lot.map(LotId::get))?);
        self.refers_to.push(opt(e.refers_to.map(EntrySeq::get))?);
        self.key.push(e.key.as_ref().map(IdempotencyKey::as_str));
        Ok(())
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let mut p: Vec<&(dyn ToSql + Sync)> = vec![&self.tenant, &self.seq, &self.at, &self.kind];
        for v in &self.amounts {
            p.push(v);
        }
        p.push(&self.hold);
        p.push(&self.lot);
        p.push(&self.refers_to);
        p.push(&self.key);
        p
    }
}

#[derive(Default)]
struct AuditRows<'a> {
    stream: Vec<&'a str>,
    seq: Vec<i64>,
    journal_seq: Vec<i64>,
    at: Vec<i64>,
    hash: Vec<Vec<u8>>,
    record: Vec<Vec<u8>>,
}

impl<'a> AuditRows<'a> {
    fn push(&mut self, e: &'a JournalEntry, sealed: &SealedEntry) -> Result<(), PgError> {
        let mut bytes = Vec::with_capacity(256);
        sealed.encode(&mut bytes);
        self.stream.push(e.tenant.as_str());
        self.seq.push(i(sealed.seq(), "audit sequence")?);
        self.journal_seq.push(i(e.seq.get(), "entry seq")?);
        self.at.push(i(e.at.as_unix_millis(), "entry time")?);
        self.hash.push(sealed.entry_hash().to_vec());
        self.record.push(bytes);
        Ok(())
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.stream,
            &self.seq,
            &self.journal_seq,
            &self.at,
            &self.hash,
            &self.record,
        ]
    }
}

fn unwrap_outcome(r: Result<Option<Receipt>, LedgerError>) -> Result<Receipt, LedgerError> {
    r.and_then(|o| {
        o.ok_or_else(|| {
            LedgerError::Storage(credits_core::StorageError::permanent("a command produced no outcome"))
        })
    })
}

fn check_len(requests: &[Request]) -> Result<(), LedgerError> {
    if requests.is_empty() {
        return Err(LedgerError::EmptyBatch);
    }
    if requests.len() > BATCH_LEN_MAX {
        return Err(LedgerError::BatchTooLarge {
            max: BATCH_LEN_MAX,
            len: requests.len(),
        });
    }
    Ok(())
}

fn balance_of(row: &Row, first: usize) -> Result<Balance, PgError> {
    Ok(Balance {
        available: codec::amount(row.get(first), "available")?,
        held: codec::amount(row.get(first + 1), "held")?,
        overdrawn: codec::amount(row.get(first + 2), "overdrawn")?,
    })
}

#[async_trait]
impl LedgerStore for PgLedgerStore {
    async fn create_tenant(
        &self,
        tenant: &TenantId,
        settings: TenantSettings,
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        let limit = i(settings.overdraft_limit.units(), "overdraft limit")?;
        let at = i(now.as_unix_millis(), "time")?;
        let name = tenant.as_str();
        let inserted = self
            .db
            .run("create_tenant", |conn| async move {
                let st = conn.prepare_cached(sql::CREATE_TENANT).await?;
                Ok(conn.execute(&st, &[&name, &limit, &at]).await?)
            })
            .await?;
        if inserted == 0 {
            return Err(LedgerError::TenantExists(tenant.clone()));
        }
        Ok(())
    }

    async fn apply(&self, request: &Request, now: Timestamp) -> Result<Receipt, LedgerError> {
        if let Some(group) = &self.group {
            return group.apply(request, now).await;
        }
        let done = self
            .execute(&[Op::Apply(request)], now, Mode::Independent)
            .await?;
        done.results
            .into_iter()
            .next()
            .map_or_else(|| unwrap_outcome(Ok(None)), unwrap_outcome)
    }

    async fn apply_batch(&self, batch: &Batch, now: Timestamp) -> Result<Vec<Receipt>, LedgerError> {
        let ops: Vec<Op<'_>> = batch.requests().iter().map(Op::Apply).collect();
        let done = self.execute(&ops, now, Mode::Atomic).await?;
        done.results.into_iter().map(unwrap_outcome).collect()
    }

    async fn idempotency_record(
        &self,
        tenant: &TenantId,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>, LedgerError> {
        let rows = self
            .query(
                "idempotency_record",
                sql::RECORD,
                &[&tenant.as_str(), &key.as_str()],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Err(LedgerError::UnknownTenant(tenant.clone()));
        };
        row.get::<_, Option<&str>>(0)
            .map(|s| serde_json::from_str(s).map_err(|e| LedgerError::from(corrupt(e))))
            .transpose()
    }

    async fn balance(&self, tenant: &TenantId, now: Timestamp) -> Result<Balance, LedgerError> {
        let rows = self
            .query("balance", sql::BALANCE, &[&tenant.as_str()])
            .await?;
        let Some(row) = rows.first() else {
            return Err(LedgerError::UnknownTenant(tenant.clone()));
        };
        let due = row
            .get::<_, Option<i64>>(3)
            .is_some_and(|d| d <= codec::ts_clamped(now));
        if !due {
            return Ok(balance_of(row, 0)?);
        }
        // Something expired: apply it (a write) and answer with the result.
        let done = self
            .execute(&[Op::Expire(tenant)], now, Mode::Independent)
            .await?;
        done.balances
            .get(tenant)
            .copied()
            .ok_or_else(|| LedgerError::UnknownTenant(tenant.clone()))
    }

    async fn balance_at(&self, tenant: &TenantId, at: Timestamp) -> Result<Balance, LedgerError> {
        let at = codec::ts_clamped(at);
        let rows = self
            .query("balance_at", sql::BALANCE_AT, &[&tenant.as_str(), &at])
            .await?;
        let Some(row) = rows.first() else {
            return Err(LedgerError::UnknownTenant(tenant.clone()));
        };
        if row.get::<_, Option<i64>>(0).is_none() {
            return Ok(Balance::default());
        }
        Ok(balance_of(row, 0)?)
    }

    async fn history(&self, tenant: &TenantId, page: PageRequest) -> Result<Page, LedgerError> {
        let after = page
            .after
            .map_or(0, |s| i64::try_from(s.get()).unwrap_or(i64::MAX));
        let limit = page.clamped_limit();
        let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
        let rows = self
            .query(
                "history",
                &sql::HISTORY,
                &[&tenant.as_str(), &after, &fetch],
            )
            .await?;
        if rows.is_empty() {
            let exists = self
                .query("tenant_exists", sql::TENANT_EXISTS, &[&tenant.as_str()])
                .await?;
            if exists.is_empty() {
                return Err(LedgerError::UnknownTenant(tenant.clone()));
            }
        }
        let more = rows.len() > limit;
        let entries = rows
            .iter()
            .take(limit)
            .map(codec::entry)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if more {
            entries.last().map(|e| e.seq)
        } else {
            None
        };
        Ok(Page { entries, next })
    }

    async fn hold(&self, tenant: &TenantId, hold: HoldId) -> Result<HoldState, LedgerError> {
        let id = i64::try_from(hold.get()).map_err(|_| LedgerError::UnknownHold(hold))?;
        let rows = self
            .query("hold", sql::HOLD, &[&tenant.as_str(), &id])
            .await?;
        let Some(row) = rows.first() else {
            return Err(LedgerError::UnknownTenant(tenant.clone()));
        };
        let Some(state) = row.get::<_, Option<&str>>(2) else {
            return Err(LedgerError::UnknownHold(hold));
        };
        Ok(match resolution(state, row.get(3))? {
            Some(r) => HoldState::Resolved(r),
            None => HoldState::Active {
                amount: codec::amount(row.get(0), "hold amount")?,
                expires_at: codec::ts(row.get(1), "hold expiry")?,
            },
        })
    }

    async fn sweep(&self, now: Timestamp, tenants_max: usize) -> Result<SweepReport, LedgerError> {
        let at = codec::ts_clamped(now);
        let fetch = i64::try_from(tenants_max.saturating_add(1)).unwrap_or(i64::MAX);
        let rows = self
            .query("sweep", sql::DUE_TENANTS, &[&at, &fetch])
            .await?;
        let mut due = rows
            .iter()
            .map(|r| codec::tenant(r.get(0)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut report = SweepReport {
            more: due.len() > tenants_max,
            ..SweepReport::default()
        };
        due.truncate(tenants_max);
        for chunk in due.chunks(SWEEP_CHUNK_MAX) {
            let ops: Vec<Op<'_>> = chunk.iter().map(Op::Expire).collect();
            let done = self.execute(&ops, now, Mode::Independent).await?;
            report.tenants += chunk.len();
            report.holds_expired += done.holds_expired;
            report.lots_expired += done.lots_expired;
        }
        Ok(report)
    }

    async fn totals(&self, tenant: &TenantId) -> Result<Totals, LedgerError> {
        let rows = self
            .query("totals", &sql::TOTALS, &[&tenant.as_str()])
            .await?;
        let Some(row) = rows.first() else {
            return Err(LedgerError::UnknownTenant(tenant.clone()));
        };
        let mut totals = codec::header(row)?.totals;
        totals.lots = parse_amount_text(row.get(13))?;
        totals.holds = parse_amount_text(row.get(14))?;
        Ok(totals)
    }

    async fn totals_all(&self) -> Result<Totals, LedgerError> {
        let rows = self.query("totals_all", sql::TOTALS_ALL, &[]).await?;
        let Some(row) = rows.first() else {
            return Ok(Totals::default());
        };
        let a = |i: usize| parse_amount_text(row.get(i));
        Ok(Totals {
            granted: a(0)?,
            refunded: a(1)?,
            consumed: a(2)?,
            expired: a(3)?,
            available: a(4)?,
            held: a(5)?,
            overdrawn: a(6)?,
            lots: a(7)?,
            holds: a(8)?,
        })
    }
}
