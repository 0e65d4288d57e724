//! The Deployment reconciler's requests and error paths against a mock API
//! (`crate::kube::mock`): the TrafficShift's server-side apply and its Event, a 500 on the apply,
//! an apply that never answers, the revert of a `kubectl set image` and its 409.

use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::kube::mock::{self, query, ApiServer};

const SHIFT: &str = "/apis/crossfade.dev/v1alpha1/namespaces/shop/trafficshifts/web";
const DEPLOY: &str = "/apis/apps/v1/namespaces/shop/deployments/web";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/shop/events";

/// Deployment `shop/web` asking for `web:v2`, its template running `image`, its record `web:v1`.
fn deploy(image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "web", "namespace": "shop", "uid": "d-1", "resourceVersion": "40",
                      "annotations": { "crossfade.dev/enabled": "true",
                                       "crossfade.dev/image": "web:v2",
                                       "crossfade.dev/serving-images": r#"{"app":"web:v1"}"# } },
        "spec": {
            "selector": { "matchLabels": { "app": "web" } },
            "template": { "metadata": { "labels": { "app": "web" } },
                          "spec": { "containers": [{ "name": "app", "image": image,
                                                     "ports": [{ "containerPort": 8080 }] }] } }
        }
    })
}

fn context() -> (Arc<Context>, ApiServer) {
    let (client, server) = mock::client();
    (Arc::new(Context::new(client)), server)
}

fn run(
    ctx: &Arc<Context>,
    deploy: &Value,
) -> tokio::task::JoinHandle<Result<Action, ReconcileError>> {
    let deploy: Deployment = serde_json::from_value(deploy.clone()).unwrap();
    tokio::spawn(reconcile(Arc::new(deploy), ctx.clone()))
}

fn not_found() -> Value {
    mock::status(
        404,
        "NotFound",
        "trafficshifts.crossfade.dev \"web\" not found",
    )
}

#[tokio::test(start_paused = true)]
async fn the_trafficshift_is_server_side_applied_owned_by_the_deployment_with_one_event() {
    let (ctx, mut server) = context();
    let task = run(&ctx, &deploy("web:v1"));
    server.expect("GET", SHIFT).await.respond(404, not_found());
    let apply = server.expect("PATCH", SHIFT).await;
    assert_eq!(
        apply.query,
        query(&[("fieldManager", "crossfade"), ("force", "true")])
    );
    assert_eq!(
        apply.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    let body = &apply.body;
    assert_eq!(body["apiVersion"], "crossfade.dev/v1alpha1");
    assert_eq!(body["kind"], "TrafficShift");
    assert_eq!(
        body["metadata"]["ownerReferences"],
        json!([{ "apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "d-1",
                 "controller": true }])
    );
    assert_eq!(
        body["metadata"]["labels"],
        json!({ "app.kubernetes.io/managed-by": "crossfade" })
    );
    assert_eq!(body["metadata"]["resourceVersion"], Value::Null);
    assert_eq!(body["spec"]["deployment"], "web");
    assert_eq!(body["spec"]["images"], json!({ "app": "web:v2" }));
    assert_eq!(
        body["status"],
        Value::Null,
        "status is the TrafficShift controller's"
    );
    let applied = body.clone();
    apply.ok(applied.clone());

    let event = server.expect("POST", EVENTS).await;
    let e = &event.body;
    assert_eq!(
        (&e["type"], &e["reason"], &e["action"]),
        (
            &json!("Normal"),
            &json!("RolloutRequested"),
            &json!("Reconcile")
        )
    );
    assert_eq!(e["note"], "trafficshift web: app=web:v2");
    assert_eq!(e["reportingController"], "crossfade");
    assert_eq!(
        (
            &e["regarding"]["kind"],
            &e["regarding"]["name"],
            &e["regarding"]["resourceVersion"]
        ),
        (&json!("Deployment"), &json!("web"), &json!("40"))
    );
    let reply = event.body.clone();
    event.respond(201, reply);
    assert_eq!(
        task.await.unwrap().expect("applied"),
        Action::await_change()
    );

    // The same annotations again: the same apply, a no-op on the server, and no second Event.
    let task = run(&ctx, &deploy("web:v1"));
    server.expect("GET", SHIFT).await.ok(applied.clone());
    let again = server.expect("PATCH", SHIFT).await;
    assert_eq!(again.body, applied);
    again.ok(applied);
    assert_eq!(
        task.await.unwrap().expect("applied"),
        Action::await_change()
    );
    server.assert_quiet(Duration::from_secs(60)).await;
}

#[tokio::test(start_paused = true)]
async fn a_500_on_the_apply_fails_with_backoff_and_publishes_nothing() {
    let (ctx, mut server) = context();
    let object = deploy("web:v1");
    let task = run(&ctx, &object);
    server.expect("GET", SHIFT).await.respond(404, not_found());
    server.expect("PATCH", SHIFT).await.respond(
        500,
        mock::status(500, "InternalError", "etcdserver: leader changed"),
    );
    let err = task.await.unwrap().expect_err("failed");
    assert!(
        err.to_string().starts_with("apply trafficshift shop/web: "),
        "{err}"
    );
    assert!(
        err.to_string().contains("etcdserver: leader changed"),
        "{err}"
    );
    server.assert_quiet(Duration::from_secs(60)).await;
    let deploy: Arc<Deployment> = Arc::new(serde_json::from_value(object).unwrap());
    let waits: Vec<_> = (0..2)
        .map(|_| error_policy(deploy.clone(), &err, ctx.clone()))
        .collect();
    assert_eq!(
        waits,
        [5, 10].map(|s| Action::requeue(Duration::from_secs(s)))
    );
}

#[tokio::test(start_paused = true)]
async fn a_set_image_is_reverted_by_a_patch_guarded_by_the_resource_version_and_a_409_retries() {
    let (ctx, mut server) = context();
    let task = run(&ctx, &deploy("web:v3"));
    let patch = server.expect("PATCH", DEPLOY).await;
    assert_eq!(patch.query, query(&[("fieldManager", "crossfade")]));
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/strategic-merge-patch+json")
    );
    assert_eq!(
        patch.body,
        json!({
            "metadata": { "resourceVersion": "40",
                          "annotations": { "crossfade.dev/image": "web:v3" } },
            "spec": { "template": { "spec": { "containers": [{ "name": "app", "image": "web:v1" }] } } }
        })
    );
    // Someone changed the Deployment since it was read: nothing is applied, no Event, retried.
    patch.respond(
        409,
        mock::status(409, "Conflict", "the object has been modified"),
    );
    let err = task.await.unwrap().expect_err("conflict");
    assert!(matches!(err, ReconcileError::Patch { .. }), "{err:?}");
    server.assert_quiet(Duration::from_secs(60)).await;
    let deploy: Arc<Deployment> = Arc::new(serde_json::from_value(deploy("web:v3")).unwrap());
    assert_eq!(
        error_policy(deploy, &err, ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
}

#[tokio::test(start_paused = true)]
async fn an_apply_that_never_answers_is_dropped_at_the_reconcile_timeout_and_retried() {
    let (ctx, mut server) = context();
    let object = deploy("web:v1");
    let deployment: Arc<Deployment> = Arc::new(serde_json::from_value(object).unwrap());
    let task = tokio::spawn(reconcile_bounded(deployment.clone(), ctx.clone()));
    server.expect("GET", SHIFT).await.respond(404, not_found());
    let apply = server.expect("PATCH", SHIFT).await;
    let asked = apply.at;
    server.hold(apply);
    let err = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the reconcile is bounded")
        .unwrap()
        .expect_err("timed out");
    assert_eq!(
        tokio::time::Instant::now() - asked,
        crate::kube::shift::RECONCILE_TIMEOUT
    );
    assert_eq!(
        err.to_string(),
        "deployment shop/web: reconcile did not finish within 30s (an API request that never answered); dropped"
    );
    server.assert_quiet(Duration::from_secs(1)).await;
    assert_eq!(
        error_policy(deployment, &err, ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
}

#[tokio::test(start_paused = true)]
async fn a_deployment_without_a_container_port_gets_a_warning_with_its_rollout() {
    // Trial 10, K10: the proxies can never reach such pods; say so when the rollout is requested.
    let (ctx, mut server) = context();
    let mut portless = deploy("web:v1");
    portless["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("ports");
    let task = run(&ctx, &portless);
    server.expect("GET", SHIFT).await.respond(404, not_found());
    let apply = server.expect("PATCH", SHIFT).await;
    let applied = apply.body.clone();
    apply.ok(applied);
    let requested = server.expect("POST", EVENTS).await;
    assert_eq!(requested.body["reason"], "RolloutRequested");
    let reply = requested.body.clone();
    requested.respond(201, reply);
    let warning = server.expect("POST", EVENTS).await;
    assert_eq!(
        (&warning.body["type"], &warning.body["reason"]),
        (&json!("Warning"), &json!("NoContainerPort"))
    );
    let note = warning.body["note"].as_str().unwrap_or_default().to_owned();
    assert!(
        note.starts_with(
            "deployment web declares no container port; the proxies cannot reach its pods"
        ),
        "{note}"
    );
    assert!(note.contains("add ports[].containerPort"), "{note}");
    let reply = warning.body.clone();
    warning.respond(201, reply);
    assert_eq!(
        task.await.unwrap().expect("applied"),
        Action::await_change()
    );
}
