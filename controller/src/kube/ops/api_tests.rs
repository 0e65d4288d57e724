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

/// TrafficShift `shop/web` of spec generation `generation` naming Deployment `deployment`, whose
/// running rollout (of generation 1) has a record of a version before the promotion words: it
/// names no target Deployment ([`mock::progressing_record`]).
fn older_record_shift(generation: i64, deployment: &str) -> Value {
    let record = serde_json::to_value(mock::progressing_record()).unwrap();
    json!({
        "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift",
        "metadata": { "name": "web", "namespace": "shop", "resourceVersion": "7",
                      "generation": generation },
        "spec": { "deployment": deployment, "images": { "app": "web:v2" } },
        "status": { "rolloutState": record }
    })
}

/// Deployment `name` of namespace `shop` selecting its pods by `app: <name>`.
fn selecting(name: &str) -> Value {
    json!({ "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": name, "namespace": "shop" },
            "spec": { "selector": { "matchLabels": { "app": name } },
                      "template": { "metadata": { "labels": { "app": name } },
                                    "spec": { "containers": [{ "name": "app", "image": "web:v1" }] } } } })
}

/// `crossfade promote --kube shop/web` started on `client`, its read of the TrafficShift answered
/// with `shift`.
async fn promote_reading(
    client: &kube::Client,
    server: &mut mock::ApiServer,
    shift: Value,
) -> tokio::task::JoinHandle<Result<Sent, OpsError>> {
    let client = client.clone();
    let task = tokio::spawn(async move { send(&client, "shop", "web", Verb::Promote).await });
    server.expect("GET", SHIFT).await.ok(shift);
    task
}

/// The command of `task` written on Deployment `shop/web-app`.
async fn annotated_web_app(
    server: &mut mock::ApiServer,
    task: tokio::task::JoinHandle<Result<Sent, OpsError>>,
) {
    server
        .expect("PATCH", TARGET)
        .await
        .ok(selecting("web-app"));
    let sent = task.await.unwrap().expect("sent");
    assert_eq!(sent.deployment, "shop/web-app");
}

/// kube37 (left by kube36): a command on a running record of an older version that names no
/// target goes where the controller's rule (`kube/shift/older.rs`) says the rollout acts. Before,
/// it went to the live `spec.deployment`: after an edit of it, a Deployment the rollout does not
/// read. The spec unchanged since the rollout started: the spec's, with no further read. The spec
/// edited to `web-app2`: the Deployment whose selector Service `web-blue` has, `web-app`. That
/// Service gone: nothing is written, and the error says why and how to name the target, in the
/// words of the controller's `TargetUnknown` condition.
#[tokio::test(start_paused = true)]
async fn a_command_on_an_older_record_goes_to_the_deployment_its_rollout_acts_on() {
    const SERVICE: &str = "/api/v1/namespaces/shop/services/web-blue";
    const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/shop/deployments";
    let (client, mut server) = mock::client();
    let task = promote_reading(&client, &mut server, older_record_shift(1, "web-app")).await;
    annotated_web_app(&mut server, task).await;

    let task = promote_reading(&client, &mut server, older_record_shift(2, "web-app2")).await;
    server.expect("GET", SERVICE).await.ok(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": "web-blue", "namespace": "shop" },
        "spec": { "selector": { "app": "web-app" } }
    }));
    server.expect("GET", DEPLOYMENTS).await.ok(json!({
        "apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {},
        "items": [selecting("web-app2"), selecting("web-app")]
    }));
    annotated_web_app(&mut server, task).await;

    let task = promote_reading(&client, &mut server, older_record_shift(2, "web-app2")).await;
    server.expect("GET", SERVICE).await.respond(
        404,
        mock::status(404, "NotFound", "services \"web-blue\" not found"),
    );
    let err = task.await.unwrap().expect_err("target unknown");
    assert!(matches!(err, OpsError::TargetUnknown { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "trafficshift shop/web: the controller has not named the deployment its rollout acts on \
         yet: status.rolloutState was written by an older version of crossfade and does not name \
         the deployment rollout 1 acts on, and the spec changed since that rollout started \
         (generation 1, now 2): service web-blue, which selects its target's pods, does not exist \
         or selects nothing; nothing is done until it is named: set \
         status.rolloutState.deployment to it (kubectl edit trafficshift web -n shop \
         --subresource=status); nothing was written"
    );
    server.assert_quiet(Duration::from_secs(1)).await;
}
