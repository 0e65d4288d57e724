//! The start of `crossfade run`: read the state file, recover what the previous run left, adopt or
//! stop its processes, start the active workload (falling back to the replaced one when a promoted
//! workload cannot start), and decide whether the spec's green is rolled out.
//!
//! Everything here happens before the service runs ([`super::spawn`]); the caller binds the
//! sockets, builds the proxy from [`Recovered`] and spawns the service. The order of the steps is
//! what makes a restart safe at any moment (docs/reliability.md):
//! 1. the state file is locked, read (or restored from its backup) and checked for this route and
//!    this `blue:`;
//! 2. the state is saved before anything is stopped or started, so a start that cannot record its
//!    decisions refuses rather than acting on them;
//! 3. the child journal (every spawn of the previous run, recorded before it happened) is carried
//!    into this run's journal before anything is stopped: a crash meanwhile finds it again;
//! 4. the active workload's instances left running are adopted when one of them passes readiness
//!    (an instance with no process left, which the previous run was restarting, is started at
//!    once beside them); every other leftover is stopped;
//! 5. the active workload is started (or adopted); after a recovery that completed a rollout, the
//!    workload it replaced is kept running until then, and serves again if the promoted one cannot
//!    start ([`ServiceState::fall_back`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossfade_proxy::weight::Slot;

use super::{ServiceHandle, StartRequest};
use crate::driver::children::{
    adoptable_each, runs_any, stop_leftovers, ChildEntry, ChildJournal, JournalError,
};
use crate::driver::process::{Found, StartDown, Unready};
use crate::driver::{CancellationToken, LocalDriver, Workload, WorkloadDriver};
use crate::rollout::Phase;
use crate::spec::{RunSpec, WorkloadSpec};
use crate::state::{stop_orphans, AlreadyTried, BlueCheck, ServiceState, StatusEvent, RESTORED};
use crate::store::{StateFile, StateLock};

/// Why a start of `crossfade run` did not get to serving. Each variant's text names the file or
/// the workload concerned; nothing the previous run left was stopped when the variant says so.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The state file could not be read, or is corrupt with no usable backup
    /// ([`crate::Error::StateCorrupt`], [`crate::Error::StateIo`]); nothing was started.
    #[error(transparent)]
    Load(crate::Error),
    /// Another process holds the state file's lock ([`crate::Error::StateLocked`]) or the lock
    /// file cannot be made; nothing was started.
    #[error(transparent)]
    Lock(crate::Error),
    /// The state cannot be written before anything is stopped or started; nothing was stopped.
    #[error(transparent)]
    Save(crate::Error),
    /// The start is refused as the message says (another route's state file, a `blue:` that
    /// conflicts with the recorded one, a child journal that cannot be written, no `blue:`).
    #[error("{0}")]
    Refused(String),
    /// A signal ([`recover`]'s `cancel`) stopped the start before the active workload was ready;
    /// what it started was stopped. A requested stop, not a failure.
    #[error("{0}")]
    Stopped(String),
    /// The active workload could not start (nor, after a completing recovery, the one it
    /// replaced).
    #[error("{0}")]
    Workload(String),
}

/// What [`recover`] leaves for the service: the state after recovery, and the active workload,
/// started or adopted and ready.
pub struct Recovered {
    /// The state file, when the spec names one.
    pub store: Option<StateFile>,
    /// The state file's lock, to hold while the run serves.
    pub lock: Option<StateLock>,
    /// The state as recovered (saved already, unless nothing happened that needed saving).
    pub state: ServiceState,
    /// The events recorded before the service runs (`StateFileCorrupt`, `Recovered`,
    /// `Restored`, `BlueChanged`, `Adopted`, `LeftoversStopped`), counted once it does.
    pub start_events: Vec<String>,
    /// The phase the recovery ended the previous run's unfinished rollout in, and how long it
    /// ran ([`crate::state::Recovery`]); `None` when none was unfinished.
    pub recovered: Option<(Phase, Option<std::time::Duration>)>,
    /// The slot the active workload serves in.
    pub active_slot: Slot,
    /// The active workload's spec.
    pub active_spec: WorkloadSpec,
    /// The active workload, ready.
    pub active: Workload,
    /// The driver that started it, for the service's previews.
    pub driver: Arc<dyn WorkloadDriver>,
    /// The child journal of a run without `state_file`, to forget once every workload stopped.
    pub runtime_journal: Option<RuntimeJournal>,
    /// A binary upgrade's new process ([`take_over`]): to cancel once the old process has handed
    /// the workload over (it drains, or has exited), which starts the active instances that had
    /// no process at the takeover. `None` after [`recover`].
    pub handed_over: Option<CancellationToken>,
}

/// The child journal of a run without `state_file`, at [`ChildJournal::runtime_path`].
#[derive(Debug)]
pub struct RuntimeJournal(PathBuf);

impl RuntimeJournal {
    /// Removes the file once [`ServiceHandle::shutdown`] stopped every workload: nothing is left
    /// for a next run to stop, and the file would otherwise stay behind in the runtime directory.
    /// A failure is logged; the next run on this address then finds a journal whose processes
    /// are gone.
    pub fn forget(&self) {
        match std::fs::remove_file(&self.0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("child journal {}: not removed: {e}", self.0.display()),
        }
    }
}

/// Recovers the state of `spec`'s route and starts its active workload; `listen` is the proxy's
/// bound address (keys the child journal of a run without `state_file`). A cancelled `cancel`
/// (a signal) stops the start before the active workload is ready, and what it started:
/// [`StartupError::Stopped`].
///
/// # Errors
/// [`StartupError`]: each variant says what was (not) stopped or started.
pub async fn recover(
    spec: &RunSpec,
    listen: SocketAddr,
    cancel: CancellationToken,
) -> Result<Recovered, StartupError> {
    let lock = lock_state_file(spec)?;
    recover_locked(spec, lock, listen, cancel).await
}

/// Takes the lock of `spec`'s state file (step 1 of the start), `None` without a state file.
/// `crossfade run` takes it before it binds its sockets, so that a second run on the same state
/// file and the same ports is told that another process holds the file, not that the address is
/// in use (session 44).
///
/// # Errors
/// [`StartupError::Lock`]: another process holds the lock, or the lock file cannot be made.
pub fn lock_state_file(spec: &RunSpec) -> Result<Option<StateLock>, StartupError> {
    let store = spec.state_file.as_ref().map(StateFile::new);
    (store.as_ref().map(StateFile::lock).transpose()).map_err(StartupError::Lock)
}

/// [`recover`] with the state file's lock already taken ([`lock_state_file`]).
///
/// # Errors
/// As [`recover`]'s.
pub async fn recover_locked(
    spec: &RunSpec,
    lock: Option<StateLock>,
    listen: SocketAddr,
    cancel: CancellationToken,
) -> Result<Recovered, StartupError> {
    let store = spec.state_file.as_ref().map(StateFile::new);
    let (state, damaged) = match &store {
        Some(s) => s
            .load_or_backup::<ServiceState>()
            .map_err(StartupError::Load)?,
        None => (None, None),
    };
    let file = || {
        (spec.state_file.as_ref())
            .map(|f| f.display().to_string())
            .unwrap_or_default()
    };
    // Whether this start continues a previous run's state (it says so in its events).
    let restarted = state.is_some();
    let mut state = state.unwrap_or_default();
    // Before recovery or any write: a refused start leaves the other route's state untouched.
    if let Err(message) = state.check_route(&spec.route.name) {
        return Err(StartupError::Refused(format!(
            "state file {}: {message}",
            file()
        )));
    }
    // Events recorded before the service runs, counted once it does.
    let mut start_events = Vec::new();
    if let Some(note) = &damaged {
        start_events.push("StateFileCorrupt".to_owned());
        tracing::error!("{note}");
        state.push_event(StatusEvent::now("StateFileCorrupt", note));
    }
    // The pids of the workload active after the recovery, as saved: the active workload's, or,
    // when the recovery completes a rollout past its role swap, the promoted preview's (it served
    // all the traffic when the previous run died, and may be adopted as blue would be: trial 24,
    // a completion by restart stopped it and started it afresh, the route served nothing for its
    // whole start).
    let active_before = state.active;
    let workload_before = state.active_workload.clone();
    let saved_preview_pids = (state.rollout.as_ref()).map(|r| r.preview_pids.clone());
    let saved_active_pids = state.active_pids.clone();
    let saved_backoff = state.active_backoff.clone();
    // The state as the previous run left it: what the file keeps while a completing recovery
    // waits for the promoted workload (below).
    let unrecovered = state.clone();
    let mut recovery = state.recover();
    // When the recovery completed a rollout past its role swap, the workload it replaced: kept
    // running until the promoted one is ready, and served again if that cannot start (session
    // 32: a restart during a held retirement stopped blue, then green could not start and the
    // route was left with nothing to serve).
    let mut fallback = (recovery.ended == Some(Phase::Completed)).then(|| Fallback {
        slot: active_before.unwrap_or(Slot::Blue),
        spec: workload_before,
        pids: saved_active_pids.clone(),
        backoff: saved_backoff.clone(),
    });
    // The promoted preview's instances were not supervised: no backoff.
    let (saved_active_pids, saved_backoff) = match state.active == active_before {
        true => (saved_active_pids, saved_backoff),
        false => (saved_preview_pids.unwrap_or_default(), Vec::new()),
    };
    let mut adoptable_active = true;
    if let Some(note) = &recovery.note {
        start_events.push("Recovered".to_owned());
        tracing::warn!("{note}");
    } else if restarted {
        // The previous run's last event is not this run's (trial 13 N15).
        state.note_restored(std::process::id());
        start_events.push(RESTORED.to_owned());
    }
    let blue =
        (spec.blue.clone()).ok_or_else(|| StartupError::Refused("spec: blue is missing".into()))?;
    match state.check_blue(&blue) {
        BlueCheck::Serve | BlueCheck::ServeRecorded => {}
        BlueCheck::Edited(was) => {
            let note = format!(
                "blue: changed since the last run: serving {} (was {})",
                blue.describe(),
                was.describe()
            );
            tracing::warn!("{note}");
            adoptable_active = false;
            fallback = None;
            state.active_workload = Some(blue.clone());
            state.push_event(StatusEvent::now("BlueChanged", &note));
            start_events.push("BlueChanged".to_owned());
        }
        BlueCheck::Conflict(message) => {
            return Err(StartupError::Refused(format!("{message} ({})", file())));
        }
    }
    state.spec_blue = Some(blue.clone());
    // The active workload's pids as the previous run saved them stay recorded until it is adopted
    // or started afresh (below): `recover` took them out of the state as leftovers to stop, and a
    // start killed between this save and the service's first one (some 70 ms of every restart)
    // left `active_pids: []`, so the next start could not adopt the instances still serving and
    // stopped them (crash35). Not for an edited `blue:`, whose old instances are not the
    // workload now recorded as active and must never be adopted as it.
    if adoptable_active {
        state.active_pids = saved_active_pids.clone();
        state.active_backoff = saved_backoff.clone();
    }
    // A recorded workload that cannot serve as written (a state file edited by hand): refused
    // before anything is written, stopped or started, naming the file and the field; after a
    // completing recovery it is the promoted workload failing to start, and the one it replaced
    // serves again (below).
    let unfit = (state.active_workload.as_ref()).and_then(recorded_workload_problem);
    if let (Some(problem), None) = (&unfit, &fallback) {
        return Err(StartupError::Refused(format!(
            "state file {}: {problem}: the version it records as serving cannot start as written \
             (a state file edited by hand?); fix the field while crossfade run is stopped, or \
             remove the state file and its .bak to serve the spec's blue:",
            file()
        )));
    }
    if let Some(store) = &store {
        // Fail now, before anything is stopped or started, when the state cannot be persisted:
        // a start that stopped the previous run's processes (or rolled its rollout back) on a
        // decision it cannot record would be undone by the next start, reading the old file.
        // A recovery that completes a rollout is saved only once the promoted workload is ready
        // or the one it replaced serves again: a stop or crash before that (a signal while the
        // promoted green starts) leaves the file as the previous run left it, so the next start
        // recovers the same way, with the replaced workload to fall back to. Saved completed, the
        // next start found green active with nothing to fall back to and exited with nothing
        // serving (check33).
        let saved = match fallback.is_some() {
            true => &unrecovered,
            false => &state,
        };
        store.save(saved).map_err(StartupError::Save)?;
    }
    // Every process the previous run started, from its child journal (each spawn recorded before
    // it happened, so also a preview that was still provisioning) and from the state file's pids.
    // Without a state file the journal is keyed by the listen address (`runtime_journal_path`),
    // so that a run killed with `kill -9` leaves nothing the next run on that address does not
    // stop.
    let runtime_journal = match &spec.state_file {
        None => runtime_journal_path(spec.listen, listen),
        Some(_) => None,
    };
    // Beside the file the state file's path names (`StateFile::new` follows a symbolic link).
    let journal_path = (store.as_ref().map(|s| ChildJournal::path_for(s.path())))
        .or_else(|| runtime_journal.clone());
    let recorded = read_journal(journal_path.as_deref());
    // This run's journal, still holding the previous run's entries: written before anything is
    // stopped, so that a journal that cannot be written refuses the start as the state file does,
    // and a crash before the leftovers are stopped still finds them.
    let journal =
        match journal_path.map(|path| ChildJournal::create_keeping(path, recorded.clone())) {
            Some(Ok(journal)) => Some(journal),
            // Without a state file nothing was promised to survive a crash: serve, and say what is
            // lost (what this run starts is not recorded; what the previous one left is stopped).
            Some(Err(e)) if runtime_journal.is_some() => {
                tracing::warn!("{e}; {NO_JOURNAL}");
                None
            }
            Some(Err(e)) => {
                return Err(StartupError::Refused(format!(
                "state_file: {e}; refusing to start: nothing was started, and what the previous \
                 run left running (if anything) was neither stopped nor taken over; make the \
                 file's directory writable (or free space) and start again"
            )))
            }
            None => None,
        };
    let mut active_slot = state.active.unwrap_or(Slot::Blue);
    let mut active_spec = state
        .active_workload
        .clone()
        .unwrap_or_else(|| blue.clone());
    let label = active_spec.label(active_slot);
    let ports = spec.port_range.and_then(|range| range.ports());
    let journal = journal.map(Arc::new);
    let driver = match &journal {
        Some(journal) => LocalDriver::new(ports).with_journal(Arc::clone(journal)),
        None => LocalDriver::new(ports),
    };
    let candidates = adoptable_active
        .then(|| found_after_crash(&recorded, label, &active_spec, &saved_active_pids))
        .flatten();
    let adopted = match candidates {
        Some(found) => adopt_active(&driver, label, &active_spec, found, &saved_backoff).await,
        None => None,
    };
    let mut adopted_entries = adopted
        .as_ref()
        .map(|(_, f)| running(f))
        .unwrap_or_default();
    // The replaced workload's processes still running as recorded, when the promoted one must be
    // started afresh: not stopped until it is ready.
    let (fallback, kept_found) = match fallback {
        Some(f) if adopted.is_none() => {
            let spec = f.spec.unwrap_or_else(|| blue.clone());
            let label = spec.label(f.slot).to_owned();
            let kept = found_after_crash(&recorded, &label, &spec, &f.pids);
            (Some((f.slot, spec, f.backoff)), kept)
        }
        _ => (None, None),
    };
    let kept: &[ChildEntry] = &kept_found.as_deref().map(running).unwrap_or_default();
    let is_spared = |token: &str| adopted_entries.iter().chain(kept).any(|a| a.token == token);
    let others: Vec<ChildEntry> = recorded
        .iter()
        .filter(|e| !is_spared(&e.token))
        .cloned()
        .collect();
    let adopted_pids: Vec<u32> = (adopted_entries.iter().chain(kept))
        .filter_map(|e| e.pid)
        .collect();
    if let Some((workload, found)) = &adopted {
        let note = adopted_after_crash(label, found, workload, &saved_backoff);
        tracing::warn!("{note}");
        state.push_event(StatusEvent::now("Adopted", &note));
        start_events.push("Adopted".to_owned());
        // They serve already.
        save_started(store.as_ref(), &state);
    }
    let leftovers = stop_leftovers(&others);
    let mut stopped: Vec<String> = leftovers.iter().map(ToString::to_string).collect();
    let commands = workload_commands(spec, &state);
    let orphans: Vec<u32> = (recovery.orphan_pids.iter().copied())
        .filter(|pid| !leftovers.iter().any(|l| l.pid == *pid) && !adopted_pids.contains(pid))
        .collect();
    let orphans = stop_orphans(
        &orphans,
        &commands.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    stopped.extend(orphans.iter().map(|pid| format!("pid {pid}")));
    if !stopped.is_empty() {
        let stopped = stopped.join(", ");
        tracing::warn!("stopped what the previous run left running: {stopped}");
        state.note_stopped(&stopped, recovery.ended.is_some());
        start_events.push("LeftoversStopped".to_owned());
        // They are stopped already: serve rather than exit. A completing recovery is saved once
        // it is settled (above).
        if fallback.is_none() {
            save_started(store.as_ref(), &state);
        }
    }
    // Only now that they are stopped: a crash before this line finds them again next time.
    if let Some(journal) = &journal {
        let spared: Vec<ChildEntry> = adopted_entries.iter().chain(kept).cloned().collect();
        journal.drop_previous(&spared);
    }
    let provisioned = match (adopted, unfit) {
        (_, Some(problem)) => Err(StartupError::Workload(format!("state file: {problem}"))),
        (Some((workload, _)), None) => Ok(workload),
        (None, None) => provision_active(&driver, active_slot, &active_spec, &cancel).await,
    };
    let active = match (provisioned, fallback) {
        (Ok(workload), fallback) => {
            // The promoted workload serves: the one it replaced is not needed any more.
            let settled = fallback.is_some();
            let stopped = stop_kept(kept);
            if let Some(stopped) = &stopped {
                state.note_stopped(stopped, true);
                start_events.push("LeftoversStopped".to_owned());
            }
            if settled || stopped.is_some() {
                save_started(store.as_ref(), &state);
            }
            if let Some(journal) = &journal {
                journal.drop_previous(&adopted_entries);
            }
            workload
        }
        (Err(StartupError::Workload(e)), Some((slot, spec, backoff))) if !cancel.is_cancelled() => {
            // Promoted, but it cannot start: the workload it replaced serves again rather than
            // nothing (DESIGN: never leave a route with no healthy backend while one exists).
            let promoted = active_spec.label(active_slot).to_owned();
            let label = spec.label(slot).to_owned();
            tracing::error!("{promoted} could not start: {e}; {label} serves again");
            let readopted = match kept_found {
                None => None,
                Some(found) => adopt_active(&driver, &label, &spec, found, &backoff).await,
            };
            let workload = match readopted {
                Some((workload, found)) => {
                    adopted_entries = running(&found);
                    let note = adopted_after_crash(&label, &found, &workload, &backoff);
                    tracing::warn!("{note}");
                    state.push_event(StatusEvent::now("Adopted", &note));
                    start_events.push("Adopted".to_owned());
                    workload
                }
                None => {
                    stop_leftovers(kept);
                    provision_active(&driver, slot, &spec, &cancel)
                        .await
                        .map_err(|again| match again {
                            // A stop, not a failure of the workload: said as any stop is.
                            StartupError::Workload(again) => StartupError::Workload(format!(
                                "{promoted} could not start ({e}), nor could {label}, which \
                                 it replaced: {again}"
                            )),
                            stopped => stopped,
                        })?
                }
            };
            if let Some(journal) = &journal {
                journal.drop_previous(&adopted_entries);
            }
            let note = state.fall_back(slot, spec.clone(), &e);
            tracing::warn!("{note}");
            start_events.push("Recovered".to_owned());
            recovery.ended = Some(Phase::RolledBack);
            save_started(store.as_ref(), &state);
            (active_slot, active_spec) = (slot, spec);
            workload
        }
        (Err(e), _) => {
            // A signal stopped the start (or nothing can serve): the replaced workload kept as
            // the fallback is stopped with it, as a stop stops every workload of the run, rather
            // than left running with no run supervising it.
            stop_kept(kept);
            let recorded = (store.as_ref()).and_then(|s| recorded_active(&state, &blue, s.path()));
            return Err(match (e, recorded) {
                (StartupError::Workload(e), Some(note)) => {
                    StartupError::Workload(format!("{e}; {note}"))
                }
                (e, _) => e,
            });
        }
    };
    // The pids of what serves now, recorded before the service runs: a start killed meanwhile
    // leaves the next one the instances to adopt (crash35). With them the workload they run and
    // its slot, as the service's saves record them: a first start saved its pids with no active
    // workload, and a start after a `kill -9` then took the `blue:` as never edited (nothing to
    // compare it with) and adopted the old processes as the edited blue
    // (`adopt::an_edited_blue_is_started_afresh_not_adopted`, 2 of 3 runs in session 36).
    let (pids, backoff) = (active.pids(), active.backoffs());
    let workload = Some(active_spec.clone());
    if state.active_pids != pids
        || state.active_workload != workload
        || state.active_backoff != backoff
    {
        state.route.clone_from(&spec.route.name);
        state.active = Some(active_slot);
        state.active_workload = workload;
        state.active_pids = pids;
        state.active_backoff = backoff;
        save_started(store.as_ref(), &state);
    }
    let runtime_journal = journal.as_ref().and(runtime_journal).map(RuntimeJournal);
    Ok(Recovered {
        store,
        lock,
        state,
        start_events,
        recovered: recovery.ended.map(|phase| (phase, recovery.took)),
        active_slot,
        active_spec,
        active,
        driver: Arc::new(driver),
        runtime_journal,
        handed_over: None,
    })
}

/// Where the workload `state` records as serving comes from, when it is not the spec's `blue`
/// (a rollout made it active since): words for an error about it, naming the version and the state
/// file at `path` (newuser34 A: `workload v6: cannot start ...` named a version in no file the
/// operator wrote). `None` when the spec's `blue:` serves.
pub fn recorded_active(state: &ServiceState, blue: &WorkloadSpec, path: &Path) -> Option<String> {
    let active = state.active_workload.as_ref().filter(|w| *w != blue)?;
    let slot = state.active.unwrap_or(Slot::Blue);
    // An unnamed workload by what it runs: its slot's name alone says little.
    let named = |w: &WorkloadSpec, slot: Slot| match &w.name {
        Some(name) => name.clone(),
        None => format!("{slot}'s {}", w.describe()),
    };
    Some(format!(
        "{} is the version state file {} records as serving (a rollout made it active; the \
         spec's blue: is {}): make it startable again (its command, workdir), or remove the \
         state file and its .bak to serve the spec's blue: (the rollout history is lost)",
        named(active, slot),
        path.display(),
        named(blue, Slot::Blue),
    ))
}

/// `crossfade check`'s look at the workload `state` records as serving (after
/// [`ServiceState::recover`]) when it is not the spec's `blue`: what it lacks to serve at all
/// ([`recorded_workload_problem`]) and the problems a start would meet on this machine (`command`
/// not found, `workdir` missing), worded as [`recorded_active`].
///
/// # Errors
/// The problems, one line each, then where the version comes from.
pub fn check_recorded_active(
    state: &ServiceState,
    blue: &WorkloadSpec,
    path: &Path,
) -> Result<(), String> {
    let Some(note) = recorded_active(state, blue, path) else {
        return Ok(());
    };
    let Some(active) = &state.active_workload else {
        return Ok(());
    };
    // What it lacks to serve at all (a state file edited by hand), then what this machine lacks.
    let mut lines: Vec<String> = recorded_workload_problem(active).into_iter().collect();
    let problems = active.check_machine("state_file's active workload");
    lines.extend(problems.iter().map(ToString::to_string));
    if lines.is_empty() {
        return Ok(());
    }
    Err(format!("{}\n{note}", lines.join("\n")))
}

/// The start of a `crossfade run` that takes over from a serving one in a binary upgrade (the
/// old process froze its controller: no rollout runs, its instances are held, and it handed over
/// the state file's lock, `handed_lock`). Unlike [`recover`] it never stops or starts anything
/// before the old process has handed the workload over, so that a failure leaves the old process
/// serving exactly as before: the state file is read (not written: the service saves it once it
/// runs), the active workload's running instances are adopted from the child journal (one that
/// fails its readiness probe adopted not ready), and the journal is carried on with them. An
/// instance with no process (in its restart backoff under the old process, which restarts
/// nothing while held) is started by this process once [`Recovered::handed_over`] is cancelled;
/// its endpoint is withdrawn until it is ready. Until session 36 it refused the upgrade.
/// `predecessor` is the old process's pid, for the `Upgraded` event.
///
/// # Errors
/// [`StartupError::Lock`] when the lock handed over is not this state file's (another
/// `state_file:` in the new spec) and the file is locked (by the old process);
/// [`StartupError::Load`]; [`StartupError::Refused`] without `state_file`, for another route's
/// state, a `blue:` changed since the old process started, a rollout in progress, a child journal
/// that is missing or cannot be read, an instance whose process runs but is not the one the
/// state file records, or a workload without `command` (static endpoints), each naming what and
/// saying that the old process serves on.
pub async fn take_over(
    spec: &RunSpec,
    handed_lock: Option<std::os::fd::OwnedFd>,
    predecessor: Option<u32>,
) -> Result<Recovered, StartupError> {
    let refused = |why: String| {
        StartupError::Refused(format!(
            "binary upgrade: {why}; nothing was stopped or started, and the serving process \
             serves on"
        ))
    };
    let Some(path) = &spec.state_file else {
        return Err(refused(
            "the spec has no state_file: a new process adopts the running workload from the \
             state file and its child journal, so `crossfade run --upgrade-socket` needs one"
                .into(),
        ));
    };
    let store = StateFile::new(path);
    let lock = match handed_lock.map(|fd| store.adopt_lock(fd)).transpose() {
        Ok(Some(Some(lock))) => lock,
        Ok(_) => store.lock().map_err(StartupError::Lock)?,
        Err(e) => return Err(StartupError::Lock(e)),
    };
    let (state, damaged) = store
        .load_or_backup::<ServiceState>()
        .map_err(StartupError::Load)?;
    if let Some(note) = damaged {
        return Err(refused(format!("state file {}: {note}", path.display())));
    }
    let Some(mut state) = state else {
        return Err(refused(format!(
            "state file {}: empty or missing, so the running workload cannot be adopted",
            path.display()
        )));
    };
    if let Err(message) = state.check_route(&spec.route.name) {
        return Err(refused(format!("state file {}: {message}", path.display())));
    }
    if let Some(record) = state.rollout.as_ref().filter(|r| !r.rollout.is_terminal()) {
        return Err(refused(format!(
            "rollout {} is in progress ({})",
            record.rollout.id,
            record.rollout.phase.words()
        )));
    }
    let blue =
        (spec.blue.clone()).ok_or_else(|| StartupError::Refused("spec: blue is missing".into()))?;
    match state.check_blue(&blue) {
        BlueCheck::Serve | BlueCheck::ServeRecorded => {}
        BlueCheck::Edited(was) => {
            return Err(refused(format!(
                "the spec's blue: changed since the serving process started ({}, was {}): an \
                 upgrade keeps the running workload; put blue: back, or restart crossfade to \
                 serve the new one",
                blue.describe(),
                was.describe()
            )))
        }
        BlueCheck::Conflict(message) => return Err(refused(message)),
    }
    state.spec_blue = Some(blue.clone());
    let active_slot = state.active.unwrap_or(Slot::Blue);
    let active_spec = state
        .active_workload
        .clone()
        .unwrap_or_else(|| blue.clone());
    let label = active_spec.label(active_slot).to_owned();
    let journal_path = ChildJournal::path_for(store.path());
    if active_spec.command.is_none() {
        return Err(refused(format!(
            "{label} has no command (static endpoints): an upgrade adopts processes"
        )));
    }
    // Read as it is: a missing or unreadable journal says nothing of what runs, and is left for
    // the old process, which serves on.
    let recorded = match ChildJournal::read(&journal_path) {
        Ok(_) if !journal_path.exists() => Err("it is missing".to_owned()),
        Ok(entries) => Ok(entries),
        Err(e) => Err(e.to_string()),
    }
    .map_err(|why| {
        refused(format!(
            "child journal {}: {why}, so what runs of {label} is unknown",
            journal_path.display()
        ))
    })?;
    let found = found_each(&recorded, &label, &active_spec, &state.active_pids).map_err(|why| {
        refused(format!(
            "{why}, so it is neither adopted nor started again (child journal {})",
            journal_path.display()
        ))
    })?;
    let entries: Vec<ChildEntry> = (found.iter())
        .flat_map(|f| match f {
            Found::Running(entry) => std::slice::from_ref(entry),
            Found::Down { stale } => stale.as_slice(),
        })
        .cloned()
        .collect();
    let journal = ChildJournal::create_keeping(journal_path, recorded)
        .map_err(|e| refused(format!("state_file: {e}")))?;
    let journal = Arc::new(journal);
    let ports = spec.port_range.and_then(|range| range.ports());
    let driver = LocalDriver::new(ports).with_journal(Arc::clone(&journal));
    let handed_over = CancellationToken::new();
    let active = driver
        .take_over(
            &label,
            &active_spec,
            &found,
            &state.active_backoff,
            &handed_over,
        )
        .await
        .map_err(|e| refused(format!("not adopting {label}: {e}")))?;
    // The entries of instances down stay until their start has stopped what they left.
    journal.drop_previous(&entries);
    let from = predecessor.map_or_else(|| "the old process".to_owned(), |p| format!("pid {p}"));
    let adopted = running(&found);
    let mut note = format!("binary upgrade: took over from {from}");
    if !adopted.is_empty() {
        note = format!("{note}; {}", adopted_note(&label, &adopted));
    }
    if let Some(down) = down_instances(&found) {
        note = format!(
            "{note}; {label} instance {down} had no process (waiting for its restart): started \
             by this process once the old one has handed it over"
        );
    }
    tracing::info!("{note}");
    state.push_event(StatusEvent::now("Upgraded", &note));
    Ok(Recovered {
        store: Some(store),
        lock: Some(lock),
        state,
        start_events: vec!["Upgraded".to_owned()],
        recovered: None,
        active_slot,
        active_spec,
        active,
        driver: Arc::new(driver),
        runtime_journal: None,
        handed_over: Some(handed_over),
    })
}

/// What a start finds of each of `active`'s instances (`label`) in the child journal `recorded`
/// of the run it takes over from (a binary upgrade's old process, or a run that crashed): its
/// process running as recorded, its pid one of `active_pids` ([`adoptable_each`]), or no process
/// of it running at all ([`Found::Down`], with its entries).
///
/// # Errors
/// Naming the instance, when a process of it runs but is not the one the state file records
/// (its pid is not one of `active_pids`): it might be serving, or be another start's.
fn found_each(
    recorded: &[ChildEntry],
    label: &str,
    active: &WorkloadSpec,
    active_pids: &[u32],
) -> Result<Vec<Found>, String> {
    let each = adoptable_each(recorded, label, active.instances as usize, active_pids);
    (each.into_iter().enumerate())
        .map(|(index, entry)| match entry {
            Some(entry) => Ok(Found::Running(entry)),
            None if runs_any(recorded, label, index) => Err(format!(
                "{label} instance {index} runs, but not as the state file records it (pids \
                 {active_pids:?})"
            )),
            None => Ok(Found::Down {
                stale: (recorded.iter())
                    .filter(|e| e.workload == label && e.instance == index)
                    .cloned()
                    .collect(),
            }),
        })
        .collect()
}

/// What the workload a state file records as serving (`active_workload`) lacks to serve at all, by
/// the start's own rules rather than the spec's (a rule added to the spec later must not refuse
/// older state files): a process workload needs an instance, a static one an endpoint.
/// `None` when it has them.
pub fn recorded_workload_problem(workload: &WorkloadSpec) -> Option<String> {
    match &workload.command {
        Some(_) if workload.instances == 0 => {
            Some("active_workload.instances: 0, and a process workload needs at least 1".to_owned())
        }
        None if workload.endpoints.is_empty() => Some(
            "active_workload.endpoints: none, and a workload without `command` needs at least one"
                .to_owned(),
        ),
        _ => None,
    }
}

/// How the spec's green fared at a start ([`start_green`]).
pub enum GreenStart {
    /// The rollout to it was started, with this id.
    Started(u64),
    /// It was not rolled out again: the state file says how it ended (or that it serves now).
    AlreadyTried {
        /// How it ended.
        tried: AlreadyTried,
        /// The green's label (its `name:`, else the slot it ran in).
        label: String,
        /// The log line that says so ([`AlreadyTried::describe`]).
        why: String,
    },
}

/// Starts the rollout to the spec's `green` on `service`, unless `state` (as [`recover`] left it)
/// says this green, as built now, already serves or was already rolled out, rolled back or
/// aborted; `active_slot` and `serving` (its label) are the active workload's. The program's
/// build counts: a binary rebuilt since the rollout that tried it is a new green (its SHA-256,
/// hashed off the runtime's threads: a fraction of a second even for a large binary).
///
/// # Errors
/// The service's refusal of the start request, as its admin API would say it.
pub async fn start_green(
    service: &ServiceHandle,
    state: &ServiceState,
    green: &WorkloadSpec,
    active_slot: Slot,
    serving: &str,
) -> Result<GreenStart, String> {
    let digest = match crate::image::program(green) {
        Some(path) => tokio::task::spawn_blocking(move || crate::image::hash_file(&path))
            .await
            .ok()
            .flatten(),
        None => None,
    };
    if let Some(tried) = state.already_tried(green, digest.as_deref()) {
        // An unnamed green is called by its slot: the active one once a rollout to it completed
        // (the role swap put it there), else the one it ran in (recorded since session 33;
        // before, the other one, which a `migrate` since may have made the active one:
        // newuser32 H).
        let slot = match tried {
            AlreadyTried::Active { .. } => active_slot,
            AlreadyTried::Ended { slot, .. } => slot.unwrap_or(active_slot.other()),
        };
        let label = green.label(slot).to_owned();
        let why = tried.describe(&label, serving);
        tracing::info!("{why}");
        return Ok(GreenStart::AlreadyTried { tried, label, why });
    }
    if let Some(tried @ AlreadyTried::Ended { slot, .. }) = state.already_tried(green, None) {
        let label = green.label(slot.unwrap_or(active_slot.other()));
        if let Some(line) = tried.rebuilt(label, digest.as_deref()) {
            tracing::info!("{line}");
        }
    }
    let id = service
        .start(StartRequest {
            green: Some(green.clone()),
            rollout: None,
        })
        .await
        .map_err(|e| e.to_string())?
        .id;
    tracing::info!(rollout = id, "rollout started");
    Ok(GreenStart::Started(id))
}

/// What a run without `state_file` whose runtime child journal cannot be kept logs after why.
const NO_JOURNAL: &str = "serving without a child journal: if this run is killed, what it \
                          started keeps running and the next run does not stop it";

/// Where the child journal of a run without `state_file` goes ([`ChildJournal::runtime_path`]):
/// keyed by the bound listen address `bound`, or none when `listen` asked for port 0 (the next run
/// gets another port, so it could never find it) or the runtime directory is unfit (logged).
fn runtime_journal_path(listen: SocketAddr, bound: SocketAddr) -> Option<PathBuf> {
    if listen.port() == 0 {
        return None;
    }
    ChildJournal::runtime_path(bound)
        .inspect_err(|e| tracing::warn!("{e}; {NO_JOURNAL}"))
        .ok()
}

/// The previous run's child journal at `path`: its entries, or none when there is no journal or
/// it cannot be read (logged: only the state file's pids are stopped then). A journal whose
/// content is damaged is set aside, since this run's journal would overwrite the only record of
/// what the previous run started.
fn read_journal(path: Option<&std::path::Path>) -> Vec<ChildEntry> {
    let Some(path) = path else {
        return Vec::new();
    };
    match ChildJournal::read(path) {
        Ok(entries) => entries,
        Err(JournalError::Content(e)) => {
            // A process it names carries `CROSSFADE_CHILD=<token>`.
            let kept = match ChildJournal::set_aside(path) {
                Ok(aside) => format!("the file is kept as {}", aside.display()),
                Err(why) => why,
            };
            tracing::error!(
                "{e}; only the state file's pids are stopped; {kept} (a process the previous run \
                 started that is still running has CROSSFADE_CHILD in its environment)"
            );
            Vec::new()
        }
        // Left where it is: writing this run's journal there fails the same way (refused then).
        Err(JournalError::Io(e)) => {
            tracing::error!("{e}; only the state file's pids are stopped");
            Vec::new()
        }
    }
}

/// What a start after a crash takes over of the workload `label` of `spec` from the previous
/// run's child journal `recorded`, instance by instance ([`found_each`]; `pids`: the pids the
/// state file saved for it): `None`, so that the caller starts the workload afresh, when none of
/// its instances runs as recorded, when one runs that is not the recorded process (logged: it
/// cannot be told from a process of another start, so it is stopped rather than served), or for a
/// workload without `command`. Until session 37 any instance with no process made the start stop
/// the others and start the whole workload afresh.
fn found_after_crash(
    recorded: &[ChildEntry],
    label: &str,
    spec: &WorkloadSpec,
    pids: &[u32],
) -> Option<Vec<Found>> {
    spec.command.as_ref()?;
    match found_each(recorded, label, spec, pids) {
        Ok(found) => found
            .iter()
            .any(|f| matches!(f, Found::Running(_)))
            .then_some(found),
        Err(why) => {
            tracing::warn!(
                "not adopting what the previous run left running: {why}; starting {label} afresh"
            );
            None
        }
    }
}

/// The journal entries of the instances of `found` whose process runs ([`Found::Running`]).
fn running(found: &[Found]) -> Vec<ChildEntry> {
    found.iter().filter_map(Found::running).cloned().collect()
}

/// The instances of `found` with no process ([`Found::Down`]), comma-separated (`0, 2`); `None`
/// when every one runs.
fn down_instances(found: &[Found]) -> Option<String> {
    let down: Vec<String> = (found.iter().enumerate())
        .filter(|(_, f)| matches!(f, Found::Down { .. }))
        .map(|(i, _)| i.to_string())
        .collect();
    (!down.is_empty()).then(|| down.join(", "))
}

/// Adopts the active workload's instances that the previous run left (`found`:
/// [`found_after_crash`]) when at least one passes a readiness probe; the workload and what was
/// adopted. One that fails its probe (an instance the previous run was restarting, not ready yet)
/// is adopted not ready beside the ready ones ([`Unready::BesideReady`]): withdrawn from the route
/// until a probe passes, stopped and started again past its readiness deadline. One with no
/// process ([`Found::Down`]) is started once the service supervises the workload, withdrawn until
/// its start passes readiness. Each goes on with the restart backoff the previous run saved for
/// it (`backoff`, [`ServiceState::active_backoff`]): one with no process waits the rest of its
/// wait, at once when none is saved ([`crate::driver::supervisor::down_delay`]). `None` when none
/// passes: the caller stops them with the other leftovers and starts the workload afresh, as
/// after a crash with nothing left running.
async fn adopt_active(
    driver: &LocalDriver,
    label: &str,
    spec: &WorkloadSpec,
    found: Vec<Found>,
    backoff: &[Option<crate::driver::supervisor::Backoff>],
) -> Option<(Workload, Vec<Found>)> {
    match driver
        .adopt(label, spec, &found, Unready::BesideReady, backoff)
        .await
    {
        Ok(workload) => Some((workload, found)),
        Err(e) => {
            tracing::warn!(
                "not adopting what the previous run left running: {e}; starting {label} afresh"
            );
            None
        }
    }
}

/// The workload the previous run left running when a recovery completed its rollout
/// ([`ServiceState::recover`]): the one the promoted workload replaced, in `slot`, with its spec
/// (`None`: the spec's `blue:`) and the pids saved for it. It serves again if the promoted one
/// cannot start ([`ServiceState::fall_back`]).
struct Fallback {
    slot: Slot,
    spec: Option<WorkloadSpec>,
    pids: Vec<u32>,
    /// Its instances' restart backoff as saved ([`ServiceState::active_backoff`]).
    backoff: Vec<Option<crate::driver::supervisor::Backoff>>,
}

/// Starts `spec` as the active workload in `slot`. A signal before it is ready cancels the start
/// (`cancel`), which stops what it started: [`StartupError::Stopped`] says so; any other failure is
/// [`StartupError::Workload`].
async fn provision_active(
    driver: &LocalDriver,
    slot: Slot,
    spec: &WorkloadSpec,
    cancel: &CancellationToken,
) -> Result<Workload, StartupError> {
    let label = spec.label(slot);
    driver
        .provision(label, spec, cancel.clone(), Default::default())
        .await
        .map_err(|e| match cancel.is_cancelled() {
            true => StartupError::Stopped(format!(
                "stopped by a signal before {label} was ready; its instances were stopped ({e})"
            )),
            false => StartupError::Workload(e.to_string()),
        })
}

/// Stops the replaced workload's processes kept for a fallback (`kept`), once they are not
/// needed or the start ends; what was stopped, logged and returned (`v1 instance 0 (pid 4242)`,
/// comma-separated), `None` when nothing ran any more.
fn stop_kept(kept: &[ChildEntry]) -> Option<String> {
    let stopped: Vec<String> = stop_leftovers(kept)
        .iter()
        .map(ToString::to_string)
        .collect();
    if stopped.is_empty() {
        return None;
    }
    let stopped = stopped.join(", ");
    tracing::warn!("stopped what the previous run left running: {stopped}");
    Some(stopped)
}

/// Saves the state at start once something already happened (processes stopped or adopted): a
/// failed save is logged, and the next transition saves it all.
fn save_started(store: Option<&StateFile>, state: &ServiceState) {
    if let Some(Err(e)) = store.map(|store| store.save(state)) {
        tracing::error!("{e}");
    }
}

/// The `Adopted` event's note after a crash: [`adopted_note`], then the instances that had no
/// process and are started ([`Found::Down`]): `; v1 instance 0 had no process (the previous run
/// was waiting to restart it): started again at once on port 25100`, or `started again once the
/// rest of its restart backoff has passed on port 25100` when `backoff` (as saved) says one was
/// waiting.
fn adopted_after_crash(
    label: &str,
    found: &[Found],
    workload: &Workload,
    backoff: &[Option<crate::driver::supervisor::Backoff>],
) -> String {
    let note = adopted_note(label, &running(found));
    let Some(down) = down_instances(found) else {
        return note;
    };
    let endpoints = workload.endpoints();
    let ports: Vec<String> = (found.iter().zip(&endpoints))
        .filter(|(f, _)| matches!(f, Found::Down { .. }))
        .map(|(_, e)| e.port().to_string())
        .collect();
    let ports = match ports.len() {
        1 => format!("port {}", ports.join("")),
        _ => format!("ports {}", ports.join(", ")),
    };
    // As its supervisor decides it ([`crate::driver::supervisor::down_delay`]).
    let now = std::time::SystemTime::now();
    let at_once = (found.iter().enumerate())
        .filter(|(_, f)| matches!(f, Found::Down { .. }))
        .all(|(i, _)| {
            let saved = backoff.get(i).and_then(Option::as_ref);
            let delay = crate::driver::supervisor::down_delay(saved, &StartDown::AtOnce, now);
            delay == Some(std::time::Duration::ZERO)
        });
    let when = match at_once {
        true => "at once",
        false => "once the rest of its restart backoff has passed",
    };
    format!(
        "{note}; {label} instance {down} had no process (the previous run was waiting to restart \
         it): started again {when} on {ports}"
    )
}

/// The `Adopted` event's note: `adopted v1 left running by the previous run (ready): instance 0
/// (pid 4242, port 25100), ...`.
fn adopted_note(label: &str, entries: &[ChildEntry]) -> String {
    let instances: Vec<String> = entries
        .iter()
        .map(|e| {
            let (pid, port) = (e.pid.unwrap_or_default(), e.port.unwrap_or_default());
            format!("instance {} (pid {pid}, port {port})", e.instance)
        })
        .collect();
    format!(
        "adopted {label} left running by the previous run (ready): {}",
        instances.join(", ")
    )
}

/// The commands of every workload the spec or the state names: a pid recorded in the state file
/// is stopped as an orphan only when its command line is one of them ([`stop_orphans`]: a pid
/// reused by an unrelated process since is left alone).
fn workload_commands(spec: &RunSpec, state: &ServiceState) -> Vec<String> {
    let specs: [Option<&WorkloadSpec>; 4] = [
        spec.blue.as_ref(),
        spec.green.as_ref(),
        state.active_workload.as_ref(),
        state.rollout.as_ref().map(|r| &r.preview_workload),
    ];
    specs
        .into_iter()
        .flatten()
        .filter_map(|w| w.command.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::test_support::pid_written;

    /// A spec for route `route` whose blue runs `script` under `sh -c`, with its state file in
    /// `dir`.
    fn spec(dir: &Path, route: &str, script: &str) -> RunSpec {
        let yaml = format!(
            "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nroute: {{ name: {route} }}\n\
             blue:\n  name: v1\n  command: sh\n  args: [\"-c\", {script:?}]\n  \
             env: {{ PORT: \"{{port}}\" }}\n  readiness: {{ deadline: 60s }}\n  stop_grace: 5s\n\
             state_file: {}\n",
            dir.join("state.json").display()
        );
        RunSpec::from_yaml(&yaml).expect("the test's spec is valid")
    }

    /// A state file written for another route is refused before anything is written or started:
    /// the file keeps its bytes, and the error names both routes and the file.
    #[tokio::test]
    async fn another_routes_state_file_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let started = dir.path().join("started");
        let spec = spec(
            dir.path(),
            "shop",
            &format!("touch {}; exec sleep 1000", started.display()),
        );
        let store = StateFile::new(dir.path().join("state.json"));
        let other = ServiceState {
            route: "billing".into(),
            ..ServiceState::default()
        };
        store.save(&other).unwrap();
        let before = std::fs::read(store.path()).unwrap();
        let listen = "127.0.0.1:1".parse().unwrap();
        let error = match recover(&spec, listen, CancellationToken::new()).await {
            Err(e) => e,
            Ok(_) => panic!("another route's state file was accepted"),
        };
        let text = error.to_string();
        assert!(matches!(error, StartupError::Refused(_)), "{text}");
        for word in ["billing", "shop", "state.json"] {
            assert!(text.contains(word), "{word} in {text}");
        }
        assert_eq!(std::fs::read(store.path()).unwrap(), before);
        assert!(!started.exists(), "nothing was started");
    }

    /// A signal (the cancelled token) while the active workload starts stops the start and what
    /// it started: a requested stop, said as [`StartupError::Stopped`], not as a failed workload.
    #[tokio::test]
    async fn a_cancelled_start_stops_the_starting_workload_and_says_it_was_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        // Never ready: it binds nothing.
        let spec = spec(
            dir.path(),
            "shop",
            &format!("echo $$ >> {}; exec sleep 1000", pids.display()),
        );
        let cancel = CancellationToken::new();
        let start = tokio::spawn({
            let (spec, cancel) = (spec.clone(), cancel.clone());
            async move { recover(&spec, "127.0.0.1:1".parse().unwrap(), cancel).await }
        });
        let pid = pid_written(&pids, "the workload started", |_| true).await;
        cancel.cancel();
        let result = tokio::time::timeout(Duration::from_secs(60), start)
            .await
            .expect("the start ends once cancelled")
            .expect("the start does not panic");
        match result {
            Err(StartupError::Stopped(why)) => assert!(why.contains("v1"), "{why}"),
            Err(other) => panic!("said as {other:?}"),
            Ok(_) => panic!("a cancelled start served"),
        }
        let stopped = tokio::time::timeout(Duration::from_secs(30), async {
            while crate::driver::children::pid_running(pid) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(stopped.is_ok(), "the starting instance {pid} was stopped");
    }

    /// Session 36: what a binary upgrade's new process makes of each active instance in the old
    /// process's child journal: adopted when it runs as recorded with a pid the state file saved;
    /// down (to start itself, with its stale entries) when no process of it runs; refused when
    /// one runs that the state file does not name (it may serve: never started twice).
    #[test]
    fn an_upgrade_adopts_what_runs_starts_what_does_not_and_refuses_an_unrecorded_process() {
        let mut child = crate::test_support::sleeping_group_leader();
        let pid = child.id();
        let entry = |instance: usize, token: &str, pid: u32, ticks: Option<u64>| ChildEntry {
            token: token.into(),
            workload: "v1".into(),
            instance,
            command: "sleep".into(),
            pid: Some(pid),
            started_ticks: ticks,
            port: Some(25_100 + u16::try_from(instance).unwrap()),
            replaces: None,
        };
        let runs = entry(0, "t-0", pid, crate::driver::children::start_ticks(pid));
        // Another start time: the process it names is gone.
        let dead = entry(1, "t-1", pid, Some(1));
        let intent = ChildEntry {
            pid: None,
            ..entry(1, "t-2", 0, None)
        };
        let recorded = vec![runs.clone(), dead.clone(), intent.clone()];
        let workload = WorkloadSpec {
            command: Some("sleep".into()),
            instances: 2,
            ..WorkloadSpec::default()
        };
        let found = found_each(&recorded, "v1", &workload, &[pid]);
        let stale = vec![dead, intent];
        assert_eq!(
            found,
            Ok(vec![Found::Running(runs.clone()), Found::Down { stale }])
        );
        // Its process runs, but the state file saved another pid for the workload.
        let refused = found_each(&recorded, "v1", &workload, &[pid + 1]).unwrap_err();
        assert!(
            refused.contains("v1 instance 0 runs, but not as the state file records it"),
            "{refused}"
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}
