//! A private schema per test on the server named by `DATABASE_URL`.
//!
//! Without `DATABASE_URL` a test prints that it was skipped and passes, unless
//! `REQUIRE_DATABASE=1` (set by CI), in which case it fails. [`load`] is the client load and
//! the after-fault checks shared by the real-fault tests.
#![allow(dead_code, clippy::print_stderr)]

pub(crate) mod load;

use std::sync::Arc;

use credits_postgres::tokio_postgres::{self, NoTls};
use credits_postgres::{PgConfig, PgConfigBuilder, PgLedgerStore};
use metered_clock::{Clock, ManualClock, Timestamp};
use rand::Rng;

pub(crate) const START: Timestamp = Timestamp::from_unix_millis(1_700_000_000_000);

/// One test's schema and an admin connection to it.
pub(crate) struct TestDb {
    pub(crate) url: String,
    pub(crate) schema: String,
    pub(crate) admin: tokio_postgres::Client,
}

/// A fresh schema, or `None` (after printing why) when no database is configured.
pub(crate) async fn test_db(test: &str) -> Option<TestDb> {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        if database_required() {
            panic!("{test}: DATABASE_URL is not set but REQUIRE_DATABASE=1");
        }
        eprintln!("{test}: skipped (set DATABASE_URL to run it against PostgreSQL)");
        return None;
    };
    Some(TestDb::create(url, test).await)
}

/// Whether database tests must run (CI sets `REQUIRE_DATABASE=1`) instead of skipping.
pub(crate) fn database_required() -> bool {
    std::env::var("REQUIRE_DATABASE").as_deref() == Ok("1")
}

impl TestDb {
    /// A fresh schema on the server at `url` (panics if it cannot be had).
    pub(crate) async fn create(url: String, test: &str) -> TestDb {
        // PostgreSQL cuts names at 63 bytes: a long test name must not cut off the random
        // suffix (two runs would then share a schema).
        let name: String = test
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(40)
            .collect();
        let schema = format!("cp_test_{name}_{:08x}", rand::rng().random::<u32>());
        let (admin, conn) = tokio_postgres::connect(&url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("{test}: cannot connect to the test database: {e}"));
        tokio::spawn(conn);
        admin
            .batch_execute(&format!(
                "CREATE SCHEMA {schema}; SET search_path = {schema}"
            ))
            .await
            .expect("create schema");
        TestDb { url, schema, admin }
    }

    /// Replaces the admin connection with a new one (after the server restarted).
    pub(crate) async fn reconnect(&mut self) {
        let (admin, conn) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot reconnect to the test database: {e}"));
        tokio::spawn(conn);
        admin
            .batch_execute(&format!("SET search_path = {}", self.schema))
            .await
            .expect("search path");
        self.admin = admin;
    }

    /// A configuration pointing at this schema, with a small pool.
    pub(crate) fn config(&self) -> PgConfigBuilder {
        PgConfig::builder(&self.url)
            .search_path(&self.schema)
            .pool_max_size(8)
            .application_name(format!("t_{}", self.schema))
    }

    /// A migrated store on this schema.
    pub(crate) async fn store(
        &self,
        config: PgConfigBuilder,
        clock: Arc<dyn Clock>,
    ) -> PgLedgerStore {
        let store = PgLedgerStore::connect(config.build().expect("config"), clock).expect("store");
        let report = store.migrate().await.expect("migrate");
        assert_eq!(
            report.version,
            credits_postgres::MIGRATIONS.last().unwrap().version
        );
        store
    }

    /// A migrated store with default settings and a manual clock.
    pub(crate) async fn default_store(&self) -> PgLedgerStore {
        self.store(self.config(), Arc::new(ManualClock::new(START)))
            .await
    }

    /// Drops the schema and everything in it.
    pub(crate) async fn drop_schema(self) {
        self.admin
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .await
            .expect("drop schema");
    }

    /// A single number from the admin connection.
    pub(crate) async fn count(&self, sql: &str) -> i64 {
        self.admin.query_one(sql, &[]).await.expect(sql).get(0)
    }
}
