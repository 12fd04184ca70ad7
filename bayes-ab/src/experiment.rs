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
use crate::decision::{DecisionRule, Evaluation, InconclusiveReason, Recommendation};
use crate::error::{BayesError, Result};
use crate::guardrail::{ErrorRateGuardrail, GuardrailVerdict, LatencyGuardrail, LatencySketch};
use crate::multi::ARMS_MAX;
use crate::traffic::{SrmCheck, TrafficSplit, srm_check};

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
        let mut latency = self.latency.clone();
        latency.merge(&other.latency)?;
        *self = ArmState {
            conversions,
            errors,
            latency,
            value,
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
        Ok(Self {
            id,
            arms: vec![ArmState::default(); arms],
            split,
            started_at,
        })
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

    /// Records one outcome in `arm`.
    ///
    /// # Errors
    /// [`BayesError::UnknownArm`], and [`ArmState::record`]'s errors; nothing changes on error.
    pub fn record(&mut self, arm: usize, outcome: UnitOutcome) -> Result<()> {
        let arms = self.arms.len();
        self.arms
            .get_mut(arm)
            .ok_or(BayesError::UnknownArm { index: arm, arms })?
            .record(outcome)
    }

    /// Adds the counts of another partial state of the same experiment (for example from
    /// another process). The start time becomes the earlier of the two.
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
        let mut arms = self.arms.clone();
        for (mine, theirs) in arms.iter_mut().zip(&other.arms) {
            mine.merge(theirs)?;
        }
        self.arms = arms;
        self.started_at = self.started_at.min(other.started_at);
        Ok(())
    }

    /// Evaluates the experiment at `now`: SRM check across all arms, then for each challenger
    /// its guardrails and the decision rule against the champion. A sample-ratio mismatch
    /// ends every challenger's evaluation as [`InconclusiveReason::SampleRatioMismatch`],
    /// unless a guardrail demands that challenger's rollback.
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
    /// check is undefined: record only in arms the split sends traffic to).
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
            let mut evaluation = rule.evaluate(
                champion.conversions,
                challenger.conversions,
                self.started_at,
                now,
                &verdicts,
            );
            if mismatch && !matches!(evaluation.decision, Recommendation::Rollback { .. }) {
                evaluation.decision = Recommendation::Inconclusive {
                    reason: InconclusiveReason::SampleRatioMismatch,
                };
            }
            challengers.push(ChallengerEvaluation {
                arm,
                evaluation,
                guardrails: verdicts,
            });
        }
        let lead = lead_challenger(&challengers);
        let ChallengerEvaluation {
            arm,
            evaluation,
            guardrails: verdicts,
        } = challengers[lead].clone();
        Ok(ExperimentEvaluation {
            evaluation,
            guardrails: verdicts,
            srm,
            lead: arm,
            challengers,
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
}

/// An [`ExperimentStore`] in process memory.
#[derive(Debug, Default)]
pub struct InMemoryExperimentStore {
    experiments: Mutex<HashMap<String, (ExperimentState, u64)>>,
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
}
