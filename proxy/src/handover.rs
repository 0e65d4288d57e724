//! Zero-downtime upgrade of the proxy binary: the running process hands its listening sockets to
//! its successor over a Unix socket, as HAProxy's `-x` (`expose-fd listeners`) and Envoy's hot
//! restart do, so that no connection is refused and none already accepted is dropped.
//!
//! The old process listens on a Unix stream socket at a path ([`HandoverListener`]). A new process
//! started with the same path ([`take_over`]) connects and the exchange is:
//!
//! 1. old → new: one byte carrying the traffic and admin listening sockets as `SCM_RIGHTS`
//!    ancillary data (unix(7)), and a third descriptor when the old process holds a
//!    `state_file`'s lock: its locked lock file, so that the lock passes to the new process
//!    without a moment free (an `flock(2)` lock belongs to the open file, which stays locked while
//!    either process has it open; a successor of an older version has room for two descriptors
//!    only, and the kernel closes the third for it), then one JSON line with the protocol version and the routes in
//!    force (weights set through the admin API since the config file was read are live state, and
//!    an upgrade must not undo them), the weights of the config file at its last load, so
//!    that the successor's reloads keep runtime weights by the same rule ([`crate::reload`]), and
//!    the routing table's generation, which the successor counts on from
//!    ([`Proxy::inherit_routes`]), the endpoints that passed a health check, to which the
//!    successor fails open as this process would ([`Proxy::inherit_passed_checks`]), and the
//!    backends whose breaker is tripped, which stay so ([`Proxy::inherit_tripped_breakers`]),
//!    and the endpoints outlier detection ejected, which stay out for the rest of their backoff
//!    ([`Proxy::inherit_ejections`]).
//!    From the moment the routes are taken for this line the old
//!    process changes its routes no more ([`Proxy::hand_routes_over`]): an admin API write gets
//!    503 with `Retry-After` naming the successor's pid, a SIGHUP reload is refused, since
//!    neither would reach the successor; if the exchange fails before `ready`, changes are
//!    accepted again;
//! 2. new → old: `ready\n`, once the new process accepts on the inherited sockets; `crossfade
//!    proxy` first awaits its first health probe round ([`Proxy::first_probes`]), since it holds
//!    the endpoints of routes with active checks out until a probe passes, while the old process,
//!    whose health view is current, serves;
//! 3. old → new: `draining\n`: the old process has stopped accepting (the kernel's accept queue is
//!    the sockets', which both processes share, so nothing queued is lost) and drains; the new one
//!    then claims the service (its pid file, `MAINPID=` to systemd) and binds the handover path
//!    itself for the next upgrade;
//! 4. new → old: end of stream, once the new process has claimed the service
//!    ([`Predecessor::release`]): the old process does not exit before it (or [`STEP_TIMEOUT`]),
//!    so that a service manager that follows the main process never sees it exit while no other
//!    process is named. A successor of an older version closes the stream right after step 3.
//!
//! Until it reads `ready`, the old process serves as before (but for route changes, refused from
//! step 1): a successor that fails to start, or dies after it received the sockets, leaves it
//! serving (and its copies of the sockets close with it), route changes accepted again. A successor that does not get ready within [`READY_TIMEOUT`] is given up on.
//!
//! Before step 1 the old process may refuse a successor ([`HandoverListener::successor_admitting`]
//! with an [`Admission`]: `crossfade run` while a rollout is in progress): it then sends the byte
//! `R` with no descriptor and one JSON line `{"version": 1, "refused": "<reason>"}`, and the
//! successor's [`take_over`] fails with [`Error::HandoverRefused`] naming the reason. A successor
//! of an older version reads it as a malformed exchange and exits all the same.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::{TcpListener, UnixListener, UnixStream};

use crate::config::RouteConfig;
use crate::error::{Error, Result};
use crate::handle::{HandedRoutes, Proxy};
use crate::health::{EjectedEndpoint, PassedCheck, TrippedBreaker};
use crate::reload::FileWeights;

/// The version of the exchange; a successor refuses any other.
const VERSION: u32 = 1;

/// Sockets handed over: the traffic listener, then the admin listener.
const SOCKETS: usize = 2;

/// Descriptors handed over at most: the sockets, then the state file's lock file.
const MAX_FDS: usize = SOCKETS + 1;

/// The longest state line accepted (the routes as JSON), in bytes.
const MAX_STATE_BYTES: u64 = 16 << 20;

/// How long a successor may take from connecting until it says `ready`: 60 s.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long each other step of the exchange may take: 10 s.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The state line sent after the sockets.
#[derive(Debug, Serialize, Deserialize)]
struct State {
    version: u32,
    routes: Vec<RouteConfig>,
    /// The predecessor's reload baseline (absent from binaries before it: then the successor's
    /// own file is the baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file_weights: Option<FileWeights>,
    /// The predecessor's random `Via` pseudonym, which a successor without a configured one
    /// keeps (absent when it was configured, `Via` is off, or from binaries before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    via: Option<String>,
    /// The generation of the predecessor's routing table (absent from binaries before it: then
    /// the successor counts from its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    generation: Option<u64>,
    /// The endpoints that passed a health check in the predecessor (absent from binaries before
    /// it, and when none did: then none is known to have).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    passed: Vec<PassedCheck>,
    /// The backends whose circuit breaker is tripped in the predecessor (absent from binaries
    /// before it, and when none is).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tripped: Vec<TrippedBreaker>,
    /// The endpoints outlier detection ejected in the predecessor, or that are back from an
    /// ejection (absent from binaries before it, and when none is).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ejected: Vec<EjectedEndpoint>,
}

/// The listening sockets a serving process can hand over: duplicates of its traffic and admin
/// listeners, kept while it serves, and of its `state_file`'s locked lock file, if it holds one.
#[derive(Debug)]
pub struct Listeners {
    listen: OwnedFd,
    admin: OwnedFd,
    state_lock: Option<OwnedFd>,
}

impl Listeners {
    /// Duplicates (`dup(2)`) the two listeners' descriptors.
    ///
    /// # Errors
    /// [`Error::Handover`] when the process is out of file descriptors.
    pub fn of(listen: &TcpListener, admin: &TcpListener) -> Result<Listeners> {
        let dup = |l: &TcpListener| l.as_fd().try_clone_to_owned();
        let step = "duplicating the listening sockets";
        let handover = |source| Error::Handover { step, source };
        Ok(Listeners {
            listen: dup(listen).map_err(handover)?,
            admin: dup(admin).map_err(handover)?,
            state_lock: None,
        })
    }

    /// Hands `lock` over too: a descriptor of the locked lock file of the process's
    /// `state_file` (duplicated), which the successor adopts ([`Inherited::state_lock`]).
    ///
    /// # Errors
    /// [`Error::Handover`] when the process is out of file descriptors.
    pub fn with_state_lock(mut self, lock: BorrowedFd<'_>) -> Result<Listeners> {
        let source = |source| Error::Handover {
            step: "duplicating the state file's lock",
            source,
        };
        self.state_lock = Some(lock.try_clone_to_owned().map_err(source)?);
        Ok(self)
    }
}

/// What a successor inherits from its predecessor.
#[derive(Debug)]
pub struct Inherited {
    /// The traffic listener, accepting.
    pub listen: TcpListener,
    /// The admin listener, accepting.
    pub admin: TcpListener,
    /// The predecessor's routes in force (with their current weights).
    pub routes: Vec<RouteConfig>,
    /// The weights of the predecessor's config file at its last load, which its next reload
    /// would have judged by ([`crate::reload`]); `None` from a predecessor that does not send
    /// them.
    pub file_weights: Option<FileWeights>,
    /// The predecessor's random `Via` pseudonym (see [`HandoverListener::announcing_via`]), for
    /// [`crate::Proxy::inherit_via`].
    pub via: Option<String>,
    /// The generation of the predecessor's routing table when it sent `routes`, for
    /// [`Proxy::inherit_routes`]; `None` from a predecessor that does not send it.
    pub generation: Option<u64>,
    /// The endpoints that passed a health check in the predecessor, for
    /// [`Proxy::inherit_passed_checks`] (empty from a predecessor that does not send them).
    pub passed: Vec<PassedCheck>,
    /// The backends whose breaker is tripped in the predecessor, for
    /// [`Proxy::inherit_tripped_breakers`] (empty from a predecessor that does not send them).
    pub tripped: Vec<TrippedBreaker>,
    /// The endpoints ejected in the predecessor, for [`Proxy::inherit_ejections`] (empty from a
    /// predecessor that does not send them).
    pub ejected: Vec<EjectedEndpoint>,
    /// The predecessor's `state_file` lock file, locked, when it holds one (see the module docs):
    /// for the caller to adopt when its own `state_file` is the same file; `None` from a
    /// predecessor without one or of an older version.
    pub state_lock: Option<OwnedFd>,
}

/// The successor's side of the exchange, after it received the sockets.
#[derive(Debug)]
pub struct Predecessor {
    stream: BufReader<UnixStream>,
    /// The old process's ID, from the socket's peer credentials (`SO_PEERCRED`, unix(7)).
    pid: Option<u32>,
}

/// The old process's Unix socket on which a successor asks for the listening sockets.
#[derive(Debug)]
pub struct HandoverListener {
    listener: UnixListener,
    path: PathBuf,
    via: Option<String>,
}

/// A successor that said `ready`: the old process now stops accepting, drains, and tells it with
/// [`Successor::draining`].
#[derive(Debug)]
pub struct Successor {
    stream: BufReader<UnixStream>,
}

/// Asks the process listening at `path` for its listening sockets and routes.
///
/// Returns `None` when nothing listens there (no file, or a stale one: connection refused), so
/// the caller binds its own sockets. The caller then serves on the inherited sockets and calls
/// [`Predecessor::ready`].
///
/// # Errors
/// [`Error::Handover`] when the exchange fails (the predecessor keeps serving).
pub async fn take_over(path: &Path) -> Result<Option<(Inherited, Predecessor)>> {
    let stream = match UnixStream::connect(path).await {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(source) => {
            let step = "connecting to the serving process";
            return Err(Error::Handover { step, source });
        }
    };
    let pid = stream
        .peer_cred()
        .ok()
        .and_then(|credentials| credentials.pid())
        .and_then(|pid| u32::try_from(pid).ok());
    let step = "receiving the listening sockets";
    let (byte, fds) = within(step, receive_sockets(&stream)).await?;
    if byte == REFUSED && fds.is_empty() {
        let mut stream = BufReader::new(stream);
        let step = "reading why the serving process refused";
        let line = within(step, read_line(&mut stream)).await?;
        let refusal: Refusal = serde_json::from_str(&line).map_err(|e| invalid(step, e))?;
        return Err(Error::HandoverRefused {
            pid,
            reason: refusal.refused,
        });
    }
    let mut fds = fds.into_iter();
    let (Some(listen), Some(admin), state_lock, None) =
        (fds.next(), fds.next(), fds.next(), fds.next())
    else {
        return Err(invalid(
            step,
            "expected a traffic and an admin socket, and at most a state file's lock",
        ));
    };
    let mut stream = BufReader::new(stream);
    let step = "receiving the routes";
    let line = within(step, read_line(&mut stream)).await?;
    let state: State = serde_json::from_str(&line).map_err(|e| invalid(step, e))?;
    if state.version != VERSION {
        let message = format!("version {} (this binary speaks {VERSION})", state.version);
        return Err(invalid(step, message));
    }
    let step = "using the inherited sockets";
    let inherited = Inherited {
        listen: listener(listen).map_err(|source| Error::Handover { step, source })?,
        admin: listener(admin).map_err(|source| Error::Handover { step, source })?,
        routes: state.routes,
        file_weights: state.file_weights,
        via: state.via,
        generation: state.generation,
        passed: state.passed,
        tripped: state.tripped,
        ejected: state.ejected,
        state_lock,
    };
    Ok(Some((inherited, Predecessor { stream, pid })))
}

impl Predecessor {
    /// The old process's ID (as the kernel gave it when this process connected); `None` when
    /// the kernel did not say.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Tells the predecessor that this process accepts on the inherited sockets, and waits (at
    /// most 10 s) until it has stopped accepting. Returns false when it did not confirm (it may
    /// have exited, or still accept alongside this process). The predecessor then waits for
    /// [`Predecessor::release`] (or the drop of `self`) before it exits.
    ///
    /// # Errors
    /// [`Error::Handover`] when `ready` cannot be sent.
    pub async fn ready(&mut self) -> Result<bool> {
        let step = "telling the serving process this one is ready";
        within(step, self.stream.get_mut().write_all(b"ready\n")).await?;
        let answer = within("waiting for the old process to drain", async {
            read_line(&mut self.stream).await
        })
        .await;
        Ok(matches!(answer.as_deref(), Ok("draining")))
    }

    /// Ends the exchange (step 4): this process has claimed the service (pid file, service
    /// manager), and the predecessor may exit once drained. Dropping `self` does the same.
    pub fn release(self) {
        drop(self);
    }
}

impl HandoverListener {
    /// Listens at `path` (mode 0600: only this user's processes can take the listeners over),
    /// replacing a socket file left there by a process that no longer listens (a crashed one, or
    /// the predecessor after it confirmed it is draining).
    ///
    /// # Errors
    /// [`Error::Handover`] when the path cannot be bound, when something other than a Unix socket
    /// is there (a regular file, a directory...: never removed, the error names
    /// `--upgrade-socket` and the path), or when a process still listens on the socket there.
    pub fn bind(path: &Path) -> Result<HandoverListener> {
        let step = "binding the upgrade socket";
        let handover = |source| Error::Handover { step, source };
        remove_stale(path).map_err(handover)?;
        let listener = UnixListener::bind(path).map_err(handover)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(handover)?;
        Ok(HandoverListener {
            listener,
            path: path.to_path_buf(),
            via: None,
        })
    }

    /// Hands `pseudonym`, this process's random `Via` pseudonym, to successors, so that the
    /// proxy's `Via` entries keep their name over a binary upgrade. `None` (a configured
    /// pseudonym, which the successor reads from its own config, or `Via` off) sends nothing.
    pub fn announcing_via(mut self, pseudonym: Option<&str>) -> HandoverListener {
        self.via = pseudonym.map(str::to_owned);
        self
    }

    /// Serves successors one at a time until one is ready: each gets `listeners`, and `proxy`'s
    /// routes in force, reload baseline and generation, handed over by
    /// [`Proxy::hand_routes_over`] (from then on `proxy` refuses route changes, naming the
    /// successor's pid). A successor that fails or goes away is logged, `proxy` accepts route
    /// changes again ([`Proxy::keep_routes`]), and the next is awaited. Once one is ready,
    /// `proxy`'s routes stay as handed over: the successor serves them.
    pub async fn successor(self, listeners: &Listeners, proxy: &Proxy) -> Successor {
        self.successor_admitting(listeners, proxy, &AdmitAll).await
    }

    /// As [`HandoverListener::successor`], with `admission` asked first about each successor
    /// that connects: one it refuses gets the reason (its [`take_over`] fails with
    /// [`Error::HandoverRefused`]) and nothing else; one it admits is undone
    /// ([`Admission::undo`]) when its exchange fails before `ready`. `crossfade run` refuses a
    /// handover while a rollout is in progress, and freezes its controller meanwhile.
    pub async fn successor_admitting(
        self,
        listeners: &Listeners,
        proxy: &Proxy,
        admission: &dyn Admission,
    ) -> Successor {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, path = %self.path.display(), "upgrade socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Its pid names it in the answers to refused route changes.
            let pid = stream
                .peer_cred()
                .ok()
                .and_then(|credentials| credentials.pid())
                .and_then(|pid| u32::try_from(pid).ok());
            tracing::info!(
                pid,
                "binary upgrade: a new process asks for the listening sockets"
            );
            if let Err(reason) = admission.admit(pid).await {
                tracing::warn!(
                    pid,
                    "binary upgrade refused: {reason}; still serving (the new process exits)"
                );
                if let Err(error) = refuse(&stream, &reason).await {
                    tracing::warn!("binary upgrade: {error}");
                }
                continue;
            }
            match offer(stream, listeners, proxy, pid, self.via.clone()).await {
                Ok(successor) => return successor,
                Err(error) => {
                    proxy.keep_routes();
                    admission.undo();
                    tracing::warn!("{error}; still serving, route changes accepted again");
                }
            }
        }
    }
}

/// What a serving process says about a successor that connects, before anything is handed to
/// it ([`HandoverListener::successor_admitting`]).
pub trait Admission: Send + Sync {
    /// Whether the successor (`pid`, when the kernel said) may take over: `Err` with the reason,
    /// which it is sent, refuses it. Admitting may change the serving process (`crossfade run`
    /// freezes its controller), which [`Admission::undo`] reverts.
    fn admit(
        &self,
        pid: Option<u32>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::result::Result<(), String>> + Send + '_>,
    >;
    /// The admitted successor's exchange failed before it said `ready`: the serving process
    /// goes on as before it was admitted.
    fn undo(&self);
}

/// Admits every successor ([`HandoverListener::successor`]).
struct AdmitAll;

impl Admission for AdmitAll {
    fn admit(
        &self,
        _: Option<u32>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::result::Result<(), String>> + Send + '_>,
    > {
        Box::pin(std::future::ready(Ok(())))
    }

    fn undo(&self) {}
}

/// The byte a refusal is sent with (no descriptors), before its line.
const REFUSED: u8 = b'R';

/// The line that follows a refusal's byte.
#[derive(Debug, Serialize, Deserialize)]
struct Refusal {
    version: u32,
    refused: String,
}

/// Tells a successor that it may not take over, and why: the [`REFUSED`] byte without
/// descriptors, then a [`Refusal`] line.
async fn refuse(stream: &UnixStream, reason: &str) -> Result<()> {
    let step = "refusing the new process";
    within(step, send_sockets(stream, &[], REFUSED)).await?;
    let mut line = serde_json::to_vec(&Refusal {
        version: VERSION,
        refused: reason.to_owned(),
    })
    .map_err(|e| invalid(step, e))?;
    line.push(b'\n');
    let writer = stream;
    within(step, async move {
        loop {
            writer.writable().await?;
            match writer.try_write(&line) {
                Ok(n) if n == line.len() => return Ok(()),
                Ok(n) => line.drain(..n).for_each(drop),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    })
    .await
}

impl Successor {
    /// Tells the successor that this process stopped accepting and drains.
    pub async fn draining(&mut self) {
        let sent = tokio::time::timeout(STEP_TIMEOUT, async {
            self.stream.get_mut().write_all(b"draining\n").await
        })
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            tracing::warn!("binary upgrade: could not tell the new process that this one drains");
        }
    }

    /// Waits until the successor ends the exchange (step 4: it claimed the service, or exited),
    /// at most [`STEP_TIMEOUT`] (10 s); anything it sends before is ignored.
    pub async fn released(mut self) {
        let ended = tokio::time::timeout(STEP_TIMEOUT, async {
            let mut rest = [0u8; 64];
            // End of stream or an error (the successor is gone): either way it is done with us.
            while matches!(self.stream.read(&mut rest).await, Ok(n) if n > 0) {}
        })
        .await;
        if ended.is_err() {
            tracing::warn!(
                "binary upgrade: the new process did not confirm within {}s that it serves as the \
                 main process; exiting all the same",
                STEP_TIMEOUT.as_secs()
            );
        }
    }
}

/// Removes the socket file at `path` when no process listens on it; nothing there is fine.
/// Anything else is refused: a typo or a swapped argument must not delete a config file or a
/// certificate, and a live process's socket is not taken from it.
fn remove_stale(path: &Path) -> io::Result<()> {
    if !check_path(path)? {
        return Ok(());
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        let message = format!(
            "--upgrade-socket {}: a process listens on it (another proxy serving?); refusing to \
             take it over",
            path.display()
        );
        return Err(io::Error::new(io::ErrorKind::AddrInUse, message));
    }
    std::fs::remove_file(path)
}

/// Checks `--upgrade-socket PATH` before anything is bound (a bad path must not cost a moment
/// of accepted and then dropped connections): its directory must exist, and whatever is at PATH
/// must be a Unix socket (never removed otherwise). Whether a process listens there is not
/// checked: a serving predecessor is expected.
///
/// # Errors
/// [`Error::Handover`] naming `--upgrade-socket` and the path:
/// `--upgrade-socket /run/x/up.sock: directory /run/x does not exist`, or `... a regular file is
/// there, not a Unix socket ...`.
pub fn check_socket_path(path: &Path) -> Result<()> {
    check_path(path)
        .map(drop)
        .map_err(|source| Error::Handover {
            step: "checking the upgrade socket path",
            source,
        })
}

/// The longest path a Unix socket can be bound or reached at: `sun_path` holds 108 bytes with
/// the closing NUL (unix(7)).
const MAX_SOCKET_PATH: usize = 107;

/// `Ok(true)` when a Unix socket is at `path`, `Ok(false)` when nothing is there but its
/// directory exists; an error naming the flag and the path otherwise (a path too long for a Unix
/// socket among them: it failed at the connect with "path must be shorter than SUN_LEN").
fn check_path(path: &Path) -> io::Result<bool> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        let message = format!(
            "--upgrade-socket {}: {len} bytes, above the {MAX_SOCKET_PATH} a Unix socket's path \
             may have (unix(7)); name a shorter one, e.g. /run/crossfade/upgrade.sock",
            path.display()
        );
        return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
    }
    if crate::files::names_a_directory(path) {
        let message = format!(
            "--upgrade-socket {}: names a directory, not a socket file; name a path of its own, \
             e.g. /run/crossfade/upgrade.sock",
            path.display()
        );
        return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
    }
    let metadata = match std::fs::symlink_metadata(path) {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            let Some(dir) = dir else { return Ok(false) };
            let what = match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() => return Ok(false),
                Ok(_) => "is not a directory",
                Err(e) if e.kind() == io::ErrorKind::NotFound => "does not exist",
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "--upgrade-socket {}: directory {}: {e}",
                            path.display(),
                            dir.display()
                        ),
                    ))
                }
            };
            let message = format!(
                "--upgrade-socket {}: directory {} {what}",
                path.display(),
                dir.display()
            );
            return Err(io::Error::new(io::ErrorKind::NotFound, message));
        }
        Err(e) => {
            let message = format!("--upgrade-socket {}: {e}", path.display());
            return Err(io::Error::new(e.kind(), message));
        }
        Ok(metadata) => metadata,
    };
    let kind = metadata.file_type();
    if !kind.is_socket() {
        let what = crate::files::kind_in_words(kind);
        let message = format!(
            "--upgrade-socket {}: {what} is there, not a Unix socket; refusing to replace it \
             (name a path of its own, e.g. /run/crossfade/upgrade.sock)",
            path.display()
        );
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, message));
    }
    Ok(true)
}

/// One successor's exchange, up to its `ready`. From the moment `proxy`'s routes are taken for
/// the state line, `proxy` refuses route changes (the caller accepts them again on an error).
async fn offer(
    stream: UnixStream,
    listeners: &Listeners,
    proxy: &Proxy,
    pid: Option<u32>,
    via: Option<String>,
) -> Result<Successor> {
    let mut fds = vec![listeners.listen.as_fd(), listeners.admin.as_fd()];
    fds.extend(listeners.state_lock.as_ref().map(AsFd::as_fd));
    within(
        "sending the listening sockets",
        send_sockets(&stream, &fds, b'S'),
    )
    .await?;
    let HandedRoutes {
        routes,
        file_weights,
        generation,
        passed,
        tripped,
        ejected,
    } = proxy.hand_routes_over(pid);
    let successor = pid.map_or_else(|| "the new process".to_owned(), |pid| format!("pid {pid}"));
    tracing::info!(
        generation,
        "binary upgrade: routes handed to {successor}; route changes are refused (503) until it \
         has taken over"
    );
    let mut line = serde_json::to_vec(&State {
        version: VERSION,
        routes,
        file_weights: Some(file_weights),
        via,
        generation: Some(generation),
        passed,
        tripped,
        ejected,
    })
    .map_err(|e| invalid("sending the routes", e))?;
    line.push(b'\n');
    let mut stream = BufReader::new(stream);
    within("sending the routes", stream.get_mut().write_all(&line)).await?;
    let step = "waiting for the new process to be ready";
    let answer = tokio::time::timeout(READY_TIMEOUT, read_line(&mut stream))
        .await
        .map_err(|_| timed_out(step))?
        .map_err(|source| Error::Handover { step, source })?;
    if answer != "ready" {
        return Err(invalid(step, format!("unexpected answer {answer:?}")));
    }
    tracing::info!("binary upgrade: the new process is ready; this one stops accepting and drains");
    Ok(Successor { stream })
}

/// Sends `byte` carrying `fds` (`SCM_RIGHTS`), at most [`MAX_FDS`]; none: the byte alone.
async fn send_sockets(stream: &UnixStream, fds: &[BorrowedFd<'_>], byte: u8) -> io::Result<()> {
    loop {
        stream.writable().await?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
                return Err(io::Error::other("ancillary buffer too small"));
            }
            let byte = [byte];
            let iov = [IoSlice::new(&byte)];
            Ok(sendmsg(stream, &iov, &mut control, SendFlags::NOSIGNAL)?)
        });
        match sent {
            Ok(1) => return Ok(()),
            Ok(_) => return Err(io::ErrorKind::WriteZero.into()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Receives the one byte carrying the sockets (and a lock file), with the byte; the descriptors
/// arrive close-on-exec.
async fn receive_sockets(stream: &UnixStream) -> io::Result<(u8, Vec<OwnedFd>)> {
    loop {
        stream.readable().await?;
        let received = stream.try_io(Interest::READABLE, || {
            let mut byte = [0u8; 1];
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let mut iov = [IoSliceMut::new(&mut byte)];
            let message = recvmsg(stream, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
            if message.bytes == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let mut fds = Vec::new();
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(received) = message {
                    fds.extend(received);
                }
            }
            Ok((byte[0], fds))
        });
        match received {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            result => return result,
        }
    }
}

/// One line without its `\n`, at most [`MAX_STATE_BYTES`]; end of stream is an error.
async fn read_line(stream: &mut BufReader<UnixStream>) -> io::Result<String> {
    let mut line = String::new();
    let read = stream.take(MAX_STATE_BYTES).read_line(&mut line).await?;
    if read == 0 || !line.ends_with('\n') {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    line.pop();
    Ok(line)
}

/// A received listening socket made a non-blocking tokio listener.
fn listener(fd: OwnedFd) -> io::Result<TcpListener> {
    let listener = std::net::TcpListener::from(fd);
    // Fails on anything that is not a bound socket.
    listener.local_addr()?;
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

/// `future` within [`STEP_TIMEOUT`], its failure named by `step`.
async fn within<T>(
    step: &'static str,
    future: impl std::future::Future<Output = io::Result<T>>,
) -> Result<T> {
    tokio::time::timeout(STEP_TIMEOUT, future)
        .await
        .map_err(|_| timed_out(step))?
        .map_err(|source| Error::Handover { step, source })
}

fn timed_out(step: &'static str) -> Error {
    let source = io::Error::new(io::ErrorKind::TimedOut, "timed out");
    Error::Handover { step, source }
}

fn invalid(step: &'static str, message: impl std::fmt::Display) -> Error {
    let source = io::Error::new(io::ErrorKind::InvalidData, message.to_string());
    Error::Handover { step, source }
}

#[cfg(test)]
mod tests;
