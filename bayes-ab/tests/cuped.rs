//! CUPED: the adjusted difference is the treatment coefficient of the regression
//! `y ~ 1 + treatment + x` (statsmodels OLS on the same deterministic data,
//! `python3 scripts/bayes_reference.py cuped`), the variance falls by ρ², and A/A error is
//! unchanged.

use bayes_ab::{CovariateStats, cuped_compare};
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
