//! The accept loop and each connection's limits: at most
//! [`connections_max`](crate::Config::connections_max) connections at once (further ones
//! wait in the listen backlog), a header-read timeout and an idle keep-alive timeout, and a
//! graceful shutdown that lets in-flight requests finish.
//!
//! A connection is in one of three phases:
//!
//! * **head**: the server waits for a request's headers. It has
//!   [`header_read_timeout`](crate::Config::header_read_timeout) to get them, counted from
//!   the acceptance for the first request and from the first byte for later ones;
//! * **busy**: a request is being answered (the per-request timeout applies);
//! * **idle**: the last answer is out and no byte of the next request has arrived; after
//!   [`idle_timeout`](crate::Config::idle_timeout) the connection is closed.
//!
//! So a client that opens connections and sends a partial request line holds each for at
//! most the header-read timeout, and never more than `connections_max` at once: the
//! process's file descriptors and `/health` stay available.

// A driver: it spawns a task per connection and sleeps for the timeouts.
#![allow(clippy::disallowed_methods)]

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// How long the accept loop pauses after a failed accept (e.g. out of file descriptors).
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// The connection limits (from [`Config`](crate::Config)).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnectionLimits {
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) connections_max: usize,
}

/// Serves `app` on `listener` until `stop` completes (or its sender is dropped), then stops
/// accepting, lets each connection finish its request in flight and returns once every
/// connection is closed. Dropping the future closes every connection at once.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    mut stop: oneshot::Receiver<()>,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.connections_max.max(1)));
    let (closing, closing_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        // A permit first: over the limit, connections wait in the kernel's backlog (and are
        // accepted as others close) instead of taking file descriptors.
        let permit = tokio::select! {
            _ = &mut stop => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        connections.spawn(connection(
            tcp,
            peer,
            app.clone(),
            limits,
            closing_rx.clone(),
            permit,
        ));
    }
    drop(listener);
    let _ = closing.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Head,
    Busy,
    Idle,
}

/// What a connection's reader and service report to its watchdog.
#[derive(Debug, Default)]
struct Activity {
    /// Requests being answered.
    in_flight: AtomicUsize,
    /// A byte arrived since the last answer.
    bytes: AtomicBool,
    notify: Notify,
}

impl Activity {
    fn phase(&self) -> Phase {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            Phase::Busy
        } else if self.bytes.load(Ordering::Acquire) {
            Phase::Head
        } else {
            Phase::Idle
        }
    }
}

/// Marks a request in flight until dropped (answered, or abandoned with its connection).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.notify.notify_one();
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.bytes.store(false, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.notify.notify_one();
    }
}

/// A TCP stream that reports the first byte read after each answer.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(())))
            && buf.filled().len() > before
            && !self.activity.bytes.swap(true, Ordering::AcqRel)
        {
            self.activity.notify.notify_one();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Serves one connection (HTTP/1.1 with keep-alive) under its phase's time limit; holds
/// `_permit` (one of the `connections_max`) until it closes. Each request carries the
/// peer's address as `ConnectInfo<SocketAddr>` (failed authentication is throttled by it).
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ConnectionLimits,
    mut closing: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::default());
    let io = TokioIo::new(Watched {
        inner: tcp,
        activity: Arc::clone(&activity),
    });
    let reporter = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let in_flight = InFlight::begin(Arc::clone(&reporter));
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await;
            drop(in_flight);
            response
        }
    });
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    tokio::pin!(conn);
    // The first request's headers are due within the header-read timeout of the accept.
    let mut phase = Phase::Head;
    let mut deadline = Box::pin(tokio::time::sleep(limits.header_read_timeout));
    let mut shutting_down = *closing.borrow();
    if shutting_down {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            changed = closing.changed(), if !shutting_down => {
                shutting_down = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
            () = activity.notify.notified() => {
                let now = activity.phase();
                if now != phase {
                    phase = now;
                    match phase {
                        Phase::Head => {
                            deadline = Box::pin(tokio::time::sleep(limits.header_read_timeout));
                        }
                        Phase::Idle => {
                            deadline = Box::pin(tokio::time::sleep(limits.idle_timeout));
                        }
                        Phase::Busy => {}
                    }
                }
            }
            () = &mut deadline, if phase != Phase::Busy => {
                tracing::debug!(?phase, "closing a connection past its time limit");
                // Dropping the connection closes the socket.
                return;
            }
        }
    }
}
