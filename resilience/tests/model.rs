//! Model checking of the breaker's state machine under shuttle's randomised schedules.
//!
//! The state machine (`src/breaker/core.rs`) takes its atomics and locks from `crate::sync`;
//! this test compiles that same file against shuttle's instrumented versions, so every
//! load, store and compare-and-swap is a scheduling point shuttle can interleave.

mod sync {
    pub(crate) use shuttle::sync::atomic;
    pub(crate) use shuttle::sync::{Mutex, MutexGuard};
}

#[allow(dead_code, unreachable_pub)]
#[path = "../src/breaker/core.rs"]
mod core;

use std::time::Duration;

use shuttle::sync::Arc;
use shuttle::sync::atomic::{AtomicU32, Ordering};
use shuttle::thread;

use self::core::{CallOutcome, Core, CountWindow, OpenWait, Settings, State, Window};

const ITERATIONS: usize = if cfg!(debug_assertions) {
    2_000
} else {
    20_000
};
const NOW: u64 = 1_000_000_000; // µs; fixed: the models are about interleavings, not time

fn now() -> u64 {
    NOW
}

fn core(half_open_calls: u32, window: u32, minimum_calls: u32) -> Core {
    Core::new(
        Settings {
            failure_rate_percent: 50,
            slow_rate_percent: 0,
            minimum_calls,
            half_open_calls,
            half_open_max_wait_us: 0,
            open_wait: OpenWait::Fixed(Duration::from_secs(1)),
        },
        Window::Count(CountWindow::new(window)),
    )
}

/// A core in half-open state with no trial permit out.
fn half_open(half_open_calls: u32) -> Arc<Core> {
    let c = core(half_open_calls, 4, 4);
    c.transition_to(State::HalfOpen, &now);
    Arc::new(c)
}

#[test]
fn half_open_never_admits_more_than_its_permits() {
    shuttle::check_random(
        || {
            let c = half_open(1);
            let holders = Arc::new(AtomicU32::new(0));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let (c, holders) = (Arc::clone(&c), Arc::clone(&holders));
                    thread::spawn(move || {
                        for _ in 0..2 {
                            if let (Ok(tag), _) = c.try_acquire(&now) {
                                let held = holders.fetch_add(1, Ordering::SeqCst) + 1;
                                assert!(held <= 1, "{held} trial calls at once");
                                holders.fetch_sub(1, Ordering::SeqCst);
                                c.release(tag); // cancelled: hand the slot back
                            }
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            // Every slot came back: one more trial call is admitted.
            assert!(c.try_acquire(&now).0.is_ok());
        },
        ITERATIONS,
    );
}

#[test]
fn concurrent_trial_outcomes_decide_exactly_once() {
    shuttle::check_random(
        || {
            let c = half_open(2);
            let tags: Vec<u16> = (0..2).map(|_| c.try_acquire(&now).0.unwrap()).collect();
            let threads: Vec<_> = tags
                .into_iter()
                .zip([CallOutcome::Success, CallOutcome::Failure])
                .map(|(tag, outcome)| {
                    let c = Arc::clone(&c);
                    thread::spawn(move || c.record(tag, outcome, false, &now))
                })
                .collect();
            let transitions: Vec<_> = threads
                .into_iter()
                .filter_map(|t| t.join().unwrap())
                .collect();
            assert_eq!(transitions.len(), 1, "{transitions:?}");
            assert_eq!(transitions[0].to, State::Open); // 1 of 2 failed = 50 %
            assert_eq!(c.state(), State::Open);
        },
        ITERATIONS,
    );
}

#[test]
fn cancel_racing_with_outcome_never_leaks_or_double_counts() {
    shuttle::check_random(
        || {
            let c = half_open(2);
            let a = c.try_acquire(&now).0.unwrap();
            let b = c.try_acquire(&now).0.unwrap();
            let c2 = Arc::clone(&c);
            let t = thread::spawn(move || c2.release(a));
            let decided = c.record(b, CallOutcome::Success, false, &now);
            t.join().unwrap();
            assert_eq!(decided, None, "one of two trial calls cannot decide");
            assert_eq!(c.state(), State::HalfOpen);
            // Exactly the cancelled slot is free again.
            let again = c.try_acquire(&now).0.expect("cancelled slot is free");
            assert!(c.try_acquire(&now).0.is_err());
            assert_eq!(
                c.record(again, CallOutcome::Success, false, &now)
                    .map(|t| t.to),
                Some(State::Closed)
            );
        },
        ITERATIONS,
    );
}

#[test]
fn closed_window_trips_exactly_once_and_counts_stay_exact() {
    shuttle::check_random(
        || {
            let c = Arc::new(core(1, 2, 2));
            let threads: Vec<_> = [CallOutcome::Failure, CallOutcome::Failure]
                .into_iter()
                .map(|outcome| {
                    let c = Arc::clone(&c);
                    thread::spawn(move || {
                        let (tag, _) = c.try_acquire(&now);
                        c.record(tag.unwrap(), outcome, false, &now)
                    })
                })
                .collect();
            let transitions = threads
                .into_iter()
                .filter_map(|t| t.join().unwrap())
                .count();
            let counts = c.counts(&now);
            // Whichever thread records second sees 2 calls, both failed.
            assert_eq!(transitions, 1);
            assert_eq!(c.state(), State::Open);
            assert_eq!((counts.calls, counts.failures), (2, 2));
        },
        ITERATIONS,
    );
}

#[test]
fn lapping_count_window_keeps_totals_consistent() {
    shuttle::check_random(
        || {
            // A window of 2 lapped by 6 records from two threads (metrics-only: no trips).
            let c = Arc::new(core(1, 2, 2));
            c.transition_to(State::MetricsOnly, &now);
            let threads: Vec<_> = [
                [
                    CallOutcome::Failure,
                    CallOutcome::Success,
                    CallOutcome::Failure,
                ],
                [
                    CallOutcome::Success,
                    CallOutcome::Failure,
                    CallOutcome::Success,
                ],
            ]
            .into_iter()
            .map(|outcomes| {
                let c = Arc::clone(&c);
                thread::spawn(move || {
                    for outcome in outcomes {
                        let (tag, _) = c.try_acquire(&now);
                        assert_eq!(c.record(tag.unwrap(), outcome, false, &now), None);
                    }
                })
            })
            .collect();
            for t in threads {
                t.join().unwrap();
            }
            let counts = c.counts(&now);
            assert_eq!(counts.calls, 2);
            assert!(counts.failures <= 2);
        },
        ITERATIONS,
    );
}

#[test]
fn count_window_totals_equal_its_contents_when_quiescent() {
    shuttle::check_random(
        || {
            // A window of 3 lapped by 8 records of every kind from two threads.
            let w = Arc::new(CountWindow::new(3));
            let threads: Vec<_> = [
                [(true, false), (false, false), (true, true), (false, true)],
                [(false, false), (true, false), (false, false), (true, true)],
            ]
            .into_iter()
            .map(|records| {
                let w = Arc::clone(&w);
                thread::spawn(move || {
                    for (failed, slow) in records {
                        let _ = w.record(failed, slow);
                    }
                })
            })
            .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(w.counts(), w.recount());
        },
        ITERATIONS,
    );
}
