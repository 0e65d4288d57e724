//! The TrafficShift controller's requests and error paths against a mock API
//! (`crate::kube::mock`): the finalizer patches, a status write refused with 500 or never answered
//! (the reconcile fails, backs off, creates and deletes nothing, and the rollout resumes from
//! status), the cleanup of a deleted TrafficShift.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::*;
use crate::kube::mock::{self, Answer, ApiServer, Seen};
use crate::kube::scrape::ProxyScraper;
use crate::kube::store::ShiftRecord;
use crate::rollout::Input;

const SHIFT: &str = "/apis/crossfade.dev/v1alpha1/namespaces/shop/trafficshifts/web";
const STATUS: &str = "/apis/crossfade.dev/v1alpha1/namespaces/shop/trafficshifts/web/status";
const TARGET: &str = "/apis/apps/v1/namespaces/shop/deployments/web";
const PREVIEW: &str = "/apis/apps/v1/namespaces/shop/deployments/web-green";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/shop/events";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/crossfade-system/leases";

fn context() -> (Arc<Context>, ApiServer) {
    let (client, server) = mock::client();
    let proxies = Proxies::new(client.clone(), &["crossfade-system".to_owned()]);
    let metrics = Arc::new(ProxyScraper::new(None));
    (Arc::new(Context::new(client, proxies, metrics)), server)
}

/// TrafficShift `shop/web` (generation 1) with the finalizer and `status.rolloutState` = `state`.
fn shift_json(state: Option<&ShiftRecord>) -> Value {
    let status = state.map(|r| json!({ "rolloutState": serde_json::to_value(r).unwrap() }));
    json!({
        "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift",
        "metadata": { "name": "web", "namespace": "shop", "uid": "u-1", "generation": 1,
                      "resourceVersion": "10", "finalizers": [FINALIZER] },
        "spec": { "deployment": "web", "images": { "app": "web:v2" } },
        "status": status
    })
}

/// The TrafficShift as the controller's watch delivers it.
fn object_of(value: &Value) -> Arc<DynamicObject> {
    Arc::new(serde_json::from_value(value.clone()).unwrap())
}

fn target() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "web", "namespace": "shop", "uid": "d-1", "resourceVersion": "40" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": { "metadata": { "labels": { "app": "web" } },
                          "spec": { "containers": [{ "name": "app", "image": "web:v1" }] } }
        }
    })
}

/// A cluster for [`ApiServer::serve`]: the TrafficShift as last written, the target, no preview,
/// no proxy; status writes answered from `writes` (then accepted), Events accepted.
struct Cluster {
    shift: Value,
    target: Value,
    preview: Option<Value>,
    writes: VecDeque<Answer>,
    deletes: VecDeque<Answer>,
}

impl Cluster {
    fn new(shift: Value) -> Cluster {
        Cluster {
            shift,
            target: target(),
            preview: None,
            writes: VecDeque::new(),
            deletes: VecDeque::new(),
        }
    }

    fn answer(&mut self, call: &mock::Call) -> Answer {
        let not_found = || Answer::Reply(404, mock::status(404, "NotFound", "not found"));
        match (call.method.as_str(), call.path.as_str()) {
            ("GET", SHIFT) => Answer::Reply(200, self.shift.clone()),
            ("GET", TARGET) => Answer::Reply(200, self.target.clone()),
            ("GET", PREVIEW) => self
                .preview
                .clone()
                .map_or_else(not_found, |p| Answer::Reply(200, p)),
            ("DELETE", PREVIEW) => self.deletes.pop_front().unwrap_or_else(|| {
                self.preview = None;
                Answer::Reply(200, json!({ "kind": "Status", "status": "Success" }))
            }),
            ("POST", EVENTS) => Answer::Reply(201, call.body.clone()),
            ("PATCH", SHIFT) => {
                let mut patched = self.shift.clone();
                patched["metadata"]["finalizers"] = json!([]);
                Answer::Reply(200, patched)
            }
            ("GET", LEASES) => Answer::Reply(
                200,
                json!({ "apiVersion": "coordination.k8s.io/v1", "kind": "LeaseList",
                        "metadata": { "resourceVersion": "1" }, "items": [] }),
            ),
            ("PATCH", STATUS) => Answer::Reply(200, self.shift.clone()),
            ("PUT", STATUS) => self.writes.pop_front().unwrap_or_else(|| {
                let mut written = call.body.clone();
                let rv: u64 = written["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                written["metadata"]["resourceVersion"] = json!((rv + 1).to_string());
                // A write of `/status` changes only the status, as on an API server.
                written["spec"] = self.shift["spec"].clone();
                self.shift = written.clone();
                Answer::Reply(200, written)
            }),
            _ => Answer::Reply(500, mock::status(500, "InternalError", "not scripted")),
        }
    }
}

fn lines(seen: &[Seen]) -> Vec<&str> {
    seen.iter().map(|s| s.line.as_str()).collect()
}

/// No Deployment or Service was created, changed or deleted.
fn touched_nothing(seen: &[Seen]) {
    for s in seen {
        let read_or_status = s.line.starts_with("GET ")
            || s.line == format!("PUT {STATUS}")
            || s.line == format!("POST {EVENTS}");
        assert!(read_or_status, "unexpected write: {}", s.line);
    }
}

fn internal_error() -> Answer {
    Answer::Reply(
        500,
        mock::status(500, "InternalError", "etcdserver: request timed out"),
    )
}

#[tokio::test(start_paused = true)]
async fn the_finalizer_is_added_by_a_guarded_json_patch_before_anything_else() {
    let (ctx, mut server) = context();
    let mut fresh = shift_json(None);
    fresh["metadata"]["finalizers"] = Value::Null;
    let task = tokio::spawn(reconcile_finalized(object_of(&fresh), ctx));
    let patch = server.expect("PATCH", SHIFT).await;
    assert!(patch.query.is_empty(), "{:?}", patch.query);
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/json-patch+json")
    );
    assert_eq!(
        patch.body,
        json!([
            { "op": "test", "path": "/metadata/finalizers", "value": null },
            { "op": "add", "path": "/metadata/finalizers", "value": ["crossfade.dev/rollout"] }
        ])
    );
    patch.ok(shift_json(None));
    let action = task.await.unwrap().expect("finalizer added");
    assert_eq!(
        action,
        Action::await_change(),
        "the patch brings the next reconcile"
    );
    server.assert_quiet(Duration::from_secs(60)).await;
}

#[tokio::test(start_paused = true)]
async fn a_500_on_the_first_status_write_fails_the_reconcile_before_anything_is_created() {
    let (ctx, mut server) = context();
    let object = shift_json(None);
    let mut cluster = Cluster::new(object.clone());
    cluster.writes.push_back(internal_error());
    let task = tokio::spawn(reconcile_finalized(object_of(&object), ctx.clone()));
    let (result, seen) = server.serve(task, |c| cluster.answer(c)).await;

    let err = result.expect_err("the write failed");
    let text = err.to_string();
    assert!(
        matches!(err, FinalizerError::ApplyFailed(ShiftError::Store(_))),
        "{err:?}"
    );
    assert!(
        text.contains("trafficshift shop/web: write status"),
        "{text}"
    );
    // Write-ahead: the rollout is recorded before its preview is made, so a failed record
    // means no preview, no Service, no Event.
    assert_eq!(
        lines(&seen),
        [
            format!("GET {SHIFT}"),
            format!("GET {TARGET}"),
            format!("PUT {STATUS}")
        ]
    );
    assert!(
        ctx.take("u-1").is_none(),
        "the rollout is re-read next time"
    );
    let waits: Vec<_> = (0..3)
        .map(|_| error_policy(object_of(&object), &err, ctx.clone()))
        .collect();
    assert_eq!(
        waits,
        [5, 10, 20].map(|s| Action::requeue(Duration::from_secs(s))),
        "exponential backoff per TrafficShift"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rollout_whose_status_write_failed_resumes_from_status_and_deletes_nothing() {
    let (ctx, mut server) = context();
    let object = shift_json(Some(&mock::progressing_record()));
    let mut cluster = Cluster::new(object.clone());
    cluster.writes.push_back(internal_error());

    let task = tokio::spawn(reconcile_finalized(object_of(&object), ctx.clone()));
    let (result, seen) = server.serve(task, |c| cluster.answer(c)).await;
    assert!(
        matches!(
            result,
            Err(FinalizerError::ApplyFailed(ShiftError::Store(_)))
        ),
        "{result:?}"
    );
    touched_nothing(&seen);
    assert!(ctx.take("u-1").is_none());

    // The retry reads the TrafficShift from the API (not the watch cache, not memory) and waits
    // for the proxies to apply the same rollout's pending weights, which status publishes
    // already (generation 1). Before (session 41) it published them again, as generation 2.
    let task = tokio::spawn(reconcile_finalized(object_of(&object), ctx.clone()));
    let (result, seen) = server.serve(task, |c| cluster.answer(c)).await;
    let action = result.expect("resumed");
    assert_eq!(seen[0].line, format!("GET {SHIFT}"));
    touched_nothing(&seen);
    let writes: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.line == format!("PUT {STATUS}"))
        .collect();
    assert_eq!(writes.len(), 1, "{:?}", lines(&seen));
    // The reattach is recorded (guarded by the version read); the weights are not published
    // again.
    let versions: Vec<&Value> = writes
        .iter()
        .map(|w| &w.body["metadata"]["resourceVersion"])
        .collect();
    assert_eq!(versions, [&json!("10")]);
    for (write, generation) in writes.iter().zip([1]) {
        let status = &write.body["status"];
        assert_eq!(
            status["rolloutState"]["rollout"]["id"], 1,
            "the same rollout"
        );
        assert_eq!(status["rolloutState"]["rollout"]["step"], 0);
        assert_eq!(status["phase"], "Progressing");
        assert_eq!(status["weights"]["generation"], generation);
        assert_eq!(status["weights"]["preview"], "5%");
    }
    let list = seen
        .iter()
        .find(|s| s.line == format!("GET {LEASES}"))
        .expect("the proxies' Leases are listed");
    assert_eq!(
        list.query,
        mock::query(&[("labelSelector", "crossfade.dev/proxy=true")])
    );
    assert_eq!(
        action,
        Action::requeue(ACK_POLL),
        "waits for the proxies to apply the weights"
    );
}

#[tokio::test(start_paused = true)]
async fn a_status_write_that_never_answers_is_dropped_at_the_reconcile_timeout() {
    let (ctx, mut server) = context();
    let object = shift_json(Some(&mock::progressing_record()));
    let mut cluster = Cluster::new(object.clone());
    cluster.writes.push_back(Answer::Hold);
    let started = Instant::now();
    let task = tokio::spawn(reconcile_finalized(object_of(&object), ctx.clone()));
    let (result, seen) = server.serve(task, |c| cluster.answer(c)).await;
    assert_eq!(Instant::now() - started, RECONCILE_TIMEOUT);
    let err = result.expect_err("timed out");
    assert!(
        matches!(
            err,
            FinalizerError::ApplyFailed(ShiftError::TimedOut { .. })
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "failed to apply object: trafficshift shop/web: reconcile did not finish within 30s (an API request that never answered); dropped, the rollout resumes from status"
    );
    assert_eq!(
        seen.last().map(|s| s.line.clone()),
        Some(format!("PUT {STATUS}"))
    );
    touched_nothing(&seen);
    assert!(
        ctx.take("u-1").is_none(),
        "the rollout is re-read next time"
    );
    assert_eq!(
        error_policy(object_of(&object), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
}

/// A deleted TrafficShift whose rollout has ended: `deletionTimestamp` set, the record terminal.
fn deleted_and_completed(preview: bool) -> (Value, Option<Value>) {
    let mut record = mock::progressing_record();
    record.rollout.phase = crate::rollout::Phase::Completed;
    record.rollout.weights_pending = false;
    let mut object = shift_json(Some(&record));
    object["metadata"]["deletionTimestamp"] = json!("2026-11-30T10:00:00Z");
    let preview = preview.then(|| {
        json!({ "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": { "name": "web-green", "namespace": "shop", "uid": "p-1",
                              "ownerReferences": [{ "apiVersion": "crossfade.dev/v1alpha1",
                                  "kind": "TrafficShift", "name": "web", "uid": "u-1",
                                  "controller": true }] } })
    });
    (object, preview)
}

#[tokio::test(start_paused = true)]
async fn the_finalizer_is_removed_only_once_the_preview_is_gone() {
    let (ctx, mut server) = context();
    let (object, preview) = deleted_and_completed(true);
    let mut cluster = Cluster::new(object.clone());
    cluster.preview = preview;

    // The preview's deletion fails (500): the finalizer stays, retried with backoff.
    cluster.deletes.push_back(internal_error());
    let task = tokio::spawn(reconcile_finalized(object_of(&object), ctx.clone()));
    let (result, seen) = server.serve(task, |c| cluster.answer(c)).await;
    let err = result.expect_err("cleanup failed");
    assert!(
        matches!(err, FinalizerError::CleanupFailed(ShiftError::Driver(_))),
        "{err:?}"
    );
    assert!(lines(&seen).contains(&format!("DELETE {PREVIEW}").as_str()));
    assert!(
        !lines(&seen).contains(&format!("PATCH {SHIFT}").as_str()),
        "finalizer kept: {seen:?}"
    );

    // It is deleted (uid precondition), then the finalizer goes by a patch that tests its index.
    let task = tokio::spawn(reconcile_finalized(object_of(&object), ctx.clone()));
    let (result, seen) = server.serve(task, |c| cluster.answer(c)).await;
    assert_eq!(result.expect("cleaned up"), Action::await_change());
    let delete = seen
        .iter()
        .find(|s| s.line == format!("DELETE {PREVIEW}"))
        .expect("deleted");
    assert_eq!(delete.body["preconditions"]["uid"], "p-1");
    let last = seen.last().expect("requests");
    assert_eq!(last.line, format!("PATCH {SHIFT}"));
    assert_eq!(
        last.body,
        json!([
            { "op": "test", "path": "/metadata/finalizers/0", "value": "crossfade.dev/rollout" },
            { "op": "remove", "path": "/metadata/finalizers/0" }
        ])
    );
}

/// [`deleted_and_completed`] with a `hold` the spec type refuses (a number, not a duration).
fn undecodable(object: &mut Value) {
    object["spec"]["rollout"] = json!({ "hold": 10 });
}

#[tokio::test(start_paused = true)]
async fn a_deleted_trafficshift_that_does_not_decode_whose_rollout_ended_deletes_the_preview_and_loses_its_finalizer(
) {
    let (ctx, mut server) = context();
    let (mut object, preview) = deleted_and_completed(true);
    undecodable(&mut object);
    let mut cluster = Cluster::new(object.clone());
    cluster.preview = preview;
    let task = tokio::spawn(reconcile_finalized(object_of(&object), ctx.clone()));
    let (result, seen) = server.serve(task, |c| cluster.answer(c)).await;
    assert_eq!(result.expect("cleaned up"), Action::await_change());
    let delete = seen
        .iter()
        .find(|s| s.line == format!("DELETE {PREVIEW}"))
        .expect("the preview deleted without the spec");
    assert_eq!(delete.body["preconditions"]["uid"], "p-1");
    assert_eq!(
        seen.last().map(|s| s.line.as_str()),
        Some(&*format!("PATCH {SHIFT}"))
    );
}

/// Deleted mid-rollout while its spec does not decode: the rollout is aborted from its record
/// (all traffic back to the record's target, the preview deleted), the status written although
/// the API server's answers do not decode, and the finalizer removed. Before, the finalizer stayed
/// until the object was fixed, the rollout standing at its weights.
#[tokio::test(start_paused = true)]
async fn a_deleted_trafficshift_that_does_not_decode_mid_rollout_is_aborted_from_its_record() {
    let (ctx, mut server) = context();
    let mut object = shift_json(Some(&mock::progressing_record()));
    object["metadata"]["deletionTimestamp"] = json!("2026-11-30T10:00:00Z");
    undecodable(&mut object);
    let mut cluster = Cluster::new(object.clone());
    cluster.preview = Some(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "web-green", "namespace": "shop", "uid": "p-1",
                      "ownerReferences": [{ "apiVersion": "crossfade.dev/v1alpha1",
                          "kind": "TrafficShift", "name": "web", "uid": "u-1",
                          "controller": true }] },
    }));
    let mut all = Vec::new();
    let mut ended = None;
    for _ in 0..5 {
        let task = tokio::spawn(reconcile_finalized(object_of(&cluster.shift), ctx.clone()));
        let (result, seen) = server.serve(task, |c| cluster.answer(c)).await;
        all.extend(seen);
        match result {
            Ok(action) => {
                ended = Some(action);
                break;
            }
            Err(FinalizerError::CleanupFailed(ShiftError::Finalizing { .. })) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(ended, Some(Action::await_change()), "{:?}", lines(&all));
    let phases: Vec<&str> = all
        .iter()
        .filter(|s| s.line == format!("PUT {STATUS}"))
        .filter_map(|s| s.body["status"]["rolloutState"]["rollout"]["phase"].as_str())
        .collect();
    assert!(phases.contains(&"Aborting"), "{phases:?}");
    assert_eq!(phases.last(), Some(&"Aborted"), "{phases:?}");
    let deleting = all
        .iter()
        .find(|s| s.line == format!("POST {EVENTS}") && s.body["reason"] == "Deleting")
        .expect("a Deleting event");
    let note = deleting.body["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("all traffic back to deployment web"),
        "{note}"
    );
    assert!(all.iter().any(|s| s.line == format!("DELETE {PREVIEW}")));
    assert_eq!(
        all.last().map(|s| s.line.as_str()),
        Some(&*format!("PATCH {SHIFT}")),
        "the finalizer removed"
    );
}

/// Trial 30: two Events of one reason with different notes about the same resourceVersion (blue's
/// `TargetUnready`, then green's a second later with no status write between) were one Event: kube's
/// Recorder keys a series without the note, so the second was a PATCH counting the first note
/// twice. Each different note is an Event of its own; the same note again is still a series.
#[tokio::test(start_paused = true)]
async fn a_new_note_of_the_same_reason_is_a_new_event_and_a_repeat_a_series() {
    let (ctx, mut server) = context();
    let shift: TrafficShift = serde_json::from_value(shift_json(None)).unwrap();
    let task = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            let exec = exec::Exec::new(&ctx, Arc::new(shift));
            for note in [
                "blue has no ready pod",
                "green has none either",
                "green has none either",
            ] {
                exec.event("TargetUnready", note).await;
            }
        }
    });
    let mut lines = Vec::new();
    for _ in 0..3 {
        let call = server.next().await;
        lines.push((call.line(), call.body["note"].clone()));
        let body = call.body.clone();
        call.respond(201, body);
    }
    task.await.expect("published");
    let name = |i: usize| lines[i].0.clone();
    assert_eq!(name(0), format!("POST {EVENTS}"));
    assert_eq!(lines[0].1, "blue has no ready pod");
    assert_eq!(name(1), format!("POST {EVENTS}"), "a new Event: {lines:?}");
    assert_eq!(lines[1].1, "green has none either");
    assert!(
        name(2).starts_with(&format!("PATCH {EVENTS}/")),
        "a series: {lines:?}"
    );
}

/// A target whose pod template was changed other than in its images after the last look before
/// promotion (the promoting reconcile read it at its start; gates and analysis take their time)
/// is not given the rollout's images: the rollout rolls back, naming the part that changed, as
/// before promotion. The promotion's patch checked the images only, so the target got the new
/// images with the new environment, a combination no analysis judged (check31).
#[tokio::test(start_paused = true)]
async fn a_template_changed_before_the_promotion_patch_rolls_back_rather_than_promote() {
    let (ctx, mut server) = context();
    let mut record = mock::progressing_record();
    let now = Instant::now();
    let applied = |bp: u32| Input::WeightsApplied {
        preview_bp: bp,
        generation: 1,
    };
    record.rollout.step(applied(record.published_bp), now);
    record.rollout.step(
        Input::Operator(crate::rollout::OperatorCommand::Promote),
        now,
    );
    record.rollout.step(applied(10_000), now);
    record.published_bp = 10_000;
    assert_eq!(record.rollout.phase, crate::rollout::Phase::Promoted);
    let before: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(target()).unwrap();
    record.images = Some(serde_json::from_value(json!({ "app": "web:v2" })).expect("images"));
    record.started_from = Some(crate::kube::template::template_images(&before));
    record.started_template = crate::kube::template::template_parts(&before);
    let object = shift_json(Some(&record));
    let mut cluster = Cluster::new(object.clone());
    cluster.target["spec"]["template"]["spec"]["containers"][0]["env"] =
        json!([{ "name": "FEATURE", "value": "on" }]);

    let task = tokio::spawn(reconcile_finalized(object_of(&object), ctx.clone()));
    let (result, seen) = server.serve(task, |c| cluster.answer(c)).await;
    assert!(
        !lines(&seen).contains(&format!("PATCH {TARGET}").as_str()),
        "the target was given the images: {:?}",
        lines(&seen)
    );
    result.expect("reconciled");
    let status = &cluster.shift["status"];
    assert_eq!(status["phase"], "RolledBack", "{status}");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(
            "deployment web's pod template was changed by another client during the rollout \
             other than in its images: container app"
        ),
        "{message}"
    );
}

/// Session 40: what the context keeps per TrafficShift (its reload record, the last note of each
/// Event reason, its backoff) was never pruned: one set per TrafficShift ever reconciled, for the
/// life of the process. Now it goes when the TrafficShift's finalizer goes.
#[tokio::test(start_paused = true)]
async fn a_deleted_trafficshift_leaves_nothing_in_the_context() {
    let (ctx, mut server) = context();
    let mut object = shift_json(Some(&mock::progressing_record()));
    object["metadata"]["deletionTimestamp"] = json!("2026-11-30T10:00:00Z");
    let mut cluster = Cluster::new(object.clone());
    // The first status write fails: the reconcile fails, and the next reloads the rollout.
    cluster.writes.push_back(internal_error());
    let kept = |ctx: &Context| {
        let notes = ctx.notes.lock().expect("notes");
        let noted = notes.keys().any(|(uid, _)| uid == "u-1");
        (ctx.reloads.knows("u-1"), noted)
    };
    let mut seen_kept = (false, false);
    let mut ended = None;
    for _ in 0..6 {
        let shift = object_of(&cluster.shift);
        let task = tokio::spawn(reconcile_finalized(shift.clone(), ctx.clone()));
        let (result, _) = server.serve(task, |c| cluster.answer(c)).await;
        match result {
            Ok(action) => {
                ended = Some(action);
                break;
            }
            Err(e) => {
                error_policy(shift, &e, ctx.clone());
            }
        }
        let now = kept(&ctx);
        seen_kept = (seen_kept.0 || now.0, seen_kept.1 || now.1);
    }
    assert_eq!(ended, Some(Action::await_change()), "the finalizer removed");
    assert_eq!(seen_kept, (true, true), "kept while it lived");
    assert_eq!(kept(&ctx), (false, false), "nothing kept once it went");
}
