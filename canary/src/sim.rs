//! A rollout simulator: many rollouts against synthetic traffic, to measure how often a
//! policy rolls back a canary identical to stable (false rollbacks) and how often it catches a
//! real regression.

use std::time::Duration;

use metered_clock::Timestamp;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Binomial, Distribution, Normal, Poisson};

use crate::command::Actor;
use crate::error::{CanaryError, Result};
use crate::health::{ArmObservation, HealthPolicy, Observations};
use crate::mann_whitney::MetricSamples;
use crate::phase::PhaseKind;
use crate::plan::Plan;
use crate::rollout::Rollout;

/// Most rollouts one simulation runs.
pub const SIM_ROLLOUTS_MAX: u32 = 1_000_000;

/// Most latency samples one arm's window holds in a simulation (older ones are dropped).
pub const SIM_SAMPLES_WINDOW_MAX: usize = 10_000;

/// A latency metric for the simulated judge: every interval each arm adds
/// `samples_per_interval` values (as a metrics backend's `query_range` gives one point per
/// pod and step), drawn from a normal distribution; the rollout's policy judges them with
/// its [`MannWhitneyJudge`](crate::MannWhitneyJudge) as the metric `latency`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimLatency {
    /// Values per arm and interval (1..=1,000).
    pub samples_per_interval: u32,
    /// The baseline's median (and mean).
    pub median: f64,
    /// The baseline's standard deviation (> 0).
    pub sd: f64,
    /// The canary's median over the baseline's (1: the same).
    pub canary_median_factor: f64,
    /// The canary's variance over the baseline's (1: the same; 2: twice the variance).
    pub canary_variance_factor: f64,
}

impl SimLatency {
    /// Canary and baseline alike: 10 values per interval, median 100, standard deviation 10.
    #[must_use]
    pub fn aa() -> Self {
        SimLatency {
            samples_per_interval: 10,
            median: 100.0,
            sd: 10.0,
            canary_median_factor: 1.0,
            canary_variance_factor: 1.0,
        }
    }
}

/// The traffic a simulation generates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimConfig {
    /// Rollouts to simulate.
    pub rollouts: u32,
    /// Mean requests per minute over both arms; each interval draws a Poisson count around a
    /// daily cycle of ±30 % (every rollout starts at a random time of day).
    pub requests_per_minute: f64,
    /// The stable version's true error rate.
    pub baseline_error_rate: f64,
    /// The canary's true error rate (equal to the baseline's for an A/A simulation).
    pub canary_error_rate: f64,
    /// Longest simulated time per rollout; rollouts still running then count as unfinished.
    pub horizon: Duration,
    /// Seed of the random generator (same seed, same report).
    pub seed: u64,
    /// A latency metric for the policy's judge (`None`: counts only).
    pub latency: Option<SimLatency>,
}

impl SimConfig {
    /// A/A traffic: `rollouts` rollouts of a canary identical to stable at 1 % errors and
    /// 2,000 requests a minute, a one-day horizon.
    #[must_use]
    pub fn aa(rollouts: u32, seed: u64) -> Self {
        SimConfig {
            rollouts,
            requests_per_minute: 2_000.0,
            baseline_error_rate: 0.01,
            canary_error_rate: 0.01,
            horizon: Duration::from_secs(24 * 3600),
            seed,
            latency: None,
        }
    }

    /// Adds a latency metric for the policy's judge.
    #[must_use]
    pub fn with_latency(mut self, latency: SimLatency) -> Self {
        self.latency = Some(latency);
        self
    }
}

/// What happened to the simulated rollouts.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[must_use]
pub struct SimReport {
    /// Rollouts simulated.
    pub rollouts: u32,
    /// Rollouts that reached promotion.
    pub promoted: u32,
    /// Rollouts rolled back.
    pub rolled_back: u32,
    /// Of the rollbacks, those a failed health check caused (the rest: a pause or the
    /// metric-source limit running out).
    pub rolled_back_on_failure: u32,
    /// Rollouts still running at the horizon.
    pub unfinished: u32,
    /// Rollouts that paused (inconclusive) at least once.
    pub paused: u32,
    /// Health checks run over all rollouts.
    pub checks: u64,
    /// Mean simulated time from start to promotion, in seconds.
    pub mean_seconds_to_promote: f64,
    /// Mean simulated time from start to rollback, in seconds.
    pub mean_seconds_to_rollback: f64,
}

impl SimReport {
    /// Share of rollouts rolled back (the false-rollback rate of an A/A simulation, the
    /// detection rate of a regression).
    #[must_use]
    pub fn rollback_rate(&self) -> f64 {
        if self.rollouts == 0 {
            return 0.0;
        }
        f64::from(self.rolled_back) / f64::from(self.rollouts)
    }
}

/// Runs `config.rollouts` rollouts of `plan` under `policy`. Each interval: a Poisson number
/// of requests, split between the arms binomially at the current weight (what sticky routing
/// of many users gives), errors drawn binomially at each arm's rate; the rollout observes
/// both arms since its step began, as the guide recommends.
///
/// ```
/// use std::time::Duration;
/// use canary::*;
///
/// let plan = Plan::progressive(Duration::from_secs(60), Duration::from_secs(300), 500)?;
/// let policy = HealthPolicy::builder()
///     .check(MetricCheck::error_rate_max(0.05).critical())
///     .check(MetricCheck::error_rate_relative(0.25))
///     .build()?;
/// let report = simulate(&plan, &policy, &SimConfig::aa(20, 7))?;
/// assert_eq!(report.rollouts, 20);
/// assert!(report.rollback_rate() <= 0.1);
/// # Ok::<(), CanaryError>(())
/// ```
///
/// # Errors
/// [`CanaryError::InvalidPolicy`] for more than [`SIM_ROLLOUTS_MAX`] rollouts, error rates
/// outside `[0, 1]`, a traffic rate that is not finite and positive, or a latency metric
/// with no samples, more than 1,000 per interval, or a median, deviation or factor that is
/// not finite and positive.
pub fn simulate(plan: &Plan, policy: &HealthPolicy, config: &SimConfig) -> Result<SimReport> {
    let bad = |field: &'static str, reason: &str| {
        Err(CanaryError::InvalidPolicy {
            field,
            reason: reason.into(),
        })
    };
    if config.rollouts > SIM_ROLLOUTS_MAX {
        return bad("rollouts", "too many rollouts for one simulation");
    }
    for (field, p) in [
        ("baseline_error_rate", config.baseline_error_rate),
        ("canary_error_rate", config.canary_error_rate),
    ] {
        if !(0.0..=1.0).contains(&p) {
            return bad(field, "must be within [0, 1]");
        }
    }
    if !(config.requests_per_minute.is_finite() && config.requests_per_minute > 0.0) {
        return bad("requests_per_minute", "must be finite and positive");
    }
    let latency = match config.latency {
        None => None,
        Some(l) => {
            if !(1..=1_000).contains(&l.samples_per_interval) {
                return bad("latency.samples_per_interval", "must be within 1..=1000");
            }
            let positive = |x: f64| x.is_finite() && x > 0.0;
            if !(positive(l.median)
                && positive(l.sd)
                && positive(l.canary_median_factor)
                && positive(l.canary_variance_factor))
            {
                return bad(
                    "latency",
                    "median, sd and canary factors must be finite and positive",
                );
            }
            let arm = |median: f64, sd: f64| {
                Normal::new(median, sd).map_err(|e| CanaryError::InvalidPolicy {
                    field: "latency",
                    reason: e.to_string(),
                })
            };
            Some((
                arm(l.median, l.sd)?,
                arm(
                    l.median * l.canary_median_factor,
                    l.sd * l.canary_variance_factor.sqrt(),
                )?,
                l.samples_per_interval,
            ))
        }
    };
    let mut rng = StdRng::seed_from_u64(config.seed);
    let plan = std::sync::Arc::new(plan.clone());
    let policy = std::sync::Arc::new(policy.clone());
    let interval = plan.check_interval();
    let per_interval = config.requests_per_minute * interval.as_secs_f64() / 60.0;
    let day = 24.0 * 3600.0;
    let mut report = SimReport {
        rollouts: config.rollouts,
        ..SimReport::default()
    };
    let (mut promote_secs, mut rollback_secs) = (0.0, 0.0);
    for i in 0..config.rollouts {
        let mut rollout = Rollout::with_shared(format!("sim-{i}"), plan.clone(), policy.clone())?;
        let start = Timestamp::from_unix_millis(1_700_000_000_000);
        let phase_of_day = rand::Rng::random::<f64>(&mut rng) * day;
        let _ = rollout.start(start, Actor::System)?;
        let mut now = start;
        let mut window = [0u64; 4];
        let (mut base_samples, mut canary_samples) = (Vec::new(), Vec::new());
        let mut step_started = rollout.step_started_at();
        let mut paused = false;
        let end = start.saturating_add(config.horizon);
        let outcome = loop {
            now = now.saturating_add(interval);
            if now > end {
                break None;
            }
            let t = now.saturating_duration_since(start).as_secs_f64() + phase_of_day;
            let lambda = per_interval * (1.0 + 0.3 * (2.0 * std::f64::consts::PI * t / day).sin());
            let total = draw_poisson(&mut rng, lambda);
            let w = f64::from(rollout.weight_percent()) / 100.0;
            let canary = draw_binomial(&mut rng, total, w);
            let baseline = total - canary;
            window[0] += canary;
            window[1] += draw_binomial(&mut rng, canary, config.canary_error_rate);
            window[2] += baseline;
            window[3] += draw_binomial(&mut rng, baseline, config.baseline_error_rate);
            let mut obs = Observations::new(
                ArmObservation::counts(window[0], window[1]),
                ArmObservation::counts(window[2], window[3]),
            );
            if let Some((base, canary, n)) = &latency {
                draw_samples(&mut rng, base, *n, &mut base_samples);
                draw_samples(&mut rng, canary, *n, &mut canary_samples);
                obs = obs.with_samples(vec![MetricSamples::new(
                    "latency",
                    base_samples.clone(),
                    canary_samples.clone(),
                )]);
            }
            let d = rollout.tick(now, &obs)?;
            if d.report.is_some() {
                report.checks += 1;
            }
            let _ = rollout.take_events();
            if d.phase == PhaseKind::Paused {
                paused = true;
            }
            if rollout.step_started_at() != step_started {
                step_started = rollout.step_started_at();
                window = [0; 4];
                base_samples.clear();
                canary_samples.clear();
            }
            match d.phase {
                PhaseKind::Promoting | PhaseKind::Succeeded => break Some(true),
                PhaseKind::RollingBack | PhaseKind::RolledBack | PhaseKind::Aborted => {
                    report.rolled_back_on_failure += u32::from(d.report.is_some());
                    break Some(false);
                }
                _ => {}
            }
        };
        let secs = now.saturating_duration_since(start).as_secs_f64();
        report.paused += u32::from(paused);
        match outcome {
            Some(true) => {
                report.promoted += 1;
                promote_secs += secs;
            }
            Some(false) => {
                report.rolled_back += 1;
                rollback_secs += secs;
            }
            None => report.unfinished += 1,
        }
    }
    if report.promoted > 0 {
        report.mean_seconds_to_promote = promote_secs / f64::from(report.promoted);
    }
    if report.rolled_back > 0 {
        report.mean_seconds_to_rollback = rollback_secs / f64::from(report.rolled_back);
    }
    Ok(report)
}

fn draw_samples(rng: &mut StdRng, d: &Normal<f64>, n: u32, window: &mut Vec<f64>) {
    window.extend((0..n).map(|_| d.sample(rng)));
    if window.len() > SIM_SAMPLES_WINDOW_MAX {
        let excess = window.len() - SIM_SAMPLES_WINDOW_MAX;
        window.drain(..excess);
    }
}

fn draw_poisson(rng: &mut StdRng, lambda: f64) -> u64 {
    match Poisson::new(lambda.max(1e-9)) {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(p) => p.sample(rng) as u64,
        Err(_) => 0,
    }
}

fn draw_binomial(rng: &mut StdRng, n: u64, p: f64) -> u64 {
    match Binomial::new(n, p.clamp(0.0, 1.0)) {
        Ok(b) => b.sample(rng),
        Err(_) => 0,
    }
}
