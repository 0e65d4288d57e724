use k8s_openapi::api::apps::v1::Deployment;
use serde_json::json;

use super::*;
use crate::kube::crd::TrafficShift;

fn target() -> Deployment {
    serde_json::from_value(json!({
        "metadata": { "name": "web", "namespace": "shop", "generation": 3 },
        "spec": {
            "replicas": 3,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web", "tier": "front" } },
                "spec": { "containers": [
                    { "name": "app", "image": "web:v1", "ports": [{ "containerPort": 8080, "name": "http" }] },
                    { "name": "sidecar", "image": "log:v1", "ports": [{ "containerPort": 9000 }, { "containerPort": 8080 }] }
                ] }
            }
        }
    }))
    .unwrap()
}

fn shift(images: serde_json::Value) -> TrafficShift {
    serde_json::from_value(json!({
        "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift",
        "metadata": { "name": "web", "namespace": "shop", "uid": "u-1" },
        "spec": { "deployment": "web", "images": images }
    }))
    .unwrap()
}

fn with_status(generation: i64, status: serde_json::Value) -> Deployment {
    let mut d = target();
    d.metadata.generation = Some(generation);
    d.status = Some(serde_json::from_value(status).unwrap());
    d
}

#[test]
fn preview_copies_the_template_with_the_new_images_and_leaves_the_target_selector() {
    let preview = preview_deployment(&shift(json!({ "app": "web:v2" })), &target()).unwrap();
    assert_eq!(preview.metadata.name.as_deref(), Some("web-green"));
    assert_eq!(preview.metadata.namespace.as_deref(), Some("shop"));
    let owner = &preview.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("TrafficShift", "u-1", Some(true))
    );
    assert_eq!(preview.spec.as_ref().unwrap().replicas, Some(3));
    let pod = preview
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(pod.containers[0].image.as_deref(), Some("web:v2"));
    assert_eq!(
        pod.containers[1].image.as_deref(),
        Some("log:v1"),
        "unnamed containers keep their image"
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
        labels.get("app"),
        None,
        "the target's selector must not pick up green pods"
    );
    assert_eq!(labels.get("tier").map(String::as_str), Some("front"));
    assert_eq!(labels.get(BACKEND_LABEL).map(String::as_str), Some("green"));
    assert_eq!(
        preview.spec.as_ref().unwrap().selector.match_labels,
        Some(green_selector(&shift(json!({}))))
    );
}

#[test]
fn an_image_for_a_container_the_target_lacks_names_the_spec_field() {
    let err = preview_deployment(&shift(json!({ "api": "web:v2" })), &target()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "trafficshift shop/web: spec.images.api: deployment web has no container \"api\" (its containers: app, sidecar)"
    );
}

#[test]
fn services_select_each_backend_and_carry_every_distinct_container_port() {
    let s = shift(json!({ "app": "web:v2" }));
    let blue = backend_service(&s, &target(), Slot::Blue).unwrap();
    let green = backend_service(&s, &target(), Slot::Green).unwrap();
    assert_eq!(blue.metadata.name.as_deref(), Some("web-blue"));
    assert_eq!(green.metadata.name.as_deref(), Some("web-green"));
    let spec = blue.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(
        spec.selector,
        Some([("app".to_owned(), "web".to_owned())].into())
    );
    let ports: Vec<_> = spec
        .ports
        .unwrap()
        .iter()
        .map(|p| (p.name.clone().unwrap(), p.port))
        .collect();
    assert_eq!(
        ports,
        [("http".to_owned(), 8080), ("tcp-9000".to_owned(), 9000)]
    );
    assert_eq!(green.spec.unwrap().selector, Some(green_selector(&s)));
}

#[test]
fn availability_follows_kubectl_rollout_status() {
    let cases = [
        (json!({}), false),
        (
            json!({ "observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3 }),
            false,
        ),
        (
            json!({ "observedGeneration": 3, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 3 }),
            false,
        ),
        (
            json!({ "observedGeneration": 3, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3 }),
            false,
        ),
        (
            json!({ "observedGeneration": 3, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2 }),
            false,
        ),
        (
            json!({ "observedGeneration": 3, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3 }),
            true,
        ),
    ];
    for (status, available) in cases {
        let got = availability(&with_status(3, status.clone()));
        assert_eq!(
            got == Availability::Available,
            available,
            "{status}: {got:?}"
        );
    }
    let stalled = with_status(
        3,
        json!({ "observedGeneration": 3, "conditions": [{
        "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
        "message": "ReplicaSet \"web-green-5d\" has timed out progressing." }] }),
    );
    assert_eq!(
        availability(&stalled),
        Availability::Failed("ReplicaSet \"web-green-5d\" has timed out progressing.".into())
    );
}

#[test]
fn runs_images_compares_only_the_named_containers() {
    let s = shift(json!({ "app": "web:v1" }));
    assert!(runs_images(&target(), &s));
    assert!(!runs_images(&target(), &shift(json!({ "app": "web:v2" }))));
}

#[test]
fn a_template_without_container_ports_is_named_with_the_field_that_fixes_it() {
    assert_eq!(no_container_port(&target()), None);
    let mut portless = target();
    let pod = portless
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap();
    for c in &mut pod.containers {
        c.ports = None;
    }
    let warning = no_container_port(&portless).expect("a warning");
    assert!(
        warning.starts_with(
            "deployment web declares no container port; the proxies cannot reach its pods"
        ),
        "{warning}"
    );
    assert!(warning.contains("add ports[].containerPort"), "{warning}");
}
