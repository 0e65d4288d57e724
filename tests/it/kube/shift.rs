//! The TrafficShift controller end to end against the emulator: the tests play the kubelet
//! ([`Kubelet`]) and stand in for the proxies ([`FakeProxies`]: Lease acks and counters).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crossfade_controller::kube::crd::{
    ConditionStatus, Phase, TrafficShift, TrafficShiftStatus, VerdictOutcome,
};
use crossfade_controller::kube::scrape::{ClusterMetrics, ProxyScraper};
use crossfade_controller::kube::shift::{COMPLETED, PROGRESSING, PROMOTED};
use crossfade_controller::kube::trigger::{ENABLED, IMAGE};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use super::cluster::{write_lease, FakeProxies, Kubelet, StatusLog};
use super::emulator::Emulator;
use super::objects::deployment;
use crate::support::wait_until;

pub(super) const WAIT: Duration = Duration::from_secs(30);

/// Starts both controllers (`kube::run`, as `crossfade controller --kube` does) in `default`.
pub(super) fn controller(
    client: &kube::Client,
    metrics: Arc<dyn ClusterMetrics>,
) -> tokio::task::JoinHandle<()> {
    let client = client.clone();
    tokio::spawn(async move {
        crossfade_controller::kube::run(client, Some("default"), Some("default"), metrics)
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
    let ctl = controller(&client, FakeProxies::start(client.clone()));
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
    let ctl = controller(&client, FakeProxies::start(client.clone()));
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
    let ctl = controller(&client, FakeProxies::start(client.clone()));
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
async fn without_a_proxy_the_first_step_is_never_applied_and_the_rollout_rolls_back() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client();
    let _kubelet = Kubelet::start(client.clone(), &["web", "web-green"]);
    create_target(&client, &[]).await;
    // What `crossfade controller --kube` runs with; no proxy Lease lists the route. A stale one
    // that acknowledged everything is not live, so it counts for nothing.
    let leases: Api<Lease> = Api::default_namespaced(client.clone());
    let stale = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": { "name": "crossfade-proxy-gone", "labels": { "crossfade.dev/proxy": "true" },
            "annotations": { "crossfade.dev/applied": "{\"default/web\": 1000}" } },
        "spec": { "holderIdentity": "gone", "leaseDurationSeconds": 15,
            "renewTime": "2026-01-01T00:00:00.000000Z" }
    });
    leases
        .create(
            &PostParams::default(),
            &serde_json::from_value(stale).expect("lease"),
        )
        .await
        .expect("create lease");
    let ctl = controller(&client, Arc::new(ProxyScraper::new(None)));
    let shifts: Api<TrafficShift> = Api::default_namespaced(client.clone());
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let policy = json!({ "hold": "300ms", "progressDeadline": "3s" });
    shifts
        .create(&PostParams::default(), &shift_with(policy))
        .await
        .expect("create");

    let done = status_until(&shifts, "RolledBack", |s| {
        s.phase == Some(Phase::RolledBack)
    })
    .await;
    assert_eq!(condition(&done, PROMOTED).0, ConditionStatus::False);
    let message = done.message.clone().unwrap_or_default();
    assert!(
        message.contains("step 1/4 (5%) was not applied within progress_deadline 3s"),
        "{done:?}"
    );
    assert_eq!(done.last_verdict, None, "nothing was analysed: {done:?}");
    // Weight 0 needs no proxy: nothing can send the preview a request, so the rollback ends.
    wait_until(WAIT, "preview deleted", || async {
        let gone = deploys.get_opt("web-green").await.expect("get").is_none();
        gone.then_some(())
    })
    .await;
    let events = events_with(&client, &["Warning DeadlineExceeded", "Warning RolledBack"]).await;
    assert!(
        !events.iter().any(|e| e == "Normal WeightsApplied"),
        "{events:?}"
    );
    ctl.abort();
}

#[tokio::test]
async fn a_step_waits_until_every_live_proxy_replica_has_applied_its_weights() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client();
    let _kubelet = Kubelet::start(client.clone(), &["web", "web-green"]);
    create_target(&client, &[]).await;
    let leases: Api<Lease> = Api::default_namespaced(client.clone());
    // A second live replica that has applied nothing yet.
    let slow = "crossfade-proxy-slow";
    let applied = |generation: u64| BTreeMap::from([("default/web".to_owned(), generation)]);
    write_lease(&leases, slow, &applied(0), "http://127.0.0.1:1").await;
    let fake = FakeProxies::start(client.clone());
    let ctl = controller(&client, fake);
    let shifts: Api<TrafficShift> = Api::default_namespaced(client.clone());
    let policy = json!({ "steps": [{ "weight": 50 }, { "weight": 100 }], "hold": "300ms",
        "drainTimeout": "300ms", "progressDeadline": "1m", "analysis": { "minRequests": 5 } });
    shifts
        .create(&PostParams::default(), &shift_with(policy))
        .await
        .expect("create");

    let published = status_until(&shifts, "step 1 published", |s| {
        s.weights.is_some_and(|w| w.preview.bp() == 5000)
    })
    .await;
    let generation = published.weights.expect("weights").generation;
    // The fake replica acknowledges at once; the slow one holds the step. After 10 s a Warning
    // says which replica is behind; within the progress deadline the rollout stays at its first
    // step, not applied.
    events_with(&client, &["Warning WeightsNotApplied"]).await;
    let api: Api<Event> = Api::default_namespaced(client.clone());
    let notes: Vec<String> = api
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("WeightsNotApplied"))
        .filter_map(|e| e.note)
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].starts_with(&format!(
            "weights generation {generation} (preview 50%) not applied by the proxies after 10s"
        )) && notes[0].ends_with("proxy replicas behind: default/crossfade-proxy-slow: 0"),
        "{notes:?}"
    );
    let waiting = shifts
        .get("web")
        .await
        .expect("get")
        .status
        .expect("status");
    assert_eq!(
        waiting.weights.map(|w| w.generation),
        Some(generation),
        "{waiting:?}"
    );
    assert_eq!(waiting.phase, Some(Phase::Progressing));
    assert!(
        !events(&client)
            .await
            .iter()
            .any(|e| e == "Normal WeightsApplied"),
        "applied while a live replica was behind"
    );

    // The slow replica catches up: the Lease watch wakes the rollout, which goes on; the slow
    // replica then stops renewing and, once stale, no longer holds anything.
    write_lease(&leases, slow, &applied(generation), "http://127.0.0.1:1").await;
    events_with(&client, &["Normal WeightsApplied"]).await;
    leases
        .delete(slow, &Default::default())
        .await
        .expect("delete slow lease");
    let done = status_until(&shifts, "Completed", |s| s.phase == Some(Phase::Completed)).await;
    assert_eq!(condition(&done, COMPLETED).0, ConditionStatus::True);
    ctl.abort();
}

#[tokio::test]
async fn a_window_the_proxies_did_not_split_as_published_is_inconclusive_naming_both_shares() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client();
    let _kubelet = Kubelet::start(client.clone(), &["web", "web-green"]);
    create_target(&client, &[]).await;
    let fake = FakeProxies::start(client.clone());
    // The proxies acknowledge every generation but send 90% to green.
    fake.split_as(9000);
    let ctl = controller(&client, fake);
    let shifts: Api<TrafficShift> = Api::default_namespaced(client.clone());
    let policy = json!({ "steps": [{ "weight": 25 }, { "weight": 100 }], "hold": "300ms",
        "analysis": { "minRequests": 5, "maxInconclusive": 2 } });
    shifts
        .create(&PostParams::default(), &shift_with(policy))
        .await
        .expect("create");

    let done = status_until(&shifts, "RolledBack", |s| {
        s.phase == Some(Phase::RolledBack)
    })
    .await;
    let verdict = done.last_verdict.clone().expect("a verdict");
    assert_eq!(verdict.outcome, VerdictOutcome::Inconclusive, "{verdict:?}");
    assert!(
        verdict
            .summary
            .contains("observed split: preview got 90.0% of ")
            && verdict.summary.contains("desired 25.0% ±")
            && verdict
                .summary
                .contains("the proxies do not split as published"),
        "{verdict:?}"
    );
    assert_eq!(condition(&done, PROMOTED).0, ConditionStatus::False);
    events_with(
        &client,
        &["Warning AnalysisInconclusive", "Warning RolledBack"],
    )
    .await;
    ctl.abort();
}

#[tokio::test]
async fn retiring_waits_until_the_proxies_hold_nothing_on_the_old_pods() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client();
    let _kubelet = Kubelet::start(client.clone(), &["web", "web-green"]);
    create_target(&client, &[]).await;
    let fake = FakeProxies::start(client.clone());
    // A long request and a WebSocket to the preview's pods are still open when it retires.
    fake.hold_green(1, 1);
    let ctl = controller(&client, fake.clone());
    let shifts: Api<TrafficShift> = Api::default_namespaced(client.clone());
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let policy = json!({ "steps": [{ "weight": 100 }], "hold": "300ms", "drainTimeout": "10m",
        "progressDeadline": "20m", "analysis": { "minRequests": 5 } });
    shifts
        .create(&PostParams::default(), &shift_with(policy))
        .await
        .expect("create");

    status_until(&shifts, "Retiring", |s| s.phase == Some(Phase::Retiring)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let retiring = shifts
        .get("web")
        .await
        .expect("get")
        .status
        .expect("status");
    assert_eq!(retiring.phase, Some(Phase::Retiring), "{retiring:?}");
    assert!(
        deploys.get_opt("web-green").await.expect("get").is_some(),
        "the preview was deleted while the proxies still held connections to it"
    );
    // The request ends; the WebSocket still holds the drain.
    fake.hold_green(0, 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let retiring = shifts
        .get("web")
        .await
        .expect("get")
        .status
        .expect("status");
    assert_eq!(retiring.phase, Some(Phase::Retiring), "{retiring:?}");
    // Closed: drained without waiting for the 10 minute drain deadline.
    fake.hold_green(0, 0);
    let done = status_until(&shifts, "Completed", |s| s.phase == Some(Phase::Completed)).await;
    assert_eq!(condition(&done, COMPLETED).0, ConditionStatus::True);
    let events = events_with(&client, &["Normal ActiveDrained", "Normal Completed"]).await;
    assert!(
        !events.iter().any(|e| e.ends_with("DrainDeadlinePassed")),
        "{events:?}"
    );
    ctl.abort();
}

#[tokio::test]
async fn a_drain_the_proxies_never_finish_ends_at_its_deadline_and_says_what_held_it() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client();
    let _kubelet = Kubelet::start(client.clone(), &["web", "web-green"]);
    create_target(&client, &[]).await;
    let fake = FakeProxies::start(client.clone());
    fake.hold_green(2, 3);
    let ctl = controller(&client, fake);
    let shifts: Api<TrafficShift> = Api::default_namespaced(client.clone());
    let policy = json!({ "steps": [{ "weight": 100 }], "hold": "300ms", "drainTimeout": "1s",
        "analysis": { "minRequests": 5 } });
    shifts
        .create(&PostParams::default(), &shift_with(policy))
        .await
        .expect("create");

    status_until(&shifts, "Completed", |s| s.phase == Some(Phase::Completed)).await;
    events_with(
        &client,
        &[
            "Warning DrainDeadlinePassed",
            "Normal ActiveDrained",
            "Normal Completed",
        ],
    )
    .await;
    let api: Api<Event> = Api::default_namespaced(client.clone());
    let notes: Vec<String> = api
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("DrainDeadlinePassed"))
        .filter_map(|e| e.note)
        .collect();
    assert_eq!(
        notes,
        ["web-green's drain deadline passed: 2 requests in flight and 3 upgraded connections on the proxies; stopping it"]
    );
    ctl.abort();
}
