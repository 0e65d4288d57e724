//! One reconcile of a TrafficShift: feed the machine, execute its commands against the cluster,
//! write status, publish Events.

mod revisions;

use std::collections::VecDeque;
use std::sync::Arc;

use crossfade_proxy::weight::Slot;
use crossfade_proxy::BackendSnapshot;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};

use super::machine::{initial, next_action, promotion_of, Machine, Pending};
use super::status::{
    invalid_spec, not_progressing, shows_invalid, shows_not_progressing, status_of,
};
use super::{Context, ShiftError};
use crate::analysis::{judge_at, split, Outcome, Window};
use crate::driver::kube::{key, preview_name, AppliedPreview, Availability, KubeDriverError};
use crate::kube::capacity;
use crate::kube::crd::TrafficShift;
use crate::kube::proxies::{acks, serving, Ack, Replica};
use crate::kube::scrape::ClusterMetrics;
use crate::kube::store::StatusStore;
use crate::metrics::{DeploymentInfo, RouteMetrics};
use crate::rollout::{AbortCause, Command, Input, Phase};
pub(super) use revisions::Observed;

/// Longest Event note the API accepts (1 kB); longer notes are cut.
const MAX_NOTE: usize = 1024;

/// Most inputs one reconcile feeds; a guard against a loop between observation and machine.
const MAX_INPUTS: usize = 64;

/// How long published weights may wait for the proxies before a Warning Event `WeightsNotApplied`
/// says which replicas are behind (once per publication; the progress deadline still decides).
const ACK_REPORT_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// How often a TrafficShift refused for a [`Exec::conflict`] looks again (the owner's deletion
/// does not wake it; a change of the Deployment does).
pub(super) const CONFLICT_POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// Event reasons published as `Warning` (something went wrong); the rest are `Normal`.
const WARNINGS: &[&str] = &[
    "GateRejected",
    "WeightsNotApplied",
    "DrainDeadlinePassed",
    "AnalysisFailed",
    "AnalysisInconclusive",
    "PreviewFailed",
    "PreviewExited",
    "PreviewLost",
    "DeadlineExceeded",
    "RolledBack",
    "CommandRejected",
    "StaleCommandIgnored",
    "InvalidSpec",
    "InvalidObject",
    "Conflict",
    "InvalidAnnotation",
    "TargetStalled",
    "InexactBound",
    "TargetChanged",
    "DeploymentMissing",
    "AbortForced",
    "TargetUnready",
    "RolloutRecordMissing",
    super::PREVIEW_SHARE_LEFT,
    super::older::TARGET_UNKNOWN,
];

/// The state of one reconcile.
pub(super) struct Exec<'a> {
    ctx: &'a Context,
    /// The TrafficShift as read: its generation and status; its spec may be newer than the
    /// rollout in hand (which it then supersedes).
    live: Arc<TrafficShift>,
    /// The TrafficShift as the rollout in hand rolls it out ([`ShiftRecord::rolled_out`]: its
    /// target Deployment, images and `unreadyGrace` from the record), which every action reads;
    /// `live` until [`Exec::run`] has the machine.
    ///
    /// [`ShiftRecord::rolled_out`]: crate::kube::store::ShiftRecord::rolled_out
    shift: Arc<TrafficShift>,
    store: StatusStore,
    inputs: VecDeque<Input>,
    /// The live proxy replicas, listed at most once per reconcile.
    replicas: Option<Vec<Replica>>,
    /// The route's metrics, taken from the context for this reconcile and put back on drop.
    metrics: Option<RouteMetrics>,
    /// The target Deployment's containers `(name, image)` in template order, when it was read.
    target_images: Option<Vec<(String, String)>>,
    /// The target Deployment, when it was read (for its pods' selector).
    target: Option<Deployment>,
    /// Whether the preview was compared with what the rollout made this reconcile (read at most
    /// once per reconcile: `observe_preview_unchanged`).
    preview_checked: bool,
    /// The TrafficShift's spec is invalid (these are its problems) while a rollout of an earlier
    /// generation runs: that rollout is superseded and no new one starts ([`Exec::invalid_spec`]).
    invalid: Option<String>,
}

impl Drop for Exec<'_> {
    fn drop(&mut self) {
        if let Some(metrics) = self.metrics.take() {
            self.ctx.put_route_metrics(key(&*self.shift), metrics);
        }
    }
}

impl<'a> Exec<'a> {
    pub(super) fn new(ctx: &'a Context, shift: Arc<TrafficShift>) -> Exec<'a> {
        let ns = shift.namespace().unwrap_or_else(|| "default".into());
        let api = Api::namespaced(ctx.client.clone(), &ns);
        let store = StatusStore::new(api, (*shift).clone());
        let metrics = Some(ctx.take_route_metrics(&key(&*shift)));
        Exec {
            ctx,
            live: shift.clone(),
            shift,
            store,
            inputs: VecDeque::new(),
            replicas: None,
            metrics,
            target_images: None,
            target: None,
            preview_checked: false,
            invalid: None,
        }
    }

    /// The spec is invalid (`problems`, as `InvalidSpec` words them) while a rollout of an
    /// earlier generation runs: that rollout is superseded as by any new spec (aborted before
    /// promotion, finished after it), the `Superseded` Event names the problems, and no rollout
    /// of the invalid spec starts once it has ended (the next reconcile shows `InvalidSpec`).
    pub(super) fn invalid_spec(mut self, problems: String) -> Exec<'a> {
        self.invalid = Some(problems);
        self
    }

    /// The TrafficShift as read (see the field `live`).
    pub(super) fn live(&self) -> &TrafficShift {
        &self.live
    }

    /// Remembers the target Deployment's container images, for `crossfade_backend_info`.
    pub(super) fn target(mut self, target: Option<&Deployment>) -> Exec<'a> {
        self.target_images = target.map(container_images);
        self.target = target.cloned();
        self
    }

    /// Records the rollout's state in the route's metrics (deduplicated there).
    fn meter_transition(&mut self, m: &Machine) {
        if let Some(metrics) = &mut self.metrics {
            // The record's time: a rollout taken over (session 41) keeps its last transition's.
            metrics.transition_at(&m.record.rollout, m.record.transitioned_unix());
        }
    }

    /// Sets `crossfade_backend_info`: backend `blue` runs the target Deployment (its template's
    /// images), `green` the preview (the target's containers with this rollout's `spec.images`)
    /// while the rollout runs, each with the digests its pods report (empty until read). Left as
    /// it is when the target was not read this reconcile.
    fn meter_backends(&self, m: &Machine) {
        let (Some(metrics), Some(target)) = (&self.metrics, &self.target_images) else {
            return;
        };
        let preview = self.preview_images(m);
        let names: Vec<&str> = target.iter().map(|(name, _)| name.as_str()).collect();
        let images = |containers: &[(String, String)]| {
            let images: Vec<&str> = containers.iter().map(|(_, i)| i.as_str()).collect();
            images.join(",")
        };
        let (active_rev, preview_rev) = revisions::active_and_preview(m.revisions.as_ref());
        let digest = |r: Option<&crate::kube::crd::RevisionStatus>| {
            r.map(|r| r.digest_label(&names)).unwrap_or_default()
        };
        let (active_image, active_digest) = (images(target), digest(active_rev));
        let (preview_image, preview_digest) = (images(&preview), digest(preview_rev));
        let preview_name = preview_name(&self.shift);
        let running = !m.record.rollout.is_terminal();
        let blue = DeploymentInfo {
            deployment: &self.shift.spec.deployment,
            image: &active_image,
            digest: &active_digest,
        };
        let green = DeploymentInfo {
            deployment: &preview_name,
            image: &preview_image,
            digest: &preview_digest,
        };
        metrics.deployments(Slot::Blue, blue, running.then_some(green));
    }

    /// The preview's containers `(name, image)`: the target's, with this rollout's `spec.images`.
    fn preview_images(&self, m: &Machine) -> Vec<(String, String)> {
        let rolled_out = m.record.rolled_out(&self.shift);
        let overrides = &rolled_out.spec.images;
        let target = self.target_images.as_deref().unwrap_or_default();
        target
            .iter()
            .map(|(name, image)| {
                let image = overrides.get(name).map_or(image.as_str(), |i| i.0.as_str());
                (name.clone(), image.to_owned())
            })
            .collect()
    }

    /// A spec that cannot be rolled out: `Progressing=False` reason `InvalidSpec` and a Warning
    /// Event, once per spec generation and message; then wait for the spec to change.
    pub(super) async fn refuse(mut self, message: String) -> Result<Action, ShiftError> {
        if !shows_invalid(&self.live, &message) {
            let generation = self.generation();
            let status = invalid_spec(self.live.status.as_ref(), generation, &message, &now());
            self.store.save(status).await?;
            self.event("InvalidSpec", &message).await;
        }
        Ok(Action::await_change())
    }

    /// Another TrafficShift owns the target Deployment: `Progressing=False` reason `Conflict`
    /// with `message` and a Warning Event, once per spec generation and message; the command
    /// nonces on the Deployment (`seen`) are recorded in `status.commands` so that this one never
    /// acts on them later. Nothing else is done; looked at again within [`CONFLICT_POLL`].
    pub(super) async fn conflict(
        mut self,
        message: String,
        seen: crate::kube::crd::CommandsSeen,
    ) -> Result<Action, ShiftError> {
        let shown = shows_not_progressing(&self.live, "Conflict", &message);
        let recorded = self.live.status.as_ref().and_then(|s| s.commands.as_ref());
        if !shown || recorded != Some(&seen) {
            let generation = self.generation();
            let previous = self.live.status.as_ref();
            let mut status = not_progressing(previous, generation, "Conflict", &message, &now());
            status.commands = Some(seen);
            self.store.save(status).await?;
        }
        if !shown {
            tracing::warn!(trafficshift = %key(&*self.live), "{message}");
            self.event("Conflict", &message).await;
        }
        Ok(Action::requeue(CONFLICT_POLL))
    }

    /// A rollout that does not start for `reason` ([`super::UP_TO_DATE`],
    /// [`super::DEPLOYMENT_MISSING`]): `Progressing=False` with `message` and an Event of that
    /// reason, once per spec generation and message; nothing else is done; then `action`.
    pub(super) async fn not_started(
        mut self,
        reason: &str,
        message: String,
        action: Action,
    ) -> Result<Action, ShiftError> {
        if !shows_not_progressing(&self.live, reason, &message) {
            let generation = self.generation();
            let previous = self.live.status.as_ref();
            let status = not_progressing(previous, generation, reason, &message, &now());
            self.store.save(status).await?;
            tracing::info!(trafficshift = %key(&*self.live), "{message}");
            self.event(reason, &message).await;
        }
        Ok(action)
    }

    /// Feeds `inputs` and what the cluster shows until nothing changes; returns when to look again.
    pub(super) async fn run(
        mut self,
        mut m: Machine,
        inputs: Vec<Input>,
    ) -> Result<(Action, Machine), ShiftError> {
        if let Some(written) = m.written.take() {
            self.store.rebase(written);
        }
        self.pin(&mut m);
        self.meter_transition(&m);
        // Only a new spec generation supersedes (an operator's abort does not start over).
        let superseding = inputs.iter().find_map(|i| match i {
            Input::Abort(AbortCause::Superseded { generation }) => Some(*generation),
            _ => None,
        });
        if let Some(generation) = superseding {
            let note = match &self.invalid {
                None => format!(
                    "spec generation {generation} supersedes the rollout of generation {}: aborting it, then starting over",
                    m.record.generation
                ),
                Some(problems) => format!(
                    "spec generation {generation} supersedes the rollout of generation {} but is invalid: {problems}; aborting the rollout, and none starts until the spec is fixed",
                    m.record.generation
                ),
            };
            self.event("Superseded", &note).await;
        } else if let Some(problems) = &self.invalid {
            self.say_invalid_while_ending(&mut m, problems).await;
        }
        // The capacity first: a rollback this reconcile starts (or resumes, after a restart)
        // decides its first weight from the target's ready endpoints now.
        if let Some(capacity) = self.observe_capacity(&mut m).await {
            self.inputs.push_back(capacity);
        }
        // A preview changed by another client fails before any command of this reconcile (a
        // promote must not act on a preview the analysis no longer judges).
        self.observe_preview_unchanged(&m).await?;
        self.inputs.extend(inputs);
        let mut fed = 0;
        // The rollout a new spec superseded has ended, but the Deployment that spec names does
        // not exist or already runs its images: the next reconcile says so (`DeploymentMissing`,
        // `UpToDate`), as for a new TrafficShift, and starts a rollout when there is one to start.
        let mut start_later = false;
        loop {
            while let Some(input) = self.inputs.pop_front() {
                fed += 1;
                let operator = match &input {
                    Input::Operator(c) => Some(*c),
                    _ => None,
                };
                let message = m.record.rollout.message.clone();
                let before = (m.record.rollout.phase, m.record.rollout.step);
                let commands = m.record.rollout.step(input, tokio::time::Instant::now());
                // Written with the transition's record (its `Persist` comes among `commands`).
                m.record.stamp_transition(before);
                // A new capacity reading during a capacity wait changes the message only (no
                // transition): status shows it at the end of this reconcile.
                if commands.is_empty() && m.record.rollout.message != message {
                    m.unsaved = true;
                }
                self.meter_transition(&m);
                if let Some(c) = operator {
                    super::commands::decided(&mut m, c, &commands);
                }
                for command in commands {
                    self.execute(&mut m, command).await?;
                }
            }
            self.observe(&mut m).await?;
            if self.inputs.is_empty() {
                self.observe_crash_loop(&mut m).await;
            }
            if self.inputs.is_empty()
                && m.record.generation != self.generation()
                && m.record.rollout.is_terminal()
                && self.invalid.is_none()
            {
                // The new spec may name another target Deployment: its template and
                // annotations from here on.
                let next = match self.live.spec.deployment == self.shift.spec.deployment {
                    true => self.target.clone(),
                    false => self.ctx.driver.target(&self.live).await?,
                };
                // Before, a rollout of a Deployment that does not exist started here and was
                // rolled back at once ("preview green failed"), and none started once it existed;
                // one of the images the target already runs (an edit reverted mid-rollout) ran
                // a whole rollout to nothing new.
                let runs = |t: &Deployment| crate::driver::kube::runs_images(t, &self.live);
                if next.as_ref().is_none_or(runs) {
                    start_later = true;
                    break;
                }
                let config = self.live.spec.rollout.to_config().unwrap_or_default();
                m = Machine::start(config, &self.live, Some(&m.record));
                self.pin(&mut m);
                self.target_images = next.as_ref().map(container_images);
                self.target = next;
                self.inputs.extend(initial(None, 0));
            }
            if self.inputs.is_empty() || fed >= MAX_INPUTS {
                break;
            }
        }
        // Listed above unless `MAX_INPUTS` ended the loop; a crash loop found here is found again
        // at the next list.
        let _ = self.observe_revisions(&mut m).await;
        // A command acted on or refused without a transition still has its nonce recorded; new
        // revisions are shown.
        if std::mem::take(&mut m.unsaved) || self.revisions_unshown(&m) {
            self.persist(&mut m).await?;
        }
        self.meter_transition(&m);
        self.meter_backends(&m);
        m.written = Some(self.store.current().clone());
        // The rollout an invalid spec superseded has ended: the next reconcile shows why no
        // new one starts (`InvalidSpec`), which no watch event would otherwise bring.
        let action = if (self.invalid.is_some() || start_later) && m.record.rollout.is_terminal() {
            Action::requeue(std::time::Duration::from_millis(10))
        } else {
            next_action(&m, self.ctx.poll)
        };
        Ok((action, m))
    }

    /// An invalid spec (`problems`; one that does not decode included) that supersedes nothing,
    /// since the rollout of an earlier generation is past promotion (it finishes first) or is
    /// already rolling back or aborting (it ends first): a Warning Event `InvalidSpec` says so at
    /// once, naming the field, once per spec generation (again after a restart). Before
    /// (session 36), it was said only once that rollout had ended, which a held retirement (the
    /// preview kept while the target has no ready endpoint, with no deadline) could put off for
    /// ever.
    async fn say_invalid_while_ending(&self, m: &mut Machine, problems: &str) {
        let generation = self.generation();
        let r = &m.record.rollout;
        // Aborted for it before promotion: the `Superseded` Event said it.
        let said = m.invalid_said == Some(generation) || m.record.superseded_by == Some(generation);
        if r.is_terminal() || said {
            return;
        }
        let ends = match r.phase {
            Phase::Promoted | Phase::Retiring => "was promoted and finishes first",
            _ => "ends first",
        };
        let note = format!(
            "spec generation {generation} is invalid: {problems}; the rollout of generation {} {ends} ({}), and none starts until the spec is fixed",
            m.record.generation,
            r.phase.words()
        );
        tracing::warn!(trafficshift = %key(&*self.live), rollout = r.id, "{note}");
        self.event("InvalidSpec", &note).await;
        m.invalid_said = Some(generation);
    }

    /// Pins what this reconcile acts on to `m`'s rollout ([`Exec::shift`]): its target
    /// Deployment, images and `unreadyGrace`, not a newer spec's (a `spec.deployment` edited
    /// mid-rollout supersedes the rollout, whose abort must return traffic to the Deployment it
    /// started on: before, an abort, a promotion and the readiness checks acted on the new one).
    /// Gives the machine the words of promotion in a cluster ([`promotion_of`]): the target
    /// Deployment, the preview's and the images of this rollout. A rollout read from a record
    /// written before they were kept gets them here; its status message shows them from its next
    /// write on (no write of its own: a reattach writes anyway).
    fn pin(&mut self, m: &mut Machine) {
        if m.record.deployment.is_none() {
            m.record.deployment = Some(m.record.target(&self.live).to_owned());
        }
        let pinned = m.record.rolled_out(&self.live);
        let promotion = promotion_of(&pinned);
        if m.record.rollout.promotion != promotion {
            m.record.rollout.set_promotion(promotion);
        }
        self.shift = Arc::new(pinned);
    }

    fn generation(&self) -> i64 {
        self.live.metadata.generation.unwrap_or(1)
    }

    /// Turns what the cluster shows into the input the machine waits for, if it is there.
    async fn observe(&mut self, m: &mut Machine) -> Result<(), ShiftError> {
        let r = &m.record.rollout;
        let driver = &self.ctx.driver;
        let waiting_ready = match r.phase {
            Phase::Provisioning => true,
            Phase::Paused => !r.preview_ready,
            _ => false,
        };
        if waiting_ready {
            return self.observe_preview(m).await;
        }
        self.observe_preview_unchanged(m).await?;
        self.follow_target_replicas(m).await?;
        self.observe_target_template(m);
        self.observe_ready_pods(m).await?;
        if m.pending.is_some() {
            self.observe_acks(m).await?;
        }
        let r = &m.record.rollout;
        match r.phase {
            Phase::Promoted if m.swap_requested => self.observe_swap(m).await,
            Phase::Retiring if !r.active_drained && m.drain_deadline.is_some() => {
                self.observe_drain(m).await
            }
            Phase::Retiring if m.stop_requested => {
                if driver.delete_preview(&self.shift).await? {
                    m.stop_requested = false;
                    self.inputs.push_back(Input::ActiveStopped);
                }
                Ok(())
            }
            // A preview outliving its rollout (a restart between the end and the delete) goes.
            _ if r.is_terminal() => driver
                .delete_preview(&self.shift)
                .await
                .map(drop)
                .map_err(Into::into),
            _ => Ok(()),
        }
    }

    async fn observe_preview(&mut self, m: &mut Machine) -> Result<(), ShiftError> {
        let target = match self.ctx.driver.target(&self.shift).await? {
            Some(t) => t,
            None => {
                return self.lost(format!(
                    "spec.deployment: deployment {} does not exist",
                    self.shift.spec.deployment
                ))
            }
        };
        // The preview is (re)made from this template: promotion checks it is still there.
        let template = crate::kube::template::template_images(&target);
        if m.record.started_from.as_ref() != Some(&template) {
            m.record.started_from = Some(template);
            m.unsaved = true;
        }
        let parts = crate::kube::template::template_parts(&target);
        if parts.is_some() && m.record.started_template != parts {
            m.record.started_template = parts;
            m.unsaved = true;
        }
        let name = preview_name(&self.shift);
        let applied = match self.ctx.driver.ensure_preview(&self.shift, &target).await {
            Ok(applied) => applied,
            Err(e) => return self.permanent(e),
        };
        let AppliedPreview {
            availability,
            images,
            ready,
            desired,
        } = applied;
        let replicas = desired_replicas(&target);
        if m.record.preview_replicas != Some(replicas) {
            m.record.preview_replicas = Some(replicas);
            m.unsaved = true;
        }
        // What the analysis will judge, as the API server stored it: a change of it by another
        // client until promotion rolls the rollout back (`observe_preview_unchanged`).
        if m.record.preview_images.as_ref() != Some(&images) {
            m.record.preview_images = Some(images);
            m.unsaved = true;
        }
        match availability {
            Availability::Available => {
                self.inputs.push_back(Input::PreviewReady);
                Ok(())
            }
            Availability::Failed(why) => self.lost(format!("deployment {name}: {why}")),
            Availability::Waiting(_) => {
                // Said in the message (session 42: it said only `provisioning green`); fed only
                // when the count changed, so status is written no more often than it changes.
                if m.record.rollout.preview_ready_replicas != Some((ready, desired)) {
                    self.inputs
                        .push_back(Input::PreviewReplicas { ready, desired });
                }
                Ok(())
            }
        }
    }

    /// From the preview's readiness to promotion, the preview Deployment must still be the one
    /// the rollout made: its template's images as stored at its last apply
    /// ([`crate::kube::store::ShiftRecord::preview_images`]). Another client's change (`kubectl
    /// set image deployment/web-green ...`, an edit, a deletion) means the analysis no longer
    /// judges what promotion would give the target (the rollout's images), so the preview fails
    /// and the machine rolls back, naming the change. Not re-applied meanwhile: reverting it would
    /// leave windows that judged both. Records of older versions (no images kept) are not checked.
    /// Read at most once per reconcile (a change of the preview wakes its TrafficShift).
    async fn observe_preview_unchanged(&mut self, m: &Machine) -> Result<(), ShiftError> {
        let r = &m.record.rollout;
        let before_promotion = match r.phase {
            Phase::Progressing => true,
            Phase::Paused => r.preview_ready,
            _ => false,
        };
        let Some(made) = m
            .record
            .preview_images
            .as_ref()
            .filter(|_| before_promotion)
        else {
            return Ok(());
        };
        if std::mem::replace(&mut self.preview_checked, true) {
            return Ok(());
        }
        let name = preview_name(&self.shift);
        let reason = match self.ctx.driver.preview(&self.shift).await? {
            None => format!(
                "deployment {name} was deleted by another client during the rollout; its analysis cannot go on, and promotion would give {} images no analysis judged",
                self.shift.spec.deployment
            ),
            Some(preview) => {
                let now = crate::kube::template::template_images(&preview);
                if now == *made {
                    return Ok(());
                }
                let containers: std::collections::BTreeSet<&String> =
                    now.keys().chain(made.keys()).collect();
                let changes: Vec<String> = containers
                    .into_iter()
                    .filter(|c| now.get(*c) != made.get(*c))
                    .map(|c| {
                        let image = now.get(c).map_or("(removed)", String::as_str);
                        let was = made.get(c).map_or("no such container", String::as_str);
                        format!("{c}={image} (the rollout made it with {was})")
                    })
                    .collect();
                format!(
                    "deployment {name}'s pod template was changed by another client during the rollout: {}; the analysis would judge images that promotion does not give {}",
                    changes.join(", "),
                    self.shift.spec.deployment
                )
            }
        };
        self.inputs.push_back(Input::PreviewFailed { reason });
        Ok(())
    }

    /// From the preview's readiness to promotion, both backends must keep a ready pod (kube28).
    ///
    /// - The preview (green) with no ready replica (`status.readyReplicas` 0: scaled to 0 by
    ///   another client, its pods evicted or all unready) for `spec.rollout.unreadyGrace`
    ///   (default 30s) fails: the machine rolls back, all traffic back to blue at once, with a
    ///   reason naming green, its Deployment and what it lost (`ready replicas 0 of 3`); a pod
    ///   ready again within the grace changes nothing. Meanwhile the proxies already send green's
    ///   share to blue (`proxy_source::translate::fallback`). Not while the target has no ready
    ///   replica either: rolling back onto a backend without a ready pod helps nobody; the
    ///   progress deadline still decides.
    /// - The target (blue) with no ready replica is never rolled back onto: a Warning Event
    ///   `TargetUnready` says so once (the proxies send its share to green, the only backend
    ///   with ready pods); the rollout goes on, its analysis inconclusive while the proxies do
    ///   not split as published, and a rollback meanwhile keeps green's share until blue has
    ///   ready endpoints (the capacity rule).
    ///
    /// A deleted preview is `observe_preview_unchanged`'s. Read from the Deployments (one GET of
    /// the preview per reconcile; the target as this reconcile read it).
    /// Until promotion the preview has the target's replicas: a change of the target's
    /// `spec.replicas` since the preview was given them (an autoscaler scaling the target with
    /// its load, `kubectl scale`) is given to the preview too, with a Normal Event
    /// `PreviewScaled`. Before, the preview kept the count of its start, and a target scaled
    /// from 2 to 10 during a rollout sent the last step's 100% to 2 pods (trial 30). A change of
    /// the preview's own replicas by another client is left alone (it is not watched, and one to
    /// 0 fails the preview after `unreadyGrace`), and so is the preview when the target is scaled
    /// to 0 (it would leave the route no pod at all; the target's next count above 0 is followed).
    /// Records without the count (older versions) take the target's as it is now.
    async fn follow_target_replicas(&mut self, m: &mut Machine) -> Result<(), ShiftError> {
        let r = &m.record.rollout;
        let before_promotion = match r.phase {
            Phase::Progressing => true,
            Phase::Paused => r.preview_ready,
            _ => false,
        };
        let Some(target) = self.target.as_ref().filter(|_| before_promotion) else {
            return Ok(());
        };
        if !self.inputs.is_empty() {
            return Ok(());
        }
        let replicas = desired_replicas(target);
        let given = m.record.preview_replicas;
        // A target scaled to 0 is not followed: the preview would take the route's last pods
        // away (a route is never left without a healthy backend while one exists).
        if given == Some(replicas) || (replicas == 0 && given.is_some()) {
            return Ok(());
        }
        if let Some(given) = given {
            if !self.ctx.driver.scale_preview(&self.shift, replicas).await? {
                return Ok(()); // gone: `observe_preview_unchanged` said so
            }
            let note = format!(
                "deployment {} was scaled from {given} to {replicas} replicas (an autoscaler, kubectl scale): the preview {} follows, so that it can carry the traffic the target carries",
                self.shift.spec.deployment,
                preview_name(&self.shift)
            );
            tracing::info!(trafficshift = %key(&*self.shift), rollout = r.id, "{note}");
            self.event("PreviewScaled", &note).await;
            m.unsaved = true;
        }
        // A record without the count is not written for it alone: the next write carries it.
        m.record.preview_replicas = Some(replicas);
        Ok(())
    }

    /// From the preview's readiness to promotion, the target's template must stay the one the
    /// preview was made from but for images ([`crate::kube::template::template_parts`]): another
    /// client's change of anything else (`kubectl set env`, resources, volumes) is rolled out by
    /// Kubernetes on the target at once and is not in the preview, so the analysis judges a
    /// template promotion would not give the target, and promotion would give it a combination no
    /// analysis judged. The rollout rolls back (`TargetChanged`), naming the parts that changed;
    /// `crossfade.dev/retry` starts its images again from the new template, as Argo Rollouts and
    /// Flagger start an analysis again on a new revision. A `kubectl rollout restart` is not a
    /// change ([`crate::kube::template::RESTARTED_AT`]); image changes are the reconciler's
    /// (`kube/template.rs`) and `changed_under`'s. Records of older versions are not checked.
    /// After promotion, `observe_swap` checks the same until its patch gives the target the
    /// rollout's images.
    fn observe_target_template(&mut self, m: &mut Machine) {
        let r = &m.record.rollout;
        let before_promotion = match r.phase {
            Phase::Progressing => true,
            Phase::Paused => r.preview_ready,
            _ => false,
        };
        let (Some(target), Some(started)) = (
            self.target.as_ref().filter(|_| before_promotion),
            m.record.started_template.as_ref(),
        ) else {
            return;
        };
        if !self.inputs.is_empty() {
            return;
        }
        let scheme = crate::kube::template::SCHEME;
        if started.get(scheme).map(String::as_str) != Some(&crate::kube::template::scheme()) {
            // Made by another build of the controller (an upgrade during the rollout): this
            // build's digests of the template as it is now are the reference from here on.
            m.record.started_template = crate::kube::template::template_parts(target);
            m.unsaved = true;
            return;
        }
        if let Some(reason) = self.template_changed(started, target) {
            self.inputs.push_back(Input::TargetChanged { reason });
        }
    }

    /// Why `target`'s pod template is not the one the preview was made from (`started`, its
    /// [`crate::kube::template::template_parts`]) other than in images, naming the parts that
    /// changed; `None` when it is, or has no template.
    fn template_changed(
        &self,
        started: &std::collections::BTreeMap<String, String>,
        target: &Deployment,
    ) -> Option<String> {
        let now = crate::kube::template::template_parts(target)?;
        let scheme = crate::kube::template::SCHEME;
        if now.get(scheme) != started.get(scheme) {
            // Recorded by another build: not comparable (`observe_target_template` records anew).
            return None;
        }
        let parts: std::collections::BTreeSet<&String> = now.keys().chain(started.keys()).collect();
        let changed: Vec<String> = parts
            .into_iter()
            .filter(|part| now.get(*part) != started.get(*part))
            .map(|part| match (started.get(part), now.get(part)) {
                (None, _) => format!("{part} (added)"),
                (_, None) => format!("{part} (removed)"),
                _ => part.clone(),
            })
            .collect();
        if changed.is_empty() {
            return None;
        }
        Some(format!(
            "deployment {}'s pod template was changed by another client during the rollout other than in its images: {}; the preview {} was made from the template before, so promotion would give {} a combination no analysis judged (crossfade.dev/retry starts this rollout's images again from the new template)",
            self.shift.spec.deployment,
            changed.join(", "),
            preview_name(&self.shift),
            self.shift.spec.deployment
        ))
    }

    async fn observe_ready_pods(&mut self, m: &mut Machine) -> Result<(), ShiftError> {
        let r = &m.record.rollout;
        let before_promotion = match r.phase {
            Phase::Progressing => true,
            Phase::Paused => r.preview_ready,
            _ => false,
        };
        if !before_promotion {
            m.preview_unready = None;
            m.both_unready = false;
            return Ok(());
        }
        if !self.inputs.is_empty() {
            return Ok(());
        }
        // `(ready, desired)` replicas; `None` for a status no Deployment controller wrote yet.
        let ready = |d: &Deployment| {
            let status = d
                .status
                .as_ref()
                .filter(|s| s.observed_generation.is_some())?;
            let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            Some((status.ready_replicas.unwrap_or(0), desired))
        };
        let target = &self.shift.spec.deployment;
        let blue = self.target.as_ref().and_then(ready);
        let blue_lost = blue.is_some_and(|(ready, _)| ready == 0);
        match (blue, m.target_unready) {
            (Some((0, desired)), false) => {
                m.target_unready = true;
                let note = format!(
                    "blue (deployment {target}) has no ready pod: ready replicas 0 of {desired}; the proxies send all requests to green (deployment {}), the only backend with ready pods, and the rollout is not rolled back onto blue until it has ready pods",
                    preview_name(&self.shift)
                );
                tracing::warn!(trafficshift = %key(&*self.shift), rollout = m.record.rollout.id, "{note}");
                if let Some(metrics) = &mut self.metrics {
                    metrics.event(Some(&m.record.rollout), "TargetUnready");
                }
                self.event("TargetUnready", &note).await;
            }
            (Some((ready, _)), true) if ready > 0 => m.target_unready = false,
            _ => {}
        }
        let name = preview_name(&self.shift);
        let Some(preview) = self.ctx.driver.preview(&self.shift).await? else {
            m.preview_unready = None;
            return Ok(());
        };
        let Some((ready, desired)) = ready(&preview) else {
            return Ok(());
        };
        if ready > 0 {
            m.both_unready = false;
            if m.preview_unready.take().is_some() {
                tracing::info!(trafficshift = %key(&*self.shift), "green (deployment {name}) has ready pods again: ready replicas {ready} of {desired}");
            }
            return Ok(());
        }
        let grace = self.shift.spec.rollout.unready_grace();
        let now = tokio::time::Instant::now();
        let since = match m.preview_unready {
            Some((since, _)) => since,
            None => {
                tracing::warn!(trafficshift = %key(&*self.shift), rollout = m.record.rollout.id, "green (deployment {name}) has no ready pod: ready replicas 0 of {desired}; the proxies send its share to blue; the rollout rolls back unless one is ready within {} (spec.rollout.unreadyGrace)", crate::spec::human(grace));
                now
            }
        };
        let deadline = since + grace;
        m.preview_unready = Some((since, deadline));
        if now < deadline {
            return Ok(());
        }
        if blue_lost {
            if !std::mem::replace(&mut m.both_unready, true) {
                let note = format!(
                    "green (deployment {name}) has had no ready pod either for {} (ready replicas 0 of {desired}): the rollout is not rolled back onto blue (deployment {target}), which has none; it rolls back once blue has a ready pod, or at the progress deadline",
                    crate::spec::human(grace)
                );
                tracing::warn!(trafficshift = %key(&*self.shift), rollout = m.record.rollout.id, "{note}");
                if let Some(metrics) = &mut self.metrics {
                    metrics.event(Some(&m.record.rollout), "TargetUnready");
                }
                self.event("TargetUnready", &note).await;
            }
            return Ok(());
        }
        m.preview_unready = None;
        m.both_unready = false;
        let scaled = if desired == 0 {
            " (spec.replicas set to 0 by another client)"
        } else {
            ""
        };
        let reason = format!(
            "lost its ready pods: deployment {name} has had ready replicas 0 of {desired}{scaled} for {} (spec.rollout.unreadyGrace)",
            crate::spec::human(grace)
        );
        self.inputs.push_back(Input::PreviewFailed { reason });
        Ok(())
    }

    /// Both backends' capacity from their Services' EndpointSlices ([`crate::kube::capacity`]),
    /// while it can matter: from provisioning to the end of a rollback (the most ready endpoints
    /// the target had is kept while the rollout goes forward). `None` in other phases, without an
    /// EndpointSlice for the target's Service (no reading), or when the slices cannot be listed
    /// (logged; a rollback then sends all traffic back at once, as without a reading).
    async fn observe_capacity(&mut self, m: &mut Machine) -> Option<Input> {
        let phase = m.record.rollout.phase;
        let forward = matches!(
            phase,
            Phase::Provisioning | Phase::Progressing | Phase::Paused
        );
        if !forward && !matches!(phase, Phase::RollingBack | Phase::Aborting) {
            return None;
        }
        let driver = &self.ctx.driver;
        let listed = futures_util::future::try_join(
            driver.endpoint_slices(&self.shift, Slot::Blue),
            driver.endpoint_slices(&self.shift, Slot::Green),
        )
        .await;
        let (blue, green) = match listed {
            Ok((blue, green)) => (capacity::count(&blue), capacity::count(&green)),
            Err(e) => {
                tracing::warn!(trafficshift = %key(&*self.shift), "cannot read the backends' ready endpoints for the rollback capacity: {e}");
                return None;
            }
        };
        if let (true, Some(blue)) = (forward, blue) {
            let most = m.record.active_ready_most.unwrap_or(0).max(blue.ready);
            if m.record.active_ready_most != Some(most) {
                m.record.active_ready_most = Some(most);
                m.unsaved = true;
            }
        }
        let desired = self.target.as_ref().and_then(capacity::desired_replicas);
        capacity::capacities(blue, green, desired, m.record.active_ready_most).map(Input::Capacity)
    }

    /// The live proxy replicas (one list of their Leases per reconcile).
    async fn replicas(&mut self) -> Result<Vec<Replica>, ShiftError> {
        if let Some(r) = &self.replicas {
            return Ok(r.clone());
        }
        let live = self.ctx.proxies.live().await.map_err(ShiftError::Proxies)?;
        self.replicas = Some(live.clone());
        Ok(live)
    }

    /// Published weights become `WeightsApplied` once every live proxy replica serving the route
    /// reports their generation ([`acks`]); until then the reconcile looks again shortly.
    async fn observe_acks(&mut self, m: &mut Machine) -> Result<(), ShiftError> {
        let Some(pending) = m.pending.clone() else {
            return Ok(());
        };
        let route = key(&*self.shift);
        let replicas = self.replicas().await?;
        let uid = self.shift.metadata.uid.clone().unwrap_or_default();
        let ack = acks(
            &replicas,
            &route,
            &uid,
            pending.generation,
            pending.preview_bp,
        );
        if let Ack::Applied { replicas: n } = ack {
            tracing::info!(trafficshift = %route, generation = pending.generation, replicas = n, "weights applied by the proxies");
            m.pending = None;
            self.inputs.push_back(Input::WeightsApplied {
                preview_bp: pending.preview_bp,
                generation: pending.generation,
            });
            return Ok(());
        }
        let waited = pending.since.elapsed();
        tracing::debug!(trafficshift = %route, generation = pending.generation, "weights not applied yet: {ack}");
        if !pending.reported && waited >= ACK_REPORT_AFTER {
            let note = format!(
                "weights generation {} (preview {}) not applied by the proxies after {}: {ack}",
                pending.generation,
                crossfade_proxy::weight::Percent(pending.preview_bp),
                crate::spec::human(std::time::Duration::from_secs(waited.as_secs()))
            );
            self.event("WeightsNotApplied", &note).await;
            if let Some(p) = &mut m.pending {
                p.reported = true;
            }
        }
        Ok(())
    }

    /// The retiring backend (the preview's pods, backend `green`, whose weight is 0 since the role
    /// swap) is drained once every live proxy replica has applied that weight and their summed
    /// in-flight requests and upgraded connections to it are 0; or at the drain deadline.
    async fn observe_drain(&mut self, m: &mut Machine) -> Result<(), ShiftError> {
        let route = key(&*self.shift);
        let replicas = self.replicas().await?;
        let generation = m.record.weights_generation;
        let uid = self.shift.metadata.uid.clone().unwrap_or_default();
        let ack = acks(&replicas, &route, &uid, generation, m.record.published_bp);
        let held = match ack {
            Ack::Applied { .. } => {
                let serving = serving(&replicas, &route);
                let metrics = self.metrics_source();
                metrics.refresh(&route, &serving).await;
                metrics
                    .snapshot(&route, Slot::Green)
                    .map(|s| (s.in_flight, s.upgraded))
                    .map_err(|e| e.to_string())
            }
            other => Err(format!("weights generation {generation}: {other}")),
        };
        let now = tokio::time::Instant::now();
        let ends = held == Ok((0, 0)) || m.drain_deadline.is_some_and(|d| now >= d);
        if ends {
            if let Some(why) = self.target_cannot_serve().await {
                // Looked at again at the next poll (the drain deadline stays set).
                if m.waiting_said.as_ref() != Some(&why) {
                    tracing::warn!(trafficshift = %route, rollout = m.record.rollout.id, "{} is kept and takes the route's requests as its backup: {why}; it is deleted once {} has a ready endpoint", preview_name(&self.shift), self.shift.spec.deployment);
                    m.waiting_said = Some(why);
                }
                // Once: the status and an Event say why the preview is still there, and the
                // machine drops the Retiring deadline, whose re-issued drain would only be
                // kept again (it said `DeadlineExceeded` every drainTimeout + progressDeadline).
                if !m.record.rollout.retire_held {
                    self.inputs.push_back(Input::RetireHeld);
                }
                return Ok(());
            }
            m.waiting_said = None;
        }
        if held == Ok((0, 0)) {
            m.drain_deadline = None;
            self.inputs.push_back(Input::ActiveDrained);
            return Ok(());
        }
        if m.drain_deadline.is_some_and(|d| now >= d) {
            m.drain_deadline = None;
            let what = match held {
                Ok((in_flight, upgraded)) => format!(
                    "{in_flight} requests in flight and {upgraded} upgraded connections on the proxies"
                ),
                Err(why) => format!("not known to be drained ({why})"),
            };
            let note = format!(
                "{}'s drain deadline passed: {what}; stopping it",
                preview_name(&self.shift)
            );
            self.event("DrainDeadlinePassed", &note).await;
            self.inputs.push_back(Input::ActiveDrained);
        }
        Ok(())
    }

    /// Where this TrafficShift's analysis reads its counters: the Prometheus server of its
    /// `spec.rollout.analysis.metricsSource`, else the proxies' `/metrics` (the context's).
    fn metrics_source(&self) -> Arc<dyn ClusterMetrics> {
        let analysis = self.shift.spec.rollout.analysis.as_ref();
        match analysis.and_then(|a| a.metrics_source.as_ref()) {
            Some(source) => {
                let ns = self.shift.namespace().unwrap_or_else(|| "default".into());
                let secrets = || Arc::new(self.secrets()) as Arc<dyn crate::headers::Values>;
                self.ctx.prometheus.get(&source.prometheus, &ns, secrets)
            }
            None => Arc::clone(&self.ctx.metrics),
        }
    }

    /// Reads the route's counters (from the proxies that serve it, or from Prometheus), before
    /// they are read.
    async fn refresh_metrics(&mut self) -> Result<(), ShiftError> {
        let route = key(&*self.shift);
        let replicas = self.replicas().await?;
        let serving = serving(&replicas, &route);
        self.metrics_source().refresh(&route, &serving).await;
        Ok(())
    }

    /// The target takes the new images; once it has rolled them out, all weight goes back to it.
    async fn observe_swap(&mut self, m: &mut Machine) -> Result<(), ShiftError> {
        // The images of this rollout, not of a newer spec that waits for it to finish.
        let shift = m.record.rolled_out(&self.shift);
        let read = self.ctx.driver.target(&shift).await?;
        if read.is_some() && m.record.target_missing.take().is_some() {
            m.unsaved = true; // back: status.message is the rollout's own again
        }
        if let Some(target) = &read {
            // The target's rolling update bounds this phase, not the progress deadline: its
            // progress is what `CrossfadeRolloutStuck` watches meanwhile.
            if let Some(metrics) = &mut self.metrics {
                metrics.target_progress(last_progress(target));
            }
            // Checked until the promotion's patch is made: a change of the template other than
            // in images after the last look before promotion (the reconcile that promoted read
            // the target at its start; gates and analysis took their time since), or while the
            // patch waits, would be promoted with the images into a combination no analysis
            // judged. Once patched, the target is the rollout's destination.
            let started = m.record.started_template.as_ref();
            if let Some(reason) = started
                .filter(|_| !promotion_patched(target, &shift))
                .and_then(|started| self.template_changed(started, target))
            {
                m.swap_requested = false;
                self.inputs.push_back(Input::TargetChanged { reason });
                return Ok(());
            }
            match changed_under(m.record.started_from.as_ref(), target, &shift) {
                Changed::No => {}
                // `kubectl set image` on a managed Deployment: the reconciler of Deployments takes
                // it back and requests it as a rollout (kube/template.rs); patching now would
                // drop that request. Looked at again shortly.
                Changed::Managed => return Ok(()),
                Changed::Unmanaged(reason) => {
                    m.swap_requested = false;
                    self.inputs.push_back(Input::TargetChanged { reason });
                    return Ok(());
                }
            }
        }
        if m.record.published_bp != 0 {
            self.observe_preview_lost(m).await?;
        }
        let Some(read) = read else {
            // The reading at the start of this reconcile is of a Deployment now gone: its pods'
            // revisions are not listed at the end of it. Before (session 41) they were, when it
            // was deleted between the two readings (its promoted template, not yet shown), and
            // written after the Event below, the only status write of the wait.
            self.target = None;
            // The target deleted after promotion: the preview, the only backend with pods, keeps
            // serving; looked at again within POLL and at the Deployment's creation. Said once (a
            // Warning Event). Before (session 38) each reconcile failed here; the next one read
            // the rollout from status again, whose re-issued wait wrote a new deadline, and that
            // write woke the next at once: about 20 status writes a second until it was back.
            let why = format!(
                "spec.deployment: deployment {} was deleted after promotion; the preview {} keeps serving all traffic, and the role swap goes on once the deployment exists again",
                shift.spec.deployment,
                preview_name(&shift)
            );
            // Shown in status.message too, written once before the Event. Before (session 40)
            // status.message went on saying the target rolled out the new images.
            let shown = format!("promoted: {why}");
            if m.record.target_missing.as_ref() != Some(&shown) {
                m.record.target_missing = Some(shown);
                self.persist(m).await?;
            }
            if m.waiting_said.as_ref() != Some(&why) {
                tracing::warn!(trafficshift = %key(&*self.shift), rollout = m.record.rollout.id, "{why}");
                self.event(crate::kube::shift::DEPLOYMENT_MISSING, &why)
                    .await;
                m.waiting_said = Some(why);
            }
            return Ok(());
        };
        // The reading checked above guards the patch (its resourceVersion).
        match self.ctx.driver.promote_target(&shift, Some(read)).await? {
            Availability::Available => {
                if let Some(why) = self.handover_waits(&shift).await {
                    // Looked at again within POLL (`swap_requested` stays set).
                    if m.waiting_said.as_ref() != Some(&why) {
                        tracing::info!(trafficshift = %key(&*self.shift), rollout = m.record.rollout.id, "deployment {} has rolled out the new images; the role swap waits for its Service's endpoints: {why}", shift.spec.deployment);
                        m.waiting_said = Some(why);
                    }
                    return Ok(());
                }
                m.waiting_said = None;
                m.swap_requested = false;
                self.publish(m, 0).await?;
                self.inputs.push_back(Input::RolesSwapped);
            }
            Availability::Failed(why) => {
                let note = format!(
                    "deployment {} has not rolled out the new images: {why}; the preview keeps serving",
                    self.shift.spec.deployment
                );
                self.event("TargetStalled", &note).await;
            }
            Availability::Waiting(_) => {}
        }
        Ok(())
    }

    /// Why the target cannot serve now, when its Service's EndpointSlices list no ready endpoint
    /// (its pods crashed after the role swap): the preview, the route's backup until it is
    /// deleted (`proxy_source::translate`), is then kept (DESIGN: a rollout never leaves a route
    /// with no healthy backend while one exists; `crossfade run` keeps its retiring backend the
    /// same way). `None` when it has one, and without a reading (no slice, or `list` not granted).
    async fn target_cannot_serve(&self) -> Option<String> {
        let slices = self
            .ctx
            .driver
            .endpoint_slices(&self.shift, Slot::Blue)
            .await
            .ok()?;
        let e = capacity::count(&slices)?;
        (e.ready == 0).then(|| {
            format!(
                "deployment {} has no ready endpoint ({} listed, none ready)",
                self.shift.spec.deployment, e.listed
            )
        })
    }

    /// Why the role swap must wait although the target has rolled out (case C12,
    /// [`crate::kube::handover`]): its Service's EndpointSlices still list ready a pod that is
    /// being deleted or is gone, or none ready. `None` when the swap may go, and when the
    /// slices or the pods cannot be read (`list` on either is optional in the role: no reading,
    /// the swap goes on as before; logged at debug).
    async fn handover_waits(&self, shift: &TrafficShift) -> Option<String> {
        let driver = &self.ctx.driver;
        let slices = match driver.endpoint_slices(shift, Slot::Blue).await {
            Ok(slices) if slices.is_empty() => return None,
            Ok(slices) => slices,
            Err(e) => {
                tracing::debug!(trafficshift = %key(shift), "cannot read the target's endpoints before the role swap: {e}");
                return None;
            }
        };
        let target = self.target.as_ref()?;
        let selector = crate::driver::kube::blue_selector(target).ok()?;
        let ns = shift.namespace().unwrap_or_else(|| "default".into());
        let pods = match crate::kube::revision::list_pods(&self.ctx.client, &ns, &selector).await {
            Ok(pods) => pods,
            Err(e) => {
                tracing::debug!(trafficshift = %key(shift), "cannot read the target's pods before the role swap: {}", crate::kube::api_error_words(&e));
                return None;
            }
        };
        crate::kube::handover::waits_for(&slices, &pods)
    }

    /// After promotion the preview serves the route's traffic while the target rolls out the
    /// rollout's images. A preview that is gone (deleted by another client, or being deleted),
    /// or whose Service's EndpointSlices list no ready endpoint (scaled to 0, its pods evicted)
    /// serves nobody: the proxies would keep its last endpoints (they refuse weight on a backend
    /// without endpoints) and clients would get errors until the target is out. So all traffic
    /// goes back to the target at once (`preview` 0%, what the role swap publishes anyway), to
    /// whichever of its endpoints are ready, old or new images (the target is the rollout's
    /// destination either way), with a Warning Event `PreviewLost` counted in
    /// `crossfade_rollout_events_total{reason="PreviewLost"}`. The rollout goes on: the swap
    /// completes when the target has rolled out. No EndpointSlice at all is no reading (nothing
    /// is done on it). Once per rollout: the weight stays 0 (a later recovered preview is not
    /// given traffic again; the target is where it goes).
    async fn observe_preview_lost(&mut self, m: &mut Machine) -> Result<(), ShiftError> {
        let name = preview_name(&self.shift);
        let driver = &self.ctx.driver;
        let why = match driver.preview(&self.shift).await? {
            None => format!("deployment {name} was deleted by another client"),
            Some(p) if p.metadata.deletion_timestamp.is_some() => {
                format!("deployment {name} is being deleted by another client")
            }
            Some(_) => {
                // Not granted (`list endpointslices` is optional, see `observe_capacity`): no
                // reading, the rollout goes on as before.
                let green = match driver.endpoint_slices(&self.shift, Slot::Green).await {
                    Ok(green) => green,
                    Err(e) => {
                        tracing::debug!(trafficshift = %key(&*self.shift), "cannot read the preview's ready endpoints: {e}");
                        return Ok(());
                    }
                };
                match capacity::count(&green) {
                    Some(e) if e.ready == 0 => format!(
                        "Service {name} has no ready endpoint ({} listed, none ready)",
                        e.listed
                    ),
                    _ => return Ok(()),
                }
            }
        };
        let blue = driver.endpoint_slices(&self.shift, Slot::Blue).await;
        let target = &self.shift.spec.deployment;
        let ready = match blue.as_deref().map(capacity::count) {
            Ok(Some(e)) => format!("{} ready", e.ready),
            Ok(None) => "none listed yet".to_owned(),
            Err(_) => "not readable".to_owned(),
        };
        let note = format!(
            "{why} after promotion, while {target} rolls out the new images: all traffic back to {target}'s ready endpoints ({ready}) until its rollout completes"
        );
        self.publish(m, 0).await?;
        tracing::warn!(trafficshift = %key(&*self.shift), rollout = m.record.rollout.id, "{note}");
        if let Some(metrics) = &mut self.metrics {
            metrics.event(Some(&m.record.rollout), "PreviewLost");
        }
        self.event("PreviewLost", &note).await;
        Ok(())
    }

    /// Lists the pods when due ([`Self::observe_revisions`]); a preview crash-looping before its
    /// promotion fails it (case C09): the machine rolls back, whatever the analysis has seen so
    /// far. After promotion the machine only notes it, so it is not looked for then.
    async fn observe_crash_loop(&mut self, m: &mut Machine) {
        let crash = self.observe_revisions(m).await;
        let phase = m.record.rollout.phase;
        let before_promotion = matches!(
            phase,
            Phase::Provisioning | Phase::Progressing | Phase::Paused
        );
        if let (Some(crash), true) = (crash, before_promotion) {
            let reason = format!("crash-looping: {crash}");
            self.inputs.push_back(Input::PreviewFailed { reason });
        }
    }

    /// A preview that cannot be provisioned: the machine rolls back.
    fn lost(&mut self, reason: String) -> Result<(), ShiftError> {
        self.inputs.push_back(Input::PreviewFailed { reason });
        Ok(())
    }

    /// Invalid objects and foreign owners fail the preview; API errors fail the reconcile.
    fn permanent(&mut self, e: KubeDriverError) -> Result<(), ShiftError> {
        match e {
            KubeDriverError::Api { .. } => Err(e.into()),
            other => self.lost(other.to_string()),
        }
    }

    async fn execute(&mut self, m: &mut Machine, command: Command) -> Result<(), ShiftError> {
        match command {
            Command::StartPreview => {
                let target = self.ctx.driver.target(&self.shift).await?;
                let Some(target) = target else {
                    let why = format!(
                        "spec.deployment: deployment {} does not exist",
                        self.shift.spec.deployment
                    );
                    return self.lost(why);
                };
                // The preview Deployment itself is applied by `observe_preview`, right after.
                if let Err(e) = self.ctx.driver.ensure_services(&self.shift, &target).await {
                    return self.permanent(e);
                }
            }
            Command::SetWeights { preview_bp } => {
                // Mirroring runs exactly while the rollout holds its shadow (0%) step, as in
                // `crossfade run` (runtime::Run::execute).
                let r = &m.record.rollout;
                let shadow = matches!(r.phase, Phase::Progressing | Phase::Paused)
                    && r.config.is_shadow_step(r.step)
                    && preview_bp == 0;
                // A reattached rollout asking again for the weight it had published: that
                // publication stands (the proxies apply what status says), and only its
                // acknowledgements are waited for (session 41).
                let published = (m.record.published_bp, m.record.shadow_published);
                let stands =
                    std::mem::take(&mut m.published_pending) && published == (preview_bp, shadow);
                if !stands {
                    self.publish_with(m, preview_bp, shadow).await?;
                }
                m.pending = Some(Pending {
                    preview_bp,
                    generation: m.record.weights_generation,
                    since: tokio::time::Instant::now(),
                    reported: false,
                });
                // Answered by `observe_acks` once the proxies report the generation.
            }
            Command::OpenWindow => {
                self.refresh_metrics().await?;
                m.shadow_start = self.shadow_snapshot(m);
                m.window_start = self.snapshots().ok();
                if m.first_window.is_none() {
                    m.first_window = m.window_start.clone();
                }
            }
            Command::Analyse => {
                self.refresh_metrics().await?;
                self.analyse(m).await;
            }
            Command::SwapRoles => m.swap_requested = true,
            // Never sent for an in-place promotion: an abort during a held retirement
            // (`Input::RetireHeld`, from `observe_drain`) is refused, since the target already
            // runs the new images and the preview is the route's backup.
            Command::RevertSwap => {}
            Command::DrainActive { deadline } => m.drain_deadline = Some(deadline),
            Command::StopActive => m.stop_requested = true,
            Command::StopPreview => {
                self.ctx.driver.delete_preview(&self.shift).await?;
            }
            Command::AskGates { at, step } => {
                // Asked inline: the reconcile of this TrafficShift waits at most the gates'
                // timeouts (`spec.rollout.gates[].timeout`, default 10s each).
                let context = self.gate_context(m, step);
                let gates = &m.record.rollout.config.gates;
                let answer = crate::gates::ask(gates, at, &context, &self.secrets()).await;
                self.inputs
                    .push_back(Input::GateAnswered { at, step, answer });
            }
            Command::Persist => self.persist(m).await?,
            Command::Progress { message, evidence } => {
                let (e_value, needed, requests) =
                    (evidence.e_value, evidence.needed, evidence.requests);
                let step = m.record.rollout.step + 1;
                tracing::info!(trafficshift = %key(&*self.shift), rollout = m.record.rollout.id, step, e_value, needed, requests, "{message}");
                // No transition, but status.message changed: written once this reconcile ends.
                m.unsaved = true;
            }
            Command::Event { reason, message } => {
                // A reload is said once per kind of failure (`reloads.rs`).
                if let Some(reload) = m.reloaded.as_ref().filter(|_| reason == super::RELOADED) {
                    if !reload.say {
                        tracing::debug!(trafficshift = %key(&*self.shift), "{message}");
                        return Ok(());
                    }
                    let uid = self.shift.uid().unwrap_or_else(|| key(&*self.shift));
                    self.ctx.reloads.said(&uid, &reload.kind);
                }
                tracing::info!(trafficshift = %key(&*self.shift), rollout = m.record.rollout.id, reason, "{message}");
                if let Some(metrics) = &mut self.metrics {
                    metrics.event(Some(&m.record.rollout), reason);
                }
                self.event(reason, &message).await;
            }
        }
        Ok(())
    }

    /// Publishes `preview_bp` (and the rest to the target) in status with the next generation,
    /// without mirror settings.
    async fn publish(&mut self, m: &mut Machine, preview_bp: u32) -> Result<(), ShiftError> {
        self.publish_with(m, preview_bp, false).await
    }

    /// Publishes `preview_bp` with the next generation; with `shadow`, the rollout's mirror
    /// settings too (`status.weights.shadow`), so that the proxies that acknowledge the
    /// generation mirror to the preview.
    async fn publish_with(
        &mut self,
        m: &mut Machine,
        preview_bp: u32,
        shadow: bool,
    ) -> Result<(), ShiftError> {
        m.record.published_bp = preview_bp;
        m.record.shadow_published = shadow;
        m.record.weights_generation += 1;
        m.published_pending = false;
        self.persist(m).await
    }

    async fn persist(&mut self, m: &mut Machine) -> Result<(), ShiftError> {
        // Every write carries the progress deadline in force, as wall-clock time, for a restarted
        // controller ([`super::machine::keep_deadline`]).
        super::machine::keep_deadline(
            m,
            tokio::time::Instant::now(),
            super::machine::unix_ms_now(),
        );
        let previous = self.store.current().status.clone();
        let status = status_of(
            &m.record,
            self.generation(),
            previous.as_ref(),
            &preview_name(&self.shift),
            &now(),
        );
        let mut status = status;
        revisions::with_revisions(&mut status, m.revisions.as_ref());
        self.store.save(status).await?;
        // The whole record is written: nothing is left for the end of the reconcile to write
        // again (session 41).
        m.unsaved = false;
        Ok(())
    }

    /// Whether the revisions last read differ from those in the status last written.
    fn revisions_unshown(&self, m: &Machine) -> bool {
        let Some(current) = &self.store.current().status else {
            return false;
        };
        let mut shown = current.clone();
        revisions::with_revisions(&mut shown, m.revisions.as_ref());
        shown.active_revision != current.active_revision
            || shown.preview_revision != current.preview_revision
    }

    /// Both backends' counters (preview, active), or why they cannot be read.
    fn snapshots(&self) -> Result<(BackendSnapshot, BackendSnapshot), String> {
        let route = key(&*self.shift);
        let metrics = self.metrics_source();
        match (
            metrics.snapshot(&route, Slot::Green),
            metrics.snapshot(&route, Slot::Blue),
        ) {
            (Ok(p), Ok(a)) => Ok((p, a)),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(trafficshift = %route, "cannot read metrics: {e}");
                Err(e.to_string())
            }
        }
    }

    /// What a gate is told about the rollout, for `step` (0-based); as `crossfade run` tells it,
    /// with the route `<namespace>/<name>` and the Deployments as versions.
    fn gate_context(&self, m: &Machine, step: usize) -> crate::gates::GateContext {
        let r = &m.record.rollout;
        // After completion the roles have swapped: the promoted slot is still this rollout's preview.
        let preview = if r.phase == Phase::Completed {
            r.active
        } else {
            r.preview()
        };
        crate::gates::GateContext {
            route: key(&*self.shift),
            rollout: r.id,
            phase: r.phase.as_str().to_string(),
            step: step + 1,
            steps: r.config.steps.len(),
            preview_weight_bp: r.config.weight_bp(step),
            preview: preview.to_string(),
            active: preview.other().to_string(),
            preview_version: preview_name(&self.shift),
            active_version: self.shift.spec.deployment.clone(),
        }
    }

    /// The Secrets of the TrafficShift's namespace, from which gates and checks read their
    /// `headersFrom` values at each call.
    fn secrets(&self) -> crate::kube::secrets::ClusterValues {
        let ns = self.shift.namespace().unwrap_or_else(|| "default".into());
        crate::kube::secrets::ClusterValues::new(self.ctx.client.clone(), &ns)
    }

    /// The template variables of `spec.rollout.analysis.checks` for the current step: route
    /// `<namespace>/<name>`, backends `green`/`blue`, versions the preview and target Deployments.
    fn check_context(&self, m: &Machine) -> crate::analysis::checks::Context {
        let r = &m.record.rollout;
        crate::analysis::checks::Context::new(
            &key(&*self.shift),
            r.preview().as_str(),
            r.active.as_str(),
            &preview_name(&self.shift),
            &self.shift.spec.deployment,
            r.config.interval_of(r.step),
        )
    }

    /// Judges the window as the local runtime does (`runtime::Run::analyse`): a conclusive verdict
    /// opens the next window, an inconclusive one keeps it open; a cumulative judge sees
    /// everything since the first window. With `spec.rollout.analysis.checks`, they are read
    /// here (concurrently, each bounded by its timeout) and folded into the verdict: one out of
    /// range fails it, one unread makes a pass inconclusive.
    async fn analyse(&mut self, m: &mut Machine) {
        let r = &m.record.rollout;
        if r.config.is_shadow_step(r.step) {
            return self.analyse_shadow(m).await;
        }
        let (now, unread) = match self.snapshots() {
            Ok(now) => (Some(now), None),
            Err(e) => (None, Some(e)),
        };
        let start = if m.judge.cumulative() {
            &m.first_window
        } else {
            &m.window_start
        };
        let mut verdict = match (start, &now) {
            (Some((p0, a0)), Some((p1, a1))) => judge_at(
                &*m.judge,
                m.record.published_bp,
                &Window::between(p0, p1),
                &Window::between(a0, a1),
            ),
            _ => m.judge.judge(&Window::default(), &Window::default()),
        };
        // The observed split over this step's window (not the cumulative one).
        if let (Some((p0, a0)), Some((p1, a1))) = (&m.window_start, &now) {
            let preview = Window::between(p0, p1).requests;
            let active = Window::between(a0, a1).requests;
            verdict = split::guard(verdict, m.record.published_bp, preview, active);
        }
        // A window that could not be read says why (a proxy unreachable, a 401 from its admin API).
        if let Some(why) = unread {
            verdict.summary = format!("{}; cannot read metrics: {why}", verdict.summary);
        }
        let checks = &m.record.rollout.config.analysis.checks;
        if !checks.is_empty() {
            let (context, secrets) = (self.check_context(m), self.secrets());
            let results = crate::analysis::checks::evaluate(checks, &context, &secrets).await;
            verdict = verdict.with_checks(results);
        }
        if verdict.outcome != Outcome::Inconclusive || m.window_start.is_none() {
            m.window_start = now;
        }
        self.inputs.push_back(Input::Verdict(verdict));
    }

    /// Judges the shadow (0%) step as the local runtime does (`runtime::Run::analyse_shadow`): by
    /// the preview's shadow counters (comparisons, response times) summed over the proxies since
    /// the window opened
    /// ([`crate::analysis::shadow::judge`]); an inconclusive look keeps the window open. Checks
    /// are folded in as at any step.
    async fn analyse_shadow(&mut self, m: &mut Machine) {
        let now = self.shadow_snapshot(m);
        let window = match (&m.shadow_start, &now) {
            (Some(start), Some(now)) => Some(now.since(start)),
            _ => None,
        };
        let snapshots = self.snapshots().ok();
        // The active backend's live traffic over the same window, for `max_p99_ratio`.
        let active = match (&m.window_start, &snapshots) {
            (Some((_, a0)), Some((_, a1))) => Window::between(a0, a1),
            _ => Window::default(),
        };
        let config = &m.record.rollout.config;
        let mut verdict =
            crate::analysis::shadow::judge(&config.analysis, window.as_ref(), &active);
        let checks = &config.analysis.checks;
        if !checks.is_empty() {
            let (context, secrets) = (self.check_context(m), self.secrets());
            let results = crate::analysis::checks::evaluate(checks, &context, &secrets).await;
            verdict = verdict.with_checks(results);
        }
        if verdict.outcome != Outcome::Inconclusive || m.shadow_start.is_none() {
            m.shadow_start = now;
        }
        // The live window follows, so that the first live step's window starts here as it would.
        if verdict.outcome != Outcome::Inconclusive || m.window_start.is_none() {
            m.window_start = snapshots;
        }
        self.inputs.push_back(Input::Verdict(verdict));
    }

    /// The preview's shadow counters summed over the proxies (scraped by the last refresh), at the
    /// shadow step only; `None` elsewhere, when no proxy reported any, or when they cannot be read
    /// (logged).
    fn shadow_snapshot(&self, m: &Machine) -> Option<crossfade_proxy::ShadowSnapshot> {
        let r = &m.record.rollout;
        if !r.config.is_shadow_step(r.step) {
            return None;
        }
        let route = key(&*self.shift);
        match self.metrics_source().shadow(&route, Slot::Green) {
            Ok(snapshot) => snapshot,
            Err(e) => {
                tracing::warn!(trafficshift = %route, "cannot read shadow counters: {e}");
                None
            }
        }
    }

    /// Publishes an Event on the TrafficShift; a failure to publish is logged, never fatal.
    pub(super) async fn event(&self, reason: &str, note: &str) {
        let type_ = if WARNINGS.contains(&reason) {
            EventType::Warning
        } else {
            EventType::Normal
        };
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(cut(note, MAX_NOTE)),
            action: "Rollout".into(),
            secondary: None,
        };
        // The resourceVersion keeps kube's Recorder from folding every later Event with the same
        // reason (each step's `StepStarted`) into a series that shows only the first note.
        let current = self.store.current();
        let mut regarding = current.object_ref(&());
        regarding.resource_version = current.metadata.resource_version.clone();
        let uid = current.uid().unwrap_or_else(|| key(current));
        let note = event.note.as_deref().unwrap_or_default();
        let recorder =
            self.ctx
                .recorder_for(&uid, reason, regarding.resource_version.as_ref(), note);
        if let Err(e) = recorder.publish(&event, &regarding).await {
            tracing::warn!(trafficshift = %key(current), reason, error = %crate::kube::api_error_words(&e), "publish event");
        }
    }
}

/// A Deployment's `spec.replicas`, 1 when unset (the API server's default).
fn desired_replicas(deploy: &Deployment) -> i32 {
    deploy.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// Whether the target's pod template was changed under the rollout ([`changed_under`]).
#[derive(Debug, PartialEq)]
pub(super) enum Changed {
    /// It runs what the preview was made from, or already this rollout's images (or the record
    /// is of an older version, which does not tell).
    No,
    /// Changed, on a Deployment Crossfade manages (`crossfade.dev/enabled=true`): Crossfade's
    /// reconciler of Deployments takes the change back and requests it as a rollout.
    Managed,
    /// Changed, on a Deployment Crossfade does not manage: the rollout rolls back with this
    /// reason rather than overwrite the change at promotion.
    Unmanaged(String),
}

/// Whether the promotion's patch was made on `target`: its images record
/// ([`crate::kube::template::SERVING_IMAGES`], written in the same patch) names `shift`'s images.
fn promotion_patched(target: &Deployment, shift: &TrafficShift) -> bool {
    crate::kube::template::recorded(target).is_some_and(|recorded| {
        shift
            .spec
            .images
            .iter()
            .all(|(c, i)| recorded.get(c) == Some(&i.0))
    })
}

/// Compares the target's template images with `started_from` (what the preview was made from)
/// before promotion writes `shift`'s images into it: a template that shows neither the images the
/// rollout started from nor them with `shift`'s images, and whose `crossfade.dev/serving-images`
/// record does not name `shift`'s images (Crossfade's own patch, being rolled out), was changed
/// by someone else under the rollout (trial 10, K4: `kubectl set image` with
/// `crossfade.dev/enabled=false`).
pub(super) fn changed_under(
    started_from: Option<&std::collections::BTreeMap<String, String>>,
    target: &Deployment,
    shift: &TrafficShift,
) -> Changed {
    let Some(started) = started_from else {
        return Changed::No;
    };
    let now = crate::kube::template::template_images(target);
    let ours = |c: &String| shift.spec.images.get(c).map(|i| i.0.clone());
    let mut promoted = started.clone();
    for (c, image) in &mut promoted {
        if let Some(new) = ours(c) {
            *image = new;
        }
    }
    if now == *started || now == promoted || promotion_patched(target, shift) {
        return Changed::No;
    }
    if crate::kube::trigger::managed(target) {
        return Changed::Managed;
    }
    let containers: std::collections::BTreeSet<&String> =
        now.keys().chain(started.keys()).collect();
    let changes: Vec<String> = containers
        .into_iter()
        .filter(|c| now.get(*c) != started.get(*c))
        .map(|c| {
            let image = now.get(c).map_or("(removed)", String::as_str);
            let was = started.get(c).map_or("no such container", String::as_str);
            let promotes =
                ours(c).map_or_else(String::new, |i| format!(", this rollout promotes {i}"));
            format!("{c}={image} (the rollout started from {was}{promotes})")
        })
        .collect();
    Changed::Unmanaged(format!(
        "deployment {}'s pod template was changed by another client during the rollout: {}; crossfade.dev/enabled is not \"true\", so promotion does not overwrite it",
        shift.spec.deployment,
        changes.join(", ")
    ))
}

/// The Unix time (seconds) `deploy`'s rolling update last made progress: its `Progressing`
/// condition's `lastUpdateTime` (the Deployment controller moves it at every new ReplicaSet,
/// scale step and available pod), `None` without one.
fn last_progress(deploy: &Deployment) -> Option<f64> {
    let conditions = deploy.status.as_ref()?.conditions.as_ref()?;
    let progressing = conditions.iter().find(|c| c.type_ == "Progressing")?;
    let at = progressing.last_update_time.as_ref()?;
    #[allow(clippy::cast_precision_loss)] // milliseconds since 1970 fit an f64 exactly
    Some(at.0.as_millisecond() as f64 / 1000.0)
}

/// The `(name, image)` of each container of the Deployment's pod template, in template order.
fn container_images(target: &Deployment) -> Vec<(String, String)> {
    let containers = target
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    containers
        .iter()
        .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
        .collect()
}

/// The current time as a Kubernetes `Time` (RFC 3339 in the API).
pub(super) fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// `text` cut to at most `max` bytes on a character boundary.
pub(super) fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}
