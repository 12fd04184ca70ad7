//! One rollout: the state machine, the sans-IO `tick`, operator commands and the events
//! that make up its trail.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use metered_clock::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{CanaryError, Result};
use crate::health::{HealthPolicy, HealthReport, Observations, Outcome, Verdict};
use crate::plan::Plan;

/// Longest rollout id accepted (it names the rollout's audit stream).
pub const ID_LEN_MAX: usize = 200;

/// Longest operator name or note accepted by a command (longer metric-source messages are
/// truncated to it).
pub const TEXT_LEN_MAX: usize = 1024;

/// Most events buffered between two [`Rollout::take_events`] calls; beyond it the oldest are
/// dropped (and counted in `canary_events_dropped_total`).
pub const EVENTS_PENDING_MAX: usize = 4096;

/// Who caused a transition.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Actor {
    /// The rollout itself, from a health check or a timeout.
    System,
    /// A person or tool, by name.
    Operator(String),
}

impl Actor {
    /// An operator named `name`.
    #[must_use]
    pub fn operator(name: impl Into<String>) -> Self {
        Actor::Operator(name.into())
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::System => f.write_str("system"),
            Actor::Operator(name) => write!(f, "operator:{name}"),
        }
    }
}

/// Why a rollout is paused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PauseReason {
    /// An operator paused it; only an operator resumes it.
    Manual,
    /// Too many inconclusive checks in a row; a healthy check resumes it, and the policy's
    /// maximum pause ends it with the configured [`Outcome`].
    Inconclusive,
    /// The next step needs an approval ([`Rollout::promote`]).
    AwaitingApproval,
}

/// Where a rollout is.
///
/// ```text
/// pending ─start─▶ progressing(step) ⇄ paused(reason)
///                    │  │                 │  │
///                    │  └──▶ promoting ◀──┘  │ ──▶ succeeded
///                    └─────▶ rolling back ◀──┘ ──▶ rolled back
///   (any non-final phase) ─abort─▶ aborted
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Phase {
    /// Created, not started; the canary gets no traffic.
    Pending,
    /// At a step, checked every interval.
    Progressing,
    /// Held at the current step's weight; checks still run and can still roll back.
    Paused {
        /// Why.
        reason: PauseReason,
        /// When the pause began.
        since: Timestamp,
        /// When an inconclusive pause ends with the policy's outcome.
        deadline: Option<Timestamp>,
    },
    /// The canary is to become the stable version (100 %); the next tick completes it.
    Promoting,
    /// Final: the canary is the stable version.
    Succeeded,
    /// All traffic is to go back to stable; the next tick completes it.
    RollingBack,
    /// Final: the canary was rolled back.
    RolledBack,
    /// Final: an operator aborted the rollout; all traffic is on stable.
    Aborted,
}

/// [`Phase`] without its data, for errors and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PhaseKind {
    /// [`Phase::Pending`].
    Pending,
    /// [`Phase::Progressing`].
    Progressing,
    /// [`Phase::Paused`].
    Paused,
    /// [`Phase::Promoting`].
    Promoting,
    /// [`Phase::Succeeded`].
    Succeeded,
    /// [`Phase::RollingBack`].
    RollingBack,
    /// [`Phase::RolledBack`].
    RolledBack,
    /// [`Phase::Aborted`].
    Aborted,
}

impl PhaseKind {
    /// Stable lower-case name (used in the trail and metrics).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseKind::Pending => "pending",
            PhaseKind::Progressing => "progressing",
            PhaseKind::Paused => "paused",
            PhaseKind::Promoting => "promoting",
            PhaseKind::Succeeded => "succeeded",
            PhaseKind::RollingBack => "rolling_back",
            PhaseKind::RolledBack => "rolled_back",
            PhaseKind::Aborted => "aborted",
        }
    }

    /// Whether the rollout is over.
    #[must_use]
    pub fn is_final(self) -> bool {
        matches!(
            self,
            PhaseKind::Succeeded | PhaseKind::RolledBack | PhaseKind::Aborted
        )
    }
}

impl Phase {
    /// The phase without its data.
    #[must_use]
    pub fn kind(&self) -> PhaseKind {
        match self {
            Phase::Pending => PhaseKind::Pending,
            Phase::Progressing => PhaseKind::Progressing,
            Phase::Paused { .. } => PhaseKind::Paused,
            Phase::Promoting => PhaseKind::Promoting,
            Phase::Succeeded => PhaseKind::Succeeded,
            Phase::RollingBack => PhaseKind::RollingBack,
            Phase::RolledBack => PhaseKind::RolledBack,
            Phase::Aborted => PhaseKind::Aborted,
        }
    }
}

/// What an operator (or the clock) asked for; named in errors and the trail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Command {
    /// [`Rollout::start`].
    Start,
    /// A health check or timeout ([`Rollout::tick`]).
    Tick,
    /// [`Rollout::promote`].
    Promote,
    /// [`Rollout::promote_full`].
    PromoteFull,
    /// [`Rollout::skip_step`].
    SkipStep,
    /// [`Rollout::pause`].
    Pause,
    /// [`Rollout::resume`].
    Resume,
    /// [`Rollout::rollback`].
    RollBack,
    /// [`Rollout::abort`].
    Abort,
}

impl Command {
    /// Stable lower-case name (used in the trail).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Start => "start",
            Command::Tick => "tick",
            Command::Promote => "promote",
            Command::PromoteFull => "promote_full",
            Command::SkipStep => "skip_step",
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::RollBack => "rollback",
            Command::Abort => "abort",
        }
    }

    /// Parses [`Command::as_str`].
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "start" => Command::Start,
            "tick" => Command::Tick,
            "promote" => Command::Promote,
            "promote_full" => Command::PromoteFull,
            "skip_step" => Command::SkipStep,
            "pause" => Command::Pause,
            "resume" => Command::Resume,
            "rollback" => Command::RollBack,
            "abort" => Command::Abort,
            _ => return None,
        })
    }
}

/// Check counters of a rollout (reset as documented on each field).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Counters {
    /// Checks run (all verdicts).
    pub checks: u64,
    /// Failed checks since the last healthy one (reset by a healthy check or a new step).
    pub consecutive_failures: u32,
    /// Failed checks over the whole rollout.
    pub total_failures: u32,
    /// Healthy checks in a row at this step.
    pub consecutive_successes: u32,
    /// Inconclusive checks in a row (reset by any other verdict or a transition).
    pub consecutive_inconclusive: u32,
    /// Metric-source errors in a row (reset by any check).
    pub consecutive_source_errors: u32,
}

/// Everything that defines where a rollout is; what replaying its trail rebuilds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RolloutState {
    /// The phase.
    pub phase: Phase,
    /// Index of the current step in the plan.
    pub step: usize,
    /// When the current step began.
    pub step_started_at: Option<Timestamp>,
    /// When the next health check is due (`None` when nothing is scheduled).
    pub next_check_at: Option<Timestamp>,
    /// Check counters.
    pub counters: Counters,
    /// Verdict of the last check.
    pub last_verdict: Option<Verdict>,
}

impl RolloutState {
    fn new() -> Self {
        RolloutState {
            phase: Phase::Pending,
            step: 0,
            step_started_at: None,
            next_check_at: None,
            counters: Counters::default(),
            last_verdict: None,
        }
    }
}

/// One entry of a rollout's trail: a check or a transition. Every state change goes through
/// [`Rollout::apply`] with one of these, so the events are the rollout's history and
/// replaying them rebuilds its state.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A health check ran.
    Checked {
        /// When.
        at: Timestamp,
        /// Step judged.
        step: usize,
        /// Its report (inputs, limits, statistics, verdict).
        report: HealthReport,
    },
    /// The metrics source failed to answer.
    SourceError {
        /// When.
        at: Timestamp,
        /// Step at the time.
        step: usize,
        /// The source's message.
        message: String,
    },
    /// The rollout moved to another phase or step.
    Transition {
        /// When.
        at: Timestamp,
        /// Who.
        actor: Actor,
        /// What caused it.
        command: Command,
        /// Phase before.
        from: PhaseKind,
        /// Phase after.
        to: Phase,
        /// Step after.
        step: usize,
        /// Canary weight after, in percent.
        weight_percent: u8,
        /// Why, in words.
        reason: String,
    },
}

impl Event {
    /// When the event happened.
    #[must_use]
    pub fn at(&self) -> Timestamp {
        match self {
            Event::Checked { at, .. }
            | Event::SourceError { at, .. }
            | Event::Transition { at, .. } => *at,
        }
    }
}

/// What the caller should do after a tick or a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Action {
    /// Nothing is due; call again at `next_check_at`.
    Wait,
    /// A check ran; keep the current weight.
    Hold,
    /// Route this share of traffic (percent) to the canary.
    SetWeight(u8),
    /// Keep the current weight; the rollout is paused.
    Pause(PauseReason),
    /// Make the canary the stable version (all traffic to it), then tick again.
    Promote,
    /// Send all traffic back to stable, then tick again.
    RollBack,
    /// The rollout is over; nothing to do.
    Done,
}

/// The answer of [`Rollout::tick`] and of every command.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct Decision {
    /// What to do now.
    pub action: Action,
    /// Phase after the call.
    pub phase: PhaseKind,
    /// Step after the call.
    pub step: usize,
    /// Canary weight after the call, in percent.
    pub weight_percent: u8,
    /// When to tick next (`None`: nothing scheduled, e.g. pending or final).
    pub next_check_at: Option<Timestamp>,
    /// The health check's report, when one ran.
    pub report: Option<HealthReport>,
}

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

    /// Runs a health check if one is due, and whatever it leads to; completes a promotion or
    /// rollback; ends a timed-out pause. Never sleeps: call it again at
    /// [`Decision::next_check_at`].
    ///
    /// # Errors
    /// [`CanaryError::InvalidObservation`] for inconsistent observations (nothing changes).
    pub fn tick(&mut self, now: Timestamp, obs: &Observations) -> Result<Decision> {
        if let Some(d) = self.tick_without_check(now) {
            return Ok(d);
        }
        let step = &self.plan.steps()[self.state.step];
        let report = self.policy.judge(step, obs)?;
        Ok(self.apply_check(now, report))
    }

    /// Like [`tick`](Rollout::tick), when the metrics source failed: counts the error and,
    /// at the policy's limit, applies its outcome.
    pub fn tick_source_error(&mut self, now: Timestamp, message: impl Into<String>) -> Decision {
        if let Some(d) = self.tick_without_check(now) {
            return d;
        }
        let step = self.state.step;
        let mut message = message.into();
        if message.len() > TEXT_LEN_MAX {
            let mut end = TEXT_LEN_MAX;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        self.record(Event::SourceError {
            at: now,
            step,
            message,
        });
        if self.state.counters.consecutive_source_errors >= self.policy.source_error_limit() {
            let outcome = self.policy.source_error_outcome();
            let reason = format!(
                "{} consecutive metric-source errors",
                self.state.counters.consecutive_source_errors
            );
            if let Some(d) = self.apply_outcome(now, outcome, reason) {
                return d;
            }
        }
        self.decision(Action::Hold, None)
    }

    /// Applies a check whose report was computed elsewhere (by [`HealthPolicy::judge`]),
    /// when one is due. Returns `None` when no check is due (then nothing changes).
    pub fn tick_with_report(&mut self, now: Timestamp, report: HealthReport) -> Option<Decision> {
        if self.tick_without_check(now).is_some() {
            return None;
        }
        Some(self.apply_check(now, report))
    }

    /// The part of a tick that needs no observations: `Some` when the tick is finished
    /// without a check (not due, final, completing, timed out).
    fn tick_without_check(&mut self, now: Timestamp) -> Option<Decision> {
        match self.state.phase {
            Phase::Pending => Some(self.decision(Action::Wait, None)),
            Phase::Succeeded | Phase::RolledBack | Phase::Aborted => {
                Some(self.decision(Action::Done, None))
            }
            Phase::Promoting => {
                self.transition(
                    now,
                    Actor::System,
                    Command::Tick,
                    Phase::Succeeded,
                    self.state.step,
                    "promotion completed".into(),
                );
                Some(self.decision(Action::Done, None))
            }
            Phase::RollingBack => {
                self.transition(
                    now,
                    Actor::System,
                    Command::Tick,
                    Phase::RolledBack,
                    self.state.step,
                    "rollback completed".into(),
                );
                Some(self.decision(Action::Done, None))
            }
            Phase::Paused {
                reason,
                deadline: Some(deadline),
                ..
            } if now >= deadline => {
                let outcome = self.policy.pause_outcome();
                let why = format!(
                    "{reason:?} pause reached its maximum of {:?}",
                    self.policy.max_pause()
                );
                self.apply_outcome(now, outcome, why)
                    .or_else(|| Some(self.decision(Action::Hold, None)))
            }
            Phase::Progressing | Phase::Paused { .. } => {
                if self.state.next_check_at.is_some_and(|t| now < t) {
                    Some(self.decision(Action::Wait, None))
                } else {
                    None
                }
            }
        }
    }

    fn apply_check(&mut self, now: Timestamp, report: HealthReport) -> Decision {
        let verdict = report.verdict;
        metrics::counter!("canary_checks_total", "verdict" => verdict.as_str()).increment(1);
        let step = self.state.step;
        self.record(Event::Checked {
            at: now,
            step,
            report: report.clone(),
        });
        let c = self.state.counters;
        let p = &self.policy;
        let failed_out = verdict == Verdict::Critical
            || (verdict == Verdict::Unhealthy
                && (c.consecutive_failures >= p.failure_limit()
                    || c.total_failures >= p.total_failure_limit()));
        let report = Some(report);
        if failed_out {
            let reason = if verdict == Verdict::Critical {
                format!(
                    "critical check failed: {}",
                    report
                        .as_ref()
                        .map(HealthReport::reason)
                        .unwrap_or_default()
                )
            } else {
                format!(
                    "{} consecutive / {} total failed checks: {}",
                    c.consecutive_failures,
                    c.total_failures,
                    report
                        .as_ref()
                        .map(HealthReport::reason)
                        .unwrap_or_default()
                )
            };
            self.transition(
                now,
                Actor::System,
                Command::Tick,
                Phase::RollingBack,
                step,
                reason,
            );
            return self.decision(Action::RollBack, report);
        }
        match self.state.phase {
            Phase::Progressing => {
                let min = self.plan.steps()[step].min_duration();
                let elapsed = self
                    .state
                    .step_started_at
                    .map(|s| now.saturating_duration_since(s))
                    .unwrap_or_default();
                let early = p
                    .success_limit()
                    .is_some_and(|n| c.consecutive_successes >= n);
                if verdict == Verdict::Healthy && (elapsed >= min || early) {
                    let reason = if elapsed >= min {
                        format!("step {step} healthy after {elapsed:?}")
                    } else {
                        format!(
                            "step {step} healthy {} checks in a row",
                            c.consecutive_successes
                        )
                    };
                    let action = self.advance(now, Actor::System, Command::Tick, reason);
                    return self.decision(action, report);
                }
                if verdict == Verdict::Inconclusive
                    && c.consecutive_inconclusive >= p.inconclusive_limit()
                {
                    let deadline = now.saturating_add(p.max_pause());
                    let to = Phase::Paused {
                        reason: PauseReason::Inconclusive,
                        since: now,
                        deadline: Some(deadline),
                    };
                    let reason = format!(
                        "{} inconclusive checks in a row: {}",
                        c.consecutive_inconclusive,
                        report
                            .as_ref()
                            .map(HealthReport::reason)
                            .unwrap_or_default()
                    );
                    self.transition(now, Actor::System, Command::Tick, to, step, reason);
                    return self.decision(Action::Pause(PauseReason::Inconclusive), report);
                }
                self.decision(Action::Hold, report)
            }
            Phase::Paused {
                reason: PauseReason::Inconclusive,
                ..
            } if verdict == Verdict::Healthy => {
                self.transition(
                    now,
                    Actor::System,
                    Command::Resume,
                    Phase::Progressing,
                    step,
                    "healthy again".into(),
                );
                let weight = self.weight_percent();
                self.decision(Action::SetWeight(weight), report)
            }
            Phase::Paused { reason, .. } => self.decision(Action::Pause(reason), report),
            _ => self.decision(Action::Hold, report),
        }
    }

    /// Applies `outcome`; `None` when the outcome leaves the phase as it is.
    fn apply_outcome(
        &mut self,
        now: Timestamp,
        outcome: Outcome,
        reason: String,
    ) -> Option<Decision> {
        let step = self.state.step;
        match outcome {
            Outcome::RollBack => {
                self.transition(
                    now,
                    Actor::System,
                    Command::Tick,
                    Phase::RollingBack,
                    step,
                    reason,
                );
                Some(self.decision(Action::RollBack, None))
            }
            Outcome::Resume => match self.state.phase {
                Phase::Paused { .. } => {
                    self.transition(
                        now,
                        Actor::System,
                        Command::Resume,
                        Phase::Progressing,
                        step,
                        reason,
                    );
                    let w = self.weight_percent();
                    Some(self.decision(Action::SetWeight(w), None))
                }
                _ => None,
            },
            Outcome::Advance => {
                let action = self.advance(now, Actor::System, Command::Tick, reason);
                Some(self.decision(action, None))
            }
        }
    }

    /// Moves to the next step, the approval gate before it, or promotion.
    fn advance(
        &mut self,
        now: Timestamp,
        actor: Actor,
        command: Command,
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

    /// Starts the rollout at its first step (starting counts as approving it).
    ///
    /// # Errors
    /// [`CanaryError::InvalidCommand`] for an operator name or note longer than
    /// [`TEXT_LEN_MAX`]; [`CanaryError::IllegalTransition`] unless pending.
    pub fn start(&mut self, now: Timestamp, actor: Actor) -> Result<Decision> {
        Self::check_text(&actor, "")?;
        self.require(
            Command::Start,
            &[PhaseKind::Pending],
            "a rollout starts once",
        )?;
        self.transition(
            now,
            actor,
            Command::Start,
            Phase::Progressing,
            0,
            "started".into(),
        );
        Ok(self.decision(Action::SetWeight(self.weight_percent()), None))
    }

    /// Moves to the next step now (approving its gate), whatever the checks say; from the
    /// last step below 100 % this promotes.
    ///
    /// # Errors
    /// [`CanaryError::InvalidCommand`] for an operator name or note longer than
    /// [`TEXT_LEN_MAX`]; [`CanaryError::IllegalTransition`] unless progressing or paused.
    pub fn promote(&mut self, now: Timestamp, actor: Actor) -> Result<Decision> {
        Self::check_text(&actor, "")?;
        self.require(
            Command::Promote,
            &[PhaseKind::Progressing, PhaseKind::Paused],
            "only a running rollout can move on",
        )?;
        let reason = format!("promoted by {actor}");
        let action = self.advance(now, actor, Command::Promote, reason);
        Ok(self.decision(action, None))
    }

    /// Promotes the canary to 100 % now, skipping the remaining steps.
    ///
    /// # Errors
    /// [`CanaryError::InvalidCommand`] for an operator name or note longer than
    /// [`TEXT_LEN_MAX`]; [`CanaryError::IllegalTransition`] unless progressing or paused.
    pub fn promote_full(&mut self, now: Timestamp, actor: Actor) -> Result<Decision> {
        Self::check_text(&actor, "")?;
        self.require(
            Command::PromoteFull,
            &[PhaseKind::Progressing, PhaseKind::Paused],
            "only a running rollout can be promoted",
        )?;
        let reason = format!("fully promoted by {actor}");
        let last = self.plan.last_index();
        self.transition(
            now,
            actor,
            Command::PromoteFull,
            Phase::Promoting,
            last,
            reason,
        );
        Ok(self.decision(Action::Promote, None))
    }

    /// Skips the rest of the current step (its minimum time and sample) and moves on; unlike
    /// [`promote`](Rollout::promote) it refuses a paused rollout, which must be resumed or
    /// promoted deliberately.
    ///
    /// # Errors
    /// [`CanaryError::InvalidCommand`] for an operator name or note longer than
    /// [`TEXT_LEN_MAX`]; [`CanaryError::IllegalTransition`] unless progressing.
    pub fn skip_step(&mut self, now: Timestamp, actor: Actor) -> Result<Decision> {
        Self::check_text(&actor, "")?;
        self.require(
            Command::SkipStep,
            &[PhaseKind::Progressing],
            "resume or promote a paused rollout instead",
        )?;
        let reason = format!("step {} skipped by {actor}", self.state.step);
        let action = self.advance(now, actor, Command::SkipStep, reason);
        Ok(self.decision(action, None))
    }

    /// Pauses at the current weight until [`resume`](Rollout::resume)d. Checks keep running
    /// and can still roll back.
    ///
    /// # Errors
    /// [`CanaryError::InvalidCommand`] for an operator name or note longer than
    /// [`TEXT_LEN_MAX`]; [`CanaryError::IllegalTransition`] unless progressing.
    pub fn pause(&mut self, now: Timestamp, actor: Actor, note: &str) -> Result<Decision> {
        Self::check_text(&actor, note)?;
        self.require(
            Command::Pause,
            &[PhaseKind::Progressing],
            "only a progressing rollout can be paused",
        )?;
        let to = Phase::Paused {
            reason: PauseReason::Manual,
            since: now,
            deadline: None,
        };
        let step = self.state.step;
        self.transition(now, actor, Command::Pause, to, step, note.to_owned());
        Ok(self.decision(Action::Pause(PauseReason::Manual), None))
    }

    /// Resumes a manually or inconclusively paused rollout at its current step.
    ///
    /// # Errors
    /// [`CanaryError::InvalidCommand`] for an operator name or note longer than
    /// [`TEXT_LEN_MAX`]; [`CanaryError::IllegalTransition`] unless paused; a rollout awaiting approval is
    /// continued with [`promote`](Rollout::promote).
    pub fn resume(&mut self, now: Timestamp, actor: Actor) -> Result<Decision> {
        Self::check_text(&actor, "")?;
        self.require(
            Command::Resume,
            &[PhaseKind::Paused],
            "only a paused rollout can resume",
        )?;
        if let Phase::Paused {
            reason: PauseReason::AwaitingApproval,
            ..
        } = self.state.phase
        {
            return Err(CanaryError::IllegalTransition {
                phase: PhaseKind::Paused,
                command: Command::Resume,
                hint: "the next step needs approval: promote to approve it",
            });
        }
        let step = self.state.step;
        let reason = format!("resumed by {actor}");
        self.transition(
            now,
            actor,
            Command::Resume,
            Phase::Progressing,
            step,
            reason,
        );
        Ok(self.decision(Action::SetWeight(self.weight_percent()), None))
    }

    /// Rolls the canary back now.
    ///
    /// # Errors
    /// [`CanaryError::InvalidCommand`] for an operator name or note longer than
    /// [`TEXT_LEN_MAX`]; [`CanaryError::IllegalTransition`] unless progressing or paused.
    pub fn rollback(&mut self, now: Timestamp, actor: Actor, note: &str) -> Result<Decision> {
        Self::check_text(&actor, note)?;
        self.require(
            Command::RollBack,
            &[PhaseKind::Progressing, PhaseKind::Paused],
            "only a running rollout can be rolled back",
        )?;
        let step = self.state.step;
        self.transition(
            now,
            actor,
            Command::RollBack,
            Phase::RollingBack,
            step,
            note.to_owned(),
        );
        Ok(self.decision(Action::RollBack, None))
    }

    /// Aborts the rollout: all traffic to stable, final.
    ///
    /// # Errors
    /// [`CanaryError::InvalidCommand`] for an operator name or note longer than
    /// [`TEXT_LEN_MAX`]; [`CanaryError::IllegalTransition`] when the rollout is already over.
    pub fn abort(&mut self, now: Timestamp, actor: Actor, note: &str) -> Result<Decision> {
        Self::check_text(&actor, note)?;
        self.require(
            Command::Abort,
            &[
                PhaseKind::Pending,
                PhaseKind::Progressing,
                PhaseKind::Paused,
                PhaseKind::Promoting,
                PhaseKind::RollingBack,
            ],
            "the rollout is already over",
        )?;
        let step = self.state.step;
        self.transition(
            now,
            actor,
            Command::Abort,
            Phase::Aborted,
            step,
            note.to_owned(),
        );
        Ok(self.decision(Action::RollBack, None))
    }

    fn check_text(actor: &Actor, note: &str) -> Result<()> {
        let name_len = match actor {
            Actor::System => 0,
            Actor::Operator(n) => n.len(),
        };
        if name_len > TEXT_LEN_MAX || note.len() > TEXT_LEN_MAX {
            return Err(CanaryError::InvalidCommand {
                reason: format!("operator names and notes are limited to {TEXT_LEN_MAX} bytes"),
            });
        }
        Ok(())
    }

    fn require(&self, command: Command, allowed: &[PhaseKind], hint: &'static str) -> Result<()> {
        let phase = self.state.phase.kind();
        if allowed.contains(&phase) {
            Ok(())
        } else {
            Err(CanaryError::IllegalTransition {
                phase,
                command,
                hint,
            })
        }
    }

    fn transition(
        &mut self,
        at: Timestamp,
        actor: Actor,
        command: Command,
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

    fn decision(&self, action: Action, report: Option<HealthReport>) -> Decision {
        Decision {
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

/// The one function that changes a [`RolloutState`]; used live and in replay.
fn apply_event(plan: &Plan, state: &mut RolloutState, event: &Event, index: usize) -> Result<()> {
    let mismatch = |reason: String| Err(CanaryError::TrailMismatch { index, reason });
    match event {
        Event::Checked { at, step, report } => {
            if *step != state.step {
                return mismatch(format!("check of step {step} while at step {}", state.step));
            }
            if !matches!(
                state.phase.kind(),
                PhaseKind::Progressing | PhaseKind::Paused
            ) {
                return mismatch(format!("check while {:?}", state.phase.kind()));
            }
            let c = &mut state.counters;
            c.checks += 1;
            c.consecutive_source_errors = 0;
            match report.verdict {
                Verdict::Healthy => {
                    c.consecutive_successes += 1;
                    c.consecutive_failures = 0;
                    c.consecutive_inconclusive = 0;
                }
                Verdict::Unhealthy | Verdict::Critical => {
                    c.consecutive_failures += 1;
                    c.total_failures += 1;
                    c.consecutive_successes = 0;
                    c.consecutive_inconclusive = 0;
                }
                Verdict::Inconclusive => {
                    c.consecutive_inconclusive += 1;
                    c.consecutive_successes = 0;
                }
                Verdict::InsufficientData => {
                    c.consecutive_inconclusive = 0;
                }
            }
            state.last_verdict = Some(report.verdict);
            state.next_check_at = Some(at.saturating_add(plan.check_interval()));
        }
        Event::SourceError { at, step, .. } => {
            if *step != state.step {
                return mismatch(format!(
                    "source error at step {step} while at step {}",
                    state.step
                ));
            }
            state.counters.consecutive_source_errors += 1;
            state.next_check_at = Some(at.saturating_add(plan.check_interval()));
        }
        Event::Transition {
            at, from, to, step, ..
        } => {
            if *from != state.phase.kind() {
                return mismatch(format!(
                    "transition from {from:?} while {:?}",
                    state.phase.kind()
                ));
            }
            if *step > plan.last_index() {
                return mismatch(format!(
                    "step {step} outside a plan of {} steps",
                    plan.steps().len()
                ));
            }
            let c = &mut state.counters;
            c.consecutive_inconclusive = 0;
            if *step != state.step || *from == PhaseKind::Pending {
                c.consecutive_failures = 0;
                c.consecutive_successes = 0;
                state.step_started_at = Some(*at);
            }
            state.step = *step;
            state.phase = *to;
            state.next_check_at = match to.kind() {
                PhaseKind::Progressing | PhaseKind::Paused => {
                    if *from == PhaseKind::Pending || state.step_started_at == Some(*at) {
                        Some(at.saturating_add(plan.check_interval()))
                    } else {
                        state.next_check_at
                    }
                }
                PhaseKind::Promoting | PhaseKind::RollingBack => Some(*at),
                _ => None,
            };
        }
    }
    Ok(())
}
