//! [`Bug`]: deliberate defects a [`FaultyStore`](super::FaultyStore) can carry, so that a
//! checker (the simulator, a conformance run) proves it has teeth.

use std::collections::BTreeSet;

use metered_clock::Timestamp;
use parking_lot::Mutex;

use crate::{Command, HoldState, IdempotencyKey, LedgerError, LedgerStore, Request, TenantId};

/// A deliberate defect. Never use one outside a test of a checker: each breaks a ledger
/// guarantee on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Bug {
    /// Commits and cancels of a hold past its expiry are applied as if it had not expired
    /// (the store stamps them just before the hold's expiry): the hold-expiry check is
    /// skipped.
    SkipHoldExpiry,
    /// A request whose key was seen before is applied again under a fresh key instead of
    /// being replayed: a retry double-applies.
    DoubleApplyRetry,
    /// Every tenant's third journal row is lost (reads of the history never return it),
    /// while the counters keep its effect: a lost journal insert.
    DropJournalRow,
    /// One committed change's audit entry is lost after its commit: the audit disk
    /// acknowledges a write it dropped the last entry of (the simulator arms it on its
    /// audit sink: `audit_chain::testing::SinkFaults::lose_next`; a store ignores it).
    LoseAuditEntry,
}

impl Bug {
    /// Every bug, for loops over them.
    pub const ALL: [Bug; 4] = [
        Bug::SkipHoldExpiry,
        Bug::DoubleApplyRetry,
        Bug::DropJournalRow,
        Bug::LoseAuditEntry,
    ];

    /// The journal row [`Bug::DropJournalRow`] loses, in every tenant.
    pub const DROPPED_ROW: u64 = 3;

    /// The bug's name on a command line (`skip-hold-expiry`, `double-apply-retry`,
    /// `drop-journal-row`, `lose-audit-entry`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Bug::SkipHoldExpiry => "skip-hold-expiry",
            Bug::DoubleApplyRetry => "double-apply-retry",
            Bug::DropJournalRow => "drop-journal-row",
            Bug::LoseAuditEntry => "lose-audit-entry",
        }
    }

    /// Parses a [`name`](Self::name).
    #[must_use]
    pub fn parse(s: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == s)
    }
}

/// The state a bug needs between calls.
#[derive(Debug, Default)]
pub(super) struct BugState {
    seen: Mutex<BTreeSet<(TenantId, IdempotencyKey)>>,
}

impl BugState {
    /// The request and time the buggy store really applies instead of `request` at `now`.
    pub(super) async fn rewrite<S: LedgerStore + ?Sized>(
        &self,
        bug: Bug,
        inner: &S,
        request: &Request,
        now: Timestamp,
    ) -> Result<(Request, Timestamp), LedgerError> {
        match bug {
            Bug::SkipHoldExpiry => {
                let hold = match request.command {
                    Command::Commit { hold, .. } | Command::Cancel { hold } => hold,
                    _ => return Ok((request.clone(), now)),
                };
                match inner.hold(&request.tenant, hold).await {
                    Ok(HoldState::Active { expires_at, .. }) if expires_at <= now => {
                        let before = Timestamp::from_unix_millis(
                            expires_at.as_unix_millis().saturating_sub(1),
                        );
                        Ok((request.clone(), before))
                    }
                    _ => Ok((request.clone(), now)),
                }
            }
            // A read-side defect: see `FaultyStore::history`.
            Bug::DropJournalRow | Bug::LoseAuditEntry => Ok((request.clone(), now)),
            Bug::DoubleApplyRetry => {
                let id = (request.tenant.clone(), request.key.clone());
                let again = !self.seen.lock().insert(id);
                if !again {
                    return Ok((request.clone(), now));
                }
                let key = IdempotencyKey::new(format!("{}~again", request.key))
                    .unwrap_or_else(|_| request.key.clone());
                Ok((
                    Request::new(request.tenant.clone(), key, request.command.clone()),
                    now,
                ))
            }
        }
    }
}
