//! [`PgError`]: every way the PostgreSQL backend itself can fail.

use std::fmt;
use std::sync::Arc;

use credits_core::{LedgerError, StorageError};
use tokio_postgres::error::SqlState;

/// A failure of the PostgreSQL backend (configuration, pool, server, migrations).
///
/// The [`LedgerStore`](credits_core::LedgerStore), [`TxLog`](credits_core::tx::TxLog) and
/// [`AuditSink`](audit_chain::AuditSink) implementations report these inside their own error
/// types (as [`LedgerError::Storage`] or [`audit_chain::AuditError::Io`]); domain answers
/// (insufficient credits, unknown tenant, …) are never a `PgError`.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// A setting was rejected. Fix the configuration.
    #[error("invalid configuration: {field} {reason}")]
    InvalidConfig {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// No connection could be had from the pool in time (or a new one could not be opened).
    /// Retry later.
    #[error("connection pool: {0}")]
    Pool(String),
    /// The circuit breaker around the pool is open after repeated failures: calls fail fast
    /// until it lets a trial call through. Retry later.
    #[error("database circuit breaker is open")]
    CircuitOpen,
    /// The server (or the connection to it) reported an error.
    #[error("postgres error{}: {message}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Postgres {
        /// The SQLSTATE code, if the server sent one.
        code: Option<String>,
        /// The server's (or driver's) message.
        message: String,
        /// Whether retrying may succeed (lost connection, serialization failure, deadlock,
        /// server shutting down or out of resources).
        retryable: bool,
    },
    /// A migration failed and was rolled back; the schema is at the version before it.
    #[error("migration {version} ({name}) failed: {reason}")]
    Migration {
        /// The failing migration's version.
        version: i64,
        /// Its name.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// The database holds a schema version newer than this build knows: refuse to run
    /// against it rather than guess.
    #[error("database schema version {found} is newer than the latest known {known}")]
    SchemaTooNew {
        /// The version found.
        found: i64,
        /// The newest version this build ships.
        known: i64,
    },
    /// A value does not fit PostgreSQL's `bigint` (amounts, sequence numbers and times
    /// must be at most `i64::MAX`). Nothing was written. Not retryable.
    #[error("{what} {value} does not fit a bigint")]
    OutOfRange {
        /// Which value.
        what: &'static str,
        /// The value.
        value: u64,
    },
    /// Stored data cannot be read back (out of range, malformed). Not retryable.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The audit log is `backlog` committed entries behind, at its configured `limit`
    /// ([`PgConfigBuilder::audit_backlog_max`](crate::PgConfigBuilder::audit_backlog_max)):
    /// the change was rolled back rather than left un-audited. Retry once the sequencer
    /// catches up.
    #[error("audit backlog of {backlog} entries is at its limit of {limit}")]
    AuditBacklogFull {
        /// Committed entries not yet in the log (at most; an estimate from the queue's ids).
        backlog: u64,
        /// The limit.
        limit: u64,
    },
}

impl PgError {
    /// Whether the same call may succeed if retried later.
    ///
    /// ```
    /// use credits_postgres::PgError;
    /// assert!(PgError::CircuitOpen.is_retryable());
    /// assert!(!PgError::Corrupt("bad".into()).is_retryable());
    /// ```
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            PgError::Pool(_) | PgError::CircuitOpen | PgError::AuditBacklogFull { .. } => true,
            PgError::Postgres { retryable, .. } => *retryable,
            PgError::InvalidConfig { .. }
            | PgError::Migration { .. }
            | PgError::SchemaTooNew { .. }
            | PgError::OutOfRange { .. }
            | PgError::Corrupt(_) => false,
        }
    }

    /// Whether this is a serialization failure or a deadlock (SQLSTATE 40001 / 40P01): the
    /// transaction was rolled back and may simply be run again.
    #[must_use]
    pub fn is_serialization_failure(&self) -> bool {
        matches!(self, PgError::Postgres { code: Some(c), .. }
            if c == SqlState::T_R_SERIALIZATION_FAILURE.code()
                || c == SqlState::T_R_DEADLOCK_DETECTED.code())
    }

    /// The SQLSTATE code, if the server sent one.
    #[must_use]
    pub fn sql_state(&self) -> Option<&str> {
        match self {
            PgError::Postgres { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// A stable, machine-readable name for the variant, in snake_case: log it, count it,
    /// label a metric with it. Codes never change once released and are never reused; a
    /// new variant gets a new code. The message ([`Display`](std::fmt::Display)) may
    /// change; the code does not. (The SQLSTATE of a server error is
    /// [`sql_state`](Self::sql_state).)
    ///
    /// | variant | code |
    /// |---|---|
    /// | [`InvalidConfig`](Self::InvalidConfig) | `invalid_config` |
    /// | [`Pool`](Self::Pool) | `pool_unavailable` |
    /// | [`CircuitOpen`](Self::CircuitOpen) | `circuit_open` |
    /// | [`Postgres`](Self::Postgres) | `postgres_error` |
    /// | [`Migration`](Self::Migration) | `migration_failed` |
    /// | [`SchemaTooNew`](Self::SchemaTooNew) | `schema_too_new` |
    /// | [`OutOfRange`](Self::OutOfRange) | `out_of_range` |
    /// | [`Corrupt`](Self::Corrupt) | `corrupt_row` |
    /// | [`AuditBacklogFull`](Self::AuditBacklogFull) | `audit_backlog_full` |
    ///
    /// ```
    /// use credits_postgres::PgError;
    /// assert_eq!(PgError::CircuitOpen.code(), "circuit_open");
    /// assert_eq!(PgError::Corrupt("bad".into()).code(), "corrupt_row");
    /// ```
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            PgError::InvalidConfig { .. } => "invalid_config",
            PgError::Pool(_) => "pool_unavailable",
            PgError::CircuitOpen => "circuit_open",
            PgError::Postgres { .. } => "postgres_error",
            PgError::Migration { .. } => "migration_failed",
            PgError::SchemaTooNew { .. } => "schema_too_new",
            PgError::OutOfRange { .. } => "out_of_range",
            PgError::Corrupt(_) => "corrupt_row",
            PgError::AuditBacklogFull { .. } => "audit_backlog_full",
        }
    }

    /// [`PgError::Corrupt`] with `reason`'s text.
    pub(crate) fn corrupt(reason: impl fmt::Display) -> Self {
        PgError::Corrupt(reason.to_string())
    }
}

/// The SQLSTATE `audit_backlog_check()` raises when the audit backlog is at its limit.
pub(crate) const AUDIT_BACKLOG_FULL: &str = "CA001";

/// SQLSTATE classes worth retrying: connection exceptions (08), transaction rollbacks (40:
/// serialization failure, deadlock), insufficient resources (53), operator intervention
/// (57: admin shutdown, terminated backend, cannot connect now).
fn retryable_state(code: &str) -> bool {
    ["08", "40", "53", "57"]
        .iter()
        .any(|class| code.starts_with(class))
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        let code = e.code().map(|c| c.code().to_owned());
        if code.as_deref() == Some(AUDIT_BACKLOG_FULL)
            && let Some(db) = e.as_db_error()
        {
            // Raised by audit_backlog_check(): the count in DETAIL, the limit in HINT.
            let number = |s: Option<&str>| s.and_then(|s| s.parse().ok()).unwrap_or(0);
            return PgError::AuditBacklogFull {
                backlog: number(db.detail()),
                limit: number(db.hint()),
            };
        }
        // No SQLSTATE: the connection broke (closed, reset, I/O): the outcome is unknown and
        // a retry with the same idempotency key is safe.
        let retryable = code.as_deref().is_none_or(retryable_state);
        let message = match e.as_db_error() {
            Some(db) => db.message().to_owned(),
            None => e.to_string(),
        };
        PgError::Postgres {
            code,
            message,
            retryable,
        }
    }
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => PgError::Pool(other.to_string()),
        }
    }
}

impl From<PgError> for LedgerError {
    fn from(e: PgError) -> Self {
        if let PgError::AuditBacklogFull { backlog, limit } = e {
            return LedgerError::AuditBacklogFull { backlog, limit };
        }
        LedgerError::Storage(if e.is_retryable() {
            StorageError::retryable(e.to_string())
        } else {
            StorageError::permanent(e.to_string())
        })
    }
}

impl From<PgError> for audit_chain::AuditError {
    fn from(e: PgError) -> Self {
        if e.is_retryable() {
            audit_chain::AuditError::Io {
                context: "writing to postgres".into(),
                source: Arc::new(std::io::Error::other(e.to_string())),
            }
        } else {
            audit_chain::AuditError::Corrupt {
                location: "postgres audit_log".into(),
                reason: e.to_string(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One value of every variant and the code it keeps forever.
    fn table() -> Vec<(PgError, &'static str)> {
        vec![
            (
                PgError::InvalidConfig {
                    field: "pool_max_size",
                    reason: "must be 1 to 10000".into(),
                },
                "invalid_config",
            ),
            (PgError::Pool("timed out".into()), "pool_unavailable"),
            (PgError::CircuitOpen, "circuit_open"),
            (
                PgError::Postgres {
                    code: Some("40001".into()),
                    message: "could not serialize access".into(),
                    retryable: true,
                },
                "postgres_error",
            ),
            (
                PgError::Postgres {
                    code: None,
                    message: "connection closed".into(),
                    retryable: true,
                },
                "postgres_error",
            ),
            (
                PgError::Migration {
                    version: 2,
                    name: "transactions_audit",
                    reason: "syntax error".into(),
                },
                "migration_failed",
            ),
            (
                PgError::SchemaTooNew { found: 9, known: 2 },
                "schema_too_new",
            ),
            (
                PgError::OutOfRange {
                    what: "amount",
                    value: u64::MAX,
                },
                "out_of_range",
            ),
            (PgError::Corrupt("bad".into()), "corrupt_row"),
            (
                PgError::AuditBacklogFull {
                    backlog: 1,
                    limit: 1,
                },
                "audit_backlog_full",
            ),
        ]
    }

    fn check(error: &PgError, code: &str) {
        assert_eq!(error.code(), code, "{error:?}");
    }

    #[test]
    fn every_variant_keeps_its_code() {
        for (error, code) in table() {
            check(&error, code);
        }
    }

    #[test]
    fn codes_are_unique_per_variant_and_snake_case() {
        let mut seen: Vec<(std::mem::Discriminant<PgError>, &str)> = Vec::new();
        for (error, code) in table() {
            assert!(
                !code.is_empty()
                    && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    && !code.starts_with('_')
                    && !code.ends_with('_'),
                "{code} is not snake_case"
            );
            let variant = std::mem::discriminant(&error);
            for (other, other_code) in &seen {
                assert_eq!(
                    *other == variant,
                    *other_code == code,
                    "{code}: one code per variant, one variant per code"
                );
            }
            seen.push((variant, code));
        }
    }

    /// Fails to compile when a variant is added without a row in `table`.
    #[test]
    fn the_table_names_every_variant() {
        for (error, _) in table() {
            match error {
                PgError::InvalidConfig { .. }
                | PgError::Pool(_)
                | PgError::CircuitOpen
                | PgError::Postgres { .. }
                | PgError::Migration { .. }
                | PgError::SchemaTooNew { .. }
                | PgError::OutOfRange { .. }
                | PgError::Corrupt(_)
                | PgError::AuditBacklogFull { .. } => {}
            }
        }
    }
}
