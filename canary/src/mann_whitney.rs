//! A Kayenta-style judge: a Mann-Whitney U test per metric on raw samples, beside it a
//! spread test and, for zero-heavy metrics, a test of the share of non-zero values; and a
//! weighted score over all metrics.

use serde::{Deserialize, Serialize};
use statrs::function::erf::erfc;

use crate::error::{CanaryError, Result};
use crate::spread::{ProportionTest, SpreadTest, brown_forsythe, nonzero_shares};

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
    /// Baseline values (the stable version's, or a freshly started baseline's).
    pub baseline: Vec<f64>,
    /// Canary values.
    pub canary: Vec<f64>,
    /// Which change is a regression.
    pub direction: Direction,
    /// Relative weight in the score (> 0).
    pub weight: f64,
    /// A critical metric that fails makes the whole score 0.
    pub critical: bool,
    /// A dry-run metric is judged and reported (and written to the trail) but never counts:
    /// not in the score, never critical, never insufficient data. For trying a new metric
    /// out on real rollouts before trusting it.
    #[serde(default)]
    pub dry_run: bool,
}

impl MetricSamples {
    /// A metric where an increase is a regression, weight 1, not critical, not dry-run.
    #[must_use]
    pub fn new(name: impl Into<String>, baseline: Vec<f64>, canary: Vec<f64>) -> Self {
        MetricSamples {
            name: name.into(),
            baseline,
            canary,
            direction: Direction::Increase,
            weight: 1.0,
            critical: false,
            dry_run: false,
        }
    }

    /// Makes the metric dry-run: judged and recorded, never acted on.
    #[must_use]
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
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
    /// Same location, but a significantly larger spread than the baseline (the tail grew).
    Spread,
    /// Too few samples, or too few non-zero values of a zero-heavy metric, to judge: never a
    /// pass.
    InsufficientData,
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
    /// No failure, but a metric that counts could not be judged: hold, never pass.
    InsufficientData,
}

/// How the judge saw one metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricJudgement {
    /// The metric's name.
    pub name: String,
    /// Its class.
    pub class: MetricClass,
    /// The Mann-Whitney test (for a zero-heavy metric: of its non-zero values); `None` when
    /// there was too little data.
    pub shift: Option<MannWhitney>,
    /// The Brown-Forsythe spread test (of the non-zero values of a zero-heavy metric);
    /// `None` when off or with too little data.
    pub spread: Option<SpreadTest>,
    /// For a zero-heavy metric: the test of the share of non-zero values.
    pub nonzero: Option<ProportionTest>,
    /// Whether the metric is critical.
    #[serde(default)]
    pub critical: bool,
    /// Whether the metric was dry-run (reported, not counted).
    pub dry_run: bool,
}

/// The judge's verdict: per-metric judgements and the 0–100 score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[must_use]
pub struct JudgeReport {
    /// Weighted share of passing metrics among those judged and not dry-run, 0–100 (100
    /// when none was).
    pub score: f64,
    /// Pass / marginal / fail from the score; insufficient data when a counting metric
    /// could not be judged and none failed.
    pub class: ScoreClass,
    /// Per metric, in input order (dry-run ones included).
    pub metrics: Vec<MetricJudgement>,
}

impl JudgeReport {
    /// Whether a critical metric that counts (not dry-run) failed.
    #[must_use]
    pub fn critical_failed(&self) -> bool {
        self.metrics.iter().any(|j| {
            j.critical
                && !j.dry_run
                && !matches!(j.class, MetricClass::Pass | MetricClass::InsufficientData)
        })
    }
}

/// A Kayenta-style judge, with what Kayenta misses. Each metric gets a two-sided
/// Mann-Whitney U test (a shift in its bad direction fails it) and a one-sided
/// Brown-Forsythe test (a larger spread fails it, whatever the median does). A metric with
/// fewer than `min_samples` values in an arm is *insufficient data*. A zero-heavy metric (at
/// least `zero_share` of its pooled values exactly 0) is judged in two parts, each at α/2:
/// the share of non-zero values (two-proportion test) and the non-zero values themselves
/// (Mann-Whitney, and the spread test once each arm has `min_samples` of them); with fewer
/// than `min_samples` non-zero values in both arms together it is insufficient data. The score is the
/// weighted share of passing metrics among those judged (dry-run metrics excluded; 0 if a
/// critical metric fails); pass at ≥ 95, marginal at ≥ 75 by default.
///
/// ```
/// use canary::{MannWhitneyJudge, MetricClass, MetricSamples, ScoreClass};
///
/// let judge = MannWhitneyJudge::new(0.01, 95.0, 75.0)?;
/// let base: Vec<f64> = (0..300).map(|i| f64::from(i % 97)).collect();
/// let report = judge.judge(&[
///     MetricSamples::new("latency", base.clone(), base.clone()),
///     MetricSamples::new("cpu", base.clone(), base.iter().map(|x| x * 2.0).collect()),
/// ])?;
/// assert_eq!(report.score, 50.0);
/// assert_eq!(report.class, ScoreClass::Fail);
///
/// // The same median, twice the spread: Mann-Whitney alone passes it, the spread test does not.
/// let wide: Vec<f64> = base.iter().map(|x| 48.0 + 2.0 * (x - 48.0)).collect();
/// let report = judge.judge(&[MetricSamples::new("latency", base.clone(), wide)])?;
/// assert_eq!(report.metrics[0].class, MetricClass::Spread);
/// assert!(report.metrics[0].shift.unwrap().p_value > 0.5);
///
/// // Three samples are not evidence of health.
/// let report = judge.judge(&[MetricSamples::new("latency", vec![1.0; 3], vec![1.0; 3])])?;
/// assert_eq!(report.class, ScoreClass::InsufficientData);
/// # Ok::<(), canary::CanaryError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MannWhitneyJudge {
    alpha: f64,
    pass_score: f64,
    marginal_score: f64,
    // Judges serialized before these settings existed get the defaults.
    #[serde(default = "default_spread_alpha")]
    spread_alpha: Option<f64>,
    #[serde(default = "default_min_samples")]
    min_samples: usize,
    #[serde(default = "default_zero_share")]
    zero_share: f64,
}

fn default_spread_alpha() -> Option<f64> {
    MannWhitneyJudge::default().spread_alpha
}

fn default_min_samples() -> usize {
    JUDGE_MIN_SAMPLES_DEFAULT
}

fn default_zero_share() -> f64 {
    MannWhitneyJudge::default().zero_share
}

/// Fewest samples per arm (by default) before the judge judges a metric.
pub const JUDGE_MIN_SAMPLES_DEFAULT: usize = 20;

impl Default for MannWhitneyJudge {
    /// α = 0.05 for both the shift and the spread test, pass ≥ 95, marginal ≥ 75, at least
    /// [`JUDGE_MIN_SAMPLES_DEFAULT`] samples per arm, zero-heavy from half zeros.
    fn default() -> Self {
        MannWhitneyJudge {
            alpha: 0.05,
            pass_score: 95.0,
            marginal_score: 75.0,
            spread_alpha: Some(0.05),
            min_samples: JUDGE_MIN_SAMPLES_DEFAULT,
            zero_share: 0.5,
        }
    }
}

impl MannWhitneyJudge {
    /// A judge with significance level `alpha` (for the shift and the spread test) and the
    /// two score thresholds.
    ///
    /// # Errors
    /// [`CanaryError::InvalidPolicy`] unless `0 < alpha < 1` and
    /// `0 ≤ marginal_score ≤ pass_score ≤ 100`.
    pub fn new(alpha: f64, pass_score: f64, marginal_score: f64) -> Result<Self> {
        check_alpha("mann_whitney.alpha", alpha)?;
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
            spread_alpha: Some(alpha),
            ..MannWhitneyJudge::default()
        })
    }

    /// Sets the spread test's significance level (`None`: no spread test, Kayenta's judge).
    ///
    /// # Errors
    /// [`CanaryError::InvalidPolicy`] unless `0 < alpha < 1`.
    pub fn with_spread_alpha(mut self, alpha: Option<f64>) -> Result<Self> {
        if let Some(a) = alpha {
            check_alpha("mann_whitney.spread_alpha", a)?;
        }
        self.spread_alpha = alpha;
        Ok(self)
    }

    /// Sets the fewest samples per arm before a metric is judged, and the pooled share of
    /// zeros from which a metric is judged as zero-heavy.
    ///
    /// # Errors
    /// [`CanaryError::InvalidPolicy`] unless `min_samples ≥ 2` and `0 < zero_share ≤ 1`.
    pub fn with_data_limits(mut self, min_samples: usize, zero_share: f64) -> Result<Self> {
        if min_samples < 2 {
            return Err(CanaryError::InvalidPolicy {
                field: "mann_whitney.min_samples",
                reason: format!("must be at least 2, got {min_samples}"),
            });
        }
        if !(zero_share > 0.0 && zero_share <= 1.0) {
            return Err(CanaryError::InvalidPolicy {
                field: "mann_whitney.zero_share",
                reason: format!("must be within (0, 1], got {zero_share}"),
            });
        }
        self.min_samples = min_samples;
        self.zero_share = zero_share;
        Ok(self)
    }

    /// Significance level of each metric's shift test.
    #[must_use]
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Significance level of the spread test, if it runs.
    #[must_use]
    pub fn spread_alpha(&self) -> Option<f64> {
        self.spread_alpha
    }

    /// Fewest samples per arm before a metric is judged.
    #[must_use]
    pub fn min_samples(&self) -> usize {
        self.min_samples
    }

    /// Judges every metric and scores the comparison.
    ///
    /// # Errors
    /// [`CanaryError::InvalidObservation`] for no metrics, a weight that is not finite and
    /// positive, an arm longer than [`SAMPLES_MAX`], or a sample that is not finite.
    pub fn judge(&self, metrics: &[MetricSamples]) -> Result<JudgeReport> {
        if metrics.is_empty() {
            return Err(CanaryError::InvalidObservation {
                reason: "the judge needs at least one metric".into(),
            });
        }
        let mut total = 0.0;
        let mut passed = 0.0;
        let mut critical_failed = false;
        let mut insufficient = false;
        let mut out = Vec::with_capacity(metrics.len());
        for m in metrics {
            if !(m.weight.is_finite() && m.weight > 0.0) {
                return Err(CanaryError::InvalidObservation {
                    reason: format!("metric {:?}: weight must be finite and > 0", m.name),
                });
            }
            let judged = self.judge_metric(m)?;
            if !m.dry_run {
                match judged.class {
                    MetricClass::InsufficientData => insufficient = true,
                    MetricClass::Pass => {
                        total += m.weight;
                        passed += m.weight;
                    }
                    _ => {
                        total += m.weight;
                        critical_failed |= m.critical;
                    }
                }
            }
            out.push(judged);
        }
        let score = if critical_failed {
            0.0
        } else if total > 0.0 {
            100.0 * passed / total
        } else {
            100.0
        };
        let class = if score < self.marginal_score {
            ScoreClass::Fail
        } else if insufficient {
            ScoreClass::InsufficientData
        } else if score >= self.pass_score {
            ScoreClass::Pass
        } else {
            ScoreClass::Marginal
        };
        Ok(JudgeReport {
            score,
            class,
            metrics: out,
        })
    }

    fn judge_metric(&self, m: &MetricSamples) -> Result<MetricJudgement> {
        let (b, c) = (&m.baseline, &m.canary);
        if b.len() > SAMPLES_MAX || c.len() > SAMPLES_MAX {
            return Err(CanaryError::InvalidObservation {
                reason: format!("metric {:?}: more than {SAMPLES_MAX} samples", m.name),
            });
        }
        if b.iter().chain(c).any(|x| !x.is_finite()) {
            return Err(CanaryError::InvalidObservation {
                reason: format!("metric {:?}: a sample is not finite", m.name),
            });
        }
        let mut judged = MetricJudgement {
            name: m.name.clone(),
            class: MetricClass::InsufficientData,
            shift: None,
            spread: None,
            nonzero: None,
            critical: m.critical,
            dry_run: m.dry_run,
        };
        if b.len() < self.min_samples || c.len() < self.min_samples {
            return Ok(judged);
        }
        let zeros = b.iter().chain(c).filter(|x| **x == 0.0).count();
        #[allow(clippy::cast_precision_loss)] // bounded by SAMPLES_MAX
        let zero_heavy = zeros as f64 >= self.zero_share * (b.len() + c.len()) as f64;
        let shift_class =
            |t: &MannWhitney, alpha: f64| shift_class_p(t.p_value < alpha, t.z > 0.0, m.direction);
        if !zero_heavy {
            let t = mann_whitney_u(b, c)?;
            let spread = match self.spread_alpha {
                Some(_) => Some(brown_forsythe(b, c)?),
                None => None,
            };
            judged.class = shift_class(&t, self.alpha);
            if judged.class == MetricClass::Pass
                && let (Some(s), Some(a)) = (&spread, self.spread_alpha)
                && s.p_value < a
            {
                judged.class = MetricClass::Spread;
            }
            judged.shift = Some(t);
            judged.spread = spread;
            return Ok(judged);
        }
        // Zero-heavy: the share of non-zero values, then the non-zero values themselves.
        let nz = |xs: &[f64]| xs.iter().copied().filter(|x| *x != 0.0).collect::<Vec<_>>();
        let (nb, nc) = (nz(b), nz(c));
        if nb.len() + nc.len() < self.min_samples {
            return Ok(judged);
        }
        let (alpha, spread_alpha) = (self.alpha / 2.0, self.spread_alpha.map(|a| a / 2.0));
        let share = nonzero_shares(b, c)?;
        judged.class = shift_class_p(share.p_value < alpha, share.z > 0.0, m.direction);
        judged.nonzero = Some(share);
        if !nb.is_empty() && !nc.is_empty() {
            let t = mann_whitney_u(&nb, &nc)?;
            if judged.class == MetricClass::Pass {
                judged.class = shift_class(&t, alpha);
            }
            judged.shift = Some(t);
        }
        if nb.len() >= self.min_samples
            && nc.len() >= self.min_samples
            && let Some(a) = spread_alpha
        {
            let s = brown_forsythe(&nb, &nc)?;
            if judged.class == MetricClass::Pass && s.p_value < a {
                judged.class = MetricClass::Spread;
            }
            judged.spread = Some(s);
        }
        Ok(judged)
    }
}

/// The class of a significant (or not) change up or down for a metric of `direction`.
fn shift_class_p(significant: bool, higher: bool, direction: Direction) -> MetricClass {
    match (significant, direction, higher) {
        (false, _, _) => MetricClass::Pass,
        (true, Direction::Increase | Direction::Either, true) => MetricClass::High,
        (true, Direction::Decrease | Direction::Either, false) => MetricClass::Low,
        (true, _, _) => MetricClass::Pass,
    }
}

fn check_alpha(field: &'static str, alpha: f64) -> Result<()> {
    if alpha > 0.0 && alpha < 1.0 {
        Ok(())
    } else {
        Err(CanaryError::InvalidPolicy {
            field,
            reason: format!("must be strictly between 0 and 1, got {alpha}"),
        })
    }
}
