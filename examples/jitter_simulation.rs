//! Reproduces the simulation of AWS's "Exponential Backoff and Jitter": 100 clients contend
//! to update one record with optimistic concurrency, backing off after each conflict with
//! `resilience::Backoff`. For each jitter mode it prints the calls made and the time until
//! the last client succeeded (mean over several seeded runs).
//!
//! `cargo run --release --example jitter_simulation`
//!
//! The model: a call reads the record's version at `t` and writes at `t + 1 ms`; the write
//! succeeds only if no other write succeeded in between (first writer wins). A client that
//! loses backs off for the policy's delay and tries again. Time is simulated (a discrete
//! event queue on monotonic ticks), so the run is instant and reproducible.
#![allow(clippy::print_stdout)] // An example's job is to print.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::process::ExitCode;
use std::time::Duration;

use metered_suite::clock::Tick;
use metered_suite::resilience::{Backoff, Jitter, Schedule};
use rand::SeedableRng;
use rand::rngs::StdRng;

const CLIENTS: usize = 100;
const RUNS: u64 = 20;
const RUNS_U32: u32 = 20;
const WRITE_LATENCY: Duration = Duration::from_millis(1);

struct Outcome {
    calls: u64,
    completion: Duration,
}

fn simulate(policy: &Backoff, seed: u64) -> Outcome {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut schedules: Vec<Schedule> = (0..CLIENTS).map(|_| policy.schedule(Tick::ZERO)).collect();
    // Pending writes, earliest first: (write time, client, read time).
    let mut queue: BinaryHeap<Reverse<(Tick, usize, Tick)>> = (0..CLIENTS)
        .map(|c| Reverse((Tick::ZERO.saturating_add(WRITE_LATENCY), c, Tick::ZERO)))
        .collect();
    let mut last_write = None::<Tick>;
    let (mut calls, mut done, mut completion) = (0u64, 0usize, Tick::ZERO);
    while let Some(Reverse((write_at, client, read_at))) = queue.pop() {
        calls += 1;
        let conflict = last_write.is_some_and(|w| w > read_at);
        if !conflict {
            last_write = Some(write_at);
            done += 1;
            completion = completion.max(write_at);
            continue;
        }
        match schedules[client].next_delay(write_at, None, &mut rng) {
            Some(delay) => {
                let read = write_at.saturating_add(delay);
                queue.push(Reverse((read.saturating_add(WRITE_LATENCY), client, read)));
            }
            None => panic!("client {client} gave up: raise max_attempts"),
        }
    }
    assert_eq!(done, CLIENTS);
    Outcome {
        calls,
        completion: completion.saturating_duration_since(Tick::ZERO),
    }
}

fn main() -> ExitCode {
    let modes = [
        ("exponential (no jitter)", Jitter::None),
        ("full jitter", Jitter::Full),
        ("equal jitter", Jitter::Equal),
        ("decorrelated jitter", Jitter::Decorrelated),
    ];
    println!("{CLIENTS} clients, one contended record, {RUNS} runs per mode (means)\n");
    println!(
        "{:<26} {:>10} {:>14} {:>16}",
        "mode", "calls", "completion", "calls vs no jitter"
    );
    let mut baseline = None;
    let mut full_percent = u64::MAX;
    for (name, jitter) in modes {
        let policy = Backoff::exponential(Duration::from_millis(5))
            .cap(Duration::from_secs(2))
            .jitter(jitter)
            .max_attempts(1_000)
            .build()
            .expect("valid policy");
        let outcomes: Vec<Outcome> = (0..RUNS).map(|seed| simulate(&policy, seed)).collect();
        let calls = outcomes.iter().map(|o| o.calls).sum::<u64>() / RUNS;
        let completion = outcomes.iter().map(|o| o.completion).sum::<Duration>() / RUNS_U32;
        let base = *baseline.get_or_insert(calls);
        let percent = calls * 100 / base;
        if jitter == Jitter::Full {
            full_percent = percent;
        }
        println!(
            "{name:<26} {calls:>10} {:>12}ms {percent:>15}%",
            completion.as_millis()
        );
    }
    println!("\nfull jitter makes {full_percent}% of the calls of plain exponential backoff");
    if full_percent <= 45 {
        ExitCode::SUCCESS
    } else {
        println!("expected at most 45%");
        ExitCode::FAILURE
    }
}
