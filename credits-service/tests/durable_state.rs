//! Experiments and rollouts in PostgreSQL, end to end over loopback: a service restarted on
//! its database keeps its experiments (spec and recorded results) and its rollouts (state
//! and trail); two services on one database see the same experiments and rollouts, drive
//! a rollout step once (pushed observations and the provider ticker alike) and hold a
//! tenant's experiment quota together. Needs `DATABASE_URL` (skipped without it, unless
//! `REQUIRE_DATABASE=1`). Every wait is bounded in count and time.

// Tests act as applications: they spawn tasks and sleep on tokio's timer.
#![allow(clippy::disallowed_methods, clippy::print_stderr)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::{ACME, ADMIN, GLOBEX, Req, Resp};
use credits_postgres::tokio_postgres::{self, NoTls};
use credits_service::{Config, RunningService, Service};
use metered_clock::{Clock, ManualClock, SystemClock, Timestamp};
use serde_json::{Value, json};

const T0: Timestamp = Timestamp::from_unix_millis(1_700_000_000_000);

/// The database, or `None` (after saying why) when none is configured.
fn database_url(test: &str) -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("REQUIRE_DATABASE").as_deref() != Ok("1"),
                "{test}: DATABASE_URL is not set but REQUIRE_DATABASE=1"
            );
            eprintln!("{test}: skipped (set DATABASE_URL to run it against PostgreSQL)");
            None
        }
    }
}

/// A schema of the test's own (dropped by [`drop_schema`]).
fn schema_name(test: &str) -> String {
    format!(
        "svc_state_{test}_{}_{}",
        std::process::id(),
        SystemClock::new().now().as_unix_millis()
    )
}

async fn drop_schema(url: &str, schema: &str) {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .expect("drop the test schema");
}

/// One service process (in this test process) on `schema`, with a manual clock.
struct Replica {
    addr: SocketAddr,
    clock: ManualClock,
    running: RunningService,
}

impl Replica {
    async fn start(url: &str, schema: &str, extra: &[(&str, &str)]) -> Replica {
        let mut vars = vec![
            ("CREDITS_LISTEN_ADDR", "127.0.0.1:0"),
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
            ("DATABASE_URL", url),
            ("CREDITS_MIGRATE", "true"),
            ("CREDITS_DATABASE_SCHEMA", schema),
            ("CREDITS_DATABASE_POOL_MAX", "8"),
        ];
        vars.extend_from_slice(extra);
        let config = Config::from_vars(vars).expect("test configuration");
        let clock = ManualClock::new(T0);
        let running = Service::builder(config)
            .clock(Arc::new(clock.clone()))
            .build()
            .await
            .expect("service builds")
            .start()
            .await
            .expect("service starts");
        Replica {
            addr: running.local_addr(),
            clock,
            running,
        }
    }

    async fn call(&self, r: Req<'_>) -> Resp {
        common::call(self.addr, r).await
    }

    async fn shutdown(self) {
        self.running.shutdown().await.expect("clean shutdown");
    }

    async fn evaluation(&self, tenant_token: &str, id: &str) -> Value {
        let r = self
            .call(
                Req::get(&format!("/v1/tenants/acme/experiments/{id}/evaluation"))
                    .auth(tenant_token),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json
    }

    async fn status(&self, id: &str) -> Value {
        let r = self
            .call(Req::get(&format!("/v1/rollouts/{id}")).auth(ADMIN))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json
    }

    /// The rollout's trail events once it holds `n` of them (at most 10 s).
    async fn trail_of(&self, id: &str, n: usize) -> Vec<Value> {
        let mut last = Value::Null;
        for _ in 0..200 {
            let r = self
                .call(Req::get(&format!("/v1/rollouts/{id}/trail")).auth(ADMIN))
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
            last = r.json;
            let events = last["events"].as_array().cloned().unwrap_or_default();
            if events.len() >= n {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{id}: fewer than {n} trail events within 10 s: {last}");
    }
}

/// The trail's events without their times (two services' clocks are their own).
fn kinds(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            let what = e["to"]
                .as_str()
                .or(e["verdict"].as_str())
                .unwrap_or("")
                .to_owned();
            (e["kind"].as_str().unwrap_or("").to_owned(), what)
        })
        .collect()
}

fn result(arm: u64, converted: bool) -> String {
    json!({"arm": arm, "converted": converted}).to_string()
}

fn observe(requests: u64, errors: u64) -> String {
    json!({"canary": {"requests": requests, "errors": errors}}).to_string()
}

#[tokio::test]
async fn a_restart_keeps_experiments_with_their_results_and_rollouts_with_their_trail() {
    let Some(url) = database_url("restart") else {
        return;
    };
    let schema = schema_name("restart");
    let a = Replica::start(&url, &schema, &[]).await;

    // An experiment with a spec of its own (weights, stopping rule, guardrail) and results.
    let create = json!({
        "id": "checkout",
        "weights": [3000, 7000],
        "stopping": {"mode": "bayesian", "prob_threshold": 0.9, "loss_threshold": 0.01},
        "min_trials_per_arm": 5,
        "error_rate_max": 0.2
    });
    let r = a
        .call(Req::post("/v1/tenants/acme/experiments", &create.to_string()).auth(ACME))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    for i in 0..12 {
        let body = result(i % 2, i % 3 == 0);
        let r = a
            .call(Req::post("/v1/tenants/acme/experiments/checkout/results", &body).auth(ACME))
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
    }
    let mut arms = Vec::new();
    for unit in ["u-1", "u-2", "u-3", "u-4", "u-5"] {
        let body = json!({"unit": unit}).to_string();
        let r = a
            .call(Req::post("/v1/tenants/acme/experiments/checkout/assign", &body).auth(ACME))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        arms.push(r.json["arm"].clone());
    }
    let before = a.evaluation(ACME, "checkout").await;

    // A pushed rollout that moved one step, with its trail.
    let rollout = json!({
        "id": "api-v2",
        "steps": [{"weight_percent": 10}, {"weight_percent": 50}, {"weight_percent": 100}],
        "check_interval_ms": 1000,
        "srm_check": false
    });
    let r = a
        .call(Req::post("/v1/rollouts", &rollout.to_string()).auth(ADMIN))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    a.clock.advance(Duration::from_secs(2));
    let r = a
        .call(Req::post("/v1/rollouts/api-v2/observations", &observe(1000, 1)).auth(ADMIN))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["weight_percent"], 50, "{}", r.text);
    let r = a
        .call(Req::post("/v1/rollouts/api-v2/pause", r#"{"note":"lunch"}"#).auth(ADMIN))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let status_before = a.status("api-v2").await;
    let trail_before = a.trail_of("api-v2", 4).await;
    a.shutdown().await;

    // A new process on the same database.
    let b = Replica::start(&url, &schema, &[]).await;
    assert_eq!(b.evaluation(ACME, "checkout").await, before);
    for (unit, arm) in ["u-1", "u-2", "u-3", "u-4", "u-5"].iter().zip(&arms) {
        let body = json!({"unit": unit}).to_string();
        let r = b
            .call(Req::post("/v1/tenants/acme/experiments/checkout/assign", &body).auth(ACME))
            .await;
        assert_eq!(&r.json["arm"], arm, "sticky across the restart");
    }
    // Recording goes on from the kept counts.
    let r = b
        .call(
            Req::post(
                "/v1/tenants/acme/experiments/checkout/results",
                &result(1, true),
            )
            .auth(ACME),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let after = b.evaluation(ACME, "checkout").await;
    assert_ne!(after, before);

    assert_eq!(b.status("api-v2").await, status_before);
    assert_eq!(status_before["phase"], "paused");
    let trail_after = b.trail_of("api-v2", trail_before.len()).await;
    assert_eq!(kinds(&trail_after), kinds(&trail_before));
    assert_eq!(trail_after, trail_before);
    // And the rollout goes on where it was.
    let r = b
        .call(Req::post("/v1/rollouts/api-v2/resume", "").auth(ADMIN))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(b.status("api-v2").await["phase"], "progressing");
    b.trail_of("api-v2", trail_before.len() + 1).await;
    b.shutdown().await;
    drop_schema(&url, &schema).await;
}

#[tokio::test]
async fn two_replicas_share_experiments_and_drive_a_pushed_step_once() {
    let Some(url) = database_url("two_pushed") else {
        return;
    };
    let schema = schema_name("two_pushed");
    let a = Replica::start(&url, &schema, &[]).await;
    let b = Replica::start(&url, &schema, &[]).await;

    // An experiment created on one is the other's too; results recorded on both count.
    let r = a
        .call(Req::post("/v1/tenants/acme/experiments", r#"{"id":"shared"}"#).auth(ACME))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = b
        .call(Req::post("/v1/tenants/acme/experiments", r#"{"id":"shared"}"#).auth(ACME))
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    let mut calls = Vec::new();
    for i in 0..20u64 {
        let addr = if i % 2 == 0 { a.addr } else { b.addr };
        calls.push(tokio::spawn(async move {
            common::call(
                addr,
                Req::post(
                    "/v1/tenants/acme/experiments/shared/results",
                    &result(i % 2, i < 10),
                )
                .auth(ACME),
            )
            .await
        }));
    }
    for c in calls {
        assert_eq!(c.await.unwrap().status, 202);
    }
    let ea = a.evaluation(ACME, "shared").await;
    assert_eq!(ea, b.evaluation(ACME, "shared").await);
    // Five conversions out of ten units on each arm: Beta(6, 6) posteriors, whose 95 %
    // interval starts at 0.2338 (an arm without its ten units would start at 0.025).
    let summary = &ea["evaluation"]["summary"];
    for side in ["a", "b"] {
        assert_eq!(summary[format!("mean_{side}")], 0.5, "{summary}");
        let lower = summary[format!("interval_{side}")]["lower"]
            .as_f64()
            .unwrap();
        assert!(
            (lower - 0.2338).abs() < 1e-3,
            "ten units on arm {side}: {summary}"
        );
    }

    // A rollout created on A, observed on both at once when its check is due: the step is
    // driven once (one check, one move to 50 %), the other observation finds it moved.
    let rollout = json!({
        "id": "shared-rollout",
        "steps": [
            {"weight_percent": 10}, {"weight_percent": 30},
            {"weight_percent": 60}, {"weight_percent": 100}
        ],
        "check_interval_ms": 60000,
        "srm_check": false
    });
    let r = a
        .call(Req::post("/v1/rollouts", &rollout.to_string()).auth(ADMIN))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(b.status("shared-rollout").await["weight_percent"], 10);
    for (round, weight) in [30, 60].into_iter().enumerate() {
        a.clock.advance(Duration::from_secs(61));
        b.clock.advance(Duration::from_secs(61));
        let (ra, rb) = tokio::join!(
            a.call(
                Req::post(
                    "/v1/rollouts/shared-rollout/observations",
                    &observe(1000, 1)
                )
                .auth(ADMIN)
            ),
            b.call(
                Req::post(
                    "/v1/rollouts/shared-rollout/observations",
                    &observe(1000, 1)
                )
                .auth(ADMIN)
            ),
        );
        assert_eq!(
            (ra.status, rb.status),
            (200, 200),
            "{} {}",
            ra.text,
            rb.text
        );
        let mut actions = [
            ra.json["action"].as_str().unwrap().to_owned(),
            rb.json["action"].as_str().unwrap().to_owned(),
        ];
        actions.sort();
        assert_eq!(
            actions,
            ["set_weight", "wait"],
            "round {round}: one replica decides"
        );
        assert_eq!(a.status("shared-rollout").await["weight_percent"], weight);
    }
    let status = b.status("shared-rollout").await;
    assert_eq!(status, a.status("shared-rollout").await);
    assert_eq!(
        (status["step"].clone(), status["checks"].clone()),
        (json!(2), json!(2)),
        "{status}"
    );
    // Started, then for each step a check and a move.
    let trail = a.trail_of("shared-rollout", 5).await;
    let checks = trail.iter().filter(|e| e["kind"] == "checked").count();
    assert_eq!((trail.len(), checks), (5, 2), "{trail:?}");
    assert_eq!(b.trail_of("shared-rollout", 5).await, trail);

    a.shutdown().await;
    b.shutdown().await;
    drop_schema(&url, &schema).await;
}

/// A Prometheus that reports a healthy canary: 1,000 requests and no errors for each arm.
async fn serve_healthy_prometheus() -> SocketAddr {
    let app = Router::new().route(
        "/api/v1/query",
        get(|axum::extract::RawQuery(q): axum::extract::RawQuery| async move {
            let value = if q.unwrap_or_default().contains("req_total") {
                "1000"
            } else {
                "0"
            };
            format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1700000000,"{value}"]}}]}}}}"#
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn a_result_retried_on_another_replica_or_after_a_restart_counts_once() {
    let Some(url) = database_url("result_keys") else {
        return;
    };
    let schema = schema_name("result_keys");
    let a = Replica::start(&url, &schema, &[]).await;
    let b = Replica::start(&url, &schema, &[]).await;
    let r = a
        .call(Req::post("/v1/tenants/acme/experiments", r#"{"id":"retried"}"#).auth(ACME))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let post = |key: &str| {
        Req::post(
            "/v1/tenants/acme/experiments/retried/results",
            &result(0, true),
        )
        .auth(ACME)
        .key(key)
    };
    // The same key on both replicas at once, then again on each; another key once.
    let (ra, rb) = tokio::join!(a.call(post("retry-1")), b.call(post("retry-1")));
    assert_eq!(
        (ra.status, rb.status),
        (202, 202),
        "{} {}",
        ra.text,
        rb.text
    );
    for r in [
        a.call(post("retry-1")).await,
        b.call(post("retry-1")).await,
        b.call(post("retry-2")).await,
    ] {
        assert_eq!(r.status, 202, "{}", r.text);
    }
    // Two units, both converted: Beta(3, 1), mean 0.75 (three would be 0.8).
    let mean = |e: &Value| e["evaluation"]["summary"]["mean_a"].as_f64().unwrap();
    let ea = a.evaluation(ACME, "retried").await;
    assert!((mean(&ea) - 0.75).abs() < 1e-9, "{ea}");
    assert_eq!(ea, b.evaluation(ACME, "retried").await);
    // After a restart the keys still hold.
    a.shutdown().await;
    let a = Replica::start(&url, &schema, &[]).await;
    let r = a.call(post("retry-2")).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let ea = a.evaluation(ACME, "retried").await;
    assert!((mean(&ea) - 0.75).abs() < 1e-9, "{ea}");

    a.shutdown().await;
    b.shutdown().await;
    drop_schema(&url, &schema).await;
}

#[tokio::test]
async fn two_replicas_tickers_judge_a_provider_driven_check_once() {
    let Some(url) = database_url("two_tickers") else {
        return;
    };
    let schema = schema_name("two_tickers");
    let prometheus = serve_healthy_prometheus().await;
    let a = Replica::start(&url, &schema, &[]).await;
    let b = Replica::start(&url, &schema, &[]).await;
    let rollout = json!({
        "id": "judged",
        "steps": [
            {"weight_percent": 20, "min_duration_ms": 1000, "min_sample": 100},
            {"weight_percent": 60, "min_duration_ms": 1000, "min_sample": 100},
            {"weight_percent": 100}
        ],
        "check_interval_ms": 1000,
        "srm_check": false,
        "provider": {
            "prometheus_url": format!("http://{prometheus}"),
            "timeout_ms": 2000,
            "canary": "canary",
            "baseline": "stable",
            "requests": r#"sum(increase(req_total{track="{{arm}}"}[{{window}}]))"#,
            "errors": r#"sum(increase(err_total{track="{{arm}}"}[{{window}}]))"#
        }
    });
    let r = b
        .call(Req::post("/v1/rollouts", &rollout.to_string()).auth(ADMIN))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(a.status("judged").await["metrics"], "prometheus");

    // Both replicas' tickers (every 250 ms) find each check due at once; each check is
    // judged once, by whichever saves first.
    let mut status = Value::Null;
    for _ in 0..3 {
        a.clock.advance(Duration::from_millis(1100));
        b.clock.advance(Duration::from_millis(1100));
        // Both tickers run at least twice.
        tokio::time::sleep(Duration::from_millis(700)).await;
        status = a.status("judged").await;
        if status["phase"] == "succeeded" {
            break;
        }
    }
    assert_eq!(status["phase"], "succeeded", "{status}");
    assert_eq!(status["checks"], 2, "one check per step: {status}");
    assert_eq!(b.status("judged").await, status);
    // Started, checked, to 60 %, checked, promoting, succeeded.
    let trail = b.trail_of("judged", 6).await;
    let checks = trail.iter().filter(|e| e["kind"] == "checked").count();
    assert_eq!(checks, 2, "{trail:?}");
    let succeeded = trail.iter().filter(|e| e["to"] == "succeeded").count();
    assert_eq!(succeeded, 1, "{trail:?}");

    a.shutdown().await;
    b.shutdown().await;
    drop_schema(&url, &schema).await;
}

#[tokio::test]
async fn a_tenants_experiment_quota_holds_across_two_replicas() {
    let Some(url) = database_url("quota") else {
        return;
    };
    let schema = schema_name("quota");
    let quota = [("CREDITS_EXPERIMENTS_PER_TENANT_MAX", "3")];
    let a = Replica::start(&url, &schema, &quota).await;
    let b = Replica::start(&url, &schema, &quota).await;

    let mut calls = Vec::new();
    for i in 0..8 {
        let addr = if i % 2 == 0 { a.addr } else { b.addr };
        calls.push(tokio::spawn(async move {
            let body = json!({"id": format!("e{i}")}).to_string();
            common::call(
                addr,
                Req::post("/v1/tenants/acme/experiments", &body).auth(ACME),
            )
            .await
        }));
    }
    let mut created = Vec::new();
    let mut refused = 0;
    for (i, c) in calls.into_iter().enumerate() {
        let r = c.await.unwrap();
        match r.status {
            201 => created.push(format!("e{i}")),
            507 => {
                assert_eq!(r.code(), "too_many_experiments");
                refused += 1;
            }
            other => panic!("{other}: {}", r.text),
        }
    }
    assert_eq!((created.len(), refused), (3, 5));
    // Another tenant has its own quota.
    let r = b
        .call(Req::post("/v1/tenants/globex/experiments", r#"{"id":"e0"}"#).auth(GLOBEX))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Deleting on one replica frees a place on the other.
    let r = b
        .call(Req::post("/v1/tenants/acme/experiments", r#"{"id":"late"}"#).auth(ACME))
        .await;
    assert_eq!(r.status, 507, "{}", r.text);
    let r = a
        .call(Req::delete(&format!("/v1/tenants/acme/experiments/{}", created[0])).auth(ACME))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = b
        .call(Req::post("/v1/tenants/acme/experiments", r#"{"id":"late"}"#).auth(ACME))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // The deleted one is gone on both.
    let path = format!("/v1/tenants/acme/experiments/{}/evaluation", created[0]);
    assert_eq!(b.call(Req::get(&path).auth(ACME)).await.status, 404);

    a.shutdown().await;
    b.shutdown().await;
    drop_schema(&url, &schema).await;
}

#[tokio::test]
async fn a_grant_key_reused_with_other_metadata_conflicts_on_another_replica() {
    let Some(url) = database_url("grant_metadata") else {
        return;
    };
    let schema = schema_name("grant_metadata");
    let a = Replica::start(&url, &schema, &[]).await;
    let b = Replica::start(&url, &schema, &[]).await;
    let r = a
        .call(Req::post("/v1/tenants", r#"{"tenant":"acme"}"#).auth(ADMIN))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let grant = |body: &'static str| {
        Req::post("/v1/tenants/acme/grants", body)
            .auth(ADMIN)
            .key("topup-1")
    };
    let first = a
        .call(grant(r#"{"amount":50,"metadata":{"ref":"pay-1"}}"#))
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    // The other replica never saw the key: the ledger's record refuses other metadata.
    for other in [
        r#"{"amount":50,"metadata":{"ref":"pay-2"}}"#,
        r#"{"amount":50,"metadata":{}}"#,
        r#"{"amount":50}"#,
    ] {
        let r = b.call(grant(other)).await;
        assert_eq!(
            (r.status, r.code()),
            (409, "idempotency_conflict"),
            "{other}: {}",
            r.text
        );
    }
    // The same request replays the first answer on either replica and applies nothing.
    for replica in [&b, &a] {
        let again = replica
            .call(grant(r#"{"amount":50,"metadata":{"ref":"pay-1"}}"#))
            .await;
        assert_eq!((again.status, &again.text), (200, &first.text));
    }
    let r = b
        .call(Req::get("/v1/tenants/acme/balance").auth(ACME))
        .await;
    assert_eq!(r.json["available"], 50, "{}", r.text);
    a.shutdown().await;
    b.shutdown().await;
    drop_schema(&url, &schema).await;
}
