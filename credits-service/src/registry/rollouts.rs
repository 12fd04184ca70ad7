//! The rollout registry: at most [`ROLLOUTS_MAX`] canary rollouts, each behind its own
//! async lock, and the audit trail their events go to (stream `canary/<id>`).

use std::collections::HashMap;
use std::sync::Arc;

use audit_chain::AuditTrail;
use axum::http::StatusCode;
use canary::{CanaryError, Event, Rollout};
use parking_lot::Mutex;

use crate::error::ApiError;

/// Most rollouts the service keeps.
pub(crate) const ROLLOUTS_MAX: usize = 1_000;

/// One rollout with the events its trail has not taken yet.
pub(crate) struct Entry {
    /// The rollout.
    pub(crate) rollout: Rollout,
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
