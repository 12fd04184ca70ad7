//! End to end over loopback HTTP: credit flows, idempotent retries, tenancy, bad input.

// Tests and benchmarks act as applications: they spawn tasks and sleep on tokio's timer.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{ACME, ADMIN, GLOBEX, Req, TestService};

#[tokio::test]
async fn reserve_commit_cancel_consume_and_paged_history() {
    let s = TestService::start(&[]).await;
    s.tenant_with("acme", 1_000).await;

    let r = s
        .call(
            Req::post("/v1/tenants/acme/consume", r#"{"amount":100}"#)
                .auth(ACME)
                .key("c1"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["effect"]["type"], "consumed");
    assert_eq!(r.json["balance"]["available"], 900);

    let r = s
        .call(
            Req::post("/v1/tenants/acme/holds", r#"{"amount":300,"ttl_ms":60000}"#)
                .auth(ACME)
                .key("job-1/hold"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let hold = r.json["effect"]["hold"].as_u64().unwrap();
    assert_eq!(s.balance("acme").await, (600, 300, 0));
    let r = s
        .call(Req::get(&format!("/v1/tenants/acme/holds/{hold}")).auth(ACME))
        .await;
    assert_eq!(
        (r.json["state"].as_str(), r.json["amount"].as_u64()),
        (Some("active"), Some(300))
    );

    let r = s
        .call(
            Req::post(
                &format!("/v1/tenants/acme/holds/{hold}/commit"),
                r#"{"amount":120}"#,
            )
            .auth(ACME)
            .key("job-1/commit"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["effect"]["committed"], 120);
    assert_eq!(r.json["effect"]["released"], 180);
    assert_eq!(s.balance("acme").await, (780, 0, 0));

    // A hold resolves once.
    let r = s
        .call(
            Req::post(&format!("/v1/tenants/acme/holds/{hold}/cancel"), "")
                .auth(ACME)
                .key("job-1/cancel"),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (409, "hold_already_committed"),
        "{}",
        r.text
    );

    // Reserve then cancel gives everything back.
    let r = s
        .call(
            Req::post("/v1/tenants/acme/holds", r#"{"amount":80,"ttl_ms":1000}"#)
                .auth(ACME)
                .key("job-2/hold"),
        )
        .await;
    let hold2 = r.json["effect"]["hold"].as_u64().unwrap();
    let r = s
        .call(
            Req::post(&format!("/v1/tenants/acme/holds/{hold2}/cancel"), "")
                .auth(ACME)
                .key("job-2/cancel"),
        )
        .await;
    assert_eq!(
        (r.status, r.json["effect"]["released"].as_u64()),
        (200, Some(80)),
        "{}",
        r.text
    );
    assert_eq!(s.balance("acme").await, (780, 0, 0));

    // A hold that outlives its time-to-live expires.
    let r = s
        .call(
            Req::post("/v1/tenants/acme/holds", r#"{"amount":50,"ttl_ms":1000}"#)
                .auth(ACME)
                .key("job-3/hold"),
        )
        .await;
    let hold3 = r.json["effect"]["hold"].as_u64().unwrap();
    s.clock.advance(std::time::Duration::from_secs(2));
    let r = s
        .call(
            Req::post(
                &format!("/v1/tenants/acme/holds/{hold3}/commit"),
                r#"{"amount":10}"#,
            )
            .auth(ACME)
            .key("job-3/commit"),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "hold_expired"), "{}", r.text);
    assert_eq!(s.balance("acme").await, (780, 0, 0));

    // Spending more than is available is refused.
    let r = s
        .call(
            Req::post("/v1/tenants/acme/consume", r#"{"amount":781}"#)
                .auth(ACME)
                .key("c-big"),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (402, "insufficient_credits"),
        "{}",
        r.text
    );

    // History pages: oldest first, `next` until the last page.
    let mut seen = Vec::new();
    let mut after: Option<u64> = None;
    loop {
        let path = match after {
            Some(a) => format!("/v1/tenants/acme/history?limit=3&after={a}"),
            None => "/v1/tenants/acme/history?limit=3".to_owned(),
        };
        let r = s.call(Req::get(&path).auth(ACME)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        for e in r.json["entries"].as_array().unwrap() {
            seen.push(e["kind"].as_str().unwrap().to_owned());
        }
        match r.json["next"].as_u64() {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(
        seen,
        [
            "granted",
            "consumed",
            "reserved",
            "committed",
            "released",
            "reserved",
            "cancelled",
            "reserved",
            "hold_expired"
        ]
    );
    s.shutdown().await;
}

#[tokio::test]
async fn up_to_takes_what_is_left_and_never_more() {
    let s = TestService::start(&[]).await;
    s.tenant_with("acme", 30).await;
    let consume_up_to = |amount: u64, key: &str| {
        Req::post(
            "/v1/tenants/acme/consume",
            &format!(r#"{{"amount":{amount},"up_to":true}}"#),
        )
        .auth(ACME)
        .key(key)
    };
    let r = s.call(consume_up_to(10, "u1")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["effect"]["type"], "taken");
    assert_eq!(r.json["effect"]["amount"], 10);
    // More than is left: whatever is left.
    let r = s.call(consume_up_to(50, "u2")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["effect"]["amount"], 20);
    assert_eq!(s.balance("acme").await, (0, 0, 0));
    let again = s.call(consume_up_to(50, "u2")).await;
    assert_eq!(again.json, r.json, "a replay answers the same");
    // Nothing left: refused, nothing changes.
    let r = s.call(consume_up_to(5, "u3")).await;
    assert_eq!(r.code(), "insufficient_credits", "{}", r.text);
    // A commit up to more than the hold holds spends the hold.
    let r = s
        .call(
            Req::post("/v1/tenants/acme/grants", r#"{"amount":40}"#)
                .auth(ADMIN)
                .key("g2"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .call(
            Req::post("/v1/tenants/acme/holds", r#"{"amount":25,"ttl_ms":60000}"#)
                .auth(ACME)
                .key("h"),
        )
        .await;
    let hold = r.json["effect"]["hold"].as_u64().unwrap();
    let r = s
        .call(
            Req::post(
                &format!("/v1/tenants/acme/holds/{hold}/commit"),
                r#"{"amount":100,"up_to":true}"#,
            )
            .auth(ACME)
            .key("c"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["effect"]["committed"], 25);
    assert_eq!(r.json["effect"]["released"], 0);
    assert_eq!(s.balance("acme").await, (15, 0, 0));
    s.shutdown().await;
}

#[tokio::test]
async fn a_retry_with_the_same_key_is_applied_once() {
    let s = TestService::start(&[]).await;
    s.tenant_with("acme", 100).await;
    let consume = |amount: u64, key: &str| {
        Req::post(
            "/v1/tenants/acme/consume",
            &format!(r#"{{"amount":{amount}}}"#),
        )
        .auth(ACME)
        .key(key)
    };
    let first = s.call(consume(10, "order-7")).await;
    let again = s.call(consume(10, "order-7")).await;
    assert_eq!((first.status, again.status), (200, 200));
    assert_eq!(
        first.json, again.json,
        "a replay answers exactly the first answer"
    );
    assert_eq!(s.balance("acme").await.0, 90);

    // The same key for another request is a conflict and changes nothing.
    let r = s.call(consume(11, "order-7")).await;
    assert_eq!(
        (r.status, r.code()),
        (409, "idempotency_conflict"),
        "{}",
        r.text
    );
    assert_eq!(s.balance("acme").await.0, 90);

    // A failure is replayed too, even once the request could succeed.
    let fail = s.call(consume(500, "order-8")).await;
    assert_eq!(fail.code(), "insufficient_credits");
    let r = s
        .call(
            Req::post("/v1/tenants/acme/grants", r#"{"amount":1000}"#)
                .auth(ADMIN)
                .key("top-up"),
        )
        .await;
    assert_eq!(r.status, 200);
    let replay = s.call(consume(500, "order-8")).await;
    assert_eq!(
        (replay.status, replay.json.clone()),
        (fail.status, fail.json)
    );
    assert_eq!(s.balance("acme").await.0, 1_090);

    // Keys are per tenant: globex may use the same key.
    s.tenant_with("globex", 100).await;
    let r = s
        .call(
            Req::post("/v1/tenants/globex/consume", r#"{"amount":10}"#)
                .auth(GLOBEX)
                .key("order-7"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    s.shutdown().await;
}

#[tokio::test]
async fn tokens_are_bound_to_their_tenant_and_operator_endpoints_need_admin() {
    let s = TestService::start(&[]).await;
    s.tenant_with("acme", 100).await;
    s.tenant_with("globex", 100).await;
    let cases: Vec<(Req<'_>, u16, &str)> = vec![
        (Req::get("/v1/tenants/acme/balance"), 401, "unauthenticated"),
        (
            Req::get("/v1/tenants/acme/balance").auth("Bearer nope-nope-nope-nope"),
            401,
            "unauthenticated",
        ),
        (
            Req::get("/v1/tenants/acme/balance").auth("Basic YWRtaW46eA=="),
            401,
            "unauthenticated",
        ),
        (
            Req::get("/v1/tenants/acme/balance").auth(GLOBEX),
            403,
            "forbidden",
        ),
        (
            Req::get("/v1/tenants/acme/history").auth(GLOBEX),
            403,
            "forbidden",
        ),
        (
            Req::post("/v1/tenants/acme/consume", r#"{"amount":1}"#)
                .auth(GLOBEX)
                .key("x"),
            403,
            "forbidden",
        ),
        (
            Req::get("/v1/tenants/nobody/balance").auth(GLOBEX),
            403,
            "forbidden",
        ),
        // Operator endpoints refuse tenant tokens.
        (
            Req::post("/v1/tenants", r#"{"tenant":"evil"}"#).auth(ACME),
            403,
            "admin_required",
        ),
        (
            Req::post("/v1/tenants/acme/grants", r#"{"amount":5}"#)
                .auth(ACME)
                .key("free-money"),
            403,
            "admin_required",
        ),
        (
            Req::post("/circuit-breaker/reset", "").auth(ACME),
            403,
            "admin_required",
        ),
        (
            Req::post("/circuit-breaker/reset", ""),
            401,
            "unauthenticated",
        ),
        (
            Req::post("/v1/audit/verify", "{}").auth(ACME),
            403,
            "admin_required",
        ),
        (
            Req::get("/v1/audit/checkpoint").auth(ACME),
            403,
            "admin_required",
        ),
        (
            Req::get("/v1/audit/entries/0/proof").auth(ACME),
            403,
            "admin_required",
        ),
        (
            Req::post("/v1/rollouts", r#"{"id":"r"}"#).auth(ACME),
            403,
            "admin_required",
        ),
        (Req::get("/v1/rollouts/r").auth(ACME), 403, "admin_required"),
    ];
    for (req, status, code) in cases {
        let what = format!("{} {} as {:?}", req.method, req.path, req.auth);
        let r = s.call(req).await;
        assert_eq!((r.status, r.code()), (status, code), "{what}: {}", r.text);
    }
    assert_eq!(s.balance("acme").await, (100, 0, 0));
    assert_eq!(s.journal_len("acme").await, 1);
    // The admin may read any tenant; a tenant its own.
    let r = s
        .call(Req::get("/v1/tenants/acme/balance").auth(ACME))
        .await;
    assert_eq!(r.status, 200);
    let r = s
        .call(Req::get("/v1/tenants/globex/balance").auth(ADMIN))
        .await;
    assert_eq!(r.status, 200);
    s.shutdown().await;
}

#[tokio::test]
async fn bad_input_is_a_4xx_and_changes_nothing() {
    let s = TestService::start(&[("CREDITS_BODY_LIMIT_BYTES", "1024")]).await;
    s.tenant_with("acme", 1_000).await;
    let big = format!(r#"{{"amount":1,"pad":"{}"}}"#, "x".repeat(4_096));
    let cases: Vec<(Req<'_>, u16, &str)> = vec![
        (
            Req::post("/v1/tenants/acme/consume", "{not json").key("k1"),
            400,
            "bad_json",
        ),
        (
            Req::post("/v1/tenants/acme/consume", "").key("k1"),
            400,
            "bad_json",
        ),
        (
            Req::post("/v1/tenants/acme/consume", &big).key("k1"),
            413,
            "body_too_large",
        ),
        (
            Req::post("/v1/tenants/acme/consume", r#"{"amount":5,"extra":1}"#).key("k1"),
            400,
            "invalid_request",
        ),
        (
            Req::post("/v1/tenants/acme/consume", r#"{"amount":-5}"#).key("k1"),
            400,
            "invalid_request",
        ),
        (
            Req::post("/v1/tenants/acme/consume", r#"{"amount":1.5}"#).key("k1"),
            400,
            "invalid_request",
        ),
        (
            Req::post("/v1/tenants/acme/consume", r#"{"amount":"5"}"#).key("k1"),
            400,
            "invalid_request",
        ),
        (
            Req::post(
                "/v1/tenants/acme/consume",
                r#"{"amount":18446744073709551616}"#,
            )
            .key("k1"),
            400,
            "invalid_request",
        ),
        (
            Req::post("/v1/tenants/acme/consume", r#"{}"#).key("k1"),
            400,
            "invalid_request",
        ),
        (
            Req::post("/v1/tenants/acme/consume", r#"{"amount":0}"#).key("k1"),
            400,
            "zero_amount",
        ),
        (
            Req::post("/v1/tenants/acme/consume", r#"{"amount":5}"#),
            400,
            "missing_idempotency_key",
        ),
        (
            Req::post("/v1/tenants/acme/consume", r#"{"amount":5}"#).key(&"k".repeat(200)),
            400,
            "invalid_idempotency_key",
        ),
        (
            Req::post("/v1/tenants/acme/consume", r#"{"amount":5}"#)
                .key("k1")
                .content_type("text/plain"),
            415,
            "unsupported_media_type",
        ),
        (
            Req::post("/v1/tenants/acme/holds", r#"{"amount":5,"ttl_ms":0}"#).key("k2"),
            400,
            "zero_ttl",
        ),
        (
            Req::post(
                "/v1/tenants/acme/holds",
                r#"{"amount":5,"ttl_ms":99999999999}"#,
            )
            .key("k2"),
            400,
            "ttl_too_long",
        ),
        (
            Req::post("/v1/tenants/acme/holds/abc/commit", r#"{"amount":5}"#).key("k3"),
            400,
            "invalid_hold_id",
        ),
        (
            Req::post("/v1/tenants/acme/holds/99/commit", r#"{"amount":5}"#).key("k3"),
            404,
            "unknown_hold",
        ),
        (
            Req::get("/v1/tenants/acme/history?limit=0"),
            400,
            "invalid_limit",
        ),
        (
            Req::get("/v1/tenants/acme/history?limit=5000"),
            400,
            "invalid_limit",
        ),
        (
            Req::get("/v1/tenants/acme/history?after=x"),
            400,
            "invalid_query",
        ),
        (
            Req::get("/v1/tenants/acme/history?color=red"),
            400,
            "invalid_query",
        ),
        (Req::get("/v1/nothing-here"), 404, "not_found"),
        (
            Req::get("/v1/tenants/acme/consume"),
            405,
            "method_not_allowed",
        ),
    ];
    for (req, status, code) in cases {
        let what = format!(
            "{} {} {:?}",
            req.method,
            req.path,
            req.body.as_ref().map(|b| &b[..b.len().min(60)])
        );
        let r = s.call(req.auth(ACME)).await;
        assert_eq!((r.status, r.code()), (status, code), "{what}: {}", r.text);
        assert!(
            r.json["error"]["message"].is_string(),
            "{what}: every error has a message"
        );
    }
    // Admin-only bad input.
    let admin_cases: Vec<(Req<'_>, u16, &str)> = vec![
        (
            Req::post("/v1/tenants", r#"{"tenant":"has space"}"#),
            400,
            "invalid_tenant_id",
        ),
        (
            Req::post("/v1/tenants", r#"{"tenant":"acme"}"#),
            409,
            "tenant_exists",
        ),
        (
            Req::post(
                "/v1/tenants/acme/grants",
                r#"{"amount":5,"expires_at_ms":1}"#,
            )
            .key("g"),
            400,
            "expiry_not_in_future",
        ),
        (
            Req::post("/v1/tenants/ghost/grants", r#"{"amount":5}"#).key("g"),
            404,
            "unknown_tenant",
        ),
        (
            Req::post("/v1/tenants/acme/refunds", r#"{"entry":1,"amount":5}"#).key("rf"),
            409,
            "not_refundable",
        ),
    ];
    for (req, status, code) in admin_cases {
        let what = format!("{} {}", req.method, req.path);
        let r = s.call(req.auth(ADMIN)).await;
        assert_eq!((r.status, r.code()), (status, code), "{what}: {}", r.text);
    }
    assert_eq!(s.balance("acme").await, (1_000, 0, 0));
    assert_eq!(
        s.journal_len("acme").await,
        1,
        "no rejected request left a journal entry"
    );
    s.shutdown().await;
}
