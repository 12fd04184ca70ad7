//! Group commit: many concurrent requests, one SQL transaction and one commit
//! ([`PgLedgerStore::with_group_commit`]).

use std::sync::Arc;

#[cfg(doc)]
use credits_core::LedgerStore;
use credits_core::{LedgerError, Receipt, Request, StorageError};
use metered_clock::Timestamp;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::{PgError, PgLedgerStore};

/// The most requests one group may hold (the store's batch limit).
pub const GROUP_LEN_MAX: usize = credits_core::BATCH_LEN_MAX;

/// Settings of group commit ([`PgLedgerStore::with_group_commit`]).
///
/// ```
/// use credits_postgres::GroupCommitConfig;
/// let config = GroupCommitConfig::new(4, 256, 10_000)?;
/// assert_eq!(config.workers(), 4);
/// assert!(GroupCommitConfig::new(0, 256, 10_000).is_err());
/// assert!(GroupCommitConfig::new(4, 5_000, 10_000).is_err());
/// # Ok::<(), credits_postgres::PgError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupCommitConfig {
    workers: usize,
    group_max: usize,
    queue_max: usize,
}

impl Default for GroupCommitConfig {
    /// 4 workers (connections), groups of up to 256 requests, 65,536 queued requests.
    fn default() -> Self {
        GroupCommitConfig {
            workers: 4,
            group_max: 256,
            queue_max: 65_536,
        }
    }
}

impl GroupCommitConfig {
    /// `workers` concurrent transactions (1..=1,000), each applying up to `group_max`
    /// requests (1..=[`GROUP_LEN_MAX`]), with at most `queue_max` requests waiting
    /// (1..=16,777,216; callers wait for room beyond that).
    ///
    /// # Errors
    /// [`PgError::InvalidConfig`] naming the setting out of range.
    pub fn new(workers: usize, group_max: usize, queue_max: usize) -> Result<Self, PgError> {
        let bad = |field, reason: &str| {
            Err(PgError::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if !(1..=1_000).contains(&workers) {
            return bad("workers", "must be 1 to 1000");
        }
        if !(1..=GROUP_LEN_MAX).contains(&group_max) {
            return bad("group_max", "must be 1 to 1000");
        }
        if !(1..=16_777_216).contains(&queue_max) {
            return bad("queue_max", "must be 1 to 16777216");
        }
        Ok(GroupCommitConfig {
            workers,
            group_max,
            queue_max,
        })
    }

    /// Concurrent transactions.
    #[must_use]
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Most requests per transaction.
    #[must_use]
    pub fn group_max(&self) -> usize {
        self.group_max
    }
}

struct Job {
    request: Request,
    now: Timestamp,
    reply: oneshot::Sender<Result<Receipt, LedgerError>>,
}

/// The queue in front of a [`PgLedgerStore`] in group-commit mode
/// ([`PgLedgerStore::with_group_commit`]): concurrent [`apply`](LedgerStore::apply) calls
/// are queued, and each of `workers` tasks takes every request waiting (up to `group_max`)
/// and applies them with [`PgLedgerStore::apply_group`] — one SQL transaction, one commit,
/// one fsync. Each request keeps its own result; no request waits for a timer (a group is
/// whatever arrived while the previous one was committing).
#[derive(Clone, Debug)]
pub(crate) struct GroupQueue {
    queue: mpsc::Sender<Job>,
}

impl GroupQueue {
    /// Starts the workers over `store` (a store without a queue of its own). Must be called
    /// inside a Tokio runtime; the workers stop when the last clone of the queue is dropped.
    // The group-commit driver: its workers are the background tasks this mode consists of.
    #[allow(clippy::disallowed_methods)]
    pub(crate) fn start(store: &PgLedgerStore, config: GroupCommitConfig) -> Self {
        let (queue, rx) = mpsc::channel(config.queue_max);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..config.workers {
            tokio::spawn(worker(store.clone(), Arc::clone(&rx), config.group_max));
        }
        GroupQueue { queue }
    }

    /// Queues one request and waits for its group's commit.
    pub(crate) async fn apply(
        &self,
        request: &Request,
        now: Timestamp,
    ) -> Result<Receipt, LedgerError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job {
                request: request.clone(),
                now,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn worker(store: PgLedgerStore, rx: Arc<Mutex<mpsc::Receiver<Job>>>, group_max: usize) {
    loop {
        let mut jobs = Vec::with_capacity(group_max);
        {
            let mut rx = rx.lock().await;
            match rx.recv().await {
                Some(job) => jobs.push(job),
                None => return,
            }
            while jobs.len() < group_max {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        let now = jobs.iter().map(|j| j.now).max().unwrap_or_default();
        let (requests, replies): (Vec<Request>, Vec<_>) =
            jobs.into_iter().map(|j| (j.request, j.reply)).unzip();
        metrics::histogram!("credits_postgres_group_len").record(requests.len() as f64);
        match store.apply_group(&requests, now).await {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    // The caller may have gone away; its request was applied regardless.
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

fn stopped() -> LedgerError {
    LedgerError::Storage(StorageError::retryable("group commit workers stopped"))
}
