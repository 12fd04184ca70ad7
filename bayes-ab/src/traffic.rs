//! Traffic: deterministic sticky assignment of units to arms, and the sample-ratio-mismatch
//! check.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use statrs::distribution::{ChiSquared, ContinuousCDF};

use crate::continuous::MeanStats;
use crate::error::{BayesError, Result};
use crate::special::normal_cdf;

/// Basis points in 100 %.
pub const BASIS_POINTS: u32 = 10_000;

/// Most arms a [`TrafficSplit`] holds.
pub const SPLIT_ARMS_MAX: usize = 64;

/// Traffic weights of each arm, in basis points (1/100 of a percent) summing to exactly
/// 10,000. Zero weights are allowed (an arm not yet ramped up).
///
/// ```
/// use bayes_ab::TrafficSplit;
///
/// let split = TrafficSplit::new(vec![9_000, 1_000])?; // 90 % champion, 10 % challenger
/// let arm = split.assign("checkout-v2", "user-42");
/// assert_eq!(arm, split.assign("checkout-v2", "user-42")); // sticky
/// assert!(TrafficSplit::new(vec![5_000, 4_000]).is_err()); // sums to 90 %
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<u32>", into = "Vec<u32>")]
pub struct TrafficSplit {
    weights: Vec<u32>,
}

impl TryFrom<Vec<u32>> for TrafficSplit {
    type Error = BayesError;
    fn try_from(weights: Vec<u32>) -> Result<Self> {
        Self::new(weights)
    }
}

impl From<TrafficSplit> for Vec<u32> {
    fn from(s: TrafficSplit) -> Self {
        s.weights
    }
}

impl TrafficSplit {
    /// A split from basis-point weights.
    ///
    /// # Errors
    /// [`BayesError::InvalidWeights`] for fewer than two arms, more than [`SPLIT_ARMS_MAX`], or
    /// weights not summing to 10,000.
    pub fn new(weights: Vec<u32>) -> Result<Self> {
        if weights.len() < 2 {
            return Err(BayesError::InvalidWeights {
                reason: "need at least two arms",
            });
        }
        if weights.len() > SPLIT_ARMS_MAX {
            return Err(BayesError::InvalidWeights {
                reason: "more than SPLIT_ARMS_MAX arms",
            });
        }
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        if total != u64::from(BASIS_POINTS) {
            return Err(BayesError::InvalidWeights {
                reason: "weights must sum to 10,000 basis points (100 %)",
            });
        }
        Ok(Self { weights })
    }

    /// An even split over `arms` arms (the remainder goes to the first arms).
    ///
    /// # Errors
    /// As [`TrafficSplit::new`].
    pub fn even(arms: usize) -> Result<Self> {
        if !(2..=SPLIT_ARMS_MAX).contains(&arms) {
            return Err(BayesError::InvalidWeights {
                reason: "need between 2 and SPLIT_ARMS_MAX arms",
            });
        }
        let n = u32::try_from(arms).map_err(|_| BayesError::InvalidWeights {
            reason: "too many arms",
        })?;
        let (each, rest) = (BASIS_POINTS / n, BASIS_POINTS % n);
        Self::new((0..n).map(|i| each + u32::from(i < rest)).collect())
    }

    /// The weights in basis points.
    #[must_use]
    pub fn weights(&self) -> &[u32] {
        &self.weights
    }

    /// The arm of `unit_id` in the experiment salted with `salt`: deterministic, sticky, and
    /// independent between experiments with different salts. The unit's bucket is the first
    /// 8 bytes of SHA-256(len(salt) ‖ salt ‖ unit_id) modulo 10,000; arms own consecutive
    /// bucket ranges in order, so growing the last arm's weight only moves units into it.
    #[must_use]
    pub fn assign(&self, salt: &str, unit_id: &str) -> usize {
        let bucket = bucket(salt, unit_id);
        let mut upper = 0;
        for (i, &w) in self.weights.iter().enumerate() {
            upper += w;
            if bucket < upper {
                return i;
            }
        }
        self.weights.len() - 1
    }
}

/// The bucket in `0..10_000` of a unit in a salted experiment.
fn bucket(salt: &str, unit_id: &str) -> u32 {
    let mut hasher = Sha256::new();
    hasher.update((salt.len() as u64).to_be_bytes());
    hasher.update(salt.as_bytes());
    hasher.update(unit_id.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // The remainder is below 10,000, so it fits.
    u32::try_from(u64::from_be_bytes(first) % u64::from(BASIS_POINTS)).unwrap_or(0)
}

/// The p-value below which [`srm_check`] flags a mismatch.
pub const SRM_ALERT_P_VALUE: f64 = 0.001;

/// A sample-ratio-mismatch test result.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[must_use]
pub struct SrmCheck {
    /// Pearson's χ² statistic.
    pub chi_square: f64,
    /// Degrees of freedom (arms with positive weight − 1).
    pub degrees_of_freedom: u32,
    /// P(χ² ≥ statistic) under the configured split.
    pub p_value: f64,
    /// `p_value < 0.001`: the observed traffic does not match the split; results are suspect
    /// (broken assignment, bot filtering, logging loss) until the cause is found.
    pub mismatch: bool,
}

/// Sample-ratio-mismatch check: Pearson's χ² test of the observed units per arm against the
/// split, alerting at p < [`SRM_ALERT_P_VALUE`].
///
/// ```
/// use bayes_ab::{TrafficSplit, srm_check};
///
/// let split = TrafficSplit::new(vec![5_000, 5_000])?;
/// assert!(!srm_check(&[10_050, 9_950], &split)?.mismatch);
/// assert!(srm_check(&[10_500, 9_500], &split)?.mismatch);
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
///
/// # Errors
/// [`BayesError::ArmCount`] when the counts and the split have different lengths;
/// [`BayesError::InsufficientData`] when no unit was observed; [`BayesError::InvalidWeights`] when an arm
/// with zero weight received units (a certain mismatch, reported as an error since χ² is
/// undefined).
pub fn srm_check(observed: &[u64], split: &TrafficSplit) -> Result<SrmCheck> {
    let weights = split.weights();
    if observed.len() != weights.len() {
        return Err(BayesError::ArmCount {
            operation: "srm_check",
            got: observed.len(),
            min: weights.len(),
            max: weights.len(),
        });
    }
    let total: u64 = observed.iter().sum();
    if total == 0 {
        return Err(BayesError::InsufficientData {
            what: "no units observed",
        });
    }
    #[allow(clippy::cast_precision_loss)]
    let total = total as f64;
    let mut chi_square = 0.0;
    let mut arms = 0u32;
    for (&o, &w) in observed.iter().zip(weights) {
        if w == 0 {
            if o > 0 {
                return Err(BayesError::InvalidWeights {
                    reason: "an arm with zero weight received units",
                });
            }
            continue;
        }
        arms += 1;
        let expected = total * f64::from(w) / f64::from(BASIS_POINTS);
        #[allow(clippy::cast_precision_loss)]
        let diff = o as f64 - expected;
        chi_square += diff * diff / expected;
    }
    let degrees_of_freedom = arms.saturating_sub(1).max(1);
    let p_value = ChiSquared::new(f64::from(degrees_of_freedom))
        .map(|d| d.sf(chi_square))
        .unwrap_or(f64::NAN);
    let mismatch = p_value < SRM_ALERT_P_VALUE;
    if mismatch {
        tracing::warn!(chi_square, p_value, "sample ratio mismatch");
        metrics::counter!("bayes_ab_srm_mismatches_total").increment(1);
    }
    Ok(SrmCheck {
        chi_square,
        degrees_of_freedom,
        p_value,
        mismatch,
    })
}

/// A pre-exposure bias check on a covariate measured before assignment (last month's
/// spend, the pre-period conversion rate): the arms' covariate means should differ only by
/// chance. A significant difference means assignment or logging is broken, or the covariate
/// was measured after exposure; variance reduction on it would then bias the result.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[must_use]
pub struct CovariateBalance {
    /// Challenger's covariate mean minus champion's.
    pub difference: f64,
    /// Welch's statistic: the difference over its standard error.
    pub z: f64,
    /// Two-sided p-value (normal reference distribution: the arms have A/B-test sizes).
    pub p_value: f64,
    /// `p_value <` [`SRM_ALERT_P_VALUE`]: the covariate is not balanced.
    pub imbalanced: bool,
}

/// Tests whether the pre-period covariate is balanced between champion `a` and challenger
/// `b` (Welch's unequal-variance z test), alerting at p < [`SRM_ALERT_P_VALUE`] like the SRM
/// check.
///
/// ```
/// use bayes_ab::{MeanStats, covariate_balance_check};
///
/// let a = MeanStats::from_moments(10_000, 50.0, 9_999.0 * 100.0)?; // sd 10
/// let b = MeanStats::from_moments(10_000, 50.1, 9_999.0 * 100.0)?;
/// assert!(!covariate_balance_check(a, b)?.imbalanced);
/// let shifted = MeanStats::from_moments(10_000, 51.0, 9_999.0 * 100.0)?;
/// assert!(covariate_balance_check(a, shifted)?.imbalanced);
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
///
/// # Errors
/// [`BayesError::InsufficientData`] for an arm with fewer than two observations, or when both
/// arms' covariate has zero variance.
pub fn covariate_balance_check(a: MeanStats, b: MeanStats) -> Result<CovariateBalance> {
    #[allow(clippy::cast_precision_loss)]
    let se = (a.variance()? / a.count() as f64 + b.variance()? / b.count() as f64).sqrt();
    let difference = b.mean()? - a.mean()?;
    if se == 0.0 {
        return Err(BayesError::InsufficientData {
            what: "the covariate has zero variance in both arms",
        });
    }
    let z = difference / se;
    let p_value = 2.0 * normal_cdf(-z.abs());
    Ok(CovariateBalance {
        difference,
        z,
        p_value,
        imbalanced: p_value < SRM_ALERT_P_VALUE,
    })
}
