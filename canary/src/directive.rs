//! What a rollout tells its caller after a tick or a command.

use metered_clock::Timestamp;
use serde::{Deserialize, Serialize};

#[cfg(doc)]
use crate::Rollout;
use crate::health::HealthReport;
use crate::phase::{PauseReason, PhaseKind};

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
pub struct Directive {
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
