//! Hedged requests: when a call is slower than most (its latency passes a quantile of
//! recent latencies), send a second attempt and take whichever answers first; the loser
//! is cancelled (dropped). A budget bounds the extra load: each request deposits
//! `budget_percent` % of an attempt, each hedge withdraws a whole one.
//!
//! The decision part ([`Hedge::delay`], [`Hedge::try_spend`], [`Hedge::record`]) is
//! sans-IO; [`Hedge::call`] is the driver, waiting through a [`Sleeper`].

#[cfg(feature = "tower")]
mod layer;

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use hdrhistogram::Histogram;
use metered_clock::{Clock, SystemClock, Tick, duration_nanos};

#[cfg(feature = "tower")]
pub use self::layer::{HedgeLayer, HedgeService};
use crate::error::ResilienceError;
use crate::sleep::Sleeper;
use crate::sync::Mutex;
use crate::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Latencies above this are recorded as this (microseconds).
const LATENCY_MAX_US: u64 = 3_600_000_000;

/// A validated hedging policy; build it with [`HedgeConfig::builder`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HedgeConfig {
    quantile_permille: u16,
    budget_percent: u8,
    samples_min: u32,
    period: Duration,
    delay_min: Duration,
}

impl HedgeConfig {
    /// Defaults: hedge at p95, budget 5 %, at least 100 samples, a 10 s histogram period,
    /// no hedge sooner than 1 ms.
    pub fn builder() -> HedgeConfigBuilder {
        HedgeConfigBuilder {
            config: HedgeConfig {
                quantile_permille: 950,
                budget_percent: 5,
                samples_min: 100,
                period: Duration::from_secs(10),
                delay_min: Duration::from_millis(1),
            },
        }
    }
}

/// Builds a [`HedgeConfig`]; [`build`](Self::build) validates it.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct HedgeConfigBuilder {
    config: HedgeConfig,
}

impl HedgeConfigBuilder {
    /// The latency quantile after which a hedge is sent, in per mille (500..=999; 950 is
    /// p95).
    pub fn quantile_permille(mut self, permille: u16) -> Self {
        self.config.quantile_permille = permille;
        self
    }

    /// Extra attempts allowed, as a share of requests, in percent (1..=100).
    pub fn budget_percent(mut self, percent: u8) -> Self {
        self.config.budget_percent = percent;
        self
    }

    /// No hedging until the histogram holds this many latencies (at least 1).
    pub fn samples_min(mut self, samples: u32) -> Self {
        self.config.samples_min = samples;
        self
    }

    /// Latencies are kept for one to two periods: the histogram is rotated every period
    /// (not zero).
    pub fn period(mut self, period: Duration) -> Self {
        self.config.period = period;
        self
    }

    /// Never hedge sooner than this after the first attempt.
    pub fn delay_min(mut self, delay: Duration) -> Self {
        self.config.delay_min = delay;
        self
    }

    /// Checks every setting.
    ///
    /// # Errors
    ///
    /// [`ResilienceError::InvalidConfig`] naming the first invalid setting.
    pub fn build(self) -> Result<HedgeConfig, ResilienceError> {
        let c = self.config;
        let invalid = |field, reason| Err(ResilienceError::InvalidConfig { field, reason });
        if !(500..=999).contains(&c.quantile_permille) {
            return invalid("quantile_permille", "must be in 500..=999");
        }
        if !(1..=100).contains(&c.budget_percent) {
            return invalid("budget_percent", "must be in 1..=100");
        }
        if c.samples_min == 0 {
            return invalid("samples_min", "must be at least 1");
        }
        if c.period.is_zero() {
            return invalid("period", "must not be zero");
        }
        Ok(c)
    }
}

/// Decides when to hedge and whether the budget allows it. Cheap to clone: clones share
/// the histogram and the budget.
///
/// ```
/// use std::time::Duration;
/// use metered_clock::{ManualClock, Timestamp};
/// use resilience::{Hedge, HedgeConfig};
///
/// let clock = ManualClock::new(Timestamp::EPOCH);
/// let hedge = Hedge::with_clock(HedgeConfig::builder().samples_min(100).build()?, clock);
/// assert_eq!(hedge.delay(), None); // no data yet: never hedge
/// for i in 0..100u64 {
///     hedge.record(Duration::from_millis(10 + i % 10));
/// }
/// let delay = hedge.delay().unwrap(); // about p95 of the recorded latencies
/// assert!(delay >= Duration::from_millis(18) && delay <= Duration::from_millis(20));
/// for _ in 0..20 {
///     hedge.deposit(); // 20 requests at 5 %: one hedge
/// }
/// assert!(hedge.try_spend());
/// assert!(!hedge.try_spend());
/// # Ok::<(), resilience::ResilienceError>(())
/// ```
pub struct Hedge<C = SystemClock> {
    inner: Arc<Inner<C>>,
}

impl<C> Clone for Hedge<C> {
    fn clone(&self) -> Self {
        Hedge {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C> fmt::Debug for Hedge<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge")
            .field("config", &self.inner.config)
            .field("delay_ns", &self.inner.delay_ns.load(Ordering::Relaxed))
            .field("hedges", &self.inner.hedges.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

struct Inner<C> {
    config: HedgeConfig,
    histograms: Mutex<Rotating>,
    /// The cached delay in ns; 0 until enough samples.
    delay_ns: AtomicU64,
    /// Thousandths of an attempt.
    balance: AtomicI64,
    requests: AtomicU64,
    hedges: AtomicU64,
    clock: C,
}

struct Rotating {
    current: Histogram<u64>,
    previous: Histogram<u64>,
    rotated_at: Tick,
    since_refresh: u32,
}

/// Most hedges the budget can save up (so a quiet spell does not allow a burst).
const BALANCE_MAX_MILLI: i64 = 100_000;

impl Hedge<SystemClock> {
    /// A hedging policy on the system clock.
    #[must_use]
    pub fn new(config: HedgeConfig) -> Self {
        Self::with_clock(config, SystemClock::new())
    }
}

impl<C: Clock> Hedge<C> {
    /// A hedging policy reading time from `clock` (for the histogram's rotation and the
    /// driver's timing).
    #[must_use]
    pub fn with_clock(config: HedgeConfig, clock: C) -> Self {
        let histogram =
            || Histogram::new_with_bounds(1, LATENCY_MAX_US, 2).expect("constant bounds are valid");
        Hedge {
            inner: Arc::new(Inner {
                config,
                histograms: Mutex::new(Rotating {
                    current: histogram(),
                    previous: histogram(),
                    rotated_at: clock.monotonic(),
                    since_refresh: 0,
                }),
                delay_ns: AtomicU64::new(0),
                balance: AtomicI64::new(0),
                requests: AtomicU64::new(0),
                hedges: AtomicU64::new(0),
                clock,
            }),
        }
    }

    /// How long to wait for the first attempt before hedging: the configured quantile of
    /// recent latencies (at least `delay_min`), or `None` while there are too few.
    #[must_use]
    pub fn delay(&self) -> Option<Duration> {
        match self.inner.delay_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Records one attempt's latency.
    pub fn record(&self, latency: Duration) {
        let us = (duration_nanos(latency) / 1_000).clamp(1, LATENCY_MAX_US);
        let now = self.inner.clock.monotonic();
        let Ok(mut h) = self.inner.histograms.lock() else {
            return;
        };
        if now.saturating_duration_since(h.rotated_at) >= self.inner.config.period {
            let Rotating {
                current, previous, ..
            } = &mut *h;
            std::mem::swap(current, previous);
            current.reset();
            h.rotated_at = now;
            h.since_refresh = u32::MAX - 1; // Refresh now.
        }
        h.current.saturating_record(us);
        h.since_refresh = h.since_refresh.saturating_add(1);
        if h.since_refresh >= 64 || h.current.len() < 1_024 {
            h.since_refresh = 0;
            let c = &self.inner.config;
            let quantile = f64::from(c.quantile_permille) / 1_000.0;
            let samples_min = u64::from(c.samples_min);
            let us = if h.current.len() >= samples_min && h.current.len() >= h.previous.len() / 2 {
                Some(h.current.value_at_quantile(quantile))
            } else if h.previous.len() >= samples_min {
                Some(h.previous.value_at_quantile(quantile))
            } else {
                None
            };
            let ns = us.map_or(0, |us| {
                (us.saturating_mul(1_000))
                    .max(duration_nanos(c.delay_min))
                    .max(1)
            });
            self.inner.delay_ns.store(ns, Ordering::Relaxed);
        }
    }

    /// A request arrived: it earns `budget_percent` % of a hedge.
    pub fn deposit(&self) {
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        let add = i64::from(self.inner.config.budget_percent) * 10;
        let _ = self
            .inner
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((b + add).min(BALANCE_MAX_MILLI))
            });
    }

    /// Takes one hedge from the budget, if it holds one.
    #[must_use]
    pub fn try_spend(&self) -> bool {
        let spent = self
            .inner
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= 1_000).then_some(b - 1_000)
            })
            .is_ok();
        if spent {
            self.inner.hedges.fetch_add(1, Ordering::Relaxed);
        }
        spent
    }

    /// Requests seen and hedges sent so far.
    #[must_use]
    pub fn counts(&self) -> (u64, u64) {
        (
            self.inner.requests.load(Ordering::Relaxed),
            self.inner.hedges.load(Ordering::Relaxed),
        )
    }

    /// Runs `attempt(0)`; if it has not finished after [`delay`](Self::delay) and the
    /// budget allows, also runs `attempt(1)`, and returns whichever finishes first (the
    /// other is dropped, i.e. cancelled). Records the latency of each attempt that
    /// finishes.
    pub async fn call<S, F, Fut>(&self, sleeper: &S, mut attempt: F) -> Fut::Output
    where
        S: Sleeper + ?Sized,
        F: FnMut(u32) -> Fut,
        Fut: Future,
    {
        self.deposit();
        let clock = &self.inner.clock;
        let start = clock.monotonic();
        let mut first = pin!(attempt(0));
        let Some(delay) = self.delay() else {
            let out = first.await;
            self.record(clock.monotonic().saturating_duration_since(start));
            return out;
        };
        let mut timer = pin!(sleeper.sleep(delay));
        let early = poll_fn(|cx| {
            if let Poll::Ready(out) = first.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            timer.as_mut().poll(cx).map(|()| None)
        })
        .await;
        if let Some(out) = early {
            self.record(clock.monotonic().saturating_duration_since(start));
            return out;
        }
        if !self.try_spend() {
            let out = first.await;
            self.record(clock.monotonic().saturating_duration_since(start));
            return out;
        }
        let second_start = clock.monotonic();
        let mut second = pin!(attempt(1));
        poll_fn(|cx| {
            if let Poll::Ready(out) = first.as_mut().poll(cx) {
                self.record(clock.monotonic().saturating_duration_since(start));
                return Poll::Ready(out);
            }
            if let Poll::Ready(out) = second.as_mut().poll(cx) {
                self.record(clock.monotonic().saturating_duration_since(second_start));
                return Poll::Ready(out);
            }
            Poll::Pending
        })
        .await
    }
}
