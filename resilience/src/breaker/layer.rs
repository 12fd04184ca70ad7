//! The circuit breaker as a `tower` layer (feature `tower`).

use std::fmt;
use std::task::{Context, Poll};

use metered_clock::Clock;
use tower_layer::Layer;
use tower_service::Service;

use super::{CallOutcome, CircuitBreaker, OwnedPermit, classify_result};
use crate::error::CallError;
use crate::future::{Guard, ResponseFuture};

/// Maps a call's result to a [`CallOutcome`] for the breaker layer. Implemented by
/// [`OkIsSuccess`] and by every `Fn(&Result<R, E>) -> CallOutcome`.
pub trait Classify<R, E> {
    /// How the breaker should count `result`.
    fn classify(&self, result: &Result<R, E>) -> CallOutcome;
}

/// The default classifier: `Ok` is a success, `Err` a failure.
#[derive(Clone, Copy, Debug, Default)]
pub struct OkIsSuccess;

impl<R, E> Classify<R, E> for OkIsSuccess {
    fn classify(&self, result: &Result<R, E>) -> CallOutcome {
        classify_result(result)
    }
}

impl<R, E, F: Fn(&Result<R, E>) -> CallOutcome> Classify<R, E> for F {
    fn classify(&self, result: &Result<R, E>) -> CallOutcome {
        self(result)
    }
}

/// Applies a [`CircuitBreaker`] to a service. The classifier (by default [`OkIsSuccess`])
/// maps each inner result to a [`CallOutcome`].
#[derive(Clone)]
pub struct CircuitBreakerLayer<C, K = OkIsSuccess> {
    breaker: CircuitBreaker<C>,
    classify: K,
}

impl<C: Clock> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl<C: Clock> CircuitBreakerLayer<C> {
    /// A layer counting `Ok` as success and `Err` as failure.
    #[must_use]
    pub fn new(breaker: CircuitBreaker<C>) -> Self {
        CircuitBreakerLayer {
            breaker,
            classify: OkIsSuccess,
        }
    }

    /// A layer with a custom classifier.
    #[must_use]
    pub fn with_classifier<K>(
        breaker: CircuitBreaker<C>,
        classify: K,
    ) -> CircuitBreakerLayer<C, K> {
        CircuitBreakerLayer { breaker, classify }
    }
}

impl<S, C: Clock, K: Clone> Layer<S> for CircuitBreakerLayer<C, K> {
    type Service = CircuitBreakerService<S, C, K>;
    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService {
            inner,
            breaker: self.breaker.clone(),
            classify: self.classify.clone(),
        }
    }
}

/// The service made by [`CircuitBreakerLayer`].
#[derive(Clone)]
pub struct CircuitBreakerService<S, C, K> {
    inner: S,
    breaker: CircuitBreaker<C>,
    classify: K,
}

impl<S, C: Clock, K> fmt::Debug for CircuitBreakerService<S, C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerService")
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

/// A breaker permit plus the classifier that decides its outcome.
pub struct BreakerGuard<C: Clock, K> {
    permit: OwnedPermit<C>,
    classify: K,
}

impl<C: Clock, K> fmt::Debug for BreakerGuard<C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerGuard").finish_non_exhaustive()
    }
}

impl<C: Clock, K> Unpin for BreakerGuard<C, K> {}

impl<C: Clock, K, R, E> Guard<R, E> for BreakerGuard<C, K>
where
    K: Classify<R, E>,
{
    fn complete(self, result: &Result<R, E>) {
        let outcome = self.classify.classify(result);
        self.permit.record(outcome);
    }
}

impl<S, Req, C, K> Service<Req> for CircuitBreakerService<S, C, K>
where
    S: Service<Req>,
    C: Clock,
    K: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = CallError<S::Error>;
    type Future = ResponseFuture<S::Future, BreakerGuard<C, K>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(CallError::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.breaker.try_acquire_owned() {
            Ok(permit) => ResponseFuture::running(
                self.inner.call(req),
                BreakerGuard {
                    permit,
                    classify: self.classify.clone(),
                },
            ),
            Err(e) => ResponseFuture::rejected(e),
        }
    }
}
