//! The TrafficShift controller end to end against the emulator: the tests play the kubelet
//! ([`Kubelet`]) and stand in for the proxies' counters ([`HealthyTraffic`]).

use std::sync::Arc;
use std::time::Duration;

use crossfade_controller::kube::crd::{
    ConditionStatus, Phase, TrafficShift, TrafficShiftStatus, VerdictOutcome,
};
use crossfade_controller::kube::shift::{NoProxyMetrics, COMPLETED, PROGRESSING, PROMOTED};
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

pub(super) const WAIT: Duration = Duration::from_secs(30);

/// Starts both controllers (`kube::run`, as `crossfade controller --kube` does) in `default`.
pub(super) fn controller(
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
pub(super) fn shift_with(rollout: serde_json::Value) -> TrafficShift {
    serde_json::from_value(json!({
        "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift",
        "metadata": { "name": "web" },
        "spec": { "deployment": "web", "images": { "app": "web:v2" }, "rollout": rollout }
    }))
    .expect("valid trafficshift")
}

pub(super) async fn status_until(
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

pub(super) fn condition(status: &TrafficShiftStatus, type_: &str) -> (ConditionStatus, String) {
    let c = status.conditions.iter().find(|c| c.type_ == type_);
    let c = c.unwrap_or_else(|| panic!("condition {type_} in {status:?}"));
    (c.status, c.reason.clone())
}

pub(super) fn image(d: &Deployment) -> String {
    let pod = d.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    pod.and_then(|p| p.containers[0].image.clone())
        .unwrap_or_default()
}

/// The Events about the TrafficShift once every one of `wanted` is among them (they are published
/// just after the status write that a test waits for).
pub(super) async fn events_with(client: &kube::Client, wanted: &[&str]) -> Vec<String> {
    let what = format!("events {wanted:?}");
    wait_until(WAIT, &what, || async {
        let events = events(client).await;
        wanted
            .iter()
            .all(|w| events.iter().any(|e| e == w))
            .then_some(events)
    })
    .await
}

/// `Type reason` of every Event about the TrafficShift.
pub(super) async fn events(client: &kube::Client) -> Vec<String> {
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

pub(super) async fn create_target(
    client: &kube::Client,
    annotations: &[(&str, &str)],
) -> Deployment {
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
    events_with(
        &client,
        &[
            "Normal Provisioning",
            "Normal StepStarted",
            "Normal WeightsApplied",
        ],
    )
    .await;
    ctl.abort();
}

/// Marks Deployment `name` available once (the kubelet stand-in does it continually).
pub(super) async fn mark(client: &kube::Client, name: &str) {
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
    log.until("the log to see Completed", |s| {
        s.phase == Some(Phase::Completed)
    })
    .await;
    assert_eq!(
        log.preview_weights(),
        [0, 1000, 5000, 10_000, 0],
        "{:?}",
        log.all()
    );
    let events = events_with(
        &client,
        &[
            "Normal Promoted",
            "Normal Retiring",
            "Normal ActiveDrained",
            "Normal Completed",
        ],
    )
    .await;
    ctl.abort();
    // A reconcile that starts from a watch-cache object older than its own last write carries on
    // (tests/it/kube/resume.rs); it is never mistaken for another writer and reloaded.
    assert!(
        !events.iter().any(|e| e.ends_with(" Restarted")),
        "{events:?}"
    );
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
    let web = deploys.get("web").await.expect("target");
    assert_eq!(
        (image(&web), web.metadata.generation),
        ("web:v1".into(), Some(1)),
        "target untouched"
    );
    events_with(&client, &["Warning DeadlineExceeded", "Warning RolledBack"]).await;
    ctl.abort();
}

#[tokio::test]
async fn without_proxy_metrics_a_rollout_is_never_promoted_and_rolls_back_as_the_policy_says() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client();
    let _kubelet = Kubelet::start(client.clone(), &["web", "web-green"]);
    create_target(&client, &[]).await;
    // What `crossfade controller --kube` runs with until proxies report metrics.
    let ctl = controller(&client, Arc::new(NoProxyMetrics));
    let shifts: Api<TrafficShift> = Api::default_namespaced(client.clone());
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let policy = json!({ "hold": "300ms", "analysis": { "maxInconclusive": 2 } });
    shifts
        .create(&PostParams::default(), &shift_with(policy))
        .await
        .expect("create");

    let done = status_until(&shifts, "RolledBack", |s| {
        s.phase == Some(Phase::RolledBack)
    })
    .await;
    assert_eq!(condition(&done, PROMOTED).0, ConditionStatus::False);
    let verdict = done.last_verdict.expect("a verdict");
    assert_eq!(verdict.outcome, VerdictOutcome::Inconclusive, "{verdict:?}");
    wait_until(WAIT, "preview deleted", || async {
        let gone = deploys.get_opt("web-green").await.expect("get").is_none();
        gone.then_some(())
    })
    .await;
    let web = deploys.get("web").await.expect("target");
    assert_eq!(image(&web), "web:v1", "target untouched");
    events_with(
        &client,
        &["Warning AnalysisInconclusive", "Warning RolledBack"],
    )
    .await;
    ctl.abort();
}
