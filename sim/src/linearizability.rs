//! A small Porcupine-style linearizability checker for the ledger, and a recorder of
//! concurrent histories on the in-memory ledger.
//!
//! A history is a set of [`Operation`]s, each with the logical time it was invoked and the
//! time its response arrived. It is linearizable when the operations can be put in one
//! order that respects real time (an operation that returned before another was invoked
//! comes first) and in which the sequential model ([`step`]) gives every recorded response.
//! The search is Wing & Gong's, with Lowe's memoisation of (linearized set, model state);
//! tenants are independent, so each tenant's sub-history is checked on its own
//! (P-compositionality).
//!
//! ```
//! use sim::linearizability::{Call, Operation, Response, check};
//!
//! let op = |call, ret, c, r| Operation { tenant: 0, call, ret, input: c, output: r };
//! // Two sequential consumes of 5 from 10 cannot both leave 5.
//! let history = [
//!     op(0, 1, Call::Grant(10), Response::Available(10)),
//!     op(2, 3, Call::Consume(5), Response::Available(5)),
//!     op(4, 5, Call::Consume(5), Response::Available(5)),
//! ];
//! assert!(!check(&history));
//! ```

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use credits_core::{
    Amount, GrantOptions, IdempotencyKey, Ledger, LedgerError, MemoryLedgerStore, TenantId,
    TenantSettings,
};
use metered_clock::ManualClock;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The most operations of one tenant a history may hold (the linearized set is a bitmask).
pub const OPS_PER_TENANT_MAX: usize = 64;

/// What a client asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Call {
    /// Grant credits (never expiring).
    Grant(u64),
    /// Consume credits.
    Consume(u64),
    /// Read the available balance.
    Balance,
}

/// What the client was told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Response {
    /// Success; the available balance right after (for a read: the balance).
    Available(u64),
    /// Refused: not enough credits.
    Insufficient,
}

/// One completed operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Operation {
    /// Which tenant (histories of different tenants are checked separately).
    pub tenant: usize,
    /// Logical time of the invocation.
    pub call: u64,
    /// Logical time of the response (after `call`).
    pub ret: u64,
    /// The request.
    pub input: Call,
    /// The response.
    pub output: Response,
}

/// The sequential model: one tenant's available credits (no overdraft, no expiry).
/// Returns the next state and the response the model gives.
#[must_use]
pub fn step(available: u64, call: Call) -> (u64, Response) {
    match call {
        Call::Grant(n) => {
            let next = available.saturating_add(n);
            (next, Response::Available(next))
        }
        Call::Consume(n) if n <= available => (available - n, Response::Available(available - n)),
        Call::Consume(_) => (available, Response::Insufficient),
        Call::Balance => (available, Response::Available(available)),
    }
}

/// Whether the history is linearizable (every tenant starting at zero credits).
///
/// A tenant with more than [`OPS_PER_TENANT_MAX`] operations, or an operation whose response
/// precedes its call, makes the history unverifiable: the answer is `false`.
#[must_use]
pub fn check(history: &[Operation]) -> bool {
    let mut by_tenant: BTreeMap<usize, Vec<Operation>> = BTreeMap::new();
    for op in history {
        by_tenant.entry(op.tenant).or_default().push(*op);
    }
    by_tenant.values().all(|ops| check_one(ops))
}

fn check_one(ops: &[Operation]) -> bool {
    if ops.len() > OPS_PER_TENANT_MAX || ops.iter().any(|o| o.ret < o.call) {
        return false;
    }
    let full: u64 = if ops.len() == 64 {
        u64::MAX
    } else {
        (1u64 << ops.len()) - 1
    };
    let mut seen = HashSet::new();
    search(ops, 0, 0, full, &mut seen)
}

fn search(
    ops: &[Operation],
    done: u64,
    state: u64,
    full: u64,
    seen: &mut HashSet<(u64, u64)>,
) -> bool {
    if done == full {
        return true;
    }
    if !seen.insert((done, state)) {
        return false;
    }
    // An operation may go next only if it was invoked before every pending one returned.
    let first_return = ops
        .iter()
        .enumerate()
        .filter(|(i, _)| done & (1 << i) == 0)
        .map(|(_, o)| o.ret)
        .min()
        .unwrap_or(u64::MAX);
    for (i, op) in ops.iter().enumerate() {
        if done & (1 << i) != 0 || op.call > first_return {
            continue;
        }
        let (next, response) = step(state, op.input);
        if response == op.output && search(ops, done | (1 << i), next, full, seen) {
            return true;
        }
    }
    false
}

/// Runs `threads` clients concurrently against one in-memory ledger, each doing
/// `ops_per_thread` random operations on `tenants` tenants, and records the history.
///
/// # Errors
/// Unexpected ledger errors (anything but insufficient credits), as text.
pub fn record(
    seed: u64,
    threads: usize,
    ops_per_thread: usize,
    tenants: usize,
) -> Result<Vec<Operation>, String> {
    let clock = ManualClock::new(crate::START);
    let ledger: Ledger<MemoryLedgerStore> =
        Ledger::new(MemoryLedgerStore::builder().shards(4).build(), clock);
    let ids: Vec<TenantId> = (0..tenants.max(1))
        .map(|i| TenantId::new(format!("lin-{i}")).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    for t in &ids {
        futures::executor::block_on(ledger.create_tenant(t, TenantSettings::default()))
            .map_err(|e| e.to_string())?;
    }
    let time = Arc::new(AtomicU64::new(0));
    let ids = Arc::new(ids);
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let ledger = ledger.clone();
            let time = Arc::clone(&time);
            let ids = Arc::clone(&ids);
            std::thread::spawn(move || -> Result<Vec<Operation>, String> {
                let mut rng = StdRng::seed_from_u64(seed ^ ((thread as u64 + 1) << 32));
                let mut out = Vec::with_capacity(ops_per_thread);
                for n in 0..ops_per_thread {
                    let tenant = rng.random_range(0..ids.len());
                    let t = &ids[tenant];
                    let input = match rng.random_range(0..3) {
                        0 => Call::Grant(rng.random_range(1..20)),
                        1 => Call::Consume(rng.random_range(1..25)),
                        _ => Call::Balance,
                    };
                    let key =
                        IdempotencyKey::new(format!("t{thread}-{n}")).map_err(|e| e.to_string())?;
                    let call = time.fetch_add(1, Ordering::SeqCst);
                    let result = futures::executor::block_on(async {
                        match input {
                            Call::Grant(a) => ledger
                                .grant(t, key, Amount::new(a), GrantOptions::default())
                                .await
                                .map(|o| o.balance.available),
                            Call::Consume(a) => ledger
                                .consume(t, key, Amount::new(a))
                                .await
                                .map(|o| o.balance.available),
                            Call::Balance => ledger.balance(t).await.map(|b| b.available),
                        }
                    });
                    let ret = time.fetch_add(1, Ordering::SeqCst);
                    let output = match result {
                        Ok(a) => Response::Available(a.units()),
                        Err(LedgerError::InsufficientCredits { .. }) => Response::Insufficient,
                        Err(e) => return Err(e.to_string()),
                    };
                    out.push(Operation {
                        tenant,
                        call,
                        ret,
                        input,
                        output,
                    });
                }
                Ok(out)
            })
        })
        .collect();
    let mut history = Vec::new();
    for h in handles {
        history.extend(
            h.join()
                .map_err(|_| "a client thread panicked".to_owned())??,
        );
    }
    Ok(history)
}
