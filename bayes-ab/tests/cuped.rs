//! CUPED: the adjusted difference is the treatment coefficient of the regression
//! `y ~ 1 + treatment + x` (statsmodels OLS on the same deterministic data,
//! `python3 scripts/bayes_reference.py cuped`), the variance falls by ρ², and A/A error is
//! unchanged.

#![allow(clippy::excessive_precision, clippy::unreadable_literal)] // reference values keep their digits

use bayes_ab::{
    BayesError, CovariateStats, compare_ratios, cuped_compare, cuped_confidence_sequence,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

/// The same float operations as `cuped_data` in the script.
fn data(n: u32, arm: u32) -> CovariateStats {
    let mut s = CovariateStats::default();
    for i in 0..n {
        let x = f64::from((i * 7919 + arm * 31) % 1000) / 10.0;
        let noise = f64::from((i * 104_729 + arm * 17) % 997) / 100.0 - 5.0;
        let y = 2.0 + 0.8 * x + noise + if arm == 1 { 1.3 } else { 0.0 };
        s.record(y, x).unwrap();
    }
    s
}

#[test]
fn adjusted_difference_is_the_regression_coefficient() {
    // (units per arm, treatment coefficient, slope) from statsmodels.
    let reference = [
        (1_000, 1.3005100000001164, 0.7987681342681351),
        (20_000, 1.3000114999997905, 0.8000972014022014),
    ];
    for (n, difference, theta) in reference {
        let c = cuped_compare(data(n, 0), data(n, 1), 0.95).unwrap();
        assert!((c.difference - difference).abs() < 1e-9, "{n}: {c:?}");
        assert!((c.theta - theta).abs() < 1e-9, "{n}: {c:?}");
        assert!(c.difference_interval.contains(1.3));
    }
}

/// Units with covariate x ~ N(0, 1) and metric y = ρ x + √(1 − ρ²) ε + effect.
fn correlated(rng: &mut StdRng, n: u32, rho: f64, effect: f64) -> CovariateStats {
    let mut s = CovariateStats::default();
    for _ in 0..n {
        let x: f64 = StandardNormal.sample(rng);
        let e: f64 = StandardNormal.sample(rng);
        s.record(rho * x + (1.0 - rho * rho).sqrt() * e + effect, x)
            .unwrap();
    }
    s
}

#[test]
fn variance_falls_by_rho_squared() {
    let mut rng = StdRng::seed_from_u64(11);
    for rho in [0.3, 0.6, 0.9] {
        let c = cuped_compare(
            correlated(&mut rng, 20_000, rho, 0.0),
            correlated(&mut rng, 20_000, rho, 0.0),
            0.95,
        )
        .unwrap();
        let want = 1.0 - rho * rho;
        assert!(
            (c.variance_ratio - want).abs() < 0.02,
            "rho {rho}: variance ratio {} vs {want}",
            c.variance_ratio
        );
    }
}

#[test]
fn aa_error_is_unchanged_by_the_adjustment() {
    // 1,000 A/A experiments of 200 units per arm, one look: the 95 % interval excludes zero
    // about 5 % of the time (binomial standard error 0.7 %).
    let mut rng = StdRng::seed_from_u64(12);
    let mut false_positives = 0;
    for _ in 0..1_000 {
        let c = cuped_compare(
            correlated(&mut rng, 200, 0.7, 0.0),
            correlated(&mut rng, 200, 0.7, 0.0),
            0.95,
        )
        .unwrap();
        if !c.difference_interval.contains(0.0) {
            false_positives += 1;
        }
    }
    assert!(
        (25..=75).contains(&false_positives),
        "{false_positives} / 1000"
    );
}

mod ratio_data {
    include!("data/ratio.rs");
}

/// One arm of the ratio reference data: the integer formula of `scripts/ratio_reference.py`.
fn ratio_arm(n: u32, base: f64, offset: f64, k: u32) -> CovariateStats {
    let mut s = CovariateStats::default();
    for i in 0..n {
        let x = f64::from(1 + (7 * i + k) % 5);
        let noise = f64::from((13 * i) % 11) - 5.0;
        s.record((base * x + noise) + offset, x).unwrap();
    }
    s
}

/// Ratio metrics by the delta method against numpy's two-pass covariances (and scipy's Φ):
/// the difference and P(B > A) to 1e-12, the interval ends (difference ± z·sd, lift ± z·sd)
/// to 1e-9 relative of their width.
#[test]
fn ratio_metrics_match_numpy() {
    let z = 1.959_963_984_540_054;
    for &((na, nb, base_a, base_b, offset, ka, kb), (ra, rb, d, sd, lift, lift_sd, p)) in
        ratio_data::RATIOS
    {
        let (a, b) = (
            ratio_arm(na, base_a, offset, ka),
            ratio_arm(nb, base_b, offset, kb),
        );
        let c = compare_ratios(a, b, 0.95).unwrap();
        let case = format!("{na}/{nb} units, bases {base_a}/{base_b}, offset {offset}");
        let scale = ra.abs().max(rb.abs());
        assert!((c.difference - d).abs() <= 1e-12 * scale, "{case}: {c:?}");
        assert!(
            (c.prob_b_beats_a - p).abs() <= 1e-12,
            "{case}: P {}",
            c.prob_b_beats_a
        );
        let half = c.difference_interval.width() / 2.0;
        assert!((half - z * sd).abs() <= 1e-9 * z * sd, "{case}: sd");
        assert!(
            (c.relative_lift - lift).abs() <= 1e-12 * lift.abs().max(1.0),
            "{case}"
        );
        let lift_half = c.relative_lift_interval.width() / 2.0;
        assert!(
            (lift_half - z * lift_sd).abs() <= 1e-9 * z * lift_sd,
            "{case}: lift sd"
        );
    }
}

#[test]
fn ratio_metrics_refuse_what_they_cannot_estimate() {
    let one = ratio_arm(1, 1.0, 0.0, 0);
    let many = ratio_arm(100, 1.0, 0.0, 0);
    assert!(matches!(
        compare_ratios(one, many, 0.95),
        Err(BayesError::InsufficientData { .. })
    ));
    let mut zero = CovariateStats::default();
    zero.record(1.0, 0.0).unwrap();
    zero.record(2.0, 0.0).unwrap();
    assert!(matches!(
        compare_ratios(many, zero, 0.95),
        Err(BayesError::InsufficientData { .. })
    ));
    assert!(matches!(
        compare_ratios(many, many, 1.0),
        Err(BayesError::InvalidProbability { .. })
    ));
}

/// A sequential experiment with CUPED: both arms grow by `step` units per look up to `max`
/// per arm; the look (units per arm) at which the 95 % sequence first excludes zero, if any.
fn first_exclusion(
    rng: &mut StdRng,
    rho: f64,
    effect: f64,
    step: u32,
    max: u32,
    tuning: f64,
) -> Option<u32> {
    let (mut a, mut b) = (CovariateStats::default(), CovariateStats::default());
    let mut n = 0;
    while n < max {
        a = a.merge(correlated(rng, step, rho, 0.0)).unwrap();
        b = b.merge(correlated(rng, step, rho, effect)).unwrap();
        n += step;
        let cs = cuped_confidence_sequence(a, b, 0.05, tuning).unwrap();
        if !cs.contains(0.0) {
            return Some(n);
        }
    }
    None
}

/// A/A experiments looked at every 50 units per arm from the 50th: the asymptotic sequence
/// with CUPED stays at or below α like the unadjusted one (400 experiments; the binomial
/// standard error at 5 % is 1.1 %).
#[test]
fn the_cuped_sequence_holds_alpha_under_peeking() {
    let mut rng = StdRng::seed_from_u64(13);
    let false_positives = (0..400)
        .filter(|_| first_exclusion(&mut rng, 0.8, 0.0, 50, 4_000, 8_000.0).is_some())
        .count();
    assert!(false_positives <= 20 + 13, "{false_positives} / 400");
}

/// Time to decision falls with the covariate's correlation: with ρ = 0.8 the sequence needs
/// about 1 − ρ² = 36 % of the units an uncorrelated covariate needs, measured over 100
/// experiments each (effect 0.1 standard deviations, a look every 10 units per arm), each
/// sequence tuned near the sample it stops at, as `confidence_sequence` recommends
/// (measured: 0.31 to 0.38 over four tunings; with one far-off tuning of 80,000 for both,
/// 0.54 to 0.58).
#[test]
fn cuped_decides_sooner() {
    let mut rng = StdRng::seed_from_u64(14);
    let mut mean_units = |rho: f64, tuning: f64| {
        let total: u32 = (0..100)
            .map(|_| first_exclusion(&mut rng, rho, 0.1, 10, 40_000, tuning).expect("decides"))
            .sum();
        f64::from(total) / 100.0
    };
    let (plain, adjusted) = (mean_units(0.0, 8_000.0), mean_units(0.8, 3_000.0));
    let ratio = adjusted / plain;
    assert!(
        (0.25..0.45).contains(&ratio),
        "units to decision: {adjusted} with rho 0.8, {plain} without ({ratio})"
    );
}

#[test]
fn the_cuped_sequence_is_the_sequential_formula_on_the_adjusted_estimate() {
    let mut rng = StdRng::seed_from_u64(15);
    let (a, b) = (
        correlated(&mut rng, 3_000, 0.6, 0.0),
        correlated(&mut rng, 3_000, 0.6, 0.05),
    );
    let (alpha, tuning) = (0.05_f64, 10_000.0_f64);
    let c = cuped_compare(a, b, 0.95).unwrap();
    let cs = cuped_confidence_sequence(a, b, alpha, tuning).unwrap();
    // Waudby-Smith et al. (2023), eq. for the asymptotic CS, written out independently.
    let n = 6_000.0_f64;
    let l = -2.0 * alpha.ln();
    let rho2 = (l + (l + 1.0).ln()) / tuning;
    let half = (c.standard_error.powi(2) * n * 2.0 * (n * rho2 + 1.0) / (n * n * rho2)
        * ((n * rho2 + 1.0).sqrt() / alpha).ln())
    .sqrt();
    assert!(((cs.lower + cs.upper) / 2.0 - c.difference).abs() < 1e-12);
    assert!((cs.width() / 2.0 - half).abs() < 1e-12 * half);
    assert!(matches!(
        cuped_confidence_sequence(a, b, 0.05, 0.5),
        Err(BayesError::InvalidParameter { .. })
    ));
}
