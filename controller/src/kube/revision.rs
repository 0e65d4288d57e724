//! What each backend's pods really run: the image digests their kubelets report
//! (`status.containerStatuses[].imageID`), for `status.activeRevision` / `status.previewRevision`
//! and the `image_digest` label of `crossfade_backend_info`.
//!
//! Which pods: those the backend's Service selects, so that the answer is "what the proxy sends
//! this backend's traffic to": blue is the target Deployment's `matchLabels` (during the target's
//! rolling update at promotion that is the pods of both its ReplicaSets, and the revision shows
//! both), green is the preview's selector ([`crate::driver::kube::green_selector`]). Only pods in
//! phase `Running` and not being deleted count; init and ephemeral containers are left out.
//!
//! How they are read: a label-selected **list at reconcile time**, not a reflector. A reflector
//! needs one label selector per watch, and the blue selector is each target Deployment's own
//! (`app=web`), so it would be either a watch per TrafficShift and backend (started and stopped
//! with the rollouts) or a watch of every pod in the namespace, whose cache and event stream grow
//! with the whole namespace rather than with the two backends. The list returns only the
//! backend's pods and runs at most once per [`REFRESH`] per TrafficShift, or sooner when the
//! target Deployment (its status moves at every step of a rolling update) or the rollout's phase
//! changed (the shift controller decides, `kube::shift`). So the API load is two small lists per
//! TrafficShift per 10 s while it is being reconciled, and none while nothing changes. The price:
//! a pod replaced without any change to the Deployments shows up at the next reconcile only.
//! RBAC: `list` on `pods`, nothing else.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::kube::crd::{ContainerRevision, RevisionStatus, MAX_DIGESTS};

/// Longest a backend's revision is reused without listing its pods again, while reconciles run.
pub const REFRESH: Duration = Duration::from_secs(10);

/// A content digest as the OCI image spec writes it (`<algorithm>:<hex>`), validated: `sha256`
/// with 64 or `sha512` with 128 lowercase hex digits (the registered algorithms of the OCI
/// image-spec, descriptor.md "Digests").
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

/// Why an `imageID` names no digest.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImageIdError {
    /// No `<algorithm>:<hex>` where the digest belongs (after the last `@`, or the whole value).
    #[error("no digest in {0:?}: expected [scheme://][name@]sha256:<64 hex>")]
    NoDigest(String),
    /// An algorithm other than `sha256` and `sha512`.
    #[error("unsupported digest algorithm {0:?} (sha256 and sha512 are known)")]
    Algorithm(String),
    /// The hex part has the wrong length or characters other than `0-9a-f`.
    #[error("digest {0:?}: the {1} part must be {2} lowercase hex digits")]
    Encoded(String, &'static str, usize),
}

// === impl Digest ===

impl Digest {
    /// The digest as text, `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The digest in a container status's `imageID`, in any of the shapes container runtimes write:
/// `docker-pullable://registry/app@sha256:<hex>` (dockershim, cri-dockerd), `docker://sha256:<hex>`
/// (docker, an image without a registry digest: its image ID), `registry/app@sha256:<hex>`
/// (containerd, CRI-O) or a bare `sha256:<hex>` (containerd, an image loaded without a registry,
/// e.g. `kind load`: its config digest). `Ok(None)` for an empty value (the container has not
/// started yet: the kubelet has not resolved the image).
///
/// # Errors
/// [`ImageIdError`] when the value is not empty and names no valid digest.
pub fn parse_image_id(image_id: &str) -> Result<Option<Digest>, ImageIdError> {
    let value = image_id.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let reference = value.split_once("://").map_or(value, |(_, rest)| rest);
    let digest = reference
        .rsplit_once('@')
        .map_or(reference, |(_, digest)| digest);
    let Some((algorithm, encoded)) = digest.split_once(':') else {
        return Err(ImageIdError::NoDigest(image_id.to_owned()));
    };
    let want = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        // `name:tag` without a digest has no `@`: its "algorithm" is a repository name.
        _ if !reference.contains('@') => return Err(ImageIdError::NoDigest(image_id.to_owned())),
        other => return Err(ImageIdError::Algorithm(other.to_owned())),
    };
    let lower_hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    if encoded.len() != want || !encoded.chars().all(lower_hex) {
        let algorithm = if want == 64 { "sha256" } else { "sha512" };
        return Err(ImageIdError::Encoded(digest.to_owned(), algorithm, want));
    }
    Ok(Some(Digest(digest.to_owned())))
}

/// A pod's container status whose `imageID` names no digest, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    /// The pod's name.
    pub pod: String,
    /// The container's name.
    pub container: String,
    /// Why.
    pub error: ImageIdError,
}

/// The revision of Deployment `deployment`, whose template runs `template` (`(container,
/// image)` in template order), from the backend's `pods`: see [`RevisionStatus`]. Container
/// statuses whose `imageID` is not a digest are left out and returned, so the caller can log them.
pub fn revision(
    deployment: &str,
    template: &[(String, String)],
    pods: &[Pod],
) -> (RevisionStatus, Vec<Unreadable>) {
    let mut seen: BTreeMap<(String, String), BTreeSet<Digest>> = BTreeMap::new();
    let mut unreadable = Vec::new();
    let mut counted = 0u32;
    for pod in pods.iter().filter(|p| running(p)) {
        counted = counted.saturating_add(1);
        for (container, image, image_id) in statuses(pod) {
            match parse_image_id(image_id) {
                Ok(Some(digest)) => {
                    seen.entry((container.to_owned(), image.to_owned()))
                        .or_default()
                        .insert(digest);
                }
                Ok(None) => {}
                Err(error) => unreadable.push(Unreadable {
                    pod: pod.name_any(),
                    container: container.to_owned(),
                    error,
                }),
            }
        }
    }
    let status = RevisionStatus {
        deployment: deployment.to_owned(),
        pods: counted,
        mixed: mixed(&seen),
        containers: containers(template, seen),
    };
    (status, unreadable)
}

/// Restarts of one container from which the preview counts as crash-looping even while the
/// container happens to be up between two crashes (case C09). Three, not one: a single restart (an
/// OOM kill under a burst, a node hiccup) is not yet a loop; the kubelet's own back-off has
/// started by the second, and three restarts of a pod made for this rollout minutes ago is a loop.
pub const CRASH_LOOP_RESTARTS: i32 = 3;

/// The first container of `pods` (pods being deleted left out; init containers included) that
/// crash-loops, described for an event: one waiting in `CrashLoopBackOff` (the kubelet's back-off
/// between restarts of a container that keeps exiting), or one restarted at least
/// [`CRASH_LOOP_RESTARTS`] times. `None` when every container is up or starting normally.
///
/// The description names the pod, the container, its restart count and how it last ended:
/// `pod web-green-0 container app: CrashLoopBackOff, 4 restarts, last exit code 1 (Error)`.
pub fn crash_looping(pods: &[Pod]) -> Option<String> {
    for pod in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let Some(status) = &pod.status else { continue };
        let containers = status.init_container_statuses.iter().flatten();
        for c in containers.chain(status.container_statuses.iter().flatten()) {
            let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
            let backoff = waiting.and_then(|w| w.reason.as_deref()) == Some("CrashLoopBackOff");
            if !backoff && c.restart_count < CRASH_LOOP_RESTARTS {
                continue;
            }
            let state = if backoff {
                "CrashLoopBackOff"
            } else {
                "restarting"
            };
            let mut text = format!(
                "pod {} container {}: {state}, {} restart{}",
                pod.name_any(),
                c.name,
                c.restart_count,
                if c.restart_count == 1 { "" } else { "s" }
            );
            let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
            if let Some(t) = last {
                text.push_str(&format!(", last exit code {}", t.exit_code));
                if let Some(reason) = &t.reason {
                    text.push_str(&format!(" ({reason})"));
                }
            }
            return Some(text);
        }
    }
    None
}

/// Whether a pod counts: phase `Running` and not being deleted.
fn running(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && phase == Some("Running")
}

/// `(container, image, imageID)` of each container status of `pod`: the image is the one the
/// pod's spec asks for (as the template named it), else the one the status reports.
fn statuses(pod: &Pod) -> Vec<(&str, &str, &str)> {
    let spec = pod.spec.as_ref().map(|s| s.containers.as_slice());
    let spec_image = |name: &str| {
        spec.unwrap_or_default()
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.image.as_deref())
    };
    let list = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref());
    list.into_iter()
        .flatten()
        .map(|c| {
            let image = spec_image(&c.name).unwrap_or(&c.image);
            (c.name.as_str(), image, c.image_id.as_str())
        })
        .collect()
}

/// Whether some container runs under more than one digest, whatever its image reference.
fn mixed(seen: &BTreeMap<(String, String), BTreeSet<Digest>>) -> bool {
    let mut by_container: BTreeMap<&str, BTreeSet<&Digest>> = BTreeMap::new();
    for ((container, _), digests) in seen {
        by_container.entry(container).or_default().extend(digests);
    }
    by_container.values().any(|d| d.len() > 1)
}

/// The template's containers in order, then the other `(container, image)` pairs pods run, with
/// their digests (at most [`MAX_DIGESTS`] each).
fn containers(
    template: &[(String, String)],
    mut seen: BTreeMap<(String, String), BTreeSet<Digest>>,
) -> Vec<ContainerRevision> {
    let entry = |(name, image): (String, String), digests: BTreeSet<Digest>| ContainerRevision {
        name,
        image,
        digests: digests.into_iter().take(MAX_DIGESTS).map(|d| d.0).collect(),
    };
    let mut out: Vec<ContainerRevision> = template
        .iter()
        .map(|key| {
            let digests = seen.remove(key).unwrap_or_default();
            entry(key.clone(), digests)
        })
        .collect();
    out.extend(seen.into_iter().map(|(key, digests)| entry(key, digests)));
    out
}

/// `k=v,k2=v2`: a label selector string for `labels` (equality only, as a Service selects).
pub fn selector_text(labels: &BTreeMap<String, String>) -> String {
    let terms: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    terms.join(",")
}

/// The pods in `namespace` that `labels` select (one list request); none for an empty selector,
/// which would select every pod.
///
/// # Errors
/// The API error (e.g. 403 when the controller's role lacks `list` on `pods`).
pub async fn list_pods(
    client: &Client,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Result<Vec<Pod>, kube::Error> {
    if labels.is_empty() {
        return Ok(Vec::new());
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().labels(&selector_text(labels));
    Ok(api.list(&params).await?.items)
}
