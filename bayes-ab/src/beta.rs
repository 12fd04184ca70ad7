//! Beta-Binomial posteriors: priors, counts, the Beta distribution and credible intervals.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{BayesError, Result, check_probability};
use crate::special;

/// Successes out of trials for one arm (conversions out of visitors, errors out of requests).
///
/// Always valid: `successes ≤ trials`. Counts from two partial tallies add up with
/// [`Counts::merge`].
///
/// ```
/// use bayes_ab::Counts;
///
/// let c = Counts::new(49, 100)?;
/// assert_eq!(c.failures(), 51);
/// assert!(Counts::new(101, 100).is_err());
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawCounts", into = "RawCounts")]
pub struct Counts {
    successes: u64,
    trials: u64,
}

#[derive(Serialize, Deserialize)]
struct RawCounts {
    successes: u64,
    trials: u64,
}

impl TryFrom<RawCounts> for Counts {
    type Error = BayesError;
    fn try_from(raw: RawCounts) -> Result<Self> {
        Counts::new(raw.successes, raw.trials)
    }
}

impl From<Counts> for RawCounts {
    fn from(c: Counts) -> Self {
        RawCounts {
            successes: c.successes,
            trials: c.trials,
        }
    }
}

impl Counts {
    /// No trials yet.
    pub const ZERO: Counts = Counts {
        successes: 0,
        trials: 0,
    };

    /// `successes` out of `trials`.
    ///
    /// # Errors
    /// [`BayesError::SuccessesExceedTrials`] when `successes > trials`.
    pub fn new(successes: u64, trials: u64) -> Result<Self> {
        if successes > trials {
            return Err(BayesError::SuccessesExceedTrials { successes, trials });
        }
        Ok(Self { successes, trials })
    }

    /// Number of successes.
    #[must_use]
    pub fn successes(self) -> u64 {
        self.successes
    }

    /// Number of trials.
    #[must_use]
    pub fn trials(self) -> u64 {
        self.trials
    }

    /// `trials − successes`.
    #[must_use]
    pub fn failures(self) -> u64 {
        self.trials - self.successes
    }

    /// The sum of two tallies of the same arm.
    ///
    /// # Errors
    /// [`BayesError::CountOverflow`] if a total exceeds `u64::MAX`.
    pub fn merge(self, other: Counts) -> Result<Counts> {
        Ok(Counts {
            successes: self
                .successes
                .checked_add(other.successes)
                .ok_or(BayesError::CountOverflow)?,
            trials: self
                .trials
                .checked_add(other.trials)
                .ok_or(BayesError::CountOverflow)?,
        })
    }

    /// One more trial, a success or not.
    ///
    /// # Errors
    /// [`BayesError::CountOverflow`] at `u64::MAX` trials.
    pub fn record(self, success: bool) -> Result<Counts> {
        self.merge(Counts {
            successes: u64::from(success),
            trials: 1,
        })
    }
}

/// A Beta distribution: the prior or posterior of a conversion (or error) rate.
///
/// Parameters are finite and strictly positive; every constructor checks.
///
/// ```
/// use bayes_ab::{Beta, Counts};
///
/// // Uniform prior Beta(1, 1) updated with 49 successes in 100 trials.
/// let posterior = Beta::UNIFORM.update(Counts::new(49, 100)?);
/// assert_eq!((posterior.alpha(), posterior.beta()), (50.0, 52.0));
/// let ci = posterior.credible_interval(0.95)?;
/// assert!((ci.lower - 0.394_039_960_522_871_62).abs() < 1e-12);
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawBeta", into = "RawBeta")]
pub struct Beta {
    alpha: f64,
    beta: f64,
}

#[derive(Serialize, Deserialize)]
struct RawBeta {
    alpha: f64,
    beta: f64,
}

impl TryFrom<RawBeta> for Beta {
    type Error = BayesError;
    fn try_from(raw: RawBeta) -> Result<Self> {
        Beta::new(raw.alpha, raw.beta)
    }
}

impl From<Beta> for RawBeta {
    fn from(b: Beta) -> Self {
        RawBeta {
            alpha: b.alpha,
            beta: b.beta,
        }
    }
}

/// An interval `[lower, upper]` (credible or confidence, depending on where it came from).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Lower end.
    pub lower: f64,
    /// Upper end.
    pub upper: f64,
}

impl Interval {
    /// Whether `x` lies inside (ends included).
    #[must_use]
    pub fn contains(&self, x: f64) -> bool {
        self.lower <= x && x <= self.upper
    }

    /// `upper − lower`.
    #[must_use]
    pub fn width(&self) -> f64 {
        self.upper - self.lower
    }
}

impl Beta {
    /// The uniform prior Beta(1, 1).
    pub const UNIFORM: Beta = Beta {
        alpha: 1.0,
        beta: 1.0,
    };

    /// Jeffreys' prior Beta(½, ½).
    pub const JEFFREYS: Beta = Beta {
        alpha: 0.5,
        beta: 0.5,
    };

    /// Beta(alpha, beta).
    ///
    /// # Errors
    /// [`BayesError::InvalidBetaParameters`] unless both are finite and `> 0`.
    pub fn new(alpha: f64, beta: f64) -> Result<Self> {
        if alpha.is_finite() && beta.is_finite() && alpha > 0.0 && beta > 0.0 {
            Ok(Self { alpha, beta })
        } else {
            Err(BayesError::InvalidBetaParameters { alpha, beta })
        }
    }

    /// The posterior after observing `counts` with `self` as the prior:
    /// Beta(α + successes, β + failures).
    #[must_use]
    pub fn update(self, counts: Counts) -> Beta {
        // u64 → f64 rounds above 2^53; counts that large are far beyond any experiment.
        #[allow(clippy::cast_precision_loss)]
        let (s, f) = (counts.successes() as f64, counts.failures() as f64);
        Beta {
            alpha: self.alpha + s,
            beta: self.beta + f,
        }
    }

    /// α.
    #[must_use]
    pub fn alpha(self) -> f64 {
        self.alpha
    }

    /// β.
    #[must_use]
    pub fn beta(self) -> f64 {
        self.beta
    }

    /// Mean α / (α + β).
    #[must_use]
    pub fn mean(self) -> f64 {
        self.alpha / (self.alpha + self.beta)
    }

    /// Variance αβ / ((α + β)² (α + β + 1)).
    #[must_use]
    pub fn variance(self) -> f64 {
        let s = self.alpha + self.beta;
        self.alpha * self.beta / (s * s * (s + 1.0))
    }

    /// Standard deviation.
    #[must_use]
    pub fn std_dev(self) -> f64 {
        self.variance().sqrt()
    }

    /// Density at `x` (0 outside `(0, 1)`).
    #[must_use]
    pub fn pdf(self, x: f64) -> f64 {
        if x <= 0.0 || x >= 1.0 || x.is_nan() {
            return 0.0;
        }
        special::ln_beta_pdf(self.alpha, self.beta, x, 1.0 - x).exp()
    }

    /// Density at `x` given `y = 1 − x` exactly (for `x` within a few ulps of 1).
    pub(crate) fn pdf_pair(self, x: f64, y: f64) -> f64 {
        if x <= 0.0 || y <= 0.0 || x.is_nan() {
            return 0.0;
        }
        special::ln_beta_pdf(self.alpha, self.beta, x, y).exp()
    }

    /// P(X ≤ x), the regularized incomplete beta function `I_x(α, β)`; 0 below 0, 1 above 1.
    /// NaN gives NaN.
    #[must_use]
    pub fn cdf(self, x: f64) -> f64 {
        if x.is_nan() {
            return f64::NAN;
        }
        special::beta_inc(self.alpha, self.beta, x.clamp(0.0, 1.0))
    }

    /// P(X > x) = 1 − cdf(x), with full relative accuracy in the upper tail.
    #[must_use]
    pub fn sf(self, x: f64) -> f64 {
        if x.is_nan() {
            return f64::NAN;
        }
        special::beta_inc_pair(self.alpha, self.beta, x.clamp(0.0, 1.0)).1
    }

    /// The `p`-quantile: the `x` with `P(X ≤ x) = p`.
    ///
    /// # Errors
    /// [`BayesError::InvalidProbability`] unless `0 < p < 1`.
    pub fn quantile(self, p: f64) -> Result<f64> {
        let p = check_probability("quantile probability", p)?;
        Ok(special::beta_inc_inv(self.alpha, self.beta, p, 1.0 - p))
    }

    /// The equal-tailed credible interval holding probability `level` (0.95 for a 95 %
    /// interval): from the `(1 − level)/2` quantile to the `(1 + level)/2` quantile.
    ///
    /// # Errors
    /// [`BayesError::InvalidProbability`] unless `0 < level < 1`.
    pub fn credible_interval(self, level: f64) -> Result<Interval> {
        let level = check_probability("credible level", level)?;
        let tail = 0.5 * (1.0 - level);
        Ok(Interval {
            lower: special::beta_inc_inv(self.alpha, self.beta, tail, 1.0 - tail),
            upper: special::beta_inc_inv(self.alpha, self.beta, 1.0 - tail, tail),
        })
    }

    /// One draw from the distribution.
    pub fn sample<R: Rng + ?Sized>(self, rng: &mut R) -> f64 {
        use rand_distr::Distribution;
        // Parameters are validated at construction, so this cannot fail.
        match rand_distr::Beta::new(self.alpha, self.beta) {
            Ok(d) => d.sample(rng),
            Err(_) => self.mean(),
        }
    }
}
