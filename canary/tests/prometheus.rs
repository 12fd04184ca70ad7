//! The Prometheus provider against a fake Prometheus on 127.0.0.1 (an axum server started by
//! each test): good answers, empty results, NaN and ±∞, Prometheus's error JSON, 500s, slow
//! answers (bounded: 3 s at most, the client gives up after 200 ms), retries and the breaker,
//! and a rollout driven end to end through `ProviderSource`.
#![cfg(feature = "prometheus")]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use canary::*;
use metered_clock::{Clock, SystemClock, Timestamp};
use parking_lot::Mutex;
use resilience::{Backoff, BreakerConfig, OpenWait};

/// The fake: answers by keywords in the query; records every request.
#[derive(Default)]
struct Fake {
    seen: Mutex<Vec<(String, HashMap<String, String>)>>,
    flaky: AtomicU32,
}

impl Fake {
    fn calls(&self) -> usize {
        self.seen.lock().len()
    }
}

fn vector(values: &[&str]) -> String {
    let series: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!(r#"{{"metric":{{"pod":"p{i}"}},"value":[1700000300.0,"{v}"]}}"#))
        .collect();
    format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
        series.join(",")
    )
}

fn matrix(series: &[Vec<f64>]) -> String {
    let series: Vec<String> = series
        .iter()
        .enumerate()
        .map(|(i, values)| {
            let points: Vec<String> = values
                .iter()
                .enumerate()
                .map(|(j, v)| format!(r#"[{}.5,"{v}"]"#, 1_700_000_000 + j))
                .collect();
            format!(
                r#"{{"metric":{{"pod":"p{i}"}},"values":[{}]}}"#,
                points.join(",")
            )
        })
        .collect();
    format!(
        r#"{{"status":"success","data":{{"resultType":"matrix","result":[{}]}}}}"#,
        series.join(",")
    )
}

fn error_json(kind: &str, message: &str) -> String {
    format!(r#"{{"status":"error","errorType":"{kind}","error":"{message}"}}"#)
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [("content-type", "application/json")], body).into_response()
}

/// Latency samples of an arm: `n` values around 100 with spread `sd` (deterministic).
fn latencies(n: usize, sd: f64) -> Vec<f64> {
    (0..n)
        .map(|i| 100.0 + sd * ((i % 21) as f64 - 10.0) / 6.0)
        .collect()
}

async fn answer(fake: &Fake, path: &str, params: HashMap<String, String>) -> Response {
    let q = params.get("query").cloned().unwrap_or_default();
    fake.seen.lock().push((path.to_owned(), params));
    let arm_bad = q.contains(r#""v2-bad""#);
    let canary = q.contains(r#""v2"#);
    if q.contains("slow") {
        // Bounded: the client's timeout (200 ms) ends the connection long before.
        #[allow(clippy::disallowed_methods)] // a test server, simulating a slow backend
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if q.contains("flaky") && fake.flaky.fetch_add(1, Ordering::SeqCst) == 0 {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            error_json("unavailable", "starting up"),
        );
    }
    let ok = |body| json(StatusCode::OK, body);
    if q.contains("requests") {
        ok(vector(&[if canary { "1000" } else { "19000" }]))
    } else if q.contains("errors") {
        ok(vector(&[if arm_bad {
            "100"
        } else if canary {
            "10"
        } else {
            "190"
        }]))
    } else if q.contains("latency") {
        let sd = if arm_bad { 20.0 } else { 10.0 };
        ok(matrix(&[latencies(40, sd), latencies(40, sd)]))
    } else if q.contains("empty") {
        ok(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#.into())
    } else if q.contains("nomatrix") {
        ok(r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#.into())
    } else if q.contains("rangenan") {
        ok(r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"],[2,"NaN"]]}]}}"#.into())
    } else if q.contains("nan") {
        ok(vector(&["NaN"]))
    } else if q.contains("inf") {
        ok(vector(&["+Inf"]))
    } else if q.contains("multi") {
        ok(vector(&["1", "2"]))
    } else if q.contains("scalar") {
        ok(
            r#"{"status":"success","data":{"resultType":"scalar","result":[1700000300,"42.5"]}}"#
                .into(),
        )
    } else if q.contains("bad") {
        json(
            StatusCode::BAD_REQUEST,
            error_json("bad_data", "1:9: parse error: unexpected <by>"),
        )
    } else if q.contains("exec") {
        json(
            StatusCode::UNPROCESSABLE_ENTITY,
            error_json("execution", "query processing would load too many samples"),
        )
    } else if q.contains("boom") {
        (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
    } else if q.contains("garbage") {
        ok("this is not json".into())
    } else if q.contains("huge") {
        ok(vector(&[&"1".repeat(64 * 1024)]))
    } else if q.contains("good") || q.contains("flaky") || q.contains("slow") {
        ok(vector(&["7"]))
    } else {
        json(
            StatusCode::BAD_REQUEST,
            error_json("bad_data", "unknown test query"),
        )
    }
}

/// Starts the fake on 127.0.0.1 (an ephemeral port); it lives as long as the test's runtime.
async fn serve() -> (Arc<Fake>, SocketAddr) {
    let fake = Arc::new(Fake::default());
    let app = Router::new()
        .route(
            "/api/v1/query",
            get(
                |State(f): State<Arc<Fake>>, Query(p): Query<HashMap<String, String>>| async move {
                    answer(&f, "query", p).await
                },
            ),
        )
        .route(
            "/api/v1/query_range",
            get(
                |State(f): State<Arc<Fake>>, Query(p): Query<HashMap<String, String>>| async move {
                    answer(&f, "query_range", p).await
                },
            ),
        )
        .with_state(Arc::clone(&fake));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    assert!(addr.ip().is_loopback());
    #[allow(clippy::disallowed_methods)] // the test's server task
    tokio::spawn(async move { axum::serve(listener, app).await });
    (fake, addr)
}

fn provider(addr: SocketAddr) -> PrometheusProvider {
    PrometheusProvider::builder(format!("http://{addr}"))
        .timeout(Duration::from_millis(200))
        .body_max(16 * 1024)
        .backoff(
            Backoff::exponential(Duration::from_millis(5))
                .cap(Duration::from_millis(20))
                .max_attempts(3)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

fn window() -> Window {
    Window {
        start: Timestamp::from_unix_millis(1_700_000_000_000),
        end: Timestamp::from_unix_millis(1_700_000_300_250),
    }
}

fn aggregate(name: &str) -> MetricQuery {
    MetricQuery::aggregate(
        name,
        &format!(r#"sum({name}{{version="{{{{arm}}}}"}}[{{{{window}}}}])"#),
    )
    .unwrap()
}

fn samples(name: &str) -> MetricQuery {
    MetricQuery::samples(
        name,
        &format!(r#"{name}{{version="{{{{arm}}}}"}}"#),
        Duration::from_secs(15),
    )
    .unwrap()
}

#[tokio::test]
async fn answers_are_read_and_label_values_escaped() {
    let (fake, addr) = serve().await;
    let p = provider(addr);
    assert_eq!(
        p.query(&aggregate("good"), r#"v1 "quoted" \ back"#, window())
            .await
            .unwrap(),
        MetricData::Aggregate(7.0)
    );
    let (path, params) = fake.seen.lock()[0].clone();
    assert_eq!(path, "query");
    assert_eq!(
        params["query"],
        r#"sum(good{version="v1 \"quoted\" \\ back"}[300s])"#
    );
    assert_eq!(params["time"], "1700000300.250");
    assert_eq!(
        p.query(&aggregate("scalar"), "v1", window()).await.unwrap(),
        MetricData::Aggregate(42.5)
    );
    let MetricData::Samples(values) = p.query(&samples("latency"), "v2", window()).await.unwrap()
    else {
        panic!("samples expected");
    };
    assert_eq!(values.len(), 80);
    let (path, params) = fake.seen.lock().last().unwrap().clone();
    assert_eq!(path, "query_range");
    assert_eq!(
        (
            params["start"].as_str(),
            params["end"].as_str(),
            params["step"].as_str()
        ),
        ("1700000000.000", "1700000300.250", "15")
    );
    // Both arms at once.
    let arms = ArmLabels::new("v2", "v1").unwrap();
    let both = p
        .query_arms(&aggregate("requests"), &arms, window())
        .await
        .unwrap();
    assert_eq!(
        (both.canary, both.baseline, both.fresh_baseline),
        (
            MetricData::Aggregate(1000.0),
            MetricData::Aggregate(19000.0),
            None
        )
    );
}

/// Each failure is its own typed error, and only backend failures are retried.
#[tokio::test]
async fn every_failure_is_a_typed_error() {
    let (fake, addr) = serve().await;
    let p = provider(addr);
    let check = async |query: MetricQuery, code: &str, attempts: usize| {
        let before = fake.calls();
        let e = p.query(&query, "v1", window()).await.unwrap_err();
        assert_eq!(e.code(), code, "{}: {e}", query.name());
        assert_eq!(
            fake.calls() - before,
            attempts,
            "{}: attempts",
            query.name()
        );
        e
    };
    let e = check(aggregate("empty"), "no_data", 1).await;
    assert!(matches!(
        e,
        CanaryError::NoData {
            reason: NoDataReason::Empty,
            ..
        }
    ));
    let e = check(samples("nomatrix"), "no_data", 1).await;
    assert!(matches!(
        e,
        CanaryError::NoData {
            reason: NoDataReason::Empty,
            ..
        }
    ));
    let e = check(aggregate("nan"), "no_data", 1).await;
    assert!(matches!(
        e,
        CanaryError::NoData {
            reason: NoDataReason::NotANumber,
            ..
        }
    ));
    let e = check(samples("rangenan"), "no_data", 1).await;
    assert!(matches!(
        e,
        CanaryError::NoData {
            reason: NoDataReason::NotANumber,
            ..
        }
    ));
    let e = check(aggregate("inf"), "no_data", 1).await;
    assert!(matches!(
        e,
        CanaryError::NoData {
            reason: NoDataReason::Infinite,
            ..
        }
    ));
    let e = check(aggregate("bad"), "metrics_query", 1).await;
    assert!(
        matches!(&e, CanaryError::MetricsQuery { error_type, message, .. } if error_type == "bad_data" && message.contains("parse error")),
        "{e:?}"
    );
    assert!(!e.is_retryable());
    let e = check(aggregate("exec"), "metrics_query", 1).await;
    assert!(
        matches!(&e, CanaryError::MetricsQuery { error_type, .. } if error_type == "execution")
    );
    let e = check(aggregate("multi"), "metrics_query", 1).await;
    assert!(matches!(&e, CanaryError::MetricsQuery { error_type, .. } if error_type == "shape"));
    // The wrong result type for the shape.
    check(samples("good"), "metrics_query", 1).await;
    check(aggregate("garbage"), "metrics_decode", 1).await;
    check(aggregate("huge"), "metrics_decode", 1).await;
    // 500s are retried, then reported with their status.
    let e = check(aggregate("boom"), "metrics_http", 3).await;
    assert!(
        matches!(&e, CanaryError::MetricsHttp { status: 500, message } if message.contains("internal"))
    );
    assert!(e.is_retryable());
}

#[tokio::test]
async fn a_slow_answer_times_out_each_attempt_and_a_flaky_one_is_retried() {
    let (fake, addr) = serve().await;
    let p = provider(addr);
    let clock = SystemClock::new();
    let started = clock.monotonic();
    let e = p
        .query(&aggregate("slow"), "v1", window())
        .await
        .unwrap_err();
    let took = Duration::from_nanos(clock.monotonic().as_nanos() - started.as_nanos());
    assert!(
        matches!(e, CanaryError::MetricsTimeout(t) if t == Duration::from_millis(200)),
        "{e:?}"
    );
    assert_eq!(fake.calls(), 3);
    assert!(
        took < Duration::from_secs(2),
        "{took:?}: three 200 ms attempts and short backoffs"
    );
    // The first answer is a 503, the retry succeeds.
    assert_eq!(
        p.query(&aggregate("flaky"), "v1", window()).await.unwrap(),
        MetricData::Aggregate(7.0)
    );
    assert_eq!(fake.calls(), 5);
}

#[tokio::test]
async fn the_breaker_opens_on_repeated_failures_and_stops_calling() {
    let (fake, addr) = serve().await;
    let p = PrometheusProvider::builder(format!("http://{addr}/"))
        .timeout(Duration::from_millis(200))
        .backoff(
            Backoff::constant(Duration::from_millis(1))
                .max_attempts(2)
                .build()
                .unwrap(),
        )
        .breaker(
            BreakerConfig::builder()
                .count_window(4)
                .minimum_calls(4)
                .failure_rate_threshold(50)
                .open_wait(OpenWait::Fixed(Duration::from_secs(60)))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    for _ in 0..2 {
        let e = p
            .query(&aggregate("boom"), "v1", window())
            .await
            .unwrap_err();
        assert_eq!(e.code(), "metrics_http");
    }
    assert_eq!(fake.calls(), 4);
    let e = p
        .query(&aggregate("good"), "v1", window())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CanaryError::MetricsUnavailable { message } if message.contains("circuit")),
        "{e:?}"
    );
    assert!(e.is_retryable());
    assert_eq!(fake.calls(), 4, "an open breaker does not call");
    // Refused queries do not count against the backend.
    p.breaker().reset();
    for _ in 0..5 {
        let _ = p
            .query(&aggregate("bad"), "v1", window())
            .await
            .unwrap_err();
    }
    assert_eq!(
        p.query(&aggregate("good"), "v1", window()).await.unwrap(),
        MetricData::Aggregate(7.0)
    );
}

#[tokio::test]
async fn an_unreachable_server_and_bad_settings_are_typed() {
    // A port nothing listens on (bound, then closed).
    let addr = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let p = provider(addr);
    let e = p
        .query(&aggregate("good"), "v1", window())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "metrics_unavailable", "{e}");
    for url in [
        "https://127.0.0.1:9090",
        "127.0.0.1:9090",
        "http://",
        "http://a b",
        "http://u@h",
    ] {
        assert!(
            matches!(
                PrometheusProvider::builder(url).build(),
                Err(CanaryError::InvalidPolicy { .. })
            ),
            "{url}"
        );
    }
    assert!(
        PrometheusProvider::builder("http://127.0.0.1:9090")
            .timeout(Duration::ZERO)
            .build()
            .is_err()
    );
    assert!(
        PrometheusProvider::builder("http://127.0.0.1:9090")
            .body_max(0)
            .build()
            .is_err()
    );
    // Too many points for one range query.
    let p = provider(addr);
    let long = Window {
        start: Timestamp::from_unix_millis(0),
        end: Timestamp::from_unix_millis(1_000_000_000),
    };
    let e = p.query(&samples("latency"), "v1", long).await.unwrap_err();
    assert_eq!(e.code(), "metrics_query");
    // Arms must differ; queries must fit their use.
    assert!(ArmLabels::new("v1", "v1").is_err());
    assert!(ArmLabels::new("", "v1").is_err());
    assert!(
        ArmLabels::new("v2", "v1")
            .unwrap()
            .with_fresh_baseline("v2")
            .is_err()
    );
    assert!(MetricQuery::samples("x", r#"x{v="{{arm}}"}"#, Duration::from_millis(500)).is_err());
    assert!(
        ProviderSource::new(
            p,
            ArmLabels::new("v2", "v1").unwrap(),
            samples("requests"),
            aggregate("errors")
        )
        .is_err()
    );
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Action>>);

#[async_trait]
impl Actuator for Recorder {
    async fn apply(&self, _: &Rollout, d: &Directive) -> Result<(), CanaryError> {
        self.0.lock().push(d.action);
        Ok(())
    }
}

/// A rollout driven by the Driver on the fake Prometheus: error counts and latency samples
/// from the provider, judged by the error-rate checks and the judge.
async fn drive(canary_label: &str, requests_query: MetricQuery) -> (Rollout, Vec<Action>) {
    let (_fake, addr) = serve().await;
    let source = ProviderSource::new(
        provider(addr),
        ArmLabels::new(canary_label, "v1").unwrap(),
        requests_query,
        aggregate("errors"),
    )
    .unwrap()
    .with_samples(SampleMetric::new(samples("latency")))
    .unwrap();
    let plan = Plan::progressive(Duration::from_millis(5), Duration::ZERO, 100).unwrap();
    let policy = HealthPolicy::builder()
        .check(MetricCheck::error_rate_max(0.05).critical())
        .check(MetricCheck::error_rate_relative(0.25))
        .mann_whitney(MannWhitneyJudge::new(0.001, 95.0, 75.0).unwrap())
        .srm_p_value(None)
        .build()
        .unwrap();
    let mut rollout = Rollout::new("prom", plan, policy).unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let _ = rollout.start(clock.now(), Actor::System).unwrap();
    let recorder = Arc::new(Recorder::default());
    let driver = Driver::new(rollout, source, recorder.clone(), clock);
    let done = tokio::time::timeout(Duration::from_secs(20), driver.run())
        .await
        .expect("bounded")
        .unwrap();
    let actions = recorder.0.lock().clone();
    (done, actions)
}

#[tokio::test]
async fn a_rollout_judged_on_prometheus_is_promoted_or_rolled_back() {
    let (healthy, actions) = drive("v2", aggregate("requests")).await;
    assert_eq!(healthy.phase(), Phase::Succeeded, "{actions:?}");
    assert_eq!(
        actions,
        [
            Action::SetWeight(10),
            Action::SetWeight(25),
            Action::SetWeight(50),
            Action::Promote,
            Action::Done
        ]
    );
    // Ten times the errors (and twice the spread): the critical 5 % limit rolls it back.
    let (faulty, actions) = drive("v2-bad", aggregate("requests")).await;
    assert_eq!(faulty.phase(), Phase::RolledBack, "{actions:?}");
    assert!(!actions.contains(&Action::Promote));
    // No data is never healthy: an empty requests query fails every check, and the
    // source-error limit rolls the canary back.
    let (blind, actions) = drive("v2", aggregate("empty")).await;
    assert_eq!(blind.phase(), Phase::RolledBack, "{actions:?}");
    assert_eq!(blind.state().counters.checks, 0);
}
