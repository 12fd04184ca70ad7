//! The experiment registry: every tenant's experiments (their counts in an
//! [`ExperimentStore`], their rule, guardrails and split here), at most a configured number
//! per tenant (`CREDITS_EXPERIMENTS_PER_TENANT_MAX`), so one tenant cannot crowd out the
//! others; and the bounded set of experiments whose figures are published as metrics.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::StatusCode;
use bayes_ab::{
    DecisionRule, ExperimentState, ExperimentStore, Guardrails, InMemoryExperimentStore,
    TrafficSplit, UnitOutcome,
};
use metered_clock::Timestamp;
use parking_lot::RwLock;

use crate::error::ApiError;

/// Most experiments whose figures are published on `/metrics` (labelled by experiment):
/// a label set tenants choose must stay bounded. Later ones are evaluated as always, and
/// counted in `ab_test_gauges_suppressed_total` instead.
pub(crate) const PUBLISHED_MAX: usize = 100;

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

/// Experiments of every tenant, keyed `tenant/id`.
pub(crate) struct Experiments {
    store: Arc<dyn ExperimentStore>,
    specs: RwLock<HashMap<String, Arc<Spec>>>,
    /// Experiments per tenant (what the quota counts).
    per_tenant: RwLock<HashMap<String, usize>>,
    per_tenant_max: usize,
    /// The experiments published on `/metrics` (at most [`PUBLISHED_MAX`]).
    published: parking_lot::Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for Experiments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Experiments")
            .field("count", &self.specs.read().len())
            .finish_non_exhaustive()
    }
}

impl Experiments {
    /// An empty registry over an in-memory store, at most `per_tenant_max` experiments per
    /// tenant.
    pub(crate) fn in_memory(per_tenant_max: usize) -> Self {
        Experiments {
            store: Arc::new(InMemoryExperimentStore::new()),
            specs: RwLock::new(HashMap::new()),
            per_tenant: RwLock::new(HashMap::new()),
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
        if self.specs.write().remove(key).is_none() {
            return Err(ApiError::from(bayes_ab::BayesError::ExperimentNotFound {
                id: key.to_owned(),
            }));
        }
        if let Some(n) = self.per_tenant.write().get_mut(tenant) {
            *n = n.saturating_sub(1);
        }
        self.store.delete(key).await?;
        Ok(())
    }

    /// The spec of the experiment `key`.
    ///
    /// # Errors
    /// 404 `experiment_not_found` (bayes-ab's own word for it).
    pub(crate) fn spec(&self, key: &str) -> Result<Arc<Spec>, ApiError> {
        self.specs.read().get(key).cloned().ok_or_else(|| {
            ApiError::from(bayes_ab::BayesError::ExperimentNotFound { id: key.to_owned() })
        })
    }

    /// Starts the experiment `key` of `tenant` at `now`.
    ///
    /// # Errors
    /// 507 `too_many_experiments` when the tenant has its quota of experiments (other
    /// tenants are not affected); the store's errors (a duplicate id among them).
    pub(crate) async fn create(
        &self,
        tenant: &str,
        key: String,
        spec: Spec,
        now: Timestamp,
    ) -> Result<(), ApiError> {
        {
            // Take the place first (released below if the store refuses).
            let mut counts = self.per_tenant.write();
            let n = counts.entry(tenant.to_owned()).or_insert(0);
            if *n >= self.per_tenant_max {
                return Err(ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "too_many_experiments",
                    format!(
                        "a tenant keeps at most {} experiments; delete one first",
                        self.per_tenant_max
                    ),
                ));
            }
            *n += 1;
        }
        let created = match ExperimentState::new(key.clone(), spec.split.clone(), now) {
            Ok(experiment) => self.store.create(experiment).await.map_err(ApiError::from),
            Err(e) => Err(ApiError::from(e)),
        };
        if let Err(e) = created {
            if let Some(n) = self.per_tenant.write().get_mut(tenant) {
                *n = n.saturating_sub(1);
            }
            return Err(e);
        }
        self.specs.write().insert(key, Arc::new(spec));
        Ok(())
    }

    /// Adds one unit's outcome to `arm` of the experiment `key` (an atomic merge in the
    /// store).
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
    ) -> Result<(), ApiError> {
        let mut delta = ExperimentState::new(key, spec.split.clone(), now)?;
        delta.record(arm, outcome)?;
        self.store.merge(&delta).await?;
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
