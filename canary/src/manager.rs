//! Many rollouts keyed by id, ticked together, with the seed's batch operations.

use std::collections::BTreeMap;
use std::sync::Arc;

use metered_clock::Timestamp;

use crate::directive::{Action, Directive};
use crate::error::{CanaryError, Result};
use crate::event::Event;
use crate::health::{Observations, Verdict};
use crate::rollout::Rollout;

/// What a metrics source says about one rollout: its observations, or why it has none.
pub type Observed = std::result::Result<Observations, String>;

/// The result of a batch operation over all rollouts.
#[derive(Debug, Default)]
#[must_use]
pub struct BatchReport {
    /// Health checks judged (applied or not).
    pub checked: usize,
    /// Directives applied, by rollout id, in id order.
    pub directives: Vec<(Arc<str>, Directive)>,
    /// Rollouts whose observations were refused (nothing changed for them).
    pub errors: Vec<(Arc<str>, CanaryError)>,
}

impl BatchReport {
    /// Ids whose directive was `action`.
    pub fn with_action(&self, action: Action) -> impl Iterator<Item = &str> {
        self.directives
            .iter()
            .filter(move |(_, d)| d.action == action)
            .map(|(id, _)| &**id)
    }
}

/// Which checks a batch applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    All,
    /// Everything except failing checks and metric-source errors.
    Promote,
    /// Only failing checks and metric-source errors (and completing rollbacks).
    Rollback,
}

/// Holds many concurrent rollouts keyed by id.
///
/// [`tick_all`](RolloutManager::tick_all) ticks every rollout that is due.
/// [`auto_promote_canary`](RolloutManager::auto_promote_canary) and
/// [`auto_rollback_unhealthy_canaries`](RolloutManager::auto_rollback_unhealthy_canaries) split
/// that work the way the original cron jobs did: the first applies every due check that did
/// not fail (holding, pausing, advancing, promoting, completing promotions, pauses timing out
/// into a resume or an advance), the second every due check that failed (and metric-source
/// errors, completing rollbacks, pauses timing out into a rollback). Running both
/// on the same schedule does what `tick_all` does; a check is applied at most once per
/// interval, by whichever runs first and accepts it.
///
/// ```
/// use std::time::Duration;
/// use canary::*;
/// use metered_clock::Timestamp;
///
/// let plan = Plan::progressive(Duration::from_secs(60), Duration::ZERO, 100)?;
/// let policy = HealthPolicy::builder().check(MetricCheck::error_rate_max(0.05)).build()?;
/// let mut manager = RolloutManager::new();
/// for id in ["good", "bad"] {
///     let mut r = Rollout::new(id, plan.clone(), policy.clone())?;
///     let _ = r.start(Timestamp::EPOCH, Actor::System)?;
///     manager.insert(r)?;
/// }
/// let now = Timestamp::from_unix_millis(60_000);
/// let observe = |r: &Rollout| -> Observed {
///     let errors = if r.id() == "bad" { 300 } else { 5 };
///     Ok(Observations::canary_only(ArmObservation::counts(1_000, errors)))
/// };
/// let report = manager.auto_promote_canary(now, observe);
/// assert_eq!(report.with_action(Action::SetWeight(10)).collect::<Vec<_>>(), ["good"]);
/// let report = manager.auto_rollback_unhealthy_canaries(now, observe);
/// assert_eq!(report.directives.len(), 1); // the first failure of "bad" (limit 3)
/// # Ok::<(), CanaryError>(())
/// ```
#[derive(Debug, Default)]
pub struct RolloutManager {
    rollouts: BTreeMap<Arc<str>, Rollout>,
}

impl RolloutManager {
    /// No rollouts.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a rollout.
    ///
    /// # Errors
    /// [`CanaryError::DuplicateRollout`] when its id is taken (nothing changes).
    pub fn insert(&mut self, rollout: Rollout) -> Result<()> {
        let id: Arc<str> = rollout.id().into();
        if self.rollouts.contains_key(&id) {
            return Err(CanaryError::DuplicateRollout { id: id.to_string() });
        }
        self.rollouts.insert(id, rollout);
        Ok(())
    }

    /// Removes and returns a rollout (for example once it is over and its events are taken).
    ///
    /// # Errors
    /// [`CanaryError::UnknownRollout`].
    pub fn remove(&mut self, id: &str) -> Result<Rollout> {
        self.rollouts.remove(id).ok_or_else(|| unknown(id))
    }

    /// A rollout by id.
    ///
    /// # Errors
    /// [`CanaryError::UnknownRollout`].
    pub fn get(&self, id: &str) -> Result<&Rollout> {
        self.rollouts.get(id).ok_or_else(|| unknown(id))
    }

    /// A rollout by id, for commands (`manager.get_mut("x")?.pause(...)`).
    ///
    /// # Errors
    /// [`CanaryError::UnknownRollout`].
    pub fn get_mut(&mut self, id: &str) -> Result<&mut Rollout> {
        self.rollouts.get_mut(id).ok_or_else(|| unknown(id))
    }

    /// Number of rollouts.
    #[must_use]
    pub fn len(&self) -> usize {
        self.rollouts.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rollouts.is_empty()
    }

    /// All rollouts, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Rollout> {
        self.rollouts.values()
    }

    /// Takes every rollout's pending events, in id order, for the trail.
    pub fn take_events(&mut self) -> Vec<(Arc<str>, Event)> {
        let mut out = Vec::new();
        for (id, r) in &mut self.rollouts {
            out.extend(r.take_events().into_iter().map(|e| (Arc::clone(id), e)));
        }
        out
    }

    /// Ticks every due rollout; `observe` is asked only for rollouts with a check due.
    pub fn tick_all(
        &mut self,
        now: Timestamp,
        observe: impl FnMut(&Rollout) -> Observed,
    ) -> BatchReport {
        self.batch(now, Scope::All, observe)
    }

    /// Applies every due check that did not fail, and completes promotions: healthy canaries
    /// advance (or promote) once their step's time is served; see the type's docs.
    pub fn auto_promote_canary(
        &mut self,
        now: Timestamp,
        observe: impl FnMut(&Rollout) -> Observed,
    ) -> BatchReport {
        self.batch(now, Scope::Promote, observe)
    }

    /// Applies every due check that failed, and metric-source errors, and completes
    /// rollbacks: unhealthy canaries roll back at their failure limit (critical ones at once).
    pub fn auto_rollback_unhealthy_canaries(
        &mut self,
        now: Timestamp,
        observe: impl FnMut(&Rollout) -> Observed,
    ) -> BatchReport {
        self.batch(now, Scope::Rollback, observe)
    }

    fn batch(
        &mut self,
        now: Timestamp,
        scope: Scope,
        mut observe: impl FnMut(&Rollout) -> Observed,
    ) -> BatchReport {
        let mut report = BatchReport::default();
        for (id, rollout) in &mut self.rollouts {
            if !rollout.is_due(now) {
                continue;
            }
            if !rollout.check_due(now) {
                // Completing a rollback, or a timed-out pause whose outcome is a rollback,
                // belongs to the rollback job; the rest (completing a promotion, other
                // time-outs) to the promote job.
                let rolls_back = match rollout.phase() {
                    crate::Phase::RollingBack => true,
                    crate::Phase::Paused { .. } => {
                        rollout.policy().pause_action() == crate::LimitAction::RollBack
                    }
                    _ => false,
                };
                let wanted = match scope {
                    Scope::All => true,
                    Scope::Promote => !rolls_back,
                    Scope::Rollback => rolls_back,
                };
                if wanted {
                    match rollout.tick(now, &Observations::default()) {
                        Ok(d) => report.directives.push((Arc::clone(id), d)),
                        Err(e) => report.errors.push((Arc::clone(id), e)),
                    }
                }
                continue;
            }
            match observe(rollout) {
                Err(message) => {
                    if scope != Scope::Promote {
                        let d = rollout.tick_source_error(now, message);
                        report.directives.push((Arc::clone(id), d));
                    }
                }
                Ok(obs) => {
                    let judged = rollout.policy().judge(rollout.current_step(), &obs);
                    let health = match judged {
                        Ok(h) => h,
                        Err(e) => {
                            report.errors.push((Arc::clone(id), e));
                            continue;
                        }
                    };
                    report.checked += 1;
                    let failed = matches!(health.verdict, Verdict::Unhealthy | Verdict::Critical);
                    let wanted = match scope {
                        Scope::All => true,
                        Scope::Promote => !failed,
                        Scope::Rollback => failed,
                    };
                    if wanted && let Some(d) = rollout.tick_with_report(now, health) {
                        report.directives.push((Arc::clone(id), d));
                    }
                }
            }
        }
        report
    }
}

fn unknown(id: &str) -> CanaryError {
    CanaryError::UnknownRollout { id: id.to_owned() }
}
