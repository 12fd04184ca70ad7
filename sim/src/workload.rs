//! The seeded operation mix: which operation each step runs ([`OpKind`]), the requests it
//! sends, and how each operation drives the ledger or the transaction manager through
//! injected faults and crashes until it has a definitive answer.

use std::time::Duration;

use credits_core::tx::{HoldBranch, TxDecision, TxId, TxPhase};
use credits_core::{Amount, Command, IdempotencyKey, LedgerError, Reason, Request, TenantId};
use metered_clock::Clock;
use rand::Rng;

use crate::config::{LONG_OUTAGE, PARTICIPANTS, RETRIES_MAX, TX_TIMEOUT};
use crate::model::TxPlan;
use crate::op::OpKind;
use crate::run::{Sim, ms};
use crate::violation::{Answer, Violation};

impl Sim {
    /// Runs one step's operation.
    pub(crate) async fn perform(&mut self, kind: OpKind) -> Result<(), Violation> {
        match kind {
            OpKind::Request => {
                let req = self.request();
                self.op = format!("{} {} {:?}", req.tenant, req.key, req.command);
                let _answer = self.submit(req).await?;
            }
            OpKind::Batch => self.batch().await?,
            OpKind::Retry => self.retry().await?,
            OpKind::Conflict => self.conflict().await?,
            OpKind::Transaction => self.transaction().await?,
            OpKind::Clock => {
                let d = ms(self.rng.random_range(1..20_000));
                self.advance(d);
            }
            OpKind::BigClockJump => {
                let d = ms(self.rng.random_range(600_000..4 * 3_600_000));
                self.advance(d);
            }
            OpKind::Sweep => self.sweep().await?,
            OpKind::Read => self.read().await?,
            OpKind::Crash => self.restart(Duration::ZERO).await?,
        }
        Ok(())
    }

    fn advance(&mut self, d: Duration) {
        self.env.clock.advance(d);
        self.line(&format!("clock +{d:?}"));
    }

    fn maybe_arm(&mut self) {
        self.env.maybe_arm(&mut self.rng, &self.cfg);
    }

    // ---- generation ----------------------------------------------------------------------

    fn key(&mut self) -> IdempotencyKey {
        self.next_key += 1;
        // Keys are short ASCII: always valid.
        IdempotencyKey::new(format!("k{}", self.next_key)).unwrap_or_else(|_| unreachable!())
    }

    fn tenant(&mut self) -> TenantId {
        let tenants = &self.model.tenants;
        let i = self.rng.random_range(0..tenants.len());
        tenants[i].0.clone()
    }

    fn amount(&mut self, max: u64) -> Amount {
        Amount::new(self.rng.random_range(1..=max))
    }

    fn random_command(&mut self) -> Command {
        let holds = self.model.holds.len();
        let refundable = self.model.refundable.len();
        let lots = self.model.lots.len();
        match self.rng.random_range(0..100) {
            0..24 => {
                let expires_at = self.rng.random_bool(0.5).then(|| {
                    self.now()
                        .saturating_add(ms(self.rng.random_range(1_000..7_200_000)))
                });
                Command::Grant {
                    amount: self.amount(500),
                    expires_at,
                    priority: self.rng.random_range(0..3),
                }
            }
            24..46 => Command::Consume {
                amount: self.amount(120),
            },
            46..49 => Command::ConsumeUpTo {
                max: self.amount(200),
            },
            49..67 => Command::Reserve {
                amount: self.amount(150),
                ttl: ms(self.rng.random_range(500..600_000)),
            },
            67..80 if holds > 0 => {
                let (_, hold) = self.model.holds[self.rng.random_range(0..holds)];
                Command::Commit {
                    hold,
                    amount: self.amount(160),
                }
            }
            80..82 if holds > 0 => {
                let (_, hold) = self.model.holds[self.rng.random_range(0..holds)];
                Command::CommitUpTo {
                    hold,
                    max: self.amount(200),
                }
            }
            82..89 if holds > 0 => {
                let (_, hold) = self.model.holds[self.rng.random_range(0..holds)];
                Command::Cancel { hold }
            }
            89..95 if refundable > 0 => {
                let (_, entry, amount) =
                    self.model.refundable[self.rng.random_range(0..refundable)];
                Command::Refund {
                    entry,
                    amount: self.amount(amount.units().max(1) + 5),
                }
            }
            95..97 if lots > 0 => {
                let (_, lot) = self.model.lots[self.rng.random_range(0..lots)];
                Command::VoidLot {
                    lot,
                    // A fixed, valid reason.
                    reason: Reason::new("sim: void").unwrap_or_else(|_| unreachable!()),
                }
            }
            // Freezes are rarer than unfreezes, so tenants are not frozen most of the run.
            97 if self.rng.random_bool(0.25) => Command::Freeze,
            98 | 99 => Command::Unfreeze,
            _ => Command::Consume {
                amount: self.amount(40),
            },
        }
    }

    /// A request for a random tenant; commands on holds or entries go to the tenant that
    /// owns them (mostly: a foreign hold id is a legitimate unknown-hold test too).
    fn request(&mut self) -> Request {
        let mut command = self.random_command();
        let own = self.rng.random_bool(0.95);
        let tenant = match &command {
            Command::Commit { hold, .. }
            | Command::CommitUpTo { hold, .. }
            | Command::Cancel { hold } => self
                .model
                .holds
                .iter()
                .find(|(_, h)| h == hold)
                .map(|(t, _)| t.clone())
                .filter(|_| own),
            Command::Refund { entry, .. } => self
                .model
                .refundable
                .iter()
                .find(|(_, e, _)| e == entry)
                .map(|(t, _, _)| t.clone()),
            Command::VoidLot { lot, .. } => self
                .model
                .lots
                .iter()
                .find(|(_, l)| l == lot)
                .map(|(t, _)| t.clone())
                .filter(|_| own),
            _ => None,
        };
        let tenant = tenant.unwrap_or_else(|| self.tenant());
        if let Command::Grant {
            expires_at: Some(at),
            ..
        } = &mut command
            && *at <= self.now()
        {
            *at = self.now().saturating_add(ms(1_000));
        }
        let key = self.key();
        Request::new(tenant, key, command)
    }

    // ---- operations ----------------------------------------------------------------------

    /// Sends a request until it has a definitive answer (retrying the same key after
    /// injected failures and crashes) and records it.
    async fn submit(&mut self, req: Request) -> Result<Answer, Violation> {
        self.maybe_arm();
        let mut attempts = 0u32;
        let result = loop {
            match self.env.proc.ledger.apply(&req).await {
                Err(e) if e.is_storage() => {
                    attempts += 1;
                    if attempts > RETRIES_MAX {
                        return Err(Violation::RetriesExhausted {
                            at: self.at(),
                            tenant: req.tenant.clone(),
                            key: req.key.clone(),
                            attempts,
                            error: Box::new(e),
                        });
                    }
                    self.report.retries += 1;
                    self.recover_if_crashed().await?;
                }
                other => break other,
            }
        };
        self.env.faults.disarm();
        self.acknowledge(&req, &result)?;
        Ok(result)
    }

    async fn batch(&mut self) -> Result<(), Violation> {
        let n = self.rng.random_range(2..5);
        let mut reqs = Vec::with_capacity(n);
        for _ in 0..n {
            let mut r = self.request();
            // Batches carry the simple commands: a failed batch records nothing, which
            // makes holds and refunds in them hard to track.
            if !matches!(r.command, Command::Grant { .. } | Command::Consume { .. }) {
                r.command = Command::Consume {
                    amount: self.amount(30),
                };
            }
            reqs.push(r);
        }
        self.op = format!("batch of {n}");
        self.maybe_arm();
        let result = loop {
            match self.env.proc.ledger.batch(&reqs).await {
                Err(e) if e.is_storage() => {
                    self.report.retries += 1;
                    self.recover_if_crashed().await?;
                }
                other => break other,
            }
        };
        self.env.faults.disarm();
        self.line(&format!("batch {reqs:?} => {result:?}"));
        match result {
            Ok(outcomes) => {
                if outcomes.len() != reqs.len() {
                    return Err(Violation::BatchLength {
                        at: self.at(),
                        expected: reqs.len(),
                        found: outcomes.len(),
                    });
                }
                for (r, o) in reqs.iter().zip(outcomes) {
                    self.acknowledge(r, &Ok(o))?;
                }
                Ok(())
            }
            Err(LedgerError::BatchRejected { .. }) => self.check_rejected_batch(&reqs).await,
            Err(e) => Err(self.unexpected("batch", e)),
        }
    }

    async fn retry(&mut self) -> Result<(), Violation> {
        if self.model.ack_order.is_empty() {
            return Ok(());
        }
        let i = self.rng.random_range(0..self.model.ack_order.len());
        let id = self.model.ack_order[i].clone();
        let Some((command, _)) = self.model.acked.get(&id).cloned() else {
            return Ok(());
        };
        if !self.model.remembered(&id, self.env.clock.now()) {
            return Ok(()); // sent again, it would be a new request
        }
        self.op = format!("retry {}/{}", id.0, id.1);
        let req = Request::new(id.0, id.1, command);
        // `submit` compares the answer with the first one.
        self.submit(req).await.map(|_| ())
    }

    async fn conflict(&mut self) -> Result<(), Violation> {
        if self.model.ack_order.is_empty() {
            return Ok(());
        }
        let i = self.rng.random_range(0..self.model.ack_order.len());
        let id = self.model.ack_order[i].clone();
        let Some((command, _)) = self.model.acked.get(&id).cloned() else {
            return Ok(());
        };
        if !self.model.remembered(&id, self.env.clock.now()) {
            return Ok(()); // forgotten: another command under the key is a new request
        }
        let other = Command::Consume {
            amount: Amount::new(1),
        };
        if other == command {
            return Ok(());
        }
        self.op = format!("conflict {}/{}", id.0, id.1);
        let req = Request::new(id.0.clone(), id.1.clone(), other);
        let result = loop {
            match self.env.proc.ledger.apply(&req).await {
                Err(e) if e.is_storage() => self.recover_if_crashed().await?,
                other => break other,
            }
        };
        match result {
            Err(LedgerError::IdempotencyConflict(_)) => Ok(()),
            found => Err(Violation::ConflictNotRefused {
                at: self.at(),
                tenant: id.0,
                key: id.1,
                found: Box::new(found),
            }),
        }
    }

    async fn sweep(&mut self) -> Result<(), Violation> {
        self.maybe_arm();
        let tenants_max = self.rng.random_range(1..4);
        loop {
            match self.env.proc.ledger.sweep_step(tenants_max).await {
                Ok(r) if r.more => {}
                Ok(_) => break,
                Err(e) if e.is_storage() => {
                    self.report.retries += 1;
                    self.recover_if_crashed().await?;
                }
                Err(e) => return Err(self.unexpected("sweep", e)),
            }
        }
        self.env.faults.disarm();
        Ok(())
    }

    async fn read(&mut self) -> Result<(), Violation> {
        let t = self.tenant();
        let b = match self.env.proc.ledger.balance(&t).await {
            Ok(b) => b,
            Err(e) => return Err(self.unexpected(format!("balance of {t}"), e)),
        };
        self.line(&format!("balance {t} {b:?}"));
        Ok(())
    }

    // ---- distributed transactions --------------------------------------------------------

    /// A transaction over two distinct tenants, one per participant, committed (80 %) or
    /// aborted, through faults and crashes; then checked.
    async fn transaction(&mut self) -> Result<(), Violation> {
        let a = self.tenant();
        let mut b = self.tenant();
        while b == a {
            b = self.tenant();
        }
        let branches: Result<Vec<HoldBranch>, LedgerError> = [a, b]
            .into_iter()
            .map(|t| {
                let reserve = self.amount(200);
                let commit = Amount::new(self.rng.random_range(0..=reserve.units()));
                // Never fails: `reserve` is at least 1 and `commit` at most `reserve`.
                HoldBranch::new(t, reserve, commit)
            })
            .collect();
        let branches = branches.map_err(|e| self.unexpected("a transaction branch", e))?;
        let want_commit = self.rng.random_bool(0.8);
        self.op = format!("transaction {branches:?} commit={want_commit}");
        let tx = self.begin_tx().await?;
        self.enlist(tx, &branches).await?;
        let open = if self.rng.random_bool(0.3) {
            self.outsiders(tx).await?
        } else {
            true
        };
        self.maybe_arm();
        // A transaction whose phase one was refused is aborted already.
        let wanted = if want_commit && open {
            TxDecision::Commit
        } else {
            TxDecision::Abort
        };
        let outcome = self.decide(tx, wanted).await?;
        self.env.faults.disarm();
        self.line(&format!("tx {tx} {branches:?} => {outcome:?}"));
        match outcome {
            TxDecision::Commit => self.report.tx_committed += 1,
            TxDecision::Abort => self.report.tx_aborted += 1,
        }
        let plan = TxPlan {
            id: tx,
            branches,
            outcome,
        };
        self.check_tx(&plan).await?;
        self.model.txs.push(plan);
        Ok(())
    }

    /// Prepares `tx` (without faults), then outsiders try to commit and cancel its holds:
    /// each attempt is refused with `HoldOwnedByTransaction` and changes nothing. Returns
    /// whether the transaction is still open (phase one may refuse and abort it).
    async fn outsiders(&mut self, tx: TxId) -> Result<bool, Violation> {
        match self.env.proc.tm.prepare(tx).await {
            Ok(()) => {}
            Err(LedgerError::TransactionAborted { .. }) => return Ok(false),
            Err(e) => return Err(self.unexpected(format!("preparing {tx}"), e)),
        }
        let ledger = self.env.proc.ledger.clone();
        let prepared = match ledger.store().prepared_holds(None, 1_000).await {
            Ok(holds) => holds,
            Err(e) => return Err(self.unexpected("reading the prepared holds", e)),
        };
        for p in prepared.into_iter().filter(|p| p.branch.tx == tx) {
            let before = ledger.store().totals(&p.tenant).await;
            let cancel = self.key();
            let commit = self.key();
            let attempts = [
                ledger.cancel(&p.tenant, cancel, p.hold).await.map(|_| ()),
                ledger
                    .commit(&p.tenant, commit, p.hold, Amount::new(1))
                    .await
                    .map(|_| ()),
            ];
            let after = ledger.store().totals(&p.tenant).await;
            let refused = attempts.iter().all(|a| {
                matches!(a, Err(LedgerError::HoldOwnedByTransaction { hold, owner })
                    if *hold == p.hold && *owner == p.branch)
            });
            if !refused || before != after {
                return Err(Violation::OutsiderResolved {
                    at: self.at(),
                    tenant: p.tenant.clone(),
                    hold: p.hold,
                    answers: attempts.iter().map(|a| format!("{a:?}")).collect(),
                });
            }
            self.report.outsiders_refused += 2;
            self.line(&format!("outsiders refused on {} {}", p.tenant, p.hold));
        }
        Ok(true)
    }

    /// Begins a transaction: an ambiguous begin leaves an empty transaction that recovery
    /// aborts, so a failed one is simply begun again.
    async fn begin_tx(&mut self) -> Result<TxId, Violation> {
        loop {
            self.maybe_arm();
            let r = self.env.proc.tm.begin(TX_TIMEOUT).await;
            self.env.faults.disarm();
            match r {
                Ok(tx) => return Ok(tx),
                Err(e) if e.is_storage() => self.recover_if_crashed().await?,
                Err(e) => return Err(self.unexpected("begin", e)),
            }
        }
    }

    async fn enlist(&mut self, tx: TxId, branches: &[HoldBranch]) -> Result<(), Violation> {
        for (name, branch) in PARTICIPANTS.iter().zip(branches) {
            loop {
                match self.env.proc.tm.enlist(tx, name, branch.payload()).await {
                    Ok(_) => break,
                    Err(e) if e.is_storage() => {
                        self.recover_if_crashed().await?;
                        // An ambiguous enlist may have been logged: enlisting again would
                        // add a second branch. Ask the log.
                        let record = match self.env.txlog.get(tx).await {
                            Ok(record) => record,
                            Err(e) => return Err(self.unexpected(format!("reading {tx}"), e)),
                        };
                        if record
                            .is_some_and(|r| r.branches.iter().any(|b| &*b.participant == *name))
                        {
                            break;
                        }
                    }
                    Err(e) => return Err(self.unexpected("enlist", e)),
                }
            }
        }
        Ok(())
    }

    /// Drives `tx` to an end, starting with `wanted`: after an ambiguous failure the log
    /// says whether it finished or which decision to drive. Returns how it ended.
    async fn decide(&mut self, tx: TxId, wanted: TxDecision) -> Result<TxDecision, Violation> {
        let mut action = wanted;
        loop {
            let r = match action {
                TxDecision::Commit => self.env.proc.tm.commit(tx).await.map(|_| ()),
                TxDecision::Abort => self.env.proc.tm.abort(tx).await.map(|_| ()),
            };
            match r {
                Ok(()) => return Ok(action),
                Err(e) if e.is_storage() => {
                    self.report.retries += 1;
                    if self.env.faults.crashed() {
                        let outage = if self.cfg.long_outages {
                            LONG_OUTAGE
                        } else {
                            Duration::ZERO
                        };
                        self.restart(outage).await?;
                    }
                    let phase = match self.env.txlog.get(tx).await {
                        Ok(record) => record.map(|r| r.phase),
                        Err(e) => return Err(self.unexpected(format!("reading {tx}"), e)),
                    };
                    match phase {
                        Some(TxPhase::Finished(d)) => return Ok(d),
                        // Decided (say, aborted because a prepare failed) but phase two
                        // was interrupted: drive that decision.
                        Some(TxPhase::Decided(d)) => action = d,
                        _ => {}
                    }
                }
                Err(
                    LedgerError::TransactionAborted { .. } | LedgerError::TransactionTimedOut(_),
                ) => return Ok(TxDecision::Abort),
                Err(e) => return Err(self.unexpected(format!("transaction {tx}"), e)),
            }
        }
    }
}
