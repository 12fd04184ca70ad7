//! What PostgreSQL actually holds after real calls: the text of idempotency records (a
//! success and a failure), journal entry kind codes, a resolved hold's state and draws, and
//! a distributed transaction's phases and `branches` as the `jsonb` column prints them back.
//! The encodings themselves are pinned, variant by variant, by the unit tests in
//! `src/codec/golden.rs`; this checks that the rows are exactly those encodings.

// Tests and benchmarks act as applications: they spawn tasks and sleep on tokio's timer.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use credits_core::tx::{Branch, TxDecision, TxLog, TxPhase};
use credits_core::{
    Amount, Command, IdempotencyKey, LedgerStore, Reason, Request, TenantId, TenantSettings,
};

fn req(t: &TenantId, k: &str, command: Command) -> Request {
    Request::new(t.clone(), IdempotencyKey::new(k).expect("key"), command)
}

#[tokio::test]
async fn ledger_rows_hold_the_pinned_forms() {
    let Some(db) = common::test_db("stored_ledger").await else {
        return;
    };
    let store = db.default_store().await;
    let now = common::START;
    let acme = TenantId::new("acme").expect("tenant");
    store
        .create_tenant(&acme, TenantSettings::default(), now)
        .await
        .expect("create");
    let requests = [
        req(
            &acme,
            "a-grant",
            Command::Grant {
                amount: Amount::new(100),
                expires_at: None,
                priority: 0,
            },
        ),
        req(
            &acme,
            "b-reserve",
            Command::Reserve {
                amount: Amount::new(40),
                ttl: Duration::from_secs(30),
            },
        ),
        req(
            &acme,
            "c-too-much",
            Command::Consume {
                amount: Amount::new(1_000),
            },
        ),
        req(
            &acme,
            "d-commit",
            Command::Commit {
                hold: credits_core::HoldId::new(1),
                amount: Amount::new(25),
            },
        ),
    ];
    for r in &requests {
        let _ = store.apply(r, now).await;
    }

    let records: Vec<(String, String)> = db
        .admin
        .query("SELECT key, record FROM idempotency_keys ORDER BY key", &[])
        .await
        .expect("records")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let pinned = [
        (
            "a-grant",
            r#"{"command":{"Grant":{"amount":100,"expires_at":null,"priority":0}},"result":{"Ok":{"entry":1,"at":1700000000000,"balance":{"available":100,"held":0,"overdrawn":0},"effect":{"Granted":{"lot":1}}}},"at":1700000000000}"#,
        ),
        (
            "b-reserve",
            r#"{"command":{"Reserve":{"amount":40,"ttl":{"secs":30,"nanos":0}}},"result":{"Ok":{"entry":2,"at":1700000000000,"balance":{"available":60,"held":40,"overdrawn":0},"effect":{"Reserved":{"hold":1,"expires_at":1700000030000}}}},"at":1700000000000}"#,
        ),
        (
            "c-too-much",
            r#"{"command":{"Consume":{"amount":1000}},"result":{"Err":{"InsufficientCredits":{"requested":1000,"spendable":60}}},"at":1700000000000}"#,
        ),
        (
            "d-commit",
            r#"{"command":{"Commit":{"hold":1,"amount":25}},"result":{"Ok":{"entry":3,"at":1700000000000,"balance":{"available":75,"held":0,"overdrawn":0},"effect":{"Committed":{"hold":1,"committed":25,"released":15}}}},"at":1700000000000}"#,
        ),
    ];
    assert_eq!(records.len(), pinned.len());
    for ((key, record), (want_key, want)) in records.iter().zip(pinned) {
        assert_eq!((key.as_str(), record.as_str()), (want_key, want));
    }
    // Read back through the store: each record is the request's command.
    for r in &requests {
        let record = store
            .idempotency_record(&acme, &r.key)
            .await
            .expect("read")
            .expect("recorded");
        assert_eq!(record.command, r.command);
    }

    let kinds: Vec<(i64, i16)> = db
        .admin
        .query("SELECT seq, kind FROM journal_entries ORDER BY seq", &[])
        .await
        .expect("entries")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    // granted, reserved, committed, released
    assert_eq!(kinds, [(1, 1), (2, 3), (3, 4), (4, 5)]);

    let holds: Vec<(i64, String, Option<i64>, String)> = db
        .admin
        .query(
            "SELECT hold_id, state, committed, draws FROM holds ORDER BY hold_id",
            &[],
        )
        .await
        .expect("holds")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        holds,
        [(
            1,
            "committed".to_owned(),
            Some(25),
            r#"[{"lot":{"expires_at":18446744073709551615,"priority":0,"id":1},"amount":40}]"#
                .to_owned()
        )]
    );
    db.drop_schema().await;
}

#[tokio::test]
async fn lifecycle_rows_hold_the_pinned_forms() {
    let Some(db) = common::test_db("stored_lifecycle").await else {
        return;
    };
    let store = db.default_store().await;
    let now = common::START;
    let acme = TenantId::new("acme").expect("tenant");
    store
        .create_tenant(&acme, TenantSettings::default(), now)
        .await
        .expect("create");
    let status = async |db: &common::TestDb| -> i16 {
        db.admin
            .query_one("SELECT status FROM accounts WHERE tenant = 'acme'", &[])
            .await
            .expect("status")
            .get(0)
    };
    assert_eq!(status(&db).await, 0, "open");
    let grant = |amount: u64| Command::Grant {
        amount: Amount::new(amount),
        expires_at: None,
        priority: 0,
    };
    let requests = [
        req(&acme, "a-grant", grant(100)),
        req(&acme, "b-grant", grant(50)),
        req(
            &acme,
            "c-void",
            Command::VoidLot {
                lot: credits_core::LotId::new(1),
                reason: Reason::new("granted by mistake").expect("reason"),
            },
        ),
        req(&acme, "d-freeze", Command::Freeze),
    ];
    for r in &requests {
        store.apply(r, now).await.expect("apply");
    }
    assert_eq!(status(&db).await, 1, "frozen");
    let record: String = db
        .admin
        .query_one(
            "SELECT record FROM idempotency_keys WHERE key = 'c-void'",
            &[],
        )
        .await
        .expect("record")
        .get(0);
    assert_eq!(
        record,
        r#"{"command":{"VoidLot":{"lot":1,"reason":"granted by mistake"}},"result":{"Ok":{"entry":3,"at":1700000000000,"balance":{"available":50,"held":0,"overdrawn":0},"effect":{"Voided":{"lot":1,"voided":100}}}},"at":1700000000000}"#
    );
    store
        .apply(&req(&acme, "e-close", Command::Close), now)
        .await
        .expect("close");
    assert_eq!(status(&db).await, 2, "closed");
    let entries: Vec<(i64, i16, i64, Option<String>)> = db
        .admin
        .query(
            "SELECT seq, kind, amount, reason FROM journal_entries ORDER BY seq",
            &[],
        )
        .await
        .expect("entries")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let mistake = Some("granted by mistake".to_owned());
    let closed = Some(credits_core::CLOSE_REASON.to_owned());
    assert_eq!(
        entries,
        [
            (1, 1, 100, None),
            (2, 1, 50, None),
            (3, 10, 100, mistake),
            (4, 11, 0, None),
            (5, 10, 50, closed),
            (6, 13, 0, None),
        ]
    );
    // The table refuses a zero amount on any other kind, and a status it does not know.
    for sql in [
        "INSERT INTO journal_entries (tenant, seq, at, kind, amount, before_available, \
           before_held, before_overdrawn, after_available, after_held, after_overdrawn) \
         VALUES ('acme', 99, 0, 2, 0, 0, 0, 0, 0, 0, 0)",
        "UPDATE accounts SET status = 3",
    ] {
        assert!(db.admin.batch_execute(sql).await.is_err(), "{sql}");
    }
    db.drop_schema().await;
}

#[tokio::test]
async fn transaction_rows_hold_the_pinned_forms() {
    let Some(db) = common::test_db("stored_tx").await else {
        return;
    };
    let store = db.default_store().await;
    let log = store.tx_log();
    let row = async |db: &common::TestDb| -> (String, String) {
        let r = db
            .admin
            .query_one(
                "SELECT phase, branches::text FROM distributed_transactions",
                &[],
            )
            .await
            .expect("transaction row");
        (r.get(0), r.get(1))
    };
    // jsonb keeps the value, not the text: keys come back shortest first, with spaces.
    let enlisted =
        r#"[{"payload": "{\"tenant\":\"acme\",\"amount\":5}", "participant": "credits"}]"#;
    let branches = r#"[{"payload": "{\"tenant\":\"acme\",\"amount\":5}", "prepared": "{\"tenant\":\"acme\",\"hold\":7}", "participant": "credits"}]"#;
    let branch = Branch::new("credits", r#"{"tenant":"acme","amount":5}"#);
    let tx = log.begin(common::START).await.expect("begin");
    assert_eq!(row(&db).await, ("active".to_owned(), "[]".to_owned()));
    assert_eq!(log.enlist(tx, branch.clone()).await, Ok(0));
    assert_eq!(row(&db).await, ("active".to_owned(), enlisted.to_owned()));
    let answer = r#"{"tenant":"acme","hold":7}"#.to_owned();
    log.mark_prepared(tx, vec![answer.clone().into()])
        .await
        .expect("prepared");
    assert_eq!(row(&db).await, ("prepared".to_owned(), branches.to_owned()));
    log.decide(tx, TxDecision::Commit).await.expect("decide");
    assert_eq!(
        row(&db).await,
        ("committing".to_owned(), branches.to_owned())
    );
    log.finish(tx).await.expect("finish");
    assert_eq!(
        row(&db).await,
        ("committed".to_owned(), branches.to_owned())
    );
    // And that text reads back as the branch enlisted.
    let record = log.get(tx).await.expect("get").expect("known");
    assert_eq!(record.phase, TxPhase::Finished(TxDecision::Commit));
    let prepared = Branch {
        prepared: Some(answer.into()),
        ..branch
    };
    assert_eq!(record.branches, [prepared]);
    db.drop_schema().await;
}
