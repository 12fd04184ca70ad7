//! The Merkle tree against a direct transcription of RFC 9162 §2.1 (recursive MTH, PATH and
//! PROOF over the leaf list), for every size and index up to a bound, plus proof tampering.

use audit_chain::merkle::{
    EMPTY_ROOT, MerkleFrontier, MerkleTree, leaf_hash, node_hash, verify_consistency,
    verify_inclusion,
};
use audit_chain::{AuditError, Hash};
use proptest::prelude::*;

fn k(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => EMPTY_ROOT,
        1 => d[0],
        n => node_hash(&mth(&d[..k(n)]), &mth(&d[k(n)..])),
    }
}

fn path(m: usize, d: &[Hash]) -> Vec<Hash> {
    let n = d.len();
    if n == 1 {
        return vec![];
    }
    let k = k(n);
    if m < k {
        let mut p = path(m, &d[..k]);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = path(m - k, &d[k..]);
        p.push(mth(&d[..k]));
        p
    }
}

fn subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { vec![] } else { vec![mth(d)] };
    }
    let k = k(n);
    if m <= k {
        let mut p = subproof(m, &d[..k], b);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = subproof(m - k, &d[k..], false);
        p.push(mth(&d[..k]));
        p
    }
}

fn leaves(n: usize) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
        .collect()
}

#[test]
fn matches_the_rfc_definitions_for_all_small_trees() {
    let n_max = if cfg!(debug_assertions) { 40 } else { 130 };
    let d = leaves(n_max);
    let mut tree = MerkleTree::new();
    let mut frontier = MerkleFrontier::new();
    assert_eq!(tree.root(), EMPTY_ROOT);
    for n in 1..=n_max {
        tree.push(d[n - 1]);
        frontier.push(d[n - 1]);
        let root = mth(&d[..n]);
        assert_eq!(tree.root(), root, "root at {n}");
        assert_eq!(frontier.root(), root, "frontier root at {n}");
        assert_eq!(tree.frontier(), frontier);
        for m in 0..n {
            let p = tree.inclusion_proof(m as u64, n as u64).unwrap();
            assert_eq!(p, path(m, &d[..n]), "path {m} in {n}");
            verify_inclusion(&d[m], m as u64, n as u64, &p, &root).unwrap();
        }
        for m in 1..=n {
            let p = tree.consistency_proof(m as u64, n as u64).unwrap();
            assert_eq!(p, subproof(m, &d[..n], true), "consistency {m} -> {n}");
            verify_consistency(m as u64, n as u64, &p, &mth(&d[..m]), &root).unwrap();
            assert_eq!(tree.root_at(m as u64).unwrap(), mth(&d[..m]));
        }
    }
}

#[test]
fn proof_requests_outside_the_tree_are_errors() {
    let mut tree = MerkleTree::new();
    for l in leaves(5) {
        tree.push(l);
    }
    for (i, n) in [(5, 5), (0, 6), (7, 3)] {
        assert!(matches!(
            tree.inclusion_proof(i, n),
            Err(AuditError::InvalidProof(_))
        ));
    }
    for (a, b) in [(0, 3), (4, 3), (2, 6)] {
        assert!(matches!(
            tree.consistency_proof(a, b),
            Err(AuditError::InvalidProof(_))
        ));
    }
    assert!(tree.root_at(6).is_err());
}

#[test]
fn truncate_undoes_pushes() {
    let d = leaves(21);
    let mut tree = MerkleTree::new();
    for l in &d {
        tree.push(*l);
    }
    for n in (0..21).rev() {
        tree.truncate(n as u64);
        assert_eq!(tree.size(), n as u64);
        assert_eq!(tree.root(), mth(&d[..n]));
    }
}

#[test]
fn frontier_bytes_round_trip_and_reject_garbage() {
    let mut f = MerkleFrontier::new();
    for l in leaves(13) {
        f.push(l);
    }
    let bytes = f.to_bytes();
    assert_eq!(MerkleFrontier::from_bytes(&bytes).unwrap(), f);
    assert!(MerkleFrontier::from_bytes(&bytes[..bytes.len() - 1]).is_err());
    assert!(MerkleFrontier::from_bytes(&bytes[..5]).is_err());
    let mut wrong = bytes.clone();
    wrong[7] = 15; // size 15 needs four node hashes, 13 has three
    assert!(MerkleFrontier::from_bytes(&wrong).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A proof altered in any way (a flipped bit, a dropped or extra element, another index
    /// or size) never verifies, and never panics.
    #[test]
    fn altered_proofs_are_rejected(n in 2usize..300, seed in any::<usize>(), bit in 0usize..256) {
        let d = leaves(n);
        let mut tree = MerkleTree::new();
        for l in &d { tree.push(*l); }
        let root = tree.root();
        let m = seed % n;
        let (n64, m64) = (n as u64, m as u64);
        let proof = tree.inclusion_proof(m64, n64).unwrap();
        prop_assert!(verify_inclusion(&d[m], m64, n64, &proof, &root).is_ok());
        if !proof.is_empty() {
            let mut flipped = proof.clone();
            let j = (seed / 7) % flipped.len();
            flipped[j][bit / 8] ^= 1 << (bit % 8);
            prop_assert!(verify_inclusion(&d[m], m64, n64, &flipped, &root).is_err());
            prop_assert!(verify_inclusion(&d[m], m64, n64, &proof[1..], &root).is_err());
        }
        let mut longer = proof.clone();
        longer.push(root);
        prop_assert!(verify_inclusion(&d[m], m64, n64, &longer, &root).is_err());
        prop_assert!(verify_inclusion(&d[m], n64, n64, &proof, &root).is_err());

        let old = 1 + (seed % n) as u64;
        let cproof = tree.consistency_proof(old, n64).unwrap();
        let old_root = tree.root_at(old).unwrap();
        prop_assert!(verify_consistency(old, n64, &cproof, &old_root, &root).is_ok());
        if !cproof.is_empty() {
            let mut flipped = cproof.clone();
            flipped[0][bit / 8] ^= 1 << (bit % 8);
            prop_assert!(verify_consistency(old, n64, &flipped, &old_root, &root).is_err());
            prop_assert!(verify_consistency(old, n64, &cproof[1..], &old_root, &root).is_err());
            prop_assert!(verify_consistency(old, n64, &cproof, &root, &old_root).is_err());
        }
    }

    /// Arbitrary bytes as proofs, roots and leaves: an error, never a panic.
    #[test]
    fn garbage_never_panics(
        leaf in proptest::collection::vec(any::<u8>(), 0..40),
        root in proptest::collection::vec(any::<u8>(), 0..40),
        proof in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..70),
        a in any::<u64>(), b in any::<u64>(),
    ) {
        let _ = verify_inclusion(&leaf, a, b, &proof, &root);
        let _ = verify_consistency(a, b, &proof, &leaf, &root);
    }
}
