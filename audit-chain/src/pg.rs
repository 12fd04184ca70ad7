//! Verification of an audit log kept in PostgreSQL (feature `postgres`), read-only.
//!
//! The tables are the ones `credits-postgres` migrates: the Merkle log is `audit_index
//! (log_index, stream, stream_seq)` joined to `audit_log (stream, stream_seq, record)` (the
//! record is [`SealedEntry::encode`]), checkpoint notes are in `audit_checkpoints`, and
//! `audit_pending` queues the committed entries not yet integrated into the log. When the
//! schema also holds the ledger (`accounts`, `journal_entries`), [`verify_schema`] checks the
//! ledger against its audit stream too.
//!
//! * [`PgLogReader`]: an [`AuditSink`] over one schema's log for any
//!   [`GenericClient`](tokio_postgres::GenericClient) (a client or a transaction). It reads
//!   and never writes: `append` and `store_*` return [`AuditError::InvalidConfig`].
//! * [`verify_schema`]: everything, in one read-only repeatable-read transaction (one
//!   snapshot): the log with the same [`ChainVerifier`] as [`verify_sink`](crate::verify_sink)
//!   and [`verify_dir`](crate::verify_dir), the backlog, and the ledger.
//!
//! ```no_run
//! # async fn example() -> Result<(), audit_chain::AuditError> {
//! use audit_chain::{HmacKey, Keyring};
//! use tokio_postgres::NoTls;
//!
//! let (mut client, conn) = tokio_postgres::connect("postgres://verifier@db/credits", NoTls)
//!     .await
//!     .map_err(|e| audit_chain::pg::io("connecting", e))?;
//! tokio::spawn(conn);
//! let keyring = Keyring::new(HmacKey::new(1, [0x33; 32])?);
//! let result = audit_chain::pg::verify_schema(&mut client, "public", &keyring, None).await?;
//! println!("{} committed entries not yet in the log", result.backlog);
//! assert!(result.is_intact());
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, IsolationLevel, Row};

use crate::entry::LogRecord;
use crate::sink::READ_CHUNK;
use crate::verify::{ChainVerifier, Failure, IntegrityCheck, VerifyReport};
use crate::{AuditError, AuditSink, Checkpoint, Keyring, LogHead, SealedEntry};

/// The prefix of the ledger's audit streams: tenant `T` writes `ledger/T`
/// (`credits_core::audit::stream_name`).
pub const LEDGER_STREAM_PREFIX: &str = "ledger/";

/// The tables whose old months `credits_archive_month` moves into an archive schema, read
/// with the live ones when a reader has an archive.
const ARCHIVED: [&str; 2] = ["audit_log", "journal_entries"];

/// Rows read per query by the ledger check.
const LEDGER_CHUNK: i64 = 4096;

/// A PostgreSQL error as [`AuditError::Io`], naming what was being done.
#[must_use]
pub fn io(context: &str, e: tokio_postgres::Error) -> AuditError {
    AuditError::Io {
        context: context.to_owned(),
        source: Arc::new(std::io::Error::other(e)),
    }
}

fn read_only(what: &str) -> AuditError {
    AuditError::InvalidConfig(format!(
        "PgLogReader is read-only: {what} is not possible (write through credits-postgres's \
         PgAuditSink)"
    ))
}

/// `schema` as a quoted SQL identifier.
fn quote(schema: &str) -> Result<String, AuditError> {
    if schema.is_empty() || schema.contains('\0') {
        return Err(AuditError::InvalidConfig(format!(
            "schema name {schema:?}: must be non-empty without NUL"
        )));
    }
    Ok(format!("\"{}\"", schema.replace('"', "\"\"")))
}

/// The log of one schema, read through `client` (an [`AuditSink`] that only reads).
///
/// Every query names the schema's tables explicitly; the session (its `search_path`) is not
/// changed. Give it a transaction to read one consistent snapshot.
pub struct PgLogReader<'c, C> {
    client: &'c C,
    schema: String,
    quoted: String,
    /// The schema holding archived months (`credits_archive_month`), quoted: its
    /// `audit_log` and `journal_entries` are read together with the live ones.
    archive: Option<String>,
}

impl<C> fmt::Debug for PgLogReader<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgLogReader")
            .field("schema", &self.schema)
            .field("archive", &self.archive)
            .finish_non_exhaustive()
    }
}

impl<'c, C: GenericClient + Sync> PgLogReader<'c, C> {
    /// A reader of `schema`'s log through `client`.
    ///
    /// # Errors
    /// [`AuditError::InvalidConfig`] for an empty schema name or one with a NUL.
    pub fn new(client: &'c C, schema: &str) -> Result<Self, AuditError> {
        Ok(PgLogReader {
            client,
            quoted: quote(schema)?,
            schema: schema.to_owned(),
            archive: None,
        })
    }

    /// Also reads the months archived into schema `archive` (by credits-postgres's
    /// `credits_archive_month`): their audit entries and journal entries are read together
    /// with the live ones, as one log and one journal.
    ///
    /// # Errors
    /// [`AuditError::InvalidConfig`] for an empty schema name or one with a NUL.
    pub fn with_archive(mut self, archive: &str) -> Result<Self, AuditError> {
        self.archive = Some(quote(archive)?);
        Ok(self)
    }

    /// The schema read.
    #[must_use]
    pub fn schema(&self) -> &str {
        &self.schema
    }

    fn table(&self, name: &str) -> String {
        format!("{}.{name}", self.quoted)
    }

    /// The rows of table `name` for a `FROM` clause, under `alias`: with an archive, the
    /// archived months' rows of the tables partitioned by month too (`audit_log`,
    /// `journal_entries`; same columns, the archive's tables are made `LIKE` the live
    /// ones).
    fn rows_of(&self, name: &str, alias: &str) -> String {
        match &self.archive {
            Some(archive) if ARCHIVED.contains(&name) => format!(
                "(SELECT * FROM {}.{name} UNION ALL SELECT * FROM {archive}.{name}) AS {alias}",
                self.quoted
            ),
            _ => format!("{}.{name} AS {alias}", self.quoted),
        }
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, AuditError> {
        self.client
            .query(sql, params)
            .await
            .map_err(|e| io(&format!("reading schema {:?}", self.schema), e))
    }

    async fn count(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, AuditError> {
        let rows = self.query(sql, params).await?;
        let n: i64 = rows.first().map_or(0, |r| r.get(0));
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Whether the schema has table `name`.
    async fn has_table(&self, name: &str) -> Result<bool, AuditError> {
        let t = self.table(name);
        let rows = self
            .query("SELECT to_regclass($1) IS NOT NULL", &[&t])
            .await?;
        Ok(rows.first().is_some_and(|r| r.get(0)))
    }

    /// Committed entries not yet in the log (rows of `audit_pending`).
    ///
    /// # Errors
    /// [`AuditError::Io`] when the query fails.
    pub async fn backlog(&self) -> Result<u64, AuditError> {
        self.count(
            &format!("SELECT count(*) FROM {}", self.table("audit_pending")),
            &[],
        )
        .await
    }

    /// Up to `limit` stored records from log index `start`, undecoded: `(index, bytes)`.
    async fn read_raw(&self, start: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, AuditError> {
        let start = i64::try_from(start).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .query(
                &format!(
                    "SELECT x.log_index, a.record FROM {} x JOIN {} USING (stream, stream_seq) \
                     WHERE x.log_index >= $1 ORDER BY x.log_index LIMIT $2",
                    self.table("audit_index"),
                    self.rows_of("audit_log", "a")
                ),
                &[&start, &limit],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let index = u64::try_from(r.get::<_, i64>(0)).map_err(|_| AuditError::Corrupt {
                    location: format!("{}.audit_index", self.schema),
                    reason: "negative log index".into(),
                })?;
                Ok((index, r.get(1)))
            })
            .collect()
    }
}

#[async_trait]
impl<C: GenericClient + Sync> AuditSink for PgLogReader<'_, C> {
    async fn append(&self, _records: &[LogRecord]) -> Result<(), AuditError> {
        Err(read_only("append"))
    }

    async fn read(&self, start: u64, limit: usize) -> Result<Vec<LogRecord>, AuditError> {
        self.read_raw(start, limit)
            .await?
            .into_iter()
            .map(|(index, bytes)| Ok(LogRecord::new(index, SealedEntry::decode(&bytes)?)))
            .collect()
    }

    async fn size(&self) -> Result<u64, AuditError> {
        self.count(
            &format!(
                "SELECT coalesce(max(log_index) + 1, 0) FROM {}",
                self.table("audit_index")
            ),
            &[],
        )
        .await
    }

    async fn store_checkpoint(&self, _note: &str) -> Result<(), AuditError> {
        Err(read_only("store_checkpoint"))
    }

    async fn load_checkpoint(&self) -> Result<Option<String>, AuditError> {
        let rows = self
            .query(
                &format!(
                    "SELECT note FROM {} ORDER BY id DESC LIMIT 1",
                    self.table("audit_checkpoints")
                ),
                &[],
            )
            .await?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    async fn store_head(&self, _head: &LogHead) -> Result<(), AuditError> {
        Err(read_only("store_head"))
    }
}

/// What [`verify_schema`] found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PgVerification {
    /// The log: the same report as for a file log or any sink. A log shorter than the
    /// latest checkpoint stored beside it is a [`IntegrityCheck::Truncated`] failure, as a
    /// file log shorter than its recorded durable size is.
    pub report: VerifyReport,
    /// Committed entries not yet in the log (the sequencer integrates them later; they are
    /// not covered by any checkpoint yet).
    pub backlog: u64,
    /// The ledger checked against its audit streams; `None` when the schema has no ledger
    /// tables.
    pub ledger: Option<LedgerReport>,
}

impl PgVerification {
    /// True when the log is intact and the ledger (if any) matches it.
    #[must_use]
    pub fn is_intact(&self) -> bool {
        self.report.is_intact() && self.ledger.as_ref().is_none_or(LedgerReport::is_intact)
    }
}

/// The ledger against its audit streams: every journal entry of tenant `T` has exactly one
/// audit entry in stream `ledger/T` (in the same order, with the same amount and balances),
/// and replaying `T`'s audit entries gives its counters (`available`, `held`, `overdrawn`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LedgerReport {
    /// Tenants checked completely.
    pub tenants: u64,
    /// Journal entries matched with their audit entry.
    pub journal_entries: u64,
    /// The first mismatch, or `None`.
    pub failure: Option<LedgerFailure>,
}

impl LedgerReport {
    /// True when nothing differs.
    #[must_use]
    pub fn is_intact(&self) -> bool {
        self.failure.is_none()
    }
}

/// The ledger check that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub enum LedgerCheck {
    /// A journal entry has no audit entry (deleted, or a change written without one).
    MissingEntry,
    /// An audit entry matches no journal entry (invented, duplicated, or its journal entry
    /// was deleted).
    ExtraEntry,
    /// An audit entry disagrees with its journal entry (amount or balances).
    EntryMismatch,
    /// A tenant's counters differ from what its audit entries replay to.
    Counters,
    /// A ledger audit entry could not be decoded or lacks the ledger's metadata.
    Decode,
    /// A ledger stream's hash chain is broken (checked for every entry, also those not yet
    /// in the log, by the log's own [`ChainVerifier`]).
    Chain(IntegrityCheck),
}

impl fmt::Display for LedgerCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LedgerCheck::MissingEntry => "missing audit entry",
            LedgerCheck::ExtraEntry => "audit entry without journal entry",
            LedgerCheck::EntryMismatch => "audit entry differs from journal entry",
            LedgerCheck::Counters => "counters",
            LedgerCheck::Decode => "decode",
            LedgerCheck::Chain(check) => return write!(f, "stream chain ({check})"),
        })
    }
}

/// The first ledger mismatch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LedgerFailure {
    /// The tenant.
    pub tenant: String,
    /// The journal sequence number concerned, when one is.
    pub journal_seq: Option<u64>,
    /// The check that failed.
    pub check: LedgerCheck,
    /// Human-readable details.
    pub detail: String,
}

impl fmt::Display for LedgerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tenant {:?}", self.tenant)?;
        if let Some(seq) = self.journal_seq {
            write!(f, " journal entry {seq}")?;
        }
        write!(f, ": {} check failed: {}", self.check, self.detail)
    }
}

/// Fully verifies `schema`'s audit log (and its ledger, when the schema has one), optionally
/// against a trusted checkpoint, in one read-only repeatable-read transaction on `client`.
///
/// * The log is read in log-index order in chunks and checked by the same
///   [`ChainVerifier`] as [`verify_sink`](crate::verify_sink): index, hash, MAC, stream
///   sequence and link of every entry, the Merkle root at the checkpoint's size, and
///   truncation. A record that cannot be decoded is a [`IntegrityCheck::Decode`] failure;
///   a log shorter than the latest checkpoint stored in `audit_checkpoints` is a
///   [`IntegrityCheck::Truncated`] failure (that stored note is not trusted otherwise).
/// * [`PgVerification::backlog`]: entries committed but not yet integrated.
/// * The ledger ([`LedgerReport`]), when `accounts` and `journal_entries` exist.
///   Entries sealed before migration 0004 (stream = tenant id) cover the tenant's oldest
///   journal entries: they are counted, not compared field by field.
///
/// Memory is one head per stream plus one chunk of rows; the transaction lasts as long as
/// the verification.
///
/// # Errors
/// Storage errors only ([`AuditError::Io`]), and [`AuditError::InvalidConfig`] for a schema
/// without the audit tables; problems with the data are in the result.
pub async fn verify_schema(
    client: &mut Client,
    schema: &str,
    keyring: &Keyring,
    checkpoint: Option<&Checkpoint>,
) -> Result<PgVerification, AuditError> {
    verify_schema_with_archive(client, schema, None, keyring, checkpoint).await
}

/// [`verify_schema`] over the live log of `schema` and the months archived into schema
/// `archive` (credits-postgres's `credits_archive_month`, or a `pg_dump` of that schema
/// restored), read as one log and one journal: an archived month's entries keep their
/// log indices in `schema`'s `audit_index`, so the log verifies only with its archive.
/// Give the checkpoint archived with the month (`archive.archived_months.checkpoint`),
/// or any later one, to prove the archived prefix unchanged.
///
/// # Errors
/// As [`verify_schema`]; [`AuditError::InvalidConfig`] also when `archive` lacks the
/// archived tables.
pub async fn verify_schema_with_archive(
    client: &mut Client,
    schema: &str,
    archive: Option<&str>,
    keyring: &Keyring,
    checkpoint: Option<&Checkpoint>,
) -> Result<PgVerification, AuditError> {
    quote(schema)?;
    if let Some(archive) = archive {
        quote(archive)?;
    }
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| io("starting a read-only transaction", e))?;
    let mut reader = PgLogReader::new(&tx, schema)?;
    if let Some(archive) = archive {
        let archived = PgLogReader::new(&tx, archive)?;
        for table in ARCHIVED {
            if !archived.has_table(table).await? {
                return Err(AuditError::InvalidConfig(format!(
                    "schema {archive:?} has no table {table}: not an archive of \
                     credits_archive_month"
                )));
            }
        }
        reader = reader.with_archive(archive)?;
    }
    let result = verify_in(&reader, keyring, checkpoint).await;
    // Nothing was written: ending the transaction either way is the same.
    tx.rollback()
        .await
        .map_err(|e| io("ending the read-only transaction", e))?;
    result
}

async fn verify_in<C: GenericClient + Sync>(
    reader: &PgLogReader<'_, C>,
    keyring: &Keyring,
    checkpoint: Option<&Checkpoint>,
) -> Result<PgVerification, AuditError> {
    for table in [
        "audit_log",
        "audit_index",
        "audit_pending",
        "audit_checkpoints",
    ] {
        if !reader.has_table(table).await? {
            return Err(AuditError::InvalidConfig(format!(
                "schema {:?} has no table {table}: not a migrated credits-postgres schema",
                reader.schema()
            )));
        }
    }
    let report = verify_log(reader, keyring, checkpoint).await?;
    let backlog = reader.backlog().await?;
    let ledger =
        if reader.has_table("accounts").await? && reader.has_table("journal_entries").await? {
            Some(LedgerChecker::new(reader, keyring).run().await?)
        } else {
            None
        };
    Ok(PgVerification {
        report,
        backlog,
        ledger,
    })
}

/// The log, like `verify_sink` (same verifier, same chunks), with decode failures and the
/// stored checkpoint's size reported like `verify_dir` reports them for files.
async fn verify_log<C: GenericClient + Sync>(
    reader: &PgLogReader<'_, C>,
    keyring: &Keyring,
    checkpoint: Option<&Checkpoint>,
) -> Result<VerifyReport, AuditError> {
    let size = reader.size().await?;
    let mut v = ChainVerifier::new(keyring);
    if let Some(cp) = checkpoint {
        v = v.with_checkpoint(cp.clone());
    }
    let mut at = 0;
    'read: while at < size && v.failure().is_none() {
        let want = usize::try_from(size - at)
            .unwrap_or(usize::MAX)
            .min(READ_CHUNK);
        let chunk = reader.read_raw(at, want).await?;
        if chunk.is_empty() {
            break;
        }
        for (index, bytes) in &chunk {
            match SealedEntry::decode(bytes) {
                Ok(entry) => {
                    if v.push(&LogRecord::new(*index, entry)).is_err() {
                        break 'read;
                    }
                }
                Err(e) => {
                    v.push_unreadable(&e);
                    break 'read;
                }
            }
        }
        at += chunk.len() as u64;
    }
    let mut report = v.finish();
    if report.failure.is_none()
        && let Some(note) = reader.load_checkpoint().await?
    {
        match Checkpoint::parse_note_unverified(&note) {
            Ok(stored) if stored.size > size => {
                report.failure = Some(Failure {
                    index: size,
                    stream: None,
                    seq: None,
                    check: IntegrityCheck::Truncated,
                    detail: format!(
                        "log has {size} entries but the latest checkpoint stored beside it \
                         covers {}",
                        stored.size
                    ),
                });
                report.root = None;
                report.checkpoint_matched = false;
            }
            Ok(_) => {}
            Err(e) => {
                report.failure = Some(Failure {
                    index: size,
                    stream: None,
                    seq: None,
                    check: IntegrityCheck::Decode,
                    detail: format!("the latest stored checkpoint: {e}"),
                });
                report.root = None;
                report.checkpoint_matched = false;
            }
        }
    }
    Ok(report)
}

/// A journal entry's fields an audit entry repeats.
struct JournalRow {
    seq: i64,
    amount: i64,
    before_available: i64,
    after_available: i64,
    after_held: i64,
    after_overdrawn: i64,
}

/// The balances an audit entry says its change left: (available, held, overdrawn).
type Counters = (u64, u64, u64);

struct LedgerChecker<'r, 'c, C> {
    reader: &'r PgLogReader<'c, C>,
    keyring: &'r Keyring,
    tenants: u64,
    journal_entries: u64,
}

fn failure(
    tenant: &str,
    journal_seq: Option<u64>,
    check: LedgerCheck,
    detail: String,
) -> Result<(), LedgerFailure> {
    Err(LedgerFailure {
        tenant: tenant.to_owned(),
        journal_seq,
        check,
        detail,
    })
}

fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// A journal entry's audit entry must repeat its sequence number, amount and balances
/// (the mapping of `credits_core::audit::audit_entry`).
fn compare(tenant: &str, j: &JournalRow, e: &SealedEntry) -> Result<Counters, LedgerFailure> {
    let entry = e.entry();
    let meta = |key: &str| entry.metadata.get(key).and_then(|v| v.parse::<u64>().ok());
    let (Some(held), Some(overdrawn)) = (meta("held_after"), meta("overdrawn_after")) else {
        return Err(LedgerFailure {
            tenant: tenant.to_owned(),
            journal_seq: Some(unsigned(j.seq)),
            check: LedgerCheck::Decode,
            detail: format!(
                "stream seq {}: no held_after/overdrawn_after metadata",
                e.seq()
            ),
        });
    };
    let want = (
        Some(unsigned(j.amount)),
        Some(unsigned(j.before_available)),
        Some(unsigned(j.after_available)),
        unsigned(j.after_held),
        unsigned(j.after_overdrawn),
    );
    let got = (
        entry.amount,
        entry.balance_before,
        entry.balance_after,
        held,
        overdrawn,
    );
    if got != want {
        return Err(LedgerFailure {
            tenant: tenant.to_owned(),
            journal_seq: Some(unsigned(j.seq)),
            check: LedgerCheck::EntryMismatch,
            detail: format!(
                "(amount, available before, available after, held, overdrawn): audit entry \
                 {got:?}, journal entry {want:?}"
            ),
        });
    }
    Ok((entry.balance_after.unwrap_or(0), held, overdrawn))
}

impl<'r, 'c, C: GenericClient + Sync> LedgerChecker<'r, 'c, C> {
    fn new(reader: &'r PgLogReader<'c, C>, keyring: &'r Keyring) -> Self {
        LedgerChecker {
            reader,
            keyring,
            tenants: 0,
            journal_entries: 0,
        }
    }

    fn t(&self, name: &str) -> String {
        self.reader.rows_of(name, name)
    }

    async fn run(mut self) -> Result<LedgerReport, AuditError> {
        let failure = self.check().await?.err();
        Ok(LedgerReport {
            tenants: self.tenants,
            journal_entries: self.journal_entries,
            failure,
        })
    }

    /// Storage errors outside, the first mismatch inside.
    async fn check(&mut self) -> Result<Result<(), LedgerFailure>, AuditError> {
        // Journal entries and ledger streams of tenants without an account row.
        let rows = self
            .reader
            .query(
                &format!(
                    "SELECT j.tenant, j.seq FROM {} WHERE NOT EXISTS \
                     (SELECT 1 FROM {} WHERE c.tenant = j.tenant) ORDER BY j.tenant, j.seq \
                     LIMIT 1",
                    self.reader.rows_of("journal_entries", "j"),
                    self.reader.rows_of("accounts", "c")
                ),
                &[],
            )
            .await?;
        if let Some(r) = rows.first() {
            let tenant: String = r.get(0);
            return Ok(failure(
                &tenant,
                Some(unsigned(r.get(1))),
                LedgerCheck::Counters,
                "journal entries of a tenant without an account row".into(),
            ));
        }
        let rows = self
            .reader
            .query(
                &format!(
                    "SELECT a.stream FROM {} WHERE starts_with(a.stream, $1) AND NOT EXISTS \
                     (SELECT 1 FROM {} WHERE $1 || c.tenant = a.stream) ORDER BY a.stream \
                     LIMIT 1",
                    self.reader.rows_of("audit_log", "a"),
                    self.reader.rows_of("accounts", "c")
                ),
                &[&LEDGER_STREAM_PREFIX],
            )
            .await?;
        if let Some(r) = rows.first() {
            let stream: &str = r.get(0);
            return Ok(failure(
                &stream[LEDGER_STREAM_PREFIX.len()..],
                None,
                LedgerCheck::ExtraEntry,
                format!("stream {stream:?} belongs to no account"),
            ));
        }
        let mut after = String::new();
        let mut first = true;
        loop {
            let rows = self
                .reader
                .query(
                    &format!(
                        "SELECT tenant, available, held, overdrawn FROM {} \
                         WHERE $1 OR tenant > $2 ORDER BY tenant LIMIT $3",
                        self.t("accounts")
                    ),
                    &[&first, &after, &LEDGER_CHUNK],
                )
                .await?;
            first = false;
            for r in &rows {
                let tenant: String = r.get(0);
                let counters = (unsigned(r.get(1)), unsigned(r.get(2)), unsigned(r.get(3)));
                if let Err(f) = self.tenant(&tenant, counters).await? {
                    return Ok(Err(f));
                }
                self.tenants += 1;
                after = tenant;
            }
            if rows.len() < usize::try_from(LEDGER_CHUNK).unwrap_or(usize::MAX) {
                return Ok(Ok(()));
            }
        }
    }

    /// One tenant: its journal merged with its audit stream, then its counters.
    async fn tenant(
        &mut self,
        tenant: &str,
        counters: Counters,
    ) -> Result<Result<(), LedgerFailure>, AuditError> {
        // Entries sealed before migration 0004 are in the stream named like the tenant and
        // cover its oldest journal entries.
        let row = self
            .reader
            .query(
                &format!(
                    "SELECT count(*), max(journal_seq) FROM {} \
                     WHERE stream = $1 AND journal_seq IS NOT NULL",
                    self.t("audit_log")
                ),
                &[&tenant],
            )
            .await?;
        let (legacy, legacy_max): (i64, Option<i64>) =
            row.first().map_or((0, None), |r| (r.get(0), r.get(1)));
        let mut journal_after = 0;
        if let Some(max) = legacy_max {
            let covered = self
                .reader
                .count(
                    &format!(
                        "SELECT count(*) FROM {} WHERE tenant = $1 AND seq <= $2",
                        self.t("journal_entries")
                    ),
                    &[&tenant, &max],
                )
                .await?;
            if covered != unsigned(legacy) {
                return Ok(failure(
                    tenant,
                    None,
                    if covered > unsigned(legacy) {
                        LedgerCheck::MissingEntry
                    } else {
                        LedgerCheck::ExtraEntry
                    },
                    format!(
                        "{covered} journal entries up to seq {max} but {legacy} audit entries \
                         sealed before migration 0004"
                    ),
                ));
            }
            self.journal_entries += covered;
            journal_after = max;
        }
        let stream = format!("{LEDGER_STREAM_PREFIX}{tenant}");
        let mut journal = Chunked::new(journal_after);
        let mut audit = Chunked::new(-1);
        let mut last: Option<Counters> = None;
        // The stream's chain, entries not yet in the log included: hash, MAC, sequence and
        // link, numbered by position in the stream.
        let mut chain = ChainVerifier::new(self.keyring);
        let mut position = 0;
        loop {
            let j = journal.next(|after| self.journal(tenant, after)).await?;
            let a = audit.next(|after| self.audit(&stream, after)).await?;
            let (j, a) = match (j, a) {
                (None, None) => break,
                (Some(j), None) => {
                    return Ok(failure(
                        tenant,
                        Some(unsigned(j.seq)),
                        LedgerCheck::MissingEntry,
                        format!("stream {stream:?} ends before this journal entry"),
                    ));
                }
                (j, Some((stream_seq, bytes))) => {
                    let e = match SealedEntry::decode(&bytes) {
                        Ok(e) => e,
                        Err(e) => {
                            return Ok(failure(
                                tenant,
                                j.map(|j| unsigned(j.seq)),
                                LedgerCheck::Decode,
                                format!("stream {stream:?} seq {stream_seq}: {e}"),
                            ));
                        }
                    };
                    (j, e)
                }
            };
            let a = LogRecord::new(position, a);
            position += 1;
            if let Err(f) = chain.push(&a) {
                return Ok(failure(
                    tenant,
                    j.map(|j| unsigned(j.seq)),
                    LedgerCheck::Chain(f.check),
                    format!("stream {stream:?} seq {}: {}", a.entry.seq(), f.detail),
                ));
            }
            let a = a.entry;
            let Some(seq) = a
                .entry()
                .metadata
                .get("seq")
                .and_then(|s| s.parse::<i64>().ok())
            else {
                return Ok(failure(
                    tenant,
                    None,
                    LedgerCheck::Decode,
                    format!("stream {stream:?} seq {}: no journal seq metadata", a.seq()),
                ));
            };
            let j = match j {
                Some(j) if j.seq == seq => j,
                Some(j) if j.seq < seq => {
                    return Ok(failure(
                        tenant,
                        Some(unsigned(j.seq)),
                        LedgerCheck::MissingEntry,
                        format!(
                            "the next audit entry (stream seq {}) is for journal entry {seq}",
                            a.seq()
                        ),
                    ));
                }
                _ => {
                    return Ok(failure(
                        tenant,
                        Some(unsigned(seq)),
                        LedgerCheck::ExtraEntry,
                        format!(
                            "audit entry stream seq {} is for journal entry {seq}, which has \
                             no other audit entry",
                            a.seq()
                        ),
                    ));
                }
            };
            match compare(tenant, &j, &a) {
                Ok(c) => last = Some(c),
                Err(f) => return Ok(Err(f)),
            }
            self.journal_entries += 1;
        }
        // Replaying the audit entries gives the counters (none: zero; only entries sealed
        // before migration 0004: not comparable field by field, skipped).
        let replayed = match last {
            Some(c) => Some(c),
            None if legacy == 0 => Some((0, 0, 0)),
            None => None,
        };
        if let Some(replayed) = replayed
            && replayed != counters
        {
            return Ok(failure(
                tenant,
                None,
                LedgerCheck::Counters,
                format!(
                    "(available, held, overdrawn): account {counters:?}, replayed from its \
                     audit entries {replayed:?}"
                ),
            ));
        }
        Ok(Ok(()))
    }

    async fn journal(
        &self,
        tenant: &str,
        after: i64,
    ) -> Result<Vec<(i64, JournalRow)>, AuditError> {
        let rows = self
            .reader
            .query(
                &format!(
                    "SELECT seq, amount, before_available, after_available, after_held, \
                     after_overdrawn FROM {} WHERE tenant = $1 AND seq > $2 ORDER BY seq \
                     LIMIT $3",
                    self.t("journal_entries")
                ),
                &[&tenant, &after, &LEDGER_CHUNK],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let row = JournalRow {
                    seq: r.get(0),
                    amount: r.get(1),
                    before_available: r.get(2),
                    after_available: r.get(3),
                    after_held: r.get(4),
                    after_overdrawn: r.get(5),
                };
                (row.seq, row)
            })
            .collect())
    }

    async fn audit(
        &self,
        stream: &str,
        after: i64,
    ) -> Result<Vec<(i64, (i64, Vec<u8>))>, AuditError> {
        let rows = self
            .reader
            .query(
                &format!(
                    "SELECT stream_seq, record FROM {} WHERE stream = $1 AND stream_seq > $2 \
                     ORDER BY stream_seq LIMIT $3",
                    self.t("audit_log")
                ),
                &[&stream, &after, &LEDGER_CHUNK],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let seq: i64 = r.get(0);
                (seq, (seq, r.get(1)))
            })
            .collect())
    }
}

/// Rows read in key order, one chunk at a time.
struct Chunked<T> {
    buffer: VecDeque<T>,
    after: i64,
    done: bool,
}

impl<T> Chunked<T> {
    fn new(after: i64) -> Self {
        Chunked {
            buffer: VecDeque::new(),
            after,
            done: false,
        }
    }

    /// The next row; `fetch(after)` returns up to [`LEDGER_CHUNK`] `(key, row)` pairs with
    /// keys above `after`, in order.
    async fn next<F, Fut>(&mut self, fetch: F) -> Result<Option<T>, AuditError>
    where
        F: FnOnce(i64) -> Fut,
        Fut: Future<Output = Result<Vec<(i64, T)>, AuditError>>,
    {
        if self.buffer.is_empty() && !self.done {
            let rows = fetch(self.after).await?;
            self.done = rows.len() < usize::try_from(LEDGER_CHUNK).unwrap_or(usize::MAX);
            for (key, row) in rows {
                self.after = key;
                self.buffer.push_back(row);
            }
        }
        Ok(self.buffer.pop_front())
    }
}
