//! Balance events on PostgreSQL: the thresholds, the outbox and the delivery cursor are
//! durable (a reopened store reads them back and a dispatcher continues where the last one
//! stopped); an event row exists only if its change committed (a refused batch leaves none);
//! a hand-edited invalid thresholds column is reported as corruption.

// Tests act as applications: they spawn tasks.
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use credits_core::{
    Amount, BalanceEvent, BalanceThresholds, Command, EventDispatcher, EventSeq, EventSink,
    EventSinkError, GrantOptions, IdempotencyKey, Ledger, LedgerStore, Request, TenantId,
    TenantSettings,
};
use metered_clock::ManualClock;

#[derive(Default)]
struct Sink(Mutex<Vec<BalanceEvent>>);

#[async_trait]
impl EventSink for Sink {
    async fn deliver(&self, events: &[BalanceEvent]) -> Result<(), EventSinkError> {
        self.0.lock().expect("lock").extend_from_slice(events);
        Ok(())
    }
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::new(k).expect("key")
}

#[tokio::test]
async fn events_and_the_cursor_survive_a_reopened_store() {
    let Some(db) = common::test_db("events_survive").await else {
        return;
    };
    let t = TenantId::new("acme").expect("tenant");
    let thresholds =
        BalanceThresholds::new([Amount::new(50), Amount::new(10)]).expect("thresholds");
    let clock = Arc::new(ManualClock::new(common::START));
    {
        let store: Arc<dyn LedgerStore> = Arc::new(db.store(db.config(), clock.clone()).await);
        let ledger = Ledger::from_shared(store, clock.clone());
        let settings = TenantSettings {
            thresholds,
            ..TenantSettings::default()
        };
        ledger.create_tenant(&t, settings).await.expect("create");
        ledger
            .grant(&t, key("g"), Amount::new(100), GrantOptions::default())
            .await
            .expect("grant");
        ledger
            .consume(&t, key("c"), Amount::new(60))
            .await
            .expect("consume"); // 40: crosses 50
        // A refused batch writes no event row.
        let refused = ledger
            .batch(&[
                Request::new(
                    t.clone(),
                    key("b1"),
                    Command::Consume {
                        amount: Amount::new(35),
                    },
                ),
                Request::new(
                    t.clone(),
                    key("b2"),
                    Command::Consume {
                        amount: Amount::new(1_000),
                    },
                ),
            ])
            .await;
        assert!(refused.is_err(), "{refused:?}");
        let sink = Sink::default();
        let report = ledger
            .deliver_events(&EventDispatcher::default(), &t, &sink)
            .await
            .expect("deliver");
        assert_eq!(report.cursor, Some(EventSeq::new(1)));
        ledger
            .consume(&t, key("c2"), Amount::new(35))
            .await
            .expect("consume"); // 5: crosses 10
    }
    assert_eq!(db.count("SELECT count(*) FROM balance_events").await, 2);
    // A new store on the same schema: settings, events and cursor are all there.
    let store: Arc<dyn LedgerStore> = Arc::new(db.store(db.config(), clock.clone()).await);
    let ledger = Ledger::from_shared(Arc::clone(&store), clock.clone());
    let page = ledger.events(&t, None, 10).await.expect("events");
    assert_eq!(
        page.events
            .iter()
            .map(|e| (e.seq.get(), e.threshold.units(), e.available.units()))
            .collect::<Vec<_>>(),
        [(1, 50, 40), (2, 10, 5)]
    );
    assert_eq!(store.event_cursor(&t).await, Ok(Some(EventSeq::new(1))));
    let sink = Sink::default();
    let report = ledger
        .deliver_events(&EventDispatcher::default(), &t, &sink)
        .await
        .expect("deliver");
    assert_eq!(
        (report.delivered, report.cursor),
        (1, Some(EventSeq::new(2)))
    );
    assert_eq!(
        sink.0.lock().expect("lock").clone(),
        page.events[1..].to_vec(),
        "only the undelivered event"
    );
    // The thresholds were stored: a refund re-arms 10 and 50, the next consume crosses both.
    let entry = ledger
        .history(&t, credits_core::PageRequest::first(10))
        .await
        .expect("history")
        .entries
        .iter()
        .find(|e| e.key.as_ref() == Some(&key("c2")))
        .map(|e| e.seq)
        .expect("the consume");
    ledger
        .refund(&t, key("r"), entry, Amount::new(35))
        .await
        .expect("refund"); // 40: 10 re-armed
    ledger
        .consume(&t, key("c3"), Amount::new(39))
        .await
        .expect("consume"); // 1: crosses 10
    let all = ledger.events(&t, None, 10).await.expect("events").events;
    assert_eq!(all.len(), 3);
    // A hand-edited invalid thresholds column is corruption, not a guess.
    db.admin
        .batch_execute("UPDATE accounts SET thresholds = '[5,5]'")
        .await
        .expect("edit");
    let broken = ledger.consume(&t, key("c4"), Amount::new(1)).await;
    assert!(matches!(&broken, Err(e) if e.is_storage()), "{broken:?}");
    db.drop_schema().await;
}
