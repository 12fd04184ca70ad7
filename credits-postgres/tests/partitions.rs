//! Time partitions (migration 10): rows land in their month, point-in-time and time-bounded
//! history queries read only their months (EXPLAIN), the audit log's partitions stay
//! append-only, the maintenance function is idempotent, and an old month archived with the
//! checkpoint that covers it verifies with the live log as one log, also after a
//! `pg_dump` export and restore.

// Tests act as applications: they spawn connection tasks and run pg_dump.
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use audit_chain::pg::{verify_schema, verify_schema_with_archive};
use audit_chain::{Checkpoint, HmacKey, Keyring, MaskingPolicy, WriterConfig};
use credits_core::{Amount, GrantOptions, IdempotencyKey, Ledger, TenantId, TenantSettings};
use credits_postgres::tokio_postgres::{self, NoTls};
use credits_postgres::{LedgerAudit, PgLedgerStore};
use metered_clock::{Clock, ManualClock, SystemClock, Timestamp};

const DAY_MS: u64 = 86_400_000;

fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::new(s).expect("key")
}

fn keyring() -> Arc<Keyring> {
    Arc::new(Keyring::new(HmacKey::new(1, [0x52; 32]).expect("key")))
}

/// The first day of the UTC month `back` months before the server's current one, its
/// partition suffix (`_pYYYY_MM`) and its first millisecond.
async fn month(db: &common::TestDb, back: i32) -> (String, String, u64) {
    let row = db
        .admin
        .query_one(
            "SELECT m::text, '_p' || to_char(m, 'YYYY_MM'), (credits_month_range(m)).lo \
             FROM (SELECT (date_trunc('month', clock_timestamp() AT TIME ZONE 'UTC') \
                           - make_interval(months => $1))::date AS m) s",
            &[&back],
        )
        .await
        .expect("month");
    let lo: i64 = row.get(2);
    (
        row.get(0),
        row.get(1),
        u64::try_from(lo).expect("after 1970"),
    )
}

async fn explain(db: &common::TestDb, sql: &str) -> String {
    db.admin
        .query(&format!("EXPLAIN (COSTS OFF) {sql}"), &[])
        .await
        .unwrap_or_else(|e| panic!("EXPLAIN {sql}: {e}"))
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A store with an audit on a clock set `back` months ago plus a day, partitions created
/// from then on, and a ledger on it.
async fn ledger_months_ago(
    db: &common::TestDb,
    back: i32,
) -> (PgLedgerStore, Ledger<PgLedgerStore>, ManualClock) {
    let clock = ManualClock::new(common::START);
    let store = db
        .store(
            db.config()
                .audit(LedgerAudit::new(keyring(), MaskingPolicy::standard())),
            Arc::new(clock.clone()),
        )
        .await;
    let (from, _, lo) = month(db, back).await;
    clock.set_now(Timestamp::from_unix_millis(lo + DAY_MS));
    db.admin
        .execute(
            "SELECT credits_create_partitions($1::text::date, current_date)",
            &[&from],
        )
        .await
        .expect("partitions");
    let ledger = Ledger::from_shared(Arc::new(store.clone()), Arc::new(clock.clone()));
    (store, ledger, clock)
}

/// Grants 100 to each tenant, then consumes 10 from each in each of the months from
/// `back` months ago to this one (the clock moves a month at a time).
async fn months_of_traffic(
    db: &common::TestDb,
    ledger: &Ledger<PgLedgerStore>,
    clock: &ManualClock,
    tenants: &[TenantId],
    back: i32,
) {
    for t in tenants {
        ledger
            .create_tenant(t, TenantSettings::default())
            .await
            .expect("create");
        ledger
            .grant(t, key("g"), Amount::new(100), GrantOptions::default())
            .await
            .expect("grant");
    }
    for b in (0..=back).rev() {
        let (_, _, lo) = month(db, b).await;
        clock.set_now(Timestamp::from_unix_millis(lo + 2 * DAY_MS));
        for t in tenants {
            ledger
                .consume(t, key(&format!("c{b}")), Amount::new(10))
                .await
                .expect("consume");
        }
    }
}

#[tokio::test]
async fn rows_land_in_their_month_and_queries_prune() {
    let Some(db) = common::test_db("partitions_prune").await else {
        return;
    };
    let (_store, ledger, clock) = ledger_months_ago(&db, 2).await;
    for table in ["journal_entries", "idempotency_keys", "audit_log"] {
        assert_eq!(
            db.count(&format!(
                "SELECT count(*) FROM pg_partitioned_table \
                 WHERE partrelid = '{}.{table}'::regclass",
                db.schema
            ))
            .await,
            1,
            "{table} is partitioned"
        );
    }
    // This month and the next exist; running the maintenance again creates nothing.
    assert_eq!(
        db.count("SELECT credits_maintain_partitions(1)::bigint")
            .await,
        0
    );
    let acme = TenantId::new("acme").expect("tenant");
    months_of_traffic(&db, &ledger, &clock, std::slice::from_ref(&acme), 2).await;

    let (_, two_ago, _) = month(&db, 2).await;
    let (_, one_ago, one_ago_lo) = month(&db, 1).await;
    let (_, this, _) = month(&db, 0).await;
    let (_, next, _) = month(&db, -1).await;
    // Every row is in the partition of its month.
    let placed: Vec<(String, i64)> = db
        .admin
        .query(
            "SELECT tableoid::regclass::text, count(*) FROM journal_entries GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .expect("placement")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        placed,
        [
            (format!("journal_entries{two_ago}"), 2),
            (format!("journal_entries{one_ago}"), 1),
            (format!("journal_entries{this}"), 1),
        ]
    );
    for table in ["idempotency_keys", "audit_log"] {
        assert_eq!(
            db.count(&format!("SELECT count(*) FROM {table}_default"))
                .await,
            0,
            "{table}: nothing in the default partition"
        );
    }

    // A point-in-time balance (the shape of the store's balance_at) one month ago reads no
    // later month.
    let at = one_ago_lo + 3 * DAY_MS;
    let balance_at = format!(
        "SELECT j.after_available FROM accounts a LEFT JOIN LATERAL ( \
           SELECT after_available FROM journal_entries \
           WHERE tenant = a.tenant AND at <= {at} ORDER BY seq DESC LIMIT 1) j ON true \
         WHERE a.tenant = 'acme'"
    );
    let plan = explain(&db, &balance_at).await;
    assert!(
        plan.contains(&format!("journal_entries{one_ago}")),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("journal_entries{two_ago}")),
        "{plan}"
    );
    for later in [&this, &next] {
        assert!(!plan.contains(&format!("journal_entries{later}")), "{plan}");
    }
    let balance = ledger
        .balance_at(&acme, Timestamp::from_unix_millis(at))
        .await
        .expect("balance_at");
    assert_eq!(balance.available, Amount::new(80));
    // The store's prepared statement (a generic plan after a few runs) prunes at run time.
    db.admin
        .batch_execute(
            "SET plan_cache_mode = force_generic_plan; \
             PREPARE balance_at (text, bigint) AS \
             SELECT j.after_available FROM accounts a LEFT JOIN LATERAL ( \
               SELECT after_available FROM journal_entries \
               WHERE tenant = a.tenant AND at <= $2 ORDER BY seq DESC LIMIT 1) j ON true \
             WHERE a.tenant = $1",
        )
        .await
        .expect("prepare");
    let plan = explain(&db, &format!("EXECUTE balance_at('acme', {at})")).await;
    assert!(plan.contains("Subplans Removed"), "{plan}");

    // History of one month reads that month's partition only.
    let history = format!(
        "SELECT seq FROM journal_entries WHERE tenant = 'acme' \
         AND at >= {one_ago_lo} AND at < {} ORDER BY seq",
        one_ago_lo + 20 * DAY_MS
    );
    let plan = explain(&db, &history).await;
    assert_eq!(
        plan.matches(" on journal_entries_").count(),
        1,
        "one partition: {plan}"
    );
    assert!(
        plan.contains(&format!("journal_entries{one_ago}")),
        "{plan}"
    );
    let at_hi = i64::try_from(one_ago_lo + 20 * DAY_MS).expect("ms");
    let at_lo = i64::try_from(one_ago_lo).expect("ms");
    let rows = db
        .admin
        .query(
            "SELECT seq FROM journal_entries WHERE tenant = 'acme' AND at >= $1 AND at < $2",
            &[&at_lo, &at_hi],
        )
        .await
        .expect("history");
    assert_eq!(rows.len(), 1);

    // The audit log's partitions are append-only, whoever asks (here the owner).
    for sql in [
        format!("DELETE FROM audit_log{this}"),
        format!("UPDATE audit_log{two_ago} SET at = at"),
        format!("TRUNCATE audit_log{this}"),
        "TRUNCATE audit_log_default".to_owned(),
        "TRUNCATE audit_log".to_owned(),
        "DELETE FROM audit_log".to_owned(),
    ] {
        let err = db.admin.batch_execute(&sql).await.expect_err(&sql);
        assert!(
            err.as_db_error()
                .is_some_and(|e| e.message().contains("append-only")),
            "{sql}: {err}"
        );
    }
    // The application's role cannot detach one.
    let err = db
        .admin
        .batch_execute(&format!(
            "SET ROLE credits_app; ALTER TABLE audit_log DETACH PARTITION audit_log{this}"
        ))
        .await
        .expect_err("detach as credits_app");
    assert!(
        err.as_db_error()
            .is_some_and(|e| e.message().contains("must be owner")),
        "{err}"
    );
    db.admin.batch_execute("RESET ROLE").await.expect("reset");

    // A month whose rows already sit in a default partition is left alone there (a
    // warning); the other tables get theirs.
    let far = month(&db, -30).await;
    db.admin
        .execute(
            "INSERT INTO idempotency_keys (tenant, key, at, record) VALUES ('acme', 'far', $1, '{}')",
            &[&i64::try_from(far.2 + DAY_MS).expect("ms")],
        )
        .await
        .expect("far row");
    assert_eq!(
        db.admin
            .query_one(
                "SELECT credits_create_partitions($1::text::date, $1::text::date)",
                &[&far.0],
            )
            .await
            .expect("create")
            .get::<_, i32>(0),
        2,
        "the journal's and the audit log's months are created"
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM pg_class WHERE relname = 'idempotency_keys{}' \
             AND relnamespace = '{}'::regnamespace",
            far.1, db.schema
        ))
        .await,
        0,
        "the idempotency records' month is left to the default partition"
    );
    db.drop_schema().await;
}

#[tokio::test]
async fn an_archived_month_verifies_with_the_live_log_as_one_log() {
    let Some(db) = common::test_db("partitions_archive").await else {
        return;
    };
    let (store, ledger, clock) = ledger_months_ago(&db, 2).await;
    let tenants = [
        TenantId::new("acme").expect("tenant"),
        TenantId::new("bolt").expect("tenant"),
    ];
    months_of_traffic(&db, &ledger, &clock, &tenants, 2).await;
    let (two_ago_day, two_ago, _) = month(&db, 2).await;
    let (this_day, _, _) = month(&db, 0).await;
    let archive = format!("{}_archive", db.schema);
    let archive_month = |m: String| {
        let archive = archive.clone();
        let admin = &db.admin;
        async move {
            admin
                .query_one(
                    "SELECT journal_entries, audit_entries, idempotency_records, \
                            log_index_max, checkpoint FROM credits_archive_month($1::text::date, $2)",
                    &[&m, &archive],
                )
                .await
        }
    };

    // Refused while the month's entries are not in the log yet, and for a month not over.
    let err = archive_month(two_ago_day.clone())
        .await
        .expect_err("entries not in the log yet");
    assert!(format!("{err:?}").contains("not in the log yet"), "{err:?}");
    let err = archive_month(this_day)
        .await
        .expect_err("this month is not over");
    assert!(format!("{err:?}").contains("not over yet"), "{err:?}");

    // The sequencer integrates everything and stores a checkpoint.
    let sequencer = store.audit_sequencer(
        WriterConfig::builder("test/partitions")
            .build()
            .expect("config"),
        Arc::new(SystemClock::new()),
        None,
    );
    let leader = sequencer
        .try_lead()
        .await
        .expect("lead")
        .expect("no other leader");
    let checkpoint = leader.writer().flush().await.expect("flush");
    leader.resign().await.expect("resign");
    let total_journal = db.count("SELECT count(*) FROM journal_entries").await;
    assert_eq!(
        checkpoint.size,
        u64::try_from(total_journal).expect("count")
    );

    let row = archive_month(two_ago_day).await.expect("archive");
    let (journal, audit, records, index_max, note): (i64, i64, i64, Option<i64>, Option<String>) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    // Two months ago: each tenant's grant and first consume.
    assert_eq!((journal, audit, records), (4, 4, 4));
    let note = note.expect("a covering checkpoint");
    let archived = Checkpoint::parse_note_unverified(&note).expect("checkpoint");
    assert!(
        archived.size > u64::try_from(index_max.expect("entries in the log")).expect("index"),
        "the archived checkpoint covers the month"
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM pg_class WHERE relname = 'journal_entries{two_ago}' \
             AND relnamespace = '{}'::regnamespace",
            db.schema
        ))
        .await,
        0,
        "the month's partition left the live schema"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM journal_entries").await,
        total_journal - 4
    );
    assert_eq!(
        db.count(&format!("SELECT count(*) FROM {archive}.journal_entries"))
            .await,
        4
    );
    // The archived audit entries stay append-only.
    let err = db
        .admin
        .batch_execute(&format!("DELETE FROM {archive}.audit_log"))
        .await
        .expect_err("delete from the archive");
    assert!(
        err.as_db_error()
            .is_some_and(|e| e.message().contains("append-only")),
        "{err}"
    );

    let keys = keyring();
    let mut verifier = connect(&db.url).await;
    // The live log alone lacks the archived entries.
    let live = verify_schema(&mut verifier, &db.schema, &keys, Some(&checkpoint))
        .await
        .expect("verify live");
    assert!(!live.is_intact(), "{live:?}");
    // With its archive it is one intact log, against the archived checkpoint and the latest.
    for cp in [&archived, &checkpoint] {
        let whole =
            verify_schema_with_archive(&mut verifier, &db.schema, Some(&archive), &keys, Some(cp))
                .await
                .expect("verify with archive");
        assert!(whole.is_intact(), "{whole:?}");
        assert_eq!(whole.report.entries_ok, checkpoint.size);
        assert!(whole.report.checkpoint_matched);
        let ledger_report = whole.ledger.expect("ledger");
        assert_eq!(
            ledger_report.journal_entries,
            u64::try_from(total_journal).expect("count")
        );
    }

    // Exported with pg_dump, dropped, restored: the restored archive verifies the same.
    let dump = std::env::temp_dir().join(format!("{archive}.sql"));
    let status = std::process::Command::new("timeout")
        .arg("60")
        .arg("pg_dump")
        .arg("--schema")
        .arg(&archive)
        .arg("--file")
        .arg(&dump)
        .arg(&db.url)
        .status()
        .expect("pg_dump runs");
    assert!(status.success(), "pg_dump: {status}");
    db.admin
        .batch_execute(&format!("DROP SCHEMA {archive} CASCADE"))
        .await
        .expect("drop archive");
    let gone =
        verify_schema_with_archive(&mut verifier, &db.schema, Some(&archive), &keys, None).await;
    assert!(gone.is_err(), "{gone:?}");
    let status = std::process::Command::new("timeout")
        .arg("60")
        .arg("psql")
        .arg("-q")
        .arg("-v")
        .arg("ON_ERROR_STOP=1")
        .arg("-f")
        .arg(&dump)
        .arg(&db.url)
        .status()
        .expect("psql runs");
    assert!(status.success(), "restore: {status}");
    let _ = std::fs::remove_file(&dump);
    let restored = verify_schema_with_archive(
        &mut verifier,
        &db.schema,
        Some(&archive),
        &keys,
        Some(&archived),
    )
    .await
    .expect("verify restored");
    assert!(restored.is_intact(), "{restored:?}");

    db.admin
        .batch_execute(&format!("DROP SCHEMA {archive} CASCADE"))
        .await
        .expect("drop archive");
    db.drop_schema().await;
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) =
        tokio::time::timeout(Duration::from_secs(10), tokio_postgres::connect(url, NoTls))
            .await
            .expect("connect in time")
            .expect("connect");
    tokio::spawn(conn);
    client
}

#[tokio::test]
async fn migration_10_partitions_a_database_that_holds_data() {
    let Some(mut db) = common::test_db("partitions_existing").await else {
        return;
    };
    // A deployment without migration 10 holding data: every other migration applied (the
    // later ones do not depend on 10, and this build's store needs their columns), so
    // `migrate` then applies 10 alone, on tables full of rows.
    db.admin
        .batch_execute(
            "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, name text NOT NULL, \
             applied_at timestamptz NOT NULL DEFAULT clock_timestamp())",
        )
        .await
        .expect("schema_migrations");
    for m in credits_postgres::MIGRATIONS
        .iter()
        .filter(|m| m.version != 10)
    {
        let tx = db.admin.transaction().await.expect("begin");
        tx.batch_execute(m.sql).await.expect(m.name);
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .expect("version");
        tx.commit().await.expect("commit");
    }
    let clock = ManualClock::new(common::START);
    let store = PgLedgerStore::connect(
        db.config()
            .audit(LedgerAudit::new(keyring(), MaskingPolicy::standard()))
            .build()
            .expect("config"),
        Arc::new(clock.clone()),
    )
    .expect("store");
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
    // A month later (2023-12), then today: three months with rows, and one row in 1970
    // (outside the ten years the migration makes partitions for).
    clock.set_now(Timestamp::from_unix_millis(1_702_000_000_000));
    ledger
        .consume(&acme, key("c1"), Amount::new(10))
        .await
        .expect("consume");
    clock.set_now(SystemClock::new().now());
    ledger
        .consume(&acme, key("c2"), Amount::new(10))
        .await
        .expect("consume");
    db.admin
        .batch_execute(
            "INSERT INTO idempotency_keys (tenant, key, at, record) VALUES ('acme', 'old', 5, '{}')",
        )
        .await
        .expect("old record");
    let sequencer = store.audit_sequencer(
        WriterConfig::builder("test/partitions")
            .build()
            .expect("config"),
        Arc::new(SystemClock::new()),
        None,
    );
    let leader = sequencer.try_lead().await.expect("lead").expect("leader");
    let checkpoint = leader.writer().flush().await.expect("flush");
    leader.resign().await.expect("resign");
    let before = ledger
        .balance_at(&acme, Timestamp::from_unix_millis(1_702_000_000_001))
        .await
        .expect("balance_at");

    let report = store.migrate().await.expect("migrate 10");
    assert_eq!(report.applied, [10]);
    let placed: Vec<(String, i64)> = db
        .admin
        .query(
            "SELECT tableoid::regclass::text, count(*) FROM idempotency_keys GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .expect("placement")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let (_, this, _) = month(&db, 0).await;
    assert_eq!(
        placed,
        [
            ("idempotency_keys_default".to_owned(), 1),
            ("idempotency_keys_p2023_11".to_owned(), 1),
            ("idempotency_keys_p2023_12".to_owned(), 1),
            (format!("idempotency_keys{this}"), 1),
        ]
    );
    assert_eq!(db.count("SELECT count(*) FROM journal_entries").await, 3);
    assert_eq!(db.count("SELECT count(*) FROM audit_log").await, 3);
    assert_eq!(
        ledger
            .balance_at(&acme, Timestamp::from_unix_millis(1_702_000_000_001))
            .await
            .expect("balance_at"),
        before
    );
    db.reconnect().await;
    let mut verifier = connect(&db.url).await;
    let result = verify_schema(&mut verifier, &db.schema, &keyring(), Some(&checkpoint))
        .await
        .expect("verify");
    assert!(result.is_intact(), "{result:?}");
    // The application carries on on the partitioned tables.
    ledger
        .consume(&acme, key("c3"), Amount::new(10))
        .await
        .expect("consume after the migration");
    assert_eq!(
        ledger.balance(&acme).await.expect("balance").available,
        Amount::new(70)
    );
    db.drop_schema().await;
}
