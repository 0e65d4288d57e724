//! TrafficShifts that the API server stored but that do not decode into [`TrafficShift`] (a
//! string where a number goes, a duration over 366 days: anything the schema does not say or an
//! API server without the schema let in).
//!
//! The controller watches TrafficShifts as dynamic objects and decodes each one itself
//! ([`crate::kube::crd::decode`]): a typed watcher would drop such an object without a word, and
//! one that cannot decode fails the whole list, so after a restart not even the valid TrafficShifts
//! would be reconciled. An undecodable one is shown where `kubectl get` and `kubectl describe`
//! look: condition `Progressing=False` with reason `InvalidSpec` (a problem in `spec`; else
//! `InvalidObject`), the field and the problem as message, `observedGeneration`, and a Warning
//! Event of that reason, once per generation and message (Kubernetes API conventions for
//! conditions). Nothing else is read or written; the controller waits for the object to change.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};

use super::exec::{cut, now};
use super::{Context, ShiftError, PROGRESSING};
use crate::kube::crd::{
    bounded_message, decode, set_condition, unknown_fields, Condition, ConditionStatus,
    DecodeError, TrafficShift,
};
use crate::kube::store::StoreError;
use crate::kube::FIELD_MANAGER;

/// Longest Event note the API accepts (1 kB); longer notes are cut.
const MAX_NOTE: usize = 1024;

/// The TrafficShift resource (`crossfade.dev/v1alpha1`, `trafficshifts`) for dynamic APIs.
pub fn resource() -> ApiResource {
    ApiResource::erase::<TrafficShift>(&())
}

/// The TrafficShifts of `namespace` as dynamic objects.
pub fn api(client: kube::Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client, namespace, &resource())
}

/// `object` decoded, or why not, naming the field.
///
/// # Errors
/// [`DecodeError`] from [`decode`], with the fields of `spec` the schema does not have
/// ([`crate::kube::crd::unknown_fields`]) after the ones that do not decode
/// ([`DecodeError::with_unknown`]).
pub fn typed(object: &DynamicObject) -> Result<TrafficShift, DecodeError> {
    let value = serde_json::to_value(object).map_err(|e| DecodeError {
        field: String::new(),
        reason: e.to_string(),
        more: Vec::new(),
    })?;
    decode(&value).map_err(|e| {
        let unknown = value.get("spec").map(unknown_fields).unwrap_or_default();
        e.with_unknown(unknown)
    })
}

/// The reason of the condition and the Event for `problem`.
pub fn reason(problem: &DecodeError) -> &'static str {
    if problem.in_spec() {
        "InvalidSpec"
    } else {
        super::INVALID_OBJECT
    }
}

/// The message shown for `problem`.
pub fn message(problem: &DecodeError) -> String {
    format!("the trafficshift does not decode: {problem}; nothing is rolled out until it is fixed")
}

/// Shows `problem` in `object`'s status and as a Warning Event, unless its status already shows
/// it for this generation; then waits for a change.
///
/// # Errors
/// [`ShiftError::Store`] when the status patch fails (no Event is published then, so the retry
/// publishes it once).
pub async fn refuse(
    object: &DynamicObject,
    problem: &DecodeError,
    ctx: &Context,
) -> Result<Action, ShiftError> {
    let (reason, message) = (reason(problem), message(problem));
    let generation = object.metadata.generation.unwrap_or(1);
    if shows(object, reason, &message) {
        return Ok(Action::await_change());
    }
    let key = key(object);
    tracing::warn!(trafficshift = %key, reason, "{message}");
    let ns = object.namespace().unwrap_or_else(|| "default".into());
    let patch = status_patch(object, reason, &message, &now());
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    api(ctx.client.clone(), &ns)
        .patch_status(&object.name_any(), &params, &Patch::Merge(&patch))
        .await
        .map_err(|source| StoreError::Api {
            shift: key.clone(),
            source,
        })?;
    publish(object, reason, &message, ctx).await;
    ctx.backoff.succeeded(&object.uid().unwrap_or(key));
    tracing::debug!(generation, "invalid trafficshift shown in status");
    Ok(Action::await_change())
}

/// Whether `object`'s status shows `reason` and `message` for its generation already.
pub fn shows(object: &DynamicObject, reason: &str, message: &str) -> bool {
    let status = object.data.get("status");
    let observed = status
        .and_then(|s| s.get("observedGeneration"))
        .and_then(Value::as_i64);
    observed == Some(object.metadata.generation.unwrap_or(1))
        && conditions(object).iter().any(|c| {
            c.type_ == PROGRESSING && c.reason == reason && c.message == bounded_message(message)
        })
}

/// The merge patch of `/status`: the conditions with `Progressing=False` set (the others kept,
/// as far as they decode), `observedGeneration` and `message`; guarded by the resourceVersion
/// read, so that it never lands on a newer object unseen.
pub fn status_patch(object: &DynamicObject, reason: &str, message: &str, now: &Time) -> Value {
    let generation = object.metadata.generation.unwrap_or(1);
    let mut conditions = conditions(object);
    let condition = Condition {
        type_: PROGRESSING.into(),
        status: ConditionStatus::False,
        reason: reason.into(),
        message: message.into(),
        last_transition_time: now.clone(),
        observed_generation: Some(generation),
    };
    set_condition(&mut conditions, condition);
    json!({
        "metadata": { "resourceVersion": object.metadata.resource_version },
        "status": {
            "conditions": conditions,
            "observedGeneration": generation,
            "message": message,
        }
    })
}

/// The conditions in `object`'s status, or none when they do not decode.
fn conditions(object: &DynamicObject) -> Vec<Condition> {
    object
        .data
        .get("status")
        .and_then(|s| s.get("conditions"))
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default()
}

/// Publishes the Warning Event; a failure to publish is logged, never fatal. The object's
/// resourceVersion is in the reference, so each generation gets an Event of its own rather
/// than a count on the first one.
async fn publish(object: &DynamicObject, reason: &str, message: &str, ctx: &Context) {
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(cut(message, MAX_NOTE)),
        action: "Rollout".into(),
        secondary: None,
    };
    let mut regarding = object.object_ref(&resource());
    regarding.resource_version = object.metadata.resource_version.clone();
    if let Err(e) = ctx.recorder.publish(&event, &regarding).await {
        tracing::warn!(trafficshift = %key(object), reason, error = %crate::kube::api_error_words(&e), "publish event");
    }
}

/// `namespace/name`.
pub fn key(object: &DynamicObject) -> String {
    format!(
        "{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(status: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift",
            "metadata": { "name": "web", "namespace": "shop", "generation": 3,
                          "resourceVersion": "41" },
            "spec": { "deployment": "web", "images": { "app": "web:v2" },
                      "rollout": { "hold": 10 } },
            "status": status,
        }))
        .expect("dynamic object")
    }

    fn time() -> Time {
        Time("2026-12-01T12:00:00Z".parse().expect("time"))
    }

    #[test]
    fn the_problem_is_named_by_field_with_reason_invalid_spec() {
        let problem = typed(&object(Value::Null)).expect_err("a number for a duration");
        assert_eq!(problem.field, "spec.rollout.hold");
        assert_eq!(reason(&problem), "InvalidSpec");
        assert!(
            message(&problem).starts_with("the trafficshift does not decode: spec.rollout.hold: "),
            "{}",
            message(&problem)
        );
    }

    /// Session 43: a spec that does not decode names its unknown fields too, as the
    /// `crossfade.dev/rollout` annotation does; before, only the field that did not decode.
    #[test]
    fn a_spec_that_does_not_decode_names_its_unknown_fields_too() {
        let mut obj = object(Value::Null);
        obj.data["spec"]["rollout"]["holdd"] = json!("1m");
        obj.data["spec"]["imagez"] = json!({});
        let problem = typed(&obj).expect_err("a number for a duration");
        let message = message(&problem);
        assert_eq!(problem.field, "spec.rollout.hold", "{message}");
        for named in [
            "\nspec.rollout.holdd: unknown field; spec.rollout takes ",
            "\nspec.imagez: unknown field; spec takes ",
        ] {
            assert!(message.contains(named), "{named:?} in {message}");
        }
        assert_eq!(problem.more.len(), 2, "{message}");
    }

    #[test]
    fn the_patch_sets_progressing_false_keeps_other_conditions_and_is_guarded() {
        let other = json!({ "type": "Promoted", "status": "False", "reason": "Progressing",
            "message": "", "lastTransitionTime": "2026-11-30T10:00:00Z" });
        let obj = object(json!({ "conditions": [other], "phase": "Progressing" }));
        let patch = status_patch(&obj, "InvalidSpec", "bad", &time());
        assert_eq!(patch["metadata"]["resourceVersion"], "41");
        assert_eq!(patch["status"]["observedGeneration"], 3);
        assert_eq!(patch["status"]["message"], "bad");
        let conditions = patch["status"]["conditions"].as_array().expect("list");
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[0]["type"], "Promoted");
        assert_eq!(
            conditions[1],
            json!({ "type": "Progressing", "status": "False", "reason": "InvalidSpec",
                    "message": "bad", "lastTransitionTime": "2026-12-01T12:00:00Z",
                    "observedGeneration": 3 })
        );
        assert!(patch["status"].get("phase").is_none(), "only what it sets");
    }

    #[test]
    fn a_status_showing_the_problem_for_this_generation_is_not_written_again() {
        let shown = status_patch(&object(Value::Null), "InvalidSpec", "bad", &time());
        let obj = object(shown["status"].clone());
        assert!(shows(&obj, "InvalidSpec", "bad"));
        assert!(!shows(&obj, "InvalidSpec", "other"), "a new message");
        let mut next = obj.clone();
        next.metadata.generation = Some(4);
        assert!(!shows(&next, "InvalidSpec", "bad"), "a new generation");
        assert!(!shows(&object(Value::Null), "InvalidSpec", "bad"));
    }
}
