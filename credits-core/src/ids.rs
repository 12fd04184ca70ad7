//! Identifiers: validated string names and per-tenant sequence numbers.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::LedgerError;

/// The longest tenant id or idempotency key accepted, in bytes.
pub const NAME_LEN_MAX: usize = 128;

/// Whether every byte is printable ASCII without spaces (`0x21..=0x7E`), eight bytes at a
/// time: every key of every request passes here, so a byte loop showed up in profiles.
fn all_graphic(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in chunks.by_ref() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        // A byte below 0x21 (a borrow out of one byte only follows a byte that is below
        // already), or a byte above 0x7E (its high bit set once 1 is added, or already).
        let below = x.wrapping_sub(ONES * 0x21) & !x & HIGH;
        let above = (x.wrapping_add(ONES) | x) & HIGH;
        if below | above != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(u8::is_ascii_graphic)
}

fn validate_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > NAME_LEN_MAX {
        return Err(format!("must be at most {NAME_LEN_MAX} bytes"));
    }
    if !all_graphic(s.as_bytes()) {
        return Err("must be printable ASCII without spaces".into());
    }
    Ok(())
}

/// The name of a tenant (one account in the ledger): 1 to 128 printable ASCII bytes,
/// no spaces. Cheap to clone (reference-counted).
///
/// ```
/// use credits_core::TenantId;
///
/// let t = TenantId::new("acme-corp")?;
/// assert_eq!(t.as_str(), "acme-corp");
/// assert!(TenantId::new("").is_err());
/// assert!(TenantId::new("has space").is_err());
/// # Ok::<(), credits_core::LedgerError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// Validates and wraps a tenant name.
    ///
    /// # Errors
    /// [`LedgerError::InvalidTenantId`] if it is empty, longer than [`NAME_LEN_MAX`] bytes or
    /// contains anything but printable ASCII.
    pub fn new(name: impl AsRef<str>) -> Result<Self, LedgerError> {
        let name = name.as_ref();
        validate_name(name).map_err(|reason| LedgerError::InvalidTenantId { reason })?;
        Ok(TenantId(Arc::from(name)))
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = LedgerError;
    fn try_from(s: String) -> Result<Self, LedgerError> {
        TenantId::new(s)
    }
}

impl From<TenantId> for String {
    fn from(t: TenantId) -> String {
        t.0.to_string()
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({:?})", &*self.0)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The caller's name for one mutation, unique per tenant: 1 to 128 printable ASCII bytes.
///
/// Sending the same key with the same request again returns the original outcome (success or
/// failure) without applying anything; the same key with a different request is an
/// [`LedgerError::IdempotencyConflict`]. Cheap to clone (reference-counted).
///
/// ```
/// use credits_core::IdempotencyKey;
///
/// let k = IdempotencyKey::new("order-1234/charge")?;
/// assert_eq!(k.as_str(), "order-1234/charge");
/// assert!(IdempotencyKey::new("x".repeat(129)).is_err());
/// # Ok::<(), credits_core::LedgerError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(Arc<str>);

impl IdempotencyKey {
    /// Validates and wraps a key.
    ///
    /// # Errors
    /// [`LedgerError::InvalidIdempotencyKey`] on the same rules as [`TenantId::new`].
    pub fn new(key: impl AsRef<str>) -> Result<Self, LedgerError> {
        let key = key.as_ref();
        validate_name(key).map_err(|reason| LedgerError::InvalidIdempotencyKey { reason })?;
        Ok(IdempotencyKey(Arc::from(key)))
    }

    /// The key.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = LedgerError;
    fn try_from(s: String) -> Result<Self, LedgerError> {
        IdempotencyKey::new(s)
    }
}

impl From<IdempotencyKey> for String {
    fn from(k: IdempotencyKey) -> String {
        k.0.to_string()
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({:?})", &*self.0)
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The longest [`Reason`] accepted, in bytes.
pub const REASON_LEN_MAX: usize = 128;

/// Why an operator removed credits (a [`Command::VoidLot`](crate::Command::VoidLot)): 1 to
/// 128 bytes of printable ASCII, spaces allowed inside. Recorded on the journal entry and
/// in its audit entry. Cheap to clone (reference-counted).
///
/// ```
/// use credits_core::Reason;
///
/// let r = Reason::new("chargeback 4411")?;
/// assert_eq!(r.as_str(), "chargeback 4411");
/// assert!(Reason::new("").is_err());
/// assert!(Reason::new(" padded").is_err());
/// assert!(Reason::new("tab\there").is_err());
/// # Ok::<(), credits_core::LedgerError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Reason(Arc<str>);

impl Reason {
    /// Validates and wraps a reason.
    ///
    /// # Errors
    /// [`LedgerError::InvalidReason`] if it is empty, longer than [`REASON_LEN_MAX`] bytes,
    /// starts or ends with a space or contains anything but printable ASCII and spaces.
    pub fn new(reason: impl AsRef<str>) -> Result<Self, LedgerError> {
        let s = reason.as_ref();
        let why = if s.is_empty() {
            Some("must not be empty".to_owned())
        } else if s.len() > REASON_LEN_MAX {
            Some(format!("must be at most {REASON_LEN_MAX} bytes"))
        } else if s.starts_with(' ') || s.ends_with(' ') {
            Some("must not start or end with a space".to_owned())
        } else if !s.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
            Some("must be printable ASCII".to_owned())
        } else {
            None
        };
        match why {
            Some(reason) => Err(LedgerError::InvalidReason { reason }),
            None => Ok(Reason(Arc::from(s))),
        }
    }

    /// The text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Reason {
    type Error = LedgerError;
    fn try_from(s: String) -> Result<Self, LedgerError> {
        Reason::new(s)
    }
}

impl From<Reason> for String {
    fn from(r: Reason) -> String {
        r.0.to_string()
    }
}

impl fmt::Debug for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reason({:?})", &*self.0)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! seq_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(u64);

        impl $name {
            /// Wraps a raw number (as read back from storage).
            #[must_use]
            pub const fn new(raw: u64) -> Self {
                $name(raw)
            }

            /// The raw number (for storage).
            #[must_use]
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

seq_id!(
    /// A hold's number, unique within its tenant (1, 2, 3, … in creation order).
    HoldId
);
seq_id!(
    /// A credit lot's number, unique within its tenant (1, 2, 3, … in creation order).
    LotId
);
seq_id!(
    /// A journal entry's position in its tenant's journal (1, 2, 3, … without gaps).
    EntrySeq
);
seq_id!(
    /// A balance event's position in its tenant's event outbox (1, 2, 3, … without gaps).
    EventSeq
);

#[cfg(test)]
mod tests {
    use super::all_graphic;
    use proptest::prelude::*;

    #[test]
    fn every_byte_value_in_every_position_of_a_word() {
        for len in [1usize, 7, 8, 9, 16, 23] {
            for at in 0..len {
                for b in 0..=u8::MAX {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = b;
                    assert_eq!(
                        all_graphic(&bytes),
                        b.is_ascii_graphic(),
                        "{b:#x} at {at} of {len}"
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_byte_loop(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(all_graphic(&bytes), bytes.iter().all(u8::is_ascii_graphic));
        }
    }
}
