//! HMAC keys with ids, so keys can rotate without breaking verification of older entries.

use std::collections::BTreeMap;
use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::AuditError;
use crate::entry::{DOMAIN_MAC, Hash};

/// Shortest accepted HMAC key, in bytes.
pub const KEY_LEN_MIN: usize = 32;
/// Longest accepted HMAC key, in bytes (one SHA-256 block).
pub const KEY_LEN_MAX: usize = 64;

/// One HMAC-SHA256 key and its id. The key bytes are zeroized on drop and never printed.
///
/// ```
/// use audit_chain::HmacKey;
/// let key = HmacKey::new(1, [0x42; 32])?;
/// assert_eq!(key.id(), 1);
/// assert_eq!(format!("{key:?}"), "HmacKey { id: 1, .. }");
/// assert!(HmacKey::new(2, [0u8; 8]).is_err()); // too short
/// # Ok::<(), audit_chain::AuditError>(())
/// ```
#[derive(Clone)]
pub struct HmacKey {
    id: u32,
    bytes: Zeroizing<Vec<u8>>,
}

impl HmacKey {
    /// A key with id `id`.
    ///
    /// # Errors
    /// [`AuditError::InvalidKey`] unless the key is 32 to 64 bytes long.
    pub fn new(id: u32, bytes: impl AsRef<[u8]>) -> Result<Self, AuditError> {
        let bytes = bytes.as_ref();
        if !(KEY_LEN_MIN..=KEY_LEN_MAX).contains(&bytes.len()) {
            return Err(AuditError::InvalidKey(format!(
                "key {id} is {} bytes; must be {KEY_LEN_MIN} to {KEY_LEN_MAX}",
                bytes.len()
            )));
        }
        Ok(HmacKey {
            id,
            bytes: Zeroizing::new(bytes.to_vec()),
        })
    }

    /// The key id recorded in every entry it MACs.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.id
    }

    pub(crate) fn mac(&self, entry_hash: &Hash) -> [u8; 32] {
        // Lengths are checked in `new`; HMAC accepts any key length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.bytes)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(DOMAIN_MAC);
        mac.update(entry_hash);
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HmacKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The set of HMAC keys: one active key that seals new entries, plus retired keys kept to
/// verify older ones.
///
/// ```
/// use audit_chain::{HmacKey, Keyring};
/// let mut ring = Keyring::new(HmacKey::new(1, [1u8; 32])?);
/// ring.rotate(HmacKey::new(2, [2u8; 32])?)?; // key 2 seals from now on, key 1 still verifies
/// assert_eq!(ring.active_id(), 2);
/// assert!(ring.contains(1));
/// # Ok::<(), audit_chain::AuditError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Keyring {
    keys: BTreeMap<u32, HmacKey>,
    active: u32,
}

impl Keyring {
    /// A keyring whose active key is `active`.
    #[must_use]
    pub fn new(active: HmacKey) -> Self {
        let id = active.id;
        Keyring {
            keys: BTreeMap::from([(id, active)]),
            active: id,
        }
    }

    /// Adds a retired key (verification only).
    ///
    /// # Errors
    /// [`AuditError::InvalidKey`] if the id is already present.
    pub fn add(&mut self, key: HmacKey) -> Result<(), AuditError> {
        if self.keys.contains_key(&key.id) {
            return Err(AuditError::InvalidKey(format!(
                "key id {} already in the keyring",
                key.id
            )));
        }
        self.keys.insert(key.id, key);
        Ok(())
    }

    /// Adds `key` and makes it the active key; the previous key stays for verification.
    ///
    /// # Errors
    /// [`AuditError::InvalidKey`] if the id is already present (nothing changes).
    pub fn rotate(&mut self, key: HmacKey) -> Result<(), AuditError> {
        let id = key.id;
        self.add(key)?;
        self.active = id;
        Ok(())
    }

    /// Id of the key that seals new entries.
    #[must_use]
    pub fn active_id(&self) -> u32 {
        self.active
    }

    /// Whether a key with this id is present.
    #[must_use]
    pub fn contains(&self, id: u32) -> bool {
        self.keys.contains_key(&id)
    }

    pub(crate) fn active(&self) -> &HmacKey {
        // `active` always names a key in `keys` (set only by `new` and `rotate`).
        &self.keys[&self.active]
    }

    /// Checks `mac` against the key `key_id`, in constant time.
    ///
    /// # Errors
    /// [`AuditError::UnknownKey`] if the keyring lacks `key_id`.
    pub fn verify_mac(
        &self,
        key_id: u32,
        entry_hash: &Hash,
        mac: &[u8; 32],
    ) -> Result<bool, AuditError> {
        let key = self
            .keys
            .get(&key_id)
            .ok_or(AuditError::UnknownKey(key_id))?;
        Ok(bool::from(key.mac(entry_hash).ct_eq(mac)))
    }

    /// Parses a key file: one key per line, `<id>:<hex key>`; blank lines and lines starting
    /// with `#` are ignored. The last key listed is the active one.
    ///
    /// ```
    /// use audit_chain::Keyring;
    /// let text = format!("# audit keys\n1:{}\n2:{}\n", "11".repeat(32), "22".repeat(32));
    /// let ring = Keyring::from_key_file(&text)?;
    /// assert_eq!(ring.active_id(), 2);
    /// assert!(Keyring::from_key_file("1:zz").is_err());
    /// # Ok::<(), audit_chain::AuditError>(())
    /// ```
    ///
    /// # Errors
    /// [`AuditError::InvalidKey`] naming the bad line, or if the file has no key.
    pub fn from_key_file(text: &str) -> Result<Self, AuditError> {
        let mut ring: Option<Keyring> = None;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |what: &str| AuditError::InvalidKey(format!("line {}: {what}", n + 1));
            let (id, hex) = line
                .split_once(':')
                .ok_or_else(|| bad("expected <id>:<hex>"))?;
            let id: u32 = id.trim().parse().map_err(|_| bad("key id is not a u32"))?;
            let bytes = Zeroizing::new(
                crate::hex::decode(hex.trim()).ok_or_else(|| bad("key is not hex"))?,
            );
            let key = HmacKey::new(id, &*bytes)?;
            match ring.as_mut() {
                None => ring = Some(Keyring::new(key)),
                Some(r) => r.rotate(key)?,
            }
        }
        ring.ok_or_else(|| AuditError::InvalidKey("key file holds no key".into()))
    }
}
