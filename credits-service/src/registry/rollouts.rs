//! The rollout registry: at most [`ROLLOUTS_MAX`] canary rollouts in a [`RolloutStore`]
//! (PostgreSQL's `PgRolloutStore` when the service has a database, shared by every replica;
//! `MemoryRolloutStore` otherwise), each with the spec it was created from (its plan,
//! policy and metrics source, [`RolloutSpec`]) and its audit trail (stream `canary/<id>`).
//!
//! Every change loads the rollout's latest state, decides, and saves with the version it
//! loaded ([`RolloutStore::save`]) together with the change's trail entries: of two replicas
//! deciding the same step, the second save finds a newer version and is not kept (a command
//! is then decided again on the new state; a provider's answer is dropped). Within one
//! process a per-rollout lock serialises the changes, so conflicts come only from other
//! replicas.
//!
//! A rollout created with a metrics provider (Prometheus) is judged by the service itself:
//! [`Rollouts::observe_due`], run periodically by the service on every replica, queries the
//! provider for each rollout whose check is due **without holding any lock** (a slow backend
//! never blocks status reads or operator commands), then ticks it and saves it if nobody
//! changed it meanwhile.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use audit_chain::AuditEntry;
use axum::http::StatusCode;
use canary::{
    ArmLabels, CanaryError, Direction, HealthPolicy, LimitAction, MannWhitneyJudge, MetricCheck,
    MetricQuery, MetricsSource, Observations, PhaseKind, Plan, PrometheusProvider, ProviderSource,
    Rollout, RolloutAdmission, RolloutStore, SampleMetric, Step, StoredRollout,
};
use metered_clock::{Clock, Timestamp};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Most rollouts the service keeps (across replicas: the store counts them).
pub(crate) const ROLLOUTS_MAX: usize = 1_000;

/// Most attempts of one command against rollouts other replicas keep changing.
const ATTEMPTS_MAX: usize = 4;

/// Longest per-attempt query timeout a rollout may set.
const PROVIDER_TIMEOUT_MAX_MS: u64 = 60_000;

/// A rollout's metrics source when the service judges it on Prometheus.
pub(crate) type Source = ProviderSource<PrometheusProvider>;

/// One step of a rollout's plan.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StepSpec {
    pub(crate) weight_percent: u8,
    #[serde(default)]
    pub(crate) min_duration_ms: u64,
    #[serde(default)]
    pub(crate) min_sample: u64,
    #[serde(default)]
    pub(crate) requires_approval: bool,
}

/// Where a provider-driven rollout's metrics come from: Prometheus, with PromQL templates in
/// which `{{arm}}` becomes the arm's label value and `{{window}}` the window since the step
/// began (e.g. `15s`).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProviderSpec {
    /// Prometheus's base URL, `http://host[:port][/prefix]`.
    pub(crate) prometheus_url: String,
    /// Time limit of one query attempt (default 5000 ms).
    pub(crate) timeout_ms: Option<u64>,
    /// The label value that selects the canary.
    pub(crate) canary: String,
    /// The label value that selects the stable version.
    pub(crate) baseline: String,
    /// The label value of a freshly started baseline, if any.
    pub(crate) fresh_baseline: Option<String>,
    /// An aggregate query: the arm's request count over the window.
    pub(crate) requests: String,
    /// An aggregate query: the arm's error count over the window.
    pub(crate) errors: String,
    /// A samples query (e.g. a latency quantile) compared between the arms by the
    /// Mann-Whitney, spread and sparse-data judges.
    pub(crate) latency: Option<LatencySpec>,
}

/// A samples query of a provider-driven rollout.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LatencySpec {
    /// A samples (range) query.
    pub(crate) query: String,
    /// Distance between points (default 1000 ms, at least 1000).
    pub(crate) step_ms: Option<u64>,
    /// A failure rolls back at once (default false).
    #[serde(default)]
    pub(crate) critical: bool,
    /// Judged and recorded, never acted on (default false).
    #[serde(default)]
    pub(crate) dry_run: bool,
}

/// What a rollout is built from: stored with it (as JSON) so any replica, or this one after
/// a restart, rebuilds the same plan, policy and metrics source.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RolloutSpec {
    /// Steps (default 5 → 10 → 25 → 50 → 100 %, 2 minutes and 200 requests each).
    pub(crate) steps: Option<Vec<StepSpec>>,
    /// How often health is checked (default 60 s).
    pub(crate) check_interval_ms: Option<u64>,
    /// Largest healthy canary error rate (default 0.05).
    pub(crate) error_rate_max: Option<f64>,
    /// Flag a traffic split that does not match the step's weight (default true).
    pub(crate) srm_check: Option<bool>,
    /// Consecutive metric-source errors that roll back (default 4).
    pub(crate) source_error_limit: Option<u32>,
    /// Judge the rollout on Prometheus instead of pushed observations.
    pub(crate) provider: Option<ProviderSpec>,
}

/// A rollout's plan, policy and metrics source, built from its spec.
#[derive(Debug)]
struct Built {
    /// The spec's JSON text it was built from.
    spec: String,
    plan: Arc<Plan>,
    policy: Arc<HealthPolicy>,
    source: Option<Arc<Source>>,
}

impl RolloutSpec {
    /// Builds the plan, policy and metrics source; every setting is validated here.
    fn build(&self, text: String, clock: &Arc<dyn Clock>) -> Result<Built, ApiError> {
        let interval = Duration::from_millis(self.check_interval_ms.unwrap_or(60_000));
        let plan = match &self.steps {
            None => Plan::progressive(interval, Duration::from_secs(120), 200)?,
            Some(steps) => Plan::new(
                steps
                    .iter()
                    .map(|s| {
                        let step = Step::new(
                            s.weight_percent,
                            Duration::from_millis(s.min_duration_ms),
                            s.min_sample,
                        );
                        if s.requires_approval {
                            step.with_approval()
                        } else {
                            step
                        }
                    })
                    .collect(),
                interval,
            )?,
        };
        let source = match &self.provider {
            Some(p) => Some(provider_source(p, clock)?),
            None => None,
        };
        let mut policy = HealthPolicy::builder().check(MetricCheck::error_rate_max(
            self.error_rate_max.unwrap_or(0.05),
        ));
        if self.srm_check == Some(false) {
            policy = policy.srm_p_value(None);
        }
        if let Some(n) = self.source_error_limit {
            policy = policy.source_error_limit(n, LimitAction::RollBack);
        }
        if source.as_ref().is_some_and(|(_, samples)| *samples) {
            policy = policy.mann_whitney(MannWhitneyJudge::default());
        }
        Ok(Built {
            spec: text,
            plan: Arc::new(plan),
            policy: Arc::new(policy.build()?),
            source: source.map(|(s, _)| Arc::new(s)),
        })
    }
}

/// The metrics source `spec` describes, and whether it brings samples for the judge.
fn provider_source(
    spec: &ProviderSpec,
    clock: &Arc<dyn Clock>,
) -> Result<(Source, bool), ApiError> {
    let timeout_ms = spec.timeout_ms.unwrap_or(5_000);
    if !(1..=PROVIDER_TIMEOUT_MAX_MS).contains(&timeout_ms) {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("provider.timeout_ms must be 1..={PROVIDER_TIMEOUT_MAX_MS}"),
        ));
    }
    let prometheus = PrometheusProvider::builder(spec.prometheus_url.as_str())
        .timeout(Duration::from_millis(timeout_ms))
        .clock(Arc::clone(clock))
        .build()?;
    let mut arms = ArmLabels::new(&spec.canary, &spec.baseline)?;
    if let Some(fresh) = &spec.fresh_baseline {
        arms = arms.with_fresh_baseline(fresh)?;
    }
    let mut source = ProviderSource::new(
        prometheus,
        arms,
        MetricQuery::aggregate("requests", &spec.requests)?,
        MetricQuery::aggregate("errors", &spec.errors)?,
    )?;
    let samples = spec.latency.is_some();
    if let Some(l) = &spec.latency {
        let step = Duration::from_millis(l.step_ms.unwrap_or(1_000));
        let mut metric = SampleMetric::new(MetricQuery::samples("latency", &l.query, step)?);
        metric.direction = Direction::Increase;
        metric.critical = l.critical;
        metric.dry_run = l.dry_run;
        source = source.with_samples(metric)?;
    }
    Ok((source, samples))
}

/// A rollout as loaded: what the handlers show.
pub(crate) struct Entry {
    /// The rollout at its latest stored state.
    pub(crate) rollout: Rollout,
    /// Where its observations come from: `None` when they are pushed
    /// (`POST /v1/rollouts/{id}/observations`).
    pub(crate) source: Option<Arc<Source>>,
    /// The stored version it was loaded at.
    version: u64,
    /// The stored spec.
    spec: String,
}

impl Entry {
    /// Its stored form after a change.
    fn stored(&self) -> StoredRollout {
        StoredRollout {
            id: self.rollout.id().to_owned(),
            spec: self.spec.clone(),
            state: self.rollout.state().clone(),
            version: self.version,
        }
    }
}

/// The trail entries of the events `rollout` recorded since they were last taken.
fn trail_entries(rollout: &mut Rollout) -> Vec<AuditEntry> {
    let id = rollout.id().to_owned();
    rollout
        .take_events()
        .iter()
        .map(|e| canary::trail::to_audit_entry(&id, e))
        .collect()
}

fn publish_weight(rollout: &Rollout) {
    metrics::gauge!("canary_weight_percent", "rollout" => rollout.id().to_owned())
        .set(f64::from(rollout.weight_percent()));
}

/// The rollouts, in a store shared by every replica.
pub(crate) struct Rollouts {
    store: Arc<dyn RolloutStore>,
    clock: Arc<dyn Clock>,
    /// Plans, policies and sources built from stored specs, by id (rebuilt when the stored
    /// spec differs: a rollout another replica created).
    built: Mutex<HashMap<String, Arc<Built>>>,
    /// This process's lock for each rollout known to exist (at most [`ROLLOUTS_MAX`]): its
    /// own changes are serialised.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Rollouts seen in a final phase (they never change again).
    finished: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Rollouts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rollouts")
            .field("built", &self.built.lock().len())
            .finish_non_exhaustive()
    }
}

impl Rollouts {
    /// A registry over `store`; provider-driven rollouts read time from `clock`.
    pub(crate) fn new(store: Arc<dyn RolloutStore>, clock: Arc<dyn Clock>) -> Self {
        Rollouts {
            store,
            clock,
            built: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            finished: Mutex::new(HashSet::new()),
        }
    }

    fn lock_of(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(
            self.locks
                .lock()
                .entry(id.to_owned())
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(()))),
        )
    }

    /// The plan, policy and source of a stored rollout (built once per spec).
    fn built(&self, stored: &StoredRollout) -> Result<Arc<Built>, ApiError> {
        if let Some(b) = self.built.lock().get(&stored.id)
            && b.spec == stored.spec
        {
            return Ok(Arc::clone(b));
        }
        let spec: RolloutSpec = serde_json::from_str(&stored.spec).map_err(|e| {
            ApiError::from(CanaryError::Storage {
                message: format!("rollout {:?}: stored spec: {e}", stored.id),
                retryable: false,
            })
        })?;
        let built = Arc::new(spec.build(stored.spec.clone(), &self.clock)?);
        self.built
            .lock()
            .insert(stored.id.clone(), Arc::clone(&built));
        Ok(built)
    }

    fn entry(&self, stored: StoredRollout) -> Result<Entry, ApiError> {
        let built = self.built(&stored)?;
        let rollout = Rollout::restore(
            stored.id.as_str(),
            Arc::clone(&built.plan),
            Arc::clone(&built.policy),
            stored.state,
        )?;
        if rollout.phase().kind().is_final() {
            self.finished.lock().insert(stored.id);
        }
        Ok(Entry {
            rollout,
            source: built.source.clone(),
            version: stored.version,
            spec: stored.spec,
        })
    }

    /// The rollout `id` at its latest state.
    ///
    /// # Errors
    /// [`CanaryError::UnknownRollout`] (404); the store's errors.
    pub(crate) async fn get(&self, id: &str) -> Result<Entry, ApiError> {
        let stored = self.store.load(id).await?;
        self.entry(stored)
    }

    /// Creates the rollout `id` from `spec`, started at `now` by `actor` when `start`, and
    /// writes its trail.
    ///
    /// # Errors
    /// The spec's validation errors (400); [`CanaryError::DuplicateRollout`] for a known id;
    /// 507 `too_many_rollouts` at [`ROLLOUTS_MAX`]; the store's errors.
    pub(crate) async fn create(
        &self,
        id: &str,
        spec: &RolloutSpec,
        start: Option<(Timestamp, canary::Actor)>,
    ) -> Result<Entry, ApiError> {
        let text = serde_json::to_string(spec).map_err(|e| {
            ApiError::from(CanaryError::Storage {
                message: format!("rollout spec not encodable: {e}"),
                retryable: false,
            })
        })?;
        let built = spec.build(text.clone(), &self.clock)?;
        let mut rollout =
            Rollout::with_shared(id, Arc::clone(&built.plan), Arc::clone(&built.policy))?;
        if let Some((now, actor)) = start {
            let _ = rollout.start(now, actor)?;
        }
        let trail = trail_entries(&mut rollout);
        let entry = Entry {
            source: built.source.clone(),
            rollout,
            version: 1,
            spec: text,
        };
        match self
            .store
            .create(&entry.stored(), &trail, ROLLOUTS_MAX)
            .await?
        {
            RolloutAdmission::Created { .. } => {}
            RolloutAdmission::Full { max } => {
                return Err(ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "too_many_rollouts",
                    format!("the service keeps at most {max} rollouts"),
                ));
            }
        }
        self.built.lock().insert(id.to_owned(), Arc::new(built));
        publish_weight(&entry.rollout);
        Ok(entry)
    }

    /// Applies `change` to the rollout `id` at its latest state and saves the result with
    /// its trail entries. When another replica changed the rollout meanwhile, `change` runs
    /// again on the new state (at most [`ATTEMPTS_MAX`] times in all).
    ///
    /// # Errors
    /// `change`'s error (nothing saved); [`CanaryError::UnknownRollout`] (404); the store's
    /// errors ([`CanaryError::VersionConflict`] after the last attempt).
    pub(crate) async fn update<T>(
        &self,
        id: &str,
        change: impl Fn(&mut Entry) -> Result<T, ApiError>,
    ) -> Result<(T, Entry), ApiError> {
        // Locks are kept only for rollouts that exist (never deleted): an unknown id gets
        // its 404 before it takes a place in the map.
        if !self.built.lock().contains_key(id) {
            drop(self.get(id).await?);
        }
        let lock = self.lock_of(id);
        let _held = lock.lock().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut entry = self.get(id).await?;
            let answer = change(&mut entry)?;
            let trail = trail_entries(&mut entry.rollout);
            match self.store.save(&entry.stored(), &trail).await {
                Ok(version) => {
                    entry.version = version;
                    publish_weight(&entry.rollout);
                    if entry.rollout.phase().kind().is_final() {
                        self.finished.lock().insert(id.to_owned());
                    }
                    return Ok((answer, entry));
                }
                Err(CanaryError::VersionConflict { .. }) if attempt < ATTEMPTS_MAX => {
                    tracing::info!(
                        rollout = id,
                        "rollout changed by another replica: deciding again"
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Saves `entry` (changed under this process's lock of it) if it is still at the version
    /// it was loaded at; false when another replica changed it first (the change is dropped).
    async fn save_if_unchanged(&self, entry: &mut Entry) -> bool {
        let id = entry.rollout.id().to_owned();
        let trail = trail_entries(&mut entry.rollout);
        match self.store.save(&entry.stored(), &trail).await {
            Ok(version) => {
                entry.version = version;
                publish_weight(&entry.rollout);
                true
            }
            Err(CanaryError::VersionConflict { .. }) => {
                tracing::info!(rollout = %id, "rollout changed by another replica: this replica's decision dropped");
                false
            }
            Err(error) => {
                metrics::counter!("canary_trail_write_failures_total").increment(1);
                tracing::error!(rollout = %id, %error, "rollout not saved");
                false
            }
        }
    }
}

/// What a due rollout is observed with: taken from its stored state, used without any lock.
struct Due {
    id: String,
    source: Arc<Source>,
    /// The rollout as it was when the check fell due.
    snapshot: Entry,
    since: Timestamp,
    now: Timestamp,
}

impl Rollouts {
    /// One round of the provider-driven rollouts: completes promotions and rollbacks and
    /// ends timed-out pauses at once; for each rollout whose health check is due, queries
    /// its provider (concurrently, without holding any lock) over the window since its step
    /// began, then ticks it with the observations, or records the query's error as a
    /// metric-source error ([`Rollout::tick_source_error`]; at the policy's limit it rolls
    /// back). A rollout changed meanwhile (by an operator, or by another replica that judged
    /// it first: its stored version moved) drops the stale answer and is observed at its next
    /// check, so each check is decided once. Every decision goes to the rollout's audit trail
    /// with the saved state.
    pub(crate) async fn observe_due(&self, clock: &Arc<dyn Clock>) {
        let ids = match self.store.ids().await {
            Ok(ids) => ids,
            Err(error) => {
                tracing::warn!(%error, "rollouts not listed");
                return;
            }
        };
        let mut due = Vec::new();
        for id in ids {
            if self.finished.lock().contains(&id) {
                continue;
            }
            // Pushed rollouts (known from their spec) are not the ticker's.
            if self
                .built
                .lock()
                .get(&id)
                .is_some_and(|b| b.source.is_none())
            {
                continue;
            }
            let lock = self.lock_of(&id);
            let _held = lock.lock().await;
            let mut entry = match self.get(&id).await {
                Ok(e) => e,
                Err(error) => {
                    tracing::warn!(rollout = %id, code = error.body.code, "rollout not loaded");
                    continue;
                }
            };
            let Some(source) = entry.source.clone() else {
                continue;
            };
            if entry.rollout.phase().kind().is_final() {
                continue;
            }
            let now = clock.now();
            if entry.rollout.check_due(now) {
                let since = entry.rollout.step_started_at().unwrap_or(now);
                due.push(Due {
                    id,
                    source,
                    snapshot: entry,
                    since,
                    now,
                });
            } else if entry.rollout.is_due(now) {
                // A promotion or rollback to complete, or a pause past its deadline: no
                // observations needed.
                match entry.rollout.tick(now, &Observations::default()) {
                    Ok(d) => log_decision(&id, &d),
                    Err(error) => tracing::error!(rollout = %id, %error, "rollout tick failed"),
                }
                self.save_if_unchanged(&mut entry).await;
            }
        }
        let mut queries = tokio::task::JoinSet::new();
        for d in due {
            queries.spawn(async move {
                let observed = d.source.observe(&d.snapshot.rollout, d.since, d.now).await;
                (d, observed)
            });
        }
        while let Some(joined) = queries.join_next().await {
            let Ok((d, observed)) = joined else {
                tracing::error!("a rollout's metrics query panicked");
                continue;
            };
            let lock = self.lock_of(&d.id);
            let _held = lock.lock().await;
            let mut entry = match self.get(&d.id).await {
                Ok(e) => e,
                Err(error) => {
                    tracing::warn!(rollout = %d.id, code = error.body.code, "rollout not loaded");
                    continue;
                }
            };
            if entry.version != d.snapshot.version || !entry.rollout.check_due(d.now) {
                tracing::info!(rollout = %d.id, "rollout changed while its metrics were read: answer dropped");
                continue;
            }
            let directive = match observed {
                Ok(obs) => match entry.rollout.tick(d.now, &obs) {
                    Ok(directive) => directive,
                    // Inconsistent data from the backend: counted like a failed query.
                    Err(e) => entry.rollout.tick_source_error(d.now, e.to_string()),
                },
                Err(e) => {
                    metrics::counter!("canary_provider_errors_total", "code" => e.code())
                        .increment(1);
                    tracing::warn!(rollout = %d.id, error = %e, code = e.code(), "metrics provider failed");
                    entry.rollout.tick_source_error(d.now, e.to_string())
                }
            };
            log_decision(&d.id, &directive);
            // A rollback or promotion needs no actuation here (the service does not route
            // traffic; operators read the weight): complete it at once.
            if matches!(
                entry.rollout.phase().kind(),
                PhaseKind::RollingBack | PhaseKind::Promoting
            ) {
                match entry.rollout.tick(d.now, &Observations::default()) {
                    Ok(done) => log_decision(&d.id, &done),
                    Err(error) => tracing::error!(rollout = %d.id, %error, "rollout tick failed"),
                }
            }
            self.save_if_unchanged(&mut entry).await;
        }
    }
}

fn log_decision(id: &str, d: &canary::Directive) {
    tracing::info!(
        rollout = id,
        action = ?d.action,
        phase = d.phase.as_str(),
        step = d.step,
        weight_percent = d.weight_percent,
        verdict = d.report.as_ref().map(|r| r.verdict.as_str()),
        "rollout observed"
    );
}
