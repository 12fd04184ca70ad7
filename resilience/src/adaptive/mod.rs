//! An adaptive concurrency limiter: the limit on calls in flight follows the backend's
//! latency (AIMD, Vegas or Gradient2), instead of being a number someone guessed.
//!
//! The hot path is lock-free: `try_acquire` is one compare-and-swap on the in-flight
//! count and one clock read; a permit's release is three atomic adds (in flight, latency
//! sum, sample count) and one clock read. Samples are folded into *windows* (at least
//! `window_samples_min` samples and `clamp(2 · latency, window_min, window_max)` long); the
//! caller that closes a window runs the algorithm once under a `try_lock` (a caller finding
//! the lock taken simply moves on), as Netflix's `WindowedLimit` does.

mod algorithm;
#[cfg(feature = "tower")]
mod layer;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_utils::CachePadded;
use metered_clock::{Clock, SystemClock, Tick, duration_nanos};

pub use self::algorithm::{Aimd, Algorithm, Gradient2, LimitEstimator, Sample, Vegas};
#[cfg(feature = "tower")]
pub use self::layer::{AdaptiveGuard, AdaptiveLimitLayer, AdaptiveLimitService};
use crate::breaker::CallOutcome;
use crate::error::ResilienceError;
use crate::sync::Mutex;
use crate::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// The largest limit a config accepts.
pub const ADAPTIVE_LIMIT_MAX: u32 = 1 << 20;

/// A validated configuration for an [`AdaptiveLimiter`]; build it with
/// [`AdaptiveConfig::builder`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdaptiveConfig {
    name: String,
    algorithm: Algorithm,
    initial_limit: u32,
    min_limit: u32,
    max_limit: u32,
    window_min: Duration,
    window_max: Duration,
    window_samples_min: u32,
    metrics: bool,
}

impl AdaptiveConfig {
    /// A builder with the defaults: Gradient2, initial limit 20, limits 1..=1000, windows
    /// of 10 ms..=1 s and at least 10 samples, no metrics.
    pub fn builder() -> AdaptiveConfigBuilder {
        AdaptiveConfigBuilder {
            config: AdaptiveConfig {
                name: String::from("adaptive"),
                algorithm: Algorithm::Gradient2(Gradient2::new()),
                initial_limit: 20,
                min_limit: 1,
                max_limit: 1_000,
                window_min: Duration::from_millis(10),
                window_max: Duration::from_secs(1),
                window_samples_min: 10,
                metrics: false,
            },
        }
    }

    /// The algorithm.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The name used as the `name` label of the metrics.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Builds an [`AdaptiveConfig`]; [`build`](Self::build) validates every setting.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct AdaptiveConfigBuilder {
    config: AdaptiveConfig,
}

impl AdaptiveConfigBuilder {
    /// The name used as the `name` label of the metrics.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// The algorithm that moves the limit.
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.config.algorithm = algorithm;
        self
    }

    /// The limit before the first window closes.
    pub fn initial_limit(mut self, limit: u32) -> Self {
        self.config.initial_limit = limit;
        self
    }

    /// The limit never goes below this (at least 1).
    pub fn min_limit(mut self, limit: u32) -> Self {
        self.config.min_limit = limit;
        self
    }

    /// The limit never goes above this (at most [`ADAPTIVE_LIMIT_MAX`]).
    pub fn max_limit(mut self, limit: u32) -> Self {
        self.config.max_limit = limit;
        self
    }

    /// Bounds of a window's length: `clamp(2 · average latency, min, max)`.
    pub fn window(mut self, min: Duration, max: Duration) -> Self {
        self.config.window_min = min;
        self.config.window_max = max;
        self
    }

    /// A window closes only once it holds this many samples (at least 1).
    pub fn window_samples_min(mut self, samples: u32) -> Self {
        self.config.window_samples_min = samples;
        self
    }

    /// Publish `adaptive_limit` and `adaptive_in_flight` (gauges, updated when a window
    /// closes) and `adaptive_rejections_total` (counter) through the `metrics` facade,
    /// labelled with the name. Off by default.
    pub fn metrics(mut self, enabled: bool) -> Self {
        self.config.metrics = enabled;
        self
    }

    /// Checks every setting.
    ///
    /// # Errors
    ///
    /// [`ResilienceError::InvalidConfig`] naming the first invalid setting: a zero or
    /// out-of-order limit (`min_limit ≤ initial_limit ≤ max_limit ≤ ADAPTIVE_LIMIT_MAX`),
    /// a zero or inverted window, zero window samples, or an algorithm parameter out of
    /// its range.
    pub fn build(self) -> Result<AdaptiveConfig, ResilienceError> {
        let c = self.config;
        let invalid = |field, reason| Err(ResilienceError::InvalidConfig { field, reason });
        if c.min_limit == 0 {
            return invalid("min_limit", "must be at least 1");
        }
        if c.max_limit > ADAPTIVE_LIMIT_MAX {
            return invalid("max_limit", "must be at most ADAPTIVE_LIMIT_MAX");
        }
        if c.max_limit < c.min_limit {
            return invalid("max_limit", "must not be less than min_limit");
        }
        if !(c.min_limit..=c.max_limit).contains(&c.initial_limit) {
            return invalid("initial_limit", "must be within min_limit..=max_limit");
        }
        if c.window_min.is_zero() {
            return invalid("window_min", "must not be zero");
        }
        if c.window_max < c.window_min {
            return invalid("window_max", "must not be less than window_min");
        }
        if c.window_samples_min == 0 {
            return invalid("window_samples_min", "must be at least 1");
        }
        c.algorithm.validate()?;
        Ok(c)
    }
}

/// Limits the calls in flight to a limit that adapts to the backend's latency.
///
/// ```
/// use std::time::Duration;
/// use metered_clock::{ManualClock, Timestamp};
/// use resilience::{AdaptiveConfig, AdaptiveLimiter, Aimd, Algorithm, ResilienceError};
///
/// let clock = ManualClock::new(Timestamp::EPOCH);
/// let config = AdaptiveConfig::builder()
///     .algorithm(Algorithm::Aimd(Aimd::new().latency_threshold(Duration::from_millis(50))))
///     .initial_limit(2)
///     .window_samples_min(1)
///     .build()?;
/// let limiter = AdaptiveLimiter::with_clock(config, clock.clone());
/// let a = limiter.try_acquire()?;
/// let b = limiter.try_acquire()?;
/// assert!(matches!(limiter.try_acquire(), Err(ResilienceError::ConcurrencyLimited { limit: 2, .. })));
/// clock.advance(Duration::from_millis(20));
/// a.record_success(); // 20 ms: fast, with the limit in use: the limit grows
/// drop(b);
/// assert_eq!(limiter.limit(), 3);
/// # Ok::<(), ResilienceError>(())
/// ```
pub struct AdaptiveLimiter<C = SystemClock> {
    /// Written by every call: in flight, and the open window's latency sum and count.
    hot: CachePadded<Hot>,
    /// Read by every call, written once per window.
    cold: CachePadded<Cold>,
    rejected: CachePadded<AtomicU64>,
    estimator: Mutex<LimitEstimator>,
    config: AdaptiveConfig,
    metrics: Option<Metrics>,
    clock: C,
}

struct Hot {
    in_flight: AtomicU32,
    window_sum_ns: AtomicU64,
    window_count: AtomicU64,
}

struct Cold {
    limit: AtomicU32,
    window_end_ns: AtomicU64,
    window_in_flight_max: AtomicU32,
    window_dropped: AtomicBool,
    latency_ns: AtomicU64,
}

struct Metrics {
    limit: metrics::Gauge,
    in_flight: metrics::Gauge,
    rejections: metrics::Counter,
}

impl<C: Clock> fmt::Debug for AdaptiveLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimiter")
            .field("name", &self.config.name)
            .field("algorithm", &self.config.algorithm)
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

/// A snapshot of an [`AdaptiveLimiter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdaptiveStats {
    /// The current limit.
    pub limit: u32,
    /// Calls in flight now.
    pub in_flight: u32,
    /// Calls rejected since the limiter was made.
    pub rejected: u64,
    /// The average latency of the last closed window (zero before the first).
    pub latency: Duration,
}

impl AdaptiveLimiter<SystemClock> {
    /// A limiter on the system clock.
    #[must_use]
    pub fn new(config: AdaptiveConfig) -> Self {
        Self::with_clock(config, SystemClock::new())
    }
}

impl<C: Clock> AdaptiveLimiter<C> {
    /// A limiter reading time from `clock`.
    #[must_use]
    pub fn with_clock(config: AdaptiveConfig, clock: C) -> Self {
        let now = clock.monotonic().as_nanos();
        let metrics = config.metrics.then(|| {
            let name = config.name.clone();
            Metrics {
                limit: metrics::gauge!("adaptive_limit", "name" => name.clone()),
                in_flight: metrics::gauge!("adaptive_in_flight", "name" => name.clone()),
                rejections: metrics::counter!("adaptive_rejections_total", "name" => name),
            }
        });
        if let Some(m) = &metrics {
            m.limit.set(f64::from(config.initial_limit));
        }
        AdaptiveLimiter {
            hot: CachePadded::new(Hot {
                in_flight: AtomicU32::new(0),
                window_sum_ns: AtomicU64::new(0),
                window_count: AtomicU64::new(0),
            }),
            cold: CachePadded::new(Cold {
                limit: AtomicU32::new(config.initial_limit),
                window_end_ns: AtomicU64::new(
                    now.saturating_add(duration_nanos(config.window_min)),
                ),
                window_in_flight_max: AtomicU32::new(0),
                window_dropped: AtomicBool::new(false),
                latency_ns: AtomicU64::new(0),
            }),
            rejected: CachePadded::new(AtomicU64::new(0)),
            estimator: Mutex::new(LimitEstimator::new(&config)),
            config,
            metrics,
            clock,
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &AdaptiveConfig {
        &self.config
    }

    /// The current limit.
    #[must_use]
    pub fn limit(&self) -> u32 {
        self.cold.limit.load(Ordering::Relaxed)
    }

    /// Calls in flight now.
    #[must_use]
    pub fn in_flight(&self) -> u32 {
        self.hot.in_flight.load(Ordering::Relaxed)
    }

    /// A snapshot of the limit, the calls in flight, the rejections and the latency.
    #[must_use]
    pub fn stats(&self) -> AdaptiveStats {
        AdaptiveStats {
            limit: self.limit(),
            in_flight: self.in_flight(),
            rejected: self.rejected.load(Ordering::Relaxed),
            latency: self.latency(),
        }
    }

    /// The average latency of the last closed window (zero before the first): the
    /// retry-after hint of a rejection.
    #[must_use]
    pub fn latency(&self) -> Duration {
        Duration::from_nanos(self.cold.latency_ns.load(Ordering::Relaxed))
    }

    /// Takes a slot if fewer than [`limit`](Self::limit) calls are in flight. The permit
    /// times the call; record its outcome on it (dropping it counts as a success).
    ///
    /// # Errors
    ///
    /// [`ResilienceError::ConcurrencyLimited`] when the limit is reached.
    pub fn try_acquire(&self) -> Result<AdaptivePermit<'_, C>, ResilienceError> {
        let start = self.admit(|limit| limit)?;
        Ok(AdaptivePermit {
            limiter: self,
            start,
            outcome: Outcome::Success,
        })
    }

    /// [`try_acquire`](Self::try_acquire) for a shared limiter: the permit holds an
    /// `Arc` (for tower services and futures that outlive a borrow).
    ///
    /// # Errors
    ///
    /// [`ResilienceError::ConcurrencyLimited`] when the limit is reached.
    pub fn try_acquire_owned(self: &Arc<Self>) -> Result<OwnedAdaptivePermit<C>, ResilienceError> {
        let start = self.admit(|limit| limit)?;
        Ok(OwnedAdaptivePermit {
            limiter: Arc::clone(self),
            start,
            outcome: Outcome::Success,
        })
    }

    /// Takes a slot below `limit · permille / 1000` without counting a rejection when it
    /// fails (the shedder's queue polls with it).
    pub(crate) fn try_acquire_scaled_quiet(
        self: &Arc<Self>,
        permille: u32,
    ) -> Option<OwnedAdaptivePermit<C>> {
        let start = self.admit_quiet(|limit| {
            let scaled = u64::from(limit) * u64::from(permille) / 1_000;
            u32::try_from(scaled).unwrap_or(u32::MAX).max(1)
        })?;
        Some(OwnedAdaptivePermit {
            limiter: Arc::clone(self),
            start,
            outcome: Outcome::Success,
        })
    }

    /// The limiter's clock.
    pub(crate) fn clock(&self) -> &C {
        &self.clock
    }

    /// Counts a rejection made on this limiter's behalf (by the load shedder).
    pub(crate) fn count_rejection(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.rejections.increment(1);
        }
    }

    fn admit(&self, threshold: impl Fn(u32) -> u32) -> Result<Tick, ResilienceError> {
        self.admit_quiet(threshold).ok_or_else(|| {
            self.count_rejection();
            ResilienceError::ConcurrencyLimited {
                limit: self.limit(),
                retry_after: self.latency(),
            }
        })
    }

    /// Takes a slot if the calls in flight are below `threshold(limit)`.
    #[inline]
    fn admit_quiet(&self, threshold: impl Fn(u32) -> u32) -> Option<Tick> {
        let limit = self.cold.limit.load(Ordering::Relaxed);
        let allowed = threshold(limit);
        let in_flight = &self.hot.in_flight;
        let mut current = in_flight.load(Ordering::Relaxed);
        loop {
            if current >= allowed {
                return None;
            }
            match in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        let max = &self.cold.window_in_flight_max;
        if current + 1 > max.load(Ordering::Relaxed) {
            max.fetch_max(current + 1, Ordering::Relaxed);
        }
        Some(self.clock.monotonic())
    }

    fn release(&self, start: Tick, outcome: Outcome) {
        self.hot.in_flight.fetch_sub(1, Ordering::Release);
        if outcome == Outcome::Ignored {
            return;
        }
        let now = self.clock.monotonic();
        if outcome == Outcome::Dropped {
            self.cold.window_dropped.store(true, Ordering::Relaxed);
        }
        let latency = now.as_nanos().saturating_sub(start.as_nanos()).max(1);
        self.hot.window_sum_ns.fetch_add(latency, Ordering::Relaxed);
        self.hot.window_count.fetch_add(1, Ordering::Relaxed);
        if now.as_nanos() >= self.cold.window_end_ns.load(Ordering::Relaxed) {
            self.close_window(now);
        }
    }

    /// Runs the algorithm on the window that just ended, if this caller gets the lock and
    /// the window holds enough samples.
    fn close_window(&self, now: Tick) {
        let Ok(mut estimator) = self.estimator.try_lock() else {
            return; // Another caller is closing it.
        };
        let cold = &*self.cold;
        if now.as_nanos() < cold.window_end_ns.load(Ordering::Relaxed)
            || self.hot.window_count.load(Ordering::Relaxed)
                < u64::from(self.config.window_samples_min)
        {
            return;
        }
        let count = self.hot.window_count.swap(0, Ordering::Relaxed).max(1);
        let sum = self.hot.window_sum_ns.swap(0, Ordering::Relaxed);
        let in_flight = self.hot.in_flight.load(Ordering::Relaxed);
        let in_flight_max = cold
            .window_in_flight_max
            .swap(in_flight, Ordering::Relaxed)
            .max(in_flight);
        let dropped = cold.window_dropped.swap(false, Ordering::Relaxed);
        let latency_ns = (sum / count).max(1);
        let sample = Sample::new(Duration::from_nanos(latency_ns), in_flight_max, dropped);
        let before = estimator.limit();
        let limit = estimator.on_sample(sample);
        cold.limit.store(limit, Ordering::Relaxed);
        cold.latency_ns.store(latency_ns, Ordering::Relaxed);
        let length = latency_ns.saturating_mul(2).clamp(
            duration_nanos(self.config.window_min),
            duration_nanos(self.config.window_max),
        );
        cold.window_end_ns
            .store(now.as_nanos().saturating_add(length), Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.limit.set(f64::from(limit));
            m.in_flight.set(f64::from(in_flight));
        }
        if limit != before {
            tracing::debug!(
                name = %self.config.name,
                limit,
                before,
                latency_us = latency_ns / 1_000,
                in_flight_max,
                dropped,
                "adaptive limit moved"
            );
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Success,
    Dropped,
    Ignored,
}

impl From<CallOutcome> for Outcome {
    fn from(o: CallOutcome) -> Self {
        match o {
            CallOutcome::Success => Outcome::Success,
            CallOutcome::Failure => Outcome::Dropped,
            CallOutcome::Ignored => Outcome::Ignored,
        }
    }
}

macro_rules! permit_methods {
    () => {
        /// The call succeeded: its latency is a sample. Dropping the permit does the same.
        pub fn record_success(self) {}

        /// The call was dropped: it timed out, or the backend refused it as overloaded.
        /// The window counts as congested (AIMD and Vegas shrink the limit).
        pub fn record_dropped(mut self) {
            self.outcome = Outcome::Dropped;
        }

        /// The call says nothing about the backend's load (a client error, a cancelled
        /// hedge): the slot is freed and no sample is taken.
        pub fn record_ignored(mut self) {
            self.outcome = Outcome::Ignored;
        }

        /// Records a breaker-style outcome: [`CallOutcome::Failure`] counts as dropped.
        pub fn record(mut self, outcome: CallOutcome) {
            self.outcome = outcome.into();
        }
    };
}

/// A slot in an [`AdaptiveLimiter`], timing its call. Record the outcome on it; a permit
/// dropped without one counts as a success (its latency is a sample).
#[must_use = "the slot is released, and the call timed, as soon as the permit is dropped"]
pub struct AdaptivePermit<'a, C: Clock> {
    limiter: &'a AdaptiveLimiter<C>,
    start: Tick,
    outcome: Outcome,
}

impl<C: Clock> AdaptivePermit<'_, C> {
    permit_methods!();
}

impl<C: Clock> Drop for AdaptivePermit<'_, C> {
    fn drop(&mut self) {
        self.limiter.release(self.start, self.outcome);
    }
}

impl<C: Clock> fmt::Debug for AdaptivePermit<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptivePermit")
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}

/// An [`AdaptivePermit`] holding an `Arc` of its limiter.
#[must_use = "the slot is released, and the call timed, as soon as the permit is dropped"]
pub struct OwnedAdaptivePermit<C: Clock> {
    limiter: Arc<AdaptiveLimiter<C>>,
    start: Tick,
    outcome: Outcome,
}

impl<C: Clock> OwnedAdaptivePermit<C> {
    permit_methods!();
}

impl<C: Clock> Drop for OwnedAdaptivePermit<C> {
    fn drop(&mut self) {
        self.limiter.release(self.start, self.outcome);
    }
}

impl<C: Clock> fmt::Debug for OwnedAdaptivePermit<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedAdaptivePermit")
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}
