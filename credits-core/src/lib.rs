//! A credits ledger for metered platforms.
//!
//! ```
//! use std::time::Duration;
//! use credits_core::{Amount, GrantOptions, IdempotencyKey, Ledger, TenantId, TenantSettings};
//! use metered_clock::{ManualClock, Timestamp};
//!
//! # futures::executor::block_on(async {
//! let clock = ManualClock::new(Timestamp::from_unix_millis(1_700_000_000_000));
//! let ledger = Ledger::in_memory(clock.clone());
//! let acme = TenantId::new("acme")?;
//! let key = |k: &str| IdempotencyKey::new(k).unwrap();
//!
//! ledger.create_tenant(&acme, TenantSettings::default()).await?;
//! ledger.grant(&acme, key("topup-1"), Amount::new(1_000), GrantOptions::default()).await?;
//!
//! // Hold credits before expensive work, then pay for what was used.
//! let hold = ledger.reserve(&acme, key("job-1/hold"), Amount::new(300), Duration::from_secs(60)).await?;
//! ledger.commit(&acme, key("job-1/commit"), hold.hold, Amount::new(120)).await?;
//!
//! // A retried request is applied once.
//! let first = ledger.consume(&acme, key("call-9"), Amount::new(5)).await?;
//! let again = ledger.consume(&acme, key("call-9"), Amount::new(5)).await?;
//! assert_eq!(first, again);
//! assert_eq!(ledger.balance(&acme).await?.available, Amount::new(875));
//! ledger.check_conservation(None).await?.unwrap();
//! # Ok::<(), credits_core::LedgerError>(())
//! # }).unwrap();
//! ```
//!
//! # Overview
//!
//! * [`Ledger`] is the front door: grant, consume, reserve → commit / cancel, refund, atomic
//!   batches, balance, balance at a time, paged history, conservation check, sweeper steps
//!   and a recovery pass. It stamps each request with its [`Clock`](metered_clock::Clock)'s
//!   time and hands it to a [`LedgerStore`].
//! * [`backend::Account`] holds the rules, pure and storage-independent: one tenant's lots (spent
//!   soonest-expiring first, then by priority, then oldest first), holds and counters. Every
//!   backend runs this same code and persists the [`Applied`](backend::Applied) change set it returns.
//! * [`MemoryLedgerStore`] is the embedded default backend: sharded, no global lock.
//! * [`tx`] is a two-phase-commit transaction manager (`begin → prepare → commit/abort`,
//!   decision logged before phase two, `recover` after a crash); the ledger's holds are one
//!   [`Participant`](tx::Participant) ([`tx::LedgerHolds`]).
//!
//! # Guarantees
//!
//! * **Never negative**: available credits never go below zero; consumption beyond them is
//!   possible only within a tenant's overdraft limit (default zero).
//! * **Exactly once**: each mutation carries an [`IdempotencyKey`]; the same key and request
//!   replays the original result (success or failure), the same key with another request is
//!   [`LedgerError::IdempotencyConflict`]. A hold resolves once: committed, cancelled or
//!   expired.
//! * **Conservation**: `granted + refunded + overdrawn = available + held + consumed +
//!   expired`, per tenant and in total ([`Totals::check`]).
//! * **Bad input changes nothing** and returns a typed [`LedgerError`]; nothing panics on
//!   caller input.
//!
//! # What it does not do
//!
//! * No currencies or exchange rates: one unit per ledger ([`Amount`] is an integer count
//!   of the smallest unit).
//! * No transfers between tenants (credits come from grants and go to consumption).
//! * The memory store keeps everything in RAM, including the whole journal, and remembers
//!   idempotency keys for a bounded window; durable storage is a separate backend crate.
//!
//! # Crate features
//!
//! * `conformance`: the `conformance` module, the test suite every [`LedgerStore`]
//!   backend must pass.
//! * `testing`: the `testing` module, a fault-injecting [`LedgerStore`] and transaction
//!   log wrapper for tests and simulators (fail once, for a while, periodically, an outage,
//!   a crash; optionally a deliberate bug, to prove a checker has teeth).
//! * `audit`: the `audit` module, which seals every journal entry into a tamper-evident
//!   [`audit_chain`](https://docs.rs/audit-chain) log in the change's own atomic step, and
//!   queues it for the sequencer (changes are refused when the backlog is full).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// The guide (`docs/credits-core.md`), compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/credits-core.md")]
mod guide {}

mod amount;
pub mod backend;
mod batch;
mod command;
mod error;
mod events;
mod hold;
mod ids;
mod journal;
mod ledger;
mod memory;
pub mod store;
pub mod tx;

#[cfg(feature = "audit")]
pub mod audit;
#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "testing")]
pub mod testing;

pub use amount::Amount;
pub use batch::{BATCH_LEN_MAX, Batch};
pub use command::{
    AccountStatus, Balance, CLOSE_REASON, Command, Effect, GrantTag, IdempotencyRecord,
    ROLLOVER_TTL_MAX, Receipt, Request, Reservation, RolloverPolicy, TenantSettings,
};
pub use error::{LedgerError, StorageError};
pub use events::{
    BalanceEvent, BalanceThresholds, DeliveryReport, EventDispatcher, EventPage, EventSink,
    EventSinkError, THRESHOLDS_MAX,
};
pub use hold::{HoldResolution, HoldState};
pub use ids::{
    EntrySeq, EventSeq, HoldId, IdempotencyKey, LotId, NAME_LEN_MAX, REASON_LEN_MAX, Reason,
    TenantId,
};
pub use journal::{
    ConservationViolation, EntryKind, JournalCheck, JournalEntry, JournalMismatch, JournalReplay,
    Totals,
};
pub use ledger::{GrantOptions, Ledger};
pub use memory::{MemoryLedgerStore, MemoryLedgerStoreBuilder};
pub use store::{LedgerStore, Page, PageRequest, PreparedHold, SweepReport};
