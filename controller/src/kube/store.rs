//! The Kubernetes store: a rollout's state lives in its TrafficShift's status (status
//! subresource), written with the object's `resourceVersion` so that a write based on a stale read
//! is refused (409 Conflict, Kubernetes API conventions on concurrency control), then re-read and
//! retried. A restarted controller reads the state back from there.

#[cfg(test)]
mod tests;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::ResourceExt;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::crd::{CommandsSeen, ImageRef, TrafficShift, TrafficShiftStatus};
use crate::rollout::{Phase, Rollout};

/// How many 409 Conflicts in a row one write re-reads and retries before giving up.
const CONFLICT_RETRIES: usize = 3;

/// What Crossfade keeps in `status.rolloutState`: the machine and what the controller published.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShiftRecord {
    /// The `metadata.generation` of the spec this rollout rolls out.
    pub generation: i64,
    /// The rollout state machine (timers excluded; see `rollout::Input::Reattached`).
    pub rollout: Rollout,
    /// The preview weight last published, in basis points (0..=10000).
    pub published_bp: u32,
    /// Rises by one with every weights publication (`status.weights.generation`).
    pub weights_generation: u64,
    /// Whether the last publication was of the shadow step, with the mirror settings of
    /// `rollout.config.analysis.shadow` (`status.weights.shadow`). Absent in records written
    /// before shadow steps existed in Kubernetes mode: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow_published: bool,
    /// The command annotations acted on (shown as `status.commands`); carried from one rollout
    /// to the next, except `paused` (see [`crate::kube::command`]).
    #[serde(default)]
    pub commands: CommandsSeen,
    /// Why the command annotations were refused, naming each one; `None` when they are valid
    /// (condition `AnnotationsValid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation_problem: Option<String>,
    /// The images this rollout rolls out (`spec.images` of generation [`Self::generation`]):
    /// promotion gives the target these, even when a newer spec arrived meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<BTreeMap<String, ImageRef>>,
    /// The target Deployment's template images (container → image) the preview was made from,
    /// recorded while provisioning: promotion does not overwrite a template changed since by
    /// someone else (`kube/shift/exec.rs`, `changed_under`). Absent in records of older versions
    /// (no such check) and before provisioning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_from: Option<BTreeMap<String, String>>,
    /// The target Deployment's template the preview was made from, in parts without images
    /// ([`crate::kube::template::template_parts`]: part → digest), recorded while provisioning:
    /// until promotion, a part that changed (`kubectl set env`, new resources) rolls the rollout
    /// back, since the preview does not have it (`kube/shift/exec.rs`, `observe_target_template`).
    /// Absent in records of older versions (no such check) and before provisioning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_template: Option<BTreeMap<String, String>>,
    /// When the progress deadline of the phase or step the rollout stands in passes, as Unix time
    /// in milliseconds (the machine's own deadline is a monotonic instant, lost with the
    /// process): a restarted controller resumes with what is left of it
    /// ([`crate::rollout::Input::Reattached`]). Absent when no deadline runs, and in records of
    /// older versions (a restart then gives a whole `progressDeadline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_at_ms: Option<u64>,
    /// The preview Deployment's template images (container → image) as the API server stored them
    /// at its last apply, while provisioning: from the preview's readiness to promotion, a preview
    /// whose template shows other images, or that is gone, was changed by another client, and the
    /// rollout rolls back rather than promote images its analysis did not judge
    /// (`kube/shift/exec.rs`, `observe_preview_unchanged`). Absent in records of older versions
    /// (no such check) and before provisioning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_images: Option<BTreeMap<String, String>>,
    /// The most ready endpoints the target's Service had while this rollout went forward (from
    /// its start to a rollback): a rollback measures the target's capacity against it as well as
    /// against its desired replicas ([`crate::kube::capacity`]). Absent until the first reading
    /// with an EndpointSlice, and in records of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_ready_most: Option<u32>,
    /// The target's `spec.replicas` the preview was last given (at its apply, then at each
    /// change of the target's until promotion: an autoscaler or `kubectl scale`), so that the
    /// preview keeps the capacity of the Deployment whose traffic it takes over
    /// (`kube/shift/exec.rs`, `follow_target_replicas`). Absent in records of older versions and
    /// before provisioning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_replicas: Option<i32>,
    /// The spec generation that superseded this rollout while that spec was invalid
    /// (`kube/shift/machine.rs`, `load_superseded`): the rollout was aborted because of the
    /// invalid edit, not because its own spec changed, so a valid spec after it starts a new
    /// rollout even when it asks for what this one did. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<i64>,
    /// The target Deployment this rollout rolls out (`spec.deployment` of generation
    /// [`Self::generation`]): the rollout reads, aborts into and promotes this one, even when a
    /// newer spec names another (which supersedes it) or does not decode. Absent in records of
    /// older versions: the target named in the rollout's promotion words, else the spec's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// `spec.rollout.unreadyGrace` of generation [`Self::generation`], in milliseconds, or the
    /// default (30 s) when the spec had none: how long the preview may have no ready pod before
    /// promotion (`kube/shift/exec.rs`, `observe_ready_pods`). An edit of it is a new policy,
    /// which supersedes the rollout as any `spec.rollout` edit does. Absent in records of older
    /// versions: the spec's as it is now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unready_grace_ms: Option<u64>,
    /// After promotion, while the target Deployment is missing (deleted before the role swap):
    /// what `status.message` shows instead of the rollout's own message, which would say the
    /// target rolls out the new images (`kube/shift/exec.rs`, `observe_swap`). Kept here, not
    /// only in memory, so that a reload of the rollout writes nothing new. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_missing: Option<String>,
    /// When the rollout's phase or step last changed, RFC 3339 with microseconds (as Kubernetes
    /// writes a `MicroTime`, e.g. `2026-12-06T01:30:04.736462Z`): a controller that takes the
    /// rollout over (a restart, a new leader) sets `crossfade_rollout_transition_timestamp_seconds`
    /// from it. Before (session 41) it set it to the time of the takeover, which delayed the alert
    /// `CrossfadeRolloutStuck` by the takeover's age. Absent in records of older versions, and
    /// before a new rollout's first transition: the time of the takeover then, as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transitioned_at: Option<MicroTime>,
}

/// Why the status could not be written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The API server refused the write or could not be reached.
    #[error(
        "trafficshift {shift}: write status: {}",
        crate::kube::api_error_words(source)
    )]
    Api {
        /// `namespace/name`.
        shift: String,
        /// The API error.
        source: kube::Error,
    },
    /// Someone else wrote a different rollout state since this controller last did (a second
    /// controller without leader election, or a person): this controller's copy is stale and must
    /// be re-read from status instead of overwriting it.
    #[error(
        "trafficshift {shift}: status.rolloutState was changed by another writer; re-reading it"
    )]
    Superseded {
        /// `namespace/name`.
        shift: String,
    },
    /// Conflicts kept coming.
    #[error("trafficshift {shift}: write status: {CONFLICT_RETRIES} conflicts in a row")]
    Conflicts {
        /// `namespace/name`.
        shift: String,
    },
}

/// Writes one TrafficShift's status, guarded by the resourceVersion of the last read or write.
///
/// The API server's answers are read as dynamic objects: a TrafficShift whose spec was edited
/// into one that does not decode (`spec.rollout.hold: 9000h`, over the 366-day bound) still has
/// its status written, so that a rollout under way can end from its record (before, every write
/// failed decoding the answer, and the rollout stood still until the spec was fixed).
pub struct StatusStore {
    api: Api<DynamicObject>,
    current: TrafficShift,
}

// === impl ShiftRecord ===

impl ShiftRecord {
    /// The record of `rollout`, rolling out spec generation `generation`: nothing published yet
    /// (0 bp, weights generation 0), no command seen, and none of the optional fields (`images`,
    /// `deployment`, ...), which the controller fills in as the rollout goes.
    pub fn new(generation: i64, rollout: Rollout) -> ShiftRecord {
        ShiftRecord {
            generation,
            rollout,
            published_bp: 0,
            weights_generation: 0,
            shadow_published: false,
            commands: CommandsSeen::default(),
            annotation_problem: None,
            images: None,
            started_from: None,
            started_template: None,
            deadline_at_ms: None,
            preview_images: None,
            active_ready_most: None,
            preview_replicas: None,
            superseded_by: None,
            deployment: None,
            unready_grace_ms: None,
            target_missing: None,
            transitioned_at: None,
        }
    }

    /// Stamps [`Self::transitioned_at`] with the time now (to the microsecond it is written
    /// with) when the rollout's phase or step is no longer `before` (phase, step), as read before
    /// the machine's last step.
    pub fn stamp_transition(&mut self, before: (Phase, usize)) {
        if (self.rollout.phase, self.rollout.step) == before {
            return;
        }
        let micros = k8s_openapi::jiff::Timestamp::now().as_microsecond();
        let now = k8s_openapi::jiff::Timestamp::from_microsecond(micros);
        self.transitioned_at = now.ok().map(MicroTime);
    }

    /// [`Self::transitioned_at`] as Unix seconds, for the metrics.
    pub fn transitioned_unix(&self) -> Option<f64> {
        #[allow(clippy::cast_precision_loss)] // microseconds since 1970 fit a double's 53 bits
        self.transitioned_at
            .as_ref()
            .map(|t| t.0.as_microsecond() as f64 / 1e6)
    }

    /// The record in `status.rolloutState`, if there is one that decodes.
    ///
    /// A record that does not decode (written by another version) is `None` with a warning: the
    /// rollout then starts afresh rather than guessing.
    pub fn from_status(shift: &TrafficShift) -> Option<ShiftRecord> {
        let value = shift.status.as_ref()?.rollout_state.clone()?;
        match serde_json::from_value(value) {
            Ok(record) => Some(record),
            Err(e) => {
                tracing::warn!(trafficshift = %shift.name_any(), error = %e, "status.rolloutState does not decode; ignoring it");
                None
            }
        }
    }
}

impl ShiftRecord {
    /// `shift` as this rollout rolls it out: with the rollout's target Deployment
    /// ([`Self::target`]), its images (`shift`'s own when the record has none: a record of an
    /// older version) and its `unreadyGrace`, whatever a newer spec says.
    pub fn rolled_out(&self, shift: &TrafficShift) -> TrafficShift {
        let mut shift = shift.clone();
        if let Some(images) = &self.images {
            shift.spec.images.clone_from(images);
        }
        shift.spec.deployment = self.target(&shift).to_owned();
        if let Some(ms) = self.unready_grace_ms {
            let grace = std::time::Duration::from_millis(ms);
            shift.spec.rollout.unready_grace = Some(super::crd::Span(grace));
        }
        shift
    }

    /// The target Deployment of this rollout: [`Self::deployment`], else (a record of an older
    /// version) the one its promotion words name, else `shift`'s `spec.deployment`. The
    /// controller names the target of a running record that has neither before it reads it
    /// (`kube/shift/older.rs`), so the last fallback is right there, and so do the commands of
    /// `crossfade promote|abort|... --kube` (`kube/ops.rs`) by the same rule.
    pub fn target<'a>(&'a self, shift: &'a TrafficShift) -> &'a str {
        match (&self.deployment, &self.rollout.promotion) {
            (Some(deployment), _) => deployment,
            (None, crate::rollout::Promotion::InPlace { target, .. }) => target,
            (None, crate::rollout::Promotion::Swap) => &shift.spec.deployment,
        }
    }
}

// === impl StatusStore ===

impl StatusStore {
    /// A store for `shift`, as last read (its resourceVersion guards the first write), writing
    /// through `api`'s client in `shift`'s namespace.
    pub fn new(api: Api<TrafficShift>, shift: TrafficShift) -> StatusStore {
        let ns = shift.namespace().unwrap_or_else(|| "default".into());
        let resource = ApiResource::erase::<TrafficShift>(&());
        StatusStore {
            api: Api::namespaced_with(api.into(), &ns, &resource),
            current: shift,
        }
    }

    /// The object the API server answered, as this store keeps it: decoded when it decodes;
    /// else (a spec that does not decode) the spec last kept, with the answer's metadata (its
    /// resourceVersion guards the next write) and status (`sent` when even that does not decode).
    fn kept_of(&self, answer: &DynamicObject, sent: Option<&TrafficShiftStatus>) -> TrafficShift {
        let value = serde_json::to_value(answer).unwrap_or_default();
        if let Ok(shift) = super::crd::decode(&value) {
            return shift;
        }
        let mut shift = self.current.clone();
        shift.metadata = answer.metadata.clone();
        let status = answer.data.get("status").cloned();
        shift.status = status
            .and_then(|s| serde_json::from_value(s).ok())
            .or_else(|| sent.cloned());
        shift
    }

    /// Starts the next write from `shift` (the object this controller's last write returned), whose
    /// status is this controller's own: a conflict then means someone else wrote since.
    pub fn rebase(&mut self, shift: TrafficShift) {
        self.current = shift;
    }

    /// The object as last read or written.
    pub fn current(&self) -> &TrafficShift {
        &self.current
    }

    /// Replaces the status (PUT on `/status` with the resourceVersion last seen). On 409 Conflict it
    /// re-reads the object; when its `rolloutState` is still the one this store last saw, the write
    /// is retried on the fresh resourceVersion (the conflict came from a spec or metadata change).
    ///
    /// # Errors
    /// [`StoreError::Superseded`] when another writer changed `rolloutState`;
    /// [`StoreError::Conflicts`] after 3 conflicts in a row; [`StoreError::Api`] otherwise.
    pub async fn save(&mut self, status: TrafficShiftStatus) -> Result<(), StoreError> {
        let name = self.current.name_any();
        let shift = crate::driver::kube::key(&self.current);
        let api_error = |source| StoreError::Api {
            shift: shift.clone(),
            source,
        };
        for _ in 0..CONFLICT_RETRIES {
            let mut next = self.current.clone();
            next.status = Some(status.clone());
            // The API server takes only the status from a write of `/status`.
            let body: DynamicObject = serde_json::to_value(&next)
                .and_then(serde_json::from_value)
                .map_err(|e| api_error(kube::Error::SerdeError(e)))?;
            match self
                .api
                .replace_status(&name, &PostParams::default(), &body)
                .await
            {
                Ok(written) => {
                    self.current = self.kept_of(&written, Some(&status));
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.is_conflict() => {
                    let fresh = self.api.get_status(&name).await.map_err(api_error)?;
                    let fresh = self.kept_of(&fresh, None);
                    if state(&fresh) != state(&self.current) {
                        return Err(StoreError::Superseded { shift });
                    }
                    self.current = fresh;
                }
                Err(e) => return Err(api_error(e)),
            }
        }
        Err(StoreError::Conflicts { shift })
    }
}

fn state(shift: &TrafficShift) -> Option<&serde_json::Value> {
    shift.status.as_ref()?.rollout_state.as_ref()
}
