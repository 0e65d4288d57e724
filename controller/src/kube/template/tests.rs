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

fn pod(d: &mut Deployment) -> &mut k8s_openapi::api::core::v1::PodSpec {
    d.spec.as_mut().unwrap().template.spec.as_mut().unwrap()
}

/// The parts of a template a rollout checks: images are not in them, nor a restart's annotation;
/// an environment change is, named by its container; an init container is part of the pod spec.
#[test]
fn template_parts_leave_out_images_and_restarts_and_name_what_changed() {
    let base = deploy(&[("app", "web:v1"), ("sidecar", "log:v1")], &[]);
    let parts = template_parts(&base).unwrap();
    assert_eq!(
        parts.keys().collect::<Vec<_>>(),
        [
            "container app",
            "container sidecar",
            SCHEME,
            "the pod spec",
            "the template's labels and annotations"
        ]
    );
    assert_eq!(parts[SCHEME], scheme(), "which build made the digests");
    let changed = |change: &dyn Fn(&mut Deployment)| {
        let mut d = base.clone();
        change(&mut d);
        let now = template_parts(&d).unwrap();
        parts
            .keys()
            .filter(|k| now.get(*k) != parts.get(*k))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(changed(&|d| pod(d).containers[0].image = Some("web:v9".into())).is_empty());
    // The pull policy follows the image's tag when defaulted (`Always` for `:latest`).
    assert!(changed(&|d| {
        pod(d).containers[0].image = Some("web:latest".into());
        pod(d).containers[0].image_pull_policy = Some("Always".into());
    })
    .is_empty());
    assert!(changed(&|d| {
        let meta = d
            .spec
            .as_mut()
            .unwrap()
            .template
            .metadata
            .get_or_insert_with(Default::default);
        meta.annotations = Some([(RESTARTED_AT.to_owned(), "now".to_owned())].into());
    })
    .is_empty());
    assert_eq!(
        changed(&|d| pod(d).containers[1].args = Some(vec!["-v".into()])),
        ["container sidecar"]
    );
    assert_eq!(
        changed(&|d| pod(d).init_containers = Some(vec![Default::default()])),
        ["the pod spec"]
    );
    assert_eq!(
        changed(&|d| {
            let meta = d
                .spec
                .as_mut()
                .unwrap()
                .template
                .metadata
                .get_or_insert_with(Default::default);
            meta.labels = Some([("tier".to_owned(), "web".to_owned())].into());
        }),
        ["the template's labels and annotations"]
    );
}
