//! The limit algorithms: sans-IO estimators fed one [`Sample`] per window.
//!
//! Every quantity is an integer: limits are kept in thousandths of a permit, ratios in
//! percent or per mille, latencies in nanoseconds (house rule: no floats outside the
//! statistics crates).

use std::time::Duration;

use metered_clock::duration_nanos;

use crate::error::ResilienceError;

/// Thousandths of a permit per permit: the estimators keep fractional limits.
pub(crate) const MILLI: u64 = 1_000;

/// What the limiter observed during one window: the input of a limit algorithm.
///
/// ```
/// use std::time::Duration;
/// use resilience::Sample;
///
/// let s = Sample::new(Duration::from_millis(12), 40, false);
/// assert_eq!(s.latency(), Duration::from_millis(12));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    latency_ns: u64,
    latency_min_ns: u64,
    inflight_max: u32,
    dropped: bool,
}

impl Sample {
    /// A window whose completed calls took `latency` on average, with at most
    /// `inflight_max` calls in flight at once, and `dropped` if any call was dropped
    /// (timed out, or refused by an overloaded backend).
    #[must_use]
    pub fn new(latency: Duration, inflight_max: u32, dropped: bool) -> Self {
        let latency_ns = duration_nanos(latency).max(1);
        Sample {
            latency_ns,
            latency_min_ns: latency_ns,
            inflight_max,
            dropped,
        }
    }

    /// The same window with the fastest call's latency (by default, the average). Vegas
    /// compares this with the lowest it has seen: jitter moves a window's average, while a
    /// standing queue moves even its fastest call.
    #[must_use]
    pub fn with_latency_min(self, latency_min: Duration) -> Self {
        Sample {
            latency_min_ns: duration_nanos(latency_min).clamp(1, self.latency_ns),
            ..self
        }
    }

    /// The fastest call's latency in the window.
    #[must_use]
    pub fn latency_min(&self) -> Duration {
        Duration::from_nanos(self.latency_min_ns)
    }

    /// The average latency of the window.
    #[must_use]
    pub fn latency(&self) -> Duration {
        Duration::from_nanos(self.latency_ns)
    }

    /// The most calls in flight at once during the window.
    #[must_use]
    pub fn inflight_max(&self) -> u32 {
        self.inflight_max
    }

    /// Whether a call of the window was dropped.
    #[must_use]
    pub fn dropped(&self) -> bool {
        self.dropped
    }
}

/// Additive increase, multiplicative decrease (TCP Reno's congestion window): the limit
/// grows by `increase` per window while calls use at least half of it, and is multiplied
/// by `backoff_percent` / 100 when a call is dropped or the window's latency exceeds
/// `latency_threshold`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Aimd {
    increase: u32,
    backoff_percent: u8,
    latency_threshold: Duration,
}

impl Default for Aimd {
    fn default() -> Self {
        Self::new()
    }
}

impl Aimd {
    /// Increase 1 per window, back off to 90 %, latency threshold 5 s.
    #[must_use]
    pub const fn new() -> Self {
        Aimd {
            increase: 1,
            backoff_percent: 90,
            latency_threshold: Duration::from_secs(5),
        }
    }

    /// Permits added per window without a drop (at least 1).
    #[must_use]
    pub const fn increase(self, increase: u32) -> Self {
        Aimd { increase, ..self }
    }

    /// The share of the limit kept after a drop, in percent (50..=99).
    #[must_use]
    pub const fn backoff_percent(self, backoff_percent: u8) -> Self {
        Aimd {
            backoff_percent,
            ..self
        }
    }

    /// A window whose average latency exceeds this counts as a drop (your latency
    /// objective; not zero).
    #[must_use]
    pub const fn latency_threshold(self, latency_threshold: Duration) -> Self {
        Aimd {
            latency_threshold,
            ..self
        }
    }
}

/// TCP Vegas: estimates the queue as `limit · (1 − rtt_noload / rtt)` and keeps it
/// between α = 3·log10(limit) and β = 6·log10(limit) (Netflix's defaults). `rtt` is the
/// window's fastest call ([`Sample::latency_min`]), `rtt_noload` the lowest of those seen,
/// re-probed every `probe_multiplier · limit` windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vegas {
    smoothing_percent: u8,
    probe_multiplier: u32,
}

impl Default for Vegas {
    fn default() -> Self {
        Self::new()
    }
}

impl Vegas {
    /// No smoothing, a re-probe every 30 · limit windows.
    #[must_use]
    pub const fn new() -> Self {
        Vegas {
            smoothing_percent: 100,
            probe_multiplier: 30,
        }
    }

    /// How much of each new estimate replaces the old limit, in percent (1..=100).
    #[must_use]
    pub const fn smoothing_percent(self, smoothing_percent: u8) -> Self {
        Vegas {
            smoothing_percent,
            ..self
        }
    }

    /// Windows between two re-measurements of the unloaded latency, per permit of limit
    /// (at least 1).
    #[must_use]
    pub const fn probe_multiplier(self, probe_multiplier: u32) -> Self {
        Vegas {
            probe_multiplier,
            ..self
        }
    }
}

/// Netflix's Gradient2: compares the window's latency (short) with an exponential average
/// over `long_window` windows (long). `gradient = clamp(tolerance · long / short, 0.5, 1)`,
/// `new = limit · gradient + queue_size`, smoothed by `smoothing_percent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gradient2 {
    smoothing_percent: u8,
    tolerance_percent: u16,
    queue_size: u32,
    long_window: u32,
}

impl Default for Gradient2 {
    fn default() -> Self {
        Self::new()
    }
}

impl Gradient2 {
    /// Smoothing 20 %, tolerance 100 %, queue size 4, long window 600 windows.
    #[must_use]
    pub const fn new() -> Self {
        Gradient2 {
            smoothing_percent: 20,
            tolerance_percent: 100,
            queue_size: 4,
            long_window: 600,
        }
    }

    /// How much of each new estimate replaces the old limit, in percent (1..=100).
    #[must_use]
    pub const fn smoothing_percent(self, smoothing_percent: u8) -> Self {
        Gradient2 {
            smoothing_percent,
            ..self
        }
    }

    /// How much slower than the long average a window may be before the limit shrinks,
    /// in percent (100..=1000; 150 tolerates 1.5×).
    #[must_use]
    pub const fn tolerance_percent(self, tolerance_percent: u16) -> Self {
        Gradient2 {
            tolerance_percent,
            ..self
        }
    }

    /// Permits the limit may grow by per window while latency stays low.
    #[must_use]
    pub const fn queue_size(self, queue_size: u32) -> Self {
        Gradient2 { queue_size, ..self }
    }

    /// Windows in the long exponential average (at least 10).
    #[must_use]
    pub const fn long_window(self, long_window: u32) -> Self {
        Gradient2 {
            long_window,
            ..self
        }
    }
}

/// Which algorithm moves the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Algorithm {
    /// The limit stays at its initial value (a fixed concurrency limit, for comparison).
    Fixed,
    /// Additive increase, multiplicative decrease.
    Aimd(Aimd),
    /// TCP Vegas queue estimation.
    Vegas(Vegas),
    /// Netflix's Gradient2.
    Gradient2(Gradient2),
}

/// `x` as a `u64`, saturating.
fn narrow(x: u128) -> u64 {
    u64::try_from(x).unwrap_or(u64::MAX)
}

fn invalid(field: &'static str, reason: &'static str) -> ResilienceError {
    ResilienceError::InvalidConfig { field, reason }
}

impl Algorithm {
    pub(crate) fn validate(&self) -> Result<(), ResilienceError> {
        match *self {
            Algorithm::Fixed => {}
            Algorithm::Aimd(a) => {
                if a.increase == 0 {
                    return Err(invalid("aimd.increase", "must be at least 1"));
                }
                if !(50..=99).contains(&a.backoff_percent) {
                    return Err(invalid("aimd.backoff_percent", "must be in 50..=99"));
                }
                if a.latency_threshold.is_zero() {
                    return Err(invalid("aimd.latency_threshold", "must not be zero"));
                }
            }
            Algorithm::Vegas(v) => {
                if !(1..=100).contains(&v.smoothing_percent) {
                    return Err(invalid("vegas.smoothing_percent", "must be in 1..=100"));
                }
                if v.probe_multiplier == 0 {
                    return Err(invalid("vegas.probe_multiplier", "must be at least 1"));
                }
            }
            Algorithm::Gradient2(g) => {
                if !(1..=100).contains(&g.smoothing_percent) {
                    return Err(invalid("gradient2.smoothing_percent", "must be in 1..=100"));
                }
                if !(100..=1_000).contains(&g.tolerance_percent) {
                    return Err(invalid(
                        "gradient2.tolerance_percent",
                        "must be in 100..=1000",
                    ));
                }
                if g.long_window < 10 {
                    return Err(invalid("gradient2.long_window", "must be at least 10"));
                }
            }
        }
        Ok(())
    }
}

/// An algorithm with its state: feed it one [`Sample`] per window, read the new limit.
/// Sans-IO: it reads no clock and keeps no threads; [`AdaptiveLimiter`] drives one, and
/// tests or simulations can drive one directly.
///
/// [`AdaptiveLimiter`]: crate::AdaptiveLimiter
///
/// ```
/// use std::time::Duration;
/// use resilience::{AdaptiveConfig, Algorithm, Gradient2, LimitEstimator, Sample};
///
/// let config = AdaptiveConfig::builder()
///     .algorithm(Algorithm::Gradient2(Gradient2::new()))
///     .initial_limit(20)
///     .build()?;
/// let mut estimator = LimitEstimator::new(&config);
/// for _ in 0..50 {
///     estimator.on_sample(Sample::new(Duration::from_millis(10), 20, false)); // no queueing
/// }
/// assert!(estimator.limit() > 20);
/// let before = estimator.limit();
/// for _ in 0..10 {
///     estimator.on_sample(Sample::new(Duration::from_millis(30), before, false)); // 3× slower
/// }
/// assert!(estimator.limit() < before);
/// # Ok::<(), resilience::ResilienceError>(())
/// ```
#[derive(Clone, Debug)]
pub struct LimitEstimator {
    algorithm: Algorithm,
    limit_milli: u64,
    min_milli: u64,
    max_milli: u64,
    /// Vegas: the lowest window latency; Gradient2: the long average (ns).
    baseline_ns: u64,
    /// Vegas: windows since the last probe; Gradient2: samples in the long average.
    count: u64,
}

impl LimitEstimator {
    /// An estimator starting at the config's initial limit.
    #[must_use]
    pub fn new(config: &super::AdaptiveConfig) -> Self {
        LimitEstimator {
            algorithm: config.algorithm,
            limit_milli: u64::from(config.initial_limit) * MILLI,
            min_milli: u64::from(config.min_limit) * MILLI,
            max_milli: u64::from(config.max_limit) * MILLI,
            baseline_ns: 0,
            count: 0,
        }
    }

    /// The current limit, in whole permits (at least the configured minimum).
    #[must_use]
    pub fn limit(&self) -> u32 {
        u32::try_from(self.limit_milli / MILLI).unwrap_or(u32::MAX)
    }

    /// Moves the limit by one window's observations; returns the new limit.
    pub fn on_sample(&mut self, sample: Sample) -> u32 {
        let next = match self.algorithm {
            Algorithm::Fixed => None,
            Algorithm::Aimd(a) => self.aimd(a, sample),
            Algorithm::Vegas(v) => self.vegas(v, sample),
            Algorithm::Gradient2(g) => self.gradient2(g, sample),
        };
        if let Some(next) = next {
            self.limit_milli = next.clamp(self.min_milli, self.max_milli);
        }
        self.limit()
    }

    fn app_limited(&self, sample: Sample) -> bool {
        u64::from(sample.inflight_max) * 2 * MILLI < self.limit_milli
    }

    fn aimd(&self, a: Aimd, s: Sample) -> Option<u64> {
        if s.dropped || s.latency_ns > duration_nanos(a.latency_threshold) {
            Some(self.limit_milli * u64::from(a.backoff_percent) / 100)
        } else if self.app_limited(s) {
            None
        } else {
            Some(self.limit_milli + u64::from(a.increase) * MILLI)
        }
    }

    fn vegas(&mut self, v: Vegas, s: Sample) -> Option<u64> {
        self.count += 1;
        let limit = self.limit_milli / MILLI;
        // Netflix probes after a jittered 0.5..1 × multiplier × limit windows; a fixed
        // 3/4 keeps the estimator deterministic.
        if self.count * 4 >= 3 * u64::from(v.probe_multiplier) * limit.max(1) {
            self.count = 0;
            self.baseline_ns = s.latency_min_ns;
            return None;
        }
        if self.baseline_ns == 0 || s.latency_min_ns < self.baseline_ns {
            self.baseline_ns = s.latency_min_ns;
            return None;
        }
        let log = u64::from(limit.max(1).ilog10()).max(1) * MILLI;
        // queue = ceil(limit · (1 − noload / rtt)), in permits.
        let queue = (u128::from(self.limit_milli)
            * u128::from(s.latency_min_ns - self.baseline_ns))
        .div_ceil(u128::from(s.latency_min_ns) * u128::from(MILLI));
        let queue = narrow(queue).saturating_mul(MILLI);
        let next = if s.dropped {
            self.limit_milli.saturating_sub(log)
        } else if self.app_limited(s) {
            return None;
        } else if queue <= log {
            self.limit_milli + 6 * log
        } else if queue < 3 * log {
            self.limit_milli + log
        } else if queue > 6 * log {
            self.limit_milli.saturating_sub(log)
        } else {
            return None;
        };
        let smoothing = u64::from(v.smoothing_percent);
        Some((self.limit_milli * (100 - smoothing) + next * smoothing) / 100)
    }

    fn gradient2(&mut self, g: Gradient2, s: Sample) -> Option<u64> {
        let short = s.latency_ns;
        // The long average: a plain mean over the first 10 windows, then an exponential
        // average with factor 2 / (long_window + 1).
        self.count += 1;
        if self.count <= 10 {
            self.baseline_ns = narrow(
                (u128::from(self.baseline_ns) * u128::from(self.count - 1) + u128::from(short))
                    / u128::from(self.count),
            );
        } else {
            let n = u128::from(g.long_window) + 1;
            self.baseline_ns =
                narrow((u128::from(self.baseline_ns) * (n - 2) + u128::from(short) * 2) / n);
        }
        // Latency back to normal after a long overload: pull the long average down.
        if self.baseline_ns > 2 * short {
            self.baseline_ns = self.baseline_ns * 9 / 10;
        }
        if self.app_limited(s) {
            return None;
        }
        let gradient_permille = narrow(
            (u128::from(g.tolerance_percent) * u128::from(self.baseline_ns) * 10
                / u128::from(short))
            .clamp(500, 1_000),
        );
        let next = self.limit_milli * gradient_permille / 1_000 + u64::from(g.queue_size) * MILLI;
        let smoothing = u64::from(g.smoothing_percent);
        Some((self.limit_milli * (100 - smoothing) + next * smoothing) / 100)
    }
}
