//! Balance thresholds, property-tested through the ledger on the memory store: under any
//! interleaving of grants (some expiring), consumes, refunds, expiries (the clock moving,
//! reads and sweeps) and, optionally, rollovers, each threshold fires exactly once per
//! downward crossing of the tenant's available credits, and never otherwise.
//!
//! The reference model walks the sequence of available balances the journal records (each
//! entry's `before` must be the previous entry's `after`, so the sequence is the tenant's
//! real path) with one armed flag per threshold: armed while at or above it, an event
//! expected when an armed threshold is passed downward.

use std::time::Duration;

use credits_core::{
    Amount, BalanceEvent, BalanceThresholds, EntryKind, EntrySeq, GrantOptions, IdempotencyKey,
    Ledger, MemoryLedgerStore, PageRequest, RolloverPolicy, TenantId, TenantSettings,
};
use futures::executor::block_on;
use metered_clock::{ManualClock, Timestamp};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    Grant {
        amount: u64,
        ttl_s: Option<u64>,
    },
    Consume {
        amount: u64,
    },
    /// Refund part of the `pick`-th consume so far (if any).
    Refund {
        pick: usize,
        amount: u64,
    },
    Wait {
        s: u64,
    },
    Sweep,
    Read,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1..=300u64, prop::option::of(1..=30u64))
            .prop_map(|(amount, ttl_s)| Step::Grant { amount, ttl_s }),
        4 => (1..=200u64).prop_map(|amount| Step::Consume { amount }),
        2 => (any::<usize>(), 1..=100u64).prop_map(|(pick, amount)| Step::Refund { pick, amount }),
        2 => (1..=20u64).prop_map(|s| Step::Wait { s }),
        1 => Just(Step::Sweep),
        1 => Just(Step::Read),
    ]
}

fn thresholds() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::btree_set(1..=400u64, 1..=8).prop_map(|s| s.into_iter().collect())
}

fn key(n: &mut u64) -> IdempotencyKey {
    *n += 1;
    IdempotencyKey::new(format!("k{n}")).expect("valid")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn thresholds_fire_exactly_once_per_downward_crossing(
        amounts in thresholds(),
        rollover in any::<bool>(),
        steps in prop::collection::vec(step(), 1..80),
    ) {
        let start = Timestamp::from_unix_millis(1_700_000_000_000);
        let clock = ManualClock::new(start);
        let ledger = Ledger::new(MemoryLedgerStore::new(), clock.clone());
        let t = TenantId::new("t").expect("valid");
        let settings = TenantSettings {
            thresholds: BalanceThresholds::new(amounts.iter().copied().map(Amount::new))
                .expect("generated within the rules"),
            rollover: rollover.then(|| {
                RolloverPolicy::new(50, Some(Amount::new(100)), Duration::from_secs(15))
                    .expect("valid")
            }),
            ..TenantSettings::default()
        };
        block_on(ledger.create_tenant(&t, settings)).expect("create");
        let mut n = 0u64;
        let mut consumes: Vec<EntrySeq> = Vec::new();
        let mut now = start;
        for step in steps {
            match step {
                Step::Grant { amount, ttl_s } => {
                    let mut options = GrantOptions::default();
                    if let Some(s) = ttl_s {
                        options = options.expires_at(now.saturating_add(Duration::from_secs(s)));
                    }
                    block_on(ledger.grant(&t, key(&mut n), Amount::new(amount), options))
                        .expect("grant");
                }
                Step::Consume { amount } => {
                    // Refused when short: that changes nothing (but due expiries).
                    if let Ok(r) = block_on(ledger.consume(&t, key(&mut n), Amount::new(amount))) {
                        consumes.push(r.entry);
                    }
                }
                Step::Refund { pick, amount } => {
                    if !consumes.is_empty() {
                        let entry = consumes[pick % consumes.len()];
                        // Refused past what was consumed: changes nothing.
                        let _ = block_on(ledger.refund(&t, key(&mut n), entry, Amount::new(amount)));
                    }
                }
                Step::Wait { s } => {
                    now = now.saturating_add(Duration::from_secs(s));
                    clock.set_now(now);
                }
                Step::Sweep => {
                    block_on(ledger.sweep_step(10)).expect("sweep");
                }
                Step::Read => {
                    block_on(ledger.balance(&t)).expect("balance");
                }
            }
        }
        // Everything due by now, applied.
        block_on(ledger.balance(&t)).expect("balance");

        let mut entries = Vec::new();
        let mut page = PageRequest::first(1_000);
        for _ in 0..100 {
            let p = block_on(ledger.history(&t, page)).expect("history");
            entries.extend(p.entries);
            match p.next {
                Some(next) => page.after = Some(next),
                None => break,
            }
        }
        let mut events: Vec<BalanceEvent> = Vec::new();
        let mut after = None;
        for _ in 0..100 {
            let p = block_on(ledger.events(&t, after, 1_000)).expect("events");
            events.extend(p.events);
            match p.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }

        // The model: one armed flag per threshold, walked along the journal.
        let mut available = Amount::ZERO;
        let mut armed: Vec<bool> = amounts.iter().map(|_| false).collect();
        let mut expected = Vec::new();
        for e in &entries {
            prop_assert_eq!(e.before.available, available, "entry {} continues the path", e.seq);
            available = e.after.available;
            for (i, &th) in amounts.iter().enumerate() {
                let th = Amount::new(th);
                if armed[i] && available < th {
                    expected.push((e.seq, th, available, e.at));
                }
                armed[i] = available >= th;
            }
        }
        let got: Vec<_> = events.iter().map(|e| (e.entry, e.threshold, e.available, e.at)).collect();
        prop_assert_eq!(&got, &expected, "one event per downward crossing, in order");
        for (i, e) in events.iter().enumerate() {
            prop_assert_eq!(e.seq.get(), i as u64 + 1, "numbered without gaps");
        }
        // A crossing by a rollover alone is impossible (it moves no balance).
        for e in &events {
            let entry = &entries[usize::try_from(e.entry.get() - 1).expect("fits")];
            prop_assert_ne!(entry.kind, EntryKind::RolledOver);
        }
        let totals = block_on(ledger.check_conservation(Some(&t))).expect("totals");
        prop_assert!(totals.is_ok(), "{:?}", totals);
    }
}
