//! Fuzz target `bayes`: see `sim::fuzz::bayes` for the properties checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(finding) = sim::fuzz::bayes(data) {
        panic!("{finding}");
    }
});
