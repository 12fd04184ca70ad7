//! Recording concurrent histories: the client every recorder runs, and the in-memory
//! recorder.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use credits_core::testing::{Bug, FaultKind, Faults, FaultyStore};
use credits_core::{
    Amount, Balance, Command, GrantOptions, HoldId, IdempotencyKey, Ledger, LedgerError,
    LedgerStore, MemoryLedgerStore, Request, TenantId, TenantSettings,
};
use metered_clock::ManualClock;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{BatchCall, Call, Item, Operation, Response};

/// How many times a client sends one request (the first time included) before it gives
/// up on an answer.
pub const ATTEMPTS_MAX: u32 = 64;

/// A hold some client reserved: any client may then try to commit or cancel it.
#[derive(Clone, Copy, Debug)]
struct KnownHold {
    label: u32,
    hold: HoldId,
    amount: u64,
}

/// What the clients of one recording share: the tenants, the logical clock that stamps
/// invocations and responses, the holds reserved so far, and a prefix that makes their
/// idempotency keys unique across recordings on one store.
#[derive(Debug)]
pub struct Shared {
    tenants: Vec<TenantId>,
    prefix: String,
    time: AtomicU64,
    holds: Mutex<Vec<Vec<KnownHold>>>,
}

impl Shared {
    /// `tenants` tenants named `<prefix>t<i>`, keys starting with `prefix`.
    ///
    /// # Errors
    /// An invalid tenant name, as text.
    pub fn new(prefix: &str, tenants: usize) -> Result<Self, String> {
        let tenants: Vec<TenantId> = (0..tenants.max(1))
            .map(|i| TenantId::new(format!("{prefix}t{i}")).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        Ok(Shared {
            holds: Mutex::new(vec![Vec::new(); tenants.len()]),
            tenants,
            prefix: prefix.to_owned(),
            time: AtomicU64::new(0),
        })
    }

    /// The tenants (create them before the clients start).
    #[must_use]
    pub fn tenants(&self) -> &[TenantId] {
        &self.tenants
    }

    fn tick(&self) -> u64 {
        self.time.fetch_add(1, Ordering::SeqCst)
    }
}

/// One client's part of a recording.
#[derive(Clone, Debug, Default)]
pub struct Recording {
    /// The completed operations.
    pub history: Vec<Operation>,
    /// Requests sent again after a retryable failure (under the same key).
    pub retries: u64,
}

impl Recording {
    /// Adds another client's part.
    pub fn extend(&mut self, other: Recording) {
        self.history.extend(other.history);
        self.retries += other.retries;
    }
}

fn key(shared: &Shared, thread: usize, n: usize, part: &str) -> Result<IdempotencyKey, String> {
    IdempotencyKey::new(format!("{}c{thread}-{n}{part}", shared.prefix)).map_err(|e| e.to_string())
}

fn ok(b: Balance) -> Response {
    Response::Ok(b.available.units(), b.held.units())
}

/// The answer a client takes as definitive, or `None` for a retryable failure.
fn outcome(result: Result<Response, LedgerError>) -> Result<Option<Response>, String> {
    match result {
        Ok(r) => Ok(Some(r)),
        Err(e) if e.is_retryable() => Ok(None),
        Err(e) => {
            let e = match e {
                LedgerError::BatchRejected { source, .. } => *source,
                e => e,
            };
            match e {
                LedgerError::InsufficientCredits { .. } => Ok(Some(Response::Insufficient)),
                LedgerError::HoldAlreadyCommitted(_) => Ok(Some(Response::AlreadyCommitted)),
                LedgerError::HoldAlreadyCancelled(_) => Ok(Some(Response::AlreadyCancelled)),
                LedgerError::UnknownHold(..) => Ok(Some(Response::UnknownHold)),
                LedgerError::CommitExceedsHold { .. } => Ok(Some(Response::ExceedsHold)),
                e => Err(format!("unexpected error: {e}")),
            }
        }
    }
}

/// Runs `ops` random operations on the shared tenants through `ledger`, sending each
/// request again under the same idempotency key after a retryable failure (until a
/// definitive answer, at most [`ATTEMPTS_MAX`] times), and records each one with the time
/// of its first invocation and of its definitive answer.
///
/// The mix: grant, consume, reserve (20 % each), commit (12 %) and cancel (8 %) of a hold
/// any client reserved on that tenant (several clients may race to resolve one), batch
/// (10 %: 2–3 grants and consumes on the tenant) and balance (10 %).
///
/// # Errors
/// A failure that is neither a domain answer nor retryable, or one that stayed retryable
/// for [`ATTEMPTS_MAX`] attempts, as text.
pub async fn client<S: LedgerStore + ?Sized>(
    ledger: &Ledger<S>,
    shared: &Shared,
    thread: usize,
    seed: u64,
    ops: usize,
) -> Result<Recording, String> {
    let mut rng = StdRng::seed_from_u64(seed ^ ((thread as u64 + 1) << 32));
    let mut out = Recording::default();
    for n in 0..ops {
        let tenant = rng.random_range(0..shared.tenants.len());
        let t = &shared.tenants[tenant];
        let label = u32::try_from(thread * 100_000 + n).map_err(|e| e.to_string())?;
        let known = {
            let holds = shared.holds.lock();
            let list = &holds[tenant];
            (!list.is_empty()).then(|| list[rng.random_range(0..list.len())])
        };
        let roll = rng.random_range(0..100);
        let (input, hold) = match (roll, known) {
            (0..20, _) => (Call::Grant(rng.random_range(1..20)), None),
            (20..40, _) => (Call::Consume(rng.random_range(1..25)), None),
            (40..60, _) => (
                Call::Reserve {
                    hold: label,
                    amount: rng.random_range(1..15),
                },
                None,
            ),
            (60..72, Some(k)) => (
                Call::Commit {
                    hold: k.label,
                    amount: rng.random_range(1..=k.amount),
                },
                Some(k.hold),
            ),
            (72..80, Some(k)) => (Call::Cancel { hold: k.label }, Some(k.hold)),
            (80..90, _) => {
                let items: Vec<Item> = (0..rng.random_range(2..=3))
                    .map(|_| {
                        if rng.random_bool(0.5) {
                            Item::Grant(rng.random_range(1..10))
                        } else {
                            Item::Consume(rng.random_range(1..15))
                        }
                    })
                    .collect();
                let batch = BatchCall::new(&items).ok_or("a batch of 2 or 3")?;
                (Call::Batch(batch), None)
            }
            _ => (Call::Balance, None),
        };
        let request = |command| -> Result<Request, String> {
            Ok(Request::new(
                t.clone(),
                key(shared, thread, n, "")?,
                command,
            ))
        };
        let batch: Vec<Request> = match input {
            Call::Batch(b) => b
                .items()
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let command = match *item {
                        Item::Grant(a) => Command::Grant {
                            amount: Amount::new(a),
                            expires_at: None,
                            priority: 0,
                        },
                        Item::Consume(a) => Command::Consume {
                            amount: Amount::new(a),
                        },
                    };
                    Ok(Request::new(
                        t.clone(),
                        key(shared, thread, n, &format!("/{i}"))?,
                        command,
                    ))
                })
                .collect::<Result<_, String>>()?,
            _ => Vec::new(),
        };
        let call = shared.tick();
        let mut attempts = 0;
        let mut reserved = None;
        let output = loop {
            attempts += 1;
            let result = match input {
                Call::Grant(a) => ledger
                    .grant(
                        t,
                        key(shared, thread, n, "")?,
                        Amount::new(a),
                        GrantOptions::default(),
                    )
                    .await
                    .map(|r| ok(r.balance)),
                Call::Consume(a) => ledger
                    .consume(t, key(shared, thread, n, "")?, Amount::new(a))
                    .await
                    .map(|r| ok(r.balance)),
                Call::Reserve { amount, .. } => ledger
                    .reserve(
                        t,
                        key(shared, thread, n, "")?,
                        Amount::new(amount),
                        Duration::from_secs(3_600),
                    )
                    .await
                    .map(|r| {
                        reserved = Some(r.hold);
                        ok(r.receipt.balance)
                    }),
                Call::Commit { amount, .. } => {
                    let hold = hold.ok_or("a commit of a known hold")?;
                    ledger
                        .apply(&request(Command::Commit {
                            hold,
                            amount: Amount::new(amount),
                        })?)
                        .await
                        .map(|r| ok(r.balance))
                }
                Call::Cancel { .. } => {
                    let hold = hold.ok_or("a cancel of a known hold")?;
                    ledger
                        .cancel(t, key(shared, thread, n, "")?, hold)
                        .await
                        .map(|r| ok(r.balance))
                }
                Call::Batch(_) => ledger.batch(&batch).await.and_then(|receipts| {
                    receipts.last().map(|r| ok(r.balance)).ok_or_else(|| {
                        LedgerError::Storage(credits_core::StorageError::permanent(
                            "a batch answered with no receipts",
                        ))
                    })
                }),
                Call::Balance => ledger.balance(t).await.map(ok),
            };
            if let Some(r) = outcome(result)? {
                break r;
            }
            if attempts >= ATTEMPTS_MAX {
                return Err(format!(
                    "{input:?} on tenant {tenant} still failing after {attempts} attempts"
                ));
            }
            out.retries += 1;
        };
        let ret = shared.tick();
        out.history.push(Operation {
            tenant,
            call,
            ret,
            input,
            output,
        });
        if let (
            Call::Reserve {
                hold: label,
                amount,
            },
            Some(hold),
        ) = (input, reserved)
        {
            shared.holds.lock()[tenant].push(KnownHold {
                label,
                hold,
                amount,
            });
        }
    }
    Ok(out)
}

/// Reads every tenant's balance once all clients are done, as one more operation each
/// (an effect no client saw, such as a retry applied twice, still shows in the end state).
///
/// # Errors
/// The read failed, as text.
pub async fn final_reads<S: LedgerStore + ?Sized>(
    ledger: &Ledger<S>,
    shared: &Shared,
) -> Result<Vec<Operation>, String> {
    let mut out = Vec::with_capacity(shared.tenants.len());
    for (tenant, t) in shared.tenants.iter().enumerate() {
        let call = shared.tick();
        let b = ledger.balance(t).await.map_err(|e| e.to_string())?;
        let ret = shared.tick();
        out.push(Operation {
            tenant,
            call,
            ret,
            input: Call::Balance,
            output: ok(b),
        });
    }
    Ok(out)
}

/// Runs `threads` clients concurrently (one OS thread each) against one in-memory ledger,
/// each doing `ops_per_thread` random operations ([`client`]) on `tenants` tenants, and
/// records the history, ending with one [`final_reads`] per tenant.
///
/// # Errors
/// Unexpected ledger errors, as text.
pub fn record(
    seed: u64,
    threads: usize,
    ops_per_thread: usize,
    tenants: usize,
) -> Result<Vec<Operation>, String> {
    record_in_memory(seed, threads, ops_per_thread, tenants, 0, None).map(|r| r.history)
}

/// Like [`record`], with each client behind its own `credits_core::testing::FaultyStore`:
/// every fifth mutation fails, before reaching the store on even clients and after it
/// (applied, acknowledgement lost) on odd ones, so clients retry under the same keys.
///
/// # Errors
/// Unexpected ledger errors, as text.
pub fn record_with_faults(
    seed: u64,
    threads: usize,
    ops_per_thread: usize,
    tenants: usize,
) -> Result<Recording, String> {
    record_in_memory(seed, threads, ops_per_thread, tenants, 5, None)
}

/// Like [`record_with_faults`] (with every third mutation failing), over a deliberately
/// broken store (every client's `FaultyStore` carries `bug`): what the checker must catch.
///
/// # Errors
/// Unexpected ledger errors, as text.
pub fn record_broken(
    seed: u64,
    threads: usize,
    ops_per_thread: usize,
    tenants: usize,
    bug: Bug,
) -> Result<Recording, String> {
    record_in_memory(seed, threads, ops_per_thread, tenants, 3, Some(bug))
}

fn record_in_memory(
    seed: u64,
    threads: usize,
    ops_per_thread: usize,
    tenants: usize,
    faults_every: u32,
    bug: Option<Bug>,
) -> Result<Recording, String> {
    let clock = ManualClock::new(crate::START);
    let store = Arc::new(MemoryLedgerStore::builder().shards(4).build());
    let shared = Arc::new(Shared::new("lin-", tenants)?);
    let admin = Ledger::from_shared(Arc::clone(&store), Arc::new(clock.clone()));
    for t in shared.tenants() {
        futures::executor::block_on(admin.create_tenant(t, TenantSettings::default()))
            .map_err(|e| e.to_string())?;
    }
    // The threads start together (otherwise the first may be done before the last starts).
    let start = Arc::new(std::sync::Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let (shared, start) = (Arc::clone(&shared), Arc::clone(&start));
            let faulty = Arc::new(Faults::new());
            if faults_every > 0 {
                let kind = if thread.is_multiple_of(2) {
                    FaultKind::Before
                } else {
                    FaultKind::After
                };
                faulty.arm_every(faults_every, kind);
            }
            let mut faulty = FaultyStore::new(Arc::clone(&store), faulty);
            if let Some(bug) = bug {
                faulty = faulty.with_bug(bug);
            }
            let ledger = Ledger::new(faulty, clock.clone());
            std::thread::spawn(move || {
                start.wait();
                futures::executor::block_on(client(&ledger, &shared, thread, seed, ops_per_thread))
            })
        })
        .collect();
    let mut all = Recording::default();
    for h in handles {
        all.extend(
            h.join()
                .map_err(|_| "a client thread panicked".to_owned())??,
        );
    }
    all.history
        .extend(futures::executor::block_on(final_reads(&admin, &shared))?);
    Ok(all)
}
