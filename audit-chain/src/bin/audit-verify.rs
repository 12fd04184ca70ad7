//! `audit-verify`: offline verification of an audit log: a file-sink directory, or a
//! PostgreSQL schema (feature `postgres`).
//!
//! ```text
//! audit-verify (--dir DIR | --database-url URL [--schema NAME] [--archive-schema NAME])
//!              --keys KEYFILE
//!              [--checkpoint NOTE (--public-key VKEY | --allow-unsigned)] [--origin NAME]
//!              [--prove INDEX] [--json]
//! ```
//!
//! Exits 0 when the log is intact, 1 naming the first bad entry (or, on PostgreSQL, the
//! first ledger mismatch) otherwise, 2 on a usage or I/O error. A checkpoint's signature is
//! checked with `--public-key`; `--checkpoint` without it is a usage error unless
//! `--allow-unsigned` waives the check. `--prove INDEX` also prints the inclusion proof of
//! that entry (against the checkpoint's tree size when one is given).
//!
//! On PostgreSQL the report also gives the backlog (committed entries not yet in the log)
//! and checks the ledger against its audit streams: every journal entry has exactly one
//! audit entry, and replaying a tenant's audit entries gives its counters. With
//! `--archive-schema`, the months archived there (credits-postgres's
//! `credits_archive_month`, or a `pg_dump` of that schema restored) are read with the live
//! log and journal as one log and one journal.
#![forbid(unsafe_code)]
// A command-line tool: printing is its job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use audit_chain::merkle::{MerkleTree, verify_inclusion};
use audit_chain::{Checkpoint, Keyring, NoteVerifier, VerifyReport, scan_dir_with, verify_dir};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

const USAGE: &str = "usage: audit-verify (--dir DIR | --database-url URL [--schema NAME] \
[--archive-schema NAME]) --keys KEYFILE [--checkpoint NOTE_FILE (--public-key VKEY|VKEY_FILE | --allow-unsigned) \
[--origin NAME]] [--prove INDEX] [--json]

  --dir DIR          the file-sink directory (segment files)
  --database-url URL a PostgreSQL database holding the log (credits-postgres's tables);
                     also checks the ledger against it and reports the backlog. Needs the
                     `postgres` feature
  --schema NAME      the schema of the log in that database (default: public)
  --archive-schema NAME
                     a schema holding archived months of that log (credits_archive_month):
                     verified with the live log as one log
  --keys KEYFILE     HMAC keys, one `<id>:<hex>` per line
  --checkpoint FILE  a checkpoint (signed note) kept outside the log; detects truncation
                     and rewriting
  --public-key VKEY  the checkpoint signer's verifier key (or a file holding it); required
                     with --checkpoint
  --allow-unsigned   use the checkpoint without checking its signature (it then proves
                     nothing against whoever could write it); instead of --public-key
  --origin NAME      the log's origin; the checkpoint must name it
  --prove INDEX      print the inclusion proof of entry INDEX
  --json             print the report as JSON";

#[derive(Default)]
struct Args {
    dir: Option<PathBuf>,
    database_url: Option<String>,
    schema: Option<String>,
    archive_schema: Option<String>,
    keys: Option<PathBuf>,
    checkpoint: Option<PathBuf>,
    public_key: Option<String>,
    allow_unsigned: bool,
    origin: Option<String>,
    prove: Option<u64>,
    json: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => args.dir = Some(value()?.into()),
            "--database-url" => args.database_url = Some(value()?),
            "--schema" => args.schema = Some(value()?),
            "--archive-schema" => args.archive_schema = Some(value()?),
            "--keys" => args.keys = Some(value()?.into()),
            "--checkpoint" => args.checkpoint = Some(value()?.into()),
            "--public-key" => args.public_key = Some(value()?),
            "--origin" => args.origin = Some(value()?),
            "--prove" => {
                let v = value()?;
                args.prove = Some(
                    v.parse()
                        .map_err(|_| format!("--prove {v}: not an index"))?,
                );
            }
            "--allow-unsigned" => args.allow_unsigned = true,
            "--json" => args.json = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    match (&args.dir, &args.database_url) {
        (Some(_), Some(_)) => {
            return Err("--dir and --database-url are mutually exclusive: give one log".into());
        }
        (None, None) => return Err("--dir or --database-url is required".into()),
        (None, Some(_)) if !cfg!(feature = "postgres") => {
            return Err(
                "--database-url: this audit-verify was built without the `postgres` \
                        feature (build it with `--features postgres`)"
                    .into(),
            );
        }
        _ => {}
    }
    if args.schema.is_some() && args.database_url.is_none() {
        return Err("--schema is only for a log in PostgreSQL (--database-url)".into());
    }
    if args.archive_schema.is_some() && args.database_url.is_none() {
        return Err("--archive-schema is only for a log in PostgreSQL (--database-url)".into());
    }
    if args.checkpoint.is_some() && args.public_key.is_none() && !args.allow_unsigned {
        return Err("--checkpoint needs --public-key to check its signature \
                    (or --allow-unsigned to waive the check)"
            .into());
    }
    Ok(args)
}

fn read(path: &Path, what: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("reading {what} {}: {e}", path.display()))
}

fn load_checkpoint(args: &Args) -> Result<Option<Checkpoint>, String> {
    let Some(path) = &args.checkpoint else {
        return Ok(None);
    };
    let note = read(path, "checkpoint")?;
    let cp = match &args.public_key {
        Some(key) => {
            let vkey = match std::fs::read_to_string(key) {
                Ok(s) => s.trim().to_owned(),
                Err(_) => key.clone(),
            };
            let verifier = NoteVerifier::new(&vkey).map_err(|e| e.to_string())?;
            let text = verifier.open(&note).map_err(|e| e.to_string())?;
            Checkpoint::parse_body(text).map_err(|e| e.to_string())?
        }
        None => {
            eprintln!("warning: --allow-unsigned: the checkpoint's signature is not checked");
            Checkpoint::parse_note_unverified(&note).map_err(|e| e.to_string())?
        }
    };
    if let Some(origin) = &args.origin
        && &cp.origin != origin
    {
        return Err(format!(
            "checkpoint is for log {:?}, not {origin:?}",
            cp.origin
        ));
    }
    Ok(Some(cp))
}

fn run(args: &Args) -> Result<bool, String> {
    let keys = args.keys.as_ref().ok_or("--keys is required")?;
    let keyring = Keyring::from_key_file(&read(keys, "key file")?).map_err(|e| e.to_string())?;
    let checkpoint = load_checkpoint(args)?;
    if let Some(url) = &args.database_url {
        return run_pg(args, url, &keyring, checkpoint.as_ref());
    }
    let dir = args.dir.as_ref().ok_or("--dir is required")?;
    let result = verify_dir(dir, &keyring, checkpoint.as_ref()).map_err(|e| e.to_string())?;
    let report = &result.report;
    if args.json {
        let json = serde_json::json!({ "report": report, "torn_bytes": result.torn_bytes });
        println!("{json}");
    } else {
        print_report(&dir.display().to_string(), report, checkpoint.as_ref());
        if result.torn_bytes > 0 {
            println!(
                "torn tail:    {} bytes ignored (a crash during a write)",
                result.torn_bytes
            );
        }
    }
    if let Some(f) = &report.failure {
        eprintln!("FAILED: {f}");
        return Ok(false);
    }
    if !args.json {
        println!("intact");
    }
    if let Some(index) = args.prove {
        let mut tree = MerkleTree::new();
        scan_dir_with(dir, |r| tree.push(r.entry.leaf_hash())).map_err(|e| e.to_string())?;
        prove(&tree, index, checkpoint.as_ref())?;
    }
    Ok(true)
}

/// The report's lines common to every kind of log.
fn print_report(log: &str, report: &VerifyReport, checkpoint: Option<&Checkpoint>) {
    println!("log:          {log}");
    println!("entries ok:   {}", report.entries_ok);
    println!("streams:      {}", report.streams);
    if let Some(root) = report.root {
        println!("root:         {}", B64.encode(root));
    }
    match checkpoint {
        Some(cp) => println!(
            "checkpoint:   {} size {} {}",
            cp.origin,
            cp.size,
            if report.checkpoint_matched {
                "matched"
            } else {
                "NOT matched"
            }
        ),
        None => println!("checkpoint:   none given (truncation cannot be detected)"),
    }
}

#[cfg(not(feature = "postgres"))]
fn run_pg(
    _args: &Args,
    _url: &str,
    _keyring: &Keyring,
    _checkpoint: Option<&Checkpoint>,
) -> Result<bool, String> {
    Err("--database-url needs the `postgres` feature".into())
}

// A driver: it runs the connection's task.
#[allow(clippy::disallowed_methods)]
#[cfg(feature = "postgres")]
fn run_pg(
    args: &Args,
    url: &str,
    keyring: &Keyring,
    checkpoint: Option<&Checkpoint>,
) -> Result<bool, String> {
    use audit_chain::AuditSink as _;
    use audit_chain::pg::{PgLogReader, verify_schema_with_archive};

    let schema = args.schema.as_deref().unwrap_or("public");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.block_on(async {
        let (mut client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("connecting to the database: {e}"))?;
        tokio::spawn(conn);
        let archive = args.archive_schema.as_deref();
        let result = verify_schema_with_archive(&mut client, schema, archive, keyring, checkpoint)
            .await
            .map_err(|e| e.to_string())?;
        let report = &result.report;
        if args.json {
            let json = serde_json::json!({
                "report": report,
                "backlog": result.backlog,
                "ledger": result.ledger,
            });
            println!("{json}");
        } else {
            let log = match archive {
                Some(a) => format!("postgres schema {schema:?} with archive {a:?}"),
                None => format!("postgres schema {schema:?}"),
            };
            print_report(&log, report, checkpoint);
            println!(
                "backlog:      {} committed entries not yet in the log",
                result.backlog
            );
            match &result.ledger {
                Some(l) => println!(
                    "ledger:       {} tenants, {} journal entries {}",
                    l.tenants,
                    l.journal_entries,
                    if l.is_intact() {
                        "each with exactly one audit entry; counters match"
                    } else {
                        "checked before the mismatch"
                    }
                ),
                None => println!("ledger:       none in this schema"),
            }
        }
        if let Some(f) = &report.failure {
            eprintln!("FAILED: {f}");
        }
        if let Some(f) = result.ledger.as_ref().and_then(|l| l.failure.as_ref()) {
            eprintln!("FAILED: ledger: {f}");
        }
        if !result.is_intact() {
            return Ok(false);
        }
        if !args.json {
            println!("intact");
        }
        if let Some(index) = args.prove {
            let mut reader = PgLogReader::new(&client, schema).map_err(|e| e.to_string())?;
            if let Some(a) = archive {
                reader = reader.with_archive(a).map_err(|e| e.to_string())?;
            }
            let size = reader.size().await.map_err(|e| e.to_string())?;
            let mut tree = MerkleTree::new();
            while tree.size() < size {
                let chunk = reader
                    .read(tree.size(), 4096)
                    .await
                    .map_err(|e| e.to_string())?;
                if chunk.is_empty() {
                    break;
                }
                for r in &chunk {
                    tree.push(r.entry.leaf_hash());
                }
            }
            prove(&tree, index, checkpoint)?;
        }
        Ok(true)
    })
}

fn prove(tree: &MerkleTree, index: u64, checkpoint: Option<&Checkpoint>) -> Result<(), String> {
    let size = checkpoint.map_or(tree.size(), |c| c.size);
    let proof = tree
        .inclusion_proof(index, size)
        .map_err(|e| e.to_string())?;
    let root = tree.root_at(size).map_err(|e| e.to_string())?;
    let leaf = tree.leaf(index).ok_or("no such entry")?;
    verify_inclusion(&leaf, index, size, &proof, &root).map_err(|e| e.to_string())?;
    let json = serde_json::json!({
        "index": index,
        "tree_size": size,
        "leaf_hash": B64.encode(leaf),
        "root": B64.encode(root),
        "proof": proof.iter().map(|h| B64.encode(h)).collect::<Vec<_>>(),
    });
    println!("{json}");
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
