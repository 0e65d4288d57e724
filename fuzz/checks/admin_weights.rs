//! The `admin_weights` fuzz target's check, shared with the stable replay of its committed corpus
//! (`crossfade_proxy::fuzz_checks`) and the proxy's property tests, so the three can never drift:
//! the admin API's weights body (`PUT /routes/{route}/weights`) on any bytes never panics, and
//! anything accepted is a split the proxy can apply (each side at most 10000 bp, summing to 10000
//! or both 0, `Weights::check`). A refusal carries a message for the 400 answer.

use crossfade_proxy::fuzzing::admin_weights;

/// Parses `data` as a weights body and asserts the rules above; panics on a broken rule.
pub fn check(data: &[u8]) {
    match admin_weights(data) {
        Ok(weights) => {
            assert!(weights.check().is_ok(), "accepted {weights:?}");
        }
        Err(message) => assert!(!message.is_empty()),
    }
}
