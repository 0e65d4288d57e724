//! cargo-fuzz target `spec_parser`: `check::check` on every input libFuzzer makes. The check (its
//! rules and its input format) is `fuzz/checks/spec_parser.rs`, shared with the stable replay of
//! `fuzz/corpus/spec_parser` in the normal test command (docs/fuzzing.md).
#![no_main]

#[path = "../checks/spec_parser.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
