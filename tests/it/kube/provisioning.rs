//! Session 42: a preview (green) with some replicas ready said only `provisioning green`; its
//! message now counts them, as they change, and status is written only when the count changes.

use std::time::Duration;

use crossfade_controller::kube::crd::{Phase, TrafficShiftStatus};
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::cluster::Cluster;
use super::lifecycle::unwritten_for;

/// Writes Deployment `web-green`'s status as its controller would with `ready` of its 2 replicas
/// ready (and available), every one updated, its generation observed.
async fn green_ready(c: &Cluster, ready: i32) {
    let d = c.deploys.get("web-green").await.expect("get web-green");
    let status = json!({ "status": { "observedGeneration": d.metadata.generation.unwrap_or(1),
        "replicas": 2, "updatedReplicas": 2, "readyReplicas": ready, "availableReplicas": ready } });
    c.deploys
        .patch_status("web-green", &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("patch status");
}

/// The status is provisioning with `message`.
fn provisioning_with(message: &str) -> impl Fn(&TrafficShiftStatus) -> bool + '_ {
    move |s| s.phase == Some(Phase::Provisioning) && s.message.as_deref() == Some(message)
}

/// Green (2 replicas, not marked available by the kubelet stand-in) goes from 0 to 1 to 2 ready
/// replicas: the message says `0 of 2`, then `1 of 2`, each written once (the resourceVersion
/// stays while the count does, over several polls), then the rollout progresses.
#[tokio::test]
async fn a_provisioning_preview_says_how_many_replicas_are_ready_as_they_change() {
    let Some(c) = Cluster::start(&["web"]) else {
        return;
    };
    c.create_target(&[]).await;
    let log = c.status_log();
    let _ctl = c.controller_polling(Duration::from_millis(200));
    c.create_shift(json!({ "progressDeadline": "5m", "hold": "300ms" }))
        .await;
    let none = "provisioning green: 0 of 2 replicas ready; no traffic until it is ready";
    c.status_until(none, provisioning_with(none)).await;
    unwritten_for(&c, 2, "while no replica became ready").await;

    green_ready(&c, 1).await;
    let one = "provisioning green: 1 of 2 replicas ready; no traffic until it is ready";
    c.status_until(one, provisioning_with(one)).await;
    unwritten_for(&c, 2, "while one replica stayed ready").await;

    green_ready(&c, 2).await;
    c.status_until("Progressing", |s| s.phase == Some(Phase::Progressing))
        .await;
    // The provisioning messages shown, consecutive repeats (other fields written) folded.
    let mut messages: Vec<String> = log
        .all()
        .into_iter()
        .filter(|s| s.phase == Some(Phase::Provisioning))
        .filter_map(|s| s.message)
        .collect();
    messages.dedup();
    let counted: Vec<&String> = messages.iter().filter(|m| m.contains(" of 2 ")).collect();
    assert_eq!(counted, [none, one], "{messages:?}");
}
