//! `crossfade proxy --kube`, the binary, against the emulator and in front of real sample-app
//! backends on 127.0.0.1: the test plays the controller (it writes TrafficShifts and their
//! `status.weights`) and the EndpointSlice controller (one slice per backend instance, since every
//! instance listens on 127.0.0.1 with its own port), and reads the proxy's Lease.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crossfade_controller::kube::crd::TrafficShift;
use crossfade_controller::kube::proxy_lease::{lease_name, ProxyLease, PROXY_LABEL};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::emulator::Emulator;
use crate::support::trace::{burst, errors, Trace, TraceConfig};
use crate::support::ws::Session;
use crate::support::{free_addr, run_to_end, wait_until, Admin, Crossfade, SampleApp};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const WAIT: Duration = Duration::from_secs(30);

/// A TrafficShift `name` in `default` whose route answers the tests' `Host: 127.0.0.1:<port>`.
fn shift(name: &str, route: Value) -> TrafficShift {
    serde_json::from_value(json!({
        "apiVersion": "crossfade.dev/v1alpha1",
        "kind": "TrafficShift",
        "metadata": { "name": name, "namespace": "default" },
        "spec": { "deployment": name, "images": { "app": "web:v2" }, "route": route }
    }))
    .expect("valid trafficshift")
}

/// An EndpointSlice `name` of Service `service` with one endpoint 127.0.0.1 at `port` (named
/// `http`), ready or not.
fn slice(name: &str, service: &str, port: u16, ready: bool) -> EndpointSlice {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": { "kubernetes.io/service-name": service }
        },
        "addressType": "IPv4",
        "endpoints": [{
            "addresses": ["127.0.0.1"],
            "conditions": { "ready": ready, "serving": ready, "terminating": !ready }
        }],
        "ports": [{ "name": "http", "port": port, "protocol": "TCP" }]
    }))
    .expect("valid endpointslice")
}

/// What a test runs: the emulator, its objects' APIs, backends, and the proxy child.
struct Setup {
    emu: Emulator,
    dir: tempfile::TempDir,
    shifts: Api<TrafficShift>,
    raw_shifts: Api<DynamicObject>,
    slices: Api<EndpointSlice>,
    leases: Api<Lease>,
    kubeconfig: std::path::PathBuf,
}

impl Setup {
    fn start() -> Option<Setup> {
        Setup::start_with(&[])
    }

    /// With more emulator arguments (e.g. `--audit FILE`).
    fn start_with(args: &[&str]) -> Option<Setup> {
        let emu = Emulator::start_with(args)?;
        let dir = crate::support::temp_dir();
        let kubeconfig = emu.kubeconfig(dir.path());
        let client = emu.client();
        Some(Setup {
            shifts: Api::namespaced(client.clone(), "default"),
            raw_shifts: Api::namespaced_with(
                client.clone(),
                "default",
                &ApiResource::erase::<TrafficShift>(&()),
            ),
            slices: Api::namespaced(client.clone(), "default"),
            leases: Api::namespaced(client, "default"),
            emu,
            dir,
            kubeconfig,
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    async fn create_shift(&self, shift: &TrafficShift) {
        self.shifts
            .create(&PostParams::default(), shift)
            .await
            .expect("create trafficshift");
    }

    /// Merge-patches `status` of TrafficShift `name` (as the controller's status writes do),
    /// untyped, so that a malformed status can be written.
    async fn set_status(&self, name: &str, status: Value) {
        let patch = Patch::Merge(json!({ "status": status }));
        self.raw_shifts
            .patch_status(name, &PatchParams::default(), &patch)
            .await
            .expect("patch status");
    }

    async fn set_weights(&self, name: &str, active: &str, preview: &str, generation: u64) {
        let weights = json!({ "active": active, "preview": preview, "generation": generation });
        self.set_status(name, json!({ "weights": weights })).await;
    }

    /// One slice per backend instance: `<service>-<i>`.
    async fn publish(&self, service: &str, apps: &[SampleApp]) {
        for (i, app) in apps.iter().enumerate() {
            let s = slice(&format!("{service}-{i}"), service, app.addr.port(), true);
            self.slices
                .create(&PostParams::default(), &s)
                .await
                .expect("create endpointslice");
        }
    }

    /// `crossfade proxy --kube` as replica `r1` with `extra` arguments; ready once `/readyz`
    /// answers (the admin API serves only after the first sync).
    async fn proxy(&self, extra: &[&str]) -> (Crossfade, SocketAddr, Admin) {
        self.proxy_with(&self.kubeconfig, extra).await
    }

    /// As [`Setup::proxy`] with another kubeconfig (e.g. [`Setup::kubeconfig_as`]).
    async fn proxy_with(
        &self,
        kubeconfig: &Path,
        extra: &[&str],
    ) -> (Crossfade, SocketAddr, Admin) {
        let (listen, admin) = (free_addr(), free_addr());
        let (listen_s, admin_s) = (listen.to_string(), admin.to_string());
        let mut args = vec![
            "proxy",
            "--kube",
            "--kubeconfig",
            kubeconfig.to_str().expect("utf-8 path"),
            "--replica",
            "r1",
            "--lease-namespace",
            "default",
            "--listen",
            &listen_s,
            "--admin",
            &admin_s,
        ];
        args.extend_from_slice(extra);
        let mut child = Crossfade::spawn(self.path(), "proxy.log", args);
        let admin = Admin::new(admin);
        child.wait_ready(&admin, WAIT).await;
        (child, listen, admin)
    }

    /// A kubeconfig for the emulator that authenticates with bearer token `token` (the audit
    /// log's user).
    fn kubeconfig_as(&self, token: &str) -> std::path::PathBuf {
        let text = std::fs::read_to_string(&self.kubeconfig).expect("read kubeconfig");
        let text = text.replace("user: {}", &format!("user: {{ token: {token} }}"));
        let path = self.path().join(format!("kubeconfig-{token}.yaml"));
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// The Lease of replica `r1`, once it lists `route` at `generation` or above.
    async fn lease_at(&self, route: &str, generation: u64) -> ProxyLease {
        let what = format!("lease of r1 listing {route} at generation {generation}");
        wait_until(WAIT, &what, || async {
            let lease = self
                .leases
                .get_opt(&lease_name("r1"))
                .await
                .expect("get lease")?;
            let lease = ProxyLease::from_lease(&lease).expect("a proxy lease");
            (lease.applied.get(route).copied()? >= generation).then_some(lease)
        })
        .await
    }
}

/// Answers by `X-Pool` of a burst of `n` requests (any failure counted as `"error"`).
async fn split(listen: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut config = TraceConfig::new(listen);
    config.conns = 4;
    let mut counts = BTreeMap::new();
    for record in burst(&config, n).await {
        let key = match record.pool() {
            Some(pool) if !record.is_error() => pool.to_owned(),
            _ => "error".to_owned(),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn the_proxy_serves_blue_until_weights_are_published_then_shifts_and_acknowledges_them() {
    let Some(setup) = Setup::start() else { return };
    let blue = SampleApp::start_many(setup.path(), "blue", 2).await;
    let green = SampleApp::start_many(setup.path(), "green", 1).await;
    setup
        .create_shift(&shift(
            "web",
            json!({ "hosts": ["127.0.0.1"], "port": "http" }),
        ))
        .await;
    setup.publish("web-blue", &blue).await;
    setup.publish("web-green", &green).await;
    let args = ["--namespace", "default", "--shutdown-delay", "10s"];
    let (mut proxy, listen, admin) = setup.proxy(&args).await;

    // No status.weights yet: everything to blue, and the Lease says generation 0.
    let lease = setup.lease_at("default/web", 0).await;
    assert_eq!(lease.replica, "r1");
    assert_eq!(lease.admin_url, format!("http://{}", admin.addr));
    assert_eq!(
        lease.applied,
        BTreeMap::from([("default/web".to_owned(), 0)])
    );
    assert_eq!(
        split(listen, 200).await,
        BTreeMap::from([("blue".to_owned(), 200)])
    );

    // Steady load across every weight change below: no request may fail on a table swap.
    let mut steady = TraceConfig::new(listen);
    steady.conns = 2;
    steady.rate = 50;
    steady.path = "/".into();
    let steady = Trace::start(steady);

    // The controller publishes 70/30 as generation 1: the proxy applies it and says so.
    setup.set_weights("web", "70%", "30%", 1).await;
    setup.lease_at("default/web", 1).await;
    let counts = split(listen, 1000).await;
    let green_share = counts.get("green").copied().unwrap_or(0);
    assert_eq!(counts.get("error"), None, "{counts:?}");
    // 30% of 1000 picks: the binomial's standard deviation is 14.5, so 200..400 is ±6.9 sigma.
    assert!((200..400).contains(&green_share), "{counts:?}");

    // All to green (generation 2): no request reaches blue.
    setup.set_weights("web", "0%", "100%", 2).await;
    setup.lease_at("default/web", 2).await;
    assert_eq!(
        split(listen, 200).await,
        BTreeMap::from([("green".to_owned(), 200)])
    );
    steady.wait_requests(20, WAIT).await;
    let records = steady.stop().await;
    let failed = errors(&records);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed across the weight changes: {:?}",
        failed.len(),
        records.len(),
        failed.first()
    );

    // The Lease has the protocol's label and duration; SIGTERM deletes it.
    let raw = setup.leases.get(&lease_name("r1")).await.expect("lease");
    let labels = raw.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get(PROXY_LABEL).map(String::as_str), Some("true"));
    let spec = raw.spec.expect("lease spec");
    assert_eq!(spec.lease_duration_seconds, Some(15));
    assert_eq!(spec.holder_identity.as_deref(), Some("r1"));
    // SIGTERM: the Lease goes at once, and the proxy keeps serving for --shutdown-delay (10 s,
    // ample for the requests below) before it drains and exits.
    let pid = nix::unistd::Pid::from_raw(proxy.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    wait_until(WAIT, "the lease deleted", || async {
        let lease = setup.leases.get_opt(&lease_name("r1")).await.expect("get");
        lease.is_none().then_some(())
    })
    .await;
    let counts = split(listen, 50).await;
    assert_eq!(
        counts,
        BTreeMap::from([("green".to_owned(), 50)]),
        "{}",
        proxy.log()
    );
    let status = proxy.wait_exit(WAIT).await;
    assert!(status.success(), "{status:?}\n{}", proxy.log());
    assert!(proxy
        .log()
        .contains("still serving for 10s (--shutdown-delay) before draining"));
}

#[tokio::test]
async fn endpoints_removed_or_not_ready_get_no_new_request_and_no_client_sees_an_error() {
    let Some(setup) = Setup::start() else { return };
    let blue = SampleApp::start_many(setup.path(), "blue", 3).await;
    setup
        .create_shift(&shift("web", json!({ "hosts": ["127.0.0.1"] })))
        .await;
    setup.publish("web-blue", &blue).await;
    let (_proxy, listen, admin) = setup.proxy(&[]).await;
    setup.lease_at("default/web", 0).await;

    let mut config = TraceConfig::new(listen);
    config.path = "/".into();
    let trace = Trace::start(config);
    trace.wait_requests(150, WAIT).await;
    // blue-1's pod is shutting down: its endpoint turns terminating, not ready. blue-2's endpoint
    // leaves its slice (the pod is gone).
    let terminating = Patch::Merge(json!({
        "endpoints": [{ "addresses": ["127.0.0.1"], "conditions": { "ready": false, "serving": true, "terminating": true } }]
    }));
    let removed = Patch::Merge(json!({ "endpoints": [] }));
    for (slice, patch) in [("web-blue-1", terminating), ("web-blue-2", removed)] {
        setup
            .slices
            .patch(slice, &PatchParams::default(), &patch)
            .await
            .expect("patch slice");
    }
    let out = wait_until(WAIT, "blue-1 and blue-2 out of the table", || async {
        let status = admin.status().await;
        let endpoints = &status["routes"][0]["blue"]["endpoints"];
        (endpoints.as_array()?.len() == 1).then_some(Instant::now())
    })
    .await;
    assert_eq!(
        admin.status().await["routes"][0]["blue"]["endpoints"],
        json!([blue[0].addr.to_string()])
    );
    trace.wait_requests(300, WAIT).await;
    let records = trace.stop().await;
    for leaving in &blue[1..] {
        let name = Some(leaving.instance.as_str());
        let before = records
            .iter()
            .filter(|r| r.started < out && r.instance() == name);
        assert!(
            before.count() > 0,
            "{} never served: the test proves nothing",
            leaving.instance
        );
        let late = records
            .iter()
            .filter(|r| r.started > out && r.instance() == name);
        let late = late.count();
        assert_eq!(
            late, 0,
            "{late} requests reached {} after it left the table",
            leaving.instance
        );
    }
    let failed = errors(&records);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        records.len(),
        failed.first()
    );
    let after = records.iter().filter(|r| r.started > out).count();
    assert!(after >= 250, "only {after} requests after the change");
}

#[tokio::test]
async fn a_sidecar_serves_its_one_trafficshift_for_every_host() {
    let Some(setup) = Setup::start() else { return };
    let blue = SampleApp::start_many(setup.path(), "blue", 1).await;
    // Hosts the test's requests never carry: a sidecar ignores them.
    setup
        .create_shift(&shift(
            "web",
            json!({ "hosts": ["web.example"], "pathPrefix": "/api" }),
        ))
        .await;
    setup.create_shift(&shift("other", json!({}))).await;
    setup.publish("web-blue", &blue).await;
    setup.publish("other-blue", &blue).await;
    let (_proxy, listen, admin) = setup.proxy(&["--route", "default/web"]).await;
    let lease = setup.lease_at("default/web", 0).await;
    assert_eq!(
        lease.applied,
        BTreeMap::from([("default/web".to_owned(), 0)])
    );
    let status = admin.status().await;
    let routes = status["routes"].as_array().expect("routes");
    assert_eq!(routes.len(), 1, "{status}");
    assert_eq!(routes[0]["hosts"], json!([]));
    assert_eq!(routes[0]["path_prefix"], "/");
    let mut config = TraceConfig::new(listen);
    config.path = "/anything".into();
    let records = burst(&config, 50).await;
    assert!(records
        .iter()
        .all(|r| r.pool() == Some("blue") && !r.is_error()));
}

/// C07 in Kubernetes mode, through the real `crossfade proxy --kube` as a sidecar (`--route`):
/// a WebSocket opened to blue is not cut when the rollout's weights (`status.weights`) move
/// everything to green, while new WebSockets go to green; when blue's endpoint leaves its
/// EndpointSlice (blue retired: its pod is gone), the session is drained as docs/kubernetes.md
/// ("Per-pod drain") says: kept for the proxy's `drain_timeout` (3 s from `--config`), then
/// closed with 1001 "going away" and a clean TCP end, no message lost. Green's sessions are
/// untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c07_kube_a_websocket_to_retired_blue_is_drained_with_going_away_and_new_ones_go_to_green()
{
    const DRAIN: Duration = Duration::from_secs(3);
    const EVERY: Duration = Duration::from_millis(250);
    let Some(setup) = Setup::start() else { return };
    let blue = SampleApp::start_many(setup.path(), "blue", 1).await;
    let green = SampleApp::start_many(setup.path(), "green", 1).await;
    let route = json!({ "hosts": ["127.0.0.1"], "port": "http" });
    setup.create_shift(&shift("web", route)).await;
    setup.publish("web-blue", &blue).await;
    setup.publish("web-green", &green).await;
    let config = setup.path().join("proxy-settings.yaml");
    std::fs::write(&config, format!("drain_timeout: {}s\n", DRAIN.as_secs()))
        .expect("write config");
    let config = config.to_str().expect("utf-8 path");
    let args = ["--route", "default/web", "--config", config];
    let (mut proxy, listen, admin) = setup.proxy(&args).await;
    setup.lease_at("default/web", 0).await;

    // No weights published yet: the WebSocket goes to blue.
    let old = Session::open(listen, EVERY).await;
    assert_eq!(old.pool, "blue");

    // The rollout moves all weight to green (generation 1): new WebSockets go to green, the one
    // to blue stays (a weight change never cuts an upgraded connection).
    setup.set_weights("web", "0%", "100%", 1).await;
    setup.lease_at("default/web", 1).await;
    let mut on_green = Vec::new();
    for _ in 0..3 {
        let session = Session::open(listen, EVERY).await;
        assert_eq!(session.pool, "green", "a new WebSocket after 100% to green");
        on_green.push(session);
    }
    let upgraded = |backend: &'static str| {
        let admin = &admin;
        async move { admin.status().await["routes"][0][backend]["upgraded"].as_u64() }
    };
    wait_until(WAIT, "blue's WebSocket counted after the shift", || async {
        (upgraded("blue").await == Some(1)).then_some(())
    })
    .await;

    // Blue retired: its pod is gone, its endpoint leaves the slice.
    let left = Instant::now();
    let removed = Patch::Merge(json!({ "endpoints": [] }));
    setup
        .slices
        .patch("web-blue-0", &PatchParams::default(), &removed)
        .await
        .expect("patch slice");
    wait_until(WAIT, "blue's endpoint out of the table", || async {
        let status = admin.status().await;
        let endpoints = status["routes"][0]["blue"]["endpoints"].as_array()?.len();
        (endpoints == 0).then_some(())
    })
    .await;
    let late = Session::open(listen, EVERY).await;
    assert_eq!(late.pool, "green", "a new WebSocket after blue left");
    on_green.push(late);

    let log = old.finish(WAIT + DRAIN).await;
    assert_eq!(
        log.server_close,
        Some((CloseCode::Away, "going away".to_owned())),
        "{log:?}\n{}",
        proxy.log()
    );
    assert!(
        log.clean_end && log.error.is_none(),
        "reset instead of a close: {log:?}"
    );
    if let Err(problem) = log.check_echoes() {
        panic!("blue's session: {problem}: {log:?}");
    }
    // Kept for the drain timeout (counted from when the proxy saw the endpoint leave, which is
    // after `left`), not closed when the weights moved or the endpoint left.
    let closed_after = log.server_close_at.expect("close time") - left;
    eprintln!("c07 kube: blue's session closed {closed_after:?} after its endpoint left");
    assert!(
        closed_after >= DRAIN,
        "closed {closed_after:?} after blue left: {log:?}"
    );
    assert!(
        log.replies.len() >= 2,
        "blue's session echoed nothing: {log:?}"
    );
    wait_until(WAIT, "blue's WebSocket gone from the gauge", || async {
        (upgraded("blue").await.unwrap_or(0) == 0).then_some(())
    })
    .await;

    // Green's sessions were never closed by the proxy, and echoed everything.
    for session in &on_green {
        session.close();
    }
    for session in on_green {
        let log = session.finish(WAIT).await;
        assert_eq!(
            log.server_close, None,
            "a green session was closed: {log:?}"
        );
        assert!(
            log.client_closed && log.clean_end && log.error.is_none(),
            "{log:?}"
        );
        if let Err(problem) = log.check_echoes() {
            panic!("green's session: {problem}: {log:?}");
        }
    }
    let _ = proxy.terminate(WAIT).await;
}

#[tokio::test]
async fn bad_input_leaves_routes_as_they_were_and_says_which_field() {
    let Some(setup) = Setup::start() else { return };
    let blue = SampleApp::start_many(setup.path(), "blue", 1).await;
    let green = SampleApp::start_many(setup.path(), "green", 1).await;
    setup
        .create_shift(&shift("web", json!({ "hosts": ["127.0.0.1"] })))
        .await;
    setup
        .create_shift(&shift(
            "bad",
            json!({ "hosts": ["bad.example"], "port": "grpc" }),
        ))
        .await;
    setup.publish("web-blue", &blue).await;
    setup.publish("web-green", &green).await;
    setup.publish("bad-blue", &blue).await;
    let (mut proxy, listen, admin) = setup.proxy(&[]).await;
    setup.set_weights("web", "50%", "50%", 1).await;
    setup.lease_at("default/web", 1).await;

    // Unknown port name: not served, logged with the field; the other route is unaffected.
    let lease = setup.lease_at("default/web", 1).await;
    assert!(
        !lease.applied.contains_key("default/bad"),
        "{:?}",
        lease.applied
    );
    let logged = "trafficshift default/bad: EndpointSlice bad-blue-0: spec.route.port: no port \"grpc\" (ports: http=";
    wait_until(WAIT, "the port error in the log", || async {
        proxy.log().contains(logged).then_some(())
    })
    .await;

    // A malformed status: the route keeps generation 1's split, the Lease keeps generation 1.
    setup
        .set_status(
            "web",
            json!({ "weights": { "active": "half", "preview": "50%", "generation": 2 } }),
        )
        .await;
    let logged = "trafficshift default/web: status.weights: \"half\" is not a percentage";
    wait_until(WAIT, "the status error in the log", || async {
        proxy.log().contains(logged).then_some(())
    })
    .await;
    // Weights that do not sum to 100%: also refused, naming status.weights.
    setup.set_weights("web", "80%", "50%", 3).await;
    wait_until(WAIT, "the sum error in the log", || async {
        proxy
            .log()
            .contains("trafficshift default/web: status.weights: active 80% + preview 50% = 130%, must sum to 100%; route left as it was")
            .then_some(())
    })
    .await;
    let lease = setup.lease_at("default/web", 1).await;
    assert_eq!(lease.applied.get("default/web"), Some(&1));
    let status = admin.status().await;
    assert_eq!(
        status["routes"][0]["weights"],
        json!({ "blue": 5000, "green": 5000 })
    );
    let counts = split(listen, 200).await;
    assert_eq!(counts.get("error"), None, "{counts:?}");
    assert!(
        proxy.try_exit().is_none(),
        "the proxy exited:\n{}",
        proxy.log()
    );
    let metrics = admin.metrics().await;
    let refused = |route| metrics.get("crossfade_kube_trafficshift_refused", &[("route", route)]);
    assert_eq!(
        (refused("default/web"), refused("default/bad")),
        (Some(1.0), Some(1.0))
    );
    let applied = [("route", "default/web")];
    assert_eq!(
        metrics.get("crossfade_kube_applied_generation", &applied),
        Some(1.0)
    );
    assert_eq!(
        metrics.get(
            "crossfade_kube_applied_generation",
            &[("route", "default/bad")]
        ),
        None
    );

    // Fixed: applied at once.
    setup.set_weights("web", "100%", "0%", 4).await;
    setup.lease_at("default/web", 4).await;
    assert_eq!(
        split(listen, 100).await,
        BTreeMap::from([("blue".to_owned(), 100)])
    );
    let metrics = admin.metrics().await;
    let refused = metrics.get(
        "crossfade_kube_trafficshift_refused",
        &[("route", "default/web")],
    );
    assert_eq!(refused, Some(0.0));
    assert_eq!(
        metrics.get("crossfade_kube_applied_generation", &applied),
        Some(4.0)
    );
    let renewed = metrics.get("crossfade_kube_lease_renewals_total", &[("result", "ok")]);
    assert!(renewed >= Some(2.0), "{renewed:?}");
}

#[tokio::test]
async fn the_ingress_and_sidecar_roles_allow_every_request_of_the_proxy_and_nothing_unused() {
    let dir = crate::support::temp_dir();
    let audit = dir.path().join("audit.jsonl");
    let audit_arg = audit.to_string_lossy().into_owned();
    let Some(setup) = Setup::start_with(&["--audit", &audit_arg]) else {
        return;
    };
    let blue = SampleApp::start_many(setup.path(), "blue", 1).await;
    let route = json!({ "hosts": ["127.0.0.1"], "port": "http" });
    setup.create_shift(&shift("web", route)).await;
    setup.publish("web-blue", &blue).await;
    for (token, namespace, file, extra) in [
        (
            "crossfade-proxy",
            "crossfade-system",
            "deploy/proxy/ingress.yaml",
            &[][..],
        ),
        (
            "storefront",
            "shop",
            "deploy/examples/sidecar.yaml",
            &["--route", "default/web"][..],
        ),
    ] {
        let kubeconfig = setup.kubeconfig_as(token);
        let (mut proxy, _, _) = setup.proxy_with(&kubeconfig, extra).await;
        // A published generation: a renewal right after it is applied.
        let generation = if token == "storefront" { 2 } else { 1 };
        setup.set_weights("web", "100%", "0%", generation).await;
        setup.lease_at("default/web", generation).await;
        let status = proxy.terminate(WAIT).await;
        assert!(status.success(), "{status:?}\n{}", proxy.log());

        let (granted, used) = (
            super::rbac::permissions(&super::rbac::grants_of(&[file], (namespace, token))),
            super::rbac::used_by(&audit, token),
        );
        assert!(
            !used.is_empty(),
            "{file}: the audit log has no request of {token}"
        );
        let denied: Vec<_> = used.difference(&granted).collect();
        assert!(
            denied.is_empty(),
            "{file}: requests its roles do not allow: {denied:?}"
        );
        let unused: Vec<_> = granted.difference(&used).collect();
        assert!(
            unused.is_empty(),
            "{file}: rules no request used (least privilege): {unused:?}"
        );
    }
}

#[tokio::test]
async fn the_proxy_refuses_to_start_without_the_crd_or_with_a_malformed_route() {
    let omit = ["--omit", "crossfade.dev/v1alpha1/trafficshifts"];
    let Some(emu) = Emulator::start_with(&omit) else {
        return;
    };
    let dir = crate::support::temp_dir();
    let kubeconfig = emu.kubeconfig(dir.path());
    let kubeconfig = kubeconfig.to_str().expect("utf-8 path");
    let listen = free_addr().to_string();
    let admin = free_addr().to_string();
    let base = [
        "proxy",
        "--kube",
        "--kubeconfig",
        kubeconfig,
        "--listen",
        &listen,
        "--admin",
        &admin,
    ];
    let out = run_to_end(base, Duration::from_secs(30)).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains(
            "the TrafficShift CRD (trafficshifts.crossfade.dev, v1alpha1) is not installed"
        ),
        "{}",
        out.stderr
    );
    let mut args = base.to_vec();
    args.extend(["--route", "web"]);
    let out = run_to_end(args, Duration::from_secs(30)).await;
    // A usage error exits 2, as clap's own do (trial 20; it was 1).
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr
            .contains("--route \"web\": expected NAMESPACE/NAME of a TrafficShift"),
        "{}",
        out.stderr
    );
    // Trial 30: a namespace or a name no TrafficShift can have was waited for as one not created
    // yet; it is a usage error.
    for (route, why) in [
        ("Shop/web", "\"Shop\" cannot be a namespace"),
        (
            "shop/Web",
            "\"Web\" has 'W', which is not a lower-case letter",
        ),
        (
            "shop/1web",
            "\"1web\" does not start with a lower-case letter",
        ),
    ] {
        let mut args = base.to_vec();
        args.extend(["--route", route]);
        let out = run_to_end(args, Duration::from_secs(30)).await;
        assert_eq!(out.code, Some(2), "{route}: {out:?}");
        let want = format!("--route {route:?}: {why}");
        assert!(out.stderr.contains(&want), "{want}: {}", out.stderr);
    }
}

/// `GET /` on a fresh connection to `listen` with `Host: 127.0.0.1` and `extra` header lines.
async fn get_status(listen: SocketAddr, extra: &str) -> u16 {
    let mut conn = crate::support::RawConn::connect(listen).await;
    let request = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n");
    conn.send(request.as_bytes()).await;
    conn.read_response().await.status()
}

/// `spec.route.failOpen` reaches the proxy's route (kube27: the CRD had no such field, and every
/// route from the cluster failed open). Two TrafficShifts whose one blue endpoint refuses
/// connections: after 3 failures in a row outlier ejection holds it out; then `closed`
/// (`failOpen: false`) answers 503 "no endpoint", while `open` (not set: the default, true) keeps
/// sending its requests to it failing open (502 each, counted in
/// `crossfade_fail_open_requests_total`) and never answers 503.
#[tokio::test]
async fn fail_open_from_the_trafficshift_decides_what_a_route_whose_endpoints_are_all_ejected_answers(
) {
    let Some(setup) = Setup::start() else { return };
    let refused = free_addr().port(); // nothing listens there
    for (name, route) in [
        ("open", json!({ "hosts": ["open.test"] })),
        (
            "closed",
            json!({ "hosts": ["closed.test"], "failOpen": false }),
        ),
    ] {
        setup.create_shift(&shift(name, route)).await;
        let service = format!("{name}-blue");
        setup
            .slices
            .create(
                &PostParams::default(),
                &slice(&format!("{service}-0"), &service, refused, true),
            )
            .await
            .expect("create endpointslice");
    }
    let (_proxy, listen, admin) = setup.proxy(&["--namespace", "default"]).await;
    setup.lease_at("default/open", 0).await;
    setup.lease_at("default/closed", 0).await;
    let get = |host: &'static str| async move {
        let mut conn = crate::support::RawConn::connect(listen).await;
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        conn.send(request.as_bytes()).await;
        conn.read_response().await.status()
    };
    let fail_open = |route: &'static str| {
        let admin = &admin;
        async move {
            let metrics = admin.metrics().await;
            metrics.get(
                "crossfade_fail_open_requests_total",
                &[("route", route), ("backend", "blue")],
            )
        }
    };

    // failOpen: false: 502 until the endpoint is ejected, then 503.
    let mut closed = Vec::new();
    while closed.len() < 50 && closed.last() != Some(&503) {
        closed.push(get("closed.test").await);
    }
    assert_eq!(closed.last(), Some(&503), "{closed:?}");
    assert!(closed.iter().all(|s| *s == 502 || *s == 503), "{closed:?}");
    assert_eq!(fail_open("default/closed").await, Some(0.0));

    // Not set: never 503, and the requests past the ejection are sent failing open.
    let mut open = Vec::new();
    while open.len() < 50 && fail_open("default/open").await.unwrap_or(0.0) < 1.0 {
        open.push(get("open.test").await);
    }
    assert!(
        fail_open("default/open").await >= Some(1.0),
        "no request sent failing open: {open:?}"
    );
    assert!(open.iter().all(|s| *s == 502), "{open:?}");
}

/// C08 in Kubernetes mode: `spec.route.sticky` reaches the proxy's route (trial 29: the CRD had no
/// such field, so a rollout in the cluster could not be sticky, though docs/kubernetes.md spoke
/// of sticky routes). With `{ cookie: cf_user, set: true }` and 50/50 published, a first request
/// gets a site-wide cookie; each of 20 users, sending its cookie, is served by one pool every
/// time; with the preview at 0 every user is on blue. A route with two key sources is refused
/// naming `spec.route.sticky`.
#[tokio::test]
async fn c08_kube_sticky_from_the_trafficshift_keeps_each_user_on_one_pool() {
    let Some(setup) = Setup::start() else { return };
    let blue = SampleApp::start_many(setup.path(), "blue", 1).await;
    let green = SampleApp::start_many(setup.path(), "green", 1).await;
    let sticky = json!({ "cookie": "cf_user", "set": true });
    let route = json!({ "hosts": ["127.0.0.1"], "port": "http", "sticky": sticky });
    setup.create_shift(&shift("web", route)).await;
    let both = json!({ "hosts": ["bad.test"], "sticky": { "header": "X-User", "cookie": "c" } });
    setup.create_shift(&shift("bad", both)).await;
    setup.publish("web-blue", &blue).await;
    setup.publish("web-green", &green).await;
    let (proxy, listen, _admin) = setup.proxy(&["--namespace", "default"]).await;
    setup.set_weights("web", "50%", "50%", 1).await;
    setup.lease_at("default/web", 1).await;
    let get = |cookie: Option<String>| async move {
        let mut conn = crate::support::RawConn::connect(listen).await;
        let cookie = cookie
            .map(|c| format!("Cookie: {c}\r\n"))
            .unwrap_or_default();
        let request =
            format!("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n{cookie}Connection: close\r\n\r\n");
        conn.send(request.as_bytes()).await;
        conn.read_response().await
    };
    let mut pools = BTreeMap::<String, usize>::new();
    let mut cookies = Vec::new();
    for _ in 0..20 {
        let first = get(None).await;
        let set = first
            .header("set-cookie")
            .expect("a minted cookie")
            .to_owned();
        assert!(set.contains("; Path=/;"), "not site-wide: {set}");
        let cookie = set.split(';').next().unwrap().to_owned();
        let seen: Vec<String> = {
            let mut seen = Vec::new();
            for _ in 0..5 {
                let answer = get(Some(cookie.clone())).await;
                seen.push(answer.header("x-pool").unwrap_or("none").to_owned());
            }
            seen
        };
        assert!(seen.iter().all(|p| *p == seen[0]), "{cookie}: {seen:?}");
        *pools.entry(seen[0].clone()).or_default() += 1;
        cookies.push(cookie);
    }
    // 20 users at 50/50: one pool for all of them has probability 2 × 2⁻²⁰.
    assert_eq!(pools.len(), 2, "{pools:?}");
    setup.set_weights("web", "100%", "0%", 2).await;
    setup.lease_at("default/web", 2).await;
    for cookie in cookies {
        let answer = get(Some(cookie.clone())).await;
        assert_eq!(answer.header("x-pool"), Some("blue"), "{cookie}");
    }
    let logged = "spec.route.sticky: set exactly one of header, cookie, client_address";
    wait_until(WAIT, "the sticky error in the log", || async {
        let log = proxy.log();
        log.lines()
            .any(|l| l.contains("trafficshift default/bad") && l.contains(logged))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_config_file_gives_the_kube_proxy_its_limits_and_timeouts_on_routes_from_the_cluster() {
    let Some(setup) = Setup::start() else { return };
    // Every answer of this backend takes 1.5 s: below the default response timeout (30 s), above
    // the file's 500 ms.
    let slow = SampleApp::start(setup.path(), "blue", "blue-0", &["--latency", "1500"]).await;
    setup
        .create_shift(&shift("web", json!({ "hosts": ["127.0.0.1"] })))
        .await;
    let blue = [slow];
    setup.publish("web-blue", &blue).await;
    let config = setup.path().join("proxy-settings.yaml");
    std::fs::write(
        &config,
        "limits: { max_header_bytes: 8192 }\nupstream: { response_timeout: 500ms }\ndrain_timeout: 5s\n",
    )
    .expect("write config");
    let config = config.to_str().expect("utf-8 path");
    let args = ["--namespace", "default", "--config", config];
    let (_proxy, listen, _admin) = setup.proxy(&args).await;
    setup.lease_at("default/web", 0).await;

    // The route from the TrafficShift is served under the file's upstream.response_timeout (the
    // backend would answer 200 after 1.5 s) ...
    assert_eq!(get_status(listen, "").await, 504);
    // ... and the file's limits.max_header_bytes (8 KiB; the default 64 KiB would let this pass).
    let big = format!("X-Big: {}\r\n", "a".repeat(10_000));
    assert_eq!(get_status(listen, &big).await, 431);
}

#[tokio::test]
async fn the_kube_proxy_refuses_a_bad_config_file_at_start_naming_the_field() {
    // Checked before any connection to the cluster: no emulator needed.
    let dir = crate::support::temp_dir();
    for (text, expected) in [
        (
            "limits: { max_header_bytes: 100 }\n",
            "limits.max_header_bytes: 100 is outside 8192 to 1048576 bytes",
        ),
        (
            "upstream: { connect_timeout: 0s }\nroutes: []\n",
            "routes: not allowed here: the routes and their weights come from the cluster's \
             TrafficShifts",
        ),
        (
            "state_file: weights.json\n",
            "state_file: not allowed here: the routes and their weights come from the \
             cluster's TrafficShifts",
        ),
        ("limit: {}\n", "unknown field `limit`"),
        // Trial 20: TLS files that cannot be read were found after binding, without the
        // file's name.
        (
            "tls: { cert: missing.crt, key: missing.key }\n",
            "tls.cert: cannot read",
        ),
    ] {
        let path = dir.path().join("settings.yaml");
        std::fs::write(&path, text).expect("write config");
        let path = path.to_str().expect("utf-8 path");
        let args = [
            "proxy",
            "--kube",
            "--config",
            path,
            "--listen",
            "127.0.0.1:0",
        ];
        let out = run_to_end(args, Duration::from_secs(30)).await;
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(
            out.stderr
                .contains(&format!("proxy config {path} is not valid")),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains(expected), "{text}: {}", out.stderr);
    }
}

#[tokio::test]
async fn the_kube_proxy_terminates_tls_from_its_config_file_and_reloads_the_pair_on_sighup() {
    let Some(setup) = Setup::start() else { return };
    let blue = SampleApp::start_many(setup.path(), "blue", 1).await;
    setup
        .create_shift(&shift("web", json!({ "hosts": ["localhost"] })))
        .await;
    setup.publish("web-blue", &blue).await;
    let (cert, key) = (setup.path().join("tls.crt"), setup.path().join("tls.key"));
    let (_, chain, pem) = crate::clients::certificates("one");
    std::fs::write(&cert, chain).expect("write cert");
    std::fs::write(&key, pem).expect("write key");
    let config = setup.path().join("proxy-settings.yaml");
    let settings = json!({ "tls": { "cert": cert, "key": key, "watch_interval": "0s" } });
    std::fs::write(&config, serde_json::to_string(&settings).expect("json")).expect("write");
    let config = config.to_str().expect("utf-8 path");
    let args = ["--namespace", "default", "--config", config];
    let (proxy, listen, admin) = setup.proxy(&args).await;
    setup.lease_at("default/web", 0).await;
    // The traffic listener speaks TLS: a cleartext request is told so (400, "use https://")
    // and closed, never served.
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut conn = tokio::net::TcpStream::connect(listen)
        .await
        .expect("connect");
    conn.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, conn.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "the TLS listener kept a cleartext connection open"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("use https://"), "{answer}");

    // A renewed pair (cert-manager writes new files) is picked up on SIGHUP; a changed limit in
    // the settings file cannot be, and the log says so (trial report 3 §9).
    let (_, chain, pem) = crate::clients::certificates("two");
    std::fs::write(&cert, chain).expect("write cert");
    std::fs::write(&key, pem).expect("write key");
    let mut changed = settings.clone();
    changed["limits"] = json!({ "max_connections": 5 });
    std::fs::write(config, serde_json::to_string(&changed).expect("json")).expect("write");
    let pid = nix::unistd::Pid::from_raw(proxy.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    wait_until(WAIT, "the TLS pair reloaded", || async {
        let metrics = admin.metrics().await;
        let ok = metrics.get("crossfade_tls_reloads_total", &[("result", "ok")]);
        (ok == Some(1.0)).then_some(())
    })
    .await;
    assert!(proxy.log().contains("SIGHUP: TLS certificate reloaded"));
    // The warning comes after the TLS reload (its counter is what the wait above saw): wait for it.
    let not_reloaded = "need a restart or a binary upgrade (the values read at start stay in force): limits.max_connections";
    wait_until(WAIT, "the not-reloaded setting warned about", || async {
        proxy.log().contains(not_reloaded).then_some(())
    })
    .await;
}

#[test]
fn the_deploy_manifests_mount_valid_settings_where_their_config_flag_points() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in ["deploy/proxy/ingress.yaml", "deploy/examples/sidecar.yaml"] {
        let docs = super::sample::documents(&root.join(file));
        // The proxy container: the one whose args start with `proxy --kube`.
        let pod = docs
            .iter()
            .find_map(|d| match d["kind"].as_str() {
                Some("Deployment") => Some(&d["spec"]["template"]["spec"]),
                Some("Pod") => Some(&d["spec"]),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{file}: no pod"));
        let containers = pod["containers"].as_array().into_iter().flatten();
        let init = pod["initContainers"].as_array().into_iter().flatten();
        let proxy = containers
            .chain(init)
            .find(|c| c["args"][0] == "proxy")
            .unwrap_or_else(|| panic!("{file}: no proxy container"));
        let config = proxy["args"]
            .as_array()
            .expect("args")
            .iter()
            .find_map(|a| a.as_str()?.strip_prefix("--config="))
            .unwrap_or_else(|| panic!("{file}: no --config"));
        let (dir, key) = config.rsplit_once('/').expect("a path");
        let mount = proxy["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .find(|m| m["mountPath"] == dir)
            .unwrap_or_else(|| panic!("{file}: nothing mounted at {dir}"));
        let volume = pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap_or_else(|| panic!("{file}: no volume {}", mount["name"]));
        let map = volume["configMap"]["name"].as_str().expect("a ConfigMap");
        let data = docs
            .iter()
            .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == map)
            .unwrap_or_else(|| panic!("{file}: no ConfigMap {map}"))["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: ConfigMap {map} has no {key}"));
        let settings = crossfade_proxy::config::ProxyConfig::settings_from_yaml(data)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        // `crossfade check` takes the file for what it is, the settings of `proxy --kube
        // --config` (trial 25: it was read as a spec, `unknown field `drain_timeout``), and a
        // `run` or `proxy CONFIG` given it says what it looks like.
        let dir = crate::support::temp_dir();
        let path = dir.path().join(key);
        std::fs::write(&path, data).expect("write the settings");
        let run = |args: &[&std::ffi::OsStr]| {
            let out = std::process::Command::new(crate::support::BIN)
                .args(args)
                .output()
                .expect("run crossfade");
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            (out.status.code(), text)
        };
        let (code, out) = run(&["check".as_ref(), path.as_os_str()]);
        assert_eq!(code, Some(0), "{file}: check {key}: {out}");
        assert!(
            out.contains("ok (settings for `crossfade proxy --kube --config`"),
            "{file}: {out}"
        );
        for command in ["run", "proxy"] {
            let (code, out) = run(&[command.as_ref(), path.as_os_str()]);
            assert_eq!(code, Some(1), "{file}: {command} {key}: {out}");
            assert!(
                out.contains(
                    "this looks like the settings file of `crossfade proxy --kube --config FILE`"
                ),
                "{file}: {command} {key}: {out}"
            );
        }
        // The drain fits the pod's grace period.
        let grace = pod["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("grace");
        assert!(
            settings.drain_timeout < Duration::from_secs(grace),
            "{file}: drain_timeout {:?} vs grace {grace}s",
            settings.drain_timeout
        );
    }
}

/// Whether `selector` selects an object with `labels`; matchLabels only (an expression would need
/// its own evaluation here, so one fails the test).
fn selects(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    assert!(selector.match_expressions.is_none(), "matchExpressions");
    let wanted = selector.match_labels.clone().unwrap_or_default();
    wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Which ports the ingress rules of a NetworkPolicy open to all (rules with no peer), and the
/// peers of the rules that open `admin`; `number` reads a rule's port. Every rule must name its
/// ports (one that names none opens them all), someone must reach `admin`, and no `ipBlock` may.
fn ingress_rules(
    spec: &k8s_openapi::api::networking::v1::NetworkPolicySpec,
    number: impl Fn(&k8s_openapi::apimachinery::pkg::util::intstr::IntOrString) -> i32,
    admin: i32,
) -> (
    Vec<i32>,
    Vec<k8s_openapi::api::networking::v1::NetworkPolicyPeer>,
) {
    let mut open_to_all = Vec::new();
    let mut admin_peers = Vec::new();
    for rule in spec.ingress.as_deref().unwrap_or_default() {
        let ports: Vec<i32> = rule
            .ports
            .as_deref()
            .filter(|p| !p.is_empty())
            .expect("every rule names its ports")
            .iter()
            .map(|p| number(p.port.as_ref().expect("a port")))
            .collect();
        match rule.from.as_deref() {
            None | Some([]) => open_to_all.extend(ports),
            Some(peers) if ports.contains(&admin) => admin_peers.extend(peers.to_vec()),
            Some(_) => {}
        }
    }
    assert!(
        !admin_peers.is_empty(),
        "the admin port is reachable by someone"
    );
    for peer in &admin_peers {
        assert!(
            peer.ip_block.is_none(),
            "an ipBlock reaches the admin port: {peer:?}"
        );
    }
    (open_to_all, admin_peers)
}

/// The sidecar example's NetworkPolicy (`deploy/examples/sidecar.yaml`) selects the example's pod,
/// lets anyone reach the ports its app container declares and only the controller's pods (in the
/// controller's namespace: both selectors in one peer) and Prometheus' namespace the sidecar's
/// admin port, the port of its `--admin` flag; the sidecar's traffic listener is on loopback, out
/// of the policy's reach. Like the ingress' policy it is checked against its intent, not enforced
/// (the emulator has no network plugin).
#[test]
fn the_sidecar_network_policy_opens_the_apps_ports_to_all_and_the_admin_port_to_the_controller_only(
) {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs = super::sample::documents(&root.join("deploy/examples/sidecar.yaml"));
    let pod: Pod = super::sample::find(&docs, "Pod", "storefront");
    let policy: NetworkPolicy = super::sample::find(&docs, "NetworkPolicy", "storefront");
    let controller: Deployment = super::sample::find(
        &super::sample::documents(&root.join("deploy/controller/deployment.yaml")),
        "Deployment",
        "crossfade-controller",
    );
    assert_eq!(policy.metadata.namespace, pod.metadata.namespace);
    let labels = |meta: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>| {
        meta.and_then(|m| m.labels.clone()).expect("labels")
    };
    let pod_labels = labels(Some(&pod.metadata));
    let controller_labels = labels(controller.spec.as_ref().unwrap().template.metadata.as_ref());
    let controller_namespace = controller.metadata.namespace.clone().expect("namespace");
    let spec = policy.spec.as_ref().expect("policy spec");
    assert!(
        selects(spec.pod_selector.as_ref().unwrap(), &pod_labels),
        "selects the pod"
    );
    assert_eq!(
        spec.policy_types.as_deref(),
        Some(&["Ingress".to_owned()][..])
    );

    let pod_spec = pod.spec.as_ref().expect("pod spec");
    let sidecar = pod_spec
        .init_containers
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|c| c.name == "crossfade")
        .expect("the sidecar");
    let args = sidecar.args.clone().unwrap_or_default();
    let flag = |name: &str| -> SocketAddr {
        let value = args
            .iter()
            .find_map(|a| a.strip_prefix(&format!("{name}=")));
        value
            .unwrap_or_else(|| panic!("no {name}="))
            .parse()
            .expect("an address")
    };
    assert!(
        flag("--listen").ip().is_loopback(),
        "traffic stays in the pod"
    );
    let admin = i32::from(flag("--admin").port());
    let app_ports: Vec<i32> = pod_spec
        .containers
        .iter()
        .flat_map(|c| c.ports.clone().unwrap_or_default())
        .map(|p| p.container_port)
        .collect();
    assert!(!app_ports.is_empty() && !app_ports.contains(&admin));

    let number = |port: &IntOrString| match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => panic!("a named port ({name}): numbers, as the comment says"),
    };
    let (open_to_all, admin_peers) = ingress_rules(spec, number, admin);
    assert_eq!(
        open_to_all, app_ports,
        "the app's ports, and only those, are open to all"
    );
    for peer in &admin_peers {
        let namespaces = peer
            .namespace_selector
            .as_ref()
            .expect("a namespace selector");
        let namespace_labels = namespaces.match_labels.clone().unwrap_or_default();
        assert!(!namespace_labels.is_empty(), "every namespace: {peer:?}");
        if let Some(pods) = &peer.pod_selector {
            assert_eq!(
                namespace_labels.get("kubernetes.io/metadata.name"),
                Some(&controller_namespace),
                "pods of another namespace than the controller's: {peer:?}"
            );
            assert!(
                selects(pods, &controller_labels),
                "pods other than the controller: {peer:?}"
            );
        }
    }
}

/// `deploy/proxy/networkpolicy.yaml` lets anyone reach the ingress proxies' traffic port and only
/// the controller's pods (and Prometheus' namespace) their admin port, by port names the proxy
/// container declares with the numbers of its `--listen` and `--admin` flags. The emulator does not
/// enforce NetworkPolicies (no network plugin here), so this holds the manifest to its intent; on a
/// cluster with Calico or Cilium: `kubectl -n default run probe --rm -it --image=curlimages/curl --
/// curl -m 3 http://<proxy pod IP>:9901/healthz` times out, and the same from a controller pod answers.
#[test]
fn the_network_policy_opens_the_traffic_port_to_all_and_the_admin_port_to_the_controller_only() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs = |file: &str| super::sample::documents(&root.join(file));
    let proxy: Deployment = super::sample::find(
        &docs("deploy/proxy/ingress.yaml"),
        "Deployment",
        "crossfade-proxy",
    );
    let controller: Deployment = super::sample::find(
        &docs("deploy/controller/deployment.yaml"),
        "Deployment",
        "crossfade-controller",
    );
    let policy: NetworkPolicy = super::sample::find(
        &docs("deploy/proxy/networkpolicy.yaml"),
        "NetworkPolicy",
        "crossfade-proxy",
    );
    assert_eq!(policy.metadata.namespace, proxy.metadata.namespace);
    assert_eq!(policy.metadata.namespace, controller.metadata.namespace);
    let pod_labels = |d: &Deployment| {
        let template = &d.spec.as_ref().expect("spec").template;
        template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .expect("pod labels")
    };
    let (proxy_labels, controller_labels) = (pod_labels(&proxy), pod_labels(&controller));
    let spec = policy.spec.as_ref().expect("policy spec");
    // No podSelector selects every pod of the namespace, as {} does.
    let own = spec.pod_selector.clone().unwrap_or_default();
    assert!(selects(&own, &proxy_labels), "selects the proxies");
    assert!(!selects(&own, &controller_labels), "not the controllers");
    assert_eq!(
        spec.policy_types.as_deref(),
        Some(&["Ingress".to_owned()][..])
    );

    // The proxy container's ports by name, and the numbers its flags listen on.
    let pod = proxy
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .expect("pod spec");
    let container = pod
        .containers
        .iter()
        .find(|c| c.name == "proxy")
        .expect("proxy container");
    let args = container.args.clone().unwrap_or_default();
    let flag_port = |flag: &str| -> i32 {
        let value = args
            .iter()
            .find_map(|a| a.strip_prefix(&format!("{flag}=")))
            .unwrap_or_else(|| panic!("no {flag}="));
        value
            .parse::<SocketAddr>()
            .expect("an address")
            .port()
            .into()
    };
    let named = |name: &str| -> i32 {
        let ports = container.ports.as_deref().unwrap_or_default();
        let port = ports.iter().find(|p| p.name.as_deref() == Some(name));
        port.unwrap_or_else(|| panic!("no port named {name}"))
            .container_port
    };
    assert_eq!(named("http"), flag_port("--listen"));
    assert_eq!(named("admin"), flag_port("--admin"));
    let number = |port: &IntOrString| match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => named(name),
    };

    let (open_to_all, admin_peers) = ingress_rules(spec, number, named("admin"));
    assert_eq!(
        open_to_all,
        [named("http")],
        "only the traffic port is open to all"
    );
    for peer in &admin_peers {
        if let Some(pods) = &peer.pod_selector {
            assert!(
                peer.namespace_selector.is_none(),
                "pods of other namespaces: {peer:?}"
            );
            assert!(
                selects(pods, &controller_labels),
                "pods other than the controller: {peer:?}"
            );
        } else {
            let namespaces = peer.namespace_selector.as_ref().expect("a selector");
            let labels = namespaces.match_labels.clone().unwrap_or_default();
            assert!(
                !labels.is_empty(),
                "every namespace reaches the admin port: {peer:?}"
            );
        }
    }
    assert!(
        admin_peers.iter().any(|p| p.pod_selector.is_some()),
        "the controller reaches the admin port"
    );
}

/// SIGUSR1 and SIGUSR2 mean nothing to `crossfade proxy --kube`: each is logged as ignored, and
/// the proxy keeps serving and keeps following the cluster (weights published after the signals
/// are applied, acknowledged and routed by).
#[tokio::test]
async fn sigusr1_and_sigusr2_leave_the_proxy_in_the_cluster_serving_and_watching() {
    let Some(setup) = Setup::start() else { return };
    let blue = SampleApp::start_many(setup.path(), "blue", 1).await;
    let green = SampleApp::start_many(setup.path(), "green", 1).await;
    let route = json!({ "hosts": ["127.0.0.1"], "port": "http" });
    setup.create_shift(&shift("web", route)).await;
    setup.publish("web-blue", &blue).await;
    setup.publish("web-green", &green).await;
    let (mut proxy, listen, _admin) = setup.proxy(&["--namespace", "default"]).await;

    let log = crate::user_signals::send_user_signals(&proxy).await;
    assert!(
        log.contains("SIGUSR2 ignored: this command has no binary upgrade"),
        "{log}"
    );
    assert!(proxy.try_exit().is_none(), "the proxy exited: {log}");
    assert_eq!(
        split(listen, 20).await,
        BTreeMap::from([("blue".to_owned(), 20)])
    );
    setup.set_weights("web", "0%", "100%", 1).await;
    setup.lease_at("default/web", 1).await;
    assert_eq!(
        split(listen, 20).await,
        BTreeMap::from([("green".to_owned(), 20)])
    );
    let status = proxy.terminate(WAIT).await;
    assert!(status.success(), "{status}: {}", proxy.log());
}

/// `crossfade proxy --kube` under systemd `Type=notify-reload` (left without sd_notify before
/// session 13), over a real `NOTIFY_SOCKET` as in `tests/it/notify.rs`: `READY=1` once it serves
/// the first route set from the cluster, `RELOADING=1` + `MONOTONIC_USEC=` then `READY=1` around
/// a SIGHUP (TLS pair and access log), `STOPPING=1` on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kube_proxy_says_ready_reloading_and_stopping_on_the_notify_socket() {
    use crate::notify::{env, next, queued, signal};
    use nix::sys::signal::Signal;
    let Some(setup) = Setup::start() else { return };
    let blue = SampleApp::start_many(setup.path(), "blue", 1).await;
    setup
        .create_shift(&shift("web", json!({ "hosts": ["127.0.0.1"] })))
        .await;
    setup.publish("web-blue", &blue).await;
    let notify_path = setup.path().join("notify.sock");
    let notify = tokio::net::UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    let (listen, admin) = (free_addr(), free_addr());
    let (listen_s, admin_s) = (listen.to_string(), admin.to_string());
    let args = [
        "proxy",
        "--kube",
        "--kubeconfig",
        setup.kubeconfig.to_str().expect("utf-8 path"),
        "--replica",
        "r1",
        "--lease-namespace",
        "default",
        "--listen",
        &listen_s,
        "--admin",
        &admin_s,
    ];
    let mut proxy = Crossfade::spawn_env(setup.path(), "proxy.log", args, &env(&notify_path));

    // READY=1 only once serving: the admin API answers ready at once, no retry.
    assert_eq!(next(&notify, &proxy, "READY").await, "READY=1\n");
    let (status, _) = Admin::new(admin)
        .get_text("/readyz")
        .await
        .expect("the admin API");
    assert_eq!(status, 200);
    setup.lease_at("default/web", 0).await;
    assert_eq!(get_status(listen, "").await, 200, "{}", proxy.log());

    signal(proxy.pid(), Signal::SIGHUP);
    let reloading = next(&notify, &proxy, "RELOADING").await;
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading:?}"
    );
    assert_eq!(
        next(&notify, &proxy, "READY after the reload").await,
        "READY=1\n"
    );

    let exit = proxy.terminate(WAIT).await;
    assert!(exit.success(), "{exit}\n{}", proxy.log());
    assert_eq!(queued(&notify), ["STOPPING=1\n"], "{}", proxy.log());
}

/// Trial 26: the ingress proxies and the controllers ran two replicas each with nothing to keep
/// them apart or up together: both could land on one node (its loss takes the cluster's ingress
/// down) and a `kubectl drain` (a node upgrade) could evict both at once. Each Deployment now has
/// a PodDisruptionBudget that selects its pods and leaves at least one up, and spreads its
/// replicas over nodes (`kubernetes.io/hostname`, preferred: a one-node cluster such as kind
/// still schedules both).
#[test]
fn the_ingress_proxies_and_the_controllers_survive_a_node_drain_and_a_node_loss() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, name) in [
        ("deploy/proxy/ingress.yaml", "crossfade-proxy"),
        ("deploy/controller/deployment.yaml", "crossfade-controller"),
    ] {
        let docs = super::sample::documents(&root.join(file));
        let deployment: Deployment = super::sample::find(&docs, "Deployment", name);
        let pdb: PodDisruptionBudget = super::sample::find(&docs, "PodDisruptionBudget", name);
        assert_eq!(
            pdb.metadata.namespace, deployment.metadata.namespace,
            "{file}"
        );
        let spec = deployment.spec.as_ref().expect("spec");
        let replicas = spec.replicas.unwrap_or(1);
        assert!(replicas >= 2, "{file}: {replicas} replica(s)");
        let labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .expect("pod labels");
        let budget = pdb.spec.as_ref().expect("budget spec");
        assert!(
            selects(budget.selector.as_ref().expect("selector"), &labels),
            "{file}: the budget selects the pods"
        );
        let kept = match (&budget.max_unavailable, &budget.min_available) {
            (Some(IntOrString::Int(n)), None) => replicas - n,
            (None, Some(IntOrString::Int(n))) => *n,
            other => panic!("{file}: an integer maxUnavailable or minAvailable: {other:?}"),
        };
        assert!(
            (1..replicas).contains(&kept),
            "{file}: a drain keeps {kept} of {replicas} up (at least one, and never blocks)"
        );
        let pod = spec.template.spec.as_ref().expect("pod spec");
        let spread = pod
            .topology_spread_constraints
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|c| c.topology_key == "kubernetes.io/hostname")
            .unwrap_or_else(|| panic!("{file}: no spread over nodes"));
        assert_eq!(spread.when_unsatisfiable, "ScheduleAnyway", "{file}");
        assert!(
            selects(spread.label_selector.as_ref().expect("selector"), &labels),
            "{file}: the spread counts these pods"
        );
    }
}

/// Trial 26: every listener the kubelet's probes, the controller's scrapes or clients reach from
/// outside the pod was bound to `0.0.0.0` (IPv4 only). A pod's IP is IPv6 in an IPv6-only cluster
/// (and may be in a dual-stack one), where the probes then fail (the controller's liveness probe
/// restarts it for ever), the controller cannot scrape the proxies and clients cannot connect.
/// Each such flag in deploy/ now binds `[::]`, which on Linux also takes IPv4 (checked here: the
/// listener answers on 127.0.0.1 and on ::1). Loopback-only listeners (the sidecar's traffic
/// port) stay as they are.
#[tokio::test]
async fn every_listener_reached_from_outside_the_pod_binds_every_address_family() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = [
        "deploy/proxy/ingress.yaml",
        "deploy/controller/deployment.yaml",
        "deploy/examples/sidecar.yaml",
        "deploy/examples/web/deployment.yaml",
    ];
    let mut seen = 0;
    for file in files {
        for doc in super::sample::documents(&root.join(file)) {
            let pod = match doc["kind"].as_str() {
                Some("Deployment") => doc["spec"]["template"]["spec"].clone(),
                Some("Pod") => doc["spec"].clone(),
                _ => continue,
            };
            let containers = pod["containers"].as_array().into_iter().flatten();
            let init = pod["initContainers"].as_array().into_iter().flatten();
            for container in containers.chain(init) {
                let args = container["args"].as_array().into_iter().flatten();
                for arg in args.filter_map(|a| a.as_str()) {
                    let Some((flag, value)) = arg.split_once('=') else {
                        continue;
                    };
                    let ip: std::net::IpAddr = match flag {
                        "--listen" | "--admin" | "--metrics" => {
                            value.parse::<SocketAddr>().expect(arg).ip()
                        }
                        "--bind" => value.parse().expect(arg),
                        _ => continue,
                    };
                    if ip.is_loopback() {
                        continue;
                    }
                    seen += 1;
                    assert_eq!(
                        ip,
                        std::net::IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED),
                        "{file}: container {}: {arg}: IPv4 only",
                        container["name"]
                    );
                }
            }
        }
    }
    assert!(seen >= 5, "{seen} listeners");
    // `[::]` takes both families here (net.ipv6.bindv6only=0, Linux's default and a pod's).
    let dir = crate::support::temp_dir();
    let port = free_addr().port();
    let app = SampleApp::start_args(
        dir.path(),
        "dual",
        SocketAddr::from(([127, 0, 0, 1], port)),
        &[
            "sample-app".to_owned(),
            "--version=dual".to_owned(),
            "--bind=::".to_owned(),
            format!("--port={port}"),
        ],
        &[],
    )
    .await;
    for addr in [
        SocketAddr::from(([127, 0, 0, 1], port)),
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
    ] {
        let (status, body) = Admin::new(addr).get_text("/").await.expect("answer");
        assert_eq!((status, body.trim()), (200, "dual"), "{addr}");
    }
    drop(app);
}

/// The controller's and the ingress proxy's Deployments run as written: their `args` (only the
/// files' paths and the ports moved: the token and settings files to a temporary directory, the
/// listeners to free ports), with the downward-API environment they set, start against the
/// emulator, and their readiness and liveness probes answer 200 on the ports the probes name,
/// which are the ports of their flags. A renamed flag, or a probe on a port nothing listens on,
/// fails here rather than in a cluster. (Trial 26 checked this by hand.)
#[tokio::test]
async fn the_deployments_command_lines_start_and_answer_their_probes() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    let Some(emu) = Emulator::start() else { return };
    let dir = crate::support::temp_dir();
    let kubeconfig = emu.kubeconfig(dir.path());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let token = dir.path().join("token");
    std::fs::write(&token, "a-token-of-at-least-sixteen-bytes\n").expect("token");
    for (file, name) in [
        ("deploy/controller/deployment.yaml", "crossfade-controller"),
        ("deploy/proxy/ingress.yaml", "crossfade-proxy"),
    ] {
        let docs = super::sample::documents(&root.join(file));
        let deployment: Deployment = super::sample::find(&docs, "Deployment", name);
        let pod = deployment.spec.unwrap().template.spec.expect("pod spec");
        let container = &pod.containers[0];
        let ports: BTreeMap<String, i32> = container
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone().expect("named port"), p.container_port))
            .collect();
        // Port numbers of the manifest → free ports here.
        let mut moved: BTreeMap<u16, u16> = BTreeMap::new();
        let mut args: Vec<String> = Vec::new();
        for arg in container.args.clone().expect("args") {
            let Some((flag, value)) = arg.split_once('=') else {
                args.push(arg);
                continue;
            };
            let value = match flag {
                "--listen" | "--admin" | "--metrics" => {
                    let addr: SocketAddr = value.parse().expect(&arg);
                    let free = free_addr().port();
                    moved.insert(addr.port(), free);
                    format!("127.0.0.1:{free}")
                }
                "--admin-token-file" | "--proxy-token-file" => token.to_string_lossy().into_owned(),
                "--config" => {
                    // The file the settings ConfigMap mounts there.
                    let (_, key) = value.rsplit_once('/').expect("a path");
                    let map = docs
                        .iter()
                        .find(|d| d["kind"] == "ConfigMap")
                        .expect("the settings ConfigMap");
                    let path = dir.path().join(key);
                    std::fs::write(&path, map["data"][key].as_str().expect("settings"))
                        .expect("settings");
                    path.to_string_lossy().into_owned()
                }
                _ => value.to_owned(),
            };
            args.push(format!("{flag}={value}"));
        }
        args.extend([
            "--kubeconfig".to_owned(),
            kubeconfig.to_string_lossy().into_owned(),
        ]);
        let env = [
            ("POD_NAME", &*format!("{name}-7d9f-x2")),
            ("POD_NAMESPACE", "crossfade-system"),
            ("POD_IP", "127.0.0.1"),
        ];
        let mut child = Crossfade::spawn_env(dir.path(), &format!("{name}.log"), &args, &env);
        for probe in [&container.readiness_probe, &container.liveness_probe] {
            let get = probe
                .as_ref()
                .and_then(|p| p.http_get.clone())
                .unwrap_or_else(|| panic!("{file}: an httpGet probe"));
            let port = match &get.port {
                IntOrString::String(name) => ports[name],
                IntOrString::Int(n) => *n,
            };
            let port = u16::try_from(port).expect("port");
            let here = *moved
                .get(&port)
                .unwrap_or_else(|| panic!("{file}: the probe's port {port} is no flag's"));
            let path = get.path.clone().expect("path");
            let admin = Admin::new(SocketAddr::from(([127, 0, 0, 1], here)));
            wait_until(WAIT, &format!("{file}: {path} answers 200"), || async {
                let (status, _) = admin.get_text(&path).await.ok()?;
                (status == 200).then_some(())
            })
            .await;
        }
        if name == "crossfade-proxy" {
            // Its Lease where the controller's Deployment reads proxy Leases, and not in the
            // pod's namespace, where the leader Lease is (kube27).
            let controller =
                super::sample::documents(&root.join("deploy/controller/deployment.yaml"));
            let controller: Deployment =
                super::sample::find(&controller, "Deployment", "crossfade-controller");
            let trusted: Vec<String> = controller.spec.unwrap().template.spec.unwrap().containers
                [0]
            .args
            .iter()
            .flatten()
            .filter_map(|a| a.strip_prefix("--proxy-namespace="))
            .flat_map(|v| v.split(','))
            .map(str::to_owned)
            .collect();
            let lease = format!("{name}-7d9f-x2");
            let client = emu.client();
            let mut found = Vec::new();
            for ns in &trusted {
                let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
                if leases.get_opt(&lease).await.expect("get lease").is_some() {
                    found.push(ns.clone());
                }
            }
            assert_eq!(found.len(), 1, "{lease} in {trusted:?}: {found:?}");
            let system: Api<Lease> = Api::namespaced(client, "crossfade-system");
            assert!(system.get_opt(&lease).await.expect("get lease").is_none());
        }
        let status = child.terminate(WAIT).await;
        assert!(status.success(), "{file}: {status:?}\n{}", child.log());
    }
}

/// Trial 30: a proxy whose ServiceAccount may not list EndpointSlices in its namespace never
/// became ready, logging the watch's 403 every second; the start now ends naming the grant.
#[tokio::test]
async fn a_namespace_whose_endpointslices_the_proxy_may_not_list_fails_the_start() {
    let Some(emu) = Emulator::start_with(&["--forbid", "default/endpointslices"]) else {
        return;
    };
    let dir = crate::support::temp_dir();
    let kubeconfig = emu.kubeconfig(dir.path());
    let kubeconfig = kubeconfig.to_str().expect("utf-8 path");
    let (listen, admin) = (free_addr().to_string(), free_addr().to_string());
    let args = [
        "proxy",
        "--kube",
        "--kubeconfig",
        kubeconfig,
        "--namespace",
        "default",
        "--replica",
        "x",
        "--listen",
        &listen,
        "--admin",
        &admin,
    ];
    let out = run_to_end(args, Duration::from_secs(30)).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    let expected = "crossfade: cannot list endpointslices.discovery.k8s.io in namespace default (--namespace): 403 Forbidden: endpointslices.discovery.k8s.io is forbidden: User \"emulator\" cannot list resource \"endpointslices\" in API group \"discovery.k8s.io\" in the namespace \"default\"; the proxy's ServiceAccount needs get, list and watch on endpointslices.discovery.k8s.io in namespace default (a Role and RoleBinding)\n";
    assert!(out.stderr.ends_with(expected), "{}", out.stderr);
}

/// Case C13 in Kubernetes mode: a TrafficShift's `spec.route.responseTimeout` is its route's
/// request timeout, so a hung preview holds no request longer than it (until session 30 the
/// TrafficShift had no such field, and only the proxy-wide `upstream.response_timeout`, 30s by
/// default, bounded the wait). A zero timeout is refused naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c13_kube_a_trafficshifts_response_timeout_bounds_a_hung_backends_requests() {
    let Some(setup) = Setup::start() else { return };
    let hung = SampleApp::start(setup.path(), "blue", "blue-0", &["--latency", "20000"]).await;
    let route = json!({ "hosts": ["127.0.0.1"], "port": "http", "responseTimeout": "1s" });
    setup.create_shift(&shift("web", route)).await;
    let zero = json!({ "hosts": ["zero.test"], "responseTimeout": "0s" });
    setup.create_shift(&shift("zero", zero)).await;
    setup.publish("web-blue", std::slice::from_ref(&hung)).await;
    let (proxy, listen, _admin) = setup.proxy(&["--namespace", "default"]).await;
    setup.set_weights("web", "100%", "0%", 1).await;
    setup.lease_at("default/web", 1).await;
    let started = tokio::time::Instant::now();
    let mut conn = crate::support::RawConn::connect(listen).await;
    conn.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await;
    let answer = conn.read_response().await;
    let waited = started.elapsed();
    assert_eq!(answer.status(), 504, "{answer:?}");
    assert!(
        waited < Duration::from_secs(15),
        "the route's 1s, not the backend's 20s: {waited:?}"
    );
    let logged = "spec.route.responseTimeout";
    wait_until(WAIT, "the zero timeout refused in the log", || async {
        let log = proxy.log();
        log.lines()
            .any(|l| l.contains("trafficshift default/zero") && l.contains(logged))
            .then_some(())
    })
    .await;
}

/// The watch's own metrics (docs/metrics.md, "Proxy in Kubernetes mode"), from the proxy's /metrics:
/// `crossfade_kube_watch_last_sync_timestamp_seconds{kind}` and
/// `crossfade_kube_watch_errors_total{kind}`.
async fn watch_metrics(admin: &Admin, kind: &str) -> (f64, f64) {
    let metrics = admin.metrics().await;
    let synced = metrics.get(
        "crossfade_kube_watch_last_sync_timestamp_seconds",
        &[("kind", kind)],
    );
    let errors = metrics.get("crossfade_kube_watch_errors_total", &[("kind", kind)]);
    (
        synced.unwrap_or_else(|| panic!("no last sync of {kind}")),
        errors.unwrap_or_else(|| panic!("no watch errors of {kind}")),
    )
}

/// Session 41: a working watch stamps its last sync at the first list and again at each change
/// (a TrafficShift created, an EndpointSlice created) with no error; once the API server is gone
/// (the emulator killed) the proxy keeps serving its routes, the errors of both watches rise and
/// the last sync stays where it was.
#[tokio::test]
async fn the_watch_metrics_show_each_change_as_a_sync_and_count_errors_once_the_api_is_gone() {
    let Some(mut setup) = Setup::start() else {
        return;
    };
    let blue = SampleApp::start_many(setup.path(), "blue", 1).await;
    let (_proxy, listen, admin) = setup.proxy(&[]).await;
    let mut listed = BTreeMap::new();
    for kind in ["TrafficShift", "EndpointSlice"] {
        let (synced, errors) = watch_metrics(&admin, kind).await;
        assert!(synced > 0.0, "{kind}: the first list is a sync");
        assert_eq!(errors, 0.0, "{kind}: no error on a working watch");
        listed.insert(kind, synced);
    }

    let route = json!({ "hosts": ["127.0.0.1"], "port": "http" });
    setup.create_shift(&shift("web", route)).await;
    setup.publish("web-blue", &blue).await;
    let mut changed = BTreeMap::new();
    for kind in ["TrafficShift", "EndpointSlice"] {
        let what = format!("{kind}: a sync after the change");
        let synced = wait_until(WAIT, &what, || async {
            let (synced, _) = watch_metrics(&admin, kind).await;
            (synced > listed[kind]).then_some(synced)
        })
        .await;
        changed.insert(kind, synced);
    }
    setup.lease_at("default/web", 0).await;
    let served = split(listen, 20).await;
    assert_eq!(served, BTreeMap::from([("blue".to_owned(), 20)]));

    setup.emu.stop();
    for kind in ["TrafficShift", "EndpointSlice"] {
        let what = format!("{kind}: two watch errors without the API server");
        wait_until(WAIT, &what, || async {
            let (_, errors) = watch_metrics(&admin, kind).await;
            (errors >= 2.0).then_some(())
        })
        .await;
        let (synced, _) = watch_metrics(&admin, kind).await;
        assert_eq!(
            synced, changed[kind],
            "{kind}: no sync without the API server"
        );
    }
    let served = split(listen, 20).await;
    assert_eq!(
        served,
        BTreeMap::from([("blue".to_owned(), 20)]),
        "the routes stay as they were"
    );
}
