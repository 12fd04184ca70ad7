//! PII masking applied to metadata values **before** an entry is hashed.
//!
//! Masking after sealing would change the bytes the hash and MAC cover and break the chain,
//! so [`StreamChain::seal`](crate::StreamChain::seal) applies the policy first and records
//! the policy id in the entry.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::AuditError;
use crate::entry::TEXT_LEN_MAX;

/// What a masking rule replaces a value with when the value cannot be parsed.
pub const REDACTED: &str = "[redacted]";

/// How one metadata value is masked.
///
/// ```
/// use audit_chain::Mask;
/// assert_eq!(Mask::IpAddress.apply("203.0.113.77"), "203.0.113.0/24");
/// assert_eq!(Mask::IpAddress.apply("2001:db8:abcd:12::1"), "2001:db8:abcd::/48");
/// assert_eq!(Mask::PaymentToken.apply("tok_9f8e7d6c5b4a3210"), "****3210");
/// assert_eq!(Mask::CardNumber.apply("4242 4242 4242 4242"), "424242******4242");
/// assert_eq!(
///     Mask::UserAgent.apply("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.109 Safari/537.36"),
///     "Chrome/120",
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mask {
    /// IPv4 → its /24 network, IPv6 → its /48 network; anything else is redacted.
    IpAddress,
    /// A user agent → product family and major version (`Chrome/120`); unknown → `other`.
    UserAgent,
    /// A payment token → `****` and its last four characters (all masked if ≤ 4 long).
    PaymentToken,
    /// A card number (12–19 digits, spaces and dashes ignored) → BIN (first six) and last
    /// four digits; anything else is redacted.
    CardNumber,
    /// The whole value → `[redacted]`.
    Redact,
}

impl Mask {
    /// The masked form of `value`. Never fails: what cannot be parsed is redacted.
    #[must_use]
    pub fn apply(self, value: &str) -> String {
        match self {
            Mask::IpAddress => mask_ip(value),
            Mask::UserAgent => mask_user_agent(value),
            Mask::PaymentToken => mask_token(value),
            Mask::CardNumber => mask_card(value),
            Mask::Redact => REDACTED.to_owned(),
        }
    }
}

fn mask_ip(value: &str) -> String {
    match value.trim().parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => {
            let [a, b, c, _] = v4.octets();
            format!("{}/24", Ipv4Addr::new(a, b, c, 0))
        }
        Ok(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{}/48", Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0))
        }
        Err(_) => REDACTED.to_owned(),
    }
}

fn mask_token(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() <= 4 {
        return "****".to_owned();
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("****{tail}")
}

fn mask_card(value: &str) -> String {
    let mut digits = String::with_capacity(19);
    for c in value.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' => {}
            _ => return REDACTED.to_owned(),
        }
    }
    if !(12..=19).contains(&digits.len()) {
        return REDACTED.to_owned();
    }
    let middle = digits.len() - 10;
    format!(
        "{}{}{}",
        &digits[..6],
        "*".repeat(middle),
        &digits[digits.len() - 4..]
    )
}

/// Families checked in order: more specific tokens first (Edge and Opera also say Chrome,
/// Chrome also says Safari).
const UA_FAMILIES: &[(&str, &str)] = &[
    ("Edg/", "Edge"),
    ("EdgA/", "Edge"),
    ("EdgiOS/", "Edge"),
    ("OPR/", "Opera"),
    ("SamsungBrowser/", "SamsungBrowser"),
    ("Firefox/", "Firefox"),
    ("FxiOS/", "Firefox"),
    ("CriOS/", "Chrome"),
    ("Chrome/", "Chrome"),
    ("curl/", "curl"),
    ("Wget/", "Wget"),
    ("python-requests/", "python-requests"),
    ("okhttp/", "okhttp"),
    ("Go-http-client/", "Go-http-client"),
];

fn major_after(ua: &str, at: usize) -> Option<&str> {
    let rest = &ua[at..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

fn mask_user_agent(ua: &str) -> String {
    for (token, family) in UA_FAMILIES {
        if let Some(i) = ua.find(token)
            && let Some(major) = major_after(ua, i + token.len())
        {
            return format!("{family}/{major}");
        }
    }
    // Safari reports its version in `Version/x`, next to a `Safari/` token.
    if ua.contains("Safari/")
        && let Some(i) = ua.find("Version/")
        && let Some(major) = major_after(ua, i + "Version/".len())
    {
        return format!("Safari/{major}");
    }
    "other".to_owned()
}

/// A named set of rules: metadata key → [`Mask`]. Keys without a rule are kept as they are.
///
/// The id is recorded in every entry sealed under the policy, so an auditor knows which
/// rules shaped the stored values. Change the id whenever the rules change.
///
/// ```
/// use audit_chain::{Mask, MaskingPolicy};
/// let policy = MaskingPolicy::builder("pii-2026-01")
///     .rule("client_ip", Mask::IpAddress)
///     .rule("email", Mask::Redact)
///     .build()?;
/// assert_eq!(policy.id(), "pii-2026-01");
/// assert_eq!(policy.mask("client_ip", "198.51.100.9").as_deref(), Some("198.51.100.0/24"));
/// assert_eq!(policy.mask("plan", "gold"), None); // no rule: kept
/// # Ok::<(), audit_chain::AuditError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaskingPolicy {
    id: String,
    rules: BTreeMap<String, Mask>,
}

impl MaskingPolicy {
    /// The standard policy `pii-v1`: `ip`, `client_ip`, `ip_address` → IP networks;
    /// `user_agent` → family/major; `payment_token` → last four; `card_number` → BIN and
    /// last four; `email`, `phone` → redacted.
    #[must_use]
    pub fn standard() -> Self {
        MaskingPolicy {
            id: "pii-v1".to_owned(),
            rules: BTreeMap::from(
                [
                    ("ip", Mask::IpAddress),
                    ("client_ip", Mask::IpAddress),
                    ("ip_address", Mask::IpAddress),
                    ("user_agent", Mask::UserAgent),
                    ("payment_token", Mask::PaymentToken),
                    ("card_number", Mask::CardNumber),
                    ("email", Mask::Redact),
                    ("phone", Mask::Redact),
                ]
                .map(|(k, m)| (k.to_owned(), m)),
            ),
        }
    }

    /// The empty policy `none`: nothing is masked.
    #[must_use]
    pub fn none() -> Self {
        MaskingPolicy {
            id: "none".to_owned(),
            rules: BTreeMap::new(),
        }
    }

    /// Starts a policy with id `id`.
    pub fn builder(id: impl Into<String>) -> MaskingPolicyBuilder {
        MaskingPolicyBuilder {
            id: id.into(),
            rules: BTreeMap::new(),
        }
    }

    /// The policy id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the policy rewrites the values of `key`.
    #[must_use]
    pub fn masks(&self, key: &str) -> bool {
        self.rules.contains_key(key)
    }

    /// The masked value for `key`, or `None` if the policy has no rule for it.
    #[must_use]
    pub fn mask(&self, key: &str, value: &str) -> Option<String> {
        self.rules.get(key).map(|m| m.apply(value))
    }

    /// Masks every metadata value that has a rule, in place.
    pub fn apply(&self, metadata: &mut BTreeMap<String, String>) {
        if self.rules.is_empty() {
            return;
        }
        for (k, v) in metadata.iter_mut() {
            if let Some(m) = self.rules.get(k) {
                *v = m.apply(v);
            }
        }
    }
}

/// Builds a [`MaskingPolicy`].
#[derive(Debug)]
#[must_use]
pub struct MaskingPolicyBuilder {
    id: String,
    rules: BTreeMap<String, Mask>,
}

impl MaskingPolicyBuilder {
    /// Masks values of metadata key `key` with `mask` (replacing an earlier rule for it).
    pub fn rule(mut self, key: impl Into<String>, mask: Mask) -> Self {
        self.rules.insert(key.into(), mask);
        self
    }

    /// The policy.
    ///
    /// # Errors
    /// [`AuditError::InvalidConfig`] if the id is empty or longer than 1024 bytes.
    pub fn build(self) -> Result<MaskingPolicy, AuditError> {
        if self.id.is_empty() || self.id.len() > TEXT_LEN_MAX {
            return Err(AuditError::InvalidConfig(format!(
                "masking policy id must be 1 to {TEXT_LEN_MAX} bytes"
            )));
        }
        Ok(MaskingPolicy {
            id: self.id,
            rules: self.rules,
        })
    }
}
