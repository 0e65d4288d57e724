//! `crossfade proxy CONFIG`, `crossfade proxy --kube` and `crossfade run` under a service manager
//! that speaks systemd's readiness protocol (sd_notify(3)): with `NOTIFY_SOCKET` set in its
//! environment (systemd sets it for `Type=notify` and `Type=notify-reload` units), the serving
//! process sends one datagram per change of state to that Unix socket:
//!
//! - `READY=1` once both listeners are bound (or inherited) and the first routing table is loaded
//!   (`proxy --kube`: the first route set read from the cluster; `run`: blue started and healthy,
//!   the proxy and the admin API serving), and the start's first health probe round of the routes
//!   with active checks is over (every endpoint of such a route probed once, passed or failed:
//!   when `/readyz` stops answering 503 for it), at most the longest `health.timeout` plus a
//!   second after serving: the same wait, with the same bound, as a binary upgrade's successor
//!   makes before it takes over (`crate::serve::first_probe_round`). The proxy serves meanwhile
//!   (holding requests for endpoints that await their first probe, as always);
//! - `RELOADING=1` with `MONOTONIC_USEC=<CLOCK_MONOTONIC in µs>` when a SIGHUP reload starts (the
//!   timestamp is what systemd ≥ 253 requires of `Type=notify-reload`), then `READY=1` when it is
//!   done (applied or refused: the routes in force serve either way); `proxy --kube` likewise
//!   around its SIGHUP (TLS pair and access log reloaded). A SIGHUP before the start's `READY=1`
//!   (during the first probe round) is applied and sends neither: the start's `READY=1` still
//!   comes when the round is over, and a `READY=1` from the reload would have said ready before.
//!   `run` reloads nothing on SIGHUP and sends neither;
//! - `STOPPING=1` when SIGTERM or SIGINT starts the drain (`run`: also when
//!   `--exit-after-rollout` ends it, or its controller stopped), once `READY=1` was sent (a stop
//!   during the first probe round sends nothing);
//! - after a binary upgrade (SIGUSR2, see `upgrade`), the successor sends `MAINPID=<its pid>` and
//!   `READY=1` once the old process confirmed that it drains, and before the old one exits, so the
//!   service manager follows the new process (systemd accepts this from a process other than the
//!   main one only with `NotifyAccess=all`). From then on the old process sends nothing, not even
//!   `STOPPING=1` (which would stop the unit the successor now serves).
//!
//! A process that has not become the serving one (a successor whose predecessor did not confirm
//! the handover) sends nothing at all. The messages go through the `sd-notify` crate; a socket
//! that cannot be reached never stops the proxy: the first failure is logged at WARN, the later
//! ones are not. `NOTIFY_SOCKET` must be a file system path, as systemd's own
//! (`/run/systemd/notify`) is; Linux abstract socket names (`@...`) are not supported.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};

use sd_notify::NotifyState;

/// The environment variable that names the service manager's socket (sd_notify(3)).
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// This process's link to the service manager: whether `NOTIFY_SOCKET` is set, whether this
/// process is the serving one (the one that may speak for the service), and whether a failed send
/// was already logged. Shared by reference (`&self` throughout), so that the wait for the start's
/// `READY=1` ([`ServiceManager::ready_after_first_probes`]) runs beside the signal handling that
/// reloads and stops.
#[derive(Debug)]
pub struct ServiceManager {
    /// `NOTIFY_SOCKET` was set at start.
    wanted: bool,
    /// This process serves for the service: set by [`ServiceManager::ready`] and
    /// [`ServiceManager::took_over`], cleared by [`ServiceManager::handed_over`].
    main: AtomicBool,
    /// A send failed and was logged; later failures are not.
    warned: AtomicBool,
}

// === impl ServiceManager ===

impl ServiceManager {
    /// Reads `NOTIFY_SOCKET`; without it every method here does nothing.
    pub fn from_env() -> ServiceManager {
        ServiceManager {
            wanted: std::env::var_os(NOTIFY_SOCKET).is_some_and(|s| !s.is_empty()),
            main: AtomicBool::new(false),
            warned: AtomicBool::new(false),
        }
    }

    /// A fresh start serves (listeners bound, first table loaded) and its first health probe
    /// round is over: `READY=1`. See [`ServiceManager::ready_after_first_probes`].
    pub fn ready(&self) {
        self.main.store(true, Ordering::Relaxed);
        self.send("READY=1", &[NotifyState::Ready]);
    }

    /// A fresh start that serves `proxy`: [`ServiceManager::ready`] once the start's first health
    /// probe round is over, at most the longest `health.timeout` plus a second from now
    /// ([`crate::serve::first_probe_round`], the wait a binary upgrade's successor makes before
    /// it takes over); at once without routes with active checks. Then pending for ever: a
    /// branch of the caller's `select!` beside its wait for a stop signal, dropped when that ends
    /// (a stop during the round sends no `READY=1`). Without `NOTIFY_SOCKET` nothing waits.
    pub async fn ready_after_first_probes(&self, proxy: &crossfade_proxy::Proxy) -> Infallible {
        if self.wanted {
            crate::serve::first_probe_round(
                proxy,
                "sd_notify",
                "before telling the service manager READY=1 (serving meanwhile; /readyz answers \
                 503 until then)",
                "READY=1 all the same",
            )
            .await;
        }
        self.ready();
        std::future::pending().await
    }

    /// A successor serves and its predecessor drains: `MAINPID=<this pid>` and `READY=1`, one
    /// datagram.
    pub fn took_over(&self) {
        self.main.store(true, Ordering::Relaxed);
        let pid = std::process::id();
        self.send(
            "MAINPID and READY=1",
            &[NotifyState::MainPid(pid), NotifyState::Ready],
        );
    }

    /// A SIGHUP reload starts: `RELOADING=1` and `MONOTONIC_USEC=` (now, `CLOCK_MONOTONIC`).
    pub fn reloading(&self) {
        let mut states = vec![NotifyState::Reloading];
        match NotifyState::monotonic_usec_now() {
            Ok(now) => states.push(now),
            Err(e) => {
                tracing::warn!("sd_notify: cannot read CLOCK_MONOTONIC for MONOTONIC_USEC: {e}")
            }
        }
        self.send("RELOADING=1", &states);
    }

    /// A SIGHUP reload is done (applied or refused): `READY=1`.
    pub fn reloaded(&self) {
        self.send("READY=1", &[NotifyState::Ready]);
    }

    /// SIGTERM or SIGINT: the drain starts, `STOPPING=1`.
    pub fn stopping(&self) {
        self.send("STOPPING=1", &[NotifyState::Stopping]);
    }

    /// A successor took over: this process no longer speaks for the service.
    pub fn handed_over(&self) {
        self.main.store(false, Ordering::Relaxed);
    }

    /// One datagram of `states` (named `what` in the warning), when wanted and this process
    /// serves; a failure is logged once.
    fn send(&self, what: &str, states: &[NotifyState]) {
        if !self.wanted || !self.main.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                let socket = std::env::var_os(NOTIFY_SOCKET).unwrap_or_default();
                tracing::warn!(
                    "sd_notify: cannot send {what} to NOTIFY_SOCKET {}: {e}; serving on without \
                     telling the service manager (later failures are not logged)",
                    socket.to_string_lossy()
                );
            }
        }
    }
}
