//! Supervision of one process instance: a task owns the child process, reports each exit, and,
//! while its workload is supervised (it serves as the active backend), starts it again on the same
//! port after an exponential backoff, like Kubernetes' `CrashLoopBackOff` and systemd's
//! `Restart=on-failure`.
//!
//! The restarted process listens on the port its predecessor had, so the proxy's endpoint list does
//! not change; meanwhile outlier ejection (connect failures) and health checks keep requests off the
//! endpoint, and a bodiless request whose connect failed is retried on another endpoint.
//!
//! Backoff: [`INITIAL_BACKOFF`] after the first exit, doubling per exit in a row up to
//! [`MAX_BACKOFF`]; an instance that stayed up [`STABLE_AFTER`] starts again from the initial delay.
//! It never gives up: a serving backend with no process is worse than one that keeps trying, and
//! each attempt is visible (event, metric, log).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crossfade_proxy::weight::Slot;
use nix::sys::signal::Signal;
use tokio::process::Child;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::process::{signal_group, Launch};

/// Delay before the first restart after an exit.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(500);

/// Longest delay between two restarts (the delay doubles per exit in a row up to this).
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// An instance that ran this long before it exited is restarted after [`INITIAL_BACKOFF`] again.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);

/// What happened to a supervised instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceEvent {
    /// The backend slot the workload serves in.
    pub backend: Slot,
    /// The workload's name (`blue`, `green` or its configured name).
    pub workload: String,
    /// Which instance (0-based).
    pub instance: usize,
    /// The instance's endpoint (`127.0.0.1:{port}`; a restart listens there again).
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
    /// Starting it again failed (e.g. the command was removed); the next try is after `restart_in`.
    RestartFailed {
        /// The operating system's error.
        error: String,
        /// The backoff before the next try.
        restart_in: Duration,
    },
    /// The process was started again on the same port.
    Restarted {
        /// The new process id.
        pid: u32,
        /// The process id it replaces.
        previous_pid: u32,
        /// Restarts of this instance so far.
        restarts: u64,
    },
}

/// What an instance is doing, as its supervisor publishes it.
#[derive(Clone, Debug, Default)]
pub struct Life {
    /// A process runs now.
    pub running: bool,
    /// The last exit status, once one exited.
    pub last_exit: Option<String>,
    /// The supervisor is done: the process exited and will not be started again.
    pub finished: bool,
}

/// The shared handle to an instance's supervisor.
pub struct Supervision {
    pid: AtomicU32,
    stopping: watch::Sender<bool>,
    /// Where to report, and under which backend: set once the workload is supervised.
    events: Mutex<Option<(Slot, mpsc::UnboundedSender<InstanceEvent>)>>,
}

impl Supervision {
    /// The current process id.
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::SeqCst)
    }

    /// Restart the instance whenever it exits on its own, reporting to `events` as `backend`.
    pub fn supervise(&self, backend: Slot, events: mpsc::UnboundedSender<InstanceEvent>) {
        *self.lock_events() = Some((backend, events));
    }

    /// Never restart again; the caller signals the process.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    fn lock_events(
        &self,
    ) -> std::sync::MutexGuard<'_, Option<(Slot, mpsc::UnboundedSender<InstanceEvent>)>> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts the supervisor task of a freshly spawned instance.
pub(super) fn start(
    launch: Launch,
    child: Child,
    pid: u32,
) -> (Arc<Supervision>, watch::Receiver<Life>) {
    let supervision = Arc::new(Supervision {
        pid: AtomicU32::new(pid),
        stopping: watch::Sender::new(false),
        events: Mutex::new(None),
    });
    let (life_tx, life) = watch::channel(Life {
        running: true,
        ..Life::default()
    });
    tokio::spawn(run(launch, child, Arc::clone(&supervision), life_tx));
    (supervision, life)
}

async fn run(launch: Launch, mut child: Child, sup: Arc<Supervision>, life: watch::Sender<Life>) {
    let prefix = launch.prefix();
    let mut stopping = sup.stopping.subscribe();
    let mut backoff = INITIAL_BACKOFF;
    let mut restarts = 0;
    loop {
        let started = Instant::now();
        let status = match child.wait().await {
            Ok(s) => s.to_string(),
            Err(e) => format!("wait failed: {e}"),
        };
        launch.exited(sup.pid());
        tracing::info!(target: "crossfade::workload", "[{prefix}] exited ({status})");
        let down = |finished| Life {
            running: false,
            last_exit: Some(status.clone()),
            finished,
        };
        let report = sup.lock_events().clone();
        let (Some((backend, events)), false) = (report, *stopping.borrow()) else {
            life.send_replace(down(true));
            return;
        };
        life.send_replace(down(false));
        if started.elapsed() >= STABLE_AFTER {
            backoff = INITIAL_BACKOFF;
        }
        let report = |kind| {
            let _ = events.send(InstanceEvent {
                backend,
                workload: launch.workload.clone(),
                instance: launch.index,
                endpoint: SocketAddr::from((Ipv4Addr::LOCALHOST, launch.port)),
                kind,
            });
        };
        let mut failure: Option<String> = None;
        let next = loop {
            let restart_in = backoff;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            report(match failure.take() {
                Some(error) => InstanceEventKind::RestartFailed { error, restart_in },
                None => InstanceEventKind::Exited {
                    status: status.clone(),
                    restart_in,
                },
            });
            tokio::select! {
                () = tokio::time::sleep(restart_in) => {}
                _ = stopping.wait_for(|s| *s) => break None,
            }
            match launch.spawn() {
                Ok(next) => break Some(next),
                Err(e) => failure = Some(e.to_string()),
            }
        };
        let Some(next) = next else {
            life.send_replace(down(true));
            return;
        };
        child = next;
        let pid = child.id().unwrap_or_default();
        let previous_pid = sup.pid.swap(pid, Ordering::SeqCst);
        if *stopping.borrow() {
            // A stop that read the previous pid missed this process: stop it here.
            signal_group(pid, Signal::SIGTERM);
        }
        restarts += 1;
        let (workload, instance, port) = (&launch.workload, launch.index, launch.port);
        tracing::warn!(%workload, instance, pid, port, restarts, "instance restarted");
        life.send_replace(Life {
            running: true,
            last_exit: Some(status.clone()),
            finished: false,
        });
        report(InstanceEventKind::Restarted {
            pid,
            previous_pid,
            restarts,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::WorkloadSpec;

    #[tokio::test(start_paused = true)]
    async fn a_crashing_instance_is_restarted_with_doubling_backoff_up_to_the_cap_until_stopped() {
        let spec = WorkloadSpec {
            command: Some("sh".into()),
            args: vec!["-c".into(), "sleep 0.05; exit 3".into()],
            ..WorkloadSpec::default()
        };
        let launch = Launch::new("blue", 0, 1, spec);
        let child = launch.spawn().expect("sh starts");
        let pid = child.id().unwrap_or_default();
        let (supervision, mut life) = start(launch, child, pid);
        let (tx, mut rx) = mpsc::unbounded_channel();
        supervision.supervise(Slot::Blue, tx);

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
                } => {
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
