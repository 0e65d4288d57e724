//! The TrafficShift finalizer: deleting a TrafficShift mid-rollout returns all traffic to the
//! target (blue), deletes the preview, and only then lets the TrafficShift go.

use crossfade_controller::kube::crd::{Phase, TrafficShift};
use crossfade_controller::kube::shift::FINALIZER;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use super::cluster::{FakeProxies, Kubelet, StatusLog};
use super::emulator::Emulator;
use super::shift::{controller, create_target, events_with, image, shift_with, status_until, WAIT};
use crate::support::wait_until;

#[tokio::test]
async fn deleting_a_trafficshift_mid_rollout_returns_traffic_to_blue_then_deletes_the_preview() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client();
    let _kubelet = Kubelet::start(client.clone(), &["web", "web-green"]);
    create_target(&client, &[]).await;
    let log = StatusLog::start(client.clone(), "web");
    let shifts: Api<TrafficShift> = Api::default_namespaced(client.clone());
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let policy = json!({ "steps": [{ "weight": 10, "hold": "300ms" }, { "weight": 50, "hold": "60s" }, { "weight": 100 }],
        "drainTimeout": "300ms", "analysis": { "minRequests": 5, "interval": "300ms" } });
    shifts
        .create(&PostParams::default(), &shift_with(policy))
        .await
        .expect("create");
    let ctl = controller(&client, FakeProxies::start(client.clone()));
    status_until(&shifts, "step 2 at 50%", |s| {
        s.weights.is_some_and(|w| w.preview.bp() == 5000)
    })
    .await;
    let shift = shifts.get("web").await.expect("get");
    assert_eq!(
        shift.metadata.finalizers.as_deref(),
        Some(&[FINALIZER.to_owned()][..])
    );
    assert!(deploys.get_opt("web-green").await.expect("get").is_some());

    shifts
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    wait_until(WAIT, "the trafficshift gone", || async {
        shifts
            .get_opt("web")
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        deploys.get_opt("web-green").await.expect("get").is_none(),
        "the preview is deleted before the finalizer goes"
    );
    let last = log.all().last().cloned().expect("a status");
    assert_eq!(last.phase, Some(Phase::Aborted), "{last:?}");
    assert_eq!(
        last.weights.map(|w| (w.active.bp(), w.preview.bp())),
        Some((10_000, 0))
    );
    assert_eq!(log.preview_weights().last(), Some(&0));
    let target = deploys.get("web").await.expect("target");
    assert_eq!(image(&target), "web:v1", "the target is never touched");
    events_with(&client, &["Normal Deleting", "Normal Aborted"]).await;
    ctl.abort();
}
