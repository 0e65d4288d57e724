//! Session 42: a spec is refused with every problem at once, each named by its field, and a
//! container the target Deployment does not have is one of them: before, a spec with several bad
//! fields was told only of the first group's, and a container the Deployment lacks was found only
//! when the preview was made, so the rollout rolled back and a retry failed the same way.

use crossfade_controller::kube::crd::{Phase, TrafficShift};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::cluster::Cluster;
use super::invalid::{create, refused};
use super::shift::{aborted_as_invalid, event_notes, events, image, raw_shifts, slow_policy, WAIT};
use crate::support::wait_until;

/// The notes of the `InvalidSpec` Events, once there is one.
async fn invalid_notes(c: &Cluster) -> Vec<String> {
    wait_until(WAIT, "an InvalidSpec event", || async {
        let notes = event_notes(&c.client, "InvalidSpec").await;
        (!notes.is_empty()).then_some(notes)
    })
    .await
}

/// Creates TrafficShift `web` with `spec`, starts the controllers and waits until it is refused
/// (`InvalidSpec`) with a message naming `fields[0]`; then every one of `fields` is in that message
/// and in the one `InvalidSpec` Event.
async fn refused_naming_all(c: &Cluster, spec: serde_json::Value, fields: &[&str]) {
    create(&c.client, "web", spec).await;
    let _ctl = c.controller();
    let (condition, _) = refused(&c.client, "web", fields[0]).await;
    let message = condition["message"].as_str().expect("message");
    for field in fields {
        assert!(message.contains(field), "{field} in {message}");
    }
    let notes = invalid_notes(c).await;
    assert_eq!(notes.len(), 1, "one Event: {notes:?}");
    for field in fields {
        assert!(notes[0].contains(field), "{field} in {notes:?}");
    }
}

/// A field the schema does not have, a malformed image reference, a path prefix without `/`
/// and steps that do not increase: one condition message and one Event name all four, each by
/// its field, and nothing is made.
#[tokio::test]
async fn a_spec_with_several_bad_fields_is_refused_naming_every_one_at_once() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let steps = json!([{ "weight": 50 }, { "weight": 20 }, { "weight": 100 }]);
    let bad = json!({ "deployment": "web", "images": { "app": "Web:v2" },
        "route": { "pathPrefix": "api" }, "rollout": { "steps": steps, "holdd": "5s" } });
    let fields = [
        "spec.rollout.holdd: unknown field",
        "spec.images.app: \"Web:v2\" is not an image reference",
        "spec.route.pathPrefix: \"api\" must start with '/'",
        "spec.rollout.steps[1]: ",
    ];
    refused_naming_all(&c, bad, &fields).await;
    assert!(
        c.deploys.get_opt("web-green").await.expect("get").is_none(),
        "no preview for a refused spec"
    );
}

/// A spec with three fields that do not decode (what an API server without the schema, such as
/// the emulator, stores): the condition and the one Event name all three, each by its field.
#[tokio::test]
async fn a_spec_with_several_fields_that_do_not_decode_is_refused_naming_every_one() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let bad = json!({ "deployment": "web", "images": { "app": "web:v2" },
        "route": { "port": 70000 },
        "rollout": { "hold": "9000h", "analysis": { "minRequests": "fifty" } } });
    let fields = [
        "the trafficshift does not decode: ",
        "spec.rollout.hold: \"9000h\" is above the maximum",
        "spec.rollout.analysis.minRequests: invalid type: string \"fifty\"",
        "spec.route.port: 70000 is not a port",
    ];
    refused_naming_all(&c, bad, &fields).await;
}

/// A TrafficShift `web` of Deployment `web` rolling `container` to `web:v2`.
fn shift_of(container: &str) -> TrafficShift {
    serde_json::from_value(json!({
        "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift",
        "metadata": { "name": "web" },
        "spec": { "deployment": "web", "images": { container: "web:v2" }, "rollout": slow_policy() }
    }))
    .expect("valid trafficshift")
}

/// What a spec naming container `api` of Deployment `web` (which has only `app`) is refused with.
const NO_API: &str =
    "spec.images.api: deployment web has no container \"api\" (its containers: app)";

/// A container Deployment `web` does not have is an invalid spec, said before any preview is
/// made, naming the containers it has; the target keeps serving its own image, and no rollout
/// starts (so none rolls back). Fixed, the spec is rolled out.
#[tokio::test]
async fn a_container_the_deployment_does_not_have_is_refused_before_any_preview_naming_its_containers(
) {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    c.shifts
        .create(&PostParams::default(), &shift_of("api"))
        .await
        .expect("create trafficshift");
    let _ctl = c.controller();
    refused(&c.client, "web", NO_API).await;
    let notes = invalid_notes(&c).await;
    assert!(notes[0].contains(NO_API), "{notes:?}");
    let status = c.status().await;
    assert_eq!(status.phase, None, "no rollout started: {status:?}");
    assert!(
        c.deploys.get_opt("web-green").await.expect("get").is_none(),
        "no preview for a container the target does not have"
    );
    assert_eq!(image(&c.deploys.get("web").await.expect("web")), "web:v1");
    let shown = events(&c.client).await;
    assert!(
        !shown.iter().any(|e| e.ends_with(" RolledBack")),
        "{shown:?}"
    );

    let fix = json!({ "spec": { "images": { "api": null, "app": "web:v2" } } });
    c.shifts
        .patch("web", &PatchParams::default(), &Patch::Merge(&fix))
        .await
        .expect("fix the container");
    wait_until(WAIT, "a preview for the fixed spec", || async {
        c.deploys.get_opt("web-green").await.expect("get")
    })
    .await;
}

/// A new generation naming a container the target does not have, while a rollout runs at 10%:
/// that rollout is aborted (all traffic back to the target, which kept serving) and the new
/// spec refused naming the container, as any invalid spec supersedes a running rollout.
#[tokio::test]
async fn a_container_the_deployment_does_not_have_in_a_new_spec_aborts_the_running_rollout() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let (_ctl, _) = c.rollout_at_step_one().await;
    let edit = json!({ "spec": { "images": { "app": null, "api": "web:v3" } } });
    let shifts: Api<TrafficShift> = Api::default_namespaced(c.client.clone());
    shifts
        .patch("web", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("name another container");
    let shown = aborted_as_invalid(&c.client).await;
    assert_eq!(shown.phase, Some(Phase::Aborted));
    let weights = shown.weights.expect("weights");
    assert_eq!(weights.preview.bp(), 0, "all traffic back to the target");
    let message = shown.message.unwrap_or_default();
    assert!(message.contains(NO_API), "{message}");
    c.deployment_deleted("web-green").await;
    let raw = raw_shifts(&c.client).get("web").await.expect("get");
    assert_eq!(raw.metadata.generation, Some(2), "{raw:?}");
}
