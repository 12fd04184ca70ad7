//! The coordinator: [`TransactionManager`] and its builder.

use std::sync::Arc;
use std::time::Duration;

use hashbrown::HashMap;
use metered_clock::Clock;

use super::{
    Branch, Participant, TxAction, TxDecision, TxId, TxLog, TxOutcome, TxPhase, TxRecord,
    TxRecoveryReport,
};
use crate::LedgerError;

/// Builds a [`TransactionManager`].
#[derive(Debug)]
#[must_use]
pub struct TransactionManagerBuilder {
    log: Arc<dyn TxLog>,
    clock: Arc<dyn Clock>,
    participants: HashMap<String, Arc<dyn Participant>>,
}

impl TransactionManagerBuilder {
    /// Registers a participant under its [`name`](Participant::name) (a later one with the
    /// same name replaces it).
    pub fn participant(mut self, participant: Arc<dyn Participant>) -> Self {
        self.participants
            .insert(participant.name().to_owned(), participant);
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
    participants: HashMap<String, Arc<dyn Participant>>,
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

    /// Adds a branch for a registered participant.
    ///
    /// # Errors
    /// [`LedgerError::UnknownParticipant`], [`LedgerError::UnknownTransaction`],
    /// [`LedgerError::TransactionState`] unless `Active`,
    /// [`LedgerError::TransactionTimedOut`] past the deadline (the transaction is aborted).
    pub async fn enlist(
        &self,
        tx: TxId,
        participant: &str,
        payload: impl Into<String>,
    ) -> Result<(), LedgerError> {
        if !self.participants.contains_key(participant) {
            return Err(LedgerError::UnknownParticipant(participant.to_owned()));
        }
        let record = self.record(tx).await?;
        if record.phase != TxPhase::Active {
            return Err(Self::state_error(tx, record.phase, TxAction::Enlist));
        }
        if self.clock.now() > record.deadline {
            self.finish_as(&record, TxDecision::Abort).await?;
            return Err(LedgerError::TransactionTimedOut(tx));
        }
        self.log
            .enlist(
                tx,
                Branch {
                    participant: participant.to_owned(),
                    payload: payload.into(),
                },
            )
            .await
    }

    fn participant(&self, name: &str) -> Result<&Arc<dyn Participant>, LedgerError> {
        self.participants
            .get(name)
            .ok_or_else(|| LedgerError::UnknownParticipant(name.to_owned()))
    }

    /// Phase one: every branch prepares. On a refusal or past the deadline, the transaction
    /// is aborted (decision logged, every branch told).
    ///
    /// # Errors
    /// [`LedgerError::TransactionAborted`], [`LedgerError::TransactionTimedOut`],
    /// [`LedgerError::TransactionState`] if already decided; log failures.
    pub async fn prepare(&self, tx: TxId) -> Result<(), LedgerError> {
        let record = self.record(tx).await?;
        match record.phase {
            TxPhase::Prepared => return Ok(()),
            TxPhase::Active => {}
            phase => return Err(Self::state_error(tx, phase, TxAction::Prepare)),
        }
        if self.clock.now() > record.deadline {
            self.finish_as(&record, TxDecision::Abort).await?;
            return Err(LedgerError::TransactionTimedOut(tx));
        }
        for branch in &record.branches {
            let refusal = match self.participant(&branch.participant) {
                Ok(p) => p.prepare(tx, &branch.payload).await.err(),
                Err(e) => Some(e),
            };
            if let Some(reason) = refusal {
                tracing::info!(%tx, participant = %branch.participant, %reason, "prepare refused; aborting");
                self.finish_as(&record, TxDecision::Abort).await?;
                return Err(LedgerError::TransactionAborted {
                    tx,
                    participant: branch.participant.clone(),
                    reason: reason.to_string(),
                });
            }
        }
        if self.clock.now() > record.deadline {
            self.finish_as(&record, TxDecision::Abort).await?;
            return Err(LedgerError::TransactionTimedOut(tx));
        }
        self.log.mark_prepared(tx).await
    }

    /// Commits: prepares first if needed, logs the decision, then runs phase two.
    ///
    /// # Errors
    /// As [`prepare`](Self::prepare); [`LedgerError::TransactionState`] if already aborted;
    /// a participant's phase-two failure (the decision stands: call
    /// [`recover`](Self::recover) later).
    pub async fn commit(&self, tx: TxId) -> Result<TxOutcome, LedgerError> {
        let record = self.record(tx).await?;
        match record.phase {
            TxPhase::Finished(TxDecision::Commit) => return Ok(TxOutcome::Committed),
            TxPhase::Active => self.prepare(tx).await?,
            TxPhase::Prepared | TxPhase::Decided(TxDecision::Commit) => {}
            phase => return Err(Self::state_error(tx, phase, TxAction::Commit)),
        }
        let record = self.record(tx).await?;
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
        for branch in &record.branches {
            let p = self.participant(&branch.participant)?;
            match decided {
                TxDecision::Commit => p.commit(record.id, &branch.payload).await?,
                TxDecision::Abort => p.abort(record.id, &branch.payload).await?,
            }
        }
        self.log.finish(record.id).await?;
        Ok(decided)
    }

    /// Drives every unfinished transaction: decided ones to their decision, undecided ones
    /// past their deadline to abort. Call at start-up (and periodically).
    ///
    /// # Errors
    /// Log failures. A participant failure is counted in `failed`, not returned.
    pub async fn recover(&self) -> Result<TxRecoveryReport, LedgerError> {
        let mut report = TxRecoveryReport::default();
        let now = self.clock.now();
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
                    tracing::warn!(tx = %record.id, error = %e, "recovery of transaction failed; will retry");
                    report.failed += 1;
                }
            }
        }
        Ok(report)
    }
}
