//! The load shedder as a `tower` layer (feature `tower`).

use std::fmt;
use std::task::{Context, Poll};

use metered_clock::Clock;
use tower_layer::Layer;
use tower_service::Service;

use super::{LoadShedder, Priority, ShedPermit};
use crate::breaker::{Classify, OkIsSuccess};
use crate::error::CallError;
use crate::future::{Guard, ResponseFuture};

/// Applies a [`LoadShedder`] to a service, with `priority` reading each request's
/// [`Priority`] (from a header, the route, the caller's plan). A shed request fails at once
/// with [`ResilienceError::LoadShed`](crate::ResilienceError) (map it to `503` with
/// `Retry-After`). `Ok` is a success and `Err` a drop for the limit.
pub struct LoadShedLayer<C: Clock + 'static, F> {
    shedder: LoadShedder<C>,
    priority: F,
}

impl<C: Clock + 'static, F: Clone> Clone for LoadShedLayer<C, F> {
    fn clone(&self) -> Self {
        LoadShedLayer {
            shedder: self.shedder.clone(),
            priority: self.priority.clone(),
        }
    }
}

impl<C: Clock + 'static, F> fmt::Debug for LoadShedLayer<C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadShedLayer")
            .field("shedder", &self.shedder)
            .finish_non_exhaustive()
    }
}

impl<C: Clock + 'static, F> LoadShedLayer<C, F> {
    /// A layer over `shedder`, reading priorities with `priority(&request)`.
    #[must_use]
    pub fn new(shedder: LoadShedder<C>, priority: F) -> Self {
        LoadShedLayer { shedder, priority }
    }
}

impl<S, C: Clock + 'static, F: Clone> Layer<S> for LoadShedLayer<C, F> {
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
pub struct LoadShedService<S, C: Clock + 'static, F> {
    inner: S,
    shedder: LoadShedder<C>,
    priority: F,
}

impl<S: Clone, C: Clock + 'static, F: Clone> Clone for LoadShedService<S, C, F> {
    fn clone(&self) -> Self {
        LoadShedService {
            inner: self.inner.clone(),
            shedder: self.shedder.clone(),
            priority: self.priority.clone(),
        }
    }
}

impl<S, C: Clock + 'static, F> fmt::Debug for LoadShedService<S, C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadShedService")
            .field("shedder", &self.shedder)
            .finish_non_exhaustive()
    }
}

impl<S, Req, C, F> Service<Req> for LoadShedService<S, C, F>
where
    S: Service<Req>,
    C: Clock + 'static,
    F: Fn(&Req) -> Priority,
{
    type Response = S::Response;
    type Error = CallError<S::Error>;
    type Future = ResponseFuture<S::Future, ShedGuard<C>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(CallError::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.shedder.try_acquire((self.priority)(&req)) {
            Ok(permit) => ResponseFuture::running(
                self.inner.call(req),
                ShedGuard {
                    permit: Some(permit),
                },
            ),
            Err(e) => ResponseFuture::rejected(e),
        }
    }
}

/// A shedder's permit held by a response future: `Ok` is a success, `Err` a drop;
/// dropped before completion (cancelled), it takes no sample.
pub struct ShedGuard<C: Clock + 'static> {
    permit: Option<ShedPermit<C>>,
}

impl<C: Clock + 'static> fmt::Debug for ShedGuard<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShedGuard").finish_non_exhaustive()
    }
}

impl<C: Clock + 'static> Unpin for ShedGuard<C> {}

impl<C: Clock + 'static> Drop for ShedGuard<C> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            permit.record_ignored();
        }
    }
}

impl<C: Clock + 'static, R, E> Guard<R, E> for ShedGuard<C> {
    fn complete(mut self, result: &Result<R, E>) {
        if let Some(permit) = self.permit.take() {
            permit.record(OkIsSuccess.classify(result));
        }
    }
}
