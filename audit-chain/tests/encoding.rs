//! Known-answer tests for the canonical encoding, the chain hash, the MAC and the Merkle
//! leaf (expected values computed independently from the format description), and the
//! decoder's answer to bad bytes.

use audit_chain::merkle::{MerkleTree, node_hash};
use audit_chain::{
    AuditEntry, AuditError, HmacKey, Keyring, LogRecord, MaskingPolicy, SealedEntry, StreamChain,
};
use metered_clock::Timestamp;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn two_entries() -> (Keyring, SealedEntry, SealedEntry) {
    let keyring = Keyring::new(HmacKey::new(1, [0x0b; 32]).unwrap());
    let mut chain = StreamChain::new("tenant-1");
    let none = MaskingPolicy::none();
    let a = chain
        .seal(
            &keyring,
            &none,
            AuditEntry::new(
                "tenant-1",
                "balance",
                "debit",
                Timestamp::from_unix_millis(1_700_000_000_000),
            )
            .with_amount(250)
            .with_balances(1000, 750)
            .with_transaction_id("tx-1")
            .with_metadata("note", "hi"),
        )
        .unwrap();
    let b = chain
        .seal(
            &keyring,
            &none,
            AuditEntry::new(
                "tenant-1",
                "balance",
                "credit",
                Timestamp::from_unix_millis(1_700_000_000_001),
            )
            .with_success(false),
        )
        .unwrap();
    (keyring, a, b)
}

const BODY_A: &str = "010000000874656e616e742d31000000000000000000000000000000000000000000000000000000000000000000000000000000000000018bcfe568000000000762616c616e63650000000564656269740100000000000000fa0100000000000003e80100000000000002ee010000000474782d3101000000046e6f6e650000000100000001000000046e6f7465000000026869";

#[test]
fn known_answers_for_body_hash_mac_and_leaf() {
    let (_, a, b) = two_entries();
    let mut bytes = Vec::new();
    a.encode(&mut bytes);
    assert_eq!(hex(&bytes[..bytes.len() - 64]), BODY_A);
    assert_eq!(
        hex(a.entry_hash()),
        "15f5bdddca551c8d9b826b9a32837d30163a93763f5d0281396a399430d5cd2a"
    );
    assert_eq!(
        hex(a.mac()),
        "a0c6d41bd4b0eae9e721546f22dc0e397c779b4bf2958cec08cc119b1c4be7be"
    );
    assert_eq!(
        hex(&a.leaf_hash()),
        "704ea9c839dc940a3a09ae8e5d3c1d54841f4b4782bd21aa79b559634eb4d3d5"
    );
    assert_eq!(
        hex(b.entry_hash()),
        "60101647392c7288d6ad263bfa44165cb2c18b6e1a8eed1a4c53763d8aa75b90"
    );
    assert_eq!(b.prev_hash(), a.entry_hash());
    let mut tree = MerkleTree::new();
    tree.push(a.leaf_hash());
    tree.push(b.leaf_hash());
    assert_eq!(
        hex(&tree.root()),
        "e3eb00a53f7b45d19a48a684b122ee8315490ed77b87d5e97eebb41d4623ecdd"
    );
    assert_eq!(tree.root(), node_hash(&a.leaf_hash(), &b.leaf_hash()));
}

#[test]
fn same_entry_always_hashes_the_same_and_round_trips() {
    let (_, a, _) = two_entries();
    let (_, again, _) = two_entries();
    assert_eq!(a, again);
    assert_eq!(a.compute_hash(), *a.entry_hash());
    let record = LogRecord::new(41, a.clone());
    let mut bytes = Vec::new();
    record.encode(&mut bytes);
    assert_eq!(LogRecord::decode(&bytes).unwrap(), record);
    let mut only = Vec::new();
    a.encode(&mut only);
    assert_eq!(SealedEntry::decode(&only).unwrap(), a);
}

#[test]
fn json_view_shows_hex_hashes_and_round_trips() {
    let (_, a, _) = two_entries();
    let json = serde_json::to_string(&a).unwrap();
    assert!(json.contains("\"entry_hash\":\"15f5bddd"), "{json}");
    assert!(json.contains("\"stream\":\"tenant-1\""));
    let back: SealedEntry = serde_json::from_str(&json).unwrap();
    assert_eq!(back, a);
}

#[test]
fn decoding_garbage_is_a_typed_error_at_every_length() {
    let (_, a, _) = two_entries();
    let record = LogRecord::new(0, a);
    let mut bytes = Vec::new();
    record.encode(&mut bytes);
    // Every strict prefix is truncated input.
    for cut in 0..bytes.len() {
        assert!(
            matches!(
                LogRecord::decode(&bytes[..cut]),
                Err(AuditError::Decode { .. })
            ),
            "prefix of {cut} bytes"
        );
    }
    // Trailing garbage.
    let mut long = bytes.clone();
    long.push(0);
    assert!(matches!(
        LogRecord::decode(&long),
        Err(AuditError::Decode { .. })
    ));
    // Unknown version (byte 8 follows the u64 index).
    let mut v2 = bytes.clone();
    v2[8] = 2;
    assert!(matches!(
        LogRecord::decode(&v2),
        Err(AuditError::Decode { .. })
    ));
    // An option tag that is neither 0 nor 1, a huge length, invalid UTF-8: never a panic.
    for i in 0..bytes.len() {
        for v in [0xff_u8, 0x80, 0x02] {
            let mut m = bytes.clone();
            m[i] = v;
            let _ = LogRecord::decode(&m);
        }
    }
    assert!(LogRecord::decode(&[0xff; 64]).is_err());
}

#[test]
fn bad_entries_are_rejected_without_moving_the_head() {
    let keyring = Keyring::new(HmacKey::new(1, [1; 32]).unwrap());
    let none = MaskingPolicy::none();
    let mut chain = StreamChain::new("t");
    let at = Timestamp::EPOCH;
    let cases: Vec<(AuditEntry, &str)> = vec![
        (AuditEntry::new("other", "e", "a", at), "stream"),
        (
            AuditEntry::new("t", "e".repeat(1025), "a", at),
            "event_type",
        ),
        (AuditEntry::new("t", "e", "a".repeat(1025), at), "action"),
        (
            AuditEntry::new("t", "e", "a", at).with_transaction_id("x".repeat(1025)),
            "transaction_id",
        ),
        (
            AuditEntry::new("t", "e", "a", at).with_metadata("k".repeat(129), "v"),
            "metadata key",
        ),
        (
            AuditEntry::new("t", "e", "a", at).with_metadata("k", "v".repeat(16 * 1024 + 1)),
            "metadata value",
        ),
        (
            (0..65).fold(AuditEntry::new("t", "e", "a", at), |e, i| {
                e.with_metadata(format!("k{i}"), "v")
            }),
            "metadata",
        ),
    ];
    for (entry, field) in cases {
        match chain.seal(&keyring, &none, entry) {
            Err(AuditError::InvalidEntry { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected InvalidEntry({field}), got {other:?}"),
        }
        assert_eq!(chain.head().next_seq, 0);
    }
    let mut empty = StreamChain::new("");
    assert!(matches!(
        empty.seal(&keyring, &none, AuditEntry::new("", "e", "a", at)),
        Err(AuditError::InvalidEntry {
            field: "stream",
            ..
        })
    ));
}

#[test]
fn mac_matches_the_hmac_crate_for_every_key_length() {
    use hmac::{Hmac, Mac};
    for len in [32usize, 33, 48, 55, 63, 64] {
        let key: Vec<u8> = (0..len)
            .map(|i| u8::try_from((i * 7 + len) % 256).unwrap())
            .collect();
        let ring = Keyring::new(HmacKey::new(9, &key).unwrap());
        let mut chain = StreamChain::new("s");
        let sealed = chain
            .seal(
                &ring,
                &MaskingPolicy::none(),
                AuditEntry::new("s", "e", "a", Timestamp::EPOCH),
            )
            .unwrap();
        let mut reference = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).unwrap();
        reference.update(b"audit-chain/v1/mac\0");
        reference.update(sealed.entry_hash());
        let want: [u8; 32] = reference.finalize().into_bytes().into();
        assert_eq!(*sealed.mac(), want, "key of {len} bytes");
        assert!(ring.verify_mac(9, sealed.entry_hash(), &want).unwrap());
    }
}
