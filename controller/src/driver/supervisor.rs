//! Supervision of one process instance: a task owns the child process, reports each exit, and,
//! while its workload is supervised (it serves as the active backend), starts it again after an
//! exponential backoff, like Kubernetes' `CrashLoopBackOff` and systemd's `Restart=on-failure`.
//!
//! From the moment the exit is seen until the restarted process passes its readiness probe, the
//! endpoint is withdrawn from its route's traffic through the instance's [`EndpointGate`] (the
//! proxy's [`crossfade_proxy::Proxy::withdraw`]): whatever answers on the port meanwhile (another
//! server that took it, or nothing) is not the backend, so no request goes there, not even one
//! failing open; a request already in flight at the exit fails as it would.
//!
//! The restarted process listens on the port its predecessor had when 127.0.0.1 can bind it at
//! the restart, so the route's endpoint list does not change. When something else holds it by
//! then (another server, an outgoing connection's ephemeral source port), every restart there
//! would fail to bind for ever: the instance moves to another free port of its driver's
//! ([`super::process::Launch::keep_or_move_port`]: `port_range`, else an ephemeral port, as its
//! first start got one), which its spawn's journal entry records (a later run adopts it there);
//! its workload's endpoints follow at once ([`super::Workload::endpoints`]), and the route's once
//! the process there passed readiness ([`EndpointGate::moved`]: the old endpoint, withdrawn
//! until then, is replaced by the new one in one table generation).
//!
//! Backoff: [`INITIAL_BACKOFF`] after the first exit, doubling per exit in a row up to
//! [`MAX_BACKOFF`]; an instance that stayed up and ready [`STABLE_AFTER`] starts again from the
//! initial delay. A restarted instance is ready ([`Life::ready`]) once it answers its workload's
//! readiness probe, which the supervisor sends until it does, for at most the workload's
//! `readiness.deadline` (the bound its first start had): a restart not ready by then (it hangs
//! at start, never listens, answers 503 for good) is stopped as a workload is (SIGTERM to its
//! process group, SIGKILL after `stop_grace`), reported ([`InstanceEventKind::NotReady`]) and
//! started again after the backoff, which goes on doubling. Until session 35 it was probed for
//! ever, and `crossfade status` said "started again ... not ready yet" for as long.
//! It never gives up: a serving backend with no process is worse than one that keeps trying, and
//! each attempt is visible (event, metric, log).
//!
//! A binary upgrade of `crossfade run` holds the old process's instances ([`Hold`]): an exit is
//! acted on, and a restart waiting out its backoff starts, only once the hold is lifted (the
//! handover failed); released, never. The new process starts an instance that had no process at
//! its takeover itself, once the old one has handed over ([`start_down`]). A start after a crash
//! of `crossfade run` starts an instance of the workload it adopts that had no process (the dead
//! run was waiting out its backoff) the same way. Either goes on with each instance's backoff as
//! the previous supervisor saved it ([`Backoff`], the state file's `active_backoff`): an instance
//! down waits the rest of its wait ([`down_delay`]), and the delays go on doubling from there.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crossfade_proxy::weight::Slot;
use nix::sys::signal::Signal;
use tokio::process::Child;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::children::group_running;
use super::process::{signal_group, Launch, StartDown};

/// Delay before the first restart after an exit.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(500);

/// Longest delay between two restarts (the delay doubles per exit in a row up to this).
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// An instance that was ready this long before it exited is restarted after [`INITIAL_BACKOFF`]
/// again (one that never answered its readiness probe after a restart keeps its backoff).
pub const STABLE_AFTER: Duration = Duration::from_secs(60);

/// Where an instance stands in its restart backoff: what its supervisor publishes
/// ([`Supervision::backoff`]) and the state file saves per active instance (`active_backoff`), so
/// that a binary upgrade's new process, or a start after a crash of `crossfade run`, goes on with
/// the instance's backoff instead of [`INITIAL_BACKOFF`] (until session 38 each upgrade or crash
/// start put a crash-looping instance back to 500 ms, hammering whatever it fails on). Times are
/// wall-clock milliseconds since the Unix epoch, since they cross processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// Exits in a row (a failed start or a restart stopped as not ready counts as one), since its
    /// first start or since it last stayed ready [`STABLE_AFTER`].
    pub exits_in_a_row: u32,
    /// The delay its next exit gets before the restart, in milliseconds: [`INITIAL_BACKOFF`]
    /// doubled per exit in a row, at most [`MAX_BACKOFF`].
    pub next_restart_in_ms: u64,
    /// While it has no process and waits out its backoff: when its restart is due. `None` once
    /// started again.
    #[serde(default)]
    pub restart_due_unix_ms: Option<u64>,
    /// Since when its process has answered its readiness probe; `None` while not ready since
    /// its last start. Ready for [`STABLE_AFTER`], the instance is out of its backoff.
    #[serde(default)]
    pub ready_since_unix_ms: Option<u64>,
}

// === impl Backoff ===

impl Backoff {
    /// Whether the instance is out of its backoff at `now`: ready for [`STABLE_AFTER`] (its next
    /// exit gets [`INITIAL_BACKOFF`] again).
    pub fn settled(&self, now: SystemTime) -> bool {
        let stable = u64::try_from(STABLE_AFTER.as_millis()).unwrap_or(u64::MAX);
        self.ready_since_unix_ms
            .is_some_and(|since| unix_ms(now) >= since.saturating_add(stable))
    }

    /// The delay the instance's next exit gets, within [`INITIAL_BACKOFF`]..=[`MAX_BACKOFF`]
    /// whatever the file says.
    pub fn next_restart_in(&self) -> Duration {
        Duration::from_millis(self.next_restart_in_ms).clamp(INITIAL_BACKOFF, MAX_BACKOFF)
    }

    /// While it waits for its restart: the rest of that wait at `now` (zero once due), at most
    /// [`Backoff::next_restart_in`] (a clock set back does not make it wait longer than its
    /// backoff). `None` when it was not waiting.
    pub fn remaining(&self, now: SystemTime) -> Option<Duration> {
        let due = self.restart_due_unix_ms?;
        let rest = Duration::from_millis(due.saturating_sub(unix_ms(now)));
        Some(rest.min(self.next_restart_in()))
    }

    /// How long it has been ready at `now`, at most [`STABLE_AFTER`]; `None` when not ready.
    fn ready_for(&self, now: SystemTime) -> Option<Duration> {
        let since = self.ready_since_unix_ms?;
        Some(Duration::from_millis(unix_ms(now).saturating_sub(since)).min(STABLE_AFTER))
    }
}

/// `time` in milliseconds since the Unix epoch (0 before it).
fn unix_ms(time: SystemTime) -> u64 {
    ms(time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default())
}

/// `d` in whole milliseconds.
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// When an instance [`Down`] at a takeover is started, given the backoff its previous supervisor
/// saved (`saved`, read at `now`): `Some(delay)` after a fixed delay, `None` after its backoff's
/// next delay, as one more exit in a row.
/// - It was waiting for its restart: the rest of that wait (it continues the same wait).
/// - A backoff was saved, not waiting (its restarted process died unreported): its next delay.
/// - Nothing saved (a state file written before session 38, an instance that was not in a
///   backoff): a binary upgrade's new process after [`INITIAL_BACKOFF`], as for any first exit;
///   a start after a crash at once (the run that supervised it already waited some of it).
///
/// A start after a crash keeps the backoff because the instance is never the only one serving
/// there: such a start adopts a workload only beside an instance that answers its probe
/// ([`super::process::Unready::BesideReady`]), and starts the whole workload afresh, at once,
/// when none does.
pub fn down_delay(saved: Option<&Backoff>, start: &StartDown, now: SystemTime) -> Option<Duration> {
    match (saved, start) {
        (Some(saved), _) => saved.remaining(now),
        (None, StartDown::Handed(_)) => None,
        (None, StartDown::AtOnce) => Some(Duration::ZERO),
    }
}

/// What happened to a supervised instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceEvent {
    /// The backend slot the workload serves in.
    pub backend: Slot,
    /// The workload's name (`blue`, `green` or its configured name).
    pub workload: String,
    /// Which instance (0-based).
    pub instance: usize,
    /// The instance's endpoint (`127.0.0.1:{port}`): for an exit, the one in the route; for a
    /// restart, where the new process listens (the same one unless its port was taken).
    pub endpoint: SocketAddr,
    /// What happened.
    pub kind: InstanceEventKind,
}

/// The kinds of [`InstanceEvent`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceEventKind {
    /// The process exited on its own; it is started again after `restart_in`.
    Exited {
        /// The exit status as text (`exit status: 1`, `signal: 9 (SIGKILL)`).
        status: String,
        /// The backoff before the next start.
        restart_in: Duration,
    },
    /// A restarted process, or one adopted not ready, did not pass its readiness probe within
    /// its workload's `readiness.deadline`: it was stopped, and is started again after
    /// `restart_in`.
    NotReady {
        /// What the deadline counted from: its restart, or its adoption.
        since: ProbedSince,
        /// The workload's `readiness.deadline`.
        deadline: Duration,
        /// The last probe's failure (`connect failed: Connection refused (os error 111)`).
        last_probe: String,
        /// The backoff before the next start.
        restart_in: Duration,
    },
    /// Starting it again failed (e.g. the command was removed); the next try is after `restart_in`.
    RestartFailed {
        /// The operating system's error.
        error: String,
        /// The backoff before the next try.
        restart_in: Duration,
    },
    /// The process was started again: on the same port, or on the event's `endpoint` when its
    /// port was taken (`moved_from`).
    Restarted {
        /// The new process id.
        pid: u32,
        /// The process id it replaces.
        previous_pid: u32,
        /// Restarts of this instance so far.
        restarts: u64,
        /// The endpoint it had, when something else held that port at the restart and the
        /// instance moved to the event's `endpoint`; `None` when it kept its port.
        moved_from: Option<SocketAddr>,
        /// Its workload's `readiness.deadline`: not ready within it from now, it is stopped and
        /// started again ([`InstanceEventKind::NotReady`]).
        ready_within: Duration,
    },
    /// A restarted process passed its readiness probe: the event's `endpoint` serves again (the
    /// route's endpoint restored, or replaced by it when the restart moved).
    Ready,
}

/// What a not-ready instance's readiness deadline counts from ([`InstanceEventKind::NotReady`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbedSince {
    /// Its process was started again after an exit (or after a restart that was not ready).
    Restart,
    /// It was adopted while failing its readiness probe (a `crossfade run` binary upgrade's new
    /// process takes over what the old one ran, sick or not: [`super::process::Unready`]).
    Adoption,
}

// === impl ProbedSince ===

impl ProbedSince {
    /// The words that follow `not ready within its readiness deadline 30s` in the logs, the
    /// event `ActiveNotReady` and `crossfade status`: `after its restart`, `after it was
    /// adopted not ready`.
    pub fn after(self) -> &'static str {
        match self {
            ProbedSince::Restart => "after its restart",
            ProbedSince::Adoption => "after it was adopted not ready",
        }
    }
}

/// What an instance is doing, as its supervisor publishes it.
#[derive(Clone, Debug, Default)]
pub struct Life {
    /// A process runs now.
    pub running: bool,
    /// The process running now has answered its readiness probe: the first one before the
    /// workload was provisioned (or adopted), a restarted one once the supervisor's probe passed.
    pub ready: bool,
    /// The last exit status, once one exited.
    pub last_exit: Option<String>,
    /// The supervisor is done: the process exited and will not be started again.
    pub finished: bool,
}

/// Whether a supervisor acts on its instance's exit: `crossfade run`'s binary upgrade holds its
/// instances while a new process takes them over, and releases them to it once it has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Hold {
    /// As usual: an exit is acted on (endpoint withdrawn, process group ended, journal entry
    /// dropped, restart while supervised).
    #[default]
    Off,
    /// A new process is taking the instance over: an exit is acted on, and a restart waiting
    /// out its backoff started, only once the hold is lifted (the takeover failed); released
    /// meanwhile, not at all (the new process starts an instance that has no process).
    Held,
    /// A new process took the instance over (it supervises it now): this process lets it run
    /// and is done with it. Its exit is not acted on, and the process is not killed when this one
    /// exits (its `kill_on_drop` is disarmed).
    Released,
}

/// Where an instance's endpoint is taken out of its route's traffic while the instance cannot
/// serve, and put back once it can: the route's [`crate::traffic::TrafficSetter`] bound to the
/// route and the backend's slot ([`crate::traffic::RouteGate`]). Attached to a workload once its
/// endpoints are in the route ([`super::Workload::attach`]).
pub trait EndpointGate: Send + Sync {
    /// The instance at `endpoint` cannot serve from now on (its process exited): no request
    /// may go there, whatever answers on its address.
    fn withdraw(&self, endpoint: SocketAddr);
    /// The instance at `endpoint` serves again (its restart passed its readiness probe).
    fn restore(&self, endpoint: SocketAddr);
    /// The instance that was at `from` (withdrawn since its exit) serves at `to` now: its
    /// restart found the port taken, moved, and passed its readiness probe there.
    fn moved(&self, from: SocketAddr, to: SocketAddr);
}

/// The shared handle to an instance's supervisor.
pub struct Supervision {
    pid: AtomicU32,
    /// The port the instance listens on now (another after a restart that found it taken).
    port: AtomicU16,
    stopping: watch::Sender<bool>,
    /// Where to report, and under which backend: set once the workload is supervised (an
    /// instance [`Down`] starts only then).
    events: watch::Sender<Option<(Slot, mpsc::UnboundedSender<InstanceEvent>)>>,
    /// Where the instance's endpoint is withdrawn and restored: set once it is in a route.
    gate: Mutex<Option<Arc<dyn EndpointGate>>>,
    /// Whether an exit is acted on ([`Hold`]).
    hold: watch::Sender<Hold>,
    /// Held across a restart's check of the hold, its spawn and the new pid's publication, and
    /// by every change of the hold: once [`Supervision::hold`] has set [`Hold::Held`], no
    /// restart is half done and none starts, so [`Supervision::pid`] is the pid a binary
    /// upgrade's new process finds running (or none runs).
    spawning: Mutex<()>,
    /// Where it stands in its restart backoff, published before each event is reported (so an
    /// event's save carries it): `None` while out of it.
    backoff: Mutex<Option<Backoff>>,
}

impl Supervision {
    /// Where the instance stands in its restart backoff now ([`Backoff`]); `None` when it is not
    /// in one (no exit yet, or ready [`STABLE_AFTER`] since its last restart).
    pub fn backoff(&self) -> Option<Backoff> {
        let now = SystemTime::now();
        let backoff = *self.backoff.lock().unwrap_or_else(PoisonError::into_inner);
        backoff.filter(|b| !b.settled(now))
    }

    fn publish_backoff(&self, backoff: Option<Backoff>) {
        *self.backoff.lock().unwrap_or_else(PoisonError::into_inner) = backoff;
    }

    /// The current process id.
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::SeqCst)
    }

    /// The port the instance listens on now: its first one, or the one a restart moved it to.
    pub fn port(&self) -> u16 {
        self.port.load(Ordering::SeqCst)
    }

    /// Restart the instance whenever it exits on its own, reporting to `events` as `backend`.
    pub fn supervise(&self, backend: Slot, events: mpsc::UnboundedSender<InstanceEvent>) {
        self.events.send_replace(Some((backend, events)));
    }

    /// From now on the instance's endpoint is withdrawn through `gate` when its process exits
    /// on its own, and restored when a restart passed readiness.
    pub fn attach(&self, gate: Arc<dyn EndpointGate>) {
        *self.gate.lock().unwrap_or_else(PoisonError::into_inner) = Some(gate);
    }

    fn gate(&self) -> Option<Arc<dyn EndpointGate>> {
        self.gate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Holds, lifts or releases the instance ([`Hold`]). Returns once a restart under way (its
    /// spawn) is done: from then on, held or released, none is started.
    pub fn hold(&self, hold: Hold) {
        let _spawning = self.spawning.lock().unwrap_or_else(PoisonError::into_inner);
        self.hold.send_replace(hold);
    }

    /// Never restart again; the caller signals the process.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Where to report, and under which backend, once supervised.
    fn reporting(&self) -> Option<(Slot, mpsc::UnboundedSender<InstanceEvent>)> {
        self.events.borrow().clone()
    }
}

/// How often the supervisor of an adopted process looks whether it still runs.
pub const ADOPTED_POLL: Duration = Duration::from_millis(100);

/// The process an instance's supervisor waits on.
pub(super) enum Proc {
    /// Spawned by this process: its child, reaped with `waitpid`.
    Spawned(Child),
    /// Left running by a previous run and adopted ([`super::process::adopt`]): not a child of this
    /// process (its parent is now PID 1 or a subreaper, which reaps it), so no `waitpid`; its
    /// exit is seen within [`ADOPTED_POLL`] as its `/proc` entry going away, turning into a
    /// zombie, or showing another start time (the pid recycled).
    Adopted {
        /// Its process id.
        pid: u32,
        /// Its start time, clock ticks since boot (`/proc/<pid>/stat` field 22).
        started_ticks: u64,
    },
}

// === impl Proc ===

impl Proc {
    /// Lets the process run on after this one exits (a binary upgrade's new process supervises
    /// it now): a spawned child is forgotten, so that its `kill_on_drop` never fires.
    fn release(self, prefix: &str) {
        tracing::info!(target: "crossfade::workload", "[{prefix}] handed over to the new process; left running");
        self.forget();
    }

    /// [`Proc::release`] without a word: a process dropped after its release, whether it still
    /// runs or already exited (then reaped: nothing to kill either way).
    fn forget(self) {
        if let Proc::Spawned(child) = self {
            std::mem::forget(child);
        }
    }

    /// Waits until the process exits; its status as text. An adopted process's status is not
    /// ours to read (only its parent's `waitpid` gets it).
    async fn wait(&mut self) -> String {
        match self {
            Proc::Spawned(child) => match child.wait().await {
                Ok(s) => s.to_string(),
                Err(e) => format!("wait failed: {e}"),
            },
            Proc::Adopted { pid, started_ticks } => {
                while super::children::runs_as_recorded(*pid, Some(*started_ticks)) {
                    tokio::time::sleep(ADOPTED_POLL).await;
                }
                "exit status unknown: an adopted process, not this run's child".to_owned()
            }
        }
    }
}

/// The process a supervisor task owns, with the instance's hold: dropped while the hold is
/// [`Hold::Released`], a spawned child is let run ([`Proc::release`]) rather than killed by its
/// `kill_on_drop`. So the release takes effect when [`Supervision::hold`] is called, not when the
/// task next runs: the old process of a binary upgrade may exit, and its runtime drop the task,
/// before the task saw the release (a race that killed an instance the new process had adopted).
struct Owned {
    /// `None` once released.
    proc: Option<Proc>,
    hold: watch::Receiver<Hold>,
    prefix: String,
}

// === impl Owned ===

impl Owned {
    fn new(proc: Proc, hold: watch::Receiver<Hold>, prefix: &str) -> Self {
        Self {
            proc: Some(proc),
            hold,
            prefix: prefix.to_owned(),
        }
    }

    /// No process (an instance [`Down`] at a binary upgrade's takeover, until its start).
    fn none(hold: watch::Receiver<Hold>, prefix: &str) -> Self {
        Self {
            proc: None,
            hold,
            prefix: prefix.to_owned(),
        }
    }

    /// [`Proc::wait`]; never ready once released.
    async fn wait(&mut self) -> String {
        match self.proc.as_mut() {
            Some(proc) => proc.wait().await,
            None => std::future::pending().await,
        }
    }

    /// [`Proc::release`].
    fn release(mut self) {
        if let Some(proc) = self.proc.take() {
            proc.release(&self.prefix);
        }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if *self.hold.borrow() == Hold::Released {
            if let Some(proc) = self.proc.take() {
                proc.forget();
            }
        }
    }
}

/// What a restarted instance's supervisor saw first.
enum Restarted {
    /// It exited, with this status.
    Exited(String),
    /// A binary upgrade's new process took it over ([`Hold::Released`]).
    Released,
    /// It passed its readiness probe.
    Ready,
    /// Its readiness deadline passed: the last probe's failure.
    NotReady(String),
}

/// Starts the supervisor task of an instance: a freshly spawned one, or one adopted.
pub(super) fn start(
    launch: Launch,
    child: Proc,
    pid: u32,
) -> (Arc<Supervision>, watch::Receiver<Life>) {
    start_with(launch, Some(child), pid, true, None)
}

/// An instance of a workload taken over from another `crossfade run` that had no process then:
/// it had exited and was waiting out its restart backoff there (or exited during a binary
/// upgrade's handover). This process starts it, as the other one's supervisor would have, once
/// `start` allows it and the workload is supervised: a binary upgrade's new process only once the
/// old process has handed the workload over (until then a failed handover gives it back to the
/// old process, which restarts it itself); a start after a crash at once.
pub(super) struct Down {
    /// When it is started ([`StartDown`]).
    pub(super) start: StartDown,
    /// Its child-journal entries, none of which names a running process: what they left
    /// (processes its last process forked) is stopped, and they are dropped, before the start.
    pub(super) stale: Vec<super::children::ChildEntry>,
}

/// The exit status an instance [`Down`] at a binary upgrade's takeover is reported with.
pub const DOWN_AT_TAKEOVER: &str = "no process when this crossfade took it over in a binary \
                                    upgrade: it was waiting for its restart";

/// The exit status an instance [`Down`] at a start after a crash is reported with.
pub const DOWN_AT_START: &str = "no process when this crossfade started: the previous run was \
                                 waiting to restart it when it ended";

// === impl Down ===

impl Down {
    /// Stops what the stale entries prove to be the instance's own and still running
    /// ([`super::children::stop_leftovers`]: by start time or token, never an unrelated process)
    /// and drops them from the journal.
    fn clear(self, launch: &Launch, prefix: &str) {
        let stopped = super::children::stop_leftovers(&self.stale);
        if !stopped.is_empty() {
            let named: Vec<String> = stopped.iter().map(ToString::to_string).collect();
            tracing::warn!(target: "crossfade::workload", "[{prefix}] stopped what its last process left running: {}", named.join(", "));
        }
        if let Some(journal) = &launch.journal {
            for entry in &self.stale {
                journal.forget(&entry.token, None);
            }
        }
    }
}

/// Starts the supervisor task of an instance [`Down`] at a takeover: no process, not ready (its
/// endpoint withdrawn once attached), pid 0. Once supervised and, after a binary upgrade
/// ([`StartDown::Handed`]), once its token is cancelled, it is reported as an exit
/// ([`DOWN_AT_TAKEOVER`], [`DOWN_AT_START`]) and started after the rest of the wait its previous
/// supervisor saved (`launch.backoff`), else after [`INITIAL_BACKOFF`] at an upgrade and at once
/// after a crash ([`StartDown::AtOnce`]) ([`down_delay`]); then supervised as any restart is. A
/// stop or release before then ends it with nothing started.
pub(super) fn start_down(launch: Launch, down: Down) -> (Arc<Supervision>, watch::Receiver<Life>) {
    start_with(launch, None, 0, false, Some(down))
}

/// Starts the supervisor task of an instance adopted while it fails its readiness probe (a binary
/// upgrade's new process takes over what the old one ran, sick or not; a start after a crash
/// adopts it beside instances that are ready, [`super::process::Unready::BesideReady`]): it
/// counts as a restart that is not ready yet, probed until it is ready (its endpoint restored)
/// or until its readiness deadline passes (then stopped and started again), as [`start`]'s
/// after an exit.
pub(super) fn start_unready(
    launch: Launch,
    child: Proc,
    pid: u32,
) -> (Arc<Supervision>, watch::Receiver<Life>) {
    start_with(launch, Some(child), pid, false, None)
}

/// Starts the supervisor task: of `child`, `ready` or not (adopted not ready), or of an instance
/// `down` (then `child` is `None`, and it is not ready).
fn start_with(
    launch: Launch,
    child: Option<Proc>,
    pid: u32,
    ready: bool,
    down: Option<Down>,
) -> (Arc<Supervision>, watch::Receiver<Life>) {
    let supervision = Arc::new(Supervision {
        pid: AtomicU32::new(pid),
        port: AtomicU16::new(launch.port),
        stopping: watch::Sender::new(false),
        events: watch::Sender::new(None),
        gate: Mutex::new(None),
        hold: watch::Sender::new(Hold::Off),
        spawning: Mutex::new(()),
        backoff: Mutex::new(None),
    });
    let (life_tx, life) = watch::channel(Life {
        running: child.is_some(),
        ready,
        ..Life::default()
    });
    // Owned from here, so that a release holds even for a task that never ran.
    let (hold, prefix) = (supervision.hold.subscribe(), launch.prefix());
    let child = match child {
        Some(child) => Owned::new(child, hold, &prefix),
        None => Owned::none(hold, &prefix),
    };
    tokio::spawn(run(
        launch,
        child,
        Arc::clone(&supervision),
        life_tx,
        ready,
        down,
    ));
    (supervision, life)
}

async fn run(
    mut launch: Launch,
    mut child: Owned,
    sup: Arc<Supervision>,
    life: watch::Sender<Life>,
    ready: bool,
    down: Option<Down>,
) {
    let prefix = launch.prefix();
    let mut stopping = sup.stopping.subscribe();
    let mut hold = sup.hold.subscribe();
    // The backoff its previous supervisor saved, unless it has been ready long enough since.
    let saved = (launch.backoff.take()).filter(|b| !b.settled(SystemTime::now()));
    // Down at a takeover: started once supervised (unsupervised, an exit is not restarted) and,
    // at a binary upgrade, once the old process has handed it over.
    let mut first_exit = None;
    // The delay before that start, when it is not the backoff's.
    let mut first_delay = None;
    if let Some(down) = down {
        let mut supervised = sup.events.subscribe();
        let startable = async {
            if let StartDown::Handed(committed) = &down.start {
                committed.cancelled().await;
            }
            let _ = supervised.wait_for(Option::is_some).await;
        };
        let committed = tokio::select! {
            () = startable => true,
            _ = stopping.wait_for(|s| *s) => false,
            _ = hold.wait_for(|h| *h == Hold::Released) => false,
        };
        if !committed {
            // Nothing of it runs, and nothing is started: what its stale entries name is left
            // to whoever supervises it now (the old process, when the handover failed).
            life.send_modify(|l| l.finished = true);
            return;
        }
        let status = match down.start {
            StartDown::Handed(_) => DOWN_AT_TAKEOVER,
            StartDown::AtOnce => DOWN_AT_START,
        };
        first_delay = down_delay(saved.as_ref(), &down.start, SystemTime::now());
        down.clear(&launch, &prefix);
        first_exit = Some(status.to_owned());
    }
    let mut backoff = saved.map_or(INITIAL_BACKOFF, |b| b.next_restart_in());
    let mut exits = saved.map_or(0, |b| b.exits_in_a_row);
    // Published before each event is reported, so that the save the event makes carries it.
    let publish = |exits: u32, backoff: Duration, due: Option<u64>, ready_at: Option<u64>| {
        let record = Backoff {
            exits_in_a_row: exits,
            next_restart_in_ms: ms(backoff),
            restart_due_unix_ms: due,
            ready_since_unix_ms: ready_at,
        };
        sup.publish_backoff((exits > 0 || due.is_some()).then_some(record));
    };
    let mut restarts = 0;
    // The instance's endpoint in the route: its first one until a restart that moved is ready.
    let mut routed = launch.endpoint();
    // Since when the process running now has been ready (the first one: from the start, unless
    // adopted not ready).
    // Adopted ready: for as long as its saved backoff says it has been (so that a takeover does
    // not restart its way to `STABLE_AFTER`).
    let ready_for = (saved.and_then(|b| b.ready_for(SystemTime::now()))).unwrap_or_default();
    let mut ready_since = ready.then(|| {
        let now = Instant::now();
        now.checked_sub(ready_for).unwrap_or(now)
    });
    let ready_at = |ready_for: Duration| unix_ms(SystemTime::now()).saturating_sub(ms(ready_for));
    publish(exits, backoff, None, ready.then(|| ready_at(ready_for)));
    // The restarted (or adopted) process was stopped for not passing readiness in time: since
    // when, its deadline and last probe, for the next report.
    let mut unready: Option<(ProbedSince, Duration, String)> = None;
    loop {
        let status = if let Some(status) = first_exit.take() {
            status
        } else if ready_since.is_some() {
            tokio::select! {
                status = child.wait() => status,
                _ = hold.wait_for(|h| *h == Hold::Released) => return child.release(),
            }
        } else {
            // Restarted: ready once its probe passes (a rollback counts it as down until then).
            let step = {
                let wait = child.wait();
                tokio::pin!(wait);
                tokio::select! {
                    // An exit first: a probe that passed after the process died (another server
                    // answering on the port) does not make it ready.
                    biased;
                    status = &mut wait => Restarted::Exited(status),
                    _ = hold.wait_for(|h| *h == Hold::Released) => Restarted::Released,
                    ready = launch.ready_within_deadline() => match ready {
                        Ok(()) => Restarted::Ready,
                        Err(last) => Restarted::NotReady(last),
                    },
                }
            };
            match step {
                Restarted::Exited(status) => status,
                Restarted::Released => return child.release(),
                Restarted::NotReady(last) => {
                    // Not during a binary upgrade's handover: the new process may be adopting
                    // it (it probes readiness itself); released, it is the new process's.
                    let lifted = hold.wait_for(|h| *h != Hold::Held).await.map(|h| *h);
                    if matches!(lifted, Ok(Hold::Released)) {
                        return child.release();
                    }
                    let deadline = launch.readiness_deadline();
                    // Not ready since the start of this task (adopted so), or since a restart.
                    let since = match restarts {
                        0 => ProbedSince::Adoption,
                        _ => ProbedSince::Restart,
                    };
                    tracing::warn!(target: "crossfade::workload", "[{prefix}] not ready within its readiness deadline {} {} (last probe: {last}): stopping it (SIGTERM, SIGKILL after stop_grace) to start it again", crate::spec::human(deadline), since.after());
                    let status = stop_unready(&mut child, sup.pid(), launch.stop_grace()).await;
                    unready = Some((since, deadline, last));
                    status
                }
                Restarted::Ready => {
                    ready_since = Some(Instant::now());
                    publish(exits, backoff, None, Some(ready_at(Duration::ZERO)));
                    let endpoint = launch.endpoint();
                    // Ready before the gate is read: an attach that reads `ready` after setting
                    // the gate ([`super::process::Instances::attach`]) then either sees it ready
                    // (and withdraws nothing) or is seen here (and its withdrawal is undone).
                    life.send_modify(|l| l.ready = true);
                    match sup.gate() {
                        Some(gate) if endpoint != routed => gate.moved(routed, endpoint),
                        Some(gate) => gate.restore(endpoint),
                        None => {}
                    }
                    routed = endpoint;
                    if let Some((backend, events)) = sup.reporting() {
                        let _ = events.send(InstanceEvent {
                            backend,
                            workload: launch.workload.clone(),
                            instance: launch.index,
                            endpoint,
                            kind: InstanceEventKind::Ready,
                        });
                    }
                    tokio::select! {
                        status = child.wait() => status,
                        _ = hold.wait_for(|h| *h == Hold::Released) => return child.release(),
                    }
                }
            }
        };
        // Held by a binary upgrade: the new process may be adopting it (or has): nothing is
        // done before the hold is lifted, and nothing at all once it is released.
        let lifted = hold.wait_for(|h| *h != Hold::Held).await.map(|h| *h);
        if !matches!(lifted, Ok(Hold::Off)) {
            tracing::info!(target: "crossfade::workload", "[{prefix}] exited ({status}) after its handover to a new process; left to it");
            return;
        }
        // First of all: another server may take the port at any moment from now on. A stop
        // needs none: the instance's endpoints left the route before it.
        if let (Some(gate), false) = (sup.gate(), *stopping.borrow()) {
            gate.withdraw(routed);
        }
        tracing::info!(target: "crossfade::workload", "[{prefix}] exited ({status})");
        let down = |finished| Life {
            running: false,
            ready: false,
            last_exit: Some(status.clone()),
            finished,
        };
        life.send_replace(down(false));
        // What it forked still runs in its group (a start script that runs the server as a
        // child): stopped before a restart on the same port, and before the instance counts as
        // finished, so that a stop leaves nothing behind.
        // Pid 0: no process (down at a takeover; `Down::clear` stopped what its entries left).
        if sup.pid() != 0 {
            end_group(
                sup.pid(),
                launch.token().as_deref(),
                launch.stop_grace(),
                &prefix,
            )
            .await;
            forget_exited(&sup, &launch, &mut hold).await;
        }
        let report = sup.reporting();
        let (Some((backend, events)), false) = (report, *stopping.borrow()) else {
            life.send_replace(down(true));
            return;
        };
        if ready_since
            .take()
            .is_some_and(|t| t.elapsed() >= STABLE_AFTER)
        {
            backoff = INITIAL_BACKOFF;
            exits = 0;
        }
        let (workload, instance) = (launch.workload.clone(), launch.index);
        let report = |endpoint, kind| {
            let _ = events.send(InstanceEvent {
                backend,
                workload: workload.clone(),
                instance,
                endpoint,
                kind,
            });
        };
        let mut failure: Option<String> = None;
        let mut moved_from = None;
        let next = loop {
            let restart_in = match first_delay.take() {
                Some(delay) => delay,
                None => {
                    exits = exits.saturating_add(1);
                    let next = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    next
                }
            };
            let due = unix_ms(SystemTime::now()).saturating_add(ms(restart_in));
            publish(exits, backoff, Some(due), None);
            report(
                routed,
                match (failure.take(), unready.take()) {
                    (Some(error), _) => InstanceEventKind::RestartFailed { error, restart_in },
                    (None, Some((since, deadline, last_probe))) => InstanceEventKind::NotReady {
                        since,
                        deadline,
                        last_probe,
                        restart_in,
                    },
                    (None, None) => InstanceEventKind::Exited {
                        status: status.clone(),
                        restart_in,
                    },
                },
            );
            tokio::select! {
                () = tokio::time::sleep(restart_in) => {}
                _ = stopping.wait_for(|s| *s) => break None,
                _ = hold.wait_for(|h| *h == Hold::Released) => break None,
            }
            // Not during a binary upgrade's handover: the new process starts an instance that
            // has no process when it takes over, so this one waits for the handover's end
            // (lifted: it failed) and starts nothing once released. Until session 36 the
            // restart went ahead while held, and the new process refused the upgrade.
            let attempt = loop {
                match restart(&mut launch, &sup, &mut moved_from, &prefix) {
                    Attempt::Held => {
                        let lifted = hold.wait_for(|h| *h != Hold::Held).await.map(|h| *h);
                        if !matches!(lifted, Ok(Hold::Off)) || *stopping.borrow() {
                            break None;
                        }
                    }
                    Attempt::Failed(e) => break Some(Err(e)),
                    Attempt::Spawned(next, previous_pid) => break Some(Ok((next, previous_pid))),
                }
            };
            match attempt {
                None => break None,
                Some(Ok(spawned)) => break Some(spawned),
                Some(Err(e)) => failure = Some(e),
            }
        };
        let Some((next, previous_pid)) = next else {
            life.send_replace(down(true));
            return;
        };
        let pid = next.id().unwrap_or_default();
        child = Owned::new(Proc::Spawned(next), sup.hold.subscribe(), &prefix);
        if *stopping.borrow() {
            // A stop that read the previous pid missed this process: stop it here.
            signal_group(pid, Signal::SIGTERM);
        }
        restarts += 1;
        publish(exits, backoff, None, None);
        let (workload, instance, port) = (&launch.workload, launch.index, launch.port);
        tracing::warn!(%workload, instance, pid, port, restarts, "instance restarted");
        life.send_replace(Life {
            running: true,
            ready: false,
            last_exit: Some(status.clone()),
            finished: false,
        });
        report(
            launch.endpoint(),
            InstanceEventKind::Restarted {
                pid,
                previous_pid,
                restarts,
                moved_from,
                ready_within: launch.readiness_deadline(),
            },
        );
    }
}

/// What [`restart`] did.
enum Attempt {
    /// Nothing: a binary upgrade holds (or took over) the instance.
    Held,
    /// Nothing was started: why (no free port, the spawn failed).
    Failed(String),
    /// The new process, and the pid it replaces ([`Supervision::pid`] is the new one's).
    Spawned(Child, u32),
}

/// Starts the instance's next process, unless a binary upgrade holds or took over the instance:
/// on its port, or another free one when its port was taken (`moved_from` set to the endpoint it
/// had). The hold is read, the process spawned and its pid published under the supervision's
/// `spawning` lock, which [`Supervision::hold`] takes too.
fn restart(
    launch: &mut Launch,
    sup: &Supervision,
    moved_from: &mut Option<SocketAddr>,
    prefix: &str,
) -> Attempt {
    let _spawning = sup.spawning.lock().unwrap_or_else(PoisonError::into_inner);
    if *sup.hold.borrow() != Hold::Off {
        return Attempt::Held;
    }
    let before = launch.endpoint();
    match launch.keep_or_move_port() {
        Ok(Some(taken)) => {
            let port = launch.port;
            tracing::warn!(target: "crossfade::workload", "[{prefix}] port {taken} is taken by another process: restarting on port {port}");
            sup.port.store(port, Ordering::SeqCst);
            *moved_from = Some(before);
        }
        Ok(None) => {}
        Err(e) => return Attempt::Failed(e),
    }
    match launch.spawn(Some(sup.pid())) {
        Ok(next) => {
            let pid = next.id().unwrap_or_default();
            let previous_pid = sup.pid.swap(pid, Ordering::SeqCst);
            Attempt::Spawned(next, previous_pid)
        }
        Err(e) => Attempt::Failed(e.to_string()),
    }
}

/// Stops a restarted process that did not pass readiness within its deadline, as a workload's
/// stop does: SIGTERM to its process group (`pid`), SIGKILL `grace` later if it still runs.
/// Returns its exit status; what else of its group runs is [`end_group`]'s, as after any exit.
async fn stop_unready(child: &mut Owned, pid: u32, grace: Duration) -> String {
    signal_group(pid, Signal::SIGTERM);
    if let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
        return status;
    }
    signal_group(pid, Signal::SIGKILL);
    child.wait().await
}

/// Drops the exited instance's child-journal entry ([`Launch::exited`]) once its group is empty,
/// unless a binary upgrade took the journal over meanwhile. From its freeze on ([`Hold::Held`])
/// the new process reads and writes the journal, and this process's copy of it is stale: written
/// then, it would replace the new process's entries (a crash of the new process would then find
/// neither its instances nor what they left). So the entry is dropped once the hold is lifted (the
/// takeover failed: the journal is this process's again), and never once the instance is
/// released (the new process found no process of it and dropped its entries itself:
/// [`Down::clear`]). The hold is read and the journal written under `spawning`, which every
/// change of the hold takes, so a freeze cannot come between the two.
async fn forget_exited(sup: &Supervision, launch: &Launch, hold: &mut watch::Receiver<Hold>) {
    loop {
        if hold.wait_for(|h| *h != Hold::Held).await.is_err() {
            return;
        }
        let _spawning = sup.spawning.lock().unwrap_or_else(PoisonError::into_inner);
        match *sup.hold.borrow() {
            Hold::Off => return launch.exited(sup.pid()),
            Hold::Released => return,
            // Frozen again between the wait and the lock.
            Hold::Held => {}
        }
    }
}

/// How often [`end_group`] looks whether the group is empty.
const GROUP_POLL: Duration = Duration::from_millis(50);

/// How long [`end_group`] waits, after its SIGKILL, for the killed processes to be reaped.
const REAP_WAIT: Duration = Duration::from_secs(5);

/// The instance's main process `pid` exited (and was reaped); the rest of its process group (the
/// instance started it as a group leader, so the group is the instance's alone) gets SIGTERM, and
/// SIGKILL after `grace`, as systemd's `KillMode=control-group` does. So does what it started that
/// left the group but still carries the instance's `token` in its environment
/// ([`super::children::escaped`]: a server that daemonizes, `setsid`), with a warning that names
/// it and says the command must keep its server in the foreground: unstopped, it would hold its
/// port and serve unsupervised after a rollback, a stop or the end of `crossfade run`. What is
/// already gone is left alone. Returns once nothing is left, or [`REAP_WAIT`] after the SIGKILL.
async fn end_group(pid: u32, token: Option<&str>, grace: Duration, prefix: &str) {
    let escaped = || token.map_or_else(Vec::new, |t| super::children::escaped(t, pid));
    let alive = || group_running(pid) || !escaped().is_empty();
    let outside = escaped();
    if !group_running(pid) && outside.is_empty() {
        return;
    }
    if group_running(pid) {
        tracing::warn!(target: "crossfade::workload", "[{prefix}] its main process exited, what it started still runs in its process group {pid}: SIGTERM");
    }
    if !outside.is_empty() {
        let named: Vec<String> = outside
            .iter()
            .map(|(p, name)| format!("pid {p} ({name})"))
            .collect();
        tracing::warn!(target: "crossfade::workload", "[{prefix}] its main process exited, and {} it started left its process group {pid} (a daemon mode or setsid): SIGTERM. A workload's command must keep its server in the foreground (e.g. nginx `-g 'daemon off;'`), or crossfade cannot supervise or stop it", named.join(", "));
    }
    signal_group(pid, Signal::SIGTERM);
    super::children::signal_escaped(&outside, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while alive() && Instant::now() < deadline {
        tokio::time::sleep(GROUP_POLL).await;
    }
    if !alive() {
        return;
    }
    tracing::warn!(target: "crossfade::workload", "[{prefix}] process group {pid}, or what left it, still running {} after SIGTERM: SIGKILL", crate::spec::human(grace));
    signal_group(pid, Signal::SIGKILL);
    super::children::signal_escaped(&escaped(), Signal::SIGKILL);
    let reaped = Instant::now() + REAP_WAIT;
    while alive() && Instant::now() < reaped {
        tokio::time::sleep(GROUP_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::children::{pid_running, process_group};
    use crate::spec::WorkloadSpec;
    use crate::test_support::pid_written;

    /// How long a test waits for its supervisor to finish or report.
    const PATIENCE: Duration = Duration::from_secs(60);

    /// Spawns `launch`'s process and starts its supervisor task ([`start`]): the supervisor's
    /// handle, its [`Life`] and the process's pid.
    fn spawned(launch: Launch) -> (Arc<Supervision>, watch::Receiver<Life>, u32) {
        let child = launch.spawn(None).expect("the instance starts");
        let pid = child.id().unwrap_or_default();
        let (supervision, life) = start(launch, Proc::Spawned(child), pid);
        (supervision, life, pid)
    }

    /// An instance supervised as blue's ([`spawned`], then [`Supervision::supervise`]: started
    /// again after each exit); with it the events its supervisor reports.
    type Supervised = (
        Arc<Supervision>,
        watch::Receiver<Life>,
        u32,
        mpsc::UnboundedReceiver<InstanceEvent>,
    );

    /// [`spawned`] and supervised as blue's ([`Supervised`]).
    fn supervised(launch: Launch) -> Supervised {
        let (supervision, life, pid) = spawned(launch);
        let (tx, rx) = mpsc::unbounded_channel();
        supervision.supervise(Slot::Blue, tx);
        (supervision, life, pid, rx)
    }

    /// Stops the instance as `Instances::stop` does (no restart from now on, `signal` to the
    /// process group of the process it runs now) and waits until its supervisor is done.
    async fn stop_and_wait(
        supervision: &Supervision,
        life: &mut watch::Receiver<Life>,
        signal: Signal,
    ) {
        supervision.stop();
        super::signal_group(supervision.pid(), signal);
        tokio::time::timeout(PATIENCE, life.wait_for(|l| l.finished))
            .await
            .expect("the supervisor finishes")
            .expect("the supervisor reports");
    }

    /// Trial 13, N3: a start script that runs the server as a child (no `exec`) and dies leaves
    /// the child in the instance's process group, holding its port; the restart must first stop
    /// it, or the new process cannot bind and the orphan serves unsupervised forever.
    #[tokio::test]
    async fn a_restart_first_stops_what_the_exited_instance_left_in_its_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let script = format!("sleep 1000 & echo $! >> {}; wait", pids.display());
        let spec = WorkloadSpec {
            command: Some("sh".into()),
            args: vec!["-c".into(), script],
            stop_grace: Duration::from_secs(30),
            ..WorkloadSpec::default()
        };
        let (supervision, mut life, pid, mut rx) = supervised(Launch::new("blue", 0, 1, spec));
        let orphan = pid_written(&pids, "the script's child started", |_| true).await;
        assert!(group_running(pid));
        // The main process alone dies (as `kill -9` of the script's shell); its child lives on.
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
        tokio::time::timeout(PATIENCE, async {
            loop {
                let event = rx.recv().await.expect("an event");
                if let InstanceEventKind::Restarted { .. } = event.kind {
                    return;
                }
            }
        })
        .await
        .expect("the instance is restarted");
        assert!(!group_running(pid), "the exited instance's group is empty");
        assert!(
            !pid_running(orphan),
            "the orphan {orphan} is stopped before the restart"
        );

        // The restarted process's group, as `Instances::stop` reads it.
        stop_and_wait(&supervision, &mut life, Signal::SIGKILL).await;
    }

    /// Runtry 30: a server that left the instance's process group (`setsid`, a daemon mode) got
    /// no signal when the instance stopped and ran on, unsupervised. It carries the spawn's token
    /// ([`super::super::children::TOKEN_VAR`]), here without a journal, and is stopped with it.
    #[tokio::test]
    async fn a_stop_also_stops_what_left_the_instances_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let script = format!("setsid sleep 1000 & echo $! >> {}; wait", pids.display());
        let spec = WorkloadSpec {
            command: Some("sh".into()),
            args: vec!["-c".into(), script],
            stop_grace: Duration::from_secs(30),
            ..WorkloadSpec::default()
        };
        let (supervision, mut life, pid) = spawned(Launch::new("green", 0, 1, spec));
        // Out of the group once `setsid` has run (its pid is `sleep`'s).
        let escaped = pid_written(&pids, "the script's server left its process group", |e| {
            process_group(e).is_some_and(|g| g != pid)
        })
        .await;

        // As `Instances::stop`: no restart, SIGTERM to the instance's group.
        stop_and_wait(&supervision, &mut life, Signal::SIGTERM).await;
        let running = pid_running(escaped);
        // Leaves nothing behind when the assertion fails.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(escaped as i32), Signal::SIGKILL);
        assert!(
            !running,
            "{escaped}, which left the group, is stopped with the instance"
        );
    }

    /// What a gate was told, in order.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<String>>);

    impl EndpointGate for Recorded {
        fn withdraw(&self, endpoint: SocketAddr) {
            self.0.lock().unwrap().push(format!("withdraw {endpoint}"));
        }
        fn restore(&self, endpoint: SocketAddr) {
            self.0.lock().unwrap().push(format!("restore {endpoint}"));
        }
        fn moved(&self, from: SocketAddr, to: SocketAddr) {
            self.0.lock().unwrap().push(format!("moved {from} {to}"));
        }
    }

    /// Trial 32, A: an instance that exits on its own has its endpoint withdrawn at once, even
    /// unsupervised (a preview, which is not restarted: withdrawn until its endpoints leave the
    /// route); one stopped on purpose is not (its endpoints left the route before the stop).
    #[tokio::test]
    async fn an_exit_withdraws_the_endpoint_and_a_stop_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let hold = dir.path().join("hold");
        // Exits once the test removed the hold file, after the gate is attached.
        let held = format!(
            "while [ -e '{}' ]; do sleep 0.01; done; exit 3",
            hold.display()
        );
        for (exits, script) in [(true, held.as_str()), (false, "exec sleep 1000")] {
            std::fs::write(&hold, "").unwrap();
            let spec = WorkloadSpec {
                command: Some("sh".into()),
                args: vec!["-c".into(), script.into()],
                ..WorkloadSpec::default()
            };
            let (supervision, mut life, pid) = spawned(Launch::new("green", 0, 41_001, spec));
            let gate = Arc::new(Recorded::default());
            supervision.attach(Arc::clone(&gate) as Arc<dyn EndpointGate>);
            std::fs::remove_file(&hold).unwrap();
            if !exits {
                supervision.stop();
                super::signal_group(pid, Signal::SIGTERM);
            }
            tokio::time::timeout(PATIENCE, life.wait_for(|l| l.finished))
                .await
                .expect("the supervisor finishes")
                .expect("the supervisor reports");
            let told = gate.0.lock().unwrap().clone();
            let expected: &[&str] = if exits {
                &["withdraw 127.0.0.1:41001"]
            } else {
                &[]
            };
            assert_eq!(told, expected, "{script}");
        }
    }

    /// CI rehearsal 0 of session 35 (`run_upgrade::an_old_process_stopped_during_the_handover_...`):
    /// the old process of a binary upgrade released its instances and exited before one of their
    /// supervisor tasks ran again; the runtime dropped that task, and its child's `kill_on_drop`
    /// killed an instance the new process had adopted. A release holds from the call: here no
    /// supervisor task ever runs before the runtime is dropped.
    #[test]
    fn a_released_instance_survives_its_supervisor_task_dropped_before_it_ran() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let spawn = |supervisions: &mut Vec<(Arc<Supervision>, u32)>| {
            let spec = WorkloadSpec {
                command: Some("sleep".into()),
                args: vec!["1000".into()],
                ..WorkloadSpec::default()
            };
            let (supervision, _life, pid) =
                spawned(Launch::new("blue", supervisions.len(), 1, spec));
            supervisions.push((supervision, pid));
        };
        let mut released = Vec::new();
        let mut kept = Vec::new();
        runtime.block_on(async {
            spawn(&mut released);
            spawn(&mut kept);
            released[0].0.hold(Hold::Released);
        });
        drop(runtime);
        let (released, kept) = (released[0].1, kept[0].1);
        // The one not released was killed by its `kill_on_drop`, as before (a zombie: reaped by
        // no one until this test process exits, which `pid_running` does not count).
        for _ in 0..1000 {
            if !pid_running(kept) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            !pid_running(kept),
            "an instance not released is killed with its supervisor"
        );
        assert!(pid_running(released), "the released instance was killed");
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(released as i32), Signal::SIGKILL);
    }

    /// Session 35: a restarted instance that never passes readiness (here it never listens) was
    /// probed for ever, its endpoint withdrawn and `crossfade status` saying "not ready yet" for
    /// as long. Now it is stopped once its workload's `readiness.deadline` has passed, reported
    /// with the last probe and the backoff (which goes on doubling), and started again.
    #[tokio::test]
    async fn a_restart_not_ready_within_its_readiness_deadline_is_stopped_and_started_again() {
        let dir = tempfile::tempdir().unwrap();
        let (started, hold) = (dir.path().join("started"), dir.path().join("hold"));
        std::fs::write(&hold, "").unwrap();
        // The first process exits once the test removed the hold file; every later one never
        // listens (nothing answers on port 1).
        let script = format!(
            "if [ -e '{s}' ]; then exec sleep 1000; fi; touch '{s}'; \
             while [ -e '{h}' ]; do sleep 0.01; done; exit 3",
            s = started.display(),
            h = hold.display()
        );
        let spec = WorkloadSpec {
            command: Some("sh".into()),
            args: vec!["-c".into(), script],
            readiness: crate::spec::ReadinessConfig {
                timeout: Duration::from_millis(100),
                interval: Duration::from_millis(100),
                deadline: Duration::from_millis(300),
                ..crate::spec::ReadinessConfig::default()
            },
            stop_grace: Duration::from_secs(5),
            ..WorkloadSpec::default()
        };
        let (supervision, mut life, _, mut rx) = supervised(Launch::new("blue", 0, 1, spec));
        std::fs::remove_file(&hold).unwrap();

        let first = next_event(&mut rx).await;
        assert!(
            matches!(first, InstanceEventKind::Exited { restart_in, .. } if restart_in == INITIAL_BACKOFF),
            "{first:?}"
        );
        let InstanceEventKind::Restarted { pid: unready, .. } = next_event(&mut rx).await else {
            panic!("a restart")
        };
        match next_event(&mut rx).await {
            InstanceEventKind::NotReady {
                since,
                deadline,
                last_probe,
                restart_in,
            } => {
                assert_eq!(since, ProbedSince::Restart);
                assert_eq!(deadline, Duration::from_millis(300));
                assert!(last_probe.contains("connect"), "{last_probe}");
                assert_eq!(restart_in, INITIAL_BACKOFF * 2, "the backoff goes on");
            }
            other => panic!("the restart not ready within its deadline: {other:?}"),
        }
        assert!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(unready as i32), None).is_err(),
            "the restart that was not ready ({unready}) is stopped"
        );
        let InstanceEventKind::Restarted {
            pid: again,
            previous_pid,
            ..
        } = next_event(&mut rx).await
        else {
            panic!("started again")
        };
        assert_eq!(previous_pid, unready);
        assert_ne!(again, unready);

        stop_and_wait(&supervision, &mut life, Signal::SIGKILL).await;
    }

    /// A workload whose instances run `sh -c script` (which exits), its readiness deadline out of
    /// reach of the paused clock, which runs the restarts' readiness probes (each refused) far
    /// faster than such a process lives: exits, not restarts stopped as not ready in time, are
    /// what the tests using it count.
    fn exiting(script: &str) -> WorkloadSpec {
        WorkloadSpec {
            command: Some("sh".into()),
            args: vec!["-c".into(), script.into()],
            readiness: crate::spec::ReadinessConfig {
                deadline: Duration::from_secs(365 * 24 * 3600),
                ..crate::spec::ReadinessConfig::default()
            },
            ..WorkloadSpec::default()
        }
    }

    /// The next event, within 30 s.
    async fn next_event(rx: &mut mpsc::UnboundedReceiver<InstanceEvent>) -> InstanceEventKind {
        tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("an event within 30 s")
            .expect("an event")
            .kind
    }

    /// Session 36: an instance waiting out its restart backoff when a binary upgrade's handover
    /// holds it is not started again while held (the new process starts an instance that has no
    /// process when it takes over; until then the old process restarted it under the handover,
    /// and the new one, finding it not running as recorded, refused the upgrade). Lifted (the
    /// handover failed), it is restarted; released (the new process took it over), never. On the
    /// paused clock: the held wait outlasts the backoff many times over (no timeout on the waits
    /// for the real processes' exits, which the paused clock would run out at once).
    #[tokio::test(start_paused = true)]
    async fn an_instance_held_in_its_backoff_is_restarted_only_once_the_hold_is_lifted() {
        for after in [Hold::Off, Hold::Released] {
            let launch = Launch::new("blue", 0, 1, exiting("exit 3"));
            let (supervision, mut life, pid, mut rx) = supervised(launch);
            let first = rx.recv().await.expect("an event").kind;
            assert!(
                matches!(first, InstanceEventKind::Exited { restart_in, .. } if restart_in == INITIAL_BACKOFF),
                "{first:?}"
            );
            supervision.hold(Hold::Held);
            tokio::time::sleep(INITIAL_BACKOFF * 20).await;
            assert!(
                rx.try_recv().is_err(),
                "{after:?}: started again while held"
            );
            assert_eq!(supervision.pid(), pid, "{after:?}: no new process");

            supervision.hold(after);
            if after == Hold::Released {
                let done = life.wait_for(|l| l.finished).await;
                done.expect("the supervisor reports");
                assert!(rx.try_recv().is_err(), "released: never started again");
                continue;
            }
            let InstanceEventKind::Restarted { previous_pid, .. } =
                rx.recv().await.expect("an event").kind
            else {
                panic!("lifted: started again")
            };
            assert_eq!(previous_pid, pid);
            supervision.stop();
            super::signal_group(supervision.pid(), Signal::SIGKILL);
            let done = life.wait_for(|l| l.finished).await;
            done.expect("the supervisor reports");
        }
    }

    /// Session 36: an instance down at a binary upgrade's takeover ([`start_down`]) starts nothing
    /// and stops nothing until the old process has handed the workload over (a stop before ends
    /// it so); then what its last process left (here a process carrying its stale journal entry's
    /// token) is stopped, the entry dropped, and the instance reported as an exit and started
    /// after [`INITIAL_BACKOFF`], its spawn recorded in the journal.
    #[tokio::test]
    async fn an_instance_down_at_a_takeover_is_started_once_handed_over() {
        use super::super::children::{ChildEntry, ChildJournal, TOKEN_VAR};
        let running = pid_running;
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let stale = ChildEntry {
            token: "old-run-7".into(),
            workload: "blue".into(),
            instance: 0,
            command: "sh".into(),
            pid: None,
            started_ticks: None,
            port: Some(1),
            replaces: None,
        };
        // What the dead instance forked, still running with its token; killed when the test
        // ends, also when it fails.
        struct Left(std::process::Child);
        impl Drop for Left {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let left = std::process::Command::new("sleep")
            .arg("1000")
            .env(TOKEN_VAR, &stale.token)
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map(Left)
            .expect("sleep starts");
        let journal = ChildJournal::create_keeping(dir.path().join("j"), vec![stale.clone()]);
        let journal = Arc::new(journal.expect("the journal"));
        let spec = sleeping();
        let down = |committed: &tokio_util::sync::CancellationToken| {
            let mut launch = Launch::new("blue", 0, 1, spec.clone());
            launch.journal = Some(Arc::clone(&journal));
            let down = Down {
                start: StartDown::Handed(committed.clone()),
                stale: vec![stale.clone()],
            };
            let (supervision, life) = start_down(launch, down);
            let (tx, rx) = mpsc::unbounded_channel();
            supervision.supervise(Slot::Blue, tx);
            (supervision, life, rx)
        };
        let patience = Duration::from_secs(30);

        // Stopped before the handover: nothing started, nothing stopped.
        let committed = tokio_util::sync::CancellationToken::new();
        let (supervision, mut life, mut rx) = down(&committed);
        let now = life.borrow().clone();
        assert!(!now.ready && !now.running, "no process, not ready: {now:?}");
        supervision.stop();
        let done = tokio::time::timeout(patience, life.wait_for(|l| l.finished));
        done.await
            .expect("finished")
            .expect("the supervisor reports");
        assert!(rx.try_recv().is_err(), "nothing reported");
        assert!(
            running(left.0.id()),
            "what it left is the old process's then"
        );

        let committed = tokio_util::sync::CancellationToken::new();
        let (supervision, mut life, mut rx) = down(&committed);
        tokio::time::sleep(INITIAL_BACKOFF * 2).await;
        assert!(rx.try_recv().is_err(), "nothing before the handover");
        assert_eq!(supervision.pid(), 0);
        committed.cancel();
        match next_event(&mut rx).await {
            InstanceEventKind::Exited { status, restart_in } => {
                assert_eq!(status, DOWN_AT_TAKEOVER);
                assert_eq!(restart_in, INITIAL_BACKOFF);
            }
            other => panic!("reported as an exit first: {other:?}"),
        }
        for _ in 0..1000 {
            if !running(left.0.id()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            !running(left.0.id()),
            "what its last process left is stopped"
        );
        let pid = started_from_nothing(&mut rx).await;
        let recorded = ChildJournal::read(journal.path()).expect("the journal reads");
        assert_eq!(recorded.len(), 1, "{recorded:?}");
        assert_eq!(
            recorded[0].pid,
            Some(pid),
            "the stale entry dropped, the spawn recorded"
        );

        supervision.stop();
        super::signal_group(pid, Signal::SIGKILL);
        let done = tokio::time::timeout(patience, life.wait_for(|l| l.finished));
        done.await
            .expect("finished")
            .expect("the supervisor reports");
    }

    /// The next event, which must be the start of an instance that had no process (pid 0,
    /// [`start_down`]); its pid, which runs.
    async fn started_from_nothing(rx: &mut mpsc::UnboundedReceiver<InstanceEvent>) -> u32 {
        let InstanceEventKind::Restarted {
            pid, previous_pid, ..
        } = next_event(rx).await
        else {
            panic!("started")
        };
        assert_eq!(previous_pid, 0);
        assert!(pid_running(pid), "{pid} runs");
        pid
    }

    /// A workload whose instances run `sleep 1000` and never pass readiness (nothing answers on
    /// their port), with a readiness deadline out of reach: each start stays running, not ready.
    fn sleeping() -> WorkloadSpec {
        WorkloadSpec {
            command: Some("sleep".into()),
            args: vec!["1000".into()],
            readiness: crate::spec::ReadinessConfig {
                deadline: Duration::from_secs(3600),
                ..crate::spec::ReadinessConfig::default()
            },
            ..WorkloadSpec::default()
        }
    }

    /// Session 37: an instance down at a start after a crash ([`StartDown::AtOnce`]) is started
    /// at once, but only once its workload is supervised: before, a down instance whose start
    /// was allowed before the service supervised the workload found no one to report to and
    /// ended with nothing started. Its first start takes no backoff, and the next exit the usual
    /// [`INITIAL_BACKOFF`].
    #[tokio::test]
    async fn an_instance_down_at_a_start_after_a_crash_starts_at_once_once_supervised() {
        let down = Down {
            start: StartDown::AtOnce,
            stale: Vec::new(),
        };
        let (supervision, mut life) = start_down(Launch::new("blue", 0, 1, sleeping()), down);
        tokio::time::sleep(INITIAL_BACKOFF).await;
        let now = life.borrow().clone();
        assert!(!now.finished, "waits to be supervised: {now:?}");
        assert_eq!(supervision.pid(), 0, "nothing started before");
        let (tx, mut rx) = mpsc::unbounded_channel();
        supervision.supervise(Slot::Blue, tx);
        match next_event(&mut rx).await {
            InstanceEventKind::Exited { status, restart_in } => {
                assert_eq!(status, DOWN_AT_START);
                assert_eq!(restart_in, Duration::ZERO, "at once");
            }
            other => panic!("reported as an exit first: {other:?}"),
        }
        let pid = started_from_nothing(&mut rx).await;
        super::signal_group(pid, Signal::SIGKILL);
        match next_event(&mut rx).await {
            InstanceEventKind::Exited { restart_in, .. } => {
                assert_eq!(restart_in, INITIAL_BACKOFF, "the backoff starts as usual");
            }
            other => panic!("its exit: {other:?}"),
        }
        stop_and_wait(&supervision, &mut life, Signal::SIGKILL).await;
    }

    /// The next event on the paused clock (no timeout: it would run out while a real process
    /// starts or exits).
    async fn paused_event(rx: &mut mpsc::UnboundedReceiver<InstanceEvent>) -> InstanceEventKind {
        rx.recv().await.expect("an event").kind
    }

    /// Stops the instance on the paused clock: [`stop_and_wait`] without its timeout.
    async fn paused_stop(supervision: &Supervision, life: &mut watch::Receiver<Life>) {
        supervision.stop();
        super::signal_group(supervision.pid(), Signal::SIGKILL);
        let done = life.wait_for(|l| l.finished).await;
        done.expect("the supervisor reports");
    }

    /// Session 38: an instance taken over by a binary upgrade's new process (or adopted by a
    /// start after a crash) goes on with the backoff its previous supervisor saved: its next exit
    /// is restarted after the saved delay, which doubles from there (until then it got 500 ms,
    /// whatever its crash loop had grown to). One that has been ready [`STABLE_AFTER`] is out of
    /// its backoff, as under one supervisor.
    #[tokio::test(start_paused = true)]
    async fn an_instance_taken_over_goes_on_with_the_backoff_its_previous_run_saved() {
        let now = unix_ms(SystemTime::now());
        let stable = ms(STABLE_AFTER);
        for (ready_for, restart_in, exits) in [(1_000, 4_000, 4), (stable + 1_000, 500, 1)] {
            let mut launch = Launch::new("blue", 0, 1, exiting("exec sleep 1000"));
            launch.backoff = Some(Backoff {
                exits_in_a_row: 3,
                next_restart_in_ms: 4_000,
                restart_due_unix_ms: None,
                ready_since_unix_ms: Some(now - ready_for),
            });
            let (supervision, mut life, pid, mut rx) = supervised(launch);
            super::signal_group(pid, Signal::SIGKILL);
            match paused_event(&mut rx).await {
                InstanceEventKind::Exited { restart_in: r, .. } => {
                    assert_eq!(r, Duration::from_millis(restart_in), "ready {ready_for} ms");
                }
                other => panic!("its exit: {other:?}"),
            }
            // Published before the event was reported, for the save it makes.
            let published = supervision.backoff().expect("in its backoff");
            assert_eq!(published.exits_in_a_row, exits);
            assert_eq!(published.next_restart_in_ms, restart_in * 2);
            assert!(published.restart_due_unix_ms.is_some(), "{published:?}");
            paused_stop(&supervision, &mut life).await;
        }
    }

    /// Session 38: an instance down at a start after a crash whose saved backoff says the dead
    /// run was waiting to restart it waits the rest of that wait (another instance serves: the
    /// start adopts a workload only beside one that is ready), then goes on with the saved
    /// backoff. Until then it was started at once and its next exit got 500 ms.
    #[tokio::test(start_paused = true)]
    async fn an_instance_down_at_a_start_after_a_crash_waits_the_rest_of_its_saved_backoff() {
        let mut launch = Launch::new("blue", 0, 1, exiting("exec sleep 1000"));
        launch.backoff = Some(Backoff {
            exits_in_a_row: 4,
            next_restart_in_ms: 8_000,
            restart_due_unix_ms: Some(unix_ms(SystemTime::now()) + 3_000),
            ready_since_unix_ms: None,
        });
        let down = Down {
            start: StartDown::AtOnce,
            stale: Vec::new(),
        };
        let (supervision, mut life) = start_down(launch, down);
        let (tx, mut rx) = mpsc::unbounded_channel();
        supervision.supervise(Slot::Blue, tx);
        let waited = match paused_event(&mut rx).await {
            InstanceEventKind::Exited { status, restart_in } => {
                assert_eq!(status, DOWN_AT_START);
                // Less the real time since the saved backoff was made.
                assert!(
                    restart_in > Duration::from_secs(2) && restart_in <= Duration::from_secs(3),
                    "the rest of the wait: {restart_in:?}"
                );
                restart_in
            }
            other => panic!("reported as an exit first: {other:?}"),
        };
        let reported = Instant::now();
        let InstanceEventKind::Restarted {
            pid, previous_pid, ..
        } = paused_event(&mut rx).await
        else {
            panic!("started")
        };
        assert_eq!(previous_pid, 0);
        assert!(
            reported.elapsed() >= waited,
            "started only once it has waited"
        );
        super::signal_group(pid, Signal::SIGKILL);
        match paused_event(&mut rx).await {
            InstanceEventKind::Exited { restart_in, .. } => {
                assert_eq!(
                    restart_in,
                    Duration::from_secs(8),
                    "the saved backoff goes on"
                );
            }
            other => panic!("its exit: {other:?}"),
        }
        paused_stop(&supervision, &mut life).await;
    }

    /// Session 36 (backoff36's report): an instance whose main process exited while what it
    /// forked held its group was in `end_group` (up to `stop_grace`) when a binary upgrade froze
    /// the old process; once the group was empty, the old process wrote its copy of the child
    /// journal over the one the new process had written meanwhile. Now it writes nothing once
    /// released, and drops the entry once the hold is lifted (the takeover failed).
    #[tokio::test]
    async fn an_exit_whose_group_ends_during_a_handover_leaves_the_journal_to_the_new_process() {
        use super::super::children::ChildJournal;
        for lifted in [Hold::Released, Hold::Off] {
            let dir = tempfile::tempdir().unwrap();
            let pids = dir.path().join("pids");
            // The forked child ignores SIGTERM (inherited through `exec`): the group stays until
            // the test kills it.
            let script = format!(
                "(trap '' TERM; exec sleep 1000) & echo $! >> {}; wait",
                pids.display()
            );
            let spec = WorkloadSpec {
                command: Some("sh".into()),
                args: vec!["-c".into(), script],
                stop_grace: Duration::from_secs(600),
                ..WorkloadSpec::default()
            };
            let journal = ChildJournal::create(dir.path().join("j")).expect("the journal");
            let journal = Arc::new(journal);
            let mut launch = Launch::new("blue", 0, 1, spec);
            launch.journal = Some(Arc::clone(&journal));
            // Not supervised: nothing is restarted (and journalled) after the exit.
            let (supervision, mut life, pid) = spawned(launch);
            let forked = pid_written(&pids, "the script's child started", |_| true).await;
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL)
                .unwrap();
            tokio::time::timeout(PATIENCE, life.wait_for(|l| !l.running))
                .await
                .expect("the exit is seen")
                .expect("the supervisor reports");

            // Frozen while its group ends; the new process writes the journal.
            supervision.hold(Hold::Held);
            let new_process = "{\"version\": 1, \"children\": []}\n";
            std::fs::write(journal.path(), new_process).unwrap();
            supervision.hold(lifted);
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(forked as i32), Signal::SIGKILL);
            tokio::time::timeout(PATIENCE, life.wait_for(|l| l.finished))
                .await
                .expect("the supervisor finishes once the group is empty")
                .expect("the supervisor reports");
            let now = std::fs::read_to_string(journal.path()).unwrap();
            match lifted {
                Hold::Released => assert_eq!(now, new_process, "the new process's journal kept"),
                _ => {
                    let recorded = ChildJournal::read(journal.path()).expect("the journal reads");
                    assert!(recorded.is_empty(), "the entry dropped: {recorded:?}");
                    assert_ne!(now, new_process, "the journal is this process's again");
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_crashing_instance_is_restarted_with_doubling_backoff_up_to_the_cap_until_stopped() {
        let spec = exiting("sleep 0.05; exit 3");
        let (supervision, mut life, pid, mut rx) = supervised(Launch::new("blue", 0, 1, spec));

        let mut backoffs = Vec::new();
        let mut pids = vec![pid];
        while backoffs.len() < 8 {
            let event = rx.recv().await.expect("an event");
            assert_eq!((event.backend, event.instance), (Slot::Blue, 0));
            match event.kind {
                InstanceEventKind::Exited { status, restart_in } => {
                    assert!(status.contains('3'), "{status}");
                    backoffs.push(restart_in.as_millis());
                }
                InstanceEventKind::Restarted {
                    pid,
                    previous_pid,
                    restarts,
                    moved_from,
                    ..
                } => {
                    assert_eq!(moved_from, None, "no ports to move to: kept");
                    assert_eq!(previous_pid, *pids.last().unwrap());
                    assert_eq!(restarts, pids.len() as u64);
                    assert_eq!(supervision.pid(), pid);
                    pids.push(pid);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(backoffs, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);

        supervision.stop();
        super::signal_group(supervision.pid(), Signal::SIGKILL);
        let finished = life
            .wait_for(|l| l.finished)
            .await
            .expect("the supervisor reports");
        assert!(!finished.running);
    }
}
