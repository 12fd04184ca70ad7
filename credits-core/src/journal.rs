//! The immutable journal ([`JournalEntry`]) and the conservation counters ([`Totals`]).

use metered_clock::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{
    Amount, Balance, EntrySeq, HoldId, IdempotencyKey, LedgerError, LotId, Reason, TenantId,
};

/// What a journal entry records. One word per meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EntryKind {
    /// Credits added (`available` up, or overdraft debt paid).
    Granted,
    /// Credits spent directly (`available` or overdraft debt).
    Consumed,
    /// Credits moved from `available` into a hold.
    Reserved,
    /// Held credits spent.
    Committed,
    /// The uncommitted rest of a committed hold moved back to `available`.
    Released,
    /// A whole hold moved back to `available` by its owner.
    Cancelled,
    /// A whole hold moved back to `available` because its time-to-live passed.
    HoldExpired,
    /// A lot's remaining credits stopped counting because it expired.
    LotExpired,
    /// Consumed credits given back (as a new lot, or paying overdraft debt).
    Refunded,
    /// A lot's remaining credits removed by an operator (`Command::VoidLot`, or a close),
    /// with the entry's [`reason`](JournalEntry::reason). Counted like an expiry: the
    /// credits leave `available` and join `expired`.
    LotVoided,
    /// The tenant was frozen: consumes and reserves are refused until it is unfrozen.
    /// Moves no credits (amount zero).
    Frozen,
    /// The tenant was unfrozen. Moves no credits (amount zero).
    Unfrozen,
    /// The tenant was closed: every later change is refused. Moves no credits (amount zero;
    /// the lots it still had were voided by the entries just before).
    Closed,
    /// Credits of an expiring lot granted again as a new lot (the entry's
    /// [`lot`](JournalEntry::lot)) under the tenant's
    /// [`RolloverPolicy`](crate::RolloverPolicy): they move from lot to lot, so counters
    /// and balance are unchanged. The rest of the expiring lot expires in the
    /// [`LotExpired`](EntryKind::LotExpired) entry that follows, if anything is left.
    RolledOver,
    /// Credits added by an import ([`Command::ImportGrant`](crate::Command::ImportGrant)):
    /// a [`Granted`](EntryKind::Granted) entry dated at its original time.
    ImportedGrant,
    /// Credits spent by an import
    /// ([`Command::ImportConsume`](crate::Command::ImportConsume)): a
    /// [`Consumed`](EntryKind::Consumed) entry dated at its original time (refundable).
    ImportedConsume,
}

impl EntryKind {
    /// A stable lower-case name (for storage and audit records).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Granted => "granted",
            EntryKind::Consumed => "consumed",
            EntryKind::Reserved => "reserved",
            EntryKind::Committed => "committed",
            EntryKind::Released => "released",
            EntryKind::Cancelled => "cancelled",
            EntryKind::HoldExpired => "hold_expired",
            EntryKind::LotExpired => "lot_expired",
            EntryKind::Refunded => "refunded",
            EntryKind::LotVoided => "lot_voided",
            EntryKind::Frozen => "frozen",
            EntryKind::Unfrozen => "unfrozen",
            EntryKind::Closed => "closed",
            EntryKind::RolledOver => "rolled_over",
            EntryKind::ImportedGrant => "imported_grant",
            EntryKind::ImportedConsume => "imported_consume",
        }
    }

    /// Whether a refund may refer to an entry of this kind.
    #[must_use]
    pub fn is_refundable(self) -> bool {
        matches!(
            self,
            EntryKind::Consumed | EntryKind::Committed | EntryKind::ImportedConsume
        )
    }

    /// Whether the entry changes the tenant's status rather than moving credits (its
    /// amount is zero).
    #[must_use]
    pub fn is_status(self) -> bool {
        matches!(
            self,
            EntryKind::Frozen | EntryKind::Unfrozen | EntryKind::Closed
        )
    }
}

/// One change to one tenant's balance. Entries are never modified; a tenant's entries are
/// numbered 1, 2, 3, … without gaps and their times never decrease.
///
/// Each entry carries everything an audit record needs: who, what, how much, the balance
/// before and after, the hold or lot involved, the request's idempotency key (`None` for
/// time-driven expiries) and when. Only successful changes are journal entries; a rejected
/// request leaves no entry (its failure is kept in the idempotency record).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Whose account.
    pub tenant: TenantId,
    /// Position in the tenant's journal.
    pub seq: EntrySeq,
    /// When (never earlier than the previous entry of the tenant).
    pub at: Timestamp,
    /// What happened.
    pub kind: EntryKind,
    /// How much moved (> 0; zero for a status change, [`EntryKind::is_status`]).
    pub amount: Amount,
    /// Balance before.
    pub before: Balance,
    /// Balance after.
    pub after: Balance,
    /// The hold involved (reserve, commit, release, cancel, hold expiry).
    pub hold: Option<HoldId>,
    /// The lot involved (grant, refund, lot expiry).
    pub lot: Option<LotId>,
    /// The entry a refund gives back.
    pub refers_to: Option<EntrySeq>,
    /// The idempotency key of the request that caused it (`None` for expiries).
    pub key: Option<IdempotencyKey>,
    /// Why, for an operator's change (a void); `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
}

/// A tenant's (or the whole ledger's) lifetime counters and current balance.
///
/// **Conservation**: every credit that ever entered is somewhere:
///
/// ```text
/// granted + refunded + overdrawn = available + held + consumed + expired
/// ```
///
/// (`overdrawn` sits on the left because overdraft consumption is counted in `consumed`
/// before any credit backed it.) `lots` and `holds` are recomputed from the live lots and
/// holds, independently of the counters: [`check`](Totals::check) also requires
/// `lots = available` and `holds = held`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Credits ever granted.
    pub granted: Amount,
    /// Credits ever refunded.
    pub refunded: Amount,
    /// Credits ever consumed (directly or by committing holds).
    pub consumed: Amount,
    /// Credits that expired unspent.
    pub expired: Amount,
    /// Current available credits (counter).
    pub available: Amount,
    /// Current held credits (counter).
    pub held: Amount,
    /// Current overdraft debt.
    pub overdrawn: Amount,
    /// Sum of the remaining amounts of live lots (recomputed).
    pub lots: Amount,
    /// Sum of active holds (recomputed).
    pub holds: Amount,
}

/// A broken conservation equation: a bug or corrupted storage, never a caller error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("conservation violated: {detail} ({totals:?})")]
pub struct ConservationViolation {
    /// Which equation failed.
    pub detail: &'static str,
    /// The totals checked.
    pub totals: Totals,
}

impl Totals {
    /// Adds another tenant's totals into these.
    ///
    /// # Errors
    /// [`LedgerError::AmountOverflow`] if a sum does not fit.
    pub fn accumulate(&mut self, other: &Totals) -> Result<(), LedgerError> {
        self.granted = self.granted.checked_add(other.granted)?;
        self.refunded = self.refunded.checked_add(other.refunded)?;
        self.consumed = self.consumed.checked_add(other.consumed)?;
        self.expired = self.expired.checked_add(other.expired)?;
        self.available = self.available.checked_add(other.available)?;
        self.held = self.held.checked_add(other.held)?;
        self.overdrawn = self.overdrawn.checked_add(other.overdrawn)?;
        self.lots = self.lots.checked_add(other.lots)?;
        self.holds = self.holds.checked_add(other.holds)?;
        Ok(())
    }

    /// The balance part.
    #[must_use]
    pub fn balance(&self) -> Balance {
        Balance {
            available: self.available,
            held: self.held,
            overdrawn: self.overdrawn,
        }
    }

    /// Checks the conservation equation and that the counters match the live lots and holds.
    ///
    /// ```
    /// use credits_core::{Amount, Totals};
    ///
    /// let t = Totals {
    ///     granted: Amount::new(100),
    ///     consumed: Amount::new(30),
    ///     held: Amount::new(20),
    ///     holds: Amount::new(20),
    ///     available: Amount::new(50),
    ///     lots: Amount::new(50),
    ///     ..Totals::default()
    /// };
    /// assert!(t.check().is_ok());
    /// ```
    ///
    /// # Errors
    /// [`ConservationViolation`] naming the equation that does not hold.
    pub fn check(&self) -> Result<(), ConservationViolation> {
        let inflow = u128::from(self.granted.units())
            + u128::from(self.refunded.units())
            + u128::from(self.overdrawn.units());
        let stock = u128::from(self.available.units())
            + u128::from(self.held.units())
            + u128::from(self.consumed.units())
            + u128::from(self.expired.units());
        let fail = |detail| {
            Err(ConservationViolation {
                detail,
                totals: *self,
            })
        };
        if inflow != stock {
            return fail("granted + refunded + overdrawn != available + held + consumed + expired");
        }
        if self.lots != self.available {
            return fail("sum of live lots != available");
        }
        if self.holds != self.held {
            return fail("sum of active holds != held");
        }
        Ok(())
    }
}

/// Which property of a journal replay failed (see [`JournalReplay`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JournalCheck {
    /// Entry numbers are not 1, 2, 3, … without gaps.
    Sequence,
    /// An entry's `before` is not the previous entry's `after` (zero for the first).
    Continuity,
    /// After an entry, `granted + refunded + overdrawn ≠ available + held + consumed +
    /// expired` over the replayed sums.
    Conservation,
    /// The replayed sums or the last balance differ from the stored counters.
    Counters,
    /// A sum does not fit a `u64`.
    Overflow,
}

/// The first disagreement a journal replay found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalMismatch {
    /// The entry at fault (`None` when the end state disagrees with the counters).
    pub entry: Option<EntrySeq>,
    /// The property that failed.
    pub check: JournalCheck,
    /// What was expected and what was found.
    pub detail: String,
}

/// Replays a tenant's journal from its first entry and checks it against the stored
/// counters: gap-free entry numbers, each entry starting where the previous one ended,
/// conservation after every entry, and the replayed sums (granted, refunded, consumed,
/// expired) and last balance equal to the counters. Feed it the entries in order
/// ([`push`](Self::push)), then [`finish`](Self::finish) with the stored [`Totals`].
///
/// ```
/// use credits_core::{Amount, Balance, EntryKind, EntrySeq, JournalEntry, JournalReplay, TenantId, Totals};
/// use metered_clock::Timestamp;
/// let grant = JournalEntry {
///     tenant: TenantId::new("acme")?, seq: EntrySeq::new(1), at: Timestamp::EPOCH,
///     kind: EntryKind::Granted, amount: Amount::new(10),
///     before: Balance::default(),
///     after: Balance { available: Amount::new(10), ..Balance::default() },
///     hold: None, lot: None, refers_to: None, key: None, reason: None,
/// };
/// let mut replay = JournalReplay::new();
/// replay.push(&grant);
/// let stored = Totals { granted: Amount::new(10), available: Amount::new(10), lots: Amount::new(10), ..Totals::default() };
/// assert!(replay.finish(&stored).is_ok());
/// # Ok::<(), credits_core::LedgerError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct JournalReplay {
    entries: u64,
    last: Balance,
    sums: Totals,
    failure: Option<JournalMismatch>,
}

impl JournalReplay {
    /// An empty replay.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries replayed so far.
    #[must_use]
    pub fn entries(&self) -> u64 {
        self.entries
    }

    fn fail(&mut self, entry: Option<EntrySeq>, check: JournalCheck, detail: String) {
        if self.failure.is_none() {
            self.failure = Some(JournalMismatch {
                entry,
                check,
                detail,
            });
        }
    }

    /// Replays the next entry (after the first failure, entries are only counted).
    pub fn push(&mut self, e: &JournalEntry) {
        self.entries += 1;
        if self.failure.is_some() {
            return;
        }
        let at = Some(e.seq);
        if e.seq.get() != self.entries {
            self.fail(
                at,
                JournalCheck::Sequence,
                format!("entry {} where {} was expected", e.seq, self.entries),
            );
            return;
        }
        if e.before != self.last {
            self.fail(
                at,
                JournalCheck::Continuity,
                format!(
                    "starts at {:?}, the previous entry ended at {:?}",
                    e.before, self.last
                ),
            );
            return;
        }
        let sum = match e.kind {
            EntryKind::Granted | EntryKind::ImportedGrant => &mut self.sums.granted,
            EntryKind::Refunded => &mut self.sums.refunded,
            EntryKind::Consumed | EntryKind::Committed | EntryKind::ImportedConsume => {
                &mut self.sums.consumed
            }
            EntryKind::LotExpired | EntryKind::LotVoided => &mut self.sums.expired,
            EntryKind::Frozen | EntryKind::Unfrozen | EntryKind::Closed => {
                self.last = e.after;
                return self.conserve(e);
            }
            EntryKind::Reserved
            | EntryKind::Released
            | EntryKind::Cancelled
            | EntryKind::HoldExpired
            | EntryKind::RolledOver => {
                self.last = e.after;
                return self.conserve(e);
            }
        };
        match sum.checked_add(e.amount) {
            Ok(s) => *sum = s,
            Err(_) => {
                self.fail(
                    at,
                    JournalCheck::Overflow,
                    "a replayed sum overflows".into(),
                );
                return;
            }
        }
        self.last = e.after;
        self.conserve(e);
    }

    fn conserve(&mut self, e: &JournalEntry) {
        let inflow = u128::from(self.sums.granted.units())
            + u128::from(self.sums.refunded.units())
            + u128::from(e.after.overdrawn.units());
        let stock = u128::from(e.after.available.units())
            + u128::from(e.after.held.units())
            + u128::from(self.sums.consumed.units())
            + u128::from(self.sums.expired.units());
        if inflow != stock {
            self.fail(
                Some(e.seq),
                JournalCheck::Conservation,
                format!(
                    "after it, granted + refunded + overdrawn = {inflow} but available + held + \
                     consumed + expired = {stock}"
                ),
            );
        }
    }

    /// Compares the replay with the tenant's stored counters.
    ///
    /// # Errors
    /// The first [`JournalMismatch`] found.
    pub fn finish(mut self, stored: &Totals) -> Result<u64, JournalMismatch> {
        if self.failure.is_none() {
            let replayed = (
                self.sums.granted,
                self.sums.refunded,
                self.sums.consumed,
                self.sums.expired,
                self.last,
            );
            let counters = (
                stored.granted,
                stored.refunded,
                stored.consumed,
                stored.expired,
                stored.balance(),
            );
            if replayed != counters {
                self.fail(
                    None,
                    JournalCheck::Counters,
                    format!(
                        "replayed (granted, refunded, consumed, expired, balance) {replayed:?}, \
                         stored {counters:?}"
                    ),
                );
            }
        }
        match self.failure {
            Some(f) => Err(f),
            None => Ok(self.entries),
        }
    }
}
