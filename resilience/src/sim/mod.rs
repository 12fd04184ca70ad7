//! A deterministic simulation harness (feature `sim`): a simulated backend with a
//! capacity, a latency curve that grows with load and capacity changes over time, driven
//! by seeded open-loop traffic on a [`ManualClock`], in front of the crate's real
//! [`AdaptiveLimiter`] and [`LoadShedder`].
//!
//! The backend is a processor-sharing server with `capacity` slots: up to `capacity`
//! calls run at full speed (each takes its work time, the base latency ± jitter); beyond
//! that they share the slots, and every call in excess adds `thrash_percent` / capacity %
//! of overhead (contention, cache misses, GC), so throughput *falls* past saturation, as
//! real servers' does. Events (arrivals, completions, capacity changes) are processed in
//! time order; the manual clock is moved to each event before the limiter sees it, so the
//! limiter measures simulated latencies. Same seed, same run.
//!
//! ```
//! use std::time::Duration;
//! use resilience::sim::{Admission, Backend, Scenario};
//!
//! let scenario = Scenario::new(Backend::new(20, Duration::from_millis(10)), 1_000)
//!     .duration(Duration::from_secs(2))
//!     .measure_from(Duration::ZERO);
//! let report = scenario.run(Admission::Unlimited, 7);
//! assert!(report.goodput_permille() > 450); // 1,000 rps against a capacity of 2,000 rps
//! assert!(report.latency_p99() < Duration::from_millis(12));
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use metered_clock::{ManualClock, Timestamp, duration_nanos};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::adaptive::{AdaptiveLimiter, OwnedAdaptivePermit};
use crate::shed::{LoadShedder, Priority, ShedPermit};

/// Fixed-point scale of the backend's virtual work clock.
const V_SCALE: u128 = 1 << 20;

/// The simulated backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    capacity: u32,
    base_latency: Duration,
    jitter_percent: u8,
    thrash_percent: u32,
}

impl Backend {
    /// `capacity` calls at once at `base_latency` each (so `capacity / base_latency` calls
    /// per second at most), ±10 % jitter, 25 % thrash.
    #[must_use]
    pub fn new(capacity: u32, base_latency: Duration) -> Self {
        Backend {
            capacity: capacity.max(1),
            base_latency,
            jitter_percent: 10,
            thrash_percent: 25,
        }
    }

    /// Work time jitter: uniform in ±`percent` % of the base latency (at most 90).
    #[must_use]
    pub fn jitter_percent(self, percent: u8) -> Self {
        Backend {
            jitter_percent: percent.min(90),
            ..self
        }
    }

    /// Overhead per call beyond capacity: with `n > capacity` calls in flight, each call's
    /// work grows by `thrash_percent · (n − capacity) / capacity` %.
    #[must_use]
    pub fn thrash_percent(self, percent: u32) -> Self {
        Backend {
            thrash_percent: percent,
            ..self
        }
    }

    /// The base latency: the latency of a call on an unloaded backend, before jitter.
    #[must_use]
    pub fn base_latency(&self) -> Duration {
        self.base_latency
    }

    /// One call's work time, drawn from `rng`.
    pub fn draw_work<R: Rng>(&self, rng: &mut R) -> Duration {
        let base = duration_nanos(self.base_latency);
        let j = u64::from(self.jitter_percent);
        let low = base * (100 - j) / 100;
        let high = base * (100 + j) / 100;
        Duration::from_nanos(rng.random_range(low..=high))
    }

    /// The rate at which each of `n` calls progresses, as `numerator / denominator` of
    /// full speed.
    fn rate(&self, capacity: u32, n: u64) -> (u128, u128) {
        let c = u128::from(capacity);
        let n = u128::from(n);
        if n <= c {
            (1, 1)
        } else {
            // c / n of a slot each, slowed by 1 + thrash · (n − c) / (100 c).
            (
                c * c * 100,
                n * (100 * c + u128::from(self.thrash_percent) * (n - c)),
            )
        }
    }
}

/// What stands between the traffic and the backend.
#[derive(Debug)]
pub enum Admission {
    /// Every call goes to the backend.
    Unlimited,
    /// Calls need a permit from this limiter (adaptive, or `Algorithm::Fixed`). It must
    /// read the scenario's clock: build it with [`Scenario::clock`].
    Limiter(Arc<AdaptiveLimiter<ManualClock>>),
    /// Calls need a permit from this shedder, by their priority.
    Shedder(LoadShedder<ManualClock>),
    /// Calls wait for a permit in this shedder's queue (`LoadShedder::acquire`).
    QueuedShedder(LoadShedder<ManualClock>),
}

/// A traffic pattern against a backend.
#[derive(Clone, Debug)]
pub struct Scenario {
    backend: Backend,
    arrivals_per_sec: u32,
    duration: Duration,
    measure_from: Duration,
    deadline: Duration,
    capacity_changes: Vec<(Duration, u32)>,
    critical_percent: u8,
    sheddable_percent: u8,
    clock: ManualClock,
}

/// Counts for one priority class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassCounts {
    /// Calls that arrived in the measured interval.
    pub offered: u64,
    /// Of those, calls that completed within the deadline.
    pub succeeded: u64,
}

/// What a run measured (over calls arriving in the measured interval).
#[derive(Clone, Debug)]
pub struct Report {
    /// Calls that arrived.
    pub offered: u64,
    /// Calls refused by the limiter or shedder.
    pub rejected: u64,
    /// Calls that completed within the deadline.
    pub succeeded: u64,
    /// Critical, default and sheddable calls.
    pub classes: [ClassCounts; 3],
    /// The backend's capacity in calls per second at the end of the run.
    pub capacity_per_sec: u64,
    /// Length of the measured interval.
    pub measured: Duration,
    /// Latencies (ns) of admitted calls, sorted; calls still running at the end count with
    /// their age.
    latencies_ns: Vec<u64>,
    /// The limit every 100 ms of simulated time (empty when unlimited).
    pub limit_trace: Vec<(Duration, u32)>,
}

impl Report {
    /// Successful calls per second over the capacity in calls per second, per mille.
    #[must_use]
    pub fn goodput_permille(&self) -> u64 {
        let secs_ns = duration_nanos(self.measured).max(1);
        let per_sec = u128::from(self.succeeded) * 1_000_000_000 / u128::from(secs_ns);
        u64::try_from(per_sec * 1_000 / u128::from(self.capacity_per_sec.max(1)))
            .unwrap_or(u64::MAX)
    }

    /// The latency at `permille` (e.g. 990 for p99) of admitted calls.
    #[must_use]
    pub fn latency_at(&self, permille: u32) -> Duration {
        if self.latencies_ns.is_empty() {
            return Duration::ZERO;
        }
        let len = self.latencies_ns.len();
        let rank = (len * usize::try_from(permille).unwrap_or(1_000)).div_ceil(1_000);
        Duration::from_nanos(self.latencies_ns[rank.clamp(1, len) - 1])
    }

    /// The 99th percentile latency of admitted calls.
    #[must_use]
    pub fn latency_p99(&self) -> Duration {
        self.latency_at(990)
    }

    /// Time from `from` until the limit last entered `band` and stayed in it to the end of
    /// the run; `None` if it is outside the band at the end.
    #[must_use]
    pub fn converged_after(
        &self,
        from: Duration,
        band: std::ops::RangeInclusive<u32>,
    ) -> Option<Duration> {
        let mut since = None;
        for &(t, limit) in self.limit_trace.iter().filter(|(t, _)| *t >= from) {
            if band.contains(&limit) {
                since.get_or_insert(t);
            } else {
                since = None;
            }
        }
        since.map(|t| t.saturating_sub(from))
    }
}

/// What an admitted call holds until it completes.
enum Held {
    Nothing,
    Adaptive {
        _permit: OwnedAdaptivePermit<ManualClock>,
    },
    Shed {
        _permit: ShedPermit<ManualClock>,
    },
}

/// Wakes a waiting call by putting its id on the ready list.
struct IdWaker {
    id: usize,
    ready: Arc<std::sync::Mutex<Vec<usize>>>,
}

impl std::task::Wake for IdWaker {
    fn wake(self: Arc<Self>) {
        self.ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(self.id);
    }
}

type Acquire<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<ShedPermit<ManualClock>, crate::ResilienceError>>
            + 'a,
    >,
>;

/// A call waiting in the shedder's queue.
struct Queued<'a> {
    future: Acquire<'a>,
    arrival_ns: u64,
    class: usize,
    measured: bool,
    work: Duration,
}

struct Call {
    arrival_ns: u64,
    class: usize,
    measured: bool,
    _permit: Held,
}

impl Scenario {
    /// `arrivals_per_sec` calls per second (uniform random gaps) against `backend` for
    /// 10 s, measured from 2 s, deadline 1 s, all of default priority.
    #[must_use]
    pub fn new(backend: Backend, arrivals_per_sec: u32) -> Self {
        Scenario {
            backend,
            arrivals_per_sec: arrivals_per_sec.max(1),
            duration: Duration::from_secs(10),
            measure_from: Duration::from_secs(2),
            deadline: Duration::from_secs(1),
            capacity_changes: Vec::new(),
            critical_percent: 0,
            sheddable_percent: 0,
            clock: ManualClock::new(Timestamp::EPOCH),
        }
    }

    /// The clock the run drives: give it to the limiter under test.
    #[must_use]
    pub fn clock(&self) -> ManualClock {
        self.clock.clone()
    }

    /// How long the run lasts.
    #[must_use]
    pub fn duration(self, duration: Duration) -> Self {
        Scenario { duration, ..self }
    }

    /// Only calls arriving from `from` on are counted.
    #[must_use]
    pub fn measure_from(self, from: Duration) -> Self {
        Scenario {
            measure_from: from,
            ..self
        }
    }

    /// A call that takes longer than this is not a success (the client gave up).
    #[must_use]
    pub fn deadline(self, deadline: Duration) -> Self {
        Scenario { deadline, ..self }
    }

    /// At `at`, the backend's capacity becomes `capacity`.
    #[must_use]
    pub fn capacity_change(mut self, at: Duration, capacity: u32) -> Self {
        self.capacity_changes.push((at, capacity.max(1)));
        self.capacity_changes.sort_by_key(|(t, _)| *t);
        self
    }

    /// Shares of critical and sheddable calls, in percent (the rest are default).
    #[must_use]
    pub fn priorities(self, critical_percent: u8, sheddable_percent: u8) -> Self {
        Scenario {
            critical_percent: critical_percent.min(100),
            sheddable_percent: sheddable_percent.min(100 - critical_percent.min(100)),
            ..self
        }
    }

    /// Runs the scenario with `admission`, random draws seeded by `seed`.
    #[must_use]
    pub fn run(&self, admission: Admission, seed: u64) -> Report {
        let mut rng = StdRng::seed_from_u64(seed);
        let clock = &self.clock;
        let end_ns = duration_nanos(self.duration);
        let measure_ns = duration_nanos(self.measure_from);
        let mean_gap = 1_000_000_000 / u64::from(self.arrivals_per_sec);
        let mut capacity = self.backend.capacity;
        let mut changes = self.capacity_changes.iter().peekable();

        let mut now = 0u64; // Simulated ns since the start.
        let mut v: u128 = 0; // Virtual work clock (work ns · V_SCALE).
        let mut running: BinaryHeap<Reverse<(u128, usize)>> = BinaryHeap::new();
        let mut calls: Vec<Option<Call>> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        let mut next_arrival = rng.random_range(0..=2 * mean_gap);
        let mut next_trace = 0u64;
        let mut report = Report {
            offered: 0,
            rejected: 0,
            succeeded: 0,
            classes: [ClassCounts::default(); 3],
            capacity_per_sec: 0,
            measured: Duration::from_nanos(end_ns.saturating_sub(measure_ns)),
            latencies_ns: Vec::new(),
            limit_trace: Vec::new(),
        };
        let ready = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut queued: std::collections::BTreeMap<usize, Queued<'_>> =
            std::collections::BTreeMap::new();
        let mut next_wait_id = 0usize;
        let mut admitted: Vec<(Call, Duration)> = Vec::new();
        let limiter = match &admission {
            Admission::Unlimited => None,
            Admission::Limiter(l) => Some(Arc::clone(l)),
            Admission::Shedder(s) | Admission::QueuedShedder(s) => Some(Arc::clone(s.limiter())),
        };

        loop {
            let n = running.len() as u64;
            let (num, den) = self.backend.rate(capacity, n);
            let next_done = running.peek().map(|Reverse((finish, _))| {
                let left = finish.saturating_sub(v);
                let dt = (left * den).div_ceil(num * V_SCALE);
                now.saturating_add(u64::try_from(dt).unwrap_or(u64::MAX))
            });
            let next_change = changes.peek().map(|(t, _)| duration_nanos(*t));
            let t = [Some(next_arrival), next_done, next_change, Some(next_trace)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(end_ns);
            if t >= end_ns {
                break;
            }
            // Move time (and the backend's work) to the event.
            v += u128::from(t - now) * num * V_SCALE / den;
            clock.advance(Duration::from_nanos(t - now));
            now = t;

            if next_change == Some(t) {
                if let Some((_, c)) = changes.next() {
                    capacity = *c;
                }
                continue;
            }
            if t == next_trace {
                if let Some(l) = &limiter {
                    report
                        .limit_trace
                        .push((Duration::from_nanos(t), l.limit()));
                }
                next_trace += 100_000_000;
                continue;
            }
            if next_done == Some(t) {
                while let Some(&Reverse((finish, id))) = running.peek() {
                    if finish > v {
                        break;
                    }
                    running.pop();
                    let call = calls[id].take().expect("a running call is in the slab");
                    free.push(id);
                    let latency = t - call.arrival_ns;
                    if call.measured {
                        report.latencies_ns.push(latency);
                        if latency <= duration_nanos(self.deadline) {
                            report.succeeded += 1;
                            report.classes[call.class].succeeded += 1;
                        }
                    }
                    // Dropping the call drops its permit: the limiter sees the latency
                    // (and a queued shedder serves its waiters).
                }
                admit_ready(&mut queued, &ready, &mut admitted, &mut report);
                start_calls(&mut admitted, &mut calls, &mut free, &mut running, v);
                continue;
            }
            // An arrival.
            next_arrival = t + rng.random_range(0..=2 * mean_gap);
            let class = {
                let roll = rng.random_range(0..100u8);
                if roll < self.critical_percent {
                    0
                } else if roll < self.critical_percent + self.sheddable_percent {
                    2
                } else {
                    1
                }
            };
            let work = self.backend.draw_work(&mut rng);
            let measured = t >= measure_ns;
            if measured {
                report.offered += 1;
                report.classes[class].offered += 1;
            }
            let permit = match &admission {
                Admission::Unlimited => Ok(Held::Nothing),
                Admission::Limiter(l) => {
                    l.try_acquire_owned().map(|p| Held::Adaptive { _permit: p })
                }
                Admission::Shedder(s) => {
                    let p = [Priority::CRITICAL, Priority::DEFAULT, Priority::SHEDDABLE][class];
                    s.try_acquire(p).map(|p| Held::Shed { _permit: p })
                }
                Admission::QueuedShedder(s) => {
                    let p = [Priority::CRITICAL, Priority::DEFAULT, Priority::SHEDDABLE][class];
                    let id = next_wait_id;
                    next_wait_id += 1;
                    let mut future: Acquire<'_> = Box::pin(s.acquire(p));
                    let waker = Waker::from(Arc::new(IdWaker {
                        id,
                        ready: Arc::clone(&ready),
                    }));
                    match future.as_mut().poll(&mut Context::from_waker(&waker)) {
                        Poll::Ready(r) => r.map(|p| Held::Shed { _permit: p }),
                        Poll::Pending => {
                            queued.insert(
                                id,
                                Queued {
                                    future,
                                    arrival_ns: t,
                                    class,
                                    measured,
                                    work,
                                },
                            );
                            admit_ready(&mut queued, &ready, &mut admitted, &mut report);
                            start_calls(&mut admitted, &mut calls, &mut free, &mut running, v);
                            continue;
                        }
                    }
                }
            };
            let Ok(permit) = permit else {
                if measured {
                    report.rejected += 1;
                }
                continue;
            };
            let call = Call {
                arrival_ns: t,
                class,
                measured,
                _permit: permit,
            };
            let id = match free.pop() {
                Some(id) => {
                    calls[id] = Some(call);
                    id
                }
                None => {
                    calls.push(Some(call));
                    calls.len() - 1
                }
            };
            running.push(Reverse((
                v + u128::from(duration_nanos(work)) * V_SCALE,
                id,
            )));
        }
        // Calls still running at the end count with their age.
        for call in calls.into_iter().flatten() {
            if call.measured {
                report.latencies_ns.push(end_ns - call.arrival_ns);
            }
        }
        report.latencies_ns.sort_unstable();
        report.capacity_per_sec =
            u64::from(capacity) * 1_000_000_000 / duration_nanos(self.backend.base_latency).max(1);
        report
    }
}

/// Polls the queued calls that were woken; moves the granted ones to `admitted`.
fn admit_ready(
    queued: &mut std::collections::BTreeMap<usize, Queued<'_>>,
    ready: &Arc<std::sync::Mutex<Vec<usize>>>,
    admitted: &mut Vec<(Call, Duration)>,
    report: &mut Report,
) {
    loop {
        let ids: Vec<usize> = std::mem::take(&mut *ready.lock().unwrap_or_else(|p| p.into_inner()));
        if ids.is_empty() {
            return;
        }
        for id in ids {
            let Some(q) = queued.get_mut(&id) else {
                continue;
            };
            let waker = Waker::from(Arc::new(IdWaker {
                id,
                ready: Arc::clone(ready),
            }));
            if let Poll::Ready(r) = q.future.as_mut().poll(&mut Context::from_waker(&waker)) {
                let q = queued.remove(&id).expect("present");
                match r {
                    Ok(permit) => admitted.push((
                        Call {
                            arrival_ns: q.arrival_ns,
                            class: q.class,
                            measured: q.measured,
                            _permit: Held::Shed { _permit: permit },
                        },
                        q.work,
                    )),
                    Err(_) => {
                        if q.measured {
                            report.rejected += 1;
                        }
                    }
                }
            }
        }
    }
}

/// Puts admitted calls on the backend.
fn start_calls(
    admitted: &mut Vec<(Call, Duration)>,
    calls: &mut Vec<Option<Call>>,
    free: &mut Vec<usize>,
    running: &mut BinaryHeap<Reverse<(u128, usize)>>,
    v: u128,
) {
    for (call, work) in admitted.drain(..) {
        let id = match free.pop() {
            Some(id) => {
                calls[id] = Some(call);
                id
            }
            None => {
                calls.push(Some(call));
                calls.len() - 1
            }
        };
        running.push(Reverse((
            v + u128::from(duration_nanos(work)) * V_SCALE,
            id,
        )));
    }
}
