//! Multiple-testing corrections across metrics × arms: Holm's step-down (family-wise error)
//! and Benjamini–Hochberg's step-up (false discovery rate), with intervals that agree with
//! the corrected decisions.
//!
//! Each comparison (one metric, one challenger against the champion) is a [`Hypothesis`]: an
//! estimated difference and its standard error, tested two-sided against zero. [`correct`]
//! takes the whole family and returns, for each, the p-value, the adjusted p-value and the
//! decision (the same as statsmodels' `multipletests` with `holm` and `fdr_bh`; the tests pin
//! its values), and an interval at the one level at which "the interval excludes zero" is
//! exactly "rejected" for every member of the family.

use serde::{Deserialize, Serialize};

use crate::beta::{Beta, Interval};
use crate::error::{BayesError, Result, check_probability};
use crate::special::{normal_cdf, normal_quantile};

/// Most hypotheses one family may hold.
pub const HYPOTHESES_MAX: usize = 100_000;

/// Which error rate the correction controls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Correction {
    /// Holm's step-down procedure: P(any false rejection in the family) ≤ α, under any
    /// dependence between the tests (statsmodels `holm`).
    Holm,
    /// Benjamini–Hochberg's step-up procedure: the expected share of false rejections among
    /// the rejections is ≤ α, for independent or positively dependent tests (statsmodels
    /// `fdr_bh`). Rejects more than Holm when many effects are real.
    BenjaminiHochberg,
}

/// One comparison of a family: an estimated difference (challenger − champion) and its
/// standard error, with a two-sided Gaussian test of "no difference".
///
/// ```
/// use bayes_ab::Hypothesis;
///
/// let h = Hypothesis::new(0.02, 0.01)?;
/// assert!((h.p_value() - 0.045_500_263_896_358_4).abs() < 1e-16);
/// assert!(Hypothesis::new(0.02, 0.0).is_err());
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hypothesis {
    estimate: f64,
    standard_error: f64,
}

impl Hypothesis {
    /// A difference `estimate` with its `standard_error` (for example a
    /// [`CupedComparison`](crate::CupedComparison)'s `difference` and `standard_error`, or a
    /// [`MeanComparison`](crate::MeanComparison)'s difference with the standard error of the
    /// two means).
    ///
    /// # Errors
    /// [`BayesError::InvalidParameter`] for a non-finite estimate, or a standard error that is
    /// not finite and `> 0`.
    pub fn new(estimate: f64, standard_error: f64) -> Result<Self> {
        if !estimate.is_finite() {
            return Err(BayesError::InvalidParameter {
                name: "estimate",
                reason: "must be finite",
            });
        }
        if !(standard_error.is_finite() && standard_error > 0.0) {
            return Err(BayesError::InvalidParameter {
                name: "standard_error",
                reason: "must be finite and > 0",
            });
        }
        Ok(Self {
            estimate,
            standard_error,
        })
    }

    /// The difference of two rates' posteriors, `p_b − p_a`: the difference of the means,
    /// with the posteriors' standard deviations combined (`√(σ_a² + σ_b²)`).
    ///
    /// ```
    /// use bayes_ab::{Beta, Counts, Hypothesis};
    ///
    /// let a = Beta::UNIFORM.update(Counts::new(1_000, 10_000)?);
    /// let b = Beta::UNIFORM.update(Counts::new(1_100, 10_000)?);
    /// let h = Hypothesis::from_posteriors(a, b);
    /// assert!((h.estimate() - 0.01).abs() < 1e-4);
    /// assert!(h.p_value() < 0.05);
    /// # Ok::<(), bayes_ab::BayesError>(())
    /// ```
    #[must_use]
    pub fn from_posteriors(a: Beta, b: Beta) -> Self {
        // A Beta's standard deviation is finite and > 0, so the invariant holds.
        Self {
            estimate: b.mean() - a.mean(),
            standard_error: a.std_dev().hypot(b.std_dev()),
        }
    }

    /// The estimated difference.
    #[must_use]
    pub fn estimate(&self) -> f64 {
        self.estimate
    }

    /// Its standard error.
    #[must_use]
    pub fn standard_error(&self) -> f64 {
        self.standard_error
    }

    /// Two-sided p-value of "no difference": `2 Φ(−|estimate| / standard_error)`.
    #[must_use]
    pub fn p_value(&self) -> f64 {
        (2.0 * normal_cdf(-(self.estimate / self.standard_error).abs())).min(1.0)
    }
}

/// One member of a corrected family.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CorrectedHypothesis {
    /// The hypothesis as given.
    pub hypothesis: Hypothesis,
    /// Its unadjusted two-sided p-value.
    pub p_value: f64,
    /// Its adjusted p-value (statsmodels' `pvals_corrected`): rejected exactly when this is
    /// at most α.
    pub adjusted_p_value: f64,
    /// Whether the correction rejects "no difference".
    pub rejected: bool,
    /// `estimate ± z·standard_error` at the family's
    /// [`interval_alpha`](CorrectedFamily::interval_alpha): excludes zero exactly when
    /// `rejected`.
    pub interval: Interval,
}

/// The outcome of [`correct`] for a whole family, in the order the hypotheses were given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[must_use]
pub struct CorrectedFamily {
    /// The correction applied.
    pub correction: Correction,
    /// The family-level α.
    pub alpha: f64,
    /// One entry per hypothesis, in input order.
    pub hypotheses: Vec<CorrectedHypothesis>,
    /// Number of rejections `R`.
    pub rejections: usize,
    /// The per-hypothesis level of the intervals (each has confidence `1 − interval_alpha`):
    /// for Holm `α/(m − R)` (`α` when all `m` are rejected), for Benjamini–Hochberg
    /// `max(R, 1)·α/m` (Benjamini and Yekutieli's false-coverage-rate level). At that level
    /// every rejected hypothesis has a p-value below it and every other one a p-value above
    /// it, so the intervals and the decisions agree.
    pub interval_alpha: f64,
}

/// Adjusted p-values of a family, in input order: Holm's
/// `max_{j ≤ i} (m − j + 1) p_(j)` or Benjamini–Hochberg's `min_{j ≥ i} m p_(j) / j` over the
/// sorted p-values, capped at 1 (statsmodels `multipletests(..)[1]`).
///
/// ```
/// use bayes_ab::{Correction, adjust_p_values};
///
/// let p = [0.01, 0.04, 0.03, 0.20];
/// let holm = adjust_p_values(&p, Correction::Holm)?;
/// assert_eq!(holm, vec![0.04, 0.09, 0.09, 0.2]);
/// let bh = adjust_p_values(&p, Correction::BenjaminiHochberg)?;
/// assert!((bh[1] - 0.053_333_333_333_333_33).abs() < 1e-15);
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
///
/// # Errors
/// [`BayesError::InvalidParameter`] for an empty family, more than [`HYPOTHESES_MAX`]
/// p-values, or a p-value outside `[0, 1]` (or NaN).
pub fn adjust_p_values(p_values: &[f64], correction: Correction) -> Result<Vec<f64>> {
    Ok(step(p_values, correction, None)?.0)
}

/// Which p-values of a family `correction` rejects at level `alpha`, in input order
/// (statsmodels `multipletests(..)[0]`): Holm rejects the smallest p-values while
/// `p_(k) ≤ α/(m − k + 1)`; Benjamini–Hochberg rejects the `R` smallest, `R` the largest `k`
/// with `p_(k) ≤ (k/m)·α`.
///
/// ```
/// use bayes_ab::{Correction, reject};
///
/// let p = [0.01, 0.025, 0.0375, 0.05];
/// assert_eq!(reject(&p, 0.05, Correction::Holm)?, [true, false, false, false]);
/// assert_eq!(reject(&p, 0.05, Correction::BenjaminiHochberg)?, [true; 4]);
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
///
/// # Errors
/// As [`adjust_p_values`], and [`BayesError::InvalidProbability`] unless `0 < alpha < 1`.
pub fn reject(p_values: &[f64], alpha: f64, correction: Correction) -> Result<Vec<bool>> {
    let alpha = check_probability("alpha", alpha)?;
    Ok(step(p_values, correction, Some(alpha))?
        .1
        .unwrap_or_default())
}

/// Applies `correction` at level `alpha` to a family of hypotheses (every metric × every
/// challenger, say): p-values, adjusted p-values, decisions and agreeing intervals.
///
/// ```
/// use bayes_ab::{Correction, Hypothesis, correct};
///
/// // Three metrics of one challenger: a clear effect, a borderline one, none.
/// let family = [
///     Hypothesis::new(0.030, 0.010)?, // p = 0.0027
///     Hypothesis::new(0.024, 0.010)?, // p = 0.016
///     Hypothesis::new(0.001, 0.010)?, // p = 0.92
/// ];
/// let holm = correct(&family, 0.05, Correction::Holm)?;
/// let rejected: Vec<bool> = holm.hypotheses.iter().map(|h| h.rejected).collect();
/// assert_eq!(rejected, [true, true, false]);
/// // The intervals agree with the decisions.
/// for h in &holm.hypotheses {
///     assert_eq!(h.interval.contains(0.0), !h.rejected);
/// }
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
///
/// # Errors
/// [`BayesError::InvalidProbability`] unless `0 < alpha < 1`; [`BayesError::InvalidParameter`]
/// for an empty family or more than [`HYPOTHESES_MAX`] hypotheses.
pub fn correct(
    hypotheses: &[Hypothesis],
    alpha: f64,
    correction: Correction,
) -> Result<CorrectedFamily> {
    let alpha = check_probability("alpha", alpha)?;
    let p_values: Vec<f64> = hypotheses.iter().map(Hypothesis::p_value).collect();
    let (adjusted, rejected) = step(&p_values, correction, Some(alpha))?;
    let rejected = rejected.unwrap_or_default();
    let rejections = rejected.iter().filter(|&&r| r).count();
    let interval_alpha = interval_level(correction, alpha, hypotheses.len(), rejections);
    let z = normal_quantile(1.0 - 0.5 * interval_alpha);
    let hypotheses = hypotheses
        .iter()
        .zip(p_values)
        .zip(adjusted)
        .zip(rejected)
        .map(
            |(((&hypothesis, p_value), adjusted_p_value), rejected)| CorrectedHypothesis {
                hypothesis,
                p_value,
                adjusted_p_value,
                rejected,
                interval: agreeing_interval(hypothesis, z, rejected),
            },
        )
        .collect();
    Ok(CorrectedFamily {
        correction,
        alpha,
        hypotheses,
        rejections,
        interval_alpha,
    })
}

/// The one level at which a family's intervals agree with its decisions
/// ([`CorrectedFamily::interval_alpha`]).
#[allow(clippy::cast_precision_loss)]
pub(crate) fn interval_level(
    correction: Correction,
    alpha: f64,
    m: usize,
    rejections: usize,
) -> f64 {
    match correction {
        Correction::Holm if rejections == m => alpha,
        Correction::Holm => alpha / (m - rejections) as f64,
        Correction::BenjaminiHochberg => rejections.max(1) as f64 * alpha / m as f64,
    }
}

/// `estimate ± z·standard_error`, made to exclude zero exactly when `rejected`.
pub(crate) fn agreeing_interval(hypothesis: Hypothesis, z: f64, rejected: bool) -> Interval {
    let distance = hypothesis.estimate.abs();
    let mut half = z * hypothesis.standard_error;
    // The decision comes from the p-values and the interval from the quantile; at the
    // boundary their roundings could disagree by an ulp, so the interval yields.
    if rejected && half >= distance {
        half = distance * (1.0 - f64::EPSILON);
    } else if !rejected && half < distance {
        half = distance;
    }
    Interval {
        lower: hypothesis.estimate - half,
        upper: hypothesis.estimate + half,
    }
}

/// Adjusted p-values in input order, and with `alpha` the decisions, computed the way
/// statsmodels' `multipletests` computes them (same comparisons, same order of operations),
/// so that p-values at a threshold decide the same way.
fn step(
    p_values: &[f64],
    correction: Correction,
    alpha: Option<f64>,
) -> Result<(Vec<f64>, Option<Vec<bool>>)> {
    let m = p_values.len();
    if m == 0 || m > HYPOTHESES_MAX {
        return Err(BayesError::InvalidParameter {
            name: "hypotheses",
            reason: "a family holds between 1 and HYPOTHESES_MAX",
        });
    }
    if p_values.iter().any(|p| !(0.0..=1.0).contains(p)) {
        return Err(BayesError::InvalidParameter {
            name: "p-value",
            reason: "must be in [0, 1]",
        });
    }
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| p_values[i].total_cmp(&p_values[j]));
    let sorted: Vec<f64> = order.iter().map(|&i| p_values[i]).collect();
    #[allow(clippy::cast_precision_loss)]
    let mf = m as f64;
    let mut adjusted_sorted = vec![0.0; m];
    let mut rejected_sorted = alpha.map(|_| vec![false; m]);
    match correction {
        Correction::Holm => {
            // Step-down: reject while p_(k) ≤ α/(m − k) (0-based k), stop at the first that
            // is not.
            let mut running_max = 0.0_f64;
            for (k, (&p, adjusted)) in sorted.iter().zip(&mut adjusted_sorted).enumerate() {
                #[allow(clippy::cast_precision_loss)]
                let factor = (m - k) as f64;
                running_max = running_max.max(p * factor);
                *adjusted = running_max;
            }
            if let (Some(alpha), Some(rejected)) = (alpha, rejected_sorted.as_mut()) {
                for (k, (&p, reject)) in sorted.iter().zip(rejected.iter_mut()).enumerate() {
                    #[allow(clippy::cast_precision_loss)]
                    let threshold = alpha / (m - k) as f64;
                    if p > threshold {
                        break;
                    }
                    *reject = true;
                }
            }
        }
        Correction::BenjaminiHochberg => {
            // Step-up: R = the largest k with p_(k) ≤ (k/m)·α (1-based k); reject the R
            // smallest.
            let mut running_min = f64::INFINITY;
            for k in (0..m).rev() {
                #[allow(clippy::cast_precision_loss)]
                let ecdf = (k + 1) as f64 / mf;
                running_min = running_min.min(sorted[k] / ecdf);
                adjusted_sorted[k] = running_min;
            }
            if let (Some(alpha), Some(rejected)) = (alpha, rejected_sorted.as_mut()) {
                #[allow(clippy::cast_precision_loss)]
                let last = (0..m)
                    .rev()
                    .find(|&k| sorted[k] <= (k + 1) as f64 / mf * alpha);
                if let Some(last) = last {
                    rejected[..=last].fill(true);
                }
            }
        }
    }
    let mut adjusted = vec![0.0; m];
    for (&i, &a) in order.iter().zip(&adjusted_sorted) {
        adjusted[i] = a.min(1.0);
    }
    let rejected = rejected_sorted.map(|sorted| {
        let mut out = vec![false; m];
        for (&i, &r) in order.iter().zip(&sorted) {
            out[i] = r;
        }
        out
    });
    Ok((adjusted, rejected))
}
