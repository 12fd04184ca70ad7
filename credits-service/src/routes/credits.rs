//! Credits: tenants, grants, consumption, holds (reserve → commit / cancel), refunds,
//! balance and paged history.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use audit_chain::MaskingPolicy;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use credits_core::{
    Amount, Balance, BalanceEvent, BalanceThresholds, Command, Effect, EntrySeq, EventSeq,
    GrantOptions, GrantTag, HoldId, HoldResolution, HoldState, IdempotencyKey, JournalEntry,
    LedgerError, PageRequest, Receipt, Request, RolloverPolicy, TenantId, TenantSettings,
    store::PAGE_LEN_MAX,
};
use metered_clock::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::json::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

/// The header carrying a mutation's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Most metadata pairs a grant may carry (they are logged, masked).
const METADATA_PAIRS_MAX: usize = 16;
/// Longest hold time-to-live accepted (30 days).
const HOLD_TTL_MAX: Duration = Duration::from_secs(30 * 86_400);

/// The OpenAPI description of these routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    create_tenant,
    balance,
    history,
    events,
    grant,
    consume,
    reserve,
    hold,
    commit,
    cancel,
    refund
))]
pub(crate) struct Api;

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/tenants", post(create_tenant))
        .route("/v1/tenants/{tenant}/balance", get(balance))
        .route("/v1/tenants/{tenant}/history", get(history))
        .route("/v1/tenants/{tenant}/events", get(events))
        .route("/v1/tenants/{tenant}/grants", post(grant))
        .route("/v1/tenants/{tenant}/consume", post(consume))
        .route("/v1/tenants/{tenant}/holds", post(reserve))
        .route("/v1/tenants/{tenant}/holds/{hold}", get(hold))
        .route("/v1/tenants/{tenant}/holds/{hold}/commit", post(commit))
        .route("/v1/tenants/{tenant}/holds/{hold}/cancel", post(cancel))
        .route("/v1/tenants/{tenant}/refunds", post(refund))
}

/// The request's `Idempotency-Key` (required; 400 `missing_idempotency_key` without it,
/// 400 `invalid_idempotency_key` for one that is not 1 to 128 printable ASCII bytes).
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<IdempotencyKey, ApiError> {
    let value = headers.get(IDEMPOTENCY_KEY).ok_or_else(|| {
        ApiError::bad_request(
            "missing_idempotency_key",
            "mutations need an Idempotency-Key header (retry with the same key to apply once)",
        )
    })?;
    let text = value
        .to_str()
        .map_err(|_| ApiError::bad_request("invalid_idempotency_key", "must be printable ASCII"))?;
    Ok(IdempotencyKey::new(text)?)
}

fn parse_hold(raw: &str) -> Result<HoldId, ApiError> {
    raw.parse::<u64>()
        .map(HoldId::new)
        .map_err(|_| ApiError::bad_request("invalid_hold_id", "a hold id is a whole number"))
}

fn amount(units: u64) -> Result<Amount, ApiError> {
    if units == 0 {
        return Err(credits_core::LedgerError::ZeroAmount.into());
    }
    Ok(Amount::new(units))
}

/// A balance in JSON.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct BalanceDto {
    available: u64,
    held: u64,
    overdrawn: u64,
}

impl From<Balance> for BalanceDto {
    fn from(b: Balance) -> Self {
        BalanceDto {
            available: b.available.units(),
            held: b.held.units(),
            overdrawn: b.overdrawn.units(),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
enum EffectDto {
    Granted {
        lot: Option<u64>,
    },
    Consumed,
    /// A consume with `up_to`: how much it took.
    Taken {
        amount: u64,
    },
    Reserved {
        hold: u64,
        expires_at_ms: u64,
    },
    Committed {
        hold: u64,
        committed: u64,
        released: u64,
    },
    Cancelled {
        hold: u64,
        released: u64,
    },
    Refunded {
        lot: Option<u64>,
    },
    Other,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct OutcomeDto {
    entry: u64,
    at_ms: u64,
    balance: BalanceDto,
    effect: EffectDto,
}

impl From<Receipt> for OutcomeDto {
    fn from(o: Receipt) -> Self {
        let effect = match o.effect {
            Effect::Granted { lot } => EffectDto::Granted {
                lot: lot.map(|l| l.get()),
            },
            Effect::Consumed => EffectDto::Consumed,
            Effect::Taken { amount } => EffectDto::Taken {
                amount: amount.units(),
            },
            Effect::Reserved { hold, expires_at } => EffectDto::Reserved {
                hold: hold.get(),
                expires_at_ms: expires_at.as_unix_millis(),
            },
            Effect::Committed {
                hold,
                committed,
                released,
            } => EffectDto::Committed {
                hold: hold.get(),
                committed: committed.units(),
                released: released.units(),
            },
            Effect::Cancelled { hold, released } => EffectDto::Cancelled {
                hold: hold.get(),
                released: released.units(),
            },
            Effect::Refunded { lot } => EffectDto::Refunded {
                lot: lot.map(|l| l.get()),
            },
            _ => EffectDto::Other,
        };
        OutcomeDto {
            entry: o.entry.get(),
            at_ms: o.at.as_unix_millis(),
            balance: o.balance.into(),
            effect,
        }
    }
}

fn outcome(o: Receipt) -> Json<OutcomeDto> {
    Json(o.into())
}

/// A created tenant.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct TenantDto {
    tenant: String,
    overdraft_limit: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    rollover: Option<RolloverDto>,
    /// The balance thresholds, ascending (absent: none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    thresholds: Vec<u64>,
}

/// Rollover at expiry: `share_percent` % (1–100) of an expiring lot's unused credits, at
/// most `cap`, become a new lot living `ttl_ms` milliseconds (1 ms to 10 years).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RolloverDto {
    #[schema(minimum = 1, maximum = 100)]
    share_percent: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    cap: Option<u64>,
    #[schema(minimum = 1)]
    ttl_ms: u64,
}

impl RolloverDto {
    fn policy(self) -> Result<RolloverPolicy, LedgerError> {
        RolloverPolicy::new(
            self.share_percent,
            self.cap.map(Amount::new),
            std::time::Duration::from_millis(self.ttl_ms),
        )
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    #[schema(pattern = "^[!-~]{1,128}$")]
    tenant: String,
    #[serde(default)]
    overdraft_limit: u64,
    /// Rollover at expiry (none: a lot's unused credits expire).
    #[serde(default)]
    rollover: Option<RolloverDto>,
    /// Balance thresholds: up to 8 distinct, non-zero amounts of available credits; a
    /// change taking available from at or above one to below it emits one event
    /// (`GET /v1/tenants/{tenant}/events`). None by default.
    #[serde(default)]
    #[schema(max_items = 8)]
    thresholds: Vec<u64>,
}

#[utoipa::path(
    post,
    path = "/v1/tenants",
    tag = "credits",
    summary = "Create a tenant (admin)",
    request_body = CreateTenant,
    responses((status = 201, description = "Created", body = TenantDto), (status = 400, description = "`invalid_tenant_id`, `invalid_rollover`, `invalid_thresholds`", body = crate::error::ErrorResponse), (status = 409, description = "`tenant_exists`", body = crate::error::ErrorResponse))
)]
async fn create_tenant(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateTenant>,
) -> Result<impl IntoResponse, ApiError> {
    state.auth.admin(&headers)?;
    let tenant = TenantId::new(&body.tenant)?;
    let settings = TenantSettings {
        overdraft_limit: Amount::new(body.overdraft_limit),
        rollover: body.rollover.map(RolloverDto::policy).transpose()?,
        thresholds: BalanceThresholds::new(body.thresholds.iter().copied().map(Amount::new))?,
    };
    state
        .guarded(state.ledger.create_tenant(&tenant, settings))
        .await?;
    tracing::info!(%tenant, "tenant created");
    Ok((
        StatusCode::CREATED,
        Json(TenantDto {
            tenant: tenant.as_str().to_owned(),
            overdraft_limit: body.overdraft_limit,
            rollover: body.rollover,
            thresholds: settings
                .thresholds
                .as_slice()
                .iter()
                .map(|a| a.units())
                .collect(),
        }),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/balance",
    tag = "credits",
    summary = "A tenant's balance",
    params(("tenant" = String, Path, description = "The tenant id (1 to 128 printable ASCII bytes, no spaces).", pattern = "^[!-~]{1,128}$", example = "acme")),
    responses((status = 200, description = "The balance", body = BalanceDto))
)]
async fn balance(
    State(state): State<Arc<AppState>>,
    ApiPath(tenant): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Json<BalanceDto>, ApiError> {
    let tenant = state.tenant_access(&headers, &tenant).await?;
    let b = state.guarded(state.ledger.balance(&tenant)).await?;
    Ok(Json(b.into()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Grant {
    #[schema(minimum = 1)]
    amount: u64,
    expires_at_ms: Option<u64>,
    #[serde(default)]
    #[schema(maximum = 65_535)]
    priority: u16,
    /// Free-form context (e.g. a payment reference), logged with payment-like fields masked.
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

/// The tag of a grant's metadata: the first 16 bytes of a SHA-256 over each key and value,
/// each preceded by its length (so `("a","bc")` and `("ab","c")` differ); none for no
/// metadata (a plain grant, as before tags existed).
fn metadata_tag(metadata: &BTreeMap<String, String>) -> Option<GrantTag> {
    if metadata.is_empty() {
        return None;
    }
    let mut h = Sha256::new();
    for (k, v) in metadata {
        for part in [k.as_bytes(), v.as_bytes()] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
    }
    let full: [u8; 32] = h.finalize().into();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    Some(GrantTag::new(out))
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/grants",
    tag = "credits",
    summary = "Add credits as a lot (admin)",
    params(("tenant" = String, Path, description = "The tenant id (1 to 128 printable ASCII bytes, no spaces).", pattern = "^[!-~]{1,128}$", example = "acme"), ("Idempotency-Key" = String, Header, description = "1 to 128 printable ASCII bytes, no spaces: the same key with the same request answers the first answer again.", pattern = "^[!-~]{1,128}$")),
    request_body = Grant,
    responses((status = 200, description = "The receipt (a replay: the first answer again)", body = OutcomeDto), (status = 409, description = "`idempotency_conflict` or a state conflict", body = crate::error::ErrorResponse), (status = 422, description = "`amount_overflow` and other values the ledger cannot hold", body = crate::error::ErrorResponse))
)]
async fn grant(
    State(state): State<Arc<AppState>>,
    ApiPath(tenant): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Grant>,
) -> Result<Json<OutcomeDto>, ApiError> {
    state.auth.admin(&headers)?;
    let tenant = state.tenant_access(&headers, &tenant).await?;
    let key = idempotency_key(&headers)?;
    let amount = amount(body.amount)?;
    if body.metadata.len() > METADATA_PAIRS_MAX
        || body
            .metadata
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > 64 || v.len() > 256)
    {
        return Err(ApiError::bad_request(
            "invalid_metadata",
            format!(
                "at most {METADATA_PAIRS_MAX} pairs, keys of 1 to 64 bytes, values up to 256 bytes"
            ),
        ));
    }
    let mut options = GrantOptions::default().priority(body.priority);
    if let Some(ms) = body.expires_at_ms {
        options = options.expires_at(Timestamp::from_unix_millis(ms));
    }
    // The metadata's digest goes into the command the ledger keeps under the key, so the
    // same key with other metadata is refused by every replica (409 `idempotency_conflict`).
    if let Some(tag) = metadata_tag(&body.metadata) {
        options = options.tag(tag);
    }
    let o = state
        .guarded(state.ledger.grant(&tenant, key.clone(), amount, options))
        .await?;
    let mut metadata = body.metadata;
    MaskingPolicy::standard().apply(&mut metadata);
    // A replay answers with the original entry: nothing is applied twice.
    tracing::info!(%tenant, key = %key, amount = amount.units(), entry = o.entry.get(), ?metadata, "grant answered");
    Ok(outcome(o))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Consume {
    #[schema(minimum = 1)]
    amount: u64,
    /// Take whatever is spendable, up to `amount` (`Command::ConsumeUpTo`).
    #[serde(default)]
    up_to: bool,
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/consume",
    tag = "credits",
    summary = "Spend credits now",
    params(("tenant" = String, Path, description = "The tenant id (1 to 128 printable ASCII bytes, no spaces).", pattern = "^[!-~]{1,128}$", example = "acme"), ("Idempotency-Key" = String, Header, description = "1 to 128 printable ASCII bytes, no spaces: the same key with the same request answers the first answer again.", pattern = "^[!-~]{1,128}$")),
    request_body = Consume,
    responses((status = 200, description = "The receipt (a replay: the first answer again)", body = OutcomeDto), (status = 402, description = "`insufficient_credits`", body = crate::error::ErrorResponse), (status = 409, description = "`idempotency_conflict` or a state conflict", body = crate::error::ErrorResponse), (status = 422, description = "`amount_overflow` and other values the ledger cannot hold", body = crate::error::ErrorResponse))
)]
async fn consume(
    State(state): State<Arc<AppState>>,
    ApiPath(tenant): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Consume>,
) -> Result<Json<OutcomeDto>, ApiError> {
    let tenant = state.tenant_access(&headers, &tenant).await?;
    let key = idempotency_key(&headers)?;
    let amount = amount(body.amount)?;
    let command = if body.up_to {
        Command::ConsumeUpTo { max: amount }
    } else {
        Command::Consume { amount }
    };
    let o = state
        .guarded(state.ledger.apply(&Request::new(tenant, key, command)))
        .await?;
    Ok(outcome(o))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Reserve {
    #[schema(minimum = 1)]
    amount: u64,
    /// How long the hold lives (1 ms to 30 days).
    #[schema(minimum = 1, maximum = 2_592_000_000_u64)]
    ttl_ms: u64,
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/holds",
    tag = "credits",
    summary = "Set credits aside in a hold",
    params(("tenant" = String, Path, description = "The tenant id (1 to 128 printable ASCII bytes, no spaces).", pattern = "^[!-~]{1,128}$", example = "acme"), ("Idempotency-Key" = String, Header, description = "1 to 128 printable ASCII bytes, no spaces: the same key with the same request answers the first answer again.", pattern = "^[!-~]{1,128}$")),
    request_body = Reserve,
    responses((status = 200, description = "The receipt (a replay: the first answer again)", body = OutcomeDto), (status = 402, description = "`insufficient_credits`", body = crate::error::ErrorResponse), (status = 409, description = "`idempotency_conflict` or a state conflict", body = crate::error::ErrorResponse), (status = 422, description = "`amount_overflow` and other values the ledger cannot hold", body = crate::error::ErrorResponse))
)]
async fn reserve(
    State(state): State<Arc<AppState>>,
    ApiPath(tenant): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Reserve>,
) -> Result<Json<OutcomeDto>, ApiError> {
    let tenant = state.tenant_access(&headers, &tenant).await?;
    let key = idempotency_key(&headers)?;
    let amount = amount(body.amount)?;
    let ttl = Duration::from_millis(body.ttl_ms);
    if ttl > HOLD_TTL_MAX {
        return Err(ApiError::bad_request(
            "ttl_too_long",
            "a hold may live at most 30 days",
        ));
    }
    let o = state
        .guarded(state.ledger.reserve(&tenant, key, amount, ttl))
        .await?;
    Ok(outcome(o.receipt))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
enum HoldDto {
    Active { amount: u64, expires_at_ms: u64 },
    Committed { committed: u64 },
    Cancelled,
    Expired,
    Other,
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/holds/{hold}",
    tag = "credits",
    summary = "A hold's state",
    params(("tenant" = String, Path, description = "The tenant id (1 to 128 printable ASCII bytes, no spaces).", pattern = "^[!-~]{1,128}$", example = "acme"), ("hold" = String, Path, description = "The hold id (a whole number).", pattern = "^[0-9]{1,19}$", example = "1")),
    responses((status = 200, description = "The hold", body = HoldDto))
)]
async fn hold(
    State(state): State<Arc<AppState>>,
    ApiPath((tenant, hold)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<HoldDto>, ApiError> {
    let tenant = state.tenant_access(&headers, &tenant).await?;
    let hold = parse_hold(&hold)?;
    let h = state.guarded(state.ledger.hold(&tenant, hold)).await?;
    Ok(Json(match h {
        HoldState::Active { amount, expires_at } => HoldDto::Active {
            amount: amount.units(),
            expires_at_ms: expires_at.as_unix_millis(),
        },
        HoldState::Resolved(HoldResolution::Committed { committed }) => HoldDto::Committed {
            committed: committed.units(),
        },
        HoldState::Resolved(HoldResolution::Cancelled) => HoldDto::Cancelled,
        HoldState::Resolved(HoldResolution::Expired) => HoldDto::Expired,
        #[allow(unreachable_patterns)] // `HoldResolution` may grow.
        _ => HoldDto::Other,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Commit {
    #[schema(minimum = 1)]
    amount: u64,
    /// Spend at most what the hold holds, up to `amount` (`Command::CommitUpTo`).
    #[serde(default)]
    up_to: bool,
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/holds/{hold}/commit",
    tag = "credits",
    summary = "Spend part or all of a hold",
    params(("tenant" = String, Path, description = "The tenant id (1 to 128 printable ASCII bytes, no spaces).", pattern = "^[!-~]{1,128}$", example = "acme"), ("hold" = String, Path, description = "The hold id (a whole number).", pattern = "^[0-9]{1,19}$"), ("Idempotency-Key" = String, Header, description = "1 to 128 printable ASCII bytes, no spaces: the same key with the same request answers the first answer again.", pattern = "^[!-~]{1,128}$")),
    request_body = Commit,
    responses((status = 200, description = "The receipt (a replay: the first answer again)", body = OutcomeDto), (status = 409, description = "`idempotency_conflict` or a state conflict", body = crate::error::ErrorResponse), (status = 422, description = "`amount_overflow` and other values the ledger cannot hold", body = crate::error::ErrorResponse))
)]
async fn commit(
    State(state): State<Arc<AppState>>,
    ApiPath((tenant, hold)): ApiPath<(String, String)>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Commit>,
) -> Result<Json<OutcomeDto>, ApiError> {
    let tenant = state.tenant_access(&headers, &tenant).await?;
    let hold = parse_hold(&hold)?;
    let key = idempotency_key(&headers)?;
    let amount = amount(body.amount)?;
    let command = if body.up_to {
        Command::CommitUpTo { hold, max: amount }
    } else {
        Command::Commit { hold, amount }
    };
    let o = state
        .guarded(state.ledger.apply(&Request::new(tenant, key, command)))
        .await?;
    Ok(outcome(o))
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/holds/{hold}/cancel",
    tag = "credits",
    summary = "Release a hold",
    params(("tenant" = String, Path, description = "The tenant id (1 to 128 printable ASCII bytes, no spaces).", pattern = "^[!-~]{1,128}$", example = "acme"), ("hold" = String, Path, description = "The hold id (a whole number).", pattern = "^[0-9]{1,19}$"), ("Idempotency-Key" = String, Header, description = "1 to 128 printable ASCII bytes, no spaces: the same key with the same request answers the first answer again.", pattern = "^[!-~]{1,128}$")),
    responses((status = 200, description = "The receipt (a replay: the first answer again)", body = OutcomeDto), (status = 409, description = "`idempotency_conflict` or a state conflict", body = crate::error::ErrorResponse), (status = 422, description = "`amount_overflow` and other values the ledger cannot hold", body = crate::error::ErrorResponse))
)]
async fn cancel(
    State(state): State<Arc<AppState>>,
    ApiPath((tenant, hold)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<OutcomeDto>, ApiError> {
    let tenant = state.tenant_access(&headers, &tenant).await?;
    let hold = parse_hold(&hold)?;
    let key = idempotency_key(&headers)?;
    let o = state
        .guarded(state.ledger.cancel(&tenant, key, hold))
        .await?;
    Ok(outcome(o))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Refund {
    entry: u64,
    #[schema(minimum = 1)]
    amount: u64,
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/refunds",
    tag = "credits",
    summary = "Give back part of a consumption (admin)",
    params(("tenant" = String, Path, description = "The tenant id (1 to 128 printable ASCII bytes, no spaces).", pattern = "^[!-~]{1,128}$", example = "acme"), ("Idempotency-Key" = String, Header, description = "1 to 128 printable ASCII bytes, no spaces: the same key with the same request answers the first answer again.", pattern = "^[!-~]{1,128}$")),
    request_body = Refund,
    responses((status = 200, description = "The receipt (a replay: the first answer again)", body = OutcomeDto), (status = 409, description = "`idempotency_conflict` or a state conflict", body = crate::error::ErrorResponse), (status = 422, description = "`amount_overflow` and other values the ledger cannot hold", body = crate::error::ErrorResponse))
)]
async fn refund(
    State(state): State<Arc<AppState>>,
    ApiPath(tenant): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Refund>,
) -> Result<Json<OutcomeDto>, ApiError> {
    state.auth.admin(&headers)?;
    let tenant = state.tenant_access(&headers, &tenant).await?;
    let key = idempotency_key(&headers)?;
    let amount = amount(body.amount)?;
    let o = state
        .guarded(
            state
                .ledger
                .refund(&tenant, key, EntrySeq::new(body.entry), amount),
        )
        .await?;
    Ok(outcome(o))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// The `next` of the previous page (none: from the start).
    after: Option<u64>,
    /// Entries per page (1 to 1000, default 100).
    limit: Option<usize>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct EntryDto {
    seq: u64,
    at_ms: u64,
    kind: &'static str,
    amount: u64,
    before: BalanceDto,
    after: BalanceDto,
    hold: Option<u64>,
    lot: Option<u64>,
    refers_to: Option<u64>,
    key: Option<String>,
    /// Why, for an operator's change (a void); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl From<JournalEntry> for EntryDto {
    fn from(e: JournalEntry) -> Self {
        EntryDto {
            seq: e.seq.get(),
            at_ms: e.at.as_unix_millis(),
            kind: e.kind.as_str(),
            amount: e.amount.units(),
            before: e.before.into(),
            after: e.after.into(),
            hold: e.hold.map(|h| h.get()),
            lot: e.lot.map(|l| l.get()),
            refers_to: e.refers_to.map(|r| r.get()),
            key: e.key.map(|k| k.as_str().to_owned()),
            reason: e.reason.map(|r| r.as_str().to_owned()),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct HistoryDto {
    entries: Vec<EntryDto>,
    /// Pass as `after` for the next page; `null` on the last page.
    next: Option<u64>,
}

/// A page's `limit`: 100 unless given, 1 to [`PAGE_LEN_MAX`] (`400 invalid_limit` otherwise).
fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(100);
    if (1..=PAGE_LEN_MAX).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be 1 to {PAGE_LEN_MAX}"),
        ))
    }
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/history",
    tag = "credits",
    summary = "A page of the journal, oldest first",
    params(("tenant" = String, Path, description = "The tenant id (1 to 128 printable ASCII bytes, no spaces).", pattern = "^[!-~]{1,128}$", example = "acme"), HistoryQuery),
    responses((status = 200, description = "The page", body = HistoryDto))
)]
async fn history(
    State(state): State<Arc<AppState>>,
    ApiPath(tenant): ApiPath<String>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<HistoryDto>, ApiError> {
    let tenant = state.tenant_access(&headers, &tenant).await?;
    let limit = page_limit(q.limit)?;
    let page = PageRequest {
        after: q.after.map(EntrySeq::new),
        limit,
    };
    let page = state.guarded(state.ledger.history(&tenant, page)).await?;
    Ok(Json(HistoryDto {
        entries: page.entries.into_iter().map(EntryDto::from).collect(),
        next: page.next.map(EntrySeq::get),
    }))
}

/// One balance event: the tenant's available credits crossed `threshold` downward.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct EventDto {
    /// Its position in the tenant's feed (1, 2, 3, … without gaps).
    seq: u64,
    at_ms: u64,
    /// The threshold crossed.
    threshold: u64,
    /// The journal entry that crossed it.
    entry: u64,
    /// Available credits right after that entry.
    available: u64,
}

impl From<BalanceEvent> for EventDto {
    fn from(e: BalanceEvent) -> Self {
        EventDto {
            seq: e.seq.get(),
            at_ms: e.at.as_unix_millis(),
            threshold: e.threshold.units(),
            entry: e.entry.get(),
            available: e.available.units(),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// The `next` of the previous page, or the last `seq` processed (none: from the first).
    after: Option<u64>,
    /// Events per page (1 to 1000, default 100).
    limit: Option<usize>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct EventsDto {
    events: Vec<EventDto>,
    /// Pass as `after` for the next page; `null` on the last page.
    next: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/events",
    tag = "credits",
    summary = "A page of the tenant's balance events, oldest first",
    params(("tenant" = String, Path, description = "The tenant id (1 to 128 printable ASCII bytes, no spaces).", pattern = "^[!-~]{1,128}$", example = "acme"), EventsQuery),
    responses((status = 200, description = "The page", body = EventsDto), (status = 400, description = "`invalid_limit`", body = crate::error::ErrorResponse), (status = 404, description = "`unknown_tenant`", body = crate::error::ErrorResponse))
)]
async fn events(
    State(state): State<Arc<AppState>>,
    ApiPath(tenant): ApiPath<String>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<EventsDto>, ApiError> {
    let tenant = state.tenant_access(&headers, &tenant).await?;
    let limit = page_limit(q.limit)?;
    let after = q.after.map(EventSeq::new);
    let page = state
        .guarded(state.ledger.events(&tenant, after, limit))
        .await?;
    Ok(Json(EventsDto {
        events: page.events.into_iter().map(EventDto::from).collect(),
        next: page.next.map(EventSeq::get),
    }))
}
