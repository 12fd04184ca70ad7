//! The first thing to run: a tenant's credits from grant to conservation check, with every
//! balance change recorded in a tamper-evident audit log that is verified at the end.
//!
//! `cargo run --example quickstart`
#![allow(clippy::print_stdout)] // an example prints what it does

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use metered_suite::audit::{
    AuditWriter, FileSink, Keyring, MaskingPolicy, MemoryAuditQueue, NoteSigner, WriterConfig,
    verify_dir,
};
use metered_suite::clock::{Clock, ManualClock, Timestamp};
use metered_suite::credits::audit::{LedgerAudit, MemoryAudit};
use metered_suite::credits::store::PageRequest;
use metered_suite::credits::{
    Amount, GrantOptions, IdempotencyKey, Ledger, LedgerError, MemoryLedgerStore, TenantId,
    TenantSettings,
};

const ORIGIN: &str = "quickstart.example/audit";

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::new(k).expect("a valid key")
}

/// `target/quickstart-<name>` in the workspace.
fn target(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/quickstart-{name}"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    // A clock we move by hand, so the expiry below happens on cue.
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_767_225_600_000)); // 2026-01-01

    // 0. An audit log in a fresh directory. The demo HMAC key goes in the key file the
    //    `audit-verify` CLI reads (a real deployment keeps keys in a secret store).
    let dir = target("audit");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let keys = target("audit.keys");
    std::fs::write(&keys, format!("1:{}\n", "5a".repeat(32)))?;
    let keyring = Arc::new(Keyring::from_key_file(&std::fs::read_to_string(&keys)?)?);
    let signer = NoteSigner::new("quickstart.example", [7u8; 32])?;
    let verifier_key = signer.verifier_key();
    let (sink, _) = FileSink::open(&dir)?;
    // The ledger seals each change's audit entries in the change's own step and queues
    // them; the writer integrates the queue into the Merkle log (a failing disk delays it,
    // never loses an entry; past 100,000 queued entries changes are refused).
    let queue = Arc::new(MemoryAuditQueue::new(100_000));
    let writer = AuditWriter::open_with_queue(
        Arc::new(sink),
        queue.clone(),
        WriterConfig::builder(ORIGIN).build()?,
        Arc::new(clock.clone()),
        Some(signer),
    )
    .await?;
    println!("audit log:          {}", dir.display());

    let audit = LedgerAudit::new(keyring.clone(), MaskingPolicy::standard());
    let store = MemoryLedgerStore::builder()
        .audit(MemoryAudit::new(audit, queue).resuming_from(writer.clone()))
        .build();
    let ledger = Ledger::new(store, clock.clone());
    let acme = TenantId::new("acme")?;
    ledger
        .create_tenant(&acme, TenantSettings::default())
        .await?;

    // 1. Grants: a monthly allowance that expires in 30 days, and purchased credits that don't.
    let in_30_days = clock
        .now()
        .saturating_add(Duration::from_secs(30 * 24 * 3600));
    ledger
        .grant(
            &acme,
            key("allowance-jan"),
            Amount::new(500),
            GrantOptions::default().expires_at(in_30_days),
        )
        .await?;
    ledger
        .grant(
            &acme,
            key("purchase-1"),
            Amount::new(1_000),
            GrantOptions::default(),
        )
        .await?;
    println!("granted:            {}", ledger.balance(&acme).await?);

    // 2. Hold 300 before an expensive job, then pay for the 120 it really used.
    let hold = ledger
        .reserve(
            &acme,
            key("job-1/hold"),
            Amount::new(300),
            Duration::from_secs(60),
        )
        .await?;
    let hold = hold.hold;
    let done = ledger
        .commit(&acme, key("job-1/commit"), hold, Amount::new(120))
        .await?;
    println!("job-1 committed:    {:?} -> {}", done.effect, done.balance);

    // 3. A consume larger than what is left fails, and changes nothing.
    match ledger.consume(&acme, key("huge"), Amount::new(5_000)).await {
        Err(e @ LedgerError::InsufficientCredits { .. }) => println!("refused:            {e}"),
        other => println!("unexpected:         {other:?}"),
    }

    // 4. A retried request (same key, same request) is applied once.
    let first = ledger
        .consume(&acme, key("api-call-42"), Amount::new(7))
        .await?;
    let retry = ledger
        .consume(&acme, key("api-call-42"), Amount::new(7))
        .await?;
    println!(
        "retry is a replay:  {} (balance: {})",
        first == retry,
        retry.balance
    );

    // 5. A hold whose owner vanished expires and its credits come back.
    let orphan = ledger
        .reserve(
            &acme,
            key("job-2/hold"),
            Amount::new(50),
            Duration::from_secs(30),
        )
        .await?;
    clock.advance(Duration::from_secs(31));
    let swept = ledger.sweep_step(100).await?;
    let orphan = orphan.hold;
    println!(
        "sweeper:            {} hold(s) expired; hold {orphan} is {:?}",
        swept.holds_expired,
        ledger.hold(&acme, orphan).await?
    );
    match ledger
        .commit(&acme, key("job-2/commit"), orphan, Amount::new(10))
        .await
    {
        Err(e) => println!("late commit:        {e}"),
        Ok(o) => println!("unexpected:         {o:?}"),
    }

    // 6. The journal, and the conservation check.
    println!("history:");
    for e in ledger.history(&acme, PageRequest::first(50)).await?.entries {
        println!(
            "  #{:<2} {:<13} {:>5}  available {:>5}  held {:>4}",
            e.seq,
            e.kind.as_str(),
            e.amount,
            e.after.available,
            e.after.held
        );
    }
    match ledger.check_conservation(None).await? {
        Ok(t) => println!(
            "conservation ok:    granted {} = available {} + held {} + consumed {} + expired {}",
            t.granted, t.available, t.held, t.consumed, t.expired
        ),
        Err(violation) => println!("CONSERVATION VIOLATED: {violation}"),
    }

    // 7. Write out the audit log with a signed checkpoint, keep the checkpoint and its
    //    public key apart from the log, and verify every entry against them.
    writer.close().await?;
    let checkpoint = writer
        .latest_signed_checkpoint()
        .ok_or("the writer signs its checkpoints")?;
    let (note, public_key) = (target("audit.checkpoint"), target("audit.pub"));
    std::fs::write(&note, &checkpoint.note)?;
    std::fs::write(&public_key, &verifier_key)?;
    let verified = verify_dir(&dir, &keyring, Some(&checkpoint.checkpoint))?;
    let report = verified.report;
    match &report.failure {
        None => println!(
            "audit log intact:   {} entries in {} stream(s), checkpoint matched: {}",
            report.entries_ok, report.streams, report.checkpoint_matched
        ),
        Some(failure) => println!("AUDIT LOG DAMAGED:  {failure}"),
    }
    println!("verify it yourself:");
    println!(
        "  cargo run -q -p audit-chain --bin audit-verify -- --dir {} --keys {} \\\n    \
         --checkpoint {} --public-key {} --origin {ORIGIN}",
        dir.display(),
        keys.display(),
        note.display(),
        public_key.display()
    );
    Ok(())
}
