//! State-machine property test: random operation sequences against a simple reference
//! model, checked after every step (balance, counters, conservation, never negative,
//! exactly-once hold resolution, idempotent replay, expiry, voids, freezes and a close).

use std::collections::HashMap;
use std::time::Duration;

use credits_core::{
    Amount, Balance, Command, Effect, HoldId, HoldResolution, HoldState, IdempotencyKey, Ledger,
    LedgerError, LedgerStore, MemoryLedgerStore, Receipt, Request, TenantId, TenantSettings,
};
use futures::executor::block_on;
use metered_clock::{Clock, ManualClock, Timestamp};
use proptest::prelude::*;

const START_MS: u64 = 1_000_000;
const NEVER: u64 = u64::MAX;

#[derive(Clone, Debug)]
enum Op {
    Grant {
        amount: u64,
        expires_in_s: Option<u64>,
        priority: u16,
    },
    Consume {
        amount: u64,
    },
    ConsumeUpTo {
        max: u64,
    },
    Reserve {
        amount: u64,
        ttl_s: u64,
    },
    Commit {
        pick: usize,
        amount: u64,
    },
    Cancel {
        pick: usize,
    },
    Refund {
        pick: usize,
        amount: u64,
    },
    Advance {
        secs: u64,
    },
    StepBack {
        secs: u64,
    },
    Sweep,
    Balance,
    Replay {
        pick: usize,
    },
    Conflict {
        pick: usize,
    },
    Void {
        pick: usize,
    },
    Freeze,
    Unfreeze,
    /// Closes the tenant when `pick % 4 == 0` (else a balance read), so most sequences
    /// run a while before they end.
    Close {
        pick: usize,
    },
}

/// `PROPTEST_CASES` when set (a soak runs far more), else 96 in debug builds, 512 in release.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 96 } else { 512 })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..120u64, proptest::option::of((1..4u64).prop_map(|x| x * 10)), 0..3u16)
            .prop_map(|(amount, expires_in_s, priority)| Op::Grant { amount, expires_in_s, priority }),
        3 => (0..80u64).prop_map(|amount| Op::Consume { amount }),
        2 => (0..120u64).prop_map(|max| Op::ConsumeUpTo { max }),
        3 => (0..80u64, 0..40u64).prop_map(|(amount, ttl_s)| Op::Reserve { amount, ttl_s }),
        2 => (any::<usize>(), 0..60u64).prop_map(|(pick, amount)| Op::Commit { pick, amount }),
        1 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        1 => (any::<usize>(), 0..40u64).prop_map(|(pick, amount)| Op::Refund { pick, amount }),
        2 => (0..30u64).prop_map(|secs| Op::Advance { secs }),
        1 => (0..10u64).prop_map(|secs| Op::StepBack { secs }),
        1 => Just(Op::Sweep),
        1 => Just(Op::Balance),
        1 => any::<usize>().prop_map(|pick| Op::Replay { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Conflict { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Void { pick }),
        1 => Just(Op::Freeze),
        1 => Just(Op::Unfreeze),
        1 => any::<usize>().prop_map(|pick| Op::Close { pick }),
    ]
}

#[derive(Clone, Debug)]
struct MLot {
    id: u64,
    expires: u64,
    priority: u16,
    free: u64,
}

#[derive(Clone, Debug)]
struct MHold {
    amount: u64,
    expires: u64,
    draws: Vec<(usize, u64)>,
    state: Option<HoldResolution>,
}

/// The reference model: plain vectors, sorted on demand.
#[derive(Debug, Default)]
struct Model {
    limit: u64,
    lots: Vec<MLot>,
    holds: Vec<MHold>,
    granted: u64,
    refunded_total: u64,
    consumed: u64,
    expired: u64,
    overdrawn: u64,
    entries: u64,
    last_at: u64,
    /// (entry seq, amount, refunded so far) of refundable entries.
    refundable: Vec<(u64, u64, u64)>,
    frozen: bool,
    closed: bool,
}

impl Model {
    fn available(&self) -> u64 {
        self.lots.iter().map(|l| l.free).sum()
    }
    fn held(&self) -> u64 {
        self.holds
            .iter()
            .filter(|h| h.state.is_none())
            .map(|h| h.amount)
            .sum()
    }
    fn balance(&self) -> Balance {
        Balance {
            available: Amount::new(self.available()),
            held: Amount::new(self.held()),
            overdrawn: Amount::new(self.overdrawn),
        }
    }
    fn entry(&mut self, at: u64) -> u64 {
        self.entries += 1;
        self.last_at = at;
        self.entries
    }
    fn order(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.lots.len())
            .filter(|&i| self.lots[i].free > 0)
            .collect();
        idx.sort_by_key(|&i| (self.lots[i].expires, self.lots[i].priority, self.lots[i].id));
        idx
    }
    fn take(&mut self, mut need: u64) -> Vec<(usize, u64)> {
        let mut draws = Vec::new();
        for i in self.order() {
            if need == 0 {
                break;
            }
            let t = self.lots[i].free.min(need);
            self.lots[i].free -= t;
            need -= t;
            draws.push((i, t));
        }
        draws
    }
    fn expire(&mut self, at: u64) {
        let mut due: Vec<usize> = (0..self.holds.len())
            .filter(|&i| self.holds[i].state.is_none() && self.holds[i].expires <= at)
            .collect();
        due.sort_by_key(|&i| (self.holds[i].expires, i));
        for i in due {
            self.holds[i].state = Some(HoldResolution::Expired);
            for (lot, a) in self.holds[i].draws.clone() {
                self.lots[lot].free += a;
            }
            self.entry(at);
        }
        self.expire_lots(at);
    }
    fn expire_lots(&mut self, at: u64) {
        for i in self.order() {
            let l = &self.lots[i];
            if l.expires != NEVER && l.expires <= at {
                let free = l.free;
                self.lots[i].free = 0;
                self.expired += free;
                self.entry(at);
            }
        }
    }
    fn credit(&mut self, amount: u64, expires: u64, priority: u16) -> Option<u64> {
        let pay = amount.min(self.overdrawn);
        self.overdrawn -= pay;
        let rest = amount - pay;
        (rest > 0).then(|| {
            let id = self.lots.len() as u64 + 1;
            self.lots.push(MLot {
                id,
                expires,
                priority,
                free: rest,
            });
            id
        })
    }

    /// Applies a command at `now`; returns the expected result (balance filled in).
    fn apply(&mut self, cmd: &Command, now: u64) -> Result<(), LedgerError> {
        let at = now.max(self.last_at);
        self.expire(at);
        let r = self.command(cmd, at);
        self.expire_lots(at);
        r
    }

    /// Removes what is left of lot `i`; its key becomes due now, so whatever a hold gives
    /// back to it later expires at once.
    fn void(&mut self, i: usize, at: u64) {
        let free = self.lots[i].free;
        self.lots[i].free = 0;
        self.lots[i].expires = at;
        self.expired += free;
        self.entry(at);
    }

    fn command(&mut self, cmd: &Command, at: u64) -> Result<(), LedgerError> {
        let a = |n: u64| Amount::new(n);
        let tenant = || TenantId::new("model").unwrap();
        if self.closed {
            return Err(LedgerError::TenantClosed(tenant()));
        }
        match cmd {
            Command::Consume { .. }
            | Command::ConsumeUpTo { .. }
            | Command::Reserve { .. }
            | Command::Freeze
                if self.frozen =>
            {
                return Err(LedgerError::TenantFrozen(tenant()));
            }
            Command::Unfreeze if !self.frozen => {
                return Err(LedgerError::TenantNotFrozen(tenant()));
            }
            _ => {}
        }
        match *cmd {
            Command::VoidLot { lot, .. } => {
                let Some(i) = usize::try_from(lot.get())
                    .ok()
                    .and_then(|i| i.checked_sub(1))
                    .filter(|&i| i < self.lots.len())
                else {
                    return Err(LedgerError::UnknownLot(lot));
                };
                if self.lots[i].free == 0 {
                    return Err(LedgerError::LotEmpty(lot));
                }
                self.void(i, at);
            }
            Command::Freeze | Command::Unfreeze => {
                self.frozen = matches!(cmd, Command::Freeze);
                self.entry(at);
            }
            Command::Close => {
                let open = self.holds.iter().filter(|h| h.state.is_none()).count();
                if open > 0 {
                    return Err(LedgerError::HoldsOpen {
                        tenant: tenant(),
                        holds: open as u64,
                    });
                }
                for i in self.order() {
                    self.void(i, at);
                }
                self.closed = true;
                self.entry(at);
            }
            Command::Grant {
                amount,
                expires_at,
                priority,
            } => {
                let amount = amount.units();
                if amount == 0 {
                    return Err(LedgerError::ZeroAmount);
                }
                let expires = expires_at.map_or(NEVER, Timestamp::as_unix_millis);
                if expires <= at {
                    return Err(LedgerError::ExpiryNotInFuture);
                }
                self.granted += amount;
                self.credit(amount, expires, priority);
                self.entry(at);
            }
            Command::Consume { amount } => {
                let amount = amount.units();
                if amount == 0 {
                    return Err(LedgerError::ZeroAmount);
                }
                let spendable = self.available() + (self.limit - self.overdrawn);
                if amount > spendable {
                    return Err(LedgerError::InsufficientCredits {
                        requested: a(amount),
                        spendable: a(spendable),
                    });
                }
                let from_lots = amount.min(self.available());
                self.take(from_lots);
                self.overdrawn += amount - from_lots;
                self.consumed += amount;
                let seq = self.entry(at);
                self.refundable.push((seq, amount, 0));
            }
            Command::ConsumeUpTo { max } => {
                let max = max.units();
                if max == 0 {
                    return Err(LedgerError::ZeroAmount);
                }
                let spendable = self.available() + (self.limit - self.overdrawn);
                let amount = max.min(spendable);
                if amount == 0 {
                    return Err(LedgerError::InsufficientCredits {
                        requested: a(max),
                        spendable: a(0),
                    });
                }
                let from_lots = amount.min(self.available());
                self.take(from_lots);
                self.overdrawn += amount - from_lots;
                self.consumed += amount;
                let seq = self.entry(at);
                self.refundable.push((seq, amount, 0));
            }
            Command::Reserve { amount, ttl } => {
                let amount = amount.units();
                if amount == 0 {
                    return Err(LedgerError::ZeroAmount);
                }
                if ttl.is_zero() {
                    return Err(LedgerError::ZeroTtl);
                }
                if amount > self.available() {
                    return Err(LedgerError::InsufficientCredits {
                        requested: a(amount),
                        spendable: a(self.available()),
                    });
                }
                let draws = self.take(amount);
                let expires = at + u64::try_from(ttl.as_millis()).unwrap();
                self.holds.push(MHold {
                    amount,
                    expires,
                    draws,
                    state: None,
                });
                self.entry(at);
            }
            Command::Commit { hold, amount } => {
                return self.resolve(hold, Some(amount.units()), at);
            }
            Command::Cancel { hold } => return self.resolve(hold, None, at),
            Command::Refund { entry, amount } => {
                let amount = amount.units();
                if amount == 0 {
                    return Err(LedgerError::ZeroAmount);
                }
                let Some(slot) = self.refundable.iter().position(|r| r.0 == entry.get()) else {
                    return Err(if entry.get() >= 1 && entry.get() <= self.entries {
                        LedgerError::NotRefundable(entry)
                    } else {
                        LedgerError::UnknownEntry(entry)
                    });
                };
                let (_, spent, done) = self.refundable[slot];
                if amount > spent - done {
                    return Err(LedgerError::RefundExceedsConsumed {
                        entry,
                        refundable: a(spent - done),
                        requested: a(amount),
                    });
                }
                self.refundable[slot].2 += amount;
                self.refunded_total += amount;
                self.credit(amount, NEVER, 0);
                self.entry(at);
            }
            ref other => panic!("the model does not know {other:?}"),
        }
        Ok(())
    }

    fn resolve(&mut self, hold: HoldId, commit: Option<u64>, at: u64) -> Result<(), LedgerError> {
        if commit == Some(0) {
            return Err(LedgerError::ZeroAmount);
        }
        let Some(h) = usize::try_from(hold.get())
            .ok()
            .and_then(|i| i.checked_sub(1))
            .filter(|&i| i < self.holds.len())
        else {
            return Err(LedgerError::UnknownHold(hold));
        };
        match self.holds[h].state {
            Some(HoldResolution::Committed { .. }) => {
                return Err(LedgerError::HoldAlreadyCommitted(hold));
            }
            Some(HoldResolution::Cancelled) => return Err(LedgerError::HoldAlreadyCancelled(hold)),
            Some(HoldResolution::Expired) => return Err(LedgerError::HoldExpired(hold)),
            None => {}
        }
        let held = self.holds[h].amount;
        let spend = commit.unwrap_or(0);
        if spend > held {
            return Err(LedgerError::CommitExceedsHold {
                hold,
                held: Amount::new(held),
                requested: Amount::new(spend),
            });
        }
        let mut skip = spend;
        for (lot, amt) in self.holds[h].draws.clone() {
            let s = amt.min(skip);
            skip -= s;
            self.lots[lot].free += amt - s;
        }
        if commit.is_some() {
            self.holds[h].state = Some(HoldResolution::Committed {
                committed: Amount::new(spend),
            });
            self.consumed += spend;
            let seq = self.entry(at);
            self.refundable.push((seq, spend, 0));
            if held > spend {
                self.entry(at);
            }
        } else {
            self.holds[h].state = Some(HoldResolution::Cancelled);
            self.entry(at);
        }
        Ok(())
    }
}

fn key(n: usize) -> IdempotencyKey {
    IdempotencyKey::new(format!("k{n}")).unwrap()
}

fn run(limit: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let clock = ManualClock::new(Timestamp::from_unix_millis(START_MS));
    let ledger = Ledger::new(
        MemoryLedgerStore::builder().shards(4).build(),
        clock.clone(),
    );
    let t = TenantId::new("model").unwrap();
    block_on(ledger.create_tenant(
        &t,
        TenantSettings {
            overdraft_limit: Amount::new(limit),
            ..TenantSettings::default()
        },
    ))
    .unwrap();
    let mut m = Model {
        limit,
        last_at: START_MS,
        ..Model::default()
    };
    // Every request sent, with its expected (and observed) result, by key index.
    let mut sent: Vec<(Command, Result<Receipt, LedgerError>)> = Vec::new();
    let mut replays: HashMap<usize, usize> = HashMap::new();
    for (step, op) in ops.into_iter().enumerate() {
        let now = clock.now().as_unix_millis();
        let pick_hold = |pick: usize, m: &Model| {
            HoldId::new(if m.holds.is_empty() {
                1 + pick as u64 % 3
            } else {
                1 + (pick % (m.holds.len() + 1)) as u64
            })
        };
        let command = match op {
            Op::Grant {
                amount,
                expires_in_s,
                priority,
            } => Some(Command::Grant {
                amount: Amount::new(amount),
                expires_at: expires_in_s
                    .map(|s| Timestamp::from_unix_millis(now + s * 1_000 - 500)),
                priority,
            }),
            Op::Consume { amount } => Some(Command::Consume {
                amount: Amount::new(amount),
            }),
            Op::ConsumeUpTo { max } => Some(Command::ConsumeUpTo {
                max: Amount::new(max),
            }),
            Op::Reserve { amount, ttl_s } => Some(Command::Reserve {
                amount: Amount::new(amount),
                ttl: Duration::from_secs(ttl_s),
            }),
            Op::Commit { pick, amount } => Some(Command::Commit {
                hold: pick_hold(pick, &m),
                amount: Amount::new(amount),
            }),
            Op::Cancel { pick } => Some(Command::Cancel {
                hold: pick_hold(pick, &m),
            }),
            Op::Refund { pick, amount } => {
                let entry = if m.refundable.is_empty() || pick % 5 == 0 {
                    pick as u64 % (m.entries + 2)
                } else {
                    m.refundable[pick % m.refundable.len()].0
                };
                Some(Command::Refund {
                    entry: credits_core::EntrySeq::new(entry),
                    amount: Amount::new(amount),
                })
            }
            Op::Advance { secs } => {
                clock.advance(Duration::from_secs(secs));
                None
            }
            Op::StepBack { secs } => {
                clock.set_now(Timestamp::from_unix_millis(
                    now.saturating_sub(secs * 1_000),
                ));
                None
            }
            Op::Sweep => {
                block_on(ledger.sweep_step(10)).unwrap();
                m.expire(now.max(m.last_at));
                None
            }
            Op::Balance => {
                let b = block_on(ledger.balance(&t)).unwrap();
                m.expire(now.max(m.last_at));
                prop_assert_eq!(b, m.balance(), "balance read at step {}", step);
                None
            }
            Op::Replay { pick } if !sent.is_empty() => {
                let i = pick % sent.len();
                let (cmd, original) = sent[i].clone();
                let got = block_on(ledger.apply(&Request::new(t.clone(), key(i), cmd)));
                prop_assert_eq!(got, original, "replay of k{} at step {}", i, step);
                *replays.entry(i).or_default() += 1;
                None
            }
            Op::Conflict { pick } if !sent.is_empty() => {
                let i = pick % sent.len();
                let cmd = Command::Consume {
                    amount: Amount::new(u64::MAX - i as u64),
                };
                let got = block_on(ledger.apply(&Request::new(t.clone(), key(i), cmd)));
                prop_assert_eq!(got, Err(LedgerError::IdempotencyConflict(key(i))));
                None
            }
            Op::Replay { .. } | Op::Conflict { .. } => None,
            Op::Void { pick } => Some(Command::VoidLot {
                lot: credits_core::LotId::new(pick as u64 % (m.lots.len() as u64 + 2)),
                reason: credits_core::Reason::new("model").unwrap(),
            }),
            Op::Freeze => Some(Command::Freeze),
            Op::Unfreeze => Some(Command::Unfreeze),
            Op::Close { pick } if pick % 4 == 0 => Some(Command::Close),
            Op::Close { .. } => None,
        };
        if let Some(cmd) = command {
            let expected = m.apply(&cmd, now);
            let got =
                block_on(ledger.apply(&Request::new(t.clone(), key(sent.len()), cmd.clone())));
            match (&got, &expected) {
                (Ok(o), Ok(())) => {
                    prop_assert_eq!(
                        o.balance,
                        m.balance(),
                        "outcome balance of {:?} at step {}",
                        cmd,
                        step
                    );
                    if let Effect::Reserved { hold, .. } = o.effect {
                        prop_assert_eq!(hold.get(), m.holds.len() as u64);
                    }
                }
                (Err(g), Err(e)) => prop_assert_eq!(g, e, "error of {:?} at step {}", cmd, step),
                _ => prop_assert!(
                    false,
                    "{:?} at step {}: got {:?}, model {:?}",
                    cmd,
                    step,
                    got,
                    expected
                ),
            }
            sent.push((cmd, got));
        }
        // After every step: counters match the model, conservation, never negative.
        let totals = block_on(ledger.store().totals(&t)).unwrap();
        prop_assert_eq!(totals.balance(), m.balance(), "balance after step {}", step);
        prop_assert_eq!(
            (
                totals.granted.units(),
                totals.consumed.units(),
                totals.expired.units(),
                totals.refunded.units()
            ),
            (m.granted, m.consumed, m.expired, m.refunded_total),
            "counters after step {}",
            step
        );
        prop_assert!(
            totals.check().is_ok(),
            "conservation after step {}: {:?}",
            step,
            totals.check()
        );
        prop_assert!(totals.overdrawn.units() <= limit, "overdraft beyond limit");
        // Holds resolve exactly once, as the model says.
        for (i, h) in m.holds.iter().enumerate() {
            let state = block_on(ledger.hold(&t, HoldId::new(i as u64 + 1))).unwrap();
            match (state, h.state) {
                (HoldState::Active { amount, .. }, None) => {
                    prop_assert_eq!(amount.units(), h.amount)
                }
                (HoldState::Resolved(r), Some(mr)) => prop_assert_eq!(r, mr),
                (s, mr) => prop_assert!(false, "hold {} is {:?}, model {:?}", i + 1, s, mr),
            }
        }
    }
    // The journal agrees with the model's entry count and chains its running balance.
    let page = block_on(ledger.history(&t, credits_core::PageRequest::first(1_000))).unwrap();
    prop_assert_eq!(page.entries.len() as u64, m.entries);
    for w in page.entries.windows(2) {
        prop_assert_eq!(w[0].after, w[1].before);
        prop_assert!(w[0].at <= w[1].at);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn ledger_matches_reference_model(limit in prop_oneof![3 => Just(0u64), 1 => 1..50u64], ops in proptest::collection::vec(op(), 1..60)) {
        run(limit, ops)?;
    }
}
