//! Every RFC 6962 / RFC 9162 proof vector in `tests/data/rfc6962` (from
//! transparency-dev/merkle): the verifiers accept exactly the cases with `wantErr: false`.

use std::path::{Path, PathBuf};

use audit_chain::merkle::{verify_consistency, verify_inclusion};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
}

fn b64(v: &Value) -> Vec<u8> {
    B64.decode(v.as_str().unwrap()).unwrap()
}

fn proof(v: &Value) -> Vec<Vec<u8>> {
    v.as_array()
        .map(|a| a.iter().map(b64).collect())
        .unwrap_or_default()
}

fn run(kind: &str) -> (usize, usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/rfc6962")
        .join(kind);
    let mut all = Vec::new();
    files(&root, &mut all);
    all.sort();
    let (mut accepted, mut rejected) = (0, 0);
    for path in &all {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let result = if kind == "inclusion" {
            verify_inclusion(
                &b64(&v["leafHash"]),
                v["leafIdx"].as_u64().unwrap(),
                v["treeSize"].as_u64().unwrap(),
                &proof(&v["proof"]),
                &b64(&v["root"]),
            )
        } else {
            verify_consistency(
                v["size1"].as_u64().unwrap(),
                v["size2"].as_u64().unwrap(),
                &proof(&v["proof"]),
                &b64(&v["root1"]),
                &b64(&v["root2"]),
            )
        };
        let want_err = v["wantErr"].as_bool().unwrap();
        assert_eq!(
            result.is_err(),
            want_err,
            "{}: {} ({result:?})",
            path.display(),
            v["desc"]
        );
        if want_err {
            rejected += 1;
        } else {
            accepted += 1;
        }
    }
    (accepted, rejected)
}

#[test]
fn inclusion_vectors() {
    let (ok, bad) = run("inclusion");
    assert_eq!(ok, 6, "happy paths");
    assert!(bad >= 80, "only {bad} rejected cases found");
}

#[test]
fn consistency_vectors() {
    let (ok, bad) = run("consistency");
    assert_eq!(ok, 6, "happy paths");
    assert!(bad >= 80, "only {bad} rejected cases found");
}
