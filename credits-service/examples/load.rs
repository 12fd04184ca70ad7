//! A bounded load run of the consume endpoint over loopback HTTP/1.1 keep-alive connections.
//!
//! ```sh
//! cargo run --release -p credits-service --example load -- [requests] [connections] [max_secs]
//! ```
//!
//! Defaults: 200,000 requests over 32 connections, stopping after 30 s at most. The service
//! runs in the same process on the in-memory backend (port chosen by the OS, loopback only);
//! with `LOAD_URL=http://127.0.0.1:PORT` (loopback addresses only) and `LOAD_TOKEN` /
//! `LOAD_TENANT` it drives a running service instead; with `LOAD_DATABASE_URL` the in-process
//! service uses PostgreSQL (in a new schema `load_<ms>`); with `LOAD_BASELINE=1` it drives a
//! bare axum route instead (the HTTP floor the service is compared with). Prints requests/s and latency
//! percentiles measured by the client, end to end.
#![allow(clippy::print_stdout)]
// A command-line tool: its report is its output.

// An example is an application: it spawns the server and its workers.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use credits_service::{Config, Secret, Service};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use metered_clock::{Clock, SystemClock};

const ADMIN: &str = "load-admin-0123456789";
const TENANTS: usize = 16;

fn token(i: usize) -> String {
    format!("load-tenant-{i:02}-0123456789")
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Sender, Box<dyn std::error::Error + Send + Sync>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn send(
    sender: &mut Sender,
    method: &str,
    path: &str,
    token: &str,
    key: Option<&str>,
    body: String,
) -> Result<u16, Box<dyn std::error::Error + Send + Sync>> {
    sender.ready().await?;
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json");
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let response = sender
        .send_request(req.body(Full::new(Bytes::from(body)))?)
        .await?;
    let status = response.status().as_u16();
    response.into_body().collect().await?;
    Ok(status)
}

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let requests = arg(1, 200_000);
    let connections = arg(2, 32).clamp(1, 1_024);
    let max_secs = arg(3, 30).clamp(1, 300);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(requests, connections, Duration::from_secs(max_secs)))
}

async fn run(
    requests: u64,
    connections: u64,
    max: Duration,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let external = std::env::var("LOAD_URL").ok();
    if std::env::var("LOAD_BASELINE").is_ok() {
        return baseline(requests, connections, max).await;
    }
    let (addr, running, tenants) = match &external {
        Some(url) => {
            let addr: SocketAddr = url
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .parse()?;
            if !addr.ip().is_loopback() {
                return Err("LOAD_URL must be a loopback address".into());
            }
            let tenant = std::env::var("LOAD_TENANT")?;
            let token = std::env::var("LOAD_TOKEN")?;
            (addr, None, vec![(tenant, token)])
        }
        None => {
            let mut vars = vec![
                ("CREDITS_LISTEN_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
                ("CREDITS_ADMIN_TOKEN".to_owned(), ADMIN.to_owned()),
                (
                    "CREDITS_RATE_LIMIT_PER_SECOND".to_owned(),
                    "10000000".to_owned(),
                ),
            ];
            let pairs: Vec<String> = (0..TENANTS).map(|i| format!("t{i}={}", token(i))).collect();
            vars.push(("CREDITS_TENANT_TOKENS".to_owned(), pairs.join(",")));
            if let Ok(url) = std::env::var("LOAD_DATABASE_URL") {
                // A fresh schema per run, so tenants start empty.
                let schema = format!("load_{}", SystemClock::new().now().as_unix_millis());
                vars.push(("DATABASE_URL".to_owned(), url));
                vars.push(("CREDITS_DATABASE_SCHEMA".to_owned(), schema));
                vars.push(("CREDITS_MIGRATE".to_owned(), "true".to_owned()));
            }
            let mut config = Config::from_vars(vars)?;
            config.admin_token = Some(Secret::new(ADMIN));
            let running = Service::builder(config).build().await?.start().await?;
            let addr = running.local_addr();
            let mut admin = connect(addr).await?;
            for i in 0..TENANTS {
                let t = format!("t{i}");
                send(
                    &mut admin,
                    "POST",
                    "/v1/tenants",
                    ADMIN,
                    None,
                    format!(r#"{{"tenant":"{t}"}}"#),
                )
                .await?;
                let grant = format!("/v1/tenants/{t}/grants");
                let status = send(
                    &mut admin,
                    "POST",
                    &grant,
                    ADMIN,
                    Some("seed"),
                    r#"{"amount":1000000000000}"#.to_owned(),
                )
                .await?;
                if status != 200 {
                    return Err(format!("seeding tenant {t} failed: {status}").into());
                }
            }
            let tenants = (0..TENANTS).map(|i| (format!("t{i}"), token(i))).collect();
            (addr, Some(running), tenants)
        }
    };

    drive(addr, &tenants, requests, connections, max).await?;
    if let Some(running) = running {
        // Did the audit log keep up? A change the log could not take was refused (503).
        let metrics = credits_service::metrics_handle().render();
        let refused = metrics
            .lines()
            .find(|l| l.starts_with("credits_audit_refusals_total"))
            .unwrap_or("credits_audit_refusals_total 0");
        let written = metrics
            .lines()
            .find(|l| l.starts_with("audit_chain_entries_written_total"))
            .unwrap_or("audit_chain_entries_written_total 0");
        println!("audit: {written}, {refused}");
        running.shutdown().await?;
    }
    Ok(())
}

/// The HTTP floor: a bare axum route that parses the same JSON body and answers a JSON
/// object of the same shape, with no auth, limiter, breaker, ledger or metrics.
async fn baseline(
    requests: u64,
    connections: u64,
    max: Duration,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    #[derive(serde::Deserialize)]
    struct Consume {
        amount: u64,
    }
    let app = axum::Router::new().route(
        "/v1/tenants/{tenant}/consume",
        axum::routing::post(
            |axum::extract::Path(_t): axum::extract::Path<String>,
             axum::Json(c): axum::Json<Consume>| async move {
                axum::Json(serde_json::json!({
                    "entry": c.amount, "at_ms": 0,
                    "balance": {"available": 0, "held": 0, "overdrawn": 0},
                    "effect": {"type": "consumed"}
                }))
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        axum::serve(
            axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            }),
            app,
        )
        .await
    });
    let tenants: Vec<(String, String)> =
        (0..TENANTS).map(|i| (format!("t{i}"), token(i))).collect();
    drive(addr, &tenants, requests, connections, max).await?;
    server.abort();
    Ok(())
}

async fn drive(
    addr: SocketAddr,
    tenants: &[(String, String)],
    requests: u64,
    connections: u64,
    max: Duration,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let clock = SystemClock::new();
    let next = Arc::new(AtomicU64::new(0));
    let deadline = clock.monotonic().saturating_add(max);
    let started = clock.monotonic();
    let mut workers = Vec::new();
    for w in 0..connections {
        let next = Arc::clone(&next);
        let (tenant, token) = tenants[usize::try_from(w).unwrap_or(0) % tenants.len()].clone();
        workers.push(tokio::spawn(async move {
            let clock = SystemClock::new();
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut errors = 0u64;
            let mut sender = connect(addr).await?;
            let path = format!("/v1/tenants/{tenant}/consume");
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= requests || clock.monotonic() >= deadline {
                    break;
                }
                let key = format!("load-{w}-{n}");
                let t0 = clock.monotonic();
                let status = send(
                    &mut sender,
                    "POST",
                    &path,
                    &token,
                    Some(&key),
                    r#"{"amount":1}"#.to_owned(),
                )
                .await?;
                let us = clock.monotonic().saturating_duration_since(t0).as_micros();
                hist.record(u64::try_from(us).unwrap_or(u64::MAX).max(1))?;
                if status != 200 {
                    errors += 1;
                }
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((hist, errors))
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    for w in workers {
        let (h, e) = w.await??;
        hist.add(h)?;
        errors += e;
    }
    let elapsed = clock.monotonic().saturating_duration_since(started);
    let done = hist.len();
    println!(
        "consume: {done} requests over {connections} connections in {:.2} s: {:.0} requests/s, \
         p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms, non-200: {errors}",
        elapsed.as_secs_f64(),
        done as f64 / elapsed.as_secs_f64(),
        hist.value_at_quantile(0.50) as f64 / 1_000.0,
        hist.value_at_quantile(0.90) as f64 / 1_000.0,
        hist.value_at_quantile(0.99) as f64 / 1_000.0,
        hist.value_at_quantile(0.999) as f64 / 1_000.0,
        hist.max() as f64 / 1_000.0,
    );
    Ok(())
}
