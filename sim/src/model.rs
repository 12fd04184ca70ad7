//! The reference model: what clients were told (every acknowledged answer), what they may
//! still refer to (holds, refundable entries, transactions), and what the simulator has
//! read of each tenant's journal. The checks in [`checker`](crate::checker) compare the
//! stores against it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use credits_core::tx::{HoldBranch, TxDecision, TxId};
use credits_core::{
    Amount, Command, Effect, EntryKind, EntrySeq, HoldId, IdempotencyKey, JournalEntry, LotId,
    Request, TenantId,
};
use metered_clock::Timestamp;

use crate::violation::{Answer, JournalRule};

/// A request's identity: its tenant and idempotency key.
pub(crate) type RequestId = (TenantId, IdempotencyKey);

/// What the simulator knows about a tenant's journal, built from every entry it has read.
#[derive(Debug, Default)]
pub(crate) struct Tracked {
    /// The last sequence number read.
    pub(crate) seq: u64,
    /// The last entry read.
    pub(crate) last: Option<JournalEntry>,
    /// hold → (expires_at, resolution entry kind).
    pub(crate) holds: BTreeMap<HoldId, (Timestamp, Option<EntryKind>)>,
    /// (key, kind) of every keyed entry.
    keyed: BTreeSet<(String, &'static str)>,
    /// Credits the journal spends (consumptions and commits).
    pub(crate) consumed_in_journal: u64,
    /// Credits the journal expires (lots).
    pub(crate) expired_in_journal: u64,
}

/// What the simulator knows about a journal entry beyond the entry itself.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EntryContext {
    /// The hold's expiry from the reservation's recorded answer (reservations only).
    pub(crate) reserved_expiry: Option<Timestamp>,
    /// Its key was sent by a client (or it has none, or it is a transaction's).
    pub(crate) known_key: bool,
    /// Its request was answered with an error.
    pub(crate) answered_error: bool,
    /// When the step that may have written it started.
    pub(crate) step_start: Timestamp,
    /// When that step ended.
    pub(crate) step_end: Timestamp,
}

impl Tracked {
    /// Checks the next entry `e` of `tenant` against every [`JournalRule`] and takes it in.
    pub(crate) fn observe(
        &mut self,
        tenant: &TenantId,
        e: &JournalEntry,
        cx: EntryContext,
    ) -> Result<(), JournalRule> {
        self.check_chain(tenant, e, cx)?;
        if let Some(k) = &e.key
            && !self.keyed.insert((k.as_str().to_owned(), e.kind.as_str()))
        {
            return Err(JournalRule::AppliedTwice {
                key: k.clone(),
                kind: e.kind,
            });
        }
        self.check_hold(e, cx)?;
        if matches!(e.kind, EntryKind::Consumed | EntryKind::Committed) {
            self.consumed_in_journal += e.amount.units();
        }
        // A void counts as an expiry; a rollover moves credits between lots only.
        if matches!(e.kind, EntryKind::LotExpired | EntryKind::LotVoided) {
            self.expired_in_journal += e.amount.units();
        }
        self.seq = e.seq.get();
        self.last = Some(e.clone());
        Ok(())
    }

    /// The entry follows the previous one (sequence, time, balance), was made during its
    /// step, and answers a request a client sent and was not told failed.
    fn check_chain(
        &self,
        tenant: &TenantId,
        e: &JournalEntry,
        cx: EntryContext,
    ) -> Result<(), JournalRule> {
        if e.seq.get() != self.seq + 1 {
            return Err(JournalRule::SequenceGap {
                expected: self.seq + 1,
            });
        }
        if e.tenant != *tenant {
            return Err(JournalRule::OtherTenant {
                found: e.tenant.clone(),
            });
        }
        if e.amount.is_zero() && !e.kind.is_status() {
            return Err(JournalRule::ZeroAmount);
        }
        if let Some(last) = &self.last {
            if e.at < last.at {
                return Err(JournalRule::TimeWentBackwards { previous: last.at });
            }
            if e.before != last.after {
                return Err(JournalRule::BalanceChain {
                    expected: last.after,
                    found: e.before,
                });
            }
        }
        if e.at > cx.step_end || e.at < cx.step_start {
            return Err(JournalRule::StampedOutsideStep {
                stamped: e.at,
                from: cx.step_start,
                to: cx.step_end,
            });
        }
        if let Some(key) = &e.key {
            if !cx.known_key {
                return Err(JournalRule::UnknownKey { key: key.clone() });
            }
            if cx.answered_error {
                return Err(JournalRule::WrittenAfterError { key: key.clone() });
            }
        }
        Ok(())
    }

    /// Holds are reserved once, resolved once (never early by expiry, never late by their
    /// owner), and released only right after their commit.
    fn check_hold(&mut self, e: &JournalEntry, cx: EntryContext) -> Result<(), JournalRule> {
        let missing_hold = JournalRule::MissingHold { kind: e.kind };
        match e.kind {
            EntryKind::Reserved => {
                let Some(hold) = e.hold else {
                    return Err(missing_hold);
                };
                let Some(exp) = cx.reserved_expiry else {
                    return Err(JournalRule::MissingExpiry);
                };
                if self.holds.insert(hold, (exp, None)).is_some() {
                    return Err(JournalRule::HoldReservedTwice { hold });
                }
            }
            EntryKind::Committed | EntryKind::Cancelled | EntryKind::HoldExpired => {
                let Some(hold) = e.hold else {
                    return Err(missing_hold);
                };
                let Some((exp, res)) = self.holds.get_mut(&hold) else {
                    return Err(JournalRule::UnknownHold { hold });
                };
                if let Some(first) = res {
                    return Err(JournalRule::HoldResolvedTwice {
                        hold,
                        first: *first,
                    });
                }
                match e.kind {
                    EntryKind::HoldExpired if e.at < *exp => {
                        return Err(JournalRule::HoldExpiredEarly {
                            hold,
                            expires_at: *exp,
                        });
                    }
                    EntryKind::Committed | EntryKind::Cancelled if cx.step_start >= *exp => {
                        return Err(JournalRule::HoldResolvedAfterExpiry {
                            hold,
                            expires_at: *exp,
                            resolved_at: cx.step_start,
                        });
                    }
                    _ => {}
                }
                *res = Some(e.kind);
            }
            EntryKind::Released => {
                let Some(hold) = e.hold else {
                    return Err(missing_hold);
                };
                if !matches!(self.holds.get(&hold), Some((_, Some(EntryKind::Committed)))) {
                    return Err(JournalRule::ReleaseWithoutCommit { hold });
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// A distributed transaction as it was answered.
#[derive(Debug)]
pub(crate) struct TxPlan {
    /// Its id.
    pub(crate) id: TxId,
    /// One branch per participant, in [`PARTICIPANTS`](crate::PARTICIPANTS) order.
    pub(crate) branches: Vec<HoldBranch>,
    /// How it ended.
    pub(crate) outcome: TxDecision,
}

/// Everything clients were told, and what the simulator has read back.
#[derive(Debug, Default)]
pub(crate) struct Model {
    /// Every tenant with its overdraft limit.
    pub(crate) tenants: Vec<(TenantId, Amount)>,
    /// Every acknowledged request with its definitive result.
    pub(crate) acked: BTreeMap<RequestId, (Command, Answer)>,
    /// The acknowledged requests in the order they were answered.
    pub(crate) ack_order: Vec<RequestId>,
    /// Every hold a reservation returned.
    pub(crate) holds: Vec<(TenantId, HoldId)>,
    /// Every entry that spent credits, with the amount spent.
    pub(crate) refundable: Vec<(TenantId, EntrySeq, Amount)>,
    /// Every lot a grant answered with (voids draw from these).
    pub(crate) lots: Vec<(TenantId, LotId)>,
    /// Acknowledged (granted, refunded) per tenant.
    inflow: BTreeMap<TenantId, (u64, u64)>,
    /// What was read of each tenant's journal.
    pub(crate) tracked: BTreeMap<TenantId, Tracked>,
    /// Every distributed transaction.
    pub(crate) txs: Vec<TxPlan>,
    /// When each acknowledged request was answered.
    acked_at: BTreeMap<RequestId, Timestamp>,
    /// How long the store keeps idempotency records (`None`: longer than any run).
    retention: Option<Duration>,
}

impl Model {
    /// Nothing acknowledged yet for `tenants` (with their overdraft limits).
    pub(crate) fn new(tenants: Vec<(TenantId, Amount)>, retention: Option<Duration>) -> Self {
        Model {
            tenants,
            retention,
            ..Model::default()
        }
    }

    /// Whether the store still remembers the record of `id` at `now`: it was answered within
    /// the retention (a record is forgotten only once a later one of its tenant is more
    /// than the retention newer, and no record is newer than `now`).
    pub(crate) fn remembered(&self, id: &RequestId, now: Timestamp) -> bool {
        match (self.retention, self.acked_at.get(id)) {
            (None, _) => true,
            (Some(r), Some(at)) => {
                at.as_unix_millis() >= now.as_unix_millis().saturating_sub(millis(r))
            }
            (Some(_), None) => false,
        }
    }

    /// The first answer to the request with `req`'s tenant and key, when one was
    /// acknowledged for the same command.
    pub(crate) fn first_answer(&self, req: &Request) -> Option<&Answer> {
        self.acked
            .get(&(req.tenant.clone(), req.key.clone()))
            .filter(|(command, _)| command == &req.command)
            .map(|(_, first)| first)
    }

    /// Whether `req`'s key was acknowledged before (for any command).
    pub(crate) fn is_acknowledged(&self, req: &Request) -> bool {
        self.acked
            .contains_key(&(req.tenant.clone(), req.key.clone()))
    }

    /// Takes in the first definitive answer to `req`.
    pub(crate) fn record(&mut self, req: &Request, result: &Answer, at: Timestamp) {
        let id = (req.tenant.clone(), req.key.clone());
        self.acked_at.insert(id.clone(), at);
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
                Effect::Granted { lot: Some(lot) } => self.lots.push((req.tenant.clone(), lot)),
                Effect::Taken { amount } => {
                    self.refundable.push((req.tenant.clone(), o.entry, amount));
                }
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
    }

    /// Acknowledged (granted, refunded) credits of `t`.
    pub(crate) fn acked_inflow(&self, t: &TenantId) -> (u64, u64) {
        self.inflow.get(t).copied().unwrap_or_default()
    }

    /// Whether a client sent `key` for `tenant` (transaction keys are the manager's).
    pub(crate) fn known_key(&self, tenant: &TenantId, key: &str) -> bool {
        key.starts_with("tx-")
            || IdempotencyKey::new(key).is_ok_and(|k| self.acked.contains_key(&(tenant.clone(), k)))
    }

    /// Whether the request under `key` was answered with an error.
    pub(crate) fn answered_error(&self, tenant: &TenantId, key: &IdempotencyKey) -> bool {
        self.acked
            .get(&(tenant.clone(), key.clone()))
            .is_some_and(|(_, r)| r.is_err())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
