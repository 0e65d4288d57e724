//! Entry points for the cargo-fuzz targets in `fuzz/` (feature `fuzzing`, off by default; not a
//! stable API): crate-private parsers exposed with the signatures the targets need. Also compiled
//! in unit tests, where `fuzz_checks` replays the targets' committed corpora through the same
//! checks on stable.

use crate::weight::Weights;

/// The admin API's `PUT /routes/{route}/weights` body parser.
///
/// # Errors
/// The messages the admin API would answer with 400, joined by `; ` (the field names are
/// dropped).
pub fn admin_weights(body: &[u8]) -> Result<Weights, String> {
    crate::admin::weights::parse(body).map_err(|faults| {
        let messages: Vec<String> = faults.into_iter().map(|(message, _)| message).collect();
        messages.join("; ")
    })
}
