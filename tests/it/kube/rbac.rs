//! `deploy/controller/rbac.yaml` against what the controllers really ask the API for: the emulator
//! audits every request with the RBAC verb a real API server would authorise, the controllers
//! authenticate with their own token, and a rollout (annotation trigger, preview, promotion on the
//! target, deletion) runs. Every request must be allowed by the ClusterRole, and every rule must be
//! used or listed below with the reason it is not exercised here. The controllers run elected
//! (leader election on a Lease), as `crossfade controller --kube` does by default.

use std::collections::BTreeSet;
use std::time::Duration;

use crossfade_controller::kube::crd::{Phase, TrafficShift};
use crossfade_controller::kube::leader::{Election, DEFAULT_LEASE};
use crossfade_controller::kube::trigger::{ENABLED, IMAGE};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

use super::cluster::{FakeProxies, Kubelet};
use super::emulator::Emulator;
use super::objects::deployment;
use crate::support::wait_until;

const TOKEN: &str = "crossfade-controller";

/// (API group, resource, verb).
pub(super) type Permission = (String, String, String);

/// Rules granted but not exercised by this test, with why they are needed.
const NOT_EXERCISED: [(&str, &str, &str); 3] = [
    // kube-runtime's Recorder patches an Event that repeats within its window into a series.
    ("events.k8s.io", "events", "patch"),
    // The store re-reads the status after a 409 Conflict (tests/it/kube/store.rs).
    ("crossfade.dev", "trafficshifts/status", "get"),
    // Gate and check headers read from Secrets (tests/it/kube/secret_headers.rs).
    ("", "secrets", "get"),
];

/// A client of the emulator that authenticates as the controller (bearer token [`TOKEN`]).
async fn controller_client(emu: &Emulator) -> kube::Client {
    let yaml = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
         clusters: [{{ name: c, cluster: {{ server: \"{}\" }} }}]\n\
         users: [{{ name: u, user: {{ token: {TOKEN} }} }}]\n\
         contexts: [{{ name: c, context: {{ cluster: c, user: u, namespace: default }} }}]\n",
        emu.url()
    );
    let kubeconfig = Kubeconfig::from_yaml(&yaml).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    kube::Client::try_from(config).expect("client")
}

/// The rules of the ClusterRole and the Role (leader election, in the controller's namespace;
/// here every request is in `default`) as permissions.
fn granted() -> BTreeSet<Permission> {
    rules_in("deploy/controller/rbac.yaml")
}

/// The rules of every ClusterRole and Role in `file` (relative to the repository) as permissions.
pub(super) fn rules_in(file: &str) -> BTreeSet<Permission> {
    let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
        .unwrap_or_else(|e| panic!("read {file}: {e}"));
    let mut out = BTreeSet::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let doc = serde_json::Value::deserialize(doc).expect("yaml");
        if doc["kind"] != "ClusterRole" && doc["kind"] != "Role" {
            continue;
        }
        for rule in doc["rules"].as_array().expect("rules") {
            let strings = |k: &str| -> Vec<String> {
                let list = rule[k]
                    .as_array()
                    .unwrap_or_else(|| panic!("{k} in {rule}"));
                list.iter()
                    .map(|v| v.as_str().expect("string").to_owned())
                    .collect()
            };
            for g in strings("apiGroups") {
                for r in strings("resources") {
                    for v in strings("verbs") {
                        out.insert((g.clone(), r.clone(), v));
                    }
                }
            }
        }
    }
    out
}

/// What the controller's requests needed, from the emulator's audit log.
fn used(audit: &std::path::Path) -> BTreeSet<Permission> {
    used_by(audit, TOKEN)
}

/// What the requests made with bearer token `user` needed, from the emulator's audit log.
pub(super) fn used_by(audit: &std::path::Path, user: &str) -> BTreeSet<Permission> {
    let text = std::fs::read_to_string(audit).expect("read audit log");
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("audit line"))
        .filter(|e| e["user"] == user)
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (s("group"), s("resource"), s("verb"))
        })
        .collect()
}

use serde::Deserialize as _;

#[tokio::test]
async fn the_cluster_role_allows_every_request_of_a_rollout_and_nothing_unused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = dir.path().join("audit.jsonl");
    let audit_arg = audit.to_string_lossy().into_owned();
    let Some(emu) = Emulator::start_with(&["--audit", &audit_arg]) else {
        return;
    };
    let client = emu.client();
    let _kubelet = Kubelet::start(client.clone(), &["web", "web-green"]);
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let shifts: Api<TrafficShift> = Api::default_namespaced(client.clone());
    let ctl_client = controller_client(&emu).await;
    let metrics = FakeProxies::start(client.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let ctl = tokio::spawn(async move {
        let election = Election {
            namespace: "default".into(),
            name: DEFAULT_LEASE.into(),
            identity: "rbac-test".into(),
            duration: Duration::from_secs(3),
        };
        let shutdown = async {
            let _ = stopped.await;
        };
        crossfade_controller::kube::run_elected(
            ctl_client,
            Some("default"),
            Some("default"),
            metrics,
            crossfade_controller::metrics::RolloutMetrics::default(),
            election,
            shutdown,
        )
        .await
        .expect("preflight");
    });

    // The annotation trigger (a TrafficShift applied) and a rollout through to completion.
    let api = deployment("api", &[(ENABLED, "true"), (IMAGE, "api:v2")]);
    deploys
        .create(&PostParams::default(), &api)
        .await
        .expect("create api");
    deploys
        .create(&PostParams::default(), &deployment("web", &[]))
        .await
        .expect("create web");
    let web: TrafficShift = serde_json::from_value(json!({
        "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift", "metadata": { "name": "web" },
        "spec": { "deployment": "web", "images": { "app": "web:v2" }, "rollout": {
            "steps": [{ "weight": 50 }, { "weight": 100 }], "hold": "200ms", "drainTimeout": "200ms",
            "analysis": { "minRequests": 5 } } }
    }))
    .expect("trafficshift");
    shifts
        .create(&PostParams::default(), &web)
        .await
        .expect("create web shift");
    wait_until(
        Duration::from_secs(30),
        "web Completed, api-green created",
        || async {
            let done = shifts.get("web").await.ok()?.status?.phase == Some(Phase::Completed);
            let api_preview = deploys.get_opt("api-green").await.ok()?.is_some();
            (done && api_preview).then_some(())
        },
    )
    .await;
    // A shutdown releases the Lease (an update), as `crossfade controller` does on SIGTERM.
    let _ = stop.send(());
    ctl.await.expect("controller task");

    let (granted, used) = (granted(), used(&audit));
    assert!(
        !used.is_empty(),
        "the audit log has no request from the controller"
    );
    let denied: Vec<_> = used.difference(&granted).collect();
    assert!(
        denied.is_empty(),
        "requests the ClusterRole does not allow: {denied:?}"
    );
    let excused: BTreeSet<Permission> = NOT_EXERCISED
        .iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect();
    let unused: Vec<_> = granted
        .difference(&used)
        .filter(|p| !excused.contains(*p))
        .collect();
    assert!(
        unused.is_empty(),
        "rules no request used (least privilege): {unused:?}"
    );
}
