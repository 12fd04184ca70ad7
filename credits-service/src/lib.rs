//! The credits service: an HTTP/JSON service built from the metered suite.
//!
//! ```
//! use credits_service::{Config, Secret, Service};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let mut config = Config::default();
//! config.listen_addr = "127.0.0.1:0".parse()?; // any free port
//! config.admin_token = Some(Secret::new("admin-token-0123456789"));
//! let running = Service::builder(config).build().await?.start().await?;
//! let addr = running.local_addr(); // e.g. curl http://{addr}/health
//! assert!(addr.port() > 0);
//! running.shutdown().await?; // finishes in-flight requests, closes the audit log
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # Overview
//!
//! * **Credits** ([`credits_core::Ledger`]): tenants, grants, consumption, holds (reserve →
//!   commit / cancel), refunds, balance and paged history. Every mutation needs an
//!   `Idempotency-Key` header, which becomes the ledger's idempotency key: a retry with the
//!   same key and body gets the same answer and changes nothing.
//! * **Audit** ([`audit_chain`]): every journal entry is sealed into its tenant's hash chain
//!   and appended to one Merkle log; operators verify ranges, read checkpoints and get
//!   inclusion proofs.
//! * **Experiments** ([`bayes_ab`]) and **rollouts** ([`canary`]), whose trails go to the
//!   same audit log. A rollout is judged on observations pushed to it, or, created with a
//!   `provider`, on Prometheus, which the service queries at each check.
//! * **Resilience** ([`resilience`]): a circuit breaker around the store, a per-tenant rate
//!   limiter (429 with `Retry-After`; shared by every replica through Redis when
//!   `CREDITS_REDIS_URL` is set, [`Config::redis`]), throttling of failed authentication per
//!   client address ([`Config::auth_throttle`]), request time limits and body size limits, and
//!   connection limits (a header-read timeout, an idle keep-alive timeout and a cap on
//!   concurrent connections: [`Config::header_read_timeout`], [`Config::idle_timeout`],
//!   [`Config::connections_max`]).
//! * **Operations**: `/health`, `/ready`, `/metrics` (Prometheus), `/circuit-breaker/stats`,
//!   `POST /circuit-breaker/reset`; structured `tracing` logs; graceful shutdown.
//!
//! Configuration comes from environment variables ([`Config::from_env`], listed in
//! [`VARIABLES`](config::VARIABLES)); a bad one stops the start with a message naming it.
//! Every error answer has the same JSON shape ([`ErrorBody`]): a stable `code`, a `message`
//! and `retryable`. The endpoints are listed in `docs/credits-service.md`.
//!
//! # What it does not do
//!
//! * The in-memory backend (the default) keeps everything in process memory, including the
//!   audit log: a restart starts empty. Set `DATABASE_URL` for the PostgreSQL ledger store.
//! * Experiments and rollouts are kept in process memory with either backend.
//! * No TLS: terminate it at the ingress or a sidecar.
//! * Breakers are per replica, and so are rate limits unless `CREDITS_REDIS_URL` is set (then
//!   only while Redis is unreachable: each replica's own limiter decides meanwhile). The
//!   failed-authentication throttle is always per replica.
//! * Route traffic: a rollout's weight is a decision for your router or mesh to follow.
//!
//! `CREDITS_FAULT_ERROR_PERCENT` and `CREDITS_FAULT_LATENCY_MS` ([`FaultSettings`]) are for
//! tests only: they make an instance fail or slow its API requests on purpose.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod auth;
pub mod config;
mod error;
mod json;
mod openapi;
mod registry;
mod routes;
mod server;
mod service;
mod state;

pub use config::{
    AuthThrottleSettings, BreakerSettings, Config, FaultSettings, LogFormat, RateLimitSettings,
    RedisSettings, Secret,
};
pub use error::{ApiError, ErrorBody, ErrorResponse, ServiceError};
pub use openapi::openapi_json;
pub use routes::credits::IDEMPOTENCY_KEY;
pub use service::{
    RunningService, Service, ServiceBuilder, init_tracing, metrics_handle, shutdown_signal,
};
