//! Guardrails, the sample-ratio check and sticky assignment, each callable on its own.

use std::time::Duration;

use bayes_ab::{
    BayesError, Counts, ErrorRateGuardrail, GuardrailKind, LatencyGuardrail, LatencySketch,
    TrafficSplit, srm_check,
};

fn counts(s: u64, n: u64) -> Counts {
    Counts::new(s, n).unwrap()
}

#[test]
fn error_rate_guardrail_reports_the_posterior_probability() {
    let g = ErrorRateGuardrail::absolute(0.01, 0.95).unwrap();
    // (errors, requests, breached)
    for (errors, requests, breached) in [
        (30, 1_000, true),
        (5, 1_000, false),
        (12, 1_000, false),
        (0, 0, false),
        (2, 10, false),
        (200, 200, true),
    ] {
        let v = g.check(counts(errors, requests), None).unwrap();
        assert_eq!(v.breached, breached, "{errors}/{requests}: {v:?}");
        assert_eq!(v.kind, GuardrailKind::ErrorRateAbsolute);
        let p = v.probability.unwrap();
        // P(rate > 1 %) from the Beta(1 + errors, 1 + ok) posterior.
        let want = bayes_ab::Beta::UNIFORM
            .update(counts(errors, requests))
            .sf(0.01);
        assert!((p - want).abs() < 1e-15);
        assert_eq!(v.breached, p >= 0.95 && requests >= 100);
    }
    // Below the minimum number of requests the guardrail never fires.
    let v = g.check(counts(0, 0), None).unwrap();
    assert!(!v.breached && v.probability.unwrap() > 0.98);
    let strict = g.with_min_requests(10);
    assert!(strict.check(counts(2, 10), None).unwrap().breached);
}

#[test]
fn relative_error_rate_guardrail_compares_with_the_baseline() {
    let g = ErrorRateGuardrail::relative(0.5, 0.95).unwrap();
    let base = counts(100, 10_000); // 1 %
    assert!(g.check(counts(200, 10_000), Some(base)).unwrap().breached); // 2 % > 1.5 %
    assert!(!g.check(counts(120, 10_000), Some(base)).unwrap().breached);
    assert!(matches!(
        g.check(counts(1, 10), None),
        Err(BayesError::InsufficientData { .. })
    ));
}

#[test]
fn latency_sketch_quantile_interval_covers_the_quantile() {
    let mut s = LatencySketch::new();
    for i in 1..=10_000u64 {
        s.record(Duration::from_micros(i * 10)); // uniform 10 µs .. 100 ms
    }
    let ci = s.quantile_interval(0.95, 0.95).unwrap();
    assert!(ci.lower_bounded && ci.upper_bounded);
    // True p95 is 95 ms; the order-statistic interval at n = 10,000 spans ±~0.43 % in rank.
    assert!(
        ci.lower <= Duration::from_millis(95) && Duration::from_millis(95) <= ci.upper,
        "{ci:?}"
    );
    assert!(ci.upper - ci.lower < Duration::from_millis(2), "{ci:?}");
    // Too few values to bound the p95 from above: reported as the maximum, flagged.
    let mut few = LatencySketch::new();
    for ms in 1..=20 {
        few.record(Duration::from_millis(ms));
    }
    let ci = few.quantile_interval(0.95, 0.95).unwrap();
    assert!(!ci.upper_bounded);
    assert!(matches!(
        LatencySketch::new().quantile(0.95),
        Err(BayesError::InsufficientData { .. })
    ));
    assert!(matches!(
        s.quantile(1.0),
        Err(BayesError::InvalidProbability { .. })
    ));
}

#[test]
fn latency_sketches_merge() {
    let (mut a, mut b, mut all) = (
        LatencySketch::new(),
        LatencySketch::new(),
        LatencySketch::new(),
    );
    for i in 0..1_000u64 {
        let d = Duration::from_micros(500 + i * 7);
        if i % 3 == 0 {
            a.record(d)
        } else {
            b.record(d)
        }
        all.record(d);
    }
    a.merge(&b).unwrap();
    assert_eq!(a, all);
    assert_eq!(a.quantile(0.95).unwrap(), all.quantile(0.95).unwrap());
}

#[test]
fn latency_guardrail_absolute_and_relative() {
    let mut fast = LatencySketch::new();
    let mut slow = LatencySketch::new();
    for i in 0..5_000u64 {
        fast.record(Duration::from_millis(20 + i % 80)); // p95 ≈ 96 ms
        slow.record(Duration::from_millis(40 + i % 160)); // p95 ≈ 192 ms
    }
    let abs = LatencyGuardrail::absolute(0.95, Duration::from_millis(150), 0.95).unwrap();
    assert!(!abs.check(&fast, None).unwrap().breached);
    let v = abs.check(&slow, None).unwrap();
    assert!(
        v.breached && v.kind == GuardrailKind::LatencyAbsolute && (v.limit - 0.15).abs() < 1e-12
    );
    let rel = LatencyGuardrail::relative(0.95, 0.2, 0.95).unwrap();
    assert!(rel.check(&slow, Some(&fast)).unwrap().breached);
    assert!(!rel.check(&fast, Some(&slow)).unwrap().breached);
    assert!(!rel.check(&fast, Some(&fast)).unwrap().breached);
    assert!(matches!(
        rel.check(&fast, None),
        Err(BayesError::InsufficientData { .. })
    ));
}

#[test]
fn guardrail_settings_are_validated() {
    assert!(matches!(
        ErrorRateGuardrail::absolute(0.0, 0.95),
        Err(BayesError::InvalidProbability { .. })
    ));
    assert!(matches!(
        ErrorRateGuardrail::absolute(0.01, 1.0),
        Err(BayesError::InvalidProbability { .. })
    ));
    assert!(matches!(
        ErrorRateGuardrail::relative(-0.1, 0.95),
        Err(BayesError::InvalidParameter { .. })
    ));
    assert!(matches!(
        ErrorRateGuardrail::relative(f64::NAN, 0.95),
        Err(BayesError::InvalidParameter { .. })
    ));
    assert!(matches!(
        LatencyGuardrail::absolute(0.95, Duration::ZERO, 0.95),
        Err(BayesError::InvalidParameter { .. })
    ));
    assert!(matches!(
        LatencyGuardrail::absolute(1.5, Duration::from_millis(1), 0.95),
        Err(BayesError::InvalidProbability { .. })
    ));
    assert!(matches!(
        LatencyGuardrail::relative(0.95, f64::INFINITY, 0.95),
        Err(BayesError::InvalidParameter { .. })
    ));
}

#[test]
fn srm_check_p_values() {
    let split = TrafficSplit::new(vec![5_000, 5_000]).unwrap();
    // 10,500 vs 9,500: χ² = 50, p = erfc(5) ≈ 1.5375e-12.
    let s = srm_check(&[10_500, 9_500], &split).unwrap();
    assert!((s.chi_square - 50.0).abs() < 1e-9);
    assert!(
        (s.p_value / 1.537_459_794_428_034_8e-12 - 1.0).abs() < 1e-6,
        "{}",
        s.p_value
    );
    assert!(s.mismatch);
    // χ² = 1: p = 0.31731050786291410.
    let s = srm_check(&[5_050, 4_950], &split).unwrap();
    assert!((s.p_value - 0.317_310_507_862_914_1).abs() < 1e-12);
    assert!(!s.mismatch);
    // Uneven split, three arms: expected 2,000 / 4,000 / 4,000.
    let split3 = TrafficSplit::new(vec![2_000, 4_000, 4_000]).unwrap();
    let s = srm_check(&[2_000, 4_000, 4_000], &split3).unwrap();
    assert_eq!(
        (s.chi_square, s.degrees_of_freedom, s.mismatch),
        (0.0, 2, false)
    );
    assert!(matches!(
        srm_check(&[1, 2, 3], &split),
        Err(BayesError::ArmCount { .. })
    ));
    assert!(matches!(
        srm_check(&[0, 0], &split),
        Err(BayesError::InsufficientData { .. })
    ));
    let ramp = TrafficSplit::new(vec![10_000, 0]).unwrap();
    assert!(matches!(
        srm_check(&[10, 1], &ramp),
        Err(BayesError::InvalidWeights { .. })
    ));
}

#[test]
fn assignment_is_sticky_salted_and_follows_the_weights() {
    let split = TrafficSplit::new(vec![7_000, 2_000, 1_000]).unwrap();
    let mut counts = [0u64; 3];
    let mut moved = 0;
    for i in 0..30_000 {
        let unit = format!("user-{i}");
        let arm = split.assign("exp-a", &unit);
        assert_eq!(arm, split.assign("exp-a", &unit));
        counts[arm] += 1;
        if split.assign("exp-b", &unit) != arm {
            moved += 1;
        }
    }
    // Within 5 standard errors of 70 / 20 / 10 %.
    for (c, w) in counts.iter().zip([0.7, 0.2, 0.1]) {
        let share = *c as f64 / 30_000.0;
        assert!(
            (share - w).abs() < 5.0 * (w * (1.0 - w) / 30_000.0f64).sqrt(),
            "{counts:?}"
        );
    }
    // Different salts assign independently: P(same arm) = 0.49 + 0.04 + 0.01 = 0.54.
    let moved_share = f64::from(moved) / 30_000.0;
    assert!((moved_share - 0.46).abs() < 0.02, "{moved_share}");
    // The split passes its own SRM check.
    assert!(!srm_check(&counts, &split).unwrap().mismatch);
}

#[test]
fn ramping_up_the_last_arm_only_moves_units_into_it() {
    let before = TrafficSplit::new(vec![9_000, 1_000]).unwrap();
    let after = TrafficSplit::new(vec![8_000, 2_000]).unwrap();
    for i in 0..5_000 {
        let unit = format!("u{i}");
        if before.assign("ramp", &unit) == 1 {
            assert_eq!(after.assign("ramp", &unit), 1);
        }
    }
}

#[test]
fn bad_weights_are_typed_errors() {
    for bad in [
        vec![],
        vec![10_000],
        vec![5_000, 4_999],
        vec![5_000, 5_001],
        vec![u32::MAX, 1],
    ] {
        assert!(
            matches!(
                TrafficSplit::new(bad.clone()),
                Err(BayesError::InvalidWeights { .. })
            ),
            "{bad:?}"
        );
    }
    assert_eq!(
        TrafficSplit::even(3).unwrap().weights(),
        &[3_334, 3_333, 3_333]
    );
    assert!(TrafficSplit::even(1).is_err());
    // Deserialization validates too.
    assert!(serde_json::from_str::<TrafficSplit>("[5000, 4000]").is_err());
    assert!(serde_json::from_str::<TrafficSplit>("[5000, 5000]").is_ok());
}
