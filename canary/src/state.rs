//! What defines where a rollout is ([`RolloutState`]), and the one function that changes it.

use metered_clock::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{CanaryError, Result};
use crate::event::Event;
use crate::health::Verdict;
use crate::phase::{Phase, PhaseKind};
use crate::plan::Plan;

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
    /// A pending rollout at step 0 with no checks.
    pub(crate) fn new() -> Self {
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

/// The one function that changes a [`RolloutState`]; used live and in replay.
pub(crate) fn apply_event(
    plan: &Plan,
    state: &mut RolloutState,
    event: &Event,
    index: usize,
) -> Result<()> {
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
