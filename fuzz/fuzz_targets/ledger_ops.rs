//! Fuzz target `ledger_ops`: see `sim::fuzz::ledger_ops` for the properties checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(finding) = sim::fuzz::ledger_ops(data) {
        panic!("{finding}");
    }
});
