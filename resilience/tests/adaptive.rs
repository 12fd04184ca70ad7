//! The adaptive limiter, the load shedder and their layers, through the public API.

use std::sync::Arc;
use std::time::Duration;

use metered_clock::{ManualClock, Timestamp};
use resilience::{
    AdaptiveConfig, AdaptiveLimitLayer, AdaptiveLimiter, Aimd, Algorithm, CallError, Gradient2,
    LimitEstimator, LoadShedLayer, LoadShedder, Priority, ResilienceError, Sample, Vegas,
};
use tower::{ServiceBuilder, ServiceExt, service_fn};

fn config(algorithm: Algorithm, initial: u32) -> AdaptiveConfig {
    AdaptiveConfig::builder()
        .algorithm(algorithm)
        .initial_limit(initial)
        .window_samples_min(1)
        .build()
        .unwrap()
}

#[test]
fn invalid_configs_name_their_field() {
    let check = |b: resilience::AdaptiveConfigBuilder, field: &str| match b.build() {
        Err(ResilienceError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
        other => panic!("{field}: {other:?}"),
    };
    let b = AdaptiveConfig::builder;
    check(b().min_limit(0), "min_limit");
    check(b().min_limit(10).max_limit(5), "max_limit");
    check(
        b().max_limit(resilience::ADAPTIVE_LIMIT_MAX + 1),
        "max_limit",
    );
    check(b().initial_limit(5000), "initial_limit");
    check(
        b().window(Duration::ZERO, Duration::from_secs(1)),
        "window_min",
    );
    check(
        b().window(Duration::from_secs(2), Duration::from_secs(1)),
        "window_max",
    );
    check(b().window_samples_min(0), "window_samples_min");
    check(
        b().algorithm(Algorithm::Aimd(Aimd::new().backoff_percent(100))),
        "aimd.backoff_percent",
    );
    check(
        b().algorithm(Algorithm::Aimd(Aimd::new().increase(0))),
        "aimd.increase",
    );
    check(
        b().algorithm(Algorithm::Aimd(
            Aimd::new().latency_threshold(Duration::ZERO),
        )),
        "aimd.latency_threshold",
    );
    check(
        b().algorithm(Algorithm::Vegas(Vegas::new().smoothing_percent(0))),
        "vegas.smoothing_percent",
    );
    check(
        b().algorithm(Algorithm::Vegas(Vegas::new().probe_multiplier(0))),
        "vegas.probe_multiplier",
    );
    check(
        b().algorithm(Algorithm::Gradient2(Gradient2::new().tolerance_percent(99))),
        "gradient2.tolerance_percent",
    );
    check(
        b().algorithm(Algorithm::Gradient2(Gradient2::new().long_window(2))),
        "gradient2.long_window",
    );
    check(
        b().algorithm(Algorithm::Gradient2(
            Gradient2::new().smoothing_percent(101),
        )),
        "gradient2.smoothing_percent",
    );
    assert!(AdaptiveConfig::builder().build().is_ok());
}

/// Each algorithm, driven sample by sample: (samples, expected direction of the limit).
#[test]
fn estimators_grow_without_queueing_and_shrink_with_it() {
    let fast = |limit| Sample::new(Duration::from_millis(10), limit, false);
    let slow = |limit| Sample::new(Duration::from_millis(40), limit, false);
    for algorithm in [
        Algorithm::Aimd(Aimd::new().latency_threshold(Duration::from_millis(20))),
        Algorithm::Vegas(Vegas::new()),
        Algorithm::Gradient2(Gradient2::new()),
    ] {
        let mut e = LimitEstimator::new(&config(algorithm, 50));
        for _ in 0..20 {
            let l = e.limit();
            e.on_sample(fast(l));
        }
        let grown = e.limit();
        assert!(grown > 50, "{algorithm:?}: {grown}");
        for _ in 0..20 {
            let l = e.limit();
            e.on_sample(slow(l));
        }
        assert!(e.limit() < grown, "{algorithm:?}: {} !< {grown}", e.limit());
        // App-limited: few calls in flight, the limit does not grow.
        let before = e.limit();
        for _ in 0..5 {
            e.on_sample(Sample::new(Duration::from_millis(10), 1, false));
        }
        assert!(e.limit() <= before, "{algorithm:?}");
    }
    let mut fixed = LimitEstimator::new(&config(Algorithm::Fixed, 7));
    assert_eq!(
        fixed.on_sample(Sample::new(Duration::from_secs(9), 7, true)),
        7
    );
}

#[test]
fn drops_back_off_and_the_limit_stays_within_bounds() {
    let cfg = AdaptiveConfig::builder()
        .algorithm(Algorithm::Aimd(Aimd::new()))
        .initial_limit(10)
        .min_limit(5)
        .max_limit(12)
        .build()
        .unwrap();
    let mut e = LimitEstimator::new(&cfg);
    assert_eq!(
        e.on_sample(Sample::new(Duration::from_millis(1), 10, true)),
        9
    );
    for _ in 0..20 {
        e.on_sample(Sample::new(Duration::from_millis(1), 10, true));
    }
    assert_eq!(e.limit(), 5);
    for _ in 0..20 {
        let l = e.limit();
        e.on_sample(Sample::new(Duration::from_millis(1), l, false));
    }
    assert_eq!(e.limit(), 12);
}

#[test]
fn permits_free_slots_record_outcomes_and_count_rejections() {
    let clock = ManualClock::new(Timestamp::EPOCH);
    let limiter =
        AdaptiveLimiter::with_clock(config(Algorithm::Aimd(Aimd::new()), 2), clock.clone());
    let a = limiter.try_acquire().unwrap();
    let b = limiter.try_acquire().unwrap();
    let err = limiter.try_acquire().unwrap_err();
    assert_eq!(err.code(), "concurrency_limited");
    assert!(err.is_retryable());
    assert_eq!(limiter.stats().rejected, 1);
    assert_eq!(limiter.in_flight(), 2);
    clock.advance(Duration::from_millis(20));
    a.record_dropped(); // a drop: AIMD backs off (2 · 0.9 → 1)
    assert_eq!(limiter.limit(), 1);
    b.record_ignored(); // no sample
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.stats().latency, Duration::from_millis(20));
    match limiter.try_acquire() {
        Ok(p) => drop(p),
        Err(e) => panic!("{e:?}"),
    }
}

#[test]
fn two_threads_never_exceed_the_limit() {
    let limiter = Arc::new(AdaptiveLimiter::new(config(Algorithm::Fixed, 3)));
    let held = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (acquired, refused) = std::thread::scope(|s| {
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (limiter, held) = (Arc::clone(&limiter), Arc::clone(&held));
                s.spawn(move || {
                    let (mut acquired, mut refused) = (0u32, 0u32);
                    let mut mine = Vec::new();
                    for i in 0..20_000 {
                        if let Ok(p) = limiter.try_acquire_owned() {
                            let now = held.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                            assert!(now <= 3);
                            acquired += 1;
                            mine.push(p);
                        } else {
                            refused += 1;
                        }
                        if i % 3 == 0 && !mine.is_empty() {
                            held.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                            mine.pop();
                        }
                    }
                    held.fetch_sub(
                        u32::try_from(mine.len()).unwrap(),
                        std::sync::atomic::Ordering::SeqCst,
                    );
                    (acquired, refused)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .fold((0, 0), |(a, r), (ta, tr)| (a + ta, r + tr))
    });
    // Permits were taken, and the limit was reached: a thread tries once per iteration and
    // gives one back every third (6,667 times), so it takes at most 6,667 + the 3 it may
    // hold at the end; of the 40,000 tries at most 13,340 succeed.
    assert!(acquired > 0, "no permit was ever acquired");
    assert!(refused > 0, "the limit was never reached");
    assert!(acquired <= 2 * (6_667 + 3), "{acquired} permits acquired");
    assert_eq!(acquired + refused, 40_000);
    assert_eq!(limiter.in_flight(), 0);
}

#[test]
fn shedder_rejects_lower_priorities_first() {
    let limiter = Arc::new(AdaptiveLimiter::new(config(Algorithm::Fixed, 100)));
    let shedder = LoadShedder::new(Arc::clone(&limiter), 50).unwrap();
    assert_eq!(shedder.share_permille(Priority::SHEDDABLE), 500);
    assert_eq!(shedder.share_permille(Priority::CRITICAL), 1_000);
    let mut held = Vec::new();
    // Fill up with critical calls and watch who is refused at each level.
    let first_refused = |p: Priority, held: &mut Vec<_>| loop {
        match shedder.try_acquire(p) {
            Ok(permit) => held.push(permit),
            Err(ResilienceError::LoadShed { priority, .. }) => {
                assert_eq!(priority, p.get());
                return limiter.in_flight();
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    assert_eq!(first_refused(Priority::SHEDDABLE, &mut held), 50);
    assert_eq!(first_refused(Priority::DEFAULT, &mut held), 75);
    assert_eq!(first_refused(Priority::CRITICAL, &mut held), 100);
    assert!(LoadShedder::new(limiter, 0).is_err());
}

#[test]
fn layers_reject_at_the_limit_and_feed_the_limiter() {
    let limiter = Arc::new(AdaptiveLimiter::new(config(Algorithm::Fixed, 1)));
    let svc = ServiceBuilder::new()
        .layer(AdaptiveLimitLayer::new(Arc::clone(&limiter)))
        .service(service_fn(|x: u32| async move {
            if x == 0 { Err("zero") } else { Ok(x * 2) }
        }));
    let out = futures::executor::block_on(svc.clone().oneshot(21));
    assert_eq!(out.unwrap(), 42);
    assert!(matches!(
        futures::executor::block_on(svc.clone().oneshot(0)),
        Err(CallError::Inner("zero"))
    ));
    let _held = limiter.try_acquire_owned().unwrap();
    assert!(matches!(
        futures::executor::block_on(svc.oneshot(1)),
        Err(CallError::Rejected(ResilienceError::ConcurrencyLimited {
            limit: 1,
            ..
        }))
    ));

    let shedder = LoadShedder::new(
        Arc::new(AdaptiveLimiter::new(config(Algorithm::Fixed, 2))),
        50,
    )
    .unwrap();
    let svc = ServiceBuilder::new()
        .layer(LoadShedLayer::new(
            shedder.clone(),
            |req: &(Priority, u32)| req.0,
        ))
        .service(service_fn(|req: (Priority, u32)| async move {
            Ok::<_, ()>(req.1)
        }));
    let _held = shedder.try_acquire(Priority::CRITICAL).unwrap();
    assert!(matches!(
        futures::executor::block_on(svc.clone().oneshot((Priority::SHEDDABLE, 1))),
        Err(CallError::Rejected(ResilienceError::LoadShed {
            priority: 0,
            ..
        }))
    ));
    assert_eq!(
        futures::executor::block_on(svc.oneshot((Priority::CRITICAL, 7))).unwrap(),
        7
    );
}

mod queue {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    use metered_clock::{ManualClock, Timestamp};
    use resilience::{
        AdaptiveConfig, AdaptiveLimiter, Algorithm, LoadShedder, Priority, QueueConfig,
        ResilienceError,
    };

    fn shedder(limit: u32, waiting: u32, lifo: bool) -> (LoadShedder<ManualClock>, ManualClock) {
        let clock = ManualClock::new(Timestamp::EPOCH);
        let config = AdaptiveConfig::builder()
            .algorithm(Algorithm::Fixed)
            .initial_limit(limit)
            .build()
            .unwrap();
        let limiter = Arc::new(AdaptiveLimiter::with_clock(config, clock.clone()));
        let queue = QueueConfig::new(
            waiting,
            Duration::from_millis(5),
            Duration::from_millis(100),
        )
        .unwrap()
        .adaptive_lifo(lifo);
        (LoadShedder::with_queue(limiter, 100, queue).unwrap(), clock)
    }

    fn poll<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn waiters_are_served_by_priority_when_a_slot_frees() {
        let (s, _clock) = shedder(1, 8, false);
        let held = s.try_acquire(Priority::DEFAULT).unwrap();
        let mut low = pin!(s.acquire(Priority::SHEDDABLE));
        let mut high = pin!(s.acquire(Priority::CRITICAL));
        assert!(poll(low.as_mut()).is_pending());
        assert!(poll(high.as_mut()).is_pending());
        assert_eq!(s.waiting(), 2);
        // try_acquire never jumps the queue.
        assert!(s.try_acquire(Priority::CRITICAL).is_err());
        drop(held);
        let Poll::Ready(Ok(granted)) = poll(high.as_mut()) else {
            panic!("critical first")
        };
        assert!(poll(low.as_mut()).is_pending());
        drop(granted);
        assert!(matches!(poll(low.as_mut()), Poll::Ready(Ok(_))));
        assert_eq!(s.waiting(), 0);
    }

    #[test]
    fn a_full_queue_evicts_its_lowest_priority_and_refuses_equals() {
        let (s, _clock) = shedder(1, 1, false);
        let _held = s.try_acquire(Priority::DEFAULT).unwrap();
        let mut low = pin!(s.acquire(Priority::SHEDDABLE));
        assert!(poll(low.as_mut()).is_pending());
        let mut high = pin!(s.acquire(Priority::CRITICAL));
        assert!(poll(high.as_mut()).is_pending());
        assert!(matches!(
            poll(low.as_mut()),
            Poll::Ready(Err(ResilienceError::LoadShed { priority: 0, .. }))
        ));
        let mut equal = pin!(s.acquire(Priority::CRITICAL));
        assert!(matches!(
            poll(equal.as_mut()),
            Poll::Ready(Err(ResilienceError::LoadShed { priority: 255, .. }))
        ));
    }

    #[test]
    fn waiters_past_their_sojourn_limit_are_shed_and_lifo_serves_the_newest() {
        let (s, clock) = shedder(1, 8, true);
        let held = s.try_acquire(Priority::DEFAULT).unwrap();
        let mut old = pin!(s.acquire(Priority::DEFAULT));
        assert!(poll(old.as_mut()).is_pending());
        // Not empty for longer than the interval: overloaded, the sojourn limit is 5 ms.
        clock.advance(Duration::from_millis(101));
        let mut new = pin!(s.acquire(Priority::DEFAULT));
        assert!(poll(new.as_mut()).is_pending());
        assert!(matches!(
            poll(old.as_mut()),
            Poll::Ready(Err(ResilienceError::LoadShed { .. }))
        ));
        let mut newer = pin!(s.acquire(Priority::DEFAULT));
        assert!(poll(newer.as_mut()).is_pending());
        drop(held);
        // Adaptive LIFO: the newest waiter is served first.
        let Poll::Ready(Ok(_granted)) = poll(newer.as_mut()) else {
            panic!("the newest first")
        };
        assert!(poll(new.as_mut()).is_pending());
    }

    #[test]
    fn a_dropped_waiter_leaves_the_queue() {
        let (s, _clock) = shedder(1, 8, false);
        let held = s.try_acquire(Priority::DEFAULT).unwrap();
        {
            let mut w = pin!(s.acquire(Priority::DEFAULT));
            assert!(poll(w.as_mut()).is_pending());
            assert_eq!(s.waiting(), 1);
        }
        assert_eq!(s.waiting(), 0);
        drop(held);
        assert_eq!(s.limiter().in_flight(), 0);
        assert!(QueueConfig::new(1, Duration::from_millis(10), Duration::from_millis(5)).is_err());
    }
}
