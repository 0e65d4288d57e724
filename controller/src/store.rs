//! The state file: the rollout's state as JSON, replaced atomically after every transition.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// The exclusive lock on a state file (see [`StateFile::lock`]); released when dropped or when the
/// process exits, however it exits, unless a copy of its descriptor was handed to another process
/// ([`StateFile::adopt_lock`]): an `flock(2)` lock belongs to the open file, which stays locked
/// while any process holds a descriptor of it.
#[derive(Debug)]
pub struct StateLock {
    file: File,
}

impl AsFd for StateLock {
    /// The locked lock file's descriptor, which a binary upgrade hands to the new process.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl StateLock {
    /// Writes this process's ID into the lock file (`<pid>\n`), so that a process refused the
    /// lock can name its holder ([`Error::StateLocked`]). At offset 0 whatever the file offset,
    /// which a handed-over descriptor shares with the process that handed it.
    fn sign(file: File) -> io::Result<StateLock> {
        file.set_len(0)?;
        file.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0)?;
        Ok(StateLock { file })
    }
}

/// A JSON state file written atomically: a reader (or a restart after a crash) sees either the
/// previous complete state or the new one, never a torn write.
///
/// Every save also writes the same document to a backup beside it (`<path>.bak`, see
/// [`StateFile::backup_path`]), so that a state file damaged afterwards (a disk error, an editor, a
/// truncation) still leaves the last known-good state to start from ([`StateFile::load_or_backup`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// A state file at `path`, or, when `path` is a symbolic link, at the file it names
    /// ([`real_path`]): the lock, the backup and every save are that file's, and the link stays a
    /// link. Nothing is written until [`save`](StateFile::save).
    pub fn new(path: impl Into<PathBuf>) -> StateFile {
        StateFile {
            path: real_path(&path.into()),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file with `state` as pretty JSON: writes a temporary file in the same
    /// directory, fsyncs it, renames it over the file, then fsyncs the directory so the rename
    /// itself survives a crash; then writes the backup ([`StateFile::backup_path`]) the same way.
    ///
    /// # Errors
    /// [`Error::StateEncode`] when `state` cannot be encoded, [`Error::StateIo`] when any file
    /// operation fails (the previous state is then left in place; a failed backup names the
    /// backup's path, the file itself is then already saved).
    pub fn save(&self, state: &impl Serialize) -> Result<()> {
        let mut json = serde_json::to_vec_pretty(state).map_err(|source| Error::StateEncode {
            path: self.path.clone(),
            source,
        })?;
        json.push(b'\n');
        // The file first: after a crash between the two, the file is one transition ahead of the
        // backup, never behind it.
        replace_synced(&self.path, &self.temp_path(), &json).map_err(|source| self.io(source))?;
        let backup = self.backup_path();
        replace_synced(&backup, &self.dir().join(temp_name(&backup)), &json).map_err(|source| {
            Error::StateIo {
                path: backup,
                source,
            }
        })
    }

    /// The backup every [`save`](StateFile::save) writes too: `<path>.bak`, the same JSON document.
    pub fn backup_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".bak");
        PathBuf::from(name)
    }

    /// Reads the state back like [`load`](StateFile::load); when the file is corrupt (not JSON of
    /// type `T`, truncated, empty), reads the backup instead. Changes nothing: what a start would
    /// begin from ([`load_or_backup`](StateFile::load_or_backup)), for `crossfade check`. Returns
    /// the state and, when it came from the backup, the file's [`Error::StateCorrupt`].
    ///
    /// # Errors
    /// [`Error::StateCorrupt`] for the file when the backup is missing or corrupt too;
    /// [`Error::StateIo`] when a file exists but cannot be read.
    pub fn read_or_backup<T: DeserializeOwned>(&self) -> Result<(Option<T>, Option<Error>)> {
        let corrupt = match self.load() {
            Err(e @ Error::StateCorrupt { .. }) => e,
            other => return other.map(|state| (state, None)),
        };
        let backup = StateFile {
            path: self.backup_path(),
        };
        match backup.load::<T>() {
            Ok(Some(state)) => Ok((Some(state), Some(corrupt))),
            Ok(None) | Err(Error::StateCorrupt { .. }) => Err(corrupt),
            Err(e) => Err(e),
        }
    }

    /// Reads the state back like [`read_or_backup`](StateFile::read_or_backup). When it came from
    /// the backup, the corrupt file is then renamed to `<path>.corrupt` (replacing an older one)
    /// for inspection, so the next save cannot overwrite the evidence, and the returned note says
    /// what happened and why.
    ///
    /// # Errors
    /// [`Error::StateCorrupt`] for the file when the backup is missing or corrupt too (nothing is
    /// renamed then: with no known-good state, the caller must refuse to guess); [`Error::StateIo`]
    /// when a file exists but cannot be read or the corrupt file cannot be renamed.
    pub fn load_or_backup<T: DeserializeOwned>(&self) -> Result<(Option<T>, Option<String>)> {
        let (state, corrupt) = self.read_or_backup()?;
        let Some(corrupt) = corrupt else {
            return Ok((state, None));
        };
        let mut aside = self.path.as_os_str().to_owned();
        aside.push(".corrupt");
        let aside = PathBuf::from(aside);
        fs::rename(&self.path, &aside).map_err(|source| self.io(source))?;
        let note = format!(
            "{corrupt}; started from its backup {} (the last state saved), the corrupt file is \
             kept as {}",
            self.backup_path().display(),
            aside.display()
        );
        Ok((state, Some(note)))
    }

    /// Takes the file's exclusive lock (an advisory `flock` on `<path>.lock`, into which the holder
    /// writes its process ID), held until the returned guard is dropped, so that two processes
    /// never share one state file: a second controller would take the first one's workloads for
    /// orphans of a crashed run and stop them; a second proxy would overwrite the first one's
    /// saved weights with its own.
    ///
    /// # Errors
    /// [`Error::StateLocked`] when another process holds the lock (naming its process ID when the
    /// lock file says it); [`Error::StateIo`] when the lock file cannot be created (e.g. its
    /// directory does not exist or is not writable).
    pub fn lock(&self) -> Result<StateLock> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(self.lock_path())
            .map_err(|e| {
                let lock = self.lock_path();
                self.io(io::Error::new(
                    e.kind(),
                    format!("its lock file {}: {e}", lock.display()),
                ))
            })?;
        match file.try_lock() {
            Ok(()) => StateLock::sign(file).map_err(|source| self.io(source)),
            Err(fs::TryLockError::WouldBlock) => Err(Error::StateLocked {
                path: self.path.clone(),
                holder: self.holder(),
            }),
            Err(fs::TryLockError::Error(source)) => Err(self.io(source)),
        }
    }

    /// Takes over `handed`, a descriptor of this file's lock file that the process holding the
    /// lock handed over (a binary upgrade's old process, see `crossfade proxy --upgrade-socket`):
    /// the lock stays held, without a moment free, while either process has the file open, so
    /// it outlives the old process. `Ok(None)` when `handed` is not this file's lock file (the
    /// new process's config names another `state_file`) or holds no lock on it; the caller then
    /// takes the lock as a fresh start does ([`StateFile::lock`]).
    ///
    /// # Errors
    /// [`Error::StateIo`] when the lock file cannot be read or written.
    pub fn adopt_lock(&self, handed: OwnedFd) -> Result<Option<StateLock>> {
        let file = File::from(handed);
        let same = match (file.metadata(), fs::metadata(self.lock_path())) {
            (Ok(handed), Ok(ours)) => handed.dev() == ours.dev() && handed.ino() == ours.ino(),
            _ => false,
        };
        if !same {
            return Ok(None);
        }
        // Succeeds on the open file that holds the lock (a lock is not in its own way), fails on
        // one that does not while another does.
        match file.try_lock() {
            Ok(()) => StateLock::sign(file)
                .map(Some)
                .map_err(|source| self.io(source)),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(source)) => Err(self.io(source)),
        }
    }

    /// Checks that a start could write this file, creating nothing that stays: its directory
    /// must let this process create files (the lock, each save's temporary file, the backup go
    /// there), which is tried by creating a file `.<name>.check-<pid>` there and removing it at
    /// once; no lock is taken. `crossfade check` said `ok` for a state file in a directory where
    /// no file can be made (`/proc/self/x`), and the start then refused it (trial 32, H).
    ///
    /// # Errors
    /// [`Error::StateIo`] naming the directory and why (`cannot create files in /proc/self: No
    /// such file or directory (os error 2)`).
    pub fn check_creatable(&self) -> Result<()> {
        let dir = self.dir();
        let mut name = std::ffi::OsString::from(".");
        name.push(self.path.file_name().unwrap_or_default());
        name.push(format!(".check-{}", std::process::id()));
        let probe = dir.join(name);
        let made = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe);
        match made {
            Ok(_) => {
                // Made by this call (`create_new`): removing it leaves the directory as it was.
                let _ = fs::remove_file(&probe);
                Ok(())
            }
            Err(e) => Err(self.io(io::Error::new(
                e.kind(),
                format!("cannot create files in {}: {e}", dir.display()),
            ))),
        }
    }

    /// Checks that a start could open the files it keeps beside this one: its lock file
    /// ([`StateFile::lock_path`]), its backup ([`StateFile::backup_path`]) and `more` (`(what,
    /// path)`, e.g. `crossfade run`'s child journal), each absent or a regular file (a symbolic
    /// link is followed). `crossfade check` said `ok` for a state file whose `.lock`, `.bak` or
    /// `.children` was a directory, which the start then refused (check33).
    ///
    /// # Errors
    /// [`Error::StateIo`] naming the file and what it is (`its lock file X.lock is not a regular
    /// file (it is a directory): a start cannot use it; move it away`), or
    /// why it cannot be looked at.
    pub fn check_companions(&self, more: &[(&str, PathBuf)]) -> Result<()> {
        let own = [
            ("its lock file", self.lock_path()),
            ("its backup", self.backup_path()),
        ];
        let every = own.iter().map(|(what, path)| (*what, path));
        let every = every.chain(more.iter().map(|(what, path)| (*what, path)));
        for (what, path) in every {
            let why = match fs::metadata(path) {
                Ok(meta) if meta.is_file() => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Ok(meta) => io::Error::other(format!(
                    "{what} {} is not a regular file (it is {}): a start cannot use it; move it away",
                    path.display(),
                    crossfade_proxy::files::kind_in_words(meta.file_type())
                )),
                Err(e) => io::Error::new(e.kind(), format!("{what} {}: {e}", path.display())),
            };
            return Err(self.io(why));
        }
        Ok(())
    }

    /// `<path>.lock`, the file [`StateFile::lock`] locks.
    pub fn lock_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// The process ID the lock file names, if it names one.
    fn holder(&self) -> Option<u32> {
        let text = fs::read_to_string(self.lock_path()).ok()?;
        text.trim().parse().ok()
    }

    /// Reads the state back.
    ///
    /// # Errors
    /// [`Error::StateCorrupt`] naming the file when it is not valid JSON of type `T` (a JSON array
    /// never is: state documents are objects);
    /// [`Error::StateIo`] when it exists but cannot be read. A missing file is `Ok(None)`.
    pub fn load<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        let bytes = match crossfade_proxy::files::read_bounded(
            &self.path,
            crossfade_proxy::files::MAX_STATE_BYTES,
        ) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(self.io(source)),
        };
        let corrupt = |source| Error::StateCorrupt {
            path: self.path.clone(),
            source,
        };
        // A state document is a JSON object; serde would read an array as a struct's fields in
        // order and complain about its length, which says nothing useful.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            let refused = "the document is a JSON array, not the JSON object a state document is";
            return Err(corrupt(<serde_json::Error as serde::de::Error>::custom(
                refused,
            )));
        }
        serde_json::from_slice(&bytes).map(Some).map_err(corrupt)
    }

    fn io(&self, source: io::Error) -> Error {
        Error::StateIo {
            path: self.path.clone(),
            source,
        }
    }

    /// The directory holding the file (`.` for a bare file name).
    fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }

    /// `.<name>.tmp` beside the file, so the rename never crosses file systems.
    fn temp_path(&self) -> PathBuf {
        self.dir().join(temp_name(&self.path))
    }
}

/// `path` with the symbolic links of its last component followed (a link to a link too, up to
/// 40 as the kernel's `ELOOP` limit), to the file they name, whether it exists yet or not (a
/// link created before the first save); a relative link target is taken from the link's
/// directory. The directories on the way are left as written: a lock, a rename and a journal
/// beside the file resolve them the same whichever name reaches them.
///
/// A process that writes a state file takes its lock, its backup and its child journal beside the
/// file this returns, not beside the link: else a run on the link and another on the file it
/// names would take two locks on one state, the second would stop the first one's workloads as a
/// killed run's leftovers, and the first save's rename would replace the link with a file of its
/// own (trial 24). A path whose link cannot be read is returned as it is (its open then fails
/// and names it).
pub fn real_path(path: &Path) -> PathBuf {
    // One function with the checks of a `state_file` before a start (`crossfade check`).
    crossfade_proxy::files::real_path(path)
}

/// `.<file name>.tmp`.
pub(crate) fn temp_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map_or_else(|| "state".into(), |n| n.to_string_lossy().into_owned());
    format!(".{name}.tmp")
}

/// Replaces `path` with `bytes` atomically: writes `tmp` (in the same directory), fsyncs it, renames
/// it over `path`, then fsyncs the directory so the rename itself survives a crash.
pub(crate) fn replace_synced(path: &Path, tmp: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let written = write_synced(tmp, bytes)
        .and_then(|()| fs::rename(tmp, path))
        .and_then(|()| sync_dir(dir));
    if written.is_err() {
        // Best effort: a leftover temp file is harmless but untidy.
        let _ = fs::remove_file(tmp);
    }
    written
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes a rename durable: on Linux a directory is synced by fsync on an fd opened read-only.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct State {
        phase: String,
        step: usize,
    }

    #[test]
    fn a_link_is_followed_to_the_file_it_names_and_saves_keep_it_a_link() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("state")).unwrap();
        let real = dir.path().join("state/state.json");
        // A relative link to a relative link, both dangling until the first save.
        std::os::unix::fs::symlink("state/state.json", dir.path().join("inner.json")).unwrap();
        std::os::unix::fs::symlink("inner.json", dir.path().join("outer.json")).unwrap();
        let file = StateFile::new(dir.path().join("outer.json"));
        assert_eq!(file.path(), real);
        assert_eq!(file.lock_path(), dir.path().join("state/state.json.lock"));
        let saved = State {
            phase: "Progressing".into(),
            step: 1,
        };
        file.save(&saved).unwrap();
        for link in ["inner.json", "outer.json"] {
            let meta = fs::symlink_metadata(dir.path().join(link)).unwrap();
            assert!(meta.file_type().is_symlink(), "{link} is no longer a link");
        }
        assert_eq!(StateFile::new(&real).load::<State>().unwrap(), Some(saved));
        assert!(dir.path().join("state/state.json.bak").is_file());
        // A path that is no link, or a link loop, is left as it is.
        assert_eq!(real_path(&real), real);
        let looped = dir.path().join("loop.json");
        std::os::unix::fs::symlink("loop.json", &looped).unwrap();
        assert_eq!(real_path(&looped), looped);
    }

    #[test]
    fn missing_file_loads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path().join("state.json"));
        assert_eq!(file.load::<State>().unwrap(), None);
    }

    #[test]
    fn saved_state_loads_back_and_replaces_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path().join("state.json"));
        file.save(&State {
            phase: "Progressing".into(),
            step: 1,
        })
        .unwrap();
        file.save(&State {
            phase: "Paused".into(),
            step: 2,
        })
        .unwrap();
        let loaded: State = file.load().unwrap().unwrap();
        assert_eq!(
            loaded,
            State {
                phase: "Paused".into(),
                step: 2
            }
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        let mut names: Vec<_> = names
            .iter()
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["state.json", "state.json.bak"],
            "no temp file left behind"
        );
        let backup: State = StateFile::new(file.backup_path()).load().unwrap().unwrap();
        assert_eq!(backup, loaded, "the backup holds the same state");
    }

    #[test]
    fn corrupt_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, "{ not json").unwrap();
        let err = StateFile::new(&path).load::<State>().unwrap_err();
        assert!(matches!(err, Error::StateCorrupt { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("state file {} is corrupt: ", path.display())),
            "{text}"
        );
    }

    /// A saved state, then the file damaged in each way a disk or an editor does.
    #[test]
    fn a_corrupt_or_truncated_file_loads_its_backup_and_is_kept_aside() {
        let state = State {
            phase: "Progressing".into(),
            step: 1,
        };
        let full = serde_json::to_vec_pretty(&state).unwrap();
        let damages: [&[u8]; 4] = [b"{ not json", &full[..full.len() / 2], b"", b"\xff\xfe\x00"];
        for damage in damages {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("state.json");
            let file = StateFile::new(&path);
            file.save(&state).unwrap();
            fs::write(&path, damage).unwrap();
            let (loaded, note) = file.load_or_backup::<State>().unwrap();
            assert_eq!(loaded.as_ref(), Some(&state), "{damage:?}");
            let note = note.expect("a note");
            assert!(
                note.starts_with(&format!("state file {} is corrupt: ", path.display()))
                    && note.contains("started from its backup"),
                "{note}"
            );
            assert_eq!(
                fs::read(dir.path().join("state.json.corrupt")).unwrap(),
                damage
            );
            assert!(!path.exists(), "the corrupt file is moved aside");
        }
    }

    #[test]
    fn a_corrupt_file_without_a_good_backup_is_an_error_and_nothing_is_moved() {
        for backup in [None, Some(&b"{"[..])] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("state.json");
            fs::write(&path, "{ not json").unwrap();
            if let Some(bytes) = backup {
                fs::write(dir.path().join("state.json.bak"), bytes).unwrap();
            }
            let err = StateFile::new(&path).load_or_backup::<State>().unwrap_err();
            assert!(matches!(err, Error::StateCorrupt { .. }), "{err:?}");
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{err}"
            );
            assert!(path.exists(), "left in place");
        }
    }

    #[test]
    fn an_intact_or_missing_file_ignores_the_backup() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path().join("state.json"));
        fs::write(file.backup_path(), "{ not json").unwrap();
        assert_eq!(file.load_or_backup::<State>().unwrap(), (None, None));
        let state = State {
            phase: "Paused".into(),
            step: 2,
        };
        file.save(&state).unwrap();
        assert_eq!(file.load_or_backup::<State>().unwrap(), (Some(state), None));
    }

    #[test]
    fn save_into_a_missing_directory_fails_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent").join("state.json");
        let err = StateFile::new(&path)
            .save(&State {
                phase: "Pending".into(),
                step: 0,
            })
            .unwrap_err();
        assert!(matches!(err, Error::StateIo { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
}
