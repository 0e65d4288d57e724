//! The Kubernetes driver's exact requests (server-side apply of the preview and the Services, the
//! promotion patch, the preview's deletion) and its error paths, against a mock API
//! (`crate::kube::mock`).

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{json, Value};

use super::*;
use crate::kube::mock::{self, query, ApiServer};

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/shop/deployments";
const SERVICES: &str = "/api/v1/namespaces/shop/services";
const APPLY_CONTENT: &str = "application/apply-patch+yaml";

fn shift() -> TrafficShift {
    serde_json::from_value(json!({
        "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift",
        "metadata": { "name": "web", "namespace": "shop", "uid": "u-1" },
        "spec": { "deployment": "web", "images": { "app": "web:v2" } }
    }))
    .unwrap()
}

fn target_json() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "web", "namespace": "shop", "uid": "d-1", "generation": 3,
                      "resourceVersion": "40" },
        "spec": {
            "replicas": 3,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web", "tier": "front" } },
                "spec": { "containers": [
                    { "name": "app", "image": "web:v1", "ports": [{ "containerPort": 8080, "name": "http" }] },
                    { "name": "sidecar", "image": "log:v1" }
                ] }
            }
        }
    })
}

fn target() -> Deployment {
    serde_json::from_value(target_json()).unwrap()
}

/// The controller owner reference every object of TrafficShift `shop/web` carries. No
/// `blockOwnerDeletion`: setting it needs `update` on `trafficshifts/finalizers` where the
/// OwnerReferencesPermissionEnforcement admission plugin runs, and the finalizer already keeps the
/// TrafficShift until its preview is gone.
fn owner() -> Value {
    json!([{ "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift", "name": "web",
             "uid": "u-1", "controller": true }])
}

fn apply_query() -> std::collections::BTreeMap<String, String> {
    query(&[("fieldManager", "crossfade"), ("force", "true")])
}

fn not_found(what: &str) -> (u16, Value) {
    (
        404,
        mock::status(404, "NotFound", &format!("{what} not found")),
    )
}

fn ours(mut object: Value) -> Value {
    object["metadata"]["ownerReferences"] = owner();
    object["metadata"]["uid"] = json!("p-1");
    object
}

fn driver() -> (KubeDriver, ApiServer) {
    let (client, server) = mock::client();
    (KubeDriver::new(client), server)
}

#[tokio::test(start_paused = true)]
async fn the_preview_is_server_side_applied_with_force_and_a_controller_owner_reference() {
    let (driver, mut server) = driver();
    let task = tokio::spawn(async move { driver.ensure_preview(&shift(), &target()).await });
    let path = format!("{DEPLOYMENTS}/web-green");
    let (code, body) = not_found("deployments.apps \"web-green\"");
    server.expect("GET", &path).await.respond(code, body);

    let apply = server.expect("PATCH", &path).await;
    assert_eq!(apply.query, apply_query());
    assert_eq!(apply.content_type.as_deref(), Some(APPLY_CONTENT));
    let body = &apply.body;
    assert_eq!(
        (&body["apiVersion"], &body["kind"]),
        (&json!("apps/v1"), &json!("Deployment"))
    );
    let meta = &body["metadata"];
    assert_eq!(
        (&meta["name"], &meta["namespace"]),
        (&json!("web-green"), &json!("shop"))
    );
    assert_eq!(meta["ownerReferences"], owner());
    assert_eq!(
        meta["resourceVersion"],
        Value::Null,
        "apply is not guarded by a read"
    );
    let green = json!({ "crossfade.dev/backend": "green", "crossfade.dev/trafficshift": "web" });
    assert_eq!(body["spec"]["selector"], json!({ "matchLabels": green }));
    assert_eq!(body["spec"]["replicas"], 3);
    let pod = &body["spec"]["template"];
    assert_eq!(
        pod["metadata"]["labels"],
        json!({ "tier": "front", "crossfade.dev/backend": "green", "crossfade.dev/trafficshift": "web" }),
        "the target's selector keys are gone, so blue's Service never picks green's pods"
    );
    assert_eq!(pod["spec"]["containers"][0]["image"], "web:v2");
    assert_eq!(pod["spec"]["containers"][1]["image"], "log:v1");
    assert_eq!(body["status"], Value::Null, "status is not ours to apply");

    let mut applied = apply.body.clone();
    applied["metadata"]["generation"] = json!(1);
    applied["status"] = json!({ "observedGeneration": 1, "replicas": 3, "updatedReplicas": 3,
                                "readyReplicas": 3, "availableReplicas": 3 });
    apply.ok(applied);
    let AppliedPreview {
        availability,
        images,
        ready,
        desired,
    } = task.await.unwrap().expect("applied");
    assert_eq!(availability, Availability::Available);
    assert_eq!(
        (ready, desired),
        (3, 3),
        "status.readyReplicas of spec.replicas"
    );
    let stored = [("app", "web:v2"), ("sidecar", "log:v1")];
    let stored = stored.map(|(c, i)| (c.to_owned(), i.to_owned()));
    assert_eq!(
        images,
        std::collections::BTreeMap::from(stored),
        "the images as the API server stored them"
    );
}

#[tokio::test(start_paused = true)]
async fn both_backend_services_are_applied_headless_once_their_owner_is_checked() {
    let (driver, mut server) = driver();
    let task = tokio::spawn(async move { driver.ensure_services(&shift(), &target()).await });
    for (slot, selector) in [
        ("blue", json!({ "app": "web" })),
        (
            "green",
            json!({ "crossfade.dev/backend": "green", "crossfade.dev/trafficshift": "web" }),
        ),
    ] {
        let path = format!("{SERVICES}/web-{slot}");
        let get = server.expect("GET", &path).await;
        if slot == "blue" {
            let (code, body) = not_found("services \"web-blue\"");
            get.respond(code, body);
        } else {
            get.ok(ours(json!({ "apiVersion": "v1", "kind": "Service",
                                "metadata": { "name": "web-green", "namespace": "shop" } })));
        }
        let apply = server.expect("PATCH", &path).await;
        assert_eq!(apply.query, apply_query());
        assert_eq!(apply.content_type.as_deref(), Some(APPLY_CONTENT));
        assert_eq!(apply.body["kind"], "Service");
        assert_eq!(apply.body["metadata"]["ownerReferences"], owner());
        assert_eq!(
            apply.body["metadata"]["labels"]["crossfade.dev/backend"],
            slot
        );
        let spec = &apply.body["spec"];
        assert_eq!(spec["clusterIP"], "None");
        assert_eq!(spec["selector"], selector);
        assert_eq!(
            spec["ports"],
            json!([{ "name": "http", "port": 8080, "targetPort": 8080, "protocol": "TCP" }])
        );
        let reply = apply.body.clone();
        apply.ok(reply);
    }
    task.await.unwrap().expect("applied");
}

#[tokio::test(start_paused = true)]
async fn a_preview_of_the_same_name_owned_by_someone_else_is_neither_applied_nor_deleted() {
    let (driver, mut server) = driver();
    let theirs = json!({ "apiVersion": "apps/v1", "kind": "Deployment",
                         "metadata": { "name": "web-green", "namespace": "shop", "uid": "x-9" } });
    let path = format!("{DEPLOYMENTS}/web-green");

    let d = driver.clone();
    let task = tokio::spawn(async move { d.ensure_preview(&shift(), &target()).await });
    server.expect("GET", &path).await.ok(theirs.clone());
    let err = task.await.unwrap().expect_err("not ours");
    assert_eq!(
        err.to_string(),
        "deployment shop/web-green exists and is not controlled by trafficshift shop/web; rename or delete it"
    );
    server.assert_quiet(Duration::from_secs(60)).await;

    let task = tokio::spawn(async move { driver.delete_preview(&shift()).await });
    server.expect("GET", &path).await.ok(theirs);
    assert!(task.await.unwrap().expect("left alone"), "counts as gone");
    server.assert_quiet(Duration::from_secs(60)).await;
}

#[tokio::test(start_paused = true)]
async fn the_preview_is_deleted_in_the_background_only_if_it_is_still_the_one_read() {
    let (driver, mut server) = driver();
    let path = format!("{DEPLOYMENTS}/web-green");
    let preview = ours(json!({ "apiVersion": "apps/v1", "kind": "Deployment",
                               "metadata": { "name": "web-green", "namespace": "shop" } }));

    // Deleted meanwhile (404 on the delete): gone, which is what was wanted.
    let d = driver.clone();
    let task = tokio::spawn(async move { d.delete_preview(&shift()).await });
    server.expect("GET", &path).await.ok(preview.clone());
    let delete = server.expect("DELETE", &path).await;
    assert_eq!(delete.body["propagationPolicy"], "Background");
    assert_eq!(
        delete.body["preconditions"],
        json!({ "uid": "p-1" }),
        "a Deployment recreated under that name since the read is not deleted"
    );
    let (code, body) = not_found("deployments.apps \"web-green\"");
    delete.respond(code, body);
    assert!(task.await.unwrap().expect("gone"));

    // A 500 fails the call, naming the object and the action.
    let task = tokio::spawn(async move { driver.delete_preview(&shift()).await });
    server.expect("GET", &path).await.ok(preview);
    server.expect("DELETE", &path).await.respond(
        500,
        mock::status(500, "InternalError", "etcdserver: leader changed"),
    );
    let err = task.await.unwrap().expect_err("failed");
    assert!(
        matches!(
            err,
            KubeDriverError::Api {
                action: "delete",
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with("deployment shop/web-green: delete: "),
        "{text}"
    );
    assert!(text.contains("etcdserver: leader changed"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn promotion_patches_the_targets_images_by_strategic_merge_with_their_record() {
    let (driver, mut server) = driver();
    let task = tokio::spawn(async move { driver.promote_target(&shift(), None).await });
    let path = format!("{DEPLOYMENTS}/web");
    server.expect("GET", &path).await.ok(target_json());
    let patch = server.expect("PATCH", &path).await;
    assert_eq!(patch.query, query(&[("fieldManager", "crossfade")]));
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/strategic-merge-patch+json")
    );
    assert_eq!(
        patch.body,
        json!({
            "metadata": {
                "annotations": {
                    "crossfade.dev/serving-images": r#"{"app":"web:v2","sidecar":"log:v1"}"#
                },
                "resourceVersion": "40"
            },
            "spec": { "template": { "spec": { "containers": [{ "name": "app", "image": "web:v2" }] } } }
        }),
        "only the named container, merged by name, and the record in the same patch, guarded by \
         the resourceVersion read"
    );
    let mut patched = target_json();
    patched["metadata"]["generation"] = json!(4);
    patched["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:v2");
    patched["status"] = json!({ "observedGeneration": 3, "replicas": 3, "updatedReplicas": 3,
                                "availableReplicas": 3 });
    patch.ok(patched);
    let availability = task.await.unwrap().expect("patched");
    assert!(
        matches!(availability, Availability::Waiting(ref why) if why.contains("generation 4 not observed")),
        "{availability:?}"
    );
}

/// Check31: a change of the target between the caller's check and the promotion's patch was
/// promoted with the images. The patch is guarded by the resourceVersion of the reading the caller
/// checked; a 409 is a wait (the next reconcile reads and checks again), not an error.
#[tokio::test(start_paused = true)]
async fn a_target_changed_since_it_was_read_is_not_patched_by_the_promotion() {
    let (driver, mut server) = driver();
    let read: k8s_openapi::api::apps::v1::Deployment =
        serde_json::from_value(target_json()).unwrap();
    let task = tokio::spawn(async move { driver.promote_target(&shift(), Some(read)).await });
    let path = format!("{DEPLOYMENTS}/web");
    // No GET: the caller's reading is used, and its resourceVersion guards the patch.
    let patch = server.expect("PATCH", &path).await;
    assert_eq!(patch.body["metadata"]["resourceVersion"], "40");
    patch.respond(
        409,
        crate::kube::mock::status(409, "Conflict", "the object has been modified"),
    );
    let availability = task.await.unwrap().expect("a conflict is a wait");
    assert!(
        matches!(availability, Availability::Waiting(ref why) if why.contains("changed since it was read")),
        "{availability:?}"
    );
}
