//! Connection hardening over loopback: slow or idle clients cannot hold connections beyond
//! the header-read and idle timeouts, nor more than the connection cap, so `/health` keeps
//! answering.

// Tests act as applications: they spawn tasks, sleep and time on tokio's timer.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::{Req, TestService};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// Waits (at most `limit`) for the server to close `tcp`; returns the bytes it sent first,
/// or `None` if it was still open at the limit.
async fn closed_within(tcp: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let read_all = async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    timeout(limit, read_all).await.ok().map(|()| got)
}

#[tokio::test]
async fn stalled_partial_headers_cannot_starve_health() {
    const STALLED: usize = 50;
    const CAP: usize = 8;
    const HEADER_MS: u64 = 300;
    let s = TestService::start(&[
        ("CREDITS_CONNECTIONS_MAX", "8"),
        ("CREDITS_HEADER_READ_TIMEOUT_MS", "300"),
        ("CREDITS_IDLE_TIMEOUT_MS", "300"),
    ])
    .await;
    // 50 clients each send part of a request line and stall.
    let opened = Instant::now();
    let mut stalled = Vec::with_capacity(STALLED);
    for _ in 0..STALLED {
        let mut tcp = timeout(Duration::from_secs(2), TcpStream::connect(s.addr))
            .await
            .expect("connect in time")
            .expect("connect");
        tcp.write_all(b"GET /health HTTP/1.1\r\nHo")
            .await
            .expect("send");
        stalled.push(tcp);
    }
    // /health still answers: at worst after every stalled connection ahead of it has had
    // its header-read time, CAP at a time.
    let rounds = STALLED.div_ceil(CAP) as u64;
    let bound = Duration::from_millis(rounds * HEADER_MS) + Duration::from_secs(3);
    let r = timeout(bound, s.call(Req::get("/health")))
        .await
        .expect("/health answers within the bound");
    assert_eq!(r.status, 200, "{}", r.text);
    // Every stalled connection is closed by the server, without an answer to the partial
    // request, within its header-read time (and its wait for a free slot).
    let deadline = opened + bound + Duration::from_secs(2);
    for (i, tcp) in stalled.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        let sent = closed_within(tcp, left)
            .await
            .unwrap_or_else(|| panic!("stalled connection {i} still open"));
        assert!(
            !String::from_utf8_lossy(&sent).contains(" 200 "),
            "connection {i} was answered"
        );
    }
    // The service is unharmed.
    let r = timeout(Duration::from_secs(5), s.call(Req::get("/health")))
        .await
        .expect("/health answers");
    assert_eq!(r.status, 200);
    s.shutdown().await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_read_timeout() {
    let s = TestService::start(&[
        ("CREDITS_HEADER_READ_TIMEOUT_MS", "200"),
        ("CREDITS_IDLE_TIMEOUT_MS", "60000"),
    ])
    .await;
    let started = Instant::now();
    let mut tcp = TcpStream::connect(s.addr).await.expect("connect");
    closed_within(&mut tcp, Duration::from_secs(5))
        .await
        .expect("closed by the server");
    assert!(started.elapsed() >= Duration::from_millis(200));
    s.shutdown().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_served_then_closed_after_the_idle_timeout() {
    let s = TestService::start(&[
        ("CREDITS_HEADER_READ_TIMEOUT_MS", "5000"),
        ("CREDITS_IDLE_TIMEOUT_MS", "300"),
    ])
    .await;
    let mut tcp = TcpStream::connect(s.addr).await.expect("connect");
    let mut buf = [0u8; 4096];
    // Two requests on one connection: keep-alive works.
    for _ in 0..2 {
        tcp.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .expect("send");
        let mut got = Vec::new();
        timeout(Duration::from_secs(5), async {
            while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
                let n = tcp.read(&mut buf).await.expect("read");
                assert!(n > 0, "closed before answering");
                got.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .expect("an answer");
        assert!(String::from_utf8_lossy(&got).contains("HTTP/1.1 200"));
        // Let any body bytes arrive before the next request.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Then idle: closed after the idle timeout, long before the header-read timeout.
    let idle_from = Instant::now();
    closed_within(&mut tcp, Duration::from_secs(4))
        .await
        .expect("the idle connection is closed");
    let idle = idle_from.elapsed();
    assert!(idle >= Duration::from_millis(200), "closed after {idle:?}");
    s.shutdown().await;
}
