//! Fault injection for tests and simulators: one [`LedgerStore`](crate::LedgerStore)
//! wrapper and one [`TxLog`](crate::tx::TxLog) wrapper that fail on command, so crash and
//! error paths get the same scrutiny as the happy path (sled's failpoints, redb's fuzzing
//! backend). Feature `testing`.
//!
//! A [`Faults`] controller is shared by every wrapper of one simulated process. Arm it with
//! a countdown ("the `n`-th mutation from now fails"), a run of failures ("fail for a
//! while"), a period, or an outage ("down for good" until lifted); a fault fails a call
//! either **before** the inner store runs (nothing happened) or **after** it ran (the
//! acknowledgement is lost), and may **crash** the process: a crashed process fails every
//! later call, reads included, until [`Faults::restart`], so a crash in the middle of a
//! multi-call operation leaves exactly what the durable backend had at that moment.
//!
//! ```
//! use std::sync::Arc;
//! use credits_core::testing::{FaultKind, Faults, FaultyStore};
//! use credits_core::{Amount, GrantOptions, IdempotencyKey, Ledger, MemoryLedgerStore, TenantId, TenantSettings};
//! use metered_clock::{ManualClock, Timestamp};
//!
//! # futures::executor::block_on(async {
//! let faults = Arc::new(Faults::new());
//! let store = FaultyStore::new(Arc::new(MemoryLedgerStore::new()), faults.clone());
//! let ledger = Ledger::new(store, ManualClock::new(Timestamp::from_unix_millis(1_000)));
//! let acme = TenantId::new("acme")?;
//! ledger.create_tenant(&acme, TenantSettings::default()).await?;
//!
//! // The next mutation is applied, then its acknowledgement is lost.
//! faults.arm(0, FaultKind::After);
//! let key = IdempotencyKey::new("topup-1")?;
//! let lost = ledger.grant(&acme, key.clone(), Amount::new(5), GrantOptions::default()).await;
//! assert!(lost.unwrap_err().is_retryable());
//! // The retry with the same key replays the applied grant: credited once.
//! ledger.grant(&acme, key, Amount::new(5), GrantOptions::default()).await?;
//! assert_eq!(ledger.balance(&acme).await?.available, Amount::new(5));
//! assert_eq!(faults.injected(), 1);
//! # Ok::<(), credits_core::LedgerError>(())
//! # }).unwrap();
//! ```

mod bug;
mod faults;
mod store;
mod txlog;

pub use bug::Bug;
pub use faults::{FaultKind, Faults, Sleep, is_injected};
pub use store::FaultyStore;
pub use txlog::FaultyTxLog;
