//! Rollouts judged on a metrics provider, over loopback HTTP against a fake Prometheus on
//! 127.0.0.1: the service queries it when a check is due and ticks the rollout (healthy
//! promoted, an unreachable backend rolled back at the source-error limit), with every
//! decision in the trail; bad provider settings are 400s; and the test-only fault injection
//! (`CREDITS_FAULT_*`). Every wait is bounded in count and time.

// Tests act as applications: they spawn tasks and sleep on tokio's timer.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use common::{ACME, ADMIN, Req, TestService};
use serde_json::{Value, json};

/// A fake Prometheus: every arm served 1,000 requests; the canary's errors are 0, or 400
/// while `canary_failing`.
#[derive(Default)]
struct Fake {
    canary_failing: AtomicBool,
    queries: AtomicU64,
}

async fn serve_fake() -> (Arc<Fake>, SocketAddr) {
    let fake = Arc::new(Fake::default());
    let app = Router::new()
        .route(
            "/api/v1/query",
            get(
                |State(f): State<Arc<Fake>>, Query(p): Query<HashMap<String, String>>| async move {
                    f.queries.fetch_add(1, Ordering::Relaxed);
                    let q = p.get("query").cloned().unwrap_or_default();
                    let canary = q.contains(r#""canary""#);
                    let value = if q.contains("req_total") {
                        "1000"
                    } else if canary && f.canary_failing.load(Ordering::Relaxed) {
                        "400"
                    } else {
                        "0"
                    };
                    format!(
                        r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1700000000,"{value}"]}}]}}}}"#
                    )
                },
            ),
        )
        .with_state(Arc::clone(&fake));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (fake, addr)
}

/// A rollout of two steps (50 %, then 100 %: the promotion), checked every second, judged
/// on the provider at `url` with `source_error_limit`.
fn body(id: &str, url: &str) -> Value {
    json!({
        "id": id,
        "steps": [
            {"weight_percent": 50, "min_duration_ms": 1000, "min_sample": 100},
            {"weight_percent": 100}
        ],
        "check_interval_ms": 1000,
        "srm_check": false,
        "source_error_limit": 2,
        "provider": {
            "prometheus_url": url,
            "timeout_ms": 500,
            "canary": "canary",
            "baseline": "stable",
            "requests": r#"sum(increase(req_total{track="{{arm}}"}[{{window}}]))"#,
            "errors": r#"sum(increase(err_total{track="{{arm}}"}[{{window}}]))"#
        }
    })
}

async fn create(s: &TestService, body: &Value) -> common::Resp {
    s.call(Req::post("/v1/rollouts", &body.to_string()).auth(ADMIN))
        .await
}

/// Polls the rollout's status until `done` holds (at most 10 s).
async fn status_until(s: &TestService, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        let r = s
            .call(Req::get(&format!("/v1/rollouts/{id}")).auth(ADMIN))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        last = r.json;
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{id}: condition not reached within 10 s: {last}");
}

/// Polls the rollout's trail until it holds an event for which `done` holds (at most 10 s).
async fn trail_until(s: &TestService, id: &str, done: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut last = Value::Null;
    for _ in 0..200 {
        let r = s
            .call(Req::get(&format!("/v1/rollouts/{id}/trail")).auth(ADMIN))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        last = r.json;
        let events = last["events"].as_array().cloned().unwrap_or_default();
        if events.iter().any(&done) {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{id}: trail event not found within 10 s: {last}");
}

#[tokio::test]
async fn the_service_queries_the_provider_when_a_check_is_due_and_records_its_decisions() {
    let (fake, prometheus) = serve_fake().await;
    let s = TestService::start(&[]).await;
    let r = create(&s, &body("api-v3", &format!("http://{prometheus}"))).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        (
            r.json["metrics"].as_str(),
            r.json["weight_percent"].as_u64()
        ),
        (Some("prometheus"), Some(50))
    );
    // Pushed observations are refused: the provider is the one source.
    let r = s
        .call(
            Req::post(
                "/v1/rollouts/api-v3/observations",
                r#"{"canary":{"requests":10,"errors":0}}"#,
            )
            .auth(ADMIN),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "provider_driven"), "{}", r.text);
    // Nothing is queried before the check is due.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(fake.queries.load(Ordering::Relaxed), 0);
    assert_eq!(
        status_until(&s, "api-v3", |_| true).await["phase"],
        "progressing"
    );

    // Due: 1,000 requests and no errors per arm → step healthy → promoted → succeeded.
    s.clock.advance(Duration::from_secs(1));
    let end = status_until(&s, "api-v3", |v| v["phase"] == "succeeded").await;
    assert_eq!(end["weight_percent"], 100, "{end}");
    // Requests and errors of the canary and the stable arm.
    assert_eq!(fake.queries.load(Ordering::Relaxed), 4);
    let trail = trail_until(&s, "api-v3", |e| e["to"] == "succeeded").await;
    let check = trail
        .iter()
        .find(|e| e["kind"] == "checked")
        .expect("a check");
    assert_eq!(check["verdict"], "healthy", "{check}");
    assert!(
        trail
            .iter()
            .any(|e| e["to"] == "promoting" && e["actor"] == "system"),
        "{trail:?}"
    );

    // A failing canary (40 % errors against a 5 % limit): three failed checks roll it back.
    fake.canary_failing.store(true, Ordering::Relaxed);
    let r = create(&s, &body("api-v4", &format!("http://{prometheus}"))).await;
    assert_eq!(r.status, 201, "{}", r.text);
    for i in 1..=3 {
        s.clock.advance(Duration::from_secs(1));
        let st = status_until(&s, "api-v4", |v| v["checks"] == i).await;
        let expected = if i < 3 { "progressing" } else { "rolled_back" };
        assert_eq!(st["phase"], expected, "check {i}: {st}");
    }
    let trail = trail_until(&s, "api-v4", |e| e["to"] == "rolled_back").await;
    assert_eq!(
        trail.iter().filter(|e| e["verdict"] == "unhealthy").count(),
        3,
        "{trail:?}"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_provider_is_no_data_and_rolls_back_at_the_source_error_limit() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let s = TestService::start(&[]).await;
    let r = create(&s, &body("api-v5", &format!("http://{closed}"))).await;
    assert_eq!(r.status, 201, "{}", r.text);
    s.clock.advance(Duration::from_secs(1));
    let trail = trail_until(&s, "api-v5", |e| e["kind"] == "source_error").await;
    let error = trail.iter().find(|e| e["kind"] == "source_error").unwrap();
    assert!(
        error["reason"]
            .as_str()
            .unwrap()
            .contains("metrics backend unavailable"),
        "{error}"
    );
    assert_eq!(
        status_until(&s, "api-v5", |_| true).await["phase"],
        "progressing",
        "one source error only holds"
    );
    s.clock.advance(Duration::from_secs(1));
    let end = status_until(&s, "api-v5", |v| v["phase"] == "rolled_back").await;
    assert_eq!(end["weight_percent"], 0, "{end}");
    let trail = trail_until(&s, "api-v5", |e| e["to"] == "rolled_back").await;
    let rollback = trail
        .iter()
        .find(|e| e["to"] == "rolling_back")
        .expect("the rollback decision");
    assert!(
        rollback["reason"]
            .as_str()
            .unwrap()
            .contains("2 consecutive metric-source errors"),
        "{rollback}"
    );
    s.shutdown().await;
}

/// A change to a valid request body.
type Change = Box<dyn Fn(&mut Value)>;

#[tokio::test]
async fn bad_provider_settings_are_refused_with_400() {
    let s = TestService::start(&[]).await;
    let url = "http://127.0.0.1:9";
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "https",
            Box::new(|b| b["provider"]["prometheus_url"] = json!("https://prometheus:9090")),
            "invalid_policy",
        ),
        (
            "no {{arm}}",
            Box::new(|b| b["provider"]["requests"] = json!("sum(rate(req_total[1m]))")),
            "invalid_policy",
        ),
        (
            "unquoted {{arm}}",
            Box::new(|b| b["provider"]["errors"] = json!("sum(err_total{track={{arm}}})")),
            "invalid_policy",
        ),
        (
            "same arms",
            Box::new(|b| b["provider"]["baseline"] = json!("canary")),
            "invalid_policy",
        ),
        (
            "empty label",
            Box::new(|b| b["provider"]["canary"] = json!("")),
            "invalid_policy",
        ),
        (
            "zero timeout",
            Box::new(|b| b["provider"]["timeout_ms"] = json!(0)),
            "invalid_request",
        ),
        (
            "latency step under 1 s",
            Box::new(|b| {
                b["provider"]["latency"] =
                    json!({"query": r#"q{track="{{arm}}"}"#, "step_ms": 500});
            }),
            "invalid_policy",
        ),
        (
            "unknown field",
            Box::new(|b| b["provider"]["password"] = json!("x")),
            "invalid_request",
        ),
        (
            "missing query",
            Box::new(|b| {
                b["provider"].as_object_mut().unwrap().remove("errors");
            }),
            "invalid_request",
        ),
        (
            "zero source-error limit",
            Box::new(|b| b["source_error_limit"] = json!(0)),
            "invalid_policy",
        ),
    ];
    for (i, (what, change, code)) in cases.iter().enumerate() {
        let mut b = body(&format!("bad-{i}"), url);
        change(&mut b);
        let r = create(&s, &b).await;
        assert_eq!((r.status, r.code()), (400, *code), "{what}: {}", r.text);
        let st = s
            .call(Req::get(&format!("/v1/rollouts/bad-{i}")).auth(ADMIN))
            .await;
        assert_eq!(st.status, 404, "{what}: nothing was created");
    }
    // A latency metric for the judge is accepted.
    let mut b = body("with-latency", url);
    b["provider"]["latency"] = json!({
        "query": r#"histogram_quantile(0.9, sum by (le) (rate(d_bucket{track="{{arm}}"}[5s])))"#,
        "dry_run": true
    });
    let r = create(&s, &b).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = s
        .call(Req::get("/v1/rollouts/nope/trail").auth(ADMIN))
        .await;
    assert_eq!((r.status, r.code()), (404, "unknown_rollout"));
    let r = s.call(Req::get("/v1/rollouts/with-latency/trail")).await;
    assert_eq!(r.status, 401);
    s.shutdown().await;
}

#[tokio::test]
async fn fault_injection_fails_or_delays_api_requests_but_never_operations() {
    let s = TestService::start(&[("CREDITS_FAULT_ERROR_PERCENT", "100")]).await;
    for _ in 0..5 {
        let r = s
            .call(Req::get("/v1/tenants/acme/balance").auth(ACME))
            .await;
        assert_eq!((r.status, r.code()), (500, "fault_injected"), "{}", r.text);
    }
    assert_eq!(s.call(Req::get("/health")).await.status, 200);
    let metrics = s.call(Req::get("/metrics")).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .text
            .lines()
            .any(|l| l.starts_with("http_requests_total")
                && l.contains(r#"route="/v1/tenants/{tenant}/balance""#)
                && l.contains(r#"status="500""#)),
        "injected answers are counted"
    );
    s.shutdown().await;

    let s = TestService::start(&[("CREDITS_FAULT_LATENCY_MS", "300")]).await;
    let started = Instant::now();
    let r = s
        .call(Req::get("/v1/tenants/acme/balance").auth(ACME))
        .await;
    assert_eq!(r.code(), "unknown_tenant", "{}", r.text);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(s.call(Req::get("/health")).await.status, 200);
    assert!(started.elapsed() < Duration::from_millis(300));
    s.shutdown().await;

    // Off by default.
    let s = TestService::start(&[]).await;
    for _ in 0..20 {
        let r = s
            .call(Req::get("/v1/tenants/acme/balance").auth(ACME))
            .await;
        assert_eq!(r.code(), "unknown_tenant", "{}", r.text);
    }
    s.shutdown().await;
}
