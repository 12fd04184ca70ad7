//! Thompson-sampling bandit: traffic shares from posterior draws, with a top-two option and a
//! minimum share per arm.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::beta::Beta;
use crate::error::{BayesError, Result, check_probability};
use crate::multi::{ARMS_MAX, DRAWS_MAX};

/// Resampling attempts per draw to find a top-two challenger different from the leader,
/// after which the runner-up of the last sample is taken.
const TOP_TWO_ATTEMPTS_MAX: u32 = 8;

/// Thompson-sampling allocator. Build with [`ThompsonBandit::builder`].
///
/// ```
/// use bayes_ab::{Beta, Counts, ThompsonBandit};
/// use rand::{SeedableRng, rngs::StdRng};
///
/// let bandit = ThompsonBandit::builder().draws(2_000).min_share(0.05).build()?;
/// let arms = [
///     Beta::UNIFORM.update(Counts::new(50, 1_000)?),
///     Beta::UNIFORM.update(Counts::new(80, 1_000)?),
///     Beta::UNIFORM.update(Counts::new(52, 1_000)?),
/// ];
/// let shares = bandit.allocate(&arms, &mut StdRng::seed_from_u64(3))?;
/// assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-12);
/// assert!(shares[1] > 0.8 && shares[0] >= 0.05 && shares[2] >= 0.05);
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThompsonBandit {
    draws: u32,
    top_two: Option<f64>,
    min_share: f64,
}

/// Builder for [`ThompsonBandit`]. Defaults: 1,000 draws, plain Thompson sampling, no minimum
/// share.
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct ThompsonBanditBuilder {
    bandit: ThompsonBandit,
}

impl ThompsonBanditBuilder {
    /// Posterior draws per allocation (the shares' standard error is about `√(s(1−s)/draws)`).
    pub fn draws(mut self, draws: u32) -> Self {
        self.bandit.draws = draws;
        self
    }

    /// Top-two Thompson sampling (Russo, 2016): with probability `beta` play the sampled
    /// leader, otherwise the leader of a new sample that differs from it. Spends more traffic
    /// on the runner-up, to identify the best arm sooner (pure exploration). 0.5 is usual.
    pub fn top_two(mut self, beta: f64) -> Self {
        self.bandit.top_two = Some(beta);
        self
    }

    /// Smallest share any arm gets, e.g. 0.05: keeps every arm measured.
    pub fn min_share(mut self, share: f64) -> Self {
        self.bandit.min_share = share;
        self
    }

    /// The bandit.
    ///
    /// # Errors
    /// [`BayesError::InvalidParameter`] for zero or too many draws, or a minimum share outside
    /// `[0, 1)`; [`BayesError::InvalidProbability`] for a top-two β outside `(0, 1)`.
    pub fn build(self) -> Result<ThompsonBandit> {
        let b = self.bandit;
        if b.draws == 0 || b.draws > DRAWS_MAX {
            return Err(BayesError::InvalidParameter {
                name: "draws",
                reason: "must be between 1 and DRAWS_MAX",
            });
        }
        if let Some(beta) = b.top_two {
            check_probability("top-two beta", beta)?;
        }
        if !(b.min_share >= 0.0 && b.min_share < 1.0) {
            return Err(BayesError::InvalidParameter {
                name: "min_share",
                reason: "must be in [0, 1)",
            });
        }
        Ok(b)
    }
}

impl ThompsonBandit {
    /// A builder with the defaults listed on [`ThompsonBanditBuilder`].
    pub fn builder() -> ThompsonBanditBuilder {
        ThompsonBanditBuilder {
            bandit: ThompsonBandit {
                draws: 1_000,
                top_two: None,
                min_share: 0.0,
            },
        }
    }

    /// Traffic shares of each arm (summing to 1): the frequency with which each arm is chosen
    /// over the configured number of posterior draws, then floored at the minimum share.
    ///
    /// # Errors
    /// [`BayesError::ArmCount`] for fewer than 2 or more than [`ARMS_MAX`] arms;
    /// [`BayesError::InvalidParameter`] when `arms × min_share > 1`.
    pub fn allocate<R: Rng + ?Sized>(&self, arms: &[Beta], rng: &mut R) -> Result<Vec<f64>> {
        let samplers = self.samplers(arms)?;
        let mut chosen = vec![0u32; arms.len()];
        let mut sample = vec![0.0; arms.len()];
        for _ in 0..self.draws {
            chosen[self.choose_with(&samplers, &mut sample, rng)] += 1;
        }
        let n = f64::from(self.draws);
        let raw: Vec<f64> = chosen.iter().map(|&c| f64::from(c) / n).collect();
        Ok(apply_floor(raw, self.min_share))
    }

    /// One Thompson-sampling choice (top-two aware), for per-request routing. Ignores the
    /// minimum share; use [`ThompsonBandit::allocate`] with a weighted split to honour it.
    ///
    /// # Errors
    /// As [`ThompsonBandit::allocate`].
    pub fn choose<R: Rng + ?Sized>(&self, arms: &[Beta], rng: &mut R) -> Result<usize> {
        let samplers = self.samplers(arms)?;
        let mut sample = vec![0.0; arms.len()];
        Ok(self.choose_with(&samplers, &mut sample, rng))
    }

    fn samplers(&self, arms: &[Beta]) -> Result<Vec<rand_distr::Beta<f64>>> {
        if arms.len() < 2 || arms.len() > ARMS_MAX {
            return Err(BayesError::ArmCount {
                operation: "ThompsonBandit",
                got: arms.len(),
                min: 2,
                max: ARMS_MAX,
            });
        }
        #[allow(clippy::cast_precision_loss)]
        if self.min_share * arms.len() as f64 > 1.0 {
            return Err(BayesError::InvalidParameter {
                name: "min_share",
                reason: "times the number of arms exceeds 1",
            });
        }
        arms.iter()
            .map(|a| {
                rand_distr::Beta::new(a.alpha(), a.beta()).map_err(|_| {
                    BayesError::InvalidBetaParameters {
                        alpha: a.alpha(),
                        beta: a.beta(),
                    }
                })
            })
            .collect()
    }

    fn choose_with<R: Rng + ?Sized>(
        &self,
        samplers: &[rand_distr::Beta<f64>],
        sample: &mut [f64],
        rng: &mut R,
    ) -> usize {
        let leader = draw_leader(samplers, sample, rng);
        let Some(beta) = self.top_two else {
            return leader;
        };
        if rng.random::<f64>() < beta {
            return leader;
        }
        for _ in 0..TOP_TWO_ATTEMPTS_MAX {
            let other = draw_leader(samplers, sample, rng);
            if other != leader {
                return other;
            }
        }
        // Runner-up of the last sample.
        let mut best: Option<usize> = None;
        for (i, &x) in sample.iter().enumerate() {
            if i != leader && best.is_none_or(|b| x > sample[b]) {
                best = Some(i);
            }
        }
        best.unwrap_or(leader)
    }
}

fn draw_leader<R: Rng + ?Sized>(
    samplers: &[rand_distr::Beta<f64>],
    sample: &mut [f64],
    rng: &mut R,
) -> usize {
    let mut best = 0;
    for (i, s) in samplers.iter().enumerate() {
        sample[i] = rand_distr::Distribution::sample(s, rng);
        if sample[i] > sample[best] {
            best = i;
        }
    }
    best
}

/// Raises every share to at least `floor`, taking the difference from the others in
/// proportion to their excess over the floor (so the result still sums to 1).
fn apply_floor(shares: Vec<f64>, floor: f64) -> Vec<f64> {
    if floor <= 0.0 {
        return shares;
    }
    #[allow(clippy::cast_precision_loss)]
    let k = shares.len() as f64;
    // share_i = floor + (1 − k·floor) · raw_i: a convex mix of the floor and the raw shares.
    let free = 1.0 - k * floor;
    shares.iter().map(|&s| floor + free * s).collect()
}
