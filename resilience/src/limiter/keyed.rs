//! A rate limiter per key (tenant, API key, IP) with bounded memory.

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use hashbrown::DefaultHashBuilder;
use hashbrown::HashTable;
use metered_clock::{Clock, SystemClock};
use parking_lot::RwLock;

use super::{Quota, gcra, remaining, wait_for};
use crate::error::ResilienceError;
use crate::sync::atomic::{AtomicU64, Ordering};

const SHARDS_MAX: usize = 16;

type Shard<K> = CachePadded<RwLock<HashTable<(K, AtomicU64)>>>;

/// One GCRA bucket per key, in a sharded map holding at most `max_keys` keys.
///
/// A key whose bucket is full again (its TAT is in the past) is *idle*: forgetting it loses
/// nothing, because a new bucket for it would start full too. When a shard is at capacity,
/// inserting a key first evicts the shard's idle keys; if none is idle the request is
/// refused with [`ResilienceError::KeyCapacityExhausted`] rather than forgetting a key that is still
/// limited (which would hand that key a fresh burst). [`evict_idle`](Self::evict_idle)
/// sweeps every shard, e.g. from a periodic task.
///
/// Lookups of known keys take a shard's read lock and do one CAS; a new key takes the write
/// lock once.
///
/// ```
/// use std::time::Duration;
/// use metered_clock::{ManualClock, Timestamp};
/// use resilience::{KeyedRateLimiter, Quota};
///
/// let clock = ManualClock::new(Timestamp::EPOCH);
/// let limiter = KeyedRateLimiter::with_clock(Quota::per_second(2)?, 10_000, clock.clone())?;
/// limiter.try_acquire(&"tenant-a", 2)?;
/// let err = limiter.try_acquire(&"tenant-a", 1).unwrap_err();
/// assert_eq!(err.retry_after(), Some(Duration::from_millis(500))); // for Retry-After
/// limiter.try_acquire(&"tenant-b", 1)?; // other tenants are unaffected
/// # Ok::<(), resilience::ResilienceError>(())
/// ```
pub struct KeyedRateLimiter<K, C = SystemClock> {
    shards: Box<[Shard<K>]>,
    per_shard_max: usize,
    max_keys: usize,
    hasher: DefaultHashBuilder,
    quota: Quota,
    clock: C,
}

impl<K, C: fmt::Debug> fmt::Debug for KeyedRateLimiter<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimiter")
            .field("quota", &self.quota)
            .field("max_keys", &self.max_keys)
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> KeyedRateLimiter<K, SystemClock> {
    /// A keyed limiter on the operating system's clock.
    ///
    /// # Errors
    ///
    /// [`ResilienceError::InvalidConfig`] if `max_keys` is zero.
    pub fn new(quota: Quota, max_keys: usize) -> Result<Self, ResilienceError> {
        Self::with_clock(quota, max_keys, SystemClock::new())
    }
}

impl<K: Hash + Eq + Clone, C: Clock> KeyedRateLimiter<K, C> {
    /// A keyed limiter reading time from `clock`, holding at most `max_keys` keys. Keys are
    /// spread over up to 16 shards of `max_keys / shards` keys each, so a skewed spread can
    /// refuse a new key a little before `max_keys` keys are held.
    ///
    /// # Errors
    ///
    /// [`ResilienceError::InvalidConfig`] if `max_keys` is zero.
    pub fn with_clock(quota: Quota, max_keys: usize, clock: C) -> Result<Self, ResilienceError> {
        if max_keys == 0 {
            return Err(ResilienceError::InvalidConfig {
                field: "max_keys",
                reason: "must be at least 1",
            });
        }
        let shards = (max_keys / 64).clamp(1, SHARDS_MAX);
        Ok(KeyedRateLimiter {
            shards: (0..shards)
                .map(|_| CachePadded::new(RwLock::new(HashTable::new())))
                .collect(),
            per_shard_max: max_keys / shards,
            max_keys,
            hasher: DefaultHashBuilder::default(),
            quota,
            clock,
        })
    }

    /// The quota every key gets.
    #[must_use]
    pub fn quota(&self) -> Quota {
        self.quota
    }

    fn shard(&self, hash: u64) -> &Shard<K> {
        // High bits pick the shard; the table uses the low bits.
        let index = usize::try_from(hash >> 32).unwrap_or(0) % self.shards.len();
        &self.shards[index]
    }

    /// Takes `n` permits for `key` now, or fails without waiting.
    ///
    /// # Errors
    ///
    /// [`ResilienceError::RateLimited`] with the time until `key` has `n` permits (use it for an HTTP
    /// `Retry-After`), [`ResilienceError::InsufficientCapacity`] if `n` exceeds the burst, or
    /// [`ResilienceError::KeyCapacityExhausted`] if `key` is new and its shard is full of keys that
    /// are still limited.
    pub fn try_acquire(&self, key: &K, n: u32) -> Result<(), ResilienceError> {
        self.try_acquire_with_quota(key, n, self.quota)
    }

    /// Like [`try_acquire`](Self::try_acquire), with `quota` instead of the limiter's
    /// default: for tenants on different plans. A key's state (its TAT) does not depend on
    /// the quota, so a key's quota may change from one call to the next (a plan upgrade).
    ///
    /// ```
    /// use metered_clock::{ManualClock, Timestamp};
    /// use resilience::{KeyedRateLimiter, Quota};
    ///
    /// let clock = ManualClock::new(Timestamp::EPOCH);
    /// let limiter = KeyedRateLimiter::with_clock(Quota::per_second(1)?, 1_000, clock)?;
    /// let premium = Quota::per_second(100)?;
    /// for _ in 0..100 {
    ///     limiter.try_acquire_with_quota(&"big-tenant", 1, premium)?;
    /// }
    /// assert!(limiter.try_acquire_with_quota(&"big-tenant", 1, premium).is_err());
    /// # Ok::<(), resilience::ResilienceError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`try_acquire`](Self::try_acquire), against `quota`.
    pub fn try_acquire_with_quota(
        &self,
        key: &K,
        n: u32,
        quota: Quota,
    ) -> Result<(), ResilienceError> {
        let q = quota;
        if n > q.burst {
            return Err(ResilienceError::InsufficientCapacity {
                requested: n,
                burst: q.burst,
            });
        }
        let hash = self.hasher.hash_one(key);
        let shard = self.shard(hash);
        let now = self.clock.monotonic().as_nanos();
        {
            let table = shard.read();
            if let Some((_, tat)) = table.find(hash, |(k, _)| k == key) {
                return gcra(tat, now, q.interval_ns, q.burst, n);
            }
        }
        let mut table = shard.write();
        if let Some((_, tat)) = table.find(hash, |(k, _)| k == key) {
            return gcra(tat, now, q.interval_ns, q.burst, n);
        }
        if table.len() >= self.per_shard_max {
            let before = table.len();
            table.retain(|(_, tat)| tat.load(Ordering::Relaxed) > now);
            tracing::debug!(
                evicted = before - table.len(),
                "keyed rate limiter evicted idle keys"
            );
            if table.len() >= self.per_shard_max {
                return Err(ResilienceError::KeyCapacityExhausted {
                    max_keys: self.max_keys,
                });
            }
        }
        let tat = AtomicU64::new(0);
        let granted = gcra(&tat, now, q.interval_ns, q.burst, n);
        let hasher = &self.hasher;
        table.insert_unique(hash, (key.clone(), tat), |(k, _)| hasher.hash_one(k));
        granted
    }

    /// Permits `key` could take right now (the full burst for an unknown key).
    #[must_use]
    pub fn remaining(&self, key: &K) -> u32 {
        let q = self.quota;
        let now = self.clock.monotonic().as_nanos();
        self.with_tat(key, |tat| remaining(tat, now, q.interval_ns, q.burst))
            .unwrap_or(q.burst)
    }

    /// Time until `key` has `n` permits (zero if it has them now).
    #[must_use]
    pub fn time_until_available(&self, key: &K, n: u32) -> Duration {
        let q = self.quota;
        let now = self.clock.monotonic().as_nanos();
        self.with_tat(key, |tat| wait_for(tat, now, q.interval_ns, q.burst, n))
            .unwrap_or_else(|| wait_for(0, now, q.interval_ns, q.burst, n))
    }

    fn with_tat<T>(&self, key: &K, f: impl FnOnce(u64) -> T) -> Option<T> {
        let hash = self.hasher.hash_one(key);
        let table = self.shard(hash).read();
        table
            .find(hash, |(k, _)| k == key)
            .map(|(_, tat)| f(tat.load(Ordering::Acquire)))
    }

    /// Forgets every idle key (whose bucket is full again) and returns how many.
    pub fn evict_idle(&self) -> usize {
        let now = self.clock.monotonic().as_nanos();
        self.shards
            .iter()
            .map(|shard| {
                let mut table = shard.write();
                let before = table.len();
                table.retain(|(_, tat)| tat.load(Ordering::Relaxed) > now);
                before - table.len()
            })
            .sum()
    }

    /// Keys currently held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Whether no key is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
