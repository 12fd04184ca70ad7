//! Rate limiters: GCRA arithmetic on a manual clock, the keyed limiter's memory bound, and a
//! two-thread stress test on the real clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metered_clock::{Clock, ManualClock, SystemClock, Timestamp};
use resilience::{KeyedRateLimiter, ManualSleeper, Quota, RateLimiter, ResilienceError};

fn clock() -> ManualClock {
    ManualClock::new(Timestamp::EPOCH)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn quota_validation() {
    let invalid = |r: Result<Quota, ResilienceError>, field: &str| match r {
        Err(ResilienceError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
        other => panic!("expected InvalidConfig({field}), got {other:?}"),
    };
    invalid(Quota::per_second(0), "permits");
    invalid(Quota::per_minute(0), "permits");
    invalid(Quota::with_period(Duration::ZERO), "permits");
    invalid(Quota::per(Duration::from_nanos(10), 11), "permits");
    invalid(Quota::per_second(1).unwrap().with_burst(0), "burst");
    let q = Quota::per(Duration::from_secs(1), 3).unwrap();
    assert_eq!(
        q.interval(),
        Duration::from_nanos(333_333_334),
        "rounded up, never over-grants"
    );
    assert_eq!(
        Quota::per_minute(60).unwrap().interval(),
        Duration::from_secs(1)
    );
}

#[test]
fn burst_then_steady_rate() {
    let c = clock();
    let l = RateLimiter::with_clock(
        Quota::per_second(10).unwrap().with_burst(3).unwrap(),
        c.clone(),
    );
    assert_eq!(l.remaining(), 3);
    for _ in 0..3 {
        l.try_acquire(1).unwrap();
    }
    assert_eq!(l.remaining(), 0);
    assert_eq!(
        l.try_acquire(1),
        Err(ResilienceError::RateLimited {
            retry_after: ms(100)
        })
    );
    assert_eq!(l.time_until_available(1), ms(100));
    assert_eq!(l.time_until_available(3), ms(300));
    c.advance(ms(99));
    assert!(l.try_acquire(1).is_err());
    c.advance(ms(1));
    l.try_acquire(1).unwrap();
    assert!(l.try_acquire(1).is_err());
    c.advance(ms(10_000)); // idle: refills to the burst, no more
    assert_eq!(l.remaining(), 3);
    assert_eq!(l.time_until_available(3), Duration::ZERO);
}

#[test]
fn n_permits_at_once_and_bad_requests() {
    let c = clock();
    let l = RateLimiter::with_clock(Quota::per_second(10).unwrap(), c.clone());
    assert_eq!(
        l.try_acquire(11),
        Err(ResilienceError::InsufficientCapacity {
            requested: 11,
            burst: 10
        })
    );
    assert_eq!(l.remaining(), 10, "a refused request changes nothing");
    l.try_acquire(0).unwrap();
    l.try_acquire(7).unwrap();
    assert_eq!(
        l.try_acquire(4),
        Err(ResilienceError::RateLimited {
            retry_after: ms(100)
        })
    );
    assert_eq!(l.remaining(), 3, "a rate-limited request changes nothing");
    l.try_acquire(3).unwrap();
}

#[test]
fn set_quota_at_runtime() {
    let c = clock();
    let l = RateLimiter::with_clock(Quota::per_second(1).unwrap(), c.clone());
    l.try_acquire(1).unwrap();
    assert!(l.try_acquire(1).is_err());
    l.set_quota(Quota::per_second(100).unwrap().with_burst(5).unwrap());
    assert_eq!(l.quota().burst(), 5);
    // The debt of the earlier permit (1 s at the old rate) is now measured against a 50 ms
    // tolerance: wait until it is paid down.
    assert!(l.try_acquire(1).is_err());
    c.advance(Duration::from_secs(1));
    for _ in 0..5 {
        l.try_acquire(1).unwrap();
    }
    assert!(l.try_acquire(1).is_err());
}

#[test]
fn async_acquire_waits_within_its_deadline() {
    let c = clock();
    let sleeper = ManualSleeper::new(c.clone());
    let l = RateLimiter::with_clock(
        Quota::per_second(10).unwrap().with_burst(1).unwrap(),
        c.clone(),
    );
    futures::executor::block_on(async {
        l.acquire(1, ms(0), &sleeper).await.unwrap();
        l.acquire(1, ms(100), &sleeper).await.unwrap();
        assert_eq!(sleeper.total_slept(), ms(100));
        assert_eq!(
            l.acquire(1, ms(99), &sleeper).await,
            Err(ResilienceError::RateLimited {
                retry_after: ms(100)
            }),
            "gives up at once when the permit comes too late"
        );
        assert_eq!(sleeper.total_slept(), ms(100), "…without sleeping");
        assert!(matches!(
            l.acquire(2, ms(1_000), &sleeper).await,
            Err(ResilienceError::InsufficientCapacity { .. })
        ));
    });
}

#[test]
fn keyed_limits_each_key_separately() {
    let c = clock();
    let l = KeyedRateLimiter::with_clock(Quota::per_second(2).unwrap(), 100, c.clone()).unwrap();
    l.try_acquire(&"a", 2).unwrap();
    assert_eq!(
        l.try_acquire(&"a", 1).unwrap_err().retry_after(),
        Some(ms(500))
    );
    assert_eq!(l.time_until_available(&"a", 2), ms(1_000));
    assert_eq!(l.remaining(&"a"), 0);
    assert_eq!(l.remaining(&"b"), 2, "unknown keys have a full bucket");
    assert_eq!(l.time_until_available(&"b", 2), Duration::ZERO);
    l.try_acquire(&"b", 1).unwrap();
    assert_eq!(l.len(), 2);
    assert!(matches!(
        l.try_acquire(&"c", 3),
        Err(ResilienceError::InsufficientCapacity { .. })
    ));
    assert_eq!(l.len(), 2, "a refused request does not insert the key");
    assert!(matches!(
        KeyedRateLimiter::<u32, _>::with_clock(Quota::per_second(1).unwrap(), 0, c),
        Err(ResilienceError::InvalidConfig {
            field: "max_keys",
            ..
        })
    ));
}

#[test]
fn keyed_memory_is_bounded_and_idle_keys_are_evicted() {
    let c = clock();
    let l = KeyedRateLimiter::with_clock(Quota::per_second(1).unwrap(), 8, c.clone()).unwrap();
    for k in 0..8u32 {
        l.try_acquire(&k, 1).unwrap();
    }
    assert_eq!(l.len(), 8);
    assert_eq!(
        l.try_acquire(&99, 1),
        Err(ResilienceError::KeyCapacityExhausted { max_keys: 8 })
    );
    assert!(ResilienceError::KeyCapacityExhausted { max_keys: 8 }.is_retryable());
    assert_eq!(
        l.len(),
        8,
        "a limited key is never forgotten (that would refill it)"
    );
    c.advance(Duration::from_secs(1)); // every bucket is full again: all keys idle
    l.try_acquire(&99, 1).unwrap();
    assert_eq!(
        l.len(),
        1,
        "inserting into a full map evicted the idle keys"
    );
    for k in 0..7u32 {
        l.try_acquire(&k, 1).unwrap();
    }
    c.advance(Duration::from_secs(1));
    assert_eq!(l.evict_idle(), 8);
    assert!(l.is_empty());
}

#[test]
fn keyed_many_keys_never_exceed_the_bound() {
    let c = clock();
    let l = KeyedRateLimiter::with_clock(Quota::per_second(1).unwrap(), 1_000, c.clone()).unwrap();
    let mut refused = 0;
    for k in 0..10_000u32 {
        if l.try_acquire(&k, 1).is_err() {
            refused += 1;
        }
        if k % 2_000 == 0 {
            c.advance(Duration::from_secs(1));
        }
        assert!(l.len() <= 1_000);
    }
    assert!(refused < 10_000 && refused > 0, "{refused}");
}

/// Two threads hammer one limiter for a while on the real clock; the permits granted never
/// exceed `burst + rate × elapsed` (+1 for the permit straddling the end).
#[test]
fn two_threads_never_exceed_rate_times_elapsed_plus_burst() {
    let clock = SystemClock::new();
    let quota = Quota::per(Duration::from_millis(1), 20)
        .unwrap()
        .with_burst(50)
        .unwrap(); // 20/ms
    let limiter = Arc::new(RateLimiter::with_clock(quota, clock));
    let granted = Arc::new(AtomicU64::new(0));
    let run_for = Duration::from_millis(if cfg!(debug_assertions) { 100 } else { 300 });
    let start = clock.monotonic();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (limiter, granted) = (Arc::clone(&limiter), Arc::clone(&granted));
            std::thread::spawn(move || {
                let mut mine = 0;
                while clock.monotonic().saturating_duration_since(start) < run_for {
                    if limiter.try_acquire(1).is_ok() {
                        mine += 1;
                    }
                }
                granted.fetch_add(mine, Ordering::Relaxed);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = clock.monotonic().saturating_duration_since(start);
    let granted = granted.load(Ordering::Relaxed);
    let bound = 50 + u64::try_from(elapsed.as_nanos() / quota.interval().as_nanos()).unwrap() + 1;
    assert!(
        granted <= bound,
        "granted {granted} > bound {bound} over {elapsed:?}"
    );
    // Descheduled threads lose the permits that accrue beyond the burst, so only a loose
    // lower bound holds on a loaded machine: at least the initial burst.
    assert!(granted >= 50, "limiter starved: {granted} of {bound}");
}

#[test]
fn keyed_two_threads_same_key_respect_the_bound() {
    let clock = SystemClock::new();
    let quota = Quota::per(Duration::from_millis(1), 10).unwrap();
    let limiter = Arc::new(KeyedRateLimiter::with_clock(quota, 64, clock).unwrap());
    let granted = Arc::new(AtomicU64::new(0));
    let run_for = Duration::from_millis(100);
    let start = clock.monotonic();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (limiter, granted) = (Arc::clone(&limiter), Arc::clone(&granted));
            std::thread::spawn(move || {
                while clock.monotonic().saturating_duration_since(start) < run_for {
                    if limiter.try_acquire(&"tenant", 1).is_ok() {
                        granted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = clock.monotonic().saturating_duration_since(start);
    let bound = 10 + u64::try_from(elapsed.as_nanos() / quota.interval().as_nanos()).unwrap() + 1;
    assert!(granted.load(Ordering::Relaxed) <= bound);
}

#[test]
fn keyed_per_call_quota_for_tenant_plans() {
    let c = clock();
    let l = KeyedRateLimiter::with_clock(Quota::per_second(1).unwrap(), 100, c.clone()).unwrap();
    let gold = Quota::per_second(10).unwrap();
    for _ in 0..10 {
        l.try_acquire_with_quota(&"gold", 1, gold).unwrap();
    }
    assert_eq!(
        l.try_acquire_with_quota(&"gold", 1, gold),
        Err(ResilienceError::RateLimited {
            retry_after: ms(100)
        })
    );
    // Downgraded to the default plan: the debt of the last second counts against 1/s.
    assert!(l.try_acquire(&"gold", 1).is_err());
    c.advance(Duration::from_secs(1));
    l.try_acquire(&"gold", 1).unwrap();
    assert!(l.try_acquire(&"gold", 1).is_err());
    assert!(matches!(
        l.try_acquire_with_quota(&"x", 11, gold),
        Err(ResilienceError::InsufficientCapacity {
            requested: 11,
            burst: 10
        })
    ));
}
