//! Audit (operator only): verify a range of the log, the latest checkpoint, and the
//! inclusion proof of one entry.

use std::sync::Arc;

use audit_chain::{Checkpoint, Hash, verify_range, verify_sink};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::json::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

/// Most entries one verification request may cover.
const VERIFY_RANGE_MAX: u64 = 1_000_000;

/// The OpenAPI description of these routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(verify, latest_checkpoint, new_checkpoint, proof))]
pub(crate) struct Api;

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/audit/verify", post(verify))
        .route(
            "/v1/audit/checkpoint",
            get(latest_checkpoint).post(new_checkpoint),
        )
        .route("/v1/audit/entries/{index}/proof", get(proof))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct VerifyRequest {
    /// First log index (default 0).
    #[serde(default)]
    start: u64,
    /// One past the last index (default: the end of the log).
    end: Option<u64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct VerifyResponse {
    intact: bool,
    start: u64,
    end: u64,
    /// Committed entries not yet in the log (the sequencer's backlog).
    pending: u64,
    #[schema(value_type = Object)]
    report: audit_chain::VerifyReport,
}

/// Verifies hashes, MACs, links and sequence numbers of `[start, end)`. A range from 0 to
/// the end of the log is also checked against the latest checkpoint (its size and Merkle
/// root), which catches truncation. Any replica answers from the log itself.
#[utoipa::path(
    post,
    operation_id = "verify_audit_log",
    path = "/v1/audit/verify",
    tag = "audit",
    summary = "Verify hashes, MACs and links of a range (admin)",
    request_body = VerifyRequest,
    responses((status = 200, description = "The report", body = VerifyResponse))
)]
async fn verify(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<VerifyRequest>,
) -> Result<Json<VerifyResponse>, ApiError> {
    state.auth.admin(&headers)?;
    let audit = &state.audit;
    let size = audit.sink.size().await?;
    let end = body.end.unwrap_or(size);
    if body.start > end || end > size {
        return Err(ApiError::bad_request(
            "invalid_range",
            format!("need start <= end <= {size} (the log size)"),
        ));
    }
    if end - body.start > VERIFY_RANGE_MAX {
        return Err(ApiError::bad_request(
            "range_too_large",
            format!("verify at most {VERIFY_RANGE_MAX} entries per request"),
        ));
    }
    let report = match audit.latest_checkpoint().await? {
        Some(cp) if body.start == 0 && cp.size == end => verify_sink_prefix(&state, &cp).await?,
        _ => verify_range(audit.sink.as_ref(), &audit.keyring, body.start..end).await?,
    };
    if !report.is_intact() {
        tracing::error!(failure = ?report.failure, "audit verification failed");
    }
    let pending = audit.queue.backlog().await?;
    Ok(Json(VerifyResponse {
        intact: report.is_intact(),
        start: body.start,
        end,
        pending,
        report,
    }))
}

async fn verify_sink_prefix(
    state: &AppState,
    checkpoint: &Checkpoint,
) -> Result<audit_chain::VerifyReport, ApiError> {
    // The whole log against the checkpoint; entries written after it would count as a
    // mismatch, so only call this when the checkpoint covers the whole range asked for.
    Ok(verify_sink(
        state.audit.sink.as_ref(),
        &state.audit.keyring,
        Some(checkpoint),
    )
    .await?)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct CheckpointDto {
    origin: String,
    size: u64,
    root: String,
    /// The C2SP checkpoint body (`origin\nsize\nbase64(root)\n`).
    body: String,
}

fn checkpoint_dto(cp: &Checkpoint) -> CheckpointDto {
    CheckpointDto {
        origin: cp.origin.clone(),
        size: cp.size,
        root: hex(&cp.root),
        body: cp.to_body(),
    }
}

/// The latest checkpoint (made every N entries, every interval and on `POST`), or a fresh
/// one when none was made yet.
#[utoipa::path(
    get,
    operation_id = "inclusion_proof",
    path = "/v1/audit/checkpoint",
    tag = "audit",
    summary = "The latest checkpoint (admin)",
    responses((status = 200, description = "The checkpoint", body = CheckpointDto))
)]
async fn latest_checkpoint(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<CheckpointDto>, ApiError> {
    state.auth.admin(&headers)?;
    let cp = match state.audit.latest_checkpoint().await? {
        Some(cp) => cp,
        None => checkpoint_now(&state).await?,
    };
    Ok(Json(checkpoint_dto(&cp)))
}

/// A checkpoint covering every change committed before the request.
#[utoipa::path(
    post,
    path = "/v1/audit/checkpoint",
    tag = "audit",
    summary = "A checkpoint covering every change committed before the request (admin)",
    responses((status = 200, description = "The checkpoint", body = CheckpointDto))
)]
async fn new_checkpoint(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<CheckpointDto>, ApiError> {
    state.auth.admin(&headers)?;
    Ok(Json(checkpoint_dto(&checkpoint_now(&state).await?)))
}

/// How long a replica that does not lead the log waits for the leader's checkpoint.
const CHECKPOINT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The leader integrates what is queued and checkpoints. Another replica (PostgreSQL) waits
/// until the leader stored a checkpoint covering every entry committed before the call.
async fn checkpoint_now(state: &AppState) -> Result<Checkpoint, ApiError> {
    let audit = &state.audit;
    if let Some(writer) = audit.writer() {
        return Ok(writer.flush().await?);
    }
    let target = audit.sink.size().await? + audit.queue.backlog().await?;
    // Waiting for another replica to integrate: polling is the only signal it gives.
    #[allow(clippy::disallowed_methods)]
    let covered = tokio::time::timeout(CHECKPOINT_WAIT, async {
        loop {
            if let Some(cp) = audit.latest_checkpoint().await?
                && cp.size >= target
            {
                return Ok::<_, ApiError>(cp);
            }
            if let Some(writer) = audit.writer() {
                // This replica became the leader meanwhile.
                return Ok(writer.flush().await?);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    covered.unwrap_or_else(|_| {
        Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "audit_not_integrated",
            format!(
                "no checkpoint covers the {target} entries committed so far yet (the replica \
                 leading the audit log is behind or being replaced)"
            ),
        )
        .retry_after(Some(std::time::Duration::from_secs(1))))
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ProofQuery {
    /// The tree size the proof is for (default: the log's size).
    /// Tree size to prove against (default: the current durable size).
    size: Option<u64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ProofDto {
    index: u64,
    size: u64,
    stream: String,
    seq: u64,
    leaf_hash: String,
    root: String,
    proof: Vec<String>,
}

/// The RFC 9162 inclusion proof of entry `index` in the tree of `size` entries, with the
/// leaf hash and the root it leads to. Verify it with `audit_chain::merkle::verify_inclusion`.
#[utoipa::path(
    get,
    path = "/v1/audit/entries/{index}/proof",
    tag = "audit",
    summary = "RFC 9162 inclusion proof of an entry (admin)",
    params(("index" = String, Path, description = "The entry index (a whole number).", pattern = "^[0-9]{1,19}$", example = "0"), ProofQuery),
    responses((status = 200, description = "The proof", body = ProofDto))
)]
async fn proof(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiPath(index): ApiPath<String>,
    ApiQuery(q): ApiQuery<ProofQuery>,
) -> Result<Json<ProofDto>, ApiError> {
    state.auth.admin(&headers)?;
    let index: u64 = index
        .parse()
        .map_err(|_| ApiError::bad_request("invalid_index", "an entry index is a whole number"))?;
    let log_size = state.audit.sink.size().await?;
    let size = q.size.unwrap_or(log_size);
    if index >= size || size > log_size {
        return Err(ApiError::not_found(
            "unknown_entry",
            format!("entry {index} is not in a tree of {size} entries (the log has {log_size})"),
        ));
    }
    let (proof, root): (Vec<Hash>, Hash) = {
        let mirror = state.audit.tree(size).await?;
        let tree = mirror
            .full_tree()
            .ok_or_else(|| ApiError::internal("the audit mirror keeps the whole tree"))?;
        (tree.inclusion_proof(index, size)?, tree.root_at(size)?)
    };
    let record = state
        .audit
        .sink
        .read(index, 1)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found("unknown_entry", format!("entry {index} not stored")))?;
    Ok(Json(ProofDto {
        index,
        size,
        stream: record.entry.stream().to_owned(),
        seq: record.entry.seq(),
        leaf_hash: hex(&record.entry.leaf_hash()),
        root: hex(&root),
        proof: proof.iter().map(|h| hex(h)).collect(),
    }))
}
