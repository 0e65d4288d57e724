//! The annotation trigger end to end: the Deployment controller (`crossfade_controller::kube::
//! reconcile`) against the emulator, through kube-rs.

use std::sync::Arc;
use std::time::Duration;

use crossfade_controller::kube::crd::{RolloutPolicy, TrafficShift};
use crossfade_controller::kube::reconcile::{self, Context, ReconcileError};
use crossfade_controller::kube::trigger::{ENABLED, IMAGE, ROLLOUT};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;
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

/// `reason: note` of every Event about Deployment `name`.
async fn events_about(client: &kube::Client, name: &str) -> Vec<String> {
    let api: Api<Event> = Api::default_namespaced(client.clone());
    let events = api.list(&ListParams::default()).await.expect("list events");
    let about = |e: &Event| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name);
    let line = |e: &Event| {
        format!(
            "{}: {}",
            e.reason.clone().unwrap_or_default(),
            e.note.clone().unwrap_or_default()
        )
    };
    events.items.iter().filter(|e| about(e)).map(line).collect()
}

/// One reconcile of Deployment `web` as the API server has it now.
async fn reconcile_web(
    deploys: &Api<Deployment>,
    ctx: &Arc<Context>,
) -> Result<kube::runtime::controller::Action, ReconcileError> {
    let current = Arc::new(deploys.get("web").await.expect("get deployment"));
    reconcile::reconcile(current, ctx.clone()).await
}

fn annotate(image: &str) -> Patch<serde_json::Value> {
    Patch::Merge(json!({ "metadata": { "annotations": { IMAGE: image } } }))
}

#[tokio::test]
async fn annotated_deployment_gets_one_traffic_shift_and_a_new_image_updates_it() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client();
    let controller = tokio::spawn(reconcile::run(client.clone(), Some("default"), None));
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
    let ctx = Arc::new(Context::new(client.clone()));
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
    // The Event follows the apply: wait for it before stopping the controller.
    let v3 = "RolloutRequested: trafficshift web: app=web:v3";
    let events = wait_until(Duration::from_secs(10), v3, || async {
        let events = events_about(&client, "web").await;
        events.iter().any(|e| e == v3).then_some(events)
    })
    .await;
    controller.abort();
    for image in ["app=web:v2", "app=web:v3"] {
        let want = format!("RolloutRequested: trafficshift web: {image}");
        assert_eq!(
            events.iter().filter(|e| **e == want).count(),
            1,
            "{want} in {events:?}"
        );
    }
}

#[tokio::test]
async fn bad_or_missing_annotations_create_nothing() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client();
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let shifts: Api<TrafficShift> = Api::default_namespaced(client.clone());
    let ctx = Arc::new(Context::new(client.clone()));

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
    let events = events_about(&client, "typo").await;
    assert!(
        events.iter().any(|e| e.starts_with(
            "InvalidAnnotation: deployment default/typo: annotation crossfade.dev/image.api"
        )),
        "{events:?}"
    );
}

#[tokio::test]
async fn enabled_as_a_label_is_named_a_label_and_a_contradicting_annotation_is_refused() {
    // Trial 10, K15: a bad label was called an annotation, and label "true" with annotation
    // "false" was managed without a word.
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client();
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let shifts: Api<TrafficShift> = Api::default_namespaced(client.clone());
    let ctx = Arc::new(Context::new(client.clone()));
    let with_label = |name: &str, label: &str, annotations: &[(&str, &str)]| {
        let mut d = deployment(name, annotations);
        d.metadata.labels = Some([(ENABLED.to_owned(), label.to_owned())].into());
        d
    };
    let cases = [
        (
            with_label("maybe", "maybe", &[(IMAGE, "web:v2")]),
            "deployment default/maybe: label crossfade.dev/enabled: \"maybe\" is not \"true\" or \"false\"",
        ),
        (
            with_label("both", "true", &[(ENABLED, "false"), (IMAGE, "web:v2")]),
            "deployment default/both: annotation crossfade.dev/enabled: \"false\" contradicts label \
             crossfade.dev/enabled=\"true\"; remove one, or give both the same value",
        ),
    ];
    for (d, want) in cases {
        let name = d.metadata.name.clone().expect("name");
        let d = deploys
            .create(&PostParams::default(), &d)
            .await
            .expect("create");
        match reconcile::reconcile(Arc::new(d), ctx.clone()).await {
            Err(ReconcileError::Trigger(e)) => assert_eq!(e.to_string(), want),
            other => panic!("{name}: expected a trigger error, got {other:?}"),
        }
        let events = events_about(&client, &name).await;
        assert!(
            events.contains(&format!("InvalidAnnotation: {want}")),
            "{events:?}"
        );
    }
    let all = shifts.list(&ListParams::default()).await.expect("list");
    assert!(all.items.is_empty(), "{:?}", all.items);
}

#[tokio::test]
async fn annotating_a_preview_crossfade_made_starts_no_rollout_of_it() {
    // Trial 23: `kubectl annotate deployment/web-green crossfade.dev/enabled=true
    // crossfade.dev/image=...` made TrafficShift `web-green` and a preview `web-green-green` of
    // the preview, under the rollout that owns it.
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client();
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let shifts: Api<TrafficShift> = Api::default_namespaced(client.clone());
    let ctx = Arc::new(Context::new(client.clone()));
    let mut preview = deployment("web-green", &[(ENABLED, "true"), (IMAGE, "web:v9")]);
    preview.metadata.owner_references = Some(vec![serde_json::from_value(json!({
        "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift", "name": "web",
        "uid": "0b6c1a52-5a8e-4a57-9d1e-2f1d4c3b2a10", "controller": true
    }))
    .expect("owner reference")]);
    let preview = deploys
        .create(&PostParams::default(), &preview)
        .await
        .expect("create");
    let want = "deployment default/web-green: annotation crossfade.dev/enabled: this deployment \
                is the preview of trafficshift web, made and deleted by its rollout; annotate \
                the deployment that trafficshift rolls out (its spec.deployment) instead";
    match reconcile::reconcile(Arc::new(preview), ctx).await {
        Err(ReconcileError::Trigger(e)) => assert_eq!(e.to_string(), want),
        other => panic!("expected a trigger error, got {other:?}"),
    }
    let events = events_about(&client, "web-green").await;
    assert!(
        events.contains(&format!("InvalidAnnotation: {want}")),
        "{events:?}"
    );
    let all = shifts.list(&ListParams::default()).await.expect("list");
    assert!(all.items.is_empty(), "{:?}", all.items);
    // Not taken as managed either: its images are not recorded (no `kubectl set image` interception).
    let after = deploys.get("web-green").await.expect("get");
    let annotations = after.metadata.annotations.unwrap_or_default();
    assert!(
        !annotations.contains_key("crossfade.dev/serving-images"),
        "{annotations:?}"
    );
}

/// A TrafficShift the trigger made, whose policy was then edited into one that does not decode
/// (`spec.rollout.hold: 9000h`, which the schema's pattern lets in), takes the next image asked
/// for: the apply's answer is read untyped. Before, the apply was made but decoding its answer
/// failed (`Error deserializing response`), so the reconcile failed and was retried with backoff
/// for as long as the policy stayed so, and no `RolloutRequested` was published.
#[tokio::test]
async fn a_new_image_is_applied_to_a_trafficshift_whose_policy_does_not_decode() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client();
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let raw: Api<kube::api::DynamicObject> = Api::default_namespaced_with(
        client.clone(),
        &kube::api::ApiResource::erase::<TrafficShift>(&()),
    );
    let ctx = Arc::new(Context::new(client.clone()));
    let reconcile_until = |image: &'static str| {
        let (deploys, raw, ctx) = (deploys.clone(), raw.clone(), ctx.clone());
        async move {
            // The first sight of a managed Deployment records its images first (one reconcile).
            for _ in 0..3 {
                let current = Arc::new(deploys.get("web").await.expect("get deployment"));
                reconcile::reconcile(current, ctx.clone())
                    .await
                    .expect("reconcile");
                let shift = raw.get_opt("web").await.expect("get trafficshift");
                let asked = shift
                    .as_ref()
                    .and_then(|s| s.data.pointer("/spec/images/app"));
                if asked == Some(&json!(image)) {
                    return;
                }
            }
            panic!("trafficshift web never asked for {image}");
        }
    };
    deploys
        .create(
            &PostParams::default(),
            &deployment("web", &[(ENABLED, "true"), (IMAGE, "web:v2")]),
        )
        .await
        .expect("create deployment");
    reconcile_until("web:v2").await;
    let edit = json!({ "spec": { "rollout": { "hold": "9000h" } } });
    raw.patch("web", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("patch a policy that does not decode");
    deploys
        .patch("web", &PatchParams::default(), &annotate("web:v3"))
        .await
        .expect("annotate v3");
    reconcile_until("web:v3").await;
    let events = events_about(&client, "web").await;
    let v3 = "RolloutRequested: trafficshift web: app=web:v3";
    assert!(events.iter().any(|e| e == v3), "{events:?}");
}

/// Session 42: `crossfade.dev/rollout` chooses the policy of the TrafficShift the trigger makes; a
/// new policy is a new spec generation, and a policy that breaks a rule is refused naming its
/// field, the TrafficShift left as it was. Before, the trigger's TrafficShift always had the
/// default policy, and `crossfade.dev/rollout` was refused as an unknown annotation.
#[tokio::test]
async fn the_rollout_annotation_chooses_the_policy_and_a_bad_one_is_refused_naming_its_field() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client();
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let shifts: Api<TrafficShift> = Api::default_namespaced(client.clone());
    let ctx = Arc::new(Context::new(client.clone()));
    let reconcile_once = || reconcile_web(&deploys, &ctx);
    /// The TrafficShift's steps (basis points) and hold, once its policy has that hold.
    async fn policy_with_hold(
        shifts: &Api<TrafficShift>,
        hold: std::time::Duration,
    ) -> Option<(Vec<u32>, Option<i64>)> {
        let shift = shifts.get_opt("web").await.expect("get trafficshift")?;
        let config = shift.spec.rollout.to_config().expect("a valid policy");
        let steps = config.steps.iter().map(|s| s.weight.0).collect();
        (config.hold == hold).then_some((steps, shift.metadata.generation))
    }

    let policy = "{steps: [{weight: 10}, {weight: 100}], hold: 5s}";
    deploys
        .create(
            &PostParams::default(),
            &deployment(
                "web",
                &[(ENABLED, "true"), (IMAGE, "web:v2"), (ROLLOUT, policy)],
            ),
        )
        .await
        .expect("create deployment");
    let mut first = None;
    for _ in 0..3 {
        reconcile_once().await.expect("reconcile");
        first = policy_with_hold(&shifts, Duration::from_secs(5)).await;
        if first.is_some() {
            break;
        }
    }
    let (steps, generation) = first.expect("the annotated policy");
    assert_eq!(steps, [1000, 10000]);

    // Another policy, same image: a new spec generation with it.
    let edit = json!({ "metadata": { "annotations": { ROLLOUT: "{steps: [{weight: 20}, {weight: 60}, {weight: 100}], hold: 7s}" } } });
    deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("annotate a new policy");
    reconcile_once().await.expect("reconcile");
    let (steps, next) = policy_with_hold(&shifts, Duration::from_secs(7))
        .await
        .expect("the new policy");
    assert_eq!(steps, [2000, 6000, 10000]);
    assert_eq!(next, generation.map(|g| g + 1));

    // A policy that breaks a rule and has an unknown field: refused naming both fields (session
    // 43: the unknown field hid the rule), the TrafficShift unchanged.
    let bad = json!({ "metadata": { "annotations": { ROLLOUT: "{steps: [{weight: 50}, {weight: 20}, {weight: 100}], hold: 9s, holdd: 9s}" } } });
    deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(&bad))
        .await
        .expect("annotate a bad policy");
    match reconcile_once().await {
        Err(ReconcileError::Trigger(e)) => {
            let text = e.to_string();
            assert!(
                text.contains("annotation crossfade.dev/rollout: holdd: unknown field; "),
                "{text}"
            );
            assert!(
                text.contains(
                    "; annotation crossfade.dev/rollout: steps[1]: 20% is not above the previous step (50%)"
                ),
                "{text}"
            );
        }
        other => panic!("expected a trigger error, got {other:?}"),
    }
    let unchanged = policy_with_hold(&shifts, Duration::from_secs(7)).await;
    assert_eq!(
        unchanged.map(|(_, g)| g),
        Some(next),
        "the TrafficShift stays"
    );
    let events = events_about(&client, "web").await;
    assert!(
        events.iter().any(|e| e.starts_with(
            "InvalidAnnotation: deployment default/web: annotation crossfade.dev/rollout: holdd: \
             unknown field"
        ) && e.contains("annotation crossfade.dev/rollout: steps[1]: ")),
        "{events:?}"
    );
}

/// Session 43: removing `crossfade.dev/rollout` returns the TrafficShift's policy to the default,
/// as docs/kubernetes.md says (server-side apply removes the fields the trigger applied before);
/// the spec changes, so it is a new generation, as any new value of the annotations. Before, the
/// emulator's apply was a merge patch and kept the old policy, so this was not tested.
#[tokio::test]
async fn removing_the_rollout_annotation_returns_the_policy_to_the_default() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client();
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let shifts: Api<TrafficShift> = Api::default_namespaced(client.clone());
    let ctx = Arc::new(Context::new(client.clone()));
    let policy = "{steps: [{weight: 10}, {weight: 100}], hold: 5s, analysis: {maxErrorRate: 2%}}";
    let web = deployment(
        "web",
        &[(ENABLED, "true"), (IMAGE, "web:v2"), (ROLLOUT, policy)],
    );
    deploys
        .create(&PostParams::default(), &web)
        .await
        .expect("create deployment");
    let reconcile_once = || reconcile_web(&deploys, &ctx);
    // The first reconcile records the serving images on the Deployment; the next applies.
    let mut annotated = None;
    for _ in 0..3 {
        reconcile_once().await.expect("reconcile");
        annotated = shifts.get_opt("web").await.expect("get trafficshift");
        if annotated.is_some() {
            break;
        }
    }
    let annotated = annotated.expect("the trafficshift");
    assert_eq!(annotated.spec.rollout.steps.len(), 2, "{annotated:?}");

    // A merge patch with null removes it, as `kubectl annotate deployment/web
    // crossfade.dev/rollout-` does.
    let remove = json!({ "metadata": { "annotations": { ROLLOUT: null } } });
    deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(&remove))
        .await
        .expect("remove the annotation");
    reconcile_once().await.expect("reconcile");
    let shift = shifts.get("web").await.expect("get trafficshift");
    assert_eq!(shift.spec.rollout, RolloutPolicy::default(), "{shift:?}");
    assert_eq!(
        shift.metadata.generation,
        annotated.metadata.generation.map(|g| g + 1),
        "a new spec generation"
    );
    assert_eq!(shift.spec.images, annotated.spec.images, "the images stay");
}
