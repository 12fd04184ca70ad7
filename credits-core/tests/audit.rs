//! The audit hook: every ledger change is recorded as exactly one audit entry per journal
//! entry, in journal order, and the log verifies; when the audit writer cannot take an
//! entry, the ledger change is refused and nothing changes.
#![cfg(feature = "audit")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use audit_chain::{
    AuditWriter, HmacKey, Keyring, LogRecord, MaskingPolicy, MemorySink, WriterConfig, verify_sink,
};
use credits_core::audit::{AuditJournalHook, audit_entry, stream_name};
use credits_core::{
    Amount, Command, GrantOptions, IdempotencyKey, JournalEntry, Ledger, LedgerError,
    LedgerStore as _, MemoryLedgerStore, PageRequest, Request, TenantId, TenantSettings,
};
use metered_clock::{ManualClock, Timestamp};

struct Setup {
    ledger: Ledger<MemoryLedgerStore>,
    clock: ManualClock,
    writer: AuditWriter,
    sink: Arc<MemorySink>,
    keyring: Arc<Keyring>,
}

async fn setup(buffer_max: usize, tenants: &[&TenantId]) -> Setup {
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_700_000_000_000));
    let sink = Arc::new(MemorySink::new());
    let config = WriterConfig::builder("test.invalid/ledger-audit")
        .buffer_max(buffer_max)
        .build()
        .unwrap();
    let writer = AuditWriter::open(sink.clone(), config, Arc::new(clock.clone()), None)
        .await
        .unwrap();
    let keyring = Arc::new(Keyring::new(HmacKey::new(1, [0x42; 32]).unwrap()));
    let hook = AuditJournalHook::new(writer.clone(), keyring.clone(), MaskingPolicy::standard());
    let store = MemoryLedgerStore::builder()
        .journal_hook(Arc::new(hook))
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
        keyring,
    }
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
    let report = verify_sink(&*s.sink, &s.keyring, Some(&checkpoint))
        .await
        .unwrap();
    assert!(report.is_intact(), "{:?}", report.failure);
    assert!(report.checkpoint_matched);
    let records = s.sink.snapshot();
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

#[tokio::test]
async fn a_full_audit_buffer_refuses_the_change_and_the_retry_applies_once() {
    // A current-thread runtime: the writer task runs only when this test awaits something
    // that yields (the flushes), so the one-entry buffer fills deterministically.
    let a = TenantId::new("a").unwrap();
    let s = setup(1, &[&a]).await;
    let l = &s.ledger;
    l.grant(&a, key("g"), Amount::new(100), GrantOptions::default())
        .await
        .unwrap(); // fills the buffer

    let balance = l.balance(&a).await.unwrap();
    let err = l.consume(&a, key("c"), Amount::new(30)).await.unwrap_err();
    assert!(
        matches!(err, LedgerError::Storage(_)) && err.is_retryable(),
        "{err}"
    );
    assert_eq!(l.balance(&a).await.unwrap(), balance);
    assert_eq!(journal(l, &a).await.len(), 1);
    assert!(
        l.store()
            .idempotency_record(&a, &key("c"))
            .await
            .unwrap()
            .is_none()
    );

    s.writer.flush().await.unwrap(); // the writer drains
    let first = l.consume(&a, key("c"), Amount::new(30)).await.unwrap();
    s.writer.flush().await.unwrap();
    let replay = l.consume(&a, key("c"), Amount::new(30)).await.unwrap();
    assert_eq!(first, replay);
    assert_eq!(l.balance(&a).await.unwrap().available, Amount::new(70));

    let streams = verified_streams(&s).await;
    assert_matches(&streams[&stream_name(&a)], &journal(l, &a).await, &a);
}

#[tokio::test]
async fn a_change_that_does_not_fit_is_refused_whole() {
    // Two entries, room for one: neither is enqueued and the change is refused. Nothing
    // reaches the log, and the chain goes on from where it was.
    let a = TenantId::new("a").unwrap();
    let s = setup(1, &[&a]).await;
    let l = &s.ledger;
    let grant = |k: &str| {
        Request::new(
            a.clone(),
            key(k),
            Command::Grant {
                amount: Amount::new(10),
                expires_at: None,
                priority: 0,
            },
        )
    };
    let err = l.batch(&[grant("x"), grant("y")]).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(journal(l, &a).await.is_empty());

    s.writer.flush().await.unwrap();
    l.batch(&[grant("x")]).await.unwrap();
    s.writer.flush().await.unwrap();
    l.batch(&[grant("y")]).await.unwrap();

    let streams = verified_streams(&s).await;
    let records = &streams[&stream_name(&a)];
    let journal = journal(l, &a).await;
    assert_eq!(
        records.len(),
        journal.len(),
        "no entry of the refused change is logged"
    );
    let stream = stream_name(&a);
    for (i, (r, e)) in records.iter().zip(&journal).enumerate() {
        assert_eq!(r.entry.seq(), i as u64);
        assert_eq!(r.entry.entry(), &audit_entry(&stream, e));
    }
}

#[tokio::test]
async fn a_closed_audit_log_refuses_changes_for_good() {
    let a = TenantId::new("a").unwrap();
    let s = setup(16, &[&a]).await;
    s.writer.close().await.unwrap();
    let err = s
        .ledger
        .grant(&a, key("g"), Amount::new(1), GrantOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::Storage(_)) && !err.is_retryable(),
        "{err}"
    );
    assert!(journal(&s.ledger, &a).await.is_empty());
}
