//! The files a proxy config names, each in its role, and the rule that a file the proxy writes
//! (the access log, the state file with its backup and lock) is none of the other files it names:
//! not the config file itself, not a TLS certificate or key, not another file it writes.
//!
//! Trial 29: `access_log: proxy.yaml` (or the TLS key's file) passed `crossfade check` and the
//! start, and each request appended its JSON line to the config, so the next SIGHUP and the next
//! start failed to parse it; `state_file` naming the access log's file was refused as a corrupt
//! state file, with the advice to remove it.

use std::path::{Path, PathBuf};

use super::{AccessLogConfig, Problem, ProxyConfig};

/// A file that the caller of [`super::ProxyConfig::check_files_among`] (`crossfade run`) names
/// beside the config's own, so that no file the proxy writes is it: a workload's program, the
/// child journal of a run's state file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtherFile {
    /// Its field, or what it is, as a clash names it: `blue.command`, `state_file's child journal`.
    pub field: String,
    /// Its path (a relative one is taken from the working directory).
    pub path: PathBuf,
    /// What is done to it, in words (`records every process it starts in it`), for a file that is
    /// written; `None` for a file that is only read.
    pub writes: Option<&'static str>,
}

/// Whose files are checked, for the words of a clash: a `crossfade proxy` config's, or a
/// `crossfade run` spec's (whose proxy takes the spec's fields, while the spec file, the state
/// file and its child journal are `run`'s: user37, a spec's clash named "the proxy config file"
/// and a state file "replaced with the weights").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilesOf {
    /// `crossfade proxy CONFIG` (and `--kube --config FILE`).
    Proxy,
    /// `crossfade run SPEC`.
    Run,
}

impl FilesOf {
    /// What the config file is called.
    fn config_file(self) -> &'static str {
        match self {
            FilesOf::Proxy => "the proxy config file",
            FilesOf::Run => "the spec file",
        }
    }

    /// Who writes the state file (its backup, its lock) and the caller's other files.
    fn state_writer(self) -> &'static str {
        match self {
            FilesOf::Proxy => "the proxy",
            FilesOf::Run => "crossfade run",
        }
    }

    /// What a save does to the state file.
    fn state_writes(self) -> &'static str {
        match self {
            FilesOf::Proxy => "replaces it with the weights at every change of the routes",
            FilesOf::Run => "replaces it with the rollout's state at every transition",
        }
    }
}

/// A file the config names: its field (or what it is) and its path.
struct Named {
    field: String,
    path: PathBuf,
    /// What is done to it, for a file that is written; `None` for a file that is only read.
    writes: Option<&'static str>,
    /// Who writes it (`the proxy`, `crossfade run`), for a file that is written.
    by: &'static str,
    /// Whether it is the config file itself.
    config: bool,
}

/// Every file the proxy would write that is also another file the config names (or the config
/// file `config_file` itself, or one of `others`), named on the written file's field:
/// `access_log: PATH is also tls.key: ...`. Paths are compared as the files they reach: through
/// symbolic links, and as one inode when both exist (a hard link). Each pair is told once. A
/// `state_file` that is the config file itself is left to the state file's own check, which says
/// what the file holds.
pub(super) fn clashes(
    config: &ProxyConfig,
    config_file: Option<&Path>,
    others: &[OtherFile],
    whose: FilesOf,
) -> Vec<Problem> {
    let mut named = named_files(config, config_file, whose);
    named.extend(others.iter().map(|other| Named {
        field: other.field.clone(),
        path: other.path.clone(),
        writes: other.writes,
        by: whose.state_writer(),
        config: false,
    }));
    let mut problems = Vec::new();
    for (i, written) in named.iter().enumerate() {
        if written.writes.is_none() {
            continue;
        }
        for (j, other) in named.iter().enumerate() {
            let told = other.writes.is_some() && j < i;
            if i == j || told || is_state_of_config(written, other) {
                continue;
            }
            if same_file(&written.path, &other.path) {
                problems.push(clash(written, other));
            }
        }
    }
    problems
}

/// What is wrong with `path`, a file the proxy writes outside its config (`flag`, such as
/// `--pid-file`, into which it `writes`), when it is also a file the config names or the config
/// file `config_file` itself: one message per such file, naming `flag` and the other file.
pub(super) fn flag_clashes(
    config: &ProxyConfig,
    config_file: Option<&Path>,
    (flag, path, writes): (&str, &Path, &'static str),
) -> Vec<String> {
    let written = Named {
        field: flag.to_owned(),
        path: path.to_path_buf(),
        writes: Some(writes),
        by: "the proxy",
        config: false,
    };
    named_files(config, config_file, FilesOf::Proxy)
        .iter()
        .filter(|other| same_file(path, &other.path))
        .map(|other| clash(&written, other).to_string())
        .collect()
}

/// The problem for `written` (a file written: by the proxy, or by `crossfade run`) reaching the
/// same file as `other`.
fn clash(written: &Named, other: &Named) -> Problem {
    let (by, writes) = (written.by, written.writes.unwrap_or_default());
    let field = written.field.split('\'').next().unwrap_or_default();
    let also = if other.path == written.path {
        other.field.clone()
    } else {
        format!("{} {}", other.field, other.path.display())
    };
    Problem::new(
        field,
        format!(
            "{} is also {also}: {by} {writes}, which would destroy what it holds; give {field} a \
             file of its own",
            written.path.display()
        ),
    )
}

/// A state file (not its backup or lock) that is the config file: the start's reading of the
/// state file (the `crossfade` CLI's) refuses it saying what the file holds, a proxy config.
fn is_state_of_config(written: &Named, other: &Named) -> bool {
    written.field == "state_file" && other.config
}

/// The files of `config` (and the config file itself, first), in field order, in the words of
/// `whose` files they are.
fn named_files(config: &ProxyConfig, config_file: Option<&Path>, whose: FilesOf) -> Vec<Named> {
    let read = |field: String, path: &Path| Named {
        field,
        path: path.to_path_buf(),
        writes: None,
        by: "",
        config: false,
    };
    let mut named = Vec::new();
    if let Some(path) = config_file {
        named.push(Named {
            config: true,
            ..read(whose.config_file().to_owned(), path)
        });
    }
    if let Some(tls) = &config.tls {
        named.push(read("tls.cert".to_owned(), &tls.cert));
        named.push(read("tls.key".to_owned(), &tls.key));
        for (i, pair) in tls.sni.iter().enumerate() {
            named.push(read(format!("tls.sni[{i}].cert"), &pair.cert));
            named.push(read(format!("tls.sni[{i}].key"), &pair.key));
        }
    }
    if let AccessLogConfig::File(path) = &config.access_log {
        named.push(Named {
            field: "access_log".to_owned(),
            path: path.clone(),
            writes: Some("appends a JSON line per request to it"),
            by: "the proxy",
            config: false,
        });
    }
    if let Some(path) = config
        .state_file
        .as_deref()
        .filter(|p| !p.as_os_str().is_empty())
    {
        named.extend(state_files(path, whose));
    }
    named
}

/// The state file at `path` and the files beside it that its saves write
/// (`crossfade_controller::store`): `PATH.bak`, `PATH.lock` and the temporary files `.NAME.tmp`
/// and `.NAME.bak.tmp` that each save renames into place, taken beside the file the link `path`
/// may be, as the saves take them.
fn state_files(path: &Path, whose: FilesOf) -> [Named; 5] {
    let real = crate::files::real_path(path);
    let beside = |suffix: &str| {
        let mut name = real.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    let written = |field: &str, path: PathBuf, writes: &'static str| Named {
        field: field.to_owned(),
        path,
        writes: Some(writes),
        by: whose.state_writer(),
        config: false,
    };
    // Each save writes its file first as `.<name>.tmp` beside it and renames that over it
    // (`crossfade_controller::store`): an access log there would be truncated into the state
    // file by the next save and then append to it (user37).
    let temporary = |name: &Path| {
        let file = name.file_name().unwrap_or_default().to_string_lossy();
        name.with_file_name(format!(".{file}.tmp"))
    };
    let backup = match whose {
        FilesOf::Proxy => "replaces it with the state file's backup at every change of the routes",
        FilesOf::Run => "replaces it with the state file's backup at every transition",
    };
    [
        written("state_file", path.to_path_buf(), whose.state_writes()),
        written("state_file's backup", beside(".bak"), backup),
        written(
            "state_file's lock",
            beside(".lock"),
            "writes its process ID into it, as the state file's lock",
        ),
        written(
            "state_file's temporary file",
            temporary(&real),
            "writes each save into it, then renames it over the state file",
        ),
        written(
            "state_file's backup's temporary file",
            temporary(&beside(".bak")),
            "writes each backup into it, then renames it over the backup",
        ),
    ]
}

/// Whether `a` and `b` reach the same file: one inode when both exist, else the same path once
/// symbolic links are followed and the directory is made canonical.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    if let (Ok(a), Ok(b)) = (std::fs::metadata(a), std::fs::metadata(b)) {
        return a.dev() == b.dev() && a.ino() == b.ino();
    }
    canonical(a) == canonical(b)
}

/// `path` through its links, with its directory canonical when that exists (`..`, links on
/// the way), else as written.
fn canonical(path: &Path) -> PathBuf {
    let real = crate::files::real_path(path);
    let dir = real.parent().and_then(|dir| dir.canonicalize().ok());
    match (dir, real.file_name()) {
        (Some(dir), Some(name)) => dir.join(name),
        _ => real,
    }
}
