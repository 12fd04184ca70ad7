//! A/A simulation: how often each stopping mode declares a difference that does not exist.

use rand::Rng;
use rand_distr::{Binomial, Distribution};
use serde::{Deserialize, Serialize};

use crate::beta::{Beta, Counts};
use crate::decision::{StoppingMode, Verdict, judge};
use crate::error::{BayesError, Result, check_probability};
use crate::two_arm::{CompareConfig, compare};

/// Most experiments one [`simulate_aa`] call runs.
pub const EXPERIMENTS_MAX: u32 = 1_000_000;
/// Most looks per experiment.
pub const LOOKS_MAX: u32 = 10_000;

/// Settings of an A/A simulation: both arms share one true rate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AaConfig {
    /// Simulated experiments.
    pub experiments: u32,
    /// Evaluations per experiment, evenly spaced.
    pub looks: u32,
    /// New trials per arm between two looks.
    pub trials_per_look: u64,
    /// The common true rate.
    pub rate: f64,
}

/// False positives of one stopping mode over the simulated experiments.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AaModeReport {
    /// The mode.
    pub mode: StoppingMode,
    /// Experiments simulated.
    pub experiments: u32,
    /// Experiments where the mode declared a winner or a loser at any look (peeking).
    pub false_positives_peeking: u32,
    /// Experiments where the mode declared a winner or a loser at the final look only
    /// (a fixed-horizon reading of the same data).
    pub false_positives_final_look: u32,
}

impl AaModeReport {
    /// False-positive rate when stopping at the first look that declares a difference.
    #[must_use]
    pub fn rate_peeking(&self) -> f64 {
        f64::from(self.false_positives_peeking) / f64::from(self.experiments)
    }

    /// False-positive rate when reading only the final look.
    #[must_use]
    pub fn rate_final_look(&self) -> f64 {
        f64::from(self.false_positives_final_look) / f64::from(self.experiments)
    }
}

/// Simulates `config.experiments` A/A experiments (both arms at `config.rate`), evaluates every
/// mode in `modes` at each of `config.looks` looks on the same data, and counts how often each
/// declares a difference, when peeking at every look and when reading only the last one.
/// Uses the uniform prior; deterministic for a seeded `rng`.
///
/// ```
/// use bayes_ab::{AaConfig, StoppingMode, simulate_aa};
/// use rand::{SeedableRng, rngs::StdRng};
///
/// let config = AaConfig { experiments: 50, looks: 5, trials_per_look: 200, rate: 0.1 };
/// let modes = [StoppingMode::sequential(0.05, 1_000.0)?];
/// let report = simulate_aa(&config, &modes, &mut StdRng::seed_from_u64(1))?;
/// assert_eq!(report[0].experiments, 50);
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
///
/// # Errors
/// [`BayesError::InvalidParameter`] for zero or too many experiments or looks, zero trials per look;
/// [`BayesError::InvalidProbability`] for a rate outside `(0, 1)`; each mode's validation errors.
pub fn simulate_aa<R: Rng + ?Sized>(
    config: &AaConfig,
    modes: &[StoppingMode],
    rng: &mut R,
) -> Result<Vec<AaModeReport>> {
    if config.experiments == 0 || config.experiments > EXPERIMENTS_MAX {
        return Err(BayesError::InvalidParameter {
            name: "experiments",
            reason: "must be between 1 and EXPERIMENTS_MAX",
        });
    }
    if config.looks == 0 || config.looks > LOOKS_MAX {
        return Err(BayesError::InvalidParameter {
            name: "looks",
            reason: "must be between 1 and LOOKS_MAX",
        });
    }
    if config.trials_per_look == 0 {
        return Err(BayesError::InvalidParameter {
            name: "trials_per_look",
            reason: "must be > 0",
        });
    }
    check_probability("rate", config.rate)?;
    for mode in modes {
        mode.validate()?;
    }
    let binomial = Binomial::new(config.trials_per_look, config.rate).map_err(|_| {
        BayesError::InvalidParameter {
            name: "trials_per_look",
            reason: "binomial sampler rejected it",
        }
    })?;
    let compare_config = CompareConfig::default();
    let mut reports: Vec<AaModeReport> = modes
        .iter()
        .map(|&mode| AaModeReport {
            mode,
            experiments: config.experiments,
            false_positives_peeking: 0,
            false_positives_final_look: 0,
        })
        .collect();
    let mut stopped = vec![false; modes.len()];
    let needs_summary = modes.iter().any(|m| m.needs_summary());
    for _ in 0..config.experiments {
        stopped.fill(false);
        let (mut a, mut b) = (Counts::ZERO, Counts::ZERO);
        for look in 1..=config.looks {
            a = a.merge(Counts::new(binomial.sample(rng), config.trials_per_look)?)?;
            b = b.merge(Counts::new(binomial.sample(rng), config.trials_per_look)?)?;
            // The posterior summary only for the modes that read it: the sequential modes
            // judge from the counts alone, so a look after every observation stays cheap.
            let summary = needs_summary.then(|| {
                compare(
                    Beta::UNIFORM.update(a),
                    Beta::UNIFORM.update(b),
                    &compare_config,
                )
            });
            for (i, &mode) in modes.iter().enumerate() {
                let declared = matches!(
                    judge(mode, summary.as_ref(), a, b),
                    Verdict::ChallengerBetter | Verdict::ChallengerWorse
                );
                if declared && !stopped[i] {
                    stopped[i] = true;
                    reports[i].false_positives_peeking += 1;
                }
                if declared && look == config.looks {
                    reports[i].false_positives_final_look += 1;
                }
            }
        }
    }
    Ok(reports)
}
