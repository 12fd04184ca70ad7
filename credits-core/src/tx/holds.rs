//! The ledger's holds as a transaction participant: [`LedgerHolds`] and [`HoldBranch`].

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Participant, TxId};
use crate::store::LedgerStore;
use crate::{Amount, Command, HoldId, IdempotencyKey, Ledger, LedgerError, Request, TenantId};

/// The time-to-live of the holds [`LedgerHolds`] takes in phase one: 2^62 ms (about 146
/// million years), so in effect they never expire on their own. A participant that voted
/// to commit must keep the credits until the coordinator's decision reaches it, after an
/// outage of any length; holds of transactions that are never decided are reclaimed by
/// [`TransactionManager::recover`](super::TransactionManager::recover), which aborts them past their deadline. (It is the
/// longest time-to-live whose expiry every store can record, PostgreSQL's `bigint`
/// included, from any present-day clock.)
pub const PREPARED_HOLD_TTL: Duration = Duration::from_millis(1 << 62);

/// The ledger's holds as a transaction [`Participant`]: prepare reserves credits, commit
/// commits (part of) them, abort cancels the hold.
///
/// Branch payloads are [`HoldBranch::payload`]s. Every step uses idempotency keys
/// derived from the transaction id (`tx-<id>/<participant>/reserve`, `…/commit`,
/// `…/cancel`), so repeating a step (after a crash, in recovery) applies it once. The
/// holds do not expire on their own ([`PREPARED_HOLD_TTL`]): only phase two releases them,
/// so a decided commit still applies after a coordinator outage of any length. Until then
/// the credits are held (not spendable), also while the coordinator is down: run
/// [`TransactionManager::recover`](super::TransactionManager::recover) at start-up and periodically so that undecided
/// transactions past their deadline are aborted and their holds cancelled.
#[derive(Debug)]
pub struct LedgerHolds<S: ?Sized = dyn LedgerStore> {
    name: String,
    ledger: Ledger<S>,
}

/// What a [`LedgerHolds`] branch does: hold `reserve` credits of `tenant` in phase one
/// (until phase two: the hold does not expire on its own), spend `commit` of them (the
/// rest is released; zero cancels) in phase two.
///
/// ```
/// use credits_core::tx::HoldBranch;
/// use credits_core::{Amount, TenantId};
///
/// let branch = HoldBranch::new(TenantId::new("acme")?, Amount::new(40), Amount::new(30))?;
/// assert_eq!(HoldBranch::parse(&branch.payload())?, branch);
///
/// // A branch cannot promise to spend more than it holds.
/// assert!(HoldBranch::new(TenantId::new("acme")?, Amount::new(40), Amount::new(41)).is_err());
/// # Ok::<(), credits_core::LedgerError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "HoldBranchFields")]
pub struct HoldBranch {
    tenant: TenantId,
    reserve: Amount,
    commit: Amount,
}

/// The wire form of a [`HoldBranch`], checked by [`HoldBranch::new`] when read back.
#[derive(Deserialize)]
struct HoldBranchFields {
    tenant: TenantId,
    reserve: Amount,
    commit: Amount,
}

impl TryFrom<HoldBranchFields> for HoldBranch {
    type Error = LedgerError;

    fn try_from(f: HoldBranchFields) -> Result<Self, LedgerError> {
        HoldBranch::new(f.tenant, f.reserve, f.commit)
    }
}

impl HoldBranch {
    /// A branch that holds `reserve` credits of `tenant` and spends `commit` of them.
    ///
    /// # Errors
    /// [`LedgerError::ZeroAmount`] for a zero `reserve`; [`LedgerError::CommitExceedsHold`]
    /// when `commit > reserve` (the hold id is 0: no hold exists yet).
    pub fn new(tenant: TenantId, reserve: Amount, commit: Amount) -> Result<Self, LedgerError> {
        if reserve.is_zero() {
            return Err(LedgerError::ZeroAmount);
        }
        if commit > reserve {
            return Err(LedgerError::CommitExceedsHold {
                hold: HoldId::new(0),
                held: reserve,
                requested: commit,
            });
        }
        Ok(HoldBranch {
            tenant,
            reserve,
            commit,
        })
    }

    /// Whose credits.
    #[must_use]
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// How much to hold in phase one.
    #[must_use]
    pub fn reserve(&self) -> Amount {
        self.reserve
    }

    /// How much of it to spend in phase two (≤ [`reserve`](Self::reserve); zero cancels).
    #[must_use]
    pub fn commit(&self) -> Amount {
        self.commit
    }

    /// The payload to [`enlist`](super::TransactionManager::enlist).
    #[must_use]
    pub fn payload(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a payload back.
    ///
    /// # Errors
    /// [`LedgerError::InvalidPayload`] if it is not a `HoldBranch`.
    pub fn parse(payload: &str) -> Result<Self, LedgerError> {
        serde_json::from_str(payload).map_err(|e| LedgerError::InvalidPayload(e.to_string()))
    }
}

impl<S: LedgerStore + ?Sized> LedgerHolds<S> {
    /// A participant named `name` over `ledger`.
    pub fn new(name: impl Into<String>, ledger: Ledger<S>) -> Self {
        LedgerHolds {
            name: name.into(),
            ledger,
        }
    }

    fn key(&self, tx: TxId, step: &str) -> Result<IdempotencyKey, LedgerError> {
        IdempotencyKey::new(format!("{tx}/{}/{step}", self.name))
    }

    fn reserve_command(p: &HoldBranch) -> Command {
        Command::Reserve {
            amount: p.reserve,
            ttl: PREPARED_HOLD_TTL,
        }
    }

    /// The hold phase one created, if it did: a successful reservation of the branch's
    /// amount under the branch's key (whatever its time-to-live, so that holds prepared
    /// with an earlier, expiring time-to-live are still found).
    async fn prepared_hold(&self, tx: TxId, p: &HoldBranch) -> Result<Option<HoldId>, LedgerError> {
        let key = self.key(tx, "reserve")?;
        let record = self
            .ledger
            .store()
            .idempotency_record(&p.tenant, &key)
            .await?;
        Ok(record.and_then(|r| match r.command {
            Command::Reserve { amount, .. } if amount == p.reserve => {
                r.result.ok().and_then(|o| o.hold())
            }
            _ => None,
        }))
    }
}

#[async_trait]
impl<S: LedgerStore + ?Sized> Participant for LedgerHolds<S> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn prepare(&self, tx: TxId, payload: &str) -> Result<(), LedgerError> {
        let p = HoldBranch::parse(payload)?;
        let request = Request::new(
            p.tenant.clone(),
            self.key(tx, "reserve")?,
            Self::reserve_command(&p),
        );
        self.ledger.apply(&request).await.map(|_| ())
    }

    async fn commit(&self, tx: TxId, payload: &str) -> Result<(), LedgerError> {
        let p = HoldBranch::parse(payload)?;
        let hold =
            self.prepared_hold(tx, &p)
                .await?
                .ok_or_else(|| LedgerError::BranchNotPrepared {
                    tx,
                    participant: self.name.clone(),
                })?;
        let key = self.key(tx, "commit")?;
        let result = if p.commit.is_zero() {
            self.ledger.cancel(&p.tenant, key, hold).await
        } else {
            self.ledger.commit(&p.tenant, key, hold, p.commit).await
        };
        result.map(|_| ())
    }

    async fn abort(&self, tx: TxId, payload: &str) -> Result<(), LedgerError> {
        // An unreadable payload was refused by `prepare` too: nothing to undo.
        let Ok(p) = HoldBranch::parse(payload) else {
            return Ok(());
        };
        let Some(hold) = self.prepared_hold(tx, &p).await? else {
            return Ok(()); // never prepared: nothing to undo
        };
        match self
            .ledger
            .cancel(&p.tenant, self.key(tx, "cancel")?, hold)
            .await
        {
            Ok(_) | Err(LedgerError::HoldAlreadyCancelled(_) | LedgerError::HoldExpired(_)) => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
