//! Concurrent histories on the in-memory ledger and on PostgreSQL (threads with their own
//! runtimes and connections, and group commit) are linearizable; the checker rejects
//! histories that are not.
//!
//! The PostgreSQL tests need `DATABASE_URL`; without it they print that they were skipped
//! and pass, unless `REQUIRE_DATABASE=1` (as in CI).
#![allow(clippy::print_stderr)]

use sim::Bug;
use sim::linearizability::{
    BatchCall, Call, Item, Operation, PgLinearizability, Recording, Response, check,
    failing_tenant, record, record_broken, record_postgres, record_with_faults,
};

fn op(tenant: usize, call: u64, ret: u64, input: Call, output: Response) -> Operation {
    Operation {
        tenant,
        call,
        ret,
        input,
        output,
    }
}

fn database_url(test: &str) -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            assert_ne!(
                std::env::var("REQUIRE_DATABASE").as_deref(),
                Ok("1"),
                "{test}: DATABASE_URL is not set but REQUIRE_DATABASE=1"
            );
            eprintln!("{test}: skipped (set DATABASE_URL to run it against PostgreSQL)");
            None
        }
    }
}

#[test]
fn concurrent_histories_on_the_memory_ledger_are_linearizable() {
    let mut overlapping = 0;
    for seed in 0..30 {
        let history = record(seed, 4, 12, 2).unwrap();
        assert_eq!(history.len(), 48 + 2);
        assert!(check(&history), "seed {seed}: {history:?}");
        overlapping += overlaps(&history);
    }
    // Released together by a barrier, the threads' operations interleave.
    eprintln!("memory: {overlapping} of 1500 operations overlap another");
    // Seen: 41 to 535 (memory operations take microseconds, so how many overlap is luck;
    // the PostgreSQL tests below require most of theirs to).
    assert!(overlapping > 0, "no operation overlaps another");
}

#[test]
fn concurrent_histories_with_retried_faults_on_the_memory_ledger_are_linearizable() {
    let mut retries = 0;
    let mut kinds = [0usize; 7];
    for seed in 0..30 {
        let r = record_with_faults(seed, 4, 12, 2).unwrap();
        assert_eq!(r.history.len(), 48 + 2);
        assert!(check(&r.history), "seed {seed}: {:?}", r.history);
        retries += r.retries;
        count_kinds(&r, &mut kinds);
    }
    // Every fifth mutation of each client failed and was retried under its key.
    assert!(retries >= 100, "only {retries} retries");
    assert!(
        kinds.iter().all(|&n| n > 0),
        "an operation kind never ran: {kinds:?}"
    );
}

#[test]
fn a_store_that_double_applies_retries_fails_the_checker() {
    // Odd clients lose the acknowledgement of every third mutation after it was applied;
    // the broken store applies their retry again instead of replaying it.
    let rejected: Vec<u64> = (0..20)
        .filter(|&seed| {
            let r = record_broken(seed, 4, 12, 2, Bug::DoubleApplyRetry).unwrap();
            !check(&r.history)
        })
        .collect();
    eprintln!("double-apply-retry: rejected seeds {rejected:?} of 0..20");
    // Not every history shows it: a doubled read, batch (the bug rewrites single requests
    // only) or refusal changes nothing, and which requests are doubled depends on how the
    // threads interleave. Seen: 18 to 20 of 20. The bar is that the checker catches it,
    // not how often the interleaving exposes it (the hand-made histories below are exact).
    assert!(rejected.len() >= 10, "caught only in seeds {rejected:?}");
}

/// How many operations overlap another one in time.
fn overlaps(history: &[Operation]) -> usize {
    history
        .iter()
        .filter(|a| {
            history
                .iter()
                .any(|b| a.call != b.call && a.call < b.ret && b.call < a.ret)
        })
        .count()
}

/// Counts successful grants, consumes, reserves, commits, cancels, batches and reads.
fn count_kinds(r: &Recording, kinds: &mut [usize; 7]) {
    for o in &r.history {
        if let Response::Ok(..) = o.output {
            let i = match o.input {
                Call::Grant(_) => 0,
                Call::Consume(_) => 1,
                Call::Reserve { .. } => 2,
                Call::Commit { .. } => 3,
                Call::Cancel { .. } => 4,
                Call::Batch(_) => 5,
                Call::Balance => 6,
            };
            kinds[i] += 1;
        }
    }
}

/// The balance every linearization ends with for `tenant` (every success applied once,
/// every refusal changes nothing): (available, held).
fn final_balance(history: &[Operation], tenant: usize) -> (u64, u64) {
    let (mut total, mut held) = (0i64, 0i64);
    let mut reserved = std::collections::BTreeMap::new();
    let ops = history.iter().filter(|o| o.tenant == tenant);
    for o in ops.clone() {
        if let (Call::Reserve { hold, amount }, Response::Ok(..)) = (o.input, o.output) {
            reserved.insert(hold, amount as i64);
        }
    }
    for o in ops {
        let Response::Ok(..) = o.output else { continue };
        match o.input {
            Call::Grant(n) => total += n as i64,
            Call::Consume(n) => total -= n as i64,
            Call::Reserve { amount, .. } => held += amount as i64,
            Call::Commit { hold, amount } => {
                held -= reserved[&hold];
                total -= amount as i64;
            }
            Call::Cancel { hold } => held -= reserved[&hold],
            Call::Batch(b) => {
                for item in b.items() {
                    match *item {
                        Item::Grant(n) => total += n as i64,
                        Item::Consume(n) => total -= n as i64,
                    }
                }
            }
            Call::Balance => {}
        }
    }
    ((total - held) as u64, held as u64)
}

/// Checks every recording, and that a read appended after everything is accepted with the
/// true final balance and rejected with one credit more (a phantom credit: the checker is
/// not vacuous on these very histories). Returns the retries.
fn check_recordings(what: &str, recordings: &[Recording], clients: usize, ops: usize) -> u64 {
    let mut retries = 0;
    let mut kinds = [0usize; 7];
    let mut overlapping = 0;
    for (round, r) in recordings.iter().enumerate() {
        // Each client's operations, then one final read per tenant.
        assert_eq!(r.history.len(), clients * ops + 2, "{what} round {round}");
        overlapping += overlaps(&r.history);
        assert_eq!(
            failing_tenant(&r.history),
            None,
            "{what} round {round}: {:?}",
            r.history
        );
        retries += r.retries;
        count_kinds(r, &mut kinds);
        let end = r.history.iter().map(|o| o.ret).max().unwrap() + 1;
        let (available, held) = final_balance(&r.history, 0);
        let read = |a| op(0, end, end + 1, Call::Balance, Response::Ok(a, held));
        let mut good = r.history.clone();
        good.push(read(available));
        assert!(
            check(&good),
            "{what} round {round}: the true final read was refused"
        );
        let mut broken = r.history.clone();
        broken.push(read(available + 1));
        assert_eq!(
            failing_tenant(&broken),
            Some(0),
            "{what} round {round}: a phantom credit passed"
        );
    }
    assert!(
        kinds.iter().all(|&n| n > 0),
        "{what}: an operation kind never succeeded: {kinds:?}"
    );
    // The clients really ran at the same time: most operations overlap another one.
    let total: usize = recordings.iter().map(|r| r.history.len()).sum();
    assert!(
        overlapping * 2 > total,
        "{what}: only {overlapping} of {total} operations overlap"
    );
    eprintln!("{what}: {total} operations, {overlapping} overlapping another, {retries} retries");
    retries
}

fn pg(url: String, group_commit: bool) -> PgLinearizability {
    PgLinearizability {
        rounds: 40,
        group_commit,
        ..PgLinearizability::new(url, 0x11ee)
    }
}

#[test]
fn concurrent_histories_on_postgres_threads_are_linearizable() {
    let Some(url) = database_url("concurrent_histories_on_postgres_threads_are_linearizable")
    else {
        return;
    };
    let config = pg(url, false);
    let recordings = record_postgres(&config).unwrap();
    assert_eq!(recordings.len(), config.rounds);
    let retries = check_recordings(
        "threads",
        &recordings,
        config.clients,
        config.ops_per_client,
    );
    assert!(retries >= 50, "only {retries} retries");
}

#[test]
fn concurrent_histories_on_postgres_with_group_commit_are_linearizable() {
    let Some(url) =
        database_url("concurrent_histories_on_postgres_with_group_commit_are_linearizable")
    else {
        return;
    };
    let config = PgLinearizability {
        clients: 6,
        ops_per_client: 10,
        ..pg(url, true)
    };
    let recordings = record_postgres(&config).unwrap();
    assert_eq!(recordings.len(), config.rounds);
    let retries = check_recordings(
        "group commit",
        &recordings,
        config.clients,
        config.ops_per_client,
    );
    assert!(retries >= 50, "only {retries} retries");
}

#[test]
fn a_postgres_store_that_double_applies_retries_fails_the_checker() {
    let Some(url) = database_url("a_postgres_store_that_double_applies_retries_fails_the_checker")
    else {
        return;
    };
    // The same clients, threads and connections, over the deliberately broken wrapper.
    let config = PgLinearizability {
        bug: Some(Bug::DoubleApplyRetry),
        ..pg(url, false)
    };
    let config = PgLinearizability {
        rounds: 16,
        ..config
    };
    let recordings = record_postgres(&config).unwrap();
    let rejected = recordings.iter().filter(|r| !check(&r.history)).count();
    eprintln!("double-apply-retry on PostgreSQL: {rejected} of 16 histories rejected");
    // Seen: 4 to 8 of 8 (see the memory test for why not always all; real threads and
    // connections make the share vary with the machine's load, so the bar is that the
    // checker catches it in a few of them).
    assert!(rejected >= 2, "only {rejected} of 16 histories rejected");
}

#[test]
fn overlapping_operations_may_take_either_order() {
    use Response::*;
    // Both consumes overlap: either may have gone first.
    let history = [
        op(0, 0, 1, Call::Grant(10), Ok(10, 0)),
        op(0, 2, 7, Call::Consume(4), Ok(2, 0)),
        op(0, 3, 6, Call::Consume(4), Ok(6, 0)),
        op(0, 8, 9, Call::Balance, Ok(2, 0)),
    ];
    assert!(check(&history));
    // A commit and a cancel of one hold race: either wins, the other is told so.
    let reserve = |ret| op(0, 2, ret, Call::Reserve { hold: 1, amount: 6 }, Ok(4, 6));
    let commit = Call::Commit { hold: 1, amount: 2 };
    let cancel = Call::Cancel { hold: 1 };
    for history in [
        [
            op(0, 0, 1, Call::Grant(10), Ok(10, 0)),
            reserve(3),
            op(0, 4, 7, commit, Ok(8, 0)),
            op(0, 5, 6, cancel, AlreadyCommitted),
        ],
        [
            op(0, 0, 1, Call::Grant(10), Ok(10, 0)),
            reserve(3),
            op(0, 4, 7, commit, AlreadyCancelled),
            op(0, 5, 6, cancel, Ok(10, 0)),
        ],
    ] {
        assert!(check(&history), "{history:?}");
    }
    // A refused batch changes nothing; an accepted one applies in order.
    let batch = |items: &[Item]| Call::Batch(BatchCall::new(items).unwrap());
    let history = [
        op(0, 0, 1, Call::Grant(5), Ok(5, 0)),
        op(
            0,
            2,
            3,
            batch(&[Item::Grant(3), Item::Consume(9)]),
            Insufficient,
        ),
        op(
            0,
            4,
            5,
            batch(&[Item::Consume(5), Item::Grant(2)]),
            Ok(2, 0),
        ),
    ];
    assert!(check(&history));
}

#[test]
fn known_non_linearizable_histories_are_rejected() {
    use Response::*;
    let batch = |items: &[Item]| Call::Batch(BatchCall::new(items).unwrap());
    let grant10 = op(0, 0, 1, Call::Grant(10), Ok(10, 0));
    let reserve6 = op(0, 2, 3, Call::Reserve { hold: 1, amount: 6 }, Ok(4, 6));
    let cases: [&[Operation]; 10] = [
        // A lost update: two sequential consumes both leave 5.
        &[
            grant10,
            op(0, 2, 3, Call::Consume(5), Ok(5, 0)),
            op(0, 4, 5, Call::Consume(5), Ok(5, 0)),
        ],
        // A stale read after a completed grant.
        &[
            op(0, 0, 1, Call::Grant(7), Ok(7, 0)),
            op(0, 2, 3, Call::Balance, Ok(0, 0)),
        ],
        // Overspending: two overlapping consumes of 6 from 10 both succeed.
        &[
            grant10,
            op(0, 2, 5, Call::Consume(6), Ok(4, 0)),
            op(0, 3, 4, Call::Consume(6), Ok(4, 0)),
        ],
        // A refusal although the credits were there.
        &[
            op(0, 0, 1, Call::Grant(3), Ok(3, 0)),
            op(0, 2, 3, Call::Consume(2), Insufficient),
        ],
        // A hold committed twice (overlapping commits both succeed).
        &[
            grant10,
            reserve6,
            op(0, 4, 7, Call::Commit { hold: 1, amount: 6 }, Ok(4, 0)),
            op(0, 5, 6, Call::Commit { hold: 1, amount: 6 }, Ok(4, 0)),
        ],
        // A hold both committed and cancelled.
        &[
            grant10,
            reserve6,
            op(0, 4, 7, Call::Commit { hold: 1, amount: 2 }, Ok(8, 0)),
            op(0, 5, 6, Call::Cancel { hold: 1 }, Ok(10, 0)),
        ],
        // A reserve beyond the balance.
        &[
            grant10,
            op(
                0,
                2,
                3,
                Call::Reserve {
                    hold: 1,
                    amount: 11,
                },
                Ok(0, 11),
            ),
        ],
        // Held credits reported available after the reserve returned.
        &[grant10, reserve6, op(0, 4, 5, Call::Balance, Ok(10, 0))],
        // A batch applied in part: its grant kept although its consume was refused.
        &[
            op(0, 0, 1, Call::Grant(5), Ok(5, 0)),
            op(
                0,
                2,
                3,
                batch(&[Item::Grant(3), Item::Consume(9)]),
                Insufficient,
            ),
            op(0, 4, 5, Call::Balance, Ok(8, 0)),
        ],
        // A batch refused although it fits once applied in order.
        &[
            op(0, 0, 1, Call::Grant(5), Ok(5, 0)),
            op(
                0,
                2,
                3,
                batch(&[Item::Grant(5), Item::Consume(9)]),
                Insufficient,
            ),
        ],
    ];
    for (i, h) in cases.iter().enumerate() {
        assert!(!check(h), "case {i} accepted");
    }
}

#[test]
fn tenants_are_checked_independently_and_bad_input_is_refused() {
    use Response::*;
    let history = [
        op(0, 0, 3, Call::Grant(5), Ok(5, 0)),
        op(1, 1, 2, Call::Grant(9), Ok(9, 0)),
    ];
    assert!(check(&history));
    assert_eq!(
        failing_tenant(&[history[0], history[1], op(1, 4, 5, Call::Balance, Ok(0, 0))]),
        Some(1)
    );
    // A response before its call is not a history.
    assert!(!check(&[op(0, 5, 4, Call::Balance, Ok(0, 0))]));
    // Too many operations for one tenant.
    let long: Vec<Operation> = (0..65)
        .map(|i| op(0, 2 * i, 2 * i + 1, Call::Balance, Ok(0, 0)))
        .collect();
    assert!(!check(&long));
    assert!(check(&long[..64]));
    assert!(BatchCall::new(&[]).is_none());
    assert!(BatchCall::new(&[Item::Grant(1); 5]).is_none());
}
