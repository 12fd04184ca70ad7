//! The append-only file sink: segment files of checksummed frames, fsync per batch, a
//! durable-size record, and recovery that cuts a torn final frame of unacknowledged
//! entries but reports any other damage.
//!
//! # On-disk format
//!
//! A directory of segment files named `<first index, 20 digits>.seg`. Each starts with a
//! 16-byte header (`ACHNSEG1` and the first index, u64 big-endian), then frames:
//! `length (u32 BE) ‖ record ‖ check`, where `record` is [`LogRecord::encode`] and `check` is
//! the first 8 bytes of `SHA-256("audit-chain/v1/frame\0" ‖ length ‖ record)`.
//!
//! `durable` holds the number of records known durable (acknowledged), rewritten in place
//! and fsynced after every batch's fsync and before the batch is acknowledged: two 24-byte
//! slots `ACHNDUR1 ‖ records (u64 BE) ‖ check`, `check` the first 8 bytes of
//! `SHA-256("audit-chain/v1/durable\0" ‖ records)`, written alternately so that a torn
//! write of one slot leaves the other; the larger valid slot counts. The latest checkpoint
//! note is in `checkpoint` and the latest [`LogHead`] in `head` (each replaced atomically).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[cfg(feature = "tokio")]
use async_trait::async_trait;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::entry::LogRecord;
#[cfg(feature = "tokio")]
use crate::sink::AuditSink;
use crate::sink::check_batch;
use crate::verify::{ChainVerifier, Failure, IntegrityCheck, VerifyReport};
use crate::{AuditError, Checkpoint, Keyring, LogHead};

const SEGMENT_MAGIC: &[u8; 8] = b"ACHNSEG1";
const HEADER_LEN: usize = 16;
const DOMAIN_FRAME: &[u8] = b"audit-chain/v1/frame\0";
/// Largest record a frame may hold, in bytes.
pub const FRAME_RECORD_MAX: usize = 4 * 1024 * 1024;
const CHECKPOINT_FILE: &str = "checkpoint";
const HEAD_FILE: &str = "head";
const DURABLE_FILE: &str = "durable";
const DURABLE_MAGIC: &[u8; 8] = b"ACHNDUR1";
const DOMAIN_DURABLE: &[u8] = b"audit-chain/v1/durable\0";
const DURABLE_SLOT_LEN: usize = 24;
const DURABLE_SLOTS: usize = 2;

fn frame_check(len: [u8; 4], record: &[u8]) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(DOMAIN_FRAME);
    h.update(len);
    h.update(record);
    let d = h.finalize();
    let mut c = [0u8; 8];
    c.copy_from_slice(&d[..8]);
    c
}

/// Appends the frame for `record` to `out`.
fn encode_frame(record: &LogRecord, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    record.encode(out);
    let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    let check = frame_check(len.to_be_bytes(), &out[start + 4..]);
    out.extend_from_slice(&check);
}

fn durable_slot(records: u64) -> [u8; DURABLE_SLOT_LEN] {
    let mut slot = [0u8; DURABLE_SLOT_LEN];
    slot[..8].copy_from_slice(DURABLE_MAGIC);
    slot[8..16].copy_from_slice(&records.to_be_bytes());
    let mut h = Sha256::new();
    h.update(DOMAIN_DURABLE);
    h.update(records.to_be_bytes());
    slot[16..].copy_from_slice(&h.finalize()[..8]);
    slot
}

/// The durable size recorded in `bytes` (the `durable` file) and the slot holding it.
fn parse_durable(bytes: &[u8]) -> Result<(u64, usize), AuditError> {
    let mut best: Option<(u64, usize)> = None;
    for slot in 0..DURABLE_SLOTS {
        let Some(b) = bytes.get(slot * DURABLE_SLOT_LEN..(slot + 1) * DURABLE_SLOT_LEN) else {
            continue;
        };
        let mut records = [0u8; 8];
        records.copy_from_slice(&b[8..16]);
        let records = u64::from_be_bytes(records);
        if b[..] == durable_slot(records) && best.is_none_or(|(r, _)| records > r) {
            best = Some((records, slot));
        }
    }
    best.ok_or_else(|| AuditError::Corrupt {
        location: DURABLE_FILE.into(),
        reason: "no valid durable-size slot".into(),
    })
}

/// The durable size recorded beside the log and the slot holding it; `None` when the file
/// does not exist (a log written before the file was introduced).
fn load_durable(dir: &Path) -> Result<Option<(u64, usize)>, AuditError> {
    match fs::read(dir.join(DURABLE_FILE)) {
        Ok(b) => parse_durable(&b).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AuditError::io("reading the durable size", e)),
    }
}

/// The error for a log holding fewer records than its durable size.
fn truncated(found: u64, recorded: u64) -> AuditError {
    AuditError::Truncated {
        found,
        recorded,
        recorded_by: "durable size",
    }
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.seg")
}

/// How a segment's bytes end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tail {
    /// The last frame is complete.
    Clean,
    /// An incomplete final frame (or header, or an all-zero tail) starts at this byte offset:
    /// the trace of a crash during a write. Recovery cuts it off.
    Torn {
        /// Byte offset in the segment where the torn part starts.
        offset: u64,
    },
}

/// Reads one segment's bytes, calling `on_record(offset, record)` for each frame.
///
/// `cut_from` is `Some(durable)` for the last segment: an incomplete frame (or header, or
/// an all-zero tail) at its physical end whose record index is at least `durable` (so it
/// cannot hold an acknowledged entry) is a torn tail. Everything else that is not a valid
/// frame is [`AuditError::Corrupt`]: damage anywhere in an earlier segment or below the
/// durable size, a frame length over [`FRAME_RECORD_MAX`] (no write produces one), a bad
/// checksum, an undecodable record, an index out of place.
fn scan_segment(
    name: &str,
    bytes: &[u8],
    first: u64,
    cut_from: Option<u64>,
    mut on_record: impl FnMut(u64, LogRecord),
) -> Result<(u64, Tail), AuditError> {
    let corrupt = |offset: usize, reason: String| AuditError::Corrupt {
        location: format!("{name} byte {offset}"),
        reason,
    };
    let torn_or = |offset: usize, index: u64, reason: String| match cut_from {
        Some(durable) if index >= durable => Ok(Tail::Torn {
            offset: offset as u64,
        }),
        Some(durable) => Err(corrupt(
            offset,
            format!("{reason} at record {index}, but {durable} records were recorded durable"),
        )),
        None => Err(corrupt(
            offset,
            format!("{reason} in a segment that is not the last"),
        )),
    };
    if bytes.len() < HEADER_LEN {
        return torn_or(0, first, "segment header incomplete".into()).map(|t| (0, t));
    }
    if &bytes[..8] != SEGMENT_MAGIC {
        return Err(corrupt(0, "bad segment magic".into()));
    }
    let mut stored = [0u8; 8];
    stored.copy_from_slice(&bytes[8..16]);
    if u64::from_be_bytes(stored) != first {
        return Err(corrupt(
            8,
            "segment header names another first index".into(),
        ));
    }
    let mut pos = HEADER_LEN;
    let mut count = 0u64;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        let index = first + count;
        if rest.iter().all(|&b| b == 0) {
            return torn_or(pos, index, "zero-filled tail".into()).map(|t| (count, t));
        }
        if rest.len() < 4 {
            return torn_or(pos, index, "incomplete frame length".into()).map(|t| (count, t));
        }
        let len_bytes = [rest[0], rest[1], rest[2], rest[3]];
        let len = u32::from_be_bytes(len_bytes) as usize;
        // Checked before "runs past the end": no write produces such a length, so it is
        // damage (or garbage), never a torn write.
        if len > FRAME_RECORD_MAX {
            return Err(corrupt(pos, format!("frame length {len} over the limit")));
        }
        let frame_len = 4 + len + 8;
        if rest.len() < frame_len {
            return torn_or(
                pos,
                index,
                format!("frame of {len} bytes runs past the end"),
            )
            .map(|t| (count, t));
        }
        let record = &rest[4..4 + len];
        if frame_check(len_bytes, record) != rest[4 + len..frame_len] {
            return Err(corrupt(pos, "frame checksum mismatch".into()));
        }
        let r = LogRecord::decode(record).map_err(|e| corrupt(pos, e.to_string()))?;
        if r.index != first + count {
            return Err(corrupt(
                pos,
                format!(
                    "record index {} where {} was expected",
                    r.index,
                    first + count
                ),
            ));
        }
        on_record(pos as u64, r);
        count += 1;
        pos += frame_len;
    }
    Ok((count, Tail::Clean))
}

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, AuditError> {
    let mut segs = Vec::new();
    let entries =
        fs::read_dir(dir).map_err(|e| AuditError::io(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| AuditError::io("listing segments", e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".seg") else {
            continue;
        };
        let first = stem
            .parse::<u64>()
            .ok()
            .filter(|_| stem.len() == 20)
            .ok_or_else(|| AuditError::Corrupt {
                location: name.to_owned(),
                reason: "segment file name is not a 20-digit index".into(),
            })?;
        segs.push((first, entry.path()));
    }
    segs.sort();
    Ok(segs)
}

fn read_file(path: &Path) -> Result<Vec<u8>, AuditError> {
    fs::read(path).map_err(|e| AuditError::io(format!("reading {}", path.display()), e))
}

/// A log read from a directory without changing it.
#[derive(Debug)]
pub struct ScannedLog {
    /// Every complete record, in order.
    pub records: Vec<LogRecord>,
    /// Bytes of a torn tail at the end of the last segment (0 if none). A writer's recovery
    /// would cut them; they held no acknowledged entry.
    pub torn_bytes: u64,
}

/// Calls `on_record` for every record of the file-sink directory `dir`, in order, without
/// modifying anything (memory: one segment at a time); returns the number of torn-tail
/// bytes ignored at the end.
///
/// # Errors
/// As [`scan_dir`]; records before the damage have been passed to `on_record`.
pub fn scan_dir_with(dir: &Path, mut on_record: impl FnMut(LogRecord)) -> Result<u64, AuditError> {
    let segs = list_segments(dir)?;
    let durable = load_durable(dir)?.map_or(0, |(records, _)| records);
    let mut count = 0u64;
    let mut torn_bytes = 0;
    let n = segs.len();
    for (i, (first, path)) in segs.iter().enumerate() {
        if *first != count {
            return Err(AuditError::Corrupt {
                location: path.display().to_string(),
                reason: format!("segment starts at index {first} but {count} records precede it"),
            });
        }
        let bytes = read_file(path)?;
        let cut_from = (i + 1 == n).then_some(durable);
        let (seen, tail) =
            scan_segment(&segment_name(*first), &bytes, *first, cut_from, |_, r| {
                on_record(r);
            })?;
        count += seen;
        if let Tail::Torn { offset } = tail {
            torn_bytes = bytes.len() as u64 - offset;
        }
    }
    if count < durable {
        return Err(truncated(count, durable));
    }
    Ok(torn_bytes)
}

/// Reads every record of the file-sink directory `dir` without modifying anything.
///
/// A torn tail (what [`FileSink::open`] would cut) is skipped and counted in
/// [`ScannedLog::torn_bytes`]: an incomplete frame at the physical end of the last segment,
/// at or after the durable size recorded beside the log.
///
/// # Errors
/// [`AuditError::Corrupt`] at the first damage other than a torn tail (a bad length or
/// checksum, an undecodable record, bytes after the last frame that cannot start a frame,
/// a gap in indices, a missing segment, an unreadable durable-size file);
/// [`AuditError::Truncated`] when the log holds fewer records than its recorded durable
/// size; I/O errors.
pub fn scan_dir(dir: &Path) -> Result<ScannedLog, AuditError> {
    let mut records = Vec::new();
    let torn_bytes = scan_dir_with(dir, |r| records.push(r))?;
    Ok(ScannedLog {
        records,
        torn_bytes,
    })
}

/// The result of [`verify_dir`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirVerification {
    /// What verification found; damaged frames appear as [`IntegrityCheck::Decode`]
    /// failures at the index of the first unreadable record, a log shorter than its
    /// recorded durable size as [`IntegrityCheck::Truncated`] at the first missing index.
    pub report: VerifyReport,
    /// Bytes of a torn tail ignored at the end of the last segment.
    pub torn_bytes: u64,
}

/// Fully verifies a file-sink directory offline without modifying it, streaming (memory is
/// one segment plus one head per stream), optionally against a trusted checkpoint.
///
/// ```
/// # use audit_chain::*;
/// let dir = tempfile::tempdir().unwrap();
/// let keyring = Keyring::new(HmacKey::new(1, [1u8; 32])?);
/// let result = verify_dir(dir.path(), &keyring, None)?;
/// assert!(result.report.is_intact());
/// assert_eq!(result.report.entries_ok, 0);
/// # Ok::<(), AuditError>(())
/// ```
///
/// # Errors
/// I/O errors only (a missing directory, unreadable files); damaged data is reported in the
/// result.
pub fn verify_dir(
    dir: &Path,
    keyring: &Keyring,
    checkpoint: Option<&Checkpoint>,
) -> Result<DirVerification, AuditError> {
    let mut v = ChainVerifier::new(keyring);
    if let Some(cp) = checkpoint {
        v = v.with_checkpoint(cp.clone());
    }
    let mut missing = None;
    let torn_bytes = match scan_dir_with(dir, |r| {
        let _ = v.push(&r);
    }) {
        Ok(t) => t,
        Err(e @ (AuditError::Corrupt { .. } | AuditError::Decode { .. })) => {
            v.push_unreadable(&e);
            0
        }
        Err(AuditError::Truncated {
            found, recorded, ..
        }) => {
            missing = Some((found, recorded));
            0
        }
        Err(e) => return Err(e),
    };
    let mut report = v.finish();
    if let Some((found, recorded)) = missing
        && report.failure.is_none()
    {
        report.failure = Some(Failure {
            index: found,
            stream: None,
            seq: None,
            check: IntegrityCheck::Truncated,
            detail: format!(
                "log has {found} entries but its durable size (recorded beside it) is {recorded}"
            ),
        });
        report.root = None;
        report.checkpoint_matched = false;
    }
    Ok(DirVerification { report, torn_bytes })
}

/// What [`FileSink::open`] found and repaired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// Records in the log after recovery.
    pub records: u64,
    /// Segment files.
    pub segments: usize,
    /// Bytes of a torn tail cut from the last segment (0 if it ended cleanly).
    pub torn_bytes_cut: u64,
}

/// Settings of a [`FileSink`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileSinkOptions {
    /// A new segment is started before a batch that would take the current one past this
    /// size (a single batch may exceed it). At least 4 KiB. Default 64 MiB.
    pub segment_max_bytes: u64,
}

impl Default for FileSinkOptions {
    fn default() -> Self {
        FileSinkOptions {
            segment_max_bytes: 64 * 1024 * 1024,
        }
    }
}

#[derive(Debug)]
struct Segment {
    first: u64,
    path: PathBuf,
    len: u64,
}

/// The `durable` file, open for in-place updates of one slot at a time.
#[derive(Debug)]
struct Durable {
    file: File,
    /// The slot the next update overwrites (not the one holding `records`).
    next_slot: usize,
    /// The durable size last recorded.
    records: u64,
}

impl Durable {
    /// Opens the durable-size file `loaded` was read from (creating it when there was none)
    /// and raises the recorded size to `records`.
    fn open(dir: &Path, loaded: Option<(u64, usize)>, records: u64) -> Result<Self, AuditError> {
        let path = dir.join(DURABLE_FILE);
        let (recorded, slot) = match loaded {
            Some(l) => l,
            None => {
                let mut bytes = Vec::with_capacity(DURABLE_SLOTS * DURABLE_SLOT_LEN);
                for _ in 0..DURABLE_SLOTS {
                    bytes.extend_from_slice(&durable_slot(records));
                }
                replace_file(dir, DURABLE_FILE, &bytes)?;
                (records, 0)
            }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| AuditError::io(format!("opening {}", path.display()), e))?;
        let mut durable = Durable {
            file,
            next_slot: (slot + 1) % DURABLE_SLOTS,
            records: recorded,
        };
        if records > recorded {
            durable
                .record(records)
                .map_err(|e| AuditError::io("recording the durable size", e))?;
        }
        Ok(durable)
    }

    /// Records `records` as the durable size: overwrites the older slot and fsyncs. On
    /// error the other slot still holds the previous size.
    fn record(&mut self, records: u64) -> std::io::Result<()> {
        let at = (self.next_slot * DURABLE_SLOT_LEN) as u64;
        self.file.seek(SeekFrom::Start(at))?;
        self.file.write_all(&durable_slot(records))?;
        self.file.sync_data()?;
        self.records = records;
        self.next_slot = (self.next_slot + 1) % DURABLE_SLOTS;
        Ok(())
    }
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    options: FileSinkOptions,
    segments: Vec<Segment>,
    file: File,
    durable: Durable,
    /// (segment number, byte offset) of every record.
    positions: Vec<(u32, u64)>,
    /// Set when a failed write could not be undone; reopen to recover.
    poisoned: bool,
}

/// Append-only, crash-safe file storage for the log.
///
/// Each [`append`](AuditSink::append) writes the batch with one `write` and one
/// `fdatasync`, then records the new durable size in the `durable` file beside the log (one
/// small in-place write and `fdatasync`); it returns only when both are durable.
///
/// On open, only an incomplete frame at the physical end of the last segment whose index
/// is at or past the recorded durable size (a crash in the middle of a write that was
/// never acknowledged) is cut off. Every other kind of damage — a bad length or checksum
/// anywhere, bytes after the last frame that cannot start a frame, a torn-looking frame
/// inside the acknowledged part — is reported as [`AuditError::Corrupt`], and a log with
/// fewer records than its durable size as [`AuditError::Truncated`]; nothing is changed.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use audit_chain::{AuditSink, FileSink};
/// let dir = tempfile::tempdir().unwrap();
/// let (sink, recovery) = FileSink::open(dir.path())?;
/// assert_eq!(recovery.records, 0);
/// assert_eq!(sink.size().await?, 0);
/// # Ok::<(), audit_chain::AuditError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct FileSink {
    inner: Arc<Mutex<Inner>>,
}

impl FileSink {
    /// Opens (creating if needed) the log in `dir` with default options and recovers it.
    ///
    /// # Errors
    /// See [`open_with`](Self::open_with).
    pub fn open(dir: &Path) -> Result<(Self, Recovery), AuditError> {
        Self::open_with(dir, FileSinkOptions::default())
    }

    /// Opens (creating if needed) the log in `dir` and recovers it: scans every segment,
    /// cuts a torn tail (unacknowledged, past the recorded durable size) off the last one,
    /// and indexes every record. Complete frames past the recorded durable size (written
    /// by a batch the crash kept from being acknowledged) are kept and recorded durable.
    ///
    /// A log without a `durable` file (written by an older version) is opened with the old
    /// rule (an incomplete final frame at any index is cut) and gets the file.
    ///
    /// # Errors
    /// [`AuditError::Corrupt`] for damage other than a torn tail, including an unreadable
    /// `durable` file; [`AuditError::Truncated`] when the log holds fewer records than its
    /// recorded durable size (in both cases nothing is changed);
    /// [`AuditError::InvalidConfig`] for a segment size under 4 KiB; I/O errors.
    pub fn open_with(dir: &Path, options: FileSinkOptions) -> Result<(Self, Recovery), AuditError> {
        if options.segment_max_bytes < 4096 {
            return Err(AuditError::InvalidConfig(
                "segment_max_bytes must be at least 4096".into(),
            ));
        }
        fs::create_dir_all(dir)
            .map_err(|e| AuditError::io(format!("creating {}", dir.display()), e))?;
        let listed = list_segments(dir)?;
        let loaded = load_durable(dir)?;
        if loaded.is_none() && !listed.is_empty() {
            tracing::warn!(
                dir = %dir.display(),
                "no durable-size record beside the audit log (written by an older version, \
                 or removed): an incomplete final frame at any index counts as torn"
            );
        }
        let durable = loaded.map_or(0, |(records, _)| records);
        let mut positions = Vec::new();
        let mut segments = Vec::new();
        let mut torn: Option<(u64, u64)> = None; // (cut at, bytes cut)
        let n = listed.len();
        for (i, (first, path)) in listed.into_iter().enumerate() {
            if first != positions.len() as u64 {
                return Err(AuditError::Corrupt {
                    location: path.display().to_string(),
                    reason: format!(
                        "segment starts at index {first} but {} records precede it",
                        positions.len()
                    ),
                });
            }
            let bytes = read_file(&path)?;
            let seg_no = u32::try_from(i).unwrap_or(u32::MAX);
            let cut_from = (i + 1 == n).then_some(durable);
            let (_, tail) =
                scan_segment(&segment_name(first), &bytes, first, cut_from, |off, _| {
                    positions.push((seg_no, off));
                })?;
            let len = match tail {
                Tail::Clean => bytes.len() as u64,
                Tail::Torn { offset } => {
                    torn = Some((offset, bytes.len() as u64 - offset));
                    offset
                }
            };
            segments.push(Segment { first, path, len });
        }
        // Acknowledged entries are missing: refuse before changing anything.
        if (positions.len() as u64) < durable {
            return Err(truncated(positions.len() as u64, durable));
        }
        if segments.is_empty() {
            segments.push(create_segment(dir, 0)?);
        }
        let last = segments.len() - 1;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&segments[last].path)
            .map_err(|e| AuditError::io("opening the last segment", e))?;
        let mut torn_bytes_cut = 0;
        if let Some((offset, bytes)) = torn {
            tracing::warn!(
                segment = %segments[last].path.display(),
                offset,
                bytes,
                "cutting torn tail of the audit log"
            );
            metrics::counter!("audit_chain_torn_tail_bytes_cut_total").increment(bytes);
            if offset < HEADER_LEN as u64 {
                rewrite_header(&mut file, segments[last].first)?;
                segments[last].len = HEADER_LEN as u64;
            } else {
                file.set_len(offset)
                    .map_err(|e| AuditError::io("cutting the torn tail", e))?;
            }
            file.sync_all()
                .map_err(|e| AuditError::io("syncing after recovery", e))?;
            torn_bytes_cut = bytes;
        }
        // Complete frames past the recorded size (written, not yet acknowledged) stay in the
        // log; from now on they count as durable too.
        let durable = Durable::open(dir, loaded, positions.len() as u64)?;
        let recovery = Recovery {
            records: positions.len() as u64,
            segments: segments.len(),
            torn_bytes_cut,
        };
        Ok((
            FileSink {
                inner: Arc::new(Mutex::new(Inner {
                    dir: dir.to_owned(),
                    options,
                    segments,
                    file,
                    durable,
                    positions,
                    poisoned: false,
                })),
            },
            recovery,
        ))
    }

    /// Synchronous [`append`](AuditSink::append): writes and fsyncs the batch.
    ///
    /// # Errors
    /// [`AuditError::InvalidEntry`] for a batch not starting at the current size or not
    /// consecutive; I/O errors (the write is undone; if that fails too the sink refuses
    /// further writes until reopened).
    pub fn append_blocking(&self, records: &[LogRecord]) -> Result<(), AuditError> {
        let batch = Batch::encode(records)?;
        self.inner.lock().write(&batch)
    }

    /// Synchronous [`read`](AuditSink::read).
    ///
    /// # Errors
    /// I/O errors, or [`AuditError::Corrupt`] if stored bytes changed since they were
    /// indexed.
    pub fn read_blocking(&self, start: u64, limit: usize) -> Result<Vec<LogRecord>, AuditError> {
        self.inner.lock().read(start, limit)
    }

    /// Synchronous [`store_checkpoint`](AuditSink::store_checkpoint).
    ///
    /// # Errors
    /// I/O errors.
    pub fn store_checkpoint_blocking(&self, note: &str) -> Result<(), AuditError> {
        self.inner.lock().store_checkpoint(note)
    }

    /// Synchronous [`load_checkpoint`](AuditSink::load_checkpoint).
    ///
    /// # Errors
    /// I/O errors.
    pub fn load_checkpoint_blocking(&self) -> Result<Option<String>, AuditError> {
        self.inner.lock().load_checkpoint()
    }

    /// Synchronous [`store_head`](AuditSink::store_head).
    ///
    /// # Errors
    /// I/O errors.
    pub fn store_head_blocking(&self, head: &LogHead) -> Result<(), AuditError> {
        self.inner.lock().replace_file(HEAD_FILE, &head.to_bytes())
    }

    /// Synchronous [`load_head`](AuditSink::load_head).
    ///
    /// # Errors
    /// I/O errors, or [`AuditError::Decode`] for a damaged head file.
    pub fn load_head_blocking(&self) -> Result<Option<LogHead>, AuditError> {
        self.inner.lock().load_head()
    }

    /// Number of records.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.inner.lock().positions.len() as u64
    }

    /// True when the log holds no record.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AuditError::io(format!("syncing directory {}", dir.display()), e))
}

/// Replaces file `name` in `dir` atomically: write a temporary file, fsync, rename, fsync
/// the directory.
fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), AuditError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut f =
        File::create(&tmp).map_err(|e| AuditError::io(format!("creating {name}.tmp"), e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| AuditError::io(format!("writing {name}.tmp"), e))?;
    fs::rename(&tmp, &path).map_err(|e| AuditError::io(format!("replacing {name}"), e))?;
    sync_dir(dir)
}

fn header(first: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..].copy_from_slice(&first.to_be_bytes());
    h
}

fn rewrite_header(file: &mut File, first: u64) -> Result<(), AuditError> {
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)).map(drop))
        .and_then(|()| file.write_all(&header(first)))
        .map_err(|e| AuditError::io("rewriting a torn segment header", e))
}

fn create_segment(dir: &Path, first: u64) -> Result<Segment, AuditError> {
    let path = dir.join(segment_name(first));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| AuditError::io(format!("creating {}", path.display()), e))?;
    f.write_all(&header(first))
        .and_then(|()| f.sync_all())
        .map_err(|e| AuditError::io(format!("writing {}", path.display()), e))?;
    sync_dir(dir)?;
    Ok(Segment {
        first,
        path,
        len: HEADER_LEN as u64,
    })
}

/// A batch encoded as frames, ready to be written.
struct Batch {
    first: u64,
    bytes: Vec<u8>,
    offsets: Vec<u64>,
}

impl Batch {
    fn encode(records: &[LogRecord]) -> Result<Self, AuditError> {
        let first = records.first().map_or(0, |r| r.index);
        check_batch(first, records)?;
        let mut bytes = Vec::with_capacity(records.len() * 320);
        let mut offsets = Vec::with_capacity(records.len());
        for r in records {
            offsets.push(bytes.len() as u64);
            encode_frame(r, &mut bytes);
        }
        Ok(Batch {
            first,
            bytes,
            offsets,
        })
    }
}

impl Inner {
    fn write(&mut self, batch: &Batch) -> Result<(), AuditError> {
        let Batch {
            first,
            bytes,
            offsets,
        } = batch;
        if self.poisoned {
            return Err(AuditError::Corrupt {
                location: self.dir.display().to_string(),
                reason: "an earlier failed write could not be undone; reopen the sink".into(),
            });
        }
        let size = self.positions.len() as u64;
        if offsets.is_empty() {
            return Ok(());
        }
        if *first != size {
            return Err(AuditError::InvalidEntry {
                field: "index",
                reason: format!("batch starts at index {first}, sink expects {size}"),
            });
        }
        let mut last = self.segments.len() - 1;
        if self.segments[last].len > HEADER_LEN as u64
            && self.segments[last].len + bytes.len() as u64 > self.options.segment_max_bytes
        {
            let seg = create_segment(&self.dir, size)?;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&seg.path)
                .map_err(|e| AuditError::io("opening a new segment", e))?;
            self.segments.push(seg);
            self.file = file;
            last += 1;
        }
        let base = self.segments[last].len;
        let result = self
            .file
            .seek(SeekFrom::Start(base))
            .and_then(|_| self.file.write_all(bytes))
            .and_then(|()| self.file.sync_data());
        if let Err(e) = result {
            // Undo a partial write so the next batch starts at a frame boundary.
            if self
                .file
                .set_len(base)
                .and_then(|()| self.file.sync_data())
                .is_err()
            {
                self.poisoned = true;
            }
            return Err(AuditError::io("writing an audit batch", e));
        }
        // Only now, with the frames fsynced, may the durable size cover them; the batch is
        // acknowledged only after this too is durable.
        debug_assert_eq!(self.durable.records, size, "durable size tracks the index");
        let new_size = size + offsets.len() as u64;
        if let Err(e) = self.durable.record(new_size) {
            // Undo in the order that keeps the recorded size at or below the frames on
            // disk: first the size, then the frames.
            let undone = self.durable.record(size).is_ok()
                && self
                    .file
                    .set_len(base)
                    .and_then(|()| self.file.sync_data())
                    .is_ok();
            if !undone {
                self.poisoned = true;
            }
            return Err(AuditError::io("recording the durable size", e));
        }
        self.segments[last].len = base + bytes.len() as u64;
        let seg_no = u32::try_from(last).unwrap_or(u32::MAX);
        self.positions
            .extend(offsets.iter().map(|o| (seg_no, base + o)));
        Ok(())
    }

    fn read(&mut self, start: u64, limit: usize) -> Result<Vec<LogRecord>, AuditError> {
        let size = self.positions.len() as u64;
        let mut out = Vec::new();
        let mut at = start;
        let end = start.saturating_add(limit as u64).min(size);
        while at < end {
            let (seg_no, offset) = self.positions[usize::try_from(at).unwrap_or(usize::MAX)];
            let seg = &self.segments[seg_no as usize];
            // Records of this segment within [at, end).
            let seg_end_index = self
                .segments
                .get(seg_no as usize + 1)
                .map_or(size, |s| s.first)
                .min(end);
            let end_offset = if seg_end_index < size
                && self.positions[usize::try_from(seg_end_index).unwrap_or(usize::MAX)].0 == seg_no
            {
                self.positions[usize::try_from(seg_end_index).unwrap_or(usize::MAX)].1
            } else {
                seg.len
            };
            let mut buf = vec![0u8; usize::try_from(end_offset - offset).unwrap_or(0)];
            let mut f = File::open(&seg.path)
                .map_err(|e| AuditError::io(format!("opening {}", seg.path.display()), e))?;
            f.seek(SeekFrom::Start(offset))
                .and_then(|_| f.read_exact(&mut buf))
                .map_err(|e| AuditError::io(format!("reading {}", seg.path.display()), e))?;
            let mut pos = 0usize;
            while at < seg_end_index {
                let corrupt = |reason: &str| AuditError::Corrupt {
                    location: format!("{} byte {}", seg.path.display(), offset + pos as u64),
                    reason: reason.to_owned(),
                };
                let len_bytes: [u8; 4] = buf
                    .get(pos..pos + 4)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| corrupt("frame changed since it was indexed"))?;
                let len = u32::from_be_bytes(len_bytes) as usize;
                let record = buf
                    .get(pos + 4..pos + 4 + len)
                    .ok_or_else(|| corrupt("frame changed since it was indexed"))?;
                let check = buf
                    .get(pos + 4 + len..pos + 12 + len)
                    .ok_or_else(|| corrupt("frame changed since it was indexed"))?;
                if frame_check(len_bytes, record) != check {
                    return Err(corrupt("frame checksum mismatch"));
                }
                let r = LogRecord::decode(record).map_err(|e| corrupt(&e.to_string()))?;
                if r.index != at {
                    return Err(corrupt("record index changed since it was indexed"));
                }
                out.push(r);
                pos += len + 12;
                at += 1;
            }
        }
        Ok(out)
    }

    fn replace_file(&self, name: &str, bytes: &[u8]) -> Result<(), AuditError> {
        replace_file(&self.dir, name, bytes)
    }

    fn store_checkpoint(&self, note: &str) -> Result<(), AuditError> {
        self.replace_file(CHECKPOINT_FILE, note.as_bytes())
    }

    fn load_head(&self) -> Result<Option<LogHead>, AuditError> {
        match fs::read(self.dir.join(HEAD_FILE)) {
            Ok(b) => LogHead::from_bytes(&b).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(AuditError::io("reading the log head", e)),
        }
    }

    fn load_checkpoint(&self) -> Result<Option<String>, AuditError> {
        match fs::read_to_string(self.dir.join(CHECKPOINT_FILE)) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(AuditError::io("reading the checkpoint", e)),
        }
    }
}

#[cfg(feature = "tokio")]
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AuditError> + Send + 'static,
) -> Result<T, AuditError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AuditError::io("file sink task", std::io::Error::other(e.to_string())))?
}

/// Each call runs the blocking file work on Tokio's blocking pool (feature `tokio`; without
/// it use the `*_blocking` methods).
#[cfg(feature = "tokio")]
#[async_trait]
impl AuditSink for FileSink {
    async fn append(&self, records: &[LogRecord]) -> Result<(), AuditError> {
        let batch = Batch::encode(records)?;
        let inner = Arc::clone(&self.inner);
        blocking(move || inner.lock().write(&batch)).await
    }

    async fn read(&self, start: u64, limit: usize) -> Result<Vec<LogRecord>, AuditError> {
        let inner = Arc::clone(&self.inner);
        blocking(move || inner.lock().read(start, limit)).await
    }

    async fn size(&self) -> Result<u64, AuditError> {
        Ok(self.len())
    }

    async fn store_checkpoint(&self, note: &str) -> Result<(), AuditError> {
        let inner = Arc::clone(&self.inner);
        let note = note.to_owned();
        blocking(move || inner.lock().store_checkpoint(&note)).await
    }

    async fn load_checkpoint(&self) -> Result<Option<String>, AuditError> {
        let inner = Arc::clone(&self.inner);
        blocking(move || inner.lock().load_checkpoint()).await
    }

    async fn store_head(&self, head: &LogHead) -> Result<(), AuditError> {
        let inner = Arc::clone(&self.inner);
        let bytes = head.to_bytes();
        blocking(move || inner.lock().replace_file(HEAD_FILE, &bytes)).await
    }

    async fn load_head(&self) -> Result<Option<LogHead>, AuditError> {
        let inner = Arc::clone(&self.inner);
        blocking(move || inner.lock().load_head()).await
    }
}
