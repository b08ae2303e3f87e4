//! One parameter record, past the checksums that would stop mutated whole files early.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = slimnn::store::decode_record_for_fuzzing(data);
});
