//! The AWS "Exponential Backoff and Jitter" result, checked at test scale: 100 clients
//! updating one record with optimistic concurrency make far fewer calls with full jitter
//! than with plain exponential backoff (`examples/jitter_simulation.rs` prints the table).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use metered_clock::Tick;
use rand::SeedableRng;
use rand::rngs::StdRng;
use resilience::{Backoff, Jitter};

/// Calls made until all `clients` have written once: a call reads at `t` and writes at
/// `t + 1 ms`, and fails if another write succeeded in between.
fn calls(jitter: Jitter, clients: usize, seed: u64) -> u64 {
    let policy = Backoff::exponential(Duration::from_millis(5))
        .cap(Duration::from_secs(2))
        .jitter(jitter)
        .max_attempts(1_000)
        .build()
        .unwrap();
    let latency = Duration::from_millis(1);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut schedules: Vec<_> = (0..clients).map(|_| policy.schedule(Tick::ZERO)).collect();
    let mut queue: BinaryHeap<_> = (0..clients)
        .map(|c| Reverse((Tick::ZERO.saturating_add(latency), c, Tick::ZERO)))
        .collect();
    let (mut made, mut last_write) = (0, None::<Tick>);
    while let Some(Reverse((write_at, client, read_at))) = queue.pop() {
        made += 1;
        if last_write.is_some_and(|w| w > read_at) {
            let delay = schedules[client]
                .next_delay(write_at, None, &mut rng)
                .unwrap();
            let read = write_at.saturating_add(delay);
            queue.push(Reverse((read.saturating_add(latency), client, read)));
        } else {
            last_write = Some(write_at);
        }
    }
    made
}

#[test]
fn full_jitter_makes_at_most_045_of_the_calls_of_plain_exponential() {
    let plain: u64 = (0..3).map(|s| calls(Jitter::None, 100, s)).sum();
    assert_eq!(
        plain,
        3 * 5_050,
        "no jitter: one winner per round, 100 + 99 + … + 1 calls"
    );
    for jitter in [Jitter::Full, Jitter::Equal, Jitter::Decorrelated] {
        let jittered: u64 = (0..3).map(|s| calls(jitter, 100, s)).sum();
        assert!(
            jittered * 100 <= plain * 45,
            "{jitter:?}: {jittered} vs {plain}"
        );
    }
}
