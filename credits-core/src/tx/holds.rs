//! The ledger's holds as a transaction participant: [`LedgerHolds`] and [`HoldBranch`].

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{BranchId, InFlight, Participant};
use crate::store::LedgerStore;
use crate::{Amount, Command, HoldId, IdempotencyKey, Ledger, LedgerError, Request, TenantId};

/// The ledger's holds as a transaction [`Participant`]: phase one takes a hold **owned by
/// the branch** ([`Command::Prepare`]), commit spends (part of) it, abort releases it.
///
/// Branch payloads are [`HoldBranch::payload`]s; what phase one answers (logged by the
/// coordinator with the `Prepared` phase) names the tenant and the hold. The owned hold is
/// the durable fact: it never expires on its own, nobody but the branch's decision can
/// commit, cancel or refund it, and a branch that must be aborted without the logged answer
/// is found by its owner in the ledger itself — never concluded "not prepared" from a
/// missing idempotency record. Every step's idempotency key names the branch
/// (`tx-<id>/<index>/<participant>/prepare`, `…/commit`, `…/abort`, `…/abort-<hold>`), so
/// repeating a step
/// (after a crash, in recovery) applies it once, and two branches never share a key.
///
/// Until the decision the credits are held (not spendable), also while the coordinator is
/// down: run [`TransactionManager::recover`](super::TransactionManager::recover) at start-up
/// and periodically, so that undecided transactions past their deadline are aborted and
/// their holds released.
#[derive(Debug)]
pub struct LedgerHolds<S: ?Sized = dyn LedgerStore> {
    name: String,
    ledger: Ledger<S>,
}

/// What phase one answered (logged by the coordinator): the hold, what phase two spends of
/// it, and the tenant, as `<hold>:<commit>:<tenant>` (short: it is written and read on every
/// transaction).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Prepared {
    tenant: TenantId,
    hold: HoldId,
    commit: Amount,
}

/// Calls `f` with `<a>:<b>:<tenant>`, built on the stack (`format!` cost a thousand
/// instructions here, twice per transaction).
fn with_colon_joined<R>(a: u64, b: u64, tenant: &TenantId, f: impl FnOnce(&str) -> R) -> R {
    let (mut a_buf, mut b_buf) = (itoa::Buffer::new(), itoa::Buffer::new());
    let parts = [a_buf.format(a), ":", b_buf.format(b), ":", tenant.as_str()];
    // Two u64 (20 digits each), two colons and a tenant id (at most NAME_LEN_MAX bytes).
    let mut buf = [0u8; 20 + 1 + 20 + 1 + crate::ids::NAME_LEN_MAX];
    let mut len = 0;
    for part in parts {
        buf[len..len + part.len()].copy_from_slice(part.as_bytes());
        len += part.len();
    }
    // Every part is a `str` and each ends on a character boundary.
    f(std::str::from_utf8(&buf[..len]).unwrap_or_default())
}

impl Prepared {
    /// In one exact allocation (it is logged as it is).
    fn encode(&self) -> Arc<str> {
        with_colon_joined(self.hold.get(), self.commit.units(), &self.tenant, |s| {
            Arc::from(s)
        })
    }

    fn parse(text: &str) -> Result<Self, LedgerError> {
        let bad = || LedgerError::InvalidPayload(format!("not a prepared hold: {text:?}"));
        let (hold, rest) = text.split_once(':').ok_or_else(bad)?;
        let (commit, tenant) = rest.split_once(':').ok_or_else(bad)?;
        Ok(Prepared {
            hold: HoldId::new(hold.parse().map_err(|_| bad())?),
            commit: Amount::new(commit.parse().map_err(|_| bad())?),
            tenant: TenantId::new(tenant)?,
        })
    }
}

/// What a [`LedgerHolds`] branch does: hold `reserve` credits of `tenant` in phase one
/// (until phase two: the hold is owned by the branch and does not expire on its own), spend
/// `commit` of them (the rest is released; zero releases everything) in phase two.
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

    /// The payload to [`enlist`](super::TransactionManager::enlist):
    /// `<reserve>:<commit>:<tenant>` (short: it is logged, and read in phase one of every
    /// transaction).
    #[must_use]
    pub fn payload(&self) -> String {
        with_colon_joined(
            self.reserve.units(),
            self.commit.units(),
            &self.tenant,
            str::to_owned,
        )
    }

    /// Reads a payload back: the form [`payload`](Self::payload) writes, or the JSON form
    /// of the type (`{"tenant":…,"reserve":…,"commit":…}`), checked as
    /// [`new`](Self::new) checks.
    ///
    /// # Errors
    /// [`LedgerError::InvalidPayload`] if it is neither; the errors of
    /// [`new`](Self::new).
    pub fn parse(payload: &str) -> Result<Self, LedgerError> {
        if payload.starts_with('{') {
            return serde_json::from_str(payload)
                .map_err(|e| LedgerError::InvalidPayload(e.to_string()));
        }
        let bad = || LedgerError::InvalidPayload(format!("not a hold branch: {payload:?}"));
        let (reserve, rest) = payload.split_once(':').ok_or_else(bad)?;
        let (commit, tenant) = rest.split_once(':').ok_or_else(bad)?;
        HoldBranch::new(
            TenantId::new(tenant)?,
            Amount::new(reserve.parse().map_err(|_| bad())?),
            Amount::new(commit.parse().map_err(|_| bad())?),
        )
    }
}

impl LedgerHolds {
    /// The tenant and hold named by what [`LedgerHolds`]'s phase one answered (the
    /// `prepared` text the coordinator logs with each branch).
    ///
    /// # Errors
    /// [`LedgerError::InvalidPayload`] if `answer` is not such an answer.
    pub fn prepared_hold(answer: &str) -> Result<(TenantId, HoldId), LedgerError> {
        Prepared::parse(answer).map(|p| (p.tenant, p.hold))
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

    fn key(&self, branch: BranchId, step: &str) -> Result<IdempotencyKey, LedgerError> {
        // `tx-<id>/<index>/<participant>/<step>`, as `BranchId` displays, in one format.
        // Built by hand on the stack (the key's one allocation is its own): `format!` was a
        // fifth of a transaction.
        let (mut tx, mut index) = (itoa::Buffer::new(), itoa::Buffer::new());
        let (tx, index) = (tx.format(branch.tx.get()), index.format(branch.index));
        let parts = ["tx-", tx, "/", index, "/", &self.name, "/", step];
        let mut buf = [0u8; 128];
        let mut len = 0;
        for part in parts {
            let Some(room) = buf.get_mut(len..len + part.len()) else {
                // Longer than any valid key: let validation say so.
                return IdempotencyKey::new(parts.concat());
            };
            room.copy_from_slice(part.as_bytes());
            len += part.len();
        }
        let key =
            std::str::from_utf8(&buf[..len]).map_err(|e| LedgerError::InvalidIdempotencyKey {
                reason: e.to_string(),
            })?;
        IdempotencyKey::new(key)
    }

    async fn run(
        &self,
        tenant: &TenantId,
        branch: BranchId,
        step: &str,
        command: Command,
    ) -> Result<crate::Receipt, LedgerError> {
        let request = Request::new(tenant.clone(), self.key(branch, step)?, command);
        self.ledger.apply(&request).await
    }
}

#[async_trait]
impl<S: LedgerStore + ?Sized> Participant for LedgerHolds<S> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn prepare(&self, branch: BranchId, payload: &str) -> Result<Arc<str>, LedgerError> {
        let p = HoldBranch::parse(payload)?;
        let command = Command::Prepare {
            amount: p.reserve,
            branch,
        };
        let hold = match self.run(&p.tenant, branch, "prepare", command).await {
            Ok(receipt) => receipt.hold().ok_or_else(|| {
                LedgerError::InvalidPayload("a prepare answered without a hold".to_owned())
            })?,
            // Prepared before (its idempotency record forgotten since): the same hold.
            Err(LedgerError::BranchAlreadyPrepared { hold, .. }) => hold,
            Err(e) => return Err(e),
        };
        Ok(Prepared {
            tenant: p.tenant,
            hold,
            commit: p.commit,
        }
        .encode())
    }

    async fn commit(
        &self,
        branch: BranchId,
        _payload: &str,
        prepared: &str,
    ) -> Result<(), LedgerError> {
        // Phase one's answer carries everything phase two needs (the payload was read then).
        let Prepared {
            tenant,
            hold,
            commit,
        } = Prepared::parse(prepared)?;
        let command = Command::CommitPrepared {
            branch,
            hold,
            amount: commit,
        };
        match self.run(&tenant, branch, "commit", command).await {
            Ok(_) => Ok(()),
            // Only the branch can resolve its hold: resolved as decided means done before.
            Err(LedgerError::HoldAlreadyCommitted(h)) if h == hold && !commit.is_zero() => Ok(()),
            Err(LedgerError::HoldAlreadyCancelled(h)) if h == hold && commit.is_zero() => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn abort(
        &self,
        branch: BranchId,
        payload: &str,
        prepared: Option<&str>,
    ) -> Result<(), LedgerError> {
        let (tenant, hold) = match prepared.map(Prepared::parse).transpose()? {
            Some(p) => (p.tenant, Some(p.hold)),
            None => match HoldBranch::parse(payload) {
                Ok(p) => (p.tenant, None),
                // An unreadable payload was refused by `prepare` too: nothing to undo.
                Err(_) => return Ok(()),
            },
        };
        // An abort that names the hold is another request than one that must find it.
        let step = hold.map_or_else(|| "abort".to_owned(), |h| format!("abort-{h}"));
        let command = Command::AbortPrepared { branch, hold };
        match self.run(&tenant, branch, &step, command).await {
            // Released now, before, or never prepared: nothing held either way.
            Ok(_)
            | Err(LedgerError::HoldAlreadyCancelled(_) | LedgerError::BranchNotPrepared { .. }) => {
                Ok(())
            }
            Err(LedgerError::UnknownHold(h)) if Some(h) == hold => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn in_flight(
        &self,
        after: Option<BranchId>,
        limit: usize,
    ) -> Result<Vec<InFlight>, LedgerError> {
        let holds = self.ledger.store().prepared_holds(after, limit).await?;
        Ok(holds
            .into_iter()
            .map(|h| InFlight {
                branch: h.branch,
                // What a finished commit would spend is in its logged answer; this one only
                // names the hold (recovery passes the log's answer when it has one).
                prepared: Prepared {
                    tenant: h.tenant,
                    hold: h.hold,
                    commit: Amount::ZERO,
                }
                .encode()
                .to_string(),
            })
            .collect())
    }

    async fn recover(&self) -> Result<(), LedgerError> {
        self.ledger.recover().await.map(|_| ())
    }
}
