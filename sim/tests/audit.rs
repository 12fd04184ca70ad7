//! The simulator's audit path on its own, step by step: the memory store seals into the
//! queue, the production writer integrates it into the file sink; a disk outage delays
//! integration, a crash with a torn tail and a death right after a write lose nothing and
//! double nothing, and the log matches the journal one to one.

use std::sync::Arc;

use credits_core::audit::{audit_entry, stream_name};
use credits_core::{
    Amount, GrantOptions, IdempotencyKey, Ledger, MemoryLedgerStore, PageRequest, TenantId,
    TenantSettings,
};
use metered_clock::ManualClock;
use sim::audit::{SimAudit, Synced};

fn flushed(s: Synced) -> u64 {
    match s {
        Synced::Flushed(cp) => cp.size,
        Synced::Failed(e) => panic!("the flush failed: {e}"),
    }
}

#[test]
fn outages_crashes_and_a_death_after_a_write_lose_and_double_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let clock = ManualClock::new(sim::START);
        let mut audit =
            SimAudit::open(dir.path(), Arc::new(clock.clone()), sim::audit::BACKLOG_MAX)
                .await
                .unwrap();
        let ledger = Ledger::new(
            MemoryLedgerStore::builder()
                .audit(audit.memory_audit())
                .build(),
            clock,
        );
        let acme = TenantId::new("acme").unwrap();
        ledger
            .create_tenant(&acme, TenantSettings::default())
            .await
            .unwrap();
        let key = |k: &str| IdempotencyKey::new(k).unwrap();
        let grant = ledger.grant(&acme, key("g-1"), Amount::new(100), GrantOptions::default());
        grant.await.unwrap();
        assert_eq!(audit.backlog(), 1, "sealed and queued with the change");
        assert_eq!(flushed(audit.sync().await.unwrap()), 1);
        assert_eq!(audit.backlog(), 0);

        // The disk goes down: changes still commit, their entries wait in the queue.
        audit.faults().set_down(true);
        for k in ["c-1", "c-2"] {
            ledger
                .consume(&acme, key(k), Amount::new(10))
                .await
                .unwrap();
        }
        assert!(matches!(audit.sync().await.unwrap(), Synced::Failed(_)));
        assert_eq!(audit.backlog(), 2);

        // The process dies while the disk is down, leaving a torn frame: a new writer over
        // the same queue, the torn bytes cut (a 4-byte length and 3 bytes).
        audit.crash(Some(&[1, 2, 3])).await.unwrap();
        assert_eq!(audit.reopen().await.unwrap(), 7);
        audit.check_witness().unwrap();
        audit.faults().set_down(false);
        assert_eq!(flushed(audit.sync().await.unwrap()), 3);
        assert_eq!(audit.backlog(), 0);

        // The process dies right after writing an entry, before taking it off the queue:
        // the next writer finds it in the log and does not write it again.
        ledger
            .consume(&acme, key("c-3"), Amount::new(10))
            .await
            .unwrap();
        audit.faults().arm_death();
        assert!(matches!(audit.sync().await.unwrap(), Synced::Failed(_)));
        assert_eq!(audit.backlog(), 1);
        audit.crash(None).await.unwrap();
        assert_eq!(audit.reopen().await.unwrap(), 0);
        audit.check_witness().unwrap();
        assert_eq!(flushed(audit.sync().await.unwrap()), 4);

        // One record per journal entry, in order, each the one mapping of its entry.
        let records = audit.verify().unwrap();
        let journal = ledger
            .history(
                &acme,
                PageRequest {
                    after: None,
                    limit: 100,
                },
            )
            .await
            .unwrap()
            .entries;
        assert_eq!(records.len(), journal.len());
        let stream = stream_name(&acme);
        for (r, j) in records.iter().zip(&journal) {
            assert_eq!(r.entry.entry(), &audit_entry(&stream, j));
        }
    });
}

#[test]
fn a_write_failing_once_and_a_slow_disk_delay_integration_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let clock = ManualClock::new(sim::START);
        let mut audit =
            SimAudit::open(dir.path(), Arc::new(clock.clone()), sim::audit::BACKLOG_MAX)
                .await
                .unwrap();
        let ledger = Ledger::new(
            MemoryLedgerStore::builder()
                .audit(audit.memory_audit())
                .build(),
            clock,
        );
        let acme = TenantId::new("acme").unwrap();
        ledger
            .create_tenant(&acme, TenantSettings::default())
            .await
            .unwrap();
        let key = |k: &str| IdempotencyKey::new(k).unwrap();
        let grant = ledger.grant(&acme, key("g-1"), Amount::new(100), GrantOptions::default());
        grant.await.unwrap();
        assert_eq!(flushed(audit.sync().await.unwrap()), 1);

        // One write fails: that flush fails (or the writer's own retry succeeds); the next
        // flush integrates everything either way.
        ledger
            .consume(&acme, key("c-1"), Amount::new(10))
            .await
            .unwrap();
        audit.fail_once();
        let _either = audit.sync().await.unwrap();
        assert!(audit.faults().failures() >= 1, "the failure was injected");
        assert_eq!(flushed(audit.sync().await.unwrap()), 2);

        // A slow disk: changes commit and queue while the writer waits inside its write; no
        // flush is attempted meanwhile (it would wait for the disk).
        audit.set_slow(true).await.unwrap();
        for k in ["c-2", "c-3"] {
            ledger
                .consume(&acme, key(k), Amount::new(10))
                .await
                .unwrap();
            tokio::task::yield_now().await;
        }
        assert!(audit.is_slow());
        assert!(
            audit.sync().await.is_err(),
            "no flush while the disk is slow"
        );
        assert_eq!(audit.log_size(), Some(2));
        assert!(audit.backlog() >= 2);
        // Fast again: the waiting write finishes before `set_slow` returns, and the next
        // flush takes the rest.
        audit.set_slow(false).await.unwrap();
        assert_eq!(flushed(audit.sync().await.unwrap()), 4);
        assert_eq!(audit.backlog(), 0);

        // Slow again, and the process dies: the write in flight finishes, the new
        // process's disk is fast and its writer integrates what is queued.
        ledger
            .consume(&acme, key("c-4"), Amount::new(10))
            .await
            .unwrap();
        audit.set_slow(true).await.unwrap();
        tokio::task::yield_now().await;
        audit.crash(None).await.unwrap();
        assert!(!audit.is_slow());
        audit.reopen().await.unwrap();
        audit.check_witness().unwrap();
        assert_eq!(flushed(audit.sync().await.unwrap()), 5);
        assert_eq!(audit.verify().unwrap().len(), 5);
    });
}
