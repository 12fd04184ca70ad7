//! Checkpoints (tree size + root) in the C2SP `tlog-checkpoint` format, signed as C2SP
//! signed notes with Ed25519, interoperable with Go's `golang.org/x/mod/sumdb/note`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::AuditError;
use crate::entry::Hash;

/// Ed25519 signature type byte of C2SP signed notes.
const ALG_ED25519: u8 = 0x01;
/// Most signature lines a note may carry.
const SIGNATURES_MAX: usize = 100;
/// Longest note accepted, in bytes.
const NOTE_LEN_MAX: usize = 64 * 1024;

/// A commitment to the whole log: its origin (the log's name), size and root hash.
///
/// ```
/// use audit_chain::Checkpoint;
/// let cp = Checkpoint { origin: "example.com/audit".into(), size: 3, root: [0u8; 32] };
/// let body = cp.to_body();
/// assert_eq!(body, "example.com/audit\n3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n");
/// assert_eq!(Checkpoint::parse_body(&body)?, cp);
/// # Ok::<(), audit_chain::AuditError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's unique name (first line); a checkpoint of another log is rejected.
    pub origin: String,
    /// Number of entries committed to.
    pub size: u64,
    /// Merkle root over those entries.
    pub root: Hash,
}

impl Checkpoint {
    /// The checkpoint body: `origin\nsize\nbase64(root)\n`.
    #[must_use]
    pub fn to_body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// Parses a checkpoint note — a signed note or a bare body — **without checking any
    /// signature**: for a copy whose origin is already trusted (the writer's own stored
    /// checkpoint, read for its size) or when the caller explicitly waives the check
    /// (`audit-verify --allow-unsigned`). Use [`NoteVerifier::verify_checkpoint`] for a
    /// checkpoint that must prove anything.
    ///
    /// ```
    /// use audit_chain::{Checkpoint, NoteSigner};
    /// let cp = Checkpoint { origin: "example.com/audit".into(), size: 3, root: [0; 32] };
    /// let signed = NoteSigner::new("example.com", [1; 32])?.sign_checkpoint(&cp);
    /// assert_eq!(Checkpoint::parse_note_unverified(&signed.note)?, cp);
    /// assert_eq!(Checkpoint::parse_note_unverified(&cp.to_body())?, cp);
    /// # Ok::<(), audit_chain::AuditError>(())
    /// ```
    ///
    /// # Errors
    /// [`AuditError::InvalidCheckpoint`] if the body is malformed.
    pub fn parse_note_unverified(note: &str) -> Result<Self, AuditError> {
        let body = note.rfind("\n\n").map_or(note, |split| &note[..=split]);
        Self::parse_body(body)
    }

    /// Parses a checkpoint body (extension lines after the root are allowed and ignored).
    ///
    /// # Errors
    /// [`AuditError::InvalidCheckpoint`] if a line is missing or malformed.
    pub fn parse_body(body: &str) -> Result<Self, AuditError> {
        let bad = |m: &str| AuditError::InvalidCheckpoint(m.to_owned());
        if !body.ends_with('\n') {
            return Err(bad("body must end with a newline"));
        }
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(bad("empty origin line"));
        }
        let size_line = lines.next().ok_or_else(|| bad("missing size line"))?;
        let canonical = !size_line.is_empty()
            && size_line.bytes().all(|b| b.is_ascii_digit())
            && (size_line == "0" || !size_line.starts_with('0'));
        let size = size_line
            .parse::<u64>()
            .ok()
            .filter(|_| canonical)
            .ok_or_else(|| bad("size is not a canonical decimal number"))?;
        let root_line = lines.next().ok_or_else(|| bad("missing root line"))?;
        let root = B64
            .decode(root_line)
            .ok()
            .and_then(|v| Hash::try_from(v).ok())
            .ok_or_else(|| bad("root is not 32 bytes of base64"))?;
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

/// A checkpoint and the signed note that carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The full signed note text (body, blank line, signature lines).
    pub note: String,
}

fn key_hash(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(public);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

fn check_name(name: &str) -> Result<(), AuditError> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+') {
        return Err(AuditError::InvalidKey(format!(
            "key name {name:?} must be non-empty, without spaces or '+'"
        )));
    }
    Ok(())
}

/// Signs notes (and so checkpoints) with an Ed25519 key.
///
/// Keep the private key away from the log's storage: whoever holds it can sign any tree.
///
/// ```
/// use audit_chain::{Checkpoint, NoteSigner, NoteVerifier};
/// let signer = NoteSigner::new("audit.example", [7u8; 32])?;
/// let verifier = NoteVerifier::new(&signer.verifier_key())?;
/// let cp = Checkpoint { origin: "audit.example/log".into(), size: 1, root: [1u8; 32] };
/// let signed = signer.sign_checkpoint(&cp);
/// assert_eq!(verifier.verify_checkpoint(&signed.note, "audit.example/log")?, cp);
/// assert!(verifier.verify_checkpoint(&signed.note, "another/log").is_err());
/// # Ok::<(), audit_chain::AuditError>(())
/// ```
///
/// Cloning copies the secret key (each copy is wiped when dropped).
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    hash: [u8; 4],
    key: SigningKey,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// A signer named `name` with the Ed25519 secret key `seed`.
    ///
    /// # Errors
    /// [`AuditError::InvalidKey`] if the name is empty or has spaces or `+`.
    pub fn new(name: impl Into<String>, seed: [u8; 32]) -> Result<Self, AuditError> {
        let seed = Zeroizing::new(seed);
        let name = name.into();
        check_name(&name)?;
        let key = SigningKey::from_bytes(&seed);
        let hash = key_hash(&name, key.verifying_key().as_bytes());
        Ok(NoteSigner { name, hash, key })
    }

    /// Parses a Go-style private key: `PRIVATE+KEY+<name>+<hash hex>+<base64(0x01 ‖ seed)>`.
    ///
    /// # Errors
    /// [`AuditError::InvalidKey`] if the string is malformed or its hash does not match.
    pub fn from_private_key(skey: &str) -> Result<Self, AuditError> {
        let bad = || AuditError::InvalidKey("malformed private note key".into());
        let rest = skey.strip_prefix("PRIVATE+KEY+").ok_or_else(bad)?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(hash), Some(key), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let raw = Zeroizing::new(B64.decode(key).map_err(|_| bad())?);
        if raw.len() != 33 || raw[0] != ALG_ED25519 {
            return Err(bad());
        }
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&raw[1..]);
        let signer = NoteSigner::new(name, seed)?;
        seed.fill(0);
        if crate::hex::encode(&signer.hash) != hash {
            return Err(bad());
        }
        Ok(signer)
    }

    /// The verifier key to give to verifiers: `<name>+<hash hex>+<base64(0x01 ‖ public)>`.
    #[must_use]
    pub fn verifier_key(&self) -> String {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(self.key.verifying_key().as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            crate::hex::encode(&self.hash),
            B64.encode(raw)
        )
    }

    /// Signs `text` (which must end with a newline) and returns the signed note.
    ///
    /// # Errors
    /// [`AuditError::InvalidCheckpoint`] if `text` does not end with a newline or contains a
    /// blank line.
    pub fn sign(&self, text: &str) -> Result<String, AuditError> {
        if !text.ends_with('\n') || text.contains("\n\n") || text.starts_with('\n') {
            return Err(AuditError::InvalidCheckpoint(
                "note text must end with a newline and contain no blank line".into(),
            ));
        }
        let sig = self.key.sign(text.as_bytes());
        let mut blob = self.hash.to_vec();
        blob.extend_from_slice(&sig.to_bytes());
        Ok(format!(
            "{text}\n\u{2014} {} {}\n",
            self.name,
            B64.encode(blob)
        ))
    }

    /// Signs a checkpoint.
    #[must_use]
    pub fn sign_checkpoint(&self, checkpoint: &Checkpoint) -> SignedCheckpoint {
        let body = checkpoint.to_body();
        // A checkpoint body always ends with one newline and has no blank line.
        let note = self
            .sign(&body)
            .unwrap_or_else(|_| unreachable!("checkpoint bodies are valid note texts"));
        SignedCheckpoint {
            checkpoint: checkpoint.clone(),
            note,
        }
    }
}

/// Verifies notes signed by one Ed25519 key, given as a verifier key string.
#[derive(Clone, Debug)]
pub struct NoteVerifier {
    name: String,
    hash: [u8; 4],
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Parses a verifier key `<name>+<hash hex>+<base64(0x01 ‖ public key)>`.
    ///
    /// # Errors
    /// [`AuditError::InvalidKey`] if it is malformed or its hash does not match the key.
    pub fn new(vkey: &str) -> Result<Self, AuditError> {
        let bad = |m: &str| AuditError::InvalidKey(format!("verifier key: {m}"));
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(hash), Some(key), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected <name>+<hash>+<key>"));
        };
        check_name(name)?;
        let raw = B64.decode(key).map_err(|_| bad("key is not base64"))?;
        if raw.len() != 33 || raw[0] != ALG_ED25519 {
            return Err(bad("not an Ed25519 key"));
        }
        let mut public = [0u8; 32];
        public.copy_from_slice(&raw[1..]);
        let key = VerifyingKey::from_bytes(&public).map_err(|_| bad("invalid Ed25519 point"))?;
        let computed = key_hash(name, &public);
        if crate::hex::encode(&computed) != hash {
            return Err(bad("hash does not match name and key"));
        }
        Ok(NoteVerifier {
            name: name.to_owned(),
            hash: computed,
            key,
        })
    }

    /// The key's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks that `note` carries a valid signature by this key and returns the signed text.
    /// Signatures by other keys are ignored.
    ///
    /// # Errors
    /// [`AuditError::InvalidCheckpoint`] if the note is malformed, has no signature by this
    /// key, or the signature does not verify.
    pub fn open<'n>(&self, note: &'n str) -> Result<&'n str, AuditError> {
        let bad = |m: &str| Err(AuditError::InvalidCheckpoint(m.to_owned()));
        if note.len() > NOTE_LEN_MAX {
            return bad("note too long");
        }
        let Some(split) = note.rfind("\n\n") else {
            return bad("no blank line before the signatures");
        };
        let text = &note[..=split];
        let sigs = &note[split + 2..];
        if !sigs.ends_with('\n') {
            return bad("signature block must end with a newline");
        }
        let mut count = 0usize;
        let mut verified = false;
        for line in sigs[..sigs.len() - 1].split('\n') {
            count += 1;
            if count > SIGNATURES_MAX {
                return bad("too many signatures");
            }
            let Some(rest) = line.strip_prefix("\u{2014} ") else {
                return bad("signature line must start with an em dash");
            };
            let Some((name, blob)) = rest.split_once(' ') else {
                return bad("signature line needs a name and a signature");
            };
            let Ok(blob) = B64.decode(blob) else {
                return bad("signature is not base64");
            };
            if blob.len() < 4 {
                return bad("signature too short");
            }
            if name != self.name || blob[..4] != self.hash {
                continue; // someone else's signature (a witness, another log key)
            }
            let Ok(sig) = Signature::from_slice(&blob[4..]) else {
                return bad("signature has the wrong length");
            };
            if self.key.verify_strict(text.as_bytes(), &sig).is_err() {
                return bad("signature does not verify");
            }
            verified = true;
        }
        if verified {
            Ok(text)
        } else {
            bad("no signature by the expected key")
        }
    }

    /// Verifies a signed checkpoint note and that it names log `origin`.
    ///
    /// # Errors
    /// [`AuditError::InvalidCheckpoint`] on a bad signature, a malformed body or another
    /// origin.
    pub fn verify_checkpoint(&self, note: &str, origin: &str) -> Result<Checkpoint, AuditError> {
        let cp = Checkpoint::parse_body(self.open(note)?)?;
        if cp.origin != origin {
            return Err(AuditError::InvalidCheckpoint(format!(
                "checkpoint is for log {:?}, not {origin:?}",
                cp.origin
            )));
        }
        Ok(cp)
    }
}
