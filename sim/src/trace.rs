//! The run's trace: one line per acknowledged answer, transaction, clock move and restart,
//! hashed with SHA-256 so that two runs of one seed can be compared by one string.

use sha2::{Digest, Sha256};

/// The trace of one run.
pub(crate) struct Trace {
    hasher: Sha256,
    /// Keep the lines (prefixed with their step) besides hashing them.
    keep: bool,
    lines: Vec<String>,
}

impl Trace {
    /// An empty trace; `keep` keeps the lines for [`Report::trace`](crate::Report::trace).
    pub(crate) fn new(keep: bool) -> Self {
        Trace {
            hasher: Sha256::new(),
            keep,
            lines: Vec::new(),
        }
    }

    /// Adds `line`, written at `step`.
    pub(crate) fn line(&mut self, step: u64, line: &str) {
        self.hasher.update(line.as_bytes());
        self.hasher.update(b"\n");
        if self.keep {
            self.lines.push(format!("{step} {line}"));
        }
    }

    /// The kept lines (empty unless `keep`).
    pub(crate) fn lines(&self) -> &[String] {
        &self.lines
    }

    /// The lowercase hex SHA-256 of every line so far.
    pub(crate) fn hash(&self) -> String {
        hex(&self.hasher.clone().finalize())
    }
}

/// Lowercase hex of bytes.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
