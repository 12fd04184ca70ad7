//! The one source of time for the metered suite.
//!
//! ```
//! use std::time::Duration;
//! use metered_clock::{Clock, ManualClock, Timestamp};
//!
//! let clock = ManualClock::new(Timestamp::from_unix_millis(1_700_000_000_000));
//! let hold_expires_at = clock.now().saturating_add(Duration::from_secs(30));
//! let started = clock.monotonic();
//!
//! clock.advance(Duration::from_secs(31));
//! assert!(clock.now() >= hold_expires_at);
//! assert_eq!(clock.monotonic().saturating_duration_since(started), Duration::from_secs(31));
//! ```
//!
//! # Two kinds of time
//!
//! * [`Timestamp`] is **wall-clock** time: milliseconds since the Unix epoch. It is what gets
//!   persisted (a hold's expiry, a journal entry's time) because it means the same thing after
//!   a restart or on another machine. It may jump (NTP, an operator), so never use it to
//!   measure a short interval.
//! * [`Tick`] is **monotonic** time: nanoseconds since an arbitrary origin fixed when the
//!   clock was made. It never goes backwards and is what timers, breakers and rate limiters
//!   use. It means nothing outside the process: never persist it.
//!
//! Every crate in the suite takes time from a [`Clock`]. Code outside this crate may not call
//! `Instant::now` or `SystemTime::now` (a clippy `disallowed-methods` rule enforces it), so
//! every time-dependent behaviour can be driven step by step with a [`ManualClock`].
//!
//! The guide, `docs/metered-clock.md`, explains when to use which clock and why time must
//! come only from the trait.
//!
//! # Crate features
//!
//! * `quanta`: [`QuantaClock`], whose monotonic reads use the CPU's time-stamp counter
//!   (a few nanoseconds) instead of a system call (tens of nanoseconds on virtual machines);
//!   for the hottest limiters and breakers.
//!
//! # What it does not do
//!
//! No timers, no sleeping: decision code in the suite is sans-IO and returns a `Duration`
//! for the caller's runtime to wait.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The guide (`docs/metered-clock.md`): every example in it is a doc test.
#[cfg(doctest)]
#[doc = include_str!("../../docs/metered-clock.md")]
pub mod guide {}

#[cfg(feature = "quanta")]
mod quanta_clock;
#[cfg(feature = "quanta")]
pub use quanta_clock::QuantaClock;

/// A wall-clock instant: whole milliseconds since the Unix epoch (UTC).
///
/// Ordered, copyable and serializable; safe to persist.
///
/// ```
/// use std::time::Duration;
/// use metered_clock::Timestamp;
///
/// let t = Timestamp::from_unix_millis(1_000);
/// assert_eq!(t.checked_add(Duration::from_millis(500)), Some(Timestamp::from_unix_millis(1_500)));
/// assert_eq!(Timestamp::MAX.checked_add(Duration::from_millis(1)), None);
/// ```
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);
    /// The latest representable instant; useful as "never expires".
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    /// A timestamp `millis` milliseconds after the Unix epoch.
    #[must_use]
    pub const fn from_unix_millis(millis: u64) -> Self {
        Timestamp(millis)
    }

    /// Milliseconds since the Unix epoch.
    #[must_use]
    pub const fn as_unix_millis(self) -> u64 {
        self.0
    }

    /// `self + d`, or `None` if it does not fit. Sub-millisecond parts of `d` are dropped.
    #[must_use]
    pub fn checked_add(self, d: Duration) -> Option<Self> {
        let ms = u64::try_from(d.as_millis()).ok()?;
        self.0.checked_add(ms).map(Timestamp)
    }

    /// `self + d`, saturating at [`Timestamp::MAX`].
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Self {
        self.checked_add(d).unwrap_or(Timestamp::MAX)
    }

    /// How long after `earlier` this is, or zero if `earlier` is later.
    #[must_use]
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// A monotonic instant: nanoseconds since the clock's origin.
///
/// Only comparable with ticks from the same clock. Never persist it.
///
/// ```
/// use std::time::Duration;
/// use metered_clock::Tick;
///
/// let a = Tick::from_nanos(1_000);
/// let b = a.saturating_add(Duration::from_micros(1));
/// assert_eq!(b.saturating_duration_since(a), Duration::from_micros(1));
/// assert_eq!(a.saturating_duration_since(b), Duration::ZERO);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tick(u64);

impl Tick {
    /// The clock's origin.
    pub const ZERO: Tick = Tick(0);

    /// A tick `nanos` nanoseconds after the origin.
    #[must_use]
    pub const fn from_nanos(nanos: u64) -> Self {
        Tick(nanos)
    }

    /// Nanoseconds since the origin.
    #[must_use]
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating at `u64::MAX` nanoseconds (about 584 years).
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Self {
        Tick(self.0.saturating_add(duration_nanos(d)))
    }

    /// How long after `earlier` this is, or zero if `earlier` is later.
    #[must_use]
    pub fn saturating_duration_since(self, earlier: Tick) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// `d` in whole nanoseconds, saturating at `u64::MAX`.
#[must_use]
pub fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A source of wall-clock and monotonic time.
///
/// Implementations must be cheap to call (they sit on hot paths) and thread-safe.
/// Use [`SystemClock`] in production and [`ManualClock`] in tests.
///
/// ```
/// use std::sync::Arc;
/// use metered_clock::{Clock, SystemClock};
///
/// fn expired(clock: &dyn Clock, deadline: metered_clock::Timestamp) -> bool {
///     clock.now() >= deadline
/// }
/// let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
/// assert!(expired(clock.as_ref(), metered_clock::Timestamp::EPOCH));
/// ```
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current wall-clock time. May jump in either direction between calls.
    fn now(&self) -> Timestamp;

    /// The current monotonic time. Never decreases between calls on the same clock.
    fn monotonic(&self) -> Tick;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
    fn monotonic(&self) -> Tick {
        (**self).monotonic()
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
    fn monotonic(&self) -> Tick {
        (**self).monotonic()
    }
}

/// The operating system's clocks: `SystemTime` for wall time, `Instant` for monotonic time.
///
/// The monotonic origin is the moment the clock was made.
///
/// ```
/// use metered_clock::{Clock, SystemClock};
///
/// let clock = SystemClock::new();
/// let a = clock.monotonic();
/// let b = clock.monotonic();
/// assert!(b >= a);
/// assert!(clock.now().as_unix_millis() > 1_600_000_000_000);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct SystemClock {
    origin: std::time::Instant,
}

impl SystemClock {
    /// A system clock whose monotonic origin is now.
    #[must_use]
    #[allow(clippy::disallowed_methods)] // The one place allowed to read the OS clock.
    pub fn new() -> Self {
        SystemClock {
            origin: std::time::Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // The one place allowed to read the OS clock.
    fn now(&self) -> Timestamp {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
    }

    #[allow(clippy::disallowed_methods)] // The one place allowed to read the OS clock.
    fn monotonic(&self) -> Tick {
        Tick(duration_nanos(self.origin.elapsed()))
    }
}

/// A clock that moves only when told to. Clones share the same time.
///
/// [`advance`](ManualClock::advance) moves both wall and monotonic time forward together;
/// [`set_now`](ManualClock::set_now) jumps the wall clock alone (in either direction), as NTP
/// or an operator might, leaving monotonic time untouched.
///
/// ```
/// use std::time::Duration;
/// use metered_clock::{Clock, ManualClock, Timestamp};
///
/// let clock = ManualClock::new(Timestamp::from_unix_millis(10_000));
/// let shared = clock.clone();
/// clock.advance(Duration::from_millis(250));
/// assert_eq!(shared.now(), Timestamp::from_unix_millis(10_250));
/// assert_eq!(shared.monotonic().as_nanos(), 250_000_000);
///
/// clock.set_now(Timestamp::from_unix_millis(5_000)); // wall clock stepped back
/// assert_eq!(shared.now(), Timestamp::from_unix_millis(5_000));
/// assert_eq!(shared.monotonic().as_nanos(), 250_000_000); // monotonic unaffected
/// ```
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

#[derive(Debug, Default)]
struct ManualInner {
    wall_ms: AtomicU64,
    mono_ns: AtomicU64,
}

impl ManualClock {
    /// A manual clock reading `start` on the wall and zero on the monotonic clock.
    #[must_use]
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            inner: Arc::new(ManualInner {
                wall_ms: AtomicU64::new(start.0),
                mono_ns: AtomicU64::new(0),
            }),
        }
    }

    /// Moves wall and monotonic time forward by `d` (saturating).
    pub fn advance(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let ns = duration_nanos(d);
        // fetch_update never fails with a closure returning Some.
        let _ = self
            .inner
            .wall_ms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_add(ms))
            });
        let _ = self
            .inner
            .mono_ns
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_add(ns))
            });
    }

    /// Sets the wall clock to `t` (forwards or backwards); monotonic time is unchanged.
    pub fn set_now(&self, t: Timestamp) {
        self.inner.wall_ms.store(t.0, Ordering::Release);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.inner.wall_ms.load(Ordering::Acquire))
    }

    fn monotonic(&self) -> Tick {
        Tick(self.inner.mono_ns.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_arithmetic_saturates_and_checks() {
        let t = Timestamp::from_unix_millis(u64::MAX - 1);
        assert_eq!(t.checked_add(Duration::from_millis(2)), None);
        assert_eq!(t.saturating_add(Duration::from_millis(2)), Timestamp::MAX);
        assert_eq!(t.checked_add(Duration::from_micros(999)), Some(t));
        assert_eq!(
            Timestamp::EPOCH.saturating_duration_since(t),
            Duration::ZERO
        );
        assert_eq!(Timestamp::MAX.checked_add(Duration::MAX), None);
    }

    #[test]
    fn manual_clock_advance_saturates() {
        let c = ManualClock::new(Timestamp::MAX);
        c.advance(Duration::MAX);
        assert_eq!(c.now(), Timestamp::MAX);
        assert_eq!(c.monotonic().as_nanos(), u64::MAX);
    }

    #[test]
    fn clock_works_through_dyn_and_arc() {
        let c = ManualClock::new(Timestamp::from_unix_millis(7));
        let dynamic: Arc<dyn Clock> = Arc::new(c.clone());
        c.advance(Duration::from_millis(3));
        assert_eq!(dynamic.now(), Timestamp::from_unix_millis(10));
        fn read<C: Clock>(clock: C) -> Tick {
            clock.monotonic()
        }
        assert_eq!(read(&c), Tick::from_nanos(3_000_000));
    }
}
