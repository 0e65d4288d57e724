//! Build script of the `crossfade` binary: names the commit it is built from, for `crossfade
//! --version` (`crossfade 0.1.0 (74414d6)`), in the environment variable `CROSSFADE_VERSION`,
//! and alone (`74414d6`, `74414d6-dirty`, or `unknown`) in `CROSSFADE_BUILD_COMMIT`, for the
//! `commit` of `GET /status` and of `crossfade_build_info`.
//!
//! - The commit comes from `CROSSFADE_COMMIT` when it is set and not empty (a build from a source
//!   tarball or a Docker context without `.git` that knows its commit), else from
//!   `git rev-parse --short=7 HEAD`, run locally (no network) in this package's directory, and only
//!   when that directory is the top of its git work tree (a tarball unpacked inside some other
//!   repository must not take that repository's commit).
//! - Without either, the build still succeeds and says so: `(unknown commit)`.
//! - A work tree whose tracked sources of the binary (`Cargo.toml`, `Cargo.lock`, `build.rs`,
//!   `src`, `proxy`, `controller`, `vendor`) differ from the commit is marked `-dirty`.
//! - Cargo runs this again when `HEAD`, the branch it points to, `packed-refs`, the index or those
//!   sources change, so that the text stays right across commits, checkouts and edits.
//!
//! It also compiles `src/closed_stdout.c` (the constructor that marks a stdout closed at start,
//! `src/closed_stdout.rs`) and links its object into the binary.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "src/version.rs"]
mod version;

/// The files and directories whose tracked contents make the binary.
const SOURCES: [&str; 7] = [
    "Cargo.toml",
    "Cargo.lock",
    "build.rs",
    "src",
    "proxy",
    "controller",
    "vendor",
];

fn main() {
    closed_stdout();
    println!("cargo::rerun-if-env-changed=CROSSFADE_COMMIT");
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let package = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let given = std::env::var("CROSSFADE_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty());
    let (commit, dirty) = match given {
        Some(commit) => (Some(commit), false),
        None => from_git(&dir),
    };
    let text = version::commit_text(commit.as_deref(), dirty);
    let id = version::commit_id(commit.as_deref(), dirty);
    println!("cargo::rustc-env=CROSSFADE_VERSION={package} {text}");
    println!(
        "cargo::rustc-env=CROSSFADE_BUILD_COMMIT={}",
        id.as_deref().unwrap_or("unknown")
    );
}

/// Compiles `src/closed_stdout.c` and links its object into the binaries, as an object rather
/// than a library: nothing calls its constructor, so a linker would leave it out of an archive.
fn closed_stdout() {
    println!("cargo::rerun-if-changed=src/closed_stdout.c");
    let objects = cc::Build::new()
        .file("src/closed_stdout.c")
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .compile_intermediates();
    for object in objects {
        println!("cargo::rustc-link-arg-bins={}", object.display());
    }
}

/// The short commit of `HEAD` and whether the binary's sources differ from it; `(None, false)`
/// when git is missing or `dir` is not the top of a work tree. Tells Cargo what to watch.
fn from_git(dir: &Path) -> (Option<String>, bool) {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let top = git(&["rev-parse", "--show-toplevel"]).map(PathBuf::from);
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !top.is_some_and(|top| same(&top, dir)) {
        return (None, false);
    }
    // What moves HEAD: HEAD itself (a checkout), the branch it names (a commit), packed-refs (the
    // branch packed by gc); and the index (a `git add`, a commit) with the sources (an edit) for
    // the dirty mark. Only paths that exist: Cargo runs a build script whose watched file is
    // missing every time.
    let mut watched: Vec<PathBuf> = Vec::new();
    let mut git_path = |name: &str| {
        if let Some(path) = git(&["rev-parse", "--git-path", name]) {
            watched.push(dir.join(path));
        }
    };
    git_path("HEAD");
    git_path("packed-refs");
    git_path("index");
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        git_path(&branch);
    }
    watched.extend(SOURCES.iter().map(|s| dir.join(s)));
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo::rerun-if-changed={}", path.display());
    }
    let Some(commit) = git(&["rev-parse", "--short=7", "HEAD"]) else {
        return (None, false);
    };
    // --no-optional-locks: no index refresh written back, else the index would change under
    // every run and Cargo would run this again at every build.
    let mut status = vec![
        "--no-optional-locks",
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
    ];
    status.extend(SOURCES);
    let dirty = git(&status).is_some_and(|out| !out.is_empty());
    (Some(commit), dirty)
}
