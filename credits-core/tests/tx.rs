//! The two-phase-commit transaction manager: commit, refusal, timeout, crash recovery.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use credits_core::tx::{
    BranchId, HoldBranch, LedgerHolds, MemoryTxLog, Participant, TransactionManager, TxDecision,
    TxId, TxLog, TxOutcome, TxPhase, TxRecoveryReport,
};
use credits_core::{
    Amount, GrantOptions, IdempotencyKey, Ledger, LedgerError, LedgerStore, MemoryLedgerStore,
    StorageError, TenantId, TenantSettings,
};
use metered_clock::{ManualClock, Timestamp};
use parking_lot::Mutex;

/// A host resource: records calls; can refuse prepare or fail commit a number of times; on
/// commit it checks that the decision was logged first.
#[derive(Debug)]
struct Resource {
    log: Arc<MemoryTxLog>,
    refuse: bool,
    commit_failures: Mutex<u32>,
    calls: Mutex<Vec<String>>,
}

impl Resource {
    fn new(log: Arc<MemoryTxLog>, refuse: bool, commit_failures: u32) -> Arc<Self> {
        Arc::new(Resource {
            log,
            refuse,
            commit_failures: Mutex::new(commit_failures),
            calls: Mutex::new(Vec::new()),
        })
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().clone()
    }
}

#[async_trait]
impl Participant for Resource {
    fn name(&self) -> &str {
        "resource"
    }
    async fn prepare(&self, _branch: BranchId, payload: &str) -> Result<Arc<str>, LedgerError> {
        self.calls.lock().push(format!("prepare {payload}"));
        if self.refuse {
            return Err(LedgerError::InvalidPayload("no capacity".into()));
        }
        Ok(format!("ready {payload}").into())
    }
    async fn commit(
        &self,
        branch: BranchId,
        payload: &str,
        prepared: &str,
    ) -> Result<(), LedgerError> {
        assert_eq!(
            prepared,
            format!("ready {payload}"),
            "phase one's answer comes back"
        );
        let phase = self.log.get(branch.tx).await?.map(|r| r.phase);
        assert_eq!(
            phase,
            Some(TxPhase::Decided(TxDecision::Commit)),
            "decision logged before phase two"
        );
        let mut failures = self.commit_failures.lock();
        if *failures > 0 {
            *failures -= 1;
            return Err(LedgerError::Storage(StorageError::retryable(
                "crash during phase two",
            )));
        }
        self.calls.lock().push(format!("commit {payload}"));
        Ok(())
    }
    async fn abort(
        &self,
        _branch: BranchId,
        payload: &str,
        _prepared: Option<&str>,
    ) -> Result<(), LedgerError> {
        self.calls.lock().push(format!("abort {payload}"));
        Ok(())
    }
}

struct Fixture {
    clock: ManualClock,
    ledger: Ledger<MemoryLedgerStore>,
    log: Arc<MemoryTxLog>,
    tenant: TenantId,
}

async fn fixture() -> Fixture {
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_000_000));
    let ledger = Ledger::in_memory(clock.clone());
    let tenant = TenantId::new("acme").unwrap();
    ledger
        .create_tenant(&tenant, TenantSettings::default())
        .await
        .unwrap();
    ledger
        .grant(
            &tenant,
            IdempotencyKey::new("g").unwrap(),
            Amount::new(100),
            GrantOptions::default(),
        )
        .await
        .unwrap();
    Fixture {
        clock,
        ledger,
        log: Arc::new(MemoryTxLog::new()),
        tenant,
    }
}

fn manager(f: &Fixture, resource: Arc<Resource>) -> TransactionManager {
    TransactionManager::builder(f.log.clone(), Arc::new(f.clock.clone()))
        .participant(Arc::new(LedgerHolds::new("credits", f.ledger.clone())))
        .participant(resource)
        .build()
}

fn branch(f: &Fixture, reserve: u64, commit: u64) -> String {
    HoldBranch::new(f.tenant.clone(), Amount::new(reserve), Amount::new(commit))
        .unwrap()
        .payload()
}

#[tokio::test]
async fn commit_spends_the_held_credits_and_commits_every_branch() {
    let f = fixture().await;
    let res = Resource::new(f.log.clone(), false, 0);
    let tm = manager(&f, res.clone());
    let tx = tm.begin(Duration::from_secs(30)).await.unwrap();
    tm.enlist(tx, "credits", branch(&f, 40, 25)).await.unwrap();
    tm.enlist(tx, "resource", "slot-1").await.unwrap();
    tm.prepare(tx).await.unwrap();
    assert_eq!(
        f.ledger.balance(&f.tenant).await.unwrap().held,
        Amount::new(40),
        "phase one holds"
    );
    assert_eq!(tm.commit(tx).await.unwrap(), TxOutcome::Committed);
    let b = f.ledger.balance(&f.tenant).await.unwrap();
    assert_eq!((b.available, b.held), (Amount::new(75), Amount::ZERO));
    assert_eq!(res.calls(), vec!["prepare slot-1", "commit slot-1"]);
    assert_eq!(
        tm.commit(tx).await.unwrap(),
        TxOutcome::Committed,
        "commit is idempotent"
    );
    assert!(matches!(
        tm.abort(tx).await,
        Err(LedgerError::TransactionState { .. })
    ));
    assert!(matches!(
        tm.enlist(tx, "resource", "late").await,
        Err(LedgerError::TransactionState { .. })
    ));
    assert_eq!(
        f.ledger.balance(&f.tenant).await.unwrap().available,
        Amount::new(75),
        "charged once"
    );
}

#[tokio::test]
async fn a_refusal_in_phase_one_aborts_every_branch() {
    let f = fixture().await;
    let res = Resource::new(f.log.clone(), true, 0);
    let tm = manager(&f, res.clone());
    let tx = tm.begin(Duration::from_secs(30)).await.unwrap();
    tm.enlist(tx, "credits", branch(&f, 40, 40)).await.unwrap();
    tm.enlist(tx, "resource", "slot-1").await.unwrap();
    let err = tm.commit(tx).await.unwrap_err();
    assert!(
        matches!(err, LedgerError::TransactionAborted { ref participant, .. } if participant == "resource"),
        "{err}"
    );
    let b = f.ledger.balance(&f.tenant).await.unwrap();
    assert_eq!(
        (b.available, b.held),
        (Amount::new(100), Amount::ZERO),
        "hold cancelled"
    );
    assert_eq!(res.calls(), vec!["prepare slot-1", "abort slot-1"]);
    assert_eq!(
        f.log.get(tx).await.unwrap().unwrap().phase,
        TxPhase::Finished(TxDecision::Abort)
    );
}

#[tokio::test]
async fn insufficient_credits_refuse_and_unprepared_branches_abort_cleanly() {
    let f = fixture().await;
    let res = Resource::new(f.log.clone(), false, 0);
    let tm = manager(&f, res.clone());
    let tx = tm.begin(Duration::from_secs(30)).await.unwrap();
    tm.enlist(tx, "resource", "slot-1").await.unwrap();
    tm.enlist(tx, "credits", branch(&f, 500, 10)).await.unwrap();
    let err = tm.prepare(tx).await.unwrap_err();
    assert!(
        matches!(err, LedgerError::TransactionAborted { ref participant, .. } if participant == "credits")
    );
    assert_eq!(res.calls(), vec!["prepare slot-1", "abort slot-1"]);
    assert_eq!(
        f.ledger.balance(&f.tenant).await.unwrap().available,
        Amount::new(100)
    );
}

#[tokio::test]
async fn a_transaction_past_its_deadline_is_aborted() {
    let f = fixture().await;
    let res = Resource::new(f.log.clone(), false, 0);
    let tm = manager(&f, res.clone());
    let tx = tm.begin(Duration::from_secs(30)).await.unwrap();
    tm.enlist(tx, "credits", branch(&f, 40, 40)).await.unwrap();
    tm.prepare(tx).await.unwrap();
    f.clock.advance(Duration::from_secs(31));
    assert_eq!(
        tm.commit(tx).await,
        Err(LedgerError::TransactionTimedOut(tx))
    );
    assert_eq!(
        f.ledger.balance(&f.tenant).await.unwrap().available,
        Amount::new(100),
        "hold released"
    );
    // Undecided transactions past their deadline are aborted by recovery too.
    let tx2 = tm.begin(Duration::from_secs(5)).await.unwrap();
    tm.enlist(tx2, "credits", branch(&f, 10, 10)).await.unwrap();
    tm.prepare(tx2).await.unwrap();
    let tx3 = tm.begin(Duration::from_secs(60)).await.unwrap();
    f.clock.advance(Duration::from_secs(6));
    let report = tm.recover().await.unwrap();
    assert_eq!((report.aborted, report.pending), (1, 1));
    assert_eq!(
        f.ledger.balance(&f.tenant).await.unwrap().available,
        Amount::new(100)
    );
    assert_eq!(
        f.log.get(tx3).await.unwrap().unwrap().phase,
        TxPhase::Active
    );
}

#[tokio::test]
async fn recovery_drives_a_decided_transaction_to_commit_after_a_phase_two_crash() {
    let f = fixture().await;
    let res = Resource::new(f.log.clone(), false, 1);
    let tm = manager(&f, res.clone());
    let tx = tm.begin(Duration::from_secs(30)).await.unwrap();
    tm.enlist(tx, "credits", branch(&f, 50, 20)).await.unwrap();
    tm.enlist(tx, "resource", "slot-9").await.unwrap();
    let err = tm.commit(tx).await.unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(
        f.log.get(tx).await.unwrap().unwrap().phase,
        TxPhase::Decided(TxDecision::Commit)
    );
    // The process restarts: a new manager over the same log and ledger.
    let tm2 = manager(&f, res.clone());
    f.clock.advance(Duration::from_secs(60)); // past the deadline: a decided commit still commits
    let report = tm2.recover().await.unwrap();
    assert_eq!(report.committed, 1);
    assert_eq!(
        f.log.get(tx).await.unwrap().unwrap().phase,
        TxPhase::Finished(TxDecision::Commit)
    );
    assert_eq!(
        f.ledger.balance(&f.tenant).await.unwrap().available,
        Amount::new(80),
        "committed once"
    );
    assert_eq!(res.calls(), vec!["prepare slot-9", "commit slot-9"]);
    assert_eq!(tm2.recover().await.unwrap().committed, 0, "nothing left");
}

/// Regression (found by the simulator, `docs/simulation.md`): the process dies after the
/// commit decision is logged and before phase two, and stays down far longer than any hold
/// time-to-live. The restart's expiry sweep runs first (the worst order); the prepared holds
/// must still be there, and recovery must commit every branch exactly once.
#[tokio::test]
async fn a_decided_commit_applies_on_every_participant_after_an_outage_of_any_length() {
    let f = fixture().await;
    let west = TenantId::new("west").unwrap();
    f.ledger
        .create_tenant(&west, TenantSettings::default())
        .await
        .unwrap();
    f.ledger
        .grant(
            &west,
            IdempotencyKey::new("g").unwrap(),
            Amount::new(100),
            GrantOptions::default(),
        )
        .await
        .unwrap();
    let manager = || {
        TransactionManager::builder(f.log.clone(), Arc::new(f.clock.clone()))
            .participant(Arc::new(LedgerHolds::new("east", f.ledger.clone())))
            .participant(Arc::new(LedgerHolds::new("west", f.ledger.clone())))
            .build()
    };
    let tm = manager();
    let tx = tm.begin(Duration::from_secs(30)).await.unwrap();
    tm.enlist(tx, "east", branch(&f, 40, 30)).await.unwrap();
    let west_branch = HoldBranch::new(west.clone(), Amount::new(50), Amount::new(20)).unwrap();
    tm.enlist(tx, "west", west_branch.payload()).await.unwrap();
    tm.prepare(tx).await.unwrap();
    assert_eq!(
        f.log.decide(tx, TxDecision::Commit).await.unwrap(),
        TxDecision::Commit
    );
    drop(tm); // dies before phase two
    f.clock.advance(Duration::from_secs(10 * 365 * 24 * 3600)); // a ten-year outage
    let sweep = f.ledger.recover().await.unwrap();
    assert_eq!(
        sweep.holds_expired, 0,
        "prepared holds wait for the decision"
    );
    let report = manager().recover().await.unwrap();
    assert_eq!((report.committed, report.failed), (1, 0));
    assert_eq!(
        f.log.get(tx).await.unwrap().unwrap().phase,
        TxPhase::Finished(TxDecision::Commit)
    );
    for (t, spent) in [(&f.tenant, 30), (&west, 20)] {
        let totals = f.ledger.store().totals(t).await.unwrap();
        assert_eq!(totals.consumed, Amount::new(spent), "{t}");
        assert_eq!(totals.held, Amount::ZERO, "{t}");
        assert_eq!(totals.available.units() + spent, 100, "{t}: conservation");
    }
    assert_eq!(
        manager().recover().await.unwrap(),
        TxRecoveryReport::default()
    );
}

/// Holds that do not expire are still reclaimed when the coordinator never decides: the
/// log's deadline aborts the transaction at recovery, which cancels the holds.
#[tokio::test]
async fn holds_of_an_undecided_transaction_are_reclaimed_by_recovery_after_any_outage() {
    let f = fixture().await;
    let tm = manager(&f, Resource::new(f.log.clone(), false, 0));
    let tx = tm.begin(Duration::from_secs(30)).await.unwrap();
    tm.enlist(tx, "credits", branch(&f, 60, 60)).await.unwrap();
    tm.prepare(tx).await.unwrap();
    drop(tm); // dies undecided
    f.clock.advance(Duration::from_secs(365 * 24 * 3600));
    assert_eq!(f.ledger.recover().await.unwrap().holds_expired, 0);
    assert_eq!(
        f.ledger.balance(&f.tenant).await.unwrap().held,
        Amount::new(60),
        "held until the coordinator decides"
    );
    let tm = manager(&f, Resource::new(f.log.clone(), false, 0));
    let report = tm.recover().await.unwrap();
    assert_eq!((report.aborted, report.failed), (1, 0));
    let balance = f.ledger.balance(&f.tenant).await.unwrap();
    assert_eq!(
        (balance.available, balance.held),
        (Amount::new(100), Amount::ZERO)
    );
}

#[tokio::test]
async fn bad_transaction_input_is_a_typed_error() {
    let f = fixture().await;
    let tm = manager(&f, Resource::new(f.log.clone(), false, 0));
    assert_eq!(tm.begin(Duration::ZERO).await, Err(LedgerError::ZeroTtl));
    assert_eq!(
        tm.begin(Duration::MAX).await,
        Err(LedgerError::AmountOverflow)
    );
    let tx = tm.begin(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        tm.enlist(tx, "nobody", "x").await,
        Err(LedgerError::UnknownParticipant("nobody".into()))
    );
    let ghost = TxId::new(999);
    assert_eq!(
        tm.prepare(ghost).await,
        Err(LedgerError::UnknownTransaction(ghost))
    );
    assert_eq!(
        tm.commit(ghost).await,
        Err(LedgerError::UnknownTransaction(ghost))
    );
    tm.enlist(tx, "credits", "not json").await.unwrap();
    let r = tm.prepare(tx).await;
    assert!(
        matches!(r, Err(LedgerError::TransactionAborted { .. })),
        "{r:?}"
    );
    let tx = tm.begin(Duration::from_secs(5)).await.unwrap();
    assert!(matches!(
        HoldBranch::new(f.tenant.clone(), Amount::new(10), Amount::new(11)),
        Err(LedgerError::CommitExceedsHold { .. })
    ));
    // A payload written by hand that promises more than it holds is refused in phase one.
    let forged = format!(r#"{{"tenant":"{}","reserve":10,"commit":11}}"#, f.tenant);
    assert!(HoldBranch::parse(&forged).is_err());
    tm.enlist(tx, "credits", forged).await.unwrap();
    assert!(
        matches!(
            tm.prepare(tx).await,
            Err(LedgerError::TransactionAborted { .. })
        ),
        "commit above reserve refused"
    );
    assert_eq!(
        f.ledger.balance(&f.tenant).await.unwrap().available,
        Amount::new(100)
    );
}

/// Transaction ids are unique across log incarnations: a new log after a restart never
/// replays an earlier transaction's steps (which would commit without charging).
#[tokio::test]
async fn a_new_log_never_reuses_an_earlier_logs_transaction_ids() {
    let f = fixture().await;
    let mut charged = 0;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let log = Arc::new(MemoryTxLog::new()); // a fresh incarnation each time
        let tm = TransactionManager::builder(log, Arc::new(f.clock.clone()))
            .participant(Arc::new(LedgerHolds::new("credits", f.ledger.clone())))
            .build();
        let tx = tm.begin(Duration::from_secs(30)).await.unwrap();
        ids.push(tx);
        tm.enlist(tx, "credits", branch(&f, 10, 10)).await.unwrap();
        assert_eq!(tm.commit(tx).await, Ok(TxOutcome::Committed));
        charged += 10;
        let totals = f.ledger.store().totals(&f.tenant).await.unwrap();
        assert_eq!(
            totals.consumed,
            Amount::new(charged),
            "every transaction charges"
        );
    }
    ids.dedup();
    assert_eq!(ids.len(), 3, "{ids:?}");
}

/// A participant that enlists another branch while the others prepare (a racing
/// `enlist`).
#[derive(Debug)]
struct Enlister {
    log: Arc<MemoryTxLog>,
    payload: String,
    done: Mutex<bool>,
}

#[async_trait]
impl Participant for Enlister {
    fn name(&self) -> &str {
        "enlister"
    }
    async fn prepare(&self, branch: BranchId, _payload: &str) -> Result<Arc<str>, LedgerError> {
        let first = !std::mem::replace(&mut *self.done.lock(), true);
        if first {
            let racing = credits_core::tx::Branch::new("credits", self.payload.clone());
            self.log.enlist(branch.tx, racing).await?;
        }
        Ok(Arc::from(""))
    }
    async fn commit(&self, _: BranchId, _: &str, _: &str) -> Result<(), LedgerError> {
        Ok(())
    }
    async fn abort(&self, _: BranchId, _: &str, _: Option<&str>) -> Result<(), LedgerError> {
        Ok(())
    }
}

/// `mark_prepared` succeeds only for the branch set that was prepared: a branch enlisted
/// while the others prepared aborts the transaction instead of being committed unprepared.
#[tokio::test]
async fn a_branch_enlisted_while_preparing_aborts_the_transaction() {
    let f = fixture().await;
    let enlister = Arc::new(Enlister {
        log: f.log.clone(),
        payload: branch(&f, 40, 40),
        done: Mutex::new(false),
    });
    let tm = TransactionManager::builder(f.log.clone(), Arc::new(f.clock.clone()))
        .participant(Arc::new(LedgerHolds::new("credits", f.ledger.clone())))
        .participant(enlister)
        .build();
    let tx = tm.begin(Duration::from_secs(30)).await.unwrap();
    tm.enlist(tx, "credits", branch(&f, 25, 25)).await.unwrap();
    tm.enlist(tx, "enlister", "").await.unwrap();
    let err = tm.commit(tx).await.unwrap_err();
    assert!(
        matches!(err, LedgerError::TransactionAborted { .. }),
        "{err:?}"
    );
    let record = f.log.get(tx).await.unwrap().unwrap();
    assert_eq!(record.phase, TxPhase::Finished(TxDecision::Abort));
    assert_eq!(record.branches.len(), 3);
    let balance = f.ledger.balance(&f.tenant).await.unwrap();
    assert_eq!(
        (balance.available, balance.held),
        (Amount::new(100), Amount::ZERO),
        "the prepared branch was released, the racing one never charged"
    );
}

/// A phase-one call that lands after its transaction was aborted leaves a hold that no
/// coordinator will ever resolve; recovery finds it (it is owned by a finished
/// transaction's branch) and releases it.
#[tokio::test]
async fn a_prepare_that_lands_after_the_abort_is_released_by_recovery() {
    let f = fixture().await;
    let holds = Arc::new(LedgerHolds::new("credits", f.ledger.clone()));
    let tm = TransactionManager::builder(f.log.clone(), Arc::new(f.clock.clone()))
        .participant(holds.clone())
        .build();
    let tx = tm.begin(Duration::from_secs(30)).await.unwrap();
    let payload = branch(&f, 70, 70);
    let id = tm.enlist(tx, "credits", payload.clone()).await.unwrap();
    assert_eq!(tm.abort(tx).await, Ok(TxOutcome::Aborted));
    holds.prepare(id, &payload).await.unwrap(); // late
    assert_eq!(
        f.ledger.balance(&f.tenant).await.unwrap().held,
        Amount::new(70)
    );
    let report = tm.recover().await.unwrap();
    assert_eq!(
        (report.orphans_resolved, report.failed),
        (1, 0),
        "{report:?}"
    );
    let balance = f.ledger.balance(&f.tenant).await.unwrap();
    assert_eq!(
        (balance.available, balance.held),
        (Amount::new(100), Amount::ZERO)
    );
}

/// The one recovery entry point also applies the ledger's due expiries, and reports a
/// transaction it cannot finish past its deadline as in doubt.
#[tokio::test]
async fn recovery_applies_due_expiries_and_reports_transactions_in_doubt() {
    let f = fixture().await;
    f.ledger
        .reserve(
            &f.tenant,
            IdempotencyKey::new("plain").unwrap(),
            Amount::new(10),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let resource = Resource::new(f.log.clone(), false, u32::MAX);
    let tm = manager(&f, resource);
    let tx = tm.begin(Duration::from_secs(30)).await.unwrap();
    tm.enlist(tx, "resource", "r").await.unwrap();
    assert!(tm.commit(tx).await.is_err(), "phase two fails");
    f.clock.advance(Duration::from_secs(60));
    let report = tm.recover().await.unwrap();
    assert_eq!((report.failed, report.in_doubt), (1, 1), "{report:?}");
    let balance = f.ledger.balance(&f.tenant).await.unwrap();
    assert_eq!(
        (balance.available, balance.held),
        (Amount::new(100), Amount::ZERO),
        "the plain hold expired"
    );
}
