//! A lock-free circuit breaker: closed → open → half-open → closed, plus disabled, forced-open
//! and metrics-only states.
//!
//! ```
//! use std::time::Duration;
//! use metered_clock::{ManualClock, Timestamp};
//! use resilience::{BreakerConfig, CircuitBreaker, OpenWait, State};
//!
//! let clock = ManualClock::new(Timestamp::EPOCH);
//! let config = BreakerConfig::builder()
//!     .name("db")
//!     .count_window(10)
//!     .minimum_calls(4)
//!     .failure_rate_threshold(50)
//!     .open_wait(OpenWait::Fixed(Duration::from_secs(5)))
//!     .half_open_calls(2)
//!     .build()?;
//! let breaker = CircuitBreaker::with_clock(config, clock.clone());
//!
//! for _ in 0..2 {
//!     breaker.try_acquire()?.record_success();
//!     breaker.try_acquire()?.record_failure();
//! }
//! assert_eq!(breaker.state(), State::Open); // 2 failures in 4 calls = 50%
//! assert!(breaker.try_acquire().is_err());
//!
//! clock.advance(Duration::from_secs(5)); // the next call is a trial call
//! breaker.try_acquire()?.record_success();
//! assert_eq!(breaker.state(), State::HalfOpen);
//! breaker.try_acquire()?.record_success();
//! assert_eq!(breaker.state(), State::Closed);
//! # Ok::<(), resilience::ResilienceError>(())
//! ```

mod core;
#[cfg(feature = "tower")]
mod layer;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use metered_clock::{Clock, SystemClock, Tick};

use self::core::{
    COUNT_WINDOW_MAX, Core, CountWindow, HALF_OPEN_CALLS_MAX, Settings, TimeWindow, Transition,
    Window,
};
pub use self::core::{CallOutcome, OpenWait, State};
#[cfg(feature = "tower")]
pub use self::layer::{
    BreakerGuard, CircuitBreakerLayer, CircuitBreakerService, Classify, OkIsSuccess,
};
use crate::error::{CallError, ResilienceError};

/// Longest time-based window, in seconds.
pub const TIME_WINDOW_SECS_MAX: u32 = 3_600;

/// Something that happened to a breaker, delivered to the listener set with
/// [`BreakerConfigBuilder::on_event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerEvent {
    /// The state changed.
    Transition {
        /// The state before.
        from: State,
        /// The state after.
        to: State,
    },
    /// A permitted call recorded its outcome.
    Recorded {
        /// How the call was classified.
        outcome: CallOutcome,
        /// Whether it took at least the slow-call duration.
        slow: bool,
    },
    /// A call was not permitted.
    Rejected {
        /// The state that rejected it.
        state: State,
    },
}

type Listener = Arc<dyn Fn(&BreakerEvent) + Send + Sync>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WindowKind {
    Count(u32),
    TimeSecs(u32),
}

/// A validated circuit-breaker configuration. Build one with [`BreakerConfig::builder`].
#[derive(Clone)]
pub struct BreakerConfig {
    name: Arc<str>,
    settings: Settings,
    window: WindowKind,
    slow_call: Option<Duration>,
    listener: Option<Listener>,
    metrics: bool,
}

impl fmt::Debug for BreakerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerConfig")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .field("window", &self.window)
            .field("slow_call", &self.slow_call)
            .field("listener", &self.listener.is_some())
            .field("metrics", &self.metrics)
            .finish()
    }
}

impl BreakerConfig {
    /// A builder with the defaults: name `"default"`, a count window of 100 calls, judged
    /// from 100 calls at a 50 % failure rate, slow calls not considered, a fixed open wait of
    /// 60 s, 10 half-open trial calls with no maximum half-open wait, no listener, no metrics.
    pub fn builder() -> BreakerConfigBuilder {
        BreakerConfigBuilder {
            name: Arc::from("default"),
            failure_rate_percent: 50,
            slow: None,
            window: WindowKind::Count(100),
            minimum_calls: 100,
            open_wait: OpenWait::Fixed(Duration::from_secs(60)),
            half_open_calls: 10,
            half_open_max_wait: Duration::ZERO,
            listener: None,
            metrics: false,
        }
    }

    /// The breaker's name (used in logs and metric labels).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Builder for [`BreakerConfig`]; [`build`](Self::build) validates every setting.
#[must_use]
pub struct BreakerConfigBuilder {
    name: Arc<str>,
    failure_rate_percent: u8,
    slow: Option<(Duration, u8)>,
    window: WindowKind,
    minimum_calls: u32,
    open_wait: OpenWait,
    half_open_calls: u32,
    half_open_max_wait: Duration,
    listener: Option<Listener>,
    metrics: bool,
}

impl fmt::Debug for BreakerConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerConfigBuilder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn invalid(field: &'static str, reason: &'static str) -> ResilienceError {
    ResilienceError::InvalidConfig { field, reason }
}

impl BreakerConfigBuilder {
    /// The name used in `tracing` events and as the `name` label of metrics.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Open when at least this percentage (1..=100) of the calls in the window failed.
    pub fn failure_rate_threshold(mut self, percent: u8) -> Self {
        self.failure_rate_percent = percent;
        self
    }

    /// Count a call that takes at least `duration` as slow, and open when at least
    /// `rate_percent` (1..=100) of the calls in the window were slow. Without this setting
    /// no clock is read for calls while closed.
    pub fn slow_calls(mut self, duration: Duration, rate_percent: u8) -> Self {
        self.slow = Some((duration, rate_percent));
        self
    }

    /// Judge the last `size` calls (1..=32768).
    pub fn count_window(mut self, size: u32) -> Self {
        self.window = WindowKind::Count(size);
        self
    }

    /// Judge the calls of the last `secs` whole seconds (1..=3600).
    pub fn time_window_secs(mut self, secs: u32) -> Self {
        self.window = WindowKind::TimeSecs(secs);
        self
    }

    /// Judge nothing until the window holds at least this many calls (≥ 1, and no more than
    /// a count window's size).
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.minimum_calls = calls;
        self
    }

    /// How long to stay open before trial calls.
    pub fn open_wait(mut self, wait: OpenWait) -> Self {
        self.open_wait = wait;
        self
    }

    /// How many trial calls half-open state admits (1..=4095); once all have an outcome,
    /// their failure and slow rates decide between closed and open.
    pub fn half_open_calls(mut self, calls: u32) -> Self {
        self.half_open_calls = calls;
        self
    }

    /// Re-open if half-open state lasts this long without a decision (zero: wait for the
    /// trial calls however long they take).
    pub fn half_open_max_wait(mut self, wait: Duration) -> Self {
        self.half_open_max_wait = wait;
        self
    }

    /// Calls `listener` on every transition, recorded outcome and rejection. Runs on the
    /// caller's thread inside the breaker call: keep it short and non-blocking.
    pub fn on_event(mut self, listener: impl Fn(&BreakerEvent) + Send + Sync + 'static) -> Self {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// Publish `circuit_breaker_state` (gauge, see [`State::gauge_value`]) and
    /// `circuit_breaker_calls_total` (counter, label `kind`: `successful`, `failed`,
    /// `ignored`, `not_permitted`) through the `metrics` facade, both labelled with `name`.
    /// Off by default: each count costs a call into the installed recorder.
    pub fn metrics(mut self, enabled: bool) -> Self {
        self.metrics = enabled;
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    ///
    /// [`ResilienceError::InvalidConfig`] naming the first bad setting: an empty name, a rate outside
    /// 1..=100 %, a zero or oversized window, zero minimum calls or more than a count window
    /// holds, zero or too many half-open calls, a zero open wait, an exponential open wait
    /// whose maximum is below its initial wait, or a zero slow-call duration.
    pub fn build(self) -> Result<BreakerConfig, ResilienceError> {
        if self.name.is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        if !(1..=100).contains(&self.failure_rate_percent) {
            return Err(invalid(
                "failure_rate_threshold",
                "must be between 1 and 100 percent",
            ));
        }
        let (slow_call, slow_rate_percent) = match self.slow {
            None => (None, 0),
            Some((d, rate)) => {
                if d.is_zero() {
                    return Err(invalid("slow_call_duration", "must be positive"));
                }
                if !(1..=100).contains(&rate) {
                    return Err(invalid(
                        "slow_call_rate_threshold",
                        "must be between 1 and 100 percent",
                    ));
                }
                (Some(d), rate)
            }
        };
        match self.window {
            WindowKind::Count(size) => {
                if size == 0 {
                    return Err(invalid("count_window", "must hold at least one call"));
                }
                if size > COUNT_WINDOW_MAX {
                    return Err(invalid("count_window", "must not exceed 32768 calls"));
                }
                if self.minimum_calls > size {
                    return Err(invalid(
                        "minimum_calls",
                        "must not exceed the count window size",
                    ));
                }
            }
            WindowKind::TimeSecs(secs) => {
                if secs == 0 {
                    return Err(invalid("time_window_secs", "must be at least one second"));
                }
                if secs > TIME_WINDOW_SECS_MAX {
                    return Err(invalid("time_window_secs", "must not exceed 3600 seconds"));
                }
            }
        }
        if self.minimum_calls == 0 {
            return Err(invalid("minimum_calls", "must be at least 1"));
        }
        if self.half_open_calls == 0 {
            return Err(invalid("half_open_calls", "must be at least 1"));
        }
        if self.half_open_calls > HALF_OPEN_CALLS_MAX {
            return Err(invalid("half_open_calls", "must not exceed 4095"));
        }
        match self.open_wait {
            OpenWait::Fixed(d) if d.is_zero() => {
                return Err(invalid("open_wait", "must be positive"));
            }
            OpenWait::Exponential { initial, max } => {
                if initial.is_zero() {
                    return Err(invalid("open_wait", "initial wait must be positive"));
                }
                if max < initial {
                    return Err(invalid(
                        "open_wait",
                        "maximum must not be less than the initial wait",
                    ));
                }
            }
            OpenWait::Fixed(_) => {}
        }
        Ok(BreakerConfig {
            name: self.name,
            settings: Settings {
                failure_rate_percent: self.failure_rate_percent,
                slow_rate_percent,
                minimum_calls: self.minimum_calls,
                half_open_calls: self.half_open_calls,
                half_open_max_wait_us: u64::try_from(self.half_open_max_wait.as_micros())
                    .unwrap_or(u64::MAX),
                open_wait: self.open_wait,
            },
            window: self.window,
            slow_call,
            listener: self.listener,
            metrics: self.metrics,
        })
    }
}

/// A snapshot of a breaker's statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The state when the snapshot was taken.
    pub state: State,
    /// Calls with an outcome in the window (ignored calls are not counted).
    pub calls: u64,
    /// Failed calls in the window.
    pub failed_calls: u64,
    /// Slow calls (successful or not) in the window.
    pub slow_calls: u64,
    /// Calls rejected since the breaker was made.
    pub not_permitted_calls: u64,
}

impl Stats {
    /// Failed calls as a whole percentage of calls (rounded down), or `None` with no calls.
    #[must_use]
    pub fn failure_rate_percent(&self) -> Option<u8> {
        percent(self.failed_calls, self.calls)
    }

    /// Slow calls as a whole percentage of calls (rounded down), or `None` with no calls.
    #[must_use]
    pub fn slow_call_rate_percent(&self) -> Option<u8> {
        percent(self.slow_calls, self.calls)
    }
}

fn percent(part: u64, whole: u64) -> Option<u8> {
    (whole > 0).then(|| u8::try_from(part.min(whole) * 100 / whole).unwrap_or(100))
}

struct BreakerMetrics {
    successful: metrics::Counter,
    failed: metrics::Counter,
    ignored: metrics::Counter,
    not_permitted: metrics::Counter,
    state: metrics::Gauge,
}

impl BreakerMetrics {
    fn register(name: &Arc<str>) -> Self {
        let calls = |kind: &'static str| metrics::counter!("circuit_breaker_calls_total", "name" => name.to_string(), "kind" => kind);
        let m = BreakerMetrics {
            successful: calls("successful"),
            failed: calls("failed"),
            ignored: calls("ignored"),
            not_permitted: calls("not_permitted"),
            state: metrics::gauge!("circuit_breaker_state", "name" => name.to_string()),
        };
        m.state.set(f64::from(State::Closed.gauge_value()));
        m
    }
}

struct Inner<C> {
    core: Core,
    clock: C,
    name: Arc<str>,
    slow_call_ns: Option<u64>,
    /// True when a listener or metrics are set: the only extra cost on the hot path when
    /// neither is.
    observed: bool,
    listener: Option<Listener>,
    metrics: Option<BreakerMetrics>,
}

/// A circuit breaker. Cheap to clone: clones share the same state.
///
/// Generic over the [`Clock`] so the hot path is monomorphised; [`CircuitBreaker::new`]
/// uses the [`SystemClock`], [`CircuitBreaker::with_clock`] any other (a `ManualClock` in
/// tests). The state machine reads the clock only when it needs time: while open, in
/// half-open with every trial permit out, for a time-based window, or for slow-call timing.
///
/// ```
/// use std::time::Duration;
/// use metered_clock::{ManualClock, Timestamp};
/// use resilience::{BreakerConfig, CircuitBreaker, OpenWait, State};
///
/// let clock = ManualClock::new(Timestamp::EPOCH);
/// let config = BreakerConfig::builder()
///     .name("db")
///     .count_window(10)
///     .minimum_calls(4)
///     .failure_rate_threshold(50)
///     .open_wait(OpenWait::Fixed(Duration::from_secs(5)))
///     .half_open_calls(2)
///     .build()?;
/// let breaker = CircuitBreaker::with_clock(config, clock.clone());
///
/// for _ in 0..2 {
///     breaker.try_acquire()?.record_success();
///     breaker.try_acquire()?.record_failure();
/// }
/// assert_eq!(breaker.state(), State::Open); // 2 failures in 4 calls = 50%
/// assert!(breaker.try_acquire().is_err());
///
/// clock.advance(Duration::from_secs(5)); // the next call is a trial call
/// breaker.try_acquire()?.record_success();
/// assert_eq!(breaker.state(), State::HalfOpen);
/// breaker.try_acquire()?.record_success();
/// assert_eq!(breaker.state(), State::Closed);
/// # Ok::<(), resilience::ResilienceError>(())
/// ```
pub struct CircuitBreaker<C = SystemClock> {
    inner: Arc<Inner<C>>,
}

impl<C> Clone for CircuitBreaker<C> {
    fn clone(&self) -> Self {
        CircuitBreaker {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C: Clock> fmt::Debug for CircuitBreaker<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.inner.name)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl CircuitBreaker<SystemClock> {
    /// A breaker on the operating system's clock.
    #[must_use]
    pub fn new(config: BreakerConfig) -> Self {
        Self::with_clock(config, SystemClock::new())
    }
}

impl<C: Clock> CircuitBreaker<C> {
    /// A breaker reading time from `clock`.
    #[must_use]
    pub fn with_clock(config: BreakerConfig, clock: C) -> Self {
        let window = match config.window {
            WindowKind::Count(size) => Window::Count(CountWindow::new(size)),
            WindowKind::TimeSecs(secs) => Window::Time(TimeWindow::new(secs)),
        };
        let metrics = config
            .metrics
            .then(|| BreakerMetrics::register(&config.name));
        CircuitBreaker {
            inner: Arc::new(Inner {
                core: Core::new(config.settings, window),
                clock,
                observed: config.listener.is_some() || metrics.is_some(),
                slow_call_ns: config
                    .slow_call
                    .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
                name: config.name,
                listener: config.listener,
                metrics,
            }),
        }
    }

    /// The breaker's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    #[inline]
    fn now_us(&self) -> u64 {
        self.inner.clock.monotonic().as_nanos() / 1_000
    }

    /// Asks to make one call. Record its outcome on the returned [`Permit`]; dropping the
    /// permit without an outcome (a cancelled call) hands a half-open trial slot back.
    ///
    /// # Errors
    ///
    /// [`ResilienceError::CircuitOpen`] while open (with the time left in the open wait), forced open,
    /// or half-open with every trial permit out.
    ///
    /// ```
    /// use resilience::{BreakerConfig, CircuitBreaker, CallOutcome};
    ///
    /// let breaker = CircuitBreaker::new(BreakerConfig::builder().build()?);
    /// let permit = breaker.try_acquire()?;
    /// let result: Result<u32, &str> = Ok(7); // the protected call
    /// permit.record(if result.is_ok() { CallOutcome::Success } else { CallOutcome::Failure });
    /// # Ok::<(), resilience::ResilienceError>(())
    /// ```
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_, C>, ResilienceError> {
        let inner = &*self.inner;
        let (admitted, transition) = inner.core.try_acquire(&|| self.now_us());
        if let Some(t) = transition {
            self.on_transition(t);
        }
        match admitted {
            Ok(tag) => Ok(Permit {
                breaker: self,
                tag,
                started: inner.slow_call_ns.map(|_| inner.clock.monotonic()),
                done: false,
            }),
            Err(rejection) => {
                if inner.observed {
                    self.observe(BreakerEvent::Rejected {
                        state: self.state(),
                    });
                }
                Err(ResilienceError::CircuitOpen {
                    retry_after: rejection.retry_after_us.map(Duration::from_micros),
                })
            }
        }
    }

    /// Like [`try_acquire`](Self::try_acquire), for a permit that must outlive the borrow
    /// of the breaker (a spawned task, a `tower` response future). Costs one reference
    /// count increment more.
    ///
    /// # Errors
    ///
    /// As [`try_acquire`](Self::try_acquire).
    pub fn try_acquire_owned(&self) -> Result<OwnedPermit<C>, ResilienceError> {
        let permit = self.try_acquire()?;
        let owned = OwnedPermit {
            breaker: self.clone(),
            tag: permit.tag,
            started: permit.started,
            done: false,
        };
        std::mem::forget(permit); // Ownership of the slot moves to `owned`.
        Ok(owned)
    }

    /// Runs `fut` if the breaker permits, counting `Ok` as success and `Err` as failure.
    ///
    /// If the returned future is dropped before `fut` completes, the call is recorded as
    /// nothing at all and a half-open trial permit is handed back.
    ///
    /// # Errors
    ///
    /// [`CallError::Rejected`] with [`ResilienceError::CircuitOpen`] when not permitted (and `fut` is
    /// never polled), or [`CallError::Inner`] with `fut`'s own error.
    pub async fn call<T, E, F>(&self, fut: F) -> Result<T, CallError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        self.call_with(classify_result, fut).await
    }

    /// Like [`call`](Self::call), with `classify` deciding what each result means (e.g.
    /// a "not found" error is [`CallOutcome::Ignored`], not a failure of the backend).
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call).
    pub async fn call_with<T, E, F, K>(&self, classify: K, fut: F) -> Result<T, CallError<E>>
    where
        F: Future<Output = Result<T, E>>,
        K: FnOnce(&Result<T, E>) -> CallOutcome,
    {
        let permit = self.try_acquire()?;
        let result = fut.await;
        permit.record(classify(&result));
        result.map_err(CallError::Inner)
    }

    /// The current state. An open breaker whose wait is over still reports `Open` until the
    /// next call makes it half-open.
    #[must_use]
    pub fn state(&self) -> State {
        self.inner.core.state()
    }

    /// The time left in the open wait, or `None` unless open.
    #[must_use]
    pub fn remaining_open_wait(&self) -> Option<Duration> {
        let until = self.inner.core.open_until_us()?;
        Some(Duration::from_micros(until.saturating_sub(self.now_us())))
    }

    /// A snapshot of the window's counts, the state and the rejections so far.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let c = self.inner.core.counts(&|| self.now_us());
        Stats {
            state: self.state(),
            calls: c.calls,
            failed_calls: c.failures.min(c.calls),
            slow_calls: c.slow.min(c.calls),
            not_permitted_calls: self.inner.core.rejected(),
        }
    }

    fn manual(&self, to: State) {
        if let Some(t) = self.inner.core.transition_to(to, &|| self.now_us()) {
            self.on_transition(t);
        }
    }

    /// Closes the breaker and clears its window and its re-open count.
    pub fn reset(&self) {
        self.manual(State::Closed);
    }

    /// Opens the breaker now, for a fresh open wait; the next call after it is a trial call.
    pub fn open(&self) {
        self.manual(State::Open);
    }

    /// Rejects every call until [`reset`](Self::reset) (or another manual transition).
    pub fn force_open(&self) {
        self.manual(State::ForcedOpen);
    }

    /// Permits every call and records nothing until [`reset`](Self::reset).
    pub fn disable(&self) {
        self.manual(State::Disabled);
    }

    /// Permits every call and records outcomes (visible in [`stats`](Self::stats)) without
    /// ever changing state, until [`reset`](Self::reset).
    pub fn metrics_only(&self) {
        self.manual(State::MetricsOnly);
    }

    #[cold]
    fn on_transition(&self, t: Transition) {
        tracing::info!(
            breaker = %self.inner.name,
            from = t.from.as_str(),
            to = t.to.as_str(),
            "circuit breaker state changed"
        );
        if let Some(m) = &self.inner.metrics {
            m.state.set(f64::from(t.to.gauge_value()));
        }
        if let Some(listener) = &self.inner.listener {
            listener(&BreakerEvent::Transition {
                from: t.from,
                to: t.to,
            });
        }
    }

    #[cold]
    fn observe(&self, event: BreakerEvent) {
        if let Some(m) = &self.inner.metrics {
            match event {
                BreakerEvent::Recorded { outcome, .. } => match outcome {
                    CallOutcome::Success => m.successful.increment(1),
                    CallOutcome::Failure => m.failed.increment(1),
                    CallOutcome::Ignored => m.ignored.increment(1),
                },
                BreakerEvent::Rejected { .. } => m.not_permitted.increment(1),
                BreakerEvent::Transition { .. } => {}
            }
        }
        if let Some(listener) = &self.inner.listener {
            listener(&event);
        }
    }

    #[inline]
    fn finish(&self, tag: u16, started: Option<Tick>, outcome: CallOutcome) {
        let inner = &*self.inner;
        let slow = match (started, inner.slow_call_ns) {
            (Some(start), Some(limit)) => {
                inner
                    .clock
                    .monotonic()
                    .as_nanos()
                    .saturating_sub(start.as_nanos())
                    >= limit
            }
            _ => false,
        };
        if let Some(t) = inner.core.record(tag, outcome, slow, &|| self.now_us()) {
            self.on_transition(t);
        }
        if inner.observed {
            self.observe(BreakerEvent::Recorded { outcome, slow });
        }
    }
}

/// `Ok` is a success, `Err` a failure: the default classifier.
pub fn classify_result<T, E>(result: &Result<T, E>) -> CallOutcome {
    if result.is_ok() {
        CallOutcome::Success
    } else {
        CallOutcome::Failure
    }
}

/// Permission to make one call through a [`CircuitBreaker`].
///
/// Record the outcome with [`record`](Self::record) (or the shorthands). Dropping the permit
/// without recording (an early return, a cancelled future) records nothing and hands a
/// half-open trial slot back, so a cancelled probe can never leave the breaker stuck.
#[must_use = "record the call's outcome; a dropped permit counts for nothing"]
pub struct Permit<'a, C: Clock> {
    breaker: &'a CircuitBreaker<C>,
    tag: u16,
    started: Option<Tick>,
    done: bool,
}

impl<C: Clock> fmt::Debug for Permit<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("breaker", &self.breaker.name())
            .finish_non_exhaustive()
    }
}

impl<C: Clock> Permit<'_, C> {
    /// Records how the call ended.
    #[inline]
    pub fn record(mut self, outcome: CallOutcome) {
        self.done = true;
        self.breaker.finish(self.tag, self.started, outcome);
    }

    /// Records a success.
    #[inline]
    pub fn record_success(self) {
        self.record(CallOutcome::Success);
    }

    /// Records a failure.
    #[inline]
    pub fn record_failure(self) {
        self.record(CallOutcome::Failure);
    }
}

impl<C: Clock> Drop for Permit<'_, C> {
    #[inline]
    fn drop(&mut self) {
        if !self.done {
            self.breaker.inner.core.release(self.tag);
        }
    }
}

/// A [`Permit`] that owns a handle to its breaker; see
/// [`CircuitBreaker::try_acquire_owned`]. Same contract: record an outcome, or drop it to
/// hand a half-open slot back.
#[must_use = "record the call's outcome; a dropped permit counts for nothing"]
pub struct OwnedPermit<C: Clock> {
    breaker: CircuitBreaker<C>,
    tag: u16,
    started: Option<Tick>,
    done: bool,
}

impl<C: Clock> fmt::Debug for OwnedPermit<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPermit")
            .field("breaker", &self.breaker.name())
            .finish_non_exhaustive()
    }
}

impl<C: Clock> OwnedPermit<C> {
    /// Records how the call ended.
    pub fn record(mut self, outcome: CallOutcome) {
        self.done = true;
        self.breaker.finish(self.tag, self.started, outcome);
    }

    /// Records a success.
    pub fn record_success(self) {
        self.record(CallOutcome::Success);
    }

    /// Records a failure.
    pub fn record_failure(self) {
        self.record(CallOutcome::Failure);
    }
}

impl<C: Clock> Drop for OwnedPermit<C> {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.inner.core.release(self.tag);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::core::{CountWindow, Counts};

    #[test]
    fn fast_modulo_matches_the_remainder() {
        for size in [1u32, 2, 3, 7, 10, 100, 1_000, 32_768] {
            let w = CountWindow::new(size);
            for k in (0..5_000u64).chain([u64::from(u32::MAX) - 3, u64::from(u32::MAX)]) {
                assert_eq!(
                    w.slot_of(k) as u64,
                    k % u64::from(size),
                    "k={k} size={size}"
                );
            }
        }
    }

    #[test]
    fn totals_follow_the_ring_through_laps() {
        let w = CountWindow::new(5);
        for i in 0..40u32 {
            let _ = w.record(i % 3 == 0, i % 7 == 0);
            assert_eq!(w.counts(), w.recount(), "after record {i}");
        }
        w.reset();
        assert_eq!(w.counts(), Counts::default());
        assert_eq!(w.recount(), Counts::default());
    }
}
