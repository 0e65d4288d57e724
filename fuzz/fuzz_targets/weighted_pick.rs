//! cargo-fuzz target `weighted_pick`: `check::check` on every input libFuzzer makes. The check (its
//! rules and its input format) is `fuzz/checks/weighted_pick.rs`, shared with the stable replay of
//! `fuzz/corpus/weighted_pick` in the normal test command (docs/fuzzing.md).
#![no_main]

#[path = "../checks/weighted_pick.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
