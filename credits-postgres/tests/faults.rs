//! Faults and database-enforced guarantees: a connection killed mid-transaction leaves
//! nothing partial; the audit log refuses UPDATE, DELETE and TRUNCATE; migrations run
//! twice change nothing; recovery jobs; the transaction log survives a coordinator crash;
//! the audit sink under an audit writer.

// Tests and benchmarks act as applications: they spawn tasks and sleep on tokio's timer.
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use audit_chain::{
    AuditEntry, AuditSink, AuditWriter, HmacKey, Keyring, MaskingPolicy, StreamChain, WriterConfig,
    verify_sink,
};
use credits_core::tx::{HoldBranch, LedgerHolds, TransactionManager, TxDecision, TxLog, TxPhase};
use credits_core::{
    Amount, GrantOptions, IdempotencyKey, Ledger, LedgerError, LedgerStore, TenantId,
    TenantSettings,
};
use credits_postgres::{LedgerAudit, PgConfig, PgError, migrate};
use metered_clock::{Clock, ManualClock, SystemClock, Timestamp};

fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::new(s).expect("key")
}

/// Balance, journal, idempotency, audit and lot counts in one string.
async fn snapshot(db: &common::TestDb) -> String {
    let sql = format!(
        "SELECT (SELECT available FROM {s}.accounts) || '/' || \
                (SELECT count(*) FROM {s}.journal_entries) || '/' || \
                (SELECT count(*) FROM {s}.idempotency_keys) || '/' || \
                (SELECT count(*) FROM {s}.audit_log) || '/' || \
                (SELECT sum(remaining) FROM {s}.credit_lots)",
        s = db.schema
    );
    db.admin
        .query_one(&sql, &[])
        .await
        .expect("snapshot")
        .get::<_, String>(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_killed_mid_transaction_leaves_nothing_partial() {
    let Some(db) = common::test_db("killed").await else {
        return;
    };
    let keyring = Arc::new(Keyring::new(HmacKey::new(1, [3; 32]).expect("key")));
    let clock = ManualClock::new(common::START);
    let store = db
        .store(
            db.config()
                .audit(LedgerAudit::new(keyring, MaskingPolicy::standard())),
            Arc::new(clock.clone()),
        )
        .await;
    let ledger = Ledger::from_shared(Arc::new(store.clone()), Arc::new(clock.clone()));
    let t = TenantId::new("victim").expect("tenant");
    ledger
        .create_tenant(&t, TenantSettings::default())
        .await
        .expect("create");
    ledger
        .grant(&t, key("g"), Amount::new(100), GrantOptions::default())
        .await
        .expect("grant");
    let before = snapshot(&db).await;
    // Stall the journal insert, so the account update and the lot change are already
    // written inside the transaction when the backend is killed.
    db.admin
        .batch_execute(
            "CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS \
               $$ BEGIN PERFORM pg_sleep(30); RETURN NEW; END $$; \
             CREATE TRIGGER stall BEFORE INSERT ON journal_entries \
               FOR EACH STATEMENT EXECUTE FUNCTION stall();",
        )
        .await
        .expect("trigger");
    let victim = {
        let ledger = ledger.clone();
        let t = t.clone();
        tokio::spawn(async move { ledger.consume(&t, key("c"), Amount::new(30)).await })
    };
    let app = format!("t_{}", db.schema);
    let mut killed = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let n: i64 = db
            .admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = $1 AND query LIKE '%journal_entries%' \
                   AND state = 'active'",
                &[&app],
            )
            .await
            .expect("terminate")
            .get(0);
        if n > 0 {
            killed = true;
            break;
        }
    }
    assert!(killed, "the stalled transaction was found and killed");
    let result = victim.await.expect("task");
    match &result {
        Err(e) => assert!(e.is_retryable(), "a killed connection is retryable: {e}"),
        Ok(o) => panic!("the killed transaction reported success: {o:?}"),
    }
    assert_eq!(
        snapshot(&db).await,
        before,
        "nothing of the killed transaction remains"
    );
    assert_eq!(
        store.idempotency_record(&t, &key("c")).await,
        Ok(None),
        "no idempotency record either"
    );
    // The retry, with the same key, applies once.
    db.admin
        .batch_execute("DROP TRIGGER stall ON journal_entries")
        .await
        .expect("drop trigger");
    let first = ledger
        .consume(&t, key("c"), Amount::new(30))
        .await
        .expect("retry");
    let again = ledger
        .consume(&t, key("c"), Amount::new(30))
        .await
        .expect("replay");
    assert_eq!(first, again);
    assert_eq!(
        ledger.balance(&t).await.expect("balance").available,
        Amount::new(70)
    );
    assert_eq!(db.count("SELECT count(*) FROM audit_log").await, 2);
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_rolls_back_and_leaves_no_connection_in_a_transaction() {
    let Some(db) = common::test_db("cancelled").await else {
        return;
    };
    let clock = ManualClock::new(common::START);
    let store = db
        .store(db.config().pool_max_size(1), Arc::new(clock.clone()))
        .await;
    let ledger = Ledger::from_shared(Arc::new(store.clone()), Arc::new(clock.clone()));
    let t = TenantId::new("t").expect("tenant");
    ledger
        .create_tenant(&t, TenantSettings::default())
        .await
        .expect("create");
    ledger
        .grant(&t, key("g"), Amount::new(100), GrantOptions::default())
        .await
        .expect("grant");
    let before = snapshot(&db).await;
    db.admin
        .batch_execute(
            "CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS \
               $$ BEGIN PERFORM pg_sleep(1); RETURN NEW; END $$; \
             CREATE TRIGGER stall BEFORE INSERT ON journal_entries \
               FOR EACH STATEMENT EXECUTE FUNCTION stall();",
        )
        .await
        .expect("trigger");
    // The caller gives up while the writes are in flight: the future is dropped.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        ledger.consume(&t, key("c"), Amount::new(30)),
    )
    .await;
    assert!(gave_up.is_err(), "the call was cancelled");
    db.admin
        .batch_execute("DROP TRIGGER stall ON journal_entries")
        .await
        .expect("drop trigger");
    // The only pooled connection was closed, not returned inside the transaction: the next
    // call gets a fresh one, waits for the abandoned transaction to roll back (the server
    // notices the closed socket once the stalled statement ends) and sees none of it.
    assert_eq!(
        ledger.balance(&t).await.expect("balance").available,
        Amount::new(100)
    );
    let applied = ledger
        .consume(&t, key("c"), Amount::new(30))
        .await
        .expect("retry");
    assert_eq!(applied.balance.available, Amount::new(70));
    assert_ne!(snapshot(&db).await, before);
    assert_eq!(db.count("SELECT count(*) FROM journal_entries").await, 2);
    db.drop_schema().await;
}

#[tokio::test]
async fn audit_log_rejects_update_delete_and_truncate() {
    let Some(db) = common::test_db("append_only").await else {
        return;
    };
    let store = db.default_store().await;
    let keyring = Keyring::new(HmacKey::new(1, [5; 32]).expect("key"));
    let mut chain = StreamChain::new("app:billing");
    let sealed = chain
        .seal(
            &keyring,
            &MaskingPolicy::none(),
            AuditEntry::new("app:billing", "e", "a", common::START),
        )
        .expect("seal");
    store
        .audit_sink()
        .append(&[audit_chain::LogRecord::new(0, sealed)])
        .await
        .expect("append");
    store
        .audit_sink()
        .store_checkpoint("test/audit\n1\nroot\n")
        .await
        .expect("checkpoint");
    for sql in [
        "UPDATE audit_log SET at = 0",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "UPDATE audit_checkpoints SET note = ''",
        "DELETE FROM audit_checkpoints",
        "UPDATE audit_index SET log_index = 7",
        "DELETE FROM audit_index",
        "TRUNCATE audit_index",
    ] {
        let err = db.admin.batch_execute(sql).await.expect_err(sql);
        // TRUNCATE audit_log meets the log's index first (a foreign key to it).
        assert!(
            err.as_db_error().is_some_and(
                |e| e.message().contains("append-only") || e.message().contains("foreign key")
            ),
            "{sql}: {err}"
        );
    }
    assert_eq!(db.count("SELECT count(*) FROM audit_log").await, 1);
    db.drop_schema().await;
}

#[tokio::test]
async fn migrations_twice_are_a_no_op() {
    let Some(mut db) = common::test_db("migrate_twice").await else {
        return;
    };
    let first = migrate(&mut db.admin).await.expect("first");
    assert_eq!(
        (first.applied, first.version),
        (vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], 12)
    );
    let objects = "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                   WHERE n.nspname = current_schema()";
    let tables = db.count(objects).await;
    let second = migrate(&mut db.admin).await.expect("second");
    assert_eq!((second.applied, second.version), (vec![], 12));
    assert_eq!(db.count(objects).await, tables);
    assert_eq!(db.count("SELECT count(*) FROM schema_migrations").await, 12);
    // A database ahead of this build is refused, not guessed at.
    db.admin
        .batch_execute("INSERT INTO schema_migrations (version, name) VALUES (99, 'future')")
        .await
        .expect("insert");
    let latest = credits_postgres::MIGRATIONS.last().map(|m| m.version);
    assert!(matches!(
        migrate(&mut db.admin).await,
        Err(PgError::SchemaTooNew {
            found: 99,
            known
        }) if Some(known) == latest
    ));
    db.drop_schema().await;
}

#[tokio::test]
async fn recovery_functions_and_coordinator_crash() {
    let Some(db) = common::test_db("recovery").await else {
        return;
    };
    let clock = ManualClock::new(Timestamp::from_unix_millis(
        SystemClock::new().now().as_unix_millis(),
    ));
    let store = db.store(db.config(), Arc::new(clock.clone())).await;
    let ledger = Ledger::from_shared(Arc::new(store.clone()), Arc::new(clock.clone()));
    let acme = TenantId::new("acme").expect("tenant");
    ledger
        .create_tenant(&acme, TenantSettings::default())
        .await
        .expect("create");
    ledger
        .grant(&acme, key("g"), Amount::new(100), GrantOptions::default())
        .await
        .expect("grant");
    let log: Arc<dyn TxLog> = Arc::new(store.tx_log());
    let holds = Arc::new(LedgerHolds::new("credits", ledger.clone()));
    let manager = || {
        TransactionManager::builder(log.clone(), Arc::new(clock.clone()))
            .participant(holds.clone())
            .build()
    };
    let branch = HoldBranch::new(acme.clone(), Amount::new(40), Amount::new(25)).unwrap();

    // Prepared and decided, then the coordinator "crashes" before phase two.
    let tm = manager();
    let tx = tm.begin(Duration::from_secs(60)).await.expect("begin");
    tm.enlist(tx, "credits", branch.payload())
        .await
        .expect("enlist");
    tm.prepare(tx).await.expect("prepare");
    assert_eq!(
        log.decide(tx, TxDecision::Commit).await,
        Ok(TxDecision::Commit)
    );
    assert_eq!(
        log.decide(tx, TxDecision::Abort).await,
        Ok(TxDecision::Commit),
        "first decision wins"
    );
    drop(tm);
    assert_eq!(
        ledger.balance(&acme).await.expect("balance").held,
        Amount::new(40)
    );
    let report = manager().recover().await.expect("recover");
    assert_eq!((report.committed, report.aborted), (1, 0));
    assert_eq!(
        ledger.balance(&acme).await.expect("balance").available,
        Amount::new(75)
    );
    assert_eq!(
        log.get(tx).await.expect("get").map(|r| r.phase),
        Some(TxPhase::Finished(TxDecision::Commit))
    );

    // An undecided transaction past its deadline: the SQL job decides abort, the manager's
    // recovery tells the participant.
    let tm = manager();
    let tx2 = tm.begin(Duration::from_millis(1)).await.expect("begin");
    tm.enlist(tx2, "credits", branch.payload())
        .await
        .expect("enlist");
    // Not past its deadline by the coordinators' clock: nothing to decide.
    assert_eq!(log.maintain(clock.now()).await.expect("sql"), 0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Past it (by the clock that set it, whatever the database server's clock says).
    let later = clock.now().saturating_add(Duration::from_secs(1));
    assert_eq!(log.maintain(later).await.expect("sql"), 1);
    assert_eq!(
        log.get(tx2).await.expect("get").map(|r| r.phase),
        Some(TxPhase::Decided(TxDecision::Abort))
    );
    let report = manager().recover().await.expect("recover");
    assert_eq!((report.aborted, report.maintained), (1, 0));
    assert_eq!(log.unfinished().await.expect("unfinished"), vec![]);
    assert!(matches!(
        log.enlist(tx2, credits_core::tx::Branch::new("x", ""))
            .await,
        Err(LedgerError::TransactionState { .. })
    ));
    assert!(matches!(
        log.get(credits_core::tx::TxId::new(999_999)).await,
        Ok(None)
    ));
    assert!(matches!(
        log.mark_prepared(credits_core::tx::TxId::new(999_999), vec![])
            .await,
        Err(LedgerError::UnknownTransaction(id)) if id.get() == 999_999
    ));

    // Cleanup: nothing is old enough yet; zero days is refused.
    assert_eq!(store.cleanup_old_transactions(1).await.expect("cleanup"), 0);
    assert!(matches!(
        store.cleanup_old_transactions(0).await,
        Err(PgError::InvalidConfig { field: "days", .. })
    ));
    db.admin
        .batch_execute("UPDATE distributed_transactions SET updated_at = now() - interval '3 days'")
        .await
        .expect("age");
    assert_eq!(store.cleanup_old_transactions(2).await.expect("cleanup"), 2);
    assert_eq!(store.cleanup_idempotency_keys(1).await.expect("cleanup"), 0);

    // Stalled holds expire through the sweeper.
    ledger
        .reserve(
            &acme,
            key("stalled"),
            Amount::new(10),
            Duration::from_secs(5),
        )
        .await
        .expect("reserve");
    clock.advance(Duration::from_secs(6));
    let swept = ledger.recover().await.expect("sweep");
    assert_eq!(swept.holds_expired, 1);
    assert_eq!(
        ledger.balance(&acme).await.expect("balance").held,
        Amount::ZERO
    );
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_sink_under_a_writer_survives_reopen() {
    let Some(db) = common::test_db("sink").await else {
        return;
    };
    let store = db.default_store().await;
    let sink: Arc<dyn AuditSink> = Arc::new(store.audit_sink());
    let keyring = Keyring::new(HmacKey::new(1, [9; 32]).expect("key"));
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(common::START));
    let config = || WriterConfig::builder("test/audit").build().expect("config");
    let writer = AuditWriter::open(sink.clone(), config(), clock.clone(), None)
        .await
        .expect("open");
    let mut chain = StreamChain::new("app:a");
    for i in 0..5u64 {
        let e = chain
            .seal(
                &keyring,
                &MaskingPolicy::none(),
                AuditEntry::new("app:a", "e", "a", common::START).with_amount(i),
            )
            .expect("seal");
        assert_eq!(writer.append(e).await.expect("append"), i);
    }
    writer.flush().await.expect("flush");
    assert_eq!(sink.size().await.expect("size"), 5);
    assert!(sink.load_checkpoint().await.expect("checkpoint").is_some());
    // A batch that does not start at the end is refused and changes nothing.
    let stray = sink.read(0, 1).await.expect("read");
    assert!(sink.append(&stray).await.is_err());
    assert_eq!(sink.size().await.expect("size"), 5);
    let reopened = AuditWriter::open(sink.clone(), config(), clock, None)
        .await
        .expect("reopen");
    let e = chain
        .seal(
            &keyring,
            &MaskingPolicy::none(),
            AuditEntry::new("app:a", "e", "a", common::START),
        )
        .expect("seal");
    assert_eq!(reopened.append(e).await.expect("append"), 5);
    assert!(
        verify_sink(sink.as_ref(), &keyring, None)
            .await
            .expect("verify")
            .is_intact()
    );
    db.drop_schema().await;
}

#[test]
fn bad_configuration_is_a_typed_error() {
    let check = |b: credits_postgres::PgConfigBuilder, field: &str| match b.build() {
        Err(PgError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
        other => panic!("expected InvalidConfig({field}), got {other:?}"),
    };
    let url = "postgres://u@localhost/db";
    check(PgConfig::builder("no such thing=1"), "url");
    check(PgConfig::builder(url).pool_max_size(0), "pool_max_size");
    check(
        PgConfig::builder(url).pool_max_size(10_001),
        "pool_max_size",
    );
    check(
        PgConfig::builder(url).wait_timeout(Duration::ZERO),
        "wait_timeout",
    );
    check(
        PgConfig::builder(url).connect_timeout(Duration::ZERO),
        "connect_timeout",
    );
    check(
        PgConfig::builder(url).max_lifetime(Duration::ZERO),
        "max_lifetime",
    );
    check(
        PgConfig::builder(url).statement_timeout(Duration::from_micros(10)),
        "statement_timeout",
    );
    check(
        PgConfig::builder(url).search_path("a; DROP TABLE x"),
        "search_path",
    );
    check(PgConfig::builder(url).search_path(" "), "search_path");
    let ok = PgConfig::builder(url)
        .search_path("s1, public")
        .build()
        .expect("valid");
    assert_eq!(ok.pool_max_size(), 100);
    assert!(
        ok.connection()
            .get_options()
            .is_some_and(|o| o.contains("search_path=s1,\\ public"))
    );
}

/// The reproduction of "prepared is inferred from a cache", on PostgreSQL's store and
/// transaction log together: a branch prepares, the coordinator dies, a day passes, the
/// tenant keeps working, the idempotency records are deleted (what
/// `cleanup_idempotency_keys` does); a new coordinator over a reopened log applies the
/// logged decision — a commit, then for a second transaction an abort past its deadline —
/// and outsiders cannot resolve the prepared holds meanwhile.
#[tokio::test]
async fn transactions_recover_on_postgres_after_forgotten_keys_and_activity() {
    let Some(db) = common::test_db("tx_forgotten").await else {
        return;
    };
    let clock = ManualClock::new(common::START);
    let store = db.store(db.config(), Arc::new(clock.clone())).await;
    let ledger = Ledger::from_shared(Arc::new(store.clone()), Arc::new(clock.clone()));
    let acme = TenantId::new("acme").expect("tenant");
    ledger
        .create_tenant(&acme, TenantSettings::default())
        .await
        .expect("create");
    ledger
        .grant(&acme, key("g"), Amount::new(1_000), GrantOptions::default())
        .await
        .expect("grant");
    let manager = |log: Arc<dyn TxLog>| {
        TransactionManager::builder(log, Arc::new(clock.clone()))
            .participant(Arc::new(LedgerHolds::new("credits", ledger.clone())))
            .build()
    };
    let payload = HoldBranch::new(acme.clone(), Amount::new(100), Amount::new(60))
        .expect("branch")
        .payload();
    for (round, decide_commit) in [(0, true), (1, false)] {
        let log: Arc<dyn TxLog> = Arc::new(store.tx_log());
        let tm = manager(log.clone());
        let tx = tm.begin(Duration::from_secs(30)).await.expect("begin");
        tm.enlist(tx, "credits", payload.clone())
            .await
            .expect("enlist");
        tm.prepare(tx).await.expect("prepare");
        if decide_commit {
            assert_eq!(
                log.decide(tx, TxDecision::Commit).await,
                Ok(TxDecision::Commit)
            );
        }
        drop(tm); // the coordinator dies
        let hold = store.prepared_holds(None, 10).await.expect("prepared")[0].hold;
        assert!(matches!(
            ledger
                .cancel(&acme, key(&format!("outsider-{round}")), hold)
                .await,
            Err(LedgerError::HoldOwnedByTransaction { .. })
        ));
        clock.advance(Duration::from_secs(25 * 3_600));
        ledger
            .consume(&acme, key(&format!("busy-{round}")), Amount::new(1))
            .await
            .expect("the tenant keeps working");
        assert!(store.forget_keys(clock.now()).await.expect("forget") >= 2);
        let report = manager(Arc::new(store.tx_log())) // a reopened log
            .recover()
            .await
            .expect("recover");
        assert_eq!(
            (report.committed, report.aborted, report.failed),
            (usize::from(decide_commit), usize::from(!decide_commit), 0),
            "{report:?}"
        );
        assert!(
            store
                .prepared_holds(None, 10)
                .await
                .expect("prepared")
                .is_empty()
        );
        assert_eq!(
            log.get(tx).await.expect("get").map(|r| r.phase),
            Some(TxPhase::Finished(if decide_commit {
                TxDecision::Commit
            } else {
                TxDecision::Abort
            }))
        );
    }
    let totals = ledger.store().totals(&acme).await.expect("totals");
    assert_eq!(
        (totals.consumed, totals.held),
        (Amount::new(62), Amount::ZERO),
        "the committed 60 and two consumes"
    );
    db.drop_schema().await;
}
