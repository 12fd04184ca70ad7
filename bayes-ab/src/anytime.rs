//! Anytime-valid confidence sequences: coverage holds at every sample size from the first
//! observation, however often one looks, not only asymptotically.
//!
//! For observations in `[0, 1]` with mean `m`, and any `p`, the product
//! `Π (p/m)^{x_i} ((1−p)/(1−m))^{1−x_i}` is a non-negative supermartingale: each factor is
//! convex in `x_i`, so its expectation is at most its value for a Bernoulli(`m`) observation,
//! which is 1 (Hoeffding's convexity argument; equality for conversions). Mixing `p` over
//! Jeffreys' Beta(½, ½) keeps it one (Robbins' method of mixtures) and gives
//!
//! `M_n(m) = B(½ + S, ½ + n − S) / (B(½, ½) m^S (1 − m)^{n−S})`, `S = Σ x_i`,
//!
//! which depends on the data only through `(S, n)`. By Ville's inequality
//! `P(∃ n: M_n(m) ≥ 1/α) ≤ α`, so `{m : M_n(m) < 1/α}` is a `(1 − α)` confidence sequence:
//! valid at every `n ≥ 1` simultaneously, for any stopping rule, in finite samples. (This is
//! the conjugate-mixture member of the family of betting confidence sequences of
//! Waudby-Smith & Ramdas, 2023: the mixture over bets of the Kelly gambler; Howard et al.,
//! 2021, give the same bound.) Two arms are combined by a union bound, `α/2` each.

use serde::{Deserialize, Serialize};

use crate::beta::{Counts, Interval};
use crate::error::{BayesError, Result, check_probability};
use crate::special::ln_beta;

/// `ln B(½, ½) = ln π`.
const LN_BETA_HALF_HALF: f64 = 1.144_729_885_849_400_2;

/// The `(1 − alpha)` anytime-valid interval of the mean of `n` observations in `[0, 1]`
/// with sum `s` (not validated: `0 ≤ s ≤ n`, `n > 0`).
pub(crate) fn mean_interval(s: f64, n: f64, alpha: f64) -> Interval {
    let f = (n - s).max(0.0);
    // ln(mixture) − ln(1/α): negative, and the interval is where −S ln m − F ln(1 − m) stays
    // below its magnitude.
    let level = ln_beta(0.5 + s, 0.5 + f) - LN_BETA_HALF_HALF + alpha.ln();
    Interval {
        lower: lower_root(s, f, level),
        upper: 1.0 - lower_root(f, s, level),
    }
}

/// The root below `s / (s + f)` of `h(m) = level − s ln m − f ln(1 − m)`, where
/// `level = ln(mixture) − ln(1/α) < 0`.
/// Newton's method in `u = ln m`, where `h` is convex and decreasing left of the root, so
/// Newton from a point with `h ≥ 0` climbs monotonically to the root.
fn lower_root(s: f64, f: f64, level: f64) -> f64 {
    if s <= 0.0 {
        return 0.0;
    }
    // h(u) = level − s u − f ln(1 − e^u), level here ≤ 0.
    let h = |u: f64| level - s * u - f * (-u.exp()).ln_1p();
    let n = s + f;
    let m_hat = s / n;
    let u_hat = m_hat.ln();
    // The start: the root of the quadratic (normal) approximation of the negative
    // log-likelihood around its minimum at m̂, `(m − m̂)²·n / (2 m̂ (1 − m̂)) = −h(m̂)`. It is
    // close enough for two or three Newton steps; if it lies right of the root (h < 0), the
    // first step lands left of it (h is convex and decreasing there) and the rest climb.
    let nll_min = -(s * u_hat + if f > 0.0 { f * (f / n).ln() } else { 0.0 });
    let gap = -level - nll_min;
    let m0 = m_hat - (2.0 * gap * m_hat * (1.0 - m_hat) / n).sqrt();
    let mut u = if gap > 0.0 && m0 > 0.0 && m0 < m_hat {
        m0.ln()
    } else {
        // At u = level / s the first two terms cancel and the last is ≥ 0.
        let mut u = (level / s).min(u_hat);
        let mut step = 1.0;
        while h(u) < 0.0 {
            u -= step;
            step *= 2.0;
        }
        u
    };
    for _ in 0..100 {
        let e = u.exp();
        let value = level - s * u - f * (-e).ln_1p();
        let slope = -s + f * e / (1.0 - e);
        if slope >= 0.0 || slope.is_nan() {
            break;
        }
        let next = u - value / slope;
        if (next - u).abs() <= 1e-13 * u.abs().max(1.0) {
            u = next;
            break;
        }
        u = next;
    }
    u.exp().min(s / (s + f))
}

/// The `(1 − alpha)` anytime-valid confidence sequence for `p_b − p_a` from two arms'
/// conversion counts: valid at every look from the first observation, for any peeking or
/// stopping rule, with no minimum sample. Each arm gets a `(1 − alpha/2)` sequence
/// ([`anytime_mean_interval`]); the difference takes their extremes.
///
/// ```
/// use bayes_ab::{Counts, anytime_confidence_sequence};
///
/// let cs = anytime_confidence_sequence(Counts::new(1000, 10_000)?, Counts::new(1400, 10_000)?, 0.05)?;
/// assert!(cs.lower > 0.0); // B is better, whenever we looked
/// // About twice as wide as the asymptotic sequence: the price of validity from n = 1.
/// let narrow = anytime_confidence_sequence(Counts::new(1000, 10_000)?, Counts::new(1250, 10_000)?, 0.05)?;
/// assert!(narrow.lower < 0.0);
/// let early = anytime_confidence_sequence(Counts::new(0, 1)?, Counts::new(1, 1)?, 0.05)?;
/// assert!(early.lower < 0.0 && early.upper > 0.0); // one observation each proves nothing
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
///
/// # Errors
/// [`BayesError::InvalidProbability`] for `alpha` outside `(0, 1)`.
pub fn anytime_confidence_sequence(a: Counts, b: Counts, alpha: f64) -> Result<Interval> {
    check_probability("alpha", alpha)?;
    Ok(difference_unchecked(
        BoundedSum::from(a),
        BoundedSum::from(b),
        alpha,
    ))
}

/// The `(1 − alpha)` anytime-valid confidence sequence of one arm's mean, from `n`
/// observations in `[0, 1]` summing to `sum` (conversions: the number of successes).
///
/// ```
/// use bayes_ab::anytime_mean_interval;
///
/// let ci = anytime_mean_interval(100.0, 1_000, 0.05)?;
/// assert!(ci.lower > 0.06 && ci.upper < 0.14);
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
///
/// # Errors
/// [`BayesError::InvalidProbability`] for `alpha` outside `(0, 1)`;
/// [`BayesError::InvalidParameter`] unless `0 ≤ sum ≤ n`.
pub fn anytime_mean_interval(sum: f64, n: u64, alpha: f64) -> Result<Interval> {
    check_probability("alpha", alpha)?;
    #[allow(clippy::cast_precision_loss)]
    let nf = n as f64;
    if !(sum >= 0.0 && sum <= nf) {
        return Err(BayesError::InvalidParameter {
            name: "sum",
            reason: "must be between 0 and the number of observations",
        });
    }
    if n == 0 {
        return Ok(Interval {
            lower: 0.0,
            upper: 1.0,
        });
    }
    Ok(mean_interval(sum, nf, alpha))
}

/// Running count and sum of observations of a metric bounded in a known range
/// `[lower, upper]` (a capped revenue, a score), for the anytime-valid sequences of
/// [`anytime_bounded_difference`]. Mergeable.
///
/// ```
/// use bayes_ab::{BoundedStats, anytime_bounded_difference};
///
/// let (mut a, mut b) = (BoundedStats::new(0.0, 100.0)?, BoundedStats::new(0.0, 100.0)?);
/// for i in 0..2_000 {
///     a.record(f64::from(i % 50))?;      // mean 24.5
///     b.record(f64::from(i % 50) + 20.0)?; // mean 44.5
/// }
/// let cs = anytime_bounded_difference(&a, &b, 0.05)?;
/// assert!(cs.lower > 0.0 && cs.contains(20.0));
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoundedStats {
    lower: f64,
    upper: f64,
    count: u64,
    /// Σ (x − lower) / (upper − lower).
    scaled_sum: f64,
}

impl BoundedStats {
    /// No observations yet, in `[lower, upper]`.
    ///
    /// # Errors
    /// [`BayesError::InvalidParameter`] unless both are finite and `lower < upper`.
    pub fn new(lower: f64, upper: f64) -> Result<Self> {
        if !(lower.is_finite() && upper.is_finite() && lower < upper) {
            return Err(BayesError::InvalidParameter {
                name: "bounds",
                reason: "must be finite with lower < upper",
            });
        }
        Ok(Self {
            lower,
            upper,
            count: 0,
            scaled_sum: 0.0,
        })
    }

    /// Adds one observation.
    ///
    /// # Errors
    /// [`BayesError::InvalidParameter`] for a value outside the bounds (or NaN): the
    /// guarantee needs the bounds to hold; [`BayesError::CountOverflow`].
    pub fn record(&mut self, x: f64) -> Result<()> {
        if !(x >= self.lower && x <= self.upper) {
            return Err(BayesError::InvalidParameter {
                name: "observation",
                reason: "must lie within the declared bounds",
            });
        }
        self.count = self.count.checked_add(1).ok_or(BayesError::CountOverflow)?;
        self.scaled_sum += (x - self.lower) / (self.upper - self.lower);
        Ok(())
    }

    /// The statistics of both streams.
    ///
    /// # Errors
    /// [`BayesError::Incompatible`] for different bounds; [`BayesError::CountOverflow`].
    pub fn merge(self, other: BoundedStats) -> Result<BoundedStats> {
        if self.lower != other.lower || self.upper != other.upper {
            return Err(BayesError::Incompatible {
                reason: "bounded statistics with different bounds",
            });
        }
        Ok(BoundedStats {
            count: self
                .count
                .checked_add(other.count)
                .ok_or(BayesError::CountOverflow)?,
            scaled_sum: self.scaled_sum + other.scaled_sum,
            ..self
        })
    }

    /// Observations.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The declared bounds `(lower, upper)`.
    #[must_use]
    pub fn bounds(&self) -> (f64, f64) {
        (self.lower, self.upper)
    }
}

/// The `(1 − alpha)` anytime-valid confidence sequence for `μ_b − μ_a` of a bounded metric,
/// in the metric's unit.
///
/// # Errors
/// [`BayesError::InvalidProbability`] for `alpha` outside `(0, 1)`;
/// [`BayesError::Incompatible`] for arms with different bounds.
pub fn anytime_bounded_difference(
    a: &BoundedStats,
    b: &BoundedStats,
    alpha: f64,
) -> Result<Interval> {
    check_probability("alpha", alpha)?;
    if a.lower != b.lower || a.upper != b.upper {
        return Err(BayesError::Incompatible {
            reason: "bounded statistics with different bounds",
        });
    }
    let width = a.upper - a.lower;
    let d = difference_unchecked(BoundedSum::from_stats(a), BoundedSum::from_stats(b), alpha);
    Ok(Interval {
        lower: d.lower * width,
        upper: d.upper * width,
    })
}

/// `(n, S)` of one arm on the `[0, 1]` scale.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BoundedSum {
    n: f64,
    s: f64,
}

impl From<Counts> for BoundedSum {
    #[allow(clippy::cast_precision_loss)]
    fn from(c: Counts) -> Self {
        Self {
            n: c.trials() as f64,
            s: c.successes() as f64,
        }
    }
}

impl BoundedSum {
    #[allow(clippy::cast_precision_loss)]
    fn from_stats(b: &BoundedStats) -> Self {
        Self {
            n: b.count as f64,
            s: b.scaled_sum.clamp(0.0, b.count as f64),
        }
    }

    fn interval(self, alpha: f64) -> Interval {
        if self.n <= 0.0 {
            Interval {
                lower: 0.0,
                upper: 1.0,
            }
        } else {
            mean_interval(self.s, self.n, alpha)
        }
    }
}

/// The difference sequence on the `[0, 1]` scale, `alpha/2` per arm.
pub(crate) fn difference_unchecked(a: BoundedSum, b: BoundedSum, alpha: f64) -> Interval {
    let (ia, ib) = (a.interval(0.5 * alpha), b.interval(0.5 * alpha));
    Interval {
        lower: ib.lower - ia.upper,
        upper: ib.upper - ia.lower,
    }
}
