//! Hedging as a `tower` layer (feature `tower`).

use std::fmt;
use std::future::poll_fn;
use std::task::{Context, Poll};

use metered_clock::Clock;
use tower_layer::Layer;
use tower_service::Service;

use super::Hedge;
use crate::retry::BoxFuture;
use crate::sleep::Sleeper;

/// Applies a [`Hedge`] policy to a service: requests are cloned, a slow first attempt is
/// doubled by a second one on a clone of the service, the first answer (success or error)
/// wins and the other is dropped. Waits through `sleeper`.
#[derive(Clone)]
pub struct HedgeLayer<C, Z> {
    hedge: Hedge<C>,
    sleeper: Z,
}

impl<C, Z> fmt::Debug for HedgeLayer<C, Z> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeLayer")
            .field("hedge", &self.hedge)
            .finish_non_exhaustive()
    }
}

impl<C: Clock, Z: Sleeper> HedgeLayer<C, Z> {
    /// A layer over `hedge` (shared by every service the layer makes), sleeping on
    /// `sleeper`.
    #[must_use]
    pub fn new(hedge: Hedge<C>, sleeper: Z) -> Self {
        HedgeLayer { hedge, sleeper }
    }
}

impl<S, C: Clock, Z: Clone> Layer<S> for HedgeLayer<C, Z> {
    type Service = HedgeService<S, C, Z>;
    fn layer(&self, inner: S) -> Self::Service {
        HedgeService {
            inner,
            hedge: self.hedge.clone(),
            sleeper: self.sleeper.clone(),
        }
    }
}

/// The service made by [`HedgeLayer`].
#[derive(Clone)]
pub struct HedgeService<S, C, Z> {
    inner: S,
    hedge: Hedge<C>,
    sleeper: Z,
}

impl<S, C, Z> fmt::Debug for HedgeService<S, C, Z> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeService")
            .field("hedge", &self.hedge)
            .finish_non_exhaustive()
    }
}

impl<S, Req, C, Z> Service<Req> for HedgeService<S, C, Z>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Send,
    Req: Clone + Send + 'static,
    C: Clock + 'static,
    Z: Sleeper + Clone + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // The ready service takes the first attempt; a clone (made ready) the second.
        let ready = self.inner.clone();
        let first = std::mem::replace(&mut self.inner, ready);
        let spare = self.inner.clone();
        let hedge = self.hedge.clone();
        let sleeper = self.sleeper.clone();
        Box::pin(async move {
            let mut first = Some(first);
            hedge
                .call(&sleeper, move |attempt| {
                    let svc = if attempt == 0 { first.take() } else { None };
                    let mut svc = svc.unwrap_or_else(|| spare.clone());
                    let req = req.clone();
                    async move {
                        if attempt > 0 {
                            poll_fn(|cx| svc.poll_ready(cx)).await?;
                        }
                        svc.call(req).await
                    }
                })
                .await
        })
    }
}
