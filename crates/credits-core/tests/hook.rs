//! The journal hook sees every journal entry exactly once, in journal order, including
//! expiries and batch entries, and nothing from rejected requests.

use std::sync::Arc;
use std::time::Duration;

use credits_core::{
    Amount, Command, GrantOptions, IdempotencyKey, JournalEntry, JournalHook, Ledger,
    MemoryLedgerStore, PageRequest, Request, TenantId, TenantSettings,
};
use metered_clock::{ManualClock, Timestamp};
use parking_lot::Mutex;

#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<JournalEntry>>);

impl JournalHook for Recorder {
    fn on_entries(&self, tenant: &TenantId, entries: &[JournalEntry]) {
        assert!(!entries.is_empty(), "never called with nothing");
        assert!(entries.iter().all(|e| &e.tenant == tenant));
        self.0.lock().extend_from_slice(entries);
    }
}

#[tokio::test]
async fn the_hook_sees_exactly_the_journal() {
    let hook = Arc::new(Recorder::default());
    let store = MemoryLedgerStore::builder()
        .journal_hook(hook.clone())
        .build();
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_000_000));
    let ledger = Ledger::new(store, clock.clone());
    let k = |s: &str| IdempotencyKey::new(s).unwrap();
    let (a, b) = (TenantId::new("a").unwrap(), TenantId::new("b").unwrap());
    for t in [&a, &b] {
        ledger
            .create_tenant(t, TenantSettings::default())
            .await
            .unwrap();
    }
    let soon = Timestamp::from_unix_millis(1_010_000);
    ledger
        .grant(
            &a,
            k("g1"),
            Amount::new(50),
            GrantOptions::default().expires_at(soon),
        )
        .await
        .unwrap();
    ledger
        .grant(&a, k("g2"), Amount::new(50), GrantOptions::default())
        .await
        .unwrap();
    let h = ledger
        .reserve(&a, k("r"), Amount::new(60), Duration::from_secs(5))
        .await
        .unwrap();
    ledger
        .commit(&a, k("c"), h.hold().unwrap(), Amount::new(10))
        .await
        .unwrap();
    assert!(
        ledger
            .consume(&a, k("too-much"), Amount::new(1_000))
            .await
            .is_err(),
        "rejected: no entry"
    );
    assert!(
        ledger.consume(&a, k("g1"), Amount::new(1)).await.is_err(),
        "conflict: no entry"
    );
    ledger
        .reserve(&a, k("r2"), Amount::new(20), Duration::from_secs(5))
        .await
        .unwrap();
    let grant = |n| Command::Grant {
        amount: Amount::new(n),
        expires_at: None,
        priority: 0,
    };
    ledger
        .batch(&[
            Request::new(a.clone(), k("bg"), grant(5)),
            Request::new(b.clone(), k("bg"), grant(7)),
        ])
        .await
        .unwrap();
    assert!(
        ledger
            .batch(&[Request::new(
                b.clone(),
                k("bad"),
                Command::Consume {
                    amount: Amount::new(99)
                }
            )])
            .await
            .is_err()
    );
    clock.advance(Duration::from_secs(20));
    ledger.recover().await.unwrap(); // a hold and a lot expire
    let mut expected = Vec::new();
    for t in [&a, &b] {
        expected.extend(
            ledger
                .history(t, PageRequest::first(100))
                .await
                .unwrap()
                .entries,
        );
    }
    let mut seen = hook.0.lock().clone();
    seen.sort_by(|x, y| (&x.tenant, x.seq).cmp(&(&y.tenant, y.seq)));
    assert_eq!(seen, expected);
    assert!(
        seen.iter()
            .any(|e| e.kind == credits_core::EntryKind::HoldExpired)
    );
    assert!(
        seen.iter()
            .any(|e| e.kind == credits_core::EntryKind::LotExpired)
    );
}
