//! The rollout plan: traffic steps, their minimum time and sample, approval gates, and the
//! check interval.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{CanaryError, Result};

/// Most steps a plan may have.
pub const STEPS_MAX: usize = 100;

/// Longest check interval accepted (one day).
pub const CHECK_INTERVAL_MAX: Duration = Duration::from_secs(24 * 60 * 60);

/// One traffic step: the canary's share of traffic and what it must show before the rollout
/// moves on.
///
/// ```
/// use std::time::Duration;
/// use canary::Step;
///
/// let step = Step::new(25, Duration::from_secs(300), 1_000).with_approval();
/// assert_eq!(step.weight_percent(), 25);
/// assert!(step.requires_approval());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    weight_percent: u8,
    min_duration: Duration,
    min_sample: u64,
    requires_approval: bool,
}

impl Step {
    /// A step sending `weight_percent` % of traffic to the canary for at least
    /// `min_duration`, judged only once the canary has served `min_sample` requests in the
    /// step. Validated when the [`Plan`] is built.
    #[must_use]
    pub const fn new(weight_percent: u8, min_duration: Duration, min_sample: u64) -> Self {
        Step {
            weight_percent,
            min_duration,
            min_sample,
            requires_approval: false,
        }
    }

    /// Requires a person to approve (with [`Rollout::promote`](crate::Rollout::promote))
    /// before traffic moves to this step.
    #[must_use]
    pub const fn with_approval(mut self) -> Self {
        self.requires_approval = true;
        self
    }

    /// The canary's share of traffic in this step, in percent.
    #[must_use]
    pub const fn weight_percent(&self) -> u8 {
        self.weight_percent
    }

    /// Least time spent in this step before it can complete.
    #[must_use]
    pub const fn min_duration(&self) -> Duration {
        self.min_duration
    }

    /// Least canary requests in this step before a health check can judge it.
    #[must_use]
    pub const fn min_sample(&self) -> u64 {
        self.min_sample
    }

    /// Whether entering this step needs an approval.
    #[must_use]
    pub const fn requires_approval(&self) -> bool {
        self.requires_approval
    }
}

/// A validated rollout plan: strictly increasing weights ending at 100 %, and the interval
/// between health checks.
///
/// The last step (100 %) is the promotion: reaching it puts the rollout in
/// [`Phase::Promoting`](crate::Phase::Promoting), so its minimum time and sample are not used.
///
/// ```
/// use std::time::Duration;
/// use canary::{CanaryError, Plan, Step};
///
/// let plan = Plan::progressive(Duration::from_secs(60), Duration::from_secs(300), 500)?;
/// let weights: Vec<u8> = plan.steps().iter().map(|s| s.weight_percent()).collect();
/// assert_eq!(weights, [5, 10, 25, 50, 100]);
///
/// // Weights must increase strictly and end at 100.
/// let bad = Plan::new(vec![Step::new(10, Duration::ZERO, 0), Step::new(10, Duration::ZERO, 0)],
///                     Duration::from_secs(60));
/// assert!(matches!(bad, Err(CanaryError::InvalidPlan { .. })));
/// # Ok::<(), CanaryError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    steps: Vec<Step>,
    check_interval: Duration,
}

impl Plan {
    /// Validates `steps` and `check_interval`.
    ///
    /// # Errors
    /// [`CanaryError::InvalidPlan`] when there are no steps or more than [`STEPS_MAX`], a
    /// weight is 0 or above 100, weights do not increase strictly, the last weight is not 100,
    /// or the interval is zero or above [`CHECK_INTERVAL_MAX`].
    pub fn new(steps: Vec<Step>, check_interval: Duration) -> Result<Self> {
        let bad = |reason: String| Err(CanaryError::InvalidPlan { reason });
        if steps.is_empty() {
            return bad("a plan needs at least one step".into());
        }
        if steps.len() > STEPS_MAX {
            return bad(format!("{} steps, at most {STEPS_MAX}", steps.len()));
        }
        if check_interval.is_zero() {
            return bad("the check interval must be positive".into());
        }
        if check_interval > CHECK_INTERVAL_MAX {
            return bad(format!(
                "the check interval {check_interval:?} exceeds {CHECK_INTERVAL_MAX:?}"
            ));
        }
        let mut previous = 0u8;
        for (i, step) in steps.iter().enumerate() {
            let w = step.weight_percent;
            if w == 0 || w > 100 {
                return bad(format!("step {i}: weight {w} % is outside 1..=100"));
            }
            if w <= previous {
                return bad(format!(
                    "step {i}: weight {w} % does not exceed the previous step's {previous} %"
                ));
            }
            previous = w;
        }
        if previous != 100 {
            return bad(format!("the last step must send 100 %, not {previous} %"));
        }
        Ok(Plan {
            steps,
            check_interval,
        })
    }

    /// The classic 5 → 10 → 25 → 50 → 100 % plan with the same minimum time and sample on
    /// every step.
    ///
    /// # Errors
    /// [`CanaryError::InvalidPlan`] for a zero or too long interval.
    pub fn progressive(
        check_interval: Duration,
        min_step_duration: Duration,
        min_sample: u64,
    ) -> Result<Self> {
        let steps = [5, 10, 25, 50, 100]
            .into_iter()
            .map(|w| Step::new(w, min_step_duration, min_sample))
            .collect();
        Plan::new(steps, check_interval)
    }

    /// The steps, in order.
    #[must_use]
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Time between health checks.
    #[must_use]
    pub fn check_interval(&self) -> Duration {
        self.check_interval
    }

    /// Index of the last step (the promotion).
    #[must_use]
    pub fn last_index(&self) -> usize {
        self.steps.len() - 1
    }
}
