//! Two-phase commit across participants: [`TransactionManager`], [`Participant`], [`TxLog`].
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use credits_core::tx::{HoldBranch, LedgerHolds, MemoryTxLog, TransactionManager, TxOutcome};
//! use credits_core::{Amount, GrantOptions, IdempotencyKey, Ledger, TenantId, TenantSettings};
//! use metered_clock::{ManualClock, Timestamp};
//!
//! # futures::executor::block_on(async {
//! let clock = ManualClock::new(Timestamp::from_unix_millis(1_700_000_000_000));
//! let ledger = Ledger::in_memory(clock.clone());
//! let acme = TenantId::new("acme")?;
//! ledger.create_tenant(&acme, TenantSettings::default()).await?;
//! ledger.grant(&acme, IdempotencyKey::new("g")?, Amount::new(100), GrantOptions::default()).await?;
//!
//! let holds = Arc::new(LedgerHolds::new("credits", ledger.clone()));
//! let tm = TransactionManager::builder(Arc::new(MemoryTxLog::new()), Arc::new(clock.clone()))
//!     .participant(holds.clone())
//!     .build();
//! let tx = tm.begin(Duration::from_secs(30)).await?;
//! let branch = HoldBranch::new(acme.clone(), Amount::new(40), Amount::new(30))?;
//! tm.enlist(tx, "credits", branch.payload()).await?;
//! tm.prepare(tx).await?;                 // phase one: the hold exists until phase two
//! assert_eq!(tm.commit(tx).await?, TxOutcome::Committed); // decision logged, then phase two
//! assert_eq!(ledger.balance(&acme).await?.available, Amount::new(70));
//! # Ok::<(), credits_core::LedgerError>(())
//! # }).unwrap();
//! ```
//!
//! # Protocol
//!
//! `begin` logs the transaction with its deadline; `enlist` logs a branch (a participant
//! name and an opaque payload that tells the participant what to do) and returns its
//! [`BranchId`]. `prepare` asks every branch to get ready (phase one) and logs their answers
//! with the `Prepared` phase, for exactly the branch set that prepared; a refusal, a passed
//! deadline or a branch enlisted meanwhile aborts. `commit` (which prepares first if
//! needed) **logs the decision before phase two**, then tells every branch.
//! [`TransactionManager::recover`] is the one recovery pass: participants' and the log's
//! housekeeping, decided transactions driven to their decision, undecided ones past their
//! deadline aborted, prepared work of finished transactions released. Participants'
//! `commit` and `abort` must be idempotent (they may be repeated).
//!
//! A participant that prepared keeps its resources until it learns the outcome, however
//! long that takes (a coordinator outage included): only the log's decision releases them.
//! [`LedgerHolds`] therefore takes holds **owned by the branch**: they do not expire on
//! their own, only the branch's decision commits or cancels them (anyone else gets
//! [`LedgerError::HoldOwnedByTransaction`](crate::LedgerError::HoldOwnedByTransaction)),
//! and the owned hold itself is the durable record of "prepared". A transaction whose
//! coordinator never decides is aborted by [`recover`](TransactionManager::recover) once
//! past its deadline, which releases its holds. So run `recover` at start-up and
//! periodically.

mod holds;
mod log;
mod manager;
mod participant;
mod types;

pub use holds::{HoldBranch, LedgerHolds};
pub use log::{MemoryTxLog, TxLog};
pub use manager::{TransactionManager, TransactionManagerBuilder};
pub use participant::{InFlight, Participant};
pub use types::{
    Branch, BranchId, TxAction, TxDecision, TxId, TxOutcome, TxPhase, TxRecord, TxRecoveryReport,
};
