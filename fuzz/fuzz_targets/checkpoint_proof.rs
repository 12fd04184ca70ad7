//! Fuzz target `checkpoint_proof`: see `sim::fuzz::checkpoint_proof` for the properties checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(finding) = sim::fuzz::checkpoint_proof(data) {
        panic!("{finding}");
    }
});
