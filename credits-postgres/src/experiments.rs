//! [`PgExperimentStore`]: bayes-ab's [`ExperimentStore`] in `service_experiments`
//! (feature `experiments`), shared by every process using the database.

use std::sync::Arc;

use async_trait::async_trait;
use bayes_ab::{BayesError, ExperimentState, ExperimentStore};

use crate::pool::{Db, TxConn};
use crate::{PgError, PgLedgerStore};

/// Experiments in PostgreSQL (`service_experiments`), with the optimistic versions
/// [`ExperimentStore`] documents: [`save`](ExperimentStore::save) is one
/// `UPDATE … WHERE version = $expected`, [`merge`](ExperimentStore::merge) one transaction
/// that locks the row (`SELECT … FOR UPDATE`), adds the counts in Rust and writes them back,
/// so concurrent merges from any number of processes all count.
/// [`merge_once`](ExperimentStore::merge_once) inserts its key and request fingerprint into
/// `service_experiment_result_keys` in that transaction before adding the counts, and adds
/// nothing if the key was there (a replay with the same fingerprint, or
/// [`BayesError::IdempotencyConflict`] with another); [`delete`](ExperimentStore::delete) removes the
/// experiment's keys with it.
///
/// An experiment belongs to the tenant its id names: the part before the last `/`
/// (`acme/checkout-v2` is tenant `acme`'s; an id without `/` belongs to the tenant `""`).
/// [`create_within`](Self::create_within) counts a tenant's experiments in the database
/// under a per-tenant transaction lock, so a quota holds across replicas.
///
/// ```no_run
/// use std::sync::Arc;
/// use bayes_ab::{ExperimentState, ExperimentStore, TrafficSplit};
/// use credits_postgres::{ExperimentAdmission, PgConfig, PgLedgerStore};
/// use metered_clock::{SystemClock, Timestamp};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let clock = Arc::new(SystemClock::new());
/// let store = PgLedgerStore::connect(PgConfig::builder("postgres://postgres@127.0.0.1/test").build()?, clock)?;
/// store.migrate().await?;
/// let experiments = store.experiment_store();
/// let state = ExperimentState::new("acme/checkout-v2", TrafficSplit::even(2)?, Timestamp::EPOCH)?;
/// match experiments.create_within(state, Some("{}"), 10).await? {
///     ExperimentAdmission::Created { version } => assert_eq!(version, 1),
///     ExperimentAdmission::Full { max } => println!("acme has its {max} experiments"),
/// }
/// let (loaded, version) = experiments.load("acme/checkout-v2").await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct PgExperimentStore {
    db: Arc<Db>,
}

/// What [`PgExperimentStore::create_within`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum ExperimentAdmission {
    /// Stored at this version (1).
    Created {
        /// The new experiment's version.
        version: u64,
    },
    /// Not stored: the tenant already has `max` experiments.
    Full {
        /// The limit the call named.
        max: u64,
    },
}

impl PgLedgerStore {
    /// The experiment store sharing this store's pool (and schema).
    #[must_use]
    pub fn experiment_store(&self) -> PgExperimentStore {
        PgExperimentStore {
            db: Arc::clone(&self.db),
        }
    }
}

/// The tenant an experiment id belongs to, and the id.
fn tenant_of(id: &str) -> &str {
    id.rfind('/').map_or("", |i| &id[..i])
}

fn storage(e: PgError) -> BayesError {
    BayesError::Storage {
        retryable: e.is_retryable(),
        message: e.to_string(),
    }
}

fn encode(state: &ExperimentState) -> Result<String, BayesError> {
    serde_json::to_string(state).map_err(|e| BayesError::Storage {
        message: format!("experiment state not encodable: {e}"),
        retryable: false,
    })
}

fn decode(id: &str, text: &str) -> Result<ExperimentState, PgError> {
    serde_json::from_str(text)
        .map_err(|e| PgError::corrupt(format!("service_experiments {id:?}: state: {e}")))
}

fn version_of(v: i64) -> Result<u64, PgError> {
    u64::try_from(v).map_err(|_| PgError::corrupt("service_experiments: negative version"))
}

fn not_found(id: &str) -> BayesError {
    BayesError::ExperimentNotFound { id: id.to_owned() }
}

impl PgExperimentStore {
    /// Stores a new experiment at version 1 with `spec` (the caller's description of its
    /// rule, guardrails and split, kept as given), unless its tenant (see the type's docs)
    /// already has `per_tenant_max` experiments. The count and the insert run under a
    /// per-tenant transaction lock, so two processes creating at once never pass the limit.
    ///
    /// # Errors
    /// [`BayesError::ExperimentExists`] if the id is taken; [`BayesError::Storage`].
    pub async fn create_within(
        &self,
        state: ExperimentState,
        spec: Option<&str>,
        per_tenant_max: u64,
    ) -> Result<ExperimentAdmission, BayesError> {
        let text = encode(&state)?;
        let id = state.id();
        let tenant = tenant_of(id);
        let max = i64::try_from(per_tenant_max).unwrap_or(i64::MAX);
        let admitted = self
            .db
            .run("experiment_create", |conn| {
                let text = &text;
                async move {
                    let conn = TxConn::new(conn);
                    let c = conn.client();
                    c.batch_execute("BEGIN").await?;
                    c.execute(
                        "SELECT pg_advisory_xact_lock(hashtextextended(\
                             'credits_experiments:' || current_schema() || ':' || $1, 0))",
                        &[&tenant],
                    )
                    .await?;
                    let n: i64 = c
                        .query_one(
                            "SELECT count(*) FROM service_experiments WHERE tenant = $1",
                            &[&tenant],
                        )
                        .await?
                        .get(0);
                    if n >= max {
                        conn.rollback().await;
                        return Ok(Ok(ExperimentAdmission::Full {
                            max: per_tenant_max,
                        }));
                    }
                    let inserted = c
                        .execute(
                            "INSERT INTO service_experiments (tenant, id, state, spec, version) \
                             VALUES ($1, $2, $3, $4, 1) ON CONFLICT DO NOTHING",
                            &[&tenant, &id, text, &spec],
                        )
                        .await?;
                    if inserted == 0 {
                        conn.rollback().await;
                        return Ok(Err(BayesError::ExperimentExists { id: id.to_owned() }));
                    }
                    c.batch_execute("COMMIT").await?;
                    conn.finish();
                    Ok(Ok(ExperimentAdmission::Created { version: 1 }))
                }
            })
            .await
            .map_err(storage)??;
        Ok(admitted)
    }

    /// The spec stored with the experiment `id` (`None` when it was created without one).
    ///
    /// # Errors
    /// [`BayesError::ExperimentNotFound`]; [`BayesError::Storage`].
    pub async fn spec(&self, id: &str) -> Result<Option<String>, BayesError> {
        let tenant = tenant_of(id);
        let row = self
            .db
            .run("experiment_spec", |conn| async move {
                Ok(conn
                    .query_opt(
                        "SELECT spec FROM service_experiments WHERE tenant = $1 AND id = $2",
                        &[&tenant, &id],
                    )
                    .await?)
            })
            .await
            .map_err(storage)?;
        match row {
            Some(row) => Ok(row.get(0)),
            None => Err(not_found(id)),
        }
    }

    /// How many experiments `tenant` has.
    ///
    /// # Errors
    /// [`BayesError::Storage`].
    pub async fn count(&self, tenant: &str) -> Result<u64, BayesError> {
        let n: i64 = self
            .db
            .run("experiment_count", |conn| async move {
                Ok(conn
                    .query_one(
                        "SELECT count(*) FROM service_experiments WHERE tenant = $1",
                        &[&tenant],
                    )
                    .await?
                    .get(0))
            })
            .await
            .map_err(storage)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// One transaction: locks the experiment's row; with a `key`, inserts it and its
    /// fingerprint into `service_experiment_result_keys` (`ON CONFLICT DO NOTHING`) and, if
    /// it was there, reads the stored fingerprint and rolls back, returning `None` when it is
    /// the same and [`BayesError::IdempotencyConflict`] when not; otherwise adds the counts
    /// and returns the new version.
    async fn merge_under(
        &self,
        delta: &ExperimentState,
        key: Option<(&str, [u8; 16])>,
    ) -> Result<Option<u64>, BayesError> {
        let id = delta.id();
        let tenant = tenant_of(id);
        self.db
            .run("experiment_merge", |conn| async move {
                let conn = TxConn::new(conn);
                let c = conn.client();
                c.batch_execute("BEGIN").await?;
                let row = c
                    .query_opt(
                        "SELECT state, version FROM service_experiments \
                         WHERE tenant = $1 AND id = $2 FOR UPDATE",
                        &[&tenant, &id],
                    )
                    .await?;
                let Some(row) = row else {
                    conn.rollback().await;
                    return Ok(Err(not_found(id)));
                };
                if let Some((key, fingerprint)) = key {
                    let fingerprint = fingerprint.as_slice();
                    let fresh = c
                        .query_opt(
                            "INSERT INTO service_experiment_result_keys \
                             (tenant, id, key, fingerprint) VALUES ($1, $2, $3, $4) \
                             ON CONFLICT DO NOTHING RETURNING 1",
                            &[&tenant, &id, &key, &fingerprint],
                        )
                        .await?;
                    if fresh.is_none() {
                        // Seen before: under the row lock the key's row cannot change.
                        let stored: Vec<u8> = c
                            .query_one(
                                "SELECT fingerprint FROM service_experiment_result_keys \
                                 WHERE tenant = $1 AND id = $2 AND key = $3",
                                &[&tenant, &id, &key],
                            )
                            .await?
                            .get(0);
                        conn.rollback().await;
                        return Ok(if stored == fingerprint {
                            Ok(None)
                        } else {
                            Err(BayesError::IdempotencyConflict {
                                id: id.to_owned(),
                                key: key.to_owned(),
                            })
                        });
                    }
                }
                let mut stored = decode(id, row.get(0))?;
                if let Err(e) = stored.merge(delta) {
                    conn.rollback().await;
                    return Ok(Err(e));
                }
                let text = match encode(&stored) {
                    Ok(t) => t,
                    Err(e) => {
                        conn.rollback().await;
                        return Ok(Err(e));
                    }
                };
                let version: i64 = c
                    .query_one(
                        "UPDATE service_experiments SET state = $3, version = version + 1 \
                         WHERE tenant = $1 AND id = $2 RETURNING version",
                        &[&tenant, &id, &text],
                    )
                    .await?
                    .get(0);
                c.batch_execute("COMMIT").await?;
                conn.finish();
                Ok(Ok(Some(version_of(version)?)))
            })
            .await
            .map_err(storage)?
    }
}

#[async_trait]
impl ExperimentStore for PgExperimentStore {
    async fn create(&self, state: ExperimentState) -> Result<u64, BayesError> {
        match self.create_within(state, None, u64::MAX).await? {
            ExperimentAdmission::Created { version } => Ok(version),
            // No tenant holds u64::MAX rows.
            ExperimentAdmission::Full { max } => Err(BayesError::Storage {
                message: format!("more than {max} experiments"),
                retryable: false,
            }),
        }
    }

    async fn load(&self, id: &str) -> Result<(ExperimentState, u64), BayesError> {
        let tenant = tenant_of(id);
        let found = self
            .db
            .run("experiment_load", |conn| async move {
                let row = conn
                    .query_opt(
                        "SELECT state, version FROM service_experiments \
                         WHERE tenant = $1 AND id = $2",
                        &[&tenant, &id],
                    )
                    .await?;
                row.map(|row| Ok((decode(id, row.get(0))?, version_of(row.get(1))?)))
                    .transpose()
            })
            .await
            .map_err(storage)?;
        found.ok_or_else(|| not_found(id))
    }

    async fn save(
        &self,
        state: &ExperimentState,
        expected_version: u64,
    ) -> Result<u64, BayesError> {
        let text = encode(state)?;
        let id = state.id();
        let tenant = tenant_of(id);
        let Ok(expected) = i64::try_from(expected_version) else {
            // No stored version is that large.
            let (_, found) = self.load(id).await?;
            return Err(BayesError::VersionConflict {
                id: id.to_owned(),
                expected: expected_version,
                found,
            });
        };
        self.db
            .run("experiment_save", |conn| {
                let text = &text;
                async move {
                    let saved = conn
                        .query_opt(
                            "UPDATE service_experiments SET state = $3, version = version + 1 \
                             WHERE tenant = $1 AND id = $2 AND version = $4 RETURNING version",
                            &[&tenant, &id, text, &expected],
                        )
                        .await?;
                    if let Some(row) = saved {
                        return Ok(Ok(version_of(row.get(0))?));
                    }
                    let now = conn
                        .query_opt(
                            "SELECT version FROM service_experiments WHERE tenant = $1 AND id = $2",
                            &[&tenant, &id],
                        )
                        .await?;
                    Ok(Err(match now {
                        None => not_found(id),
                        Some(row) => BayesError::VersionConflict {
                            id: id.to_owned(),
                            expected: expected_version,
                            found: version_of(row.get(0))?,
                        },
                    }))
                }
            })
            .await
            .map_err(storage)?
    }

    async fn merge(&self, delta: &ExperimentState) -> Result<u64, BayesError> {
        match self.merge_under(delta, None).await? {
            Some(version) => Ok(version),
            // Without a key every merge applies.
            None => Err(BayesError::Storage {
                message: "merge without a key not applied".to_owned(),
                retryable: false,
            }),
        }
    }

    async fn merge_once(
        &self,
        delta: &ExperimentState,
        key: &str,
        fingerprint: [u8; 16],
    ) -> Result<bool, BayesError> {
        Ok(self
            .merge_under(delta, Some((key, fingerprint)))
            .await?
            .is_some())
    }

    async fn delete(&self, id: &str) -> Result<(), BayesError> {
        let tenant = tenant_of(id);
        let deleted = self
            .db
            .run("experiment_delete", |conn| async move {
                let conn = TxConn::new(conn);
                let c = conn.client();
                c.batch_execute("BEGIN").await?;
                let deleted = c
                    .execute(
                        "DELETE FROM service_experiments WHERE tenant = $1 AND id = $2",
                        &[&tenant, &id],
                    )
                    .await?;
                if deleted == 0 {
                    conn.rollback().await;
                    return Ok(0);
                }
                c.execute(
                    "DELETE FROM service_experiment_result_keys WHERE tenant = $1 AND id = $2",
                    &[&tenant, &id],
                )
                .await?;
                c.batch_execute("COMMIT").await?;
                conn.finish();
                Ok(deleted)
            })
            .await
            .map_err(storage)?;
        if deleted == 0 {
            return Err(not_found(id));
        }
        Ok(())
    }
}
