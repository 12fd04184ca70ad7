//! The response future shared by the fail-fast `tower` services (feature `tower`): the
//! breaker, limiter and bulkhead services check before calling the inner service, so their
//! future is either the rejection or the inner call holding its guard.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::error::{CallError, ResilienceError};

/// The response future of the fail-fast services: either the rejection, or the inner call
/// holding whatever guard (breaker permit, bulkhead slot) must live as long as it.
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture<F, G> {
    state: FutureState<F, G>,
}

enum FutureState<F, G> {
    Rejected(Option<ResilienceError>),
    Running {
        inner: Pin<Box<F>>,
        guard: Option<G>,
    },
}

impl<F, G> fmt::Debug for ResponseFuture<F, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

/// What to do with the guard when the inner call completes.
pub(crate) trait Guard<R, E> {
    /// Called once, with the inner call's result.
    fn complete(self, result: &Result<R, E>);
}

impl<F, G> ResponseFuture<F, G> {
    pub(crate) fn rejected(error: ResilienceError) -> Self {
        ResponseFuture {
            state: FutureState::Rejected(Some(error)),
        }
    }

    pub(crate) fn running(inner: F, guard: G) -> Self {
        ResponseFuture {
            state: FutureState::Running {
                inner: Box::pin(inner),
                guard: Some(guard),
            },
        }
    }
}

impl<F, G, R, E> Future for ResponseFuture<F, G>
where
    F: Future<Output = Result<R, E>>,
    G: Guard<R, E> + Unpin,
{
    type Output = Result<R, CallError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            FutureState::Rejected(error) => match error.take() {
                Some(e) => Poll::Ready(Err(CallError::Rejected(e))),
                None => Poll::Pending, // Polled after completion: never resolves again.
            },
            FutureState::Running { inner, guard } => {
                let result = std::task::ready!(inner.as_mut().poll(cx));
                if let Some(g) = guard.take() {
                    g.complete(&result);
                }
                Poll::Ready(result.map_err(CallError::Inner))
            }
        }
    }
}

/// No guard: the limiter's permit is spent when taken.
#[derive(Debug)]
pub struct NoGuard;

impl<R, E> Guard<R, E> for NoGuard {
    fn complete(self, _: &Result<R, E>) {}
}
