//! Backoff policies: how long to wait before each retry. Sans-IO: they return a
//! [`Duration`] and never sleep.
//!
//! The jitter modes are those of AWS's "Exponential Backoff and Jitter", with
//! `ceiling(n) = min(cap, base · multiplier^n)` for the `n`-th retry (0-based):
//!
//! | mode | delay |
//! |---|---|
//! | [`Jitter::None`] | `ceiling(n)` |
//! | [`Jitter::Full`] | uniform in `0..=ceiling(n)` |
//! | [`Jitter::Equal`] | `ceiling(n)/2` + uniform in `0..=ceiling(n)/2` |
//! | [`Jitter::Decorrelated`] | uniform in `base..=min(cap, 3 · previous)` (previous starts at `base`) |

use std::time::Duration;

use metered_clock::{Tick, duration_nanos};
use rand::Rng;

use crate::error::ResilienceError;

/// How a delay is randomised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Jitter {
    /// No randomness: every client waits the same time (and retries in lockstep).
    None,
    /// Anywhere from zero to the ceiling: fewest calls under contention.
    Full,
    /// At least half the ceiling, plus up to another half.
    Equal,
    /// Grows from the previous delay: between `base` and three times the previous delay.
    Decorrelated,
}

/// A validated backoff policy. Build one with [`Backoff::exponential`] or
/// [`Backoff::constant`].
///
/// ```
/// use std::time::Duration;
/// use rand::{SeedableRng, rngs::StdRng};
/// use metered_clock::Tick;
/// use resilience::{Backoff, Jitter};
///
/// let policy = Backoff::exponential(Duration::from_millis(10))
///     .cap(Duration::from_secs(1))
///     .jitter(Jitter::Full)
///     .max_attempts(4)
///     .build()?;
/// let mut rng = StdRng::seed_from_u64(7);
/// let mut schedule = policy.schedule(Tick::ZERO);
/// let mut delays = Vec::new();
/// while let Some(d) = schedule.next_delay(Tick::ZERO, None, &mut rng) {
///     delays.push(d);
/// }
/// assert_eq!(delays.len(), 3); // 4 attempts = 3 retries
/// assert!(delays.iter().zip([10, 20, 40]).all(|(d, ms)| *d <= Duration::from_millis(ms)));
/// # Ok::<(), resilience::ResilienceError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    base_ns: u64,
    cap_ns: u64,
    multiplier: u32,
    jitter: Jitter,
    max_attempts: u32,
    max_elapsed: Option<Duration>,
}

/// Builder for [`Backoff`]; [`build`](Self::build) validates every setting.
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct BackoffBuilder {
    base: Duration,
    cap: Option<Duration>,
    multiplier: u32,
    jitter: Jitter,
    max_attempts: u32,
    max_elapsed: Option<Duration>,
}

/// Default cap on a single delay when none is set (or `base`, if longer).
const DEFAULT_CAP: Duration = Duration::from_secs(30);
/// Most attempts a policy may allow.
const MAX_ATTEMPTS_LIMIT: u32 = 1_000;

impl Backoff {
    /// Delays starting at `base` and multiplied by 2 after each retry (see
    /// [`BackoffBuilder::multiplier`]). Defaults: full jitter, a cap of 30 s (or `base` if
    /// longer), 3 attempts, no total-time limit.
    pub fn exponential(base: Duration) -> BackoffBuilder {
        BackoffBuilder {
            base,
            cap: None,
            multiplier: 2,
            jitter: Jitter::Full,
            max_attempts: 3,
            max_elapsed: None,
        }
    }

    /// The same delay before every retry; no jitter unless set. 3 attempts by default.
    pub fn constant(delay: Duration) -> BackoffBuilder {
        BackoffBuilder {
            base: delay,
            cap: Some(delay),
            multiplier: 1,
            jitter: Jitter::None,
            max_attempts: 3,
            max_elapsed: None,
        }
    }

    /// The longest single delay (before any retry-after hint).
    #[must_use]
    pub fn cap(&self) -> Duration {
        Duration::from_nanos(self.cap_ns)
    }

    /// The most calls (first attempt included) a schedule allows.
    #[must_use]
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The jitter mode.
    #[must_use]
    pub fn jitter_mode(&self) -> Jitter {
        self.jitter
    }

    /// The un-jittered delay before retry `retry` (0-based): `min(cap, base·multiplier^retry)`.
    #[must_use]
    pub fn ceiling(&self, retry: u32) -> Duration {
        Duration::from_nanos(self.ceiling_ns(retry))
    }

    fn ceiling_ns(&self, retry: u32) -> u64 {
        let factor = u64::from(self.multiplier)
            .checked_pow(retry)
            .unwrap_or(u64::MAX);
        self.base_ns.saturating_mul(factor).min(self.cap_ns)
    }

    /// The delay before retry `retry` (0-based), jittered with `rng`. `previous` is the
    /// delay before the previous retry (only [`Jitter::Decorrelated`] uses it; pass `None`
    /// for the first retry).
    pub fn delay<R: Rng + ?Sized>(
        &self,
        retry: u32,
        previous: Option<Duration>,
        rng: &mut R,
    ) -> Duration {
        let ceiling = self.ceiling_ns(retry);
        let ns = match self.jitter {
            Jitter::None => ceiling,
            Jitter::Full => rng.random_range(0..=ceiling),
            Jitter::Equal => {
                let half = ceiling / 2;
                half + rng.random_range(0..=ceiling - half)
            }
            Jitter::Decorrelated => {
                let prev = previous.map_or(self.base_ns, duration_nanos);
                let high = prev.saturating_mul(3).min(self.cap_ns).max(self.base_ns);
                rng.random_range(self.base_ns..=high)
            }
        };
        Duration::from_nanos(ns)
    }

    /// A fresh schedule for one operation that starts at `now`.
    pub fn schedule(&self, now: Tick) -> Schedule {
        Schedule {
            policy: *self,
            started: now,
            retries: 0,
            previous: None,
        }
    }
}

impl BackoffBuilder {
    /// The longest single delay. Must not be less than the base delay.
    pub fn cap(mut self, cap: Duration) -> Self {
        self.cap = Some(cap);
        self
    }

    /// The growth factor between retries (≥ 1; 1 makes the ceiling constant).
    pub fn multiplier(mut self, multiplier: u32) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// The jitter mode.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The most calls, first attempt included (1..=1000; 1 means never retry).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Stop retrying when the next retry would start more than `limit` after the first
    /// attempt.
    pub fn max_elapsed(mut self, limit: Duration) -> Self {
        self.max_elapsed = Some(limit);
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    ///
    /// [`ResilienceError::InvalidConfig`] for a zero base delay, a cap below the base delay, a zero
    /// multiplier, attempts outside 1..=1000, or a zero total-time limit.
    pub fn build(self) -> Result<Backoff, ResilienceError> {
        let invalid = |field, reason| Err(ResilienceError::InvalidConfig { field, reason });
        if self.base.is_zero() {
            return invalid("base", "must be positive");
        }
        let cap = self.cap.unwrap_or(DEFAULT_CAP.max(self.base));
        if cap < self.base {
            return invalid("cap", "maximum must not be less than the base delay");
        }
        if self.multiplier == 0 {
            return invalid("multiplier", "must be at least 1");
        }
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&self.max_attempts) {
            return invalid("max_attempts", "must be between 1 and 1000");
        }
        if self.max_elapsed.is_some_and(|d| d.is_zero()) {
            return invalid("max_elapsed", "must be positive");
        }
        Ok(Backoff {
            base_ns: duration_nanos(self.base),
            cap_ns: duration_nanos(cap),
            multiplier: self.multiplier,
            jitter: self.jitter,
            max_attempts: self.max_attempts,
            max_elapsed: self.max_elapsed,
        })
    }
}

/// The retry state of one operation: how many retries so far and since when.
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct Schedule {
    policy: Backoff,
    started: Tick,
    retries: u32,
    previous: Option<Duration>,
}

impl Schedule {
    /// Retries handed out so far.
    #[must_use]
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The delay before the next retry, or `None` when the policy says stop: the attempts
    /// are used up, or the retry would start after the total-time limit.
    ///
    /// `retry_after` is the server's hint (an HTTP `Retry-After`, a gRPC pushback): the
    /// delay is at least that long, even beyond the cap, because retrying sooner is known
    /// to fail; the total-time limit still applies.
    #[must_use = "the delay is the time to wait before retrying"]
    pub fn next_delay<R: Rng + ?Sized>(
        &mut self,
        now: Tick,
        retry_after: Option<Duration>,
        rng: &mut R,
    ) -> Option<Duration> {
        if self.retries.saturating_add(1) >= self.policy.max_attempts {
            return None;
        }
        let jittered = self.policy.delay(self.retries, self.previous, rng);
        let delay = retry_after.map_or(jittered, |hint| hint.max(jittered));
        if let Some(limit) = self.policy.max_elapsed {
            let elapsed = now.saturating_duration_since(self.started);
            if elapsed.saturating_add(delay) > limit {
                return None;
            }
        }
        self.retries += 1;
        self.previous = Some(jittered);
        Some(delay)
    }
}
