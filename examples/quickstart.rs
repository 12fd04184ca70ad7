//! The first thing to run: a tenant's credits from grant to conservation check.
//!
//! `cargo run --example quickstart`
#![allow(clippy::print_stdout)] // an example prints what it does

use std::time::Duration;

use metered_suite::clock::{Clock, ManualClock, Timestamp};
use metered_suite::credits::store::PageRequest;
use metered_suite::credits::{
    Amount, GrantOptions, IdempotencyKey, Ledger, LedgerError, TenantId, TenantSettings,
};

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::new(k).expect("a valid key")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), LedgerError> {
    // A clock we move by hand, so the expiry below happens on cue.
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_767_225_600_000)); // 2026-01-01
    let ledger = Ledger::in_memory(clock.clone());
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
    let hold = hold.hold().expect("a reserve creates a hold");
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
    let orphan = orphan.hold().expect("a hold");
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
    Ok(())
}
