//! The judges beside Mann-Whitney: the spread test, zero-heavy and sparse metrics, dry-run
//! checks and metrics, and checks against a freshly started baseline. Data-driven through
//! one `check` helper per kind.

use std::time::Duration;

use canary::*;
use metered_clock::Timestamp;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

const MINUTE: Duration = Duration::from_secs(60);

fn normal(n: usize, median: f64, sd: f64, seed: u64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let d = Normal::new(median, sd).unwrap();
    (0..n).map(|_| d.sample(&mut rng)).collect()
}

/// `n` values of which the first `nonzero` are `value`, the rest 0.
fn sparse(n: usize, nonzero: usize, value: f64) -> Vec<f64> {
    (0..n)
        .map(|i| if i < nonzero { value + i as f64 } else { 0.0 })
        .collect()
}

fn judge() -> MannWhitneyJudge {
    MannWhitneyJudge::new(0.01, 95.0, 75.0).unwrap()
}

/// Judges one metric and checks its class.
fn check(name: &str, baseline: Vec<f64>, canary: Vec<f64>, expect: MetricClass) {
    let report = judge()
        .judge(&[MetricSamples::new(name, baseline, canary)])
        .unwrap();
    assert_eq!(report.metrics[0].class, expect, "{name}: {report:?}");
}

#[test]
fn metrics_are_classified() {
    let base = normal(300, 100.0, 10.0, 1);
    // Same distribution (another draw): a pass.
    check(
        "a/a",
        base.clone(),
        normal(300, 100.0, 10.0, 2),
        MetricClass::Pass,
    );
    // Shifted up: high (Mann-Whitney).
    check(
        "slower",
        base.clone(),
        normal(300, 110.0, 10.0, 3),
        MetricClass::High,
    );
    // The same median, twice the spread: what Mann-Whitney misses (kayenta#780).
    check(
        "wider",
        base.clone(),
        normal(300, 100.0, 20.0, 4),
        MetricClass::Spread,
    );
    // A narrower canary is no regression.
    check(
        "narrower",
        base.clone(),
        normal(300, 100.0, 5.0, 5),
        MetricClass::Pass,
    );
    // Fewer than min_samples (20) in an arm: insufficient data, never a pass.
    check(
        "short",
        base.clone(),
        normal(19, 100.0, 10.0, 6),
        MetricClass::InsufficientData,
    );
    // Zero-heavy (kayenta#426): 2 % non-zero vs 10 % non-zero of the same size: high.
    check(
        "panics",
        sparse(1_000, 20, 5.0),
        sparse(1_000, 100, 5.0),
        MetricClass::High,
    );
    // Zero-heavy and alike: a pass.
    check(
        "panics a/a",
        sparse(1_000, 30, 5.0),
        sparse(1_000, 30, 5.0),
        MetricClass::Pass,
    );
    // Zero-heavy with too few non-zero values in both arms together: insufficient data.
    check(
        "rare",
        sparse(1_000, 5, 5.0),
        sparse(1_000, 6, 5.0),
        MetricClass::InsufficientData,
    );
    // All zeros: nothing to judge.
    check(
        "silent",
        vec![0.0; 500],
        vec![0.0; 500],
        MetricClass::InsufficientData,
    );
    // Zero-heavy, same share of non-zeros, the non-zero values much larger: high.
    let mut big = sparse(1_000, 100, 5.0);
    big.iter_mut()
        .filter(|x| **x != 0.0)
        .for_each(|x| *x *= 10.0);
    check(
        "bigger bursts",
        sparse(1_000, 100, 5.0),
        big,
        MetricClass::High,
    );
}

#[test]
fn the_spread_test_can_be_turned_off_and_is_validated() {
    let base = normal(300, 100.0, 10.0, 1);
    let wide = normal(300, 100.0, 20.0, 4);
    let kayenta = judge().with_spread_alpha(None).unwrap();
    let r = kayenta
        .judge(&[MetricSamples::new("wider", base.clone(), wide.clone())])
        .unwrap();
    assert_eq!(r.metrics[0].class, MetricClass::Pass);
    assert!(r.metrics[0].spread.is_none());
    for bad in [0.0, 1.0, f64::NAN] {
        assert!(matches!(
            judge().with_spread_alpha(Some(bad)),
            Err(CanaryError::InvalidPolicy { .. })
        ));
    }
    assert!(judge().with_data_limits(1, 0.5).is_err());
    assert!(judge().with_data_limits(20, 0.0).is_err());
    assert!(judge().with_data_limits(20, 1.5).is_err());
    // Non-finite samples are refused, not judged.
    assert!(matches!(
        judge().judge(&[MetricSamples::new(
            "inf",
            vec![f64::INFINITY; 30],
            base.clone()
        )]),
        Err(CanaryError::InvalidObservation { .. })
    ));
    assert!(brown_forsythe(&[1.0], &[1.0, 2.0]).is_err());
    // A constant baseline and a varying canary: certainly wider.
    let t = brown_forsythe(&[5.0; 10], &[4.0, 6.0, 4.0, 6.0]).unwrap();
    assert_eq!((t.p_value, t.spread_ratio), (0.0, f64::INFINITY));
}

#[test]
fn an_insufficient_metric_holds_the_rollout_and_a_dry_run_one_never_counts() {
    let policy = HealthPolicy::builder()
        .check(MetricCheck::error_rate_max(0.05))
        .mann_whitney(judge())
        .srm_p_value(None)
        .build()
        .unwrap();
    let step = Step::new(10, MINUTE, 100);
    let verdict = |samples: Vec<MetricSamples>| {
        let obs = Observations::canary_only(ArmObservation::counts(1_000, 1)).with_samples(samples);
        policy.judge(&step, &obs).unwrap()
    };
    let base = normal(300, 100.0, 10.0, 1);
    let same = MetricSamples::new("latency", base.clone(), normal(300, 100.0, 10.0, 2));
    let wide = MetricSamples::new("latency_tail", base.clone(), normal(300, 100.0, 20.0, 4));
    let short = MetricSamples::new("cpu", base[..5].to_vec(), base[..5].to_vec());

    assert_eq!(verdict(vec![same.clone()]).verdict, Verdict::Healthy);
    assert_eq!(
        verdict(vec![same.clone(), wide.clone()]).verdict,
        Verdict::Unhealthy
    );
    let r = verdict(vec![same.clone(), short.clone()]);
    assert_eq!(r.verdict, Verdict::InsufficientData);
    assert_eq!(r.judge.unwrap().class, ScoreClass::InsufficientData);
    // A failure still counts when another metric lacks data.
    assert_eq!(
        verdict(vec![wide.clone(), short.clone()]).verdict,
        Verdict::Unhealthy
    );
    // Dry-run: judged and reported, never counted (neither the failure nor the lack of data).
    let mut crit = wide.clone().dry_run();
    crit.critical = true;
    let r = verdict(vec![same.clone(), crit, short.clone().dry_run()]);
    assert_eq!(r.verdict, Verdict::Healthy);
    let j = r.judge.unwrap();
    assert_eq!((j.score, j.class), (100.0, ScoreClass::Pass));
    assert_eq!(j.metrics[1].class, MetricClass::Spread);
    assert!(j.metrics[1].dry_run);
}

#[test]
fn dry_run_checks_are_reported_and_recorded_but_never_acted_on() {
    let policy = HealthPolicy::builder()
        .check(MetricCheck::error_rate_max(0.05))
        .check(MetricCheck::error_rate_max(0.001).critical().dry_run())
        .srm_p_value(None)
        .build()
        .unwrap();
    let plan = Plan::progressive(MINUTE, MINUTE, 100).unwrap();
    let mut rollout = Rollout::new("dry", plan.clone(), policy.clone()).unwrap();
    let mut now = Timestamp::from_unix_millis(1_700_000_000_000);
    let _ = rollout.start(now, Actor::System).unwrap();
    // 1 % errors: the dry-run 0.1 % limit fails confidently; the rollout moves on anyway.
    now = now.saturating_add(MINUTE);
    let obs = Observations::canary_only(ArmObservation::counts(5_000, 50));
    let d = rollout.tick(now, &obs).unwrap();
    let report = d.report.clone().unwrap();
    assert_eq!(report.verdict, Verdict::Healthy);
    assert_eq!(d.action, Action::SetWeight(10));
    let dry = &report.metrics[1];
    assert!(dry.dry_run && dry.critical);
    assert_eq!(dry.verdict, CheckVerdict::Fail);
    assert!(
        report.reason().contains("dry run failed (not acted on)"),
        "{}",
        report.reason()
    );
    // Recorded in the trail, and read back as dry-run.
    let events = rollout.take_events();
    let checked = events
        .iter()
        .find(|e| matches!(e, Event::Checked { .. }))
        .unwrap();
    let entry = trail::to_audit_entry("dry", checked);
    assert_eq!(entry.metadata["metric.01.dry_run"], "true");
    assert!(!entry.metadata.contains_key("metric.00.dry_run"));
    assert_eq!(&trail::from_audit_entry(&entry, 0).unwrap(), checked);
    let replayed = Rollout::replay("dry", plan, policy, &events).unwrap();
    assert_eq!(replayed.state(), rollout.state());
}

#[test]
fn relative_checks_compare_with_the_stable_or_a_fresh_baseline() {
    let policy = HealthPolicy::builder()
        .check(MetricCheck::error_rate_relative(0.25))
        .check(MetricCheck::error_rate_relative(0.25).against(Baseline::Fresh))
        .srm_p_value(None)
        .build()
        .unwrap();
    let step = Step::new(10, MINUTE, 100);
    let canary = ArmObservation::counts(10_000, 200); // 2 %
    let stable = ArmObservation::counts(90_000, 900); // 1 %: the canary is twice as bad
    let fresh = ArmObservation::counts(10_000, 200); // 2 %: a fresh stable is as bad (warm-up)
    let judged = |obs: Observations| {
        let r = policy.judge(&step, &obs).unwrap();
        (r.metrics[0].verdict, r.metrics[1].verdict, r.verdict)
    };
    use CheckVerdict::{Fail, NoData, Pass};
    // Without a fresh baseline the fresh check has no data: never a pass.
    assert_eq!(
        judged(Observations::new(canary.clone(), stable.clone())),
        (Fail, NoData, Verdict::Unhealthy)
    );
    assert_eq!(
        judged(
            Observations::new(canary.clone(), stable.clone()).with_fresh_baseline(fresh.clone())
        ),
        (Fail, Pass, Verdict::Unhealthy)
    );
    assert_eq!(
        judged(Observations::new(canary.clone(), fresh.clone()).with_fresh_baseline(fresh.clone())),
        (Pass, Pass, Verdict::Healthy)
    );
    // The fresh arm is validated and recorded.
    let bad = Observations::new(canary.clone(), stable.clone())
        .with_fresh_baseline(ArmObservation::counts(1, 2));
    assert!(matches!(
        policy.judge(&step, &bad),
        Err(CanaryError::InvalidObservation { .. })
    ));
    let obs = Observations::new(canary, stable).with_fresh_baseline(fresh);
    let report = policy.judge(&step, &obs).unwrap();
    assert_eq!(report.fresh_baseline_requests, Some(10_000));
    assert_eq!(
        report.metrics[1].name.as_ref(),
        "error_rate_vs_fresh_baseline"
    );
    let event = Event::Checked {
        at: Timestamp::from_unix_millis(1),
        step: 0,
        report,
    };
    let entry = trail::to_audit_entry("fresh", &event);
    assert_eq!(entry.metadata["fresh_baseline_requests"], "10000");
    assert_eq!(trail::from_audit_entry(&entry, 0).unwrap(), event);
}
