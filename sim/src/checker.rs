//! The checks: after every step, each tenant's new journal entries against the
//! [`JournalRule`](crate::JournalRule)s and its counters against the journal and the
//! acknowledged requests; after every restart, the acknowledged requests against their
//! records; after every transaction, its branches against its answer; at the end, replays,
//! unfinished transactions and holds, and the audit log against the journal.

use std::collections::BTreeMap;
use std::sync::Arc;

use credits_core::audit::{audit_entry, stream_name};
use credits_core::tx::{BranchId, LedgerHolds, TxDecision, TxPhase};
use credits_core::{
    Amount, Effect, EntryKind, EntrySeq, HoldResolution, HoldState, IdempotencyKey, JournalEntry,
    PageRequest, Receipt, Request, TenantId,
};
use metered_clock::{Clock, Timestamp};

use crate::audit::Synced;
use crate::config::PARTICIPANTS;
use crate::model::{EntryContext, TxPlan};
use crate::run::Sim;
use crate::violation::{Answer, Violation};

impl Sim {
    /// Records the first definitive answer to `req`; a later answer to the same key and
    /// command must equal it.
    pub(crate) fn acknowledge(&mut self, req: &Request, result: &Answer) -> Result<(), Violation> {
        if self.model.is_acknowledged(req) {
            if let Some(first) = self.model.first_answer(req)
                && first != result
            {
                return Err(Violation::AnswerChanged {
                    at: self.at(),
                    tenant: req.tenant.clone(),
                    key: req.key.clone(),
                    replay: false,
                    expected: Box::new(first.clone()),
                    found: Box::new(result.clone()),
                });
            }
            return Ok(());
        }
        self.line(&format!(
            "{} {} {:?} => {result:?}",
            req.tenant, req.key, req.command
        ));
        let now = self.env.clock.now();
        self.model.record(req, result, now);
        Ok(())
    }

    // ---- after every step ----------------------------------------------------------------

    /// Reads every new journal entry of every tenant and checks it, then the counters.
    pub(crate) async fn check_step(&mut self) -> Result<(), Violation> {
        let mut entries_total = 0u64;
        for (t, limit) in self.model.tenants.clone() {
            self.read_new_entries(&t).await?;
            entries_total += self.check_counters(&t, limit).await?;
        }
        let store = Arc::clone(self.env.proc.ledger.store());
        let all = match store.totals_all().await {
            Ok(all) => all,
            Err(e) => return Err(self.unexpected("totals of the whole ledger", e)),
        };
        if let Err(violation) = all.check() {
            return Err(Violation::Conservation {
                at: self.at(),
                tenant: None,
                violation: Box::new(violation),
            });
        }
        self.report.journal_entries = entries_total;
        Ok(())
    }

    /// Checks and takes in every entry of `t` after the last one read.
    async fn read_new_entries(&mut self, t: &TenantId) -> Result<(), Violation> {
        let store = Arc::clone(self.env.proc.ledger.store());
        let (step_start, step_end) = (self.step_now, self.now());
        let mut after = self
            .model
            .tracked
            .get(t)
            .and_then(|k| (k.seq > 0).then(|| EntrySeq::new(k.seq)));
        loop {
            let page = match store.history(t, PageRequest { after, limit: 500 }).await {
                Ok(page) => page,
                Err(e) => return Err(self.unexpected(format!("history of {t}"), e)),
            };
            for e in &page.entries {
                self.check_entry(t, e, step_start, step_end).await?;
            }
            after = page.entries.last().map(|e| e.seq).or(after);
            if page.next.is_none() {
                return Ok(());
            }
        }
    }

    async fn check_entry(
        &mut self,
        t: &TenantId,
        e: &JournalEntry,
        step_start: Timestamp,
        step_end: Timestamp,
    ) -> Result<(), Violation> {
        let reserved_expiry = match (&e.kind, &e.key) {
            (EntryKind::Reserved, Some(k)) => self.reserved_expiry(t, k).await?,
            _ => None,
        };
        let cx = EntryContext {
            reserved_expiry,
            known_key: e
                .key
                .as_ref()
                .is_none_or(|k| self.model.known_key(t, k.as_str())),
            answered_error: e
                .key
                .as_ref()
                .is_some_and(|k| self.model.answered_error(t, k)),
            step_start,
            step_end,
        };
        let Some(tracked) = self.model.tracked.get_mut(t) else {
            return Err(self.environment(format!("untracked tenant {t}")));
        };
        tracked
            .observe(t, e, cx)
            .map_err(|rule| Violation::Journal {
                at: self.at(),
                tenant: t.clone(),
                seq: e.seq,
                rule: Box::new(rule),
                entry: Box::new(e.clone()),
            })
    }

    /// The hold's expiry, from the reservation's recorded answer.
    async fn reserved_expiry(
        &self,
        t: &TenantId,
        k: &IdempotencyKey,
    ) -> Result<Option<Timestamp>, Violation> {
        // A transaction branch's hold never expires on its own (whether or not the prepare's
        // record is still remembered).
        if k.as_str().starts_with("tx-") && k.as_str().ends_with("/prepare") {
            return Ok(Some(Timestamp::MAX));
        }
        let record = match self.env.proc.ledger.store().idempotency_record(t, k).await {
            Ok(record) => record,
            Err(e) => return Err(self.unexpected(format!("reading the record of {t}/{k}"), e)),
        };
        Ok(record.and_then(|r| match r.result {
            Ok(Receipt {
                effect: Effect::Reserved { expires_at, .. },
                ..
            }) => Some(expires_at),
            _ => None,
        }))
    }

    /// The totals of `t` conserve credits, respect its overdraft limit, and agree with its
    /// journal and with the acknowledged grants and refunds. Returns its journal length.
    async fn check_counters(&self, t: &TenantId, limit: Amount) -> Result<u64, Violation> {
        let totals = match self.env.proc.ledger.store().totals(t).await {
            Ok(totals) => totals,
            Err(e) => return Err(self.unexpected(format!("totals of {t}"), e)),
        };
        if let Err(violation) = totals.check() {
            return Err(Violation::Conservation {
                at: self.at(),
                tenant: Some(t.clone()),
                violation: Box::new(violation),
            });
        }
        if totals.overdrawn > limit {
            return Err(Violation::OverdraftExceeded {
                at: self.at(),
                tenant: t.clone(),
                limit,
                found: totals.overdrawn,
            });
        }
        let Some(tr) = self.model.tracked.get(t) else {
            return Err(self.environment(format!("untracked tenant {t}")));
        };
        if let Some(last) = &tr.last
            && last.after != totals.balance()
        {
            return Err(Violation::BalanceMismatch {
                at: self.at(),
                tenant: t.clone(),
                expected: last.after,
                found: totals.balance(),
            });
        }
        let (granted, refunded) = self.model.acked_inflow(t);
        let counters = [
            (
                "consumed",
                "journal entries",
                tr.consumed_in_journal,
                totals.consumed,
            ),
            (
                "expired",
                "journal entries",
                tr.expired_in_journal,
                totals.expired,
            ),
            ("granted", "acknowledged requests", granted, totals.granted),
            (
                "refunded",
                "acknowledged requests",
                refunded,
                totals.refunded,
            ),
        ];
        for (counter, source_of_truth, expected, found) in counters {
            if found.units() != expected {
                return Err(Violation::CounterMismatch {
                    at: self.at(),
                    tenant: t.clone(),
                    counter,
                    source_of_truth,
                    expected,
                    found: found.units(),
                });
            }
        }
        Ok(tr.seq)
    }

    // ---- after every restart -------------------------------------------------------------

    /// Every acknowledged request's record survived with its command and answer.
    pub(crate) async fn check_acked_durable(&self) -> Result<(), Violation> {
        let store = self.env.proc.ledger.store();
        let now = self.env.clock.now();
        for (t, k) in &self.model.ack_order {
            let id = (t.clone(), k.clone());
            let Some((command, result)) = self.model.acked.get(&id) else {
                continue;
            };
            if !self.model.remembered(&id, now) {
                continue; // forgotten past the retention, as configured
            }
            let record = match store.idempotency_record(t, k).await {
                Ok(record) => record,
                Err(e) => {
                    return Err(self.unexpected(format!("reading the record of {t}/{k}"), e));
                }
            };
            match record {
                Some(r) if &r.command == command && &r.result == result => {}
                Some(r) => {
                    return Err(Violation::AcknowledgedChanged {
                        at: self.at(),
                        tenant: t.clone(),
                        key: k.clone(),
                        expected: Box::new(result.clone()),
                        found: Box::new(r.result),
                    });
                }
                None => {
                    return Err(Violation::AcknowledgedLost {
                        at: self.at(),
                        tenant: t.clone(),
                        key: k.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    // ---- transactions --------------------------------------------------------------------

    /// Every transaction is finished as it answered; every committed one is applied on all
    /// participants, every aborted one on none.
    pub(crate) async fn check_tx(&self, plan: &TxPlan) -> Result<(), Violation> {
        let store = self.env.proc.ledger.store();
        let record = match self.env.txlog.get(plan.id).await {
            Ok(record) => record,
            Err(e) => return Err(self.unexpected(format!("reading {}", plan.id), e)),
        };
        let decided = match record.as_ref().map(|r| r.phase) {
            Some(TxPhase::Finished(d)) if d == plan.outcome => d,
            found => {
                return Err(Violation::TxLogDisagrees {
                    at: self.at(),
                    tx: plan.id,
                    answered: plan.outcome,
                    found,
                });
            }
        };
        // What the ledger itself says, not an idempotency record (those are forgotten past
        // their retention): the hold each branch prepared, found from the answer the log
        // keeps, and no hold of the branch still held.
        let prepared = match store.prepared_holds(None, 1_000).await {
            Ok(holds) => holds,
            Err(e) => return Err(self.unexpected("reading the prepared holds", e)),
        };
        for ((index, name), b) in (0u32..).zip(PARTICIPANTS.iter()).zip(&plan.branches) {
            let branch = BranchId::new(plan.id, index);
            let answer = record
                .as_ref()
                .and_then(|r| r.branches.get(index as usize))
                .and_then(|b| b.prepared.as_deref())
                .and_then(|p| LedgerHolds::prepared_hold(p).ok())
                .map(|(_, hold)| hold);
            let state = match answer {
                Some(hold) => match store.hold(b.tenant(), hold).await {
                    Ok(state) => Some(state),
                    Err(e) => {
                        return Err(self.unexpected(format!("reading hold {hold} of {branch}"), e));
                    }
                },
                None => None,
            };
            let still_held = prepared.iter().any(|p| p.branch == branch);
            let committed = if b.commit().is_zero() {
                HoldResolution::Cancelled
            } else {
                HoldResolution::Committed {
                    committed: b.commit(),
                }
            };
            let ok = match decided {
                TxDecision::Commit => state == Some(HoldState::Resolved(committed)),
                TxDecision::Abort => {
                    !still_held
                        && matches!(
                            state,
                            None | Some(HoldState::Resolved(HoldResolution::Cancelled))
                        )
                }
            };
            if !ok {
                return Err(Violation::TxBranchWrong {
                    at: self.at(),
                    tx: plan.id,
                    participant: name,
                    tenant: b.tenant().clone(),
                    decided,
                    found: state,
                    still_held,
                });
            }
        }
        Ok(())
    }

    // ---- at the end ----------------------------------------------------------------------

    /// After recovery past every deadline, every transaction is finished as it answered.
    pub(crate) async fn check_txs_finished(&self) -> Result<(), Violation> {
        for plan in &self.model.txs {
            self.check_tx(plan).await?;
        }
        let unfinished = match self.env.txlog.unfinished().await {
            Ok(unfinished) => unfinished,
            Err(e) => return Err(self.unexpected("unfinished transactions", e)),
        };
        if let Some(r) = unfinished.first() {
            return Err(Violation::TxUnfinished {
                at: self.at(),
                tx: r.id,
                phase: r.phase,
                unfinished: unfinished.len(),
            });
        }
        Ok(())
    }

    /// Every acknowledged request, sent again, gets its first answer.
    pub(crate) async fn check_replays(&self) -> Result<(), Violation> {
        let now = self.env.clock.now();
        for id in &self.model.ack_order {
            let Some((command, first)) = self.model.acked.get(id) else {
                continue;
            };
            if !self.model.remembered(id, now) {
                continue; // sent again, it would be a new request
            }
            let again = self
                .env
                .proc
                .ledger
                .apply(&Request::new(id.0.clone(), id.1.clone(), command.clone()))
                .await;
            if &again != first {
                return Err(Violation::AnswerChanged {
                    at: self.at(),
                    tenant: id.0.clone(),
                    key: id.1.clone(),
                    replay: true,
                    expected: Box::new(first.clone()),
                    found: Box::new(again),
                });
            }
        }
        Ok(())
    }

    /// Long after every time-to-live, every hold is resolved.
    pub(crate) fn check_holds_resolved(&self) -> Result<(), Violation> {
        for (t, tr) in &self.model.tracked {
            if let Some((h, _)) = tr.holds.iter().find(|(_, (_, r))| r.is_none()) {
                return Err(Violation::HoldNeverResolved {
                    at: self.at(),
                    tenant: t.clone(),
                    hold: *h,
                });
            }
        }
        Ok(())
    }

    /// A rejected batch wrote nothing: none of its keys is remembered.
    pub(crate) async fn check_rejected_batch(&self, reqs: &[Request]) -> Result<(), Violation> {
        let store = self.env.proc.ledger.store();
        for r in reqs {
            let record = match store.idempotency_record(&r.tenant, &r.key).await {
                Ok(record) => record,
                Err(e) => {
                    return Err(self.unexpected(format!("reading {}/{}", r.tenant, r.key), e));
                }
            };
            if record.is_some() {
                return Err(Violation::RejectedBatchWrote {
                    at: self.at(),
                    tenant: r.tenant.clone(),
                    key: r.key.clone(),
                });
            }
        }
        Ok(())
    }

    // ---- the audit log -------------------------------------------------------------------

    /// The whole journal of `t`.
    async fn journal(&self, t: &TenantId) -> Result<Vec<JournalEntry>, Violation> {
        let store = self.env.proc.ledger.store();
        let mut journal = Vec::new();
        let mut after = None;
        loop {
            let page = match store.history(t, PageRequest { after, limit: 1000 }).await {
                Ok(page) => page,
                Err(e) => return Err(self.unexpected(format!("history of {t}"), e)),
            };
            after = page.entries.last().map(|e| e.seq).or(after);
            journal.extend(page.entries);
            if page.next.is_none() {
                return Ok(journal);
            }
        }
    }

    /// PostgreSQL seals its audit entries in the same SQL transaction as each change (with
    /// the one mapping): per tenant they verify as a chain and match the journal one to
    /// one; then the production sequencer integrates them all into the Merkle log, which
    /// verifies against its checkpoint.
    async fn check_pg_audit(&mut self) -> Result<(), Violation> {
        let mut total = 0;
        for (t, _) in self.model.tenants.clone() {
            let journal = self.journal(&t).await?;
            if let Some(pg) = &self.env.pg {
                total += pg
                    .check_audit(&t, &journal)
                    .await
                    .map_err(|what| Violation::Audit {
                        at: self.at(),
                        what,
                    })?;
            }
        }
        if let Some(pg) = &self.env.pg {
            let clock: Arc<dyn metered_clock::Clock> = Arc::new(self.env.clock.clone());
            pg.check_log(clock, total)
                .await
                .map_err(|what| Violation::Audit {
                    at: self.at(),
                    what,
                })?;
        }
        self.report.audit_records = total;
        Ok(())
    }

    /// The writer integrates everything queued (a flush, which must succeed now that no
    /// fault is armed), the files verify against the witness checkpoint (the one the
    /// flush returned, kept outside the files) and hold exactly one record per journal
    /// entry, equal to `audit_entry` of it, in journal order per tenant.
    pub(crate) async fn check_audit(&mut self) -> Result<(), Violation> {
        let Some(audit) = self.env.audit.as_mut() else {
            return self.check_pg_audit().await;
        };
        let synced = audit.sync().await;
        let records = match synced {
            Ok(Synced::Flushed(_)) => audit.verify(),
            Ok(Synced::Failed(e)) => Err(format!("the final flush failed: {e}")),
            Err(what) => Err(what),
        };
        let records = records.map_err(|what| Violation::Audit {
            at: self.at(),
            what,
        })?;
        self.report.audit_records = records.len() as u64;
        let mut streams: BTreeMap<&str, Vec<&audit_chain::SealedEntry>> = BTreeMap::new();
        for r in &records {
            streams.entry(r.entry.stream()).or_default().push(&r.entry);
        }
        for (t, _) in &self.model.tenants {
            let journal = self.journal(t).await?;
            let name = stream_name(t);
            let stream = streams.remove(name.as_str()).unwrap_or_default();
            if stream.len() != journal.len() {
                return Err(Violation::AuditCount {
                    at: self.at(),
                    tenant: t.clone(),
                    expected: journal.len(),
                    found: stream.len(),
                });
            }
            for (j, a) in journal.iter().zip(stream) {
                if a.seq() + 1 != j.seq.get() || a.entry() != &audit_entry(&name, j) {
                    return Err(Violation::AuditRecordMismatch {
                        at: self.at(),
                        tenant: t.clone(),
                        record: a.seq(),
                        entry: j.seq,
                    });
                }
            }
        }
        if let Some((s, _)) = streams.first_key_value() {
            return Err(Violation::AuditOrphanStream {
                at: self.at(),
                stream: (*s).to_owned(),
            });
        }
        Ok(())
    }
}
