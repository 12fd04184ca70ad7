//! Many metrics per experiment: declared metrics with their own priors and CUPED, judged
//! challenger by challenger against the champion and corrected as one family (Holm or
//! Benjamini–Hochberg across metrics × arms).

use serde::{Deserialize, Serialize};

use crate::beta::{Beta, Counts, Interval};
use crate::cuped::{
    CovariateStats, CupedPair, EffectPrior, cuped_compare_with_prior, effect_posterior,
};
use crate::decision::{asymptotic_p_value, half_width_with_mixing};
use crate::error::{BayesError, Result, check_probability};
use crate::multiple::{
    CorrectedHypothesis, Correction, Hypothesis, adjust_p_values, agreeing_interval,
    interval_level, reject,
};
use crate::special::{normal_cdf, normal_quantile};
use crate::two_arm::{CompareConfig, compare, normal_losses};

/// Most metrics one [`MetricSet`] declares.
pub const METRICS_MAX: usize = 32;

/// Longest metric name, in bytes.
pub const METRIC_NAME_MAX: usize = 64;

/// What a metric measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MetricKind {
    /// A unit converts or not: values 0 and 1, compared exactly with Beta posteriors under
    /// the metric's [rate prior](Metric::with_rate_prior) (or, with CUPED, by the Gaussian
    /// comparison of the adjusted difference).
    Conversion,
    /// A real value per unit (revenue, time on page): the Gaussian comparison of the means
    /// (or, with CUPED, of the adjusted difference), under the metric's
    /// [effect prior](Metric::with_effect_prior).
    Continuous,
}

/// One metric of a [`MetricSet`]: its name, kind, prior and whether it is compared after
/// CUPED on each unit's covariate.
///
/// ```
/// use bayes_ab::{Beta, EffectPrior, Metric};
///
/// // Checkout conversion, with last year's rate as an informative prior (about 10 %,
/// // worth 200 units).
/// let checkout = Metric::conversion("checkout")?.with_rate_prior(Beta::new(20.0, 180.0)?)?;
/// // Revenue per user after CUPED on last month's revenue, sceptical of effects beyond ±1.
/// let revenue = Metric::continuous("revenue")?
///     .with_cuped(true)
///     .with_effect_prior(EffectPrior::normal(0.0, 0.5)?);
/// assert!(Metric::continuous("revenue")?.with_rate_prior(Beta::UNIFORM).is_err());
/// assert!(Metric::conversion("").is_err());
/// # let _ = (checkout, revenue);
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawMetric")]
pub struct Metric {
    name: String,
    kind: MetricKind,
    rate_prior: Beta,
    effect_prior: Option<EffectPrior>,
    cuped: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bounds: Option<(f64, f64)>,
}

/// The serialized form of a [`Metric`], validated on the way in.
#[derive(Deserialize)]
struct RawMetric {
    name: String,
    kind: MetricKind,
    rate_prior: Beta,
    effect_prior: Option<EffectPrior>,
    cuped: bool,
    #[serde(default)]
    bounds: Option<(f64, f64)>,
}

impl TryFrom<RawMetric> for Metric {
    type Error = BayesError;
    fn try_from(raw: RawMetric) -> Result<Self> {
        let mut metric = Metric::new(raw.name, raw.kind)?;
        if raw.kind == MetricKind::Conversion {
            metric = metric.with_rate_prior(raw.rate_prior)?;
        }
        if let Some((lower, upper)) = raw.bounds {
            metric = metric.with_bounds(lower, upper)?;
        }
        metric.effect_prior = raw.effect_prior;
        metric.cuped = raw.cuped;
        Ok(metric)
    }
}

impl Metric {
    /// A conversion metric with a uniform rate prior and no CUPED.
    ///
    /// # Errors
    /// [`BayesError::InvalidParameter`] for an empty name or one longer than
    /// [`METRIC_NAME_MAX`] bytes.
    pub fn conversion(name: impl Into<String>) -> Result<Self> {
        Self::new(name.into(), MetricKind::Conversion)
    }

    /// A continuous metric with a flat effect prior and no CUPED.
    ///
    /// # Errors
    /// As [`Metric::conversion`].
    pub fn continuous(name: impl Into<String>) -> Result<Self> {
        Self::new(name.into(), MetricKind::Continuous)
    }

    fn new(name: String, kind: MetricKind) -> Result<Self> {
        if name.is_empty() || name.len() > METRIC_NAME_MAX {
            return Err(BayesError::InvalidParameter {
                name: "metric name",
                reason: "must be 1 to METRIC_NAME_MAX bytes",
            });
        }
        Ok(Self {
            name,
            kind,
            rate_prior: Beta::UNIFORM,
            effect_prior: None,
            cuped: false,
            bounds: None,
        })
    }

    /// Declares that every value of this continuous metric lies in `[lower, upper]` (a
    /// capped revenue, a score): values outside are refused, and in the anytime-valid mode
    /// the metric is judged by its anytime-valid CUPED sequence ([`CupedPair`]) instead of
    /// the fixed-horizon Gaussian test. A conversion metric is bounded by 0 and 1 already.
    ///
    /// # Errors
    /// [`BayesError::InvalidParameter`] for a conversion metric, or unless both bounds are
    /// finite with `lower < upper`.
    pub fn with_bounds(mut self, lower: f64, upper: f64) -> Result<Self> {
        if self.kind != MetricKind::Continuous {
            return Err(BayesError::InvalidParameter {
                name: "metric bounds",
                reason: "a conversion metric is bounded by 0 and 1 already",
            });
        }
        if !(lower.is_finite() && upper.is_finite() && lower < upper) {
            return Err(BayesError::InvalidParameter {
                name: "metric bounds",
                reason: "must be finite with lower < upper",
            });
        }
        self.bounds = Some((lower, upper));
        Ok(self)
    }

    /// The bounds of the metric's values: `(0, 1)` for a conversion, the declared ones for a
    /// continuous metric, `None` for an unbounded one.
    #[must_use]
    pub fn bounds(&self) -> Option<(f64, f64)> {
        match self.kind {
            MetricKind::Conversion => Some((0.0, 1.0)),
            MetricKind::Continuous => self.bounds,
        }
    }

    /// A fresh [`CupedPair`] of this metric for a challenger with `share` of the pair's
    /// units.
    pub(crate) fn pair(&self, share: f64) -> Result<CupedPair> {
        match self.bounds() {
            Some((lower, upper)) => CupedPair::bounded(share, lower, upper),
            None => CupedPair::unbounded(share),
        }
    }

    /// The Beta prior of each arm's rate (a conversion metric compared without CUPED).
    ///
    /// # Errors
    /// [`BayesError::InvalidParameter`] for a continuous metric (give it an
    /// [effect prior](Self::with_effect_prior)).
    pub fn with_rate_prior(mut self, prior: Beta) -> Result<Self> {
        if self.kind != MetricKind::Conversion {
            return Err(BayesError::InvalidParameter {
                name: "rate prior",
                reason: "only a conversion metric has a rate prior",
            });
        }
        self.rate_prior = prior;
        Ok(self)
    }

    /// A Gaussian prior on the difference challenger − champion, in the metric's unit, for
    /// the Gaussian comparisons (a continuous metric, and any metric after CUPED).
    #[must_use]
    pub fn with_effect_prior(mut self, prior: EffectPrior) -> Self {
        self.effect_prior = Some(prior);
        self
    }

    /// Whether the metric is compared after CUPED / CUPAC regression adjustment on the
    /// covariate recorded with each value.
    #[must_use]
    pub fn with_cuped(mut self, enabled: bool) -> Self {
        self.cuped = enabled;
        self
    }

    /// The name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kind.
    #[must_use]
    pub fn kind(&self) -> MetricKind {
        self.kind
    }

    /// The rate prior (conversion metrics).
    #[must_use]
    pub fn rate_prior(&self) -> Beta {
        self.rate_prior
    }

    /// The effect prior, if any.
    #[must_use]
    pub fn effect_prior(&self) -> Option<EffectPrior> {
        self.effect_prior
    }

    /// Whether CUPED applies.
    #[must_use]
    pub fn cuped(&self) -> bool {
        self.cuped
    }
}

/// The metrics an [`Experiment`](crate::Experiment) tracks beside its primary conversion,
/// and the correction that makes their decisions one family: every metric × every
/// challenger is one hypothesis, corrected together at `alpha`.
///
/// ```
/// use bayes_ab::{Correction, Metric, MetricSet};
///
/// let set = MetricSet::new(
///     vec![Metric::conversion("signup")?, Metric::continuous("revenue")?.with_cuped(true)],
///     Correction::Holm,
///     0.05,
/// )?;
/// assert_eq!(set.index_of("revenue"), Some(1));
/// assert!(MetricSet::new(vec![Metric::conversion("a")?, Metric::conversion("a")?], Correction::Holm, 0.05).is_err());
/// # Ok::<(), bayes_ab::BayesError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawMetricSet")]
pub struct MetricSet {
    metrics: Vec<Metric>,
    correction: Correction,
    alpha: f64,
}

/// The serialized form of a [`MetricSet`], validated on the way in.
#[derive(Deserialize)]
struct RawMetricSet {
    metrics: Vec<Metric>,
    correction: Correction,
    alpha: f64,
}

impl TryFrom<RawMetricSet> for MetricSet {
    type Error = BayesError;
    fn try_from(raw: RawMetricSet) -> Result<Self> {
        MetricSet::new(raw.metrics, raw.correction, raw.alpha)
    }
}

impl MetricSet {
    /// A family of metrics under `correction` at level `alpha`.
    ///
    /// # Errors
    /// [`BayesError::InvalidParameter`] for no metrics, more than [`METRICS_MAX`], or two
    /// with the same name; [`BayesError::InvalidProbability`] unless `0 < alpha < 1`.
    pub fn new(metrics: Vec<Metric>, correction: Correction, alpha: f64) -> Result<Self> {
        let alpha = check_probability("alpha", alpha)?;
        if metrics.is_empty() || metrics.len() > METRICS_MAX {
            return Err(BayesError::InvalidParameter {
                name: "metrics",
                reason: "a set holds 1 to METRICS_MAX metrics",
            });
        }
        for (i, m) in metrics.iter().enumerate() {
            if metrics[..i].iter().any(|other| other.name == m.name) {
                return Err(BayesError::InvalidParameter {
                    name: "metrics",
                    reason: "metric names must be unique",
                });
            }
        }
        Ok(Self {
            metrics,
            correction,
            alpha,
        })
    }

    /// The metrics, in declaration order (a metric's index is its position).
    #[must_use]
    pub fn metrics(&self) -> &[Metric] {
        &self.metrics
    }

    /// The correction.
    #[must_use]
    pub fn correction(&self) -> Correction {
        self.correction
    }

    /// The family's α.
    #[must_use]
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// The index of the metric named `name`.
    #[must_use]
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.metrics.iter().position(|m| m.name == name)
    }
}

/// What one arm recorded for one metric: the joint moments of value and covariate, and for
/// a conversion metric the exact number of conversions. Mergeable by adding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricStats {
    successes: u64,
    stats: CovariateStats,
}

impl MetricStats {
    /// Adds one value `y` of `metric` with covariate `x` (0 when the unit has none).
    pub(crate) fn record(&mut self, metric: &Metric, y: f64, x: f64) -> Result<()> {
        let mut successes = self.successes;
        if let Some((lower, upper)) = metric.bounds
            && !(y >= lower && y <= upper)
        {
            return Err(BayesError::InvalidParameter {
                name: "metric value",
                reason: "must lie within the metric's declared bounds",
            });
        }
        if metric.kind == MetricKind::Conversion {
            if y == 1.0 {
                successes = successes.checked_add(1).ok_or(BayesError::CountOverflow)?;
            } else if y != 0.0 {
                return Err(BayesError::InvalidParameter {
                    name: "conversion value",
                    reason: "must be 0 or 1",
                });
            }
        }
        let mut stats = self.stats;
        stats.record(y, x)?;
        *self = Self { successes, stats };
        Ok(())
    }

    pub(crate) fn merge(self, other: MetricStats) -> Result<MetricStats> {
        Ok(Self {
            successes: self
                .successes
                .checked_add(other.successes)
                .ok_or(BayesError::CountOverflow)?,
            stats: self.stats.merge(other.stats)?,
        })
    }

    /// The joint statistics of value and covariate.
    #[must_use]
    pub fn stats(&self) -> &CovariateStats {
        &self.stats
    }

    /// Conversions out of units (meaningful for a conversion metric).
    ///
    /// # Errors
    /// [`BayesError::SuccessesExceedTrials`] for a continuous metric with values of 1 counted
    /// as conversions (cannot happen for states built by this crate).
    pub fn counts(&self) -> Result<Counts> {
        Counts::new(self.successes, self.stats.count())
    }
}

/// One metric of one challenger against the champion, with its corrected decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricResult {
    /// The metric's name.
    pub metric: String,
    /// The challenger's arm index (1, 2, …).
    pub arm: usize,
    /// Whether the comparison was CUPED-adjusted.
    pub cuped: bool,
    /// P(challenger > champion) under the metric's prior.
    pub prob_b_beats_a: f64,
    /// Expected loss of keeping the champion, in the metric's unit.
    pub expected_loss_a: f64,
    /// Expected loss of choosing the challenger.
    pub expected_loss_b: f64,
    /// CUPED's `Var(adjusted) / Var(unadjusted)` (about `1 − ρ²`), when adjusted.
    pub variance_ratio: Option<f64>,
    /// Which test judged the member (it follows the rule's stopping mode): see
    /// [`MemberTest`]. `corrected.hypothesis` always holds the Gaussian estimate and its
    /// standard error; `corrected.p_value` and `corrected.interval` are those of the test.
    #[serde(default)]
    pub test: MemberTest,
    /// The family-corrected test: the hypothesis (posterior mean and standard deviation of
    /// the difference), its p-value and adjusted p-value, whether it is rejected, and an
    /// interval that excludes zero exactly when it is.
    pub corrected: CorrectedHypothesis,
}

/// The test a member of the metric family gets, following the rule's stopping mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MemberTest {
    /// The two-sided Gaussian test of the member's posterior, read once at a planned
    /// horizon ([`StoppingMode::Bayesian`](crate::StoppingMode::Bayesian); and, in the
    /// anytime-valid mode, unbounded continuous metrics).
    #[default]
    FixedHorizon,
    /// The asymptotic confidence sequence of the sequential mode on the member's estimate and
    /// variance (mixing tuned by the rule's α and tuning sample): its p-value is the smallest
    /// α at which the sequence excludes zero, and the interval the sequence at the family's
    /// level. Valid under peeking as the sequential mode is: asymptotically.
    /// ([`StoppingMode::Sequential`](crate::StoppingMode::Sequential).)
    Asymptotic,
    /// The member's anytime-valid CUPED sequence ([`CupedPair`]): its p-value
    /// ([`CupedPair::anytime_p_value`]) and the sequence at the family's level. Valid at every
    /// look from the first unit.
    /// ([`StoppingMode::AnytimeValid`](crate::StoppingMode::AnytimeValid), bounded metrics.)
    AnytimeValid,
}

/// How the family of an evaluation tests its members, from the rule's stopping mode.
#[derive(Clone, Copy, Debug)]
pub(crate) enum FamilyMode {
    FixedHorizon,
    Asymptotic { rho2: f64 },
    Anytime,
}

impl FamilyMode {
    pub(crate) fn of(mode: crate::StoppingMode) -> Self {
        match mode {
            crate::StoppingMode::Sequential {
                alpha,
                tuning_sample,
            } => Self::Asymptotic {
                rho2: crate::decision::mixing(alpha, tuning_sample),
            },
            crate::StoppingMode::AnytimeValid { .. } => Self::Anytime,
            crate::StoppingMode::Bayesian { .. } => Self::FixedHorizon,
        }
    }
}

/// A metric of a challenger left out of the family: not enough data yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingMetric {
    /// The metric's name.
    pub metric: String,
    /// The challenger's arm index.
    pub arm: usize,
    /// What is missing.
    pub reason: String,
}

/// The corrected family of every metric × challenger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[must_use]
pub struct MetricsEvaluation {
    /// The correction applied.
    pub correction: Correction,
    /// The family's α.
    pub alpha: f64,
    /// The per-comparison level of the intervals (as
    /// [`CorrectedFamily::interval_alpha`](crate::CorrectedFamily::interval_alpha)): each
    /// interval agrees with its decision.
    pub interval_alpha: f64,
    /// Rejections in the family.
    pub rejections: usize,
    /// One entry per metric × challenger with enough data, metric by metric in declaration
    /// order, challengers in arm order within each.
    pub results: Vec<MetricResult>,
    /// Metric × challenger pairs without enough data yet (fewer than two units per arm,
    /// three with CUPED, or no variance): not part of the family until they have it.
    pub pending: Vec<PendingMetric>,
}

/// Everything a comparison contributes to the family.
struct Member {
    hypothesis: Hypothesis,
    prob_b_beats_a: f64,
    expected_loss_a: f64,
    expected_loss_b: f64,
    variance_ratio: Option<f64>,
}

fn compare_metric(metric: &Metric, a: &MetricStats, b: &MetricStats) -> Result<Member> {
    if metric.cuped {
        let c = cuped_compare_with_prior(a.stats, b.stats, 0.95, metric.effect_prior)?;
        return Ok(Member {
            hypothesis: Hypothesis::new(c.difference, c.standard_error)?,
            prob_b_beats_a: c.prob_b_beats_a,
            expected_loss_a: c.expected_loss_a,
            expected_loss_b: c.expected_loss_b,
            variance_ratio: Some(c.variance_ratio),
        });
    }
    match metric.kind {
        MetricKind::Conversion => {
            if a.stats.count() < 2 || b.stats.count() < 2 {
                return Err(BayesError::InsufficientData {
                    what: "a metric needs at least two units per arm",
                });
            }
            let pa = metric.rate_prior.update(a.counts()?);
            let pb = metric.rate_prior.update(b.counts()?);
            let s = compare(pa, pb, &CompareConfig::default());
            Ok(Member {
                hypothesis: Hypothesis::from_posteriors(pa, pb),
                prob_b_beats_a: s.prob_b_beats_a,
                expected_loss_a: s.expected_loss_a,
                expected_loss_b: s.expected_loss_b,
                variance_ratio: None,
            })
        }
        MetricKind::Continuous => {
            let (ma, mb) = (a.stats.metric_stats()?, b.stats.metric_stats()?);
            #[allow(clippy::cast_precision_loss)]
            let se =
                (ma.variance()? / ma.count() as f64 + mb.variance()? / mb.count() as f64).sqrt();
            if se.is_nan() || se <= 0.0 {
                return Err(BayesError::InsufficientData {
                    what: "both arms have zero variance",
                });
            }
            let (mean, sd) = effect_posterior(metric.effect_prior, mb.mean()? - ma.mean()?, se);
            let (loss_a, loss_b) = normal_losses(mean, sd);
            Ok(Member {
                hypothesis: Hypothesis::new(mean, sd)?,
                prob_b_beats_a: normal_cdf(mean / sd),
                expected_loss_a: loss_a,
                expected_loss_b: loss_b,
                variance_ratio: None,
            })
        }
    }
}

/// The family of `set` over `arms` (each arm's statistics per metric, arm 0 the champion).
/// `pairs` holds each metric's [`CupedPair`] per challenger, metric-major (may be empty for
/// states stored before pairs were kept); `mode` says how members are tested
/// ([`MemberTest`]). `None` when no member has enough data.
pub(crate) fn evaluate_metrics(
    set: &MetricSet,
    arms: &[&[MetricStats]],
    pairs: &[CupedPair],
    mode: FamilyMode,
) -> Result<Option<MetricsEvaluation>> {
    let mut members = Vec::new();
    let mut pending = Vec::new();
    let Some((champion, challengers)) = arms.split_first() else {
        return Ok(None);
    };
    for (index, metric) in set.metrics.iter().enumerate() {
        let a = champion.get(index).copied().unwrap_or_default();
        for (offset, challenger) in challengers.iter().enumerate() {
            let b = challenger.get(index).copied().unwrap_or_default();
            let pair = pairs.get(index * challengers.len() + offset);
            #[allow(clippy::cast_precision_loss)]
            let units = a.stats.count().saturating_add(b.stats.count()) as f64;
            let test = match mode {
                FamilyMode::Anytime => match pair {
                    Some(p) if p.bounds().is_some() => Test::Anytime(p),
                    _ => Test::FixedHorizon,
                },
                FamilyMode::Asymptotic { rho2 } => Test::Asymptotic { rho2, units },
                FamilyMode::FixedHorizon => Test::FixedHorizon,
            };
            match compare_metric(metric, &a, &b) {
                Ok(member) => members.push((index, offset + 1, member, test)),
                Err(BayesError::InsufficientData { what }) => pending.push(PendingMetric {
                    metric: metric.name.clone(),
                    arm: offset + 1,
                    reason: what.to_owned(),
                }),
                Err(e) => return Err(e),
            }
        }
    }
    if members.is_empty() {
        return Ok(None);
    }
    let p_values = members
        .iter()
        .map(|(_, _, m, test)| test.p_value(&m.hypothesis))
        .collect::<Result<Vec<f64>>>()?;
    let adjusted = adjust_p_values(&p_values, set.correction)?;
    let rejected = reject(&p_values, set.alpha, set.correction)?;
    let rejections = rejected.iter().filter(|&&r| r).count();
    let interval_alpha = interval_level(set.correction, set.alpha, members.len(), rejections);
    let z = normal_quantile(1.0 - 0.5 * interval_alpha);
    let mut results = Vec::with_capacity(members.len());
    for ((((index, arm, m, test), p_value), adjusted_p_value), rejected) in members
        .into_iter()
        .zip(p_values)
        .zip(adjusted)
        .zip(rejected)
    {
        let h = m.hypothesis;
        let interval = match test {
            Test::Anytime(pair) => {
                agreeing_sequence(pair.anytime_confidence_sequence(interval_alpha)?, rejected)
            }
            Test::Asymptotic { rho2, units } => {
                let sd = h.standard_error();
                let half = half_width_with_mixing(sd * sd, units, interval_alpha, rho2);
                agreeing_sequence(
                    Interval {
                        lower: h.estimate() - half,
                        upper: h.estimate() + half,
                    },
                    rejected,
                )
            }
            Test::FixedHorizon => agreeing_interval(h, z, rejected),
        };
        results.push(MetricResult {
            metric: set.metrics[index].name.clone(),
            arm,
            cuped: set.metrics[index].cuped,
            prob_b_beats_a: m.prob_b_beats_a,
            expected_loss_a: m.expected_loss_a,
            expected_loss_b: m.expected_loss_b,
            variance_ratio: m.variance_ratio,
            test: test.kind(),
            corrected: CorrectedHypothesis {
                hypothesis: m.hypothesis,
                p_value,
                adjusted_p_value,
                rejected,
                interval,
            },
        });
    }
    Ok(Some(MetricsEvaluation {
        correction: set.correction,
        alpha: set.alpha,
        interval_alpha,
        rejections,
        results,
        pending,
    }))
}

/// The test of one member.
#[derive(Clone, Copy)]
enum Test<'a> {
    FixedHorizon,
    Asymptotic { rho2: f64, units: f64 },
    Anytime(&'a CupedPair),
}

impl Test<'_> {
    fn p_value(&self, h: &Hypothesis) -> Result<f64> {
        match *self {
            Test::FixedHorizon => Ok(h.p_value()),
            Test::Asymptotic { rho2, units } => {
                let sd = h.standard_error();
                Ok(asymptotic_p_value(h.estimate(), sd * sd, units, rho2))
            }
            Test::Anytime(pair) => pair.anytime_p_value(),
        }
    }

    fn kind(&self) -> MemberTest {
        match self {
            Test::FixedHorizon => MemberTest::FixedHorizon,
            Test::Asymptotic { .. } => MemberTest::Asymptotic,
            Test::Anytime(_) => MemberTest::AnytimeValid,
        }
    }
}

/// A sequence made to exclude zero exactly when `rejected`. The sequence at
/// the family's level excludes zero exactly when the p-value is below that level, which is
/// what the correction decides; this only settles roundings at the boundary.
fn agreeing_sequence(cs: Interval, rejected: bool) -> Interval {
    match (rejected, cs.contains(0.0)) {
        (true, true) if cs.upper + cs.lower >= 0.0 => Interval {
            lower: f64::MIN_POSITIVE,
            upper: cs.upper.max(f64::MIN_POSITIVE),
        },
        (true, true) => Interval {
            lower: cs.lower.min(-f64::MIN_POSITIVE),
            upper: -f64::MIN_POSITIVE,
        },
        (false, false) => Interval {
            lower: cs.lower.min(0.0),
            upper: cs.upper.max(0.0),
        },
        _ => cs,
    }
}
