//! PostgreSQL backend for the credits ledger: [`PgLedgerStore`] (a
//! [`credits_core::LedgerStore`]), [`PgTxLog`] (the two-phase-commit log) and the one audit
//! log ([`PgAuditSink`], [`PgAuditQueue`], [`AuditSequencer`], [`PgAuditTrail`]), with
//! embedded migrations.
//!
//! ```no_run
//! use std::sync::Arc;
//! use credits_core::{Amount, GrantOptions, IdempotencyKey, Ledger, TenantId, TenantSettings};
//! use credits_postgres::{PgConfig, PgLedgerStore};
//! use metered_clock::SystemClock;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let clock = Arc::new(SystemClock::new());
//! let config = PgConfig::builder(std::env::var("DATABASE_URL")?).build()?;
//! let store = PgLedgerStore::connect(config, clock.clone())?;
//! store.migrate().await?; // idempotent: run it at every start-up
//!
//! let ledger = Ledger::from_shared(Arc::new(store), clock);
//! let acme = TenantId::new("acme")?;
//! ledger.create_tenant(&acme, TenantSettings::default()).await?;
//! ledger.grant(&acme, IdempotencyKey::new("topup-1")?, Amount::new(1_000), GrantOptions::default()).await?;
//! let charge = ledger.consume(&acme, IdempotencyKey::new("call-9")?, Amount::new(5)).await?;
//! // A retried request is applied once, even across processes.
//! assert_eq!(ledger.consume(&acme, IdempotencyKey::new("call-9")?, Amount::new(5)).await?, charge);
//! # Ok(()) }
//! ```
//!
//! # Overview
//!
//! * **One SQL transaction per call.** [`PgLedgerStore`] locks the tenant row(s)
//!   (`SELECT … FOR UPDATE`, ascending tenant order for batches), loads the live state,
//!   runs credits-core's pure [`Account`](credits_core::backend::Account) rules, and writes the
//!   change set, the idempotency record and (with [`LedgerAudit`]) the sealed audit entries
//!   before `COMMIT`. Reads go in one round trip, writes plus `COMMIT` in another.
//! * **Isolation** ([`Isolation`]): `READ COMMITTED` with row locks by default;
//!   `SERIALIZABLE` with bounded, jittered retries on SQLSTATE 40001/40P01 (the
//!   `resilience` crate's [`Backoff`](resilience::Backoff)).
//! * **Group commit**: [`PgLedgerStore::apply_group`] applies many independent requests in
//!   one transaction; [`PgLedgerStore::with_group_commit`] feeds it from concurrent callers.
//! * **Migrations** ([`migrate()`]): versioned, embedded, each in one transaction under an
//!   advisory lock; running them again does nothing.
//! * **Recovery**: [`LedgerStore::sweep`](credits_core::LedgerStore::sweep) expires stalled
//!   holds and lots; [`PgTxLog`] lets
//!   [`TransactionManager::recover`](credits_core::tx::TransactionManager::recover) finish
//!   in-doubt transactions after a crash; SQL functions `recover_stalled_transactions()`,
//!   `cleanup_old_transactions(days)` and `cleanup_idempotency_keys(days)` are there for a
//!   scheduler such as pg_cron.
//! * **Pool**: deadpool-postgres (100 connections by default, recycled after 10 minutes)
//!   behind a [`resilience::CircuitBreaker`].
//! * **Audit**: with [`LedgerAudit`] each change's audit entries are sealed and queued in
//!   its transaction; an [`AuditSequencer`] (one replica at a time, by advisory lock)
//!   integrates them into the one Merkle log; past
//!   [`PgConfigBuilder::audit_backlog_max`] changes are refused rather than left
//!   un-audited.
//!
//! # What it does not do
//!
//! * No TLS: connect through a local socket, a private network or a TLS-terminating proxy
//!   (or build the pool yourself with a TLS connector and use
//!   [`PgLedgerStore::from_pool`]).
//! * Amounts, sequence numbers and times must fit a `bigint` (≤ 9.2 × 10^18); larger values
//!   are refused with a storage error, never wrapped.
//! * Log indices are given after commit, by the sequencer: a change is in the Merkle log a
//!   moment after it commits (see `docs/credits-postgres.md`).
//! * Hold and lot expiry is not done in SQL: it must produce journal and audit entries
//!   under the same Rust rules, so schedule [`Ledger::recover`](credits_core::Ledger::recover)
//!   (or `sweep`) rather than a SQL job for it.
//! * Standard SQL and the wire protocol only: no extensions are needed.
//!
//! # Crate features
//!
//! * `experiments`: `PgExperimentStore`, bayes-ab's `ExperimentStore` in
//!   `service_experiments` (optimistic versions, merges under a row lock, a per-tenant
//!   quota counted in the database).
//! * `rollouts`: `PgRolloutStore`, canary's `RolloutStore` in `service_rollouts`
//!   (optimistic versions; each change's trail entries sealed into the audit log in its
//!   transaction).
//!
//! The tables of both come with migration 6 whatever the features.
//!
//! Re-exports [`tokio_postgres`] and [`deadpool_postgres`] so you name the same versions.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod audit;
mod codec;
mod config;
mod error;
#[cfg(feature = "experiments")]
mod experiments;
mod group;
mod migrate;
mod pool;
#[cfg(feature = "rollouts")]
mod rollouts;
mod sql;
mod store;
mod txlog;

/// The guide (`docs/credits-postgres.md`): set-up, how a mutation runs, isolation, group
/// commit, recovery, the audit log, stored forms and error codes; every Rust example a doc
/// test (those that need a database are compiled, not run).
#[cfg(doctest)]
#[doc = include_str!("../../docs/credits-postgres.md")]
pub mod guide {}

pub use audit::{AuditSequencer, Leadership, PgAuditQueue, PgAuditSink, PgAuditTrail};
pub use config::{Isolation, POOL_MAX_SIZE_LIMIT, PgConfig, PgConfigBuilder};
/// How ledger changes are sealed (the one mapping every backend shares), re-exported.
pub use credits_core::audit::LedgerAudit;
pub use error::PgError;
#[cfg(feature = "experiments")]
pub use experiments::{ExperimentAdmission, PgExperimentStore};
pub use group::{GROUP_LEN_MAX, GroupCommitConfig};
pub use migrate::{MIGRATIONS, Migration, MigrationReport, migrate};
#[cfg(feature = "rollouts")]
pub use rollouts::PgRolloutStore;
pub use store::{PgLedgerStore, SWEEP_CHUNK_MAX};
pub use txlog::PgTxLog;

pub use deadpool_postgres;
pub use tokio_postgres;
