//! Golden tests: the exact bytes and JSON of everything audit-chain persists that the
//! known-answer tests in `encoding.rs` (entry body, hashes, MAC, leaf) and `checkpoint.rs`
//! (the signed-note format) do not already pin: a whole log record, the JSON view of a
//! sealed entry and of a stream head, a file-sink segment, and the `checkpoint` and `head`
//! files stored beside a file log. A change to any of them breaks logs already on disk.

use std::path::Path;
use std::sync::Arc;

use audit_chain::{
    AuditEntry, AuditWriter, FileSink, HmacKey, Keyring, LogHead, LogRecord, MaskingPolicy,
    NoteSigner, SealedEntry, StreamChain, StreamHead, WriterConfig,
};
use base64::Engine as _;
use metered_clock::{ManualClock, Timestamp};
use sha2::{Digest, Sha256};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The two entries of `encoding.rs`: their body, hashes and MAC are pinned there.
fn two_entries() -> (SealedEntry, SealedEntry) {
    let keyring = Keyring::new(HmacKey::new(1, [0x0b; 32]).unwrap());
    let mut chain = StreamChain::new("tenant-1");
    let none = MaskingPolicy::none();
    let at = |ms: u64| Timestamp::from_unix_millis(1_700_000_000_000 + ms);
    let a = AuditEntry::new("tenant-1", "balance", "debit", at(0))
        .with_amount(250)
        .with_balances(1000, 750)
        .with_transaction_id("tx-1")
        .with_metadata("note", "hi");
    let b = AuditEntry::new("tenant-1", "balance", "credit", at(1)).with_success(false);
    let a = chain.seal(&keyring, &none, a).unwrap();
    let b = chain.seal(&keyring, &none, b).unwrap();
    (a, b)
}

fn encode(record: &LogRecord) -> Vec<u8> {
    let mut out = Vec::new();
    record.encode(&mut out);
    out
}

const ENTRY_HASH_A: &str = "15f5bdddca551c8d9b826b9a32837d30163a93763f5d0281396a399430d5cd2a";
const MAC_A: &str = "a0c6d41bd4b0eae9e721546f22dc0e397c779b4bf2958cec08cc119b1c4be7be";
const RECORD_A: &str = concat!(
    "0000000000000029010000000874656e616e742d310000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000018bcfe568000000000762616c616e63650000000564656269",
    "740100000000000000fa0100000000000003e80100000000000002ee010000000474782d3101000000046e6f",
    "6e650000000100000001000000046e6f746500000002686915f5bdddca551c8d9b826b9a32837d30163a9376",
    "3f5d0281396a399430d5cd2aa0c6d41bd4b0eae9e721546f22dc0e397c779b4bf2958cec08cc119b1c4be7be",
);
const JSON_A: &str = r#"{"entry":{"stream":"tenant-1","event_type":"balance","action":"debit","amount":250,"balance_before":1000,"balance_after":750,"transaction_id":"tx-1","success":true,"metadata":{"note":"hi"},"timestamp":1700000000000},"seq":0,"prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","policy_id":"none","key_id":1,"entry_hash":"15f5bdddca551c8d9b826b9a32837d30163a93763f5d0281396a399430d5cd2a","mac":"a0c6d41bd4b0eae9e721546f22dc0e397c779b4bf2958cec08cc119b1c4be7be"}"#;
const SEGMENT: &str = concat!(
    "4143484e534547310000000000000000000000dc0000000000000000010000000874656e616e742d31000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000018bcfe568",
    "000000000762616c616e63650000000564656269740100000000000000fa0100000000000003e80100000000",
    "000002ee010000000474782d3101000000046e6f6e650000000100000001000000046e6f7465000000026869",
    "15f5bdddca551c8d9b826b9a32837d30163a93763f5d0281396a399430d5cd2aa0c6d41bd4b0eae9e721546f",
    "22dc0e397c779b4bf2958cec08cc119b1c4be7be69b3c4353faee703000000af000000000000000101000000",
    "0874656e616e742d31000000000000000115f5bdddca551c8d9b826b9a32837d30163a93763f5d0281396a39",
    "9430d5cd2a0000018bcfe568010000000762616c616e6365000000066372656469740000000000000000046e",
    "6f6e65000000010000000060101647392c7288d6ad263bfa44165cb2c18b6e1a8eed1a4c53763d8aa75b907b",
    "6ff6ae802e3eac43382bb04af5e58359778d394073f4a709d8e57c0fe871900ea7ebf9a6a3d13e",
);
/// The checkpoint note of the two entries signed with key seed `[42; 32]` (Ed25519 is
/// deterministic): body, blank line, `— <name> base64(key hash ‖ signature)`.
const CHECKPOINT_NOTE: &str = concat!(
    "audit.example/golden\n2\n4+sApT97RdGaSKaEsSLugxVJDtd7h9Xpfuu0HUYj7N0=\n",
    "\n",
    "— audit.example Ahe8mLt6wsSSF6JFNT3OEV+yHjNJkvb8FbxsJMkGWKutqwx+uzM5Gua5R3jU9xHsjWY5oTDLNZJ7YkSJBv5OSvZhHAo=\n",
);
const HEAD: &str = concat!(
    "4143484e48454144000000280000000000000002e3eb00a53f7b45d19a48a684b122ee8315490ed77b87d5e9",
    "7eebb41d4623ecdd00000000000000010000000874656e616e742d31000000000000000260101647392c7288",
    "d6ad263bfa44165cb2c18b6e1a8eed1a4c53763d8aa75b907aae408378838270ac67ffa402483948ab702065",
    "5d6f7106e1fde0b122dd3fbf",
);

#[test]
fn a_log_record_is_the_index_then_the_sealed_entry() {
    let (a, _) = two_entries();
    let bytes = encode(&LogRecord::new(41, a.clone()));
    assert_eq!(hex(&bytes), RECORD_A);
    // u64 BE index ‖ sealed entry, which ends with entry hash ‖ MAC.
    let mut entry = Vec::new();
    a.encode(&mut entry);
    assert_eq!(bytes[..8], 41u64.to_be_bytes());
    assert_eq!(bytes[8..], entry[..]);
    assert_eq!(
        hex(&entry[entry.len() - 64..]),
        format!("{ENTRY_HASH_A}{MAC_A}")
    );
}

#[test]
fn json_views_of_a_sealed_entry_and_a_stream_head() {
    let (a, _) = two_entries();
    assert_eq!(serde_json::to_string(&a).unwrap(), JSON_A);
    let head = StreamHead {
        next_seq: 2,
        last_hash: [0xab; 32],
    };
    assert_eq!(
        serde_json::to_string(&head).unwrap(),
        format!("{{\"next_seq\":2,\"last_hash\":\"{}\"}}", "ab".repeat(32))
    );
}

#[test]
fn a_file_sink_segment_is_a_header_then_checked_frames() {
    let (a, b) = two_entries();
    let records = [LogRecord::new(0, a), LogRecord::new(1, b)];
    let dir = tempfile::tempdir().unwrap();
    let (sink, _) = FileSink::open(dir.path()).unwrap();
    sink.append_blocking(&records).unwrap();
    let bytes = std::fs::read(dir.path().join("00000000000000000000.seg")).unwrap();
    assert_eq!(hex(&bytes), SEGMENT);
    // Rebuilt from the format description: `ACHNSEG1` ‖ u64 BE first index, then per record
    // u32 BE length ‖ record ‖ SHA-256("audit-chain/v1/frame\0" ‖ length ‖ record)[..8].
    let mut want = b"ACHNSEG1".to_vec();
    want.extend_from_slice(&0u64.to_be_bytes());
    for r in &records {
        let record = encode(r);
        let len = u32::try_from(record.len()).unwrap().to_be_bytes();
        let check = Sha256::new()
            .chain_update(b"audit-chain/v1/frame\0")
            .chain_update(len)
            .chain_update(&record)
            .finalize();
        want.extend_from_slice(&len);
        want.extend_from_slice(&record);
        want.extend_from_slice(&check[..8]);
    }
    assert_eq!(bytes, want);
}

async fn write_two(dir: &Path, signer: Option<NoteSigner>) {
    let (a, b) = two_entries();
    let (sink, _) = FileSink::open(dir).unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp::EPOCH));
    let config = WriterConfig::builder("audit.example/golden")
        .build()
        .unwrap();
    let writer = AuditWriter::open(Arc::new(sink), config, clock, signer)
        .await
        .unwrap();
    writer.append(a).await.unwrap();
    writer.append(b).await.unwrap();
    writer.close().await.unwrap();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn the_checkpoint_and_head_files_beside_a_file_log() {
    let unsigned = tempfile::tempdir().unwrap();
    runtime().block_on(write_two(unsigned.path(), None));
    // The root of the two entries, pinned in hex in `encoding.rs`.
    let root = "4+sApT97RdGaSKaEsSLugxVJDtd7h9Xpfuu0HUYj7N0=";
    assert_eq!(
        hex(&base64::engine::general_purpose::STANDARD
            .decode(root)
            .unwrap()),
        "e3eb00a53f7b45d19a48a684b122ee8315490ed77b87d5e97eebb41d4623ecdd"
    );
    assert_eq!(
        std::fs::read_to_string(unsigned.path().join("checkpoint")).unwrap(),
        format!("audit.example/golden\n2\n{root}\n")
    );
    let head = std::fs::read(unsigned.path().join("head")).unwrap();
    assert_eq!(hex(&head), HEAD);
    // `ACHNHEAD` ‖ u32 frontier length ‖ frontier (u64 size ‖ its subtree roots: here the
    // one root of two leaves) ‖ u64 stream count ‖ (u32 length ‖ stream ‖ u64 next seq ‖
    // last entry hash)* ‖ SHA-256 of all that.
    let mut want = b"ACHNHEAD".to_vec();
    want.extend_from_slice(&40u32.to_be_bytes());
    want.extend_from_slice(&2u64.to_be_bytes());
    want.extend_from_slice(&hex_decode(
        "e3eb00a53f7b45d19a48a684b122ee8315490ed77b87d5e97eebb41d4623ecdd",
    ));
    want.extend_from_slice(&1u64.to_be_bytes());
    want.extend_from_slice(&8u32.to_be_bytes());
    want.extend_from_slice(b"tenant-1");
    want.extend_from_slice(&2u64.to_be_bytes());
    want.extend_from_slice(&hex_decode(
        "60101647392c7288d6ad263bfa44165cb2c18b6e1a8eed1a4c53763d8aa75b90",
    ));
    let check = Sha256::digest(&want);
    want.extend_from_slice(&check);
    assert_eq!(head, want);
    assert_eq!(LogHead::from_bytes(&head).unwrap().size(), 2);

    let signed = tempfile::tempdir().unwrap();
    let signer = NoteSigner::new("audit.example", [42; 32]).unwrap();
    runtime().block_on(write_two(signed.path(), Some(signer)));
    assert_eq!(
        std::fs::read_to_string(signed.path().join("checkpoint")).unwrap(),
        CHECKPOINT_NOTE
    );
    assert_eq!(std::fs::read(signed.path().join("head")).unwrap(), head);
}
