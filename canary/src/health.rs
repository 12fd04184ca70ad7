//! Health judgement: what the canary's metrics say about it, with confidence on the
//! posterior so one blip does not flap.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bayes_ab::{Beta, Counts, LatencySketch, TrafficSplit, srm_check};
use serde::{Deserialize, Serialize};

use crate::error::{CanaryError, Result};
use crate::mann_whitney::{JudgeReport, MannWhitneyJudge, MetricClass, MetricSamples, ScoreClass};
use crate::plan::Step;
use crate::stats::prob_relative_breach;

/// Most metric checks one policy may hold.
pub const CHECKS_MAX: usize = 32;

/// Longest metric-check name.
pub const NAME_LEN_MAX: usize = 100;

/// What a check measures.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MetricKind {
    /// Errors out of requests.
    ErrorRate,
    /// A latency quantile (for example 0.95), from the arms' [`LatencySketch`]es, in µs.
    Latency {
        /// The quantile, strictly between 0 and 1.
        quantile: f64,
    },
}

/// The limit a check holds the canary to.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Limit {
    /// The metric must stay at or below this value (a rate for error rates, µs for
    /// latencies).
    Absolute(f64),
    /// The metric may exceed the baseline's by at most this fraction (0.2 → 20 % worse).
    RelativeToBaseline(f64),
}

/// One health check: a metric, its limit, and whether failing it rolls back at once.
///
/// ```
/// use canary::MetricCheck;
///
/// let checks = [
///     MetricCheck::error_rate_max(0.05).critical(),     // never above 5 %
///     MetricCheck::error_rate_relative(0.25),            // at most 25 % worse than stable
///     MetricCheck::latency_max(0.95, 300_000.0),         // p95 ≤ 300 ms
///     MetricCheck::latency_relative(0.95, 0.10),         // p95 at most 10 % worse than stable
/// ];
/// assert!(checks[0].is_critical());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct MetricCheck {
    name: Arc<str>,
    kind: MetricKind,
    limit: Limit,
    critical: bool,
}

impl MetricCheck {
    /// A check named `name`; validated when the policy is built.
    #[must_use]
    pub fn new(name: impl Into<Arc<str>>, kind: MetricKind, limit: Limit) -> Self {
        MetricCheck {
            name: name.into(),
            kind,
            limit,
            critical: false,
        }
    }

    /// Error rate at most `max_rate` (0.05 → 5 %).
    #[must_use]
    pub fn error_rate_max(max_rate: f64) -> Self {
        Self::new(
            "error_rate",
            MetricKind::ErrorRate,
            Limit::Absolute(max_rate),
        )
    }

    /// Error rate at most `(1 + max_increase) ×` the baseline's.
    #[must_use]
    pub fn error_rate_relative(max_increase: f64) -> Self {
        Self::new(
            "error_rate_vs_baseline",
            MetricKind::ErrorRate,
            Limit::RelativeToBaseline(max_increase),
        )
    }

    /// Latency `quantile` at most `max_micros` µs.
    #[must_use]
    pub fn latency_max(quantile: f64, max_micros: f64) -> Self {
        Self::new(
            latency_name(quantile, ""),
            MetricKind::Latency { quantile },
            Limit::Absolute(max_micros),
        )
    }

    /// Latency `quantile` at most `(1 + max_increase) ×` the baseline's.
    #[must_use]
    pub fn latency_relative(quantile: f64, max_increase: f64) -> Self {
        Self::new(
            latency_name(quantile, "_vs_baseline"),
            MetricKind::Latency { quantile },
            Limit::RelativeToBaseline(max_increase),
        )
    }

    /// Makes the check critical: one confident failure rolls the canary back at once, and it
    /// is judged before the step's minimum sample is reached.
    #[must_use]
    pub fn critical(mut self) -> Self {
        self.critical = true;
        self
    }

    /// The check's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it measures.
    #[must_use]
    pub fn kind(&self) -> MetricKind {
        self.kind
    }

    /// Its limit.
    #[must_use]
    pub fn limit(&self) -> Limit {
        self.limit
    }

    /// Whether failing it rolls back at once.
    #[must_use]
    pub fn is_critical(&self) -> bool {
        self.critical
    }

    fn validate(&self) -> Result<()> {
        let bad = |reason: String| {
            Err(CanaryError::InvalidPolicy {
                field: "checks",
                reason: format!("check {:?}: {reason}", self.name),
            })
        };
        if self.name.is_empty() || self.name.len() > NAME_LEN_MAX {
            return bad(format!("the name must be 1..={NAME_LEN_MAX} bytes"));
        }
        if let MetricKind::Latency { quantile } = self.kind
            && !(quantile > 0.0 && quantile < 1.0)
        {
            return bad(format!(
                "quantile {quantile} is not strictly between 0 and 1"
            ));
        }
        match (self.kind, self.limit) {
            (MetricKind::ErrorRate, Limit::Absolute(x)) if !(x > 0.0 && x < 1.0) => bad(format!(
                "error-rate limit {x} is not strictly between 0 and 1"
            )),
            (MetricKind::Latency { .. }, Limit::Absolute(x)) if !(x.is_finite() && x > 0.0) => {
                bad(format!("latency limit {x} µs is not finite and positive"))
            }
            (_, Limit::RelativeToBaseline(r)) if !(r.is_finite() && r >= 0.0) => {
                bad(format!("relative limit {r} is not finite and >= 0"))
            }
            _ => Ok(()),
        }
    }
}

fn latency_name(quantile: f64, suffix: &str) -> String {
    let pct = (quantile * 1000.0).round() / 10.0;
    format!("latency_p{pct}{suffix}")
}

/// What happens when a limit is reached without a verdict (a pause that lasted too long, too
/// many metric-source errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Outcome {
    /// Roll the canary back (the safe default).
    RollBack,
    /// Resume checking at the current step.
    Resume,
    /// Move on to the next step as if the step had passed.
    Advance,
}

/// How checks are judged and what their results lead to. Build with
/// [`HealthPolicy::builder`].
///
/// ```
/// use std::time::Duration;
/// use canary::{HealthPolicy, MetricCheck, Outcome};
///
/// let policy = HealthPolicy::builder()
///     .check(MetricCheck::error_rate_max(0.05).critical())
///     .check(MetricCheck::error_rate_relative(0.5))
///     .fail_confidence(0.99)
///     .failure_limit(2)
///     .max_pause(Duration::from_secs(1800), Outcome::RollBack)
///     .build()?;
/// assert_eq!(policy.failure_limit(), 2);
/// assert!(HealthPolicy::builder().build().is_err()); // no checks
/// # Ok::<(), canary::CanaryError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct HealthPolicy {
    checks: Vec<MetricCheck>,
    prior: Beta,
    fail_confidence: f64,
    pass_below: f64,
    min_baseline_sample: u64,
    critical_min_sample: u64,
    failure_limit: u32,
    total_failure_limit: u32,
    success_limit: Option<u32>,
    inconclusive_limit: u32,
    max_pause: Duration,
    pause_outcome: Outcome,
    source_error_limit: u32,
    source_error_outcome: Outcome,
    srm_p_value: Option<f64>,
    judge: Option<MannWhitneyJudge>,
}

/// Builder of a [`HealthPolicy`]; every setting has a default except the checks.
#[derive(Clone, Debug)]
#[must_use]
pub struct HealthPolicyBuilder {
    checks: Vec<MetricCheck>,
    prior: (f64, f64),
    fail_confidence: f64,
    pass_below: f64,
    min_baseline_sample: u64,
    critical_min_sample: u64,
    failure_limit: u32,
    total_failure_limit: u32,
    success_limit: Option<u32>,
    inconclusive_limit: u32,
    max_pause: Duration,
    pause_outcome: Outcome,
    source_error_limit: u32,
    source_error_outcome: Outcome,
    srm_p_value: Option<f64>,
    judge: Option<MannWhitneyJudge>,
}

impl HealthPolicyBuilder {
    /// Adds a check (at least one, at most [`CHECKS_MAX`]).
    pub fn check(mut self, check: MetricCheck) -> Self {
        self.checks.push(check);
        self
    }

    /// Beta prior of every error rate (default uniform, `Beta(1, 1)`).
    pub fn prior(mut self, alpha: f64, beta: f64) -> Self {
        self.prior = (alpha, beta);
        self
    }

    /// Posterior probability of a breach needed to fail a check (default 0.99).
    pub fn fail_confidence(mut self, p: f64) -> Self {
        self.fail_confidence = p;
        self
    }

    /// A check passes while the posterior probability of a breach stays below this (default
    /// 0.8). From it up to `fail_confidence` the check is inconclusive: probably bad, not yet
    /// sure; the rollout holds and gathers data.
    pub fn pass_below(mut self, p: f64) -> Self {
        self.pass_below = p;
        self
    }

    /// Baseline requests needed before a relative check can judge (default 100).
    pub fn min_baseline_sample(mut self, n: u64) -> Self {
        self.min_baseline_sample = n;
        self
    }

    /// Canary requests needed before critical checks are judged ahead of the step's minimum
    /// sample (default 50).
    pub fn critical_min_sample(mut self, n: u64) -> Self {
        self.critical_min_sample = n;
        self
    }

    /// Consecutive failed checks that roll back (default 3).
    pub fn failure_limit(mut self, n: u32) -> Self {
        self.failure_limit = n;
        self
    }

    /// Failed checks over the whole rollout that roll back (default 6).
    pub fn total_failure_limit(mut self, n: u32) -> Self {
        self.total_failure_limit = n;
        self
    }

    /// Consecutive healthy checks that complete a step before its minimum time (default:
    /// never early).
    pub fn success_limit(mut self, n: u32) -> Self {
        self.success_limit = Some(n);
        self
    }

    /// Consecutive inconclusive checks that pause the rollout (default 3).
    pub fn inconclusive_limit(mut self, n: u32) -> Self {
        self.inconclusive_limit = n;
        self
    }

    /// Longest an inconclusive pause lasts, and what happens then (default 30 min, roll back).
    pub fn max_pause(mut self, d: Duration, outcome: Outcome) -> Self {
        self.max_pause = d;
        self.pause_outcome = outcome;
        self
    }

    /// Consecutive metric-source errors tolerated, and what happens at the limit (default 4,
    /// roll back).
    pub fn source_error_limit(mut self, n: u32, outcome: Outcome) -> Self {
        self.source_error_limit = n;
        self.source_error_outcome = outcome;
        self
    }

    /// Sample-ratio-mismatch threshold: a split with a chi-square p-value below it makes the
    /// check inconclusive (default 0.001); `None` disables the check.
    pub fn srm_p_value(mut self, p: Option<f64>) -> Self {
        self.srm_p_value = p;
        self
    }

    /// Judges raw samples (when the observations carry them) with a Mann-Whitney judge: a
    /// failing score fails the check, a marginal one makes it inconclusive.
    pub fn mann_whitney(mut self, judge: MannWhitneyJudge) -> Self {
        self.judge = Some(judge);
        self
    }

    /// Validates every setting.
    ///
    /// # Errors
    /// [`CanaryError::InvalidPolicy`] naming the first bad setting: no checks or more than
    /// [`CHECKS_MAX`], a bad check, a prior that is not finite and positive, confidences
    /// outside `(0, 1)`, a `fail_confidence` below 0.5 or below `pass_below`, a
    /// zero limit, a zero pause, an SRM threshold outside `(0, 1)`.
    pub fn build(self) -> Result<HealthPolicy> {
        let bad =
            |field: &'static str, reason: String| Err(CanaryError::InvalidPolicy { field, reason });
        if self.checks.is_empty() {
            return bad("checks", "a policy needs at least one check".into());
        }
        if self.checks.len() > CHECKS_MAX {
            return bad(
                "checks",
                format!("{} checks, at most {CHECKS_MAX}", self.checks.len()),
            );
        }
        for c in &self.checks {
            c.validate()?;
        }
        let prior =
            Beta::new(self.prior.0, self.prior.1).map_err(|e| CanaryError::InvalidPolicy {
                field: "prior",
                reason: e.to_string(),
            })?;
        for (field, p) in [
            ("fail_confidence", self.fail_confidence),
            ("pass_below", self.pass_below),
        ] {
            if !(p > 0.0 && p < 1.0) {
                return bad(field, format!("must be strictly between 0 and 1, got {p}"));
            }
        }
        if self.fail_confidence < 0.5 {
            return bad(
                "fail_confidence",
                format!("must be at least 0.5, got {}", self.fail_confidence),
            );
        }
        if self.pass_below > self.fail_confidence {
            return bad(
                "pass_below",
                format!(
                    "{} exceeds fail_confidence {}",
                    self.pass_below, self.fail_confidence
                ),
            );
        }
        for (field, n) in [
            ("failure_limit", self.failure_limit),
            ("total_failure_limit", self.total_failure_limit),
            ("inconclusive_limit", self.inconclusive_limit),
            ("source_error_limit", self.source_error_limit),
        ] {
            if n == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        if self.total_failure_limit < self.failure_limit {
            return bad(
                "total_failure_limit",
                format!(
                    "{} is below failure_limit {}",
                    self.total_failure_limit, self.failure_limit
                ),
            );
        }
        if self.success_limit == Some(0) {
            return bad("success_limit", "must be at least 1".into());
        }
        if self.max_pause.is_zero() {
            return bad("max_pause", "must be positive".into());
        }
        if let Some(p) = self.srm_p_value
            && !(p > 0.0 && p < 1.0)
        {
            return bad(
                "srm_p_value",
                format!("must be strictly between 0 and 1, got {p}"),
            );
        }
        Ok(HealthPolicy {
            checks: self.checks,
            prior,
            fail_confidence: self.fail_confidence,
            pass_below: self.pass_below,
            min_baseline_sample: self.min_baseline_sample,
            critical_min_sample: self.critical_min_sample,
            failure_limit: self.failure_limit,
            total_failure_limit: self.total_failure_limit,
            success_limit: self.success_limit,
            inconclusive_limit: self.inconclusive_limit,
            max_pause: self.max_pause,
            pause_outcome: self.pause_outcome,
            source_error_limit: self.source_error_limit,
            source_error_outcome: self.source_error_outcome,
            srm_p_value: self.srm_p_value,
            judge: self.judge,
        })
    }
}

impl HealthPolicy {
    /// A builder with the defaults and no checks.
    pub fn builder() -> HealthPolicyBuilder {
        HealthPolicyBuilder {
            checks: Vec::new(),
            prior: (1.0, 1.0),
            fail_confidence: 0.99,
            pass_below: 0.8,
            min_baseline_sample: 100,
            critical_min_sample: 50,
            failure_limit: 3,
            total_failure_limit: 6,
            success_limit: None,
            inconclusive_limit: 3,
            max_pause: Duration::from_secs(30 * 60),
            pause_outcome: Outcome::RollBack,
            source_error_limit: 4,
            source_error_outcome: Outcome::RollBack,
            srm_p_value: Some(0.001),
            judge: None,
        }
    }

    /// The checks, in order.
    #[must_use]
    pub fn checks(&self) -> &[MetricCheck] {
        &self.checks
    }
    /// Posterior probability of a breach that fails a check.
    #[must_use]
    pub fn fail_confidence(&self) -> f64 {
        self.fail_confidence
    }
    /// Posterior probability of a breach below which a check passes.
    #[must_use]
    pub fn pass_below(&self) -> f64 {
        self.pass_below
    }
    /// Consecutive failures that roll back.
    #[must_use]
    pub fn failure_limit(&self) -> u32 {
        self.failure_limit
    }
    /// Total failures that roll back.
    #[must_use]
    pub fn total_failure_limit(&self) -> u32 {
        self.total_failure_limit
    }
    /// Consecutive successes that complete a step early, if set.
    #[must_use]
    pub fn success_limit(&self) -> Option<u32> {
        self.success_limit
    }
    /// Consecutive inconclusive checks that pause.
    #[must_use]
    pub fn inconclusive_limit(&self) -> u32 {
        self.inconclusive_limit
    }
    /// Longest inconclusive pause.
    #[must_use]
    pub fn max_pause(&self) -> Duration {
        self.max_pause
    }
    /// What happens when an inconclusive pause times out.
    #[must_use]
    pub fn pause_outcome(&self) -> Outcome {
        self.pause_outcome
    }
    /// Consecutive metric-source errors tolerated.
    #[must_use]
    pub fn source_error_limit(&self) -> u32 {
        self.source_error_limit
    }
    /// What happens at the metric-source error limit.
    #[must_use]
    pub fn source_error_outcome(&self) -> Outcome {
        self.source_error_outcome
    }

    /// Judges one check's observations for a rollout at `step` (pure, no state).
    ///
    /// ```
    /// use std::time::Duration;
    /// use canary::{ArmObservation, HealthPolicy, MetricCheck, Observations, Step, Verdict};
    ///
    /// let policy = HealthPolicy::builder().check(MetricCheck::error_rate_max(0.05)).build()?;
    /// let step = Step::new(10, Duration::from_secs(300), 500);
    /// let judge = |requests, errors| policy.judge(&step, &Observations::canary_only(ArmObservation::counts(requests, errors)));
    /// assert_eq!(judge(100, 0)?.verdict, Verdict::InsufficientData);
    /// assert_eq!(judge(2_000, 20)?.verdict, Verdict::Healthy);
    /// assert_eq!(judge(2_000, 200)?.verdict, Verdict::Unhealthy);
    /// # Ok::<(), canary::CanaryError>(())
    /// ```
    ///
    /// # Errors
    /// [`CanaryError::InvalidObservation`] when an arm reports more errors than requests, or
    /// raw samples the Mann-Whitney judge refuses.
    pub fn judge(&self, step: &Step, obs: &Observations) -> Result<HealthReport> {
        obs.validate()?;
        let canary_n = obs.canary.requests;
        let baseline_n = obs.baseline.as_ref().map(|b| b.requests);
        let enough = canary_n >= step.min_sample();
        let enough_critical = canary_n >= self.critical_min_sample.min(step.min_sample()).max(1);
        let mut metrics = Vec::with_capacity(self.checks.len());
        for check in &self.checks {
            let judged = if enough || (check.critical && enough_critical) {
                self.judge_check(check, obs)
            } else {
                MetricResult::no_data(check)
            };
            metrics.push(judged);
        }

        let srm_p_value = match (self.srm_p_value, &obs.baseline) {
            (Some(_), Some(b)) if step.weight_percent() < 100 => {
                srm_p_value(canary_n, b.requests, step.weight_percent())
            }
            _ => None,
        };
        let srm = matches!((srm_p_value, self.srm_p_value), (Some(p), Some(limit)) if p < limit);

        let judge = match (&self.judge, obs.samples.is_empty(), enough) {
            (Some(j), false, true) => Some(j.judge(&obs.samples)?),
            _ => None,
        };

        let any = |v: CheckVerdict| metrics.iter().any(|m| m.verdict == v);
        let critical_fail = metrics
            .iter()
            .any(|m| m.critical && m.verdict == CheckVerdict::Fail)
            || judge.as_ref().is_some_and(|j| {
                j.metrics
                    .iter()
                    .zip(&obs.samples)
                    .any(|((_, _, class), s)| s.critical && *class != MetricClass::Pass)
            });
        let judge_class = judge.as_ref().map(|j| j.class);
        let verdict = if critical_fail {
            Verdict::Critical
        } else if any(CheckVerdict::Fail) || judge_class == Some(ScoreClass::Fail) {
            Verdict::Unhealthy
        } else if !enough || any(CheckVerdict::NoData) {
            Verdict::InsufficientData
        } else if srm
            || any(CheckVerdict::Inconclusive)
            || judge_class == Some(ScoreClass::Marginal)
        {
            Verdict::Inconclusive
        } else {
            Verdict::Healthy
        };
        Ok(HealthReport {
            verdict,
            canary_requests: canary_n,
            baseline_requests: baseline_n,
            metrics,
            srm_p_value,
            sample_ratio_mismatch: srm,
            judge,
        })
    }

    fn judge_check(&self, check: &MetricCheck, obs: &Observations) -> MetricResult {
        let base = obs.baseline.as_ref();
        match (check.kind, check.limit) {
            (MetricKind::ErrorRate, limit) => {
                let canary = self.posterior(&obs.canary);
                let observed = obs.canary.error_rate();
                let (p_breach, threshold) = match limit {
                    Limit::Absolute(max) => (canary.sf(max), max),
                    Limit::RelativeToBaseline(r) => {
                        let Some(b) = base.filter(|b| b.requests >= self.min_baseline_sample)
                        else {
                            return MetricResult::no_data(check);
                        };
                        let baseline = self.posterior(b);
                        let threshold = b.error_rate() * (1.0 + r);
                        let thresholds = [self.fail_confidence, self.pass_below];
                        match prob_relative_breach(baseline, canary, r, thresholds) {
                            Some(p) => (p, threshold),
                            None => return MetricResult::no_data(check),
                        }
                    }
                };
                let verdict = if p_breach >= self.fail_confidence {
                    CheckVerdict::Fail
                } else if p_breach < self.pass_below {
                    CheckVerdict::Pass
                } else {
                    CheckVerdict::Inconclusive
                };
                MetricResult {
                    name: Arc::clone(&check.name),
                    verdict,
                    critical: check.critical,
                    observed,
                    threshold,
                    statistic: p_breach,
                }
            }
            (MetricKind::Latency { quantile }, limit) => {
                let Some(canary) = obs
                    .canary
                    .latency
                    .as_ref()
                    .and_then(|s| self.bounds(s, quantile))
                else {
                    return MetricResult::no_data(check);
                };
                let (verdict, threshold, statistic) = match limit {
                    Limit::Absolute(max) => {
                        let v = if canary.fail_lower > max {
                            CheckVerdict::Fail
                        } else if canary.pass_as_canary <= max {
                            CheckVerdict::Pass
                        } else {
                            CheckVerdict::Inconclusive
                        };
                        (v, max, canary.fail_lower)
                    }
                    Limit::RelativeToBaseline(r) => {
                        let Some(base) = base
                            .filter(|b| b.requests >= self.min_baseline_sample)
                            .and_then(|b| b.latency.as_ref())
                            .and_then(|s| self.bounds(s, quantile))
                        else {
                            return MetricResult::no_data(check);
                        };
                        let factor = 1.0 + r;
                        let v = if canary.fail_lower > factor * base.fail_upper {
                            CheckVerdict::Fail
                        } else if canary.pass_as_canary <= factor * base.pass_as_baseline {
                            CheckVerdict::Pass
                        } else {
                            CheckVerdict::Inconclusive
                        };
                        (
                            v,
                            factor * base.estimate,
                            canary.fail_lower / base.fail_upper.max(1.0),
                        )
                    }
                };
                MetricResult {
                    name: Arc::clone(&check.name),
                    verdict,
                    critical: check.critical,
                    observed: canary.estimate,
                    threshold,
                    statistic,
                }
            }
        }
    }

    /// The quantile estimate, its one-sided bounds at `fail_confidence` (a breach is that
    /// sure beyond them), and the bounds that decide a pass: P(breach) < `pass_below` holds
    /// when the canary's bound at that level is within the limit (for a baseline, the
    /// mirror-image bound). In µs; `None` for an empty sketch.
    fn bounds(&self, sketch: &LatencySketch, q: f64) -> Option<QuantileBounds> {
        let micros = |d: std::time::Duration| d.as_secs_f64() * 1e6;
        // A two-sided interval at 2c − 1 has one-sided tails of 1 − c.
        let fail = sketch
            .quantile_interval(q, 2.0 * self.fail_confidence - 1.0)
            .ok()?;
        let pb = self.pass_below;
        let (pass_as_canary, pass_as_baseline) = if (pb - 0.5).abs() < 1e-9 {
            (micros(fail.estimate), micros(fail.estimate))
        } else if pb > 0.5 {
            let iv = sketch.quantile_interval(q, 2.0 * pb - 1.0).ok()?;
            (micros(iv.lower), micros(iv.upper))
        } else {
            let iv = sketch.quantile_interval(q, 1.0 - 2.0 * pb).ok()?;
            (micros(iv.upper), micros(iv.lower))
        };
        Some(QuantileBounds {
            estimate: micros(fail.estimate),
            fail_lower: micros(fail.lower),
            fail_upper: micros(fail.upper),
            pass_as_canary,
            pass_as_baseline,
        })
    }

    fn posterior(&self, arm: &ArmObservation) -> Beta {
        // `validate` guarantees errors <= requests.
        let counts = Counts::new(arm.errors, arm.requests).unwrap_or(Counts::ZERO);
        self.prior.update(counts)
    }
}

struct QuantileBounds {
    estimate: f64,
    fail_lower: f64,
    fail_upper: f64,
    pass_as_canary: f64,
    pass_as_baseline: f64,
}

/// Sample-ratio-mismatch p-value (Pearson's χ², via `bayes_ab::srm_check`) of `canary`
/// canary requests and `baseline` baseline requests when the canary should get
/// `canary_percent` % of them; `None` without traffic or at 0 % or 100 %.
///
/// ```
/// // 10 % expected, 1,000 of 10,000 observed: no mismatch.
/// assert!(canary::srm_p_value(1_000, 9_000, 10).unwrap() > 0.99);
/// // 1,300 of 10,000: a broken router.
/// assert!(canary::srm_p_value(1_300, 8_700, 10).unwrap() < 1e-9);
/// ```
#[must_use]
pub fn srm_p_value(canary: u64, baseline: u64, canary_percent: u8) -> Option<f64> {
    if canary_percent == 0 || canary_percent >= 100 {
        return None;
    }
    let canary_bp = u32::from(canary_percent) * 100;
    let split = TrafficSplit::new(vec![10_000 - canary_bp, canary_bp]).ok()?;
    srm_check(&[baseline, canary], &split)
        .ok()
        .map(|c| c.p_value)
}

/// What one arm served during the observed window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ArmObservation {
    /// Requests served.
    pub requests: u64,
    /// Requests that failed (at most `requests`).
    pub errors: u64,
    /// Latencies, if latency checks are configured.
    pub latency: Option<LatencySketch>,
}

impl ArmObservation {
    /// Pre-aggregated counts, no latencies.
    #[must_use]
    pub fn counts(requests: u64, errors: u64) -> Self {
        ArmObservation {
            requests,
            errors,
            latency: None,
        }
    }

    /// Adds a latency sketch.
    #[must_use]
    pub fn with_latency(mut self, sketch: LatencySketch) -> Self {
        self.latency = Some(sketch);
        self
    }

    /// Observed error rate (0 without requests).
    #[must_use]
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        #[allow(clippy::cast_precision_loss)]
        let rate = self.errors as f64 / self.requests as f64;
        rate
    }
}

/// What a health check looks at: the canary's and (optionally) the baseline's traffic over
/// the window the caller chose — normally since the current step started
/// ([`Rollout::step_started_at`](crate::Rollout::step_started_at)), so the step's minimum
/// sample is a sample of this step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observations {
    /// The canary arm.
    pub canary: ArmObservation,
    /// The baseline (stable) arm; needed by relative limits and the SRM check.
    pub baseline: Option<ArmObservation>,
    /// Raw samples for the Mann-Whitney judge, if one is configured.
    pub samples: Vec<MetricSamples>,
}

impl Observations {
    /// Canary and baseline.
    #[must_use]
    pub fn new(canary: ArmObservation, baseline: ArmObservation) -> Self {
        Observations {
            canary,
            baseline: Some(baseline),
            samples: Vec::new(),
        }
    }

    /// The canary alone (absolute limits only).
    #[must_use]
    pub fn canary_only(canary: ArmObservation) -> Self {
        Observations {
            canary,
            baseline: None,
            samples: Vec::new(),
        }
    }

    /// Adds raw samples for the Mann-Whitney judge.
    #[must_use]
    pub fn with_samples(mut self, samples: Vec<MetricSamples>) -> Self {
        self.samples = samples;
        self
    }

    fn validate(&self) -> Result<()> {
        for (arm, o) in [
            ("canary", Some(&self.canary)),
            ("baseline", self.baseline.as_ref()),
        ] {
            if let Some(o) = o
                && o.errors > o.requests
            {
                return Err(CanaryError::InvalidObservation {
                    reason: format!("{arm}: {} errors exceed {} requests", o.errors, o.requests),
                });
            }
        }
        Ok(())
    }
}

/// One check's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CheckVerdict {
    /// Not enough data to judge.
    NoData,
    /// Confidently within its limit.
    Pass,
    /// Confidently beyond its limit.
    Fail,
    /// Neither.
    Inconclusive,
}

/// One check's result with its figures.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricResult {
    /// The check's name.
    pub name: Arc<str>,
    /// Its verdict.
    pub verdict: CheckVerdict,
    /// Whether the check is critical.
    pub critical: bool,
    /// The canary's observed value (error rate, or the latency quantile in µs).
    pub observed: f64,
    /// The limit the value was held to (for relative limits: the baseline's value times
    /// `1 + increase`).
    pub threshold: f64,
    /// The deciding statistic: P(breach) for error rates; the lower confidence bound of the
    /// quantile (absolute) or of the canary/baseline ratio (relative) for latencies.
    pub statistic: f64,
}

impl MetricResult {
    fn no_data(check: &MetricCheck) -> Self {
        MetricResult {
            name: Arc::clone(&check.name),
            verdict: CheckVerdict::NoData,
            critical: check.critical,
            observed: f64::NAN,
            threshold: f64::NAN,
            statistic: f64::NAN,
        }
    }
}

/// The overall verdict of one health check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Verdict {
    /// Below the minimum sample (or a check lacks its data): hold, never fail.
    InsufficientData,
    /// Every check passed.
    Healthy,
    /// No check failed but some are undecided (or the traffic split is off).
    Inconclusive,
    /// A check failed.
    Unhealthy,
    /// A critical check failed: roll back at once.
    Critical,
}

impl Verdict {
    /// Stable lower-case name (used in the trail).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::InsufficientData => "insufficient_data",
            Verdict::Healthy => "healthy",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Unhealthy => "unhealthy",
            Verdict::Critical => "critical",
        }
    }

    /// Parses [`Verdict::as_str`].
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "insufficient_data" => Verdict::InsufficientData,
            "healthy" => Verdict::Healthy,
            "inconclusive" => Verdict::Inconclusive,
            "unhealthy" => Verdict::Unhealthy,
            "critical" => Verdict::Critical,
            _ => return None,
        })
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything one health check found.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct HealthReport {
    /// The overall verdict.
    pub verdict: Verdict,
    /// Canary requests judged.
    pub canary_requests: u64,
    /// Baseline requests judged, if a baseline was observed.
    pub baseline_requests: Option<u64>,
    /// Per-check results, in policy order.
    pub metrics: Vec<MetricResult>,
    /// P-value of the traffic split, when checked.
    pub srm_p_value: Option<f64>,
    /// Whether the split is a sample-ratio mismatch.
    pub sample_ratio_mismatch: bool,
    /// The Mann-Whitney judge's report, when it ran.
    pub judge: Option<JudgeReport>,
}

impl HealthReport {
    /// A one-line explanation: the failing (or undecided) checks and their figures.
    #[must_use]
    pub fn reason(&self) -> String {
        use fmt::Write as _;
        let mut out = String::new();
        let wanted = match self.verdict {
            Verdict::Critical | Verdict::Unhealthy => CheckVerdict::Fail,
            Verdict::Inconclusive => CheckVerdict::Inconclusive,
            Verdict::InsufficientData => CheckVerdict::NoData,
            Verdict::Healthy => CheckVerdict::Pass,
        };
        if self.verdict == Verdict::InsufficientData {
            let _ = write!(out, "{} canary requests", self.canary_requests);
        }
        for m in self.metrics.iter().filter(|m| m.verdict == wanted) {
            if !out.is_empty() {
                out.push_str("; ");
            }
            if m.verdict == CheckVerdict::NoData {
                let _ = write!(out, "{}: no data yet", m.name);
            } else {
                let _ = write!(
                    out,
                    "{} {:?}: observed {:.6} vs limit {:.6} (statistic {:.4})",
                    m.name, m.verdict, m.observed, m.threshold, m.statistic
                );
            }
        }
        if self.sample_ratio_mismatch {
            if !out.is_empty() {
                out.push_str("; ");
            }
            let _ = write!(
                out,
                "sample ratio mismatch (p = {:.2e})",
                self.srm_p_value.unwrap_or(0.0)
            );
        }
        if let Some(j) = &self.judge {
            if !out.is_empty() {
                out.push_str("; ");
            }
            let _ = write!(out, "judge score {:.1} ({:?})", j.score, j.class);
        }
        if out.is_empty() {
            let _ = write!(
                out,
                "{} with {} canary requests",
                self.verdict, self.canary_requests
            );
        }
        out
    }
}
