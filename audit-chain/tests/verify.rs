//! Tamper, reorder, delete-middle and delete-tail are each detected and located; key
//! rotation keeps old entries verifiable; range verification.

use audit_chain::merkle::MerkleTree;
use audit_chain::{
    AuditEntry, AuditSink, Checkpoint, HmacKey, IntegrityCheck, Keyring, LogRecord, MaskingPolicy,
    MemorySink, StreamChain, verify_range, verify_records,
};
use metered_clock::Timestamp;

fn key(id: u8) -> HmacKey {
    HmacKey::new(u32::from(id), [id; 32]).unwrap()
}

/// `n` entries round-robin over three streams, sealed with `keyring`.
fn log(keyring: &Keyring, n: u64) -> Vec<LogRecord> {
    let mut chains: Vec<StreamChain> = ["a", "b", "c"].into_iter().map(StreamChain::new).collect();
    (0..n)
        .map(|i| {
            let c = &mut chains[(i % 3) as usize];
            let stream = c.stream().to_owned();
            let e = AuditEntry::new(stream, "balance", "debit", Timestamp::from_unix_millis(i))
                .with_amount(i)
                .with_balances(1000, 1000 - i);
            LogRecord::new(i, c.seal(keyring, &MaskingPolicy::none(), e).unwrap())
        })
        .collect()
}

fn checkpoint(records: &[LogRecord]) -> Checkpoint {
    let mut t = MerkleTree::new();
    for r in records {
        t.push(r.entry.leaf_hash());
    }
    Checkpoint {
        origin: "test/log".into(),
        size: t.size(),
        root: t.root(),
    }
}

fn failure(
    keyring: &Keyring,
    records: &[LogRecord],
    cp: Option<&Checkpoint>,
) -> (u64, IntegrityCheck) {
    let report = verify_records(keyring, records, cp);
    let f = report.failure.expect("expected a failure");
    (f.index, f.check)
}

#[test]
fn intact_log_verifies_with_and_without_checkpoint() {
    let ring = Keyring::new(key(1));
    let records = log(&ring, 12);
    let cp = checkpoint(&records);
    let report = verify_records(&ring, &records, Some(&cp));
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.entries_ok, 12);
    assert_eq!(report.streams, 3);
    assert_eq!(report.root, Some(cp.root));
    assert!(report.checkpoint_matched);
    assert!(verify_records(&ring, &records, None).is_intact());
    // An older checkpoint is a prefix of the log: still intact.
    let old = checkpoint(&records[..5]);
    assert!(verify_records(&ring, &records, Some(&old)).checkpoint_matched);
}

#[test]
fn altered_content_fails_the_hash_check() {
    let ring = Keyring::new(key(1));
    let mut records = log(&ring, 9);
    records[4].entry = {
        let mut json = serde_json::to_value(&records[4].entry).unwrap();
        json["entry"]["amount"] = 1_000_000.into();
        serde_json::from_value(json).unwrap()
    };
    assert_eq!(failure(&ring, &records, None), (4, IntegrityCheck::Hash));
}

#[test]
fn recomputed_hash_without_the_key_fails_the_mac_check() {
    let ring = Keyring::new(key(1));
    let mut records = log(&ring, 9);
    // An attacker rewrites entry 4 and reseals it with a key of their own.
    let attacker = Keyring::new(HmacKey::new(1, [0xee; 32]).unwrap());
    let mut chain = StreamChain::resume(
        "b",
        audit_chain::StreamHead {
            next_seq: records[4].entry.seq(),
            last_hash: *records[4].entry.prev_hash(),
        },
    );
    let forged = chain
        .seal(
            &attacker,
            &MaskingPolicy::none(),
            AuditEntry::new("b", "balance", "credit", Timestamp::EPOCH).with_amount(1_000_000),
        )
        .unwrap();
    records[4] = LogRecord::new(4, forged);
    assert_eq!(failure(&ring, &records, None), (4, IntegrityCheck::Mac));
}

#[test]
fn deleting_a_middle_entry_is_detected() {
    let ring = Keyring::new(key(1));
    let mut records = log(&ring, 9);
    records.remove(4);
    assert_eq!(failure(&ring, &records, None), (4, IntegrityCheck::Index));
    // Renumbering the rest hides the gap in log indices but not in the stream.
    for (i, r) in records.iter_mut().enumerate() {
        r.index = i as u64;
    }
    assert_eq!(
        failure(&ring, &records, None),
        (6, IntegrityCheck::Sequence)
    );
}

#[test]
fn reordering_is_detected() {
    let ring = Keyring::new(key(1));
    let mut records = log(&ring, 9);
    // Swap two entries of stream "a" (indices 3 and 6), keeping log indices in place.
    let (e3, e6) = (records[3].entry.clone(), records[6].entry.clone());
    records[3].entry = e6;
    records[6].entry = e3;
    assert_eq!(
        failure(&ring, &records, None),
        (3, IntegrityCheck::Sequence)
    );
    // Swapping two entries of different streams keeps every chain valid, but not the root.
    let mut records = log(&ring, 9);
    let cp = checkpoint(&records);
    let (e3, e4) = (records[3].entry.clone(), records[4].entry.clone());
    records[3].entry = e4;
    records[4].entry = e3;
    assert!(verify_records(&ring, &records, None).is_intact());
    assert_eq!(
        failure(&ring, &records, Some(&cp)),
        (8, IntegrityCheck::MerkleRoot)
    );
}

#[test]
fn deleting_the_tail_is_detected_only_with_a_checkpoint() {
    let ring = Keyring::new(key(1));
    let records = log(&ring, 9);
    let cp = checkpoint(&records);
    let cut = &records[..6];
    assert!(
        verify_records(&ring, cut, None).is_intact(),
        "a bare chain cannot see it"
    );
    assert_eq!(
        failure(&ring, cut, Some(&cp)),
        (6, IntegrityCheck::Truncated)
    );
    assert_eq!(
        failure(&ring, &[], Some(&cp)),
        (0, IntegrityCheck::Truncated)
    );
}

#[test]
fn rewritten_history_with_the_hmac_key_is_caught_by_the_checkpoint() {
    // The insider threat: whoever holds the HMAC key rebuilds a consistent chain.
    let ring = Keyring::new(key(1));
    let records = log(&ring, 9);
    let cp = checkpoint(&records);
    let mut rewritten = log(&ring, 9);
    let mut chains: Vec<StreamChain> = ["a", "b", "c"].into_iter().map(StreamChain::new).collect();
    for (i, r) in rewritten.iter_mut().enumerate() {
        let c = &mut chains[i % 3];
        let s = c.stream().to_owned();
        let amount = if i == 2 { 1 } else { i as u64 };
        let e = AuditEntry::new(s, "balance", "debit", Timestamp::from_unix_millis(i as u64))
            .with_amount(amount)
            .with_balances(1000, 1000 - i as u64);
        r.entry = c.seal(&ring, &MaskingPolicy::none(), e).unwrap().into();
    }
    assert!(verify_records(&ring, &rewritten, None).is_intact());
    assert_eq!(
        failure(&ring, &rewritten, Some(&cp)),
        (8, IntegrityCheck::MerkleRoot)
    );
}

#[test]
fn key_rotation_keeps_old_entries_verifiable() {
    let mut ring = Keyring::new(key(1));
    let none = MaskingPolicy::none();
    let mut chain = StreamChain::new("t");
    let mut records = Vec::new();
    for i in 0..6u64 {
        if i == 3 {
            ring.rotate(key(2)).unwrap();
        }
        let e = chain
            .seal(
                &ring,
                &none,
                AuditEntry::new("t", "e", "a", Timestamp::EPOCH),
            )
            .unwrap();
        assert_eq!(e.key_id(), if i < 3 { 1 } else { 2 });
        records.push(LogRecord::new(i, e));
    }
    assert!(verify_records(&ring, &records, None).is_intact());
    // A verifier without the retired key cannot check the old entries.
    let only_new = Keyring::new(key(2));
    assert_eq!(
        failure(&only_new, &records, None),
        (0, IntegrityCheck::UnknownKey)
    );
    // The wrong key bytes under the right id: MAC failure.
    let wrong = Keyring::new(HmacKey::new(1, [9; 32]).unwrap());
    assert_eq!(failure(&wrong, &records, None), (0, IntegrityCheck::Mac));
    // Rotating to an id already present changes nothing.
    assert!(ring.rotate(key(1)).is_err());
    assert_eq!(ring.active_id(), 2);
}

#[test]
fn checkpoint_of_size_zero_must_have_the_empty_root() {
    let ring = Keyring::new(key(1));
    let bad = Checkpoint {
        origin: "x".into(),
        size: 0,
        root: [1; 32],
    };
    assert_eq!(
        failure(&ring, &[], Some(&bad)),
        (0, IntegrityCheck::MerkleRoot)
    );
}

#[tokio::test]
async fn range_verification_checks_inside_the_range() {
    let ring = Keyring::new(key(1));
    let records = log(&ring, 30);
    let sink = MemorySink::new();
    sink.append(&records).await.unwrap();
    let r = verify_range(&sink, &ring, 10..20).await.unwrap();
    assert!(r.is_intact(), "{r:?}");
    assert_eq!((r.start, r.entries_ok), (10, 10));
    assert_eq!(r.root, None);
    // Beyond the end is clamped.
    assert_eq!(
        verify_range(&sink, &ring, 25..100)
            .await
            .unwrap()
            .entries_ok,
        5
    );

    let mut bad = records.clone();
    bad[15].entry = bad[12].entry.clone(); // a replayed entry of stream "a"
    let sink = MemorySink::new();
    sink.append(&bad).await.unwrap();
    let r = verify_range(&sink, &ring, 10..20).await.unwrap();
    let f = r.failure.unwrap();
    assert_eq!(f.index, 15);
    assert_eq!(f.stream.as_deref(), Some("a"));
    assert_eq!(f.check, IntegrityCheck::Sequence);
    assert!(f.to_string().contains("entry 15"), "{f}");
}
