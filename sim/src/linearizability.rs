//! A small Porcupine-style linearizability checker for the ledger, and recorders of
//! concurrent histories on the in-memory ledger and on PostgreSQL.
//!
//! A history is a set of [`Operation`]s, each with the logical time it was invoked and the
//! time its response arrived. It is linearizable when the operations can be put in one
//! order that respects real time (an operation that returned before another was invoked
//! comes first) and in which the sequential model ([`step`]) gives every recorded response.
//! The search is Wing & Gong's, with Lowe's memoisation of (linearized set, model state);
//! tenants are independent, so each tenant's sub-history is checked on its own
//! (P-compositionality).
//!
//! The model covers grants, consumes, balance reads, holds (reserve, commit, cancel: a
//! hold is named by the label its reserve was sent with) and all-or-nothing batches of
//! grants and consumes on one tenant. Lots never expire and holds never expire (the
//! recorders never move the clock), and no tenant has an overdraft.
//!
//! ```
//! use sim::linearizability::{Call, Operation, Response, check};
//!
//! let op = |call, ret, c, r| Operation { tenant: 0, call, ret, input: c, output: r };
//! // Two sequential consumes of 5 from 10 cannot both leave 5.
//! let history = [
//!     op(0, 1, Call::Grant(10), Response::Ok(10, 0)),
//!     op(2, 3, Call::Consume(5), Response::Ok(5, 0)),
//!     op(4, 5, Call::Consume(5), Response::Ok(5, 0)),
//! ];
//! assert!(!check(&history));
//! ```

mod postgres;
mod record;

use std::collections::{BTreeMap, HashSet};

pub use postgres::{PgLinearizability, record_postgres};
pub use record::{
    ATTEMPTS_MAX, Recording, Shared, client, final_reads, record, record_broken, record_with_faults,
};

/// The most operations of one tenant a history may hold (the linearized set is a bitmask).
pub const OPS_PER_TENANT_MAX: usize = 64;

/// The most requests in one recorded batch.
pub const BATCH_ITEMS_MAX: usize = 4;

/// One request of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Item {
    /// Grant credits (never expiring).
    Grant(u64),
    /// Consume credits.
    Consume(u64),
}

/// An all-or-nothing batch of grants and consumes on one tenant, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BatchCall {
    len: u8,
    items: [Item; BATCH_ITEMS_MAX],
}

impl BatchCall {
    /// A batch of `items` (1..=[`BATCH_ITEMS_MAX`] of them), or `None`.
    #[must_use]
    pub fn new(items: &[Item]) -> Option<Self> {
        if items.is_empty() || items.len() > BATCH_ITEMS_MAX {
            return None;
        }
        let mut all = [Item::Grant(0); BATCH_ITEMS_MAX];
        all[..items.len()].copy_from_slice(items);
        Some(BatchCall {
            len: u8::try_from(items.len()).ok()?,
            items: all,
        })
    }

    /// The requests, in order.
    #[must_use]
    pub fn items(&self) -> &[Item] {
        &self.items[..usize::from(self.len)]
    }
}

/// What a client asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Call {
    /// Grant credits (never expiring).
    Grant(u64),
    /// Consume credits.
    Consume(u64),
    /// Read the balance.
    Balance,
    /// Set `amount` aside in a hold named `hold` (the client's label for it).
    Reserve {
        /// The label (unique in the history).
        hold: u32,
        /// How much.
        amount: u64,
    },
    /// Spend `amount` of the hold labelled `hold` and release the rest.
    Commit {
        /// The label its reserve was sent with.
        hold: u32,
        /// How much (at most what was reserved).
        amount: u64,
    },
    /// Release the whole hold labelled `hold`.
    Cancel {
        /// The label its reserve was sent with.
        hold: u32,
    },
    /// All or nothing, in order.
    Batch(BatchCall),
}

/// What the client was told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Response {
    /// Success: the balance right after (available, held); for a read, the balance; for a
    /// batch, the balance after its last request.
    Ok(u64, u64),
    /// Refused: not enough credits (for a batch: one of its consumes).
    Insufficient,
    /// Refused: the hold was already committed.
    AlreadyCommitted,
    /// Refused: the hold was already cancelled.
    AlreadyCancelled,
    /// Refused: no such hold (its reserve did not happen, or was refused).
    UnknownHold,
    /// Refused: the commit asks for more than the hold holds.
    ExceedsHold,
}

/// One completed operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Operation {
    /// Which tenant (histories of different tenants are checked separately).
    pub tenant: usize,
    /// Logical time of the invocation (the first attempt's, when it was retried).
    pub call: u64,
    /// Logical time of the (definitive) response, after `call`.
    pub ret: u64,
    /// The request.
    pub input: Call,
    /// The response.
    pub output: Response,
}

/// Where a hold stands in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HoldStatus {
    /// Holding this much.
    Active(u64),
    /// Committed (spent in part or whole, the rest released).
    Committed,
    /// Cancelled (all released).
    Cancelled,
}

/// The sequential model of one tenant: available credits and its holds by label.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct State {
    /// Credits not in holds.
    pub available: u64,
    /// Every hold reserved so far, by label.
    pub holds: BTreeMap<u32, HoldStatus>,
}

impl State {
    /// Credits in active holds.
    #[must_use]
    pub fn held(&self) -> u64 {
        self.holds
            .values()
            .map(|h| match h {
                HoldStatus::Active(n) => *n,
                _ => 0,
            })
            .sum()
    }

    fn ok(&self) -> Response {
        Response::Ok(self.available, self.held())
    }
}

/// The sequential model: the next state and the response the model gives to `call`.
#[must_use]
pub fn step(state: &State, call: Call) -> (State, Response) {
    let mut next = state.clone();
    let response = match call {
        Call::Grant(n) => {
            next.available = next.available.saturating_add(n);
            next.ok()
        }
        Call::Consume(n) | Call::Reserve { amount: n, .. } if n > state.available => {
            return (next, Response::Insufficient);
        }
        Call::Consume(n) => {
            next.available -= n;
            next.ok()
        }
        Call::Reserve { hold, amount } => {
            if next.holds.contains_key(&hold) {
                // A label is used once; a second reserve under it is not a valid history.
                return (next, Response::UnknownHold);
            }
            next.available -= amount;
            next.holds.insert(hold, HoldStatus::Active(amount));
            next.ok()
        }
        Call::Commit { hold, amount } => match next.holds.get(&hold).copied() {
            None => Response::UnknownHold,
            Some(HoldStatus::Committed) => Response::AlreadyCommitted,
            Some(HoldStatus::Cancelled) => Response::AlreadyCancelled,
            Some(HoldStatus::Active(held)) if amount > held => Response::ExceedsHold,
            Some(HoldStatus::Active(held)) => {
                next.available = next.available.saturating_add(held - amount);
                next.holds.insert(hold, HoldStatus::Committed);
                next.ok()
            }
        },
        Call::Cancel { hold } => match next.holds.get(&hold).copied() {
            None => Response::UnknownHold,
            Some(HoldStatus::Committed) => Response::AlreadyCommitted,
            Some(HoldStatus::Cancelled) => Response::AlreadyCancelled,
            Some(HoldStatus::Active(held)) => {
                next.available = next.available.saturating_add(held);
                next.holds.insert(hold, HoldStatus::Cancelled);
                next.ok()
            }
        },
        Call::Balance => next.ok(),
        Call::Batch(batch) => {
            for item in batch.items() {
                match *item {
                    Item::Grant(n) => next.available = next.available.saturating_add(n),
                    Item::Consume(n) if n <= next.available => next.available -= n,
                    Item::Consume(_) => return (state.clone(), Response::Insufficient),
                }
            }
            next.ok()
        }
    };
    (next, response)
}

/// Whether the history is linearizable (every tenant starting with nothing).
///
/// A tenant with more than [`OPS_PER_TENANT_MAX`] operations, or an operation whose response
/// precedes its call, makes the history unverifiable: the answer is `false`.
#[must_use]
pub fn check(history: &[Operation]) -> bool {
    failing_tenant(history).is_none()
}

/// The first tenant whose sub-history is not linearizable (or cannot be checked), if any.
#[must_use]
pub fn failing_tenant(history: &[Operation]) -> Option<usize> {
    let mut by_tenant: BTreeMap<usize, Vec<Operation>> = BTreeMap::new();
    for op in history {
        by_tenant.entry(op.tenant).or_default().push(*op);
    }
    by_tenant
        .iter()
        .find(|(_, ops)| !check_one(ops))
        .map(|(t, _)| *t)
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
    search(ops, 0, &State::default(), full, &mut seen)
}

fn search(
    ops: &[Operation],
    done: u64,
    state: &State,
    full: u64,
    seen: &mut HashSet<(u64, State)>,
) -> bool {
    if done == full {
        return true;
    }
    if !seen.insert((done, state.clone())) {
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
        if response == op.output && search(ops, done | (1 << i), &next, full, seen) {
            return true;
        }
    }
    false
}
