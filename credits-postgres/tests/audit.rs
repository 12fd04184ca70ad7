//! The audit log on PostgreSQL: every ledger change's entries are sealed in its transaction
//! with the mapping the memory store uses (byte for byte), queued, and integrated into one
//! Merkle log by one sequencer at a time; entries committed while no sequencer runs wait
//! in the queue; another replica takes over when the leader dies; the application role
//! cannot rewrite the log; rewriting a tenant's history is caught by a checkpoint.

// Tests wait for the database like an application does.
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use audit_chain::merkle::{verify_consistency, verify_inclusion};
use audit_chain::{
    AuditEntry, AuditSink, AuditTrail, AuditWriter, HmacKey, Keyring, MaskingPolicy,
    MemoryAuditQueue, MemorySink, WriterConfig, verify_sink,
};
use credits_core::audit::{LedgerAudit, MemoryAudit, stream_name};
use credits_core::{
    Amount, Command, GrantOptions, IdempotencyKey, Ledger, LedgerStore, MemoryLedgerStore,
    PageRequest, Request, TenantId, TenantSettings,
};
use credits_postgres::PgLedgerStore;
use credits_postgres::tokio_postgres::{self, NoTls};
use metered_clock::{Clock, ManualClock};

fn keyring() -> Arc<Keyring> {
    Arc::new(Keyring::new(HmacKey::new(1, [0x33; 32]).expect("key")))
}

fn audit() -> LedgerAudit {
    LedgerAudit::new(keyring(), MaskingPolicy::standard())
}

fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::new(s).expect("key")
}

fn config() -> WriterConfig {
    WriterConfig::builder("test.invalid/pg-audit")
        .build()
        .expect("config")
}

/// Leads the schema's log (no other sequencer runs in these tests).
async fn lead(store: &PgLedgerStore, clock: &ManualClock) -> credits_postgres::Leadership {
    store
        .audit_sequencer(config(), Arc::new(clock.clone()), None)
        .try_lead()
        .await
        .expect("lead")
        .expect("no other sequencer leads")
}

async fn audited(db: &common::TestDb, clock: &ManualClock) -> PgLedgerStore {
    db.store(db.config().audit(audit()), Arc::new(clock.clone()))
        .await
}

/// The same changes on any store: grants, a hold committed, a consume, a refund, a
/// batch over two tenants, a refused batch, an expiry and a rollover.
async fn workload<S: LedgerStore + 'static>(ledger: &Ledger<S>, clock: &ManualClock) {
    let (a, b) = (
        TenantId::new("acme").unwrap(),
        TenantId::new("bolt").unwrap(),
    );
    // acme rolls half of an expiring lot over, at most 10 credits, for a minute.
    let rollover =
        credits_core::RolloverPolicy::new(50, Some(Amount::new(10)), Duration::from_secs(60))
            .unwrap();
    let rolls = TenantSettings {
        rollover: Some(rollover),
        ..TenantSettings::default()
    };
    for (t, settings) in [(&a, rolls), (&b, TenantSettings::default())] {
        ledger.create_tenant(t, settings).await.expect("tenant");
    }
    let soon = clock.now().saturating_add(Duration::from_secs(10));
    ledger
        .grant(&a, key("g1"), Amount::new(100), GrantOptions::default())
        .await
        .expect("grant");
    ledger
        .grant(
            &a,
            key("g2"),
            Amount::new(30),
            GrantOptions::default().expires_at(soon),
        )
        .await
        .expect("grant");
    let h = ledger
        .reserve(&a, key("r"), Amount::new(40), Duration::from_secs(60))
        .await
        .expect("reserve");
    ledger
        .commit(&a, key("c"), h.hold, Amount::new(25))
        .await
        .expect("commit");
    let spent = ledger
        .consume(&a, key("u"), Amount::new(10))
        .await
        .expect("consume");
    ledger
        .refund(&a, key("rf"), spent.entry, Amount::new(4))
        .await
        .expect("refund");
    let grant = |n| Command::Grant {
        amount: Amount::new(n),
        expires_at: None,
        priority: 0,
    };
    ledger
        .batch(&[
            Request::new(a.clone(), key("bg"), grant(5)),
            Request::new(b.clone(), key("bg"), grant(7)),
        ])
        .await
        .expect("batch");
    // Refused part-way: no entry for either tenant.
    ledger
        .batch(&[
            Request::new(a.clone(), key("bx"), grant(1)),
            Request::new(
                b.clone(),
                key("by"),
                Command::Consume {
                    amount: Amount::new(1_000),
                },
            ),
        ])
        .await
        .expect_err("refused");
    clock.advance(Duration::from_secs(20));
    ledger.recover().await.expect("sweep"); // the lot of g2 expires
    // A rollover: 10 of g4's 24 roll over (half, capped at 10) and 14 expire, in one change.
    let soon = clock.now().saturating_add(Duration::from_secs(10));
    ledger
        .grant(
            &a,
            key("g4"),
            Amount::new(24),
            GrantOptions::default().expires_at(soon),
        )
        .await
        .expect("grant");
    clock.advance(Duration::from_secs(20));
    ledger.recover().await.expect("sweep");
    // The lifecycle: a void carries its reason into the audit entry; status entries move
    // nothing; a close voids what is left.
    ledger
        .grant(&b, key("g3"), Amount::new(9), GrantOptions::default())
        .await
        .expect("grant");
    ledger
        .void_lot(
            &b,
            key("v"),
            credits_core::LotId::new(1),
            credits_core::Reason::new("granted by mistake").unwrap(),
        )
        .await
        .expect("void");
    ledger.freeze(&b, key("f")).await.expect("freeze");
    ledger.unfreeze(&b, key("uf")).await.expect("unfreeze");
    ledger.close(&b, key("x")).await.expect("close");
}

async fn journal_len<S: LedgerStore + 'static>(ledger: &Ledger<S>) -> usize {
    let mut n = 0;
    for t in ["acme", "bolt"] {
        n += ledger
            .history(&TenantId::new(t).unwrap(), PageRequest::first(1_000))
            .await
            .expect("history")
            .entries
            .len();
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_changes_seal_to_the_same_bytes_on_memory_and_postgres() {
    let Some(db) = common::test_db("audit_kat").await else {
        return;
    };
    // Memory: the store's queue, integrated by a writer into a memory sink.
    let clock = ManualClock::new(common::START);
    let queue = Arc::new(MemoryAuditQueue::new(10_000));
    let sink = Arc::new(MemorySink::new());
    let writer = AuditWriter::open_with_queue(
        sink.clone(),
        queue.clone(),
        config(),
        Arc::new(clock.clone()),
        None,
    )
    .await
    .expect("writer");
    let memory = Ledger::new(
        MemoryLedgerStore::builder()
            .audit(MemoryAudit::new(audit(), queue))
            .build(),
        clock.clone(),
    );
    workload(&memory, &clock).await;
    writer.flush().await.expect("flush");
    let mut from_memory = Vec::new();
    for r in sink.snapshot() {
        let mut b = Vec::new();
        r.entry.encode(&mut b);
        from_memory.push((r.entry.stream().to_owned(), r.entry.seq(), b));
    }

    // PostgreSQL: the rows its transactions wrote.
    let clock = ManualClock::new(common::START);
    let store = audited(&db, &clock).await;
    let pg = Ledger::new(store, clock.clone());
    workload(&pg, &clock).await;
    let rows = db
        .admin
        .query(
            "SELECT stream, stream_seq, record FROM audit_log ORDER BY stream, stream_seq",
            &[],
        )
        .await
        .expect("rows");
    let mut from_pg: Vec<(String, u64, Vec<u8>)> = rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                u64::try_from(r.get::<_, i64>(1)).unwrap(),
                r.get(2),
            )
        })
        .collect();
    from_memory.sort();
    from_pg.sort();
    assert_eq!(from_memory.len(), journal_len(&memory).await);
    let acme = memory
        .history(&TenantId::new("acme").unwrap(), PageRequest::first(1_000))
        .await
        .expect("history")
        .entries;
    let rolled: Vec<_> = acme
        .iter()
        .filter(|e| e.kind == credits_core::EntryKind::RolledOver)
        .map(|e| e.amount)
        .collect();
    assert_eq!(rolled, [Amount::new(10)], "the workload rolls a lot over");
    assert!(from_memory.iter().all(|(s, ..)| s.starts_with("ledger/")));
    assert_eq!(from_pg, from_memory, "byte-identical audit entries");
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ledger_entry_is_in_the_merkle_log_with_a_proof() {
    let Some(db) = common::test_db("audit_log").await else {
        return;
    };
    let clock = ManualClock::new(common::START);
    let store = audited(&db, &clock).await;
    let ledger = Ledger::new(store.clone(), clock.clone());
    // Committed while no sequencer runs (as after a crash between commit and
    // integration): the entries wait in the queue.
    workload(&ledger, &clock).await;
    let journal = journal_len(&ledger).await;
    assert_eq!(
        db.count("SELECT count(*) FROM audit_pending").await,
        journal as i64
    );
    assert_eq!(store.audit_sink().size().await.expect("size"), 0);

    // Another stream (a rollout's trail) joins the same log, from any replica.
    let trail = store.audit_trail(keyring(), MaskingPolicy::standard());
    let appended = trail
        .record(AuditEntry::new(
            "canary/web",
            "rollout",
            "promote",
            clock.now(),
        ))
        .await
        .expect("trail");
    assert_eq!((appended.index, appended.seq), (None, 0));

    let leader = lead(&store, &clock).await;
    let cp = leader.writer().flush().await.expect("flush");
    assert_eq!(cp.size, journal as u64 + 1);
    assert_eq!(db.count("SELECT count(*) FROM audit_pending").await, 0);
    let sink = store.audit_sink();
    let report = verify_sink(&sink, &keyring(), Some(&cp))
        .await
        .expect("verify");
    assert!(report.is_intact(), "{:?}", report.failure);
    assert_eq!(report.entries_ok, cp.size);
    // Each entry has an inclusion proof against the checkpoint.
    for r in sink.read(0, 10_000).await.expect("read") {
        let proof = leader
            .writer()
            .inclusion_proof(r.index, cp.size)
            .expect("proof");
        verify_inclusion(&r.entry.leaf_hash(), r.index, cp.size, &proof, &cp.root)
            .expect("inclusion");
    }
    // Each tenant's stream matches its journal entry for entry.
    let acme = TenantId::new("acme").unwrap();
    let history = ledger
        .history(&acme, PageRequest::first(1_000))
        .await
        .expect("history");
    let sealed = store.audit_entries(&acme, 0, 1_000).await.expect("entries");
    assert_eq!(sealed.len(), history.entries.len());
    for (s, e) in sealed.iter().zip(&history.entries) {
        assert_eq!(s.stream(), stream_name(&acme));
        assert_eq!(
            s.entry(),
            &credits_core::audit::audit_entry(&stream_name(&acme), e)
        );
    }
    assert!(
        !store
            .audit_sink()
            .checkpoints()
            .await
            .expect("cps")
            .is_empty()
    );
    leader.resign().await.expect("resign");
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sequencer_leads_and_another_takes_over_when_it_dies() {
    let Some(db) = common::test_db("audit_leader").await else {
        return;
    };
    let clock = ManualClock::new(common::START);
    let store = audited(&db, &clock).await;
    let ledger = Ledger::new(store.clone(), clock.clone());
    let a = TenantId::new("acme").unwrap();
    ledger
        .create_tenant(&a, TenantSettings::default())
        .await
        .expect("tenant");
    // Two replicas' sequencers: one leads, the other waits.
    let first = store.audit_sequencer(config(), Arc::new(clock.clone()), None);
    let second = store.audit_sequencer(config(), Arc::new(clock.clone()), None);
    let leader = first.try_lead().await.expect("lead").expect("leads");
    assert!(second.try_lead().await.expect("try").is_none());
    for i in 0..20 {
        ledger
            .grant(
                &a,
                key(&format!("g{i}")),
                Amount::new(1),
                GrantOptions::default(),
            )
            .await
            .expect("grant");
    }
    let old = leader.writer().flush().await.expect("flush");
    assert_eq!(old.size, 20);
    // The leader dies without a word (no final checkpoint): its connection closes.
    drop(leader);
    for i in 20..30 {
        ledger
            .grant(
                &a,
                key(&format!("g{i}")),
                Amount::new(1),
                GrantOptions::default(),
            )
            .await
            .expect("grant");
    }
    let mut next = None;
    for _ in 0..100 {
        if let Some(l) = second.try_lead().await.expect("try") {
            next = Some(l);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let next = next.expect("the second replica took over");
    let new = next.writer().flush().await.expect("flush");
    assert_eq!(new.size, 30, "no gap, nothing twice");
    let proof = next
        .writer()
        .consistency_proof(old.size, new.size)
        .expect("proof");
    verify_consistency(old.size, new.size, &proof, &old.root, &new.root).expect("consistent");
    let report = verify_sink(&store.audit_sink(), &keyring(), Some(&new))
        .await
        .expect("verify");
    assert!(report.is_intact());
    next.resign().await.expect("resign");
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriting_a_tenants_history_is_caught_by_a_checkpoint_kept_elsewhere() {
    let Some(db) = common::test_db("audit_tamper").await else {
        return;
    };
    let clock = ManualClock::new(common::START);
    let store = audited(&db, &clock).await;
    let ledger = Ledger::new(store.clone(), clock.clone());
    workload(&ledger, &clock).await;
    let leader = lead(&store, &clock).await;
    let kept = leader.writer().flush().await.expect("flush");
    leader.resign().await.expect("resign");
    // The database's owner rewrites one of acme's entries: a consume of 10 becomes 1.
    let row = db
        .admin
        .query_one(
            "SELECT stream_seq, record FROM audit_log \
             WHERE stream = 'ledger/acme' ORDER BY stream_seq LIMIT 1 OFFSET 4",
            &[],
        )
        .await
        .expect("row");
    let (seq, mut record): (i64, Vec<u8>) = (row.get(0), row.get(1));
    let sealed = audit_chain::SealedEntry::decode(&record).expect("decode");
    let amount = sealed.entry().amount.expect("amount");
    let at = record
        .windows(8)
        .position(|w| w == amount.to_be_bytes())
        .expect("amount bytes");
    record[at..at + 8].copy_from_slice(&1u64.to_be_bytes());
    db.admin
        .batch_execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
        .await
        .expect("owner disables the trigger");
    db.admin
        .execute(
            "UPDATE audit_log SET record = $1 WHERE stream = 'ledger/acme' AND stream_seq = $2",
            &[&record, &seq],
        )
        .await
        .expect("rewrite");
    let report = verify_sink(&store.audit_sink(), &keyring(), Some(&kept))
        .await
        .expect("verify");
    assert!(!report.is_intact(), "the rewrite is detected");
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_role_cannot_rewrite_the_log_or_drop_its_triggers() {
    let Some(db) = common::test_db("audit_role").await else {
        return;
    };
    let clock = ManualClock::new(common::START);
    // Migrations run as the owner (the admin).
    let store = audited(&db, &clock).await;
    drop(store);
    // A login role that is a member of credits_app, as the docs set up for the service.
    db.admin
        .batch_execute(
            "DO $$ BEGIN CREATE ROLE cp_test_service LOGIN IN ROLE credits_app; \
             EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        )
        .await
        .expect("role");
    let url = format!("{} user=cp_test_service", keyword_url(&db.url));
    let app = credits_postgres::PgConfig::builder(&url)
        .search_path(&db.schema)
        .pool_max_size(4)
        .audit(audit())
        .build()
        .expect("config");
    let store = PgLedgerStore::connect(app, Arc::new(clock.clone())).expect("store");
    // The service works as the role: changes, the queue and the sequencer.
    let ledger = Ledger::new(store.clone(), clock.clone());
    workload(&ledger, &clock).await;
    let leader = lead(&store, &clock).await;
    let cp = leader.writer().flush().await.expect("flush");
    assert!(cp.size > 0);
    leader.resign().await.expect("resign");
    // ... and cannot change what the log holds.
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
        .batch_execute(&format!("SET search_path = {}", db.schema))
        .await
        .expect("path");
    for sql in [
        "UPDATE audit_log SET at = 0",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "UPDATE audit_index SET log_index = log_index + 1000",
        "DELETE FROM audit_index",
        "TRUNCATE audit_index",
        "DELETE FROM audit_checkpoints",
        "TRUNCATE audit_checkpoints",
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
        "DROP TRIGGER audit_log_append_only ON audit_log",
        "DROP TRIGGER audit_index_append_only ON audit_index",
        "DROP TABLE audit_log CASCADE",
        "UPDATE journal_entries SET amount = 0",
    ] {
        let err = client.batch_execute(sql).await.expect_err(sql);
        let code = err.code().cloned();
        assert_eq!(
            code,
            Some(tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {err}"
        );
    }
    assert_eq!(
        db.count("SELECT count(*) FROM audit_index").await,
        i64::try_from(cp.size).unwrap()
    );
    db.drop_schema().await;
}

/// `DATABASE_URL` in key=value form (so a `user=` can be appended).
fn keyword_url(url: &str) -> String {
    let config: tokio_postgres::Config = url.parse().expect("DATABASE_URL");
    let mut parts = Vec::new();
    for h in config.get_hosts() {
        if let tokio_postgres::config::Host::Tcp(h) = h {
            parts.push(format!("host={h}"));
        }
    }
    if let Some(p) = config.get_ports().first() {
        parts.push(format!("port={p}"));
    }
    if let Some(d) = config.get_dbname() {
        parts.push(format!("dbname={d}"));
    }
    parts.join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_backlog_limit_changes_are_refused_and_nothing_changes() {
    let Some(db) = common::test_db("audit_backlog").await else {
        return;
    };
    let clock = ManualClock::new(common::START);
    let store = db
        .store(
            db.config().audit(audit()).audit_backlog_max(3),
            Arc::new(clock.clone()),
        )
        .await;
    let ledger = Ledger::new(store.clone(), clock.clone());
    let a = TenantId::new("acme").unwrap();
    ledger
        .create_tenant(&a, TenantSettings::default())
        .await
        .expect("tenant");
    for i in 0..3 {
        ledger
            .grant(
                &a,
                key(&format!("g{i}")),
                Amount::new(10),
                GrantOptions::default(),
            )
            .await
            .expect("grant");
    }
    // No sequencer runs: the queue holds 3 entries, the limit.
    let err = ledger
        .consume(&a, key("c"), Amount::new(5))
        .await
        .expect_err("refused");
    assert_eq!(
        err,
        credits_core::LedgerError::AuditBacklogFull {
            backlog: 3,
            limit: 3
        }
    );
    assert!(err.is_retryable());
    assert_eq!(
        ledger.balance(&a).await.expect("balance").available,
        Amount::new(30)
    );
    assert!(
        store
            .idempotency_record(&a, &key("c"))
            .await
            .expect("record")
            .is_none()
    );
    assert_eq!(db.count("SELECT count(*) FROM journal_entries").await, 3);
    let leader = lead(&store, &clock).await;
    leader.writer().flush().await.expect("flush");
    ledger
        .consume(&a, key("c"), Amount::new(5))
        .await
        .expect("the retry applies once the log caught up");
    assert_eq!(leader.writer().flush().await.expect("flush").size, 4);
    leader.resign().await.expect("resign");
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_as_a_schema_owner_without_createrole() {
    let Some(db) = common::test_db("audit_nocreaterole").await else {
        return;
    };
    // An owner that may create tables in its schema but not roles (a managed database's
    // usual migration user).
    db.admin
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE cp_test_owner LOGIN NOCREATEROLE; \
             EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
             ALTER SCHEMA {} OWNER TO cp_test_owner",
            db.schema
        ))
        .await
        .expect("owner");
    let url = format!("{} user=cp_test_owner", keyword_url(&db.url));
    let config = credits_postgres::PgConfig::builder(&url)
        .search_path(&db.schema)
        .pool_max_size(2)
        .build()
        .expect("config");
    let clock = ManualClock::new(common::START);
    let store = PgLedgerStore::connect(config, Arc::new(clock.clone())).expect("store");
    let report = store
        .migrate()
        .await
        .expect("migrations apply without CREATEROLE");
    assert_eq!(
        report.version,
        credits_postgres::MIGRATIONS.last().unwrap().version
    );
    drop(store);
    db.drop_schema().await;
}
