//! The borrowed fast path ([`StreamHead::seal`] of an [`EntryView`]) seals exactly what the
//! owned path ([`StreamChain::seal`] of the same fields as an [`AuditEntry`]) seals, masking
//! included; a sealed entry survives its binary and JSON forms unchanged.

use audit_chain::{
    AuditEntry, AuditError, EntryView, HmacKey, Keyring, MaskingPolicy, SealedEntry, StreamChain,
    StreamHead,
};
use metered_clock::Timestamp;
use proptest::prelude::*;

const KEYS: &[&str] = &[
    "email",
    "held_after",
    "hold",
    "ip",
    "lot",
    "note",
    "seq",
    "user_agent",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9/_-]{1,12}",
        "\\PC{0,6}",
        Just("203.0.113.77".to_owned())
    ]
}

#[derive(Debug, Clone)]
struct Case {
    stream: String,
    event_type: String,
    action: String,
    amount: Option<u64>,
    balances: Option<(u64, u64)>,
    transaction_id: Option<String>,
    success: bool,
    metadata: Vec<(&'static str, String)>,
    at: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        "[a-z][a-z0-9/-]{0,20}",
        text(),
        text(),
        proptest::option::of(any::<u64>()),
        proptest::option::of((any::<u64>(), any::<u64>())),
        proptest::option::of(text()),
        any::<bool>(),
        proptest::collection::btree_map(proptest::sample::select(KEYS), text(), 0..6),
        any::<u64>(),
    )
        .prop_map(
            |(stream, event_type, action, amount, balances, transaction_id, success, m, at)| Case {
                stream,
                event_type,
                action,
                amount,
                balances,
                transaction_id,
                success,
                metadata: m.into_iter().collect(),
                at,
            },
        )
}

fn seal_both(
    c: &Case,
    policy: &MaskingPolicy,
    keyring: &Keyring,
) -> Result<(SealedEntry, SealedEntry), AuditError> {
    let pairs: Vec<(&str, &str)> = c.metadata.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let view = EntryView {
        amount: c.amount,
        balance_before: c.balances.map(|b| b.0),
        balance_after: c.balances.map(|b| b.1),
        transaction_id: c.transaction_id.as_deref(),
        success: c.success,
        metadata: &pairs,
        ..EntryView::new(
            &c.stream,
            &c.event_type,
            &c.action,
            Timestamp::from_unix_millis(c.at),
        )
    };
    let mut head = StreamHead::default();
    let first = head.seal(keyring, policy, &view)?;
    let fast = head.seal(keyring, policy, &view)?;
    let mut chain = StreamChain::new(c.stream.clone());
    let owned_first = chain.seal(keyring, policy, AuditEntry::from(view))?;
    let owned = chain.seal(keyring, policy, AuditEntry::from(view))?;
    assert_eq!(first, owned_first);
    assert_eq!(head, chain.head());
    Ok((fast, owned))
}

proptest! {
    #[test]
    fn the_view_seals_what_the_owned_entry_seals(c in case(), standard in any::<bool>()) {
        let keyring = Keyring::new(HmacKey::new(3, [5; 32]).unwrap());
        let policy = if standard { MaskingPolicy::standard() } else { MaskingPolicy::none() };
        let (fast, owned) = seal_both(&c, &policy, &keyring).unwrap();
        prop_assert_eq!(&fast, &owned);
        prop_assert_eq!(fast.entry(), owned.entry());
        prop_assert_eq!(fast.stream(), c.stream.as_str());
        prop_assert_eq!(fast.seq(), 1);
        prop_assert_eq!(fast.timestamp(), Timestamp::from_unix_millis(c.at));
        prop_assert_eq!(fast.policy_id(), policy.id());
        prop_assert_eq!(&fast.compute_hash(), fast.entry_hash());

        let mut bytes = Vec::new();
        fast.encode(&mut bytes);
        prop_assert_eq!(bytes.len(), fast.encoded_len());
        let decoded = SealedEntry::decode(&bytes).unwrap();
        prop_assert_eq!(&decoded, &fast);
        prop_assert_eq!(decoded.entry(), owned.entry());

        let json = serde_json::to_string(&fast).unwrap();
        let back: SealedEntry = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, &fast);
        prop_assert_eq!(serde_json::to_string(&back).unwrap(), json);
    }
}

#[test]
fn a_view_with_unordered_or_repeated_keys_is_refused_and_the_head_stays() {
    let keyring = Keyring::new(HmacKey::new(1, [1; 32]).unwrap());
    let mut head = StreamHead::default();
    for pairs in [&[("b", "1"), ("a", "2")][..], &[("a", "1"), ("a", "2")][..]] {
        let view = EntryView {
            metadata: pairs,
            ..EntryView::new("t", "e", "a", Timestamp::EPOCH)
        };
        let err = head
            .seal(&keyring, &MaskingPolicy::none(), &view)
            .unwrap_err();
        assert!(
            matches!(
                err,
                AuditError::InvalidEntry {
                    field: "metadata",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(head, StreamHead::default());
    }
    let long = "x".repeat(audit_chain::STREAM_LEN_MAX + 1);
    let view = EntryView::new(&long, "e", "a", Timestamp::EPOCH);
    assert!(head.seal(&keyring, &MaskingPolicy::none(), &view).is_err());
    assert_eq!(head, StreamHead::default());
}

#[test]
fn json_with_an_invalid_entry_is_refused() {
    let keyring = Keyring::new(HmacKey::new(1, [1; 32]).unwrap());
    let sealed = StreamChain::new("t")
        .seal(
            &keyring,
            &MaskingPolicy::none(),
            AuditEntry::new("t", "e", "a", Timestamp::EPOCH),
        )
        .unwrap();
    let mut json: serde_json::Value = serde_json::to_value(&sealed).unwrap();
    json["entry"]["stream"] = serde_json::Value::String(String::new());
    assert!(serde_json::from_value::<SealedEntry>(json).is_err());
}
