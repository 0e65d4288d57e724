//! Kube28: a backend that loses every ready pod between the preview's readiness and promotion
//! (scaled to 0 by another client, its pods evicted or all unready). Before, the controller saw
//! it only after promotion: green kept its weight and the rollout sat until its progress
//! deadline (or was promoted on a window judged before the loss).

use crossfade_controller::kube::crd::{Phase, TrafficShiftStatus};
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::cluster::Cluster;
use super::shift::{event_notes, events, rolled_back, WAIT};
use crate::support::wait_until;

/// The policy of these tests: green at 50% for a minute (nothing else moves the rollout while
/// the test acts), a grace of 1 s without a ready pod.
fn policy() -> serde_json::Value {
    json!({ "steps": [{ "weight": 50 }, { "weight": 100 }], "hold": "1m",
        "progressDeadline": "5m", "unreadyGrace": "1s", "analysis": { "minRequests": 5 } })
}

/// Green holds 50% of the route.
fn at_half(s: &TrafficShiftStatus) -> bool {
    s.phase == Some(Phase::Progressing)
        && s.weights.as_ref().is_some_and(|w| w.preview.bp() == 5_000)
}

/// Writes Deployment `name`'s status as its controller would with `ready` ready replicas, its
/// generation observed (so the kubelet stand-in leaves it so).
async fn set_ready(c: &Cluster, name: &str, ready: i32) {
    let d = c.deploys.get(name).await.expect("get deployment");
    let status = json!({ "status": { "observedGeneration": d.metadata.generation.unwrap_or(1),
        "readyReplicas": ready, "availableReplicas": ready } });
    c.deploys
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("patch status");
}

/// Waits until there are at least `n` Events with `reason`; returns their notes.
async fn notes_until(c: &Cluster, reason: &str, n: usize) -> Vec<String> {
    let what = format!("{n} {reason} events");
    wait_until(WAIT, &what, || async {
        let notes = event_notes(&c.client, reason).await;
        (notes.len() >= n).then_some(notes)
    })
    .await
}

#[derive(Debug, Clone, Copy)]
enum Lost {
    /// Its pods all unready or evicted: `readyReplicas` 0 of 2.
    Unready,
    /// `kubectl scale deployment web-green --replicas=0`.
    ScaledToZero,
}

/// Green loses every ready pod at 50%: after `spec.rollout.unreadyGrace` the rollout rolls back
/// (all traffic to blue), the reason naming green, its Deployment and what it lost, as a Warning
/// Event like any failed preview; not at the progress deadline.
#[tokio::test]
async fn a_preview_that_loses_every_ready_pod_before_promotion_rolls_back_after_its_grace() {
    for lost in [Lost::Unready, Lost::ScaledToZero] {
        preview_loses_its_pods(lost).await;
    }
}

async fn preview_loses_its_pods(lost: Lost) {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let ctl = c.controller();
    c.create_shift(policy()).await;
    c.status_until("green at 50%", at_half).await;
    let of = match lost {
        Lost::Unready => {
            set_ready(&c, "web-green", 0).await;
            "ready replicas 0 of 2"
        }
        Lost::ScaledToZero => {
            // The kubelet stand-in writes the new generation's status: 0 of 0 ready.
            let scale = json!({ "spec": { "replicas": 0 } });
            c.deploys
                .patch("web-green", &PatchParams::default(), &Patch::Merge(scale))
                .await
                .expect("scale web-green");
            "ready replicas 0 of 0 (spec.replicas set to 0 by another client)"
        }
    };
    let back = c.status_until("RolledBack", rolled_back).await;
    assert_eq!(
        back.weights.as_ref().map(|w| w.preview.bp()),
        Some(0),
        "{lost:?}: {back:?}"
    );
    let why = format!(
        "lost its ready pods: deployment web-green has had {of} for 1s (spec.rollout.unreadyGrace)"
    );
    assert_eq!(
        event_notes(&c.client, "PreviewFailed").await,
        [format!("preview green failed: {why}; rolling back")],
        "{lost:?}"
    );
    assert!(
        back.message.as_deref().is_some_and(|m| m.contains(&why)),
        "{lost:?}: {back:?}"
    );
    assert!(events(&c.client)
        .await
        .iter()
        .any(|e| e == "Warning PreviewFailed"));
    ctl.abort();
}

/// Blue (the target) loses every ready pod at 50%: the controller says so (Warning Event
/// `TargetUnready`) and never rolls back onto it, even when green loses its pods too past its
/// grace (said once more); once blue has a ready pod again, the lost green rolls back.
#[tokio::test]
async fn a_target_without_a_ready_pod_is_never_rolled_back_onto() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let ctl = c.controller();
    c.create_shift(policy()).await;
    c.status_until("green at 50%", at_half).await;

    set_ready(&c, "web", 0).await;
    let notes = notes_until(&c, "TargetUnready", 1).await;
    assert_eq!(
        notes,
        ["blue (deployment web) has no ready pod: ready replicas 0 of 2; the proxies send all requests to green (deployment web-green), the only backend with ready pods, and the rollout is not rolled back onto blue until it has ready pods"]
    );
    assert!(events(&c.client)
        .await
        .iter()
        .any(|e| e == "Warning TargetUnready"));

    set_ready(&c, "web-green", 0).await;
    let notes = notes_until(&c, "TargetUnready", 2).await;
    assert!(
        notes.contains(&"green (deployment web-green) has had no ready pod either for 1s (ready replicas 0 of 2): the rollout is not rolled back onto blue (deployment web), which has none; it rolls back once blue has a ready pod, or at the progress deadline".to_owned()),
        "{notes:?}"
    );
    // Said in the reconcile that decided not to roll back.
    let now = c.status().await;
    assert!(at_half(&now), "{now:?}");

    set_ready(&c, "web", 2).await;
    let back = c.status_until("RolledBack", rolled_back).await;
    assert_eq!(
        back.weights.as_ref().map(|w| w.preview.bp()),
        Some(0),
        "{back:?}"
    );
    assert_eq!(event_notes(&c.client, "TargetUnready").await.len(), 2);
    ctl.abort();
}

/// Trial 30: the target scaled during the rollout (an autoscaler following its load, `kubectl
/// scale`) before promotion: the preview follows its replicas (up and down), with a Normal Event
/// `PreviewScaled`, so that the last step's 100% does not go to the pods of the preview's start.
/// Before, the preview kept the target's replicas of its start.
#[tokio::test]
async fn the_preview_follows_the_targets_replicas_until_promotion() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let ctl = c.controller();
    c.create_shift(policy()).await;
    c.status_until("green at 50%", at_half).await;
    let replicas =
        |d: &k8s_openapi::api::apps::v1::Deployment| d.spec.as_ref().and_then(|s| s.replicas);
    let preview = c.deploys.get("web-green").await.expect("get");
    assert_eq!(replicas(&preview), Some(2), "made with the target's 2");
    let scale = |n: i32| json!({ "spec": { "replicas": n } });
    for n in [10, 3] {
        c.deploys
            .patch("web", &PatchParams::default(), &Patch::Merge(scale(n)))
            .await
            .expect("scale web");
        wait_until(WAIT, &format!("web-green at {n} replicas"), || async {
            let preview = c.deploys.get("web-green").await.expect("get");
            (replicas(&preview) == Some(n)).then_some(())
        })
        .await;
    }
    let notes = notes_until(&c, "PreviewScaled", 2).await;
    assert_eq!(
        notes,
        [
            "deployment web was scaled from 2 to 10 replicas (an autoscaler, kubectl scale): the preview web-green follows, so that it can carry the traffic the target carries",
            "deployment web was scaled from 10 to 3 replicas (an autoscaler, kubectl scale): the preview web-green follows, so that it can carry the traffic the target carries",
        ]
    );
    // Someone scales the preview itself; the next change of the target's replicas is counted
    // from what the preview was last given, and the preview gets the target's again.
    c.deploys
        .patch(
            "web-green",
            &PatchParams::default(),
            &Patch::Merge(scale(5)),
        )
        .await
        .expect("scale web-green");
    c.deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(scale(4)))
        .await
        .expect("scale web");
    let notes = notes_until(&c, "PreviewScaled", 3).await;
    assert!(
        notes[2].starts_with("deployment web was scaled from 3 to 4 replicas"),
        "{notes:?}"
    );
    let preview = c.deploys.get("web-green").await.expect("get");
    assert_eq!(replicas(&preview), Some(4));
    // The target scaled to 0 is not followed: the preview keeps the route's pods (the reconcile
    // that saw it said so with `TargetUnready`); the target's next count above 0 is followed.
    c.deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(scale(0)))
        .await
        .expect("scale web");
    notes_until(&c, "TargetUnready", 1).await;
    let preview = c.deploys.get("web-green").await.expect("get");
    assert_eq!(replicas(&preview), Some(4), "not scaled to 0");
    c.deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(scale(6)))
        .await
        .expect("scale web");
    let notes = notes_until(&c, "PreviewScaled", 4).await;
    assert!(
        notes[3].starts_with("deployment web was scaled from 4 to 6 replicas"),
        "{notes:?}"
    );
    let status = c.status().await;
    assert_eq!(status.phase, Some(Phase::Progressing), "{status:?}");
    ctl.abort();
}

/// The Deployment status that `available` writes in docs/kubernetes.md ("Try it without a
/// cluster", step 5: the shell function that plays the Deployment controller), read from the
/// page, for a Deployment of `generation`.
fn walkthrough_status(generation: i64) -> serde_json::Value {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/kubernetes.md"))
        .expect("read docs/kubernetes.md");
    let function = page
        .split("available() {")
        .nth(1)
        .and_then(|rest| rest.split("\n}").next())
        .expect("docs/kubernetes.md defines the shell function available()");
    let body = function
        .split("-p \"")
        .nth(1)
        .and_then(|rest| rest.rsplit_once('"'))
        .map(|(body, _)| body)
        .expect("available() writes the status with -p \"...\"");
    let body = body
        .replace("\\\"", "\"")
        .replace("$g", &generation.to_string());
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("available()'s status {body}: {e}"))
}

/// docs/kubernetes.md's walkthrough plays the kubelet with `available`, which wrote
/// `availableReplicas` but no `readyReplicas` (a Deployment controller never writes the one
/// without the other). The controller reads a backend's ready pods from `readyReplicas`, so the
/// walkthrough's first rollout was rolled back at about its third step, `deployment web-green
/// has had ready replicas 0 of 1 for 30s (spec.rollout.unreadyGrace)`. The status it writes now
/// (read from the page) keeps the preview ready past its grace.
#[tokio::test]
async fn the_walkthroughs_kubelet_stand_in_keeps_the_preview_ready() {
    let Some(c) = Cluster::start(&["web"]) else {
        return;
    };
    c.create_target(&[]).await;
    // The walkthrough's one replica (step 4), which its status speaks of.
    let one = json!({ "spec": { "replicas": 1 } });
    c.deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(one))
        .await
        .expect("scale web to 1");
    let ctl = c.controller();
    c.create_shift(policy()).await;
    let green = wait_until(WAIT, "the preview web-green", || async {
        c.deploys.get_opt("web-green").await.ok().flatten()
    })
    .await;
    let status = walkthrough_status(green.metadata.generation.expect("generation"));
    c.deploys
        .patch_status("web-green", &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("write web-green's status as the walkthrough does");
    c.status_until("green at 50%", at_half).await;
    // Past the grace (1 s), the controller looking every 2 s meanwhile: a preview read as
    // without ready pods is rolled back by now.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let now = c.status().await;
    assert!(at_half(&now), "the preview still holds 50%: {now:?}");
    assert_eq!(
        event_notes(&c.client, "PreviewFailed").await,
        Vec::<String>::new()
    );
    ctl.abort();
}
