//! The production failure cases (`/work/shared/cases/cases.md`) in Kubernetes mode, against the
//! emulator: the tests play the kubelet and stand in for the proxies ([`FakeProxies`]), as in
//! `shift.rs`. Named after their case ids, as `tests/it/cases/` is for local mode.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;

use super::cluster::{mark_available, Cluster, FakeProxies};
use super::pods::roll_pods;
use super::shift::{completed, events_with, image, rolled_back, WAIT};
use crate::support::wait_until;

/// C09 — rollback never triggered while green crash-loops (argo-rollouts#3765, flagger#523).
///
/// The preview's pods keep exiting with code 1 (one is up between two crashes, its third restart
/// behind it; any other waits in `CrashLoopBackOff`), while its Deployment shows every replica
/// available, as it does between crashes: the "ready count rising" that looked like progress. The
/// fake proxies report only successes, so no analysis fails: without looking at the pods, the
/// rollout would complete. Right outcome: rolled back (within the 20 s progress deadline: the
/// status is waited for with the tests' usual 30 s bound, no timing asserted) with a reason
/// naming the crash loop, Warning events, the preview's weight back to 0 and the preview deleted,
/// the target (blue's capacity) untouched.
#[tokio::test]
async fn c09_kube_crash_looping_preview_is_rolled_back_with_the_reason() {
    let Some(c) = Cluster::start_with_pods(&["web"]) else {
        return;
    };
    c.create_target(&[]).await;
    let ctl = c.controller_with(FakeProxies::start(c.client.clone()));
    c.create_shift(json!({ "hold": "1s", "progressDeadline": "20s" }))
        .await;
    let green = wait_until(WAIT, "preview created", || async {
        c.deploys.get_opt("web-green").await.expect("get")
    })
    .await;

    let pods: Api<Pod> = Api::default_namespaced(c.client.clone());
    roll_pods(&pods, &green).await;
    let listed = pods.list(&ListParams::default()).await.expect("list pods");
    let preview_pods: Vec<&Pod> = listed
        .items
        .iter()
        .filter(|p| p.name_any().starts_with("web-green-"))
        .collect();
    assert!(!preview_pods.is_empty(), "the preview's pods run");
    for (i, pod) in preview_pods.iter().enumerate() {
        let status = pod.status.as_ref().expect("pod status");
        let statuses: Vec<_> = status
            .container_statuses
            .iter()
            .flatten()
            .map(|s| {
                let crashed = json!({ "terminated": { "exitCode": 1, "reason": "Error" } });
                if i == 0 {
                    json!({ "name": s.name, "image": s.image, "imageID": s.image_id,
                        "ready": true, "started": true, "restartCount": 3,
                        "state": { "running": { "startedAt": "2026-12-02T00:00:00Z" } },
                        "lastState": crashed })
                } else {
                    json!({ "name": s.name, "image": s.image, "imageID": s.image_id,
                        "ready": false, "started": false, "restartCount": 2,
                        "state": { "waiting": { "reason": "CrashLoopBackOff" } },
                        "lastState": crashed })
                }
            })
            .collect();
        let patch = json!({ "status": { "phase": "Running", "containerStatuses": statuses } });
        pods.patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .expect("pod status");
    }
    // Between two crashes the Deployment shows its replicas available.
    mark_available(&c.deploys, &green).await;

    let done = c
        .status_until("RolledBack or Completed", |s| {
            rolled_back(s) || completed(s)
        })
        .await;
    assert!(
        rolled_back(&done),
        "a crash-looping preview completed: {done:?}"
    );
    let message = done.message.clone().unwrap_or_default();
    assert!(
        message.contains("crash-looping: pod web-green-") && message.contains("restart"),
        "the reason names the crash loop: {done:?}"
    );
    assert_eq!(done.weights.as_ref().map(|w| w.preview.bp()), Some(0));
    events_with(&c.client, &["Warning PreviewFailed", "Warning RolledBack"]).await;
    c.deployment_deleted("web-green").await;
    let web = c.deploys.get("web").await.expect("target");
    assert_eq!(
        (image(&web), web.metadata.generation),
        ("web:v1".into(), Some(1)),
        "target untouched"
    );
    eprintln!("c09 kube: {message}");
    ctl.abort();
}
