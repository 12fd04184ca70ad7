//! The tower layers, stacked the way a service would use them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use metered_clock::{ManualClock, Timestamp};
use resilience::{
    Backoff, BreakerConfig, Bulkhead, CallError, CallOutcome, CircuitBreaker, Jitter,
    KeyedRateLimiter, ManualSleeper, Quota, RateLimiter, ResilienceError, Retry, RetryDecision,
    State,
};
use resilience::{
    BulkheadLayer, CircuitBreakerLayer, KeyedRateLimitLayer, RateLimitLayer, RetryLayer,
};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

fn block<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

#[test]
fn breaker_layer_fails_fast_without_calling_the_inner_service() {
    let clock = ManualClock::new(Timestamp::EPOCH);
    let config = BreakerConfig::builder()
        .count_window(2)
        .minimum_calls(2)
        .build()
        .unwrap();
    let breaker = CircuitBreaker::with_clock(config, clock);
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone()))
        .service(service_fn(move |_: ()| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>("down") }
        }));
    for _ in 0..2 {
        assert!(matches!(
            block(svc.clone().oneshot(())),
            Err(CallError::Inner("down"))
        ));
    }
    assert_eq!(breaker.state(), State::Open);
    let rejected = block(svc.oneshot(()));
    assert!(matches!(
        rejected,
        Err(CallError::Rejected(ResilienceError::CircuitOpen { .. }))
    ));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the open breaker never called the backend"
    );
}

#[test]
fn breaker_layer_with_classifier_ignores_client_errors() {
    let breaker = CircuitBreaker::new(
        BreakerConfig::builder()
            .count_window(2)
            .minimum_calls(2)
            .build()
            .unwrap(),
    );
    let classify = |r: &Result<(), u16>| match r {
        Err(code) if *code < 500 => CallOutcome::Ignored,
        Err(_) => CallOutcome::Failure,
        Ok(()) => CallOutcome::Success,
    };
    let svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::with_classifier(
            breaker.clone(),
            classify,
        ))
        .service(service_fn(|code: u16| async move { Err::<(), _>(code) }));
    for _ in 0..5 {
        let _ = block(svc.clone().oneshot(404));
    }
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.stats().calls, 0);
}

#[test]
fn rate_limit_layers_reject_with_retry_after() {
    let clock = ManualClock::new(Timestamp::EPOCH);
    let quota = Quota::per_second(2).unwrap();
    let limiter = Arc::new(RateLimiter::with_clock(quota, clock.clone()));
    let svc = ServiceBuilder::new()
        .layer(RateLimitLayer::new(limiter))
        .service(service_fn(|x: u32| async move { Ok::<_, ()>(x) }));
    assert_eq!(block(svc.clone().oneshot(1)).unwrap(), 1);
    assert_eq!(block(svc.clone().oneshot(2)).unwrap(), 2);
    let err = block(svc.clone().oneshot(3)).unwrap_err();
    assert_eq!(
        err.rejection().and_then(ResilienceError::retry_after),
        Some(Duration::from_millis(500))
    );

    let keyed = Arc::new(KeyedRateLimiter::with_clock(quota, 100, clock).unwrap());
    let svc = ServiceBuilder::new()
        .layer(KeyedRateLimitLayer::new(
            keyed,
            |req: &(&'static str, u32)| req.0,
        ))
        .service(service_fn(|req: (&'static str, u32)| async move {
            Ok::<_, ()>(req.1)
        }));
    for i in 0..2 {
        block(svc.clone().oneshot(("tenant-a", i))).unwrap();
    }
    assert!(block(svc.clone().oneshot(("tenant-a", 9))).is_err());
    assert_eq!(block(svc.oneshot(("tenant-b", 9))).unwrap(), 9);
}

#[test]
fn bulkhead_layer_holds_the_slot_until_the_response_completes() {
    let bulkhead = Bulkhead::new(1).unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(BulkheadLayer::new(bulkhead))
        .service(service_fn(|pending: bool| async move {
            if pending {
                std::future::pending::<()>().await;
            }
            Ok::<_, ()>(())
        }));
    block(svc.ready()).unwrap();
    let in_flight = svc.call(true);
    let refused = block(svc.clone().oneshot(false));
    assert!(matches!(
        refused,
        Err(CallError::Rejected(ResilienceError::BulkheadFull { .. }))
    ));
    drop(in_flight); // cancelled: the slot is free again
    assert!(block(svc.oneshot(false)).is_ok());
}

#[test]
fn retry_layer_retries_until_success() {
    let clock = ManualClock::new(Timestamp::EPOCH);
    let sleeper = ManualSleeper::new(clock.clone());
    let policy = Backoff::exponential(Duration::from_millis(10))
        .jitter(Jitter::None)
        .max_attempts(5)
        .build()
        .unwrap();
    let retry = Arc::new(Retry::new(policy, sleeper.clone(), clock));
    let attempts = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&attempts);
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(retry, |e: &&str| {
            if *e == "conflict" {
                RetryDecision::Retry
            } else {
                RetryDecision::Stop
            }
        }))
        .service(service_fn(move |x: u32| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move { if n < 2 { Err("conflict") } else { Ok(x) } }
        }));
    assert_eq!(block(svc.clone().oneshot(7)), Ok(7));
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    assert_eq!(sleeper.total_slept(), Duration::from_millis(30));
}
