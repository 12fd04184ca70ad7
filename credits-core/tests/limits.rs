//! Amounts and counters at the edge of what a backend stores (`u64::MAX` in memory,
//! `i64::MAX` for PostgreSQL's bigint, here as a memory store limited to it): any sequence
//! of grants, consumes, holds and refunds near the limit either applies and keeps every
//! invariant, or is refused with `AmountOverflow` and changes nothing.

use std::time::Duration;

use credits_core::LedgerStore;
use credits_core::store::PageRequest;
use credits_core::{
    Amount, Command, IdempotencyKey, Ledger, LedgerError, MemoryLedgerStore, Request, TenantId,
    TenantSettings,
};
use futures::executor::block_on;
use metered_clock::{ManualClock, Timestamp};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Grant(Near),
    Consume(Near),
    Reserve(Near),
    Refund(Near),
    CommitLast,
}

/// An amount relative to the limit: tiny, about half of it, or just below or above it.
#[derive(Clone, Copy, Debug)]
enum Near {
    Small(u64),
    Half(u64),
    Top(u64),
}

impl Near {
    fn units(self, limit: u64) -> u64 {
        match self {
            Near::Small(n) => n,
            Near::Half(d) => (limit / 2).saturating_add(d),
            Near::Top(d) => limit.saturating_sub(d),
        }
    }
}

fn near() -> impl Strategy<Value = Near> {
    prop_oneof![
        (1..1_000u64).prop_map(Near::Small),
        (0..1_000u64).prop_map(Near::Half),
        (0..1_000u64).prop_map(Near::Top),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => near().prop_map(Op::Grant),
        2 => near().prop_map(Op::Consume),
        2 => near().prop_map(Op::Reserve),
        2 => near().prop_map(Op::Refund),
        1 => Just(Op::CommitLast),
    ]
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

/// What a refused change must leave as it was: balance, counters, journal length.
async fn snapshot(
    ledger: &Ledger<MemoryLedgerStore>,
    t: &TenantId,
) -> (credits_core::Balance, credits_core::Totals, usize) {
    (
        ledger.balance(t).await.expect("balance"),
        ledger.store().totals(t).await.expect("totals"),
        ledger
            .history(t, PageRequest::first(1_000))
            .await
            .expect("history")
            .entries
            .len(),
    )
}

fn run(limit: u64, ops: &[Op]) -> Result<(), TestCaseError> {
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_700_000_000_000));
    let store = MemoryLedgerStore::builder().value_limit(limit).build();
    let ledger = Ledger::new(store, clock.clone());
    let t = TenantId::new("edge").expect("tenant");
    block_on(async {
        ledger
            .create_tenant(&t, TenantSettings::default())
            .await
            .expect("create");
        let mut last_consume = None;
        let mut last_hold = None;
        for (i, op) in ops.iter().enumerate() {
            let command = match op {
                Op::Grant(n) => Command::Grant {
                    amount: Amount::new(n.units(limit)),
                    expires_at: None,
                    priority: 0,
                },
                Op::Consume(n) => Command::Consume {
                    amount: Amount::new(n.units(limit)),
                },
                Op::Reserve(n) => Command::Reserve {
                    amount: Amount::new(n.units(limit)),
                    ttl: Duration::from_secs(60),
                },
                Op::Refund(n) => match last_consume {
                    Some(entry) => Command::Refund {
                        entry,
                        amount: Amount::new(n.units(limit)),
                    },
                    None => continue,
                },
                Op::CommitLast => match last_hold {
                    Some(hold) => Command::Commit {
                        hold,
                        amount: Amount::new(1),
                    },
                    None => continue,
                },
            };
            let before = snapshot(&ledger, &t).await;
            let key = IdempotencyKey::new(format!("op-{i}")).expect("key");
            match ledger.apply(&Request::new(t.clone(), key, command)).await {
                Ok(receipt) => {
                    if matches!(op, Op::Consume(_)) {
                        last_consume = Some(receipt.entry);
                    }
                    if let Some(hold) = receipt.hold() {
                        last_hold = Some(hold);
                    }
                }
                Err(LedgerError::AmountOverflow) => {
                    let after = snapshot(&ledger, &t).await;
                    prop_assert_eq!(&after, &before, "a refused {:?} changed something", op);
                }
                // Other domain answers (insufficient credits, a hold already resolved …)
                // are not this test's subject.
                Err(e) => prop_assert!(!e.is_storage(), "{e}"),
            }
            let totals = ledger.store().totals(&t).await.expect("totals");
            totals
                .check()
                .map_err(|v| TestCaseError::fail(format!("{v}")))?;
            let inflow = totals
                .granted
                .checked_add(totals.refunded)
                .and_then(|s| s.checked_add(totals.overdrawn))
                .expect("the inflow fits a u64");
            prop_assert!(inflow.units() <= limit, "inflow {inflow:?} past {limit}");
        }
        let replay = ledger.verify_journal(&t).await.expect("journal");
        prop_assert!(replay.is_ok(), "{replay:?}");
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn near_u64_max_everything_holds_or_nothing_changes(ops in proptest::collection::vec(op(), 1..40)) {
        run(u64::MAX, &ops)?;
    }

    #[test]
    fn near_a_bigint_everything_holds_or_nothing_changes(ops in proptest::collection::vec(op(), 1..40)) {
        run(i64::MAX.unsigned_abs(), &ops)?;
    }
}
