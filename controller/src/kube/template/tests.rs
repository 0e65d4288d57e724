use super::*;

fn deploy(images: &[(&str, &str)], annotations: &[(&str, &str)]) -> Deployment {
    let containers: Vec<Value> = images
        .iter()
        .map(|(n, i)| json!({ "name": n, "image": i }))
        .collect();
    let annotations: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    serde_json::from_value(json!({
        "metadata": { "name": "web", "resourceVersion": "7", "annotations": annotations },
        "spec": { "selector": {}, "template": { "spec": { "containers": containers } } }
    }))
    .unwrap()
}

#[test]
fn a_deployment_seen_first_has_its_images_recorded_as_they_are() {
    let d = deploy(&[("app", "web:v1")], &[]);
    assert_eq!(
        observe(&d),
        Images::FirstSight {
            patch: json!({ "metadata": { "annotations": { SERVING_IMAGES: r#"{"app":"web:v1"}"# } } })
        }
    );
    let garbled = deploy(&[("app", "web:v1")], &[(SERVING_IMAGES, "not json")]);
    assert!(matches!(observe(&garbled), Images::FirstSight { .. }));
}

#[test]
fn images_as_recorded_are_crossfades_own() {
    let d = deploy(
        &[("app", "web:v2"), ("sidecar", "envoy:1")],
        &[(SERVING_IMAGES, r#"{"app":"web:v2","sidecar":"envoy:1"}"#)],
    );
    assert_eq!(observe(&d), Images::Recorded);
}

#[test]
fn an_image_set_by_someone_else_is_reverted_and_requested_in_one_guarded_patch() {
    let d = deploy(
        &[("app", "web:v3")],
        &[(SERVING_IMAGES, r#"{"app":"web:v1"}"#), (IMAGE, "web:v2")],
    );
    let Images::Changed { patch, changes } = observe(&d) else {
        panic!("changed")
    };
    assert_eq!(
        patch,
        json!({
            "metadata": { "resourceVersion": "7", "annotations": { IMAGE: "web:v3" } },
            "spec": { "template": { "spec": { "containers": [{ "name": "app", "image": "web:v1" }] } } }
        })
    );
    assert_eq!(
        changes,
        BTreeMap::from([("app".to_owned(), ("web:v1".to_owned(), "web:v3".to_owned()))])
    );
}

#[test]
fn with_several_containers_the_request_names_the_changed_one() {
    let d = deploy(
        &[("app", "web:v1"), ("sidecar", "envoy:2")],
        &[(SERVING_IMAGES, r#"{"app":"web:v1","sidecar":"envoy:1"}"#)],
    );
    let Images::Changed { patch, .. } = observe(&d) else {
        panic!("changed")
    };
    assert_eq!(
        patch["metadata"]["annotations"],
        json!({ "crossfade.dev/image.sidecar": "envoy:2" })
    );
    assert_eq!(
        patch["spec"]["template"]["spec"]["containers"],
        json!([{ "name": "sidecar", "image": "envoy:1" }])
    );
    // One container, but the image.<container> form in use: keep that form.
    let d = deploy(
        &[("app", "web:v3")],
        &[
            (SERVING_IMAGES, r#"{"app":"web:v1"}"#),
            ("crossfade.dev/image.app", "web:v2"),
        ],
    );
    let Images::Changed { patch, .. } = observe(&d) else {
        panic!("changed")
    };
    assert_eq!(
        patch["metadata"]["annotations"],
        json!({ "crossfade.dev/image.app": "web:v3" })
    );
}
