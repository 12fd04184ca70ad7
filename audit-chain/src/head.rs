//! A snapshot of the log's state (Merkle frontier and stream heads) for cheap restarts.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::AuditError;
use crate::chain::StreamHead;
use crate::entry::{Reader, STREAM_LEN_MAX};
use crate::merkle::MerkleFrontier;

const MAGIC: &[u8; 8] = b"ACHNHEAD";

/// What a writer needs to continue a log without replaying it: the O(log n) Merkle
/// frontier and the head of every stream, as of [`size`](Self::size) entries.
///
/// The writer stores one with every checkpoint (see [`AuditSink::store_head`]); a writer
/// opened with `retain_proofs(false)` starts from it and replays only the entries after it.
///
/// ```
/// use audit_chain::{LogHead, StreamHead};
/// use audit_chain::merkle::{MerkleFrontier, leaf_hash};
/// let mut head = LogHead::default();
/// head.frontier.push(leaf_hash(b"x"));
/// head.streams.insert("t".into(), StreamHead { next_seq: 1, last_hash: [7; 32] });
/// assert_eq!(LogHead::from_bytes(&head.to_bytes())?, head);
/// assert!(LogHead::from_bytes(b"garbage").is_err());
/// # Ok::<(), audit_chain::AuditError>(())
/// ```
///
/// [`AuditSink::store_head`]: crate::AuditSink::store_head
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogHead {
    /// Merkle frontier over the first `size` entries.
    pub frontier: MerkleFrontier,
    /// Head of every stream that has entries.
    pub streams: BTreeMap<String, StreamHead>,
}

impl LogHead {
    /// Number of entries the snapshot covers.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// `ACHNHEAD ‖ u32 frontier length ‖ frontier ‖ u64 stream count ‖ (u32 length ‖ stream ‖
    /// u64 next seq ‖ last hash)* ‖ SHA-256 of everything before`.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let frontier = self.frontier.to_bytes();
        let mut v = Vec::with_capacity(64 + frontier.len() + self.streams.len() * 80);
        v.extend_from_slice(MAGIC);
        v.extend_from_slice(
            &u32::try_from(frontier.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        v.extend_from_slice(&frontier);
        v.extend_from_slice(&(self.streams.len() as u64).to_be_bytes());
        for (stream, head) in &self.streams {
            v.extend_from_slice(
                &u32::try_from(stream.len())
                    .unwrap_or(u32::MAX)
                    .to_be_bytes(),
            );
            v.extend_from_slice(stream.as_bytes());
            v.extend_from_slice(&head.next_seq.to_be_bytes());
            v.extend_from_slice(&head.last_hash);
        }
        let check = Sha256::digest(&v);
        v.extend_from_slice(&check);
        v
    }

    /// Parses [`to_bytes`](Self::to_bytes) output.
    ///
    /// # Errors
    /// [`AuditError::Decode`] on a bad checksum, truncation or malformed fields.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AuditError> {
        let bad = |m: &str| AuditError::decode("log head", m);
        if bytes.len() < MAGIC.len() + 32 || &bytes[..8] != MAGIC {
            return Err(bad("not a log head"));
        }
        let (body, check) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body)[..] != check[..] {
            return Err(bad("checksum mismatch"));
        }
        let mut r = Reader {
            buf: body,
            pos: MAGIC.len(),
        };
        let flen = r.u32()? as usize;
        let frontier = MerkleFrontier::from_bytes(r.take(flen)?)?;
        let count = r.u64()?;
        let mut streams = BTreeMap::new();
        for _ in 0..count {
            let len = r.u32()? as usize;
            if len > STREAM_LEN_MAX {
                return Err(bad("stream id too long"));
            }
            let stream = String::from_utf8(r.take(len)?.to_vec())
                .map_err(|_| bad("stream id is not UTF-8"))?;
            let next_seq = r.u64()?;
            let last_hash = r.array()?;
            streams.insert(
                stream,
                StreamHead {
                    next_seq,
                    last_hash,
                },
            );
        }
        r.finish()?;
        Ok(LogHead { frontier, streams })
    }
}
