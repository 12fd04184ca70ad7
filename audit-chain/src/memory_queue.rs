//! [`MemoryAuditQueue`]: the bounded in-memory [`AuditQueue`] (feature `tokio`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::entry::SealedEntry;
use crate::queue::AuditQueue;
use crate::{AuditError, StreamHead};

/// Queued entries at which a push wakes a waiting writer.
pub const WAKE_AT: usize = 128;

/// How long a writer woken by the first entry waits for [`WAKE_AT`] entries before it takes
/// what is there.
pub const IDLE_POLL: std::time::Duration = std::time::Duration::from_millis(1);

// What the writer waits for (the `waiting` field).
const NOT_WAITING: u8 = 0;
const FOR_ANY: u8 = 1;
const FOR_MANY: u8 = 2;

/// The in-memory [`AuditQueue`], bounded: what an embedded ledger seals goes here.
///
/// An idle writer is woken by the first entry and then waits until [`WAKE_AT`] entries are
/// queued or [`IDLE_POLL`] has passed: a store pushing one entry at a time does not pay a
/// thread wake-up (a system call) per entry, and an entry waits about a millisecond at most
/// before the writer takes it.
///
/// [`push_all`](Self::push_all) is synchronous and never waits, so a store can call it
/// inside its critical section; when the backlog would pass the bound the whole push is
/// refused ([`AuditError::Backpressure`]) and the store refuses the change.
///
/// ```
/// use audit_chain::*;
/// use metered_clock::Timestamp;
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let queue = MemoryAuditQueue::new(2);
/// let keyring = Keyring::new(HmacKey::new(1, [1; 32])?);
/// let mut chain = StreamChain::new("s");
/// let mut seal = || chain.seal(&keyring, &MaskingPolicy::standard(),
///                              AuditEntry::new("s", "e", "a", Timestamp::EPOCH));
/// let three = vec![seal()?, seal()?, seal()?];
/// assert!(matches!(queue.push_all(three), Err(AuditError::Backpressure { capacity: 2 })));
/// assert_eq!(queue.backlog().await?, 0); // all or nothing
/// # Ok::<(), AuditError>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct MemoryAuditQueue {
    // Two halves, so stores pushing and the writer taking rarely meet on one lock: stores
    // push onto `incoming`; `peek` moves the oldest of them onto `taken` (pointers only)
    // and hands out clones from there; `remove` drops them from `taken`. Every entry of
    // `taken` is older than every entry of `incoming`. Lock order: `taken`, then
    // `incoming`. Entries are shared, so handing them out copies pointers, not entries.
    incoming: Mutex<VecDeque<Arc<SealedEntry>>>,
    taken: Mutex<VecDeque<Arc<SealedEntry>>>,
    /// Entries in both halves (read without a lock by `has_room` and `len`).
    len: AtomicUsize,
    capacity: usize,
    notify: Notify,
    /// What the writer waiting in `changed` waits for: the first entry, or `WAKE_AT`
    /// entries; a push wakes it only then (a wake-up per push would cost the pushing thread
    /// a system call).
    waiting: AtomicU8,
}

impl MemoryAuditQueue {
    /// A queue holding at most `capacity` entries (at least 1).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        MemoryAuditQueue {
            incoming: Mutex::new(VecDeque::new()),
            taken: Mutex::new(VecDeque::new()),
            len: AtomicUsize::new(0),
            capacity: capacity.max(1),
            notify: Notify::new(),
            waiting: AtomicU8::new(NOT_WAITING),
        }
    }

    /// The most entries it holds.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of queued entries (synchronous form of [`AuditQueue::backlog`]).
    #[must_use]
    pub fn len(&self) -> usize {
        self.len.load(Ordering::SeqCst)
    }

    /// Whether nothing is queued.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues every entry of `entries`, in order, or none of them. Never waits.
    ///
    /// # Errors
    /// [`AuditError::Backpressure`] if they do not all fit (nothing is queued).
    pub fn push_all(&self, entries: Vec<SealedEntry>) -> Result<(), AuditError> {
        if entries.is_empty() {
            return Ok(());
        }
        let n = entries.len();
        let mut incoming = self.incoming.lock();
        // Only pushes (under this lock) make the queue longer, so the room seen here can
        // only grow before the entries are in.
        if self.len() + n > self.capacity {
            return Err(AuditError::Backpressure {
                capacity: self.capacity,
            });
        }
        incoming.extend(entries.into_iter().map(Arc::new));
        let len = self.len.fetch_add(n, Ordering::SeqCst) + n;
        self.wake(len);
        Ok(())
    }

    /// Queues `entries` without checking the capacity: for a store that checked
    /// [`has_room`](Self::has_room) before applying a change and must not fail after it.
    /// The queue may pass its capacity by the entries of the changes in flight.
    pub fn push_committed(&self, entries: Vec<SealedEntry>) {
        if entries.is_empty() {
            return;
        }
        let n = entries.len();
        let mut incoming = self.incoming.lock();
        incoming.extend(entries.into_iter().map(Arc::new));
        let len = self.len.fetch_add(n, Ordering::SeqCst) + n;
        self.wake(len);
    }

    /// Wakes the writer waiting in `changed`, if it waits for what is now queued (called
    /// under the lock, after a push).
    fn wake(&self, queued: usize) {
        let want = self.waiting.load(Ordering::SeqCst);
        let worth = match want {
            FOR_ANY => true,
            FOR_MANY => queued >= WAKE_AT,
            _ => false,
        };
        if worth
            && self
                .waiting
                .compare_exchange(want, NOT_WAITING, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.notify.notify_one();
        }
    }

    /// Whether the backlog is below the capacity (a store refuses changes when it is not).
    #[must_use]
    pub fn has_room(&self) -> bool {
        self.len() < self.capacity
    }

    /// The head `stream` has once every queued entry is integrated, given its head in
    /// the log: where a store that lost its own copy of the head resumes sealing.
    #[must_use]
    pub fn head_after(&self, stream: &str, mut head: StreamHead) -> StreamHead {
        let taken = self.taken.lock();
        let incoming = self.incoming.lock();
        for e in taken.iter().chain(incoming.iter()) {
            if e.stream() == stream && e.seq >= head.next_seq {
                head = StreamHead {
                    next_seq: e.seq.saturating_add(1),
                    last_hash: e.entry_hash,
                };
            }
        }
        head
    }
}

#[async_trait]
impl AuditQueue for MemoryAuditQueue {
    async fn peek(&self, limit: usize) -> Result<Vec<Arc<SealedEntry>>, AuditError> {
        let mut taken = self.taken.lock();
        if taken.len() < limit {
            let mut incoming = self.incoming.lock();
            let more = (limit - taken.len()).min(incoming.len());
            taken.extend(incoming.drain(..more));
        }
        metrics::gauge!("audit_chain_backlog").set(self.len() as f64);
        Ok(taken.iter().take(limit).cloned().collect())
    }

    async fn remove(&self, entries: &[Arc<SealedEntry>]) -> Result<(), AuditError> {
        let same = |a: &SealedEntry, b: &SealedEntry| a.seq == b.seq && a.stream() == b.stream();
        let mut taken = self.taken.lock();
        let before = taken.len();
        // The usual case: the oldest entries, in order.
        let mut front = 0;
        while front < entries.len()
            && taken
                .front()
                .is_some_and(|e| Arc::ptr_eq(e, &entries[front]) || same(e, &entries[front]))
        {
            taken.pop_front();
            front += 1;
        }
        let mut removed = before - taken.len();
        if front < entries.len() {
            let rest: std::collections::HashSet<(&str, u64)> = entries[front..]
                .iter()
                .map(|e| (e.stream(), e.seq))
                .collect();
            let before = taken.len();
            taken.retain(|e| !rest.contains(&(e.stream(), e.seq)));
            removed += before - taken.len();
            let mut incoming = self.incoming.lock();
            let before = incoming.len();
            incoming.retain(|e| !rest.contains(&(e.stream(), e.seq)));
            removed += before - incoming.len();
        }
        let len = self.len.fetch_sub(removed, Ordering::SeqCst) - removed;
        metrics::gauge!("audit_chain_backlog").set(len as f64);
        Ok(())
    }

    async fn backlog(&self) -> Result<u64, AuditError> {
        Ok(self.len() as u64)
    }

    /// Returns once an entry is queued and then [`WAKE_AT`] entries are, or [`IDLE_POLL`]
    /// has passed.
    // The writer's wait (a driver).
    #[allow(clippy::disallowed_methods)]
    async fn changed(&self) {
        {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a push after the check is not missed.
            notified.as_mut().enable();
            self.waiting.store(FOR_ANY, Ordering::SeqCst);
            if self.is_empty() {
                notified.await;
            }
        }
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        self.waiting.store(FOR_MANY, Ordering::SeqCst);
        if self.len() < WAKE_AT {
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep(IDLE_POLL) => {}
            }
        }
        self.waiting.store(NOT_WAITING, Ordering::SeqCst);
    }
}
