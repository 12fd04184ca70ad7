//! `audit_chain::pg::verify_schema` (what `audit-verify --database-url` runs) on a real
//! log: intact with its backlog and ledger; entries committed but not integrated are
//! reported as the backlog; a changed account, a journal entry without audit entry, an
//! audit entry without journal entry, a rewritten record and a cut log each fail with the
//! check that names them.

// Tests run the connection's task like an application does.
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use audit_chain::pg::{LedgerCheck, PgVerification, verify_schema};
use audit_chain::{Checkpoint, HmacKey, IntegrityCheck, Keyring, MaskingPolicy, WriterConfig};
use credits_core::audit::LedgerAudit;
use credits_core::{Amount, GrantOptions, IdempotencyKey, Ledger, TenantId, TenantSettings};
use credits_postgres::PgLedgerStore;
use credits_postgres::tokio_postgres::{self, NoTls};
use metered_clock::ManualClock;

fn keyring() -> Arc<Keyring> {
    Arc::new(Keyring::new(HmacKey::new(1, [0x33; 32]).expect("key")))
}

fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::new(s).expect("key")
}

fn tenant(s: &str) -> TenantId {
    TenantId::new(s).expect("tenant")
}

/// Verifies the test's schema through a connection of its own, as the binary does.
async fn verify(db: &common::TestDb, checkpoint: Option<&Checkpoint>) -> PgVerification {
    let (mut client, conn) = tokio_postgres::connect(&db.url, NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    verify_schema(&mut client, &db.schema, &keyring(), checkpoint)
        .await
        .expect("verify")
}

/// The ledger's failed check, asserting the log itself verified.
fn ledger_failure(v: &PgVerification) -> (String, LedgerCheck) {
    assert!(v.report.is_intact(), "{:?}", v.report.failure);
    let f = v
        .ledger
        .as_ref()
        .expect("ledger checked")
        .failure
        .as_ref()
        .expect("a ledger failure");
    (f.tenant.clone(), f.check)
}

async fn journal_len(db: &common::TestDb) -> u64 {
    u64::try_from(db.count("SELECT count(*) FROM journal_entries").await).expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_log_verifies_with_its_backlog_and_its_ledger() {
    let Some(db) = common::test_db("audit_verify").await else {
        return;
    };
    let clock = ManualClock::new(common::START);
    let store: PgLedgerStore = db
        .store(
            db.config()
                .audit(LedgerAudit::new(keyring(), MaskingPolicy::standard())),
            Arc::new(clock.clone()),
        )
        .await;
    let ledger = Ledger::new(store.clone(), clock.clone());
    let (acme, bolt) = (tenant("acme"), tenant("bolt"));
    for t in [&acme, &bolt] {
        ledger
            .create_tenant(t, TenantSettings::default())
            .await
            .expect("tenant");
    }
    for (t, n) in [(&acme, 100), (&bolt, 50)] {
        ledger
            .grant(t, key("g"), Amount::new(n), GrantOptions::default())
            .await
            .expect("grant");
    }
    let spent = ledger
        .consume(&acme, key("c1"), Amount::new(30))
        .await
        .expect("consume");
    ledger
        .refund(&acme, key("rf"), spent.entry, Amount::new(5))
        .await
        .expect("refund");
    let hold = ledger
        .reserve(&bolt, key("r"), Amount::new(20), Duration::from_secs(60))
        .await
        .expect("reserve");
    ledger
        .commit(&bolt, key("cm"), hold.hold, Amount::new(15))
        .await
        .expect("commit");
    // Holds left open: held is part of the counters the audit must replay to.
    ledger
        .reserve(&acme, key("r2"), Amount::new(7), Duration::from_secs(60))
        .await
        .expect("reserve");
    ledger
        .reserve(&bolt, key("r3"), Amount::new(3), Duration::from_secs(600))
        .await
        .expect("reserve");

    // A lot and the open hold expire: the sweep's entries are audited like the others.
    ledger
        .grant(
            &bolt,
            key("g2"),
            Amount::new(9),
            GrantOptions::default()
                .expires_at(common::START.saturating_add(Duration::from_secs(90))),
        )
        .await
        .expect("grant");
    clock.advance(Duration::from_secs(120));
    ledger.recover().await.expect("sweep");

    // Integrate everything and keep the checkpoint (as a verifier would, elsewhere).
    let leader = store
        .audit_sequencer(
            WriterConfig::builder("test.invalid/pg-verify")
                .build()
                .expect("config"),
            Arc::new(clock.clone()),
            None,
        )
        .try_lead()
        .await
        .expect("lead")
        .expect("leads");
    let kept = leader.writer().flush().await.expect("flush");
    leader.resign().await.expect("resign");
    let journal = journal_len(&db).await;
    assert_eq!(kept.size, journal, "one log entry per journal entry");

    let v = verify(&db, Some(&kept)).await;
    assert!(v.is_intact(), "{v:?}");
    assert_eq!(v.report.entries_ok, journal);
    assert_eq!(v.report.streams, 2);
    assert!(v.report.checkpoint_matched);
    assert_eq!(v.report.root, Some(kept.root));
    assert_eq!(v.backlog, 0);
    let l = v.ledger.as_ref().expect("ledger");
    assert_eq!((l.tenants, l.journal_entries), (2, journal));

    // Changes committed while no sequencer runs: in the backlog, not in the log, and the
    // ledger still matches its audit entries (queued ones included).
    for k in ["c2", "c3", "c4"] {
        ledger
            .consume(&bolt, key(k), Amount::new(1))
            .await
            .expect("consume");
    }
    let v = verify(&db, Some(&kept)).await;
    assert!(v.is_intact(), "{v:?}");
    assert_eq!(v.backlog, 3);
    assert_eq!(v.report.entries_ok, journal);
    assert_eq!(
        v.ledger.as_ref().expect("ledger").journal_entries,
        journal + 3
    );

    // The owner changes an account's counters (conservation kept): its audit entries no
    // longer replay to them.
    let adjust = |d: i64| {
        format!(
            "UPDATE accounts SET available = available + {d}, granted = granted + {d} \
             WHERE tenant = 'bolt'"
        )
    };
    db.admin.batch_execute(&adjust(1)).await.expect("adjust");
    let v = verify(&db, Some(&kept)).await;
    assert!(!v.is_intact());
    assert_eq!(ledger_failure(&v), ("bolt".into(), LedgerCheck::Counters));
    db.admin.batch_execute(&adjust(-1)).await.expect("restore");
    assert!(verify(&db, Some(&kept)).await.is_intact());

    // A journal entry without audit entry (written behind the ledger's back).
    db.admin
        .batch_execute(
            "INSERT INTO journal_entries (tenant, seq, at, kind, amount, before_available, \
               before_held, before_overdrawn, after_available, after_held, after_overdrawn) \
             SELECT tenant, seq + 1000, at, kind, amount, before_available, before_held, \
               before_overdrawn, after_available, after_held, after_overdrawn \
             FROM journal_entries WHERE tenant = 'acme' ORDER BY seq DESC LIMIT 1",
        )
        .await
        .expect("insert");
    let v = verify(&db, Some(&kept)).await;
    assert_eq!(
        ledger_failure(&v),
        ("acme".into(), LedgerCheck::MissingEntry)
    );
    // An audit entry without journal entry (its journal entry deleted).
    db.admin
        .batch_execute(
            "DELETE FROM journal_entries WHERE tenant = 'acme' AND seq >= 1000; \
             CREATE TEMP TABLE saved AS SELECT * FROM journal_entries \
               WHERE tenant = 'bolt' ORDER BY seq DESC LIMIT 1; \
             DELETE FROM journal_entries j USING saved s \
               WHERE j.tenant = s.tenant AND j.seq = s.seq",
        )
        .await
        .expect("delete");
    let v = verify(&db, Some(&kept)).await;
    assert_eq!(ledger_failure(&v), ("bolt".into(), LedgerCheck::ExtraEntry));
    db.admin
        .batch_execute("INSERT INTO journal_entries SELECT * FROM saved")
        .await
        .expect("restore");
    assert!(verify(&db, Some(&kept)).await.is_intact());

    // The owner disables the append-only trigger and rewrites one integrated record (a
    // consume of 30 becomes 1): the log fails at that entry's hash, and so does the
    // tenant's chain in the ledger check.
    let row = db
        .admin
        .query_one(
            "SELECT x.log_index, a.stream_seq, a.record FROM audit_log a \
             JOIN audit_index x USING (stream, stream_seq) \
             WHERE a.stream = 'ledger/acme' ORDER BY a.stream_seq OFFSET 1 LIMIT 1",
            &[],
        )
        .await
        .expect("row");
    let (index, seq, good): (i64, i64, Vec<u8>) = (row.get(0), row.get(1), row.get(2));
    let sealed = audit_chain::SealedEntry::decode(&good).expect("decode");
    assert_eq!(sealed.entry().amount, Some(30));
    let mut bad = good.clone();
    let at = bad
        .windows(8)
        .position(|w| w == 30u64.to_be_bytes())
        .expect("amount bytes");
    bad[at..at + 8].copy_from_slice(&1u64.to_be_bytes());
    let rewrite =
        "UPDATE audit_log SET record = $1 WHERE stream = 'ledger/acme' AND stream_seq = $2";
    db.admin
        .batch_execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
        .await
        .expect("owner disables the trigger");
    db.admin
        .execute(rewrite, &[&bad, &seq])
        .await
        .expect("rewrite");
    let v = verify(&db, Some(&kept)).await;
    assert!(!v.is_intact());
    let f = v.report.failure.as_ref().expect("log failure");
    assert_eq!(
        (f.index, f.check),
        (u64::try_from(index).unwrap(), IntegrityCheck::Hash)
    );
    let l = v
        .ledger
        .as_ref()
        .expect("ledger")
        .failure
        .as_ref()
        .expect("ledger failure");
    assert_eq!(
        (l.tenant.as_str(), l.check),
        ("acme", LedgerCheck::Chain(IntegrityCheck::Hash))
    );
    db.admin
        .execute(rewrite, &[&good, &seq])
        .await
        .expect("restore");
    assert!(verify(&db, Some(&kept)).await.is_intact());

    // The newest integrated entry's index removed: without a trusted checkpoint, the
    // checkpoint stored beside the log still shows the log was longer.
    db.admin
        .batch_execute(
            "ALTER TABLE audit_index DISABLE TRIGGER audit_index_append_only; \
             DELETE FROM audit_index WHERE log_index = (SELECT max(log_index) FROM audit_index)",
        )
        .await
        .expect("cut");
    let v = verify(&db, None).await;
    let f = v.report.failure.as_ref().expect("log failure");
    assert_eq!((f.index, f.check), (journal - 1, IntegrityCheck::Truncated));
    let v = verify(&db, Some(&kept)).await;
    let f = v.report.failure.as_ref().expect("log failure");
    assert_eq!((f.index, f.check), (journal - 1, IntegrityCheck::Truncated));
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_without_the_log_is_an_error_not_an_empty_log() {
    let Some(db) = common::test_db("audit_verify_empty").await else {
        return;
    };
    let (mut client, conn) = tokio_postgres::connect(&db.url, NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let e = verify_schema(&mut client, &db.schema, &keyring(), None)
        .await
        .expect_err("no tables");
    assert_eq!(e.code(), "invalid_config", "{e}");
    db.drop_schema().await;
}
