//! [`Config`]: every setting, read from environment variables and validated at start.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use credits_core::TenantId;
use zeroize::Zeroizing;

use crate::error::ServiceError;

/// The shortest bearer token accepted, in bytes. Shorter secrets are guessable.
pub const TOKEN_LEN_MIN: usize = 16;
/// The longest bearer token accepted, in bytes.
pub const TOKEN_LEN_MAX: usize = 256;
/// The largest request body the service can be configured to accept (1 MiB).
pub const BODY_LIMIT_MAX: usize = 1 << 20;

/// Every environment variable the service reads, with its meaning. Any other variable whose
/// name starts with `CREDITS_` is refused at start, so a misspelt setting is never silently
/// ignored.
pub const VARIABLES: &[(&str, &str)] = &[
    (
        "CREDITS_LISTEN_ADDR",
        "address to listen on (default 127.0.0.1:8080)",
    ),
    (
        "CREDITS_ADMIN_TOKEN",
        "bearer token of the operator (admin) endpoints",
    ),
    (
        "CREDITS_TENANT_TOKENS",
        "comma-separated tenant=token pairs binding bearer tokens to tenants",
    ),
    (
        "CREDITS_BODY_LIMIT_BYTES",
        "largest request body (default 16384)",
    ),
    (
        "CREDITS_REQUEST_TIMEOUT_MS",
        "per-request time limit (default 5000)",
    ),
    (
        "CREDITS_SHUTDOWN_GRACE_MS",
        "how long in-flight requests may finish at shutdown (default 25000)",
    ),
    (
        "CREDITS_HEADER_READ_TIMEOUT_MS",
        "how long a client may take to send a request's headers (default 10000)",
    ),
    (
        "CREDITS_IDLE_TIMEOUT_MS",
        "how long a keep-alive connection may wait for its next request (default 60000)",
    ),
    (
        "CREDITS_CONNECTIONS_MAX",
        "most connections served at once; more wait to be accepted (default 1024)",
    ),
    (
        "CREDITS_EXPERIMENTS_PER_TENANT_MAX",
        "most experiments one tenant keeps at once (default 100)",
    ),
    (
        "CREDITS_RATE_LIMIT_PER_SECOND",
        "requests per second per tenant (default 1000)",
    ),
    (
        "CREDITS_RATE_LIMIT_BURST",
        "burst per tenant (default: the per-second rate)",
    ),
    (
        "CREDITS_RATE_LIMIT_TENANTS_MAX",
        "most tenants tracked by the limiter (default 100000)",
    ),
    (
        "CREDITS_REDIS_URL",
        "redis://host:port: share each tenant's rate limit across replicas through Redis; unset: per replica",
    ),
    (
        "CREDITS_REDIS_KEY_PREFIX",
        "prefix of the limiter's Redis keys (default credits:rl:)",
    ),
    (
        "CREDITS_REDIS_TIMEOUT_MS",
        "how long a limit decision waits for Redis before the local limiter decides (default 50)",
    ),
    (
        "CREDITS_AUTH_FAILURES_MAX",
        "failed authentications a client address may make per window before 429 (default 20)",
    ),
    (
        "CREDITS_AUTH_FAILURE_WINDOW_MS",
        "the window of CREDITS_AUTH_FAILURES_MAX (default 60000)",
    ),
    (
        "CREDITS_BREAKER_FAILURE_RATE_PERCENT",
        "store failure rate that opens the breaker (default 50)",
    ),
    (
        "CREDITS_BREAKER_WINDOW_CALLS",
        "calls in the breaker's sliding window (default 100)",
    ),
    (
        "CREDITS_BREAKER_MINIMUM_CALLS",
        "calls before the breaker judges (default 20)",
    ),
    (
        "CREDITS_BREAKER_OPEN_WAIT_MS",
        "how long the breaker stays open (default 30000)",
    ),
    (
        "CREDITS_BREAKER_HALF_OPEN_CALLS",
        "trial calls in half-open (default 5)",
    ),
    (
        "CREDITS_SWEEP_INTERVAL_MS",
        "how often due hold and lot expiries are applied (default 1000)",
    ),
    (
        "CREDITS_AUDIT_HMAC_KEY",
        "hex HMAC key (32 to 64 bytes) sealing the audit chain",
    ),
    (
        "CREDITS_AUDIT_ORIGIN",
        "the audit log's origin line (default credits-service/audit)",
    ),
    (
        "CREDITS_AUDIT_DIR",
        "in-memory backend: keep the audit log in this directory (a file sink); unset: in memory",
    ),
    (
        "CREDITS_AUDIT_BACKLOG_MAX",
        "committed audit entries waiting for the log past which changes are refused (default 100000)",
    ),
    (
        "CREDITS_MIGRATE",
        "run database migrations at start: true or false (default false)",
    ),
    ("CREDITS_LOG_FORMAT", "json or text (default json)"),
    (
        "CREDITS_FAULT_ERROR_PERCENT",
        "TEST ONLY: answer this percentage (0 to 100) of API requests with 500 fault_injected (default 0, off)",
    ),
    (
        "CREDITS_FAULT_LATENCY_MS",
        "TEST ONLY: delay every API request by this many milliseconds, at most 10000 (default 0, off)",
    ),
    (
        "DATABASE_URL",
        "PostgreSQL URL; unset: the in-memory backend",
    ),
];

/// A secret string: redacted in `Debug`, wiped from memory when dropped.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret.
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Zeroizing::new(value.into()))
    }

    /// The secret (never log it).
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (for log collectors).
    Json,
    /// Human-readable lines.
    Text,
}

/// The circuit breaker around the ledger store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Failure rate (percent) of store calls that opens the breaker.
    pub failure_rate_percent: u8,
    /// Store calls in the sliding window.
    pub window_calls: u32,
    /// Calls needed in the window before the rate is judged.
    pub minimum_calls: u32,
    /// How long the breaker stays open before trial calls.
    pub open_wait: Duration,
    /// Trial calls in half-open.
    pub half_open_calls: u32,
}

/// The per-tenant rate limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Sustained requests per second per tenant.
    pub per_second: u32,
    /// Requests a tenant may make at once after being idle.
    pub burst: u32,
    /// Most tenants whose buckets are tracked at once.
    pub tenants_max: usize,
}

/// Where the per-tenant rate limit is kept.
#[derive(Clone, Debug)]
pub struct RedisSettings {
    /// The Redis URL (`redis://host:port/db`; it may carry a password).
    pub url: Secret,
    /// Prefix of every limiter key (the tenant id follows).
    pub key_prefix: String,
    /// How long a decision waits for Redis before the local limiter decides.
    pub timeout: Duration,
}

/// Throttling of failed authentication per client address: after `failures_max` failures
/// within `window`, a client address's further failures answer 429 with `Retry-After`
/// instead of 401. Requests with a valid token are never throttled by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthThrottleSettings {
    /// Failures allowed per window (and at once).
    pub failures_max: u32,
    /// The window: one more failure is allowed every `window / failures_max`.
    pub window: Duration,
}

/// The service's configuration. Build it from the environment with [`Config::from_env`], or
/// from any list of variables with [`Config::from_vars`] (tests); start from
/// [`Config::default`] to set fields in code.
///
/// ```
/// use credits_service::Config;
///
/// let config = Config::from_vars([
///     ("CREDITS_ADMIN_TOKEN", "admin-secret-0123456789"),
///     ("CREDITS_TENANT_TOKENS", "acme=acme-secret-0123456789"),
///     ("CREDITS_RATE_LIMIT_PER_SECOND", "50"),
/// ])?;
/// assert_eq!(config.rate_limit.per_second, 50);
/// assert_eq!(config.tenant_tokens.len(), 1);
///
/// let err = Config::from_vars([("CREDITS_BODY_LIMIT_BYTES", "lots")]).unwrap_err();
/// assert!(err.to_string().contains("CREDITS_BODY_LIMIT_BYTES"));
/// let err = Config::from_vars([("CREDITS_RATE_LIMT", "5")]).unwrap_err(); // misspelt
/// assert!(err.to_string().contains("unknown setting"));
/// # Ok::<(), credits_service::ServiceError>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Where to listen.
    pub listen_addr: SocketAddr,
    /// The operator token (`None`: operator endpoints refuse everyone).
    pub admin_token: Option<Secret>,
    /// Bearer tokens bound to tenants.
    pub tenant_tokens: BTreeMap<TenantId, Secret>,
    /// Largest request body in bytes.
    pub body_limit_bytes: usize,
    /// Per-request time limit.
    pub request_timeout: Duration,
    /// How long in-flight requests may finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// How long a client may take to send a request's headers: from the connection's
    /// acceptance for its first request, from the first byte for later ones. The connection
    /// is closed beyond it.
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may wait, with no request in flight, for the first
    /// byte of its next request before it is closed.
    pub idle_timeout: Duration,
    /// Most connections served at once. Further connections wait in the listen backlog
    /// until one closes.
    pub connections_max: usize,
    /// Most experiments one tenant keeps at once (deleting one frees its place).
    pub experiments_per_tenant_max: usize,
    /// Per-tenant rate limit.
    pub rate_limit: RateLimitSettings,
    /// Redis for the per-tenant rate limit, shared across replicas (`None`: per replica).
    pub redis: Option<RedisSettings>,
    /// Throttling of failed authentication per client address.
    pub auth_throttle: AuthThrottleSettings,
    /// Breaker around the store.
    pub breaker: BreakerSettings,
    /// Interval of the expiry sweeper.
    pub sweep_interval: Duration,
    /// HMAC key sealing the audit chain (`None`: a random key per process).
    pub audit_hmac_key: Option<Secret>,
    /// The audit log's origin line.
    pub audit_origin: String,
    /// In-memory backend: the directory of a file-sink audit log (`None`: in memory).
    pub audit_dir: Option<std::path::PathBuf>,
    /// Committed audit entries waiting for the log past which changes are refused.
    pub audit_backlog_max: usize,
    /// PostgreSQL URL (`None`: in memory).
    pub database_url: Option<Secret>,
    /// Run migrations at start.
    pub migrate: bool,
    /// Schema of the ledger tables (`None`: the database's default `search_path`).
    pub database_schema: Option<String>,
    /// Most database connections.
    pub database_pool_max: usize,
    /// Group-commit workers for single mutations on PostgreSQL (0: off).
    pub database_group_commit_workers: usize,
    /// Log format.
    pub log_format: LogFormat,
    /// Fault injection, **for tests only** (off by default).
    pub faults: FaultSettings,
}

/// Fault injection **for tests only**: makes an instance (a deliberately broken canary in an
/// end-to-end rollout test) answer some API requests with 500 or answer them later. Both
/// are off by default; never set them in production. `/health`, `/ready`, `/metrics` and the
/// other operations endpoints are never affected, so the instance stays scrapeable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultSettings {
    /// Percentage (0 to 100) of API requests answered with 500 `fault_injected` instead of
    /// being handled (`CREDITS_FAULT_ERROR_PERCENT`).
    pub error_percent: u8,
    /// Delay added before every API request is handled (`CREDITS_FAULT_LATENCY_MS`, at
    /// most 10 s).
    pub latency: Duration,
}

impl FaultSettings {
    /// Whether any fault is configured.
    #[must_use]
    pub fn is_active(&self) -> bool {
        self.error_percent > 0 || !self.latency.is_zero()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_token: None,
            tenant_tokens: BTreeMap::new(),
            body_limit_bytes: 16 * 1024,
            request_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(25),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            connections_max: 1_024,
            experiments_per_tenant_max: 100,
            rate_limit: RateLimitSettings {
                per_second: 1_000,
                burst: 1_000,
                tenants_max: 100_000,
            },
            redis: None,
            auth_throttle: AuthThrottleSettings {
                failures_max: 20,
                window: Duration::from_secs(60),
            },
            breaker: BreakerSettings {
                failure_rate_percent: 50,
                window_calls: 100,
                minimum_calls: 20,
                open_wait: Duration::from_secs(30),
                half_open_calls: 5,
            },
            sweep_interval: Duration::from_secs(1),
            audit_hmac_key: None,
            audit_origin: "credits-service/audit".to_owned(),
            audit_dir: None,
            audit_backlog_max: 100_000,
            database_url: None,
            migrate: false,
            database_schema: None,
            database_pool_max: 32,
            database_group_commit_workers: 4,
            log_format: LogFormat::Json,
            faults: FaultSettings::default(),
        }
    }
}

fn bad(var: &str, reason: impl Into<String>) -> ServiceError {
    ServiceError::Config {
        var: var.to_owned(),
        reason: reason.into(),
    }
}

fn parse_num<T>(var: &str, value: &str, min: T, max: T) -> Result<T, ServiceError>
where
    T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
{
    let n: T = value
        .trim()
        .parse()
        .map_err(|_| bad(var, format!("{value:?} is not a whole number")))?;
    if n < min || n > max {
        return Err(bad(var, format!("{n} is outside {min}..={max}")));
    }
    Ok(n)
}

fn parse_ms(var: &str, value: &str, min_ms: u64, max_ms: u64) -> Result<Duration, ServiceError> {
    parse_num(var, value, min_ms, max_ms).map(Duration::from_millis)
}

fn check_token(var: &str, token: &str) -> Result<(), ServiceError> {
    if !(TOKEN_LEN_MIN..=TOKEN_LEN_MAX).contains(&token.len()) {
        return Err(bad(
            var,
            format!("a token must be {TOKEN_LEN_MIN} to {TOKEN_LEN_MAX} bytes"),
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
        return Err(bad(
            var,
            "a token must be printable ASCII without spaces or commas",
        ));
    }
    Ok(())
}

impl Config {
    /// Reads the configuration from the process environment (see [`VARIABLES`]).
    ///
    /// # Errors
    /// [`ServiceError::Config`] naming the first variable that is malformed, out of range,
    /// or unknown.
    pub fn from_env() -> Result<Self, ServiceError> {
        Self::from_vars(
            std::env::vars().filter(|(k, _)| k.starts_with("CREDITS_") || k == "DATABASE_URL"),
        )
    }

    /// Reads the configuration from `vars` (name, value) pairs; unset variables keep their
    /// defaults.
    ///
    /// # Errors
    /// As [`Config::from_env`].
    pub fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Result<Self, ServiceError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut c = Config::default();
        let mut burst: Option<u32> = None;
        let mut redis_url: Option<Secret> = None;
        let mut redis_key_prefix = "credits:rl:".to_owned();
        let mut redis_timeout = Duration::from_millis(50);
        let mut seen = HashSet::new();
        for (k, v) in vars {
            let (k, v) = (k.as_ref(), v.as_ref());
            if !seen.insert(k.to_owned()) {
                return Err(bad(k, "set twice"));
            }
            match k {
                "CREDITS_LISTEN_ADDR" => {
                    c.listen_addr = v.trim().parse().map_err(|_| {
                        bad(k, format!("{v:?} is not an address such as 0.0.0.0:8080"))
                    })?;
                }
                "CREDITS_ADMIN_TOKEN" => {
                    check_token(k, v)?;
                    c.admin_token = Some(Secret::new(v));
                }
                "CREDITS_TENANT_TOKENS" => c.tenant_tokens = parse_tenant_tokens(k, v)?,
                "CREDITS_BODY_LIMIT_BYTES" => {
                    c.body_limit_bytes = parse_num(k, v, 64, BODY_LIMIT_MAX)?;
                }
                "CREDITS_REQUEST_TIMEOUT_MS" => c.request_timeout = parse_ms(k, v, 1, 120_000)?,
                "CREDITS_SHUTDOWN_GRACE_MS" => c.shutdown_grace = parse_ms(k, v, 0, 600_000)?,
                "CREDITS_HEADER_READ_TIMEOUT_MS" => {
                    c.header_read_timeout = parse_ms(k, v, 10, 600_000)?;
                }
                "CREDITS_IDLE_TIMEOUT_MS" => c.idle_timeout = parse_ms(k, v, 10, 3_600_000)?,
                "CREDITS_CONNECTIONS_MAX" => c.connections_max = parse_num(k, v, 1, 1_000_000)?,
                "CREDITS_EXPERIMENTS_PER_TENANT_MAX" => {
                    c.experiments_per_tenant_max = parse_num(k, v, 1, 100_000)?;
                }
                "CREDITS_RATE_LIMIT_PER_SECOND" => {
                    c.rate_limit.per_second = parse_num(k, v, 1, 10_000_000)?;
                }
                "CREDITS_RATE_LIMIT_BURST" => burst = Some(parse_num(k, v, 1, 10_000_000)?),
                "CREDITS_RATE_LIMIT_TENANTS_MAX" => {
                    c.rate_limit.tenants_max = parse_num(k, v, 1, 100_000_000)?;
                }
                "CREDITS_REDIS_URL" => {
                    let v = v.trim();
                    if !v.starts_with("redis://") {
                        return Err(bad(k, "must start with redis://"));
                    }
                    redis_url = Some(Secret::new(v));
                }
                "CREDITS_REDIS_KEY_PREFIX" => {
                    if v.is_empty() || v.len() > 64 || !v.bytes().all(|b| b.is_ascii_graphic()) {
                        return Err(bad(k, "must be 1 to 64 printable ASCII bytes"));
                    }
                    v.clone_into(&mut redis_key_prefix);
                }
                "CREDITS_REDIS_TIMEOUT_MS" => redis_timeout = parse_ms(k, v, 1, 10_000)?,
                "CREDITS_AUTH_FAILURES_MAX" => {
                    c.auth_throttle.failures_max = parse_num(k, v, 1, 1_000_000)?;
                }
                "CREDITS_AUTH_FAILURE_WINDOW_MS" => {
                    c.auth_throttle.window = parse_ms(k, v, 1_000, 86_400_000)?;
                }
                "CREDITS_BREAKER_FAILURE_RATE_PERCENT" => {
                    c.breaker.failure_rate_percent = parse_num(k, v, 1, 100)?;
                }
                "CREDITS_BREAKER_WINDOW_CALLS" => {
                    c.breaker.window_calls = parse_num(k, v, 1, 32_768)?;
                }
                "CREDITS_BREAKER_MINIMUM_CALLS" => {
                    c.breaker.minimum_calls = parse_num(k, v, 1, 32_768)?;
                }
                "CREDITS_BREAKER_OPEN_WAIT_MS" => {
                    c.breaker.open_wait = parse_ms(k, v, 1, 3_600_000)?;
                }
                "CREDITS_BREAKER_HALF_OPEN_CALLS" => {
                    c.breaker.half_open_calls = parse_num(k, v, 1, 4_095)?;
                }
                "CREDITS_SWEEP_INTERVAL_MS" => c.sweep_interval = parse_ms(k, v, 10, 3_600_000)?,
                "CREDITS_AUDIT_HMAC_KEY" => {
                    let key = Secret::new(v.trim());
                    if decode_hex(key.expose()).is_none_or(|b| !(32..=64).contains(&b.len())) {
                        return Err(bad(k, "must be 64 to 128 hex digits (32 to 64 bytes)"));
                    }
                    c.audit_hmac_key = Some(key);
                }
                "CREDITS_AUDIT_ORIGIN" => {
                    if v.is_empty() || v.contains('\n') || v.len() > 200 {
                        return Err(bad(k, "must be one line of 1 to 200 bytes"));
                    }
                    c.audit_origin = v.to_owned();
                }
                "CREDITS_AUDIT_DIR" => {
                    if v.trim().is_empty() {
                        return Err(bad(k, "must name a directory"));
                    }
                    c.audit_dir = Some(std::path::PathBuf::from(v.trim()));
                }
                "CREDITS_AUDIT_BACKLOG_MAX" => {
                    c.audit_backlog_max = parse_num(k, v, 1, 100_000_000)?;
                }
                "DATABASE_URL" => {
                    if !(v.starts_with("postgres://") || v.starts_with("postgresql://")) {
                        return Err(bad(k, "must start with postgres:// or postgresql://"));
                    }
                    c.database_url = Some(Secret::new(v));
                }
                "CREDITS_MIGRATE" => {
                    c.migrate = match v.trim() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(bad(k, "must be true or false")),
                    };
                }
                "CREDITS_DATABASE_SCHEMA" => {
                    let ok = v.len() <= 63
                        && v.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                        && v.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                    if !ok {
                        return Err(bad(
                            k,
                            "must be 1 to 63 of a-z, 0-9 and _, not starting with a digit",
                        ));
                    }
                    c.database_schema = Some(v.to_owned());
                }
                "CREDITS_DATABASE_POOL_MAX" => c.database_pool_max = parse_num(k, v, 1, 1_000)?,
                "CREDITS_DATABASE_GROUP_COMMIT_WORKERS" => {
                    c.database_group_commit_workers = parse_num(k, v, 0, 1_000)?;
                }
                "CREDITS_FAULT_ERROR_PERCENT" => {
                    c.faults.error_percent = parse_num(k, v, 0, 100)?;
                }
                "CREDITS_FAULT_LATENCY_MS" => c.faults.latency = parse_ms(k, v, 0, 10_000)?,
                "CREDITS_LOG_FORMAT" => {
                    c.log_format = match v.trim() {
                        "json" => LogFormat::Json,
                        "text" => LogFormat::Text,
                        _ => return Err(bad(k, "must be json or text")),
                    };
                }
                other => {
                    return Err(bad(
                        other,
                        "unknown setting (see the list in docs/credits-service.md)",
                    ));
                }
            }
        }
        c.rate_limit.burst = burst.unwrap_or(c.rate_limit.per_second);
        c.redis = redis_url.map(|url| RedisSettings {
            url,
            key_prefix: redis_key_prefix,
            timeout: redis_timeout,
        });
        if c.breaker.minimum_calls > c.breaker.window_calls {
            return Err(bad(
                "CREDITS_BREAKER_MINIMUM_CALLS",
                "must not exceed CREDITS_BREAKER_WINDOW_CALLS",
            ));
        }
        if c.database_url.is_some() && c.audit_dir.is_some() {
            return Err(bad(
                "CREDITS_AUDIT_DIR",
                "with DATABASE_URL the audit log lives in PostgreSQL; unset CREDITS_AUDIT_DIR",
            ));
        }
        if c.audit_hmac_key.is_none() {
            // A kept log sealed with a random key could never be verified after a restart.
            if c.database_url.is_some() {
                return Err(bad(
                    "CREDITS_AUDIT_HMAC_KEY",
                    "is required with DATABASE_URL (the audit log is kept in the database)",
                ));
            }
            if c.audit_dir.is_some() {
                return Err(bad(
                    "CREDITS_AUDIT_HMAC_KEY",
                    "is required with CREDITS_AUDIT_DIR (the audit log is kept on disk)",
                ));
            }
        }
        if let Some(admin) = &c.admin_token
            && c.tenant_tokens
                .values()
                .any(|t| t.expose() == admin.expose())
        {
            return Err(bad(
                "CREDITS_TENANT_TOKENS",
                "a tenant token must differ from the admin token",
            ));
        }
        Ok(c)
    }
}

fn parse_tenant_tokens(var: &str, value: &str) -> Result<BTreeMap<TenantId, Secret>, ServiceError> {
    let mut out = BTreeMap::new();
    let mut tokens = HashSet::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (tenant, token) = pair
            .split_once('=')
            .ok_or_else(|| bad(var, "each entry must be tenant=token"))?;
        let tenant = TenantId::new(tenant.trim()).map_err(|e| bad(var, e.to_string()))?;
        let token = token.trim();
        check_token(var, token)?;
        if !tokens.insert(token) {
            return Err(bad(var, "two tenants share one token"));
        }
        if out.insert(tenant.clone(), Secret::new(token)).is_some() {
            return Err(bad(var, format!("tenant {tenant} is listed twice")));
        }
    }
    Ok(out)
}

/// Decodes lower- or upper-case hex; `None` if malformed.
pub(crate) fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(vars: &[(&str, &str)], expect_err: Option<&str>) {
        match (Config::from_vars(vars.iter().copied()), expect_err) {
            (Ok(_), None) => {}
            (Err(e), Some(want)) => {
                assert!(e.to_string().contains(want), "{e} does not contain {want}");
            }
            (Ok(_), Some(want)) => panic!("{vars:?} accepted, expected error {want}"),
            (Err(e), None) => panic!("{vars:?} refused: {e}"),
        }
    }

    #[test]
    fn every_bad_setting_names_its_variable() {
        let token = "tok-0123456789abcdef";
        check(&[], None);
        check(&[("CREDITS_ADMIN_TOKEN", token)], None);
        check(
            &[("CREDITS_ADMIN_TOKEN", "short")],
            Some("CREDITS_ADMIN_TOKEN"),
        );
        check(
            &[("CREDITS_ADMIN_TOKEN", "has space 0123456789")],
            Some("printable"),
        );
        check(&[("CREDITS_TENANT_TOKENS", "acme")], Some("tenant=token"));
        check(
            &[("CREDITS_TENANT_TOKENS", "bad tenant=tok-0123456789abcdef")],
            Some("invalid tenant"),
        );
        check(
            &[(
                "CREDITS_TENANT_TOKENS",
                "a=tok-0123456789abcdef,b=tok-0123456789abcdef",
            )],
            Some("share"),
        );
        check(
            &[(
                "CREDITS_TENANT_TOKENS",
                "a=tok-0123456789abcdef,a=tok-0123456789abcdeg",
            )],
            Some("twice"),
        );
        check(
            &[
                ("CREDITS_ADMIN_TOKEN", token),
                ("CREDITS_TENANT_TOKENS", &format!("a={token}")),
            ],
            Some("differ"),
        );
        check(
            &[("CREDITS_LISTEN_ADDR", "localhost")],
            Some("CREDITS_LISTEN_ADDR"),
        );
        check(&[("CREDITS_BODY_LIMIT_BYTES", "0")], Some("outside"));
        check(&[("CREDITS_BODY_LIMIT_BYTES", "-5")], Some("whole number"));
        check(&[("CREDITS_REQUEST_TIMEOUT_MS", "0")], Some("outside"));
        check(&[("CREDITS_RATE_LIMIT_PER_SECOND", "0")], Some("outside"));
        check(
            &[("CREDITS_REDIS_URL", "http://127.0.0.1:6379")],
            Some("redis://"),
        );
        check(&[("CREDITS_REDIS_URL", "redis://127.0.0.1:6379")], None);
        check(&[("CREDITS_REDIS_KEY_PREFIX", "")], Some("printable"));
        check(&[("CREDITS_REDIS_KEY_PREFIX", "a b")], Some("printable"));
        check(&[("CREDITS_REDIS_TIMEOUT_MS", "0")], Some("outside"));
        check(&[("CREDITS_AUTH_FAILURES_MAX", "0")], Some("outside"));
        check(&[("CREDITS_AUTH_FAILURE_WINDOW_MS", "10")], Some("outside"));
        check(
            &[("CREDITS_BREAKER_FAILURE_RATE_PERCENT", "101")],
            Some("outside"),
        );
        check(
            &[
                ("CREDITS_BREAKER_WINDOW_CALLS", "10"),
                ("CREDITS_BREAKER_MINIMUM_CALLS", "11"),
            ],
            Some("must not exceed"),
        );
        check(&[("CREDITS_AUDIT_HMAC_KEY", "abcd")], Some("hex"));
        check(&[("CREDITS_AUDIT_HMAC_KEY", &"zz".repeat(32))], Some("hex"));
        check(&[("CREDITS_AUDIT_HMAC_KEY", &"ab".repeat(32))], None);
        check(&[("DATABASE_URL", "mysql://x")], Some("postgres://"));
        let key = "ab".repeat(32);
        let db = ("DATABASE_URL", "postgres://u@h/db");
        check(&[db], Some("CREDITS_AUDIT_HMAC_KEY"));
        check(&[db, ("CREDITS_AUDIT_HMAC_KEY", &key)], None);
        check(
            &[("CREDITS_AUDIT_DIR", "/var/lib/audit")],
            Some("CREDITS_AUDIT_HMAC_KEY"),
        );
        check(
            &[
                ("CREDITS_AUDIT_DIR", "/var/lib/audit"),
                ("CREDITS_AUDIT_HMAC_KEY", &key),
            ],
            None,
        );
        check(
            &[
                db,
                ("CREDITS_AUDIT_HMAC_KEY", &key),
                ("CREDITS_AUDIT_DIR", "/x"),
            ],
            Some("lives in PostgreSQL"),
        );
        check(&[("CREDITS_AUDIT_DIR", " ")], Some("directory"));
        check(&[("CREDITS_AUDIT_BACKLOG_MAX", "0")], Some("outside"));
        check(&[("CREDITS_MIGRATE", "yes")], Some("true or false"));
        check(&[("CREDITS_DATABASE_SCHEMA", "ledger_2")], None);
        check(&[("CREDITS_DATABASE_SCHEMA", "Ledger")], Some("a-z"));
        check(&[("CREDITS_DATABASE_SCHEMA", "x; drop table")], Some("a-z"));
        check(&[("CREDITS_DATABASE_SCHEMA", "2x")], Some("a-z"));
        check(&[("CREDITS_DATABASE_POOL_MAX", "0")], Some("outside"));
        check(&[("CREDITS_LOG_FORMAT", "xml")], Some("json or text"));
        check(&[("CREDITS_FAULT_ERROR_PERCENT", "30")], None);
        check(&[("CREDITS_FAULT_ERROR_PERCENT", "101")], Some("outside"));
        check(&[("CREDITS_FAULT_LATENCY_MS", "250")], None);
        check(&[("CREDITS_FAULT_LATENCY_MS", "10001")], Some("outside"));
        check(&[("CREDITS_NOPE", "1")], Some("unknown setting"));
        check(
            &[("CREDITS_MIGRATE", "true"), ("CREDITS_MIGRATE", "true")],
            Some("twice"),
        );
    }

    #[test]
    fn burst_defaults_to_the_rate_and_secrets_never_print() {
        let c = Config::from_vars([
            ("CREDITS_RATE_LIMIT_PER_SECOND", "7"),
            ("CREDITS_ADMIN_TOKEN", "admin-0123456789abcdef"),
        ])
        .unwrap();
        assert_eq!(c.rate_limit.burst, 7);
        assert!(!format!("{c:?}").contains("admin-0123456789abcdef"));
        let c = Config::from_vars([
            ("CREDITS_REDIS_URL", "redis://127.0.0.1:6379"),
            ("CREDITS_REDIS_TIMEOUT_MS", "20"),
        ])
        .unwrap();
        let redis = c.redis.expect("redis settings");
        assert_eq!(redis.key_prefix, "credits:rl:");
        assert_eq!(redis.timeout, Duration::from_millis(20));
        assert!(
            Config::default().redis.is_none(),
            "per replica unless configured"
        );
        let c = Config::from_vars([("CREDITS_RATE_LIMIT_BURST", "3")]).unwrap();
        assert_eq!((c.rate_limit.per_second, c.rate_limit.burst), (1_000, 3));
        assert!(!c.faults.is_active(), "fault injection is off by default");
    }

    #[test]
    fn every_listed_variable_is_accepted_by_name() {
        // A variable in VARIABLES must never be refused as unknown.
        for (name, _) in VARIABLES {
            let err = Config::from_vars([(*name, "\u{1}")])
                .err()
                .map(|e| e.to_string());
            assert!(
                !err.unwrap_or_default().contains("unknown setting"),
                "{name} is listed but refused as unknown"
            );
        }
    }
}
