//! C02 in Kubernetes mode, rollback variant (argo-rollouts#3941): a rollback or abort gives the
//! target (blue) back its traffic no faster than its ready endpoints can carry it (at most 1.5 ×
//! their share), read from the EndpointSlices of Service `web-blue` against the larger of the
//! Deployment's desired replicas and the most ready endpoints it had since the rollout started;
//! and the operator's exit from a long capacity wait (`crossfade.dev/force-abort`, as `crossfade
//! abort --force --kube`).
//!
//! Where the emulator differs from a real API server: it runs no kubelet, no Deployment
//! controller and no EndpointSlice controller. The tests play them: [`Cluster`]'s kubelet
//! stand-in marks Deployments available, and the tests publish the EndpointSlices of Services
//! `web-blue` and `web-green` themselves, changing their endpoints' `conditions.ready` as a
//! kubelet's readiness probes would and removing endpoints as a scale-down would (in a cluster
//! the slices follow the pods; here scaling the Deployment changes no slice, so the test changes
//! both). The proxies are [`FakeProxies`] (they acknowledge every weights generation): "applied"
//! here means acknowledged, not routed. The controller reads the slices at each reconcile (every
//! 2 s during a capacity wait), so every step is waited for, with the usual generous bound.

use crossfade_controller::kube::command::{ABORT, FORCE_ABORT};
use crossfade_controller::kube::crd::{Phase, TrafficShift, TrafficShiftStatus};
use crossfade_controller::kube::ops::{self, Verb};
use crossfade_controller::kube::store::ShiftRecord;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;
use std::collections::BTreeMap;

use super::cluster::{Cluster, ReplicaLease, StatusLog};
use super::objects::deployment;
use super::shift::{
    aborted_as_invalid, events_with, image, make_undecodable, notes, raw_status_until, WAIT,
};
use crate::support::wait_until;

/// One step at 90% held long enough for the tests to act at it, then 100%.
fn policy() -> serde_json::Value {
    json!({ "steps": [{ "weight": 90, "hold": "30m" }, { "weight": 100 }],
        "progressDeadline": "60m", "analysis": { "minRequests": 5 } })
}

/// The endpoints of a slice: one per entry, address `10.0.<backend>.<i>`, ready as given.
fn endpoints(backend: u8, ready: &[bool]) -> serde_json::Value {
    let list: Vec<_> = ready
        .iter()
        .enumerate()
        .map(|(i, ready)| {
            json!({ "addresses": [format!("10.0.{backend}.{}", i + 1)],
                "conditions": { "ready": ready, "serving": ready, "terminating": false } })
        })
        .collect();
    json!(list)
}

/// Creates EndpointSlice `<service>-1` of Service `service` with `ready` endpoints (backend
/// number `backend` in their addresses).
async fn publish(client: &kube::Client, service: &str, backend: u8, ready: &[bool]) {
    let slices: Api<EndpointSlice> = Api::default_namespaced(client.clone());
    let slice: EndpointSlice = serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": { "name": format!("{service}-1"),
            "labels": { "kubernetes.io/service-name": service } },
        "addressType": "IPv4",
        "endpoints": endpoints(backend, ready),
        "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }]
    }))
    .expect("valid endpointslice");
    slices
        .create(&PostParams::default(), &slice)
        .await
        .expect("create endpointslice");
}

/// Replaces the endpoints of blue's slice (a JSON merge patch replaces the list).
async fn blue_endpoints(client: &kube::Client, ready: &[bool]) {
    let slices: Api<EndpointSlice> = Api::default_namespaced(client.clone());
    let patch = json!({ "endpoints": endpoints(1, ready) });
    slices
        .patch("web-blue-1", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("patch blue's endpointslice");
}

/// Sets Deployment `web`'s desired replicas, as an autoscaler would.
async fn scale(client: &kube::Client, replicas: i32) {
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let patch = json!({ "spec": { "replicas": replicas } });
    deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("scale deployment web");
}

/// Sets annotation `key` of Deployment `web` to `value`.
async fn annotate(client: &kube::Client, key: &str, value: &str) {
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let patch = json!({ "metadata": { "annotations": { key: value } } });
    deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("annotate deployment web");
}

fn preview_bp(s: &TrafficShiftStatus) -> Option<u32> {
    s.weights.as_ref().map(|w| w.preview.bp())
}

fn record(shift: &TrafficShift) -> Option<ShiftRecord> {
    ShiftRecord::from_status(shift)
}

/// Target `web` with `replicas` (all ready in `web-blue`'s slice), green with 1 ready endpoint,
/// TrafficShift `web` at its 90% step, and the controllers running. `None` without the emulator.
async fn at_ninety(replicas: usize) -> Option<(Cluster, StatusLog, tokio::task::JoinHandle<()>)> {
    let c = Cluster::start(&["web", "web-green"])?;
    let mut web = deployment("web", &[]);
    if let Some(spec) = web.spec.as_mut() {
        spec.replicas = Some(i32::try_from(replicas).expect("replicas"));
    }
    c.deploys
        .create(&PostParams::default(), &web)
        .await
        .expect("create deployment web");
    publish(&c.client, "web-blue", 1, &vec![true; replicas]).await;
    publish(&c.client, "web-green", 2, &[true]).await;
    let log = c.status_log();
    let ctl = c.controller();
    c.create_shift(policy()).await;
    // Applied (the proxies acknowledged it), not only published: a rollback never gives the
    // preview more than it was known to have.
    c.status_until("step 1 at 90%, applied", |s| {
        let message = s.message.as_deref().unwrap_or_default();
        s.phase == Some(Phase::Progressing)
            && preview_bp(s) == Some(9_000)
            && message.contains("holding")
    })
    .await;
    // The most ready endpoints blue had is recorded while the rollout goes forward.
    let most = Some(u32::try_from(replicas).expect("replicas"));
    wait_until(WAIT, "blue's ready endpoints recorded", || async {
        let shift = c.shifts.get("web").await.expect("get trafficshift");
        (record(&shift)?.active_ready_most == most).then_some(())
    })
    .await;
    Some((c, log, ctl))
}

/// At 90% green, blue (4 replicas) is scaled down to 1 ready endpoint (an autoscaler, while green
/// carried the traffic), then aborted: green keeps 62.5% (blue at 1 of 4: 1.5 × 25%) and the
/// status says why.
async fn capacity_wait() -> Option<(Cluster, StatusLog, tokio::task::JoinHandle<()>)> {
    let (c, log, ctl) = at_ninety(4).await?;
    scale(&c.client, 1).await;
    blue_endpoints(&c.client, &[true]).await;
    annotate(&c.client, ABORT, "20261202T080000Z-a1").await;
    let waiting = c
        .status_until("an abort waiting for blue's capacity", |s| {
            let message = s.message.as_deref().unwrap_or_default();
            s.phase == Some(Phase::Aborting)
                && preview_bp(s) == Some(6_250)
                && message.contains("1 of 4 endpoints healthy")
        })
        .await;
    let message = waiting.message.clone().unwrap_or_default();
    assert!(
        message.contains("blue at 37.5%, 1 of 4 endpoints healthy"),
        "{message}"
    );
    Some((c, log, ctl))
}

/// C02 rollback variant in a cluster: blue scaled down while green carried 90% is given its
/// traffic back in steps as its ready endpoints grow (90% → 62.5% → 25% → 0% on green), never at
/// once; the Deployment's replicas are measured against what blue had (4), not its 1 now.
#[tokio::test]
async fn c02_kube_rollback_gives_blue_its_traffic_back_as_its_ready_endpoints_grow() {
    let Some((c, log, ctl)) = capacity_wait().await else {
        return;
    };
    // The autoscaler scales blue back up: new pods, not ready yet; nothing moves.
    scale(&c.client, 4).await;
    blue_endpoints(&c.client, &[true, false, false, false]).await;
    // Two ready: blue may carry 75%.
    blue_endpoints(&c.client, &[true, true, false, false]).await;
    let two = c
        .status_until("green at 25% with 2 of 4 blue endpoints ready", |s| {
            preview_bp(s) == Some(2_500)
        })
        .await;
    assert_eq!(two.phase, Some(Phase::Aborting), "{two:?}");
    // Three ready: blue can carry all of it.
    blue_endpoints(&c.client, &[true, true, true, false]).await;
    let done = c
        .status_until("Aborted", |s| s.phase == Some(Phase::Aborted))
        .await;
    assert_eq!(preview_bp(&done), Some(0));
    log.until("the watch saw Aborted", |s| s.phase == Some(Phase::Aborted))
        .await;
    let weights = log.preview_weights();
    assert!(
        weights.ends_with(&[9_000, 6_250, 2_500, 0]),
        "green's weights in steps, never at once: {weights:?}"
    );
    let changed = notes(&c.client, "web", "CapacityChanged").await;
    assert!(
        changed
            .iter()
            .any(|n| n.contains("2 of 4 endpoints healthy")),
        "{changed:?}"
    );
    let shift = c.shifts.get("web").await.expect("get trafficshift");
    let reason = record(&shift).and_then(|r| r.rollout.reason);
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.starts_with("aborted by operator")),
        "{reason:?}"
    );
    c.deployment_deleted("web-green").await;
    let web = c.deploys.get("web").await.expect("web");
    assert_eq!(image(&web), "web:v1", "the target is never touched");
    ctl.abort();
}

/// With every one of blue's endpoints ready, an abort sends all of green's traffic back at once,
/// as before capacity was read, and the Event says from which reading.
#[tokio::test]
async fn c02_kube_with_every_blue_endpoint_ready_an_abort_sends_all_traffic_back_at_once() {
    let Some((c, log, ctl)) = at_ninety(2).await else {
        return;
    };
    annotate(&c.client, ABORT, "20261202T080000Z-a1").await;
    c.status_until("Aborted", |s| s.phase == Some(Phase::Aborted))
        .await;
    log.until("the watch saw Aborted", |s| s.phase == Some(Phase::Aborted))
        .await;
    let weights = log.preview_weights();
    assert!(weights.ends_with(&[9_000, 0]), "{weights:?}");
    events_with(&c.client, &["Normal Aborting"]).await;
    let aborting = notes(&c.client, "web", "Aborting").await;
    assert!(
        aborting.iter().any(|n| n.contains(
            "sending all traffic back to blue (2 of 2 endpoints healthy; green: 1 of 1)"
        )),
        "{aborting:?}"
    );
    ctl.abort();
}

/// Session 40: a controller restarted during a capacity wait (an abort holding green at 62.5%,
/// applied) whose list of the proxies' Leases then fails at every reconcile (here a Lease of the
/// proxies' label that does not decode; a Role revoked or an API server answering 500 fail the
/// same way). Before, the restart asked for 62.5% again: a new weights generation written to
/// status, then a reconcile failing at the Leases' list as it waited for the proxies to apply it;
/// the next reconcile read the rollout from status again and asked again, another generation and
/// another write, at every retry. Now a resumed capacity wait keeps holding, asks for nothing and
/// lists no Lease: status is not written, and the wait goes on as blue gets its endpoints back.
#[tokio::test]
async fn a_capacity_wait_resumed_while_the_proxy_leases_cannot_be_listed_publishes_nothing_again() {
    let Some((c, _log, ctl)) = capacity_wait().await else {
        return;
    };
    ctl.abort();
    let _ = ctl.await;
    let held = c.status().await;
    let held = held.weights.map(|w| (w.preview.bp(), w.generation));
    let leases = garble_proxy_leases(&c.client).await;
    let ctl = c.controller();
    // The restart's reconcile (and before, the failed ones after it).
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let what = "while the proxies' leases cannot be listed";
    let after = super::lifecycle::unwritten_for(&c, 6, what).await;
    let status = after.status.expect("status");
    assert_eq!(
        status.weights.map(|w| (w.preview.bp(), w.generation)),
        held,
        "the held weights published again"
    );
    ungarble_proxy_leases(&leases).await;
    blue_endpoints(&c.client, &[true; 4]).await;
    c.status_until("Aborted", |s| s.phase == Some(Phase::Aborted))
        .await;
    ctl.abort();
}

/// Session 41: as above, but the abort's weight (0%: blue can carry it all) still waits for a
/// proxy replica to apply it (one that lags at the 90% step's generation), not held, when the list
/// of the proxies' Leases starts failing. Before, each reconcile after that failure read the
/// rollout from status again and asked for 0% again: another weights generation written to
/// status at every retry, each write waking the next retry at once. Now a reload asking for the
/// weight that status already publishes waits for that publication's acknowledgements: one
/// generation for the abort, no further write.
#[tokio::test]
async fn an_abort_whose_weight_is_pending_while_the_proxy_leases_cannot_be_listed_publishes_it_once(
) {
    let Some((c, _log, ctl)) = at_ninety(4).await else {
        return;
    };
    let generation = |s: &TrafficShiftStatus| s.weights.as_ref().map(|w| w.generation);
    let at_ninety = generation(&c.status().await).expect("weights");
    let route = || "default/web".to_owned();
    let lagging = BTreeMap::from([(route(), at_ninety)]);
    let replica = ReplicaLease::start(c.client.clone(), "crossfade-proxy-lagging", lagging);
    annotate(&c.client, ABORT, "20261202T080000Z-a1").await;
    c.status_until("the abort's 0% published", |s| {
        s.phase == Some(Phase::Aborting) && preview_bp(s) == Some(0)
    })
    .await;
    let leases = garble_proxy_leases(&c.client).await;
    // The first failed reconciles and the reloads after them.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let published = generation(&c.status().await);
    assert_eq!(
        published,
        Some(at_ninety + 1),
        "weights generations published after the 90% step's {at_ninety} (the abort's, then the reloads')"
    );
    let what = "while the abort's weight waits and the proxies' leases cannot be listed";
    let after = super::lifecycle::unwritten_for(&c, 6, what).await;
    assert_eq!(generation(&after.status.expect("status")), published);
    ungarble_proxy_leases(&leases).await;
    replica.ack(BTreeMap::from([(route(), at_ninety + 1)]));
    c.status_until("Aborted", |s| s.phase == Some(Phase::Aborted))
        .await;
    replica.stop().await;
    ctl.abort();
}

/// Creates a Lease of the proxies' label that does not decode (`spec.leaseDurationSeconds:
/// "soon"`; the emulator stores it): every list of the proxies' Leases fails from then on, as
/// with a revoked Role or an API server answering 500, which the emulator cannot switch on
/// mid-test. Returns the Leases' API for [`ungarble_proxy_leases`].
async fn garble_proxy_leases(client: &kube::Client) -> Api<DynamicObject> {
    let resource = kube::api::ApiResource::erase::<Lease>(&());
    let leases: Api<DynamicObject> = Api::default_namespaced_with(client.clone(), &resource);
    let garbled: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": { "name": "crossfade-proxy-garbled",
            "labels": { "crossfade.dev/proxy": "true" } },
        "spec": { "leaseDurationSeconds": "soon" }
    }))
    .expect("lease");
    leases
        .create(&PostParams::default(), &garbled)
        .await
        .expect("create a lease that does not decode");
    leases
}

/// Deletes the Lease [`garble_proxy_leases`] made: the lists work again.
async fn ungarble_proxy_leases(leases: &Api<DynamicObject>) {
    leases
        .delete("crossfade-proxy-garbled", &Default::default())
        .await
        .expect("delete the lease");
}

/// During a capacity wait a second abort is refused with words that say what happens (traffic
/// held on green on purpose, and the way out); `abort --force --kube` (the
/// `crossfade.dev/force-abort` annotation) sends all of it to blue at once, recorded in status
/// (the command's outcome, the reason) and as a Warning Event `AbortForced`.
#[tokio::test]
async fn a_force_abort_annotation_ends_a_capacity_wait_at_once_and_is_recorded() {
    let Some((c, log, ctl)) = capacity_wait().await else {
        return;
    };
    annotate(&c.client, ABORT, "20261202T080000Z-a2").await;
    let refused = c
        .status_until("the second abort answered", |s| {
            let last = s.commands.as_ref().and_then(|c| c.last.as_ref());
            last.is_some_and(|l| l.value == "20261202T080000Z-a2")
        })
        .await;
    let last = refused
        .commands
        .clone()
        .and_then(|c| c.last)
        .expect("last command");
    assert!(!last.accepted, "{last:?}");
    assert!(
        last.message.contains(
            "abort rejected: already sending traffic back to blue as fast as its capacity allows"
        ) && last.message.contains("`abort --force`"),
        "{last:?}"
    );
    assert!(
        !last.message.contains("already sending all traffic back"),
        "{last:?}"
    );
    assert_eq!(refused.phase, Some(Phase::Aborting));
    assert_eq!(
        preview_bp(&refused),
        Some(6_250),
        "the refusal moved nothing"
    );

    // `crossfade abort --force --kube web`: the CLI's library path (annotate, wait until acted).
    let sent = ops::send(&c.client, "default", "web", Verb::ForceAbort)
        .await
        .expect("send force-abort");
    assert_eq!(sent.annotations[0].0, FORCE_ABORT);
    let shift = ops::wait_acted(&c.client, "default", "web", &sent, WAIT)
        .await
        .expect("force-abort acted on");
    let outcome = ops::outcome(&shift, &sent).expect("its outcome");
    assert!(outcome.accepted, "{outcome:?}");
    let done = c
        .status_until("Aborted", |s| s.phase == Some(Phase::Aborted))
        .await;
    assert_eq!(preview_bp(&done), Some(0));
    let shift = c.shifts.get("web").await.expect("get trafficshift");
    let reason = record(&shift)
        .and_then(|r| r.rollout.reason)
        .unwrap_or_default();
    assert!(
        reason.starts_with("aborted by operator")
            && reason.contains("force-abort by operator: all traffic sent back to blue at once"),
        "{reason}"
    );
    events_with(&c.client, &["Warning AbortForced", "Normal Aborted"]).await;
    let forced = notes(&c.client, "web", "AbortForced").await;
    assert!(
        forced.iter().any(
            |n| n.contains("1 of 4 endpoints healthy") && n.contains("green was kept at 62.5%")
        ),
        "{forced:?}"
    );
    log.until("the watch saw Aborted", |s| s.phase == Some(Phase::Aborted))
        .await;
    let weights = log.preview_weights();
    assert!(weights.ends_with(&[9_000, 6_250, 0]), "{weights:?}");
    ctl.abort();
}

/// A TrafficShift edited into one that does not decode (`hold: 9000h`) while an abort waits for
/// blue's capacity: the abort goes on from the record (green held at 62.5%, nothing sent back at
/// once), `crossfade abort --force --kube` ends it at once, and then `InvalidSpec` is shown.
/// Before, the CLI refused any command for an object that does not decode ("no controller acts on
/// a command for it until the field is fixed"), although the controller takes the commands of a
/// rollout it ends from its record.
#[tokio::test]
async fn an_undecodable_edit_during_a_capacity_wait_keeps_the_wait_and_takes_a_force_abort() {
    let Some((c, _log, ctl)) = capacity_wait().await else {
        return;
    };
    make_undecodable(&c.client).await;
    // Looked at again (every 2 s during a capacity wait) with the edit in: still waiting.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let (held, _) = raw_status_until(&c.client, "status", |_| true).await;
    assert_eq!(held.phase, Some(Phase::Aborting), "{held:?}");
    assert_eq!(preview_bp(&held), Some(6_250), "{held:?}");
    force_abort(&c).await;
    let done = aborted_as_invalid(&c.client).await;
    assert_eq!(preview_bp(&done), Some(0), "{done:?}");
    let forced = notes(&c.client, "web", "AbortForced").await;
    assert!(!forced.is_empty(), "the force-abort acted on");
    c.deployment_deleted("web-green").await;
    ctl.abort();
}

/// `crossfade abort --force --kube web` through the CLI's library path (annotate, wait until
/// acted); it must be accepted.
async fn force_abort(c: &Cluster) {
    let sent = ops::send(&c.client, "default", "web", Verb::ForceAbort)
        .await
        .expect("send force-abort");
    assert_eq!(sent.deployment, "default/web", "the rollout's own target");
    let shift = ops::wait_acted(&c.client, "default", "web", &sent, WAIT)
        .await
        .expect("force-abort acted on");
    let outcome = ops::outcome(&shift, &sent).expect("its outcome");
    assert!(outcome.accepted, "{outcome:?}");
}

/// `spec.deployment` edited (to `web2`) while an abort waits for blue's capacity: the abort goes
/// on into `web`, the rollout's own target, and `crossfade abort --force --kube` writes its
/// annotation there, where the rollout reads it. Before, the CLI annotated `spec.deployment`
/// (`web2`, here missing: the patch failed; an existing one: never acted on).
#[tokio::test]
async fn a_force_abort_after_spec_deployment_was_edited_reaches_the_rollouts_own_target() {
    let Some((c, _log, ctl)) = capacity_wait().await else {
        return;
    };
    let edit = json!({ "spec": { "deployment": "web2" } });
    c.shifts
        .patch("web", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("patch spec.deployment");
    force_abort(&c).await;
    let done = c
        .status_until("Aborted", |s| s.phase == Some(Phase::Aborted))
        .await;
    assert_eq!(preview_bp(&done), Some(0), "{done:?}");
    c.deployment_deleted("web-green").await;
    ctl.abort();
}
