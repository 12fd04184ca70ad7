//! The rate limiters as `tower` layers (feature `tower`).

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};

use metered_clock::Clock;
use tower_layer::Layer;
use tower_service::Service;

use super::{KeyedRateLimiter, RateLimiter};
use crate::error::CallError;
use crate::future::{NoGuard, ResponseFuture};

/// Applies a shared [`RateLimiter`] to a service: a request with no permit fails at once
/// with [`ResilienceError::RateLimited`](crate::ResilienceError::RateLimited) (load shedding; map it to `429` + `Retry-After`).
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
