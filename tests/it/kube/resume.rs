//! How a rollout carries on across changes it did not cause: a controller restart (resumed from
//! status), a new spec generation (superseded), a watch cache older than the controller's own
//! last write.

use std::sync::Arc;

use crossfade_controller::kube::crd::{ConditionStatus, Phase, TrafficShiftStatus};
use crossfade_controller::kube::proxies::Proxies;
use crossfade_controller::kube::shift::{reconcile, Context, COMPLETED};
use serde_json::json;

use super::cluster::{Cluster, FakeProxies};
use super::shift::{completed, condition, events, events_with, image, mark, notes};

#[tokio::test]
async fn a_restarted_controller_resumes_the_rollout_from_status() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let log = c.status_log();
    c.create_shift(json!({ "steps": [{ "weight": 10, "hold": "300ms" }, { "weight": 50, "hold": "3s" }, { "weight": 100, "hold": "300ms" }],
        "drainTimeout": "300ms", "analysis": { "minRequests": 5, "interval": "300ms" } }))
        .await;

    let first = c.controller();
    let at_two = c
        .status_until("step 2 applied", |s| {
            s.weights.as_ref().is_some_and(|w| w.preview.bp() == 5000)
        })
        .await;
    first.abort();
    let _ = first.await;
    let preview = c.deploys.get("web-green").await.expect("preview");

    let second = c.controller();
    let done = c.status_until("Completed", completed).await;
    log.until("the log to see Completed", completed).await;
    assert_eq!(at_two.step, Some(1));
    assert_eq!(
        log.preview_weights(),
        [0, 1000, 5000, 10_000, 0],
        "resumed at step 2, never back to step 1 or 0%: {:?}",
        log.all()
    );
    assert!(
        log.all()
            .iter()
            .all(|s| s.phase != Some(Phase::RollingBack)),
        "a restart is not a rollback"
    );
    assert_eq!(condition(&done, COMPLETED).0, ConditionStatus::True);
    let uid_before = preview.metadata.uid;
    let events = events_with(&c.client, &["Normal Restarted"]).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| *e == "Normal Provisioning")
            .count(),
        1,
        "one preview provisioned: {events:?} (uid {uid_before:?})"
    );
    second.abort();
}

#[tokio::test]
async fn a_new_image_during_a_rollout_aborts_it_and_rolls_out_the_new_one_from_its_first_step() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let log = c.status_log();
    let ctl = c.controller();
    c.create_shift(json!({ "steps": [{ "weight": 10, "hold": "300ms" }, { "weight": 50, "hold": "60s" }, { "weight": 100 }],
        "hold": "300ms", "drainTimeout": "300ms", "analysis": { "minRequests": 5, "interval": "300ms" } }))
        .await;
    c.status_until("step 2 applied", |s| {
        s.weights.as_ref().is_some_and(|w| w.preview.bp() == 5000)
    })
    .await;

    // Step 2 holds for a minute: a new image supersedes the rollout.
    let v3 = kube::api::Patch::Merge(json!({ "spec": { "images": { "app": "web:v3" },
        "rollout": { "steps": [{ "weight": 10 }, { "weight": 100 }] } } }));
    c.shifts
        .patch("web", &kube::api::PatchParams::default(), &v3)
        .await
        .expect("patch spec");
    let completed = |s: &TrafficShiftStatus| {
        s.phase == Some(Phase::Completed) && s.observed_generation == Some(2)
    };
    let done = c.status_until("Completed generation 2", completed).await;
    log.until("the log to see generation 2 Completed", completed)
        .await;
    assert_eq!(condition(&done, COMPLETED).0, ConditionStatus::True);
    let web = c.deploys.get("web").await.expect("target");
    assert_eq!(
        image(&web),
        "web:v3",
        "the target runs the superseding image"
    );
    let phases: Vec<_> = log.all().iter().filter_map(|s| s.phase).collect();
    let aborted = phases
        .iter()
        .position(|p| *p == Phase::Aborted)
        .expect("the first rollout aborted");
    assert!(
        !phases[..aborted].contains(&Phase::Promoted),
        "generation 1 was never promoted: {phases:?}"
    );
    assert_eq!(
        log.preview_weights(),
        [0, 1000, 5000, 0, 1000, 10_000, 0],
        "back to 0%, then the new rollout from its first step: {:?}",
        log.all()
    );
    events_with(
        &c.client,
        &[
            "Normal Superseded",
            "Normal Aborting",
            "Normal Aborted",
            "Normal Completed",
        ],
    )
    .await;
    // Trial 10, K3: the supersede is told as one, not as an operator's abort.
    let aborting = notes(&c.client, "web", "Aborting").await;
    assert_eq!(aborting.len(), 1, "{aborting:?}");
    assert!(
        aborting[0].starts_with("superseded by spec generation 2 at step 2/3 (50%)"),
        "{aborting:?}"
    );
    let all: Vec<String> = [
        notes(&c.client, "web", "Superseded").await,
        notes(&c.client, "web", "Aborted").await,
    ]
    .concat();
    assert!(
        all.iter().all(|n| !n.contains("operator")),
        "no operator aborted anything: {all:?}"
    );
    ctl.abort();
}

#[tokio::test]
async fn a_reconcile_from_a_watch_cache_older_than_its_own_last_write_carries_on() {
    let Some(c) = Cluster::start(&[]) else { return };
    c.create_target(&[]).await;
    let created = c.create_shift(json!({ "hold": "300ms" })).await;
    let ctx = Arc::new(Context::new(
        c.client.clone(),
        Proxies::new(c.client.clone(), &["default".to_owned()]),
        FakeProxies::start(c.client.clone()),
    ));
    // Both reconciles see the object as created: the second one's cache has not seen the first
    // one's status writes, as happens when a requeue fires before the watch event arrives.
    let stale = Arc::new(created);
    reconcile(stale.clone(), ctx.clone())
        .await
        .expect("first reconcile");
    assert_eq!(c.status().await.phase, Some(Phase::Provisioning));
    mark(&c.client, "web-green").await; // the second reconcile has a transition to write
    reconcile(stale, ctx)
        .await
        .expect("second reconcile, from the stale object");
    let after = c.status().await;
    assert_eq!(after.phase, Some(Phase::Progressing));
    assert_eq!(after.weights.map(|w| w.preview.bp()), Some(500));
    let events = events(&c.client).await;
    assert!(
        !events.iter().any(|e| e.ends_with(" Restarted")),
        "{events:?}"
    );
}
