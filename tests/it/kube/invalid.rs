//! TrafficShifts the API server stores but the controller cannot roll out: one that does not
//! decode (a string where a number goes, a duration over 366 days) and one that decodes but fails
//! validation (steps not increasing). Each gets `Progressing=False` reason `InvalidSpec` with the
//! field in the message and `observedGeneration`, and one Warning Event per generation; a fixed
//! one is rolled out. An undecodable one does not keep the others from being reconciled.
//!
//! The emulator stores any body (it checks no schema), which is how the wrong types get in here;
//! a real API server refuses those at admission but lets the others in.

use crossfade_controller::kube::crd::TrafficShift;
use crossfade_controller::kube::ops;
use crossfade_controller::kube::shift::PROGRESSING;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

use super::cluster::Cluster;
use super::shift::WAIT;
use crate::support::wait_until;

/// TrafficShifts as the API server stores them: the typed API cannot read a bad one.
fn raw_api(client: &kube::Client) -> Api<DynamicObject> {
    Api::default_namespaced_with(client.clone(), &ApiResource::erase::<TrafficShift>(&()))
}

/// Creates TrafficShift `name` with `spec` as it is, valid or not.
pub(super) async fn create(client: &kube::Client, name: &str, spec: Value) {
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift",
        "metadata": { "name": name }, "spec": spec,
    }))
    .expect("dynamic object");
    raw_api(client)
        .create(&PostParams::default(), &object)
        .await
        .expect("create trafficshift");
}

/// Replaces TrafficShift `name`'s spec (a new generation); returns that generation.
async fn set_spec(client: &kube::Client, name: &str, spec: Value) -> i64 {
    let api = raw_api(client);
    let mut object = api.get(name).await.expect("get trafficshift");
    object.data["spec"] = spec;
    let replaced = api
        .replace(name, &PostParams::default(), &object)
        .await
        .expect("replace trafficshift");
    replaced.metadata.generation.expect("generation")
}

/// A spec for Deployment `web` with `rollout` as its policy.
fn spec(rollout: Value) -> Value {
    json!({ "deployment": "web", "images": { "app": "web:v2" }, "rollout": rollout })
}

/// Waits until TrafficShift `name`'s `Progressing` condition has reason `InvalidSpec` and a
/// message containing `field`, set from the current generation; returns the condition and
/// generation.
pub(super) async fn refused(client: &kube::Client, name: &str, field: &str) -> (Value, i64) {
    refused_for(client, name, "InvalidSpec", field).await
}

/// [`refused`] with another reason (`InvalidObject`).
async fn refused_for(client: &kube::Client, name: &str, reason: &str, field: &str) -> (Value, i64) {
    let what = format!("{name}: Progressing=False {reason} naming {field}");
    wait_until(WAIT, &what, || async {
        let object = raw_api(client).get(name).await.expect("get trafficshift");
        let generation = object.metadata.generation?;
        let status = object.data.get("status")?;
        let condition = progressing(status)?;
        let shown = condition["reason"] == reason
            && condition["message"].as_str()?.contains(field)
            && condition["observedGeneration"] == generation
            && status["observedGeneration"] == generation;
        shown.then_some((condition, generation))
    })
    .await
}

fn progressing(status: &Value) -> Option<Value> {
    let conditions = status.get("conditions")?.as_array()?;
    conditions
        .iter()
        .find(|c| c["type"] == PROGRESSING)
        .cloned()
}

/// The Events with `reason` about TrafficShift `name`.
async fn events(client: &kube::Client, name: &str, reason: &str) -> Vec<Event> {
    let api: Api<Event> = Api::default_namespaced(client.clone());
    let list = api.list(&ListParams::default()).await.expect("list events");
    list.items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| {
            let regarding = e.regarding.as_ref();
            regarding.and_then(|r| r.kind.as_deref()) == Some("TrafficShift")
                && regarding.and_then(|r| r.name.as_deref()) == Some(name)
        })
        .collect()
}

/// Waits until there are `count` Events `InvalidSpec` about `name`; returns their notes.
async fn invalid_events(client: &kube::Client, name: &str, count: usize) -> Vec<String> {
    let what = format!("{count} InvalidSpec events about {name}");
    let events = wait_until(WAIT, &what, || async {
        let events = events(client, name, "InvalidSpec").await;
        (events.len() >= count).then_some(events)
    })
    .await;
    for e in &events {
        assert_eq!(e.type_.as_deref(), Some("Warning"), "{e:?}");
        assert!(e.series.is_none(), "published once, not repeated: {e:?}");
    }
    events.into_iter().filter_map(|e| e.note).collect()
}

/// Changes Deployment `web`'s annotations: each change wakes TrafficShift `web` (the trigger's
/// name for it), so the controller looks at the invalid object again.
async fn poke_target(client: &kube::Client, times: usize) {
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    for i in 0..times {
        let patch = json!({ "metadata": { "annotations": { "test/poke": i.to_string() } } });
        deploys
            .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("annotate deployment");
    }
}

/// A string where a number goes, then a duration over 366 days (both undecodable), then steps
/// that do not increase (decodable, invalid): each generation gets the condition naming the
/// field and exactly one Warning Event, however often the controller looks again; a fixed spec
/// clears the condition and is rolled out.
#[tokio::test]
async fn an_invalid_trafficshift_gets_a_condition_naming_the_field_and_one_warning_event_per_generation(
) {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    create(
        &c.client,
        "web",
        spec(json!({ "analysis": { "minRequests": "fifty" } })),
    )
    .await;
    let _ctl = c.controller();

    let field = "spec.rollout.analysis.minRequests: invalid type: string \"fifty\"";
    let (condition, _) = refused(&c.client, "web", field).await;
    assert_eq!(condition["status"], "False", "{condition}");
    let notes = invalid_events(&c.client, "web", 1).await;
    assert!(notes[0].contains(field), "{notes:?}");
    poke_target(&c.client, 3).await;

    let generation = set_spec(&c.client, "web", spec(json!({ "hold": "9000h" }))).await;
    let (_, shown) = refused(&c.client, "web", "spec.rollout.hold: ").await;
    assert_eq!(shown, generation);
    poke_target(&c.client, 3).await;

    let steps = spec(json!({ "steps": [{ "weight": 50 }, { "weight": 20 }, { "weight": 100 }] }));
    let generation = set_spec(&c.client, "web", steps).await;
    let (_, shown) = refused(&c.client, "web", "spec.rollout.steps").await;
    assert_eq!(shown, generation);
    poke_target(&c.client, 3).await;

    // The fix: a valid spec is rolled out, and the condition no longer says InvalidSpec.
    let fast = json!({ "steps": [{ "weight": 50 }, { "weight": 100 }], "hold": "1s" });
    let fixed = set_spec(&c.client, "web", spec(fast)).await;
    wait_until(WAIT, "preview web-green of the fixed spec", || async {
        c.deploys.get_opt("web-green").await.expect("get")
    })
    .await;
    let status = c.status().await;
    assert_eq!(status.observed_generation, Some(fixed));
    let progressing = status.conditions.iter().find(|c| c.type_ == PROGRESSING);
    let progressing = progressing.expect("Progressing");
    assert_ne!(progressing.reason, "InvalidSpec", "{progressing:?}");
    assert_ne!(status.message.as_deref().unwrap_or_default(), "");

    // Three invalid generations, one Event each, none since.
    let notes = invalid_events(&c.client, "web", 3).await;
    assert_eq!(
        notes.len(),
        3,
        "one Event per invalid generation: {notes:?}"
    );
    assert!(notes[1].contains("spec.rollout.hold: "), "{notes:?}");
    assert!(notes[2].contains("spec.rollout.steps"), "{notes:?}");
}

/// An empty `spec.images` and a malformed image reference decode (an API server without the
/// schema stores them) but are refused at once, naming the field, rather than rolled out as the
/// target's own images or failed at the progress deadline (trial 10, K11/K13).
#[tokio::test]
async fn empty_images_and_a_malformed_image_reference_are_refused_at_once_naming_the_field() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    create(
        &c.client,
        "web",
        json!({ "deployment": "web", "images": {} }),
    )
    .await;
    let _ctl = c.controller();
    let (condition, _) = refused(
        &c.client,
        "web",
        "spec.images: at least one image is needed",
    )
    .await;
    assert_eq!(condition["status"], "False", "{condition}");

    let bad = json!({ "deployment": "web", "images": { "app": "UPPER/Case::v2@sha256:nothex" } });
    let generation = set_spec(&c.client, "web", bad).await;
    let (condition, shown) = refused(
        &c.client,
        "web",
        "spec.images.app: \"UPPER/Case::v2@sha256:nothex\" is not an image reference: digest",
    )
    .await;
    assert_eq!(shown, generation, "{condition}");
    let notes = invalid_events(&c.client, "web", 2).await;
    assert!(notes[0].contains("spec.images: "), "{notes:?}");
    assert!(notes[1].contains("spec.images.app: "), "{notes:?}");
    assert!(
        c.deploys.get_opt("web-green").await.expect("get").is_none(),
        "no preview for a refused spec"
    );
}

/// A `spec.route` no proxy would serve (an empty and a malformed host, a path prefix without `/`,
/// a response timeout of 0s) is refused at once, every problem named by its field, and no preview
/// is made (session 41: before, the rollout started and the refusal was only in the proxies'
/// logs, as `route not served until this is fixed`).
#[tokio::test]
async fn a_route_the_proxies_would_refuse_is_refused_at_once_naming_each_field() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let route = json!({ "hosts": ["", "Bad Host"], "pathPrefix": "api", "responseTimeout": "0s" });
    let bad = json!({ "deployment": "web", "images": { "app": "web:v2" }, "route": route });
    create(&c.client, "web", bad).await;
    let _ctl = c.controller();
    let (condition, _) = refused(&c.client, "web", "spec.route.hosts[0]: must not be empty").await;
    let message = condition["message"].as_str().expect("message");
    for field in [
        "spec.route.hosts[1]: \"Bad Host\"",
        "spec.route.pathPrefix: \"api\" must start with '/'",
        "spec.route.responseTimeout: must be above 0s",
    ] {
        assert!(message.contains(field), "{field} in {message}");
    }
    assert!(
        c.deploys.get_opt("web-green").await.expect("get").is_none(),
        "no preview for a refused route"
    );
}

/// An undecodable TrafficShift present when the controller starts is in its first list: it is
/// shown as invalid, and the valid TrafficShift next to it is rolled out all the same.
#[tokio::test]
async fn an_undecodable_trafficshift_does_not_keep_the_others_from_being_reconciled() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    create(
        &c.client,
        "broken",
        json!({ "deployment": 5, "images": { "app": "web:v2" } }),
    )
    .await;
    create(
        &c.client,
        "web",
        spec(json!({ "steps": [{ "weight": 50 }, { "weight": 100 }] })),
    )
    .await;
    let _ctl = c.controller();

    wait_until(WAIT, "preview web-green", || async {
        c.deploys.get_opt("web-green").await.expect("get")
    })
    .await;
    let (condition, _) = refused(&c.client, "broken", "spec.deployment: invalid type").await;
    assert_eq!(condition["status"], "False", "{condition}");
    let notes = invalid_events(&c.client, "broken", 1).await;
    assert!(notes[0].contains("spec.deployment"), "{notes:?}");
    let broken = raw_api(&c.client).get("broken").await.expect("get");
    assert!(
        broken.data["status"].get("rolloutState").is_none(),
        "nothing rolled out for it: {broken:?}"
    );
}

/// `crossfade status --kube` reads TrafficShifts untyped: an undecodable one is shown as invalid
/// with its field, reason and the controller's condition (`Progressing=False InvalidSpec`), not
/// as serde's error without the field; a valid one next to it is still described.
#[tokio::test]
async fn status_kube_shows_an_undecodable_trafficshift_as_invalid_naming_the_field() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    create(
        &c.client,
        "broken",
        spec(json!({ "analysis": { "minRequests": "fifty" } })),
    )
    .await;
    create(&c.client, "web", spec(json!({}))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = c.kubeconfig(dir.path());
    let status = |name: &'static str| {
        let kubeconfig = kubeconfig.clone();
        async move {
            crate::support::run_to_end(
                [
                    std::ffi::OsStr::new("status"),
                    "--kube".as_ref(),
                    "--kubeconfig".as_ref(),
                    kubeconfig.as_os_str(),
                    name.as_ref(),
                ],
                std::time::Duration::from_secs(60),
            )
            .await
        }
    };

    let broken = status("broken").await;
    assert_eq!(broken.code, Some(0), "{broken:?}");
    assert!(
        broken.stdout.starts_with(
            "trafficshift default/broken\n  invalid: spec.rollout.analysis.minRequests: invalid type: \
             string \"fifty\""
        ),
        "{broken:?}"
    );
    assert!(
        broken.stdout.contains(
            "condition Progressing=False (InvalidSpec): the trafficshift does not decode"
        ),
        "{broken:?}"
    );

    let web = status("web").await;
    assert_eq!(web.code, Some(0), "{web:?}");
    assert!(
        web.stdout
            .starts_with("trafficshift default/web\n  deployment: web -> app=web:v2\n"),
        "{web:?}"
    );
}

/// Trial 34: `crossfade pause|resume|promote|abort|retry --kube` read the TrafficShift typed: for
/// one that does not decode they printed kube-client's WARN line holding the whole object, then
/// `Error deserializing response` without the field. Now each names the field, says that no
/// controller acts on a command for it, and writes nothing on the Deployment.
#[tokio::test]
async fn commands_on_an_undecodable_trafficshift_name_the_field_and_write_nothing() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    create(&c.client, "web", spec(json!({ "hold": "9000h" }))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = c.kubeconfig(dir.path());
    for verb in ["pause", "resume", "promote", "abort", "retry"] {
        let ran = crate::support::run_to_end(
            [
                std::ffi::OsStr::new(verb),
                "--kube".as_ref(),
                "--kubeconfig".as_ref(),
                kubeconfig.as_os_str(),
                "--wait".as_ref(),
                "2s".as_ref(),
                "web".as_ref(),
            ],
            std::time::Duration::from_secs(60),
        )
        .await;
        assert_eq!(ran.code, Some(1), "{verb}: {ran:?}");
        assert_eq!(
            ran.stderr,
            "crossfade: trafficshift default/web does not decode: spec.rollout.hold: \"9000h\" is \
             above the maximum of 366 days (31622400s) for a duration; no controller acts on a \
             command for it until the field is fixed (kubectl edit trafficshift web -n default)\n",
            "{verb}"
        );
    }
    let target = c.deploys.get("web").await.expect("get deployment");
    let annotations = target.metadata.annotations.unwrap_or_default();
    assert!(
        !annotations.keys().any(|k| k.starts_with("crossfade.dev/")),
        "{annotations:?}"
    );
}

/// Trial 10, K11: unknown fields were accepted silently, so a misspelled policy key ran the
/// defaults. Each is named; the fixed spec is rolled out.
#[tokio::test]
async fn unknown_fields_in_a_trafficshift_are_refused_naming_each() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let mut typo = spec(json!({ "holdd": "5s" }));
    typo["foo"] = json!("bar");
    create(&c.client, "web", typo).await;
    let _ctl = c.controller();
    let (condition, _) = refused(&c.client, "web", "spec.rollout.holdd: unknown field").await;
    let message = condition["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("spec.foo: unknown field"), "{message}");
    assert!(
        message.contains("spec.rollout takes analysis, drainTimeout, gates, hold,"),
        "{message}"
    );
    invalid_events(&c.client, "web", 1).await;
    assert!(
        c.deploys.get_opt("web-green").await.expect("get").is_none(),
        "no preview for a refused spec"
    );
    set_spec(&c.client, "web", spec(json!({ "hold": "5s" }))).await;
    wait_until(WAIT, "a preview for the fixed spec", || async {
        c.deploys.get_opt("web-green").await.expect("get")
    })
    .await;
}

/// Trial 30: a TrafficShift may have any DNS-1123 subdomain as its name, but its Services
/// `<name>-blue` and `<name>-green` must be DNS-1035 labels of at most 63 characters, so a name of
/// 58 characters, one starting with a digit or one with a dot was rolled out until the API server
/// refused the first Service (the emulator, like an API server without the CRD's schema, stores
/// such a name; the schema now refuses it at creation). Each is refused at once with reason
/// `InvalidObject` naming `metadata.name`, and a `spec.deployment` no Deployment can be named
/// with `InvalidSpec`, rather than waited for as a Deployment still missing. Nothing is made.
#[tokio::test]
async fn a_name_no_service_or_deployment_can_take_is_refused_at_once_and_nothing_is_made() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let long = format!("w{}", "e".repeat(57));
    for name in [long.as_str(), "1web", "web.v2"] {
        create(&c.client, name, spec(json!({}))).await;
    }
    let upper = json!({ "deployment": "Web", "images": { "app": "web:v2" } });
    create(&c.client, "upper", upper).await;
    let _ctl = c.controller();

    for (name, why) in [
        (long.as_str(), "is 58 characters long, more than 57"),
        ("1web", "does not start with a lower-case letter"),
        (
            "web.v2",
            "has '.', which is not a lower-case letter, a digit or '-'",
        ),
    ] {
        let field = format!(
            "metadata.name: {name:?} {why}: crossfade names the Services {name}-blue and {name}-green"
        );
        let (condition, _) = refused_for(&c.client, name, "InvalidObject", &field).await;
        assert_eq!(condition["status"], "False", "{condition}");
        let events = events(&c.client, name, "InvalidObject").await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].type_.as_deref(), Some("Warning"));
        // A command would reach no rollout: the CLI refuses it rather than wait for a record.
        let sent = ops::send(&c.client, "default", name, ops::Verb::Promote).await;
        let refused = sent.expect_err("refused").to_string();
        let want = format!("trafficshift default/{name} does not run: metadata.name: ");
        assert!(refused.starts_with(&want), "{refused}");
    }
    let (condition, _) = refused(&c.client, "upper", "spec.deployment: \"Web\" has 'W'").await;
    let message = condition["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("no deployment can have this name"),
        "{condition}"
    );

    let services: Api<Service> = Api::default_namespaced(c.client.clone());
    let made = services.list(&ListParams::default()).await.expect("list");
    assert!(made.items.is_empty(), "no Service: {:?}", made.items);
    let deploys = c.deploys.list(&ListParams::default()).await.expect("list");
    let names: Vec<_> = deploys
        .items
        .iter()
        .filter_map(|d| d.metadata.name.clone())
        .collect();
    assert_eq!(names, ["web"], "no preview");
}

/// The bound is exact: a TrafficShift (and its Deployment) named with 57 characters gets its
/// Services `<name>-blue` and `<name>-green` (63 characters, which the emulator now checks as a
/// real API server does) and its preview.
#[tokio::test]
async fn a_name_of_57_characters_gets_its_services_and_preview() {
    let Some(c) = Cluster::start(&[]) else {
        return;
    };
    let name = format!("w{}", "e".repeat(56));
    let target = super::objects::deployment(&name, &[]);
    c.deploys
        .create(&PostParams::default(), &target)
        .await
        .expect("create deployment");
    let shifts: Api<TrafficShift> = Api::default_namespaced(c.client.clone());
    shifts
        .create(
            &PostParams::default(),
            &super::objects::shift(&name, "web:v2"),
        )
        .await
        .expect("create trafficshift");
    let _ctl = c.controller();
    let preview = format!("{name}-green");
    wait_until(WAIT, "the preview of the 57-character name", || async {
        c.deploys.get_opt(&preview).await.expect("get")
    })
    .await;
    let services: Api<Service> = Api::default_namespaced(c.client.clone());
    for slot in ["blue", "green"] {
        let service = format!("{name}-{slot}");
        assert!(
            services.get_opt(&service).await.expect("get").is_some(),
            "{service}"
        );
    }
}
