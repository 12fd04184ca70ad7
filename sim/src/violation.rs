//! What a run reports when an invariant breaks: one [`Violation`] variant per invariant,
//! each with the [`At`] (seed, step, operation) that reproduces it and the data it compared.

use std::fmt;

use credits_core::tx::{TxDecision, TxId, TxPhase};
use credits_core::{
    Amount, Balance, ConservationViolation, EntryKind, EntrySeq, HoldId, HoldState, IdempotencyKey,
    JournalEntry, LedgerError, Receipt, TenantId,
};
use metered_clock::Timestamp;

/// A ledger answer as the simulator records it.
pub type Answer = Result<Receipt, LedgerError>;

/// Where a violation was found: `cargo run -p sim -- --seed <seed> --ops <ops>` with the
/// same [`Config`](crate::Config) reaches it again at `step`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct At {
    /// The seed that reproduces it.
    pub seed: u64,
    /// The step at which it was found (`ops` for the final checks, 0 for the setup).
    pub step: u64,
    /// The step's operation, as the trace prints it.
    pub op: String,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seed {}, step {} ({})", self.seed, self.step, self.op)
    }
}

/// A broken invariant, or a failure that stops the run: where, and what was expected
/// against what was found.
///
/// The `Display` form is one line that starts with the seed and the step.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// The run could not go on: a temporary directory, the runtime, the database or the
    /// audit files failed outside the injected faults. Not a verdict on the ledger.
    #[error("{at}: {what}")]
    Environment {
        /// Where.
        at: At,
        /// What failed.
        what: String,
    },
    /// A ledger or transaction call failed in a way no injected fault explains.
    #[error("{at}: {call}: {error}")]
    Unexpected {
        /// Where.
        at: At,
        /// The call and its subject.
        call: String,
        /// Its error.
        error: Box<LedgerError>,
    },
    /// A request still failed with storage errors after
    /// `RETRIES_MAX` re-sends (one injected fault per step needs one).
    #[error("{at}: {tenant}/{key} keeps failing after {attempts} attempts: {error}")]
    RetriesExhausted {
        /// Where.
        at: At,
        /// The request's tenant.
        tenant: TenantId,
        /// The request's key.
        key: IdempotencyKey,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        error: Box<LedgerError>,
    },
    /// The totals of a tenant (or of the whole ledger, `tenant: None`) break a
    /// conservation equation.
    #[error("{at}: {}: {violation}", scope(.tenant.as_ref()))]
    Conservation {
        /// Where.
        at: At,
        /// The tenant, or `None` for the whole ledger.
        tenant: Option<TenantId>,
        /// The equation and the totals.
        violation: Box<ConservationViolation>,
    },
    /// A tenant is overdrawn beyond its overdraft limit.
    #[error("{at}: {tenant} overdrawn {found} beyond its limit {limit}")]
    OverdraftExceeded {
        /// Where.
        at: At,
        /// The tenant.
        tenant: TenantId,
        /// Its overdraft limit.
        limit: Amount,
        /// How much it is overdrawn.
        found: Amount,
    },
    /// A tenant's balance differs from the last journal entry's `after`.
    #[error("{at}: {tenant}: balance {found:?} differs from the last journal entry's {expected:?}")]
    BalanceMismatch {
        /// Where.
        at: At,
        /// The tenant.
        tenant: TenantId,
        /// The last journal entry's balance.
        expected: Balance,
        /// The store's balance.
        found: Balance,
    },
    /// A running counter (consumed, expired, granted, refunded) differs from what the
    /// journal or the acknowledged requests add up to.
    #[error("{at}: {tenant}: {counter} counter {found} but the {source_of_truth} say {expected}")]
    CounterMismatch {
        /// Where.
        at: At,
        /// The tenant.
        tenant: TenantId,
        /// Which counter.
        counter: &'static str,
        /// What it is compared with ("journal entries", "acknowledged requests").
        source_of_truth: &'static str,
        /// The sum of the source.
        expected: u64,
        /// The counter.
        found: u64,
    },
    /// A journal entry breaks a [`JournalRule`].
    #[error("{at}: {tenant} entry {seq}: {rule} ({entry:?})")]
    Journal {
        /// Where.
        at: At,
        /// The tenant.
        tenant: TenantId,
        /// The entry's sequence number.
        seq: EntrySeq,
        /// The rule broken.
        rule: Box<JournalRule>,
        /// The entry.
        entry: Box<JournalEntry>,
    },
    /// A tenant's journal, replayed by `Ledger::verify_journal` after a restart, disagrees
    /// with its stored counters.
    #[error("{at}: {tenant}: journal replay: {mismatch:?}")]
    JournalReplay {
        /// Where.
        at: At,
        /// The tenant.
        tenant: TenantId,
        /// The first disagreement.
        mismatch: Box<credits_core::JournalMismatch>,
    },
    /// A hold was never committed, cancelled or expired, long after every time-to-live.
    #[error("{at}: {tenant} hold {hold} never resolved")]
    HoldNeverResolved {
        /// Where.
        at: At,
        /// The tenant.
        tenant: TenantId,
        /// The hold.
        hold: HoldId,
    },
    /// Audit recovery after a crash cut bytes although no torn tail was written, or cut
    /// nothing although one was.
    #[error("{at}: audit recovery cut {cut_bytes} bytes, torn tail written: {torn_written}")]
    TornTail {
        /// Where.
        at: At,
        /// Bytes recovery cut.
        cut_bytes: u64,
        /// Whether the crash left a torn tail.
        torn_written: bool,
    },
    /// An acknowledged request's record is gone after a restart.
    #[error("{at}: acknowledged {tenant}/{key} lost after a restart")]
    AcknowledgedLost {
        /// Where.
        at: At,
        /// The request's tenant.
        tenant: TenantId,
        /// The request's key.
        key: IdempotencyKey,
    },
    /// An acknowledged request's record holds another command or answer after a restart.
    #[error(
        "{at}: acknowledged {tenant}/{key} changed after a restart: was {expected:?}, now {found:?}"
    )]
    AcknowledgedChanged {
        /// Where.
        at: At,
        /// The request's tenant.
        tenant: TenantId,
        /// The request's key.
        key: IdempotencyKey,
        /// The acknowledged answer.
        expected: Box<Answer>,
        /// The recorded answer.
        found: Box<Answer>,
    },
    /// A re-sent request was answered differently from the first time (during the run:
    /// `replay: false`; at the end, when every request is replayed: `replay: true`).
    #[error(
        "{at}: {} {tenant}/{key} answered {found:?}, first answer {expected:?}",
        if *.replay { "replaying" } else { "retry of" }
    )]
    AnswerChanged {
        /// Where.
        at: At,
        /// The request's tenant.
        tenant: TenantId,
        /// The request's key.
        key: IdempotencyKey,
        /// Whether this was the final replay of every request.
        replay: bool,
        /// The first answer.
        expected: Box<Answer>,
        /// The answer to the re-sent request.
        found: Box<Answer>,
    },
    /// A key reused for another command was not refused as an idempotency conflict.
    #[error("{at}: reusing {tenant}/{key} for another command answered {found:?}")]
    ConflictNotRefused {
        /// Where.
        at: At,
        /// The request's tenant.
        tenant: TenantId,
        /// The reused key.
        key: IdempotencyKey,
        /// The answer.
        found: Box<Answer>,
    },
    /// A batch returned another number of outcomes than it had requests.
    #[error("{at}: a batch of {expected} returned {found} outcomes")]
    BatchLength {
        /// Where.
        at: At,
        /// Requests in the batch.
        expected: usize,
        /// Outcomes returned.
        found: usize,
    },
    /// A rejected batch left the record of one of its requests.
    #[error("{at}: a rejected batch left the record of {tenant}/{key}")]
    RejectedBatchWrote {
        /// Where.
        at: At,
        /// The request's tenant.
        tenant: TenantId,
        /// The request's key.
        key: IdempotencyKey,
    },
    /// The transaction log does not show a transaction finished as it was answered.
    #[error("{at}: {tx} answered {answered:?} but the log says {found:?}")]
    TxLogDisagrees {
        /// Where.
        at: At,
        /// The transaction.
        tx: TxId,
        /// Its answer.
        answered: TxDecision,
        /// Its phase in the log.
        found: Option<TxPhase>,
    },
    /// A transaction branch did not end as its transaction was decided: a committed one not
    /// committed as planned, an aborted one still held or committed.
    #[error(
        "{at}: {tx} decided {decided:?} but branch {participant} ({tenant}) left its hold {found:?}{}",
        if *still_held { ", still held" } else { "" }
    )]
    TxBranchWrong {
        /// Where.
        at: At,
        /// The transaction.
        tx: TxId,
        /// The participant.
        participant: &'static str,
        /// Its tenant.
        tenant: TenantId,
        /// The logged decision.
        decided: TxDecision,
        /// The state of the hold the branch prepared, if it logged one.
        found: Option<HoldState>,
        /// Whether a hold of the branch is still held.
        still_held: bool,
    },
    /// Someone other than its transaction committed or cancelled a prepared hold (or the
    /// attempt changed the tenant).
    #[error(
        "{at}: an outsider's attempt on {tenant}'s prepared hold {hold} was not refused: {answers:?}"
    )]
    OutsiderResolved {
        /// Where.
        at: At,
        /// The tenant.
        tenant: TenantId,
        /// The hold.
        hold: HoldId,
        /// What the cancel and the commit answered.
        answers: Vec<String>,
    },
    /// A transaction is still unfinished after recovery past its deadline.
    #[error(
        "{at}: {tx} is still {phase:?} after recovery past its deadline ({unfinished} unfinished)"
    )]
    TxUnfinished {
        /// Where.
        at: At,
        /// The first unfinished transaction.
        tx: TxId,
        /// Its phase.
        phase: TxPhase,
        /// How many are unfinished.
        unfinished: usize,
    },
    /// The audit log failed to take or verify its records (the hook's failures, a broken
    /// chain or checkpoint, or PostgreSQL's sealed entries not matching the journal).
    #[error("{at}: audit: {what}")]
    Audit {
        /// Where.
        at: At,
        /// What is wrong.
        what: String,
    },
    /// A tenant's audit stream and journal differ in length.
    #[error("{at}: {tenant}: {expected} journal entries but {found} audit records")]
    AuditCount {
        /// Where.
        at: At,
        /// The tenant.
        tenant: TenantId,
        /// Journal entries.
        expected: usize,
        /// Audit records.
        found: usize,
    },
    /// An audit record does not seal the journal entry at its position.
    #[error("{at}: {tenant}: audit record {record} does not match journal entry {entry}")]
    AuditRecordMismatch {
        /// Where.
        at: At,
        /// The tenant.
        tenant: TenantId,
        /// The record's sequence number in its stream.
        record: u64,
        /// The journal entry at that position.
        entry: EntrySeq,
    },
    /// The audit log has a stream for no tenant's journal.
    #[error("{at}: audit records for {stream}, which has no journal")]
    AuditOrphanStream {
        /// Where.
        at: At,
        /// The stream.
        stream: String,
    },
}

fn scope(tenant: Option<&TenantId>) -> String {
    tenant.map_or_else(|| "whole ledger".to_owned(), ToString::to_string)
}

impl Violation {
    /// Where it was found (seed, step, operation).
    #[must_use]
    pub fn at(&self) -> &At {
        match self {
            Violation::Environment { at, .. }
            | Violation::Unexpected { at, .. }
            | Violation::RetriesExhausted { at, .. }
            | Violation::Conservation { at, .. }
            | Violation::OverdraftExceeded { at, .. }
            | Violation::BalanceMismatch { at, .. }
            | Violation::CounterMismatch { at, .. }
            | Violation::Journal { at, .. }
            | Violation::JournalReplay { at, .. }
            | Violation::HoldNeverResolved { at, .. }
            | Violation::TornTail { at, .. }
            | Violation::AcknowledgedLost { at, .. }
            | Violation::AcknowledgedChanged { at, .. }
            | Violation::AnswerChanged { at, .. }
            | Violation::ConflictNotRefused { at, .. }
            | Violation::BatchLength { at, .. }
            | Violation::RejectedBatchWrote { at, .. }
            | Violation::TxLogDisagrees { at, .. }
            | Violation::TxBranchWrong { at, .. }
            | Violation::OutsiderResolved { at, .. }
            | Violation::TxUnfinished { at, .. }
            | Violation::Audit { at, .. }
            | Violation::AuditCount { at, .. }
            | Violation::AuditRecordMismatch { at, .. }
            | Violation::AuditOrphanStream { at, .. } => at,
        }
    }

    /// The seed that reproduces it.
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.at().seed
    }

    /// The step at which it was found.
    #[must_use]
    pub fn step(&self) -> u64 {
        self.at().step
    }
}

/// A rule every journal entry keeps, checked as the simulator reads each new entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JournalRule {
    /// Sequence numbers run 1, 2, 3, … without gaps.
    #[error("sequence gap: expected {expected}")]
    SequenceGap {
        /// The next sequence number.
        expected: u64,
    },
    /// A tenant's journal holds only its entries.
    #[error("entry of another tenant ({found})")]
    OtherTenant {
        /// The entry's tenant.
        found: TenantId,
    },
    /// No entry moves zero credits.
    #[error("zero amount")]
    ZeroAmount,
    /// Entry times never go backwards.
    #[error("time went backwards (previous entry at {})", .previous.as_unix_millis())]
    TimeWentBackwards {
        /// The previous entry's time.
        previous: Timestamp,
    },
    /// Each entry's `before` is the previous entry's `after`.
    #[error("balance before {found:?} differs from the previous entry's after {expected:?}")]
    BalanceChain {
        /// The previous entry's `after`.
        expected: Balance,
        /// This entry's `before`.
        found: Balance,
    },
    /// An entry is stamped with the time of the step that made it.
    #[error(
        "stamped {} but made between {} and {}",
        .stamped.as_unix_millis(), .from.as_unix_millis(), .to.as_unix_millis()
    )]
    StampedOutsideStep {
        /// The entry's time.
        stamped: Timestamp,
        /// The step's start.
        from: Timestamp,
        /// The step's end.
        to: Timestamp,
    },
    /// Every keyed entry comes from a key a client sent.
    #[error("its key {key} was never sent by a client (an invented or doubled write)")]
    UnknownKey {
        /// The key.
        key: IdempotencyKey,
    },
    /// A request answered with an error wrote nothing.
    #[error("its request {key} was answered with an error")]
    WrittenAfterError {
        /// The key.
        key: IdempotencyKey,
    },
    /// One key makes at most one entry of each kind.
    #[error("a second {kind:?} entry under the key {key} (applied twice)")]
    AppliedTwice {
        /// The key.
        key: IdempotencyKey,
        /// The entry kind.
        kind: EntryKind,
    },
    /// Hold entries (reservations, resolutions, releases) name their hold.
    #[error("{kind:?} entry without a hold")]
    MissingHold {
        /// The entry kind.
        kind: EntryKind,
    },
    /// A reservation's recorded answer carries its expiry.
    #[error("reservation without a recorded expiry")]
    MissingExpiry,
    /// A hold is reserved once.
    #[error("hold {hold} reserved twice")]
    HoldReservedTwice {
        /// The hold.
        hold: HoldId,
    },
    /// Only reserved holds are resolved.
    #[error("resolution of an unknown hold {hold}")]
    UnknownHold {
        /// The hold.
        hold: HoldId,
    },
    /// A hold is committed, cancelled or expired once.
    #[error("hold {hold} resolved twice (first {first:?})")]
    HoldResolvedTwice {
        /// The hold.
        hold: HoldId,
        /// The first resolution.
        first: EntryKind,
    },
    /// A hold expires no earlier than its expiry.
    #[error("hold {hold} expired early (expires {})", .expires_at.as_unix_millis())]
    HoldExpiredEarly {
        /// The hold.
        hold: HoldId,
        /// Its expiry.
        expires_at: Timestamp,
    },
    /// The owner cannot commit or cancel an expired hold.
    #[error(
        "hold {hold} resolved by its owner at {} after it expired at {}",
        .resolved_at.as_unix_millis(), .expires_at.as_unix_millis()
    )]
    HoldResolvedAfterExpiry {
        /// The hold.
        hold: HoldId,
        /// Its expiry.
        expires_at: Timestamp,
        /// When the request that resolved it was made.
        resolved_at: Timestamp,
    },
    /// A release follows the commit of its hold.
    #[error("release of hold {hold}, which was not just committed")]
    ReleaseWithoutCommit {
        /// The hold.
        hold: HoldId,
    },
}
