//! Fast posterior comparison of two error rates against a relative limit.
//!
//! `bayes_ab::prob_lift_exceeds` integrates to near machine precision (about 100–400 µs). A
//! rollout check needs it in microseconds, so with ten or more errors (and successes) in both
//! arms this module uses an Edgeworth expansion of `ln p_canary − ln p_baseline`, whose first
//! three cumulants are exact (digamma, trigamma, tetragamma): its error against the quadrature
//! stays below `0.025 / m` (m: the smallest posterior parameter) over a grid of 9–2,000 errors,
//! 0–50 % limits and 1–10× arm ratios (see the tests).
//! Within twice that bound of a decision threshold, or with fewer errors, it integrates with
//! a small composite Gauss-Legendre rule (within 1e-4 of `prob_lift_exceeds`, tested), so
//! verdicts are those of the exact computation up to that tolerance.

use bayes_ab::Beta;
use statrs::function::erf::erfc;
use statrs::function::gamma::digamma;

/// Below this many pseudo-counts in either parameter of either posterior, compute exactly.
pub(crate) const APPROX_MIN_PARAM: f64 = 10.0;

/// The Edgeworth error is below `ERROR_SCALE / min_param` (tested on a grid); an approximate
/// probability within twice that of a threshold is recomputed by quadrature.
pub(crate) const ERROR_SCALE: f64 = 0.025;

/// How close to a threshold an approximate probability is recomputed.
pub(crate) fn refine_margin(min_param: f64) -> f64 {
    2.0 * ERROR_SCALE / min_param
}

/// P(p_canary > (1 + r) · p_baseline), exact near the `thresholds`.
pub(crate) fn prob_relative_breach(
    baseline: Beta,
    canary: Beta,
    r: f64,
    thresholds: [f64; 2],
) -> Option<f64> {
    let min_param = baseline
        .alpha()
        .min(baseline.beta())
        .min(canary.alpha())
        .min(canary.beta());
    if min_param >= APPROX_MIN_PARAM {
        let p = edgeworth_relative(baseline, canary, r);
        let margin = refine_margin(min_param);
        if thresholds.iter().all(|t| (p - t).abs() > margin) {
            return Some(p);
        }
    }
    Some(quadrature_relative(baseline, canary, r))
}

/// Ten-point Gauss-Legendre nodes (positive half) and weights on `[-1, 1]`.
const GL_NODES: [(f64, f64); 5] = [
    (0.148_874_338_981_631_2, 0.295_524_224_714_752_9),
    (0.433_395_394_129_247_2, 0.269_266_719_309_996_3),
    (0.679_409_568_299_024_4, 0.219_086_362_515_982),
    (0.865_063_366_688_984_5, 0.149_451_349_150_580_6),
    (0.973_906_528_517_171_7, 0.066_671_344_308_688_1),
];

/// P(p_c > k · p_b) = ∫ f_b(y) · P(p_c > k y) dy by composite Gauss-Legendre, with panel
/// breaks around both posteriors' bulk (mapped to the baseline's axis), so a narrow canary
/// posterior is resolved as well as a narrow baseline. Within 1e-4 of
/// `bayes_ab::prob_lift_exceeds` on the test grid, in about a twentieth of the time.
pub(crate) fn quadrature_relative(baseline: Beta, canary: Beta, r: f64) -> f64 {
    let k = 1.0 + r;
    let (mb, sb) = (baseline.mean(), baseline.std_dev());
    let (mc, sc) = (canary.mean() / k, canary.std_dev() / k);
    let lo = (mb - 12.0 * sb).max(0.0);
    let hi = (mb + 12.0 * sb).min(1.0 / k).min(1.0);
    if hi <= lo {
        // The baseline's bulk lies where k·y ≥ 1: the canary cannot exceed it.
        return 0.0;
    }
    let mut cuts = [0.0; 12];
    let mut n = 0;
    for x in [
        lo,
        hi,
        mb - 4.0 * sb,
        mb - 1.5 * sb,
        mb + 1.5 * sb,
        mb + 4.0 * sb,
        mc - 6.0 * sc,
        mc - 2.0 * sc,
        mc,
        mc + 2.0 * sc,
        mc + 6.0 * sc,
    ] {
        if x >= lo && x <= hi {
            cuts[n] = x;
            n += 1;
        }
    }
    let cuts = &mut cuts[..n];
    cuts.sort_unstable_by(f64::total_cmp);
    let integrand = |y: f64| baseline.pdf(y) * canary.sf(k * y);
    let mut total = 0.0;
    for w in cuts.windows(2) {
        let (a, b) = (w[0], w[1]);
        if b <= a {
            continue;
        }
        let (mid, half) = (0.5 * (a + b), 0.5 * (b - a));
        let mut panel = 0.0;
        for (x, wt) in GL_NODES {
            panel += wt * (integrand(mid - half * x) + integrand(mid + half * x));
        }
        total += panel * half;
    }
    total.clamp(0.0, 1.0)
}

/// Edgeworth approximation of P(ln p_c − ln p_b > ln(1 + r)).
pub(crate) fn edgeworth_relative(baseline: Beta, canary: Beta, r: f64) -> f64 {
    let (ac, bc) = (canary.alpha(), canary.beta());
    let (ab, bb) = (baseline.alpha(), baseline.beta());
    let mean = digamma(ac) - digamma(ac + bc) - digamma(ab) + digamma(ab + bb);
    let var = trigamma(ac) - trigamma(ac + bc) + trigamma(ab) - trigamma(ab + bb);
    let k3 = tetragamma(ac) - tetragamma(ac + bc) - tetragamma(ab) + tetragamma(ab + bb);
    let sd = var.sqrt();
    let z = ((1.0 + r).ln() - mean) / sd;
    let skew = k3 / (sd * sd * sd);
    let pdf = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let sf = 0.5 * erfc(z / std::f64::consts::SQRT_2);
    (sf + pdf * skew / 6.0 * (z * z - 1.0)).clamp(0.0, 1.0)
}

/// ψ₁(x) for x > 0: recurrence up to 6, then the asymptotic series.
pub(crate) fn trigamma(mut x: f64) -> f64 {
    let mut acc = 0.0;
    while x < 6.0 {
        acc += 1.0 / (x * x);
        x += 1.0;
    }
    let i = 1.0 / x;
    let i2 = i * i;
    acc + i + i2 / 2.0 + i * i2 * (1.0 / 6.0 - i2 * (1.0 / 30.0 - i2 * (1.0 / 42.0 - i2 / 30.0)))
}

/// ψ₂(x) for x > 0: recurrence up to 6, then the asymptotic series.
pub(crate) fn tetragamma(mut x: f64) -> f64 {
    let mut acc = 0.0;
    while x < 6.0 {
        acc -= 2.0 / (x * x * x);
        x += 1.0;
    }
    let i = 1.0 / x;
    let i2 = i * i;
    acc - i2 - i2 * i - 0.5 * i2 * i2 + i2 * i2 * i2 / 6.0 - i2 * i2 * i2 * i2 / 6.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use bayes_ab::{Counts, Lift, prob_lift_exceeds};

    #[test]
    fn polygamma_values_match_known_constants() {
        let pi2_6 = std::f64::consts::PI.powi(2) / 6.0;
        assert!((trigamma(1.0) - pi2_6).abs() < 1e-9);
        assert!((trigamma(0.5) - 3.0 * pi2_6).abs() < 1e-9);
        // ψ₂(1) = −2 ζ(3).
        assert!((tetragamma(1.0) + 2.404_113_806_319_188_5).abs() < 1e-8);
    }

    #[test]
    fn edgeworth_tracks_the_exact_quadrature() {
        let mut worst: f64 = 0.0;
        for canary_errors in [9u64, 15, 30, 60, 200, 2_000] {
            for ratio in [0.5, 0.8, 1.0, 1.2, 1.5, 2.0] {
                for arm_ratio in [1u64, 3, 10] {
                    let cn = canary_errors * 100;
                    let bn = cn * arm_ratio;
                    #[allow(
                        clippy::cast_precision_loss,
                        clippy::cast_possible_truncation,
                        clippy::cast_sign_loss
                    )]
                    let be = ((canary_errors * arm_ratio) as f64 / ratio) as u64;
                    let b = Beta::UNIFORM.update(Counts::new(be, bn).unwrap());
                    let c = Beta::UNIFORM.update(Counts::new(canary_errors, cn).unwrap());
                    let m = b.alpha().min(b.beta()).min(c.alpha()).min(c.beta());
                    for r in [0.0, 0.2, 0.5] {
                        let exact = prob_lift_exceeds(b, c, Lift::Relative, r).unwrap();
                        let err = (exact - edgeworth_relative(b, c, r)).abs();
                        assert!(
                            err < ERROR_SCALE / m,
                            "{canary_errors} errors, ratio {ratio}, x{arm_ratio}, r {r}: {err}"
                        );
                        worst = worst.max(err);
                    }
                }
            }
        }
        assert!(worst < 0.005, "worst error {worst}");
    }

    #[test]
    fn quadrature_matches_bayes_ab_including_small_and_lopsided_arms() {
        let mut worst: f64 = 0.0;
        let cases = [
            (0u64, 100u64, 0u64, 100u64),
            (0, 50, 3, 5_000),
            (2, 300, 10, 3_000),
            (5, 500, 50, 5_000),
            (1, 20, 400, 40_000),
            (50, 5_000, 450, 45_000),
            (300, 30_000, 3, 300),
            (40, 1_000, 10, 1_000),
            (200, 20_000, 2_000, 200_000),
        ];
        for (ce, cn, be, bn) in cases {
            let b = Beta::UNIFORM.update(Counts::new(be, bn).unwrap());
            let c = Beta::UNIFORM.update(Counts::new(ce, cn).unwrap());
            for r in [0.0, 0.1, 0.5, 2.0] {
                let exact = prob_lift_exceeds(b, c, Lift::Relative, r).unwrap();
                let got = quadrature_relative(b, c, r);
                assert!(
                    (exact - got).abs() < 1e-4,
                    "{ce}/{cn} vs {be}/{bn}, r = {r}: exact {exact}, got {got}"
                );
                worst = worst.max((exact - got).abs());
            }
        }
        assert!(worst < 1e-4);
    }

    #[test]
    fn near_a_threshold_the_exact_value_is_used() {
        let b = Beta::UNIFORM.update(Counts::new(300, 30_000).unwrap());
        let c = Beta::UNIFORM.update(Counts::new(330, 30_000).unwrap());
        let exact = prob_lift_exceeds(b, c, Lift::Relative, 0.1).unwrap();
        let got = prob_relative_breach(b, c, 0.1, [exact, 0.99]).unwrap();
        assert_eq!(got, quadrature_relative(b, c, 0.1));
        assert!((got - exact).abs() < 1e-4);
        // Far from every threshold the approximation stands (and is close).
        let fast = prob_relative_breach(b, c, 0.1, [0.999, 0.001]).unwrap();
        assert!((fast - exact).abs() < 0.005);
    }
}
