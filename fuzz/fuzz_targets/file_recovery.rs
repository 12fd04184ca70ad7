//! Fuzz target `file_recovery`: see `sim::fuzz::file_recovery` for the properties checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(finding) = sim::fuzz::file_recovery(data) {
        panic!("{finding}");
    }
});
