//! Validation of names and amounts: every bad input is a typed error.

use credits_core::{Amount, IdempotencyKey, LedgerError, NAME_LEN_MAX, TenantId};

#[test]
fn names_are_validated() {
    let max = "x".repeat(NAME_LEN_MAX);
    let cases: &[(&str, bool)] = &[
        ("acme", true),
        ("a/b:c-d_e.f", true),
        (&max, true),
        ("", false),
        ("has space", false),
        ("tab\t", false),
        ("ünïcode", false),
        ("new\nline", false),
    ];
    for (name, ok) in cases {
        assert_eq!(TenantId::new(name).is_ok(), *ok, "tenant {name:?}");
        assert_eq!(IdempotencyKey::new(name).is_ok(), *ok, "key {name:?}");
    }
    let long = "x".repeat(NAME_LEN_MAX + 1);
    assert!(matches!(
        TenantId::new(&long),
        Err(LedgerError::InvalidTenantId { .. })
    ));
    assert!(matches!(
        IdempotencyKey::new(&long),
        Err(LedgerError::InvalidIdempotencyKey { .. })
    ));
}

#[test]
fn names_round_trip_through_serde_and_reject_bad_input() {
    let t = TenantId::new("acme").unwrap();
    let json = serde_json::to_string(&t).unwrap();
    assert_eq!(json, "\"acme\"");
    assert_eq!(serde_json::from_str::<TenantId>(&json).unwrap(), t);
    assert!(serde_json::from_str::<TenantId>("\"\"").is_err());
    assert!(serde_json::from_str::<IdempotencyKey>("\"a b\"").is_err());
}

#[test]
fn amount_arithmetic_never_wraps() {
    assert_eq!(
        Amount::MAX.checked_add(Amount::new(1)),
        Err(LedgerError::AmountOverflow)
    );
    assert_eq!(Amount::new(1).checked_sub(Amount::new(2)), None);
    assert_eq!(Amount::new(1).saturating_sub(Amount::new(2)), Amount::ZERO);
    assert_eq!(
        Amount::new(2).checked_add(Amount::new(3)),
        Ok(Amount::new(5))
    );
}

#[test]
fn errors_say_whether_to_retry_and_survive_serialization() {
    let storage = LedgerError::Storage(credits_core::StorageError::retryable("timeout"));
    assert!(storage.is_retryable() && storage.is_storage());
    let batch = LedgerError::BatchRejected {
        index: 2,
        source: Box::new(storage.clone()),
    };
    assert!(batch.is_retryable());
    let domain = LedgerError::InsufficientCredits {
        requested: Amount::new(5),
        spendable: Amount::new(1),
    };
    assert!(!domain.is_retryable() && !domain.is_storage());
    for e in [
        storage,
        batch,
        domain,
        LedgerError::InvalidTenantId { reason: "x".into() },
    ] {
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<LedgerError>(&json).unwrap(), e);
    }
}
