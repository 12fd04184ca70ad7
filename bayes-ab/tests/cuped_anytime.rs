//! The anytime-valid CUPED sequence ([`CupedPair`]) and CUPED inside [`DecisionRule`]: A/A
//! error at or below α when looking after every unit from the first, coverage of a real
//! effect under an uneven split, decisions sooner with a predictive covariate, merging, and
//! typed errors. (Bounded runs here; the 10,000-experiment figures are in `docs/bayes-ab.md`,
//! from `cargo run --release -p bayes-ab --example aa_cuped_anytime`.)

use bayes_ab::{
    BayesError, Counts, CupedPair, DecisionRule, GuardrailKind, GuardrailVerdict, PairArm,
    Recommendation, StoppingMode, cuped_compare, cuped_confidence_sequence,
};
use metered_clock::Timestamp;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One unit of a conversion experiment: the challenger with probability `share`; the
/// covariate `q = u²` is the champion's conversion probability scaled to `rate` when
/// `informative`, unrelated to it otherwise.
fn unit(
    rng: &mut StdRng,
    share: f64,
    rate: f64,
    lift: f64,
    informative: bool,
) -> (PairArm, f64, f64) {
    let arm = if rng.random::<f64>() < share {
        PairArm::Challenger
    } else {
        PairArm::Champion
    };
    let u: f64 = rng.random();
    let q = u * u;
    let p = if informative {
        (3.0 * rate * q).min(1.0)
    } else {
        rate
    } + if arm == PairArm::Challenger {
        lift
    } else {
        0.0
    };
    (arm, f64::from(u8::from(rng.random::<f64>() < p)), q)
}

/// Whether the sequence ever misses `truth` over `units` looks (one after every unit).
fn ever_misses(rng: &mut StdRng, share: f64, rate: f64, lift: f64, units: u32) -> bool {
    let mut pair = CupedPair::conversion(share).unwrap();
    for _ in 0..units {
        let (arm, y, x) = unit(rng, share, rate, lift, true);
        pair.record(arm, y, x).unwrap();
        if !pair
            .anytime_confidence_sequence(0.05)
            .unwrap()
            .contains(lift)
        {
            return true;
        }
    }
    false
}

#[test]
fn aa_error_stays_within_alpha_at_every_look_from_the_first_unit() {
    // 300 A/A experiments per rate, a look after each of 1,000 units from n = 1.
    let mut rng = StdRng::seed_from_u64(31);
    for rate in [0.02, 0.1, 0.5] {
        let misses = (0..300)
            .filter(|_| ever_misses(&mut rng, 0.5, rate, 0.0, 1_000))
            .count();
        // α = 5 %: 15 of 300 expected at most; the sequence is conservative (under 1 % in the
        // 10,000-experiment runs).
        assert!(
            misses <= 15,
            "rate {rate}: {misses} of 300 A/A experiments rejected"
        );
    }
}

#[test]
fn a_real_effect_is_covered_under_an_uneven_split() {
    // The challenger gets 20 % of the pair's units; its rate is 8 points higher. The
    // inverse-propensity weights must use the share, or the centre drifts off the effect.
    let mut rng = StdRng::seed_from_u64(32);
    let misses = (0..300)
        .filter(|_| ever_misses(&mut rng, 0.2, 0.2, 0.08, 2_000))
        .count();
    assert!(misses <= 15, "{misses} of 300 sequences missed the effect");
    // And the centre estimates it: after many units the sequence is narrow around 0.08.
    let mut pair = CupedPair::conversion(0.2).unwrap();
    for _ in 0..200_000 {
        let (arm, y, x) = unit(&mut rng, 0.2, 0.2, 0.08, true);
        pair.record(arm, y, x).unwrap();
    }
    let cs = pair.anytime_confidence_sequence(0.05).unwrap();
    assert!(cs.contains(0.08) && cs.width() < 0.03, "{cs:?}");
}

/// Units until the sequence first excludes zero.
fn units_to_decision(rng: &mut StdRng, informative: bool) -> u32 {
    let mut pair = CupedPair::conversion(0.5).unwrap();
    for n in 1..=100_000 {
        let (arm, y, x) = unit(rng, 0.5, 1.0 / 3.0, 0.06, informative);
        pair.record(arm, y, x).unwrap();
        if !pair
            .anytime_confidence_sequence(0.05)
            .unwrap()
            .contains(0.0)
        {
            return n;
        }
    }
    100_000
}

#[test]
fn a_predictive_covariate_shortens_the_time_to_decision() {
    // With p = q the covariate explains ρ² = 0.4 of the variance (1 − ρ² = 0.6).
    let mut rng = StdRng::seed_from_u64(33);
    let mean = |rng: &mut StdRng, informative: bool| {
        (0..40)
            .map(|_| f64::from(units_to_decision(rng, informative)))
            .sum::<f64>()
            / 40.0
    };
    let (with, without) = (mean(&mut rng, true), mean(&mut rng, false));
    let ratio = with / without;
    assert!(
        (0.35..0.75).contains(&ratio),
        "units to decision {with} with the covariate, {without} without: ratio {ratio}"
    );
}

#[test]
fn partial_pairs_merge_into_a_valid_sequence() {
    let mut rng = StdRng::seed_from_u64(34);
    let (mut whole, mut left, mut right) = (
        CupedPair::conversion(0.5).unwrap(),
        CupedPair::conversion(0.5).unwrap(),
        CupedPair::conversion(0.5).unwrap(),
    );
    for i in 0..5_000 {
        let (arm, y, x) = unit(&mut rng, 0.5, 0.2, 0.05, true);
        whole.record(arm, y, x).unwrap();
        if i % 3 == 0 { &mut left } else { &mut right }
            .record(arm, y, x)
            .unwrap();
    }
    left.merge(&right).unwrap();
    // The moments are those of one stream.
    let (a, b) = (whole.compare(0.95).unwrap(), left.compare(0.95).unwrap());
    assert!((a.difference - b.difference).abs() < 1e-12);
    assert!((a.standard_error - b.standard_error).abs() < 1e-12);
    // The sequences differ (each process bet on its own past) but both cover the effect.
    for pair in [whole, left] {
        assert!(
            pair.anytime_confidence_sequence(0.05)
                .unwrap()
                .contains(0.05)
        );
    }
    // A/A with two processes, the merged sequence looked at after every unit.
    let misses = (0..200)
        .filter(|_| {
            let (mut p, mut q) = (
                CupedPair::conversion(0.5).unwrap(),
                CupedPair::conversion(0.5).unwrap(),
            );
            (0..600).any(|i| {
                let (arm, y, x) = unit(&mut rng, 0.5, 0.3, 0.0, true);
                if i % 2 == 0 { &mut p } else { &mut q }
                    .record(arm, y, x)
                    .unwrap();
                let mut merged = p;
                merged.merge(&q).unwrap();
                !merged
                    .anytime_confidence_sequence(0.05)
                    .unwrap()
                    .contains(0.0)
            })
        })
        .count();
    assert!(
        misses <= 10,
        "{misses} of 200 merged A/A sequences rejected"
    );
    let mut other = CupedPair::conversion(0.3).unwrap();
    assert!(matches!(
        other.merge(&whole),
        Err(BayesError::Incompatible { .. })
    ));
}

#[test]
fn bad_inputs_are_typed_errors_and_change_nothing() {
    assert!(matches!(
        CupedPair::conversion(0.0),
        Err(BayesError::InvalidProbability { .. })
    ));
    assert!(CupedPair::conversion(1.0).is_err());
    assert!(CupedPair::bounded(0.5, 1.0, 1.0).is_err());
    assert!(CupedPair::bounded(0.5, 0.0, f64::INFINITY).is_err());
    let mut pair = CupedPair::bounded(0.5, 0.0, 10.0).unwrap();
    pair.record(PairArm::Champion, 3.0, 1.0).unwrap();
    let before = pair;
    for (y, x) in [(11.0, 1.0), (-0.1, 1.0), (f64::NAN, 1.0), (1.0, f64::NAN)] {
        assert!(pair.record(PairArm::Challenger, y, x).is_err());
        assert_eq!(pair, before);
    }
    assert!(pair.anytime_confidence_sequence(1.0).is_err());
    let unbounded = CupedPair::unbounded(0.5).unwrap();
    assert!(matches!(
        unbounded.anytime_confidence_sequence(0.05),
        Err(BayesError::InvalidParameter { .. })
    ));
    // Before any unit: the whole range.
    let empty = CupedPair::bounded(0.5, 0.0, 10.0).unwrap();
    let cs = empty.anytime_confidence_sequence(0.05).unwrap();
    assert_eq!((cs.lower, cs.upper), (-10.0, 10.0));
}

proptest! {
    /// Any stream of bounded values: the sequence lies in `[−range, range]`, is nested in α
    /// (a smaller α never gives a narrower interval), and a merge adds the counts.
    #[test]
    fn the_sequence_is_bounded_and_nested(
        units in prop::collection::vec((any::<bool>(), -2.0f64..3.0, -50.0f64..50.0), 0..300),
        share in 0.05f64..0.95,
        split_at in 0usize..300,
    ) {
        let (lower, upper) = (-2.0, 3.0);
        let mut pair = CupedPair::bounded(share, lower, upper).unwrap();
        let (mut left, mut right) = (pair, pair);
        for (i, &(challenger, y, x)) in units.iter().enumerate() {
            let arm = if challenger { PairArm::Challenger } else { PairArm::Champion };
            pair.record(arm, y, x).unwrap();
            if i < split_at { &mut left } else { &mut right }.record(arm, y, x).unwrap();
        }
        let wide = pair.anytime_confidence_sequence(0.01).unwrap();
        let narrow = pair.anytime_confidence_sequence(0.2).unwrap();
        let range = upper - lower;
        prop_assert!(-range <= wide.lower && wide.lower <= wide.upper && wide.upper <= range);
        prop_assert!(wide.lower <= narrow.lower && narrow.upper <= wide.upper);
        left.merge(&right).unwrap();
        let count = |p: &CupedPair| p.champion().count() + p.challenger().count();
        prop_assert_eq!(count(&left), count(&pair));
        let merged = left.anytime_confidence_sequence(0.05).unwrap();
        prop_assert!(merged.lower <= merged.upper);
    }
}

// --- CUPED inside the decision rule -------------------------------------------------------

fn pair_and_counts(n: u32, lift: f64, seed: u64) -> (CupedPair, Counts, Counts) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut pair, mut a, mut b) = (
        CupedPair::conversion(0.5).unwrap(),
        Counts::default(),
        Counts::default(),
    );
    for _ in 0..n {
        let (arm, y, x) = unit(&mut rng, 0.5, 1.0 / 3.0, lift, true);
        pair.record(arm, y, x).unwrap();
        match arm {
            PairArm::Champion => a = a.record(y > 0.5).unwrap(),
            PairArm::Challenger => b = b.record(y > 0.5).unwrap(),
        }
    }
    (pair, a, b)
}

fn rule(stopping: StoppingMode) -> DecisionRule {
    DecisionRule::builder()
        .stopping(stopping)
        .cuped(true)
        .build()
        .unwrap()
}

const T0: Timestamp = Timestamp::from_unix_millis(0);
const T1: Timestamp = Timestamp::from_unix_millis(1);

#[test]
fn every_mode_decides_on_the_adjusted_difference() {
    let (pair, a, b) = pair_and_counts(20_000, 0.03, 40);
    let flat = cuped_compare(*pair.champion(), *pair.challenger(), 0.95).unwrap();
    // Bayesian: the thresholds on the adjusted posterior.
    let bayes = rule(StoppingMode::bayesian(0.95, 0.001).unwrap())
        .evaluate_cuped(a, b, &pair, T0, T1, &[])
        .unwrap();
    assert_eq!(bayes.adjusted, Some(flat));
    let winner = flat.prob_b_beats_a >= 0.95 && flat.expected_loss_b <= 0.001;
    assert!(winner, "{flat:?}");
    assert_eq!(bayes.decision, Recommendation::Winner);
    assert_eq!(bayes.confidence_sequence, None);
    // Sequential: GrowthBook's sequence on the adjusted difference.
    let seq = rule(StoppingMode::sequential(0.05, 20_000.0).unwrap())
        .evaluate_cuped(a, b, &pair, T0, T1, &[])
        .unwrap();
    let cs =
        cuped_confidence_sequence(*pair.champion(), *pair.challenger(), 0.05, 20_000.0).unwrap();
    assert_eq!(seq.confidence_sequence, Some(cs));
    assert_eq!(seq.decision == Recommendation::Winner, cs.lower > 0.0);
    // Anytime-valid: the pair's betting sequence.
    let any = rule(StoppingMode::anytime_valid(0.05).unwrap())
        .evaluate_cuped(a, b, &pair, T0, T1, &[])
        .unwrap();
    let cs = pair.anytime_confidence_sequence(0.05).unwrap();
    assert_eq!(any.confidence_sequence, Some(cs));
    assert_eq!(any.decision == Recommendation::Winner, cs.lower > 0.0);
    // The unadjusted exact summary is still reported.
    assert_eq!(any.summary, seq.summary);
}

#[test]
fn guardrails_and_the_minimum_sample_come_first() {
    // Two units: no adjustment possible, but the minimum sample decides.
    let (pair, a, b) = pair_and_counts(2, 0.0, 41);
    let r = rule(StoppingMode::sequential(0.05, 10_000.0).unwrap());
    let e = r.evaluate_cuped(a, b, &pair, T0, T1, &[]).unwrap();
    assert!(matches!(e.decision, Recommendation::Continue { .. }));
    assert_eq!(e.adjusted, None);
    let breach = GuardrailVerdict {
        kind: GuardrailKind::ErrorRateAbsolute,
        breached: true,
        observed: 0.2,
        limit: 0.05,
        probability: Some(0.99),
        interval: None,
    };
    let e = r.evaluate_cuped(a, b, &pair, T0, T1, &[breach]).unwrap();
    assert!(matches!(e.decision, Recommendation::Rollback { .. }));
    // Past the minimum sample without covariate variance: a typed error, not a silent
    // fallback to the unadjusted figures.
    let mut flat = CupedPair::conversion(0.5).unwrap();
    let (mut a, mut b) = (Counts::default(), Counts::default());
    for i in 0..400 {
        let converted = i % 5 == 0;
        let arm = if i % 2 == 0 {
            a = a.record(converted).unwrap();
            PairArm::Champion
        } else {
            b = b.record(converted).unwrap();
            PairArm::Challenger
        };
        flat.record(arm, f64::from(u8::from(converted)), 1.0)
            .unwrap();
    }
    assert!(matches!(
        r.evaluate_cuped(a, b, &flat, T0, T1, &[]),
        Err(BayesError::InsufficientData { .. })
    ));
    // The anytime-valid mode needs a bounded pair.
    let (bounded, a, b) = pair_and_counts(400, 0.0, 42);
    let mut unbounded = CupedPair::unbounded(0.5).unwrap();
    for arm in [PairArm::Champion, PairArm::Challenger] {
        for i in 0..200 {
            let x = f64::from(i % 10);
            unbounded.record(arm, x + f64::from(i % 3), x).unwrap();
        }
    }
    assert!(bounded.anytime_confidence_sequence(0.05).is_ok());
    assert!(matches!(
        rule(StoppingMode::anytime_valid(0.05).unwrap()).evaluate_cuped(
            a,
            b,
            &unbounded,
            T0,
            T1,
            &[]
        ),
        Err(BayesError::InvalidParameter { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// For any units, `evaluate_cuped` returns a typed result and never contradicts its own
    /// figures: below the minimum sample it continues; a winner in a sequential mode has a
    /// sequence above zero, a rollback one below; a Bayesian winner has P(B > A) at the
    /// threshold and the loss within it.
    #[test]
    fn cuped_decisions_agree_with_their_figures(
        units in prop::collection::vec((any::<bool>(), any::<bool>(), 0.0f64..5.0), 0..600),
        min_trials in 0u64..200,
        mode in 0usize..3,
    ) {
        let (mut pair, mut a, mut b) = (
            CupedPair::conversion(0.5).unwrap(),
            Counts::default(),
            Counts::default(),
        );
        for &(challenger, converted, x) in &units {
            let y = f64::from(u8::from(converted));
            if challenger {
                pair.record(PairArm::Challenger, y, x).unwrap();
                b = b.record(converted).unwrap();
            } else {
                pair.record(PairArm::Champion, y, x).unwrap();
                a = a.record(converted).unwrap();
            }
        }
        let stopping = [
            StoppingMode::bayesian(0.95, 0.01).unwrap(),
            StoppingMode::sequential(0.05, 1_000.0).unwrap(),
            StoppingMode::anytime_valid(0.05).unwrap(),
        ][mode];
        let rule = DecisionRule::builder()
            .stopping(stopping)
            .min_trials_per_arm(min_trials)
            .cuped(true)
            .build()
            .unwrap();
        match rule.evaluate_cuped(a, b, &pair, T0, T1, &[]) {
            Ok(e) => {
                if a.trials().min(b.trials()) < min_trials {
                    let continues = matches!(e.decision, Recommendation::Continue { .. });
                    prop_assert!(continues);
                }
                let winner = e.decision == Recommendation::Winner;
                let rollback = matches!(e.decision, Recommendation::Rollback { .. });
                match (stopping, e.confidence_sequence, e.adjusted) {
                    (StoppingMode::Bayesian { .. }, _, Some(c)) if winner => {
                        prop_assert!(c.prob_b_beats_a >= 0.95 && c.expected_loss_b <= 0.01);
                    }
                    (StoppingMode::Bayesian { .. }, _, None) => {
                        prop_assert!(!winner && !rollback);
                    }
                    (_, Some(cs), _) => {
                        prop_assert!(!winner || cs.lower > 0.0);
                        prop_assert!(!rollback || cs.upper < 0.0);
                    }
                    _ => {}
                }
            }
            // Only a covariate or metric without variance past the minimum sample (or too
            // few units for the adjustment) is refused.
            Err(e) => {
                let insufficient = matches!(e, BayesError::InsufficientData { .. });
                prop_assert!(insufficient, "{:?}", e);
            }
        }
    }
}

#[test]
fn through_an_experiment_the_variance_falls_by_rho_squared_for_conversions() {
    use bayes_ab::{ExperimentState, Guardrails, TrafficSplit, UnitOutcome};
    // The covariate is each unit's own conversion probability q = u² (a perfect CUPAC
    // prediction): ρ² = Var(q) / Var(y) = (4/45) / (2/9) = 0.4.
    let mut rng = StdRng::seed_from_u64(43);
    let mut s = ExperimentState::new("rho", TrafficSplit::even(2).unwrap(), T0).unwrap();
    for _ in 0..60_000 {
        let (arm, y, q) = unit(&mut rng, 0.5, 1.0 / 3.0, 0.0, true);
        let arm = usize::from(arm == PairArm::Challenger);
        let outcome = UnitOutcome {
            converted: y > 0.5,
            ..UnitOutcome::default()
        };
        s.record_with_covariate(arm, outcome, Some(q)).unwrap();
    }
    let e = s
        .evaluate(
            &rule(StoppingMode::sequential(0.05, 60_000.0).unwrap()),
            &Guardrails::default(),
            T1,
        )
        .unwrap();
    let c = e.evaluation.adjusted.unwrap();
    assert!(
        (c.variance_ratio - 0.6).abs() < 0.02,
        "variance ratio {}",
        c.variance_ratio
    );
    assert!(!e.challengers[0].covariate_balance.unwrap().imbalanced);
}
