//! The RFC 9162 Merkle tree over all entries: an O(log n) frontier, a full tree that serves
//! proofs, and proof verifiers that never panic.
//!
//! Leaf hash `SHA-256(0x00 ‖ leaf)`, node hash `SHA-256(0x01 ‖ left ‖ right)`, root of the
//! empty tree `SHA-256("")`.

use sha2::{Digest, Sha256};

use crate::AuditError;
use crate::entry::Hash;

/// Root of the empty tree: `SHA-256("")`.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// `SHA-256(0x00 ‖ data)`: the RFC 9162 hash of a leaf's data.
///
/// ```
/// use audit_chain::merkle::leaf_hash;
/// assert_eq!(leaf_hash(b"")[..4], [0x6e, 0x34, 0x0b, 0x9c]);
/// ```
#[must_use]
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`: the RFC 9162 hash of an interior node.
#[must_use]
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two strictly below `n` (`n ≥ 2`).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The right edge of a tree: one subtree root per set bit of the size. O(log n) memory;
/// enough to append and to compute the root, and cheap to persist.
///
/// ```
/// use audit_chain::merkle::{MerkleFrontier, leaf_hash, node_hash, EMPTY_ROOT};
/// let mut f = MerkleFrontier::new();
/// assert_eq!(f.root(), EMPTY_ROOT);
/// let (a, b, c) = (leaf_hash(b"a"), leaf_hash(b"b"), leaf_hash(b"c"));
/// f.push(a); f.push(b); f.push(c);
/// assert_eq!(f.root(), node_hash(&node_hash(&a, &b), &c));
/// let restored = MerkleFrontier::from_bytes(&f.to_bytes())?;
/// assert_eq!(restored, f);
/// # Ok::<(), audit_chain::AuditError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MerkleFrontier {
    size: u64,
    /// Roots of the perfect subtrees, largest (leftmost) first.
    nodes: Vec<Hash>,
}

impl MerkleFrontier {
    /// The empty tree.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut s = self.size;
        while s & 1 == 1 {
            // One node per set bit, so a set bit always has a node to pop.
            let Some(left) = self.nodes.pop() else { break };
            h = node_hash(&left, &h);
            s >>= 1;
        }
        self.nodes.push(h);
        self.size += 1;
    }

    /// The root hash.
    #[must_use]
    pub fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        let Some(last) = it.next() else {
            return EMPTY_ROOT;
        };
        it.fold(*last, |acc, left| node_hash(left, &acc))
    }

    /// `size (u64 BE) ‖ nodes`.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + 32 * self.nodes.len());
        v.extend_from_slice(&self.size.to_be_bytes());
        for n in &self.nodes {
            v.extend_from_slice(n);
        }
        v
    }

    /// Parses [`to_bytes`](Self::to_bytes) output.
    ///
    /// # Errors
    /// [`AuditError::Decode`] if the length does not match the size's bit count.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AuditError> {
        let (size, rest) = bytes
            .split_first_chunk::<8>()
            .ok_or_else(|| AuditError::decode("frontier", "shorter than 8 bytes"))?;
        let size = u64::from_be_bytes(*size);
        if rest.len() != 32 * size.count_ones() as usize {
            return Err(AuditError::decode(
                "frontier",
                format!("size {size} needs {} node hashes", size.count_ones()),
            ));
        }
        let nodes = rest
            .chunks_exact(32)
            .map(|c| {
                let mut h = [0u8; 32];
                h.copy_from_slice(c);
                h
            })
            .collect();
        Ok(MerkleFrontier { size, nodes })
    }
}

/// The whole tree, kept as one vector of perfect-subtree roots per level (about 64 bytes
/// per leaf): appends in amortised O(1), roots of any past size and proofs in O(log n).
///
/// ```
/// use audit_chain::merkle::{MerkleTree, leaf_hash, verify_inclusion, verify_consistency};
/// let mut tree = MerkleTree::new();
/// for i in 0..10u8 { tree.push(leaf_hash(&[i])); }
/// let proof = tree.inclusion_proof(3, 10)?;
/// verify_inclusion(&leaf_hash(&[3]), 3, 10, &proof, &tree.root())?;
/// let old_root = tree.root_at(6)?;
/// let proof = tree.consistency_proof(6, 10)?;
/// verify_consistency(6, 10, &proof, &old_root, &tree.root())?;
/// # Ok::<(), audit_chain::AuditError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct MerkleTree {
    /// `levels[l][i]` is the root of leaves `[i·2^l, (i+1)·2^l)`.
    levels: Vec<Vec<Hash>>,
}

impl MerkleTree {
    /// The empty tree.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        self.levels[0].push(leaf);
        let mut l = 0;
        while self.levels[l].len().is_multiple_of(2) {
            let n = self.levels[l].len();
            let h = node_hash(&self.levels[l][n - 2], &self.levels[l][n - 1]);
            if self.levels.len() == l + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[l + 1].push(h);
            l += 1;
        }
    }

    /// Drops leaves back to `size` (used to undo a batch that failed to be written).
    pub fn truncate(&mut self, size: u64) {
        for (l, level) in self.levels.iter_mut().enumerate() {
            level.truncate(usize::try_from(size >> l).unwrap_or(usize::MAX));
        }
        while self.levels.last().is_some_and(Vec::is_empty) {
            self.levels.pop();
        }
    }

    /// The leaf hash at `index`, if present.
    #[must_use]
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        let i = usize::try_from(index).ok()?;
        self.levels.first()?.get(i).copied()
    }

    /// The current root.
    #[must_use]
    pub fn root(&self) -> Hash {
        self.subtree(0, self.size())
    }

    /// The root the tree had when it held `size` leaves.
    ///
    /// # Errors
    /// [`AuditError::InvalidProof`] if `size` is larger than the tree.
    pub fn root_at(&self, size: u64) -> Result<Hash, AuditError> {
        if size > self.size() {
            return Err(AuditError::InvalidProof(format!(
                "size {size} is beyond the tree ({} leaves)",
                self.size()
            )));
        }
        Ok(self.subtree(0, size))
    }

    /// The O(log n) frontier of the current tree.
    #[must_use]
    pub fn frontier(&self) -> MerkleFrontier {
        let size = self.size();
        let mut nodes = Vec::new();
        let mut lo = 0u64;
        for bit in (0..64).rev() {
            let width = 1u64 << bit;
            if size & width != 0 {
                nodes.push(self.subtree(lo, lo + width));
                lo += width;
            }
        }
        MerkleFrontier { size, nodes }
    }

    /// Hash of leaves `[lo, hi)`, where `lo` is a multiple of the largest power of two
    /// not above `hi - lo` (true of every range the RFC recursion visits).
    fn subtree(&self, lo: u64, hi: u64) -> Hash {
        let n = hi - lo;
        if n == 0 {
            return EMPTY_ROOT;
        }
        if n.is_power_of_two() && lo.is_multiple_of(n) {
            let level = n.trailing_zeros() as usize;
            let i = usize::try_from(lo >> level).unwrap_or(usize::MAX);
            return self.levels[level][i];
        }
        let k = split_point(n);
        node_hash(&self.subtree(lo, lo + k), &self.subtree(lo + k, hi))
    }

    /// The audit path of leaf `index` in the tree of size `size` (RFC 9162 §2.1.3.1),
    /// leaf-side first.
    ///
    /// # Errors
    /// [`AuditError::InvalidProof`] unless `index < size ≤ self.size()`.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, AuditError> {
        if index >= size || size > self.size() {
            return Err(AuditError::InvalidProof(format!(
                "no leaf {index} in a tree of size {size} (tree has {} leaves)",
                self.size()
            )));
        }
        let mut path = Vec::with_capacity(64);
        let (mut lo, mut hi) = (0u64, size);
        let mut siblings = Vec::with_capacity(64);
        while hi - lo > 1 {
            let k = split_point(hi - lo);
            if index < lo + k {
                siblings.push((lo + k, hi));
                hi = lo + k;
            } else {
                siblings.push((lo, lo + k));
                lo += k;
            }
        }
        for &(a, b) in siblings.iter().rev() {
            path.push(self.subtree(a, b));
        }
        Ok(path)
    }

    /// The proof that the tree of size `old` is a prefix of the tree of size `new`
    /// (RFC 9162 §2.1.4.1). Empty when `old == new`.
    ///
    /// # Errors
    /// [`AuditError::InvalidProof`] unless `0 < old ≤ new ≤ self.size()`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, AuditError> {
        if old == 0 || old > new || new > self.size() {
            return Err(AuditError::InvalidProof(format!(
                "no consistency proof from size {old} to {new} (tree has {} leaves)",
                self.size()
            )));
        }
        let mut out = Vec::new();
        let (mut lo, mut hi, mut m) = (0u64, new, old);
        let mut whole = true;
        let mut pending = Vec::new();
        loop {
            let n = hi - lo;
            if m == n {
                if !whole {
                    out.push(self.subtree(lo, hi));
                }
                break;
            }
            let k = split_point(n);
            if m <= k {
                pending.push((lo + k, hi));
                hi = lo + k;
            } else {
                pending.push((lo, lo + k));
                lo += k;
                m -= k;
                whole = false;
            }
        }
        for &(a, b) in pending.iter().rev() {
            out.push(self.subtree(a, b));
        }
        Ok(out)
    }
}

fn as_hash(bytes: &[u8], what: &str) -> Result<Hash, AuditError> {
    bytes
        .try_into()
        .map_err(|_| AuditError::InvalidProof(format!("{what} is {} bytes, not 32", bytes.len())))
}

/// Checks that `leaf` is leaf `index` of the tree of size `size` whose root is `root`
/// (RFC 9162 §2.1.3.2). Takes raw bytes so that hashes of the wrong length are an error,
/// not a panic.
///
/// # Errors
/// [`AuditError::InvalidProof`] on any mismatch: index out of range, wrong proof length,
/// wrong hash lengths, or a computed root different from `root`.
pub fn verify_inclusion<P: AsRef<[u8]>>(
    leaf: &[u8],
    index: u64,
    size: u64,
    proof: &[P],
    root: &[u8],
) -> Result<(), AuditError> {
    if index >= size {
        return Err(AuditError::InvalidProof(format!(
            "leaf index {index} is not below tree size {size}"
        )));
    }
    let leaf = as_hash(leaf, "leaf hash")?;
    let root = as_hash(root, "root")?;
    let (mut f, mut s) = (index, size - 1);
    let mut r = leaf;
    for p in proof {
        let p = as_hash(p.as_ref(), "proof hash")?;
        if s == 0 {
            return Err(AuditError::InvalidProof("proof is too long".into()));
        }
        if f & 1 == 1 || f == s {
            r = node_hash(&p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, &p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(AuditError::InvalidProof("proof is too short".into()));
    }
    if !bool::from(subtle::ConstantTimeEq::ct_eq(&r[..], &root[..])) {
        return Err(AuditError::InvalidProof(
            "computed root does not match".into(),
        ));
    }
    Ok(())
}

/// Checks that the tree of size `size1` with root `root1` is a prefix of the tree of size
/// `size2` with root `root2` (RFC 9162 §2.1.4.2). A proof from the empty tree proves
/// nothing and is rejected; equal sizes need an empty proof and equal roots.
///
/// # Errors
/// [`AuditError::InvalidProof`] on any mismatch.
pub fn verify_consistency<P: AsRef<[u8]>>(
    size1: u64,
    size2: u64,
    proof: &[P],
    root1: &[u8],
    root2: &[u8],
) -> Result<(), AuditError> {
    let bad = |m: &str| Err(AuditError::InvalidProof(m.to_owned()));
    if size1 == 0 {
        return bad("a consistency proof from the empty tree proves nothing");
    }
    if size2 < size1 {
        return bad("size2 is smaller than size1");
    }
    if size1 == size2 {
        // Equal trees: nothing to prove beyond the roots being the same bytes.
        if !proof.is_empty() {
            return bad("equal sizes need an empty proof");
        }
        if root1 != root2 {
            return bad("equal sizes but different roots");
        }
        return Ok(());
    }
    let root1 = as_hash(root1, "root1")?;
    let root2 = as_hash(root2, "root2")?;
    if proof.is_empty() {
        return bad("empty proof");
    }
    let mut path = Vec::with_capacity(proof.len() + 1);
    if size1.is_power_of_two() {
        path.push(root1);
    }
    for p in proof {
        path.push(as_hash(p.as_ref(), "proof hash")?);
    }
    let (mut f, mut s) = (size1 - 1, size2 - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if s == 0 {
            return bad("proof is too long");
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return bad("proof is too short");
    }
    if fr != root1 {
        return bad("proof does not lead to root1");
    }
    if sr != root2 {
        return bad("proof does not lead to root2");
    }
    Ok(())
}
