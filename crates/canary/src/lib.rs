//! Progressive canary rollouts with statistical health checks, auto-promote and
//! auto-rollback.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "tokio")]
mod driver;
mod error;
mod health;
mod manager;
mod mann_whitney;
mod plan;
mod rollout;
mod routing;
mod sim;
mod stats;
pub mod trail;

pub use bayes_ab::{LatencySketch, QuantileInterval};
#[cfg(feature = "tokio")]
pub use driver::{Actuator, Driver, MetricsSource, source_error};
pub use error::{CanaryError, Result};
pub use health::{
    ArmObservation, CHECKS_MAX, CheckVerdict, HealthPolicy, HealthPolicyBuilder, HealthReport,
    Limit, MetricCheck, MetricKind, MetricResult, NAME_LEN_MAX, Observations, Outcome, Verdict,
    srm_p_value,
};
pub use manager::{BatchReport, Observed, RolloutManager};
pub use mann_whitney::{
    Direction, JudgeReport, MannWhitney, MannWhitneyJudge, MetricClass, MetricSamples, SAMPLES_MAX,
    ScoreClass, mann_whitney_u,
};
pub use plan::{CHECK_INTERVAL_MAX, Plan, STEPS_MAX, Step};
pub use rollout::{
    Action, Actor, Command, Counters, Decision, EVENTS_PENDING_MAX, Event, ID_LEN_MAX, PauseReason,
    Phase, PhaseKind, Rollout, RolloutState, TEXT_LEN_MAX,
};
pub use routing::{Arm, Router};
pub use sim::{SIM_ROLLOUTS_MAX, SimConfig, SimReport, simulate};
