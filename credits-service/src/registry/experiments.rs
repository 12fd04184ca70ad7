//! The experiment registry: every tenant's experiments (their counts in an
//! [`ExperimentStore`], their rule, guardrails and split, [`Spec`], beside them), at most a
//! configured number per tenant (`CREDITS_EXPERIMENTS_PER_TENANT_MAX`), so one tenant cannot
//! crowd out the others; and the bounded set of experiments whose figures are published as
//! metrics.
//!
//! With a database the experiments live in PostgreSQL (`credits_postgres::PgExperimentStore`):
//! the spec is stored with the counts, the quota is counted in the database, so every
//! replica sees the same experiments and a restart loses none. Without one they live in
//! this process (`InMemoryExperimentStore`, the specs and counts in maps here).

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::StatusCode;
use std::time::Duration;

use bayes_ab::{
    DecisionRule, ErrorRateGuardrail, ExperimentState, ExperimentStore, Guardrails,
    InMemoryExperimentStore, LatencyGuardrail, StoppingMode, TrafficSplit, UnitOutcome,
};
use credits_postgres::{ExperimentAdmission, PgExperimentStore};
use metered_clock::Timestamp;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Most experiments whose figures are published on `/metrics` (labelled by experiment):
/// a label set tenants choose must stay bounded. Later ones are evaluated as always, and
/// counted in `ab_test_gauges_suppressed_total` instead.
pub(crate) const PUBLISHED_MAX: usize = 100;

/// How an experiment stops, as asked for.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum StoppingSpec {
    /// Sequential (always-valid) stopping.
    Sequential { alpha: f64, tuning_sample: f64 },
    /// Posterior probability and expected loss thresholds.
    Bayesian {
        prob_threshold: f64,
        loss_threshold: f64,
    },
}

/// What an experiment is built from, as asked for: stored with it (as JSON) so any
/// replica, or this one after a restart, builds the same [`Spec`] through the same
/// validation.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExperimentSpec {
    /// Champion and challenger weights in basis points (default 5000/5000).
    pub(crate) weights: Option<Vec<u32>>,
    /// When to stop (bayes-ab's default rule without it).
    pub(crate) stopping: Option<StoppingSpec>,
    /// Fewest trials per arm before any decision.
    pub(crate) min_trials_per_arm: Option<u64>,
    /// Longest the experiment runs.
    pub(crate) max_duration_ms: Option<u64>,
    /// Roll back when the challenger's error rate is above this with 95 % confidence.
    pub(crate) error_rate_max: Option<f64>,
    /// Roll back when the challenger's p95 latency is above this with 95 % confidence.
    pub(crate) latency_p95_max_ms: Option<u64>,
}

impl ExperimentSpec {
    /// The rule, guardrails and split; every setting is validated here.
    ///
    /// # Errors
    /// bayes-ab's errors for a setting out of its domain (400).
    pub(crate) fn build(&self) -> Result<Spec, ApiError> {
        let split = TrafficSplit::new(self.weights.clone().unwrap_or_else(|| vec![5_000, 5_000]))?;
        let mut rule = DecisionRule::builder();
        if let Some(s) = self.stopping {
            rule = rule.stopping(match s {
                StoppingSpec::Sequential {
                    alpha,
                    tuning_sample,
                } => StoppingMode::sequential(alpha, tuning_sample)?,
                StoppingSpec::Bayesian {
                    prob_threshold,
                    loss_threshold,
                } => StoppingMode::bayesian(prob_threshold, loss_threshold)?,
            });
        }
        if let Some(n) = self.min_trials_per_arm {
            rule = rule.min_trials_per_arm(n);
        }
        if let Some(ms) = self.max_duration_ms {
            rule = rule.max_duration(Duration::from_millis(ms));
        }
        let rule = rule.build()?;
        let guardrails = Guardrails {
            error_rate: self
                .error_rate_max
                .map(|max| ErrorRateGuardrail::absolute(max, 0.95))
                .transpose()?,
            latency: self
                .latency_p95_max_ms
                .map(|ms| LatencyGuardrail::absolute(0.95, Duration::from_millis(ms), 0.95))
                .transpose()?,
        };
        Ok(Spec {
            rule,
            guardrails,
            split,
        })
    }
}

/// The rule, guardrails and split of one experiment (the counts live in the store).
#[derive(Debug)]
pub(crate) struct Spec {
    /// When to stop and whom to pick.
    pub(crate) rule: DecisionRule,
    /// When to roll back regardless.
    pub(crate) guardrails: Guardrails,
    /// The arms' weights and sticky assignment.
    pub(crate) split: TrafficSplit,
}

/// Where the specs live and how the quota is counted.
enum Backing {
    /// In this process.
    Memory {
        specs: RwLock<HashMap<String, Arc<Spec>>>,
        /// Experiments per tenant (what the quota counts).
        per_tenant: RwLock<HashMap<String, usize>>,
    },
    /// In PostgreSQL, with the counts.
    Postgres(PgExperimentStore),
}

/// Experiments of every tenant, keyed `tenant/id`.
pub(crate) struct Experiments {
    store: Arc<dyn ExperimentStore>,
    backing: Backing,
    per_tenant_max: usize,
    /// The experiments published on `/metrics` (at most [`PUBLISHED_MAX`]).
    published: parking_lot::Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for Experiments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backing = match &self.backing {
            Backing::Memory { .. } => "memory",
            Backing::Postgres(_) => "postgres",
        };
        f.debug_struct("Experiments")
            .field("backing", &backing)
            .finish_non_exhaustive()
    }
}

fn not_found(key: &str) -> ApiError {
    ApiError::from(bayes_ab::BayesError::ExperimentNotFound { id: key.to_owned() })
}

fn too_many(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::INSUFFICIENT_STORAGE,
        "too_many_experiments",
        format!("a tenant keeps at most {max} experiments; delete one first"),
    )
}

fn bad_spec(key: &str, reason: impl std::fmt::Display) -> ApiError {
    ApiError::from(bayes_ab::BayesError::Storage {
        message: format!("experiment {key:?}: stored spec: {reason}"),
        retryable: false,
    })
}

impl Experiments {
    /// An empty registry over an in-memory store, at most `per_tenant_max` experiments per
    /// tenant.
    pub(crate) fn in_memory(per_tenant_max: usize) -> Self {
        Experiments {
            store: Arc::new(InMemoryExperimentStore::new()),
            backing: Backing::Memory {
                specs: RwLock::new(HashMap::new()),
                per_tenant: RwLock::new(HashMap::new()),
            },
            per_tenant_max,
            published: parking_lot::Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// A registry over PostgreSQL's store (shared with every replica on the database), at
    /// most `per_tenant_max` experiments per tenant, counted in the database.
    pub(crate) fn postgres(store: PgExperimentStore, per_tenant_max: usize) -> Self {
        Experiments {
            store: Arc::new(store.clone()),
            backing: Backing::Postgres(store),
            per_tenant_max,
            published: parking_lot::Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// Whether the figures of experiment `key` may be published as metrics: yes if they
    /// are already, or while fewer than [`PUBLISHED_MAX`] are.
    pub(crate) fn publishable(&self, key: &str) -> bool {
        let mut published = self.published.lock();
        if published.contains(key) {
            return true;
        }
        if published.len() < PUBLISHED_MAX {
            published.insert(key.to_owned());
            return true;
        }
        false
    }

    /// Deletes the experiment `key` of `tenant` (its counts too), freeing its place in the
    /// tenant's quota. Its published figures, if any, stay at their last values.
    ///
    /// # Errors
    /// 404 `experiment_not_found`.
    pub(crate) async fn delete(&self, tenant: &str, key: &str) -> Result<(), ApiError> {
        match &self.backing {
            Backing::Memory { specs, per_tenant } => {
                if specs.write().remove(key).is_none() {
                    return Err(not_found(key));
                }
                if let Some(n) = per_tenant.write().get_mut(tenant) {
                    *n = n.saturating_sub(1);
                }
                self.store.delete(key).await?;
            }
            Backing::Postgres(store) => store.delete(key).await?,
        }
        Ok(())
    }

    /// The spec of the experiment `key`.
    ///
    /// # Errors
    /// 404 `experiment_not_found` (bayes-ab's own word for it); the store's errors.
    pub(crate) async fn spec(&self, key: &str) -> Result<Arc<Spec>, ApiError> {
        match &self.backing {
            Backing::Memory { specs, .. } => {
                specs.read().get(key).cloned().ok_or_else(|| not_found(key))
            }
            Backing::Postgres(store) => {
                let text = store
                    .spec(key)
                    .await?
                    .ok_or_else(|| bad_spec(key, "none stored"))?;
                let spec: ExperimentSpec =
                    serde_json::from_str(&text).map_err(|e| bad_spec(key, e))?;
                Ok(Arc::new(spec.build()?))
            }
        }
    }

    /// Starts the experiment `key` of `tenant` at `now`, built from `description`; returns
    /// its spec.
    ///
    /// # Errors
    /// 400 for a setting out of its domain; 507 `too_many_experiments` when the tenant has
    /// its quota of experiments (other tenants are not affected); the store's errors (a
    /// duplicate id among them).
    pub(crate) async fn create(
        &self,
        tenant: &str,
        key: String,
        description: &ExperimentSpec,
        now: Timestamp,
    ) -> Result<Arc<Spec>, ApiError> {
        let spec = Arc::new(description.build()?);
        let experiment = ExperimentState::new(key.clone(), spec.split.clone(), now)?;
        match &self.backing {
            Backing::Memory { specs, per_tenant } => {
                {
                    // Take the place first (released below if the store refuses).
                    let mut counts = per_tenant.write();
                    let n = counts.entry(tenant.to_owned()).or_insert(0);
                    if *n >= self.per_tenant_max {
                        return Err(too_many(self.per_tenant_max));
                    }
                    *n += 1;
                }
                if let Err(e) = self.store.create(experiment).await {
                    if let Some(n) = per_tenant.write().get_mut(tenant) {
                        *n = n.saturating_sub(1);
                    }
                    return Err(e.into());
                }
                specs.write().insert(key, Arc::clone(&spec));
            }
            Backing::Postgres(store) => {
                let text = serde_json::to_string(description).map_err(|e| bad_spec(&key, e))?;
                let max = u64::try_from(self.per_tenant_max).unwrap_or(u64::MAX);
                match store.create_within(experiment, Some(&text), max).await? {
                    ExperimentAdmission::Created { .. } => {}
                    ExperimentAdmission::Full { .. } => {
                        return Err(too_many(self.per_tenant_max));
                    }
                }
            }
        }
        Ok(spec)
    }

    /// Adds one unit's outcome to `arm` of the experiment `key` (an atomic merge in the
    /// store). With an `idempotency_key` (the key and the request's fingerprint) the merge
    /// is the store's `merge_once`: counted at most once per (experiment, key), a repeat of
    /// the same request is a success that adds nothing, the key with another fingerprint is
    /// 409 `idempotency_conflict` and adds nothing.
    ///
    /// # Errors
    /// 400 for an unknown arm; the store's errors.
    pub(crate) async fn record(
        &self,
        key: String,
        spec: &Spec,
        arm: usize,
        outcome: UnitOutcome,
        now: Timestamp,
        idempotency_key: Option<(&str, [u8; 16])>,
    ) -> Result<(), ApiError> {
        let mut delta = ExperimentState::new(key, spec.split.clone(), now)?;
        delta.record(arm, outcome)?;
        match idempotency_key {
            Some((once, fingerprint)) => {
                // `false` (already applied) answers like the first time.
                self.store.merge_once(&delta, once, fingerprint).await?;
            }
            None => {
                self.store.merge(&delta).await?;
            }
        }
        Ok(())
    }

    /// The experiment `key` with its counts so far.
    ///
    /// # Errors
    /// The store's errors (an unknown experiment among them).
    pub(crate) async fn load(&self, key: &str) -> Result<ExperimentState, ApiError> {
        let (experiment, _version) = self.store.load(key).await?;
        Ok(experiment)
    }
}
