//! Many metrics per experiment: declared metrics with their own priors and CUPED, judged
//! challenger by challenger against the champion and corrected as one family (Holm or
//! Benjamini–Hochberg across metrics × arms).

use serde::{Deserialize, Serialize};

use crate::beta::{Beta, Counts};
use crate::cuped::{CovariateStats, EffectPrior, cuped_compare_with_prior, effect_posterior};
use crate::error::{BayesError, Result, check_probability};
use crate::multiple::{CorrectedHypothesis, Correction, Hypothesis, correct};
use crate::special::normal_cdf;
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
pub struct Metric {
    name: String,
    kind: MetricKind,
    rate_prior: Beta,
    effect_prior: Option<EffectPrior>,
    cuped: bool,
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
        })
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
pub struct MetricSet {
    metrics: Vec<Metric>,
    correction: Correction,
    alpha: f64,
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
    /// Adds one value `y` with covariate `x` (0 when the unit has none).
    pub(crate) fn record(&mut self, kind: MetricKind, y: f64, x: f64) -> Result<()> {
        let mut successes = self.successes;
        if kind == MetricKind::Conversion {
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
    /// The family-corrected test: the hypothesis (posterior mean and standard deviation of
    /// the difference), its p-value and adjusted p-value, whether it is rejected, and an
    /// interval that excludes zero exactly when it is.
    pub corrected: CorrectedHypothesis,
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
    /// The per-comparison level of the intervals ([`CorrectedFamily::interval_alpha`]
    /// (crate::CorrectedFamily::interval_alpha)): each interval agrees with its decision.
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
/// `None` when no member has enough data.
pub(crate) fn evaluate_metrics(
    set: &MetricSet,
    arms: &[&[MetricStats]],
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
            match compare_metric(metric, &a, &b) {
                Ok(member) => members.push((index, offset + 1, member)),
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
    let hypotheses: Vec<Hypothesis> = members.iter().map(|(_, _, m)| m.hypothesis).collect();
    let family = correct(&hypotheses, set.alpha, set.correction)?;
    let results = members
        .into_iter()
        .zip(family.hypotheses)
        .map(|((index, arm, m), corrected)| MetricResult {
            metric: set.metrics[index].name.clone(),
            arm,
            cuped: set.metrics[index].cuped,
            prob_b_beats_a: m.prob_b_beats_a,
            expected_loss_a: m.expected_loss_a,
            expected_loss_b: m.expected_loss_b,
            variance_ratio: m.variance_ratio,
            corrected,
        })
        .collect();
    Ok(Some(MetricsEvaluation {
        correction: family.correction,
        alpha: family.alpha,
        interval_alpha: family.interval_alpha,
        rejections: family.rejections,
        results,
        pending,
    }))
}
