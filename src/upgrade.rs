//! `crossfade proxy --upgrade-socket PATH` and `crossfade run SPEC --upgrade-socket PATH`: the
//! binary upgraded in place with no request lost.
//!
//! The serving process listens at PATH. A new process started with the same PATH (by an operator,
//! a service manager, or the serving process itself on SIGUSR2, which starts its own executable
//! path again with the same arguments, as nginx does) loads and checks its config, takes the
//! listening sockets and the live routes over that socket, serves, and says it is ready; only then
//! does the old process stop accepting and drain ([`crossfade_proxy::handover`]). A new process
//! that fails before that leaves the old one serving.
//!
//! Once the old process has handed its routes over, it changes them no more: an admin API write
//! gets 503 with `Retry-After` (the new process, on the same admin address, takes it), a SIGHUP
//! reload is refused and logged; both are accepted again if the handover fails. These are the
//! only writers of a `crossfade proxy CONFIG` process (`--kube`, whose routes come from the
//! cluster, has no `--upgrade-socket`). The new process numbers its routing tables on from the
//! old one's generation.
//!
//! `crossfade run SPEC --upgrade-socket PATH` ([`run`]) uses the same handover. Its workloads are
//! child processes of the old process, which a new one adopts as a restart after a crash does
//! (the child journal and the state file: `crossfade_controller::service::startup::take_over`):
//! 1. when a new process connects, the old one refuses it while a rollout is in progress (the new
//!    one prints the reason and exits 1); otherwise its controller is frozen: `POST /rollout` and
//!    the operator commands answer 503 with `Retry-After`, and an active instance that exits or
//!    waits for its restart is not started again by it any more (the supervisors hold,
//!    `crossfade_controller::driver::Hold`); the state is saved, and the listeners and the state
//!    file's lock are handed over;
//! 2. the new process reads the state file, adopts the active workload's running instances (one
//!    failing its readiness probe adopted not ready), stopping and starting nothing, takes on the
//!    old one's health view and numbers its routing tables on from its generation, serves and says
//!    ready; the old one then stops accepting, drains and exits, leaving the workloads running
//!    (released: never killed, not even by its exit) and writing nothing more to the state file or
//!    the child journal. An instance that had no process at the takeover is started by the new
//!    process once the old one has said it drains (or has exited): before, a failed handover
//!    leaves it to the old process;
//! 3. a new process that fails before it serves (a bad spec, an unreadable child journal) leaves the
//!    old one serving, its controller thawed: rollouts accepted, instances supervised again (one
//!    that exited meanwhile is restarted then).
//!
//! It needs the spec's `state_file` (adoption reads the pids there).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use crossfade_controller::driver::CancellationToken;
use crossfade_controller::service::startup;
use crossfade_controller::service::ServiceHandle;
use crossfade_proxy::admin::AdminAuth;
use crossfade_proxy::handover::{
    take_over, Admission, HandoverListener, Listeners, Predecessor, Successor,
};
use crossfade_proxy::ProxyConfig;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::fd_limit::{self, Shortfall};
use crate::notify::ServiceManager;
use crate::pid_file::PidFile;
use crate::serve::{bind_proxy, build_proxy, lock_state_file, reload_notifying, Stack};

/// `crossfade proxy --upgrade-socket PATH --upgrade-timeout DURATION`.
#[derive(Debug, Clone, Copy)]
pub struct Upgrade<'a> {
    /// The Unix socket the sockets and routes are handed over through.
    pub socket: &'a Path,
    /// How long a process that SIGUSR2 starts gets to connect to `socket` before it is killed.
    pub start_timeout: Duration,
}

/// Serves `config` (read from `path`) with in-place upgrades through `upgrade.socket`, until
/// SIGINT or SIGTERM, or until a successor took over and this process has drained. `pid_file` gets
/// this process's ID once it serves (after a takeover: once the predecessor confirmed that it
/// drains, before it exits); the service manager hears of it too (`notify`).
pub async fn proxy(
    path: &Path,
    config: &ProxyConfig,
    auth: AdminAuth,
    upgrade: Upgrade<'_>,
    pid_file: Option<&PidFile>,
) -> anyhow::Result<ExitCode> {
    let socket = upgrade.socket;
    // Taken now: once a new binary is installed at this path, SIGUSR2 starts that one.
    let exe = std::env::current_exe().context("cannot tell this program's own path")?;
    // Everything that can fail here fails before the serving process hears of this one, and a bad
    // socket path before any listener is bound (trial 5 F9).
    crossfade_proxy::handover::check_socket_path(socket)?;
    let (proxy, registry) = build_proxy(config)?;
    // A process started by SIGUSR2 shares the serving process's log and inherits its limit.
    let logged = successor_of_sigusr2()
        .then(|| Shortfall::from_env(std::env::var_os(fd_limit::WARNED_ENV)))
        .flatten();
    let shortfall = fd_limit::raise_or_warn(config.limits.max_connections, logged);
    let mut signals = Signals::install()?;
    let mut inherited = take_over(socket).await?;
    // Started by SIGUSR2 and nothing listens there: binding the listeners would only fail with
    // "address already in use" (trial 13 N13: the socket file had been deleted).
    if inherited.is_none() && successor_of_sigusr2() {
        anyhow::bail!(
            "binary upgrade: --upgrade-socket {}: no process listens there (the socket file is \
             gone or stale: removed by a temporary-file cleaner?), so the serving process cannot \
             hand its sockets over; restart it to upgrade",
            socket.display()
        );
    }
    // The file's routes are served only on a fresh start: a process that takes over serves the
    // old one's (which warned about them) and applies the file's at the next SIGHUP, which warns
    // about them then.
    if inherited.is_none() {
        crate::serve::warn_about(config, path, "");
    }
    // Who handed the routes over, for the start line.
    let handed_by = inherited.as_ref().map(|(_, predecessor)| {
        predecessor
            .pid()
            .map_or_else(|| "the old process".to_owned(), |pid| format!("pid {pid}"))
    });
    // Held until this process exits, and handed to the next one with the listeners. A lock file
    // handed over is adopted; a refusal here leaves the old process serving.
    let handed = inherited.as_mut().and_then(|(i, _)| i.state_lock.take());
    let state_lock = lock_state_file(config, handed)?;
    // What a SIGHUP compares the file with: the config read at start, with the addresses of the
    // sockets inherited in place of the ones it names (see `warn_if_moved`).
    let mut in_force = config.clone();
    let (listener, admin, predecessor) = match inherited {
        Some((inherited, predecessor)) => {
            // Generations count on from the old process's, so that they keep rising.
            proxy
                .inherit_routes(inherited.routes, inherited.generation)
                .map_err(|e| anyhow::anyhow!("the serving process's routes: {e}"))?;
            // Endpoints that passed a check there may still be failed open to here.
            proxy.inherit_passed_checks(&inherited.passed);
            // A tripped breaker holds until the weights are next set, which no upgrade does.
            proxy.inherit_tripped_breakers(&inherited.tripped);
            // An ejected endpoint stays out for the rest of its backoff, its count goes on.
            proxy.inherit_ejections(&inherited.ejected);
            // The next SIGHUP judges the file against what the old process last loaded.
            if let Some(weights) = inherited.file_weights {
                proxy.set_file_weights(weights);
            }
            // A random Via pseudonym is kept over the upgrade (a configured one is the config's).
            if let Some(pseudonym) = inherited.via.filter(|p| proxy.inherit_via(p)) {
                tracing::info!(%pseudonym, "binary upgrade: keeping the Via pseudonym");
            }
            in_force = warn_if_moved(config, &inherited.listen, &inherited.admin);
            (inherited.listen, inherited.admin, Some(predecessor))
        }
        None => (
            bind_proxy(config.listen, "listen", Some(socket)).await?,
            bind_proxy(config.admin, "admin", Some(socket)).await?,
            None,
        ),
    };
    // Inherited routes are the old process's, saved by it last: restored only on a fresh start.
    let weights = crate::serve::saved_weights(&proxy, config, predecessor.is_some())?;
    // After a takeover the routes in force are the old process's, not the file's (trial 13 N8).
    let weights = match handed_by {
        Some(by) => {
            let rest = weights
                .strip_prefix("from the config file ")
                .unwrap_or(&weights);
            format!(
                "handed over by {by} with the routes in force (this config file's routes and \
                 weights apply at the next SIGHUP); {rest}"
            )
        }
        None => weights,
    };
    let mut listeners = Listeners::of(&listener, &admin)?;
    if let Some(lock) = &state_lock {
        listeners = listeners.with_state_lock(std::os::fd::AsFd::as_fd(lock))?;
    }
    let (listen_addr, admin_addr) = (listener.local_addr()?, admin.local_addr()?);
    let took_over = predecessor.is_some();
    if took_over {
        first_probes_before_taking_over(&proxy).await;
    }
    let stack = Stack::serve(proxy.clone(), registry, None, auth, listener, admin);
    let manager = ServiceManager::from_env();
    // The old process this one waits for before it claims the service (it did not confirm the
    // handover but still runs: told to stop during it, say).
    let mut unclaimed = None;
    match predecessor {
        // A fresh start: a file that cannot be written fails it.
        None => {
            if let Some(Err(e)) = pid_file.map(PidFile::write) {
                stack.stop().await;
                return Err(e);
            }
        }
        Some(predecessor) => unclaimed = claim(predecessor, pid_file, &manager).await,
    }
    // After a takeover the old process is draining: nothing may stop this one but a signal, and a
    // socket that cannot be bound costs the next upgrade, not the traffic. On a fresh start it is
    // a bad argument, refused at once.
    let random_via = config
        .via
        .pseudonym
        .is_none()
        .then(|| proxy.via_pseudonym());
    let random_via = random_via.flatten();
    let handover = match unclaimed {
        // The old process still listens there until it exits: bound then.
        Some(_) => None,
        None if took_over => bind_after_takeover(socket, random_via),
        None => match HandoverListener::bind(socket) {
            Ok(handover) => Some(handover.announcing_via(random_via)),
            Err(e) => {
                pid_file.inspect(|p| p.remove_if_mine());
                return Err(e.into());
            }
        },
    };
    let via = proxy.via_pseudonym().unwrap_or("off");
    tracing::info!(version = crossfade_proxy::process::VERSION, pid = std::process::id(), listen = %listen_addr, admin = %admin_addr, upgrade_socket = %socket.display(), via, weights, "proxy serving");
    // A fresh start says READY=1 once its first probe round is over (a successor did so before
    // it took over, and says MAINPID= and READY=1 in `claim_service`).
    let ready = manager.ready_after_first_probes(&proxy);
    tokio::pin!(ready);
    let mut successor = await_successor(handover, &listeners, &proxy);
    let mut old_gone: Pin<Box<dyn Future<Output = ()> + Send>> = match unclaimed {
        Some(pid) => Box::pin(exited(pid)),
        None => Box::pin(std::future::pending()),
    };
    // Read by the tasks that wait for the processes SIGUSR2 started (`start_successor`).
    let handed_over = Arc::new(AtomicBool::new(false));
    // The process the last SIGUSR2 started, until it exits or takes over.
    let mut starting: Option<Starting> = None;
    let handed_to = loop {
        tokio::select! {
            never = &mut ready, if !took_over => match never {},
            Some(()) = signals.interrupt.recv() => {
                stop_signal(&proxy, &mut starting, "SIGINT");
                break None;
            }
            Some(()) = signals.terminate.recv() => {
                stop_signal(&proxy, &mut starting, "SIGTERM");
                break None;
            }
            () = &mut old_gone => {
                old_gone = Box::pin(std::future::pending());
                let pid = unclaimed.take().unwrap_or_default();
                tracing::info!(pid, "binary upgrade: the old process exited; this one claims the service (pid file, service manager, upgrade socket)");
                claim_service(pid_file, &manager);
                successor = await_successor(bind_after_takeover(socket, random_via), &listeners, &proxy);
            }
            Some(()) = signals.hangup.recv() => reload_notifying(&manager, &proxy, path, &in_force),
            Some(()) = signals.upgrade.recv() => match &starting {
                Some(started) => started.ignore_another_sigusr2(),
                None => starting = start_successor(&exe, &handed_over, shortfall, upgrade.start_timeout),
            },
            event = next_event(&mut starting) => match event {
                StartEvent::Exited => starting = None,
                StartEvent::Deadline => {
                    if let Some(started) = &mut starting {
                        started.deadline_passed(&proxy);
                    }
                }
            },
            Some(()) = signals.user1.recv() => {
                tracing::warn!("SIGUSR1 ignored: crossfade gives it no meaning (SIGUSR2 upgrades)");
            }
            successor = &mut successor => {
                // The successor speaks for the service from now on, even about this process.
                manager.handed_over();
                handed_over.store(true, Ordering::Relaxed);
                proxy.hand_over();
                stack.stop_accepting();
                let mut successor = successor;
                successor.draining().await;
                break Some(successor);
            }
        }
    };
    // No successor is taken any more: the upgrade socket closes now, not after the drain.
    drop(successor);
    // A process SIGUSR2 started that was told to stop with this one (not one that took over).
    if let Some(started) = starting.filter(|_| handed_to.is_none()) {
        started.stopped().await;
    }
    // After a handover the drain was logged as the successor's ("this one stops accepting and
    // drains", "draining for the new process"): once.
    if handed_to.is_none() {
        tracing::info!("shutting down: draining in-flight requests");
    }
    manager.stopping();
    let drain_signals = crate::serve::DrainSignals {
        term: Some(signals.terminate),
        int: Some(signals.interrupt),
        hup: Some(signals.hangup),
        usr2: Some(signals.upgrade),
    };
    crate::serve::stop_noting_signals(stack, config.drain_timeout, drain_signals).await;
    // Not gone before the successor claimed the pid file and told the service manager its ID:
    // systemd stops a unit whose main process exits while no other is named.
    if let Some(successor) = handed_to {
        successor.released().await;
    }
    // After a handover the file holds the successor's ID and stays.
    if let Some(pid_file) = pid_file {
        pid_file.remove_if_mine();
    }
    Ok(ExitCode::SUCCESS)
}

/// A successor's wait, before it accepts on the inherited sockets and says `ready`, for the
/// first probe round of its routes with active checks ([`crate::serve::first_probe_round`]): its
/// endpoints of such routes are held out until their first probe passes, so that serving before
/// the round would hold its first requests (or answer 503 where no endpoint is up yet) while the
/// old process, which knows which endpoints are up, could serve them. The old process accepts and
/// serves meanwhile (it stops only once this one said `ready`); route changes wait, as during the
/// rest of the handover. Bounded as a fresh start's `READY=1` is
/// ([`crate::serve::first_probe_bound`]): a round that is not over by then (a checker that cannot
/// run) is logged, and this process takes over all the same.
async fn first_probes_before_taking_over(proxy: &crossfade_proxy::Proxy) {
    crate::serve::first_probe_round(
        proxy,
        "binary upgrade",
        "before taking over the traffic (the old process serves meanwhile)",
        "taking over all the same",
    )
    .await;
}

/// A successor's side once it serves the inherited sockets: says `ready` to `predecessor`, and
/// only once the old process confirmed that it stopped accepting and drains, writes this process's
/// ID to `pid_file` and tells the service manager (`MAINPID=`, `READY=1`). Until then both name
/// the old process, which serves on if this one dies or is refused: a pid file or a `MAINPID`
/// written earlier would name a dead process while the old one still serves. The old process
/// waits for `predecessor` to be released (at the end of this) before it exits.
///
/// An old process that does not confirm (a SIGTERM or a crash during the handover) is looked at:
/// gone already, this one claims the service at once; still running, it goes on naming the
/// service until it exits, and its ID is returned: the caller claims the service then
/// ([`exited`], [`claim_service`]), so that the file always names a running process, and never
/// two processes write it.
async fn claim(
    mut predecessor: Predecessor,
    pid_file: Option<&PidFile>,
    manager: &ServiceManager,
) -> Option<u32> {
    let confirmed = match predecessor.ready().await {
        Ok(confirmed) => confirmed,
        Err(e) => {
            tracing::warn!("{e}");
            false
        }
    };
    if confirmed {
        // The old process logs its own drain, in the log they share after a SIGUSR2.
        let from = predecessor
            .pid()
            .map_or_else(|| "the old process".to_owned(), |pid| format!("pid {pid}"));
        tracing::info!("binary upgrade: took over from {from}");
    } else {
        match predecessor.pid() {
            Some(pid) if running(pid) => {
                tracing::warn!(
                    pid,
                    "binary upgrade: the old process did not confirm that it drains (stopped \
                     during the handover?); both serve until it exits, and the pid file and the \
                     service manager name it until then, this one after"
                );
                return Some(pid);
            }
            Some(pid) => tracing::warn!(
                pid,
                "binary upgrade: the old process exited during the handover; this one serves \
                 alone and claims the service"
            ),
            None => {
                tracing::warn!(
                    "binary upgrade: the old process did not confirm that it drains; it may still \
                     accept (the pid file and the service manager still name it)"
                );
                return None;
            }
        }
    }
    claim_service(pid_file, manager);
    predecessor.release();
    None
}

/// Names this process as the service's: its ID in `pid_file`, `MAINPID=` and `READY=1` to the
/// service manager.
fn claim_service(pid_file: Option<&PidFile>, manager: &ServiceManager) {
    if let Some(Err(e)) = pid_file.map(PidFile::write) {
        tracing::error!("{e:#}; the file still names the old process");
    }
    manager.took_over();
}

/// The upgrade socket bound by a process that took over (the old one has confirmed or exited);
/// `None`, logged, when it cannot be: the traffic is served all the same, without in-place
/// upgrades.
fn bind_after_takeover(socket: &Path, random_via: Option<&str>) -> Option<HandoverListener> {
    match HandoverListener::bind(socket) {
        Ok(handover) => Some(handover.announcing_via(random_via)),
        Err(e) => {
            tracing::error!("{e}; serving without in-place upgrades until restarted");
            None
        }
    }
}

/// Waits for the next successor on `handover` (never, without one).
fn await_successor<'a>(
    handover: Option<HandoverListener>,
    listeners: &'a Listeners,
    proxy: &'a crossfade_proxy::Proxy,
) -> Pin<Box<dyn Future<Output = Successor> + Send + 'a>> {
    Box::pin(async move {
        match handover {
            Some(handover) => handover.successor(listeners, proxy).await,
            None => std::future::pending().await,
        }
    })
}

/// How often a successor looks whether an old process that did not confirm has exited.
const EXIT_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Resolves once process `pid` has exited.
async fn exited(pid: u32) {
    while running(pid) {
        tokio::time::sleep(EXIT_POLL).await;
    }
}

/// Whether process `pid` runs: it has a `/proc` entry and is not a zombie (proc(5)). When
/// `/proc` cannot tell (not mounted, no permission), it is taken to run.
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold any byte.
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z' | 'X')
        ),
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

/// A SIGTERM or SIGINT (`name`) once the routes were handed to a successor: this process stops
/// as asked; the successor, which already accepts on the same sockets, serves on and claims the
/// service once this one has exited (nginx's rule for the old master after USR2). Says so, since
/// the service does not stop.
fn stopped_during_handover(proxy: &crossfade_proxy::Proxy, name: &str) {
    if let Some(successor) = proxy.handing_over_to() {
        let successor =
            successor.map_or_else(|| "the new process".to_owned(), |p| format!("pid {p}"));
        tracing::warn!(
            "{name} during a binary upgrade: this process drains and exits; {successor} serves \
             on and takes the pid file once this one has exited (send it SIGTERM to stop the \
             service)"
        );
    }
}

/// A SIGTERM or SIGINT (`name`) to a process that serves with upgrades (`proxy` or `run`): said
/// as [`stopped_during_handover`] says it, and the process the last SIGUSR2 started, if it is
/// still starting, is stopped with this one rather than left to take over a stopping service.
fn stop_signal(proxy: &crossfade_proxy::Proxy, starting: &mut Option<Starting>, name: &str) {
    stopped_during_handover(proxy, name);
    if let Some(started) = starting {
        started.stop_with_this_one(proxy, name);
    }
}

/// The signals `crossfade proxy --upgrade-socket` acts on.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
    upgrade: tokio::signal::unix::Signal,
    /// Caught so that its default action (ending the process) cannot drop the traffic.
    user1: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        let install = |kind: SignalKind, name: &str| {
            signal(kind).with_context(|| format!("cannot install the {name} handler"))
        };
        Ok(Signals {
            terminate: install(SignalKind::terminate(), "SIGTERM")?,
            interrupt: install(SignalKind::interrupt(), "SIGINT")?,
            hangup: install(SignalKind::hangup(), "SIGHUP")?,
            upgrade: install(SignalKind::user_defined2(), "SIGUSR2")?,
            user1: install(SignalKind::user_defined1(), "SIGUSR1")?,
        })
    }
}

/// Set (to `1`) in the environment of a process [`start_successor`] starts: such a process logs a
/// failure to start as one error record in the log it shares with the serving process, not as a
/// message on several lines, and does not log again what the serving process logged there
/// ([`fd_limit::WARNED_ENV`]).
pub const SUCCESSOR_ENV: &str = "CROSSFADE_UPGRADE_SUCCESSOR";

/// Whether this process was started by a serving process's SIGUSR2 ([`SUCCESSOR_ENV`]), and so
/// shares its log.
pub fn successor_of_sigusr2() -> bool {
    std::env::var_os(SUCCESSOR_ENV).is_some()
}

/// The environment variable that gives `crossfade proxy` its `--upgrade-socket`. `crossfade run`
/// does not read it: exported for a proxy on the same machine (or in the same unit's
/// environment), it made `run` take the proxy's socket path, refuse `--exit-after-rollout` as
/// if the flag had been given, and refuse a spec without `state_file`.
pub const SOCKET_ENV: &str = "CROSSFADE_UPGRADE_SOCKET";

/// `crossfade run` started without `--upgrade-socket` while [`SOCKET_ENV`] is set: logged at
/// INFO, so that whoever exported it for `run` learns why SIGUSR2 does not upgrade it.
pub fn note_proxy_socket_variable() {
    if let Some(path) = std::env::var_os(SOCKET_ENV) {
        tracing::info!(
            "{SOCKET_ENV}={} is ignored: it is `crossfade proxy`'s; `crossfade run` is upgraded \
             in place only with --upgrade-socket PATH",
            Path::new(&path).display()
        );
    }
}

/// SIGUSR2: starts `exe` with this process's arguments; it takes over through the upgrade socket.
/// Its exit is logged: before this process handed over (`handed_over` unset), as a failed
/// upgrade after which this one keeps serving; after it, as what it is, since this process then
/// drains and exits whatever the new one does (trial 11 L2: it said "keeps serving" then too).
/// `shortfall`, the open-file warning this process logged (or found logged), is passed on so that
/// the new process does not log it again ([`fd_limit::WARNED_ENV`]). Returns the process started
/// (`None`, logged, when it cannot be), which must connect within `start_timeout`.
fn start_successor(
    exe: &PathBuf,
    handed_over: &Arc<AtomicBool>,
    shortfall: Option<Shortfall>,
    start_timeout: Duration,
) -> Option<Starting> {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let mut command = tokio::process::Command::new(exe);
    command
        .args(&args)
        .env(SUCCESSOR_ENV, "1")
        .env_remove(fd_limit::WARNED_ENV)
        .stdin(Stdio::null());
    if let Some(shortfall) = shortfall {
        command.env(fd_limit::WARNED_ENV, shortfall.to_env());
    }
    let child = command.spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            tracing::error!(
                "SIGUSR2: cannot start {}: {e}; still serving",
                exe.display()
            );
            return None;
        }
    };
    let pid = child.id();
    tracing::info!(pid, "SIGUSR2: started {} to take over", exe.display());
    let handed_over = Arc::clone(handed_over);
    let (stop, mut stop_asked) = oneshot::channel::<StopReason>();
    let (exited_tx, exited) = oneshot::channel::<()>();
    tokio::spawn(async move {
        // Dropped when this task ends: the serving loop hears that the process exited.
        let _exited = exited_tx;
        let waited = tokio::select! {
            status = child.wait() => status,
            // Only a request stops it; a dropped sender (the loop handed over) does not.
            Ok(reason) = &mut stop_asked => {
                // `Child::start_kill` signals the process only while it is unreaped, so never a
                // process that took over its ID.
                if let Err(e) = child.start_kill() {
                    tracing::warn!(pid, "binary upgrade: cannot stop the new process: {e}");
                }
                match child.wait().await {
                    Ok(status) => {
                        match reason {
                            StopReason::Deadline => tracing::warn!(
                                pid,
                                %status,
                                "binary upgrade: stopped the new process; this one keeps \
                                 serving (the next SIGUSR2 starts another)"
                            ),
                            StopReason::ShuttingDown => tracing::info!(
                                pid,
                                %status,
                                "binary upgrade: stopped the new process; this one shuts down"
                            ),
                        }
                        return;
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match waited {
            Ok(status) if !handed_over.load(Ordering::Relaxed) => tracing::warn!(
                pid,
                %status,
                "binary upgrade: the new process exited; this one keeps serving"
            ),
            Ok(status) if status.success() => tracing::info!(
                pid,
                %status,
                "binary upgrade: a process this one started exited after this one handed over; \
                 this one is draining and serves no new connection"
            ),
            Ok(status) => tracing::warn!(
                pid,
                %status,
                "binary upgrade: a process this one started failed after this one handed over; \
                 this one is draining and serves no new connection"
            ),
            Err(e) => tracing::warn!(pid, "binary upgrade: cannot wait for the new process: {e}"),
        }
    });
    Some(Starting {
        pid,
        started: Instant::now(),
        deadline: crossfade_proxy::duration::later(Instant::now(), start_timeout),
        start_timeout,
        stop: Some(stop),
        exited,
    })
}

/// A process that SIGUSR2 started and that has neither exited nor taken over yet. While there is
/// one, a further SIGUSR2 is ignored (as nginx ignores a second USR2 while a new binary runs), so
/// that repeated signals to a hanging upgrade do not pile up processes.
struct Starting {
    /// Its process ID (`None` if it exited before it could be read).
    pid: Option<u32>,
    /// When SIGUSR2 started it.
    started: Instant,
    /// When it is stopped unless it connected to the upgrade socket: `start_timeout` after it
    /// started, or later while a handover is under way.
    deadline: Instant,
    /// `--upgrade-timeout`.
    start_timeout: Duration,
    /// Asks the task that waits for it to kill it (sent once).
    stop: Option<oneshot::Sender<StopReason>>,
    /// Resolves (with an error) when that task ended: the process exited.
    exited: oneshot::Receiver<()>,
}

/// Why the process SIGUSR2 started is killed, for the line that says it was.
#[derive(Debug, Clone, Copy)]
enum StopReason {
    /// It did not connect within `--upgrade-timeout`; this process serves on.
    Deadline,
    /// This process stops, before it connected.
    ShuttingDown,
}

/// What [`next_event`] saw of the process SIGUSR2 started.
enum StartEvent {
    /// It exited (the task that waited for it logged how).
    Exited,
    /// Its deadline passed.
    Deadline,
}

/// The next event of the process SIGUSR2 started; never, without one.
async fn next_event(starting: &mut Option<Starting>) -> StartEvent {
    let Some(started) = starting else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = &mut started.exited => StartEvent::Exited,
        () = tokio::time::sleep_until(started.deadline) => StartEvent::Deadline,
    }
}

impl Starting {
    /// Its process ID for a log line (`?` when it could not be read).
    fn pid_text(&self) -> String {
        self.pid.map_or_else(|| "?".to_owned(), |p| p.to_string())
    }

    /// A SIGUSR2 while this process starts: ignored, with the reason.
    fn ignore_another_sigusr2(&self) {
        let waited = self.started.elapsed().as_secs();
        let pid = self.pid_text();
        tracing::warn!(
            "SIGUSR2 ignored: pid {pid}, started by an earlier SIGUSR2 {waited} s ago, has not \
             taken over yet (it is stopped if it has not connected to the upgrade socket within \
             {} s of its start; the next SIGUSR2 after that starts another)",
            self.start_timeout.as_secs()
        );
    }

    /// This process stops (`signal`) while the process SIGUSR2 started has not connected: it is
    /// killed, since it would find no process to take over from and exit with an error, or hang
    /// on with no one to time it out. One a handover is under way with serves on (see
    /// [`stopped_during_handover`]).
    fn stop_with_this_one(&mut self, proxy: &crossfade_proxy::Proxy, signal: &str) {
        if proxy.handing_over_to().is_some() {
            return;
        }
        let pid = self.pid_text();
        tracing::warn!(
            "{signal}: stopping pid {pid}, which SIGUSR2 started and which has not connected to \
             the upgrade socket (there will be no process to take over from)"
        );
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(StopReason::ShuttingDown);
        }
    }

    /// Waits (2 s at most) until a process [`Starting::stop_with_this_one`] asked to stop is
    /// gone, so that it is not left running when this one exits before the task that kills it
    /// ran.
    async fn stopped(mut self) {
        if self.stop.is_none() {
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.exited).await;
        }
    }

    /// The deadline passed. While a handover is under way (with this process or with one an
    /// operator started) that handover has [`crossfade_proxy::handover::READY_TIMEOUT`] to end,
    /// and the deadline moves past it: a process that took the routes and said ready must not be
    /// killed, and one that hangs after it connected is given up on by the handover first.
    /// Otherwise it has not connected: it serves nothing and holds none of this process's
    /// sockets, and is killed (logged here and by the task that waits for it).
    fn deadline_passed(&mut self, proxy: &crossfade_proxy::Proxy) {
        if proxy.handing_over_to().is_some() {
            self.deadline = crossfade_proxy::duration::later(
                Instant::now(),
                crossfade_proxy::handover::READY_TIMEOUT,
            );
            return;
        }
        self.deadline = crossfade_proxy::duration::later(Instant::now(), Duration::MAX);
        let pid = self.pid_text();
        tracing::error!(
            "binary upgrade: pid {pid}, started by SIGUSR2 {} s ago, has not connected to the \
             upgrade socket (--upgrade-timeout {} s): a new binary that hangs at start? Stopping \
             it (SIGKILL)",
            self.started.elapsed().as_secs(),
            self.start_timeout.as_secs()
        );
        if let Some(stop) = self.stop.take() {
            // The task may have just seen it exit: then there is nothing to stop.
            let _ = stop.send(StopReason::Deadline);
        }
    }
}

/// Inherited sockets keep their addresses: a config that names others is served on the inherited
/// ones, and says so (changing a listener address needs a restart). Returns `config` with the
/// addresses in force, the ones a SIGHUP must compare the file with: against the file's own, a
/// file put back to the address served was warned about as a change needing a restart, and one
/// still naming the address not served was not (trial 17, T3).
fn warn_if_moved(
    config: &ProxyConfig,
    listen: &tokio::net::TcpListener,
    admin: &tokio::net::TcpListener,
) -> ProxyConfig {
    let mut in_force = config.clone();
    for (name, wanted, socket, served) in [
        ("listen", config.listen, listen, &mut in_force.listen),
        ("admin", config.admin, admin, &mut in_force.admin),
    ] {
        let Ok(actual) = socket.local_addr() else {
            continue;
        };
        let same =
            wanted.ip() == actual.ip() && (wanted.port() == 0 || wanted.port() == actual.port());
        if !same {
            tracing::warn!(%wanted, %actual, "{name}: the inherited socket is kept; a new address needs a restart");
            *served = actual;
        }
    }
    in_force
}

/// `crossfade run SPEC --upgrade-socket PATH`: serves the spec as `crossfade run` does, and can be
/// upgraded in place through `upgrade.socket` as `crossfade proxy` is (the same handover: the
/// listening sockets and the state file's lock pass to a new process, which adopts the active
/// workload's running instances; see the module docs). Until SIGINT or SIGTERM (the proxy drains,
/// then the workloads stop), or until a successor took over and this process has drained (the
/// workloads run on, supervised by the successor).
pub async fn run(
    path: &Path,
    token: &crate::token::TokenArgs,
    upgrade: Upgrade<'_>,
) -> anyhow::Result<ExitCode> {
    let socket = upgrade.socket;
    let exe = std::env::current_exe().context("cannot tell this program's own path")?;
    crossfade_proxy::handover::check_socket_path(socket)?;
    // Before anything binds: `/readyz` may answer before this task is scheduled again.
    let mut signals = Signals::install()?;
    let (spec, auth, warnings) = crate::serve::validated_spec(path, token)?;
    // A usage error (exit 2, README "Exit code"), as `--exit-after-rollout` with a spec's
    // `access_log: stdout`: the spec alone is valid; this flag is what needs more of it.
    if spec.state_file.is_none() {
        return Err(crate::flags::usage(format!(
            "--upgrade-socket: the spec {} has no state_file: a new process takes the running \
             workload over from the state file and its child journal, so an in-place upgrade of \
             `crossfade run` needs one (state_file: state.json, beside the spec)",
            path.display()
        )));
    }
    for warning in &warnings {
        tracing::warn!("spec {}: {warning}", path.display());
    }
    // Fails, refused, when the serving process runs a rollout: it serves on.
    let inherited = take_over(socket).await?;
    if inherited.is_none() && successor_of_sigusr2() {
        anyhow::bail!(
            "binary upgrade: --upgrade-socket {}: no process listens there (the socket file is \
             gone or stale: removed by a temporary-file cleaner?), so the serving process cannot \
             hand its sockets over; restart it to upgrade",
            socket.display()
        );
    }
    // Cancelled once the old process has handed the workload over: the instances it had no
    // process of at the takeover are started then ([`startup::take_over`]).
    let mut start_down: Option<CancellationToken> = None;
    let (mut running, predecessor) = match inherited {
        Some((mut inherited, predecessor)) => {
            let lock = inherited.state_lock.take();
            // Nothing stopped or started: a failure here leaves the old process serving.
            let recovered = startup::take_over(&spec, lock, predecessor.pid())
                .await
                .map_err(crate::serve::start_error)?;
            start_down.clone_from(&recovered.handed_over);
            let handed = crate::serve::Handed {
                generation: inherited.generation,
                passed: inherited.passed,
                tripped: inherited.tripped,
                ejected: inherited.ejected,
            };
            let sockets = (inherited.listen, inherited.admin);
            let start = crate::serve::Start {
                first_probes: true,
                green: None,
                upgradable: true,
                handed: Some(&handed),
            };
            let running =
                crate::serve::serve_recovered(&spec, auth, sockets, recovered, start).await?;
            (running, Some(predecessor))
        }
        None => match crate::serve::start(&spec, auth, true).await {
            Ok(running) => (running, None),
            Err(e) if e.is::<crate::serve::StoppedWhileStarting>() => {
                tracing::info!("{e}");
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => return Err(e),
        },
    };
    let proxy = running.stack.proxy.clone();
    let listeners = running
        .listeners
        .take()
        .context("the listening sockets were not kept for a handover")?;
    let took_over = predecessor.is_some();
    let manager = ServiceManager::from_env();
    let mut unclaimed = None;
    if let Some(predecessor) = predecessor {
        unclaimed = claim(predecessor, None, &manager).await;
    }
    // The old process drains (from `ready` on it never restarts an instance, and it releases
    // them next) or is gone: what it had no process of is this one's to start. Not while it may
    // still run unconfirmed: then once it has exited.
    if unclaimed.is_none() {
        start_down.iter().for_each(CancellationToken::cancel);
    }
    let handover = match unclaimed {
        Some(_) => None,
        None if took_over => bind_after_takeover(socket, None),
        None => match HandoverListener::bind(socket) {
            Ok(handover) => Some(handover),
            Err(e) => {
                running.stack.stop().await;
                running.service.shutdown().await;
                return Err(e.into());
            }
        },
    };
    tracing::info!(version = crossfade_proxy::process::VERSION, pid = std::process::id(), listen = %running.listen, admin = %running.admin, upgrade_socket = %socket.display(), "serving route {}", running.route);
    // The spec's green, as a fresh start rolls it out, once this process is the one that serves.
    if let (true, Some(green)) = (took_over, &spec.green) {
        if let Err(e) = crate::serve::roll_out_green(&mut running, green).await {
            tracing::error!("spec {}: green: not rolled out: {e:#}", path.display());
        }
    }
    let ready = manager.ready_after_first_probes(&proxy);
    tokio::pin!(ready);
    let admission = RunAdmission(running.service.clone());
    let mut successor = await_admitted(handover, &listeners, &proxy, &admission);
    let mut old_gone: Pin<Box<dyn Future<Output = ()> + Send>> = match unclaimed {
        Some(pid) => Box::pin(exited(pid)),
        None => Box::pin(std::future::pending()),
    };
    let handed_over = Arc::new(AtomicBool::new(false));
    let mut starting: Option<Starting> = None;
    let service = running.service.clone();
    let handed_to = loop {
        tokio::select! {
            never = &mut ready, if !took_over => match never {},
            // A controller task that dies (a panic) must not leave a process that serves but
            // cannot be steered (as `crossfade run` without an upgrade socket).
            () = service.stopped() => {
                running.stack.stop().await;
                anyhow::bail!(
                    "the rollout controller of route {} stopped unexpectedly (see the error \
                     above); the rollout can no longer be steered, so crossfade stops (the state \
                     file keeps the last recorded phase for the next start)",
                    running.route
                );
            }
            Some(()) = signals.interrupt.recv() => {
                stop_signal(&proxy, &mut starting, "SIGINT");
                break None;
            }
            Some(()) = signals.terminate.recv() => {
                stop_signal(&proxy, &mut starting, "SIGTERM");
                break None;
            }
            () = &mut old_gone => {
                old_gone = Box::pin(std::future::pending());
                let pid = unclaimed.take().unwrap_or_default();
                tracing::info!(pid, "binary upgrade: the old process exited; this one claims the service (service manager, upgrade socket)");
                claim_service(None, &manager);
                start_down.iter().for_each(CancellationToken::cancel);
                successor = await_admitted(bind_after_takeover(socket, None), &listeners, &proxy, &admission);
            }
            Some(()) = signals.hangup.recv() => crate::serve::run_hangup(&spec, &proxy),
            Some(()) = signals.upgrade.recv() => match &starting {
                Some(started) => started.ignore_another_sigusr2(),
                None => starting = start_successor(&exe, &handed_over, None, upgrade.start_timeout),
            },
            event = next_event(&mut starting) => match event {
                StartEvent::Exited => starting = None,
                StartEvent::Deadline => {
                    if let Some(started) = &mut starting {
                        started.deadline_passed(&proxy);
                    }
                }
            },
            Some(()) = signals.user1.recv() => {
                tracing::warn!("SIGUSR1 ignored: crossfade gives it no meaning (SIGUSR2 upgrades)");
            }
            successor = &mut successor => {
                manager.handed_over();
                handed_over.store(true, Ordering::Relaxed);
                proxy.hand_over();
                running.stack.stop_accepting();
                let mut successor = successor;
                successor.draining().await;
                // The new process adopted the active instances: they are its own from now on.
                service.hand_over().await;
                break Some(successor);
            }
        }
    };
    drop(successor);
    if let Some(started) = starting.filter(|_| handed_to.is_none()) {
        started.stopped().await;
    }
    if handed_to.is_none() {
        tracing::info!("shutting down: draining in-flight requests");
    }
    manager.stopping();
    let drain_signals = crate::serve::DrainSignals {
        term: Some(signals.terminate),
        int: Some(signals.interrupt),
        hup: Some(signals.hangup),
        usr2: Some(signals.upgrade),
    };
    let stack = running.stack;
    // Stopped (SIGTERM, SIGINT) while a new process is taking over: it has the sockets and adopts
    // (or adopted) the workloads, and serves on once this one is gone (as the proxy's does), so
    // they are left to it rather than stopped under it.
    let left_to_successor = handed_to.is_some() || proxy.handing_over_to().is_some();
    if handed_to.is_none() && left_to_successor {
        service.hand_over().await;
    }
    let workloads = match left_to_successor {
        true => "the workloads run on under the new process",
        false => "then each workload gets its stop_grace before SIGKILL",
    };
    let stopping = async {
        stack.stop().await;
        // After a handover this stops nothing: the service writes and stops nothing any more.
        if !left_to_successor {
            service.shutdown().await;
        }
    };
    crate::serve::noting_signals(stopping, drain_signals, |name| {
        tracing::warn!(
            signal = name,
            "{name} ignored: already stopping (the proxy drains, {workloads}); SIGKILL stops \
             crossfade at once, and the next `crossfade run` takes over or stops what it leaves \
             running"
        );
    })
    .await;
    if let Some(successor) = handed_to {
        successor.released().await;
    }
    Ok(ExitCode::SUCCESS)
}

/// `crossfade run`'s answer to a successor that connects: refused while a rollout is in
/// progress; else the controller is frozen (no rollout starts, the active instances are held)
/// until the handover ends, and thawed if it fails ([`ServiceHandle::freeze_for_upgrade`]).
struct RunAdmission(ServiceHandle);

impl Admission for RunAdmission {
    fn admit(
        &self,
        pid: Option<u32>,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(self.0.freeze_for_upgrade(pid))
    }

    fn undo(&self) {
        let service = self.0.clone();
        tokio::spawn(async move { service.thaw().await });
    }
}

/// Waits for the next successor on `handover` that `admission` admits (never, without one).
fn await_admitted<'a>(
    handover: Option<HandoverListener>,
    listeners: &'a Listeners,
    proxy: &'a crossfade_proxy::Proxy,
    admission: &'a RunAdmission,
) -> Pin<Box<dyn Future<Output = Successor> + Send + 'a>> {
    Box::pin(async move {
        match handover {
            Some(handover) => {
                handover
                    .successor_admitting(listeners, proxy, admission)
                    .await
            }
            None => std::future::pending().await,
        }
    })
}
