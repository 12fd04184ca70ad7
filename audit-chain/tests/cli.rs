//! The `audit-verify` binary on a log written by the writer and file sink.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use audit_chain::merkle::verify_inclusion;
use audit_chain::{
    AuditEntry, AuditLog, AuditTrail, AuditWriter, FileSink, HmacKey, Keyring, MaskingPolicy,
    NoteSigner, WriterConfig,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use metered_clock::{ManualClock, Timestamp};

struct Fixture {
    dir: tempfile::TempDir,
    keys: std::path::PathBuf,
    note: std::path::PathBuf,
    vkey: String,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    let (sink, _) = FileSink::open(&log_dir).unwrap();
    let signer = NoteSigner::new("audit.test", [5; 32]).unwrap();
    let vkey = signer.verifier_key();
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(
        1_700_000_000_000,
    )));
    let writer = AuditWriter::open(
        Arc::new(sink),
        WriterConfig::builder("audit.test/log").build().unwrap(),
        clock,
        Some(signer),
    )
    .await
    .unwrap();
    let ring = Keyring::new(HmacKey::new(3, [0x33; 32]).unwrap());
    let log = AuditLog::new(writer.clone(), ring, MaskingPolicy::standard());
    for i in 0..10u64 {
        let stream = if i % 2 == 0 { "tenant-a" } else { "tenant-b" };
        log.record(
            AuditEntry::new(stream, "balance", "debit", Timestamp::from_unix_millis(i))
                .with_amount(i),
        )
        .await
        .unwrap();
    }
    writer.close().await.unwrap();
    let note = dir.path().join("checkpoint.note");
    std::fs::write(&note, writer.latest_signed_checkpoint().unwrap().note).unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, format!("# test key\n3:{}\n", "33".repeat(32))).unwrap();
    Fixture {
        dir,
        keys,
        note,
        vkey,
    }
}

fn run(f: &Fixture, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_audit-verify"))
        .arg("--dir")
        .arg(f.dir.path().join("log"))
        .arg("--keys")
        .arg(&f.keys)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn segment(dir: &Path) -> std::path::PathBuf {
    dir.join("log").join(format!("{:020}.seg", 0))
}

#[tokio::test]
async fn intact_log_exits_zero_and_prints_a_proof() {
    let f = fixture().await;
    let note = f.note.to_str().unwrap();
    let (code, out, err) = run(
        &f,
        &[
            "--checkpoint",
            note,
            "--public-key",
            &f.vkey,
            "--prove",
            "3",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("entries ok:   10"), "{out}");
    assert!(out.contains("matched"), "{out}");
    assert!(out.contains("intact"), "{out}");
    let json: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let b = |v: &serde_json::Value| B64.decode(v.as_str().unwrap()).unwrap();
    let proof: Vec<Vec<u8>> = json["proof"].as_array().unwrap().iter().map(b).collect();
    assert_eq!(proof.len(), 4);
    verify_inclusion(&b(&json["leaf_hash"]), 3, 10, &proof, &b(&json["root"])).unwrap();

    let (code, out, _) = run(&f, &["--json"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["report"]["entries_ok"], 10);
}

#[tokio::test]
async fn damage_exits_one_naming_the_first_bad_entry() {
    let f = fixture().await;
    let note = f.note.to_str().unwrap();
    let seg = segment(f.dir.path());
    let good = std::fs::read(&seg).unwrap();

    // Tampered byte in the middle of the log.
    let mut bad = good.clone();
    let mid = good.len() / 2;
    bad[mid] ^= 1;
    std::fs::write(&seg, &bad).unwrap();
    let (code, _, err) = run(&f, &["--checkpoint", note, "--public-key", &f.vkey]);
    assert_eq!(code, 1);
    assert!(err.contains("FAILED: entry"), "{err}");

    // Newest entries deleted (cut at a frame boundary): only the checkpoint notices.
    let mut pos = 16;
    let mut ends = Vec::new();
    while pos < good.len() {
        let len = u32::from_be_bytes(good[pos..pos + 4].try_into().unwrap()) as usize;
        pos += 4 + len + 8;
        ends.push(pos);
    }
    // The durable size the sink records beside the log notices it too.
    std::fs::write(&seg, &good[..ends[7]]).unwrap();
    let (code, _, err) = run(&f, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("entry 8: truncation"), "{err}");
    // Whoever can cut the log can also remove that record: then only a checkpoint kept
    // elsewhere notices.
    let durable_file = f.dir.path().join("log").join("durable");
    let durable = std::fs::read(&durable_file).unwrap();
    std::fs::remove_file(&durable_file).unwrap();
    let (code, _, _) = run(&f, &[]);
    assert_eq!(code, 0, "without a checkpoint truncation is invisible");
    let (code, _, err) = run(&f, &["--checkpoint", note, "--public-key", &f.vkey]);
    assert_eq!(code, 1);
    assert!(err.contains("entry 8: truncation"), "{err}");
    std::fs::write(&seg, &good).unwrap();
    std::fs::write(&durable_file, durable).unwrap();

    // Wrong HMAC key.
    std::fs::write(&f.keys, format!("3:{}\n", "44".repeat(32))).unwrap();
    let (code, _, err) = run(&f, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("entry 0: HMAC"), "{err}");
}

#[tokio::test]
async fn bad_invocations_exit_two() {
    let f = fixture().await;
    let note = f.note.to_str().unwrap();
    let other = NoteSigner::new("audit.test", [6; 32])
        .unwrap()
        .verifier_key();
    for extra in [
        vec!["--bogus"],
        vec!["--prove"],
        vec!["--prove", "x"],
        vec!["--checkpoint", note, "--public-key", &other],
        vec![
            "--checkpoint",
            note,
            "--public-key",
            &f.vkey,
            "--origin",
            "another/log",
        ],
        vec!["--checkpoint", "/nonexistent/note", "--allow-unsigned"],
        // An unsigned checkpoint proves nothing: its signature must be checked or waived.
        vec!["--checkpoint", note],
        vec!["--prove", "10"],
    ] {
        let (code, out, err) = run(&f, &extra);
        assert_eq!(code, 2, "{extra:?}: {out}{err}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_audit-verify"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn an_unchecked_checkpoint_signature_must_be_waived_explicitly() {
    let f = fixture().await;
    let note = f.note.to_str().unwrap();
    let (code, out, err) = run(&f, &["--checkpoint", note]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("--allow-unsigned"), "{err}");
    let (code, out, err) = run(&f, &["--checkpoint", note, "--allow-unsigned"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("matched") && out.contains("intact"), "{out}");
    assert!(err.contains("not checked"), "{err}");
    let (code, out, err) = run(&f, &["--help"]);
    assert_eq!(code, 2);
    assert!(err.contains("--allow-unsigned"), "{out}{err}");
}

/// Damage at the end of the log is not a torn write: a flipped length bit in the last frame
/// and garbage after it both exit 1, even without a checkpoint, and the log is not changed.
#[tokio::test]
async fn damage_at_the_end_of_the_log_exits_one_without_a_checkpoint() {
    let f = fixture().await;
    let seg = segment(f.dir.path());
    let good = std::fs::read(&seg).unwrap();
    let mut pos = 16;
    let mut last = 16;
    while pos < good.len() {
        last = pos;
        let len = u32::from_be_bytes(good[pos..pos + 4].try_into().unwrap()) as usize;
        pos += 4 + len + 8;
    }
    let mut flipped = good.clone();
    flipped[last] ^= 0x80;
    let mut appended = good.clone();
    appended.extend_from_slice(b"garbage after the end");
    for (what, bad) in [("flipped length", flipped), ("garbage", appended)] {
        std::fs::write(&seg, &bad).unwrap();
        let (code, out, err) = run(&f, &[]);
        assert_eq!(code, 1, "{what}: {out}{err}");
        assert!(err.contains("FAILED: entry"), "{what}: {err}");
        assert_eq!(std::fs::read(&seg).unwrap(), bad, "{what}");
    }
}

fn run_raw(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_audit-verify"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A log in PostgreSQL is named by `--database-url` (and `--schema`), never together with
/// `--dir`; the usage errors exit 2 before any connection is tried. (The checks of a real
/// PostgreSQL log are in `credits-postgres/tests/verify.rs`.)
#[tokio::test]
async fn database_flags_are_checked_like_the_others() {
    let f = fixture().await;
    let keys = f.keys.to_str().unwrap();
    let note = f.note.to_str().unwrap();
    let dir = f.dir.path().join("log");
    let dir = dir.to_str().unwrap();
    // Nothing listens on port 1: a connection would fail, but usage is checked first.
    let url = "postgres://verifier@127.0.0.1:1/none";
    for (args, says) in [
        (
            vec!["--dir", dir, "--database-url", url, "--keys", keys],
            "mutually exclusive",
        ),
        (vec!["--keys", keys], "--dir or --database-url is required"),
        (
            vec!["--dir", dir, "--schema", "s", "--keys", keys],
            "--schema is only for",
        ),
        (vec!["--database-url"], "--database-url needs a value"),
        (
            vec![
                "--database-url",
                url,
                "--schema",
                "s",
                "--keys",
                keys,
                "--checkpoint",
                note,
            ],
            "--allow-unsigned",
        ),
    ] {
        let (code, out, err) = run_raw(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(err.contains("usage:"), "{args:?}: {err}");
    }
    // The help names the flags.
    let (code, _, err) = run_raw(&["--help"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--database-url") && err.contains("--schema"),
        "{err}"
    );

    // A database that cannot be reached is an I/O error: exit 2, not a verdict.
    let (code, out, err) = run_raw(&["--database-url", url, "--keys", keys]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("connecting to the database"), "{err}");
    assert!(!out.contains("intact"), "{out}");

    // A schema without the log's tables is not verified as an empty log (on the server of
    // `DATABASE_URL`; without it this part is skipped, unless `REQUIRE_DATABASE=1`).
    let url = std::env::var("DATABASE_URL").ok();
    assert!(
        url.is_some() || std::env::var("REQUIRE_DATABASE").as_deref() != Ok("1"),
        "DATABASE_URL is not set but REQUIRE_DATABASE=1"
    );
    if let Some(url) = url {
        let (code, out, err) = run_raw(&[
            "--database-url",
            &url,
            "--schema",
            "audit_verify_no_such_schema",
            "--keys",
            keys,
        ]);
        assert_eq!(code, 2, "{out}{err}");
        assert!(err.contains("has no table audit_log"), "{err}");
    }
}
