//! Continuous-metric statistics: the variance keeps its digits whatever the mean, records and
//! merges agree, and states written in the old `{count, sum, sum_squares}` form still read.

use bayes_ab::MeanStats;

/// Two-pass variance in plain arithmetic on the same values: the independent reference.
fn two_pass(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let m2: f64 = values.iter().map(|x| (x - mean) * (x - mean)).sum();
    (mean, m2 / (n - 1.0))
}

fn recorded(values: &[f64]) -> MeanStats {
    let mut s = MeanStats::default();
    for &x in values {
        s.record(x).expect("finite");
    }
    s
}

/// (values, variance) with large offsets, where `Σx² − n x̄²` cancels.
fn cases() -> Vec<(Vec<f64>, f64)> {
    let shifted = |offset: f64, values: &[f64]| values.iter().map(|v| offset + v).collect();
    vec![
        (shifted(1e8, &[0.0, 1.0, 2.0, 3.0]), 5.0 / 3.0),
        (shifted(1e9, &[0.0, 1.0, 2.0, 3.0]), 5.0 / 3.0),
        (shifted(-1e12, &[0.5, 1.5, 2.5]), 1.0),
        // Quarters are exact in binary, so the two-pass reference is exact too.
        (shifted(1e10, &[0.25, 0.5, 0.75, 1.0, 1.25]), 0.156_25),
        ((0..1000).map(|i| 1e7 + f64::from(i % 7)).collect(), {
            two_pass(&(0..1000).map(|i| f64::from(i % 7)).collect::<Vec<_>>()).1
        }),
    ]
}

#[test]
fn variance_is_stable_at_large_means() {
    for (values, want) in cases() {
        let s = recorded(&values);
        let got = s.variance().unwrap();
        assert!(
            ((got - want) / want).abs() < 1e-9,
            "{} values around {}: variance {got}, want {want}",
            values.len(),
            values[0]
        );
        let (mean, _) = two_pass(&values);
        assert!((s.mean().unwrap() - mean).abs() <= 1e-15 * mean.abs().max(1.0));
    }
}

#[test]
fn merging_partial_streams_equals_recording_one() {
    for (values, want) in cases() {
        for split in [1, values.len() / 3, values.len() - 1] {
            let (left, right) = values.split_at(split);
            let merged = recorded(left).merge(recorded(right)).unwrap();
            let got = merged.variance().unwrap();
            assert!(
                ((got - want) / want).abs() < 1e-9,
                "split {split}: {got} vs {want}"
            );
            assert_eq!(merged.count(), values.len() as u64);
        }
        let empty = MeanStats::default();
        assert_eq!(recorded(&values).merge(empty).unwrap(), recorded(&values));
        assert_eq!(empty.merge(recorded(&values)).unwrap(), recorded(&values));
    }
}

#[test]
fn moments_are_validated_and_old_sums_still_read() {
    assert!(MeanStats::from_moments(0, 1.0, 0.0).is_err());
    assert!(MeanStats::from_moments(3, 1.0, -1.0).is_err());
    assert!(MeanStats::from_moments(3, f64::INFINITY, 1.0).is_err());
    let s = MeanStats::from_moments(4, 2.5, 5.0).unwrap();
    assert_eq!(s.sum_squared_deviations(), 5.0);
    let old: MeanStats =
        serde_json::from_str(r#"{"count":4,"sum":10.0,"sum_squares":30.0}"#).unwrap();
    assert_eq!(old, s);
    let new: MeanStats = serde_json::from_str(r#"{"count":4,"mean":2.5,"m2":5.0}"#).unwrap();
    assert_eq!(new, s);
    assert!(serde_json::from_str::<MeanStats>(r#"{"count":4,"mean":2.5}"#).is_err());
    assert!(serde_json::from_str::<MeanStats>(r#"{"count":4,"mean":2.5,"m2":-1.0}"#).is_err());
}
