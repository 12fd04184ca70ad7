//! [`LedgerError`]: every way an operation can fail.

use metered_clock::Timestamp;
use serde::{Deserialize, Serialize};

use crate::tx::{BranchId, TxAction, TxId, TxPhase};
use crate::{Amount, EntrySeq, HoldId, IdempotencyKey, LotId, TenantId};

/// Every way a ledger, store or transaction operation can fail.
///
/// Variants fall in three groups:
///
/// * **bad input** (`ZeroAmount`, `ZeroTtl`, `Invalid*`, `ExpiryNotInFuture`, `EmptyBatch`,
///   `BatchTooLarge`): fix the call;
/// * **domain outcomes** (`InsufficientCredits`, `Hold*`, `Unknown*`, `AmountOverflow`,
///   `IdempotencyConflict`, `Refund*`, transaction states): the ledger said no and changed
///   nothing; retrying the same request gives the same answer;
/// * **storage failures** ([`LedgerError::Storage`]): the backend failed; whether the change
///   happened is unknown, and retrying *with the same idempotency key* is safe
///   ([`is_retryable`](LedgerError::is_retryable)).
///
/// The type is `Clone + Serialize` because a failure is part of an operation's recorded
/// outcome: replaying an idempotency key returns the original failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum LedgerError {
    /// An operation was asked to move zero credits. Use `cancel` to release a whole hold.
    #[error("the amount must be greater than zero")]
    ZeroAmount,
    /// A hold was asked for with a zero time-to-live.
    #[error("the hold time-to-live must be greater than zero")]
    ZeroTtl,
    /// A tenant name failed validation.
    #[error("invalid tenant id: {reason}")]
    InvalidTenantId {
        /// Which rule it broke.
        reason: String,
    },
    /// An idempotency key failed validation.
    #[error("invalid idempotency key: {reason}")]
    InvalidIdempotencyKey {
        /// Which rule it broke.
        reason: String,
    },
    /// A grant's expiry time is not after the current time.
    #[error("a grant's expiry must be in the future")]
    ExpiryNotInFuture,
    /// A sum would not fit in a `u64` of the smallest unit (or a time in a `u64` of ms).
    #[error("amount overflow")]
    AmountOverflow,
    /// The tenant does not exist: create it first.
    #[error("unknown tenant {0}")]
    UnknownTenant(TenantId),
    /// A tenant with this id already exists.
    #[error("tenant {0} already exists")]
    TenantExists(TenantId),
    /// Not enough spendable credits (available plus unused overdraft).
    #[error("insufficient credits: requested {requested}, spendable {spendable}")]
    InsufficientCredits {
        /// What the operation needed.
        requested: Amount,
        /// What the tenant could spend at that moment.
        spendable: Amount,
    },
    /// No hold with this id exists for the tenant.
    #[error("unknown hold {0}")]
    UnknownHold(HoldId),
    /// The hold was already committed; it resolves exactly once.
    #[error("hold {0} was already committed")]
    HoldAlreadyCommitted(HoldId),
    /// The hold was already cancelled; it resolves exactly once.
    #[error("hold {0} was already cancelled")]
    HoldAlreadyCancelled(HoldId),
    /// The hold's time-to-live passed; its credits went back to the tenant.
    #[error("hold {0} expired")]
    HoldExpired(HoldId),
    /// A commit asked for more than the hold holds.
    #[error("commit of {requested} exceeds hold {hold} of {held}")]
    CommitExceedsHold {
        /// The hold.
        hold: HoldId,
        /// What it holds.
        held: Amount,
        /// What the commit asked for.
        requested: Amount,
    },
    /// No journal entry with this sequence number exists for the tenant.
    #[error("unknown journal entry {0}")]
    UnknownEntry(EntrySeq),
    /// Only `Consumed` and `Committed` entries can be refunded.
    #[error("journal entry {0} is not a consumption and cannot be refunded")]
    NotRefundable(EntrySeq),
    /// A refund would return more than the entry consumed (minus earlier refunds).
    #[error("refund of {requested} exceeds the refundable {refundable} of entry {entry}")]
    RefundExceedsConsumed {
        /// The refunded entry.
        entry: EntrySeq,
        /// What is still refundable.
        refundable: Amount,
        /// What the refund asked for.
        requested: Amount,
    },
    /// The idempotency key was already used for a different request on this tenant.
    #[error("idempotency key {0} was already used for a different request")]
    IdempotencyConflict(IdempotencyKey),
    /// A batch had no operations.
    #[error("a batch needs at least one operation")]
    EmptyBatch,
    /// A batch had more operations than the store accepts at once.
    #[error("a batch may hold at most {max} operations, got {len}")]
    BatchTooLarge {
        /// The limit.
        max: usize,
        /// What was sent.
        len: usize,
    },
    /// Two operations in one batch used the same tenant and idempotency key.
    #[error("idempotency key {0} appears twice in one batch")]
    DuplicateKeyInBatch(IdempotencyKey),
    /// One operation of a batch failed, so none was applied.
    #[error("batch operation {index} failed: {source}")]
    BatchRejected {
        /// Which operation (0-based).
        index: usize,
        /// Why.
        source: Box<LedgerError>,
    },
    /// No transaction with this id is known.
    #[error("unknown transaction {0}")]
    UnknownTransaction(TxId),
    /// The transaction is not in a phase that allows this step.
    #[error("transaction {tx} is {state}, cannot {action}")]
    TransactionState {
        /// The transaction.
        tx: TxId,
        /// Its phase.
        state: TxPhase,
        /// What was attempted.
        action: TxAction,
    },
    /// A transaction branch has no prepared hold (it was never prepared, or its hold was
    /// already released), or names a hold it does not own.
    #[error("transaction branch {branch} holds nothing prepared")]
    BranchNotPrepared {
        /// The branch.
        branch: BranchId,
    },
    /// A transaction branch was prepared again while its hold is active.
    #[error("transaction branch {branch} already holds hold {hold}")]
    BranchAlreadyPrepared {
        /// The branch.
        branch: BranchId,
        /// Its active hold.
        hold: HoldId,
    },
    /// The hold belongs to a transaction branch: only that transaction's decision commits or
    /// cancels it, and its charge cannot be refunded.
    #[error("hold {hold} belongs to transaction branch {owner}")]
    HoldOwnedByTransaction {
        /// The hold.
        hold: HoldId,
        /// Its owner.
        owner: BranchId,
    },
    /// The transaction passed its deadline and was aborted.
    #[error("transaction {0} timed out and was aborted")]
    TransactionTimedOut(TxId),
    /// A participant voted no (or failed) in phase one; the transaction was aborted.
    #[error("transaction {tx} aborted: participant {participant} refused: {reason}")]
    TransactionAborted {
        /// The transaction.
        tx: TxId,
        /// Who refused.
        participant: String,
        /// Why.
        reason: String,
    },
    /// A participant name is not registered with the transaction manager.
    #[error("unknown participant {0}")]
    UnknownParticipant(String),
    /// A transaction branch payload could not be read by its participant.
    #[error("invalid transaction payload: {0}")]
    InvalidPayload(String),
    /// The audit log is behind by `backlog` committed entries, past the configured
    /// `limit`: the change was refused (nothing applied) rather than left un-audited. Retry
    /// once the sequencer catches up (it is retryable).
    #[error("audit log backlog of {backlog} entries is at its limit of {limit}; change refused")]
    AuditBacklogFull {
        /// Committed entries not yet in the log.
        backlog: u64,
        /// The configured limit.
        limit: u64,
    },
    /// A void's reason failed validation ([`Reason::new`](crate::Reason::new)).
    #[error("invalid reason: {reason}")]
    InvalidReason {
        /// Which rule it broke.
        reason: String,
    },
    /// A rollover policy failed validation
    /// ([`RolloverPolicy::new`](crate::RolloverPolicy::new)).
    #[error("invalid rollover policy: {reason}")]
    InvalidRollover {
        /// Which rule it broke.
        reason: String,
    },
    /// Balance thresholds that break a rule
    /// ([`BalanceThresholds::new`](crate::BalanceThresholds::new)): fix the list and retry.
    #[error("invalid balance thresholds: {reason}")]
    InvalidThresholds {
        /// Which rule it broke.
        reason: String,
    },
    /// An import dated before the tenant's last entry: a tenant's imports must come in
    /// time order, before any change made now.
    #[error("import dated {at} is before the tenant's last entry at {last}")]
    ImportOutOfOrder {
        /// The import's time.
        at: Timestamp,
        /// The tenant's last entry's time.
        last: Timestamp,
    },
    /// An import dated after now.
    #[error("import dated {at} is in the future (now is {now})")]
    ImportInFuture {
        /// The import's time.
        at: Timestamp,
        /// The ledger's time.
        now: Timestamp,
    },
    /// No lot with this number was ever granted to the tenant.
    #[error("unknown lot {0}")]
    UnknownLot(LotId),
    /// The lot has nothing left to void: it was spent, expired or voided already (its
    /// credits may still sit in a hold, which a void never touches).
    #[error("lot {0} has nothing left")]
    LotEmpty(LotId),
    /// The tenant is frozen: consumes and reserves are refused until it is unfrozen
    /// (grants, refunds, commits and cancels of existing holds still work).
    #[error("tenant {0} is frozen")]
    TenantFrozen(TenantId),
    /// An unfreeze of a tenant that is not frozen.
    #[error("tenant {0} is not frozen")]
    TenantNotFrozen(TenantId),
    /// The tenant is closed: every change is refused, for good. Its history stays readable.
    #[error("tenant {0} is closed")]
    TenantClosed(TenantId),
    /// A close was refused because holds are still open: commit or cancel them (or let them
    /// expire) first.
    #[error("tenant {tenant} still has {holds} open holds")]
    HoldsOpen {
        /// The tenant.
        tenant: TenantId,
        /// How many holds are active.
        holds: u64,
    },
    /// The storage backend failed. The operation may or may not have been applied; retrying
    /// with the same idempotency key is safe.
    #[error("storage failure: {0}")]
    Storage(StorageError),
}

impl LedgerError {
    /// Whether retrying the same request (same idempotency key) may succeed. True only for
    /// storage failures and a full audit backlog; every other variant is a definite answer.
    ///
    /// ```
    /// use credits_core::{LedgerError, StorageError};
    ///
    /// assert!(!LedgerError::ZeroAmount.is_retryable());
    /// assert!(LedgerError::Storage(StorageError::retryable("connection reset")).is_retryable());
    /// ```
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            LedgerError::Storage(e) => e.retryable,
            LedgerError::AuditBacklogFull { .. } => true,
            LedgerError::BatchRejected { source, .. } => source.is_retryable(),
            _ => false,
        }
    }

    /// A stable snake_case name for the variant: what a client matches on (the service sends
    /// it as the error `code`) and what logs and metrics are labelled with. These strings
    /// never change once released; a new variant gets a new one. A storage failure is
    /// `storage_unavailable` when a retry may succeed and `storage_failure` otherwise.
    ///
    /// ```
    /// use credits_core::{Amount, LedgerError};
    ///
    /// let e = LedgerError::InsufficientCredits { requested: Amount::new(5), spendable: Amount::ZERO };
    /// assert_eq!(e.code(), "insufficient_credits");
    /// ```
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            LedgerError::ZeroAmount => "zero_amount",
            LedgerError::ZeroTtl => "zero_ttl",
            LedgerError::InvalidTenantId { .. } => "invalid_tenant_id",
            LedgerError::InvalidIdempotencyKey { .. } => "invalid_idempotency_key",
            LedgerError::ExpiryNotInFuture => "expiry_not_in_future",
            LedgerError::AmountOverflow => "amount_overflow",
            LedgerError::UnknownTenant(_) => "unknown_tenant",
            LedgerError::TenantExists(_) => "tenant_exists",
            LedgerError::InsufficientCredits { .. } => "insufficient_credits",
            LedgerError::UnknownHold(_) => "unknown_hold",
            LedgerError::HoldAlreadyCommitted(_) => "hold_already_committed",
            LedgerError::HoldAlreadyCancelled(_) => "hold_already_cancelled",
            LedgerError::HoldExpired(_) => "hold_expired",
            LedgerError::CommitExceedsHold { .. } => "commit_exceeds_hold",
            LedgerError::UnknownEntry(_) => "unknown_entry",
            LedgerError::NotRefundable(_) => "not_refundable",
            LedgerError::RefundExceedsConsumed { .. } => "refund_exceeds_consumed",
            LedgerError::IdempotencyConflict(_) => "idempotency_conflict",
            LedgerError::EmptyBatch => "empty_batch",
            LedgerError::BatchTooLarge { .. } => "batch_too_large",
            LedgerError::DuplicateKeyInBatch(_) => "duplicate_key_in_batch",
            LedgerError::BatchRejected { .. } => "batch_rejected",
            LedgerError::UnknownTransaction(_) => "unknown_transaction",
            LedgerError::TransactionState { .. } => "transaction_state",
            LedgerError::BranchNotPrepared { .. } => "branch_not_prepared",
            LedgerError::BranchAlreadyPrepared { .. } => "branch_already_prepared",
            LedgerError::HoldOwnedByTransaction { .. } => "hold_owned_by_transaction",
            LedgerError::TransactionTimedOut(_) => "transaction_timed_out",
            LedgerError::TransactionAborted { .. } => "transaction_aborted",
            LedgerError::UnknownParticipant(_) => "unknown_participant",
            LedgerError::InvalidPayload(_) => "invalid_payload",
            LedgerError::AuditBacklogFull { .. } => "audit_backlog_full",
            LedgerError::InvalidReason { .. } => "invalid_reason",
            LedgerError::InvalidRollover { .. } => "invalid_rollover",
            LedgerError::InvalidThresholds { .. } => "invalid_thresholds",
            LedgerError::ImportOutOfOrder { .. } => "import_out_of_order",
            LedgerError::ImportInFuture { .. } => "import_in_future",
            LedgerError::UnknownLot(_) => "unknown_lot",
            LedgerError::LotEmpty(_) => "lot_empty",
            LedgerError::TenantFrozen(_) => "tenant_frozen",
            LedgerError::TenantNotFrozen(_) => "tenant_not_frozen",
            LedgerError::TenantClosed(_) => "tenant_closed",
            LedgerError::HoldsOpen { .. } => "holds_open",
            LedgerError::Storage(s) if s.retryable => "storage_unavailable",
            LedgerError::Storage(_) => "storage_failure",
        }
    }

    /// Whether the backend was unavailable: a storage failure that a retry may cure (a
    /// dropped connection, a timeout, a database that is down). What a circuit breaker in
    /// front of the store counts as a failure; a domain answer, a refused value or a corrupt
    /// row is the backend answering, not an outage.
    ///
    /// ```
    /// use credits_core::{LedgerError, StorageError};
    ///
    /// assert!(LedgerError::Storage(StorageError::retryable("connection reset")).is_unavailable());
    /// assert!(!LedgerError::Storage(StorageError::permanent("corrupt row")).is_unavailable());
    /// assert!(!LedgerError::AmountOverflow.is_unavailable());
    /// ```
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        match self {
            LedgerError::Storage(e) => e.retryable,
            LedgerError::BatchRejected { source, .. } => source.is_unavailable(),
            _ => false,
        }
    }

    /// Whether this is a storage failure (as opposed to a definite domain answer).
    #[must_use]
    pub fn is_storage(&self) -> bool {
        match self {
            LedgerError::Storage(_) => true,
            LedgerError::BatchRejected { source, .. } => source.is_storage(),
            _ => false,
        }
    }
}

/// A backend failure, carried as text so that [`LedgerError`] stays `Clone` and serializable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{message}")]
pub struct StorageError {
    /// What went wrong.
    pub message: String,
    /// Whether a retry may succeed (a dropped connection: yes; a corrupt row: no).
    pub retryable: bool,
}

impl StorageError {
    /// A failure that a retry may cure (a dropped connection, a timeout, a serialization
    /// conflict). Retrying with the same idempotency key is safe.
    ///
    /// ```
    /// use credits_core::StorageError;
    ///
    /// assert!(StorageError::retryable("connection reset").retryable);
    /// assert!(!StorageError::permanent("corrupt row").retryable);
    /// ```
    #[must_use]
    pub fn retryable(message: impl Into<String>) -> Self {
        StorageError {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure that a retry will not cure (a corrupt row, a schema the build does not
    /// know, a value the backend cannot store).
    #[must_use]
    pub fn permanent(message: impl Into<String>) -> Self {
        StorageError {
            message: message.into(),
            retryable: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tx::{BranchId, TxAction, TxId, TxPhase};

    /// One value of every variant and the code it must keep forever.
    fn table() -> Vec<(LedgerError, &'static str)> {
        let tenant = TenantId::new("acme").unwrap();
        let key = IdempotencyKey::new("k").unwrap();
        let hold = HoldId::new(1);
        let entry = EntrySeq::new(1);
        let tx = TxId::new(7);
        let branch = BranchId::new(tx, 1);
        let amount = Amount::new(1);
        vec![
            (LedgerError::ZeroAmount, "zero_amount"),
            (LedgerError::ZeroTtl, "zero_ttl"),
            (
                LedgerError::InvalidTenantId {
                    reason: String::new(),
                },
                "invalid_tenant_id",
            ),
            (
                LedgerError::InvalidIdempotencyKey {
                    reason: String::new(),
                },
                "invalid_idempotency_key",
            ),
            (LedgerError::ExpiryNotInFuture, "expiry_not_in_future"),
            (LedgerError::AmountOverflow, "amount_overflow"),
            (LedgerError::UnknownTenant(tenant.clone()), "unknown_tenant"),
            (LedgerError::TenantExists(tenant.clone()), "tenant_exists"),
            (
                LedgerError::InsufficientCredits {
                    requested: amount,
                    spendable: amount,
                },
                "insufficient_credits",
            ),
            (LedgerError::UnknownHold(hold), "unknown_hold"),
            (
                LedgerError::HoldAlreadyCommitted(hold),
                "hold_already_committed",
            ),
            (
                LedgerError::HoldAlreadyCancelled(hold),
                "hold_already_cancelled",
            ),
            (LedgerError::HoldExpired(hold), "hold_expired"),
            (
                LedgerError::CommitExceedsHold {
                    hold,
                    held: amount,
                    requested: amount,
                },
                "commit_exceeds_hold",
            ),
            (LedgerError::UnknownEntry(entry), "unknown_entry"),
            (LedgerError::NotRefundable(entry), "not_refundable"),
            (
                LedgerError::RefundExceedsConsumed {
                    entry,
                    refundable: amount,
                    requested: amount,
                },
                "refund_exceeds_consumed",
            ),
            (
                LedgerError::IdempotencyConflict(key.clone()),
                "idempotency_conflict",
            ),
            (LedgerError::EmptyBatch, "empty_batch"),
            (
                LedgerError::BatchTooLarge { max: 1, len: 2 },
                "batch_too_large",
            ),
            (
                LedgerError::DuplicateKeyInBatch(key),
                "duplicate_key_in_batch",
            ),
            (
                LedgerError::BatchRejected {
                    index: 0,
                    source: Box::new(LedgerError::ZeroAmount),
                },
                "batch_rejected",
            ),
            (LedgerError::UnknownTransaction(tx), "unknown_transaction"),
            (
                LedgerError::TransactionState {
                    tx,
                    state: TxPhase::Active,
                    action: TxAction::Finish,
                },
                "transaction_state",
            ),
            (
                LedgerError::BranchNotPrepared { branch },
                "branch_not_prepared",
            ),
            (
                LedgerError::BranchAlreadyPrepared { branch, hold },
                "branch_already_prepared",
            ),
            (
                LedgerError::HoldOwnedByTransaction {
                    hold,
                    owner: branch,
                },
                "hold_owned_by_transaction",
            ),
            (
                LedgerError::TransactionTimedOut(tx),
                "transaction_timed_out",
            ),
            (
                LedgerError::TransactionAborted {
                    tx,
                    participant: String::new(),
                    reason: String::new(),
                },
                "transaction_aborted",
            ),
            (
                LedgerError::UnknownParticipant(String::new()),
                "unknown_participant",
            ),
            (
                LedgerError::InvalidPayload(String::new()),
                "invalid_payload",
            ),
            (
                LedgerError::AuditBacklogFull {
                    backlog: 0,
                    limit: 0,
                },
                "audit_backlog_full",
            ),
            (
                LedgerError::InvalidReason { reason: "r".into() },
                "invalid_reason",
            ),
            (
                LedgerError::InvalidRollover { reason: "r".into() },
                "invalid_rollover",
            ),
            (
                LedgerError::InvalidThresholds { reason: "r".into() },
                "invalid_thresholds",
            ),
            (
                LedgerError::ImportOutOfOrder {
                    at: Timestamp::EPOCH,
                    last: Timestamp::EPOCH,
                },
                "import_out_of_order",
            ),
            (
                LedgerError::ImportInFuture {
                    at: Timestamp::EPOCH,
                    now: Timestamp::EPOCH,
                },
                "import_in_future",
            ),
            (LedgerError::UnknownLot(LotId::new(1)), "unknown_lot"),
            (LedgerError::LotEmpty(LotId::new(1)), "lot_empty"),
            (LedgerError::TenantFrozen(tenant.clone()), "tenant_frozen"),
            (
                LedgerError::TenantNotFrozen(tenant.clone()),
                "tenant_not_frozen",
            ),
            (LedgerError::TenantClosed(tenant.clone()), "tenant_closed"),
            (
                LedgerError::HoldsOpen {
                    tenant: tenant.clone(),
                    holds: 1,
                },
                "holds_open",
            ),
            (
                LedgerError::Storage(StorageError::retryable("x")),
                "storage_unavailable",
            ),
            (
                LedgerError::Storage(StorageError::permanent("x")),
                "storage_failure",
            ),
        ]
    }

    #[test]
    fn every_variant_keeps_its_code() {
        for (error, code) in table() {
            assert_eq!(error.code(), code, "{error:?}");
        }
    }

    #[test]
    fn codes_are_unique_snake_case() {
        let table = table();
        let mut codes: Vec<&str> = table.iter().map(|(_, c)| *c).collect();
        for c in &codes {
            assert!(
                c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{c}"
            );
        }
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), table.len(), "a code is used twice");
    }

    /// Fails to compile when a variant is added without a row in `table`.
    #[test]
    fn the_table_names_every_variant() {
        for (error, _) in table() {
            match error {
                LedgerError::ZeroAmount
                | LedgerError::ZeroTtl
                | LedgerError::InvalidTenantId { .. }
                | LedgerError::InvalidIdempotencyKey { .. }
                | LedgerError::ExpiryNotInFuture
                | LedgerError::AmountOverflow
                | LedgerError::UnknownTenant(_)
                | LedgerError::TenantExists(_)
                | LedgerError::InsufficientCredits { .. }
                | LedgerError::UnknownHold(_)
                | LedgerError::HoldAlreadyCommitted(_)
                | LedgerError::HoldAlreadyCancelled(_)
                | LedgerError::HoldExpired(_)
                | LedgerError::CommitExceedsHold { .. }
                | LedgerError::UnknownEntry(_)
                | LedgerError::NotRefundable(_)
                | LedgerError::RefundExceedsConsumed { .. }
                | LedgerError::IdempotencyConflict(_)
                | LedgerError::EmptyBatch
                | LedgerError::BatchTooLarge { .. }
                | LedgerError::DuplicateKeyInBatch(_)
                | LedgerError::BatchRejected { .. }
                | LedgerError::UnknownTransaction(_)
                | LedgerError::TransactionState { .. }
                | LedgerError::BranchNotPrepared { .. }
                | LedgerError::BranchAlreadyPrepared { .. }
                | LedgerError::HoldOwnedByTransaction { .. }
                | LedgerError::TransactionTimedOut(_)
                | LedgerError::TransactionAborted { .. }
                | LedgerError::UnknownParticipant(_)
                | LedgerError::InvalidPayload(_)
                | LedgerError::AuditBacklogFull { .. }
                | LedgerError::InvalidReason { .. }
                | LedgerError::InvalidRollover { .. }
                | LedgerError::InvalidThresholds { .. }
                | LedgerError::ImportOutOfOrder { .. }
                | LedgerError::ImportInFuture { .. }
                | LedgerError::UnknownLot(_)
                | LedgerError::LotEmpty(_)
                | LedgerError::TenantFrozen(_)
                | LedgerError::TenantNotFrozen(_)
                | LedgerError::TenantClosed(_)
                | LedgerError::HoldsOpen { .. }
                | LedgerError::Storage(_) => {}
            }
        }
    }
}
