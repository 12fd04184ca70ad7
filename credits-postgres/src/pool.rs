//! The connection pool, the circuit breaker around it, and the retry loop for
//! serialization failures.

use std::future::Future;
use std::sync::Arc;

use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime,
};
use metered_clock::Clock;
use resilience::{CircuitBreaker, Retry, RetryDecision, TokioSleeper};
use tokio_postgres::NoTls;

use crate::{Isolation, PgConfig, PgError};

/// A pool with a breaker in front and a retry policy for serialization failures; shared by
/// the store, the transaction log and the audit sink.
pub(crate) struct Db {
    pub(crate) pool: Pool,
    pub(crate) isolation: Isolation,
    breaker: CircuitBreaker<Arc<dyn Clock>>,
    retry: Retry<TokioSleeper, Arc<dyn Clock>>,
    /// Retries since the pool was built (beside the `credits_postgres_retries_total`
    /// counter, for a caller that reads it without a metrics recorder).
    retries: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("Db")
            .field("pool_size", &status.size)
            .field("pool_available", &status.available)
            .field("pool_max_size", &status.max_size)
            .field("isolation", &self.isolation)
            .field("breaker", &self.breaker.state())
            .finish()
    }
}

/// Builds the pool: `max_size` connections, waits and creation bounded by the configured
/// timeouts, connections past their lifetime closed when they come back.
pub(crate) fn build_pool(config: &PgConfig) -> Result<Pool, PgError> {
    let manager = Manager::from_config(
        config.pg.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let lifetime = config.max_lifetime;
    Pool::builder(manager)
        .max_size(config.pool_max_size)
        .wait_timeout(Some(config.wait_timeout))
        .create_timeout(Some(config.connect_timeout))
        .recycle_timeout(Some(config.connect_timeout))
        .runtime(Runtime::Tokio1)
        .pre_recycle(Hook::sync_fn(move |_, metrics| {
            if metrics.age() > lifetime {
                Err(HookError::Message(
                    "connection past its max lifetime".into(),
                ))
            } else {
                Ok(())
            }
        }))
        .build()
        .map_err(|e| PgError::InvalidConfig {
            field: "pool",
            reason: e.to_string(),
        })
}

impl Db {
    pub(crate) fn new(pool: Pool, config: &PgConfig, clock: Arc<dyn Clock>) -> Self {
        Db {
            pool,
            isolation: config.isolation,
            breaker: CircuitBreaker::with_clock(config.breaker.clone(), Arc::clone(&clock)),
            retry: Retry::new(config.backoff, TokioSleeper, clock),
            retries: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Attempts retried since the pool was built.
    pub(crate) fn retries(&self) -> u64 {
        self.retries.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs `op` with a pooled connection, through the breaker, retrying serialization
    /// failures and deadlocks with jittered backoff. `op` must leave the connection outside
    /// any transaction when it returns (or the connection is dropped).
    pub(crate) async fn run<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T, PgError>
    where
        F: Fn(Object) -> Fut,
        Fut: Future<Output = Result<T, PgError>>,
    {
        let op = &op;
        let breaker = &self.breaker;
        let pool = &self.pool;
        let retries = &self.retries;
        self.retry
            .run(
                move |attempt| {
                    if attempt > 0 {
                        metrics::counter!("credits_postgres_retries_total", "op" => what)
                            .increment(1);
                        retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    async move {
                        let permit = breaker.try_acquire();
                        let permit = permit.map_err(|_| PgError::CircuitOpen)?;
                        let result = match pool.get().await {
                            Ok(conn) => op(conn).await,
                            Err(e) => Err(PgError::from(e)),
                        };
                        match &result {
                            // The database answered: it is healthy, whatever the answer.
                            Err(e) if e.is_retryable() && !e.is_serialization_failure() => {
                                permit.record_failure();
                            }
                            _ => permit.record_success(),
                        }
                        result
                    }
                },
                |e: &PgError| {
                    if e.is_serialization_failure() {
                        RetryDecision::Retry
                    } else {
                        RetryDecision::Stop
                    }
                },
            )
            .await
    }

    /// One pooled connection through the breaker, without retries (for callers that drive
    /// their own transactions).
    pub(crate) async fn get(&self) -> Result<Object, PgError> {
        let permit = self
            .breaker
            .try_acquire()
            .map_err(|_| PgError::CircuitOpen)?;
        match self.pool.get().await {
            Ok(c) => {
                permit.record_success();
                Ok(c)
            }
            Err(e) => {
                permit.record_failure();
                Err(e.into())
            }
        }
    }

    pub(crate) fn breaker_state(&self) -> resilience::State {
        self.breaker.state()
    }
}

/// A connection inside a transaction this crate opened with raw `BEGIN`. If it is dropped
/// before [`finish`](Self::finish) (a cancelled future, an early return), the connection is
/// taken out of the pool and closed, so the server rolls the transaction back and no pooled
/// connection is ever left inside a transaction.
pub(crate) struct TxConn {
    conn: Option<Object>,
}

impl TxConn {
    pub(crate) fn new(conn: Object) -> Self {
        TxConn { conn: Some(conn) }
    }

    pub(crate) fn client(&self) -> &Object {
        // Present until `finish` or drop consume it.
        self.conn.as_ref().unwrap_or_else(|| unreachable!())
    }

    /// The transaction ended (committed or rolled back): the connection may go back to the
    /// pool.
    pub(crate) fn finish(mut self) {
        drop(self.conn.take());
    }

    /// Ends the transaction with `ROLLBACK` (or discards the connection if that fails).
    pub(crate) async fn rollback(self) {
        // Also releases the session advisory locks taken in serializable mode.
        if self
            .client()
            .batch_execute("ROLLBACK; SELECT pg_advisory_unlock_all()")
            .await
            .is_ok()
        {
            self.finish();
        }
    }
}

impl Drop for TxConn {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Detach from the pool and close: the server aborts the open transaction.
            drop(Object::take(conn));
        }
    }
}
