//! Balance thresholds and the events feed over loopback HTTP (on PostgreSQL when
//! `DATABASE_URL` is set, and in memory): a tenant created with thresholds answers them
//! (ascending); invalid thresholds are a 400 `invalid_thresholds` and create nothing; each
//! downward crossing appears once in `GET /v1/tenants/{t}/events`, paged by `after` and
//! `limit`, readable by the tenant and the admin only.

// Tests and benchmarks act as applications: they spawn tasks and sleep on tokio's timer.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{ACME, ADMIN, GLOBEX, Req, TestService};

async fn events(s: &TestService) {
    for bad in [
        r#"{"tenant":"acme","thresholds":[0]}"#,
        r#"{"tenant":"acme","thresholds":[5,5]}"#,
        r#"{"tenant":"acme","thresholds":[1,2,3,4,5,6,7,8,9]}"#,
    ] {
        let r = s.call(Req::post("/v1/tenants", bad).auth(ADMIN)).await;
        assert_eq!(
            (r.status, r.code()),
            (400, "invalid_thresholds"),
            "{bad}: {}",
            r.text
        );
    }
    let r = s
        .call(Req::get("/v1/tenants/acme/events").auth(ADMIN))
        .await;
    assert_eq!((r.status, r.code()), (404, "unknown_tenant"), "{}", r.text);
    let body = r#"{"tenant":"acme","thresholds":[50,10]}"#;
    let r = s.call(Req::post("/v1/tenants", body).auth(ADMIN)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.json["thresholds"],
        serde_json::json!([10, 50]),
        "{}",
        r.text
    );
    let r = s
        .call(
            Req::post("/v1/tenants/acme/grants", r#"{"amount":100}"#)
                .auth(ADMIN)
                .key("g"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // 100 -> 40 crosses 50; 40 -> 5 crosses 10; a refund to 40 re-arms 10; 40 -> 0
    // crosses 10 again.
    let mut consume_entry = 0;
    for (key, amount) in [("c1", 60), ("c2", 35)] {
        let r = s
            .call(
                Req::post(
                    "/v1/tenants/acme/consume",
                    &format!(r#"{{"amount":{amount}}}"#),
                )
                .auth(ACME)
                .key(key),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        consume_entry = r.json["entry"].as_u64().expect("entry");
    }
    let r = s
        .call(
            Req::post(
                "/v1/tenants/acme/refunds",
                &format!(r#"{{"entry":{consume_entry},"amount":35}}"#),
            )
            .auth(ADMIN)
            .key("r"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .call(
            Req::post("/v1/tenants/acme/consume", r#"{"amount":40}"#)
                .auth(ACME)
                .key("c3"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.call(Req::get("/v1/tenants/acme/events").auth(ACME)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let got: Vec<(u64, u64, u64)> = r.json["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap_or_default(),
                e["threshold"].as_u64().unwrap_or_default(),
                e["available"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(got, [(1, 50, 40), (2, 10, 5), (3, 10, 0)], "{}", r.text);
    assert_eq!(r.json["next"], serde_json::Value::Null);
    // Paged: two, then the rest.
    let r = s
        .call(Req::get("/v1/tenants/acme/events?limit=2").auth(ADMIN))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["events"].as_array().map(Vec::len), Some(2));
    assert_eq!(r.json["next"], 2, "{}", r.text);
    let r = s
        .call(Req::get("/v1/tenants/acme/events?after=2&limit=2").auth(ADMIN))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["events"][0]["seq"], 3, "{}", r.text);
    assert_eq!(r.json["next"], serde_json::Value::Null);
    for bad in ["limit=0", "limit=1001"] {
        let r = s
            .call(Req::get(&format!("/v1/tenants/acme/events?{bad}")).auth(ADMIN))
            .await;
        assert_eq!((r.status, r.code()), (400, "invalid_limit"), "{}", r.text);
    }
    // Another tenant's token may not read them.
    let r = s
        .call(Req::get("/v1/tenants/acme/events").auth(GLOBEX))
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
}

#[tokio::test]
async fn events_feed_one_event_per_downward_crossing() {
    let s = TestService::start(&[]).await;
    events(&s).await;
    s.shutdown().await;
}

#[tokio::test]
async fn events_feed_one_event_per_downward_crossing_in_memory() {
    let s = TestService::start_memory(&[]).await;
    events(&s).await;
    s.shutdown().await;
}
