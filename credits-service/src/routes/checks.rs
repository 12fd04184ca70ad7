//! Ledger checks (operator only): a tenant's journal replayed from its first entry against
//! the stored counters, and the conservation equations of one tenant or the whole ledger.
//!
//! Both answer `200` whatever they find, with an `ok` field (like `POST /v1/audit/verify`
//! and its `intact`): the request succeeded, and a finding is the answer, not an error of
//! the request. A disagreement is a bug or corrupted storage, never a caller's mistake; it
//! is also logged at `error` level by the ledger.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use credits_core::{JournalCheck, JournalMismatch, Totals};
use serde::Serialize;

use crate::error::ApiError;
use crate::json::ApiPath;
use crate::state::AppState;

/// The OpenAPI description of these routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(verify_journal, tenant_conservation, ledger_conservation))]
pub(crate) struct Api;

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/tenants/{tenant}/journal/verify", post(verify_journal))
        .route(
            "/v1/tenants/{tenant}/conservation",
            get(tenant_conservation),
        )
        .route("/v1/conservation", get(ledger_conservation))
}

/// Which property of the replay failed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum JournalCheckDto {
    /// Entry numbers are not 1, 2, 3, … without gaps (a lost or doubled row).
    Sequence,
    /// An entry's `before` is not the previous entry's `after` (zero for the first).
    Continuity,
    /// After an entry, `granted + refunded + overdrawn ≠ available + held + consumed +
    /// expired` over the replayed sums.
    Conservation,
    /// The replayed sums or the last balance differ from the stored counters.
    Counters,
    /// A replayed sum does not fit 64 bits.
    Overflow,
}

impl From<JournalCheck> for JournalCheckDto {
    fn from(c: JournalCheck) -> Self {
        match c {
            JournalCheck::Sequence => JournalCheckDto::Sequence,
            JournalCheck::Continuity => JournalCheckDto::Continuity,
            JournalCheck::Conservation => JournalCheckDto::Conservation,
            JournalCheck::Counters => JournalCheckDto::Counters,
            JournalCheck::Overflow => JournalCheckDto::Overflow,
        }
    }
}

/// The first entry (or the end state) that disagrees.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct JournalMismatchDto {
    /// The entry at fault; `null` when every entry replays but the end state differs
    /// from the stored counters (`check` is then `counters`).
    entry: Option<u64>,
    check: JournalCheckDto,
    /// What was expected and what was found.
    detail: String,
}

impl From<JournalMismatch> for JournalMismatchDto {
    fn from(m: JournalMismatch) -> Self {
        JournalMismatchDto {
            entry: m.entry.map(|e| e.get()),
            check: m.check.into(),
            detail: m.detail,
        }
    }
}

/// The replay's report.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct JournalReportDto {
    tenant: String,
    /// The journal replays to the stored counters, lots and holds.
    ok: bool,
    /// Entries replayed (when `ok`).
    entries_replayed: Option<u64>,
    /// The first disagreement (when not `ok`).
    mismatch: Option<JournalMismatchDto>,
}

/// Replays the tenant's journal from its first entry and compares the result with the
/// stored counters: gap-free entry numbers, each entry starting where the previous one
/// ended, conservation after every entry, and the replayed sums (granted, refunded,
/// consumed, expired) and last balance equal to the counters. Reads the whole journal in
/// pages of 1,000, under the request timeout.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/journal/verify",
    tag = "credits",
    summary = "Replay a tenant's journal against its stored counters (admin)",
    params(("tenant" = String, Path, description = "The tenant id (1 to 128 printable ASCII bytes, no spaces).", pattern = "^[!-~]{1,128}$", example = "acme")),
    responses((status = 200, description = "The report: `ok` with the number of entries replayed, or the first entry that disagrees", body = JournalReportDto))
)]
async fn verify_journal(
    State(state): State<Arc<AppState>>,
    ApiPath(tenant): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Json<JournalReportDto>, ApiError> {
    state.auth.admin(&headers)?;
    let tenant = state.tenant_access(&headers, &tenant).await?;
    let report = state.guarded(state.ledger.verify_journal(&tenant)).await?;
    let outcome = if report.is_ok() { "ok" } else { "mismatch" };
    metrics::counter!("credits_journal_verifications_total", "outcome" => outcome).increment(1);
    Ok(Json(match report {
        Ok(entries) => {
            tracing::info!(%tenant, entries, "journal verified by the operator");
            JournalReportDto {
                tenant: tenant.to_string(),
                ok: true,
                entries_replayed: Some(entries),
                mismatch: None,
            }
        }
        Err(m) => JournalReportDto {
            tenant: tenant.to_string(),
            ok: false,
            entries_replayed: None,
            mismatch: Some(m.into()),
        },
    }))
}

/// Lifetime counters, current balance and the recomputed sums of live lots and holds.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct TotalsDto {
    granted: u64,
    refunded: u64,
    consumed: u64,
    expired: u64,
    available: u64,
    held: u64,
    overdrawn: u64,
    /// Sum of the remaining amounts of live lots (recomputed, not a counter).
    lots: u64,
    /// Sum of active holds (recomputed, not a counter).
    holds: u64,
}

impl From<Totals> for TotalsDto {
    fn from(t: Totals) -> Self {
        TotalsDto {
            granted: t.granted.units(),
            refunded: t.refunded.units(),
            consumed: t.consumed.units(),
            expired: t.expired.units(),
            available: t.available.units(),
            held: t.held.units(),
            overdrawn: t.overdrawn.units(),
            lots: t.lots.units(),
            holds: t.holds.units(),
        }
    }
}

/// The conservation check's report.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ConservationDto {
    /// The tenant checked; `null` for the whole ledger.
    tenant: Option<String>,
    /// `granted + refunded + overdrawn = available + held + consumed + expired`,
    /// `lots = available` and `holds = held` all hold.
    ok: bool,
    /// The equation that does not hold (when not `ok`).
    violation: Option<String>,
    totals: TotalsDto,
}

async fn conservation(
    state: &AppState,
    tenant: Option<&credits_core::TenantId>,
) -> Result<Json<ConservationDto>, ApiError> {
    let checked = state
        .guarded(state.ledger.check_conservation(tenant))
        .await?;
    let outcome = if checked.is_ok() { "ok" } else { "violated" };
    metrics::counter!("credits_conservation_checks_total", "outcome" => outcome).increment(1);
    let (violation, totals) = match checked {
        Ok(totals) => (None, totals),
        Err(v) => (Some(v.detail.to_owned()), v.totals),
    };
    Ok(Json(ConservationDto {
        tenant: tenant.map(ToString::to_string),
        ok: violation.is_none(),
        violation,
        totals: totals.into(),
    }))
}

/// Checks the conservation equations on the tenant's counters and its live lots and
/// holds (recomputed independently of the counters).
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/conservation",
    tag = "credits",
    summary = "Check a tenant's conservation equations (admin)",
    params(("tenant" = String, Path, description = "The tenant id (1 to 128 printable ASCII bytes, no spaces).", pattern = "^[!-~]{1,128}$", example = "acme")),
    responses((status = 200, description = "The report: `ok`, or the equation that does not hold, with the totals checked", body = ConservationDto))
)]
async fn tenant_conservation(
    State(state): State<Arc<AppState>>,
    ApiPath(tenant): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Json<ConservationDto>, ApiError> {
    state.auth.admin(&headers)?;
    let tenant = state.tenant_access(&headers, &tenant).await?;
    conservation(&state, Some(&tenant)).await
}

/// Checks the conservation equations on the sums over every tenant.
#[utoipa::path(
    get,
    path = "/v1/conservation",
    tag = "credits",
    summary = "Check the whole ledger's conservation equations (admin)",
    responses((status = 200, description = "The report: `ok`, or the equation that does not hold, with the totals checked", body = ConservationDto))
)]
async fn ledger_conservation(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<ConservationDto>, ApiError> {
    state.auth.admin(&headers)?;
    conservation(&state, None).await
}
