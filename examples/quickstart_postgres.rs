//! The quickstart on PostgreSQL: migrations, a tenant's credits from grant to conservation
//! check, an audit chain sealed in the same transactions, and the recovery jobs.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo run --example quickstart_postgres
//! ```
//!
//! It migrates the schema in the connection's `search_path` (idempotent) and works on a new
//! tenant each run, so it can be run again and again.
#![allow(clippy::print_stdout)] // an example prints what it does

use std::sync::Arc;
use std::time::Duration;

use metered_suite::audit::{HmacKey, Keyring, LogRecord, MaskingPolicy, verify_records};
use metered_suite::clock::{Clock, SystemClock};
use metered_suite::credits::store::PageRequest;
use metered_suite::credits::tx::{LedgerHolds, TransactionManager};
use metered_suite::credits::{
    Amount, GrantOptions, IdempotencyKey, Ledger, LedgerError, TenantId, TenantSettings,
};
use metered_suite::credits_postgres::{LedgerAudit, PgConfig, PgLedgerStore};

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::new(k).expect("a valid key")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        println!("set DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/test) to run this");
        return Ok(());
    };
    let clock = Arc::new(SystemClock::new());
    // In production the HMAC key comes from a secret store.
    let keyring = Arc::new(Keyring::new(HmacKey::new(1, [0x5a; 32])?));
    let config = PgConfig::builder(url)
        .pool_max_size(4)
        .audit(LedgerAudit::new(keyring.clone(), MaskingPolicy::standard()))
        .build()?;
    let store = PgLedgerStore::connect(config, clock.clone())?;
    let migrated = store.migrate().await?;
    println!(
        "schema version:     {} (applied now: {:?})",
        migrated.version, migrated.applied
    );

    let ledger = Ledger::from_shared(Arc::new(store.clone()), clock.clone());
    let acme = TenantId::new(format!("acme-{}", clock.now().as_unix_millis()))?;
    ledger
        .create_tenant(&acme, TenantSettings::default())
        .await?;

    // 1. Grants: an allowance that expires in 30 days, purchased credits that don't.
    let in_30_days = clock
        .now()
        .saturating_add(Duration::from_secs(30 * 24 * 3600));
    ledger
        .grant(
            &acme,
            key("allowance"),
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
    println!("granted:            {:?}", ledger.balance(&acme).await?);

    // 2. Hold 300 before an expensive job, then pay for the 120 it used.
    let hold = ledger
        .reserve(
            &acme,
            key("job-1/hold"),
            Amount::new(300),
            Duration::from_secs(60),
        )
        .await?
        .hold;
    let done = ledger
        .commit(&acme, key("job-1/commit"), hold, Amount::new(120))
        .await?;
    println!(
        "job-1 committed:    {:?} -> {:?}",
        done.effect, done.balance
    );

    // 3. Too much is refused and changes nothing; a retried request is applied once.
    match ledger.consume(&acme, key("huge"), Amount::new(5_000)).await {
        Err(e @ LedgerError::InsufficientCredits { .. }) => println!("refused:            {e}"),
        other => println!("unexpected:         {other:?}"),
    }
    let first = ledger
        .consume(&acme, key("api-call-42"), Amount::new(7))
        .await?;
    let retry = ledger
        .consume(&acme, key("api-call-42"), Amount::new(7))
        .await?;
    assert_eq!(first, retry);
    println!("retried consume:    applied once, entry {}", first.entry);

    // 4. The journal, the audit chain (one sealed entry per journal entry, verified), and
    //    conservation.
    let page = ledger.history(&acme, PageRequest::first(100)).await?;
    let sealed = store.audit_entries(&acme, 0, 100).await?;
    let records: Vec<LogRecord> = sealed
        .into_iter()
        .enumerate()
        .map(|(i, s)| LogRecord::new(i as u64, s))
        .collect();
    let report = verify_records(&keyring, &records, None);
    println!(
        "journal:            {} entries; audit chain: {} entries, intact: {}",
        page.entries.len(),
        records.len(),
        report.is_intact()
    );
    let totals = ledger.check_conservation(Some(&acme)).await??;
    println!(
        "conserved:          granted {} = available {} + consumed {}",
        totals.granted, totals.available, totals.consumed
    );

    // 5. Recovery (what the application schedules every few seconds): the one pass of the
    //    transaction manager expires due holds and lots, decides stalled transactions,
    //    finishes decided ones and releases prepared work left behind; the clean-up of old
    //    finished transactions is a daily job.
    let tm = TransactionManager::builder(Arc::new(store.tx_log()), clock.clone())
        .participant(Arc::new(LedgerHolds::new("credits", ledger.clone())))
        .build();
    let recovered = tm.recover().await?;
    let cleaned = store.cleanup_old_transactions(90).await?;
    println!(
        "recovery:           {} transactions finished, {} in doubt, {cleaned} cleaned",
        recovered.committed + recovered.aborted,
        recovered.in_doubt
    );
    Ok(())
}
