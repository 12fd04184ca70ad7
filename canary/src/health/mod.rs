//! Health judgement: what the canary's metrics say about it, with confidence on the
//! posterior so one blip does not flap.
//!
//! * [`check`]: one metric check and its limit.
//! * [`policy`]: the policy (checks, confidences, limits) and its builder.
//! * [`observations`]: what the caller observed of each arm.
//! * [`judging`]: the judgement of observations against the policy.
//! * [`report`]: verdicts and the report of one health check.

mod check;
mod judging;
mod observations;
mod policy;
mod report;

pub use check::{Baseline, CHECK_NAME_LEN_MAX, Limit, MetricCheck, MetricKind};
pub use judging::srm_p_value;
pub use observations::{ArmObservation, Observations};
pub use policy::{CHECKS_MAX, HealthPolicy, HealthPolicyBuilder, LimitAction};
pub use report::{CheckVerdict, HealthReport, MetricResult, Verdict};
