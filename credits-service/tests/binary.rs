//! The `credits-service` binary: refuses a bad configuration with a clear message, serves,
//! and exits cleanly on SIGTERM. Secrets never appear in its output.

// Tests and benchmarks act as applications: they spawn tasks and sleep on tokio's timer.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Req;

const ADMIN_SECRET: &str = "admin-secret-0123456789";
const TENANT_SECRET: &str = "acme-secret-0123456789";

fn service() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_credits-service"));
    // Only what each test sets: no inherited CREDITS_* or DATABASE_URL.
    for (k, _) in std::env::vars() {
        if k.starts_with("CREDITS_") || k == "DATABASE_URL" || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.env("CREDITS_ADMIN_TOKEN", ADMIN_SECRET)
        .env("CREDITS_TENANT_TOKENS", format!("acme={TENANT_SECRET}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

#[test]
fn a_bad_setting_stops_the_start_naming_the_variable() {
    for (var, value, expect) in [
        (
            "CREDITS_RATE_LIMIT_PER_SECOND",
            "0",
            "CREDITS_RATE_LIMIT_PER_SECOND: 0 is outside",
        ),
        ("CREDITS_LISTEN_ADDR", "nowhere", "CREDITS_LISTEN_ADDR"),
        (
            "CREDITS_RATE_LIMT",
            "5",
            "CREDITS_RATE_LIMT: unknown setting",
        ),
    ] {
        let out = service().env(var, value).output().expect("run the binary");
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expect), "{var}={value}: {stderr}");
        let all = format!("{stderr}{}", String::from_utf8_lossy(&out.stdout));
        assert!(
            !all.contains(ADMIN_SECRET) && !all.contains(TENANT_SECRET),
            "{all}"
        );
    }
}

#[test]
fn it_serves_and_exits_cleanly_on_sigterm() {
    let mut child = service()
        .env("CREDITS_LISTEN_ADDR", "127.0.0.1:0")
        .env("CREDITS_LOG_FORMAT", "json")
        .spawn()
        .expect("start the binary");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut seen = String::new();
    let addr = loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).expect("read the log") == 0 {
            let _ = child.kill();
            panic!("the service stopped before listening: {seen}");
        }
        seen.push_str(&line);
        let record: serde_json::Value = serde_json::from_str(&line).expect("JSON log lines");
        if record["fields"]["message"] == "credits service listening" {
            break record["fields"]["addr"]
                .as_str()
                .expect("addr")
                .parse()
                .expect("an address");
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let health = runtime.block_on(common::call(addr, Req::get("/health")));
    assert_eq!(health.status, 200, "{}", health.text);
    let balance = runtime.block_on(common::call(
        addr,
        Req::get("/v1/tenants/acme/balance").auth("Bearer acme-secret-0123456789"),
    ));
    assert_eq!(
        balance.code(),
        "unknown_tenant",
        "authenticated, no such tenant yet"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(killed.success());
    let mut status = None;
    for _ in 0..100 {
        if let Some(s) = child.try_wait().expect("wait") {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let Some(status) = status else {
        let _ = child.kill();
        panic!("no exit within 10 s of SIGTERM");
    };
    assert!(status.success(), "exit status {status}");
    stdout.read_to_string(&mut seen).expect("rest of the log");
    assert!(seen.contains("audit log closed"), "{seen}");
    assert!(
        !seen.contains(ADMIN_SECRET) && !seen.contains(TENANT_SECRET),
        "{seen}"
    );
}
