//! The one thing the async drivers need from a runtime: sleeping.

use std::future::{Future, Ready, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metered_clock::{ManualClock, duration_nanos};

/// Something that can wait. Implement it for your runtime, or use `TokioSleeper` (feature
/// `tokio`) or [`ManualSleeper`] (tests and simulations).
pub trait Sleeper: Send + Sync {
    /// The future returned by [`sleep`](Self::sleep).
    type Sleep: Future<Output = ()> + Send;

    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> Self::Sleep;
}

impl<S: Sleeper + ?Sized> Sleeper for &S {
    type Sleep = S::Sleep;
    fn sleep(&self, duration: Duration) -> Self::Sleep {
        (**self).sleep(duration)
    }
}

impl<S: Sleeper + ?Sized> Sleeper for Arc<S> {
    type Sleep = S::Sleep;
    fn sleep(&self, duration: Duration) -> Self::Sleep {
        (**self).sleep(duration)
    }
}

/// Sleeps on tokio's timer (feature `tokio`). Needs a tokio runtime with time enabled.
#[cfg(feature = "tokio")]
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioSleeper;

#[cfg(feature = "tokio")]
impl Sleeper for TokioSleeper {
    type Sleep = tokio::time::Sleep;
    // A `Sleeper` is the driver side: the one place the tokio feature waits on tokio's timer.
    #[allow(clippy::disallowed_methods)]
    fn sleep(&self, duration: Duration) -> Self::Sleep {
        tokio::time::sleep(duration)
    }
}

/// A sleeper that does not wait: it advances a [`ManualClock`] by the requested duration
/// and completes at once. Makes retry loops, limiter waits and simulations deterministic
/// and instant. It also totals the time it "slept".
///
/// ```
/// use std::time::Duration;
/// use metered_clock::{Clock, ManualClock, Timestamp};
/// use resilience::{ManualSleeper, Sleeper};
///
/// let clock = ManualClock::new(Timestamp::EPOCH);
/// let sleeper = ManualSleeper::new(clock.clone());
/// futures::executor::block_on(sleeper.sleep(Duration::from_millis(250)));
/// assert_eq!(clock.monotonic().as_nanos(), 250_000_000);
/// assert_eq!(sleeper.total_slept(), Duration::from_millis(250));
/// ```
#[derive(Clone, Debug)]
pub struct ManualSleeper {
    clock: ManualClock,
    slept_ns: Arc<AtomicU64>,
}

impl ManualSleeper {
    /// A sleeper that advances `clock`.
    #[must_use]
    pub fn new(clock: ManualClock) -> Self {
        ManualSleeper {
            clock,
            slept_ns: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Total time slept through this sleeper and its clones.
    #[must_use]
    pub fn total_slept(&self) -> Duration {
        Duration::from_nanos(self.slept_ns.load(Ordering::Relaxed))
    }
}

impl Sleeper for ManualSleeper {
    type Sleep = Ready<()>;
    fn sleep(&self, duration: Duration) -> Self::Sleep {
        self.clock.advance(duration);
        self.slept_ns
            .fetch_add(duration_nanos(duration), Ordering::Relaxed);
        ready(())
    }
}
