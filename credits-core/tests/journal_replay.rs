//! `Ledger::verify_journal` / `JournalReplay`: a real journal replays to the stored counters;
//! a lost, doubled or altered row, or counters that drifted, are named at the first entry
//! that disagrees.

use std::time::Duration;

use credits_core::{
    Amount, GrantOptions, IdempotencyKey, JournalCheck, JournalEntry, JournalReplay, Ledger,
    LedgerStore as _, MemoryLedgerStore, PageRequest, TenantId, TenantSettings, Totals,
};
use metered_clock::{ManualClock, Timestamp};

fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::new(s).unwrap()
}

/// A tenant with grants, a hold committed in part, a consume, a refund, an expiry and an
/// overdraft; its journal and stored counters.
async fn history() -> (
    Ledger<MemoryLedgerStore>,
    TenantId,
    Vec<JournalEntry>,
    Totals,
) {
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_700_000_000_000));
    let ledger = Ledger::new(MemoryLedgerStore::new(), clock.clone());
    let t = TenantId::new("acme").unwrap();
    ledger
        .create_tenant(
            &t,
            TenantSettings {
                overdraft_limit: Amount::new(50),
                ..TenantSettings::default()
            },
        )
        .await
        .unwrap();
    let soon = Timestamp::from_unix_millis(1_700_000_005_000);
    ledger
        .grant(
            &t,
            key("g1"),
            Amount::new(100),
            GrantOptions::default().expires_at(soon),
        )
        .await
        .unwrap();
    ledger
        .grant(&t, key("g2"), Amount::new(40), GrantOptions::default())
        .await
        .unwrap();
    let h = ledger
        .reserve(&t, key("r"), Amount::new(30), Duration::from_secs(60))
        .await
        .unwrap();
    ledger
        .commit(&t, key("c"), h.hold, Amount::new(20))
        .await
        .unwrap();
    let spent = ledger.consume(&t, key("u"), Amount::new(15)).await.unwrap();
    ledger
        .refund(&t, key("rf"), spent.entry, Amount::new(5))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(10));
    ledger.recover().await.unwrap(); // the first lot expires
    ledger.consume(&t, key("o"), Amount::new(60)).await.unwrap(); // into the overdraft
    let journal = ledger
        .history(&t, PageRequest::first(1_000))
        .await
        .unwrap()
        .entries;
    let totals = ledger.store().totals(&t).await.unwrap();
    (ledger, t, journal, totals)
}

fn replay(entries: &[JournalEntry], totals: &Totals) -> Result<u64, credits_core::JournalMismatch> {
    let mut r = JournalReplay::new();
    for e in entries {
        r.push(e);
    }
    r.finish(totals)
}

#[tokio::test]
async fn a_real_journal_replays_to_its_counters() {
    let (ledger, t, journal, totals) = history().await;
    assert!(totals.overdrawn > Amount::ZERO && totals.expired > Amount::ZERO);
    assert_eq!(
        ledger.verify_journal(&t).await.unwrap(),
        Ok(journal.len() as u64)
    );
}

#[tokio::test]
async fn a_lost_row_is_a_sequence_gap() {
    let (_, _, mut journal, totals) = history().await;
    let lost = journal.remove(3);
    let m = replay(&journal, &totals).unwrap_err();
    assert_eq!(
        (m.check, m.entry),
        (JournalCheck::Sequence, Some(journal[3].seq))
    );
    assert_eq!(lost.seq.get(), 4);
}

#[tokio::test]
async fn a_doubled_row_is_caught() {
    let (_, _, mut journal, totals) = history().await;
    journal.insert(2, journal[2].clone());
    let m = replay(&journal, &totals).unwrap_err();
    assert_eq!(m.check, JournalCheck::Sequence);
}

#[tokio::test]
async fn an_altered_amount_breaks_conservation() {
    let (_, _, mut journal, totals) = history().await;
    journal[1].amount = Amount::new(41);
    let m = replay(&journal, &totals).unwrap_err();
    assert_eq!(
        (m.check, m.entry),
        (JournalCheck::Conservation, Some(journal[1].seq))
    );
}

#[tokio::test]
async fn a_broken_link_between_entries_is_caught() {
    let (_, _, mut journal, totals) = history().await;
    journal[4].before.available = Amount::new(1);
    let m = replay(&journal, &totals).unwrap_err();
    assert_eq!(
        (m.check, m.entry),
        (JournalCheck::Continuity, Some(journal[4].seq))
    );
}

#[tokio::test]
async fn counters_that_drifted_from_the_journal_are_caught() {
    let (_, _, journal, mut totals) = history().await;
    totals.consumed = Amount::new(totals.consumed.units() + 1);
    let m = replay(&journal, &totals).unwrap_err();
    assert_eq!((m.check, m.entry), (JournalCheck::Counters, None));
}
