//! Known gaps in other crates, pinned as tests that pass while the gap exists and describe
//! it precisely (see `docs/simulation.md`, "Bugs found"). When the owning crate closes a
//! gap, its test here fails: turn it into a regression test asserting the fixed behaviour.

use std::sync::Arc;
use std::time::Duration;

use credits_core::tx::{
    Decision, HoldBranch, LedgerHolds, MemoryTxLog, TransactionManager, TxLog, TxPhase,
};
use credits_core::{Amount, GrantOptions, IdempotencyKey, Ledger, TenantId, TenantSettings};
use metered_clock::{Clock, ManualClock};

/// Two-phase commit over expiring holds: the process dies right after the commit decision
/// is logged (before phase two), the outage outlasts the branch holds' TTL, and at restart
/// `TransactionManager::recover` cannot commit the branches any more (`HoldExpired`): the
/// transaction stays decided-commit and applied nowhere; every later recovery fails again.
#[test]
fn known_gap_decided_commit_is_not_applied_after_an_outage_longer_than_the_hold_ttl() {
    futures::executor::block_on(async {
        let clock = ManualClock::new(sim::START);
        let ledger: Ledger = Ledger::from_shared(
            Arc::new(credits_core::MemoryLedgerStore::new()),
            Arc::new(clock.clone()),
        );
        let (a, b) = (TenantId::new("a").unwrap(), TenantId::new("b").unwrap());
        for t in [&a, &b] {
            ledger
                .create_tenant(t, TenantSettings::default())
                .await
                .unwrap();
            let key = IdempotencyKey::new(format!("{t}-grant")).unwrap();
            ledger
                .grant(t, key, Amount::new(100), GrantOptions::default())
                .await
                .unwrap();
        }
        let log = Arc::new(MemoryTxLog::new());
        let manager = |log: &Arc<MemoryTxLog>| {
            TransactionManager::builder(log.clone(), Arc::new(clock.clone()) as Arc<dyn Clock>)
                .participant(Arc::new(LedgerHolds::new("east", ledger.clone())))
                .participant(Arc::new(LedgerHolds::new("west", ledger.clone())))
                .build()
        };
        let tm = manager(&log);
        let ttl = Duration::from_secs(120);
        let tx = tm.begin(Duration::from_secs(30)).await.unwrap();
        tm.enlist(
            tx,
            "east",
            HoldBranch::new(a.clone(), Amount::new(40), Amount::new(30), ttl).payload(),
        )
        .await
        .unwrap();
        tm.enlist(
            tx,
            "west",
            HoldBranch::new(b.clone(), Amount::new(50), Amount::new(20), ttl).payload(),
        )
        .await
        .unwrap();
        tm.prepare(tx).await.unwrap();
        // The decision is durable; the process dies before phase two.
        assert_eq!(
            log.decide(tx, Decision::Commit).await.unwrap(),
            Decision::Commit
        );
        drop(tm);
        // A long outage, then the restart: transaction recovery first, as documented.
        clock.advance(ttl + Duration::from_secs(1));
        let report = manager(&log).recover().await.unwrap();
        assert_eq!((report.committed, report.failed), (0, 1));
        let record = log.get(tx).await.unwrap().unwrap();
        assert_eq!(record.phase, TxPhase::Decided(Decision::Commit));
        // Decided "commit", yet neither branch consumed anything: the first branch's hold
        // expired, and phase two stopped there (the second hold expires at its next touch).
        for t in [&a, &b] {
            let totals = ledger.store().totals(t).await.unwrap();
            assert_eq!(totals.consumed, Amount::ZERO, "{t}");
            assert_eq!(totals.available.units() + totals.held.units(), 100, "{t}");
        }
    });
}
