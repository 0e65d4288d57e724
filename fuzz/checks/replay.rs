//! Replays a fuzz target's committed corpus through its check on stable: the unit tests of
//! crossfade-proxy and crossfade-controller include this file and the targets' checks with `#[path]`,
//! so the normal test command (debug profile: overflow checks and debug assertions on) runs every
//! input libFuzzer kept through exactly the code the target runs.

use std::path::{Path, PathBuf};

/// Runs `check` on every file in `fuzz/corpus/<target>` (found from the including crate's manifest
/// directory, one level below the repository root).
///
/// Every input runs even after one fails (a panic is caught), so one run lists them all.
///
/// # Panics
/// When the corpus directory is missing or empty (it is committed), cannot be read, or any input
/// fails its check; the message names each failing file and how to replay it under libFuzzer.
pub fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (the corpus is committed)", dir.display()))
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    files.sort();
    assert!(!files.is_empty(), "{}: no corpus inputs", dir.display());
    let mut failed = Vec::new();
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            let name = file.file_name().unwrap_or_default().to_string_lossy();
            failed.push(format!("fuzz/corpus/{target}/{name}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} {target} corpus inputs fail the target's check (messages above); replay one with \
         `cargo +nightly fuzz run {target} <file>`:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}
