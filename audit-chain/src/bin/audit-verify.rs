//! `audit-verify`: offline verification of a file-sink audit log.
//!
//! ```text
//! audit-verify --dir DIR --keys KEYFILE
//!              [--checkpoint NOTE (--public-key VKEY | --allow-unsigned)] [--origin NAME]
//!              [--prove INDEX] [--json]
//! ```
//!
//! Exits 0 when the log is intact, 1 naming the first bad entry otherwise, 2 on a usage or
//! I/O error. A checkpoint's signature is checked with `--public-key`; `--checkpoint`
//! without it is a usage error unless `--allow-unsigned` waives the check. `--prove INDEX`
//! also prints the inclusion proof of that entry (against the checkpoint's tree size when
//! one is given).
#![forbid(unsafe_code)]
// A command-line tool: printing is its job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use audit_chain::merkle::{MerkleTree, verify_inclusion};
use audit_chain::{Checkpoint, Keyring, NoteVerifier, scan_dir_with, verify_dir};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

const USAGE: &str = "usage: audit-verify --dir DIR --keys KEYFILE \
[--checkpoint NOTE_FILE (--public-key VKEY|VKEY_FILE | --allow-unsigned) [--origin NAME]] \
[--prove INDEX] [--json]

  --dir DIR          the file-sink directory (segment files)
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
    let dir = args.dir.as_ref().ok_or("--dir is required")?;
    let keys = args.keys.as_ref().ok_or("--keys is required")?;
    let keyring = Keyring::from_key_file(&read(keys, "key file")?).map_err(|e| e.to_string())?;
    let checkpoint = load_checkpoint(args)?;
    let result = verify_dir(dir, &keyring, checkpoint.as_ref()).map_err(|e| e.to_string())?;
    let report = &result.report;
    if args.json {
        let json = serde_json::json!({ "report": report, "torn_bytes": result.torn_bytes });
        println!("{json}");
    } else {
        println!("log:          {}", dir.display());
        println!("entries ok:   {}", report.entries_ok);
        println!("streams:      {}", report.streams);
        if let Some(root) = report.root {
            println!("root:         {}", B64.encode(root));
        }
        if result.torn_bytes > 0 {
            println!(
                "torn tail:    {} bytes ignored (a crash during a write)",
                result.torn_bytes
            );
        }
        match &checkpoint {
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
    if let Some(f) = &report.failure {
        eprintln!("FAILED: {f}");
        return Ok(false);
    }
    if !args.json {
        println!("intact");
    }
    if let Some(index) = args.prove {
        prove(dir, index, checkpoint.as_ref())?;
    }
    Ok(true)
}

fn prove(dir: &Path, index: u64, checkpoint: Option<&Checkpoint>) -> Result<(), String> {
    let mut tree = MerkleTree::new();
    scan_dir_with(dir, |r| tree.push(r.entry.leaf_hash())).map_err(|e| e.to_string())?;
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
