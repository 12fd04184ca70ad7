//! Exact Bayesian A/B testing: Beta-Binomial posteriors, P(challenger > champion) in closed
//! form, expected loss, k-arm quadrature, a sequential-safe stopping rule, guardrails with
//! auto-rollback, sample-ratio checks, sticky assignment and Thompson sampling.
//!
//! # Quick start
//!
//! ```
//! use bayes_ab::{Beta, CompareConfig, Counts, compare};
//!
//! // Champion: 1,000 conversions in 10,000 visitors; challenger: 1,100 in 10,000.
//! let a = Beta::UNIFORM.update(Counts::new(1_000, 10_000)?);
//! let b = Beta::UNIFORM.update(Counts::new(1_100, 10_000)?);
//! let s = compare(a, b, &CompareConfig::default());
//! assert!((s.prob_b_beats_a - 0.989_457_354_431_714).abs() < 1e-10);
//! // Choosing the challenger costs, in expectation, 0.0016 percentage points of conversion.
//! assert!(s.expected_loss_b < 2e-5);
//! assert!(s.interval_b.lower > 0.104 && s.interval_b.upper < 0.117);
//! # Ok::<(), bayes_ab::BayesError>(())
//! ```
//!
//! To decide when to stop, use a [`DecisionRule`]; to run a whole champion/challenger test
//! (assignment, recording, guardrails, SRM, decision), an [`Experiment`].
//!
//! # Overview
//!
//! - **Posteriors** — [`Beta`] (any prior, [`Beta::UNIFORM`] by default) updated with
//!   [`Counts`]; mean, CDF, quantiles and equal-tailed credible intervals to near double
//!   precision (own regularized incomplete beta and its inverse).
//! - **Two arms** — [`compare`]: P(B > A) by Evan Miller's closed form summed from its largest
//!   term outward over the smallest integer parameter, both expected losses (Stucchio) from the
//!   same pass, both intervals; quadrature beyond the closed form's range. Exact (1e-12 against
//!   60-digit references for counts up to 1e9) and deterministic; a normal approximation only
//!   if you opt in ([`CompareConfig`]). Lift: [`prob_lift_exceeds`], [`lift_interval`].
//! - **k arms** — [`best_arm`]: P(best) and expected loss by one-dimensional quadrature;
//!   [`best_arm_monte_carlo`] with a seeded generator for cross-checks.
//! - **Continuous metrics** — [`MeanStats`] (n, mean and M₂ by Welford's update) and
//!   [`compare_means`]; CUPED/CUPAC regression adjustment on a pre-period covariate or a
//!   prediction with [`CovariateStats`], [`cuped_compare`] (or [`cuped_compare_with_prior`]
//!   under an [`EffectPrior`]) and, for peeking, [`cuped_confidence_sequence`] (asymptotic) or
//!   a [`CupedPair`]'s anytime-valid sequence (valid from the first unit, for bounded
//!   metrics); ratio metrics (revenue per
//!   session) by the delta method with [`compare_ratios`]; quantile metrics (the difference
//!   in p50 / p95 / p99 with a distribution-free interval) with [`quantile_difference`].
//! - **Decisions** — [`DecisionRule`] with [`StoppingMode::Bayesian`] (probability and
//!   expected-loss thresholds), [`StoppingMode::Sequential`] (GrowthBook's asymptotic
//!   confidence sequence, [`confidence_sequence`]: safe to peek after a minimum sample) or
//!   [`StoppingMode::AnytimeValid`] (a mixture-martingale confidence sequence,
//!   [`anytime_confidence_sequence`], also for bounded metrics with [`BoundedStats`]: valid
//!   at every look from the first observation); with [`DecisionRuleBuilder::cuped`], every
//!   mode decides on the CUPED-adjusted difference ([`DecisionRule::evaluate_cuped`]);
//!   [`simulate_aa`] measures the false-positive rate of any mode.
//! - **Guardrails** — [`ErrorRateGuardrail`] (posterior P(rate > limit), absolute or relative
//!   to a baseline), [`LatencyGuardrail`] on a [`LatencySketch`] quantile with an
//!   order-statistic interval; a breach is an explicit [`RollbackReason`].
//! - **Traffic** — [`TrafficSplit::assign`] (sticky, salted SHA-256 buckets) and
//!   [`srm_check`] (χ², alert at p < 0.001); [`covariate_balance_check`] for pre-exposure
//!   bias on a pre-period covariate, run by [`ExperimentState::evaluate`] for every
//!   challenger ([`InconclusiveReason::CovariateImbalance`]).
//! - **Many comparisons** — [`correct`]: Holm or Benjamini–Hochberg across metrics × arms
//!   ([`Hypothesis`] per comparison), adjusted p-values as statsmodels' `multipletests`, and
//!   intervals that agree with the corrected decisions; [`adjust_p_values`], [`reject`].
//!   Inside an experiment: declared [`Metric`]s (conversion or continuous, each with its own
//!   Beta or [`EffectPrior`] and CUPED setting) in a [`MetricSet`], recorded with
//!   [`ExperimentState::record_metric`] and judged as one corrected family across metrics ×
//!   challengers ([`MetricsEvaluation`]); each member is tested as the rule's mode reads it
//!   ([`MemberTest`]: fixed-horizon, the asymptotic sequence, or for bounded metrics the
//!   anytime-valid one with [`CupedPair::anytime_p_value`]).
//! - **Bandits** — [`ThompsonBandit`]: seeded, optional top-two, minimum share per arm.
//! - **State** — [`ExperimentState`] (serde, mergeable) behind [`ExperimentStore`], with
//!   [`InMemoryExperimentStore`]; feature `conformance`: `conformance::check_experiment_store`,
//!   the checks every store backend runs.
//!
//! Every function is pure over counts (sans-IO); the only time source is the caller's
//! [`metered_clock::Clock`], used by [`Experiment`] for the maximum duration. Decisions log
//! with `tracing` and count with the `metrics` facade: `bayes_ab_evaluations_total`
//! (label `decision`), `bayes_ab_guardrail_breaches_total` (label `kind`),
//! `bayes_ab_srm_mismatches_total` and `bayes_ab_covariate_imbalances_total`.
//!
//! # What it does not do
//!
//! - No peeking protection in [`StoppingMode::Bayesian`]: reading it at every look inflates
//!   false positives (42 % instead of 10 % over 20 looks; see `docs/bayes-ab.md`). Use
//!   [`StoppingMode::Sequential`] when you look before the planned end.
//! - No hierarchical priors: a Beta prior per conversion metric and a Gaussian
//!   [`EffectPrior`] per continuous or CUPED-adjusted metric, chosen by you.
//! - The anytime-valid CUPED sequence needs bounded metrics; an unbounded continuous metric
//!   has CUPED only in the Gaussian comparison and the asymptotic sequence, and stays a
//!   fixed-horizon member of a [`MetricSet`]'s family.
//! - [`Experiment`] judges each challenger's primary conversion against the champion at the
//!   rule's own error rate; with `k` challengers, tighten the rule by `k` (Bonferroni), or
//!   declare the conversion in a [`MetricSet`], whose family is corrected across metrics ×
//!   challengers.
//! - No network or database storage: implement [`ExperimentStore`] for your backend.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// The guide (`docs/bayes-ab.md`): every example in it is a doc test.
#[cfg(doctest)]
#[doc = include_str!("../../docs/bayes-ab.md")]
pub mod guide {}

mod anytime;
mod bandit;
mod beta;
mod continuous;
mod cuped;
mod decision;
mod error;
mod experiment;
mod guardrail;
mod metric;
mod multi;
mod multiple;
mod quadrature;
mod quantile;
mod simulate;
mod special;
mod traffic;
mod two_arm;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use anytime::{
    BoundedStats, anytime_bounded_difference, anytime_confidence_sequence, anytime_mean_interval,
};
pub use bandit::{ThompsonBandit, ThompsonBanditBuilder};
pub use beta::{Beta, Counts, Interval};
pub use continuous::{MeanComparison, MeanStats, compare_means};
pub use cuped::{
    CovariateStats, CupedComparison, CupedPair, EffectPrior, PairArm, compare_ratios,
    cuped_compare, cuped_compare_with_prior, cuped_confidence_sequence,
};
pub use decision::{
    ContinueReason, DecisionRule, DecisionRuleBuilder, Evaluation, InconclusiveReason,
    Recommendation, RollbackReason, StoppingMode, confidence_sequence,
};
pub use error::BayesError;
pub use experiment::{
    ArmState, ChallengerEvaluation, Experiment, ExperimentEvaluation, ExperimentState,
    ExperimentStore, Guardrails, InMemoryExperimentStore, UnitOutcome,
};
pub use guardrail::{
    ERROR_GUARDRAIL_MIN_REQUESTS, ErrorRateGuardrail, ErrorRateLimit, GuardrailKind,
    GuardrailVerdict, LATENCY_MAX_MICROS, LatencyGuardrail, LatencyLimit, LatencySketch,
    QuantileInterval,
};
pub use metric::{
    METRIC_NAME_MAX, METRICS_MAX, MemberTest, Metric, MetricKind, MetricResult, MetricSet,
    MetricStats, MetricsEvaluation, PendingMetric,
};
pub use multi::{ARMS_MAX, DRAWS_MAX, MultiArmSummary, best_arm, best_arm_monte_carlo};
pub use multiple::{
    CorrectedFamily, CorrectedHypothesis, Correction, HYPOTHESES_MAX, Hypothesis, adjust_p_values,
    correct, reject,
};
pub use quantile::{QuantileDifference, quantile_difference};
pub use simulate::{AaConfig, AaModeReport, EXPERIMENTS_MAX, LOOKS_MAX, simulate_aa};
pub use traffic::{
    BASIS_POINTS, CovariateBalance, SPLIT_ARMS_MAX, SRM_ALERT_P_VALUE, SrmCheck, TrafficSplit,
    covariate_balance_check, srm_check,
};
pub use two_arm::{
    CompareConfig, Lift, Method, TwoArmSummary, compare, expected_losses, lift_interval,
    prob_b_beats_a, prob_lift_exceeds,
};
