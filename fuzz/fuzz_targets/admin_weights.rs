//! The admin API's weights body (`PUT /routes/{route}/weights`) on any bytes: never panics, and
//! anything accepted is a split the proxy can apply (each side at most 10000 bp, summing to 10000 or
//! both 0).
#![no_main]

use crossfade_proxy::fuzzing::admin_weights;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match admin_weights(data) {
        Ok(weights) => {
            assert!(weights.check().is_ok(), "accepted {weights:?}");
        }
        Err(message) => assert!(!message.is_empty()),
    }
});
