//! Embedded, versioned, idempotent schema migrations.
//!
//! Each migration runs in its own transaction, under a transaction-scoped advisory lock
//! (`pg_advisory_xact_lock`), and records its version in `schema_migrations` in the same
//! transaction: it applies entirely or not at all, and two processes migrating at once
//! apply it once. Running the migrations again is a no-op.

use tokio_postgres::Client;

use crate::PgError;

/// One embedded migration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migration {
    /// Its version; migrations apply in ascending order.
    pub version: i64,
    /// A short name.
    pub name: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

/// Every migration this build ships, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "ledger",
        sql: include_str!("migrations/0001_ledger.sql"),
    },
    Migration {
        version: 2,
        name: "transactions_audit",
        sql: include_str!("migrations/0002_transactions_audit.sql"),
    },
    Migration {
        version: 3,
        name: "branch_holds",
        sql: include_str!("migrations/0003_branch_holds.sql"),
    },
    Migration {
        version: 4,
        name: "one_audit_log",
        sql: include_str!("migrations/0004_one_audit_log.sql"),
    },
    Migration {
        version: 5,
        name: "room_for_hot_updates",
        sql: include_str!("migrations/0005_room_for_hot_updates.sql"),
    },
    Migration {
        version: 6,
        name: "service_state",
        sql: include_str!("migrations/0006_service_state.sql"),
    },
    Migration {
        version: 7,
        name: "lifecycle",
        sql: include_str!("migrations/0007_lifecycle.sql"),
    },
    Migration {
        version: 8,
        name: "experiment_result_keys",
        sql: include_str!("migrations/0008_experiment_result_keys.sql"),
    },
    Migration {
        version: 9,
        name: "scheduled_jobs",
        sql: include_str!("migrations/0009_scheduled_jobs.sql"),
    },
    Migration {
        version: 10,
        name: "time_partitions",
        sql: include_str!("migrations/0010_time_partitions.sql"),
    },
    Migration {
        version: 11,
        name: "rollover",
        sql: include_str!("migrations/0011_rollover.sql"),
    },
    Migration {
        version: 12,
        name: "balance_events",
        sql: include_str!("migrations/0012_balance_events.sql"),
    },
];

/// The advisory lock key that serializes migrations (`'credits-postgres'` as bytes).
const LOCK_KEY: i64 = 0x6372_6564_6974_7370;

/// What [`migrate`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct MigrationReport {
    /// Versions applied by this call, in order.
    pub applied: Vec<i64>,
    /// The schema version after the call.
    pub version: i64,
}

/// Brings the schema in the connection's `search_path` up to date.
///
/// # Errors
/// [`PgError::Migration`] naming the failing migration (rolled back; earlier ones stay);
/// [`PgError::SchemaTooNew`] if the database is ahead of this build; connection errors.
pub async fn migrate(client: &mut Client) -> Result<MigrationReport, PgError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version     bigint       PRIMARY KEY,
                 name        text         NOT NULL,
                 applied_at  timestamptz  NOT NULL DEFAULT clock_timestamp()
             )",
        )
        .await
        .or_else(|e| {
            // Two processes creating the table at once: one wins, the other sees a unique
            // violation on the catalog; the table exists either way.
            if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                Ok(())
            } else {
                Err(e)
            }
        })?;
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    let mut report = MigrationReport::default();
    for m in MIGRATIONS {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
            .await?;
        let found: Option<i64> = tx
            .query_one("SELECT max(version) FROM schema_migrations", &[])
            .await?
            .get(0);
        let found = found.unwrap_or(0);
        if found > known {
            return Err(PgError::SchemaTooNew { found, known });
        }
        let done = tx
            .query_opt(
                "SELECT 1 FROM schema_migrations WHERE version = $1",
                &[&m.version],
            )
            .await?
            .is_some();
        if done {
            tx.commit().await?;
            continue;
        }
        let failed = |e: tokio_postgres::Error| PgError::Migration {
            version: m.version,
            name: m.name,
            reason: PgError::from(e).to_string(),
        };
        tx.batch_execute(m.sql).await.map_err(failed)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        tracing::info!(version = m.version, name = m.name, "migration applied");
        report.applied.push(m.version);
    }
    report.version = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
    Ok(report)
}
