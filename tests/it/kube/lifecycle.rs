//! A TrafficShift's life around its target Deployment (trial 10): images the target already runs
//! start no rollout (K5), one re-created under its old name adopts the Services its predecessor
//! left (K5), a `spec.route` edit keeps the rollout where it is (K12), and a missing or deleted
//! target is said at once (K17).

use crossfade_controller::kube::crd::{ConditionStatus, Phase, TrafficShift, TrafficShiftStatus};
use crossfade_controller::kube::ops;
use crossfade_controller::kube::shift::PROGRESSING;
use crossfade_controller::kube::store::ShiftRecord;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, ResourceExt};
use serde_json::json;

use super::cluster::{Cluster, FakeProxies};
use super::shift::{
    aborted_as_invalid, at_step_one, condition, events, events_with, make_undecodable,
    not_progressing_for, notes, raw_shifts, raw_status_until, rollout_id, slow_policy, UNDECODABLE,
    WAIT,
};

/// TrafficShift `web` rolling container `app` of Deployment `web` out to `image`.
fn shift_to(image: &str) -> TrafficShift {
    serde_json::from_value(json!({
        "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift",
        "metadata": { "name": "web" },
        "spec": { "deployment": "web", "images": { "app": image }, "rollout": slow_policy() }
    }))
    .expect("valid trafficshift")
}

/// A cluster with the target Deployment `web` and another one, `web2` (both `web:v1`), the
/// kubelet stand-in marking the Deployments `available` available.
async fn with_web2(available: &[&str]) -> Option<Cluster> {
    let c = Cluster::start(available)?;
    c.create_target(&[]).await;
    c.deploys
        .create(
            &PostParams::default(),
            &super::objects::deployment("web2", &[]),
        )
        .await
        .expect("create deployment web2");
    Some(c)
}

#[tokio::test]
async fn a_trafficshift_for_images_the_target_already_runs_starts_no_rollout() {
    let Some(c) = Cluster::with_target().await else {
        return; // the target web runs web:v1
    };
    let ctl = c.controller();
    c.shifts
        .create(&PostParams::default(), &shift_to("web:v1"))
        .await
        .expect("create trafficshift");
    let shown = c
        .status_until("Progressing=False UpToDate", |s| {
            not_progressing_for(s, "UpToDate")
        })
        .await;
    assert_eq!(
        shown.message.as_deref(),
        Some("deployment web already runs app=web:v1: nothing to roll out")
    );
    assert_eq!(shown.phase, None, "no rollout: {shown:?}");
    let services: Api<Service> = Api::default_namespaced(c.client.clone());
    assert!(services.get_opt("web-green").await.expect("get").is_none());
    assert!(c.deploys.get_opt("web-green").await.expect("get").is_none());
    // A command would reach no rollout: the CLI refuses it rather than wait for a record.
    let sent = ops::send(&c.client, "default", "web", ops::Verb::Promote).await;
    assert_eq!(
        sent.expect_err("refused").to_string(),
        "trafficshift default/web does not run: deployment web already runs app=web:v1: \
         nothing to roll out; nothing was written"
    );

    // A new image is rolled out as usual.
    let patch = json!({ "spec": { "images": { "app": "web:v2" } } });
    c.shifts
        .patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("patch images");
    c.status_until("step 1 at 10%", at_step_one).await;
    let events = events(&c.client).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| *e == "Normal Provisioning")
            .count(),
        1,
        "one rollout, of web:v2: {events:?}"
    );
    ctl.abort();
}

#[tokio::test]
async fn a_trafficshift_recreated_under_its_old_name_adopts_the_services_its_predecessor_left() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    // What a deleted TrafficShift `web` leaves until garbage collection (which the emulator
    // does not run; on a cluster it runs asynchronously): its Services, owned by its old uid.
    let services: Api<Service> = Api::default_namespaced(c.client.clone());
    for name in ["web-blue", "web-green"] {
        let service: Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": name, "ownerReferences": [{
                "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift", "name": "web",
                "uid": "0b5e7e1e-0000-4000-8000-000000000001", "controller": true,
                "blockOwnerDeletion": true }] },
            "spec": { "clusterIP": "None", "selector": { "app": "web" } }
        }))
        .expect("valid service");
        services
            .create(&PostParams::default(), &service)
            .await
            .expect("create service");
    }
    let (ctl, _) = c.rollout_at_step_one().await;
    let shift = c.shifts.get("web").await.expect("get trafficshift");
    for name in ["web-blue", "web-green"] {
        let service = services.get(name).await.expect("get service");
        let owners: Vec<_> = service
            .owner_references()
            .iter()
            .map(|r| (r.name.clone(), r.uid.clone(), r.controller))
            .collect();
        assert_eq!(
            owners,
            [("web".to_owned(), shift.uid().expect("uid"), Some(true))],
            "{name}"
        );
    }
    let events = events(&c.client).await;
    assert!(
        !events.iter().any(|e| e == "Warning PreviewFailed"),
        "{events:?}"
    );
    ctl.abort();
}

#[tokio::test]
async fn editing_only_the_route_keeps_the_rollout_where_it_is() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let (ctl, before) = c.rollout_at_step_one().await;
    let id = |shift: &TrafficShift| ShiftRecord::from_status(shift).map(|r| r.rollout.id);
    let first = id(&c.shifts.get("web").await.expect("get"));
    assert_eq!(first, Some(1));

    let patch = json!({ "spec": { "route": { "port": 8080, "pathPrefix": "/shop" } } });
    c.shifts
        .patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("patch route");
    let after = c
        .status_until("observedGeneration 2", |s| s.observed_generation == Some(2))
        .await;
    assert!(at_step_one(&after), "{after:?}");
    assert_eq!(
        after.weights.as_ref().map(|w| w.generation),
        before.weights.as_ref().map(|w| w.generation),
        "the same weights, not published again"
    );
    assert_eq!(id(&c.shifts.get("web").await.expect("get")), first);
    assert_eq!(condition(&after, PROGRESSING).0, ConditionStatus::True);
    let events = events(&c.client).await;
    for reason in ["Normal Superseded", "Normal Aborting"] {
        assert!(!events.iter().any(|e| e == reason), "{events:?}");
    }

    // An image change still supersedes the rollout.
    let patch = json!({ "spec": { "images": { "app": "web:v3" } } });
    c.shifts
        .patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("patch images");
    events_with(&c.client, &["Normal Superseded"]).await;
    ctl.abort();
}

/// Trial 34: a spec edited into an invalid one mid-rollout (a real API server lets in steps that
/// do not increase, and keeps the schema's fields only) left the rollout standing at its weights
/// for ever: no analysis, no progress deadline, no operator command acted on (`crossfade abort
/// --kube` timed out asking whether a controller runs). It is superseded as by any new spec:
/// traffic back to blue, the preview deleted, a `Superseded` Event naming the problem, then
/// `InvalidSpec`; a fixed spec starts a new rollout. Both kinds of invalid spec that decode:
/// rules across fields, and a field the schema does not have (an API server without the schema
/// keeps it). One that does not decode: `a_spec_made_undecodable_mid_rollout_is_superseded_from_its_record`.
#[tokio::test]
async fn a_spec_made_invalid_mid_rollout_supersedes_it_and_none_starts_until_fixed() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let (ctl, step1) = c.rollout_at_step_one().await;
    let mut id = rollout_id(&step1);
    let invalid_edits = [
        (
            json!({ "spec": { "rollout": { "steps": [{ "weight": 50 }, { "weight": 20 }, { "weight": 100 }] } } }),
            "spec.rollout.steps[1]: 20% is not above the previous step (50%)",
        ),
        (
            json!({ "spec": { "rollout": { "steps": slow_policy()["steps"], "holdd": "1m" } } }),
            "spec.rollout.holdd: unknown field",
        ),
    ];
    // Read raw, as `kubectl` does: the typed API cannot read a policy that does not decode.
    let raw = raw_shifts(&c.client);
    for (rollout, (edit, problem)) in (1..).zip(invalid_edits) {
        assert_eq!(id, Some(rollout));
        raw.patch("web", &PatchParams::default(), &Patch::Merge(&edit))
            .await
            .expect("patch an invalid spec");
        let shown = aborted_as_invalid(&c.client).await;
        assert!(
            shown
                .message
                .as_deref()
                .is_some_and(|m| m.contains(problem)),
            "{shown:?}"
        );
        assert_eq!(
            shown.weights.as_ref().map(|w| w.preview.bp()),
            Some(0),
            "all traffic back to blue: {shown:?}"
        );
        c.deployment_deleted("web-green").await;
        let superseded = notes(&c.client, "web", "Superseded").await;
        assert!(
            superseded
                .last()
                .is_some_and(|n| n.contains("but is invalid: ") && n.contains(problem)),
            "{superseded:?}"
        );
        // Fixed (the policy the aborted rollout had): a new rollout starts, not the old one
        // shown as ended.
        let steps = slow_policy()["steps"].clone();
        let fix = json!({ "spec": { "rollout": { "steps": steps, "hold": null, "holdd": null } } });
        raw.patch("web", &PatchParams::default(), &Patch::Merge(&fix))
            .await
            .expect("patch the spec back");
        (_, id) = raw_status_until(&c.client, "step 1 at 10%", at_step_one).await;
    }
    assert_eq!(id, Some(3));
    ctl.abort();
}

/// Session 34's leftover: a policy the schema's pattern lets in but that does not decode
/// (`hold: 9000h`, over the 366-day bound) edited in mid-rollout. Its status writes decoded the
/// API server's answer as a TrafficShift and failed, so the rollout stood at 10% with no
/// analysis, no progress deadline and no command acted on until the field was fixed. Now it is
/// superseded from its record as by a spec that decodes but is invalid: aborted (traffic back to
/// blue, the preview deleted), a `Superseded` Event naming the field, `InvalidSpec` shown; a fixed
/// spec starts a new rollout.
#[tokio::test]
async fn a_spec_made_undecodable_mid_rollout_is_superseded_from_its_record() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let (ctl, step1) = c.rollout_at_step_one().await;
    assert_eq!(rollout_id(&step1), Some(1));
    make_undecodable(&c.client).await;
    let problem = UNDECODABLE;
    let shown = aborted_as_invalid(&c.client).await;
    assert!(
        shown
            .message
            .as_deref()
            .is_some_and(|m| m.contains(problem)),
        "{shown:?}"
    );
    assert_eq!(
        shown.weights.as_ref().map(|w| w.preview.bp()),
        Some(0),
        "all traffic back to blue: {shown:?}"
    );
    c.deployment_deleted("web-green").await;
    let superseded = notes(&c.client, "web", "Superseded").await;
    assert!(
        superseded
            .last()
            .is_some_and(|n| n.contains("but is invalid: ") && n.contains(problem)),
        "{superseded:?}"
    );
    let fix = json!({ "spec": { "rollout": { "hold": null } } });
    raw_shifts(&c.client)
        .patch("web", &PatchParams::default(), &Patch::Merge(&fix))
        .await
        .expect("patch the spec back");
    let (_, id) = raw_status_until(&c.client, "step 1 at 10% again", at_step_one).await;
    assert_eq!(id, Some(2));
    ctl.abort();
}

/// The same edit after promotion: the rollout finishes from its record (the target takes the
/// rollout's images, the preview is deleted, `Completed`), then `InvalidSpec` is shown. The
/// target is held unavailable until the edit is in, so that the edit lands while the role swap
/// waits for it. Before, the status writes failed and the rollout stood at `Promoted`.
#[tokio::test]
async fn a_spec_made_undecodable_after_promotion_lets_the_rollout_finish_from_its_record() {
    let Some(c) = Cluster::start(&["web-green"]) else {
        return;
    };
    c.create_target(&[]).await;
    c.create_shift(fast_policy()).await;
    let ctl = c.controller();
    raw_status_until(&c.client, "Promoted", |s| s.phase == Some(Phase::Promoted)).await;
    make_undecodable(&c.client).await;
    super::cluster::promoted_target(&c.deploys).await;
    let _kubelet = super::cluster::Kubelet::start(c.client.clone(), &["web"]);
    let (shown, _) = raw_status_until(&c.client, "Completed, then InvalidSpec", |s| {
        s.phase == Some(Phase::Completed) && not_progressing_for(s, "InvalidSpec")
    })
    .await;
    assert!(
        shown
            .message
            .as_deref()
            .is_some_and(|m| m.contains("spec.rollout.hold: ")),
        "{shown:?}"
    );
    c.deployment_deleted("web-green").await;
    ctl.abort();
}

/// A TrafficShift that does not decode, deleted mid-rollout: its rollout ends from the record
/// (traffic back to blue, the preview deleted) and the finalizer goes. Before, the finalizer
/// stayed for ever (until the object was fixed), since ending the rollout needed the spec.
#[tokio::test]
async fn a_trafficshift_that_does_not_decode_deleted_mid_rollout_ends_it_and_goes() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let (ctl, _) = c.rollout_at_step_one().await;
    make_undecodable(&c.client).await;
    let raw = raw_shifts(&c.client);
    raw.delete("web", &DeleteParams::default())
        .await
        .expect("delete trafficshift");
    super::cluster::until_deleted(&raw, "web").await;
    c.deployment_deleted("web-green").await;
    let target = c.deploys.get("web").await.expect("target");
    let image = target
        .spec
        .and_then(|s| s.template.spec)
        .map(|s| s.containers[0].image.clone());
    assert_eq!(image, Some(Some("web:v1".to_owned())), "never promoted");
    ctl.abort();
}

/// `spec.deployment` edited to another Deployment mid-rollout supersedes the rollout as an
/// edit of `spec.images` does: it is aborted into the Deployment it started on (whose template
/// is left as it was), then a new rollout of the new Deployment starts, its Service selecting
/// the new Deployment's pods. Before, the edit was taken as the same rollout (only images and
/// policy were compared): the rollout carried on, read the new Deployment as its target, found
/// its template not the one the preview was made from and rolled back naming the wrong
/// Deployment, and stayed rolled back; a promotion would have patched the new Deployment while
/// the Service still sent the traffic to the old one.
#[tokio::test]
async fn a_deployment_changed_mid_rollout_supersedes_it_and_the_next_rollout_targets_the_new_one() {
    let Some(c) = with_web2(&["web", "web2", "web-green"]).await else {
        return;
    };
    let (ctl, _) = c.rollout_at_step_one().await;
    let edit = json!({ "spec": { "deployment": "web2" } });
    c.shifts
        .patch("web", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("patch spec.deployment");
    let started = c
        .status_until("rollout 2 at step 1", |s| {
            at_step_one(s)
                && s.rollout_state
                    .as_ref()
                    .is_some_and(|r| r["rollout"]["id"] == 2)
        })
        .await;
    let record: ShiftRecord =
        serde_json::from_value(started.rollout_state.expect("record")).expect("record decodes");
    assert_eq!(record.deployment.as_deref(), Some("web2"));
    let superseded = notes(&c.client, "web", "Superseded").await;
    assert!(
        superseded
            .iter()
            .any(|n| n.contains("spec generation 2 supersedes the rollout of generation 1")),
        "{superseded:?}"
    );
    let events = events(&c.client).await;
    assert!(
        !events.iter().any(|e| e == "Warning TargetChanged"),
        "{events:?}"
    );
    let services: Api<Service> = Api::default_namespaced(c.client.clone());
    let blue = services.get("web-blue").await.expect("service web-blue");
    let selector = blue.spec.and_then(|s| s.selector).unwrap_or_default();
    assert_eq!(selector.get("app").map(String::as_str), Some("web2"));
    let old = c.deploys.get("web").await.expect("deployment web");
    let image = old
        .spec
        .and_then(|s| s.template.spec)
        .map(|s| s.containers[0].image.clone());
    assert_eq!(image, Some(Some("web:v1".to_owned())), "web left as it was");
    ctl.abort();
}

/// `spec.deployment` edited to another Deployment after promotion: the rollout finishes on the
/// Deployment it started on (which takes the new images), then a rollout of the new Deployment
/// runs. The first target is held unavailable until the edit is in, so that the edit lands while
/// the role swap waits for it.
#[tokio::test]
async fn a_deployment_changed_after_promotion_finishes_on_the_old_one_then_rolls_out_the_new_one() {
    let Some(c) = with_web2(&["web2", "web-green"]).await else {
        return;
    };
    c.create_shift(fast_policy()).await;
    let ctl = c.controller();
    c.status_until("Promoted", |s| s.phase == Some(Phase::Promoted))
        .await;
    super::cluster::promoted_target(&c.deploys).await;
    let edit = json!({ "spec": { "deployment": "web2" } });
    c.shifts
        .patch("web", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("patch spec.deployment");
    let _kubelet = super::cluster::Kubelet::start(c.client.clone(), &["web"]);
    c.status_until("rollout 2 completed", |s| {
        s.phase == Some(Phase::Completed)
            && s.rollout_state
                .as_ref()
                .is_some_and(|r| r["rollout"]["id"] == 2)
    })
    .await;
    for name in ["web", "web2"] {
        let d = c.deploys.get(name).await.expect("deployment");
        let image = d
            .spec
            .and_then(|s| s.template.spec)
            .map(|s| s.containers[0].image.clone());
        assert_eq!(image, Some(Some("web:v2".to_owned())), "{name} promoted");
    }
    ctl.abort();
}

#[tokio::test]
async fn a_trafficshift_applied_before_its_deployment_waits_for_it_then_rolls_out() {
    let Some(c) = Cluster::start(&["web", "web-green"]) else {
        return;
    };
    let ctl = c.controller();
    c.shifts
        .create(&PostParams::default(), &shift_to("web:v2"))
        .await
        .expect("create trafficshift");
    let waiting = c
        .status_until("Progressing=False DeploymentMissing", |s| {
            not_progressing_for(s, "DeploymentMissing")
        })
        .await;
    assert_eq!(
        waiting.message.as_deref(),
        Some("spec.deployment: deployment web does not exist; the rollout starts once it does")
    );
    assert_eq!(waiting.phase, None, "no rollout yet: {waiting:?}");
    events_with(&c.client, &["Warning DeploymentMissing"]).await;

    c.create_target(&[]).await;
    c.status_until("step 1 at 10%", at_step_one).await;
    let events = events(&c.client).await;
    for reason in ["Warning PreviewFailed", "Warning RolledBack"] {
        assert!(!events.iter().any(|e| e == reason), "{events:?}");
    }
    ctl.abort();
}

#[tokio::test]
async fn a_target_deleted_mid_rollout_rolls_it_back_at_once_naming_the_deployment() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let (ctl, _) = c.rollout_at_step_one().await;

    c.deploys
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete the target");
    // Well before the progress deadline (2m) that used to end it.
    let done = c
        .status_until("RolledBack", |s| s.phase == Some(Phase::RolledBack))
        .await;
    let why = "spec.deployment: deployment web was deleted during the rollout";
    let message = done.message.clone().unwrap_or_default();
    assert!(message.contains(why), "{message}");
    let notes = notes(&c.client, "web", "TargetChanged").await;
    assert!(notes.iter().any(|n| n.contains(why)), "{notes:?}");
    c.deployment_deleted("web-green").await;
    ctl.abort();
}

/// Kubetry30's design question: a change of the target's template other than its images
/// (`kubectl set env`) during a rollout is rolled out by Kubernetes on the target at once and is
/// not in the preview, so promotion would give the target a combination no analysis judged. The
/// rollout rolls back naming what changed; a `kubectl rollout restart` (a template annotation)
/// before it is not a change.
#[tokio::test]
async fn a_target_template_changed_other_than_in_images_rolls_the_rollout_back() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let (ctl, _) = c.rollout_at_step_one().await;

    // Read, change, replace; again on a conflict with the controller's own writes (409).
    let edit = |change: fn(&mut k8s_openapi::api::apps::v1::Deployment)| {
        let deploys = c.deploys.clone();
        async move {
            for _ in 0..20 {
                let mut web = deploys.get("web").await.expect("target");
                change(&mut web);
                match deploys.replace("web", &PostParams::default(), &web).await {
                    Ok(_) => return,
                    Err(kube::Error::Api(s)) if s.code == 409 => continue,
                    Err(e) => panic!("replace the target: {e}"),
                }
            }
            panic!("replace the target: a conflict 20 times in a row");
        }
    };
    edit(|web| {
        let meta = web
            .spec
            .as_mut()
            .unwrap()
            .template
            .metadata
            .get_or_insert_with(Default::default);
        meta.annotations
            .get_or_insert_with(Default::default)
            .insert(
                "kubectl.kubernetes.io/restartedAt".into(),
                "2026-12-04T21:00:00Z".into(),
            );
    })
    .await;
    edit(|web| {
        let pod = web.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
        pod.containers[0].env = Some(vec![k8s_openapi::api::core::v1::EnvVar {
            name: "FEATURE".into(),
            value: Some("on".into()),
            value_from: None,
        }]);
    })
    .await;
    let done = c
        .status_until("RolledBack", |s| s.phase == Some(Phase::RolledBack))
        .await;
    let message = done.message.clone().unwrap_or_default();
    let why = "deployment web's pod template was changed by another client during the rollout \
               other than in its images: container app; the preview web-green was made from the \
               template before";
    assert!(message.contains(why), "{message}");
    let notes = notes(&c.client, "web", "TargetChanged").await;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains(why), "{notes:?}");
    c.deployment_deleted("web-green").await;

    // crossfade.dev/retry: the same images again, the preview made from the new template, and
    // that template recorded as the one it was made from (so it is not rolled back again).
    let retry = json!({ "metadata": { "annotations": {
        crossfade_controller::kube::command::RETRY: "r1" } } });
    c.deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(retry))
        .await
        .expect("annotate the target");
    c.status_until("retried, step 1 at 10%", at_step_one).await;
    let record = ShiftRecord::from_status(&c.shifts.get("web").await.expect("get"))
        .expect("a rollout record");
    assert_eq!(record.rollout.id, 2);
    let target = c.deploys.get("web").await.expect("target");
    assert_eq!(
        record.started_template,
        crossfade_controller::kube::template::template_parts(&target)
    );
    let preview = c.deploys.get("web-green").await.expect("the preview again");
    let env = preview.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap_or_default();
    assert!(
        env.iter()
            .any(|e| e.name == "FEATURE" && e.value.as_deref() == Some("on")),
        "{env:?}"
    );
    ctl.abort();
}

#[tokio::test]
async fn status_of_a_missing_trafficshift_says_why_its_deployment_made_none() {
    // Trial 10, K14: `crossfade status --kube api` said only "not found" when the trigger had
    // refused the annotations (the reason was in an Event on the Deployment).
    let Some(c) = Cluster::start(&[]) else {
        return;
    };
    use crossfade_controller::kube::ops::status_text;
    use crossfade_controller::kube::trigger::{ENABLED, IMAGE};
    let create = |name: &'static str, annotations: &'static [(&'static str, &'static str)]| {
        let deploys = c.deploys.clone();
        async move {
            let d = super::objects::deployment(name, annotations);
            deploys
                .create(&PostParams::default(), &d)
                .await
                .expect("create deployment");
        }
    };
    create("api", &[(ENABLED, "yes"), (IMAGE, "web:v2")]).await;
    create("idle", &[(IMAGE, "web:v2")]).await;
    create("web", &[(ENABLED, "true"), (IMAGE, "web:v2")]).await;
    create("plain", &[]).await;
    let error = |name: &'static str| {
        let client = c.client.clone();
        async move {
            status_text(&client, "default", name)
                .await
                .expect_err("no trafficshift")
                .to_string()
        }
    };
    assert_eq!(
        error("api").await,
        "trafficshift default/api not found: the crossfade.dev annotations of deployment \
         default/api are refused, so none is made: annotation crossfade.dev/enabled: \"yes\" is \
         not \"true\" or \"false\" (also a Warning Event InvalidAnnotation on the deployment)"
    );
    assert_eq!(
        error("idle").await,
        "trafficshift default/idle not found: deployment default/idle has crossfade.dev/image \
         annotations but is not managed (crossfade.dev/enabled is not \"true\"), so none is made"
    );
    assert_eq!(
        error("web").await,
        "trafficshift default/web not found, although deployment default/web asks for one \
         (app=web:v2); is `crossfade controller --kube` running and watching namespace default?"
    );
    assert_eq!(
        error("plain").await,
        "trafficshift default/plain not found (kubectl get trafficshifts -n default)"
    );
    assert_eq!(
        error("nosuch").await,
        "trafficshift default/nosuch not found (kubectl get trafficshifts -n default)"
    );
}

/// `spec.deployment` edited mid-rollout to a Deployment that does not exist (a typo): the rollout
/// is superseded (traffic back to the Deployment it started on), and no new rollout starts until
/// the named one exists: `DeploymentMissing` is shown, as for a new TrafficShift; creating it
/// starts rollout 2. Before, a rollout 2 of the missing Deployment started at once and was rolled
/// back ("preview green failed: spec.deployment: deployment ghost does not exist"), and none
/// started once it existed.
#[tokio::test]
async fn a_deployment_changed_mid_rollout_to_one_that_does_not_exist_aborts_and_waits_for_it() {
    let Some(c) = Cluster::start(&["web", "ghost", "web-green"]) else {
        return;
    };
    c.create_target(&[]).await;
    let (ctl, _) = c.rollout_at_step_one().await;
    let edit = json!({ "spec": { "deployment": "ghost" } });
    c.shifts
        .patch("web", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("patch spec.deployment");
    let waiting = c
        .status_until("Progressing=False DeploymentMissing", |s| {
            not_progressing_for(s, "DeploymentMissing")
        })
        .await;
    assert_eq!(
        waiting.message.as_deref(),
        Some("spec.deployment: deployment ghost does not exist; the rollout starts once it does"),
        "{waiting:?}"
    );
    assert_eq!(
        waiting.weights.as_ref().map(|w| w.preview.bp()),
        Some(0),
        "all traffic back to web: {waiting:?}"
    );
    let record: ShiftRecord =
        serde_json::from_value(waiting.rollout_state.expect("record")).expect("record decodes");
    assert_eq!(
        record.rollout.id, 1,
        "no rollout of ghost started: {record:?}"
    );
    let services: Api<Service> = Api::default_namespaced(c.client.clone());
    let blue = services.get("web-blue").await.expect("service web-blue");
    let selector = blue.spec.and_then(|s| s.selector).unwrap_or_default();
    assert_eq!(selector.get("app").map(String::as_str), Some("web"));
    c.deploys
        .create(
            &PostParams::default(),
            &super::objects::deployment("ghost", &[]),
        )
        .await
        .expect("create deployment ghost");
    let started = c
        .status_until("rollout 2 at step 1", |s| {
            at_step_one(s)
                && s.rollout_state
                    .as_ref()
                    .is_some_and(|r| r["rollout"]["id"] == 2)
        })
        .await;
    let record: ShiftRecord =
        serde_json::from_value(started.rollout_state.expect("record")).expect("record decodes");
    assert_eq!(record.deployment.as_deref(), Some("ghost"));
    ctl.abort();
}

/// The images edited mid-rollout back to the ones the target runs (an edit undone): the rollout
/// is superseded (traffic back to `web`) and no rollout to those images starts: `UpToDate`, as for
/// a new TrafficShift asking for what its target runs. Before, a rollout 2 to `web:v1` started at
/// once and ran its steps and analysis for nothing new.
#[tokio::test]
async fn images_edited_back_to_the_targets_mid_rollout_abort_it_and_start_no_other() {
    let Some(c) = Cluster::with_target().await else {
        return; // the target web runs web:v1
    };
    let (ctl, _) = c.rollout_at_step_one().await;
    let edit = json!({ "spec": { "images": { "app": "web:v1" } } });
    c.shifts
        .patch("web", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("patch spec.images");
    let shown = c
        .status_until("Progressing=False UpToDate", |s| {
            not_progressing_for(s, "UpToDate")
        })
        .await;
    assert_eq!(
        shown.message.as_deref(),
        Some("deployment web already runs app=web:v1: nothing to roll out"),
        "{shown:?}"
    );
    assert_eq!(
        shown.weights.as_ref().map(|w| w.preview.bp()),
        Some(0),
        "all traffic back to web: {shown:?}"
    );
    let record: ShiftRecord =
        serde_json::from_value(shown.rollout_state.expect("record")).expect("record decodes");
    assert_eq!(record.rollout.id, 1, "no rollout 2 started: {record:?}");
    ctl.abort();
}

/// A controller restarted onto a record of an older version (no `deployment`, no
/// `unreadyGraceMs` in `status.rolloutState`) whose TrafficShift was meanwhile edited to name
/// another Deployment and a policy that does not decode: the rollout is superseded from the
/// record into the Deployment it started on (its promotion words name it), not the new one.
#[tokio::test]
async fn a_restarted_controller_supersedes_an_older_record_into_the_deployment_it_started_on() {
    let Some(c) = with_web2(&["web", "web2", "web-green"]).await else {
        return;
    };
    let (first, _) = c.rollout_at_step_one().await;
    first.abort();
    let _ = first.await;
    let raw = raw_shifts(&c.client);
    let older =
        json!({ "status": { "rolloutState": { "deployment": null, "unreadyGraceMs": null } } });
    raw.patch_status("web", &PatchParams::default(), &Patch::Merge(&older))
        .await
        .expect("strip the record's new fields");
    let edit = json!({ "spec": { "deployment": "web2", "rollout": { "hold": "9000h" } } });
    raw.patch("web", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("patch a spec that does not decode");
    let second = c.controller();
    let shown = aborted_as_invalid(&c.client).await;
    assert_eq!(
        shown.weights.as_ref().map(|w| w.preview.bp()),
        Some(0),
        "all traffic back to web: {shown:?}"
    );
    let record: ShiftRecord =
        serde_json::from_value(shown.rollout_state.expect("record")).expect("record decodes");
    assert_eq!(record.deployment.as_deref(), Some("web"), "{record:?}");
    let services: Api<Service> = Api::default_namespaced(c.client.clone());
    let blue = services.get("web-blue").await.expect("service web-blue");
    let selector = blue.spec.and_then(|s| s.selector).unwrap_or_default();
    assert_eq!(selector.get("app").map(String::as_str), Some("web"));
    for name in ["web", "web2"] {
        let d = c.deploys.get(name).await.expect("deployment");
        let image = d
            .spec
            .and_then(|s| s.template.spec)
            .map(|s| s.containers[0].image.clone());
        assert_eq!(image, Some(Some("web:v1".to_owned())), "{name} untouched");
    }
    c.deployment_deleted("web-green").await;
    second.abort();
}

/// TrafficShift `web` rolling container `app` of Deployment `target` out to `web:v2`, promoted
/// after one short step.
fn fast_shift_of(target: &str) -> TrafficShift {
    serde_json::from_value(json!({
        "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift",
        "metadata": { "name": "web" },
        "spec": { "deployment": target, "images": { "app": "web:v2" }, "rollout": {
            "steps": [{ "weight": 100, "hold": "300ms" }], "drainTimeout": "300ms",
            "analysis": { "minRequests": 5, "interval": "300ms" } } }
    }))
    .expect("valid trafficshift")
}

/// kube36 (left by kubeedit35 and check35): after `spec.deployment` was edited from `api` to
/// `api2` during the role swap, the rollout still finishes on `api`, its record's target, and
/// waits for `api` to roll out the new images. The Deployment watch woke a TrafficShift only for
/// the Deployment its live `spec.deployment` names (or of its own name), so `api` rolling out was
/// seen only at the next poll (2 s). Here the poll is 10 minutes, longer than the test waits: the
/// rollout finishes on `api` and the next one starts on `api2` only if `api`'s change wakes it.
#[tokio::test]
async fn the_deployment_a_rollout_acts_on_wakes_it_after_spec_deployment_names_another() {
    let Some(c) = Cluster::start(&["web-green"]) else {
        return;
    };
    for name in ["api", "api2"] {
        let made = c
            .deploys
            .create(
                &PostParams::default(),
                &super::objects::deployment(name, &[]),
            )
            .await
            .expect("create deployment");
        super::cluster::mark_available(&c.deploys, &made).await;
    }
    c.shifts
        .create(&PostParams::default(), &fast_shift_of("api"))
        .await
        .expect("create trafficshift");
    let ctl = c.controller_polling(std::time::Duration::from_secs(600));
    c.status_until("Promoted", |s| s.phase == Some(Phase::Promoted))
        .await;
    let promoted = super::cluster::promoted(&c.deploys, "api").await;
    let edit = json!({ "spec": { "deployment": "api2" } });
    c.shifts
        .patch("web", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("patch spec.deployment");
    // The edit makes no status write while the rollout finishes (nothing to see it by): time for
    // the controller's cache to take it, so that `api`'s change below is matched by the record
    // alone. Too short would only let the test pass without the fix, never fail with it.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    // `api` rolls out the promoted images: the only change the rollout waits for.
    super::cluster::mark_available(&c.deploys, &promoted).await;
    let started = c
        .status_until("rollout 2 of api2 started", |s| {
            second_rollout_of(s, "api2")
        })
        .await;
    first_completed_on(&c, &started, "api").await;
    ctl.abort();
}

/// Rollout 1 of TrafficShift `web` at step 1 on Deployment `web`, in a cluster with `web2` too
/// ([`with_web2`]); then, the controller stopped, its record made one of a version before the
/// promotion words (what a controller of that version wrote before its first reconcile by a
/// newer one), and `spec.deployment` edited to `web2` ([`older_record_then_spec_naming_web2`]).
/// `None` when the emulator is not installed.
pub(super) async fn an_older_record_whose_spec_names_another_deployment() -> Option<Cluster> {
    let c = with_web2(&["web", "web2", "web-green"]).await?;
    let (first, _) = c.rollout_at_step_one().await;
    first.abort();
    let _ = first.await;
    older_record_then_spec_naming_web2(&c).await;
    Some(c)
}

/// Rollout 2 running on `web2` (its record names it, Service `web-blue` selects its pods),
/// rollout 1 having been superseded and aborted into `web`, whose template was left as it was.
async fn superseded_into_web_then_rolled_out_on_web2(c: &Cluster) {
    let started = c
        .status_until("rollout 2 of web2 at step 1", |s| {
            at_step_one(s) && second_rollout_of(s, "web2")
        })
        .await;
    assert_eq!(started.observed_generation, Some(2), "{started:?}");
    let aborted = notes(&c.client, "web", "Aborting").await;
    assert!(
        aborted
            .iter()
            .any(|n| n.contains("superseded by spec generation 2")),
        "{aborted:?}"
    );
    never_rolled_back(c).await;
    let services: Api<Service> = Api::default_namespaced(c.client.clone());
    let blue = services.get("web-blue").await.expect("service web-blue");
    let selector = blue.spec.and_then(|s| s.selector).unwrap_or_default();
    assert_eq!(selector.get("app").map(String::as_str), Some("web2"));
    let web = c.deploys.get("web").await.expect("deployment web");
    assert_eq!(super::shift::image(&web), "web:v1", "web left as it was");
}

/// kube36 (left by check35): a running rollout whose record names no target (written before
/// session 35, and before promotion words), its `spec.deployment` edited meanwhile. Before,
/// the record's target was taken from the live spec: the edit counted as the same rollout, which
/// carried on reading `web2` as its target, found its template not the one the preview was made
/// from and rolled back naming `web2`; after promotion it would have given `web2` the new images
/// while the traffic went to `web`'s pods. Now the record's target is the Deployment the
/// rollout's Service `web-blue` selects: `web`. The rollout is superseded into it, then rolled
/// out on `web2`.
#[tokio::test]
async fn an_older_record_naming_no_target_is_superseded_into_the_deployment_its_service_selects() {
    let Some(c) = an_older_record_whose_spec_names_another_deployment().await else {
        return;
    };
    let ctl = c.controller();
    superseded_into_web_then_rolled_out_on_web2(&c).await;
    ctl.abort();
}

/// The same, with the rollout's Service `web-blue` deleted meanwhile: no target can be told.
/// Nothing is done on the cluster (the weights stay, no Deployment is written); condition
/// `Progressing=False` (`TargetUnknown`) says why and how to name it. Once the status names it,
/// the rollout is superseded into it and the next one rolls out on `web2`.
#[tokio::test]
async fn an_older_record_whose_target_cannot_be_told_waits_until_its_status_names_it() {
    let Some(c) = an_older_record_whose_spec_names_another_deployment().await else {
        return;
    };
    let services: Api<Service> = Api::default_namespaced(c.client.clone());
    services
        .delete("web-blue", &DeleteParams::default())
        .await
        .expect("delete service web-blue");
    let ctl = c.controller();
    let refused = c
        .status_until("TargetUnknown", |s| not_progressing_for(s, "TargetUnknown"))
        .await;
    let message = refused.message.clone().unwrap_or_default();
    assert!(
        message.contains("does not name the deployment rollout 1 acts on")
            && message.contains("service web-blue")
            && message.contains("set status.rolloutState.deployment"),
        "{message}"
    );
    assert_eq!(
        refused.weights.as_ref().map(|w| w.preview.bp()),
        Some(1000),
        "the weights stay: {refused:?}"
    );
    let record = refused.rollout_state.expect("record");
    assert!(record["deployment"].is_null(), "{record}");
    events_with(&c.client, &["Warning TargetUnknown"]).await;
    for name in ["web", "web2"] {
        let d = c.deploys.get(name).await.expect("deployment");
        assert_eq!(super::shift::image(&d), "web:v1", "{name} untouched");
    }
    let named = json!({ "status": { "rolloutState": { "deployment": "web" } } });
    c.shifts
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&named))
        .await
        .expect("name the record's target");
    superseded_into_web_then_rolled_out_on_web2(&c).await;
    ctl.abort();
}

/// Makes the record of TrafficShift `web` one that a controller of a version before the promotion
/// words (before 2026-12-01) wrote, by a merge patch of `/status` removing every field added
/// since: without `rollout.promotion` and `deployment` it names no target; the others (the
/// template and images the preview was made from, the deadline, the capacity and replica
/// readings, the superseding generation, `unreadyGraceMs`) came later still. Then edits
/// `spec.deployment` to `web2`, as an operator might while the controller was being upgraded.
async fn older_record_then_spec_naming_web2(c: &Cluster) {
    let older = json!({ "status": { "rolloutState": {
        "deployment": null, "unreadyGraceMs": null, "startedFrom": null, "startedTemplate": null,
        "deadlineAtMs": null, "previewImages": null, "activeReadyMost": null,
        "previewReplicas": null, "supersededBy": null, "rollout": { "promotion": null } } } });
    c.shifts
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&older))
        .await
        .expect("make the record an older version's");
    let edit = json!({ "spec": { "deployment": "web2" } });
    c.shifts
        .patch("web", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("patch spec.deployment");
}

/// kube37 (left by kube36): the dangerous case of an older record that names no target, past
/// promotion. Rollout 1 on `web` is promoted (`web` takes `web:v2`); the controller stops while
/// the role swap waits for `web` to roll out, its record is made one that a version before the
/// promotion words wrote ([`older_record_then_spec_naming_web2`]), and `spec.deployment` is edited to
/// `web2`. Without `name_target` the record's target was the live `spec.deployment`: the
/// restarted controller counted the edit as the same rollout and gave `web2` the promoted images
/// while the traffic went to `web`'s pods. Now the record's target is the Deployment Service
/// `web-blue` selects: rollout 1 completes on `web`, and rollout 2 of `web2` starts as a new
/// rollout, `web2` untouched.
#[tokio::test]
async fn an_older_record_past_promotion_finishes_on_the_deployment_its_service_selects() {
    let Some(c) = with_web2(&["web-green"]).await else {
        return;
    };
    let (first, _) = c.rollout_at_step_one().await;
    ops::send(&c.client, "default", "web", ops::Verb::Promote)
        .await
        .expect("promote rollout 1");
    let promoted = super::cluster::promoted_target(&c.deploys).await;
    first.abort();
    let _ = first.await;
    let (stopped, _) = raw_status_until(&c.client, "Promoted", |s| s.phase.is_some()).await;
    assert_eq!(stopped.phase, Some(Phase::Promoted), "{stopped:?}");
    older_record_then_spec_naming_web2(&c).await;
    let second = c.controller();
    super::cluster::mark_available(&c.deploys, &promoted).await;
    web2_rolled_out_after_web_completes(&c).await;
    let web = c.deploys.get("web").await.expect("deployment web");
    assert_eq!(super::shift::image(&web), "web:v2", "web promoted");
    never_rolled_back(&c).await;
    second.abort();
}

/// The same older record in the `Retiring` phase (left by kube37): the role swap is done, all
/// traffic is back on `web`, and the preview drains (held by a request still open to green)
/// when the controller stops, its record is made one of a version before the promotion words
/// ([`older_record_then_spec_naming_web2`]) and `spec.deployment` is edited to `web2`. The
/// target is named by the same code as for `Promoted` (`older::name_older_target`, for every
/// phase but `Pending` and the ended ones); what differs is what reads it afterwards: here the
/// drain, the preview's deletion and the `Completed` words, not the role swap. Without
/// `name_target` the retirement took the live `spec.deployment` (`Exec::pin`), completed saying
/// `web2 runs web:v2`, which `web2` never did, and no rollout of `web2` ever started (the record
/// of rollout 1 already named it with the spec's images). Now rollout 1 completes on `web`, and
/// rollout 2 of `web2` starts as a new rollout, `web2` untouched.
#[tokio::test]
async fn an_older_record_retiring_finishes_on_the_deployment_its_service_selects() {
    let Some(c) = with_web2(&["web-green"]).await else {
        return;
    };
    let mut policy = slow_policy();
    // The drain holds while green has a request open, far longer than the test.
    policy["drainTimeout"] = json!("10m");
    c.create_shift(policy).await;
    let proxies = FakeProxies::start(c.client.clone());
    proxies.hold_green(1, 0);
    let first = c.controller_with(proxies.clone());
    raw_status_until(&c.client, "step 1 at 10%", at_step_one).await;
    ops::send(&c.client, "default", "web", ops::Verb::Promote)
        .await
        .expect("promote rollout 1");
    let promoted = super::cluster::promoted_target(&c.deploys).await;
    super::cluster::mark_available(&c.deploys, &promoted).await;
    raw_status_until(&c.client, "Retiring", |s| s.phase == Some(Phase::Retiring)).await;
    first.abort();
    let _ = first.await;
    let (stopped, _) = raw_status_until(&c.client, "a phase", |s| s.phase.is_some()).await;
    assert_eq!(stopped.phase, Some(Phase::Retiring), "{stopped:?}");
    older_record_then_spec_naming_web2(&c).await;
    let second = c.controller_with(proxies.clone());
    proxies.hold_green(0, 0);
    web2_rolled_out_after_web_completes(&c).await;
    never_rolled_back(&c).await;
    second.abort();
}

/// Session 38: `status.rolloutState` removed by another client after promotion (while the
/// target rolls out the promoted images, all traffic on the preview). The controller reads
/// status again and finds no record: before, the TrafficShift counted as new, its target already
/// ran the spec's images, so it showed `UpToDate`, and `status.weights` kept the preview's 100%
/// and the preview was never drained or deleted, for good (an abort was refused: `does not
/// run`). Now a rollout of the spec starts (Warning Event `RolloutRecordMissing`): its first step
/// returns the share to the target, its weights generation carries on above the one the proxies
/// applied (before it started again from 1, which they counted as applied at once) and it is
/// rollout 2, not 1 again; an abort then ends it with the preview deleted.
#[tokio::test]
async fn a_rollout_record_removed_after_promotion_returns_the_preview_share_to_the_target() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let published = record_removed_after_promotion(&c).await;
    let second = c.controller();
    let started = raw_status_until(&c.client, "a rollout at step 1", |s| {
        s.rollout_state.is_some() && at_step_one(s)
    })
    .await
    .0;
    assert_eq!(rollout_id(&started), Some(2), "{started:?}");
    let generation = started.weights.as_ref().map_or(0, |w| w.generation);
    assert!(
        generation > published,
        "weights generation {generation} after {published}"
    );
    let missing = notes(&c.client, "web", "RolloutRecordMissing").await;
    assert!(
        missing.iter().any(|n| n.contains("gives the preview 100%")),
        "{missing:?}"
    );
    ops::send(&c.client, "default", "web", ops::Verb::Abort)
        .await
        .expect("abort rollout 2");
    c.deployment_deleted("web-green").await;
    let ended = c
        .status_until("Aborted", |s| s.phase == Some(Phase::Aborted))
        .await;
    assert_eq!(
        ended.weights.as_ref().map(|w| w.preview.bp()),
        Some(0),
        "{ended:?}"
    );
    second.abort();
}

/// Runs rollout 1 of TrafficShift `web` to `Promoted` (all traffic on the preview), stops its
/// controllers there and removes `status.rolloutState`, as another client may; returns the
/// weights generation published at 100%, which `status.weights` still shows.
pub(super) async fn record_removed_after_promotion(c: &Cluster) -> u64 {
    let remove = json!([{ "op": "remove", "path": "/status/rolloutState" }]);
    status_edited_after_promotion(c, remove).await
}

/// As [`record_removed_after_promotion`], with `edit` (a JSON patch of the status) for the
/// removal.
pub(super) async fn status_edited_after_promotion(c: &Cluster, edit: serde_json::Value) -> u64 {
    let (first, _) = c.rollout_at_step_one().await;
    ops::send(&c.client, "default", "web", ops::Verb::Promote)
        .await
        .expect("promote rollout 1");
    let (promoted, _) = raw_status_until(&c.client, "Promoted at 100%", |s| {
        s.phase == Some(Phase::Promoted)
            && s.weights.as_ref().is_some_and(|w| w.preview.bp() == 10_000)
    })
    .await;
    first.abort();
    let _ = first.await;
    c.shifts
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::<()>::Json(serde_json::from_value(edit).expect("json patch")),
        )
        .await
        .expect("edit the status");
    promoted.weights.as_ref().map_or(0, |w| w.generation)
}

/// Waits until rollout 2, of `web2`, is at step 1, `web2` still running `web:v1` at every look
/// (the promoted images going to it is the failure), and checks that rollout 1 completed on
/// `web` ([`first_completed_on`]).
async fn web2_rolled_out_after_web_completes(c: &Cluster) {
    let started = crate::support::wait_until(WAIT, "rollout 2 of web2 at step 1", || async {
        let web2 = c.deploys.get("web2").await.expect("deployment web2");
        assert_eq!(super::shift::image(&web2), "web:v1", "web2 untouched");
        let status = c.status().await;
        (second_rollout_of(&status, "web2") && at_step_one(&status)).then_some(status)
    })
    .await;
    first_completed_on(c, &started, "web").await;
}

/// Session 38: the target Deployment deleted after promotion, while it rolls out the promoted
/// images (all traffic on the preview). Before, each reconcile failed naming the missing
/// Deployment, the next read the rollout from status again and wrote its re-issued wait's new
/// deadline, and that write woke the next reconcile at once: about 20 status writes a second,
/// and nothing in status or Events said why. Now the rollout waits (the preview keeps serving),
/// a Warning Event `DeploymentMissing` says so once, the status is left alone, and the role swap
/// goes on once the Deployment exists again.
///
/// Session 40: `status.message` says so too, written once before the Event (before, it went on
/// saying `promoted: web is rolling out web:v2; web-green serves meanwhile` for a Deployment that
/// was gone), and is the rollout's own again once the Deployment is back.
#[tokio::test]
async fn a_target_deleted_after_promotion_is_waited_for_without_rewriting_status() {
    let Some(c) = Cluster::start(&["web-green"]) else {
        return;
    };
    c.create_target(&[]).await;
    let (ctl, _) = c.rollout_at_step_one().await;
    ops::send(&c.client, "default", "web", ops::Verb::Promote)
        .await
        .expect("promote rollout 1");
    super::cluster::promoted_target(&c.deploys).await;
    c.deploys
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete web");
    let missing = crate::support::wait_until(WAIT, "a DeploymentMissing Event", || async {
        let notes = notes(&c.client, "web", "DeploymentMissing").await;
        (!notes.is_empty()).then_some(notes)
    })
    .await;
    assert_eq!(
        missing,
        ["spec.deployment: deployment web was deleted after promotion; the preview web-green keeps serving all traffic, and the role swap goes on once the deployment exists again"]
    );
    // Three looks of the controller (every 2 s): before, each wrote the status about ten times.
    let after = unwritten_for(&c, 6, "while waiting").await;
    let status = after.status.expect("status");
    assert_eq!(status.phase, Some(Phase::Promoted), "{status:?}");
    assert_eq!(status.weights.map(|w| w.preview.bp()), Some(10_000));
    assert_eq!(
        status.message.as_deref(),
        Some(format!("promoted: {}", missing[0]).as_str()),
        "status.message while the target is missing"
    );
    // Back: promoted again, rolled out, then the swap and the end.
    c.create_target(&[]).await;
    let promoted = super::cluster::promoted_target(&c.deploys).await;
    super::cluster::mark_available(&c.deploys, &promoted).await;
    let done = c
        .status_until("Completed", |s| s.phase == Some(Phase::Completed))
        .await;
    let message = done.message.unwrap_or_default();
    assert!(message.starts_with("completed: "), "{message}");
    ctl.abort();
}

/// Session 39: every patch of the target refused after promotion (an admission webhook denying
/// it; RBAC without patch, or 500s, fail the same way). Each reconcile fails and the next reads
/// the rollout from status again. Before, that reload re-issued the role swap with a fresh
/// progress deadline and wrote it to status, and the write woke the next reconcile at once,
/// past the error backoff: status was rewritten many times a second. Now the reload keeps the
/// recorded deadline, writes nothing new, and the reconcile is retried with backoff.
///
/// Session 39: each of those reloads also published `Restarted` ("crossfade restarted ..."),
/// nine in six seconds, though the controller never restarted. Now the first reload after the
/// error says `Reloaded`, naming the error, and the later ones after the same error say nothing;
/// a controller that does restart meanwhile still says `Restarted`, once.
#[tokio::test]
async fn a_target_patch_refused_after_promotion_is_retried_without_rewriting_status() {
    let args = ["--deny-update", "default/deployments/web"];
    let Some(c) = Cluster::start_with_args(&["web-green"], &args) else {
        return;
    };
    c.create_target(&[]).await;
    c.create_shift(fast_policy()).await;
    let ctl = c.controller();
    raw_status_until(&c.client, "Promoted", |s| s.phase == Some(Phase::Promoted)).await;
    // The first refusals and reloads.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    // Past the retries 5 s, then 10 s, after the first failure: two reloads at least.
    let after = unwritten_for(&c, 16, "while the patch is refused").await;
    let status = after.status.expect("status");
    assert_eq!(status.phase, Some(Phase::Promoted), "{status:?}");
    let restarted = published(&c, "Restarted").await;
    assert_eq!(restarted, 0, "no restart: {:?}", events(&c.client).await);
    let reloaded = notes(&c.client, "web", "Reloaded").await;
    assert_eq!(
        published(&c, "Reloaded").await,
        1,
        "said once: {reloaded:?}"
    );
    let said = "reloaded from status after a failed reconcile (";
    assert!(reloaded[0].starts_with(said), "{reloaded:?}");
    assert!(
        reloaded[0].contains("denied the request"),
        "the error: {reloaded:?}"
    );
    // A controller that does restart says so, once.
    ctl.abort();
    let _ = ctl.await;
    let ctl = c.controller();
    events_with(&c.client, &["Normal Restarted"]).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let restarted = notes(&c.client, "web", "Restarted").await;
    assert_eq!(published(&c, "Restarted").await, 1, "{restarted:?}");
    ctl.abort();
}

/// Session 40: as above, the TrafficShift deleted meanwhile. The finalizer's cleanup fails on the
/// refused patch too (the promotion must finish before the finalizer goes), and each cleanup
/// reloads the rollout from status. Before, that reload was not marked as one and said
/// `Restarted` ("still waiting for the role swap after a restart") though nothing restarted. Now
/// it is a reload, said once per kind of failure: the refused patch was said already.
#[tokio::test]
async fn a_deleted_trafficshift_whose_cleanup_fails_is_reloaded_not_restarted() {
    let Some((c, ctl)) = refused_after_promotion().await else {
        return;
    };
    c.shifts
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete web");
    reloads_said_once(&c, "after the deletion").await;
    let kept = c.shifts.get_opt("web").await.expect("get web");
    assert!(
        kept.is_some(),
        "the finalizer went before the promotion finished"
    );
    ctl.abort();
}

/// Session 40: as above, the TrafficShift edited into one that does not decode meanwhile: the
/// promoted rollout finishes from its record, whose reconcile fails on the refused patch and
/// reloads it from status. Before, that reload said `Restarted`, as the cleanup's did.
#[tokio::test]
async fn a_trafficshift_that_does_not_decode_whose_reconcile_fails_is_reloaded_not_restarted() {
    let Some((c, ctl)) = refused_after_promotion().await else {
        return;
    };
    make_undecodable(&c.client).await;
    reloads_said_once(&c, "after the edit").await;
    ctl.abort();
}

/// A cluster whose target Deployment `web` refuses every patch, and TrafficShift `web` promoted
/// (its role swap refused) under a running controller, once the first reload after the refusal
/// was said (`Reloaded`, at the first retry). `None` without the emulator.
async fn refused_after_promotion() -> Option<(Cluster, tokio::task::JoinHandle<()>)> {
    let args = ["--deny-update", "default/deployments/web"];
    let c = Cluster::start_with_args(&["web-green"], &args)?;
    c.create_target(&[]).await;
    c.create_shift(fast_policy()).await;
    let ctl = c.controller();
    events_with(&c.client, &["Normal Reloaded"]).await;
    Some((c, ctl))
}

/// After the change just made to TrafficShift `web` (which wakes a reconcile at once, loading the
/// rollout from status) had time to be reconciled: no `Restarted` was ever published about it,
/// and `Reloaded` once; `what` says when.
async fn reloads_said_once(c: &Cluster, what: &str) {
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let restarted = notes(&c.client, "web", "Restarted").await;
    assert_eq!(published(c, "Restarted").await, 0, "{what}: {restarted:?}");
    let reloaded = notes(&c.client, "web", "Reloaded").await;
    assert_eq!(published(c, "Reloaded").await, 1, "{what}: {reloaded:?}");
}

/// How many times Events with `reason` about TrafficShift `web` were published: each Event
/// once, and its series' repeats.
async fn published(c: &Cluster, reason: &str) -> i32 {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::default_namespaced(c.client.clone());
    let list = api.list(&Default::default()).await.expect("list events");
    let about = |e: &k8s_openapi::api::events::v1::Event| {
        e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web")
            && e.reason.as_deref() == Some(reason)
    };
    let count = |e: &k8s_openapi::api::events::v1::Event| e.series.as_ref().map_or(1, |s| s.count);
    list.items.iter().filter(|e| about(e)).map(count).sum()
}

/// Two steps (50%, 100%) held 300 ms each: promoted within a few seconds, with no command.
fn fast_policy() -> serde_json::Value {
    json!({ "steps": [{ "weight": 50, "hold": "300ms" }, { "weight": 100, "hold": "300ms" }],
        "drainTimeout": "300ms", "analysis": { "minRequests": 5, "interval": "300ms" } })
}

/// TrafficShift `web` as read after `secs` seconds in which it was not written (its
/// resourceVersion stayed); panics naming `what` when it was.
pub(super) async fn unwritten_for(c: &Cluster, secs: u64, what: &str) -> TrafficShift {
    let version = |s: &TrafficShift| s.metadata.resource_version.clone().unwrap_or_default();
    let before = c.shifts.get("web").await.expect("get web");
    tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
    let after = c.shifts.get("web").await.expect("get web");
    assert_eq!(version(&before), version(&after), "status rewritten {what}");
    after
}

/// No Warning `TargetChanged` or `RolledBack` about TrafficShift `web`.
async fn never_rolled_back(c: &Cluster) {
    let events = events(&c.client).await;
    assert!(
        !events
            .iter()
            .any(|e| e == "Warning TargetChanged" || e == "Warning RolledBack"),
        "{events:?}"
    );
}

/// The status shows rollout 2, of Deployment `deployment` (its record names it).
fn second_rollout_of(s: &TrafficShiftStatus, deployment: &str) -> bool {
    s.rollout_state
        .as_ref()
        .is_some_and(|r| r["rollout"]["id"] == 2 && r["deployment"] == deployment)
}

/// `started`, the status of rollout 2, is of spec generation 2, and rollout 1 completed on
/// `deployment` (its `Completed` Event says that `deployment` runs `web:v2`).
async fn first_completed_on(c: &Cluster, started: &TrafficShiftStatus, deployment: &str) {
    assert_eq!(started.observed_generation, Some(2), "{started:?}");
    let completed = notes(&c.client, "web", "Completed").await;
    let runs = format!("{deployment} runs web:v2");
    assert!(
        completed.iter().any(|n| n.contains(&runs)),
        "rollout 1 completed on {deployment}: {completed:?}"
    );
}
