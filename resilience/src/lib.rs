//! Resilience primitives for calls to backends.
//!
//! ```
//! use std::time::Duration;
//! use metered_clock::{ManualClock, Timestamp};
//! use resilience::{BreakerConfig, CircuitBreaker, Quota, RateLimiter};
//!
//! let clock = ManualClock::new(Timestamp::EPOCH);
//! let breaker = CircuitBreaker::with_clock(BreakerConfig::builder().name("db").build()?, clock.clone());
//! let limiter = RateLimiter::with_clock(Quota::per_second(100)?.with_burst(10)?, clock.clone());
//!
//! limiter.try_acquire(1)?;
//! let permit = breaker.try_acquire()?;
//! permit.record_success();
//! # Ok::<(), resilience::ResilienceError>(())
//! ```
//!
//! # Overview
//!
//! * [`CircuitBreaker`]: lock-free closed / open / half-open state machine with count- or
//!   time-based windows, slow-call detection, manual states, a permit guard that hands its
//!   half-open slot back when dropped, statistics, events and metrics.
//! * [`RateLimiter`]: GCRA in one atomic; [`KeyedRateLimiter`]: one per key (tenant) with
//!   bounded memory.
//! * [`Backoff`]: constant or exponential delays with none / full / equal / decorrelated
//!   jitter, a cap, attempt and total-time limits and server retry-after hints;
//!   [`RetryBudget`] caps retries to a fraction of requests; [`Retry`] drives them.
//! * [`timeout`] and [`Bulkhead`]: cut slow calls; bound concurrent calls.
//! * [`AdaptiveLimiter`]: a concurrency limit that follows latency (AIMD, Vegas,
//!   Gradient2), with a sans-IO [`LimitEstimator`]; [`LoadShedder`]: shares that limit by
//!   [`Priority`], shedding the least important work first.
//! * [`Hedge`]: a second attempt when the first is slower than a latency quantile, within
//!   a budget; first answer wins.
//!
//! Decision code is sans-IO: it takes time from a [`metered_clock::Clock`] and returns
//! decisions and delays. Only the async drivers ([`Retry`], [`timeout`],
//! [`RateLimiter::acquire`], [`Bulkhead::acquire`]) wait, through a [`Sleeper`].
//!
//! # What it does not do
//!
//! No background threads or timers (an open breaker becomes half-open on the next call), no
//! distributed state (every limiter and breaker is per process; the one opt-in exception is
//! `RedisRateLimiter`, feature `redis`), no fallback values (the caller decides what to do
//! with a rejection).
//!
//! # Features
//!
//! * `tokio`: `TokioSleeper`, a [`Sleeper`] on tokio's timer.
//! * `tower`: `tower::Layer`s beside each primitive, re-exported here:
//!   `CircuitBreakerLayer`, `RateLimitLayer`, `KeyedRateLimitLayer`, `BulkheadLayer`,
//!   `RetryLayer`, `AdaptiveLimitLayer`, `LoadShedLayer` and `HedgeLayer` (see
//!   `docs/resilience.md` for a `ServiceBuilder` stack).
//! * `quanta`: `QuantaClock`, a `Clock` whose monotonic reads cost a few nanoseconds
//!   (the time-stamp counter) instead of a system call; for the hottest limiters and
//!   breakers.
//! * `redis`: `RedisRateLimiter`, a GCRA limiter per key shared by every replica through
//!   Redis (one atomic script per decision), with a local fallback behind a breaker.
//! * `sim`: the `sim` module, a deterministic simulation harness (a simulated backend with a
//!   capacity, a latency curve and capacity changes; seeded traffic on a manual clock).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod adaptive;
mod backoff;
mod breaker;
mod bulkhead;
mod error;
#[cfg(feature = "tower")]
mod future;
mod hedge;
mod limiter;
mod retry;
mod shed;
#[cfg(feature = "sim")]
pub mod sim;
mod sleep;
mod timeout;

/// The guide (`docs/resilience.md`): one section per primitive, every example a doc test.
#[cfg(doctest)]
#[doc = include_str!("../../docs/resilience.md")]
pub mod guide {}

/// Atomics and locks, in one place so the model-checking test can swap in its own.
mod sync {
    pub(crate) use std::sync::atomic;
    pub(crate) use std::sync::{Mutex, MutexGuard};
}

pub use adaptive::{
    ADAPTIVE_LIMIT_MAX, AdaptiveConfig, AdaptiveConfigBuilder, AdaptiveLimiter, AdaptivePermit,
    AdaptiveStats, Aimd, Algorithm, Gradient2, LimitEstimator, OwnedAdaptivePermit, Sample, Vegas,
};
#[cfg(feature = "tower")]
pub use adaptive::{AdaptiveGuard, AdaptiveLimitLayer, AdaptiveLimitService};
pub use backoff::{Backoff, BackoffBuilder, Jitter, Schedule};
pub use breaker::{
    BreakerConfig, BreakerConfigBuilder, BreakerEvent, CallOutcome, CircuitBreaker, OpenWait,
    OwnedPermit, Permit, State, Stats, TIME_WINDOW_SECS_MAX, classify_result,
};
#[cfg(feature = "tower")]
pub use breaker::{
    BreakerGuard, CircuitBreakerLayer, CircuitBreakerService, Classify, OkIsSuccess,
};
pub use bulkhead::{Bulkhead, BulkheadPermit};
#[cfg(feature = "tower")]
pub use bulkhead::{BulkheadLayer, BulkheadService};
pub use error::{CallError, ResilienceError};
#[cfg(feature = "tower")]
pub use future::{NoGuard, ResponseFuture};
pub use hedge::{Hedge, HedgeConfig, HedgeConfigBuilder};
#[cfg(feature = "tower")]
pub use hedge::{HedgeLayer, HedgeService};
#[cfg(feature = "redis")]
pub use limiter::{
    Decision, DecisionPath, REDIS_PREFIX_LEN_MAX, REDIS_TIMEOUT_MAX, RedisRateLimiter,
    RedisRateLimiterBuilder, RedisTime,
};
#[cfg(feature = "tower")]
pub use limiter::{KeyedRateLimitLayer, KeyedRateLimitService, RateLimitLayer, RateLimitService};
pub use limiter::{KeyedRateLimiter, Quota, RateLimiter};
#[cfg(feature = "quanta")]
pub use metered_clock::QuantaClock;
#[cfg(feature = "tower")]
pub use retry::{BoxFuture, RetryLayer, RetryService};
pub use retry::{Retry, RetryBudget, RetryDecision};
#[cfg(feature = "tower")]
pub use shed::{LoadShedLayer, LoadShedService, ShedGuard};
pub use shed::{LoadShedder, Priority, QueueConfig, ShedPermit};
#[cfg(feature = "tokio")]
pub use sleep::TokioSleeper;
pub use sleep::{ManualSleeper, Sleeper};
pub use timeout::timeout;
