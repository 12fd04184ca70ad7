//! Priority load shedding on top of an adaptive concurrency limit: under overload the
//! lowest priorities are rejected first.
//!
//! A request of priority `p` is admitted while the calls in flight are below
//! `limit · share(p)`, where `share` grows linearly from `sheddable_share` (priority 0) to
//! 100 % (priority 255). When the backend saturates, the in-flight count climbs to the
//! lower thresholds first: sheddable requests are refused while critical ones still find
//! room between those thresholds and the limit.
//!
//! With a wait queue ([`LoadShedder::with_queue`]), [`LoadShedder::acquire`] waits instead
//! of failing at once: highest priority first, CoDel-style sojourn limits, optional
//! adaptive LIFO, and a full queue evicts its lowest-priority waiter for a higher one.

#[cfg(feature = "tower")]
mod layer;
mod queue;

use std::fmt;
use std::sync::Arc;

use metered_clock::Clock;

#[cfg(feature = "tower")]
pub use self::layer::{LoadShedLayer, LoadShedService, ShedGuard};
use self::queue::Queue;
pub use self::queue::QueueConfig;
use crate::adaptive::{AdaptiveLimiter, OwnedAdaptivePermit};
use crate::breaker::CallOutcome;
use crate::error::ResilienceError;
use crate::sync::atomic::Ordering;

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

/// Admits requests by priority under an [`AdaptiveLimiter`]'s limit, optionally through
/// a bounded wait queue. Cheap to clone.
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
pub struct LoadShedder<C: Clock + 'static> {
    inner: Arc<ShedInner<C>>,
}

pub(crate) struct ShedInner<C: Clock + 'static> {
    limiter: Arc<AdaptiveLimiter<C>>,
    sheddable_permille: u32,
    queue: Option<Queue<C>>,
}

impl<C: Clock + 'static> ShedInner<C> {
    fn share_permille(&self, priority: Priority) -> u32 {
        let floor = self.sheddable_permille;
        floor + (1_000 - floor) * u32::from(priority.get()) / 255
    }
}

impl<C: Clock + 'static> Clone for LoadShedder<C> {
    fn clone(&self) -> Self {
        LoadShedder {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C: Clock + 'static> fmt::Debug for LoadShedder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadShedder")
            .field("limiter", &self.inner.limiter)
            .field("sheddable_permille", &self.inner.sheddable_permille)
            .field("queue", &self.inner.queue.as_ref().map(|q| q.config))
            .finish()
    }
}

impl<C: Clock + 'static> LoadShedder<C> {
    /// Sheddable requests (priority 0) may use `sheddable_share_percent` % of the limit;
    /// the share grows linearly with the priority up to the whole limit at 255. No queue.
    ///
    /// # Errors
    ///
    /// [`ResilienceError::InvalidConfig`] unless `sheddable_share_percent` is in 1..=100.
    pub fn new(
        limiter: Arc<AdaptiveLimiter<C>>,
        sheddable_share_percent: u8,
    ) -> Result<Self, ResilienceError> {
        Self::build(limiter, sheddable_share_percent, None)
    }

    /// [`new`](Self::new) with a wait queue for [`acquire`](Self::acquire).
    ///
    /// # Errors
    ///
    /// [`ResilienceError::InvalidConfig`] unless `sheddable_share_percent` is in 1..=100.
    pub fn with_queue(
        limiter: Arc<AdaptiveLimiter<C>>,
        sheddable_share_percent: u8,
        queue: QueueConfig,
    ) -> Result<Self, ResilienceError> {
        Self::build(limiter, sheddable_share_percent, Some(queue))
    }

    fn build(
        limiter: Arc<AdaptiveLimiter<C>>,
        sheddable_share_percent: u8,
        queue: Option<QueueConfig>,
    ) -> Result<Self, ResilienceError> {
        if !(1..=100).contains(&sheddable_share_percent) {
            return Err(ResilienceError::InvalidConfig {
                field: "sheddable_share_percent",
                reason: "must be in 1..=100",
            });
        }
        let now = limiter.clock().monotonic();
        Ok(LoadShedder {
            inner: Arc::new(ShedInner {
                limiter,
                sheddable_permille: u32::from(sheddable_share_percent) * 10,
                queue: queue.map(|q| Queue::new(q, now)),
            }),
        })
    }

    /// The limiter whose limit is shared out.
    #[must_use]
    pub fn limiter(&self) -> &Arc<AdaptiveLimiter<C>> {
        &self.inner.limiter
    }

    /// The share of the limit a request of `priority` may use, in per mille.
    #[must_use]
    pub fn share_permille(&self, priority: Priority) -> u32 {
        self.inner.share_permille(priority)
    }

    /// Requests waiting in the queue now (0 without a queue).
    #[must_use]
    pub fn waiting(&self) -> u32 {
        self.inner
            .queue
            .as_ref()
            .map_or(0, |q| q.waiting.load(Ordering::Relaxed))
    }

    /// Admits a request of `priority` now or rejects it (never waits, even with a
    /// queue; and never jumps ahead of waiters of the same or a higher priority).
    ///
    /// # Errors
    ///
    /// [`ResilienceError::LoadShed`] when the calls in flight have reached this priority's
    /// share of the limit; `retry_after` is the recent average latency.
    pub fn try_acquire(&self, priority: Priority) -> Result<ShedPermit<C>, ResilienceError> {
        let reject = || {
            self.inner.limiter.count_rejection();
            ResilienceError::LoadShed {
                priority: priority.get(),
                retry_after: self.inner.limiter.latency(),
            }
        };
        if self.waiting() > 0 {
            return Err(reject());
        }
        match self
            .inner
            .limiter
            .try_acquire_scaled_quiet(self.inner.share_permille(priority))
        {
            Some(permit) => Ok(ShedPermit {
                permit: Some(permit),
                queue: self.inner.queue.as_ref().map(|_| Arc::clone(&self.inner)),
            }),
            None => Err(reject()),
        }
    }

    /// Admits a request of `priority`, waiting in the queue if there is one: served by
    /// priority when permits are released; rejected past its sojourn limit, or when the
    /// queue is full of waiters of the same or a higher priority. Without a queue this is
    /// [`try_acquire`](Self::try_acquire).
    ///
    /// # Errors
    ///
    /// [`ResilienceError::LoadShed`] when refused or expired in the queue.
    pub async fn acquire(&self, priority: Priority) -> Result<ShedPermit<C>, ResilienceError> {
        match self.try_acquire(priority) {
            Ok(permit) => Ok(permit),
            Err(e) => match &self.inner.queue {
                None => Err(e),
                Some(queue) => queue::enqueue(&self.inner, queue, priority)?.await,
            },
        }
    }
}

/// A slot admitted by a [`LoadShedder`]: an adaptive permit that also serves the queue's
/// waiters when released. Record the outcome as on an
/// [`AdaptivePermit`](crate::AdaptivePermit); dropping it counts as a success.
#[must_use = "the slot is released, and the call timed, as soon as the permit is dropped"]
pub struct ShedPermit<C: Clock + 'static> {
    permit: Option<OwnedAdaptivePermit<C>>,
    /// Set when the shedder has a queue to serve on release.
    queue: Option<Arc<ShedInner<C>>>,
}

impl<C: Clock + 'static> fmt::Debug for ShedPermit<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShedPermit").finish_non_exhaustive()
    }
}

impl<C: Clock + 'static> ShedPermit<C> {
    /// The call succeeded (dropping the permit does the same).
    pub fn record_success(self) {}

    /// The call was dropped (timed out, refused by an overloaded backend).
    pub fn record_dropped(mut self) {
        if let Some(p) = self.permit.take() {
            p.record_dropped();
        }
    }

    /// The call says nothing about the backend's load: no sample.
    pub fn record_ignored(mut self) {
        if let Some(p) = self.permit.take() {
            p.record_ignored();
        }
    }

    /// Records a breaker-style outcome: `Failure` counts as dropped.
    pub fn record(mut self, outcome: CallOutcome) {
        if let Some(p) = self.permit.take() {
            p.record(outcome);
        }
    }
}

impl<C: Clock + 'static> Drop for ShedPermit<C> {
    fn drop(&mut self) {
        drop(self.permit.take()); // Frees the slot first.
        if let Some(inner) = self.queue.take()
            && let Some(queue) = &inner.queue
            && queue.waiting.load(Ordering::Acquire) > 0
        {
            queue::serve(&inner, queue);
        }
    }
}
