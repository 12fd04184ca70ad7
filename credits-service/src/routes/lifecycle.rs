//! The grant lifecycle (admin only): void what is left of a lot, freeze, unfreeze and close
//! a tenant. Each is a ledger command under the request's `Idempotency-Key`, journaled and
//! audited like every other change.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use credits_core::{Command, Effect, LotId, Reason, Receipt, Request, TenantId};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::json::{ApiJson, ApiPath};
use crate::routes::credits::{BalanceDto, idempotency_key};
use crate::state::AppState;

/// The OpenAPI description of these routes (merged into the served document by
/// `openapi.rs`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(void_lot, freeze, unfreeze, close))]
pub(crate) struct Api;

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/tenants/{tenant}/lots/{lot}/void", post(void_lot))
        .route("/v1/tenants/{tenant}/freeze", post(freeze))
        .route("/v1/tenants/{tenant}/unfreeze", post(unfreeze))
        .route("/v1/tenants/{tenant}/close", post(close))
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
