//! Running the simulator against PostgreSQL (`credits-postgres`): a private schema per run,
//! and a "crash" that drops the whole connection pool (and with group commit its queue and
//! workers) and reconnects.

use std::sync::Arc;

use audit_chain::{HmacKey, Keyring, LogRecord, MaskingPolicy, verify_records};
use credits_core::tx::TxLog;
use credits_core::{JournalEntry, LedgerStore, TenantId};
use credits_postgres::tokio_postgres::{self, NoTls};
use credits_postgres::{GroupCommitConfig, LedgerAudit, PgConfig, PgLedgerStore};
use metered_clock::Clock;

fn grouped(store: PgLedgerStore, group: Option<GroupCommitConfig>) -> PgLedgerStore {
    match group {
        Some(g) => store.with_group_commit(g),
        None => store,
    }
}

/// One run's database: its schema, the configuration to (re)connect with, and an admin
/// connection that drops the schema at the end.
pub(crate) struct PgRun {
    config: PgConfig,
    /// Group commit for single requests (`--group-commit`).
    group: Option<GroupCommitConfig>,
    keyring: Arc<Keyring>,
    schema: String,
    admin: tokio_postgres::Client,
    store: Arc<PgLedgerStore>,
}

impl std::fmt::Debug for PgRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgRun")
            .field("schema", &self.schema)
            .finish()
    }
}

impl PgRun {
    /// Creates a fresh schema on `url`, migrates it and connects (with `group`, the store
    /// sends single requests through group commit).
    // Drives the admin connection: `tokio_postgres` needs its connection task spawned.
    #[allow(clippy::disallowed_methods)]
    pub(crate) async fn create(
        url: &str,
        seed: u64,
        clock: Arc<dyn Clock>,
        group: Option<GroupCommitConfig>,
    ) -> Result<Self, String> {
        let (admin, conn) = tokio_postgres::connect(url, NoTls)
            .await
            .map_err(|e| format!("connecting to {url}: {e}"))?;
        tokio::spawn(conn);
        let schema = format!("sim_{seed}_{:08x}", rand::random::<u32>());
        admin
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
            ))
            .await
            .map_err(|e| format!("creating schema {schema}: {e}"))?;
        let keyring = Arc::new(Keyring::new(
            HmacKey::new(1, [0x5a; 32]).map_err(|e| e.to_string())?,
        ));
        let config = PgConfig::builder(url)
            .search_path(&schema)
            .pool_max_size(4)
            .application_name(format!("sim_{seed}"))
            .audit(LedgerAudit::new(
                Arc::clone(&keyring),
                MaskingPolicy::none(),
            ))
            .build()
            .map_err(|e| e.to_string())?;
        let store = PgLedgerStore::connect(config.clone(), clock).map_err(|e| e.to_string())?;
        let _report = store
            .migrate()
            .await
            .map_err(|e| format!("migrating: {e}"))?;
        Ok(PgRun {
            config,
            group,
            keyring,
            schema,
            admin,
            store: Arc::new(grouped(store, group)),
        })
    }

    /// The current process's store and transaction log.
    pub(crate) fn handles(&self) -> (Arc<dyn LedgerStore>, Arc<dyn TxLog>) {
        let store: Arc<dyn LedgerStore> = Arc::clone(&self.store) as Arc<dyn LedgerStore>;
        (store, Arc::new(self.store.tx_log()))
    }

    /// The crash: the old pool is dropped (with every connection), a new one opens.
    pub(crate) fn reconnect(&mut self, clock: Arc<dyn Clock>) -> Result<(), String> {
        let store =
            PgLedgerStore::connect(self.config.clone(), clock).map_err(|e| e.to_string())?;
        self.store = Arc::new(grouped(store, self.group));
        Ok(())
    }

    /// The audit entries PostgreSQL sealed for `tenant` verify as a chain and match its
    /// journal one to one. Returns how many there are.
    pub(crate) async fn check_audit(
        &self,
        tenant: &TenantId,
        journal: &[JournalEntry],
    ) -> Result<u64, String> {
        let mut sealed = Vec::new();
        loop {
            let page = self
                .store
                .audit_entries(tenant, sealed.len() as u64, 10_000)
                .await
                .map_err(|e| format!("reading audit entries of {tenant}: {e}"))?;
            if page.is_empty() {
                break;
            }
            sealed.extend(page);
        }
        if sealed.len() != journal.len() {
            return Err(format!(
                "{tenant}: {} journal entries but {} audit entries in PostgreSQL",
                journal.len(),
                sealed.len()
            ));
        }
        let stream = credits_core::audit::stream_name(tenant);
        for (j, a) in journal.iter().zip(&sealed) {
            // The one mapping every backend seals with.
            if a.seq() + 1 != j.seq.get()
                || a.stream() != stream
                || a.entry() != &credits_core::audit::audit_entry(&stream, j)
            {
                return Err(format!(
                    "{tenant}: audit entry {} does not match journal entry {}",
                    a.seq(),
                    j.seq
                ));
            }
        }
        let records: Vec<LogRecord> = sealed
            .into_iter()
            .enumerate()
            .map(|(i, s)| LogRecord::new(i as u64, s))
            .collect();
        let report = verify_records(&self.keyring, &records, None);
        if let Some(f) = report.failure {
            return Err(format!(
                "{tenant}: audit chain in PostgreSQL does not verify: {f}"
            ));
        }
        Ok(records.len() as u64)
    }

    /// The production sequencer integrates the database's queue: it leads the log, flushes
    /// (a checkpoint covering every committed entry) and resigns; the log then verifies
    /// against that checkpoint, holds `expected` entries and nothing is left queued.
    pub(crate) async fn check_log(
        &self,
        clock: Arc<dyn Clock>,
        expected: u64,
    ) -> Result<(), String> {
        let config = audit_chain::WriterConfig::builder("sim.metered.invalid/pg-audit")
            .build()
            .map_err(|e| e.to_string())?;
        let leader = self
            .store
            .audit_sequencer(config, clock, None)
            .try_lead()
            .await
            .map_err(|e| format!("leading the audit log: {e}"))?
            .ok_or("another sequencer leads the simulation's schema")?;
        let checkpoint = leader
            .writer()
            .flush()
            .await
            .map_err(|e| format!("integrating the audit queue: {e}"))?;
        leader
            .resign()
            .await
            .map_err(|e| format!("resigning the audit log: {e}"))?;
        let sink = self.store.audit_sink();
        let report = audit_chain::verify_sink(&sink, &self.keyring, Some(&checkpoint))
            .await
            .map_err(|e| format!("reading the audit log: {e}"))?;
        if let Some(f) = report.failure {
            return Err(format!("the PostgreSQL audit log does not verify: {f}"));
        }
        if checkpoint.size != expected {
            return Err(format!(
                "the PostgreSQL audit log holds {} entries, the journals {expected}",
                checkpoint.size
            ));
        }
        let pending: i64 = self
            .admin
            .query_one(
                &format!("SELECT count(*) FROM {}.audit_pending", self.schema),
                &[],
            )
            .await
            .map_err(|e| format!("counting the audit queue: {e}"))?
            .get(0);
        if pending != 0 {
            return Err(format!("{pending} audit entries left queued after a flush"));
        }
        Ok(())
    }

    /// Drops the schema.
    pub(crate) async fn drop_schema(&self) {
        let _ = self
            .admin
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .await;
    }
}
