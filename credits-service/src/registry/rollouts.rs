//! The rollout registry: at most [`ROLLOUTS_MAX`] canary rollouts, each behind its own
//! async lock, and the audit trail their events go to (stream `canary/<id>`).
//!
//! A rollout created with a metrics provider (Prometheus) is judged by the service itself:
//! [`Rollouts::observe_due`], run periodically by the service, queries the provider for each
//! rollout whose check is due **without holding its lock** (a slow backend never blocks
//! status reads or operator commands), then ticks it under the lock and writes the trail.

use std::collections::HashMap;
use std::sync::Arc;

use audit_chain::AuditTrail;
use axum::http::StatusCode;
use canary::{
    CanaryError, Event, MetricsSource, Observations, PhaseKind, PrometheusProvider, ProviderSource,
    Rollout,
};
use metered_clock::{Clock, Timestamp};
use parking_lot::Mutex;

use crate::error::ApiError;

/// Most rollouts the service keeps.
pub(crate) const ROLLOUTS_MAX: usize = 1_000;

/// A rollout's metrics source when the service judges it on Prometheus.
pub(crate) type Source = ProviderSource<PrometheusProvider>;

/// One rollout with the events its trail has not taken yet.
pub(crate) struct Entry {
    /// The rollout.
    pub(crate) rollout: Rollout,
    /// Where its observations come from: `None` when they are pushed
    /// (`POST /v1/rollouts/{id}/observations`).
    pub(crate) source: Option<Arc<Source>>,
    /// Events not yet durable in the audit log (kept for the next attempt).
    unwritten: Vec<Event>,
}

/// The rollouts, each behind its own async lock so commands on one are serialised with
/// their audit writes.
pub(crate) struct Rollouts {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Entry>>>>,
    trail: Arc<dyn AuditTrail>,
}

impl std::fmt::Debug for Rollouts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rollouts")
            .field("count", &self.map.lock().len())
            .finish_non_exhaustive()
    }
}

impl Rollouts {
    /// An empty registry writing its trails to `trail`.
    pub(crate) fn new(trail: Arc<dyn AuditTrail>) -> Self {
        Rollouts {
            map: Mutex::new(HashMap::new()),
            trail,
        }
    }

    /// The rollout `id`.
    ///
    /// # Errors
    /// [`CanaryError::UnknownRollout`] (404).
    pub(crate) fn get(&self, id: &str) -> Result<Arc<tokio::sync::Mutex<Entry>>, ApiError> {
        self.map
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| CanaryError::UnknownRollout { id: id.to_owned() }.into())
    }

    /// Registers `rollout` under `id` and returns its cell (its trail not written yet:
    /// call [`write_trail`](Self::write_trail) under its lock).
    ///
    /// # Errors
    /// [`CanaryError::DuplicateRollout`] for a known id; 507 `too_many_rollouts` at
    /// [`ROLLOUTS_MAX`].
    pub(crate) fn insert(
        &self,
        id: String,
        rollout: Rollout,
        source: Option<Source>,
    ) -> Result<Arc<tokio::sync::Mutex<Entry>>, ApiError> {
        let mut map = self.map.lock();
        if map.contains_key(&id) {
            return Err(CanaryError::DuplicateRollout { id }.into());
        }
        if map.len() >= ROLLOUTS_MAX {
            return Err(ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "too_many_rollouts",
                format!("the service keeps at most {ROLLOUTS_MAX} rollouts"),
            ));
        }
        let cell = Arc::new(tokio::sync::Mutex::new(Entry {
            rollout,
            source: source.map(Arc::new),
            unwritten: Vec::new(),
        }));
        map.insert(id, Arc::clone(&cell));
        Ok(cell)
    }

    /// Moves new events to the audit log. A failed write keeps them for the next call and
    /// is reported in logs and `canary_trail_write_failures_total`; the rollout's decision
    /// stands either way (it already happened).
    pub(crate) async fn write_trail(&self, id: &str, entry: &mut Entry) {
        entry.unwritten.extend(entry.rollout.take_events());
        if let Err(error) =
            canary::trail::record_events(self.trail.as_ref(), id, &mut entry.unwritten).await
        {
            metrics::counter!("canary_trail_write_failures_total").increment(1);
            tracing::error!(rollout = id, %error, "rollout trail not written");
        }
        metrics::gauge!("canary_weight_percent", "rollout" => id.to_owned())
            .set(f64::from(entry.rollout.weight_percent()));
    }
}

/// What a due rollout is observed with: taken under its lock, used without it.
struct Due {
    id: String,
    cell: Arc<tokio::sync::Mutex<Entry>>,
    source: Arc<Source>,
    /// A copy of the rollout as it was when the check fell due.
    snapshot: Rollout,
    since: Timestamp,
    now: Timestamp,
}

impl Rollouts {
    /// One round of the provider-driven rollouts: completes promotions and rollbacks and
    /// ends timed-out pauses at once; for each rollout whose health check is due, queries
    /// its provider (concurrently, without holding any lock) over the window since its step
    /// began, then ticks it with the observations, or records the query's error as a
    /// metric-source error ([`Rollout::tick_source_error`]; at the policy's limit it rolls
    /// back). A rollout changed by an operator while its query ran (another step, phase or
    /// check time) drops the stale answer and is observed at its next check. Every decision
    /// goes to the rollout's audit trail.
    pub(crate) async fn observe_due(&self, clock: &Arc<dyn Clock>) {
        let cells: Vec<(String, Arc<tokio::sync::Mutex<Entry>>)> = self
            .map
            .lock()
            .iter()
            .map(|(id, cell)| (id.clone(), Arc::clone(cell)))
            .collect();
        let mut due = Vec::new();
        for (id, cell) in cells {
            let mut entry = cell.lock().await;
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
                    id: id.clone(),
                    cell: Arc::clone(&cell),
                    source,
                    snapshot: entry.rollout.clone(),
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
                self.write_trail(&id, &mut entry).await;
            }
        }
        let mut queries = tokio::task::JoinSet::new();
        for d in due {
            queries.spawn(async move {
                let observed = d.source.observe(&d.snapshot, d.since, d.now).await;
                (d, observed)
            });
        }
        while let Some(joined) = queries.join_next().await {
            let Ok((d, observed)) = joined else {
                tracing::error!("a rollout's metrics query panicked");
                continue;
            };
            let mut entry = d.cell.lock().await;
            let unchanged = entry.rollout.state().step == d.snapshot.state().step
                && entry.rollout.step_started_at() == d.snapshot.step_started_at()
                && entry.rollout.next_check_at() == d.snapshot.next_check_at()
                && entry.rollout.phase().kind() == d.snapshot.phase().kind();
            if !unchanged || !entry.rollout.check_due(d.now) {
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
            self.write_trail(&d.id, &mut entry).await;
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
