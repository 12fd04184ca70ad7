//! [`PgAuditSink`]: an [`AuditSink`] over the append-only `audit_log` table.

use std::sync::Arc;

use async_trait::async_trait;
use audit_chain::{AuditError, AuditSink, LogRecord, SealedEntry};

use crate::codec::i;
use crate::pool::{Db, TxConn};
use crate::{PgError, PgLedgerStore};

/// The advisory lock key that serializes appends to the global log.
const APPEND_LOCK: i64 = 0x6175_6469_745f_6c6f;

/// An [`AuditSink`] storing an [`AuditWriter`](audit_chain::AuditWriter)'s log records in
/// `audit_log` (`log_index` = the record's index), and its checkpoints in
/// `audit_checkpoints`. Both tables reject `UPDATE`, `DELETE` and `TRUNCATE` in the database.
///
/// An append is one transaction: it takes a transaction-scoped advisory lock, checks that
/// the batch starts at the current size and is consecutive, inserts it and commits, so it is
/// durable on `Ok` and absent on error. Entries the ledger seals inside its own transactions
/// ([`LedgerAudit`](crate::LedgerAudit)) share the table but have no `log_index`: they are not
/// part of this sink's records. Give the writer's streams names that are not tenant ids
/// (for example a `app:` prefix), since `(stream, stream_seq)` is unique across the table.
#[derive(Clone, Debug)]
pub struct PgAuditSink {
    db: Arc<Db>,
}

impl PgLedgerStore {
    /// An audit sink sharing this store's pool.
    #[must_use]
    pub fn audit_sink(&self) -> PgAuditSink {
        PgAuditSink {
            db: Arc::clone(&self.db),
        }
    }
}

fn io(e: PgError) -> AuditError {
    e.into()
}

impl PgAuditSink {
    async fn try_append(&self, records: &[LogRecord]) -> Result<Result<(), AuditError>, PgError> {
        let conn = TxConn::new(self.db.get().await?);
        let c = conn.client();
        c.batch_execute("BEGIN").await?;
        c.execute("SELECT pg_advisory_xact_lock($1)", &[&APPEND_LOCK])
            .await?;
        let size: i64 = c
            .query_one("SELECT coalesce(max(log_index) + 1, 0) FROM audit_log", &[])
            .await?
            .get(0);
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
        let mut stream = Vec::with_capacity(records.len());
        let mut seq = Vec::with_capacity(records.len());
        let mut index = Vec::with_capacity(records.len());
        let mut at = Vec::with_capacity(records.len());
        let mut hash = Vec::with_capacity(records.len());
        let mut bytes = Vec::with_capacity(records.len());
        for r in records {
            let mut b = Vec::with_capacity(256);
            r.entry.encode(&mut b);
            stream.push(r.entry.stream());
            seq.push(i(r.entry.seq(), "stream sequence")?);
            index.push(i(r.index, "log index")?);
            at.push(i(r.entry.entry().timestamp.as_unix_millis(), "time")?);
            hash.push(r.entry.entry_hash().to_vec());
            bytes.push(b);
        }
        c.execute(
            "INSERT INTO audit_log (stream, stream_seq, log_index, at, entry_hash, record) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], \
                                  $5::bytea[], $6::bytea[])",
            &[&stream, &seq, &index, &at, &hash, &bytes],
        )
        .await?;
        c.batch_execute("COMMIT").await?;
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
                        "SELECT log_index, record FROM audit_log \
                         WHERE log_index >= $1 ORDER BY log_index LIMIT $2",
                    )
                    .await?;
                Ok(conn.query(&st, &[&start, &limit]).await?)
            })
            .await
            .map_err(io)?;
        rows.iter()
            .map(|r| {
                let index = u64::try_from(r.get::<_, i64>(0)).map_err(|_| AuditError::Corrupt {
                    location: "audit_log".into(),
                    reason: "negative log_index".into(),
                })?;
                Ok(LogRecord::new(
                    index,
                    SealedEntry::decode(r.get::<_, &[u8]>(1))?,
                ))
            })
            .collect()
    }

    async fn size(&self) -> Result<u64, AuditError> {
        let rows = self
            .db
            .run("audit_size", |conn| async move {
                Ok(conn
                    .query("SELECT coalesce(max(log_index) + 1, 0) FROM audit_log", &[])
                    .await?)
            })
            .await
            .map_err(io)?;
        Ok(rows
            .first()
            .map_or(0, |r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0)))
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
