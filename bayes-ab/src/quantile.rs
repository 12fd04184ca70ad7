//! Quantile metrics: the difference in a latency quantile (p50, p95, p99) between champion
//! and challenger, with a distribution-free interval.

use serde::{Deserialize, Serialize};

use crate::beta::Interval;
use crate::error::{Result, check_probability};
use crate::guardrail::LatencySketch;

/// The difference in the `q`-quantile of a latency between challenger (B) and champion (A),
/// in microseconds, with its interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[must_use]
pub struct QuantileDifference {
    /// The quantile compared (0.95 for p95).
    pub quantile: f64,
    /// `ξ_b − ξ_a` from the two sketches, in microseconds.
    pub difference_micros: f64,
    /// Interval of `ξ_b − ξ_a` at the requested confidence, in microseconds. An end that the
    /// samples are too small to bound (see `lower_bounded`, `upper_bounded`) is infinite.
    pub difference_interval: Interval,
    /// `ξ_b / ξ_a − 1` (infinite if `ξ_a` is 0 and `ξ_b` is not).
    pub relative_change: f64,
    /// Interval of `ξ_b / ξ_a − 1` at the same confidence (infinite ends as above, or when
    /// A's lower end is zero).
    pub relative_change_interval: Interval,
    /// Whether the lower ends are true confidence bounds.
    pub lower_bounded: bool,
    /// Whether the upper ends are true confidence bounds.
    pub upper_bounded: bool,
}

/// Compares the `q`-quantile of two latency sketches (champion `a`, challenger `b`).
///
/// Each arm gets the distribution-free order-statistic interval of
/// [`LatencySketch::quantile_interval`] at confidence `1 − (1 − confidence)/2`; both hold
/// together with probability at least `confidence` (a union bound), and then
/// `ξ_b − ξ_a ∈ [lower_b − upper_a, upper_b − lower_a]` and
/// `ξ_b / ξ_a − 1 ∈ [lower_b / upper_a − 1, upper_b / lower_a − 1]`. No assumption about the
/// shape of the latency distribution, no resampling (deterministic); conservative by the
/// union bound, and exact only up to the sketch's resolution (three significant digits).
///
/// ```
/// use std::time::Duration;
/// use bayes_ab::{LatencySketch, quantile_difference};
///
/// let (mut a, mut b) = (LatencySketch::new(), LatencySketch::new());
/// for i in 0..2_000u64 {
///     let base = 1_000 + (i * 7_919) % 1_000; // 1.0 to 2.0 ms
///     a.record(Duration::from_micros(base));
///     b.record(Duration::from_micros(base + 300)); // 0.3 ms slower everywhere
/// }
/// let d = quantile_difference(&a, &b, 0.95, 0.95)?;
/// assert!((d.difference_micros - 300.0).abs() <= 2.0); // sketch resolution
/// assert!(d.difference_interval.contains(300.0) && d.difference_interval.lower > 0.0);
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
///
/// # Errors
/// [`BayesError::InvalidProbability`](crate::BayesError::InvalidProbability) unless
/// `0 < q < 1` and `0 < confidence < 1`;
/// [`BayesError::InsufficientData`](crate::BayesError::InsufficientData) when a sketch is
/// empty.
pub fn quantile_difference(
    a: &LatencySketch,
    b: &LatencySketch,
    q: f64,
    confidence: f64,
) -> Result<QuantileDifference> {
    let confidence = check_probability("confidence", confidence)?;
    let per_arm = 1.0 - 0.5 * (1.0 - confidence);
    let (ia, ib) = (
        a.quantile_interval(q, per_arm)?,
        b.quantile_interval(q, per_arm)?,
    );
    let micros = |d: std::time::Duration| d.as_secs_f64() * 1e6;
    let (ea, eb) = (micros(ia.estimate), micros(ib.estimate));
    let lower_bounded = ia.upper_bounded && ib.lower_bounded;
    let upper_bounded = ia.lower_bounded && ib.upper_bounded;
    let lower = if lower_bounded {
        micros(ib.lower) - micros(ia.upper)
    } else {
        f64::NEG_INFINITY
    };
    let upper = if upper_bounded {
        micros(ib.upper) - micros(ia.lower)
    } else {
        f64::INFINITY
    };
    let relative_lower = if lower_bounded && micros(ia.upper) > 0.0 {
        micros(ib.lower) / micros(ia.upper) - 1.0
    } else {
        -1.0
    };
    let relative_upper = if upper_bounded && micros(ia.lower) > 0.0 {
        micros(ib.upper) / micros(ia.lower) - 1.0
    } else {
        f64::INFINITY
    };
    Ok(QuantileDifference {
        quantile: q,
        difference_micros: eb - ea,
        difference_interval: Interval { lower, upper },
        relative_change: if ea > 0.0 {
            eb / ea - 1.0
        } else if eb > 0.0 {
            f64::INFINITY
        } else {
            0.0
        },
        relative_change_interval: Interval {
            lower: relative_lower,
            upper: relative_upper,
        },
        lower_bounded,
        upper_bounded,
    })
}
