//! The shared state behind every handler.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use audit_chain::{AuditError, AuditQueue, AuditSink, AuditWriter, Checkpoint, Keyring, Sequencer};
use axum::http::{HeaderMap, StatusCode};
use credits_core::{Ledger, LedgerError, TenantId};
use metered_clock::Clock;
use metrics_exporter_prometheus::PrometheusHandle;
use parking_lot::RwLock;
use resilience::{
    CallError, CallOutcome, CircuitBreaker, KeyedRateLimiter, RedisRateLimiter, ResilienceError,
};

use crate::auth::{Authenticator, Caller};
use crate::error::ApiError;
use crate::registry::{Experiments, Rollouts};

/// Which ledger backend is in use.
#[derive(Clone, Debug)]
pub(crate) enum Backend {
    /// In process memory.
    Memory,
    /// PostgreSQL.
    Postgres(Arc<credits_postgres::PgLedgerStore>),
}

impl Backend {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Whether the backend answers (a `SELECT 1` for PostgreSQL).
    pub(crate) async fn ping(&self) -> Result<(), String> {
        match self {
            Backend::Memory => Ok(()),
            Backend::Postgres(store) => {
                let client = store.pool().get().await.map_err(|e| e.to_string())?;
                client
                    .simple_query("SELECT 1")
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// The audit log pieces the audit endpoints read. Every replica can answer from the sink;
/// only the one leading the log (always, in memory) holds the writer that integrates it.
#[derive(Debug)]
pub(crate) struct AuditState {
    /// The log (a memory or file sink, or PostgreSQL's).
    pub(crate) sink: Arc<dyn AuditSink>,
    /// Committed entries not yet in the log.
    pub(crate) queue: Arc<dyn AuditQueue>,
    pub(crate) keyring: Arc<Keyring>,
    /// The writer integrating the log, while this process leads it.
    pub(crate) leader: Arc<RwLock<Option<AuditWriter>>>,
    /// Leaf hashes of the log read back from the sink (only ever extended), for proofs.
    pub(crate) mirror: tokio::sync::Mutex<Sequencer>,
}

impl AuditState {
    /// The writer, if this process leads the log.
    pub(crate) fn writer(&self) -> Option<AuditWriter> {
        self.leader.read().clone()
    }

    /// The latest checkpoint: the leader's, or the last one stored with the log.
    pub(crate) async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, AuditError> {
        if let Some(cp) = self.writer().and_then(|w| w.latest_checkpoint()) {
            return Ok(Some(cp));
        }
        match self.sink.load_checkpoint().await? {
            Some(note) => Ok(Some(Checkpoint::parse_note_unverified(&note)?)),
            None => Ok(None),
        }
    }

    /// The mirror, extended to at least `size` entries from the sink (replayed by the
    /// same `Sequencer` the writer rebuilds its tree with).
    pub(crate) async fn tree(
        &self,
        size: u64,
    ) -> Result<tokio::sync::MutexGuard<'_, Sequencer>, AuditError> {
        let mut mirror = self.mirror.lock().await;
        while mirror.size() < size {
            let chunk = self.sink.read(mirror.size(), 4096).await?;
            if chunk.is_empty() {
                break;
            }
            for r in &chunk {
                mirror.replay(r)?;
            }
        }
        Ok(mirror)
    }
}

/// The per-tenant rate limiter: per replica, or shared through Redis (`CREDITS_REDIS_URL`)
/// with the per-replica one as its fallback.
#[derive(Debug)]
pub(crate) enum TenantLimiter {
    /// Per replica.
    Local(KeyedRateLimiter<TenantId, Arc<dyn Clock>>),
    /// Shared through Redis.
    Redis(RedisRateLimiter<Arc<dyn Clock>>),
}

impl TenantLimiter {
    /// Takes one permit of `tenant`'s limit and counts the decision in
    /// `rate_limit_decisions_total` by `path` (`local`, `redis`, `local_fallback`: a bounded
    /// label) and `outcome` (`granted`, `limited`).
    pub(crate) async fn acquire(&self, tenant: &TenantId) -> Result<(), ResilienceError> {
        let (result, path) = match self {
            TenantLimiter::Local(l) => (l.try_acquire(tenant, 1), "local"),
            TenantLimiter::Redis(l) => {
                let d = l.decide(tenant.as_str(), 1).await;
                (d.result, d.path.as_str())
            }
        };
        let outcome = if result.is_ok() { "granted" } else { "limited" };
        metrics::counter!("rate_limit_decisions_total", "path" => path, "outcome" => outcome)
            .increment(1);
        result
    }
}

/// Everything a handler needs. Shared as `Arc<AppState>`.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) ledger: Ledger,
    /// The one recovery pass: due expiries and in-doubt transactions.
    pub(crate) recovery: credits_core::tx::TransactionManager,
    pub(crate) backend: Backend,
    pub(crate) breaker: CircuitBreaker<Arc<dyn Clock>>,
    pub(crate) limiter: TenantLimiter,
    /// Failed authentications per client address (`CREDITS_AUTH_FAILURE*`).
    pub(crate) auth_failures: KeyedRateLimiter<std::net::IpAddr, Arc<dyn Clock>>,
    pub(crate) auth: Authenticator,
    pub(crate) audit: AuditState,
    pub(crate) experiments: Experiments,
    pub(crate) rollouts: Rollouts,
    pub(crate) metrics: PrometheusHandle,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) request_timeout: Duration,
    /// Largest request body in bytes.
    pub(crate) body_limit_bytes: usize,
    /// Fault injection (tests only; off by default).
    pub(crate) faults: crate::config::FaultSettings,
}

fn classify<T>(result: &Result<T, LedgerError>) -> CallOutcome {
    match result {
        Err(e) if e.is_unavailable() => CallOutcome::Failure,
        _ => CallOutcome::Success,
    }
}

impl AppState {
    /// Authenticates the caller for `tenant`'s data and takes one permit of the tenant's
    /// rate limit.
    ///
    /// # Errors
    /// 401 without a valid token; 400 for a malformed tenant id; 403 when the token belongs
    /// to another tenant; 429 when the tenant is over its rate.
    pub(crate) async fn tenant_access(
        &self,
        headers: &HeaderMap,
        tenant: &str,
    ) -> Result<TenantId, ApiError> {
        let caller = self.auth.caller(headers)?;
        let tenant = TenantId::new(tenant)?;
        match caller {
            Caller::Admin => {}
            Caller::Tenant(own) if own == tenant => {}
            Caller::Tenant(_) => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "this token is not valid for this tenant",
                ));
            }
        }
        self.limiter.acquire(&tenant).await?;
        Ok(tenant)
    }

    /// Runs a ledger call through the circuit breaker. Only availability failures (a
    /// connection, a timeout, a database that is down: [`LedgerError::is_unavailable`])
    /// count as failures; domain answers (insufficient credits, unknown hold, an amount
    /// past what the backend stores, …) and permanent storage errors count as successes,
    /// because the store answered.
    ///
    /// # Errors
    /// 503 `circuit_open` while the breaker rejects calls; the call's own error otherwise.
    pub(crate) async fn guarded<T>(
        &self,
        call: impl Future<Output = Result<T, LedgerError>>,
    ) -> Result<T, ApiError> {
        match self.breaker.call_with(classify, call).await {
            Ok(v) => Ok(v),
            Err(CallError::Rejected(e)) => Err(e.into()),
            Err(CallError::Inner(e)) => Err(e.into()),
        }
    }
}
