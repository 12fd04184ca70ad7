//! Every parser and verifier that takes untrusted input answers arbitrary input with a value
//! or a typed error, never a panic.

use audit_chain::merkle::MerkleFrontier;
use audit_chain::{Checkpoint, Keyring, LogHead, LogRecord, NoteSigner, NoteVerifier, SealedEntry};
use proptest::prelude::*;

const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn text_parsers_never_panic(s in "\\PC*", t in "[a-zA-Z0-9+/=\\n\\u{2014} .-]{0,300}") {
        let verifier = NoteVerifier::new(VKEY).unwrap();
        for input in [&s, &t] {
            let _ = verifier.open(input);
            let _ = verifier.verify_checkpoint(input, "o");
            let _ = Checkpoint::parse_body(input);
            let _ = NoteVerifier::new(input);
            let _ = NoteSigner::from_private_key(input);
            let _ = Keyring::from_key_file(input);
        }
    }

    #[test]
    fn binary_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = LogRecord::decode(&bytes);
        let _ = SealedEntry::decode(&bytes);
        let _ = LogHead::from_bytes(&bytes);
        let _ = MerkleFrontier::from_bytes(&bytes);
        let mut headed = b"ACHNHEAD".to_vec();
        headed.extend_from_slice(&bytes);
        let _ = LogHead::from_bytes(&headed);
    }
}
