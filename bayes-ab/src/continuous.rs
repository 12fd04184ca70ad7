//! Continuous metrics (revenue per user, latency means) from sufficient statistics.

use serde::{Deserialize, Serialize};

use crate::beta::Interval;
use crate::error::{BayesError, Result, check_probability};
use crate::special::{normal_cdf, normal_quantile};
use crate::two_arm::normal_losses;

/// Sufficient statistics of a continuous metric: count, mean and the sum of squared
/// deviations from the mean (`M₂ = Σ(x − x̄)²`), updated by Welford's method and merged by
/// Chan et al.'s formula, so the variance keeps its digits when the mean is large against the
/// spread (values 1e8 + [0, 1, 2, 3] give 5/3 exactly, where `Σx² − n x̄²` gave 2.667).
/// Mergeable: statistics of two partial streams combine exactly as if recorded in one.
///
/// ```
/// use bayes_ab::MeanStats;
///
/// let mut s = MeanStats::default();
/// for x in [1.0, 2.0, 3.0, 4.0] {
///     s.record(x)?;
/// }
/// assert_eq!(s.mean()?, 2.5);
/// assert!((s.variance()? - 5.0 / 3.0).abs() < 1e-12);
///
/// let mut big = MeanStats::default();
/// for x in [1e8, 1e8 + 1.0, 1e8 + 2.0, 1e8 + 3.0] {
///     big.record(x)?;
/// }
/// assert!((big.variance()? - 5.0 / 3.0).abs() < 1e-12);
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawMeanStats", into = "RawMeanStats")]
pub struct MeanStats {
    count: u64,
    mean: f64,
    m2: f64,
}

/// The serialized form: `{count, mean, m2}`. States written before Welford's update
/// (`{count, sum, sum_squares}`) still read, through [`MeanStats::from_sums`].
#[derive(Serialize, Deserialize)]
struct RawMeanStats {
    count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    m2: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sum: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sum_squares: Option<f64>,
}

impl TryFrom<RawMeanStats> for MeanStats {
    type Error = BayesError;
    fn try_from(raw: RawMeanStats) -> Result<Self> {
        match (raw.mean, raw.m2, raw.sum, raw.sum_squares) {
            (Some(mean), Some(m2), None, None) => MeanStats::from_moments(raw.count, mean, m2),
            (None, None, Some(sum), Some(sum_squares)) => {
                MeanStats::from_sums(raw.count, sum, sum_squares)
            }
            _ => Err(BayesError::InvalidParameter {
                name: "mean statistics",
                reason: "need either mean and m2, or sum and sum_squares",
            }),
        }
    }
}

impl From<MeanStats> for RawMeanStats {
    fn from(s: MeanStats) -> Self {
        RawMeanStats {
            count: s.count,
            mean: Some(s.mean),
            m2: Some(s.m2),
            sum: None,
            sum_squares: None,
        }
    }
}

impl MeanStats {
    /// Statistics from count, mean and `M₂ = Σ(x − x̄)²` (the sum of squared deviations, i.e.
    /// `(n − 1)` times the sample variance): the stable form.
    ///
    /// # Errors
    /// [`BayesError::InvalidParameter`] for a non-finite mean or `M₂`, a negative `M₂`, or a
    /// non-zero mean or `M₂` with a zero count.
    pub fn from_moments(count: u64, mean: f64, m2: f64) -> Result<Self> {
        if !(mean.is_finite() && m2.is_finite() && m2 >= 0.0) {
            return Err(BayesError::InvalidParameter {
                name: "moments",
                reason: "must be finite, with a non-negative sum of squared deviations",
            });
        }
        if count == 0 && (mean != 0.0 || m2 != 0.0) {
            return Err(BayesError::InvalidParameter {
                name: "moments",
                reason: "must be zero when the count is zero",
            });
        }
        Ok(Self { count, mean, m2 })
    }

    /// Statistics from count, Σx and Σx². Prefer [`MeanStats::from_moments`]: `Σx² − (Σx)²/n`
    /// loses the variance's digits when the mean is large against the spread (this
    /// constructor cannot recover what the sums already lost).
    ///
    /// # Errors
    /// [`BayesError::InvalidParameter`] for non-finite sums, a negative Σx², or Σx² below
    /// (Σx)²/n by more than rounding (impossible for real data).
    pub fn from_sums(count: u64, sum: f64, sum_squares: f64) -> Result<Self> {
        if !(sum.is_finite() && sum_squares.is_finite() && sum_squares >= 0.0) {
            return Err(BayesError::InvalidParameter {
                name: "sums",
                reason: "must be finite, with a non-negative sum of squares",
            });
        }
        if count == 0 {
            if sum != 0.0 || sum_squares != 0.0 {
                return Err(BayesError::InvalidParameter {
                    name: "sums",
                    reason: "must be zero when the count is zero",
                });
            }
            return Ok(Self::default());
        }
        #[allow(clippy::cast_precision_loss)]
        let n = count as f64;
        if sum_squares < sum * sum / n * (1.0 - 1e-9) - 1e-12 {
            return Err(BayesError::InvalidParameter {
                name: "sum_squares",
                reason: "is below (sum)^2 / count",
            });
        }
        let mean = sum / n;
        Ok(Self {
            count,
            mean,
            m2: (sum_squares - sum * mean).max(0.0),
        })
    }

    /// Adds one observation (Welford's update).
    ///
    /// # Errors
    /// [`BayesError::InvalidParameter`] for a non-finite value; [`BayesError::CountOverflow`].
    pub fn record(&mut self, x: f64) -> Result<()> {
        if !x.is_finite() {
            return Err(BayesError::InvalidParameter {
                name: "observation",
                reason: "must be finite",
            });
        }
        self.count = self.count.checked_add(1).ok_or(BayesError::CountOverflow)?;
        #[allow(clippy::cast_precision_loss)]
        let n = self.count as f64;
        let delta = x - self.mean;
        self.mean += delta / n;
        self.m2 += delta * (x - self.mean);
        Ok(())
    }

    /// The statistics of both streams (Chan, Golub and LeVeque's pairwise update).
    ///
    /// # Errors
    /// [`BayesError::CountOverflow`].
    pub fn merge(self, other: MeanStats) -> Result<MeanStats> {
        let count = self
            .count
            .checked_add(other.count)
            .ok_or(BayesError::CountOverflow)?;
        if other.count == 0 {
            return Ok(self);
        }
        if self.count == 0 {
            return Ok(other);
        }
        #[allow(clippy::cast_precision_loss)]
        let (na, nb, n) = (self.count as f64, other.count as f64, count as f64);
        let delta = other.mean - self.mean;
        Ok(MeanStats {
            count,
            mean: self.mean + delta * (nb / n),
            m2: self.m2 + other.m2 + delta * delta * (na * nb / n),
        })
    }

    /// Observations.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sample mean.
    ///
    /// # Errors
    /// [`BayesError::InsufficientData`] with no observations.
    pub fn mean(&self) -> Result<f64> {
        if self.count == 0 {
            return Err(BayesError::InsufficientData {
                what: "a mean needs at least one observation",
            });
        }
        Ok(self.mean)
    }

    /// `M₂ = Σ(x − x̄)²`, the sum of squared deviations from the mean.
    #[must_use]
    pub fn sum_squared_deviations(&self) -> f64 {
        self.m2
    }

    /// Unbiased sample variance `M₂ / (n − 1)`.
    ///
    /// # Errors
    /// [`BayesError::InsufficientData`] with fewer than two observations.
    pub fn variance(&self) -> Result<f64> {
        if self.count < 2 {
            return Err(BayesError::InsufficientData {
                what: "a variance needs at least two observations",
            });
        }
        #[allow(clippy::cast_precision_loss)]
        let n = self.count as f64;
        Ok(self.m2 / (n - 1.0))
    }
}

/// The comparison of a continuous metric between champion (A) and challenger (B), from the
/// Gaussian posterior of each mean (flat prior; `N(x̄, s²/n)`, accurate for the sample sizes of
/// A/B tests).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[must_use]
pub struct MeanComparison {
    /// Posterior mean of `μ_b − μ_a`.
    pub difference: f64,
    /// Credible interval of `μ_b − μ_a`.
    pub difference_interval: Interval,
    /// `μ_b / μ_a − 1` at the posterior means.
    pub relative_lift: f64,
    /// Delta-method credible interval of the relative lift.
    pub relative_lift_interval: Interval,
    /// P(μ_b > μ_a).
    pub prob_b_beats_a: f64,
    /// Expected loss of choosing A, `E[max(μ_b − μ_a, 0)]`, in the metric's unit.
    pub expected_loss_a: f64,
    /// Expected loss of choosing B, `E[max(μ_a − μ_b, 0)]`.
    pub expected_loss_b: f64,
}

/// Compares the means of two continuous metrics at credible `level`.
///
/// ```
/// use bayes_ab::{MeanStats, compare_means};
///
/// let a = MeanStats::from_sums(1_000, 10_000.0, 200_000.0)?; // mean 10, sd ≈ 10
/// let b = MeanStats::from_sums(1_000, 11_000.0, 221_000.0)?; // mean 11, sd ≈ 10
/// let c = compare_means(a, b, 0.95)?;
/// assert!((c.difference - 1.0).abs() < 1e-12);
/// assert!(c.prob_b_beats_a > 0.98);
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
///
/// # Errors
/// [`BayesError::InsufficientData`] for an arm with fewer than two observations, or both arms with
/// zero variance; [`BayesError::InvalidProbability`] for a level outside `(0, 1)`.
pub fn compare_means(a: MeanStats, b: MeanStats, level: f64) -> Result<MeanComparison> {
    let level = check_probability("credible level", level)?;
    let (ma, mb) = (a.mean()?, b.mean()?);
    #[allow(clippy::cast_precision_loss)]
    let (va, vb) = (
        a.variance()? / a.count as f64,
        b.variance()? / b.count as f64,
    );
    compare_estimates(ma, va, mb, vb, level)
}

/// The Gaussian comparison of two estimates `ma`, `mb` with variances `va`, `vb` (of the
/// estimates, not of the observations): what [`compare_means`] and
/// [`compare_ratios`](crate::compare_ratios) report. `level` is already checked.
pub(crate) fn compare_estimates(
    ma: f64,
    va: f64,
    mb: f64,
    vb: f64,
    level: f64,
) -> Result<MeanComparison> {
    let sd = (va + vb).sqrt();
    if sd == 0.0 {
        return Err(BayesError::InsufficientData {
            what: "both arms have zero variance",
        });
    }
    let z = normal_quantile(0.5 * (1.0 + level));
    let difference = mb - ma;
    let (loss_a, loss_b) = normal_losses(difference, sd);
    let relative_lift = mb / ma - 1.0;
    // Var(μ_b/μ_a) ≈ v_b/μ_a² + μ_b² v_a/μ_a⁴.
    let lift_sd = (vb / (ma * ma) + mb * mb * va / (ma * ma * ma * ma)).sqrt();
    Ok(MeanComparison {
        difference,
        difference_interval: Interval {
            lower: difference - z * sd,
            upper: difference + z * sd,
        },
        relative_lift,
        relative_lift_interval: Interval {
            lower: relative_lift - z * lift_sd,
            upper: relative_lift + z * lift_sd,
        },
        prob_b_beats_a: normal_cdf(difference / sd),
        expected_loss_a: loss_a,
        expected_loss_b: loss_b,
    })
}
