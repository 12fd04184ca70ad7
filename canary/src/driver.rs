//! An async driver (feature `tokio`): runs a rollout's ticks on its schedule against a
//! metrics source, applies each directive through an actuator, and writes the trail.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use audit_chain::AuditTrail;
use metered_clock::{Clock, Timestamp};
use tokio::sync::watch;

use crate::command::{Actor, COMMAND_TEXT_LEN_MAX};
use crate::directive::{Action, Directive};
use crate::error::{CanaryError, Result};
use crate::health::Observations;
use crate::phase::PhaseKind;
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

/// A requested fast rollback: who asked, and why.
type RollbackRequest = Option<(Actor, String)>;

/// Rolls a driven rollout back at once, without waiting for the analysis: the
/// [`Driver`] drops a metrics query in flight (or its sleep until the next check), records
/// the rollback, hands [`Action::RollBack`] to the actuator and completes it. Get one with
/// [`Driver::rollback_handle`]; clones share the request.
#[derive(Clone, Debug)]
pub struct RollbackHandle {
    tx: Arc<watch::Sender<RollbackRequest>>,
}

impl RollbackHandle {
    /// Asks the driver to roll back now (the first request wins; later ones are ignored).
    /// A rollout that is pending or promoting is aborted instead (its traffic goes back to
    /// stable all the same); one that is over is left alone.
    ///
    /// # Errors
    /// [`CanaryError::InvalidCommand`] for an operator name or note longer than
    /// [`COMMAND_TEXT_LEN_MAX`].
    pub fn roll_back(&self, actor: Actor, note: impl Into<String>) -> Result<()> {
        let note = note.into();
        let name_len = match &actor {
            Actor::System => 0,
            Actor::Operator(n) => n.len(),
        };
        if name_len > COMMAND_TEXT_LEN_MAX || note.len() > COMMAND_TEXT_LEN_MAX {
            return Err(CanaryError::InvalidCommand {
                reason: format!(
                    "operator names and notes are limited to {COMMAND_TEXT_LEN_MAX} bytes"
                ),
            });
        }
        self.tx.send_if_modified(|req| {
            if req.is_some() {
                return false;
            }
            *req = Some((actor, note));
            true
        });
        Ok(())
    }

    /// Whether a rollback was requested.
    #[must_use]
    pub fn is_requested(&self) -> bool {
        self.tx.borrow().is_some()
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
    rollback_tx: Arc<watch::Sender<RollbackRequest>>,
    rollback_rx: watch::Receiver<RollbackRequest>,
}

impl<S: MetricsSource, A: Actuator> Driver<S, A> {
    /// A driver of `rollout` (started or not: a pending rollout is only waited on).
    pub fn new(rollout: Rollout, source: S, actuator: A, clock: Arc<dyn Clock>) -> Self {
        let (tx, rx) = watch::channel(None);
        Driver {
            rollout,
            source,
            actuator,
            clock,
            trail: None,
            unwritten: Vec::new(),
            rollback_tx: Arc::new(tx),
            rollback_rx: rx,
        }
    }

    /// A handle that rolls the rollout back at once, from another task (an operator's
    /// request, an alert), without waiting for the analysis in flight.
    #[must_use]
    pub fn rollback_handle(&self) -> RollbackHandle {
        RollbackHandle {
            tx: Arc::clone(&self.rollback_tx),
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
    /// A rollback requested through a [`RollbackHandle`] (before or during the metrics query)
    /// is carried out instead, and the query dropped.
    ///
    /// # Errors
    /// [`CanaryError::InvalidObservation`] from the source's data; the actuator's error; a
    /// trail error (the events are kept and written at the next step).
    pub async fn step(&mut self) -> Result<Directive> {
        if let Some(request) = self.rollback_requested() {
            return self.fast_rollback(request).await;
        }
        let now = self.clock.now();
        let directive = if self.rollout.check_due(now) {
            let since = self.rollout.step_started_at().unwrap_or(now);
            let mut rx = self.rollback_rx.clone();
            let observed = tokio::select! {
                biased;
                request = wait_for_request(&mut rx) => Err(request),
                observed = self.source.observe(&self.rollout, since, now) => Ok(observed),
            };
            match observed {
                Err(request) => return self.fast_rollback(request).await,
                Ok(Ok(obs)) => self.rollout.tick(now, &obs)?,
                Ok(Err(e)) => {
                    tracing::warn!(rollout = self.rollout.id(), error = %e, code = e.code(), "metrics source failed");
                    self.rollout.tick_source_error(now, e.to_string())
                }
            }
        } else {
            self.rollout.tick(now, &Observations::default())?
        };
        self.finish(directive).await
    }

    /// Applies a directive (unless it is a wait) and writes the trail: never raced, so an
    /// entry is never half-written.
    async fn finish(&mut self, directive: Directive) -> Result<Directive> {
        if directive.action != Action::Wait {
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

    fn rollback_requested(&self) -> RollbackRequest {
        if self.rollout.phase().kind().is_final() {
            return None;
        }
        self.rollback_rx.borrow().clone()
    }

    /// Rolls back now (or aborts a pending or promoting rollout), actuates it, and completes
    /// it: the analysis is not consulted.
    async fn fast_rollback(&mut self, (actor, note): (Actor, String)) -> Result<Directive> {
        let now = self.clock.now();
        let note = format!("fast rollback: {note}");
        tracing::warn!(rollout = self.rollout.id(), %actor, %note, "fast rollback requested");
        metrics::counter!("canary_fast_rollbacks_total").increment(1);
        let directive = match self.rollout.phase().kind() {
            PhaseKind::Progressing | PhaseKind::Paused => {
                self.rollout.rollback(now, actor, &note)?
            }
            PhaseKind::RollingBack => self.rollout.tick(now, &Observations::default())?,
            k if k.is_final() => return self.rollout.tick(now, &Observations::default()),
            _ => self.rollout.abort(now, actor, &note)?,
        };
        let directive = self.finish(directive).await?;
        if self.rollout.phase().kind() == PhaseKind::RollingBack {
            // The actuator has switched the traffic back: complete the rollback.
            let done = self
                .rollout
                .tick(self.clock.now(), &Observations::default())?;
            return self.finish(done).await;
        }
        Ok(directive)
    }

    /// Steps until the rollout is over, sleeping until each next check; returns the final
    /// rollout. A pending rollout is polled every check interval until started. A rollback
    /// requested through a [`RollbackHandle`] ends the sleep at once.
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
                None if d.phase == PhaseKind::Pending => self.rollout.plan().check_interval(),
                None => Duration::ZERO,
            };
            if !wait.is_zero() {
                let mut rx = self.rollback_rx.clone();
                tokio::select! {
                    biased;
                    _ = wait_for_request(&mut rx) => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// Completes once a rollback is requested (never, if the channel closed without one).
async fn wait_for_request(rx: &mut watch::Receiver<RollbackRequest>) -> (Actor, String) {
    match rx.wait_for(Option::is_some).await {
        Ok(request) => request.clone().unwrap_or((Actor::System, String::new())),
        Err(_) => std::future::pending().await,
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
