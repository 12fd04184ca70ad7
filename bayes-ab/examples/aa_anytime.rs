//! A/A false-positive rates with a look after every observation from n = 1: the
//! anytime-valid mode beside the asymptotic sequential mode, at four conversion rates.
//!
//! `cargo run --release -p bayes-ab --example aa_anytime -- [experiments] [observations per arm]
//! [rates]` (defaults 10,000, 10,000 and `0.001,0.02,0.1,0.5`; seed 2024 for every rate, so
//! one rate run alone gives the same row as in the full table). Prints a Markdown table.

#![allow(clippy::print_stdout)] // an example's output is its report

use bayes_ab::{AaConfig, StoppingMode, simulate_aa};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn main() -> Result<(), bayes_ab::BayesError> {
    let mut args = std::env::args().skip(1);
    let experiments: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let looks: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rates: Vec<f64> = args
        .next()
        .map(|a| a.split(',').filter_map(|r| r.parse().ok()).collect())
        .unwrap_or_else(|| vec![0.001, 0.02, 0.1, 0.5]);
    let modes = [
        StoppingMode::anytime_valid(0.05)?,
        StoppingMode::sequential(0.05, 10_000.0)?,
    ];
    println!(
        "{experiments} A/A experiments per rate, a look after every observation per arm, n = 1 to {looks}, α = 0.05, seed 2024"
    );
    println!();
    println!("| rate | anytime-valid | asymptotic (tuned at 10,000), no minimum |");
    println!("|---|---|---|");
    for rate in rates {
        let config = AaConfig {
            experiments,
            looks,
            trials_per_look: 1,
            rate,
        };
        let report = simulate_aa(&config, &modes, &mut StdRng::seed_from_u64(2024))?;
        let se = |p: f64| (p * (1.0 - p) / f64::from(experiments)).sqrt();
        let (a, s) = (report[0].rate_peeking(), report[1].rate_peeking());
        println!(
            "| {rate} | {:.2} % ± {:.2} | {:.2} % ± {:.2} |",
            100.0 * a,
            100.0 * se(a),
            100.0 * s,
            100.0 * se(s)
        );
    }
    Ok(())
}
