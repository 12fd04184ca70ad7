//! Priority load shedding on top of an adaptive concurrency limit: under overload the
//! lowest priorities are rejected first.
//!
//! A request of priority `p` is admitted while the calls in flight are below
//! `limit · share(p)`, where `share` grows linearly from `sheddable_share` (priority 0) to
//! 100 % (priority 255). When the backend saturates, the in-flight count climbs to the
//! lower thresholds first: sheddable requests are refused while critical ones still find
//! room between those thresholds and the limit.

#[cfg(feature = "tower")]
mod layer;

use std::fmt;
use std::sync::Arc;

use metered_clock::Clock;

#[cfg(feature = "tower")]
pub use self::layer::{LoadShedLayer, LoadShedService};
use crate::adaptive::{AdaptiveLimiter, OwnedAdaptivePermit};
use crate::error::ResilienceError;

/// How much a request matters: 0 is the first to be shed, 255 the last.
///
/// ```
/// use resilience::Priority;
///
/// assert!(Priority::CRITICAL > Priority::DEFAULT && Priority::DEFAULT > Priority::SHEDDABLE);
/// assert_eq!(Priority::new(200).get(), 200);
/// assert_eq!(Priority::default(), Priority::DEFAULT);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(u8);

impl Priority {
    /// Optional work (prefetches, batch jobs, retries of optional work): shed first.
    pub const SHEDDABLE: Priority = Priority(0);
    /// Ordinary requests.
    pub const DEFAULT: Priority = Priority(128);
    /// Requests that must succeed (payments, the user's own writes): shed last.
    pub const CRITICAL: Priority = Priority(255);

    /// A priority from a number: 0 is shed first, 255 last.
    #[must_use]
    pub const fn new(level: u8) -> Self {
        Priority(level)
    }

    /// The number.
    #[must_use]
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl Default for Priority {
    fn default() -> Self {
        Priority::DEFAULT
    }
}

/// Admits requests by priority under an [`AdaptiveLimiter`]'s limit. Cheap to clone.
///
/// ```
/// use std::sync::Arc;
/// use resilience::{AdaptiveConfig, AdaptiveLimiter, Algorithm, LoadShedder, Priority, ResilienceError};
///
/// let limiter = Arc::new(AdaptiveLimiter::new(
///     AdaptiveConfig::builder().algorithm(Algorithm::Fixed).initial_limit(10).build()?,
/// ));
/// let shedder = LoadShedder::new(Arc::clone(&limiter), 50)?; // sheddable: half the limit
/// let held: Vec<_> = (0..5).map(|_| shedder.try_acquire(Priority::DEFAULT)).collect::<Result<_, _>>()?;
/// match shedder.try_acquire(Priority::SHEDDABLE) {
///     Err(ResilienceError::LoadShed { priority: 0, .. }) => {} // 5 in flight: sheddable refused
///     other => panic!("{other:?}"),
/// }
/// assert!(shedder.try_acquire(Priority::CRITICAL).is_ok());
/// drop(held);
/// # Ok::<(), ResilienceError>(())
/// ```
pub struct LoadShedder<C: Clock> {
    limiter: Arc<AdaptiveLimiter<C>>,
    sheddable_permille: u32,
}

impl<C: Clock> Clone for LoadShedder<C> {
    fn clone(&self) -> Self {
        LoadShedder {
            limiter: Arc::clone(&self.limiter),
            sheddable_permille: self.sheddable_permille,
        }
    }
}

impl<C: Clock> fmt::Debug for LoadShedder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadShedder")
            .field("limiter", &self.limiter)
            .field("sheddable_permille", &self.sheddable_permille)
            .finish()
    }
}

impl<C: Clock> LoadShedder<C> {
    /// Sheddable requests (priority 0) may use `sheddable_share_percent` % of the limit;
    /// the share grows linearly with the priority up to the whole limit at 255.
    ///
    /// # Errors
    ///
    /// [`ResilienceError::InvalidConfig`] unless `sheddable_share_percent` is in 1..=100.
    pub fn new(
        limiter: Arc<AdaptiveLimiter<C>>,
        sheddable_share_percent: u8,
    ) -> Result<Self, ResilienceError> {
        if !(1..=100).contains(&sheddable_share_percent) {
            return Err(ResilienceError::InvalidConfig {
                field: "sheddable_share_percent",
                reason: "must be in 1..=100",
            });
        }
        Ok(LoadShedder {
            limiter,
            sheddable_permille: u32::from(sheddable_share_percent) * 10,
        })
    }

    /// The limiter whose limit is shared out.
    #[must_use]
    pub fn limiter(&self) -> &Arc<AdaptiveLimiter<C>> {
        &self.limiter
    }

    /// The share of the limit a request of `priority` may use, in per mille.
    #[must_use]
    pub fn share_permille(&self, priority: Priority) -> u32 {
        let floor = self.sheddable_permille;
        floor + (1_000 - floor) * u32::from(priority.get()) / 255
    }

    /// Admits a request of `priority` now or rejects it.
    ///
    /// # Errors
    ///
    /// [`ResilienceError::LoadShed`] when the calls in flight have reached this priority's
    /// share of the limit; `retry_after` is the recent average latency.
    pub fn try_acquire(
        &self,
        priority: Priority,
    ) -> Result<OwnedAdaptivePermit<C>, ResilienceError> {
        self.limiter
            .try_acquire_scaled(self.share_permille(priority))
            .map_err(|e| ResilienceError::LoadShed {
                priority: priority.get(),
                retry_after: e.retry_after().unwrap_or_default(),
            })
    }
}
