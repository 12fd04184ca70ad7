//! The decision rule: continue, winner, inconclusive or rollback, with a Bayesian mode and a
//! sequential-safe mode.

use std::time::Duration;

use metered_clock::Timestamp;
use serde::{Deserialize, Serialize};

use crate::anytime;
use crate::beta::{Beta, Counts, Interval};
use crate::cuped::{
    CupedComparison, CupedPair, EffectPrior, cuped_compare_with_prior, cuped_confidence_sequence,
};
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
    half_width_with_mixing(variance, n, alpha, mixing(alpha, tuning_sample))
}

/// The mixing parameter `ρ²` that makes the asymptotic sequence at `alpha` tightest at
/// `tuning_sample` observations.
pub(crate) fn mixing(alpha: f64, tuning_sample: f64) -> f64 {
    let l = -2.0 * alpha.ln();
    (l + (l + 1.0).ln()) / tuning_sample
}

/// The asymptotic sequence's half-width at `alpha` with a given mixing parameter `rho2`
/// (any fixed `ρ² > 0` gives a valid sequence; [`mixing`] only tunes it).
pub(crate) fn half_width_with_mixing(variance: f64, n: f64, alpha: f64, rho2: f64) -> f64 {
    let nr = n * rho2;
    (variance * n * (2.0 * (nr + 1.0) / (n * n * rho2)) * ((nr + 1.0).sqrt() / alpha).ln()).sqrt()
}

/// The asymptotic sequence's p-value of "no difference" for an estimate `difference` with
/// variance `variance` after `n` observations, mixing `rho2`: the smallest α at which
/// [`half_width_with_mixing`] falls below `|difference|`,
/// `min(1, √(nρ² + 1)·exp(−d² nρ² / (2 V (nρ² + 1))))`.
pub(crate) fn asymptotic_p_value(difference: f64, variance: f64, n: f64, rho2: f64) -> f64 {
    let nr = n * rho2;
    ((nr + 1.0).sqrt() * (-difference * difference * nr / (2.0 * variance * (nr + 1.0))).exp())
        .min(1.0)
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
            bayesian_verdict(
                summary.prob_b_beats_a,
                summary.expected_loss_a,
                summary.expected_loss_b,
                prob_threshold,
                loss_threshold,
            )
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

/// The Bayesian mode's verdict from P(B > A) and the two expected losses.
fn bayesian_verdict(
    p: f64,
    loss_a: f64,
    loss_b: f64,
    prob_threshold: f64,
    loss_threshold: f64,
) -> Verdict {
    if p >= prob_threshold && loss_b <= loss_threshold {
        Verdict::ChallengerBetter
    } else if 1.0 - p >= prob_threshold && loss_a <= loss_threshold {
        Verdict::ChallengerWorse
    } else if loss_a <= loss_threshold && loss_b <= loss_threshold {
        Verdict::Equivalent
    } else {
        Verdict::Undecided
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
    /// The pre-exposure covariate differs between the arms (p < 0.001,
    /// [`covariate_balance_check`](crate::covariate_balance_check)): assignment or logging is
    /// broken, or the covariate was measured after exposure. Keep the champion and find the
    /// cause.
    CovariateImbalance,
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
    /// The confidence sequence on `p_b − p_a`, in the sequential and anytime-valid modes
    /// (after CUPED, of the adjusted difference, when the evaluation used it).
    pub confidence_sequence: Option<Interval>,
    /// The CUPED-adjusted comparison the decision used
    /// ([`DecisionRule::evaluate_cuped`]), under the rule's
    /// [effect prior](DecisionRuleBuilder::effect_prior); `None` without CUPED, and while a
    /// guardrail or the minimum sample decides before the adjustment can be computed.
    #[serde(default)]
    pub adjusted: Option<CupedComparison>,
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
    #[serde(default)]
    cuped: bool,
    #[serde(default)]
    effect_prior: Option<EffectPrior>,
}

/// Builder for [`DecisionRule`]. Defaults: uniform prior, sequential mode at α = 0.05 tuned
/// for 10,000 observations, 100 trials per arm minimum, 30 days maximum, no CUPED, a flat
/// effect prior.
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
                cuped: false,
                effect_prior: None,
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

    /// Interval level and normal-approximation size of the reported summary (the level is
    /// also that of the CUPED comparison's interval).
    pub fn compare(mut self, config: CompareConfig) -> Self {
        self.rule.compare = config;
        self
    }

    /// Whether an [`Experiment`](crate::Experiment) judges its primary conversion metric
    /// after CUPED / CUPAC regression adjustment on each unit's covariate (given to
    /// [`ExperimentState::record_with_covariate`](crate::ExperimentState::record_with_covariate)),
    /// through [`DecisionRule::evaluate_cuped`], in every stopping mode.
    pub fn cuped(mut self, enabled: bool) -> Self {
        self.rule.cuped = enabled;
        self
    }

    /// An informative Gaussian prior on the adjusted difference `p_b − p_a`, used by the
    /// Bayesian mode after CUPED (the unadjusted Bayesian comparison uses the Beta
    /// [`prior`](Self::prior) of each arm). The sequential modes ignore priors.
    pub fn effect_prior(mut self, prior: EffectPrior) -> Self {
        self.rule.effect_prior = Some(prior);
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

    /// Whether the rule asks for CUPED ([`DecisionRuleBuilder::cuped`]).
    #[must_use]
    pub fn cuped(&self) -> bool {
        self.cuped
    }

    /// The effect prior of the adjusted comparison, if any.
    #[must_use]
    pub fn effect_prior(&self) -> Option<EffectPrior> {
        self.effect_prior
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
        // The sequential modes' verdict is the sequence just computed.
        let verdict = match confidence_sequence {
            Some(cs) => verdict_of(cs),
            None => judge(self.stopping, Some(&summary), champion, challenger),
        };
        let decision = self.decide(champion, challenger, verdict, started_at, now, guardrails);
        Self::record_evaluation(&decision, summary.prob_b_beats_a);
        Evaluation {
            decision,
            summary,
            confidence_sequence,
            adjusted: None,
        }
    }

    /// [`DecisionRule::evaluate`] after CUPED / CUPAC: the decision is made on the
    /// regression-adjusted difference of `pair` (the same units as the counts, with each
    /// unit's covariate), in the rule's stopping mode:
    ///
    /// - **Bayesian**: P(B > A) and both expected losses of the adjusted difference's
    ///   Gaussian posterior ([`cuped_compare_with_prior`] under the rule's
    ///   [effect prior](DecisionRuleBuilder::effect_prior)) against the thresholds;
    /// - **sequential**: [`cuped_confidence_sequence`], GrowthBook's asymptotic sequence on
    ///   the adjusted difference (asymptotic validity, as without CUPED);
    /// - **anytime-valid**: the pair's
    ///   [anytime-valid sequence](CupedPair::anytime_confidence_sequence), valid at every look
    ///   from the first unit.
    ///
    /// The exact, unadjusted [`TwoArmSummary`] of the counts is still reported; the adjusted
    /// comparison is in [`Evaluation::adjusted`]. Guardrails and the minimum sample (of the
    /// counts) come first, as in [`DecisionRule::evaluate`].
    ///
    /// ```
    /// use bayes_ab::{Counts, CupedPair, DecisionRule, PairArm, Recommendation, StoppingMode};
    /// use metered_clock::Timestamp;
    ///
    /// let rule = DecisionRule::builder()
    ///     .stopping(StoppingMode::anytime_valid(0.05)?)
    ///     .cuped(true)
    ///     .build()?;
    /// let (mut pair, mut a, mut b) = (CupedPair::conversion(0.5)?, Counts::default(), Counts::default());
    /// let mut seed = 7u64;
    /// for i in 0..20_000 {
    ///     seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    ///     let u = (seed >> 11) as f64 / (1u64 << 53) as f64;
    ///     let loyal = f64::from(u8::from(i % 3 == 0)); // pre-period: a returning customer
    ///     let challenger = i % 2 == 1;
    ///     let rate = 0.1 + 0.5 * loyal + if challenger { 0.04 } else { 0.0 };
    ///     let converted = u < rate;
    ///     let arm = if challenger { PairArm::Challenger } else { PairArm::Champion };
    ///     pair.record(arm, f64::from(u8::from(converted)), loyal)?;
    ///     if challenger { b = b.record(converted)? } else { a = a.record(converted)? }
    /// }
    /// let (t0, t1) = (Timestamp::from_unix_millis(0), Timestamp::from_unix_millis(1));
    /// let e = rule.evaluate_cuped(a, b, &pair, t0, t1, &[])?;
    /// assert_eq!(e.decision, Recommendation::Winner);
    /// let c = e.adjusted.expect("CUPED used");
    /// assert!(c.variance_ratio < 0.8); // loyalty explains a quarter of the variance
    /// # Ok::<(), bayes_ab::BayesError>(())
    /// ```
    ///
    /// # Errors
    /// [`BayesError::InsufficientData`] when the adjustment is needed and cannot be computed
    /// (fewer than three units per arm, a covariate without variance);
    /// [`BayesError::InvalidParameter`] in the anytime-valid mode for a pair without bounds.
    pub fn evaluate_cuped(
        &self,
        champion: Counts,
        challenger: Counts,
        pair: &CupedPair,
        started_at: Timestamp,
        now: Timestamp,
        guardrails: &[GuardrailVerdict],
    ) -> Result<Evaluation> {
        let summary = compare(
            self.prior.update(champion),
            self.prior.update(challenger),
            &self.compare,
        );
        let decided_before = guardrails.iter().any(|g| g.breached)
            || champion.trials().min(challenger.trials()) < self.min_trials_per_arm;
        let adjusted = match cuped_compare_with_prior(
            *pair.champion(),
            *pair.challenger(),
            self.compare.level(),
            self.effect_prior,
        ) {
            Ok(c) => Some(c),
            Err(BayesError::InsufficientData { .. }) if decided_before => None,
            Err(e) => return Err(e),
        };
        let confidence_sequence = match self.stopping {
            StoppingMode::Sequential {
                alpha,
                tuning_sample,
            } if adjusted.is_some() => Some(cuped_confidence_sequence(
                *pair.champion(),
                *pair.challenger(),
                alpha,
                tuning_sample,
            )?),
            StoppingMode::AnytimeValid { alpha } => Some(pair.anytime_confidence_sequence(alpha)?),
            _ => None,
        };
        let verdict = match (self.stopping, adjusted, confidence_sequence) {
            (
                StoppingMode::Bayesian {
                    prob_threshold,
                    loss_threshold,
                },
                Some(c),
                _,
            ) => bayesian_verdict(
                c.prob_b_beats_a,
                c.expected_loss_a,
                c.expected_loss_b,
                prob_threshold,
                loss_threshold,
            ),
            (StoppingMode::Sequential { .. } | StoppingMode::AnytimeValid { .. }, _, Some(cs)) => {
                verdict_of(cs)
            }
            _ => Verdict::Undecided,
        };
        let decision = self.decide(champion, challenger, verdict, started_at, now, guardrails);
        Self::record_evaluation(
            &decision,
            adjusted.map_or(summary.prob_b_beats_a, |c| c.prob_b_beats_a),
        );
        Ok(Evaluation {
            decision,
            summary,
            confidence_sequence,
            adjusted,
        })
    }

    fn record_evaluation(decision: &Recommendation, prob_b_beats_a: f64) {
        tracing::debug!(?decision, prob_b_beats_a, "experiment evaluated");
        metrics::counter!("bayes_ab_evaluations_total", "decision" => decision.label())
            .increment(1);
    }

    fn decide(
        &self,
        champion: Counts,
        challenger: Counts,
        verdict: Verdict,
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
        match verdict {
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
