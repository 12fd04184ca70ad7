//! Progressive canary rollouts with statistical health checks, auto-promote and
//! auto-rollback.
//!
//! ```
//! use std::time::Duration;
//! use canary::*;
//! use metered_clock::{Clock, ManualClock, Timestamp};
//!
//! // 5 → 10 → 25 → 50 → 100 %, a check a minute, at least 5 minutes and 1,000 canary
//! // requests per step.
//! let plan = Plan::progressive(Duration::from_secs(60), Duration::from_secs(300), 1_000)?;
//! let policy = HealthPolicy::builder()
//!     .check(MetricCheck::error_rate_max(0.05).critical()) // > 5 % errors: roll back at once
//!     .check(MetricCheck::error_rate_relative(0.25))      // ≤ 25 % worse than stable
//!     .build()?;
//! let mut rollout = Rollout::new("checkout-v7", plan, policy)?;
//! let clock = ManualClock::new(Timestamp::from_unix_millis(1_700_000_000_000));
//! let _ = rollout.start(clock.now(), Actor::operator("ana"))?;
//!
//! // Every minute: observe both arms since the step began, tick, do what the decision says.
//! clock.advance(Duration::from_secs(60));
//! let obs = Observations::new(ArmObservation::counts(1_200, 12), ArmObservation::counts(22_800, 230));
//! let d = rollout.tick(clock.now(), &obs)?;
//! assert_eq!((d.action, d.report.unwrap().verdict), (Action::Hold, Verdict::Healthy));
//! assert_eq!(d.next_check_at, Some(clock.now().saturating_add(Duration::from_secs(60))));
//!
//! // Three times the stable error rate: the relative check fails, and after the failure
//! // limit (3 checks) the canary is rolled back.
//! let bad = Observations::new(ArmObservation::counts(1_200, 40), ArmObservation::counts(22_800, 230));
//! let mut last = Action::Hold;
//! for _ in 0..3 {
//!     clock.advance(Duration::from_secs(60));
//!     last = rollout.tick(clock.now(), &bad)?.action;
//! }
//! assert_eq!(last, Action::RollBack);
//! // Every check and transition is an event for the audit trail; replay rebuilds the state.
//! let events = rollout.take_events();
//! let replayed = Rollout::replay("checkout-v7", rollout.plan().clone(), rollout.policy().clone(), &events)?;
//! assert_eq!(replayed.state(), rollout.state());
//! # Ok::<(), CanaryError>(())
//! ```
//!
//! # Overview
//!
//! * **[`Plan`]**: validated [`Step`]s (weights strictly increasing to 100 %, a minimum time
//!   and sample each, optional approval gates) and the check interval.
//! * **[`Rollout`]**: the state machine `pending → progressing(step) ⇄ paused(reason) →
//!   promoting → succeeded`, or `rolling back → rolled back`, or `aborted`. Sans-IO:
//!   [`Rollout::tick`] takes `now` and [`Observations`] and returns a [`Directive`] (what to
//!   do, and when to tick next); operator commands (`start`, `promote`, `promote_full`,
//!   `skip_step`, `pause`, `resume`, `rollback`, `abort`) refuse illegal transitions with
//!   [`CanaryError::IllegalTransition`].
//! * **[`HealthPolicy`]**: [`MetricCheck`]s on error rate and latency quantiles, absolute or
//!   relative to the stable baseline, judged on the Beta posterior (error rates, via
//!   `bayes-ab`) or an order-statistic interval (latency quantiles): a check fails when a
//!   breach has posterior probability ≥ `fail_confidence` (0.99), passes below `pass_below`
//!   (0.8), and is inconclusive in between. Below the step's minimum sample a check is
//!   *insufficient data*: it holds and never fails. Critical checks roll back at once; others
//!   after `failure_limit` consecutive or `total_failure_limit` total failures; consecutive
//!   successes can complete a step early; inconclusive checks pause, and a pause ends at
//!   `max_pause` with a configured [`LimitAction`]; metric-source errors have their own limit.
//!   Relative limits compare with the running stable version or, with
//!   [`MetricCheck::against`]`(`[`Baseline::Fresh`]`)`, with a freshly started baseline. A
//!   [`MetricCheck::dry_run`] check is judged and recorded in the trail but never acted on.
//! * **Judges beyond the Beta posterior**: an optional Kayenta-style [`MannWhitneyJudge`]
//!   scores raw samples (pass ≥ 95, marginal ≥ 75), with what Kayenta misses: a
//!   Brown-Forsythe spread test ([`brown_forsythe`]; the same median with twice the spread
//!   fails), zero-heavy metrics judged as their share of non-zero values plus the non-zero
//!   values, and too few samples reported as *insufficient data*, never a pass. Dry-run
//!   metrics ([`MetricSamples::dry_run`]) are scored and recorded, never counted.
//! * **Traffic**: [`Router`] routes request keys stickily (raising the weight never moves a
//!   canary user back to stable); every check tests the observed split for a sample-ratio
//!   mismatch ([`srm_p_value`]).
//! * **Trail**: every check and transition is an [`Event`]; [`trail`] turns them into
//!   `audit_chain` entries (written through an `AuditTrail`, read back from an `AuditSink`),
//!   and [`Rollout::replay`] rebuilds the same [`RolloutState`] from them.
//! * **[`RolloutManager`]**: many rollouts by id, with `tick_all`, `auto_promote_canary` and
//!   `auto_rollback_unhealthy_canaries`.
//! * **[`simulate`]**: many rollouts on synthetic traffic (counts, and optionally a latency
//!   metric for the judge, [`SimLatency`]), to measure false rollbacks and detection for a
//!   policy.
//! * **Metrics from a backend** (feature `tokio`): a `MetricsProvider` answers templated
//!   queries (`QueryTemplate`: `{{arm}}` escaped, `{{window}}`) per arm over a window, as
//!   aggregates or samples; `ProviderSource` turns one into the driver's `MetricsSource`.
//!   With feature `prometheus`, `PrometheusProvider` queries Prometheus's HTTP API with
//!   timeouts, retries and a circuit breaker from `resilience`. An empty result, NaN, a
//!   refused query or an HTTP error is a typed error, and no data is never healthy.
//!
//! # What it does not do
//!
//! * It does not move traffic, deploy or scale anything: decisions say what to do; your
//!   mesh, load balancer or flag system does it (with the `tokio` feature, through an
//!   `Actuator`).
//! * Without a provider it does not query metrics: you (or a `MetricsSource`) supply counts
//!   and latency sketches for the window since the step began. Providers give counts and
//!   samples, not latency sketches (Prometheus keeps histograms, not requests): judge
//!   latency from a provider with the `MannWhitneyJudge` on samples.
//! * It speaks plain http only (no TLS client): reach a TLS-only Prometheus through a
//!   sidecar or proxy.
//! * It reads no clock and never sleeps (except the optional driver and provider); time
//!   comes in as `now`.
//!
//! # Crate features
//!
//! * `tokio`: `Driver`, which runs a rollout on its schedule against a `MetricsSource` and
//!   an `Actuator`, writing the trail, with a `RollbackHandle` that rolls back at once
//!   without waiting for the analysis in flight; the `MetricsProvider` trait and
//!   `ProviderSource`; the `RolloutStore` trait (rollouts kept between processes, with
//!   optimistic versions) and `MemoryRolloutStore`.
//! * `conformance` (implies `tokio`): `conformance::check_rollout_store`, the checks every
//!   `RolloutStore` backend runs.
//! * `prometheus` (implies `tokio`): `PrometheusProvider`, over hyper 1 and `resilience`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// The guide (`docs/canary.md`): every example in it is a doc test.
#[cfg(doctest)]
#[doc = include_str!("../../docs/canary.md")]
pub mod guide {}

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "tokio")]
mod driver;
mod error;
mod manager;
mod mann_whitney;
mod plan;
#[cfg(feature = "tokio")]
mod provider;
mod routing;
mod sim;
mod spread;
mod stats;
#[cfg(feature = "tokio")]
mod store;
pub mod trail;

// The rollout's vocabulary: one module per idea, none of them depending on the state machine.
mod command;
mod directive;
mod event;
mod phase;
mod state;

// What uses the vocabulary: health judgement and the state machine.
mod health;
mod rollout;

pub use bayes_ab::{LatencySketch, QuantileInterval};
pub use command::{Actor, COMMAND_TEXT_LEN_MAX, RolloutCommand};
pub use directive::{Action, Directive};
#[cfg(feature = "tokio")]
pub use driver::{Actuator, Driver, MetricsSource, RollbackHandle, source_error};
pub use error::{CanaryError, NoDataReason};
pub use event::Event;
pub use health::{
    ArmObservation, Baseline, CHECK_NAME_LEN_MAX, CHECKS_MAX, CheckVerdict, HealthPolicy,
    HealthPolicyBuilder, HealthReport, Limit, LimitAction, MetricCheck, MetricKind, MetricResult,
    Observations, Verdict, srm_p_value,
};
pub use manager::{BatchReport, Observed, RolloutManager};
pub use mann_whitney::{
    Direction, JUDGE_MIN_SAMPLES_DEFAULT, JudgeReport, MannWhitney, MannWhitneyJudge, MetricClass,
    MetricJudgement, MetricSamples, SAMPLES_MAX, ScoreClass, mann_whitney_u,
};
pub use phase::{PauseReason, Phase, PhaseKind};
pub use plan::{CHECK_INTERVAL_MAX, Plan, STEPS_MAX, Step};
#[cfg(feature = "prometheus")]
pub use provider::prometheus::{
    PROMETHEUS_BODY_MAX_DEFAULT, PrometheusBuilder, PrometheusProvider, RANGE_POINTS_MAX,
};
#[cfg(feature = "tokio")]
pub use provider::template::{LABEL_VALUE_LEN_MAX, QueryTemplate, TEMPLATE_LEN_MAX};
#[cfg(feature = "tokio")]
pub use provider::{
    ArmData, ArmLabels, MetricData, MetricQuery, MetricsProvider, ProviderSource, QueryShape,
    SAMPLE_METRICS_MAX, SampleMetric, Window, finite_values,
};
pub use rollout::{EVENTS_PENDING_MAX, ID_LEN_MAX, Rollout};
pub use routing::{Arm, Router};
pub use sim::{
    SIM_ROLLOUTS_MAX, SIM_SAMPLES_WINDOW_MAX, SimConfig, SimLatency, SimReport, simulate,
};
pub use spread::{ProportionTest, SpreadTest, brown_forsythe};
pub use state::{Counters, RolloutState};
#[cfg(feature = "tokio")]
pub use store::{MemoryRolloutStore, RolloutAdmission, RolloutStore, StoredRollout};
