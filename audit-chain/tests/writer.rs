//! The batching writer and the entry-level log: concurrency across streams, durability
//! acknowledgements, backpressure, failed writes, ordering errors, checkpoints, restart.

// Tests drive the writer like an application: they spawn tasks and wait on tokio's timer.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use audit_chain::merkle::{verify_consistency, verify_inclusion};
use audit_chain::{
    AuditEntry, AuditError, AuditLog, AuditSink, AuditTrail, AuditWriter, FileSink, HmacKey,
    Keyring, LogRecord, MaskingPolicy, MemorySink, NoteSigner, NoteVerifier, StreamChain,
    WriterConfig, verify_dir, verify_sink,
};
use metered_clock::{Clock, ManualClock, Timestamp};
use tokio::sync::Semaphore;

fn clock() -> Arc<dyn Clock> {
    Arc::new(ManualClock::new(Timestamp::from_unix_millis(
        1_700_000_000_000,
    )))
}

fn ring() -> Keyring {
    Keyring::new(HmacKey::new(1, [4; 32]).unwrap())
}

fn entry(stream: &str, i: u64) -> AuditEntry {
    AuditEntry::new(stream, "balance", "debit", Timestamp::from_unix_millis(i)).with_amount(i)
}

/// A sink that fails chosen appends and can be held shut (to fill the writer's buffer).
#[derive(Debug)]
struct TestSink {
    inner: MemorySink,
    fail_on: Vec<usize>,
    calls: AtomicUsize,
    gate: Semaphore,
}

impl TestSink {
    fn new(fail_on: Vec<usize>, open: bool) -> Self {
        TestSink {
            inner: MemorySink::new(),
            fail_on,
            calls: AtomicUsize::new(0),
            gate: Semaphore::new(if open { Semaphore::MAX_PERMITS } else { 0 }),
        }
    }
}

#[async_trait]
impl AuditSink for TestSink {
    async fn append(&self, records: &[LogRecord]) -> Result<(), AuditError> {
        let _permit = self.gate.acquire().await.unwrap();
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail_on.contains(&n) {
            return Err(AuditError::Io {
                context: "injected".into(),
                source: Arc::new(std::io::Error::other("disk full")),
            });
        }
        self.inner.append(records).await
    }
    async fn read(&self, start: u64, limit: usize) -> Result<Vec<LogRecord>, AuditError> {
        self.inner.read(start, limit).await
    }
    async fn size(&self) -> Result<u64, AuditError> {
        self.inner.size().await
    }
    async fn store_checkpoint(&self, note: &str) -> Result<(), AuditError> {
        self.inner.store_checkpoint(note).await
    }
    async fn load_checkpoint(&self) -> Result<Option<String>, AuditError> {
        self.inner.load_checkpoint().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_append_in_parallel_and_every_entry_is_durable_once() {
    let sink = Arc::new(MemorySink::new());
    let config = WriterConfig::builder("test/log")
        .batch_max(16)
        .build()
        .unwrap();
    let writer = AuditWriter::open(sink.clone(), config, clock(), None)
        .await
        .unwrap();
    let log = Arc::new(AuditLog::new(
        writer.clone(),
        ring(),
        MaskingPolicy::standard(),
    ));
    let mut tasks = Vec::new();
    for t in 0..4 {
        let log = Arc::clone(&log);
        tasks.push(tokio::spawn(async move {
            let stream = format!("tenant-{t}");
            let mut out = Vec::new();
            for i in 0..40 {
                out.push(log.record(entry(&stream, i)).await.unwrap());
            }
            out
        }));
    }
    let mut indices = Vec::new();
    for t in tasks {
        let appended = t.await.unwrap();
        for (i, a) in appended.iter().enumerate() {
            assert_eq!(a.seq, i as u64);
        }
        indices.extend(appended.iter().map(|a| a.index.unwrap()));
    }
    indices.sort_unstable();
    assert_eq!(indices, (0..160).collect::<Vec<_>>());
    let cp = writer.flush().await.unwrap();
    assert_eq!(cp.size, 160);
    let report = verify_sink(sink.as_ref(), &ring(), Some(&cp))
        .await
        .unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.streams, 4);
    // Every entry has an inclusion proof against the checkpoint.
    for r in sink.snapshot().iter().step_by(17) {
        let proof = writer.inclusion_proof(r.index, cp.size).unwrap();
        verify_inclusion(&r.entry.leaf_hash(), r.index, cp.size, &proof, &cp.root).unwrap();
    }
}

#[tokio::test]
async fn a_full_buffer_pushes_back_and_memory_stays_bounded() {
    let sink = Arc::new(TestSink::new(vec![], false));
    let config = WriterConfig::builder("test/log")
        .batch_max(2)
        .buffer_max(4)
        .build()
        .unwrap();
    let writer = AuditWriter::open(sink.clone(), config, clock(), None)
        .await
        .unwrap();
    let keyring = ring();
    let mut chain = StreamChain::new("t");
    let mut receipts = Vec::new();
    let mut refused = None;
    for i in 0..20 {
        let sealed = chain
            .seal(&keyring, &MaskingPolicy::none(), entry("t", i))
            .unwrap();
        match writer.try_enqueue(sealed) {
            Ok(r) => receipts.push(r),
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
        tokio::task::yield_now().await;
    }
    let (at, err) = refused.expect("the buffer never filled");
    assert!(matches!(err, AuditError::Backpressure { capacity: 4 }));
    assert!(err.is_retryable());
    // At most one batch in flight plus a full buffer.
    assert!(at <= 2 + 4, "accepted {at} entries");
    assert_eq!(
        writer.size(),
        0,
        "nothing is durable while the sink is shut"
    );
    sink.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    for (i, r) in receipts.into_iter().enumerate() {
        assert_eq!(r.durable().await.unwrap(), i as u64);
    }
    assert_eq!(writer.size(), at);
}

#[tokio::test]
async fn a_failed_write_reports_to_every_waiter_and_changes_nothing() {
    let sink = Arc::new(TestSink::new(vec![1], true));
    let config = WriterConfig::builder("test/log").build().unwrap();
    let writer = AuditWriter::open(sink.clone(), config, clock(), None)
        .await
        .unwrap();
    let log = AuditLog::new(writer.clone(), ring(), MaskingPolicy::none());
    log.record(entry("t", 0)).await.unwrap();
    let root = writer.root();
    let err = log.record(entry("t", 1)).await.unwrap_err();
    assert!(matches!(err, AuditError::Io { .. }) && err.is_retryable());
    assert_eq!(writer.size(), 1);
    assert_eq!(writer.root(), root);
    // The stream was rolled back: the retry gets the same sequence number.
    let again = log.record(entry("t", 1)).await.unwrap();
    assert_eq!((again.index, again.seq), (Some(1), 1));
    let cp = writer.flush().await.unwrap();
    assert!(
        verify_sink(sink.as_ref(), &ring(), Some(&cp))
            .await
            .unwrap()
            .is_intact()
    );
}

#[tokio::test]
async fn entries_must_extend_their_stream() {
    let sink = Arc::new(MemorySink::new());
    let writer = AuditWriter::open(
        sink.clone(),
        WriterConfig::builder("x").build().unwrap(),
        clock(),
        None,
    )
    .await
    .unwrap();
    let keyring = ring();
    let mut chain = StreamChain::new("t");
    let first = chain
        .seal(&keyring, &MaskingPolicy::none(), entry("t", 0))
        .unwrap();
    let second = chain
        .seal(&keyring, &MaskingPolicy::none(), entry("t", 1))
        .unwrap();
    match writer.append(second.clone()).await {
        Err(AuditError::OutOfOrder { expected, got, .. }) => assert_eq!((expected, got), (0, 1)),
        other => panic!("{other:?}"),
    }
    assert_eq!(writer.append(first.clone()).await.unwrap(), 0);
    assert!(matches!(
        writer.append(first).await,
        Err(AuditError::OutOfOrder { .. })
    ));
    assert_eq!(writer.append(second).await.unwrap(), 1);
    assert_eq!(writer.stream_head("t"), chain.head());
}

#[tokio::test]
async fn checkpoints_are_made_every_n_entries_signed_and_stored() {
    let sink = Arc::new(MemorySink::new());
    let signer = NoteSigner::new("test.example", [9; 32]).unwrap();
    let verifier = NoteVerifier::new(&signer.verifier_key()).unwrap();
    let config = WriterConfig::builder("test.example/log")
        .checkpoint_every_entries(10)
        .build()
        .unwrap();
    let writer = AuditWriter::open(sink.clone(), config, clock(), Some(signer))
        .await
        .unwrap();
    let log = AuditLog::new(writer.clone(), ring(), MaskingPolicy::none());
    assert_eq!(writer.latest_checkpoint(), None);
    for i in 0..25 {
        log.record(entry("t", i)).await.unwrap();
    }
    let cp = writer.latest_checkpoint().unwrap();
    assert_eq!(cp.size, 20);
    let signed = writer.latest_signed_checkpoint().unwrap();
    assert_eq!(
        verifier
            .verify_checkpoint(&signed.note, "test.example/log")
            .unwrap(),
        cp
    );
    assert_eq!(sink.load_checkpoint().await.unwrap(), Some(signed.note));
    // Flush checkpoints the rest; the old checkpoint is a prefix of the new one.
    let new = writer.flush().await.unwrap();
    assert_eq!(new.size, 25);
    let proof = writer.consistency_proof(cp.size, new.size).unwrap();
    verify_consistency(cp.size, new.size, &proof, &cp.root, &new.root).unwrap();
}

#[tokio::test]
async fn checkpoints_are_made_every_interval() {
    let manual = ManualClock::new(Timestamp::from_unix_millis(0));
    let sink = Arc::new(MemorySink::new());
    let config = WriterConfig::builder("x")
        .checkpoint_every_entries(1_000)
        .checkpoint_interval(std::time::Duration::from_secs(5))
        .build()
        .unwrap();
    let writer = AuditWriter::open(sink.clone(), config, Arc::new(manual.clone()), None)
        .await
        .unwrap();
    let log = AuditLog::new(writer.clone(), ring(), MaskingPolicy::none());
    log.record(entry("t", 0)).await.unwrap();
    assert_eq!(writer.latest_checkpoint(), None);
    manual.advance(std::time::Duration::from_secs(6));
    log.record(entry("t", 1)).await.unwrap();
    assert_eq!(writer.latest_checkpoint().unwrap().size, 2);
}

#[tokio::test]
async fn a_restarted_writer_continues_every_stream() {
    let dir = tempfile::tempdir().unwrap();
    let config = WriterConfig::builder("x").build().unwrap();
    let old_cp = {
        let (sink, _) = FileSink::open(dir.path()).unwrap();
        let writer = AuditWriter::open(Arc::new(sink), config.clone(), clock(), None)
            .await
            .unwrap();
        let log = AuditLog::new(writer.clone(), ring(), MaskingPolicy::none());
        for i in 0..6 {
            log.record(entry(if i % 2 == 0 { "a" } else { "b" }, i))
                .await
                .unwrap();
        }
        writer.close().await.unwrap()
    };
    let (sink, recovery) = FileSink::open(dir.path()).unwrap();
    assert_eq!(recovery.records, 6);
    let writer = AuditWriter::open(Arc::new(sink), config, clock(), None)
        .await
        .unwrap();
    assert_eq!(writer.size(), 6);
    assert_eq!(writer.root(), old_cp.root);
    assert_eq!(writer.stream_head("a").next_seq, 3);
    let log = AuditLog::new(writer.clone(), ring(), MaskingPolicy::none());
    let a = log.record(entry("a", 6)).await.unwrap();
    assert_eq!((a.index, a.seq), (Some(6), 3));
    let new_cp = writer.close().await.unwrap();
    assert!(matches!(
        log.record(entry("a", 7)).await,
        Err(AuditError::Closed)
    ));
    assert!(matches!(writer.flush().await, Err(AuditError::Closed)));
    let result = verify_dir(dir.path(), &ring(), Some(&new_cp)).unwrap();
    assert!(result.report.is_intact(), "{result:?}");
    let proof = writer.consistency_proof(6, 7).unwrap();
    verify_consistency(6, 7, &proof, &old_cp.root, &new_cp.root).unwrap();
}

#[tokio::test]
async fn rotating_the_key_in_the_log_keeps_verification_working() {
    let sink = Arc::new(MemorySink::new());
    let writer = AuditWriter::open(
        sink.clone(),
        WriterConfig::builder("x").build().unwrap(),
        clock(),
        None,
    )
    .await
    .unwrap();
    let log = AuditLog::new(writer.clone(), ring(), MaskingPolicy::none());
    log.record(entry("t", 0)).await.unwrap();
    log.rotate_key(HmacKey::new(2, [8; 32]).unwrap()).unwrap();
    assert!(log.rotate_key(HmacKey::new(2, [8; 32]).unwrap()).is_err());
    log.record(entry("t", 1)).await.unwrap();
    let records = sink.snapshot();
    assert_eq!(
        (records[0].entry.key_id(), records[1].entry.key_id()),
        (1, 2)
    );
    let cp = writer.flush().await.unwrap();
    assert!(
        verify_sink(sink.as_ref(), &log.keyring(), Some(&cp))
            .await
            .unwrap()
            .is_intact()
    );
}

#[test]
fn writer_config_rejects_out_of_range_settings() {
    let b = || WriterConfig::builder("x");
    assert!(WriterConfig::builder("").build().is_err());
    assert!(WriterConfig::builder("a\nb").build().is_err());
    assert!(b().batch_max(0).build().is_err());
    assert!(b().batch_max(65_537).build().is_err());
    assert!(b().buffer_max(0).build().is_err());
    assert!(
        b().linger(std::time::Duration::from_secs(11))
            .build()
            .is_err()
    );
    assert!(b().checkpoint_every_entries(0).build().is_err());
    assert!(b().build().is_ok());
}

/// Five entries enqueued 2 ms apart: how many sink writes?
async fn writes_for(linger_ms: u64) -> usize {
    let sink = Arc::new(TestSink::new(vec![], true));
    let config = WriterConfig::builder("x")
        .linger(std::time::Duration::from_millis(linger_ms))
        .build()
        .unwrap();
    let writer = AuditWriter::open(sink.clone(), config, clock(), None)
        .await
        .unwrap();
    let keyring = ring();
    let mut chain = StreamChain::new("t");
    let mut receipts = Vec::new();
    for i in 0..5 {
        let sealed = chain
            .seal(&keyring, &MaskingPolicy::none(), entry("t", i))
            .unwrap();
        receipts.push(writer.enqueue(sealed).await.unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    for r in receipts {
        r.durable().await.unwrap();
    }
    sink.calls.load(Ordering::SeqCst)
}

#[tokio::test]
async fn linger_groups_entries_into_one_batch() {
    assert_eq!(
        writes_for(0).await,
        5,
        "no linger: each entry written on arrival"
    );
    assert_eq!(writes_for(500).await, 1, "one group commit");
}

/// A memory sink that records where each read starts.
#[derive(Debug, Default)]
struct ReadLog {
    inner: MemorySink,
    reads: parking_lot::Mutex<Vec<u64>>,
}

#[async_trait]
impl AuditSink for ReadLog {
    async fn append(&self, records: &[LogRecord]) -> Result<(), AuditError> {
        self.inner.append(records).await
    }
    async fn read(&self, start: u64, limit: usize) -> Result<Vec<LogRecord>, AuditError> {
        self.reads.lock().push(start);
        self.inner.read(start, limit).await
    }
    async fn size(&self) -> Result<u64, AuditError> {
        self.inner.size().await
    }
    async fn store_checkpoint(&self, note: &str) -> Result<(), AuditError> {
        self.inner.store_checkpoint(note).await
    }
    async fn load_checkpoint(&self) -> Result<Option<String>, AuditError> {
        self.inner.load_checkpoint().await
    }
    async fn store_head(&self, head: &audit_chain::LogHead) -> Result<(), AuditError> {
        self.inner.store_head(head).await
    }
    async fn load_head(&self) -> Result<Option<audit_chain::LogHead>, AuditError> {
        self.inner.load_head().await
    }
}

#[tokio::test]
async fn a_frontier_only_writer_restarts_from_the_stored_head() {
    let sink = Arc::new(ReadLog::default());
    let config = WriterConfig::builder("x")
        .retain_proofs(false)
        .checkpoint_every_entries(5)
        .build()
        .unwrap();
    let cp10 = {
        let writer = AuditWriter::open(sink.clone(), config.clone(), clock(), None)
            .await
            .unwrap();
        let log = AuditLog::new(writer.clone(), ring(), MaskingPolicy::none());
        for i in 0..12 {
            log.record(entry(if i % 3 == 0 { "a" } else { "b" }, i))
                .await
                .unwrap();
        }
        assert!(matches!(
            writer.inclusion_proof(0, 12),
            Err(AuditError::InvalidConfig(_))
        ));
        // Checkpoints (and heads) were stored at 5 and 10; entries 10 and 11 came after.
        writer.latest_checkpoint().unwrap()
    }; // every handle dropped: the task stops without a final checkpoint
    assert_eq!(cp10.size, 10);
    assert_eq!(sink.load_head().await.unwrap().unwrap().size(), 10);
    sink.reads.lock().clear();
    let writer = AuditWriter::open(sink.clone(), config, clock(), None)
        .await
        .unwrap();
    assert_eq!(
        *sink.reads.lock(),
        vec![10],
        "only the entries after the head are replayed"
    );
    assert_eq!(writer.size(), 12);
    assert_eq!(writer.stream_head("a").next_seq, 4);
    assert_eq!(writer.stream_head("b").next_seq, 8);
    let log = AuditLog::new(writer.clone(), ring(), MaskingPolicy::none());
    log.record(entry("a", 12)).await.unwrap();
    let cp = writer.close().await.unwrap();
    let report = verify_sink(&sink.inner, &ring(), Some(&cp)).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    // The old checkpoint is still a prefix of the new one (checked offline).
    let mut tree = audit_chain::merkle::MerkleTree::new();
    for r in sink.inner.snapshot() {
        tree.push(r.entry.leaf_hash());
    }
    assert_eq!(tree.root(), cp.root);
    let proof = tree.consistency_proof(10, 13).unwrap();
    verify_consistency(10, 13, &proof, &cp10.root, &cp.root).unwrap();
}

#[tokio::test]
async fn the_file_sink_keeps_the_head_and_rejects_a_damaged_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = WriterConfig::builder("x")
        .retain_proofs(false)
        .build()
        .unwrap();
    {
        let (sink, _) = FileSink::open(dir.path()).unwrap();
        let writer = AuditWriter::open(Arc::new(sink), config.clone(), clock(), None)
            .await
            .unwrap();
        let log = AuditLog::new(writer.clone(), ring(), MaskingPolicy::none());
        for i in 0..4 {
            log.record(entry("t", i)).await.unwrap();
        }
        writer.close().await.unwrap();
    }
    let (sink, _) = FileSink::open(dir.path()).unwrap();
    let head = sink.load_head().await.unwrap().unwrap();
    assert_eq!((head.size(), head.streams["t"].next_seq), (4, 4));
    let writer = AuditWriter::open(Arc::new(sink.clone()), config.clone(), clock(), None)
        .await
        .unwrap();
    assert_eq!(writer.stream_head("t").next_seq, 4);
    writer.close().await.unwrap();
    let mut bytes = std::fs::read(dir.path().join("head")).unwrap();
    bytes[12] ^= 1;
    std::fs::write(dir.path().join("head"), bytes).unwrap();
    assert!(matches!(
        sink.load_head().await,
        Err(AuditError::Decode { .. })
    ));
    assert!(
        AuditWriter::open(Arc::new(sink), config, clock(), None)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_writer_refuses_a_sink_shorter_than_its_stored_head_or_checkpoint() {
    let config = WriterConfig::builder("x").build().unwrap();
    let open = |sink: MemorySink| AuditWriter::open(Arc::new(sink), config.clone(), clock(), None);

    let sink = MemorySink::new();
    let mut head = audit_chain::LogHead::default();
    for i in 0..5u8 {
        head.frontier.push(audit_chain::merkle::leaf_hash(&[i]));
    }
    sink.store_head(&head).await.unwrap();
    assert!(matches!(
        open(sink).await,
        Err(AuditError::Truncated {
            found: 0,
            recorded: 5,
            recorded_by: "log head"
        })
    ));

    let signer = NoteSigner::new("x.test", [9; 32]).unwrap();
    let cp = audit_chain::Checkpoint {
        origin: "x".into(),
        size: 3,
        root: [1; 32],
    };
    for note in [cp.to_body(), signer.sign_checkpoint(&cp).note] {
        let sink = MemorySink::new();
        sink.store_checkpoint(&note).await.unwrap();
        assert!(matches!(
            open(sink).await,
            Err(AuditError::Truncated {
                found: 0,
                recorded: 3,
                recorded_by: "checkpoint"
            })
        ));
    }
}

/// The measured failure: a file-sink log cut below what its head and checkpoint cover (here
/// with the durable-size file gone too, so the sink cannot tell) must not be continued.
#[tokio::test]
async fn a_writer_refuses_a_truncated_file_log_and_keeps_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let config = WriterConfig::builder("x")
        .checkpoint_every_entries(5)
        .build()
        .unwrap();
    {
        let (sink, _) = FileSink::open(dir.path()).unwrap();
        let writer = AuditWriter::open(Arc::new(sink), config.clone(), clock(), None)
            .await
            .unwrap();
        let log = AuditLog::new(writer.clone(), ring(), MaskingPolicy::none());
        for i in 0..20 {
            log.record(entry("t", i)).await.unwrap();
        }
        assert_eq!(writer.close().await.unwrap().size, 20);
    }
    let seg = dir.path().join(format!("{:020}.seg", 0));
    let bytes = std::fs::read(&seg).unwrap();
    let mut pos = 16;
    for _ in 0..12 {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        pos += 4 + len + 8;
    }
    std::fs::write(&seg, &bytes[..pos]).unwrap();
    // With the durable size the sink itself refuses.
    assert!(matches!(
        FileSink::open(dir.path()),
        Err(AuditError::Truncated {
            found: 12,
            recorded: 20,
            recorded_by: "durable size"
        })
    ));
    std::fs::remove_file(dir.path().join("durable")).unwrap();
    let checkpoint = std::fs::read(dir.path().join("checkpoint")).unwrap();
    let (sink, recovery) = FileSink::open(dir.path()).unwrap();
    assert_eq!(recovery.records, 12);
    let opened = AuditWriter::open(Arc::new(sink.clone()), config.clone(), clock(), None).await;
    assert!(
        matches!(
            opened,
            Err(AuditError::Truncated {
                found: 12,
                recorded: 20,
                recorded_by: "log head"
            })
        ),
        "{:?}",
        opened.map(|w| w.size())
    );
    std::fs::remove_file(dir.path().join("head")).unwrap();
    let opened = AuditWriter::open(Arc::new(sink), config, clock(), None).await;
    assert!(
        matches!(
            opened,
            Err(AuditError::Truncated {
                found: 12,
                recorded: 20,
                recorded_by: "checkpoint"
            })
        ),
        "{:?}",
        opened.map(|w| w.size())
    );
    assert_eq!(
        std::fs::read(dir.path().join("checkpoint")).unwrap(),
        checkpoint
    );
    assert_eq!(std::fs::read(&seg).unwrap().len(), pos);
}
