//! The shedder's optional wait queue: bounded, by priority, with CoDel-style sojourn
//! limits and adaptive LIFO (as in Facebook's "Fail at Scale").
//!
//! The queue is *overloaded* when it has not been empty at any moment of the last
//! `interval`. Then a waiter may wait at most `target` (otherwise `interval`) before it is
//! rejected, and, with adaptive LIFO, the newest waiter of the highest priority is served
//! first (the oldest have likely given up). Waiters are served when a permit is released;
//! expired ones are rejected when the queue is next touched (no timers).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use metered_clock::{Clock, Tick};

use super::{Priority, ShedInner, ShedPermit};
use crate::error::ResilienceError;
use crate::sync::Mutex;
use crate::sync::atomic::{AtomicU32, Ordering};

/// A validated wait-queue configuration for a [`LoadShedder`](super::LoadShedder).
///
/// ```
/// use std::time::Duration;
/// use resilience::QueueConfig;
///
/// let q = QueueConfig::new(64, Duration::from_millis(5), Duration::from_millis(100))?.adaptive_lifo(true);
/// assert!(QueueConfig::new(0, Duration::from_millis(5), Duration::from_millis(100)).is_err());
/// # Ok::<(), resilience::ResilienceError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    pub(crate) waiting_max: u32,
    pub(crate) target: Duration,
    pub(crate) interval: Duration,
    pub(crate) adaptive_lifo: bool,
}

impl QueueConfig {
    /// At most `waiting_max` waiters; a waiter waits at most `target` while the queue is
    /// overloaded (not empty for a whole `interval`), at most `interval` otherwise.
    /// Adaptive LIFO is off.
    ///
    /// # Errors
    ///
    /// [`ResilienceError::InvalidConfig`] if `waiting_max` or `target` is zero, or
    /// `interval < target`.
    pub fn new(
        waiting_max: u32,
        target: Duration,
        interval: Duration,
    ) -> Result<Self, ResilienceError> {
        let invalid = |field, reason| Err(ResilienceError::InvalidConfig { field, reason });
        if waiting_max == 0 {
            return invalid("waiting_max", "must be at least 1");
        }
        if target.is_zero() {
            return invalid("target", "must not be zero");
        }
        if interval < target {
            return invalid("interval", "must not be less than target");
        }
        Ok(QueueConfig {
            waiting_max,
            target,
            interval,
            adaptive_lifo: false,
        })
    }

    /// Serve the newest waiter first while the queue is overloaded.
    #[must_use]
    pub fn adaptive_lifo(self, enabled: bool) -> Self {
        QueueConfig {
            adaptive_lifo: enabled,
            ..self
        }
    }
}

pub(super) struct Queue<C: Clock + 'static> {
    pub(super) config: QueueConfig,
    pub(super) waiting: AtomicU32,
    state: Mutex<State<C>>,
}

struct State<C: Clock + 'static> {
    /// By (priority, arrival sequence).
    waiters: BTreeMap<(u8, u64), Waiter<C>>,
    seq: u64,
    /// The last moment the queue was seen empty.
    empty_at: Tick,
}

struct Waiter<C: Clock + 'static> {
    enqueued: Tick,
    slot: Arc<Slot<C>>,
}

type Grant<C> = Result<ShedPermit<C>, ResilienceError>;

/// Where a waiter's grant or rejection is put.
pub(super) struct Slot<C: Clock + 'static> {
    inner: Mutex<SlotState<C>>,
}

struct SlotState<C: Clock + 'static> {
    result: Option<Grant<C>>,
    waker: Option<Waker>,
}

impl<C: Clock + 'static> Slot<C> {
    fn fill(&self, result: Grant<C>) -> Option<Waker> {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.result = Some(result);
        s.waker.take()
    }
}

impl<C: Clock + 'static> Queue<C> {
    pub(super) fn new(config: QueueConfig, now: Tick) -> Self {
        Queue {
            config,
            waiting: AtomicU32::new(0),
            state: Mutex::new(State {
                waiters: BTreeMap::new(),
                seq: 0,
                empty_at: now,
            }),
        }
    }

    fn lock(&self) -> crate::sync::MutexGuard<'_, State<C>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Rejection of a waiter of `priority`.
fn shed<C: Clock + 'static>(inner: &ShedInner<C>, priority: u8) -> ResilienceError {
    inner.limiter.count_rejection();
    ResilienceError::LoadShed {
        priority,
        retry_after: inner.limiter.latency(),
    }
}

/// Enqueues a waiter (evicting a lower-priority one when full), or rejects it.
pub(super) fn enqueue<C: Clock + 'static>(
    inner: &Arc<ShedInner<C>>,
    queue: &Queue<C>,
    priority: Priority,
) -> Result<Wait<C>, ResilienceError> {
    let now = inner.limiter.clock().monotonic();
    let mut evicted = None;
    let (key, slot) = {
        let mut st = queue.lock();
        if st.waiters.is_empty() {
            st.empty_at = now;
        }
        if st.waiters.len() >= queue.config.waiting_max as usize {
            let lowest = st.waiters.keys().next().copied();
            match lowest {
                Some(k) if k.0 < priority.get() => {
                    evicted = st.waiters.remove(&k).map(|w| (k.0, w));
                    queue.waiting.fetch_sub(1, Ordering::AcqRel);
                }
                _ => return Err(shed(inner, priority.get())),
            }
        }
        st.seq += 1;
        let key = (priority.get(), st.seq);
        let slot = Arc::new(Slot {
            inner: Mutex::new(SlotState {
                result: None,
                waker: None,
            }),
        });
        st.waiters.insert(
            key,
            Waiter {
                enqueued: now,
                slot: Arc::clone(&slot),
            },
        );
        queue.waiting.fetch_add(1, Ordering::AcqRel);
        (key, slot)
    };
    if let Some((p, w)) = evicted {
        let err: Grant<C> = Err(shed(inner, p));
        if let Some(waker) = w.slot.fill(err) {
            waker.wake();
        }
    }
    // A permit may have been released between the failed admission and the enqueue.
    serve(inner, queue);
    Ok(Wait {
        inner: Arc::clone(inner),
        key,
        slot,
        done: false,
    })
}

/// Grants permits to waiters while the limit allows; rejects those past their sojourn
/// limit.
pub(super) fn serve<C: Clock + 'static>(inner: &Arc<ShedInner<C>>, queue: &Queue<C>) {
    let mut wake: Vec<Waker> = Vec::new();
    {
        let now = inner.limiter.clock().monotonic();
        let mut st = queue.lock();
        loop {
            let Some(&(top, _)) = st.waiters.keys().next_back() else {
                st.empty_at = now;
                break;
            };
            let overloaded = now.saturating_duration_since(st.empty_at) > queue.config.interval;
            let sojourn_max = if overloaded {
                queue.config.target
            } else {
                queue.config.interval
            };
            // Every waiter past its sojourn limit is rejected, whatever its priority.
            let expired: Vec<(u8, u64)> = st
                .waiters
                .iter()
                .filter(|(_, w)| now.saturating_duration_since(w.enqueued) > sojourn_max)
                .map(|(k, _)| *k)
                .collect();
            if !expired.is_empty() {
                for k in expired {
                    if let Some(w) = st.waiters.remove(&k) {
                        queue.waiting.fetch_sub(1, Ordering::AcqRel);
                        let err: Grant<C> = Err(shed(inner, k.0));
                        wake.extend(w.slot.fill(err));
                    }
                }
                continue;
            }
            let mut same = st.waiters.range((top, 0)..=(top, u64::MAX));
            let key = if overloaded && queue.config.adaptive_lifo {
                same.next_back()
            } else {
                same.next()
            }
            .map(|(k, _)| *k);
            let Some(key) = key else { break };
            let priority = Priority::new(key.0);
            match inner
                .limiter
                .try_acquire_scaled_quiet(inner.share_permille(priority))
            {
                Some(permit) => {
                    if let Some(w) = st.waiters.remove(&key) {
                        queue.waiting.fetch_sub(1, Ordering::AcqRel);
                        let grant: Grant<C> = Ok(ShedPermit {
                            permit: Some(permit),
                            queue: Some(Arc::clone(inner)),
                        });
                        wake.extend(w.slot.fill(grant));
                    }
                }
                None => break,
            }
        }
    }
    for w in wake {
        w.wake();
    }
}

/// The future of [`LoadShedder::acquire`](super::LoadShedder::acquire) while it waits in
/// the queue. Dropping it leaves the queue (or frees the slot it was just granted).
#[must_use = "futures do nothing unless polled"]
pub(super) struct Wait<C: Clock + 'static> {
    inner: Arc<ShedInner<C>>,
    key: (u8, u64),
    slot: Arc<Slot<C>>,
    done: bool,
}

impl<C: Clock + 'static> std::fmt::Debug for Wait<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wait")
            .field("priority", &self.key.0)
            .finish_non_exhaustive()
    }
}

impl<C: Clock + 'static> Future for Wait<C> {
    type Output = Grant<C>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut s = this.slot.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(result) = s.result.take() {
            this.done = true;
            drop(s);
            return Poll::Ready(result);
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<C: Clock + 'static> Drop for Wait<C> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some(queue) = &self.inner.queue {
            let mut st = queue.lock();
            if st.waiters.remove(&self.key).is_some() {
                queue.waiting.fetch_sub(1, Ordering::AcqRel);
            }
        }
        // Granted after our last poll: drop the grant outside every lock (a permit's
        // release serves the queue).
        let result = {
            let mut s = self.slot.inner.lock().unwrap_or_else(|p| p.into_inner());
            s.result.take()
        };
        drop(result);
    }
}
