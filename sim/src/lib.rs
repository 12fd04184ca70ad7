//! Deterministic simulation and fuzzing support for the metered suite.
//!
//! ```
//! use sim::{Config, run};
//!
//! // One seed is one run: a workload over many tenants through the real ledger, the
//! // transaction manager and the audit log, with injected storage faults and crashes.
//! let report = run(&Config::new(7, 200)).expect("no invariant broken");
//! assert_eq!(report.journal_entries, report.audit_records);
//! // The same seed replays the same run.
//! assert_eq!(run(&Config::new(7, 200)).unwrap().trace_hash, report.trace_hash);
//! ```
//!
//! # Overview
//!
//! * [`run`] drives one seeded workload ([`Config`]) and checks the invariants after every
//!   step and at the end; it returns a [`Report`] or the first [`Violation`] (with the seed
//!   and step that reproduce it). `cargo run -p sim -- --seed N --ops M` is the CLI.
//! * Faults come from the shipped wrappers in `credits_core::testing` (`FaultyStore`,
//!   `FaultyTxLog`): calls fail before or after reaching the backend, or kill the process;
//!   a [`Bug`] makes the store deliberately wrong, which the simulator must catch.
//! * [`audit`] runs the production audit path over the in-memory store: the store seals
//!   every journal entry into its tenant's chain and queues it in the same step, and an
//!   `AuditWriter` integrates the queue into a crash-safe file sink; the simulator adds
//!   the fault-injecting sink wrapper (outages, a death right after a write), a witness
//!   checkpoint kept outside the files, and the check that the log matches the journal
//!   one to one.
//! * [`linearizability`] records concurrent histories (grants, consumes, reads, holds,
//!   batches; retries under the same key) on the in-memory ledger and on PostgreSQL
//!   (threads with their own runtimes and connections, or group commit) and checks them
//!   against the sequential model (a small Porcupine-style checker).
//! * [`fuzz`] has the check functions the fuzz targets in `fuzz/` call; the test suite
//!   replays the committed corpora through them on stable Rust.
//!
//! # What it does not do
//!
//! * Over the in-memory store, the store plays the durable disk: a crash drops the process
//!   (ledger front, transaction manager, audit writer and its open sink) but not the
//!   store's contents nor its audit queue.
//!   Torn writes are simulated for the audit files only. Over PostgreSQL
//!   ([`Config::with_postgres`]) a crash drops the connection pool.
//! * It runs one operation at a time (determinism); concurrency is covered by the
//!   linearizability recorders and checker on short histories.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod fuzz;
pub mod linearizability;
mod pg;

mod checker;
mod config;
mod env;
mod model;
mod op;
mod run;
mod trace;
mod violation;
mod workload;

pub use config::{
    AUDIT_OUTAGE_STEPS_MAX, AUDIT_SLOW_STEPS_MAX, AUDIT_TURN_PROBABILITY, Config,
    FOR_GOOD_BACKLOG_MAX, LONG_OUTAGE, PARTICIPANTS, Report, SHORT_RETENTION, START, TX_TIMEOUT,
};
pub use credits_core::testing::Bug;
pub use run::{run, run_in};
pub use trace::hex;
pub use violation::{Answer, At, JournalRule, Violation};
