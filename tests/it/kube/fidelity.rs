//! The emulator still behaves like an API server where the controller relies on it: the fixes
//! `kmock_server.py` layers over kmock 0.8. These fail loudly when a kmock change breaks a hook.

use std::process::Command;
use std::time::Duration;

use crossfade_controller::kube::crd::{Phase, TrafficShift, TrafficShiftStatus};
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

use super::emulator::{launcher, python, Emulator};
use super::objects::{deployment, shift};

/// The API error's reason, e.g. `AlreadyExists`, or a panic naming what happened instead.
fn reason<T: std::fmt::Debug>(result: kube::Result<T>) -> String {
    match result {
        Err(kube::Error::Api(status)) => status.reason.clone(),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The next thing the watch reported, or `None` after 10 s.
async fn next(events: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .ok()
        .flatten()
}

#[test]
fn kmock_internals_the_launcher_patches_are_present() {
    let Some(python) = python() else { return };
    let out = Command::new(python)
        .arg(launcher())
        .arg("--check-hooks")
        .output()
        .expect("run the launcher");
    assert!(
        out.status.success(),
        "kmock changed under tests/kube/kmock_server.py (pin kmock==0.8):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn writes_get_server_metadata_and_errors_carry_standard_reasons() {
    let Some(emu) = Emulator::start() else { return };
    let api: Api<Deployment> = Api::default_namespaced(emu.client());
    let created = api
        .create(&PostParams::default(), &deployment("web", &[]))
        .await
        .expect("create");
    let meta = &created.metadata;
    assert!(
        meta.uid.is_some() && meta.resource_version.is_some(),
        "{meta:?}"
    );
    assert_eq!(
        (meta.namespace.as_deref(), meta.generation),
        (Some("default"), Some(1))
    );

    let again = api
        .create(&PostParams::default(), &deployment("web", &[]))
        .await;
    assert_eq!(reason(again), "AlreadyExists");
    assert!(api.get_opt("missing").await.expect("get_opt").is_none());

    let mut stale = created.clone();
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
    )
    .await
    .expect("merge patch");
    stale.metadata.labels = Some([("y".to_owned(), "2".to_owned())].into());
    assert_eq!(
        reason(api.replace("web", &PostParams::default(), &stale).await),
        "Conflict"
    );
}

/// Trial 26: a strategic merge patch of the spec (`kubectl set image`, and the controller's own
/// promotion of the target) kept `metadata.generation` and `resourceVersion` as they were (the
/// launcher computed them on metadata it shared with the old object, so its diff lost them), so
/// a Deployment's old status still read as rolled out, and the patch looked like no write.
/// Every kind of spec write now bumps both, as a real API server does; a status write bumps only
/// the resourceVersion.
#[tokio::test]
async fn every_kind_of_spec_write_bumps_the_generation_and_the_resource_version() {
    let Some(emu) = Emulator::start() else { return };
    let api: Api<Deployment> = Api::default_namespaced(emu.client());
    let created = api
        .create(&PostParams::default(), &deployment("web", &[]))
        .await
        .expect("create");
    let meta = |d: &Deployment| {
        let rv: u64 = d
            .metadata
            .resource_version
            .as_deref()
            .unwrap()
            .parse()
            .unwrap();
        (d.metadata.generation.unwrap(), rv)
    };
    let (mut generation, mut rv) = meta(&created);
    let image = |i: &str| json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": i}]}}}});
    let params = PatchParams::default();
    let writes = [
        ("strategic", Patch::Strategic(image("web:v2"))),
        ("merge", Patch::Merge(image("web:v3"))),
        (
            "json",
            Patch::Json(
                serde_json::from_value(json!([{ "op": "replace",
                    "path": "/spec/template/spec/containers/0/image", "value": "web:v4" }]))
                .unwrap(),
            ),
        ),
    ];
    for (kind, patch) in writes {
        let patched = api.patch("web", &params, &patch).await.expect(kind);
        let stored = api.get("web").await.expect("get");
        for (what, d) in [("answer", &patched), ("stored", &stored)] {
            let (g, r) = meta(d);
            assert_eq!(g, generation + 1, "{kind} patch, {what}: generation");
            assert!(
                r > rv,
                "{kind} patch, {what}: resourceVersion {r} after {rv}"
            );
        }
        (generation, rv) = meta(&stored);
    }
    let status = json!({"status": {"observedGeneration": generation, "availableReplicas": 1}});
    let written = api
        .patch_status("web", &params, &Patch::Strategic(status))
        .await
        .expect("status");
    let (g, r) = meta(&written);
    assert_eq!(g, generation, "a status write keeps the generation");
    assert!(r > rv, "a status write bumps the resourceVersion");
}

#[tokio::test]
async fn a_namespaced_watch_sees_objects_created_and_changed_after_it_started() {
    let Some(emu) = Emulator::start() else { return };
    let api: Api<Deployment> = Api::default_namespaced(emu.client());
    // Live events only: the watch has listed (InitDone) before anything is created.
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let watch = tokio::spawn(watcher(api.clone(), watcher::Config::default()).for_each(
        move |event| {
            let seen = match event.expect("watch event") {
                watcher::Event::InitDone => Some("listed".to_owned()),
                watcher::Event::Apply(d) => d
                    .spec
                    .and_then(|s| s.template.spec)
                    .map(|s| s.containers[0].image.clone().unwrap_or_default()),
                _ => None,
            };
            let _ = seen.map(|s| tx.send(s));
            async {}
        },
    ));
    assert_eq!(next(&mut events).await.as_deref(), Some("listed"));
    api.create(&PostParams::default(), &deployment("web", &[]))
        .await
        .expect("create");
    assert_eq!(
        next(&mut events).await.as_deref(),
        Some("web:v1"),
        "the watch missed the create"
    );
    let set_image = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "web:v2"}]}}}});
    api.patch("web", &PatchParams::default(), &Patch::Strategic(set_image))
        .await
        .expect("patch");
    assert_eq!(
        next(&mut events).await.as_deref(),
        Some("web:v2"),
        "the watch missed the patch"
    );
    watch.abort();
}

#[tokio::test]
async fn status_and_spec_are_separate_subresources() {
    let Some(emu) = Emulator::start() else { return };
    let api: Api<TrafficShift> = Api::default_namespaced(emu.client());
    api.create(&PostParams::default(), &shift("web", "web:v2"))
        .await
        .expect("create");
    let status = TrafficShiftStatus {
        phase: Some(Phase::Progressing),
        ..Default::default()
    };
    let patch = Patch::Merge(json!({ "status": status }));
    api.patch_status("web", &PatchParams::default(), &patch)
        .await
        .expect("patch status");

    let spec_and_status =
        json!({"spec": {"images": {"app": "web:v3"}}, "status": {"phase": "Aborted"}});
    let after = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(spec_and_status),
        )
        .await
        .expect("patch");
    assert_eq!(
        after.status.and_then(|s| s.phase),
        Some(Phase::Progressing),
        "main resource wrote status"
    );
    assert_eq!(
        after.metadata.generation,
        Some(2),
        "a spec change bumps the generation"
    );
    assert_eq!(after.spec.images["app"].0, "web:v3");
}

/// Session 39: a write of `/status` that differs from what is stored only by `null`s (the
/// controller's record in `rolloutState` serialises its unset fields as `null`, which a real API
/// server stores as sent: `x-kubernetes-preserve-unknown-fields`) changes nothing: the
/// resourceVersion stays and no watch event is sent. Before, the emulator, which stores by merge
/// patch and so drops `null`s, counted every such write as a change.
#[tokio::test]
async fn a_status_write_that_differs_only_by_nulls_keeps_the_resource_version() {
    let Some(emu) = Emulator::start() else { return };
    let api: Api<TrafficShift> = Api::default_namespaced(emu.client());
    api.create(&PostParams::default(), &shift("web", "web:v2"))
        .await
        .expect("create");
    let status = |step: u64| TrafficShiftStatus {
        phase: Some(Phase::Promoted),
        rollout_state: Some(json!({ "step": step, "reason": null })),
        ..Default::default()
    };
    let write = |s: TrafficShiftStatus, current: TrafficShift| {
        let api = api.clone();
        async move {
            let next = TrafficShift {
                status: Some(s),
                ..current
            };
            api.replace_status("web", &PostParams::default(), &next)
                .await
                .expect("replace status")
        }
    };
    let rv = |s: &TrafficShift| s.metadata.resource_version.clone().unwrap();
    let current = api.get("web").await.expect("get");
    let first = write(status(1), current).await;
    let again = write(status(1), first.clone()).await;
    assert_eq!(rv(&again), rv(&first), "an unchanged status was a write");
    let changed = write(status(2), again.clone()).await;
    assert_ne!(rv(&changed), rv(&again), "a changed status was no write");
}

#[tokio::test]
async fn a_finalizer_holds_a_deleted_object_until_it_is_removed() {
    let Some(emu) = Emulator::start() else { return };
    let api: Api<TrafficShift> = Api::default_namespaced(emu.client());
    let mut with_finalizer = shift("web", "web:v2");
    with_finalizer.metadata.finalizers = Some(vec!["crossfade.dev/rollout".into()]);
    let created = api
        .create(&PostParams::default(), &with_finalizer)
        .await
        .expect("create");
    api.delete("web", &Default::default())
        .await
        .expect("delete");
    let marked = api.get("web").await.expect("still there");
    assert!(marked.metadata.deletion_timestamp.is_some(), "{marked:?}");
    assert_ne!(
        marked.metadata.resource_version, created.metadata.resource_version,
        "marking it for deletion is a change"
    );
    assert_eq!(marked.metadata.generation, Some(2));
    let remove = json!({ "metadata": { "finalizers": null } });
    api.patch("web", &PatchParams::default(), &Patch::Merge(remove))
        .await
        .expect("remove the finalizer");
    assert!(
        api.get_opt("web").await.expect("get").is_none(),
        "deleted once released"
    );
}

#[tokio::test]
async fn leases_are_applied_renewed_and_deleted_and_endpointslices_selected_by_service() {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::api::{DeleteParams, ListParams};

    let Some(emu) = Emulator::start() else { return };
    let leases: Api<Lease> = Api::default_namespaced(emu.client());
    let apply = PatchParams::apply("crossfade-proxy").force();
    let lease = |holder: &str| {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": { "name": "l", "annotations": { "crossfade.dev/applied": holder } },
            "spec": { "holderIdentity": "r1", "leaseDurationSeconds": 15 }
        })
    };
    // Server-side apply creates the missing Lease, then renews it in place.
    leases
        .patch("l", &apply, &Patch::Apply(lease("{}")))
        .await
        .expect("apply creates");
    let renewed = leases
        .patch("l", &apply, &Patch::Apply(lease(r#"{"default/web":1}"#)))
        .await
        .expect("apply renews");
    let annotations = renewed.metadata.annotations.unwrap_or_default();
    assert_eq!(annotations["crossfade.dev/applied"], r#"{"default/web":1}"#);
    leases
        .delete("l", &DeleteParams::default())
        .await
        .expect("delete");
    assert!(leases.get_opt("l").await.expect("get").is_none());

    let slices: Api<EndpointSlice> = Api::default_namespaced(emu.client());
    for (name, service) in [("web-blue-a", "web-blue"), ("web-green-a", "web-green")] {
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": { "name": name, "labels": { "kubernetes.io/service-name": service } },
            "addressType": "IPv4",
            "endpoints": [{ "addresses": ["10.0.0.1"] }]
        }))
        .expect("slice");
        slices
            .create(&PostParams::default(), &slice)
            .await
            .expect("create slice");
    }
    let blue = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=web-blue"))
        .await
        .expect("list");
    let names: Vec<_> = blue
        .items
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    assert_eq!(names, ["web-blue-a"]);
}

/// Trial 30: names and label values a real API server refuses are refused here too (422
/// Invalid): a Service's name must be a DNS-1035 label (`1web-blue`, a dot, 64 characters are
/// not), any other object's a DNS-1123 subdomain (`Web` is not), a label value at most 63
/// characters. Plain kmock stored them, so a rollout the cluster would refuse ran here.
#[tokio::test]
async fn names_and_label_values_a_real_api_server_refuses_are_refused() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client();
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::default_namespaced(client.clone());
    let service = |name: &str, label: &str| -> k8s_openapi::api::core::v1::Service {
        serde_json::from_value(
            json!({ "metadata": { "name": name, "labels": { "app": label } },
            "spec": { "clusterIP": "None" } }),
        )
        .expect("service")
    };
    let long = format!("w{}", "e".repeat(63));
    for name in ["1web-blue", "web.v2-blue", long.as_str()] {
        let made = services
            .create(&PostParams::default(), &service(name, "web"))
            .await;
        assert_eq!(reason(made), "Invalid", "{name}");
    }
    let label = "l".repeat(64);
    let made = services
        .create(&PostParams::default(), &service("web-blue", &label))
        .await;
    assert_eq!(reason(made), "Invalid", "a 64-character label value");
    services
        .create(&PostParams::default(), &service(&long[..63], &label[..63]))
        .await
        .expect("63 characters each are fine");
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let made = deploys
        .create(&PostParams::default(), &deployment("Web", &[]))
        .await;
    assert_eq!(reason(made), "Invalid");
    deploys
        .create(&PostParams::default(), &deployment("1web.v2", &[]))
        .await
        .expect("a DNS-1123 subdomain is a Deployment's name");
}

/// Session 41: a DELETE whose preconditions (`uid`, `resourceVersion`) no longer match answers
/// 409 Conflict and deletes nothing, as the API server does (plain kmock ignored them and deleted);
/// matching ones delete. The controller's deletion of stale proxy Leases relies on it.
#[tokio::test]
async fn a_delete_whose_preconditions_do_not_match_is_refused_with_409_and_deletes_nothing() {
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::api::{DeleteParams, Preconditions};

    let Some(emu) = Emulator::start() else { return };
    let leases: Api<Lease> = Api::default_namespaced(emu.client());
    let lease: Lease = serde_json::from_value(json!({
        "metadata": { "name": "l" }, "spec": { "holderIdentity": "r1" }
    }))
    .expect("lease");
    let created = leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("create");
    let (uid, version) = (created.metadata.uid, created.metadata.resource_version);
    let on = |uid: Option<String>, resource_version: Option<String>| {
        DeleteParams::default().preconditions(Preconditions {
            uid,
            resource_version,
        })
    };
    let stale_version = on(uid.clone(), Some("1".into()));
    assert_eq!(reason(leases.delete("l", &stale_version).await), "Conflict");
    let other_uid = on(Some("not-its-uid".into()), version.clone());
    assert_eq!(reason(leases.delete("l", &other_uid).await), "Conflict");
    assert!(leases.get_opt("l").await.expect("get").is_some(), "kept");
    leases.delete("l", &on(uid, version)).await.expect("delete");
    assert!(leases.get_opt("l").await.expect("get").is_none(), "deleted");
}

/// Session 43: an apply was a plain merge patch, so a field a manager applied once stayed when
/// its next apply left it out (removing `crossfade.dev/rollout` kept the policy it had set, where
/// a real API server removes the fields no manager owns any longer). A field another write
/// changed in between belongs to that writer and stays.
#[tokio::test]
async fn an_apply_removes_the_fields_its_manager_applied_before_and_leaves_out() {
    use k8s_openapi::api::coordination::v1::Lease;

    let Some(emu) = Emulator::start() else { return };
    let leases: Api<Lease> = Api::default_namespaced(emu.client());
    let apply = PatchParams::apply("crossfade-test").force();
    let lease = |annotations: serde_json::Value, spec: serde_json::Value| {
        Patch::Apply(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": { "name": "l", "annotations": annotations }, "spec": spec
        }))
    };
    let both = json!({ "x": "1", "y": "2" });
    let full = json!({ "holderIdentity": "r1", "leaseDurationSeconds": 15 });
    leases
        .patch("l", &apply, &lease(both, full))
        .await
        .expect("apply creates");
    let fewer = leases
        .patch(
            "l",
            &apply,
            &lease(json!({ "x": "1" }), json!({ "holderIdentity": "r1" })),
        )
        .await
        .expect("apply fewer fields");
    let annotations = fewer.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(annotations.keys().collect::<Vec<_>>(), ["x"], "{fewer:?}");
    let spec = fewer.spec.clone().expect("spec");
    assert_eq!(spec.lease_duration_seconds, None, "{fewer:?}");
    assert_eq!(spec.holder_identity.as_deref(), Some("r1"));

    // Another writer changes holderIdentity: it owns it now, and an apply without it keeps it.
    let edit = json!({ "spec": { "holderIdentity": "r2" } });
    leases
        .patch("l", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("merge patch");
    let kept = leases
        .patch("l", &apply, &lease(json!({ "x": "1" }), json!({})))
        .await
        .expect("apply without spec fields");
    let spec = kept.spec.clone().expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("r2"), "{kept:?}");

    // A refused apply (409: a stale resourceVersion) changes no ownership: the manager still owns
    // `z` from its last apply taken, so the next apply without `z` removes it. The emulator
    // recorded the refused apply's fields as the manager's before (review of session 43).
    leases
        .patch(
            "l",
            &apply,
            &lease(json!({ "x": "1", "z": "3" }), json!({})),
        )
        .await
        .expect("apply z");
    let stale = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": { "name": "l", "annotations": { "x": "1" }, "resourceVersion": "1" }
    });
    let refused = leases.patch("l", &apply, &Patch::Apply(&stale)).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(e)) if e.code == 409),
        "{refused:?}"
    );
    let without_z = leases
        .patch("l", &apply, &lease(json!({ "x": "1" }), json!({})))
        .await
        .expect("apply without z");
    let annotations = without_z.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations.keys().collect::<Vec<_>>(),
        ["x"],
        "{without_z:?}"
    );
}
