//! Guardrails that trigger a rollback: error rate judged on its posterior, and a latency
//! quantile from a streaming sketch with an order-statistic interval.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::beta::{Beta, Counts, Interval};
use crate::error::{BayesError, Result, check_probability};
use crate::special;
use crate::two_arm::{Lift, prob_lift_exceeds};

/// Which guardrail a verdict is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum GuardrailKind {
    /// Error rate above an absolute limit.
    ErrorRateAbsolute,
    /// Error rate above the baseline's by more than the allowed relative increase.
    ErrorRateRelative,
    /// Latency quantile above an absolute limit.
    LatencyAbsolute,
    /// Latency quantile above the baseline's by more than the allowed relative increase.
    LatencyRelative,
}

/// The result of one guardrail check. When `breached`, it is the explicit rollback reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[must_use]
pub struct GuardrailVerdict {
    /// Which guardrail.
    pub kind: GuardrailKind,
    /// Whether the limit is exceeded with the required confidence.
    pub breached: bool,
    /// The challenger's point estimate (error rate, or latency in seconds).
    pub observed: f64,
    /// The limit applied, in the same unit (for relative limits: baseline × (1 + increase)).
    pub limit: f64,
    /// For error rates: the posterior probability that the limit is exceeded.
    pub probability: Option<f64>,
    /// For latency: the challenger's order-statistic interval of the quantile, in seconds.
    pub interval: Option<Interval>,
}

/// The limit of an [`ErrorRateGuardrail`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum ErrorRateLimit {
    /// The challenger's error rate must not exceed this rate.
    Absolute(f64),
    /// The challenger's error rate must not exceed the baseline's times `1 + max_increase`.
    Relative {
        /// Allowed relative increase, e.g. 0.2 for +20 %.
        max_increase: f64,
    },
}

/// "Roll back when P(error rate > limit) ≥ confidence", on the Beta posterior of the error
/// rate, absolute or relative to a baseline arm.
///
/// ```
/// use bayes_ab::{Counts, ErrorRateGuardrail};
///
/// let g = ErrorRateGuardrail::absolute(0.01, 0.95)?;
/// // 30 errors in 1,000 requests: almost surely above 1 %.
/// assert!(g.check(Counts::new(30, 1_000)?, None)?.breached);
/// // 5 errors in 1,000: not above 1 % with any confidence.
/// assert!(!g.check(Counts::new(5, 1_000)?, None)?.breached);
///
/// let r = ErrorRateGuardrail::relative(0.2, 0.95)?;
/// let v = r.check(Counts::new(40, 1_000)?, Some(Counts::new(10, 1_000)?))?;
/// assert!(v.breached);
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorRateGuardrail {
    limit: ErrorRateLimit,
    confidence: f64,
    prior: Beta,
    min_requests: u64,
}

/// Requests the challenger needs before an [`ErrorRateGuardrail`] may fire, by default. Below
/// it the prior dominates: with the uniform prior and no data at all, P(rate > 1 %) is 0.99.
pub const ERROR_GUARDRAIL_MIN_REQUESTS: u64 = 100;

impl ErrorRateGuardrail {
    /// Breach when P(error rate > `limit`) ≥ `confidence`. Uniform prior.
    ///
    /// # Errors
    /// [`BayesError::InvalidProbability`] for a limit or confidence outside `(0, 1)`.
    pub fn absolute(limit: f64, confidence: f64) -> Result<Self> {
        check_probability("error-rate limit", limit)?;
        check_probability("confidence", confidence)?;
        Ok(Self {
            limit: ErrorRateLimit::Absolute(limit),
            confidence,
            prior: Beta::UNIFORM,
            min_requests: ERROR_GUARDRAIL_MIN_REQUESTS,
        })
    }

    /// Breach when P(challenger rate > baseline rate × (1 + `max_increase`)) ≥ `confidence`.
    /// Uniform prior.
    ///
    /// # Errors
    /// [`BayesError::InvalidParameter`] for a negative or non-finite increase;
    /// [`BayesError::InvalidProbability`] for a confidence outside `(0, 1)`.
    pub fn relative(max_increase: f64, confidence: f64) -> Result<Self> {
        if !(max_increase.is_finite() && max_increase >= 0.0) {
            return Err(BayesError::InvalidParameter {
                name: "max_increase",
                reason: "must be finite and >= 0",
            });
        }
        check_probability("confidence", confidence)?;
        Ok(Self {
            limit: ErrorRateLimit::Relative { max_increase },
            confidence,
            prior: Beta::UNIFORM,
            min_requests: ERROR_GUARDRAIL_MIN_REQUESTS,
        })
    }

    /// The same guardrail with another prior.
    #[must_use]
    pub fn with_prior(mut self, prior: Beta) -> Self {
        self.prior = prior;
        self
    }

    /// The same guardrail with another minimum number of challenger requests before it may
    /// fire (default [`ERROR_GUARDRAIL_MIN_REQUESTS`]).
    #[must_use]
    pub fn with_min_requests(mut self, min_requests: u64) -> Self {
        self.min_requests = min_requests;
        self
    }

    /// The limit.
    #[must_use]
    pub fn limit(&self) -> ErrorRateLimit {
        self.limit
    }

    /// Checks the challenger's `errors` (errors out of requests), against the baseline's for a
    /// relative limit. Never breached below the minimum number of requests (the probability
    /// is still reported).
    ///
    /// # Errors
    /// [`BayesError::InsufficientData`] for a relative limit without a baseline.
    pub fn check(&self, errors: Counts, baseline: Option<Counts>) -> Result<GuardrailVerdict> {
        let posterior = self.prior.update(errors);
        let observed = posterior.mean();
        let enough = errors.trials() >= self.min_requests;
        let verdict = match self.limit {
            ErrorRateLimit::Absolute(limit) => {
                let p = posterior.sf(limit);
                GuardrailVerdict {
                    kind: GuardrailKind::ErrorRateAbsolute,
                    breached: p >= self.confidence && enough,
                    observed,
                    limit,
                    probability: Some(p),
                    interval: None,
                }
            }
            ErrorRateLimit::Relative { max_increase } => {
                let baseline = baseline.ok_or(BayesError::InsufficientData {
                    what: "a relative error-rate limit needs the baseline's counts",
                })?;
                let base = self.prior.update(baseline);
                let p = prob_lift_exceeds(base, posterior, Lift::Relative, max_increase)?;
                GuardrailVerdict {
                    kind: GuardrailKind::ErrorRateRelative,
                    breached: p >= self.confidence && enough,
                    observed,
                    limit: base.mean() * (1.0 + max_increase),
                    probability: Some(p),
                    interval: None,
                }
            }
        };
        if verdict.breached {
            tracing::warn!(?verdict, "error-rate guardrail breached");
            metrics::counter!("bayes_ab_guardrail_breaches_total", "kind" => "error_rate")
                .increment(1);
        }
        Ok(verdict)
    }
}

/// Highest latency a [`LatencySketch`] records, in microseconds (one hour); larger values are
/// clamped to it.
pub const LATENCY_MAX_MICROS: u64 = 3_600_000_000;

/// A mergeable streaming latency sketch: an HDR histogram of microseconds with three
/// significant digits (quantiles within 0.1 % of the recorded value), fixed memory.
///
/// ```
/// use std::time::Duration;
/// use bayes_ab::LatencySketch;
///
/// let mut s = LatencySketch::new();
/// for ms in 1..=100 {
///     s.record(Duration::from_millis(ms));
/// }
/// let p95 = s.quantile(0.95)?;
/// assert!((p95.as_secs_f64() - 0.095).abs() < 0.001);
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
#[derive(Clone, Debug)]
pub struct LatencySketch {
    histogram: Histogram<u64>,
}

impl Default for LatencySketch {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for LatencySketch {
    fn eq(&self, other: &Self) -> bool {
        self.histogram == other.histogram
    }
}

impl LatencySketch {
    /// An empty sketch.
    #[must_use]
    pub fn new() -> Self {
        let histogram = Histogram::new_with_bounds(1, LATENCY_MAX_MICROS, 3)
            .expect("constant bounds 1..=LATENCY_MAX_MICROS with 3 digits are valid");
        Self { histogram }
    }

    /// Records one latency (clamped to `[1 µs, LATENCY_MAX_MICROS]`).
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, LATENCY_MAX_MICROS);
        self.histogram.saturating_record(micros);
    }

    /// Adds every value of `other` (sketches of two partial streams add up).
    ///
    /// # Errors
    /// [`BayesError::Incompatible`] if hdrhistogram refuses the merge (cannot happen between
    /// sketches made by this type).
    pub fn merge(&mut self, other: &LatencySketch) -> Result<()> {
        self.histogram
            .add(&other.histogram)
            .map_err(|_| BayesError::Incompatible {
                reason: "latency sketches with different bounds",
            })
    }

    pub(crate) fn histogram(&self) -> &Histogram<u64> {
        &self.histogram
    }

    pub(crate) fn merge_histogram(&mut self, other: &Histogram<u64>) -> Result<()> {
        self.histogram
            .add(other)
            .map_err(|_| BayesError::Incompatible {
                reason: "latency histogram outside the sketch's bounds",
            })
    }

    /// Values recorded.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The `q`-quantile.
    ///
    /// # Errors
    /// [`BayesError::InvalidProbability`] unless `0 < q < 1`; [`BayesError::InsufficientData`] when
    /// empty.
    pub fn quantile(&self, q: f64) -> Result<Duration> {
        check_probability("quantile", q)?;
        if self.count() == 0 {
            return Err(BayesError::InsufficientData {
                what: "a quantile of an empty latency sketch",
            });
        }
        Ok(Duration::from_micros(self.histogram.value_at_quantile(q)))
    }

    /// A distribution-free interval for the `q`-quantile at `confidence`, from order
    /// statistics: ranks `l < u` with `P(l ≤ Bin(n, q) < u) ≥ confidence`, computed exactly
    /// with the incomplete beta function. `None` for an end the sample is too small to bound
    /// (for example no lower bound from fewer than ~60 values at q = 0.95): such an end is
    /// reported as the sketch's minimum or maximum.
    ///
    /// # Errors
    /// As [`LatencySketch::quantile`], and [`BayesError::InvalidProbability`] for a confidence
    /// outside `(0, 1)`.
    pub fn quantile_interval(&self, q: f64, confidence: f64) -> Result<QuantileInterval> {
        let estimate = self.quantile(q)?;
        check_probability("confidence", confidence)?;
        let n = self.count();
        let tail = 0.5 * (1.0 - confidence);
        let (lower_rank, upper_rank) = order_statistic_ranks(n, q, tail);
        #[allow(clippy::cast_precision_loss)]
        let nf = n as f64;
        let value_at_rank = |rank: u64| {
            #[allow(clippy::cast_precision_loss)]
            let quantile = rank as f64 / nf;
            Duration::from_micros(self.histogram.value_at_quantile(quantile))
        };
        let lower = lower_rank.map_or(Duration::from_micros(self.histogram.min()), value_at_rank);
        let upper = upper_rank.map_or(Duration::from_micros(self.histogram.max()), value_at_rank);
        Ok(QuantileInterval {
            estimate,
            lower,
            upper,
            lower_bounded: lower_rank.is_some(),
            upper_bounded: upper_rank.is_some(),
        })
    }
}

/// P(Bin(n, q) ≤ k) = I_{1−q}(n − k, k + 1).
#[allow(clippy::cast_precision_loss)]
fn binomial_cdf(n: u64, q: f64, k: u64) -> f64 {
    if k >= n {
        return 1.0;
    }
    special::beta_inc((n - k) as f64, (k + 1) as f64, 1.0 - q)
}

/// 1-based ranks `(l, u)` of the order statistics bounding the `q`-quantile, each end missing
/// (`None`) when even the extreme order statistic does not reach the confidence.
fn order_statistic_ranks(n: u64, q: f64, tail: f64) -> (Option<u64>, Option<u64>) {
    // l = largest k with P(Bin(n, q) ≤ k − 1) ≤ tail: then P(X_(l) > ξ_q) ≤ tail.
    // u = smallest k with P(Bin(n, q) ≤ k − 1) ≥ 1 − tail: then P(X_(u) < ξ_q) ≤ tail.
    #[allow(clippy::cast_precision_loss)]
    let (nf, z) = (n as f64, special::normal_quantile(1.0 - tail));
    let centre = nf * q;
    let spread = z * (nf * q * (1.0 - q)).sqrt();
    // Starting points from the normal approximation, then exact steps.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let guess = |x: f64| x.clamp(0.0, nf).floor() as u64;
    let mut l = guess(centre - spread).max(1);
    while l > 1 && binomial_cdf(n, q, l - 1) > tail {
        l -= 1;
    }
    while l < n && binomial_cdf(n, q, l) <= tail {
        l += 1;
    }
    let lower = (binomial_cdf(n, q, l - 1) <= tail).then_some(l);
    let mut u = guess(centre + spread).clamp(1, n);
    while u < n && binomial_cdf(n, q, u - 1) < 1.0 - tail {
        u += 1;
    }
    while u > 1 && binomial_cdf(n, q, u - 2) >= 1.0 - tail {
        u -= 1;
    }
    let upper = (binomial_cdf(n, q, u - 1) >= 1.0 - tail).then_some(u);
    (lower, upper)
}

/// A latency quantile with its order-statistic interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantileInterval {
    /// The quantile itself.
    pub estimate: Duration,
    /// Lower end.
    pub lower: Duration,
    /// Upper end.
    pub upper: Duration,
    /// Whether `lower` is a true confidence bound (false: the sample minimum, too few values).
    pub lower_bounded: bool,
    /// Whether `upper` is a true confidence bound (false: the sample maximum, too few values).
    pub upper_bounded: bool,
}

/// The limit of a [`LatencyGuardrail`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum LatencyLimit {
    /// The quantile must not exceed this duration.
    Absolute(Duration),
    /// The quantile must not exceed the baseline's times `1 + max_increase`.
    Relative {
        /// Allowed relative increase, e.g. 0.1 for +10 %.
        max_increase: f64,
    },
}

/// "Roll back when the latency quantile (p95 by default) is above the limit with confidence":
/// breached when the lower end of the challenger's order-statistic interval is above an
/// absolute limit, or above the upper end of the baseline's interval times
/// `1 + max_increase` (a conservative comparison: both intervals must separate).
///
/// ```
/// use std::time::Duration;
/// use bayes_ab::{LatencyGuardrail, LatencySketch};
///
/// let mut slow = LatencySketch::new();
/// for i in 0..2_000u64 {
///     slow.record(Duration::from_millis(100 + i % 300));
/// }
/// let g = LatencyGuardrail::absolute(0.95, Duration::from_millis(250), 0.95)?;
/// let v = g.check(&slow, None)?;
/// assert!(v.breached);
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyGuardrail {
    quantile: f64,
    limit: LatencyLimit,
    confidence: f64,
}

impl LatencyGuardrail {
    /// Breach when the `quantile` is above `limit` with `confidence`.
    ///
    /// # Errors
    /// [`BayesError::InvalidProbability`] for a quantile or confidence outside `(0, 1)`;
    /// [`BayesError::InvalidParameter`] for a zero limit.
    pub fn absolute(quantile: f64, limit: Duration, confidence: f64) -> Result<Self> {
        check_probability("quantile", quantile)?;
        check_probability("confidence", confidence)?;
        if limit.is_zero() {
            return Err(BayesError::InvalidParameter {
                name: "latency limit",
                reason: "must be > 0",
            });
        }
        Ok(Self {
            quantile,
            limit: LatencyLimit::Absolute(limit),
            confidence,
        })
    }

    /// Breach when the challenger's `quantile` is above the baseline's times
    /// `1 + max_increase` with `confidence`.
    ///
    /// # Errors
    /// [`BayesError::InvalidProbability`] for a quantile or confidence outside `(0, 1)`;
    /// [`BayesError::InvalidParameter`] for a negative or non-finite increase.
    pub fn relative(quantile: f64, max_increase: f64, confidence: f64) -> Result<Self> {
        check_probability("quantile", quantile)?;
        check_probability("confidence", confidence)?;
        if !(max_increase.is_finite() && max_increase >= 0.0) {
            return Err(BayesError::InvalidParameter {
                name: "max_increase",
                reason: "must be finite and >= 0",
            });
        }
        Ok(Self {
            quantile,
            limit: LatencyLimit::Relative { max_increase },
            confidence,
        })
    }

    /// Checks the challenger's sketch (and the baseline's, for a relative limit).
    ///
    /// # Errors
    /// [`BayesError::InsufficientData`] for an empty sketch, or a relative limit without a
    /// baseline.
    pub fn check(
        &self,
        challenger: &LatencySketch,
        baseline: Option<&LatencySketch>,
    ) -> Result<GuardrailVerdict> {
        let ci = challenger.quantile_interval(self.quantile, self.confidence)?;
        let (kind, limit) = match self.limit {
            LatencyLimit::Absolute(limit) => (GuardrailKind::LatencyAbsolute, limit.as_secs_f64()),
            LatencyLimit::Relative { max_increase } => {
                let baseline = baseline.ok_or(BayesError::InsufficientData {
                    what: "a relative latency limit needs the baseline's sketch",
                })?;
                let base = baseline.quantile_interval(self.quantile, self.confidence)?;
                if !base.upper_bounded {
                    // The baseline's quantile cannot be bounded yet: nothing to compare with.
                    return Ok(GuardrailVerdict {
                        kind: GuardrailKind::LatencyRelative,
                        breached: false,
                        observed: ci.estimate.as_secs_f64(),
                        limit: f64::INFINITY,
                        probability: None,
                        interval: Some(seconds(ci)),
                    });
                }
                (
                    GuardrailKind::LatencyRelative,
                    base.upper.as_secs_f64() * (1.0 + max_increase),
                )
            }
        };
        let verdict = GuardrailVerdict {
            kind,
            breached: ci.lower_bounded && ci.lower.as_secs_f64() > limit,
            observed: ci.estimate.as_secs_f64(),
            limit,
            probability: None,
            interval: Some(seconds(ci)),
        };
        if verdict.breached {
            tracing::warn!(?verdict, "latency guardrail breached");
            metrics::counter!("bayes_ab_guardrail_breaches_total", "kind" => "latency")
                .increment(1);
        }
        Ok(verdict)
    }
}

fn seconds(ci: QuantileInterval) -> Interval {
    Interval {
        lower: ci.lower.as_secs_f64(),
        upper: ci.upper.as_secs_f64(),
    }
}
