//! GCRA rate limiting: a direct limiter in one atomic, and a keyed limiter (one bucket per
//! key, bounded memory).
//!
//! GCRA (the generic cell rate algorithm) is a token bucket kept as a single number, the
//! *theoretical arrival time* (TAT): the instant the bucket would be full again. A request
//! for `n` permits at `now` is granted when `max(TAT, now) + n·T − now ≤ burst·T` (with `T`
//! the interval between permits), and then moves TAT forward by `n·T`. One compare-and-swap,
//! no background refill, no allocation.

mod keyed;
#[cfg(feature = "tower")]
mod layer;
#[cfg(feature = "redis")]
mod shared;

use std::time::Duration;

use crossbeam_utils::CachePadded;
use metered_clock::{Clock, SystemClock, duration_nanos};

pub use self::keyed::KeyedRateLimiter;
#[cfg(feature = "tower")]
pub use self::layer::{
    KeyedRateLimitLayer, KeyedRateLimitService, RateLimitLayer, RateLimitService,
};
#[cfg(feature = "redis")]
pub use self::shared::{
    Decision, DecisionPath, REDIS_PREFIX_LEN_MAX, REDIS_TIMEOUT_MAX, RedisRateLimiter,
    RedisRateLimiterBuilder, RedisTime,
};
use crate::error::ResilienceError;
use crate::sleep::Sleeper;
use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// A validated rate: one permit every `interval`, up to `burst` at once.
///
/// ```
/// use std::time::Duration;
/// use resilience::Quota;
///
/// let q = Quota::per_second(50)?.with_burst(10)?;
/// assert_eq!(q.interval(), Duration::from_millis(20));
/// assert_eq!(q.burst(), 10);
/// assert!(Quota::per_second(0).is_err());
/// # Ok::<(), resilience::ResilienceError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    interval_ns: u64,
    burst: u32,
}

impl Quota {
    /// `permits` per second, with a burst of `permits`.
    ///
    /// # Errors
    ///
    /// [`ResilienceError::InvalidConfig`] if `permits` is zero or above 10⁹ (one per nanosecond).
    pub fn per_second(permits: u32) -> Result<Quota, ResilienceError> {
        Self::per(Duration::from_secs(1), permits)
    }

    /// `permits` per minute, with a burst of `permits`.
    ///
    /// # Errors
    ///
    /// [`ResilienceError::InvalidConfig`] if `permits` is zero.
    pub fn per_minute(permits: u32) -> Result<Quota, ResilienceError> {
        Self::per(Duration::from_secs(60), permits)
    }

    /// `permits` per `period`, with a burst of `permits`. The interval between permits is
    /// rounded up to a whole nanosecond, so the limiter never grants more than asked.
    ///
    /// # Errors
    ///
    /// [`ResilienceError::InvalidConfig`] if `permits` is zero or `period / permits` is under 1 ns.
    pub fn per(period: Duration, permits: u32) -> Result<Quota, ResilienceError> {
        if permits == 0 {
            return Err(ResilienceError::InvalidConfig {
                field: "permits",
                reason: "must be at least 1",
            });
        }
        let period_ns = duration_nanos(period);
        if period_ns < u64::from(permits) {
            return Err(ResilienceError::InvalidConfig {
                field: "permits",
                reason: "at most one permit per nanosecond",
            });
        }
        Ok(Quota {
            interval_ns: period_ns.div_ceil(u64::from(permits)),
            burst: permits,
        })
    }

    /// One permit every `interval`, with a burst of 1.
    ///
    /// # Errors
    ///
    /// [`ResilienceError::InvalidConfig`] if `interval` is zero.
    pub fn with_period(interval: Duration) -> Result<Quota, ResilienceError> {
        Self::per(interval, 1)
    }

    /// The same rate with another burst.
    ///
    /// # Errors
    ///
    /// [`ResilienceError::InvalidConfig`] if `burst` is zero.
    pub fn with_burst(self, burst: u32) -> Result<Quota, ResilienceError> {
        if burst == 0 {
            return Err(ResilienceError::InvalidConfig {
                field: "burst",
                reason: "must be at least 1",
            });
        }
        Ok(Quota { burst, ..self })
    }

    /// The time between two permits at the sustained rate.
    #[must_use]
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_ns)
    }

    /// How many permits can be granted at once.
    #[must_use]
    pub fn burst(&self) -> u32 {
        self.burst
    }
}

/// The GCRA step on one TAT cell: grants `n` permits or says when they will be available.
#[inline]
pub(crate) fn gcra(
    tat: &AtomicU64,
    now: u64,
    interval_ns: u64,
    burst: u32,
    n: u32,
) -> Result<(), ResilienceError> {
    if n > burst {
        return Err(ResilienceError::InsufficientCapacity {
            requested: n,
            burst,
        });
    }
    let increment = interval_ns.saturating_mul(u64::from(n));
    let tolerance = interval_ns.saturating_mul(u64::from(burst));
    let mut current = tat.load(Ordering::Relaxed);
    loop {
        let next = current.max(now).saturating_add(increment);
        if next - now > tolerance {
            return Err(ResilienceError::RateLimited {
                retry_after: Duration::from_nanos(next - tolerance - now),
            });
        }
        match tat.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return Ok(()),
            Err(actual) => current = actual,
        }
    }
}

/// Permits available now in a cell (0..=burst).
fn remaining(tat: u64, now: u64, interval_ns: u64, burst: u32) -> u32 {
    let tolerance = interval_ns.saturating_mul(u64::from(burst));
    let debt = tat.saturating_sub(now);
    let free = tolerance.saturating_sub(debt) / interval_ns.max(1);
    u32::try_from(free).unwrap_or(burst).min(burst)
}

/// Time until `n` permits are available in a cell.
fn wait_for(tat: u64, now: u64, interval_ns: u64, burst: u32, n: u32) -> Duration {
    let tolerance = interval_ns.saturating_mul(u64::from(burst));
    let next = tat
        .max(now)
        .saturating_add(interval_ns.saturating_mul(u64::from(n)));
    Duration::from_nanos(next.saturating_sub(tolerance).saturating_sub(now))
}

/// A rate limiter for one resource: GCRA in a single `AtomicU64`.
///
/// Each call reads the clock once; on a hot path prefer a clock with cheap monotonic reads
/// (`QuantaClock`, feature `quanta`) over [`SystemClock`], whose `clock_gettime` can cost
/// several times the rest of the decision on a virtual machine.
///
/// ```
/// use std::time::Duration;
/// use metered_clock::{ManualClock, Timestamp};
/// use resilience::{ResilienceError, Quota, RateLimiter};
///
/// let clock = ManualClock::new(Timestamp::EPOCH);
/// let limiter = RateLimiter::with_clock(Quota::per_second(10)?.with_burst(2)?, clock.clone());
/// limiter.try_acquire(2)?;
/// assert_eq!(limiter.try_acquire(1), Err(ResilienceError::RateLimited { retry_after: Duration::from_millis(100) }));
/// clock.advance(Duration::from_millis(100));
/// limiter.try_acquire(1)?;
/// # Ok::<(), resilience::ResilienceError>(())
/// ```
#[derive(Debug)]
pub struct RateLimiter<C = SystemClock> {
    tat: CachePadded<AtomicU64>,
    interval_ns: AtomicU64,
    burst: AtomicU32,
    clock: C,
}

impl RateLimiter<SystemClock> {
    /// A limiter on the operating system's clock.
    #[must_use]
    pub fn new(quota: Quota) -> Self {
        Self::with_clock(quota, SystemClock::new())
    }
}

impl<C: Clock> RateLimiter<C> {
    /// A limiter reading time from `clock`. It starts full (a whole burst is available).
    #[must_use]
    pub fn with_clock(quota: Quota, clock: C) -> Self {
        RateLimiter {
            tat: CachePadded::new(AtomicU64::new(0)),
            interval_ns: AtomicU64::new(quota.interval_ns),
            burst: AtomicU32::new(quota.burst),
            clock,
        }
    }

    /// The quota in force.
    #[must_use]
    pub fn quota(&self) -> Quota {
        Quota {
            interval_ns: self.interval_ns.load(Ordering::Relaxed),
            burst: self.burst.load(Ordering::Relaxed),
        }
    }

    /// Changes the rate and burst from now on. Permits already granted stay granted: a
    /// lower rate applies to the debt they left.
    ///
    /// The two halves of the quota are stored separately, so a call racing with this one
    /// may see the new interval with the old burst (one decision, never a corrupted state).
    pub fn set_quota(&self, quota: Quota) {
        self.interval_ns.store(quota.interval_ns, Ordering::Relaxed);
        self.burst.store(quota.burst, Ordering::Relaxed);
    }

    /// Takes `n` permits now, or fails without waiting. `n == 0` always succeeds.
    ///
    /// # Errors
    ///
    /// [`ResilienceError::RateLimited`] with the time until `n` permits are available, or
    /// [`ResilienceError::InsufficientCapacity`] if `n` exceeds the burst (it never will be).
    #[inline]
    pub fn try_acquire(&self, n: u32) -> Result<(), ResilienceError> {
        let now = self.clock.monotonic().as_nanos();
        gcra(
            &self.tat,
            now,
            self.interval_ns.load(Ordering::Relaxed),
            self.burst.load(Ordering::Relaxed),
            n,
        )
    }

    /// Takes `n` permits, sleeping on `sleeper` while they are not available, for at most
    /// `max_wait`. Gives up at once if the permits will not be available in time, so a
    /// caller over its deadline does not sleep for nothing.
    ///
    /// # Errors
    ///
    /// [`ResilienceError::RateLimited`] if `n` permits are not available within `max_wait`;
    /// [`ResilienceError::InsufficientCapacity`] if `n` exceeds the burst.
    pub async fn acquire<S: Sleeper + ?Sized>(
        &self,
        n: u32,
        max_wait: Duration,
        sleeper: &S,
    ) -> Result<(), ResilienceError> {
        let start = self.clock.monotonic();
        loop {
            match self.try_acquire(n) {
                Err(ResilienceError::RateLimited { retry_after }) => {
                    let waited = self.clock.monotonic().saturating_duration_since(start);
                    if waited.saturating_add(retry_after) > max_wait {
                        return Err(ResilienceError::RateLimited { retry_after });
                    }
                    sleeper.sleep(retry_after).await;
                }
                other => return other,
            }
        }
    }

    /// Permits that [`try_acquire`](Self::try_acquire) could take right now.
    #[must_use]
    pub fn remaining(&self) -> u32 {
        let q = self.quota();
        remaining(
            self.tat.load(Ordering::Acquire),
            self.clock.monotonic().as_nanos(),
            q.interval_ns,
            q.burst,
        )
    }

    /// Time until `n` permits are available (zero if they are now).
    #[must_use]
    pub fn time_until_available(&self, n: u32) -> Duration {
        let q = self.quota();
        wait_for(
            self.tat.load(Ordering::Acquire),
            self.clock.monotonic().as_nanos(),
            q.interval_ns,
            q.burst,
            n,
        )
    }
}
