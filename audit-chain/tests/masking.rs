//! Masking table tests: each rule on typical, edge and unparseable values.

use audit_chain::{AuditEntry, HmacKey, Keyring, Mask, MaskingPolicy, REDACTED, StreamChain};
use metered_clock::Timestamp;

fn check(mask: Mask, cases: &[(&str, &str)]) {
    for (input, want) in cases {
        assert_eq!(mask.apply(input), *want, "{mask:?} on {input:?}");
    }
}

#[test]
fn ip_addresses_keep_only_their_network() {
    check(
        Mask::IpAddress,
        &[
            ("203.0.113.77", "203.0.113.0/24"),
            ("10.0.0.1", "10.0.0.0/24"),
            (" 192.0.2.255 ", "192.0.2.0/24"),
            ("2001:db8:abcd:12::1", "2001:db8:abcd::/48"),
            (
                "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
                "2001:db8:85a3::/48",
            ),
            ("::1", "::/48"),
            ("::ffff:192.0.2.1", "::/48"),
            ("not an ip", REDACTED),
            ("300.1.1.1", REDACTED),
            ("", REDACTED),
        ],
    );
}

#[test]
fn user_agents_become_family_and_major_version() {
    check(
        Mask::UserAgent,
        &[
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.109 Safari/537.36",
                "Chrome/120",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91",
                "Edge/120",
            ),
            (
                "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
                "Firefox/121",
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15",
                "Safari/17",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36 OPR/105.0.0.0",
                "Opera/105",
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/120.0.6099.119 Mobile/15E148 Safari/604.1",
                "Chrome/120",
            ),
            ("curl/8.5.0", "curl/8"),
            ("python-requests/2.31.0", "python-requests/2"),
            ("SomeBot", "other"),
            ("", "other"),
            ("Chrome/", "other"),
        ],
    );
}

#[test]
fn payment_tokens_keep_last_four() {
    check(
        Mask::PaymentToken,
        &[
            ("tok_1MqLjE2eZvKYlo2C0ab1c2d3", "****c2d3"),
            ("12345", "****2345"),
            ("1234", "****"),
            ("", "****"),
            ("pm_ünïcødé", "****cødé"),
        ],
    );
}

#[test]
fn card_numbers_keep_bin_and_last_four() {
    check(
        Mask::CardNumber,
        &[
            ("4242424242424242", "424242******4242"),
            ("4242 4242 4242 4242", "424242******4242"),
            ("3782-822463-10005", "378282*****0005"),
            ("6011000990139424", "601100******9424"),
            ("12345678901", REDACTED),          // too short
            ("12345678901234567890", REDACTED), // too long
            ("4242x4242x4242x4242", REDACTED),
            ("", REDACTED),
        ],
    );
}

#[test]
fn redact_replaces_everything() {
    check(
        Mask::Redact,
        &[("alice@example.com", REDACTED), ("", REDACTED)],
    );
}

#[test]
fn policy_masks_before_hashing_and_records_its_id() {
    let keyring = Keyring::new(HmacKey::new(1, [2; 32]).unwrap());
    let policy = MaskingPolicy::standard();
    let mut chain = StreamChain::new("t");
    let sealed = chain
        .seal(
            &keyring,
            &policy,
            AuditEntry::new("t", "payment", "charge", Timestamp::EPOCH)
                .with_metadata("ip", "198.51.100.23")
                .with_metadata("user_agent", "curl/8.5.0")
                .with_metadata("payment_token", "tok_abcdef123456")
                .with_metadata("card_number", "4000 0566 5566 5556")
                .with_metadata("email", "bob@example.com")
                .with_metadata("plan", "gold"),
        )
        .unwrap();
    let m = &sealed.entry().metadata;
    assert_eq!(m["ip"], "198.51.100.0/24");
    assert_eq!(m["user_agent"], "curl/8");
    assert_eq!(m["payment_token"], "****3456");
    assert_eq!(m["card_number"], "400005******5556");
    assert_eq!(m["email"], REDACTED);
    assert_eq!(m["plan"], "gold");
    assert_eq!(sealed.policy_id(), "pii-v1");
    // The hash covers the masked values: recomputing it from the stored entry matches.
    assert_eq!(sealed.compute_hash(), *sealed.entry_hash());
}

#[test]
fn policy_builder_validates_its_id() {
    assert!(MaskingPolicy::builder("").build().is_err());
    assert!(MaskingPolicy::builder("x".repeat(1025)).build().is_err());
    let p = MaskingPolicy::builder("custom")
        .rule("ip", Mask::Redact)
        .rule("ip", Mask::IpAddress)
        .build()
        .unwrap();
    assert_eq!(p.mask("ip", "192.0.2.1").as_deref(), Some("192.0.2.0/24"));
    assert_eq!(MaskingPolicy::none().mask("ip", "192.0.2.1"), None);
}
