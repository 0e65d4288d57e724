//! Objects the Kubernetes tests create: Deployments and TrafficShifts built from JSON.

use crossfade_controller::kube::crd::TrafficShift;
use k8s_openapi::api::apps::v1::Deployment;
use serde_json::json;

/// A one-container (`app`, image `web:v1`) Deployment `name` with the given annotations.
pub fn deployment(name: &str, annotations: &[(&str, &str)]) -> Deployment {
    let annotations: serde_json::Map<_, _> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name, "annotations": annotations },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "app", "image": "web:v1" }] }
            }
        }
    }))
    .expect("valid deployment")
}

/// A TrafficShift `name` rolling container `app` of Deployment `name` out to `image`.
pub fn shift(name: &str, image: &str) -> TrafficShift {
    serde_json::from_value(json!({
        "apiVersion": "crossfade.dev/v1alpha1",
        "kind": "TrafficShift",
        "metadata": { "name": name },
        "spec": { "deployment": name, "images": { "app": image } }
    }))
    .expect("valid trafficshift")
}
