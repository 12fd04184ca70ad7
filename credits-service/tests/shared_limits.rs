//! Limits across replicas and failed-authentication throttling, over loopback: two service
//! instances on one Redis (`CREDITS_REDIS_URL`, the real one at 127.0.0.1:6379) admit one
//! tenant's limit between them; an unreachable Redis leaves the service serving under the
//! per-replica fallback; wrong tokens hammered from one address get 429 while a client with a
//! valid token from the same address is still served. Every loop is bounded in count and time.
//!
//! Without a Redis the Redis tests print `skipped`, unless `REDIS_REQUIRED=1` (CI).

// Tests act as applications: they spawn tasks and report figures.
#![allow(clippy::disallowed_methods, clippy::print_stderr)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{ACME, Req, TestService};
use metered_clock::{Clock, SystemClock};

fn redis_available(test: &str) -> bool {
    let up = std::net::TcpStream::connect_timeout(
        &"127.0.0.1:6379".parse().expect("address"),
        Duration::from_secs(1),
    )
    .is_ok();
    if !up {
        assert!(
            std::env::var("REDIS_REQUIRED").as_deref() != Ok("1"),
            "{test}: Redis at 127.0.0.1:6379 is unreachable and REDIS_REQUIRED=1"
        );
        eprintln!("{test}: skipped (no Redis at 127.0.0.1:6379)");
    }
    up
}

/// A limiter key prefix no other test (or run) uses.
fn prefix(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "svc-test:{}:{}:{}:{test}:",
        std::process::id(),
        SystemClock::new().now().as_unix_millis(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether a tenant request got past the limiter (the tenant may not exist: 404).
fn passed(status: u16) -> bool {
    matches!(status, 200 | 404)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_tenant_limit_through_redis() {
    if !redis_available("two_instances_share_one_tenant_limit_through_redis") {
        return;
    }
    let prefix = prefix("replicas");
    let vars = [
        ("CREDITS_REDIS_URL", "redis://127.0.0.1:6379"),
        ("CREDITS_REDIS_KEY_PREFIX", prefix.as_str()),
        ("CREDITS_RATE_LIMIT_PER_SECOND", "200"),
        ("CREDITS_RATE_LIMIT_BURST", "10"),
    ];
    let a = TestService::start(&vars).await;
    let b = TestService::start(&vars).await;
    let clock = SystemClock::new();
    let start = clock.monotonic();
    let run = Duration::from_millis(2_000);
    let mut tasks = Vec::new();
    for addr in [a.addr, b.addr, a.addr, b.addr, a.addr, b.addr] {
        tasks.push(tokio::spawn(async move {
            let clock = SystemClock::new();
            let (mut accepted, mut limited) = (0u64, 0u64);
            while clock.monotonic().saturating_duration_since(start) < run
                && accepted + limited < 20_000
            {
                let r = common::call(addr, Req::get("/v1/tenants/acme/balance").auth(ACME)).await;
                match r.status {
                    s if passed(s) => accepted += 1,
                    429 => {
                        assert_eq!(r.code(), "rate_limited", "{}", r.text);
                        assert!(r.retry_after.is_some(), "429 carries Retry-After");
                        limited += 1;
                    }
                    s => panic!("unexpected {s}: {}", r.text),
                }
            }
            (accepted, limited)
        }));
    }
    let (mut accepted, mut limited) = (0u64, 0u64);
    for t in tasks {
        let (x, y) = t.await.expect("task");
        accepted += x;
        limited += y;
    }
    let elapsed = clock.monotonic().saturating_duration_since(start);
    let expected = 10.0 + 200.0 * elapsed.as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let error = (accepted as f64 - expected).abs() / expected;
    eprintln!(
        "two instances: {accepted} accepted, {limited} limited in {elapsed:?}; \
         {expected:.0} expected ({error:.3})"
    );
    assert!(
        limited > accepted,
        "the load must exceed the limit to test it: {accepted} accepted, {limited} limited"
    );
    assert!(
        error <= 0.05,
        "{accepted} accepted across two instances, expected {expected:.0} (one limit, not two)"
    );
    let metrics = a.call(Req::get("/metrics")).await;
    assert!(
        metrics
            .text
            .contains("rate_limit_decisions_total{path=\"redis\""),
        "decisions are counted by path"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// A loopback TCP proxy to the real Redis that the test can cut (Redis stopped mid-run, as
/// far as the service can tell).
struct Proxy {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start() -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) closes every proxied connection.
            let mut links = tokio::task::JoinSet::new();
            for _ in 0..64 {
                let Ok((mut client, _)) = listener.accept().await else {
                    break;
                };
                links.spawn(async move {
                    if let Ok(mut redis) = tokio::net::TcpStream::connect("127.0.0.1:6379").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut redis).await;
                    }
                });
            }
            std::future::pending::<()>().await;
        });
        Proxy { addr, task }
    }

    /// Closes the listener and every connection through it.
    async fn cut(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

#[tokio::test]
async fn redis_stopped_mid_run_leaves_the_service_serving_under_the_fallback() {
    if !redis_available("redis_stopped_mid_run_leaves_the_service_serving_under_the_fallback") {
        return;
    }
    let proxy = Proxy::start().await;
    let url = format!("redis://{}", proxy.addr);
    let prefix = prefix("cut");
    let s = TestService::start(&[
        ("CREDITS_REDIS_URL", url.as_str()),
        ("CREDITS_REDIS_KEY_PREFIX", prefix.as_str()),
        ("CREDITS_RATE_LIMIT_PER_SECOND", "5"),
        ("CREDITS_RATE_LIMIT_BURST", "5"),
    ])
    .await;
    let burst = || async {
        let mut statuses = Vec::new();
        for _ in 0..8 {
            let r = s
                .call(Req::get("/v1/tenants/acme/balance").auth(ACME))
                .await;
            statuses.push(r.status);
        }
        statuses
    };
    // Redis decides: its bucket of 5 (on Redis's clock) empties.
    let before = burst().await;
    assert!(before[..5].iter().all(|s| passed(*s)), "{before:?}");
    assert!(before[5..].iter().all(|s| *s == 429), "{before:?}");
    proxy.cut().await;
    // Redis is gone: the replica's own bucket (on the service's frozen manual clock) decides,
    // a fresh 5 and then 429, and nothing fails.
    let after = burst().await;
    assert!(after[..5].iter().all(|s| passed(*s)), "{after:?}");
    assert!(after[5..].iter().all(|s| *s == 429), "{after:?}");
    s.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_redis_leaves_the_local_fallback_deciding() {
    let s = TestService::start(&[
        ("CREDITS_REDIS_URL", "redis://127.0.0.1:1"),
        ("CREDITS_RATE_LIMIT_PER_SECOND", "5"),
        ("CREDITS_RATE_LIMIT_BURST", "5"),
    ])
    .await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(
            s.call(Req::get("/v1/tenants/acme/balance").auth(ACME))
                .await
                .status,
        );
    }
    // The service's manual clock does not move: the burst of 5, then 429s.
    assert!(statuses[..5].iter().all(|s| passed(*s)), "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    let metrics = s.call(Req::get("/metrics")).await;
    assert!(
        metrics
            .text
            .contains("rate_limit_decisions_total{path=\"local_fallback\""),
        "fallback decisions are counted"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn wrong_tokens_are_throttled_while_a_valid_client_is_served() {
    let s = TestService::start(&[
        ("CREDITS_AUTH_FAILURES_MAX", "5"),
        ("CREDITS_AUTH_FAILURE_WINDOW_MS", "60000"),
    ])
    .await;
    let wrong = "Bearer wrong-token-0123456789";
    let mut statuses = Vec::new();
    for i in 0..20 {
        // A wrong token, a missing one, or one on an operator endpoint: all failures.
        let req = match i % 3 {
            0 => Req::get("/v1/tenants/acme/balance").auth(wrong),
            1 => Req::get("/v1/tenants/acme/balance"),
            _ => Req::post("/circuit-breaker/reset", "").auth(wrong),
        };
        let r = s.call(req).await;
        if r.status == 429 {
            assert_eq!(r.code(), "rate_limited", "{}", r.text);
            // One more failure per 60 s / 5 = 12 s.
            assert_eq!(r.retry_after, Some(12), "{}", r.text);
        }
        statuses.push(r.status);
        // The client with a valid token, from the same address, is never refused.
        let ok = s
            .call(Req::get("/v1/tenants/acme/balance").auth(ACME))
            .await;
        assert!(
            passed(ok.status),
            "valid client got {}: {}",
            ok.status,
            ok.text
        );
    }
    assert_eq!(statuses[..5], [401; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    // One permit's time later, one more failure is answered 401 again.
    s.clock.advance(Duration::from_secs(12));
    let r = s
        .call(Req::get("/v1/tenants/acme/balance").auth(wrong))
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
    let r = s
        .call(Req::get("/v1/tenants/acme/balance").auth(wrong))
        .await;
    assert_eq!(r.status, 429, "{}", r.text);
    s.shutdown().await;
}
