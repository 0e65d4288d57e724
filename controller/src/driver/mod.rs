//! Workload drivers: start the preview version, tell when it is ready, stop a retired version.
//!
//! A [`WorkloadDriver`] turns a [`WorkloadSpec`] into a running [`Workload`] whose endpoints have all
//! passed their readiness probe. Two local implementations exist, chosen by the spec: [`process`]
//! starts child processes; [`endpoints`] adopts static endpoints that Crossfade does not start (it only
//! waits for them to pass health checks and never stops them). [`kube`] is the Kubernetes driver:
//! idempotent calls that apply the preview Deployment and report what the cluster shows.

pub mod children;
pub mod endpoints;
pub mod kube;
mod ports;
pub mod probe;
pub mod process;
pub mod supervisor;

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::Arc;

use crossfade_proxy::weight::Slot;
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
/// The cancellation signal [`WorkloadDriver::provision`] takes (tokio-util's).
pub use tokio_util::sync::CancellationToken;

pub use supervisor::{EndpointGate, Hold, InstanceEvent, InstanceEventKind, ProbedSince};

use crate::spec::WorkloadSpec;

/// Why a workload could not be provisioned. Every message names the workload.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The command could not be started (not found, not executable, bad working directory).
    #[error("workload {workload}: cannot start {command:?}: {source}")]
    Spawn {
        /// The workload's name (`blue`, `green` or its configured name).
        workload: String,
        /// The command as written in the spec.
        command: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// An instance exited before it became ready.
    #[error("workload {workload}: instance {instance} exited before it became ready ({status})")]
    ExitedEarly {
        /// The workload's name.
        workload: String,
        /// Which instance (0-based).
        instance: usize,
        /// The exit status as text (`exit status: 1`, `signal: 9 (SIGKILL)`).
        status: String,
    },
    /// The readiness deadline passed with some endpoint still not ready.
    #[error("workload {workload}: {endpoint} not ready after {} (last probe: {last})", crate::spec::human(*.waited))]
    NotReady {
        /// The workload's name.
        workload: String,
        /// The endpoint that never passed its probe.
        endpoint: SocketAddr,
        /// How long the driver waited.
        waited: std::time::Duration,
        /// The last probe's outcome.
        last: String,
    },
    /// The start was cancelled (the rollout ended, e.g. by an abort, before the workload was ready);
    /// every instance already started has been stopped.
    #[error(
        "workload {workload}: start cancelled before it was ready; its instances were stopped"
    )]
    Cancelled {
        /// The workload's name.
        workload: String,
    },
    /// Any other local failure (free port allocation, I/O).
    #[error("workload {workload}: {message}")]
    Other {
        /// The workload's name.
        workload: String,
        /// What went wrong.
        message: String,
    },
}

/// Starts workloads. Implementations: [`LocalDriver`] (processes or static endpoints). Kubernetes
/// mode uses [`kube::KubeDriver`] instead (see its module docs for why it is not this trait).
pub trait WorkloadDriver: Send + Sync + 'static {
    /// Starts (or adopts) the workload named `name` and resolves once every endpoint passed readiness.
    /// Cancelling `cancel` ends the wait early: what was started is stopped (SIGTERM, then SIGKILL
    /// after `spec.stop_grace`) before the future resolves. Every readiness probe's outcome is
    /// recorded in `probes` meanwhile, so that a caller that gives up first can say why.
    ///
    /// # Errors
    /// [`DriverError`] naming the workload when it cannot be started, exits early, never becomes
    /// ready within `spec.readiness.deadline`, or is cancelled ([`DriverError::Cancelled`]). On
    /// error, anything already started has been stopped.
    fn provision(
        &self,
        name: &str,
        spec: &WorkloadSpec,
        cancel: CancellationToken,
        probes: probe::ProbeLog,
    ) -> BoxFuture<'static, Result<Workload, DriverError>>;
}

/// A provisioned workload: its ready endpoints and how to watch and stop it.
pub struct Workload {
    name: String,
    /// Static endpoints; for processes, those the instances had when provisioned (their ports
    /// now are read from their supervisors, [`Workload::endpoints`]).
    endpoints: Vec<SocketAddr>,
    kind: Kind,
}

enum Kind {
    Processes(process::Instances),
    Static,
}

impl Workload {
    /// A placeholder that owns nothing: no endpoints, no processes; stopping it does nothing.
    pub fn detached() -> Workload {
        Workload {
            name: String::new(),
            endpoints: Vec::new(),
            kind: Kind::Static,
        }
    }

    /// True for [`Workload::detached`]: nothing started, nothing adopted.
    pub fn is_placeholder(&self) -> bool {
        matches!(self.kind, Kind::Static) && self.endpoints.is_empty() && self.name.is_empty()
    }

    /// The workload's name as used in logs and messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The endpoints that passed readiness, one per instance, in instance order: where each
    /// instance listens now (a restart whose port was taken moved its instance to another).
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        match &self.kind {
            Kind::Processes(p) => p.endpoints(),
            Kind::Static => self.endpoints.clone(),
        }
    }

    /// Where each instance stands in its restart backoff ([`supervisor::Backoff`], `None` when not
    /// in one), in instance order; empty for static endpoints. Saved in the state file so that a
    /// binary upgrade's new process or a start after a crash goes on from it.
    pub fn backoffs(&self) -> Vec<Option<supervisor::Backoff>> {
        match &self.kind {
            Kind::Processes(p) => p.backoffs(),
            Kind::Static => Vec::new(),
        }
    }

    /// Process ids of the instances Crossfade started (empty for static endpoints). Recorded in the
    /// state file so that a restarted controller can stop an orphaned preview.
    pub fn pids(&self) -> Vec<u32> {
        match &self.kind {
            Kind::Processes(p) => p.pids(),
            Kind::Static => Vec::new(),
        }
    }

    /// The endpoints whose instance cannot serve now: its process exited and waits for its
    /// supervised restart (or a restart that failed to start), or was started again and has not
    /// answered its readiness probe yet. Empty for static endpoints, whose health is the proxy's
    /// business.
    pub fn not_ready(&self) -> Vec<SocketAddr> {
        match &self.kind {
            Kind::Processes(p) => p
                .endpoints()
                .into_iter()
                .zip(p.ready())
                .filter(|(_, ready)| !ready)
                .map(|(endpoint, _)| endpoint)
                .collect(),
            Kind::Static => Vec::new(),
        }
    }

    /// Resolves with a reason when an instance exits on its own. Never resolves for static endpoints
    /// (their health is the proxy's business, not the driver's).
    pub fn exited(&self) -> BoxFuture<'static, String> {
        match &self.kind {
            Kind::Processes(p) => p.exited(),
            Kind::Static => Box::pin(futures_util::future::pending()),
        }
    }

    /// From now on (while it serves as the active `backend`) an instance that exits on its own is
    /// started again (on its port, or another free one when its port was taken) with exponential backoff ([`supervisor`]), each exit and restart
    /// reported to `events`. Static endpoints are not Crossfade's to restart: nothing happens.
    pub fn supervise(&self, backend: Slot, events: mpsc::UnboundedSender<InstanceEvent>) {
        if let Kind::Processes(p) = &self.kind {
            p.supervise(backend, events);
        }
    }

    /// Holds, lifts or releases its instances for a binary upgrade ([`supervisor::Hold`]): held,
    /// an instance that exits is not acted on until the hold is lifted; released, this process
    /// leaves it running for good, also when it exits. Static endpoints: nothing happens.
    pub fn hold(&self, hold: supervisor::Hold) {
        if let Kind::Processes(p) = &self.kind {
            p.hold(hold);
        }
    }

    /// Its endpoints are in a route now: from here an instance whose process exits on its own has
    /// its endpoint withdrawn through `gate` until a restart passed readiness (a preview's, which
    /// is not restarted, until its endpoints leave the route). Static endpoints are not
    /// Crossfade's to watch: nothing happens.
    pub fn attach(&self, gate: Arc<dyn EndpointGate>) {
        if let Kind::Processes(p) = &self.kind {
            p.attach(&gate);
        }
    }

    /// Stops the workload: SIGTERM to every instance's process group, then SIGKILL after `grace`.
    /// Static endpoints are left running (Crossfade did not start them).
    pub async fn stop(self, grace: std::time::Duration) {
        match self.kind {
            Kind::Processes(p) => p.stop(&self.name, grace).await,
            Kind::Static if self.endpoints.is_empty() => {}
            Kind::Static => {
                tracing::info!(workload = %self.name, "static endpoints retired (left running)")
            }
        }
    }
}

/// The local driver: a spec with `command` starts processes, a spec with `endpoints` adopts them.
/// `{port}` instances get free ports from the spec's `port_range`, or from the kernel's ephemeral
/// range by default ([`LocalDriver::default`]).
#[derive(Clone, Debug, Default)]
pub struct LocalDriver {
    ports: Arc<ports::Ports>,
    journal: Option<Arc<children::ChildJournal>>,
}

impl LocalDriver {
    /// A driver whose `{port}` instances get free ports of `port_range` (both ends included;
    /// [`crate::spec::PortRange::ports`]), or of the kernel's ephemeral range when `None`.
    pub fn new(port_range: Option<RangeInclusive<u16>>) -> LocalDriver {
        LocalDriver {
            ports: Arc::new(ports::Ports::new(port_range)),
            journal: None,
        }
    }

    /// A start after a crash takes over, as the workload `name` of `spec`, what the previous run
    /// left (`found`, one per instance: [`children::adoptable_each`]): each instance whose
    /// process runs is probed once for readiness, one that fails adopted not ready or refusing
    /// the adoption by `unready` ([`process::adopt`]); each one [`process::Found::Down`] is
    /// started once the workload is supervised ([`process::StartDown::AtOnce`]), its
    /// endpoint withdrawn until its start passes readiness. They are recorded in this driver's
    /// journal from then on. Each goes on with its restart backoff as `backoffs` (the state
    /// file's `active_backoff`) saved it: an instance down waits the rest of its wait
    /// ([`supervisor::down_delay`]).
    ///
    /// # Errors
    /// With [`process::Unready::Refuse`], [`DriverError::NotReady`] when an instance fails its
    /// probe; with [`process::Unready::BesideReady`], when none passes it: nothing is adopted.
    /// [`DriverError::Other`] when no port is free for an instance down.
    pub async fn adopt(
        &self,
        name: &str,
        spec: &WorkloadSpec,
        found: &[process::Found],
        unready: process::Unready,
        backoffs: &[Option<supervisor::Backoff>],
    ) -> Result<Workload, DriverError> {
        let start = process::StartDown::AtOnce;
        (self.adopt_found(name, spec, found, unready, &start, backoffs)).await
    }

    /// A binary upgrade's new process takes over, as the workload `name` of `spec`, what the old
    /// one ran: each instance whose process runs is adopted (not ready when its probe fails,
    /// [`process::Unready::Supervise`]), and each one [`process::Found::Down`] is started once
    /// `committed` is cancelled (the old process has handed the workload over), its endpoint
    /// withdrawn until its start passes readiness. Each goes on with its restart backoff as the
    /// old process saved it (`backoffs`, the state file's `active_backoff`): the upgrade does not
    /// put a crash-looping instance back to [`supervisor::INITIAL_BACKOFF`].
    ///
    /// # Errors
    /// [`DriverError::Other`] when no port is free for an instance down.
    pub async fn take_over(
        &self,
        name: &str,
        spec: &WorkloadSpec,
        found: &[process::Found],
        backoffs: &[Option<supervisor::Backoff>],
        committed: &CancellationToken,
    ) -> Result<Workload, DriverError> {
        let supervise = process::Unready::Supervise;
        let start = process::StartDown::Handed(committed.clone());
        (self.adopt_found(name, spec, found, supervise, &start, backoffs)).await
    }

    async fn adopt_found(
        &self,
        name: &str,
        spec: &WorkloadSpec,
        found: &[process::Found],
        unready: process::Unready,
        start_down: &process::StartDown,
        backoffs: &[Option<supervisor::Backoff>],
    ) -> Result<Workload, DriverError> {
        let (instances, endpoints) = process::adopt(
            name,
            spec,
            found,
            &self.ports,
            self.journal.as_ref(),
            &process::Takeover {
                unready,
                start_down,
                backoffs,
            },
        )
        .await?;
        Ok(Workload {
            name: name.to_owned(),
            endpoints,
            kind: Kind::Processes(instances),
        })
    }

    /// The same driver, recording every process it starts in `journal` before starting it
    /// ([`children`]), so that a restart after a crash can stop each one.
    pub fn with_journal(mut self, journal: Arc<children::ChildJournal>) -> LocalDriver {
        self.journal = Some(journal);
        self
    }
}

impl WorkloadDriver for LocalDriver {
    fn provision(
        &self,
        name: &str,
        spec: &WorkloadSpec,
        cancel: CancellationToken,
        probes: probe::ProbeLog,
    ) -> BoxFuture<'static, Result<Workload, DriverError>> {
        let (name, spec, ports) = (name.to_owned(), spec.clone(), Arc::clone(&self.ports));
        let journal = self.journal.clone();
        Box::pin(async move {
            if spec.command.is_some() {
                let (instances, endpoints) =
                    process::start(&name, &spec, &ports, journal.as_ref(), &cancel, &probes)
                        .await?;
                Ok(Workload {
                    name,
                    endpoints,
                    kind: Kind::Processes(instances),
                })
            } else {
                let endpoints = endpoints::adopt(&name, &spec, &cancel, &probes).await?;
                Ok(Workload {
                    name,
                    endpoints,
                    kind: Kind::Static,
                })
            }
        })
    }
}
