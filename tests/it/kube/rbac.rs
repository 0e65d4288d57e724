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
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

use super::cluster::{FakeProxies, Kubelet};
use super::emulator::Emulator;
use super::objects::deployment;
use crate::support::wait_until;

const TOKEN: &str = "crossfade-controller";

/// The controller's namespace in deploy/ (its leader Lease's).
const CONTROLLER_NAMESPACE: &str = "crossfade-system";

/// The proxies' Lease namespace in deploy/ (their `--lease-namespace`, the controller's
/// `--proxy-namespace`).
const PROXY_LEASES: &str = "crossfade-proxy-leases";

/// (API group, resource, verb).
pub(super) type Permission = (String, String, String);

/// Rules granted but not exercised by this test, with why they are needed.
const NOT_EXERCISED: [(&str, &str, &str); 4] = [
    // kube-runtime's Recorder patches an Event that repeats within its window into a series.
    ("events.k8s.io", "events", "patch"),
    // The store re-reads the status after a 409 Conflict (tests/it/kube/store.rs).
    ("crossfade.dev", "trafficshifts/status", "get"),
    // Gate and check headers read from Secrets (tests/it/kube/secret_headers.rs).
    ("", "secrets", "get"),
    // Check and metrics source headers read from ConfigMaps (tests/it/kube/secret_headers.rs).
    ("", "configmaps", "get"),
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

/// What the controller's ServiceAccount is granted by deploy/controller/rbac.yaml, in any
/// namespace (the test runs in `default`; [`the_proxies_may_write_no_lease_where_the_leader_lease_is`]
/// checks where).
fn granted() -> BTreeSet<Permission> {
    permissions(&grants_of(
        &["deploy/controller/rbac.yaml"],
        ("crossfade-system", "crossfade-controller"),
    ))
}

/// A grant: (namespace, or `*` for every namespace; API group; resource; verb).
pub(super) type Grant = (String, String, String, String);

/// The grants without where they apply.
pub(super) fn permissions(grants: &BTreeSet<Grant>) -> BTreeSet<Permission> {
    grants
        .iter()
        .map(|(_, g, r, v)| (g.clone(), r.clone(), v.clone()))
        .collect()
}

/// What ServiceAccount `(namespace, name)` may do by the RBAC objects of `files` (relative to
/// the repository), as the API server's RBAC authorizer decides it: a ClusterRoleBinding grants
/// its ClusterRole's rules in every namespace (`*`), a RoleBinding its Role's or ClusterRole's in
/// the binding's namespace only. A binding whose role is not among `files` fails the test.
pub(super) fn grants_of(files: &[&str], account: (&str, &str)) -> BTreeSet<Grant> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs: Vec<serde_json::Value> = files
        .iter()
        .flat_map(|f| super::sample::documents(&root.join(f)))
        .collect();
    let role = |kind: &str, namespace: Option<&str>, name: &str| -> Vec<(String, String, String)> {
        let doc = docs
            .iter()
            .find(|d| {
                d["kind"] == kind
                    && d["metadata"]["name"] == name
                    && namespace.is_none_or(|ns| d["metadata"]["namespace"] == ns)
            })
            .unwrap_or_else(|| panic!("{files:?}: no {kind} {name} in {namespace:?}"));
        let mut out = Vec::new();
        for rule in doc["rules"].as_array().expect("rules") {
            let strings = |k: &str| -> Vec<String> {
                let list = rule[k]
                    .as_array()
                    .unwrap_or_else(|| panic!("{k} in {rule}"));
                list.iter()
                    .map(|v| v.as_str().expect("string").to_owned())
                    .collect()
            };
            assert!(rule.get("resourceNames").is_none(), "resourceNames: {rule}");
            for g in strings("apiGroups") {
                for r in strings("resources") {
                    for v in strings("verbs") {
                        out.push((g.clone(), r.clone(), v));
                    }
                }
            }
        }
        out
    };
    let mut out = BTreeSet::new();
    for binding in &docs {
        let kind = binding["kind"].as_str().unwrap_or_default();
        if kind != "ClusterRoleBinding" && kind != "RoleBinding" {
            continue;
        }
        let binding_ns = binding["metadata"]["namespace"].as_str();
        let bound = binding["subjects"]
            .as_array()
            .expect("subjects")
            .iter()
            .any(|s| {
                let ns = s["namespace"].as_str().or(binding_ns);
                s["kind"] == "ServiceAccount" && s["name"] == account.1 && ns == Some(account.0)
            });
        if !bound {
            continue;
        }
        let role_ref = &binding["roleRef"];
        let name = role_ref["name"].as_str().expect("roleRef.name");
        let (rules, scope) = match (kind, role_ref["kind"].as_str()) {
            ("ClusterRoleBinding", Some("ClusterRole")) => (role("ClusterRole", None, name), "*"),
            ("RoleBinding", Some("ClusterRole")) => (
                role("ClusterRole", None, name),
                binding_ns.expect("a RoleBinding's namespace"),
            ),
            ("RoleBinding", Some("Role")) => (
                role("Role", binding_ns, name),
                binding_ns.expect("a RoleBinding's namespace"),
            ),
            other => panic!("binding {name}: {other:?}"),
        };
        for (g, r, v) in rules {
            out.insert((scope.to_owned(), g, r, v));
        }
    }
    out
}

/// What the controller's requests needed, from the emulator's audit log.
fn used(audit: &std::path::Path) -> BTreeSet<Permission> {
    used_by(audit, TOKEN)
}

/// As [`used_by`], with the namespace of each request (`""`: across every namespace, or a
/// cluster-scoped resource) first.
pub(super) fn used_where(audit: &std::path::Path, user: &str) -> BTreeSet<Grant> {
    let text = std::fs::read_to_string(audit).expect("read audit log");
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("audit line"))
        .filter(|e| e["user"] == user)
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (s("namespace"), s("group"), s("resource"), s("verb"))
        })
        .collect()
}

/// What the requests made with bearer token `user` needed, from the emulator's audit log.
pub(super) fn used_by(audit: &std::path::Path, user: &str) -> BTreeSet<Permission> {
    used_where(audit, user)
        .into_iter()
        .map(|(_, group, resource, verb)| (group, resource, verb))
        .collect()
}

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
    // The namespaces of the install: the leader Lease in the controller's, the proxies' Leases in
    // theirs; the rollout in `default`.
    let metrics = FakeProxies::start_in(client.clone(), PROXY_LEASES);
    // A proxy killed hard two hours ago left its Lease: the leader deletes it (session 41).
    let proxy_leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), PROXY_LEASES);
    let dead = Timestamp::now() - SignedDuration::from_secs(7200);
    super::stale_leases::create(
        &proxy_leases,
        &super::stale_leases::lease("crossfade-proxy-dead", dead, true),
    )
    .await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let ctl = tokio::spawn(async move {
        let election = Election {
            namespace: CONTROLLER_NAMESPACE.into(),
            name: DEFAULT_LEASE.into(),
            identity: "rbac-test".into(),
            duration: Duration::from_secs(3),
        };
        let shutdown = async {
            let _ = stopped.await;
        };
        let options = crossfade_controller::kube::Controllers {
            proxy_namespaces: vec![PROXY_LEASES.to_owned()],
            ..crossfade_controller::kube::Controllers::new(Some("default"), metrics)
        };
        crossfade_controller::kube::run_elected(ctl_client, &options, election, shutdown)
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
    // One that does not decode: its InvalidSpec condition is written by a merge patch of
    // /status (controller/src/kube/shift/invalid.rs), the one status write that is not the
    // store's replace. Before, the ClusterRole lacked that `patch`: on a cluster the condition
    // was refused (403), and `kubectl describe` never said why nothing rolled out.
    let undecodable = json!({ "deployment": "nope", "images": { "app": "nope:v2" },
        "rollout": { "hold": "ten seconds" } });
    super::invalid::create(&client, "typo", undecodable).await;
    super::invalid::refused(&client, "typo", "spec.rollout.hold").await;
    wait_until(
        Duration::from_secs(30),
        "web Completed, api-green created, the stale proxy Lease deleted",
        || async {
            let done = shifts.get("web").await.ok()?.status?.phase == Some(Phase::Completed);
            let api_preview = deploys.get_opt("api-green").await.ok()?.is_some();
            let lease = proxy_leases.get_opt("crossfade-proxy-dead").await.ok()?;
            (done && api_preview && lease.is_none()).then_some(())
        },
    )
    .await;
    // A shutdown releases the Lease (an update), as `crossfade controller` does on SIGTERM.
    let _ = stop.send(());
    ctl.await.expect("controller task");

    // Every request allowed where it was made: a namespaced grant covers only its namespace, a
    // request across every namespace needs a cluster-wide one (kube27: Leases are read by Roles
    // in the proxies' namespace only).
    let grants = grants_of(
        &["deploy/controller/rbac.yaml"],
        (CONTROLLER_NAMESPACE, "crossfade-controller"),
    );
    let outside: Vec<_> = used_where(&audit, TOKEN)
        .into_iter()
        .filter(|(ns, g, r, v)| {
            let at =
                |scope: &str| grants.contains(&(scope.into(), g.clone(), r.clone(), v.clone()));
            !(at("*") || (!ns.is_empty() && at(ns)))
        })
        .collect();
    assert!(
        outside.is_empty(),
        "requests not allowed in their namespace (namespace \"\": all): {outside:?}"
    );

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

/// The values of `--flag=value` in the first container of Deployment `name` among `docs`.
fn flag_values(docs: &[serde_json::Value], name: &str, flag: &str) -> Vec<String> {
    let deployment: Deployment = super::sample::find(docs, "Deployment", name);
    let pod = deployment.spec.expect("spec").template.spec.expect("pod");
    let prefix = format!("{flag}=");
    pod.containers[0]
        .args
        .iter()
        .flatten()
        .filter_map(|a| a.strip_prefix(&prefix))
        .flat_map(|v| v.split(','))
        .map(str::to_owned)
        .collect()
}

/// Kube27: the ingress proxies' ServiceAccount could patch and delete every Lease in
/// crossfade-system, the controllers' leader Lease included (RBAC cannot limit `create` by name,
/// and the proxies' Lease names are their pods'): a compromised proxy could keep it held by a fake
/// holder, and no controller would lead. The install (deploy/ and the sidecar example) must give
/// the proxies Lease writes only where the controller reads proxy Leases, never where the leader
/// Lease is; the controller reads proxy Leases in exactly the namespaces it trusts, each granted
/// by a Role (not in every namespace); and in those namespaces, only proxies write Leases. The
/// RBAC objects are evaluated as the API server's authorizer would ([`grants_of`]).
#[test]
fn the_proxies_may_write_no_lease_where_the_leader_lease_is() {
    let install = [
        "deploy/controller/namespace.yaml",
        "deploy/controller/rbac.yaml",
        "deploy/controller/deployment.yaml",
        "deploy/proxy/ingress.yaml",
    ];
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs: Vec<serde_json::Value> = install
        .iter()
        .flat_map(|f| super::sample::documents(&root.join(f)))
        .collect();
    let kustomization = std::fs::read_to_string(root.join("deploy/kustomization.yaml"))
        .expect("read kustomization");
    for file in install {
        let listed = file.strip_prefix("deploy/").expect("under deploy/");
        assert!(
            kustomization.contains(&format!("- {listed}")),
            "{file} not in deploy/kustomization.yaml"
        );
    }
    let write = ["create", "update", "patch", "delete", "deletecollection"];
    let leases = |grants: &BTreeSet<Grant>, scope: &str, verbs: &[&str]| -> Vec<String> {
        grants
            .iter()
            .filter(|(ns, g, r, v)| {
                (ns == scope || ns == "*")
                    && g == "coordination.k8s.io"
                    && r == "leases"
                    && verbs.contains(&v.as_str())
            })
            .map(|(ns, _, _, v)| format!("{v} in {ns}"))
            .collect()
    };
    let namespace_of = |name: &str| -> String {
        let d: Deployment = super::sample::find(&docs, "Deployment", name);
        d.metadata.namespace.expect("namespace")
    };

    let controller_ns = namespace_of("crossfade-controller");
    let leader_ns = flag_values(&docs, "crossfade-controller", "--lease-namespace")
        .pop()
        .unwrap_or(controller_ns.clone()); // POD_NAMESPACE, as deployed
    let trusted = flag_values(&docs, "crossfade-controller", "--proxy-namespace");
    assert!(
        !trusted.is_empty(),
        "the controller trusts every namespace's Leases"
    );
    let proxy_lease_ns = flag_values(&docs, "crossfade-proxy", "--lease-namespace")
        .pop()
        .unwrap_or(namespace_of("crossfade-proxy"));
    let proxy: Deployment = super::sample::find(&docs, "Deployment", "crossfade-proxy");
    let proxy_account = proxy
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.service_account_name)
        .expect("the proxy's ServiceAccount");
    let proxy_grants = grants_of(&install, (&namespace_of("crossfade-proxy"), &proxy_account));
    let controller_grants = grants_of(&install, (&controller_ns, "crossfade-controller"));

    // The leader Lease: the controllers may take it, the proxies may not touch it.
    let taken = leases(&controller_grants, &leader_ns, &["get", "create", "update"]);
    assert_eq!(taken.len(), 3, "leader election in {leader_ns}: {taken:?}");
    let reach = leases(&proxy_grants, &leader_ns, &write);
    assert!(
        reach.is_empty(),
        "the proxies may write the leader Lease's namespace {leader_ns}: {reach:?}"
    );
    // The proxies' own Leases: written where the controller reads them.
    let own = leases(
        &proxy_grants,
        &proxy_lease_ns,
        &["create", "patch", "delete"],
    );
    assert_eq!(own.len(), 3, "{proxy_lease_ns}: {own:?}");
    assert!(
        trusted.contains(&proxy_lease_ns),
        "the proxies' Leases ({proxy_lease_ns}) are not in --proxy-namespace {trusted:?}"
    );
    // The controller reads exactly the trusted namespaces' Leases.
    let everywhere = leases(
        &controller_grants,
        "(no such namespace)",
        &["list", "watch"],
    );
    assert!(
        everywhere.is_empty(),
        "the controller reads Leases everywhere: {everywhere:?}"
    );
    for ns in &trusted {
        let read = leases(&controller_grants, ns, &["list", "watch"]);
        assert_eq!(read.len(), 2, "{ns}: {read:?}");
    }
    // In a trusted namespace, only the proxies write Leases (every ServiceAccount of the install);
    // the controller may delete them (stale proxy Leases, session 41: a delete forges no ack)
    // and write nothing else there.
    let accounts: BTreeSet<(String, String)> = docs
        .iter()
        .filter(|d| d["kind"] == "ServiceAccount")
        .map(|d| {
            let m = &d["metadata"];
            (
                m["namespace"].as_str().expect("ns").to_owned(),
                m["name"].as_str().expect("name").to_owned(),
            )
        })
        .collect();
    assert!(accounts.len() >= 2, "{accounts:?}");
    for (ns, name) in &accounts {
        if *name == proxy_account {
            continue;
        }
        let grants = grants_of(&install, (ns, name));
        let controller = *ns == controller_ns && name == "crossfade-controller";
        for trusted_ns in &trusted {
            let mut writes = leases(&grants, trusted_ns, &write);
            if controller {
                let delete = format!("delete in {trusted_ns}");
                assert!(writes.contains(&delete), "{ns}/{name}: no {delete}");
                writes.retain(|w| *w != delete);
            }
            assert!(
                writes.is_empty(),
                "{ns}/{name} may write proxy Leases: {writes:?}"
            );
        }
    }

    // The sidecar example: the controller may read Leases in the sidecar's namespace (to be
    // listed in --proxy-namespace, as its comment says) and delete stale ones, nothing else there.
    let sidecar = ["deploy/examples/sidecar.yaml"];
    let pod: k8s_openapi::api::core::v1::Pod = super::sample::find(
        &super::sample::documents(&root.join(sidecar[0])),
        "Pod",
        "storefront",
    );
    let shop = pod.metadata.namespace.expect("namespace");
    let read = grants_of(&sidecar, (&controller_ns, "crossfade-controller"));
    let expected: BTreeSet<Grant> = ["list", "watch", "delete"]
        .iter()
        .map(|v| {
            (
                shop.clone(),
                "coordination.k8s.io".into(),
                "leases".into(),
                (*v).into(),
            )
        })
        .collect();
    assert_eq!(read, expected);
    let comment = std::fs::read_to_string(root.join(sidecar[0])).expect("read sidecar");
    assert!(
        comment.contains(&format!("--proxy-namespace={proxy_lease_ns},{shop}")),
        "the sidecar example names the flag to set"
    );
}
