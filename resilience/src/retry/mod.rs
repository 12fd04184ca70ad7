//! A retry budget and an async retry driver.

#[cfg(feature = "tower")]
mod layer;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use metered_clock::{Clock, SystemClock};
use parking_lot::Mutex;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::backoff::Backoff;
use crate::error::ResilienceError;
use crate::limiter::{Quota, RateLimiter};
use crate::sleep::Sleeper;
use crate::sync::atomic::{AtomicU64, Ordering};

#[cfg(feature = "tower")]
pub use self::layer::{BoxFuture, RetryLayer, RetryService};

/// One retry, in thousandths, so a deposit of a fraction of a retry stays an integer.
const MILLI: u64 = 1_000;

/// Caps retries to a fraction of requests (the Finagle / gRPC retry-budget model), so
/// retries cannot multiply the load on a backend that is already failing.
///
/// Every first attempt [`deposit`](Self::deposit)s `retry_percent / 100` of a retry; every
/// retry [`try_withdraw`](Self::try_withdraw)s one. The balance is capped at `max_balance`
/// retries, so a long healthy period cannot bank an unbounded burst. A small reserve of
/// `min_retries_per_sec` (a rate limiter) lets low-traffic callers retry at all.
///
/// ```
/// use metered_clock::{ManualClock, Timestamp};
/// use resilience::RetryBudget;
///
/// let clock = ManualClock::new(Timestamp::EPOCH);
/// let budget = RetryBudget::builder().retry_percent(20).min_retries_per_sec(0).build_with_clock(clock)?;
/// for _ in 0..10 {
///     budget.deposit();
/// }
/// assert!(budget.try_withdraw()); // 10 requests × 20 % = 2 retries
/// assert!(budget.try_withdraw());
/// assert!(!budget.try_withdraw());
/// # Ok::<(), resilience::ResilienceError>(())
/// ```
pub struct RetryBudget<C = SystemClock> {
    balance_milli: AtomicU64,
    deposit_milli: u64,
    max_milli: u64,
    reserve: Option<RateLimiter<C>>,
}

impl<C> fmt::Debug for RetryBudget<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("balance_milli", &self.balance_milli.load(Ordering::Relaxed))
            .field("deposit_milli", &self.deposit_milli)
            .field("max_milli", &self.max_milli)
            .field("reserve", &self.reserve.is_some())
            .finish()
    }
}

/// Builder for [`RetryBudget`].
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct RetryBudgetBuilder {
    retry_percent: u32,
    min_retries_per_sec: u32,
    max_balance: u32,
}

impl RetryBudget<SystemClock> {
    /// Defaults: 20 % of requests may be retried, a reserve of 10 retries per second, a
    /// balance of at most 100 retries.
    pub fn builder() -> RetryBudgetBuilder {
        RetryBudgetBuilder {
            retry_percent: 20,
            min_retries_per_sec: 10,
            max_balance: 100,
        }
    }
}

impl RetryBudgetBuilder {
    /// Retries allowed per 100 requests (1..=1000).
    pub fn retry_percent(mut self, percent: u32) -> Self {
        self.retry_percent = percent;
        self
    }

    /// Retries allowed each second whatever the balance (0 for none).
    pub fn min_retries_per_sec(mut self, retries: u32) -> Self {
        self.min_retries_per_sec = retries;
        self
    }

    /// The most retries the balance can hold (≥ 1).
    pub fn max_balance(mut self, retries: u32) -> Self {
        self.max_balance = retries;
        self
    }

    /// A budget on the operating system's clock.
    ///
    /// # Errors
    ///
    /// As [`build_with_clock`](Self::build_with_clock).
    pub fn build(self) -> Result<RetryBudget<SystemClock>, ResilienceError> {
        self.build_with_clock(SystemClock::new())
    }

    /// A budget whose reserve reads time from `clock`.
    ///
    /// # Errors
    ///
    /// [`ResilienceError::InvalidConfig`] for a percentage outside 1..=1000 or a zero maximum balance.
    pub fn build_with_clock<C: Clock>(self, clock: C) -> Result<RetryBudget<C>, ResilienceError> {
        if !(1..=1_000).contains(&self.retry_percent) {
            return Err(ResilienceError::InvalidConfig {
                field: "retry_percent",
                reason: "must be between 1 and 1000",
            });
        }
        if self.max_balance == 0 {
            return Err(ResilienceError::InvalidConfig {
                field: "max_balance",
                reason: "must be at least 1",
            });
        }
        let reserve = if self.min_retries_per_sec == 0 {
            None
        } else {
            Some(RateLimiter::with_clock(
                Quota::per_second(self.min_retries_per_sec)?,
                clock,
            ))
        };
        Ok(RetryBudget {
            balance_milli: AtomicU64::new(0),
            deposit_milli: u64::from(self.retry_percent) * MILLI / 100,
            max_milli: u64::from(self.max_balance) * MILLI,
            reserve,
        })
    }
}

impl<C: Clock> RetryBudget<C> {
    /// Records a first attempt (not a retry): adds its share of a retry to the balance.
    pub fn deposit(&self) {
        let _ = self
            .balance_milli
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |b| {
                Some(b.saturating_add(self.deposit_milli).min(self.max_milli))
            });
    }

    /// Takes one retry from the balance or the reserve; `false` means do not retry.
    #[must_use = "false means the retry must not be made"]
    pub fn try_withdraw(&self) -> bool {
        let from_balance = self
            .balance_milli
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |b| {
                b.checked_sub(MILLI)
            })
            .is_ok();
        from_balance
            || self
                .reserve
                .as_ref()
                .is_some_and(|r| r.try_acquire(1).is_ok())
    }

    /// Whole retries in the balance now (the reserve not included).
    #[must_use]
    pub fn balance(&self) -> u64 {
        self.balance_milli.load(Ordering::Relaxed) / MILLI
    }
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryDecision {
    /// Retry after the policy's delay.
    Retry,
    /// Retry after at least this long (the server said so).
    RetryAfter(Duration),
    /// The error is permanent: return it now.
    Stop,
}

/// An async retry driver: runs an operation, and after each retryable failure asks the
/// [`Backoff`] for a delay, the optional [`RetryBudget`] for permission, and the
/// [`Sleeper`] to wait.
///
/// ```
/// use std::time::Duration;
/// use metered_clock::{ManualClock, Timestamp};
/// use resilience::{Backoff, ManualSleeper, Retry, RetryDecision};
///
/// let clock = ManualClock::new(Timestamp::EPOCH);
/// let policy = Backoff::exponential(Duration::from_millis(5)).max_attempts(5).build()?;
/// let retry = Retry::new(policy, ManualSleeper::new(clock.clone()), clock).with_seed(42);
/// let result: Result<u32, &str> = futures::executor::block_on(retry.run(
///     |attempt| async move { if attempt < 2 { Err("serialization failure") } else { Ok(attempt) } },
///     |_err| RetryDecision::Retry,
/// ));
/// assert_eq!(result, Ok(2)); // succeeded on the third attempt
/// # Ok::<(), resilience::ResilienceError>(())
/// ```
pub struct Retry<S, C = SystemClock> {
    backoff: Backoff,
    sleeper: S,
    clock: C,
    budget: Option<Arc<RetryBudget<C>>>,
    rng: Mutex<StdRng>,
}

impl<S, C> fmt::Debug for Retry<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("backoff", &self.backoff)
            .field("budget", &self.budget.is_some())
            .finish_non_exhaustive()
    }
}

impl<S: Sleeper, C: Clock> Retry<S, C> {
    /// A driver for `backoff`, sleeping on `sleeper`, timing on `clock`, with an RNG seeded
    /// from the operating system (see [`with_seed`](Self::with_seed)).
    #[must_use]
    pub fn new(backoff: Backoff, sleeper: S, clock: C) -> Self {
        Retry {
            backoff,
            sleeper,
            clock,
            budget: None,
            rng: Mutex::new(StdRng::from_os_rng()),
        }
    }

    /// Seeds the jitter RNG, for reproducible delays.
    #[must_use]
    pub fn with_seed(self, seed: u64) -> Self {
        Retry {
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            ..self
        }
    }

    /// Spends retries from `budget` (which may be shared by many drivers).
    #[must_use]
    pub fn with_budget(self, budget: Arc<RetryBudget<C>>) -> Self {
        Retry {
            budget: Some(budget),
            ..self
        }
    }

    /// The backoff policy.
    #[must_use]
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// Runs `op(attempt)` (attempt 0 first) until it succeeds, `classify` says
    /// [`RetryDecision::Stop`], the backoff policy is exhausted, or the budget refuses.
    ///
    /// # Errors
    ///
    /// The last attempt's error.
    pub async fn run<T, E, F, Fut, K>(&self, mut op: F, classify: K) -> Result<T, E>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        K: Fn(&E) -> RetryDecision,
    {
        if let Some(budget) = &self.budget {
            budget.deposit();
        }
        let mut schedule = self.backoff.schedule(self.clock.monotonic());
        let mut attempt = 0u32;
        loop {
            let err = match op(attempt).await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            let hint = match classify(&err) {
                RetryDecision::Stop => return Err(err),
                RetryDecision::Retry => None,
                RetryDecision::RetryAfter(hint) => Some(hint),
            };
            let now = self.clock.monotonic();
            let Some(delay) = schedule.next_delay(now, hint, &mut *self.rng.lock()) else {
                tracing::debug!(attempts = attempt + 1, "retry policy exhausted");
                return Err(err);
            };
            if let Some(budget) = &self.budget
                && !budget.try_withdraw()
            {
                tracing::debug!(attempts = attempt + 1, "retry budget exhausted");
                return Err(err);
            }
            tracing::debug!(
                attempt,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "retrying"
            );
            self.sleeper.sleep(delay).await;
            attempt += 1;
        }
    }
}
