//! [`PgError`]: every way the PostgreSQL backend itself can fail.

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
            PgError::Pool(_) | PgError::CircuitOpen => true,
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
}

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
