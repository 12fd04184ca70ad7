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
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
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

/// Inputs that found bugs not fixed yet, in `fuzz/known-bugs/<target>/`, as
/// `(target, file, finding)`: each must still be flagged by its check with a message
/// containing `finding` (so the finding is not lost). When the owning crate fixes one,
/// `known_bugs_are_still_detected` fails: move the input to `fuzz/regressions/<target>/`
/// and drop its entry here.
///
/// None is open. The last ones, in `bayes` (`prob_b_beats_a` and `best_arm` returning
/// probabilities a few 1e-15 above one), are fixed in `bayes-ab` and replay from
/// `fuzz/regressions/bayes/` (see `FIXED_BAYES_REGRESSIONS`).
const KNOWN_BUGS: &[(&str, &str, &str)] = &[];

/// Inputs of the fixed `bayes` findings, which must stay in `fuzz/regressions/bayes/` (and
/// pass): P(B > A) was 1.0000000000000069 for Beta(261.015625, 65028.015625) vs
/// Beta(389.015625, 6.953125) and 1.000000000000002 for Beta(263.453125, 630.453125) vs
/// Beta(261.015625, 4.015625); `best_arm` gave `[1.0000000000000058, 0.0]` for
/// Beta(264.90625, 4.015625) vs Beta(511.0, 65028.015625). The same posteriors are unit
/// tests in `bayes-ab/tests/fuzz_regressions.rs`.
const FIXED_BAYES_REGRESSIONS: [&str; 3] = [
    "prob-b-beats-a-above-one",
    "prob-b-beats-a-above-one-2",
    "best-arm-probability-above-one",
];

#[test]
fn known_bugs_are_still_detected() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/known-bugs");
    // Every input kept there has an entry (none is silently skipped).
    for (target, _) in TARGETS {
        for (name, _) in inputs(&root.join(target)) {
            let file = Path::new(&name).file_name().and_then(|f| f.to_str());
            assert!(
                KNOWN_BUGS
                    .iter()
                    .any(|(t, f, _)| *t == target && Some(*f) == file),
                "{name} has no entry in KNOWN_BUGS"
            );
        }
    }
    for (target, file, finding) in KNOWN_BUGS {
        let check = TARGETS.iter().find(|(t, _)| t == target).unwrap().1;
        let bytes = std::fs::read(root.join(target).join(file)).unwrap();
        let err = check(&bytes).expect_err("fixed? move the input to fuzz/regressions/");
        assert!(err.contains(finding), "{err}");
    }
}

#[test]
fn fixed_bayes_findings_now_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/bayes");
    let check = TARGETS.iter().find(|(t, _)| *t == "bayes").unwrap().1;
    for file in FIXED_BAYES_REGRESSIONS {
        let bytes = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        check(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}
