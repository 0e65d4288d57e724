//! The TrafficShift controller: drives the same pure rollout machine as `crossfade run`
//! ([`crate::rollout::Rollout`]) for each TrafficShift, through the Kubernetes driver
//! ([`crate::driver::kube`]), the status store ([`super::store`]) and a [`MetricsSource`](crate::traffic::MetricsSource).
//!
//! A reconcile is level-triggered and never sleeps: it loads the machine (from memory, or from
//! `status.rolloutState` after a restart, answering [`crate::rollout::Input::Reattached`]), feeds it a tick and what
//! the cluster shows (the preview Deployment available, the target rolled out), executes the
//! commands the machine returns, and asks to be called again at the machine's next timer, or
//! sooner while it waits on the cluster. Every transition is written to status before its actions
//! run (the machine's write-ahead `Persist`) and published as a Kubernetes Event on the
//! TrafficShift.
//!
//! Traffic: "publishing weights" writes them to `status.weights` with the next generation; they
//! count as applied once every live proxy replica that serves the route reports that generation in
//! its Lease ([`super::proxies`]): the reconcile looks again every [`ACK_POLL`] meanwhile, and a
//! Lease whose applied generations change wakes it at once. The analysis reads the proxies'
//! counters through [`ClusterMetrics`], refreshed right before each read; each window's observed
//! split is checked against the weight ([`crate::analysis::split`]). Retiring waits until the
//! proxies have applied the preview's weight 0 and its in-flight requests and upgraded connections
//! are 0 across them, or the drain deadline.
//!
//! Rollback capacity: from provisioning to the end of a rollback, each reconcile first reads the
//! backends' ready endpoints from their Services' EndpointSlices and gives the machine
//! [`crate::rollout::Input::Capacity`] ([`super::capacity`]), so that a rollback or abort gives
//! the target its traffic back no faster than its ready endpoints can carry it; while it holds
//! traffic on the preview for that, the reconcile looks again every [`POLL`].

mod commands;
mod exec;
pub mod invalid;
mod machine;
mod older;
mod reloads;
mod status;

#[cfg(test)]
mod api_tests;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DynamicObject};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Error as FinalizerError, Event as Finalized};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

pub use older::TARGET_UNKNOWN;
pub(crate) use older::{name_older_target, OlderTarget};
pub use status::{status_of, step_progress, ANNOTATIONS_VALID, COMPLETED, PROGRESSING, PROMOTED};

use super::backoff::Backoff;
use super::crd::TrafficShift;
use super::prometheus::PrometheusSources;
use super::proxies::{changed_routes, Proxies, APPLIED, PROXY_SELECTOR};
use super::scrape::ClusterMetrics;
use super::store::StoreError;
use super::FIELD_MANAGER;
use crate::driver::kube::{KubeDriver, KubeDriverError};
use crate::metrics::{RolloutMetrics, RouteMetrics};
use machine::Machine;

/// How often a reconcile looks again while it waits on the cluster (a preview becoming available,
/// the target rolling out) and no watch event arrives.
pub const POLL: Duration = Duration::from_secs(2);

/// How often a reconcile looks again while it waits for the proxies: to apply published weights,
/// or to drain the retiring backend.
pub const ACK_POLL: Duration = Duration::from_secs(1);

/// The longest one reconcile (or cleanup) of a TrafficShift may take. A reconcile normally takes
/// well under a second (a few API requests, scrapes bounded at 5 s each); one held up by an API
/// request that never answers is dropped at this bound, as a crash would drop it: the rollout is
/// re-read from status at the retry (write-ahead, so nothing done is forgotten), instead of the
/// TrafficShift waiting for the client's read timeout (kube's default: 295 s).
pub const RECONCILE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the TrafficShift controller shares between reconciles.
pub struct Context {
    client: Client,
    driver: KubeDriver,
    proxies: Proxies,
    metrics: Arc<dyn ClusterMetrics>,
    /// The Prometheus servers that TrafficShifts read their counters from instead
    /// (`spec.rollout.analysis.metricsSource`).
    prometheus: PrometheusSources,
    recorder: Recorder,
    /// Who publishes the Events (the reporter of `recorder`), for [`Context::recorder_for`].
    reporter: Reporter,
    /// The last note published per TrafficShift uid and reason, with the resourceVersion it
    /// named ([`Context::recorder_for`]).
    notes: Mutex<HashMap<(String, String), LastNote>>,
    /// The machines of the rollouts in progress, by TrafficShift uid; a reconcile takes its entry
    /// out and puts it back (kube-runtime never runs two reconciles of one object at once).
    machines: Mutex<HashMap<String, Machine>>,
    /// Failed reconciles in a row, by TrafficShift uid.
    backoff: Backoff,
    /// The TrafficShifts whose rollout this process has loaded, with what their reloads are to
    /// say ([`reloads::Reloads::reload_of`]).
    reloads: reloads::Reloads,
    /// The controller's metric families ([`crate::metrics`]), unregistered unless
    /// [`Context::with_metrics`] was given a registered bundle.
    rollout_metrics: RolloutMetrics,
    /// Each route's view of them, by route `namespace/name`; an [`exec::Exec`] takes its entry
    /// out and puts it back when it ends.
    route_metrics: Mutex<HashMap<String, RouteMetrics>>,
    /// The controller's cache of TrafficShifts, to tell which one owns a Deployment
    /// ([`other_owner`]); `None` (a context without a controller, in tests) checks nothing.
    shifts: Option<Store<DynamicObject>>,
    /// How often a reconcile looks again while it waits on the cluster ([`POLL`] unless
    /// [`Context::polling_every`] set another).
    poll: Duration,
}

/// The resourceVersion an Event named and its note.
type LastNote = (Option<String>, String);

/// Reason of the Normal Event that says a rollout was reloaded from status after a failed
/// reconcile of this process: the rollout machine's for [`crate::rollout::Reattach::Reload`],
/// where the first load in a process (a controller restart) says `Restarted`. Published once per
/// kind of failure until a reconcile succeeds ([`reloads::Reloads::reload_of`]).
pub const RELOADED: &str = "Reloaded";

/// Why a reconcile failed; the machine is then dropped from memory and re-read from status at
/// the next reconcile, which re-issues whatever was in flight.
#[derive(Debug, thiserror::Error)]
pub enum ShiftError {
    /// A Deployment or Service could not be read or written.
    #[error(transparent)]
    Driver(#[from] KubeDriverError),
    /// The status could not be written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A deleted TrafficShift's rollout is still returning traffic to the target (or finishing
    /// its promotion); the finalizer stays until it has ended and the preview is gone.
    #[error("trafficshift {shift} is being deleted: waiting for its rollout to end ({phase})")]
    Finalizing {
        /// `namespace/name`.
        shift: String,
        /// The phase, in words.
        phase: &'static str,
    },
    /// The proxies' Leases could not be listed (in which namespace: [`super::proxies::ListError`]).
    #[error(transparent)]
    Proxies(#[from] super::proxies::ListError),
    /// The reconcile did not finish within [`RECONCILE_TIMEOUT`] (an API request that never
    /// answered) and was dropped; the rollout resumes from status at the retry.
    #[error("trafficshift {shift}: reconcile did not finish within {}s (an API request that never answered); dropped, the rollout resumes from status", RECONCILE_TIMEOUT.as_secs())]
    TimedOut {
        /// `namespace/name`.
        shift: String,
    },
    /// The TrafficShift could not be read.
    #[error("trafficshift {shift}: read: {}", crate::kube::api_error_words(source))]
    Read {
        /// `namespace/name`.
        shift: String,
        /// The API error.
        source: kube::Error,
    },
}

/// Why the controller cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// The API server does not serve `trafficshifts.crossfade.dev/v1alpha1`.
    #[error("the TrafficShift CRD (trafficshifts.crossfade.dev, v1alpha1) is not installed in this cluster; install it with `kubectl apply -f deploy/crd/trafficshift.yaml` (or `crossfade crdgen | kubectl apply -f -`)")]
    CrdMissing,
    /// The API server could not be asked.
    #[error("cannot reach the Kubernetes API to check for the TrafficShift CRD: {}", crate::kube::api_error_words(.0))]
    Unreachable(#[source] kube::Error),
    /// What must be watched may not be listed (a 401 or 403).
    #[error(transparent)]
    Refused(#[from] WatchRefused),
    /// The API server took the connection but did not answer within [`PREFLIGHT_TIMEOUT`].
    #[error("no answer within {}s to the check for the TrafficShift CRD (the server took the connection: is it a Kubernetes API server, and is it up?)", PREFLIGHT_TIMEOUT.as_secs())]
    NoAnswer,
}

/// How long the API server has to answer [`preflight`]: kube bounds only the connection (30 s) and
/// no read, so a server that takes the connection and never answers (a hung API server, a port
/// that is not one) held `crossfade controller --kube` and `proxy --kube` at start for ever
/// (trial 23).
pub const PREFLIGHT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

// === impl Context ===

impl Context {
    /// A context reading the proxy replicas from `proxies` and analysis counters from `metrics`
    /// (keyed by route `namespace/name`, backend `blue` the target's pods, `green` the preview's).
    pub fn new(client: Client, proxies: Proxies, metrics: Arc<dyn ClusterMetrics>) -> Context {
        Context {
            driver: KubeDriver::new(client.clone()),
            proxies,
            recorder: Recorder::new(client.clone(), FIELD_MANAGER.into()),
            reporter: FIELD_MANAGER.into(),
            notes: Mutex::new(HashMap::new()),
            client,
            metrics,
            prometheus: PrometheusSources::default(),
            machines: Mutex::new(HashMap::new()),
            backoff: Backoff::default(),
            reloads: reloads::Reloads::default(),
            rollout_metrics: RolloutMetrics::default(),
            route_metrics: Mutex::new(HashMap::new()),
            shifts: None,
            poll: POLL,
        }
    }

    /// A reconcile waiting on the cluster (a preview becoming available, the target rolling out,
    /// a rollback's capacity) looks again every `poll` instead of every 2 s ([`POLL`]), as well
    /// as at each watch event that concerns it. The tests lengthen it to show that a change is
    /// acted on at its watch event, not at the next poll.
    pub fn polling_every(mut self, poll: Duration) -> Context {
        self.poll = poll;
        self
    }

    /// Tells which TrafficShift owns a Deployment from `shifts` (the controller's cache of
    /// TrafficShifts): the others targeting it are refused ([`other_owner`]).
    pub fn with_shifts(mut self, shifts: Store<DynamicObject>) -> Context {
        self.shifts = Some(shifts);
        self
    }

    /// Feeds `metrics` (registered by the caller, e.g. in the registry `crossfade controller
    /// --kube --metrics` serves) from every transition and Event, with route `namespace/name`.
    pub fn with_metrics(mut self, metrics: RolloutMetrics) -> Context {
        self.rollout_metrics = metrics;
        self
    }

    /// The route's metrics, out of the map (created, its counters at 0, when first seen).
    fn take_route_metrics(&self, route: &str) -> RouteMetrics {
        let taken = self
            .route_metrics
            .lock()
            .ok()
            .and_then(|mut map| map.remove(route));
        taken.unwrap_or_else(|| self.rollout_metrics.route(route))
    }

    fn put_route_metrics(&self, route: String, metrics: RouteMetrics) {
        if let Ok(mut map) = self.route_metrics.lock() {
            map.insert(route, metrics);
        }
    }

    /// Events name `instance` (the replica, e.g. its pod name) as their reporting instance.
    pub fn reporting_as(mut self, instance: &str) -> Context {
        self.reporter = reporter(instance);
        self.recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        self
    }

    /// The Recorder to publish `note` with `reason` about the TrafficShift `uid` at
    /// `resource_version`. kube's Recorder folds an Event of the same reason about the same
    /// object reference (resourceVersion included) into a series of the first, which keeps the
    /// first note whatever the later ones say: green's `TargetUnready` ("has had no ready pod
    /// either ... not rolled back onto blue") published a second after blue's, with no status
    /// write between, was shown only as blue's note counted twice (trial 30; the test
    /// `kube::ready::a_target_without_a_ready_pod_is_never_rolled_back_onto` failed about one run
    /// in four). A note that differs from the last one of that reason and resourceVersion gets a
    /// Recorder of its own, so a new Event; the same note again is still a series.
    fn recorder_for(
        &self,
        uid: &str,
        reason: &str,
        resource_version: Option<&String>,
        note: &str,
    ) -> Recorder {
        let key = (uid.to_owned(), reason.to_owned());
        let now = (resource_version.cloned(), note.to_owned());
        let last = self.notes.lock().ok().and_then(|mut n| n.insert(key, now));
        match last {
            Some((version, last)) if version.as_ref() == resource_version && last != note => {
                Recorder::new(self.client.clone(), self.reporter.clone())
            }
            _ => self.recorder.clone(),
        }
    }

    /// What a load of TrafficShift `uid`'s rollout from status is to say when nothing was in
    /// memory: `None` the first time in this process, else a reload ([`reloads::Reloads::reload_of`]).
    fn reload_of(&self, uid: &str) -> Option<machine::Reload> {
        self.reloads.reload_of(uid)
    }

    /// A reconcile of TrafficShift `uid` succeeded: its backoff and its failure are forgotten.
    fn succeeded(&self, uid: &str) {
        self.backoff.succeeded(uid);
        self.reloads.succeeded(uid);
    }

    /// TrafficShift `uid` is gone (its finalizer removed, or deleted without it): nothing of it
    /// is kept. Before (session 40) its reload record and the last note of each Event reason it
    /// had were kept for the life of the process, one set per TrafficShift ever reconciled.
    fn forget(&self, uid: &str) {
        self.backoff.succeeded(uid);
        self.reloads.forget(uid);
        if let Ok(mut notes) = self.notes.lock() {
            notes.retain(|(of, _), _| of != uid);
        }
        if let Ok(mut machines) = self.machines.lock() {
            machines.remove(uid);
        }
    }

    fn take(&self, uid: &str) -> Option<Machine> {
        self.machines.lock().ok()?.remove(uid)
    }

    fn put(&self, uid: String, machine: Machine) {
        if let Ok(mut machines) = self.machines.lock() {
            machines.insert(uid, machine);
        }
    }
}

/// Reason of `Progressing=False` (and of a Normal Event) for a TrafficShift whose target already
/// runs its images when its rollout would start: none starts.
pub const UP_TO_DATE: &str = "UpToDate";

/// Reason of `Progressing=False` (and of a Warning Event) for a TrafficShift whose
/// `spec.deployment` does not exist when its rollout would start: it starts once it does.
pub const DEPLOYMENT_MISSING: &str = "DeploymentMissing";

/// Reason of a Warning Event for a TrafficShift deleted while its rollout record says the
/// rollout has ended but `status.weights` still gives the preview a share (written by another
/// client): that share goes back to the target before the preview is deleted (session 40).
pub const PREVIEW_SHARE_LEFT: &str = "PreviewShareLeft";

/// Reason of `Progressing=False` (and of a Warning Event) for a TrafficShift whose problem is
/// outside `spec`: a name no Service can be made after ([`crate::kube::crd::name`]), or an
/// object that does not decode outside `spec` ([`invalid`]). Nothing is rolled out.
pub const INVALID_OBJECT: &str = "InvalidObject";

/// The finalizer Crossfade puts on every TrafficShift it reconciles: a deleted TrafficShift stays
/// until its rollout has returned all traffic to the target (or finished its promotion) and the
/// preview is deleted.
pub const FINALIZER: &str = "crossfade.dev/rollout";

/// Reconciles one TrafficShift, as the watch delivers it (a dynamic object), under the
/// [`FINALIZER`] (kube-runtime's `finalizer` helper): adds it first; while the TrafficShift lives,
/// decodes it ([`invalid::typed`]) and [`reconcile`]s it, or shows why it does not decode
/// ([`invalid::refuse`]) or which of its `spec` fields the schema does not have
/// ([`crate::kube::crd::unknown_fields`], `InvalidSpec`); once it is being deleted, [`cleanup`]; each bounded by
/// [`RECONCILE_TIMEOUT`].
///
/// # Errors
/// [`FinalizerError`] wrapping [`ShiftError`] (also [`ShiftError::TimedOut`]), or the finalizer
/// patches' API errors.
pub async fn reconcile_finalized(
    object: Arc<DynamicObject>,
    ctx: Arc<Context>,
) -> Result<Action, FinalizerError<ShiftError>> {
    let ns = object.namespace().unwrap_or_else(|| "default".into());
    let api = invalid::api(ctx.client.clone(), &ns);
    let key = invalid::key(&object);
    finalizer(&api, FINALIZER, object, |event| async {
        let work = async {
            match event {
                Finalized::Apply(object) => match invalid::typed(&object) {
                    // Fields the schema does not have (a typo in a policy key) are refused as
                    // an invalid spec with its other problems, rather than ignored (trial 10,
                    // K11).
                    Ok(shift) => {
                        let spec = object.data.get("spec");
                        let unknown = spec.map(crate::kube::crd::unknown_fields);
                        let unknown = unknown.unwrap_or_default();
                        Box::pin(reconcile_with(Arc::new(shift), ctx.clone(), unknown)).await
                    }
                    Err(_) => Box::pin(reconcile_undecodable(&object, &ctx)).await,
                },
                Finalized::Cleanup(object) => {
                    let uid = object.uid().unwrap_or_else(|| object.name_any());
                    let ended = match invalid::typed(&object) {
                        Ok(shift) => Box::pin(cleanup(Arc::new(shift), &ctx)).await,
                        Err(problem) => Box::pin(cleanup_undecodable(&object, problem, &ctx)).await,
                    };
                    // Done: the finalizer goes, and the TrafficShift with it (session 40).
                    if ended.is_ok() {
                        ctx.forget(&uid);
                    }
                    ended
                }
            }
        };
        // On the heap: the reconcile's state machine is large (in a debug build over a megabyte
        // of stack with its polls), and a move of it by value into `timeout` overflowed the 2 MiB
        // stack of a current-thread test runtime that polls the controller (session 30).
        match tokio::time::timeout(RECONCILE_TIMEOUT, Box::pin(work)).await {
            Ok(result) => result,
            Err(_) => Err(ShiftError::TimedOut { shift: key }),
        }
    })
    .await
}

/// A TrafficShift being deleted: its rollout is aborted if it can be (before promotion: all
/// traffic back to the target, then the preview deleted, as an abort does), else finishes
/// (after promotion); `Ok` once it has ended and the preview is gone, and the finalizer is then
/// removed. Never starts a rollout (the deletion bumped the generation; it is not a new spec).
/// With no rollout record in status, or one whose rollout has ended, while `status.weights` still
/// gives the preview a share (the record removed, or the weights written, by another client),
/// that share goes back to the target first, as an abort sends it
/// ([`machine::left_share_rollout`]), before the preview is deleted.
///
/// # Errors
/// [`ShiftError::Finalizing`] while the rollout has not ended yet (looked at again within 2 s),
/// or API errors.
pub async fn cleanup(shift: Arc<TrafficShift>, ctx: &Context) -> Result<Action, ShiftError> {
    let uid = shift.uid().unwrap_or_else(|| shift.name_any());
    let in_memory = take_running(ctx, &uid);
    let shift = match in_memory {
        Some(_) => shift,
        None => match fresh(ctx, &shift).await? {
            Fresh::Shift(fresh) => Arc::from(fresh),
            Fresh::Gone => return Ok(Action::await_change()),
            Fresh::Undecodable(object, problem) => {
                return cleanup_undecodable(&object, problem, ctx).await
            }
            Fresh::TargetUnknown(object, why) => {
                return older::refuse_deleted(ctx, &object, why).await
            }
        },
    };
    Box::pin(end_deleted(shift, in_memory, ctx)).await
}

/// [`cleanup`] of `shift` as read (decoded, or built from its record when it does not decode),
/// with the machine that was in memory, if any.
async fn end_deleted(
    shift: Arc<TrafficShift>,
    in_memory: Option<Machine>,
    ctx: &Context,
) -> Result<Action, ShiftError> {
    let uid = shift.uid().unwrap_or_else(|| shift.name_any());
    let mut left = None;
    let (machine, mut inputs) = match in_memory {
        Some(m) => (m, vec![crate::rollout::Input::Tick]),
        // A reload after a failed cleanup says so as one (session 40: it said `Restarted`).
        None => match super::store::ShiftRecord::from_status(&shift) {
            Some(record) if !machine::ended_with_share(&record, &shift) => {
                machine::reattach(record, ctx.reload_of(&uid))
            }
            // No record (session 39), or one that has ended (session 40), while the split still
            // gives the preview a share: that share goes back to the target first, as an abort
            // sends it.
            record => {
                let config = shift.spec.rollout.to_config().unwrap_or_default();
                let Some(machine) = machine::left_share_rollout(&shift, config, record.as_ref())
                else {
                    // Nothing was ever started; a preview of a lost record goes anyway.
                    ctx.driver.delete_preview(&shift).await?;
                    return Ok(Action::await_change());
                };
                let then = format!(
                    "trafficshift deleted: returning that share to deployment {} first; the preview is deleted once the proxies applied it",
                    machine.record.target(&shift)
                );
                left = left_preview_share(&shift, record.as_ref(), &then);
                (machine, Vec::new())
            }
        },
    };
    // What the rollout rolls out (its target Deployment, not one a newer spec names), at its own
    // generation, so that no new rollout starts.
    let mut pinned = machine.record.rolled_out(&shift);
    pinned.metadata.generation = Some(machine.record.generation);
    let pinned = Arc::new(pinned);
    let exec = exec::Exec::new(ctx, pinned.clone());
    if let Some((reason, note)) = &left {
        say_share_left(&exec, &shift, reason, note).await;
    }
    let phase = machine.record.rollout.phase;
    if matches!(
        phase,
        crate::rollout::Phase::Pending
            | crate::rollout::Phase::Provisioning
            | crate::rollout::Phase::Progressing
            | crate::rollout::Phase::Paused
    ) {
        let note = format!(
            "trafficshift deleted {}: aborting the rollout, all traffic back to deployment {}, then the preview is deleted and the finalizer removed",
            phase.words(),
            pinned.spec.deployment
        );
        exec.event("Deleting", &note).await;
        inputs.push(crate::rollout::Input::Abort(
            crate::rollout::AbortCause::Deleted,
        ));
    }
    let (_, machine) = exec.run(machine, inputs).await?;
    let r = &machine.record.rollout;
    if r.is_terminal() && ctx.driver.delete_preview(&pinned).await? {
        ctx.succeeded(&uid);
        let route = crate::driver::kube::key(&*shift);
        ctx.take_route_metrics(&route).forget(); // trial 10, K19: every series goes
        return Ok(Action::await_change()); // the finalizer goes; the machine is forgotten
    }
    let phase = r.phase.words();
    ctx.put(uid, machine);
    Err(ShiftError::Finalizing {
        shift: crate::driver::kube::key(&*shift),
        phase,
    })
}

/// The target Deployment of `shift`'s spec, read now, and each container of `spec.images` it
/// does not have ([`crate::driver::kube::missing_containers`]): a spec error, shown as
/// `InvalidSpec` before any preview is made. Before (session 42) the preview failed on it and the
/// rollout rolled back, and a retry failed the same way. Not read (`None`, no problem) while a
/// rollout of this generation runs (a target changed under it is that rollout's to handle), nor
/// when `spec.deployment` is no Deployment's name (said by the spec's own check).
///
/// # Errors
/// [`ShiftError`] when the target cannot be read.
async fn containers_checked(
    ctx: &Context,
    shift: &TrafficShift,
    in_memory: Option<&Machine>,
) -> Result<(Option<Option<Deployment>>, Vec<String>), ShiftError> {
    let generation = shift.metadata.generation.unwrap_or(1);
    let current =
        |r: &super::store::ShiftRecord| r.generation == generation && !r.rollout.is_terminal();
    let runs = match in_memory {
        Some(m) => current(&m.record),
        None => super::store::ShiftRecord::from_status(shift).is_some_and(|r| current(&r)),
    };
    if runs || crate::kube::crd::name::check_object_name(&shift.spec.deployment).is_err() {
        return Ok((None, Vec::new()));
    }
    let target = ctx.driver.target(shift).await?;
    let missing = target.as_ref().map_or_else(Vec::new, |t| {
        crate::driver::kube::missing_containers(shift, t)
    });
    Ok((Some(target), missing))
}

/// The rollout of TrafficShift `uid` in memory, unless it has ended: a deletion reads an ended
/// one from status again ([`fresh`]), whose `status.weights` may give the preview a share that
/// its record does not (written by another client: [`machine::ended_with_share`]). Before
/// (session 40), a TrafficShift deleted while this process had its ended rollout in memory lost
/// its preview at once, whatever the proxies still sent it.
fn take_running(ctx: &Context, uid: &str) -> Option<Machine> {
    ctx.take(uid).filter(|m| !m.record.rollout.is_terminal())
}

/// Reconciles one TrafficShift: see the module docs.
///
/// # Errors
/// [`ShiftError`] when the API fails; the rollout resumes from status at the next attempt.
pub async fn reconcile(shift: Arc<TrafficShift>, ctx: Arc<Context>) -> Result<Action, ShiftError> {
    reconcile_with(shift, ctx, Vec::new()).await
}

/// [`reconcile`], with `unknown`: the `spec` fields the schema does not have, in words, one
/// item each. An invalid spec (these, and what [`crate::kube::crd::TrafficShiftSpec::validated`]
/// refuses, all named at once) supersedes a rollout of an earlier generation still
/// running (aborted before promotion, finished after it); the problem is shown (`InvalidSpec`)
/// once none runs.
async fn reconcile_with(
    shift: Arc<TrafficShift>,
    ctx: Arc<Context>,
    unknown: Vec<String>,
) -> Result<Action, ShiftError> {
    let uid = shift.uid().unwrap_or_else(|| shift.name_any());
    let in_memory = ctx.take(&uid);
    // A rollout not in memory is loaded from the API, not from the watch cache, which may not have
    // seen this controller's last status write yet.
    let shift = match in_memory {
        Some(_) => shift,
        None => match fresh(&ctx, &shift).await? {
            Fresh::Shift(fresh) => Arc::from(fresh),
            Fresh::Gone => {
                ctx.forget(&uid); // deleted meanwhile
                return Ok(Action::await_change());
            }
            Fresh::Undecodable(object, _) => {
                return Box::pin(reconcile_undecodable(&object, &ctx)).await
            }
            Fresh::TargetUnknown(object, why) => return older::refuse(&ctx, &object, why).await,
        },
    };
    let exec = exec::Exec::new(&ctx, shift.clone());
    // Checked first: no Service could be made under this name (trial 30).
    if let Err(why) = crate::kube::crd::name::check_shift_name(&shift.name_any()) {
        if let Some(machine) = in_memory {
            ctx.put(uid, machine);
        }
        let message = format!(
            "metadata.name: {why}; nothing is rolled out: recreate it under such a name (for a trafficshift of the annotation trigger, apply one of such a name with spec.deployment: {} instead)",
            shift.spec.deployment
        );
        return exec
            .not_started(INVALID_OBJECT, message, Action::await_change())
            .await;
    }
    if let Some(owner) = ctx
        .shifts
        .as_ref()
        .and_then(|s| other_owner(&shift, &s.state()))
    {
        let running = |r: &super::store::ShiftRecord| !r.rollout.is_terminal();
        let in_flight = in_memory.as_ref().map(|m| &m.record).is_some_and(running)
            || super::store::ShiftRecord::from_status(&shift).is_some_and(|r| running(&r));
        // A rollout already under way (the cache lagged when it started) ends as it would.
        if !in_flight {
            let target = ctx.driver.target(&shift).await?;
            let annotations = target
                .and_then(|t| t.metadata.annotations)
                .unwrap_or_default();
            let previous = shift.status.as_ref().and_then(|s| s.commands.clone());
            let previous = previous.unwrap_or_default();
            let (mut seen, _) = super::command::stale(&annotations, &previous, None);
            seen.last = previous.last;
            let message = format!(
                "deployment {} is already rolled out by trafficshift {owner} (the older one): this one does nothing, and commands on the deployment reach only {owner}; delete this one, or {owner} first",
                shift.spec.deployment
            );
            return exec.conflict(message, seen).await;
        }
    }
    // The images against the target's containers too, before any preview is made (session 42).
    let (read, missing) = containers_checked(&ctx, &shift, in_memory.as_ref()).await?;
    let checked = match (shift.spec.validated(unknown), missing.is_empty()) {
        (checked, true) => checked,
        (Ok(_), false) => Err(missing.join("\n")),
        (Err(e), false) => Err(format!("{e}\n{}", missing.join("\n"))),
    };
    let config = match checked {
        Ok(config) => config,
        Err(e) => {
            // A rollout of an earlier generation still running is superseded (or finishes,
            // after promotion) rather than left standing at its weights (trial 34).
            let reload = in_memory.is_none().then(|| ctx.reload_of(&uid)).flatten();
            return match machine::load_superseded(in_memory, &shift, reload) {
                machine::Earlier::Running(machine, inputs) => {
                    Box::pin(supersede_invalid(exec, machine, inputs, e, uid, &ctx)).await
                }
                machine::Earlier::Ended(machine) => {
                    if let Some(machine) = machine {
                        ctx.put(uid, machine);
                    }
                    exec.refuse(e).await
                }
            };
        }
    };
    let generation = shift.metadata.generation.unwrap_or(1);
    // The rollout this reconcile resumes (in memory, else in status): another id after loading
    // and the commands means a new rollout started here.
    let resumed = match &in_memory {
        Some(m) => Some(m.record.rollout.id),
        None => super::store::ShiftRecord::from_status(&shift).map(|r| r.rollout.id),
    };
    // No rollout record yet (a new TrafficShift): the nonces already on the Deployment are not
    // for it (kube/command.rs, `stale`).
    let first = in_memory.is_none() && super::store::ShiftRecord::from_status(&shift).is_none();
    let reload = in_memory.is_none().then(|| ctx.reload_of(&uid)).flatten();
    let (mut machine, inputs) = machine::load(in_memory, &shift, config.clone(), reload);
    // Operator commands are annotations on the target Deployment (kube/command.rs), read fresh:
    // the rollout's own, which a newer spec naming another supersedes.
    let rolled_out = machine.record.rolled_out(&shift);
    let target = match read {
        Some(read) if rolled_out.spec.deployment == shift.spec.deployment => read,
        _ => ctx.driver.target(&rolled_out).await?,
    };
    let exec = exec.target(target.as_ref());
    // A rollout about to start (a new TrafficShift, or a new spec after an ended rollout) that
    // has nothing to roll out, or no Deployment to roll out yet, does not start (trial 10, K5
    // and K17): no Services, no preview, no terminal state to retry from.
    // A record removed from status by another client while the split it published still gives
    // the preview a share (after promotion: all of it): the rollout starts even though the
    // target runs the images, as its first step returns that share to the target; `UpToDate`
    // would leave it on the preview, and the preview undeleted, for good (session 38).
    let then = format!(
        "starting a rollout of the spec, whose first step returns that share to deployment {}",
        shift.spec.deployment
    );
    let left_share = first
        .then(|| left_preview_share(&shift, None, &then))
        .flatten();
    if let Some((reason, note)) = &left_share {
        say_share_left(&exec, &shift, reason, note).await;
    }
    if machine.record.rollout.phase == crate::rollout::Phase::Pending && left_share.is_none() {
        if status::shows_not_progressing_for(&shift, UP_TO_DATE) {
            return Ok(Action::await_change()); // this generation was found rolled out already
        }
        match &target {
            None => {
                let message = format!(
                    "spec.deployment: deployment {} does not exist; the rollout starts once it does",
                    shift.spec.deployment
                );
                let action = Action::requeue(exec::CONFLICT_POLL);
                return exec.not_started(DEPLOYMENT_MISSING, message, action).await;
            }
            Some(target) if crate::driver::kube::runs_images(target, &shift) => {
                let message = format!(
                    "deployment {} already runs {}: nothing to roll out",
                    shift.spec.deployment,
                    shift.spec.images_text()
                );
                return exec
                    .not_started(UP_TO_DATE, message, Action::await_change())
                    .await;
            }
            Some(_) => {}
        }
    }
    // The target deleted under a running rollout: said at once, rather than as a step the
    // proxies never apply at the progress deadline (trial 10, K17). Before promotion only: after
    // it, the preview is what serves, and it keeps serving.
    let target_deleted = target.is_none()
        && matches!(
            machine.record.rollout.phase,
            crate::rollout::Phase::Progressing | crate::rollout::Phase::Paused
        );
    let annotations = match target {
        Some(target) => target.metadata.annotations.unwrap_or_default(),
        None => Default::default(),
    };
    if first {
        if let Some(note) = commands::forget_stale(&mut machine, &shift, &annotations) {
            exec.event("StaleCommandIgnored", &note).await;
        }
    }
    let (mut machine, inputs, notes) =
        commands::apply(machine, inputs, &annotations, &config, &shift);
    if machine.record.images.is_none() && machine.record.generation == generation {
        machine.record.images = Some(shift.spec.images.clone());
    }
    for (reason, note) in notes {
        exec.event(reason, &note).await;
    }
    // A valid policy the proxies' buckets cannot decide exactly (a maxP99 between bucket
    // bounds): said once per rollout, as a Warning Event and in the log.
    if resumed != Some(machine.record.rollout.id) {
        for warning in shift.spec.rollout.warnings() {
            tracing::warn!(trafficshift = %crate::driver::kube::key(&*shift), "{warning}");
            exec.event("InexactBound", &warning).await;
        }
    }
    let mut inputs = inputs;
    if target_deleted {
        let reason = format!(
            "spec.deployment: deployment {} was deleted during the rollout; the preview cannot be promoted into it",
            rolled_out.spec.deployment
        );
        inputs.push(crate::rollout::Input::TargetChanged { reason });
    }
    let result = exec.run(machine, inputs).await;
    match result {
        Ok((action, machine)) => {
            ctx.succeeded(&uid);
            ctx.put(uid, machine);
            Ok(action)
        }
        Err(e) => Err(e),
    }
}

/// Runs a rollout of an earlier generation that an invalid spec (`problems`, in words)
/// supersedes: aborted before promotion, finished after it ([`machine::load_superseded`] gave
/// `machine` and `inputs`), acting on the rollout's own target Deployment and taking the command
/// annotations on it; `exec` is for the TrafficShift as read.
async fn supersede_invalid(
    exec: exec::Exec<'_>,
    machine: Machine,
    inputs: Vec<crate::rollout::Input>,
    problems: String,
    uid: String,
    ctx: &Context,
) -> Result<Action, ShiftError> {
    let shift = machine.record.rolled_out(exec.live());
    let target = ctx.driver.target(&shift).await?;
    let annotations = target
        .as_ref()
        .and_then(|t| t.metadata.annotations.clone())
        .unwrap_or_default();
    let config = machine.record.rollout.config.clone();
    let mut own = shift.clone();
    own.metadata.generation = Some(machine.record.generation);
    let (machine, inputs, notes) = commands::apply(machine, inputs, &annotations, &config, &own);
    let exec = exec.target(target.as_ref()).invalid_spec(problems);
    for (reason, note) in notes {
        exec.event(reason, &note).await;
    }
    let (action, machine) = exec.run(machine, inputs).await?;
    ctx.succeeded(&uid);
    ctx.put(uid, machine);
    Ok(action)
}

/// A TrafficShift that does not decode (watched as `object`; read again here). A rollout of an earlier
/// generation still under way (in memory, else in `status.rolloutState`) is superseded as by a
/// spec that decodes but is invalid ([`supersede_invalid`]): aborted before promotion, finished
/// after it, from its record alone; the object's status is written all the same
/// ([`crate::kube::store::StatusStore`] reads the answers untyped). Otherwise, and once that
/// rollout has ended, the problem is shown ([`invalid::refuse`]) until the object changes.
/// Before, such a rollout stood at its weights with no analysis, no progress deadline and no
/// command acted on until the object was fixed (`spec.rollout.hold: 9000h`, which the schema's
/// pattern lets in).
///
/// # Errors
/// API errors; the rollout resumes from status at the retry.
async fn reconcile_undecodable(
    object: &DynamicObject,
    ctx: &Arc<Context>,
) -> Result<Action, ShiftError> {
    // As the API server has it now: the watch cache may not have seen this controller's last
    // status write, whose resourceVersion guards the next.
    let (object, problem) = match fresh_object(ctx, object).await? {
        None => {
            ctx.forget(&object.uid().unwrap_or_else(|| object.name_any()));
            return Ok(Action::await_change());
        }
        Some(fresh) => match invalid::typed(&fresh) {
            Ok(shift) => return Box::pin(reconcile(Arc::new(shift), ctx.clone())).await,
            Err(problem) => (fresh, problem),
        },
    };
    let mut object = object;
    let uid = object.uid().unwrap_or_else(|| object.name_any());
    let in_memory = ctx.take(&uid);
    if in_memory.is_none() {
        if let Some(why) = older::name_target(ctx, &mut object).await? {
            return older::refuse(ctx, &object, why).await;
        }
    }
    let record = match &in_memory {
        Some(m) => Some(m.record.clone()),
        None => record_in(&object),
    };
    let Some(record) = record else {
        return invalid::refuse(&object, &problem, ctx).await;
    };
    let shift = Arc::new(of_record(&object, &record));
    // A reload after a failed reconcile says so as one (session 40: it said `Restarted`).
    let reload = in_memory.is_none().then(|| ctx.reload_of(&uid)).flatten();
    match machine::load_superseded(in_memory, &shift, reload) {
        machine::Earlier::Running(machine, inputs) => {
            let exec = exec::Exec::new(ctx, shift);
            let problems = problem.to_string();
            Box::pin(supersede_invalid(exec, machine, inputs, problems, uid, ctx)).await
        }
        machine::Earlier::Ended(machine) => {
            if let Some(machine) = machine {
                ctx.put(uid, machine);
            }
            invalid::refuse(&object, &problem, ctx).await
        }
    }
}

/// The rollout record in a TrafficShift's `status.rolloutState` read untyped, if one decodes.
pub(crate) fn record_in(object: &DynamicObject) -> Option<super::store::ShiftRecord> {
    let state = object.data.get("status")?.get("rolloutState")?;
    serde_json::from_value(state.clone()).ok()
}

/// A TrafficShift that does not decode, as its rollout `record` rolls it out: `object`'s
/// metadata and status (as far as it decodes; at least the record), and a spec of the record's
/// target Deployment, images and `unreadyGrace` (the policy is in the record), with `object`'s
/// `spec.route` when that decodes (and its `spec.deployment` for a record that names none).
pub(crate) fn of_record(
    object: &DynamicObject,
    record: &super::store::ShiftRecord,
) -> TrafficShift {
    let mut base = readable(object);
    base.status = base.status.or_else(|| {
        Some(crate::kube::crd::TrafficShiftStatus {
            rollout_state: serde_json::to_value(record).ok(),
            ..Default::default()
        })
    });
    record.rolled_out(&base)
}

/// A TrafficShift that does not decode, as far as it does: `object`'s metadata, its
/// `spec.deployment` when that is a name (a record of an older version may not name its target)
/// and its `spec.route` and `status` when they decode; the rest of the spec empty.
fn readable(object: &DynamicObject) -> TrafficShift {
    let data = &object.data;
    let mut base = bare(object);
    let deployment = data.pointer("/spec/deployment").and_then(|d| d.as_str());
    base.spec.deployment = deployment.unwrap_or_default().to_owned();
    let route = data.pointer("/spec/route");
    base.spec.route = route.and_then(|r| serde_json::from_value(r.clone()).ok());
    let status = data.get("status");
    base.status = status.and_then(|s| serde_json::from_value(s.clone()).ok());
    base
}

/// A TrafficShift of `object`'s name and metadata, with an empty spec: for what is found by
/// name and owner alone (the preview, the Services).
fn bare(object: &DynamicObject) -> TrafficShift {
    let spec = crate::kube::crd::TrafficShiftSpec {
        deployment: String::new(),
        images: Default::default(),
        rollout: Default::default(),
        route: None,
    };
    let mut shift = TrafficShift::new(&object.name_any(), spec);
    shift.metadata = object.metadata.clone();
    shift
}

/// Why a rollout must run for a TrafficShift with no rollout record in its status, or with one
/// whose rollout has ended (`record`), when `status.weights` still gives the preview a share (the
/// record was removed, or the weights written, by another client: a new TrafficShift has no
/// published weights, and an ended rollout leaves the preview 0%), ending with `then`, what is
/// done about it: the reason of the Warning Event that says so (`RolloutRecordMissing`, or
/// `PreviewShareLeft` for an ended rollout) and its note.
fn left_preview_share(
    shift: &TrafficShift,
    record: Option<&super::store::ShiftRecord>,
    then: &str,
) -> Option<(&'static str, String)> {
    let weights = machine::left_share(shift)?;
    let (reason, what) = match record {
        None => (
            "RolloutRecordMissing",
            "status.rolloutState is missing".to_owned(),
        ),
        Some(r) => (
            PREVIEW_SHARE_LEFT,
            format!("rollout {} {}", r.rollout.id, r.rollout.phase.words()),
        ),
    };
    let note = format!(
        "{what} while status.weights still gives the preview {} (generation {}): {then}",
        weights.preview, weights.generation
    );
    Some((reason, note))
}

/// Says [`left_preview_share`]'s `note` about `shift` in the log and as a Warning Event of
/// `reason`.
async fn say_share_left(exec: &exec::Exec<'_>, shift: &TrafficShift, reason: &str, note: &str) {
    tracing::warn!(trafficshift = %crate::driver::kube::key(shift), "{note}");
    exec.event(reason, note).await;
}

/// `object` as the API server has it now, untyped; `None` when it is gone.
async fn fresh_object(
    ctx: &Context,
    object: &DynamicObject,
) -> Result<Option<DynamicObject>, ShiftError> {
    let ns = object.namespace().unwrap_or_else(|| "default".into());
    invalid::api(ctx.client.clone(), &ns)
        .get_opt(&object.name_any())
        .await
        .map_err(|source| ShiftError::Read {
            shift: invalid::key(object),
            source,
        })
}

/// A TrafficShift as the API server has it now.
enum Fresh {
    /// It decodes.
    Shift(Box<TrafficShift>),
    /// It is gone.
    Gone,
    /// It no longer decodes (changed since the watch delivered it).
    Undecodable(Box<DynamicObject>, crate::kube::crd::DecodeError),
    /// Its rollout record, of an older version, names no target Deployment and none can be told
    /// (why, in words: [`older::name_target`]).
    TargetUnknown(Box<DynamicObject>, String),
}

/// The TrafficShift as the API server has it now, read as a dynamic object and decoded here,
/// its rollout record given its target when an older version's names none
/// ([`older::name_target`]). For a reconcile with no rollout in memory: the record is loaded
/// from it.
async fn fresh(ctx: &Context, shift: &TrafficShift) -> Result<Fresh, ShiftError> {
    let ns = shift.namespace().unwrap_or_else(|| "default".into());
    let read = invalid::api(ctx.client.clone(), &ns)
        .get_opt(&shift.name_any())
        .await
        .map_err(|source| ShiftError::Read {
            shift: crate::driver::kube::key(shift),
            source,
        })?;
    let Some(mut object) = read else {
        return Ok(Fresh::Gone);
    };
    if let Some(why) = older::name_target(ctx, &mut object).await? {
        return Ok(Fresh::TargetUnknown(Box::new(object), why));
    }
    Ok(match invalid::typed(&object) {
        Ok(shift) => Fresh::Shift(Box::new(shift)),
        Err(problem) => Fresh::Undecodable(Box::new(object), problem),
    })
}

/// A deleted TrafficShift that does not decode (`problem`). A rollout under way (in memory, else
/// in `status.rolloutState` as the API server has it now) ends from its record as for one that
/// decodes ([`cleanup`]: aborted before promotion, finished after it, then the preview deleted
/// and the finalizer removed); before, the finalizer stayed until the object was fixed. With
/// none under way the preview, if one is left, is deleted and the finalizer goes; with no record
/// at all, or one whose rollout has ended, while `status.weights` still gives the preview a share,
/// that share goes back to the target first ([`end_deleted`], from what of the object decodes:
/// [`readable`]).
///
/// # Errors
/// [`ShiftError::Finalizing`] while the rollout has not ended or the preview is not gone yet, or
/// API errors.
async fn cleanup_undecodable(
    object: &DynamicObject,
    problem: crate::kube::crd::DecodeError,
    ctx: &Context,
) -> Result<Action, ShiftError> {
    let uid = object.uid().unwrap_or_else(|| object.name_any());
    let in_memory = take_running(ctx, &uid);
    let fresh = match &in_memory {
        Some(_) => None,
        None => match fresh_object(ctx, object).await? {
            None => return Ok(Action::await_change()),
            Some(mut fresh) => {
                if let Some(why) = older::name_target(ctx, &mut fresh).await? {
                    return older::refuse_deleted(ctx, &fresh, why).await;
                }
                match invalid::typed(&fresh) {
                    Ok(shift) => return Box::pin(end_deleted(Arc::new(shift), None, ctx)).await,
                    Err(_) => Some(fresh),
                }
            }
        },
    };
    let object = fresh.as_ref().unwrap_or(object);
    let record = match &in_memory {
        Some(m) => Some(m.record.clone()),
        None => record_in(object),
    };
    // A record that has ended while the split still gives the preview a share: returned first
    // (session 40), as with none (session 39).
    let shift = readable(object);
    let left = machine::left_share(&shift).is_some();
    match record {
        Some(record) if !record.rollout.is_terminal() || left => {
            tracing::info!(trafficshift = %invalid::key(object), "deleted while it does not decode ({problem}): ending its rollout from the record");
            let shift = Arc::new(of_record(object, &record));
            return Box::pin(end_deleted(shift, in_memory, ctx)).await;
        }
        None if left => return Box::pin(end_deleted(Arc::new(shift), None, ctx)).await,
        _ => {}
    }
    // The preview is found by name and owner uid only: the spec is not needed.
    if ctx.driver.delete_preview(&bare(object)).await? {
        return Ok(Action::await_change());
    }
    Err(ShiftError::Finalizing {
        shift: invalid::key(object),
        phase: "ended; deleting the preview",
    })
}

/// Logs the error and retries with exponential backoff: 5 s after the first failure in a row,
/// doubling up to 5 min; a successful reconcile resets it. A deletion waiting for its rollout to
/// end ([`ShiftError::Finalizing`]) is looked at again within 2 s, without backoff.
pub fn error_policy(
    shift: Arc<DynamicObject>,
    err: &FinalizerError<ShiftError>,
    ctx: Arc<Context>,
) -> Action {
    if let FinalizerError::CleanupFailed(e @ ShiftError::Finalizing { .. }) = err {
        tracing::debug!(trafficshift = %shift.name_any(), "{e}");
        return Action::requeue(POLL);
    }
    let uid = shift.uid().unwrap_or_else(|| shift.name_any());
    let wait = ctx.backoff.failed(&uid);
    ctx.reloads.failed(&uid, err);
    tracing::warn!(trafficshift = %shift.name_any(), error = %err, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}

/// Checks that the API server serves TrafficShifts (the CRD is installed).
///
/// # Errors
/// [`PreflightError::CrdMissing`] with the install command, [`PreflightError::Unreachable`], or
/// [`PreflightError::NoAnswer`] after [`PREFLIGHT_TIMEOUT`].
pub async fn preflight(client: &Client) -> Result<(), PreflightError> {
    let ask = client.list_api_group_resources("crossfade.dev/v1alpha1");
    let answer = tokio::time::timeout(PREFLIGHT_TIMEOUT, ask)
        .await
        .map_err(|_| PreflightError::NoAnswer)?;
    match answer {
        Ok(list) if list.resources.iter().any(|r| r.name == "trafficshifts") => Ok(()),
        Ok(_) => Err(PreflightError::CrdMissing),
        Err(kube::Error::Api(s)) if s.is_not_found() => Err(PreflightError::CrdMissing),
        Err(e) => Err(PreflightError::Unreachable(e)),
    }
}

/// The controller may not watch what it needs: its list of `resource` was refused (401 or 403).
#[derive(Debug, thiserror::Error)]
#[error("cannot list {resource} {scope}: {words}; {fix}")]
pub struct WatchRefused {
    /// `trafficshifts.crossfade.dev` or `deployments.apps`.
    pub resource: &'static str,
    /// `in namespace shop (--namespace)` or `in every namespace (no --namespace given)`.
    pub scope: String,
    /// The API server's answer ([`crate::kube::api_error_words`]).
    pub words: String,
    /// What to grant, or for a 401 the credentials.
    pub fix: String,
}

/// Checks, once at start, that the controller may list what it watches (TrafficShifts and
/// Deployments, in `namespace` or in every namespace): a refusal (401, 403) is returned naming
/// the resource, the scope and the grant it needs. Before, a ServiceAccount without them started,
/// became ready and led, and its watches failed for ever with a WARN and kube's debug dump of the
/// answer, rolling nothing out (trial 30). Any other failure (not answering within
/// [`PREFLIGHT_TIMEOUT`], a 5xx) passes: the watches retry it as before.
///
/// # Errors
/// [`WatchRefused`].
pub async fn check_watches(client: &Client, namespace: Option<&str>) -> Result<(), WatchRefused> {
    let resources = [
        ("trafficshifts.crossfade.dev", invalid::resource()),
        (
            "deployments.apps",
            kube::api::ApiResource::erase::<Deployment>(&()),
        ),
    ];
    check_lists(
        client,
        namespace,
        &resources,
        "the controller's ServiceAccount",
    )
    .await
}

/// [`check_watches`] for any `resources` (`(name for people, resource)`) that `account` (`the
/// proxy's ServiceAccount`) must list and watch; `crossfade proxy --kube` checks its
/// TrafficShifts and EndpointSlices so.
///
/// # Errors
/// [`WatchRefused`].
pub async fn check_lists(
    client: &Client,
    namespace: Option<&str>,
    resources: &[(&'static str, kube::api::ApiResource)],
    account: &str,
) -> Result<(), WatchRefused> {
    for (resource, ar) in resources {
        let resource = *resource;
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
            None => Api::all_with(client.clone(), ar),
        };
        let listed = tokio::time::timeout(
            PREFLIGHT_TIMEOUT,
            api.list_metadata(&kube::api::ListParams::default().limit(1)),
        )
        .await;
        let Ok(Err(error @ kube::Error::Api(_))) = listed else {
            continue;
        };
        let code = match &error {
            kube::Error::Api(s) => s.code,
            _ => 0,
        };
        if code != 401 && code != 403 {
            continue;
        }
        let (scope, grant) = match namespace {
            Some(ns) => (
                format!("in namespace {ns} (--namespace)"),
                format!("in namespace {ns} (a Role and RoleBinding)"),
            ),
            None => (
                "in every namespace (no --namespace given)".to_owned(),
                "cluster-wide (a ClusterRole and ClusterRoleBinding), or give --namespace"
                    .to_owned(),
            ),
        };
        let fix = match code {
            401 => "the API server refused the credentials (the ServiceAccount token, or the kubeconfig's user)".to_owned(),
            _ => format!("{account} needs get, list and watch on {resource} {grant}"),
        };
        return Err(WatchRefused {
            resource,
            scope,
            words: crate::kube::api_error_words(&error),
            fix,
        });
    }
    Ok(())
}

/// Runs the TrafficShift controller in `options.namespace` (all namespaces when `None`) until
/// dropped, reading the proxies' Leases through `proxies`. It watches TrafficShifts and
/// Deployments: a preview Deployment wakes its owner, a target Deployment the TrafficShifts that
/// target it (the one of the same name, which the annotation trigger creates, and any whose
/// `spec.deployment` it is or whose rollout record names it); and the proxies' Leases: a change
/// of a route's applied generation wakes that route's TrafficShift. Its Events name
/// `options.instance` as reporting instance when given (the replica's identity). The analysis
/// reads `options.metrics`; transitions and Events feed `options.rollout_metrics`
/// ([`Context::with_metrics`]). While it waits on the cluster, a reconcile looks again every
/// `options.poll` ([`Context::polling_every`]; `crossfade controller --kube`: 2 s).
pub async fn run(client: Client, options: &super::Controllers, proxies: Proxies) {
    let namespace = options.namespace.as_deref();
    let resource = invalid::resource();
    let (shifts, deploys): (Api<DynamicObject>, Api<Deployment>) = match namespace {
        Some(ns) => (
            Api::namespaced_with(client.clone(), ns, &resource),
            Api::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all_with(client.clone(), &resource),
            Api::all(client.clone()),
        ),
    };
    let leases = proxies.apis();
    // Dynamic objects, decoded per object in the reconcile: see `invalid`.
    let controller = Controller::new_with(shifts, watcher::Config::default(), resource);
    let store = controller.store();
    let mut ctx = Context::new(client, proxies, options.metrics.clone())
        .with_metrics(options.rollout_metrics.clone())
        .with_shifts(store.clone())
        .polling_every(options.poll);
    if let Some(instance) = &options.instance {
        ctx = ctx.reporting_as(instance);
    }
    let ctx = Arc::new(ctx);
    let lease_config = watcher::Config::default().labels(PROXY_SELECTOR);
    let mut controller = controller.watches(deploys, watcher::Config::default(), move |d| {
        shifts_of(&d, &store.state())
    });
    // One watch per trusted namespace of proxy Leases (`--proxy-namespace`), or one of all.
    for leases in leases {
        controller = controller.watches(leases, lease_config.clone(), acked_shifts(namespace));
    }
    controller
        .run(reconcile_finalized, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "trafficshift reconcile loop");
            }
        })
        .await;
}

/// The TrafficShifts a Deployment's change concerns: its controller owner when that is a
/// TrafficShift (the preview), else the TrafficShift of the same name (the one the trigger makes)
/// and every TrafficShift in `known` that targets it: whose `spec.deployment` it is, or whose
/// rollout record names it ([`record_target`]: the rollout acts on it until it has ended, after
/// an edit of `spec.deployment` too). Its annotations carry their commands, and its readiness is
/// what their rollout waits for. Before (session 35), only `spec.deployment` was matched: after
/// that edit, the recorded Deployment's changes (rolled out during the role swap) were seen only
/// at the next poll.
fn shifts_of(deploy: &Deployment, known: &[Arc<DynamicObject>]) -> Vec<ObjectRef<DynamicObject>> {
    let Some(ns) = deploy.namespace() else {
        return Vec::new();
    };
    let owner = deploy
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true) && r.kind == "TrafficShift");
    if let Some(owner) = owner {
        return vec![ObjectRef::new_with(&owner.name, invalid::resource()).within(&ns)];
    }
    let name = deploy.name_any();
    let mut refs = vec![ObjectRef::new_with(&name, invalid::resource()).within(&ns)];
    for shift in known {
        let deployment = shift
            .data
            .pointer("/spec/deployment")
            .and_then(|d| d.as_str());
        let named = deployment == Some(&name) || record_target(shift) == Some(&name);
        let targets = named && shift.namespace().as_deref() == Some(&ns);
        if targets && shift.name_any() != name {
            refs.push(ObjectRef::new_with(&shift.name_any(), invalid::resource()).within(&ns));
        }
    }
    refs
}

/// The target Deployment a TrafficShift's rollout record names, read untyped from
/// `status.rolloutState`: its `deployment`, else (a record of an older version) the target of its
/// promotion words (`rollout.promotion.target`); `None` without either.
fn record_target(shift: &DynamicObject) -> Option<&str> {
    let state = shift.data.pointer("/status/rolloutState")?;
    let deployment = state.get("deployment").and_then(|d| d.as_str());
    let promotion = || state.pointer("/rollout/promotion/target");
    deployment.or_else(|| promotion().and_then(|d| d.as_str()))
}

/// The TrafficShift that owns (rolls out, and takes the commands of) `shift`'s Deployment, when
/// that is another one: of every TrafficShift in `known` (the controller's cache) and `shift`
/// itself that targets the same Deployment in the same namespace, the one created first
/// (`metadata.creationTimestamp`; one without sorts last), then the first by name. One being
/// deleted still owns it until it is gone (its rollout is ending). `None` when `shift` owns it.
pub fn other_owner(shift: &TrafficShift, known: &[Arc<DynamicObject>]) -> Option<String> {
    let ns = shift.namespace();
    let name = shift.name_any();
    let key = |created: Option<k8s_openapi::jiff::Timestamp>, name: String| {
        (created.is_none(), created, name)
    };
    let mine = key(
        shift.metadata.creation_timestamp.as_ref().map(|t| t.0),
        name.clone(),
    );
    known
        .iter()
        .filter(|o| o.namespace() == ns && o.name_any() != name)
        .filter(|o| {
            let deployment = o.data.pointer("/spec/deployment").and_then(|d| d.as_str());
            deployment == Some(shift.spec.deployment.as_str())
        })
        .map(|o| {
            let created = o.metadata.creation_timestamp.as_ref().map(|t| t.0);
            key(created, o.name_any())
        })
        .filter(|other| *other < mine)
        .min()
        .map(|(_, _, name)| name)
}

/// The Event reporter `crossfade` with `instance` as reporting instance.
pub(super) fn reporter(instance: &str) -> kube::runtime::events::Reporter {
    kube::runtime::events::Reporter {
        controller: FIELD_MANAGER.into(),
        instance: Some(instance.to_owned()),
    }
}

/// The mapper of Lease changes to the TrafficShifts they concern: the routes whose applied
/// generation moved since the Lease was last seen (a renewal that changes nothing wakes nothing),
/// restricted to `namespace` when the controller watches one.
fn acked_shifts(
    namespace: Option<&str>,
) -> impl Fn(Lease) -> Vec<ObjectRef<DynamicObject>> + Send + Sync + 'static {
    let seen: Mutex<HashMap<String, std::collections::BTreeMap<String, u64>>> =
        Mutex::new(HashMap::new());
    let namespace = namespace.map(str::to_owned);
    move |lease: Lease| {
        let key = format!(
            "{}/{}",
            lease.namespace().unwrap_or_default(),
            lease.name_any()
        );
        let applied = lease
            .annotations()
            .get(APPLIED)
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or_default();
        let Ok(mut seen) = seen.lock() else {
            return Vec::new();
        };
        let routes = changed_routes(seen.get(&key), Some(&applied));
        seen.insert(key, applied);
        routes
            .iter()
            .filter_map(|route| route.split_once('/'))
            .filter(|(ns, _)| namespace.as_deref().is_none_or(|want| want == *ns))
            .map(|(ns, name)| ObjectRef::new_with(name, invalid::resource()).within(ns))
            .collect()
    }
}
