//! Who asks a rollout to move ([`Actor`]) and what they ask for ([`RolloutCommand`]).

use std::fmt;

#[cfg(doc)]
use crate::Rollout;
use serde::{Deserialize, Serialize};

/// Longest operator name or note accepted by a command (longer metric-source messages are
/// truncated to it).
pub const COMMAND_TEXT_LEN_MAX: usize = 1024;

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

/// What an operator (or the clock) asked for; named in errors and the trail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RolloutCommand {
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

impl RolloutCommand {
    /// Stable lower-case name (used in the trail).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutCommand::Start => "start",
            RolloutCommand::Tick => "tick",
            RolloutCommand::Promote => "promote",
            RolloutCommand::PromoteFull => "promote_full",
            RolloutCommand::SkipStep => "skip_step",
            RolloutCommand::Pause => "pause",
            RolloutCommand::Resume => "resume",
            RolloutCommand::RollBack => "rollback",
            RolloutCommand::Abort => "abort",
        }
    }

    /// Parses [`RolloutCommand::as_str`].
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "start" => RolloutCommand::Start,
            "tick" => RolloutCommand::Tick,
            "promote" => RolloutCommand::Promote,
            "promote_full" => RolloutCommand::PromoteFull,
            "skip_step" => RolloutCommand::SkipStep,
            "pause" => RolloutCommand::Pause,
            "resume" => RolloutCommand::Resume,
            "rollback" => RolloutCommand::RollBack,
            "abort" => RolloutCommand::Abort,
            _ => return None,
        })
    }
}
