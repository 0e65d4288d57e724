//! The child journal: every process the local driver starts is recorded durably *before* it is
//! spawned, so that a `crossfade run` killed at any moment (SIGKILL, a crash, a power cut) leaves
//! nothing its restart does not know about.
//!
//! The journal is a JSON file beside the state file, `<state_file>.children` ([`ChildJournal::path_for`]),
//! or, for a run without a state file, in the runtime directory, named by the proxy's listen
//! address ([`ChildJournal::runtime_path`]); replaced atomically like the state file (write a
//! temporary file, fsync, rename, fsync the directory). The state file's own pids (`active_pids`, `rollout.preview_pids`) are written with
//! the service's transitions, so a preview's appear only once it is ready; the journal covers
//! every spawn from the first instant, blue's at start, a preview's while it provisions and every
//! restart of a supervised instance.
//!
//! How a spawn is recorded (the window between `fork` and the write is the point):
//! 1. an *intent* entry with a fresh token ([`TOKEN_VAR`]`=<token>`, unique per spawn) is written
//!    and synced first; if that write fails, nothing is spawned;
//! 2. the process is spawned in its own process group with the token in its environment;
//! 3. its pid and start time (`/proc/<pid>/stat` field 22, clock ticks since boot) are added to
//!    the entry;
//! 4. when the process has exited and its process group is empty, the entry is dropped.
//!
//! A crash between 1 and 3 leaves an entry without a pid: recovery ([`stop_leftovers`]) finds the
//! process by the token in `/proc/<pid>/environ`, which no unrelated process carries. A process is
//! stopped only when it is proven ours: its environment holds a recorded token, or its pid and
//! start time both match an entry (a recycled pid has another start time). Its process group is
//! killed only when that proven process leads it (our children are group leaders), so an
//! unrelated group is never signalled.
//!
//! Not chosen: `PR_SET_PDEATHSIG`. It fires when the *thread* that forked the child exits (tokio's
//! blocking-pool threads come and go), reaches only the direct child (not what it forks), and would
//! stop a serving workload the instant its controller dies, where the documented behaviour is that
//! the restart stops it. The journal works for every way of dying, including a power cut that
//! leaves nothing running at all.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// The environment variable that carries a spawn's token into the workload's process (and what it
/// forks): `CROSSFADE_CHILD=<controller pid>-<nanoseconds>-<counter>`.
pub const TOKEN_VAR: &str = "CROSSFADE_CHILD";

/// One process the local driver started (or was about to start).
///
/// Fields this version does not know are ignored when a journal is read (no
/// `deny_unknown_fields`): a later crossfade that only adds fields keeps [`VERSION`], so that this
/// one, started after a downgrade, still reads its journal and stops or adopts what it names. A
/// change an older reader would misread must raise [`VERSION`] instead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildEntry {
    /// The spawn's token, also in the process's environment as [`TOKEN_VAR`].
    pub token: String,
    /// The workload's name (`v2`, `green`).
    pub workload: String,
    /// The instance (0-based).
    pub instance: usize,
    /// The command as written in the spec.
    pub command: String,
    /// The process id (also its process group id); `None` while only the intent is recorded.
    #[serde(default)]
    pub pid: Option<u32>,
    /// The process's start time, clock ticks since boot (`/proc/<pid>/stat` field 22); `None`
    /// when it could not be read.
    #[serde(default)]
    pub started_ticks: Option<u64>,
    /// The port the instance listens on (its `{port}`); `None` in journals written before it was
    /// recorded, whose processes are never adopted ([`adoptable_each`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// For a supervised restart: the pid of the process it replaces (0 for an instance that had
    /// no process when this run took it over). With the state file's pid for the instance it
    /// proves the process to be that instance's next one, so a start after a crash adopts it
    /// although the run died before saving its pid ([`adoptable_each`]). `None` for a first
    /// start, and in journals written before session 38.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<u32>,
}

/// The journal file's JSON document: `{"version": 1, "children": [ChildEntry, ...]}`; unknown
/// fields are ignored, as in [`ChildEntry`].
#[derive(Debug, Default, Serialize, Deserialize)]
struct Document {
    version: u32,
    children: Vec<ChildEntry>,
}

/// The journal's format version.
const VERSION: u32 = 1;

/// Why [`ChildJournal::read`] could not read a journal; each message names the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalError {
    /// The file could not be read (not a regular file, permissions, too large): it is left where
    /// it is, and writing the new journal there fails the same way (the start is refused).
    Io(String),
    /// The bytes are no journal document this version reads (torn, edited, another `version`):
    /// the file is kept aside for inspection.
    Content(String),
}

impl std::fmt::Display for JournalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JournalError::Io(message) | JournalError::Content(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for JournalError {}

/// The child journal of one `crossfade run` (module docs). Shared by every spawn of its driver.
#[derive(Debug)]
pub struct ChildJournal {
    path: PathBuf,
    entries: Mutex<Vec<ChildEntry>>,
    /// `<controller pid>-<start nanoseconds>`: with [`ChildJournal::counter`], unique per spawn.
    prefix: String,
    counter: AtomicU64,
}

impl ChildJournal {
    /// The journal of the state file `state_file`: `<state_file>.children`.
    pub fn path_for(state_file: &Path) -> PathBuf {
        let mut name = state_file.as_os_str().to_owned();
        name.push(".children");
        PathBuf::from(name)
    }

    /// The journal of a `crossfade run` without `state_file`, keyed by the address its proxy
    /// listens on: `$XDG_RUNTIME_DIR/crossfade/run-<ip>-<port>.children` (the XDG Base Directory
    /// Specification's runtime directory: per user, mode 0700), or
    /// `<temp dir>/crossfade-<uid>/run-<ip>-<port>.children` without `XDG_RUNTIME_DIR` (as under
    /// a system service's own user) or with a relative one, which the specification says to
    /// ignore. Only the process bound to `listen` uses
    /// it, so two runs never share one: a journal found there is a dead run's (the same spec's or
    /// not), whose leftovers the start stops. The directory is created mode 0700 when missing.
    ///
    /// # Errors
    /// Naming the directory: it cannot be created or read, is not a directory (a symbolic link
    /// included), belongs to another user, or is open to other users (group or other permission
    /// bits), so that its files could be planted or read by them.
    pub fn runtime_path(listen: std::net::SocketAddr) -> Result<PathBuf, String> {
        let uid = nix::unistd::getuid();
        // The XDG Base Directory Specification: "All paths set in these environment variables
        // must be absolute. If an implementation encounters a relative path in any of these
        // variables it should consider the path invalid and ignore it." Trial 25: a relative
        // one was taken from the working directory, so a restart from another directory missed
        // the journal of a killed run and left its workloads running.
        let runtime = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|d| d.is_absolute());
        let dir = match runtime {
            Some(runtime) => runtime.join("crossfade"),
            None => std::env::temp_dir().join(format!("crossfade-{uid}")),
        };
        private_dir(&dir, uid.as_raw())?;
        Ok(dir.join(runtime_name(listen)))
    }

    /// Reads the entries a previous run left (a missing file has none).
    ///
    /// # Errors
    /// [`JournalError::Io`] when the file cannot be read (not a regular file, no permission, too
    /// large), [`JournalError::Content`] when its bytes are not a journal document of this
    /// [`VERSION`]; each message names the file. The entries are unknown then; the caller says so
    /// and carries on, and sets a journal of the second kind aside ([`ChildJournal::set_aside`]).
    pub fn read(path: &Path) -> Result<Vec<ChildEntry>, JournalError> {
        let bytes = match crossfade_proxy::files::read_bounded(
            path,
            crossfade_proxy::files::MAX_STATE_BYTES,
        ) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(JournalError::Io(format!(
                    "child journal {}: {e}",
                    path.display()
                )))
            }
        };
        let doc: Document = serde_json::from_slice(&bytes).map_err(|e| {
            JournalError::Content(format!("child journal {} is corrupt: {e}", path.display()))
        })?;
        if doc.version != VERSION {
            return Err(JournalError::Content(format!(
                "child journal {}: version {} is not one this crossfade reads (it reads {VERSION})",
                path.display(),
                doc.version
            )));
        }
        Ok(doc.children)
    }

    /// Renames the journal at `path`, which [`ChildJournal::read`] could not read, to
    /// `<path>.corrupt` (replacing an older one), so that the new run's journal does not overwrite
    /// the only record of what the previous run started; returns the new name.
    ///
    /// # Errors
    /// The rename's I/O error, naming both paths.
    pub fn set_aside(path: &Path) -> Result<PathBuf, String> {
        let mut aside = path.as_os_str().to_owned();
        aside.push(".corrupt");
        let aside = PathBuf::from(aside);
        std::fs::rename(path, &aside).map_err(|e| {
            format!(
                "child journal {}: cannot rename it to {}: {e}",
                path.display(),
                aside.display()
            )
        })?;
        Ok(aside)
    }

    /// A journal at `path` with no entries, written now (replacing what a previous run left:
    /// call it once those leftovers are stopped, [`stop_leftovers`]).
    ///
    /// # Errors
    /// The I/O error of the write, naming the file.
    pub fn create(path: PathBuf) -> Result<ChildJournal, String> {
        ChildJournal::create_keeping(path, Vec::new())
    }

    /// A journal at `path` holding `previous` (a previous run's entries, [`ChildJournal::read`]),
    /// written now: the start proves the journal can be written before it stops anything, and
    /// keeps the record of what it is about to stop until [`ChildJournal::drop_previous`].
    ///
    /// # Errors
    /// The I/O error of the write, naming the file.
    pub fn create_keeping(
        path: PathBuf,
        previous: Vec<ChildEntry>,
    ) -> Result<ChildJournal, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let journal = ChildJournal {
            path,
            entries: Mutex::new(previous),
            prefix: format!("{}-{nanos}", std::process::id()),
            counter: AtomicU64::new(0),
        };
        journal
            .write(&journal.lock())
            .map_err(|e| format!("child journal {}: {e}", journal.path.display()))?;
        Ok(journal)
    }

    /// Drops every entry this journal did not record itself (a previous run's, once
    /// [`stop_leftovers`] stopped them), except those of `adopted` processes, which this run now
    /// supervises. A failed write is logged: the next write drops them too.
    pub fn drop_previous(&self, adopted: &[ChildEntry]) {
        let own = format!("{}-", self.prefix);
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|e| e.token.starts_with(&own) || adopted.iter().any(|a| a.token == e.token));
        if entries.len() != before {
            self.write_or_log(&entries);
        }
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records, durably, that instance `instance` of `workload` is about to be spawned on `port`
    /// (as the restart of the process `replaces`, when it is one: [`ChildEntry::replaces`]);
    /// returns the token to put in its environment ([`TOKEN_VAR`]).
    ///
    /// # Errors
    /// The I/O error of the write; the entry is then not kept, and the caller must not spawn.
    pub fn intend(
        &self,
        workload: &str,
        instance: usize,
        command: &str,
        port: u16,
        replaces: Option<u32>,
    ) -> io::Result<String> {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let token = format!("{}-{n}", self.prefix);
        let mut entries = self.lock();
        entries.push(ChildEntry {
            token: token.clone(),
            workload: workload.to_owned(),
            instance,
            command: command.to_owned(),
            pid: None,
            started_ticks: None,
            port: Some(port),
            replaces,
        });
        if let Err(e) = self.write(&entries) {
            entries.retain(|e| e.token != token);
            return Err(e);
        }
        Ok(token)
    }

    /// Adds the spawned process's pid and start time to the entry of `token`. A failed write is
    /// logged: the intent is recorded, so recovery still finds the process by its token.
    pub fn spawned(&self, token: &str, pid: u32) {
        let started = start_ticks(pid);
        let mut entries = self.lock();
        if let Some(entry) = entries.iter_mut().find(|e| e.token == token) {
            entry.pid = Some(pid);
            entry.started_ticks = started;
        }
        self.write_or_log(&entries);
    }

    /// Drops the entry of `token`: its process exited, or was never spawned. With `pid`, only
    /// when the process group `pid` is empty, so that what the process forked is still found by a
    /// recovery.
    pub fn forget(&self, token: &str, pid: Option<u32>) {
        // Zombies do not count ([`group_running`]): an adopted instance is not this run's child,
        // and its exit leaves a zombie until PID 1 reaps it; counted as alive, its entry was
        // never dropped, and the journal named a process long gone after every retirement of an
        // adopted workload (crash35).
        if pid.is_some_and(group_running) {
            return;
        }
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|e| e.token != token);
        if entries.len() != before {
            self.write_or_log(&entries);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ChildEntry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_or_log(&self, entries: &[ChildEntry]) {
        if let Err(e) = self.write(entries) {
            tracing::error!("child journal {}: {e}", self.path.display());
        }
    }

    fn write(&self, entries: &[ChildEntry]) -> io::Result<()> {
        let doc = Document {
            version: VERSION,
            children: entries.to_vec(),
        };
        let mut json = serde_json::to_vec_pretty(&doc).map_err(io::Error::other)?;
        json.push(b'\n');
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let tmp = dir.join(crate::store::temp_name(&self.path));
        crate::store::replace_synced(&self.path, &tmp, &json)
    }
}

/// A process of a previous run that [`stop_leftovers`] stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leftover {
    /// The workload it belonged to.
    pub workload: String,
    /// Its instance (0-based).
    pub instance: usize,
    /// Its process id.
    pub pid: u32,
    /// True when it was the instance itself (a group leader), false for a process it forked.
    pub leader: bool,
}

impl std::fmt::Display for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.leader {
            true => write!(
                f,
                "{} instance {} (pid {})",
                self.workload, self.instance, self.pid
            ),
            false => write!(
                f,
                "a process forked by {} instance {} (pid {})",
                self.workload, self.instance, self.pid
            ),
        }
    }
}

/// `run-<ip>-<port>.children` for [`ChildJournal::runtime_path`]; `[::1]:8080` is
/// `run-__1-8080.children` (no `:` or brackets in the name).
fn runtime_name(listen: std::net::SocketAddr) -> String {
    let ip = listen.ip().to_string().replace(':', "_");
    format!("run-{ip}-{}.children", listen.port())
}

/// Makes sure `dir` is a directory of user `uid` that no other user can read or write (mode
/// 0700: created so when missing), for [`ChildJournal::runtime_path`].
fn private_dir(dir: &Path, uid: u32) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let fail = |what: String| format!("runtime directory {}: {what}", dir.display());
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| fail(e.to_string()))?;
    if !meta.is_dir() {
        return Err(fail("not a directory".to_owned()));
    }
    if meta.uid() != uid {
        return Err(fail(format!(
            "owned by uid {}, not this user ({uid})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(fail(format!(
            "mode {:04o} lets other users in; must be 0700",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Stops (SIGKILL) every process a previous run's journal `entries` prove to be its own (module
/// docs): each process whose environment holds a recorded token, and each recorded pid whose
/// start time still matches; the process group of each such process that leads its group is
/// killed too. Returns what was stopped, leaders first; nothing else is signalled.
pub fn stop_leftovers(entries: &[ChildEntry]) -> Vec<Leftover> {
    if entries.is_empty() {
        return Vec::new();
    }
    let mut found: Vec<(u32, &ChildEntry)> = Vec::new();
    // By pid and start time: also a process that cleared its environment.
    for entry in entries {
        let (Some(pid), Some(ticks)) = (entry.pid, entry.started_ticks) else {
            continue;
        };
        if start_ticks(pid) == Some(ticks) {
            found.push((pid, entry));
        }
    }
    // By token: also an instance whose pid was never written, and what the instances forked.
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for pid in dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        {
            if found.iter().any(|(p, _)| *p == pid) {
                continue;
            }
            let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
                continue;
            };
            let token = environ
                .split(|&b| b == 0)
                .find_map(|var| var.strip_prefix(format!("{TOKEN_VAR}=").as_bytes()));
            if let Some(entry) =
                token.and_then(|t| entries.iter().find(|e| e.token.as_bytes() == t))
            {
                found.push((pid, entry));
            }
        }
    }
    // Whether each still runs, read before any signal (a SIGKILL, also one to another's process
    // group, makes a process a zombie at once): one that had already exited and waits to be
    // reaped (a zombie: its parent, the dead run, left it to PID 1, which may be slow to reap
    // or, in a container, never does) is not stopped here. What its group still runs is
    // signalled below and found by its token, but the zombie itself is not named as stopped
    // (trial 24: the restart said it stopped green instances that a SIGTERM had already killed).
    let found: Vec<(u32, &ChildEntry, bool)> = found
        .into_iter()
        .map(|(pid, entry)| (pid, entry, runs_as_recorded(pid, start_ticks(pid))))
        .collect();
    let mut stopped: Vec<Leftover> = found
        .into_iter()
        .filter_map(|(pid, entry, running)| {
            let raw = Pid::from_raw(i32::try_from(pid).ok()?);
            let leader = process_group(pid) == Some(pid);
            if leader {
                let _ = killpg(raw, Signal::SIGKILL);
            }
            if !running {
                return None;
            }
            kill(raw, Signal::SIGKILL).ok()?;
            Some(Leftover {
                workload: entry.workload.clone(),
                instance: entry.instance,
                pid,
                leader,
            })
        })
        .collect();
    stopped.sort_by_key(|l| (!l.leader, l.workload.clone(), l.instance, l.pid));
    stopped
}

/// The previous run's processes of instances `0..instances` of `workload` that can be adopted, one
/// per instance in instance order, `None` for an instance that has none: each entry names the
/// workload, its pid is one of `active_pids` (the state file's pids of the active workload, in
/// instance order, so never a preview's) or it is the supervised restart of the instance's pid
/// there ([`ChildEntry::replaces`]: the run died between the restart's spawn and the save of its
/// pid; until session 38 the start then stopped the whole workload and started it afresh), its
/// port is recorded, and the process still runs as the same process (its start time matches the
/// record, so a recycled pid is never adopted; a zombie does not run). A recorded pid comes
/// first.
/// A start after a crash and a binary upgrade's new process start an instance that has none
/// themselves when no process of it runs ([`runs_any`]); until session 37 a start after a crash
/// adopted nothing unless every instance had one (`adoptable`, removed).
pub fn adoptable_each(
    entries: &[ChildEntry],
    workload: &str,
    instances: usize,
    active_pids: &[u32],
) -> Vec<Option<ChildEntry>> {
    (0..instances)
        .map(|index| {
            let candidate = |e: &&ChildEntry| {
                e.workload == workload
                    && e.instance == index
                    && e.port.is_some()
                    && e.pid
                        .is_some_and(|pid| runs_as_recorded(pid, e.started_ticks))
            };
            let recorded = (entries.iter().filter(candidate))
                .find(|e| e.pid.is_some_and(|pid| active_pids.contains(&pid)));
            // The restart of the process the state file saved for this instance (0: none).
            let restart = || {
                let saved = active_pids.get(index)?;
                (entries.iter().filter(candidate)).find(|e| e.replaces == Some(*saved))
            };
            recorded.or_else(restart).cloned()
        })
        .collect()
}

/// Whether any of `entries` recorded for instance `index` of `workload` names a process that
/// still runs as recorded ([`runs_as_recorded`]): an instance for which none does has no
/// process (it exited, and waits for its restart).
pub fn runs_any(entries: &[ChildEntry], workload: &str, index: usize) -> bool {
    entries.iter().any(|e| {
        e.workload == workload
            && e.instance == index
            && e.pid
                .is_some_and(|pid| runs_as_recorded(pid, e.started_ticks))
    })
}

/// Whether `pid` runs (not a zombie) and started at `ticks` (`/proc/<pid>/stat` field 22): the
/// same process as the one recorded, not a later one that got its pid.
pub fn runs_as_recorded(pid: u32, ticks: Option<u64>) -> bool {
    let Some(fields) = stat_fields(pid) else {
        return false;
    };
    let started = fields.get(19).and_then(|t| t.parse::<u64>().ok());
    ticks.is_some() && started == ticks && runs(&fields)
}

/// A token for a spawn that no journal records (a run on port 0 without a state file, the
/// driver's own tests): unique per spawn, `<controller pid>-<nanoseconds>-u<counter>`, so that
/// [`escaped`] can still find what the spawn left outside its process group.
pub fn unjournaled_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{}-{nanos}-u{n}", std::process::id())
}

/// The processes still running (not zombies) whose environment holds `token` ([`TOKEN_VAR`])
/// and that are not in process group `pgid`: what an instance's process started and that left
/// the instance's group (`setsid`, a daemon mode's double fork, `nohup setsid ... &`), so that
/// no signal to the group reaches it. Each with its name (`/proc/<pid>/comm`). A process that
/// cleared its environment at `exec` is not found (its `/proc/<pid>/environ` no longer holds
/// the token).
pub fn escaped(token: &str, pgid: u32) -> Vec<(u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let wanted = format!("{TOKEN_VAR}={token}");
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            let Some(fields) = stat_fields(pid) else {
                return false;
            };
            let group = fields.get(2).and_then(|g| g.parse::<u32>().ok());
            runs(&fields)
                && group != Some(pgid)
                && std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                    environ
                        .split(|&b| b == 0)
                        .any(|var| var == wanted.as_bytes())
                })
        })
        .map(|pid| {
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            (pid, name.trim().to_owned())
        })
        .collect()
}

/// Sends `signal` to each process of `pids` ([`escaped`]), and to the process group of each one
/// that leads its own (a daemon's `setsid` makes it lead one, with its workers in it); a process
/// already gone is not an error.
pub fn signal_escaped(pids: &[(u32, String)], signal: Signal) {
    for &(pid, _) in pids {
        let Ok(raw) = i32::try_from(pid) else {
            continue;
        };
        if process_group(pid) == Some(pid) {
            let _ = killpg(Pid::from_raw(raw), signal);
        }
        let _ = kill(Pid::from_raw(raw), signal);
    }
}

/// Whether process `pid` runs: it has a `/proc` entry and is not a zombie. A zombie does not
/// count: a process whose parent exited waits to be reaped by PID 1, which in a container may
/// never do it (or not yet: an adopted instance that exited is a zombie until PID 1 gets to it),
/// and it holds no port or file any more. No entry (gone, or `/proc` unreadable): not running.
pub fn pid_running(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|fields| runs(&fields))
}

/// Whether process group `pgid` has a member that still runs ([`pid_running`]: a zombie does
/// not count).
pub fn group_running(pgid: u32) -> bool {
    let Ok(raw) = i32::try_from(pgid) else {
        return false;
    };
    if raw <= 0 || killpg(Pid::from_raw(raw), None).is_err() {
        return false;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return true;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .any(|pid| {
            stat_fields(pid).is_some_and(|fields| {
                let group = fields.get(2).and_then(|g| g.parse::<u32>().ok());
                group == Some(pgid) && runs(&fields)
            })
        })
}

/// Whether the process whose [`stat_fields`] these are runs: its state (field 3) is neither
/// zombie (`Z`) nor dead (`X`), proc(5).
fn runs(fields: &[String]) -> bool {
    fields
        .first()
        .is_some_and(|state| state != "Z" && state != "X")
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold spaces and parens):
/// index 0 is field 3 (state).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// A process's start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
pub(crate) fn start_ticks(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// A process's process group id (`/proc/<pid>/stat` field 5); `None` once it is gone.
pub(crate) fn process_group(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runtime_directory_is_made_private_and_one_others_could_enter_is_refused() {
        use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
        let base = tempfile::tempdir().unwrap();
        let uid = nix::unistd::getuid().as_raw();
        let fresh = base.path().join("crossfade");
        private_dir(&fresh, uid).unwrap();
        assert_eq!(fresh.metadata().unwrap().mode() & 0o777, 0o700);
        // Again: an existing private directory is fine.
        private_dir(&fresh, uid).unwrap();

        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755)).unwrap();
        let open = private_dir(&fresh, uid).unwrap_err();
        assert!(open.contains("mode 0755 lets other users in"), "{open}");
        assert!(open.contains(&fresh.display().to_string()), "{open}");

        let link = base.path().join("link");
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o700)).unwrap();
        symlink(&fresh, &link).unwrap();
        let linked = private_dir(&link, uid).unwrap_err();
        assert!(linked.ends_with("not a directory"), "{linked}");

        let other = private_dir(&fresh, uid + 1).unwrap_err();
        assert!(
            other.contains(&format!("owned by uid {uid}, not this user")),
            "{other}"
        );
    }

    #[test]
    fn a_runtime_journal_is_named_by_the_listen_address() {
        let v4: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(runtime_name(v4), "run-127.0.0.1-8080.children");
        let v6: std::net::SocketAddr = "[::1]:8080".parse().unwrap();
        assert_eq!(runtime_name(v6), "run-__1-8080.children");
    }

    #[test]
    fn an_entry_is_written_before_the_spawn_completed_after_and_dropped_at_exit() {
        let dir = tempfile::tempdir().unwrap();
        let path = ChildJournal::path_for(&dir.path().join("state.json"));
        assert!(path.ends_with("state.json.children"), "{path:?}");
        let journal = ChildJournal::create(path.clone()).unwrap();
        assert_eq!(ChildJournal::read(&path).unwrap(), Vec::new());
        let token = journal.intend("v2", 1, "app", 8080, None).unwrap();
        let read = ChildJournal::read(&path).unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!((read[0].pid, read[0].instance), (None, 1), "{read:?}");
        let own = std::process::id();
        journal.spawned(&token, own);
        let read = ChildJournal::read(&path).unwrap();
        assert_eq!(read[0].pid, Some(own));
        assert!(read[0].started_ticks.is_some(), "{read:?}");
        // The group of this test process is alive: the entry stays.
        let group = process_group(own).unwrap();
        journal.forget(&token, Some(group));
        assert_eq!(ChildJournal::read(&path).unwrap().len(), 1);
        journal.forget(&token, None);
        assert_eq!(ChildJournal::read(&path).unwrap(), Vec::new());
        let second = journal.intend("v2", 0, "app", 8081, None).unwrap();
        assert_ne!(second, token, "tokens are unique");
    }

    /// Crash35: an adopted instance is not this run's child, so its exit leaves a zombie until
    /// PID 1 reaps it, and the group check of `forget` counted the zombie as running: the entry
    /// was never dropped, and the journal named every adopted instance retired since. A process
    /// that exited and waits to be reaped (here this test's own child, not waited for) has its
    /// entry dropped; one whose group still runs keeps it.
    #[test]
    fn an_exited_process_left_unreaped_has_its_entry_dropped() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json.children");
        let journal = ChildJournal::create(path.clone()).unwrap();
        let token = journal.intend("blue", 0, "sh", 8080, None).unwrap();
        let mut child = std::process::Command::new("sh")
            .args(["-c", "exec sleep 1000"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        journal.spawned(&token, pid);
        assert!(group_running(pid));
        journal.forget(&token, Some(pid));
        assert_eq!(ChildJournal::read(&path).unwrap().len(), 1, "it still runs");
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
        // A zombie until this test reaps it.
        let mut tries = 0;
        while stat_fields(pid).and_then(|f| f.first().cloned()).as_deref() != Some("Z") {
            assert!(tries < 1000, "pid {pid} never became a zombie");
            tries += 1;
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!group_running(pid), "a zombie does not run");
        journal.forget(&token, Some(pid));
        let left = ChildJournal::read(&path).unwrap();
        child.wait().unwrap();
        assert_eq!(left, Vec::new(), "the exited process's entry is dropped");
    }

    /// A journal written by a later crossfade that added fields (to the document and to an
    /// entry) is read by this one, entries and all: after a downgrade its processes are still
    /// found and stopped or adopted, not forgotten as a corrupt file's.
    #[test]
    fn fields_a_later_version_added_are_ignored_and_the_entries_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json.children");
        let text = r#"{"version": 1, "written_by": "crossfade 9.9", "children": [
            {"token": "1-2-3", "workload": "v2", "instance": 0, "command": "app", "pid": 4242,
             "started_ticks": 77, "port": 8080, "cgroup": "/crossfade/v2-0"}]}"#;
        std::fs::write(&path, text).unwrap();
        let read = ChildJournal::read(&path).unwrap();
        assert_eq!(read.len(), 1, "{read:?}");
        assert_eq!(
            (read[0].token.as_str(), read[0].pid, read[0].port),
            ("1-2-3", Some(4242), Some(8080))
        );
        // A version this one does not read is still refused, naming it.
        std::fs::write(&path, text.replace("\"version\": 1", "\"version\": 2")).unwrap();
        let err = ChildJournal::read(&path).unwrap_err();
        assert!(
            matches!(&err, JournalError::Content(m) if m.contains("version 2")),
            "{err}"
        );
    }

    #[test]
    fn an_unreadable_journal_is_set_aside_as_corrupt_and_its_bytes_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json.children");
        std::fs::write(&path, "{\"version\": 1, \"children\": [{\"tok").unwrap();
        assert!(matches!(
            ChildJournal::read(&path),
            Err(JournalError::Content(_))
        ));
        let aside = ChildJournal::set_aside(&path).unwrap();
        assert_eq!(aside, dir.path().join("s.json.children.corrupt"));
        assert!(!path.exists());
        let kept = std::fs::read_to_string(&aside).unwrap();
        assert!(kept.ends_with("\"tok"), "{kept}");
        // Nothing to rename: the error names the file.
        let err = ChildJournal::set_aside(&path).unwrap_err();
        assert!(err.contains(&path.display().to_string()), "{err}");
    }

    #[test]
    fn a_journal_that_is_not_one_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json.children");
        std::fs::write(&path, "{").unwrap();
        let err = ChildJournal::read(&path).unwrap_err();
        assert!(matches!(&err, JournalError::Content(_)), "{err:?}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        // A directory where the journal should be cannot be read: left where it is.
        let err = ChildJournal::read(dir.path()).unwrap_err();
        assert!(matches!(&err, JournalError::Io(_)), "{err:?}");
        assert_eq!(
            ChildJournal::read(&dir.path().join("absent")).unwrap(),
            Vec::new()
        );
    }

    /// Trial 13, N7: only the active workload's processes that still run as the processes
    /// recorded are adoptable, one per instance: a recycled pid (another start time), a pid the
    /// state file does not list as active (a preview's), an entry without its port or another
    /// workload's entry is not, nor is an instance without an entry.
    #[test]
    fn only_the_recorded_active_processes_still_running_as_recorded_are_adoptable() {
        let mut child = crate::test_support::sleeping_group_leader();
        let pid = child.id();
        let entry = |ticks: Option<u64>, port: Option<u16>| ChildEntry {
            token: "t-1".into(),
            workload: "blue".into(),
            instance: 0,
            command: "sleep".into(),
            pid: Some(pid),
            started_ticks: ticks,
            port,
            replaces: None,
        };
        let ticks = start_ticks(pid);
        let good = entry(ticks, Some(8080));
        let good_alone = std::slice::from_ref(&good);
        assert_eq!(
            adoptable_each(good_alone, "blue", 1, &[pid]),
            [Some(good.clone())]
        );
        let recycled = entry(ticks.map(|t| t + 1), Some(8080));
        assert_eq!(adoptable_each(&[recycled], "blue", 1, &[pid]), [None]);
        assert_eq!(adoptable_each(good_alone, "blue", 1, &[pid + 1]), [None]);
        let portless = entry(ticks, None);
        assert_eq!(adoptable_each(&[portless], "blue", 1, &[pid]), [None]);
        assert_eq!(adoptable_each(good_alone, "v2", 1, &[pid]), [None]);
        assert_eq!(
            adoptable_each(good_alone, "blue", 2, &[pid]),
            [Some(good.clone()), None]
        );
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(adoptable_each(&[good], "blue", 1, &[pid]), [None], "exited");
    }

    /// Session 38: `crossfade run` killed between a supervised restart's spawn and the save of
    /// its pid leaves the state file with the pid it replaced (or 0, for an instance that had no
    /// process), and the journal with the restart, which records that pid as the one it replaces:
    /// that proves it the instance's next process, so it is adopted (the next start stopped the
    /// whole workload and started it afresh). A process that replaces another pid, or a first
    /// start's (nothing replaced), is not.
    #[test]
    fn the_restart_of_the_recorded_process_is_adoptable_before_its_pid_was_saved() {
        let mut child = crate::test_support::sleeping_group_leader();
        let pid = child.id();
        let restart = |replaces: Option<u32>| ChildEntry {
            token: "t-9".into(),
            workload: "blue".into(),
            instance: 1,
            command: "sleep".into(),
            pid: Some(pid),
            started_ticks: start_ticks(pid),
            port: Some(8081),
            replaces,
        };
        // Instance 0's recorded process: another that runs.
        let mut other_child = crate::test_support::sleeping_group_leader();
        let zero_pid = other_child.id();
        let zero = ChildEntry {
            token: "t-1".into(),
            instance: 0,
            pid: Some(zero_pid),
            started_ticks: start_ticks(zero_pid),
            port: Some(8080),
            replaces: None,
            ..restart(None)
        };
        for saved in [4_242, 0] {
            let entries = [zero.clone(), restart(Some(saved))];
            assert_eq!(
                adoptable_each(&entries, "blue", 2, &[zero_pid, saved]),
                [Some(zero.clone()), Some(restart(Some(saved)))],
                "the restart of {saved}"
            );
            let other = [zero.clone(), restart(Some(saved + 1))];
            assert_eq!(
                adoptable_each(&other, "blue", 2, &[zero_pid, saved]),
                [Some(zero.clone()), None],
                "the restart of another process"
            );
        }
        let first = [zero.clone(), restart(None)];
        assert_eq!(
            adoptable_each(&first, "blue", 2, &[zero_pid, 4_242]),
            [Some(zero.clone()), None],
            "a first start"
        );
        for child in [&mut child, &mut other_child] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Recorded processes are stopped by token (pid never written) and by pid and start time;
    /// a recorded pid whose start time differs (a recycled pid) is left alone.
    #[test]
    fn leftovers_are_found_by_token_or_pid_and_start_time_and_nothing_else() {
        // The scan reads every process on the machine: tokens unique to this run (as a journal's
        // are), so that the same test running at the same time in another checkout or
        // `cargo test` is neither found here nor has its processes killed by this one.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let prefix = format!("t-{}-{nanos}", std::process::id());
        let [by_token_token, other_token, stranger_token, by_pid_token, recycled_token] =
            ["1", "other", "stranger", "2", "3"].map(|name| format!("{prefix}-{name}"));
        let spawn = |token: &str| {
            let child = std::process::Command::new("sleep")
                .arg("600")
                .env(TOKEN_VAR, token)
                .process_group(0)
                .spawn()
                .expect("sleep starts");
            // `spawn` returns once the child's exec has switched its memory, which is before the
            // kernel has laid out the new environment: /proc/PID/environ may still read empty
            // (CI saw the token missed so). Wait until the token shows, as a leftover's would.
            let mut tries = 0;
            while !std::fs::read(format!("/proc/{}/environ", child.id()))
                .is_ok_and(|env| env.windows(token.len()).any(|w| w == token.as_bytes()))
            {
                tries += 1;
                assert!(
                    tries < 500,
                    "the token never showed in pid {}'s environ",
                    child.id()
                );
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            child
        };
        use std::os::unix::process::CommandExt;
        let mut by_token = spawn(&by_token_token);
        let mut by_pid = spawn(&other_token);
        let mut stranger = spawn(&stranger_token);
        let entry = |token: &str, pid: Option<u32>, ticks: Option<u64>| ChildEntry {
            token: token.into(),
            workload: "v2".into(),
            instance: 0,
            command: "sleep".into(),
            pid,
            started_ticks: ticks,
            port: None,
            replaces: None,
        };
        let entries = [
            entry(&by_token_token, None, None),
            entry(&by_pid_token, Some(by_pid.id()), start_ticks(by_pid.id())),
            // The stranger's pid with another start time: a recycled pid.
            entry(
                &recycled_token,
                Some(stranger.id()),
                start_ticks(stranger.id()).map(|t| t + 1),
            ),
        ];
        let stopped = stop_leftovers(&entries);
        let mut pids: Vec<u32> = stopped.iter().map(|l| l.pid).collect();
        pids.sort_unstable();
        let mut expected = vec![by_token.id(), by_pid.id()];
        expected.sort_unstable();
        assert_eq!(pids, expected, "{stopped:?}");
        assert!(stopped.iter().all(|l| l.leader), "{stopped:?}");
        assert!(by_token.wait().is_ok_and(|s| !s.success()));
        assert!(by_pid.wait().is_ok_and(|s| !s.success()));
        assert!(
            stranger.try_wait().unwrap().is_none(),
            "the stranger still runs"
        );
        let _ = stranger.kill();
        let _ = stranger.wait();
    }

    /// A recorded process that has exited but not been reaped (a zombie) is not running, so it is
    /// not reported as stopped: the restart's `LeftoversStopped` names only what it stopped.
    #[test]
    fn a_recorded_process_that_already_exited_is_not_named_as_stopped() {
        use std::os::unix::process::CommandExt;
        let mut exited = std::process::Command::new("true")
            .process_group(0)
            .spawn()
            .expect("true starts");
        let pid = exited.id();
        let ticks = start_ticks(pid);
        // Not reaped: a zombie once `true` has exited.
        let mut tries = 0;
        while stat_fields(pid).is_none_or(|f| f.first().map(String::as_str) != Some("Z")) {
            tries += 1;
            assert!(tries < 1000, "pid {pid} never exited");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let entry = ChildEntry {
            token: "t-exited".into(),
            workload: "v2".into(),
            instance: 0,
            command: "true".into(),
            pid: Some(pid),
            started_ticks: ticks,
            port: None,
            replaces: None,
        };
        let stopped = stop_leftovers(&[entry]);
        assert!(stopped.is_empty(), "{stopped:?}");
        let _ = exited.wait();
    }
}
