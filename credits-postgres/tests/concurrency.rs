//! Many tasks on one tenant: no lost update, never negative, conservation, and an audit
//! chain that verifies and matches the journal one to one.

// Tests and benchmarks act as applications: they spawn tasks and sleep on tokio's timer.
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use audit_chain::{HmacKey, Keyring, LogRecord, MaskingPolicy, verify_records};
use credits_core::store::PageRequest;
use credits_core::{
    Amount, GrantOptions, IdempotencyKey, Ledger, LedgerError, TenantId, TenantSettings,
};
use credits_postgres::{Isolation, LedgerAudit};
use metered_clock::ManualClock;

fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::new(s).expect("key")
}

async fn hammer(isolation: Isolation, test: &str) {
    let Some(db) = common::test_db(test).await else {
        return;
    };
    let keyring = Arc::new(Keyring::new(HmacKey::new(1, [0x42; 32]).expect("key")));
    let clock = ManualClock::new(common::START);
    let store = db
        .store(
            db.config()
                .isolation(isolation)
                .audit(LedgerAudit::new(keyring.clone(), MaskingPolicy::standard())),
            Arc::new(clock.clone()),
        )
        .await;
    let ledger = Ledger::from_shared(Arc::new(store.clone()), Arc::new(clock.clone()));
    let t = TenantId::new("hot").expect("tenant");
    ledger
        .create_tenant(&t, TenantSettings::default())
        .await
        .expect("create");
    ledger
        .grant(&t, key("g"), Amount::new(1_000), GrantOptions::default())
        .await
        .expect("grant");

    // 16 tasks × 8 operations ask for 16 × 8 × 10 = 1,280 > 1,000: some must be refused.
    let tasks = (0..16).map(|task| {
        let ledger = ledger.clone();
        let t = t.clone();
        tokio::spawn(async move {
            let mut spent = 0u64;
            for op in 0..8 {
                let result = if (task + op) % 3 == 0 {
                    match ledger
                        .reserve(
                            &t,
                            key(&format!("r{task}-{op}")),
                            Amount::new(15),
                            Duration::from_secs(60),
                        )
                        .await
                    {
                        Ok(h) => ledger
                            .commit(&t, key(&format!("m{task}-{op}")), h.hold, Amount::new(10))
                            .await
                            .map(|_| 10),
                        Err(e) => Err(e),
                    }
                } else {
                    ledger
                        .consume(&t, key(&format!("c{task}-{op}")), Amount::new(10))
                        .await
                        .map(|_| 10)
                };
                match result {
                    Ok(n) => spent += n,
                    Err(LedgerError::InsufficientCredits { .. }) => {}
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            spent
        })
    });
    let mut spent = 0;
    for t in tasks {
        spent += t.await.expect("task");
    }
    let balance = ledger.balance(&t).await.expect("balance");
    assert_eq!(
        balance.available,
        Amount::new(1_000 - spent),
        "no lost update"
    );
    assert_eq!(balance.held, Amount::ZERO, "every hold resolved");
    // Holds outstanding at the end of the run may have starved the last consumers, so how
    // much was spent depends on the interleaving; it can never exceed what was granted.
    assert!(spent <= 1_000 && spent % 10 == 0, "spent {spent}");
    ledger
        .check_conservation(Some(&t))
        .await
        .expect("totals")
        .expect("conserved");
    // Never negative: every journal entry's running balance is a valid state, and the
    // entries chain without gaps.
    let mut journal = Vec::new();
    let mut page = PageRequest::first(1_000);
    loop {
        let p = ledger.history(&t, page).await.expect("history");
        journal.extend(p.entries);
        match p.next {
            Some(n) => page.after = Some(n),
            None => break,
        }
    }
    for (i, e) in journal.iter().enumerate() {
        assert_eq!(e.seq.get(), i as u64 + 1);
        if i > 0 {
            assert_eq!(e.before, journal[i - 1].after);
        }
    }
    // The audit chain verifies and matches the journal one to one.
    let sealed = store.audit_entries(&t, 0, 10_000).await.expect("audit");
    assert_eq!(
        sealed.len(),
        journal.len(),
        "one audit entry per journal entry"
    );
    let records: Vec<LogRecord> = sealed
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, s)| LogRecord::new(i as u64, s))
        .collect();
    let report = verify_records(&keyring, &records, None);
    assert!(report.is_intact(), "{:?}", report.failure);
    let stream = credits_core::audit::stream_name(&t);
    for (s, e) in sealed.iter().zip(&journal) {
        // The one mapping every backend seals with.
        assert_eq!(s.entry(), &credits_core::audit::audit_entry(&stream, e));
    }
    // A tampered row breaks verification: the last byte of an encoded entry is its MAC's.
    let mut tampered = records.clone();
    let mut bytes = Vec::new();
    tampered[3].entry.encode(&mut bytes);
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let bad = audit_chain::SealedEntry::decode(&bytes).expect("a flipped MAC byte still decodes");
    tampered[3].entry = bad.into();
    assert!(!verify_records(&keyring, &tampered, None).is_intact());
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_consumers_read_committed() {
    hammer(Isolation::ReadCommitted, "hammer_rc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_consumers_serializable() {
    hammer(Isolation::Serializable, "hammer_ser").await;
}
