//! The service's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! annotations and the request, response and error types' `ToSchema` derives; served at
//! `GET /openapi.json` and committed as `docs/openapi.json` (a test keeps the two equal).
//!
//! Each route module describes its own operations (its `Api`); this module merges them and
//! adds what every API operation shares, in one place: the bearer-token security scheme and
//! the error answers any `/v1` operation may give (`ErrorResponse`, the one error format).

use std::sync::LazyLock;

use utoipa::OpenApi as _;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};

use crate::routes::{audit, checks, credits, experiments, lifecycle, ops, rollouts};

/// The name of the bearer-token security scheme.
const BEARER: &str = "bearer";

/// The errors every authenticated operation may answer, whatever it does: the order of the
/// checks (`docs/credits-service.md`, "Errors") reaches each of them before the handler.
const SHARED_ERRORS: [(&str, &str); 9] = [
    (
        "400",
        "A malformed path, query, header or body (`invalid_request`, `invalid_path`, `bad_json`, …)",
    ),
    (
        "401",
        "No, malformed or unknown bearer token (`unauthenticated`)",
    ),
    (
        "403",
        "A token of another tenant (`forbidden`) or not the admin's (`admin_required`)",
    ),
    (
        "404",
        "Unknown tenant, hold, entry, experiment or rollout (`unknown_tenant`, …)",
    ),
    ("413", "A body over the limit (`body_too_large`)"),
    (
        "415",
        "A body that is not `application/json` (`unsupported_media_type`)",
    ),
    (
        "429",
        "Rate limited (`rate_limited`, `key_capacity_exhausted`; with `Retry-After`)",
    ),
    (
        "500",
        "A failure a retry will not cure (`storage_failure`, `internal`, …)",
    ),
    (
        "503",
        "Unavailable for now: retry with the same key (`storage_unavailable`, `circuit_open`, `timeout`, …)",
    ),
];

/// The operations that answer without a token.
const PUBLIC_PATHS: [&str; 4] = ["/health", "/ready", "/metrics", "/circuit-breaker/stats"];

/// The whole document.
fn document() -> OpenApi {
    let mut doc = credits::Api::openapi();
    for part in [
        lifecycle::Api::openapi(),
        checks::Api::openapi(),
        experiments::Api::openapi(),
        rollouts::Api::openapi(),
        audit::Api::openapi(),
        ops::Api::openapi(),
    ] {
        doc.merge(part);
    }
    doc.info.description = Some(
        "The credits service of the metered suite: tenants, grants, consumption, holds, \
         refunds, Bayesian experiments, canary rollouts and the tamper-evident audit log. \
         Every error has one shape (`ErrorResponse`) with a stable `code`; see \
         docs/credits-service.md."
            .to_owned(),
    );
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "The admin token (`CREDITS_ADMIN_TOKEN`) or a tenant's \
                     (`CREDITS_TENANT_TOKENS`)",
                ))
                .build(),
        ),
    );
    let error = ContentBuilder::new()
        .schema(Some(RefOr::Ref(Ref::from_schema_name("ErrorResponse"))))
        .build();
    for (status, description) in SHARED_ERRORS {
        components.responses.insert(
            format!("Error{status}"),
            ResponseBuilder::new()
                .description(description)
                .content("application/json", error.clone())
                .build()
                .into(),
        );
    }
    for (path, item) in &mut doc.paths.paths {
        if PUBLIC_PATHS.contains(&path.as_str()) {
            continue;
        }
        for operation in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            operation.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
            for (status, _) in SHARED_ERRORS {
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| {
                        RefOr::Ref(Ref::new(format!("#/components/responses/Error{status}")))
                    });
            }
        }
    }
    doc
}

/// Unsigned integers keep their real range: utoipa's `non_strict_integers` names them
/// `u-int8` … `u-int64` (its kebab-case spelling of `UInt64`); the document says `uint8` …
/// `uint64`, so that a client (or schemathesis) does not read an amount as an `int64`
/// limited to 2^63 − 1 (amounts go up to 2^64 − 1).
fn unsigned_formats(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    serde_json::Value::String(s) if key == "format" && s.starts_with("u-int") => {
                        *s = s.replacen("u-int", "uint", 1);
                    }
                    _ => unsigned_formats(v),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(unsigned_formats),
        _ => {}
    }
}

static JSON: LazyLock<String> = LazyLock::new(|| {
    let rendered = serde_json::to_value(document()).and_then(|mut v| {
        unsigned_formats(&mut v);
        serde_json::to_string_pretty(&v)
    });
    let mut text = rendered.unwrap_or_else(|e| format!("{{\"error\": \"openapi: {e}\"}}"));
    text.push('\n');
    text
});

/// The service's OpenAPI 3.1 document as pretty-printed JSON (with a final newline): what
/// `GET /openapi.json` answers and `docs/openapi.json` holds.
///
/// ```
/// let doc: serde_json::Value = serde_json::from_str(credits_service::openapi_json())?;
/// assert_eq!(doc["openapi"], "3.1.0");
/// assert!(doc["paths"]["/v1/tenants/{tenant}/grants"]["post"].is_object());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[must_use]
pub fn openapi_json() -> &'static str {
    &JSON
}
