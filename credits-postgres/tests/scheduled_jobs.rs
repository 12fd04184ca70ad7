//! The scheduled jobs on pg_cron: `credits_schedule_jobs()` registers every job of
//! `credits_jobs()` for the schema, and each one runs and succeeds (schedules shortened to
//! every minute for the test). Needs pg_cron preloaded with `cron.database_name` set to the
//! test database (`.ci/run` sets it up); without it the test fails, naming what is missing.

// Tests act as applications: they spawn connection tasks and wait on tokio's timer.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use credits_core::{Amount, GrantOptions, IdempotencyKey, Ledger, TenantId, TenantSettings};
use metered_clock::{Clock, ManualClock, SystemClock};

/// How long the jobs get to run once (each runs at the next minute boundary).
const WAIT_MAX: Duration = Duration::from_secs(150);
const POLL: Duration = Duration::from_secs(2);

#[tokio::test]
async fn every_job_is_registered_and_runs_successfully() {
    let Some(db) = common::test_db("scheduled_jobs").await else {
        return;
    };
    let preload: String = db
        .admin
        .query_one("SHOW shared_preload_libraries", &[])
        .await
        .expect("show")
        .get(0);
    assert!(
        preload.contains("pg_cron"),
        "pg_cron is not in shared_preload_libraries ({preload:?}): run .ci/run's PostgreSQL step"
    );
    db.admin
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
        .await
        .unwrap_or_else(|e| {
            panic!("CREATE EXTENSION pg_cron (is cron.database_name this database?): {e}")
        });

    // Something for each job to do: an hour of the ledger for the statistics, a stalled
    // transaction for recovery.
    let clock = ManualClock::new(SystemClock::new().now());
    let store = db.store(db.config(), Arc::new(clock.clone())).await;
    let ledger = Ledger::from_shared(Arc::new(store.clone()), Arc::new(clock));
    let acme = TenantId::new("acme").expect("tenant");
    ledger
        .create_tenant(&acme, TenantSettings::default())
        .await
        .expect("create");
    ledger
        .grant(
            &acme,
            IdempotencyKey::new("g").expect("key"),
            Amount::new(100),
            GrantOptions::default(),
        )
        .await
        .expect("grant");
    ledger
        .consume(
            &acme,
            IdempotencyKey::new("c").expect("key"),
            Amount::new(30),
        )
        .await
        .expect("consume");
    let refused = ledger
        .consume(
            &acme,
            IdempotencyKey::new("x").expect("key"),
            Amount::new(1_000),
        )
        .await;
    assert!(refused.is_err(), "{refused:?}");
    db.admin
        .batch_execute("INSERT INTO distributed_transactions (deadline) VALUES (1)")
        .await
        .expect("stalled transaction");
    assert_eq!(
        db.count("SELECT count(*) FROM credits_stats_hourly").await,
        0
    );

    // Registered: one job per credits_jobs() row, named after the schema, run in it.
    let wanted: BTreeMap<String, String> = db
        .admin
        .query("SELECT name, command FROM credits_jobs()", &[])
        .await
        .expect("jobs")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(wanted.len() >= 4, "{wanted:?}");
    let registered = db
        .admin
        .query("SELECT job FROM credits_schedule_jobs('* * * * *')", &[])
        .await
        .expect("schedule");
    assert_eq!(registered.len(), wanted.len());
    let prefix = format!("credits/{}/", db.schema);
    let jobs: BTreeMap<String, (i64, String, String)> = db
        .admin
        .query(
            "SELECT jobname::text, jobid, schedule, command FROM cron.job \
             WHERE starts_with(jobname, $1)",
            &[&prefix],
        )
        .await
        .expect("cron.job")
        .iter()
        .map(|r| {
            let name: String = r.get(0);
            (
                name.trim_start_matches(&prefix).to_owned(),
                (r.get(1), r.get(2), r.get(3)),
            )
        })
        .collect();
    assert_eq!(
        jobs.keys().collect::<Vec<_>>(),
        wanted.keys().collect::<Vec<_>>()
    );
    for (name, (_, schedule, command)) in &jobs {
        assert_eq!(schedule, "* * * * *", "{name}");
        assert_eq!(
            command,
            &format!("SET search_path TO {}; {}", db.schema, wanted[name]),
            "{name}"
        );
    }
    // Registering again updates the same jobs instead of adding others.
    db.admin
        .query("SELECT job FROM credits_schedule_jobs('* * * * *')", &[])
        .await
        .expect("schedule again");
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM cron.job WHERE starts_with(jobname, '{prefix}')"
        ))
        .await,
        wanted.len() as i64
    );

    // Each runs and succeeds; a failed run fails the test at once.
    let ids: Vec<i64> = jobs.values().map(|(id, _, _)| *id).collect();
    let mut waited = Duration::ZERO;
    let succeeded = loop {
        let rows = db
            .admin
            .query(
                "SELECT jobid, status, coalesce(return_message, '') FROM cron.job_run_details \
                 WHERE jobid = ANY($1) AND status IN ('succeeded', 'failed')",
                &[&ids],
            )
            .await
            .expect("cron.job_run_details");
        let failed: Vec<String> = rows
            .iter()
            .filter(|r| r.get::<_, String>(1) == "failed")
            .map(|r| format!("job {}: {}", r.get::<_, i64>(0), r.get::<_, String>(2)))
            .collect();
        assert!(failed.is_empty(), "failed runs: {failed:?}");
        let done: std::collections::BTreeSet<i64> = rows.iter().map(|r| r.get(0)).collect();
        if done.len() == ids.len() {
            break done;
        }
        assert!(
            waited < WAIT_MAX,
            "after {waited:?} only jobs {done:?} of {ids:?} have run (is pg_cron's launcher up?)"
        );
        tokio::time::sleep(POLL).await;
        waited += POLL;
    };
    assert_eq!(succeeded.len(), jobs.len());

    // And did their work.
    assert_eq!(
        db.count("SELECT count(*) FROM distributed_transactions WHERE phase = 'aborting'")
            .await,
        1,
        "recover-stalled decided the stalled transaction"
    );
    let stats = db
        .admin
        .query_one(
            "SELECT operations, failures, entries, consumed::bigint FROM credits_stats_hourly \
             WHERE tenant = 'acme'",
            &[],
        )
        .await
        .expect("refresh-stats refreshed the view");
    let stats: (i64, i64, i64, i64) = (stats.get(0), stats.get(1), stats.get(2), stats.get(3));
    assert_eq!(
        stats,
        (3, 1, 2, 30),
        "operations, failures, entries, consumed"
    );

    assert_eq!(
        db.count("SELECT credits_unschedule_jobs()").await,
        jobs.len() as i64
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM cron.job WHERE starts_with(jobname, '{prefix}')"
        ))
        .await,
        0
    );
    db.drop_schema().await;
}

#[tokio::test]
async fn without_pg_cron_nothing_is_registered() {
    // The `postgres` database of the same server: pg_cron lives only in
    // cron.database_name, so there the extension is absent.
    let Ok(url) = std::env::var("DATABASE_URL") else {
        assert!(
            !common::database_required(),
            "DATABASE_URL is not set but REQUIRE_DATABASE=1"
        );
        return;
    };
    let (base, _) = url
        .rsplit_once('/')
        .expect("a database URL names its database");
    let db = common::TestDb::create(format!("{base}/postgres"), "scheduled_jobs_absent").await;
    let _store = db.default_store().await;
    assert_eq!(
        db.count("SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'")
            .await,
        0
    );
    assert!(db.count("SELECT count(*) FROM credits_jobs()").await >= 4);
    assert_eq!(
        db.count("SELECT count(*) FROM credits_schedule_jobs()")
            .await,
        0
    );
    assert_eq!(db.count("SELECT credits_unschedule_jobs()").await, 0);
    db.drop_schema().await;
}
