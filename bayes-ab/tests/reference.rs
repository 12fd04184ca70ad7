//! Reference values computed with mpmath at 40 significant digits (regularized incomplete beta
//! by its hypergeometric series, P(B > A) by Evan Miller's sum in exact arithmetic).

#![allow(clippy::excessive_precision)] // reference values keep the digits they were computed with

use bayes_ab::{Beta, CompareConfig, Counts, Lift, compare, expected_losses, prob_b_beats_a};

const TOL: f64 = 1e-10;

fn posterior(successes: u64, trials: u64) -> Beta {
    Beta::UNIFORM.update(Counts::new(successes, trials).expect("valid counts"))
}

fn close(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got:e}, want {want:e}, error {:e}",
        got - want
    );
}

/// (alpha, beta, x, I_x(alpha, beta), 1 − I_x(alpha, beta))
const CDF: &[(f64, f64, f64, f64, f64)] = &[
    (1e5, 1e5, 0.5, 0.5, 0.5),
    (
        1e5,
        100_010.0,
        0.5,
        0.508_919_672_880_532_150_93,
        0.491_080_327_119_467_849_07,
    ),
    (
        1e5,
        1e5,
        0.499,
        0.185_546_744_557_556_754_65,
        0.814_453_255_442_443_245_35,
    ),
    (
        10_001.0,
        90_001.0,
        0.1,
        0.497_757_246_007_106_958_64,
        0.502_242_753_992_893_041_36,
    ),
    (
        10_001.0,
        90_001.0,
        0.0985,
        0.055_481_370_451_986_250_22,
        0.944_518_629_548_013_749_78,
    ),
    (
        0.5,
        100.5,
        0.001,
        0.345_763_812_898_141_229_61,
        0.654_236_187_101_858_770_39,
    ),
    (
        6.0,
        999_996.0,
        1e-6,
        0.000_594_181_751_919_427_635_83,
        0.999_405_818_248_080_572_36,
    ),
    (
        6.0,
        999_996.0,
        2e-5,
        0.999_928_100_502_896_228_55,
        0.000_071_899_497_103_771_451_975,
    ),
    (
        2.5,
        3.5,
        0.3,
        0.296_752_989_295_666_378_32,
        0.703_247_010_704_333_621_68,
    ),
    (1.0, 1.0, 0.25, 0.25, 0.75),
    (
        0.3,
        0.7,
        0.999,
        0.997_076_958_644_422_440_65,
        0.002_923_041_355_577_559_351_5,
    ),
    (
        50.0,
        52.0,
        0.6,
        0.987_292_239_478_739_623_57,
        0.012_707_760_521_260_376_434,
    ),
    (
        1e6,
        4e6,
        0.2001,
        0.711_977_390_708_253_073_88,
        0.288_022_609_291_746_926_12,
    ),
];

#[test]
fn incomplete_beta_matches_reference() {
    for &(a, b, x, cdf, sf) in CDF {
        let d = Beta::new(a, b).unwrap();
        close(&format!("cdf Beta({a}, {b}) at {x}"), d.cdf(x), cdf, 1e-13);
        close(&format!("sf Beta({a}, {b}) at {x}"), d.sf(x), sf, 1e-13);
        // Relative accuracy of the smaller tail.
        let small = cdf.min(sf);
        let got = if cdf < sf { d.cdf(x) } else { d.sf(x) };
        assert!(
            ((got - small) / small).abs() < 1e-11,
            "relative error of the small tail of Beta({a}, {b}) at {x}: {got:e} vs {small:e}"
        );
    }
}

/// (alpha, beta, p, quantile)
const QUANTILES: &[(f64, f64, f64, f64)] = &[
    (10_001.0, 90_001.0, 0.025, 0.098_156_168_922_860_611_312),
    (50.0, 52.0, 0.025, 0.394_039_960_522_871_62),
    (50.0, 52.0, 0.975, 0.586_716_525_266_454_11),
    (6.0, 999_996.0, 0.025, 2.201_895_132_166_761_5e-6),
    (6.0, 999_996.0, 0.975, 1.166_828_150_696_621_5e-5),
];

#[test]
fn quantiles_match_reference() {
    for &(a, b, p, want) in QUANTILES {
        let got = Beta::new(a, b).unwrap().quantile(p).unwrap();
        close(&format!("quantile {p} of Beta({a}, {b})"), got, want, 1e-14);
        // Relative accuracy too: the skewed case lives near 1e-6.
        assert!(
            ((got - want) / want).abs() < 1e-10,
            "relative error of quantile {p} of Beta({a}, {b}): {got:e} vs {want:e}"
        );
    }
}

#[test]
fn credible_intervals_match_the_reference_values() {
    let ci = Beta::new(50.0, 52.0)
        .unwrap()
        .credible_interval(0.95)
        .unwrap();
    close(
        "Beta(50, 52) lower",
        ci.lower,
        0.394_039_960_522_871_62,
        TOL,
    );
    close(
        "Beta(50, 52) upper",
        ci.upper,
        0.586_716_525_266_454_11,
        TOL,
    );
    let ci = Beta::new(6.0, 999_996.0)
        .unwrap()
        .credible_interval(0.95)
        .unwrap();
    close(
        "Beta(6, 999996) lower",
        ci.lower,
        2.201_895_132_166_761_5e-6,
        TOL,
    );
    close(
        "Beta(6, 999996) upper",
        ci.upper,
        1.166_828_150_696_621_5e-5,
        TOL,
    );
}

/// ((successes A, trials A), (successes B, trials B), P(B > A), loss of A, loss of B);
/// uniform prior. Losses are `None` where the reference run skipped them.
#[allow(clippy::type_complexity)]
const TWO_ARM: &[((u64, u64), (u64, u64), f64, Option<f64>, Option<f64>)] = &[
    (
        (49, 100),
        (51, 100),
        0.610_770_522_687_839_444_48,
        Some(0.038_724_304_339_344_153_233),
        Some(0.019_116_461_202_089_251_273),
    ),
    (
        (10, 100),
        (20, 100),
        0.975_173_033_152_874_612_79,
        Some(0.098_518_574_990_272_264_519),
        Some(0.000_479_359_303_997_754_715_56),
    ),
    (
        (100, 1000),
        (120, 1000),
        0.923_183_438_973_559_753_51,
        Some(0.020_444_693_766_675_805_011),
        Some(0.000_484_613_926_356_443_733_2),
    ),
    (
        (1000, 10_000),
        (1100, 10_000),
        0.989_457_354_431_714_014_64,
        Some(0.010_013_582_843_752_217_353),
        Some(0.000_015_582_443_832_201_356_158),
    ),
    (
        (10_000, 100_000),
        (10_100, 100_000),
        0.771_467_438_213_624_049_71,
        None,
        None,
    ),
    (
        (0, 10),
        (3, 10),
        0.954_887_218_045_112_781_95,
        Some(0.253_105_590_062_111_801_24),
        Some(0.003_105_590_062_111_801_242_2),
    ),
    (
        (5, 5),
        (0, 7),
        0.000_333_000_333_000_333_000_33,
        Some(0.000_022_200_022_200_022_200_022),
        Some(0.746_053_946_053_946_053_95),
    ),
    (
        (2, 1_000_000),
        (9, 1_000_000),
        0.980_713_172_606_646_421_3,
        Some(7.026_108_470_979_690_420_5e-6),
        Some(2.612_247_095_169_047_650_5e-8),
    ),
];

#[test]
fn two_arm_figures_match_reference() {
    let config = CompareConfig::default();
    for &((sa, na), (sb, nb), p, loss_a, loss_b) in TWO_ARM {
        let (a, b) = (posterior(sa, na), posterior(sb, nb));
        let what = format!("{sa}/{na} vs {sb}/{nb}");
        close(&format!("P(B > A) {what}"), prob_b_beats_a(a, b), p, TOL);
        close(
            &format!("P(A > B) {what}"),
            prob_b_beats_a(b, a),
            1.0 - p,
            TOL,
        );
        let s = compare(a, b, &config);
        close(
            &format!("summary P(B > A) {what}"),
            s.prob_b_beats_a,
            p,
            TOL,
        );
        if let (Some(la), Some(lb)) = (loss_a, loss_b) {
            let (ga, gb) = expected_losses(a, b);
            close(&format!("loss A {what}"), ga, la, TOL);
            close(&format!("loss B {what}"), gb, lb, TOL);
            close(
                &format!("summary loss A {what}"),
                s.expected_loss_a,
                la,
                TOL,
            );
            close(
                &format!("summary loss B {what}"),
                s.expected_loss_b,
                lb,
                TOL,
            );
            // The same figures through the other three closed forms: swap the arms, and
            // mirror the rates (p → 1 − p, which swaps α and β and the arms' roles).
            let (swapped_b, swapped_a) = expected_losses(b, a);
            close(&format!("swapped loss A {what}"), swapped_a, la, TOL);
            close(&format!("swapped loss B {what}"), swapped_b, lb, TOL);
            let (ma, mb) = (posterior(nb - sb, nb), posterior(na - sa, na));
            close(
                &format!("mirrored P {what}"),
                prob_b_beats_a(ma, mb),
                p,
                TOL,
            );
            let (mla, mlb) = expected_losses(ma, mb);
            close(&format!("mirrored loss A {what}"), mla, la, TOL);
            close(&format!("mirrored loss B {what}"), mlb, lb, TOL);
            let (sla, slb) = expected_losses(mb, ma);
            close(&format!("mirrored swapped loss A {what}"), slb, la, TOL);
            close(&format!("mirrored swapped loss B {what}"), sla, lb, TOL);
        }
    }
}

#[test]
fn normal_approximation_is_used_only_above_its_threshold() {
    let (a, b) = (posterior(1000, 10_000), posterior(1100, 10_000));
    let exact = compare(a, b, &CompareConfig::default());
    assert_eq!(exact.method, bayes_ab::Method::ClosedForm);
    let approx = compare(a, b, &CompareConfig::new(0.95, 900.0).unwrap());
    assert_eq!(approx.method, bayes_ab::Method::NormalApproximation);
    // Documented accuracy of the approximation at ~1,000 successes: within 1e-3.
    close(
        "normal P(B > A)",
        approx.prob_b_beats_a,
        exact.prob_b_beats_a,
        1e-3,
    );
    close(
        "normal loss B",
        approx.expected_loss_b,
        exact.expected_loss_b,
        1e-5,
    );
}

#[test]
fn lift_is_consistent_with_p_b_beats_a() {
    let (a, b) = (posterior(100, 1000), posterior(120, 1000));
    let p = prob_b_beats_a(a, b);
    for lift in [Lift::Absolute, Lift::Relative] {
        let q = bayes_ab::prob_lift_exceeds(a, b, lift, 0.0).unwrap();
        close(&format!("{lift:?} lift > 0"), q, p, 1e-10);
    }
}

/// Jeffreys' prior gives half-integer parameters: no closed form, so quadrature. mpmath by
/// adaptive quadrature at 30 digits: (A, B, P(B > A), loss of A, loss of B).
#[allow(clippy::type_complexity)]
const JEFFREYS: &[((u64, u64), (u64, u64), f64, f64, f64)] = &[
    (
        (49, 100),
        (51, 100),
        1.0 - 0.388_691_939_907_093_45,
        0.038_973_990_869_545_195,
        0.019_172_010_671_525_393,
    ),
    (
        (0, 50),
        (2, 50),
        1.0 - 0.073_459_474_036_727_202,
        0.040_351_077_801_164_791,
        0.001_135_391_526_654_986_7,
    ),
];

#[test]
fn non_integer_parameters_use_quadrature_and_match_reference() {
    for &((sa, na), (sb, nb), p, la, lb) in JEFFREYS {
        let a = Beta::JEFFREYS.update(Counts::new(sa, na).unwrap());
        let b = Beta::JEFFREYS.update(Counts::new(sb, nb).unwrap());
        let s = compare(a, b, &CompareConfig::default());
        assert_eq!(s.method, bayes_ab::Method::Quadrature);
        close("Jeffreys P(B > A)", s.prob_b_beats_a, p, TOL);
        close("Jeffreys loss A", s.expected_loss_a, la, TOL);
        close("Jeffreys loss B", s.expected_loss_b, lb, TOL);
    }
}

#[test]
fn three_arms_match_the_reference_to_six_decimals() {
    let prior = Beta::JEFFREYS;
    let arms = [
        prior.update(Counts::new(1580, 31_500).unwrap()),
        prior.update(Counts::new(1700, 32_000).unwrap()),
        prior.update(Counts::new(1550, 31_000).unwrap()),
    ];
    let s = bayes_ab::best_arm(&arms).unwrap();
    for (got, want) in s.prob_best.iter().zip([0.041_198, 0.925_434, 0.033_368]) {
        close("P(best)", *got, want, 5e-7);
    }
    assert_eq!(s.leader(), 1);
}

#[test]
fn lift_probabilities_match_reference() {
    let (a, b) = (posterior(100, 1000), posterior(120, 1000));
    let rel = bayes_ab::prob_lift_exceeds(a, b, Lift::Relative, 0.1).unwrap();
    close("P(lift > +10 %)", rel, 0.750_329_524_972_553_63, TOL);
    let abs = bayes_ab::prob_lift_exceeds(a, b, Lift::Absolute, 0.01).unwrap();
    close("P(p_b − p_a > 0.01)", abs, 0.761_667_308_387_160_52, TOL);
    // The interval's ends are the 2.5 % and 97.5 % points of the same distribution.
    let ci = bayes_ab::lift_interval(a, b, Lift::Absolute, 0.95).unwrap();
    close(
        "sf at lower end",
        bayes_ab::prob_lift_exceeds(a, b, Lift::Absolute, ci.lower).unwrap(),
        0.975,
        1e-9,
    );
    close(
        "sf at upper end",
        bayes_ab::prob_lift_exceeds(a, b, Lift::Absolute, ci.upper).unwrap(),
        0.025,
        1e-9,
    );
}
