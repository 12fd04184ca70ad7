//! The writer integrating a store's queue: a sink that fails once, for a while and for good;
//! a crash between writing and dequeuing; an entry that does not extend its stream; a
//! restart with entries still queued. Nothing queued is ever lost, reordered or doubled.

// Tests drive the writer like an application: they wait on tokio's timer.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use audit_chain::testing::{FaultySink, SinkFaults};
use audit_chain::{
    AuditEntry, AuditError, AuditQueue, AuditSink, AuditWriter, HmacKey, Keyring, MaskingPolicy,
    MemoryAuditQueue, MemorySink, SealedEntry, StreamChain, WriterConfig, verify_sink,
};
use metered_clock::{Clock, ManualClock, Timestamp};

fn clock() -> Arc<dyn Clock> {
    Arc::new(ManualClock::new(Timestamp::from_unix_millis(
        1_700_000_000_000,
    )))
}

fn ring() -> Keyring {
    Keyring::new(HmacKey::new(1, [4; 32]).unwrap())
}

fn seal(chain: &mut StreamChain, i: u64) -> SealedEntry {
    let entry = AuditEntry::new(
        chain.stream().to_owned(),
        "credits",
        "consumed",
        Timestamp::from_unix_millis(i),
    )
    .with_amount(i);
    chain
        .seal(&ring(), &MaskingPolicy::standard(), entry)
        .unwrap()
}

/// A memory sink behind the shipped fault-injecting wrapper, with its switches.
struct Flaky {
    mem: Arc<MemorySink>,
    faults: Arc<SinkFaults>,
    sink: Arc<FaultySink>,
}

impl Flaky {
    fn new() -> Self {
        let mem = Arc::new(MemorySink::new());
        let faults = Arc::new(SinkFaults::default());
        let sink = Arc::new(FaultySink::new(mem.clone(), faults.clone()));
        Flaky { mem, faults, sink }
    }
}

async fn writer(sink: &Flaky, queue: &Arc<MemoryAuditQueue>, batch: usize) -> AuditWriter {
    let config = WriterConfig::builder("test/queue")
        .batch_max(batch)
        .build()
        .unwrap();
    AuditWriter::open_with_queue(sink.sink.clone(), queue.clone(), config, clock(), None)
        .await
        .unwrap()
}

/// Every queued entry of every stream, in stream order, exactly once.
async fn assert_log_holds(sink: &Flaky, streams: &[(&str, u64)]) {
    let records = sink.mem.read(0, 100_000).await.unwrap();
    let total: u64 = streams.iter().map(|(_, n)| n).sum();
    assert_eq!(records.len() as u64, total, "every entry once");
    for (stream, n) in streams {
        let seqs: Vec<u64> = records
            .iter()
            .filter(|r| r.entry.stream() == *stream)
            .map(|r| r.entry.seq())
            .collect();
        assert_eq!(seqs, (0..*n).collect::<Vec<_>>(), "{stream} in order");
    }
    assert!(
        verify_sink(&*sink.mem, &ring(), None)
            .await
            .unwrap()
            .is_intact()
    );
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn queued_entries_are_integrated_in_stream_order() {
    let sink = Flaky::new();
    let queue = Arc::new(MemoryAuditQueue::new(10_000));
    let w = writer(&sink, &queue, 16).await;
    let (mut a, mut b) = (StreamChain::new("ledger/a"), StreamChain::new("ledger/b"));
    for i in 0..100 {
        queue
            .push_all(vec![seal(&mut a, i), seal(&mut b, i)])
            .unwrap();
    }
    // Without a flush, the writer takes them on its own.
    wait_until("the queue to drain", || queue.is_empty()).await;
    let cp = w.flush().await.unwrap();
    assert_eq!(cp.size, 200);
    assert_log_holds(&sink, &[("ledger/a", 100), ("ledger/b", 100)]).await;
}

#[tokio::test]
async fn a_sink_failing_once_delays_and_loses_nothing() {
    let sink = Flaky::new();
    sink.faults.fail_next(1);
    let queue = Arc::new(MemoryAuditQueue::new(10_000));
    let w = writer(&sink, &queue, 4).await;
    let mut a = StreamChain::new("ledger/a");
    for i in 0..10 {
        queue.push_all(vec![seal(&mut a, i)]).unwrap();
    }
    wait_until("the queue to drain", || queue.is_empty()).await;
    assert_eq!(sink.faults.failures(), 1);
    w.flush().await.unwrap();
    assert_log_holds(&sink, &[("ledger/a", 10)]).await;
}

#[tokio::test]
async fn a_sink_failing_for_a_while_keeps_the_backlog_then_catches_up() {
    let sink = Flaky::new();
    sink.faults.set_down(true);
    let queue = Arc::new(MemoryAuditQueue::new(10_000));
    let w = writer(&sink, &queue, 8).await;
    let mut a = StreamChain::new("ledger/a");
    for i in 0..50 {
        queue.push_all(vec![seal(&mut a, i)]).unwrap();
    }
    // Flushing while the sink is down reports the failure; nothing leaves the queue.
    assert!(matches!(w.flush().await, Err(AuditError::Io { .. })));
    wait_until("several retries", || sink.faults.failures() >= 3).await;
    assert_eq!(queue.backlog().await.unwrap(), 50);
    assert_eq!(w.size(), 0);
    sink.faults.set_down(false);
    wait_until("the queue to drain", || queue.is_empty()).await;
    assert_eq!(w.flush().await.unwrap().size, 50);
    assert_log_holds(&sink, &[("ledger/a", 50)]).await;
}

#[tokio::test]
async fn a_sink_down_for_good_fills_the_bounded_queue_which_then_refuses() {
    let sink = Flaky::new();
    sink.faults.set_down(true);
    let queue = Arc::new(MemoryAuditQueue::new(20));
    let w = writer(&sink, &queue, 8).await;
    let mut a = StreamChain::new("ledger/a");
    let mut pushed = 0;
    for i in 0..30 {
        if queue.push_all(vec![seal(&mut a, i)]).is_err() {
            break;
        }
        pushed += 1;
    }
    assert_eq!(pushed, 20);
    let refused = queue.push_all(vec![seal(&mut StreamChain::new("ledger/b"), 0)]);
    assert!(matches!(
        refused,
        Err(AuditError::Backpressure { capacity: 20 })
    ));
    assert!(w.close().await.is_err());
    assert_eq!(queue.backlog().await.unwrap(), 20, "still queued, not lost");

    // A new writer over a working sink takes the backlog on open.
    let healthy = Flaky::new();
    let w = writer(&healthy, &queue, 8).await;
    wait_until("the queue to drain", || queue.is_empty()).await;
    assert_eq!(w.flush().await.unwrap().size, 20);
    assert_log_holds(&healthy, &[("ledger/a", 20)]).await;
}

/// A queue whose first removal fails: as if the process died between writing a batch to
/// the sink and dequeuing it.
#[derive(Debug)]
struct LosesFirstRemove {
    inner: MemoryAuditQueue,
    failed: AtomicBool,
}

#[async_trait]
impl AuditQueue for LosesFirstRemove {
    async fn peek(&self, limit: usize) -> Result<Vec<Arc<SealedEntry>>, AuditError> {
        self.inner.peek(limit).await
    }
    async fn remove(&self, entries: &[Arc<SealedEntry>]) -> Result<(), AuditError> {
        if !self.failed.swap(true, Ordering::SeqCst) {
            return Err(AuditError::Io {
                context: "injected".into(),
                source: Arc::new(std::io::Error::other("connection reset")),
            });
        }
        self.inner.remove(entries).await
    }
    async fn backlog(&self) -> Result<u64, AuditError> {
        self.inner.backlog().await
    }
}

#[tokio::test]
async fn entries_written_but_not_dequeued_are_not_written_twice() {
    let sink = Flaky::new();
    let queue = Arc::new(LosesFirstRemove {
        inner: MemoryAuditQueue::new(100),
        failed: AtomicBool::new(false),
    });
    let mut a = StreamChain::new("ledger/a");
    queue
        .inner
        .push_all((0..5).map(|i| seal(&mut a, i)).collect())
        .unwrap();
    let config = WriterConfig::builder("test/queue").build().unwrap();
    let w = AuditWriter::open_with_queue(sink.sink.clone(), queue.clone(), config, clock(), None)
        .await
        .unwrap();
    wait_until("the queue to drain", || queue.inner.is_empty()).await;
    assert_eq!(w.flush().await.unwrap().size, 5);
    assert_log_holds(&sink, &[("ledger/a", 5)]).await;
}

#[tokio::test]
async fn an_entry_that_does_not_extend_its_stream_stays_queued_and_blocks_only_its_stream() {
    let sink = Flaky::new();
    let queue = Arc::new(MemoryAuditQueue::new(100));
    let mut a = StreamChain::new("ledger/a");
    let _lost = seal(&mut a, 0);
    let gap = seal(&mut a, 1); // seq 1 while the log expects 0
    let mut b = StreamChain::new("ledger/b");
    queue.push_all(vec![gap, seal(&mut b, 0)]).unwrap();
    let w = writer(&sink, &queue, 16).await;
    let cp = w.flush().await.unwrap();
    assert_eq!(cp.size, 1, "ledger/b went in");
    assert_eq!(queue.len(), 1, "the gap stays queued, visible as backlog");
    assert_eq!(w.stream_head("ledger/a").next_seq, 0);
}
