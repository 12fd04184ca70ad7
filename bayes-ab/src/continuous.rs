//! Continuous metrics (revenue per user, latency means) from sufficient statistics.

use serde::{Deserialize, Serialize};

use crate::beta::Interval;
use crate::error::{BayesError, Result, check_probability};
use crate::special::{normal_cdf, normal_quantile};
use crate::two_arm::normal_losses;

/// Sufficient statistics of a continuous metric: count, Σx and Σx². Mergeable: statistics
/// of two partial streams add up.
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
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MeanStats {
    count: u64,
    sum: f64,
    sum_squares: f64,
}

impl MeanStats {
    /// Statistics from their parts.
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
        if count == 0 && (sum != 0.0 || sum_squares != 0.0) {
            return Err(BayesError::InvalidParameter {
                name: "sums",
                reason: "must be zero when the count is zero",
            });
        }
        #[allow(clippy::cast_precision_loss)]
        let n = count as f64;
        if count > 0 && sum_squares < sum * sum / n * (1.0 - 1e-9) - 1e-12 {
            return Err(BayesError::InvalidParameter {
                name: "sum_squares",
                reason: "is below (sum)^2 / count",
            });
        }
        Ok(Self {
            count,
            sum,
            sum_squares,
        })
    }

    /// Adds one observation.
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
        self.sum += x;
        self.sum_squares += x * x;
        Ok(())
    }

    /// The statistics of both streams.
    ///
    /// # Errors
    /// [`BayesError::CountOverflow`].
    pub fn merge(self, other: MeanStats) -> Result<MeanStats> {
        Ok(MeanStats {
            count: self
                .count
                .checked_add(other.count)
                .ok_or(BayesError::CountOverflow)?,
            sum: self.sum + other.sum,
            sum_squares: self.sum_squares + other.sum_squares,
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
        #[allow(clippy::cast_precision_loss)]
        Ok(self.sum / self.count as f64)
    }

    /// Unbiased sample variance.
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
        let mean = self.sum / n;
        Ok(((self.sum_squares - n * mean * mean) / (n - 1.0)).max(0.0))
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
