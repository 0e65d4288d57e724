//! cargo-fuzz target `admin_weights`: `check::check` on every input libFuzzer makes. The check (its
//! rules and its input format) is `fuzz/checks/admin_weights.rs`, shared with the stable replay of
//! `fuzz/corpus/admin_weights` in the normal test command (docs/fuzzing.md).
#![no_main]

#[path = "../checks/admin_weights.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
