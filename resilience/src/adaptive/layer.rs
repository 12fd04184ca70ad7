//! The adaptive concurrency limiter as a `tower` layer (feature `tower`).

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use metered_clock::Clock;
use tower_layer::Layer;
use tower_service::Service;

use super::{AdaptiveLimiter, OwnedAdaptivePermit};
use crate::breaker::{Classify, OkIsSuccess};
use crate::error::CallError;
use crate::future::{Guard, ResponseFuture};

/// Applies a shared [`AdaptiveLimiter`] to a service: a request finding the limit reached
/// fails at once with [`ResilienceError::ConcurrencyLimited`](crate::ResilienceError);
/// otherwise its latency and outcome feed the limit. The classifier (by default
/// [`OkIsSuccess`]) maps each result to a [`CallOutcome`](crate::CallOutcome):
/// `Failure` counts as a drop, `Ignored` takes no sample. A response future dropped before
/// it completes (cancelled) takes no sample either.
pub struct AdaptiveLimitLayer<C, K = OkIsSuccess> {
    limiter: Arc<AdaptiveLimiter<C>>,
    classify: K,
}

impl<C, K: Clone> Clone for AdaptiveLimitLayer<C, K> {
    fn clone(&self) -> Self {
        AdaptiveLimitLayer {
            limiter: Arc::clone(&self.limiter),
            classify: self.classify.clone(),
        }
    }
}

impl<C: Clock, K> fmt::Debug for AdaptiveLimitLayer<C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimitLayer")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<C: Clock> AdaptiveLimitLayer<C> {
    /// A layer counting `Ok` as success and `Err` as a drop.
    #[must_use]
    pub fn new(limiter: Arc<AdaptiveLimiter<C>>) -> Self {
        AdaptiveLimitLayer {
            limiter,
            classify: OkIsSuccess,
        }
    }

    /// A layer with a custom classifier.
    #[must_use]
    pub fn with_classifier<K>(
        limiter: Arc<AdaptiveLimiter<C>>,
        classify: K,
    ) -> AdaptiveLimitLayer<C, K> {
        AdaptiveLimitLayer { limiter, classify }
    }
}

impl<S, C: Clock, K: Clone> Layer<S> for AdaptiveLimitLayer<C, K> {
    type Service = AdaptiveLimitService<S, C, K>;
    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveLimitService {
            inner,
            limiter: Arc::clone(&self.limiter),
            classify: self.classify.clone(),
        }
    }
}

/// The service made by [`AdaptiveLimitLayer`].
pub struct AdaptiveLimitService<S, C, K> {
    inner: S,
    limiter: Arc<AdaptiveLimiter<C>>,
    classify: K,
}

impl<S: Clone, C, K: Clone> Clone for AdaptiveLimitService<S, C, K> {
    fn clone(&self) -> Self {
        AdaptiveLimitService {
            inner: self.inner.clone(),
            limiter: Arc::clone(&self.limiter),
            classify: self.classify.clone(),
        }
    }
}

impl<S, C: Clock, K> fmt::Debug for AdaptiveLimitService<S, C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimitService")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

/// An adaptive permit plus the classifier that decides its outcome. Dropped before the
/// call completes, it frees the slot and takes no sample.
pub struct AdaptiveGuard<C: Clock, K> {
    permit: Option<OwnedAdaptivePermit<C>>,
    classify: K,
}

impl<C: Clock, K> fmt::Debug for AdaptiveGuard<C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveGuard").finish_non_exhaustive()
    }
}

impl<C: Clock, K> Unpin for AdaptiveGuard<C, K> {}

impl<C: Clock, K> Drop for AdaptiveGuard<C, K> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            permit.record_ignored(); // Cancelled: the latency means nothing.
        }
    }
}

impl<C: Clock, K, R, E> Guard<R, E> for AdaptiveGuard<C, K>
where
    K: Classify<R, E>,
{
    fn complete(mut self, result: &Result<R, E>) {
        if let Some(permit) = self.permit.take() {
            permit.record(self.classify.classify(result));
        }
    }
}

impl<S, Req, C, K> Service<Req> for AdaptiveLimitService<S, C, K>
where
    S: Service<Req>,
    C: Clock,
    K: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = CallError<S::Error>;
    type Future = ResponseFuture<S::Future, AdaptiveGuard<C, K>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(CallError::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.limiter.try_acquire_owned() {
            Ok(permit) => ResponseFuture::running(
                self.inner.call(req),
                AdaptiveGuard {
                    permit: Some(permit),
                    classify: self.classify.clone(),
                },
            ),
            Err(e) => ResponseFuture::rejected(e),
        }
    }
}
