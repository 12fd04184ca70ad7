//! Building the service ([`Service::builder`]), serving it ([`Service::start`]) and shutting
//! it down gracefully ([`RunningService::shutdown`]).

// An application: it spawns the server, the sweeper and upkeep, and sleeps between runs.
#![allow(clippy::disallowed_methods)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use audit_chain::{
    AuditLog, AuditQueue, AuditSink, AuditTrail, AuditWriter, FileSink, HmacKey, Keyring,
    MaskingPolicy, MemoryAuditQueue, MemorySink, Sequencer, WriterConfig,
};
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use credits_core::audit::{LedgerAudit, MemoryAudit};
use credits_core::{Ledger, LedgerStore, MemoryLedgerStore};
use credits_postgres::AuditSequencer;
use metered_clock::{Clock, SystemClock};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use parking_lot::RwLock;
use rand::RngCore;
use resilience::{
    BreakerConfig, CircuitBreaker, KeyedRateLimiter, OpenWait, Quota, RedisRateLimiter,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

use crate::auth::Authenticator;
use crate::config::{Config, LogFormat, decode_hex};
use crate::error::{ApiError, ServiceError};
use crate::json::body_too_large;
use crate::registry::{Experiments, Rollouts};
use crate::routes::{audit, checks, credits, experiments, lifecycle, ops, rollouts};
use crate::server::{self, ConnectionLimits};
use crate::state::{AppState, AuditState, Backend, TenantLimiter};
use canary::{MemoryRolloutStore, RolloutStore};

/// How often a replica that does not lead the audit log tries to, and a leader checks its
/// lock.
const SEQUENCER_RETRY: Duration = Duration::from_secs(1);

/// How often provider-driven rollouts are looked at (checks fall due on their own schedule;
/// this bounds how late one runs).
const ROLLOUT_TICK: Duration = Duration::from_millis(250);

/// Latency buckets (seconds) of every `*_seconds` histogram.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Installs the process-wide Prometheus recorder on first use and returns its handle. Every
/// service in the process shares it (the `metrics` facade has one global recorder).
#[must_use]
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let builder = builder
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed: /metrics will be empty");
            }
            handle
        })
        .clone()
}

/// Installs the global `tracing` subscriber (level from `RUST_LOG`, default `info`). Does
/// nothing if one is installed already.
pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

type StoreWrapper = Box<dyn FnOnce(Arc<dyn LedgerStore>) -> Arc<dyn LedgerStore> + Send>;

/// Builds a [`Service`]. Made by [`Service::builder`].
#[must_use]
pub struct ServiceBuilder {
    config: Config,
    clock: Option<Arc<dyn Clock>>,
    wrap_store: Option<StoreWrapper>,
}

impl std::fmt::Debug for ServiceBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBuilder")
            .field("config", &self.config)
            .field("clock", &self.clock)
            .field("wrap_store", &self.wrap_store.is_some())
            .finish()
    }
}

impl ServiceBuilder {
    /// The clock of the ledger, breaker, limiter, experiments and rollouts (default: the
    /// system clock). Tests pass a `ManualClock` to drive time.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Wraps the ledger store (memory or PostgreSQL) before the ledger uses it: for fault
    /// injection in tests, caching or extra instrumentation.
    pub fn wrap_store(
        mut self,
        wrap: impl FnOnce(Arc<dyn LedgerStore>) -> Arc<dyn LedgerStore> + Send + 'static,
    ) -> Self {
        self.wrap_store = Some(Box::new(wrap));
        self
    }

    /// Sets up the backends: the audit writer, the ledger store (connecting to PostgreSQL
    /// and running migrations when configured), the breaker and the limiter.
    ///
    /// # Errors
    /// [`ServiceError::Backend`] if the audit log or the database cannot be set up;
    /// [`ServiceError::Config`] for settings the primitives refuse.
    pub async fn build(self) -> Result<Service, ServiceError> {
        let config = self.config;
        let metrics = metrics_handle();
        let clock: Arc<dyn Clock> = self.clock.unwrap_or_else(|| Arc::new(SystemClock::new()));
        let backend_err =
            |what: &str, e: &dyn std::fmt::Display| ServiceError::Backend(format!("{what}: {e}"));

        let key_bytes = match &config.audit_hmac_key {
            Some(hex) => decode_hex(hex.expose()).unwrap_or_default(),
            None => {
                tracing::warn!(
                    "CREDITS_AUDIT_HMAC_KEY is not set: sealing the audit log with a random key \
                     (entries cannot be verified after a restart)"
                );
                let mut bytes = vec![0u8; 32];
                rand::rng().fill_bytes(&mut bytes);
                bytes
            }
        };
        let keyring = Arc::new(Keyring::new(HmacKey::new(1, &key_bytes).map_err(|e| {
            ServiceError::Config {
                var: "CREDITS_AUDIT_HMAC_KEY".to_owned(),
                reason: e.to_string(),
            }
        })?));
        // Batches of up to 1,024 entries: one sink transaction (PostgreSQL) or one fsync
        // (file) carries more entries when the log is busy.
        let writer_config = WriterConfig::builder(config.audit_origin.as_str())
            .buffer_max(65_536)
            .batch_max(1_024)
            .build()
            .map_err(|e| ServiceError::Config {
                var: "CREDITS_AUDIT_ORIGIN".to_owned(),
                reason: e.to_string(),
            })?;
        // Every ledger change seals its audit entries in its own atomic step, with the one
        // mapping every backend shares.
        let sealing = LedgerAudit::new(Arc::clone(&keyring), MaskingPolicy::standard());
        let leader: Arc<RwLock<Option<AuditWriter>>> = Arc::new(RwLock::new(None));

        let (store, backend, log) = match &config.database_url {
            Some(url) => {
                let mut pg_config = credits_postgres::PgConfig::builder(url.expose())
                    .application_name("credits-service")
                    .pool_max_size(config.database_pool_max)
                    .audit(sealing)
                    .audit_backlog_max(config.audit_backlog_max as u64);
                if let Some(schema) = &config.database_schema {
                    pg_config = pg_config.search_path(schema.as_str());
                }
                let pg_config = pg_config
                    .build()
                    .map_err(|e| backend_err("database configuration", &e))?;
                let store = credits_postgres::PgLedgerStore::connect(pg_config, Arc::clone(&clock))
                    .map_err(|e| backend_err("database", &e))?;
                if config.migrate
                    && let Some(schema) = &config.database_schema
                {
                    // The name was checked to be a plain lower-case identifier at start.
                    let client = store
                        .pool()
                        .get()
                        .await
                        .map_err(|e| backend_err("database", &e))?;
                    client
                        .simple_query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                        .await
                        .map_err(|e| backend_err("creating the schema", &e))?;
                }
                if config.migrate {
                    let report = store
                        .migrate()
                        .await
                        .map_err(|e| backend_err("migrations", &e))?;
                    tracing::info!(?report, "database migrations applied");
                }
                let backend = Backend::Postgres(Arc::new(store.clone()));
                // The log is the database's: every replica reads it, one at a time
                // integrates the queue (see `Service::start`), any replica writes trails.
                let log = BuiltLog {
                    sink: Arc::new(store.audit_sink()),
                    queue: Arc::new(store.audit_queue()),
                    trail: Arc::new(
                        store.audit_trail(Arc::clone(&keyring), MaskingPolicy::standard()),
                    ),
                    sequencer: Some(store.audit_sequencer(writer_config, Arc::clone(&clock), None)),
                };
                let store: Arc<dyn LedgerStore> = match config.database_group_commit_workers {
                    0 => Arc::new(store),
                    workers => {
                        // Concurrent single mutations share one transaction and one commit.
                        let group = credits_postgres::GroupCommitConfig::new(workers, 256, 65_536)
                            .map_err(|e| ServiceError::Config {
                                var: "CREDITS_DATABASE_GROUP_COMMIT_WORKERS".to_owned(),
                                reason: e.to_string(),
                            })?;
                        Arc::new(store.with_group_commit(group))
                    }
                };
                (store, backend, log)
            }
            None => {
                let sink: Arc<dyn AuditSink> = match &config.audit_dir {
                    Some(dir) => {
                        let (sink, recovery) =
                            FileSink::open(dir).map_err(|e| backend_err("audit directory", &e))?;
                        if recovery.torn_bytes_cut > 0 {
                            tracing::warn!(
                                bytes = recovery.torn_bytes_cut,
                                "audit log: cut an incomplete final frame left by a crash"
                            );
                        }
                        Arc::new(sink)
                    }
                    None => Arc::new(MemorySink::new()),
                };
                // The memory ledger seals its entries into this queue; the writer
                // integrates them (this process always leads its own log).
                let queue = Arc::new(MemoryAuditQueue::new(config.audit_backlog_max));
                let writer = AuditWriter::open_with_queue(
                    Arc::clone(&sink),
                    queue.clone(),
                    writer_config,
                    Arc::clone(&clock),
                    None,
                )
                .await
                .map_err(|e| backend_err("audit log", &e))?;
                *leader.write() = Some(writer.clone());
                let store = MemoryLedgerStore::builder()
                    .audit(MemoryAudit::new(sealing, queue.clone()).resuming_from(writer.clone()))
                    .build();
                let log = BuiltLog {
                    sink,
                    queue,
                    trail: Arc::new(AuditLog::new(
                        writer,
                        Keyring::clone(&keyring),
                        MaskingPolicy::standard(),
                    )),
                    sequencer: None,
                };
                (
                    Arc::new(store) as Arc<dyn LedgerStore>,
                    Backend::Memory,
                    log,
                )
            }
        };
        let store = match self.wrap_store {
            Some(wrap) => wrap(store),
            None => store,
        };
        let ledger = Ledger::from_shared(store, Arc::clone(&clock));
        // The one recovery pass (credits_core::tx::TransactionManager::recover): the ledger's
        // due expiries, and the transactions of the log the backend keeps (PostgreSQL's is
        // shared with every process using the database).
        let tx_log: Arc<dyn credits_core::tx::TxLog> = match &backend {
            Backend::Postgres(store) => Arc::new(store.tx_log()),
            Backend::Memory => Arc::new(credits_core::tx::MemoryTxLog::new()),
        };
        let recovery = credits_core::tx::TransactionManager::builder(tx_log, Arc::clone(&clock))
            .participant(Arc::new(credits_core::tx::LedgerHolds::new(
                "credits",
                ledger.clone(),
            )))
            .build();

        let b = config.breaker;
        let breaker_config = BreakerConfig::builder()
            .name("database")
            .failure_rate_threshold(b.failure_rate_percent)
            .count_window(b.window_calls)
            .minimum_calls(b.minimum_calls)
            .open_wait(OpenWait::Fixed(b.open_wait))
            .half_open_calls(b.half_open_calls)
            .metrics(true)
            .build()
            .map_err(|e| ServiceError::Config {
                var: "CREDITS_BREAKER_*".to_owned(),
                reason: e.to_string(),
            })?;
        let breaker = CircuitBreaker::with_clock(breaker_config, Arc::clone(&clock));
        let r = config.rate_limit;
        let limit_err = |e: resilience::ResilienceError| ServiceError::Config {
            var: "CREDITS_RATE_LIMIT_*".to_owned(),
            reason: e.to_string(),
        };
        let quota = Quota::per_second(r.per_second)
            .and_then(|q| q.with_burst(r.burst))
            .map_err(limit_err)?;
        let limiter = match &config.redis {
            None => TenantLimiter::Local(
                KeyedRateLimiter::with_clock(quota, r.tenants_max, Arc::clone(&clock))
                    .map_err(limit_err)?,
            ),
            // Redis's own clock decides (one clock for every replica); the service's clock
            // drives the breaker around Redis and the per-replica fallback.
            Some(redis) => TenantLimiter::Redis(
                RedisRateLimiter::builder(redis.url.expose(), quota)
                    .prefix(redis.key_prefix.as_str())
                    .timeout(redis.timeout)
                    .fallback_keys_max(r.tenants_max)
                    .build_with_clock(Arc::clone(&clock))
                    .map_err(|e| ServiceError::Config {
                        var: "CREDITS_REDIS_*".to_owned(),
                        reason: e.to_string(),
                    })?,
            ),
        };
        let a = config.auth_throttle;
        let auth_failures = Quota::per(a.window, a.failures_max)
            .and_then(|q| KeyedRateLimiter::with_clock(q, 100_000, Arc::clone(&clock)))
            .map_err(|e| ServiceError::Config {
                var: "CREDITS_AUTH_FAILURE*".to_owned(),
                reason: e.to_string(),
            })?;

        let BuiltLog {
            sink,
            queue,
            trail,
            sequencer,
        } = log;
        // Experiments and rollouts live in the database when there is one (every replica
        // sees the same, a restart loses nothing), in this process otherwise.
        let (experiments, rollout_store): (Experiments, Arc<dyn RolloutStore>) = match &backend {
            Backend::Postgres(store) => (
                Experiments::postgres(store.experiment_store(), config.experiments_per_tenant_max),
                Arc::new(
                    store
                        .audit_trail(Arc::clone(&keyring), MaskingPolicy::standard())
                        .rollout_store(),
                ),
            ),
            Backend::Memory => (
                Experiments::in_memory(config.experiments_per_tenant_max),
                Arc::new(MemoryRolloutStore::new(trail)),
            ),
        };
        let state = Arc::new(AppState {
            ledger,
            recovery,
            backend,
            breaker,
            limiter,
            auth_failures,
            auth: Authenticator::new(&config),
            audit: AuditState {
                sink,
                queue,
                keyring,
                leader,
                mirror: tokio::sync::Mutex::new(Sequencer::new()),
            },
            experiments,
            rollouts: Rollouts::new(rollout_store, Arc::clone(&clock)),
            metrics,
            clock,
            request_timeout: config.request_timeout,
            body_limit_bytes: config.body_limit_bytes,
            faults: config.faults,
        });
        if config.faults.is_active() {
            tracing::warn!(
                error_percent = config.faults.error_percent,
                latency_ms = u64::try_from(config.faults.latency.as_millis()).unwrap_or(u64::MAX),
                "FAULT INJECTION IS ON (CREDITS_FAULT_*): for tests only"
            );
        }
        if config.admin_token.is_none() {
            tracing::warn!("CREDITS_ADMIN_TOKEN is not set: operator endpoints refuse everyone");
        }
        if config.tenant_tokens.is_empty() {
            tracing::warn!("CREDITS_TENANT_TOKENS is not set: no tenant can authenticate");
        }
        Ok(Service {
            state,
            config,
            sequencer,
        })
    }
}

/// The audit log's parts for one backend.
struct BuiltLog {
    sink: Arc<dyn AuditSink>,
    queue: Arc<dyn AuditQueue>,
    trail: Arc<dyn AuditTrail>,
    /// PostgreSQL: the database log's sequencer, run by every replica, led by one.
    sequencer: Option<AuditSequencer>,
}

/// The credits service: built, not yet listening.
///
/// See the [crate documentation](crate) for an example.
#[derive(Debug)]
pub struct Service {
    state: Arc<AppState>,
    config: Config,
    sequencer: Option<AuditSequencer>,
}

impl Service {
    /// A builder for a service with `config`.
    pub fn builder(config: Config) -> ServiceBuilder {
        ServiceBuilder {
            config,
            clock: None,
            wrap_store: None,
        }
    }

    /// The axum router with every endpoint and middleware (for embedding the service in
    /// another server, or testing it without a socket).
    pub fn router(&self) -> Router {
        router(Arc::clone(&self.state), self.config.body_limit_bytes)
    }

    /// Runs the start-up recovery pass (expiries due while the service was down, in-doubt
    /// transactions), binds the configured address and starts serving, the periodic
    /// recovery pass and metrics upkeep.
    ///
    /// # Errors
    /// [`ServiceError::Bind`] if the address cannot be bound; storage errors of the recovery
    /// pass as [`ServiceError::Backend`].
    pub async fn start(self) -> Result<RunningService, ServiceError> {
        let state = self.state;
        let report = state
            .recovery
            .recover()
            .await
            .map_err(|e| ServiceError::Backend(format!("recovery pass: {e}")))?;
        tracing::debug!(?report, "start-up recovery done");
        // PostgreSQL: lead the database's audit log if no other replica does, and keep
        // trying while another does (it takes over when the leader dies).
        let (stop_sequencer, sequencer) = match self.sequencer {
            Some(sequencer) => {
                let first = match sequencer.try_lead().await {
                    Ok(l) => l,
                    Err(error) => {
                        tracing::warn!(%error, "could not try to lead the audit log");
                        None
                    }
                };
                let (stop, stopped) = oneshot::channel::<()>();
                let leader = Arc::clone(&state.audit.leader);
                if let Some(l) = &first {
                    *leader.write() = Some(l.writer().clone());
                }
                let task = tokio::spawn(async move {
                    sequencer
                        .run_from(
                            first,
                            SEQUENCER_RETRY,
                            move |writer| *leader.write() = writer,
                            async move {
                                let _ = stopped.await;
                            },
                        )
                        .await;
                });
                (Some(stop), Some(task))
            }
            None => (None, None),
        };
        let addr = self.config.listen_addr;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServiceError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| ServiceError::Bind { addr, source })?;
        let app = router(Arc::clone(&state), self.config.body_limit_bytes);
        let (tx, rx) = oneshot::channel::<()>();
        let limits = ConnectionLimits {
            header_read_timeout: self.config.header_read_timeout,
            idle_timeout: self.config.idle_timeout,
            connections_max: self.config.connections_max,
        };
        let server = tokio::spawn(server::serve(listener, app, limits, rx));
        let background = vec![
            tokio::spawn(sweeper(Arc::clone(&state), self.config.sweep_interval)),
            tokio::spawn(upkeep(state.metrics.clone())),
            tokio::spawn(rollout_ticker(Arc::clone(&state))),
        ];
        tracing::info!(addr = %local, backend = state.backend.name(), "credits service listening");
        Ok(RunningService {
            addr: local,
            stop_sequencer,
            sequencer,
            shutdown: Some(tx),
            server,
            background,
            state,
            grace: self.config.shutdown_grace,
        })
    }
}

/// A service that is listening. Stop it with [`shutdown`](Self::shutdown); dropping it
/// leaves the server running until the runtime stops.
#[derive(Debug)]
pub struct RunningService {
    addr: SocketAddr,
    /// Tells the audit sequencer (PostgreSQL) to resign, and its task.
    stop_sequencer: Option<oneshot::Sender<()>>,
    sequencer: Option<JoinHandle<()>>,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
    background: Vec<JoinHandle<()>>,
    state: Arc<AppState>,
    grace: Duration,
}

impl RunningService {
    /// The address it listens on (with the real port when configured with port 0).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `signal` completes (or the server fails), then shuts down gracefully.
    ///
    /// # Errors
    /// As [`shutdown`](Self::shutdown).
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<(), ServiceError> {
        tokio::select! {
            () = signal => {}
            result = &mut self.server => {
                return match result {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(ServiceError::Serve(e)),
                    Err(e) => Err(ServiceError::Serve(std::io::Error::other(e.to_string()))),
                };
            }
        }
        self.shutdown().await
    }

    /// Stops accepting connections, lets in-flight requests finish (at most the configured
    /// grace period; then remaining connections are dropped), stops the background tasks and
    /// writes out the audit log with a final checkpoint.
    ///
    /// # Errors
    /// [`ServiceError::Serve`] if the server had failed.
    pub async fn shutdown(mut self) -> Result<(), ServiceError> {
        tracing::info!("shutting down: finishing in-flight requests");
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        for task in &self.background {
            task.abort();
        }
        let result = match tokio::time::timeout(self.grace, &mut self.server).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(ServiceError::Serve(e)),
            Ok(Err(e)) => Err(ServiceError::Serve(std::io::Error::other(e.to_string()))),
            Err(_) => {
                tracing::warn!("grace period over: dropping the remaining connections");
                self.server.abort();
                Ok(())
            }
        };
        if let Some(stop) = self.stop_sequencer.take() {
            // A leader integrates what is queued, checkpoints and releases the lock.
            let _ = stop.send(());
            if let Some(task) = self.sequencer.take() {
                let _ = task.await;
            }
        } else if let Some(writer) = self.state.audit.writer() {
            match writer.close().await {
                Ok(cp) => tracing::info!(size = cp.size, "audit log closed"),
                Err(error) => tracing::warn!(%error, "audit log close failed"),
            }
        }
        result
    }
}

/// Completes on Ctrl-C or SIGTERM (what Kubernetes sends before killing a pod).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

async fn sweeper(state: Arc<AppState>, interval: Duration) {
    // The start-up recovery pass just ran: the next one is one interval away.
    loop {
        tokio::time::sleep(interval).await;
        // The one recovery pass: due expiries, in-doubt transactions, leftovers.
        match state.guarded(state.recovery.recover()).await {
            Ok(report) if report.in_doubt > 0 => {
                tracing::warn!(
                    in_doubt = report.in_doubt,
                    "transactions in doubt past their deadline"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(code = error.body.code, "recovery pass failed"),
        }
    }
}

/// Runs the provider-driven rollouts ([`Rollouts::observe_due`]) every
/// [`ROLLOUT_TICK`]: a check is late by at most that much.
async fn rollout_ticker(state: Arc<AppState>) {
    let mut ticker = tokio::time::interval(ROLLOUT_TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        state.rollouts.observe_due(&state.clock).await;
    }
}

async fn upkeep(handle: PrometheusHandle) {
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    loop {
        ticker.tick().await;
        handle.run_upkeep();
    }
}

fn router(state: Arc<AppState>, body_limit: usize) -> Router {
    Router::new()
        .merge(credits::router())
        .merge(lifecycle::router())
        .merge(checks::router())
        .merge(audit::router())
        .merge(experiments::router())
        .merge(rollouts::router())
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            inject_faults,
        ))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), gate))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), track))
        .merge(ops::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            throttle_failed_auth,
        ))
        .layer(CatchPanicLayer::custom(on_panic))
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
        ]))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept that method",
    )
}

fn on_panic(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a handler panicked");
    ApiError::internal("internal error").into_response()
}

/// Times out slow requests, then records `http_requests_total` and
/// `http_request_duration_seconds` by route template, method and status, and logs the
/// request (never its headers or body).
async fn track(
    State(state): State<Arc<AppState>>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let started = state.clock.monotonic();
    let method = request.method().clone();
    let route = matched.map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let response = match tokio::time::timeout(state.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took longer than the configured limit",
        )
        .retry_after(Some(Duration::from_secs(1)))
        .into_response(),
    };
    let elapsed = state.clock.monotonic().saturating_duration_since(started);
    let status = response.status().as_u16();
    let labels = [
        ("route", route.clone()),
        ("method", method.as_str().to_owned()),
        ("status", status.to_string()),
    ];
    metrics::histogram!("http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
    metrics::counter!("http_requests_total", &labels).increment(1);
    let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    if status >= 500 {
        tracing::warn!(%method, route, status, latency_us, "request failed");
    } else {
        tracing::debug!(%method, route, status, latency_us, "request");
    }
    response
}

/// Fault injection for tests (`CREDITS_FAULT_*`, off by default): delays an API request,
/// then answers a share of them with 500 `fault_injected` instead of handling them. Runs
/// inside `track`, so injected answers are counted in `http_requests_total` like real ones;
/// the operations endpoints (`/health`, `/metrics`, …) are never affected.
async fn inject_faults(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let faults = state.faults;
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    if faults.error_percent > 0 && rand::random_range(0..100u8) < faults.error_percent {
        return ApiError::internal_code(
            "fault_injected",
            "injected fault (CREDITS_FAULT_ERROR_PERCENT)",
        )
        .into_response();
    }
    next.run(request).await
}

/// Throttles failed authentication per client address: every 401 (a missing, malformed or
/// unknown token, on any endpoint) takes one permit of the address's
/// `CREDITS_AUTH_FAILURES_MAX` per `CREDITS_AUTH_FAILURE_WINDOW_MS`; past them the answer is
/// 429 `rate_limited` with `Retry-After` instead. A request with a valid token is never
/// counted or refused here, so a client behind the same address as a prober keeps working;
/// what stops guessing is the tokens' length (at least 16 bytes), what this stops is the
/// flood. Requests without a peer address ([`Service::router`] without a socket) pass.
async fn throttle_failed_auth(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let response = next.run(request).await;
    if response.status() != StatusCode::UNAUTHORIZED {
        return response;
    }
    let Some(peer) = peer else {
        return response;
    };
    match state.auth_failures.try_acquire(&peer, 1) {
        Ok(()) => response,
        Err(e) => {
            metrics::counter!("auth_failures_throttled_total").increment(1);
            // A full table of failing addresses throttles too, for one permit's time.
            let after = e
                .retry_after()
                .unwrap_or_else(|| state.auth_failures.quota().interval());
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many failed authentications from this address",
            )
            .retry_after(Some(after))
            .into_response()
        }
    }
}

/// Refuses what can be refused before the body is read: a declared `Content-Length` over the
/// body limit (413 `body_too_large` at once, not after waiting for the body) and a missing,
/// malformed or unknown bearer token (401), so that an unauthenticated request never has its
/// body read or parsed. Which caller may do what is each handler's decision.
async fn gate(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > state.body_limit_bytes as u64) {
        return body_too_large().into_response();
    }
    if let Err(e) = state.auth.caller(request.headers()) {
        return e.into_response();
    }
    next.run(request).await
}
