//! cargo-fuzz target `header_hygiene`: `check::check` on every input libFuzzer makes. The check
//! (its rules and its input format) is `fuzz/checks/header_hygiene.rs`, shared with the stable
//! replay of `fuzz/corpus/header_hygiene` in the normal test command (docs/fuzzing.md).
#![no_main]

#[path = "../checks/header_hygiene.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
