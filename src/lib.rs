//! The metered-platform suite in one dependency.
//!
//! This crate re-exports each library crate of the workspace under a short name and hosts the
//! workspace's runnable examples (`examples/`) and criterion benchmarks (`benches/`). Depend on
//! the individual crates when you need only one of them.
//!
//! ```
//! use metered_suite::clock::{Clock, ManualClock, Timestamp};
//!
//! let clock = ManualClock::new(Timestamp::from_unix_millis(0));
//! assert_eq!(clock.now(), Timestamp::EPOCH);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use audit_chain as audit;
pub use bayes_ab;
pub use canary;
pub use credits_core as credits;
pub use credits_postgres;
pub use metered_clock as clock;
pub use resilience;

/// The README's code blocks, compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The guides without a crate of their own (`docs/credits-service.md`, `docs/simulation.md`,
/// `docs/BENCHMARKS.md`): every Rust example in them runs as a doc test of this crate.
#[cfg(doctest)]
pub mod guides {
    /// `docs/credits-service.md`.
    #[doc = include_str!("../docs/credits-service.md")]
    pub mod credits_service_guide {}

    /// `docs/simulation.md`.
    #[doc = include_str!("../docs/simulation.md")]
    pub mod simulation_guide {}

    /// `docs/BENCHMARKS.md`.
    #[doc = include_str!("../docs/BENCHMARKS.md")]
    pub mod benchmarks_guide {}
}
