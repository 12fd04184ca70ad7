//! Golden tests of what this backend persists: the exact text of an idempotency record for
//! a success of every [`Effect`] and a failure of every [`LedgerError`] variant (every
//! [`Command`] among them), of a hold's draws and a transaction's branches, and the
//! numbers and words stored for journal entry kinds, hold states and transaction phases.
//!
//! Rows written by one build are read by the next. Most of these forms come from
//! credits-core's serde derives, so a renamed variant or field there would turn stored
//! rows into corruption errors; here it fails a test instead. A change that is meant must
//! keep reading the old text (a serde alias, a migration) before a pinned text is updated.
//!
//! Every pinned text is also decoded and compared with the value it was made from.
//! Coverage is checked against the variant lists the serde derives themselves declare
//! ([`variants`]), so a variant added in credits-core fails here until it is pinned.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::time::Duration;

use credits_core::backend::Draw;
use credits_core::tx::{Branch, BranchId, TxAction, TxDecision, TxId};
use credits_core::{
    Command, Effect, GrantTag, IdempotencyRecord, LedgerError, Receipt, StorageError,
};
use serde::Deserializer;
use serde::de::{DeserializeOwned, Visitor};
use serde_json::Value;

use super::*;

const AT: Timestamp = Timestamp::from_unix_millis(1_700_000_000_000);

fn at(plus_ms: u64) -> Timestamp {
    Timestamp::from_unix_millis(AT.as_unix_millis() + plus_ms)
}

fn balance(available: u64, held: u64, overdrawn: u64) -> Balance {
    Balance {
        available: Amount::new(available),
        held: Amount::new(held),
        overdrawn: Amount::new(overdrawn),
    }
}

fn ok(command: Command, entry: u64, balance: Balance, effect: Effect) -> IdempotencyRecord {
    IdempotencyRecord {
        command,
        result: Ok(Receipt {
            entry: EntrySeq::new(entry),
            at: AT,
            balance,
            effect,
        }),
        at: AT,
    }
}

fn failed(command: Command, error: LedgerError) -> IdempotencyRecord {
    IdempotencyRecord {
        command,
        result: Err(error),
        at: AT,
    }
}

fn consume(amount: u64) -> Command {
    Command::Consume {
        amount: Amount::new(amount),
    }
}

/// Asserts that `value` is written as exactly `text` and that `text` reads back as `value`.
fn check<T: PartialEq + Debug>(
    value: &T,
    text: &str,
    encode: impl Fn(&T) -> Result<String, PgError>,
    decode: impl Fn(&str) -> Result<T, PgError>,
) {
    let written = encode(value).unwrap_or_else(|e| panic!("{value:?} not encoded: {e}"));
    assert_eq!(written, text, "the stored form of {value:?} changed");
    let read = decode(text).unwrap_or_else(|e| panic!("{text} no longer decodes: {e}"));
    assert_eq!(&read, value, "{text} decodes to something else");
}

/// The variant names a serde-derived enum declares (what its `Deserialize` accepts).
fn variants<T: DeserializeOwned>() -> &'static [&'static str] {
    #[derive(Debug)]
    struct Declared(&'static [&'static str]);
    impl std::fmt::Display for Declared {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{:?}", self.0)
        }
    }
    impl std::error::Error for Declared {}
    impl serde::de::Error for Declared {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Declared(&[])
        }
    }
    /// A deserializer that only records the variants it is asked for.
    struct Probe;
    impl<'de> Deserializer<'de> for Probe {
        type Error = Declared;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Declared> {
            Err(Declared(&[]))
        }
        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _: &'static str,
            variants: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Declared> {
            Err(Declared(variants))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map struct
            identifier ignored_any
        }
    }
    match T::deserialize(Probe) {
        Err(Declared(names)) => names,
        Ok(_) => unreachable!("the probe never produces a value"),
    }
}

/// The variant name of an externally tagged enum value's JSON.
fn variant_of(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value).expect("serializable") {
        Value::String(name) => name,
        Value::Object(map) if map.len() == 1 => map.keys().next().cloned().unwrap_or_default(),
        other => panic!("not an externally tagged enum: {other}"),
    }
}

fn assert_covers(kind: &str, pinned: BTreeSet<String>, declared: &[&str]) {
    let declared: BTreeSet<String> = declared.iter().map(|s| (*s).to_owned()).collect();
    assert!(!declared.is_empty(), "no variants of {kind} found");
    assert_eq!(
        pinned, declared,
        "every {kind} variant has a pinned stored form"
    );
}

/// A success of every effect: `(record, stored text)`.
fn successes() -> Vec<(IdempotencyRecord, &'static str)> {
    vec![
        (
            ok(
                Command::Grant {
                    amount: Amount::new(1_000),
                    expires_at: Some(at(86_400_000)),
                    priority: 2,
                },
                1,
                balance(1_000, 0, 0),
                Effect::Granted {
                    lot: Some(LotId::new(1)),
                },
            ),
            r#"{"command":{"Grant":{"amount":1000,"expires_at":1700086400000,"priority":2}},"result":{"Ok":{"entry":1,"at":1700000000000,"balance":{"available":1000,"held":0,"overdrawn":0},"effect":{"Granted":{"lot":1}}}},"at":1700000000000}"#,
        ),
        (
            ok(
                Command::Grant {
                    amount: Amount::new(5),
                    expires_at: None,
                    priority: 0,
                },
                4,
                balance(0, 0, 2),
                Effect::Granted { lot: None },
            ),
            r#"{"command":{"Grant":{"amount":5,"expires_at":null,"priority":0}},"result":{"Ok":{"entry":4,"at":1700000000000,"balance":{"available":0,"held":0,"overdrawn":2},"effect":{"Granted":{"lot":null}}}},"at":1700000000000}"#,
        ),
        (
            ok(
                Command::TaggedGrant {
                    amount: Amount::new(7),
                    expires_at: None,
                    priority: 1,
                    tag: GrantTag::new([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 255]),
                },
                5,
                balance(7, 0, 0),
                Effect::Granted {
                    lot: Some(LotId::new(3)),
                },
            ),
            r#"{"command":{"TaggedGrant":{"amount":7,"expires_at":null,"priority":1,"tag":[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,255]}},"result":{"Ok":{"entry":5,"at":1700000000000,"balance":{"available":7,"held":0,"overdrawn":0},"effect":{"Granted":{"lot":3}}}},"at":1700000000000}"#,
        ),
        (
            ok(consume(5), 2, balance(995, 0, 0), Effect::Consumed),
            r#"{"command":{"Consume":{"amount":5}},"result":{"Ok":{"entry":2,"at":1700000000000,"balance":{"available":995,"held":0,"overdrawn":0},"effect":"Consumed"}},"at":1700000000000}"#,
        ),
        (
            ok(
                Command::ConsumeUpTo {
                    max: Amount::new(50),
                },
                3,
                balance(0, 0, 0),
                Effect::Taken {
                    amount: Amount::new(20),
                },
            ),
            r#"{"command":{"ConsumeUpTo":{"max":50}},"result":{"Ok":{"entry":3,"at":1700000000000,"balance":{"available":0,"held":0,"overdrawn":0},"effect":{"Taken":{"amount":20}}}},"at":1700000000000}"#,
        ),
        (
            ok(
                Command::CommitUpTo {
                    hold: HoldId::new(2),
                    max: Amount::new(100),
                },
                5,
                balance(970, 0, 0),
                Effect::Committed {
                    hold: HoldId::new(2),
                    committed: Amount::new(25),
                    released: Amount::ZERO,
                },
            ),
            r#"{"command":{"CommitUpTo":{"hold":2,"max":100}},"result":{"Ok":{"entry":5,"at":1700000000000,"balance":{"available":970,"held":0,"overdrawn":0},"effect":{"Committed":{"hold":2,"committed":25,"released":0}}}},"at":1700000000000}"#,
        ),
        (
            ok(
                Command::Reserve {
                    amount: Amount::new(40),
                    ttl: Duration::from_millis(30_500),
                },
                3,
                balance(955, 40, 0),
                Effect::Reserved {
                    hold: HoldId::new(1),
                    expires_at: at(30_500),
                },
            ),
            r#"{"command":{"Reserve":{"amount":40,"ttl":{"secs":30,"nanos":500000000}}},"result":{"Ok":{"entry":3,"at":1700000000000,"balance":{"available":955,"held":40,"overdrawn":0},"effect":{"Reserved":{"hold":1,"expires_at":1700000030500}}}},"at":1700000000000}"#,
        ),
        (
            ok(
                Command::Commit {
                    hold: HoldId::new(1),
                    amount: Amount::new(25),
                },
                4,
                balance(970, 0, 0),
                Effect::Committed {
                    hold: HoldId::new(1),
                    committed: Amount::new(25),
                    released: Amount::new(15),
                },
            ),
            r#"{"command":{"Commit":{"hold":1,"amount":25}},"result":{"Ok":{"entry":4,"at":1700000000000,"balance":{"available":970,"held":0,"overdrawn":0},"effect":{"Committed":{"hold":1,"committed":25,"released":15}}}},"at":1700000000000}"#,
        ),
        (
            ok(
                Command::Cancel {
                    hold: HoldId::new(2),
                },
                6,
                balance(970, 0, 0),
                Effect::Cancelled {
                    hold: HoldId::new(2),
                    released: Amount::new(10),
                },
            ),
            r#"{"command":{"Cancel":{"hold":2}},"result":{"Ok":{"entry":6,"at":1700000000000,"balance":{"available":970,"held":0,"overdrawn":0},"effect":{"Cancelled":{"hold":2,"released":10}}}},"at":1700000000000}"#,
        ),
        (
            ok(
                Command::Refund {
                    entry: EntrySeq::new(2),
                    amount: Amount::new(3),
                },
                7,
                balance(973, 0, 0),
                Effect::Refunded {
                    lot: Some(LotId::new(3)),
                },
            ),
            r#"{"command":{"Refund":{"entry":2,"amount":3}},"result":{"Ok":{"entry":7,"at":1700000000000,"balance":{"available":973,"held":0,"overdrawn":0},"effect":{"Refunded":{"lot":3}}}},"at":1700000000000}"#,
        ),
        (
            ok(
                Command::VoidLot {
                    lot: LotId::new(1),
                    reason: Reason::new("granted by mistake").expect("valid"),
                },
                8,
                balance(3, 0, 0),
                Effect::Voided {
                    lot: LotId::new(1),
                    voided: Amount::new(970),
                },
            ),
            r#"{"command":{"VoidLot":{"lot":1,"reason":"granted by mistake"}},"result":{"Ok":{"entry":8,"at":1700000000000,"balance":{"available":3,"held":0,"overdrawn":0},"effect":{"Voided":{"lot":1,"voided":970}}}},"at":1700000000000}"#,
        ),
        (
            ok(
                Command::ImportGrant {
                    amount: Amount::new(100),
                    expires_at: Some(Timestamp::from_unix_millis(1_700_086_400_000)),
                    priority: 1,
                    at: Timestamp::from_unix_millis(1_690_000_000_000),
                },
                1,
                balance(100, 0, 0),
                Effect::Granted {
                    lot: Some(LotId::new(1)),
                },
            ),
            r#"{"command":{"ImportGrant":{"amount":100,"expires_at":1700086400000,"priority":1,"at":1690000000000}},"result":{"Ok":{"entry":1,"at":1700000000000,"balance":{"available":100,"held":0,"overdrawn":0},"effect":{"Granted":{"lot":1}}}},"at":1700000000000}"#,
        ),
        (
            ok(
                Command::ImportConsume {
                    amount: Amount::new(7),
                    at: Timestamp::from_unix_millis(1_690_000_000_000),
                },
                2,
                balance(93, 0, 0),
                Effect::Consumed,
            ),
            r#"{"command":{"ImportConsume":{"amount":7,"at":1690000000000}},"result":{"Ok":{"entry":2,"at":1700000000000,"balance":{"available":93,"held":0,"overdrawn":0},"effect":"Consumed"}},"at":1700000000000}"#,
        ),
        (
            ok(Command::Freeze, 9, balance(3, 0, 0), Effect::Frozen),
            r#"{"command":"Freeze","result":{"Ok":{"entry":9,"at":1700000000000,"balance":{"available":3,"held":0,"overdrawn":0},"effect":"Frozen"}},"at":1700000000000}"#,
        ),
        (
            ok(Command::Unfreeze, 10, balance(3, 0, 0), Effect::Unfrozen),
            r#"{"command":"Unfreeze","result":{"Ok":{"entry":10,"at":1700000000000,"balance":{"available":3,"held":0,"overdrawn":0},"effect":"Unfrozen"}},"at":1700000000000}"#,
        ),
        (
            ok(
                Command::Close,
                12,
                balance(0, 0, 0),
                Effect::Closed {
                    voided: Amount::new(3),
                },
            ),
            r#"{"command":"Close","result":{"Ok":{"entry":12,"at":1700000000000,"balance":{"available":0,"held":0,"overdrawn":0},"effect":{"Closed":{"voided":3}}}},"at":1700000000000}"#,
        ),
    ]
}

/// A failure of every error variant: `(record, stored text)`.
fn failures() -> Vec<(IdempotencyRecord, &'static str)> {
    let tenant = TenantId::new("acme").expect("valid");
    let key = IdempotencyKey::new("call-9").expect("valid");
    let hold = HoldId::new(7);
    let entry = EntrySeq::new(12);
    let tx = TxId::new(42);
    let branch = BranchId::new(tx, 1);
    let cancel = Command::Cancel { hold };
    let refund = Command::Refund {
        entry,
        amount: Amount::new(9),
    };
    vec![
        (
            failed(consume(0), LedgerError::ZeroAmount),
            r#"{"command":{"Consume":{"amount":0}},"result":{"Err":"ZeroAmount"},"at":1700000000000}"#,
        ),
        (
            failed(
                Command::Reserve {
                    amount: Amount::new(1),
                    ttl: Duration::ZERO,
                },
                LedgerError::ZeroTtl,
            ),
            r#"{"command":{"Reserve":{"amount":1,"ttl":{"secs":0,"nanos":0}}},"result":{"Err":"ZeroTtl"},"at":1700000000000}"#,
        ),
        (
            failed(
                consume(1),
                LedgerError::InvalidTenantId {
                    reason: "empty".into(),
                },
            ),
            r#"{"command":{"Consume":{"amount":1}},"result":{"Err":{"InvalidTenantId":{"reason":"empty"}}},"at":1700000000000}"#,
        ),
        (
            failed(
                consume(1),
                LedgerError::InvalidIdempotencyKey {
                    reason: "longer than 255 bytes".into(),
                },
            ),
            r#"{"command":{"Consume":{"amount":1}},"result":{"Err":{"InvalidIdempotencyKey":{"reason":"longer than 255 bytes"}}},"at":1700000000000}"#,
        ),
        (
            failed(
                Command::Grant {
                    amount: Amount::new(1),
                    expires_at: Some(AT),
                    priority: 0,
                },
                LedgerError::ExpiryNotInFuture,
            ),
            r#"{"command":{"Grant":{"amount":1,"expires_at":1700000000000,"priority":0}},"result":{"Err":"ExpiryNotInFuture"},"at":1700000000000}"#,
        ),
        (
            failed(consume(u64::MAX), LedgerError::AmountOverflow),
            r#"{"command":{"Consume":{"amount":18446744073709551615}},"result":{"Err":"AmountOverflow"},"at":1700000000000}"#,
        ),
        (
            failed(consume(1), LedgerError::UnknownTenant(tenant.clone())),
            r#"{"command":{"Consume":{"amount":1}},"result":{"Err":{"UnknownTenant":"acme"}},"at":1700000000000}"#,
        ),
        (
            failed(consume(1), LedgerError::TenantExists(tenant.clone())),
            r#"{"command":{"Consume":{"amount":1}},"result":{"Err":{"TenantExists":"acme"}},"at":1700000000000}"#,
        ),
        (
            failed(
                consume(50),
                LedgerError::InsufficientCredits {
                    requested: Amount::new(50),
                    spendable: Amount::new(8),
                },
            ),
            r#"{"command":{"Consume":{"amount":50}},"result":{"Err":{"InsufficientCredits":{"requested":50,"spendable":8}}},"at":1700000000000}"#,
        ),
        (
            failed(cancel.clone(), LedgerError::UnknownHold(hold)),
            r#"{"command":{"Cancel":{"hold":7}},"result":{"Err":{"UnknownHold":7}},"at":1700000000000}"#,
        ),
        (
            failed(cancel.clone(), LedgerError::HoldAlreadyCommitted(hold)),
            r#"{"command":{"Cancel":{"hold":7}},"result":{"Err":{"HoldAlreadyCommitted":7}},"at":1700000000000}"#,
        ),
        (
            failed(cancel.clone(), LedgerError::HoldAlreadyCancelled(hold)),
            r#"{"command":{"Cancel":{"hold":7}},"result":{"Err":{"HoldAlreadyCancelled":7}},"at":1700000000000}"#,
        ),
        (
            failed(cancel, LedgerError::HoldExpired(hold)),
            r#"{"command":{"Cancel":{"hold":7}},"result":{"Err":{"HoldExpired":7}},"at":1700000000000}"#,
        ),
        (
            failed(
                Command::Commit {
                    hold,
                    amount: Amount::new(30),
                },
                LedgerError::CommitExceedsHold {
                    hold,
                    held: Amount::new(20),
                    requested: Amount::new(30),
                },
            ),
            r#"{"command":{"Commit":{"hold":7,"amount":30}},"result":{"Err":{"CommitExceedsHold":{"hold":7,"held":20,"requested":30}}},"at":1700000000000}"#,
        ),
        (
            failed(refund.clone(), LedgerError::UnknownEntry(entry)),
            r#"{"command":{"Refund":{"entry":12,"amount":9}},"result":{"Err":{"UnknownEntry":12}},"at":1700000000000}"#,
        ),
        (
            failed(refund.clone(), LedgerError::NotRefundable(entry)),
            r#"{"command":{"Refund":{"entry":12,"amount":9}},"result":{"Err":{"NotRefundable":12}},"at":1700000000000}"#,
        ),
        (
            failed(
                refund,
                LedgerError::RefundExceedsConsumed {
                    entry,
                    refundable: Amount::new(4),
                    requested: Amount::new(9),
                },
            ),
            r#"{"command":{"Refund":{"entry":12,"amount":9}},"result":{"Err":{"RefundExceedsConsumed":{"entry":12,"refundable":4,"requested":9}}},"at":1700000000000}"#,
        ),
        (
            failed(consume(1), LedgerError::IdempotencyConflict(key.clone())),
            r#"{"command":{"Consume":{"amount":1}},"result":{"Err":{"IdempotencyConflict":"call-9"}},"at":1700000000000}"#,
        ),
        (
            failed(
                consume(1),
                LedgerError::AuditBacklogFull {
                    backlog: 10,
                    limit: 10,
                },
            ),
            r#"{"command":{"Consume":{"amount":1}},"result":{"Err":{"AuditBacklogFull":{"backlog":10,"limit":10}}},"at":1700000000000}"#,
        ),
        (
            failed(consume(1), LedgerError::EmptyBatch),
            r#"{"command":{"Consume":{"amount":1}},"result":{"Err":"EmptyBatch"},"at":1700000000000}"#,
        ),
        (
            failed(
                consume(1),
                LedgerError::BatchTooLarge {
                    max: 1_000,
                    len: 1_001,
                },
            ),
            r#"{"command":{"Consume":{"amount":1}},"result":{"Err":{"BatchTooLarge":{"max":1000,"len":1001}}},"at":1700000000000}"#,
        ),
        (
            failed(consume(1), LedgerError::DuplicateKeyInBatch(key)),
            r#"{"command":{"Consume":{"amount":1}},"result":{"Err":{"DuplicateKeyInBatch":"call-9"}},"at":1700000000000}"#,
        ),
        (
            failed(
                consume(1),
                LedgerError::BatchRejected {
                    index: 3,
                    source: Box::new(LedgerError::UnknownHold(hold)),
                },
            ),
            r#"{"command":{"Consume":{"amount":1}},"result":{"Err":{"BatchRejected":{"index":3,"source":{"UnknownHold":7}}}},"at":1700000000000}"#,
        ),
        (
            failed(consume(1), LedgerError::UnknownTransaction(tx)),
            r#"{"command":{"Consume":{"amount":1}},"result":{"Err":{"UnknownTransaction":42}},"at":1700000000000}"#,
        ),
        (
            failed(
                consume(1),
                LedgerError::TransactionState {
                    tx,
                    state: TxPhase::Decided(TxDecision::Abort),
                    action: TxAction::Prepare,
                },
            ),
            r#"{"command":{"Consume":{"amount":1}},"result":{"Err":{"TransactionState":{"tx":42,"state":{"Decided":"Abort"},"action":"prepare"}}},"at":1700000000000}"#,
        ),
        (
            failed(
                Command::AbortPrepared { branch, hold: None },
                LedgerError::BranchNotPrepared { branch },
            ),
            r#"{"command":{"AbortPrepared":{"branch":{"tx":42,"index":1},"hold":null}},"result":{"Err":{"BranchNotPrepared":{"branch":{"tx":42,"index":1}}}},"at":1700000000000}"#,
        ),
        (
            failed(
                Command::Prepare {
                    amount: Amount::new(40),
                    branch,
                },
                LedgerError::BranchAlreadyPrepared { branch, hold },
            ),
            r#"{"command":{"Prepare":{"amount":40,"branch":{"tx":42,"index":1}}},"result":{"Err":{"BranchAlreadyPrepared":{"branch":{"tx":42,"index":1},"hold":7}}},"at":1700000000000}"#,
        ),
        (
            failed(
                Command::CommitPrepared {
                    branch,
                    hold,
                    amount: Amount::new(5),
                },
                LedgerError::HoldOwnedByTransaction {
                    hold,
                    owner: branch,
                },
            ),
            r#"{"command":{"CommitPrepared":{"branch":{"tx":42,"index":1},"hold":7,"amount":5}},"result":{"Err":{"HoldOwnedByTransaction":{"hold":7,"owner":{"tx":42,"index":1}}}},"at":1700000000000}"#,
        ),
        (
            failed(consume(1), LedgerError::TransactionTimedOut(tx)),
            r#"{"command":{"Consume":{"amount":1}},"result":{"Err":{"TransactionTimedOut":42}},"at":1700000000000}"#,
        ),
        (
            failed(
                consume(1),
                LedgerError::TransactionAborted {
                    tx,
                    participant: "credits".into(),
                    reason: "insufficient credits".into(),
                },
            ),
            r#"{"command":{"Consume":{"amount":1}},"result":{"Err":{"TransactionAborted":{"tx":42,"participant":"credits","reason":"insufficient credits"}}},"at":1700000000000}"#,
        ),
        (
            failed(
                consume(1),
                LedgerError::UnknownParticipant("billing".into()),
            ),
            r#"{"command":{"Consume":{"amount":1}},"result":{"Err":{"UnknownParticipant":"billing"}},"at":1700000000000}"#,
        ),
        (
            failed(consume(1), LedgerError::InvalidPayload("not JSON".into())),
            r#"{"command":{"Consume":{"amount":1}},"result":{"Err":{"InvalidPayload":"not JSON"}},"at":1700000000000}"#,
        ),
        (
            failed(
                Command::Freeze,
                LedgerError::InvalidReason {
                    reason: "must not be empty".into(),
                },
            ),
            r#"{"command":"Freeze","result":{"Err":{"InvalidReason":{"reason":"must not be empty"}}},"at":1700000000000}"#,
        ),
        (
            failed(
                Command::ImportConsume {
                    amount: Amount::new(1),
                    at: Timestamp::from_unix_millis(1_690_000_000_000),
                },
                LedgerError::ImportOutOfOrder {
                    at: Timestamp::from_unix_millis(1_690_000_000_000),
                    last: Timestamp::from_unix_millis(1_695_000_000_000),
                },
            ),
            r#"{"command":{"ImportConsume":{"amount":1,"at":1690000000000}},"result":{"Err":{"ImportOutOfOrder":{"at":1690000000000,"last":1695000000000}}},"at":1700000000000}"#,
        ),
        (
            failed(
                Command::ImportConsume {
                    amount: Amount::new(1),
                    at: Timestamp::from_unix_millis(1_710_000_000_000),
                },
                LedgerError::ImportInFuture {
                    at: Timestamp::from_unix_millis(1_710_000_000_000),
                    now: Timestamp::from_unix_millis(1_700_000_000_000),
                },
            ),
            r#"{"command":{"ImportConsume":{"amount":1,"at":1710000000000}},"result":{"Err":{"ImportInFuture":{"at":1710000000000,"now":1700000000000}}},"at":1700000000000}"#,
        ),
        (
            failed(
                consume(1),
                LedgerError::InvalidRollover {
                    reason: "the cap must not be zero".into(),
                },
            ),
            r#"{"command":{"Consume":{"amount":1}},"result":{"Err":{"InvalidRollover":{"reason":"the cap must not be zero"}}},"at":1700000000000}"#,
        ),
        (
            failed(
                consume(1),
                LedgerError::InvalidThresholds {
                    reason: "the thresholds must be distinct".into(),
                },
            ),
            r#"{"command":{"Consume":{"amount":1}},"result":{"Err":{"InvalidThresholds":{"reason":"the thresholds must be distinct"}}},"at":1700000000000}"#,
        ),
        (
            failed(consume(1), LedgerError::UnknownLot(LotId::new(9))),
            r#"{"command":{"Consume":{"amount":1}},"result":{"Err":{"UnknownLot":9}},"at":1700000000000}"#,
        ),
        (
            failed(consume(1), LedgerError::LotEmpty(LotId::new(9))),
            r#"{"command":{"Consume":{"amount":1}},"result":{"Err":{"LotEmpty":9}},"at":1700000000000}"#,
        ),
        (
            failed(consume(1), LedgerError::TenantFrozen(tenant.clone())),
            r#"{"command":{"Consume":{"amount":1}},"result":{"Err":{"TenantFrozen":"acme"}},"at":1700000000000}"#,
        ),
        (
            failed(
                Command::Unfreeze,
                LedgerError::TenantNotFrozen(tenant.clone()),
            ),
            r#"{"command":"Unfreeze","result":{"Err":{"TenantNotFrozen":"acme"}},"at":1700000000000}"#,
        ),
        (
            failed(consume(1), LedgerError::TenantClosed(tenant.clone())),
            r#"{"command":{"Consume":{"amount":1}},"result":{"Err":{"TenantClosed":"acme"}},"at":1700000000000}"#,
        ),
        (
            failed(
                Command::Close,
                LedgerError::HoldsOpen {
                    tenant: tenant.clone(),
                    holds: 2,
                },
            ),
            r#"{"command":"Close","result":{"Err":{"HoldsOpen":{"tenant":"acme","holds":2}}},"at":1700000000000}"#,
        ),
        (
            failed(
                consume(1),
                LedgerError::Storage(StorageError::retryable("connection reset")),
            ),
            r#"{"command":{"Consume":{"amount":1}},"result":{"Err":{"Storage":{"message":"connection reset","retryable":true}}},"at":1700000000000}"#,
        ),
    ]
}

#[test]
fn success_records_keep_their_text() {
    for (record, text) in successes() {
        check(&record, text, record_text, record_of);
    }
}

#[test]
fn failure_records_keep_their_text() {
    for (record, text) in failures() {
        check(&record, text, record_text, record_of);
    }
}

#[test]
fn every_effect_error_and_command_is_pinned() {
    let records: Vec<IdempotencyRecord> = successes()
        .into_iter()
        .chain(failures())
        .map(|(r, _)| r)
        .collect();
    let effects = records
        .iter()
        .filter_map(|r| r.result.as_ref().ok())
        .map(|r| variant_of(&r.effect))
        .collect();
    assert_covers("Effect", effects, variants::<Effect>());
    let errors = records
        .iter()
        .filter_map(|r| r.result.as_ref().err())
        .map(variant_of)
        .collect();
    assert_covers("LedgerError", errors, variants::<LedgerError>());
    let commands = records.iter().map(|r| variant_of(&r.command)).collect();
    assert_covers("Command", commands, variants::<Command>());
}

#[test]
fn hold_draws_keep_their_text() {
    let draws = vec![
        Draw {
            lot: credits_core::backend::LotKey {
                expires_at: at(86_400_000),
                priority: 2,
                id: LotId::new(1),
            },
            amount: Amount::new(30),
        },
        // A lot that never expires.
        Draw {
            lot: credits_core::backend::LotKey {
                expires_at: Timestamp::MAX,
                priority: 0,
                id: LotId::new(4),
            },
            amount: Amount::new(10),
        },
    ];
    check(
        &draws,
        r#"[{"lot":{"expires_at":1700086400000,"priority":2,"id":1},"amount":30},{"lot":{"expires_at":18446744073709551615,"priority":0,"id":4},"amount":10}]"#,
        |d| draws_text(d),
        draws_of,
    );
}

/// What `enlist` appends to `distributed_transactions.branches` (jsonb; the form PostgreSQL
/// prints back is pinned by `tests/stored_forms.rs`).
#[test]
fn transaction_branches_keep_their_text() {
    let branches = vec![
        Branch::new("credits", r#"{"tenant":"acme","amount":5}"#),
        Branch {
            prepared: Some(r#"{"tenant":"acme","hold":7}"#.into()),
            ..Branch::new("billing", "")
        },
    ];
    check(
        &branches,
        r#"[{"participant":"credits","payload":"{\"tenant\":\"acme\",\"amount\":5}"},{"participant":"billing","payload":"","prepared":"{\"tenant\":\"acme\",\"hold\":7}"}]"#,
        |b| branches_text(b),
        branches_of,
    );
}

/// `journal_entries.kind` (smallint) and the audit entry's action word, per kind.
#[test]
fn entry_kinds_keep_their_code_and_word() {
    let table = [
        (EntryKind::Granted, 1, "granted"),
        (EntryKind::Consumed, 2, "consumed"),
        (EntryKind::Reserved, 3, "reserved"),
        (EntryKind::Committed, 4, "committed"),
        (EntryKind::Released, 5, "released"),
        (EntryKind::Cancelled, 6, "cancelled"),
        (EntryKind::HoldExpired, 7, "hold_expired"),
        (EntryKind::LotExpired, 8, "lot_expired"),
        (EntryKind::Refunded, 9, "refunded"),
        (EntryKind::LotVoided, 10, "lot_voided"),
        (EntryKind::Frozen, 11, "frozen"),
        (EntryKind::Unfrozen, 12, "unfrozen"),
        (EntryKind::Closed, 13, "closed"),
        (EntryKind::RolledOver, 14, "rolled_over"),
        (EntryKind::ImportedGrant, 15, "imported_grant"),
        (EntryKind::ImportedConsume, 16, "imported_consume"),
    ];
    for (kind, code, word) in table {
        assert_eq!(kind_code(kind), code, "{kind:?}");
        assert_eq!(kind_of(code).ok(), Some(kind), "{code}");
        assert_eq!(kind.as_str(), word, "{kind:?}");
    }
    let pinned = table.iter().map(|(k, _, _)| variant_of(k)).collect();
    assert_covers("EntryKind", pinned, variants::<EntryKind>());
}

/// `accounts.status` (smallint), per status; each number is one the column allows, and
/// the status entry kinds are the ones whose amount may be zero.
#[test]
fn account_statuses_keep_their_number() {
    let migration = include_str!("../migrations/0007_lifecycle.sql");
    assert!(migration.contains("CHECK (status IN (0, 1, 2))"));
    assert!(migration.contains("kind IN (11, 12, 13)"));
    let table = [
        (AccountStatus::Open, 0),
        (AccountStatus::Frozen, 1),
        (AccountStatus::Closed, 2),
    ];
    for (status, code) in table {
        assert_eq!(status_code(status), code, "{status:?}");
        assert_eq!(status_of(code).ok(), Some(status), "{code}");
    }
    let pinned = table.iter().map(|(s, _)| variant_of(s)).collect();
    assert_covers("AccountStatus", pinned, variants::<AccountStatus>());
    let zero_amount: Vec<i16> = [EntryKind::Frozen, EntryKind::Unfrozen, EntryKind::Closed]
        .into_iter()
        .filter(|k| k.is_status())
        .map(kind_code)
        .collect();
    assert_eq!(zero_amount, [11, 12, 13]);
}

/// `holds.state` and `holds.committed`, per state; each word is one the table allows.
#[test]
fn hold_states_keep_their_word() {
    let migration = include_str!("../migrations/0001_ledger.sql");
    let table = [
        (None, "active", None),
        (
            Some(HoldResolution::Committed {
                committed: Amount::new(25),
            }),
            "committed",
            Some(25),
        ),
        (Some(HoldResolution::Cancelled), "cancelled", None),
        (Some(HoldResolution::Expired), "expired", None),
    ];
    for (state, word, committed) in table {
        assert_eq!(hold_state(state).ok(), Some((word, committed)), "{state:?}");
        assert_eq!(resolution(word, committed).ok(), Some(state), "{word}");
        assert!(
            migration.contains(&format!("'{word}'")),
            "{word} not allowed"
        );
        // Exhaustive: a new resolution fails to compile until it has a row.
        match state {
            None
            | Some(
                HoldResolution::Committed { .. }
                | HoldResolution::Cancelled
                | HoldResolution::Expired,
            ) => {}
        }
    }
    assert!(resolution("voided", None).is_err());
}

/// `distributed_transactions.phase`, per phase; each word is one the table allows.
#[test]
fn transaction_phases_keep_their_word() {
    let migration = include_str!("../migrations/0002_transactions_audit.sql");
    let table = [
        (TxPhase::Active, "active"),
        (TxPhase::Prepared, "prepared"),
        (TxPhase::Decided(TxDecision::Commit), "committing"),
        (TxPhase::Decided(TxDecision::Abort), "aborting"),
        (TxPhase::Finished(TxDecision::Commit), "committed"),
        (TxPhase::Finished(TxDecision::Abort), "aborted"),
    ];
    for (phase, word) in table {
        assert_eq!(phase.as_str(), word, "{phase:?}");
        assert_eq!(phase_of(word).ok(), Some(phase), "{word}");
        assert!(
            migration.contains(&format!("'{word}'")),
            "{word} not allowed"
        );
        // Exhaustive: a new phase fails to compile until it has a row.
        match phase {
            TxPhase::Active
            | TxPhase::Prepared
            | TxPhase::Decided(TxDecision::Commit | TxDecision::Abort)
            | TxPhase::Finished(TxDecision::Commit | TxDecision::Abort) => {}
        }
    }
    assert!(phase_of("done").is_err());
}

/// The probe finds what serde declares (so the coverage checks above are not vacuous).
#[test]
fn the_variant_probe_reads_serde_declarations() {
    assert_eq!(
        variants::<Result<(), ()>>(),
        ["Ok", "Err"],
        "serde's own Result"
    );
    assert!(variants::<LedgerError>().contains(&"ZeroAmount"));
    assert_eq!(variant_of(&LedgerError::EmptyBatch), "EmptyBatch");
}

/// `accounts.rollover` holds a tenant's `RolloverPolicy` as this text; an invalid stored
/// policy is refused when read back.
#[test]
fn the_rollover_policy_text_is_pinned() {
    use credits_core::RolloverPolicy;
    let capped =
        RolloverPolicy::new(50, Some(Amount::new(1_000)), Duration::from_secs(30)).expect("valid");
    let text = super::json::rollover_text(&capped).expect("text");
    assert_eq!(text, r#"{"share_percent":50,"cap":1000,"ttl_ms":30000}"#);
    assert_eq!(super::json::rollover_of(&text).ok(), Some(capped));
    let uncapped = RolloverPolicy::new(100, None, Duration::from_millis(1)).expect("valid");
    let text = super::json::rollover_text(&uncapped).expect("text");
    assert_eq!(text, r#"{"share_percent":100,"ttl_ms":1}"#);
    assert_eq!(super::json::rollover_of(&text).ok(), Some(uncapped));
    for bad in [
        r#"{"share_percent":0,"ttl_ms":1}"#,
        r#"{"share_percent":101,"ttl_ms":1}"#,
        r#"{"share_percent":50,"cap":0,"ttl_ms":1}"#,
        r#"{"share_percent":50,"ttl_ms":0}"#,
    ] {
        assert!(super::json::rollover_of(bad).is_err(), "{bad}");
    }
}

/// `accounts.thresholds` holds a tenant's `BalanceThresholds` as this text (ascending); an
/// invalid stored list is refused when read back.
#[test]
fn the_thresholds_text_is_pinned() {
    use credits_core::BalanceThresholds;
    let t =
        BalanceThresholds::new([Amount::new(500), Amount::new(1), Amount::new(20)]).expect("valid");
    let text = super::json::thresholds_text(&t).expect("text");
    assert_eq!(text, "[1,20,500]");
    assert_eq!(super::json::thresholds_of(&text).ok(), Some(t));
    assert_eq!(
        super::json::thresholds_of("[]").ok(),
        Some(BalanceThresholds::NONE)
    );
    for bad in ["[0]", "[5,5]", "[1,2,3,4,5,6,7,8,9]", "[-1]", "{}"] {
        assert!(super::json::thresholds_of(bad).is_err(), "{bad}");
    }
}
