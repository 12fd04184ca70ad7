//! Many tasks on a two-thread runtime consume, reserve, commit and cancel on a few shared
//! tenants: afterwards no update is lost, nothing is negative and conservation holds.

// Tests and benchmarks act as applications: they spawn tasks and sleep on tokio's timer.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use credits_core::{
    Amount, GrantOptions, IdempotencyKey, Ledger, LedgerError, MemoryLedgerStore, TenantId,
    TenantSettings,
};
use metered_clock::{ManualClock, Timestamp};

const TENANTS: usize = 6;
const TASKS: usize = 64;
const OPS_PER_TASK: usize = if cfg!(debug_assertions) { 150 } else { 2_000 };
const GRANT: u64 = 40_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tasks_lose_no_update_and_conserve_credits() {
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_000_000));
    // Few shards, so tenants share locks and tasks really contend.
    let ledger = Ledger::new(
        MemoryLedgerStore::builder().shards(2).build(),
        clock.clone(),
    );
    let tenants: Vec<TenantId> = (0..TENANTS)
        .map(|i| TenantId::new(format!("t{i}")).unwrap())
        .collect();
    for t in &tenants {
        ledger
            .create_tenant(t, TenantSettings::default())
            .await
            .unwrap();
        ledger
            .grant(
                t,
                IdempotencyKey::new("g").unwrap(),
                Amount::new(GRANT),
                GrantOptions::default(),
            )
            .await
            .unwrap();
    }
    let spent: Arc<Vec<AtomicU64>> = Arc::new((0..TENANTS).map(|_| AtomicU64::new(0)).collect());
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let (ledger, tenants, spent) = (ledger.clone(), tenants.clone(), spent.clone());
        handles.push(tokio::spawn(async move {
            for op in 0..OPS_PER_TASK {
                let i = (task * 7 + op * 13) % TENANTS;
                let t = &tenants[i];
                let key = |s: &str| IdempotencyKey::new(format!("{task}-{op}-{s}")).unwrap();
                let amount = Amount::new(1 + (op % 5) as u64);
                let result = match op % 3 {
                    0 => ledger
                        .consume(t, key("c"), amount)
                        .await
                        .map(|_| amount.units()),
                    1 => {
                        let hold = ledger
                            .reserve(t, key("r"), Amount::new(6), Duration::from_secs(600))
                            .await?;
                        let hold = hold.hold;
                        // Retrying the commit with the same key must not charge twice.
                        ledger.commit(t, key("m"), hold, amount).await?;
                        ledger
                            .commit(t, key("m"), hold, amount)
                            .await
                            .map(|_| amount.units())
                    }
                    _ => {
                        let hold = ledger
                            .reserve(t, key("r"), amount, Duration::from_secs(600))
                            .await?;
                        ledger.cancel(t, key("x"), hold.hold).await.map(|_| 0)
                    }
                };
                match result {
                    Ok(n) => {
                        spent[i].fetch_add(n, Ordering::Relaxed);
                    }
                    Err(LedgerError::InsufficientCredits { .. }) => {}
                    Err(e) => return Err(e),
                }
                if op % 16 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            Ok::<(), LedgerError>(())
        }));
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
    let mut total_spent = 0;
    for (i, t) in tenants.iter().enumerate() {
        let totals = ledger.store().as_ref();
        let totals = credits_core::LedgerStore::totals(totals, t).await.unwrap();
        let s = spent[i].load(Ordering::Relaxed);
        total_spent += s;
        assert_eq!(
            totals.consumed.units(),
            s,
            "tenant {t}: every acknowledged spend, once"
        );
        assert_eq!(
            totals.available.units(),
            GRANT - s,
            "tenant {t}: no lost update"
        );
        assert_eq!(totals.held, Amount::ZERO, "every hold resolved");
        assert!(totals.check().is_ok(), "{:?}", totals.check());
    }
    assert!(total_spent > 0);
    let all = ledger.check_conservation(None).await.unwrap().unwrap();
    assert_eq!(all.consumed.units(), total_spent);
}
