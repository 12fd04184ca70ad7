//! [`PgRolloutStore`]: canary's [`RolloutStore`] in `service_rollouts` (feature `rollouts`),
//! with each change's trail entries sealed into the audit log in the change's transaction.

use std::sync::Arc;

use async_trait::async_trait;
use audit_chain::{AuditEntry, Keyring, MaskingPolicy};
use canary::{CanaryError, RolloutAdmission, RolloutState, RolloutStore, StoredRollout};

use crate::audit::seal_in_transaction;
use crate::pool::{Db, TxConn};
use crate::{PgAuditTrail, PgError};

/// Rollouts in PostgreSQL (`service_rollouts`), shared by every process using the database.
///
/// A [`save`](RolloutStore::save) is one transaction: `UPDATE … WHERE version = $expected`
/// (the optimistic version check: of two processes that decided the same step from the same
/// version, the second finds no row to update and gets [`CanaryError::VersionConflict`]),
/// then the change's trail entries sealed onto the rollout's audit stream and queued for the
/// sequencer, as [`PgAuditTrail`] does, then `COMMIT`. A decision and its trail commit
/// together or not at all, so the trail holds each step's decision once.
///
/// [`create`](RolloutStore::create) counts the stored rollouts under a transaction lock, so
/// the limit holds across processes.
///
/// ```no_run
/// use std::sync::Arc;
/// use audit_chain::{Keyring, MaskingPolicy};
/// use canary::RolloutStore;
/// use credits_postgres::{PgConfig, PgLedgerStore};
/// use metered_clock::SystemClock;
///
/// # async fn run(keyring: Arc<Keyring>) -> Result<(), Box<dyn std::error::Error>> {
/// let clock = Arc::new(SystemClock::new());
/// let store = PgLedgerStore::connect(PgConfig::builder("postgres://postgres@127.0.0.1/test").build()?, clock)?;
/// store.migrate().await?;
/// let rollouts = store.audit_trail(keyring, MaskingPolicy::standard()).rollout_store();
/// for id in rollouts.ids().await? {
///     let stored = rollouts.load(&id).await?;
///     println!("{id}: {:?} at version {}", stored.state.phase, stored.version);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgRolloutStore {
    db: Arc<Db>,
    keyring: Arc<Keyring>,
    policy: Arc<MaskingPolicy>,
}

impl std::fmt::Debug for PgRolloutStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgRolloutStore")
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl PgAuditTrail {
    /// The rollout store sharing this trail's pool and sealing its trail entries as this
    /// trail does.
    #[must_use]
    pub fn rollout_store(&self) -> PgRolloutStore {
        let (keyring, policy) = self.sealing();
        PgRolloutStore {
            db: Arc::clone(self.db()),
            keyring,
            policy,
        }
    }
}

fn storage(e: PgError) -> CanaryError {
    CanaryError::Storage {
        retryable: e.is_retryable(),
        message: e.to_string(),
    }
}

fn encode(state: &RolloutState) -> Result<String, CanaryError> {
    serde_json::to_string(state).map_err(|e| CanaryError::Storage {
        message: format!("rollout state not encodable: {e}"),
        retryable: false,
    })
}

fn version_of(v: i64) -> Result<u64, PgError> {
    u64::try_from(v).map_err(|_| PgError::corrupt("service_rollouts: negative version"))
}

/// A domain answer (nothing written: the transaction is rolled back) or a storage error.
type Answer<T> = Result<Result<T, CanaryError>, PgError>;

impl PgRolloutStore {
    /// Seals `trail` inside the open transaction of `conn`; on a refused entry rolls back
    /// and says why.
    async fn seal_all(&self, conn: &TxConn, trail: &[AuditEntry]) -> Answer<()> {
        for entry in trail {
            if let Err(e) =
                seal_in_transaction(conn.client(), &self.keyring, &self.policy, entry).await?
            {
                return Ok(Err(CanaryError::Audit(e)));
            }
        }
        Ok(Ok(()))
    }
}

#[async_trait]
impl RolloutStore for PgRolloutStore {
    async fn create(
        &self,
        rollout: &StoredRollout,
        trail: &[AuditEntry],
        max: usize,
    ) -> Result<RolloutAdmission, CanaryError> {
        rollout.check_trail(trail)?;
        let state = encode(&rollout.state)?;
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        self.db
            .run("rollout_create", |conn| {
                let state = &state;
                async move {
                    let conn = TxConn::new(conn);
                    let c = conn.client();
                    c.batch_execute(
                        "BEGIN; SELECT pg_advisory_xact_lock(hashtextextended(\
                             'credits_rollouts:' || current_schema(), 0))",
                    )
                    .await?;
                    let n: i64 = c
                        .query_one("SELECT count(*) FROM service_rollouts", &[])
                        .await?
                        .get(0);
                    if n >= limit {
                        conn.rollback().await;
                        return Ok(Ok(RolloutAdmission::Full { max }));
                    }
                    let inserted = c
                        .execute(
                            "INSERT INTO service_rollouts (id, spec, state, version) \
                             VALUES ($1, $2, $3, 1) ON CONFLICT DO NOTHING",
                            &[&rollout.id, &rollout.spec, state],
                        )
                        .await?;
                    if inserted == 0 {
                        conn.rollback().await;
                        return Ok(Err(CanaryError::DuplicateRollout {
                            id: rollout.id.clone(),
                        }));
                    }
                    if let Err(e) = self.seal_all(&conn, trail).await? {
                        conn.rollback().await;
                        return Ok(Err(e));
                    }
                    c.batch_execute("COMMIT").await?;
                    conn.finish();
                    Ok(Ok(RolloutAdmission::Created { version: 1 }))
                }
            })
            .await
            .map_err(storage)?
    }

    async fn load(&self, id: &str) -> Result<StoredRollout, CanaryError> {
        let row = self
            .db
            .run("rollout_load", |conn| async move {
                Ok(conn
                    .query_opt(
                        "SELECT spec, state, version FROM service_rollouts WHERE id = $1",
                        &[&id],
                    )
                    .await?)
            })
            .await
            .map_err(storage)?;
        let Some(row) = row else {
            return Err(CanaryError::UnknownRollout { id: id.to_owned() });
        };
        let state: RolloutState = serde_json::from_str(row.get(1)).map_err(|e| {
            storage(PgError::corrupt(format!(
                "service_rollouts {id:?}: state: {e}"
            )))
        })?;
        Ok(StoredRollout {
            id: id.to_owned(),
            spec: row.get(0),
            state,
            version: version_of(row.get(2)).map_err(storage)?,
        })
    }

    async fn save(
        &self,
        rollout: &StoredRollout,
        trail: &[AuditEntry],
    ) -> Result<u64, CanaryError> {
        rollout.check_trail(trail)?;
        let state = encode(&rollout.state)?;
        let id = rollout.id.as_str();
        let expected = i64::try_from(rollout.version).unwrap_or(i64::MAX);
        self.db
            .run("rollout_save", |conn| {
                let state = &state;
                async move {
                    let conn = TxConn::new(conn);
                    let c = conn.client();
                    c.batch_execute("BEGIN").await?;
                    let saved = c
                        .query_opt(
                            "UPDATE service_rollouts SET state = $2, version = version + 1 \
                             WHERE id = $1 AND version = $3 RETURNING version",
                            &[&id, state, &expected],
                        )
                        .await?;
                    let Some(saved) = saved else {
                        let now = c
                            .query_opt("SELECT version FROM service_rollouts WHERE id = $1", &[&id])
                            .await?;
                        conn.rollback().await;
                        return Ok(Err(match now {
                            None => CanaryError::UnknownRollout { id: id.to_owned() },
                            Some(row) => CanaryError::VersionConflict {
                                id: id.to_owned(),
                                expected: rollout.version,
                                found: version_of(row.get(0))?,
                            },
                        }));
                    };
                    let version = version_of(saved.get(0))?;
                    if let Err(e) = self.seal_all(&conn, trail).await? {
                        conn.rollback().await;
                        return Ok(Err(e));
                    }
                    c.batch_execute("COMMIT").await?;
                    conn.finish();
                    Ok(Ok(version))
                }
            })
            .await
            .map_err(storage)?
    }

    async fn ids(&self) -> Result<Vec<String>, CanaryError> {
        let rows = self
            .db
            .run("rollout_ids", |conn| async move {
                Ok(conn
                    .query("SELECT id FROM service_rollouts ORDER BY id", &[])
                    .await?)
            })
            .await
            .map_err(storage)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
