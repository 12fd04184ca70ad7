//! Judging observations against a policy: per-check verdicts on the Beta posterior (error
//! rates) or an order-statistic interval (latency quantiles), the sample-ratio check, the
//! optional Mann-Whitney judge, and the overall verdict.

use std::sync::Arc;

use bayes_ab::{Beta, Counts, LatencySketch, TrafficSplit, srm_check};

use super::check::{Baseline, Limit, MetricCheck, MetricKind};
use super::observations::{ArmObservation, Observations};
use super::policy::HealthPolicy;
use super::report::{CheckVerdict, HealthReport, MetricResult, Verdict};
#[cfg(doc)]
use crate::CanaryError;
use crate::error::Result;
use crate::mann_whitney::{JudgeReport, ScoreClass};
use crate::plan::Step;
use crate::stats::prob_relative_breach;

impl HealthPolicy {
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

        // Dry-run checks are reported, never counted.
        let counted = || metrics.iter().filter(|m| !m.dry_run);
        let any = |v: CheckVerdict| counted().any(|m| m.verdict == v);
        let critical_fail = counted().any(|m| m.critical && m.verdict == CheckVerdict::Fail)
            || judge.as_ref().is_some_and(JudgeReport::critical_failed);
        let judge_class = judge.as_ref().map(|j| j.class);
        let verdict = if critical_fail {
            Verdict::Critical
        } else if any(CheckVerdict::Fail) || judge_class == Some(ScoreClass::Fail) {
            Verdict::Unhealthy
        } else if !enough
            || any(CheckVerdict::NoData)
            || judge_class == Some(ScoreClass::InsufficientData)
        {
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
            fresh_baseline_requests: obs.fresh_baseline.as_ref().map(|b| b.requests),
            metrics,
            srm_p_value,
            sample_ratio_mismatch: srm,
            judge,
        })
    }

    fn judge_check(&self, check: &MetricCheck, obs: &Observations) -> MetricResult {
        match check.kind {
            MetricKind::ErrorRate => self.judge_error_rate(check, obs),
            MetricKind::Latency { quantile } => self.judge_latency(check, quantile, obs),
        }
    }

    /// An error-rate check: P(breach) on the canary's Beta posterior against the limit (or
    /// against the baseline's posterior, for a relative limit).
    fn judge_error_rate(&self, check: &MetricCheck, obs: &Observations) -> MetricResult {
        let base = baseline_of(check, obs);
        let limit = check.limit;
        let canary = self.posterior(&obs.canary);
        let observed = obs.canary.error_rate();
        let (p_breach, threshold) = match limit {
            Limit::Absolute(max) => (canary.sf(max), max),
            Limit::RelativeToBaseline(r) => {
                let Some(b) = base.filter(|b| b.requests >= self.min_baseline_sample) else {
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
            dry_run: check.dry_run,
            observed,
            threshold,
            statistic: p_breach,
        }
    }

    /// A latency-quantile check: the quantile's order-statistic bounds against the limit (or
    /// against the baseline's bounds, for a relative limit).
    fn judge_latency(
        &self,
        check: &MetricCheck,
        quantile: f64,
        obs: &Observations,
    ) -> MetricResult {
        let base = baseline_of(check, obs);
        let limit = check.limit;
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
            dry_run: check.dry_run,
            observed: canary.estimate,
            threshold,
            statistic,
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

/// The baseline arm a check compares with.
fn baseline_of<'a>(check: &MetricCheck, obs: &'a Observations) -> Option<&'a ArmObservation> {
    match check.baseline {
        Baseline::Stable => obs.baseline.as_ref(),
        Baseline::Fresh => obs.fresh_baseline.as_ref(),
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
