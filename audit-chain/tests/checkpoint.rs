//! C2SP signed notes and checkpoints: the Go reference vector, round trips, and every way a
//! note can be wrong.

use audit_chain::{AuditError, Checkpoint, NoteSigner, NoteVerifier};

const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const SKEY: &str = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

#[test]
fn go_reference_note_signs_and_verifies_byte_for_byte() {
    let signer = NoteSigner::from_private_key(SKEY).unwrap();
    assert_eq!(signer.verifier_key(), VKEY);
    let note = signer.sign(TEXT).unwrap();
    assert_eq!(note, format!("{TEXT}\n{SIG}"));
    let verifier = NoteVerifier::new(VKEY).unwrap();
    assert_eq!(verifier.open(&note).unwrap(), TEXT);
    assert_eq!(verifier.name(), "PeterNeumann");
}

#[test]
fn other_signatures_are_ignored_but_a_bad_one_by_our_key_fails() {
    let verifier = NoteVerifier::new(VKEY).unwrap();
    let witness = "\u{2014} witness.example AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n";
    let note = format!("{TEXT}\n{witness}{SIG}");
    assert_eq!(verifier.open(&note).unwrap(), TEXT);
    let only_witness = format!("{TEXT}\n{witness}");
    assert!(verifier.open(&only_witness).is_err());
    let tampered = format!("{}\n{SIG}", TEXT.replace("problem,", "problem;"));
    assert!(verifier.open(&tampered).is_err());
}

#[test]
fn malformed_notes_are_errors() {
    let verifier = NoteVerifier::new(VKEY).unwrap();
    let good = format!("{TEXT}\n{SIG}");
    let cases = [
        String::new(),
        TEXT.to_owned(),                                 // no signatures
        format!("{TEXT}\n"),                             // blank line, nothing after
        good.trim_end().to_owned(),                      // missing final newline
        good.replace('\u{2014}', "-"),                   // not an em dash
        good.replace("x08go/", "x08go!"),                // not base64
        format!("{TEXT}\n\u{2014} PeterNeumann AAAA\n"), // too short
        format!("{TEXT}\n\u{2014} PeterNeumann\n"),      // no signature field
        format!("{TEXT}\n{}", SIG.repeat(101)),          // too many
        "\u{2014}\n\n\n".to_owned(),
    ];
    for note in cases {
        assert!(
            matches!(verifier.open(&note), Err(AuditError::InvalidCheckpoint(_))),
            "accepted {note:?}"
        );
    }
}

#[test]
fn bad_verifier_and_signer_keys_are_errors() {
    for vkey in [
        "",
        "PeterNeumann",
        "PeterNeumann+c74f20a3",
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+AhpcQcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW+extra",
        "Other+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ] {
        assert!(NoteVerifier::new(vkey).is_err(), "accepted {vkey:?}");
    }
    assert!(
        NoteSigner::from_private_key(
            "PRIVATE+KEY+PeterNeumann+00000000+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
        )
        .is_err()
    );
    assert!(NoteSigner::from_private_key(VKEY).is_err());
    assert!(NoteSigner::new("has space", [1; 32]).is_err());
    assert!(NoteSigner::new("a+b", [1; 32]).is_err());
    assert!(NoteSigner::new("", [1; 32]).is_err());
    let s = NoteSigner::new("log", [1; 32]).unwrap();
    assert!(s.sign("no newline").is_err());
    assert!(s.sign("blank\n\nline\n").is_err());
}

#[test]
fn checkpoints_round_trip_and_name_their_log() {
    let signer = NoteSigner::new("audit.example", [42; 32]).unwrap();
    let verifier = NoteVerifier::new(&signer.verifier_key()).unwrap();
    let cp = Checkpoint {
        origin: "audit.example/billing".into(),
        size: 1_000_000,
        root: [0xab; 32],
    };
    let signed = signer.sign_checkpoint(&cp);
    assert!(
        signed
            .note
            .starts_with("audit.example/billing\n1000000\nq6ur")
    );
    assert_eq!(
        verifier
            .verify_checkpoint(&signed.note, "audit.example/billing")
            .unwrap(),
        cp
    );
    // A checkpoint for another log.
    assert!(matches!(
        verifier.verify_checkpoint(&signed.note, "audit.example/other"),
        Err(AuditError::InvalidCheckpoint(_))
    ));
    // Signed by another key.
    let other = NoteSigner::new("audit.example", [43; 32]).unwrap();
    let forged = other.sign_checkpoint(&Checkpoint {
        size: 5,
        ..cp.clone()
    });
    assert!(
        verifier
            .verify_checkpoint(&forged.note, "audit.example/billing")
            .is_err()
    );
}

#[test]
fn malformed_checkpoint_bodies_are_errors() {
    for body in [
        "",
        "origin\n",
        "origin\n12\n",
        "origin\n-1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "origin\n012\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "origin\n18446744073709551616\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "origin\n12\nAAAA\n",
        "origin\n12\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "\n12\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
    ] {
        assert!(Checkpoint::parse_body(body).is_err(), "accepted {body:?}");
    }
    let with_ext = "o\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\nextension line\n";
    assert_eq!(Checkpoint::parse_body(with_ext).unwrap().size, 0);
}
