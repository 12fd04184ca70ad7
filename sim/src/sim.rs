//! The simulator: one seed → one workload → one run over the real APIs, with faults,
//! crashes and invariant checks after every step.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use credits_core::tx::{
    Decision, HoldBranch, LedgerHolds, MemoryTxLog, TransactionManager, TxId, TxLog, TxPhase,
};
use credits_core::{
    Amount, Command, Effect, EntryKind, EntrySeq, HoldId, IdempotencyKey, JournalEntry, Ledger,
    LedgerError, LedgerStore, MemoryLedgerStore, Outcome, PageRequest, Request, TenantId,
    TenantSettings,
};
use metered_clock::{Clock, ManualClock, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use crate::audit::AuditHook;
use crate::broken::{BrokenStore, Bug};
use crate::fault::{FaultKind, Faults, FaultyStore, FaultyTxLog};
use crate::pg::PgRun;
use credits_core::audit::{audit_entry, stream_name};

/// How often one request is re-sent after storage failures before the run gives up (one
/// injected fault per step means one retry is always enough when nothing else is wrong).
const RETRIES_MAX: u32 = 16;

/// Where the simulated clock starts.
pub const START: Timestamp = Timestamp::from_unix_millis(1_700_000_000_000);
/// The participants of distributed transactions (one tenant each per transaction).
pub const PARTICIPANTS: [&str; 2] = ["east", "west"];
/// How long a distributed transaction may stay undecided.
pub const TX_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the process stays down after a crash that interrupts a distributed
/// transaction when [`Config::long_outages`] is on: longer than [`TX_TIMEOUT`] and than
/// every hold time-to-live the workload uses (at most ten minutes).
pub const LONG_OUTAGE: Duration = Duration::from_secs(3_600);

/// What to simulate.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// The seed: the same seed replays the same run.
    pub seed: u64,
    /// Workload steps.
    pub ops: u64,
    /// Tenants (at least 2).
    pub tenants: usize,
    /// Probability that a step's storage calls get an injected failure.
    pub fault_probability: f64,
    /// Probability that an injected failure also kills the process (crashes between steps
    /// come from the workload mix besides).
    pub crash_probability: f64,
    /// Run over a deliberately broken store.
    pub bug: Option<Bug>,
    /// When a crash interrupts a distributed transaction, keep the process down for
    /// [`LONG_OUTAGE`] (past the transaction timeout and every hold time-to-live) before it
    /// comes back. Off by default; it once exposed a two-phase-commit atomicity bug (see
    /// `docs/simulation.md`, "Bugs found").
    pub long_outages: bool,
    /// Run against PostgreSQL at this URL (a private schema per run, dropped at the end)
    /// instead of the in-memory store.
    pub postgres: Option<String>,
    /// Keep the trace lines in the [`Report`] (for diffing two runs).
    pub keep_trace: bool,
}

impl Config {
    /// The default mix for `seed` and `ops`.
    #[must_use]
    pub fn new(seed: u64, ops: u64) -> Self {
        Config {
            seed,
            ops,
            tenants: 8,
            fault_probability: 0.08,
            crash_probability: 0.3,
            bug: None,
            long_outages: false,
            postgres: None,
            keep_trace: false,
        }
    }

    /// Runs over a store with `bug`.
    #[must_use]
    pub fn with_bug(mut self, bug: Bug) -> Self {
        self.bug = Some(bug);
        self
    }

    /// Sets [`long_outages`](Self::long_outages).
    #[must_use]
    pub fn with_long_outages(mut self, on: bool) -> Self {
        self.long_outages = on;
        self
    }

    /// Runs against PostgreSQL at `url` (e.g. `DATABASE_URL`).
    #[must_use]
    pub fn with_postgres(mut self, url: impl Into<String>) -> Self {
        self.postgres = Some(url.into());
        self
    }

    /// Keeps the trace lines in [`Report::trace`].
    #[must_use]
    pub fn with_trace(mut self, keep: bool) -> Self {
        self.keep_trace = keep;
        self
    }

    /// Sets the tenant count (at least 2).
    #[must_use]
    pub fn with_tenants(mut self, tenants: usize) -> Self {
        self.tenants = tenants.max(2);
        self
    }

    /// Sets the fault and crash probabilities (clamped to `0..=1`).
    #[must_use]
    pub fn with_faults(mut self, fault: f64, crash: f64) -> Self {
        self.fault_probability = fault.clamp(0.0, 1.0);
        self.crash_probability = crash.clamp(0.0, 1.0);
        self
    }
}

/// What a clean run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Steps run.
    pub ops: u64,
    /// Steps by kind.
    pub by_kind: BTreeMap<&'static str, u64>,
    /// Faults injected.
    pub faults: u64,
    /// Crashes (process restarts).
    pub crashes: u64,
    /// Torn audit tails cut by recovery.
    pub torn_tails: u64,
    /// Requests re-sent after an ambiguous (storage) failure.
    pub retries: u64,
    /// Journal entries at the end, over all tenants.
    pub journal_entries: u64,
    /// Audit records at the end (equal to `journal_entries`).
    pub audit_records: u64,
    /// Distributed transactions committed / aborted.
    pub tx_committed: u64,
    /// Distributed transactions aborted.
    pub tx_aborted: u64,
    /// SHA-256 of the trace: equal for equal seeds.
    pub trace_hash: String,
    /// The trace lines, when [`Config::keep_trace`] is set.
    pub trace: Vec<String>,
}

/// A broken invariant: where and what.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("seed {seed}, step {step} ({op}): {what}")]
pub struct Violation {
    /// The seed that reproduces it.
    pub seed: u64,
    /// The step at which it was found (`ops` for the final checks).
    pub step: u64,
    /// The step's operation.
    pub op: String,
    /// What is wrong.
    pub what: String,
}

/// Runs one simulation with a fresh temporary directory for the audit log.
///
/// # Errors
/// The first [`Violation`].
pub fn run(config: &Config) -> Result<Report, Violation> {
    // Prefer a memory file system: the audit sink syncs every batch.
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::Builder::new().prefix("sim-").tempdir_in(shm)
    } else {
        tempfile::tempdir()
    };
    let dir = dir.map_err(|e| Violation {
        seed: config.seed,
        step: 0,
        op: "setup".into(),
        what: format!("cannot create a temporary directory: {e}"),
    })?;
    run_in(config, dir.path())
}

/// Runs one simulation keeping the audit log in `dir` (which should be empty).
///
/// # Errors
/// The first [`Violation`].
pub fn run_in(config: &Config, dir: &Path) -> Result<Report, Violation> {
    let setup = |what: String| Violation {
        seed: config.seed,
        step: 0,
        op: "setup".into(),
        what,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| setup(format!("cannot build a runtime: {e}")))?;
    runtime.block_on(async {
        let mut sim = Sim::new(config, dir).await.map_err(setup)?;
        let result = sim.run().await.map_err(|what| Violation {
            seed: config.seed,
            step: sim.step,
            op: sim.op.clone(),
            what,
        });
        if let Some(pg) = &sim.pg {
            pg.drop_schema().await;
        }
        result?;
        Ok(sim.report())
    })
}

type Check = Result<(), String>;

/// The process: everything a crash drops.
struct Process {
    ledger: Ledger,
    tm: TransactionManager,
}

/// What the simulator knows about a tenant's journal, built from every entry it has read.
#[derive(Debug, Default)]
struct Tracked {
    seq: u64,
    last: Option<JournalEntry>,
    /// hold → (expires_at, resolution entry kind).
    holds: BTreeMap<HoldId, (Timestamp, Option<EntryKind>)>,
    /// (key, kind) of every keyed entry.
    keyed: BTreeSet<(String, &'static str)>,
    consumed_in_journal: u64,
    expired_in_journal: u64,
}

#[derive(Debug)]
struct TxPlan {
    id: TxId,
    branches: Vec<HoldBranch>,
    outcome: Decision,
}

struct Sim {
    cfg: Config,
    rng: StdRng,
    clock: ManualClock,
    faults: Arc<Faults>,
    durable: Arc<dyn LedgerStore>,
    txlog: Arc<dyn TxLog>,
    /// The file audit log (in-memory backend).
    audit: Option<Arc<AuditHook>>,
    /// The database (PostgreSQL backend).
    pg: Option<PgRun>,
    proc: Process,
    tenants: Vec<(TenantId, Amount)>,
    /// Every acknowledged request with its definitive result.
    acked: BTreeMap<(TenantId, IdempotencyKey), (Command, Result<Outcome, LedgerError>)>,
    ack_order: Vec<(TenantId, IdempotencyKey)>,
    holds: Vec<(TenantId, HoldId)>,
    refundable: Vec<(TenantId, EntrySeq, Amount)>,
    /// Acknowledged (granted, refunded) per tenant.
    inflow: BTreeMap<TenantId, (u64, u64)>,
    tracked: BTreeMap<TenantId, Tracked>,
    txs: Vec<TxPlan>,
    next_key: u64,
    step: u64,
    op: String,
    step_now: Timestamp,
    trace: Sha256,
    report: Report,
}

fn storage(e: &LedgerError) -> bool {
    e.is_storage()
}

fn ms(d: u64) -> Duration {
    Duration::from_millis(d)
}

impl Sim {
    async fn new(cfg: &Config, dir: &Path) -> Result<Self, String> {
        let clock = ManualClock::new(START);
        let (base, txlog, audit, pg): (Arc<dyn LedgerStore>, Arc<dyn TxLog>, _, _) =
            match &cfg.postgres {
                None => {
                    let audit = Arc::new(AuditHook::open(dir)?);
                    let memory = MemoryLedgerStore::builder()
                        .shards(8)
                        .idempotency_window(Duration::from_secs(3650 * 24 * 3600))
                        .journal_hook(audit.clone())
                        .build();
                    (
                        Arc::new(memory),
                        Arc::new(MemoryTxLog::new()),
                        Some(audit),
                        None,
                    )
                }
                Some(url) => {
                    let pg = PgRun::create(url, cfg.seed, Arc::new(clock.clone())).await?;
                    let (store, txlog) = pg.handles();
                    (store, txlog, None, Some(pg))
                }
            };
        let durable = Self::wrap(base, cfg.bug);
        let faults = Arc::new(Faults::new());
        let proc = Self::boot(&durable, &txlog, &faults, &clock);
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let tenants = (0..cfg.tenants.max(2))
            .map(|i| {
                let limit = if rng.random_bool(0.25) { 50 } else { 0 };
                let id = TenantId::new(format!("tenant-{i:02}")).map_err(|e| e.to_string())?;
                Ok((id, Amount::new(limit)))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Sim {
            cfg: cfg.clone(),
            rng,
            clock,
            faults,
            durable,
            txlog,
            audit,
            pg,
            proc,
            tenants,
            acked: BTreeMap::new(),
            ack_order: Vec::new(),
            holds: Vec::new(),
            refundable: Vec::new(),
            inflow: BTreeMap::new(),
            tracked: BTreeMap::new(),
            txs: Vec::new(),
            next_key: 0,
            step: 0,
            op: "setup".into(),
            step_now: START,
            trace: Sha256::new(),
            report: Report {
                seed: cfg.seed,
                ..Report::default()
            },
        })
    }

    fn wrap(base: Arc<dyn LedgerStore>, bug: Option<Bug>) -> Arc<dyn LedgerStore> {
        match bug {
            Some(bug) => Arc::new(BrokenStore::new(base, bug)),
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

    fn report(&self) -> Report {
        self.report.clone()
    }

    fn line(&mut self, s: &str) {
        self.trace.update(s.as_bytes());
        self.trace.update(b"\n");
        if self.cfg.keep_trace {
            self.report.trace.push(format!("{} {s}", self.step));
        }
    }

    fn key(&mut self) -> IdempotencyKey {
        self.next_key += 1;
        // Keys are short ASCII: always valid.
        IdempotencyKey::new(format!("k{}", self.next_key)).unwrap_or_else(|_| unreachable!())
    }

    fn tenant(&mut self) -> TenantId {
        let i = self.rng.random_range(0..self.tenants.len());
        self.tenants[i].0.clone()
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    // ---- faults and crashes --------------------------------------------------------------

    fn maybe_arm(&mut self) {
        if self.rng.random_bool(self.cfg.fault_probability) {
            let skip = self.rng.random_range(0..4);
            let crash = self.rng.random_bool(self.cfg.crash_probability);
            let after = self.rng.random_bool(0.5);
            let kind = match (crash, after) {
                (false, false) => FaultKind::Before,
                (false, true) => FaultKind::After,
                (true, false) => FaultKind::CrashBefore,
                (true, true) => FaultKind::CrashAfter,
            };
            self.faults.arm(skip, kind);
        }
    }

    /// Drops the process and brings it back from the durable state: reopens the audit log
    /// (cutting a torn tail), runs transaction recovery and the ledger's recovery pass, then
    /// checks that nothing acknowledged was lost.
    async fn restart(&mut self, outage: Duration) -> Check {
        self.report.crashes += 1;
        let torn = self.rng.random_bool(0.5).then(|| {
            (0..self.rng.random_range(1..48))
                .map(|_| self.rng.random())
                .collect::<Vec<u8>>()
        });
        if let Some(audit) = &self.audit {
            audit.crash(torn.as_deref());
        }
        self.faults.disarm();
        self.faults.restart();
        if !outage.is_zero() {
            self.clock.advance(outage);
        }
        if let Some(pg) = &mut self.pg {
            pg.reconnect(Arc::new(self.clock.clone()))?;
            let (store, txlog) = pg.handles();
            self.durable = Self::wrap(store, self.cfg.bug);
            self.txlog = txlog;
        }
        let cut = match &self.audit {
            Some(audit) => audit.reopen(true)?,
            None => 0,
        };
        let torn = torn.filter(|_| self.audit.is_some());
        if torn.is_some() != (cut > 0) {
            return Err(format!(
                "audit recovery cut {cut} bytes, torn tail written: {}",
                torn.is_some()
            ));
        }
        if cut > 0 {
            self.report.torn_tails += 1;
        }
        self.proc = Self::boot(&self.durable, &self.txlog, &self.faults, &self.clock);
        let tx = self
            .proc
            .tm
            .recover()
            .await
            .map_err(|e| format!("tx recovery: {e}"))?;
        let sweep = self
            .proc
            .ledger
            .recover()
            .await
            .map_err(|e| format!("ledger recovery: {e}"))?;
        // How many tenants a sweep visited is the backend's business; what expired is not.
        self.line(&format!(
            "restart tx={tx:?} holds_expired={} lots_expired={}",
            sweep.holds_expired, sweep.lots_expired
        ));
        self.check_acked_durable().await
    }

    async fn check_acked_durable(&self) -> Check {
        let store = self.proc.ledger.store();
        for (t, k) in &self.ack_order {
            let Some((command, result)) = self.acked.get(&(t.clone(), k.clone())) else {
                continue;
            };
            let record = store
                .idempotency_record(t, k)
                .await
                .map_err(|e| format!("reading the record of {t}/{k}: {e}"))?;
            match record {
                Some(r) if &r.command == command && &r.result == result => {}
                Some(r) => {
                    return Err(format!(
                        "acknowledged {t}/{k} changed after a restart: was {result:?}, now {:?}",
                        r.result
                    ));
                }
                None => return Err(format!("acknowledged {t}/{k} lost after a restart")),
            }
        }
        Ok(())
    }

    async fn recover_if_crashed(&mut self) -> Check {
        if self.faults.crashed() {
            let outage = Duration::ZERO;
            self.restart(outage).await?;
        }
        Ok(())
    }

    // ---- requests --------------------------------------------------------------------------

    /// Sends a request until it has a definitive answer (retrying the same key after
    /// injected failures and crashes) and records it.
    async fn submit(&mut self, req: Request) -> Result<Result<Outcome, LedgerError>, String> {
        self.maybe_arm();
        let mut attempts = 0u32;
        let result = loop {
            match self.proc.ledger.apply(&req).await {
                Err(e) if storage(&e) => {
                    attempts += 1;
                    if attempts > RETRIES_MAX {
                        return Err(format!("{}/{} keeps failing: {e}", req.tenant, req.key));
                    }
                    self.report.retries += 1;
                    self.recover_if_crashed().await?;
                }
                other => break other,
            }
        };
        self.faults.disarm();
        self.acknowledge(&req, &result)?;
        Ok(result)
    }

    fn acknowledge(&mut self, req: &Request, result: &Result<Outcome, LedgerError>) -> Check {
        let id = (req.tenant.clone(), req.key.clone());
        if let Some((command, first)) = self.acked.get(&id) {
            if command == &req.command && first != result {
                return Err(format!(
                    "retry of {}/{} answered {result:?}, first answer {first:?}",
                    req.tenant, req.key
                ));
            }
            return Ok(());
        }
        self.line(&format!(
            "{} {} {:?} => {result:?}",
            req.tenant, req.key, req.command
        ));
        self.acked
            .insert(id.clone(), (req.command.clone(), result.clone()));
        self.ack_order.push(id);
        if let Ok(o) = result {
            let inflow = self.inflow.entry(req.tenant.clone()).or_default();
            match req.command {
                Command::Grant { amount, .. } => inflow.0 += amount.units(),
                Command::Refund { amount, .. } => inflow.1 += amount.units(),
                _ => {}
            }
            match o.effect {
                Effect::Reserved { hold, .. } => self.holds.push((req.tenant.clone(), hold)),
                Effect::Consumed => {
                    if let Command::Consume { amount } = req.command {
                        self.refundable.push((req.tenant.clone(), o.entry, amount));
                    }
                }
                Effect::Committed { committed, .. } => {
                    self.refundable
                        .push((req.tenant.clone(), o.entry, committed));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn amount(&mut self, max: u64) -> Amount {
        Amount::new(self.rng.random_range(1..=max))
    }

    fn random_command(&mut self) -> Command {
        match self.rng.random_range(0..100) {
            0..25 => {
                let expires_at = self.rng.random_bool(0.5).then(|| {
                    self.now()
                        .saturating_add(ms(self.rng.random_range(1_000..7_200_000)))
                });
                Command::Grant {
                    amount: self.amount(500),
                    expires_at,
                    priority: self.rng.random_range(0..3),
                }
            }
            25..50 => Command::Consume {
                amount: self.amount(120),
            },
            50..70 => Command::Reserve {
                amount: self.amount(150),
                ttl: ms(self.rng.random_range(500..600_000)),
            },
            70..85 if !self.holds.is_empty() => {
                let (_, hold) = self.holds[self.rng.random_range(0..self.holds.len())];
                Command::Commit {
                    hold,
                    amount: self.amount(160),
                }
            }
            85..93 if !self.holds.is_empty() => {
                let (_, hold) = self.holds[self.rng.random_range(0..self.holds.len())];
                Command::Cancel { hold }
            }
            93..100 if !self.refundable.is_empty() => {
                let (_, entry, amount) =
                    self.refundable[self.rng.random_range(0..self.refundable.len())];
                Command::Refund {
                    entry,
                    amount: self.amount(amount.units().max(1) + 5),
                }
            }
            _ => Command::Consume {
                amount: self.amount(40),
            },
        }
    }

    /// A command for `tenant`; commands on holds or entries pick ones of that tenant when
    /// there are some (a foreign id is a legitimate unknown-hold test too).
    fn request(&mut self) -> Request {
        let mut command = self.random_command();
        let own = self.rng.random_bool(0.95);
        let tenant = match &command {
            Command::Commit { hold, .. } | Command::Cancel { hold } => self
                .holds
                .iter()
                .find(|(_, h)| h == hold)
                .map(|(t, _)| t.clone())
                .filter(|_| own),
            Command::Refund { entry, .. } => self
                .refundable
                .iter()
                .find(|(_, e, _)| e == entry)
                .map(|(t, _, _)| t.clone()),
            _ => None,
        };
        let tenant = tenant.unwrap_or_else(|| self.tenant());
        if let Command::Grant {
            expires_at: Some(at),
            ..
        } = &mut command
            && *at <= self.now()
        {
            *at = self.now().saturating_add(ms(1_000));
        }
        let key = self.key();
        Request::new(tenant, key, command)
    }

    // ---- the workload --------------------------------------------------------------------

    async fn run(&mut self) -> Check {
        for (t, limit) in self.tenants.clone() {
            self.proc
                .ledger
                .create_tenant(
                    &t,
                    TenantSettings {
                        overdraft_limit: limit,
                    },
                )
                .await
                .map_err(|e| format!("creating {t}: {e}"))?;
            self.tracked.insert(t, Tracked::default());
        }
        for step in 0..self.cfg.ops {
            self.step = step;
            self.step_now = self.now();
            let roll = self.rng.random_range(0..1000);
            let kind = match roll {
                0..600 => "request",
                600..660 => "batch",
                660..720 => "retry",
                720..740 => "conflict",
                740..800 => "transaction",
                800..920 => "clock",
                920..950 => "big-clock-jump",
                950..980 => "sweep",
                980..990 => "read",
                _ => "crash",
            };
            self.op = kind.to_owned();
            *self.report.by_kind.entry(kind).or_default() += 1;
            match kind {
                "request" => {
                    let req = self.request();
                    self.op = format!("{} {} {:?}", req.tenant, req.key, req.command);
                    let _answer = self.submit(req).await?;
                }
                "batch" => self.batch().await?,
                "retry" => self.retry().await?,
                "conflict" => self.conflict().await?,
                "transaction" => self.transaction().await?,
                "clock" => {
                    let d = ms(self.rng.random_range(1..20_000));
                    self.clock.advance(d);
                    self.line(&format!("clock +{d:?}"));
                }
                "big-clock-jump" => {
                    let d = ms(self.rng.random_range(600_000..4 * 3_600_000));
                    self.clock.advance(d);
                    self.line(&format!("clock +{d:?}"));
                }
                "sweep" => {
                    self.maybe_arm();
                    let tenants_max = self.rng.random_range(1..4);
                    loop {
                        match self.proc.ledger.sweep_step(tenants_max).await {
                            Ok(r) if r.more => {}
                            Ok(_) => break,
                            Err(e) if storage(&e) => {
                                self.report.retries += 1;
                                self.recover_if_crashed().await?;
                            }
                            Err(e) => return Err(format!("sweep failed: {e}")),
                        }
                    }
                    self.faults.disarm();
                }
                "read" => {
                    let t = self.tenant();
                    let b = self
                        .proc
                        .ledger
                        .balance(&t)
                        .await
                        .map_err(|e| format!("balance of {t}: {e}"))?;
                    self.line(&format!("balance {t} {b:?}"));
                }
                _ => self.restart(Duration::ZERO).await?,
            }
            self.check_step().await?;
        }
        self.step = self.cfg.ops;
        self.op = "final checks".into();
        self.finish().await
    }

    async fn batch(&mut self) -> Check {
        let n = self.rng.random_range(2..5);
        let mut reqs = Vec::with_capacity(n);
        for _ in 0..n {
            let mut r = self.request();
            // Batches carry the simple commands: a failed batch records nothing, which
            // makes holds and refunds in them hard to track.
            if !matches!(r.command, Command::Grant { .. } | Command::Consume { .. }) {
                r.command = Command::Consume {
                    amount: self.amount(30),
                };
            }
            reqs.push(r);
        }
        self.op = format!("batch of {n}");
        self.maybe_arm();
        let result = loop {
            match self.proc.ledger.batch(&reqs).await {
                Err(e) if storage(&e) => {
                    self.report.retries += 1;
                    self.recover_if_crashed().await?;
                }
                other => break other,
            }
        };
        self.faults.disarm();
        self.line(&format!("batch {reqs:?} => {result:?}"));
        match result {
            Ok(outcomes) => {
                if outcomes.len() != reqs.len() {
                    return Err("a batch returned the wrong number of outcomes".into());
                }
                for (r, o) in reqs.iter().zip(outcomes) {
                    self.acknowledge(r, &Ok(o))?;
                }
            }
            Err(LedgerError::BatchRejected { .. }) => {
                // Nothing was written: none of the keys may be remembered.
                for r in &reqs {
                    let rec = self
                        .proc
                        .ledger
                        .store()
                        .idempotency_record(&r.tenant, &r.key)
                        .await
                        .map_err(|e| e.to_string())?;
                    if rec.is_some() {
                        return Err(format!("a rejected batch left the record of {}", r.key));
                    }
                }
            }
            Err(e) => return Err(format!("unexpected batch failure: {e}")),
        }
        Ok(())
    }

    async fn retry(&mut self) -> Check {
        if self.ack_order.is_empty() {
            return Ok(());
        }
        let id = self.ack_order[self.rng.random_range(0..self.ack_order.len())].clone();
        let Some((command, _)) = self.acked.get(&id).cloned() else {
            return Ok(());
        };
        self.op = format!("retry {}/{}", id.0, id.1);
        let req = Request::new(id.0, id.1, command);
        // `submit` compares the answer with the first one.
        self.submit(req).await.map(|_| ())
    }

    async fn conflict(&mut self) -> Check {
        if self.ack_order.is_empty() {
            return Ok(());
        }
        let id = self.ack_order[self.rng.random_range(0..self.ack_order.len())].clone();
        let Some((command, _)) = self.acked.get(&id).cloned() else {
            return Ok(());
        };
        let other = Command::Consume {
            amount: Amount::new(1),
        };
        if other == command {
            return Ok(());
        }
        self.op = format!("conflict {}/{}", id.0, id.1);
        let req = Request::new(id.0.clone(), id.1.clone(), other);
        let result = loop {
            match self.proc.ledger.apply(&req).await {
                Err(e) if storage(&e) => self.recover_if_crashed().await?,
                other => break other,
            }
        };
        match result {
            Err(LedgerError::IdempotencyConflict(_)) => Ok(()),
            other => Err(format!(
                "reusing {}/{} for another command answered {other:?}",
                id.0, id.1
            )),
        }
    }

    async fn transaction(&mut self) -> Check {
        let a = self.tenant();
        let mut b = self.tenant();
        while b == a {
            b = self.tenant();
        }
        let branches: Vec<HoldBranch> = [a, b]
            .into_iter()
            .map(|t| {
                let reserve = self.amount(200);
                let commit = Amount::new(self.rng.random_range(0..=reserve.units()));
                HoldBranch::new(t, reserve, commit)
            })
            .collect();
        let want_commit = self.rng.random_bool(0.8);
        self.op = format!("transaction {branches:?} commit={want_commit}");
        // begin: an ambiguous begin leaves an empty transaction that recovery aborts.
        let tx = loop {
            self.maybe_arm();
            let r = self.proc.tm.begin(TX_TIMEOUT).await;
            self.faults.disarm();
            match r {
                Ok(tx) => break tx,
                Err(e) if storage(&e) => self.recover_if_crashed().await?,
                Err(e) => return Err(format!("begin: {e}")),
            }
        };
        for (name, branch) in PARTICIPANTS.iter().zip(&branches) {
            loop {
                match self.proc.tm.enlist(tx, name, branch.payload()).await {
                    Ok(()) => break,
                    Err(e) if storage(&e) => self.recover_if_crashed().await?,
                    Err(e) => return Err(format!("enlist: {e}")),
                }
            }
        }
        self.maybe_arm();
        let mut action = if want_commit {
            Decision::Commit
        } else {
            Decision::Abort
        };
        let outcome = loop {
            let r = match action {
                Decision::Commit => self.proc.tm.commit(tx).await.map(|_| ()),
                Decision::Abort => self.proc.tm.abort(tx).await.map(|_| ()),
            };
            match r {
                Ok(()) => break action,
                Err(e) if storage(&e) => {
                    self.report.retries += 1;
                    if self.faults.crashed() {
                        let outage = if self.cfg.long_outages {
                            LONG_OUTAGE
                        } else {
                            Duration::ZERO
                        };
                        self.restart(outage).await?;
                    }
                    match self
                        .txlog
                        .get(tx)
                        .await
                        .map_err(|e| e.to_string())?
                        .map(|r| r.phase)
                    {
                        Some(TxPhase::Finished(d)) => break d,
                        // Decided (say, aborted because a prepare failed) but phase two
                        // was interrupted: drive that decision.
                        Some(TxPhase::Decided(d)) => action = d,
                        _ => {}
                    }
                }
                Err(
                    LedgerError::TransactionAborted { .. } | LedgerError::TransactionTimedOut(_),
                ) => break Decision::Abort,
                Err(e) => return Err(format!("transaction {tx}: {e}")),
            }
        };
        self.faults.disarm();
        self.line(&format!("tx {tx} {branches:?} => {outcome:?}"));
        match outcome {
            Decision::Commit => self.report.tx_committed += 1,
            Decision::Abort => self.report.tx_aborted += 1,
        }
        self.txs.push(TxPlan {
            id: tx,
            branches,
            outcome,
        });
        if let Some(plan) = self.txs.last() {
            self.check_tx(plan).await?;
        }
        Ok(())
    }

    // ---- checks ----------------------------------------------------------------------------

    fn tx_key(tx: TxId, participant: &str, step: &str) -> Result<IdempotencyKey, String> {
        IdempotencyKey::new(format!("{tx}/{participant}/{step}")).map_err(|e| e.to_string())
    }

    /// Every transaction is finished as it answered; every committed one is applied on all
    /// participants, every aborted one on none.
    async fn check_tx(&self, plan: &TxPlan) -> Check {
        let store = self.proc.ledger.store();
        let record = self.txlog.get(plan.id).await.map_err(|e| e.to_string())?;
        let decided = match record.map(|r| r.phase) {
            Some(TxPhase::Finished(d)) if d == plan.outcome => d,
            other => {
                return Err(format!(
                    "{} answered {:?} but the log says {other:?}",
                    plan.id, plan.outcome
                ));
            }
        };
        for (name, b) in PARTICIPANTS.iter().zip(&plan.branches) {
            let commit = store
                .idempotency_record(&b.tenant, &Self::tx_key(plan.id, name, "commit")?)
                .await
                .map_err(|e| e.to_string())?;
            let applied = commit.as_ref().is_some_and(|r| r.result.is_ok());
            match decided {
                Decision::Commit if !applied => {
                    return Err(format!(
                        "{} decided commit but branch {name} ({}) did not commit: {:?}",
                        plan.id,
                        b.tenant,
                        commit.map(|r| r.result)
                    ));
                }
                Decision::Abort if commit.is_some() => {
                    return Err(format!(
                        "{} aborted but branch {name} has a commit",
                        plan.id
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn known_key(&self, tenant: &TenantId, key: &str) -> bool {
        key.starts_with("tx-")
            || IdempotencyKey::new(key).is_ok_and(|k| self.acked.contains_key(&(tenant.clone(), k)))
    }

    /// Reads every new journal entry of every tenant and checks it, then the counters.
    async fn check_step(&mut self) -> Check {
        let store = Arc::clone(self.proc.ledger.store());
        let now = self.now();
        let step_now = self.step_now;
        let mut entries_total = 0u64;
        for (t, limit) in self.tenants.clone() {
            let mut after = self
                .tracked
                .get(&t)
                .and_then(|k| (k.seq > 0).then(|| EntrySeq::new(k.seq)));
            loop {
                let page = store
                    .history(&t, PageRequest { after, limit: 500 })
                    .await
                    .map_err(|e| format!("history of {t}: {e}"))?;
                for e in &page.entries {
                    self.check_entry(&t, e, step_now, now).await?;
                }
                after = page.entries.last().map(|e| e.seq).or(after);
                if page.next.is_none() {
                    break;
                }
            }
            let totals = store.totals(&t).await.map_err(|e| e.to_string())?;
            totals.check().map_err(|v| format!("{t}: {v}"))?;
            if totals.overdrawn > limit {
                return Err(format!(
                    "{t} overdrawn {} beyond its limit {limit}",
                    totals.overdrawn
                ));
            }
            let tr = self.tracked.get(&t).ok_or("untracked tenant")?;
            entries_total += tr.seq;
            if let Some(last) = &tr.last
                && last.after != totals.balance()
            {
                return Err(format!(
                    "{t}: balance {:?} differs from the last journal entry's {:?}",
                    totals.balance(),
                    last.after
                ));
            }
            if totals.consumed.units() != tr.consumed_in_journal {
                return Err(format!(
                    "{t}: consumed counter {} but the journal spends {}",
                    totals.consumed, tr.consumed_in_journal
                ));
            }
            if totals.expired.units() != tr.expired_in_journal {
                return Err(format!(
                    "{t}: expired counter {} but the journal expires {}",
                    totals.expired, tr.expired_in_journal
                ));
            }
            let (granted, refunded) = self.acked_inflow(&t);
            if totals.granted.units() != granted || totals.refunded.units() != refunded {
                return Err(format!(
                    "{t}: granted {} / refunded {} but acknowledged grants {granted} / refunds {refunded}",
                    totals.granted, totals.refunded
                ));
            }
        }
        let all = store.totals_all().await.map_err(|e| e.to_string())?;
        all.check().map_err(|v| format!("whole ledger: {v}"))?;
        self.report.journal_entries = entries_total;
        Ok(())
    }

    fn acked_inflow(&self, t: &TenantId) -> (u64, u64) {
        self.inflow.get(t).copied().unwrap_or_default()
    }

    async fn check_entry(
        &mut self,
        t: &TenantId,
        e: &JournalEntry,
        step_now: Timestamp,
        now: Timestamp,
    ) -> Check {
        let store = Arc::clone(self.proc.ledger.store());
        // The hold's expiry, from the reservation's recorded outcome.
        let reserved_expiry = match (&e.kind, &e.key) {
            (EntryKind::Reserved, Some(k)) => {
                match store
                    .idempotency_record(t, k)
                    .await
                    .map_err(|x| x.to_string())?
                {
                    Some(r) => match r.result {
                        Ok(Outcome {
                            effect: Effect::Reserved { expires_at, .. },
                            ..
                        }) => Some(expires_at),
                        _ => None,
                    },
                    None => None,
                }
            }
            _ => None,
        };
        let known = e.key.as_ref().is_none_or(|k| self.known_key(t, k.as_str()));
        let acked_err = e.key.as_ref().is_some_and(|k| {
            self.acked
                .get(&(t.clone(), k.clone()))
                .is_some_and(|(_, r)| r.is_err())
        });
        let tr = self.tracked.get_mut(t).ok_or("untracked tenant")?;
        let fail = |what: String| Err(format!("{t} entry {}: {what} ({e:?})", e.seq));
        if e.seq.get() != tr.seq + 1 {
            return fail(format!("sequence gap after {}", tr.seq));
        }
        if e.tenant != *t {
            return fail("entry of another tenant".into());
        }
        if e.amount.is_zero() {
            return fail("zero amount".into());
        }
        if let Some(last) = &tr.last {
            if e.at < last.at {
                return fail("time went backwards".into());
            }
            if e.before != last.after {
                return fail("balance before differs from the previous entry's after".into());
            }
        }
        if e.at > now || e.at < step_now {
            return fail(format!(
                "stamped {} but made between {} and {}",
                e.at.as_unix_millis(),
                step_now.as_unix_millis(),
                now.as_unix_millis()
            ));
        }
        if !known {
            return fail(
                "its key was never sent by a client (an invented or doubled write)".into(),
            );
        }
        if acked_err {
            return fail("its request was answered with an error".into());
        }
        if let Some(k) = &e.key
            && !tr.keyed.insert((k.as_str().to_owned(), e.kind.as_str()))
        {
            return fail("a second entry of this kind under the same key (applied twice)".into());
        }
        match e.kind {
            EntryKind::Reserved => {
                let Some(h) = e.hold else {
                    return fail("reservation without a hold".into());
                };
                let Some(exp) = reserved_expiry else {
                    return fail("reservation without a recorded expiry".into());
                };
                if tr.holds.insert(h, (exp, None)).is_some() {
                    return fail("hold reserved twice".into());
                }
            }
            EntryKind::Committed | EntryKind::Cancelled | EntryKind::HoldExpired => {
                let Some(h) = e.hold else {
                    return fail("hold resolution without a hold".into());
                };
                let Some((exp, res)) = tr.holds.get_mut(&h) else {
                    return fail("resolution of an unknown hold".into());
                };
                if let Some(prev) = res {
                    return fail(format!("hold {h} resolved twice (first {prev:?})"));
                }
                match e.kind {
                    EntryKind::HoldExpired if e.at < *exp => {
                        return fail(format!(
                            "hold {h} expired early (expires {})",
                            exp.as_unix_millis()
                        ));
                    }
                    EntryKind::Committed | EntryKind::Cancelled if step_now >= *exp => {
                        return fail(format!(
                            "hold {h} resolved by its owner at {} after it expired at {}",
                            step_now.as_unix_millis(),
                            exp.as_unix_millis()
                        ));
                    }
                    _ => {}
                }
                *res = Some(e.kind);
            }
            EntryKind::Released => {
                let Some(h) = e.hold else {
                    return fail("release without a hold".into());
                };
                if !matches!(tr.holds.get(&h), Some((_, Some(EntryKind::Committed)))) {
                    return fail("release of a hold that was not just committed".into());
                }
            }
            _ => {}
        }
        if matches!(e.kind, EntryKind::Consumed | EntryKind::Committed) {
            tr.consumed_in_journal += e.amount.units();
        }
        if e.kind == EntryKind::LotExpired {
            tr.expired_in_journal += e.amount.units();
        }
        tr.seq = e.seq.get();
        tr.last = Some(e.clone());
        Ok(())
    }

    async fn finish(&mut self) -> Check {
        self.faults.disarm();
        // One last crash: everything acknowledged must come back.
        self.restart(Duration::ZERO).await?;
        // Let every transaction deadline pass, then recover: every transaction ends.
        self.clock.advance(TX_TIMEOUT + ms(1_000));
        let report = self.proc.tm.recover().await.map_err(|e| e.to_string())?;
        self.line(&format!("final tx recovery {report:?}"));
        for plan in &self.txs {
            self.check_tx(plan).await?;
        }
        let unfinished = self.txlog.unfinished().await.map_err(|e| e.to_string())?;
        if let Some(r) = unfinished.first() {
            return Err(format!(
                "{} is still {:?} after recovery past its deadline ({} unfinished)",
                r.id,
                r.phase,
                unfinished.len()
            ));
        }
        // Every retry replays the first answer.
        for id in self.ack_order.clone() {
            let Some((command, first)) = self.acked.get(&id).cloned() else {
                continue;
            };
            let again = self
                .proc
                .ledger
                .apply(&Request::new(id.0.clone(), id.1.clone(), command))
                .await;
            if again != first {
                return Err(format!(
                    "replaying {}/{} answered {again:?}, first answer {first:?}",
                    id.0, id.1
                ));
            }
        }
        self.check_step().await?;
        // Far in the future every hold and dated lot has expired.
        self.clock.advance(Duration::from_secs(30 * 24 * 3600));
        self.step_now = self.now();
        self.proc
            .ledger
            .recover()
            .await
            .map_err(|e| e.to_string())?;
        self.check_step().await?;
        for (t, tr) in &self.tracked {
            if let Some((h, _)) = tr.holds.iter().find(|(_, (_, r))| r.is_none()) {
                return Err(format!("{t} hold {h} never resolved"));
            }
        }
        self.check_audit().await?;
        for (t, _) in self.tenants.clone() {
            let totals = self
                .proc
                .ledger
                .store()
                .totals(&t)
                .await
                .map_err(|e| e.to_string())?;
            self.line(&format!("final {t} {totals:?}"));
        }
        self.report.ops = self.cfg.ops;
        self.report.faults = self.faults.injected();
        self.report.trace_hash = hex(&self.trace.clone().finalize());
        Ok(())
    }

    /// The audit log verifies against the witness checkpoint and holds exactly one record
    /// per journal entry, in journal order per tenant.
    async fn journal(&self, t: &TenantId) -> Result<Vec<JournalEntry>, String> {
        let store = self.proc.ledger.store();
        let mut journal = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .history(t, PageRequest { after, limit: 1000 })
                .await
                .map_err(|e| e.to_string())?;
            after = page.entries.last().map(|e| e.seq).or(after);
            journal.extend(page.entries);
            if page.next.is_none() {
                return Ok(journal);
            }
        }
    }

    /// PostgreSQL seals its own audit entries in the same SQL transaction as each change:
    /// per tenant they verify as a chain and match the journal one to one.
    async fn check_pg_audit(&mut self) -> Check {
        let mut total = 0;
        for (t, _) in self.tenants.clone() {
            let journal = self.journal(&t).await?;
            if let Some(pg) = &self.pg {
                total += pg.check_audit(&t, &journal).await?;
            }
        }
        self.report.audit_records = total;
        Ok(())
    }

    async fn check_audit(&mut self) -> Check {
        let Some(audit) = self.audit.clone() else {
            return self.check_pg_audit().await;
        };
        let failures = audit.failures();
        if let Some(f) = failures.first() {
            return Err(format!("audit hook: {f}"));
        }
        let records = audit.verify()?;
        self.report.audit_records = records.len() as u64;
        let mut streams: BTreeMap<&str, Vec<&audit_chain::SealedEntry>> = BTreeMap::new();
        for r in &records {
            streams.entry(r.entry.stream()).or_default().push(&r.entry);
        }
        let store = Arc::clone(self.proc.ledger.store());
        for (t, _) in &self.tenants {
            let mut journal = Vec::new();
            let mut after = None;
            loop {
                let page = store
                    .history(t, PageRequest { after, limit: 1000 })
                    .await
                    .map_err(|e| e.to_string())?;
                after = page.entries.last().map(|e| e.seq).or(after);
                journal.extend(page.entries);
                if page.next.is_none() {
                    break;
                }
            }
            let name = stream_name(t);
            let stream = streams.remove(name.as_str()).unwrap_or_default();
            if stream.len() != journal.len() {
                return Err(format!(
                    "{t}: {} journal entries but {} audit records",
                    journal.len(),
                    stream.len()
                ));
            }
            for (j, a) in journal.iter().zip(stream) {
                if a.seq() + 1 != j.seq.get() || a.entry() != &audit_entry(&name, j) {
                    return Err(format!(
                        "{t}: audit record {} does not match journal entry {}",
                        a.seq(),
                        j.seq
                    ));
                }
            }
        }
        if let Some((s, _)) = streams.first_key_value() {
            return Err(format!("audit records for {s}, which has no journal"));
        }
        Ok(())
    }
}

impl fmt::Debug for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.cfg.seed)
            .field("step", &self.step)
            .finish()
    }
}

/// Lowercase hex of bytes.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
