//! The conformance checks every `AuditSink` must pass, run against each implementation.

use audit_chain::{
    AuditEntry, AuditError, AuditSink, FileSink, HmacKey, Keyring, LogHead, LogRecord,
    MaskingPolicy, MemorySink, StreamChain, StreamHead,
};
use metered_clock::Timestamp;

fn records(n: u64) -> Vec<LogRecord> {
    let ring = Keyring::new(HmacKey::new(1, [3; 32]).unwrap());
    let mut c = StreamChain::new("s");
    (0..n)
        .map(|i| {
            let e = AuditEntry::new("s", "e", "a", Timestamp::from_unix_millis(i));
            LogRecord::new(i, c.seal(&ring, &MaskingPolicy::none(), e).unwrap())
        })
        .collect()
}

async fn conformance(sink: &dyn AuditSink) {
    let all = records(10);
    assert_eq!(sink.size().await.unwrap(), 0);
    assert!(sink.read(0, 10).await.unwrap().is_empty());
    assert_eq!(sink.load_checkpoint().await.unwrap(), None);

    sink.append(&all[..4]).await.unwrap();
    sink.append(&all[4..5]).await.unwrap();
    assert_eq!(sink.size().await.unwrap(), 5);

    // Batches that do not continue the log change nothing.
    for bad in [&all[6..8], &all[..2], &all[4..6]] {
        assert!(matches!(
            sink.append(bad).await,
            Err(AuditError::InvalidEntry { .. })
        ));
    }
    let mut gappy = all[5..8].to_vec();
    gappy.remove(1);
    assert!(sink.append(&gappy).await.is_err());
    assert_eq!(sink.size().await.unwrap(), 5);

    sink.append(&[]).await.unwrap();
    sink.append(&all[5..]).await.unwrap();
    assert_eq!(sink.read(0, 100).await.unwrap(), all);
    assert_eq!(sink.read(3, 4).await.unwrap(), all[3..7]);
    assert_eq!(sink.read(9, 4).await.unwrap(), all[9..]);
    assert!(sink.read(10, 4).await.unwrap().is_empty());
    assert!(sink.read(u64::MAX, usize::MAX).await.unwrap().is_empty());
    assert!(sink.read(2, 0).await.unwrap().is_empty());

    assert_eq!(sink.load_head().await.unwrap(), None);
    let mut head = LogHead::default();
    head.frontier.push(all[0].entry.leaf_hash());
    head.streams.insert(
        "s".into(),
        StreamHead {
            next_seq: 1,
            last_hash: *all[0].entry.entry_hash(),
        },
    );
    sink.store_head(&LogHead::default()).await.unwrap();
    sink.store_head(&head).await.unwrap();
    assert_eq!(sink.load_head().await.unwrap(), Some(head));

    sink.store_checkpoint("first\n").await.unwrap();
    sink.store_checkpoint("second\n").await.unwrap();
    assert_eq!(
        sink.load_checkpoint().await.unwrap().as_deref(),
        Some("second\n")
    );
}

#[tokio::test]
async fn memory_sink_conforms() {
    conformance(&MemorySink::new()).await;
}

#[tokio::test]
async fn file_sink_conforms_and_keeps_everything_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, _) = FileSink::open(dir.path()).unwrap();
    conformance(&sink).await;
    drop(sink);
    let (sink, recovery) = FileSink::open(dir.path()).unwrap();
    assert_eq!(recovery.records, 10);
    assert_eq!(sink.read(0, 100).await.unwrap(), records(10));
    assert_eq!(
        sink.load_checkpoint().await.unwrap().as_deref(),
        Some("second\n")
    );
}
