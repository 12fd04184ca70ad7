//! Bugs the simulator found in other crates, fixed there, kept here as regression tests in
//! the shape the simulator found them (see `docs/simulation.md`, "Bugs found").

use std::sync::Arc;
use std::time::Duration;

use credits_core::tx::{
    HoldBranch, LedgerHolds, MemoryTxLog, TransactionManager, TxDecision, TxLog, TxPhase,
};
use credits_core::{Amount, GrantOptions, IdempotencyKey, Ledger, TenantId, TenantSettings};
use metered_clock::{Clock, ManualClock};

/// Two-phase commit across a long outage: the process dies right after the commit decision
/// is logged (before phase two) and stays down longer than any hold time-to-live (here
/// [`sim::LONG_OUTAGE`]; once, prepared holds expired then and the transaction stayed
/// decided "commit" but applied nowhere). At restart the ledger's recovery pass and
/// `TransactionManager::recover` run as the simulator runs them: the decision must be
/// applied on every participant, exactly once, with every credit accounted for.
#[test]
fn decided_commit_is_applied_everywhere_after_an_outage_longer_than_any_hold_ttl() {
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
        let tx = tm.begin(sim::TX_TIMEOUT).await.unwrap();
        tm.enlist(
            tx,
            "east",
            HoldBranch::new(a.clone(), Amount::new(40), Amount::new(30))
                .unwrap()
                .payload(),
        )
        .await
        .unwrap();
        tm.enlist(
            tx,
            "west",
            HoldBranch::new(b.clone(), Amount::new(50), Amount::new(20))
                .unwrap()
                .payload(),
        )
        .await
        .unwrap();
        tm.prepare(tx).await.unwrap();
        // The decision is durable; the process dies before phase two.
        assert_eq!(
            log.decide(tx, TxDecision::Commit).await.unwrap(),
            TxDecision::Commit
        );
        drop(tm);
        // A long outage, then the restart; the expiry sweep first, the worst order.
        clock.advance(sim::LONG_OUTAGE + Duration::from_secs(365 * 24 * 3600));
        let sweep = ledger.recover().await.unwrap();
        assert_eq!(sweep.holds_expired, 0, "prepared holds outlive the outage");
        let report = manager(&log).recover().await.unwrap();
        assert_eq!((report.committed, report.failed), (1, 0));
        let record = log.get(tx).await.unwrap().unwrap();
        assert_eq!(record.phase, TxPhase::Finished(TxDecision::Commit));
        for (t, spent) in [(&a, 30), (&b, 20)] {
            let totals = ledger.store().totals(t).await.unwrap();
            assert_eq!(totals.consumed, Amount::new(spent), "{t}");
            assert_eq!(totals.held, Amount::ZERO, "{t}");
            assert_eq!(
                totals.available.units() + totals.consumed.units(),
                100,
                "{t}: conservation"
            );
        }
        // Nothing left to do, and a second recovery applies nothing twice.
        let again = manager(&log).recover().await.unwrap();
        assert_eq!((again.committed, again.failed), (0, 0));
        assert_eq!(
            ledger.store().totals(&a).await.unwrap().consumed,
            Amount::new(30)
        );
    });
}
