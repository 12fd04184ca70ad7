//! What to simulate ([`Config`]) and what a clean run did ([`Report`]), with the constants
//! the workload and its checks share.

use std::collections::BTreeMap;
use std::time::Duration;

use metered_clock::Timestamp;

use credits_core::testing::Bug;

/// How often one request is re-sent after storage failures before the run gives up (one
/// injected fault per step means one retry is always enough when nothing else is wrong).
pub(crate) const RETRIES_MAX: u32 = 16;

/// Probability that the audit writer runs (flushes) after a step; otherwise committed
/// entries stay queued until a later turn, a restart or the end.
pub const AUDIT_TURN_PROBABILITY: f64 = 0.5;

/// The longest outage of the audit sink, in steps.
pub const AUDIT_OUTAGE_STEPS_MAX: u64 = 50;

/// The longest slow period of the audit disk, in steps (every write waits meanwhile).
pub const AUDIT_SLOW_STEPS_MAX: u64 = 20;

/// The audit backlog limit with [`Config::audit_fails_for_good`]: far above what the
/// workload's outages build (at most [`AUDIT_OUTAGE_STEPS_MAX`] steps of a few entries),
/// low enough for the final phase to reach it with one change per entry.
pub const FOR_GOOD_BACKLOG_MAX: usize = 2_048;

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

/// How long idempotency records are kept with [`Config::short_retention`]: shorter than
/// [`LONG_OUTAGE`].
pub const SHORT_RETENTION: Duration = Duration::from_secs(1_800);

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
    /// Keep idempotency records only [`SHORT_RETENTION`] (the default keeps them for ten
    /// years), and let the tenants work during a long outage of the coordinator, so that
    /// records of transaction steps are forgotten before recovery runs.
    pub short_retention: bool,
    /// After the workload, the audit disk fails for good (in-memory backend): the
    /// backlog is limited to [`FOR_GOOD_BACKLOG_MAX`] entries, changes are accepted and
    /// queued until it is reached, then each is refused with
    /// `LedgerError::AuditBacklogFull` and applies nothing (across a crash too); then the
    /// disk is replaced and everything queued must reach the log. Off by default (it adds
    /// the phase's changes to the trace, which PostgreSQL runs would not have).
    pub audit_fails_for_good: bool,
    /// Run against PostgreSQL at this URL (a private schema per run, dropped at the end)
    /// instead of the in-memory store.
    pub postgres: Option<String>,
    /// With [`postgres`](Self::postgres): the store batches concurrent commits (group
    /// commit, `PgConfig::group_commit`).
    pub group_commit: bool,
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
            short_retention: false,
            audit_fails_for_good: false,
            postgres: None,
            group_commit: false,
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

    /// Sets [`short_retention`](Self::short_retention).
    #[must_use]
    pub fn with_short_retention(mut self, on: bool) -> Self {
        self.short_retention = on;
        self
    }

    /// Sets [`audit_fails_for_good`](Self::audit_fails_for_good).
    #[must_use]
    pub fn with_audit_failing_for_good(mut self, on: bool) -> Self {
        self.audit_fails_for_good = on;
        self
    }

    /// Sets [`group_commit`](Self::group_commit) (for runs on PostgreSQL).
    #[must_use]
    pub fn with_group_commit(mut self, on: bool) -> Self {
        self.group_commit = on;
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
    /// Outages of the audit sink (every write failing for 1 to
    /// [`AUDIT_OUTAGE_STEPS_MAX`] steps; drawn on both backends, effective in memory).
    pub audit_outages: u64,
    /// Crashes right after the audit writer's write, before it took the entries off the
    /// queue (counted in `crashes` too; over PostgreSQL a plain crash).
    pub audit_deaths: u64,
    /// Flushes whose first write failed once (drawn on both backends, effective in
    /// memory).
    pub audit_fail_once: u64,
    /// Slow periods of the audit disk (every write waiting for 1 to
    /// [`AUDIT_SLOW_STEPS_MAX`] steps; drawn on both backends, effective in memory).
    pub audit_slow: u64,
    /// Changes refused with `AuditBacklogFull` while the disk failed for good
    /// ([`Config::audit_fails_for_good`]).
    pub audit_refused: u64,
    /// Distributed transactions committed / aborted.
    pub tx_committed: u64,
    /// Distributed transactions aborted.
    pub tx_aborted: u64,
    /// Outsiders' commits and cancels of prepared holds, all refused.
    pub outsiders_refused: u64,
    /// SHA-256 of the trace: equal for equal seeds.
    pub trace_hash: String,
    /// The trace lines, when [`Config::keep_trace`] is set.
    pub trace: Vec<String>,
}
