//! The Redis-backed GCRA limiter against the real Redis at 127.0.0.1:6379: the same
//! decisions as the local limiter on a manual clock, one limit shared by two instances, and
//! the local fallback behind the breaker when Redis is refused or silent.
//!
//! Without a Redis these tests print `skipped`, unless `REDIS_REQUIRED=1` (CI) makes them fail.

// A driver of load and of a silent server: it spawns tasks and reports figures.
#![allow(clippy::disallowed_methods, clippy::print_stderr)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metered_clock::{Clock, ManualClock, SystemClock, Timestamp};
use proptest::prelude::*;
use resilience::{
    BreakerConfig, BreakerEvent, CallOutcome, DecisionPath, OpenWait, Quota, RateLimiter,
    RedisRateLimiter, RedisTime, ResilienceError, State,
};

const URL: &str = "redis://127.0.0.1:6379";

/// Whether Redis answers; panics if it does not and `REDIS_REQUIRED=1`.
fn redis_available(test: &str) -> bool {
    let up = std::net::TcpStream::connect_timeout(
        &"127.0.0.1:6379".parse().expect("address"),
        Duration::from_secs(1),
    )
    .is_ok();
    if !up {
        assert!(
            std::env::var("REDIS_REQUIRED").as_deref() != Ok("1"),
            "{test}: Redis at 127.0.0.1:6379 is unreachable and REDIS_REQUIRED=1"
        );
        eprintln!("{test}: skipped (no Redis at 127.0.0.1:6379)");
    }
    up
}

/// A key prefix no other test (or run) uses.
fn prefix(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "resilience-test:{}:{}:{}:{test}:",
        std::process::id(),
        SystemClock::new().now().as_unix_millis(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// For any quota (a whole number of microseconds between permits) and any sequence of
    /// (time step, cost) requests, the Redis limiter grants and refuses exactly as the local
    /// limiter, with the same retry-after.
    #[test]
    fn decisions_match_the_local_limiter(
        interval_us in 100u64..20_000,
        burst in 1u32..8,
        steps in prop::collection::vec((0u64..30, 0u32..10), 1..40),
    ) {
        if !redis_available("decisions_match_the_local_limiter") {
            return Ok(());
        }
        let rt = runtime();
        let clock = ManualClock::new(Timestamp::from_unix_millis(1_700_000_000_000));
        let quota = Quota::with_period(Duration::from_micros(interval_us))
            .and_then(|q| q.with_burst(burst))
            .expect("quota");
        let local = RateLimiter::with_clock(quota, clock.clone());
        let shared = rt.block_on(async {
            RedisRateLimiter::builder(URL, quota)
                .prefix(prefix("model"))
                .time(RedisTime::Caller)
                .timeout(Duration::from_secs(2))
                .build_with_clock(clock.clone())
        }).expect("limiter");
        for (step_ms, cost) in steps {
            clock.advance(Duration::from_millis(step_ms));
            let want = local.try_acquire(cost);
            let got = rt.block_on(shared.decide("tenant", cost));
            prop_assert_eq!(got.path, DecisionPath::Redis);
            prop_assert_eq!(got.result, want, "step {} ms, cost {}", step_ms, cost);
        }
    }
}

/// Two instances (two replicas) hammering one key for a bounded time admit the shared
/// limit, not twice it: burst + rate × elapsed, within 5 %.
#[test]
fn two_instances_share_one_limit() {
    if !redis_available("two_instances_share_one_limit") {
        return;
    }
    let rt = runtime();
    let (accepted, expected) = rt.block_on(async {
        let quota = Quota::per_second(1_000)
            .and_then(|q| q.with_burst(20))
            .expect("quota");
        let prefix = prefix("replicas");
        let build = || {
            Arc::new(
                RedisRateLimiter::builder(URL, quota)
                    .prefix(prefix.clone())
                    .build()
                    .expect("limiter"),
            )
        };
        let replicas = [build(), build()];
        let clock = SystemClock::new();
        let start = clock.monotonic();
        let run = Duration::from_millis(1_500);
        let mut tasks = Vec::new();
        for limiter in replicas.iter().flat_map(|l| [l, l, l]) {
            let limiter = Arc::clone(limiter);
            tasks.push(tokio::spawn(async move {
                let clock = SystemClock::new();
                let (mut accepted, mut calls) = (0u64, 0u64);
                // Bounded in time and in count.
                while clock.monotonic().saturating_duration_since(start) < run && calls < 200_000 {
                    calls += 1;
                    let d = limiter.decide("tenant", 1).await;
                    assert_eq!(d.path, DecisionPath::Redis, "{:?}", d.result);
                    match d.result {
                        Ok(()) => accepted += 1,
                        Err(ResilienceError::RateLimited { .. }) => {}
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                }
                (accepted, calls)
            }));
        }
        let (mut accepted, mut calls) = (0, 0);
        for t in tasks {
            let (a, c) = t.await.expect("task");
            accepted += a;
            calls += c;
        }
        let elapsed = clock.monotonic().saturating_duration_since(start);
        assert!(
            calls > 2 * accepted,
            "the load must exceed the limit to test it: {calls} calls, {accepted} accepted"
        );
        let expected = 20.0 + 1_000.0 * elapsed.as_secs_f64();
        (accepted, expected)
    });
    #[allow(clippy::cast_precision_loss)]
    let error = (accepted as f64 - expected).abs() / expected;
    eprintln!("two instances: {accepted} accepted, {expected:.0} expected ({error:.3})");
    assert!(error <= 0.05, "{accepted} accepted, expected {expected:.0}");
}

fn counting_breaker(failures: Arc<AtomicU64>) -> BreakerConfig {
    BreakerConfig::builder()
        .name("redis-limiter-test")
        .count_window(10)
        .minimum_calls(3)
        .failure_rate_threshold(50)
        .open_wait(OpenWait::Fixed(Duration::from_secs(2)))
        .half_open_calls(1)
        .on_event(move |e| {
            if let BreakerEvent::Recorded {
                outcome: CallOutcome::Failure,
                ..
            } = e
            {
                failures.fetch_add(1, Ordering::Relaxed);
            }
        })
        .build()
        .expect("breaker")
}

/// Checks the fallback on a Redis at `url` that fails (refused, or silent past the
/// timeout): the local limiter decides with the same semantics, the breaker opens after
/// three failed calls, and afterwards costs one call per open wait.
async fn falls_back(url: &str) {
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_700_000_000_000));
    let failures = Arc::new(AtomicU64::new(0));
    let quota = Quota::per_second(10)
        .and_then(|q| q.with_burst(2))
        .expect("quota");
    let limiter = RedisRateLimiter::builder(url, quota)
        .prefix("unused:")
        .timeout(Duration::from_millis(100))
        .breaker(counting_breaker(Arc::clone(&failures)))
        .build_with_clock(clock.clone())
        .expect("limiter");
    let mut results = Vec::new();
    for _ in 0..20 {
        let d = limiter.decide("tenant", 1).await;
        assert_eq!(d.path, DecisionPath::LocalFallback);
        results.push(d.result.is_ok());
    }
    assert_eq!(
        results.iter().filter(|ok| **ok).count(),
        2,
        "the burst, locally"
    );
    assert_eq!(
        limiter.try_acquire("tenant", 1).await,
        Err(ResilienceError::RateLimited {
            retry_after: Duration::from_millis(100)
        })
    );
    assert_eq!(limiter.breaker().state(), State::Open);
    assert_eq!(failures.load(Ordering::Relaxed), 3, "three calls opened it");
    // One open wait later: one trial call, which fails, and the breaker opens again.
    clock.advance(Duration::from_secs(2));
    for _ in 0..20 {
        let d = limiter.decide("other", 1).await;
        assert_eq!(d.path, DecisionPath::LocalFallback);
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        4,
        "one trial per open wait"
    );
    assert_eq!(limiter.breaker().state(), State::Open);
    assert_eq!(
        limiter.try_acquire("tenant", 3).await,
        Err(ResilienceError::InsufficientCapacity {
            requested: 3,
            burst: 2
        })
    );
}

#[tokio::test]
async fn a_refused_redis_falls_back_and_opens_the_breaker() {
    falls_back("redis://127.0.0.1:1").await;
}

#[tokio::test]
async fn a_silent_redis_times_out_falls_back_and_opens_the_breaker() {
    // A server that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            open.push(s);
            if open.len() > 64 {
                break;
            }
        }
    });
    falls_back(&format!("redis://{addr}")).await;
    held.abort();
}

/// A flushed script cache (a restarted or failed-over Redis) costs one `EVAL`, and keys
/// carry a TTL so an idle tenant's bucket vanishes.
#[tokio::test]
async fn noscript_falls_back_to_eval_and_keys_expire() {
    if !redis_available("noscript_falls_back_to_eval_and_keys_expire") {
        return;
    }
    let prefix = prefix("noscript");
    let quota = Quota::per_second(10)
        .and_then(|q| q.with_burst(5))
        .expect("quota");
    let limiter = RedisRateLimiter::builder(URL, quota)
        .prefix(prefix.clone())
        .build()
        .expect("limiter");
    let client = redis::Client::open(URL).expect("client");
    let mut raw = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut raw)
        .await
        .expect("flush");
    let d = limiter.decide("tenant", 3).await;
    assert_eq!((d.path, d.result), (DecisionPath::Redis, Ok(())));
    let ttl_ms: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}tenant"))
        .query_async(&mut raw)
        .await
        .expect("pttl");
    // 3 permits of 100 ms of debt, plus one second.
    assert!(
        (1_000..=1_300).contains(&ttl_ms),
        "TTL {ttl_ms} ms: the debt plus one second"
    );
    let d = limiter.decide("tenant", 3).await;
    assert_eq!(d.path, DecisionPath::Redis);
    assert!(matches!(d.result, Err(ResilienceError::RateLimited { .. })));
}

#[tokio::test]
async fn the_builder_refuses_bad_settings() {
    let quota = Quota::per_second(10).expect("quota");
    let field = |r: Result<_, ResilienceError>| match r {
        Err(ResilienceError::InvalidConfig { field, .. }) => field,
        Ok(_) => "built",
        Err(e) => panic!("{e:?}"),
    };
    let b = || RedisRateLimiter::builder(URL, quota);
    assert_eq!(field(b().prefix("").build()), "prefix");
    assert_eq!(field(b().prefix("x".repeat(129)).build()), "prefix");
    assert_eq!(field(b().timeout(Duration::ZERO).build()), "timeout");
    assert_eq!(
        field(b().timeout(Duration::from_secs(11)).build()),
        "timeout"
    );
    assert_eq!(field(b().fallback_keys_max(0).build()), "max_keys");
    assert_eq!(
        field(RedisRateLimiter::builder("http://x", quota).build()),
        "url"
    );
    assert_eq!(field(b().build()), "built");
}

#[test]
fn the_builder_needs_a_tokio_runtime() {
    let quota = Quota::per_second(10).expect("quota");
    match RedisRateLimiter::builder(URL, quota).build() {
        Err(ResilienceError::InvalidConfig { field, .. }) => assert_eq!(field, "runtime"),
        other => panic!("{other:?}"),
    }
}
