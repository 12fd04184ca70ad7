//! The experiment registry: every tenant's experiments (their counts in an
//! [`ExperimentStore`], their rule, guardrails and split here), at most
//! [`EXPERIMENTS_MAX`] of them.

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

/// Most experiments the service keeps (all tenants together).
pub(crate) const EXPERIMENTS_MAX: usize = 10_000;

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
}

impl std::fmt::Debug for Experiments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Experiments")
            .field("count", &self.specs.read().len())
            .finish_non_exhaustive()
    }
}

impl Experiments {
    /// An empty registry over an in-memory store.
    pub(crate) fn in_memory() -> Self {
        Experiments {
            store: Arc::new(InMemoryExperimentStore::new()),
            specs: RwLock::new(HashMap::new()),
        }
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

    /// Starts the experiment `key` at `now`.
    ///
    /// # Errors
    /// 507 `too_many_experiments` at [`EXPERIMENTS_MAX`]; the store's errors (a duplicate
    /// id among them).
    pub(crate) async fn create(
        &self,
        key: String,
        spec: Spec,
        now: Timestamp,
    ) -> Result<(), ApiError> {
        if self.specs.read().len() >= EXPERIMENTS_MAX {
            return Err(ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "too_many_experiments",
                format!("the service keeps at most {EXPERIMENTS_MAX} experiments"),
            ));
        }
        let experiment = ExperimentState::new(key.clone(), spec.split.clone(), now)?;
        self.store.create(experiment).await?;
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
