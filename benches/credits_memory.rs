//! Bytes of heap per live hold in credits-core, counted exactly by a counting global
//! allocator (`stats_alloc`; no `unsafe` here). A separate bench binary so that the counting
//! allocator does not slow down the timed benchmarks in `benches/credits.rs`.
//!
//! `cargo bench --bench credits_memory`
//!
//! Per live hold, as net heap growth (allocated − freed) divided by the number of holds:
//!
//! * **hold state**: 1,000,000 holds (100 on each of 10,000 tenants) created through the
//!   pure `Account` rules, whose change sets are dropped: what the ledger must keep per live
//!   hold (the hold, the lots it drew from, its expiry index entry);
//! * **through the memory store**: the same holds through `Ledger::reserve` on the
//!   `MemoryLedgerStore`, which also keeps each reserve's journal entry and idempotency
//!   record (per-operation history, not per-hold state).
//!
//! Per live tenant, the net heap growth of creating 1,000,000 tenants, each granted one
//! lot, divided by 1,000,000: through the pure `Account` rules (the account's state), and
//! through the `MemoryLedgerStore` (with the store's tenant table, the grant's journal
//! entry and idempotency record).
#![allow(clippy::print_stdout)] // the figures are printed
#![allow(missing_docs)] // a bench binary

use std::alloc::System;
use std::time::Duration;

use futures::executor::block_on;
use metered_suite::clock::{ManualClock, Timestamp};
use metered_suite::credits::backend::Account;
use metered_suite::credits::{
    Amount, Command, GrantOptions, IdempotencyKey, Ledger, MemoryLedgerStore, Request, TenantId,
    TenantSettings,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const TENANTS: usize = 10_000;
const HOLDS_PER_TENANT: usize = 100;
const HOLDS: usize = TENANTS * HOLDS_PER_TENANT;

fn net(region: &Region<'_, System>) -> isize {
    let s = region.change();
    (s.bytes_allocated + s.bytes_reallocated.max(0) as usize) as isize
        - s.bytes_deallocated as isize
        + s.bytes_reallocated.min(0)
}

fn per_hold(bytes: isize) -> f64 {
    bytes as f64 / HOLDS as f64
}

fn main() {
    let now = Timestamp::from_unix_millis(1_767_225_600_000);
    let tenants: Vec<TenantId> = (0..TENANTS)
        .map(|i| TenantId::new(format!("tenant-{i}")).unwrap())
        .collect();
    // Requests are built before counting; only the ledger's own memory is measured.
    let requests: Vec<Vec<Request>> = tenants
        .iter()
        .map(|t| {
            (0..HOLDS_PER_TENANT)
                .map(|h| {
                    Request::new(
                        t.clone(),
                        IdempotencyKey::new(format!("hold-{h}")).unwrap(),
                        Command::Reserve {
                            amount: Amount::new(5),
                            ttl: Duration::from_secs(60),
                        },
                    )
                })
                .collect()
        })
        .collect();
    let grant = |t: &TenantId| {
        Request::new(
            t.clone(),
            IdempotencyKey::new("funding").unwrap(),
            Command::Grant {
                amount: Amount::new(1_000_000),
                expires_at: None,
                priority: 0,
            },
        )
    };

    // Hold state in the pure rules.
    let mut accounts: Vec<Account> = tenants
        .iter()
        .map(|t| {
            let mut a = Account::new(t.clone(), TenantSettings::default(), now);
            a.apply(&grant(t), now, None).result.unwrap();
            a
        })
        .collect();
    let region = Region::new(GLOBAL);
    for (a, reqs) in accounts.iter_mut().zip(&requests) {
        for r in reqs {
            let applied = a.apply(r, now, None);
            assert!(applied.result.is_ok());
        }
    }
    let core = net(&region);
    assert_eq!(
        accounts.iter().map(Account::active_holds).sum::<usize>(),
        HOLDS
    );
    drop(accounts);

    // The same through the memory store (journal and idempotency records included).
    let clock = ManualClock::new(now);
    let ledger = Ledger::new(MemoryLedgerStore::new(), clock);
    block_on(async {
        for t in &tenants {
            ledger
                .create_tenant(t, TenantSettings::default())
                .await
                .unwrap();
            ledger
                .grant(
                    t,
                    IdempotencyKey::new("funding").unwrap(),
                    Amount::new(1_000_000),
                    GrantOptions::default(),
                )
                .await
                .unwrap();
        }
    });
    let region = Region::new(GLOBAL);
    block_on(async {
        for reqs in &requests {
            for r in reqs {
                ledger.apply(r).await.unwrap();
            }
        }
    });
    let store = net(&region);
    println!(
        "credits/memory: {HOLDS} live holds on {TENANTS} tenants: hold state {:.1} bytes/hold; through MemoryLedgerStore (with journal entry and idempotency record per reserve) {:.1} bytes/hold",
        per_hold(core),
        per_hold(store)
    );
    drop(ledger);
    per_tenant(now);
}

/// Heap per live tenant with 1,000,000 tenants, each granted one lot.
fn per_tenant(now: Timestamp) {
    const MANY: usize = 1_000_000;
    // Names, keys and requests are built before counting.
    let tenants: Vec<TenantId> = (0..MANY)
        .map(|i| TenantId::new(format!("tenant-{i}")).unwrap())
        .collect();
    let grants: Vec<Request> = tenants
        .iter()
        .map(|t| {
            Request::new(
                t.clone(),
                IdempotencyKey::new("funding").unwrap(),
                Command::Grant {
                    amount: Amount::new(1_000),
                    expires_at: None,
                    priority: 0,
                },
            )
        })
        .collect();
    let region = Region::new(GLOBAL);
    let accounts: Vec<Account> = tenants
        .iter()
        .zip(&grants)
        .map(|(t, g)| {
            let mut a = Account::new(t.clone(), TenantSettings::default(), now);
            assert!(a.apply(g, now, None).result.is_ok());
            a
        })
        .collect();
    let core = net(&region);
    drop(accounts);
    let ledger = Ledger::new(MemoryLedgerStore::new(), ManualClock::new(now));
    let region = Region::new(GLOBAL);
    block_on(async {
        for (t, g) in tenants.iter().zip(&grants) {
            ledger
                .create_tenant(t, TenantSettings::default())
                .await
                .unwrap();
            ledger.apply(g).await.unwrap();
        }
    });
    let store = net(&region);
    let per = |bytes: isize| bytes as f64 / MANY as f64;
    println!(
        "credits/memory: {MANY} live tenants with one lot each: account state {:.1} bytes/tenant; through MemoryLedgerStore (with its tenant table, the grant's journal entry and idempotency record) {:.1} bytes/tenant",
        per(core),
        per(store)
    );
}
