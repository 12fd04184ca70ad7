//! `tower` layers (feature `tower`) for the circuit breaker, the rate limiters, the bulkhead
//! and retries, so axum and tonic services can stack them.
//!
//! The breaker, limiter and bulkhead services check *before* calling the inner service and
//! fail fast with [`CallError::Rejected`]; the inner service's own errors come back as
//! [`CallError::Inner`]. Map a rejection to a response (`503`, or `429` with
//! [`Error::retry_after`] as `Retry-After`) in your error handler.
//!
//! ```
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use resilience::layers::{BulkheadLayer, CircuitBreakerLayer, RateLimitLayer};
//! use resilience::{BreakerConfig, Bulkhead, CircuitBreaker, Quota, RateLimiter};
//!
//! let breaker = CircuitBreaker::new(BreakerConfig::builder().name("backend").build()?);
//! let limiter = std::sync::Arc::new(RateLimiter::new(Quota::per_second(100)?));
//! let svc = ServiceBuilder::new()
//!     .layer(RateLimitLayer::new(limiter))
//!     .layer(CircuitBreakerLayer::new(breaker))
//!     .layer(BulkheadLayer::new(Bulkhead::new(32)?))
//!     .service(service_fn(|req: u32| async move { Ok::<_, std::io::Error>(req * 2) }));
//! let out = futures::executor::block_on(svc.oneshot(21));
//! assert_eq!(out.unwrap(), 42);
//! # Ok::<(), resilience::Error>(())
//! ```

use std::fmt;
use std::future::{Future, poll_fn};
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use metered_clock::Clock;
use tower_layer::Layer;
use tower_service::Service;

use crate::breaker::{CircuitBreaker, Outcome, OwnedPermit, classify_result};
use crate::bulkhead::{Bulkhead, BulkheadPermit};
use crate::error::{CallError, Error};
use crate::limiter::{KeyedRateLimiter, RateLimiter};
use crate::retry::{Retry, RetryDecision};
use crate::sleep::Sleeper;

/// The response future of the fail-fast services: either the rejection, or the inner call
/// holding whatever guard (breaker permit, bulkhead slot) must live as long as it.
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture<F, G> {
    state: FutureState<F, G>,
}

enum FutureState<F, G> {
    Rejected(Option<Error>),
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
trait Guard<R, E> {
    fn complete(self, result: &Result<R, E>);
}

impl<F, G> ResponseFuture<F, G> {
    fn rejected(error: Error) -> Self {
        ResponseFuture {
            state: FutureState::Rejected(Some(error)),
        }
    }

    fn running(inner: F, guard: G) -> Self {
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

/// Maps a call's result to an [`Outcome`] for the breaker layer. Implemented by
/// [`OkIsSuccess`] and by every `Fn(&Result<R, E>) -> Outcome`.
pub trait Classify<R, E> {
    /// How the breaker should count `result`.
    fn classify(&self, result: &Result<R, E>) -> Outcome;
}

/// The default classifier: `Ok` is a success, `Err` a failure.
#[derive(Clone, Copy, Debug, Default)]
pub struct OkIsSuccess;

impl<R, E> Classify<R, E> for OkIsSuccess {
    fn classify(&self, result: &Result<R, E>) -> Outcome {
        classify_result(result)
    }
}

impl<R, E, F: Fn(&Result<R, E>) -> Outcome> Classify<R, E> for F {
    fn classify(&self, result: &Result<R, E>) -> Outcome {
        self(result)
    }
}

/// Applies a [`CircuitBreaker`] to a service. The classifier (by default [`OkIsSuccess`])
/// maps each inner result to an [`Outcome`].
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

/// No guard: the limiter's permit is spent when taken.
#[derive(Debug)]
pub struct NoGuard;

impl<R, E> Guard<R, E> for NoGuard {
    fn complete(self, _: &Result<R, E>) {}
}

/// Applies a shared [`RateLimiter`] to a service: a request with no permit fails at once
/// with [`Error::RateLimited`] (load shedding; map it to `429` + `Retry-After`).
#[derive(Debug)]
pub struct RateLimitLayer<C> {
    limiter: Arc<RateLimiter<C>>,
}

impl<C> Clone for RateLimitLayer<C> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            limiter: Arc::clone(&self.limiter),
        }
    }
}

impl<C: Clock> RateLimitLayer<C> {
    /// A layer taking one permit per request from `limiter`.
    #[must_use]
    pub fn new(limiter: Arc<RateLimiter<C>>) -> Self {
        RateLimitLayer { limiter }
    }
}

impl<S, C: Clock> Layer<S> for RateLimitLayer<C> {
    type Service = RateLimitService<S, C>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            limiter: Arc::clone(&self.limiter),
        }
    }
}

/// The service made by [`RateLimitLayer`].
#[derive(Debug)]
pub struct RateLimitService<S, C> {
    inner: S,
    limiter: Arc<RateLimiter<C>>,
}

impl<S: Clone, C> Clone for RateLimitService<S, C> {
    fn clone(&self) -> Self {
        RateLimitService {
            inner: self.inner.clone(),
            limiter: Arc::clone(&self.limiter),
        }
    }
}

impl<S, Req, C> Service<Req> for RateLimitService<S, C>
where
    S: Service<Req>,
    C: Clock,
{
    type Response = S::Response;
    type Error = CallError<S::Error>;
    type Future = ResponseFuture<S::Future, NoGuard>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(CallError::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.limiter.try_acquire(1) {
            Ok(()) => ResponseFuture::running(self.inner.call(req), NoGuard),
            Err(e) => ResponseFuture::rejected(e),
        }
    }
}

/// Applies a [`KeyedRateLimiter`] to a service, with `key` extracting each request's key
/// (a tenant id from a header, say).
pub struct KeyedRateLimitLayer<K, C, F> {
    limiter: Arc<KeyedRateLimiter<K, C>>,
    key: F,
}

impl<K, C, F: Clone> Clone for KeyedRateLimitLayer<K, C, F> {
    fn clone(&self) -> Self {
        KeyedRateLimitLayer {
            limiter: Arc::clone(&self.limiter),
            key: self.key.clone(),
        }
    }
}

impl<K, C, F> fmt::Debug for KeyedRateLimitLayer<K, C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimitLayer")
            .finish_non_exhaustive()
    }
}

impl<K, C, F> KeyedRateLimitLayer<K, C, F> {
    /// A layer taking one permit per request from the bucket of `key(&request)`.
    #[must_use]
    pub fn new(limiter: Arc<KeyedRateLimiter<K, C>>, key: F) -> Self {
        KeyedRateLimitLayer { limiter, key }
    }
}

impl<S, K, C, F: Clone> Layer<S> for KeyedRateLimitLayer<K, C, F> {
    type Service = KeyedRateLimitService<S, K, C, F>;
    fn layer(&self, inner: S) -> Self::Service {
        KeyedRateLimitService {
            inner,
            limiter: Arc::clone(&self.limiter),
            key: self.key.clone(),
        }
    }
}

/// The service made by [`KeyedRateLimitLayer`].
pub struct KeyedRateLimitService<S, K, C, F> {
    inner: S,
    limiter: Arc<KeyedRateLimiter<K, C>>,
    key: F,
}

impl<S: Clone, K, C, F: Clone> Clone for KeyedRateLimitService<S, K, C, F> {
    fn clone(&self) -> Self {
        KeyedRateLimitService {
            inner: self.inner.clone(),
            limiter: Arc::clone(&self.limiter),
            key: self.key.clone(),
        }
    }
}

impl<S, K, C, F> fmt::Debug for KeyedRateLimitService<S, K, C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimitService")
            .finish_non_exhaustive()
    }
}

impl<S, Req, K, C, F> Service<Req> for KeyedRateLimitService<S, K, C, F>
where
    S: Service<Req>,
    K: Hash + Eq + Clone,
    C: Clock,
    F: Fn(&Req) -> K,
{
    type Response = S::Response;
    type Error = CallError<S::Error>;
    type Future = ResponseFuture<S::Future, NoGuard>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(CallError::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let key = (self.key)(&req);
        match self.limiter.try_acquire(&key, 1) {
            Ok(()) => ResponseFuture::running(self.inner.call(req), NoGuard),
            Err(e) => ResponseFuture::rejected(e),
        }
    }
}

/// Applies a [`Bulkhead`] to a service: a request finding every slot taken fails at once
/// with [`Error::BulkheadFull`]; the slot is held until the response future completes or is
/// dropped.
#[derive(Clone, Debug)]
pub struct BulkheadLayer {
    bulkhead: Bulkhead,
}

impl BulkheadLayer {
    /// A layer over `bulkhead` (shared by every service the layer makes).
    #[must_use]
    pub fn new(bulkhead: Bulkhead) -> Self {
        BulkheadLayer { bulkhead }
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = BulkheadService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService {
            inner,
            bulkhead: self.bulkhead.clone(),
        }
    }
}

/// The service made by [`BulkheadLayer`].
#[derive(Clone, Debug)]
pub struct BulkheadService<S> {
    inner: S,
    bulkhead: Bulkhead,
}

impl<R, E> Guard<R, E> for BulkheadPermit {
    fn complete(self, _: &Result<R, E>) {}
}

impl<S, Req> Service<Req> for BulkheadService<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = CallError<S::Error>;
    type Future = ResponseFuture<S::Future, BulkheadPermit>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(CallError::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.bulkhead.try_acquire() {
            Ok(permit) => ResponseFuture::running(self.inner.call(req), permit),
            Err(e) => ResponseFuture::rejected(e),
        }
    }
}

/// Retries failed requests with a [`Retry`] driver. Requests must be `Clone`; the inner
/// service is cloned for each attempt (the usual tower pattern) and driven to readiness
/// before each call.
pub struct RetryLayer<Sl, C, K> {
    retry: Arc<Retry<Sl, C>>,
    classify: K,
}

impl<Sl, C, K: Clone> Clone for RetryLayer<Sl, C, K> {
    fn clone(&self) -> Self {
        RetryLayer {
            retry: Arc::clone(&self.retry),
            classify: self.classify.clone(),
        }
    }
}

impl<Sl, C, K> fmt::Debug for RetryLayer<Sl, C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer").finish_non_exhaustive()
    }
}

impl<Sl, C, K> RetryLayer<Sl, C, K> {
    /// A layer retrying with `retry` the errors `classify` says to retry.
    #[must_use]
    pub fn new(retry: Arc<Retry<Sl, C>>, classify: K) -> Self {
        RetryLayer { retry, classify }
    }
}

impl<S, Sl, C, K: Clone> Layer<S> for RetryLayer<Sl, C, K> {
    type Service = RetryService<S, Sl, C, K>;
    fn layer(&self, inner: S) -> Self::Service {
        RetryService {
            inner,
            retry: Arc::clone(&self.retry),
            classify: self.classify.clone(),
        }
    }
}

/// The service made by [`RetryLayer`].
pub struct RetryService<S, Sl, C, K> {
    inner: S,
    retry: Arc<Retry<Sl, C>>,
    classify: K,
}

impl<S: Clone, Sl, C, K: Clone> Clone for RetryService<S, Sl, C, K> {
    fn clone(&self) -> Self {
        RetryService {
            inner: self.inner.clone(),
            retry: Arc::clone(&self.retry),
            classify: self.classify.clone(),
        }
    }
}

impl<S, Sl, C, K> fmt::Debug for RetryService<S, Sl, C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryService").finish_non_exhaustive()
    }
}

/// A boxed, sendable future (the retry service's response future).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, Req, Sl, C, K> Service<Req> for RetryService<S, Sl, C, K>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Send,
    Req: Clone + Send + 'static,
    Sl: Sleeper + 'static,
    C: Clock + 'static,
    K: Fn(&S::Error) -> RetryDecision + Clone + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // Take the service that was driven ready and leave a clone in its place; every
        // attempt calls a clone of it, driven ready again.
        let fresh = self.inner.clone();
        let svc = std::mem::replace(&mut self.inner, fresh);
        let retry = Arc::clone(&self.retry);
        let classify = self.classify.clone();
        Box::pin(async move {
            retry
                .run(
                    move |_| {
                        let mut svc = svc.clone();
                        let req = req.clone();
                        async move {
                            poll_fn(|cx| svc.poll_ready(cx)).await?;
                            svc.call(req).await
                        }
                    },
                    classify,
                )
                .await
        })
    }
}
