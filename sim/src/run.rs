//! One run: the [`Sim`] that ties the machine ([`Env`]), the reference [`Model`] and the
//! [`Trace`] together, steps through the workload, and ends with the final checks.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use std::sync::Arc;

use credits_core::{
    Amount, IdempotencyKey, Ledger, LedgerError, RolloverPolicy, TenantId, TenantSettings,
};
use metered_clock::{Clock, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::audit::{SimAudit, Synced};
use crate::config::{
    AUDIT_OUTAGE_STEPS_MAX, AUDIT_SLOW_STEPS_MAX, AUDIT_TURN_PROBABILITY, Config, Report,
    SHORT_RETENTION, START, TX_TIMEOUT,
};
use crate::env::Env;
use crate::model::{Model, Tracked};
use crate::op::OpKind;
use crate::trace::Trace;
use crate::violation::{At, Violation};

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
    let dir =
        dir.map_err(|e| setup(config, format!("cannot create a temporary directory: {e}")))?;
    run_in(config, dir.path())
}

/// Runs one simulation keeping the audit log in `dir` (which should be empty).
///
/// # Errors
/// The first [`Violation`].
pub fn run_in(config: &Config, dir: &Path) -> Result<Report, Violation> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| setup(config, format!("cannot build a runtime: {e}")))?;
    runtime.block_on(async {
        let mut sim = Sim::new(config, dir).await?;
        let result = sim.run().await;
        if let Some(pg) = &sim.env.pg {
            pg.drop_schema().await;
        }
        result?;
        Ok(sim.report())
    })
}

/// A failure before the first step.
fn setup(config: &Config, what: String) -> Violation {
    Violation::Environment {
        at: At {
            seed: config.seed,
            step: 0,
            op: "setup".into(),
        },
        what,
    }
}

/// Milliseconds.
pub(crate) fn ms(d: u64) -> Duration {
    Duration::from_millis(d)
}

/// The simulator's state during one run.
pub(crate) struct Sim {
    /// What to simulate.
    pub(crate) cfg: Config,
    /// The one source of randomness: workload, faults and torn tails draw from it in turn.
    pub(crate) rng: StdRng,
    /// The stores, the clock, the faults and the process.
    pub(crate) env: Env,
    /// What clients were told.
    pub(crate) model: Model,
    /// The last idempotency key handed out.
    pub(crate) next_key: u64,
    /// The current step.
    pub(crate) step: u64,
    /// The current step's operation.
    pub(crate) op: String,
    /// When the current step started.
    pub(crate) step_now: Timestamp,
    /// The trace so far.
    pub(crate) trace: Trace,
    /// The counts so far.
    pub(crate) report: Report,
    /// Steps the audit sink's current outage still lasts (0: the sink is up).
    pub(crate) audit_outage_left: u64,
    /// Steps the audit disk stays slow (0: it is fast).
    pub(crate) audit_slow_left: u64,
    /// The audit disk is failing for good ([`Config::audit_fails_for_good`]'s phase).
    pub(crate) audit_failed_for_good: bool,
}

impl Sim {
    async fn new(cfg: &Config, dir: &Path) -> Result<Self, Violation> {
        let env = Env::open(cfg, dir).await.map_err(|what| setup(cfg, what))?;
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let tenants = (0..cfg.tenants.max(2))
            .map(|i| {
                let limit = if rng.random_bool(0.25) { 50 } else { 0 };
                let id = TenantId::new(format!("tenant-{i:02}"))
                    .map_err(|e| setup(cfg, e.to_string()))?;
                Ok((id, credits_core::Amount::new(limit)))
            })
            .collect::<Result<Vec<_>, Violation>>()?;
        Ok(Sim {
            cfg: cfg.clone(),
            rng,
            env,
            model: Model::new(tenants, cfg.short_retention.then_some(SHORT_RETENTION)),
            next_key: 0,
            step: 0,
            op: "setup".into(),
            step_now: START,
            trace: Trace::new(cfg.keep_trace),
            report: Report {
                seed: cfg.seed,
                ..Report::default()
            },
            audit_outage_left: 0,
            audit_slow_left: 0,
            audit_failed_for_good: false,
        })
    }

    fn report(&self) -> Report {
        Report {
            trace: self.trace.lines().to_vec(),
            ..self.report.clone()
        }
    }

    /// Where the run is: for violations.
    pub(crate) fn at(&self) -> At {
        At {
            seed: self.cfg.seed,
            step: self.step,
            op: self.op.clone(),
        }
    }

    /// A call that failed where no injected fault explains it.
    pub(crate) fn unexpected(&self, call: impl Into<String>, error: LedgerError) -> Violation {
        Violation::Unexpected {
            at: self.at(),
            call: call.into(),
            error: Box::new(error),
        }
    }

    /// A failure of the simulated machine itself (database, audit files).
    pub(crate) fn environment(&self, what: String) -> Violation {
        Violation::Environment {
            at: self.at(),
            what,
        }
    }

    /// Adds a line to the trace.
    pub(crate) fn line(&mut self, s: &str) {
        self.trace.line(self.step, s);
    }

    /// The simulated time.
    pub(crate) fn now(&self) -> Timestamp {
        self.env.clock.now()
    }

    /// Creates the tenants, runs every step with the checks after it, then the final checks.
    async fn run(&mut self) -> Result<(), Violation> {
        for (i, (t, limit)) in self.model.tenants.clone().into_iter().enumerate() {
            // Every third tenant rolls half of an expiring lot over (at most 200 credits,
            // for an hour).
            let rollover = (i % 3 == 0)
                .then(|| RolloverPolicy::new(50, Some(Amount::new(200)), ms(3_600_000)).ok())
                .flatten();
            let settings = TenantSettings {
                overdraft_limit: limit,
                rollover,
                ..TenantSettings::default()
            };
            if let Err(e) = self.env.proc.ledger.create_tenant(&t, settings).await {
                return Err(self.unexpected(format!("creating {t}"), e));
            }
            self.model.tracked.insert(t, Tracked::default());
        }
        for step in 0..self.cfg.ops {
            self.step = step;
            self.step_now = self.now();
            let kind = OpKind::roll(&mut self.rng);
            self.op = kind.name().to_owned();
            *self.report.by_kind.entry(kind.name()).or_default() += 1;
            self.perform(kind).await?;
            self.check_step().await?;
            self.audit_turn().await?;
        }
        self.step = self.cfg.ops;
        self.op = "final checks".into();
        self.finish().await
    }

    // ---- crashes -------------------------------------------------------------------------

    /// Drops the process and brings it back from the durable state: reopens the audit log
    /// (cutting a torn tail), runs transaction recovery and the ledger's recovery pass, then
    /// checks that nothing acknowledged was lost.
    pub(crate) async fn restart(&mut self, outage: Duration) -> Result<(), Violation> {
        self.report.crashes += 1;
        let torn = self.rng.random_bool(0.5).then(|| {
            (0..self.rng.random_range(1..48))
                .map(|_| self.rng.random())
                .collect::<Vec<u8>>()
        });
        let cut = match self.env.crash(torn.as_deref(), outage).await {
            Ok(cut) => cut,
            Err(what) => return Err(self.environment(what)),
        };
        // The crash let a slow write in flight finish; the new process's disk is fast.
        if self.audit_slow_left > 0 {
            self.audit_slow_left = 0;
            self.line("audit disk fast again (crash)");
        }
        let torn_written = torn.is_some() && self.env.audit.is_some();
        if torn_written != (cut > 0) {
            return Err(Violation::TornTail {
                at: self.at(),
                cut_bytes: cut,
                torn_written,
            });
        }
        if cut > 0 {
            self.report.torn_tails += 1;
        }
        if let Some(audit) = &self.env.audit
            && let Err(what) = audit.check_witness()
        {
            return Err(Violation::Audit {
                at: self.at(),
                what,
            });
        }
        if !outage.is_zero() && self.cfg.short_retention {
            self.work_during_outage().await?;
        }
        self.env.reboot();
        let tx = match self.env.proc.tm.recover().await {
            Ok(tx) => format!("{tx:?}"),
            // Deciding a transaction changes holds: refused like every change while the
            // audit disk has failed for good and the backlog is full (see below).
            Err(LedgerError::AuditBacklogFull { .. }) if self.audit_failed_for_good => {
                "refused: audit backlog full".to_owned()
            }
            Err(e) => return Err(self.unexpected("tx recovery", e)),
        };
        match self.env.proc.ledger.recover().await {
            // How many tenants a sweep visited is the backend's business; what expired is
            // not.
            Ok(sweep) => self.line(&format!(
                "restart tx={tx} holds_expired={} lots_expired={}",
                sweep.holds_expired, sweep.lots_expired
            )),
            // Expiries are changes too: with the audit disk failed for good and the backlog
            // full they are refused, not applied un-audited; the next recovery applies them.
            Err(LedgerError::AuditBacklogFull { .. }) if self.audit_failed_for_good => {
                self.line(&format!(
                    "restart tx={tx} recovery refused: audit backlog full"
                ));
            }
            Err(e) => return Err(self.unexpected("ledger recovery", e)),
        }
        self.check_acked_durable().await?;
        // The shipped replay check: every tenant's journal gives its stored counters.
        for (t, _) in self.model.tenants.clone() {
            match self.env.proc.ledger.verify_journal(&t).await {
                Ok(Ok(_)) => {}
                Ok(Err(mismatch)) => {
                    return Err(Violation::JournalReplay {
                        at: self.at(),
                        tenant: t,
                        mismatch: Box::new(mismatch),
                    });
                }
                Err(e) => return Err(self.unexpected(format!("replaying the journal of {t}"), e)),
            }
        }
        Ok(())
    }

    /// While the coordinator is down the ledger keeps serving its tenants: each makes a
    /// request with a fresh key (one the ledger refuses, so the model is unchanged), which
    /// lets the store forget idempotency records past their retention.
    async fn work_during_outage(&mut self) -> Result<(), Violation> {
        let ledger = Ledger::from_shared(
            Arc::clone(&self.env.durable),
            Arc::new(self.env.clock.clone()),
        );
        for (i, (t, _)) in self.model.tenants.clone().into_iter().enumerate() {
            let key = IdempotencyKey::new(format!("outage-{}-{i}", self.step))
                .map_err(|e| self.unexpected("outage key", e))?;
            match ledger.consume(&t, key, Amount::MAX).await {
                // Refused either way (a frozen tenant refuses before counting credits).
                Err(LedgerError::InsufficientCredits { .. } | LedgerError::TenantFrozen(_)) => {}
                Err(e) => return Err(self.unexpected("a consume during the outage", e)),
                Ok(receipt) => {
                    return Err(self.environment(format!(
                        "a consume of every credit during the outage was accepted: {receipt:?}"
                    )));
                }
            }
        }
        // What a retention job does (the memory store also forgets on its own).
        let horizon = Timestamp::from_unix_millis(
            self.env
                .clock
                .now()
                .as_unix_millis()
                .saturating_sub(u64::try_from(SHORT_RETENTION.as_millis()).unwrap_or(u64::MAX)),
        );
        if let Err(e) = self.env.durable.forget_keys(horizon).await {
            return Err(self.unexpected("forgetting idempotency records", e));
        }
        self.line("tenants worked during the outage");
        Ok(())
    }

    // ---- the audit writer ----------------------------------------------------------------

    /// The audit writer's turn after a step. Drawn on both backends, so that their traces
    /// stay equal (over PostgreSQL only the crash has an effect):
    ///
    /// * the audit sink's outage ends when its steps are up, or one starts (probability
    ///   [`Config::fault_probability`] / 8, lasting 1 to [`AUDIT_OUTAGE_STEPS_MAX`] steps):
    ///   every write of the sink fails meanwhile and the queue holds the entries;
    /// * the disk's slow period ends when its steps are up, or one starts (probability
    ///   fault / 8, lasting 1 to [`AUDIT_SLOW_STEPS_MAX`] steps): every write waits
    ///   meanwhile, so the writer's task sits inside a write while changes queue up;
    /// * with probability [`AUDIT_TURN_PROBABILITY`] the writer runs (a flush; otherwise
    ///   the entries stay queued, so crashes also land between commit and integration).
    ///   While the disk is slow it cannot: the turn only lets the writer's task start a
    ///   write (which waits). Otherwise, with probability fault × crash probability / 2 the
    ///   process dies right after the writer's next write, before it takes the entries off
    ///   the queue, and restarts; else with probability fault / 2 the flush's first write
    ///   fails once, and the next flush must integrate everything (no audit silence after
    ///   one failed write).
    pub(crate) async fn audit_turn(&mut self) -> Result<(), Violation> {
        if self.audit_outage_left > 0 {
            self.audit_outage_left -= 1;
            if self.audit_outage_left == 0 {
                self.set_audit_down(false);
                self.line("audit sink back");
            }
        } else if self.rng.random_bool(self.cfg.fault_probability / 8.0) {
            let steps = self.rng.random_range(1..=AUDIT_OUTAGE_STEPS_MAX);
            self.audit_outage_left = steps;
            self.report.audit_outages += 1;
            self.set_audit_down(true);
            self.line(&format!("audit sink down for {steps} steps"));
        }
        if self.audit_slow_left > 0 {
            self.audit_slow_left -= 1;
            if self.audit_slow_left == 0 {
                self.set_audit_slow(false).await?;
                self.line("audit disk fast again");
            }
        } else if self.rng.random_bool(self.cfg.fault_probability / 8.0) {
            let steps = self.rng.random_range(1..=AUDIT_SLOW_STEPS_MAX);
            self.audit_slow_left = steps;
            self.report.audit_slow += 1;
            self.set_audit_slow(true).await?;
            self.line(&format!("audit disk slow for {steps} steps"));
        }
        if !self.rng.random_bool(AUDIT_TURN_PROBABILITY) {
            return Ok(());
        }
        if self.audit_slow_left > 0 {
            // The writer's task runs (and waits inside its write); no flush.
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            return Ok(());
        }
        let death = self
            .rng
            .random_bool(self.cfg.fault_probability * self.cfg.crash_probability / 2.0);
        let once = !death && self.rng.random_bool(self.cfg.fault_probability / 2.0);
        if once {
            self.report.audit_fail_once += 1;
            self.line("audit write fails once");
        }
        if let Some(audit) = &mut self.env.audit {
            if death {
                audit.faults().arm_death();
            } else if once {
                audit.fail_once();
            }
            match audit.sync().await {
                Ok(Synced::Flushed(_) | Synced::Failed(_)) => {}
                Err(what) => {
                    return Err(Violation::Audit {
                        at: self.at(),
                        what,
                    });
                }
            }
        }
        if death {
            self.report.audit_deaths += 1;
            self.line("the process died while the audit writer wrote");
            self.restart(Duration::ZERO).await?;
        }
        Ok(())
    }

    /// Makes the audit disk slow or fast again (in-memory backend); writes that waited
    /// finish before this returns.
    async fn set_audit_slow(&self, slow: bool) -> Result<(), Violation> {
        if let Some(audit) = &self.env.audit
            && let Err(what) = audit.set_slow(slow).await
        {
            return Err(Violation::Audit {
                at: self.at(),
                what,
            });
        }
        Ok(())
    }

    /// [`Config::audit_fails_for_good`]: the audit disk fails every write from now on
    /// (in-memory backend). Grants of 1 credit under fresh keys, round robin over the
    /// tenants, are accepted and queued (the log does not grow) until the backlog is at
    /// its limit, then each is refused with [`LedgerError::AuditBacklogFull`] and changes
    /// nothing; a crash keeps the queue and the refusals. Then the disk is replaced: the
    /// final checks require every queued entry in the log. Bounded: at most the limit
    /// plus a few requests.
    async fn audit_fails_for_good(&mut self) -> Result<(), Violation> {
        const REFUSALS: u64 = 3;
        let Some(audit) = &self.env.audit else {
            return Ok(());
        };
        self.op = "audit sink fails for good".into();
        if self.audit_slow_left > 0 {
            self.audit_slow_left = 0;
            self.set_audit_slow(false).await?;
        }
        audit.faults().set_down(true);
        self.audit_failed_for_good = true;
        let limit = audit.backlog_max();
        let log = audit.log_size();
        self.line("audit sink fails for good");
        let tenants: Vec<TenantId> = self.model.tenants.iter().map(|(t, _)| t.clone()).collect();
        let mut refused = 0u64;
        for i in 0..limit + 8 {
            let tenant = tenants[i % tenants.len()].clone();
            let grant = credits_core::Command::Grant {
                amount: Amount::new(1),
                expires_at: None,
                priority: 0,
            };
            let key = IdempotencyKey::new(format!("for-good-{i}"))
                .map_err(|e| self.unexpected("a key", e))?;
            let req = credits_core::Request::new(tenant.clone(), key, grant);
            let backlog = self.env.audit.as_ref().map_or(0, |a| a.backlog());
            let totals = self.env.durable.totals(&tenant).await;
            let result = self.env.proc.ledger.apply(&req).await;
            match result {
                Ok(receipt) if backlog < limit => self.acknowledge(&req, &Ok(receipt))?,
                Ok(receipt) => {
                    return Err(Violation::Audit {
                        at: self.at(),
                        what: format!(
                            "a change was accepted with {backlog} entries waiting, at the \
                             limit of {limit}: {receipt:?}"
                        ),
                    });
                }
                Err(LedgerError::AuditBacklogFull { .. }) if backlog >= limit => {
                    let after = self.env.durable.totals(&tenant).await;
                    if after.as_ref().ok() != totals.as_ref().ok() {
                        return Err(Violation::Audit {
                            at: self.at(),
                            what: format!(
                                "a change refused for a full audit backlog changed {tenant}: \
                                 {totals:?} before, {after:?} after"
                            ),
                        });
                    }
                    refused += 1;
                    if refused == 1 {
                        // The queue is durable: after a crash the limit still holds.
                        self.restart(Duration::ZERO).await?;
                        self.set_audit_down(true);
                    }
                    if refused == REFUSALS {
                        break;
                    }
                }
                Err(e) => {
                    return Err(self.unexpected(
                        format!("a grant with the audit disk failed ({backlog} waiting)"),
                        e,
                    ));
                }
            }
        }
        self.report.audit_refused = refused;
        let now_log = self.env.audit.as_ref().and_then(SimAudit::log_size);
        if refused != REFUSALS || now_log != log {
            return Err(Violation::Audit {
                at: self.at(),
                what: format!(
                    "with the audit disk failing for good: {refused} changes refused (want \
                     {REFUSALS}), log size {log:?} before and {now_log:?} after"
                ),
            });
        }
        self.line(&format!("audit backlog full: {refused} changes refused"));
        // The disk is replaced: one flush integrates everything queued.
        self.set_audit_down(false);
        self.audit_failed_for_good = false;
        self.line("audit disk replaced");
        if let Some(audit) = &mut self.env.audit {
            match audit.sync().await {
                Ok(Synced::Flushed(cp)) if audit.backlog() == 0 => {
                    let line = format!("audit log integrated up to {}", cp.size);
                    self.line(&line);
                }
                other => {
                    return Err(Violation::Audit {
                        at: self.at(),
                        what: format!("the flush onto the replaced disk: {other:?}"),
                    });
                }
            }
        }
        Ok(())
    }

    /// Takes the audit sink down or brings it back (in-memory backend).
    fn set_audit_down(&self, down: bool) {
        if let Some(audit) = &self.env.audit {
            audit.faults().set_down(down);
        }
    }

    /// Restarts (without an outage) when an injected fault killed the process.
    pub(crate) async fn recover_if_crashed(&mut self) -> Result<(), Violation> {
        if self.env.faults.crashed() {
            self.restart(Duration::ZERO).await?;
        }
        Ok(())
    }

    // ---- the end -------------------------------------------------------------------------

    /// One last crash, transaction recovery past every deadline, every request replayed,
    /// then a jump far past every expiry and the audit comparison.
    async fn finish(&mut self) -> Result<(), Violation> {
        self.env.faults.disarm();
        // The audit sink's outage and slow period end: everything queued must reach the log.
        if self.audit_outage_left > 0 {
            self.audit_outage_left = 0;
            self.set_audit_down(false);
            self.line("audit sink back");
        }
        if self.audit_slow_left > 0 {
            self.audit_slow_left = 0;
            self.set_audit_slow(false).await?;
            self.line("audit disk fast again");
        }
        if self.cfg.audit_fails_for_good {
            self.audit_fails_for_good().await?;
            self.op = "final checks".into();
        }
        // One last crash: everything acknowledged must come back.
        self.restart(Duration::ZERO).await?;
        // Let every transaction deadline pass, then recover: every transaction ends.
        self.env.clock.advance(TX_TIMEOUT + ms(1_000));
        let report = match self.env.proc.tm.recover().await {
            Ok(report) => report,
            Err(e) => return Err(self.unexpected("final tx recovery", e)),
        };
        self.line(&format!("final tx recovery {report:?}"));
        self.check_txs_finished().await?;
        self.check_replays().await?;
        self.check_step().await?;
        // Far in the future every hold and dated lot has expired.
        self.env.clock.advance(Duration::from_secs(30 * 24 * 3600));
        self.step_now = self.now();
        if let Err(e) = self.env.proc.ledger.recover().await {
            return Err(self.unexpected("ledger recovery", e));
        }
        self.check_step().await?;
        self.check_holds_resolved()?;
        self.check_audit().await?;
        for (t, _) in self.model.tenants.clone() {
            let totals = match self.env.proc.ledger.store().totals(&t).await {
                Ok(totals) => totals,
                Err(e) => return Err(self.unexpected(format!("totals of {t}"), e)),
            };
            self.line(&format!("final {t} {totals:?}"));
        }
        self.report.ops = self.cfg.ops;
        self.report.faults = self.env.faults.injected();
        self.report.trace_hash = self.trace.hash();
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
