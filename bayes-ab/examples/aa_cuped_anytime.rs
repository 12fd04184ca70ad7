//! The anytime-valid CUPED sequence ([`CupedPair`]): A/A false-positive rates with a look after
//! every unit from n = 1 at four conversion rates, and the units needed to detect an effect
//! with a predictive covariate against an uninformative one (and against the conjugate-mixture
//! anytime sequence, which cannot use a covariate).
//!
//! `cargo run --release -p bayes-ab --example aa_cuped_anytime -- [experiments] [units]`
//! (defaults 10,000 A/A experiments of 10,000 units each, half per arm; seed 2026). Prints
//! Markdown tables.

#![allow(clippy::print_stdout)] // an example's output is its report

use bayes_ab::{Counts, CupedPair, PairArm, anytime_confidence_sequence};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ALPHA: f64 = 0.05;

/// One unit: arm, conversion and covariate. The covariate is a prediction `q` of the
/// conversion probability (CUPAC); the unit converts with probability `rate · q / E[q]`
/// (plus `lift` in the challenger) when `informative`, else with `rate`, independent of `q`.
fn unit(rng: &mut StdRng, rate: f64, lift: f64, informative: bool) -> (PairArm, f64, f64) {
    let arm = if rng.random::<bool>() {
        PairArm::Challenger
    } else {
        PairArm::Champion
    };
    // q = u², E[q] = 1/3: the prediction explains Var(q)·9 rate² of Var(y).
    let u: f64 = rng.random();
    let q = u * u;
    let p = if informative {
        (3.0 * rate * q).min(1.0)
    } else {
        rate
    } + if arm == PairArm::Challenger {
        lift
    } else {
        0.0
    };
    let y = f64::from(u8::from(rng.random::<f64>() < p));
    (arm, y, q)
}

/// Units until the sequence first excludes zero (`None`: never within `units`).
fn first_exclusion(
    rng: &mut StdRng,
    rate: f64,
    lift: f64,
    informative: bool,
    units: u32,
) -> Option<u32> {
    let mut pair = CupedPair::conversion(0.5).ok()?;
    for n in 1..=units {
        let (arm, y, x) = unit(rng, rate, lift, informative);
        pair.record(arm, y, x).ok()?;
        let cs = pair.anytime_confidence_sequence(ALPHA).ok()?;
        if !cs.contains(0.0) {
            return Some(n);
        }
    }
    None
}

/// The same for the conjugate-mixture sequence on the conversions alone.
fn first_exclusion_mixture(rng: &mut StdRng, rate: f64, lift: f64, units: u32) -> Option<u32> {
    let (mut a, mut b) = (Counts::default(), Counts::default());
    for n in 1..=units {
        let (arm, y, _) = unit(rng, rate, lift, true);
        match arm {
            PairArm::Champion => a = a.record(y > 0.5).ok()?,
            PairArm::Challenger => b = b.record(y > 0.5).ok()?,
        }
        let cs = anytime_confidence_sequence(a, b, ALPHA).ok()?;
        if !cs.contains(0.0) {
            return Some(n);
        }
    }
    None
}

fn main() {
    let mut args = std::env::args().skip(1);
    let experiments: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let units: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    println!(
        "{experiments} A/A experiments per rate, {units} units each (a fair coin per unit), a look after every unit from n = 1, α = {ALPHA}, seed 2026"
    );
    println!();
    println!("| rate | anytime-valid CUPED, informative covariate | uninformative covariate |");
    println!("|---|---|---|");
    let se = |p: f64| (p * (1.0 - p) / f64::from(experiments)).sqrt();
    for rate in [0.001, 0.02, 0.1, 0.5] {
        let mut rng = StdRng::seed_from_u64(2026);
        let mut rates = [0.0; 2];
        for (informative, out) in [true, false].into_iter().zip(&mut rates) {
            let hits = (0..experiments)
                .filter(|_| first_exclusion(&mut rng, rate, 0.0, informative, units).is_some())
                .count();
            #[allow(clippy::cast_precision_loss)]
            let r = hits as f64 / f64::from(experiments);
            *out = r;
        }
        println!(
            "| {rate} | {:.2} % ± {:.2} | {:.2} % ± {:.2} |",
            100.0 * rates[0],
            100.0 * se(rates[0]),
            100.0 * rates[1],
            100.0 * se(rates[1])
        );
    }
    println!();
    // Time to decision: a base rate of 1/3, +4 points in the challenger; the informative
    // covariate is the champion's conversion probability itself (p = q), so
    // ρ² = Var(q)/Var(y) = (4/45)/(2/9) = 0.4.
    let runs = (experiments / 20).max(50);
    let cap = 200_000;
    println!(
        "Units to the first exclusion of zero, base rate 1/3, +4 points, {runs} experiments each (cap {cap}):"
    );
    println!();
    println!("| sequence | mean units | never within the cap |");
    println!("|---|---|---|");
    let mut rng = StdRng::seed_from_u64(7);
    let mut report = |label: &str, f: &mut dyn FnMut(&mut StdRng) -> Option<u32>| {
        let (mut total, mut missed) = (0u64, 0u32);
        for _ in 0..runs {
            match f(&mut rng) {
                Some(n) => total += u64::from(n),
                None => {
                    total += u64::from(cap);
                    missed += 1;
                }
            }
        }
        println!(
            "| {label} | {:.0} | {missed} |",
            total as f64 / f64::from(runs)
        );
    };
    report("CUPED, informative covariate", &mut |rng| {
        first_exclusion(rng, 1.0 / 3.0, 0.04, true, cap)
    });
    report("CUPED, uninformative covariate", &mut |rng| {
        first_exclusion(rng, 1.0 / 3.0, 0.04, false, cap)
    });
    report("conjugate mixture (no covariate)", &mut |rng| {
        first_exclusion_mixture(rng, 1.0 / 3.0, 0.04, cap)
    });
}
