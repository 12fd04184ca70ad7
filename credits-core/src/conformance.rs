//! The conformance suite every [`LedgerStore`] backend must pass (feature `conformance`).
//!
//! A backend's tests call [`run_all`] with a factory of **empty** stores; each check gets a
//! fresh one. Checks panic with a message on the first violated expectation, as tests do.
//!
//! ```
//! use credits_core::MemoryLedgerStore;
//!
//! # futures::executor::block_on(async {
//! credits_core::conformance::run_all(|| async { MemoryLedgerStore::new() }).await;
//! # });
//! ```
//!
//! Every check is also public, so a backend can run them one by one (for example as
//! separate `#[tokio::test]`s) with [`CHECKS`].
//!
//! The checks of concurrency ([`CONCURRENT_CHECKS`]) take a [`Spawner`] besides the store:
//! each request becomes a task of the caller's runtime, and a [`Barrier`] releases them
//! together, so that on a multi-threaded runtime they really overlap. Run them with
//! [`run_all_spawning`] (or one by one); [`run_all`] runs them with [`inline`], every
//! request polled on the calling task.
//!
//! ```
//! use std::sync::Arc;
//! use credits_core::MemoryLedgerStore;
//! use credits_core::conformance::{Spawner, Task, run_all_spawning};
//!
//! #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! async fn main() {
//!     let handle = tokio::runtime::Handle::current();
//!     let spawn: Spawner = Arc::new(move |task: Task| -> Task {
//!         let running = handle.spawn(task);
//!         Box::pin(async move { running.await.expect("a request task panicked") })
//!     });
//!     run_all_spawning(|| async { MemoryLedgerStore::new() }, spawn).await;
//! }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use metered_clock::{Clock, ManualClock, Timestamp};

use crate::BATCH_LEN_MAX;
use crate::store::{LedgerStore, PageRequest};
use crate::{
    Amount, Balance, BalanceEvent, BalanceThresholds, Command, DeliveryReport, Effect, EntryKind,
    EntrySeq, EventDispatcher, EventSeq, EventSink, EventSinkError, GrantOptions, HoldId,
    HoldResolution, HoldState, IdempotencyKey, Ledger, LedgerError, LotId, Reason, Request,
    RolloverPolicy, TenantId, TenantSettings,
};

/// The time every check starts at.
pub const START: Timestamp = Timestamp::from_unix_millis(1_700_000_000_000);

/// A check: takes a fresh, empty store.
pub type ConformanceCheck = fn(Arc<dyn LedgerStore>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        /// Every check, by name.
        pub const CHECKS: &[(&str, ConformanceCheck)] = &[
            $((stringify!($name), |s| Box::pin($name(s)))),*
        ];
    };
}

checks!(
    tenants_and_unknown_tenant,
    grant_consume_and_history,
    lots_spent_in_order_and_expire,
    holds_resolve_exactly_once,
    idempotent_replay_and_conflict,
    sweeper_steps_and_recovery,
    overdraft_and_debt_repayment,
    refunds,
    batches_all_or_nothing,
    bad_input_changes_nothing,
    prepared_holds_answer_only_to_their_branch,
    transactions_recover_after_forgotten_keys_and_activity,
    branches_of_one_participant_never_share_keys,
    values_past_the_backend_limit_are_refused,
    a_refused_batch_leaves_holds_and_refunds_as_they_were,
    take_what_is_left,
    void_a_lot,
    freeze_and_unfreeze,
    close_a_tenant,
    rollover_at_expiry,
    import_history_in_order,
    thresholds_fire_once_per_downward_crossing,
    events_are_cursor_paged,
    dispatcher_delivers_in_order_and_redelivers,
);

/// A future a [`Spawner`] runs.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Starts a task on the caller's runtime and returns a future that completes when it has
/// finished (and panics if it panicked). The suite never spawns by itself (credits-core
/// does not depend on a runtime): a backend's tests pass one, as in the module example.
pub type Spawner = Arc<dyn Fn(Task) -> Task + Send + Sync>;

/// A concurrency check: takes a fresh, empty store and the spawner of its requests.
pub type ConcurrentCheck =
    fn(Arc<dyn LedgerStore>, Spawner) -> Pin<Box<dyn Future<Output = ()> + Send>>;

macro_rules! concurrent_checks {
    ($($name:ident),* $(,)?) => {
        /// Every check of concurrency, by name.
        pub const CONCURRENT_CHECKS: &[(&str, ConcurrentCheck)] = &[
            $((stringify!($name), |s, spawn| Box::pin($name(s, spawn)))),*
        ];
    };
}

concurrent_checks!(
    concurrent_requests_on_one_tenant,
    concurrent_resolutions_of_one_hold,
    concurrent_retries_of_one_key,
    concurrent_batches_in_opposite_orders,
);

/// The spawner that spawns nothing: the task runs when its future is polled, so the
/// requests of a check interleave on the calling task (no parallelism).
#[must_use]
pub fn inline() -> Spawner {
    Arc::new(|task| task)
}

/// Lets `n` tasks go on only once all `n` have arrived (the runtime-independent
/// equivalent of `tokio::sync::Barrier`, so that requests start together).
#[derive(Clone)]
pub struct Barrier {
    arrived: Arc<std::sync::atomic::AtomicUsize>,
    n: usize,
    open: Arc<parking_lot::Mutex<Option<futures::channel::oneshot::Sender<()>>>>,
    gate: futures::future::Shared<futures::channel::oneshot::Receiver<()>>,
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Barrier")
            .field("n", &self.n)
            .finish_non_exhaustive()
    }
}

impl Barrier {
    /// A barrier for `n` tasks.
    #[must_use]
    pub fn new(n: usize) -> Self {
        use futures::FutureExt;
        let (tx, rx) = futures::channel::oneshot::channel();
        Barrier {
            arrived: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            n,
            open: Arc::new(parking_lot::Mutex::new(Some(tx))),
            gate: rx.shared(),
        }
    }

    /// Waits until `n` tasks called `wait`.
    pub async fn wait(&self) {
        let arrived = self
            .arrived
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
            + 1;
        if arrived >= self.n
            && let Some(tx) = self.open.lock().take()
        {
            let _ = tx.send(());
        }
        let _ = self.gate.clone().await;
    }
}

/// Runs `n` copies of `request` (given their index) as tasks through `spawn`, all released
/// together by a [`Barrier`], and returns their results in index order.
async fn together<T, F, Fut>(spawn: &Spawner, n: usize, request: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let barrier = Barrier::new(n);
    let results: Arc<parking_lot::Mutex<Vec<Option<T>>>> =
        Arc::new(parking_lot::Mutex::new((0..n).map(|_| None).collect()));
    let running: Vec<Task> = (0..n)
        .map(|i| {
            let (barrier, results, work) = (barrier.clone(), Arc::clone(&results), request(i));
            spawn(Box::pin(async move {
                barrier.wait().await;
                let r = work.await;
                results.lock()[i] = Some(r);
            }))
        })
        .collect();
    futures::future::join_all(running).await;
    let mut results = results.lock();
    results
        .iter_mut()
        .map(|r| r.take().expect("every task finished"))
        .collect()
}

/// Runs every check in [`CHECKS`] and [`CONCURRENT_CHECKS`] (the latter [`inline`]), each
/// on a fresh store from `make_store`.
pub async fn run_all<S, F, Fut>(make_store: F)
where
    S: LedgerStore + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    run_all_spawning(make_store, inline()).await;
}

/// Runs every check in [`CHECKS`] and [`CONCURRENT_CHECKS`], each on a fresh store from
/// `make_store`, the concurrent requests as tasks of `spawn`.
pub async fn run_all_spawning<S, F, Fut>(mut make_store: F, spawn: Spawner)
where
    S: LedgerStore + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    for (name, check) in CHECKS {
        tracing::info!(check = name, "conformance check");
        let store: Arc<dyn LedgerStore> = Arc::new(make_store().await);
        check(store).await;
    }
    for (name, check) in CONCURRENT_CHECKS {
        tracing::info!(check = name, "conformance check");
        let store: Arc<dyn LedgerStore> = Arc::new(make_store().await);
        check(store, Arc::clone(&spawn)).await;
    }
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::new(k).expect("valid key")
}

fn tenant(t: &str) -> TenantId {
    TenantId::new(t).expect("valid tenant")
}

fn amt(n: u64) -> Amount {
    Amount::new(n)
}

fn bal(available: u64, held: u64, overdrawn: u64) -> Balance {
    Balance {
        available: amt(available),
        held: amt(held),
        overdrawn: amt(overdrawn),
    }
}

async fn setup(
    store: Arc<dyn LedgerStore>,
    names: &[&str],
) -> (Ledger, ManualClock, Vec<TenantId>) {
    let clock = ManualClock::new(START);
    let ledger = Ledger::from_shared(store, Arc::new(clock.clone()));
    let mut ids = Vec::new();
    for n in names {
        let t = tenant(n);
        ledger
            .create_tenant(&t, TenantSettings::default())
            .await
            .expect("create tenant");
        ids.push(t);
    }
    (ledger, clock, ids)
}

async fn conserved(ledger: &Ledger, t: Option<&TenantId>) {
    let check = ledger.check_conservation(t).await.expect("totals");
    if let Err(v) = check {
        panic!("conservation violated for {t:?}: {v}");
    }
    // The journal, replayed from its first entry, gives the stored counters.
    if let Some(t) = t {
        let replay = ledger.verify_journal(t).await.expect("journal");
        if let Err(m) = replay {
            panic!("the journal of {t} disagrees with its counters: {m:?}");
        }
    }
}

async fn all_entries(ledger: &Ledger, t: &TenantId) -> Vec<crate::JournalEntry> {
    let mut out = Vec::new();
    let mut page = PageRequest::first(1_000);
    loop {
        let p = ledger.history(t, page).await.expect("history");
        out.extend(p.entries);
        match p.next {
            Some(n) => page.after = Some(n),
            None => return out,
        }
    }
}

/// Creating tenants; every operation on an unknown tenant is `UnknownTenant`.
pub async fn tenants_and_unknown_tenant(store: Arc<dyn LedgerStore>) {
    let (ledger, _clock, ids) = setup(store, &["acme"]).await;
    let acme = &ids[0];
    assert_eq!(
        ledger.create_tenant(acme, TenantSettings::default()).await,
        Err(LedgerError::TenantExists(acme.clone()))
    );
    let ghost = tenant("ghost");
    assert_eq!(
        ledger.consume(&ghost, key("k"), amt(1)).await,
        Err(LedgerError::UnknownTenant(ghost.clone()))
    );
    assert!(matches!(
        ledger.balance(&ghost).await,
        Err(LedgerError::UnknownTenant(_))
    ));
    assert!(matches!(
        ledger.history(&ghost, PageRequest::first(10)).await,
        Err(LedgerError::UnknownTenant(_))
    ));
    assert!(matches!(
        ledger.balance_at(&ghost, START).await,
        Err(LedgerError::UnknownTenant(_))
    ));
    assert!(matches!(
        ledger.hold(&ghost, HoldId::new(1)).await,
        Err(LedgerError::UnknownTenant(_))
    ));
    assert!(matches!(
        ledger.store().totals(&ghost).await,
        Err(LedgerError::UnknownTenant(_))
    ));
    assert!(matches!(
        ledger.store().idempotency_record(&ghost, &key("k")).await,
        Err(LedgerError::UnknownTenant(_))
    ));
    assert_eq!(ledger.balance(acme).await, Ok(Balance::default()));
    conserved(&ledger, None).await;
}

/// Grant, consume, insufficient credits, balance, paged history and balance at a time.
pub async fn grant_consume_and_history(store: Arc<dyn LedgerStore>) {
    let (ledger, clock, ids) = setup(store, &["acme"]).await;
    let t = &ids[0];
    let g = ledger
        .grant(t, key("g1"), amt(100), GrantOptions::default())
        .await
        .expect("grant");
    assert_eq!(g.entry, EntrySeq::new(1));
    assert_eq!(g.balance, bal(100, 0, 0));
    assert!(matches!(g.effect, Effect::Granted { lot: Some(_) }));
    clock.advance(Duration::from_secs(1));
    let c = ledger
        .consume(t, key("c1"), amt(30))
        .await
        .expect("consume");
    assert_eq!(
        (c.entry, c.balance, c.effect),
        (EntrySeq::new(2), bal(70, 0, 0), Effect::Consumed)
    );
    assert_eq!(
        ledger.consume(t, key("c2"), amt(71)).await,
        Err(LedgerError::InsufficientCredits {
            requested: amt(71),
            spendable: amt(70)
        })
    );
    assert_eq!(ledger.balance(t).await, Ok(bal(70, 0, 0)));
    for i in 0..5 {
        clock.advance(Duration::from_secs(1));
        ledger
            .consume(t, key(&format!("loop-{i}")), amt(1))
            .await
            .expect("consume");
    }
    let entries = all_entries(&ledger, t).await;
    assert_eq!(entries.len(), 7);
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.seq.get(), i as u64 + 1, "entries numbered without gaps");
        assert_eq!(&e.tenant, t);
        if i > 0 {
            assert!(e.at >= entries[i - 1].at, "times never decrease");
            assert_eq!(e.before, entries[i - 1].after, "running balance chains");
        }
    }
    assert_eq!(entries[1].kind, EntryKind::Consumed);
    assert_eq!(entries[1].key, Some(key("c1")));
    let p = ledger
        .history(
            t,
            PageRequest {
                after: Some(EntrySeq::new(2)),
                limit: 2,
            },
        )
        .await
        .expect("page");
    assert_eq!(
        p.entries.iter().map(|e| e.seq.get()).collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert_eq!(p.next, Some(EntrySeq::new(4)));
    let last = ledger
        .history(
            t,
            PageRequest {
                after: Some(EntrySeq::new(6)),
                limit: 10,
            },
        )
        .await
        .expect("page");
    assert_eq!((last.entries.len(), last.next), (1, None));
    assert_eq!(
        ledger.balance_at(t, Timestamp::EPOCH).await,
        Ok(Balance::default())
    );
    assert_eq!(ledger.balance_at(t, START).await, Ok(bal(100, 0, 0)));
    assert_eq!(
        ledger
            .balance_at(t, START.saturating_add(Duration::from_millis(1_500)))
            .await,
        Ok(bal(70, 0, 0))
    );
    assert_eq!(
        ledger.balance_at(t, Timestamp::MAX).await,
        Ok(bal(65, 0, 0))
    );
    conserved(&ledger, Some(t)).await;
}

/// Lots are spent soonest-expiring first, then by priority, then oldest first; expired
/// lots stop counting.
pub async fn lots_spent_in_order_and_expire(store: Arc<dyn LedgerStore>) {
    let (ledger, clock, ids) = setup(store, &["acme"]).await;
    let t = &ids[0];
    let at = |s: u64| START.saturating_add(Duration::from_secs(s));
    let lot = |o: crate::Receipt| match o.effect {
        Effect::Granted { lot: Some(l) } => l,
        other => panic!("expected a lot, got {other:?}"),
    };
    let never = lot(ledger
        .grant(t, key("never"), amt(10), GrantOptions::default())
        .await
        .expect("grant"));
    let late = lot(ledger
        .grant(
            t,
            key("late"),
            amt(10),
            GrantOptions::default().expires_at(at(200)),
        )
        .await
        .expect("grant"));
    let soon_p1 = lot(ledger
        .grant(
            t,
            key("soon-p1"),
            amt(10),
            GrantOptions::default().expires_at(at(100)).priority(1),
        )
        .await
        .expect("grant"));
    let soon_p0 = lot(ledger
        .grant(
            t,
            key("soon-p0"),
            amt(10),
            GrantOptions::default().expires_at(at(100)),
        )
        .await
        .expect("grant"));
    let soon_p0_b = lot(ledger
        .grant(
            t,
            key("soon-p0-b"),
            amt(10),
            GrantOptions::default().expires_at(at(100)),
        )
        .await
        .expect("grant"));
    // 25 = soon_p0 (10) + soon_p0_b (10) + 5 of soon_p1.
    ledger.consume(t, key("c"), amt(25)).await.expect("consume");
    clock.set_now(at(100));
    assert_eq!(
        ledger.balance(t).await,
        Ok(bal(20, 0, 0)),
        "5 left in soon_p1 expired"
    );
    let expired: Vec<_> = all_entries(&ledger, t)
        .await
        .into_iter()
        .filter(|e| e.kind == EntryKind::LotExpired)
        .map(|e| (e.lot, e.amount, e.key))
        .collect();
    assert_eq!(expired, vec![(Some(soon_p1), amt(5), None)]);
    let _ = (soon_p0, soon_p0_b);
    ledger.consume(t, key("c2"), amt(3)).await.expect("consume");
    clock.set_now(at(250));
    assert_eq!(
        ledger.balance(t).await,
        Ok(bal(10, 0, 0)),
        "late lot (7 left) expired"
    );
    let last = all_entries(&ledger, t).await.pop().expect("entry");
    assert_eq!(
        (last.kind, last.lot, last.amount),
        (EntryKind::LotExpired, Some(late), amt(7))
    );
    let _ = never;
    assert_eq!(
        ledger
            .grant(
                t,
                key("past"),
                amt(1),
                GrantOptions::default().expires_at(at(250))
            )
            .await,
        Err(LedgerError::ExpiryNotInFuture)
    );
    let totals = ledger
        .check_conservation(Some(t))
        .await
        .expect("totals")
        .expect("conserved");
    assert_eq!(
        (totals.granted, totals.consumed, totals.expired),
        (amt(50), amt(28), amt(12))
    );
}

/// Reserve, partial commit, cancel, and every "already resolved" error.
pub async fn holds_resolve_exactly_once(store: Arc<dyn LedgerStore>) {
    let (ledger, clock, ids) = setup(store, &["acme"]).await;
    let t = &ids[0];
    ledger
        .grant(t, key("g"), amt(100), GrantOptions::default())
        .await
        .expect("grant");
    let ttl = Duration::from_secs(60);
    let r = ledger
        .reserve(t, key("r1"), amt(40), ttl)
        .await
        .expect("reserve");
    let h1 = r.hold;
    assert_eq!(r.receipt.balance, bal(60, 40, 0));
    assert_eq!(
        r.receipt.effect,
        Effect::Reserved {
            hold: h1,
            expires_at: START.saturating_add(ttl)
        }
    );
    assert_eq!(
        ledger.hold(t, h1).await,
        Ok(HoldState::Active {
            amount: amt(40),
            expires_at: START.saturating_add(ttl)
        })
    );
    assert_eq!(
        ledger.reserve(t, key("r-big"), amt(61), ttl).await,
        Err(LedgerError::InsufficientCredits {
            requested: amt(61),
            spendable: amt(60)
        })
    );
    assert_eq!(
        ledger.commit(t, key("c-big"), h1, amt(41)).await,
        Err(LedgerError::CommitExceedsHold {
            hold: h1,
            held: amt(40),
            requested: amt(41)
        })
    );
    let c = ledger
        .commit(t, key("c1"), h1, amt(15))
        .await
        .expect("commit");
    assert_eq!(
        c.effect,
        Effect::Committed {
            hold: h1,
            committed: amt(15),
            released: amt(25)
        }
    );
    assert_eq!(c.balance, bal(85, 0, 0));
    assert_eq!(
        ledger.hold(t, h1).await,
        Ok(HoldState::Resolved(HoldResolution::Committed {
            committed: amt(15)
        }))
    );
    assert_eq!(
        ledger.commit(t, key("c1-again"), h1, amt(1)).await,
        Err(LedgerError::HoldAlreadyCommitted(h1))
    );
    assert_eq!(
        ledger.cancel(t, key("x1"), h1).await,
        Err(LedgerError::HoldAlreadyCommitted(h1))
    );

    let h2 = ledger
        .reserve(t, key("r2"), amt(10), ttl)
        .await
        .expect("reserve")
        .hold;
    let x = ledger.cancel(t, key("x2"), h2).await.expect("cancel");
    assert_eq!(
        x.effect,
        Effect::Cancelled {
            hold: h2,
            released: amt(10)
        }
    );
    assert_eq!(
        ledger.commit(t, key("c2"), h2, amt(1)).await,
        Err(LedgerError::HoldAlreadyCancelled(h2))
    );
    assert_eq!(
        ledger.cancel(t, key("x2-again"), h2).await,
        Err(LedgerError::HoldAlreadyCancelled(h2))
    );

    let h3 = ledger
        .reserve(t, key("r3"), amt(20), ttl)
        .await
        .expect("reserve")
        .hold;
    clock.advance(ttl);
    assert_eq!(
        ledger.commit(t, key("c3"), h3, amt(5)).await,
        Err(LedgerError::HoldExpired(h3))
    );
    assert_eq!(
        ledger.cancel(t, key("x3"), h3).await,
        Err(LedgerError::HoldExpired(h3))
    );
    assert_eq!(
        ledger.hold(t, h3).await,
        Ok(HoldState::Resolved(HoldResolution::Expired))
    );
    assert_eq!(ledger.balance(t).await, Ok(bal(85, 0, 0)));

    let ghost = HoldId::new(999);
    assert_eq!(
        ledger.commit(t, key("c4"), ghost, amt(1)).await,
        Err(LedgerError::UnknownHold(ghost))
    );
    assert_eq!(
        ledger.cancel(t, key("x4"), ghost).await,
        Err(LedgerError::UnknownHold(ghost))
    );
    assert_eq!(
        ledger.hold(t, ghost).await,
        Err(LedgerError::UnknownHold(ghost))
    );

    let kinds: Vec<_> = all_entries(&ledger, t)
        .await
        .iter()
        .map(|e| e.kind)
        .collect();
    use EntryKind::*;
    assert_eq!(
        kinds,
        vec![
            Granted,
            Reserved,
            Committed,
            Released,
            Reserved,
            Cancelled,
            Reserved,
            HoldExpired
        ]
    );
    conserved(&ledger, Some(t)).await;
}

/// Same key + same request replays (also failures); same key + other request conflicts;
/// keys are per tenant.
pub async fn idempotent_replay_and_conflict(store: Arc<dyn LedgerStore>) {
    let (ledger, clock, ids) = setup(store, &["acme", "bravo"]).await;
    let (a, b) = (&ids[0], &ids[1]);
    let g = ledger
        .grant(a, key("g"), amt(50), GrantOptions::default())
        .await
        .expect("grant");
    clock.advance(Duration::from_secs(5));
    assert_eq!(
        ledger
            .grant(a, key("g"), amt(50), GrantOptions::default())
            .await,
        Ok(g),
        "replay"
    );
    assert_eq!(ledger.balance(a).await, Ok(bal(50, 0, 0)), "applied once");
    assert_eq!(
        ledger
            .grant(a, key("g"), amt(51), GrantOptions::default())
            .await,
        Err(LedgerError::IdempotencyConflict(key("g")))
    );
    assert_eq!(
        ledger.consume(a, key("g"), amt(50)).await,
        Err(LedgerError::IdempotencyConflict(key("g")))
    );
    // An original failure replays as that failure, even once it would now succeed.
    let fail = ledger.consume(a, key("too-much"), amt(80)).await;
    assert!(matches!(fail, Err(LedgerError::InsufficientCredits { .. })));
    ledger
        .grant(a, key("g2"), amt(100), GrantOptions::default())
        .await
        .expect("grant");
    assert_eq!(ledger.consume(a, key("too-much"), amt(80)).await, fail);
    assert_eq!(ledger.balance(a).await, Ok(bal(150, 0, 0)));
    // Keys are per tenant.
    ledger
        .grant(b, key("g"), amt(7), GrantOptions::default())
        .await
        .expect("same key, other tenant");
    assert_eq!(ledger.balance(b).await, Ok(bal(7, 0, 0)));
    // Reserve replay returns the same hold; commit replay does not commit twice.
    let r = ledger
        .reserve(a, key("r"), amt(10), Duration::from_secs(60))
        .await
        .expect("reserve");
    assert_eq!(
        ledger
            .reserve(a, key("r"), amt(10), Duration::from_secs(60))
            .await,
        Ok(r)
    );
    let h = r.hold;
    let c = ledger
        .commit(a, key("c"), h, amt(10))
        .await
        .expect("commit");
    assert_eq!(ledger.commit(a, key("c"), h, amt(10)).await, Ok(c));
    let rec = ledger
        .store()
        .idempotency_record(a, &key("c"))
        .await
        .expect("record")
        .expect("some");
    assert_eq!(rec.result, Ok(c));
    assert_eq!(ledger.balance(a).await, Ok(bal(140, 0, 0)));
    conserved(&ledger, None).await;
}

/// The sweeper expires due holds and lots step by step; `recover` finishes the job.
pub async fn sweeper_steps_and_recovery(store: Arc<dyn LedgerStore>) {
    let (ledger, clock, ids) = setup(store, &["t1", "t2", "t3"]).await;
    let at = |s: u64| START.saturating_add(Duration::from_secs(s));
    for (i, t) in ids.iter().enumerate() {
        ledger
            .grant(t, key("g"), amt(100), GrantOptions::default())
            .await
            .expect("grant");
        ledger
            .grant(
                t,
                key("g-exp"),
                amt(5),
                GrantOptions::default().expires_at(at(30)),
            )
            .await
            .expect("grant");
        for j in 0..3 {
            ledger
                .reserve(
                    t,
                    key(&format!("r{j}")),
                    amt(10),
                    Duration::from_secs(10 + i as u64),
                )
                .await
                .expect("reserve");
        }
    }
    assert_eq!(
        ledger.sweep_step(10).await.expect("sweep").holds_expired,
        0,
        "nothing due yet"
    );
    clock.set_now(at(20));
    let s1 = ledger.sweep_step(1).await.expect("sweep");
    assert_eq!((s1.tenants, s1.holds_expired, s1.more), (1, 3, true));
    let rest = ledger.recover().await.expect("recover");
    assert_eq!((rest.holds_expired, rest.lots_expired), (6, 0));
    for t in &ids {
        let b = ledger.store().totals(t).await.expect("totals");
        assert_eq!((b.available, b.held), (amt(105), amt(0)));
    }
    clock.set_now(at(31));
    let s = ledger.recover().await.expect("recover");
    assert_eq!((s.holds_expired, s.lots_expired), (0, 3));
    assert_eq!(
        ledger.sweep_step(10).await.expect("sweep"),
        crate::SweepReport::default()
    );
    let totals = ledger
        .check_conservation(None)
        .await
        .expect("totals")
        .expect("conserved");
    assert_eq!((totals.available, totals.expired), (amt(300), amt(15)));
}

/// With an overdraft limit, consumption may go below zero up to the limit; grants pay the
/// debt first.
pub async fn overdraft_and_debt_repayment(store: Arc<dyn LedgerStore>) {
    let clock = ManualClock::new(START);
    let ledger = Ledger::from_shared(store, Arc::new(clock.clone()));
    let t = tenant("od");
    let settings = TenantSettings {
        overdraft_limit: amt(50),
        ..TenantSettings::default()
    };
    ledger.create_tenant(&t, settings).await.expect("create");
    ledger
        .grant(&t, key("g"), amt(20), GrantOptions::default())
        .await
        .expect("grant");
    assert_eq!(
        ledger
            .reserve(&t, key("r"), amt(21), Duration::from_secs(9))
            .await,
        Err(LedgerError::InsufficientCredits {
            requested: amt(21),
            spendable: amt(20)
        }),
        "holds are never backed by overdraft"
    );
    let c = ledger
        .consume(&t, key("c1"), amt(60))
        .await
        .expect("consume into overdraft");
    assert_eq!(c.balance, bal(0, 0, 40));
    assert_eq!(
        ledger.consume(&t, key("c2"), amt(11)).await,
        Err(LedgerError::InsufficientCredits {
            requested: amt(11),
            spendable: amt(10)
        })
    );
    let g = ledger
        .grant(&t, key("g2"), amt(30), GrantOptions::default())
        .await
        .expect("grant");
    assert_eq!(
        (g.balance, g.effect),
        (bal(0, 0, 10), Effect::Granted { lot: None })
    );
    let g = ledger
        .grant(&t, key("g3"), amt(25), GrantOptions::default())
        .await
        .expect("grant");
    assert_eq!(g.balance, bal(15, 0, 0));
    conserved(&ledger, Some(&t)).await;
}

/// Refunds give back consumed or committed credits as new entries, never more than spent.
pub async fn refunds(store: Arc<dyn LedgerStore>) {
    let (ledger, _clock, ids) = setup(store, &["acme"]).await;
    let t = &ids[0];
    let g = ledger
        .grant(t, key("g"), amt(100), GrantOptions::default())
        .await
        .expect("grant");
    let c = ledger.consume(t, key("c"), amt(30)).await.expect("consume");
    let r = ledger
        .refund(t, key("rf1"), c.entry, amt(10))
        .await
        .expect("refund");
    assert!(matches!(r.effect, Effect::Refunded { lot: Some(_) }));
    assert_eq!(r.balance, bal(80, 0, 0));
    assert_eq!(
        ledger.refund(t, key("rf2"), c.entry, amt(21)).await,
        Err(LedgerError::RefundExceedsConsumed {
            entry: c.entry,
            refundable: amt(20),
            requested: amt(21)
        })
    );
    ledger
        .refund(t, key("rf3"), c.entry, amt(20))
        .await
        .expect("refund the rest");
    assert!(matches!(
        ledger.refund(t, key("rf4"), c.entry, amt(1)).await,
        Err(LedgerError::RefundExceedsConsumed { .. })
    ));
    assert_eq!(
        ledger.refund(t, key("rf5"), g.entry, amt(1)).await,
        Err(LedgerError::NotRefundable(g.entry))
    );
    let ghost = EntrySeq::new(999);
    assert_eq!(
        ledger.refund(t, key("rf6"), ghost, amt(1)).await,
        Err(LedgerError::UnknownEntry(ghost))
    );
    let h = ledger
        .reserve(t, key("r"), amt(50), Duration::from_secs(9))
        .await
        .expect("reserve")
        .hold;
    let cm = ledger
        .commit(t, key("cm"), h, amt(50))
        .await
        .expect("commit");
    ledger
        .refund(t, key("rf7"), cm.entry, amt(50))
        .await
        .expect("refund a commit");
    let entry = all_entries(&ledger, t).await.pop().expect("entry");
    assert_eq!(
        (entry.kind, entry.refers_to),
        (EntryKind::Refunded, Some(cm.entry))
    );
    let totals = ledger
        .check_conservation(Some(t))
        .await
        .expect("totals")
        .expect("conserved");
    assert_eq!(
        (totals.refunded, totals.consumed, totals.available),
        (amt(80), amt(80), amt(100))
    );
}

/// A batch over several tenants applies all or nothing.
pub async fn batches_all_or_nothing(store: Arc<dyn LedgerStore>) {
    let (ledger, _clock, ids) = setup(store, &["alpha", "bravo"]).await;
    let (a, b) = (&ids[0], &ids[1]);
    let req = |t: &TenantId, k: &str, command| Request::new(t.clone(), key(k), command);
    let grant = |n| Command::Grant {
        amount: amt(n),
        expires_at: None,
        priority: 0,
    };
    let out = ledger
        .batch(&[
            req(a, "g", grant(10)),
            req(b, "g", grant(20)),
            req(a, "c", Command::Consume { amount: amt(10) }),
        ])
        .await
        .expect("batch");
    assert_eq!(out.len(), 3);
    assert_eq!(
        out[2].balance,
        bal(0, 0, 0),
        "later requests see earlier ones"
    );
    let before_a = all_entries(&ledger, a).await;
    let failing = [
        req(b, "c1", Command::Consume { amount: amt(5) }),
        req(a, "c1", Command::Consume { amount: amt(1) }),
    ];
    assert_eq!(
        ledger.batch(&failing).await,
        Err(LedgerError::BatchRejected {
            index: 1,
            source: Box::new(LedgerError::InsufficientCredits {
                requested: amt(1),
                spendable: amt(0)
            })
        })
    );
    assert_eq!(
        ledger.balance(b).await,
        Ok(bal(20, 0, 0)),
        "nothing applied"
    );
    assert_eq!(all_entries(&ledger, a).await, before_a);
    assert_eq!(
        ledger.store().idempotency_record(b, &key("c1")).await,
        Ok(None),
        "no key kept"
    );
    // Fixed and retried with the same keys, it applies.
    ledger
        .grant(a, key("g-more"), amt(1), GrantOptions::default())
        .await
        .expect("grant");
    let ok = ledger.batch(&failing).await.expect("retry");
    assert_eq!(
        ledger.batch(&failing).await,
        Ok(ok),
        "a whole batch replays"
    );
    assert_eq!(ledger.balance(b).await, Ok(bal(15, 0, 0)));
    assert_eq!(ledger.batch(&[]).await, Err(LedgerError::EmptyBatch));
    let dup = [req(a, "d", grant(1)), req(a, "d", grant(1))];
    assert_eq!(
        ledger.batch(&dup).await,
        Err(LedgerError::DuplicateKeyInBatch(key("d")))
    );
    let many: Vec<_> = (0..=BATCH_LEN_MAX)
        .map(|i| req(a, &format!("m{i}"), grant(1)))
        .collect();
    assert_eq!(
        ledger.batch(&many).await,
        Err(LedgerError::BatchTooLarge {
            max: BATCH_LEN_MAX,
            len: BATCH_LEN_MAX + 1
        })
    );
    let ghost = tenant("ghost");
    assert!(matches!(
        ledger
            .batch(&[req(a, "z", grant(1)), req(&ghost, "z", grant(1))])
            .await,
        Err(LedgerError::BatchRejected { index: 1, .. })
    ));
    assert_eq!(ledger.balance(a).await, Ok(bal(0, 0, 0)));
    conserved(&ledger, None).await;
}

/// Every bad input is a typed error and changes nothing.
pub async fn bad_input_changes_nothing(store: Arc<dyn LedgerStore>) {
    let (ledger, _clock, ids) = setup(store, &["acme"]).await;
    let t = &ids[0];
    ledger
        .grant(t, key("g"), amt(100), GrantOptions::default())
        .await
        .expect("grant");
    let h = ledger
        .reserve(t, key("r"), amt(10), Duration::from_secs(60))
        .await
        .expect("reserve")
        .hold;
    let c = ledger.consume(t, key("c"), amt(10)).await.expect("consume");
    let snapshot = (ledger.balance(t).await, all_entries(&ledger, t).await);
    let cases: Vec<(Command, LedgerError)> = vec![
        (
            Command::Grant {
                amount: amt(0),
                expires_at: None,
                priority: 0,
            },
            LedgerError::ZeroAmount,
        ),
        (
            Command::Grant {
                amount: Amount::MAX,
                expires_at: None,
                priority: 0,
            },
            LedgerError::AmountOverflow,
        ),
        (
            Command::Grant {
                amount: amt(1),
                expires_at: Some(START),
                priority: 0,
            },
            LedgerError::ExpiryNotInFuture,
        ),
        (Command::Consume { amount: amt(0) }, LedgerError::ZeroAmount),
        (
            Command::Reserve {
                amount: amt(0),
                ttl: Duration::from_secs(1),
            },
            LedgerError::ZeroAmount,
        ),
        (
            Command::Reserve {
                amount: amt(1),
                ttl: Duration::ZERO,
            },
            LedgerError::ZeroTtl,
        ),
        (
            Command::Reserve {
                amount: amt(1),
                ttl: Duration::MAX,
            },
            LedgerError::AmountOverflow,
        ),
        (
            Command::Commit {
                hold: h,
                amount: amt(0),
            },
            LedgerError::ZeroAmount,
        ),
        (
            Command::Commit {
                hold: HoldId::new(77),
                amount: amt(1),
            },
            LedgerError::UnknownHold(HoldId::new(77)),
        ),
        (
            Command::Commit {
                hold: h,
                amount: amt(11),
            },
            LedgerError::CommitExceedsHold {
                hold: h,
                held: amt(10),
                requested: amt(11),
            },
        ),
        (
            Command::Cancel {
                hold: HoldId::new(77),
            },
            LedgerError::UnknownHold(HoldId::new(77)),
        ),
        (
            Command::Refund {
                entry: c.entry,
                amount: amt(0),
            },
            LedgerError::ZeroAmount,
        ),
        (
            Command::Refund {
                entry: EntrySeq::new(0),
                amount: amt(1),
            },
            LedgerError::UnknownEntry(EntrySeq::new(0)),
        ),
    ];
    for (i, (command, expected)) in cases.into_iter().enumerate() {
        let request = Request::new(t.clone(), key(&format!("bad-{i}")), command.clone());
        assert_eq!(
            ledger.apply(&request).await,
            Err(expected.clone()),
            "{command:?}"
        );
        assert_eq!(
            ledger.apply(&request).await,
            Err(expected),
            "replay of {command:?}"
        );
    }
    assert_eq!(
        (ledger.balance(t).await, all_entries(&ledger, t).await),
        snapshot,
        "nothing changed"
    );
    conserved(&ledger, Some(t)).await;
}

/// Amounts, counters and expiries past what the backend stores
/// ([`LedgerStore::value_limit`]) are refused with [`LedgerError::AmountOverflow`], a domain
/// answer recorded under the key, before anything reaches storage: nothing changes, and the
/// same request alone or in a batch gets the same answer.
pub async fn values_past_the_backend_limit_are_refused(store: Arc<dyn LedgerStore>) {
    let limit = store.value_limit();
    let (ledger, _clock, ids) = setup(store, &["limit"]).await;
    let t = &ids[0];
    let grant = |units: u64, expires_at: Option<Timestamp>| Command::Grant {
        amount: amt(units),
        expires_at,
        priority: 0,
    };
    let apply = |k: &str, command: Command| {
        let request = Request::new(t.clone(), key(k), command);
        let ledger = &ledger;
        async move { ledger.apply(&request).await }
    };
    // Exactly the limit fits.
    apply("fill", grant(limit - 10, None))
        .await
        .expect("a grant up to the limit");
    let snapshot = (ledger.balance(t).await, all_entries(&ledger, t).await);
    let mut refused = vec![("past", grant(11, None))];
    if limit < u64::MAX {
        refused.push(("one-past", grant(limit.saturating_add(1), None)));
    }
    // An expiry the backend cannot store ("never" is not a stored time).
    if limit < u64::MAX - 1 {
        let far = Timestamp::from_unix_millis(limit + 1);
        refused.push(("far-expiry", grant(1, Some(far))));
        let ttl = Duration::from_millis(limit - START.as_unix_millis() + 1);
        refused.push((
            "far-hold",
            Command::Reserve {
                amount: amt(1),
                ttl,
            },
        ));
    }
    for (k, command) in &refused {
        assert_eq!(
            apply(k, command.clone()).await,
            Err(LedgerError::AmountOverflow),
            "{k}: {command:?}"
        );
        assert_eq!(
            apply(k, command.clone()).await,
            Err(LedgerError::AmountOverflow),
            "{k} replayed"
        );
    }
    let batch = [
        Request::new(t.clone(), key("batch-ok"), grant(1, None)),
        Request::new(t.clone(), key("batch-past"), grant(limit, None)),
    ];
    assert!(
        matches!(
            ledger.batch(&batch).await,
            Err(LedgerError::BatchRejected { ref source, .. }) if **source == LedgerError::AmountOverflow
        ),
        "a batch with one value past the limit is refused as a whole"
    );
    assert_eq!(
        (ledger.balance(t).await, all_entries(&ledger, t).await),
        snapshot,
        "nothing changed"
    );
    // Spending and refunding stay within the limit: a refund that would push the inflow
    // past it is refused too.
    let c = apply("spend", Command::Consume { amount: amt(10) })
        .await
        .expect("consume");
    apply("top-up", grant(10, None))
        .await
        .expect("refill to the limit");
    assert_eq!(
        apply(
            "refund",
            Command::Refund {
                entry: c.entry,
                amount: amt(1)
            }
        )
        .await,
        Err(LedgerError::AmountOverflow)
    );
    conserved(&ledger, Some(t)).await;
}

/// A batch that resolves a hold, expires another and refunds an entry, then fails, leaves
/// all of it as it was: the holds active, the refund tally unchanged (a backend that undoes
/// a batch by savepoint must undo its history too).
pub async fn a_refused_batch_leaves_holds_and_refunds_as_they_were(store: Arc<dyn LedgerStore>) {
    let (ledger, clock, ids) = setup(store, &["undo"]).await;
    let t = &ids[0];
    ledger
        .grant(t, key("g"), amt(100), GrantOptions::default())
        .await
        .expect("grant");
    let h = ledger
        .reserve(t, key("r"), amt(10), Duration::from_secs(60))
        .await
        .expect("reserve")
        .hold;
    let short = ledger
        .reserve(t, key("r-short"), amt(5), Duration::from_secs(1))
        .await
        .expect("reserve")
        .hold;
    let c = ledger.consume(t, key("c"), amt(20)).await.expect("consume");
    clock.advance(Duration::from_secs(2)); // `short` is due: the batch's first step expires it
    let snapshot = all_entries(&ledger, t).await;
    let batch = [
        Request::new(
            t.clone(),
            key("b-commit"),
            Command::Commit {
                hold: h,
                amount: amt(4),
            },
        ),
        Request::new(
            t.clone(),
            key("b-refund"),
            Command::Refund {
                entry: c.entry,
                amount: amt(15),
            },
        ),
        Request::new(
            t.clone(),
            key("b-too-much"),
            Command::Consume { amount: amt(1_000) },
        ),
    ];
    assert!(
        matches!(
            ledger.batch(&batch).await,
            Err(LedgerError::BatchRejected { index: 2, .. })
        ),
        "the third request is refused"
    );
    assert_eq!(
        all_entries(&ledger, t).await,
        snapshot,
        "no entry of the batch remains"
    );
    assert!(
        matches!(ledger.hold(t, h).await, Ok(HoldState::Active { .. })),
        "the committed hold is active again"
    );
    // The whole consumed amount is still refundable: the batch's refund left no tally.
    ledger
        .refund(t, key("refund-all"), c.entry, amt(20))
        .await
        .expect("a refund of everything consumed");
    // And the hold commits for real, once.
    ledger
        .commit(t, key("commit"), h, amt(4))
        .await
        .expect("commit");
    assert!(matches!(
        ledger.hold(t, short).await,
        Ok(HoldState::Resolved(HoldResolution::Expired))
    ));
    conserved(&ledger, Some(t)).await;
}

/// `ConsumeUpTo` spends `min(max, spendable)` (the overdraft allowance included) and says
/// how much; `CommitUpTo` spends `min(max, held)`; neither ever overdraws, and both replay.
pub async fn take_what_is_left(store: Arc<dyn LedgerStore>) {
    let (ledger, _clock, ids) = setup(store, &["left", "debt"]).await;
    let (t, d) = (&ids[0], &ids[1]);
    let apply = |t: &TenantId, k: &str, command: Command| {
        let request = Request::new(t.clone(), key(k), command);
        let ledger = &ledger;
        async move { ledger.apply(&request).await }
    };
    ledger
        .grant(t, key("g"), amt(30), GrantOptions::default())
        .await
        .expect("grant");
    let up_to = |max: u64| Command::ConsumeUpTo { max: amt(max) };
    // Enough: exactly what was asked.
    let r = apply(t, "u1", up_to(10)).await.expect("up to 10");
    assert_eq!(r.effect, Effect::Taken { amount: amt(10) });
    // Not enough: whatever is left.
    let r = apply(t, "u2", up_to(50)).await.expect("up to 50");
    assert_eq!(r.effect, Effect::Taken { amount: amt(20) });
    assert_eq!(r.balance, bal(0, 0, 0));
    assert_eq!(apply(t, "u2", up_to(50)).await, Ok(r), "a replay");
    // Nothing left: refused, changing nothing.
    assert_eq!(
        apply(t, "u3", up_to(5)).await,
        Err(LedgerError::InsufficientCredits {
            requested: amt(5),
            spendable: Amount::ZERO
        })
    );
    assert_eq!(apply(t, "u0", up_to(0)).await, Err(LedgerError::ZeroAmount));
    // The overdraft allowance counts, and is never passed.
    let a = tenant("allowance");
    ledger
        .create_tenant(
            &a,
            TenantSettings {
                overdraft_limit: amt(7),
                ..TenantSettings::default()
            },
        )
        .await
        .expect("create");
    ledger
        .grant(&a, key("g"), amt(3), GrantOptions::default())
        .await
        .expect("grant");
    let r = apply(&a, "u", up_to(100)).await.expect("up to 100");
    assert_eq!(r.effect, Effect::Taken { amount: amt(10) });
    assert_eq!(r.balance, bal(0, 0, 7));
    // CommitUpTo: never more than held; the rest released.
    ledger
        .grant(d, key("g"), amt(40), GrantOptions::default())
        .await
        .expect("grant");
    let h = ledger
        .reserve(d, key("r"), amt(25), Duration::from_secs(60))
        .await
        .expect("reserve")
        .hold;
    let r = apply(
        d,
        "c",
        Command::CommitUpTo {
            hold: h,
            max: amt(100),
        },
    )
    .await
    .expect("commit up to");
    assert_eq!(
        r.effect,
        Effect::Committed {
            hold: h,
            committed: amt(25),
            released: Amount::ZERO
        }
    );
    let h2 = ledger
        .reserve(d, key("r2"), amt(10), Duration::from_secs(60))
        .await
        .expect("reserve")
        .hold;
    let r = apply(
        d,
        "c2",
        Command::CommitUpTo {
            hold: h2,
            max: amt(4),
        },
    )
    .await
    .expect("commit up to 4");
    assert_eq!(
        r.effect,
        Effect::Committed {
            hold: h2,
            committed: amt(4),
            released: amt(6)
        }
    );
    assert_eq!(r.balance, bal(11, 0, 0));
    for t in [t, d, &a] {
        conserved(&ledger, Some(t)).await;
    }
}

fn reason(r: &str) -> Reason {
    Reason::new(r).expect("valid reason")
}

/// The lot a grant created.
fn lot_of(r: &crate::Receipt) -> LotId {
    match r.effect {
        Effect::Granted { lot: Some(lot) } => lot,
        other => panic!("not a grant that made a lot: {other:?}"),
    }
}

/// Voiding a lot: only what is left of it goes, with its reason, counted like an expiry;
/// consumed and held credits stay; a second void, an empty or unknown lot are refused and
/// change nothing; a void replays under its key; credits of the voided lot released from a
/// hold later expire at once.
pub async fn void_a_lot(store: Arc<dyn LedgerStore>) {
    let (ledger, clock, ids) = setup(store, &["void"]).await;
    let t = &ids[0];
    let g1 = ledger
        .grant(t, key("g1"), amt(100), GrantOptions::default().priority(0))
        .await
        .expect("grant");
    let g2 = ledger
        .grant(t, key("g2"), amt(50), GrantOptions::default().priority(1))
        .await
        .expect("grant");
    let (l1, l2) = (lot_of(&g1), lot_of(&g2));
    // 30 consumed from lot 1, 20 of it held: 50 left in it.
    ledger.consume(t, key("c"), amt(30)).await.expect("consume");
    let hold = ledger
        .reserve(t, key("r"), amt(20), Duration::from_secs(60))
        .await
        .expect("reserve")
        .hold;
    assert_eq!(ledger.balance(t).await.expect("balance"), bal(100, 20, 0));
    let void = |k: &str, lot: LotId| {
        let ledger = &ledger;
        let k = key(k);
        async move {
            ledger
                .void_lot(t, k, lot, reason("granted by mistake"))
                .await
        }
    };
    let r = void("v1", l1).await.expect("void");
    assert_eq!(
        r.effect,
        Effect::Voided {
            lot: l1,
            voided: amt(50)
        }
    );
    assert_eq!(r.balance, bal(50, 20, 0), "held credits stay held");
    assert_eq!(void("v1", l1).await, Ok(r), "a replay");
    let entries = all_entries(&ledger, t).await;
    let e = entries.last().expect("an entry");
    assert_eq!(
        (
            e.kind,
            e.amount,
            e.lot,
            e.reason.as_ref().map(Reason::as_str)
        ),
        (
            EntryKind::LotVoided,
            amt(50),
            Some(l1),
            Some("granted by mistake")
        )
    );
    assert_eq!(e.key, Some(key("v1")));
    let totals = ledger.store().totals(t).await.expect("totals");
    assert_eq!((totals.consumed, totals.expired), (amt(30), amt(50)));
    // Refusals change nothing.
    let before = entries.len();
    assert_eq!(void("v2", l1).await, Err(LedgerError::LotEmpty(l1)));
    assert_eq!(
        void("v3", LotId::new(99)).await,
        Err(LedgerError::UnknownLot(LotId::new(99)))
    );
    assert_eq!(
        void("v4", LotId::new(0)).await,
        Err(LedgerError::UnknownLot(LotId::new(0)))
    );
    assert_eq!(
        void("v2", l1).await,
        Err(LedgerError::LotEmpty(l1)),
        "replay"
    );
    assert_eq!(all_entries(&ledger, t).await.len(), before);
    assert_eq!(ledger.balance(t).await.expect("balance"), bal(50, 20, 0));
    // The hold still commits from what it took; its rest returns to the voided lot and
    // expires at once.
    let r = ledger
        .commit(t, key("commit"), hold, amt(5))
        .await
        .expect("commit");
    assert_eq!(r.balance, bal(50, 0, 0));
    let last = all_entries(&ledger, t).await;
    let kinds: Vec<EntryKind> = last[before..].iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EntryKind::Committed,
            EntryKind::Released,
            EntryKind::LotExpired
        ]
    );
    assert_eq!(
        last.last().map(|e| (e.amount, e.lot)),
        Some((amt(15), Some(l1)))
    );
    // The other lot is whole and spendable; voiding it empties the tenant.
    clock.advance(Duration::from_secs(1));
    let r = void("v5", l2).await.expect("void 2");
    assert_eq!(r.balance, bal(0, 0, 0));
    assert_eq!(
        ledger.consume(t, key("c2"), amt(1)).await,
        Err(LedgerError::InsufficientCredits {
            requested: amt(1),
            spendable: Amount::ZERO
        })
    );
    // A bad reason never reaches the ledger; the same key with another lot conflicts.
    assert!(matches!(
        Reason::new(""),
        Err(LedgerError::InvalidReason { .. })
    ));
    assert_eq!(
        void("v5", l1).await,
        Err(LedgerError::IdempotencyConflict(key("v5")))
    );
    conserved(&ledger, Some(t)).await;
    conserved(&ledger, None).await;
}

/// A frozen tenant refuses consumes, take-what-is-left and reserves (and a second
/// freeze); grants, refunds, voids and the resolution of existing holds still work; it
/// keeps its history and can be unfrozen.
pub async fn freeze_and_unfreeze(store: Arc<dyn LedgerStore>) {
    let (ledger, _clock, ids) = setup(store, &["frozen", "other"]).await;
    let (t, o) = (&ids[0], &ids[1]);
    ledger
        .grant(t, key("g"), amt(100), GrantOptions::default())
        .await
        .expect("grant");
    let spent = ledger.consume(t, key("c"), amt(10)).await.expect("consume");
    let h1 = ledger
        .reserve(t, key("r1"), amt(20), Duration::from_secs(60))
        .await
        .expect("reserve")
        .hold;
    let h2 = ledger
        .reserve(t, key("r2"), amt(5), Duration::from_secs(60))
        .await
        .expect("reserve")
        .hold;
    assert_eq!(
        ledger.unfreeze(t, key("u0")).await,
        Err(LedgerError::TenantNotFrozen(t.clone()))
    );
    let r = ledger.freeze(t, key("f")).await.expect("freeze");
    assert_eq!(r.effect, Effect::Frozen);
    assert_eq!(r.balance, bal(65, 25, 0));
    assert_eq!(ledger.freeze(t, key("f")).await, Ok(r), "a replay");
    let frozen = Err(LedgerError::TenantFrozen(t.clone()));
    let apply = |k: &str, command: Command| {
        let request = Request::new(t.clone(), key(k), command);
        let ledger = &ledger;
        async move { ledger.apply(&request).await }
    };
    let before = all_entries(&ledger, t).await.len();
    assert_eq!(
        apply("x1", Command::Consume { amount: amt(1) }).await,
        frozen
    );
    assert_eq!(
        apply("x2", Command::ConsumeUpTo { max: amt(1) }).await,
        frozen
    );
    assert_eq!(
        apply(
            "x3",
            Command::Reserve {
                amount: amt(1),
                ttl: Duration::from_secs(1)
            }
        )
        .await,
        frozen
    );
    assert_eq!(apply("x4", Command::Freeze).await, frozen);
    assert_eq!(
        apply("x1", Command::Consume { amount: amt(1) }).await,
        frozen,
        "a refusal replays"
    );
    assert_eq!(
        all_entries(&ledger, t).await.len(),
        before,
        "refusals change nothing"
    );
    // What still works.
    ledger
        .grant(t, key("g2"), amt(7), GrantOptions::default())
        .await
        .expect("a grant while frozen");
    ledger
        .refund(t, key("rf"), spent.entry, amt(3))
        .await
        .expect("a refund while frozen");
    ledger
        .commit(t, key("cm"), h1, amt(15))
        .await
        .expect("a commit while frozen");
    ledger
        .cancel(t, key("cn"), h2)
        .await
        .expect("a cancel while frozen");
    assert_eq!(ledger.balance(t).await.expect("balance"), bal(85, 0, 0));
    // Other tenants are not affected.
    ledger
        .grant(o, key("g"), amt(5), GrantOptions::default())
        .await
        .expect("grant");
    ledger.consume(o, key("c"), amt(5)).await.expect("consume");
    // Unfrozen: consumes work again, the history kept every step.
    let r = ledger.unfreeze(t, key("u")).await.expect("unfreeze");
    assert_eq!(r.effect, Effect::Unfrozen);
    ledger
        .consume(t, key("x1b"), amt(1))
        .await
        .expect("consume after unfreeze");
    assert_eq!(
        ledger.unfreeze(t, key("u2")).await,
        Err(LedgerError::TenantNotFrozen(t.clone()))
    );
    let kinds: Vec<EntryKind> = all_entries(&ledger, t)
        .await
        .iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.contains(&EntryKind::Frozen) && kinds.contains(&EntryKind::Unfrozen));
    let status: Vec<_> = all_entries(&ledger, t)
        .await
        .into_iter()
        .filter(|e| e.kind.is_status())
        .map(|e| (e.amount, e.before == e.after))
        .collect();
    assert_eq!(status, [(Amount::ZERO, true), (Amount::ZERO, true)]);
    for t in [t, o] {
        conserved(&ledger, Some(t)).await;
    }
}

/// Closing: refused while holds are open; otherwise every lot left is voided (journaled,
/// with the close's reason) and the tenant refuses every change after, keeping its
/// history.
pub async fn close_a_tenant(store: Arc<dyn LedgerStore>) {
    let (ledger, _clock, ids) = setup(store, &["closing"]).await;
    let t = &ids[0];
    ledger
        .grant(t, key("g1"), amt(40), GrantOptions::default())
        .await
        .expect("grant");
    ledger
        .grant(
            t,
            key("g2"),
            amt(60),
            GrantOptions::default().expires_at(START.saturating_add(Duration::from_secs(3_600))),
        )
        .await
        .expect("grant");
    ledger.consume(t, key("c"), amt(70)).await.expect("consume");
    let hold = ledger
        .reserve(t, key("r"), amt(10), Duration::from_secs(60))
        .await
        .expect("reserve")
        .hold;
    let before = all_entries(&ledger, t).await.len();
    assert_eq!(
        ledger.close(t, key("close")).await,
        Err(LedgerError::HoldsOpen {
            tenant: t.clone(),
            holds: 1
        })
    );
    assert_eq!(
        all_entries(&ledger, t).await.len(),
        before,
        "nothing changed"
    );
    ledger.cancel(t, key("cancel"), hold).await.expect("cancel");
    // A frozen tenant can be closed too; a new key is a new request.
    ledger.freeze(t, key("f")).await.expect("freeze");
    let r = ledger.close(t, key("close2")).await.expect("close");
    assert_eq!(r.effect, Effect::Closed { voided: amt(30) });
    assert_eq!(r.balance, bal(0, 0, 0));
    assert_eq!(ledger.close(t, key("close2")).await, Ok(r), "a replay");
    let entries = all_entries(&ledger, t).await;
    let tail: Vec<_> = entries[before + 2..]
        .iter()
        .map(|e| (e.kind, e.amount, e.reason.as_ref().map(Reason::as_str)))
        .collect();
    assert_eq!(
        tail,
        [
            (EntryKind::LotVoided, amt(30), Some(crate::CLOSE_REASON)),
            (EntryKind::Closed, Amount::ZERO, None),
        ]
    );
    // Closed: every change refused, for good; reads still work.
    let closed = Err(LedgerError::TenantClosed(t.clone()));
    assert_eq!(
        ledger
            .grant(t, key("g3"), amt(1), GrantOptions::default())
            .await,
        closed
    );
    assert_eq!(ledger.unfreeze(t, key("u")).await, closed);
    assert_eq!(ledger.freeze(t, key("f2")).await, closed);
    assert_eq!(ledger.close(t, key("close3")).await, closed);
    assert_eq!(
        ledger.refund(t, key("rf"), EntrySeq::new(3), amt(1)).await,
        closed
    );
    assert_eq!(all_entries(&ledger, t).await.len(), entries.len());
    assert_eq!(ledger.balance(t).await.expect("balance"), bal(0, 0, 0));
    conserved(&ledger, Some(t)).await;
    conserved(&ledger, None).await;
}

/// Rollover at expiry: the policy's share of an expiring lot's unused credits, at most its
/// cap, becomes a new lot in the same change as the expiry of the rest (a `rolled_over`
/// entry moving the credits, then the `lot_expired` entry of the rest); the new lot lives the
/// policy's ttl from the expiry, keeps the priority, and rolls over in turn; a tenant without
/// a policy is untouched; counters, conservation and the journal replay agree throughout.
pub async fn rollover_at_expiry(store: Arc<dyn LedgerStore>) {
    let clock = ManualClock::new(START);
    let ledger = Ledger::from_shared(store, Arc::new(clock.clone()));
    let at = |s: u64| START.saturating_add(Duration::from_secs(s));
    let policy =
        RolloverPolicy::new(50, Some(amt(30)), Duration::from_secs(100)).expect("a valid policy");
    let rolls = tenant("rolls");
    let plain = tenant("plain");
    let settings = TenantSettings {
        rollover: Some(policy),
        ..TenantSettings::default()
    };
    ledger
        .create_tenant(&rolls, settings)
        .await
        .expect("create");
    ledger
        .create_tenant(&plain, TenantSettings::default())
        .await
        .expect("create");
    for t in [&rolls, &plain] {
        let soon = GrantOptions::default().expires_at(at(10)).priority(3);
        ledger
            .grant(t, key("soon"), amt(100), soon)
            .await
            .expect("grant");
        let never = GrantOptions::default();
        ledger
            .grant(t, key("never"), amt(5), never)
            .await
            .expect("grant");
        // Spent from the lot expiring first: 80 of it are left.
        ledger.consume(t, key("c"), amt(20)).await.expect("consume");
    }
    clock.set_now(at(12));
    // Half of 80 is 40, capped at 30: 30 roll over, 50 expire.
    assert_eq!(ledger.balance(&rolls).await, Ok(bal(35, 0, 0)));
    assert_eq!(ledger.balance(&plain).await, Ok(bal(5, 0, 0)));
    let entries = all_entries(&ledger, &rolls).await;
    let [.., rolled, expired] = entries.as_slice() else {
        panic!("expected a rollover and an expiry, got {entries:?}");
    };
    assert_eq!(
        (rolled.kind, rolled.amount, rolled.key.as_ref(), rolled.at),
        (EntryKind::RolledOver, amt(30), None, at(12))
    );
    assert_eq!(
        rolled.before, rolled.after,
        "a rollover moves credits between lots"
    );
    assert_eq!(
        (expired.kind, expired.amount, expired.at),
        (EntryKind::LotExpired, amt(50), at(12))
    );
    assert_eq!(expired.seq.get(), rolled.seq.get() + 1, "one change");
    let new_lot = rolled.lot.expect("the new lot");
    assert_ne!(Some(new_lot), expired.lot);
    let plain_tail = all_entries(&ledger, &plain).await.pop().expect("an entry");
    assert_eq!(
        (plain_tail.kind, plain_tail.amount),
        (EntryKind::LotExpired, amt(80))
    );
    // The new lot is spent before the lot that never expires.
    ledger
        .consume(&rolls, key("c2"), amt(4))
        .await
        .expect("consume");
    // It expires 100 s after the rollover, and half of its 26 roll over again.
    clock.set_now(at(111));
    assert_eq!(ledger.balance(&rolls).await, Ok(bal(31, 0, 0)), "not yet");
    clock.set_now(at(112));
    assert_eq!(ledger.balance(&rolls).await, Ok(bal(18, 0, 0)));
    let entries = all_entries(&ledger, &rolls).await;
    let [.., again, rest] = entries.as_slice() else {
        panic!("expected a second rollover, got {entries:?}");
    };
    assert_eq!(
        (again.kind, again.amount, rest.kind, rest.amount, rest.lot),
        (
            EntryKind::RolledOver,
            amt(13),
            EntryKind::LotExpired,
            amt(13),
            Some(new_lot)
        )
    );
    for (t, expired) in [(&rolls, 50 + 13), (&plain, 80)] {
        let totals = ledger
            .check_conservation(Some(t))
            .await
            .expect("totals")
            .expect("conserved");
        let consumed = if t == &rolls { 24 } else { 20 };
        assert_eq!(
            (totals.granted, totals.consumed, totals.expired),
            (amt(105), amt(consumed), amt(expired)),
            "{t}: a rollover is neither a grant nor an expiry"
        );
        let replayed = ledger.verify_journal(t).await.expect("read");
        assert!(replayed.is_ok(), "{t}: {replayed:?}");
    }
}

/// Imports: grants and consumption from another system applied at their original times,
/// in order, as `imported_grant` / `imported_consume` entries (expiries due by an import's
/// time happen first, dated then); an import out of order or in the future is refused and
/// changes nothing; a re-run import replays; imported consumption is refundable; once a
/// change is made now, earlier imports are out of order; counters and replay agree.
pub async fn import_history_in_order(store: Arc<dyn LedgerStore>) {
    let clock = ManualClock::new(START);
    let ledger = Ledger::from_shared(store, Arc::new(clock.clone()));
    let ago = |s: u64| Timestamp::from_unix_millis(START.as_unix_millis() - s * 1_000);
    let t = tenant("migrated");
    ledger
        .create_tenant(&t, TenantSettings::default())
        .await
        .expect("create");
    let monthly = ledger
        .import_grant(&t, key("import/g-1"), amt(100), Some(ago(100)), ago(300))
        .await
        .expect("import a grant");
    assert_eq!(monthly.at, ago(300), "dated at its original time");
    ledger
        .import_grant(&t, key("import/g-2"), amt(50), None, ago(250))
        .await
        .expect("import a grant");
    let spent = ledger
        .import_consume(&t, key("import/c-1"), amt(30), ago(200))
        .await
        .expect("import a consumption");
    // Refused, changing nothing: out of order, in the future, past what was there then.
    assert_eq!(
        ledger
            .import_consume(&t, key("import/c-0"), amt(1), ago(260))
            .await,
        Err(LedgerError::ImportOutOfOrder {
            at: ago(260),
            last: ago(200)
        })
    );
    let later = START.saturating_add(Duration::from_secs(1));
    assert_eq!(
        ledger
            .import_consume(&t, key("import/c-9"), amt(1), later)
            .await,
        Err(LedgerError::ImportInFuture {
            at: later,
            now: START
        })
    );
    assert!(matches!(
        ledger
            .import_consume(&t, key("import/c-big"), amt(1_000), ago(150))
            .await,
        Err(LedgerError::InsufficientCredits { .. })
    ));
    assert_eq!(
        ledger
            .import_grant(&t, key("import/g-bad"), amt(5), Some(ago(160)), ago(150))
            .await,
        Err(LedgerError::ExpiryNotInFuture),
        "a lot must expire after it was granted"
    );
    // A re-run import replays.
    assert_eq!(
        ledger
            .import_consume(&t, key("import/c-1"), amt(30), ago(200))
            .await,
        Ok(spent)
    );
    // The first lot expired at ago(100) with 70 left: that expiry is applied, dated
    // ago(50), before the consumption imported at ago(50) (taken from the second lot).
    ledger
        .import_consume(&t, key("import/c-2"), amt(10), ago(50))
        .await
        .expect("import a consumption");
    let entries = all_entries(&ledger, &t).await;
    let seen: Vec<_> = entries.iter().map(|e| (e.kind, e.amount, e.at)).collect();
    assert_eq!(
        seen,
        [
            (EntryKind::ImportedGrant, amt(100), ago(300)),
            (EntryKind::ImportedGrant, amt(50), ago(250)),
            (EntryKind::ImportedConsume, amt(30), ago(200)),
            (EntryKind::LotExpired, amt(70), ago(50)),
            (EntryKind::ImportedConsume, amt(10), ago(50)),
        ]
    );
    assert_eq!(
        entries[0].key.as_ref().map(IdempotencyKey::as_str),
        Some("import/g-1"),
        "the other system's id is kept with the entry"
    );
    // Imported consumption is refundable; once a change is made now, the past is closed.
    ledger
        .refund(&t, key("refund"), spent.entry, amt(5))
        .await
        .expect("refund an imported consumption");
    assert!(matches!(
        ledger
            .import_consume(&t, key("import/c-3"), amt(1), ago(10))
            .await,
        Err(LedgerError::ImportOutOfOrder { .. })
    ));
    assert_eq!(ledger.balance(&t).await, Ok(bal(45, 0, 0)));
    let totals = ledger
        .check_conservation(Some(&t))
        .await
        .expect("totals")
        .expect("conserved");
    assert_eq!(
        (
            totals.granted,
            totals.consumed,
            totals.expired,
            totals.refunded
        ),
        (amt(150), amt(40), amt(70), amt(5))
    );
    let replayed = ledger.verify_journal(&t).await.expect("read");
    assert_eq!(replayed, Ok(6));
}

/// Many concurrent requests on one tenant (64 tasks released together): no lost update,
/// never negative, conserved.
pub async fn concurrent_requests_on_one_tenant(store: Arc<dyn LedgerStore>, spawn: Spawner) {
    let (ledger, _clock, ids) = setup(store, &["hot"]).await;
    let t = &ids[0];
    ledger
        .grant(t, key("g"), amt(1_000), GrantOptions::default())
        .await
        .expect("grant");
    let results = together(&spawn, 64, |i| {
        let ledger = ledger.clone();
        let t = t.clone();
        async move {
            if i.is_multiple_of(2) {
                ledger
                    .consume(&t, key(&format!("c{i}")), amt(20))
                    .await
                    .map(|_| 20)
            } else {
                let h = ledger
                    .reserve(&t, key(&format!("r{i}")), amt(30), Duration::from_secs(60))
                    .await?;
                ledger
                    .commit(&t, key(&format!("m{i}")), h.hold, amt(20))
                    .await
                    .map(|_| 20)
            }
        }
    })
    .await;
    let spent: u64 = results.iter().filter_map(|r| r.as_ref().ok()).sum();
    for r in &results {
        if let Err(e) = r {
            assert!(
                matches!(e, LedgerError::InsufficientCredits { .. }),
                "unexpected {e}"
            );
        }
    }
    let b = ledger.balance(t).await.expect("balance");
    assert_eq!(b, bal(1_000 - spent, 0, 0), "no lost update");
    // How much gets spent depends on the interleaving (a backend that runs the requests
    // truly concurrently may refuse consumes while holds are outstanding); that every
    // acknowledged spend is reflected exactly once does not.
    assert!(spent > 0 && spent.is_multiple_of(20), "spent {spent}");
    conserved(&ledger, Some(t)).await;
}

/// Many tasks race to resolve one hold (half commit, half cancel, each under its own key):
/// exactly one wins, every other is told the hold is already committed or cancelled (the
/// winner's way), and the balance shows one resolution.
pub async fn concurrent_resolutions_of_one_hold(store: Arc<dyn LedgerStore>, spawn: Spawner) {
    let (ledger, _clock, ids) = setup(store, &["hot"]).await;
    let t = &ids[0];
    ledger
        .grant(t, key("g"), amt(100), GrantOptions::default())
        .await
        .expect("grant");
    let hold = ledger
        .reserve(t, key("r"), amt(40), Duration::from_secs(60))
        .await
        .expect("reserve")
        .hold;
    let results = together(&spawn, 16, |i| {
        let (ledger, t) = (ledger.clone(), t.clone());
        async move {
            if i.is_multiple_of(2) {
                ledger
                    .commit(&t, key(&format!("m{i}")), hold, amt(15))
                    .await
            } else {
                ledger.cancel(&t, key(&format!("x{i}")), hold).await
            }
        }
    })
    .await;
    let winners: Vec<usize> = (0..results.len()).filter(|&i| results[i].is_ok()).collect();
    assert_eq!(winners.len(), 1, "one resolution wins: {results:?}");
    let committed = winners[0].is_multiple_of(2);
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(_) => {}
            Err(LedgerError::HoldAlreadyCommitted(h)) if committed && *h == hold => {}
            Err(LedgerError::HoldAlreadyCancelled(h)) if !committed && *h == hold => {}
            Err(e) => panic!("request {i}: unexpected {e} (the hold was committed: {committed})"),
        }
    }
    let expected = if committed {
        bal(85, 0, 0)
    } else {
        bal(100, 0, 0)
    };
    assert_eq!(ledger.balance(t).await.expect("balance"), expected);
    let resolutions = all_entries(&ledger, t)
        .await
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::Committed | EntryKind::Cancelled))
        .count();
    assert_eq!(resolutions, 1);
    conserved(&ledger, Some(t)).await;
}

/// One request sent by many tasks at once under one key (a client retrying while its
/// first attempt is still in flight): applied once, every task gets the same receipt.
pub async fn concurrent_retries_of_one_key(store: Arc<dyn LedgerStore>, spawn: Spawner) {
    let (ledger, _clock, ids) = setup(store, &["hot"]).await;
    let t = &ids[0];
    ledger
        .grant(t, key("g"), amt(100), GrantOptions::default())
        .await
        .expect("grant");
    let results = together(&spawn, 16, |i| {
        let (ledger, t) = (ledger.clone(), t.clone());
        async move {
            // Half consume, half reserve, each under the key of its kind.
            if i.is_multiple_of(2) {
                ledger.consume(&t, key("same-consume"), amt(7)).await
            } else {
                ledger
                    .reserve(&t, key("same-reserve"), amt(9), Duration::from_secs(60))
                    .await
                    .map(|r| r.receipt)
            }
        }
    })
    .await;
    for parity in 0..2 {
        let first = results[parity].as_ref().expect("applied");
        for r in results.iter().skip(parity).step_by(2) {
            assert_eq!(r.as_ref().expect("replayed"), first, "one answer per key");
        }
    }
    assert_eq!(ledger.balance(t).await.expect("balance"), bal(84, 9, 0));
    assert_eq!(
        all_entries(&ledger, t).await.len(),
        3,
        "grant, consume, reserve: once each"
    );
    conserved(&ledger, Some(t)).await;
}

/// Batches over the same two tenants, named in opposite orders, run at once: none
/// deadlocks or is lost, each applies all or nothing, and both tenants end conserved.
pub async fn concurrent_batches_in_opposite_orders(store: Arc<dyn LedgerStore>, spawn: Spawner) {
    let (ledger, _clock, ids) = setup(store, &["east", "west"]).await;
    for t in &ids {
        ledger
            .grant(t, key("g"), amt(100), GrantOptions::default())
            .await
            .expect("grant");
    }
    let consume = |t: &TenantId, k: String, n: u64| {
        Request::new(t.clone(), key(&k), Command::Consume { amount: amt(n) })
    };
    let results = together(&spawn, 16, |i| {
        let ledger = ledger.clone();
        let (first, second) = if i.is_multiple_of(2) {
            (&ids[0], &ids[1])
        } else {
            (&ids[1], &ids[0])
        };
        let batch = vec![
            consume(first, format!("b{i}"), 10),
            consume(second, format!("b{i}"), 10),
        ];
        async move { ledger.batch(&batch).await }
    })
    .await;
    let mut applied = 0;
    for r in &results {
        match r {
            Ok(receipts) => {
                assert_eq!(receipts.len(), 2);
                applied += 1;
            }
            Err(LedgerError::BatchRejected { source, .. })
                if matches!(**source, LedgerError::InsufficientCredits { .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    // 100 credits per tenant, 10 per batch on each: exactly ten batches fit.
    assert_eq!(applied, 10, "{results:?}");
    for t in &ids {
        assert_eq!(ledger.balance(t).await.expect("balance"), bal(0, 0, 0));
        conserved(&ledger, Some(t)).await;
    }
}

// ---- transactions ------------------------------------------------------------------------

/// A coordinator over `ledger` with two [`LedgerHolds`](crate::tx::LedgerHolds)
/// participants (`east`, `west`) and `log`.
fn coordinator(
    ledger: &Ledger,
    clock: &ManualClock,
    log: Arc<crate::tx::MemoryTxLog>,
) -> crate::tx::TransactionManager {
    crate::tx::TransactionManager::builder(log, Arc::new(clock.clone()))
        .participant(Arc::new(crate::tx::LedgerHolds::new(
            "east",
            ledger.clone(),
        )))
        .participant(Arc::new(crate::tx::LedgerHolds::new(
            "west",
            ledger.clone(),
        )))
        .build()
}

fn branch_payload(t: &TenantId, reserve: u64, commit: u64) -> String {
    crate::tx::HoldBranch::new(t.clone(), amt(reserve), amt(commit))
        .expect("valid branch")
        .payload()
}

/// A prepared hold answers only to its transaction's decision: an outside commit, cancel
/// or refund is refused with its own error and changes nothing; expiry never takes it; the
/// decided commit then applies, and its charge cannot be refunded.
pub async fn prepared_holds_answer_only_to_their_branch(store: Arc<dyn LedgerStore>) {
    let (ledger, clock, ts) = setup(store, &["acme"]).await;
    let t = &ts[0];
    ledger
        .grant(t, key("g"), amt(100), GrantOptions::default())
        .await
        .expect("grant");
    let log = Arc::new(crate::tx::MemoryTxLog::starting_at(1));
    let tm = coordinator(&ledger, &clock, log);
    let tx = tm.begin(Duration::from_secs(30)).await.expect("begin");
    let branch = tm
        .enlist(tx, "east", branch_payload(t, 40, 30))
        .await
        .expect("enlist");
    tm.prepare(tx).await.expect("prepare");
    let prepared = ledger
        .store()
        .prepared_holds(None, 10)
        .await
        .expect("prepared holds");
    assert_eq!(prepared.len(), 1, "{prepared:?}");
    assert_eq!((prepared[0].branch, prepared[0].amount), (branch, amt(40)));
    let hold = prepared[0].hold;
    let before = ledger.store().totals(t).await.expect("totals");
    let owned = LedgerError::HoldOwnedByTransaction {
        hold,
        owner: branch,
    };
    assert_eq!(ledger.cancel(t, key("x"), hold).await, Err(owned.clone()));
    assert_eq!(
        ledger.commit(t, key("c"), hold, amt(40)).await,
        Err(owned.clone())
    );
    clock.advance(Duration::from_secs(400 * 24 * 3600));
    ledger.recover().await.expect("sweep");
    assert_eq!(ledger.store().totals(t).await.expect("totals"), before);
    assert_eq!(
        tm.commit(tx).await,
        Err(LedgerError::TransactionTimedOut(tx)),
        "the transaction's own deadline applies, not the hold's"
    );
    // A second transaction, decided in time.
    let tx = tm.begin(Duration::from_secs(30)).await.expect("begin");
    tm.enlist(tx, "east", branch_payload(t, 40, 30))
        .await
        .expect("enlist");
    assert_eq!(tm.commit(tx).await, Ok(crate::tx::TxOutcome::Committed));
    let totals = ledger.store().totals(t).await.expect("totals");
    assert_eq!((totals.consumed, totals.held), (amt(30), amt(0)));
    let charge = all_entries(&ledger, t)
        .await
        .into_iter()
        .find(|e| e.kind == EntryKind::Committed)
        .expect("the commit's entry");
    assert!(matches!(
        ledger.refund(t, key("rf"), charge.seq, amt(1)).await,
        Err(LedgerError::HoldOwnedByTransaction { .. })
    ));
    assert!(
        ledger
            .store()
            .prepared_holds(None, 10)
            .await
            .expect("prepared holds")
            .is_empty()
    );
    conserved(&ledger, Some(t)).await;
}

/// The reproduction of "prepared is inferred from a cache": a branch prepares, the
/// coordinator dies, a day passes, the tenant keeps working and its idempotency records
/// are forgotten; recovery still finds the hold (it is owned by the branch) and applies the
/// logged decision — an abort past the deadline, and a decided commit.
pub async fn transactions_recover_after_forgotten_keys_and_activity(store: Arc<dyn LedgerStore>) {
    let (ledger, clock, ts) = setup(store, &["acme"]).await;
    let t = &ts[0];
    ledger
        .grant(t, key("g"), amt(1_000), GrantOptions::default())
        .await
        .expect("grant");
    let log = Arc::new(crate::tx::MemoryTxLog::starting_at(1_000));
    for decide_commit in [false, true] {
        let tm = coordinator(&ledger, &clock, log.clone());
        let tx = tm.begin(Duration::from_secs(30)).await.expect("begin");
        tm.enlist(tx, "east", branch_payload(t, 100, 60))
            .await
            .expect("enlist");
        tm.prepare(tx).await.expect("prepare");
        if decide_commit {
            use crate::tx::TxLog as _;
            log.decide(tx, crate::tx::TxDecision::Commit)
                .await
                .expect("decide");
        }
        drop(tm); // the coordinator dies
        clock.advance(Duration::from_secs(25 * 3600));
        let consume = format!("busy-{decide_commit}");
        ledger
            .consume(t, key(&consume), amt(1))
            .await
            .expect("the tenant keeps working");
        ledger
            .store()
            .forget_keys(clock.now())
            .await
            .expect("forget keys");
        let prepare_key = key(&format!("{}/east/prepare", crate::tx::BranchId::new(tx, 0)));
        assert_eq!(
            ledger
                .store()
                .idempotency_record(t, &prepare_key)
                .await
                .expect("record"),
            None,
            "the prepare's idempotency record is gone"
        );
        let report = coordinator(&ledger, &clock, log.clone())
            .recover()
            .await
            .expect("recover");
        assert_eq!(report.failed, 0, "{report:?}");
        let totals = ledger.store().totals(t).await.expect("totals");
        assert_eq!(
            totals.held,
            amt(0),
            "the hold is released ({decide_commit})"
        );
        assert!(
            ledger
                .store()
                .prepared_holds(None, 10)
                .await
                .expect("prepared holds")
                .is_empty()
        );
    }
    let totals = ledger.store().totals(t).await.expect("totals");
    assert_eq!(
        totals.consumed,
        amt(62),
        "two consumes and the committed 60"
    );
    conserved(&ledger, Some(t)).await;
}

/// Two branches of one participant on one tenant are two holds, with their own keys, even
/// with different amounts; both commit.
pub async fn branches_of_one_participant_never_share_keys(store: Arc<dyn LedgerStore>) {
    let (ledger, clock, ts) = setup(store, &["acme"]).await;
    let t = &ts[0];
    ledger
        .grant(t, key("g"), amt(100), GrantOptions::default())
        .await
        .expect("grant");
    let tm = coordinator(
        &ledger,
        &clock,
        Arc::new(crate::tx::MemoryTxLog::starting_at(7)),
    );
    let tx = tm.begin(Duration::from_secs(30)).await.expect("begin");
    let a = tm
        .enlist(tx, "east", branch_payload(t, 30, 20))
        .await
        .expect("enlist");
    let b = tm
        .enlist(tx, "east", branch_payload(t, 50, 5))
        .await
        .expect("enlist");
    assert_ne!(a, b);
    tm.prepare(tx).await.expect("prepare");
    assert_eq!(ledger.balance(t).await.expect("balance"), bal(20, 80, 0));
    assert_eq!(tm.commit(tx).await, Ok(crate::tx::TxOutcome::Committed));
    assert_eq!(ledger.balance(t).await.expect("balance"), bal(75, 0, 0));
    conserved(&ledger, Some(t)).await;
}

// ---- balance thresholds and events -----------------------------------------------------

async fn all_events(ledger: &Ledger, t: &TenantId) -> Vec<BalanceEvent> {
    let mut out = Vec::new();
    let mut after = None;
    // Bounded: at most 1,000 pages of 1,000.
    for _ in 0..1_000 {
        let p = ledger.events(t, after, 1_000).await.expect("events");
        out.extend(p.events);
        match p.next {
            Some(n) => after = Some(n),
            None => return out,
        }
    }
    panic!("more than 1,000 pages of events");
}

async fn with_thresholds(
    store: Arc<dyn LedgerStore>,
    name: &str,
    thresholds: &[u64],
) -> (Ledger, ManualClock, TenantId) {
    let clock = ManualClock::new(START);
    let ledger = Ledger::from_shared(store, Arc::new(clock.clone()));
    let t = tenant(name);
    let settings = TenantSettings {
        thresholds: BalanceThresholds::new(thresholds.iter().copied().map(amt))
            .expect("valid thresholds"),
        ..TenantSettings::default()
    };
    ledger.create_tenant(&t, settings).await.expect("create");
    (ledger, clock, t)
}

/// Checks what every event must satisfy against the journal: numbered 1, 2, 3, … without
/// gaps, and each names an entry whose own before/after balances crossed its threshold
/// downward, at that entry's time, with that entry's available after; and every downward
/// crossing of every entry has its event (exactly one).
async fn events_match_the_journal(ledger: &Ledger, t: &TenantId, thresholds: &[u64]) {
    let events = all_events(ledger, t).await;
    let entries = all_entries(ledger, t).await;
    let mut expected = Vec::new();
    for e in &entries {
        for &th in thresholds.iter() {
            if e.before.available >= amt(th) && e.after.available < amt(th) {
                expected.push((e.seq, amt(th), e.at, e.after.available));
            }
        }
    }
    expected.sort_by_key(|(seq, th, _, _)| (*seq, *th));
    let got: Vec<_> = events
        .iter()
        .map(|e| (e.entry, e.threshold, e.at, e.available))
        .collect();
    assert_eq!(got, expected, "{t}: one event per downward crossing");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.seq,
            EventSeq::new(i as u64 + 1),
            "{t}: numbered without gaps"
        );
        assert_eq!(&e.tenant, t);
    }
}

/// Thresholds: a change taking available credits from at or above a threshold to below it
/// emits one event (several thresholds crossed at once: one each, ascending), whatever the
/// change (consume, reserve, expiry, void); staying below emits nothing; crossing back up
/// (a refund, a grant, a cancelled hold) re-arms silently; a replayed key and a refused
/// batch emit nothing; events stay readable after later changes and a sweep.
pub async fn thresholds_fire_once_per_downward_crossing(store: Arc<dyn LedgerStore>) {
    let thresholds = [50, 20];
    let (ledger, clock, t) = with_thresholds(store, "thresholds", &thresholds).await;
    let at = |s: u64| START.saturating_add(Duration::from_secs(s));
    ledger
        .grant(&t, key("g"), amt(100), GrantOptions::default())
        .await
        .expect("grant");
    ledger
        .consume(&t, key("c1"), amt(40))
        .await
        .expect("consume");
    assert!(
        all_events(&ledger, &t).await.is_empty(),
        "100 -> 60 crosses nothing"
    );
    let c2 = ledger
        .consume(&t, key("c2"), amt(15))
        .await
        .expect("consume");
    // A replay of the crossing request emits nothing more.
    ledger
        .consume(&t, key("c2"), amt(15))
        .await
        .expect("replay");
    let events = all_events(&ledger, &t).await;
    assert_eq!(
        events
            .iter()
            .map(|e| (e.seq, e.threshold, e.entry, e.available))
            .collect::<Vec<_>>(),
        [(EventSeq::new(1), amt(50), c2.entry, amt(45))],
        "60 -> 45 crosses 50, once"
    );
    ledger
        .consume(&t, key("c3"), amt(5))
        .await
        .expect("consume");
    assert_eq!(
        all_events(&ledger, &t).await.len(),
        1,
        "45 -> 40 stays below 50"
    );
    // A refund re-arms 50 without an event; the next consume crosses both at once.
    ledger
        .refund(&t, key("r"), c2.entry, amt(15))
        .await
        .expect("refund");
    ledger
        .consume(&t, key("c4"), amt(50))
        .await
        .expect("consume");
    let events = all_events(&ledger, &t).await;
    assert_eq!(
        events.iter().map(|e| e.threshold).collect::<Vec<_>>(),
        [amt(50), amt(20), amt(50)],
        "55 -> 5 crosses 20 and 50, ascending"
    );
    // A refused batch (its second request overdraws) emits nothing.
    ledger
        .grant(&t, key("g2"), amt(60), GrantOptions::default())
        .await
        .expect("grant"); // 65: both re-armed
    let refused = ledger
        .batch(&[
            Request::new(t.clone(), key("b1"), Command::Consume { amount: amt(50) }),
            Request::new(
                t.clone(),
                key("b2"),
                Command::Consume { amount: amt(1_000) },
            ),
        ])
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(
        all_events(&ledger, &t).await.len(),
        3,
        "a refused batch emits nothing"
    );
    // A reserve lowers available: 65 -> 45 crosses 50; cancelling re-arms.
    let hold = ledger
        .reserve(&t, key("h"), amt(20), Duration::from_secs(5))
        .await
        .expect("reserve");
    ledger
        .cancel(&t, key("hc"), hold.hold)
        .await
        .expect("cancel");
    assert_eq!(all_events(&ledger, &t).await.len(), 4);
    // An expiry crosses (65 -> 25 crosses 50), applied by a read.
    ledger
        .grant(
            &t,
            key("g3"),
            amt(40),
            GrantOptions::default().expires_at(at(10)),
        )
        .await
        .expect("grant"); // 105
    ledger
        .consume(&t, key("c5"), amt(40))
        .await
        .expect("consume"); // 65, from the expiring lot
    clock.set_now(at(11));
    assert_eq!(
        ledger.balance(&t).await,
        Ok(bal(65, 0, 0)),
        "nothing left to expire"
    );
    ledger
        .grant(
            &t,
            key("g4"),
            amt(40),
            GrantOptions::default().expires_at(at(20)),
        )
        .await
        .expect("grant"); // 105
    clock.set_now(at(21));
    assert_eq!(ledger.balance(&t).await, Ok(bal(65, 0, 0)));
    ledger
        .consume(&t, key("c6"), amt(30))
        .await
        .expect("consume"); // 35: crosses 50
    // A void crosses 20.
    let lot = ledger
        .grant(&t, key("g5"), amt(10), GrantOptions::default())
        .await
        .expect("grant"); // 45
    ledger
        .consume(&t, key("c7"), amt(20))
        .await
        .expect("consume"); // 25
    ledger
        .void_lot(&t, key("v"), lot_of(&lot), reason("test"))
        .await
        .expect("void"); // 15: crosses 20
    ledger.sweep_step(100).await.expect("sweep");
    events_match_the_journal(&ledger, &t, &thresholds).await;
    let events = all_events(&ledger, &t).await;
    assert_eq!(
        events.iter().map(|e| e.threshold).collect::<Vec<_>>(),
        [amt(50), amt(20), amt(50), amt(50), amt(50), amt(20)],
        "{events:?}"
    );
    // A tenant without thresholds never has events.
    let (ledger2, _, plain) = {
        let clock = ManualClock::new(START);
        let l = Ledger::from_shared(Arc::clone(ledger.store()), Arc::new(clock.clone()));
        let p = tenant("plain");
        l.create_tenant(&p, TenantSettings::default())
            .await
            .expect("create");
        (l, clock, p)
    };
    ledger2
        .grant(&plain, key("g"), amt(10), GrantOptions::default())
        .await
        .expect("grant");
    ledger2
        .consume(&plain, key("c"), amt(10))
        .await
        .expect("consume");
    assert!(all_events(&ledger2, &plain).await.is_empty());
    assert_eq!(
        ledger.events(&tenant("nobody"), None, 10).await,
        Err(LedgerError::UnknownTenant(tenant("nobody")))
    );
    conserved(&ledger, Some(&t)).await;
}

/// Event pages: `limit` events after `after`, `next` while more remain, clamped limits,
/// an empty last page past the end.
pub async fn events_are_cursor_paged(store: Arc<dyn LedgerStore>) {
    let (ledger, _, t) = with_thresholds(store, "paged", &[10]).await;
    // Seven downward crossings of 10, each re-armed by a grant.
    ledger
        .grant(&t, key("g"), amt(10), GrantOptions::default())
        .await
        .expect("grant"); // 10
    for i in 0..7 {
        ledger
            .consume(&t, key(&format!("c{i}")), amt(5))
            .await
            .expect("consume"); // 5: crosses
        ledger
            .grant(&t, key(&format!("g{i}")), amt(5), GrantOptions::default())
            .await
            .expect("grant"); // 10: re-armed
    }
    events_match_the_journal(&ledger, &t, &[10]).await;
    let all = all_events(&ledger, &t).await;
    assert_eq!(all.len(), 7, "{all:?}");
    let n = all.len();
    let mut after = None;
    let mut seen = Vec::new();
    for _ in 0..n {
        let page = ledger.events(&t, after, 3).await.expect("page");
        assert!(page.events.len() <= 3);
        seen.extend(page.events.iter().cloned());
        match page.next {
            Some(next) => {
                assert_eq!(Some(next), page.events.last().map(|e| e.seq));
                after = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(seen, all, "pages of 3 give every event once, in order");
    let one = ledger.events(&t, None, 0).await.expect("page");
    assert_eq!(one.events.len(), 1, "a limit of 0 is clamped to 1");
    assert_eq!(one.next, Some(EventSeq::new(1)));
    let last = all.last().map(|e| e.seq);
    let tail = ledger.events(&t, last, 10).await.expect("page");
    assert_eq!((tail.events.len(), tail.next), (0, None));
    let mid = ledger
        .events(&t, Some(EventSeq::new(2)), 1_000)
        .await
        .expect("page");
    assert_eq!(mid.events.as_slice(), &all[2..]);
    assert_eq!(mid.next, None);
}

/// A sink that records what it takes and fails while told to.
#[derive(Default)]
struct RecordingSink {
    taken: std::sync::Mutex<Vec<BalanceEvent>>,
    /// Fail this many more calls.
    failures: std::sync::atomic::AtomicU32,
    calls: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl EventSink for RecordingSink {
    async fn deliver(&self, events: &[BalanceEvent]) -> Result<(), EventSinkError> {
        use std::sync::atomic::Ordering;
        self.calls.fetch_add(1, Ordering::SeqCst);
        let failing = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(EventSinkError::new("receiver down"));
        }
        self.taken
            .lock()
            .expect("sink lock")
            .extend_from_slice(events);
        Ok(())
    }
}

/// The dispatcher: hands pending events to the sink in order, in batches, after the stored
/// cursor; a failing sink moves nothing and the next call offers the same events again; a
/// failure after some batches keeps those delivered; the cursor never moves backward or past
/// the last event; tenants with pending events are listed.
pub async fn dispatcher_delivers_in_order_and_redelivers(store: Arc<dyn LedgerStore>) {
    use std::sync::atomic::Ordering;
    let (ledger, _, t) = with_thresholds(store, "dispatch", &[10, 20, 30, 40, 50]).await;
    let quiet = tenant("quiet");
    ledger
        .create_tenant(&quiet, TenantSettings::default())
        .await
        .expect("create");
    let dispatcher = EventDispatcher::new(2, 10);
    let sink = RecordingSink::default();
    let nothing = ledger
        .deliver_events(&dispatcher, &t, &sink)
        .await
        .expect("deliver");
    assert_eq!(nothing, DeliveryReport::default(), "nothing pending");
    assert_eq!(
        sink.calls.load(Ordering::SeqCst),
        0,
        "an empty batch is never sent"
    );
    ledger
        .grant(&t, key("g"), amt(60), GrantOptions::default())
        .await
        .expect("grant");
    ledger
        .consume(&t, key("c"), amt(55))
        .await
        .expect("consume"); // 5 events
    let store = Arc::clone(ledger.store());
    assert_eq!(
        store.tenants_with_pending_events(None, 10).await,
        Ok(vec![t.clone()])
    );
    // The sink fails: nothing is delivered, the cursor stays.
    sink.failures.store(1, Ordering::SeqCst);
    let failed = ledger
        .deliver_events(&dispatcher, &t, &sink)
        .await
        .expect("deliver");
    assert!(failed.failed.is_some() && failed.more, "{failed:?}");
    assert_eq!((failed.delivered, failed.cursor), (0, None));
    assert_eq!(store.event_cursor(&t).await, Ok(None));
    // Next call: everything, in batches of 2, in order.
    let done = ledger
        .deliver_events(&dispatcher, &t, &sink)
        .await
        .expect("deliver");
    assert_eq!(
        (done.delivered, done.cursor, done.failed.clone(), done.more),
        (5, Some(EventSeq::new(5)), None, false)
    );
    let taken: Vec<EventSeq> = sink
        .taken
        .lock()
        .expect("lock")
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(taken, (1..=5).map(EventSeq::new).collect::<Vec<_>>());
    assert_eq!(store.event_cursor(&t).await, Ok(Some(EventSeq::new(5))));
    assert_eq!(
        store.tenants_with_pending_events(None, 10).await,
        Ok(vec![])
    );
    // Nothing more to deliver.
    let again = ledger
        .deliver_events(&dispatcher, &t, &sink)
        .await
        .expect("deliver");
    assert_eq!((again.delivered, again.cursor), (0, Some(EventSeq::new(5))));
    // Five more events; the sink takes the first batch and fails the second.
    ledger
        .grant(&t, key("g2"), amt(55), GrantOptions::default())
        .await
        .expect("grant");
    ledger
        .consume(&t, key("c2"), amt(55))
        .await
        .expect("consume");
    let before = sink.calls.load(Ordering::SeqCst);
    let part = {
        struct FailSecond<'a>(&'a RecordingSink, std::sync::atomic::AtomicU32);
        #[async_trait::async_trait]
        impl EventSink for FailSecond<'_> {
            async fn deliver(&self, events: &[BalanceEvent]) -> Result<(), EventSinkError> {
                if self.1.fetch_add(1, Ordering::SeqCst) == 1 {
                    return Err(EventSinkError::new("timeout"));
                }
                self.0.deliver(events).await
            }
        }
        ledger
            .deliver_events(&dispatcher, &t, &FailSecond(&sink, 0.into()))
            .await
            .expect("deliver")
    };
    assert_eq!(
        (part.delivered, part.cursor, part.failed.is_some()),
        (2, Some(EventSeq::new(7)), true)
    );
    assert!(sink.calls.load(Ordering::SeqCst) > before);
    let rest = ledger
        .deliver_events(&dispatcher, &t, &sink)
        .await
        .expect("deliver");
    assert_eq!((rest.delivered, rest.cursor), (3, Some(EventSeq::new(10))));
    let taken: Vec<EventSeq> = sink
        .taken
        .lock()
        .expect("lock")
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(
        taken,
        (1..=10).map(EventSeq::new).collect::<Vec<_>>(),
        "in order, none lost or skipped"
    );
    let all = all_events(&ledger, &t).await;
    let taken = sink.taken.lock().expect("lock").clone();
    assert_eq!(taken, all);
    // The cursor never moves backward, nor past the last event.
    store
        .advance_event_cursor(&t, EventSeq::new(3))
        .await
        .expect("advance");
    assert_eq!(store.event_cursor(&t).await, Ok(Some(EventSeq::new(10))));
    store
        .advance_event_cursor(&quiet, EventSeq::new(3))
        .await
        .expect("advance");
    assert_eq!(
        store.event_cursor(&quiet).await,
        Ok(None),
        "no events: no cursor"
    );
    // A small page budget reports more.
    ledger
        .grant(&t, key("g3"), amt(55), GrantOptions::default())
        .await
        .expect("grant");
    ledger
        .consume(&t, key("c3"), amt(55))
        .await
        .expect("consume");
    let budget = ledger
        .deliver_events(&EventDispatcher::new(1, 2), &t, &sink)
        .await
        .expect("deliver");
    assert_eq!((budget.delivered, budget.more), (2, true));
    let pending = dispatcher
        .deliver_pending(&*store, &sink, 10)
        .await
        .expect("deliver pending");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].1.cursor, Some(EventSeq::new(15)));
    assert_eq!(
        store.event_cursor(&tenant("nobody")).await,
        Err(LedgerError::UnknownTenant(tenant("nobody")))
    );
}
