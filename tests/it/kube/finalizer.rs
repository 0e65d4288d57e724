//! The TrafficShift finalizer: deleting a TrafficShift mid-rollout returns all traffic to the
//! target (blue), deletes the preview, and only then lets the TrafficShift go.

use crossfade_controller::kube::crd::Phase;
use crossfade_controller::kube::shift::FINALIZER;
use kube::api::DeleteParams;
use serde_json::json;

use super::cluster::{until_deleted, Cluster};
use super::shift::{events_with, image, notes};

#[tokio::test]
async fn deleting_a_trafficshift_mid_rollout_returns_traffic_to_blue_then_deletes_the_preview() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let log = c.status_log();
    c.create_shift(json!({ "steps": [{ "weight": 10, "hold": "300ms" }, { "weight": 50, "hold": "60s" }, { "weight": 100 }],
        "drainTimeout": "300ms", "analysis": { "minRequests": 5, "interval": "300ms" } }))
        .await;
    let ctl = c.controller();
    c.status_until("step 2 at 50%", |s| {
        s.weights.as_ref().is_some_and(|w| w.preview.bp() == 5000)
    })
    .await;
    let shift = c.shifts.get("web").await.expect("get");
    assert_eq!(
        shift.metadata.finalizers.as_deref(),
        Some(&[FINALIZER.to_owned()][..])
    );
    assert!(c.deploys.get_opt("web-green").await.expect("get").is_some());

    c.shifts
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    until_deleted(&c.shifts, "web").await;
    assert!(
        c.deploys.get_opt("web-green").await.expect("get").is_none(),
        "the preview is deleted before the finalizer goes"
    );
    let last = log.all().last().cloned().expect("a status");
    assert_eq!(last.phase, Some(Phase::Aborted), "{last:?}");
    assert_eq!(
        last.weights.map(|w| (w.active.bp(), w.preview.bp())),
        Some((10_000, 0))
    );
    assert_eq!(log.preview_weights().last(), Some(&0));
    let target = c.deploys.get("web").await.expect("target");
    assert_eq!(image(&target), "web:v1", "the target is never touched");
    events_with(&c.client, &["Normal Deleting", "Normal Aborted"]).await;
    // Trial 10, K3: the deletion is the cause, not an operator, and nothing supersedes.
    let events = super::shift::events(&c.client).await;
    assert!(
        !events.iter().any(|e| e == "Normal Superseded"),
        "{events:?}"
    );
    let aborted = notes(&c.client, "web", "Aborted").await;
    assert_eq!(aborted.len(), 1, "{aborted:?}");
    assert!(
        aborted[0].ends_with("(TrafficShift deleted at step 2/3 (50%))"),
        "{aborted:?}"
    );
    ctl.abort();
}
