//! Fuzz target `audit_decode`: see `sim::fuzz::audit_decode` for the properties checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(finding) = sim::fuzz::audit_decode(data) {
        panic!("{finding}");
    }
});
