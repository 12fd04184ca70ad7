//! A Kayenta-style judge: a Mann-Whitney U test per metric on raw samples, and a weighted
//! score over all metrics.

use serde::{Deserialize, Serialize};
use statrs::function::erf::erfc;

use crate::error::{CanaryError, Result};

/// Most samples per arm the judge accepts for one metric (ranking is `O(n log n)`).
pub const SAMPLES_MAX: usize = 1_000_000;

/// The result of a two-sided Mann-Whitney U test of canary against baseline.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[must_use]
pub struct MannWhitney {
    /// U statistic of the canary sample (number of (canary, baseline) pairs where the canary
    /// value is larger, ties counting one half).
    pub u: f64,
    /// Standardised statistic (normal approximation with tie and continuity corrections);
    /// positive when the canary tends to be larger.
    pub z: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// Probability that a random canary value exceeds a random baseline value (ties half):
    /// `U / (n_canary · n_baseline)`; 0.5 means no shift.
    pub common_language_effect: f64,
}

/// Mann-Whitney U test of `canary` against `baseline`.
///
/// ```
/// use canary::mann_whitney_u;
///
/// let baseline: Vec<f64> = (0..200).map(|i| f64::from(i % 50)).collect();
/// let slower: Vec<f64> = baseline.iter().map(|x| x + 10.0).collect();
/// let t = mann_whitney_u(&baseline, &slower)?;
/// assert!(t.p_value < 1e-6 && t.z > 0.0);
/// let same = mann_whitney_u(&baseline, &baseline)?;
/// assert!(same.p_value > 0.99);
/// # Ok::<(), canary::CanaryError>(())
/// ```
///
/// # Errors
/// [`CanaryError::InvalidObservation`] when either sample is empty or longer than
/// [`SAMPLES_MAX`], or holds a NaN.
pub fn mann_whitney_u(baseline: &[f64], canary: &[f64]) -> Result<MannWhitney> {
    let bad = |reason: String| Err(CanaryError::InvalidObservation { reason });
    if baseline.is_empty() || canary.is_empty() {
        return bad("Mann-Whitney U needs at least one sample in each arm".into());
    }
    if baseline.len() > SAMPLES_MAX || canary.len() > SAMPLES_MAX {
        return bad(format!("more than {SAMPLES_MAX} samples in one arm"));
    }
    if baseline.iter().chain(canary).any(|x| x.is_nan()) {
        return bad("a sample is NaN".into());
    }
    let mut all: Vec<(f64, bool)> = Vec::with_capacity(baseline.len() + canary.len());
    all.extend(baseline.iter().map(|&x| (x, false)));
    all.extend(canary.iter().map(|&x| (x, true)));
    all.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));

    #[allow(clippy::cast_precision_loss)] // sample counts are bounded by SAMPLES_MAX
    let (n_c, n_b, n) = (canary.len() as f64, baseline.len() as f64, all.len() as f64);
    let mut rank_sum_canary = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i + 1;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j share their average.
        #[allow(clippy::cast_precision_loss)]
        let (first, t) = ((i + 1) as f64, (j - i) as f64);
        let average = first + (t - 1.0) / 2.0;
        let canaries = all[i..j].iter().filter(|(_, c)| *c).count();
        #[allow(clippy::cast_precision_loss)]
        {
            rank_sum_canary += average * canaries as f64;
        }
        tie_term += t * t * t - t;
        i = j;
    }
    let u = rank_sum_canary - n_c * (n_c + 1.0) / 2.0;
    let mean = n_c * n_b / 2.0;
    let variance = if n > 1.0 {
        n_c * n_b / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)))
    } else {
        0.0
    };
    let (z, p_value) = if variance <= 0.0 {
        (0.0, 1.0)
    } else {
        let diff = u - mean;
        let corrected = (diff.abs() - 0.5).max(0.0).copysign(diff);
        let z = corrected / variance.sqrt();
        (z, erfc(z.abs() / std::f64::consts::SQRT_2).clamp(0.0, 1.0))
    };
    Ok(MannWhitney {
        u,
        z,
        p_value,
        common_language_effect: u / (n_c * n_b),
    })
}

/// Which direction of change is a regression for a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Direction {
    /// Larger canary values are bad (latency, errors, memory).
    Increase,
    /// Smaller canary values are bad (throughput, conversions).
    Decrease,
    /// Any significant change is bad.
    Either,
}

/// Raw samples of one metric for both arms, as given to the [`MannWhitneyJudge`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricSamples {
    /// Metric name (for reports and the trail).
    pub name: String,
    /// Baseline (stable) values.
    pub baseline: Vec<f64>,
    /// Canary values.
    pub canary: Vec<f64>,
    /// Which change is a regression.
    pub direction: Direction,
    /// Relative weight in the score (> 0).
    pub weight: f64,
    /// A critical metric that fails makes the whole score 0.
    pub critical: bool,
}

impl MetricSamples {
    /// A metric where an increase is a regression, weight 1, not critical.
    #[must_use]
    pub fn new(name: impl Into<String>, baseline: Vec<f64>, canary: Vec<f64>) -> Self {
        MetricSamples {
            name: name.into(),
            baseline,
            canary,
            direction: Direction::Increase,
            weight: 1.0,
            critical: false,
        }
    }
}

/// How one metric was classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MetricClass {
    /// No significant regression.
    Pass,
    /// Significantly higher than the baseline, and that is bad.
    High,
    /// Significantly lower than the baseline, and that is bad.
    Low,
}

/// Classification of the whole comparison from its score.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ScoreClass {
    /// Score ≥ the pass score.
    Pass,
    /// Score ≥ the marginal score but below the pass score.
    Marginal,
    /// Score below the marginal score (or a critical metric failed).
    Fail,
}

/// The judge's verdict: per-metric classes and the 0–100 score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[must_use]
pub struct JudgeReport {
    /// Weighted share of passing metrics, 0–100.
    pub score: f64,
    /// Pass / marginal / fail from the score.
    pub class: ScoreClass,
    /// Per metric: name, test result and class.
    pub metrics: Vec<(String, MannWhitney, MetricClass)>,
}

/// A Kayenta-style judge: each metric passes unless a Mann-Whitney U test finds a
/// significant shift in its bad direction; the score is the weighted share of passing
/// metrics (0 if a critical metric fails); pass at ≥ 95, marginal at ≥ 75 by default.
///
/// ```
/// use canary::{MannWhitneyJudge, MetricSamples, ScoreClass};
///
/// let judge = MannWhitneyJudge::new(0.01, 95.0, 75.0)?;
/// let base: Vec<f64> = (0..300).map(|i| f64::from(i % 97)).collect();
/// let report = judge.judge(&[
///     MetricSamples::new("latency", base.clone(), base.clone()),
///     MetricSamples::new("cpu", base.clone(), base.iter().map(|x| x * 2.0).collect()),
/// ])?;
/// assert_eq!(report.score, 50.0);
/// assert_eq!(report.class, ScoreClass::Fail);
/// # Ok::<(), canary::CanaryError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MannWhitneyJudge {
    alpha: f64,
    pass_score: f64,
    marginal_score: f64,
}

impl Default for MannWhitneyJudge {
    /// α = 0.05, pass ≥ 95, marginal ≥ 75.
    fn default() -> Self {
        MannWhitneyJudge {
            alpha: 0.05,
            pass_score: 95.0,
            marginal_score: 75.0,
        }
    }
}

impl MannWhitneyJudge {
    /// A judge with significance level `alpha` and the two score thresholds.
    ///
    /// # Errors
    /// [`CanaryError::InvalidPolicy`] unless `0 < alpha < 1` and
    /// `0 ≤ marginal_score ≤ pass_score ≤ 100`.
    pub fn new(alpha: f64, pass_score: f64, marginal_score: f64) -> Result<Self> {
        if !(alpha > 0.0 && alpha < 1.0) {
            return Err(CanaryError::InvalidPolicy {
                field: "mann_whitney.alpha",
                reason: format!("must be strictly between 0 and 1, got {alpha}"),
            });
        }
        if !(0.0..=100.0).contains(&pass_score)
            || !(0.0..=100.0).contains(&marginal_score)
            || marginal_score > pass_score
        {
            return Err(CanaryError::InvalidPolicy {
                field: "mann_whitney.scores",
                reason: format!(
                    "need 0 <= marginal ({marginal_score}) <= pass ({pass_score}) <= 100"
                ),
            });
        }
        Ok(MannWhitneyJudge {
            alpha,
            pass_score,
            marginal_score,
        })
    }

    /// Significance level of each metric's test.
    #[must_use]
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Judges every metric and scores the comparison.
    ///
    /// # Errors
    /// [`CanaryError::InvalidObservation`] for no metrics, a weight that is not finite and
    /// positive, or samples [`mann_whitney_u`] refuses.
    pub fn judge(&self, metrics: &[MetricSamples]) -> Result<JudgeReport> {
        if metrics.is_empty() {
            return Err(CanaryError::InvalidObservation {
                reason: "the judge needs at least one metric".into(),
            });
        }
        let mut total = 0.0;
        let mut passed = 0.0;
        let mut critical_failed = false;
        let mut out = Vec::with_capacity(metrics.len());
        for m in metrics {
            if !(m.weight.is_finite() && m.weight > 0.0) {
                return Err(CanaryError::InvalidObservation {
                    reason: format!("metric {:?}: weight must be finite and > 0", m.name),
                });
            }
            let t = mann_whitney_u(&m.baseline, &m.canary)?;
            let significant = t.p_value < self.alpha;
            let class = match (significant, m.direction, t.z > 0.0) {
                (false, _, _) => MetricClass::Pass,
                (true, Direction::Increase | Direction::Either, true) => MetricClass::High,
                (true, Direction::Decrease | Direction::Either, false) => MetricClass::Low,
                (true, _, _) => MetricClass::Pass,
            };
            total += m.weight;
            if class == MetricClass::Pass {
                passed += m.weight;
            } else if m.critical {
                critical_failed = true;
            }
            out.push((m.name.clone(), t, class));
        }
        let score = if critical_failed {
            0.0
        } else {
            100.0 * passed / total
        };
        let class = if score >= self.pass_score {
            ScoreClass::Pass
        } else if score >= self.marginal_score {
            ScoreClass::Marginal
        } else {
            ScoreClass::Fail
        };
        Ok(JudgeReport {
            score,
            class,
            metrics: out,
        })
    }
}
