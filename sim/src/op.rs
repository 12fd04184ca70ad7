//! [`OpKind`]: the kinds of step the workload draws, and their mix.

use rand::Rng;
use rand::rngs::StdRng;

/// What one step does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// One request (600‰).
    Request,
    /// A batch of 2–4 grants and consumptions (60‰).
    Batch,
    /// Re-sends an acknowledged request (60‰).
    Retry,
    /// Reuses an acknowledged key for another command (20‰).
    Conflict,
    /// A distributed transaction over two tenants (60‰).
    Transaction,
    /// Advances the clock by up to 20 s (120‰).
    Clock,
    /// Advances the clock by 10 min to 4 h (30‰).
    BigClockJump,
    /// Runs the expiry sweep to completion (30‰).
    Sweep,
    /// Reads a balance (10‰).
    Read,
    /// Kills the process (10‰).
    Crash,
}

impl OpKind {
    /// Draws the next step's operation.
    pub(crate) fn roll(rng: &mut StdRng) -> Self {
        match rng.random_range(0..1000) {
            0..600 => OpKind::Request,
            600..660 => OpKind::Batch,
            660..720 => OpKind::Retry,
            720..740 => OpKind::Conflict,
            740..800 => OpKind::Transaction,
            800..920 => OpKind::Clock,
            920..950 => OpKind::BigClockJump,
            950..980 => OpKind::Sweep,
            980..990 => OpKind::Read,
            _ => OpKind::Crash,
        }
    }

    /// Its name in [`Report::by_kind`](crate::Report::by_kind).
    pub(crate) fn name(self) -> &'static str {
        match self {
            OpKind::Request => "request",
            OpKind::Batch => "batch",
            OpKind::Retry => "retry",
            OpKind::Conflict => "conflict",
            OpKind::Transaction => "transaction",
            OpKind::Clock => "clock",
            OpKind::BigClockJump => "big-clock-jump",
            OpKind::Sweep => "sweep",
            OpKind::Read => "read",
            OpKind::Crash => "crash",
        }
    }
}
