//! The crate's one error type.

use std::sync::Arc;

/// Everything that can go wrong in `audit-chain`.
///
/// Domain outcomes (a bad entry, an unknown key, an invalid proof, an out-of-order entry) are
/// kept apart from storage failures ([`AuditError::Io`], [`AuditError::Corrupt`]). Only
/// [`AuditError::is_retryable`] errors are worth retrying unchanged.
///
/// The type is `Clone` so that one storage failure can be reported to every append waiting
/// on the same batch.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// An entry field is out of bounds (too long, too many metadata pairs, empty stream).
    /// Fix the entry; nothing was sealed or written.
    #[error("invalid entry: {field} {reason}")]
    InvalidEntry {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value (writer, sink, masking policy, signer name) was rejected.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A key was malformed (wrong length, bad hex, duplicate id).
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// No key with this id is in the keyring.
    #[error("unknown HMAC key id {0}")]
    UnknownKey(u32),
    /// Bytes could not be decoded (truncated, garbage, unknown version, limits exceeded).
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// A Merkle inclusion or consistency proof did not verify, or was requested for
    /// indices/sizes outside the tree.
    #[error("invalid proof: {0}")]
    InvalidProof(String),
    /// A checkpoint note is malformed, signed by another key, or names another log.
    #[error("invalid checkpoint: {0}")]
    InvalidCheckpoint(String),
    /// A sealed entry does not extend its stream's head (sealed twice, submitted out of
    /// order, or its predecessor failed to be written). Submit entries of one stream in the
    /// order they were sealed.
    #[error(
        "stream {stream:?}: entry seq {got} does not extend the head (expected seq {expected})"
    )]
    OutOfOrder {
        /// The stream.
        stream: String,
        /// The sequence number the log expected next.
        expected: u64,
        /// The sequence number received.
        got: u64,
    },
    /// The writer's buffer is full; retry later or use the awaiting `enqueue`.
    #[error("audit writer buffer full ({capacity} entries)")]
    Backpressure {
        /// The configured buffer bound.
        capacity: usize,
    },
    /// The writer was closed (or its task stopped); nothing more can be appended.
    #[error("audit writer is closed")]
    Closed,
    /// Stored data is damaged in a way recovery must not repair silently.
    #[error("corrupt log at {location}: {reason}")]
    Corrupt {
        /// File and byte offset (or record index) of the damage.
        location: String,
        /// What was found.
        reason: String,
    },
    /// An I/O operation failed. The batch it belonged to is not durable.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: Arc<std::io::Error>,
    },
}

impl AuditError {
    /// True when the same call may succeed if retried later (a full buffer, an I/O failure).
    ///
    /// ```
    /// use audit_chain::AuditError;
    /// assert!(AuditError::Backpressure { capacity: 8 }.is_retryable());
    /// assert!(!AuditError::UnknownKey(3).is_retryable());
    /// ```
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            AuditError::Backpressure { .. } | AuditError::Io { .. }
        )
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        AuditError::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn decode(what: &'static str, reason: impl Into<String>) -> Self {
        AuditError::Decode {
            what,
            reason: reason.into(),
        }
    }
}
