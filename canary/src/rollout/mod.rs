//! One rollout: the state machine. Its vocabulary lives in [`crate::phase`],
//! [`crate::command`], [`crate::event`], [`crate::state`] and [`crate::directive`]; the
//! health checks it runs in [`crate::health`]. This module holds the rollout itself, its
//! accessors and its trail; `tick` and the operator commands are in the submodules.

mod commands;
mod tick;

use std::collections::VecDeque;
use std::sync::Arc;

use metered_clock::Timestamp;

#[cfg(doc)]
use crate::Observations;
use crate::command::{Actor, RolloutCommand};
use crate::directive::{Action, Directive};
use crate::error::{CanaryError, Result};
use crate::event::Event;
use crate::health::{HealthPolicy, HealthReport};
use crate::phase::{PauseReason, Phase, PhaseKind};
use crate::plan::Plan;
use crate::state::{RolloutState, apply_event};

/// Longest rollout id accepted (it names the rollout's audit stream).
pub const ID_LEN_MAX: usize = 200;

/// Most events buffered between two [`Rollout::take_events`] calls; beyond it the oldest are
/// dropped (and counted in `canary_events_dropped_total`).
pub const EVENTS_PENDING_MAX: usize = 4096;

/// A progressive rollout driven by [`tick`](Rollout::tick) and operator commands. Sans-IO:
/// it never sleeps, reads no clock and does no I/O; time comes in as `now`, metrics as
/// [`Observations`], and the trail goes out as [`Event`]s ([`take_events`](Rollout::take_events)).
///
/// ```
/// use std::time::Duration;
/// use canary::*;
/// use metered_clock::Timestamp;
///
/// let plan = Plan::progressive(Duration::from_secs(60), Duration::from_secs(120), 200)?;
/// let policy = HealthPolicy::builder().check(MetricCheck::error_rate_max(0.05)).build()?;
/// let mut rollout = Rollout::new("api-v2", plan, policy)?;
/// let mut now = Timestamp::from_unix_millis(1_700_000_000_000);
/// assert_eq!(rollout.start(now, Actor::operator("ana"))?.action, Action::SetWeight(5));
/// loop {
///     now = now.saturating_add(Duration::from_secs(60));
///     let obs = Observations::canary_only(ArmObservation::counts(1_000, 5));
///     let d = rollout.tick(now, &obs)?;
///     if d.action == Action::Promote { break; }
/// }
/// assert_eq!(rollout.tick(now, &Observations::default())?.phase, PhaseKind::Succeeded);
/// # Ok::<(), CanaryError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Rollout {
    id: Arc<str>,
    plan: Arc<Plan>,
    policy: Arc<HealthPolicy>,
    state: RolloutState,
    events: VecDeque<Event>,
}

impl Rollout {
    /// A pending rollout.
    ///
    /// # Errors
    /// [`CanaryError::InvalidPlan`] for an empty id or one longer than [`ID_LEN_MAX`].
    pub fn new(id: impl Into<Arc<str>>, plan: Plan, policy: HealthPolicy) -> Result<Self> {
        Self::with_shared(id, Arc::new(plan), Arc::new(policy))
    }

    /// A pending rollout sharing its plan and policy with others (for managers of many).
    ///
    /// # Errors
    /// As [`Rollout::new`].
    pub fn with_shared(
        id: impl Into<Arc<str>>,
        plan: Arc<Plan>,
        policy: Arc<HealthPolicy>,
    ) -> Result<Self> {
        let id = id.into();
        if id.is_empty() || id.len() > ID_LEN_MAX || id.contains('\n') {
            return Err(CanaryError::InvalidPlan {
                reason: format!("rollout id must be 1..={ID_LEN_MAX} bytes without newlines"),
            });
        }
        Ok(Rollout {
            id,
            plan,
            policy,
            state: RolloutState::new(),
            events: VecDeque::new(),
        })
    }

    /// The rollout's id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The plan.
    #[must_use]
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The health policy.
    #[must_use]
    pub fn policy(&self) -> &HealthPolicy {
        &self.policy
    }

    /// The full state.
    #[must_use]
    pub fn state(&self) -> &RolloutState {
        &self.state
    }

    /// The phase.
    #[must_use]
    pub fn phase(&self) -> Phase {
        self.state.phase
    }

    /// When the current step began (the start of the window to observe).
    #[must_use]
    pub fn step_started_at(&self) -> Option<Timestamp> {
        self.state.step_started_at
    }

    /// When the next check is due.
    #[must_use]
    pub fn next_check_at(&self) -> Option<Timestamp> {
        self.state.next_check_at
    }

    /// Whether a tick at `now` would do anything (a check, a timeout or completing a
    /// promotion or rollback).
    #[must_use]
    pub fn is_due(&self, now: Timestamp) -> bool {
        match self.state.phase {
            Phase::Promoting | Phase::RollingBack => true,
            Phase::Paused {
                deadline: Some(d), ..
            } if now >= d => true,
            Phase::Progressing | Phase::Paused { .. } => {
                self.state.next_check_at.is_none_or(|t| now >= t)
            }
            _ => false,
        }
    }

    /// Whether a tick at `now` would run a health check (rather than wait, complete a
    /// promotion or rollback, or end a timed-out pause).
    #[must_use]
    pub fn check_due(&self, now: Timestamp) -> bool {
        match self.state.phase {
            Phase::Paused {
                deadline: Some(d), ..
            } if now >= d => false,
            Phase::Progressing | Phase::Paused { .. } => {
                self.state.next_check_at.is_none_or(|t| now >= t)
            }
            _ => false,
        }
    }

    /// The current step of the plan.
    #[must_use]
    pub fn current_step(&self) -> &crate::Step {
        &self.plan.steps()[self.state.step]
    }

    /// The canary's share of traffic now, in percent.
    #[must_use]
    pub fn weight_percent(&self) -> u8 {
        match self.state.phase {
            Phase::Pending | Phase::RollingBack | Phase::RolledBack | Phase::Aborted => 0,
            Phase::Promoting | Phase::Succeeded => 100,
            Phase::Progressing | Phase::Paused { .. } => {
                self.plan.steps()[self.state.step].weight_percent()
            }
        }
    }

    /// Takes the events recorded since the last call, oldest first: write them to the
    /// trail ([`crate::trail`]).
    pub fn take_events(&mut self) -> Vec<Event> {
        self.events.drain(..).collect()
    }

    /// Number of events recorded and not yet taken.
    #[must_use]
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    /// Sticky routing of request key `key` at the current weight (salted with the rollout
    /// id); see [`Router`](crate::Router).
    #[must_use]
    pub fn route(&self, key: &str) -> crate::Arm {
        crate::Router::new(&*self.id).route(key, self.weight_percent())
    }

    /// Moves to the next step, the approval gate before it, or promotion.
    fn advance(
        &mut self,
        now: Timestamp,
        actor: Actor,
        command: RolloutCommand,
        reason: String,
    ) -> Action {
        let next = self.state.step + 1;
        if next >= self.plan.last_index() {
            self.transition(
                now,
                actor,
                command,
                Phase::Promoting,
                self.plan.last_index(),
                reason,
            );
            return Action::Promote;
        }
        if self.plan.steps()[next].requires_approval() && actor == Actor::System {
            let to = Phase::Paused {
                reason: PauseReason::AwaitingApproval,
                since: now,
                deadline: None,
            };
            let step = self.state.step;
            self.transition(
                now,
                actor,
                command,
                to,
                step,
                format!("{reason}; step {next} needs approval"),
            );
            return Action::Pause(PauseReason::AwaitingApproval);
        }
        self.transition(now, actor, command, Phase::Progressing, next, reason);
        Action::SetWeight(self.weight_percent())
    }

    fn transition(
        &mut self,
        at: Timestamp,
        actor: Actor,
        command: RolloutCommand,
        to: Phase,
        step: usize,
        reason: String,
    ) {
        let weight_percent = match to.kind() {
            PhaseKind::Pending
            | PhaseKind::RollingBack
            | PhaseKind::RolledBack
            | PhaseKind::Aborted => 0,
            PhaseKind::Promoting | PhaseKind::Succeeded => 100,
            PhaseKind::Progressing | PhaseKind::Paused => self.plan.steps()[step].weight_percent(),
        };
        tracing::info!(rollout = %self.id, from = self.state.phase.kind().as_str(), to = to.kind().as_str(), step, weight_percent, %actor, %reason, "canary transition");
        metrics::counter!("canary_transitions_total", "to" => to.kind().as_str()).increment(1);
        self.record(Event::Transition {
            at,
            actor,
            command,
            from: self.state.phase.kind(),
            to,
            step,
            weight_percent,
            reason,
        });
    }

    fn record(&mut self, event: Event) {
        // Applying our own event to our own state cannot mismatch.
        let _ = apply_event(&self.plan, &mut self.state, &event, 0);
        if self.events.len() >= EVENTS_PENDING_MAX {
            self.events.pop_front();
            metrics::counter!("canary_events_dropped_total").increment(1);
        }
        self.events.push_back(event);
    }

    /// Applies an event from a trail (see [`Rollout::replay`]).
    ///
    /// # Errors
    /// [`CanaryError::TrailMismatch`] when the event does not fit the current state (a
    /// transition from another phase, a step outside the plan); nothing changes then.
    pub fn apply(&mut self, event: &Event) -> Result<()> {
        apply_event(&self.plan, &mut self.state, event, 0)
    }

    /// A rollout at a stored [`RolloutState`] (as [`state`](Rollout::state) returned it, for
    /// example from a `RolloutStore` (feature `tokio`)), with this plan and policy and no
    /// pending events.
    ///
    /// # Errors
    /// [`CanaryError::TrailMismatch`] when the state's step is outside the plan; the errors of
    /// [`Rollout::new`].
    pub fn restore(
        id: impl Into<Arc<str>>,
        plan: Arc<Plan>,
        policy: Arc<HealthPolicy>,
        state: RolloutState,
    ) -> Result<Self> {
        if state.step > plan.last_index() {
            return Err(CanaryError::TrailMismatch {
                index: 0,
                reason: format!(
                    "stored step {} outside a plan of {} steps",
                    state.step,
                    plan.steps().len()
                ),
            });
        }
        let mut rollout = Rollout::with_shared(id, plan, policy)?;
        rollout.state = state;
        Ok(rollout)
    }

    /// Rebuilds a rollout from its trail: a pending rollout with this plan and policy, every
    /// event applied in order. The result has the same [`RolloutState`] as the rollout that
    /// recorded the events, and no pending events.
    ///
    /// # Errors
    /// [`CanaryError::TrailMismatch`] naming the first event that does not fit, and the
    /// errors of [`Rollout::new`].
    pub fn replay<'a>(
        id: impl Into<Arc<str>>,
        plan: Plan,
        policy: HealthPolicy,
        events: impl IntoIterator<Item = &'a Event>,
    ) -> Result<Self> {
        let mut rollout = Rollout::new(id, plan, policy)?;
        for (index, event) in events.into_iter().enumerate() {
            apply_event(&rollout.plan, &mut rollout.state, event, index)?;
        }
        Ok(rollout)
    }

    fn directive(&self, action: Action, report: Option<HealthReport>) -> Directive {
        Directive {
            action,
            phase: self.state.phase.kind(),
            step: self.state.step,
            weight_percent: self.weight_percent(),
            next_check_at: match self.state.phase.kind() {
                PhaseKind::Promoting | PhaseKind::RollingBack => None,
                k if k.is_final() || k == PhaseKind::Pending => None,
                _ => match (self.state.phase, self.state.next_check_at) {
                    (
                        Phase::Paused {
                            deadline: Some(d), ..
                        },
                        Some(t),
                    ) => Some(t.min(d)),
                    (_, t) => t,
                },
            },
            report,
        }
    }
}
