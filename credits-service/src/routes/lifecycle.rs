//! The grant lifecycle (admin only): void what is left of a lot, freeze, unfreeze and close
//! a tenant, and import history from another system. Each is a ledger command under the
//! request's `Idempotency-Key`, journaled and audited like every other change.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use credits_core::{Amount, Command, Effect, LotId, Reason, Receipt, Request, TenantId};
use metered_clock::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::json::{ApiJson, ApiPath};
use crate::routes::credits::{BalanceDto, idempotency_key};
use crate::state::AppState;

/// The OpenAPI description of these routes (merged into the served document by
/// `openapi.rs`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(void_lot, freeze, unfreeze, close, import))]
pub(crate) struct Api;

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/tenants/{tenant}/lots/{lot}/void", post(void_lot))
        .route("/v1/tenants/{tenant}/freeze", post(freeze))
        .route("/v1/tenants/{tenant}/unfreeze", post(unfreeze))
        .route("/v1/tenants/{tenant}/close", post(close))
        .route("/v1/tenants/{tenant}/imports", post(import))
}

/// What a lifecycle command did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
enum LifecycleEffectDto {
    /// What was left of the lot was removed.
    Voided {
        lot: u64,
        voided: u64,
    },
    /// The tenant is frozen.
    Frozen,
    /// The tenant is open again.
    Unfrozen,
    /// The tenant is closed; `voided` is what its remaining lots held.
    Closed {
        voided: u64,
    },
    /// An imported grant: the lot it made (`null` when it all paid overdraft debt).
    Granted {
        lot: Option<u64>,
    },
    /// An imported consumption.
    Consumed,
    Other,
}

/// The receipt of a lifecycle command.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct LifecycleOutcomeDto {
    entry: u64,
    at_ms: u64,
    balance: BalanceDto,
    effect: LifecycleEffectDto,
}

impl From<Receipt> for LifecycleOutcomeDto {
    fn from(o: Receipt) -> Self {
        let effect = match o.effect {
            Effect::Voided { lot, voided } => LifecycleEffectDto::Voided {
                lot: lot.get(),
                voided: voided.units(),
            },
            Effect::Frozen => LifecycleEffectDto::Frozen,
            Effect::Unfrozen => LifecycleEffectDto::Unfrozen,
            Effect::Closed { voided } => LifecycleEffectDto::Closed {
                voided: voided.units(),
            },
            Effect::Granted { lot } => LifecycleEffectDto::Granted {
                lot: lot.map(LotId::get),
            },
            Effect::Consumed => LifecycleEffectDto::Consumed,
            _ => LifecycleEffectDto::Other,
        };
        LifecycleOutcomeDto {
            entry: o.entry.get(),
            at_ms: o.at.as_unix_millis(),
            balance: o.balance.into(),
            effect,
        }
    }
}

/// Runs `command` for `tenant` as admin under the request's key.
async fn run(
    state: &AppState,
    headers: &HeaderMap,
    tenant: &str,
    command: impl FnOnce() -> Result<Command, ApiError>,
) -> Result<Json<LifecycleOutcomeDto>, ApiError> {
    state.auth.admin(headers)?;
    let tenant: TenantId = state.tenant_access(headers, tenant).await?;
    let key = idempotency_key(headers)?;
    let command = command()?;
    let name = command.name();
    let o = state
        .guarded(
            state
                .ledger
                .apply(&Request::new(tenant.clone(), key.clone(), command)),
        )
        .await?;
    tracing::info!(%tenant, key = %key, command = name, entry = o.entry.get(), "lifecycle change answered");
    Ok(Json(o.into()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Void {
    /// Why (1 to 128 bytes of printable ASCII, no leading or trailing space); recorded on
    /// the journal entry and in the audit log.
    #[schema(min_length = 1, max_length = 128)]
    reason: String,
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/lots/{lot}/void",
    tag = "credits",
    summary = "Remove what is left of a lot (admin)",
    params(("tenant" = String, Path, description = "The tenant id (1 to 128 printable ASCII bytes, no spaces).", pattern = "^[!-~]{1,128}$", example = "acme"), ("lot" = String, Path, description = "The lot id (a whole number, from a grant's receipt).", pattern = "^[0-9]{1,19}$", example = "1"), ("Idempotency-Key" = String, Header, description = "1 to 128 printable ASCII bytes, no spaces: the same key with the same request answers the first answer again.", pattern = "^[!-~]{1,128}$")),
    request_body = Void,
    responses((status = 200, description = "The receipt (a replay: the first answer again)", body = LifecycleOutcomeDto), (status = 404, description = "`unknown_lot`", body = crate::error::ErrorResponse), (status = 409, description = "`lot_empty`, `tenant_closed` or `idempotency_conflict`", body = crate::error::ErrorResponse))
)]
async fn void_lot(
    State(state): State<Arc<AppState>>,
    ApiPath((tenant, lot)): ApiPath<(String, String)>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Void>,
) -> Result<Json<LifecycleOutcomeDto>, ApiError> {
    run(&state, &headers, &tenant, || {
        let lot = lot
            .parse::<u64>()
            .map(LotId::new)
            .map_err(|_| ApiError::bad_request("invalid_lot_id", "a lot id is a whole number"))?;
        let reason = Reason::new(&body.reason)?;
        Ok(Command::VoidLot { lot, reason })
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/freeze",
    tag = "credits",
    summary = "Freeze a tenant: consumes and reserves refused until unfrozen (admin)",
    params(("tenant" = String, Path, description = "The tenant id (1 to 128 printable ASCII bytes, no spaces).", pattern = "^[!-~]{1,128}$", example = "acme"), ("Idempotency-Key" = String, Header, description = "1 to 128 printable ASCII bytes, no spaces: the same key with the same request answers the first answer again.", pattern = "^[!-~]{1,128}$")),
    responses((status = 200, description = "The receipt (a replay: the first answer again)", body = LifecycleOutcomeDto), (status = 409, description = "`tenant_frozen`, `tenant_closed` or `idempotency_conflict`", body = crate::error::ErrorResponse))
)]
async fn freeze(
    State(state): State<Arc<AppState>>,
    ApiPath(tenant): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Json<LifecycleOutcomeDto>, ApiError> {
    run(&state, &headers, &tenant, || Ok(Command::Freeze)).await
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/unfreeze",
    tag = "credits",
    summary = "Lift a freeze (admin)",
    params(("tenant" = String, Path, description = "The tenant id (1 to 128 printable ASCII bytes, no spaces).", pattern = "^[!-~]{1,128}$", example = "acme"), ("Idempotency-Key" = String, Header, description = "1 to 128 printable ASCII bytes, no spaces: the same key with the same request answers the first answer again.", pattern = "^[!-~]{1,128}$")),
    responses((status = 200, description = "The receipt (a replay: the first answer again)", body = LifecycleOutcomeDto), (status = 409, description = "`tenant_not_frozen`, `tenant_closed` or `idempotency_conflict`", body = crate::error::ErrorResponse))
)]
async fn unfreeze(
    State(state): State<Arc<AppState>>,
    ApiPath(tenant): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Json<LifecycleOutcomeDto>, ApiError> {
    run(&state, &headers, &tenant, || Ok(Command::Unfreeze)).await
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/close",
    tag = "credits",
    summary = "Close a tenant for good, voiding what is left (admin)",
    params(("tenant" = String, Path, description = "The tenant id (1 to 128 printable ASCII bytes, no spaces).", pattern = "^[!-~]{1,128}$", example = "acme"), ("Idempotency-Key" = String, Header, description = "1 to 128 printable ASCII bytes, no spaces: the same key with the same request answers the first answer again.", pattern = "^[!-~]{1,128}$")),
    responses((status = 200, description = "The receipt (a replay: the first answer again)", body = LifecycleOutcomeDto), (status = 409, description = "`holds_open`, `tenant_closed` or `idempotency_conflict`", body = crate::error::ErrorResponse))
)]
async fn close(
    State(state): State<Arc<AppState>>,
    ApiPath(tenant): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Json<LifecycleOutcomeDto>, ApiError> {
    run(&state, &headers, &tenant, || Ok(Command::Close)).await
}

/// One grant or consumption from another system, at its original time.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Import {
    /// A grant: a lot of `amount` expiring at `expires_at_ms` (absent: never; after `at_ms`).
    Grant {
        #[schema(minimum = 1)]
        amount: u64,
        /// When it was granted (Unix milliseconds).
        at_ms: u64,
        #[serde(default)]
        expires_at_ms: Option<u64>,
        #[serde(default)]
        priority: u16,
    },
    /// A consumption of `amount`.
    Consume {
        #[schema(minimum = 1)]
        amount: u64,
        /// When it was consumed (Unix milliseconds).
        at_ms: u64,
    },
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/imports",
    tag = "credits",
    summary = "Import a grant or a consumption from another system at its original time (admin)",
    description = "A tenant's imports come in time order (not before its last entry, not after now). Put the other system's id in the Idempotency-Key (say `import/<id>`): a re-run import applies nothing twice. Recorded as `imported_grant` / `imported_consume` entries dated at their original time.",
    params(("tenant" = String, Path, description = "The tenant id (1 to 128 printable ASCII bytes, no spaces).", pattern = "^[!-~]{1,128}$", example = "acme"), ("Idempotency-Key" = String, Header, description = "1 to 128 printable ASCII bytes, no spaces: the same key with the same request answers the first answer again.", pattern = "^[!-~]{1,128}$")),
    request_body = Import,
    responses((status = 200, description = "The receipt (a replay: the first answer again)", body = LifecycleOutcomeDto), (status = 400, description = "`import_in_future`, `expiry_not_in_future` or `zero_amount`", body = crate::error::ErrorResponse), (status = 402, description = "`insufficient_credits` at the import's time", body = crate::error::ErrorResponse), (status = 404, description = "`unknown_tenant`", body = crate::error::ErrorResponse), (status = 409, description = "`import_out_of_order`, `tenant_frozen`, `tenant_closed` or `idempotency_conflict`", body = crate::error::ErrorResponse), (status = 422, description = "`amount_overflow`: past what the backend stores", body = crate::error::ErrorResponse))
)]
async fn import(
    State(state): State<Arc<AppState>>,
    ApiPath(tenant): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Import>,
) -> Result<Json<LifecycleOutcomeDto>, ApiError> {
    run(&state, &headers, &tenant, || {
        Ok(match body {
            Import::Grant {
                amount,
                at_ms,
                expires_at_ms,
                priority,
            } => Command::ImportGrant {
                amount: Amount::new(amount),
                expires_at: expires_at_ms.map(Timestamp::from_unix_millis),
                priority,
                at: Timestamp::from_unix_millis(at_ms),
            },
            Import::Consume { amount, at_ms } => Command::ImportConsume {
                amount: Amount::new(amount),
                at: Timestamp::from_unix_millis(at_ms),
            },
        })
    })
    .await
}
