//! The shipped fault-injecting wrapper (`credits_core::testing::FaultyStore`): after a
//! countdown, a call fails either before the inner store runs (nothing happened) or after it
//! ran (the acknowledgement was lost). Every failure must leave no partial effect, and
//! retrying with the same idempotency key must converge to exactly the state of a
//! fault-free run.

use std::sync::Arc;
use std::time::Duration;

use credits_core::store::{Page, PageRequest};
use credits_core::testing::{FaultKind, Faults, FaultyStore};
use credits_core::{
    Amount, Command, EntrySeq, HoldId, IdempotencyKey, Ledger, LedgerError, LedgerStore,
    MemoryLedgerStore, Receipt, Request, TenantId, TenantSettings, Totals,
};
use metered_clock::{ManualClock, Timestamp};

/// A deterministic workload touching every command kind, two tenants and a batch.
fn workload(a: &TenantId, b: &TenantId) -> Vec<Vec<Request>> {
    let r = |t: &TenantId, k: String, command| {
        Request::new(t.clone(), IdempotencyKey::new(k).unwrap(), command)
    };
    let mut steps = Vec::new();
    for t in [a, b] {
        steps.push(vec![r(
            t,
            format!("{t}-g"),
            Command::Grant {
                amount: Amount::new(500),
                expires_at: None,
                priority: 0,
            },
        )]);
    }
    for i in 0..40u64 {
        let t = if i % 3 == 0 { b } else { a };
        let cmd = match i % 5 {
            0 => Command::Consume {
                amount: Amount::new(7 + i % 4),
            },
            1 => Command::Reserve {
                amount: Amount::new(20),
                ttl: Duration::from_secs(60),
            },
            2 => Command::Commit {
                hold: HoldId::new(1 + i / 5),
                amount: Amount::new(12),
            },
            3 => Command::Refund {
                entry: EntrySeq::new(3),
                amount: Amount::new(1),
            },
            _ => Command::Consume {
                amount: Amount::new(10_000),
            }, // fails: insufficient
        };
        steps.push(vec![r(t, format!("op-{i}"), cmd)]);
        if i % 10 == 9 {
            steps.push(vec![
                r(
                    a,
                    format!("batch-{i}-a"),
                    Command::Consume {
                        amount: Amount::new(3),
                    },
                ),
                r(
                    b,
                    format!("batch-{i}-b"),
                    Command::Grant {
                        amount: Amount::new(9),
                        expires_at: None,
                        priority: 1,
                    },
                ),
            ]);
        }
    }
    steps
}

async fn apply_step(
    ledger: &Ledger<dyn LedgerStore>,
    step: &[Request],
) -> Result<Vec<Receipt>, LedgerError> {
    if step.len() == 1 {
        ledger.apply(&step[0]).await.map(|o| vec![o])
    } else {
        ledger.batch(step).await
    }
}

async fn snapshot(store: &dyn LedgerStore, tenants: &[&TenantId]) -> Vec<(Totals, Page)> {
    let mut out = Vec::new();
    for t in tenants {
        out.push((
            store.totals(t).await.unwrap(),
            store.history(t, PageRequest::first(1_000)).await.unwrap(),
        ));
    }
    out
}

/// Runs the workload, retrying each failed step with the same keys; returns every step's
/// final result and the final state.
async fn run(
    store: Arc<dyn LedgerStore>,
    arm: impl FnOnce(),
) -> (Vec<Result<Vec<Receipt>, LedgerError>>, Vec<(Totals, Page)>) {
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_000_000));
    let ledger: Ledger<dyn LedgerStore> =
        Ledger::from_shared(store.clone(), Arc::new(clock.clone()));
    let a = TenantId::new("a").unwrap();
    let b = TenantId::new("b").unwrap();
    ledger
        .create_tenant(&a, TenantSettings::default())
        .await
        .unwrap();
    ledger
        .create_tenant(&b, TenantSettings::default())
        .await
        .unwrap();
    arm();
    let mut results = Vec::new();
    for step in workload(&a, &b) {
        clock.advance(Duration::from_millis(10));
        let mut attempts = 0;
        loop {
            let before = snapshot(store.as_ref(), &[&a, &b]).await;
            let result = apply_step(&ledger, &step).await;
            match &result {
                Err(e) if e.is_retryable() => {
                    attempts += 1;
                    assert!(attempts < 5, "a retry must eventually succeed");
                    // A failure is all or nothing: either no change, or the whole change
                    // (lost acknowledgement) — never part of it.
                    let after = snapshot(store.as_ref(), &[&a, &b]).await;
                    for ((tb, hb), (ta, ha)) in before.iter().zip(&after) {
                        assert!(ta.check().is_ok());
                        let grew = ha.entries.len() - hb.entries.len();
                        assert!(grew == 0 || tb != ta, "entries without a balance change");
                        assert_eq!(
                            &ha.entries[..hb.entries.len()],
                            &hb.entries[..],
                            "journal is append-only"
                        );
                    }
                }
                _ => {
                    results.push(result);
                    break;
                }
            }
        }
    }
    (results, snapshot(store.as_ref(), &[&a, &b]).await)
}

#[tokio::test]
async fn retries_after_injected_faults_converge_to_the_fault_free_state() {
    let (clean_results, clean_state) = run(Arc::new(MemoryLedgerStore::new()), || ()).await;
    assert!(
        clean_results.iter().any(|r| r.is_err()),
        "the workload includes domain failures"
    );
    for fault in [FaultKind::Before, FaultKind::After] {
        for every in [2, 3, 7] {
            let faults = Arc::new(Faults::new());
            let store = Arc::new(FaultyStore::new(
                Arc::new(MemoryLedgerStore::new()),
                faults.clone(),
            ));
            let (results, state) = run(store, || faults.arm_every(every, fault)).await;
            assert!(faults.injected() > 5, "faults were injected");
            assert_eq!(
                results, clean_results,
                "{fault:?} every {every}: same outcomes"
            );
            assert_eq!(
                state, clean_state,
                "{fault:?} every {every}: same final state and journal"
            );
        }
    }
}

#[tokio::test]
async fn a_fault_before_the_store_changes_nothing_and_a_lost_ack_replays() {
    for fault in [FaultKind::Before, FaultKind::After] {
        let faults = Arc::new(Faults::new());
        let store = Arc::new(FaultyStore::new(
            Arc::new(MemoryLedgerStore::new()),
            faults.clone(),
        ));
        let clock = ManualClock::new(Timestamp::from_unix_millis(5_000));
        let ledger = Ledger::from_shared(store.clone(), Arc::new(clock));
        let t = TenantId::new("t").unwrap();
        ledger
            .create_tenant(&t, TenantSettings::default())
            .await
            .unwrap();
        faults.arm(1, fault); // from here, the second mutation fails, once
        let k = |s: &str| IdempotencyKey::new(s).unwrap();
        ledger
            .grant(&t, k("g"), Amount::new(100), Default::default())
            .await
            .unwrap(); // call 1
        let failed = ledger.consume(&t, k("c"), Amount::new(30)).await; // call 2: fault
        assert!(failed.as_ref().is_err_and(LedgerError::is_retryable));
        let balance = ledger.balance(&t).await.unwrap().available;
        match fault {
            FaultKind::Before => assert_eq!(balance, Amount::new(100), "nothing applied"),
            _ => assert_eq!(balance, Amount::new(70), "applied, ack lost"),
        }
        let retried = ledger.consume(&t, k("c"), Amount::new(30)).await.unwrap(); // call 3
        assert_eq!(
            retried.balance.available,
            Amount::new(70),
            "applied exactly once"
        );
        assert!(ledger.check_conservation(None).await.unwrap().is_ok());
    }
}
