//! CUPED / CUPAC variance reduction: regression adjustment of a metric on a pre-period
//! covariate (CUPED) or on a model's prediction of the metric (CUPAC: pass the prediction as
//! the covariate).

use serde::{Deserialize, Serialize};

use crate::beta::Interval;
use crate::continuous::MeanStats;
use crate::error::{BayesError, Result, check_probability};
use crate::special::{normal_cdf, normal_quantile};
use crate::two_arm::normal_losses;

/// Joint running statistics of a metric `y` and its covariate `x` for one arm: count, means,
/// and the centred second moments `Σ(x − x̄)²`, `Σ(y − ȳ)²`, `Σ(x − x̄)(y − ȳ)`, updated by
/// Welford's method (stable at any offset) and mergeable. For a conversion metric, record
/// `y` as 0 or 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CovariateStats {
    count: u64,
    mean_x: f64,
    mean_y: f64,
    m2_x: f64,
    m2_y: f64,
    c_xy: f64,
}

impl CovariateStats {
    /// Adds one unit's metric `y` and covariate `x`.
    ///
    /// # Errors
    /// [`BayesError::InvalidParameter`] for a non-finite value; [`BayesError::CountOverflow`].
    pub fn record(&mut self, y: f64, x: f64) -> Result<()> {
        if !(y.is_finite() && x.is_finite()) {
            return Err(BayesError::InvalidParameter {
                name: "observation",
                reason: "metric and covariate must be finite",
            });
        }
        self.count = self.count.checked_add(1).ok_or(BayesError::CountOverflow)?;
        #[allow(clippy::cast_precision_loss)]
        let n = self.count as f64;
        let dx = x - self.mean_x;
        let dy = y - self.mean_y;
        self.mean_x += dx / n;
        self.mean_y += dy / n;
        self.m2_x += dx * (x - self.mean_x);
        self.m2_y += dy * (y - self.mean_y);
        self.c_xy += dx * (y - self.mean_y);
        Ok(())
    }

    /// The statistics of both streams (Chan et al.'s pairwise update).
    ///
    /// # Errors
    /// [`BayesError::CountOverflow`].
    pub fn merge(self, other: CovariateStats) -> Result<CovariateStats> {
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
        let (dx, dy) = (other.mean_x - self.mean_x, other.mean_y - self.mean_y);
        let w = na * nb / n;
        Ok(CovariateStats {
            count,
            mean_x: self.mean_x + dx * (nb / n),
            mean_y: self.mean_y + dy * (nb / n),
            m2_x: self.m2_x + other.m2_x + dx * dx * w,
            m2_y: self.m2_y + other.m2_y + dy * dy * w,
            c_xy: self.c_xy + other.c_xy + dx * dy * w,
        })
    }

    /// Units recorded.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Mean of the metric.
    #[must_use]
    pub fn mean_metric(&self) -> f64 {
        self.mean_y
    }

    /// Mean of the covariate.
    #[must_use]
    pub fn mean_covariate(&self) -> f64 {
        self.mean_x
    }

    /// The metric's own statistics (count, mean, `M₂`), as if recorded in a [`MeanStats`].
    ///
    /// # Errors
    /// [`BayesError::InvalidParameter`] if the squared deviations overflowed (values near
    /// `f64::MAX`).
    pub fn metric_stats(&self) -> Result<MeanStats> {
        MeanStats::from_moments(self.count, self.mean_y, self.m2_y)
    }

    /// The covariate's statistics, for the pre-exposure balance check
    /// ([`covariate_balance_check`](crate::covariate_balance_check)).
    ///
    /// # Errors
    /// As [`CovariateStats::metric_stats`].
    pub fn covariate_stats(&self) -> Result<MeanStats> {
        MeanStats::from_moments(self.count, self.mean_x, self.m2_x)
    }
}

/// A Gaussian prior `N(mean, sd²)` on a metric's effect, the difference challenger −
/// champion in the metric's unit: an informative prior for the Gaussian comparisons
/// (continuous metrics, and any metric compared after CUPED). It is combined with the
/// estimate's Gaussian likelihood by precision weighting, so it shrinks a noisy difference
/// toward `mean` and fades as the data grow.
///
/// ```
/// use bayes_ab::EffectPrior;
///
/// // Most changes move revenue per user by less than ±0.5 (two standard deviations).
/// let prior = EffectPrior::normal(0.0, 0.25)?;
/// let (mean, sd) = prior.posterior(1.0, 0.25);
/// assert!((mean - 0.5).abs() < 1e-15 && (sd - 0.25 / 2f64.sqrt()).abs() < 1e-15);
/// assert!(EffectPrior::normal(0.0, 0.0).is_err());
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawEffectPrior")]
pub struct EffectPrior {
    mean: f64,
    sd: f64,
}

/// The serialized form of an [`EffectPrior`], validated on the way in.
#[derive(Deserialize)]
struct RawEffectPrior {
    mean: f64,
    sd: f64,
}

impl TryFrom<RawEffectPrior> for EffectPrior {
    type Error = BayesError;
    fn try_from(raw: RawEffectPrior) -> Result<Self> {
        Self::normal(raw.mean, raw.sd)
    }
}

impl EffectPrior {
    /// The prior `N(mean, sd²)` on the difference.
    ///
    /// # Errors
    /// [`BayesError::InvalidParameter`] for a non-finite mean, or a standard deviation that
    /// is not finite and `> 0` (leave the prior out for a flat one).
    pub fn normal(mean: f64, sd: f64) -> Result<Self> {
        if !mean.is_finite() {
            return Err(BayesError::InvalidParameter {
                name: "effect prior mean",
                reason: "must be finite",
            });
        }
        if !(sd.is_finite() && sd > 0.0) {
            return Err(BayesError::InvalidParameter {
                name: "effect prior sd",
                reason: "must be finite and > 0 (no prior: a flat one)",
            });
        }
        Ok(Self { mean, sd })
    }

    /// The prior mean.
    #[must_use]
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// The prior standard deviation.
    #[must_use]
    pub fn sd(&self) -> f64 {
        self.sd
    }

    /// The posterior `(mean, sd)` of the effect given an estimate with standard error
    /// `standard_error` (> 0): precisions add, means are precision-weighted.
    #[must_use]
    pub fn posterior(&self, estimate: f64, standard_error: f64) -> (f64, f64) {
        let (wp, wd) = (
            1.0 / (self.sd * self.sd),
            1.0 / (standard_error * standard_error),
        );
        let precision = wp + wd;
        (
            (self.mean * wp + estimate * wd) / precision,
            precision.sqrt().recip(),
        )
    }
}

/// The Gaussian posterior `(mean, sd)` of an effect under an optional prior (flat: the
/// estimate itself).
pub(crate) fn effect_posterior(
    prior: Option<EffectPrior>,
    estimate: f64,
    standard_error: f64,
) -> (f64, f64) {
    match prior {
        Some(p) => p.posterior(estimate, standard_error),
        None => (estimate, standard_error),
    }
}

/// The CUPED-adjusted comparison of champion (A) and challenger (B).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[must_use]
pub struct CupedComparison {
    /// The common slope `θ = Σ_arms Σ(x − x̄)(y − ȳ) / Σ_arms Σ(x − x̄)²` (within-arm pooled).
    pub theta: f64,
    /// Adjusted difference `(ȳ_b − ȳ_a) − θ (x̄_b − x̄_a)`: the treatment coefficient of the
    /// regression `y ~ 1 + treatment + x`.
    pub difference: f64,
    /// Its standard error, from each arm's residual variance `Var(y − θ x)`.
    pub standard_error: f64,
    /// Credible (flat prior, Gaussian posterior) interval of the adjusted difference.
    pub difference_interval: Interval,
    /// P(μ_b > μ_a) under the adjusted posterior.
    pub prob_b_beats_a: f64,
    /// Expected loss of choosing A, in the metric's unit.
    pub expected_loss_a: f64,
    /// Expected loss of choosing B.
    pub expected_loss_b: f64,
    /// `Var(adjusted difference) / Var(unadjusted difference)`: about `1 − ρ²`.
    pub variance_ratio: f64,
}

/// Compares two arms' metric after CUPED regression adjustment on the covariate.
///
/// ```
/// use bayes_ab::{CovariateStats, cuped_compare};
///
/// let (mut a, mut b) = (CovariateStats::default(), CovariateStats::default());
/// for i in 0..1_000 {
///     let x = f64::from(i % 37);            // pre-period spend
///     let noise = f64::from((i * 7) % 11) - 5.0;
///     a.record(x + noise, x)?;
///     b.record(x + noise + 0.5, x)?;
/// }
/// let c = cuped_compare(a, b, 0.95)?;
/// assert!((c.difference - 0.5).abs() < 1e-9);
/// assert!(c.variance_ratio < 0.2); // the covariate explains most of the variance
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
///
/// # Errors
/// [`BayesError::InsufficientData`] for an arm with fewer than three units, a covariate
/// without variance, or a zero residual variance; [`BayesError::InvalidProbability`] for a
/// level outside `(0, 1)`.
pub fn cuped_compare(a: CovariateStats, b: CovariateStats, level: f64) -> Result<CupedComparison> {
    cuped_compare_with_prior(a, b, level, None)
}

/// [`cuped_compare`] under an informative [`EffectPrior`] on the adjusted difference: the
/// reported difference, standard error, interval, probability and losses are those of the
/// posterior; `theta` and `variance_ratio` are the data's.
///
/// ```
/// use bayes_ab::{CovariateStats, EffectPrior, cuped_compare, cuped_compare_with_prior};
///
/// let (mut a, mut b) = (CovariateStats::default(), CovariateStats::default());
/// for i in 0..200 {
///     let x = f64::from(i % 37);
///     let noise = f64::from((i * 7) % 11) - 5.0;
///     a.record(x + noise, x)?;
///     b.record(x + noise + 0.5, x)?;
/// }
/// let flat = cuped_compare(a, b, 0.95)?;
/// let sceptical = cuped_compare_with_prior(a, b, 0.95, Some(EffectPrior::normal(0.0, 0.1)?))?;
/// assert!(sceptical.difference < flat.difference); // shrunk toward 0
/// assert!(sceptical.standard_error < flat.standard_error);
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
///
/// # Errors
/// As [`cuped_compare`].
pub fn cuped_compare_with_prior(
    a: CovariateStats,
    b: CovariateStats,
    level: f64,
    prior: Option<EffectPrior>,
) -> Result<CupedComparison> {
    let level = check_probability("credible level", level)?;
    let adjusted = Adjusted::of(&a, &b)?;
    let (difference, standard_error) =
        effect_posterior(prior, adjusted.difference, adjusted.variance.sqrt());
    let z = normal_quantile(0.5 * (1.0 + level));
    let (loss_a, loss_b) = normal_losses(difference, standard_error);
    Ok(CupedComparison {
        theta: adjusted.theta,
        difference,
        standard_error,
        difference_interval: Interval {
            lower: difference - z * standard_error,
            upper: difference + z * standard_error,
        },
        prob_b_beats_a: normal_cdf(difference / standard_error),
        expected_loss_a: loss_a,
        expected_loss_b: loss_b,
        variance_ratio: if adjusted.raw_variance > 0.0 {
            adjusted.variance / adjusted.raw_variance
        } else {
            1.0
        },
    })
}

/// The CUPED-adjusted difference of two arms and its variance: the one computation behind
/// [`cuped_compare`] and [`cuped_confidence_sequence`].
struct Adjusted {
    theta: f64,
    difference: f64,
    /// Variance of `difference` (> 0).
    variance: f64,
    /// Variance of the unadjusted difference of means.
    raw_variance: f64,
}

impl Adjusted {
    fn of(a: &CovariateStats, b: &CovariateStats) -> Result<Self> {
        if a.count < 3 || b.count < 3 {
            return Err(BayesError::InsufficientData {
                what: "CUPED needs at least three units per arm",
            });
        }
        let m2_x = a.m2_x + b.m2_x;
        if m2_x <= 0.0 {
            return Err(BayesError::InsufficientData {
                what: "the covariate has no variance",
            });
        }
        let theta = (a.c_xy + b.c_xy) / m2_x;
        #[allow(clippy::cast_precision_loss)]
        let arm = |s: &CovariateStats| {
            let n = s.count as f64;
            let residual = (s.m2_y - 2.0 * theta * s.c_xy + theta * theta * s.m2_x).max(0.0);
            (residual / (n - 1.0) / n, s.m2_y / (n - 1.0) / n)
        };
        let ((va, raw_a), (vb, raw_b)) = (arm(a), arm(b));
        if va + vb == 0.0 {
            return Err(BayesError::InsufficientData {
                what: "the adjusted metric has no variance",
            });
        }
        Ok(Self {
            theta,
            difference: (b.mean_y - a.mean_y) - theta * (b.mean_x - a.mean_x),
            variance: va + vb,
            raw_variance: raw_a + raw_b,
        })
    }
}

/// The asymptotic confidence sequence of the CUPED-adjusted difference `μ_b − μ_a` at
/// `1 − alpha`, tightest at `tuning_sample` units in all: the sequential mode's sequence
/// ([`confidence_sequence`](crate::confidence_sequence), GrowthBook's) with the adjusted
/// difference and its smaller variance, so it may be read after every unit once a minimum
/// sample is in (asymptotic validity, as for the unadjusted sequence), and it excludes zero
/// sooner: the sample needed falls roughly by `1 − ρ²`.
///
/// ```
/// use bayes_ab::{CovariateStats, cuped_confidence_sequence};
///
/// let (mut a, mut b) = (CovariateStats::default(), CovariateStats::default());
/// for i in 0..4_000 {
///     let x = f64::from(i % 50);
///     let noise = f64::from((i * 13) % 7) - 3.0;
///     a.record(x + noise, x)?;
///     b.record(x + noise + 0.5, x)?;
/// }
/// let cs = cuped_confidence_sequence(a, b, 0.05, 8_000.0)?;
/// assert!(cs.lower > 0.0 && cs.contains(0.5));
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
///
/// # Errors
/// As [`cuped_compare`]; [`BayesError::InvalidProbability`] for `alpha` outside `(0, 1)` and
/// [`BayesError::InvalidParameter`] for a tuning sample that is not finite and ≥ 1.
pub fn cuped_confidence_sequence(
    a: CovariateStats,
    b: CovariateStats,
    alpha: f64,
    tuning_sample: f64,
) -> Result<Interval> {
    crate::StoppingMode::sequential(alpha, tuning_sample)?;
    let adjusted = Adjusted::of(&a, &b)?;
    #[allow(clippy::cast_precision_loss)]
    let n = a.count.saturating_add(b.count) as f64;
    let half = crate::decision::asymptotic_half_width(adjusted.variance, n, alpha, tuning_sample);
    Ok(Interval {
        lower: adjusted.difference - half,
        upper: adjusted.difference + half,
    })
}

/// Compares a ratio metric between champion (A) and challenger (B) by the delta method:
/// revenue per session, clicks per page view, any `Σ numerator / Σ denominator` whose units
/// of randomization (users) each contribute a numerator and a denominator. Record each unit
/// as `stats.record(numerator, denominator)`.
///
/// Each arm's ratio `R = ȳ / x̄` has variance `(s_y² − 2 R s_xy + R² s_x²) / (n x̄²)` (first
/// order in the sample means, with the within-arm sample (co)variances); the comparison of
/// the two ratios is then that of [`compare_means`](crate::compare_means): difference,
/// relative lift with its delta-method interval, P(R_b > R_a) and the expected losses, in the
/// ratio's unit. Treating the units' ratios as independent observations (averaging
/// per-user revenue per session) answers a different question and understates the variance
/// when units differ in size; this does not.
///
/// ```
/// use bayes_ab::{CovariateStats, compare_ratios};
///
/// // Revenue and sessions per user: A earns 2.0 per session, B 2.2.
/// let (mut a, mut b) = (CovariateStats::default(), CovariateStats::default());
/// for user in 0..2_000u32 {
///     let sessions = f64::from(1 + user % 5);
///     let noise = f64::from(user % 7) - 3.0;
///     a.record(2.0 * sessions + noise, sessions)?;
///     b.record(2.2 * sessions + noise, sessions)?;
/// }
/// let c = compare_ratios(a, b, 0.95)?;
/// assert!((c.difference - 0.2).abs() < 1e-12);
/// assert!(c.prob_b_beats_a > 0.99);
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
///
/// # Errors
/// [`BayesError::InsufficientData`] for an arm with fewer than two units, a zero total
/// denominator, or no variance in either arm; [`BayesError::InvalidProbability`] for a level
/// outside `(0, 1)`.
pub fn compare_ratios(
    a: CovariateStats,
    b: CovariateStats,
    level: f64,
) -> Result<crate::MeanComparison> {
    let level = check_probability("credible level", level)?;
    let ratio = |s: &CovariateStats| -> Result<(f64, f64)> {
        if s.count < 2 {
            return Err(BayesError::InsufficientData {
                what: "a ratio needs at least two units per arm",
            });
        }
        if s.mean_x == 0.0 {
            return Err(BayesError::InsufficientData {
                what: "the denominator sums to zero",
            });
        }
        #[allow(clippy::cast_precision_loss)]
        let n = s.count as f64;
        let r = s.mean_y / s.mean_x;
        let spread = (s.m2_y - 2.0 * r * s.c_xy + r * r * s.m2_x).max(0.0) / (n - 1.0);
        Ok((r, spread / (n * s.mean_x * s.mean_x)))
    };
    let ((ra, va), (rb, vb)) = (ratio(&a)?, ratio(&b)?);
    crate::continuous::compare_estimates(ra, va, rb, vb, level)
}

/// Which arm of a [`CupedPair`] a unit is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PairArm {
    /// The champion (A).
    Champion,
    /// The challenger (B).
    Challenger,
}

/// The nominal α the betting fractions of [`CupedPair`] are tuned for. The sequence is
/// valid at every α whatever the tuning (the fractions only need to be predictable); a
/// different α is just a little wider than a sequence tuned for it.
const BETTING_TUNING_ALPHA: f64 = 0.05;

/// Largest betting fraction (Waudby-Smith & Ramdas' `c = 1/2`).
const BETTING_FRACTION_MAX: f64 = 0.5;

/// A champion and a challenger compared after CUPED / CUPAC regression adjustment, recorded
/// unit by unit in arrival order: the joint moments of both arms ([`CovariateStats`], for the
/// Bayesian comparison and the asymptotic sequence) and, for a metric with known bounds, the
/// running sums of an **anytime-valid** confidence sequence on the adjusted difference.
///
/// # The anytime-valid sequence
///
/// Each unit's metric `y` is predicted from its covariate `x` by the regression fitted on
/// the units *before* it, `f(x) = ȳ + θ(x − x̄)` clamped into the metric's bounds; the unit
/// then contributes `φ = (y − f(x))/π` in the challenger and `−(y − f(x))/(1 − π)` in the
/// champion, `π` the challenger's share of the pair's traffic. Because assignment is
/// independent of everything before it and of `x`, `E[φ | past] = μ_b − μ_a` exactly
/// whatever the prediction (a design-based, augmented inverse-propensity estimate), and `φ`
/// is bounded. The sequence is Waudby-Smith & Ramdas' predictable plug-in empirical-Bernstein
/// confidence sequence (2023, Theorem 2) for the mean of the bounded `φ`: valid at every
/// look from the first unit, in finite samples, for any stopping rule. Its width follows the
/// spread of `y − f(x)`, so a covariate with correlation `ρ` shrinks it as CUPED shrinks the
/// variance (by about `1 − ρ²`), where the conjugate-mixture sequence of
/// [`anytime_confidence_sequence`](crate::anytime_confidence_sequence) cannot use a
/// covariate at all.
///
/// The state is sums over units, so two partial pairs of the same experiment
/// [`merge`](Self::merge) by adding (each unit's bet was predictable in its own stream, so
/// the merged product is still a test supermartingale). The order of recording matters only
/// for the width, never for the guarantee.
///
/// ```
/// use bayes_ab::{CupedPair, PairArm};
///
/// // A conversion metric (bounds 0 and 1), half of the pair's traffic to the challenger.
/// let mut pair = CupedPair::conversion(0.5)?;
/// let mut seed = 1u64;
/// for i in 0..20_000u32 {
///     seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
///     let u = (seed >> 11) as f64 / (1u64 << 53) as f64;
///     let loyal = f64::from(u8::from(i % 3 == 0)); // pre-period: a returning customer
///     let arm = if i % 2 == 0 { PairArm::Champion } else { PairArm::Challenger };
///     let lift = if arm == PairArm::Challenger { 0.1 } else { 0.0 };
///     let converted = f64::from(u8::from(u < 0.1 + 0.5 * loyal + lift));
///     pair.record(arm, converted, loyal)?;
/// }
/// let cs = pair.anytime_confidence_sequence(0.05)?;
/// assert!(cs.lower > 0.0 && cs.contains(0.1)); // valid at every look along the way
/// let c = pair.compare(0.95)?; // the Gaussian CUPED comparison of the same units
/// assert!((c.difference - 0.1).abs() < 0.02);
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawCupedPair")]
pub struct CupedPair {
    challenger_share: f64,
    bounds: Option<(f64, f64)>,
    champion: CovariateStats,
    challenger: CovariateStats,
    betting: Betting,
}

/// The serialized form of a [`CupedPair`]: the share and bounds are validated on the way in.
#[derive(Deserialize)]
struct RawCupedPair {
    challenger_share: f64,
    bounds: Option<(f64, f64)>,
    champion: CovariateStats,
    challenger: CovariateStats,
    betting: Betting,
}

impl TryFrom<RawCupedPair> for CupedPair {
    type Error = BayesError;
    fn try_from(raw: RawCupedPair) -> Result<Self> {
        let empty = match raw.bounds {
            Some((lower, upper)) => CupedPair::bounded(raw.challenger_share, lower, upper)?,
            None => CupedPair::unbounded(raw.challenger_share)?,
        };
        Ok(CupedPair {
            champion: raw.champion,
            challenger: raw.challenger,
            betting: raw.betting,
            ..empty
        })
    }
}

/// Running sums of the predictable plug-in empirical-Bernstein sequence on `z ∈ [0, 1]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Betting {
    count: u64,
    /// Σ z.
    sum: f64,
    /// Σ (z_i − μ̂_i)², μ̂_i the regularized mean after unit i.
    sum_squared_deviations: f64,
    /// Σ λ_i.
    sum_lambda: f64,
    /// Σ λ_i z_i.
    sum_lambda_z: f64,
    /// Σ v_i ψ_E(λ_i).
    sum_penalty: f64,
}

impl Betting {
    /// The sums after one more observation `z ∈ [0, 1]`.
    #[allow(clippy::cast_precision_loss)]
    fn record(self, z: f64) -> Result<Self> {
        let count = self.count.checked_add(1).ok_or(BayesError::CountOverflow)?;
        let t = count as f64;
        // μ̂_{t−1} = (½ + Σ_{i<t} z_i)/t and σ̂²_{t−1} = (¼ + Σ_{i<t}(z_i − μ̂_i)²)/t.
        let mean_before = (0.5 + self.sum) / t;
        let variance_before = (0.25 + self.sum_squared_deviations) / t;
        let lambda = (2.0 * (2.0 / BETTING_TUNING_ALPHA).ln() / (variance_before * t * t.ln_1p()))
            .sqrt()
            .min(BETTING_FRACTION_MAX);
        let deviation = z - mean_before;
        let psi = (-(-lambda).ln_1p() - lambda) / 4.0;
        let sum = self.sum + z;
        let mean_after = (0.5 + sum) / (t + 1.0);
        Ok(Self {
            count,
            sum,
            sum_squared_deviations: self.sum_squared_deviations
                + (z - mean_after) * (z - mean_after),
            sum_lambda: self.sum_lambda + lambda,
            sum_lambda_z: self.sum_lambda_z + lambda * z,
            sum_penalty: self.sum_penalty + 4.0 * deviation * deviation * psi,
        })
    }

    fn merge(self, other: Self) -> Result<Self> {
        Ok(Self {
            count: self
                .count
                .checked_add(other.count)
                .ok_or(BayesError::CountOverflow)?,
            sum: self.sum + other.sum,
            sum_squared_deviations: self.sum_squared_deviations + other.sum_squared_deviations,
            sum_lambda: self.sum_lambda + other.sum_lambda,
            sum_lambda_z: self.sum_lambda_z + other.sum_lambda_z,
            sum_penalty: self.sum_penalty + other.sum_penalty,
        })
    }

    /// The `(1 − alpha)` sequence for the mean of `z`, within `[0, 1]`.
    fn interval(&self, alpha: f64) -> Interval {
        if self.sum_lambda <= 0.0 {
            return Interval {
                lower: 0.0,
                upper: 1.0,
            };
        }
        let centre = self.sum_lambda_z / self.sum_lambda;
        let half = ((2.0 / alpha).ln() + self.sum_penalty) / self.sum_lambda;
        Interval {
            lower: (centre - half).max(0.0),
            upper: (centre + half).min(1.0),
        }
    }
}

impl CupedPair {
    /// A pair for a metric bounded in `[lower, upper]` (a capped revenue, a score), whose
    /// challenger receives `challenger_share` of the pair's units (0.5 for an even split;
    /// with several challengers, the challenger's weight over champion's plus its own).
    ///
    /// # Errors
    /// [`BayesError::InvalidProbability`] for a share outside `(0, 1)`;
    /// [`BayesError::InvalidParameter`] unless the bounds are finite with `lower < upper`.
    pub fn bounded(challenger_share: f64, lower: f64, upper: f64) -> Result<Self> {
        if !(lower.is_finite() && upper.is_finite() && lower < upper) {
            return Err(BayesError::InvalidParameter {
                name: "bounds",
                reason: "must be finite with lower < upper",
            });
        }
        Self::with_bounds(challenger_share, Some((lower, upper)))
    }

    /// A pair for a conversion metric (`y` = 0 or 1): [`CupedPair::bounded`] on `[0, 1]`.
    ///
    /// # Errors
    /// As [`CupedPair::bounded`].
    pub fn conversion(challenger_share: f64) -> Result<Self> {
        Self::bounded(challenger_share, 0.0, 1.0)
    }

    /// A pair for a metric without known bounds: the Bayesian comparison and the asymptotic
    /// sequence, but no anytime-valid sequence.
    ///
    /// # Errors
    /// [`BayesError::InvalidProbability`] for a share outside `(0, 1)`.
    pub fn unbounded(challenger_share: f64) -> Result<Self> {
        Self::with_bounds(challenger_share, None)
    }

    fn with_bounds(challenger_share: f64, bounds: Option<(f64, f64)>) -> Result<Self> {
        let challenger_share = check_probability("challenger_share", challenger_share)?;
        Ok(Self {
            challenger_share,
            bounds,
            champion: CovariateStats::default(),
            challenger: CovariateStats::default(),
            betting: Betting::default(),
        })
    }

    /// Adds one unit of `arm` with metric `y` and covariate `x` (for CUPAC, the model's
    /// prediction of `y`, made without the unit's outcome).
    ///
    /// # Errors
    /// [`BayesError::InvalidParameter`] for a non-finite value or a metric outside the
    /// bounds; [`BayesError::CountOverflow`]. Nothing changes on error.
    pub fn record(&mut self, arm: PairArm, y: f64, x: f64) -> Result<()> {
        let mut updated = *self;
        match arm {
            PairArm::Champion => updated.champion.record(y, x)?,
            PairArm::Challenger => updated.challenger.record(y, x)?,
        }
        if let Some((lower, upper)) = self.bounds {
            if !(y >= lower && y <= upper) {
                return Err(BayesError::InvalidParameter {
                    name: "observation",
                    reason: "the metric must lie within the pair's bounds",
                });
            }
            let prediction = self.predict(x, lower, upper);
            let pi = self.challenger_share;
            let phi = match arm {
                PairArm::Challenger => (y - prediction) / pi,
                PairArm::Champion => -(y - prediction) / (1.0 - pi),
            };
            let reach = self.reach(upper - lower);
            let z = ((phi + reach) / (2.0 * reach)).clamp(0.0, 1.0);
            updated.betting = self.betting.record(z)?;
        }
        *self = updated;
        Ok(())
    }

    /// The prediction of the next unit's metric from the units so far (both arms pooled),
    /// clamped into the bounds.
    fn predict(&self, x: f64, lower: f64, upper: f64) -> f64 {
        let pooled = self
            .champion
            .merge(self.challenger)
            .unwrap_or(self.champion);
        let guess = if pooled.count == 0 {
            0.5 * (lower + upper)
        } else if pooled.m2_x > 0.0 {
            pooled.mean_y + pooled.c_xy / pooled.m2_x * (x - pooled.mean_x)
        } else {
            pooled.mean_y
        };
        if guess.is_finite() {
            guess.clamp(lower, upper)
        } else {
            0.5 * (lower + upper)
        }
    }

    /// `|φ| ≤ range · max(1/π, 1/(1 − π))`.
    fn reach(&self, range: f64) -> f64 {
        range / self.challenger_share.min(1.0 - self.challenger_share)
    }

    /// Adds another partial pair of the same comparison.
    ///
    /// # Errors
    /// [`BayesError::Incompatible`] for a different share or bounds;
    /// [`BayesError::CountOverflow`]. Nothing changes on error.
    pub fn merge(&mut self, other: &CupedPair) -> Result<()> {
        if self.challenger_share != other.challenger_share || self.bounds != other.bounds {
            return Err(BayesError::Incompatible {
                reason: "CUPED pairs with different shares or bounds",
            });
        }
        let merged = CupedPair {
            champion: self.champion.merge(other.champion)?,
            challenger: self.challenger.merge(other.challenger)?,
            betting: self.betting.merge(other.betting)?,
            ..*self
        };
        *self = merged;
        Ok(())
    }

    /// The champion's statistics.
    #[must_use]
    pub fn champion(&self) -> &CovariateStats {
        &self.champion
    }

    /// The challenger's statistics.
    #[must_use]
    pub fn challenger(&self) -> &CovariateStats {
        &self.challenger
    }

    /// The challenger's share of the pair's units.
    #[must_use]
    pub fn challenger_share(&self) -> f64 {
        self.challenger_share
    }

    /// The metric's bounds, if declared.
    #[must_use]
    pub fn bounds(&self) -> Option<(f64, f64)> {
        self.bounds
    }

    /// [`cuped_compare`] of the two arms.
    ///
    /// # Errors
    /// As [`cuped_compare`].
    pub fn compare(&self, level: f64) -> Result<CupedComparison> {
        cuped_compare(self.champion, self.challenger, level)
    }

    /// The `(1 − alpha)` anytime-valid confidence sequence on the difference `μ_b − μ_a`,
    /// in the metric's unit (see the type's documentation); the whole range
    /// `[−(upper − lower), upper − lower]` before the first unit.
    ///
    /// # Errors
    /// [`BayesError::InvalidProbability`] for `alpha` outside `(0, 1)`;
    /// [`BayesError::InvalidParameter`] for a pair built [`unbounded`](Self::unbounded).
    pub fn anytime_confidence_sequence(&self, alpha: f64) -> Result<Interval> {
        let alpha = check_probability("alpha", alpha)?;
        let Some((lower, upper)) = self.bounds else {
            return Err(BayesError::InvalidParameter {
                name: "bounds",
                reason: "the anytime-valid sequence needs a bounded metric (CupedPair::bounded)",
            });
        };
        Ok(self.anytime_unchecked(alpha, upper - lower))
    }

    /// The anytime-valid p-value of "no difference": the smallest α at which the
    /// [sequence](Self::anytime_confidence_sequence) excludes zero,
    /// `min(1, 2·exp(Σ v ψ(λ) − |Σ λ (z − ½)|))`. Valid at any stopping time (however often
    /// one looked), so it may enter a Holm or Benjamini–Hochberg family
    /// ([`adjust_p_values`](crate::adjust_p_values)).
    ///
    /// ```
    /// use bayes_ab::{CupedPair, PairArm};
    ///
    /// let mut pair = CupedPair::conversion(0.5)?;
    /// for i in 0..4_000u32 {
    ///     let (arm, y) = if i % 2 == 0 { (PairArm::Champion, i % 10 == 0) } else { (PairArm::Challenger, i % 4 == 1) };
    ///     pair.record(arm, f64::from(u8::from(y)), 0.0)?;
    /// }
    /// let p = pair.anytime_p_value()?;
    /// assert!(p < 0.01);
    /// // The sequence excludes zero exactly at the levels above p.
    /// assert!(!pair.anytime_confidence_sequence(p * 1.01)?.contains(0.0));
    /// assert!(pair.anytime_confidence_sequence(p * 0.99)?.contains(0.0));
    /// # Ok::<(), bayes_ab::BayesError>(())
    /// ```
    ///
    /// # Errors
    /// [`BayesError::InvalidParameter`] for a pair built [`unbounded`](Self::unbounded).
    pub fn anytime_p_value(&self) -> Result<f64> {
        if self.bounds.is_none() {
            return Err(BayesError::InvalidParameter {
                name: "bounds",
                reason: "the anytime-valid p-value needs a bounded metric (CupedPair::bounded)",
            });
        }
        let b = &self.betting;
        let evidence = (b.sum_lambda_z - 0.5 * b.sum_lambda).abs() - b.sum_penalty;
        Ok((2.0 * (-evidence).exp()).min(1.0))
    }

    fn anytime_unchecked(&self, alpha: f64, range: f64) -> Interval {
        let reach = self.reach(range);
        let z = self.betting.interval(alpha);
        Interval {
            lower: (2.0 * reach * z.lower - reach).max(-range),
            upper: (2.0 * reach * z.upper - reach).min(range),
        }
    }
}
