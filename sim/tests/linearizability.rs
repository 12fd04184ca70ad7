//! Concurrent histories on the in-memory ledger are linearizable; the checker rejects
//! histories that are not.

use sim::linearizability::{Call, Operation, Response, check, record};

fn op(tenant: usize, call: u64, ret: u64, input: Call, output: Response) -> Operation {
    Operation {
        tenant,
        call,
        ret,
        input,
        output,
    }
}

#[test]
fn concurrent_histories_on_the_memory_ledger_are_linearizable() {
    for seed in 0..30 {
        let history = record(seed, 4, 12, 2).unwrap();
        assert_eq!(history.len(), 48);
        assert!(check(&history), "seed {seed}: {history:?}");
    }
}

#[test]
fn overlapping_operations_may_take_either_order() {
    use Response::*;
    // Both consumes overlap: either may have gone first.
    let history = [
        op(0, 0, 1, Call::Grant(10), Available(10)),
        op(0, 2, 7, Call::Consume(4), Available(2)),
        op(0, 3, 6, Call::Consume(4), Available(6)),
        op(0, 8, 9, Call::Balance, Available(2)),
    ];
    assert!(check(&history));
}

#[test]
fn known_non_linearizable_histories_are_rejected() {
    use Response::*;
    let cases: [&[Operation]; 4] = [
        // A lost update: two sequential consumes both leave 5.
        &[
            op(0, 0, 1, Call::Grant(10), Available(10)),
            op(0, 2, 3, Call::Consume(5), Available(5)),
            op(0, 4, 5, Call::Consume(5), Available(5)),
        ],
        // A stale read after a completed grant.
        &[
            op(0, 0, 1, Call::Grant(7), Available(7)),
            op(0, 2, 3, Call::Balance, Available(0)),
        ],
        // Overspending: two overlapping consumes of 6 from 10 both succeed.
        &[
            op(0, 0, 1, Call::Grant(10), Available(10)),
            op(0, 2, 5, Call::Consume(6), Available(4)),
            op(0, 3, 4, Call::Consume(6), Available(4)),
        ],
        // A refusal although the credits were there.
        &[
            op(0, 0, 1, Call::Grant(3), Available(3)),
            op(0, 2, 3, Call::Consume(2), Insufficient),
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
        op(0, 0, 3, Call::Grant(5), Available(5)),
        op(1, 1, 2, Call::Grant(9), Available(9)),
    ];
    assert!(check(&history));
    // A response before its call is not a history.
    assert!(!check(&[op(0, 5, 4, Call::Balance, Available(0))]));
    // Too many operations for one tenant.
    let long: Vec<Operation> = (0..65)
        .map(|i| op(0, 2 * i, 2 * i + 1, Call::Balance, Available(0)))
        .collect();
    assert!(!check(&long));
    assert!(check(&long[..64]));
}
