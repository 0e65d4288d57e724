//! The cargo-fuzz targets' checks (`fuzz/checks/*.rs`, the very files the targets include), compiled
//! into the unit tests: the normal test command replays every committed corpus input
//! (`fuzz/corpus/<target>`) through them on stable, in the debug profile (overflow checks and debug
//! assertions on, which the fuzz runs had off), and the property tests in `properties` reuse them.
//! The spec parser's target is replayed in crossfade-controller.

#[path = "../../fuzz/checks/admin_weights.rs"]
pub(crate) mod admin_weights;
#[path = "../../fuzz/checks/header_hygiene.rs"]
pub(crate) mod header_hygiene;
#[path = "../../fuzz/checks/replay.rs"]
mod replay;
#[path = "../../fuzz/checks/weighted_pick.rs"]
mod weighted_pick;

#[test]
fn every_committed_admin_weights_input_passes_the_targets_check() {
    replay::replay("admin_weights", admin_weights::check);
}

#[test]
fn every_committed_header_hygiene_input_passes_the_targets_check() {
    replay::replay("header_hygiene", header_hygiene::check);
}

#[test]
fn every_committed_weighted_pick_input_passes_the_targets_check() {
    replay::replay("weighted_pick", weighted_pick::check);
}
