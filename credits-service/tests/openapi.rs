//! The OpenAPI document: `docs/openapi.json` is exactly what the code generates (so it
//! cannot drift from the handlers), and `GET /openapi.json` serves it.

// Tests act as applications: the shared helpers spawn tasks and sleep on tokio's timer.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::PathBuf;

use common::{Req, TestService};

/// The one-line command that rewrites `docs/openapi.json` from the code.
const REGENERATE: &str = "UPDATE_OPENAPI=1 cargo test -p credits-service --test openapi";

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json")
}

#[test]
fn the_committed_document_is_the_generated_one() {
    let generated = credits_service::openapi_json();
    let path = committed_path();
    if std::env::var("UPDATE_OPENAPI").as_deref() == Ok("1") {
        std::fs::write(&path, generated).expect("write docs/openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json differs from what the code generates; regenerate it with: {REGENERATE}"
    );
}

#[test]
fn the_document_is_openapi_3_1_and_names_the_error_format() {
    let doc: serde_json::Value =
        serde_json::from_str(credits_service::openapi_json()).expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["components"]["schemas"]["ErrorResponse"].is_object());
    let grant = &doc["paths"]["/v1/tenants/{tenant}/grants"]["post"];
    for status in ["200", "400", "401", "409", "503"] {
        assert!(grant["responses"][status].is_object(), "grant: {status}");
    }
    assert_eq!(grant["security"][0]["bearer"], serde_json::json!([]));
    assert!(doc["paths"]["/health"]["get"]["security"].is_null());
    // Amounts are unsigned 64-bit integers (up to 2^64 - 1), not int64.
    let amount = &doc["components"]["schemas"]["Grant"]["properties"]["amount"];
    assert_eq!(amount["format"], "uint64");
    assert!(!credits_service::openapi_json().contains("u-int"));
}

/// Every `$ref` in `value`.
fn refs<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", serde_json::Value::String(r)) => out.push(r),
                    _ => refs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_reference_resolves_and_every_operation_id_is_unique() {
    let doc: serde_json::Value =
        serde_json::from_str(credits_service::openapi_json()).expect("JSON");
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    for r in found {
        let pointer = r.strip_prefix('#').expect("a local reference");
        assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
    }
    let mut ids = std::collections::BTreeSet::new();
    for item in doc["paths"].as_object().expect("paths").values() {
        for op in item.as_object().expect("path item").values() {
            let id = op["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_owned()), "operationId {id} twice");
        }
    }
}

#[tokio::test]
async fn the_service_serves_it() {
    let s = TestService::start_memory(&[]).await;
    let r = common::call(s.addr, Req::get("/openapi.json")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.text, credits_service::openapi_json());
    s.shutdown().await;
}
