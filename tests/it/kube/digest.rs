//! The image digests the backends' pods report (`status.containerStatuses[].imageID`, written by
//! the kubelet stand-in, [`super::pods`]), in the TrafficShift's status (`activeRevision`,
//! `previewRevision`) and on the controller's `crossfade_backend_info`: during a rollout, after
//! promotion (the target's new pods), and with `imageID`s that are not digests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crossfade_controller::kube::command::PROMOTE;
use crossfade_controller::kube::crd::{RevisionStatus, TrafficShiftStatus};
use crossfade_controller::metrics::RolloutMetrics;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use prometheus_client::registry::Registry;
use serde_json::json;

use super::cluster::{Cluster, FakeProxies};
use super::pods::{digest_of, image_id_of, run_pod};
use super::shift::completed;
use crate::support::wait_until;

/// A first step that holds until promoted, then a short drain.
fn held_policy() -> serde_json::Value {
    json!({ "steps": [{ "weight": 10, "hold": "1h" }, { "weight": 100, "hold": "300ms" }],
        "progressDeadline": "2h", "drainTimeout": "300ms",
        "analysis": { "minRequests": 5, "interval": "300ms", "maxInconclusive": 1000 } })
}

/// The controller's metrics, as `crossfade controller --kube --metrics` registers them.
struct Scrape {
    registry: Arc<Mutex<Registry>>,
}

impl Scrape {
    /// Starts both controllers with fake proxies, feeding a registry of their metrics.
    fn controller(c: &Cluster) -> (Scrape, tokio::task::JoinHandle<()>) {
        let mut registry = Registry::with_prefix("crossfade");
        let metrics = RolloutMetrics::register(&mut registry);
        let client = c.client.clone();
        let proxies = FakeProxies::start(client.clone());
        let task = tokio::spawn(async move {
            crossfade_controller::kube::run(
                client,
                Some("default"),
                Some("default"),
                proxies,
                metrics,
            )
            .await
            .expect("preflight");
        });
        let registry = Arc::new(Mutex::new(registry));
        (Scrape { registry }, task)
    }

    /// The `crossfade_backend_info` series of route `default/web` for `backend`, as encoded.
    fn info(&self, backend: &str) -> Option<String> {
        let mut text = String::new();
        let registry = self.registry.lock().expect("registry");
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        let start = format!("crossfade_backend_info{{route=\"default/web\",backend=\"{backend}\",");
        text.lines()
            .find(|l| l.starts_with(&start))
            .map(str::to_owned)
    }

    /// Waits until the series for `backend` has `image` and `image_digest`.
    async fn until_info(&self, backend: &str, image: &str, digest: &str) -> String {
        let want = format!("image=\"{image}\",image_digest=\"{digest}\",");
        let what = format!("crossfade_backend_info {backend} {want}");
        wait_until(super::shift::WAIT, &what, || async {
            self.info(backend).filter(|l| l.contains(&want))
        })
        .await
    }
}

/// The digests of container `app` in `revision` (every entry for it).
fn app_digests(revision: Option<&RevisionStatus>) -> Vec<String> {
    let containers = revision
        .map(|r| r.containers.as_slice())
        .unwrap_or_default();
    containers
        .iter()
        .filter(|c| c.name == "app")
        .flat_map(|c| c.digests.clone())
        .collect()
}

fn shows(status: &TrafficShiftStatus, active: &str, preview: Option<&str>) -> bool {
    let preview_ok = match preview {
        Some(image) => app_digests(status.preview_revision.as_ref()) == [digest_of(image)],
        None => status.preview_revision.is_none(),
    };
    app_digests(status.active_revision.as_ref()) == [digest_of(active)] && preview_ok
}

async fn promote(client: &kube::Client) {
    let api: Api<Deployment> = Api::default_namespaced(client.clone());
    let patch = json!({ "metadata": { "annotations": { PROMOTE: "digest-test-1" } } });
    api.patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("annotate web");
}

#[tokio::test]
async fn the_pods_digests_are_in_status_and_on_the_metric_and_follow_the_promotion() {
    let Some(c) = Cluster::start_with_pods(&["web", "web-green"]) else {
        return;
    };
    c.create_target(&[]).await;
    let (scrape, ctl) = Scrape::controller(&c);
    c.create_shift(held_policy()).await;

    let running = c
        .status_until("both revisions with their digests", |s| {
            shows(s, "web:v1", Some("web:v2"))
        })
        .await;
    let active = running.active_revision.as_ref().expect("active revision");
    assert_eq!((active.deployment.as_str(), active.pods), ("web", 2));
    assert_eq!(active.containers[0].image, "web:v1");
    assert!(!active.mixed, "{active:?}");
    let preview = running.preview_revision.as_ref().expect("preview revision");
    assert_eq!(
        (preview.deployment.as_str(), preview.pods),
        ("web-green", 2)
    );
    assert_eq!(preview.containers[0].image, "web:v2");
    let blue = scrape
        .until_info("blue", "web:v1", &digest_of("web:v1"))
        .await;
    assert!(blue.contains("workload=\"deployment/web\""), "{blue}");
    scrape
        .until_info("green", "web:v2", &digest_of("web:v2"))
        .await;

    promote(&c.client).await;
    let done = c
        .status_until("Completed, the target's pods on the new digest", |s| {
            completed(s) && shows(s, "web:v2", None)
        })
        .await;
    let active = done.active_revision.expect("active revision");
    assert_eq!(
        active.containers.len(),
        1,
        "the old pods are gone: {active:?}"
    );
    scrape
        .until_info("blue", "web:v2", &digest_of("web:v2"))
        .await;
    assert_eq!(scrape.info("green"), None, "no preview, no green series");
    ctl.abort();
}

#[tokio::test]
async fn image_ids_that_are_not_digests_are_left_out_and_the_rollout_goes_on() {
    let Some(c) = Cluster::start_with_pods(&["web", "web-green"]) else {
        return;
    };
    c.create_target(&[]).await;
    // Pods the target's selector also picks, whose runtime reports garbage, or nothing yet.
    let pods: Api<Pod> = Api::default_namespaced(c.client.clone());
    let labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
    let bad = [
        ("web-garbage", "sha256:not-a-digest".to_owned()),
        ("web-tag", "docker-pullable://web:v1".to_owned()),
        ("web-upper", image_id_of("web:v1").to_uppercase()),
        ("web-starting", String::new()),
    ];
    for (name, image_id) in &bad {
        run_pod(&pods, name, &labels, &[("app", "web:v1", image_id.clone())]).await;
    }
    let (scrape, ctl) = Scrape::controller(&c);
    c.create_shift(held_policy()).await;

    let running = c
        .status_until("the revisions with the valid digests only", |s| {
            shows(s, "web:v1", Some("web:v2"))
        })
        .await;
    let active = running.active_revision.expect("active revision");
    assert_eq!(active.pods, 6, "every running pod counts: {active:?}");
    assert!(!active.mixed, "garbage is not a second digest: {active:?}");
    scrape
        .until_info("blue", "web:v1", &digest_of("web:v1"))
        .await;

    promote(&c.client).await;
    c.status_until("Completed on the new digest", |s| {
        completed(s) && shows(s, "web:v2", None)
    })
    .await;
    ctl.abort();
}
