//! The load shedder as a `tower` layer (feature `tower`).

use std::fmt;
use std::task::{Context, Poll};

use metered_clock::Clock;
use tower_layer::Layer;
use tower_service::Service;

use super::{LoadShedder, Priority};
use crate::adaptive::AdaptiveGuard;
use crate::breaker::OkIsSuccess;
use crate::error::CallError;
use crate::future::ResponseFuture;

/// Applies a [`LoadShedder`] to a service, with `priority` reading each request's
/// [`Priority`] (from a header, the route, the caller's plan). A shed request fails at once
/// with [`ResilienceError::LoadShed`](crate::ResilienceError) (map it to `503` with
/// `Retry-After`). `Ok` is a success and `Err` a drop for the limit.
pub struct LoadShedLayer<C: Clock, F> {
    shedder: LoadShedder<C>,
    priority: F,
}

impl<C: Clock, F: Clone> Clone for LoadShedLayer<C, F> {
    fn clone(&self) -> Self {
        LoadShedLayer {
            shedder: self.shedder.clone(),
            priority: self.priority.clone(),
        }
    }
}

impl<C: Clock, F> fmt::Debug for LoadShedLayer<C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadShedLayer")
            .field("shedder", &self.shedder)
            .finish_non_exhaustive()
    }
}

impl<C: Clock, F> LoadShedLayer<C, F> {
    /// A layer over `shedder`, reading priorities with `priority(&request)`.
    #[must_use]
    pub fn new(shedder: LoadShedder<C>, priority: F) -> Self {
        LoadShedLayer { shedder, priority }
    }
}

impl<S, C: Clock, F: Clone> Layer<S> for LoadShedLayer<C, F> {
    type Service = LoadShedService<S, C, F>;
    fn layer(&self, inner: S) -> Self::Service {
        LoadShedService {
            inner,
            shedder: self.shedder.clone(),
            priority: self.priority.clone(),
        }
    }
}

/// The service made by [`LoadShedLayer`].
pub struct LoadShedService<S, C: Clock, F> {
    inner: S,
    shedder: LoadShedder<C>,
    priority: F,
}

impl<S: Clone, C: Clock, F: Clone> Clone for LoadShedService<S, C, F> {
    fn clone(&self) -> Self {
        LoadShedService {
            inner: self.inner.clone(),
            shedder: self.shedder.clone(),
            priority: self.priority.clone(),
        }
    }
}

impl<S, C: Clock, F> fmt::Debug for LoadShedService<S, C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadShedService")
            .field("shedder", &self.shedder)
            .finish_non_exhaustive()
    }
}

impl<S, Req, C, F> Service<Req> for LoadShedService<S, C, F>
where
    S: Service<Req>,
    C: Clock,
    F: Fn(&Req) -> Priority,
{
    type Response = S::Response;
    type Error = CallError<S::Error>;
    type Future = ResponseFuture<S::Future, AdaptiveGuard<C, OkIsSuccess>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(CallError::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.shedder.try_acquire((self.priority)(&req)) {
            Ok(permit) => ResponseFuture::running(
                self.inner.call(req),
                AdaptiveGuard::new(permit, OkIsSuccess),
            ),
            Err(e) => ResponseFuture::rejected(e),
        }
    }
}
