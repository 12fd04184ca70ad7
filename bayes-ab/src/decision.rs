//! The decision rule: continue, winner, inconclusive or rollback, with a Bayesian mode and a
//! sequential-safe mode.

use std::time::Duration;

use metered_clock::Timestamp;
use serde::{Deserialize, Serialize};

use crate::anytime;
use crate::beta::{Beta, Counts, Interval};
use crate::error::{BayesError, Result, check_probability};
use crate::guardrail::GuardrailVerdict;
use crate::two_arm::{CompareConfig, TwoArmSummary, compare};

/// How the rule decides that one arm is better.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StoppingMode {
    /// Stop when P(better) ≥ `prob_threshold` **and** the expected loss of the choice is at most
    /// `loss_threshold` (Stucchio's "threshold of caring", in rate units).
    ///
    /// Right for a test read once at a planned horizon, or when a small loss is all that
    /// matters. With `loss_threshold = f64::INFINITY` this is the naive "stop at 95 %" rule,
    /// whose false-positive rate grows with every look (see `docs/bayes-ab.md`).
    Bayesian {
        /// Posterior probability needed, e.g. 0.95.
        prob_threshold: f64,
        /// Largest acceptable expected loss, e.g. 0.001 (0.1 percentage point).
        loss_threshold: f64,
    },
    /// Asymptotic confidence sequence on `p_b − p_a` (the Gaussian-mixture sequence of
    /// Waudby-Smith et al., as in GrowthBook's sequential engine): stop when it excludes zero.
    /// Its guarantee is **asymptotic**: the false-positive rate tends to at most `alpha` as the
    /// samples grow, and in practice stays below it when looks start after a minimum sample
    /// (the rule's default 100 per arm). Looking after every observation from the first it
    /// can exceed `alpha` (5.5–5.8 % was reported at α = 5 % and a 50 % rate). For a
    /// guarantee at every look
    /// from `n = 1`, use [`StoppingMode::AnytimeValid`].
    Sequential {
        /// Type I error, e.g. 0.05.
        alpha: f64,
        /// Total sample size (both arms) where the sequence is tightest, e.g. 10,000.
        tuning_sample: f64,
    },
    /// Anytime-valid confidence sequence on `p_b − p_a` ([`crate::anytime_confidence_sequence`]):
    /// stop when it excludes zero. The false-positive rate is at most `alpha` at every look
    /// from the first observation, in finite samples, with no minimum sample (Ville's
    /// inequality on a mixture martingale). The price: wider than [`StoppingMode::Sequential`]
    /// at the same sample, so a real effect needs more data.
    AnytimeValid {
        /// Type I error, e.g. 0.05.
        alpha: f64,
    },
}

impl StoppingMode {
    /// The Bayesian mode, validated.
    ///
    /// # Errors
    /// [`BayesError::InvalidProbability`] for a threshold outside `(0, 1)`;
    /// [`BayesError::InvalidParameter`] for a NaN or non-positive loss threshold.
    pub fn bayesian(prob_threshold: f64, loss_threshold: f64) -> Result<Self> {
        check_probability("prob_threshold", prob_threshold)?;
        if loss_threshold.is_nan() || loss_threshold <= 0.0 {
            return Err(BayesError::InvalidParameter {
                name: "loss_threshold",
                reason: "must be > 0 (f64::INFINITY disables it)",
            });
        }
        Ok(Self::Bayesian {
            prob_threshold,
            loss_threshold,
        })
    }

    /// The sequential-safe mode, validated.
    ///
    /// # Errors
    /// [`BayesError::InvalidProbability`] for `alpha` outside `(0, 1)`;
    /// [`BayesError::InvalidParameter`] for a tuning sample that is not finite and ≥ 1.
    pub fn sequential(alpha: f64, tuning_sample: f64) -> Result<Self> {
        check_probability("alpha", alpha)?;
        if !(tuning_sample.is_finite() && tuning_sample >= 1.0) {
            return Err(BayesError::InvalidParameter {
                name: "tuning_sample",
                reason: "must be finite and >= 1",
            });
        }
        Ok(Self::Sequential {
            alpha,
            tuning_sample,
        })
    }

    /// The anytime-valid mode, validated.
    ///
    /// # Errors
    /// [`BayesError::InvalidProbability`] for `alpha` outside `(0, 1)`.
    pub fn anytime_valid(alpha: f64) -> Result<Self> {
        check_probability("alpha", alpha)?;
        Ok(Self::AnytimeValid { alpha })
    }

    pub(crate) fn validate(self) -> Result<Self> {
        match self {
            Self::Bayesian {
                prob_threshold,
                loss_threshold,
            } => Self::bayesian(prob_threshold, loss_threshold),
            Self::Sequential {
                alpha,
                tuning_sample,
            } => Self::sequential(alpha, tuning_sample),
            Self::AnytimeValid { alpha } => Self::anytime_valid(alpha),
        }
    }

    /// Whether judging needs the posterior summary (only the Bayesian mode does).
    pub(crate) fn needs_summary(self) -> bool {
        matches!(self, Self::Bayesian { .. })
    }
}

/// Always-valid (time-uniform) confidence sequence for `p_b − p_a` at level `1 − alpha`:
/// the asymptotic confidence sequence of Waudby-Smith, Arbour, Sinha, Kennedy and Ramdas
/// ("Time-uniform central limit theory", 2023), with the mixing parameter tuned so the
/// sequence is tightest at `tuning_sample` total observations.
///
/// Variances use `(s + 1)/(n + 2)` so an arm with no successes yet does not collapse the
/// interval. Arms with no trials give the whole interval `[−1, 1]`.
///
/// ```
/// use bayes_ab::{Counts, confidence_sequence};
///
/// let cs = confidence_sequence(Counts::new(1000, 10_000)?, Counts::new(1200, 10_000)?, 0.05, 10_000.0)?;
/// assert!(cs.lower > 0.0); // B is better, valid however often we looked
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
///
/// # Errors
/// [`BayesError::InvalidProbability`] for `alpha` outside `(0, 1)`; [`BayesError::InvalidParameter`]
/// for a tuning sample that is not finite and ≥ 1.
pub fn confidence_sequence(
    a: Counts,
    b: Counts,
    alpha: f64,
    tuning_sample: f64,
) -> Result<Interval> {
    StoppingMode::sequential(alpha, tuning_sample)?;
    Ok(cs_unchecked(a, b, alpha, tuning_sample))
}

/// Half-width of the asymptotic confidence sequence of a difference whose estimate has
/// variance `variance` after `n` observations in all (both arms), at `alpha`, tightest at
/// `tuning_sample`: `√(n σ² · 2(nρ² + 1)/(n²ρ²) · ln(√(nρ² + 1)/α))` with
/// `ρ² = (ℓ + ln(ℓ + 1))/tuning_sample`, `ℓ = −2 ln α` (Waudby-Smith et al., 2023). Shared
/// by the conversion sequence and the CUPED one.
pub(crate) fn asymptotic_half_width(variance: f64, n: f64, alpha: f64, tuning_sample: f64) -> f64 {
    let s2 = variance * n;
    let l = -2.0 * alpha.ln();
    let rho2 = (l + (l + 1.0).ln()) / tuning_sample;
    let nr = n * rho2;
    (s2 * (2.0 * (nr + 1.0) / (n * n * rho2)) * ((nr + 1.0).sqrt() / alpha).ln()).sqrt()
}

#[allow(clippy::cast_precision_loss)]
fn cs_unchecked(a: Counts, b: Counts, alpha: f64, tuning_sample: f64) -> Interval {
    if a.trials() == 0 || b.trials() == 0 {
        return Interval {
            lower: -1.0,
            upper: 1.0,
        };
    }
    let (na, nb) = (a.trials() as f64, b.trials() as f64);
    let pa = a.successes() as f64 / na;
    let pb = b.successes() as f64 / nb;
    let va = {
        let p = (a.successes() as f64 + 1.0) / (na + 2.0);
        p * (1.0 - p) / na
    };
    let vb = {
        let p = (b.successes() as f64 + 1.0) / (nb + 2.0);
        p * (1.0 - p) / nb
    };
    let half = asymptotic_half_width(va + vb, na + nb, alpha, tuning_sample);
    let d = pb - pa;
    Interval {
        lower: (d - half).max(-1.0),
        upper: (d + half).min(1.0),
    }
}

/// What the evidence says, before minimum sample and duration are considered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Verdict {
    ChallengerBetter,
    ChallengerWorse,
    Equivalent,
    Undecided,
}

/// The verdict of `mode`; `summary` is needed (and computed by the caller) only for the
/// Bayesian mode, which is undecided without one.
pub(crate) fn judge(
    mode: StoppingMode,
    summary: Option<&TwoArmSummary>,
    a: Counts,
    b: Counts,
) -> Verdict {
    match mode {
        StoppingMode::Bayesian {
            prob_threshold,
            loss_threshold,
        } => {
            let Some(summary) = summary else {
                return Verdict::Undecided;
            };
            let p = summary.prob_b_beats_a;
            if p >= prob_threshold && summary.expected_loss_b <= loss_threshold {
                Verdict::ChallengerBetter
            } else if 1.0 - p >= prob_threshold && summary.expected_loss_a <= loss_threshold {
                Verdict::ChallengerWorse
            } else if summary.expected_loss_a <= loss_threshold
                && summary.expected_loss_b <= loss_threshold
            {
                Verdict::Equivalent
            } else {
                Verdict::Undecided
            }
        }
        StoppingMode::Sequential {
            alpha,
            tuning_sample,
        } => verdict_of(cs_unchecked(a, b, alpha, tuning_sample)),
        StoppingMode::AnytimeValid { alpha } => {
            verdict_of(anytime::difference_unchecked(a.into(), b.into(), alpha))
        }
    }
}

fn verdict_of(cs: Interval) -> Verdict {
    if cs.lower > 0.0 {
        Verdict::ChallengerBetter
    } else if cs.upper < 0.0 {
        Verdict::ChallengerWorse
    } else {
        Verdict::Undecided
    }
}

/// Why an experiment keeps running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ContinueReason {
    /// An arm has fewer trials than the rule's minimum.
    MinimumSample,
    /// Neither arm is better yet.
    NotConclusive,
}

/// Why an experiment ends without a winner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum InconclusiveReason {
    /// The arms are practically equivalent: either choice costs less than the loss
    /// threshold. Keep the champion.
    Equivalent,
    /// The maximum duration passed without a decision. Keep the champion.
    MaxDuration,
    /// The observed traffic does not match the split (χ² p < 0.001): the data cannot be
    /// trusted. Keep the champion and find the cause.
    SampleRatioMismatch,
}

/// Why the challenger must be rolled back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RollbackReason {
    /// The challenger converts worse than the champion, by the rule's stopping mode.
    ChallengerWorse,
    /// A guardrail (error rate or latency) was breached; the verdict says which and by how
    /// much.
    Guardrail(GuardrailVerdict),
}

/// What a [`DecisionRule`] recommends after evaluating an experiment: keep going, promote the
/// challenger, stop without a winner, or roll the challenger back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[must_use]
#[non_exhaustive]
pub enum Recommendation {
    /// Keep collecting data.
    Continue {
        /// Why.
        reason: ContinueReason,
    },
    /// The challenger is better: promote it.
    Winner,
    /// Stop and keep the champion, without evidence that the challenger is worse.
    Inconclusive {
        /// Why.
        reason: InconclusiveReason,
    },
    /// Stop and roll the challenger back.
    Rollback {
        /// Why.
        reason: RollbackReason,
    },
}

impl Recommendation {
    /// A short, stable name of the recommendation (`continue`, `winner`, `inconclusive`, `rollback`),
    /// as used in the `bayes_ab_evaluations_total` metric's `decision` label.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Recommendation::Continue { .. } => "continue",
            Recommendation::Winner => "winner",
            Recommendation::Inconclusive { .. } => "inconclusive",
            Recommendation::Rollback { .. } => "rollback",
        }
    }

    /// Whether the experiment is over (anything but [`Recommendation::Continue`]).
    #[must_use]
    pub fn is_final(&self) -> bool {
        !matches!(self, Recommendation::Continue { .. })
    }
}

/// A [`Recommendation`] with the figures behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[must_use]
pub struct Evaluation {
    /// What to do. (The field keeps the name `decision`, the word of the serialized form
    /// and of the `bayes_ab_evaluations_total` label.)
    pub decision: Recommendation,
    /// The posterior comparison of champion (A) and challenger (B).
    pub summary: TwoArmSummary,
    /// The confidence sequence on `p_b − p_a`, in the sequential and anytime-valid modes.
    pub confidence_sequence: Option<Interval>,
}

/// When a champion/challenger experiment stops and what it concludes (the seed's
/// `EvaluateTest`).
///
/// ```
/// use std::time::Duration;
/// use bayes_ab::{Counts, Recommendation, DecisionRule, StoppingMode};
/// use metered_clock::Timestamp;
///
/// let rule = DecisionRule::builder()
///     .stopping(StoppingMode::sequential(0.05, 10_000.0)?)
///     .min_trials_per_arm(1_000)
///     .max_duration(Duration::from_secs(14 * 86_400))
///     .build()?;
/// let start = Timestamp::from_unix_millis(0);
/// let now = Timestamp::from_unix_millis(3_600_000);
/// let e = rule.evaluate(Counts::new(1000, 10_000)?, Counts::new(1150, 10_000)?, start, now, &[]);
/// assert_eq!(e.decision, Recommendation::Winner);
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionRule {
    prior: Beta,
    stopping: StoppingMode,
    min_trials_per_arm: u64,
    max_duration: Duration,
    compare: CompareConfig,
}

/// Builder for [`DecisionRule`]. Defaults: uniform prior, sequential mode at α = 0.05 tuned
/// for 10,000 observations, 100 trials per arm minimum, 30 days maximum.
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct DecisionRuleBuilder {
    rule: DecisionRule,
}

impl Default for DecisionRuleBuilder {
    fn default() -> Self {
        Self {
            rule: DecisionRule {
                prior: Beta::UNIFORM,
                stopping: StoppingMode::Sequential {
                    alpha: 0.05,
                    tuning_sample: 10_000.0,
                },
                min_trials_per_arm: 100,
                max_duration: Duration::from_secs(30 * 86_400),
                compare: CompareConfig::default(),
            },
        }
    }
}

impl DecisionRuleBuilder {
    /// The prior of both arms.
    pub fn prior(mut self, prior: Beta) -> Self {
        self.rule.prior = prior;
        self
    }

    /// The stopping mode.
    pub fn stopping(mut self, mode: StoppingMode) -> Self {
        self.rule.stopping = mode;
        self
    }

    /// Trials each arm needs before any decision but a guardrail rollback.
    pub fn min_trials_per_arm(mut self, n: u64) -> Self {
        self.rule.min_trials_per_arm = n;
        self
    }

    /// How long the experiment may run; afterwards an undecided experiment is
    /// [`InconclusiveReason::MaxDuration`].
    pub fn max_duration(mut self, d: Duration) -> Self {
        self.rule.max_duration = d;
        self
    }

    /// Interval level and normal-approximation size of the reported summary.
    pub fn compare(mut self, config: CompareConfig) -> Self {
        self.rule.compare = config;
        self
    }

    /// The rule.
    ///
    /// # Errors
    /// The stopping mode's validation errors; [`BayesError::InvalidParameter`] for a zero maximum
    /// duration.
    pub fn build(self) -> Result<DecisionRule> {
        self.rule.stopping.validate()?;
        if self.rule.max_duration.is_zero() {
            return Err(BayesError::InvalidParameter {
                name: "max_duration",
                reason: "must be > 0",
            });
        }
        Ok(self.rule)
    }
}

impl DecisionRule {
    /// A builder with the defaults listed on [`DecisionRuleBuilder`].
    pub fn builder() -> DecisionRuleBuilder {
        DecisionRuleBuilder::default()
    }

    /// The prior of both arms.
    #[must_use]
    pub fn prior(&self) -> Beta {
        self.prior
    }

    /// The stopping mode.
    #[must_use]
    pub fn stopping(&self) -> StoppingMode {
        self.stopping
    }

    /// Minimum trials per arm.
    #[must_use]
    pub fn min_trials_per_arm(&self) -> u64 {
        self.min_trials_per_arm
    }

    /// Maximum duration.
    #[must_use]
    pub fn max_duration(&self) -> Duration {
        self.max_duration
    }

    /// Decides from the champion's and challenger's counts, the start time and the current
    /// time (from the caller's [`metered_clock::Clock`]), and any guardrail verdicts.
    ///
    /// Order: a breached guardrail rolls back at once (even below the minimum sample); then
    /// below the minimum sample the experiment continues; then the stopping mode; then, past
    /// the maximum duration, an undecided experiment is inconclusive.
    pub fn evaluate(
        &self,
        champion: Counts,
        challenger: Counts,
        started_at: Timestamp,
        now: Timestamp,
        guardrails: &[GuardrailVerdict],
    ) -> Evaluation {
        let a = self.prior.update(champion);
        let b = self.prior.update(challenger);
        let summary = compare(a, b, &self.compare);
        let confidence_sequence = match self.stopping {
            StoppingMode::Sequential {
                alpha,
                tuning_sample,
            } => Some(cs_unchecked(champion, challenger, alpha, tuning_sample)),
            StoppingMode::AnytimeValid { alpha } => Some(anytime::difference_unchecked(
                champion.into(),
                challenger.into(),
                alpha,
            )),
            StoppingMode::Bayesian { .. } => None,
        };
        let decision = self.decide(champion, challenger, &summary, started_at, now, guardrails);
        tracing::debug!(
            ?decision,
            prob_b_beats_a = summary.prob_b_beats_a,
            "experiment evaluated"
        );
        metrics::counter!("bayes_ab_evaluations_total", "decision" => decision.label())
            .increment(1);
        Evaluation {
            decision,
            summary,
            confidence_sequence,
        }
    }

    fn decide(
        &self,
        champion: Counts,
        challenger: Counts,
        summary: &TwoArmSummary,
        started_at: Timestamp,
        now: Timestamp,
        guardrails: &[GuardrailVerdict],
    ) -> Recommendation {
        if let Some(breach) = guardrails.iter().find(|g| g.breached) {
            return Recommendation::Rollback {
                reason: RollbackReason::Guardrail(breach.clone()),
            };
        }
        let expired = now.saturating_duration_since(started_at) >= self.max_duration;
        if champion.trials().min(challenger.trials()) < self.min_trials_per_arm {
            return if expired {
                Recommendation::Inconclusive {
                    reason: InconclusiveReason::MaxDuration,
                }
            } else {
                Recommendation::Continue {
                    reason: ContinueReason::MinimumSample,
                }
            };
        }
        match judge(self.stopping, Some(summary), champion, challenger) {
            Verdict::ChallengerBetter => Recommendation::Winner,
            Verdict::ChallengerWorse => Recommendation::Rollback {
                reason: RollbackReason::ChallengerWorse,
            },
            Verdict::Equivalent => Recommendation::Inconclusive {
                reason: InconclusiveReason::Equivalent,
            },
            Verdict::Undecided if expired => Recommendation::Inconclusive {
                reason: InconclusiveReason::MaxDuration,
            },
            Verdict::Undecided => Recommendation::Continue {
                reason: ContinueReason::NotConclusive,
            },
        }
    }
}
