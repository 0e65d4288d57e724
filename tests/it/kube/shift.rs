//! The TrafficShift controller end to end against the emulator: the tests play the kubelet
//! ([`Kubelet`]) and stand in for the proxies' counters ([`HealthyTraffic`]).

use std::sync::Arc;
use std::time::Duration;

use crossfade_controller::kube::crd::{ConditionStatus, Phase, TrafficShift, TrafficShiftStatus};
use crossfade_controller::kube::shift::{reconcile, Context, COMPLETED, PROGRESSING, PROMOTED};
use crossfade_controller::kube::trigger::{ENABLED, IMAGE};
use crossfade_controller::traffic::MetricsSource;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use super::cluster::{HealthyTraffic, Kubelet, StatusLog};
use super::emulator::Emulator;
use super::objects::deployment;
use crate::support::wait_until;

const WAIT: Duration = Duration::from_secs(30);

/// Starts both controllers (`kube::run`, as `crossfade controller --kube` does) in `default`.
fn controller(
    client: &kube::Client,
    metrics: Arc<dyn MetricsSource>,
) -> tokio::task::JoinHandle<()> {
    let client = client.clone();
    tokio::spawn(async move {
        crossfade_controller::kube::run(client, Some("default"), metrics)
            .await
            .expect("preflight: the emulator serves TrafficShifts");
    })
}

/// A TrafficShift `web` rolling container `app` to `web:v2` with `rollout` as its policy.
fn shift_with(rollout: serde_json::Value) -> TrafficShift {
    serde_json::from_value(json!({
        "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift",
        "metadata": { "name": "web" },
        "spec": { "deployment": "web", "images": { "app": "web:v2" }, "rollout": rollout }
    }))
    .expect("valid trafficshift")
}

async fn status_until(
    api: &Api<TrafficShift>,
    what: &str,
    check: impl Fn(&TrafficShiftStatus) -> bool,
) -> TrafficShiftStatus {
    wait_until(WAIT, what, || async {
        let shift = api.get_opt("web").await.expect("get trafficshift")?;
        shift.status.filter(|s| check(s))
    })
    .await
}

fn condition(status: &TrafficShiftStatus, type_: &str) -> (ConditionStatus, String) {
    let c = status.conditions.iter().find(|c| c.type_ == type_);
    let c = c.unwrap_or_else(|| panic!("condition {type_} in {status:?}"));
    (c.status, c.reason.clone())
}

fn image(d: &Deployment) -> String {
    let pod = d.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    pod.and_then(|p| p.containers[0].image.clone())
        .unwrap_or_default()
}

/// `Type reason` of every Event about the TrafficShift.
async fn events(client: &kube::Client) -> Vec<String> {
    let api: Api<Event> = Api::default_namespaced(client.clone());
    let list = api.list(&ListParams::default()).await.expect("list events");
    list.items
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("TrafficShift"))
        .map(|e| {
            format!(
                "{} {}",
                e.type_.clone().unwrap_or_default(),
                e.reason.clone().unwrap_or_default()
            )
        })
        .collect()
}

async fn create_target(client: &kube::Client, annotations: &[(&str, &str)]) -> Deployment {
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    deploys
        .create(&PostParams::default(), &deployment("web", annotations))
        .await
        .expect("create deployment")
}

#[tokio::test]
async fn an_annotated_deployment_gets_a_preview_with_the_new_image_and_its_first_step() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client();
    let _kubelet = Kubelet::start(client.clone(), &["web"]);
    let ctl = controller(&client, Arc::new(HealthyTraffic::default()));
    create_target(&client, &[(ENABLED, "true"), (IMAGE, "web:v2")]).await;
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let shifts: Api<TrafficShift> = Api::default_namespaced(client.clone());

    let preview = wait_until(WAIT, "preview deployment web-green", || async {
        deploys.get_opt("web-green").await.expect("get")
    })
    .await;
    assert_eq!(image(&preview), "web:v2");
    let shift = shifts.get("web").await.expect("trafficshift");
    let owner = &preview.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), Some(&owner.uid)),
        ("TrafficShift", shift.metadata.uid.as_ref())
    );
    let labels = preview
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    assert_eq!(
        labels.get("crossfade.dev/backend").map(String::as_str),
        Some("green")
    );
    assert_eq!(
        labels.get("app"),
        None,
        "green pods must not match the target's selector"
    );
    let services: Api<Service> = Api::default_namespaced(client.clone());
    for (name, key, value) in [
        ("web-blue", "app", "web"),
        ("web-green", "crossfade.dev/backend", "green"),
    ] {
        let svc = services.get(name).await.expect(name);
        let selector = svc.spec.and_then(|s| s.selector).unwrap_or_default();
        assert_eq!(selector.get(key).map(String::as_str), Some(value), "{name}");
    }
    let provisioning = status_until(&shifts, "Provisioning", |s| {
        s.phase == Some(Phase::Provisioning)
    })
    .await;
    assert_eq!(
        provisioning.weights.map(|w| w.preview.bp()),
        Some(0),
        "no weight before ready"
    );

    mark(&client, "web-green").await;
    let first = status_until(&shifts, "step 1 applied", |s| {
        s.weights.is_some_and(|w| w.preview.bp() == 500) && s.phase == Some(Phase::Progressing)
    })
    .await;
    assert_eq!(first.step, Some(0));
    assert_eq!(condition(&first, PROGRESSING).0, ConditionStatus::True);
    let events = events(&client).await;
    for want in [
        "Normal Provisioning",
        "Normal StepStarted",
        "Normal WeightsApplied",
    ] {
        assert!(events.iter().any(|e| e == want), "{want} in {events:?}");
    }
    ctl.abort();
}

/// Marks Deployment `name` available once (the kubelet stand-in does it continually).
async fn mark(client: &kube::Client, name: &str) {
    let api: Api<Deployment> = Api::default_namespaced(client.clone());
    let d = api.get(name).await.expect("get deployment");
    super::cluster::mark_available(&api, &d).await;
}

#[tokio::test]
async fn a_rollout_steps_through_its_weights_and_completes_on_the_target_deployment() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client();
    let _kubelet = Kubelet::start(client.clone(), &["web", "web-green"]);
    let target = create_target(&client, &[]).await;
    let log = StatusLog::start(client.clone(), "web");
    let ctl = controller(&client, Arc::new(HealthyTraffic::default()));
    let shifts: Api<TrafficShift> = Api::default_namespaced(client.clone());
    let policy = json!({ "steps": [{ "weight": 10 }, { "weight": 50 }, { "weight": 100 }],
        "hold": "300ms", "drainTimeout": "500ms", "analysis": { "minRequests": 5 } });
    shifts
        .create(&PostParams::default(), &shift_with(policy))
        .await
        .expect("create");

    let done = status_until(&shifts, "Completed", |s| s.phase == Some(Phase::Completed)).await;
    ctl.abort();
    assert_eq!(
        condition(&done, COMPLETED),
        (ConditionStatus::True, "Completed".into())
    );
    assert_eq!(condition(&done, PROMOTED).0, ConditionStatus::True);
    assert_eq!(
        condition(&done, PROGRESSING),
        (ConditionStatus::False, "Completed".into())
    );
    assert_eq!(done.preview_deployment, None);
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let web = deploys.get("web").await.expect("target");
    assert_eq!(image(&web), "web:v2", "the target runs the new image");
    assert_eq!(
        web.spec.as_ref().unwrap().replicas,
        target.spec.as_ref().unwrap().replicas
    );
    assert!(
        deploys.get_opt("web-green").await.expect("get").is_none(),
        "preview deleted"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        log.preview_weights(),
        [0, 1000, 5000, 10_000, 0],
        "{:?}",
        log.all()
    );
    let events = events(&client).await;
    for want in [
        "Normal Promoted",
        "Normal Retiring",
        "Normal ActiveDrained",
        "Normal Completed",
    ] {
        assert!(events.iter().any(|e| e == want), "{want} in {events:?}");
    }
}

#[tokio::test]
async fn a_preview_that_never_becomes_available_is_rolled_back_and_deleted() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client();
    let _kubelet = Kubelet::start(client.clone(), &["web"]);
    create_target(&client, &[]).await;
    let ctl = controller(&client, Arc::new(HealthyTraffic::default()));
    let shifts: Api<TrafficShift> = Api::default_namespaced(client.clone());
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    shifts
        .create(
            &PostParams::default(),
            &shift_with(json!({ "progressDeadline": "2s", "hold": "300ms" })),
        )
        .await
        .expect("create");
    wait_until(WAIT, "preview created", || async {
        deploys.get_opt("web-green").await.expect("get")
    })
    .await;

    let done = status_until(&shifts, "RolledBack", |s| {
        s.phase == Some(Phase::RolledBack)
    })
    .await;
    assert_eq!(
        condition(&done, PROGRESSING),
        (ConditionStatus::False, "RolledBack".into())
    );
    assert_eq!(condition(&done, PROMOTED).0, ConditionStatus::False);
    assert_eq!(done.weights.map(|w| w.preview.bp()), Some(0));
    assert!(
        done.message
            .as_deref()
            .unwrap_or_default()
            .contains("not ready within progress_deadline"),
        "{done:?}"
    );
    wait_until(WAIT, "preview deleted", || async {
        deploys
            .get_opt("web-green")
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    ctl.abort();
    let web = deploys.get("web").await.expect("target");
    assert_eq!(
        (image(&web), web.metadata.generation),
        ("web:v1".into(), Some(1)),
        "target untouched"
    );
    let events = events(&client).await;
    for want in ["Warning DeadlineExceeded", "Warning RolledBack"] {
        assert!(events.iter().any(|e| e == want), "{want} in {events:?}");
    }
}

#[tokio::test]
async fn a_restarted_controller_resumes_the_rollout_from_status() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client();
    let _kubelet = Kubelet::start(client.clone(), &["web", "web-green"]);
    create_target(&client, &[]).await;
    let log = StatusLog::start(client.clone(), "web");
    let shifts: Api<TrafficShift> = Api::default_namespaced(client.clone());
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let policy = json!({ "steps": [{ "weight": 10, "hold": "300ms" }, { "weight": 50, "hold": "3s" }, { "weight": 100, "hold": "300ms" }],
        "drainTimeout": "300ms", "analysis": { "minRequests": 5, "interval": "300ms" } });
    shifts
        .create(&PostParams::default(), &shift_with(policy))
        .await
        .expect("create");

    let first = controller(&client, Arc::new(HealthyTraffic::default()));
    let at_two = status_until(&shifts, "step 2 applied", |s| {
        s.weights.is_some_and(|w| w.preview.bp() == 5000)
    })
    .await;
    first.abort();
    let _ = first.await;
    let preview = deploys.get("web-green").await.expect("preview");

    let second = controller(&client, Arc::new(HealthyTraffic::default()));
    let done = status_until(&shifts, "Completed", |s| s.phase == Some(Phase::Completed)).await;
    second.abort();
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
    let events = events(&client).await;
    assert!(events.iter().any(|e| e == "Normal Restarted"), "{events:?}");
    assert_eq!(
        events
            .iter()
            .filter(|e| *e == "Normal Provisioning")
            .count(),
        1,
        "one preview provisioned: {events:?} (uid {uid_before:?})"
    );
}

#[tokio::test]
async fn a_new_image_during_a_rollout_aborts_it_and_rolls_out_the_new_one_from_its_first_step() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client();
    let _kubelet = Kubelet::start(client.clone(), &["web", "web-green"]);
    create_target(&client, &[]).await;
    let log = StatusLog::start(client.clone(), "web");
    let ctl = controller(&client, Arc::new(HealthyTraffic::default()));
    let shifts: Api<TrafficShift> = Api::default_namespaced(client.clone());
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let policy = json!({ "steps": [{ "weight": 10, "hold": "300ms" }, { "weight": 50, "hold": "60s" }, { "weight": 100 }],
        "hold": "300ms", "drainTimeout": "300ms", "analysis": { "minRequests": 5, "interval": "300ms" } });
    shifts
        .create(&PostParams::default(), &shift_with(policy))
        .await
        .expect("create");
    status_until(&shifts, "step 2 applied", |s| {
        s.weights.is_some_and(|w| w.preview.bp() == 5000)
    })
    .await;

    // Step 2 holds for a minute: a new image supersedes the rollout.
    let v3 = kube::api::Patch::Merge(json!({ "spec": { "images": { "app": "web:v3" },
        "rollout": { "steps": [{ "weight": 10 }, { "weight": 100 }] } } }));
    shifts
        .patch("web", &kube::api::PatchParams::default(), &v3)
        .await
        .expect("patch spec");
    let done = status_until(&shifts, "Completed generation 2", |s| {
        s.phase == Some(Phase::Completed) && s.observed_generation == Some(2)
    })
    .await;
    ctl.abort();
    assert_eq!(condition(&done, COMPLETED).0, ConditionStatus::True);
    let web = deploys.get("web").await.expect("target");
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
    let events = events(&client).await;
    for want in [
        "Normal Superseded",
        "Normal Aborting",
        "Normal Aborted",
        "Normal Completed",
    ] {
        assert!(events.iter().any(|e| e == want), "{want} in {events:?}");
    }
}

#[tokio::test]
async fn a_reconcile_from_a_watch_cache_older_than_its_own_last_write_carries_on() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client();
    create_target(&client, &[]).await;
    let shifts: Api<TrafficShift> = Api::default_namespaced(client.clone());
    let created = shifts
        .create(
            &PostParams::default(),
            &shift_with(json!({ "hold": "300ms" })),
        )
        .await
        .expect("create");
    let ctx = Arc::new(Context::new(
        client.clone(),
        Arc::new(HealthyTraffic::default()),
    ));
    // Both reconciles see the object as created: the second one's cache has not seen the first
    // one's status writes, as happens when a requeue fires before the watch event arrives.
    let stale = Arc::new(created);
    reconcile(stale.clone(), ctx.clone())
        .await
        .expect("first reconcile");
    let get = || async {
        shifts
            .get("web")
            .await
            .expect("get")
            .status
            .expect("status")
    };
    assert_eq!(get().await.phase, Some(Phase::Provisioning));
    mark(&client, "web-green").await; // the second reconcile has a transition to write
    reconcile(stale, ctx)
        .await
        .expect("second reconcile, from the stale object");
    let after = get().await;
    assert_eq!(after.phase, Some(Phase::Progressing));
    assert_eq!(after.weights.map(|w| w.preview.bp()), Some(500));
    let events = events(&client).await;
    assert!(
        !events.iter().any(|e| e.ends_with(" Restarted")),
        "{events:?}"
    );
}
