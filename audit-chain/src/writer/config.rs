//! The writer's settings: [`WriterConfig`] and its builder.

use std::time::Duration;

use crate::AuditError;

/// Settings of an [`AuditWriter`](super::AuditWriter). Build with [`WriterConfig::builder`].
#[derive(Clone, Debug)]
pub struct WriterConfig {
    pub(super) origin: String,
    pub(super) batch_max: usize,
    pub(super) buffer_max: usize,
    pub(super) linger: Duration,
    pub(super) checkpoint_every_entries: u64,
    pub(super) checkpoint_interval: Duration,
    pub(super) retain_proofs: bool,
}

impl WriterConfig {
    /// Starts a configuration for the log named `origin` (the first line of its
    /// checkpoints; make it unique, e.g. `"billing.example.com/audit"`).
    ///
    /// Defaults: batches of at most 256 entries, a buffer of 16,384 entries, no linger
    /// (entries that arrive while a batch is being written form the next batch), a
    /// checkpoint every 4,096 entries and at least every second while entries arrive.
    ///
    /// ```
    /// use std::time::Duration;
    /// use audit_chain::WriterConfig;
    /// let config = WriterConfig::builder("example.com/audit")
    ///     .batch_max(512)
    ///     .linger(Duration::from_millis(2))
    ///     .build()?;
    /// assert_eq!(config.batch_max(), 512);
    /// assert!(WriterConfig::builder("x").batch_max(0).build().is_err());
    /// # Ok::<(), audit_chain::AuditError>(())
    /// ```
    pub fn builder(origin: impl Into<String>) -> WriterConfigBuilder {
        WriterConfigBuilder {
            config: WriterConfig {
                origin: origin.into(),
                batch_max: 256,
                buffer_max: 16_384,
                linger: Duration::ZERO,
                checkpoint_every_entries: 4096,
                checkpoint_interval: Duration::from_secs(1),
                retain_proofs: true,
            },
        }
    }

    /// The log's origin line.
    #[must_use]
    pub fn origin(&self) -> &str {
        &self.origin
    }
    /// Most entries written per batch.
    #[must_use]
    pub fn batch_max(&self) -> usize {
        self.batch_max
    }
    /// Most entries waiting in the buffer.
    #[must_use]
    pub fn buffer_max(&self) -> usize {
        self.buffer_max
    }
    /// Whether the writer keeps the whole Merkle tree (and so serves proofs).
    #[must_use]
    pub fn retain_proofs(&self) -> bool {
        self.retain_proofs
    }
}

/// Builds a [`WriterConfig`].
#[derive(Debug)]
#[must_use]
pub struct WriterConfigBuilder {
    config: WriterConfig,
}

impl WriterConfigBuilder {
    /// Most entries per batch (one sink write and one fsync each). 1 to 65,536.
    pub fn batch_max(mut self, n: usize) -> Self {
        self.config.batch_max = n;
        self
    }
    /// Most entries buffered before `enqueue` waits and `try_enqueue` fails with
    /// [`AuditError::Backpressure`]. 1 to 16,777,216.
    pub fn buffer_max(mut self, n: usize) -> Self {
        self.config.buffer_max = n;
        self
    }
    /// How long the writer waits for a batch to fill before writing it (the age bound of
    /// group commit). At most 10 s.
    pub fn linger(mut self, d: Duration) -> Self {
        self.config.linger = d;
        self
    }
    /// Emit a checkpoint once this many entries were added since the last one (≥ 1).
    pub fn checkpoint_every_entries(mut self, n: u64) -> Self {
        self.config.checkpoint_every_entries = n;
        self
    }
    /// Emit a checkpoint once this long passed since the last one (checked after each batch).
    pub fn checkpoint_interval(mut self, d: Duration) -> Self {
        self.config.checkpoint_interval = d;
        self
    }
    /// Keep the whole Merkle tree in memory (about 64 bytes per entry) to serve inclusion and
    /// consistency proofs; this is the default. With `false` the writer keeps only the
    /// O(log n) frontier, cannot serve proofs (build them offline from the sink with
    /// [`MerkleTree`](crate::merkle::MerkleTree)), and restarts from the sink's stored
    /// [`LogHead`](crate::LogHead), replaying only the entries written after it.
    pub fn retain_proofs(mut self, retain: bool) -> Self {
        self.config.retain_proofs = retain;
        self
    }

    /// The configuration.
    ///
    /// # Errors
    /// [`AuditError::InvalidConfig`] naming the first setting out of range.
    pub fn build(self) -> Result<WriterConfig, AuditError> {
        let c = self.config;
        let bad = |m: &str| Err(AuditError::InvalidConfig(m.to_owned()));
        if c.origin.is_empty() || c.origin.contains('\n') {
            return bad("origin must be one non-empty line");
        }
        if !(1..=65_536).contains(&c.batch_max) {
            return bad("batch_max must be 1 to 65536");
        }
        if !(1..=16_777_216).contains(&c.buffer_max) {
            return bad("buffer_max must be 1 to 16777216");
        }
        if c.linger > Duration::from_secs(10) {
            return bad("linger must be at most 10 s");
        }
        if c.checkpoint_every_entries == 0 {
            return bad("checkpoint_every_entries must be at least 1");
        }
        Ok(c)
    }
}
