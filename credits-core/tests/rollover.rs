//! Rollover at expiry, property-tested on the pure account rules (every backend applies
//! them): whatever the policy, the grants, the consumes and the clock, a rollover never
//! creates credits (the granted counter is the sum of the grants), never rolls more than
//! the policy's share of the expiring lot nor more than its cap, and conservation holds
//! after every step.

use std::time::Duration;

use credits_core::backend::{Account, Applied};
use credits_core::{
    Amount, Command, EntryKind, IdempotencyKey, JournalEntry, Request, RolloverPolicy, TenantId,
    TenantSettings,
};
use metered_clock::Timestamp;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    Grant { amount: u64, ttl_s: u64 },
    Consume { amount: u64 },
    Wait { s: u64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1..=1_000u64, 1..=50u64).prop_map(|(amount, ttl_s)| Step::Grant { amount, ttl_s }),
        (1..=500u64).prop_map(|amount| Step::Consume { amount }),
        (1..=60u64).prop_map(|s| Step::Wait { s }),
    ]
}

fn policy() -> impl Strategy<Value = RolloverPolicy> {
    (1..=100u8, prop::option::of(1..=800u64), 1..=40u64).prop_map(|(share, cap, ttl_s)| {
        RolloverPolicy::new(share, cap.map(Amount::new), Duration::from_secs(ttl_s))
            .expect("generated within the rules")
    })
}

/// Checks the rollovers among `entries` against `policy`: each `rolled_over` entry is
/// followed (unless all of the lot rolled) by the `lot_expired` entry of the same lot's rest.
fn check_rollovers(policy: &RolloverPolicy, entries: &[JournalEntry]) -> Result<(), TestCaseError> {
    for (i, e) in entries.iter().enumerate() {
        if e.kind != EntryKind::RolledOver {
            continue;
        }
        prop_assert_eq!(e.before, e.after, "a rollover moves no balance");
        let rest = match entries.get(i + 1) {
            Some(next) if next.kind == EntryKind::LotExpired && next.at == e.at => next.amount,
            _ => Amount::ZERO,
        };
        let remaining = e.amount.units() + rest.units();
        // The rolled part is the share of what remained, rounded down, at most the cap
        // (when the whole lot rolled over, `rest` is zero and the share was 100 %).
        prop_assert_eq!(e.amount, policy.rolled(Amount::new(remaining)));
        if let Some(cap) = policy.cap() {
            prop_assert!(e.amount <= cap, "{:?} past the cap {:?}", e.amount, cap);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn rollover_never_creates_credits_nor_passes_its_cap(
        policy in policy(),
        steps in prop::collection::vec(step(), 1..80),
    ) {
        let tenant = TenantId::new("t").expect("valid");
        let mut now = Timestamp::from_unix_millis(1_700_000_000_000);
        let settings = TenantSettings { rollover: Some(policy), ..TenantSettings::default() };
        let mut account = Account::new(tenant.clone(), settings, now);
        let mut granted = 0u64;
        let mut n = 0u64;
        for step in steps {
            let applied: Applied = match step {
                Step::Wait { s } => {
                    now = now.saturating_add(Duration::from_secs(s));
                    account.expire_due(now)
                }
                Step::Grant { amount, ttl_s } => {
                    n += 1;
                    let command = Command::Grant {
                        amount: Amount::new(amount),
                        expires_at: Some(now.saturating_add(Duration::from_secs(ttl_s))),
                        priority: 0,
                    };
                    let key = IdempotencyKey::new(format!("k{n}")).expect("valid");
                    let applied = account.apply(&Request::new(tenant.clone(), key, command), now, None);
                    if applied.result.is_ok() {
                        granted += amount;
                    }
                    applied
                }
                Step::Consume { amount } => {
                    n += 1;
                    let command = Command::Consume { amount: Amount::new(amount) };
                    let key = IdempotencyKey::new(format!("k{n}")).expect("valid");
                    account.apply(&Request::new(tenant.clone(), key, command), now, None)
                }
            };
            check_rollovers(&policy, &applied.entries)?;
            let totals = account.totals();
            prop_assert_eq!(totals.granted, Amount::new(granted), "a rollover is not a grant");
            prop_assert!(totals.check().is_ok(), "conservation: {:?}", totals);
        }
    }
}
