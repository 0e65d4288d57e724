//! The kubelet's part the digest tests need: pods for a Deployment's current template, running,
//! with `status.containerStatuses[].imageID` as a container runtime reports it. The emulator runs
//! no ReplicaSet or pod controller, so [`super::cluster::Kubelet`] calls [`roll_pods`] before it
//! marks a Deployment available, as the real controllers have started its pods by then.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;
use sha2::Digest as _;

/// Label tying a test pod to its Deployment and template generation (`<name>.<generation>`).
const OWNER: &str = "crossfade.test/owner";
/// Label naming the Deployment of a test pod.
const DEPLOYMENT: &str = "crossfade.test/deployment";

/// The digest the test runtime reports for `image`: `sha256:` + SHA-256 of the reference, so
/// every tag has its own, stable digest.
pub fn digest_of(image: &str) -> String {
    format!("sha256:{:x}", sha2::Sha256::digest(image.as_bytes()))
}

/// The `imageID` dockershim would report for `image` (`docker-pullable://<repo>@<digest>`).
pub fn image_id_of(image: &str) -> String {
    let repo = image.split_once(':').map_or(image, |(repo, _)| repo);
    format!("docker-pullable://{repo}@{}", digest_of(image))
}

/// Replaces the pods of `d`'s earlier generations with `replicas` running pods of its current
/// template (named `<deployment>-g<generation>-<i>`); pods of the current generation stay.
pub async fn roll_pods(pods: &Api<Pod>, d: &Deployment) {
    let name = d.name_any();
    let generation = d.metadata.generation.unwrap_or(1);
    let owner = format!("{name}.{generation}");
    let listed = pods
        .list(&ListParams::default().labels(&format!("{DEPLOYMENT}={name}")))
        .await;
    let existing = listed.map(|l| l.items).unwrap_or_default();
    let mut current = 0;
    for pod in &existing {
        if pod.labels().get(OWNER) == Some(&owner) {
            current += 1;
        } else {
            let _ = pods.delete(&pod.name_any(), &DeleteParams::default()).await;
        }
    }
    let Some(spec) = d.spec.as_ref() else { return };
    let replicas = spec.replicas.unwrap_or(1);
    if current >= replicas {
        return;
    }
    let mut labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(OWNER.into(), owner);
    labels.insert(DEPLOYMENT.into(), name.clone());
    let containers: Vec<(String, String)> = spec
        .template
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
        .collect();
    for i in 0..replicas {
        let pod_name = format!("{name}-g{generation}-{i}");
        let statuses: Vec<_> = containers
            .iter()
            .map(|(c, image)| (c.as_str(), image.as_str(), image_id_of(image)))
            .collect();
        run_pod(pods, &pod_name, &labels, &statuses).await;
    }
}

/// Creates pod `name` with `labels`, whose containers `(name, image, imageID)` run (phase
/// `Running`, each reporting its `imageID`). An existing pod of that name is left as it is.
pub async fn run_pod(
    pods: &Api<Pod>,
    name: &str,
    labels: &std::collections::BTreeMap<String, String>,
    containers: &[(&str, &str, String)],
) {
    let spec: Vec<_> = containers
        .iter()
        .map(|(c, image, _)| json!({ "name": c, "image": image }))
        .collect();
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "labels": labels },
        "spec": { "containers": spec }
    }))
    .expect("valid pod");
    if pods.create(&PostParams::default(), &pod).await.is_err() {
        return; // already there
    }
    let statuses: Vec<_> = containers
        .iter()
        .map(|(c, image, image_id)| {
            json!({ "name": c, "image": image, "imageID": image_id, "ready": true,
                    "restartCount": 0, "started": true,
                    "state": { "running": { "startedAt": "2026-11-30T12:00:00Z" } } })
        })
        .collect();
    let status = json!({ "status": { "phase": "Running", "containerStatuses": statuses } });
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("pod status");
}
