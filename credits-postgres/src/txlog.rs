//! [`PgTxLog`]: the two-phase-commit log in `distributed_transactions`.

use std::sync::Arc;

use async_trait::async_trait;
use credits_core::LedgerError;
use credits_core::tx::{Branch, TxAction, TxDecision, TxId, TxLog, TxPhase, TxRecord};
use metered_clock::Timestamp;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::codec::{self, i};
use crate::pool::Db;
use crate::{PgError, PgLedgerStore};

/// The transaction manager's log on PostgreSQL. Every step is one statement (one
/// autocommitted row update), so a decision is durable when [`TxLog::decide`] returns, and
/// the first decision wins even with several coordinators (`UPDATE … WHERE phase IN
/// ('active', 'prepared')`).
///
/// ```no_run
/// use std::sync::Arc;
/// use credits_core::tx::TransactionManager;
/// use credits_postgres::{PgConfig, PgLedgerStore};
/// use metered_clock::SystemClock;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let clock = Arc::new(SystemClock::new());
/// let store = PgLedgerStore::connect(PgConfig::builder("postgres://postgres@127.0.0.1/test").build()?, clock.clone())?;
/// store.migrate().await?;
/// let tm = TransactionManager::builder(Arc::new(store.tx_log()), clock).build();
/// let report = tm.recover().await?; // at start-up: finish what a crash interrupted
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct PgTxLog {
    db: Arc<Db>,
}

impl PgLedgerStore {
    /// The two-phase-commit log sharing this store's pool.
    #[must_use]
    pub fn tx_log(&self) -> PgTxLog {
        PgTxLog {
            db: Arc::clone(&self.db),
        }
    }

    /// Runs `cleanup_old_transactions(days)`: deletes finished distributed transactions last
    /// changed more than `days` days ago. Returns how many.
    ///
    /// # Errors
    /// [`PgError::InvalidConfig`] for `days == 0`; storage failures.
    pub async fn cleanup_old_transactions(&self, days: u32) -> Result<u64, PgError> {
        self.cleanup("SELECT cleanup_old_transactions($1)", days)
            .await
    }

    /// Runs `cleanup_idempotency_keys(days)`: forgets idempotency records older than `days`
    /// days (a request retried after that is applied again). Returns how many.
    ///
    /// # Errors
    /// [`PgError::InvalidConfig`] for `days == 0`; storage failures.
    pub async fn cleanup_idempotency_keys(&self, days: u32) -> Result<u64, PgError> {
        self.cleanup("SELECT cleanup_idempotency_keys($1)", days)
            .await
    }

    async fn cleanup(&self, statement: &'static str, days: u32) -> Result<u64, PgError> {
        let days = match i32::try_from(days) {
            Ok(d) if d >= 1 => d,
            _ => {
                return Err(PgError::InvalidConfig {
                    field: "days",
                    reason: format!("must be 1 to {}, got {days}", i32::MAX),
                });
            }
        };
        let rows = self.query("cleanup", statement, &[&days]).await?;
        rows.first()
            .map_or(Ok(0), |r| codec::u(r.get(0), "removed count"))
    }
}

fn record(row: &Row) -> Result<TxRecord, PgError> {
    Ok(TxRecord {
        id: TxId::new(codec::u(row.get(0), "transaction id")?),
        deadline: codec::ts(row.get(1), "deadline")?,
        phase: codec::phase_of(row.get(2))?,
        branches: codec::branches_of(row.get(3))?,
    })
}

const SELECT: &str = "SELECT id, deadline, phase, branches::text FROM distributed_transactions";

impl PgTxLog {
    /// `recover_stalled_transactions(now)`: the number of undecided transactions past their
    /// deadline (by the caller's clock, which set them) that the database decided to abort.
    async fn recover_stalled(&self, now: Timestamp) -> Result<u64, PgError> {
        let now = codec::i(now.as_unix_millis(), "time")?;
        let rows = self
            .query(
                "recover_stalled",
                "SELECT recover_stalled_transactions($1::bigint)",
                &[&now],
            )
            .await?;
        rows.first()
            .map_or(Ok(0), |r| codec::u(r.get(0), "recovered count"))
    }

    async fn query(
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

    async fn fetch(&self, tx: TxId) -> Result<Option<TxRecord>, LedgerError> {
        let id = i64::try_from(tx.get()).map_err(|_| LedgerError::UnknownTransaction(tx))?;
        let rows = self
            .query("tx_get", &format!("{SELECT} WHERE id = $1"), &[&id])
            .await?;
        Ok(rows.first().map(record).transpose()?)
    }

    /// The error for a step refused in the transaction's current phase.
    async fn refused(&self, tx: TxId, action: TxAction) -> LedgerError {
        match self.fetch(tx).await {
            Ok(Some(r)) => LedgerError::TransactionState {
                tx,
                state: r.phase,
                action,
            },
            Ok(None) => LedgerError::UnknownTransaction(tx),
            Err(e) => e,
        }
    }

    /// Runs a guarded single-row update; `Ok(true)` if it matched.
    async fn update(
        &self,
        what: &'static str,
        statement: &'static str,
        tx: TxId,
        extra: Option<&(dyn ToSql + Sync)>,
    ) -> Result<bool, LedgerError> {
        let Ok(id) = i64::try_from(tx.get()) else {
            return Err(LedgerError::UnknownTransaction(tx));
        };
        let rows = match extra {
            Some(p) => self.query(what, statement, &[&id, p]).await?,
            None => self.query(what, statement, &[&id]).await?,
        };
        Ok(!rows.is_empty())
    }
}

/// The guarded update that records every branch's phase-one answer ($2, a JSON array) on an
/// `Active` transaction with exactly that many branches, moving it to `$phase`.
macro_rules! record_answers {
    ($phase:literal) => {
        concat!(
            "UPDATE distributed_transactions \
             SET phase = '",
            $phase,
            "', updated_at = clock_timestamp(), \
                 branches = (SELECT coalesce(jsonb_agg(b || jsonb_build_object('prepared', a) \
                                                       ORDER BY b_i), '[]'::jsonb) \
                               FROM jsonb_array_elements(branches) WITH ORDINALITY AS x (b, b_i) \
                               JOIN jsonb_array_elements_text($2::text::jsonb) \
                                    WITH ORDINALITY AS y (a, a_i) ON a_i = b_i) \
             WHERE id = $1 AND phase = 'active' \
               AND jsonb_array_length(branches) = jsonb_array_length($2::text::jsonb) \
             RETURNING id"
        )
    };
}

#[async_trait]
impl TxLog for PgTxLog {
    async fn begin(&self, deadline: Timestamp) -> Result<TxId, LedgerError> {
        let deadline = i(deadline.as_unix_millis(), "deadline")?;
        let rows = self
            .query(
                "tx_begin",
                "INSERT INTO distributed_transactions (deadline) VALUES ($1) RETURNING id",
                &[&deadline],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| PgError::corrupt("INSERT returned no id"))?;
        Ok(TxId::new(codec::u(row.get(0), "transaction id")?))
    }

    async fn enlist(&self, tx: TxId, branch: Branch) -> Result<u32, LedgerError> {
        let json = codec::branches_text(std::slice::from_ref(&branch))?;
        let id = i64::try_from(tx.get()).map_err(|_| LedgerError::UnknownTransaction(tx))?;
        let rows = self
            .query(
                "tx_enlist",
                "UPDATE distributed_transactions \
                 SET branches = branches || $2::text::jsonb, updated_at = clock_timestamp() \
                 WHERE id = $1 AND phase = 'active' \
                 RETURNING jsonb_array_length(branches) - 1",
                &[&id, &json],
            )
            .await?;
        match rows.first() {
            Some(row) => Ok(u32::try_from(row.get::<_, i32>(0))
                .map_err(|_| PgError::corrupt("branch index out of range"))?),
            None => Err(self.refused(tx, TxAction::Enlist).await),
        }
    }

    async fn mark_prepared(&self, tx: TxId, prepared: Vec<Arc<str>>) -> Result<(), LedgerError> {
        let answers = serde_json::to_string(&prepared)
            .map_err(|e| PgError::corrupt(format_args!("prepared answers: {e}")))?;
        let matched = self
            .update(
                "tx_prepared",
                record_answers!("prepared"),
                tx,
                Some(&answers),
            )
            .await?;
        if matched {
            return Ok(());
        }
        // Prepared before with the same answers: done.
        if let Some(r) = self.fetch(tx).await?
            && r.phase == TxPhase::Prepared
            && r.branches.len() == prepared.len()
            && r.branches
                .iter()
                .zip(&prepared)
                .all(|(b, p)| b.prepared.as_deref() == Some(&**p))
        {
            return Ok(());
        }
        Err(self.refused(tx, TxAction::Prepare).await)
    }

    async fn prepare_and_commit(
        &self,
        tx: TxId,
        prepared: Vec<Arc<str>>,
    ) -> Result<TxDecision, LedgerError> {
        let answers = serde_json::to_string(&prepared)
            .map_err(|e| PgError::corrupt(format_args!("prepared answers: {e}")))?;
        // The answers and the commit decision in one durable write.
        let matched = self
            .update(
                "tx_prepared_commit",
                record_answers!("committing"),
                tx,
                Some(&answers),
            )
            .await?;
        if matched {
            return Ok(TxDecision::Commit);
        }
        // Not `Active` with this branch set: the two steps give the same answers and
        // refusals as always (prepared before, decided before, a branch enlisted since).
        self.mark_prepared(tx, prepared).await?;
        self.decide(tx, TxDecision::Commit).await
    }

    async fn decide(&self, tx: TxId, decision: TxDecision) -> Result<TxDecision, LedgerError> {
        let phase = TxPhase::as_str(TxPhase::Decided(decision));
        // A commit needs every branch's answer (`prepared`); an abort may come earlier.
        let matched = self
            .update(
                "tx_decide",
                "UPDATE distributed_transactions \
                 SET phase = $2, updated_at = clock_timestamp() \
                 WHERE id = $1 \
                   AND (phase = 'prepared' OR (phase = 'active' AND $2 = 'aborting')) \
                 RETURNING id",
                tx,
                Some(&phase),
            )
            .await?;
        if matched {
            return Ok(decision);
        }
        // Decided before: the first decision wins.
        match self.fetch(tx).await?.map(|r| r.phase) {
            Some(TxPhase::Decided(d) | TxPhase::Finished(d)) => Ok(d),
            Some(_) => Err(self.refused(tx, TxAction::Decide).await),
            None => Err(LedgerError::UnknownTransaction(tx)),
        }
    }

    async fn finish(&self, tx: TxId) -> Result<(), LedgerError> {
        let matched = self
            .update(
                "tx_finish",
                "UPDATE distributed_transactions \
                 SET phase = CASE phase WHEN 'committing' THEN 'committed' \
                                        WHEN 'aborting' THEN 'aborted' ELSE phase END, \
                     updated_at = clock_timestamp() \
                 WHERE id = $1 AND phase IN ('committing', 'aborting', 'committed', 'aborted') \
                 RETURNING id",
                tx,
                None,
            )
            .await?;
        if matched {
            Ok(())
        } else {
            Err(self.refused(tx, TxAction::Finish).await)
        }
    }

    async fn get(&self, tx: TxId) -> Result<Option<TxRecord>, LedgerError> {
        self.fetch(tx).await
    }

    async fn unfinished(&self) -> Result<Vec<TxRecord>, LedgerError> {
        let rows = self
            .query(
                "tx_unfinished",
                &format!(
                    "{SELECT} WHERE phase IN ('active', 'prepared', 'committing', 'aborting') \
                     ORDER BY id"
                ),
                &[],
            )
            .await?;
        Ok(rows.iter().map(record).collect::<Result<Vec<_>, _>>()?)
    }

    /// Runs `recover_stalled_transactions(now)` (the database decides to abort every
    /// undecided transaction past its deadline by `now`, the clock that set the deadlines);
    /// the coordinator then tells the participants.
    async fn maintain(&self, now: Timestamp) -> Result<u64, LedgerError> {
        Ok(self.recover_stalled(now).await?)
    }
}
