//! A tamper-evident audit log that catches truncation, with proofs.
//!
//! ```
//! use audit_chain::*;
//! use metered_clock::Timestamp;
//!
//! // Seal entries in a per-tenant chain: masked, hashed, linked and MACed. No I/O.
//! let keyring = Keyring::new(HmacKey::new(1, [0x11; 32])?);
//! let policy = MaskingPolicy::standard();
//! let mut chain = StreamChain::new("tenant-7");
//! let at = Timestamp::from_unix_millis(1_700_000_000_000);
//! let mut tree = merkle::MerkleTree::new();
//! let mut log = Vec::new();
//! for (i, amount) in [500u64, 120, 80].into_iter().enumerate() {
//!     let entry = AuditEntry::new("tenant-7", "balance", "debit", at)
//!         .with_amount(amount)
//!         .with_metadata("card_number", "4111 1111 1111 1111");
//!     let sealed = chain.seal(&keyring, &policy, entry)?;
//!     assert_eq!(sealed.entry().metadata["card_number"], "411111******1111");
//!     tree.push(sealed.leaf_hash());
//!     log.push(LogRecord::new(i as u64, sealed));
//! }
//!
//! // A checkpoint kept elsewhere (signed with Ed25519 in production) pins size and root.
//! let checkpoint = Checkpoint { origin: "example/audit".into(), size: 3, root: tree.root() };
//! assert!(verify_records(&keyring, &log, Some(&checkpoint)).is_intact());
//!
//! // Deleting the newest entry leaves a chain that still links, but not the checkpoint.
//! log.pop();
//! let report = verify_records(&keyring, &log, Some(&checkpoint));
//! assert_eq!(report.failure.unwrap().check, IntegrityCheck::Truncated);
//!
//! // One entry is proven in O(log n) hashes.
//! let proof = tree.inclusion_proof(1, 3)?;
//! merkle::verify_inclusion(&log[1].entry.leaf_hash(), 1, 3, &proof, &checkpoint.root)?;
//! # Ok::<(), AuditError>(())
//! ```
//!
//! # Overview
//!
//! * **Entries** ([`AuditEntry`]) carry tenant (stream), event type, action, amount,
//!   balances, transaction id, success flag, free-form metadata and a timestamp. Sealing
//!   ([`StreamChain::seal`]) masks PII with a [`MaskingPolicy`], adds the stream sequence
//!   number and the previous entry's hash, and computes the entry hash (SHA-256 over a
//!   canonical, versioned, length-prefixed encoding) and an HMAC-SHA256 with the active key
//!   of a [`Keyring`]. The result is a [`SealedEntry`].
//! * **Streams** are per tenant: sealing is synchronous and cheap, so it runs inside the
//!   caller's per-tenant critical section and tenants never wait on each other.
//! * **The log**: an [`AuditWriter`] sequences sealed entries from every stream into one
//!   log (consecutive indices), writes them in batches to an [`AuditSink`]
//!   ([`MemorySink`], [`FileSink`]), acknowledges each entry once durable, and keeps an
//!   RFC 9162 Merkle tree ([`merkle`]) over the log. It emits [`Checkpoint`]s (size + root),
//!   signed by a [`NoteSigner`] in the C2SP signed-note format.
//! * **Proofs**: inclusion (one entry, O(log n) hashes) and consistency (an old checkpoint
//!   is a prefix of a new one), verified by [`merkle::verify_inclusion`] and
//!   [`merkle::verify_consistency`].
//! * **Verification**: [`ChainVerifier`], [`verify_records`], [`verify_sink`] and
//!   [`verify_range`] report the first bad entry and the [`IntegrityCheck`] that failed.
//! * **Entry-level front end**: [`AuditLog`] implements [`AuditTrail`] (`record(entry)`)
//!   for components that just want to write a trail.
//! * **Restarts**: with each checkpoint the writer stores a [`LogHead`] (frontier and
//!   stream heads); a writer that does not retain the full tree restarts from it.
//! * **Offline**: [`verify_dir`] checks a file-sink directory without modifying it; the
//!   `audit-verify` binary wraps it and prints inclusion proofs.
//!
//! # What it does not do
//!
//! * It does not keep your trusted checkpoint or the checkpoint public key: truncation and
//!   rewriting are only detectable against a checkpoint stored where the log's writer
//!   cannot change it. See `docs/audit-chain.md` for the threat model.
//! * HMACs prove nothing to someone who holds the HMAC key (they can forge); signed
//!   checkpoints and the Merkle root are what third parties should check.
//! * No witness cosignatures, no log server, no tiles API.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "tokio")]
mod audit_log;
mod chain;
mod checkpoint;
mod entry;
mod error;
mod file;
mod head;
mod hex;
mod keyring;
mod mask;
#[cfg(feature = "tokio")]
mod memory_queue;
pub mod merkle;
#[cfg(feature = "postgres")]
pub mod pg;
mod queue;
mod sequencer;
mod sink;
#[cfg(feature = "testing")]
pub mod testing;
mod trail;
mod verify;
#[cfg(feature = "tokio")]
mod writer;

/// The guide (`docs/audit-chain.md`): every example in it is a doc test.
#[cfg(doctest)]
#[doc = include_str!("../../docs/audit-chain.md")]
pub mod guide {}

#[cfg(feature = "tokio")]
pub use audit_log::AuditLog;
pub use chain::{StreamChain, StreamHead};
pub use checkpoint::{Checkpoint, NoteSigner, NoteVerifier, SignedCheckpoint};
pub use entry::{
    AuditEntry, EntryView, FORMAT_VERSION, Hash, LogRecord, METADATA_KEY_LEN_MAX,
    METADATA_PAIRS_MAX, METADATA_VALUE_LEN_MAX, STREAM_LEN_MAX, SealedEntry, TEXT_LEN_MAX,
};
pub use error::AuditError;
pub use file::{
    DirVerification, FRAME_RECORD_MAX, FileSink, FileSinkOptions, Recovery, ScannedLog, scan_dir,
    scan_dir_with, verify_dir,
};
pub use head::LogHead;
pub use keyring::{HmacKey, KEY_LEN_MAX, KEY_LEN_MIN, Keyring};
pub use mask::{Mask, MaskingPolicy, MaskingPolicyBuilder, REDACTED};
#[cfg(feature = "tokio")]
pub use memory_queue::{IDLE_POLL, MemoryAuditQueue, WAKE_AT};
pub use queue::AuditQueue;
pub use sequencer::{Admission, SequencedBatch, Sequencer, checkpoint_due};
pub use sink::{AuditSink, MemorySink, verify_range, verify_sink};
pub use trail::{Appended, AuditTrail};
pub use verify::{ChainVerifier, Failure, IntegrityCheck, VerifyReport, verify_records};
#[cfg(feature = "tokio")]
pub use writer::{AuditWriter, Receipt, WriterConfig, WriterConfigBuilder};
