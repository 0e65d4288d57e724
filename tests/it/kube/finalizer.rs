//! The TrafficShift finalizer: deleting a TrafficShift mid-rollout returns all traffic to the
//! target (blue), deletes the preview, and only then lets the TrafficShift go; so does deleting
//! one whose rollout record was removed, or says the rollout ended, while `status.weights` still
//! gives the preview a share.

use std::collections::BTreeMap;
use std::time::Duration;

use crossfade_controller::kube::crd::{Phase, TrafficShiftStatus};
use crossfade_controller::kube::ops::Verb;
use crossfade_controller::kube::shift::FINALIZER;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

use super::cluster::{until_deleted, Cluster, ReplicaLease};
use super::shift::{events_with, image, make_undecodable, notes, raw_shifts, WAIT};
use crate::support::wait_until;

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

/// Session 39: a TrafficShift deleted after `status.rolloutState` was removed (after promotion,
/// all traffic on the preview, by another client) while `status.weights` still gives the preview
/// 100%. Before, the finalizer found no record, deleted the preview at once and let the
/// TrafficShift go, while the proxies still sent the preview all the traffic. Now the share goes
/// back to the target first, as weights published one generation above the proxies' (Warning
/// Event `RolloutRecordMissing`), the preview is kept until every live proxy replica applied
/// them, and only then is it deleted and the finalizer removed.
#[tokio::test]
async fn deleting_a_trafficshift_whose_record_was_removed_returns_the_preview_share_before_deleting_it(
) {
    if let Some(c) = Cluster::with_target().await {
        deleted_with_a_share_left(&c, Left::NoRecord, false).await;
    }
}

/// As above, for a TrafficShift that does not decode (`spec.rollout.hold: 9000h`): before, with
/// no record the finalizer deleted the preview at once by name and owner.
#[tokio::test]
async fn deleting_a_trafficshift_that_does_not_decode_whose_record_was_removed_returns_the_preview_share_first(
) {
    if let Some(c) = Cluster::with_target().await {
        deleted_with_a_share_left(&c, Left::NoRecord, true).await;
    }
}

/// Session 40: as above, with a record that says the rollout has ended (`Completed`, written by
/// another client after promotion) while `status.weights` still gives the preview 100%. Before,
/// the finalizer took the ended record at its word, deleted the preview at once and let the
/// TrafficShift go while the proxies still sent the preview all the traffic. Now the share goes
/// back to the target first (Warning Event `PreviewShareLeft`), as without a record.
#[tokio::test]
async fn deleting_a_trafficshift_whose_ended_record_leaves_the_preview_a_share_returns_it_first() {
    if let Some(c) = Cluster::with_target().await {
        deleted_with_a_share_left(&c, Left::Ended, false).await;
    }
}

/// As above, for a TrafficShift that does not decode: before, the finalizer deleted the preview
/// at once by name and owner.
#[tokio::test]
async fn deleting_a_trafficshift_that_does_not_decode_whose_ended_record_leaves_a_share_returns_it_first(
) {
    if let Some(c) = Cluster::with_target().await {
        deleted_with_a_share_left(&c, Left::Ended, true).await;
    }
}

/// How the share is left on the preview in [`deleted_with_a_share_left`].
#[derive(Clone, Copy)]
enum Left {
    /// `status.rolloutState` removed.
    NoRecord,
    /// The record's rollout set to `Completed`, `status.weights` left as it was.
    Ended,
}

/// Promotes rollout 1, then removes its record or says it completed
/// ([`super::lifecycle::status_edited_after_promotion`]), makes the TrafficShift undecodable if
/// asked, deletes it and starts the controllers with a live proxy replica that applied the 100%
/// and nothing since; checks that the preview's share goes back to the target before the preview
/// is deleted, and that both go once the replica applied it.
async fn deleted_with_a_share_left(c: &Cluster, left: Left, undecodable: bool) {
    let (edit, reason, said) = match left {
        Left::NoRecord => (
            json!([{ "op": "remove", "path": "/status/rolloutState" }]),
            "RolloutRecordMissing",
            "status.rolloutState is missing while status.weights still gives the preview 100%",
        ),
        Left::Ended => (
            json!([{ "op": "replace", "path": "/status/rolloutState/rollout/phase", "value": "Completed" },
                { "op": "replace", "path": "/status/phase", "value": "Completed" }]),
            "PreviewShareLeft",
            "rollout 1 completed while status.weights still gives the preview 100%",
        ),
    };
    let published = super::lifecycle::status_edited_after_promotion(c, edit).await;
    if undecodable {
        make_undecodable(&c.client).await;
    }
    let applied = |generation: u64| BTreeMap::from([("default/web".to_owned(), generation)]);
    let replica = ReplicaLease::start(c.client.clone(), "crossfade-proxy-slow", applied(published));
    let raw = raw_shifts(&c.client);
    raw.delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    let ctl = c.controller();
    let returned = wait_until(WAIT, "the preview's share back to the target", || async {
        let Some(shift) = raw.get_opt("web").await.expect("get") else {
            let preview = c.deploys.get_opt("web-green").await.expect("get");
            let preview = if preview.is_some() { "kept" } else { "deleted" };
            panic!("the trafficshift went (preview {preview}) while status.weights still gave the preview 100% (generation {published}): never returned to the target");
        };
        let status = shift.data.get("status").cloned()?;
        let weights = serde_json::from_value::<TrafficShiftStatus>(status).ok()?.weights?;
        (weights.preview.bp() == 0 && weights.generation > published).then_some(weights.generation)
    })
    .await;
    // Held by the replica behind: looked at again every 2 s meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        c.deploys.get_opt("web-green").await.expect("get").is_some(),
        "the preview is deleted before every proxy replica applied generation {returned}"
    );
    assert!(
        raw.get_opt("web").await.expect("get").is_some(),
        "the finalizer went"
    );
    replica.ack(applied(returned));
    until_deleted(&raw, "web").await;
    c.deployment_deleted("web-green").await;
    let notes_said = notes(&c.client, "web", reason).await;
    assert!(
        notes_said.iter().any(|n| n.starts_with(said)),
        "{notes_said:?}"
    );
    events_with(&c.client, &["Normal Deleting", "Normal Aborted"]).await;
    let aborted = notes(&c.client, "web", "Aborted").await;
    assert!(
        aborted.len() == 1
            && aborted[0].starts_with(&format!("aborted: green at 0% (generation {returned})")),
        "{aborted:?}"
    );
    replica.stop().await;
    ctl.abort();
}

/// Session 40: as above with the controller running all along, which holds the completed rollout
/// in memory: `status.weights` edited by another client after the rollout completed to give the
/// preview 100% again, then the TrafficShift deleted. Before, the deletion took the rollout in
/// memory at its word (completed) and let the TrafficShift go at once, the share left in
/// `status.weights`; now an ended rollout is read from status again at the deletion, and the
/// share goes back to the target (weights published above the edited generation, Warning Event
/// `PreviewShareLeft`) before the TrafficShift goes.
#[tokio::test]
async fn deleting_a_completed_trafficshift_whose_weights_were_edited_returns_the_share_first() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let (ctl, _) = c.rollout_at_step_one().await;
    crossfade_controller::kube::ops::send(&c.client, "default", "web", Verb::Promote)
        .await
        .expect("promote rollout 1");
    let done = c
        .status_until("Completed", |s| s.phase == Some(Phase::Completed))
        .await;
    c.deployment_deleted("web-green").await;
    // The controller does not act on the edit (nothing to do for a completed rollout), but a
    // status write of its own that was still to come after the promotion writes its record's
    // weights over an edit made just before it (session 41: once in a parallel run, `left:
    // Some((0, 3))`; which write was not caught): the edit is made again until it stood for a
    // second.
    let mut edited = done.weights.map_or(0, |w| w.generation);
    let mut shown = None;
    for _ in 0..5 {
        edited = c.status().await.weights.map_or(edited, |w| w.generation) + 1;
        let edit = json!({ "status": { "weights":
            { "active": "0%", "preview": "100%", "generation": edited } } });
        c.shifts
            .patch_status("web", &PatchParams::default(), &Patch::Merge(&edit))
            .await
            .expect("edit status.weights");
        tokio::time::sleep(Duration::from_secs(1)).await;
        shown = c
            .status()
            .await
            .weights
            .map(|w| (w.preview.bp(), w.generation));
        if shown == Some((10_000, edited)) {
            break;
        }
    }
    assert_eq!(shown, Some((10_000, edited)), "the edit stands");
    let log = c.status_log();
    c.shifts
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    until_deleted(&c.shifts, "web").await;
    let left = notes(&c.client, "web", "PreviewShareLeft").await;
    assert!(
        left.iter()
            .any(|n| n.starts_with("rollout 1 completed while status.weights still gives the preview 100%")),
        "the trafficshift went while status.weights gave the preview 100% (generation {edited}): {left:?}"
    );
    let last = log.all().last().cloned().expect("a status");
    let returned = last
        .weights
        .map(|w| (w.preview.bp(), w.generation > edited));
    assert_eq!(returned, Some((0, true)), "{:?}", log.all());
    ctl.abort();
}
