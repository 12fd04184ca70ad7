//! The audit side of the simulation: a [`JournalHook`] that seals every journal entry into
//! its tenant's hash chain and appends it to a crash-safe [`FileSink`], and the checks that
//! the log verifies and matches the ledger's journal one to one.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use audit_chain::merkle::MerkleTree;
use audit_chain::{
    Checkpoint, FileSink, HmacKey, Keyring, LogRecord, MaskingPolicy, StreamChain, StreamHead,
    scan_dir, verify_dir,
};
use credits_core::audit::{audit_entry, stream_name};
use credits_core::{JournalEntry, JournalHook, LedgerError, StorageError, TenantId};
use parking_lot::Mutex;

/// The origin line of the simulator's checkpoints.
pub const ORIGIN: &str = "sim.metered.invalid/audit";

#[derive(Debug)]
struct Live {
    sink: FileSink,
    chains: BTreeMap<String, StreamChain>,
    next_index: u64,
}

/// A [`JournalHook`] writing one sealed audit record per journal entry to a file sink.
///
/// Process state (the open sink, the stream heads) is dropped by [`crash`](Self::crash)
/// and rebuilt from the files by [`reopen`](Self::reopen). The Merkle tree of every
/// acknowledged record is kept apart, like a checkpoint held by an outside witness: it is
/// what truncation or rewriting of the files is detected against.
#[derive(Debug)]
pub struct AuditHook {
    dir: PathBuf,
    keyring: Keyring,
    live: Mutex<Option<Live>>,
    witness: Mutex<MerkleTree>,
    failures: Mutex<Vec<String>>,
}

impl AuditHook {
    /// Opens (creating) the log in `dir`.
    ///
    /// # Errors
    /// The sink's open error, as text.
    pub fn open(dir: &Path) -> Result<Self, String> {
        let key = HmacKey::new(1, [0x5a; 32]).map_err(|e| e.to_string())?;
        let hook = AuditHook {
            dir: dir.to_owned(),
            keyring: Keyring::new(key),
            live: Mutex::new(None),
            witness: Mutex::new(MerkleTree::new()),
            failures: Mutex::new(Vec::new()),
        };
        hook.reopen(false)?;
        Ok(hook)
    }

    /// The keyring records are MACed with.
    #[must_use]
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Drops the process state; with `torn`, also leaves the trace of a write cut short by
    /// the crash (an incomplete frame at the end of the last segment).
    pub fn crash(&self, torn: Option<&[u8]>) {
        *self.live.lock() = None;
        if let Some(bytes) = torn
            && let Err(e) = self.tear(bytes)
        {
            self.failures
                .lock()
                .push(format!("writing a torn tail: {e}"));
        }
    }

    fn tear(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut segments: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        segments.sort();
        let Some(last) = segments.last() else {
            return Ok(());
        };
        // A frame header announcing more bytes than follow: a write the crash interrupted.
        let mut f = OpenOptions::new().append(true).open(last)?;
        let announced = u32::try_from(bytes.len() + 64).unwrap_or(u32::MAX);
        f.write_all(&announced.to_be_bytes())?;
        f.write_all(bytes)?;
        f.sync_all()
    }

    /// Reopens the sink (recovering a torn tail) and rebuilds every stream head from the
    /// records on disk. Returns the number of torn bytes cut.
    ///
    /// # Errors
    /// Recovery or scan failures, as text.
    pub fn reopen(&self, _after_crash: bool) -> Result<u64, String> {
        let (sink, recovery) = FileSink::open(&self.dir).map_err(|e| e.to_string())?;
        let scanned = scan_dir(&self.dir).map_err(|e| e.to_string())?;
        let mut chains = BTreeMap::new();
        for r in &scanned.records {
            let s = r.entry.stream().to_owned();
            let head = StreamHead {
                next_seq: r.entry.seq() + 1,
                last_hash: *r.entry.entry_hash(),
            };
            chains.insert(s.clone(), StreamChain::resume(s, head));
        }
        *self.live.lock() = Some(Live {
            sink,
            chains,
            next_index: recovery.records,
        });
        Ok(recovery.torn_bytes_cut)
    }

    /// Problems met while recording (a sealing or write failure is a lost audit record).
    #[must_use]
    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().clone()
    }

    /// The witness's checkpoint of every acknowledged record.
    #[must_use]
    pub fn checkpoint(&self) -> Checkpoint {
        let tree = self.witness.lock();
        Checkpoint {
            origin: ORIGIN.to_owned(),
            size: tree.size(),
            root: tree.root(),
        }
    }

    /// Verifies the files against the witness checkpoint and returns every record.
    ///
    /// # Errors
    /// The first verification failure, as text.
    pub fn verify(&self) -> Result<Vec<LogRecord>, String> {
        let cp = self.checkpoint();
        let v = verify_dir(&self.dir, &self.keyring, Some(&cp)).map_err(|e| e.to_string())?;
        if let Some(f) = v.report.failure {
            return Err(format!("audit log does not verify: {f}"));
        }
        if v.report.entries_ok != cp.size {
            return Err(format!(
                "audit log holds {} records, the witness saw {}",
                v.report.entries_ok, cp.size
            ));
        }
        let scanned = scan_dir(&self.dir).map_err(|e| e.to_string())?;
        Ok(scanned.records)
    }
}

impl AuditHook {
    fn refuse(&self, what: String) -> Result<(), LedgerError> {
        self.failures.lock().push(what.clone());
        Err(LedgerError::Storage(StorageError::retryable(what)))
    }
}

impl JournalHook for AuditHook {
    /// Seals and durably appends the entries; a failure refuses the change (so the ledger
    /// never holds an entry the audit log lacks) and is remembered for the final check.
    fn on_entries(&self, tenant: &TenantId, entries: &[JournalEntry]) -> Result<(), LedgerError> {
        let mut guard = self.live.lock();
        let Some(live) = guard.as_mut() else {
            return self.refuse(format!(
                "journal entries of {tenant} arrived while the audit log was closed"
            ));
        };
        let stream = stream_name(tenant);
        let mut staged = live
            .chains
            .get(&stream)
            .cloned()
            .unwrap_or_else(|| StreamChain::new(stream.clone()));
        let mut records = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            match staged.seal(
                &self.keyring,
                &MaskingPolicy::none(),
                audit_entry(&stream, e),
            ) {
                Ok(sealed) => records.push(LogRecord::new(live.next_index + i as u64, sealed)),
                Err(err) => return self.refuse(format!("sealing {tenant} #{}: {err}", e.seq)),
            }
        }
        if let Err(err) = live.sink.append_blocking(&records) {
            return self.refuse(format!("appending for {tenant}: {err}"));
        }
        live.chains.insert(stream, staged);
        live.next_index += records.len() as u64;
        let mut tree = self.witness.lock();
        for r in &records {
            tree.push(r.entry.leaf_hash());
        }
        Ok(())
    }
}
