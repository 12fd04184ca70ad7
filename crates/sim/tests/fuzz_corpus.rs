//! Replays every committed fuzz input (the corpora grown by `cargo fuzz` and the
//! regression inputs of bugs found) through the same check functions the fuzz targets
//! call, on stable Rust, and checks the hand-made starting inputs.

use std::path::Path;

use sim::fuzz::{TARGETS, seed_inputs};

fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.path().display().to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn committed_corpora_and_regressions_replay_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut replayed = 0;
    for (target, check) in TARGETS {
        let corpus = inputs(&root.join("corpus").join(target));
        assert!(!corpus.is_empty(), "no committed corpus for {target}");
        for (name, bytes) in corpus
            .iter()
            .chain(&inputs(&root.join("regressions").join(target)))
        {
            check(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            replayed += 1;
        }
    }
    assert!(replayed >= TARGETS.len());
}

#[test]
fn starting_inputs_pass_and_edge_inputs_do_not_panic() {
    for (target, check) in TARGETS {
        let seeds = seed_inputs(target);
        assert!(!seeds.is_empty(), "{target} has no starting inputs");
        for s in seeds {
            check(&s).unwrap_or_else(|e| panic!("{target}: {e}"));
        }
        for edge in [&[][..], &[0], &[0xff; 300], &[0x80; 17]] {
            check(edge).unwrap_or_else(|e| panic!("{target} on {edge:?}: {e}"));
        }
    }
    assert!(seed_inputs("no-such-target").is_empty());
}

/// Inputs that found bugs not fixed yet, in `fuzz/known-bugs/<target>/`: each must still be
/// flagged by its check (so the finding is not lost). When the owning crate fixes one, this
/// test fails: move the input to `fuzz/regressions/<target>/` and drop its entry here.
///
/// * `bayes/prob-b-beats-a-above-one`: `bayes_ab::prob_b_beats_a` returns
///   1.000000000000003–7 (depending on the version) for Beta(261.015625, 65028.015625) vs
///   Beta(389.015625, 6.953125): a probability above one (rounding not clamped to [0, 1]);
///   `-2`: 1.000000000000002 for Beta(263.453125, 630.453125) vs Beta(261.015625, 4.015625).
/// * `bayes/best-arm-probability-above-one`: `bayes_ab::best_arm` reports
///   `prob_best = [1.0000000000000058, 0.0]` for Beta(264.90625, 4.015625) vs
///   Beta(511.0, 65028.015625).
#[test]
fn known_bugs_are_still_detected() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/known-bugs");
    let expected = [
        (
            "bayes",
            "prob-b-beats-a-above-one",
            "P(B > A) = 1.00000000000000",
        ),
        (
            "bayes",
            "prob-b-beats-a-above-one-2",
            "P(B > A) = 1.00000000000000",
        ),
        (
            "bayes",
            "best-arm-probability-above-one",
            "best arm probabilities [1.00000000000000",
        ),
    ];
    for (target, file, finding) in expected {
        let check = TARGETS.iter().find(|(t, _)| *t == target).unwrap().1;
        let bytes = std::fs::read(root.join(target).join(file)).unwrap();
        let err = check(&bytes).expect_err("fixed? move the input to fuzz/regressions/");
        assert!(err.contains(finding), "{err}");
    }
}
