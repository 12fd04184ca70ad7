//! Event delivery through the one fault-injecting store (`testing::FaultyStore`): a cursor
//! update that fails before it reaches the store, or whose acknowledgement is lost, makes
//! the dispatcher answer an error; either way the next delivery continues from the durable
//! cursor, so every event reaches the sink at least once, in order, and none is skipped;
//! a store that is down delivers nothing and moves nothing.

use std::sync::{Arc, Mutex};

use credits_core::testing::{FaultKind, Faults, FaultyStore};
use credits_core::{
    Amount, BalanceEvent, BalanceThresholds, EventDispatcher, EventSeq, EventSink, EventSinkError,
    GrantOptions, IdempotencyKey, Ledger, LedgerStore, MemoryLedgerStore, TenantId, TenantSettings,
};
use futures::executor::block_on;
use metered_clock::{ManualClock, Timestamp};

#[derive(Default)]
struct Sink(Mutex<Vec<EventSeq>>);

#[async_trait::async_trait]
impl EventSink for Sink {
    async fn deliver(&self, events: &[BalanceEvent]) -> Result<(), EventSinkError> {
        self.0
            .lock()
            .expect("lock")
            .extend(events.iter().map(|e| e.seq));
        Ok(())
    }
}

#[test]
fn a_lost_cursor_update_redelivers_and_never_skips() {
    block_on(async {
        let faults = Arc::new(Faults::new());
        let store = Arc::new(FaultyStore::new(
            Arc::new(MemoryLedgerStore::new()),
            Arc::clone(&faults),
        ));
        let ledger = Ledger::from_shared(
            Arc::clone(&store),
            Arc::new(ManualClock::new(Timestamp::from_unix_millis(1_000))),
        );
        let t = TenantId::new("acme").expect("tenant");
        let thresholds =
            BalanceThresholds::new((1..=6).map(|n| Amount::new(n * 10))).expect("thresholds");
        let settings = TenantSettings {
            thresholds,
            ..TenantSettings::default()
        };
        ledger.create_tenant(&t, settings).await.expect("create");
        let key = |k: &str| IdempotencyKey::new(k).expect("key");
        ledger
            .grant(&t, key("g"), Amount::new(60), GrantOptions::default())
            .await
            .expect("grant");
        ledger
            .consume(&t, key("c"), Amount::new(60))
            .await
            .expect("consume"); // six events
        let dispatcher = EventDispatcher::new(2, 10);
        let sink = Sink::default();

        // The dependency is down: nothing is delivered, nothing moves.
        faults.set_down(true);
        assert!(ledger.deliver_events(&dispatcher, &t, &sink).await.is_err());
        faults.set_down(false);
        assert!(sink.0.lock().expect("lock").is_empty());

        // The first cursor update fails before reaching the store: batch 1 was delivered.
        faults.arm(0, FaultKind::Before);
        let failed = ledger.deliver_events(&dispatcher, &t, &sink).await;
        assert!(failed.is_err(), "{failed:?}");
        assert_eq!(store.event_cursor(&t).await, Ok(None));
        // The next one applies, but its acknowledgement is lost: batch 1 again, then 2.
        faults.arm(1, FaultKind::After);
        let lost = ledger.deliver_events(&dispatcher, &t, &sink).await;
        assert!(lost.is_err(), "{lost:?}");
        assert_eq!(store.event_cursor(&t).await, Ok(Some(EventSeq::new(4))));
        // No faults: the rest.
        let rest = ledger
            .deliver_events(&dispatcher, &t, &sink)
            .await
            .expect("deliver");
        assert_eq!((rest.delivered, rest.cursor), (2, Some(EventSeq::new(6))));
        let seen: Vec<u64> = sink
            .0
            .lock()
            .expect("lock")
            .iter()
            .map(|s| s.get())
            .collect();
        assert_eq!(
            seen,
            [1, 2, 1, 2, 3, 4, 5, 6],
            "at least once, in order, none skipped"
        );
    });
}
