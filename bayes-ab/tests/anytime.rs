//! The anytime-valid mode: its boundary is where the mixture martingale reaches 1/α (checked
//! against an independent evaluation with `statrs`' log-gamma), and A/A tests looked at after
//! every observation from the first stay below α (a bounded run here; the full 10,000-experiment
//! figures are in `docs/bayes-ab.md`, from `cargo run --release -p bayes-ab --example aa_anytime`).

use bayes_ab::{
    AaConfig, BayesError, BoundedStats, Counts, StoppingMode, anytime_bounded_difference,
    anytime_confidence_sequence, anytime_mean_interval, simulate_aa,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use statrs::function::gamma::ln_gamma;

/// ln M_n(m) for the Beta(½, ½) mixture, computed directly.
fn ln_martingale(s: f64, n: f64, m: f64) -> f64 {
    let f = n - s;
    let ln_beta = |a: f64, b: f64| ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b);
    ln_beta(0.5 + s, 0.5 + f) - std::f64::consts::PI.ln() - s * m.ln() - f * (1.0 - m).ln()
}

#[test]
fn the_boundary_is_where_the_martingale_reaches_one_over_alpha() {
    // (successes, trials, alpha)
    let cases = [
        (0.0, 1, 0.05),
        (1.0, 1, 0.05),
        (3.0, 10, 0.05),
        (100.0, 1_000, 0.05),
        (1.0, 10_000, 0.025),
        (5_000.0, 10_000, 0.01),
        (2_000_000.0, 100_000_000, 0.05),
        (12.5, 40, 0.1), // a bounded metric's scaled sum need not be an integer
    ];
    for (s, n, alpha) in cases {
        let ci = anytime_mean_interval(s, n, alpha).unwrap();
        let nf = n as f64;
        let target = -f64::ln(alpha);
        for end in [ci.lower, ci.upper] {
            if end > 0.0 && end < 1.0 {
                let got = ln_martingale(s, nf, end);
                // The direct evaluation cancels log-gammas of size n ln n.
                let tol = 1e-9 + 1e-15 * nf * nf.ln().max(1.0);
                assert!(
                    (got - target).abs() < tol,
                    "{s}/{n} at {end}: ln M = {got}, want {target}"
                );
            }
        }
        assert!(ci.contains(s / nf), "{s}/{n}: {ci:?} misses the estimate");
        // Just inside is inside, just outside is outside.
        if ci.lower > 1e-9 {
            assert!(ln_martingale(s, nf, ci.lower * (1.0 - 1e-6)) > target);
        }
        if ci.upper < 1.0 - 1e-9 {
            assert!(ln_martingale(s, nf, ci.upper + (1.0 - ci.upper) * 1e-6) > target);
        }
    }
}

#[test]
fn inputs_are_validated() {
    assert!(matches!(
        anytime_mean_interval(3.0, 2, 0.05),
        Err(BayesError::InvalidParameter { .. })
    ));
    assert!(matches!(
        anytime_mean_interval(1.0, 2, 1.0),
        Err(BayesError::InvalidProbability { .. })
    ));
    assert!(StoppingMode::anytime_valid(0.0).is_err());
    assert!(BoundedStats::new(1.0, 1.0).is_err());
    assert!(BoundedStats::new(f64::NEG_INFINITY, 1.0).is_err());
    let mut s = BoundedStats::new(0.0, 10.0).unwrap();
    assert!(s.record(11.0).is_err());
    assert!(s.record(f64::NAN).is_err());
    s.record(5.0).unwrap();
    let other = BoundedStats::new(0.0, 20.0).unwrap();
    assert!(matches!(
        anytime_bounded_difference(&s, &other, 0.05),
        Err(BayesError::Incompatible { .. })
    ));
    assert!(s.merge(other).is_err());
    assert_eq!(s.merge(s).unwrap().count(), 2);
    let empty = anytime_confidence_sequence(Counts::ZERO, Counts::ZERO, 0.05).unwrap();
    assert_eq!((empty.lower, empty.upper), (-1.0, 1.0));
}

#[test]
fn aa_tests_looked_at_after_every_observation_stay_below_alpha() {
    // Bounded: 300 experiments × 1,500 looks per rate. The asymptotic mode is run beside it on
    // the same data; only the anytime-valid mode is promised to hold at every look from n = 1.
    let modes = [
        StoppingMode::anytime_valid(0.05).unwrap(),
        StoppingMode::sequential(0.05, 3_000.0).unwrap(),
    ];
    for (seed, rate) in [(1, 0.001), (2, 0.02), (3, 0.1), (4, 0.5)] {
        let config = AaConfig {
            experiments: 300,
            looks: 1_500,
            trials_per_look: 1,
            rate,
        };
        let report = simulate_aa(&config, &modes, &mut StdRng::seed_from_u64(seed)).unwrap();
        let anytime = report[0].rate_peeking();
        assert!(
            anytime <= 0.05,
            "rate {rate}: anytime-valid false positives {anytime} above alpha"
        );
    }
}
