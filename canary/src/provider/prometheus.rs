//! The Prometheus provider (feature `prometheus`): instant and range queries over
//! Prometheus's HTTP API (`/api/v1/query`, `/api/v1/query_range`), plain http, each attempt
//! under a timeout, retried with the suite's backoff behind its circuit breaker.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use metered_clock::{Clock, SystemClock, Timestamp};
use resilience::{
    Backoff, BreakerConfig, CallOutcome, CircuitBreaker, OpenWait, Retry, RetryDecision,
    TokioSleeper,
};
use serde::Deserialize;

use super::{MetricData, MetricQuery, MetricsProvider, QueryShape, Window, finite_values};
use crate::error::{CanaryError, NoDataReason, Result};

/// Largest response body read by default (16 MiB).
pub const PROMETHEUS_BODY_MAX_DEFAULT: usize = 16 << 20;

/// Most points a range query may ask for (Prometheus refuses more than 11,000 per series).
pub const RANGE_POINTS_MAX: u64 = 11_000;

/// Longest error body kept in an error message.
const MESSAGE_LEN_MAX: usize = 512;

/// Settings of a [`PrometheusProvider`]. Build with [`PrometheusProvider::builder`].
#[derive(Clone)]
#[must_use]
pub struct PrometheusBuilder {
    url: String,
    timeout: Duration,
    backoff: Option<Backoff>,
    breaker: Option<BreakerConfig>,
    body_max: usize,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PrometheusBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusBuilder")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .field("body_max", &self.body_max)
            .finish_non_exhaustive()
    }
}

impl PrometheusBuilder {
    /// Time limit of one attempt (request and body), default 10 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Retry policy (default: exponential from 100 ms, full jitter, capped at 2 s, 3
    /// attempts, 30 s in all). Only timeouts, unreachable backends, 429 and 5xx are retried.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// Circuit breaker (default: named `prometheus`, opens at 50 % failures over the last 20
    /// attempts once 10 were made, for 30 s). Timeouts, unreachable backends and 429 / 5xx
    /// count as failures; refused queries and empty answers do not (the backend is up).
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = Some(config);
        self
    }

    /// Largest response body read (default [`PROMETHEUS_BODY_MAX_DEFAULT`]); a larger one is
    /// [`CanaryError::MetricsDecode`].
    pub fn body_max(mut self, bytes: usize) -> Self {
        self.body_max = bytes;
        self
    }

    /// The clock of the retry schedule and the breaker (default the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Validates the settings and builds the provider (no connection is made yet).
    ///
    /// # Errors
    /// [`CanaryError::InvalidPolicy`] for a URL that is not `http://host[:port][/prefix]`
    /// (https is not supported: terminate TLS in a sidecar), a zero or over-an-hour timeout,
    /// a zero body limit, or a bad backoff or breaker setting.
    pub fn build(self) -> Result<PrometheusProvider> {
        let bad =
            |field: &'static str, reason: String| Err(CanaryError::InvalidPolicy { field, reason });
        let base = self.url.trim_end_matches('/').to_owned();
        let Some(rest) = base.strip_prefix("http://") else {
            return bad(
                "prometheus.url",
                format!("{:?}: only plain http:// URLs are supported", self.url),
            );
        };
        if rest.is_empty() || rest.contains(['?', '#', '@', ' ']) {
            return bad(
                "prometheus.url",
                format!("{:?} is not http://host[:port][/prefix]", self.url),
            );
        }
        if let Err(e) = format!("{base}/api/v1/query").parse::<Uri>() {
            return bad("prometheus.url", format!("{:?}: {e}", self.url));
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(3_600) {
            return bad(
                "prometheus.timeout",
                format!("must be within (0, 1 h], got {:?}", self.timeout),
            );
        }
        if self.body_max == 0 {
            return bad("prometheus.body_max", "must be positive".into());
        }
        let resilience_error = |field: &'static str| {
            move |e: resilience::ResilienceError| CanaryError::InvalidPolicy {
                field,
                reason: e.to_string(),
            }
        };
        let backoff = match self.backoff {
            Some(b) => b,
            None => Backoff::exponential(Duration::from_millis(100))
                .cap(Duration::from_secs(2))
                .max_attempts(3)
                .max_elapsed(Duration::from_secs(30))
                .build()
                .map_err(resilience_error("prometheus.backoff"))?,
        };
        let breaker = match self.breaker {
            Some(b) => b,
            None => BreakerConfig::builder()
                .name("prometheus")
                .count_window(20)
                .minimum_calls(10)
                .failure_rate_threshold(50)
                .open_wait(OpenWait::Fixed(Duration::from_secs(30)))
                .half_open_calls(2)
                .build()
                .map_err(resilience_error("prometheus.breaker"))?,
        };
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(PrometheusProvider {
            base: base.into(),
            client,
            timeout: self.timeout,
            body_max: self.body_max,
            retry: Retry::new(backoff, TokioSleeper, Arc::clone(&self.clock)),
            breaker: CircuitBreaker::with_clock(breaker, self.clock),
        })
    }
}

/// A [`MetricsProvider`] over Prometheus's HTTP API (feature `prometheus`).
///
/// An aggregate is an instant query (`/api/v1/query`) at the window's end that must return
/// one series (or a scalar); samples are a range query (`/api/v1/query_range`) over the
/// window, every point of every series. `{{window}}` in the template becomes the window's
/// length. Each attempt has a timeout; timeouts, unreachable backends, 429 and 5xx are
/// retried with the backoff, behind the circuit breaker. Every other outcome is a typed
/// error: an empty result, NaN or ±∞ is [`CanaryError::NoData`], Prometheus's error JSON
/// (`bad_data`, `execution`) or a result of the wrong shape is [`CanaryError::MetricsQuery`].
///
/// ```no_run
/// # async fn example() -> Result<(), canary::CanaryError> {
/// use std::time::Duration;
/// use canary::{MetricQuery, MetricsProvider, PrometheusProvider, Window};
/// use metered_clock::Timestamp;
///
/// let prometheus = PrometheusProvider::builder("http://127.0.0.1:9090")
///     .timeout(Duration::from_secs(5))
///     .build()?;
/// let errors = MetricQuery::aggregate(
///     "errors",
///     r#"sum(increase(http_requests_total{version="{{arm}}",code=~"5.."}[{{window}}]))"#,
/// )?;
/// let window = Window {
///     start: Timestamp::from_unix_millis(1_700_000_000_000),
///     end: Timestamp::from_unix_millis(1_700_000_300_000),
/// };
/// let canary_errors = prometheus.query(&errors, "v2", window).await?;
/// # Ok(()) }
/// ```
pub struct PrometheusProvider {
    base: Arc<str>,
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
    body_max: usize,
    retry: Retry<TokioSleeper, Arc<dyn Clock>>,
    breaker: CircuitBreaker<Arc<dyn Clock>>,
}

impl std::fmt::Debug for PrometheusProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusProvider")
            .field("base", &self.base)
            .field("timeout", &self.timeout)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl PrometheusProvider {
    /// A builder for the Prometheus server at `url` (`http://host:port`, optionally with a
    /// path prefix), with the defaults.
    pub fn builder(url: impl Into<String>) -> PrometheusBuilder {
        PrometheusBuilder {
            url: url.into(),
            timeout: Duration::from_secs(10),
            backoff: None,
            breaker: None,
            body_max: PROMETHEUS_BODY_MAX_DEFAULT,
            clock: Arc::new(SystemClock::new()),
        }
    }

    /// The circuit breaker in front of the server (to read its state or reset it).
    #[must_use]
    pub fn breaker(&self) -> &CircuitBreaker<Arc<dyn Clock>> {
        &self.breaker
    }

    /// The request URI of `query` for `arm` over `window`.
    fn uri(&self, query: &MetricQuery, arm: &str, window: Window) -> Result<Uri> {
        let promql = query.template().render(arm, window.length());
        let mut url = String::with_capacity(self.base.len() + promql.len() * 3 + 64);
        url.push_str(&self.base);
        match query.shape() {
            QueryShape::Aggregate => {
                url.push_str("/api/v1/query?query=");
                percent_encode(&promql, &mut url);
                url.push_str("&time=");
                push_seconds(window.end, &mut url);
            }
            QueryShape::Samples { step } => {
                let step_secs = step.as_secs().max(1);
                let points = window.length().as_secs() / step_secs + 1;
                if points > RANGE_POINTS_MAX {
                    return Err(CanaryError::MetricsQuery {
                        metric: query.name().to_owned(),
                        error_type: "shape".into(),
                        message: format!(
                            "{points} points per series, at most {RANGE_POINTS_MAX}: use a longer step"
                        ),
                    });
                }
                url.push_str("/api/v1/query_range?query=");
                percent_encode(&promql, &mut url);
                url.push_str("&start=");
                push_seconds(window.start, &mut url);
                url.push_str("&end=");
                push_seconds(window.end, &mut url);
                let _ = write!(url, "&step={step_secs}");
            }
        }
        url.parse::<Uri>().map_err(|e| CanaryError::MetricsDecode {
            message: format!("request URI: {e}"),
        })
    }

    /// One attempt: breaker permit, request under the timeout, decode.
    async fn attempt(&self, query: &MetricQuery, uri: Uri) -> Result<MetricData> {
        let permit = self
            .breaker
            .try_acquire()
            .map_err(|e| CanaryError::MetricsUnavailable {
                message: format!("circuit breaker open: {e}"),
            })?;
        let result = match resilience::timeout(&TokioSleeper, self.timeout, self.fetch(uri)).await {
            Ok(Ok((status, body))) => decode(query, status, &body),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(CanaryError::MetricsTimeout(self.timeout)),
        };
        permit.record(match &result {
            Err(e) if backend_failure(e) => CallOutcome::Failure,
            _ => CallOutcome::Success,
        });
        result
    }

    async fn fetch(&self, uri: Uri) -> Result<(StatusCode, Bytes)> {
        let request = Request::get(uri)
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| CanaryError::MetricsDecode {
                message: format!("request: {e}"),
            })?;
        let response =
            self.client
                .request(request)
                .await
                .map_err(|e| CanaryError::MetricsUnavailable {
                    message: e.to_string(),
                })?;
        let status = response.status();
        let body = Limited::new(response.into_body(), self.body_max)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    CanaryError::MetricsDecode {
                        message: format!("the answer exceeds {} bytes", self.body_max),
                    }
                } else {
                    CanaryError::MetricsUnavailable {
                        message: format!("reading the answer: {e}"),
                    }
                }
            })?
            .to_bytes();
        Ok((status, body))
    }
}

#[async_trait]
impl MetricsProvider for PrometheusProvider {
    async fn query(&self, query: &MetricQuery, arm: &str, window: Window) -> Result<MetricData> {
        let uri = self.uri(query, arm, window)?;
        let result = self
            .retry
            .run(
                |_attempt| self.attempt(query, uri.clone()),
                |e: &CanaryError| match e {
                    CanaryError::MetricsUnavailable { message }
                        if message.starts_with("circuit") =>
                    {
                        RetryDecision::Stop
                    }
                    e if backend_failure(e) => RetryDecision::Retry,
                    _ => RetryDecision::Stop,
                },
            )
            .await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code(),
        };
        metrics::counter!("canary_metrics_queries_total", "outcome" => outcome).increment(1);
        if let Err(e) = &result {
            tracing::debug!(metric = query.name(), arm, error = %e, "prometheus query failed");
        }
        result
    }
}

/// Whether an error says the backend is unwell (counts against the breaker, is retried).
fn backend_failure(e: &CanaryError) -> bool {
    matches!(
        e,
        CanaryError::MetricsTimeout(_) | CanaryError::MetricsUnavailable { .. }
    ) || matches!(e, CanaryError::MetricsHttp { status, .. } if *status == 429 || *status >= 500)
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<InstantSeries>),
    Matrix(Vec<RangeSeries>),
    Scalar(Point),
    String(#[allow(dead_code)] serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct InstantSeries {
    value: Point,
}

#[derive(Deserialize)]
struct RangeSeries {
    values: Vec<Point>,
}

/// `[unix seconds, "value"]`.
#[derive(Deserialize)]
struct Point(#[allow(dead_code)] f64, String);

fn decode(query: &MetricQuery, status: StatusCode, body: &[u8]) -> Result<MetricData> {
    let metric = query.name();
    let answer: Option<Answer> = serde_json::from_slice(body).ok();
    if !status.is_success() {
        return Err(match answer {
            // Prometheus's error JSON: 400 bad_data, 422 execution, 503 timeout/unavailable.
            Some(a) if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS => {
                CanaryError::MetricsQuery {
                    metric: metric.to_owned(),
                    error_type: a.error_type.unwrap_or_else(|| status.as_str().to_owned()),
                    message: clip(&a.error.unwrap_or_default()),
                }
            }
            Some(a) => CanaryError::MetricsHttp {
                status: status.as_u16(),
                message: clip(&format!(
                    "{}: {}",
                    a.error_type.unwrap_or_default(),
                    a.error.unwrap_or_default()
                )),
            },
            None => CanaryError::MetricsHttp {
                status: status.as_u16(),
                message: clip(&String::from_utf8_lossy(body)),
            },
        });
    }
    let Some(answer) = answer else {
        let reason = serde_json::from_slice::<Answer>(body)
            .err()
            .map(|e| e.to_string());
        return Err(CanaryError::MetricsDecode {
            message: format!("{metric:?}: {}", reason.unwrap_or_default()),
        });
    };
    if answer.status != "success" {
        return Err(CanaryError::MetricsQuery {
            metric: metric.to_owned(),
            error_type: answer.error_type.unwrap_or_else(|| answer.status.clone()),
            message: clip(&answer.error.unwrap_or_default()),
        });
    }
    let Some(data) = answer.data else {
        return Err(CanaryError::MetricsDecode {
            message: format!("{metric:?}: a success without data"),
        });
    };
    let shape = |message: String| CanaryError::MetricsQuery {
        metric: metric.to_owned(),
        error_type: "shape".into(),
        message,
    };
    match (query.shape(), data) {
        (QueryShape::Aggregate, Data::Scalar(p)) => one(metric, &p),
        (QueryShape::Aggregate, Data::Vector(series)) => match series.as_slice() {
            [] => Err(CanaryError::NoData {
                metric: metric.to_owned(),
                reason: NoDataReason::Empty,
            }),
            [s] => one(metric, &s.value),
            many => Err(shape(format!(
                "{} series; an aggregate query must return one (sum it)",
                many.len()
            ))),
        },
        (QueryShape::Samples { .. }, Data::Matrix(series)) => {
            let total: usize = series.iter().map(|s| s.values.len()).sum();
            if total > crate::SAMPLES_MAX {
                return Err(CanaryError::MetricsDecode {
                    message: format!(
                        "{metric:?}: {total} samples, at most {}",
                        crate::SAMPLES_MAX
                    ),
                });
            }
            let mut values = Vec::with_capacity(total);
            for p in series.iter().flat_map(|s| &s.values) {
                values.push(number(metric, &p.1)?);
            }
            finite_values(metric, values).map(MetricData::Samples)
        }
        (QueryShape::Aggregate, _) => Err(shape("expected a vector or a scalar".into())),
        (QueryShape::Samples { .. }, _) => Err(shape("expected a matrix".into())),
    }
}

fn one(metric: &str, p: &Point) -> Result<MetricData> {
    let v = number(metric, &p.1)?;
    let v = finite_values(metric, vec![v])?;
    Ok(MetricData::Aggregate(v[0]))
}

/// Parses Prometheus's value strings: decimals, `NaN`, `+Inf`, `-Inf`.
fn number(metric: &str, s: &str) -> Result<f64> {
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s.parse::<f64>().map_err(|_| CanaryError::MetricsDecode {
            message: format!("{metric:?}: {s:?} is not a number"),
        }),
    }
}

/// Unix seconds with milliseconds, as Prometheus's `time`, `start` and `end` take them.
fn push_seconds(t: Timestamp, out: &mut String) {
    let ms = t.as_unix_millis();
    let _ = write!(out, "{}.{:03}", ms / 1_000, ms % 1_000);
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// The start of a message, at most [`MESSAGE_LEN_MAX`] bytes.
fn clip(s: &str) -> String {
    let mut end = s.len().min(MESSAGE_LEN_MAX);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].trim().to_owned()
}
