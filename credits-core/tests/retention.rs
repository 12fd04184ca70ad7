//! The memory store forgets idempotency keys beyond its window or count, oldest first, and
//! remembers everything inside them.

use std::time::Duration;

use credits_core::{
    Amount, GrantOptions, IdempotencyKey, Ledger, LedgerStore, MemoryLedgerStore, TenantId,
    TenantSettings,
};
use metered_clock::{ManualClock, Timestamp};

fn k(s: &str) -> IdempotencyKey {
    IdempotencyKey::new(s).unwrap()
}

#[tokio::test]
async fn keys_beyond_the_count_are_forgotten_oldest_first() {
    let store = MemoryLedgerStore::builder().idempotency_keys_max(3).build();
    let ledger = Ledger::new(store, ManualClock::new(Timestamp::from_unix_millis(1_000)));
    let t = TenantId::new("t").unwrap();
    ledger
        .create_tenant(&t, TenantSettings::default())
        .await
        .unwrap();
    for i in 0..5 {
        ledger
            .grant(
                &t,
                k(&format!("g{i}")),
                Amount::new(1),
                GrantOptions::default(),
            )
            .await
            .unwrap();
    }
    for (i, remembered) in [(0, false), (1, false), (2, true), (3, true), (4, true)] {
        let rec = ledger
            .store()
            .idempotency_record(&t, &k(&format!("g{i}")))
            .await
            .unwrap();
        assert_eq!(rec.is_some(), remembered, "g{i}");
    }
    // A remembered key replays; a forgotten one is a new request.
    ledger
        .grant(&t, k("g4"), Amount::new(1), GrantOptions::default())
        .await
        .unwrap();
    assert_eq!(ledger.balance(&t).await.unwrap().available, Amount::new(5));
    ledger
        .grant(&t, k("g0"), Amount::new(1), GrantOptions::default())
        .await
        .unwrap();
    assert_eq!(ledger.balance(&t).await.unwrap().available, Amount::new(6));
    assert!(
        ledger
            .store()
            .idempotency_record(&t, &k("g0"))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        ledger
            .store()
            .idempotency_record(&t, &k("g2"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn keys_older_than_the_window_are_forgotten() {
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_000));
    let store = MemoryLedgerStore::builder()
        .idempotency_window(Duration::from_secs(60))
        .build();
    let ledger = Ledger::new(store, clock.clone());
    let t = TenantId::new("t").unwrap();
    ledger
        .create_tenant(&t, TenantSettings::default())
        .await
        .unwrap();
    ledger
        .grant(&t, k("old"), Amount::new(1), GrantOptions::default())
        .await
        .unwrap();
    clock.advance(Duration::from_secs(30));
    ledger
        .grant(&t, k("mid"), Amount::new(1), GrantOptions::default())
        .await
        .unwrap();
    clock.advance(Duration::from_secs(31));
    ledger
        .grant(&t, k("new"), Amount::new(1), GrantOptions::default())
        .await
        .unwrap();
    let known = |key: &'static str| {
        let ledger = ledger.clone();
        let t = t.clone();
        async move {
            ledger
                .store()
                .idempotency_record(&t, &k(key))
                .await
                .unwrap()
                .is_some()
        }
    };
    assert!(!known("old").await, "61 s old: forgotten");
    assert!(known("mid").await && known("new").await);
}
