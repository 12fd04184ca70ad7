//! Every bad input is a typed error, never a panic.

use bayes_ab::{
    BayesError, Beta, CompareConfig, Counts, Lift, MeanStats, ThompsonBandit, best_arm,
    best_arm_monte_carlo, compare_means, lift_interval, prob_lift_exceeds,
};
use rand::{SeedableRng, rngs::StdRng};

#[test]
fn counts_and_priors_are_validated() {
    assert_eq!(
        Counts::new(101, 100),
        Err(BayesError::SuccessesExceedTrials {
            successes: 101,
            trials: 100
        })
    );
    // Zero trials is valid: the posterior is the prior.
    assert_eq!(
        Beta::UNIFORM.update(Counts::new(0, 0).unwrap()),
        Beta::UNIFORM
    );
    for (a, b) in [
        (0.0, 1.0),
        (1.0, -1.0),
        (f64::NAN, 1.0),
        (1.0, f64::INFINITY),
        (-0.5, -0.5),
    ] {
        assert!(
            matches!(
                Beta::new(a, b),
                Err(BayesError::InvalidBetaParameters { .. })
            ),
            "Beta({a}, {b})"
        );
    }
    assert!(serde_json::from_str::<Beta>(r#"{"alpha":-1.0,"beta":1.0}"#).is_err());
    assert!(serde_json::from_str::<Counts>(r#"{"successes":3,"trials":2}"#).is_err());
    assert_eq!(
        Counts::new(u64::MAX, u64::MAX)
            .unwrap()
            .merge(Counts::new(1, 1).unwrap()),
        Err(BayesError::CountOverflow)
    );
}

#[test]
fn probabilities_and_levels_are_validated() {
    let d = Beta::new(2.0, 3.0).unwrap();
    for p in [0.0, 1.0, -0.1, 1.1, f64::NAN] {
        assert!(
            matches!(d.quantile(p), Err(BayesError::InvalidProbability { .. })),
            "{p}"
        );
        assert!(
            matches!(
                d.credible_interval(p),
                Err(BayesError::InvalidProbability { .. })
            ),
            "{p}"
        );
        assert!(
            matches!(
                CompareConfig::new(p, 1e6),
                Err(BayesError::InvalidProbability { .. })
            ),
            "{p}"
        );
        assert!(lift_interval(d, d, Lift::Absolute, p).is_err());
    }
    assert!(matches!(
        CompareConfig::new(0.9, f64::NAN),
        Err(BayesError::InvalidParameter { .. })
    ));
    assert!(matches!(
        CompareConfig::new(0.9, 0.0),
        Err(BayesError::InvalidParameter { .. })
    ));
    assert!(matches!(
        prob_lift_exceeds(d, d, Lift::Relative, -1.0),
        Err(BayesError::InvalidParameter { .. })
    ));
    assert!(matches!(
        prob_lift_exceeds(d, d, Lift::Absolute, f64::NAN),
        Err(BayesError::InvalidParameter { .. })
    ));
    // Out-of-range arguments of the distribution functions are clamped, NaN stays NaN.
    assert_eq!(
        (d.cdf(-1.0), d.cdf(2.0), d.sf(2.0), d.pdf(1.5)),
        (0.0, 1.0, 0.0, 0.0)
    );
    assert!(d.cdf(f64::NAN).is_nan());
}

#[test]
fn arm_counts_and_draws_are_validated() {
    let d = Beta::UNIFORM;
    assert!(matches!(
        best_arm(&[d]),
        Err(BayesError::ArmCount { got: 1, .. })
    ));
    assert!(matches!(
        best_arm(&vec![d; 65]),
        Err(BayesError::ArmCount { got: 65, .. })
    ));
    let mut rng = StdRng::seed_from_u64(1);
    assert!(matches!(
        best_arm_monte_carlo(&[d, d], 0, &mut rng),
        Err(BayesError::InvalidParameter { .. })
    ));
    assert!(ThompsonBandit::builder().draws(0).build().is_err());
    assert!(ThompsonBandit::builder().top_two(1.0).build().is_err());
    assert!(ThompsonBandit::builder().min_share(1.0).build().is_err());
    assert!(
        ThompsonBandit::builder()
            .min_share(f64::NAN)
            .build()
            .is_err()
    );
    let bandit = ThompsonBandit::builder().min_share(0.3).build().unwrap();
    assert!(matches!(
        bandit.allocate(&[d, d, d, d], &mut rng),
        Err(BayesError::InvalidParameter { .. })
    ));
    assert!(matches!(
        bandit.allocate(&[d], &mut rng),
        Err(BayesError::ArmCount { .. })
    ));
}

#[test]
fn continuous_statistics_are_validated() {
    assert!(MeanStats::from_sums(0, 1.0, 1.0).is_err());
    assert!(MeanStats::from_sums(3, f64::NAN, 1.0).is_err());
    assert!(MeanStats::from_sums(3, 1.0, -1.0).is_err());
    assert!(MeanStats::from_sums(2, 10.0, 1.0).is_err()); // Σx² < (Σx)²/n
    let one = MeanStats::from_sums(1, 2.0, 4.0).unwrap();
    let some = MeanStats::from_sums(10, 20.0, 50.0).unwrap();
    assert!(matches!(
        compare_means(one, some, 0.95),
        Err(BayesError::InsufficientData { .. })
    ));
    assert!(matches!(
        MeanStats::default().mean(),
        Err(BayesError::InsufficientData { .. })
    ));
    let flat = MeanStats::from_sums(10, 20.0, 40.0).unwrap();
    assert!(matches!(
        compare_means(flat, flat, 0.95),
        Err(BayesError::InsufficientData { .. })
    ));
    assert!(matches!(
        compare_means(some, some, 1.0),
        Err(BayesError::InvalidProbability { .. })
    ));
}

#[test]
fn continuous_comparison_matches_hand_computation() {
    // A: n = 400, mean 10, sd 4; B: n = 400, mean 10.8, sd 4.
    let stats = |n: u64, mean: f64, sd: f64| {
        let nf = n as f64;
        MeanStats::from_sums(n, nf * mean, (nf - 1.0) * sd * sd + nf * mean * mean).unwrap()
    };
    let c = compare_means(stats(400, 10.0, 4.0), stats(400, 10.8, 4.0), 0.95).unwrap();
    let se = (16.0f64 / 400.0 * 2.0).sqrt(); // 0.2828
    assert!((c.difference - 0.8).abs() < 1e-9);
    assert!((c.difference_interval.lower - (0.8 - 1.959_963_984_540_054 * se)).abs() < 1e-9);
    // Φ(0.8 / 0.28284) = Φ(2.8284) = 0.997661
    assert!(
        (c.prob_b_beats_a - 0.997_661_1).abs() < 1e-6,
        "{}",
        c.prob_b_beats_a
    );
    assert!((c.relative_lift - 0.08).abs() < 1e-12);
    assert!(c.relative_lift_interval.contains(0.08) && c.relative_lift_interval.lower > 0.0);
    assert!((c.expected_loss_a - c.expected_loss_b - 0.8).abs() < 1e-9);
}

#[test]
fn thompson_bandit_is_seeded_and_respects_the_floor() {
    let arms: Vec<Beta> = (0..10)
        .map(|i| Beta::UNIFORM.update(Counts::new(100 + 5 * i, 2_000).unwrap()))
        .collect();
    let bandit = ThompsonBandit::builder()
        .draws(5_000)
        .min_share(0.02)
        .top_two(0.5)
        .build()
        .unwrap();
    let a = bandit
        .allocate(&arms, &mut StdRng::seed_from_u64(9))
        .unwrap();
    let b = bandit
        .allocate(&arms, &mut StdRng::seed_from_u64(9))
        .unwrap();
    assert_eq!(a, b);
    assert!((a.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    assert!(a.iter().all(|&s| s >= 0.02 - 1e-12));
    // The best arm leads; top-two gives the runner-up a large share too.
    let best = a.iter().cloned().fold(0.0, f64::max);
    assert_eq!(a[9], best);
    assert!(a[9] < 0.75 && a[8] > 0.1, "{a:?}");
    // Plain Thompson: the share of each arm estimates P(best).
    let plain = ThompsonBandit::builder().draws(20_000).build().unwrap();
    let shares = plain
        .allocate(&arms, &mut StdRng::seed_from_u64(4))
        .unwrap();
    let exact = best_arm(&arms).unwrap();
    for (s, p) in shares.iter().zip(&exact.prob_best) {
        assert!(
            (s - p).abs() < 5.0 * (p * (1.0 - p) / 20_000.0).sqrt() + 1e-9,
            "{s} vs {p}"
        );
    }
    let one = plain.choose(&arms, &mut StdRng::seed_from_u64(1)).unwrap();
    assert!(one < 10);
}
