//! One served route in local mode: owns the active workload, runs rollouts to new previews one at a
//! time, answers operator commands, persists its state, and exposes all of it on the admin API.

use std::net::SocketAddr;
use std::sync::Arc;

use crossfade_proxy::admin::{AdminExtension, AdminReply};
use crossfade_proxy::weight::Slot;
use futures_util::future::BoxFuture;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::analysis::judge_for;
use crate::driver::{
    Hold, InstanceEvent, InstanceEventKind, ProbedSince, Workload, WorkloadDriver,
};
use crate::metrics::{RolloutMetrics, RouteMetrics};
use crate::report::ReportData;
use crate::rollout::{Decision, OperatorCommand, Phase, Rollout};
use crate::runtime::{Interrupt, Observer, Run, Seams};
use crate::spec::{RolloutChanges, RolloutConfig, RunSpec, SpecError, WorkloadSpec};
use crate::state::{RolloutRecord, ServiceState, StatusEvent, MAX_EVENTS};
use crate::store::StateFile;
use crate::timeline::{unix_now, BackendImage, Sample, Timeline};
use crate::traffic::{MetricsSource, RouteGate, TrafficSetter};

mod clock;
mod describe;
#[cfg(test)]
mod read_tests;
pub mod startup;
mod status;

pub use clock::{HoldStatus, InstanceRestart, StartedAgain};

/// A request to start a rollout: the preview workload and, optionally, changes to the rollout
/// policy for this rollout only. This is the body of `POST /rollout` and the file `crossfade
/// migrate` reads.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// The workload to roll out to.
    pub green: Option<WorkloadSpec>,
    /// The rollout settings this rollout changes, kept as written: they apply key by key over
    /// the running instance's `rollout:` section, whose other keys this rollout keeps
    /// ([`RolloutChanges::over`]; trial 12, M2). `None`: the running section as it is.
    pub rollout: Option<RolloutChanges>,
}

/// The typed reading of a start request: its parse errors (with line and column) and its rules.
/// The rollout section is read over the defaults here; the running instance applies it over its
/// own section ([`RolloutChanges::over`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a map with `green:` (the workload to roll out to) and optionally `rollout:`")]
struct TypedRequest {
    green: Option<WorkloadSpec>,
    rollout: Option<RolloutConfig>,
}

/// What a `POST /rollout` body that is not a JSON object is told (trial 7, G11): its shape, as the
/// weights endpoint says its own, not the Rust type it is read into.
const START_SHAPE: &str = r#"must be a JSON object like {"green": {"command": "./app", "args": ["--port", "{port}"]}, "rollout": {"steps": [5, 25, 50, 100]}} ("rollout" optional)"#;

impl StartRequest {
    /// Parses a YAML (or JSON) document with `green:` and optionally `rollout:`.
    ///
    /// # Errors
    /// [`SpecError::Parse`] with the parser's line and column; [`SpecError::Invalid`] with every
    /// problem of [`StartRequest::read`].
    pub fn from_yaml(text: &str) -> Result<StartRequest, SpecError> {
        let (request, problems) = StartRequest::read(text)?;
        if !problems.is_empty() {
            return Err(SpecError::Invalid(problems));
        }
        Ok(request)
    }

    /// Parses a `crossfade migrate` file and lists every problem its text shows, all at once
    /// (trial 7, G10): `green` missing, each bare-number rate (README "Shares"), and the rules of
    /// `green` ([`WorkloadSpec::validate`]) and `rollout` ([`RolloutConfig::validate`]); a rate
    /// refused as a bare number is not judged again by its fraction reading. What needs the
    /// running instance (its listen and admin addresses, blue's endpoints) or the machine
    /// ([`WorkloadSpec::check_machine`]) is left to the caller and to `POST /rollout`.
    ///
    /// # Errors
    /// [`SpecError::Parse`] with the parser's line and column when the text is not such a file.
    pub fn read(text: &str) -> Result<(StartRequest, Vec<crate::spec::Problem>), SpecError> {
        let typed: TypedRequest =
            serde_yaml_ng::from_str(text).map_err(|e| SpecError::parse_in(text, e))?;
        let mut problems = Vec::new();
        if typed.green.is_none() {
            problems.push(crate::spec::Problem {
                path: "green".into(),
                message: "missing".into(),
            });
        }
        let bare = crate::spec::bare_rate_problems(text);
        let refused: Vec<String> = bare.iter().map(|p| p.path.clone()).collect();
        problems.extend(bare);
        if let Some(Err(SpecError::Invalid(found))) =
            typed.green.as_ref().map(|green| green.validate("green"))
        {
            problems.extend(found);
        }
        let request: StartRequest =
            serde_yaml_ng::from_str(text).map_err(|e| SpecError::parse_in(text, e))?;
        if let Some(Err(SpecError::Invalid(found))) =
            typed.rollout.as_ref().map(RolloutConfig::validate)
        {
            let contrast = request.rollout.as_ref().and_then(contrast_problems);
            problems.extend(found.into_iter().filter(|p| {
                !refused.contains(&p.path) && contrast.as_ref().is_none_or(|c| c.contains(p))
            }));
        }
        Ok((request, problems))
    }

    /// Parses the JSON body of `POST /rollout` under the spec file's rule for shares (README
    /// "Shares"): a bare number is percent for a step's weight, and a rate
    /// (`rollout.analysis.max_error_rate`, `max_error_rate_increase`,
    /// `analysis.shadow.max_mismatch_rate`) needs the `%` string form (`"1%"`); a bare rate other
    /// than 0 is refused naming its field, as in a spec or a `crossfade migrate` file. `crossfade
    /// migrate` writes every rate in the `%` form. A missing `green` is left to the start, which
    /// names it.
    ///
    /// # Errors
    /// [`SpecError::Parse`] with serde's message (line and column) when the body is not JSON
    /// (`not valid JSON: ...`) or not JSON of this shape (naming the shape when it is not an object), [`SpecError::Invalid`] with one
    /// problem per bare rate.
    pub fn from_json(body: &[u8]) -> Result<StartRequest, SpecError> {
        // "not valid JSON" as the proxy's weights endpoint says it: serde_json's own words alone
        // (`expected ident at line 1 column 2`) did not say what was wrong (trial 19).
        let doc: serde_yaml_ng::Value = serde_json::from_slice(body)
            .map_err(|e| SpecError::Parse(format!("not valid JSON: {e}")))?;
        if !doc.is_mapping() {
            return Err(SpecError::Parse(START_SHAPE.to_owned()));
        }
        // Valid JSON (checked above) is YAML too (YAML 1.2 §1.3), and the YAML reader names the
        // field a wrong value is in (`rollout.analysis.fail_when_worse_than: unknown variant ...`)
        // where serde_json gives only a column (trial report 4, F1).
        let _: TypedRequest = serde_yaml_ng::from_slice(body).map_err(SpecError::parse)?;
        let request: StartRequest = serde_yaml_ng::from_slice(body).map_err(SpecError::parse)?;
        let problems = crate::spec::bare_rate_problems_in(&doc);
        if !problems.is_empty() {
            return Err(SpecError::Invalid(problems));
        }
        Ok(request)
    }
}

/// A running policy as unlike the defaults as the rules that join two keys can tell: a 0%
/// shadow step first (so `steps`, `analysis.shadow` and per-step holds differ), the shortest
/// hold and the longest progress deadline (so no hold or interval is too long for it).
const CONTRAST_POLICY: &str = "steps: [{ weight: 0, hold: 10ms }, 100]\n\
     hold: 10ms\n\
     progress_deadline: 365d\n\
     analysis: { shadow: {} }\n";

/// The problems of `changes` applied over [`CONTRAST_POLICY`] instead of the defaults. A rule
/// that joins a key the file writes with one it leaves to the running instance (`hold` and
/// `progress_deadline`, a 0% step and `analysis.shadow`) reads differently over the two, so
/// [`StartRequest::read`] keeps only the problems found over both: those the file alone
/// decides. The others depend on the running spec, which `POST /rollout` judges with the
/// changes applied and answers 400 naming the field (trial 22: `rollout: { hold: 3m }` was
/// refused against the default 2m deadline while the instance ran with 10m).
/// `None` when the changes cannot be applied (a value of the wrong type, which the typed
/// reading reports): then every problem is kept.
fn contrast_problems(changes: &RolloutChanges) -> Option<Vec<crate::spec::Problem>> {
    let base = serde_yaml_ng::from_str::<RolloutConfig>(CONTRAST_POLICY).ok()?;
    match changes.over(&base).ok()?.validate() {
        Err(SpecError::Invalid(found)) => Some(found),
        Err(SpecError::Parse(_)) => None,
        Ok(()) => Some(Vec::new()),
    }
}

/// A rollout [`ServiceHandle::start`] started: `POST /rollout` answers 202 Accepted with
/// `{"started": id}`, and `"warnings": [...]` when there are any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Started {
    /// The rollout's id (the state file's `last_rollout_id`, counting from 1).
    pub id: u64,
    /// What the request says that is valid but does nothing or cannot be told apart
    /// ([`crate::spec::warnings`]), one line each naming its field; usually empty.
    pub warnings: Vec<String>,
}

/// Why [`ServiceHandle::start`] did not start a rollout; each maps to one admin API status.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum StartError {
    /// The request is wrong (a field missing or invalid, a command not found): the message names
    /// the field. 400 Bad Request (RFC 9110 §15.5.1).
    #[error("{0}")]
    Invalid(String),
    /// A rollout is already in progress; the message says which, in what phase, and what the
    /// operator can do that this phase accepts ([`busy_message`]). 409 Conflict (RFC 9110
    /// §15.5.10).
    #[error("{0}")]
    Busy(String),
    /// The service has stopped. 503 Service Unavailable (RFC 9110 §15.6.4).
    #[error("the service has stopped")]
    Stopped,
    /// No rollout number is left: the state's `last_rollout_id` is already the largest there is
    /// (`u64::MAX`, only reached by a state file edited by hand). 500 Internal Server Error
    /// (RFC 9110 §15.6.1): the instance's state, not the request, is at fault.
    #[error(
        "no rollout number is left: the state file's last_rollout_id is {}, the largest there is \
         (a state file edited by hand?); set it lower while crossfade run is stopped",
        u64::MAX
    )]
    NoRolloutId,
    /// A binary upgrade hands the service over to a new process (its pid, when known): no
    /// rollout starts here; the new process, on the same admin address, takes the request once
    /// it has taken over. 503 Service Unavailable with `Retry-After`.
    #[error("{}", crossfade_proxy::Error::HandingOver { successor: *.0 })]
    HandingOver(Option<u32>),
}

impl StartError {
    /// The admin API status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            StartError::Invalid(_) => StatusCode::BAD_REQUEST,
            StartError::Busy(_) => StatusCode::CONFLICT,
            StartError::Stopped | StartError::HandingOver(_) => StatusCode::SERVICE_UNAVAILABLE,
            StartError::NoRolloutId => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Why a new rollout cannot start while `rollout` runs, with the one way forward its phase
/// accepts: `crossfade abort` while it provisions, progresses or is paused (the machine refuses
/// abort in every other phase); otherwise to wait until it has ended (it always ends by itself
/// from a rollback, an abort or a promotion).
pub fn busy_message(rollout: Option<&Rollout>) -> String {
    use crate::rollout::Phase;
    let Some(rollout) = rollout else {
        return "a rollout is already in progress; try again once it has ended".into();
    };
    let (id, phase) = (rollout.id, rollout.phase);
    let next = match phase {
        Phase::Pending | Phase::Provisioning | Phase::Progressing | Phase::Paused => {
            "abort it first (`crossfade abort`) or wait until it has ended".to_owned()
        }
        Phase::Retiring if rollout.retire_held => format!(
            "{new} is already promoted but has no instance that can serve, and {old}, drained, is \
             kept running as its backup until {new} can serve again (its restart ready, its \
             endpoints healthy); the rollout completes then: start the next rollout once it has \
             (`crossfade status`)",
            new = rollout.preview(),
            old = rollout.active
        ),
        Phase::Promoted | Phase::Retiring => format!(
            "{} is already promoted and {} is being retired; start the next rollout once this \
             one has completed (`crossfade status`)",
            rollout.preview(),
            rollout.active
        ),
        _ => "it is finishing; try again once it has ended (`crossfade status`)".to_owned(),
    };
    format!(
        "a rollout is already in progress (rollout {id}, {}): {next}",
        phase.words()
    )
}

/// What the service shows on `GET /rollout` and to the CLI's progress display; read back by
/// `crossfade status` (see [`ServiceStatus::describe`]).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceStatus {
    /// The route this service serves.
    pub route: String,
    /// The slot serving as active: from the role swap on (`Retiring`), the promoted slot.
    pub active: Option<Slot>,
    /// The active workload, described (`command args` or `static endpoints ...`).
    pub active_workload: String,
    /// The active workload's version: its `name:`, else its slot's name (`blue`). The slots'
    /// colours alternate from one rollout to the next; the version says what serves.
    pub active_version: String,
    /// The version the current or last rollout started from (the active one at its start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_version: Option<String>,
    /// The version the current or last rollout rolls out (its preview).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_version: Option<String>,
    /// The current or last rollout; `None` before the first.
    pub rollout: Option<Rollout>,
    /// Whether a rollout is running now.
    pub running: bool,
    /// The latest events, oldest first (at most 50).
    pub events: Vec<StatusEvent>,
    /// The current step's hold while one runs (a running rollout, `Progressing`, its weight
    /// applied): since when, elapsed and left, measured when this status was read
    /// ([`ServiceStatus::at`]). Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldStatus>,
    /// Active instances that exited on their own and wait out their restart backoff, as the
    /// driver knows it (the proxy's health view may still call their endpoints up).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restarting: Vec<InstanceRestart>,
}

enum Request {
    Start(
        Box<StartRequest>,
        oneshot::Sender<Result<Started, StartError>>,
    ),
    Operator(OperatorCommand, oneshot::Sender<Result<Decision, String>>),
    Shutdown(oneshot::Sender<()>),
    Report(oneshot::Sender<Result<ReportData, String>>),
    Upgrade(UpgradeStep, oneshot::Sender<Result<(), String>>),
}

/// A step of `crossfade run`'s binary upgrade, as the serving (old) process takes it
/// ([`ServiceHandle::freeze_for_upgrade`], [`ServiceHandle::thaw`],
/// [`ServiceHandle::hand_over`]).
#[derive(Clone, Copy, Debug)]
enum UpgradeStep {
    /// A new process (this pid, when known) asks to take over: refused while a rollout is in
    /// progress; else no rollout starts and the active instances are held from now on.
    Freeze(Option<u32>),
    /// It failed before it served: all goes on as before.
    Thaw,
    /// It took over: the active workload is its own; this service writes the state file no
    /// more and stops nothing.
    HandOver,
}

/// A handle to a running service; cheap to clone. Also the admin API extension for `/rollout`.
#[derive(Clone)]
pub struct ServiceHandle {
    tx: mpsc::Sender<Request>,
    status: watch::Receiver<ServiceStatus>,
    /// `Some(successor's pid)` while a binary upgrade hands this service over (and after it
    /// did): the admin API's writes answer 503 with `Retry-After` then.
    handing_over: Arc<std::sync::Mutex<Option<Option<u32>>>>,
}

/// Everything a service is started with.
pub struct ServiceConfig<T, M> {
    /// The proxy route the service owns.
    pub route: String,
    /// The slot the active workload is in.
    pub active_slot: Slot,
    /// The active workload's spec (recorded in the state file).
    pub active_spec: WorkloadSpec,
    /// The provisioned active workload.
    pub active: Workload,
    /// Rollout settings used when a start request brings none.
    pub rollout: RolloutConfig,
    /// The state store, if persistence is on.
    pub store: Option<StateFile>,
    /// The state loaded at start (after recovery), if any.
    pub state: ServiceState,
    /// The reasons of the events recorded while starting, before the service ran
    /// (`StateFileCorrupt`, `Recovered`, `BlueChanged`): counted in
    /// `crossfade_rollout_events_total` once the first scrape has seen it at 0.
    pub start_events: Vec<String>,
    /// The phase restart recovery ended an unfinished rollout in, and how long that rollout ran
    /// (from its persisted start; `None` without one) ([`crate::state::Recovery`]): counted in
    /// `crossfade_rollouts_total` as that rollout's outcome and observed in
    /// `crossfade_rollout_duration_seconds`, once the first scrape has seen them at 0.
    pub recovered: Option<(Phase, Option<std::time::Duration>)>,
    /// The seams.
    pub traffic: Arc<T>,
    /// The metrics source.
    pub metrics: Arc<M>,
    /// The workload driver.
    pub driver: Arc<dyn WorkloadDriver>,
    /// The controller's metrics (`RolloutMetrics::default()` when nobody scrapes them).
    pub rollout_metrics: RolloutMetrics,
    /// The proxy's listen address as bound (`127.0.0.1:8080`): a green endpoint equal to it is
    /// refused, as in a spec.
    pub listen: SocketAddr,
    /// The admin API's address as bound: a green endpoint equal to it is refused too.
    pub admin: SocketAddr,
    /// The spec's `port_range`, if any: a start request whose green cannot get a port of it
    /// beside the active workload's instances is refused, as `crossfade check` refuses the spec.
    pub port_range: Option<crate::spec::PortRange>,
}

/// Starts the service task and returns its handle.
pub fn spawn<T: TrafficSetter, M: MetricsSource>(config: ServiceConfig<T, M>) -> ServiceHandle {
    let (tx, rx) = mpsc::channel(16);
    let status = ServiceStatus::of(
        &config.route,
        (config.active_slot, &config.active_spec),
        &config.state,
        false,
    );
    let (status_tx, status_rx) = watch::channel(status);
    let mut metrics = config.rollout_metrics.route(&config.route);
    if let Some(record) = &config.state.rollout {
        metrics.loaded(&record.rollout, record.timeline.ended_at_unix_seconds);
    }
    for reason in &config.start_events {
        metrics.start_event(reason);
    }
    if let Some((phase, took)) = config.recovered {
        metrics.recovered(phase, took);
    }
    metrics.backends(config.active_slot, &config.active_spec, None);
    // The serving workload is supervised: an instance that exits on its own is started again.
    let (supervisor, instance_events) = mpsc::unbounded_channel();
    config
        .active
        .supervise(config.active_slot, supervisor.clone());
    // Its endpoints are in the route: an instance that exits is withdrawn until it is back.
    let gate = RouteGate::shared(config.traffic.clone(), &config.route, config.active_slot);
    config.active.attach(gate);
    let handing_over = Arc::new(std::sync::Mutex::new(None));
    tokio::spawn(
        Service {
            config,
            status: status_tx,
            metrics,
            supervisor,
            restarting: Vec::new(),
            handing_over: Arc::clone(&handing_over),
            handed_over: false,
        }
        .run(rx, instance_events),
    );
    ServiceHandle {
        tx,
        status: status_rx,
        handing_over,
    }
}

struct Service<T, M> {
    config: ServiceConfig<T, M>,
    status: watch::Sender<ServiceStatus>,
    metrics: RouteMetrics,
    /// Where supervised (serving) instances report exits and restarts.
    supervisor: mpsc::UnboundedSender<InstanceEvent>,
    /// Supervised instances from their exit until their restart is ready (shown by `crossfade
    /// status`).
    restarting: Vec<InstanceRestart>,
    /// Shared with the handles: `Some` while a binary upgrade hands this service over.
    handing_over: Arc<std::sync::Mutex<Option<Option<u32>>>>,
    /// A binary upgrade's new process took over: nothing is written or stopped any more.
    handed_over: bool,
}

/// Supervised instances' exits and restarts.
type InstanceEvents = mpsc::UnboundedReceiver<InstanceEvent>;

/// A start request held while the last rollout finished (see `Service::rollout`), with where
/// its answer goes.
type HeldStart = (
    Box<StartRequest>,
    oneshot::Sender<Result<Started, StartError>>,
);

impl<T: TrafficSetter, M: MetricsSource> Service<T, M> {
    async fn run(mut self, mut rx: mpsc::Receiver<Request>, mut instances: InstanceEvents) {
        self.persist();
        // A start the last rollout's run took while it was finishing (see `rollout`), first.
        let mut deferred = None;
        loop {
            let request = match deferred.take() {
                Some((req, reply)) => Some(Request::Start(req, reply)),
                None => tokio::select! {
                    request = rx.recv() => request,
                    Some(event) = instances.recv() => { self.instance_event(event); continue; }
                },
            };
            match request {
                Some(Request::Start(_, reply)) if self.frozen().is_some() => {
                    let successor = self.frozen().unwrap_or_default();
                    let _ = reply.send(Err(StartError::HandingOver(successor)));
                }
                Some(Request::Upgrade(step, reply)) => {
                    let _ = reply.send(self.upgrade(step));
                }
                Some(Request::Start(req, reply)) => {
                    match self.prepare(*req) {
                        Ok((rollout, spec, warnings)) => {
                            // Visible as running before the caller hears back, so that a
                            // caller waiting for `idle()` cannot see the state before it.
                            self.begin(&rollout, &spec);
                            let _ = reply.send(Ok(Started {
                                id: rollout.id,
                                warnings,
                            }));
                            let run = self.rollout(rollout, spec, &mut rx, &mut instances);
                            let (shutdown, finishing) = run.await;
                            if shutdown {
                                break;
                            }
                            deferred = finishing;
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                Some(Request::Operator(cmd, reply)) => {
                    let _ =
                        reply.send(Err(format!("cannot {}: no rollout in progress", verb(cmd))));
                }
                Some(Request::Shutdown(reply)) => {
                    if !self.handed_over {
                        self.stop_active().await;
                    }
                    let _ = reply.send(());
                    return;
                }
                Some(Request::Report(reply)) => {
                    let data =
                        ReportData::from_state(&self.config.state).map_err(|e| e.to_string());
                    let _ = reply.send(data);
                }
                None => {
                    if !self.handed_over {
                        self.stop_active().await;
                    }
                    return;
                }
            }
        }
    }

    /// The successor's pid (`None` when unknown) while a binary upgrade hands this service over.
    fn frozen(&self) -> Option<Option<u32>> {
        *self
            .handing_over
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a binary upgrade's `step` while no rollout runs ([`UpgradeStep`]).
    fn upgrade(&mut self, step: UpgradeStep) -> Result<(), String> {
        let shared = Arc::clone(&self.handing_over);
        let mut handing_over = shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match step {
            UpgradeStep::Freeze(successor) => {
                if self.handed_over {
                    return Err("this process has already handed over".to_owned());
                }
                // Held first: from here no restart starts, and none is half done
                // (`Supervision::hold`), so the pids saved next are those the new process finds
                // running, and an instance down stays down for it to start.
                self.config.active.hold(Hold::Held);
                // Its last state, as the new process will read it.
                if let Err(e) = self.try_persist() {
                    self.config.active.hold(Hold::Off);
                    return Err(format!(
                        "the state cannot be saved for the new process: {e}"
                    ));
                }
                *handing_over = Some(successor);
                tracing::info!(route = %self.config.route, "binary upgrade: no rollout starts and the active instances are not restarted until the new process has taken over (or failed)");
            }
            UpgradeStep::Thaw => {
                if self.handed_over || handing_over.is_none() {
                    return Ok(());
                }
                *handing_over = None;
                self.config.active.hold(Hold::Off);
                tracing::info!(route = %self.config.route, "binary upgrade failed: rollouts accepted again, the active instances supervised again");
            }
            UpgradeStep::HandOver => {
                self.handed_over = true;
                // Let go from this call on, also by a supervisor task that never runs again
                // before this process exits (`supervisor::Owned`): nothing to wait for.
                self.config.active.hold(Hold::Released);
                tracing::info!(route = %self.config.route, "binary upgrade: the new process supervises the active workload now; this one leaves it running and writes the state file no more");
            }
        }
        Ok(())
    }

    /// Records a supervised instance's exit or restart: log, event, metric, and the state file
    /// saved with the new pid (so that a crash of this controller still finds the restarted
    /// process) and each instance's restart backoff (so that the next start goes on with it:
    /// saved at every exit, restart and readiness, which the supervisor publishes before it
    /// reports them).
    fn instance_event(&mut self, event: InstanceEvent) {
        self.track_restart(&event);
        if event.kind == InstanceEventKind::Ready {
            // Serving again: said by the route's endpoint (`up`), not by an event of its own.
            tracing::info!(route = %self.config.route, backend = %event.backend, "active workload {}: instance {} ready again at {}", event.workload, event.instance, event.endpoint);
            let running = self.status.borrow().running;
            self.publish(running);
            self.persist();
            return;
        }
        let (workload, i) = (&event.workload, event.instance);
        let (reason, message) = match &event.kind {
            InstanceEventKind::Exited { status, restart_in } => {
                let message = format!(
                    "active workload {workload}: instance {i} exited ({status}); restarting in {}",
                    crate::spec::human(*restart_in)
                );
                tracing::error!(route = %self.config.route, backend = %event.backend, "{message}");
                ("ActiveExited", message)
            }
            InstanceEventKind::RestartFailed { error, restart_in } => {
                let message = format!("active workload {workload}: instance {i} cannot be started again ({error}); next try in {}", crate::spec::human(*restart_in));
                tracing::error!(route = %self.config.route, backend = %event.backend, "{message}");
                ("ActiveExited", message)
            }
            InstanceEventKind::NotReady {
                since,
                deadline,
                last_probe,
                restart_in,
            } => {
                let message = format!(
                    "active workload {workload}: instance {i} {}; stopped, restarting in {}",
                    not_ready_cause(*since, *deadline, last_probe),
                    crate::spec::human(*restart_in)
                );
                tracing::error!(route = %self.config.route, backend = %event.backend, "{message}");
                ("ActiveNotReady", message)
            }
            InstanceEventKind::Restarted {
                pid,
                previous_pid,
                restarts,
                moved_from,
                ..
            } => {
                self.metrics.restarted(event.backend);
                (self.config.state).restarted(event.instance, *previous_pid, *pid);
                let message = match moved_from {
                    Some(from) => format!(
                        "active workload {workload}: instance {i} restarted on {} (pid {pid}, restart {restarts}): its port {} was taken by another process; the route moves it there once it is ready",
                        event.endpoint, from.port()
                    ),
                    None => format!("active workload {workload}: instance {i} restarted (pid {pid}, restart {restarts})"),
                };
                tracing::warn!(route = %self.config.route, backend = %event.backend, "{message}");
                ("ActiveRestarted", message)
            }
            InstanceEventKind::Ready => return,
        };
        self.metrics.event(None, reason);
        self.push_event(reason, &message);
        // After the event is published: whoever sees the new pid (or backoff) in the state file
        // also sees the event on `GET /rollout` (and the file holds both).
        self.persist();
    }

    /// Keeps [`Service::restarting`] true: an exit (or a failed start) adds the instance with its
    /// backoff, a restart marks it started again, and its readiness removes it.
    fn track_restart(&mut self, event: &InstanceEvent) {
        let key = (event.backend, event.instance, event.endpoint);
        let same = |r: &InstanceRestart| (r.backend, r.instance) == (key.0, key.1);
        if let InstanceEventKind::Restarted {
            pid, ready_within, ..
        } = &event.kind
        {
            if let Some(entry) = self.restarting.iter_mut().find(|r| same(r)) {
                let now = std::time::SystemTime::now();
                entry.started = Some(StartedAgain {
                    pid: *pid,
                    endpoint: event.endpoint,
                    started_at: crate::timeline::rfc3339_of(now),
                    ready_by: Some(crate::timeline::rfc3339_of(now + *ready_within)),
                });
            }
            return;
        }
        self.restarting.retain(|r| !same(r));
        let (cause, restart_in) = match &event.kind {
            InstanceEventKind::Exited { status, restart_in } => {
                (format!("exited ({status})"), *restart_in)
            }
            InstanceEventKind::RestartFailed { error, restart_in } => {
                (format!("{} ({error})", clock::START_FAILED), *restart_in)
            }
            InstanceEventKind::NotReady {
                since,
                deadline,
                last_probe,
                restart_in,
            } => (not_ready_cause(*since, *deadline, last_probe), *restart_in),
            InstanceEventKind::Restarted { .. } | InstanceEventKind::Ready => return,
        };
        let now = (tokio::time::Instant::now(), std::time::SystemTime::now());
        self.restarting
            .push(InstanceRestart::new(key, cause, restart_in, now));
    }

    /// Validates a start request against the active workload and builds the machine; with it
    /// the request's warnings ([`crate::spec::warnings`]: sequential-judge keys it writes under
    /// the threshold judge, a green named as the active workload is).
    fn prepare(
        &mut self,
        req: StartRequest,
    ) -> Result<(Rollout, WorkloadSpec, Vec<String>), StartError> {
        let missing = "green: missing (the workload to roll out to)";
        let green = req.green.ok_or(StartError::Invalid(missing.into()))?;
        // Key by key over the running section: a key the request leaves out keeps the running
        // value, so no analysis bound is dropped unless written so (trial 12, M2).
        let rollout = match &req.rollout {
            Some(changes) => changes
                .over(&self.config.rollout)
                .map_err(|e| StartError::Invalid(e.to_string()))?,
            None => self.config.rollout.clone(),
        };
        let check = RunSpec {
            blue: Some(self.config.active_spec.clone()),
            green: Some(green.clone()),
            rollout: rollout.clone(),
            listen: self.config.listen,
            admin: self.config.admin,
            port_range: self.config.port_range,
            ..RunSpec::default()
        };
        // Every problem in one answer, the rules' and this machine's (a missing command or
        // workdir), as `crossfade check` lists them (trial report 5 F13).
        // The instances' endpoints too: a `command` workload's ports are not in its spec.
        let running = self.config.active.endpoints();
        let mut problems = match check.validate_start(self.config.active_slot, &running) {
            Ok(()) => Vec::new(),
            Err(SpecError::Invalid(problems)) => problems,
            Err(e) => return Err(StartError::Invalid(e.to_string())),
        };
        problems.extend(green.check_machine("green"));
        if !problems.is_empty() {
            let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
            return Err(StartError::Invalid(lines.join("\n")));
        }
        let mut warnings = req
            .rollout
            .as_ref()
            .map(|changes| crate::spec::warnings::unread_judge_keys(&changes.0, &rollout))
            .unwrap_or_default();
        warnings.extend(crate::spec::warnings::shadow_timeout_below_max_p99(
            &rollout,
        ));
        warnings.extend(crate::spec::warnings::same_label(
            &self.config.active_spec,
            self.config.active_slot,
            &green,
            "green.name",
        ));
        // Until newuser34 a `+ 1` here, which panicked the service at u64::MAX (its state file
        // edited by hand) and so ended `crossfade run`.
        let id = self
            .config
            .state
            .last_rollout_id
            .checked_add(1)
            .ok_or(StartError::NoRolloutId)?;
        self.config.state.last_rollout_id = id;
        let mut machine = Rollout::new(id, rollout, self.config.active_slot);
        // Static endpoints are retired by draining only: Crossfade did not start them.
        machine.active_left_running = !self.config.active_spec.is_command();
        machine.preview_left_running = !green.is_command();
        Ok((machine, green, warnings))
    }

    /// Runs one rollout to its end. Returns true when the service must shut down, and the start
    /// request taken while the rollout was finishing, to be answered now that it has ended.
    ///
    /// Finishing: the rollout has reached its end phase and is published as no longer running
    /// (`GET /rollout`: `running: false`), while its run still stops the preview's processes
    /// (its in-flight requests first, up to `stop_grace`). A start or a report asked then is
    /// what `crossfade status` invites, so it is held until the run returns, not refused: the
    /// reports are answered here, of this rollout; the first start is handed back (a second is
    /// refused as busy: the first will start a rollout).
    async fn rollout(
        &mut self,
        rollout: Rollout,
        preview_spec: WorkloadSpec,
        rx: &mut mpsc::Receiver<Request>,
        instances: &mut InstanceEvents,
    ) -> (bool, Option<HeldStart>) {
        let mut finishing: Option<HeldStart> = None;
        let mut reports = Vec::new();
        let preview_slot = rollout.preview();
        let active = std::mem::replace(&mut self.config.active, Workload::detached());
        let seams = Seams {
            traffic: self.config.traffic.clone(),
            metrics: self.config.metrics.clone(),
            driver: self.config.driver.clone(),
            judge: judge_for(&rollout.config.analysis),
            supervisor: Some(self.supervisor.clone()),
        };
        let run = Run::new(
            seams,
            self.config.route.clone(),
            rollout,
            active,
            preview_spec.clone(),
        );
        // Unbounded: an instance event is never dropped. Until session 35 a channel of 8 took
        // them with `try_send` and dropped (warned about) what did not fit, which lost a
        // `Restarted` (the state file kept the dead pid) or a `Ready` (a stale `restarting`
        // entry) whenever the service loop forwarded more than 8 before the run read them (a
        // burst of exits: several instances killed at once, or while the run waited for a
        // stopping preview). Their number is bounded by the instances' exits, each at least a
        // restart backoff apart; operator commands are bounded by the admin API's callers, each
        // waiting for its answer.
        let (itx, mut irx) = mpsc::unbounded_channel();
        let route = self.config.route.clone();
        let mut shutdown_reply = None;
        // What the run publishes, read when a start request must be refused.
        let published = self.status.subscribe();
        let result = {
            let mut observer = Recorder { service: self };
            let run_fut = run.run(&mut irx, &mut observer);
            tokio::pin!(run_fut);
            loop {
                tokio::select! {
                    result = &mut run_fut => break result,
                    Some(event) = instances.recv() => {
                        // The run holds the service's state meanwhile: it hands the event back.
                        // Its receiver lives until after the drain below, so this cannot fail.
                        let _ = itx.send(Interrupt::Instance(event));
                    }
                    request = rx.recv() => match request {
                        Some(Request::Operator(cmd, reply)) => {
                            // The decision comes back from inside the run, which `run_fut` drives:
                            // wait for it on a task of its own, never here.
                            let (dtx, drx) = oneshot::channel();
                            let sent = itx.send(Interrupt::Operator(cmd, dtx)).is_ok();
                            tokio::spawn(async move {
                                let decision = match (sent, drx.await) {
                                    (true, Ok(decision)) => Ok(decision),
                                    _ => Err(format!("cannot {}: the rollout ended", verb(cmd))),
                                };
                                let _ = reply.send(decision);
                            });
                        }
                        Some(Request::Start(req, reply)) => {
                            let (ended, rollout) = {
                                let status = published.borrow();
                                (!status.running, status.rollout.clone())
                            };
                            if ended && finishing.is_none() {
                                finishing = Some((req, reply));
                            } else {
                                let _ = reply.send(Err(StartError::Busy(busy_message(rollout.as_ref()))));
                            }
                        }
                        Some(Request::Report(reply)) if !published.borrow().running => {
                            reports.push(reply);
                        }
                        Some(Request::Report(reply)) => {
                            let _ = reply.send(Err(format!("no rollout report: rollout of {route} is still running (a report is written once it has ended)")));
                        }
                        Some(Request::Shutdown(reply)) => {
                            shutdown_reply = Some(reply);
                            let _ = itx.send(Interrupt::Shutdown);
                        }
                        Some(Request::Upgrade(UpgradeStep::Freeze(_), reply)) => {
                            let rollout = published.borrow().rollout.clone();
                            let why = match published.borrow().running {
                                true => busy_message(rollout.as_ref()),
                                false => format!("rollout {} has ended and is stopping its preview", rollout.as_ref().map_or(0, |r| r.id)),
                            };
                            let _ = reply.send(Err(format!("{why}; upgrade once it has ended (`crossfade status`)")));
                        }
                        Some(Request::Upgrade(_, reply)) => {
                            let _ = reply.send(Ok(()));
                        }
                        None => { let _ = itx.send(Interrupt::Shutdown); }
                    },
                }
            }
        };
        // Instance events handed to a run that ended before it read them.
        while let Ok(interrupt) = irx.try_recv() {
            if let Interrupt::Instance(event) = interrupt {
                self.instance_event(event);
            }
        }
        if let Some(promoted) = result.promoted {
            // The retired workload is stopped: its instances are not coming back.
            self.restarting.retain(|r| r.backend == preview_slot);
            self.config.active = promoted;
            self.config.active_slot = preview_slot;
            self.config.active_spec = preview_spec;
        } else if let Some(active) = result.active {
            self.config.active = active;
        }
        if let Some(record) = &mut self.config.state.rollout {
            record.rollout = result.rollout;
        }
        self.config.state.active = Some(self.config.active_slot);
        self.config.state.active_workload = Some(self.config.active_spec.clone());
        self.config.state.active_pids = self.config.active.pids();
        self.config.state.active_backoff = self.config.active.backoffs();
        self.persist();
        self.publish(false);
        for reply in reports {
            let data = ReportData::from_state(&self.config.state).map_err(|e| e.to_string());
            let _ = reply.send(data);
        }
        if let Some(reply) = shutdown_reply {
            // A start held while finishing is dropped: its caller hears that the service has
            // stopped.
            self.stop_active().await;
            let _ = reply.send(());
            return (true, None);
        }
        (result.interrupted, finishing)
    }

    /// Records a rollout that is about to run and publishes it as running.
    fn begin(&mut self, rollout: &Rollout, preview_spec: &WorkloadSpec) {
        // The build it tries, as a later start compares it to tell a rebuilt green from this
        // one (`ServiceState::already_tried`); hashed now, as the program may be replaced later.
        let preview_digest =
            crate::image::program(preview_spec).and_then(|path| crate::image::digest_now(&path));
        self.config.state.begin(RolloutRecord {
            rollout: rollout.clone(),
            preview_workload: preview_spec.clone(),
            preview_pids: Vec::new(),
            interrupted: false,
            active_workload: Some(self.config.active_spec.clone()),
            timeline: Timeline {
                images: images(rollout, &self.config.active_spec, preview_spec),
                ..Timeline::starting(unix_now())
            },
            preview_digest,
        });
        self.persist();
        self.publish(true);
    }

    async fn stop_active(&mut self) {
        // A stop during a binary upgrade's handover that is not left to the new process: the
        // held supervisors must see their instance's exit, or the stop would wait for ever.
        self.config.active.hold(Hold::Off);
        let active = std::mem::replace(&mut self.config.active, Workload::detached());
        active.stop(self.config.active_spec.stop_grace).await;
    }

    fn push_event(&mut self, reason: &str, message: &str) {
        self.push_event_at(unix_now(), reason, message);
    }

    /// [`Service::push_event`] stamped `at` (Unix seconds) rather than now.
    fn push_event_at(&mut self, at: f64, reason: &str, message: &str) {
        let events = &mut self.config.state.events;
        let mut event = StatusEvent::now(reason, message);
        event.at_unix_seconds = at;
        events.push(event);
        if events.len() > MAX_EVENTS {
            events.remove(0);
        }
        // Read before publishing: the borrow's read lock must be released before `send_replace`.
        let running = self.status.borrow().running;
        self.publish(running);
    }

    fn publish(&self, running: bool) {
        let state = &self.config.state;
        let preview = state.rollout.as_ref().filter(|_| running);
        let preview = preview.map(|r| &r.preview_workload);
        let (slot, spec) = status::completed_not_taken(self.config.active_slot, state)
            .unwrap_or((self.config.active_slot, &self.config.active_spec));
        self.metrics.backends(slot, spec, preview);
        let mut status = ServiceStatus::of(
            &self.config.route,
            (self.config.active_slot, &self.config.active_spec),
            state,
            running,
        );
        status.restarting = self.restarting.clone();
        self.status.send_replace(status);
    }

    /// Writes the state to the store, logging a failure (the next write carries the whole state
    /// again). Transitions that act are saved first through [`Observer::save`], which holds them
    /// when this fails.
    fn persist(&mut self) {
        if let Err(e) = self.try_persist() {
            tracing::error!("{e}");
        }
    }

    /// Writes the state to the store (nothing without one).
    ///
    /// # Errors
    /// The store's [`crate::Error::StateIo`] naming the file and the OS error.
    fn try_persist(&mut self) -> crate::error::Result<()> {
        if self.handed_over {
            return Ok(());
        }
        let state = &mut self.config.state;
        state.route = self.config.route.clone();

        state.active = Some(self.config.active_slot);
        // While a rollout runs, the run owns the active workload (a placeholder stands in here): keep
        // the pids recorded when it began, so a crash mid-rollout still finds them.
        if !self.config.active.is_placeholder() {
            state.active_workload = Some(self.config.active_spec.clone());
            state.active_pids = self.config.active.pids();
            state.active_backoff = self.config.active.backoffs();
        }
        match &self.config.store {
            Some(store) => store.save(&*state),
            None => Ok(()),
        }
    }
}

/// Why a restarted (or adopted not ready) active instance was stopped, as its event and
/// `crossfade status` say it: `not ready within its readiness deadline 30s after its restart
/// (last probe: ...)`, or `... after it was adopted not ready (...)` ([`ProbedSince::after`]).
fn not_ready_cause(since: ProbedSince, deadline: std::time::Duration, last_probe: &str) -> String {
    format!(
        "not ready within its readiness deadline {} {} (last probe: {last_probe})",
        crate::spec::human(deadline),
        since.after()
    )
}

/// Records transitions and events into the service's state, status and store.
struct Recorder<'a, T, M> {
    service: &'a mut Service<T, M>,
}

impl<T: TrafficSetter, M: MetricsSource> Observer for Recorder<'_, T, M> {
    fn transition(&mut self, rollout: &Rollout, preview: Option<&Workload>) {
        if let Some(record) = &mut self.service.config.state.rollout {
            record.rollout = rollout.clone();
            if let Some(p) = preview {
                record.preview_pids = p.pids();
            }
        }
        self.service.metrics.transition(rollout);
        if let Some(record) = &mut self.service.config.state.rollout {
            let timeline = &mut record.timeline;
            if rollout.is_terminal() && timeline.ended_at_unix_seconds.is_none() {
                timeline.ended_at_unix_seconds = Some(unix_now());
                // Again at the end: program digests are computed in the background meanwhile.
                if let Some(active) = &record.active_workload {
                    timeline.images = images(&record.rollout, active, &record.preview_workload);
                }
            }
        }
        self.service.persist();
        self.service.publish(!rollout.is_terminal());
    }

    /// Writes the state with `rollout` (and the preview's pids) before the run acts on it; when
    /// the write fails, the record is left as it was and the error names the file.
    fn save(&mut self, rollout: &Rollout, preview: Option<&Workload>) -> Result<(), String> {
        let service = &mut *self.service;
        let Some(record) = &mut service.config.state.rollout else {
            return service.try_persist().map_err(|e| e.to_string());
        };
        let kept = (
            std::mem::replace(&mut record.rollout, rollout.clone()),
            record.preview_pids.clone(),
        );
        if let Some(p) = preview {
            record.preview_pids = p.pids();
        }
        let saved = service.try_persist();
        if saved.is_err() {
            if let Some(record) = &mut service.config.state.rollout {
                (record.rollout, record.preview_pids) = kept;
            }
        }
        saved.map_err(|e| e.to_string())
    }

    /// Shows the held rollout (its message says why) on `GET /rollout` and `crossfade status`.
    fn held(&mut self, rollout: &Rollout) {
        if let Some(record) = &mut self.service.config.state.rollout {
            record.rollout = rollout.clone();
        }
        self.service.publish(!rollout.is_terminal());
    }

    /// The event that ends a rollout (its reason the terminal phase's name, `Completed`) is
    /// stamped with the rollout's end, the time its terminal phase was written (the transition's
    /// write-ahead save, which runs first and takes some milliseconds), so that its event, its
    /// report marker and the end that `crossfade status` and the report show are one time
    /// (session 41: a restart's status said `ended Completed at …22.719Z` and `Completed at
    /// …22.743Z` for one end).
    fn event(&mut self, rollout: &Rollout, reason: &'static str, message: &str) {
        let mut at = unix_now();
        if let Some(record) = &mut self.service.config.state.rollout {
            let end = record.timeline.ended_at_unix_seconds;
            if let Some(end) = end.filter(|_| ends(rollout, reason)) {
                at = end;
            }
            record.timeline.push_marker(at, reason, message);
        }
        self.service.metrics.event(Some(rollout), reason);
        self.service.push_event_at(at, reason, message);
    }

    fn instance(&mut self, event: InstanceEvent) {
        self.service.instance_event(event);
    }

    /// Kept in memory and written with the next transition: a crash loses at most the samples
    /// since the last one, never the phase.
    fn sample(&mut self, sample: Sample) {
        if let Some(record) = &mut self.service.config.state.rollout {
            record.timeline.push_sample(sample);
        }
    }
}

/// Whether an event `reason` is the one that ends `rollout`: the rollout is in a terminal phase
/// and the reason is that phase's name (`Completed`, `RolledBack`, `Aborted`).
fn ends(rollout: &Rollout, reason: &str) -> bool {
    rollout.is_terminal() && reason == rollout.phase.as_str()
}

/// What the active and the preview backend of `rollout` run (the slots as at its start).
fn images(rollout: &Rollout, active: &WorkloadSpec, preview: &WorkloadSpec) -> Vec<BackendImage> {
    let active_slot = status::start_slot(rollout);
    vec![
        BackendImage::of(active_slot, "active", active),
        BackendImage::of(active_slot.other(), "preview", preview),
    ]
}

fn verb(cmd: OperatorCommand) -> &'static str {
    cmd.as_str()
}

// === impl ServiceHandle ===

impl ServiceHandle {
    /// Starts a rollout; returns its id and the request's warnings ([`Started`]).
    ///
    /// # Errors
    /// [`StartError::Invalid`] naming the field paths at fault, [`StartError::Busy`] while a rollout
    /// is in progress, [`StartError::Stopped`] when the service has stopped.
    pub async fn start(&self, request: StartRequest) -> Result<Started, StartError> {
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.send(Request::Start(Box::new(request), reply)).await;
        sent.map_err(|_| StartError::Stopped)?;
        rx.await.map_err(|_| StartError::Stopped)?
    }

    /// Sends an operator command to the running rollout and returns the state machine's decision
    /// (accepted with the phase it led to, or refused with the reason).
    ///
    /// # Errors
    /// When no rollout is in progress, it ended before deciding, or the service has stopped.
    pub async fn operator(&self, command: OperatorCommand) -> Result<Decision, String> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Operator(command, reply)).await?;
        rx.await.map_err(|_| "the service has stopped".to_owned())?
    }

    /// Stops any rollout (its preview is stopped; the state file keeps its phase so that the next
    /// start recovers it) and the active workload, then returns.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.send(Request::Shutdown(reply)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// A binary upgrade's new process (`successor`, its pid when known) asks to take over: when no
    /// rollout is in progress, no rollout starts from now on (`POST /rollout` and the operator
    /// commands answer 503 with `Retry-After`) and the active instances are held (one that
    /// exits is not restarted) until [`ServiceHandle::thaw`] or [`ServiceHandle::hand_over`].
    /// The state is saved first, as the new process will read it.
    ///
    /// # Errors
    /// Why the handover is refused: a rollout in progress (which, in what phase, what the
    /// operator can do), or the state cannot be saved.
    pub async fn freeze_for_upgrade(&self, successor: Option<u32>) -> Result<(), String> {
        self.upgrade_step(UpgradeStep::Freeze(successor)).await
    }

    /// The new process failed before it served: rollouts are accepted and the active instances
    /// supervised again (an instance that exited meanwhile is restarted now).
    pub async fn thaw(&self) {
        if let Err(e) = self.upgrade_step(UpgradeStep::Thaw).await {
            tracing::warn!("binary upgrade: {e}");
        }
    }

    /// The new process took over: it supervises the active workload, which this process leaves
    /// running from now on (also when it exits), and this service writes the state file no
    /// more; [`ServiceHandle::shutdown`] then stops nothing.
    pub async fn hand_over(&self) {
        if let Err(e) = self.upgrade_step(UpgradeStep::HandOver).await {
            tracing::warn!("binary upgrade: {e}");
        }
    }

    async fn upgrade_step(&self, step: UpgradeStep) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Upgrade(step, reply)).await?;
        rx.await.map_err(|_| "the service has stopped".to_owned())?
    }

    fn handing_over_to(&self) -> Option<Option<u32>> {
        *self
            .handing_over
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What the report of the last rollout is drawn from ([`ReportData`]).
    ///
    /// # Errors
    /// When no rollout has run, one is still running, or the service has stopped; the message says
    /// which.
    pub async fn report(&self) -> Result<ReportData, String> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Report(reply)).await?;
        rx.await.map_err(|_| "the service has stopped".to_owned())?
    }

    /// The current status, its time-dependent fields (the step's hold, restart backoffs)
    /// measured now ([`ServiceStatus::at`]).
    pub fn status(&self) -> ServiceStatus {
        let status = self.status.borrow().clone();
        status.at(tokio::time::Instant::now(), std::time::SystemTime::now())
    }

    /// A receiver that sees every status change.
    pub fn subscribe(&self) -> watch::Receiver<ServiceStatus> {
        self.status.clone()
    }

    /// Resolves when the service task has ended: after [`ServiceHandle::shutdown`], or when it
    /// died (a panic), which a caller that did not ask for a shutdown must treat as fatal: the
    /// route can no longer be steered.
    pub async fn stopped(&self) {
        self.tx.closed().await;
    }

    /// Waits until no rollout is running and returns the status then.
    pub async fn idle(&self) -> ServiceStatus {
        let mut rx = self.status.clone();
        let _ = rx.wait_for(|s| !s.running).await;
        let status = rx.borrow().clone();
        status
    }

    async fn send(&self, request: Request) -> Result<(), String> {
        self.tx
            .send(request)
            .await
            .map_err(|_| "the service has stopped".to_owned())
    }
}

impl AdminExtension for ServiceHandle {
    fn handle(
        &self,
        method: Method,
        path: String,
        body: bytes::Bytes,
    ) -> BoxFuture<'static, Option<AdminReply>> {
        let this = self.clone();
        Box::pin(async move {
            let reply =
                |status: StatusCode, body: serde_json::Value| Some(AdminReply::new(status, body));
            let error =
                |status: StatusCode, e: String| reply(status, serde_json::json!({ "error": e }));
            // The query plays no part in these endpoints (as for the proxy's own `/status`):
            // `POST /rollout/abort?x=1` is `POST /rollout/abort`, not an unknown endpoint.
            let (path, query) = path.split_once('?').unwrap_or((path.as_str(), ""));
            // During a binary upgrade's handover nothing starts or steers a rollout here: the new
            // process, on the same admin address, takes the request once it has taken over.
            if method == Method::POST && path.starts_with("/rollout") {
                if let Some(successor) = this.handing_over_to() {
                    return Some(AdminReply::from_error(
                        &crossfade_proxy::Error::HandingOver { successor },
                    ));
                }
            }
            let command = match (method.clone(), path) {
                (Method::GET, "/rollout") => {
                    return reply(StatusCode::OK, serde_json::to_value(this.status()).unwrap_or_default())
                }
                (Method::POST, "/rollout") => {
                    let request = match StartRequest::from_json(&body) {
                        Ok(r) => r,
                        Err(SpecError::Parse(e)) => return error(StatusCode::BAD_REQUEST, format!("request body: {e}{}", yaml_hint(&e, &body))),
                        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
                    };
                    return match this.start(request).await {
                        Ok(Started { id, warnings }) if warnings.is_empty() => {
                            reply(StatusCode::ACCEPTED, serde_json::json!({ "started": id }))
                        }
                        Ok(Started { id, warnings }) => {
                            for warning in &warnings {
                                tracing::warn!(rollout = id, "{warning}");
                            }
                            reply(StatusCode::ACCEPTED, serde_json::json!({ "started": id, "warnings": warnings }))
                        }
                        Err(StartError::HandingOver(successor)) => {
                            Some(AdminReply::from_error(&crossfade_proxy::Error::HandingOver { successor }))
                        }
                        Err(e) => error(e.status(), e.to_string()),
                    };
                }
                (Method::GET, "/rollout/report") => {
                    return match this.report().await {
                        Ok(data) => reply(StatusCode::OK, serde_json::to_value(&data).unwrap_or_default()),
                        // No finished rollout to report on (yet): 409 Conflict with the state it is in.
                        Err(e) => error(StatusCode::CONFLICT, e),
                    };
                }
                (Method::POST, "/rollout/pause") => OperatorCommand::Pause,
                (Method::POST, "/rollout/resume") => OperatorCommand::Resume,
                (Method::POST, "/rollout/promote") => OperatorCommand::Promote,
                (Method::POST, "/rollout/abort") => OperatorCommand::Abort,
                (Method::POST, "/rollout/force-abort") => OperatorCommand::ForceAbort,
                // Known paths asked with another method: 405 naming the methods (RFC 9110 §15.5.6).
                (_, "/rollout") => return Some(AdminReply::not_allowed("GET, HEAD, POST")),
                (_, "/rollout/report") => return Some(AdminReply::not_allowed("GET, HEAD")),
                (_, "/rollout/pause" | "/rollout/resume" | "/rollout/promote" | "/rollout/abort" | "/rollout/force-abort") => {
                    return Some(AdminReply::not_allowed("POST"))
                }
                (_, p) if p.starts_with("/rollout") => {
                    return error(StatusCode::NOT_FOUND, format!("{method} {p}: not an admin endpoint (use GET /rollout, GET /rollout/report, POST /rollout, POST /rollout/{{pause,resume,promote,abort,force-abort}})"))
                }
                _ => return None,
            };
            // `?force=true` is the escape hatch of `PUT /routes/{route}/weights`; on a command it
            // was ignored, so `POST /rollout/abort?force=true` made a plain abort (one that waits
            // for the active backend's capacity) where a forced one was asked for.
            if query
                .split('&')
                .any(|pair| pair.split('=').next() == Some("force"))
            {
                return error(StatusCode::BAD_REQUEST, format!(
                    "{method} {path}?{query}: a command takes no `force` parameter (its query is not read); \
                     a forced abort, all traffic back at once, is POST /rollout/force-abort (`crossfade abort --force`)"
                ));
            }
            match this.operator(command).await {
                Ok(decision) if decision.accepted => reply(
                    StatusCode::OK,
                    serde_json::to_value(&decision).unwrap_or_default(),
                ),
                Ok(decision) => {
                    let mut body = serde_json::to_value(&decision).unwrap_or_default();
                    if let Some(object) = body.as_object_mut() {
                        object.insert("error".into(), decision.message.clone().into());
                    }
                    reply(StatusCode::CONFLICT, body)
                }
                Err(e) => reply(StatusCode::CONFLICT, refusal(command, &this.status(), &e)),
            }
        })
    }
}

/// After a `POST /rollout` body that is not JSON and not a JSON object's start: what the body
/// takes, and that `crossfade migrate` sends a YAML file (trial 20: a `curl --data-binary
/// @green.yaml` was told only `not valid JSON: expected value at line 1 column 1`).
fn yaml_hint(error: &str, body: &[u8]) -> &'static str {
    let object = body.trim_ascii_start().starts_with(b"{");
    if error.starts_with("not valid JSON") && !object && !body.trim_ascii().is_empty() {
        "; the body is JSON ({\"green\": {...}, \"rollout\": {...}}), the form of a \
         `crossfade migrate` file, which sends a YAML file as JSON: `crossfade migrate FILE`"
    } else {
        ""
    }
}

/// The answer to an operator command refused outside a rollout (none in progress, or it ended
/// before deciding), in the shape of a refused [`Decision`] (trial 12, M5): `accepted: false`,
/// `command`, the last rollout's id and phase (`null` before the first rollout), `message`, and
/// `error` (the same text, as every error answer of the admin API has).
fn refusal(command: OperatorCommand, status: &ServiceStatus, why: &str) -> serde_json::Value {
    let last = status.rollout.as_ref();
    serde_json::json!({
        "accepted": false,
        "command": command,
        "rollout": last.map(|r| r.id),
        "phase": last.map(|r| r.phase),
        "message": why,
        "error": why,
    })
}
