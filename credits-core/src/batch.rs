//! [`Batch`]: requests applied all or nothing, validated once, before any store sees them.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::{LedgerError, Request, TenantId};

/// The most requests one batch may hold.
pub const BATCH_LEN_MAX: usize = 1_000;

/// Requests to apply all or nothing, in order, possibly on several tenants: not empty, at
/// most [`BATCH_LEN_MAX`] long, and no tenant's idempotency key twice. A value of this type
/// has passed those checks, so a [`LedgerStore`](crate::LedgerStore) does not repeat them.
///
/// ```
/// use credits_core::{Amount, Batch, Command, IdempotencyKey, LedgerError, Request, TenantId};
///
/// let acme = TenantId::new("acme")?;
/// let consume = |key: &str| {
///     Request::new(acme.clone(), IdempotencyKey::new(key).unwrap(), Command::Consume { amount: Amount::new(1) })
/// };
/// let batch = Batch::new(vec![consume("a"), consume("b")])?;
/// assert_eq!(batch.len(), 2);
/// assert_eq!(Batch::new(vec![]), Err(LedgerError::EmptyBatch));
/// assert_eq!(
///     Batch::new(vec![consume("a"), consume("a")]),
///     Err(LedgerError::DuplicateKeyInBatch(IdempotencyKey::new("a")?)),
/// );
/// # Ok::<(), LedgerError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Batch {
    requests: Vec<Request>,
}

impl Batch {
    /// Checks and wraps `requests`.
    ///
    /// # Errors
    /// [`LedgerError::EmptyBatch`], [`LedgerError::BatchTooLarge`],
    /// [`LedgerError::DuplicateKeyInBatch`] (the first key seen twice for one tenant).
    pub fn new(requests: Vec<Request>) -> Result<Self, LedgerError> {
        if requests.is_empty() {
            return Err(LedgerError::EmptyBatch);
        }
        if requests.len() > BATCH_LEN_MAX {
            return Err(LedgerError::BatchTooLarge {
                max: BATCH_LEN_MAX,
                len: requests.len(),
            });
        }
        let mut seen = HashSet::with_capacity(requests.len());
        for r in &requests {
            if !seen.insert((&r.tenant, &r.key)) {
                return Err(LedgerError::DuplicateKeyInBatch(r.key.clone()));
            }
        }
        Ok(Batch { requests })
    }

    /// The requests, in order.
    #[must_use]
    pub fn requests(&self) -> &[Request] {
        &self.requests
    }

    /// How many requests (at least one).
    #[must_use]
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Always false: a batch holds at least one request.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// The distinct tenants the batch touches, in ascending order (the order in which a
    /// store locks them).
    #[must_use]
    pub fn tenants(&self) -> Vec<&TenantId> {
        let mut tenants: Vec<&TenantId> = self.requests.iter().map(|r| &r.tenant).collect();
        tenants.sort_unstable();
        tenants.dedup();
        tenants
    }

    /// The requests, unwrapped.
    #[must_use]
    pub fn into_requests(self) -> Vec<Request> {
        self.requests
    }
}

impl TryFrom<Vec<Request>> for Batch {
    type Error = LedgerError;

    fn try_from(requests: Vec<Request>) -> Result<Self, LedgerError> {
        Batch::new(requests)
    }
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Batch::new(Vec::<Request>::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl<'a> IntoIterator for &'a Batch {
    type Item = &'a Request;
    type IntoIter = std::slice::Iter<'a, Request>;

    fn into_iter(self) -> Self::IntoIter {
        self.requests.iter()
    }
}
