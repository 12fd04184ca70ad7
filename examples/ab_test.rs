//! A champion/challenger test simulated to a decision, and the A/A false-positive figures.
//!
//! ```text
//! cargo run --release --example ab_test              # one experiment, hour by hour
//! cargo run --release --example ab_test -- --aa      # A/A simulation: 10,000 experiments
//! cargo run --release --example ab_test -- --aa 2000 # … or fewer
//! ```
//!
//! The experiment: the champion converts at 10.0 %, the challenger at 11.0 % but with a
//! slightly higher error rate and latency. Users arrive at 400 an hour, are assigned by the
//! sticky hash split, and the experiment is evaluated every hour with the sequential-safe
//! rule (valid however often we look) plus error-rate and p95-latency guardrails. Time comes
//! from a `ManualClock` that the simulation advances.

// An example is an application: printing its results is its job.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Duration;

use metered_suite::bayes_ab::{
    AaConfig, DecisionRule, ErrorRateGuardrail, Experiment, Guardrails, LatencyGuardrail,
    StoppingMode, TrafficSplit, UnitOutcome, simulate_aa,
};
use metered_suite::clock::{ManualClock, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("--aa") => {
            let experiments = args
                .next()
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(10_000);
            aa(experiments)
        }
        _ => champion_challenger(),
    }
}

fn champion_challenger() -> Result<(), Box<dyn std::error::Error>> {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(
        1_700_000_000_000,
    )));
    let rule = DecisionRule::builder()
        .stopping(StoppingMode::sequential(0.05, 20_000.0)?)
        .min_trials_per_arm(1_000)
        .max_duration(Duration::from_secs(21 * 86_400))
        .build()?;
    let guardrails = Guardrails {
        error_rate: Some(ErrorRateGuardrail::relative(0.5, 0.95)?),
        latency: Some(LatencyGuardrail::relative(0.95, 0.25, 0.95)?),
    };
    let mut experiment = Experiment::create(
        "checkout-button-v2",
        TrafficSplit::new(vec![5_000, 5_000])?,
        rule,
        guardrails,
        clock.clone(),
    )?;
    // (conversion rate, error rate, median latency in ms) of champion and challenger.
    let truth = [(0.100, 0.010, 80.0), (0.110, 0.012, 85.0)];
    let mut rng = StdRng::seed_from_u64(42);
    let mut user = 0u64;
    println!("hour | champion conv | challenger conv | P(B>A) | CS on p_b - p_a | decision");
    for hour in 1..=21 * 24 {
        for _ in 0..400 {
            user += 1;
            let arm = experiment.assign(&format!("user-{user}"));
            let (conversion, error, median_ms) = truth[arm];
            // Log-normal latency around the median.
            let z: f64 = (0..12).map(|_| rng.random::<f64>()).sum::<f64>() - 6.0;
            let latency_ms = median_ms * (0.4 * z).exp();
            experiment.record(
                arm,
                UnitOutcome {
                    converted: rng.random::<f64>() < conversion,
                    error: rng.random::<f64>() < error,
                    latency: Some(Duration::from_secs_f64(latency_ms / 1_000.0)),
                    value: None,
                },
            )?;
        }
        clock.advance(Duration::from_secs(3_600));
        let e = experiment.evaluate()?;
        let arms = experiment.state().arms();
        let s = &e.evaluation.summary;
        if hour % 12 == 0 || e.evaluation.decision.is_final() {
            let cs = e.evaluation.confidence_sequence.unwrap_or(s.interval_b);
            println!(
                "{hour:4} | {:5}/{:6} | {:5}/{:6} | {:.4} | [{:+.4}, {:+.4}] | {:?}",
                arms[0].conversions.successes(),
                arms[0].conversions.trials(),
                arms[1].conversions.successes(),
                arms[1].conversions.trials(),
                s.prob_b_beats_a,
                cs.lower,
                cs.upper,
                e.evaluation.decision,
            );
        }
        if e.evaluation.decision.is_final() {
            println!();
            println!("decided after {hour} hours ({user} users):");
            println!("  decision: {:?}", e.evaluation.decision);
            println!(
                "  champion {:.4} (95% CI {:.4}..{:.4}), challenger {:.4} (95% CI {:.4}..{:.4})",
                s.mean_a,
                s.interval_a.lower,
                s.interval_a.upper,
                s.mean_b,
                s.interval_b.lower,
                s.interval_b.upper
            );
            println!(
                "  P(challenger > champion) = {:.4}; expected loss of keeping the champion {:.5}, of switching {:.5}",
                s.prob_b_beats_a, s.expected_loss_a, s.expected_loss_b
            );
            for g in &e.guardrails {
                println!(
                    "  guardrail {:?}: observed {:.4}, limit {:.4}, breached {}",
                    g.kind, g.observed, g.limit, g.breached
                );
            }
            if let Some(srm) = e.srm {
                println!(
                    "  SRM: chi2 {:.3}, p {:.3}, mismatch {}",
                    srm.chi_square, srm.p_value, srm.mismatch
                );
            }
            return Ok(());
        }
    }
    println!("no decision within the simulation");
    Ok(())
}

fn aa(experiments: u32) -> Result<(), Box<dyn std::error::Error>> {
    let config = AaConfig {
        experiments,
        looks: 20,
        trials_per_look: 500,
        rate: 0.1,
    };
    let modes = [
        (
            "naive: P > 95% either way",
            StoppingMode::bayesian(0.95, f64::INFINITY)?,
        ),
        (
            "naive: P > 99% either way",
            StoppingMode::bayesian(0.99, f64::INFINITY)?,
        ),
        (
            "Bayesian: P > 95% and loss < 0.001",
            StoppingMode::bayesian(0.95, 0.001)?,
        ),
        (
            "Bayesian: P > 95% and loss < 0.0002",
            StoppingMode::bayesian(0.95, 0.0002)?,
        ),
        (
            "sequential: alpha 0.05, tuned at 10k",
            StoppingMode::sequential(0.05, 10_000.0)?,
        ),
        (
            "sequential: alpha 0.05, tuned at 2k",
            StoppingMode::sequential(0.05, 2_000.0)?,
        ),
    ];
    let report = simulate_aa(
        &config,
        &modes.iter().map(|(_, m)| *m).collect::<Vec<_>>(),
        &mut StdRng::seed_from_u64(2024),
    )?;
    println!(
        "A/A: {} experiments, both arms at {:.0}%, {} looks of {} users per arm (n = {} per arm at the end)",
        config.experiments,
        config.rate * 100.0,
        config.looks,
        config.trials_per_look,
        u64::from(config.looks) * config.trials_per_look
    );
    println!("mode | false positives, peeking at every look | false positives, final look only");
    for ((label, _), r) in modes.iter().zip(&report) {
        let se = |p: f64| (p * (1.0 - p) / f64::from(r.experiments)).sqrt();
        println!(
            "{label} | {:.2}% ± {:.2} | {:.2}% ± {:.2}",
            100.0 * r.rate_peeking(),
            100.0 * se(r.rate_peeking()),
            100.0 * r.rate_final_look(),
            100.0 * se(r.rate_final_look()),
        );
    }
    Ok(())
}
