//! The CLI's `--kube` commands against a mock API (`crate::kube::mock`): the annotation patch on
//! the target Deployment, and `--wait` bounded even when the API never answers.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::*;
use crate::kube::command::check_nonce;
use crate::kube::mock::{self, query};

const SHIFT: &str = "/apis/crossfade.dev/v1alpha1/namespaces/shop/trafficshifts/web";
/// The target is `spec.deployment`, not the TrafficShift's name.
const TARGET: &str = "/apis/apps/v1/namespaces/shop/deployments/web-app";

fn shift(commands: Value) -> Value {
    json!({
        "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift",
        "metadata": { "name": "web", "namespace": "shop", "resourceVersion": "7" },
        "spec": { "deployment": "web-app", "images": { "app": "web:v2" } },
        "status": { "commands": commands }
    })
}

#[tokio::test(start_paused = true)]
async fn resume_writes_both_annotations_in_one_merge_patch_on_the_target_deployment() {
    let (client, mut server) = mock::client();
    let task = tokio::spawn(async move { send(&client, "shop", "web", Verb::Resume).await });
    server.expect("GET", SHIFT).await.ok(shift(json!({})));
    let patch = server.expect("PATCH", TARGET).await;
    assert_eq!(patch.query, query(&[("fieldManager", "crossfade")]));
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    let annotations = patch.body["metadata"]["annotations"].clone();
    assert_eq!(
        patch.body,
        json!({ "metadata": { "annotations": annotations } }),
        "nothing but the annotations"
    );
    assert_eq!(annotations["crossfade.dev/paused"], "false");
    let nonce = annotations["crossfade.dev/resume"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(check_nonce(&nonce), Ok(()));
    patch.ok(json!({ "apiVersion": "apps/v1", "kind": "Deployment",
                     "metadata": { "name": "web-app", "namespace": "shop" } }));
    let sent = task.await.unwrap().expect("sent");
    assert_eq!(sent.deployment, "shop/web-app");
    assert_eq!(
        sent.annotations,
        [
            ("crossfade.dev/paused", "false".to_owned()),
            ("crossfade.dev/resume", nonce)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_missing_trafficshift_and_a_refused_patch_are_named() {
    let (client, mut server) = mock::client();
    let c = client.clone();
    let task = tokio::spawn(async move { send(&c, "shop", "web", Verb::Abort).await });
    server.expect("GET", SHIFT).await.respond(
        404,
        mock::status(
            404,
            "NotFound",
            "trafficshifts.crossfade.dev \"web\" not found",
        ),
    );
    let err = task.await.unwrap().expect_err("not found");
    assert!(matches!(err, OpsError::NotFound { .. }), "{err:?}");
    server.assert_quiet(Duration::from_secs(1)).await;

    let task = tokio::spawn(async move { send(&client, "shop", "web", Verb::Abort).await });
    server.expect("GET", SHIFT).await.ok(shift(json!({})));
    server.expect("PATCH", TARGET).await.respond(
        403,
        mock::status(
            403,
            "Forbidden",
            "deployments.apps \"web-app\" is forbidden",
        ),
    );
    let err = task.await.unwrap().expect_err("refused").to_string();
    assert!(
        err.starts_with("annotate deployment shop/web-app: "),
        "{err}"
    );
    assert!(err.contains("forbidden"), "{err}");
}

fn sent() -> Sent {
    Sent {
        verb: Verb::Promote,
        deployment: "shop/web-app".into(),
        annotations: vec![("crossfade.dev/promote", "n-1".into())],
    }
}

#[tokio::test(start_paused = true)]
async fn waiting_reads_until_the_nonce_is_recorded() {
    let (client, mut server) = mock::client();
    let task = tokio::spawn(async move {
        wait_acted(&client, "shop", "web", &sent(), Duration::from_secs(30)).await
    });
    let first = server.expect("GET", SHIFT).await;
    let t0 = first.at;
    first.ok(shift(json!({ "promote": "n-0" })));
    let second = server.expect("GET", SHIFT).await;
    assert_eq!(second.at - t0, POLL);
    second.ok(shift(json!({ "promote": "n-1" })));
    let shift = task.await.unwrap().expect("acted");
    let seen = shift.status.unwrap().commands.unwrap();
    assert_eq!(seen.promote.as_deref(), Some("n-1"));
}

#[tokio::test(start_paused = true)]
async fn waiting_gives_up_at_its_deadline_even_when_a_read_never_answers() {
    let (client, mut server) = mock::client();
    let started = Instant::now();
    let task = tokio::spawn(async move {
        wait_acted(&client, "shop", "web", &sent(), Duration::from_secs(30)).await
    });
    server
        .expect("GET", SHIFT)
        .await
        .ok(shift(json!({ "promote": "n-0" })));
    let hung = server.expect("GET", SHIFT).await;
    server.hold(hung);
    let err = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the wait is bounded")
        .unwrap()
        .expect_err("not acted");
    assert_eq!(Instant::now() - started, Duration::from_secs(30));
    assert!(matches!(err, OpsError::NotActed { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("crossfade.dev/promote=n-1 written on deployment shop/web-app, but no controller acted on it within 30s"),
        "{err}"
    );
}

/// Trial 30: a refusal of the API server is said in its words with what to grant, not as kube's
/// `ApiError: ... (Status { status: Some(Failure), code: 403, ... })`.
#[tokio::test(start_paused = true)]
async fn a_forbidden_read_or_write_names_the_grant_it_needs() {
    let forbidden = |what: &str| {
        mock::status(
            403,
            "Forbidden",
            &format!("{what} is forbidden: User \"u\" cannot do it"),
        )
    };
    let (client, mut server) = mock::client();
    let task = tokio::spawn({
        let client = client.clone();
        async move { send(&client, "shop", "web", Verb::Promote).await }
    });
    let call = server.expect("GET", SHIFT).await;
    call.respond(403, forbidden("trafficshifts.crossfade.dev"));
    let refused = task.await.unwrap().expect_err("refused").to_string();
    assert_eq!(
        refused,
        "get trafficshift shop/web: 403 Forbidden: trafficshifts.crossfade.dev is forbidden: \
         User \"u\" cannot do it; the user of the kubeconfig (or the pod's ServiceAccount) needs \
         get on trafficshifts.crossfade.dev in namespace shop (docs/kubernetes.md, \"From the \
         command line\")"
    );

    let task = tokio::spawn(async move { send(&client, "shop", "web", Verb::Promote).await });
    server.expect("GET", SHIFT).await.ok(shift(json!({})));
    let call = server.expect("PATCH", TARGET).await;
    call.respond(403, forbidden("deployments.apps"));
    let refused = task.await.unwrap().expect_err("refused").to_string();
    assert!(
        refused.starts_with(
            "annotate deployment shop/web-app: 403 Forbidden: deployments.apps is forbidden"
        ),
        "{refused}"
    );
    assert!(
        refused.contains("needs patch on deployments.apps in namespace shop"),
        "{refused}"
    );
    assert!(!refused.contains("Status {"), "{refused}");
}
