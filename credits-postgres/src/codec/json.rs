//! The JSON text columns: what this backend writes into `idempotency_keys.record`,
//! `holds.draws` and `distributed_transactions.branches`, and how it reads them back.
//!
//! Each is credits-core's serde form written by `serde_json` (compact, fields in
//! declaration order, enums externally tagged). Rows written by one build are read by the
//! next, so these texts are a storage format: `golden.rs` pins them, and a renamed variant
//! or field fails a test there instead of turning stored rows into corruption errors.

use credits_core::backend::Draw;
use credits_core::tx::Branch;
use credits_core::{BalanceThresholds, IdempotencyRecord, RolloverPolicy};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::PgError;

fn to_text<T: Serialize + ?Sized>(value: &T) -> Result<String, PgError> {
    serde_json::to_string(value).map_err(PgError::corrupt)
}

fn from_text<T: DeserializeOwned>(text: &str) -> Result<T, PgError> {
    serde_json::from_str(text).map_err(PgError::corrupt)
}

/// The `idempotency_keys.record` text (a `text` column: stored exactly as written).
pub(crate) fn record_text(record: &IdempotencyRecord) -> Result<String, PgError> {
    to_text(record)
}

/// Reads an `idempotency_keys.record` text back.
pub(crate) fn record_of(text: &str) -> Result<IdempotencyRecord, PgError> {
    from_text(text)
}

/// The `holds.draws` text (a `text` column): the lots a hold came from.
pub(crate) fn draws_text(draws: &[Draw]) -> Result<String, PgError> {
    to_text(draws)
}

/// Reads a `holds.draws` text back.
pub(crate) fn draws_of(text: &str) -> Result<Vec<Draw>, PgError> {
    from_text(text)
}

/// The text appended to `distributed_transactions.branches` (a `jsonb` column: PostgreSQL
/// keeps the value, not the text, and prints it back in its own layout).
pub(crate) fn branches_text(branches: &[Branch]) -> Result<String, PgError> {
    to_text(branches)
}

/// Reads `distributed_transactions.branches::text` back.
pub(crate) fn branches_of(text: &str) -> Result<Vec<Branch>, PgError> {
    from_text(text)
}

/// The `accounts.rollover` text (a `text` column, `NULL` for no policy).
pub(crate) fn rollover_text(policy: &RolloverPolicy) -> Result<String, PgError> {
    to_text(policy)
}

/// Reads an `accounts.rollover` text back (checked as `RolloverPolicy::new` checks).
pub(crate) fn rollover_of(text: &str) -> Result<RolloverPolicy, PgError> {
    from_text(text)
}

/// The `accounts.thresholds` text (a `text` column, `NULL` for none): a JSON array of the
/// amounts, ascending.
pub(crate) fn thresholds_text(thresholds: &BalanceThresholds) -> Result<String, PgError> {
    to_text(thresholds)
}

/// Reads an `accounts.thresholds` text back (checked as `BalanceThresholds::new` checks).
pub(crate) fn thresholds_of(text: &str) -> Result<BalanceThresholds, PgError> {
    from_text(text)
}
