//! Request handling over loopback HTTP: authentication before the body, every rejection in
//! the JSON error format, bodies that must be objects, a declared length over the limit,
//! grant metadata under an idempotency key, and how a replay is logged.

// Tests act as applications: they spawn tasks and sleep on tokio's timer.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use common::{ACME, ADMIN, Req, TestService};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every log line of this test binary (a global subscriber writes here).
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
    });
}

/// Log lines that contain every one of `words`.
fn log_lines(words: &[&str]) -> usize {
    let logs = String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned();
    logs.lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .count()
}

/// Sends raw bytes on a fresh connection and reads until the server closes it or a whole
/// response (by its `Content-Length`) is in, at most `limit`. Returns the status (0 if none
/// arrived) and the response text.
async fn raw(addr: SocketAddr, request: &[u8], limit: Duration) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request).await.expect("send");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if complete(&got) {
                break;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn complete(response: &[u8]) -> bool {
    let text = String::from_utf8_lossy(response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    body.len() >= len
}

#[tokio::test]
async fn the_token_is_checked_before_the_body_is_read() {
    let s = TestService::start(&[]).await;
    s.tenant_with("acme", 100).await;
    let cases: Vec<(Req<'_>, u16, &str)> = vec![
        // Unauthenticated: 401 whatever the body, before it is parsed.
        (
            Req::post("/v1/tenants/acme/consume", "{").key("u1"),
            401,
            "unauthenticated",
        ),
        (
            Req::post("/v1/tenants/acme/consume", "{")
                .key("u1")
                .auth("Bearer not-a-token-0123456789"),
            401,
            "unauthenticated",
        ),
        (
            Req::post("/v1/tenants/acme/consume", "[5]").key("u1"),
            401,
            "unauthenticated",
        ),
        (
            Req::post("/v1/tenants/acme/grants", "{").key("u2"),
            401,
            "unauthenticated",
        ),
        (Req::post("/v1/tenants", "{"), 401, "unauthenticated"),
        (
            Req::post("/v1/rollouts/r/pause", "{"),
            401,
            "unauthenticated",
        ),
        (
            Req::post("/v1/tenants/acme/consume", "{")
                .key("u1")
                .content_type("text/plain"),
            401,
            "unauthenticated",
        ),
        // Authenticated, the body is judged as before.
        (
            Req::post("/v1/tenants/acme/consume", "{")
                .key("u1")
                .auth(ACME),
            400,
            "bad_json",
        ),
    ];
    for (req, status, code) in cases {
        let what = format!("{} {} {:?}", req.method, req.path, req.body);
        let r = s.call(req).await;
        assert_eq!((r.status, r.code()), (status, code), "{what}: {}", r.text);
    }
    assert_eq!(s.balance("acme").await, (100, 0, 0));
    s.shutdown().await;
}

#[tokio::test]
async fn path_and_query_rejections_answer_in_the_error_format() {
    let s = TestService::start(&[]).await;
    s.tenant_with("acme", 100).await;
    let cases: Vec<(Req<'_>, u16, &str)> = vec![
        // A path parameter that is not UTF-8 once decoded.
        (
            Req::get("/v1/tenants/%FF/balance").auth(ADMIN),
            400,
            "invalid_path",
        ),
        (
            Req::get("/v1/tenants/acme/holds/%FF%FE").auth(ADMIN),
            400,
            "invalid_path",
        ),
        (
            Req::post("/v1/tenants/%C3%28/consume", r#"{"amount":1}"#)
                .auth(ADMIN)
                .key("p1"),
            400,
            "invalid_path",
        ),
        (
            Req::get("/v1/tenants/%FF/experiments/e/evaluation").auth(ADMIN),
            400,
            "invalid_path",
        ),
        (
            Req::get("/v1/rollouts/%FF").auth(ADMIN),
            400,
            "invalid_path",
        ),
        (
            Req::get("/v1/audit/entries/%FF/proof").auth(ADMIN),
            400,
            "invalid_path",
        ),
        // Query strings that do not parse.
        (
            Req::get("/v1/tenants/acme/history?limit=many").auth(ADMIN),
            400,
            "invalid_query",
        ),
        (
            Req::get("/v1/tenants/acme/history?after=-1").auth(ADMIN),
            400,
            "invalid_query",
        ),
        (
            Req::get("/v1/audit/entries/0/proof?size=x").auth(ADMIN),
            400,
            "invalid_query",
        ),
    ];
    for (req, status, code) in cases {
        let what = format!("{} {}", req.method, req.path);
        let r = s.call(req).await;
        // `code()` reads the JSON body: a text/plain answer has none.
        assert_eq!((r.status, r.code()), (status, code), "{what}: {}", r.text);
        assert_eq!(r.json["error"]["retryable"], false, "{what}");
    }
    assert_eq!(s.balance("acme").await, (100, 0, 0));
    s.shutdown().await;
}

#[tokio::test]
async fn bodies_must_be_json_objects() {
    let s = TestService::start(&[]).await;
    s.tenant_with("acme", 100).await;
    let journal = s.journal_len("acme").await;
    let bodies = ["[5]", "[5, 1]", "5", "\"5\"", "null", "true", " [ ] "];
    for (i, body) in bodies.iter().enumerate() {
        let r = s
            .call(
                Req::post("/v1/tenants/acme/consume", body)
                    .auth(ACME)
                    .key(&format!("array-{i}")),
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (400, "invalid_request"),
            "{body}: {}",
            r.text
        );
    }
    let r = s
        .call(Req::post("/v1/tenants", r#"["globex"]"#).auth(ADMIN))
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "{}", r.text);
    let r = s
        .call(
            Req::post("/v1/tenants/acme/grants", "[7]")
                .auth(ADMIN)
                .key("array-grant"),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "{}", r.text);
    // The rollout commands' optional body too.
    let r = s
        .call(Req::post("/v1/rollouts", r#"{"id":"r1"}"#).auth(ADMIN))
        .await;
    assert!(r.status < 300, "{}", r.text);
    let r = s
        .call(Req::post("/v1/rollouts/r1/pause", r#"["me", "why"]"#).auth(ADMIN))
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "{}", r.text);
    // Nothing was consumed or granted.
    assert_eq!(s.balance("acme").await, (100, 0, 0));
    assert_eq!(s.journal_len("acme").await, journal);
    // An object still works.
    let r = s
        .call(
            Req::post("/v1/tenants/acme/consume", r#" {"amount":5}"#)
                .auth(ACME)
                .key("object"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    s.shutdown().await;
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_at_once() {
    // A request timeout far beyond the test's wait: only an immediate 413 passes.
    let s = TestService::start(&[
        ("CREDITS_BODY_LIMIT_BYTES", "1024"),
        ("CREDITS_REQUEST_TIMEOUT_MS", "60000"),
    ])
    .await;
    s.tenant_with("acme", 100).await;
    for (path, auth) in [
        ("/v1/tenants/acme/consume", ACME),
        ("/v1/tenants/acme/grants", ADMIN),
        ("/v1/rollouts/r/pause", ADMIN),
    ] {
        // Headers only: the body never comes.
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\n\
             Idempotency-Key: big-1\r\nContent-Type: application/json\r\n\
             Content-Length: 1025\r\n\r\n"
        );
        let (status, text) = raw(s.addr, request.as_bytes(), Duration::from_secs(3)).await;
        assert_eq!(status, 413, "{path}: {text}");
        assert!(text.contains("body_too_large"), "{path}: {text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{text}"
        );
    }
    // At the limit, the body is read as usual.
    let body = format!(r#"{{"amount":5,"pad":"{}"}}"#, "x".repeat(1_000));
    let body = &body[..1_024.min(body.len())];
    let request = format!(
        "POST /v1/tenants/acme/consume HTTP/1.1\r\nHost: localhost\r\nAuthorization: {ACME}\r\n\
         Idempotency-Key: big-2\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, text) = raw(s.addr, request.as_bytes(), Duration::from_secs(3)).await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(s.balance("acme").await, (100, 0, 0));
    s.shutdown().await;
}

#[tokio::test]
async fn a_grant_key_reused_with_other_metadata_conflicts_and_a_replay_names_the_same_entry() {
    capture_logs();
    let s = TestService::start(&[]).await;
    let tenant = "metaco";
    let r = s
        .call(Req::post("/v1/tenants", &format!(r#"{{"tenant":"{tenant}"}}"#)).auth(ADMIN))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let grant = |metadata: &str| {
        Req::post(
            &format!("/v1/tenants/{tenant}/grants"),
            &format!(r#"{{"amount":50{metadata}}}"#),
        )
        .auth(ADMIN)
        .key("topup-7")
    };
    let first = s.call(grant(r#","metadata":{"ref":"pay-1"}"#)).await;
    assert_eq!(first.status, 200, "{}", first.text);
    for other in [
        r#","metadata":{"ref":"pay-2"}"#,
        r#","metadata":{"ref":"pay-1","note":"x"}"#,
        r#","metadata":{}"#,
        "",
    ] {
        let r = s.call(grant(other)).await;
        assert_eq!(
            (r.status, r.code()),
            (409, "idempotency_conflict"),
            "{other}: {}",
            r.text
        );
    }
    // The same request replays the first answer byte for byte and applies nothing.
    let again = s.call(grant(r#","metadata":{"ref":"pay-1"}"#)).await;
    assert_eq!((again.status, &again.text), (200, &first.text));
    assert_eq!(s.balance(tenant).await, (50, 0, 0));
    assert_eq!(s.journal_len(tenant).await, 1);
    // A different amount under the key is the ledger's conflict, as before.
    let r = s
        .call(
            Req::post(
                &format!("/v1/tenants/{tenant}/grants"),
                r#"{"amount":51,"metadata":{"ref":"pay-1"}}"#,
            )
            .auth(ADMIN)
            .key("topup-7"),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "idempotency_conflict"));
    // Both answers are logged with the one entry they name (a replay applies nothing).
    assert_eq!(log_lines(&["grant answered", tenant, "entry=1"]), 2);
    s.shutdown().await;
}
