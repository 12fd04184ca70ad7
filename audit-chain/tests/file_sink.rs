//! The file sink: crash recovery at every byte offset of the last batch, corruption that
//! is reported and not repaired, segment rolling, and the flip-every-byte property.

use std::fs;
use std::path::{Path, PathBuf};

use audit_chain::merkle::MerkleTree;
use audit_chain::{
    AuditEntry, AuditError, Checkpoint, FileSink, FileSinkOptions, HmacKey, IntegrityCheck,
    Keyring, LogRecord, MaskingPolicy, StreamChain, scan_dir, verify_dir, verify_records,
};
use metered_clock::Timestamp;

fn keyring() -> Keyring {
    Keyring::new(HmacKey::new(1, [7; 32]).unwrap())
}

fn records(ring: &Keyring, n: u64) -> Vec<LogRecord> {
    let mut chains = [StreamChain::new("a"), StreamChain::new("b")];
    (0..n)
        .map(|i| {
            let c = &mut chains[(i % 2) as usize];
            let s = c.stream().to_owned();
            let e = AuditEntry::new(s, "balance", "debit", Timestamp::from_unix_millis(i))
                .with_amount(i * 10)
                .with_metadata("ip", "192.0.2.1");
            LogRecord::new(i, c.seal(ring, &MaskingPolicy::standard(), e).unwrap())
        })
        .collect()
}

fn checkpoint(records: &[LogRecord]) -> Checkpoint {
    let mut t = MerkleTree::new();
    for r in records {
        t.push(r.entry.leaf_hash());
    }
    Checkpoint {
        origin: "test".into(),
        size: t.size(),
        root: t.root(),
    }
}

fn only_segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs.pop().unwrap()
}

#[test]
fn crash_at_every_byte_of_the_last_batch_keeps_every_acknowledged_entry() {
    let ring = keyring();
    let all = records(&ring, 12);
    let dir = tempfile::tempdir().unwrap();
    let (sink, _) = FileSink::open(dir.path()).unwrap();
    sink.append_blocking(&all[..4]).unwrap();
    sink.append_blocking(&all[4..8]).unwrap();
    let seg = only_segment(dir.path());
    let acked_len = usize::try_from(fs::metadata(&seg).unwrap().len()).unwrap();
    // The size recorded as durable when the crash hits the third batch: 8 records.
    let durable = dir.path().join("durable");
    let durable_at_8 = fs::read(&durable).unwrap();
    sink.append_blocking(&all[8..]).unwrap();
    drop(sink);
    let full = fs::read(&seg).unwrap();
    // Frame boundaries inside the last batch.
    let mut boundaries = vec![acked_len];
    {
        let mut pos = acked_len;
        while pos < full.len() {
            let len = u32::from_be_bytes(full[pos..pos + 4].try_into().unwrap()) as usize;
            pos += 4 + len + 8;
            boundaries.push(pos);
        }
    }
    assert_eq!(boundaries.len(), 5);
    for cut in acked_len..=full.len() {
        fs::write(&seg, &full[..cut]).unwrap();
        fs::write(&durable, &durable_at_8).unwrap();
        let (sink, recovery) = FileSink::open(dir.path()).unwrap();
        let complete = boundaries.iter().filter(|&&b| b <= cut).count() - 1;
        let kept = 8 + complete;
        assert_eq!(recovery.records, kept as u64, "cut at {cut}");
        assert_eq!(
            recovery.torn_bytes_cut,
            (cut - boundaries[complete]) as u64,
            "cut at {cut}"
        );
        let read = sink.read_blocking(0, 100).unwrap();
        assert_eq!(read, all[..kept], "cut at {cut}");
        assert!(verify_records(&ring, &read, Some(&checkpoint(&all[..8]))).is_intact());
        // The log continues where it was cut (checked on a sample of cuts: each costs fsyncs).
        if !(boundaries.contains(&cut) || cut % 37 == 0) {
            continue;
        }
        sink.append_blocking(&all[kept..]).unwrap();
        assert_eq!(sink.read_blocking(0, 100).unwrap(), all);
        drop(sink);
        let (_, again) = FileSink::open(dir.path()).unwrap();
        assert_eq!((again.records, again.torn_bytes_cut), (12, 0));
    }
}

#[test]
fn torn_header_of_a_new_segment_is_recovered() {
    let ring = keyring();
    let all = records(&ring, 40);
    let dir = tempfile::tempdir().unwrap();
    let opts = FileSinkOptions {
        segment_max_bytes: 4096,
    };
    let (sink, _) = FileSink::open_with(dir.path(), opts).unwrap();
    for chunk in all.chunks(8) {
        sink.append_blocking(chunk).unwrap();
    }
    drop(sink);
    let segs = fs::read_dir(dir.path()).unwrap().count();
    assert!(segs >= 2, "expected several segments, found {segs}");
    let scanned = scan_dir(dir.path()).unwrap();
    assert_eq!(scanned.records, all);
    // A crash right after a new segment file was created, mid-header.
    let next = dir.path().join(format!("{:020}.seg", 40));
    fs::write(&next, b"ACHN").unwrap();
    let (sink, recovery) = FileSink::open_with(dir.path(), opts).unwrap();
    assert_eq!((recovery.records, recovery.torn_bytes_cut), (40, 4));
    let more = records(&ring, 44);
    sink.append_blocking(&more[40..]).unwrap();
    drop(sink);
    let (sink, _) = FileSink::open_with(dir.path(), opts).unwrap();
    assert_eq!(sink.len(), 44);
    assert_eq!(sink.read_blocking(30, 20).unwrap(), more[30..]);
    let verified = verify_dir(dir.path(), &ring, Some(&checkpoint(&more))).unwrap();
    assert!(verified.report.is_intact(), "{verified:?}");
}

#[test]
fn damage_other_than_a_torn_tail_is_reported_and_left_alone() {
    let ring = keyring();
    let all = records(&ring, 8);
    let dir = tempfile::tempdir().unwrap();
    let (sink, _) = FileSink::open(dir.path()).unwrap();
    sink.append_blocking(&all).unwrap();
    drop(sink);
    let seg = only_segment(dir.path());
    let good = fs::read(&seg).unwrap();
    for at in [3usize, 20, 40, good.len() / 2, good.len() - 20] {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        fs::write(&seg, &bad).unwrap();
        assert!(
            matches!(FileSink::open(dir.path()), Err(AuditError::Corrupt { .. })),
            "byte {at}"
        );
        assert_eq!(
            fs::read(&seg).unwrap(),
            bad,
            "recovery must not touch a corrupt log"
        );
    }
    // A zero-filled tail (pre-allocated blocks after a power cut) counts as torn.
    let mut zeros = good.clone();
    zeros.extend_from_slice(&[0; 100]);
    fs::write(&seg, &zeros).unwrap();
    let (_, r) = FileSink::open(dir.path()).unwrap();
    assert_eq!((r.records, r.torn_bytes_cut), (8, 100));
    // A missing segment in the middle is a gap.
    fs::write(dir.path().join(format!("{:020}.seg", 50)), b"ACHNSEG1").unwrap();
    assert!(matches!(
        FileSink::open(dir.path()),
        Err(AuditError::Corrupt { .. })
    ));
}

#[test]
fn batches_must_continue_the_log() {
    let ring = keyring();
    let all = records(&ring, 6);
    let dir = tempfile::tempdir().unwrap();
    let (sink, _) = FileSink::open(dir.path()).unwrap();
    assert!(matches!(
        sink.append_blocking(&all[1..3]),
        Err(AuditError::InvalidEntry { field: "index", .. })
    ));
    let mut gappy = all[..3].to_vec();
    gappy.remove(1);
    assert!(sink.append_blocking(&gappy).is_err());
    assert!(sink.is_empty());
    sink.append_blocking(&all[..3]).unwrap();
    assert!(sink.append_blocking(&all[..3]).is_err());
    sink.append_blocking(&[]).unwrap();
    assert_eq!(sink.len(), 3);
    assert!(
        FileSink::open_with(
            dir.path(),
            FileSinkOptions {
                segment_max_bytes: 10
            }
        )
        .is_err()
    );
}

/// Flip every byte of a small log on disk: verification fails at or before the entry that
/// holds the byte (the segment header counts as entry 0; damage in the last frame that
/// makes it look torn shows up as truncation against the checkpoint).
#[test]
fn flipping_any_byte_on_disk_fails_verification_at_or_before_that_entry() {
    let ring = keyring();
    let all = records(&ring, 6);
    let cp = checkpoint(&all);
    let dir = tempfile::tempdir().unwrap();
    let (sink, _) = FileSink::open(dir.path()).unwrap();
    sink.append_blocking(&all[..3]).unwrap();
    sink.append_blocking(&all[3..]).unwrap();
    drop(sink);
    let seg = only_segment(dir.path());
    let good = fs::read(&seg).unwrap();
    let mut frame_end = Vec::new();
    let mut pos = 16;
    while pos < good.len() {
        let len = u32::from_be_bytes(good[pos..pos + 4].try_into().unwrap()) as usize;
        pos += 4 + len + 8;
        frame_end.push(pos);
    }
    assert!(
        verify_dir(dir.path(), &ring, Some(&cp))
            .unwrap()
            .report
            .is_intact()
    );
    for i in 0..good.len() {
        let entry = frame_end.iter().position(|&end| i < end).unwrap() as u64;
        let mut bad = good.clone();
        bad[i] ^= 0xff;
        fs::write(&seg, &bad).unwrap();
        let result = verify_dir(dir.path(), &ring, Some(&cp)).unwrap();
        let f = result
            .report
            .failure
            .unwrap_or_else(|| panic!("flip at byte {i} went unnoticed"));
        assert!(
            f.index <= entry,
            "byte {i} of entry {entry}: failure at {}",
            f.index
        );
    }
}

/// The same with an attacker who recomputes frame checksums: the chain itself (hash, MAC,
/// index, sequence, link) still catches every flipped byte at or before its entry.
#[test]
fn flipping_any_byte_of_any_record_fails_at_or_before_that_entry() {
    let ring = keyring();
    let all = records(&ring, 5);
    for k in 0..all.len() {
        let mut bytes = Vec::new();
        all[k].encode(&mut bytes);
        for j in 0..bytes.len() {
            let mut b = bytes.clone();
            b[j] ^= 0xff;
            let Ok(changed) = LogRecord::decode(&b) else {
                continue; // undecodable: rejected as Decode at entry k
            };
            let mut log = all.clone();
            log[k] = changed;
            let report = verify_records(&ring, &log, None);
            let f = report
                .failure
                .unwrap_or_else(|| panic!("flip at byte {j} of entry {k} went unnoticed"));
            assert!(f.index <= k as u64);
            assert_ne!(f.check, IntegrityCheck::Truncated);
        }
    }
}

/// Byte offsets where each frame of a segment starts, and the segment's length.
fn frame_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut pos = 16;
    while pos < bytes.len() {
        starts.push(pos);
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        pos += 4 + len + 8;
    }
    assert_eq!(pos, bytes.len());
    starts
}

/// Every file of the directory with its bytes (segments, durable size, head, checkpoint).
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let b = fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    files.sort();
    files
}

/// Opening, scanning and verifying a damaged directory: each reports corruption, and none
/// changes a byte of any file.
fn assert_reported_and_untouched(dir: &Path, ring: &Keyring, what: &str) {
    let before = snapshot(dir);
    let opened = FileSink::open(dir);
    assert!(
        matches!(opened, Err(AuditError::Corrupt { .. })),
        "{what}: open gave {:?}",
        opened.map(|(_, r)| r)
    );
    assert!(
        matches!(scan_dir(dir), Err(AuditError::Corrupt { .. })),
        "{what}: scan"
    );
    let verified = verify_dir(dir, ring, None).unwrap();
    assert!(!verified.report.is_intact(), "{what}: verified intact");
    assert_eq!(verified.torn_bytes, 0, "{what}");
    assert_eq!(snapshot(dir), before, "{what}: files changed");
}

/// One flipped bit in the length field of any frame, the last one included, is damage to
/// an acknowledged entry: reported, never cut as if it were a torn write.
#[test]
fn a_flipped_length_bit_in_any_frame_of_the_last_segment_is_reported_and_nothing_is_cut() {
    let ring = keyring();
    let all = records(&ring, 12);
    let dir = tempfile::tempdir().unwrap();
    let (sink, _) = FileSink::open(dir.path()).unwrap();
    for batch in all.chunks(4) {
        sink.append_blocking(batch).unwrap();
    }
    drop(sink);
    let seg = only_segment(dir.path());
    let good = fs::read(&seg).unwrap();
    let starts = frame_starts(&good);
    assert_eq!(starts.len(), 12);
    for (k, &start) in starts.iter().enumerate() {
        for bit in 0..32 {
            let mut bad = good.clone();
            bad[start + bit / 8] ^= 0x80 >> (bit % 8);
            fs::write(&seg, &bad).unwrap();
            assert_reported_and_untouched(dir.path(), &ring, &format!("frame {k} bit {bit}"));
        }
    }
    fs::write(&seg, &good).unwrap();
    let (_, recovery) = FileSink::open(dir.path()).unwrap();
    assert_eq!((recovery.records, recovery.torn_bytes_cut), (12, 0));
}

#[test]
fn a_bad_checksum_anywhere_is_reported_and_nothing_is_cut() {
    let ring = keyring();
    let all = records(&ring, 9);
    let dir = tempfile::tempdir().unwrap();
    let (sink, _) = FileSink::open(dir.path()).unwrap();
    for batch in all.chunks(3) {
        sink.append_blocking(batch).unwrap();
    }
    drop(sink);
    let seg = only_segment(dir.path());
    let good = fs::read(&seg).unwrap();
    let starts = frame_starts(&good);
    let ends: Vec<usize> = starts[1..].iter().copied().chain([good.len()]).collect();
    for (k, end) in ends.iter().enumerate() {
        for at in [end - 8, end - 1] {
            let mut bad = good.clone();
            bad[at] ^= 1;
            fs::write(&seg, &bad).unwrap();
            assert_reported_and_untouched(dir.path(), &ring, &format!("check of frame {k}"));
        }
    }
}

/// Bytes after the last frame that cannot be the start of a frame (a length over the
/// limit) are not a torn write: reported, not cut.
#[test]
fn garbage_after_the_last_frame_is_reported_and_not_cut() {
    let ring = keyring();
    let all = records(&ring, 6);
    let dir = tempfile::tempdir().unwrap();
    let (sink, _) = FileSink::open(dir.path()).unwrap();
    sink.append_blocking(&all[..3]).unwrap();
    sink.append_blocking(&all[3..]).unwrap();
    drop(sink);
    let seg = only_segment(dir.path());
    let good = fs::read(&seg).unwrap();
    let garbage: [&[u8]; 4] = [
        b"garbage after the end",
        &[0xff; 4],
        &[0xff; 300],
        &[0x7f, 0xff, 0xff, 0xff, 1, 2, 3],
    ];
    for tail in garbage {
        let mut bad = good.clone();
        bad.extend_from_slice(tail);
        fs::write(&seg, &bad).unwrap();
        assert_reported_and_untouched(dir.path(), &ring, &format!("garbage {tail:?}"));
    }
}

/// A log cut at a frame boundary below the size recorded as durable lost acknowledged
/// entries: the sink refuses to open it and changes nothing.
#[test]
fn a_log_shorter_than_its_durable_size_is_refused() {
    let ring = keyring();
    let all = records(&ring, 8);
    let dir = tempfile::tempdir().unwrap();
    let (sink, _) = FileSink::open(dir.path()).unwrap();
    sink.append_blocking(&all[..4]).unwrap();
    sink.append_blocking(&all[4..]).unwrap();
    drop(sink);
    let seg = only_segment(dir.path());
    let good = fs::read(&seg).unwrap();
    let starts = frame_starts(&good);
    for (k, &cut) in starts.iter().enumerate() {
        fs::write(&seg, &good[..cut]).unwrap();
        let before = snapshot(dir.path());
        let opened = FileSink::open(dir.path());
        assert!(
            matches!(
                opened,
                Err(AuditError::Truncated {
                    found,
                    recorded: 8,
                    recorded_by: "durable size",
                }) if found == k as u64
            ),
            "cut before frame {k}: {:?}",
            opened.map(|(_, r)| r)
        );
        let verified = verify_dir(dir.path(), &ring, None).unwrap();
        let failure = verified.report.failure.expect("a truncation");
        assert_eq!(
            (failure.index, failure.check),
            (k as u64, IntegrityCheck::Truncated)
        );
        assert_eq!(snapshot(dir.path()), before, "cut before frame {k}");
    }
}

/// The durable size survives a torn update of one of its two slots; with both slots
/// damaged the sink refuses to guess. A log without the file (an older version) opens,
/// cuts a torn tail as before, and gets the file.
#[test]
fn the_durable_size_survives_a_torn_slot_and_refuses_when_both_are_bad() {
    let ring = keyring();
    let all = records(&ring, 6);
    let dir = tempfile::tempdir().unwrap();
    let (sink, _) = FileSink::open(dir.path()).unwrap();
    sink.append_blocking(&all[..3]).unwrap();
    sink.append_blocking(&all[3..]).unwrap();
    drop(sink);
    let durable = dir.path().join("durable");
    let good = fs::read(&durable).unwrap();
    assert_eq!(good.len(), 48);
    let seg = only_segment(dir.path());
    let log = fs::read(&seg).unwrap();
    // The newer slot (6 records) torn: the older one (3) counts, so a cut to 3 records
    // would be accepted, and the full log opens.
    for slot in 0..2 {
        let mut bad = good.clone();
        bad[slot * 24 + 12] ^= 1;
        fs::write(&durable, &bad).unwrap();
        let (_, r) = FileSink::open(dir.path()).unwrap();
        assert_eq!((r.records, r.torn_bytes_cut), (6, 0), "slot {slot}");
        assert!(scan_dir(dir.path()).is_ok());
    }
    let mut bad = good.clone();
    bad[12] ^= 1;
    bad[36] ^= 1;
    fs::write(&durable, &bad).unwrap();
    assert!(matches!(
        FileSink::open(dir.path()),
        Err(AuditError::Corrupt { .. })
    ));
    assert_eq!(fs::read(&durable).unwrap(), bad);
    // No file at all: the torn-tail rule of older versions.
    fs::remove_file(&durable).unwrap();
    let mut torn = log.clone();
    torn.extend_from_slice(&log[16..40]);
    fs::write(&seg, &torn).unwrap();
    let (_, r) = FileSink::open(dir.path()).unwrap();
    assert_eq!((r.records, r.torn_bytes_cut), (6, 24));
    assert_eq!(fs::read(&seg).unwrap(), log);
    // The file is back and covers the recovered log.
    fs::write(&seg, &log[..log.len() - 5]).unwrap();
    assert!(matches!(
        FileSink::open(dir.path()),
        Err(AuditError::Corrupt { .. })
    ));
}
