//! Sticky, deterministic routing of request keys to the canary or the stable version.

use bayes_ab::TrafficSplit;
use serde::{Deserialize, Serialize};

/// Which version serves a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Arm {
    /// The stable (baseline) version.
    Stable,
    /// The canary.
    Canary,
}

/// Routes a request key (user id, session id, tenant) to [`Arm::Stable`] or [`Arm::Canary`]
/// at a weight, deterministically: the key's bucket in `0..10_000` comes from SHA-256 of the
/// salt and key (`bayes_ab::TrafficSplit::assign`), and the canary owns the top `weight × 100`
/// buckets. So the same key always lands on the same arm at the same weight, and raising the
/// weight only moves stable keys to the canary, never a canary key back to stable.
///
/// ```
/// use canary::{Arm, Router};
///
/// let router = Router::new("checkout-v2");
/// let at_10: Vec<Arm> = (0..1000).map(|i| router.route(&format!("user-{i}"), 10)).collect();
/// let at_25: Vec<Arm> = (0..1000).map(|i| router.route(&format!("user-{i}"), 25)).collect();
/// // Every canary user at 10 % is still a canary user at 25 %.
/// assert!(at_10.iter().zip(&at_25).all(|(a, b)| *a == Arm::Stable || *b == Arm::Canary));
/// let share = at_25.iter().filter(|a| **a == Arm::Canary).count();
/// assert!((200..300).contains(&share));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Router {
    salt: String,
}

impl Router {
    /// A router salted with `salt` (use the rollout id, so different rollouts pick
    /// independent canary users).
    #[must_use]
    pub fn new(salt: impl Into<String>) -> Self {
        Router { salt: salt.into() }
    }

    /// The arm of `key` when the canary gets `weight_percent` % of traffic (values above 100
    /// count as 100).
    #[must_use]
    pub fn route(&self, key: &str, weight_percent: u8) -> Arm {
        match weight_percent {
            0 => Arm::Stable,
            w if w >= 100 => Arm::Canary,
            w => {
                let canary = u32::from(w) * 100;
                match TrafficSplit::new(vec![10_000 - canary, canary]) {
                    Ok(split) if split.assign(&self.salt, key) == 1 => Arm::Canary,
                    _ => Arm::Stable,
                }
            }
        }
    }
}
