//! Conversions between the ledger's types and SQL values.
//!
//! PostgreSQL has no unsigned integers: amounts, sequence numbers and times (`u64`) are
//! stored as `bigint` and must fit in `0..=i64::MAX` (about 9.2 × 10^18). A larger value is
//! refused with [`PgError::OutOfRange`] before anything is written. A lot that never expires
//! ([`Timestamp::MAX`]) is stored as `NULL`.
//!
//! Words and numbers that name things in stored rows (entry kinds, hold states,
//! transaction phases) and the JSON text columns ([`json`]) are a storage format: the
//! golden tests (`golden.rs`) pin them.

#[cfg(test)]
mod golden;
mod json;

use credits_core::backend::AccountHeader;
use credits_core::tx::TxPhase;
use credits_core::{
    AccountStatus, Amount, Balance, BalanceEvent, EntryKind, EntrySeq, EventSeq, HoldId,
    HoldResolution, IdempotencyKey, JournalEntry, LotId, Reason, TenantId, TenantSettings, Totals,
};
use metered_clock::Timestamp;
use tokio_postgres::Row;

pub(crate) use json::{
    branches_of, branches_text, draws_of, draws_text, record_of, record_text, rollover_text,
    thresholds_text,
};

use crate::PgError;

/// The largest value a `bigint` column stores: what the store tells the ledger
/// ([`LedgerStore::value_limit`](credits_core::LedgerStore::value_limit)), so that a larger
/// amount, counter or expiry is refused as a domain error before it reaches SQL.
pub(crate) const BIGINT_MAX: u64 = i64::MAX.unsigned_abs();

/// `v` as a `bigint`.
pub(crate) fn i(v: u64, what: &'static str) -> Result<i64, PgError> {
    i64::try_from(v).map_err(|_| PgError::OutOfRange { what, value: v })
}

/// A `bigint` read back as a `u64` (negative values are corruption).
pub(crate) fn u(v: i64, what: &str) -> Result<u64, PgError> {
    u64::try_from(v).map_err(|_| PgError::corrupt(format_args!("{what} is negative ({v})")))
}

pub(crate) fn amount(v: i64, what: &str) -> Result<Amount, PgError> {
    u(v, what).map(Amount::new)
}

pub(crate) fn ts(v: i64, what: &str) -> Result<Timestamp, PgError> {
    u(v, what).map(Timestamp::from_unix_millis)
}

/// A hold's expiry as stored: the end of time (a transaction's hold) as the largest
/// `bigint`, which no real time reaches.
pub(crate) fn hold_expiry(t: Timestamp) -> Result<i64, PgError> {
    if t == Timestamp::MAX {
        return Ok(i64::MAX);
    }
    i(t.as_unix_millis(), "hold expiry")
}

/// A stored hold expiry read back ([`hold_expiry`]'s inverse).
pub(crate) fn hold_expiry_of(v: i64) -> Result<Timestamp, PgError> {
    if v == i64::MAX {
        return Ok(Timestamp::MAX);
    }
    ts(v, "hold expiry")
}

/// A hold's owner as its two columns (both `NULL` for an ordinary hold).
pub(crate) fn owner_columns(
    owner: Option<credits_core::tx::BranchId>,
) -> Result<(Option<i64>, Option<i32>), PgError> {
    match owner {
        None => Ok((None, None)),
        Some(b) => Ok((
            Some(i(b.tx.get(), "owner transaction")?),
            Some(i32::try_from(b.index).map_err(|_| PgError::OutOfRange {
                what: "owner branch index",
                value: u64::from(b.index),
            })?),
        )),
    }
}

/// The two owner columns read back.
pub(crate) fn owner_of(
    tx: Option<i64>,
    branch: Option<i32>,
) -> Result<Option<credits_core::tx::BranchId>, PgError> {
    match (tx, branch) {
        (None, None) => Ok(None),
        (Some(tx), Some(branch)) => Ok(Some(credits_core::tx::BranchId::new(
            credits_core::tx::TxId::new(u(tx, "owner transaction")?),
            u32::try_from(branch).map_err(|_| PgError::corrupt("owner branch out of range"))?,
        ))),
        _ => Err(PgError::corrupt("hold owner half set")),
    }
}

/// A time as milliseconds, clamped into `bigint` (for reads: "at or before the end of time").
pub(crate) fn ts_clamped(t: Timestamp) -> i64 {
    i64::try_from(t.as_unix_millis()).unwrap_or(i64::MAX)
}

/// A lot expiry: `NULL` for never.
pub(crate) fn expiry(t: Timestamp) -> Result<Option<i64>, PgError> {
    if t == Timestamp::MAX {
        Ok(None)
    } else {
        i(t.as_unix_millis(), "expiry").map(Some)
    }
}

pub(crate) fn kind_code(kind: EntryKind) -> i16 {
    match kind {
        EntryKind::Granted => 1,
        EntryKind::Consumed => 2,
        EntryKind::Reserved => 3,
        EntryKind::Committed => 4,
        EntryKind::Released => 5,
        EntryKind::Cancelled => 6,
        EntryKind::HoldExpired => 7,
        EntryKind::LotExpired => 8,
        EntryKind::Refunded => 9,
        EntryKind::LotVoided => 10,
        EntryKind::Frozen => 11,
        EntryKind::Unfrozen => 12,
        EntryKind::Closed => 13,
        EntryKind::RolledOver => 14,
        EntryKind::ImportedGrant => 15,
        EntryKind::ImportedConsume => 16,
        // A kind added to credits-core later: stored as 0 and refused when read back, so
        // an older reader never misinterprets it.
        _ => 0,
    }
}

pub(crate) fn kind_of(code: i16) -> Result<EntryKind, PgError> {
    Ok(match code {
        1 => EntryKind::Granted,
        2 => EntryKind::Consumed,
        3 => EntryKind::Reserved,
        4 => EntryKind::Committed,
        5 => EntryKind::Released,
        6 => EntryKind::Cancelled,
        7 => EntryKind::HoldExpired,
        8 => EntryKind::LotExpired,
        9 => EntryKind::Refunded,
        10 => EntryKind::LotVoided,
        11 => EntryKind::Frozen,
        12 => EntryKind::Unfrozen,
        13 => EntryKind::Closed,
        14 => EntryKind::RolledOver,
        15 => EntryKind::ImportedGrant,
        16 => EntryKind::ImportedConsume,
        other => return Err(PgError::corrupt(format_args!("unknown entry kind {other}"))),
    })
}

/// The `holds.state` word and `holds.committed` value of a hold: `active` while it is
/// (`resolution` is `None`), else how it was resolved.
pub(crate) fn hold_state(
    resolution: Option<HoldResolution>,
) -> Result<(&'static str, Option<i64>), PgError> {
    Ok(match resolution {
        None => ("active", None),
        Some(HoldResolution::Committed { committed }) => {
            ("committed", Some(i(committed.units(), "committed")?))
        }
        Some(HoldResolution::Cancelled) => ("cancelled", None),
        Some(HoldResolution::Expired) => ("expired", None),
    })
}

/// Reads [`hold_state`]'s columns back (`None`: active).
pub(crate) fn resolution(
    state: &str,
    committed: Option<i64>,
) -> Result<Option<HoldResolution>, PgError> {
    Ok(match state {
        "active" => None,
        "committed" => Some(HoldResolution::Committed {
            committed: amount(committed.unwrap_or(0), "committed")?,
        }),
        "cancelled" => Some(HoldResolution::Cancelled),
        "expired" => Some(HoldResolution::Expired),
        other => {
            return Err(PgError::corrupt(format_args!(
                "unknown hold state {other:?}"
            )));
        }
    })
}

/// Reads a `distributed_transactions.phase` word (written by [`TxPhase::as_str`]).
pub(crate) fn phase_of(s: &str) -> Result<TxPhase, PgError> {
    TxPhase::parse(s).ok_or_else(|| PgError::corrupt(format_args!("unknown phase {s:?}")))
}

/// The `accounts.status` number of a status (0 open, 1 frozen, 2 closed).
pub(crate) fn status_code(status: AccountStatus) -> i16 {
    match status {
        AccountStatus::Frozen => 1,
        AccountStatus::Closed => 2,
        AccountStatus::Open => 0,
        // A status added to credits-core later: refused by the column's CHECK.
        _ => -1,
    }
}

/// Reads [`status_code`]'s number back.
pub(crate) fn status_of(code: i16) -> Result<AccountStatus, PgError> {
    Ok(match code {
        0 => AccountStatus::Open,
        1 => AccountStatus::Frozen,
        2 => AccountStatus::Closed,
        other => return Err(PgError::corrupt(format_args!("unknown status {other}"))),
    })
}

pub(crate) fn tenant(s: &str) -> Result<TenantId, PgError> {
    TenantId::new(s).map_err(PgError::corrupt)
}

/// Columns, in order, of [`header`]: the `accounts` row (without the audit head).
pub(crate) const HEADER_COLUMNS: &str = "tenant, overdraft_limit, granted, refunded, consumed, \
     expired, available, held, overdrawn, next_entry, next_lot, next_hold, last_at, status, \
     rollover, thresholds, next_event";

/// How many columns [`HEADER_COLUMNS`] names: a query's columns after them start here.
pub(crate) const HEADER_LEN: usize = 17;

/// Reads the first [`HEADER_LEN`] columns ([`HEADER_COLUMNS`]) of `row`.
pub(crate) fn header(row: &Row) -> Result<AccountHeader, PgError> {
    let a = |i: usize, what: &str| amount(row.get(i), what);
    Ok(AccountHeader {
        tenant: tenant(row.get(0))?,
        settings: TenantSettings {
            overdraft_limit: a(1, "overdraft_limit")?,
            rollover: row
                .get::<_, Option<&str>>(14)
                .map(json::rollover_of)
                .transpose()?,
            thresholds: row
                .get::<_, Option<&str>>(15)
                .map(json::thresholds_of)
                .transpose()?
                .unwrap_or_default(),
        },
        totals: Totals {
            granted: a(2, "granted")?,
            refunded: a(3, "refunded")?,
            consumed: a(4, "consumed")?,
            expired: a(5, "expired")?,
            available: a(6, "available")?,
            held: a(7, "held")?,
            overdrawn: a(8, "overdrawn")?,
            lots: Amount::ZERO,
            holds: Amount::ZERO,
        },
        next_entry: u(row.get(9), "next_entry")?,
        next_lot: u(row.get(10), "next_lot")?,
        next_hold: u(row.get(11), "next_hold")?,
        last_at: ts(row.get(12), "last_at")?,
        status: status_of(row.get(13))?,
        next_event: u(row.get(16), "next_event")?,
    })
}

/// Columns, in order, of [`event`].
pub(crate) const EVENT_COLUMNS: &str = "tenant, seq, at, threshold, entry_seq, available";

/// Reads the 6 columns ([`EVENT_COLUMNS`]) of a `balance_events` row.
pub(crate) fn event(row: &Row) -> Result<BalanceEvent, PgError> {
    let event = BalanceEvent {
        tenant: tenant(row.get(0))?,
        seq: EventSeq::new(u(row.get(1), "event seq")?),
        at: ts(row.get(2), "event time")?,
        threshold: amount(row.get(3), "threshold")?,
        entry: EntrySeq::new(u(row.get(4), "entry_seq")?),
        available: amount(row.get(5), "event available")?,
    };
    if event.available >= event.threshold {
        return Err(PgError::corrupt(format_args!(
            "event {} of {} is not below its threshold",
            event.seq, event.tenant
        )));
    }
    Ok(event)
}

/// Columns, in order, of [`entry`].
pub(crate) const ENTRY_COLUMNS: &str = "tenant, seq, at, kind, amount, before_available, \
     before_held, before_overdrawn, after_available, after_held, after_overdrawn, hold_id, \
     lot_id, refers_to, idempotency_key, reason";

/// Reads the first 16 columns ([`ENTRY_COLUMNS`]) of `row`.
pub(crate) fn entry(row: &Row) -> Result<JournalEntry, PgError> {
    let a = |i: usize, what: &str| amount(row.get(i), what);
    let opt = |i: usize, what: &str| -> Result<Option<u64>, PgError> {
        row.get::<_, Option<i64>>(i).map(|v| u(v, what)).transpose()
    };
    Ok(JournalEntry {
        tenant: tenant(row.get(0))?,
        seq: EntrySeq::new(u(row.get(1), "seq")?),
        at: ts(row.get(2), "at")?,
        kind: kind_of(row.get(3))?,
        amount: a(4, "amount")?,
        before: Balance {
            available: a(5, "before_available")?,
            held: a(6, "before_held")?,
            overdrawn: a(7, "before_overdrawn")?,
        },
        after: Balance {
            available: a(8, "after_available")?,
            held: a(9, "after_held")?,
            overdrawn: a(10, "after_overdrawn")?,
        },
        hold: opt(11, "hold_id")?.map(HoldId::new),
        lot: opt(12, "lot_id")?.map(LotId::new),
        refers_to: opt(13, "refers_to")?.map(EntrySeq::new),
        key: row
            .get::<_, Option<&str>>(14)
            .map(IdempotencyKey::new)
            .transpose()
            .map_err(PgError::corrupt)?,
        reason: row
            .get::<_, Option<&str>>(15)
            .map(Reason::new)
            .transpose()
            .map_err(PgError::corrupt)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_and_unknown_codes_are_refused() {
        use EntryKind::*;
        for kind in [
            Granted,
            Consumed,
            Reserved,
            Committed,
            Released,
            Cancelled,
            HoldExpired,
            LotExpired,
            Refunded,
            LotVoided,
            Frozen,
            Unfrozen,
            Closed,
            RolledOver,
            ImportedGrant,
            ImportedConsume,
        ] {
            assert_eq!(kind_of(kind_code(kind)).ok(), Some(kind));
        }
        assert!(matches!(kind_of(0), Err(PgError::Corrupt(_))));
        assert!(matches!(kind_of(17), Err(PgError::Corrupt(_))));
        for status in [
            AccountStatus::Open,
            AccountStatus::Frozen,
            AccountStatus::Closed,
        ] {
            assert_eq!(status_of(status_code(status)).ok(), Some(status));
        }
        assert!(matches!(status_of(3), Err(PgError::Corrupt(_))));
    }

    #[test]
    fn values_outside_bigint_are_refused_not_wrapped() {
        assert_eq!(i(7, "x").ok(), Some(7));
        assert!(matches!(
            i(u64::MAX, "amount"),
            Err(PgError::OutOfRange {
                what: "amount",
                value: u64::MAX
            })
        ));
        assert!(matches!(u(-1, "x"), Err(PgError::Corrupt(_))));
        assert_eq!(expiry(Timestamp::MAX).ok(), Some(None));
        assert_eq!(ts_clamped(Timestamp::MAX), i64::MAX);
    }
}
