//! Real processes, killed with SIGKILL: two replicas of the binary on one PostgreSQL schema,
//! the one leading the audit log killed in the middle of a burst (the other takes over;
//! requests cut off by the kill are retried on it under the same idempotency key; every
//! acknowledged change ends up in the Merkle log with a verifying inclusion proof; the
//! killed replica restarts and serves; then conservation and the journal replayed to its
//! counters through the operator's routes (`GET /v1/conservation`,
//! `POST /v1/tenants/{t}/journal/verify`), every request in the journal exactly once and
//! the log verified against the last checkpoint); and an in-memory service whose audit log
//! is kept in a directory (`CREDITS_AUDIT_DIR`). Every loop is bounded in count and time.

// Tests act as applications: they spawn processes and tasks and wait on timers.
#![allow(clippy::disallowed_methods, clippy::print_stderr)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Req;
use credits_postgres::tokio_postgres::{self, NoTls};
use metered_clock::{Clock, SystemClock};

const ADMIN: &str = "Bearer admin-secret-0123456789";
const HMAC: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A running `credits-service` process and what it printed so far.
struct Proc {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

/// A test that fails part-way does not leave its processes running: the soak found two
/// replicas still listening half an hour after a failed run.
impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Proc {
    /// Starts the binary with `vars` (and nothing inherited) and waits until it listens.
    fn start(vars: &[(&str, &str)]) -> Proc {
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
        let mut child = cmd.spawn().expect("start the binary");
        let stdout = child.stdout.take().expect("stdout");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        // Drain the output for the process's whole life (a full pipe would block it).
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(record) = serde_json::from_str::<serde_json::Value>(&line)
                    && record["fields"]["message"] == "credits service listening"
                    && let Some(addr) = record["fields"]["addr"].as_str()
                {
                    let _ = tx.send(addr.to_owned());
                }
                sink.lock().unwrap().push_str(&line);
                sink.lock().unwrap().push('\n');
            }
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!("not listening within 30 s: {}", log.lock().unwrap());
        };
        Proc {
            child,
            addr: addr.parse().expect("address"),
            log,
        }
    }

    /// SIGKILL: no graceful shutdown, no final checkpoint, connections cut.
    fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    /// SIGTERM and wait (at most 20 s) for a clean exit.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "exit {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("no exit within 20 s of SIGTERM");
    }

    fn printed(&self, what: &str) -> bool {
        self.log.lock().unwrap().contains(what)
    }

    async fn call(&self, r: Req<'_>) -> common::Resp {
        common::call(self.addr, r).await
    }

    /// Asks for a checkpoint, again while the service answers a retryable 503 (a loaded
    /// machine can keep the sequencer's integration past the request timeout; at most 20
    /// tries, 250 ms apart).
    async fn checkpoint(&self) -> common::Resp {
        let ask = || self.call(Req::post("/v1/audit/checkpoint", "").auth(ADMIN));
        let mut r = ask().await;
        for _ in 0..20 {
            if r.status != 503 || r.json["error"]["retryable"] != true {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            r = ask().await;
        }
        r
    }
}

fn unhex(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex");
    }
    out
}

/// Checks the inclusion proof the service gives for `index` against `root` at `size`.
async fn assert_provable(p: &Proc, index: u64, size: u64, root: &[u8; 32]) {
    let r = p
        .call(Req::get(&format!("/v1/audit/entries/{index}/proof?size={size}")).auth(ADMIN))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(&unhex(r.json["root"].as_str().unwrap()), root, "{}", r.text);
    let leaf = unhex(r.json["leaf_hash"].as_str().unwrap());
    let proof: Vec<[u8; 32]> = r.json["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| unhex(h.as_str().unwrap()))
        .collect();
    audit_chain::merkle::verify_inclusion(&leaf, index, size, &proof, root).expect("inclusion");
}

/// Creates tenant `acme` through `p` and grants it `amount` under the key `key`.
async fn create_funded(p: &Proc, amount: u64, key: &str) {
    let r = p
        .call(Req::post("/v1/tenants", r#"{"tenant":"acme"}"#).auth(ADMIN))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = p
        .call(
            Req::post(
                "/v1/tenants/acme/grants",
                &format!(r#"{{"amount":{amount}}}"#),
            )
            .auth(ADMIN)
            .key(key),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

async fn consume(p: &Proc, key: &str) -> Option<u64> {
    let r = common::call_checked(
        p.addr,
        Req::post("/v1/tenants/acme/consume", r#"{"amount":1}"#)
            .auth("Bearer acme-secret-0123456789")
            .key(key),
    )
    .await?;
    (r.status == 200).then(|| r.json["entry"].as_u64().unwrap())
}

/// The killed replica's test: `acme`'s grant, and the requests of each phase (the burst
/// over both replicas, then on the survivor, then on the restarted replica).
const FUNDED: u64 = 1_000_000;
const BURST: u32 = 200;
/// The leader is killed once it answered this many of the burst's requests.
const KILL_AFTER: u32 = 5;
const AFTER: u32 = 60;
const RESTARTED: u32 = 20;

/// Attempts per request before [`consume_until_answered`] gives up (and the test fails).
const ATTEMPTS_MAX: u32 = 200;

/// Consumes 1 credit of `acme` under `key`, trying the replicas at `addrs` in turn (the
/// first first) until one answers 200: a connection cut or refused (a killed replica) or
/// an error the service marks `retryable` is sent again, to the next replica, under the
/// same key. Returns the entry number the answer reports. Panics on a definitive refusal
/// or after [`ATTEMPTS_MAX`] attempts (25 ms apart). Also returns how many attempts
/// failed.
async fn consume_until_answered(addrs: &[SocketAddr], key: &str) -> (u64, u32) {
    let mut last = None;
    for attempt in 0..ATTEMPTS_MAX {
        let addr = addrs[attempt as usize % addrs.len()];
        let r = common::call_checked(
            addr,
            Req::post("/v1/tenants/acme/consume", r#"{"amount":1}"#)
                .auth("Bearer acme-secret-0123456789")
                .key(key),
        )
        .await;
        match r {
            Some(r) if r.status == 200 => return (r.json["entry"].as_u64().unwrap(), attempt),
            Some(r) if r.json["error"]["retryable"] != true => {
                panic!("{key}: refused for good by {addr}: {} {}", r.status, r.text)
            }
            other => last = other.map(|r| r.text),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{key}: no answer after {ATTEMPTS_MAX} attempts (last: {last:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_audit_leader_is_replaced_and_every_acknowledged_change_is_provable() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        assert_ne!(
            std::env::var("REQUIRE_DATABASE").as_deref(),
            Ok("1"),
            "DATABASE_URL is not set but REQUIRE_DATABASE=1"
        );
        eprintln!("skipped: set DATABASE_URL to run it against PostgreSQL");
        return;
    };
    let schema = format!(
        "svc_replicas_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let db = [
        ("DATABASE_URL", url.as_str()),
        ("CREDITS_DATABASE_SCHEMA", schema.as_str()),
        ("CREDITS_DATABASE_POOL_MAX", "4"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut v = db.to_vec();
        v.extend_from_slice(extra);
        v
    };
    let a = Proc::start(&with(&[("CREDITS_MIGRATE", "true")]));
    let b = Proc::start(&db);
    assert!(
        a.printed("leading the audit log's sequencer"),
        "the first replica leads"
    );
    create_funded(&a, FUNDED, "seed").await;

    // A burst over both replicas; the leader is killed in the middle of it, once it has
    // answered a few of its requests (so that it is busy with others). A request the kill
    // cut off (or that found its replica gone) goes to the other one, same key.
    let (addr_a, addr_b) = (a.addr, b.addr);
    let answered_by_a = Arc::new(AtomicU32::new(0));
    let mut pending = Vec::new();
    for i in 0..BURST {
        let answered_by_a = Arc::clone(&answered_by_a);
        pending.push(tokio::spawn(async move {
            let addrs = if i % 2 == 0 {
                [addr_a, addr_b]
            } else {
                [addr_b, addr_a]
            };
            let (entry, failed) = consume_until_answered(&addrs, &format!("burst-{i}")).await;
            if i % 2 == 0 && failed == 0 {
                answered_by_a.fetch_add(1, Ordering::Relaxed);
            }
            (entry, failed)
        }));
    }
    for _ in 0..5_000 {
        if answered_by_a.load(Ordering::Relaxed) >= KILL_AFTER {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let before_kill = answered_by_a.load(Ordering::Relaxed);
    assert!(
        (KILL_AFTER..BURST / 2).contains(&before_kill),
        "the leader answered {before_kill} of its {} burst requests before the kill",
        BURST / 2
    );
    let killed_at_ms = SystemClock::new().now().as_unix_millis();
    a.kill9();
    let mut acknowledged = Vec::new();
    let mut retried = Vec::new();
    for (i, p) in pending.into_iter().enumerate() {
        let (entry, failed) = p.await.expect("task");
        acknowledged.push(entry);
        if failed > 0 {
            retried.push(format!("burst-{i}"));
        }
    }
    for i in 0..AFTER {
        let (entry, _) = consume_until_answered(&[b.addr], &format!("after-{i}")).await;
        acknowledged.push(entry);
    }
    // The survivor takes over the log and checkpoints everything committed.
    let cp = b.checkpoint().await;
    assert_eq!(cp.status, 200, "{}", cp.text);
    assert!(
        b.printed("leading the audit log's sequencer"),
        "the survivor leads"
    );
    let size = cp.json["size"].as_u64().unwrap();
    let root = unhex(cp.json["root"].as_str().unwrap());
    let v = b
        .call(Req::post("/v1/audit/verify", "{}").auth(ADMIN))
        .await;
    assert_eq!(
        (v.json["intact"].as_bool(), v.json["pending"].as_u64()),
        (Some(true), Some(0)),
        "{}",
        v.text
    );
    assert_eq!(
        v.json["report"]["checkpoint_matched"], true,
        "the whole log against the last checkpoint: {}",
        v.text
    );

    // Every acknowledged change has exactly one entry in the log, provable.
    let (admin, conn) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
    tokio::spawn(conn);
    let journal: i64 = admin
        .query_one(
            &format!("SELECT count(*) FROM {schema}.journal_entries WHERE tenant = 'acme'"),
            &[],
        )
        .await
        .expect("journal")
        .get(0);
    let logged: i64 = admin
        .query_one(
            &format!("SELECT count(*) FROM {schema}.audit_index WHERE stream = 'ledger/acme'"),
            &[],
        )
        .await
        .expect("logged")
        .get(0);
    assert_eq!(logged, journal, "one log entry per journal entry");
    for entry in &acknowledged {
        let row = admin
            .query_one(
                &format!(
                    "SELECT x.log_index FROM {schema}.audit_index x \
                     JOIN {schema}.audit_log a USING (stream, stream_seq) \
                     WHERE a.stream = 'ledger/acme' AND a.journal_seq = $1"
                ),
                &[&i64::try_from(*entry).unwrap()],
            )
            .await
            .unwrap_or_else(|e| panic!("entry {entry} is not in the log: {e}"));
        let index = u64::try_from(row.get::<_, i64>(0)).unwrap();
        assert!(index < size);
        assert_provable(&b, index, size, &root).await;
    }

    // The killed replica comes back, answers from the same log and takes changes again.
    let a = Proc::start(&db);
    let v = a
        .call(Req::post("/v1/audit/verify", "{}").auth(ADMIN))
        .await;
    assert_eq!(v.json["intact"], true, "{}", v.text);
    assert_eq!(v.json["report"]["checkpoint_matched"], true, "{}", v.text);
    assert_provable(&a, 0, size, &root).await;
    for i in 0..RESTARTED {
        let (entry, _) = consume_until_answered(&[a.addr], &format!("restarted-{i}")).await;
        acknowledged.push(entry);
    }

    // Every request in the journal exactly once, under its key, as answered; nothing else.
    let mut entries: Vec<serde_json::Value> = Vec::new();
    let mut path = "/v1/tenants/acme/history?limit=1000".to_owned();
    loop {
        let r = a.call(Req::get(&path).auth(ADMIN)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        entries.extend(r.json["entries"].as_array().unwrap().iter().cloned());
        match r.json["next"].as_u64() {
            Some(after) => path = format!("/v1/tenants/acme/history?limit=1000&after={after}"),
            None => break,
        }
    }
    let sent: Vec<String> = std::iter::once("seed".to_owned())
        .chain((0..BURST).map(|i| format!("burst-{i}")))
        .chain((0..AFTER).map(|i| format!("after-{i}")))
        .chain((0..RESTARTED).map(|i| format!("restarted-{i}")))
        .collect();
    let keys: Vec<&str> = entries.iter().map(|e| e["key"].as_str().unwrap()).collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    let mut expected: Vec<&str> = sent.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(sorted, expected, "each request's key exactly once");
    for (entry, key) in acknowledged.iter().zip(&sent[1..]) {
        let e = entries
            .iter()
            .find(|e| e["key"] == key.as_str())
            .expect("acknowledged");
        assert_eq!(
            (e["seq"].as_u64(), e["kind"].as_str(), e["amount"].as_u64()),
            (Some(*entry), Some("consumed"), Some(1)),
            "{key}: {e}"
        );
    }
    // Retried requests the killed replica had committed (its answer lost with it): the
    // retry was answered from the stored result. An entry stamped strictly before the kill
    // can only be the killed replica's (the other got these requests after it died), so
    // this is a lower bound; how many there are depends on timing.
    let replayed_after_kill = entries
        .iter()
        .filter(|e| {
            retried.iter().any(|k| e["key"] == k.as_str())
                && e["at_ms"].as_u64().unwrap() < killed_at_ms
        })
        .count();
    eprintln!(
        "kill -9 mid-burst: {} requests acknowledged, {} of the burst retried on the other \
         replica, at least {replayed_after_kill} of them committed by the killed one",
        acknowledged.len(),
        retried.len()
    );
    let consumed = u64::from(BURST + AFTER + RESTARTED);
    let r = a
        .call(Req::get("/v1/tenants/acme/balance").auth(ADMIN))
        .await;
    assert_eq!(
        r.json["available"].as_u64(),
        Some(FUNDED - consumed),
        "{}",
        r.text
    );

    // Conservation and the journal replayed to the counters, through the operator's routes
    // (on the restarted replica, and on the survivor: both read the same database).
    for p in [&a, &b] {
        let r = p.call(Req::get("/v1/conservation").auth(ADMIN)).await;
        assert_eq!(
            (r.status, &r.json["ok"]),
            (200, &serde_json::json!(true)),
            "{}",
            r.text
        );
        let r = p
            .call(Req::get("/v1/tenants/acme/conservation").auth(ADMIN))
            .await;
        assert_eq!(
            (
                r.status,
                r.json["ok"].as_bool(),
                r.json["totals"]["consumed"].as_u64()
            ),
            (200, Some(true), Some(consumed)),
            "{}",
            r.text
        );
    }
    let r = a
        .call(Req::post("/v1/tenants/acme/journal/verify", "").auth(ADMIN))
        .await;
    assert_eq!(
        (r.status, r.json["ok"].as_bool()),
        (200, Some(true)),
        "acme: {}",
        r.text
    );
    let replayed = r.json["entries_replayed"]
        .as_u64()
        .expect("entries replayed");
    assert_eq!(replayed, entries.len() as u64);
    assert_eq!(replayed, 1 + consumed);

    // The log, checkpointed again, verifies against that last checkpoint, one entry per
    // journal entry.
    let cp = a.checkpoint().await;
    assert_eq!(cp.status, 200, "{}", cp.text);
    assert_eq!(cp.json["size"].as_u64(), Some(replayed), "{}", cp.text);
    let v = a
        .call(Req::post("/v1/audit/verify", "{}").auth(ADMIN))
        .await;
    assert_eq!(
        (
            v.json["intact"].as_bool(),
            v.json["pending"].as_u64(),
            v.json["report"]["checkpoint_matched"].as_bool(),
            v.json["report"]["entries_ok"].as_u64()
        ),
        (Some(true), Some(0), Some(true), Some(replayed)),
        "{}",
        v.text
    );
    a.stop();
    b.stop();
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .expect("drop schema");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_audit_log_outlives_a_killed_in_memory_service() {
    let dir = std::env::temp_dir().join(format!(
        "credits-audit-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let dir_s = dir.to_str().unwrap().to_owned();
    let vars = [("CREDITS_AUDIT_DIR", dir_s.as_str())];
    let p = Proc::start(&vars);
    create_funded(&p, 100, "seed").await;
    for i in 0..20 {
        consume(&p, &format!("c{i}")).await.expect("consumed");
    }
    let cp = p.checkpoint().await;
    assert_eq!(cp.status, 200, "{}", cp.text);
    let size = cp.json["size"].as_u64().unwrap();
    assert_eq!(size, 21);
    let root = unhex(cp.json["root"].as_str().unwrap());
    p.kill9();

    // The ledger was in memory and is gone; the audit log is on disk and still proves
    // every entry of the checkpoint taken before the kill.
    let p = Proc::start(&vars);
    let v = p
        .call(Req::post("/v1/audit/verify", "{}").auth(ADMIN))
        .await;
    assert_eq!(v.json["intact"], true, "{}", v.text);
    assert!(v.json["end"].as_u64().unwrap() >= size, "{}", v.text);
    for index in 0..size {
        assert_provable(&p, index, size, &root).await;
    }
    // A re-created tenant continues its stream in the kept log.
    create_funded(&p, 5, "again").await;
    let r = p
        .call(Req::post("/v1/tenants/acme/journal/verify", "").auth(ADMIN))
        .await;
    assert_eq!(
        (
            r.status,
            r.json["ok"].as_bool(),
            r.json["entries_replayed"].as_u64()
        ),
        (200, Some(true), Some(1)),
        "the new ledger's journal: {}",
        r.text
    );
    let cp = p.checkpoint().await;
    assert_eq!(cp.json["size"].as_u64(), Some(size + 1), "{}", cp.text);
    let v = p
        .call(Req::post("/v1/audit/verify", "{}").auth(ADMIN))
        .await;
    assert_eq!(v.json["intact"], true, "{}", v.text);
    p.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
