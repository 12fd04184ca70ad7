//! The retry driver as a `tower` layer (feature `tower`).

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use metered_clock::Clock;
use tower_layer::Layer;
use tower_service::Service;

use super::{Retry, RetryDecision};
use crate::sleep::Sleeper;

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
