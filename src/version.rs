//! The text `crossfade --version` prints after the package version: the commit the binary was
//! built from. Shared by the build script (`build.rs`, which asks git) and the tests.

/// The commit part of the version, in parentheses: `(74414d6)`, `(74414d6-dirty)` when the
/// sources that go into the binary differ from that commit (git's `describe --dirty` mark), or
/// `(unknown commit)` when the build had no git to ask (a source tarball, a Docker build without
/// `.git`) and no `CROSSFADE_COMMIT` was given.
pub fn commit_text(commit: Option<&str>, dirty: bool) -> String {
    match commit.map(str::trim).filter(|c| !c.is_empty()) {
        None => "(unknown commit)".to_owned(),
        Some(commit) if dirty => format!("({commit}-dirty)"),
        Some(commit) => format!("({commit})"),
    }
}
