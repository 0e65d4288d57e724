//! Runs one rollout: feeds the pure [`Rollout`] machine its inputs (timers, driver results, operator
//! commands, verdicts) and executes the commands it returns through the seams.
//!
//! Long operations (provisioning the preview, draining, stopping a workload) run as tasks that report
//! back over a channel, so the loop keeps answering operator commands and status requests meanwhile.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crossfade_proxy::weight::{Slot, Weights};
use crossfade_proxy::{BackendSnapshot, ProxyEvent, RouteOwner, ShadowSnapshot};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::analysis::checks::{self, Context};
use crate::analysis::{judge_at, split, Judge, Outcome, Verdict, Window};
use crate::driver::{probe, DriverError, InstanceEvent, Workload, WorkloadDriver};
use crate::gates::GateContext;
use crate::rollout::{
    Capacities, Command, Decision, GateAnswer, Input, OperatorCommand, Phase, Rollout,
};
use crate::spec::GatePoint;
use crate::spec::WorkloadSpec;
use crate::timeline::{unix_now, Sample, SAMPLE_INTERVAL};
use crate::traffic::{MetricsSource, RouteGate, TrafficSetter};

/// How often the drain loop looks at what holds the old active backend (in-flight requests, upgraded
/// connections).
const DRAIN_POLL: Duration = Duration::from_millis(25);

/// How long the drain waits, after its deadline, for the upgraded connections it closed to end: the
/// proxy's own bound on a close ([`crossfade_proxy::tunnel::CLOSE_WAIT`]) plus a poll or two.
const CLOSE_GRACE: Duration = Duration::from_millis(2_500);

/// After the in-flight count first reads 0, how long it must stay 0 before the backend is stopped: it
/// covers a request that loaded the previous table just before the swap and has not yet been counted.
const DRAIN_SETTLE: Duration = Duration::from_millis(100);

/// How often the runtime reads both backends' healthy endpoints ([`TrafficSetter::capacity`]) for a
/// rollback that waits for the active backend's capacity; a reading that changed is fed to the
/// machine as [`Input::Capacity`].
const CAPACITY_POLL: Duration = Duration::from_millis(100);

/// The first wait before a failed save ([`Observer::save`]) is tried again; each further failure
/// doubles it, up to [`SAVE_RETRY_MAX`].
const SAVE_RETRY_FIRST: Duration = Duration::from_millis(250);

/// The longest wait between two tries of a save that keeps failing.
const SAVE_RETRY_MAX: Duration = Duration::from_secs(5);

/// What the runtime reports to its owner while a rollout runs.
pub trait Observer: Send {
    /// Called after every transition with the machine's current state.
    fn transition(&mut self, rollout: &Rollout, preview: Option<&Workload>);
    /// Called before the run acts on a transition (starts or stops a workload, publishes
    /// weights, swaps the roles, drains): makes `rollout` durable (`crossfade run`: the state
    /// file), so that a crash after the act never restarts from a state before it.
    ///
    /// # Errors
    /// Why it cannot be saved (the state file's path and the OS error). The run then does not
    /// take the transition: the machine stays as it was, nothing is acted on, and the run holds
    /// and tries again with a growing backoff ([`Observer::held`]) until a save succeeds.
    fn save(&mut self, rollout: &Rollout, preview: Option<&Workload>) -> Result<(), String> {
        let _ = (rollout, preview);
        Ok(())
    }
    /// Called when the run holds because a save failed, and after each failed retry: `rollout`
    /// is the machine as it stays meanwhile, its `message` saying why it holds.
    fn held(&mut self, rollout: &Rollout) {
        let _ = rollout;
    }
    /// Called for every event the machine emits (`reason` is CamelCase).
    fn event(&mut self, rollout: &Rollout, reason: &'static str, message: &str);
    /// Called for an exit or restart of a supervised (serving) instance while the run goes on.
    fn instance(&mut self, event: InstanceEvent) {
        let _ = event;
    }
    /// Called every [`SAMPLE_INTERVAL`] (and once at the end) with what both backends did since the
    /// previous sample, for the rollout's [`crate::timeline::Timeline`].
    fn sample(&mut self, sample: Sample) {
        let _ = sample;
    }
}

/// A request from outside while a rollout runs.
pub enum Interrupt {
    /// An operator command (pause, resume, promote, abort) and where to send the machine's
    /// decision on it.
    Operator(OperatorCommand, tokio::sync::oneshot::Sender<Decision>),
    /// Stop the run now (process shutdown): the preview is stopped, the state file keeps the phase.
    Shutdown,
    /// A supervised instance exited or was restarted: passed on to [`Observer::instance`].
    Instance(InstanceEvent),
}

/// What a finished run hands back to its owner.
pub struct RunResult {
    /// The machine in its final phase.
    pub rollout: Rollout,
    /// The workload that now serves: the preview after a completed rollout, else `None` (the previous
    /// active workload keeps serving and is still owned by the caller).
    pub promoted: Option<Workload>,
    /// The previous active workload, handed back when it was not retired.
    pub active: Option<Workload>,
    /// True when the run ended because of [`Interrupt::Shutdown`].
    pub interrupted: bool,
}

/// Results of background tasks.
/// A drain of the preview at weight 0 that ends a rollback or abort (`Run::apply_weights`).
#[derive(Clone, Copy, Debug)]
struct UndoDrain {
    /// Which drain: its [`Done::UndoDrained`] carries the same.
    id: u64,
    /// The weight request for 0 it answers: the latest one, or it answers none.
    seq: u64,
    /// The generation in which that request's 0 was applied.
    generation: u64,
}

enum Done {
    Provisioned(Result<Workload, String>),
    /// The preview's start was cancelled ([`Run::stop_preview`]) and what it started is stopped.
    ProvisionCancelled,
    /// Every preview endpoint passed its probe; weight request `seq` may be applied.
    PreviewHealthy {
        seq: u64,
        preview_bp: u32,
    },
    /// A probe before weight request `seq` failed (reported once per request; probing goes on).
    PreviewUnhealthy {
        seq: u64,
        reason: String,
    },
    /// A verdict completed with its `rollout.analysis.checks`, and the counters it was judged at.
    Analysed {
        verdict: Box<Verdict>,
        // Boxed: two snapshots (with their latency and abort histograms) would make every
        // `Done` that large.
        at: Option<Box<(BackendSnapshot, BackendSnapshot)>>,
    },
    /// The answer of the gates at `at`, asked for `step`.
    Gated {
        at: GatePoint,
        step: usize,
        answer: GateAnswer,
    },
    Drained(Drain),
    /// The preview drained at weight 0 at the end of a rollback or abort: the drain `id` of
    /// `Run::undo_drain` (`Run::apply_weights`).
    UndoDrained {
        id: u64,
    },
    ActiveStopped,
    PreviewStopped,
}

/// The seams a run executes through.
pub struct Seams<T, M> {
    /// Publishes weights and endpoints.
    pub traffic: Arc<T>,
    /// Reads per-backend counters.
    pub metrics: Arc<M>,
    /// Starts and stops workloads.
    pub driver: Arc<dyn WorkloadDriver>,
    /// Judges analysis windows.
    pub judge: Arc<dyn Judge + Send + Sync>,
    /// Where the promoted preview reports its instances' exits and restarts once it serves: from
    /// the role swap on it is supervised ([`Workload::supervise`]). `None`: not supervised.
    pub supervisor: Option<mpsc::UnboundedSender<InstanceEvent>>,
}

/// One rollout in progress.
pub struct Run<T, M> {
    seams: Seams<T, M>,
    route: String,
    preview_spec: WorkloadSpec,
    rollout: Rollout,
    active: Option<Workload>,
    /// The name of the workload active when the run started (for gates and checks, after it stopped).
    active_name: String,
    preview: Option<Workload>,
    promoted: bool,
    window_start: Option<(BackendSnapshot, BackendSnapshot)>,
    /// Counters when the rollout's first window opened, for judges that want cumulative windows.
    first_window: Option<(BackendSnapshot, BackendSnapshot)>,
    /// The preview's shadow counters when the window opened (shadow steps only).
    shadow_start: Option<ShadowSnapshot>,
    /// Whether this run turned shadow traffic on in the data plane (and must turn it off).
    shadow_on: bool,
    inputs: VecDeque<Input>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    pending_tasks: usize,
    /// The preview weight last published, in basis points.
    applied_bp: u32,
    /// Sequence number of the latest weight request; an older probe result is stale.
    weights_seq: u64,
    /// The preview's drain at weight 0 that ends a rollback or abort, while it runs: it answers
    /// the latest request for 0 ([`UndoDrain::seq`]), and a request for more than 0 drops it.
    undo_drain: Option<UndoDrain>,
    /// How many such drains were started: the last one's id.
    undo_drains: u64,
    /// The probe gating the latest weight increase, if one is running.
    probe: Option<tokio::task::JoinHandle<()>>,
    /// Cancels the preview's start while it is provisioning: a rollout that ends (abort, deadline)
    /// before its preview is ready stops what was started at once, not when it becomes ready.
    provisioning: Option<CancellationToken>,
    /// Tasks stopping a workload (the preview's stop, the retired backend's) not finished yet: a
    /// run interrupted by a shutdown waits for them ([`Run::finish_stops`]).
    stops_in_flight: usize,
    /// The current provisioning's readiness probes ([`probe::ProbeLog`]).
    probe_log: probe::ProbeLog,
    /// The backend (slot) this rollout rolls out to, for logs: fixed at the start, whereas
    /// [`Rollout::preview`] names the other slot once the roles swapped.
    preview_backend: Slot,
    /// The weights last published (both slots), for the samples.
    weights: Weights,
    /// The counters (blue, green) at the last sample and when it was taken.
    sampled: Option<(BackendSnapshot, BackendSnapshot, Instant)>,
    /// Both backends' capacity as last fed to the machine.
    capacity: Option<Capacities>,
    /// Set while a transition waits because its state could not be saved.
    hold: Option<SaveHold>,
    /// The retired backend's drain, ended, while its endpoints are kept because the promoted
    /// backend cannot serve ([`Run::retire_when_promoted_serves`]).
    retire_held: Option<Drain>,
}

/// A run that holds because [`Observer::save`] failed: the transition it could not save is tried
/// again at `retry_at` (its input is first in the queue).
struct SaveHold {
    /// When the first save failed.
    since: Instant,
    /// When to try again.
    retry_at: Instant,
    /// The wait after the next failure.
    backoff: Duration,
    /// Failed saves so far.
    failures: u32,
    /// The message the rollout showed before the hold, restored when it ends.
    message: String,
    /// The message shown during the hold.
    holding: String,
}

impl<T: TrafficSetter, M: MetricsSource> Run<T, M> {
    /// Prepares a run of `rollout` on `route`, where `active` is the workload serving now.
    pub fn new(
        seams: Seams<T, M>,
        route: String,
        rollout: Rollout,
        active: Workload,
        preview_spec: WorkloadSpec,
    ) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let rollout_active = rollout.active;
        Run {
            seams,
            route,
            preview_spec,
            rollout,
            active_name: active.name().to_string(),
            active: Some(active),
            preview: None,
            promoted: false,
            window_start: None,
            first_window: None,
            shadow_start: None,
            shadow_on: false,
            inputs: VecDeque::new(),
            done_tx,
            done_rx,
            pending_tasks: 0,
            applied_bp: 0,
            weights_seq: 0,
            undo_drain: None,
            undo_drains: 0,
            probe: None,
            provisioning: None,
            stops_in_flight: 0,
            probe_log: probe::ProbeLog::default(),
            preview_backend: rollout_active.other(),
            weights: Weights::all_to(rollout_active),
            sampled: None,
            capacity: None,
            hold: None,
            retire_held: None,
        }
    }

    /// The preview workload's `name:` (its slot's name when unset), for logs.
    fn preview_version(&self) -> &str {
        self.preview_spec.label(self.preview_backend)
    }

    fn preview_slot(&self) -> Slot {
        self.rollout.preview()
    }

    /// Drives the rollout to a terminal phase (or until `Interrupt::Shutdown`).
    pub async fn run(
        mut self,
        interrupts: &mut mpsc::UnboundedReceiver<Interrupt>,
        observer: &mut dyn Observer,
    ) -> RunResult {
        self.inputs.push_back(Input::Start);
        // From now until the run ends the rollout alone sets the route's weights: an operator's
        // manual write would be overwritten at the next step and skew the analysis meanwhile.
        let owner = RouteOwner {
            rollout: self.rollout.id,
            promoted: false,
        };
        if let Err(e) = self.seams.traffic.claim(&self.route, owner) {
            tracing::error!(route = %self.route, rollout = self.rollout.id, backend = %self.preview_backend, "cannot own the route's weights: {e}");
        }
        let mut interrupted = false;
        let mut events = self.seams.traffic.events();
        let mut sampler = tokio::time::interval(SAMPLE_INTERVAL);
        sampler.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut capacity_poll = tokio::time::interval(CAPACITY_POLL);
        capacity_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            while !self.holding(Instant::now()) {
                let Some(input) = self.inputs.pop_front() else {
                    break;
                };
                if self.rollout.phase == Phase::Provisioning {
                    self.rollout.provision_probe = self.probe_log.summary();
                }
                let commands = match self.advance(input, observer) {
                    Ok(commands) => commands,
                    Err((input, error)) => {
                        // Held: the input is taken again once the retry is due, first. The
                        // inputs behind it are stepped meanwhile: one that sends traffic back to
                        // the active backend (a failed verdict, the preview's exit) acts without
                        // a save (see `advance`); one that would act forward waits as well.
                        let mut deferred = std::collections::VecDeque::from([input]);
                        while let Some(next) = self.inputs.pop_front() {
                            match self.advance(next, observer) {
                                Ok(commands) => self.apply(commands, observer),
                                Err((next, _)) => deferred.push_back(next),
                            }
                        }
                        deferred.append(&mut self.inputs);
                        self.inputs = deferred;
                        self.held(&error, observer);
                        break;
                    }
                };
                self.apply(commands, observer);
            }
            if self.rollout.is_terminal() && self.pending_tasks == 0 {
                break;
            }
            // While held, the machine's own timers wait too: the retry is the next wakeup (it
            // steps the held input again, a pending analysis pass with it). The preview's exit
            // is still watched: it sends traffic back, which acts without a save (`advance`),
            // so it is stepped at once rather than at the next retry. Once one is queued (it
            // could not act), the watch rests until the queue is stepped.
            let retry = self.hold.as_ref().map(|h| h.retry_at);
            let wakeup = retry.or_else(|| self.rollout.next_wakeup());
            let exit_queued = self
                .inputs
                .iter()
                .any(|i| matches!(i, Input::PreviewExited { .. }));
            let preview_exit: futures_util::future::BoxFuture<'static, String> =
                if retry.is_some() && exit_queued {
                    Box::pin(futures_util::future::pending())
                } else {
                    self.watch_preview()
                };
            tokio::select! {
                Some(done) = self.done_rx.recv() => self.finished(done, observer),
                interrupt = interrupts.recv() => match interrupt {
                    Some(Interrupt::Operator(cmd, reply)) => {
                        let _ = reply.send(self.operate(cmd, observer));
                    }
                    Some(Interrupt::Instance(event)) => observer.instance(event),
                    Some(Interrupt::Shutdown) | None => { interrupted = true; break; }
                },
                reason = preview_exit => {
                    let input = Input::PreviewExited { reason };
                    if retry.is_some() {
                        match self.advance(input, observer) {
                            Ok(commands) => self.apply(commands, observer),
                            Err((input, _)) => self.inputs.push_back(input),
                        }
                    } else {
                        self.inputs.push_back(input);
                    }
                }
                event = next_event(&mut events) => self.proxy_event(event),
                () = sleep_until(wakeup) => {
                    if retry.is_none() {
                        self.inputs.push_back(Input::Tick);
                    }
                }
                _ = sampler.tick() => self.sample(observer),
                _ = capacity_poll.tick() => {
                    let changed = self.capacity_changed();
                    self.inputs.extend(changed);
                    if let Some(drain) = self.retire_held.take() {
                        self.retire_when_promoted_serves(drain, true);
                    }
                }
            }
        }
        self.sample(observer);
        if let Some(probe) = self.probe.take() {
            probe.abort();
        }
        self.set_shadow(false);
        self.seams.traffic.release(&self.route, self.rollout.id);
        if interrupted {
            self.finish_stops().await;
            if let Some(preview) = self.preview.take() {
                preview.stop(self.preview_spec.stop_grace).await;
            }
        }
        let promoted = if self.promoted {
            self.preview.take()
        } else {
            None
        };
        RunResult {
            rollout: self.rollout,
            promoted,
            active: self.active.take(),
            interrupted,
        }
    }

    /// For a run interrupted by a shutdown: cancels the preview's start if it is still
    /// provisioning and waits until the driver has stopped what it started, and waits for every
    /// stop already under way (a rollback's stop of the preview, the retired backend's stop). The
    /// process exits soon after the run returns, and a task cut short there leaves its processes
    /// running: dropping a workload kills its direct children alone (`kill_on_drop`), not their
    /// process groups, so a start script's server ran on, orphaned (trial 24). Each of these ends
    /// within its workload's `stop_grace`.
    async fn finish_stops(&mut self) {
        let mut starting = self.provisioning.take().inspect(CancellationToken::cancel);
        while starting.is_some() || self.stops_in_flight > 0 {
            let Some(done) = self.done_rx.recv().await else {
                break;
            };
            match done {
                Done::ProvisionCancelled | Done::Provisioned(Err(_)) => starting = None,
                Done::Provisioned(Ok(workload)) => {
                    starting = None;
                    workload.stop(self.preview_spec.stop_grace).await;
                }
                Done::PreviewStopped | Done::ActiveStopped => {
                    self.stops_in_flight = self.stops_in_flight.saturating_sub(1);
                }
                _ => {}
            }
        }
    }

    /// Steps the machine with an operator command at once (the input queue is empty here) and
    /// returns its decision; what the command set in motion (weights, stops) continues in the loop.
    fn operate(&mut self, command: OperatorCommand, observer: &mut dyn Observer) -> Decision {
        // During a hold a command is stepped as any input: one that acts forward is refused
        // below (it cannot be saved either), an abort acts (it sends traffic back, see `advance`).
        // An abort decides the rollback's first weight from the capacity now, not at the last poll.
        if let Some(input) = self.capacity_changed() {
            match self.advance(input, observer) {
                Ok(commands) => {
                    for command in commands {
                        self.execute(command, observer);
                    }
                }
                // Read again at the next poll, once saves work.
                Err(_) => self.capacity = None,
            }
        }
        let commands = match self.advance(Input::Operator(command), observer) {
            Ok(commands) => commands,
            Err((_, error)) => {
                let message = format!(
                    "{} refused: {error}; nothing was changed, the rollout holds as it is until \
                     its state can be saved",
                    command.as_str()
                );
                tracing::error!(route = %self.route, rollout = self.rollout.id, "{message}");
                return Decision {
                    command,
                    rollout: self.rollout.id,
                    accepted: false,
                    phase: self.rollout.phase,
                    message,
                };
            }
        };
        let decision = Decision::of(command, &self.rollout, &commands);
        for command in commands {
            self.execute(command, observer);
        }
        if self.rollout.is_terminal() {
            self.seams.traffic.release(&self.route, self.rollout.id);
        }
        observer.transition(&self.rollout, self.preview.as_ref());
        decision
    }

    /// Executes a transition's `commands` and reports the new state.
    fn apply(&mut self, commands: Vec<Command>, observer: &mut dyn Observer) {
        for command in commands {
            self.execute(command, observer);
        }
        if self.rollout.is_terminal() {
            // The weights are final (before anyone sees the terminal phase): the route is the
            // operator's again while the last tasks (stopping the preview) finish.
            self.seams.traffic.release(&self.route, self.rollout.id);
        }
        observer.transition(&self.rollout, self.preview.as_ref());
    }

    /// Whether the run holds (a save failed) and its retry is not due at `now`.
    fn holding(&self, now: Instant) -> bool {
        self.hold.as_ref().is_some_and(|h| now < h.retry_at)
    }

    /// Steps the machine with `input` and returns the commands to execute, unless they act
    /// (start or stop a workload, publish weights, swap the roles, drain) and the new state cannot
    /// be saved first ([`Observer::save`]): then the machine is put back as it was and the input
    /// is returned with the save's error, so that the transition is not taken (nothing acted on
    /// from a state a restart would not find). A save that works again ends a hold.
    fn advance(
        &mut self,
        input: Input,
        observer: &mut dyn Observer,
    ) -> Result<Vec<Command>, (Input, String)> {
        let before = self.rollout.clone();
        let mut commands = self.rollout.step(input.clone(), Instant::now());
        if commands.iter().any(acts) {
            if let Err(error) = observer.save(&self.rollout, self.preview.as_ref()) {
                if back_to_active(&before, &self.rollout) {
                    let message = format!(
                        "the rollout's state cannot be saved ({error}); acting anyway, because \
                         this transition sends traffic back to {}: a restart from the state last \
                         saved (before the role swap) rolls the rollout back as well",
                        self.rollout.active
                    );
                    tracing::error!(route = %self.route, rollout = self.rollout.id, "{message}");
                    // The transition held (forward) is moot now: the rollout left that path.
                    if let Some(hold) = self.hold.take() {
                        if self.rollout.message == hold.holding {
                            self.rollout.message = message;
                        }
                    }
                    return Ok(commands);
                }
                self.rollout = before;
                return Err((input, error));
            }
            // Saved just now: the transition's own `Persist` would write the same again.
            commands.retain(|c| !matches!(c, Command::Persist));
        } else {
            // Nothing saved: a hold goes on until a save works.
            return Ok(commands);
        }
        if let Some(hold) = self.hold.take() {
            if self.rollout.message == hold.holding {
                self.rollout.message = hold.message;
            }
            let message = format!(
                "the rollout's state is saved again after {} failed {} over {}; the rollout resumes",
                hold.failures,
                if hold.failures == 1 { "try" } else { "tries" },
                crate::spec::human_elapsed(Instant::now().duration_since(hold.since))
            );
            tracing::warn!(route = %self.route, rollout = self.rollout.id, "{message}");
            observer.event(&self.rollout, "StateSaved", &message);
        }
        Ok(commands)
    }

    /// A transition's state could not be saved (`error` names the file and the OS error): the run
    /// holds where it is, says so (log, event on the first failure, the rollout's message) and
    /// tries again after a backoff that doubles up to [`SAVE_RETRY_MAX`].
    fn held(&mut self, error: &str, observer: &mut dyn Observer) {
        let now = Instant::now();
        let first = self.hold.is_none();
        let hold = self.hold.get_or_insert_with(|| SaveHold {
            since: now,
            retry_at: now,
            backoff: SAVE_RETRY_FIRST,
            failures: 0,
            message: self.rollout.message.clone(),
            holding: String::new(),
        });
        hold.failures += 1;
        let wait = hold.backoff;
        hold.retry_at = now + wait;
        hold.backoff = (wait * 2).min(SAVE_RETRY_MAX);
        hold.holding = format!(
            "holding: the next transition cannot be saved ({error}); nothing is changed (weights, \
             workloads) until it can, next try in {}",
            crate::spec::human(wait)
        );
        let message = hold.holding.clone();
        tracing::error!(route = %self.route, rollout = self.rollout.id, failures = hold.failures, "{message}");
        self.rollout.message = message.clone();
        if first {
            observer.event(&self.rollout, "StateNotSaved", &message);
        }
        observer.held(&self.rollout);
    }

    /// Reads both backends' healthy endpoints: [`Input::Capacity`] when they changed since the
    /// last reading fed to the machine. `None` while the data plane does not tell, or once the
    /// rollout has ended. An active instance that cannot serve (its process exited and waits for
    /// its supervised restart, or was started again and is not ready yet) counts as down even
    /// while the data plane, which has not sent it a request since, still counts it up: a
    /// rollback never sends traffic back to it.
    fn capacity_changed(&mut self) -> Option<Input> {
        if self.rollout.is_terminal() {
            return None;
        }
        let (active, preview) = (self.rollout.active, self.rollout.preview());
        let traffic = &self.seams.traffic;
        let down = self
            .active
            .as_ref()
            .map(Workload::not_ready)
            .unwrap_or_default();
        let (Some(active), Some(preview)) = (
            traffic.capacity(&self.route, active, &down),
            traffic.capacity(&self.route, preview, &[]),
        ) else {
            return None;
        };
        let capacity = Capacities { active, preview };
        if self.capacity == Some(capacity) {
            return None;
        }
        self.capacity = Some(capacity);
        Some(Input::Capacity(capacity))
    }

    /// Resolves when the preview exits on its own, while its exit still matters to the rollout.
    fn watch_preview(&self) -> futures_util::future::BoxFuture<'static, String> {
        match &self.preview {
            Some(p) if !self.promoted && !self.rollout.is_terminal() => p.exited(),
            _ => Box::pin(futures_util::future::pending()),
        }
    }

    /// A tripped breaker on this route's preview fails the preview (→ rollback); the proxy already
    /// holds it at an effective weight of 0, the machine makes that the configured weight.
    fn proxy_event(&mut self, event: ProxyEvent) {
        if let ProxyEvent::BreakerTripped {
            route,
            backend,
            error_rate,
            requests,
        } = event
        {
            if route == self.route && backend == self.preview_slot() && !self.rollout.is_terminal()
            {
                let reason = format!(
                    "circuit breaker tripped: error rate {:.1}% over {requests} requests",
                    error_rate * 100.0
                );
                self.inputs.push_back(Input::PreviewFailed { reason });
            }
        }
    }

    fn finished(&mut self, done: Done, observer: &mut dyn Observer) {
        match done {
            Done::PreviewHealthy { seq, preview_bp } => {
                if seq == self.weights_seq {
                    self.probe = None;
                    self.apply_weights(preview_bp);
                }
                return;
            }
            Done::PreviewUnhealthy { seq, reason } => {
                if seq == self.weights_seq {
                    let message = format!(
                        "weight increase waits until the preview passes its readiness probe again ({reason})"
                    );
                    tracing::warn!(route = %self.route, rollout = self.rollout.id, backend = %self.preview_backend, "{message}");
                    observer.event(&self.rollout, "PreviewUnhealthy", &message);
                }
                return;
            }
            _ => {}
        }
        self.pending_tasks = self.pending_tasks.saturating_sub(1);
        if matches!(done, Done::Provisioned(_)) {
            self.provisioning = None;
        }
        match done {
            Done::PreviewHealthy { .. } | Done::PreviewUnhealthy { .. } => {}
            Done::Provisioned(Ok(workload)) => self.preview_ready(workload),
            Done::Provisioned(Err(reason)) => {
                self.inputs.push_back(Input::PreviewFailed { reason })
            }
            Done::Analysed { verdict, at } => self.conclude(*verdict, at.map(|at| *at)),
            Done::Gated { at, step, answer } => {
                self.inputs
                    .push_back(Input::GateAnswered { at, step, answer })
            }
            Done::Drained(drain) => self.retire_when_promoted_serves(drain, false),
            Done::UndoDrained { id } => {
                let drain = self.undo_drain.filter(|drain| drain.id == id);
                if let Some(drain) = drain {
                    self.undo_drain = None;
                    if drain.seq == self.weights_seq {
                        // Read now, not at the last poll: the stop follows in this same pass.
                        let capacity = self.capacity_changed();
                        self.inputs.extend(capacity);
                        self.inputs.push_back(Input::WeightsApplied {
                            preview_bp: 0,
                            generation: drain.generation,
                        });
                    }
                }
            }
            Done::ActiveStopped => {
                self.stops_in_flight = self.stops_in_flight.saturating_sub(1);
                self.inputs.push_back(Input::ActiveStopped);
            }
            Done::PreviewStopped => self.stops_in_flight = self.stops_in_flight.saturating_sub(1),
            Done::ProvisionCancelled => {}
        }
    }

    /// Publishes the ready preview's endpoints (at weight 0) before the machine may give it weight.
    fn preview_ready(&mut self, workload: Workload) {
        let slot = self.preview_slot();
        let endpoints = workload.endpoints();
        let protocol = self.preview_spec.protocol;
        match self
            .seams
            .traffic
            .set_endpoints(&self.route, slot, endpoints, protocol)
        {
            Ok(_) => {
                // In the route now: an instance that exits is withdrawn from its traffic.
                workload.attach(RouteGate::shared(
                    self.seams.traffic.clone(),
                    &self.route,
                    slot,
                ));
                self.preview = Some(workload);
                self.inputs.push_back(Input::PreviewReady)
            }
            Err(e) => {
                self.preview = Some(workload);
                self.inputs.push_back(Input::PreviewFailed {
                    reason: e.to_string(),
                })
            }
        }
    }

    fn spawn(&mut self, task: impl std::future::Future<Output = Done> + Send + 'static) {
        self.pending_tasks += 1;
        let tx = self.done_tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(task.await);
        });
    }

    fn execute(&mut self, command: Command, observer: &mut dyn Observer) {
        match command {
            Command::StartPreview => {
                let (driver, spec) = (self.seams.driver.clone(), self.preview_spec.clone());
                let name = spec.label(self.preview_slot()).to_string();
                let cancel = CancellationToken::new();
                if let Some(previous) = self.provisioning.replace(cancel.clone()) {
                    previous.cancel();
                }
                self.probe_log = probe::ProbeLog::default();
                let probes = self.probe_log.clone();
                self.spawn(async move {
                    let result = driver.provision(&name, &spec, cancel, probes).await;
                    match result {
                        Err(DriverError::Cancelled { .. }) => Done::ProvisionCancelled,
                        result => Done::Provisioned(result.map_err(|e| e.to_string())),
                    }
                });
            }
            Command::SetWeights { preview_bp } => {
                // Mirroring runs exactly while the rollout holds a shadow (0%) step.
                let step = matches!(self.rollout.phase, Phase::Progressing | Phase::Paused)
                    && self.rollout.config.is_shadow_step(self.rollout.step);
                self.set_shadow(step && preview_bp == 0);
                self.set_weights(preview_bp)
            }
            Command::OpenWindow => {
                self.shadow_start = self.shadow_snapshot();
                self.window_start = self.snapshots();
                if self.first_window.is_none() {
                    self.first_window = self.window_start.clone();
                }
            }
            Command::Analyse => self.analyse(),
            Command::SwapRoles => self.swap_roles(),
            Command::RevertSwap => self.revert_swap(),
            Command::DrainActive { deadline } => self.drain_active(deadline),
            Command::StopActive => {
                if let Some(active) = self.active.take() {
                    let grace = self.preview_spec.stop_grace;
                    self.stops_in_flight += 1;
                    self.spawn(async move {
                        active.stop(grace).await;
                        Done::ActiveStopped
                    });
                } else {
                    self.inputs.push_back(Input::ActiveStopped);
                }
            }
            Command::StopPreview => self.stop_preview(),
            Command::AskGates { at, step } => {
                let gates = self.rollout.config.gates.clone();
                let context = self.gate_context(step);
                self.spawn(async move {
                    let answer =
                        crate::gates::ask(&gates, at, &context, &crate::headers::LOCAL).await;
                    Done::Gated { at, step, answer }
                });
            }
            Command::Persist => observer.transition(&self.rollout, self.preview.as_ref()),
            Command::Progress { message, evidence } => {
                let (e_value, needed, requests) =
                    (evidence.e_value, evidence.needed, evidence.requests);
                let step = self.rollout.step + 1;
                tracing::info!(route = %self.route, rollout = self.rollout.id, step, e_value, needed, requests, "{message}");
            }
            Command::Event { reason, message } => {
                if is_warning(reason) {
                    tracing::warn!(route = %self.route, rollout = self.rollout.id, backend = %self.preview_backend, version = %self.preview_version(), reason, "{message}");
                } else {
                    tracing::info!(route = %self.route, rollout = self.rollout.id, backend = %self.preview_backend, version = %self.preview_version(), reason, "{message}");
                }
                observer.event(&self.rollout, reason, &message);
            }
        }
    }

    /// Publishes a weight request. A decrease (rollback, abort) is applied at once; an increase first
    /// waits until every preview endpoint passes its readiness probe again, so no weight ever goes to
    /// a preview that is unhealthy now (C02, C10). A newer request supersedes a waiting one.
    fn set_weights(&mut self, preview_bp: u32) {
        self.weights_seq += 1;
        if preview_bp > 0 {
            // The preview gets a share back: a drain for 0 still running answers nothing.
            self.undo_drain = None;
        }
        if let Some(probe) = self.probe.take() {
            probe.abort();
        }
        let endpoints = self.preview.as_ref().map(Workload::endpoints);
        match endpoints {
            Some(endpoints) if preview_bp > self.applied_bp => {
                let (seq, tx) = (self.weights_seq, self.done_tx.clone());
                let readiness = self.preview_spec.readiness.clone();
                let protocol = self.preview_spec.protocol;
                self.probe = Some(tokio::spawn(async move {
                    let mut reported = false;
                    loop {
                        let mut failure = None;
                        for &e in &endpoints {
                            if let Err(why) =
                                probe::get(e, protocol, &readiness.path, readiness.timeout).await
                            {
                                failure = Some(format!("{e}: {why}"));
                                break;
                            }
                        }
                        let Some(reason) = failure else {
                            let _ = tx.send(Done::PreviewHealthy { seq, preview_bp });
                            return;
                        };
                        if !reported {
                            reported = true;
                            let _ = tx.send(Done::PreviewUnhealthy { seq, reason });
                        }
                        tokio::time::sleep(readiness.interval).await;
                    }
                }));
            }
            _ => self.apply_weights(preview_bp),
        }
    }

    fn apply_weights(&mut self, preview_bp: u32) {
        let weights = Weights::with(self.preview_slot(), preview_bp);
        match self.seams.traffic.set_weights(&self.route, weights) {
            Ok(generation) => {
                self.applied_bp = preview_bp;
                self.weights = weights;
                if self.undo_ends(preview_bp) {
                    // The machine hears of 0 (and stops the preview) once the preview drained,
                    // with the active backend's capacity read again then (`finished`).
                    if let Some(drain) = self.undo_drain.as_mut() {
                        // The machine asked for 0 again (at its progress deadline) while the
                        // drain for the last 0 runs: that drain answers this request too and is
                        // not started over, so it ends by its own deadline. Started over, a
                        // preview held past the deadline never drained and the undo never
                        // stopped it (review of session 44).
                        drain.seq = self.weights_seq;
                        drain.generation = generation;
                        return;
                    }
                    self.undo_drains += 1;
                    let id = self.undo_drains;
                    self.undo_drain = Some(UndoDrain {
                        id,
                        seq: self.weights_seq,
                        generation,
                    });
                    let (traffic, route) = (self.seams.traffic.clone(), self.route.clone());
                    let slot = self.preview_slot();
                    let deadline = crossfade_proxy::duration::later(
                        Instant::now(),
                        self.preview_spec.stop_grace,
                    );
                    self.spawn(async move {
                        wait_drained(&*traffic, &route, slot, deadline).await;
                        Done::UndoDrained { id }
                    });
                    return;
                }
                self.inputs.push_back(Input::WeightsApplied {
                    preview_bp,
                    generation,
                })
            }
            Err(e) => {
                tracing::error!(route = %self.route, rollout = self.rollout.id, backend = %self.preview_backend, "cannot set weights {weights:?}: {e}");
                self.inputs.push_back(Input::PreviewFailed {
                    reason: format!("cannot publish weights: {e}"),
                });
            }
        }
    }

    /// Whether `preview_bp` applied ends a rollback or abort that may still give the preview
    /// its share back ([`Rollout::undo_from_bp`]): 0 for a running preview that is not failing
    /// hard. The machine stops the preview once it hears of 0, so the run tells it only after the
    /// preview drained, at the moment of the stop, with the active backend's capacity read then:
    /// an active instance that exited since the rollback was decided keeps the preview serving
    /// (session 44; before, an abort within 15 ms of an active crash stopped the only backend
    /// that could serve, user44b, finding 2). Until then each capacity poll is heard as well.
    fn undo_ends(&self, preview_bp: u32) -> bool {
        preview_bp == 0
            && matches!(self.rollout.phase, Phase::RollingBack | Phase::Aborting)
            && !self.rollout.hard_undo
            && self.rollout.undo_from_bp > 0
            && self.preview.is_some()
    }

    /// Reads both backends' counters and hands the observer what happened since the last reading
    /// (the first reading only sets the baseline). A route the source does not know is skipped.
    fn sample(&mut self, observer: &mut dyn Observer) {
        let m = &self.seams.metrics;
        let (Ok(blue), Ok(green)) = (
            m.snapshot(&self.route, Slot::Blue),
            m.snapshot(&self.route, Slot::Green),
        ) else {
            return;
        };
        let now = Instant::now();
        if let Some((blue0, green0, then)) = &self.sampled {
            let weights = self.weights;
            let seconds = now.duration_since(*then).as_secs_f64();
            let sample = Sample::between(
                unix_now(),
                seconds,
                (blue0, &blue),
                (green0, &green),
                |slot| weights.of(slot),
            );
            observer.sample(sample);
        }
        self.sampled = Some((blue, green, now));
    }

    fn snapshots(&self) -> Option<(BackendSnapshot, BackendSnapshot)> {
        let preview = self.preview_slot();
        let m = &self.seams.metrics;
        match (
            m.snapshot(&self.route, preview),
            m.snapshot(&self.route, preview.other()),
        ) {
            (Ok(p), Ok(a)) => Some((p, a)),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(route = %self.route, rollout = self.rollout.id, backend = %self.preview_backend, "cannot read metrics: {e}");
                None
            }
        }
    }

    /// Judges the window opened by the last conclusive verdict (or `OpenWindow`). A conclusive verdict
    /// closes the window and opens the next one at the same instant; an inconclusive one (too few
    /// preview requests) keeps it open, so the next look judges more traffic instead of another
    /// equally thin slice. The machine still counts every inconclusive look toward its limit.
    /// A window whose observed split is far from the applied weight is never a pass
    /// ([`split::guard`], as in Kubernetes mode).
    ///
    /// With `rollout.analysis.checks`, the judge's verdict waits for the checks (read concurrently
    /// in a task, each bounded by its timeout) and is folded with them before the machine sees it.
    fn analyse(&mut self) {
        let now = self.snapshots();
        if self.rollout.config.is_shadow_step(self.rollout.step) {
            return self.analyse_shadow(now);
        }
        // A cumulative (sequential) judge sees everything since the rollout's first window.
        let start = if self.seams.judge.cumulative() {
            &self.first_window
        } else {
            &self.window_start
        };
        let verdict = match (start, &now) {
            (Some((p0, a0)), Some((p1, a1))) => judge_at(
                &*self.seams.judge,
                self.applied_bp,
                &Window::between(p0, p1),
                &Window::between(a0, a1),
            ),
            // Without readings the window cannot pass: judge an empty one, which is inconclusive.
            _ => self
                .seams
                .judge
                .judge(&Window::default(), &Window::default()),
        };
        // The observed split over the window since the last conclusive verdict (not the
        // cumulative one), as in Kubernetes mode: a window in which the preview served far fewer
        // (or more) requests than its weight asks for, such as none while health checks hold all
        // its endpoints out, is never a pass (case C14), whatever earlier windows proved.
        let verdict = match (&self.window_start, &now) {
            (Some((p0, a0)), Some((p1, a1))) => split::guard(
                verdict,
                self.applied_bp,
                Window::between(p0, p1).requests,
                Window::between(a0, a1).requests,
            ),
            _ => verdict,
        };
        let checks = &self.rollout.config.analysis.checks;
        if checks.is_empty() {
            return self.conclude(verdict, now);
        }
        let (checks, context) = (checks.clone(), self.check_context());
        self.spawn(async move {
            let results = checks::evaluate(&checks, &context, &crate::headers::LOCAL).await;
            Done::Analysed {
                verdict: Box::new(verdict.with_checks(results)),
                at: now.map(Box::new),
            }
        });
    }

    /// Judges a shadow (0%) step by the comparisons made since the window opened and the
    /// preview's response times to the mirrored requests (see [`crate::analysis::shadow`]); an
    /// inconclusive look keeps the window open, as for traffic.
    /// `rollout.analysis.checks` are folded in as at any step.
    fn analyse_shadow(&mut self, at: Option<(BackendSnapshot, BackendSnapshot)>) {
        let now = self.shadow_snapshot();
        let window = match (&self.shadow_start, &now) {
            (Some(start), Some(now)) => Some(now.since(start)),
            _ => None,
        };
        // The active backend's live traffic over the same window, for `max_p99_ratio`.
        let active = match (&self.window_start, &at) {
            (Some((_, a0)), Some((_, a1))) => Window::between(a0, a1),
            _ => Window::default(),
        };
        let analysis = &self.rollout.config.analysis;
        let verdict = crate::analysis::shadow::judge(analysis, window.as_ref(), &active);
        if verdict.outcome != Outcome::Inconclusive || self.shadow_start.is_none() {
            self.shadow_start = now;
        }
        let checks = &self.rollout.config.analysis.checks;
        if checks.is_empty() {
            return self.conclude(verdict, at);
        }
        let (checks, context) = (checks.clone(), self.check_context());
        self.spawn(async move {
            let results = checks::evaluate(&checks, &context, &crate::headers::LOCAL).await;
            Done::Analysed {
                verdict: Box::new(verdict.with_checks(results)),
                at: at.map(Box::new),
            }
        });
    }

    /// The preview's shadow counters now, if the data plane has them.
    fn shadow_snapshot(&self) -> Option<ShadowSnapshot> {
        match self.seams.metrics.shadow(&self.route, self.preview_slot()) {
            Ok(snapshot) => snapshot,
            Err(e) => {
                tracing::error!(route = %self.route, "cannot read shadow counters: {e}");
                None
            }
        }
    }

    /// Turns mirroring to the preview on (with `analysis.shadow.mirror`) or off, when that changes.
    fn set_shadow(&mut self, on: bool) {
        let mirror = self.rollout.config.analysis.shadow.as_ref();
        let Some(mirror) = mirror
            .map(|g| g.mirror.clone())
            .filter(|_| on != self.shadow_on)
        else {
            return;
        };
        let shadow = on.then_some(mirror);
        match self.seams.traffic.set_shadow(&self.route, shadow) {
            Ok(()) => {
                self.shadow_on = on;
                tracing::info!(route = %self.route, on, "shadow traffic to the preview");
            }
            Err(e) => tracing::error!(route = %self.route, on, "cannot set shadow traffic: {e}"),
        }
    }

    /// Hands a finished verdict to the machine; a conclusive one opens the next window at `at`.
    fn conclude(&mut self, verdict: Verdict, at: Option<(BackendSnapshot, BackendSnapshot)>) {
        if verdict.outcome != Outcome::Inconclusive || self.window_start.is_none() {
            self.window_start = at;
        }
        self.inputs.push_back(Input::Verdict(verdict));
    }

    /// What a gate is told about the rollout, for `step` (0-based).
    fn gate_context(&self, step: usize) -> GateContext {
        let vars = self.check_context();
        // After completion the roles have swapped: the promoted slot is still this rollout's preview.
        let preview = if self.rollout.phase == crate::rollout::Phase::Completed {
            self.rollout.active
        } else {
            self.preview_slot()
        };
        GateContext {
            route: self.route.clone(),
            rollout: self.rollout.id,
            phase: self.rollout.phase.as_str().to_string(),
            step: step + 1,
            steps: self.rollout.config.steps.len(),
            preview_weight_bp: self.rollout.config.weight_bp(step),
            preview: preview.to_string(),
            active: preview.other().to_string(),
            preview_version: vars.get("preview_version").to_string(),
            active_version: vars.get("active_version").to_string(),
        }
    }

    /// The template variables of the checks for the current step.
    fn check_context(&self) -> Context {
        let preview = self.preview_slot();
        let preview_version = self
            .preview
            .as_ref()
            .map(|w| w.name().to_string())
            .or_else(|| self.preview_spec.name.clone())
            .unwrap_or_else(|| preview.to_string());
        let active_version = self.active_name.clone();
        Context::new(
            &self.route,
            &preview.to_string(),
            &preview.other().to_string(),
            &preview_version,
            &active_version,
            self.rollout.config.interval_of(self.rollout.step),
        )
    }

    fn swap_roles(&mut self) {
        let slot = self.preview_slot();
        match self.seams.traffic.promote_slot(&self.route, slot) {
            Ok(_) => {
                self.weights = Weights::all_to(slot);
                self.promoted = true;
                // Still the route's owner until the end, but no longer one that can be paused or
                // aborted: a refused manual write says so (trial report 6, F13).
                let owner = RouteOwner {
                    rollout: self.rollout.id,
                    promoted: true,
                };
                if let Err(e) = self.seams.traffic.claim(&self.route, owner) {
                    tracing::warn!(route = %self.route, rollout = self.rollout.id, "cannot record the promotion on the route's owner: {e}");
                }
                // It serves now: a crash of one of its instances is restarted, not a rollback.
                if let (Some(preview), Some(events)) = (&self.preview, &self.seams.supervisor) {
                    preview.supervise(slot, events.clone());
                }
                self.inputs.push_back(Input::RolesSwapped);
            }
            Err(e) => {
                tracing::error!(route = %self.route, rollout = self.rollout.id, backend = %self.preview_backend, "cannot swap roles: {e}");
                self.inputs.push_back(Input::PreviewFailed {
                    reason: format!("cannot swap roles: {e}"),
                });
            }
        }
    }

    /// An operator's abort of a held retirement ([`Command::RevertSwap`]): the former active
    /// backend, still running and drained, is the active slot again with all the traffic, in one
    /// table generation; the run no longer counts as promoted, so the service keeps it as the
    /// serving workload. The promoted backend is stopped by the [`Command::StopPreview`] that
    /// follows (its endpoints removed first, which ends the old one's backup role).
    fn revert_swap(&mut self) {
        self.retire_held = None;
        let old = self.rollout.active;
        match self.seams.traffic.promote_slot(&self.route, old) {
            Ok(_) => {
                self.weights = Weights::all_to(old);
                self.promoted = false;
                let owner = RouteOwner {
                    rollout: self.rollout.id,
                    promoted: false,
                };
                if let Err(e) = self.seams.traffic.claim(&self.route, owner) {
                    tracing::warn!(route = %self.route, rollout = self.rollout.id, "cannot record the abort on the route's owner: {e}");
                }
                if let (Some(active), Some(events)) = (&self.active, &self.seams.supervisor) {
                    active.supervise(old, events.clone());
                }
            }
            Err(e) => {
                tracing::error!(route = %self.route, rollout = self.rollout.id, backend = %old, "cannot give all traffic back to {old}: {e}");
            }
        }
    }

    /// Waits until the old active backend has no request in flight and no upgraded connection open
    /// (or the deadline, when its upgraded connections are closed), then removes its endpoints from
    /// the table, which drops its pool and closes its idle connections.
    fn drain_active(&mut self, deadline: Instant) {
        let (traffic, route) = (self.seams.traffic.clone(), self.route.clone());
        let old = self.preview_slot().other();
        self.spawn(
            async move { Done::Drained(wait_drained(&*traffic, &route, old, deadline).await) },
        );
    }

    /// The retiring backend has drained: its endpoints are removed from the table (which drops
    /// its pool) and the machine hears [`Input::ActiveDrained`], after which it is stopped; but
    /// not while the promoted backend cannot serve (every instance exited and waiting for its
    /// supervised restart or not ready again, or every endpoint held out by the proxy's health,
    /// or for static endpoints re-admitted only by its ejection's end, [`TrafficSetter::on_probation`]):
    /// the retiring backend keeps its endpoints and, as the route's backup
    /// ([`TrafficSetter::promote_slot`]), takes the requests the promoted one cannot serve, and
    /// this is tried again at each capacity poll ([`CAPACITY_POLL`]); the machine hears
    /// [`Input::RetireHeld`] once, so that the status and an event say why the old backend still
    /// runs. DESIGN: a rollout never
    /// leaves a route with no healthy backend while one exists; a promoted green that crashed
    /// while blue drained had blue stopped, and clients got 502 until green was back (trial 32,
    /// C). A data plane that does not report capacity retires at once, as before.
    fn retire_when_promoted_serves(&mut self, drain: Drain, held: bool) {
        let promoted = self.preview_slot();
        let old = promoted.other();
        let mut down = self
            .preview
            .as_ref()
            .map(Workload::not_ready)
            .unwrap_or_default();
        // A supervised instance says when it is ready again; static endpoints do not, and one
        // that the proxy re-admitted only because its ejection ran out has shown nothing yet.
        if !self.preview_spec.is_command() {
            down.extend(self.seams.traffic.on_probation(&self.route, promoted));
        }
        let serves = self
            .seams
            .traffic
            .capacity(&self.route, promoted, &down)
            .is_none_or(|c| c.healthy > 0);
        if !serves {
            if !held {
                // The machine says it (event `RetireHeld`, the message) and drops its deadline.
                self.inputs.push_back(Input::RetireHeld);
            }
            self.retire_held = Some(drain);
            return;
        }
        if held {
            tracing::info!(route = %self.route, rollout = self.rollout.id, backend = %old, "{promoted} ({}) can serve again: retiring {old}", self.preview_version());
        }
        if let Err(e) =
            self.seams
                .traffic
                .set_endpoints(&self.route, old, Vec::new(), Default::default())
        {
            tracing::warn!(route = %self.route, rollout = self.rollout.id, backend = %old, "cannot remove {old} endpoints after drain: {e}");
        }
        if drain.deadline_passed {
            self.inputs.push_back(Input::DrainDeadlinePassed {
                in_flight: drain.in_flight,
                closed_upgraded: drain.closed_upgraded,
            });
        }
        self.inputs.push_back(Input::ActiveDrained);
    }

    fn stop_preview(&mut self) {
        if let Some(start) = self.provisioning.take() {
            // Still starting: the driver stops what it started and the run ends when it has.
            tracing::info!(route = %self.route, rollout = self.rollout.id, backend = %self.preview_backend, "cancelling the preview's start");
            start.cancel();
        }
        let slot = self.preview_slot();
        if let Err(e) =
            self.seams
                .traffic
                .set_endpoints(&self.route, slot, Vec::new(), Default::default())
        {
            tracing::warn!(route = %self.route, rollout = self.rollout.id, backend = %self.preview_backend, "cannot remove {slot} endpoints: {e}");
        }
        if let Some(preview) = self.preview.take() {
            let grace = self.preview_spec.stop_grace;
            let (traffic, route) = (self.seams.traffic.clone(), self.route.clone());
            let (id, backend, version) = (
                self.rollout.id,
                self.preview_backend.to_string(),
                self.preview_version().to_string(),
            );
            self.stops_in_flight += 1;
            self.spawn(async move {
                // Requests already dispatched to the preview finish before it is stopped.
                wait_drained(
                    &*traffic,
                    &route,
                    slot,
                    crossfade_proxy::duration::later(Instant::now(), grace),
                )
                .await;
                preview.stop(grace).await;
                // Trial 9, I11: the log said nothing when the preview's processes went away.
                tracing::info!(route = %route, rollout = id, backend = %backend, version = %version, "preview workload stopped");
                Done::PreviewStopped
            });
        }
    }
}

/// How a drain ended ([`wait_drained`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drain {
    /// True when the deadline passed before nothing held the backend.
    pub deadline_passed: bool,
    /// Requests still in flight when the drain ended (0 unless the deadline passed).
    pub in_flight: u64,
    /// Upgraded connections closed at the deadline.
    pub closed_upgraded: u64,
}

/// Polls what holds `slot` (requests in flight, upgraded connections) until both have read 0 for
/// [`DRAIN_SETTLE`], or `deadline` passes. At the deadline, upgraded connections still open are
/// closed ([`TrafficSetter::close_upgraded`]: 1001 "going away" for WebSockets) and waited for, at
/// most [`CLOSE_GRACE`] more, so the backend is stopped only after they ended cleanly.
pub async fn wait_drained<T: TrafficSetter + ?Sized>(
    traffic: &T,
    route: &str,
    slot: Slot,
    deadline: Instant,
) -> Drain {
    let mut zero_since: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return close_at_deadline(traffic, route, slot).await;
        }
        if traffic.held(route, slot).is_empty() {
            let since = *zero_since.get_or_insert(now);
            if now.duration_since(since) >= DRAIN_SETTLE {
                return Drain::default();
            }
        } else {
            zero_since = None;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// The drain deadline passed: closes the upgraded connections left and waits for them to end.
async fn close_at_deadline<T: TrafficSetter + ?Sized>(
    traffic: &T,
    route: &str,
    slot: Slot,
) -> Drain {
    let held = traffic.held(route, slot);
    let mut closed_upgraded = 0;
    if held.upgraded > 0 {
        closed_upgraded = traffic.close_upgraded(route, slot);
        let until = Instant::now() + CLOSE_GRACE;
        while traffic.held(route, slot).upgraded > 0 && Instant::now() < until {
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }
    let left = traffic.held(route, slot);
    if !held.is_empty() {
        tracing::warn!(
            %route, backend = %slot, closed_upgraded, in_flight = left.in_flight,
            upgraded = left.upgraded, "drain deadline passed"
        );
    }
    Drain {
        deadline_passed: !held.is_empty(),
        in_flight: left.in_flight,
        closed_upgraded,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => futures_util::future::pending().await,
    }
}

/// The next proxy event; never resolves without a receiver or once the proxy is gone. A lagging
/// receiver skips what it missed.
async fn next_event(events: &mut Option<broadcast::Receiver<ProxyEvent>>) -> ProxyEvent {
    loop {
        let Some(receiver) = events.as_mut() else {
            return std::future::pending().await;
        };
        match receiver.recv().await {
            Ok(event) => return event,
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => *events = None,
        }
    }
}

/// Whether `command` acts on the world (workloads, weights, roles, the drain), so that the
/// transition it comes from must be saved first ([`Observer::save`]).
/// Whether the step from `before` to `after` sends traffic back to the active backend before
/// any role swap (a rollback or an abort, or one of their steps): such a transition may act when
/// its state cannot be saved (trial 13, N1's family), because a restart from the state last saved
/// (which is at or behind `before`, so before the role swap too) rolls the rollout back as well
/// ([`crate::state::ServiceState::recover`]). Holding it instead would keep users on a failing
/// preview and refuse the operator's abort for as long as the disk is full.
fn back_to_active(before: &Rollout, after: &Rollout) -> bool {
    !matches!(
        before.phase,
        Phase::Promoted | Phase::Retiring | Phase::Completed
    ) && matches!(
        after.phase,
        Phase::RollingBack | Phase::RolledBack | Phase::Aborting | Phase::Aborted
    )
}

fn acts(command: &Command) -> bool {
    match command {
        Command::StartPreview
        | Command::SetWeights { .. }
        | Command::SwapRoles
        | Command::RevertSwap
        | Command::DrainActive { .. }
        | Command::StopActive
        | Command::StopPreview => true,
        Command::OpenWindow
        | Command::Analyse
        | Command::AskGates { .. }
        | Command::Persist
        | Command::Progress { .. }
        | Command::Event { .. } => false,
    }
}

/// Whether an event with `reason` is logged at WARN rather than INFO: the rollout went wrong or
/// was stopped (a rollback and what caused it, an abort, a refused gate), or the promoted backend
/// cannot serve and the old one is kept for it (`RetireHeld`), so that log-based alerting sees it
/// (trial 9, I11). An active instance's crash is already ERROR.
pub fn is_warning(reason: &str) -> bool {
    matches!(
        reason,
        "AnalysisFailed"
            | "RolledBack"
            | "Aborting"
            | "Aborted"
            | "PreviewExited"
            | "PreviewFailed"
            | "DeadlineExceeded"
            | "GateRejected"
            | "AbortForced"
            | "StateNotSaved"
            | "RetireHeld"
    )
}

#[cfg(test)]
mod tests;
