//! Exact Bayesian A/B testing.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bandit;
mod beta;
mod continuous;
mod decision;
mod error;
mod experiment;
mod guardrail;
mod multi;
mod quadrature;
mod simulate;
mod special;
mod traffic;
mod two_arm;

pub use bandit::{ThompsonBandit, ThompsonBanditBuilder};
pub use beta::{Beta, Counts, Interval};
pub use continuous::{MeanComparison, MeanStats, compare_means};
pub use decision::{
    ContinueReason, Decision, DecisionRule, DecisionRuleBuilder, Evaluation, InconclusiveReason,
    RollbackReason, StoppingMode, confidence_sequence,
};
pub use error::{Error, Result};
pub use experiment::{
    ArmState, Experiment, ExperimentEvaluation, ExperimentState, ExperimentStore, Guardrails,
    InMemoryExperimentStore, Outcome,
};
pub use guardrail::{
    ERROR_GUARDRAIL_MIN_REQUESTS, ErrorRateGuardrail, ErrorRateLimit, GuardrailKind,
    GuardrailVerdict, LATENCY_MAX_MICROS, LatencyGuardrail, LatencyLimit, LatencySketch,
    QuantileInterval,
};
pub use multi::{ARMS_MAX, DRAWS_MAX, MultiArmSummary, best_arm, best_arm_monte_carlo};
pub use simulate::{AaConfig, AaModeReport, EXPERIMENTS_MAX, LOOKS_MAX, simulate_aa};
pub use traffic::{
    BASIS_POINTS, SPLIT_ARMS_MAX, SRM_ALERT_P_VALUE, SrmCheck, TrafficSplit, srm_check,
};
pub use two_arm::{
    CompareConfig, Lift, Method, TwoArmSummary, compare, expected_losses, lift_interval,
    prob_b_beats_a, prob_lift_exceeds,
};
