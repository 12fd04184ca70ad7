//! The circuit breaker's lock-free state machine and sliding windows.
//!
//! This file is pure: callers pass monotonic time in microseconds (lazily, through a closure,
//! so paths that need no time read no clock), and it performs no I/O. It only uses atomics
//! and a mutex through `crate::sync`, so the model-checking test (`tests/model.rs`) compiles
//! this same file against shuttle's instrumented atomics.
//!
//! # The state word
//!
//! The whole state lives in one `AtomicU64`, changed only by compare-and-swap:
//!
//! ```text
//!  63                                16 15            3 2     0
//! ┌────────────────────────────────────┬───────────────┬───────┐
//! │ payload (48 bits)                  │ generation    │ kind  │
//! └────────────────────────────────────┴───────────────┴───────┘
//! ```
//!
//! * `kind` is the [`State`];
//! * `generation` increases on every transition; a permit remembers the low 16 bits of the
//!   word (its *tag*) and an outcome recorded under another tag is ignored, so a slow call
//!   admitted before a transition cannot move the state machine afterwards;
//! * `payload` is, while open, the instant (µs) the open wait ends; while half-open, four
//!   12-bit counters: permits issued, outcomes recorded, failures, slow calls.
//!
//! Because the half-open counters share the word with the generation, a permit handed back
//! by a cancelled call (`release`) can never leak into a later half-open phase.
#![allow(clippy::cast_possible_truncation)] // Every narrowing below is masked or bounded first.

use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::sync::Mutex;
use crate::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

/// The state of a circuit breaker.
///
/// `Closed`, `Open` and `HalfOpen` are driven by outcomes; the other three are set by hand
/// and stay until [`reset`](crate::CircuitBreaker::reset) or another manual transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Calls flow; outcomes are recorded in the sliding window.
    Closed,
    /// Calls are rejected until the open wait ends.
    Open,
    /// A bounded number of trial calls decide between `Closed` and `Open`.
    HalfOpen,
    /// Every call is permitted and nothing is recorded.
    Disabled,
    /// Every call is rejected until a manual transition.
    ForcedOpen,
    /// Every call is permitted; outcomes are recorded but never change the state.
    MetricsOnly,
}

impl State {
    /// The numeric value published on the `circuit_breaker_state` gauge:
    /// closed 0, open 1, half-open 2, disabled 3, forced-open 4, metrics-only 5.
    #[must_use]
    pub const fn gauge_value(self) -> u8 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
            State::Disabled => 3,
            State::ForcedOpen => 4,
            State::MetricsOnly => 5,
        }
    }

    /// A short lowercase name (`"closed"`, `"half_open"`, …) for logs and labels.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::Disabled => "disabled",
            State::ForcedOpen => "forced_open",
            State::MetricsOnly => "metrics_only",
        }
    }

    const fn kind(self) -> u64 {
        self.gauge_value() as u64
    }

    const fn from_kind(kind: u64) -> State {
        match kind {
            0 => State::Closed,
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::Disabled,
            4 => State::ForcedOpen,
            _ => State::MetricsOnly,
        }
    }
}

/// How a call ended, as far as the breaker is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// Counts towards the calls and not towards the failures.
    Success,
    /// Counts towards the calls and the failures.
    Failure,
    /// Not counted at all (e.g. a client error that says nothing about the backend's health).
    /// In half-open state, an ignored call hands its trial permit back.
    Ignored,
}

/// How long the breaker stays open before letting trial calls through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenWait {
    /// The same wait every time.
    Fixed(Duration),
    /// `initial`, doubled each time the breaker re-opens from half-open without closing in
    /// between, never more than `max`.
    Exponential {
        /// The first wait.
        initial: Duration,
        /// The longest wait.
        max: Duration,
    },
}

impl OpenWait {
    /// The wait after `reopens` consecutive re-openings (0 for the first opening).
    #[must_use]
    pub fn wait(&self, reopens: u32) -> Duration {
        match *self {
            OpenWait::Fixed(d) => d,
            OpenWait::Exponential { initial, max } => {
                let factor = 1u32.checked_shl(reopens.min(31)).unwrap_or(u32::MAX);
                initial.checked_mul(factor).unwrap_or(max).min(max)
            }
        }
    }
}

/// Validated settings the state machine reads on every decision.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) failure_rate_percent: u8,
    /// 0 means slow calls never trip the breaker.
    pub(crate) slow_rate_percent: u8,
    pub(crate) minimum_calls: u32,
    pub(crate) half_open_calls: u32,
    /// 0 means the breaker waits in half-open until every trial call has an outcome.
    pub(crate) half_open_max_wait_us: u64,
    pub(crate) open_wait: OpenWait,
}

impl Settings {
    fn trips(&self, calls: u64, failures: u64, slow: u64) -> bool {
        calls > 0
            && (failures * 100 >= u64::from(self.failure_rate_percent) * calls
                || (self.slow_rate_percent > 0
                    && slow * 100 >= u64::from(self.slow_rate_percent) * calls))
    }
}

/// Calls, failures and slow calls currently in a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

/// A change of state, reported so the caller can emit events, logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Transition {
    pub(crate) from: State,
    pub(crate) to: State,
}

/// Why a call was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rejection {
    /// Time until the open wait ends, when known.
    pub(crate) retry_after_us: Option<u64>,
}

const KIND_MASK: u64 = 0b111;
const GEN_SHIFT: u32 = 3;
const GEN_MASK: u64 = (1 << 13) - 1;
const TAG_MASK: u64 = (1 << 16) - 1;
const PAYLOAD_SHIFT: u32 = 16;
const PAYLOAD_MAX: u64 = (1 << 48) - 1;
/// Largest number of half-open trial calls (each half-open counter has 12 bits).
pub(crate) const HALF_OPEN_CALLS_MAX: u32 = (1 << 12) - 1;
const HO_MASK: u64 = (1 << 12) - 1;

const fn kind_of(word: u64) -> u64 {
    word & KIND_MASK
}

const fn tag_of(word: u64) -> u16 {
    (word & TAG_MASK) as u16
}

const fn payload_of(word: u64) -> u64 {
    word >> PAYLOAD_SHIFT
}

/// A word for `state`, one generation after `prev`, carrying `payload`.
const fn next_word(prev: u64, state: State, payload: u64) -> u64 {
    let generation = ((prev >> GEN_SHIFT) + 1) & GEN_MASK;
    state.kind() | (generation << GEN_SHIFT) | (payload << PAYLOAD_SHIFT)
}

/// `prev` with its payload replaced (same state and generation).
const fn with_payload(prev: u64, payload: u64) -> u64 {
    (prev & TAG_MASK) | (payload << PAYLOAD_SHIFT)
}

#[derive(Clone, Copy)]
struct HalfOpen {
    issued: u64,
    recorded: u64,
    failures: u64,
    slow: u64,
}

impl HalfOpen {
    const fn unpack(payload: u64) -> Self {
        HalfOpen {
            issued: payload & HO_MASK,
            recorded: (payload >> 12) & HO_MASK,
            failures: (payload >> 24) & HO_MASK,
            slow: (payload >> 36) & HO_MASK,
        }
    }

    const fn pack(self) -> u64 {
        (self.issued & HO_MASK)
            | ((self.recorded & HO_MASK) << 12)
            | ((self.failures & HO_MASK) << 24)
            | ((self.slow & HO_MASK) << 36)
    }
}

/// The breaker's shared state.
#[derive(Debug)]
pub(crate) struct Core {
    state: CachePadded<AtomicU64>,
    rejected: CachePadded<AtomicU64>,
    window: Window,
    reopens: AtomicU32,
    half_open_since_us: AtomicU64,
    settings: Settings,
}

impl Core {
    pub(crate) fn new(settings: Settings, window: Window) -> Self {
        Core {
            state: CachePadded::new(AtomicU64::new(State::Closed.kind())),
            rejected: CachePadded::new(AtomicU64::new(0)),
            window,
            reopens: AtomicU32::new(0),
            half_open_since_us: AtomicU64::new(0),
            settings,
        }
    }

    pub(crate) fn state(&self) -> State {
        State::from_kind(kind_of(self.state.load(Ordering::Acquire)))
    }

    pub(crate) fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    pub(crate) fn counts(&self, now_us: &impl Fn() -> u64) -> Counts {
        self.window.counts(now_us)
    }

    /// The open wait's end (µs) while open.
    pub(crate) fn open_until_us(&self) -> Option<u64> {
        let w = self.state.load(Ordering::Acquire);
        (kind_of(w) == State::Open.kind()).then(|| payload_of(w))
    }

    fn reject(&self, retry_after_us: Option<u64>) -> Rejection {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        Rejection { retry_after_us }
    }

    fn open_word(&self, prev: u64, now_us: u64) -> u64 {
        let wait = self
            .settings
            .open_wait
            .wait(self.reopens.load(Ordering::Relaxed));
        let wait_us = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
        next_word(
            prev,
            State::Open,
            now_us.saturating_add(wait_us).min(PAYLOAD_MAX),
        )
    }

    /// Bookkeeping after a successful CAS from `from` to `to`.
    fn transitioned(&self, from: State, to: State) -> Transition {
        match to {
            State::Open => {
                self.reopens.fetch_add(1, Ordering::Relaxed);
            }
            State::Closed => self.reopens.store(0, Ordering::Relaxed),
            _ => {}
        }
        Transition { from, to }
    }

    /// Asks to make a call. On success returns the permit's tag.
    #[inline]
    pub(crate) fn try_acquire(
        &self,
        now_us: &impl Fn() -> u64,
    ) -> (Result<u16, Rejection>, Option<Transition>) {
        let mut w = self.state.load(Ordering::Acquire);
        loop {
            match State::from_kind(kind_of(w)) {
                State::Closed | State::MetricsOnly | State::Disabled => {
                    return (Ok(tag_of(w)), None);
                }
                State::ForcedOpen => return (Err(self.reject(None)), None),
                State::Open => {
                    let now = now_us();
                    let until = payload_of(w);
                    if now < until {
                        return (Err(self.reject(Some(until - now))), None);
                    }
                    // The open wait is over: this call is the first trial call.
                    self.half_open_since_us.store(now, Ordering::Relaxed);
                    let first = HalfOpen {
                        issued: 1,
                        recorded: 0,
                        failures: 0,
                        slow: 0,
                    };
                    let new = next_word(w, State::HalfOpen, first.pack());
                    match self
                        .state
                        .compare_exchange(w, new, Ordering::AcqRel, Ordering::Acquire)
                    {
                        Ok(_) => {
                            let t = self.transitioned(State::Open, State::HalfOpen);
                            return (Ok(tag_of(new)), Some(t));
                        }
                        Err(actual) => w = actual,
                    }
                }
                State::HalfOpen => {
                    let mut ho = HalfOpen::unpack(payload_of(w));
                    if ho.issued < u64::from(self.settings.half_open_calls) {
                        ho.issued += 1;
                        let new = with_payload(w, ho.pack());
                        match self.state.compare_exchange_weak(
                            w,
                            new,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        ) {
                            Ok(_) => return (Ok(tag_of(new)), None),
                            Err(actual) => {
                                w = actual;
                                continue;
                            }
                        }
                    }
                    // Every trial permit is out. Give up on half-open after the maximum wait.
                    let max_wait = self.settings.half_open_max_wait_us;
                    if max_wait > 0 {
                        let now = now_us();
                        let since = self.half_open_since_us.load(Ordering::Relaxed);
                        if now >= since.saturating_add(max_wait) {
                            let new = self.open_word(w, now);
                            match self.state.compare_exchange(
                                w,
                                new,
                                Ordering::AcqRel,
                                Ordering::Acquire,
                            ) {
                                Ok(_) => {
                                    let t = self.transitioned(State::HalfOpen, State::Open);
                                    let retry = payload_of(new).saturating_sub(now);
                                    return (Err(self.reject(Some(retry))), Some(t));
                                }
                                Err(actual) => {
                                    w = actual;
                                    continue;
                                }
                            }
                        }
                    }
                    return (Err(self.reject(None)), None);
                }
            }
        }
    }

    /// Records the outcome of a call admitted under `tag`. `slow` says whether it took longer
    /// than the slow-call threshold.
    #[inline]
    pub(crate) fn record(
        &self,
        tag: u16,
        outcome: CallOutcome,
        slow: bool,
        now_us: &impl Fn() -> u64,
    ) -> Option<Transition> {
        let w = self.state.load(Ordering::Acquire);
        if tag_of(w) != tag {
            return None; // Admitted under an earlier state: says nothing about this one.
        }
        match State::from_kind(kind_of(w)) {
            state @ (State::Closed | State::MetricsOnly) => {
                let failed = match outcome {
                    CallOutcome::Ignored => return None,
                    CallOutcome::Success => false,
                    CallOutcome::Failure => true,
                };
                let c = self.window.record(failed, slow, now_us)?;
                if state == State::Closed
                    && c.calls >= u64::from(self.settings.minimum_calls)
                    && self.settings.trips(c.calls, c.failures, c.slow)
                {
                    let new = self.open_word(w, now_us());
                    if self
                        .state
                        .compare_exchange(w, new, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        return Some(self.transitioned(State::Closed, State::Open));
                    }
                }
                None
            }
            State::HalfOpen => self.record_half_open(w, tag, outcome, slow, now_us),
            _ => None,
        }
    }

    fn record_half_open(
        &self,
        mut w: u64,
        tag: u16,
        outcome: CallOutcome,
        slow: bool,
        now_us: &impl Fn() -> u64,
    ) -> Option<Transition> {
        loop {
            if tag_of(w) != tag {
                return None;
            }
            let mut ho = HalfOpen::unpack(payload_of(w));
            if ho.issued <= ho.recorded {
                return None; // Nothing outstanding under this tag (defensive).
            }
            let (new, to) = match outcome {
                CallOutcome::Ignored => {
                    ho.issued -= 1;
                    (with_payload(w, ho.pack()), None)
                }
                CallOutcome::Success | CallOutcome::Failure => {
                    ho.recorded += 1;
                    ho.failures += u64::from(outcome == CallOutcome::Failure);
                    ho.slow += u64::from(slow);
                    if ho.recorded >= u64::from(self.settings.half_open_calls) {
                        if self.settings.trips(ho.recorded, ho.failures, ho.slow) {
                            (self.open_word(w, now_us()), Some(State::Open))
                        } else {
                            // Nobody records into the window while half-open, so clearing
                            // it before publishing `Closed` races with no writer.
                            self.window.reset();
                            (next_word(w, State::Closed, 0), Some(State::Closed))
                        }
                    } else {
                        (with_payload(w, ho.pack()), None)
                    }
                }
            };
            match self
                .state
                .compare_exchange_weak(w, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return to.map(|to| self.transitioned(State::HalfOpen, to)),
                Err(actual) => w = actual,
            }
        }
    }

    /// Hands back the permit of a call that ended without an outcome (a cancelled future).
    /// Only half-open permits are counted, so only they are returned.
    #[inline]
    pub(crate) fn release(&self, tag: u16) {
        let mut w = self.state.load(Ordering::Acquire);
        loop {
            if tag_of(w) != tag || kind_of(w) != State::HalfOpen.kind() {
                return;
            }
            let mut ho = HalfOpen::unpack(payload_of(w));
            if ho.issued <= ho.recorded {
                return;
            }
            ho.issued -= 1;
            match self.state.compare_exchange_weak(
                w,
                with_payload(w, ho.pack()),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => w = actual,
            }
        }
    }

    /// Moves to `to` by hand. Moving to `Closed` clears the window and the re-open count;
    /// moving to `Open` starts a fresh open wait at `now_us`; moving to `HalfOpen` opens the
    /// trial phase at once.
    pub(crate) fn transition_to(&self, to: State, now_us: &impl Fn() -> u64) -> Option<Transition> {
        let now = now_us();
        let mut w = self.state.load(Ordering::Acquire);
        loop {
            let from = State::from_kind(kind_of(w));
            let new = match to {
                State::Closed => {
                    self.window.reset();
                    next_word(w, State::Closed, 0)
                }
                State::Open => self.open_word(w, now),
                State::HalfOpen => {
                    self.half_open_since_us.store(now, Ordering::Relaxed);
                    next_word(w, State::HalfOpen, 0)
                }
                State::Disabled | State::ForcedOpen | State::MetricsOnly => next_word(w, to, 0),
            };
            match self
                .state
                .compare_exchange(w, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    if to == State::Closed {
                        self.reopens.store(0, Ordering::Relaxed);
                    }
                    return (from != to).then_some(Transition { from, to });
                }
                Err(actual) => w = actual,
            }
        }
    }
}

/// A sliding window of outcomes.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // One per breaker; boxing would add a pointer chase.
pub(crate) enum Window {
    /// The last `size` outcomes.
    Count(CountWindow),
    /// The outcomes of the last `secs` whole seconds.
    Time(TimeWindow),
}

impl Window {
    #[inline]
    /// Records an outcome; returns the counts after it, or `None` when the rates cannot
    /// have changed (so there is nothing to judge).
    fn record(&self, failed: bool, slow: bool, now_us: &impl Fn() -> u64) -> Option<Counts> {
        match self {
            Window::Count(w) => w.record(failed, slow),
            Window::Time(w) => Some(w.record(failed, slow, now_us())),
        }
    }

    fn counts(&self, now_us: &impl Fn() -> u64) -> Counts {
        match self {
            Window::Count(w) => w.counts(),
            Window::Time(w) => w.counts(now_us()),
        }
    }

    fn reset(&self) {
        match self {
            Window::Count(w) => w.reset(),
            Window::Time(w) => w.reset(),
        }
    }
}

/// Largest count-based window (the head word has 16 bits per field).
pub(crate) const COUNT_WINDOW_MAX: u32 = 1 << 15;

const SLOT_RECORDED: u8 = 0b001;
const SLOT_FAILED: u8 = 0b010;
const SLOT_SLOW: u8 = 0b100;

/// A lock-free ring of the last `size` outcomes with running totals.
///
/// `seq` counts records: record number `k` goes to slot `k mod size` (computed with a
/// multiply instead of a division) and the window holds `min(seq, size)` outcomes. The
/// failure and slow totals share a second word (32 bits each). A failure or slow call adds
/// itself to the totals *before* taking its slot; whoever replaces an outcome subtracts it
/// (saturating) *after* swapping it out. So every outcome is added before anyone can
/// subtract it: the totals never go below the ring's true contents and exceed them only by
/// the calls in flight. A success landing on a slot that already holds a success (the
/// steady state of a healthy backend) only reads the slot: one `fetch_add` in all.
#[derive(Debug)]
pub(crate) struct CountWindow {
    seq: CachePadded<AtomicU64>,
    totals: CachePadded<AtomicU64>,
    slots: Box<[AtomicU8]>,
    size: u64,
    /// Lemire's fast-modulo constant for `size`: `u64::MAX / size + 1`.
    fastmod: u64,
}

const FAILURE_ONE: u64 = 1;
const SLOW_ONE: u64 = 1 << 32;
const LOW32: u64 = 0xFFFF_FFFF;

impl CountWindow {
    pub(crate) fn new(size: u32) -> Self {
        debug_assert!((1..=COUNT_WINDOW_MAX).contains(&size));
        CountWindow {
            seq: CachePadded::new(AtomicU64::new(0)),
            totals: CachePadded::new(AtomicU64::new(0)),
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            size: u64::from(size),
            fastmod: (u64::MAX / u64::from(size)).wrapping_add(1),
        }
    }

    /// `k mod size` for the low 32 bits of `k` (Lemire, "Faster remainder by direct
    /// computation"). When `k` passes 2³² the ring order skips once; every slot is still
    /// swapped, so the totals stay exact.
    #[inline]
    pub(crate) fn slot_of(&self, k: u64) -> usize {
        let low = self.fastmod.wrapping_mul(k & LOW32);
        ((u128::from(low) * u128::from(self.size)) >> 64) as usize
    }

    #[inline]
    pub(crate) fn record(&self, failed: bool, slow: bool) -> Option<Counts> {
        let add: u64 = if failed { FAILURE_ONE } else { 0 } | if slow { SLOW_ONE } else { 0 };
        if add != 0 {
            self.totals.fetch_add(add, Ordering::AcqRel);
        }
        let k = self.seq.fetch_add(1, Ordering::AcqRel);
        let bits =
            SLOT_RECORDED | if failed { SLOT_FAILED } else { 0 } | if slow { SLOT_SLOW } else { 0 };
        let slot = &self.slots[self.slot_of(k)];
        // A plain success over a plain success (the steady state of a healthy backend):
        // nothing to write and nothing to subtract, so no second atomic write. Whatever a
        // racing writer does to this slot afterwards, it swaps and adjusts the totals for
        // what it replaces, so totals and contents stay consistent.
        let old = if bits == SLOT_RECORDED && slot.load(Ordering::Acquire) == bits {
            bits
        } else {
            slot.swap(bits, Ordering::AcqRel)
        };
        if old & (SLOT_FAILED | SLOT_SLOW) == 0 && add == 0 && k >= self.size {
            // A success replaced a success in a full window: the rates did not change.
            return None;
        }
        if old & (SLOT_FAILED | SLOT_SLOW) != 0 {
            let (f, sl) = (old & SLOT_FAILED != 0, old & SLOT_SLOW != 0);
            let _ = self
                .totals
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                    let failures = (t & LOW32).saturating_sub(u64::from(f));
                    let slows = (t >> 32).saturating_sub(u64::from(sl));
                    Some(failures | (slows << 32))
                });
        }
        Some(self.counts_at(k + 1))
    }

    fn counts_at(&self, seq: u64) -> Counts {
        let t = self.totals.load(Ordering::Acquire);
        let calls = seq.min(self.size);
        Counts {
            calls,
            failures: (t & LOW32).min(calls),
            slow: (t >> 32).min(calls),
        }
    }

    pub(crate) fn counts(&self) -> Counts {
        self.counts_at(self.seq.load(Ordering::Acquire))
    }

    /// Counts recomputed from the slots (for tests: must equal `counts` when quiescent).
    #[cfg(test)]
    pub(crate) fn recount(&self) -> Counts {
        let mut c = Counts::default();
        for slot in &self.slots {
            let v = slot.load(Ordering::Acquire);
            c.calls += u64::from(v & SLOT_RECORDED != 0);
            c.failures += u64::from(v & SLOT_FAILED != 0);
            c.slow += u64::from(v & SLOT_SLOW != 0);
        }
        c
    }

    pub(crate) fn reset(&self) {
        for slot in &self.slots {
            slot.store(0, Ordering::Relaxed);
        }
        self.totals.store(0, Ordering::Release);
        self.seq.store(0, Ordering::Release);
    }
}

/// Outcomes of the last `secs` whole seconds, one bucket per second, under a mutex.
///
/// Each record moves the window forward (clearing the buckets of the seconds that passed,
/// at most `secs` of them) and adds to the current bucket and to the running totals: O(1)
/// amortised. Time windows are chosen for low-rate callers, so a short critical section is
/// preferred here over a lock-free layout that would need 64-bit counters per field.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    inner: Mutex<TimeInner>,
}

#[derive(Debug)]
struct TimeInner {
    buckets: Vec<(u64, Counts)>,
    latest_sec: u64,
    total: Counts,
}

impl TimeInner {
    fn advance(&mut self, sec: u64) -> u64 {
        let n = self.buckets.len() as u64;
        if sec <= self.latest_sec {
            return self.latest_sec; // A caller that read the clock earlier: count it now.
        }
        let from = (self.latest_sec + 1).max(sec.saturating_sub(n - 1));
        for s in from..=sec {
            let i = (s % n) as usize;
            let old = self.buckets[i].1;
            self.total.calls -= old.calls;
            self.total.failures -= old.failures;
            self.total.slow -= old.slow;
            self.buckets[i] = (s, Counts::default());
        }
        self.latest_sec = sec;
        sec
    }
}

impl TimeWindow {
    pub(crate) fn new(secs: u32) -> Self {
        TimeWindow {
            inner: Mutex::new(TimeInner {
                buckets: vec![(0, Counts::default()); secs.max(1) as usize],
                latest_sec: 0,
                total: Counts::default(),
            }),
        }
    }

    fn lock(&self) -> crate::sync::MutexGuard<'_, TimeInner> {
        // A panic while holding this lock leaves consistent totals (every update is a few
        // integer additions), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, failed: bool, slow: bool, now_us: u64) -> Counts {
        let mut inner = self.lock();
        let sec = inner.advance(now_us / 1_000_000);
        let n = inner.buckets.len() as u64;
        let (_, bucket) = &mut inner.buckets[(sec % n) as usize];
        bucket.calls += 1;
        bucket.failures += u64::from(failed);
        bucket.slow += u64::from(slow);
        inner.total.calls += 1;
        inner.total.failures += u64::from(failed);
        inner.total.slow += u64::from(slow);
        inner.total
    }

    fn counts(&self, now_us: u64) -> Counts {
        let mut inner = self.lock();
        inner.advance(now_us / 1_000_000);
        inner.total
    }

    fn reset(&self) {
        let mut inner = self.lock();
        for b in &mut inner.buckets {
            *b = (0, Counts::default());
        }
        inner.total = Counts::default();
    }
}
