//! [`PgConfig`]: connection, pool, isolation, retry and breaker settings.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use credits_core::audit::LedgerAudit;
use resilience::{Backoff, BreakerConfig, Jitter};

use crate::PgError;

/// How ledger transactions are isolated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Isolation {
    /// `READ COMMITTED` plus explicit row locks: every mutation locks its tenant row(s) with
    /// `SELECT … FOR UPDATE` (several tenants in ascending order) before reading the rest
    /// of the account. Serialization failures cannot happen; deadlocks cannot happen between
    /// this crate's own transactions. The default, and the fastest.
    #[default]
    ReadCommitted,
    /// `SERIALIZABLE`, with the same row locks (preceded by session advisory locks on the
    /// tenants, taken before the transaction's snapshot so that waiting for a contended
    /// tenant does not end in a serialization failure), retried with jittered backoff on SQLSTATE
    /// 40001 (serialization failure) and 40P01 (deadlock). Choose it when other programs
    /// write the same tables without taking the tenant lock. Retries are safe: a retried
    /// transaction was rolled back entirely, and the idempotency key makes the outcome the
    /// same.
    Serializable,
}

impl Isolation {
    pub(crate) fn begin_sql(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "BEGIN ISOLATION LEVEL READ COMMITTED",
            // A sequential scan takes a predicate lock on the whole relation, which makes
            // every concurrent transaction a conflict (PostgreSQL's docs on serializable
            // isolation advise steering the planner to index scans): with them off for the
            // transaction, predicate locks stay on the pages and rows of its own tenants.
            Isolation::Serializable => {
                "BEGIN ISOLATION LEVEL SERIALIZABLE; SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off"
            }
        }
    }
}

/// Settings of a [`PgLedgerStore`](crate::PgLedgerStore) and its pool. Build with
/// [`PgConfig::builder`].
///
/// Defaults follow the production settings this backend was specified with: at most 100
/// open connections, connections recycled after 10 minutes, 5 s to get or open a
/// connection, `READ COMMITTED` with row locks, up to 8 attempts on serialization failures
/// (full jitter, 5 ms doubling to 250 ms), and a circuit breaker named `postgres` that opens
/// when half of at least 20 recent calls failed.
///
/// ```
/// use std::time::Duration;
/// use credits_postgres::{Isolation, PgConfig};
///
/// let config = PgConfig::builder("postgres://postgres@127.0.0.1:5432/test")
///     .pool_max_size(16)
///     .isolation(Isolation::Serializable)
///     .statement_timeout(Duration::from_secs(5))
///     .build()?;
/// assert_eq!(config.pool_max_size(), 16);
/// assert!(PgConfig::builder("not a url").build().is_err());
/// assert!(PgConfig::builder("postgres://localhost/db").pool_max_size(0).build().is_err());
/// # Ok::<(), credits_postgres::PgError>(())
/// ```
#[derive(Clone)]
pub struct PgConfig {
    pub(crate) pg: tokio_postgres::Config,
    pub(crate) pool_max_size: usize,
    pub(crate) wait_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_lifetime: Duration,
    pub(crate) isolation: Isolation,
    pub(crate) backoff: Backoff,
    pub(crate) breaker: BreakerConfig,
    pub(crate) audit: Option<LedgerAudit>,
    pub(crate) audit_backlog_max: u64,
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The connection config may hold a password: show only where it points.
        f.debug_struct("PgConfig")
            .field("hosts", &self.pg.get_hosts())
            .field("dbname", &self.pg.get_dbname())
            .field("user", &self.pg.get_user())
            .field("pool_max_size", &self.pool_max_size)
            .field("wait_timeout", &self.wait_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("isolation", &self.isolation)
            .field("audit", &self.audit.is_some())
            .finish_non_exhaustive()
    }
}

impl PgConfig {
    /// Starts a configuration for the database at `url` (a `postgres://` URL or a
    /// `key=value` connection string).
    pub fn builder(url: impl Into<String>) -> PgConfigBuilder {
        PgConfigBuilder {
            url: url.into(),
            pool_max_size: 100,
            wait_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            max_lifetime: Duration::from_secs(600),
            statement_timeout: None,
            search_path: None,
            application_name: "credits-postgres".into(),
            isolation: Isolation::ReadCommitted,
            backoff: None,
            breaker: None,
            audit: None,
            audit_backlog_max: 1_000_000,
        }
    }

    /// Most open connections.
    #[must_use]
    pub fn pool_max_size(&self) -> usize {
        self.pool_max_size
    }

    /// The isolation mode.
    #[must_use]
    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// The retry policy for serialization failures and deadlocks.
    #[must_use]
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// The parsed connection settings.
    #[must_use]
    pub fn connection(&self) -> &tokio_postgres::Config {
        &self.pg
    }
}

/// Builds a [`PgConfig`]; every setting is checked by [`build`](Self::build).
#[derive(Debug)]
#[must_use]
pub struct PgConfigBuilder {
    url: String,
    pool_max_size: usize,
    wait_timeout: Duration,
    connect_timeout: Duration,
    max_lifetime: Duration,
    statement_timeout: Option<Duration>,
    search_path: Option<String>,
    application_name: String,
    isolation: Isolation,
    backoff: Option<Backoff>,
    breaker: Option<BreakerConfig>,
    audit: Option<LedgerAudit>,
    audit_backlog_max: u64,
}

/// The most connections a pool may be configured with.
pub const POOL_MAX_SIZE_LIMIT: usize = 10_000;

impl PgConfigBuilder {
    /// Most open connections (1..=10,000; default 100).
    pub fn pool_max_size(mut self, n: usize) -> Self {
        self.pool_max_size = n;
        self
    }

    /// How long a caller waits for a free connection before failing with a retryable
    /// error (default 5 s; non-zero).
    pub fn wait_timeout(mut self, d: Duration) -> Self {
        self.wait_timeout = d;
        self
    }

    /// How long opening a connection may take (default 5 s; non-zero).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Connections older than this are closed instead of reused (default 10 minutes;
    /// non-zero).
    pub fn max_lifetime(mut self, d: Duration) -> Self {
        self.max_lifetime = d;
        self
    }

    /// The server cancels any statement running longer than this (default: the server's
    /// setting; at least 1 ms).
    pub fn statement_timeout(mut self, d: Duration) -> Self {
        self.statement_timeout = Some(d);
        self
    }

    /// The schema(s) to use, as a `search_path` value set on every connection (default:
    /// the server's, usually `"$user", public`). Tests use it to isolate runs. Letters,
    /// digits, `_`, `,`, space and `$` only.
    pub fn search_path(mut self, path: impl Into<String>) -> Self {
        self.search_path = Some(path.into());
        self
    }

    /// The `application_name` shown in `pg_stat_activity` (default `credits-postgres`).
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = name.into();
        self
    }

    /// The isolation mode (default [`Isolation::ReadCommitted`]).
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// The retry policy for serialization failures and deadlocks.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// The circuit breaker settings around the pool.
    pub fn breaker(mut self, breaker: BreakerConfig) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Seal an audit entry for every journal entry (with the mapping every backend shares,
    /// [`credits_core::audit`]) in the same SQL transaction, and queue it in
    /// `audit_pending` for the sequencer
    /// ([`PgLedgerStore::audit_sequencer`](crate::PgLedgerStore::audit_sequencer)).
    pub fn audit(mut self, audit: LedgerAudit) -> Self {
        self.audit = Some(audit);
        self
    }

    /// The most committed audit entries waiting for the sequencer (default 1,000,000; at
    /// least 1): past it, changes that write journal entries are rolled back with
    /// [`LedgerError::AuditBacklogFull`](credits_core::LedgerError::AuditBacklogFull)
    /// instead of going un-audited while no sequencer runs.
    pub fn audit_backlog_max(mut self, max: u64) -> Self {
        self.audit_backlog_max = max.max(1);
        self
    }

    /// Checks every setting.
    ///
    /// # Errors
    /// [`PgError::InvalidConfig`] naming the first bad setting.
    pub fn build(self) -> Result<PgConfig, PgError> {
        let bad = |field, reason: &str| {
            Err(PgError::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        let mut pg = match tokio_postgres::Config::from_str(&self.url) {
            Ok(pg) => pg,
            Err(e) => return bad("url", &e.to_string()),
        };
        if !(1..=POOL_MAX_SIZE_LIMIT).contains(&self.pool_max_size) {
            return bad("pool_max_size", "must be 1 to 10000");
        }
        if self.wait_timeout.is_zero() {
            return bad("wait_timeout", "must be positive");
        }
        if self.connect_timeout.is_zero() {
            return bad("connect_timeout", "must be positive");
        }
        if self.max_lifetime.is_zero() {
            return bad("max_lifetime", "must be positive");
        }
        let mut options = String::new();
        if let Some(t) = self.statement_timeout {
            if t < Duration::from_millis(1) {
                return bad("statement_timeout", "must be at least 1 ms");
            }
            options.push_str(&format!("-c statement_timeout={} ", t.as_millis()));
        }
        if let Some(path) = &self.search_path {
            let ok = !path.trim().is_empty()
                && path
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ',' | '$' | ' '));
            if !ok {
                return bad(
                    "search_path",
                    "must be schema names (letters, digits, _, $) separated by commas",
                );
            }
            // Spaces in a `-c` option value must be escaped with a backslash.
            options.push_str(&format!("-c search_path={} ", path.replace(' ', "\\ ")));
        }
        if !options.is_empty() {
            let existing = pg.get_options().unwrap_or_default().to_owned();
            pg.options(format!("{existing} {options}").trim());
        }
        pg.application_name(&self.application_name);
        pg.connect_timeout(self.connect_timeout);
        let backoff = match self.backoff {
            Some(b) => b,
            None => Backoff::exponential(Duration::from_millis(5))
                .cap(Duration::from_millis(250))
                .jitter(Jitter::Full)
                .max_attempts(8)
                .build()
                .map_err(|e| PgError::InvalidConfig {
                    field: "backoff",
                    reason: e.to_string(),
                })?,
        };
        let breaker = match self.breaker {
            Some(b) => b,
            None => BreakerConfig::builder()
                .name("postgres")
                .failure_rate_threshold(50)
                .count_window(40)
                .minimum_calls(20)
                .build()
                .map_err(|e| PgError::InvalidConfig {
                    field: "breaker",
                    reason: e.to_string(),
                })?,
        };
        Ok(PgConfig {
            pg,
            pool_max_size: self.pool_max_size,
            wait_timeout: self.wait_timeout,
            connect_timeout: self.connect_timeout,
            max_lifetime: self.max_lifetime,
            isolation: self.isolation,
            backoff,
            breaker,
            audit: self.audit,
            audit_backlog_max: self.audit_backlog_max,
        })
    }
}
