//! Backoff bounds (property tests), retry budget and the async retry driver.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use metered_clock::{Clock, ManualClock, Tick, Timestamp};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use resilience::{
    Backoff, Jitter, ManualSleeper, ResilienceError, Retry, RetryBudget, RetryDecision,
};

fn jitter() -> impl Strategy<Value = Jitter> {
    prop_oneof![
        Just(Jitter::None),
        Just(Jitter::Full),
        Just(Jitter::Equal),
        Just(Jitter::Decorrelated),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn delays_stay_within_their_bounds(
        base_ms in 1u64..1_000,
        cap_factor in 1u64..100,
        multiplier in 1u32..5,
        attempts in 1u32..40,
        mode in jitter(),
        seed in any::<u64>(),
    ) {
        let base = Duration::from_millis(base_ms);
        let cap = base * u32::try_from(cap_factor).unwrap();
        let policy = Backoff::exponential(base)
            .cap(cap)
            .multiplier(multiplier)
            .jitter(mode)
            .max_attempts(attempts)
            .build()
            .unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut schedule = policy.schedule(Tick::ZERO);
        let mut previous: Option<Duration> = None;
        let mut n = 0u32;
        while let Some(d) = schedule.next_delay(Tick::ZERO, None, &mut rng) {
            let ceiling = policy.ceiling(n);
            prop_assert!(ceiling <= cap);
            prop_assert_eq!(ceiling, cap.min(base.saturating_mul(multiplier.saturating_pow(n))));
            match mode {
                Jitter::None => prop_assert_eq!(d, ceiling),
                Jitter::Full => prop_assert!(d <= ceiling),
                Jitter::Equal => prop_assert!(d >= ceiling / 2 && d <= ceiling),
                Jitter::Decorrelated => {
                    let high = (previous.unwrap_or(base) * 3).min(cap).max(base);
                    prop_assert!(d >= base && d <= high, "{d:?} outside {base:?}..={high:?}");
                }
            }
            previous = Some(d);
            n += 1;
        }
        prop_assert_eq!(n, attempts - 1, "attempts include the first call");
    }

    #[test]
    fn total_time_limit_and_hints_are_honoured(
        base_ms in 1u64..500,
        limit_ms in 1u64..5_000,
        hint_ms in proptest::option::of(0u64..2_000),
        seed in any::<u64>(),
    ) {
        let limit = Duration::from_millis(limit_ms);
        let policy = Backoff::exponential(Duration::from_millis(base_ms))
            .max_attempts(1_000)
            .max_elapsed(limit)
            .build()
            .unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut now = Tick::ZERO;
        let mut schedule = policy.schedule(now);
        let hint = hint_ms.map(Duration::from_millis);
        while let Some(d) = schedule.next_delay(now, hint, &mut rng) {
            if let Some(h) = hint {
                prop_assert!(d >= h);
            }
            now = now.saturating_add(d);
            prop_assert!(now.saturating_duration_since(Tick::ZERO) <= limit);
        }
    }
}

#[test]
fn invalid_backoffs_are_named() {
    let d = Duration::from_millis(10);
    let cases = [
        (Backoff::exponential(Duration::ZERO), "base"),
        (Backoff::exponential(d).cap(d / 2), "cap"),
        (Backoff::exponential(d).multiplier(0), "multiplier"),
        (Backoff::exponential(d).max_attempts(0), "max_attempts"),
        (Backoff::exponential(d).max_attempts(1_001), "max_attempts"),
        (
            Backoff::constant(d).max_elapsed(Duration::ZERO),
            "max_elapsed",
        ),
    ];
    for (builder, field) in cases {
        match builder.build() {
            Err(ResilienceError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected InvalidConfig({field}), got {other:?}"),
        }
    }
}

#[test]
fn constant_and_seeded_jitter_are_reproducible() {
    let policy = Backoff::constant(Duration::from_millis(50))
        .max_attempts(4)
        .build()
        .unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let mut s = policy.schedule(Tick::ZERO);
    let delays: Vec<_> = std::iter::from_fn(|| s.next_delay(Tick::ZERO, None, &mut rng)).collect();
    assert_eq!(delays, vec![Duration::from_millis(50); 3]);

    let full = Backoff::exponential(Duration::from_millis(10))
        .max_attempts(10)
        .build()
        .unwrap();
    let run = |seed| {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut s = full.schedule(Tick::ZERO);
        std::iter::from_fn(|| s.next_delay(Tick::ZERO, None, &mut rng)).collect::<Vec<_>>()
    };
    assert_eq!(run(9), run(9));
    assert_ne!(run(9), run(10));
}

#[test]
fn hint_beyond_cap_is_honoured() {
    let policy = Backoff::exponential(Duration::from_millis(10))
        .cap(Duration::from_millis(100))
        .build()
        .unwrap();
    let mut s = policy.schedule(Tick::ZERO);
    let mut rng = StdRng::seed_from_u64(0);
    assert_eq!(
        s.next_delay(Tick::ZERO, Some(Duration::from_secs(5)), &mut rng),
        Some(Duration::from_secs(5))
    );
}

#[test]
fn budget_allows_a_fraction_of_requests_plus_a_reserve() {
    let clock = ManualClock::new(Timestamp::EPOCH);
    let budget = RetryBudget::builder()
        .retry_percent(10)
        .min_retries_per_sec(2)
        .max_balance(3)
        .build_with_clock(clock.clone())
        .unwrap();
    assert!(
        budget.try_withdraw() && budget.try_withdraw(),
        "the reserve: 2 per second"
    );
    assert!(!budget.try_withdraw());
    for _ in 0..100 {
        budget.deposit();
    }
    assert_eq!(budget.balance(), 3, "capped at max_balance");
    assert!((0..3).all(|_| budget.try_withdraw()));
    assert!(!budget.try_withdraw());
    clock.advance(Duration::from_secs(1));
    assert!(budget.try_withdraw(), "the reserve refilled");
    for (percent, field) in [(0, "retry_percent"), (1_001, "retry_percent")] {
        assert!(matches!(
            RetryBudget::builder().retry_percent(percent).build(),
            Err(ResilienceError::InvalidConfig { field: f, .. }) if f == field
        ));
    }
    assert!(matches!(
        RetryBudget::builder().max_balance(0).build(),
        Err(ResilienceError::InvalidConfig {
            field: "max_balance",
            ..
        })
    ));
}

fn driver(
    attempts: u32,
) -> (
    Retry<ManualSleeper, ManualClock>,
    ManualClock,
    ManualSleeper,
) {
    let clock = ManualClock::new(Timestamp::EPOCH);
    let sleeper = ManualSleeper::new(clock.clone());
    let policy = Backoff::exponential(Duration::from_millis(100))
        .jitter(Jitter::None)
        .max_attempts(attempts)
        .build()
        .unwrap();
    (
        Retry::new(policy, sleeper.clone(), clock.clone()).with_seed(3),
        clock,
        sleeper,
    )
}

#[test]
fn driver_retries_until_success_sleeping_the_policy_delays() {
    let (retry, clock, sleeper) = driver(5);
    let calls = Cell::new(0);
    let out: Result<u32, &str> = futures::executor::block_on(retry.run(
        |attempt| {
            calls.set(calls.get() + 1);
            async move {
                if attempt < 3 {
                    Err("busy")
                } else {
                    Ok(attempt)
                }
            }
        },
        |_| RetryDecision::Retry,
    ));
    assert_eq!(out, Ok(3));
    assert_eq!(calls.get(), 4);
    assert_eq!(
        sleeper.total_slept(),
        Duration::from_millis(100 + 200 + 400)
    );
    assert_eq!(clock.monotonic().as_nanos(), 700_000_000);
}

#[test]
fn driver_stops_on_permanent_errors_exhaustion_and_budget() {
    let (retry, _, sleeper) = driver(3);
    let out: Result<(), &str> = futures::executor::block_on(
        retry.run(|_| async { Err("bad request") }, |_| RetryDecision::Stop),
    );
    assert_eq!(out, Err("bad request"));
    assert_eq!(sleeper.total_slept(), Duration::ZERO);

    let calls = Cell::new(0);
    let out: Result<(), u32> = futures::executor::block_on(retry.run(
        |a| {
            calls.set(calls.get() + 1);
            async move { Err(a) }
        },
        |_| RetryDecision::Retry,
    ));
    assert_eq!(out, Err(2), "the last attempt's error");
    assert_eq!(calls.get(), 3);

    let (retry, clock, _) = driver(10);
    let budget = Arc::new(
        RetryBudget::builder()
            .retry_percent(100)
            .min_retries_per_sec(0)
            .build_with_clock(clock)
            .unwrap(),
    );
    let retry = retry.with_budget(Arc::clone(&budget));
    let calls = Cell::new(0);
    let _: Result<(), ()> = futures::executor::block_on(retry.run(
        |_| {
            calls.set(calls.get() + 1);
            async { Err(()) }
        },
        |_| RetryDecision::Retry,
    ));
    assert_eq!(calls.get(), 2, "one request deposits one retry at 100 %");
}

#[test]
fn driver_honours_retry_after() {
    let (retry, _, sleeper) = driver(2);
    let _: Result<(), ()> = futures::executor::block_on(retry.run(
        |_| async { Err(()) },
        |_| RetryDecision::RetryAfter(Duration::from_secs(7)),
    ));
    assert_eq!(sleeper.total_slept(), Duration::from_secs(7));
}
