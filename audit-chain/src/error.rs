//! The crate's one error type.

use std::sync::Arc;

/// Everything that can go wrong in `audit-chain`.
///
/// Domain outcomes (a bad entry, an unknown key, an invalid proof, an out-of-order entry) are
/// kept apart from storage failures ([`AuditError::Io`], [`AuditError::Corrupt`],
/// [`AuditError::Truncated`]). Only
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
    /// The log holds fewer records than a durable record of it says were written: the
    /// sink's durable size (written after every fsynced batch), the stored [`LogHead`] or
    /// the stored checkpoint. Acknowledged entries are missing (a truncated or replaced
    /// segment, a restored old backup, the wrong directory). Nothing was changed and nothing
    /// will be written: restore the missing segments (from a replica or backup) and open
    /// again. Not retryable.
    ///
    /// [`LogHead`]: crate::LogHead
    #[error("log truncated: it holds {found} records but its {recorded_by} records {recorded}")]
    Truncated {
        /// Records found in the log.
        found: u64,
        /// Records the durable record says the log held.
        recorded: u64,
        /// Which record: `"durable size"`, `"log head"` or `"checkpoint"`.
        recorded_by: &'static str,
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

    /// A stable, machine-readable name for the variant, in snake_case: log it, count it,
    /// put it in an API response. Codes never change once released and are never reused;
    /// a new variant gets a new code. The message ([`Display`](std::fmt::Display)) may
    /// change; the code does not.
    ///
    /// | variant | code |
    /// |---|---|
    /// | [`InvalidEntry`](Self::InvalidEntry) | `invalid_entry` |
    /// | [`InvalidConfig`](Self::InvalidConfig) | `invalid_config` |
    /// | [`InvalidKey`](Self::InvalidKey) | `invalid_key` |
    /// | [`UnknownKey`](Self::UnknownKey) | `unknown_key` |
    /// | [`Decode`](Self::Decode) | `decode` |
    /// | [`InvalidProof`](Self::InvalidProof) | `invalid_proof` |
    /// | [`InvalidCheckpoint`](Self::InvalidCheckpoint) | `invalid_checkpoint` |
    /// | [`OutOfOrder`](Self::OutOfOrder) | `out_of_order` |
    /// | [`Backpressure`](Self::Backpressure) | `backpressure` |
    /// | [`Closed`](Self::Closed) | `closed` |
    /// | [`Corrupt`](Self::Corrupt) | `corrupt` |
    /// | [`Io`](Self::Io) | `io` |
    /// | [`Truncated`](Self::Truncated) | `truncated` |
    ///
    /// ```
    /// use audit_chain::AuditError;
    /// assert_eq!(AuditError::Backpressure { capacity: 8 }.code(), "backpressure");
    /// assert_eq!(AuditError::UnknownKey(3).code(), "unknown_key");
    /// ```
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            AuditError::InvalidEntry { .. } => "invalid_entry",
            AuditError::InvalidConfig(_) => "invalid_config",
            AuditError::InvalidKey(_) => "invalid_key",
            AuditError::UnknownKey(_) => "unknown_key",
            AuditError::Decode { .. } => "decode",
            AuditError::InvalidProof(_) => "invalid_proof",
            AuditError::InvalidCheckpoint(_) => "invalid_checkpoint",
            AuditError::OutOfOrder { .. } => "out_of_order",
            AuditError::Backpressure { .. } => "backpressure",
            AuditError::Closed => "closed",
            AuditError::Corrupt { .. } => "corrupt",
            AuditError::Io { .. } => "io",
            AuditError::Truncated { .. } => "truncated",
        }
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::AuditError;

    /// One value of every variant with its pinned code. The exhaustive match in `ordinal`
    /// stops compiling when a variant is added, until it is listed here too.
    fn every_variant() -> Vec<(AuditError, &'static str)> {
        vec![
            (
                AuditError::InvalidEntry {
                    field: "stream",
                    reason: "is empty".into(),
                },
                "invalid_entry",
            ),
            (AuditError::InvalidConfig("x".into()), "invalid_config"),
            (AuditError::InvalidKey("x".into()), "invalid_key"),
            (AuditError::UnknownKey(7), "unknown_key"),
            (AuditError::decode("record", "truncated"), "decode"),
            (AuditError::InvalidProof("x".into()), "invalid_proof"),
            (
                AuditError::InvalidCheckpoint("x".into()),
                "invalid_checkpoint",
            ),
            (
                AuditError::OutOfOrder {
                    stream: "t".into(),
                    expected: 1,
                    got: 2,
                },
                "out_of_order",
            ),
            (AuditError::Backpressure { capacity: 8 }, "backpressure"),
            (AuditError::Closed, "closed"),
            (
                AuditError::Corrupt {
                    location: "00000000000000000000.seg:16".into(),
                    reason: "bad check".into(),
                },
                "corrupt",
            ),
            (
                AuditError::io("writing", std::io::Error::other("disk full")),
                "io",
            ),
            (
                AuditError::Truncated {
                    found: 1_000,
                    recorded: 3_418,
                    recorded_by: "durable size",
                },
                "truncated",
            ),
        ]
    }

    fn ordinal(e: &AuditError) -> usize {
        match e {
            AuditError::InvalidEntry { .. } => 0,
            AuditError::InvalidConfig(_) => 1,
            AuditError::InvalidKey(_) => 2,
            AuditError::UnknownKey(_) => 3,
            AuditError::Decode { .. } => 4,
            AuditError::InvalidProof(_) => 5,
            AuditError::InvalidCheckpoint(_) => 6,
            AuditError::OutOfOrder { .. } => 7,
            AuditError::Backpressure { .. } => 8,
            AuditError::Closed => 9,
            AuditError::Corrupt { .. } => 10,
            AuditError::Io { .. } => 11,
            AuditError::Truncated { .. } => 12,
        }
    }
    const VARIANTS: usize = 13;

    #[test]
    fn every_variant_has_its_pinned_code_and_codes_are_unique() {
        let table = every_variant();
        let listed: HashSet<usize> = table.iter().map(|(e, _)| ordinal(e)).collect();
        assert_eq!(listed, (0..VARIANTS).collect(), "list every variant once");
        assert_eq!(table.len(), VARIANTS);
        let mut seen = HashSet::new();
        for (error, code) in &table {
            assert_eq!(error.code(), *code, "{error:?}");
            assert!(seen.insert(*code), "code {code} used twice");
            assert!(
                !code.is_empty()
                    && code
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{code} is not snake_case"
            );
        }
    }
}
