//! Recording concurrent histories on PostgreSQL: clients on their own OS threads (each with
//! its own runtime, store and connection), or on a multi-threaded runtime over stores in
//! group-commit mode.

use std::sync::Arc;

use credits_core::testing::{Bug, FaultKind, Faults, FaultyStore};
use credits_core::{Ledger, TenantSettings};
use credits_postgres::tokio_postgres::{self, NoTls};
use credits_postgres::{GroupCommitConfig, PgConfig, PgLedgerStore};
use metered_clock::{Clock, ManualClock};

use super::record::{Recording, Shared, client, final_reads};

/// What [`record_postgres`] runs.
#[derive(Clone, Debug)]
pub struct PgLinearizability {
    /// The server (`postgres://…`).
    pub url: String,
    /// Seeds the clients' choices (the interleaving is the machine's).
    pub seed: u64,
    /// How many histories to record (fresh tenants each).
    pub rounds: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Operations per client and round.
    pub ops_per_client: usize,
    /// Tenants per round (few: they are hot).
    pub tenants: usize,
    /// `false`: each client on its own OS thread with its own current-thread runtime,
    /// store and connection. `true`: the clients are tasks on one multi-threaded runtime,
    /// released together by a barrier, over two stores in group-commit mode.
    pub group_commit: bool,
    /// Every `faults_every`-th mutation of a client fails (before reaching the database on
    /// even clients, after it on odd ones), so it retries under the same key (0: never).
    pub faults_every: u32,
    /// A deliberate defect of every client's `FaultyStore` (`None` in a real check): what
    /// the checker must catch.
    pub bug: Option<Bug>,
}

impl PgLinearizability {
    /// 4 clients on their own threads, 12 operations each, on 2 tenants, 10 rounds, every
    /// sixth mutation of a client failing, no bug.
    #[must_use]
    pub fn new(url: impl Into<String>, seed: u64) -> Self {
        PgLinearizability {
            url: url.into(),
            seed,
            rounds: 10,
            clients: 4,
            ops_per_client: 12,
            tenants: 2,
            group_commit: false,
            faults_every: 6,
            bug: None,
        }
    }
}

fn store_for(
    inner: Arc<PgLedgerStore>,
    thread: usize,
    config: &PgLinearizability,
) -> FaultyStore<PgLedgerStore> {
    let store = FaultyStore::new(inner, faulty(thread, config.faults_every));
    match config.bug {
        Some(bug) => store.with_bug(bug),
        None => store,
    }
}

fn faulty(thread: usize, every: u32) -> Arc<Faults> {
    let faults = Arc::new(Faults::new());
    if every > 0 {
        let kind = if thread.is_multiple_of(2) {
            FaultKind::Before
        } else {
            FaultKind::After
        };
        faults.arm_every(every, kind);
    }
    faults
}

fn runtime_error(e: std::io::Error) -> String {
    format!("building a runtime: {e}")
}

/// Creates a private schema on `config.url`, records `config.rounds` histories in it (one
/// [`Recording`] each, ending with one [`final_reads`] per tenant) and drops the schema.
///
/// # Errors
/// The database cannot be reached or set up, or a client failed ([`client`]), as text.
pub fn record_postgres(config: &PgLinearizability) -> Result<Vec<Recording>, String> {
    let admin_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(runtime_error)?;
    let schema = format!("lin_{}_{:08x}", config.seed, rand::random::<u32>());
    let admin = admin_rt.block_on(async {
        let (admin, conn) = tokio_postgres::connect(&config.url, NoTls)
            .await
            .map_err(|e| format!("connecting to {}: {e}", config.url))?;
        // Drives the admin connection (tokio_postgres needs its connection task running).
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(conn);
        admin
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .map_err(|e| format!("creating schema {schema}: {e}"))?;
        Ok::<_, String>(admin)
    })?;
    let result = record_in(config, &schema, &admin_rt);
    let dropped = admin_rt.block_on(admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")));
    let recordings = result?;
    dropped.map_err(|e| format!("dropping schema {schema}: {e}"))?;
    Ok(recordings)
}

fn record_in(
    config: &PgLinearizability,
    schema: &str,
    admin_rt: &tokio::runtime::Runtime,
) -> Result<Vec<Recording>, String> {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(crate::START));
    let pg = |pool: usize| {
        PgConfig::builder(&config.url)
            .search_path(schema)
            .pool_max_size(pool)
            .application_name(format!("sim_{schema}"))
            .build()
            .map_err(|e| e.to_string())
    };
    let admin = admin_rt.block_on(async {
        let store =
            PgLedgerStore::connect(pg(2)?, Arc::clone(&clock)).map_err(|e| e.to_string())?;
        let _report = store
            .migrate()
            .await
            .map_err(|e| format!("migrating: {e}"))?;
        Ok::<_, String>(Ledger::from_shared(Arc::new(store), Arc::clone(&clock)))
    })?;
    let mut recordings = Vec::with_capacity(config.rounds);
    for round in 0..config.rounds {
        let shared = Arc::new(Shared::new(&format!("r{round}-"), config.tenants)?);
        admin_rt.block_on(async {
            for t in shared.tenants() {
                admin
                    .create_tenant(t, TenantSettings::default())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        })?;
        let seed = config.seed ^ (round as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let recording = if config.group_commit {
            round_group_commit(config, pg(4)?, &clock, &shared, seed)?
        } else {
            round_threads(config, &pg(1)?, &clock, &shared, seed)?
        };
        let mut recording = recording;
        recording
            .history
            .extend(admin_rt.block_on(final_reads(&admin, &shared))?);
        recordings.push(recording);
    }
    Ok(recordings)
}

/// Each client on its own OS thread, runtime, store and connection; all start together
/// once every connection is open.
fn round_threads(
    config: &PgLinearizability,
    pg: &PgConfig,
    clock: &Arc<dyn Clock>,
    shared: &Arc<Shared>,
    seed: u64,
) -> Result<Recording, String> {
    let barrier = Arc::new(std::sync::Barrier::new(config.clients));
    let handles: Vec<_> = (0..config.clients)
        .map(|thread| {
            let (pg, clock, shared, barrier) = (
                pg.clone(),
                Arc::clone(clock),
                Arc::clone(shared),
                Arc::clone(&barrier),
            );
            let (config, ops) = (config.clone(), config.ops_per_client);
            std::thread::spawn(move || -> Result<Recording, String> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(runtime_error)?;
                rt.block_on(async {
                    let store =
                        PgLedgerStore::connect(pg, Arc::clone(&clock)).map_err(|e| e.to_string());
                    // Open the connection before the start (a failure still meets the barrier).
                    let warm = match &store {
                        Ok(s) => Ledger::from_shared(Arc::new(s.clone()), Arc::clone(&clock))
                            .balance(&shared.tenants()[0])
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.clone()),
                    };
                    barrier.wait();
                    warm?;
                    let store = Arc::new(store?);
                    let ledger =
                        Ledger::from_shared(Arc::new(store_for(store, thread, &config)), clock);
                    client(&ledger, &shared, thread, seed, ops).await
                })
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
    Ok(all)
}

/// The clients as tasks on a two-worker runtime, over two stores in group-commit mode,
/// released together by a `tokio::sync::Barrier`.
fn round_group_commit(
    config: &PgLinearizability,
    pg: PgConfig,
    clock: &Arc<dyn Clock>,
    shared: &Arc<Shared>,
    seed: u64,
) -> Result<Recording, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(runtime_error)?;
    rt.block_on(async {
        let group = GroupCommitConfig::new(2, 64, 1_024).map_err(|e| e.to_string())?;
        let stores: Vec<Arc<PgLedgerStore>> = (0..2)
            .map(|_| {
                PgLedgerStore::connect(pg.clone(), Arc::clone(clock))
                    .map(|s| Arc::new(s.with_group_commit(group)))
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?;
        let barrier = Arc::new(tokio::sync::Barrier::new(config.clients));
        let tasks: Vec<_> = (0..config.clients)
            .map(|thread| {
                let ledger = Ledger::from_shared(
                    Arc::new(store_for(
                        Arc::clone(&stores[thread % stores.len()]),
                        thread,
                        config,
                    )),
                    Arc::clone(clock),
                );
                let (shared, barrier) = (Arc::clone(shared), Arc::clone(&barrier));
                let ops = config.ops_per_client;
                // The clients run in parallel on the runtime's workers (the point of the test).
                #[allow(clippy::disallowed_methods)]
                tokio::spawn(async move {
                    barrier.wait().await;
                    client(&ledger, &shared, thread, seed, ops).await
                })
            })
            .collect();
        let mut all = Recording::default();
        for t in tasks {
            all.extend(
                t.await
                    .map_err(|e| format!("a client task failed: {e}"))??,
            );
        }
        Ok(all)
    })
}
