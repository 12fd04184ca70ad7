//! Two-thread stress tests of the breaker on real threads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use metered_clock::{ManualClock, Timestamp};
use resilience::{BreakerConfig, CallOutcome, CircuitBreaker, OpenWait, State};

const ROUNDS: u32 = if cfg!(debug_assertions) {
    20_000
} else {
    200_000
};

#[test]
fn half_open_never_admits_more_than_its_permits_on_two_threads() {
    let clock = ManualClock::new(Timestamp::EPOCH);
    let config = BreakerConfig::builder()
        .count_window(2)
        .minimum_calls(1)
        .half_open_calls(3)
        .open_wait(OpenWait::Fixed(Duration::from_secs(1)))
        .build()
        .unwrap();
    let breaker = CircuitBreaker::with_clock(config, clock.clone());
    breaker.open();
    clock.advance(Duration::from_secs(1));
    let holders = Arc::new(AtomicU32::new(0));
    let max_seen = Arc::new(AtomicU32::new(0));
    let admitted = Arc::new(AtomicU64::new(0));
    std::thread::scope(|s| {
        for _ in 0..2 {
            let (b, holders, max_seen, admitted) = (&breaker, &holders, &max_seen, &admitted);
            s.spawn(move || {
                let mut held = Vec::new();
                for i in 0..ROUNDS {
                    if let Ok(p) = b.try_acquire() {
                        let now = holders.fetch_add(1, Ordering::SeqCst) + 1;
                        max_seen.fetch_max(now, Ordering::SeqCst);
                        admitted.fetch_add(1, Ordering::Relaxed);
                        held.push(p);
                    }
                    // Hold up to two permits, then cancel them or mark them ignored: both
                    // hand the slot back and keep the breaker half-open.
                    if held.len() == 2 || i % 3 == 0 {
                        for (k, p) in held.drain(..).enumerate() {
                            holders.fetch_sub(1, Ordering::SeqCst);
                            if k % 2 == 0 {
                                drop(p);
                            } else {
                                p.record(CallOutcome::Ignored);
                            }
                        }
                    }
                }
                for p in held.drain(..) {
                    holders.fetch_sub(1, Ordering::SeqCst);
                    drop(p);
                }
            });
        }
    });
    assert!(max_seen.load(Ordering::SeqCst) <= 3);
    assert!(admitted.load(Ordering::Relaxed) > u64::from(ROUNDS) / 2);
    assert_eq!(breaker.state(), State::HalfOpen);
    // All three slots are free again and three successes close the breaker.
    let permits: Vec<_> = (0..3).map(|_| breaker.try_acquire().unwrap()).collect();
    assert!(breaker.try_acquire().is_err());
    permits.into_iter().for_each(|p| p.record_success());
    assert_eq!(breaker.state(), State::Closed);
}

#[test]
fn closed_window_counts_stay_exact_on_two_threads() {
    let config = BreakerConfig::builder()
        .count_window(64)
        .minimum_calls(64)
        .failure_rate_threshold(100)
        .build()
        .unwrap();
    let breaker = CircuitBreaker::with_clock(config, ManualClock::new(Timestamp::EPOCH));
    std::thread::scope(|s| {
        for t in 0..2u32 {
            let b = &breaker;
            s.spawn(move || {
                for i in 0..ROUNDS {
                    // One failure in 4 overall, never 100 %: the breaker stays closed.
                    let fail = (i + t) % 4 == 0;
                    let p = b.try_acquire().expect("closed");
                    p.record(if fail {
                        CallOutcome::Failure
                    } else {
                        CallOutcome::Success
                    });
                }
            });
        }
    });
    assert_eq!(breaker.state(), State::Closed);
    let stats = breaker.stats();
    assert_eq!(stats.calls, 64);
    assert!(stats.failed_calls <= 64);
    // Quiescent: record 64 successes alone; every failure must slide out exactly.
    for _ in 0..64 {
        breaker.try_acquire().unwrap().record_success();
    }
    assert_eq!(breaker.stats().failed_calls, 0);
}
