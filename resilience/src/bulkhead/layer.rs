//! The bulkhead as a `tower` layer (feature `tower`).

use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::{Bulkhead, BulkheadPermit};
use crate::error::CallError;
use crate::future::{Guard, ResponseFuture};

/// Applies a [`Bulkhead`] to a service: a request finding every slot taken fails at once
/// with [`ResilienceError::BulkheadFull`](crate::ResilienceError::BulkheadFull); the slot is held until the response future completes or is
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
