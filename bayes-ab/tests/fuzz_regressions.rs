//! Inputs on which the `bayes` fuzz target once found a probability above one (quadrature
//! sums that rounded past 1). Each is checked with the exact posteriors the fuzzer built:
//! every probability in `[0, 1]`, complementary probabilities summing to one, and expected
//! losses and intervals finite and non-negative.

use bayes_ab::{Beta, CompareConfig, best_arm, compare, expected_losses, prob_b_beats_a};
use proptest::prelude::*;

fn beta(alpha: f64, beta: f64) -> Beta {
    Beta::new(alpha, beta).unwrap()
}

fn in_unit(p: f64) -> bool {
    (0.0..=1.0).contains(&p)
}

/// Every two-arm figure for `a` vs `b` (and `b` vs `a`) is in range.
fn check_pair(a: Beta, b: Beta) {
    for (x, y) in [(a, b), (b, a)] {
        let p = prob_b_beats_a(x, y);
        let q = prob_b_beats_a(y, x);
        assert!(in_unit(p) && in_unit(q), "P(B > A) = {p}, P(A > B) = {q}");
        assert!((p + q - 1.0).abs() < 1e-12, "{p} + {q} != 1");
        let (la, lb) = expected_losses(x, y);
        assert!(
            la.is_finite() && lb.is_finite() && la >= 0.0 && lb >= 0.0,
            "{la}, {lb}"
        );
        // E[p_b − p_a] = loss_a − loss_b.
        assert!(
            (la - lb - (y.mean() - x.mean())).abs() < 1e-12,
            "{la}, {lb}"
        );
        let s = compare(x, y, &CompareConfig::default());
        assert!(in_unit(s.prob_b_beats_a), "{s:?}");
        assert_eq!(s.prob_b_beats_a, p);
        for i in [s.interval_a, s.interval_b] {
            assert!(i.lower.is_finite() && i.upper.is_finite(), "{s:?}");
            assert!(
                0.0 <= i.lower && i.lower <= i.upper && i.upper <= 1.0,
                "{s:?}"
            );
        }
        let best = best_arm(&[x, y]).unwrap();
        assert!(best.prob_best.iter().all(|&p| in_unit(p)), "{best:?}");
        let sum: f64 = best.prob_best.iter().sum();
        assert!((sum - 1.0).abs() < 1e-12, "{best:?}");
        assert!(
            best.expected_loss
                .iter()
                .all(|&l| l.is_finite() && l >= 0.0),
            "{best:?}"
        );
    }
}

/// `fuzz/regressions/bayes/prob-b-beats-a-above-one`: P(B > A) was 1.0000000000000069.
#[test]
fn prob_b_beats_a_stays_at_most_one_far_apart() {
    let (a, b) = (beta(261.015625, 65028.015625), beta(389.015625, 6.953125));
    assert_eq!(prob_b_beats_a(a, b), 1.0);
    assert!(prob_b_beats_a(b, a) < 1e-300);
    check_pair(a, b);
}

/// `fuzz/regressions/bayes/prob-b-beats-a-above-one-2`: P(B > A) was 1.000000000000002.
#[test]
fn prob_b_beats_a_stays_at_most_one_moderate_posteriors() {
    let (a, b) = (beta(263.453125, 630.453125), beta(261.015625, 4.015625));
    let p = prob_b_beats_a(a, b);
    assert!(in_unit(p) && p > 1.0 - 1e-12, "{p}");
    check_pair(a, b);
}

/// `fuzz/regressions/bayes/best-arm-probability-above-one`: `prob_best` was
/// `[1.0000000000000058, 0.0]`.
#[test]
fn best_arm_probabilities_stay_at_most_one() {
    let arms = [beta(264.90625, 4.015625), beta(511.0, 65028.015625)];
    let best = best_arm(&arms).unwrap();
    assert_eq!(best.prob_best[0], 1.0, "{best:?}");
    assert!(best.prob_best[1] < 1e-300, "{best:?}");
    assert_eq!(best.leader(), 0);
    check_pair(arms[0], arms[1]);
    // The same arms among three, in every position.
    let third = beta(300.5, 200.5);
    for arms in [
        [arms[0], arms[1], third],
        [third, arms[0], arms[1]],
        [arms[1], third, arms[0]],
    ] {
        let best = best_arm(&arms).unwrap();
        assert!(best.prob_best.iter().all(|&p| in_unit(p)), "{best:?}");
        let sum: f64 = best.prob_best.iter().sum();
        assert!((sum - 1.0).abs() < 1e-12, "{best:?}");
    }
}

/// A Beta posterior with parameters on the fuzzer's grid (multiples of 1/64, mostly not
/// integers, so the quadrature path is taken), spread over five orders of magnitude.
fn grid_posterior() -> impl Strategy<Value = Beta> {
    (1u32..4_500_000, 1u32..4_500_000)
        .prop_map(|(a, b)| beta(f64::from(a) / 64.0, f64::from(b) / 64.0))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn quadrature_probabilities_are_in_unit_interval_and_sum_to_one(
        a in grid_posterior(),
        b in grid_posterior(),
        c in grid_posterior(),
    ) {
        let p = prob_b_beats_a(a, b);
        let q = prob_b_beats_a(b, a);
        prop_assert!(in_unit(p) && in_unit(q), "{p}, {q}");
        prop_assert!((p + q - 1.0).abs() < 1e-12, "{p} + {q}");
        let best = best_arm(&[a, b, c]).unwrap();
        prop_assert!(best.prob_best.iter().all(|&p| in_unit(p)), "{best:?}");
        let sum: f64 = best.prob_best.iter().sum();
        prop_assert!((sum - 1.0).abs() < 1e-12, "{best:?}");
        prop_assert!(best.expected_loss.iter().all(|&l| l.is_finite() && l >= 0.0));
    }
}
