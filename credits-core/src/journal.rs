//! The immutable journal ([`JournalEntry`]) and the conservation counters ([`Totals`]).

use metered_clock::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{Amount, Balance, EntrySeq, HoldId, IdempotencyKey, LedgerError, LotId, TenantId};

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
        }
    }

    /// Whether a refund may refer to an entry of this kind.
    #[must_use]
    pub fn is_refundable(self) -> bool {
        matches!(self, EntryKind::Consumed | EntryKind::Committed)
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
    /// How much moved (> 0).
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
