//! [`AuditLog`]: the entry-level front end over an [`AuditWriter`] (feature `tokio`): it
//! seals entries per stream and writes them through the writer.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};

use crate::chain::StreamChain;
use crate::entry::AuditEntry;
use crate::trail::{Appended, AuditTrail};
use crate::{AuditError, AuditWriter, HmacKey, Keyring, MaskingPolicy};

/// Entry-level front end: one [`StreamChain`] per stream, sealed with a shared keyring and
/// masking policy, written through an [`AuditWriter`].
///
/// Appends to one stream are serialised (each waits for durability while holding its
/// stream's lock, so a failed write can be rolled back); appends to different streams run
/// in parallel and share group commits.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use audit_chain::*;
/// use metered_clock::{ManualClock, Timestamp};
///
/// let sink = Arc::new(MemorySink::new());
/// let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(1_700_000_000_000)));
/// let writer = AuditWriter::open(sink.clone(), WriterConfig::builder("example/audit").build()?, clock, None).await?;
/// let keyring = Keyring::new(HmacKey::new(1, [5u8; 32])?);
/// let log = AuditLog::new(writer.clone(), keyring.clone(), MaskingPolicy::standard());
///
/// let at = Timestamp::from_unix_millis(1_700_000_000_000);
/// let a = log.record(AuditEntry::new("canary", "rollout", "promote", at).with_metadata("step", "2")).await?;
/// assert_eq!((a.index, a.seq), (Some(0), 0));
///
/// let cp = writer.flush().await?;
/// assert!(verify_sink(sink.as_ref(), &keyring, Some(&cp)).await?.is_intact());
/// # Ok::<(), AuditError>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct AuditLog {
    writer: AuditWriter,
    keyring: RwLock<Arc<Keyring>>,
    policy: Arc<MaskingPolicy>,
    streams: Mutex<HashMap<String, Arc<tokio::sync::Mutex<StreamChain>>>>,
}

impl AuditLog {
    /// A log front end writing through `writer`.
    #[must_use]
    pub fn new(writer: AuditWriter, keyring: Keyring, policy: MaskingPolicy) -> Self {
        AuditLog {
            writer,
            keyring: RwLock::new(Arc::new(keyring)),
            policy: Arc::new(policy),
            streams: Mutex::new(HashMap::new()),
        }
    }

    /// The writer underneath (for proofs, checkpoints, flush and close).
    #[must_use]
    pub fn writer(&self) -> &AuditWriter {
        &self.writer
    }

    /// Makes `key` the active sealing key; older keys stay for verification.
    ///
    /// # Errors
    /// [`AuditError::InvalidKey`] if its id is already in the keyring (nothing changes).
    pub fn rotate_key(&self, key: HmacKey) -> Result<(), AuditError> {
        let mut guard = self.keyring.write();
        let mut ring = Keyring::clone(&guard);
        ring.rotate(key)?;
        *guard = Arc::new(ring);
        Ok(())
    }

    /// A copy of the current keyring.
    #[must_use]
    pub fn keyring(&self) -> Arc<Keyring> {
        Arc::clone(&self.keyring.read())
    }

    fn chain(&self, stream: &str) -> Arc<tokio::sync::Mutex<StreamChain>> {
        let mut streams = self.streams.lock();
        if let Some(c) = streams.get(stream) {
            return Arc::clone(c);
        }
        let chain = StreamChain::resume(stream, self.writer.stream_head(stream));
        let c = Arc::new(tokio::sync::Mutex::new(chain));
        streams.insert(stream.to_owned(), Arc::clone(&c));
        c
    }
}

#[async_trait]
impl AuditTrail for AuditLog {
    async fn record(&self, entry: AuditEntry) -> Result<Appended, AuditError> {
        entry.validate()?;
        let chain = self.chain(&entry.stream);
        let mut chain = chain.lock().await;
        let before = chain.clone();
        let keyring = self.keyring();
        let sealed = chain.seal(&keyring, &self.policy, entry)?;
        let (seq, entry_hash) = (sealed.seq, sealed.entry_hash);
        match self.writer.append(sealed).await {
            Ok(index) => Ok(Appended {
                index: Some(index),
                seq,
                entry_hash,
            }),
            Err(e) => {
                *chain = before;
                Err(e)
            }
        }
    }
}
