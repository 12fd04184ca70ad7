//! End to end with a real Prometheus (Debian's `prometheus` package): three `credits-service`
//! processes on loopback (a `stable` one, a healthy `canary` and a `canary-faulty` one with
//! `CREDITS_FAULT_ERROR_PERCENT`), scraped every second by a Prometheus started here on a
//! free loopback port with a temporary storage directory, each target labelled with its
//! `track`. Load runs against all three while the stable instance runs two rollouts judged
//! through its Prometheus provider: the faulty canary is rolled back, the healthy one is
//! promoted through 5 → 10 → 25 → 50 → 100 %, and both decisions are in the rollouts' audit
//! trails.
//!
//! With `DATABASE_URL` set, the stable instance (which holds the rollouts) keeps its ledger
//! and audit log in PostgreSQL, in a schema of its own dropped at the end, so the trails are
//! read back from the database's log; the canaries stay in memory.
//!
//! Without a `prometheus` binary on the `PATH` the test says it was skipped, unless
//! `REQUIRE_PROMETHEUS=1` (CI sets it), which makes a missing binary a failure. Every loop is
//! bounded in count and time; the whole test must finish within two minutes.

// Tests act as applications: they spawn processes and tasks and wait on timers.
#![allow(clippy::disallowed_methods, clippy::print_stderr)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::Req;
use serde_json::{Value, json};

const ADMIN: &str = "Bearer admin-secret-0123456789";
const ACME: &str = "Bearer acme-secret-0123456789";
const HMAC: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// The whole test's time limit (the issue's target for CI).
const TEST_LIMIT: Duration = Duration::from_secs(120);
/// Prometheus scrapes every second; checks run every 3 s (≥ 2 scrape intervals, so
/// `increase()` over a step's window always has two points).
const CHECK_INTERVAL_MS: u64 = 3_000;
/// The faulty canary's injected 500s.
const FAULT_ERROR_PERCENT: &str = "30";
/// Pause between two load requests to one instance (≈ 40 requests per second each).
const LOAD_PAUSE: Duration = Duration::from_millis(25);
/// Most load requests per instance.
const LOAD_REQUESTS_MAX: u64 = 8_000;

/// A child process killed when dropped (a failed assertion never leaks it).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `credits-service` process listening on loopback.
struct Service {
    _child: Killed,
    addr: SocketAddr,
}

impl Service {
    /// Starts the binary with `vars` (nothing inherited) and waits until it listens.
    fn start(vars: &[(&str, &str)]) -> Service {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_credits-service"));
        for (k, _) in std::env::vars() {
            if k.starts_with("CREDITS_") || k == "DATABASE_URL" || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.env("CREDITS_ADMIN_TOKEN", "admin-secret-0123456789")
            .env("CREDITS_TENANT_TOKENS", "acme=acme-secret-0123456789")
            .env("CREDITS_LISTEN_ADDR", "127.0.0.1:0")
            .env("CREDITS_LOG_FORMAT", "json")
            .env("CREDITS_AUDIT_HMAC_KEY", HMAC)
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = Killed(cmd.spawn().expect("start the binary"));
        let stdout = child.0.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        // Drain the output for the process's whole life (a full pipe would block it).
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(record) = serde_json::from_str::<Value>(&line)
                    && record["fields"]["message"] == "credits service listening"
                    && let Some(addr) = record["fields"]["addr"].as_str()
                {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the service listens within 30 s");
        Service {
            _child: child,
            addr: addr.parse().expect("an address"),
        }
    }
}

/// The `prometheus` binary on the `PATH`, if any.
fn prometheus_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("prometheus"))
        .find(|p| p.is_file())
}

/// A free loopback port (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Writes a scrape configuration for `targets` (address, track) into `dir`.
fn write_config(dir: &Path, targets: &[(SocketAddr, &str)]) -> PathBuf {
    let mut yaml = String::from(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: credits\n    static_configs:\n",
    );
    for (addr, track) in targets {
        yaml.push_str(&format!(
            "      - targets: ['{addr}']\n        labels:\n          track: '{track}'\n"
        ));
    }
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, yaml).expect("write the Prometheus configuration");
    path
}

/// Starts Prometheus on a free loopback port and waits until it is ready (a few attempts,
/// in case another process took the port in between).
async fn start_prometheus(binary: &Path, dir: &Path, config: &Path) -> (Killed, SocketAddr) {
    for attempt in 0..3 {
        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let data = dir.join(format!("data-{attempt}"));
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let mut child = Killed(child);
        for _ in 0..150 {
            if let Ok(Some(_)) = child.0.try_wait() {
                break; // exited: the port was taken, most likely
            }
            if let Some(r) = common::call_checked(addr, Req::get("/-/ready")).await
                && r.status == 200
            {
                return (child, addr);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("prometheus attempt {attempt} on {addr} did not become ready");
    }
    panic!("prometheus did not start");
}

/// An instant query's single value, if the result holds exactly one sample.
async fn prometheus_value(prometheus: SocketAddr, query: &str) -> Option<f64> {
    let mut encoded = String::new();
    for b in query.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    let r = common::call_checked(
        prometheus,
        Req::get(&format!("/api/v1/query?query={encoded}")),
    )
    .await?;
    let result = r.json["data"]["result"].as_array()?;
    match result.as_slice() {
        [one] => one["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
}

/// Sends requests to `addr` until `stop` or the request limit; returns how many answered.
async fn load(addr: SocketAddr, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed)
        && sent.load(Ordering::Relaxed) < LOAD_REQUESTS_MAX
        && started.elapsed() < TEST_LIMIT
    {
        let _ = common::call_checked(addr, Req::get("/v1/tenants/acme/balance").auth(ACME)).await;
        sent.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(LOAD_PAUSE).await;
    }
}

/// The rollout request: the default-shaped plan with shortened steps, judged on Prometheus.
fn rollout_body(id: &str, prometheus: SocketAddr, canary: &str) -> String {
    let steps: Vec<Value> = [5, 10, 25, 50, 100]
        .iter()
        .map(|w| json!({"weight_percent": w, "min_duration_ms": CHECK_INTERVAL_MS, "min_sample": 20}))
        .collect();
    json!({
        "id": id,
        "steps": steps,
        "check_interval_ms": CHECK_INTERVAL_MS,
        "error_rate_max": 0.05,
        // Load is not split by weight here: every instance gets the same.
        "srm_check": false,
        "provider": {
            "prometheus_url": format!("http://{prometheus}"),
            "timeout_ms": 2000,
            "canary": canary,
            "baseline": "stable",
            "requests": r#"sum(increase(http_requests_total{track="{{arm}}"}[{{window}}]))"#,
            // A healthy arm has no 5xx series at all: zero then, but only when the arm has
            // requests (no data stays no data).
            "errors": r#"sum(increase(http_requests_total{track="{{arm}}",status=~"5.."}[{{window}}])) or sum(increase(http_requests_total{track="{{arm}}"}[{{window}}])) * 0"#,
        },
    })
    .to_string()
}

/// Polls the rollout until it reaches a final phase (bounded by `limit`).
async fn wait_final(stable: SocketAddr, id: &str, limit: Duration) -> Value {
    let started = Instant::now();
    let mut last = Value::Null;
    while started.elapsed() < limit {
        let r = common::call(stable, Req::get(&format!("/v1/rollouts/{id}")).auth(ADMIN)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        last = r.json;
        if matches!(
            last["phase"].as_str(),
            Some("succeeded" | "rolled_back" | "aborted")
        ) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{id} not finished within {limit:?}: {last}");
}

/// The rollout's trail once it holds a transition to `phase` (the audit log integrates
/// entries shortly after they are written; bounded wait).
async fn trail_until(stable: SocketAddr, id: &str, phase: &str) -> Vec<Value> {
    let mut last = Value::Null;
    for _ in 0..50 {
        let r = common::call(
            stable,
            Req::get(&format!("/v1/rollouts/{id}/trail")).auth(ADMIN),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        last = r.json;
        let events = last["events"].as_array().cloned().unwrap_or_default();
        if events
            .iter()
            .any(|e| e["kind"] == "transition" && e["to"] == phase)
        {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{id}: no transition to {phase} in the trail: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_judged_on_prometheus_roll_back_a_faulty_canary_and_promote_a_healthy_one() {
    let started = Instant::now();
    let Some(binary) = prometheus_binary() else {
        if std::env::var("REQUIRE_PROMETHEUS").as_deref() == Ok("1") {
            panic!("REQUIRE_PROMETHEUS=1 but no prometheus binary on the PATH");
        }
        eprintln!("skipped: no prometheus binary on the PATH (apt-get install prometheus)");
        return;
    };
    let dir = TempDir(std::env::temp_dir().join(format!(
        "credits-prometheus-e2e-{}-{}",
        std::process::id(),
        started.elapsed().as_nanos()
    )));
    std::fs::create_dir_all(&dir.0).expect("a temporary directory");

    let database = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .map(|url| {
            let schema = format!(
                "svc_prometheus_{}_{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis()
            );
            (url, schema)
        });
    let stable = match &database {
        Some((url, schema)) => Service::start(&[
            ("DATABASE_URL", url.as_str()),
            ("CREDITS_DATABASE_SCHEMA", schema.as_str()),
            ("CREDITS_DATABASE_POOL_MAX", "4"),
            ("CREDITS_MIGRATE", "true"),
        ]),
        None => Service::start(&[]),
    };
    let canary = Service::start(&[]);
    let faulty = Service::start(&[("CREDITS_FAULT_ERROR_PERCENT", FAULT_ERROR_PERCENT)]);
    let config = write_config(
        &dir.0,
        &[
            (stable.addr, "stable"),
            (canary.addr, "canary"),
            (faulty.addr, "canary-faulty"),
        ],
    );
    let (_prometheus, prometheus) = start_prometheus(&binary, &dir.0, &config).await;

    // A tenant on each instance (the faulty one may refuse a few attempts), then load.
    for s in [&stable, &canary, &faulty] {
        let mut created = false;
        for _ in 0..20 {
            let r = common::call(
                s.addr,
                Req::post("/v1/tenants", r#"{"tenant":"acme"}"#).auth(ADMIN),
            )
            .await;
            if r.status == 201 || r.code() == "tenant_exists" {
                created = true;
                break;
            }
            assert_eq!(r.code(), "fault_injected", "{}", r.text);
        }
        assert!(created, "no tenant on {}", s.addr);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sent: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let mut loads = Vec::new();
    for (s, n) in [&stable, &canary, &faulty].into_iter().zip(&sent) {
        loads.push(tokio::spawn(load(s.addr, Arc::clone(&stop), Arc::clone(n))));
    }

    // Every track's requests are in Prometheus before the rollouts start.
    let ready = Instant::now();
    for track in ["stable", "canary", "canary-faulty"] {
        let query = format!(r#"sum(increase(http_requests_total{{track="{track}"}}[3s]))"#);
        loop {
            if prometheus_value(prometheus, &query)
                .await
                .is_some_and(|v| v > 0.0)
            {
                break;
            }
            assert!(
                ready.elapsed() < Duration::from_secs(30),
                "no {track} requests in Prometheus within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let faulty_errors = prometheus_value(
        prometheus,
        r#"sum(increase(http_requests_total{track="canary-faulty",status="500"}[5s]))"#,
    )
    .await;
    eprintln!(
        "Prometheus sees every track after {:?}; faulty 500s over 5 s: {faulty_errors:?}",
        ready.elapsed()
    );

    // Both rollouts at once, on the stable instance.
    for (id, track) in [("healthy", "canary"), ("faulty", "canary-faulty")] {
        let r = common::call(
            stable.addr,
            Req::post("/v1/rollouts", &rollout_body(id, prometheus, track)).auth(ADMIN),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(
            (
                r.json["metrics"].as_str(),
                r.json["weight_percent"].as_u64()
            ),
            (Some("prometheus"), Some(5)),
            "{}",
            r.text
        );
        // Observations come from Prometheus only.
        let pushed = common::call(
            stable.addr,
            Req::post(
                &format!("/v1/rollouts/{id}/observations"),
                r#"{"canary":{"requests":10,"errors":0}}"#,
            )
            .auth(ADMIN),
        )
        .await;
        assert_eq!((pushed.status, pushed.code()), (409, "provider_driven"));
    }
    let rollouts_started = Instant::now();
    let remaining = TEST_LIMIT.saturating_sub(started.elapsed());
    let faulty_end = wait_final(stable.addr, "faulty", remaining).await;
    let faulty_took = rollouts_started.elapsed();
    let remaining = TEST_LIMIT.saturating_sub(started.elapsed());
    let healthy_end = wait_final(stable.addr, "healthy", remaining).await;
    let healthy_took = rollouts_started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for l in loads {
        l.await.expect("load task");
    }
    eprintln!(
        "faulty: {} after {faulty_took:?}; healthy: {} after {healthy_took:?}; load sent {:?}",
        faulty_end["phase"],
        healthy_end["phase"],
        sent.iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect::<Vec<_>>()
    );
    assert_eq!(faulty_end["phase"], "rolled_back", "{faulty_end}");
    assert_eq!(faulty_end["weight_percent"], 0, "{faulty_end}");
    assert_eq!(healthy_end["phase"], "succeeded", "{healthy_end}");
    assert_eq!(healthy_end["weight_percent"], 100, "{healthy_end}");

    // The decisions are in the audit trails.
    let trail = trail_until(stable.addr, "faulty", "rolled_back").await;
    let unhealthy = trail
        .iter()
        .filter(|e| e["kind"] == "checked" && e["verdict"] == "unhealthy")
        .count();
    assert!(unhealthy >= 1, "no unhealthy check: {trail:?}");
    let rollback = trail
        .iter()
        .find(|e| e["kind"] == "transition" && e["to"] == "rolling_back")
        .expect("the rollback decision");
    assert_eq!(rollback["actor"], "system", "{rollback}");
    assert!(
        rollback["reason"]
            .as_str()
            .unwrap()
            .contains("failed checks"),
        "{rollback}"
    );

    let trail = trail_until(stable.addr, "healthy", "succeeded").await;
    // Started at 5 %, each healthy step moved it on; the last step (100 %) is the promotion.
    let weights: Vec<(&str, u64)> = trail
        .iter()
        .filter(|e| e["kind"] == "transition")
        .filter_map(|e| Some((e["to"].as_str()?, e["weight_percent"].as_u64()?)))
        .collect();
    assert_eq!(
        weights,
        [
            ("progressing", 5),
            ("progressing", 10),
            ("progressing", 25),
            ("progressing", 50),
            ("promoting", 100),
            ("succeeded", 100)
        ],
        "{trail:?}"
    );
    assert!(
        trail
            .iter()
            .filter(|e| e["kind"] == "checked")
            .all(|e| e["verdict"] != "unhealthy" && e["verdict"] != "critical"),
        "{trail:?}"
    );
    let healthy_checks = trail
        .iter()
        .filter(|e| e["kind"] == "checked" && e["verdict"] == "healthy")
        .count();
    assert!(healthy_checks >= 4, "{trail:?}");
    let elapsed = started.elapsed();
    eprintln!(
        "prometheus end-to-end test took {elapsed:?} (stable on {})",
        if database.is_some() {
            "PostgreSQL"
        } else {
            "memory"
        }
    );
    drop(stable);
    if let Some((url, schema)) = &database {
        use credits_postgres::tokio_postgres::{self, NoTls};
        let (admin, conn) = tokio_postgres::connect(url, NoTls)
            .await
            .expect("connect to drop the test schema");
        tokio::spawn(conn);
        admin
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .expect("drop the test schema");
    }
    assert!(elapsed < TEST_LIMIT, "took {elapsed:?}");
}
