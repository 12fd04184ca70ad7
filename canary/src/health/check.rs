//! One health check: a metric, its limit, and whether failing it rolls back at once.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

#[cfg(doc)]
use crate::LatencySketch;
use crate::error::{CanaryError, Result};

/// Longest metric-check name.
pub const CHECK_NAME_LEN_MAX: usize = 100;

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

/// Which baseline a relative limit compares the canary with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Baseline {
    /// The running stable version ([`Observations::baseline`](crate::Observations::baseline)):
    /// most traffic, but older and warmer than the canary.
    #[default]
    Stable,
    /// A freshly started baseline
    /// ([`Observations::fresh_baseline`](crate::Observations::fresh_baseline)): the stable
    /// version deployed anew at the canary's size, so start-up effects (cold caches, JIT,
    /// connection pools) are on both sides of the comparison.
    Fresh,
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
///
/// // Against a freshly started baseline; and a dry-run check, recorded but never acted on.
/// use canary::Baseline;
/// let fresh = MetricCheck::error_rate_relative(0.25).against(Baseline::Fresh);
/// assert_eq!(fresh.name(), "error_rate_vs_fresh_baseline");
/// assert!(MetricCheck::latency_max(0.99, 500_000.0).dry_run().is_dry_run());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct MetricCheck {
    pub(super) name: Arc<str>,
    pub(super) kind: MetricKind,
    pub(super) limit: Limit,
    pub(super) critical: bool,
    pub(super) dry_run: bool,
    pub(super) baseline: Baseline,
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
            dry_run: false,
            baseline: Baseline::Stable,
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

    /// Makes the check dry-run: judged, reported and written to the trail like any other,
    /// but its verdict never counts (it cannot fail, hold or pause the rollout). For trying
    /// a new limit on real rollouts before enforcing it.
    #[must_use]
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    /// Compares a relative limit with `baseline` (default [`Baseline::Stable`]). A check
    /// against [`Baseline::Fresh`] named `…_vs_baseline` is renamed `…_vs_fresh_baseline`,
    /// so both comparisons can run side by side.
    #[must_use]
    pub fn against(mut self, baseline: Baseline) -> Self {
        if baseline == Baseline::Fresh
            && let Some(stem) = self.name.strip_suffix("_vs_baseline")
        {
            self.name = format!("{stem}_vs_fresh_baseline").into();
        }
        self.baseline = baseline;
        self
    }

    /// Whether the check is dry-run.
    #[must_use]
    pub fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    /// The baseline a relative limit compares with.
    #[must_use]
    pub fn baseline(&self) -> Baseline {
        self.baseline
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

    /// Checks the name, quantile and limit; called when the policy is built.
    pub(super) fn validate(&self) -> Result<()> {
        let bad = |reason: String| {
            Err(CanaryError::InvalidPolicy {
                field: "checks",
                reason: format!("check {:?}: {reason}", self.name),
            })
        };
        if self.name.is_empty() || self.name.len() > CHECK_NAME_LEN_MAX {
            return bad(format!("the name must be 1..={CHECK_NAME_LEN_MAX} bytes"));
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
