//! Property tests of the two-arm and k-arm figures against their identities and against
//! independent computations (quadrature, Monte Carlo).

use bayes_ab::{Beta, Counts, best_arm, best_arm_monte_carlo, expected_losses, prob_b_beats_a};
use proptest::prelude::*;
use rand::{SeedableRng, rngs::StdRng};

fn arm() -> impl Strategy<Value = (u64, u64)> {
    (1u64..3_000).prop_flat_map(|n| (0..=n, Just(n)))
}

fn posterior((s, n): (u64, u64)) -> Beta {
    Beta::UNIFORM.update(Counts::new(s, n).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn probabilities_of_both_orders_sum_to_one(a in arm(), b in arm()) {
        let (a, b) = (posterior(a), posterior(b));
        let sum = prob_b_beats_a(a, b) + prob_b_beats_a(b, a);
        prop_assert!((sum - 1.0).abs() < 1e-12, "sum {sum}");
    }

    #[test]
    fn mirrored_rates_give_the_complement((s1, n1) in arm(), (s2, n2) in arm()) {
        // P(p_b > p_a) = P(1 − p_a > 1 − p_b): swap successes with failures and the arms.
        let p = prob_b_beats_a(posterior((s1, n1)), posterior((s2, n2)));
        let mirrored = prob_b_beats_a(posterior((n2 - s2, n2)), posterior((n1 - s1, n1)));
        prop_assert!((p - mirrored).abs() < 1e-12, "{p} vs {mirrored}");
    }

    #[test]
    fn one_more_success_for_b_never_lowers_p_b_beats_a(a in arm(), (s, n) in arm()) {
        prop_assume!(s < n);
        let a = posterior(a);
        let before = prob_b_beats_a(a, posterior((s, n)));
        let after = prob_b_beats_a(a, posterior((s + 1, n)));
        prop_assert!(after >= before - 1e-13, "{before} then {after}");
    }

    #[test]
    fn losses_differ_by_the_difference_of_means(a in arm(), b in arm()) {
        let (a, b) = (posterior(a), posterior(b));
        let (la, lb) = expected_losses(a, b);
        prop_assert!(la >= 0.0 && lb >= 0.0);
        prop_assert!(((la - lb) - (b.mean() - a.mean())).abs() < 1e-12);
    }

    #[test]
    fn closed_form_agrees_with_quadrature(a in arm(), b in arm()) {
        let (a, b) = (posterior(a), posterior(b));
        let exact = prob_b_beats_a(a, b);
        let quad = best_arm(&[a, b]).unwrap();
        prop_assert!((quad.prob_best[1] - exact).abs() < 1e-9, "{exact} vs {}", quad.prob_best[1]);
        let (la, lb) = expected_losses(a, b);
        prop_assert!((quad.expected_loss[0] - la).abs() < 1e-9);
        prop_assert!((quad.expected_loss[1] - lb).abs() < 1e-9);
    }

    #[test]
    fn quadrature_with_jeffreys_prior_is_consistent((s1, n1) in arm(), (s2, n2) in arm()) {
        // Half-integer parameters: no closed form, every figure comes from quadrature. With
        // no failures (β = ½) the density is singular at 1: see `singular_densities_at_one`.
        let a = Beta::JEFFREYS.update(Counts::new(s1, n1).unwrap());
        let b = Beta::JEFFREYS.update(Counts::new(s2, n2).unwrap());
        let p = prob_b_beats_a(a, b);
        prop_assert!((p + prob_b_beats_a(b, a) - 1.0).abs() < 1e-9, "{p}");
        let lift = bayes_ab::prob_lift_exceeds(a, b, bayes_ab::Lift::Absolute, 0.0).unwrap();
        prop_assert!((lift - p).abs() < 1e-9, "{lift} vs {p}");
        let (la, lb) = expected_losses(a, b);
        prop_assert!(((la - lb) - (b.mean() - a.mean())).abs() < 1e-9);
    }

    #[test]
    fn quantile_inverts_cdf(alpha in 0.05f64..5e4, beta in 0.05f64..5e4, p in 0.001f64..0.999) {
        let d = Beta::new(alpha, beta).unwrap();
        let x = d.quantile(p).unwrap();
        prop_assert!((d.cdf(x) - p).abs() < 1e-12 * (1.0 + 1.0 / d.pdf(x).max(1e-300)).min(1e3),
            "cdf(quantile({p})) = {}", d.cdf(x));
    }
}

/// With β < 1 the density is singular at 1. The panels there are parametrised by
/// `ln(1 − x)` with `1 − x` exact, and the mass above the last double below 1 (~1e-8 for
/// β = ½) is added analytically, so the figures keep full accuracy.
#[test]
fn singular_densities_at_one() {
    let a = Beta::new(1.5, 0.5).unwrap();
    let b = Beta::new(0.5, 1.5).unwrap();
    // mpmath: 0.094715265430648914225
    let p = 0.094_715_265_430_648_91;
    assert!((prob_b_beats_a(a, b) - p).abs() < 1e-12);
    assert!((prob_b_beats_a(b, a) - (1.0 - p)).abs() < 1e-12);
    let (la, lb) = expected_losses(a, b);
    assert!(((la - lb) - (b.mean() - a.mean())).abs() < 1e-12);
}

#[test]
fn monte_carlo_agrees_with_quadrature_within_its_noise() {
    let arms = [
        posterior((120, 1_000)),
        posterior((131, 1_000)),
        posterior((118, 1_000)),
        posterior((125, 1_000)),
    ];
    let exact = best_arm(&arms).unwrap();
    let mc = best_arm_monte_carlo(&arms, 40_000, &mut StdRng::seed_from_u64(11)).unwrap();
    for (e, m) in exact.prob_best.iter().zip(&mc.prob_best) {
        // 5 standard errors of a proportion from 40,000 draws.
        assert!(
            (e - m).abs() < 5.0 * (e * (1.0 - e) / 40_000.0).sqrt() + 1e-9,
            "{e} vs {m}"
        );
    }
    let total: f64 = exact.prob_best.iter().sum();
    assert!((total - 1.0).abs() < 1e-10, "P(best) sums to {total}");
    // Seeded: the same seed gives the same estimate.
    let again = best_arm_monte_carlo(&arms, 40_000, &mut StdRng::seed_from_u64(11)).unwrap();
    assert_eq!(mc, again);
}
