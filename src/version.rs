//! The text `crossfade --version` prints after the package version: the commit the binary was
//! built from. Shared by the build script (`build.rs`, which asks git) and the tests.

/// The commit part of the version, in parentheses: `(74414d6)`, `(74414d6-dirty)` when the
/// sources that go into the binary differ from that commit (git's `describe --dirty` mark), or
/// `(unknown commit)` when the build had no git to ask (a source tarball, a Docker build without
/// `.git`) and no `CROSSFADE_COMMIT` was given.
pub fn commit_text(commit: Option<&str>, dirty: bool) -> String {
    match commit_id(commit, dirty) {
        None => "(unknown commit)".to_owned(),
        Some(id) => format!("({id})"),
    }
}

/// The commit as `/status` (`commit`) and `crossfade_build_info` (label `commit`) name it:
/// `74414d6`, `74414d6-dirty`, or `None` when unknown (see [`commit_text`]).
pub fn commit_id(commit: Option<&str>, dirty: bool) -> Option<String> {
    match commit.map(str::trim).filter(|c| !c.is_empty()) {
        None => None,
        Some(commit) if dirty => Some(format!("{commit}-dirty")),
        Some(commit) => Some(commit.to_owned()),
    }
}
