//! The annotation trigger end to end: the Deployment controller (`crossfade_controller::kube::
//! reconcile`) against the emulator, through kube-rs.

use std::sync::Arc;
use std::time::Duration;

use crossfade_controller::kube::crd::TrafficShift;
use crossfade_controller::kube::reconcile::{self, Context, ReconcileError};
use crossfade_controller::kube::trigger::{ENABLED, IMAGE};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::emulator::Emulator;
use super::objects::deployment;
use crate::support::wait_until;

/// The TrafficShift `web`'s image for container `app` once it is `image`.
async fn shift_with_image(api: &Api<TrafficShift>, image: &str) -> TrafficShift {
    wait_until(
        Duration::from_secs(10),
        &format!("trafficshift web with image {image}"),
        || async {
            let shift = api.get_opt("web").await.expect("get trafficshift")?;
            (shift.spec.images.get("app").map(|i| i.0.as_str()) == Some(image)).then_some(shift)
        },
    )
    .await
}

fn annotate(image: &str) -> Patch<serde_json::Value> {
    Patch::Merge(json!({ "metadata": { "annotations": { IMAGE: image } } }))
}

#[tokio::test]
async fn annotated_deployment_gets_one_traffic_shift_and_a_new_image_updates_it() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client();
    let controller = tokio::spawn(reconcile::run(client.clone(), Some("default")));
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let shifts: Api<TrafficShift> = Api::default_namespaced(client.clone());

    let web = deployment("web", &[(ENABLED, "true"), (IMAGE, "web:v2")]);
    let web = deploys
        .create(&PostParams::default(), &web)
        .await
        .expect("create deployment");
    let first = shift_with_image(&shifts, "web:v2").await;
    assert_eq!(first.spec.deployment, "web");
    let owner = &first
        .metadata
        .owner_references
        .as_ref()
        .expect("owner reference")[0];
    assert_eq!(
        (owner.kind.as_str(), Some(&owner.uid)),
        ("Deployment", web.metadata.uid.as_ref())
    );

    // The same value again (a GitOps re-apply) changes nothing: same object, same resourceVersion.
    deploys
        .patch("web", &PatchParams::default(), &annotate("web:v2"))
        .await
        .expect("re-annotate");
    let ctx = Arc::new(Context {
        client: client.clone(),
    });
    let current = Arc::new(deploys.get("web").await.expect("get deployment"));
    reconcile::reconcile(current, ctx).await.expect("reconcile");
    let again = shifts.get("web").await.expect("get trafficshift");
    assert_eq!(
        again.metadata.resource_version,
        first.metadata.resource_version
    );
    assert_eq!(again.metadata.generation, Some(1));

    // A new value supersedes: the same TrafficShift, its spec updated.
    deploys
        .patch("web", &PatchParams::default(), &annotate("web:v3"))
        .await
        .expect("annotate v3");
    let updated = shift_with_image(&shifts, "web:v3").await;
    assert_eq!(updated.metadata.uid, first.metadata.uid);
    assert_eq!(updated.metadata.generation, Some(2));
    let all = shifts.list(&ListParams::default()).await.expect("list");
    assert_eq!(all.items.len(), 1, "one TrafficShift per Deployment");
    controller.abort();
}

#[tokio::test]
async fn bad_or_missing_annotations_create_nothing() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client();
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let shifts: Api<TrafficShift> = Api::default_namespaced(client.clone());
    let ctx = Arc::new(Context { client });

    let unmanaged = deploys
        .create(
            &PostParams::default(),
            &deployment("plain", &[(IMAGE, "web:v2")]),
        )
        .await;
    let result = reconcile::reconcile(Arc::new(unmanaged.expect("create")), ctx.clone()).await;
    assert!(result.is_ok(), "{result:?}");

    let typo = deployment(
        "typo",
        &[(ENABLED, "true"), ("crossfade.dev/image.api", "web:v2")],
    );
    let typo = deploys
        .create(&PostParams::default(), &typo)
        .await
        .expect("create");
    match reconcile::reconcile(Arc::new(typo), ctx).await {
        Err(ReconcileError::Trigger(e)) => {
            assert!(
                e.to_string()
                    .contains("annotation crossfade.dev/image.api: no container \"api\""),
                "{e}"
            )
        }
        other => panic!("expected a trigger error, got {other:?}"),
    }
    let all = shifts.list(&ListParams::default()).await.expect("list");
    assert!(all.items.is_empty(), "{:?}", all.items);
}
