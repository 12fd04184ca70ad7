//! A runtime-neutral timeout.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use crate::error::ResilienceError;
use crate::sleep::Sleeper;

/// Runs `fut` for at most `limit`, sleeping on `sleeper`. When time runs out `fut` is
/// dropped (cancelled) and [`ResilienceError::Timeout`] returned.
///
/// `fut` is polled before the timer is created, so a call that completes on its first poll
/// (a cache hit, a ready connection) never touches the timer.
///
/// # Errors
///
/// [`ResilienceError::Timeout`] if `fut` did not complete within `limit`.
///
/// ```
/// use std::time::Duration;
/// use metered_clock::{ManualClock, Timestamp};
/// use resilience::{ResilienceError, ManualSleeper, timeout};
///
/// let sleeper = ManualSleeper::new(ManualClock::new(Timestamp::EPOCH));
/// let fast = futures::executor::block_on(timeout(&sleeper, Duration::from_secs(1), async { 7 }));
/// assert_eq!(fast, Ok(7));
/// let never = futures::executor::block_on(timeout(&sleeper, Duration::from_secs(1), std::future::pending::<()>()));
/// assert_eq!(never, Err(ResilienceError::Timeout(Duration::from_secs(1))));
/// ```
pub async fn timeout<S, F>(
    sleeper: &S,
    limit: Duration,
    fut: F,
) -> Result<F::Output, ResilienceError>
where
    S: Sleeper + ?Sized,
    F: Future,
{
    let mut fut = pin!(fut);
    let mut sleep = pin!(None::<S::Sleep>);
    poll_fn(move |cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        if sleep.is_none() {
            sleep.set(Some(sleeper.sleep(limit)));
        }
        match sleep.as_mut().as_pin_mut().map(|s| s.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(ResilienceError::Timeout(limit))),
            _ => Poll::Pending,
        }
    })
    .await
}
