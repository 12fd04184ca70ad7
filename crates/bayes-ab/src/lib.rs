//! Exact Bayesian A/B testing.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod beta;
mod error;
mod quadrature;
mod special;
mod two_arm;

pub use beta::{Beta, Counts, Interval};
pub use error::{Error, Result};
pub use two_arm::{
    CompareConfig, Lift, Method, TwoArmSummary, compare, expected_losses, lift_interval,
    prob_b_beats_a, prob_lift_exceeds,
};
