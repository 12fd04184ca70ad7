//! HMAC keys with ids, so keys can rotate without breaking verification of older entries.

use std::collections::BTreeMap;
use std::fmt;

use sha2::digest::generic_array::GenericArray;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::AuditError;
use crate::entry::{DOMAIN_MAC, Hash};

/// Shortest accepted HMAC key, in bytes.
pub const KEY_LEN_MIN: usize = 32;
/// Longest accepted HMAC key, in bytes (one SHA-256 block).
pub const KEY_LEN_MAX: usize = 64;

/// One HMAC-SHA256 key and its id. Key material is zeroized on drop and never printed.
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
    state: MacState,
}

/// SHA-256 initial hash value (FIPS 180-4 §5.3.3).
const H0: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// HMAC-SHA256 (RFC 2104) with the key's inner and outer pad blocks already compressed.
///
/// The `hmac` crate computes the same value, but its keyed state cannot be zeroized; this
/// keeps the two key-equivalent states in arrays that are wiped on drop, and MACs the fixed
/// 51-byte message (domain tag ‖ entry hash) in two compressions.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
struct MacState {
    inner: [u32; 8],
    outer: [u32; 8],
}

fn compress(state: &mut [u32; 8], block: &[u8; 64]) {
    sha2::compress256(state, std::slice::from_ref(GenericArray::from_slice(block)));
}

impl MacState {
    fn new(key: &[u8]) -> Self {
        // `HmacKey::new` admits 32..=64 bytes, so the key fits one block unhashed.
        let mut k = Zeroizing::new([0u8; 64]);
        let n = key.len().min(64);
        k[..n].copy_from_slice(&key[..n]);
        let mut pad = Zeroizing::new([0u8; 64]);
        let mut state = MacState {
            inner: H0,
            outer: H0,
        };
        for (p, b) in pad.iter_mut().zip(k.iter()) {
            *p = b ^ 0x36;
        }
        compress(&mut state.inner, &pad);
        for (p, b) in pad.iter_mut().zip(k.iter()) {
            *p = b ^ 0x5c;
        }
        compress(&mut state.outer, &pad);
        state
    }

    fn mac(&self, entry_hash: &Hash) -> [u8; 32] {
        // Inner: one block holding domain ‖ hash, padding and the bit length of ipad ‖ msg.
        const MSG_LEN: usize = DOMAIN_MAC.len() + 32;
        const _: () = assert!(MSG_LEN <= 55, "message must fit one padded block");
        let mut block = [0u8; 64];
        block[..DOMAIN_MAC.len()].copy_from_slice(DOMAIN_MAC);
        block[DOMAIN_MAC.len()..MSG_LEN].copy_from_slice(entry_hash);
        block[MSG_LEN] = 0x80;
        block[56..].copy_from_slice(&(((64 + MSG_LEN) * 8) as u64).to_be_bytes());
        let mut inner = self.inner;
        compress(&mut inner, &block);
        // Outer: opad ‖ inner digest.
        let mut block = [0u8; 64];
        for (chunk, word) in block[..32].chunks_exact_mut(4).zip(inner) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        block[32] = 0x80;
        block[56..].copy_from_slice(&((96u64) * 8).to_be_bytes());
        let mut outer = self.outer;
        compress(&mut outer, &block);
        let mut out = [0u8; 32];
        for (chunk, word) in out.chunks_exact_mut(4).zip(outer) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        inner.zeroize();
        out
    }
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
            state: MacState::new(bytes),
        })
    }

    /// The key id recorded in every entry it MACs.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.id
    }

    pub(crate) fn mac(&self, entry_hash: &Hash) -> [u8; 32] {
        self.state.mac(entry_hash)
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
