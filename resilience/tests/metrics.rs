//! The breaker's metrics through the `metrics` facade, captured by a small test recorder.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metered_clock::{ManualClock, Timestamp};
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};
use resilience::{BreakerConfig, CallOutcome, CircuitBreaker, OpenWait};

#[derive(Default)]
struct Cell(AtomicU64);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, _: f64) {}
    fn decrement(&self, _: f64) {}
    fn set(&self, value: f64) {
        // Gauge values here are small whole numbers (the state code).
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

#[derive(Default, Clone)]
struct TestRecorder {
    cells: Arc<Mutex<BTreeMap<String, Arc<Cell>>>>,
}

impl TestRecorder {
    fn cell(&self, key: &Key) -> Arc<Cell> {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        Arc::clone(self.cells.lock().unwrap().entry(name).or_default())
    }

    fn counter(&self, name: &str) -> u64 {
        self.cells.lock().unwrap()[name].0.load(Ordering::Relaxed)
    }

    fn gauge(&self, name: &str) -> f64 {
        f64::from_bits(self.cells.lock().unwrap()[name].0.load(Ordering::Relaxed))
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(key))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn breaker_publishes_the_seed_metric_names() {
    let recorder = TestRecorder::default();
    let clock = ManualClock::new(Timestamp::EPOCH);
    let config = BreakerConfig::builder()
        .name("db")
        .count_window(4)
        .minimum_calls(4)
        .open_wait(OpenWait::Fixed(Duration::from_secs(1)))
        .half_open_calls(1)
        .metrics(true)
        .build()
        .unwrap();
    let breaker = metrics::with_local_recorder(&recorder, || {
        CircuitBreaker::with_clock(config, clock.clone())
    });
    let state = "circuit_breaker_state{name=db}";
    assert_eq!(recorder.gauge(state), 0.0);
    breaker.try_acquire().unwrap().record(CallOutcome::Ignored);
    for _ in 0..3 {
        breaker.try_acquire().unwrap().record_failure();
    }
    breaker.try_acquire().unwrap().record_success();
    assert_eq!(recorder.gauge(state), 1.0, "open");
    assert!(breaker.try_acquire().is_err());
    clock.advance(Duration::from_secs(1));
    let probe = breaker.try_acquire().unwrap();
    assert_eq!(recorder.gauge(state), 2.0, "half-open");
    probe.record_success();
    assert_eq!(recorder.gauge(state), 0.0, "closed");

    let calls = |kind: &str| {
        recorder.counter(&format!(
            "circuit_breaker_calls_total{{kind={kind},name=db}}"
        ))
    };
    assert_eq!(calls("successful"), 2);
    assert_eq!(calls("failed"), 3);
    assert_eq!(calls("ignored"), 1);
    assert_eq!(calls("not_permitted"), 1);
}

#[test]
fn adaptive_limiter_publishes_limit_in_flight_and_rejections() {
    use resilience::{AdaptiveConfig, AdaptiveLimiter, Aimd, Algorithm};

    let recorder = TestRecorder::default();
    let clock = ManualClock::new(Timestamp::EPOCH);
    let config = AdaptiveConfig::builder()
        .name("pg")
        .algorithm(Algorithm::Aimd(Aimd::new()))
        .initial_limit(2)
        .window_samples_min(1)
        .metrics(true)
        .build()
        .unwrap();
    let limiter = metrics::with_local_recorder(&recorder, || {
        AdaptiveLimiter::with_clock(config, clock.clone())
    });
    assert_eq!(recorder.gauge("adaptive_limit{name=pg}"), 2.0);
    let a = limiter.try_acquire().unwrap();
    let b = limiter.try_acquire().unwrap();
    assert!(limiter.try_acquire().is_err());
    assert_eq!(recorder.counter("adaptive_rejections_total{name=pg}"), 1);
    clock.advance(Duration::from_millis(20));
    a.record_success(); // closes the window: the limit grows to 3, one call in flight
    assert_eq!(recorder.gauge("adaptive_limit{name=pg}"), 3.0);
    assert_eq!(recorder.gauge("adaptive_in_flight{name=pg}"), 1.0);
    drop(b);
}
