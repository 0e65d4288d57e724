//! The Kubernetes store against the emulator: status writes carry the resourceVersion last seen; a
//! 409 Conflict is re-read and retried when only the spec moved, and refused when another writer
//! changed the rollout state.

use crossfade_controller::kube::crd::{Phase, TrafficShift, TrafficShiftStatus};
use crossfade_controller::kube::store::{StatusStore, StoreError};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::emulator::Emulator;
use super::objects::shift;

fn status(phase: Phase, state: serde_json::Value) -> TrafficShiftStatus {
    TrafficShiftStatus {
        phase: Some(phase),
        rollout_state: Some(state),
        ..TrafficShiftStatus::default()
    }
}

#[tokio::test]
async fn a_write_on_a_stale_version_is_retried_when_only_the_spec_changed() {
    let Some(emu) = Emulator::start() else { return };
    let api: Api<TrafficShift> = Api::default_namespaced(emu.client());
    let created = api
        .create(&PostParams::default(), &shift("web", "web:v2"))
        .await
        .expect("create");
    let mut store = StatusStore::new(api.clone(), created.clone());
    store
        .save(status(Phase::Provisioning, json!({ "n": 1 })))
        .await
        .expect("first write");

    // Someone changes the spec: the store's resourceVersion is now stale.
    let spec = Patch::Merge(json!({ "spec": { "images": { "app": "web:v3" } } }));
    api.patch("web", &PatchParams::default(), &spec)
        .await
        .expect("patch spec");
    store
        .save(status(Phase::Progressing, json!({ "n": 2 })))
        .await
        .expect("re-read and retried");

    let now = api.get("web").await.expect("get");
    let shown = now.status.expect("status");
    assert_eq!(
        (shown.phase, shown.rollout_state),
        (Some(Phase::Progressing), Some(json!({ "n": 2 })))
    );
    assert_eq!(
        now.spec.images["app"].0, "web:v3",
        "the spec change is kept"
    );
}

#[tokio::test]
async fn a_write_over_another_writers_rollout_state_is_refused() {
    let Some(emu) = Emulator::start() else { return };
    let api: Api<TrafficShift> = Api::default_namespaced(emu.client());
    let created = api
        .create(&PostParams::default(), &shift("web", "web:v2"))
        .await
        .expect("create");
    let mut mine = StatusStore::new(api.clone(), created.clone());
    mine.save(status(Phase::Provisioning, json!({ "n": 1 })))
        .await
        .expect("first write");

    let mut other = StatusStore::new(api.clone(), api.get("web").await.expect("get"));
    other
        .save(status(Phase::Aborted, json!({ "other": true })))
        .await
        .expect("other writer");

    let err = mine
        .save(status(Phase::Progressing, json!({ "n": 2 })))
        .await
        .expect_err("stale");
    assert!(matches!(err, StoreError::Superseded { .. }), "{err:?}");
    assert_eq!(err.to_string(), "trafficshift default/web: status.rolloutState was changed by another writer; re-reading it");
    let shown = api.get("web").await.expect("get").status.expect("status");
    assert_eq!(
        shown.phase,
        Some(Phase::Aborted),
        "the other writer's state is not overwritten"
    );
}
