//! The coordinator: [`TransactionManager`] and its builder.

use std::sync::Arc;
use std::time::Duration;

use hashbrown::HashMap;
use metered_clock::Clock;

use super::{
    Branch, BranchId, Participant, TxAction, TxDecision, TxId, TxLog, TxOutcome, TxPhase, TxRecord,
    TxRecoveryReport,
};
use crate::LedgerError;

/// Builds a [`TransactionManager`].
#[derive(Debug)]
#[must_use]
pub struct TransactionManagerBuilder {
    log: Arc<dyn TxLog>,
    clock: Arc<dyn Clock>,
    participants: HashMap<Arc<str>, Arc<dyn Participant>>,
}

impl TransactionManagerBuilder {
    /// Registers a participant under its [`name`](Participant::name) (a later one with the
    /// same name replaces it).
    pub fn participant(mut self, participant: Arc<dyn Participant>) -> Self {
        self.participants
            .insert(Arc::from(participant.name()), participant);
        self
    }

    /// Builds the manager.
    pub fn build(self) -> TransactionManager {
        TransactionManager {
            log: self.log,
            clock: self.clock,
            participants: self.participants,
        }
    }
}

/// The two-phase-commit coordinator.
#[derive(Debug)]
pub struct TransactionManager {
    log: Arc<dyn TxLog>,
    clock: Arc<dyn Clock>,
    participants: HashMap<Arc<str>, Arc<dyn Participant>>,
}

impl TransactionManager {
    /// Starts building a manager over a log and a clock.
    pub fn builder(log: Arc<dyn TxLog>, clock: Arc<dyn Clock>) -> TransactionManagerBuilder {
        TransactionManagerBuilder {
            log,
            clock,
            participants: HashMap::new(),
        }
    }

    /// The log.
    #[must_use]
    pub fn log(&self) -> &Arc<dyn TxLog> {
        &self.log
    }

    /// Begins a transaction that must be decided within `timeout`.
    ///
    /// # Errors
    /// [`LedgerError::ZeroTtl`] for a zero timeout; [`LedgerError::AmountOverflow`] if the
    /// deadline does not fit; log failures.
    pub async fn begin(&self, timeout: Duration) -> Result<TxId, LedgerError> {
        if timeout.is_zero() {
            return Err(LedgerError::ZeroTtl);
        }
        let deadline = self
            .clock
            .now()
            .checked_add(timeout)
            .ok_or(LedgerError::AmountOverflow)?;
        self.log.begin(deadline).await
    }

    async fn record(&self, tx: TxId) -> Result<TxRecord, LedgerError> {
        self.log
            .get(tx)
            .await?
            .ok_or(LedgerError::UnknownTransaction(tx))
    }

    fn state_error(tx: TxId, phase: TxPhase, action: TxAction) -> LedgerError {
        LedgerError::TransactionState {
            tx,
            state: phase,
            action,
        }
    }

    /// Adds a branch for a registered participant and returns its id (the transaction and
    /// the branch's index). One log write; the deadline is checked by `prepare` and
    /// `commit`, which abort a transaction past it.
    ///
    /// # Errors
    /// [`LedgerError::UnknownParticipant`], [`LedgerError::UnknownTransaction`],
    /// [`LedgerError::TransactionState`] unless `Active`.
    pub async fn enlist(
        &self,
        tx: TxId,
        participant: &str,
        payload: impl Into<Arc<str>>,
    ) -> Result<BranchId, LedgerError> {
        // The registered name, shared: a branch's name costs no allocation.
        let Some((name, _)) = self.participants.get_key_value(participant) else {
            return Err(LedgerError::UnknownParticipant(participant.to_owned()));
        };
        let index = self
            .log
            .enlist(tx, Branch::new(Arc::clone(name), payload))
            .await?;
        Ok(BranchId::new(tx, index))
    }

    fn participant(&self, name: &str) -> Result<&Arc<dyn Participant>, LedgerError> {
        self.participants
            .get(name)
            .ok_or_else(|| LedgerError::UnknownParticipant(name.to_owned()))
    }

    /// Phase one: every branch prepares, and their answers are logged with the `Prepared`
    /// phase. On a refusal, past the deadline, or when a branch was enlisted meanwhile, the
    /// transaction is aborted (decision logged, every branch told).
    ///
    /// # Errors
    /// [`LedgerError::TransactionAborted`], [`LedgerError::TransactionTimedOut`],
    /// [`LedgerError::TransactionState`] if already decided; log failures.
    pub async fn prepare(&self, tx: TxId) -> Result<(), LedgerError> {
        let mut record = self.record(tx).await?;
        match record.phase {
            TxPhase::Prepared => Ok(()),
            TxPhase::Active => self.prepare_record(&mut record, false).await,
            phase => Err(Self::state_error(tx, phase, TxAction::Prepare)),
        }
    }

    /// Phase one of an `Active` transaction as read from the log; on success `record` is
    /// what the log now holds: the answers logged and the phase `Prepared`, or with
    /// `then_commit` the commit decided in the same write (`Decided`, as the log answered).
    async fn prepare_record(
        &self,
        record: &mut TxRecord,
        then_commit: bool,
    ) -> Result<(), LedgerError> {
        let tx = record.id;
        if self.clock.now() > record.deadline {
            self.finish_as(record, TxDecision::Abort).await?;
            return Err(LedgerError::TransactionTimedOut(tx));
        }
        let mut answers = Vec::with_capacity(record.branches.len());
        for (index, branch) in (0u32..).zip(&record.branches) {
            let id = BranchId::new(tx, index);
            let answer = match self.participant(&branch.participant) {
                Ok(p) => p.prepare(id, &branch.payload).await,
                Err(e) => Err(e),
            };
            match answer {
                Ok(answer) => answers.push(answer),
                Err(reason) => {
                    tracing::info!(branch = %id, participant = %branch.participant, %reason, "prepare refused; aborting");
                    return Err(self
                        .abort_after_prepare(tx, &branch.participant, reason)
                        .await);
                }
            }
        }
        if self.clock.now() > record.deadline {
            self.finish_as(record, TxDecision::Abort).await?;
            return Err(LedgerError::TransactionTimedOut(tx));
        }
        // The record takes the answers (shared) before the log does (by value): no copy of
        // the list.
        for (branch, answer) in record.branches.iter_mut().zip(&answers) {
            branch.prepared = Some(Arc::clone(answer));
        }
        let logged = if then_commit {
            self.log
                .prepare_and_commit(tx, answers)
                .await
                .map(TxPhase::Decided)
        } else {
            self.log
                .mark_prepared(tx, answers)
                .await
                .map(|()| TxPhase::Prepared)
        };
        if logged.is_err() {
            for branch in &mut record.branches {
                branch.prepared = None;
            }
        }
        match logged {
            Ok(phase) => {
                record.phase = phase;
                Ok(())
            }
            // A branch was enlisted while the others prepared: it never prepared.
            Err(LedgerError::TransactionState {
                state: TxPhase::Active,
                ..
            }) => {
                let reason = LedgerError::TransactionState {
                    tx,
                    state: TxPhase::Active,
                    action: TxAction::Enlist,
                };
                Err(self.abort_after_prepare(tx, "", reason).await)
            }
            Err(e) => Err(e),
        }
    }

    /// Aborts a transaction whose phase one failed (re-reading the log so that every branch
    /// enlisted so far is told) and returns the error for the caller.
    async fn abort_after_prepare(
        &self,
        tx: TxId,
        participant: &str,
        reason: LedgerError,
    ) -> LedgerError {
        let aborted = match self.record(tx).await {
            Ok(record) => self.finish_as(&record, TxDecision::Abort).await.map(|_| ()),
            Err(e) => Err(e),
        };
        match aborted {
            Ok(()) => LedgerError::TransactionAborted {
                tx,
                participant: participant.to_owned(),
                reason: reason.to_string(),
            },
            Err(e) => e,
        }
    }

    /// Commits: prepares first if needed, logs the decision, then runs phase two.
    ///
    /// # Errors
    /// As [`prepare`](Self::prepare); [`LedgerError::TransactionState`] if already aborted;
    /// a participant's phase-two failure (the decision stands: call
    /// [`recover`](Self::recover) later).
    pub async fn commit(&self, tx: TxId) -> Result<TxOutcome, LedgerError> {
        let mut record = self.record(tx).await?;
        match record.phase {
            TxPhase::Finished(TxDecision::Commit) => return Ok(TxOutcome::Committed),
            // Phase one, its answers and the commit decision logged in one write.
            TxPhase::Active => self.prepare_record(&mut record, true).await?,
            TxPhase::Prepared | TxPhase::Decided(TxDecision::Commit) => {}
            phase => return Err(Self::state_error(tx, phase, TxAction::Commit)),
        }
        if record.phase == TxPhase::Prepared && self.clock.now() > record.deadline {
            self.finish_as(&record, TxDecision::Abort).await?;
            return Err(LedgerError::TransactionTimedOut(tx));
        }
        match self.finish_as(&record, TxDecision::Commit).await? {
            TxDecision::Commit => Ok(TxOutcome::Committed),
            TxDecision::Abort => Err(Self::state_error(
                tx,
                TxPhase::Finished(TxDecision::Abort),
                TxAction::Commit,
            )),
        }
    }

    /// Aborts (allowed until a commit decision is logged).
    ///
    /// # Errors
    /// [`LedgerError::TransactionState`] if already decided to commit; a participant's
    /// phase-two failure (the decision stands: call [`recover`](Self::recover) later).
    pub async fn abort(&self, tx: TxId) -> Result<TxOutcome, LedgerError> {
        let record = self.record(tx).await?;
        match self.finish_as(&record, TxDecision::Abort).await? {
            TxDecision::Abort => Ok(TxOutcome::Aborted),
            TxDecision::Commit => Err(Self::state_error(tx, record.phase, TxAction::Abort)),
        }
    }

    /// Logs `decision` (unless one is on record) and drives every branch to the recorded
    /// decision. Returns the recorded decision.
    async fn finish_as(
        &self,
        record: &TxRecord,
        decision: TxDecision,
    ) -> Result<TxDecision, LedgerError> {
        let decided = match record.phase {
            TxPhase::Finished(d) => return Ok(d),
            TxPhase::Decided(d) => d,
            TxPhase::Active | TxPhase::Prepared => self.log.decide(record.id, decision).await?,
        };
        // Phase two: the decision is durable, now tell every branch.
        for (index, branch) in (0u32..).zip(&record.branches) {
            let id = BranchId::new(record.id, index);
            self.tell(id, branch, decided).await?;
        }
        self.log.finish(record.id).await?;
        Ok(decided)
    }

    /// Phase two of one branch.
    async fn tell(
        &self,
        id: BranchId,
        branch: &Branch,
        decision: TxDecision,
    ) -> Result<(), LedgerError> {
        let p = self.participant(&branch.participant)?;
        match (decision, branch.prepared.as_deref()) {
            (TxDecision::Commit, Some(prepared)) => p.commit(id, &branch.payload, prepared).await,
            // A commit is decided only once every branch's answer is logged.
            (TxDecision::Commit, None) => Err(LedgerError::BranchNotPrepared { branch: id }),
            (TxDecision::Abort, prepared) => p.abort(id, &branch.payload, prepared).await,
        }
    }

    /// The one recovery pass; run it at start-up and periodically (every few seconds).
    /// In order:
    ///
    /// 1. each participant's own housekeeping ([`Participant::recover`]: the ledger applies
    ///    its due expiries) and the log's ([`TxLog::maintain`]);
    /// 2. every unfinished transaction: decided ones are driven to their decision, undecided
    ///    ones past their deadline are aborted. One still unfinished past its deadline after
    ///    this is **in doubt**: counted, logged as a warning, and reported by the
    ///    `credits_tx_in_doubt` gauge;
    /// 3. prepared work that participants still hold for transactions the log says are
    ///    finished (a phase-one call that landed after its transaction was decided) is
    ///    resolved as the transaction was.
    ///
    /// # Errors
    /// Log failures and participants' housekeeping failures. A failure of one transaction's
    /// phase two is counted in `failed`, not returned.
    pub async fn recover(&self) -> Result<TxRecoveryReport, LedgerError> {
        let mut report = TxRecoveryReport::default();
        let mut names: Vec<&Arc<str>> = self.participants.keys().collect();
        names.sort_unstable();
        for name in &names {
            self.participants[*name].recover().await?;
        }
        let now = self.clock.now();
        report.maintained = self.log.maintain(now).await?;
        for record in self.log.unfinished().await? {
            let target = match record.phase {
                TxPhase::Decided(d) => d,
                _ if now > record.deadline => TxDecision::Abort,
                _ => {
                    report.pending += 1;
                    continue;
                }
            };
            match self.finish_as(&record, target).await {
                Ok(TxDecision::Commit) => report.committed += 1,
                Ok(TxDecision::Abort) => report.aborted += 1,
                Err(e) => {
                    report.failed += 1;
                    if now > record.deadline {
                        report.in_doubt += 1;
                        tracing::warn!(tx = %record.id, deadline = %record.deadline, error = %e, "transaction in doubt past its deadline; recovery will retry");
                    } else {
                        tracing::info!(tx = %record.id, error = %e, "recovery of transaction failed; will retry");
                    }
                }
            }
        }
        #[allow(clippy::cast_precision_loss)] // a count, far below 2^52
        metrics::gauge!("credits_tx_in_doubt").set(report.in_doubt as f64);
        for name in &names {
            self.reconcile(name, &mut report).await?;
        }
        Ok(report)
    }

    /// Step 3 of [`recover`](Self::recover) for one participant.
    async fn reconcile(
        &self,
        name: &str,
        report: &mut TxRecoveryReport,
    ) -> Result<(), LedgerError> {
        const PAGE: usize = 256;
        let participant = self.participant(name)?;
        let mut after = None;
        loop {
            let page = participant.in_flight(after, PAGE).await?;
            for work in &page {
                let Some(record) = self.log.get(work.branch.tx).await? else {
                    report.orphans_unknown += 1;
                    continue;
                };
                let TxPhase::Finished(decision) = record.phase else {
                    continue; // in progress, or step 2's business
                };
                let Some(branch) = usize::try_from(work.branch.index)
                    .ok()
                    .and_then(|i| record.branches.get(i))
                    .filter(|b| &*b.participant == name)
                else {
                    continue; // another participant's branch
                };
                let payload = &*branch.payload;
                // The logged answer, when there is one, says what phase two must do.
                let prepared = branch.prepared.as_deref().unwrap_or(&work.prepared);
                let done = match decision {
                    TxDecision::Commit => participant.commit(work.branch, payload, prepared).await,
                    TxDecision::Abort => {
                        participant
                            .abort(work.branch, payload, Some(prepared))
                            .await
                    }
                };
                match done {
                    Ok(()) => report.orphans_resolved += 1,
                    Err(e) => {
                        tracing::warn!(branch = %work.branch, error = %e, "resolving prepared work of a finished transaction failed; will retry");
                        report.failed += 1;
                    }
                }
            }
            if page.len() < PAGE {
                return Ok(());
            }
            after = page.last().map(|w| w.branch);
        }
    }
}
