//! The audit log in PostgreSQL: one Merkle log for the ledger's entries and every other
//! stream.
//!
//! * [`PgAuditQueue`]: the committed entries not yet in the log (`audit_pending`). The
//!   ledger fills it in each change's own transaction (with [`LedgerAudit`](crate::LedgerAudit));
//!   [`PgAuditTrail`] fills it for other streams (a canary's trail).
//! * [`PgAuditSink`]: the log itself: `audit_index` gives each entry of `audit_log` its log
//!   index; checkpoints go to `audit_checkpoints`. All three tables are append-only in the
//!   database.
//! * [`AuditSequencer`]: exactly one process at a time integrates the queue into the log,
//!   by holding a session advisory lock; when it dies its connection closes, the lock is
//!   released and another replica takes over from the same queue. No entry is lost,
//!   doubled or skipped on the way.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use audit_chain::{
    Appended, AuditEntry, AuditError, AuditQueue, AuditSink, AuditTrail, AuditWriter, Checkpoint,
    Keyring, LogRecord, MaskingPolicy, NoteSigner, SealedEntry, StreamChain, StreamHead,
    WriterConfig,
};
use deadpool_postgres::ClientWrapper;
use metered_clock::Clock;

use crate::codec::i;
use crate::pool::{Db, TxConn};
use crate::{PgError, PgLedgerStore};

/// Takes the transaction lock that serializes appends to this schema's log.
const APPEND_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtextextended('credits_audit_append:' || current_schema(), 0))";
/// Tries the session lock the sequencer of this schema's log holds while it leads.
const SEQUENCER_LOCK: &str = "SELECT pg_try_advisory_lock(\
     hashtextextended('credits_audit_sequencer:' || current_schema(), 0))";

/// The log's size: one past the largest log index.
const LOG_SIZE: &str = "SELECT coalesce(max(log_index) + 1, 0) FROM audit_index";

/// An [`AuditSink`] over `audit_log` + `audit_index` (the log) and `audit_checkpoints`.
///
/// An append is one transaction: it takes a transaction-scoped advisory lock, checks that
/// the batch starts at the current size and is consecutive, stores the entries that are
/// not stored yet (a queued entry is; one written through an [`AuditWriter`]'s buffer is
/// not), gives each its log index, removes them from `audit_pending` and commits: durable
/// on `Ok`, absent on error. An entry already stored must be byte-identical (same entry
/// hash) or the append fails. [`read`](AuditSink::read) and [`size`](AuditSink::size)
/// cover every entry with a log index, the ledger's included.
#[derive(Clone, Debug)]
pub struct PgAuditSink {
    db: Arc<Db>,
}

/// The queue of committed entries not yet in the log (`audit_pending`), oldest first.
#[derive(Clone, Debug)]
pub struct PgAuditQueue {
    db: Arc<Db>,
}

impl PgLedgerStore {
    /// The log's sink, sharing this store's pool.
    #[must_use]
    pub fn audit_sink(&self) -> PgAuditSink {
        PgAuditSink {
            db: Arc::clone(&self.db),
        }
    }

    /// The queue of committed entries not yet in the log.
    #[must_use]
    pub fn audit_queue(&self) -> PgAuditQueue {
        PgAuditQueue {
            db: Arc::clone(&self.db),
        }
    }

    /// The sequencer for this database's log (see [`AuditSequencer`]).
    #[must_use]
    pub fn audit_sequencer(
        &self,
        config: WriterConfig,
        clock: Arc<dyn Clock>,
        signer: Option<NoteSigner>,
    ) -> AuditSequencer {
        AuditSequencer {
            db: Arc::clone(&self.db),
            config,
            clock,
            signer,
        }
    }

    /// An [`AuditTrail`] writing other streams (not `ledger/…`) into this database's log.
    #[must_use]
    pub fn audit_trail(&self, keyring: Arc<Keyring>, policy: MaskingPolicy) -> PgAuditTrail {
        PgAuditTrail {
            db: Arc::clone(&self.db),
            keyring,
            policy: Arc::new(policy),
        }
    }
}

fn io(e: PgError) -> AuditError {
    e.into()
}

fn corrupt(reason: impl Into<String>) -> AuditError {
    AuditError::Corrupt {
        location: "audit_log".into(),
        reason: reason.into(),
    }
}

fn index_of(v: i64) -> Result<u64, AuditError> {
    u64::try_from(v).map_err(|_| corrupt("negative log index"))
}

/// The columns of `audit_log` for a batch of sealed entries.
struct Columns {
    stream: Vec<String>,
    seq: Vec<i64>,
    at: Vec<i64>,
    hash: Vec<Vec<u8>>,
    bytes: Vec<Vec<u8>>,
}

impl Columns {
    fn of<'a>(entries: impl ExactSizeIterator<Item = &'a SealedEntry>) -> Result<Self, PgError> {
        let n = entries.len();
        let mut c = Columns {
            stream: Vec::with_capacity(n),
            seq: Vec::with_capacity(n),
            at: Vec::with_capacity(n),
            hash: Vec::with_capacity(n),
            bytes: Vec::with_capacity(n),
        };
        for e in entries {
            let mut b = Vec::with_capacity(256);
            e.encode(&mut b);
            c.stream.push(e.stream().to_owned());
            c.seq.push(i(e.seq(), "stream sequence")?);
            c.at.push(i(e.entry().timestamp.as_unix_millis(), "time")?);
            c.hash.push(e.entry_hash().to_vec());
            c.bytes.push(b);
        }
        Ok(c)
    }
}

impl PgAuditSink {
    async fn try_append(&self, records: &[LogRecord]) -> Result<Result<(), AuditError>, PgError> {
        let cols = Columns::of(records.iter().map(|r| &*r.entry))?;
        let index: Vec<i64> = records
            .iter()
            .map(|r| i(r.index, "log index"))
            .collect::<Result<_, _>>()?;
        let conn = TxConn::new(self.db.get().await?);
        let c = conn.client();
        // Round trip 1: the transaction and the append lock.
        c.batch_execute(&format!("BEGIN; {APPEND_LOCK}")).await?;
        // Round trip 2 (pipelined): the log's size, and which entries are stored already
        // (queued ones are: only their index is written; their bytes are not sent again).
        let keys: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&cols.stream, &cols.seq];
        let size = c.query_one(LOG_SIZE, &[]);
        let stored = c.query(
            "SELECT a.stream, a.stream_seq, a.entry_hash FROM audit_log a \
             JOIN unnest($1::text[], $2::bigint[]) AS u (stream, stream_seq) \
               USING (stream, stream_seq)",
            &keys,
        );
        let (size, stored) = futures::future::try_join(size, stored).await?;
        let size: i64 = size.get(0);
        for (k, r) in records.iter().enumerate() {
            let want = u64::try_from(size).unwrap_or(0) + k as u64;
            if r.index != want {
                conn.rollback().await;
                return Ok(Err(AuditError::InvalidEntry {
                    field: "index",
                    reason: format!("record has index {}, sink expects {want}", r.index),
                }));
            }
        }
        let mut known: std::collections::HashMap<(&str, i64), &[u8]> = stored
            .iter()
            .map(|row| ((row.get(0), row.get(1)), row.get(2)))
            .collect();
        let mut missing = Vec::new();
        for (k, r) in records.iter().enumerate() {
            match known.remove(&(cols.stream[k].as_str(), cols.seq[k])) {
                None => missing.push(k),
                // A different entry under the same stream and sequence number.
                Some(hash) if hash != r.entry.entry_hash().as_slice() => {
                    conn.rollback().await;
                    return Ok(Err(corrupt(format!(
                        "record {} ({} #{}) differs from the entry stored under its stream \
                         and sequence number",
                        r.index,
                        r.entry.stream(),
                        r.entry.seq()
                    ))));
                }
                Some(_) => {}
            }
        }
        // Round trip 3 (pipelined): the entries not stored yet, every index, the queue, and
        // COMMIT. When every entry was stored already (committed and queued by its change,
        // the ledger's case), this transaction writes only derived data: their log indices
        // and their removal from the queue. It then commits without waiting for its WAL
        // flush: if the server loses it, the entries are still queued and are integrated
        // again, and no checkpoint can cover it before it is durable,
        // because a checkpoint's own (synchronous) commit flushes all the WAL before it.
        let derived_only = async {
            if missing.is_empty() {
                c.batch_execute("SET LOCAL synchronous_commit = off")
                    .await?;
            }
            Ok(0)
        };
        let pick = |v: &Vec<Vec<u8>>| missing.iter().map(|&k| v[k].clone()).collect::<Vec<_>>();
        let new_stream: Vec<&str> = missing.iter().map(|&k| cols.stream[k].as_str()).collect();
        let new_seq: Vec<i64> = missing.iter().map(|&k| cols.seq[k]).collect();
        let new_at: Vec<i64> = missing.iter().map(|&k| cols.at[k]).collect();
        let (new_hash, new_bytes) = (pick(&cols.hash), pick(&cols.bytes));
        let insert_log = async {
            if missing.is_empty() {
                return Ok(0);
            }
            c.execute(
                "INSERT INTO audit_log (stream, stream_seq, at, entry_hash, record) \
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bytea[], \
                                      $5::bytea[])",
                &[&new_stream, &new_seq, &new_at, &new_hash, &new_bytes],
            )
            .await
        };
        let indexed: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
            [&index, &cols.stream, &cols.seq];
        let insert_index = c.execute(
            "INSERT INTO audit_index (log_index, stream, stream_seq) \
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[])",
            &indexed,
        );
        let dequeue = c.execute(
            "DELETE FROM audit_pending p \
             USING unnest($1::text[], $2::bigint[]) AS u (stream, stream_seq) \
             WHERE p.stream = u.stream AND p.stream_seq = u.stream_seq",
            &keys,
        );
        let commit = async { c.batch_execute("COMMIT").await.map(|()| 0) };
        futures::future::try_join5(derived_only, insert_log, insert_index, dequeue, commit).await?;
        conn.finish();
        Ok(Ok(()))
    }
}

#[async_trait]
impl AuditSink for PgAuditSink {
    async fn append(&self, records: &[LogRecord]) -> Result<(), AuditError> {
        if records.is_empty() {
            return Ok(());
        }
        self.try_append(records).await.map_err(io)?
    }

    async fn read(&self, start: u64, limit: usize) -> Result<Vec<LogRecord>, AuditError> {
        let start = i64::try_from(start).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .db
            .run("audit_read", |conn| async move {
                let st = conn
                    .prepare_cached(
                        "SELECT x.log_index, a.record FROM audit_index x \
                         JOIN audit_log a USING (stream, stream_seq) \
                         WHERE x.log_index >= $1 ORDER BY x.log_index LIMIT $2",
                    )
                    .await?;
                Ok(conn.query(&st, &[&start, &limit]).await?)
            })
            .await
            .map_err(io)?;
        rows.iter()
            .map(|r| {
                Ok(LogRecord::new(
                    index_of(r.get(0))?,
                    SealedEntry::decode(r.get::<_, &[u8]>(1))?,
                ))
            })
            .collect()
    }

    async fn size(&self) -> Result<u64, AuditError> {
        let rows = self
            .db
            .run("audit_size", |conn| async move {
                Ok(conn.query(LOG_SIZE, &[]).await?)
            })
            .await
            .map_err(io)?;
        rows.first().map_or(Ok(0), |r| index_of(r.get(0)))
    }

    async fn store_checkpoint(&self, note: &str) -> Result<(), AuditError> {
        self.db
            .run("audit_checkpoint", |conn| async move {
                conn.execute("INSERT INTO audit_checkpoints (note) VALUES ($1)", &[&note])
                    .await?;
                Ok(())
            })
            .await
            .map_err(io)
    }

    async fn load_checkpoint(&self) -> Result<Option<String>, AuditError> {
        let rows = self
            .db
            .run("audit_checkpoint", |conn| async move {
                Ok(conn
                    .query(
                        "SELECT note FROM audit_checkpoints ORDER BY id DESC LIMIT 1",
                        &[],
                    )
                    .await?)
            })
            .await
            .map_err(io)?;
        Ok(rows.first().map(|r| r.get(0)))
    }
}

impl PgAuditSink {
    /// Every checkpoint stored, oldest first (to export them, or to check that each later
    /// one extends the earlier ones with consistency proofs).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn checkpoints(&self) -> Result<Vec<String>, PgError> {
        let rows = self
            .db
            .run("audit_checkpoints", |conn| async move {
                Ok(conn
                    .query("SELECT note FROM audit_checkpoints ORDER BY id", &[])
                    .await?)
            })
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}

#[async_trait]
impl AuditQueue for PgAuditQueue {
    async fn peek(&self, limit: usize) -> Result<Vec<Arc<SealedEntry>>, AuditError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .db
            .run("audit_pending", |conn| async move {
                let st = conn
                    .prepare_cached(
                        "SELECT a.record FROM audit_pending p \
                         JOIN audit_log a USING (stream, stream_seq) \
                         ORDER BY p.id LIMIT $1",
                    )
                    .await?;
                Ok(conn.query(&st, &[&limit]).await?)
            })
            .await
            .map_err(io)?;
        rows.iter()
            .map(|r| SealedEntry::decode(r.get::<_, &[u8]>(0)).map(Arc::new))
            .collect()
    }

    async fn remove(&self, entries: &[Arc<SealedEntry>]) -> Result<(), AuditError> {
        if entries.is_empty() {
            return Ok(());
        }
        let stream: Vec<&str> = entries.iter().map(|e| e.stream()).collect();
        let seq: Vec<i64> = entries
            .iter()
            .map(|e| i(e.seq(), "stream sequence"))
            .collect::<Result<_, _>>()
            .map_err(io)?;
        let (stream, seq) = (&stream, &seq);
        self.db
            .run("audit_dequeue", |conn| async move {
                conn.execute(
                    "DELETE FROM audit_pending p \
                     USING unnest($1::text[], $2::bigint[]) AS u (stream, stream_seq) \
                     WHERE p.stream = u.stream AND p.stream_seq = u.stream_seq",
                    &[stream, seq],
                )
                .await?;
                Ok(())
            })
            .await
            .map_err(io)
    }

    async fn backlog(&self) -> Result<u64, AuditError> {
        let rows = self
            .db
            .run("audit_backlog", |conn| async move {
                Ok(conn
                    .query("SELECT count(*) FROM audit_pending", &[])
                    .await?)
            })
            .await
            .map_err(io)?;
        Ok(rows
            .first()
            .map_or(0, |r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0)))
    }
}

/// Integrates the database's queue into its log, one process at a time.
///
/// Every replica may run one ([`run`](Self::run)); the one holding the session advisory
/// lock leads: it opens an [`AuditWriter`] over [`PgAuditSink`] and [`PgAuditQueue`]
/// (replaying the log to rebuild the tree) and integrates until it stops or loses its
/// lock connection. The others wait and try again. When the leader dies, PostgreSQL
/// releases its lock with its connection and the next replica to try takes over, from the
/// same queue: entries committed meanwhile wait there.
#[derive(Clone, Debug)]
pub struct AuditSequencer {
    db: Arc<Db>,
    config: WriterConfig,
    clock: Arc<dyn Clock>,
    signer: Option<NoteSigner>,
}

/// Leadership of the log: the writer integrating the queue, and the connection holding
/// the lock. Dropping it closes the connection (and so releases the lock) without a final
/// checkpoint; prefer [`resign`](Self::resign).
#[derive(Debug)]
pub struct Leadership {
    writer: AuditWriter,
    lock: ClientWrapper,
}

impl Leadership {
    /// The writer (flush it for a checkpoint covering everything committed so far).
    #[must_use]
    pub fn writer(&self) -> &AuditWriter {
        &self.writer
    }

    /// Whether the lock connection is still alive (if not, another process may lead).
    pub async fn is_held(&self) -> bool {
        !self.lock.is_closed() && self.lock.simple_query("SELECT 1").await.is_ok()
    }

    /// Integrates what is queued, makes a final checkpoint, and releases the lock.
    ///
    /// # Errors
    /// The writer's error from its final integration or checkpoint (the lock is released
    /// anyway).
    pub async fn resign(self) -> Result<Checkpoint, AuditError> {
        let result = self.writer.close().await;
        drop(self.lock);
        result
    }
}

impl AuditSequencer {
    /// Becomes the leader if no other process is: `None` if one is.
    ///
    /// # Errors
    /// Connection failures; the writer's error if the log cannot be replayed (for example
    /// [`AuditError::Truncated`] when it is shorter than its stored checkpoint).
    pub async fn try_lead(&self) -> Result<Option<Leadership>, PgError> {
        // A connection of its own, outside the pool: the session lock lives as long as it.
        let client = deadpool_postgres::Object::take(self.db.get().await?);
        let got: bool = client.query_one(SEQUENCER_LOCK, &[]).await?.get(0);
        if !got {
            return Ok(None);
        }
        let sink = Arc::new(PgAuditSink {
            db: Arc::clone(&self.db),
        });
        let queue = Arc::new(PgAuditQueue {
            db: Arc::clone(&self.db),
        });
        let writer = AuditWriter::open_with_queue(
            sink,
            queue,
            self.config.clone(),
            Arc::clone(&self.clock),
            self.signer.clone(),
        )
        .await
        .map_err(|e| PgError::Corrupt(format!("opening the audit log: {e}")))?;
        metrics::counter!("credits_audit_sequencer_leaderships_total").increment(1);
        tracing::info!("leading the audit log's sequencer");
        Ok(Some(Leadership {
            writer,
            lock: client,
        }))
    }

    /// Leads whenever it can until `stop` completes: tries every `every`, and while
    /// leading checks the lock connection as often. On `stop` a leader resigns (final
    /// checkpoint). Each leadership's writer is handed to `on_lead` (for a service to
    /// answer proofs from); errors are logged and retried.
    // The sequencer is a driver: waiting between attempts is its job.
    #[allow(clippy::disallowed_methods)]
    pub async fn run(
        &self,
        every: Duration,
        on_lead: impl Fn(Option<AuditWriter>) + Send + Sync,
        stop: impl Future<Output = ()> + Send,
    ) {
        self.run_from(None, every, on_lead, stop).await;
    }

    /// [`run`](Self::run), starting with a leadership already won by
    /// [`try_lead`](Self::try_lead) (`on_lead` is called with its writer first).
    #[allow(clippy::disallowed_methods)]
    pub async fn run_from(
        &self,
        current: Option<Leadership>,
        every: Duration,
        on_lead: impl Fn(Option<AuditWriter>) + Send + Sync,
        stop: impl Future<Output = ()> + Send,
    ) {
        tokio::pin!(stop);
        let mut current = current;
        loop {
            let leadership = match current.take() {
                Some(l) => Ok(Some(l)),
                None => tokio::select! {
                    () = &mut stop => return,
                    r = self.try_lead() => r,
                },
            };
            match leadership {
                Ok(Some(l)) => {
                    on_lead(Some(l.writer().clone()));
                    loop {
                        tokio::select! {
                            () = &mut stop => {
                                on_lead(None);
                                if let Err(e) = l.resign().await {
                                    tracing::warn!(error = %e, "final audit checkpoint failed");
                                }
                                return;
                            }
                            () = tokio::time::sleep(every) => {}
                        }
                        if !l.is_held().await {
                            tracing::warn!("lost the audit sequencer's lock connection");
                            on_lead(None);
                            drop(l);
                            break;
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "could not try to lead the audit log"),
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}

/// An [`AuditTrail`] for streams other than the ledger's (a rollout's trail, an admin
/// action), on any replica: each record is sealed onto its stream's last stored entry under
/// a per-stream transaction lock and queued for the sequencer in the same transaction.
/// [`Appended::index`] is `None`: the entry joins the log when the sequencer integrates it.
#[derive(Clone, Debug)]
pub struct PgAuditTrail {
    db: Arc<Db>,
    keyring: Arc<Keyring>,
    policy: Arc<MaskingPolicy>,
}

impl PgAuditTrail {
    async fn try_record(
        &self,
        entry: &AuditEntry,
    ) -> Result<Result<Appended, AuditError>, PgError> {
        let conn = TxConn::new(self.db.get().await?);
        let c = conn.client();
        c.batch_execute("BEGIN").await?;
        let appended = match seal_in_transaction(c, &self.keyring, &self.policy, entry).await? {
            Ok(a) => a,
            Err(e) => {
                conn.rollback().await;
                return Ok(Err(e));
            }
        };
        c.batch_execute("COMMIT").await?;
        conn.finish();
        Ok(Ok(appended))
    }

    /// The keyring and masking policy this trail seals with.
    #[cfg(feature = "rollouts")]
    pub(crate) fn sealing(&self) -> (Arc<Keyring>, Arc<MaskingPolicy>) {
        (Arc::clone(&self.keyring), Arc::clone(&self.policy))
    }

    /// The pool this trail writes through.
    #[cfg(feature = "rollouts")]
    pub(crate) fn db(&self) -> &Arc<Db> {
        &self.db
    }
}

/// Seals `entry` (of a stream other than the ledger's) onto its stream's last stored entry
/// and queues it for the sequencer, inside the transaction open on `c`: it joins the log if
/// and only if that transaction commits. Takes the per-stream transaction lock first. The
/// inner error is the entry's (nothing was written; roll back).
pub(crate) async fn seal_in_transaction(
    c: &tokio_postgres::Client,
    keyring: &Keyring,
    policy: &MaskingPolicy,
    entry: &AuditEntry,
) -> Result<Result<Appended, AuditError>, PgError> {
    if entry.stream.starts_with("ledger/") {
        return Ok(Err(AuditError::InvalidEntry {
            field: "stream",
            reason: "ledger/… streams are written only by the ledger".into(),
        }));
    }
    c.execute(
        "SELECT pg_advisory_xact_lock(\
             hashtextextended('credits_audit_stream:' || current_schema() || ':' || $1, 0))",
        &[&entry.stream],
    )
    .await?;
    let last = c
        .query_opt(
            "SELECT record FROM audit_log WHERE stream = $1 ORDER BY stream_seq DESC LIMIT 1",
            &[&entry.stream],
        )
        .await?;
    let head = match last {
        None => StreamHead::default(),
        Some(row) => {
            let e = SealedEntry::decode(row.get::<_, &[u8]>(0)).map_err(PgError::corrupt)?;
            StreamHead {
                next_seq: e.seq().saturating_add(1),
                last_hash: *e.entry_hash(),
            }
        }
    };
    let mut chain = StreamChain::resume(entry.stream.clone(), head);
    let sealed = match chain.seal(keyring, policy, entry.clone()) {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    let cols = Columns::of(std::iter::once(&sealed))?;
    c.execute(
        "WITH sealed AS ( \
           INSERT INTO audit_log (stream, stream_seq, at, entry_hash, record) \
           SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bytea[], $5::bytea[]) \
           RETURNING stream, stream_seq) \
         INSERT INTO audit_pending (stream, stream_seq) SELECT stream, stream_seq FROM sealed",
        &[&cols.stream, &cols.seq, &cols.at, &cols.hash, &cols.bytes],
    )
    .await?;
    Ok(Ok(Appended {
        index: None,
        seq: sealed.seq(),
        entry_hash: *sealed.entry_hash(),
    }))
}

#[async_trait]
impl AuditTrail for PgAuditTrail {
    async fn record(&self, entry: AuditEntry) -> Result<Appended, AuditError> {
        entry.validate()?;
        self.try_record(&entry).await.map_err(io)?
    }
}
