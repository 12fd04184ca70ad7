//! A GCRA rate limiter whose buckets live in Redis, shared by every replica (feature `redis`).
//!
//! One decision is one round trip: an `EVALSHA` of a small Lua script that reads the key's
//! TAT, applies the same GCRA step as [`RateLimiter`](super::RateLimiter) and
//! [`KeyedRateLimiter`](super::KeyedRateLimiter), and writes the new TAT back with a TTL, all
//! atomically on the server (`EVAL` once, if the server answers `NOSCRIPT`). When Redis
//! fails or answers later than the timeout, a local [`KeyedRateLimiter`](super::KeyedRateLimiter)
//! decides instead, and a [`CircuitBreaker`] around Redis stops asking a dead server: it
//! costs one failed call per open wait, not one per request.
//!
//! # Time
//!
//! By default the script reads the time from Redis (`TIME`, [`RedisTime::Server`]): every
//! replica's decisions are on one clock, so no clock skew between replicas can hand out
//! extra permits or refuse due ones. [`RedisTime::Caller`] passes the caller's
//! [`Clock::now`] instead (whole milliseconds): tests drive it with a manual clock, and it
//! is only right in production when every replica's wall clock is synchronised (a replica
//! whose clock runs `s` ahead sees every bucket `s` fuller than it is).
//!
//! The script works in microseconds (Lua numbers are doubles, exact up to 2⁵³ µs, about
//! 285 years since the Unix epoch), so the quota's interval is rounded up to a whole
//! microsecond: the limiter never grants more than the quota asks.

// A driver: it waits for Redis under a timeout (decision code stays in the script and in
// the local limiter).
#![allow(clippy::disallowed_methods)]

use std::fmt;
use std::time::Duration;

use metered_clock::{Clock, SystemClock};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{KeyedRateLimiter, Quota};
use crate::breaker::{BreakerConfig, CircuitBreaker, OpenWait};
use crate::error::ResilienceError;

/// The longest key prefix accepted, in bytes.
pub const REDIS_PREFIX_LEN_MAX: usize = 128;

/// The longest Redis timeout accepted.
pub const REDIS_TIMEOUT_MAX: Duration = Duration::from_secs(10);

/// The GCRA step, atomically on the server.
///
/// KEYS[1]: the bucket. ARGV: interval (µs), burst, permits requested, now (µs; empty: read
/// Redis `TIME`). Returns `{1, 0}` when granted, `{0, retry_after_us}` when not. The key's
/// TTL is its debt (the time until the bucket is full again) plus one second, so an idle
/// key vanishes once it carries no information (a missing key is a full bucket).
const SCRIPT: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local now
if ARGV[4] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[4])
end
local tat = tonumber(redis.call('GET', KEYS[1])) or 0
local tolerance = interval * burst
local next_tat = math.max(tat, now) + interval * n
if next_tat - now > tolerance then
  return {0, next_tat - tolerance - now}
end
local ttl_ms = math.floor((next_tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', ttl_ms)
return {1, 0}
";

/// Where the script's time comes from. See [`RedisRateLimiter`]'s *Time* section.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisTime {
    /// Redis's `TIME`: one clock for every replica (the default).
    #[default]
    Server,
    /// The limiter's [`Clock::now`], passed to the script: for tests with a manual clock,
    /// or replicas with synchronised clocks.
    Caller,
}

/// Which limiter made a decision: label metrics with [`as_str`](Self::as_str).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DecisionPath {
    /// The shared bucket in Redis.
    Redis,
    /// The local limiter, because Redis failed, timed out or its breaker is open.
    LocalFallback,
}

impl DecisionPath {
    /// `"redis"` or `"local_fallback"`: a bounded metric label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionPath::Redis => "redis",
            DecisionPath::LocalFallback => "local_fallback",
        }
    }
}

/// A decision and the limiter that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct Decision {
    /// Granted, or the same rejections as [`KeyedRateLimiter::try_acquire`].
    pub result: Result<(), ResilienceError>,
    /// Who decided.
    pub path: DecisionPath,
}

/// Builds a [`RedisRateLimiter`]. Made by [`RedisRateLimiter::builder`].
#[must_use]
pub struct RedisRateLimiterBuilder {
    url: String,
    quota: Quota,
    prefix: String,
    timeout: Duration,
    time: RedisTime,
    breaker: Option<BreakerConfig>,
    fallback_quota: Option<Quota>,
    fallback_keys_max: usize,
}

impl fmt::Debug for RedisRateLimiterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password.
        f.debug_struct("RedisRateLimiterBuilder")
            .field("quota", &self.quota)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("time", &self.time)
            .finish_non_exhaustive()
    }
}

impl RedisRateLimiterBuilder {
    /// The prefix of every key (`prefix` + the caller's key), so several limiters share one
    /// Redis. Default `"rl:"`; at most [`REDIS_PREFIX_LEN_MAX`] bytes.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a decision may wait for Redis before the local limiter decides (and the
    /// breaker counts a failure). Default 50 ms; at most [`REDIS_TIMEOUT_MAX`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Where the time comes from (default [`RedisTime::Server`]).
    pub fn time(mut self, time: RedisTime) -> Self {
        self.time = time;
        self
    }

    /// The breaker around Redis. Default: name `redis-limiter`, judged on the last 10 calls
    /// from 3 on, open at 50 % failures for 2 s, then one trial call.
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = Some(config);
        self
    }

    /// The local limiter's quota while Redis is out (default: the shared quota). Each
    /// replica enforces it alone, so with `n` replicas a tenant may get up to `n` times it:
    /// divide by the replica count to keep the total.
    pub fn fallback_quota(mut self, quota: Quota) -> Self {
        self.fallback_quota = Some(quota);
        self
    }

    /// Most keys the local fallback limiter tracks (default 100,000).
    pub fn fallback_keys_max(mut self, keys: usize) -> Self {
        self.fallback_keys_max = keys;
        self
    }

    /// Builds the limiter on the operating system's clock.
    ///
    /// # Errors
    ///
    /// As [`build_with_clock`](Self::build_with_clock).
    pub fn build(self) -> Result<RedisRateLimiter<SystemClock>, ResilienceError> {
        self.build_with_clock(SystemClock::new())
    }

    /// Builds the limiter; `clock` drives the breaker, the fallback limiter and, with
    /// [`RedisTime::Caller`], the script. It connects lazily: an unreachable Redis is not an
    /// error here (the fallback decides until it answers).
    ///
    /// # Errors
    ///
    /// [`ResilienceError::InvalidConfig`] for a URL that is not `redis://…` (or
    /// `unix://…`), an empty or over-long prefix, a zero or over-long timeout, zero
    /// fallback keys, or when called outside a Tokio runtime (`runtime`).
    pub fn build_with_clock<C: Clock + Clone>(
        self,
        clock: C,
    ) -> Result<RedisRateLimiter<C>, ResilienceError> {
        let invalid = |field, reason| ResilienceError::InvalidConfig { field, reason };
        if self.prefix.is_empty() || self.prefix.len() > REDIS_PREFIX_LEN_MAX {
            return Err(invalid("prefix", "must be 1 to 128 bytes"));
        }
        if self.timeout.is_zero() || self.timeout > REDIS_TIMEOUT_MAX {
            return Err(invalid("timeout", "must be between 1 ns and 10 s"));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(invalid("runtime", "must be built inside a Tokio runtime"));
        }
        let client = redis::Client::open(self.url.as_str())
            .map_err(|_| invalid("url", "must be a redis:// or unix:// URL"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(self.timeout);
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|_| invalid("url", "the Redis client refused it"))?;
        let breaker = match self.breaker {
            Some(c) => c,
            None => BreakerConfig::builder()
                .name("redis-limiter")
                .count_window(10)
                .minimum_calls(3)
                .failure_rate_threshold(50)
                .open_wait(OpenWait::Fixed(Duration::from_secs(2)))
                .half_open_calls(1)
                .build()?,
        };
        let fallback = KeyedRateLimiter::with_clock(
            self.fallback_quota.unwrap_or(self.quota),
            self.fallback_keys_max,
            clock.clone(),
        )?;
        Ok(RedisRateLimiter {
            connection,
            script: redis::Script::new(SCRIPT),
            prefix: self.prefix,
            quota: self.quota,
            interval_us: self.quota.interval_ns.div_ceil(1_000),
            timeout: self.timeout,
            time: self.time,
            breaker: CircuitBreaker::with_clock(breaker, clock.clone()),
            fallback,
            clock,
        })
    }
}

/// A GCRA limiter per key, shared through Redis, with a local fallback (`docs/resilience.md`).
///
/// One decision is one round trip: an `EVALSHA` of a small Lua script that reads the key's
/// TAT, applies the same GCRA step as [`KeyedRateLimiter`] and writes the new TAT back with
/// a TTL (its debt plus one second, so an idle key vanishes), atomically on the server
/// (`EVAL` once, if the server answers `NOSCRIPT`). Keys are the prefix followed by the
/// caller's key. When Redis fails or answers later than the timeout, a local
/// [`KeyedRateLimiter`] decides instead, and a [`CircuitBreaker`] around Redis stops asking
/// a dead server: it costs one failed call per open wait, not one per request.
/// [`decide`](Self::decide) says which path decided.
///
/// # Time
///
/// By default the script reads the time from Redis (`TIME`, [`RedisTime::Server`]): every
/// replica's decisions are on one clock, so clock skew between replicas can neither hand
/// out extra permits nor refuse due ones. [`RedisTime::Caller`] passes the limiter's
/// [`Clock::now`] instead (whole milliseconds): tests drive it with a manual clock; in
/// production it is only right when every replica's wall clock is synchronised. The script
/// counts microseconds, so the quota's interval is rounded up to a whole microsecond (the
/// limiter never grants more than the quota).
///
/// ```no_run
/// use resilience::{Quota, RedisRateLimiter};
///
/// # async fn f() -> Result<(), resilience::ResilienceError> {
/// let limiter = RedisRateLimiter::builder("redis://127.0.0.1:6379", Quota::per_second(100)?)
///     .prefix("credits:rl:")
///     .build()?;
/// let decision = limiter.decide("tenant-a", 1).await;
/// metrics::counter!("rate_limit_decisions_total", "path" => decision.path.as_str()).increment(1);
/// decision.result?; // RateLimited carries the retry-after
/// # Ok(()) }
/// ```
pub struct RedisRateLimiter<C = SystemClock> {
    connection: ConnectionManager,
    /// The GCRA script: `EVALSHA`, and `EVAL` once when the server answers `NOSCRIPT`
    /// (the `redis` crate's `Script` does the fallback).
    script: redis::Script,
    prefix: String,
    quota: Quota,
    interval_us: u64,
    timeout: Duration,
    time: RedisTime,
    breaker: CircuitBreaker<C>,
    fallback: KeyedRateLimiter<String, C>,
    clock: C,
}

impl<C: Clock> fmt::Debug for RedisRateLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("prefix", &self.prefix)
            .field("quota", &self.quota)
            .field("timeout", &self.timeout)
            .field("time", &self.time)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl RedisRateLimiter<SystemClock> {
    /// A builder for a limiter on the Redis at `url` (`redis://host:port/db`) giving every
    /// key `quota`.
    pub fn builder(url: impl Into<String>, quota: Quota) -> RedisRateLimiterBuilder {
        RedisRateLimiterBuilder {
            url: url.into(),
            quota,
            prefix: "rl:".to_owned(),
            timeout: Duration::from_millis(50),
            time: RedisTime::Server,
            breaker: None,
            fallback_quota: None,
            fallback_keys_max: 100_000,
        }
    }
}

enum Failure {
    Redis(redis::RedisError),
    Timeout,
    Reply,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Redis(e) => write!(f, "{e}"),
            Failure::Timeout => f.write_str("timed out"),
            Failure::Reply => f.write_str("unexpected script reply"),
        }
    }
}

impl<C: Clock> RedisRateLimiter<C> {
    /// The quota every key gets.
    #[must_use]
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// The breaker around Redis (its state says whether Redis is being asked).
    #[must_use]
    pub fn breaker(&self) -> &CircuitBreaker<C> {
        &self.breaker
    }

    /// Takes `n` permits for `key` now, or fails without waiting: the same contract as
    /// [`KeyedRateLimiter::try_acquire`], on the bucket shared through Redis (or the local
    /// fallback's). `n == 0` always succeeds.
    ///
    /// # Errors
    ///
    /// [`ResilienceError::RateLimited`] with the time until `key` has `n` permits,
    /// [`ResilienceError::InsufficientCapacity`] if `n` exceeds the burst, or (fallback
    /// only) [`ResilienceError::KeyCapacityExhausted`].
    pub async fn try_acquire(&self, key: &str, n: u32) -> Result<(), ResilienceError> {
        self.decide(key, n).await.result
    }

    /// Like [`try_acquire`](Self::try_acquire), also saying which limiter decided.
    pub async fn decide(&self, key: &str, n: u32) -> Decision {
        if n > self.quota.burst {
            return Decision {
                result: Err(ResilienceError::InsufficientCapacity {
                    requested: n,
                    burst: self.quota.burst,
                }),
                path: DecisionPath::Redis,
            };
        }
        let Ok(permit) = self.breaker.try_acquire() else {
            return self.fall_back(key, n);
        };
        match self.ask_redis(key, n).await {
            Ok(result) => {
                permit.record_success();
                Decision {
                    result,
                    path: DecisionPath::Redis,
                }
            }
            Err(failure) => {
                permit.record_failure();
                tracing::warn!(error = %failure, "Redis rate limiter failed: deciding locally");
                self.fall_back(key, n)
            }
        }
    }

    fn fall_back(&self, key: &str, n: u32) -> Decision {
        Decision {
            result: self.fallback.try_acquire(&key.to_owned(), n),
            path: DecisionPath::LocalFallback,
        }
    }

    async fn ask_redis(&self, key: &str, n: u32) -> Result<Result<(), ResilienceError>, Failure> {
        let now = match self.time {
            RedisTime::Server => String::new(),
            RedisTime::Caller => self
                .clock
                .now()
                .as_unix_millis()
                .saturating_mul(1_000)
                .to_string(),
        };
        let full_key = format!("{}{key}", self.prefix);
        let mut connection = self.connection.clone();
        let mut invocation = self.script.key(&full_key);
        invocation
            .arg(self.interval_us)
            .arg(self.quota.burst)
            .arg(n)
            .arg(&now);
        let call = invocation.invoke_async::<(i64, i64)>(&mut connection);
        let (granted, retry_us) = match tokio::time::timeout(self.timeout, call).await {
            Err(_) => return Err(Failure::Timeout),
            Ok(Err(e)) => return Err(Failure::Redis(e)),
            Ok(Ok(reply)) => reply,
        };
        match (granted, u64::try_from(retry_us)) {
            (1, _) => Ok(Ok(())),
            (0, Ok(us)) => Ok(Err(ResilienceError::RateLimited {
                retry_after: Duration::from_micros(us),
            })),
            _ => Err(Failure::Reply),
        }
    }
}
