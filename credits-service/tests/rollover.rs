//! Rollover at expiry over loopback HTTP (on PostgreSQL when `DATABASE_URL` is set, and in
//! memory): a tenant created with a policy keeps its share of an expiring lot; an invalid
//! policy is a 400 `invalid_rollover` and creates nothing.

// Tests and benchmarks act as applications: they spawn tasks and sleep on tokio's timer.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use metered_clock::Clock;

use common::{ACME, ADMIN, Req, TestService};

async fn rollover(s: &TestService) {
    for bad in [
        r#"{"tenant":"acme","rollover":{"share_percent":0,"ttl_ms":1000}}"#,
        r#"{"tenant":"acme","rollover":{"share_percent":101,"ttl_ms":1000}}"#,
        r#"{"tenant":"acme","rollover":{"share_percent":50,"cap":0,"ttl_ms":1000}}"#,
        r#"{"tenant":"acme","rollover":{"share_percent":50,"ttl_ms":0}}"#,
    ] {
        let r = s.call(Req::post("/v1/tenants", bad).auth(ADMIN)).await;
        assert_eq!(
            (r.status, r.code()),
            (400, "invalid_rollover"),
            "{bad}: {}",
            r.text
        );
    }
    let body = r#"{"tenant":"acme","rollover":{"share_percent":50,"cap":25,"ttl_ms":60000}}"#;
    let r = s.call(Req::post("/v1/tenants", body).auth(ADMIN)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["rollover"]["cap"], 25, "{}", r.text);
    let expires_at = s.clock.now().saturating_add(Duration::from_secs(10));
    let grant = format!(
        r#"{{"amount":100,"expires_at_ms":{}}}"#,
        expires_at.as_unix_millis()
    );
    let r = s
        .call(
            Req::post("/v1/tenants/acme/grants", &grant)
                .auth(ADMIN)
                .key("g"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .call(
            Req::post("/v1/tenants/acme/consume", r#"{"amount":40}"#)
                .auth(ACME)
                .key("c"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // 60 unused at expiry: half is 30, capped at 25; 35 expire.
    s.clock.advance(Duration::from_secs(11));
    let r = s
        .call(Req::get("/v1/tenants/acme/balance").auth(ACME))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["available"], 25, "{}", r.text);
    let r = s
        .call(Req::get("/v1/tenants/acme/history?limit=1000").auth(ADMIN))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let kinds: Vec<_> = r.json["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or_default().to_owned(),
                e["amount"].clone(),
            )
        })
        .collect();
    assert_eq!(
        kinds[kinds.len() - 2..],
        [
            ("rolled_over".to_owned(), serde_json::json!(25)),
            ("lot_expired".to_owned(), serde_json::json!(35))
        ],
        "{}",
        r.text
    );
}

#[tokio::test]
async fn a_tenant_with_a_rollover_policy_keeps_its_share() {
    let s = TestService::start(&[]).await;
    rollover(&s).await;
    s.shutdown().await;
}

#[tokio::test]
async fn a_tenant_with_a_rollover_policy_keeps_its_share_in_memory() {
    let s = TestService::start_memory(&[]).await;
    rollover(&s).await;
    s.shutdown().await;
}
