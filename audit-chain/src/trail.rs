//! [`AuditTrail`]: what components write their trail to (the writer-backed implementation,
//! `AuditLog`, is in `audit_log.rs`, feature `tokio`).

use async_trait::async_trait;

use crate::AuditError;
use crate::entry::{AuditEntry, Hash};

/// Where an appended entry ended up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Log index (Merkle leaf index): `Some` once the entry is in the log (`AuditLog`
    /// waits for that), `None` when it is durably queued for a sequencer to integrate (a
    /// database trail such as `credits_postgres::PgAuditTrail`).
    pub index: Option<u64>,
    /// Sequence number in its stream.
    pub seq: u64,
    /// Entry hash.
    pub entry_hash: Hash,
}

/// Anything that records [`AuditEntry`]s durably; what components such as rollouts write
/// their decision trail to. `AuditLog` is the implementation.
#[async_trait]
pub trait AuditTrail: Send + Sync {
    /// Masks, seals and durably appends `entry` to its stream.
    async fn record(&self, entry: AuditEntry) -> Result<Appended, AuditError>;
}
