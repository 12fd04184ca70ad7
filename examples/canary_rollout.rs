//! Two simulated canary rollouts, minute by minute, printing every decision: a healthy
//! release that goes 5 → 10 → 25 → 50 → 100 %, and one whose bug shows at 25 % and is rolled
//! back. Requests come from 50,000 users routed by the sticky router; both arms' errors and
//! latencies feed the health checks; the trail is written to an audit log and replayed.
//!
//! ```text
//! cargo run --release --example canary_rollout
//! ```

// An example is an application: printing its results is its job.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Duration;

use metered_suite::audit::{
    AuditLog, AuditWriter, HmacKey, Keyring, MaskingPolicy, MemorySink, WriterConfig,
};
use metered_suite::canary::{
    Action, Actor, Arm, ArmObservation, HealthPolicy, LatencySketch, MetricCheck, Observations,
    Plan, Rollout, trail,
};
use metered_suite::clock::{Clock, ManualClock, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const REQUESTS_PER_MINUTE: u32 = 4_000;
const USERS: u32 = 50_000;

/// One arm's traffic since the current step began.
#[derive(Default)]
struct Window {
    requests: u64,
    errors: u64,
    latency: LatencySketch,
}

impl Window {
    fn observation(&self) -> ArmObservation {
        ArmObservation::counts(self.requests, self.errors).with_latency(self.latency.clone())
    }
}

fn plan() -> Plan {
    Plan::progressive(Duration::from_secs(60), Duration::from_secs(5 * 60), 1_000)
        .expect("a valid plan")
}

fn policy() -> HealthPolicy {
    HealthPolicy::builder()
        .check(MetricCheck::error_rate_max(0.05).critical())
        .check(MetricCheck::error_rate_relative(0.25))
        .check(MetricCheck::latency_max(0.95, 250_000.0))
        .check(MetricCheck::latency_relative(0.95, 0.20))
        .build()
        .expect("a valid policy")
}

/// Runs one rollout to its end; `buggy_from` is the weight at which the canary's bug shows.
fn run(
    id: &str,
    buggy_from: Option<u8>,
    clock: &ManualClock,
    rng: &mut StdRng,
) -> Result<(Rollout, Vec<metered_suite::canary::Event>), Box<dyn std::error::Error>> {
    println!("\n== rollout {id} ==");
    println!(
        "{:>6}  {:>4}  {:<12} {:<22} {:<18} reason",
        "minute", "w %", "phase", "action", "verdict"
    );
    let mut rollout = Rollout::new(id, plan(), policy())?;
    let start = clock.now();
    let d = rollout.start(start, Actor::operator("release-bot"))?;
    println!(
        "{:>6}  {:>4}  {:<12} {:<22}",
        0,
        d.weight_percent,
        format!("{:?}", d.phase),
        format!("{:?}", d.action)
    );
    let mut events = rollout.take_events();
    let (mut canary, mut stable) = (Window::default(), Window::default());
    let mut step_started = rollout.step_started_at();
    loop {
        // One minute of traffic.
        let weight = rollout.weight_percent();
        let buggy = buggy_from.is_some_and(|w| weight >= w);
        for _ in 0..REQUESTS_PER_MINUTE {
            let user = format!("user-{}", rng.random_range(0..USERS));
            let arm = rollout.route(&user);
            let (window, error_rate, latency_ms) = match arm {
                Arm::Canary if buggy => (&mut canary, 0.03, 140.0),
                Arm::Canary => (&mut canary, 0.01, 100.0),
                Arm::Stable => (&mut stable, 0.01, 100.0),
            };
            window.requests += 1;
            window.errors += u64::from(rng.random_bool(error_rate));
            let ms = latency_ms * (0.4 + rng.random_range(0.0..1.0f64).powi(3) * 2.0);
            window.latency.record(Duration::from_secs_f64(ms / 1000.0));
        }
        clock.advance(Duration::from_secs(60));
        let now = clock.now();
        let obs = Observations::new(canary.observation(), stable.observation());
        let d = rollout.tick(now, &obs)?;
        let minute = now.saturating_duration_since(start).as_secs() / 60;
        let (verdict, reason) = match &d.report {
            Some(r) => (r.verdict.to_string(), r.reason()),
            None => (String::new(), String::new()),
        };
        println!(
            "{minute:>6}  {:>4}  {:<12} {:<22} {verdict:<18} {}",
            d.weight_percent,
            format!("{:?}", d.phase),
            format!("{:?}", d.action),
            reason.chars().take(110).collect::<String>()
        );
        events.extend(rollout.take_events());
        if rollout.step_started_at() != step_started {
            step_started = rollout.step_started_at();
            (canary, stable) = (Window::default(), Window::default());
        }
        if matches!(d.action, Action::Promote | Action::RollBack) {
            // The caller switches traffic, then ticks once more to complete.
            let d = rollout.tick(now, &Observations::default())?;
            println!(
                "{minute:>6}  {:>4}  {:<12} {:?}",
                d.weight_percent,
                format!("{:?}", d.phase),
                d.action
            );
            events.extend(rollout.take_events());
            return Ok((rollout, events));
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_700_000_000_000));
    let mut rng = StdRng::seed_from_u64(42);
    let healthy = run("search-v41", None, &clock, &mut rng)?;
    let regressed = run("search-v42", Some(25), &clock, &mut rng)?;

    // The trail: every check and transition, sealed in a tamper-evident audit log, then
    // replayed into the same state.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let sink = Arc::new(MemorySink::new());
        let writer = AuditWriter::open(
            sink.clone(),
            WriterConfig::builder("example/canary").build()?,
            Arc::new(clock.clone()),
            None,
        )
        .await?;
        let log = AuditLog::new(
            writer.clone(),
            Keyring::new(HmacKey::new(1, [9u8; 32])?),
            MaskingPolicy::standard(),
        );
        println!();
        for (rollout, mut events) in [healthy, regressed] {
            let n = events.len();
            trail::record_events(&log, rollout.id(), &mut events).await?;
            let _ = writer.flush().await?;
            let loaded = trail::load_events(sink.as_ref(), rollout.id()).await?;
            let replayed = Rollout::replay(rollout.id(), plan(), policy(), &loaded)?;
            println!(
                "trail of {}: {n} entries written, replayed state equal to live state: {}",
                rollout.id(),
                replayed.state() == rollout.state()
            );
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}
