//! `kubectl set image` on a managed Deployment: Crossfade reverts the template to the images it
//! recorded and rolls the new ones out through a preview; its own promotion patch is never taken
//! for someone else's.

use crossfade_controller::kube::command::PROMOTE;
use crossfade_controller::kube::crd::ConditionStatus;
use crossfade_controller::kube::shift::PROMOTED;
use crossfade_controller::kube::template::SERVING_IMAGES;
use crossfade_controller::kube::trigger::{ENABLED, IMAGE};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use super::cluster::Cluster;
use super::shift::{image, WAIT};
use crate::support::wait_until;

/// What `kubectl set image deploy/web app=IMAGE` sends: a strategic merge patch by container name.
async fn set_image(deploys: &Api<Deployment>, image: &str) {
    let patch = json!({ "spec": { "template": { "spec": { "containers": [{ "name": "app", "image": image }] } } } });
    deploys
        .patch("web", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .expect("set image");
}

fn annotation(d: &Deployment, key: &str) -> Option<String> {
    d.metadata.annotations.as_ref()?.get(key).cloned()
}

/// The notes of the `ImageChangeIntercepted` Events on Deployment `web`.
async fn intercepted(client: &kube::Client) -> Vec<String> {
    let api: Api<Event> = Api::default_namespaced(client.clone());
    let list = api.list(&ListParams::default()).await.expect("list events");
    list.items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ImageChangeIntercepted"))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Deployment"))
        .map(|e| e.note.unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn set_image_is_reverted_and_rolled_out_through_a_preview_and_a_promotion_is_not_reverted() {
    let Some(c) = Cluster::start(&["web", "web-green"]) else {
        return;
    };
    let ctl = c.controller();
    c.create_target(&[(ENABLED, "true")]).await;
    wait_until(WAIT, "the images recorded on first sight", || async {
        let d = c.deploys.get("web").await.ok()?;
        (annotation(&d, SERVING_IMAGES).as_deref() == Some(r#"{"app":"web:v1"}"#)).then_some(())
    })
    .await;

    set_image(&c.deploys, "web:v3").await;
    let reverted = wait_until(WAIT, "web back on web:v1 with image=web:v3", || async {
        let d = c.deploys.get("web").await.ok()?;
        (image(&d) == "web:v1" && annotation(&d, IMAGE).as_deref() == Some("web:v3")).then_some(d)
    })
    .await;
    assert_eq!(
        annotation(&reverted, SERVING_IMAGES).as_deref(),
        Some(r#"{"app":"web:v1"}"#)
    );
    let preview = wait_until(WAIT, "preview web-green", || async {
        c.deploys.get_opt("web-green").await.expect("get")
    })
    .await;
    assert_eq!(image(&preview), "web:v3");
    let shift = c.shifts.get("web").await.expect("trafficshift");
    assert_eq!(shift.spec.images["app"].0, "web:v3");

    // Promotion (by command, to skip the default steps): the target takes web:v3 with its record.
    let promote = json!({ "metadata": { "annotations": { PROMOTE: "p1" } } });
    c.deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(promote))
        .await
        .expect("promote");
    c.status_until("Promoted", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == PROMOTED && c.status == ConditionStatus::True)
    })
    .await;
    wait_until(WAIT, "web on web:v3, recorded", || async {
        let d = c.deploys.get("web").await.ok()?;
        let recorded = annotation(&d, SERVING_IMAGES);
        (image(&d) == "web:v3" && recorded.as_deref() == Some(r#"{"app":"web:v3"}"#)).then_some(())
    })
    .await;

    // Another set image is measured against the promoted images, not the first ones.
    set_image(&c.deploys, "web:v4").await;
    wait_until(WAIT, "web back on web:v3 with image=web:v4", || async {
        let d = c.deploys.get("web").await.ok()?;
        (image(&d) == "web:v3" && annotation(&d, IMAGE).as_deref() == Some("web:v4")).then_some(())
    })
    .await;
    let notes = wait_until(WAIT, "two ImageChangeIntercepted Events", || async {
        let notes = intercepted(&c.client).await;
        (notes.len() >= 2).then_some(notes)
    })
    .await;
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes[0].contains("app=web:v3 (serving web:v1)"),
        "{notes:?}"
    );
    assert!(
        notes[1].contains("app=web:v4 (serving web:v3)"),
        "{notes:?}"
    );
    ctl.abort();
}

/// Trial 10, K4: with `crossfade.dev/enabled=false`, a `kubectl set image` during a rollout is
/// not intercepted, and the promotion wrote the rollout's image over it without a word. It now
/// rolls back with a Warning `TargetChanged` naming both images, and the template keeps the
/// operator's image.
#[tokio::test]
async fn a_template_changed_under_an_unmanaged_rollout_is_not_overwritten_at_promotion() {
    let Some(c) = Cluster::start(&["web", "web-green"]) else {
        return;
    };
    c.create_target(&[(ENABLED, "false")]).await;
    c.create_shift(
        json!({ "steps": [{ "weight": 10, "hold": "60s" }, { "weight": 100, "hold": "300ms" }],
        "drainTimeout": "300ms", "analysis": { "minRequests": 5, "interval": "300ms" } }),
    )
    .await;
    let ctl = c.controller();
    c.status_until("step 1 at 10%", |s| {
        s.weights.as_ref().is_some_and(|w| w.preview.bp() == 1000)
    })
    .await;

    set_image(&c.deploys, "web:v8").await;
    let promote = json!({ "metadata": { "annotations": { PROMOTE: "p1" } } });
    c.deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(promote))
        .await
        .expect("promote");
    let rolled_back = c
        .status_until("RolledBack", |s| {
            s.phase == Some(crossfade_controller::kube::crd::Phase::RolledBack)
        })
        .await;
    assert_eq!(
        rolled_back.weights.map(|w| (w.active.bp(), w.preview.bp())),
        Some((10_000, 0))
    );
    let web = c.deploys.get("web").await.expect("target");
    assert_eq!(image(&web), "web:v8", "the operator's image stays");
    let changed = super::shift::notes(&c.client, "web", "TargetChanged").await;
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(
        changed[0],
        "deployment web's pod template was changed by another client during the rollout: \
         app=web:v8 (the rollout started from web:v1, this rollout promotes web:v2); \
         crossfade.dev/enabled is not \"true\", so promotion does not overwrite it; rolling back"
    );
    let events = super::shift::events(&c.client).await;
    assert!(
        events.iter().any(|e| e == "Warning TargetChanged"),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| e == "Normal Completed"),
        "{events:?}"
    );
    c.deployment_deleted("web-green").await;
    ctl.abort();
}

/// Trial 26: the preview edited by another client before promotion (`kubectl set image
/// deployment/web-green app=...`) was judged by the analysis and never noticed, and the
/// promotion gave the target the rollout's images, which no analysis had judged. It now rolls
/// back at once with a Warning `PreviewFailed` naming the container and both images; the target
/// keeps its images and the edited preview is deleted. The same for a preview deleted by hand.
#[tokio::test]
async fn a_preview_changed_or_deleted_by_another_client_rolls_back_before_promotion() {
    for deleted in [false, true] {
        let Some(c) = Cluster::start(&["web", "web-green"]) else {
            return;
        };
        c.create_target(&[]).await;
        c.create_shift(
            json!({ "steps": [{ "weight": 10, "hold": "60s" }, { "weight": 100, "hold": "300ms" }],
            "drainTimeout": "300ms", "analysis": { "minRequests": 5, "interval": "300ms" } }),
        )
        .await;
        let ctl = c.controller();
        c.status_until("step 1 at 10%", |s| {
            s.weights.as_ref().is_some_and(|w| w.preview.bp() == 1000)
        })
        .await;

        let why = if deleted {
            c.deploys
                .delete("web-green", &Default::default())
                .await
                .expect("delete the preview");
            "deployment web-green was deleted by another client during the rollout; its analysis \
             cannot go on, and promotion would give web images no analysis judged"
        } else {
            let patch = json!({ "spec": { "template": { "spec": { "containers": [{ "name": "app", "image": "web:v9" }] } } } });
            c.deploys
                .patch(
                    "web-green",
                    &PatchParams::default(),
                    &Patch::Strategic(patch),
                )
                .await
                .expect("set image on the preview");
            "deployment web-green's pod template was changed by another client during the \
             rollout: app=web:v9 (the rollout made it with web:v2); the analysis would judge \
             images that promotion does not give web"
        };
        // A promote right after: the rollout must not promote what it did not judge.
        let promote = json!({ "metadata": { "annotations": { PROMOTE: "p1" } } });
        c.deploys
            .patch("web", &PatchParams::default(), &Patch::Merge(promote))
            .await
            .expect("promote");
        let rolled_back = c
            .status_until("RolledBack", |s| {
                s.phase == Some(crossfade_controller::kube::crd::Phase::RolledBack)
            })
            .await;
        assert_eq!(
            rolled_back.weights.map(|w| (w.active.bp(), w.preview.bp())),
            Some((10_000, 0)),
            "deleted: {deleted}"
        );
        let web = c.deploys.get("web").await.expect("target");
        assert_eq!(image(&web), "web:v1", "the target is not promoted");
        let failed = super::shift::notes(&c.client, "web", "PreviewFailed").await;
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(failed[0].contains(why), "{}\nwanted: {why}", failed[0]);
        let events = super::shift::events(&c.client).await;
        for reason in ["Warning PreviewFailed", "Warning RolledBack"] {
            assert!(events.iter().any(|e| e == reason), "{events:?}");
        }
        assert!(!events.iter().any(|e| e == "Normal Promoted"), "{events:?}");
        c.deployment_deleted("web-green").await;
        ctl.abort();
    }
}
