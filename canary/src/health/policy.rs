//! The health policy: which checks run, how confident a verdict must be, and what repeated
//! results lead to.

use std::time::Duration;

use bayes_ab::Beta;
use serde::{Deserialize, Serialize};

use super::check::MetricCheck;
use crate::error::{CanaryError, Result};
use crate::mann_whitney::MannWhitneyJudge;

/// Most metric checks one policy may hold.
pub const CHECKS_MAX: usize = 32;

/// What happens when a limit is reached without a verdict (a pause that lasted too long, too
/// many metric-source errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum LimitAction {
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
/// use canary::{HealthPolicy, MetricCheck, LimitAction};
///
/// let policy = HealthPolicy::builder()
///     .check(MetricCheck::error_rate_max(0.05).critical())
///     .check(MetricCheck::error_rate_relative(0.5))
///     .fail_confidence(0.99)
///     .failure_limit(2)
///     .max_pause(Duration::from_secs(1800), LimitAction::RollBack)
///     .build()?;
/// assert_eq!(policy.failure_limit(), 2);
/// assert!(HealthPolicy::builder().build().is_err()); // no checks
/// # Ok::<(), canary::CanaryError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct HealthPolicy {
    pub(super) checks: Vec<MetricCheck>,
    pub(super) prior: Beta,
    pub(super) fail_confidence: f64,
    pub(super) pass_below: f64,
    pub(super) min_baseline_sample: u64,
    pub(super) critical_min_sample: u64,
    pub(super) failure_limit: u32,
    pub(super) total_failure_limit: u32,
    pub(super) success_limit: Option<u32>,
    pub(super) inconclusive_limit: u32,
    pub(super) max_pause: Duration,
    pub(super) pause_action: LimitAction,
    pub(super) source_error_limit: u32,
    pub(super) source_error_action: LimitAction,
    pub(super) srm_p_value: Option<f64>,
    pub(super) judge: Option<MannWhitneyJudge>,
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
    pause_action: LimitAction,
    source_error_limit: u32,
    source_error_action: LimitAction,
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
    pub fn max_pause(mut self, d: Duration, action: LimitAction) -> Self {
        self.max_pause = d;
        self.pause_action = action;
        self
    }

    /// Consecutive metric-source errors tolerated, and what happens at the limit (default 4,
    /// roll back).
    pub fn source_error_limit(mut self, n: u32, action: LimitAction) -> Self {
        self.source_error_limit = n;
        self.source_error_action = action;
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
            pause_action: self.pause_action,
            source_error_limit: self.source_error_limit,
            source_error_action: self.source_error_action,
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
            pause_action: LimitAction::RollBack,
            source_error_limit: 4,
            source_error_action: LimitAction::RollBack,
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
    pub fn pause_action(&self) -> LimitAction {
        self.pause_action
    }
    /// Consecutive metric-source errors tolerated.
    #[must_use]
    pub fn source_error_limit(&self) -> u32 {
        self.source_error_limit
    }
    /// What happens at the metric-source error limit.
    #[must_use]
    pub fn source_error_action(&self) -> LimitAction {
        self.source_error_action
    }
}
