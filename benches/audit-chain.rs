//! audit-chain benchmarks: append (mask + chain hash + HMAC + Merkle update) against the bare
//! SHA-256 + HMAC of the same bytes; file-sink group commit against per-entry fsync;
//! verification of 1,000,000 entries; inclusion proofs at n = 1,000,000.
//!
//! `cargo bench --bench audit-chain -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs)] // criterion_group! generates an undocumented function
#![allow(clippy::print_stderr)]
// sizes are reported next to the timings

// Tests and benchmarks act as applications: they spawn tasks and sleep on tokio's timer.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;

use audit_chain::merkle::{MerkleTree, verify_inclusion};
use audit_chain::{
    AuditEntry, FileSink, HmacKey, Keyring, LogRecord, MaskingPolicy, StreamChain, verify_records,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use metered_clock::Timestamp;
use sha2::{Digest, Sha256};

fn template() -> AuditEntry {
    AuditEntry::new(
        "tenant-000042",
        "balance",
        "debit",
        Timestamp::from_unix_millis(1_700_000_000_000),
    )
    .with_amount(250)
    .with_balances(10_000, 9_750)
    .with_transaction_id("tx-7f3a9c2e-0001")
    .with_metadata("ip", "203.0.113.77")
    .with_metadata("route", "/v1/generate")
}

fn keyring() -> Keyring {
    Keyring::new(HmacKey::new(1, [0x5a; 32]).expect("valid key"))
}

fn sealed_log(n: u64) -> (Keyring, Vec<LogRecord>) {
    let ring = keyring();
    let policy = MaskingPolicy::standard();
    let mut chains: Vec<StreamChain> = (0..64)
        .map(|t| StreamChain::new(format!("tenant-{t:06}")))
        .collect();
    let records = (0..n)
        .map(|i| {
            let c = &mut chains[(i % 64) as usize];
            let mut e = template();
            e.stream = c.stream().to_owned();
            LogRecord::new(i, c.seal(&ring, &policy, e).expect("valid entry"))
        })
        .collect();
    (ring, records)
}

fn append(c: &mut Criterion) {
    let ring = keyring();
    let policy = MaskingPolicy::standard();
    let mut chain = StreamChain::new("tenant-000042");
    let mut encoded = Vec::new();
    chain
        .clone()
        .seal(&ring, &policy, template())
        .expect("valid entry")
        .encode(&mut encoded);
    let body_len = encoded.len() - 64;
    eprintln!("encoded entry: {} bytes (body {body_len})", encoded.len());

    const BATCH: u64 = 1000;
    let mut g = c.benchmark_group("audit-chain/append");
    g.throughput(Throughput::Elements(BATCH));
    let mut tree = MerkleTree::new();
    g.bench_function("seal+mask+merkle", |b| {
        b.iter(|| {
            if tree.size() > 2_000_000 {
                tree = MerkleTree::new();
            }
            for _ in 0..BATCH {
                let sealed = chain.seal(&ring, &policy, template()).expect("valid entry");
                tree.push(sealed.leaf_hash());
                black_box(&sealed);
            }
        });
    });
    let key = [0x5a_u8; 32];
    let body = &encoded[..body_len];
    g.bench_function("baseline-sha256+hmac", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                let h = Sha256::digest(black_box(body));
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("any key length");
                mac.update(black_box(body));
                black_box((h, mac.finalize()));
            }
        });
    });
    g.finish();
}

fn file_sink(c: &mut Criterion) {
    let (_, records) = sealed_log(1024);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut g = c.benchmark_group("audit-chain/file-sink");
    g.sample_size(10);
    for batch in [1024usize, 256, 1] {
        let (sink, _) = FileSink::open(&dir.path().join(format!("b{batch}"))).expect("open sink");
        g.throughput(Throughput::Elements(batch as u64));
        // Setups run ahead of their routines, so indices come from a counter, not the sink.
        let mut next = 0u64;
        g.bench_function(format!("batch-{batch}-fsync"), |b| {
            b.iter_batched(
                || {
                    let base = next;
                    next += batch as u64;
                    records[..batch]
                        .iter()
                        .enumerate()
                        .map(|(i, r)| LogRecord::new(base + i as u64, r.entry.clone()))
                        .collect::<Vec<_>>()
                },
                |batch| sink.append_blocking(&batch).expect("write"),
                BatchSize::SmallInput,
            );
        });
    }
    g.finish();
}

/// End to end: 64 tenants appending concurrently through `AuditLog` → `AuditWriter` (group
/// commit, batches of up to 256) → `FileSink` (one fdatasync per batch).
fn writer_file_sink(c: &mut Criterion) {
    use std::sync::Arc;

    use audit_chain::{AuditLog, AuditTrail, AuditWriter, WriterConfig};
    use metered_clock::SystemClock;

    const TENANTS: usize = 64;
    const PER_TENANT: u64 = 16;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let log = rt.block_on(async {
        let (sink, _) = FileSink::open(dir.path()).expect("open sink");
        let writer = AuditWriter::open(
            Arc::new(sink),
            WriterConfig::builder("bench/audit")
                .build()
                .expect("config"),
            Arc::new(SystemClock::new()),
            None,
        )
        .await
        .expect("writer");
        Arc::new(AuditLog::new(writer, keyring(), MaskingPolicy::standard()))
    });
    let mut g = c.benchmark_group("audit-chain/writer");
    g.sample_size(10);
    g.throughput(Throughput::Elements(TENANTS as u64 * PER_TENANT));
    g.bench_function("64-tenants-file-sink-durable", |b| {
        b.to_async(&rt).iter(|| {
            let log = Arc::clone(&log);
            async move {
                let tasks: Vec<_> = (0..TENANTS)
                    .map(|t| {
                        let log = Arc::clone(&log);
                        tokio::spawn(async move {
                            for _ in 0..PER_TENANT {
                                let mut e = template();
                                e.stream = format!("tenant-{t:06}");
                                log.record(e).await.expect("durable");
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("task");
                }
            }
        });
    });
    g.finish();
}

fn verify(c: &mut Criterion) {
    const N: u64 = 1_000_000;
    let (ring, records) = sealed_log(N);
    let mut tree = MerkleTree::new();
    for r in &records {
        tree.push(r.entry.leaf_hash());
    }
    let cp = audit_chain::Checkpoint {
        origin: "bench".into(),
        size: N,
        root: tree.root(),
    };
    let mut g = c.benchmark_group("audit-chain/verify");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N));
    g.bench_function("1M-entries-chain+mac+root", |b| {
        b.iter(|| {
            let report = verify_records(&ring, &records, Some(&cp));
            assert!(report.is_intact());
        });
    });
    // The same log read from a file-sink directory: frame checks and decoding included.
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let (sink, _) = FileSink::open(dir.path()).expect("open sink");
        for chunk in records.chunks(4096) {
            sink.append_blocking(chunk).expect("write");
        }
    }
    g.bench_function("1M-entries-from-files", |b| {
        b.iter(|| {
            let result = audit_chain::verify_dir(dir.path(), &ring, Some(&cp)).expect("read");
            assert!(result.report.is_intact());
        });
    });
    g.finish();

    let proof = tree.inclusion_proof(N / 3, N).expect("in range");
    eprintln!(
        "inclusion proof at n = {N}: {} hashes, {} bytes",
        proof.len(),
        proof.len() * 32
    );
    let root = tree.root();
    let mut g = c.benchmark_group("audit-chain/proof-1M");
    let mut i = 0u64;
    g.bench_function("inclusion-generate+verify", |b| {
        b.iter(|| {
            i = (i + 7_919) % N;
            let p = tree.inclusion_proof(i, N).expect("in range");
            let leaf = tree.leaf(i).expect("present");
            verify_inclusion(&leaf, i, N, &p, &root).expect("valid proof");
        });
    });
    g.bench_function("consistency-generate+verify", |b| {
        let old = N / 3 + 1;
        let old_root = tree.root_at(old).expect("in range");
        b.iter(|| {
            let p = tree.consistency_proof(old, N).expect("in range");
            audit_chain::merkle::verify_consistency(old, N, &p, &old_root, &root)
                .expect("valid proof");
        });
    });
    g.finish();
}

criterion_group!(benches, append, file_sink, writer_file_sink, verify);
criterion_main!(benches);
