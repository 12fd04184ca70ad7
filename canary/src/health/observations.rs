//! What the caller observed of the canary and baseline arms for one health check.

use bayes_ab::LatencySketch;

use crate::error::{CanaryError, Result};
use crate::mann_whitney::MetricSamples;

/// What one arm served during the observed window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ArmObservation {
    /// Requests served.
    pub requests: u64,
    /// Requests that failed (at most `requests`).
    pub errors: u64,
    /// Latencies, if latency checks are configured.
    pub latency: Option<LatencySketch>,
}

impl ArmObservation {
    /// Pre-aggregated counts, no latencies.
    #[must_use]
    pub fn counts(requests: u64, errors: u64) -> Self {
        ArmObservation {
            requests,
            errors,
            latency: None,
        }
    }

    /// Adds a latency sketch.
    #[must_use]
    pub fn with_latency(mut self, sketch: LatencySketch) -> Self {
        self.latency = Some(sketch);
        self
    }

    /// Observed error rate (0 without requests).
    #[must_use]
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        #[allow(clippy::cast_precision_loss)]
        let rate = self.errors as f64 / self.requests as f64;
        rate
    }
}

/// What a health check looks at: the canary's and (optionally) the baseline's traffic over
/// the window the caller chose — normally since the current step started
/// ([`Rollout::step_started_at`](crate::Rollout::step_started_at)), so the step's minimum
/// sample is a sample of this step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observations {
    /// The canary arm.
    pub canary: ArmObservation,
    /// The baseline (stable) arm; needed by relative limits and the SRM check.
    pub baseline: Option<ArmObservation>,
    /// A freshly started baseline: the stable version deployed anew beside the canary, as
    /// young and as warm as it; needed by checks [`against`](crate::MetricCheck::against)
    /// [`Baseline::Fresh`](crate::Baseline::Fresh).
    pub fresh_baseline: Option<ArmObservation>,
    /// Raw samples for the Mann-Whitney judge, if one is configured.
    pub samples: Vec<MetricSamples>,
}

impl Observations {
    /// Canary and baseline.
    #[must_use]
    pub fn new(canary: ArmObservation, baseline: ArmObservation) -> Self {
        Observations {
            canary,
            baseline: Some(baseline),
            fresh_baseline: None,
            samples: Vec::new(),
        }
    }

    /// The canary alone (absolute limits only).
    #[must_use]
    pub fn canary_only(canary: ArmObservation) -> Self {
        Observations {
            canary,
            baseline: None,
            fresh_baseline: None,
            samples: Vec::new(),
        }
    }

    /// Adds a freshly started baseline's traffic.
    #[must_use]
    pub fn with_fresh_baseline(mut self, fresh: ArmObservation) -> Self {
        self.fresh_baseline = Some(fresh);
        self
    }

    /// Adds raw samples for the Mann-Whitney judge.
    #[must_use]
    pub fn with_samples(mut self, samples: Vec<MetricSamples>) -> Self {
        self.samples = samples;
        self
    }

    /// Refuses an arm with more errors than requests.
    pub(super) fn validate(&self) -> Result<()> {
        for (arm, o) in [
            ("canary", Some(&self.canary)),
            ("baseline", self.baseline.as_ref()),
            ("fresh baseline", self.fresh_baseline.as_ref()),
        ] {
            if let Some(o) = o
                && o.errors > o.requests
            {
                return Err(CanaryError::InvalidObservation {
                    reason: format!("{arm}: {} errors exceed {} requests", o.errors, o.requests),
                });
            }
        }
        Ok(())
    }
}
