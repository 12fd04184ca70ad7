//! Circuit breaker behaviour, driven step by step with a manual clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use metered_clock::{ManualClock, Timestamp};
use resilience::{
    BreakerConfig, BreakerConfigBuilder, BreakerEvent, CallError, CallOutcome, CircuitBreaker,
    OpenWait, ResilienceError, State,
};

fn clock() -> ManualClock {
    ManualClock::new(Timestamp::EPOCH)
}

/// 4-call window judged from 4 calls at 50 %, 10 s open wait, 2 trial calls.
fn small() -> BreakerConfigBuilder {
    BreakerConfig::builder()
        .name("test")
        .count_window(4)
        .minimum_calls(4)
        .failure_rate_threshold(50)
        .open_wait(OpenWait::Fixed(Duration::from_secs(10)))
        .half_open_calls(2)
}

fn breaker(config: BreakerConfigBuilder) -> (CircuitBreaker<ManualClock>, ManualClock) {
    let c = clock();
    (
        CircuitBreaker::with_clock(config.build().unwrap(), c.clone()),
        c,
    )
}

fn record(b: &CircuitBreaker<ManualClock>, outcomes: &str) {
    for ch in outcomes.chars() {
        let p = b.try_acquire().expect("permitted");
        match ch {
            's' => p.record_success(),
            'f' => p.record_failure(),
            'i' => p.record(CallOutcome::Ignored),
            _ => unreachable!(),
        }
    }
}

fn trip(b: &CircuitBreaker<ManualClock>) {
    record(b, "ffff");
    assert_eq!(b.state(), State::Open);
}

#[test]
fn invalid_configs_are_named_and_build_nothing() {
    let d = Duration::from_secs(1);
    let cases: Vec<(BreakerConfigBuilder, &str)> = vec![
        (BreakerConfig::builder().name(""), "name"),
        (
            BreakerConfig::builder().failure_rate_threshold(0),
            "failure_rate_threshold",
        ),
        (
            BreakerConfig::builder().failure_rate_threshold(101),
            "failure_rate_threshold",
        ),
        (
            BreakerConfig::builder().slow_calls(Duration::ZERO, 50),
            "slow_call_duration",
        ),
        (
            BreakerConfig::builder().slow_calls(d, 0),
            "slow_call_rate_threshold",
        ),
        (
            BreakerConfig::builder().slow_calls(d, 101),
            "slow_call_rate_threshold",
        ),
        (BreakerConfig::builder().count_window(0), "count_window"),
        (
            BreakerConfig::builder().count_window(40_000),
            "count_window",
        ),
        (
            BreakerConfig::builder().count_window(10).minimum_calls(11),
            "minimum_calls",
        ),
        (
            BreakerConfig::builder().minimum_calls(0).count_window(10),
            "minimum_calls",
        ),
        (
            BreakerConfig::builder().time_window_secs(0),
            "time_window_secs",
        ),
        (
            BreakerConfig::builder().time_window_secs(3_601),
            "time_window_secs",
        ),
        (
            BreakerConfig::builder().half_open_calls(0),
            "half_open_calls",
        ),
        (
            BreakerConfig::builder().half_open_calls(4_096),
            "half_open_calls",
        ),
        (
            BreakerConfig::builder().open_wait(OpenWait::Fixed(Duration::ZERO)),
            "open_wait",
        ),
        (
            BreakerConfig::builder().open_wait(OpenWait::Exponential {
                initial: d * 2,
                max: d,
            }),
            "open_wait",
        ),
        (
            BreakerConfig::builder().open_wait(OpenWait::Exponential {
                initial: Duration::ZERO,
                max: d,
            }),
            "open_wait",
        ),
    ];
    for (builder, field) in cases {
        match builder.build() {
            Err(ResilienceError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected InvalidConfig({field}), got {other:?}"),
        }
    }
    // A time window may judge from more calls than a count window could hold.
    assert!(
        BreakerConfig::builder()
            .time_window_secs(10)
            .minimum_calls(1_000)
            .build()
            .is_ok()
    );
}

#[test]
fn closed_judges_only_after_minimum_calls() {
    let (b, _) = breaker(small());
    record(&b, "fff");
    assert_eq!(b.state(), State::Closed, "3 calls < minimum of 4");
    record(&b, "s");
    assert_eq!(b.state(), State::Open, "3 of 4 failed (75 % ≥ 50 %)");
}

#[test]
fn failure_rate_below_threshold_stays_closed_and_window_slides() {
    let (b, _) = breaker(small());
    record(&b, "fsss"); // 25 %
    assert_eq!(b.state(), State::Closed);
    record(&b, "s"); // window: s s s s → the first failure slid out
    assert_eq!(b.stats().failed_calls, 0);
    assert_eq!(b.stats().calls, 4);
    record(&b, "f"); // s s s f
    assert_eq!(b.state(), State::Closed);
    record(&b, "f"); // s s f f → 50 %
    assert_eq!(b.state(), State::Open);
}

#[test]
fn exactly_at_threshold_opens() {
    let (b, _) = breaker(small());
    record(&b, "sfsf");
    assert_eq!(b.state(), State::Open);
}

#[test]
fn open_rejects_with_retry_after_then_half_open_lazily() {
    let (b, c) = breaker(small());
    trip(&b);
    match b.try_acquire() {
        Err(ResilienceError::CircuitOpen { retry_after }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(10)))
        }
        other => panic!("expected CircuitOpen, got {other:?}"),
    }
    c.advance(Duration::from_millis(9_999));
    assert!(b.try_acquire().is_err());
    assert_eq!(b.remaining_open_wait(), Some(Duration::from_millis(1)));
    c.advance(Duration::from_millis(1));
    assert_eq!(
        b.state(),
        State::Open,
        "no background timer: still open until a call"
    );
    let p = b.try_acquire().expect("first trial call");
    assert_eq!(b.state(), State::HalfOpen);
    drop(p);
    assert_eq!(b.stats().not_permitted_calls, 2);
}

#[test]
fn half_open_admits_exactly_its_permits_and_closes_on_success() {
    let (b, c) = breaker(small());
    trip(&b);
    c.advance(Duration::from_secs(10));
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire().unwrap();
    assert!(matches!(
        b.try_acquire(),
        Err(ResilienceError::CircuitOpen { retry_after: None })
    ));
    p1.record_success();
    assert_eq!(
        b.state(),
        State::HalfOpen,
        "decides only when all trial calls are in"
    );
    assert!(
        b.try_acquire().is_err(),
        "a recorded permit is not handed back"
    );
    p2.record_success();
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.stats().calls, 0, "closing starts a fresh window");
}

#[test]
fn half_open_failures_reopen_with_exponential_wait() {
    let (b, c) = breaker(small().open_wait(OpenWait::Exponential {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(3),
    }));
    trip(&b);
    assert_eq!(b.remaining_open_wait(), Some(Duration::from_secs(1)));
    for expected in [2, 3, 3] {
        c.advance(b.remaining_open_wait().unwrap());
        record(&b, "sf"); // 50 % of the trial calls failed
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.remaining_open_wait(), Some(Duration::from_secs(expected)));
    }
    c.advance(Duration::from_secs(3));
    record(&b, "ss");
    assert_eq!(b.state(), State::Closed);
    trip(&b);
    assert_eq!(
        b.remaining_open_wait(),
        Some(Duration::from_secs(1)),
        "closing reset the growth"
    );
}

#[test]
fn dropped_half_open_permit_gives_its_slot_back() {
    let (b, c) = breaker(small().half_open_calls(1));
    trip(&b);
    c.advance(Duration::from_secs(10));
    let p = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err());
    drop(p); // cancelled without an outcome
    let p = b.try_acquire().expect("slot handed back");
    p.record_success();
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn cancelled_call_future_gives_its_slot_back() {
    let (b, c) = breaker(small().half_open_calls(1));
    trip(&b);
    c.advance(Duration::from_secs(10));
    {
        let mut fut = Box::pin(b.call(std::future::pending::<Result<(), ()>>()));
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert!(b.try_acquire().is_err(), "the probe holds the only slot");
    } // the caller gave up: the future is dropped mid-call
    let out: Result<u8, CallError<()>> = futures::executor::block_on(b.call(async { Ok(1) }));
    assert_eq!(out.unwrap(), 1);
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn ignored_outcomes_do_not_count_and_hand_back_trial_slots() {
    let (b, c) = breaker(small());
    record(&b, "iiiifff");
    assert_eq!(b.stats().calls, 3);
    assert_eq!(b.state(), State::Closed);
    record(&b, "f");
    assert_eq!(b.state(), State::Open);
    c.advance(Duration::from_secs(10));
    record(&b, "iii"); // each hands its slot back
    assert_eq!(b.state(), State::HalfOpen);
    record(&b, "ss");
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn call_with_classifier() {
    let (b, _) = breaker(small());
    let not_found = |r: &Result<(), &str>| match r {
        Err("not found") => CallOutcome::Ignored,
        Err(_) => CallOutcome::Failure,
        Ok(()) => CallOutcome::Success,
    };
    for _ in 0..10 {
        let r = futures::executor::block_on(b.call_with(not_found, async { Err("not found") }));
        assert!(matches!(r, Err(CallError::Inner("not found"))));
    }
    assert_eq!(b.stats().calls, 0);
    for _ in 0..4 {
        let _ = futures::executor::block_on(b.call(async { Err::<(), _>("down") }));
    }
    let r = futures::executor::block_on(b.call(async { Ok::<_, &str>(()) }));
    match r {
        Err(CallError::Rejected(e)) => assert!(e.is_retryable()),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn stale_permit_from_before_a_transition_is_ignored() {
    let (b, c) = breaker(small().half_open_calls(1));
    let old = b.try_acquire().unwrap(); // admitted while closed
    trip(&b);
    c.advance(Duration::from_secs(10));
    let probe = b.try_acquire().unwrap();
    old.record_failure(); // arrives late: must not decide the half-open phase
    assert_eq!(b.state(), State::HalfOpen);
    probe.record_success();
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn slow_calls_trip_the_breaker() {
    let (b, c) = breaker(small().slow_calls(Duration::from_millis(100), 50));
    for _ in 0..2 {
        let p = b.try_acquire().unwrap();
        c.advance(Duration::from_millis(150));
        p.record_success();
        record(&b, "s");
    }
    assert_eq!(b.stats().slow_calls, 2);
    assert_eq!(b.stats().slow_call_rate_percent(), Some(50));
    assert_eq!(b.state(), State::Open);
}

#[test]
fn time_window_forgets_old_seconds() {
    let (b, c) = breaker(
        BreakerConfig::builder()
            .time_window_secs(10)
            .minimum_calls(4)
            .failure_rate_threshold(50),
    );
    record(&b, "fff");
    c.advance(Duration::from_secs(10)); // those three are now outside the window
    record(&b, "s");
    assert_eq!(b.stats().calls, 1);
    assert_eq!(b.state(), State::Closed);
    record(&b, "sss");
    assert_eq!(b.state(), State::Closed);
    c.advance(Duration::from_secs(5));
    record(&b, "ffff"); // 4 of 8 in the last 10 s
    assert_eq!(b.state(), State::Open);
    c.advance(Duration::from_secs(3_600));
    assert_eq!(b.stats().calls, 0, "the window has moved on");
}

#[test]
fn time_window_after_long_idle_starts_empty() {
    let (b, c) = breaker(
        BreakerConfig::builder()
            .time_window_secs(2)
            .minimum_calls(2),
    );
    record(&b, "f");
    c.advance(Duration::from_secs(100_000));
    record(&b, "f");
    assert_eq!(b.stats().calls, 1);
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn half_open_max_wait_reopens() {
    let (b, c) = breaker(
        small()
            .half_open_calls(1)
            .half_open_max_wait(Duration::from_secs(5)),
    );
    trip(&b);
    c.advance(Duration::from_secs(10));
    let hung = b.try_acquire().unwrap();
    c.advance(Duration::from_secs(4));
    assert!(b.try_acquire().is_err());
    assert_eq!(b.state(), State::HalfOpen);
    c.advance(Duration::from_secs(1));
    assert!(matches!(
        b.try_acquire(),
        Err(ResilienceError::CircuitOpen {
            retry_after: Some(_)
        })
    ));
    assert_eq!(b.state(), State::Open);
    hung.record_success(); // too late to matter
    assert_eq!(b.state(), State::Open);
}

#[test]
fn manual_states() {
    let (b, c) = breaker(small());
    b.force_open();
    assert!(matches!(
        b.try_acquire(),
        Err(ResilienceError::CircuitOpen { retry_after: None })
    ));
    c.advance(Duration::from_secs(3_600));
    assert!(b.try_acquire().is_err(), "forced open does not time out");

    b.disable();
    record(&b, "ffffffff");
    assert_eq!(b.state(), State::Disabled);
    assert_eq!(b.stats().calls, 0, "disabled records nothing");

    b.metrics_only();
    record(&b, "ffffffff");
    assert_eq!(b.state(), State::MetricsOnly);
    assert_eq!(b.stats().failure_rate_percent(), Some(100));

    b.reset();
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.stats().calls, 0);

    b.open();
    assert_eq!(b.remaining_open_wait(), Some(Duration::from_secs(10)));
}

#[test]
fn listener_sees_transitions_outcomes_and_rejections() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let (b, _) = breaker(small().on_event(move |e| sink.lock().unwrap().push(*e)));
    record(&b, "ffff");
    let _ = b.try_acquire();
    let events = events.lock().unwrap();
    let failure = BreakerEvent::Recorded {
        outcome: CallOutcome::Failure,
        slow: false,
    };
    assert_eq!(
        *events,
        vec![
            failure,
            failure,
            failure,
            BreakerEvent::Transition {
                from: State::Closed,
                to: State::Open
            },
            failure,
            BreakerEvent::Rejected { state: State::Open },
        ]
    );
}

#[test]
fn metrics_enabled_breaker_works_without_a_recorder() {
    let (b, _) = breaker(small().metrics(true));
    trip(&b);
    assert!(b.try_acquire().is_err());
}

#[test]
fn clones_share_state_and_debug_shows_name() {
    let (b, _) = breaker(small());
    let b2 = b.clone();
    trip(&b);
    assert_eq!(b2.state(), State::Open);
    assert!(format!("{b2:?}").contains("test"));
    assert_eq!(b.name(), "test");
}

#[test]
fn primitives_are_send_sync_and_their_futures_send() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<CircuitBreaker>();
    send_sync::<resilience::RateLimiter>();
    send_sync::<resilience::KeyedRateLimiter<String>>();
    send_sync::<resilience::Bulkhead>();
    send_sync::<resilience::RetryBudget>();
    send_sync::<resilience::Retry<resilience::TokioSleeper>>();
    let b = CircuitBreaker::new(BreakerConfig::builder().build().unwrap());
    send(&b.call(async { Ok::<(), ()>(()) }));
    let retry = resilience::Retry::new(
        resilience::Backoff::constant(Duration::from_millis(1))
            .build()
            .unwrap(),
        resilience::TokioSleeper,
        metered_clock::SystemClock::new(),
    );
    send(&retry.run(
        |_| async { Ok::<(), ()>(()) },
        |_| resilience::RetryDecision::Retry,
    ));
}
