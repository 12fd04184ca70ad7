//! Health checks beside SRM: the pre-exposure covariate balance check, against statsmodels'
//! `CompareMeans.ztest_ind(usevar="unequal")` on the same data
//! (`python3 scripts/bayes_reference.py balance`).

use bayes_ab::{BayesError, MeanStats, covariate_balance_check};

#[test]
fn covariate_balance_matches_statsmodels() {
    // (count, mean, M2) of each arm; z and the two-sided p-value from statsmodels.
    let a = MeanStats::from_moments(400, 48.94266134768837, 34072.31392249705).unwrap();
    let b = MeanStats::from_moments(500, 50.404652573596834, 65530.991035077306).unwrap();
    let check = covariate_balance_check(a, b).unwrap();
    assert!((check.z - 2.118750122214804).abs() < 1e-9, "{check:?}");
    assert!(
        (check.p_value - 0.03411158999986997).abs() < 1e-9,
        "{check:?}"
    );
    assert!(!check.imbalanced); // p = 0.034 is not below the 0.001 alert level
}

#[test]
fn covariate_balance_alerts_and_validates() {
    let stats = |n: u64, mean: f64, sd: f64| {
        MeanStats::from_moments(n, mean, (n - 1) as f64 * sd * sd).unwrap()
    };
    // (champion, challenger, imbalanced)
    let cases = [
        (stats(10_000, 50.0, 10.0), stats(10_000, 50.0, 10.0), false),
        (stats(10_000, 50.0, 10.0), stats(10_000, 50.3, 10.0), false),
        (stats(10_000, 50.0, 10.0), stats(10_000, 50.6, 10.0), true),
        (stats(10_000, 50.0, 10.0), stats(10_000, 49.4, 10.0), true),
    ];
    for (a, b, want) in cases {
        assert_eq!(
            covariate_balance_check(a, b).unwrap().imbalanced,
            want,
            "{a:?} {b:?}"
        );
    }
    let one = stats(1, 1.0, 0.0);
    assert!(matches!(
        covariate_balance_check(one, stats(10, 1.0, 1.0)),
        Err(BayesError::InsufficientData { .. })
    ));
    let flat = stats(10, 1.0, 0.0);
    assert!(matches!(
        covariate_balance_check(flat, flat),
        Err(BayesError::InsufficientData { .. })
    ));
}
