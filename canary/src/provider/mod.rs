//! Metrics providers: where a rollout's observations come from when they live in a metrics
//! backend (Prometheus). A [`MetricsProvider`] answers one templated query for one arm over
//! a window, as an aggregate or as samples; [`ProviderSource`] turns a provider and a set of
//! queries into the driver's [`MetricsSource`].
//!
//! **No data is never healthy.** An empty result, NaN, ±∞, a refused query, an HTTP error
//! or a timeout is a typed [`CanaryError`]; `ProviderSource` passes it on, and the driver
//! records it as a metric-source error ([`Rollout::tick_source_error`]), which holds the
//! rollout and, at the policy's `source_error_limit`, rolls it back.

#[cfg(feature = "prometheus")]
pub(crate) mod prometheus;
pub(crate) mod template;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use metered_clock::Timestamp;

use self::template::{QueryTemplate, validate_label_value};
use crate::driver::MetricsSource;
use crate::error::{CanaryError, NoDataReason, Result};
use crate::health::{ArmObservation, Observations};
use crate::mann_whitney::{Direction, MetricSamples, SAMPLES_MAX};
use crate::rollout::Rollout;

/// Most sample metrics one [`ProviderSource`] queries.
pub const SAMPLE_METRICS_MAX: usize = 32;

/// The time span a query covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Start (inclusive).
    pub start: Timestamp,
    /// End, the evaluation time of an aggregate.
    pub end: Timestamp,
}

impl Window {
    /// Its length (zero when `end` is not after `start`).
    #[must_use]
    pub fn length(&self) -> Duration {
        self.end.saturating_duration_since(self.start)
    }
}

/// What a query returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueryShape {
    /// One value over the whole window (an instant query at its end, e.g.
    /// `sum(increase(…[{{window}}]))`): exactly one series.
    Aggregate,
    /// Every point of every series from the window's start to its end, `step` apart (a range
    /// query): the samples a judge compares.
    Samples {
        /// Distance between points (≥ 1 s).
        step: Duration,
    },
}

/// A named query: a template and what it returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricQuery {
    name: Arc<str>,
    template: QueryTemplate,
    shape: QueryShape,
}

impl MetricQuery {
    /// An aggregate query named `name`.
    ///
    /// # Errors
    /// [`CanaryError::InvalidPolicy`] for an empty name or a bad template
    /// ([`QueryTemplate::new`]).
    pub fn aggregate(name: impl Into<Arc<str>>, template: &str) -> Result<Self> {
        Self::new(name, template, QueryShape::Aggregate)
    }

    /// A samples query named `name`, points `step` apart.
    ///
    /// # Errors
    /// As [`MetricQuery::aggregate`], and for a step under one second.
    pub fn samples(name: impl Into<Arc<str>>, template: &str, step: Duration) -> Result<Self> {
        if step < Duration::from_secs(1) {
            return Err(CanaryError::InvalidPolicy {
                field: "query.step",
                reason: format!("must be at least 1 s, got {step:?}"),
            });
        }
        Self::new(name, template, QueryShape::Samples { step })
    }

    fn new(name: impl Into<Arc<str>>, template: &str, shape: QueryShape) -> Result<Self> {
        let name = name.into();
        if name.is_empty() || name.len() > crate::CHECK_NAME_LEN_MAX {
            return Err(CanaryError::InvalidPolicy {
                field: "query.name",
                reason: format!("must be 1..={} bytes", crate::CHECK_NAME_LEN_MAX),
            });
        }
        Ok(MetricQuery {
            name,
            template: QueryTemplate::new(template)?,
            shape,
        })
    }

    /// Its name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its template.
    #[must_use]
    pub fn template(&self) -> &QueryTemplate {
        &self.template
    }

    /// What it returns.
    #[must_use]
    pub fn shape(&self) -> QueryShape {
        self.shape
    }
}

/// One arm's answer to a query: finite values only (a provider turns anything else into
/// [`CanaryError::NoData`]).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum MetricData {
    /// One value.
    Aggregate(f64),
    /// Points, at most [`SAMPLES_MAX`], never empty.
    Samples(Vec<f64>),
}

/// The label values that select each arm in a template's `{{arm}}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArmLabels {
    canary: Arc<str>,
    baseline: Arc<str>,
    fresh_baseline: Option<Arc<str>>,
}

impl ArmLabels {
    /// The canary's and the running stable version's label values.
    ///
    /// # Errors
    /// [`CanaryError::InvalidPolicy`] for an empty value, one longer than
    /// [`LABEL_VALUE_LEN_MAX`](crate::LABEL_VALUE_LEN_MAX) or holding NUL, or two arms with
    /// the same value (the canary would be compared with itself).
    pub fn new(canary: &str, baseline: &str) -> Result<Self> {
        validate_label_value("arms.canary", canary)?;
        validate_label_value("arms.baseline", baseline)?;
        if canary == baseline {
            return Err(CanaryError::InvalidPolicy {
                field: "arms",
                reason: format!("canary and baseline both select {canary:?}"),
            });
        }
        Ok(ArmLabels {
            canary: canary.into(),
            baseline: baseline.into(),
            fresh_baseline: None,
        })
    }

    /// Adds a freshly started baseline's label value.
    ///
    /// # Errors
    /// As [`ArmLabels::new`].
    pub fn with_fresh_baseline(mut self, fresh: &str) -> Result<Self> {
        validate_label_value("arms.fresh_baseline", fresh)?;
        if fresh == &*self.canary || fresh == &*self.baseline {
            return Err(CanaryError::InvalidPolicy {
                field: "arms.fresh_baseline",
                reason: format!("{fresh:?} already selects another arm"),
            });
        }
        self.fresh_baseline = Some(fresh.into());
        Ok(self)
    }

    /// The canary's label value.
    #[must_use]
    pub fn canary(&self) -> &str {
        &self.canary
    }

    /// The stable version's label value.
    #[must_use]
    pub fn baseline(&self) -> &str {
        &self.baseline
    }

    /// The fresh baseline's label value, if any.
    #[must_use]
    pub fn fresh_baseline(&self) -> Option<&str> {
        self.fresh_baseline.as_deref()
    }
}

/// One query's answers for every arm.
#[derive(Clone, Debug, PartialEq)]
pub struct ArmData {
    /// The canary's.
    pub canary: MetricData,
    /// The stable version's.
    pub baseline: MetricData,
    /// The fresh baseline's, when its label is set.
    pub fresh_baseline: Option<MetricData>,
}

/// A metrics backend that answers templated queries (feature `tokio`; the Prometheus one
/// needs feature `prometheus`).
///
/// Implementations must return finite values only, and [`CanaryError::NoData`] for an
/// empty answer, NaN or ±∞: no data is never healthy.
#[async_trait]
pub trait MetricsProvider: Send + Sync {
    /// `query` for the arm labelled `arm` over `window`.
    ///
    /// # Errors
    /// [`CanaryError::NoData`], [`CanaryError::MetricsQuery`], [`CanaryError::MetricsHttp`],
    /// [`CanaryError::MetricsTimeout`], [`CanaryError::MetricsUnavailable`] or
    /// [`CanaryError::MetricsDecode`].
    async fn query(&self, query: &MetricQuery, arm: &str, window: Window) -> Result<MetricData>;

    /// `query` for every arm of `arms` (canary, stable, fresh baseline in that order; the
    /// first error ends it).
    ///
    /// # Errors
    /// As [`MetricsProvider::query`].
    async fn query_arms(
        &self,
        query: &MetricQuery,
        arms: &ArmLabels,
        window: Window,
    ) -> Result<ArmData> {
        let canary = self.query(query, arms.canary(), window).await?;
        let baseline = self.query(query, arms.baseline(), window).await?;
        let fresh_baseline = match arms.fresh_baseline() {
            Some(f) => Some(self.query(query, f, window).await?),
            None => None,
        };
        Ok(ArmData {
            canary,
            baseline,
            fresh_baseline,
        })
    }
}

#[async_trait]
impl<T: MetricsProvider + ?Sized> MetricsProvider for Arc<T> {
    async fn query(&self, query: &MetricQuery, arm: &str, window: Window) -> Result<MetricData> {
        (**self).query(query, arm, window).await
    }
}

/// A metric whose samples the policy's judge compares.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleMetric {
    /// A [`QueryShape::Samples`] query; its name names the metric.
    pub query: MetricQuery,
    /// Which change is a regression.
    pub direction: Direction,
    /// Weight in the judge's score (> 0).
    pub weight: f64,
    /// Whether failing it is critical.
    pub critical: bool,
    /// Dry-run: judged and recorded, never counted; a failed query of it is logged and
    /// skipped instead of failing the observation.
    pub dry_run: bool,
}

impl SampleMetric {
    /// An "increase is bad" metric of weight 1, neither critical nor dry-run.
    #[must_use]
    pub fn new(query: MetricQuery) -> Self {
        SampleMetric {
            query,
            direction: Direction::Increase,
            weight: 1.0,
            critical: false,
            dry_run: false,
        }
    }
}

/// A [`MetricsSource`] over a [`MetricsProvider`]: requests and errors of each arm (two
/// aggregate queries) become [`ArmObservation`] counts, and each [`SampleMetric`] becomes
/// [`MetricSamples`] for the judge (with a fresh baseline, a second metric
/// `<name>_vs_fresh_baseline` compares the canary with it).
///
/// Counts are rounded to whole requests (`increase()` extrapolates); a negative count, or
/// more errors than requests, is a [`CanaryError::MetricsQuery`].
#[derive(Debug)]
pub struct ProviderSource<P> {
    provider: P,
    arms: ArmLabels,
    requests: MetricQuery,
    errors: MetricQuery,
    samples: Vec<SampleMetric>,
}

impl<P: MetricsProvider> ProviderSource<P> {
    /// A source reading each arm's `requests` and `errors` (aggregates over the window
    /// since the step began) from `provider`.
    ///
    /// # Errors
    /// [`CanaryError::InvalidPolicy`] unless both queries are [`QueryShape::Aggregate`].
    pub fn new(
        provider: P,
        arms: ArmLabels,
        requests: MetricQuery,
        errors: MetricQuery,
    ) -> Result<Self> {
        for q in [&requests, &errors] {
            if q.shape != QueryShape::Aggregate {
                return Err(CanaryError::InvalidPolicy {
                    field: "query.shape",
                    reason: format!("{:?} must be an aggregate query", q.name),
                });
            }
        }
        Ok(ProviderSource {
            provider,
            arms,
            requests,
            errors,
            samples: Vec::new(),
        })
    }

    /// Adds a metric for the judge.
    ///
    /// # Errors
    /// [`CanaryError::InvalidPolicy`] unless its query is a [`QueryShape::Samples`] one,
    /// its weight finite and positive, and at most [`SAMPLE_METRICS_MAX`] are set.
    pub fn with_samples(mut self, metric: SampleMetric) -> Result<Self> {
        let bad = |reason: String| {
            Err(CanaryError::InvalidPolicy {
                field: "samples",
                reason,
            })
        };
        if !matches!(metric.query.shape, QueryShape::Samples { .. }) {
            return bad(format!("{:?} must be a samples query", metric.query.name));
        }
        if !(metric.weight.is_finite() && metric.weight > 0.0) {
            return bad(format!(
                "{:?}: weight must be finite and > 0",
                metric.query.name
            ));
        }
        if self.samples.len() >= SAMPLE_METRICS_MAX {
            return bad(format!("at most {SAMPLE_METRICS_MAX} sample metrics"));
        }
        self.samples.push(metric);
        Ok(self)
    }

    /// The arms' label values.
    #[must_use]
    pub fn arms(&self) -> &ArmLabels {
        &self.arms
    }

    /// The provider.
    #[must_use]
    pub fn provider(&self) -> &P {
        &self.provider
    }

    async fn counts(&self, arm: &str, window: Window) -> Result<ArmObservation> {
        let requests = count(
            &self.requests,
            self.aggregate(&self.requests, arm, window).await?,
        )?;
        let errors = count(
            &self.errors,
            self.aggregate(&self.errors, arm, window).await?,
        )?;
        if errors > requests {
            return Err(CanaryError::MetricsQuery {
                metric: self.errors.name.to_string(),
                error_type: "shape".into(),
                message: format!("{arm:?}: {errors} errors exceed {requests} requests"),
            });
        }
        Ok(ArmObservation::counts(requests, errors))
    }

    async fn aggregate(&self, query: &MetricQuery, arm: &str, window: Window) -> Result<f64> {
        match self.provider.query(query, arm, window).await? {
            MetricData::Aggregate(v) => Ok(v),
            MetricData::Samples(_) => Err(shape_error(query, "an aggregate")),
        }
    }

    async fn samples(&self, metric: &SampleMetric, window: Window) -> Result<Vec<MetricSamples>> {
        let data = self
            .provider
            .query_arms(&metric.query, &self.arms, window)
            .await?;
        let values = |d: MetricData| match d {
            MetricData::Samples(v) => Ok(v),
            MetricData::Aggregate(_) => Err(shape_error(&metric.query, "samples")),
        };
        let canary = values(data.canary)?;
        let make = |name: String, baseline: Vec<f64>| MetricSamples {
            name,
            baseline,
            canary: canary.clone(),
            direction: metric.direction,
            weight: metric.weight,
            critical: metric.critical,
            dry_run: metric.dry_run,
        };
        let mut out = vec![make(metric.query.name.to_string(), values(data.baseline)?)];
        if let Some(fresh) = data.fresh_baseline {
            out.push(make(
                format!("{}_vs_fresh_baseline", metric.query.name),
                values(fresh)?,
            ));
        }
        Ok(out)
    }
}

#[async_trait]
impl<P: MetricsProvider> MetricsSource for ProviderSource<P> {
    async fn observe(
        &self,
        _rollout: &Rollout,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Observations> {
        let window = Window {
            start: since,
            end: until,
        };
        let mut obs = Observations::new(
            self.counts(&self.arms.canary, window).await?,
            self.counts(&self.arms.baseline, window).await?,
        );
        if let Some(fresh) = &self.arms.fresh_baseline {
            obs = obs.with_fresh_baseline(self.counts(fresh, window).await?);
        }
        let mut samples = Vec::new();
        for metric in &self.samples {
            match self.samples(metric, window).await {
                Ok(s) => samples.extend(s),
                Err(e) if metric.dry_run => {
                    tracing::warn!(metric = metric.query.name(), error = %e, "dry-run metric skipped");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(obs.with_samples(samples))
    }
}

fn shape_error(query: &MetricQuery, wanted: &str) -> CanaryError {
    CanaryError::MetricsQuery {
        metric: query.name.to_string(),
        error_type: "shape".into(),
        message: format!("the provider did not return {wanted}"),
    }
}

/// A count from an aggregate: finite, not negative, rounded.
fn count(query: &MetricQuery, value: f64) -> Result<u64> {
    if value.is_nan() {
        return Err(CanaryError::NoData {
            metric: query.name.to_string(),
            reason: NoDataReason::NotANumber,
        });
    }
    // 2^53: the largest count an f64 holds exactly.
    if !(0.0..=9_007_199_254_740_992.0).contains(&value) {
        return Err(CanaryError::MetricsQuery {
            metric: query.name.to_string(),
            error_type: "shape".into(),
            message: format!("{value} is not a count"),
        });
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // checked above
    Ok(value.round() as u64)
}

/// What a provider does with the values it read: [`CanaryError::NoData`] when there are
/// none or one is NaN or ±∞, [`CanaryError::MetricsDecode`] beyond [`SAMPLES_MAX`]; the
/// values otherwise. Custom providers call it to keep the "no data is never healthy" rule.
///
/// ```
/// use canary::{CanaryError, NoDataReason, finite_values};
///
/// assert_eq!(finite_values("latency", vec![1.0, 2.0])?, [1.0, 2.0]);
/// assert!(matches!(
///     finite_values("latency", vec![1.0, f64::NAN]),
///     Err(CanaryError::NoData { reason: NoDataReason::NotANumber, .. })
/// ));
/// assert!(matches!(
///     finite_values("latency", vec![]),
///     Err(CanaryError::NoData { reason: NoDataReason::Empty, .. })
/// ));
/// # Ok::<(), CanaryError>(())
/// ```
///
/// # Errors
/// As described.
pub fn finite_values(metric: &str, values: Vec<f64>) -> Result<Vec<f64>> {
    let no_data = |reason| CanaryError::NoData {
        metric: metric.to_owned(),
        reason,
    };
    if values.is_empty() {
        return Err(no_data(NoDataReason::Empty));
    }
    if values.iter().any(|v| v.is_nan()) {
        return Err(no_data(NoDataReason::NotANumber));
    }
    if values.iter().any(|v| v.is_infinite()) {
        return Err(no_data(NoDataReason::Infinite));
    }
    if values.len() > SAMPLES_MAX {
        return Err(CanaryError::MetricsDecode {
            message: format!("{metric:?}: more than {SAMPLES_MAX} samples"),
        });
    }
    Ok(values)
}
