//! The simulated machine: the durable stores that outlive a crash, the process that does
//! not (the ledger front and the transaction manager), and the fault wiring between them.
//!
//! Over the in-memory backend the store plays the disk: a crash drops the [`Process`] and
//! the audit writer with its open sink, but keeps the store's contents and its audit queue
//! (see [`SimAudit`]). Over PostgreSQL a crash drops the connection pool too.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use credits_core::tx::{LedgerHolds, MemoryTxLog, TransactionManager, TxLog};
use credits_core::{Ledger, LedgerStore, MemoryLedgerStore};
use metered_clock::{Clock, ManualClock};
use rand::Rng;
use rand::rngs::StdRng;

use crate::audit::SimAudit;
use crate::config::{Config, PARTICIPANTS, SHORT_RETENTION, START};
use crate::pg::PgRun;
use credits_core::testing::{Bug, FaultKind, Faults, FaultyStore, FaultyTxLog};

/// The process: everything a crash drops.
pub(crate) struct Process {
    /// The ledger front over the fault-injecting store.
    pub(crate) ledger: Ledger,
    /// The transaction manager over the fault-injecting log.
    pub(crate) tm: TransactionManager,
}

/// The stores, the fault switch, the clock and the running process.
pub(crate) struct Env {
    /// The simulated clock.
    pub(crate) clock: ManualClock,
    /// The fault switch every wrapped call consults.
    pub(crate) faults: Arc<Faults>,
    /// The ledger store without fault injection (broken when [`Config::bug`] is set).
    pub(crate) durable: Arc<dyn LedgerStore>,
    /// The transaction log without fault injection.
    pub(crate) txlog: Arc<dyn TxLog>,
    /// The audit log: the store's queue, the writer and its file sink (in-memory backend).
    pub(crate) audit: Option<SimAudit>,
    /// The database (PostgreSQL backend).
    pub(crate) pg: Option<PgRun>,
    /// The running process.
    pub(crate) proc: Process,
    bug: Option<Bug>,
}

impl Env {
    /// Opens the stores for `cfg` (the audit files in `dir`) and boots a process.
    pub(crate) async fn open(cfg: &Config, dir: &Path) -> Result<Self, String> {
        let clock = ManualClock::new(START);
        let (base, txlog, audit, pg): (Arc<dyn LedgerStore>, Arc<dyn TxLog>, _, _) =
            match &cfg.postgres {
                None => {
                    let backlog_max = if cfg.audit_fails_for_good {
                        crate::config::FOR_GOOD_BACKLOG_MAX
                    } else {
                        crate::audit::BACKLOG_MAX
                    };
                    let audit = SimAudit::open(dir, Arc::new(clock.clone()), backlog_max).await?;
                    if cfg.bug == Some(Bug::LoseAuditEntry) {
                        // The broken disk this bug stands for (see `Bug::LoseAuditEntry`).
                        audit.faults().lose_next();
                    }
                    let memory = MemoryLedgerStore::builder()
                        .shards(8)
                        .idempotency_window(if cfg.short_retention {
                            SHORT_RETENTION
                        } else {
                            Duration::from_secs(3650 * 24 * 3600)
                        })
                        .audit(audit.memory_audit())
                        .build();
                    (
                        Arc::new(memory),
                        Arc::new(MemoryTxLog::starting_at(1)),
                        Some(audit),
                        None,
                    )
                }
                Some(url) => {
                    // Group commit: two workers, groups of up to 64 requests.
                    let group = match cfg.group_commit {
                        true => Some(
                            credits_postgres::GroupCommitConfig::new(2, 64, 1_024)
                                .map_err(|e| e.to_string())?,
                        ),
                        false => None,
                    };
                    let pg = PgRun::create(url, cfg.seed, Arc::new(clock.clone()), group).await?;
                    let (store, txlog) = pg.handles();
                    (store, txlog, None, Some(pg))
                }
            };
        let durable = wrap(base, cfg.bug);
        let faults = Arc::new(Faults::new());
        let proc = boot(&durable, &txlog, &faults, &clock);
        Ok(Env {
            clock,
            faults,
            durable,
            txlog,
            audit,
            pg,
            proc,
            bug: cfg.bug,
        })
    }

    /// With probability [`Config::fault_probability`], arms one injected failure for one of
    /// the next storage calls (a crash with [`Config::crash_probability`]).
    pub(crate) fn maybe_arm(&self, rng: &mut StdRng, cfg: &Config) {
        if rng.random_bool(cfg.fault_probability) {
            let skip = rng.random_range(0..4);
            let crash = rng.random_bool(cfg.crash_probability);
            let after = rng.random_bool(0.5);
            let kind = match (crash, after) {
                (false, false) => FaultKind::Before,
                (false, true) => FaultKind::After,
                (true, false) => FaultKind::CrashBefore,
                (true, true) => FaultKind::CrashAfter,
            };
            self.faults.arm(skip, kind);
        }
    }

    /// Kills the process: the audit writer dies leaving `torn` as a torn tail, the clock
    /// moves on by `outage`, the database connections drop, and the audit log reopens (a
    /// new writer over the same queue). Returns how many bytes audit recovery cut. Call
    /// [`reboot`](Self::reboot) next.
    pub(crate) async fn crash(
        &mut self,
        torn: Option<&[u8]>,
        outage: Duration,
    ) -> Result<u64, String> {
        if let Some(audit) = &mut self.audit {
            audit.crash(torn).await?;
        }
        self.faults.disarm();
        self.faults.restart();
        if !outage.is_zero() {
            self.clock.advance(outage);
        }
        if let Some(pg) = &mut self.pg {
            pg.reconnect(Arc::new(self.clock.clone()))?;
            let (store, txlog) = pg.handles();
            self.durable = wrap(store, self.bug);
            self.txlog = txlog;
        }
        match &mut self.audit {
            Some(audit) => audit.reopen().await,
            None => Ok(0),
        }
    }

    /// Boots a fresh process over the durable stores (recovery is the caller's next step).
    pub(crate) fn reboot(&mut self) {
        self.proc = boot(&self.durable, &self.txlog, &self.faults, &self.clock);
    }
}

fn wrap(base: Arc<dyn LedgerStore>, bug: Option<Bug>) -> Arc<dyn LedgerStore> {
    match bug {
        // The durable store carries the bug (it survives reboots); the process's own wrapper
        // injects the faults.
        Some(bug) => Arc::new(FaultyStore::new(base, Arc::new(Faults::new())).with_bug(bug)),
        None => base,
    }
}

fn boot(
    durable: &Arc<dyn LedgerStore>,
    txlog: &Arc<dyn TxLog>,
    faults: &Arc<Faults>,
    clock: &ManualClock,
) -> Process {
    let store: Arc<dyn LedgerStore> =
        Arc::new(FaultyStore::new(Arc::clone(durable), Arc::clone(faults)));
    let clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let ledger: Ledger = Ledger::from_shared(store, Arc::clone(&clock));
    let log: Arc<dyn TxLog> = Arc::new(FaultyTxLog::new(Arc::clone(txlog), Arc::clone(faults)));
    let mut builder = TransactionManager::builder(log, clock);
    for name in PARTICIPANTS {
        builder = builder.participant(Arc::new(LedgerHolds::new(name, ledger.clone())));
    }
    Process {
        ledger,
        tm: builder.build(),
    }
}
