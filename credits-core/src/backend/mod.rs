//! For backend authors: the pure account rules and the rows a [`LedgerStore`] persists.
//!
//! Callers of the ledger never need these types; a crate that implements
//! [`LedgerStore`] does. A backend loads a tenant's rows into an [`Account`]
//! ([`Account::from_parts`] with [`AccountParts`]), runs [`Account::apply`] (the same rules
//! on every backend), and persists the [`Applied`] change set it returns, together with the
//! idempotency record, in one atomic write. See the contract on [`LedgerStore`].
//!
//! [`LedgerStore`]: crate::LedgerStore

mod account;

pub use account::{
    Account, AccountHeader, AccountParts, Applied, Draw, Hold, Lot, LotKey, Savepoint,
};
