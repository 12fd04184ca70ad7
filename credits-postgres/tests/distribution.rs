//! Ready to distribute by tenant (Citus): every primary key, unique constraint and foreign
//! key of a per-tenant table leads with the tenant column, read from the catalog of a
//! freshly migrated schema; the tables that are global by nature are exactly the ones
//! docs/credits-postgres.md names, and the docs give each table's exact Citus statement.

// Tests act as applications: the shared helpers spawn connection tasks.
#![allow(clippy::disallowed_methods)]

mod common;

use credits_postgres::tokio_postgres::Client;

/// The tenant column (the distribution column): `tenant` in every per-tenant table.
const TENANT: &str = "tenant";

/// Tables that are global by nature (not keyed by tenant), with why. The docs name each as
/// a reference table or a coordinator table.
const GLOBAL: &[(&str, &str)] = &[
    ("schema_migrations", "the schema's version"),
    (
        "distributed_transactions",
        "a two-phase transaction spans tenants",
    ),
    ("audit_log", "the Merkle log's leaves, keyed by stream"),
    ("audit_index", "the Merkle log's sequence"),
    ("audit_pending", "the sequencer's queue, in commit order"),
    ("audit_checkpoints", "signed heads of the whole log"),
    ("service_rollouts", "an operator's rollout, not a tenant's"),
];

/// Every key (primary, unique, foreign) of every ordinary or partitioned table in `schema`
/// (partitions inherit their parent's keys and are left out) whose first column is not the
/// tenant column, or (a foreign key) whose referenced first column is not; global tables
/// are skipped. Each as `table.constraint (columns)`.
async fn violations(client: &Client, schema: &str, global: &[&str]) -> Vec<String> {
    let rows = client
        .query(
            "SELECT c.relname::text, k.conname::text, k.contype::text, \
                    (SELECT array_agg(a.attname::text ORDER BY u.ord) \
                       FROM unnest(k.conkey) WITH ORDINALITY AS u(attnum, ord) \
                       JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum), \
                    (SELECT array_agg(a.attname::text ORDER BY u.ord) \
                       FROM unnest(k.confkey) WITH ORDINALITY AS u(attnum, ord) \
                       JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.attnum) \
             FROM pg_constraint k \
             JOIN pg_class c ON c.oid = k.conrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND k.contype IN ('p', 'u', 'f') \
               AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
             ORDER BY 1, 2",
            &[&schema],
        )
        .await
        .expect("catalog");
    let mut bad = Vec::new();
    for row in rows {
        let table: String = row.get(0);
        if global.contains(&table.as_str()) {
            continue;
        }
        let name: String = row.get(1);
        let kind: String = row.get(2);
        let columns: Vec<String> = row.get(3);
        let referenced: Option<Vec<String>> = row.get(4);
        let leads = columns.first().map(String::as_str) == Some(TENANT);
        let refers = kind != "f"
            || referenced
                .as_ref()
                .and_then(|r| r.first())
                .map(String::as_str)
                == Some(TENANT);
        if !leads || !refers {
            bad.push(format!("{table}.{name} ({})", columns.join(", ")));
        }
    }
    bad
}

/// Ordinary and partitioned tables of `schema`, partitions left out.
async fn tables(client: &Client, schema: &str) -> Vec<String> {
    client
        .query(
            "SELECT c.relname::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
             ORDER BY 1",
            &[&schema],
        )
        .await
        .expect("tables")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn every_key_leads_with_the_tenant_except_global_tables() {
    let Some(db) = common::test_db("distribution_keys").await else {
        return;
    };
    let _store = db.default_store().await;
    let global: Vec<&str> = GLOBAL.iter().map(|(t, _)| *t).collect();
    let bad = violations(&db.admin, &db.schema, &global).await;
    assert!(
        bad.is_empty(),
        "keys that do not lead with {TENANT}: {bad:?}"
    );

    // Every global table exists (the list is not stale), and every per-tenant table has the
    // tenant column.
    let all = tables(&db.admin, &db.schema).await;
    for (table, why) in GLOBAL {
        assert!(all.iter().any(|t| t == table), "{table} ({why}) is gone");
    }
    for table in all.iter().filter(|t| !global.contains(&t.as_str())) {
        let has = db
            .count(&format!(
                "SELECT count(*) FROM pg_attribute WHERE attrelid = '{}.{table}'::regclass \
                 AND attname = '{TENANT}' AND NOT attisdropped",
                db.schema
            ))
            .await;
        assert_eq!(has, 1, "{table} has no {TENANT} column");
    }

    // The docs give each table's exact Citus statement: distributed by tenant, co-located
    // with accounts, or a reference / coordinator table for the global ones.
    let docs = include_str!("../../docs/credits-postgres.md");
    for table in &all {
        let statement = if *table == "accounts" {
            "SELECT create_distributed_table('accounts', 'tenant');".to_owned()
        } else if global.contains(&table.as_str()) {
            let reference = format!("SELECT create_reference_table('{table}');");
            let local = format!("SELECT citus_add_local_table_to_metadata('{table}');");
            if docs.contains(&reference) {
                reference
            } else {
                local
            }
        } else {
            format!(
                "SELECT create_distributed_table('{table}', 'tenant', colocate_with => 'accounts');"
            )
        };
        assert!(
            docs.contains(&statement),
            "docs/credits-postgres.md lacks `{statement}`"
        );
    }

    // The check has teeth: a key that leads with something else, or a foreign key into
    // another column, is reported.
    db.admin
        .batch_execute(
            "CREATE TABLE bad_keys (id text PRIMARY KEY, tenant text NOT NULL, \
                                    UNIQUE (tenant, id)); \
             CREATE TABLE bad_refs (tenant text NOT NULL, id text NOT NULL, \
                                    PRIMARY KEY (tenant, id), \
                                    FOREIGN KEY (tenant, id) REFERENCES bad_keys (id, tenant))",
        )
        .await
        .expect("bad tables");
    let bad = violations(&db.admin, &db.schema, &global).await;
    assert_eq!(
        bad,
        [
            "bad_keys.bad_keys_pkey (id)",
            "bad_refs.bad_refs_tenant_id_fkey (tenant, id)"
        ],
        "the catalog check missed a key"
    );
    db.drop_schema().await;
}
