//! Timeout and bulkhead.

// Tests drive the drivers like an application: they spawn tasks and wait on tokio's timer.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use metered_clock::{ManualClock, Timestamp};
use resilience::{Bulkhead, ManualSleeper, ResilienceError, TokioSleeper, timeout};

#[test]
fn timeout_passes_fast_calls_and_cuts_slow_ones() {
    let sleeper = ManualSleeper::new(ManualClock::new(Timestamp::EPOCH));
    let ok = futures::executor::block_on(timeout(&sleeper, Duration::from_secs(1), async { 5 }));
    assert_eq!(ok, Ok(5));
    assert_eq!(
        sleeper.total_slept(),
        Duration::ZERO,
        "a ready call never starts the timer"
    );
    let cut = futures::executor::block_on(timeout(
        &sleeper,
        Duration::from_millis(30),
        std::future::pending::<()>(),
    ));
    assert_eq!(
        cut,
        Err(ResilienceError::Timeout(Duration::from_millis(30)))
    );
    assert!(ResilienceError::Timeout(Duration::ZERO).is_retryable());
}

#[tokio::test(start_paused = true)]
async fn timeout_on_tokio() {
    let slow = timeout(
        &TokioSleeper,
        Duration::from_millis(50),
        tokio::time::sleep(Duration::from_secs(1)),
    )
    .await;
    assert_eq!(
        slow,
        Err(ResilienceError::Timeout(Duration::from_millis(50)))
    );
    let fast = timeout(&TokioSleeper, Duration::from_secs(1), async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        "done"
    })
    .await;
    assert_eq!(fast, Ok("done"));
}

#[test]
fn bulkhead_rejects_beyond_its_limit_and_frees_on_drop() {
    assert!(matches!(
        Bulkhead::new(0),
        Err(ResilienceError::InvalidConfig {
            field: "max_concurrent",
            ..
        })
    ));
    let b = Bulkhead::new(1).unwrap();
    let p = b.try_acquire().unwrap();
    assert_eq!(
        b.try_acquire().unwrap_err(),
        ResilienceError::BulkheadFull { max_concurrent: 1 }
    );
    let rejected = futures::executor::block_on(b.call(async { 1 }));
    assert_eq!(
        rejected,
        Err(ResilienceError::BulkheadFull { max_concurrent: 1 })
    );
    drop(p);
    assert_eq!(futures::executor::block_on(b.call(async { 1 })), Ok(1));
    assert_eq!(b.max_concurrent(), 1);
}

#[tokio::test(start_paused = true)]
async fn bulkhead_bounded_wait_and_queue() {
    let b = Bulkhead::with_queue(1, 1).unwrap();
    let held = b.try_acquire().unwrap();
    // No wait allowed: refused at once.
    assert!(b.acquire(Duration::ZERO, &TokioSleeper).await.is_err());
    // One waiter may queue; a second is refused at once.
    let b2 = b.clone();
    let waiter = tokio::spawn(async move {
        b2.acquire(Duration::from_secs(10), &TokioSleeper)
            .await
            .map(|_| ())
    });
    tokio::task::yield_now().await;
    assert_eq!(
        b.acquire(Duration::from_secs(10), &TokioSleeper)
            .await
            .unwrap_err(),
        ResilienceError::BulkheadFull { max_concurrent: 1 }
    );
    drop(held);
    waiter.await.unwrap().unwrap();
    // A waiter whose wait runs out gives up, and leaves the queue.
    let held = b.try_acquire().unwrap();
    assert!(
        b.acquire(Duration::from_millis(10), &TokioSleeper)
            .await
            .is_err()
    );
    let b3 = b.clone();
    let waiter = tokio::spawn(async move {
        b3.acquire(Duration::from_secs(1), &TokioSleeper)
            .await
            .map(|_| ())
    });
    tokio::task::yield_now().await;
    drop(held);
    waiter.await.unwrap().unwrap();
}
