//! The `crossfade` binary's global allocator (src/main.rs; docs/bench-2026-12-03c-mimalloc.md).
//! With the default feature `mimalloc` it is mimalloc, built with the compile-time option defaults
//! that `.cargo/config.toml` gives its C compile: the first arena committed on demand
//! (`arena_eager_commit` 0; mimalloc's own default, 2, commits it at once, 6-8 MiB more resident
//! from the start with transparent huge pages). With `MIMALLOC_VERBOSE=1` in its environment,
//! mimalloc prints its version and the options in effect on stderr as the process starts (an
//! environment that sets `MIMALLOC_ARENA_EAGER_COMMIT` itself overrides the default and fails the
//! test). Built with `--no-default-features`, the binary uses glibc's malloc, which prints nothing.

use std::time::Duration;

use crate::support::child::{run_to_end_with, Finished};

/// `crossfade --version` ends at once; generous for a loaded machine.
const LIMIT: Duration = Duration::from_secs(20);

/// `crossfade --version` with mimalloc's verbose output asked for.
async fn version_verbose() -> Finished {
    let out = run_to_end_with(["--version"], &[("MIMALLOC_VERBOSE", "1")], LIMIT).await;
    assert_eq!(
        out.code,
        Some(0),
        "crossfade --version failed: {}",
        out.stderr
    );
    out
}

#[cfg(feature = "mimalloc")]
#[tokio::test]
async fn the_binary_allocates_with_mimalloc_and_commits_its_arena_on_demand() {
    let out = version_verbose().await;
    assert!(
        out.stderr.contains("mimalloc: process init"),
        "mimalloc did not start (not the global allocator?): {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("option 'arena_eager_commit': 0 "),
        "mimalloc's arena_eager_commit is not 0: was the C source built without \
         .cargo/config.toml's -DMI_DEFAULT_ARENA_EAGER_COMMIT=0? {}",
        out.stderr
    );
}

#[cfg(not(feature = "mimalloc"))]
#[tokio::test]
async fn without_the_mimalloc_feature_the_binary_allocates_with_the_system_allocator() {
    let out = version_verbose().await;
    assert!(
        !out.stderr.contains("mimalloc"),
        "mimalloc is linked in although the feature is off: {}",
        out.stderr
    );
}
