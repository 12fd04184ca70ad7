//! Group commit: independent results in one transaction; the breaker in front of the pool.

// Tests and benchmarks act as applications: they spawn tasks and sleep on tokio's timer.
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use credits_core::{
    Amount, Command, IdempotencyKey, LedgerError, LedgerStore, Request, TenantId, TenantSettings,
};
use credits_postgres::{PgConfig, PgLedgerStore};
use metered_clock::ManualClock;
use resilience::{BreakerConfig, State};

fn req(t: &TenantId, k: &str, command: Command) -> Request {
    Request::new(t.clone(), IdempotencyKey::new(k).expect("key"), command)
}

fn consume(n: u64) -> Command {
    Command::Consume {
        amount: Amount::new(n),
    }
}

#[tokio::test]
async fn a_group_keeps_each_result_and_commits_once() {
    let Some(db) = common::test_db("group").await else {
        return;
    };
    let store = db.default_store().await;
    let now = common::START;
    let (a, b) = (
        TenantId::new("a").expect("t"),
        TenantId::new("b").expect("t"),
    );
    for t in [&a, &b] {
        store
            .create_tenant(t, TenantSettings::default(), now)
            .await
            .expect("create");
    }
    let grant = Command::Grant {
        amount: Amount::new(10),
        expires_at: None,
        priority: 0,
    };
    let ghost = TenantId::new("ghost").expect("t");
    let group = [
        req(&a, "g", grant.clone()),
        req(&b, "c-too-much", consume(1)),
        req(&a, "c", consume(4)),
        req(&a, "g", grant.clone()),
        req(&a, "c", consume(5)),
        req(&ghost, "x", consume(1)),
        req(&b, "g", grant.clone()),
        // Past a bigint: refused alone, as a domain answer, before it reaches SQL.
        req(
            &b,
            "huge",
            Command::Grant {
                amount: Amount::new(1 << 63),
                expires_at: None,
                priority: 0,
            },
        ),
        req(&a, "after-huge", consume(1)),
    ];
    let results = store.apply_group(&group, now).await.expect("group");
    assert_eq!(results.len(), group.len());
    let granted = results[0].clone().expect("grant");
    assert!(matches!(
        results[1],
        Err(LedgerError::InsufficientCredits { .. })
    ));
    assert_eq!(
        results[2].as_ref().expect("consume").balance.available,
        Amount::new(6)
    );
    assert_eq!(
        results[3],
        Ok(granted),
        "a key used twice in a group replays the first use"
    );
    assert_eq!(
        results[4],
        Err(LedgerError::IdempotencyConflict(
            IdempotencyKey::new("c").expect("key")
        ))
    );
    assert_eq!(results[5], Err(LedgerError::UnknownTenant(ghost)));
    assert!(
        results[6].is_ok(),
        "a failure earlier in the group changes nothing for later ones"
    );
    assert_eq!(results[7], Err(LedgerError::AmountOverflow));
    assert!(results[8].is_ok(), "a value past a bigint fails alone");
    // The failure was recorded under its key, as a single apply would have.
    let record = store
        .idempotency_record(&b, &IdempotencyKey::new("c-too-much").expect("key"))
        .await
        .expect("read")
        .expect("recorded");
    assert!(record.result.is_err());
    assert_eq!(
        store.apply(&group[1], now).await,
        results[1].clone(),
        "replayed, even though it would now succeed"
    );
    assert_eq!(
        store.apply_group(&[], now).await,
        Err(LedgerError::EmptyBatch)
    );
    let many: Vec<_> = (0..1_001)
        .map(|i| req(&a, &format!("m{i}"), consume(1)))
        .collect();
    assert!(matches!(
        store.apply_group(&many, now).await,
        Err(LedgerError::BatchTooLarge {
            max: 1_000,
            len: 1_001
        })
    ));
    store
        .totals_all()
        .await
        .expect("totals")
        .check()
        .expect("conserved");
    db.drop_schema().await;
}

#[tokio::test]
async fn the_breaker_opens_when_the_database_is_unreachable() {
    // Nothing listens on port 1: every connection attempt fails at once.
    let config = PgConfig::builder("postgres://postgres@127.0.0.1:1/none")
        .connect_timeout(Duration::from_millis(200))
        .wait_timeout(Duration::from_millis(500))
        .breaker(
            BreakerConfig::builder()
                .name("pg-test")
                .minimum_calls(3)
                .count_window(4)
                .failure_rate_threshold(50)
                .build()
                .expect("breaker"),
        )
        .build()
        .expect("config");
    let store =
        PgLedgerStore::connect(config, Arc::new(ManualClock::new(common::START))).expect("store");
    let t = TenantId::new("t").expect("t");
    for _ in 0..3 {
        let e = store
            .balance(&t, common::START)
            .await
            .expect_err("unreachable");
        assert!(e.is_retryable(), "{e}");
    }
    assert_eq!(store.breaker_state(), State::Open);
    let e = store.balance(&t, common::START).await.expect_err("open");
    assert!(
        e.is_retryable() && e.to_string().contains("circuit breaker"),
        "{e}"
    );
}
