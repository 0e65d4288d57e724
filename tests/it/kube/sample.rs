//! `deploy/examples/web`, the sample app of the walkthrough (README.md "On Kubernetes",
//! docs/kubernetes.md "Sample app"), held to what the walkthrough says: the kustomizations list
//! files that exist; the sample's manifests parse, keep their promises (non-root, read-only root
//! filesystem, readiness probe, resources) and run the bundled sample service with the arguments
//! they give; applied to the emulator and annotated as the walkthrough says, the rollout completes
//! with the real controller and proxy binaries, and a faulty v2 is rolled back.
//!
//! What the test does instead of a cluster: it plays the kubelet (runs the container's command
//! line as a local process, with the environment the image's `ENV` gives it, on 127.0.0.1 and a
//! free port instead of [::]:8080) and the EndpointSlice controller (as tests/it/kube/e2e.rs).
//! Two departures from the walkthrough, to keep the run short: the rollout policy is the e2e
//! tests' fast one (steps 20/50/100% held 2 s, [`Cluster::policy`]) instead of the default
//! (5/25/50/100% held 10 s, about a minute), and the route's host is `127.0.0.1` (the test's
//! client addresses the proxy by IP) instead of the default `web.default`.

use std::path::{Path, PathBuf};

use crossfade_controller::kube::crd::{Phase, TrafficShift, VerdictOutcome};
use crossfade_controller::kube::trigger::{ENABLED, IMAGE};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::Deserialize as _;
use serde_json::{json, Value};

use super::cluster::StatusLog;
use super::e2e::{load, Cluster, WAIT};
use super::shift::image;
use crate::support::trace::errors;
use crate::support::{free_addr, run_to_end, wait_until, Admin, SampleApp};

/// The sample app's directory.
fn sample_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/web")
}

/// The files `dir/kustomization.yaml` lists under `resources`; each must be a file.
fn resources(dir: &Path) -> Vec<PathBuf> {
    let path = dir.join("kustomization.yaml");
    let text = std::fs::read_to_string(&path).expect("read kustomization");
    let kustomization: Value = serde_yaml_ng::from_str(&text).expect("kustomization is YAML");
    assert_eq!(kustomization["kind"], "Kustomization", "{}", path.display());
    let listed = kustomization["resources"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no resources list", path.display()));
    assert!(!listed.is_empty(), "{}: no resources", path.display());
    listed
        .iter()
        .map(|r| {
            let file = dir.join(r.as_str().expect("a resource is a path"));
            assert!(
                file.is_file(),
                "{} lists {}, which is not a file",
                path.display(),
                file.display()
            );
            file
        })
        .collect()
}

/// Every non-empty YAML document of `path`, each with `apiVersion`, `kind` and `metadata.name`.
pub(super) fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read manifest");
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|doc| !doc.is_null())
        .collect();
    assert!(!docs.is_empty(), "{}: no document", path.display());
    for doc in &docs {
        for field in ["apiVersion", "kind"] {
            assert!(doc[field].is_string(), "{}: no {field}", path.display());
        }
        assert!(
            doc["metadata"]["name"].is_string(),
            "{}: no name",
            path.display()
        );
    }
    docs
}

/// The sample's objects, in kustomization order.
fn sample_objects() -> Vec<Value> {
    resources(&sample_dir())
        .iter()
        .flat_map(|f| documents(f))
        .collect()
}

/// The object of `kind` named `name` among `docs` (the documents of one or more manifests).
pub(super) fn find<T: serde::de::DeserializeOwned>(docs: &[Value], kind: &str, name: &str) -> T {
    let doc = docs
        .iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among the documents"));
    serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{kind} {name}: {e}"))
}

#[test]
fn every_kustomization_lists_only_files_that_exist_and_their_documents_parse() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    for dir in [deploy.clone(), sample_dir()] {
        for file in resources(&dir) {
            documents(&file);
        }
    }
    // The sample's TrafficShift (not in its kustomization: applying it starts a rollout) is a
    // valid TrafficShift with a rollout policy the controller accepts.
    let docs = documents(&sample_dir().join("trafficshift.yaml"));
    let shift: TrafficShift = find(&docs, "TrafficShift", "web");
    assert_eq!(shift.spec.deployment, "web");
    assert_eq!(shift.spec.images_text(), "app=crossfade-sample:v2");
    shift.spec.rollout.to_config().expect("a valid policy");
}

/// The sample's Deployment `web` and Service `web` say what the walkthrough relies on.
fn check_manifests(docs: &[Value]) -> Container {
    let web: Deployment = find(docs, "Deployment", "web");
    let spec = web.spec.as_ref().expect("spec");
    let pod = spec.template.spec.as_ref().expect("pod spec");
    let pod_security = pod.security_context.as_ref().expect("pod securityContext");
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(
        pod.containers.len(),
        1,
        "one container: the annotation names no container"
    );
    let app = pod.containers[0].clone();
    assert_eq!(app.name, "app");
    assert_eq!(app.image.as_deref(), Some("crossfade-sample:v1"));
    let security = app
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    let resources = app.resources.as_ref().expect("resources");
    assert!(resources
        .requests
        .as_ref()
        .is_some_and(|r| r.contains_key("memory")));
    assert!(resources
        .limits
        .as_ref()
        .is_some_and(|l| l.contains_key("memory")));
    let probe = app.readiness_probe.as_ref().expect("readinessProbe");
    let get = probe.http_get.as_ref().expect("an HTTP readiness probe");
    assert_eq!(get.path.as_deref(), Some("/healthz"));
    let port = app
        .ports
        .as_ref()
        .and_then(|p| p.first())
        .expect("a container port");
    assert_eq!(port.name.as_deref(), Some("http"));

    let service: Service = find(docs, "Service", "web");
    let service = service.spec.expect("service spec");
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone());
    let selector = service.selector.expect("selector");
    let labels = labels.expect("pod labels");
    assert!(
        selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
        "the Service selects the pods: {selector:?} vs {labels:?}"
    );
    app
}

/// Creates every object of `docs` in namespace `default` of the emulator, as
/// `kubectl apply -k deploy/examples/web` would.
async fn apply(client: &kube::Client, docs: &[Value]) {
    for doc in docs {
        let kind = doc["kind"].as_str().unwrap_or_default();
        match kind {
            "Deployment" => {
                let d: Deployment = serde_json::from_value(doc.clone()).expect("deployment");
                let api: Api<Deployment> = Api::default_namespaced(client.clone());
                api.create(&PostParams::default(), &d)
                    .await
                    .expect("create deployment");
            }
            "Service" => {
                let s: Service = serde_json::from_value(doc.clone()).expect("service");
                let api: Api<Service> = Api::default_namespaced(client.clone());
                api.create(&PostParams::default(), &s)
                    .await
                    .expect("create service");
            }
            other => panic!("the sample has a {other}: teach this test to apply it"),
        }
    }
}

/// What the kubelet would run for `n` pods `<name>-<i>` of `container` from an image whose `ENV`
/// is `env` (deploy/examples/web/Dockerfile): its args, with `$(POD_NAME)` expanded and the
/// listener moved to 127.0.0.1 and a free port. Each answers its readiness probe's path with 200.
async fn pods(
    dir: &Path,
    container: &Container,
    name: &str,
    n: usize,
    env: &[(&str, &str)],
) -> Vec<SampleApp> {
    let mut pods = Vec::new();
    for i in 0..n {
        let pod = format!("{name}-{i}");
        let addr = free_addr();
        let args: Vec<String> = container
            .args
            .clone()
            .expect("container args")
            .into_iter()
            .map(|a| match a.as_str() {
                "--bind=::" => "--bind=127.0.0.1".to_owned(),
                "--port=8080" => format!("--port={}", addr.port()),
                _ => a.replace("$(POD_NAME)", &pod),
            })
            .collect();
        assert_eq!(args[0], "sample-app", "{args:?}");
        assert!(
            args.contains(&format!("--port={}", addr.port())),
            "{args:?}"
        );
        let app = SampleApp::start_args(dir, &pod, addr, &args, env).await;
        let probe = container
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref());
        let path = probe.and_then(|g| g.path.clone()).expect("probe path");
        let (status, _) = Admin::new(addr).get_text(&path).await.expect("probe");
        assert_eq!(status, 200, "{pod} {path}");
        pods.push(app);
    }
    pods
}

/// Step 2 of the walkthrough, `kubectl annotate deploy/web crossfade.dev/enabled=true
/// crossfade.dev/image=<image>`; the Deployment reconciler (run in-process until it has made
/// TrafficShift `web`, so no rollout starts before the policy is set) makes the TrafficShift,
/// whose policy and route the test then shortens (module doc).
async fn annotate(cluster: &Cluster, image_ref: &str) {
    let client = &cluster.client;
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let patch = json!({ "metadata": { "annotations": { ENABLED: "true", IMAGE: image_ref } } });
    deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("annotate");
    let trigger = tokio::spawn(crossfade_controller::kube::reconcile::run(
        client.clone(),
        Some("default"),
        None,
    ));
    let shifts: Api<TrafficShift> = Api::default_namespaced(client.clone());
    let made = wait_until(WAIT, "the trigger's TrafficShift web", || async {
        shifts.get_opt("web").await.expect("get trafficshift")
    })
    .await;
    trigger.abort();
    assert_eq!(made.spec.images_text(), format!("app={image_ref}"));
    let patch = json!({ "spec": Cluster::policy() });
    shifts
        .patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("set the policy");
}

/// The sample applied, its pods running v1 (blue), TrafficShift `web` asking for `image_ref`, and
/// its preview's pods running with `green_env`: the proxy under load and the controller.
struct Scenario {
    cluster: Cluster,
    proxy: crate::support::Crossfade,
    controller: crate::support::Crossfade,
    trace: crate::support::trace::Trace,
    _pods: Vec<SampleApp>,
}

async fn scenario(image_ref: &str, green_env: &[(&str, &str)]) -> Option<Scenario> {
    let docs = sample_objects();
    let container = check_manifests(&docs);
    let cluster = Cluster::start()?;
    let path = cluster.dir.path().to_owned();
    // Step 1: `kubectl apply -k deploy/examples/web`; the image crossfade-sample:v1 has
    // CROSSFADE_SAMPLE_VERSION=v1.
    apply(&cluster.client, &docs).await;
    let blue = pods(
        &path,
        &container,
        "web-blue",
        2,
        &[("CROSSFADE_SAMPLE_VERSION", "v1")],
    )
    .await;
    cluster.publish("web-blue", &blue).await;
    annotate(&cluster, image_ref).await;
    let (proxy, listen, _admin) = cluster.proxy(&[]).await;
    let trace = load(listen);
    trace.wait_requests(50, WAIT).await;
    let controller = cluster.controller(&[]);
    let green = pods(&path, &container, "web-green", 1, green_env).await;
    cluster.provision_green_with(&green, image_ref).await;
    let mut all = blue;
    all.extend(green);
    Some(Scenario {
        cluster,
        proxy,
        controller,
        trace,
        _pods: all,
    })
}

#[tokio::test]
async fn the_sample_app_applied_and_annotated_as_the_walkthrough_says_rolls_out_to_v2_and_completes(
) {
    let Some(mut s) = scenario("crossfade-sample:v2", &[("CROSSFADE_SAMPLE_VERSION", "v2")]).await
    else {
        return;
    };
    let log = StatusLog::start(s.cluster.client.clone(), "web");
    let done = s
        .cluster
        .status_until("Completed", |st| st.phase == Some(Phase::Completed))
        .await;
    let records = s.trace.stop().await;
    let failed = errors(&records);
    assert!(
        failed.is_empty(),
        "{} failed, first {:?}\n{}",
        failed.len(),
        failed.first(),
        s.controller.log()
    );
    // Step 3, watch: the version share moved from v1 to v2 (curl through the proxy).
    let version = |v: &str| {
        records
            .iter()
            .filter(|r| r.outcome.as_ref().is_ok_and(|a| a.version == v))
            .count()
    };
    assert!(
        version("v1") > 0 && version("v2") > 0,
        "v1 {} v2 {}",
        version("v1"),
        version("v2")
    );
    log.until("the log to see Completed", |st| {
        st.phase == Some(Phase::Completed)
    })
    .await;
    assert_eq!(log.preview_weights(), [0, 2000, 5000, 10_000, 0]);
    let verdict = done.last_verdict.expect("a verdict");
    assert_eq!(verdict.outcome, VerdictOutcome::Pass, "{verdict:?}");
    // Step 4, done: the Deployment runs v2, the preview is gone; `crossfade status --kube web`
    // says so.
    let deploys: Api<Deployment> = Api::default_namespaced(s.cluster.client.clone());
    let web = deploys.get("web").await.expect("web");
    assert_eq!(image(&web), "crossfade-sample:v2");
    assert!(deploys.get_opt("web-green").await.expect("get").is_none());
    let kubeconfig = s.cluster.kubeconfig();
    let out = run_to_end(
        [
            "status".as_ref(),
            "--kube".as_ref(),
            "--kubeconfig".as_ref(),
            kubeconfig.as_os_str(),
            "web".as_ref(),
        ],
        WAIT,
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("Completed"), "{}", out.stdout);
    let _ = s.controller.terminate(WAIT).await;
    let _ = s.proxy.terminate(WAIT).await;
}

#[tokio::test]
async fn the_walkthroughs_faulty_v2_image_is_rolled_back_by_its_error_rate() {
    // crossfade-sample:v2-bad: --build-arg VERSION=v2-bad --build-arg ERROR_RATE=0.2.
    let env = [
        ("CROSSFADE_SAMPLE_VERSION", "v2-bad"),
        ("CROSSFADE_SAMPLE_ERROR_RATE", "0.2"),
    ];
    let Some(mut s) = scenario("crossfade-sample:v2-bad", &env).await else {
        return;
    };
    let done = s
        .cluster
        .status_until("RolledBack", |st| st.phase == Some(Phase::RolledBack))
        .await;
    let verdict = done.last_verdict.clone().expect("a verdict");
    assert_eq!(verdict.outcome, VerdictOutcome::Fail, "{verdict:?}");
    assert!(verdict.summary.contains("error rate"), "{verdict:?}");
    let records = s.trace.stop().await;
    let failed = errors(&records);
    assert!(!failed.is_empty(), "the faulty v2 was never exercised");
    assert!(
        failed
            .iter()
            .all(|r| r.outcome.as_ref().is_ok_and(|a| a.version == "v2-bad")),
        "only v2-bad fails: {:?}",
        failed
            .iter()
            .find(|r| r.outcome.as_ref().is_ok_and(|a| a.version != "v2-bad"))
    );
    let deploys: Api<Deployment> = Api::default_namespaced(s.cluster.client.clone());
    let web = deploys.get("web").await.expect("web");
    assert_eq!(
        image(&web),
        "crossfade-sample:v1",
        "the Deployment is never touched"
    );
    let _ = s.controller.terminate(WAIT).await;
    let _ = s.proxy.terminate(WAIT).await;
}
