//! [`QuantaClock`]: a [`Clock`] with cheap monotonic reads (feature `quanta`).

use std::fmt;

use crate::{Clock, SystemClock, Tick, Timestamp, duration_nanos};

/// A [`Clock`] whose monotonic time comes from the CPU's time-stamp counter through the
/// `quanta` crate (the clock `governor` uses by default), and whose wall time comes from
/// [`SystemClock`].
///
/// Use it for limiters and breakers on very hot paths: a monotonic read is a `rdtsc` and a
/// multiply (a few nanoseconds) instead of a `clock_gettime` call, which costs tens of
/// nanoseconds on virtual machines. Where the counter is not usable (no invariant TSC),
/// `quanta` falls back to the operating system's monotonic clock by itself.
///
/// ```
/// use metered_clock::Clock;
/// use metered_clock::QuantaClock;
///
/// let clock = QuantaClock::new();
/// let a = clock.monotonic();
/// let b = clock.monotonic();
/// assert!(b >= a);
/// ```
#[derive(Clone)]
pub struct QuantaClock {
    clock: quanta::Clock,
    origin: quanta::Instant,
    wall: SystemClock,
}

impl fmt::Debug for QuantaClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuantaClock").finish_non_exhaustive()
    }
}

impl QuantaClock {
    /// A clock whose monotonic origin is now. Calibrates the counter on first use in the
    /// process (a few milliseconds, once).
    #[must_use]
    pub fn new() -> Self {
        let clock = quanta::Clock::new();
        let origin = clock.now();
        QuantaClock {
            clock,
            origin,
            wall: SystemClock::new(),
        }
    }
}

impl Default for QuantaClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for QuantaClock {
    fn now(&self) -> Timestamp {
        self.wall.now()
    }

    #[inline]
    fn monotonic(&self) -> Tick {
        Tick::from_nanos(duration_nanos(self.clock.now().duration_since(self.origin)))
    }
}
