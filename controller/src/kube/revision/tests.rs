use serde_json::json;

use super::*;

const HEX: &str = "4c0fdaa8b6341bfdeca5f18f7837462c80cff90527ee35ef185571e1c327beac";
const HEX2: &str = "9b0e7a4d2a1c1b7e5a3b8e6c2d9f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b";

fn ok(image_id: &str) -> String {
    match parse_image_id(image_id) {
        Ok(Some(d)) => d.to_string(),
        other => panic!("{image_id:?}: {other:?}"),
    }
}

#[test]
fn image_ids_of_every_runtime_give_their_digest() {
    let want = format!("sha256:{HEX}");
    let shapes = [
        // dockershim / cri-dockerd, pulled from a registry
        format!("docker-pullable://registry.example.com:5000/team/app@sha256:{HEX}"),
        format!("docker-pullable://nginx@sha256:{HEX}"),
        // docker, an image without a registry digest: its image ID
        format!("docker://sha256:{HEX}"),
        // containerd and CRI-O
        format!("docker.io/library/nginx@sha256:{HEX}"),
        format!("ghcr.io/acme/web@sha256:{HEX}"),
        format!("localhost:5000/web@sha256:{HEX}"),
        // containerd, an image loaded without a registry (kind load)
        format!("sha256:{HEX}"),
        // surrounding whitespace is not part of the value
        format!("  sha256:{HEX}\n"),
    ];
    for shape in &shapes {
        assert_eq!(ok(shape), want, "{shape}");
    }
    let sha512 = format!("sha512:{}", HEX.repeat(2));
    assert_eq!(ok(&format!("web@{sha512}")), sha512);
}

#[test]
fn an_empty_image_id_is_not_known_yet_rather_than_an_error() {
    assert_eq!(parse_image_id(""), Ok(None));
    assert_eq!(parse_image_id("   "), Ok(None));
}

#[test]
fn image_ids_without_a_valid_digest_are_refused_with_the_reason() {
    let no_digest = [
        "nginx",
        "nginx:1.27",
        "docker-pullable://nginx:1.27",
        "registry:5000/app:v1",
        "garbage!",
    ];
    for value in no_digest {
        assert!(
            matches!(parse_image_id(value), Err(ImageIdError::NoDigest(_))),
            "{value}: {:?}",
            parse_image_id(value)
        );
    }
    let algorithm = parse_image_id(&format!("web@md5:{HEX}"));
    assert_eq!(algorithm, Err(ImageIdError::Algorithm("md5".into())));
    let encoded = [
        format!("sha256:{}", &HEX[1..]),          // 63 digits
        format!("sha256:{HEX}0"),                 // 65 digits
        format!("sha256:{}", HEX.to_uppercase()), // OCI: lowercase only
        format!("web@sha256:{}z", &HEX[1..]),
        "sha256:".to_owned(),
        format!("web@sha512:{HEX}"), // sha512 needs 128 digits
        format!("sha256: {}", &HEX[1..]),
    ];
    for value in &encoded {
        assert!(
            matches!(parse_image_id(value), Err(ImageIdError::Encoded(..))),
            "{value}: {:?}",
            parse_image_id(value)
        );
    }
    let message = parse_image_id("nginx:1.27").unwrap_err().to_string();
    assert_eq!(
        message,
        "no digest in \"nginx:1.27\": expected [scheme://][name@]sha256:<64 hex>"
    );
}

/// A pod named `name` in `phase` whose container `app` was created with `image` and reports
/// `image_id`.
fn pod(name: &str, phase: &str, image: &str, image_id: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": { "containers": [{ "name": "app", "image": image }] },
        "status": { "phase": phase, "containerStatuses": [{
            "name": "app", "image": format!("docker.io/library/{image}"), "imageID": image_id,
            "ready": true, "restartCount": 0 }] }
    }))
    .expect("pod")
}

fn template(image: &str) -> Vec<(String, String)> {
    vec![("app".to_owned(), image.to_owned())]
}

#[test]
fn a_revision_lists_the_distinct_digests_of_its_running_pods() {
    let id = format!("docker-pullable://web@sha256:{HEX}");
    let pods = [
        pod("web-1", "Running", "web:v1", &id),
        pod("web-2", "Running", "web:v1", &format!("sha256:{HEX}")),
        pod("web-3", "Pending", "web:v1", ""),
        pod("web-4", "Succeeded", "web:v1", &format!("sha256:{HEX2}")),
    ];
    let (rev, unreadable) = revision("web", &template("web:v1"), &pods);
    assert!(unreadable.is_empty(), "{unreadable:?}");
    assert_eq!(
        rev,
        RevisionStatus {
            deployment: "web".into(),
            pods: 2,
            containers: vec![ContainerRevision {
                name: "app".into(),
                image: "web:v1".into(),
                digests: vec![format!("sha256:{HEX}")],
            }],
            mixed: false,
        }
    );
    assert_eq!(rev.digest_label(&["app"]), format!("sha256:{HEX}"));
}

#[test]
fn pods_being_deleted_and_not_started_containers_do_not_count() {
    let mut leaving = pod("web-1", "Running", "web:v1", &format!("sha256:{HEX2}"));
    leaving.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
    let starting = pod("web-2", "Running", "web:v1", "");
    let (rev, unreadable) = revision("web", &template("web:v1"), &[leaving, starting]);
    assert!(unreadable.is_empty());
    assert_eq!(rev.pods, 1);
    assert!(rev.containers[0].digests.is_empty(), "{rev:?}");
    assert_eq!(
        rev.digest_label(&["app"]),
        "",
        "no digest known: empty label"
    );
}

#[test]
fn one_image_under_two_digests_is_a_mixed_revision() {
    // A mutable tag pulled at different times on different nodes.
    let pods = [
        pod("web-1", "Running", "web:latest", &format!("sha256:{HEX2}")),
        pod("web-2", "Running", "web:latest", &format!("sha256:{HEX}")),
    ];
    let (rev, _) = revision("web", &template("web:latest"), &pods);
    assert!(rev.mixed);
    assert_eq!(
        rev.containers[0].digests,
        [format!("sha256:{HEX}"), format!("sha256:{HEX2}")],
        "sorted"
    );
    assert_eq!(
        rev.digest_label(&["app"]),
        format!("sha256:{HEX}|sha256:{HEX2}")
    );
}

#[test]
fn a_rolling_update_shows_the_old_pods_image_as_its_own_entry() {
    let pods = [
        pod("web-new", "Running", "web:v2", &format!("sha256:{HEX2}")),
        pod("web-old", "Running", "web:v1", &format!("sha256:{HEX}")),
    ];
    let (rev, _) = revision("web", &template("web:v2"), &pods);
    assert!(rev.mixed, "two builds serve the backend");
    let entries: Vec<_> = rev
        .containers
        .iter()
        .map(|c| (c.image.as_str(), c.digests.clone()))
        .collect();
    assert_eq!(
        entries,
        [
            ("web:v2", vec![format!("sha256:{HEX2}")]),
            ("web:v1", vec![format!("sha256:{HEX}")]),
        ]
    );
}

#[test]
fn malformed_image_ids_are_returned_for_the_log_and_the_rest_still_counts() {
    let pods = [
        pod("web-1", "Running", "web:v1", "sha256:not-a-digest"),
        pod("web-2", "Running", "web:v1", &format!("sha256:{HEX}")),
    ];
    let (rev, unreadable) = revision("web", &template("web:v1"), &pods);
    assert_eq!(rev.containers[0].digests, [format!("sha256:{HEX}")]);
    assert!(!rev.mixed);
    assert_eq!(unreadable.len(), 1);
    assert_eq!(
        (unreadable[0].pod.as_str(), unreadable[0].container.as_str()),
        ("web-1", "app")
    );
    assert!(matches!(unreadable[0].error, ImageIdError::Encoded(..)));
}

#[test]
fn digests_are_bounded_per_container() {
    let pods: Vec<Pod> = (0..(MAX_DIGESTS + 3))
        .map(|i| {
            let hex = format!("{i:064x}");
            pod(
                &format!("web-{i}"),
                "Running",
                "web:latest",
                &format!("sha256:{hex}"),
            )
        })
        .collect();
    let (rev, _) = revision("web", &template("web:latest"), &pods);
    assert_eq!(rev.containers[0].digests.len(), MAX_DIGESTS);
    assert!(rev.mixed);
    assert_eq!(rev.pods, u32::try_from(MAX_DIGESTS + 3).unwrap());
}

#[test]
fn the_digest_label_follows_the_container_order_of_the_image_label() {
    let rev = RevisionStatus {
        deployment: "web".into(),
        pods: 1,
        containers: vec![
            ContainerRevision {
                name: "app".into(),
                image: "web:v1".into(),
                digests: vec![format!("sha256:{HEX}")],
            },
            ContainerRevision {
                name: "sidecar".into(),
                image: "envoy:1.30".into(),
                digests: vec![],
            },
        ],
        mixed: false,
    };
    assert_eq!(
        rev.digest_label(&["sidecar", "app"]),
        format!(",sha256:{HEX}")
    );
}

#[test]
fn the_selector_text_is_equality_terms_joined_by_commas() {
    let labels = BTreeMap::from([
        ("app".to_owned(), "web".to_owned()),
        ("tier".to_owned(), "front".to_owned()),
    ]);
    assert_eq!(selector_text(&labels), "app=web,tier=front");
}

/// A pod `name` whose one container `app` has `status` (a `containerStatuses` entry, merged over
/// a running one).
fn pod_with(name: &str, status: serde_json::Value) -> Pod {
    let mut container = json!({ "name": "app", "image": "web:v2", "imageID": "", "ready": true,
        "restartCount": 0, "state": { "running": {} } });
    if let (Some(c), Some(extra)) = (container.as_object_mut(), status.as_object()) {
        for (k, v) in extra {
            c.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name },
        "status": { "phase": "Running", "containerStatuses": [container] }
    }))
    .expect("pod")
}

#[test]
fn a_container_in_crash_loop_back_off_or_restarted_three_times_is_crash_looping() {
    let healthy = pod_with("web-green-0", json!({}));
    let once = pod_with(
        "web-green-1",
        json!({ "restartCount": 2,
        "lastState": { "terminated": { "exitCode": 137, "reason": "OOMKilled" } } }),
    );
    assert_eq!(crash_looping(&[healthy.clone(), once.clone()]), None);

    let backoff = pod_with(
        "web-green-2",
        json!({ "ready": false, "restartCount": 1,
        "state": { "waiting": { "reason": "CrashLoopBackOff" } },
        "lastState": { "terminated": { "exitCode": 1, "reason": "Error" } } }),
    );
    assert_eq!(
        crash_looping(&[healthy.clone(), backoff]).as_deref(),
        Some(
            "pod web-green-2 container app: CrashLoopBackOff, 1 restart, last exit code 1 (Error)"
        )
    );
    let up_between_crashes = pod_with(
        "web-green-3",
        json!({ "restartCount": 3,
        "lastState": { "terminated": { "exitCode": 1 } } }),
    );
    assert_eq!(
        crash_looping(&[healthy, up_between_crashes]).as_deref(),
        Some("pod web-green-3 container app: restarting, 3 restarts, last exit code 1")
    );
    let mut deleting = serde_json::to_value(pod_with("web-green-4", json!({ "restartCount": 9 })))
        .expect("pod as json");
    deleting["metadata"]["deletionTimestamp"] = json!("2026-12-01T00:00:00Z");
    let deleting: Pod = serde_json::from_value(deleting).expect("pod");
    assert_eq!(
        crash_looping(&[once, deleting]),
        None,
        "a pod being deleted does not count"
    );
}
