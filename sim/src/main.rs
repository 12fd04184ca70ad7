//! `sim`: runs the deterministic simulator from the command line.
//!
//! ```text
//! cargo run -p sim -- --seed 42 --ops 10000
//! cargo run -p sim -- --seeds 1..20 --ops 5000 --tenants 16
//! cargo run -p sim -- --seed 3 --ops 2000 --bug skip-hold-expiry   # must fail
//! cargo run -p sim -- --seeds 1..5 --ops 2000 --audit-fails-for-good
//! cargo run -p sim -- --seed 7 --ops 500 --postgres --group-commit         # DATABASE_URL
//! cargo run -p sim -- --check-fuzz-input bayes fuzz/artifacts/bayes/crash-…
//! cargo run -p sim -- --linearizability --seed 5 --rounds 20              # in memory
//! cargo run -p sim -- --linearizability --postgres --group-commit --seed 5 # DATABASE_URL
//! ```
//!
//! Exits 0 when every run was clean, 1 on the first violation (printing the seed and step
//! that reproduce it), 2 on bad arguments.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use sim::{Bug, Config, run};

const USAGE: &str = "usage: sim [--seed N | --seeds A..B] [--ops M] [--tenants T] \
[--faults P] [--crashes P] [--bug skip-hold-expiry|double-apply-retry|drop-journal-row|lose-audit-entry] [--long-outages] [--short-retention] \
[--audit-fails-for-good (in memory)] [--postgres (uses DATABASE_URL) [--group-commit]] [--trace]";

struct Args {
    seeds: std::ops::Range<u64>,
    ops: u64,
    tenants: usize,
    faults: Option<(f64, f64)>,
    bug: Option<Bug>,
    outage: bool,
    retention: bool,
    for_good: bool,
    postgres: Option<String>,
    group_commit: bool,
    trace: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        seeds: 0..1,
        ops: 10_000,
        tenants: 8,
        faults: None,
        bug: None,
        outage: false,
        retention: false,
        for_good: false,
        postgres: None,
        group_commit: false,
        trace: false,
    };
    let mut fault = Config::new(0, 0).fault_probability;
    let mut crash = Config::new(0, 0).crash_probability;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--seed" => {
                let s: u64 = value()?.parse().map_err(|e| format!("--seed: {e}"))?;
                a.seeds = s..s.saturating_add(1);
            }
            "--seeds" => {
                let v = value()?;
                let (lo, hi) = v.split_once("..").ok_or("--seeds wants A..B")?;
                let lo: u64 = lo.parse().map_err(|e| format!("--seeds: {e}"))?;
                let hi: u64 = hi.parse().map_err(|e| format!("--seeds: {e}"))?;
                a.seeds = lo..hi;
            }
            "--ops" => a.ops = value()?.parse().map_err(|e| format!("--ops: {e}"))?,
            "--tenants" => a.tenants = value()?.parse().map_err(|e| format!("--tenants: {e}"))?,
            "--faults" => {
                fault = value()?.parse().map_err(|e| format!("--faults: {e}"))?;
                a.faults = Some((fault, crash));
            }
            "--crashes" => {
                crash = value()?.parse().map_err(|e| format!("--crashes: {e}"))?;
                a.faults = Some((fault, crash));
            }
            "--bug" => {
                let v = value()?;
                a.bug = Some(Bug::parse(&v).ok_or_else(|| format!("unknown bug {v}"))?);
            }
            "--long-outages" => a.outage = true,
            "--short-retention" => a.retention = true,
            "--audit-fails-for-good" => a.for_good = true,
            "--group-commit" => a.group_commit = true,
            "--trace" => a.trace = true,
            "--postgres" => {
                a.postgres = Some(
                    std::env::var("DATABASE_URL").map_err(|_| "--postgres needs DATABASE_URL")?,
                );
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if a.group_commit && a.postgres.is_none() {
        return Err(format!("--group-commit needs --postgres\n{USAGE}"));
    }
    if a.for_good && a.postgres.is_some() {
        return Err(format!(
            "--audit-fails-for-good runs in memory (PostgreSQL has no audit disk to fail)\n{USAGE}"
        ));
    }
    Ok(a)
}

/// `sim --write-fuzz-seeds DIR`: writes each fuzz target's starting inputs to
/// `DIR/<target>/seed-<n>`.
fn write_seeds(dir: &str) -> ExitCode {
    for (target, _) in sim::fuzz::TARGETS {
        let path = std::path::Path::new(dir).join(target);
        if let Err(e) = std::fs::create_dir_all(&path) {
            eprintln!("{}: {e}", path.display());
            return ExitCode::from(1);
        }
        for (i, bytes) in sim::fuzz::seed_inputs(target).iter().enumerate() {
            if let Err(e) = std::fs::write(path.join(format!("seed-{i}")), bytes) {
                eprintln!("{}: {e}", path.display());
                return ExitCode::from(1);
            }
        }
    }
    ExitCode::SUCCESS
}

/// `sim --check-fuzz-input TARGET FILE`: runs one fuzz input through its check on stable.
fn check_input(target: Option<String>, file: Option<String>) -> ExitCode {
    let (Some(target), Some(file)) = (target, file) else {
        eprintln!("--check-fuzz-input needs a target and a file");
        return ExitCode::from(2);
    };
    let Some((_, check)) = sim::fuzz::TARGETS.iter().find(|(t, _)| *t == target) else {
        eprintln!("unknown fuzz target {target}");
        return ExitCode::from(2);
    };
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{file}: {e}");
            return ExitCode::from(2);
        }
    };
    match check(&bytes) {
        Ok(()) => {
            println!("{file}: ok");
            ExitCode::SUCCESS
        }
        Err(finding) => {
            println!("{file}: {finding}");
            ExitCode::from(1)
        }
    }
}

/// `sim --linearizability [--postgres [--group-commit]] [--seed N] [--rounds R]
/// [--bug double-apply-retry]`: records `R` concurrent histories (in memory: 4 threads × 12
/// operations on 2 tenants, every fifth mutation failing; on PostgreSQL:
/// `PgLinearizability::new`'s clients) and checks each. Prints one summary line; exits 1
/// on the first history that is not linearizable (printing it).
fn linearizability(args: Vec<String>) -> ExitCode {
    use sim::linearizability::{PgLinearizability, Recording, failing_tenant, record_postgres};
    let (mut seed, mut rounds, mut postgres, mut group, mut bug) =
        (0u64, 10usize, false, false, None);
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let ok = match flag.as_str() {
            "--postgres" => {
                postgres = true;
                true
            }
            "--group-commit" => {
                group = true;
                true
            }
            "--seed" => match it.next().and_then(|v| v.parse().ok()) {
                Some(v) => {
                    seed = v;
                    true
                }
                None => false,
            },
            "--rounds" => match it.next().and_then(|v| v.parse().ok()) {
                Some(v) => {
                    rounds = v;
                    true
                }
                None => false,
            },
            "--bug" => {
                bug = it.next().and_then(|v| Bug::parse(&v));
                bug.is_some()
            }
            _ => false,
        };
        if !ok {
            eprintln!("bad argument {flag}: {USAGE_LINEARIZABILITY}");
            return ExitCode::from(2);
        }
    }
    let recordings: Result<Vec<Recording>, String> = if postgres {
        let Ok(url) = std::env::var("DATABASE_URL") else {
            eprintln!("--postgres needs DATABASE_URL");
            return ExitCode::from(2);
        };
        let mut config = PgLinearizability::new(url, seed);
        config.rounds = rounds;
        config.bug = bug;
        if group {
            (config.group_commit, config.clients, config.ops_per_client) = (true, 6, 10);
        }
        record_postgres(&config)
    } else {
        (0..rounds as u64)
            .map(|r| match bug {
                Some(b) => sim::linearizability::record_broken(seed ^ (r << 20), 4, 12, 2, b),
                None => sim::linearizability::record_with_faults(seed ^ (r << 20), 4, 12, 2),
            })
            .collect()
    };
    let recordings = match recordings {
        Ok(r) => r,
        Err(e) => {
            eprintln!("linearizability seed {seed}: {e}");
            return ExitCode::from(1);
        }
    };
    let (mut ops, mut retries) = (0, 0);
    for (round, r) in recordings.iter().enumerate() {
        if let Some(tenant) = failing_tenant(&r.history) {
            println!("FAILED linearizability seed {seed} round {round} tenant {tenant}");
            for op in r.history.iter().filter(|o| o.tenant == tenant) {
                println!("  {op:?}");
            }
            return ExitCode::from(1);
        }
        ops += r.history.len();
        retries += r.retries;
    }
    let backend = match (postgres, group) {
        (false, _) => "memory",
        (true, false) => "postgres",
        (true, true) => "postgres-group-commit",
    };
    println!(
        "linearizability seed {seed} {backend}: ok histories={} operations={ops} retries={retries} violations=0",
        recordings.len()
    );
    ExitCode::SUCCESS
}

const USAGE_LINEARIZABILITY: &str = "usage: sim --linearizability [--postgres [--group-commit]] \
[--seed N] [--rounds R] [--bug double-apply-retry]";

fn main() -> ExitCode {
    let mut raw = std::env::args().skip(1);
    let first = raw.next();
    if first.as_deref() == Some("--check-fuzz-input") {
        return check_input(raw.next(), raw.next());
    }
    if first.as_deref() == Some("--linearizability") {
        return linearizability(raw.collect());
    }
    if first.as_deref() == Some("--write-fuzz-seeds") {
        return match raw.next() {
            Some(dir) => write_seeds(&dir),
            None => {
                eprintln!("--write-fuzz-seeds needs a directory");
                ExitCode::from(2)
            }
        };
    }
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut total_ops = 0u64;
    let mut runs = 0u64;
    for seed in args.seeds.clone() {
        let mut config = Config::new(seed, args.ops)
            .with_tenants(args.tenants)
            .with_long_outages(args.outage)
            .with_short_retention(args.retention)
            .with_audit_failing_for_good(args.for_good)
            .with_group_commit(args.group_commit)
            .with_trace(args.trace);
        if let Some((f, c)) = args.faults {
            config = config.with_faults(f, c);
        }
        if let Some(url) = &args.postgres {
            config = config.with_postgres(url.clone());
        }
        if let Some(bug) = args.bug {
            config = config.with_bug(bug);
        }
        match run(&config) {
            Ok(r) => {
                for line in &r.trace {
                    println!("{line}");
                }
                total_ops += r.ops;
                runs += 1;
                println!(
                    "seed {seed}: ok ops={} entries={} audit={} faults={} crashes={} torn={} audit_outages={} audit_deaths={} audit_fail_once={} audit_slow={} audit_refused={} retries={} tx={}/{} outsiders_refused={} trace={}",
                    r.ops,
                    r.journal_entries,
                    r.audit_records,
                    r.faults,
                    r.crashes,
                    r.torn_tails,
                    r.audit_outages,
                    r.audit_deaths,
                    r.audit_fail_once,
                    r.audit_slow,
                    r.audit_refused,
                    r.retries,
                    r.tx_committed,
                    r.tx_aborted,
                    r.outsiders_refused,
                    r.trace_hash
                );
            }
            Err(v) => {
                println!("FAILED {v}");
                println!(
                    "reproduce: cargo run -p sim --release -- --seed {seed} --ops {}{}{}{}{}{}",
                    args.ops,
                    args.bug.map_or(String::new(), |_| " --bug …".into()),
                    if args.outage { " --long-outages" } else { "" },
                    if args.retention {
                        " --short-retention"
                    } else {
                        ""
                    },
                    if args.for_good {
                        " --audit-fails-for-good"
                    } else {
                        ""
                    },
                    match (&args.postgres, args.group_commit) {
                        (None, _) => "",
                        (Some(_), false) => " --postgres",
                        (Some(_), true) => " --postgres --group-commit",
                    }
                );
                return ExitCode::from(1);
            }
        }
    }
    println!("clean: {runs} seeds, {total_ops} ops");
    ExitCode::SUCCESS
}
