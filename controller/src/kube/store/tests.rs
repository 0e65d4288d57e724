//! Exact requests and error paths of the status store, against a scripted API (a `tower` service
//! standing in for the API server: it records each request and answers from a script).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use super::*;
use crate::kube::crd::Phase;

const PATH: &str = "/apis/crossfade.dev/v1alpha1/namespaces/default/trafficshifts/web/status";

/// Answers requests in order from `replies`; records `METHOD path` and the JSON body of each.
#[derive(Default)]
struct Script {
    replies: Mutex<VecDeque<(u16, Value)>>,
    seen: Mutex<Vec<(String, Option<Value>)>>,
}

impl Script {
    fn new(replies: Vec<(u16, Value)>) -> Arc<Script> {
        Arc::new(Script {
            replies: Mutex::new(replies.into()),
            seen: Mutex::default(),
        })
    }

    fn client(self: &Arc<Script>) -> kube::Client {
        let script = self.clone();
        let service = tower::service_fn(move |req: Request<kube::client::Body>| {
            let script = script.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let line = format!("{} {}", parts.method, parts.uri.path());
                script
                    .seen
                    .lock()
                    .unwrap()
                    .push((line, serde_json::from_slice(&bytes).ok()));
                let (code, reply) = script.replies.lock().unwrap().pop_front().unwrap_or((
                    599,
                    json!({ "message": "no reply scripted for this request" }),
                ));
                let body = Full::new(Bytes::from(reply.to_string()));
                Ok::<_, Infallible>(Response::builder().status(code).body(body).unwrap())
            }
        });
        kube::Client::new(service, "default")
    }

    fn requests(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(l, _)| l.clone())
            .collect()
    }

    fn body(&self, i: usize) -> Value {
        self.seen.lock().unwrap()[i].1.clone().expect("a JSON body")
    }
}

fn object(rv: &str, state: Option<Value>) -> Value {
    json!({
        "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift",
        "metadata": { "name": "web", "namespace": "default", "resourceVersion": rv, "uid": "u" },
        "spec": { "deployment": "web", "images": { "app": "web:v2" } },
        "status": { "rolloutState": state }
    })
}

fn conflict() -> (u16, Value) {
    (
        409,
        json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict",
                "code": 409, "message": "the object has been modified" }),
    )
}

fn store(script: &Arc<Script>, rv: &str, state: Option<Value>) -> StatusStore {
    let api: Api<TrafficShift> = Api::namespaced(script.client(), "default");
    StatusStore::new(api, serde_json::from_value(object(rv, state)).unwrap())
}

fn status(state: Value) -> TrafficShiftStatus {
    TrafficShiftStatus {
        phase: Some(Phase::Progressing),
        rollout_state: Some(state),
        ..TrafficShiftStatus::default()
    }
}

#[tokio::test]
async fn a_write_puts_the_status_with_the_resource_version_last_seen() {
    let script = Script::new(vec![(200, object("6", Some(json!(2))))]);
    let mut store = store(&script, "5", Some(json!(1)));
    store.save(status(json!(2))).await.expect("written");
    assert_eq!(script.requests(), [format!("PUT {PATH}")]);
    let body = script.body(0);
    assert_eq!(body["metadata"]["resourceVersion"], "5");
    assert_eq!(body["status"]["phase"], "Progressing");
    assert_eq!(
        store.current().metadata.resource_version.as_deref(),
        Some("6")
    );
}

#[tokio::test]
async fn a_conflict_is_re_read_and_retried_on_the_fresh_resource_version() {
    let script = Script::new(vec![
        conflict(),
        (200, object("7", Some(json!(1)))), // a spec change: the rollout state is still ours
        (200, object("8", Some(json!(2)))),
    ]);
    let mut store = store(&script, "5", Some(json!(1)));
    store.save(status(json!(2))).await.expect("retried");
    assert_eq!(
        script.requests(),
        [
            format!("PUT {PATH}"),
            format!("GET {PATH}"),
            format!("PUT {PATH}")
        ]
    );
    assert_eq!(script.body(2)["metadata"]["resourceVersion"], "7");
    assert_eq!(script.body(2)["status"]["rolloutState"], json!(2));
}

#[tokio::test]
async fn a_conflict_over_another_writers_state_is_superseded_without_a_second_write() {
    let script = Script::new(vec![conflict(), (200, object("7", Some(json!("theirs"))))]);
    let mut store = store(&script, "5", Some(json!(1)));
    let err = store.save(status(json!(2))).await.expect_err("superseded");
    assert!(matches!(err, StoreError::Superseded { .. }), "{err:?}");
    assert_eq!(
        script.requests(),
        [format!("PUT {PATH}"), format!("GET {PATH}")]
    );
}

#[tokio::test]
async fn conflicts_that_keep_coming_give_up_after_three_attempts() {
    let same = || (200, object("7", Some(json!(1))));
    let script = Script::new(vec![
        conflict(),
        same(),
        conflict(),
        same(),
        conflict(),
        same(),
    ]);
    let mut store = store(&script, "5", Some(json!(1)));
    let err = store.save(status(json!(2))).await.expect_err("gave up");
    assert_eq!(
        err.to_string(),
        "trafficshift default/web: write status: 3 conflicts in a row"
    );
    assert_eq!(script.requests().len(), 6);
}

#[tokio::test]
async fn a_server_error_fails_the_write_naming_the_trafficshift() {
    let failure = json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure",
                          "reason": "InternalError", "code": 500, "message": "etcd timeout" });
    let script = Script::new(vec![(500, failure)]);
    let mut store = store(&script, "5", None);
    let err = store.save(status(json!(2))).await.expect_err("failed");
    assert!(matches!(err, StoreError::Api { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with("trafficshift default/web: write status: "),
        "{text}"
    );
    assert!(text.contains("etcd timeout"), "{text}");
    assert_eq!(
        store.current().metadata.resource_version.as_deref(),
        Some("5")
    );
}

/// Session 41: `rolloutState.transitionedAt` is stamped when the rollout's phase or step changes,
/// and only then; it is written in RFC 3339 with microseconds and read back to the microsecond
/// (the metric a takeover sets from it); a record of an older version, without it, decodes with
/// none (the takeover's time, as before).
#[test]
fn the_last_transition_is_stamped_at_a_phase_or_step_change_and_absent_from_older_records() {
    let rollout = Rollout::new(
        1,
        crate::spec::RolloutConfig::default(),
        crossfade_proxy::weight::Slot::Blue,
    );
    let mut record = ShiftRecord::new(1, rollout);
    let older = serde_json::to_value(&record).expect("encode");
    assert_eq!(older.get("transitionedAt"), None, "{older}");
    let decoded: ShiftRecord = serde_json::from_value(older).expect("an older record decodes");
    assert_eq!(decoded.transitioned_unix(), None);
    let before = (record.rollout.phase, record.rollout.step);
    record.stamp_transition(before);
    assert_eq!(
        record.transitioned_at, None,
        "neither phase nor step changed"
    );
    record.rollout.step += 1;
    record.stamp_transition(before);
    let encoded = serde_json::to_value(&record).expect("encode");
    let text = encoded["transitionedAt"].as_str().expect("transitionedAt");
    let shape = "2026-12-06T01:30:04.736462Z";
    assert!(
        text.len() == shape.len() && text.ends_with('Z') && text.as_bytes()[19] == b'.',
        "{text}"
    );
    let back: ShiftRecord = serde_json::from_value(encoded).expect("decode");
    assert_eq!(back.transitioned_unix(), record.transitioned_unix());
    assert!(back.transitioned_unix().is_some());
}
