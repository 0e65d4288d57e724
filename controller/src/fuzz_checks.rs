//! The `spec_parser` fuzz target's check (`fuzz/checks/spec_parser.rs`, the very file the target
//! includes), compiled into the unit tests: the normal test command replays every committed corpus
//! input (`fuzz/corpus/spec_parser`) through it on stable, in the debug profile (overflow checks and
//! debug assertions on, which the fuzz runs had off), and the spec's property tests reuse it. The
//! proxy's targets are replayed in crossfade-proxy.

#[path = "../../fuzz/checks/replay.rs"]
mod replay;
#[path = "../../fuzz/checks/spec_parser.rs"]
pub(crate) mod spec_parser;

#[test]
fn every_committed_spec_parser_input_passes_the_targets_check() {
    replay::replay("spec_parser", spec_parser::check);
}
