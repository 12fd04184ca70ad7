//! The grant lifecycle over loopback HTTP (on PostgreSQL when `DATABASE_URL` is set, in
//! memory otherwise, like every service test): void a lot, freeze, unfreeze, close.

// Tests and benchmarks act as applications: they spawn tasks and sleep on tokio's timer.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{ACME, ADMIN, Req, TestService};

async fn lifecycle(s: &TestService) {
    s.tenant_with("acme", 100).await; // lot 1
    let r = s
        .call(
            Req::post("/v1/tenants/acme/grants", r#"{"amount":50,"priority":1}"#)
                .auth(ADMIN)
                .key("g2"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let lot2 = r.json["effect"]["lot"].as_u64().unwrap();
    let r = s
        .call(
            Req::post("/v1/tenants/acme/consume", r#"{"amount":30}"#)
                .auth(ACME)
                .key("c1"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Void: admin only, with a key and a reason; replays; a second void is refused.
    let void = |key: &'static str, lot: u64, body: &'static str, auth: &'static str| {
        let path = format!("/v1/tenants/acme/lots/{lot}/void");
        async move { s.call(Req::post(&path, body).auth(auth).key(key)).await }
    };
    let mistake = r#"{"reason":"granted by mistake"}"#;
    let r = void("v1", 1, mistake, ACME).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = s
        .call(Req::post("/v1/tenants/acme/lots/1/void", mistake).auth(ADMIN))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (400, "missing_idempotency_key"),
        "{}",
        r.text
    );
    let r = void("v1", 1, r#"{"reason":""}"#, ADMIN).await;
    assert_eq!((r.status, r.code()), (400, "invalid_reason"), "{}", r.text);
    let r = void("v1", 1, mistake, ADMIN).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["effect"]["type"], "voided");
    assert_eq!(r.json["effect"]["voided"], 70);
    assert_eq!(r.json["balance"]["available"], 50);
    let replay = void("v1", 1, mistake, ADMIN).await;
    assert_eq!((replay.status, &replay.json), (200, &r.json), "a replay");
    let r = void("v2", 1, mistake, ADMIN).await;
    assert_eq!((r.status, r.code()), (409, "lot_empty"), "{}", r.text);
    let r = void("v3", 99, mistake, ADMIN).await;
    assert_eq!((r.status, r.code()), (404, "unknown_lot"), "{}", r.text);
    let r = s
        .call(
            Req::post("/v1/tenants/acme/lots/x/void", mistake)
                .auth(ADMIN)
                .key("v4"),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_lot_id"), "{}", r.text);
    assert_eq!(s.balance("acme").await, (50, 0, 0));

    // Freeze: consumes and reserves refused, grants work; unfreeze lifts it.
    let post = |path: &'static str, key: &'static str| async move {
        s.call(Req::post(path, "").auth(ADMIN).key(key)).await
    };
    let r = post("/v1/tenants/acme/unfreeze", "u0").await;
    assert_eq!(
        (r.status, r.code()),
        (409, "tenant_not_frozen"),
        "{}",
        r.text
    );
    let r = post("/v1/tenants/acme/freeze", "f1").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["effect"]["type"], "frozen");
    let r = s
        .call(
            Req::post("/v1/tenants/acme/consume", r#"{"amount":1}"#)
                .auth(ACME)
                .key("c2"),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "tenant_frozen"), "{}", r.text);
    let r = s
        .call(
            Req::post("/v1/tenants/acme/holds", r#"{"amount":1,"ttl_ms":1000}"#)
                .auth(ACME)
                .key("h1"),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "tenant_frozen"), "{}", r.text);
    let r = s
        .call(
            Req::post("/v1/tenants/acme/grants", r#"{"amount":5}"#)
                .auth(ADMIN)
                .key("g3"),
        )
        .await;
    assert_eq!(r.status, 200, "a grant while frozen: {}", r.text);
    let r = post("/v1/tenants/acme/freeze", "f1").await;
    assert_eq!(r.status, 200, "a replay: {}", r.text);
    let r = post("/v1/tenants/acme/unfreeze", "u1").await;
    assert_eq!(r.json["effect"]["type"], "unfrozen", "{}", r.text);

    // Close: refused with an open hold, then voids the rest and refuses everything.
    let r = s
        .call(
            Req::post("/v1/tenants/acme/holds", r#"{"amount":10,"ttl_ms":60000}"#)
                .auth(ACME)
                .key("h2"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let hold = r.json["effect"]["hold"].as_u64().unwrap();
    let r = post("/v1/tenants/acme/close", "x1").await;
    assert_eq!((r.status, r.code()), (409, "holds_open"), "{}", r.text);
    let r = s
        .call(
            Req::post(&format!("/v1/tenants/acme/holds/{hold}/cancel"), "")
                .auth(ACME)
                .key("cancel"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = post("/v1/tenants/acme/close", "x2").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["effect"]["type"], "closed");
    assert_eq!(r.json["effect"]["voided"], 55);
    assert_eq!(s.balance("acme").await, (0, 0, 0));
    let r = s
        .call(
            Req::post("/v1/tenants/acme/grants", r#"{"amount":5}"#)
                .auth(ADMIN)
                .key("g4"),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "tenant_closed"), "{}", r.text);
    let r = void("v5", lot2, mistake, ADMIN).await;
    assert_eq!((r.status, r.code()), (409, "tenant_closed"), "{}", r.text);
    // The history is kept: every change is an entry.
    let r = s
        .call(Req::get("/v1/tenants/acme/history?limit=1000").auth(ADMIN))
        .await;
    let kinds: Vec<&str> = r.json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    // A void's reason is in the history; other entries have none.
    let reasons: Vec<&str> = r.json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert_eq!(reasons[0], "granted by mistake", "{}", r.text);
    assert_eq!(
        kinds,
        [
            "granted",
            "granted",
            "consumed",
            "lot_voided",
            "frozen",
            "granted",
            "unfrozen",
            "reserved",
            "cancelled",
            "lot_voided",
            "lot_voided",
            "closed",
        ]
    );
}

#[tokio::test]
async fn void_freeze_and_close() {
    let s = TestService::start(&[]).await;
    lifecycle(&s).await;
    s.shutdown().await;
}

#[tokio::test]
async fn void_freeze_and_close_in_memory() {
    let s = TestService::start_memory(&[]).await;
    lifecycle(&s).await;
    s.shutdown().await;
}

async fn import(s: &TestService) {
    let r = s
        .call(Req::post("/v1/tenants", r#"{"tenant":"migrated"}"#).auth(ADMIN))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let now = 1_700_000_000_000u64; // the test clock
    let post = |key: &'static str, body: String, auth: &'static str| async move {
        s.call(
            Req::post("/v1/tenants/migrated/imports", &body)
                .auth(auth)
                .key(key),
        )
        .await
    };
    let grant = format!(
        r#"{{"type":"grant","amount":100,"at_ms":{}}}"#,
        now - 300_000
    );
    let r = post("import/g-1", grant.clone(), ACME).await;
    assert_eq!(r.status, 403, "admin only: {}", r.text);
    let r = post("import/g-1", grant.clone(), ADMIN).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["effect"]["type"], "granted", "{}", r.text);
    assert_eq!(r.json["at_ms"], now - 300_000, "dated at its original time");
    let replay = post("import/g-1", grant, ADMIN).await;
    assert_eq!(
        (replay.status, &replay.json),
        (200, &r.json),
        "a re-run import"
    );
    let consume = |at: u64| format!(r#"{{"type":"consume","amount":30,"at_ms":{at}}}"#);
    let r = post("import/c-1", consume(now - 200_000), ADMIN).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["effect"]["type"], "consumed", "{}", r.text);
    let r = post("import/c-0", consume(now - 250_000), ADMIN).await;
    assert_eq!(
        (r.status, r.code()),
        (409, "import_out_of_order"),
        "{}",
        r.text
    );
    let r = post("import/c-9", consume(now + 1_000), ADMIN).await;
    assert_eq!(
        (r.status, r.code()),
        (400, "import_in_future"),
        "{}",
        r.text
    );
    let r = s
        .call(Req::get("/v1/tenants/migrated/history?limit=1000").auth(ADMIN))
        .await;
    let kinds: Vec<(&str, u64)> = r.json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["at_ms"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("imported_grant", now - 300_000),
            ("imported_consume", now - 200_000)
        ]
    );
    let r = s
        .call(Req::get("/v1/tenants/migrated/balance").auth(ADMIN))
        .await;
    assert_eq!(r.json["available"], 70, "{}", r.text);
}

#[tokio::test]
async fn history_imported_at_its_original_times() {
    let s = TestService::start(&[]).await;
    import(&s).await;
    s.shutdown().await;
}

#[tokio::test]
async fn history_imported_at_its_original_times_in_memory() {
    let s = TestService::start_memory(&[]).await;
    import(&s).await;
    s.shutdown().await;
}
