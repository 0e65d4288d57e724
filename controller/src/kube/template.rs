//! `kubectl set image` (or any client changing a managed Deployment's container images), pure:
//! telling Crossfade's own image changes from others' and turning others' into a rollout request.
//!
//! **How "not ours" is told.** Crossfade records on the Deployment the images its pod template
//! runs as far as Crossfade is concerned, in the annotation [`SERVING_IMAGES`] (JSON, container →
//! image). It writes it when it first sees a managed Deployment (the images then are accepted as
//! they are) and in the same strategic merge patch as its own promotion, so its own change is
//! never seen without its record. A template whose images differ from the record was changed by
//! someone else.
//!
//! **What happens then.** In one strategic merge patch, guarded by the resourceVersion read: the
//! changed containers get their recorded images back (the target keeps serving what analysis
//! approved), and the new images become the rollout annotations `crossfade.dev/image` (a single
//! container Deployment that does not use `image.<container>`) or `crossfade.dev/image.<container>`.
//! The trigger then asks for a TrafficShift with those images, a new value supersedes a running
//! rollout, and the preview is made from the target's template with the new images. The target
//! only takes them at promotion, after analysis passed.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{json, Value};

use super::trigger::{IMAGE, IMAGE_PREFIX};

/// Annotation Crossfade keeps on a managed Deployment: the images of its pod template that
/// Crossfade set or accepted, as a JSON object from container name to image.
pub const SERVING_IMAGES: &str = "crossfade.dev/serving-images";

/// What a managed Deployment's images say.
#[derive(Clone, Debug, PartialEq)]
pub enum Images {
    /// The template runs the recorded images: nothing to do.
    Recorded,
    /// No record yet (or one that does not parse): write this merge patch, which records the
    /// template's images as they are.
    FirstSight {
        /// The merge patch to apply.
        patch: Value,
    },
    /// Someone else changed images: apply this strategic merge patch (revert and request).
    Changed {
        /// The strategic merge patch: recorded images back, rollout annotations set, and the
        /// resourceVersion read as precondition.
        patch: Value,
        /// Container → (recorded image, new image), for the Event.
        changes: BTreeMap<String, (String, String)>,
    },
}

/// The images of `deploy`'s pod template, container → image (containers without one left out).
pub fn template_images(deploy: &Deployment) -> BTreeMap<String, String> {
    deploy
        .spec
        .iter()
        .flat_map(|s| s.template.spec.iter())
        .flat_map(|p| p.containers.iter())
        .filter_map(|c| Some((c.name.clone(), c.image.clone()?)))
        .collect()
}

/// The template annotation `kubectl rollout restart` sets: a restart, not a change of what runs.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// `deploy`'s pod template in parts, each a digest (16 hex digits of its SHA-256) of everything in
/// it **but the containers' images**: `container <name>` for each container (its environment,
/// resources, command, probes...), `the pod spec` for the rest of the pod spec (init containers,
/// volumes, service account...), and `the template's labels and annotations` (without
/// [`RESTARTED_AT`]). A rollout records the parts of the template its preview was made from; a
/// part whose digest moved since names what another client changed under the rollout other than
/// images, which the preview does not have, so that promotion would give the target a combination
/// no analysis judged. `None` without a pod template.
pub fn template_parts(deploy: &Deployment) -> Option<BTreeMap<String, String>> {
    let mut parts = parts_of(deploy)?;
    parts.insert(SCHEME.to_owned(), scheme());
    Some(parts)
}

/// The entry of [`template_parts`] that names how its digests were made: the build of the
/// controller (version and commit). The digests are of the template as this build's Kubernetes
/// types read it, so a controller of another build (an upgrade during a rollout, whose types may
/// know more fields) cannot compare them with its own: it records its own instead of rolling the
/// rollout back for a change nobody made (check31).
pub const SCHEME: &str = "digests made by";

/// This build's [`SCHEME`] value.
pub fn scheme() -> String {
    format!(
        "crossfade {} ({})",
        env!("CARGO_PKG_VERSION"),
        crossfade_proxy::process::commit()
    )
}

/// [`template_parts`] without its [`SCHEME`] entry.
fn parts_of(deploy: &Deployment) -> Option<BTreeMap<String, String>> {
    use sha2::{Digest, Sha256};
    let template = &deploy.spec.as_ref()?.template;
    let digest = |value: &Value| {
        let hash = Sha256::digest(value.to_string().as_bytes());
        hash.iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let mut parts = BTreeMap::new();
    // No metadata reads as empty metadata, as the API server stores either.
    let mut meta =
        serde_json::to_value(template.metadata.clone().unwrap_or_default()).unwrap_or(Value::Null);
    if let Some(meta) = meta.as_object_mut() {
        let annotations = meta.get_mut("annotations").and_then(Value::as_object_mut);
        if annotations.is_some_and(|a| {
            a.remove(RESTARTED_AT);
            a.is_empty()
        }) {
            // The restart's annotation was the only one: as a template without any.
            meta.remove("annotations");
        }
    }
    parts.insert(
        "the template's labels and annotations".to_owned(),
        digest(&meta),
    );
    let mut pod = serde_json::to_value(&template.spec).unwrap_or(Value::Null);
    if let Some(containers) = pod
        .as_object_mut()
        .and_then(|p| p.remove("containers"))
        .and_then(|c| match c {
            Value::Array(list) => Some(list),
            _ => None,
        })
    {
        for mut container in containers {
            let name = container["name"].as_str().unwrap_or_default().to_owned();
            if let Some(c) = container.as_object_mut() {
                c.remove("image");
                // Defaulted from the image's tag (`Always` for `:latest`): an image change can
                // move it (check31: a `kubectl replace` to `:latest` read as another change).
                c.remove("imagePullPolicy");
            }
            parts.insert(format!("container {name}"), digest(&container));
        }
    }
    parts.insert("the pod spec".to_owned(), digest(&pod));
    Some(parts)
}

/// The record as a string for [`SERVING_IMAGES`].
pub fn record(images: &BTreeMap<String, String>) -> String {
    serde_json::to_string(images).unwrap_or_default()
}

/// The images a Deployment's [`SERVING_IMAGES`] record names (container → image); `None` when it
/// has no record or the record is not a JSON object of strings.
pub fn recorded(deploy: &Deployment) -> Option<BTreeMap<String, String>> {
    let text = deploy.metadata.annotations.as_ref()?.get(SERVING_IMAGES)?;
    serde_json::from_str(text).ok()
}

/// Compares a managed Deployment's template images with its [`SERVING_IMAGES`] record.
pub fn observe(deploy: &Deployment) -> Images {
    let now = template_images(deploy);
    let annotations = deploy.metadata.annotations.clone().unwrap_or_default();
    let Some(recorded) = recorded(deploy) else {
        let patch = json!({ "metadata": { "annotations": { SERVING_IMAGES: record(&now) } } });
        return Images::FirstSight { patch };
    };
    let changes: BTreeMap<String, (String, String)> = now
        .iter()
        .filter_map(|(c, image)| {
            let old = recorded.get(c)?;
            (old != image).then(|| (c.clone(), (old.clone(), image.clone())))
        })
        .collect();
    if changes.is_empty() {
        return Images::Recorded;
    }
    let single = now.len() == 1
        && (annotations.contains_key(IMAGE)
            || !annotations.keys().any(|k| k.starts_with(IMAGE_PREFIX)));
    let mut request = serde_json::Map::new();
    for (c, (_, new)) in &changes {
        let key = if single {
            IMAGE.to_owned()
        } else {
            format!("{IMAGE_PREFIX}{c}")
        };
        request.insert(key, json!(new));
    }
    let containers: Vec<Value> = changes
        .iter()
        .map(|(c, (old, _))| json!({ "name": c, "image": old }))
        .collect();
    let patch = json!({
        "metadata": {
            "resourceVersion": deploy.metadata.resource_version,
            "annotations": request,
        },
        "spec": { "template": { "spec": { "containers": containers } } }
    });
    Images::Changed { patch, changes }
}
