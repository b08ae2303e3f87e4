//! Whole compressed files: any bytes load as a model or fail with a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(model) = slimnn::store::from_bytes(data) {
        // A model that loads writes and loads again.
        let bytes = slimnn::store::to_bytes(&model).expect("a loaded model encodes");
        slimnn::store::from_bytes(&bytes).expect("and loads again");
    }
});
