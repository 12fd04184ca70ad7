//! What callers ask for ([`Request`], [`Command`]) and what they get back ([`Receipt`]).

use std::time::Duration;

use metered_clock::Timestamp;
use serde::{Deserialize, Serialize};

use crate::tx::BranchId;
use crate::{
    Amount, BalanceThresholds, EntrySeq, HoldId, IdempotencyKey, LedgerError, LotId, Reason,
    TenantId,
};

/// One mutation of one tenant's account. Compared field by field to detect an idempotency
/// key reused for a different request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Command {
    /// Add credits as a new lot. Lots are consumed soonest-expiring first, then by ascending
    /// `priority` (0 first), then oldest first. An expired lot stops counting.
    Grant {
        /// How much (> 0).
        amount: Amount,
        /// When the lot expires (`None`: never). Must be in the future.
        expires_at: Option<Timestamp>,
        /// Tie-break between lots with the same expiry: lower numbers are spent first.
        priority: u16,
    },
    /// A [`Grant`](Self::Grant) that also carries the caller's [`GrantTag`]: a fingerprint
    /// of what the caller keeps with the grant outside the ledger (a service's metadata,
    /// say). Applied exactly like a grant; the tag is part of the command remembered under
    /// the key, so the same key with another tag (or without one) is an
    /// [`IdempotencyConflict`](crate::LedgerError::IdempotencyConflict) on every backend.
    TaggedGrant {
        /// How much (> 0).
        amount: Amount,
        /// When the lot expires (`None`: never). Must be in the future.
        expires_at: Option<Timestamp>,
        /// Tie-break between lots with the same expiry: lower numbers are spent first.
        priority: u16,
        /// The caller's fingerprint.
        tag: GrantTag,
    },
    /// Spend credits now (from lots, then from the overdraft allowance).
    Consume {
        /// How much (> 0).
        amount: Amount,
    },
    /// Spend as much as there is, up to `max`: `min(max, spendable)` where spendable counts
    /// the overdraft allowance, like [`Consume`](Self::Consume) (TigerBeetle's "balancing"
    /// transfer: metered work already done is charged for whatever is left). The receipt's
    /// [`Effect::Taken`] says how much. Refused with
    /// [`LedgerError::InsufficientCredits`](crate::LedgerError::InsufficientCredits) only
    /// when nothing at all is spendable.
    ConsumeUpTo {
        /// The most to spend (> 0).
        max: Amount,
    },
    /// Set credits aside in a hold that must be committed or cancelled before `ttl` passes,
    /// or it expires and the credits return. Holds are backed by credits only, never by the
    /// overdraft allowance.
    Reserve {
        /// How much (> 0).
        amount: Amount,
        /// How long the hold lives (> 0; rounded up to whole milliseconds).
        ttl: Duration,
    },
    /// Spend `amount` (≤ the held amount) of an active hold; the rest is released.
    Commit {
        /// The hold.
        hold: HoldId,
        /// How much to spend (> 0).
        amount: Amount,
    },
    /// Spend `min(max, held)` of an active hold; the rest is released (a commit that can
    /// never exceed its hold).
    CommitUpTo {
        /// The hold.
        hold: HoldId,
        /// The most to spend (> 0).
        max: Amount,
    },
    /// Release an active hold entirely.
    Cancel {
        /// The hold.
        hold: HoldId,
    },
    /// Give back part or all of a `Consumed` or `Committed` journal entry, as a new lot that
    /// never expires. A transaction's charge (the commit of a prepared hold) cannot be
    /// refunded.
    Refund {
        /// The consumption to reverse.
        entry: EntrySeq,
        /// How much (> 0, ≤ what the entry spent minus earlier refunds of it).
        amount: Amount,
    },
    /// Phase one of a transaction branch: set credits aside in a hold **owned by the
    /// branch**. It never expires on its own and answers only to the branch's decision
    /// ([`CommitPrepared`](Self::CommitPrepared), [`AbortPrepared`](Self::AbortPrepared));
    /// any other commit, cancel or refund is refused with
    /// [`LedgerError::HoldOwnedByTransaction`]. A branch holds at most one hold.
    Prepare {
        /// How much (> 0).
        amount: Amount,
        /// The owner.
        branch: BranchId,
    },
    /// Phase two, commit: spend `amount` (≤ held; zero releases everything) of the hold the
    /// branch prepared.
    CommitPrepared {
        /// The owner.
        branch: BranchId,
        /// The hold it prepared.
        hold: HoldId,
        /// How much to spend.
        amount: Amount,
    },
    /// Phase two, abort: release the hold the branch prepared (`hold`, or the branch's
    /// active hold when the coordinator never learnt which one it was).
    AbortPrepared {
        /// The owner.
        branch: BranchId,
        /// The hold it prepared, if known.
        hold: Option<HoldId>,
    },
    /// Remove what is left of one lot now (a grant given by mistake, a chargeback): one
    /// [`EntryKind::LotVoided`](crate::EntryKind::LotVoided) entry carrying `reason`. The
    /// voided credits are counted like expired ones. Credits of the lot already consumed
    /// are untouched, and so are credits of it sitting in a hold: if the hold releases them
    /// later (cancel, expiry, the rest of a commit), they return to the voided lot and
    /// expire at once, as with a lot that expired while held. Refused with
    /// [`LedgerError::UnknownLot`] for a lot never granted and [`LedgerError::LotEmpty`]
    /// for one with nothing left (spent, expired or voided already).
    VoidLot {
        /// The lot (from [`Effect::Granted`] or [`Effect::Refunded`]).
        lot: LotId,
        /// Why (recorded on the journal entry and its audit entry).
        reason: Reason,
    },
    /// Freeze the tenant: consumes, reserves, take-what-is-left and transaction prepares
    /// are refused with [`LedgerError::TenantFrozen`] until [`Unfreeze`](Self::Unfreeze).
    /// Grants, refunds, voids, and commits and cancels of existing holds still work, so
    /// running work can finish and money can be given back. Freezing a frozen tenant is
    /// refused with `TenantFrozen`.
    Freeze,
    /// Lift a freeze. Refused with [`LedgerError::TenantNotFrozen`] unless frozen.
    Unfreeze,
    /// Close the tenant for good: refused with [`LedgerError::HoldsOpen`] while any hold is
    /// active; otherwise every live lot is voided (one `LotVoided` entry each, reason
    /// [`CLOSE_REASON`]) and the tenant is closed (a `Closed` entry). Every later change is
    /// refused with [`LedgerError::TenantClosed`]; the history stays readable. Works on a
    /// frozen tenant too. Overdraft debt, if any, stays recorded as it was.
    Close,
    /// Import a grant from another system with its original time: applied as a
    /// [`Grant`](Self::Grant) made at `at` (expiries due by then are applied first, at
    /// `at`), recorded as an [`EntryKind::ImportedGrant`](crate::EntryKind::ImportedGrant)
    /// entry. A tenant's imports come in time order: `at` may be neither before the
    /// tenant's last entry ([`LedgerError::ImportOutOfOrder`](crate::LedgerError::ImportOutOfOrder))
    /// nor after now ([`LedgerError::ImportInFuture`](crate::LedgerError::ImportInFuture)).
    /// `expires_at` must be after `at`; a lot that has expired since expires at the next
    /// expiry pass. Put the other system's id in the idempotency key (say
    /// `import/<id>`): a re-run import then applies nothing twice.
    ImportGrant {
        /// How much (> 0).
        amount: Amount,
        /// When the lot expires (`None`: never). Must be after `at`.
        expires_at: Option<Timestamp>,
        /// Tie-break between lots with the same expiry: lower numbers are spent first.
        priority: u16,
        /// When it was granted in the other system.
        at: Timestamp,
    },
    /// Import a consumption from another system with its original time: applied as a
    /// [`Consume`](Self::Consume) made at `at` (refused as one when the credits and the
    /// overdraft allowance at `at` do not cover it), recorded as an
    /// [`EntryKind::ImportedConsume`](crate::EntryKind::ImportedConsume) entry, refundable
    /// like a consume. Time order and keys as for [`ImportGrant`](Self::ImportGrant).
    ImportConsume {
        /// How much (> 0).
        amount: Amount,
        /// When it was consumed in the other system.
        at: Timestamp,
    },
}

/// The reason recorded on the voids a [`Command::Close`] makes.
pub const CLOSE_REASON: &str = "tenant closed";

/// Whether a tenant accepts changes ([`Command::Freeze`], [`Command::Close`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AccountStatus {
    /// Every command is accepted.
    #[default]
    Open,
    /// Consumes and reserves are refused; the rest works.
    Frozen,
    /// Every change is refused, for good.
    Closed,
}

impl AccountStatus {
    /// A stable lower-case name (`open`, `frozen`, `closed`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Open => "open",
            AccountStatus::Frozen => "frozen",
            AccountStatus::Closed => "closed",
        }
    }
}

impl Command {
    /// The journal entry a store must look up and pass to
    /// [`Account::apply`](crate::backend::Account::apply) (only refunds refer to one).
    #[must_use]
    pub fn refers_to(&self) -> Option<EntrySeq> {
        match self {
            Command::Refund { entry, .. } => Some(*entry),
            _ => None,
        }
    }

    /// The hold this command resolves, if any (a backend loads that hold even when it is no
    /// longer active, so that the right "already resolved" error can be given).
    #[must_use]
    pub fn hold(&self) -> Option<HoldId> {
        match self {
            Command::Commit { hold, .. }
            | Command::CommitUpTo { hold, .. }
            | Command::Cancel { hold }
            | Command::CommitPrepared { hold, .. }
            | Command::AbortPrepared {
                hold: Some(hold), ..
            } => Some(*hold),
            _ => None,
        }
    }

    /// A short name for logs and metrics.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Command::Grant { .. } | Command::TaggedGrant { .. } => "grant",
            Command::Consume { .. } => "consume",
            Command::ConsumeUpTo { .. } => "consume_up_to",
            Command::Reserve { .. } => "reserve",
            Command::Commit { .. } => "commit",
            Command::CommitUpTo { .. } => "commit_up_to",
            Command::Cancel { .. } => "cancel",
            Command::Refund { .. } => "refund",
            Command::Prepare { .. } => "prepare",
            Command::CommitPrepared { .. } => "commit_prepared",
            Command::AbortPrepared { .. } => "abort_prepared",
            Command::VoidLot { .. } => "void_lot",
            Command::Freeze => "freeze",
            Command::Unfreeze => "unfreeze",
            Command::Close => "close",
            Command::ImportGrant { .. } => "import_grant",
            Command::ImportConsume { .. } => "import_consume",
        }
    }

    /// The original time of an import ([`ImportGrant`](Self::ImportGrant),
    /// [`ImportConsume`](Self::ImportConsume)); `None` for every other command, which
    /// applies now.
    #[must_use]
    pub fn import_time(&self) -> Option<Timestamp> {
        match self {
            Command::ImportGrant { at, .. } | Command::ImportConsume { at, .. } => Some(*at),
            _ => None,
        }
    }
}

/// A caller's 16-byte fingerprint of a grant's context kept outside the ledger (for
/// example the first 16 bytes of a SHA-256 of its metadata), carried by
/// [`Command::TaggedGrant`] and compared under the idempotency key with the rest of the
/// command. The ledger stores it and never interprets it.
///
/// ```
/// use credits_core::{Amount, GrantOptions, GrantTag, IdempotencyKey, Ledger, LedgerError, TenantId, TenantSettings};
/// use metered_clock::{ManualClock, Timestamp};
///
/// # futures::executor::block_on(async {
/// let ledger = Ledger::in_memory(ManualClock::new(Timestamp::from_unix_millis(1_000)));
/// let acme = TenantId::new("acme")?;
/// ledger.create_tenant(&acme, TenantSettings::default()).await?;
/// let key = IdempotencyKey::new("topup-1")?;
/// let tagged = |t: u8| GrantOptions::default().tag(GrantTag::new([t; 16]));
/// ledger.grant(&acme, key.clone(), Amount::new(10), tagged(1)).await?;
/// ledger.grant(&acme, key.clone(), Amount::new(10), tagged(1)).await?; // a replay
/// let err = ledger.grant(&acme, key, Amount::new(10), tagged(2)).await.unwrap_err();
/// assert!(matches!(err, LedgerError::IdempotencyConflict(_)));
/// assert_eq!(ledger.balance(&acme).await?.available, Amount::new(10));
/// # Ok::<(), LedgerError>(())
/// # }).unwrap();
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GrantTag([u8; 16]);

impl GrantTag {
    /// Wraps 16 bytes.
    #[must_use]
    pub const fn new(bytes: [u8; 16]) -> Self {
        GrantTag(bytes)
    }

    /// The 16 bytes.
    #[must_use]
    pub const fn bytes(&self) -> [u8; 16] {
        self.0
    }
}

/// A [`Command`] for a tenant under an idempotency key: the unit a store applies.
///
/// ```
/// use credits_core::{Amount, Command, IdempotencyKey, Request, TenantId};
///
/// let r = Request::new(
///     TenantId::new("acme")?,
///     IdempotencyKey::new("charge-1")?,
///     Command::Consume { amount: Amount::new(5) },
/// );
/// assert_eq!(r.command.name(), "consume");
/// # Ok::<(), credits_core::LedgerError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Whose account.
    pub tenant: TenantId,
    /// The caller's name for this mutation (unique per tenant).
    pub key: IdempotencyKey,
    /// What to do.
    pub command: Command,
}

impl Request {
    /// Bundles the three parts.
    #[must_use]
    pub fn new(tenant: TenantId, key: IdempotencyKey, command: Command) -> Self {
        Request {
            tenant,
            key,
            command,
        }
    }
}

/// A tenant's balance.
///
/// * `available`: unexpired credits not set aside in holds (spendable now);
/// * `held`: credits set aside in active holds;
/// * `overdrawn`: credits consumed beyond the available ones, within the overdraft limit
///   (a debt that the next grant or refund pays first).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Balance {
    /// Unexpired credits not in holds.
    pub available: Amount,
    /// Credits in active holds.
    pub held: Amount,
    /// Debt taken through the overdraft allowance.
    pub overdrawn: Amount,
}

impl std::fmt::Display for Balance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "available {}, held {}, overdrawn {}",
            self.available, self.held, self.overdrawn
        )
    }
}

/// What a successful command did, beyond the common fields of [`Receipt`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Effect {
    /// A grant created this lot (`None` when the whole grant paid off overdraft debt).
    Granted {
        /// The new lot.
        lot: Option<LotId>,
    },
    /// Credits were consumed.
    Consumed,
    /// A [`Command::ConsumeUpTo`] consumed `amount` (at most what it asked for).
    Taken {
        /// How much was spent.
        amount: Amount,
    },
    /// A hold was created.
    Reserved {
        /// The hold (pass it to commit or cancel).
        hold: HoldId,
        /// When it expires unless resolved.
        expires_at: Timestamp,
    },
    /// A hold was committed.
    Committed {
        /// The hold.
        hold: HoldId,
        /// How much was spent.
        committed: Amount,
        /// How much went back.
        released: Amount,
    },
    /// A hold was cancelled.
    Cancelled {
        /// The hold.
        hold: HoldId,
        /// How much went back.
        released: Amount,
    },
    /// Credits were refunded.
    Refunded {
        /// The new lot (`None` when the whole refund paid off overdraft debt).
        lot: Option<LotId>,
    },
    /// What was left of a lot was voided.
    Voided {
        /// The lot.
        lot: LotId,
        /// How much was removed.
        voided: Amount,
    },
    /// The tenant was frozen.
    Frozen,
    /// The tenant was unfrozen.
    Unfrozen,
    /// The tenant was closed.
    Closed {
        /// How much its remaining lots held (voided by the close).
        voided: Amount,
    },
}

/// The receipt of a successful command: its main journal entry, the balance right after it,
/// and what it did. Replaying the idempotency key returns this same value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The command's main journal entry.
    pub entry: EntrySeq,
    /// When it was applied.
    pub at: Timestamp,
    /// The balance right after it.
    pub balance: Balance,
    /// What it did.
    pub effect: Effect,
}

impl Receipt {
    /// The hold a `Reserve` created.
    #[must_use]
    pub fn hold(&self) -> Option<HoldId> {
        match self.effect {
            Effect::Reserved { hold, .. } => Some(hold),
            _ => None,
        }
    }

    /// The [`Reservation`] this receipt records, if it is a `Reserve`'s.
    #[must_use]
    pub fn reservation(&self) -> Option<Reservation> {
        match self.effect {
            Effect::Reserved { hold, expires_at } => Some(Reservation {
                hold,
                expires_at,
                receipt: *self,
            }),
            _ => None,
        }
    }
}

/// What [`Ledger::reserve`](crate::Ledger::reserve) returns: the hold it created, when the
/// hold expires, and the whole [`Receipt`].
///
/// ```
/// use std::time::Duration;
/// use credits_core::{Amount, GrantOptions, IdempotencyKey, Ledger, TenantId, TenantSettings};
/// use metered_clock::{ManualClock, Timestamp};
///
/// # futures::executor::block_on(async {
/// let ledger = Ledger::in_memory(ManualClock::new(Timestamp::from_unix_millis(1_000)));
/// let acme = TenantId::new("acme")?;
/// ledger.create_tenant(&acme, TenantSettings::default()).await?;
/// ledger.grant(&acme, IdempotencyKey::new("g")?, Amount::new(10), GrantOptions::default()).await?;
/// let r = ledger.reserve(&acme, IdempotencyKey::new("h")?, Amount::new(4), Duration::from_secs(1)).await?;
/// assert_eq!(r.expires_at, Timestamp::from_unix_millis(2_000));
/// assert_eq!(r.receipt.balance.held, Amount::new(4));
/// ledger.cancel(&acme, IdempotencyKey::new("c")?, r.hold).await?;
/// # Ok::<(), credits_core::LedgerError>(())
/// # }).unwrap();
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The hold (pass it to commit or cancel).
    pub hold: HoldId,
    /// When it expires unless resolved.
    pub expires_at: Timestamp,
    /// The reserve's receipt (journal entry, time, balance after it).
    pub receipt: Receipt,
}

/// What a tenant's idempotency key is remembered with: the request it was first used for and
/// that request's result (success or domain failure). Backends persist it in the same
/// atomic write as the change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// The command first sent with the key.
    pub command: Command,
    /// Its result.
    pub result: Result<Receipt, LedgerError>,
    /// When it was applied.
    pub at: Timestamp,
}

impl IdempotencyRecord {
    /// The answer to a request whose key already has this record: the original result if the
    /// command is the same, otherwise [`LedgerError::IdempotencyConflict`].
    ///
    /// # Errors
    /// The original failure, or the conflict.
    pub fn replay(&self, request: &Request) -> Result<Receipt, LedgerError> {
        if self.command == request.command {
            self.result.clone()
        } else {
            Err(LedgerError::IdempotencyConflict(request.key.clone()))
        }
    }
}

/// Per-tenant settings fixed at creation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantSettings {
    /// How far consumption may go beyond the available credits (default zero: never
    /// negative).
    pub overdraft_limit: Amount,
    /// What happens to a lot's unused credits when it expires (default `None`: they
    /// expire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollover: Option<RolloverPolicy>,
    /// Amounts of available credits whose downward crossing emits a
    /// [`BalanceEvent`](crate::BalanceEvent) (default: none).
    #[serde(default, skip_serializing_if = "BalanceThresholds::is_empty")]
    pub thresholds: BalanceThresholds,
}

/// The longest life a [`RolloverPolicy`] may give rolled-over credits.
pub const ROLLOVER_TTL_MAX: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

/// Rollover at expiry: when a lot expires, `share_percent` % of its unused credits (rounded
/// down), at most `cap`, are granted again as a new lot that expires `ttl` after the
/// expiry is applied; the rest expires. The expiry and the rollover are one change: a
/// [`EntryKind::RolledOver`](crate::EntryKind::RolledOver) entry (the credits move from
/// the expiring lot to the new one; counters and balance unchanged) followed, unless
/// everything rolled over, by the [`EntryKind::LotExpired`](crate::EntryKind::LotExpired)
/// entry of the rest. The new lot keeps the old one's priority, and it rolls over again
/// when it expires in turn (with a share below 100 % or a cap, what rolls over shrinks
/// each time).
///
/// ```
/// use std::time::Duration;
/// use credits_core::{Amount, RolloverPolicy};
///
/// // Half of what is left, at most 1,000 credits, valid 30 days.
/// let policy = RolloverPolicy::new(50, Some(Amount::new(1_000)), Duration::from_secs(30 * 86_400))?;
/// assert_eq!(policy.rolled(Amount::new(801)), Amount::new(400));
/// assert_eq!(policy.rolled(Amount::new(5_000)), Amount::new(1_000));
///
/// assert!(RolloverPolicy::new(0, None, Duration::from_secs(1)).is_err()); // nothing rolls
/// assert!(RolloverPolicy::new(101, None, Duration::from_secs(1)).is_err());
/// assert!(RolloverPolicy::new(100, None, Duration::ZERO).is_err());
/// # Ok::<(), credits_core::LedgerError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RolloverFields", into = "RolloverFields")]
pub struct RolloverPolicy {
    share_percent: u8,
    cap: Option<Amount>,
    ttl: Duration,
}

/// The wire form of a [`RolloverPolicy`] (`ttl` in milliseconds), checked when read back.
#[derive(Clone, Copy, Serialize, Deserialize)]
struct RolloverFields {
    share_percent: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cap: Option<Amount>,
    ttl_ms: u64,
}

impl TryFrom<RolloverFields> for RolloverPolicy {
    type Error = LedgerError;
    fn try_from(f: RolloverFields) -> Result<Self, LedgerError> {
        RolloverPolicy::new(f.share_percent, f.cap, Duration::from_millis(f.ttl_ms))
    }
}

impl From<RolloverPolicy> for RolloverFields {
    fn from(p: RolloverPolicy) -> Self {
        RolloverFields {
            share_percent: p.share_percent,
            cap: p.cap,
            ttl_ms: u64::try_from(p.ttl.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl RolloverPolicy {
    /// Rolls `share_percent` % (1 to 100) of an expiring lot's unused credits, at most
    /// `cap` (`None`: no cap), into a new lot living `ttl` (whole milliseconds, 1 ms to
    /// [`ROLLOVER_TTL_MAX`]).
    ///
    /// # Errors
    /// [`LedgerError::InvalidRollover`] for a share outside 1–100, a zero cap, or a `ttl`
    /// that is zero, not whole milliseconds or longer than [`ROLLOVER_TTL_MAX`].
    pub fn new(share_percent: u8, cap: Option<Amount>, ttl: Duration) -> Result<Self, LedgerError> {
        let invalid = |reason: &str| {
            Err(LedgerError::InvalidRollover {
                reason: reason.to_owned(),
            })
        };
        if !(1..=100).contains(&share_percent) {
            return invalid("the share must be 1 to 100 percent");
        }
        if cap.is_some_and(Amount::is_zero) {
            return invalid("the cap must not be zero");
        }
        if ttl.is_zero() || ttl > ROLLOVER_TTL_MAX || !ttl.subsec_nanos().is_multiple_of(1_000_000)
        {
            return invalid("the ttl must be 1 ms to 10 years, in whole milliseconds");
        }
        Ok(RolloverPolicy {
            share_percent,
            cap,
            ttl,
        })
    }

    /// The share of an expiring lot's unused credits that rolls over, in percent.
    #[must_use]
    pub fn share_percent(&self) -> u8 {
        self.share_percent
    }

    /// The most that rolls over from one lot (`None`: no cap).
    #[must_use]
    pub fn cap(&self) -> Option<Amount> {
        self.cap
    }

    /// How long rolled-over credits live.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// What rolls over of `remaining` unused credits: the share, rounded down, at most the
    /// cap. Never more than `remaining`.
    #[must_use]
    pub fn rolled(&self, remaining: Amount) -> Amount {
        let share = u128::from(remaining.units()) * u128::from(self.share_percent) / 100;
        // share ≤ remaining, so it fits.
        let share = Amount::new(u64::try_from(share).unwrap_or(u64::MAX));
        self.cap.map_or(share, |cap| share.min(cap))
    }
}
