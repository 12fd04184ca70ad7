//! Shared helpers: start the service on a free loopback port with a manual clock, and talk
//! to it over real HTTP.
#![allow(dead_code, unreachable_pub)] // Each test file uses a different subset.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use credits_core::testing::{Bug, Faults, FaultyStore};
use credits_service::{Config, RunningService, Service};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use metered_clock::{Clock, ManualClock, SystemClock, Timestamp};
use serde_json::Value;

pub const ADMIN: &str = "Bearer admin-token-0123456789";
pub const ACME: &str = "Bearer acme-token-0123456789";
pub const GLOBEX: &str = "Bearer globex-token-0123456789";

/// A service on a free port, its manual clock and a switch that makes its store fail.
pub struct TestService {
    pub addr: SocketAddr,
    pub clock: ManualClock,
    /// The fault controller of the service's store (the shipped
    /// `credits_core::testing::FaultyStore` wraps it).
    pub faults: Arc<Faults>,
    running: Option<RunningService>,
    /// The database and the schema this service's tables live in (dropped at shutdown).
    database: Option<(String, String)>,
}

impl TestService {
    /// Makes every store call that reaches the store wait `delay` first (a slow database).
    pub fn slow_store(&self, delay: Duration) {
        self.faults
            .set_delay(delay, Arc::new(|d| Box::pin(tokio::time::sleep(d))));
    }

    /// Starts a service with the base settings plus `extra` variables: on PostgreSQL when
    /// `DATABASE_URL` is set (in a schema of its own), in memory otherwise.
    pub async fn start(extra: &[(&str, &str)]) -> TestService {
        Self::start_with(extra, database_url(), None).await
    }

    /// Starts a service on the in-memory backend whatever the environment says.
    pub async fn start_memory(extra: &[(&str, &str)]) -> TestService {
        Self::start_with(extra, None, None).await
    }

    /// Starts a service on PostgreSQL when `database_url` is given, in memory otherwise;
    /// with `bug`, its store carries that deliberate defect (the shipped
    /// `FaultyStore::with_bug`: only for tests of a checker).
    pub async fn start_on(database_url: Option<String>, bug: Option<Bug>) -> TestService {
        Self::start_with(&[], database_url, bug).await
    }

    async fn start_with(
        extra: &[(&str, &str)],
        database_url: Option<String>,
        bug: Option<Bug>,
    ) -> TestService {
        static SERVICES: AtomicU64 = AtomicU64::new(0);
        let schema = format!(
            "svc_test_{}_{}_{}",
            std::process::id(),
            SystemClock::new().now().as_unix_millis(),
            SERVICES.fetch_add(1, Ordering::Relaxed)
        );
        let mut vars = vec![
            ("CREDITS_LISTEN_ADDR", "127.0.0.1:0"),
            // The sweeper would otherwise call the store on its own schedule.
            ("CREDITS_SWEEP_INTERVAL_MS", "3600000"),
            ("CREDITS_LOG_FORMAT", "text"),
            ("CREDITS_ADMIN_TOKEN", "admin-token-0123456789"),
            (
                "CREDITS_AUDIT_HMAC_KEY",
                "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
            ),
            (
                "CREDITS_TENANT_TOKENS",
                "acme=acme-token-0123456789,globex=globex-token-0123456789",
            ),
        ];
        vars.extend_from_slice(extra);
        if let Some(url) = &database_url {
            vars.extend_from_slice(&[
                ("DATABASE_URL", url.as_str()),
                ("CREDITS_MIGRATE", "true"),
                ("CREDITS_DATABASE_SCHEMA", schema.as_str()),
                ("CREDITS_DATABASE_POOL_MAX", "8"),
            ]);
        }
        let config = Config::from_vars(vars).expect("test configuration");
        let clock = ManualClock::new(Timestamp::from_unix_millis(1_700_000_000_000));
        let faults = Arc::new(Faults::new());
        let store_faults = Arc::clone(&faults);
        let running = Service::builder(config)
            .clock(Arc::new(clock.clone()))
            .wrap_store(move |inner| {
                let store = FaultyStore::new(inner, store_faults);
                Arc::new(match bug {
                    Some(bug) => store.with_bug(bug),
                    None => store,
                })
            })
            .build()
            .await
            .expect("service builds")
            .start()
            .await
            .expect("service starts");
        TestService {
            addr: running.local_addr(),
            clock,
            faults,
            running: Some(running),
            database: database_url.map(|url| (url, schema)),
        }
    }

    pub async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("clean shutdown");
        }
        if let Some((url, schema)) = self.database.take() {
            use credits_postgres::tokio_postgres;
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect to drop the test schema");
            tokio::spawn(conn);
            client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .await
                .expect("drop the test schema");
        }
    }

    /// Sends one request on a fresh connection.
    pub async fn call(&self, r: Req<'_>) -> Resp {
        call(self.addr, r).await
    }

    /// Creates a tenant (as admin) and grants it `amount`.
    pub async fn tenant_with(&self, tenant: &str, amount: u64) {
        let r = self
            .call(Req::post("/v1/tenants", &format!(r#"{{"tenant":"{tenant}"}}"#)).auth(ADMIN))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let r = self
            .call(
                Req::post(
                    &format!("/v1/tenants/{tenant}/grants"),
                    &format!(r#"{{"amount":{amount}}}"#),
                )
                .auth(ADMIN)
                .key(&format!("seed-{tenant}")),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }

    /// The tenant's balance as (available, held, overdrawn).
    pub async fn balance(&self, tenant: &str) -> (u64, u64, u64) {
        let r = self
            .call(Req::get(&format!("/v1/tenants/{tenant}/balance")).auth(ADMIN))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let n = |k: &str| r.json[k].as_u64().unwrap();
        (n("available"), n("held"), n("overdrawn"))
    }

    /// Number of journal entries of a tenant.
    pub async fn journal_len(&self, tenant: &str) -> usize {
        let r = self
            .call(Req::get(&format!("/v1/tenants/{tenant}/history?limit=1000")).auth(ADMIN))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json["entries"].as_array().unwrap().len()
    }
}

/// `DATABASE_URL` when it is set and not empty.
pub fn database_url() -> Option<String> {
    std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty())
}

/// The backends a test runs on: memory, and PostgreSQL when `DATABASE_URL` is set. Panics
/// when `REQUIRE_DATABASE=1` but `DATABASE_URL` is not set (so that a CI step meant for
/// PostgreSQL cannot pass on memory alone).
pub fn backends() -> Vec<Option<String>> {
    let url = database_url();
    assert!(
        url.is_some() || std::env::var("REQUIRE_DATABASE").as_deref() != Ok("1"),
        "DATABASE_URL is not set but REQUIRE_DATABASE=1"
    );
    std::iter::once(None).chain(url.map(Some)).collect()
}

/// Sends one request to `addr` on a fresh connection.
pub async fn call(addr: SocketAddr, r: Req<'_>) -> Resp {
    call_checked(addr, r).await.expect("a response")
}

/// Sends one request to `addr` on a fresh connection; `None` if the connection failed
/// (the server is gone) before a whole response arrived.
pub async fn call_checked(addr: SocketAddr, r: Req<'_>) -> Option<Resp> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let mut builder = hyper::Request::builder()
        .method(r.method)
        .uri(r.path)
        .header("host", "localhost");
    if let Some(auth) = r.auth {
        builder = builder.header("authorization", auth);
    }
    if let Some(key) = r.key {
        builder = builder.header("idempotency-key", key);
    }
    if r.body.is_some() {
        builder = builder.header("content-type", r.content_type);
    }
    let body = Full::new(Bytes::from(r.body.unwrap_or_default()));
    let response = sender
        .send_request(builder.body(body).expect("request"))
        .await
        .ok()?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let bytes = response.into_body().collect().await.ok()?.to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Some(Resp {
        status,
        retry_after,
        json,
        text,
    })
}

/// A request.
#[derive(Clone, Debug)]
pub struct Req<'a> {
    pub method: &'a str,
    pub path: String,
    pub auth: Option<&'a str>,
    pub key: Option<String>,
    pub body: Option<String>,
    pub content_type: &'a str,
}

impl<'a> Req<'a> {
    pub fn get(path: &str) -> Self {
        Req {
            method: "GET",
            path: path.to_owned(),
            auth: None,
            key: None,
            body: None,
            content_type: "application/json",
        }
    }
    pub fn post(path: &str, body: &str) -> Self {
        Req {
            method: "POST",
            body: Some(body.to_owned()),
            ..Req::get(path)
        }
    }
    pub fn delete(path: &str) -> Self {
        Req {
            method: "DELETE",
            ..Req::get(path)
        }
    }
    pub fn auth(mut self, auth: &'a str) -> Self {
        self.auth = Some(auth);
        self
    }
    pub fn key(mut self, key: &str) -> Self {
        self.key = Some(key.to_owned());
        self
    }
    pub fn content_type(mut self, ct: &'a str) -> Self {
        self.content_type = ct;
        self
    }
}

/// A response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub json: Value,
    pub text: String,
}

impl Resp {
    /// The stable error code.
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
}
