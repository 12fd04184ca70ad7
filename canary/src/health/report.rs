//! The results of a health check: per-check verdicts, the overall verdict, the report.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::check::MetricCheck;
use crate::mann_whitney::JudgeReport;

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
    /// Whether the check is dry-run: measured and recorded, its verdict never counted.
    pub dry_run: bool,
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
    /// The result of a check that could not be judged.
    pub(super) fn no_data(check: &MetricCheck) -> Self {
        MetricResult {
            name: Arc::clone(&check.name),
            verdict: CheckVerdict::NoData,
            critical: check.critical,
            dry_run: check.dry_run,
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
    /// Requests of the freshly started baseline, if one was observed.
    pub fresh_baseline_requests: Option<u64>,
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
        for m in self
            .metrics
            .iter()
            .filter(|m| m.verdict == wanted && !m.dry_run)
        {
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
        let dry_failed: Vec<&str> = self
            .metrics
            .iter()
            .filter(|m| m.dry_run && m.verdict == CheckVerdict::Fail)
            .map(|m| &*m.name)
            .collect();
        if !dry_failed.is_empty() {
            if !out.is_empty() {
                out.push_str("; ");
            }
            let _ = write!(
                out,
                "dry run failed (not acted on): {}",
                dry_failed.join(", ")
            );
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
