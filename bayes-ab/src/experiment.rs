//! Experiment state (create / record / evaluate), serializable and mergeable, behind a small
//! storage trait with an in-memory implementation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use metered_clock::{Clock, Timestamp};
use parking_lot::Mutex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::beta::Counts;
use crate::continuous::MeanStats;
use crate::cuped::{CupedPair, PairArm};
use crate::decision::{DecisionRule, Evaluation, InconclusiveReason, Recommendation};
use crate::error::{BayesError, Result};
use crate::guardrail::{ErrorRateGuardrail, GuardrailVerdict, LatencyGuardrail, LatencySketch};
use crate::metric::{FamilyMode, MetricSet, MetricStats, MetricsEvaluation, evaluate_metrics};
use crate::multi::ARMS_MAX;
use crate::traffic::{
    CovariateBalance, SrmCheck, TrafficSplit, covariate_balance_check, srm_check,
};

impl Serialize for LatencySketch {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use hdrhistogram::serialization::Serializer as _;
        let mut bytes = Vec::new();
        hdrhistogram::serialization::V2Serializer::new()
            .serialize(self.histogram(), &mut bytes)
            .map_err(serde::ser::Error::custom)?;
        serializer.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for LatencySketch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let bytes: Vec<u8> = Vec::deserialize(deserializer)?;
        let histogram: hdrhistogram::Histogram<u64> =
            hdrhistogram::serialization::Deserializer::new()
                .deserialize(&mut bytes.as_slice())
                .map_err(|e| serde::de::Error::custom(format!("{e:?}")))?;
        let mut sketch = LatencySketch::new();
        sketch
            .merge_histogram(&histogram)
            .map_err(serde::de::Error::custom)?;
        Ok(sketch)
    }
}

/// What one unit did in one arm. Fields that a caller does not track stay `None`/`false`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UnitOutcome {
    /// The unit converted (the primary metric).
    pub converted: bool,
    /// The request failed (error-rate guardrail).
    pub error: bool,
    /// The request's latency (latency guardrail).
    pub latency: Option<Duration>,
    /// A continuous value, e.g. revenue.
    pub value: Option<f64>,
}

/// Everything recorded for one arm. Two partial tallies of the same arm add up with
/// [`ArmState::merge`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmState {
    /// Conversions out of units.
    pub conversions: Counts,
    /// Errors out of requests.
    pub errors: Counts,
    /// Latencies.
    pub latency: LatencySketch,
    /// A continuous metric.
    pub value: MeanStats,
    /// The declared metrics of a [`MetricSet`], in its order (empty without one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricStats>,
}

impl ArmState {
    /// Adds one outcome.
    ///
    /// # Errors
    /// [`BayesError::InvalidParameter`] for a non-finite value; [`BayesError::CountOverflow`]. On error
    /// nothing changes.
    pub fn record(&mut self, outcome: UnitOutcome) -> Result<()> {
        let conversions = self.conversions.record(outcome.converted)?;
        let errors = self.errors.record(outcome.error)?;
        let mut value = self.value;
        if let Some(v) = outcome.value {
            value.record(v)?;
        }
        if let Some(latency) = outcome.latency {
            self.latency.record(latency);
        }
        self.conversions = conversions;
        self.errors = errors;
        self.value = value;
        Ok(())
    }

    /// Adds another tally of the same arm.
    ///
    /// # Errors
    /// [`BayesError::CountOverflow`]; nothing changes on error.
    pub fn merge(&mut self, other: &ArmState) -> Result<()> {
        let conversions = self.conversions.merge(other.conversions)?;
        let errors = self.errors.merge(other.errors)?;
        let value = self.value.merge(other.value)?;
        if self.metrics.len() != other.metrics.len() {
            return Err(BayesError::Incompatible {
                reason: "arms with different metrics",
            });
        }
        let metrics = self
            .metrics
            .iter()
            .zip(&other.metrics)
            .map(|(mine, theirs)| mine.merge(*theirs))
            .collect::<Result<Vec<_>>>()?;
        let mut latency = self.latency.clone();
        latency.merge(&other.latency)?;
        *self = ArmState {
            conversions,
            errors,
            latency,
            value,
            metrics,
        };
        Ok(())
    }
}

/// The persistent state of an experiment: a champion (arm 0) and one or more challengers
/// (arms 1, 2, …).
///
/// ```
/// use bayes_ab::{ExperimentState, UnitOutcome, TrafficSplit};
/// use metered_clock::Timestamp;
///
/// let split = TrafficSplit::new(vec![5_000, 5_000])?;
/// let mut s = ExperimentState::new("checkout-v2", split, Timestamp::from_unix_millis(0))?;
/// let arm = s.assign("user-1");
/// s.record(arm, UnitOutcome { converted: true, ..UnitOutcome::default() })?;
/// let json = serde_json::to_string(&s).unwrap();
/// let back: ExperimentState = serde_json::from_str(&json).unwrap();
/// assert_eq!(back, s);
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExperimentState {
    id: String,
    split: TrafficSplit,
    started_at: Timestamp,
    arms: Vec<ArmState>,
    /// The primary conversion of the champion and each challenger with every unit's
    /// covariate, in arrival order (one pair per challenger): CUPED's statistics.
    #[serde(default)]
    cuped: Vec<CupedPair>,
    /// The declared metrics, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metrics: Option<MetricSet>,
    /// Each declared metric's [`CupedPair`] per challenger, metric-major: the anytime-valid
    /// sequences of the family.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    metric_pairs: Vec<CupedPair>,
}

/// The challenger's share of the units of champion and challenger `weights`; an even share
/// when either has no traffic (no unit can then be recorded in it).
fn pair_share(champion: u32, challenger: u32) -> f64 {
    if champion == 0 || challenger == 0 {
        0.5
    } else {
        f64::from(challenger) / (f64::from(champion) + f64::from(challenger))
    }
}

impl ExperimentState {
    /// A new experiment named `id` (also the assignment salt); the split's first arm is the
    /// champion, every other arm a challenger.
    ///
    /// # Errors
    /// [`BayesError::InvalidParameter`] for an empty id; [`BayesError::ArmCount`] unless the split has
    /// between 2 and [`ARMS_MAX`] arms.
    pub fn new(id: impl Into<String>, split: TrafficSplit, started_at: Timestamp) -> Result<Self> {
        let id = id.into();
        if id.is_empty() {
            return Err(BayesError::InvalidParameter {
                name: "experiment id",
                reason: "must not be empty",
            });
        }
        let arms = split.weights().len();
        if !(2..=ARMS_MAX).contains(&arms) {
            return Err(BayesError::ArmCount {
                operation: "ExperimentState::new",
                got: arms,
                min: 2,
                max: ARMS_MAX,
            });
        }
        let weights = split.weights();
        let cuped = weights[1..]
            .iter()
            .map(|&w| CupedPair::conversion(pair_share(weights[0], w)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            id,
            arms: vec![ArmState::default(); arms],
            split,
            started_at,
            cuped,
            metrics: None,
            metric_pairs: Vec::new(),
        })
    }

    /// Declares the metrics this experiment tracks beside its primary conversion (recorded
    /// with [`ExperimentState::record_metric`], judged as one corrected family by
    /// [`ExperimentState::evaluate`]).
    ///
    /// # Errors
    /// [`BayesError::Incompatible`] once any metric value was recorded (the statistics would
    /// no longer match the declarations).
    pub fn with_metrics(mut self, metrics: MetricSet) -> Result<Self> {
        if self
            .arms
            .iter()
            .any(|a| a.metrics.iter().any(|m| m.stats().count() > 0))
        {
            return Err(BayesError::Incompatible {
                reason: "metrics cannot change after values were recorded",
            });
        }
        let count = metrics.metrics().len();
        let weights = self.split.weights();
        let mut pairs = Vec::with_capacity(count * (weights.len() - 1));
        for metric in metrics.metrics() {
            for &w in &weights[1..] {
                pairs.push(metric.pair(pair_share(weights[0], w))?);
            }
        }
        for arm in &mut self.arms {
            arm.metrics = vec![MetricStats::default(); count];
        }
        self.metrics = Some(metrics);
        self.metric_pairs = pairs;
        Ok(self)
    }

    /// The declared metrics, if any.
    #[must_use]
    pub fn metrics(&self) -> Option<&MetricSet> {
        self.metrics.as_ref()
    }

    /// The [`CupedPair`] of declared metric `metric` (its index in the [`MetricSet`]) between
    /// the champion and challenger `arm` (1, 2, …): its anytime-valid sequence and p-value.
    #[must_use]
    pub fn metric_pair(&self, metric: usize, arm: usize) -> Option<&CupedPair> {
        let challengers = self.arms.len().checked_sub(1)?;
        if arm == 0 || arm > challengers {
            return None;
        }
        self.metric_pairs
            .get(metric.checked_mul(challengers)? + arm - 1)
    }

    /// The CUPED statistics of the primary conversion, one [`CupedPair`] per challenger
    /// (champion and that challenger, in arrival order).
    #[must_use]
    pub fn cuped_pairs(&self) -> &[CupedPair] {
        &self.cuped
    }

    /// The experiment id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// When it started.
    #[must_use]
    pub fn started_at(&self) -> Timestamp {
        self.started_at
    }

    /// The traffic split.
    #[must_use]
    pub fn split(&self) -> &TrafficSplit {
        &self.split
    }

    /// The arms (0 = champion, then the challengers).
    #[must_use]
    pub fn arms(&self) -> &[ArmState] {
        &self.arms
    }

    /// The sticky arm of a unit.
    #[must_use]
    pub fn assign(&self, unit_id: &str) -> usize {
        self.split.assign(&self.id, unit_id)
    }

    /// Records one outcome in `arm`, without a covariate (as covariate 0 in the CUPED
    /// statistics: see [`ExperimentState::record_with_covariate`]).
    ///
    /// # Errors
    /// [`BayesError::UnknownArm`], and [`ArmState::record`]'s errors; nothing changes on error.
    pub fn record(&mut self, arm: usize, outcome: UnitOutcome) -> Result<()> {
        self.record_with_covariate(arm, outcome, None)
    }

    /// Records one outcome in `arm` with the unit's pre-exposure covariate (last month's
    /// conversions or spend; for CUPAC, a model's prediction of the conversion made before
    /// exposure), for a rule with [CUPED](crate::DecisionRuleBuilder::cuped) and the
    /// covariate balance check. A unit without one counts as covariate 0: the adjustment
    /// stays unbiased (the value is still fixed before exposure) and only explains less.
    ///
    /// # Errors
    /// [`BayesError::UnknownArm`]; [`BayesError::InvalidParameter`] for a non-finite
    /// covariate; [`ArmState::record`]'s errors. Nothing changes on error.
    pub fn record_with_covariate(
        &mut self,
        arm: usize,
        outcome: UnitOutcome,
        covariate: Option<f64>,
    ) -> Result<()> {
        let arms = self.arms.len();
        if arm >= arms {
            return Err(BayesError::UnknownArm { index: arm, arms });
        }
        let x = covariate.unwrap_or(0.0);
        if !x.is_finite() {
            return Err(BayesError::InvalidParameter {
                name: "covariate",
                reason: "must be finite",
            });
        }
        let y = f64::from(u8::from(outcome.converted));
        if self.cuped.len() + 1 != arms {
            // A state stored before CUPED statistics were kept: evaluation with CUPED refuses
            // it (the pairs would not cover every unit).
            return self.arms[arm].record(outcome);
        }
        // The pairs first, into copies: a failure leaves everything as it was.
        if arm == 0 {
            let mut pairs = self.cuped.clone();
            for pair in &mut pairs {
                pair.record(PairArm::Champion, y, x)?;
            }
            self.arms[0].record(outcome)?;
            self.cuped = pairs;
        } else {
            let mut pair = self.cuped[arm - 1];
            pair.record(PairArm::Challenger, y, x)?;
            self.arms[arm].record(outcome)?;
            self.cuped[arm - 1] = pair;
        }
        Ok(())
    }

    /// Records one value of declared metric `metric` (its index in the [`MetricSet`]) for a
    /// unit in `arm`, with the unit's covariate for CUPED (0 when `None`). A conversion
    /// metric takes 0 or 1.
    ///
    /// # Errors
    /// [`BayesError::UnknownArm`]; [`BayesError::InvalidParameter`] for an undeclared
    /// metric, a non-finite value or covariate, or a conversion value other than 0 and 1;
    /// [`BayesError::CountOverflow`]. Nothing changes on error.
    pub fn record_metric(
        &mut self,
        arm: usize,
        metric: usize,
        value: f64,
        covariate: Option<f64>,
    ) -> Result<()> {
        let arms = self.arms.len();
        if arm >= arms {
            return Err(BayesError::UnknownArm { index: arm, arms });
        }
        let declared = self
            .metrics
            .as_ref()
            .and_then(|set| set.metrics().get(metric))
            .ok_or(BayesError::InvalidParameter {
                name: "metric",
                reason: "no such metric is declared (ExperimentState::with_metrics)",
            })?;
        let x = covariate.unwrap_or(0.0);
        let mut stats =
            self.arms[arm]
                .metrics
                .get(metric)
                .copied()
                .ok_or(BayesError::Incompatible {
                    reason: "the arm has no statistics for this metric",
                })?;
        stats.record(declared, value, x)?;
        // The metric's pairs: every challenger's for a champion unit, one otherwise; into
        // copies first, so a failure changes nothing.
        let challengers = arms - 1;
        let first = metric * challengers;
        let mut pairs: Vec<(usize, CupedPair)> = Vec::new();
        if self.metric_pairs.len() == challengers * self.arms[0].metrics.len() {
            let (range, side) = if arm == 0 {
                (first..first + challengers, PairArm::Champion)
            } else {
                (first + arm - 1..first + arm, PairArm::Challenger)
            };
            for i in range {
                let mut pair = self.metric_pairs[i];
                pair.record(side, value, x)?;
                pairs.push((i, pair));
            }
        }
        self.arms[arm].metrics[metric] = stats;
        for (i, pair) in pairs {
            self.metric_pairs[i] = pair;
        }
        Ok(())
    }

    /// Adds the counts of another partial state of the same experiment (for example from
    /// another process). The start time becomes the earlier of the two. When only one of
    /// the two has CUPED statistics (a state stored before they were kept), the merged state
    /// has none: it evaluates as before, and refuses a rule with CUPED.
    ///
    /// # Errors
    /// [`BayesError::Incompatible`] for a different id or split; [`BayesError::CountOverflow`]. Nothing
    /// changes on error.
    pub fn merge(&mut self, other: &ExperimentState) -> Result<()> {
        if self.id != other.id || self.split != other.split || self.arms.len() != other.arms.len() {
            return Err(BayesError::Incompatible {
                reason: "different experiments or splits",
            });
        }
        if self.metrics != other.metrics {
            return Err(BayesError::Incompatible {
                reason: "different metrics",
            });
        }
        let mut arms = self.arms.clone();
        for (mine, theirs) in arms.iter_mut().zip(&other.arms) {
            mine.merge(theirs)?;
        }
        // A state stored before CUPED statistics were kept has none: the merged state then
        // has none either (evaluation with CUPED refuses it; without CUPED it is unaffected).
        let mut cuped = if self.cuped.len() == other.cuped.len() {
            self.cuped.clone()
        } else {
            tracing::warn!(id = %self.id, "merging a state without CUPED statistics: dropping them");
            Vec::new()
        };
        for (mine, theirs) in cuped.iter_mut().zip(&other.cuped) {
            mine.merge(theirs)?;
        }
        if self.metric_pairs.len() != other.metric_pairs.len() {
            return Err(BayesError::Incompatible {
                reason: "metric pairs in only one state",
            });
        }
        let mut metric_pairs = self.metric_pairs.clone();
        for (mine, theirs) in metric_pairs.iter_mut().zip(&other.metric_pairs) {
            mine.merge(theirs)?;
        }
        self.arms = arms;
        self.cuped = cuped;
        self.metric_pairs = metric_pairs;
        self.started_at = self.started_at.min(other.started_at);
        Ok(())
    }

    /// Evaluates the experiment at `now`: SRM check across all arms, then for each challenger
    /// its guardrails, the decision rule against the champion (on the CUPED-adjusted
    /// difference when the rule asks for [CUPED](crate::DecisionRuleBuilder::cuped), through
    /// [`DecisionRule::evaluate_cuped`]) and the pre-exposure covariate balance check; then
    /// the declared metrics' corrected family ([`ExperimentState::with_metrics`]). A
    /// sample-ratio mismatch ends every challenger's evaluation as
    /// [`InconclusiveReason::SampleRatioMismatch`], a covariate imbalance that challenger's as
    /// [`InconclusiveReason::CovariateImbalance`], unless a guardrail or the rule demands
    /// that challenger's rollback.
    ///
    /// Guardrails are checked challenger against champion and skipped while either arm has no
    /// data for them (no requests, no latencies).
    ///
    /// With two arms the result is the challenger's evaluation. With more, every challenger's
    /// is in [`ExperimentEvaluation::challengers`], and the top-level `evaluation` is the
    /// [lead](ExperimentEvaluation::lead) challenger's. Each challenger is judged at the
    /// rule's own error rate, so with `k` challengers the chance that some A/A challenger is
    /// declared a winner is up to `k` times that rate: build the rule with `α / k` (or
    /// thresholds tightened to match) to keep the family-wise rate at `α`. The
    /// `bayes_ab_evaluations_total` counter counts one evaluation per challenger.
    ///
    /// # Errors
    /// [`BayesError::InvalidWeights`] when an arm with zero weight has recorded units (the SRM
    /// check is undefined: record only in arms the split sends traffic to);
    /// [`BayesError::Incompatible`] for a rule with CUPED on a state whose units were
    /// recorded before CUPED statistics were kept; [`DecisionRule::evaluate_cuped`]'s errors.
    pub fn evaluate(
        &self,
        rule: &DecisionRule,
        guardrails: &Guardrails,
        now: Timestamp,
    ) -> Result<ExperimentEvaluation> {
        let units: Vec<u64> = self.arms.iter().map(|a| a.conversions.trials()).collect();
        let srm = if units.iter().sum::<u64>() > 0 {
            Some(srm_check(&units, &self.split)?)
        } else {
            None
        };
        let mismatch = srm.is_some_and(|s| s.mismatch);
        let champion = &self.arms[0];
        let mut challengers = Vec::with_capacity(self.arms.len() - 1);
        for (arm, challenger) in self.arms.iter().enumerate().skip(1) {
            let mut verdicts = Vec::new();
            if let Some(g) = &guardrails.error_rate
                && challenger.errors.trials() > 0
                && champion.errors.trials() > 0
            {
                verdicts.push(g.check(challenger.errors, Some(champion.errors))?);
            }
            if let Some(g) = &guardrails.latency
                && challenger.latency.count() > 0
                && champion.latency.count() > 0
            {
                verdicts.push(g.check(&challenger.latency, Some(&champion.latency))?);
            }
            let pair = self.cuped.get(arm - 1);
            let mut evaluation = if rule.cuped() {
                let pair = pair
                    .filter(|p| {
                        p.champion().count() == champion.conversions.trials()
                            && p.challenger().count() == challenger.conversions.trials()
                    })
                    .ok_or(BayesError::Incompatible {
                        reason: "CUPED needs every unit's covariate statistics, and this state \
                                 has units recorded before they were kept",
                    })?;
                rule.evaluate_cuped(
                    champion.conversions,
                    challenger.conversions,
                    pair,
                    self.started_at,
                    now,
                    &verdicts,
                )?
            } else {
                rule.evaluate(
                    champion.conversions,
                    challenger.conversions,
                    self.started_at,
                    now,
                    &verdicts,
                )
            };
            let covariate_balance = pair.and_then(|p| {
                let (a, b) = (
                    p.champion().covariate_stats(),
                    p.challenger().covariate_stats(),
                );
                covariate_balance_check(a.ok()?, b.ok()?).ok()
            });
            let imbalanced = covariate_balance.is_some_and(|c| c.imbalanced);
            if imbalanced {
                tracing::warn!(arm, "pre-exposure covariate imbalance");
                metrics::counter!("bayes_ab_covariate_imbalances_total").increment(1);
            }
            if !matches!(evaluation.decision, Recommendation::Rollback { .. }) {
                if mismatch {
                    evaluation.decision = Recommendation::Inconclusive {
                        reason: InconclusiveReason::SampleRatioMismatch,
                    };
                } else if imbalanced {
                    evaluation.decision = Recommendation::Inconclusive {
                        reason: InconclusiveReason::CovariateImbalance,
                    };
                }
            }
            challengers.push(ChallengerEvaluation {
                arm,
                evaluation,
                guardrails: verdicts,
                covariate_balance,
            });
        }
        let metrics = match &self.metrics {
            Some(set) => {
                let arms: Vec<&[MetricStats]> =
                    self.arms.iter().map(|a| a.metrics.as_slice()).collect();
                let mode = FamilyMode::of(rule.stopping());
                evaluate_metrics(set, &arms, &self.metric_pairs, mode)?
            }
            None => None,
        };
        let lead = lead_challenger(&challengers);
        let ChallengerEvaluation {
            arm,
            evaluation,
            guardrails: verdicts,
            ..
        } = challengers[lead].clone();
        Ok(ExperimentEvaluation {
            evaluation,
            guardrails: verdicts,
            srm,
            lead: arm,
            challengers,
            metrics,
        })
    }
}

/// Index (into `challengers`) of the challenger the top-level evaluation reports: the first
/// one to roll back (a breach must not hide behind another arm's result), else the winner
/// with the highest P(B > A), else the challenger with the highest P(B > A) (the first on
/// ties).
fn lead_challenger(challengers: &[ChallengerEvaluation]) -> usize {
    if let Some(i) = challengers
        .iter()
        .position(|c| matches!(c.evaluation.decision, Recommendation::Rollback { .. }))
    {
        return i;
    }
    let best = |winners_only: bool| {
        challengers
            .iter()
            .enumerate()
            .filter(|(_, c)| !winners_only || c.evaluation.decision == Recommendation::Winner)
            .fold(None, |best: Option<(usize, f64)>, (i, c)| {
                let p = c.evaluation.summary.prob_b_beats_a;
                match best {
                    Some((_, q)) if q >= p => best,
                    _ => Some((i, p)),
                }
            })
            .map(|(i, _)| i)
    };
    best(true).or_else(|| best(false)).unwrap_or(0)
}

/// One challenger's evaluation against the champion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChallengerEvaluation {
    /// The challenger's arm index (1, 2, …).
    pub arm: usize,
    /// Recommendation and posterior summary of this challenger against the champion.
    pub evaluation: Evaluation,
    /// This challenger's guardrails (breached or not).
    pub guardrails: Vec<GuardrailVerdict>,
    /// The pre-exposure balance of the covariate between champion and this challenger
    /// (the units' covariates given to
    /// [`record_with_covariate`](ExperimentState::record_with_covariate)); `None` until both
    /// arms have two units and the covariate varies. An imbalance (p < 0.001) ends the
    /// challenger's evaluation as [`InconclusiveReason::CovariateImbalance`], unless a
    /// rollback is due.
    #[serde(default)]
    pub covariate_balance: Option<CovariateBalance>,
}

/// The guardrails an [`Experiment`] checks on every evaluation (challenger against champion).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Guardrails {
    /// Error-rate guardrail.
    pub error_rate: Option<ErrorRateGuardrail>,
    /// Latency-quantile guardrail.
    pub latency: Option<LatencyGuardrail>,
}

/// An evaluation with the guardrail verdicts and SRM check behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[must_use]
pub struct ExperimentEvaluation {
    /// Recommendation and posterior summary of the [lead](Self::lead) challenger (the only
    /// one in a two-arm experiment).
    pub evaluation: Evaluation,
    /// The lead challenger's guardrails (breached or not).
    pub guardrails: Vec<GuardrailVerdict>,
    /// The sample-ratio check across all arms, once any unit was recorded.
    pub srm: Option<SrmCheck>,
    /// Arm index of the challenger `evaluation` and `guardrails` speak of: the first one to
    /// roll back, else the winner with the highest P(B > A), else the challenger with the
    /// highest P(B > A). Always 1 with two arms.
    #[serde(default = "first_challenger")]
    pub lead: usize,
    /// Every challenger's evaluation, in arm order (one entry with two arms).
    #[serde(default)]
    pub challengers: Vec<ChallengerEvaluation>,
    /// The declared metrics × challengers as one corrected family
    /// ([`ExperimentState::with_metrics`]); `None` without declared metrics or before any
    /// member has enough data.
    #[serde(default)]
    pub metrics: Option<MetricsEvaluation>,
}

/// The lead of evaluations serialized before there could be several challengers.
fn first_challenger() -> usize {
    1
}

/// A running experiment: state, rule, guardrails and the clock (the seed's create / record /
/// evaluate API).
///
/// ```
/// use std::sync::Arc;
/// use bayes_ab::{DecisionRule, Experiment, Guardrails, UnitOutcome, TrafficSplit};
/// use metered_clock::{ManualClock, Timestamp};
///
/// let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(0)));
/// let mut exp = Experiment::create(
///     "checkout-v2",
///     TrafficSplit::new(vec![5_000, 5_000])?,
///     DecisionRule::builder().build()?,
///     Guardrails::default(),
///     clock,
/// )?;
/// let arm = exp.assign("user-7");
/// exp.record(arm, UnitOutcome { converted: true, ..UnitOutcome::default() })?;
/// let e = exp.evaluate()?;
/// assert!(!e.evaluation.decision.is_final()); // far below the minimum sample
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Experiment {
    state: ExperimentState,
    rule: DecisionRule,
    guardrails: Guardrails,
    clock: Arc<dyn Clock>,
}

impl Experiment {
    /// Starts an experiment now (by `clock`).
    ///
    /// # Errors
    /// As [`ExperimentState::new`].
    pub fn create(
        id: impl Into<String>,
        split: TrafficSplit,
        rule: DecisionRule,
        guardrails: Guardrails,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let state = ExperimentState::new(id, split, clock.now())?;
        Ok(Self::from_state(state, rule, guardrails, clock))
    }

    /// Resumes an experiment from stored state.
    #[must_use]
    pub fn from_state(
        state: ExperimentState,
        rule: DecisionRule,
        guardrails: Guardrails,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            state,
            rule,
            guardrails,
            clock,
        }
    }

    /// The state, to persist.
    #[must_use]
    pub fn state(&self) -> &ExperimentState {
        &self.state
    }

    /// The sticky arm of a unit.
    #[must_use]
    pub fn assign(&self, unit_id: &str) -> usize {
        self.state.assign(unit_id)
    }

    /// Records one outcome.
    ///
    /// # Errors
    /// As [`ExperimentState::record`].
    pub fn record(&mut self, arm: usize, outcome: UnitOutcome) -> Result<()> {
        self.state.record(arm, outcome)
    }

    /// Records one outcome with the unit's pre-exposure covariate.
    ///
    /// # Errors
    /// As [`ExperimentState::record_with_covariate`].
    pub fn record_with_covariate(
        &mut self,
        arm: usize,
        outcome: UnitOutcome,
        covariate: Option<f64>,
    ) -> Result<()> {
        self.state.record_with_covariate(arm, outcome, covariate)
    }

    /// Records one value of a declared metric.
    ///
    /// # Errors
    /// As [`ExperimentState::record_metric`].
    pub fn record_metric(
        &mut self,
        arm: usize,
        metric: usize,
        value: f64,
        covariate: Option<f64>,
    ) -> Result<()> {
        self.state.record_metric(arm, metric, value, covariate)
    }

    /// Declares the metrics tracked beside the primary conversion.
    ///
    /// # Errors
    /// As [`ExperimentState::with_metrics`].
    pub fn with_metrics(mut self, metrics: MetricSet) -> Result<Self> {
        self.state = self.state.with_metrics(metrics)?;
        Ok(self)
    }

    /// Evaluates at the clock's current time.
    ///
    /// # Errors
    /// As [`ExperimentState::evaluate`].
    pub fn evaluate(&self) -> Result<ExperimentEvaluation> {
        self.state
            .evaluate(&self.rule, &self.guardrails, self.clock.now())
    }
}

/// Where experiment states live. Versions make writes optimistic: a write names the version
/// it read and fails with [`BayesError::VersionConflict`] if another writer got there first.
#[async_trait]
pub trait ExperimentStore: Send + Sync {
    /// Stores a new experiment at version 1.
    ///
    /// # Errors
    /// [`BayesError::ExperimentExists`] if the id is taken.
    async fn create(&self, state: ExperimentState) -> Result<u64>;

    /// The state and its version.
    ///
    /// # Errors
    /// [`BayesError::ExperimentNotFound`].
    async fn load(&self, id: &str) -> Result<(ExperimentState, u64)>;

    /// Replaces the state if its version is still `expected_version`; returns the new version.
    ///
    /// # Errors
    /// [`BayesError::ExperimentNotFound`], [`BayesError::VersionConflict`].
    async fn save(&self, state: &ExperimentState, expected_version: u64) -> Result<u64>;

    /// Atomically adds a partial state (counts recorded elsewhere) to the stored one; returns
    /// the new version.
    ///
    /// # Errors
    /// [`BayesError::ExperimentNotFound`], and [`ExperimentState::merge`]'s errors.
    async fn merge(&self, delta: &ExperimentState) -> Result<u64>;

    /// [`merge`](Self::merge), at most once per `key` for the experiment: returns `true` if
    /// the delta was added, `false` if a merge under this key with the same `fingerprint`
    /// (a digest of the request the caller derived the delta from) was already applied to
    /// this experiment (the counts and version are then unchanged). The key is stored with
    /// its fingerprint; the same key with another fingerprint is refused with
    /// [`BayesError::IdempotencyConflict`] and changes nothing. Keys last as long as the
    /// experiment: [`delete`](Self::delete) drops them, so a recreated experiment of the same
    /// id starts with none. A refused merge (an error) records no key.
    ///
    /// # Errors
    /// [`BayesError::ExperimentNotFound`], [`BayesError::IdempotencyConflict`], and
    /// [`ExperimentState::merge`]'s errors.
    async fn merge_once(
        &self,
        delta: &ExperimentState,
        key: &str,
        fingerprint: [u8; 16],
    ) -> Result<bool>;

    /// Removes the experiment, its counts and its [`merge_once`](Self::merge_once) keys.
    ///
    /// # Errors
    /// [`BayesError::ExperimentNotFound`].
    async fn delete(&self, id: &str) -> Result<()>;
}

/// An [`ExperimentStore`] in process memory.
#[derive(Debug, Default)]
pub struct InMemoryExperimentStore {
    experiments: Mutex<HashMap<String, (ExperimentState, u64)>>,
    /// [`ExperimentStore::merge_once`] keys applied, with their request fingerprints, per
    /// experiment id. Always locked after `experiments`.
    merge_keys: Mutex<HashMap<String, HashMap<String, [u8; 16]>>>,
}

impl InMemoryExperimentStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl ExperimentStore for InMemoryExperimentStore {
    async fn create(&self, state: ExperimentState) -> Result<u64> {
        let mut map = self.experiments.lock();
        if map.contains_key(state.id()) {
            return Err(BayesError::ExperimentExists {
                id: state.id().to_owned(),
            });
        }
        map.insert(state.id().to_owned(), (state, 1));
        Ok(1)
    }

    async fn load(&self, id: &str) -> Result<(ExperimentState, u64)> {
        self.experiments
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| BayesError::ExperimentNotFound { id: id.to_owned() })
    }

    async fn save(&self, state: &ExperimentState, expected_version: u64) -> Result<u64> {
        let mut map = self.experiments.lock();
        let (stored, version) =
            map.get_mut(state.id())
                .ok_or_else(|| BayesError::ExperimentNotFound {
                    id: state.id().to_owned(),
                })?;
        if *version != expected_version {
            return Err(BayesError::VersionConflict {
                id: state.id().to_owned(),
                expected: expected_version,
                found: *version,
            });
        }
        *stored = state.clone();
        *version += 1;
        Ok(*version)
    }

    async fn merge(&self, delta: &ExperimentState) -> Result<u64> {
        let mut map = self.experiments.lock();
        let (stored, version) =
            map.get_mut(delta.id())
                .ok_or_else(|| BayesError::ExperimentNotFound {
                    id: delta.id().to_owned(),
                })?;
        stored.merge(delta)?;
        *version += 1;
        Ok(*version)
    }

    async fn merge_once(
        &self,
        delta: &ExperimentState,
        key: &str,
        fingerprint: [u8; 16],
    ) -> Result<bool> {
        let mut map = self.experiments.lock();
        let (stored, version) =
            map.get_mut(delta.id())
                .ok_or_else(|| BayesError::ExperimentNotFound {
                    id: delta.id().to_owned(),
                })?;
        let mut keys = self.merge_keys.lock();
        if let Some(seen) = keys.get(delta.id()).and_then(|k| k.get(key)) {
            return if *seen == fingerprint {
                Ok(false)
            } else {
                Err(BayesError::IdempotencyConflict {
                    id: delta.id().to_owned(),
                    key: key.to_owned(),
                })
            };
        }
        stored.merge(delta)?;
        *version += 1;
        keys.entry(delta.id().to_owned())
            .or_default()
            .insert(key.to_owned(), fingerprint);
        Ok(true)
    }

    async fn delete(&self, id: &str) -> Result<()> {
        let mut map = self.experiments.lock();
        map.remove(id)
            .ok_or_else(|| BayesError::ExperimentNotFound { id: id.to_owned() })?;
        self.merge_keys.lock().remove(id);
        Ok(())
    }
}
