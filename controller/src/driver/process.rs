//! Local processes: start a workload's instances as child processes, each on a free port, capture their
//! output with a per-instance prefix, and stop them with SIGTERM, a grace period, then SIGKILL. Each
//! instance lives in a [`super::supervisor`] task, which restarts it while the workload
//! is supervised: on the same port, or on another free one when something else took it meanwhile.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{select_all, try_join_all, BoxFuture};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::children::{ChildEntry, ChildJournal, TOKEN_VAR};
use super::ports::Ports;
use super::supervisor::{self, InstanceEvent, Life, Proc, Supervision};
use super::{probe, DriverError};
use crate::spec::{WorkloadSpec, PORT_PLACEHOLDER};
use crossfade_proxy::weight::Slot;

/// The running instances of one process workload.
pub struct Instances {
    instances: Vec<Instance>,
}

struct Instance {
    /// The instance's current process (changes when it is restarted).
    supervision: Arc<Supervision>,
    /// What the instance is doing: running, down (with its last exit status), or finished.
    life: watch::Receiver<Life>,
}

/// Starts `spec.instances` processes, each on a port from `ports`, and waits until each passes
/// its readiness probe (each probe's outcome recorded in `log`), or until `cancel` is cancelled.
///
/// # Errors
/// [`DriverError`] naming the workload when no port is free (every port of `port_range` taken), a
/// process cannot be spawned, exits before it is ready, is not ready by
/// `spec.readiness.deadline`, or the start is cancelled ([`DriverError::Cancelled`]). Every
/// instance already started is stopped first (SIGTERM, SIGKILL after `spec.stop_grace`).
pub async fn start(
    name: &str,
    spec: &WorkloadSpec,
    ports: &Arc<Ports>,
    journal: Option<&Arc<ChildJournal>>,
    cancel: &CancellationToken,
    log: &probe::ProbeLog,
) -> Result<(Instances, Vec<SocketAddr>), DriverError> {
    let mut instances = Instances {
        instances: Vec::new(),
    };
    let mut endpoints: Vec<SocketAddr> = Vec::new();
    for index in 0..spec.instances as usize {
        let given: Vec<u16> = endpoints.iter().map(SocketAddr::port).collect();
        let port = ports.pick(&given).map_err(|message| DriverError::Other {
            workload: name.to_owned(),
            message,
        });
        let at = Place {
            index,
            ports: Some(ports),
            journal,
        };
        match port.and_then(|port| spawn_one(name, spec, &at, port)) {
            Ok((instance, endpoint)) => {
                instances.instances.push(instance);
                endpoints.push(endpoint);
            }
            Err(e) => {
                instances.stop(name, spec.stop_grace).await;
                return Err(e);
            }
        }
    }
    let waits = instances
        .instances
        .iter()
        .zip(&endpoints)
        .enumerate()
        .map(|(i, (instance, &endpoint))| wait_instance(name, spec, i, instance, endpoint, log));
    let ready = tokio::select! {
        ready = try_join_all(waits) => ready.map(drop),
        () = cancel.cancelled() => Err(DriverError::Cancelled { workload: name.to_owned() }),
    };
    if let Err(e) = ready {
        instances.stop(name, spec.stop_grace).await;
        return Err(e);
    }
    tracing::info!(workload = %name, endpoints = ?endpoints, "workload ready");
    Ok((instances, endpoints))
}

/// Races the readiness probe of one instance against that instance exiting.
async fn wait_instance(
    name: &str,
    spec: &WorkloadSpec,
    index: usize,
    instance: &Instance,
    endpoint: SocketAddr,
    log: &probe::ProbeLog,
) -> Result<(), DriverError> {
    let r = &spec.readiness;
    let mut exit = instance.life.clone();
    tokio::select! {
        // An exit first: a probe answered after the process died (another process took the
        // port between its allocation and the instance's bind) does not make it ready.
        biased;
        status = wait_exit(&mut exit) => Err(DriverError::ExitedEarly {
            workload: name.to_owned(),
            instance: index,
            status,
        }),
        ready = probe::wait_ready(endpoint, spec.protocol, r, log) => {
            ready.map_err(|last| DriverError::NotReady {
                workload: name.to_owned(),
                endpoint,
                waited: r.deadline,
                last,
            })
        }
    }
}

/// Waits until the instance is not running and returns its last exit status.
async fn wait_exit(life: &mut watch::Receiver<Life>) -> String {
    match life.wait_for(|l| !l.running).await {
        Ok(life) => life.last_exit.clone().unwrap_or_default(),
        Err(_) => "exit status unknown".to_owned(),
    }
}

/// Waits until the instance's supervisor is done (the process exited and will not be restarted).
async fn wait_finished(life: &mut watch::Receiver<Life>) {
    let _ = life.wait_for(|l| l.finished).await;
}

/// Where an instance is started: its index, the ports a restart may move it to, the journal.
struct Place<'a> {
    index: usize,
    ports: Option<&'a Arc<Ports>>,
    journal: Option<&'a Arc<ChildJournal>>,
}

fn spawn_one(
    name: &str,
    spec: &WorkloadSpec,
    at: &Place<'_>,
    port: u16,
) -> Result<(Instance, SocketAddr), DriverError> {
    let index = at.index;
    let mut launch = Launch::new(name, index, port, spec.clone());
    launch.journal = at.journal.cloned();
    launch.ports = at.ports.cloned();
    let child = launch.spawn(None)?;
    let pid = child.id().unwrap_or_default();
    let (supervision, life) = supervisor::start(launch, Proc::Spawned(child), pid);
    let command = spec.command.as_deref().unwrap_or_default();
    tracing::info!(workload = %name, instance = index, pid, port, "started {command}");
    Ok((
        Instance { supervision, life },
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
    ))
}

/// What [`adopt`] does with an instance that fails its readiness probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unready {
    /// Nothing is adopted ([`DriverError::NotReady`]): a start after a crash stops what the
    /// previous run left and starts the workload afresh.
    Refuse,
    /// It is adopted not ready ([`supervisor::start_unready`]): its endpoint is withdrawn once the
    /// workload is attached to its route, restored when a probe passes, and the instance stopped
    /// and started again when its `readiness.deadline` passes first. A binary upgrade's new
    /// process takes over what the old one ran this way, so that one sick or restarting instance
    /// does not block the upgrade.
    Supervise,
    /// As [`Unready::Supervise`] when another instance of the workload passes its probe, as
    /// [`Unready::Refuse`] when none does (nor when no instance runs at all). A start after a
    /// crash adopts a workload this way: one instance the previous run was restarting (not ready
    /// yet when it was killed, or with no process yet: [`Found::Down`]) does not make it stop the
    /// healthy others and start the whole workload afresh, which would leave the route with
    /// nothing to serve for the workload's start time.
    BesideReady,
}

/// One instance of a workload taken over from a previous run ([`adopt`]), in instance order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// Its process runs as its child-journal entry records it ([`super::children::adoptable_each`]):
    /// adopted.
    Running(ChildEntry),
    /// No process of it runs: the run it is taken over from was waiting out its restart backoff
    /// (a binary upgrade's old process, or a run that was killed then), or it exited during an
    /// upgrade's handover. This run starts it as [`adopt`]'s `start_down` says, on its last
    /// recorded port when it has one and that port is free, else a free one.
    Down {
        /// Its journal entries, none naming a running process: what they left is stopped and
        /// they are dropped before the start.
        stale: Vec<ChildEntry>,
    },
}

/// When [`adopt`] starts the instances [`Found::Down`] (each only once its workload is
/// supervised: [`Instances::supervise`]).
#[derive(Clone, Debug)]
pub enum StartDown {
    /// A binary upgrade's new process: once this token is cancelled (the old process has handed
    /// the workload over; until then a failed handover leaves the instance to the old process),
    /// after the rest of the wait the old process saved for it, else
    /// [`supervisor::INITIAL_BACKOFF`] ([`supervisor::down_delay`]), reported with
    /// [`supervisor::DOWN_AT_TAKEOVER`].
    Handed(CancellationToken),
    /// A start after a crash: after the rest of the wait the dead run saved for it, else at once
    /// ([`supervisor::down_delay`]), reported with [`supervisor::DOWN_AT_START`]. No other
    /// process supervises the instance any more, and the run that did waited out some of its
    /// backoff already.
    AtOnce,
}

/// How [`adopt`] takes a workload over.
#[derive(Clone, Copy, Debug)]
pub struct Takeover<'a> {
    /// What an instance that fails its readiness probe does to the adoption.
    pub unready: Unready,
    /// When an instance [`Found::Down`] is started.
    pub start_down: &'a StartDown,
    /// Where each instance stood in its restart backoff under the run it is taken from (the
    /// state file's `active_backoff`, in instance order; a missing entry counts as none): its
    /// supervisor goes on from there ([`supervisor::down_delay`] for an instance down).
    pub backoffs: &'a [Option<supervisor::Backoff>],
}

// === impl Found ===

impl Found {
    /// The journal entry of the process adopted for this instance; `None` for an instance down.
    pub fn running(&self) -> Option<&ChildEntry> {
        match self {
            Found::Running(entry) => Some(entry),
            Found::Down { .. } => None,
        }
    }
}

/// Takes over the instances a previous run left running, `found` (one per instance, in
/// instance order), after each running one was probed once for readiness (the workload's path
/// and timeout), its output relayed again first ([`reattach`]). From then on each is supervised,
/// stopped and restarted like a spawned one. An instance whose probe fails is adopted not ready
/// or refuses the whole adoption, by `how.unready`. An instance [`Found::Down`] is started as
/// `how.start_down` says, not ready until its start passes readiness ([`supervisor::start_down`]).
/// Each goes on with its restart backoff as `how.backoffs` says ([`Takeover`]).
///
/// # Errors
/// With [`Unready::Refuse`], or [`Unready::BesideReady`] when no instance passes its probe (also
/// when none runs), [`DriverError::NotReady`] naming the first instance whose probe failed
/// ([`DriverError::Other`] when none runs); nothing is adopted then, and the caller stops them
/// all and starts the workload afresh. [`DriverError::Other`] when no port is free for an
/// instance down.
pub async fn adopt(
    name: &str,
    spec: &WorkloadSpec,
    found: &[Found],
    ports: &Arc<Ports>,
    journal: Option<&Arc<ChildJournal>>,
    how: &Takeover<'_>,
) -> Result<(Instances, Vec<SocketAddr>), DriverError> {
    let Takeover {
        unready,
        start_down,
        backoffs,
    } = *how;
    let r = &spec.readiness;
    let running = || found.iter().filter_map(Found::running);
    // Output first: a process that logs each request (to a pipe with no reader: `EPIPE`) may fail
    // the very probe that would adopt it.
    for entry in running() {
        let prefix = format!("{name}-{}", entry.instance);
        reattach(&prefix, entry.pid.unwrap_or_default());
    }
    let mut endpoints = Vec::new();
    let mut ready = Vec::new();
    // The running instances that failed their probe: instance, endpoint, the probe's failure.
    let mut failed = Vec::new();
    for f in found {
        let entry = match f {
            Found::Running(entry) => entry,
            Found::Down { stale } => {
                // Its last port, unless another instance has it now; else a free one.
                let given: Vec<u16> = (running().filter_map(|e| e.port))
                    .chain(endpoints.iter().map(SocketAddr::port))
                    .collect();
                let last = stale.iter().rev().find_map(|e| e.port);
                let port = match last.filter(|p| !given.contains(p)) {
                    Some(port) => port,
                    None => ports.pick(&given).map_err(|message| DriverError::Other {
                        workload: name.to_owned(),
                        message,
                    })?,
                };
                endpoints.push(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
                ready.push(false);
                continue;
            }
        };
        let endpoint = SocketAddr::from((Ipv4Addr::LOCALHOST, entry.port.unwrap_or_default()));
        match probe::get(endpoint, spec.protocol, &r.path, r.timeout).await {
            Ok(_) => ready.push(true),
            Err(last) if unready == Unready::Refuse => {
                return Err(DriverError::NotReady {
                    workload: name.to_owned(),
                    endpoint,
                    waited: r.timeout,
                    last,
                })
            }
            Err(last) => {
                ready.push(false);
                failed.push((entry.instance, endpoint, last));
            }
        }
        endpoints.push(endpoint);
    }
    if unready == Unready::BesideReady && !ready.contains(&true) {
        return Err(match failed.into_iter().next() {
            Some((_, endpoint, last)) => DriverError::NotReady {
                workload: name.to_owned(),
                endpoint,
                waited: r.timeout,
                last,
            },
            None => DriverError::Other {
                workload: name.to_owned(),
                message: "no instance runs".to_owned(),
            },
        });
    } else {
        for (instance, endpoint, last) in failed {
            tracing::warn!(workload = %name, instance, %endpoint, "adopted not ready (last probe: {last}): no request goes there until a probe passes; stopped and started again if none does within its readiness deadline {}", crate::spec::human(r.deadline));
        }
    }
    let mut instances = Instances {
        instances: Vec::new(),
    };
    for (index, ((f, endpoint), ready)) in found.iter().zip(&endpoints).zip(ready).enumerate() {
        let mut launch = Launch::new(name, index, endpoint.port(), spec.clone());
        launch.journal = journal.cloned();
        launch.ports = Some(Arc::clone(ports));
        launch.backoff = backoffs.get(index).copied().flatten();
        let entry = match f {
            Found::Running(entry) => entry,
            Found::Down { stale } => {
                let down = supervisor::Down {
                    start: start_down.clone(),
                    stale: stale.clone(),
                };
                let (supervision, life) = supervisor::start_down(launch, down);
                instances.instances.push(Instance { supervision, life });
                let delay = supervisor::down_delay(
                    backoffs.get(index).and_then(Option::as_ref),
                    start_down,
                    std::time::SystemTime::now(),
                );
                let when = match (start_down, delay) {
                    (StartDown::Handed(_), _) => {
                        "once the old process has handed the workload over"
                    }
                    (StartDown::AtOnce, Some(Duration::ZERO)) => "at once",
                    (StartDown::AtOnce, _) => "once the rest of its restart backoff has passed",
                };
                tracing::warn!(workload = %name, instance = index, port = endpoint.port(), "no process runs: started {when}; no request goes there until it is ready");
                continue;
            }
        };
        let (pid, started_ticks) = (entry.pid.unwrap_or_default(), entry.started_ticks);
        *launch
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(entry.token.clone());
        let child = Proc::Adopted {
            pid,
            started_ticks: started_ticks.unwrap_or_default(),
        };
        let (supervision, life) = match ready {
            true => supervisor::start(launch, child, pid),
            false => supervisor::start_unready(launch, child, pid),
        };
        instances.instances.push(Instance { supervision, life });
        tracing::info!(workload = %name, instance = entry.instance, pid, port = endpoint.port(), ready, "adopted");
    }
    Ok((instances, endpoints))
}

/// Relays an adopted process's output again: its stdout and stderr are pipes whose reader (the
/// previous run) is gone, and each is opened for reading anew through `/proc/<pid>/fd/{1,2}`,
/// which ends the `EPIPE`s its writes got meanwhile (what it wrote while no run read is lost).
/// A descriptor that is not a pipe (the workload redirected it) is left alone.
fn reattach(prefix: &str, pid: u32) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut seen = Vec::new();
    for fd in [1, 2] {
        let path = format!("/proc/{pid}/fd/{fd}");
        let Ok(target) = std::fs::read_link(&path) else {
            continue;
        };
        if !target.to_string_lossy().starts_with("pipe:") || seen.contains(&target) {
            continue;
        }
        // Non-blocking: opening a pipe for reading waits for a writer, and the process may have
        // exited since it was probed.
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .and_then(tokio::net::unix::pipe::Receiver::from_file);
        match opened {
            Ok(pipe) => {
                tokio::spawn(relay(prefix.to_owned(), pipe));
                seen.push(target);
            }
            Err(e) => tracing::warn!("[{prefix}] output not relayed: {path}: {e}"),
        }
    }
}

/// How to (re)start one instance: the same command, arguments and environment every time, and the
/// same port unless it was taken meanwhile ([`Launch::keep_or_move_port`]).
pub(super) struct Launch {
    pub(super) workload: String,
    pub(super) index: usize,
    pub(super) port: u16,
    spec: WorkloadSpec,
    /// Where another port comes from when the instance's is taken at a restart: the driver's
    /// (`port_range`, else the kernel's ephemeral range). `None`: the port is kept whatever.
    pub(super) ports: Option<Arc<Ports>>,
    /// Where every spawn is recorded before it happens (`crossfade run` with a state file).
    pub(super) journal: Option<Arc<ChildJournal>>,
    /// The token ([`TOKEN_VAR`]) of the current process (recorded in the journal when there is one), until [`Launch::exited`] forgets it.
    token: std::sync::Mutex<Option<String>>,
    /// For an instance taken over from another run ([`adopt`]): where it stood in its restart
    /// backoff there, which its supervisor goes on from ([`supervisor::Backoff`]).
    pub(super) backoff: Option<supervisor::Backoff>,
}

impl Launch {
    /// How to start instance `index` of `workload` on `port`.
    pub(super) fn new(workload: &str, index: usize, port: u16, spec: WorkloadSpec) -> Launch {
        Launch {
            workload: workload.to_owned(),
            index,
            port,
            spec,
            ports: None,
            journal: None,
            token: std::sync::Mutex::new(None),
            backoff: None,
        }
    }

    /// Before a restart: keeps the instance's port when 127.0.0.1 can bind it now, as the first
    /// start's allocation tests it; else moves the instance to another free port of its
    /// driver's ([`Ports::pick`]: `port_range` when set, else an ephemeral one), which its next
    /// spawn gets as `{port}` and its journal entry records. A port taken while the instance was
    /// down (another server, or an outgoing connection's ephemeral source port) would fail every
    /// restart there for ever. Returns the port it had when it moved.
    ///
    /// # Errors
    /// When the port is taken and no other is free (`every port of port_range ... is taken`).
    pub(super) fn keep_or_move_port(&mut self) -> Result<Option<u16>, String> {
        let Some(ports) = &self.ports else {
            return Ok(None);
        };
        if super::ports::is_free(self.port) {
            return Ok(None);
        }
        let port = ports
            .pick(&[self.port])
            .map_err(|e| format!("port {} is taken and no other is free: {e}", self.port))?;
        Ok(Some(std::mem::replace(&mut self.port, port)))
    }

    /// The process `pid` that [`Launch::spawn`] started has exited (and been reaped): its journal
    /// entry is dropped once its process group is empty ([`ChildJournal::forget`]).
    pub(super) fn exited(&self, pid: u32) {
        let token = self
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let (Some(journal), Some(token)) = (&self.journal, token) {
            journal.forget(&token, Some(pid));
        }
    }

    /// The token ([`TOKEN_VAR`]) in the environment of the current process and of everything it
    /// starts, until [`Launch::exited`] forgets it.
    pub(super) fn token(&self) -> Option<String> {
        self.token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The instance's endpoint: `127.0.0.1:{port}`.
    pub(super) fn endpoint(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Resolves once the instance answers its readiness probe (`spec.readiness`: `GET path` in
    /// `spec.protocol` answered 2xx within `timeout`, tried every `interval`), as its first start
    /// waits ([`probe::wait_ready`]); the supervisor drops it when the process exits first.
    ///
    /// # Errors
    /// The last probe's failure once `readiness.deadline` has passed since the call.
    pub(super) async fn ready_within_deadline(&self) -> Result<(), String> {
        let log = probe::ProbeLog::default();
        let (protocol, readiness) = (self.spec.protocol, &self.spec.readiness);
        probe::wait_ready(self.endpoint(), protocol, readiness, &log).await
    }

    /// The workload's `readiness.deadline`: how long a started instance has to pass readiness.
    pub(super) fn readiness_deadline(&self) -> Duration {
        self.spec.readiness.deadline
    }

    /// The workload's `stop_grace`: SIGTERM to SIGKILL.
    pub(super) fn stop_grace(&self) -> Duration {
        self.spec.stop_grace
    }

    /// `workload-index`, the prefix of the instance's output lines.
    pub(super) fn prefix(&self) -> String {
        format!("{}-{}", self.workload, self.index)
    }

    /// Spawns the process in its own process group, its output relayed with [`Launch::prefix`].
    /// With a journal, the spawn is recorded durably before it happens and its pid right after
    /// ([`super::children`]); with or without one, a token unique to the spawn is in the process's
    /// environment ([`TOKEN_VAR`]), inherited by what it starts. `replaces`: for a supervised
    /// restart, the pid of the process it replaces (0 when the instance had none), recorded in
    /// the journal entry ([`ChildEntry::replaces`]).
    ///
    /// # Errors
    /// [`DriverError::Spawn`] when the command cannot be started; [`DriverError::Other`] naming
    /// the journal when the spawn cannot be recorded (nothing is spawned then).
    pub(super) fn spawn(&self, replaces: Option<u32>) -> Result<Child, DriverError> {
        let (name, spec, port) = (&self.workload, &self.spec, self.port);
        let command = spec.command.clone().unwrap_or_default();
        let fill = |s: &str| s.replace(PORT_PLACEHOLDER, &port.to_string());
        let mut cmd = Command::new(&command);
        cmd.args(spec.args.iter().map(|a| fill(a)))
            .envs(spec.env.iter().map(|(k, v)| (k, fill(v))))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own process group, so stop() reaches whatever the command forks.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &spec.workdir {
            cmd.current_dir(dir);
        }
        let token = match &self.journal {
            Some(journal) => {
                let token = journal
                    .intend(name, self.index, &command, port, replaces)
                    .map_err(|e| DriverError::Other {
                        workload: name.to_owned(),
                        message: format!(
                            "cannot record instance {} in {} before starting it: {e}",
                            self.index,
                            journal.path().display()
                        ),
                    })?;
                cmd.env(TOKEN_VAR, &token);
                Some((journal, token))
            }
            None => {
                // No journal to record it in, but still a mark on everything the spawn starts,
                // for what leaves its process group (`end_group` in the supervisor).
                let token = super::children::unjournaled_token();
                cmd.env(TOKEN_VAR, &token);
                *self
                    .token
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(token);
                None
            }
        };
        let spawned = cmd.spawn();
        if let Some((journal, token)) = &token {
            match spawned.as_ref().ok().and_then(Child::id) {
                Some(pid) => journal.spawned(token, pid),
                None => journal.forget(token, None),
            }
        }
        let mut child = spawned.map_err(|source| DriverError::Spawn {
            workload: name.to_owned(),
            command: command.clone(),
            source,
        })?;
        if let Some((_, token)) = token {
            *self
                .token
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(token);
        }
        if let Some(out) = child.stdout.take() {
            tokio::spawn(relay(self.prefix(), out));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(relay(self.prefix(), err));
        }
        Ok(child)
    }
}

/// The longest piece of a child's output relayed as one log line, in bytes: a longer line (or
/// output with no line break at all) is relayed in pieces of this size, so that the relay's
/// memory stays bounded whatever the child writes.
pub const MAX_RELAYED_LINE: usize = 16 * 1024;

/// Forwards a child's output line by line, prefixed with its instance name, until the child
/// closes it. Bytes that are not UTF-8 (a Latin-1 log line, binary output) are relayed as U+FFFD,
/// and a line longer than [`MAX_RELAYED_LINE`] in pieces: the relay never stops reading before
/// the end, since a pipe nobody reads makes the child's writes fail (`EPIPE`, or death by
/// `SIGPIPE`) and then block (runtry 30: one `\xe9` ended the relay, and every request of a
/// Python server that logs it failed with 502 from then on).
async fn relay(prefix: String, stream: impl AsyncRead + Unpin) {
    use tokio::io::AsyncReadExt;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        let limit = u64::try_from(MAX_RELAYED_LINE).unwrap_or(u64::MAX);
        match (&mut reader).take(limit).read_until(b'\n', &mut line).await {
            Ok(0) => return,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                }
                let text = String::from_utf8_lossy(&line);
                tracing::info!(target: "crossfade::workload", "[{prefix}] {text}");
            }
            Err(e) => {
                tracing::warn!(target: "crossfade::workload", "[{prefix}] output no longer relayed: {e}");
                return;
            }
        }
    }
}

// === impl Instances ===

impl Instances {
    /// The instances' endpoints now, in instance order: a restart that found its port taken
    /// moved its instance to another ([`Launch::keep_or_move_port`]).
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.instances
            .iter()
            .map(|i| SocketAddr::from((Ipv4Addr::LOCALHOST, i.supervision.port())))
            .collect()
    }

    /// Process ids of the instances now (each is also its process group id); an instance that was
    /// restarted has its new pid here.
    pub fn pids(&self) -> Vec<u32> {
        self.instances.iter().map(|i| i.supervision.pid()).collect()
    }

    /// Where each instance (in order) stands in its restart backoff now
    /// ([`Supervision::backoff`]): `None` for one that is not in a backoff.
    pub fn backoffs(&self) -> Vec<Option<supervisor::Backoff>> {
        self.instances
            .iter()
            .map(|i| i.supervision.backoff())
            .collect()
    }

    /// Whether each instance (in order) can serve now: false from its exit until its supervisor
    /// has started it again and the new process answered its readiness probe.
    pub fn ready(&self) -> Vec<bool> {
        self.instances
            .iter()
            .map(|i| {
                let life = i.life.borrow();
                life.running && life.ready
            })
            .collect()
    }

    /// Resolves with a description once any instance has exited (for an unsupervised workload, the
    /// preview: a supervised instance comes back and reports through its events instead).
    pub fn exited(&self) -> BoxFuture<'static, String> {
        let mut receivers: Vec<_> = self
            .instances
            .iter()
            .enumerate()
            .map(|(i, inst)| (i, inst.life.clone()))
            .collect();
        Box::pin(async move {
            if receivers.is_empty() {
                return futures_util::future::pending().await;
            }
            let waits = receivers.iter_mut().map(|(i, rx)| {
                let i = *i;
                Box::pin(async move { format!("instance {i} exited ({})", wait_exit(rx).await) })
            });
            select_all(waits).await.0
        })
    }

    /// From now on an instance that exits on its own is restarted (on its port, or another free
    /// one when its port was taken), with exponential backoff (see [`super::supervisor`]); each exit and restart is sent to `events`.
    pub fn supervise(&self, backend: Slot, events: mpsc::UnboundedSender<InstanceEvent>) {
        for inst in &self.instances {
            inst.supervision.supervise(backend, events.clone());
        }
    }

    /// Holds, lifts or releases every instance ([`supervisor::Hold`]).
    pub fn hold(&self, hold: supervisor::Hold) {
        for inst in &self.instances {
            inst.supervision.hold(hold);
        }
    }

    /// From now on each instance's endpoint is withdrawn through `gate` when its process exits
    /// on its own, and restored when its restart passed readiness ([`Supervision::attach`]).
    /// An instance not ready at the attach (adopted while failing its probe:
    /// [`adopt`] with `unready` allowed) is withdrawn at once, and restored when it is ready.
    pub fn attach(&self, gate: &Arc<dyn supervisor::EndpointGate>) {
        for inst in &self.instances {
            // The gate first, then `ready`: the supervisor sets `ready` before it reads the gate.
            inst.supervision.attach(Arc::clone(gate));
            if !inst.life.borrow().ready {
                gate.withdraw(SocketAddr::from((
                    Ipv4Addr::LOCALHOST,
                    inst.supervision.port(),
                )));
            }
        }
    }

    /// SIGTERM to every instance's process group at once; SIGKILL to the groups of those still
    /// running `grace` after it (one deadline for all: the whole stop takes at most `grace`, plus
    /// the kill). No instance is restarted from then on.
    pub async fn stop(&self, name: &str, grace: Duration) {
        let signalled = tokio::time::Instant::now();
        for inst in &self.instances {
            inst.supervision.stop();
            signal_group(inst.supervision.pid(), Signal::SIGTERM);
        }
        let deadline = signalled + grace;
        let mut killed = Vec::new();
        for (i, inst) in self.instances.iter().enumerate() {
            let mut life = inst.life.clone();
            if tokio::time::timeout_at(deadline, wait_finished(&mut life))
                .await
                .is_err()
            {
                let after = crate::spec::human_elapsed(signalled.elapsed());
                tracing::warn!(workload = %name, instance = i, "still running {after} after SIGTERM (stop_grace {}): SIGKILL", crate::spec::human(grace));
                signal_group(inst.supervision.pid(), Signal::SIGKILL);
                killed.push(life);
            }
        }
        for mut life in killed {
            wait_finished(&mut life).await;
        }
        tracing::info!(workload = %name, "workload stopped");
    }
}

/// Sends `signal` to the process group `pid` (instances are group leaders). A group that is already
/// gone is not an error.
pub fn signal_group(pid: u32, signal: Signal) {
    let Ok(pid) = i32::try_from(pid) else { return };
    if pid > 0 {
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trial 32, A: a restart keeps the instance's port while it is free, moves to another port of
    /// the range when something else took it, and says so when the range has none left.
    #[test]
    fn a_restart_keeps_a_free_port_and_moves_off_a_taken_one() {
        let hold = |p: u16| std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, p)).expect("bind");
        let first = hold(0);
        let port = first.local_addr().expect("addr").port();
        drop(first);
        // A range of the port and, when free, the next one.
        let Some(next) = port.checked_add(1) else {
            return;
        };
        let Ok(next_held) = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, next)) else {
            return;
        };
        drop(next_held);
        let mut launch = Launch::new("blue", 0, port, WorkloadSpec::default());
        launch.ports = Some(Arc::new(Ports::new(Some(port..=next))));
        assert_eq!(launch.keep_or_move_port(), Ok(None), "free: kept");
        assert_eq!(launch.port, port);

        let taken = hold(port);
        assert_eq!(launch.keep_or_move_port(), Ok(Some(port)), "taken: moved");
        assert_eq!(launch.port, next);
        assert_eq!(
            launch.endpoint(),
            SocketAddr::from((Ipv4Addr::LOCALHOST, next))
        );

        let also = hold(next);
        let error = launch.keep_or_move_port().expect_err("every port taken");
        assert!(
            error.starts_with(&format!(
                "port {next} is taken and no other is free: every port of port_range"
            )),
            "{error}"
        );
        assert_eq!(launch.port, next, "kept when there is nowhere to go");
        drop((taken, also));
    }

    /// Session 37: adopting beside a ready instance ([`Unready::BesideReady`]) needs one that
    /// runs and passes its probe; a workload none of whose instances runs is refused, naming it,
    /// with nothing started (the caller starts it afresh), not taken over with every instance
    /// down.
    #[tokio::test]
    async fn beside_ready_refuses_a_workload_none_of_whose_instances_runs() {
        let ports = Arc::new(Ports::new(None));
        let found = [Found::Down { stale: Vec::new() }];
        let spec = WorkloadSpec {
            command: Some("sleep".into()),
            ..WorkloadSpec::default()
        };
        let adopted = adopt(
            "blue",
            &spec,
            &found,
            &ports,
            None,
            &Takeover {
                unready: Unready::BesideReady,
                start_down: &StartDown::AtOnce,
                backoffs: &[],
            },
        )
        .await;
        match adopted {
            Err(DriverError::Other { workload, message }) => {
                assert_eq!(
                    (workload.as_str(), message.as_str()),
                    ("blue", "no instance runs")
                );
            }
            Err(other) => panic!("refused as {other:?}"),
            Ok(_) => panic!("a workload with no instance running was adopted"),
        }
    }

    /// Trial 13, N2: instances that ignore SIGTERM are all killed at one deadline, `stop_grace`
    /// after the SIGTERM, not one `stop_grace` after another (on the paused clock, where the
    /// waits are exact).
    #[tokio::test(start_paused = true)]
    async fn a_stop_kills_every_instance_at_one_deadline() {
        let grace = Duration::from_secs(10);
        let spec = WorkloadSpec {
            command: Some("sh".into()),
            // `exec`: one process per group, reaped by its supervisor once killed.
            args: vec!["-c".into(), "trap '' TERM; exec sleep 1000".into()],
            stop_grace: grace,
            ..WorkloadSpec::default()
        };
        let mut instances = Instances {
            instances: Vec::new(),
        };
        for index in 0..3 {
            let port = 1 + u16::try_from(index).unwrap();
            let at = Place {
                index,
                ports: None,
                journal: None,
            };
            let (instance, _) = spawn_one("blue", &spec, &at, port).expect("sh starts");
            instances.instances.push(instance);
        }
        let pids = instances.pids();
        // Each must ignore SIGTERM before it is sent: wait until the shell has become `sleep`.
        for &pid in &pids {
            let mut tries = 0;
            while std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .unwrap_or_default()
                .trim()
                != "sleep"
            {
                tries += 1;
                assert!(tries < 6000, "instance {pid} never ran sleep");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let started = tokio::time::Instant::now();
        instances.stop("blue", grace).await;
        let took = started.elapsed();
        assert!(
            took >= grace && took < grace * 2,
            "one stop_grace for all three instances, took {took:?}"
        );
        for pid in pids {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            assert!(
                !stat.contains(") S ") && !stat.contains(") R "),
                "{pid}: {stat}"
            );
        }
    }
}
