//! `crossfade proxy --pid-file PATH`: the ID of the process serving, in a file that stays true over
//! a binary upgrade (SIGUSR2), for service managers (systemd's `PIDFile=`) and operators' scripts.
//!
//! The file is written once the process serves, atomically (a temporary file in the same
//! directory, renamed over PATH, so a reader never sees it empty or half written). A successor
//! rewrites it with its own ID as soon as it serves the inherited sockets, before it tells the old
//! process to drain, so the file names the new process before the old one exits: systemd re-reads
//! `PIDFile=` when the main process exits and follows the new ID. On exit a process removes the
//! file only if it still holds its own ID, never a successor's.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// A checked `--pid-file` path, bound to this process's ID.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    pid: u32,
}

// === impl PidFile ===

impl PidFile {
    /// Checks `path` before anything is bound: its directory must exist and be a directory, and
    /// `path` itself must not be a directory, nor anything but a pid file ([`not_a_pid_file`]).
    ///
    /// # Errors
    /// `--pid-file PATH: directory DIR does not exist` (or `is not a directory`, or the OS
    /// error), or `--pid-file PATH: is a directory` (or `names a directory`, for a path ending
    /// with `/`, which failed only at the write, once serving), or `--pid-file PATH: a file of N
    /// bytes is there, not a process ID; refusing to replace it ...` (or `a device`, `a FIFO`...).
    /// Each is a [`crate::flags::Usage`] error (exit 2: the flag's value is wrong by itself, as
    /// `report -o spec.yaml` is; user44b, session 44), except a directory that cannot be looked
    /// at (the OS error, e.g. permission denied), a failure while running (exit 1).
    pub fn check(path: &Path) -> anyhow::Result<PidFile> {
        use crate::flags::usage;
        if crossfade_proxy::files::names_a_directory(path) {
            return Err(usage(format!(
                "--pid-file {}: names a directory, not a file (e.g. /run/crossfade/proxy.pid)",
                path.display()
            )));
        }
        let dir = directory_of(path);
        // A missing directory or a file in its place is the flag's mistake (exit 2); an OS error
        // while looking (no permission) is a failure while running (exit 1).
        let problem = match std::fs::metadata(&dir) {
            Ok(meta) if meta.is_dir() => None,
            Ok(_) => Some((true, "is not a directory".to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Some((true, "does not exist".to_owned()))
            }
            Err(e) => Some((false, format!("cannot be read: {e}"))),
        };
        if let Some((flag_mistake, problem)) = problem {
            let message = format!(
                "--pid-file {}: directory {} {problem}",
                path.display(),
                dir.display()
            );
            return Err(if flag_mistake {
                usage(message)
            } else {
                anyhow::anyhow!(message)
            });
        }
        if path.is_dir() {
            return Err(usage(format!(
                "--pid-file {}: is a directory",
                path.display()
            )));
        }
        if let Some(held) = not_a_pid_file(path) {
            return Err(usage(format!(
                "--pid-file {}: {held} is there, not a process ID; refusing to replace it (name \
                 a path of its own, e.g. /run/crossfade/proxy.pid)",
                path.display()
            )));
        }
        Ok(PidFile {
            path: path.to_path_buf(),
            pid: std::process::id(),
        })
    }

    /// Writes this process's ID and a newline to the file, atomically.
    ///
    /// # Errors
    /// `--pid-file PATH: cannot write ...` with the OS error (no space, no permission).
    pub fn write(&self) -> anyhow::Result<()> {
        let name = self.path.file_name().unwrap_or_default().to_string_lossy();
        let temporary = directory_of(&self.path).join(format!(".{name}.{}.tmp", self.pid));
        let written = std::fs::write(&temporary, format!("{}\n", self.pid))
            .and_then(|()| std::fs::rename(&temporary, &self.path));
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written.with_context(|| {
            format!(
                "--pid-file {}: cannot write the process ID {}",
                self.path.display(),
                self.pid
            )
        })
    }

    /// Removes the file if it holds this process's ID; a successor's ID (or another's) is left.
    pub fn remove_if_mine(&self) {
        let held = std::fs::read_to_string(&self.path).ok();
        if held.as_deref().map(str::trim) == Some(self.pid.to_string().as_str()) {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!("--pid-file {}: cannot remove it: {e}", self.path.display());
            }
        }
    }
}

/// What is at `path` when it is something a pid file must not replace: a file that is not empty
/// and holds anything but a process ID (the config itself, a TLS key, a log), or no regular file
/// at all (a device such as `/dev/null`, a FIFO, a socket), which the rename would replace for
/// every other user of it. `None` when nothing is there (or it cannot be looked at: the write
/// then says why), or a pid file is: empty, or one process ID and a newline, a previous run's.
///
/// Trial 29: `--pid-file proxy.yaml` replaced the config with the process ID, and the exit
/// removed it.
fn not_a_pid_file(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let kind = meta.file_type();
    if !kind.is_file() {
        return Some(crossfade_proxy::files::kind_in_words(kind).to_owned());
    }
    let holds = || Some(format!("a file of {} bytes", meta.len()));
    // A process ID and a newline: Linux's pid_max is at most 2^22, 7 digits.
    if meta.len() > 64 {
        return holds();
    }
    let text = crossfade_proxy::files::read_bounded(path, 64).ok()?;
    let text = String::from_utf8_lossy(&text);
    let pid = text.trim();
    if pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    holds()
}

/// The directory `path` is in (`.` for a bare file name).
fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_holds_this_pid_and_is_removed_only_while_it_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.pid");
        let file = PidFile::check(&path).expect("a file in an existing directory");
        file.write().expect("written");
        let pid = std::process::id();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{pid}\n"));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left: {names:?}");
        // A successor's ID is not this process's to remove.
        std::fs::write(&path, format!("{}\n", pid + 1)).unwrap();
        file.remove_if_mine();
        assert!(path.exists());
        file.write().expect("written again");
        file.remove_if_mine();
        assert!(!path.exists());
    }

    #[test]
    fn a_missing_directory_or_a_directory_is_refused_naming_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nodir").join("proxy.pid");
        let error = PidFile::check(&missing).unwrap_err().to_string();
        let expected = format!(
            "--pid-file {}: directory {} does not exist",
            missing.display(),
            dir.path().join("nodir").display()
        );
        assert_eq!(error, expected);
        // The flag's mistake: exit 2 (user44b, session 44).
        assert!(crate::flags::is_usage(
            &PidFile::check(&missing).unwrap_err()
        ));
        let error = PidFile::check(dir.path()).unwrap_err().to_string();
        assert_eq!(
            error,
            format!("--pid-file {}: is a directory", dir.path().display())
        );
    }
}
