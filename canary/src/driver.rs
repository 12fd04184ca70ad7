//! An async driver (feature `tokio`): runs a rollout's ticks on its schedule against a
//! metrics source, applies each directive through an actuator, and writes the trail.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use audit_chain::AuditTrail;
use metered_clock::{Clock, Timestamp};

use crate::directive::Directive;
use crate::error::{CanaryError, Result};
use crate::health::Observations;
use crate::rollout::Rollout;
use crate::trail;

/// Where observations come from (Prometheus, a metrics pipeline, a test).
#[async_trait]
pub trait MetricsSource: Send + Sync {
    /// Canary and baseline traffic of `rollout` between `since` (the start of its current
    /// step) and `until` (now).
    ///
    /// # Errors
    /// Any error: the driver counts it as a metric-source error
    /// ([`Rollout::tick_source_error`]).
    async fn observe(
        &self,
        rollout: &Rollout,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Observations>;
}

/// What carries out directives (a service mesh, a load balancer, a feature flag).
#[async_trait]
pub trait Actuator: Send + Sync {
    /// Applies `directive` of `rollout` (set the weight, promote, roll back). Called for every
    /// directive except [`Action::Wait`](crate::Action::Wait).
    ///
    /// # Errors
    /// Any error stops the driver, which returns it; the rollout's state already reflects
    /// the directive, so apply it again (it is idempotent by design) before resuming.
    async fn apply(&self, rollout: &Rollout, directive: &Directive) -> Result<()>;
}

#[async_trait]
impl<T: MetricsSource + ?Sized> MetricsSource for Arc<T> {
    async fn observe(
        &self,
        rollout: &Rollout,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Observations> {
        (**self).observe(rollout, since, until).await
    }
}

#[async_trait]
impl<T: Actuator + ?Sized> Actuator for Arc<T> {
    async fn apply(&self, rollout: &Rollout, directive: &Directive) -> Result<()> {
        (**self).apply(rollout, directive).await
    }
}

/// Runs one rollout until it is over. Sans-IO stays in [`Rollout`]; the driver only reads the
/// clock, asks the source, sleeps with tokio, and writes the trail.
pub struct Driver<S, A> {
    rollout: Rollout,
    source: S,
    actuator: A,
    clock: Arc<dyn Clock>,
    trail: Option<Arc<dyn AuditTrail>>,
    unwritten: Vec<crate::Event>,
}

impl<S: MetricsSource, A: Actuator> Driver<S, A> {
    /// A driver of `rollout` (started or not: a pending rollout is only waited on).
    pub fn new(rollout: Rollout, source: S, actuator: A, clock: Arc<dyn Clock>) -> Self {
        Driver {
            rollout,
            source,
            actuator,
            clock,
            trail: None,
            unwritten: Vec::new(),
        }
    }

    /// Writes every event to `trail` after each step.
    #[must_use]
    pub fn with_trail(mut self, trail: Arc<dyn AuditTrail>) -> Self {
        self.trail = Some(trail);
        self
    }

    /// The rollout (for commands between steps: `driver.rollout_mut().pause(...)`).
    pub fn rollout_mut(&mut self) -> &mut Rollout {
        &mut self.rollout
    }

    /// The rollout.
    #[must_use]
    pub fn rollout(&self) -> &Rollout {
        &self.rollout
    }

    /// One tick at the clock's now: observe if a check is due, tick, actuate, write the trail.
    ///
    /// # Errors
    /// [`CanaryError::InvalidObservation`] from the source's data; the actuator's error; a
    /// trail error (the events are kept and written at the next step).
    pub async fn step(&mut self) -> Result<Directive> {
        let now = self.clock.now();
        let directive = if self.rollout.check_due(now) {
            let since = self.rollout.step_started_at().unwrap_or(now);
            match self.source.observe(&self.rollout, since, now).await {
                Ok(obs) => self.rollout.tick(now, &obs)?,
                Err(e) => {
                    tracing::warn!(rollout = self.rollout.id(), error = %e, "metrics source failed");
                    self.rollout.tick_source_error(now, e.to_string())
                }
            }
        } else {
            self.rollout.tick(now, &Observations::default())?
        };
        if directive.action != crate::Action::Wait {
            self.actuator.apply(&self.rollout, &directive).await?;
        }
        self.unwritten.extend(self.rollout.take_events());
        if let Some(t) = &self.trail {
            trail::record_events(t.as_ref(), self.rollout.id(), &mut self.unwritten).await?;
        } else {
            self.unwritten.clear();
        }
        Ok(directive)
    }

    /// Steps until the rollout is over, sleeping until each next check; returns the final
    /// rollout. A pending rollout is polled every check interval until started.
    ///
    /// # Errors
    /// As [`Driver::step`].
    // A driver (feature `tokio`): waiting out the rollout's schedule is its job.
    #[allow(clippy::disallowed_methods)]
    pub async fn run(mut self) -> Result<Rollout> {
        loop {
            let d = self.step().await?;
            if d.phase.is_final() {
                return Ok(self.rollout);
            }
            let now = self.clock.now();
            let wait = match d.next_check_at {
                Some(t) => t.saturating_duration_since(now),
                None if d.phase == crate::PhaseKind::Pending => {
                    self.rollout.plan().check_interval()
                }
                None => Duration::ZERO,
            };
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

impl<S, A> std::fmt::Debug for Driver<S, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("rollout", &self.rollout.id())
            .field("phase", &self.rollout.phase())
            .field("unwritten", &self.unwritten.len())
            .finish_non_exhaustive()
    }
}

/// Wraps a metrics error for the driver.
#[must_use]
pub fn source_error(message: impl Into<String>, retryable: bool) -> CanaryError {
    CanaryError::MetricsSource {
        message: message.into(),
        retryable,
    }
}
