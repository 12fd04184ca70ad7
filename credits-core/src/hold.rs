//! What a caller can learn about a hold: [`HoldState`] and [`HoldResolution`].

use metered_clock::Timestamp;
use serde::{Deserialize, Serialize};

use crate::Amount;

/// How a hold ended. Each hold ends exactly once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HoldResolution {
    /// Committed (the rest, if any, released).
    Committed {
        /// How much was spent.
        committed: Amount,
    },
    /// Cancelled by its owner.
    Cancelled,
    /// Its time-to-live passed.
    Expired,
}

/// What is known about a hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HoldState {
    /// Still holding credits.
    Active {
        /// What it holds.
        amount: Amount,
        /// When it expires unless resolved.
        expires_at: Timestamp,
    },
    /// Resolved.
    Resolved(HoldResolution),
}
