//! [`PgLedgerStore`]: the ledger on PostgreSQL.
//!
//! * this file: the store, its constructors and the [`LedgerStore`] implementation (the
//!   reads are single statements here; every mutation goes through [`transaction`]);
//! * [`transaction`]: one SQL transaction: lock and load, apply the operations, write and
//!   commit, retried as a whole;
//! * [`work`]: one tenant inside a transaction (its rebuilt account and what changed);
//! * [`load`]: reading the locked tenants' state into [`AccountParts`](credits_core::backend::AccountParts);
//! * [`write`]: persisting the change sets, the idempotency records and the sealed audit
//!   entries, and `COMMIT`, in one round trip;
//! * [`rows`]: the column arrays each write statement takes.

mod load;
mod rows;
mod transaction;
mod work;
mod write;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use audit_chain::SealedEntry;
use credits_core::store::{LedgerStore, Page, PageRequest, PreparedHold, SweepReport};
use credits_core::tx::BranchId;
use credits_core::{
    Amount, BATCH_LEN_MAX, Balance, Batch, EventPage, EventSeq, HoldId, HoldState, IdempotencyKey,
    IdempotencyRecord, LedgerError, Receipt, Request, TenantId, TenantSettings, Totals,
};
use deadpool_postgres::Pool;
use metered_clock::{Clock, Timestamp};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::codec::{self, i};
use crate::group::GroupQueue;
use crate::migrate::{MigrationReport, migrate};
use crate::pool::{Db, build_pool};
use crate::{GroupCommitConfig, LedgerAudit, PgConfig, PgError, sql};
use transaction::{Mode, Op, receipt};

/// Most tenants expired in one SQL transaction by [`LedgerStore::sweep`].
pub const SWEEP_CHUNK_MAX: usize = 64;

/// The ledger on PostgreSQL: a [`LedgerStore`] whose every mutation is one SQL transaction.
///
/// Each call locks the tenant row(s) (`SELECT … FOR UPDATE`, ascending tenant order for
/// batches), loads the live state (lots, active holds, the idempotency records and whatever
/// the commands name), runs credits-core's pure rules
/// ([`Account::apply`](credits_core::backend::Account::apply)) and writes the
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
    audit_backlog_max: i64,
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
            audit_backlog_max: i64::try_from(config.audit_backlog_max).unwrap_or(i64::MAX),
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

    /// How many attempts this store retried (serialization failures, deadlocks, lost
    /// connections) since it was built: the `credits_postgres_retries_total` counter,
    /// readable without a metrics recorder.
    #[must_use]
    pub fn retries(&self) -> u64 {
        self.db.retries()
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
        Ok(done.results.into_iter().map(receipt).collect())
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
                &[&credits_core::audit::stream_name(tenant), &from, &limit],
            )
            .await?;
        rows.iter()
            .map(|r| SealedEntry::decode(r.get::<_, &[u8]>(0)).map_err(PgError::corrupt))
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
}

fn parse_amount_text(s: &str) -> Result<Amount, LedgerError> {
    s.parse::<u64>()
        .map(Amount::new)
        .map_err(|_| LedgerError::AmountOverflow)
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
        let rollover = settings
            .rollover
            .as_ref()
            .map(codec::rollover_text)
            .transpose()?;
        let thresholds = (!settings.thresholds.is_empty())
            .then(|| codec::thresholds_text(&settings.thresholds))
            .transpose()?;
        let at = i(now.as_unix_millis(), "time")?;
        let name = tenant.as_str();
        let inserted = self
            .db
            .run("create_tenant", |conn| {
                let rollover = rollover.clone();
                let thresholds = thresholds.clone();
                async move {
                    let st = conn.prepare_cached(sql::CREATE_TENANT).await?;
                    Ok(conn
                        .execute(&st, &[&name, &limit, &at, &rollover, &thresholds])
                        .await?)
                }
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
            .map_or_else(|| receipt(Ok(None)), receipt)
    }

    async fn apply_batch(
        &self,
        batch: &Batch,
        now: Timestamp,
    ) -> Result<Vec<Receipt>, LedgerError> {
        let ops: Vec<Op<'_>> = batch.requests().iter().map(Op::Apply).collect();
        let done = self.execute(&ops, now, Mode::Atomic).await?;
        done.results.into_iter().map(receipt).collect()
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
            .map(|s| codec::record_of(s).map_err(LedgerError::from))
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
        Ok(match codec::resolution(state, row.get(3))? {
            Some(r) => HoldState::Resolved(r),
            None => HoldState::Active {
                amount: codec::amount(row.get(0), "hold amount")?,
                expires_at: codec::hold_expiry_of(row.get(1))?,
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
        totals.lots = parse_amount_text(row.get(codec::HEADER_LEN))?;
        totals.holds = parse_amount_text(row.get(codec::HEADER_LEN + 1))?;
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

    async fn forget_keys(&self, older_than: Timestamp) -> Result<u64, LedgerError> {
        let before = codec::ts_clamped(older_than);
        let removed = self
            .db
            .run("forget_keys", |conn| async move {
                let st = conn.prepare_cached(sql::FORGET_KEYS).await?;
                Ok(conn.execute(&st, &[&before]).await?)
            })
            .await?;
        Ok(removed)
    }

    fn value_limit(&self) -> u64 {
        crate::codec::BIGINT_MAX
    }

    async fn prepared_holds(
        &self,
        after: Option<BranchId>,
        limit: usize,
    ) -> Result<Vec<PreparedHold>, LedgerError> {
        let (tx, branch) = match after {
            None => (-1_i64, -1_i32),
            Some(b) => match codec::owner_columns(Some(b))? {
                (Some(tx), Some(branch)) => (tx, branch),
                _ => (-1, -1),
            },
        };
        let limit = i64::try_from(limit.clamp(1, credits_core::store::PAGE_LEN_MAX)).unwrap_or(1);
        let rows = self
            .query(
                "prepared_holds",
                sql::PREPARED_HOLDS,
                &[&tx, &branch, &limit],
            )
            .await?;
        let mut found = Vec::with_capacity(rows.len());
        for row in &rows {
            let branch = codec::owner_of(row.get(3), row.get(4))?
                .ok_or_else(|| PgError::corrupt("prepared hold without owner"))?;
            found.push(PreparedHold {
                branch,
                tenant: TenantId::new(row.get::<_, &str>(0)).map_err(PgError::corrupt)?,
                hold: HoldId::new(codec::u(row.get(1), "hold_id")?),
                amount: codec::amount(row.get(2), "hold amount")?,
            });
        }
        Ok(found)
    }

    async fn events(
        &self,
        tenant: &TenantId,
        after: Option<EventSeq>,
        limit: usize,
    ) -> Result<EventPage, LedgerError> {
        let from = after.map_or(0, |s| i64::try_from(s.get()).unwrap_or(i64::MAX));
        let limit = limit.clamp(1, credits_core::store::PAGE_LEN_MAX);
        let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
        let rows = self
            .query("events", &sql::EVENTS, &[&tenant.as_str(), &from, &fetch])
            .await?;
        if rows.is_empty() {
            self.tenant_exists(tenant).await?;
        }
        let more = rows.len() > limit;
        let events = rows
            .iter()
            .take(limit)
            .map(codec::event)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if more {
            events.last().map(|e| e.seq)
        } else {
            None
        };
        Ok(EventPage { events, next })
    }

    async fn event_cursor(&self, tenant: &TenantId) -> Result<Option<EventSeq>, LedgerError> {
        let rows = self
            .query("event_cursor", sql::EVENT_CURSOR, &[&tenant.as_str()])
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| LedgerError::UnknownTenant(tenant.clone()))?;
        let delivered = codec::u(row.get(0), "events_delivered")?;
        Ok((delivered > 0).then_some(EventSeq::new(delivered)))
    }

    async fn advance_event_cursor(
        &self,
        tenant: &TenantId,
        delivered: EventSeq,
    ) -> Result<(), LedgerError> {
        let to = i64::try_from(delivered.get()).unwrap_or(i64::MAX);
        let rows = self
            .query(
                "advance_event_cursor",
                sql::ADVANCE_EVENT_CURSOR,
                &[&tenant.as_str(), &to],
            )
            .await?;
        if rows.is_empty() {
            return Err(LedgerError::UnknownTenant(tenant.clone()));
        }
        Ok(())
    }

    async fn tenants_with_pending_events(
        &self,
        after: Option<TenantId>,
        limit: usize,
    ) -> Result<Vec<TenantId>, LedgerError> {
        let after = after.as_ref().map_or("", TenantId::as_str);
        let limit = i64::try_from(limit.clamp(1, credits_core::store::PAGE_LEN_MAX)).unwrap_or(1);
        let rows = self
            .query(
                "pending_event_tenants",
                sql::PENDING_EVENT_TENANTS,
                &[&after, &limit],
            )
            .await?;
        let mut found = Vec::with_capacity(rows.len());
        for row in &rows {
            found.push(codec::tenant(row.get(0))?);
        }
        Ok(found)
    }
}

impl PgLedgerStore {
    /// `Ok` if the tenant exists, [`LedgerError::UnknownTenant`] otherwise.
    async fn tenant_exists(&self, tenant: &TenantId) -> Result<(), LedgerError> {
        let exists = self
            .query("tenant_exists", sql::TENANT_EXISTS, &[&tenant.as_str()])
            .await?;
        if exists.is_empty() {
            return Err(LedgerError::UnknownTenant(tenant.clone()));
        }
        Ok(())
    }
}
