//! A bulkhead: a limit on concurrent calls, with an optional bounded wait.

#[cfg(feature = "tower")]
mod layer;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_lock::{Semaphore, SemaphoreGuardArc};

use crate::error::ResilienceError;
use crate::sleep::Sleeper;
use crate::sync::atomic::{AtomicU32, Ordering};
use crate::timeout::timeout;

#[cfg(feature = "tower")]
pub use self::layer::{BulkheadLayer, BulkheadService};

/// Caps the calls in flight to one backend so a slow backend cannot take every task or
/// connection of the service. Cheap to clone: clones share the same slots.
///
/// ```
/// use resilience::{Bulkhead, ResilienceError};
///
/// let bulkhead = Bulkhead::new(2)?;
/// let a = bulkhead.try_acquire()?;
/// let _b = bulkhead.try_acquire()?;
/// assert_eq!(bulkhead.try_acquire().unwrap_err(), ResilienceError::BulkheadFull { max_concurrent: 2 });
/// drop(a);
/// assert!(bulkhead.try_acquire().is_ok());
/// # Ok::<(), resilience::ResilienceError>(())
/// ```
#[derive(Clone)]
pub struct Bulkhead {
    inner: Arc<BulkheadInner>,
}

struct BulkheadInner {
    semaphore: Arc<Semaphore>,
    max_concurrent: u32,
    max_waiting: u32,
    waiting: AtomicU32,
}

impl fmt::Debug for Bulkhead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("max_concurrent", &self.inner.max_concurrent)
            .field("max_waiting", &self.inner.max_waiting)
            .finish_non_exhaustive()
    }
}

/// A slot in a [`Bulkhead`]; the slot is free again when this is dropped.
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct BulkheadPermit {
    _guard: SemaphoreGuardArc,
}

impl fmt::Debug for BulkheadPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BulkheadPermit")
    }
}

impl Bulkhead {
    /// At most `max_concurrent` calls at once; callers that find it full fail at once.
    ///
    /// # Errors
    ///
    /// [`ResilienceError::InvalidConfig`] if `max_concurrent` is zero.
    pub fn new(max_concurrent: u32) -> Result<Self, ResilienceError> {
        Self::with_queue(max_concurrent, 0)
    }

    /// At most `max_concurrent` calls at once and at most `max_waiting` callers waiting for
    /// a slot in [`acquire`](Self::acquire); more are refused at once.
    ///
    /// # Errors
    ///
    /// [`ResilienceError::InvalidConfig`] if `max_concurrent` is zero.
    pub fn with_queue(max_concurrent: u32, max_waiting: u32) -> Result<Self, ResilienceError> {
        if max_concurrent == 0 {
            return Err(ResilienceError::InvalidConfig {
                field: "max_concurrent",
                reason: "must be at least 1",
            });
        }
        Ok(Bulkhead {
            inner: Arc::new(BulkheadInner {
                semaphore: Arc::new(Semaphore::new(max_concurrent as usize)),
                max_concurrent,
                max_waiting,
                waiting: AtomicU32::new(0),
            }),
        })
    }

    /// The concurrency limit.
    #[must_use]
    pub fn max_concurrent(&self) -> u32 {
        self.inner.max_concurrent
    }

    fn full(&self) -> ResilienceError {
        ResilienceError::BulkheadFull {
            max_concurrent: self.inner.max_concurrent,
        }
    }

    /// Takes a slot now or fails.
    ///
    /// # Errors
    ///
    /// [`ResilienceError::BulkheadFull`] when every slot is taken.
    pub fn try_acquire(&self) -> Result<BulkheadPermit, ResilienceError> {
        self.inner
            .semaphore
            .try_acquire_arc()
            .map(|guard| BulkheadPermit { _guard: guard })
            .ok_or_else(|| self.full())
    }

    /// Takes a slot, waiting up to `max_wait` (on `sleeper`) in a queue of at most
    /// `max_waiting` callers. Waiters are served first come, first served.
    ///
    /// # Errors
    ///
    /// [`ResilienceError::BulkheadFull`] if the queue is full or no slot freed up within `max_wait`.
    pub async fn acquire<S: Sleeper + ?Sized>(
        &self,
        max_wait: Duration,
        sleeper: &S,
    ) -> Result<BulkheadPermit, ResilienceError> {
        if let Ok(permit) = self.try_acquire() {
            return Ok(permit);
        }
        let inner = &*self.inner;
        if max_wait.is_zero()
            || inner
                .waiting
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |w| {
                    (w < inner.max_waiting).then_some(w + 1)
                })
                .is_err()
        {
            return Err(self.full());
        }
        let _queued = Queued(&inner.waiting);
        match timeout(sleeper, max_wait, inner.semaphore.acquire_arc()).await {
            Ok(guard) => Ok(BulkheadPermit { _guard: guard }),
            Err(_) => Err(self.full()),
        }
    }

    /// Runs `fut` in a slot taken with [`try_acquire`](Self::try_acquire).
    ///
    /// # Errors
    ///
    /// [`ResilienceError::BulkheadFull`] when every slot is taken (and `fut` is never polled).
    pub fn call<F: Future>(
        &self,
        fut: F,
    ) -> impl Future<Output = Result<F::Output, ResilienceError>> {
        let permit = self.try_acquire();
        async move {
            let _permit = permit?;
            Ok(fut.await)
        }
    }
}

/// Leaves the wait queue when dropped (also when the waiting future is cancelled).
struct Queued<'a>(&'a AtomicU32);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
