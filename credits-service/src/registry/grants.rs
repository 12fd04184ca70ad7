//! Grant metadata under idempotency keys: the ledger's idempotency record compares a
//! grant's amount, expiry and priority (`credits_core::Command::Grant`), not its metadata,
//! so the service keeps a digest of the metadata each grant key was first used with, and
//! refuses the key with other metadata (409 `idempotency_conflict`).
//!
//! The digests live in this process, at most [`GRANT_KEYS_MAX`] of them (the oldest are
//! forgotten first). A forgotten key, another replica's or one from before a restart is
//! judged by the ledger alone: a replay with other metadata then gets the original answer
//! (nothing is applied twice either way: the ledger decides that).

use std::collections::{BTreeMap, HashMap, VecDeque};

use credits_core::{IdempotencyKey, LedgerError, TenantId};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

/// Most grant keys whose metadata digest is kept.
pub(crate) const GRANT_KEYS_MAX: usize = 1_000_000;

type Digest16 = [u8; 16];

fn digest16(parts: &[&[u8]]) -> Digest16 {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let full: [u8; 32] = h.finalize().into();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

#[derive(Debug)]
struct Record {
    metadata: Digest16,
    answered: bool,
}

#[derive(Debug, Default)]
struct Inner {
    records: HashMap<Digest16, Record>,
    order: VecDeque<Digest16>,
}

/// The metadata digests of grant keys.
#[derive(Debug)]
pub(crate) struct GrantKeys {
    inner: Mutex<Inner>,
    max: usize,
}

impl GrantKeys {
    /// Keeps at most `max` keys (at least one).
    pub(crate) fn new(max: usize) -> Self {
        GrantKeys {
            inner: Mutex::new(Inner::default()),
            max: max.max(1),
        }
    }

    fn key(tenant: &TenantId, key: &IdempotencyKey) -> Digest16 {
        digest16(&[tenant.as_str().as_bytes(), key.as_str().as_bytes()])
    }

    /// Claims `key` of `tenant` for a grant with `metadata`, before the ledger is called.
    ///
    /// # Errors
    /// [`LedgerError::IdempotencyConflict`] when the key was claimed with other metadata.
    pub(crate) fn claim(
        &self,
        tenant: &TenantId,
        key: &IdempotencyKey,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), LedgerError> {
        let parts: Vec<&[u8]> = metadata
            .iter()
            .flat_map(|(k, v)| [k.as_bytes(), v.as_bytes()])
            .collect();
        let wanted = digest16(&parts);
        let id = Self::key(tenant, key);
        let mut inner = self.inner.lock();
        if let Some(r) = inner.records.get(&id) {
            return if r.metadata == wanted {
                Ok(())
            } else {
                Err(LedgerError::IdempotencyConflict(key.clone()))
            };
        }
        while inner.order.len() >= self.max {
            if let Some(old) = inner.order.pop_front() {
                inner.records.remove(&old);
            }
        }
        inner.order.push_back(id);
        inner.records.insert(
            id,
            Record {
                metadata: wanted,
                answered: false,
            },
        );
        Ok(())
    }

    /// Records that the ledger answered the grant under `key` with a receipt; true for the
    /// first answer this process saw (the grant applied now, or before this process knew
    /// the key), false for a replay.
    pub(crate) fn first_answer(&self, tenant: &TenantId, key: &IdempotencyKey) -> bool {
        let id = Self::key(tenant, key);
        match self.inner.lock().records.get_mut(&id) {
            Some(r) => !std::mem::replace(&mut r.answered, true),
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_metadata_conflicts_and_the_second_answer_is_a_replay() {
        let keys = GrantKeys::new(2);
        let t = TenantId::new("acme").unwrap();
        let k = IdempotencyKey::new("g-1").unwrap();
        let m = |v: &str| BTreeMap::from([("ref".to_owned(), v.to_owned())]);
        assert!(keys.claim(&t, &k, &m("a")).is_ok());
        assert!(keys.first_answer(&t, &k));
        assert!(keys.claim(&t, &k, &m("a")).is_ok());
        assert!(!keys.first_answer(&t, &k));
        let e = keys.claim(&t, &k, &m("b")).unwrap_err();
        assert_eq!(e.code(), "idempotency_conflict");
        assert!(keys.claim(&t, &k, &BTreeMap::new()).is_err());
        // ("a","bc") and ("ab","c") are different metadata.
        let k2 = IdempotencyKey::new("g-2").unwrap();
        let one = BTreeMap::from([("a".to_owned(), "bc".to_owned())]);
        let two = BTreeMap::from([("ab".to_owned(), "c".to_owned())]);
        assert!(keys.claim(&t, &k2, &one).is_ok());
        assert!(keys.claim(&t, &k2, &two).is_err());
        // Bounded: a third key forgets the oldest.
        let k3 = IdempotencyKey::new("g-3").unwrap();
        assert!(keys.claim(&t, &k3, &one).is_ok());
        assert!(keys.claim(&t, &k, &m("b")).is_ok());
    }
}
