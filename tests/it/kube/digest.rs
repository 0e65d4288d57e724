//! The image digests the backends' pods report (`status.containerStatuses[].imageID`, written by
//! the kubelet stand-in, [`super::pods`]), in the TrafficShift's status (`activeRevision`,
//! `previewRevision`) and on the controller's `crossfade_backend_info`: during a rollout, after
//! promotion (the target's new pods), and with `imageID`s that are not digests; the pods are
//! listed at most every `REFRESH` while nothing changes; and on `crossfade proxy --kube`'s
//! `crossfade_backend_info`, next to its traffic.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crossfade_controller::kube::command::PROMOTE;
use crossfade_controller::kube::crd::{RevisionStatus, TrafficShiftStatus};
use crossfade_controller::kube::Controllers;
use crossfade_controller::metrics::RolloutMetrics;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use prometheus_client::registry::Registry;
use serde_json::json;

use super::cluster::{Cluster, FakeProxies};
use super::pods::{digest_of, image_id_of, run_pod};
use super::shift::{completed, controller_with, in_default};
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
        let proxies = FakeProxies::start(c.client.clone());
        let task = controller_with(
            &c.client,
            Controllers {
                rollout_metrics: metrics,
                ..in_default(proxies)
            },
        );
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

/// The pods counted in the active and the preview revision.
fn pod_counts(status: &TrafficShiftStatus) -> (Option<u32>, Option<u32>) {
    let count = |r: Option<&RevisionStatus>| r.map(|r| r.pods);
    (
        count(status.active_revision.as_ref()),
        count(status.preview_revision.as_ref()),
    )
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

    // The kubelet starts a Deployment's pods one by one: a status may show the digests before the
    // second pod runs, and the next refresh counts it.
    let running = c
        .status_until("both revisions with their digests and 2 pods each", |s| {
            shows(s, "web:v1", Some("web:v2")) && pod_counts(s) == (Some(2), Some(2))
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
    // The series are set at the end of the reconcile that wrote `Completed`.
    wait_until(
        super::shift::WAIT,
        "no preview, no green series",
        || async { scrape.info("green").is_none().then_some(()) },
    )
    .await;
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
        .status_until("the revisions with the valid digests only, 6 pods", |s| {
            shows(s, "web:v1", Some("web:v2")) && pod_counts(s).0 == Some(6)
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

#[tokio::test]
async fn the_proxy_exports_the_revisions_in_status_next_to_its_traffic() {
    use crate::support::trace::{burst, TraceConfig};
    use crate::support::{free_addr, Admin, Crossfade, SampleApp};
    use crossfade_controller::kube::crd::TrafficShift;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::api::PostParams;

    let Some(emu) = super::emulator::Emulator::start() else {
        return;
    };
    let dir = crate::support::temp_dir();
    let client = emu.client();
    let shifts: Api<TrafficShift> = Api::default_namespaced(client.clone());
    let mut shift = super::objects::shift("web", "web:v2");
    shift.spec.route = Some(
        serde_json::from_value(json!({ "hosts": ["127.0.0.1"], "port": "http" })).expect("route"),
    );
    shifts
        .create(&PostParams::default(), &shift)
        .await
        .expect("create trafficshift");
    let blue = SampleApp::start_many(dir.path(), "blue", 1).await;
    let slice: EndpointSlice = serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": { "name": "web-blue-0", "labels": { "kubernetes.io/service-name": "web-blue" } },
        "addressType": "IPv4",
        "endpoints": [{ "addresses": ["127.0.0.1"], "conditions": { "ready": true } }],
        "ports": [{ "name": "http", "port": blue[0].addr.port(), "protocol": "TCP" }]
    }))
    .expect("slice");
    let slices: Api<EndpointSlice> = Api::default_namespaced(client.clone());
    slices
        .create(&PostParams::default(), &slice)
        .await
        .expect("create slice");
    // The controller's status write: the active revision, a digest for each container.
    let (v1, envoy) = (digest_of("web:v1"), digest_of("envoy:1.30"));
    let status = json!({ "status": { "activeRevision": { "deployment": "web", "pods": 2,
        "containers": [{ "name": "app", "image": "web:v1", "digests": [v1] },
                       { "name": "sidecar", "image": "envoy:1.30", "digests": [envoy] }] } } });
    shifts
        .patch_status("web", &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("status");

    let kubeconfig = emu.kubeconfig(dir.path());
    let (listen, admin) = (free_addr(), free_addr());
    let (listen_s, admin_s) = (listen.to_string(), admin.to_string());
    let args = [
        "proxy",
        "--kube",
        "--kubeconfig",
        kubeconfig.to_str().expect("utf-8"),
        "--replica",
        "r1",
        "--lease-namespace",
        "default",
        "--namespace",
        "default",
        "--listen",
        &listen_s,
        "--admin",
        &admin_s,
    ];
    let mut proxy = Crossfade::spawn(dir.path(), "proxy.log", args);
    let admin = Admin::new(admin);
    proxy.wait_ready(&admin, super::shift::WAIT).await;
    let served = burst(&TraceConfig::new(listen), 10).await;
    assert!(served.iter().all(|r| !r.is_error()), "{served:?}");

    let info = format!(
        r#"crossfade_backend_info{{route="default/web",backend="blue",workload="deployment/web",image="web:v1,envoy:1.30",image_digest="{v1},{envoy}",version="web"}} 1"#
    );
    let traffic = r#"crossfade_requests_total{route="default/web",backend="blue",class="2xx"} 10"#;
    let body = wait_until(
        super::shift::WAIT,
        "the info next to the traffic",
        || async {
            let (_, body) = admin.get_text("/metrics").await.ok()?;
            (body.lines().any(|l| l == info) && body.lines().any(|l| l == traffic)).then_some(body)
        },
    )
    .await;
    assert!(
        !body.contains("backend_info{route=\"default/web\",backend=\"green\""),
        "{body}"
    );
    let status = proxy.terminate(super::shift::WAIT).await;
    assert!(status.success(), "{status:?}\n{}", proxy.log());
}

/// Requests in the emulator's audit log with RBAC `verb` on `resource`.
fn audited(audit: &std::path::Path, verb: &str, resource: &str) -> usize {
    let text = std::fs::read_to_string(audit).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["verb"] == verb && e["resource"] == resource)
        .count()
}

#[tokio::test]
async fn while_nothing_changes_the_pods_are_listed_at_most_once_per_refresh_however_often_it_reconciles(
) {
    use crossfade_controller::kube::revision::REFRESH;

    let dir = crate::support::temp_dir();
    let audit = dir.path().join("audit.jsonl");
    let Some(c) = Cluster::start_audited(&["web", "web-green"], &audit) else {
        return;
    };
    c.create_target(&[]).await;
    let ctl = c.controller();
    c.create_shift(held_policy()).await;
    c.status_until("both revisions with their digests", |s| {
        shows(s, "web:v1", Some("web:v2"))
    })
    .await;

    // Held at step 1: every analysis (each 300 ms) is a reconcile that lists the proxies' Leases.
    let (leases0, pods0) = (
        audited(&audit, "list", "leases"),
        audited(&audit, "list", "pods"),
    );
    let start = tokio::time::Instant::now();
    wait_until(super::shift::WAIT, "20 more reconciles", || async {
        (audited(&audit, "list", "leases") >= leases0 + 20).then_some(())
    })
    .await;
    let elapsed = start.elapsed();
    let pods = audited(&audit, "list", "pods") - pods0;
    // Two lists (blue, green) per REFRESH that the window touches; nothing else changed.
    let refreshes =
        usize::try_from(elapsed.as_secs() / REFRESH.as_secs() + 1).unwrap_or(usize::MAX);
    assert!(
        pods <= 2 * refreshes,
        "{pods} pod lists over {elapsed:?} of 20 reconciles (at most {} expected)",
        2 * refreshes
    );
    ctl.abort();
}
