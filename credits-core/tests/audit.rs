//! The ledger's audit: every change is sealed as exactly one audit entry per journal
//! entry, in journal order, in the change's own step, and integrated into the Merkle log by
//! the writer; a failing sink delays integration and loses nothing; past the backlog limit
//! the change is refused and nothing changes.
#![cfg(feature = "audit")]
// Tests wait for the writer like an application does.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use audit_chain::testing::{FaultySink, SinkFaults};
use audit_chain::{
    AuditWriter, HmacKey, Keyring, LogRecord, MaskingPolicy, MemoryAuditQueue, MemorySink,
    WriterConfig, verify_sink,
};
use credits_core::audit::{LedgerAudit, MemoryAudit, audit_entry, stream_name};
use credits_core::{
    Amount, Command, GrantOptions, IdempotencyKey, JournalEntry, Ledger, LedgerError,
    LedgerStore as _, MemoryLedgerStore, PageRequest, Request, TenantId, TenantSettings,
};
use metered_clock::{ManualClock, Timestamp};

/// A memory sink behind audit-chain's fault-injecting wrapper, with its switches.
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

struct Setup {
    ledger: Ledger<MemoryLedgerStore>,
    clock: ManualClock,
    writer: AuditWriter,
    sink: Flaky,
    queue: Arc<MemoryAuditQueue>,
    keyring: Arc<Keyring>,
}

fn keyring() -> Arc<Keyring> {
    Arc::new(Keyring::new(HmacKey::new(1, [0x42; 32]).unwrap()))
}

async fn setup_with(sink: Flaky, backlog_max: usize, tenants: &[&TenantId]) -> Setup {
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_700_000_000_000));
    let queue = Arc::new(MemoryAuditQueue::new(backlog_max));
    let config = WriterConfig::builder("test.invalid/ledger-audit")
        .build()
        .unwrap();
    let writer = AuditWriter::open_with_queue(
        sink.sink.clone(),
        queue.clone(),
        config,
        Arc::new(clock.clone()),
        None,
    )
    .await
    .unwrap();
    let keyring = keyring();
    let audit = LedgerAudit::new(keyring.clone(), MaskingPolicy::standard());
    let store = MemoryLedgerStore::builder()
        .audit(MemoryAudit::new(audit, queue.clone()).resuming_from(writer.clone()))
        .build();
    let ledger = Ledger::new(store, clock.clone());
    for t in tenants {
        ledger
            .create_tenant(t, TenantSettings::default())
            .await
            .unwrap();
    }
    Setup {
        ledger,
        clock,
        writer,
        sink,
        queue,
        keyring,
    }
}

async fn setup(backlog_max: usize, tenants: &[&TenantId]) -> Setup {
    setup_with(Flaky::new(), backlog_max, tenants).await
}

fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::new(s).unwrap()
}

async fn journal(ledger: &Ledger<MemoryLedgerStore>, t: &TenantId) -> Vec<JournalEntry> {
    ledger
        .history(t, PageRequest::first(1_000))
        .await
        .unwrap()
        .entries
}

/// Flushes, verifies the whole log against the writer's checkpoint and returns its records
/// grouped by stream (in log order).
async fn verified_streams(s: &Setup) -> BTreeMap<String, Vec<LogRecord>> {
    let checkpoint = s.writer.flush().await.unwrap();
    let report = verify_sink(&*s.sink.mem, &s.keyring, Some(&checkpoint))
        .await
        .unwrap();
    assert!(report.is_intact(), "{:?}", report.failure);
    assert!(report.checkpoint_matched);
    let records = s.sink.mem.snapshot();
    assert_eq!(report.entries_ok, records.len() as u64);
    let mut streams: BTreeMap<String, Vec<LogRecord>> = BTreeMap::new();
    for r in records {
        streams
            .entry(r.entry.stream().to_owned())
            .or_default()
            .push(r);
    }
    streams
}

/// The stream holds exactly the journal, one record per entry, in journal order.
fn assert_matches(records: &[LogRecord], journal: &[JournalEntry], tenant: &TenantId) {
    let stream = stream_name(tenant);
    assert_eq!(
        records.len(),
        journal.len(),
        "one audit entry per journal entry"
    );
    for (i, (r, e)) in records.iter().zip(journal).enumerate() {
        assert_eq!(r.entry.seq(), i as u64);
        assert_eq!(r.entry.entry(), &audit_entry(&stream, e), "entry {i}");
    }
}

#[tokio::test]
async fn every_change_is_one_audit_entry_in_journal_order_and_the_log_verifies() {
    let (a, b) = (TenantId::new("a").unwrap(), TenantId::new("b").unwrap());
    let s = setup(1_024, &[&a, &b]).await;
    let l = &s.ledger;
    let soon = Timestamp::from_unix_millis(1_700_000_010_000);
    l.grant(
        &a,
        key("g1"),
        Amount::new(50),
        GrantOptions::default().expires_at(soon),
    )
    .await
    .unwrap();
    l.grant(&a, key("g2"), Amount::new(50), GrantOptions::default())
        .await
        .unwrap();
    let h = l
        .reserve(&a, key("r"), Amount::new(60), Duration::from_secs(5))
        .await
        .unwrap();
    l.commit(&a, key("c"), h.hold, Amount::new(10))
        .await
        .unwrap();
    assert!(l.consume(&a, key("big"), Amount::new(1_000)).await.is_err());
    l.consume(&a, key("g2"), Amount::new(5)).await.unwrap_err(); // key reused for another command: a conflict, no entry
    let spent = l.consume(&a, key("c1"), Amount::new(5)).await.unwrap();
    l.refund(&a, key("rf"), spent.entry, Amount::new(2))
        .await
        .unwrap();
    l.reserve(&a, key("r2"), Amount::new(20), Duration::from_secs(5))
        .await
        .unwrap();
    let grant = |n| Command::Grant {
        amount: Amount::new(n),
        expires_at: None,
        priority: 0,
    };
    l.batch(&[
        Request::new(a.clone(), key("bg"), grant(5)),
        Request::new(b.clone(), key("bg"), grant(7)),
        Request::new(
            b.clone(),
            key("bc"),
            Command::Consume {
                amount: Amount::new(2),
            },
        ),
    ])
    .await
    .unwrap();
    l.grant(
        &a,
        key("g1"),
        Amount::new(50),
        GrantOptions::default().expires_at(soon),
    )
    .await
    .unwrap(); // a replay: no entry
    s.clock.advance(Duration::from_secs(20));
    let swept = l.recover().await.unwrap(); // a hold and a lot expire
    assert!(
        swept.holds_expired >= 1 && swept.lots_expired >= 1,
        "{swept:?}"
    );

    let streams = verified_streams(&s).await;
    assert_eq!(streams.len(), 2);
    for t in [&a, &b] {
        assert_matches(&streams[&stream_name(t)], &journal(l, t).await, t);
    }
}

async fn wait_for_empty(queue: &MemoryAuditQueue) {
    for _ in 0..500 {
        if queue.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the audit queue did not drain");
}

#[tokio::test]
async fn a_sink_failing_once_loses_no_entry_and_the_checkpoint_covers_them_all() {
    // The first version's hook went silent for good after one failed batch while the log
    // still verified. Now the failed batch stays queued and is written on the retry.
    let a = TenantId::new("a").unwrap();
    let s = setup(1_000, &[&a]).await;
    let l = &s.ledger;
    l.grant(&a, key("g"), Amount::new(100), GrantOptions::default())
        .await
        .unwrap();
    wait_for_empty(&s.queue).await;
    s.sink.faults.fail_next(1); // the next write (the consumes' batch) fails once
    for i in 0..5 {
        l.consume(&a, key(&format!("c{i}")), Amount::new(1))
            .await
            .unwrap();
        tokio::task::yield_now().await;
    }
    wait_for_empty(&s.queue).await;
    assert_eq!(
        s.sink.faults.failures(),
        1,
        "a write failed and was retried"
    );
    let streams = verified_streams(&s).await;
    assert_matches(&streams[&stream_name(&a)], &journal(l, &a).await, &a);
    assert_eq!(journal(l, &a).await.len(), 6);
}

#[tokio::test]
async fn a_full_backlog_refuses_the_change_and_the_retry_applies_once() {
    let a = TenantId::new("a").unwrap();
    let sink = Flaky::new();
    sink.faults.set_down(true);
    let s = setup_with(sink, 1, &[&a]).await;
    let l = &s.ledger;
    l.grant(&a, key("g"), Amount::new(100), GrantOptions::default())
        .await
        .unwrap(); // the backlog is now at its limit of one entry

    let balance = l.balance(&a).await.unwrap();
    let err = l.consume(&a, key("c"), Amount::new(30)).await.unwrap_err();
    assert_eq!(
        err,
        LedgerError::AuditBacklogFull {
            backlog: 1,
            limit: 1
        }
    );
    assert!(err.is_retryable());
    assert_eq!(l.balance(&a).await.unwrap(), balance);
    assert_eq!(journal(l, &a).await.len(), 1);
    assert!(
        l.store()
            .idempotency_record(&a, &key("c"))
            .await
            .unwrap()
            .is_none()
    );

    s.sink.faults.set_down(false);
    wait_for_empty(&s.queue).await;
    let first = l.consume(&a, key("c"), Amount::new(30)).await.unwrap();
    let replay = l.consume(&a, key("c"), Amount::new(30)).await.unwrap();
    assert_eq!(first, replay);
    assert_eq!(l.balance(&a).await.unwrap().available, Amount::new(70));

    let streams = verified_streams(&s).await;
    assert_matches(&streams[&stream_name(&a)], &journal(l, &a).await, &a);
}

#[tokio::test]
async fn a_batch_refused_part_way_leaves_no_entry_for_any_tenant() {
    // The first version sealed the first tenant's entries before the second tenant's
    // request was refused: the log held a change that never happened.
    let (a, b) = (TenantId::new("a").unwrap(), TenantId::new("b").unwrap());
    let s = setup(1_000, &[&a, &b]).await;
    let l = &s.ledger;
    let err = l
        .batch(&[
            Request::new(
                a.clone(),
                key("x"),
                Command::Grant {
                    amount: Amount::new(10),
                    expires_at: None,
                    priority: 0,
                },
            ),
            Request::new(
                b.clone(),
                key("y"),
                Command::Consume {
                    amount: Amount::new(5),
                },
            ),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::BatchRejected { index: 1, .. }),
        "{err}"
    );
    assert!(s.queue.is_empty());
    l.grant(&a, key("g"), Amount::new(1), GrantOptions::default())
        .await
        .unwrap();
    let streams = verified_streams(&s).await;
    assert_eq!(streams.len(), 1);
    assert_matches(&streams[&stream_name(&a)], &journal(l, &a).await, &a);
}

#[tokio::test]
async fn a_new_writer_integrates_what_the_old_one_left_queued() {
    let a = TenantId::new("a").unwrap();
    let sink = Flaky::new();
    sink.faults.set_down(true);
    let s = setup_with(sink, 1_000, &[&a]).await;
    let l = &s.ledger;
    l.grant(&a, key("g"), Amount::new(100), GrantOptions::default())
        .await
        .unwrap();
    l.consume(&a, key("c"), Amount::new(1)).await.unwrap();
    assert!(s.writer.close().await.is_err(), "the sink is down");
    assert_eq!(s.queue.len(), 2, "still queued");

    s.sink.faults.set_down(false);
    let config = WriterConfig::builder("test.invalid/ledger-audit")
        .build()
        .unwrap();
    let writer = AuditWriter::open_with_queue(
        s.sink.sink.clone(),
        s.queue.clone(),
        config,
        Arc::new(s.clock.clone()),
        None,
    )
    .await
    .unwrap();
    let checkpoint = writer.flush().await.unwrap();
    assert_eq!(checkpoint.size, 2);
    let report = verify_sink(&*s.sink.mem, &s.keyring, Some(&checkpoint))
        .await
        .unwrap();
    assert!(report.is_intact());
}

#[tokio::test]
async fn a_tenant_recreated_over_a_kept_log_continues_its_stream() {
    let a = TenantId::new("a").unwrap();
    let s = setup(1_000, &[&a]).await;
    s.ledger
        .grant(&a, key("g"), Amount::new(5), GrantOptions::default())
        .await
        .unwrap();
    s.writer.flush().await.unwrap();

    // A new in-memory ledger over the same log (as after a restart with a file sink).
    let queue = Arc::new(MemoryAuditQueue::new(1_000));
    let config = WriterConfig::builder("test.invalid/ledger-audit")
        .build()
        .unwrap();
    s.writer.close().await.unwrap();
    let writer = AuditWriter::open_with_queue(
        s.sink.sink.clone(),
        queue.clone(),
        config,
        Arc::new(s.clock.clone()),
        None,
    )
    .await
    .unwrap();
    let audit = LedgerAudit::new(s.keyring.clone(), MaskingPolicy::standard());
    let store = MemoryLedgerStore::builder()
        .audit(MemoryAudit::new(audit, queue.clone()).resuming_from(writer.clone()))
        .build();
    let ledger = Ledger::new(store, s.clock.clone());
    ledger
        .create_tenant(&a, TenantSettings::default())
        .await
        .unwrap();
    ledger
        .grant(&a, key("g"), Amount::new(5), GrantOptions::default())
        .await
        .unwrap();
    let checkpoint = writer.flush().await.unwrap();
    assert_eq!(checkpoint.size, 2, "the second entry extends the stream");
    assert!(queue.is_empty());
    let records = s.sink.mem.snapshot();
    assert_eq!(records[1].entry.seq(), 1);
    let report = verify_sink(&*s.sink.mem, &s.keyring, Some(&checkpoint))
        .await
        .unwrap();
    assert!(report.is_intact());
}
