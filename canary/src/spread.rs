//! Tests beside Mann-Whitney for what a rank-shift test misses: a larger spread (the
//! Brown-Forsythe test) and, for zero-heavy metrics, a larger share of non-zero values (a
//! two-proportion test).
//!
//! A Mann-Whitney U test compares locations: a canary with the same median and twice the
//! spread passes it (spinnaker/kayenta#780), and on a metric that is zero most of the time
//! its ties swallow the difference (kayenta#426). [`MannWhitneyJudge`](crate::MannWhitneyJudge)
//! runs these tests next to it.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};
use statrs::function::erf::erfc;

use crate::error::{CanaryError, Result};
use crate::mann_whitney::SAMPLES_MAX;

/// The result of a one-sided Brown-Forsythe test: is the canary's spread larger than the
/// baseline's?
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[must_use]
pub struct SpreadTest {
    /// Student's t of the mean absolute deviations from each arm's median (canary minus
    /// baseline), with `n_canary + n_baseline − 2` degrees of freedom; positive when the
    /// canary spreads more. Its square is the Brown-Forsythe F statistic.
    pub statistic: f64,
    /// One-sided p-value of "the canary's spread is no larger than the baseline's".
    pub p_value: f64,
    /// Mean absolute deviation from the median, canary over baseline (1 for equal spreads,
    /// +∞ when only the canary varies).
    pub spread_ratio: f64,
}

/// One-sided Brown-Forsythe test (Levene's test on absolute deviations from the median) of
/// `canary`'s spread against `baseline`'s. Robust to heavy tails and skew, which latency has.
///
/// ```
/// use canary::brown_forsythe;
///
/// // The same median (50), the canary spread twice as wide.
/// let baseline: Vec<f64> = (0..200).map(|i| 50.0 + f64::from(i % 21) - 10.0).collect();
/// let wider: Vec<f64> = baseline.iter().map(|x| 50.0 + 2.0 * (x - 50.0)).collect();
/// let t = brown_forsythe(&baseline, &wider)?;
/// assert!(t.p_value < 1e-6 && (t.spread_ratio - 2.0).abs() < 1e-9);
/// // A narrower canary is no regression.
/// assert!(brown_forsythe(&wider, &baseline)?.p_value > 0.99);
/// # Ok::<(), canary::CanaryError>(())
/// ```
///
/// # Errors
/// [`CanaryError::InvalidObservation`] when an arm has fewer than 2 samples or more than
/// [`SAMPLES_MAX`], or a sample is not finite.
pub fn brown_forsythe(baseline: &[f64], canary: &[f64]) -> Result<SpreadTest> {
    let bad = |reason: String| Err(CanaryError::InvalidObservation { reason });
    if baseline.len() < 2 || canary.len() < 2 {
        return bad("the spread test needs at least 2 samples in each arm".into());
    }
    if baseline.len() > SAMPLES_MAX || canary.len() > SAMPLES_MAX {
        return bad(format!("more than {SAMPLES_MAX} samples in one arm"));
    }
    if baseline.iter().chain(canary).any(|x| !x.is_finite()) {
        return bad("a sample is not finite".into());
    }
    let deviations = |xs: &[f64]| {
        let m = median(xs);
        xs.iter().map(|x| (x - m).abs()).collect::<Vec<f64>>()
    };
    let (zb, zc) = (deviations(baseline), deviations(canary));
    #[allow(clippy::cast_precision_loss)] // bounded by SAMPLES_MAX
    let (nb, nc) = (zb.len() as f64, zc.len() as f64);
    let (mb, mc) = (zb.iter().sum::<f64>() / nb, zc.iter().sum::<f64>() / nc);
    let ss = zb.iter().map(|z| (z - mb).powi(2)).sum::<f64>()
        + zc.iter().map(|z| (z - mc).powi(2)).sum::<f64>();
    let df = nb + nc - 2.0;
    let se = (ss / df * (1.0 / nb + 1.0 / nc)).sqrt();
    let spread_ratio = if mb > 0.0 {
        mc / mb
    } else if mc > 0.0 {
        f64::INFINITY
    } else {
        1.0
    };
    let (statistic, p_value) = if se > 0.0 {
        let t = (mc - mb) / se;
        let p = StudentsT::new(0.0, 1.0, df).map_or(1.0, |d| d.sf(t));
        (t, p.clamp(0.0, 1.0))
    } else if mc > mb {
        // No variation inside either arm, yet the canary deviates more: certain.
        (f64::INFINITY, 0.0)
    } else {
        (0.0, 1.0)
    };
    Ok(SpreadTest {
        statistic,
        p_value,
        spread_ratio,
    })
}

/// The result of a two-proportion z-test of the share of non-zero values.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[must_use]
pub struct ProportionTest {
    /// Share of non-zero values in the baseline.
    pub baseline_share: f64,
    /// Share of non-zero values in the canary.
    pub canary_share: f64,
    /// Standardised difference (canary minus baseline, pooled variance); positive when the
    /// canary has more non-zero values.
    pub z: f64,
    /// Two-sided p-value.
    pub p_value: f64,
}

/// Two-proportion z-test of the share of non-zero values in `canary` against `baseline`
/// (the "hurdle" half of a zero-inflated comparison).
///
/// # Errors
/// [`CanaryError::InvalidObservation`] for an empty arm.
pub(crate) fn nonzero_shares(baseline: &[f64], canary: &[f64]) -> Result<ProportionTest> {
    if baseline.is_empty() || canary.is_empty() {
        return Err(CanaryError::InvalidObservation {
            reason: "the proportion test needs at least one sample in each arm".into(),
        });
    }
    let nonzero = |xs: &[f64]| xs.iter().filter(|x| **x != 0.0).count();
    #[allow(clippy::cast_precision_loss)] // bounded by SAMPLES_MAX
    let (kb, kc, nb, nc) = (
        nonzero(baseline) as f64,
        nonzero(canary) as f64,
        baseline.len() as f64,
        canary.len() as f64,
    );
    let (pb, pc) = (kb / nb, kc / nc);
    let pooled = (kb + kc) / (nb + nc);
    let se = (pooled * (1.0 - pooled) * (1.0 / nb + 1.0 / nc)).sqrt();
    let (z, p_value) = if se > 0.0 {
        let z = (pc - pb) / se;
        (z, erfc(z.abs() / std::f64::consts::SQRT_2).clamp(0.0, 1.0))
    } else {
        (0.0, 1.0)
    };
    Ok(ProportionTest {
        baseline_share: pb,
        canary_share: pc,
        z,
        p_value,
    })
}

/// The median of finite values (`xs` not empty), by selection (linear time).
fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    let n = v.len();
    let (lower, upper, _) = v.select_nth_unstable_by(n / 2, f64::total_cmp);
    let upper = *upper;
    if n % 2 == 1 {
        upper
    } else {
        // The largest of the lower half is the other middle value.
        let below = lower.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (below + upper) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn medians() {
        for (xs, m) in [
            (vec![3.0], 3.0),
            (vec![2.0, 1.0], 1.5),
            (vec![5.0, 1.0, 3.0], 3.0),
            (vec![4.0, 1.0, 3.0, 2.0], 2.5),
            (vec![1.0, 1.0, 1.0, 9.0], 1.0),
        ] {
            assert_eq!(median(&xs), m, "{xs:?}");
        }
    }
}
