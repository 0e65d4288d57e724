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
use crossfade_controller::kube::Controllers;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::cluster::{Cluster, FakeProxies, ReplicaLease};
use super::objects::deployment;
use crate::support::wait_until;

pub(super) const WAIT: Duration = Duration::from_secs(30);

/// Starts both controllers (`kube::run`, as `crossfade controller --kube` does) in `default`.
pub(super) fn controller(
    client: &kube::Client,
    metrics: Arc<dyn ClusterMetrics>,
) -> tokio::task::JoinHandle<()> {
    controller_polling(client, metrics, crossfade_controller::kube::shift::POLL)
}

/// As [`controller`], a reconcile waiting on the cluster looking again every `poll`
/// (`kube::Controllers::poll`) instead of every 2 s.
pub(super) fn controller_polling(
    client: &kube::Client,
    metrics: Arc<dyn ClusterMetrics>,
    poll: Duration,
) -> tokio::task::JoinHandle<()> {
    controller_with(
        client,
        Controllers {
            poll,
            ..in_default(metrics)
        },
    )
}

/// The controllers of namespace `default`, reading proxy Leases there and analysis counters
/// from `metrics`, otherwise as `crossfade controller --kube` runs them.
pub(super) fn in_default(metrics: Arc<dyn ClusterMetrics>) -> Controllers {
    Controllers {
        proxy_namespaces: vec!["default".to_owned()],
        ..Controllers::new(Some("default"), metrics)
    }
}

/// Starts both controllers (`kube::run`) as `options` says.
pub(super) fn controller_with(
    client: &kube::Client,
    options: Controllers,
) -> tokio::task::JoinHandle<()> {
    let client = client.clone();
    tokio::spawn(async move {
        crossfade_controller::kube::run(client, &options)
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

/// A first step that holds long enough for a test to act at it (10% for 60 s), then 100%.
pub(super) fn slow_policy() -> serde_json::Value {
    json!({ "steps": [{ "weight": 10, "hold": "60s" }, { "weight": 100, "hold": "300ms" }],
        "drainTimeout": "300ms", "analysis": { "minRequests": 5, "interval": "300ms" } })
}

/// The status shows step 1 (10%) of a running rollout.
pub(super) fn at_step_one(s: &TrafficShiftStatus) -> bool {
    s.phase == Some(Phase::Progressing)
        && s.weights.as_ref().is_some_and(|w| w.preview.bp() == 1000)
}

/// The status shows `Progressing=False` with `reason`.
pub(super) fn not_progressing_for(s: &TrafficShiftStatus, reason: &str) -> bool {
    s.conditions
        .iter()
        .any(|c| c.type_ == PROGRESSING && c.status == ConditionStatus::False && c.reason == reason)
}

/// The id of the rollout the status records (`status.rolloutState`), if any.
pub(super) fn rollout_id(s: &TrafficShiftStatus) -> Option<u64> {
    s.rollout_state
        .as_ref()
        .and_then(|r| r["rollout"]["id"].as_u64())
}

/// TrafficShifts as the API server stores them: the typed API cannot read one that does not
/// decode.
pub(super) fn raw_shifts(client: &kube::Client) -> Api<DynamicObject> {
    Api::default_namespaced_with(client.clone(), &ApiResource::erase::<TrafficShift>(&()))
}

/// TrafficShift `web`'s status read raw, once `check` holds for it (its rollout id with it).
pub(super) async fn raw_status_until(
    client: &kube::Client,
    what: &str,
    check: impl Fn(&TrafficShiftStatus) -> bool,
) -> (TrafficShiftStatus, Option<u64>) {
    let raw = raw_shifts(client);
    wait_until(WAIT, what, || async {
        let object = raw.get("web").await.expect("get trafficshift");
        let status = object.data.get("status").cloned()?;
        let status: TrafficShiftStatus = serde_json::from_value(status).ok()?;
        let id = rollout_id(&status);
        check(&status).then_some((status, id))
    })
    .await
}

/// The problem [`make_undecodable`]'s edit is reported with.
pub(super) const UNDECODABLE: &str =
    "spec.rollout.hold: \"9000h\" is above the maximum of 366 days";

/// Edits TrafficShift `web` into one that does not decode: `spec.rollout.hold: 9000h`, over the
/// 366-day bound ([`UNDECODABLE`]), which the schema's pattern lets in.
pub(super) async fn make_undecodable(client: &kube::Client) {
    let edit = json!({ "spec": { "rollout": { "hold": "9000h" } } });
    raw_shifts(client)
        .patch("web", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("patch a spec that does not decode");
}

/// Waits until TrafficShift `web`'s rollout is aborted and `Progressing=False InvalidSpec`
/// shows (read raw: the spec may not decode); returns that status.
pub(super) async fn aborted_as_invalid(client: &kube::Client) -> TrafficShiftStatus {
    let (shown, _) = raw_status_until(client, "Aborted, then InvalidSpec", |s| {
        s.phase == Some(Phase::Aborted) && not_progressing_for(s, "InvalidSpec")
    })
    .await;
    shown
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

/// The notes of the Events with `reason` about TrafficShift `name`, oldest first.
pub(super) async fn notes(client: &kube::Client, name: &str, reason: &str) -> Vec<String> {
    let api: Api<Event> = Api::default_namespaced(client.clone());
    let list = api.list(&ListParams::default()).await.expect("list events");
    let mut found: Vec<_> = list
        .items
        .iter()
        .filter(|e| {
            let regarding = e.regarding.as_ref();
            regarding.and_then(|r| r.kind.as_deref()) == Some("TrafficShift")
                && regarding.and_then(|r| r.name.as_deref()) == Some(name)
                && e.reason.as_deref() == Some(reason)
        })
        .map(|e| (e.event_time.clone(), e.note.clone().unwrap_or_default()))
        .collect();
    found.sort_by(|a, b| a.0.as_ref().map(|t| t.0).cmp(&b.0.as_ref().map(|t| t.0)));
    found.into_iter().map(|(_, note)| note).collect()
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

/// The notes of the Events with `reason`.
pub(super) async fn event_notes(client: &kube::Client, reason: &str) -> Vec<String> {
    let api: Api<Event> = Api::default_namespaced(client.clone());
    let list = api.list(&ListParams::default()).await.expect("list events");
    list.items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.note)
        .collect()
}

#[tokio::test]
async fn an_annotated_deployment_gets_a_preview_with_the_new_image_and_its_first_step() {
    let Some(c) = Cluster::start(&["web"]) else {
        return;
    };
    let ctl = c.controller();
    c.create_target(&[(ENABLED, "true"), (IMAGE, "web:v2")])
        .await;

    let preview = wait_until(WAIT, "preview deployment web-green", || async {
        c.deploys.get_opt("web-green").await.expect("get")
    })
    .await;
    assert_eq!(image(&preview), "web:v2");
    let shift = c.shifts.get("web").await.expect("trafficshift");
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
    let services: Api<Service> = Api::default_namespaced(c.client.clone());
    for (name, key, value) in [
        ("web-blue", "app", "web"),
        ("web-green", "crossfade.dev/backend", "green"),
    ] {
        let svc = services.get(name).await.expect(name);
        let selector = svc.spec.and_then(|s| s.selector).unwrap_or_default();
        assert_eq!(selector.get(key).map(String::as_str), Some(value), "{name}");
    }
    let provisioning = c
        .status_until("Provisioning", |s| s.phase == Some(Phase::Provisioning))
        .await;
    assert_eq!(
        provisioning.weights.map(|w| w.preview.bp()),
        Some(0),
        "no weight before ready"
    );

    mark(&c.client, "web-green").await;
    let first = c
        .status_until("step 1 applied", |s| {
            s.weights.as_ref().is_some_and(|w| w.preview.bp() == 500)
                && s.phase == Some(Phase::Progressing)
        })
        .await;
    assert_eq!(first.step, Some(0));
    assert_eq!(condition(&first, PROGRESSING).0, ConditionStatus::True);
    events_with(
        &c.client,
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
    let Some(c) = Cluster::start(&["web", "web-green"]) else {
        return;
    };
    let target = c.create_target(&[]).await;
    let log = c.status_log();
    let ctl = c.controller();
    c.create_shift(
        json!({ "steps": [{ "weight": 10 }, { "weight": 50 }, { "weight": 100 }],
        "hold": "300ms", "drainTimeout": "500ms", "analysis": { "minRequests": 5 } }),
    )
    .await;

    let done = c.status_until("Completed", completed).await;
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
    // Said as it is in a cluster (trial 7, G2): the target is the active one, on the new image;
    // never the local words "green is active, blue stopped".
    let outcome = "web runs web:v2 (active), preview web-green deleted";
    assert_eq!(
        done.message.as_deref(),
        Some(format!("completed: {outcome}").as_str())
    );
    let shown = crossfade_controller::kube::ops::describe(&c.shifts.get("web").await.expect("get"));
    assert!(
        shown.contains(&format!("  message: completed: {outcome}\n")),
        "{shown}"
    );
    assert_eq!(
        event_notes(&c.client, "Completed").await,
        [format!("rollout completed: {outcome}")]
    );
    assert_eq!(
        event_notes(&c.client, "ActiveDrained").await,
        ["preview web-green drained; deleting it"]
    );
    let web = c.deploys.get("web").await.expect("target");
    assert_eq!(image(&web), "web:v2", "the target runs the new image");
    assert_eq!(
        web.spec.as_ref().unwrap().replicas,
        target.spec.as_ref().unwrap().replicas
    );
    assert!(
        c.deploys.get_opt("web-green").await.expect("get").is_none(),
        "preview deleted"
    );
    log.until("the log to see Completed", completed).await;
    assert_eq!(
        log.preview_weights(),
        [0, 1000, 5000, 10_000, 0],
        "{:?}",
        log.all()
    );
    let events = events_with(
        &c.client,
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

/// The rollout has completed.
pub(super) fn completed(s: &TrafficShiftStatus) -> bool {
    s.phase == Some(Phase::Completed)
}

/// The rollout has rolled back.
pub(super) fn rolled_back(s: &TrafficShiftStatus) -> bool {
    s.phase == Some(Phase::RolledBack)
}

#[tokio::test]
async fn a_preview_that_never_becomes_available_is_rolled_back_and_deleted() {
    let Some(c) = Cluster::start(&["web"]) else {
        return;
    };
    c.create_target(&[]).await;
    let ctl = c.controller();
    c.create_shift(json!({ "progressDeadline": "2s", "hold": "300ms" }))
        .await;
    wait_until(WAIT, "preview created", || async {
        c.deploys.get_opt("web-green").await.expect("get")
    })
    .await;

    let done = c.status_until("RolledBack", rolled_back).await;
    assert_eq!(
        condition(&done, PROGRESSING),
        (ConditionStatus::False, "RolledBack".into())
    );
    assert_eq!(condition(&done, PROMOTED).0, ConditionStatus::False);
    assert_eq!(done.weights.as_ref().map(|w| w.preview.bp()), Some(0));
    assert!(
        done.message
            .as_deref()
            .unwrap_or_default()
            .contains("not ready within progress_deadline"),
        "{done:?}"
    );
    c.deployment_deleted("web-green").await;
    let web = c.deploys.get("web").await.expect("target");
    assert_eq!(
        (image(&web), web.metadata.generation),
        ("web:v1".into(), Some(1)),
        "target untouched"
    );
    events_with(
        &c.client,
        &["Warning DeadlineExceeded", "Warning RolledBack"],
    )
    .await;
    ctl.abort();
}

#[tokio::test]
async fn without_a_proxy_the_first_step_is_never_applied_and_the_rollout_rolls_back() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    // What `crossfade controller --kube` runs with; no proxy Lease lists the route. A stale one
    // that acknowledged everything is not live, so it counts for nothing.
    let leases: Api<Lease> = Api::default_namespaced(c.client.clone());
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
    let ctl = c.controller_with(Arc::new(ProxyScraper::new(None)));
    c.create_shift(json!({ "hold": "300ms", "progressDeadline": "3s" }))
        .await;

    let done = c.status_until("RolledBack", rolled_back).await;
    assert_eq!(condition(&done, PROMOTED).0, ConditionStatus::False);
    let message = done.message.clone().unwrap_or_default();
    assert!(
        message.contains("step 1/4 (5%) was not applied within progress_deadline 3s"),
        "{done:?}"
    );
    assert_eq!(done.last_verdict, None, "nothing was analysed: {done:?}");
    // Weight 0 needs no proxy: nothing can send the preview a request, so the rollback ends.
    c.deployment_deleted("web-green").await;
    let events = events_with(
        &c.client,
        &["Warning DeadlineExceeded", "Warning RolledBack"],
    )
    .await;
    assert!(
        !events.iter().any(|e| e == "Normal WeightsApplied"),
        "{events:?}"
    );
    ctl.abort();
}

#[tokio::test]
async fn a_step_waits_until_every_live_proxy_replica_has_applied_its_weights() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    // A second live replica that has applied nothing yet. It renews its Lease as a real replica
    // does: written once, the Lease went stale 15 s later, and on a loaded machine that came
    // before the 10 s report (the step was then applied without it).
    let slow = "crossfade-proxy-slow";
    let applied = |generation: u64| BTreeMap::from([("default/web".to_owned(), generation)]);
    let replica = ReplicaLease::start(c.client.clone(), slow, applied(0));
    let ctl = c.controller();
    c.create_shift(
        json!({ "steps": [{ "weight": 50 }, { "weight": 100 }], "hold": "300ms",
        "drainTimeout": "300ms", "progressDeadline": "1m", "analysis": { "minRequests": 5 } }),
    )
    .await;

    let published = c
        .status_until("step 1 published", |s| {
            s.weights.as_ref().is_some_and(|w| w.preview.bp() == 5000)
        })
        .await;
    let generation = published.weights.expect("weights").generation;
    // The fake replica acknowledges at once; the slow one holds the step. After 10 s a Warning
    // says which replica is behind; within the progress deadline the rollout stays at its first
    // step, not applied.
    events_with(&c.client, &["Warning WeightsNotApplied"]).await;
    let notes = event_notes(&c.client, "WeightsNotApplied").await;
    assert_eq!(notes.len(), 1, "{notes:?}");
    // Said at the first look after 10 s: "after 10s", or later under load (seen: 11s).
    let waited = notes[0]
        .strip_prefix(&format!(
            "weights generation {generation} (preview 50%) not applied by the proxies after "
        ))
        .and_then(|rest| rest.split_once("s: "))
        .and_then(|(secs, _)| secs.parse::<u64>().ok());
    assert!(
        waited.is_some_and(|s| s >= 10)
            && notes[0].ends_with("proxy replicas behind: default/crossfade-proxy-slow: 0"),
        "{notes:?}"
    );
    let waiting = c.status().await;
    assert_eq!(
        waiting.weights.as_ref().map(|w| w.generation),
        Some(generation),
        "{waiting:?}"
    );
    assert_eq!(waiting.phase, Some(Phase::Progressing));
    assert!(
        !events(&c.client)
            .await
            .iter()
            .any(|e| e == "Normal WeightsApplied"),
        "applied while a live replica was behind"
    );

    // The slow replica catches up: the Lease watch wakes the rollout, which goes on; the slow
    // replica then stops renewing and its Lease goes, so it no longer holds anything.
    replica.ack(applied(generation));
    events_with(&c.client, &["Normal WeightsApplied"]).await;
    replica.stop().await;
    let leases: Api<Lease> = Api::default_namespaced(c.client.clone());
    leases
        .delete(slow, &Default::default())
        .await
        .expect("delete slow lease");
    let done = c.status_until("Completed", completed).await;
    assert_eq!(condition(&done, COMPLETED).0, ConditionStatus::True);
    ctl.abort();
}

/// `--proxy-namespace default,shop`: a sidecar's Lease in its app's namespace (`shop`) is counted
/// like the ingress replicas' (`default` here), so a step waits for it; a Lease in a namespace not
/// listed (`elsewhere`: anyone who may write Leases there) is not trusted: it holds nothing, and
/// being no replica, it is not scraped (kube27: the flag took one namespace, so sidecars were
/// either not counted or every namespace's Lease writers were trusted).
#[tokio::test]
async fn proxy_leases_count_in_every_listed_namespace_and_nowhere_else() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let applied = |generation: u64| BTreeMap::from([("default/web".to_owned(), generation)]);
    let sidecar =
        ReplicaLease::start_in(c.client.clone(), "shop", "crossfade-proxy-sc", applied(0));
    let forged = ReplicaLease::start_in(
        c.client.clone(),
        "elsewhere",
        "crossfade-proxy-x",
        applied(0),
    );
    let proxies = crossfade_controller::kube::proxies::Proxies::new(
        c.client.clone(),
        &["shop".to_owned(), "default".to_owned(), "shop".to_owned()],
    );
    assert_eq!(proxies.namespaces(), ["default", "shop"]);
    let metrics = FakeProxies::start(c.client.clone());
    let ctl = controller_with(
        &c.client,
        Controllers {
            proxy_namespaces: vec!["default".to_owned(), "shop".to_owned()],
            ..Controllers::new(Some("default"), metrics)
        },
    );
    c.create_shift(
        json!({ "steps": [{ "weight": 50 }, { "weight": 100 }], "hold": "300ms",
        "drainTimeout": "300ms", "progressDeadline": "1m", "analysis": { "minRequests": 5 } }),
    )
    .await;
    let published = c
        .status_until("step 1 published", |s| {
            s.weights.as_ref().is_some_and(|w| w.preview.bp() == 5000)
        })
        .await;
    let generation = published.weights.expect("weights").generation;
    // Every live replica of the listed namespaces, and none other.
    let live = wait_until(WAIT, "both trusted replicas live", || async {
        let live = proxies.live().await.expect("list leases");
        (live.len() == 2).then_some(live)
    })
    .await;
    let mut names: Vec<&str> = live.iter().map(|r| r.lease.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["default/crossfade-proxy-fake", "shop/crossfade-proxy-sc"]
    );
    // The sidecar holds the step; the forged Lease, as far behind, is not named.
    events_with(&c.client, &["Warning WeightsNotApplied"]).await;
    let notes = event_notes(&c.client, "WeightsNotApplied").await;
    assert!(
        notes.len() == 1 && notes[0].ends_with("proxy replicas behind: shop/crossfade-proxy-sc: 0"),
        "{notes:?}"
    );
    // The sidecar catches up: applied and completed, the forged Lease still at 0.
    sidecar.ack(applied(generation));
    events_with(&c.client, &["Normal WeightsApplied"]).await;
    sidecar.stop().await;
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "shop");
    leases
        .delete("crossfade-proxy-sc", &Default::default())
        .await
        .expect("delete sidecar lease");
    c.status_until("Completed", completed).await;
    forged.stop().await;
    ctl.abort();
}

#[tokio::test]
async fn a_window_the_proxies_did_not_split_as_published_is_inconclusive_naming_both_shares() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let fake = FakeProxies::start(c.client.clone());
    // The proxies acknowledge every generation but send 90% to green.
    fake.split_as(9000);
    let ctl = c.controller_with(fake);
    c.create_shift(
        json!({ "steps": [{ "weight": 25 }, { "weight": 100 }], "hold": "300ms",
        "analysis": { "minRequests": 5, "maxInconclusive": 2 } }),
    )
    .await;

    let done = c.status_until("RolledBack", rolled_back).await;
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
        &c.client,
        &["Warning AnalysisInconclusive", "Warning RolledBack"],
    )
    .await;
    ctl.abort();
}

#[tokio::test]
async fn retiring_waits_until_the_proxies_hold_nothing_on_the_old_pods() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let fake = FakeProxies::start(c.client.clone());
    // A long request and a WebSocket to the preview's pods are still open when it retires.
    fake.hold_green(1, 1);
    let ctl = c.controller_with(fake.clone());
    c.create_shift(
        json!({ "steps": [{ "weight": 100 }], "hold": "300ms", "drainTimeout": "10m",
        "progressDeadline": "20m", "analysis": { "minRequests": 5 } }),
    )
    .await;

    c.status_until("Retiring", |s| s.phase == Some(Phase::Retiring))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let retiring = c.status().await;
    assert_eq!(retiring.phase, Some(Phase::Retiring), "{retiring:?}");
    assert!(
        c.deploys.get_opt("web-green").await.expect("get").is_some(),
        "the preview was deleted while the proxies still held connections to it"
    );
    // The request ends; the WebSocket still holds the drain.
    fake.hold_green(0, 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let retiring = c.status().await;
    assert_eq!(retiring.phase, Some(Phase::Retiring), "{retiring:?}");
    // Closed: drained without waiting for the 10 minute drain deadline.
    fake.hold_green(0, 0);
    let done = c.status_until("Completed", completed).await;
    assert_eq!(condition(&done, COMPLETED).0, ConditionStatus::True);
    let events = events_with(&c.client, &["Normal ActiveDrained", "Normal Completed"]).await;
    assert!(
        !events.iter().any(|e| e.ends_with("DrainDeadlinePassed")),
        "{events:?}"
    );
    ctl.abort();
}

#[tokio::test]
async fn a_drain_the_proxies_never_finish_ends_at_its_deadline_and_says_what_held_it() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let fake = FakeProxies::start(c.client.clone());
    fake.hold_green(2, 3);
    let ctl = c.controller_with(fake);
    c.create_shift(
        json!({ "steps": [{ "weight": 100 }], "hold": "300ms", "drainTimeout": "1s",
        "analysis": { "minRequests": 5 } }),
    )
    .await;

    c.status_until("Completed", completed).await;
    events_with(
        &c.client,
        &[
            "Warning DrainDeadlinePassed",
            "Normal ActiveDrained",
            "Normal Completed",
        ],
    )
    .await;
    assert_eq!(
        event_notes(&c.client, "DrainDeadlinePassed").await,
        ["web-green's drain deadline passed: 2 requests in flight and 3 upgraded connections on the proxies; stopping it"]
    );
    ctl.abort();
}

/// How the preview stops serving after promotion in [`a_preview_lost_after_promotion_sends_all_traffic_back_to_the_target`].
#[derive(Clone, Copy, Debug)]
enum Lost {
    /// `kubectl delete deployment web-green`.
    Deleted,
    /// Its pods gone (scaled to 0, evicted): its Service's EndpointSlice lists none ready.
    NoReadyEndpoint,
}

/// An EndpointSlice `<service>-0` of Service `service` in `default` with one endpoint, ready or not.
fn one_endpoint_slice(service: &str, ready: bool) -> serde_json::Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": { "name": format!("{service}-0"), "namespace": "default",
            "labels": { "kubernetes.io/service-name": service } },
        "addressType": "IPv4",
        "endpoints": [{ "addresses": ["10.0.0.9"],
            "conditions": { "ready": ready, "serving": ready, "terminating": !ready } }],
        "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }]
    })
}

/// Kube27: after promotion the preview serves 100% while the target rolls out the new images.
/// A preview deleted then (or left with no ready endpoint) served nobody until the target was out:
/// the weights stayed on it. Now all traffic goes back to the target's ready endpoints at once
/// (`preview` 0%, still `Promoted`), with a Warning Event `PreviewLost` counted in
/// `crossfade_rollout_events_total`, and the rollout completes when the target is out.
#[tokio::test]
async fn a_preview_lost_after_promotion_sends_all_traffic_back_to_the_target() {
    for lost in [Lost::Deleted, Lost::NoReadyEndpoint] {
        preview_lost_after_promotion(lost).await;
    }
}

async fn preview_lost_after_promotion(lost: Lost) {
    use kube::api::{DynamicObject, Patch, PatchParams};
    use kube::discovery::ApiResource;

    // Only the preview becomes available by itself: the target is marked available once before
    // the rollout, and its promotion (a new generation) waits for the test.
    let Some(c) = Cluster::start(&["web-green"]) else {
        return;
    };
    let target = c.create_target(&[]).await;
    super::cluster::mark_available(&c.deploys, &target).await;
    let slices: Api<DynamicObject> = Api::namespaced_with(
        c.client.clone(),
        "default",
        &ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
        )),
    );
    for service in ["web-blue", "web-green"] {
        let slice: DynamicObject =
            serde_json::from_value(one_endpoint_slice(service, true)).expect("slice");
        slices
            .create(&PostParams::default(), &slice)
            .await
            .expect("create slice");
    }
    let mut registry = prometheus_client::registry::Registry::with_prefix("crossfade");
    let rollout_metrics = crossfade_controller::metrics::RolloutMetrics::register(&mut registry);
    let metrics = FakeProxies::start(c.client.clone());
    let ctl = controller_with(
        &c.client,
        Controllers {
            rollout_metrics,
            ..in_default(metrics)
        },
    );
    c.create_shift(
        json!({ "steps": [{ "weight": 100 }], "hold": "300ms", "drainTimeout": "300ms",
        "progressDeadline": "1m", "analysis": { "minRequests": 5 } }),
    )
    .await;
    let promoted = c
        .status_until("Promoted at 100%", |s| {
            s.phase == Some(Phase::Promoted)
                && s.weights.as_ref().is_some_and(|w| w.preview.bp() == 10_000)
        })
        .await;
    let generation = promoted.weights.expect("weights").generation;

    match lost {
        Lost::Deleted => {
            c.deploys
                .delete("web-green", &Default::default())
                .await
                .expect("delete preview");
        }
        Lost::NoReadyEndpoint => {
            let slice = one_endpoint_slice("web-green", false);
            slices
                .patch("web-green-0", &PatchParams::default(), &Patch::Merge(slice))
                .await
                .expect("patch slice");
        }
    }
    let back = c
        .status_until("all traffic back to the target while Promoted", |s| {
            s.weights
                .as_ref()
                .is_some_and(|w| w.preview.bp() == 0 && w.generation > generation)
        })
        .await;
    assert_eq!(back.phase, Some(Phase::Promoted), "{lost:?}: {back:?}");
    let notes = event_notes(&c.client, "PreviewLost").await;
    let why = match lost {
        Lost::Deleted => "deployment web-green was deleted by another client",
        Lost::NoReadyEndpoint => "Service web-green has no ready endpoint (1 listed, none ready)",
    };
    assert_eq!(
        notes,
        [format!(
            "{why} after promotion, while web rolls out the new images: all traffic back to web's ready endpoints (1 ready) until its rollout completes"
        )],
        "{lost:?}"
    );
    assert!(events(&c.client)
        .await
        .iter()
        .any(|e| e == "Warning PreviewLost"));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    assert!(
        text.lines().any(|l| l
            == "crossfade_rollout_events_total{route=\"default/web\",reason=\"PreviewLost\"} 1"),
        "{lost:?}: {text}"
    );

    // The target rolls out: the rollout completes as usual.
    let target = super::cluster::promoted_target(&c.deploys).await;
    super::cluster::mark_available(&c.deploys, &target).await;
    c.status_until("Completed", completed).await;
    ctl.abort();
}

/// An EndpointSlice `web-blue-0` of the target's Service listing `(address, pod, ready)`.
fn target_slice(
    endpoints: &[(&str, &str, bool)],
) -> k8s_openapi::api::discovery::v1::EndpointSlice {
    let endpoints: Vec<_> = endpoints
        .iter()
        .map(|(address, pod, ready)| {
            json!({ "addresses": [address],
                "conditions": { "ready": ready, "serving": true, "terminating": !ready },
                "targetRef": { "kind": "Pod", "name": pod, "namespace": "default" } })
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": { "name": "web-blue-0", "namespace": "default",
            "labels": { "kubernetes.io/service-name": "web-blue" } },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }]
    }))
    .expect("valid slice")
}

/// Case C12 in the cluster: after promotion the preview serves all traffic while the target
/// rolls out the new images, then the role swap sends it all back to the target. The Deployment
/// says it has rolled out as soon as its old pods are being deleted, before the EndpointSlice
/// controller marks them terminating; a swap published then sent requests to old-image pods.
/// Now the swap waits until the target Service's slices list ready only pods that exist and are
/// not being deleted (here the old pod, deleted, is still listed ready: the preview keeps 100%),
/// and goes once the slice lists the new pod ready and the old one terminating.
#[tokio::test]
async fn the_role_swap_waits_until_the_targets_slices_no_longer_list_its_old_pods_ready() {
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::api::{Patch, PatchParams};

    let Some(c) = Cluster::start(&["web-green"]) else {
        return;
    };
    let target = c.create_target(&[]).await;
    super::cluster::mark_available(&c.deploys, &target).await;
    let pods: Api<Pod> = Api::default_namespaced(c.client.clone());
    let labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
    let run = |name: &'static str, image: &'static str| {
        let (pods, labels) = (pods.clone(), labels.clone());
        async move {
            let id = super::pods::image_id_of(image);
            super::pods::run_pod(&pods, name, &labels, &[("app", image, id)]).await;
        }
    };
    run("web-old-0", "web:v1").await;
    let slices: Api<EndpointSlice> = Api::default_namespaced(c.client.clone());
    slices
        .create(
            &PostParams::default(),
            &target_slice(&[("10.0.0.1", "web-old-0", true)]),
        )
        .await
        .expect("create slice");
    let log = c.status_log();
    let ctl = c.controller();
    c.create_shift(
        json!({ "steps": [{ "weight": 100 }], "hold": "300ms", "drainTimeout": "300ms",
        "progressDeadline": "1m", "analysis": { "minRequests": 5 } }),
    )
    .await;
    c.status_until("Promoted at 100%", |s| {
        s.phase == Some(Phase::Promoted)
            && s.weights.as_ref().is_some_and(|w| w.preview.bp() == 10_000)
    })
    .await;

    // The target says it has rolled out: its new pod runs and the old one is deleted, but the
    // slice still lists the old pod ready (the EndpointSlice controller has not caught up):
    // several reconciles (one per second while the swap waits) must not swap.
    let promoted = super::cluster::promoted_target(&c.deploys).await;
    run("web-new-0", "web:v2").await;
    pods.delete("web-old-0", &Default::default())
        .await
        .expect("delete the old pod");
    slices
        .patch(
            "web-blue-0",
            &PatchParams::default(),
            &Patch::Merge(&target_slice(&[
                ("10.0.0.1", "web-old-0", true),
                ("10.0.0.2", "web-new-0", true),
            ])),
        )
        .await
        .expect("patch slice");
    super::cluster::mark_available(&c.deploys, &promoted).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let waiting = c.status().await;
    assert_eq!(waiting.phase, Some(Phase::Promoted), "{waiting:?}");
    assert_eq!(
        waiting.weights.as_ref().map(|w| w.preview.bp()),
        Some(10_000),
        "the swap went while a deleted pod was listed ready: {waiting:?}"
    );

    // The slice catches up: the old pod terminating, the new one ready.
    let caught_up = target_slice(&[
        ("10.0.0.1", "web-old-0", false),
        ("10.0.0.2", "web-new-0", true),
    ]);
    slices
        .patch(
            "web-blue-0",
            &PatchParams::default(),
            &Patch::Merge(&caught_up),
        )
        .await
        .expect("patch slice");
    c.status_until("Completed", completed).await;
    log.until("the log to see Completed", completed).await;
    assert_eq!(log.preview_weights(), [0, 10_000, 0], "{:?}", log.all());
    ctl.abort();
}

/// A rollout in `Retiring` whose preview is kept after its drain: the target's only pod
/// (`web-new-0`, in slice `web-blue-0`) stopped being ready while a request held the drain, then
/// the request ended. Returns the proxies, the running controller and the slices' API; the caller
/// makes the target ready again with [`set_target_ready`].
async fn a_preview_kept_after_its_drain(
    c: &Cluster,
) -> (
    Arc<FakeProxies>,
    tokio::task::JoinHandle<()>,
    Api<k8s_openapi::api::discovery::v1::EndpointSlice>,
) {
    use k8s_openapi::api::core::v1::Pod;

    c.create_target(&[]).await;
    let pods: Api<Pod> = Api::default_namespaced(c.client.clone());
    let labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
    let id = super::pods::image_id_of("web:v2");
    super::pods::run_pod(&pods, "web-new-0", &labels, &[("app", "web:v2", id)]).await;
    let slices = Api::default_namespaced(c.client.clone());
    slices
        .create(
            &PostParams::default(),
            &target_slice(&[("10.0.0.2", "web-new-0", true)]),
        )
        .await
        .expect("create slice");
    let fake = FakeProxies::start(c.client.clone());
    // A request still open on the preview holds its drain until the test lets it end.
    fake.hold_green(1, 0);
    let ctl = c.controller_with(fake.clone());
    c.create_shift(
        json!({ "steps": [{ "weight": 100 }], "hold": "300ms", "drainTimeout": "10m",
        "progressDeadline": "20m", "analysis": { "minRequests": 5 } }),
    )
    .await;
    c.status_until("Retiring", |s| s.phase == Some(Phase::Retiring))
        .await;

    // The target's only pod stops being ready, then the preview's last request ends.
    set_target_ready(&slices, false).await;
    fake.hold_green(0, 0);
    // The status and an Event say why the preview is still there (before, a WARN log line alone).
    let kept = c
        .status_until("the preview kept as the backup", preview_kept)
        .await;
    assert_eq!(kept.phase, Some(Phase::Retiring), "{kept:?}");
    events_with(&c.client, &["Normal RetireHeld"]).await;
    (fake, ctl, slices)
}

/// Whether a status says the preview is kept as the route's backup after its drain.
fn preview_kept(status: &TrafficShiftStatus) -> bool {
    (status.message.as_deref()).is_some_and(|m| m.contains("kept as the route's backup"))
}

/// Marks the target's pod `web-new-0` ready or not in its slice `web-blue-0`.
async fn set_target_ready(
    slices: &Api<k8s_openapi::api::discovery::v1::EndpointSlice>,
    ready: bool,
) {
    use kube::api::{Patch, PatchParams};

    let slice = target_slice(&[("10.0.0.2", "web-new-0", ready)]);
    slices
        .patch("web-blue-0", &PatchParams::default(), &Patch::Merge(&slice))
        .await
        .expect("patch slice");
}

/// DESIGN: a rollout never leaves a route with no healthy backend while one exists. After the
/// role swap the preview drains and is deleted; when the target's pods have crashed meanwhile
/// (its Service's slices list none ready), deleting the preview left the route with nothing that
/// could serve. Now the preview is kept (and the proxies make it the route's backup while the
/// TrafficShift is `Promoted` or `Retiring`) until the target has a ready endpoint again.
#[tokio::test]
async fn the_preview_is_kept_after_its_drain_while_the_target_has_no_ready_endpoint() {
    use kube::api::{Patch, PatchParams};

    let Some(c) = Cluster::start(&["web", "web-green"]) else {
        return;
    };
    let (_fake, ctl, slices) = a_preview_kept_after_its_drain(&c).await;
    // An abort would delete the preview, the route's only backend that can serve: refused
    // (the target already runs the new images; there is no swap to undo).
    let abort = json!({ "metadata": { "annotations": { "crossfade.dev/abort": "held-1" } } });
    c.deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(abort))
        .await
        .expect("annotate web");
    events_with(&c.client, &["Warning CommandRejected"]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        c.deploys.get_opt("web-green").await.expect("get").is_some(),
        "the preview was deleted while the target had no ready endpoint"
    );
    assert_eq!(c.status().await.phase, Some(Phase::Retiring));

    set_target_ready(&slices, true).await;
    c.status_until("Completed", completed).await;
    c.deployment_deleted("web-green").await;
    ctl.abort();
}

/// check33: the hold of a preview kept after its drain is persisted, but a restarted controller
/// re-issued the drain with a deadline and ignored the cluster's next `RetireHeld` (already held),
/// so `DeadlineExceeded` came back every drainTimeout + progressDeadline. After a restart during
/// the hold, the hold is taken again from what the cluster shows (status message and Event once
/// more), the preview stays, and the rollout completes once the target is ready.
#[tokio::test]
async fn a_preview_kept_after_its_drain_is_kept_again_by_a_restarted_controller() {
    let Some(c) = Cluster::start(&["web", "web-green"]) else {
        return;
    };
    let (fake, first, slices) = a_preview_kept_after_its_drain(&c).await;

    // The controller restarts during the hold.
    first.abort();
    let _ = first.await;
    let second = c.controller_with(fake.clone());
    let held = wait_until(WAIT, "a second RetireHeld after the restart", || async {
        let held = notes(&c.client, "web", "RetireHeld").await;
        (held.len() >= 2).then_some(held)
    })
    .await;
    assert!(held.iter().all(|n| n.contains("backup")), "{held:?}");
    let status = c
        .status_until("still kept after the restart", preview_kept)
        .await;
    assert_eq!(status.phase, Some(Phase::Retiring), "{status:?}");
    assert!(
        c.deploys.get_opt("web-green").await.expect("get").is_some(),
        "the preview was deleted after the restart while the target had no ready endpoint"
    );
    let events = events(&c.client).await;
    assert!(
        !events.iter().any(|e| e.contains("DeadlineExceeded")),
        "{events:?}"
    );

    set_target_ready(&slices, true).await;
    c.status_until("Completed", completed).await;
    c.deployment_deleted("web-green").await;
    second.abort();
}

/// kube36 (left by check35): a TrafficShift made undecodable (`hold: 9000h`, which the schema's
/// pattern lets in) while its preview is kept after the drain (a held retirement: after
/// promotion, the target without a ready endpoint, and no deadline). The rollout is past
/// promotion, so it finishes from its record: the preview stays as the route's backup while the
/// target cannot serve, nothing is rolled back, and once the target is ready again the preview
/// is deleted and the rollout completes, then `InvalidSpec` is shown. The field is named at once,
/// while the hold lasts, not only once the rollout has ended.
#[tokio::test]
async fn a_trafficshift_made_undecodable_during_a_held_retirement_finishes_it_and_names_the_field()
{
    let Some(c) = Cluster::start(&["web", "web-green"]) else {
        return;
    };
    let (fake, first, slices) = a_preview_kept_after_its_drain(&c).await;
    make_undecodable(&c.client).await;
    let said = wait_until(WAIT, "a Warning InvalidSpec naming the field", || async {
        let notes = notes(&c.client, "web", "InvalidSpec").await;
        notes.into_iter().find(|n| n.contains(UNDECODABLE))
    })
    .await;
    assert!(
        said.contains("the rollout of generation 1 was promoted and finishes first"),
        "{said}"
    );
    // The hold goes on, also for a controller restarted meanwhile, which reads the rollout from
    // the record of an object that does not decode: the preview is still kept as the backup.
    first.abort();
    let _ = first.await;
    let ctl = c.controller_with(fake.clone());
    wait_until(WAIT, "a second RetireHeld after the restart", || async {
        let held = notes(&c.client, "web", "RetireHeld").await;
        (held.len() >= 2).then_some(())
    })
    .await;
    let (held, _) = raw_status_until(&c.client, "still kept", preview_kept).await;
    assert_eq!(held.phase, Some(Phase::Retiring), "{held:?}");
    assert!(
        c.deploys.get_opt("web-green").await.expect("get").is_some(),
        "the preview was deleted while the target had no ready endpoint"
    );

    set_target_ready(&slices, true).await;
    let (done, _) = raw_status_until(&c.client, "Completed, then InvalidSpec", |s| {
        s.phase == Some(Phase::Completed) && not_progressing_for(s, "InvalidSpec")
    })
    .await;
    assert!(
        done.message
            .as_deref()
            .is_some_and(|m| m.contains(UNDECODABLE)),
        "{done:?}"
    );
    assert_eq!(condition(&done, PROMOTED).0, ConditionStatus::True);
    c.deployment_deleted("web-green").await;
    let web = c.deploys.get("web").await.expect("get web");
    assert_eq!(
        image(&web),
        "web:v2",
        "the target keeps the promoted images"
    );
    let events = events(&c.client).await;
    assert!(
        !events
            .iter()
            .any(|e| e.ends_with("RolledBack") || e.ends_with("Aborting")),
        "{events:?}"
    );
    ctl.abort();
}
