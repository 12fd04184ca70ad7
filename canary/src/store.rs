//! Where rollouts live between calls and between processes: the [`RolloutStore`] trait, with
//! optimistic versions, and [`MemoryRolloutStore`]. A PostgreSQL implementation is
//! `credits_postgres::PgRolloutStore` (feature `rollouts`).
//!
//! A store keeps each rollout's [`RolloutState`] beside a description of how to rebuild its
//! plan and policy (`spec`, the caller's own text: the store never reads it), and takes the
//! trail entries of every change with the change itself, so a decision and its trail go
//! together.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use audit_chain::{AuditEntry, AuditTrail};

use crate::error::{CanaryError, Result};
use crate::state::RolloutState;

/// One stored rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRollout {
    /// The rollout's id (its trail is the stream [`trail::stream_name`](crate::trail::stream_name)).
    pub id: String,
    /// How to rebuild the rollout's plan and policy: the caller's own description (JSON, for
    /// example). Fixed at creation; stores keep it as given.
    pub spec: String,
    /// Where the rollout is.
    pub state: RolloutState,
    /// The version this copy was read at (1 after creation, one more after every save).
    pub version: u64,
}

impl StoredRollout {
    /// Checks that every entry of `trail` belongs to this rollout's stream: the check every
    /// store runs before it changes anything.
    ///
    /// # Errors
    /// [`CanaryError::InvalidCommand`] naming the first entry of another stream.
    pub fn check_trail(&self, trail: &[AuditEntry]) -> Result<()> {
        let stream = crate::trail::stream_name(&self.id);
        match trail.iter().position(|e| e.stream != stream) {
            None => Ok(()),
            Some(i) => Err(CanaryError::InvalidCommand {
                reason: format!(
                    "trail entry {i} is for stream {:?}, not {stream:?}",
                    trail[i].stream
                ),
            }),
        }
    }
}

/// What [`RolloutStore::create`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum RolloutAdmission {
    /// Stored, at this version (1).
    Created {
        /// The new rollout's version.
        version: u64,
    },
    /// Not stored: the store already holds `max` rollouts.
    Full {
        /// The limit the call named.
        max: usize,
    },
}

/// Where rollouts live. Writes are optimistic: [`save`](RolloutStore::save) names the version
/// it read and fails with [`CanaryError::VersionConflict`] if another writer got there
/// first, so of two processes deciding the same step only one decision is kept (the other
/// loads the new state and decides again, or drops its answer).
///
/// Every write takes the trail entries of the change ([`trail::to_audit_entry`](crate::trail::to_audit_entry)
/// of the events the change recorded): a store that can (PostgreSQL) commits them with the
/// change; [`MemoryRolloutStore`] writes them right after it and keeps those its trail
/// refused for its next write.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use audit_chain::*;
/// use canary::*;
/// use metered_clock::{ManualClock, Timestamp};
///
/// let now = Timestamp::from_unix_millis(1_700_000_000_000);
/// let sink = Arc::new(MemorySink::new());
/// let writer = AuditWriter::open(sink.clone(), WriterConfig::builder("example/audit").build()?, Arc::new(ManualClock::new(now)), None).await?;
/// let keyring = Keyring::new(HmacKey::new(1, [5u8; 32])?);
/// let store = MemoryRolloutStore::new(Arc::new(AuditLog::new(writer, keyring, MaskingPolicy::standard())));
///
/// let plan = Arc::new(Plan::progressive(Duration::from_secs(60), Duration::ZERO, 100)?);
/// let policy = Arc::new(HealthPolicy::builder().check(MetricCheck::error_rate_max(0.05)).build()?);
/// let mut rollout = Rollout::with_shared("api-v2", plan.clone(), policy.clone())?;
/// let _ = rollout.start(now, Actor::operator("ana"))?;
/// let trail: Vec<AuditEntry> = rollout.take_events().iter().map(|e| trail::to_audit_entry("api-v2", e)).collect();
/// let stored = StoredRollout { id: "api-v2".into(), spec: "{}".into(), state: rollout.state().clone(), version: 0 };
/// assert_eq!(store.create(&stored, &trail, 100).await?, RolloutAdmission::Created { version: 1 });
///
/// // Another process: load, rebuild, decide, save with the version loaded.
/// let loaded = store.load("api-v2").await?;
/// let mut again = Rollout::restore(loaded.id.as_str(), plan, policy, loaded.state.clone())?;
/// let _ = again.tick(now.saturating_add(Duration::from_secs(60)), &Observations::canary_only(ArmObservation::counts(1_000, 1)))?;
/// let trail: Vec<AuditEntry> = again.take_events().iter().map(|e| trail::to_audit_entry("api-v2", e)).collect();
/// let next = StoredRollout { state: again.state().clone(), ..loaded.clone() };
/// assert_eq!(store.save(&next, &trail).await?, 2);
/// // A decision from the same version is not kept twice.
/// assert!(matches!(store.save(&next, &trail).await, Err(CanaryError::VersionConflict { found: 2, .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[async_trait]
pub trait RolloutStore: Send + Sync {
    /// Stores a new rollout at version 1 (its `version` field is ignored) with the trail
    /// entries of its creation, unless `max` rollouts are stored already.
    ///
    /// # Errors
    /// [`CanaryError::DuplicateRollout`] if the id is taken; [`StoredRollout::check_trail`]'s
    /// error; [`CanaryError::Storage`].
    async fn create(
        &self,
        rollout: &StoredRollout,
        trail: &[AuditEntry],
        max: usize,
    ) -> Result<RolloutAdmission>;

    /// The rollout `id` at its latest version.
    ///
    /// # Errors
    /// [`CanaryError::UnknownRollout`]; [`CanaryError::Storage`].
    async fn load(&self, id: &str) -> Result<StoredRollout>;

    /// Replaces the rollout's state if its version is still `rollout.version`, with the trail
    /// entries of the change; returns the new version.
    ///
    /// # Errors
    /// [`CanaryError::UnknownRollout`]; [`CanaryError::VersionConflict`];
    /// [`StoredRollout::check_trail`]'s error; [`CanaryError::Storage`]. Nothing changes on
    /// error.
    async fn save(&self, rollout: &StoredRollout, trail: &[AuditEntry]) -> Result<u64>;

    /// The ids of every stored rollout, in ascending order.
    ///
    /// # Errors
    /// [`CanaryError::Storage`].
    async fn ids(&self) -> Result<Vec<String>>;
}

/// A [`RolloutStore`] in process memory. Trail entries go to the [`AuditTrail`] given at
/// construction right after each change, under the rollout's own lock (no lock is shared by
/// two rollouts across a write); entries the trail refuses stay queued with the rollout (in
/// order) and are tried again at its next write, counted in
/// `canary_trail_write_failures_total`.
pub struct MemoryRolloutStore {
    rollouts: std::sync::Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
    trail: Arc<dyn AuditTrail>,
}

/// One rollout and its trail entries not yet durable, oldest first.
struct Slot {
    rollout: StoredRollout,
    unwritten: Vec<AuditEntry>,
}

impl std::fmt::Debug for MemoryRolloutStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRolloutStore")
            .field("rollouts", &self.map().len())
            .finish_non_exhaustive()
    }
}

impl MemoryRolloutStore {
    /// An empty store writing trail entries to `trail`.
    #[must_use]
    pub fn new(trail: Arc<dyn AuditTrail>) -> Self {
        MemoryRolloutStore {
            rollouts: std::sync::Mutex::new(BTreeMap::new()),
            trail,
        }
    }

    /// Trail entries waiting for the trail to take them, over all rollouts.
    pub async fn unwritten(&self) -> usize {
        let slots: Vec<_> = self.map().values().cloned().collect();
        let mut n = 0;
        for slot in slots {
            n += slot.lock().await.unwritten.len();
        }
        n
    }

    /// The map (never held across an await; a panic while it was held left it whole).
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<tokio::sync::Mutex<Slot>>>> {
        self.rollouts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn slot(&self, id: &str) -> Result<Arc<tokio::sync::Mutex<Slot>>> {
        self.map()
            .get(id)
            .cloned()
            .ok_or_else(|| CanaryError::UnknownRollout { id: id.to_owned() })
    }

    async fn write(&self, slot: &mut Slot, trail: &[AuditEntry]) {
        slot.unwritten.extend_from_slice(trail);
        let mut written = 0;
        for entry in &slot.unwritten {
            if let Err(error) = self.trail.record(entry.clone()).await {
                metrics::counter!("canary_trail_write_failures_total").increment(1);
                tracing::error!(stream = %entry.stream, %error, "rollout trail not written (kept for the next write)");
                break;
            }
            written += 1;
        }
        slot.unwritten.drain(..written);
    }
}

#[async_trait]
impl RolloutStore for MemoryRolloutStore {
    async fn create(
        &self,
        rollout: &StoredRollout,
        trail: &[AuditEntry],
        max: usize,
    ) -> Result<RolloutAdmission> {
        rollout.check_trail(trail)?;
        let slot = Arc::new(tokio::sync::Mutex::new(Slot {
            rollout: StoredRollout {
                version: 1,
                ..rollout.clone()
            },
            unwritten: Vec::new(),
        }));
        // Locked before it is visible: no write of this rollout overtakes its creation's.
        let mut guard = slot.clone().lock_owned().await;
        {
            let mut map = self.map();
            if map.contains_key(&rollout.id) {
                return Err(CanaryError::DuplicateRollout {
                    id: rollout.id.clone(),
                });
            }
            if map.len() >= max {
                return Ok(RolloutAdmission::Full { max });
            }
            map.insert(rollout.id.clone(), slot);
        }
        self.write(&mut guard, trail).await;
        Ok(RolloutAdmission::Created { version: 1 })
    }

    async fn load(&self, id: &str) -> Result<StoredRollout> {
        let slot = self.slot(id)?;
        let guard = slot.lock().await;
        Ok(guard.rollout.clone())
    }

    async fn save(&self, rollout: &StoredRollout, trail: &[AuditEntry]) -> Result<u64> {
        rollout.check_trail(trail)?;
        let slot = self.slot(&rollout.id)?;
        let mut guard = slot.lock().await;
        let stored = &mut guard.rollout;
        if stored.version != rollout.version {
            return Err(CanaryError::VersionConflict {
                id: rollout.id.clone(),
                expected: rollout.version,
                found: stored.version,
            });
        }
        stored.state = rollout.state.clone();
        stored.version += 1;
        let version = stored.version;
        self.write(&mut guard, trail).await;
        Ok(version)
    }

    async fn ids(&self) -> Result<Vec<String>> {
        Ok(self.map().keys().cloned().collect())
    }
}
