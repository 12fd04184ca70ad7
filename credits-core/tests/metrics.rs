//! The ledger's operation counter through the `metrics` facade, captured by a small test
//! recorder: every command is counted under its own name, the transaction steps included.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use credits_core::tx::{HoldBranch, LedgerHolds, MemoryTxLog, TransactionManager, TxOutcome};
use credits_core::{Amount, GrantOptions, IdempotencyKey, Ledger, TenantId, TenantSettings};
use metered_clock::{ManualClock, Timestamp};
use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

#[derive(Default)]
struct Cell(AtomicU64);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

#[derive(Default, Clone)]
struct Counters(Arc<Mutex<BTreeMap<String, Arc<Cell>>>>);

impl Counters {
    fn get(&self, name: &str) -> u64 {
        self.0
            .lock()
            .unwrap()
            .get(name)
            .map_or(0, |c| c.0.load(Ordering::Relaxed))
    }
}

impl Recorder for Counters {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        Counter::from_arc(Arc::clone(self.0.lock().unwrap().entry(name).or_default()))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn every_command_is_counted_under_its_own_name() {
    let counters = Counters::default();
    metrics::with_local_recorder(&counters, || {
        futures::executor::block_on(async {
            let clock = ManualClock::new(Timestamp::from_unix_millis(1_700_000_000_000));
            let ledger = Ledger::in_memory(clock.clone());
            let t = TenantId::new("acme").unwrap();
            let k = |s: &str| IdempotencyKey::new(s).unwrap();
            ledger
                .create_tenant(&t, TenantSettings::default())
                .await
                .unwrap();
            ledger
                .grant(&t, k("g"), Amount::new(100), GrantOptions::default())
                .await
                .unwrap();
            let ledger: Ledger = Ledger::from_shared(
                Arc::clone(ledger.store()) as Arc<dyn credits_core::LedgerStore>,
                Arc::new(clock.clone()),
            );
            let tm = TransactionManager::builder(Arc::new(MemoryTxLog::new()), Arc::new(clock))
                .participant(Arc::new(LedgerHolds::new("credits", ledger.clone())))
                .build();
            let payload = HoldBranch::new(t.clone(), Amount::new(10), Amount::new(4))
                .unwrap()
                .payload();
            let tx = tm.begin(Duration::from_secs(30)).await.unwrap();
            tm.enlist(tx, "credits", payload.clone()).await.unwrap();
            assert_eq!(tm.commit(tx).await.unwrap(), TxOutcome::Committed);
            let tx = tm.begin(Duration::from_secs(30)).await.unwrap();
            tm.enlist(tx, "credits", payload).await.unwrap();
            tm.prepare(tx).await.unwrap();
            assert_eq!(tm.abort(tx).await.unwrap(), TxOutcome::Aborted);
        });
    });
    let ok = |op: &str| counters.get(&format!("credits_operations_total{{op={op},result=ok}}"));
    assert_eq!(ok("grant"), 1);
    assert_eq!(ok("prepare"), 2);
    assert_eq!(ok("commit_prepared"), 1);
    assert_eq!(ok("abort_prepared"), 1);
    assert_eq!(
        ok("refund"),
        0,
        "no transaction step is counted as a refund"
    );
}
