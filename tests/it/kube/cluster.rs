//! What a cluster would do around the controller in the TrafficShift tests: a kubelet stand-in that
//! marks Deployments available, fake proxies that acknowledge weights and count requests, and a
//! record of every status shown; and [`Cluster`], the one test's emulator with all of that at hand.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crossfade_controller::kube::crd::{TrafficShift, TrafficShiftStatus};
use crossfade_controller::kube::proxies::Replica;
use crossfade_controller::kube::scrape::ClusterMetrics;
use crossfade_controller::traffic::MetricsSource;
use crossfade_proxy::weight::Slot;
use crossfade_proxy::BackendSnapshot;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::json;

use super::emulator::Emulator;
use super::shift::{
    at_step_one, controller, controller_polling, create_target, raw_status_until, shift_with,
    slow_policy, status_until, WAIT,
};

/// One test's cluster: the emulator, a client for it, the kubelet stand-in ([`Kubelet`]) for the
/// named Deployments, and the TrafficShift and Deployment APIs of namespace `default`. Every test
/// TrafficShift is `web` (see [`shift_with`]). Stops everything when dropped.
pub struct Cluster {
    pub client: kube::Client,
    pub shifts: Api<TrafficShift>,
    pub deploys: Api<Deployment>,
    _kubelet: Option<Kubelet>,
    emulator: Emulator,
}

impl Cluster {
    /// Starts the emulator and, unless `available` is empty, a kubelet stand-in that marks those
    /// Deployments available. `None` when the emulator is not installed (the test is skipped,
    /// see [`Emulator::start`]).
    pub fn start(available: &[&str]) -> Option<Cluster> {
        Cluster::start_kubelet(available, false, &[])
    }

    /// As [`Cluster::start`], and the kubelet stand-in also runs those Deployments' pods
    /// ([`super::pods::roll_pods`]: one set per template generation, with `imageID`s).
    pub fn start_with_pods(available: &[&str]) -> Option<Cluster> {
        Cluster::start_kubelet(available, true, &[])
    }

    /// As [`Cluster::start`], the emulator started with `args` too (options of
    /// `tests/kube/kmock_server.py`, e.g. `--deny-update default/deployments/web`).
    pub fn start_with_args(available: &[&str], args: &[&str]) -> Option<Cluster> {
        Cluster::start_kubelet(available, false, args)
    }

    /// As [`Cluster::start_with_pods`], the emulator writing its audit log (one JSON line per
    /// request: user, RBAC verb, group, resource) to `audit`.
    pub fn start_audited(available: &[&str], audit: &std::path::Path) -> Option<Cluster> {
        let audit = audit.to_str().expect("utf-8 path");
        Cluster::start_kubelet(available, true, &["--audit", audit])
    }

    fn start_kubelet(available: &[&str], pods: bool, args: &[&str]) -> Option<Cluster> {
        let emulator = Emulator::start_with(args)?;
        let client = emulator.client();
        let kubelet =
            (!available.is_empty()).then(|| Kubelet::start_with(client.clone(), available, pods));
        Some(Cluster {
            shifts: Api::default_namespaced(client.clone()),
            deploys: Api::default_namespaced(client.clone()),
            client,
            _kubelet: kubelet,
            emulator,
        })
    }

    /// The usual start: target Deployment `web` created without annotations, and both it and the
    /// preview `web-green` become available.
    pub async fn with_target() -> Option<Cluster> {
        let cluster = Cluster::start(&["web", "web-green"])?;
        cluster.create_target(&[]).await;
        Some(cluster)
    }

    /// Creates the target Deployment `web` (image `web:v1`) with `annotations`.
    pub async fn create_target(&self, annotations: &[(&str, &str)]) -> Deployment {
        create_target(&self.client, annotations).await
    }

    /// Creates TrafficShift `web` rolling `web` to `web:v2` with `rollout` as its policy.
    pub async fn create_shift(&self, rollout: serde_json::Value) -> TrafficShift {
        self.shifts
            .create(&kube::api::PostParams::default(), &shift_with(rollout))
            .await
            .expect("create trafficshift")
    }

    /// Creates TrafficShift `web` (`web:v2`, [`slow_policy`]), starts the controllers and waits
    /// until its rollout is at step 1 (10%, read raw: [`raw_status_until`]); the controllers'
    /// handle and that status.
    pub async fn rollout_at_step_one(&self) -> (tokio::task::JoinHandle<()>, TrafficShiftStatus) {
        self.create_shift(slow_policy()).await;
        let ctl = self.controller();
        let (status, _) = raw_status_until(&self.client, "step 1 at 10%", at_step_one).await;
        (ctl, status)
    }

    /// Starts the controllers with fresh [`FakeProxies`] acknowledging every generation.
    pub fn controller(&self) -> tokio::task::JoinHandle<()> {
        self.controller_with(FakeProxies::start(self.client.clone()))
    }

    /// Starts the controllers with `metrics` as what the proxies report.
    pub fn controller_with(&self, metrics: Arc<dyn ClusterMetrics>) -> tokio::task::JoinHandle<()> {
        controller(&self.client, metrics)
    }

    /// As [`Cluster::controller`], a reconcile waiting on the cluster looking again every `poll`
    /// instead of every 2 s: set longer than the test's waits, what it waits for is seen only
    /// at a watch event.
    pub fn controller_polling(&self, poll: Duration) -> tokio::task::JoinHandle<()> {
        let proxies = FakeProxies::start(self.client.clone());
        controller_polling(&self.client, proxies, poll)
    }

    /// Starts recording every status of TrafficShift `web`.
    pub fn status_log(&self) -> StatusLog {
        StatusLog::start(self.client.clone(), "web")
    }

    /// Waits until TrafficShift `web` has a status for which `check` holds; returns it.
    pub async fn status_until(
        &self,
        what: &str,
        check: impl Fn(&TrafficShiftStatus) -> bool,
    ) -> TrafficShiftStatus {
        status_until(&self.shifts, what, check).await
    }

    /// The status of TrafficShift `web` as it is now; it must have one.
    pub async fn status(&self) -> TrafficShiftStatus {
        let shift = self.shifts.get("web").await.expect("get trafficshift");
        shift.status.expect("trafficshift status")
    }

    /// Writes a kubeconfig for the emulator into `dir`; returns its path.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        self.emulator.kubeconfig(dir)
    }

    /// Waits until Deployment `name` is gone.
    pub async fn deployment_deleted(&self, name: &str) {
        until_deleted(&self.deploys, name).await
    }
}

/// Waits until the object `name` of `api` no longer exists.
pub async fn until_deleted<K>(api: &Api<K>, name: &str)
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let what = format!("{name} deleted");
    crate::support::wait_until(WAIT, &what, || async {
        api.get_opt(name)
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await
}

/// Plays the kubelet and the Deployment controller for the named Deployments: every 100 ms, one
/// whose status has not observed its generation gets a status with all replicas updated and
/// available (with pods, [`Kubelet::start_with`], after running pods of that generation).
/// Deployments not named never become available. Stops when dropped.
pub struct Kubelet {
    task: tokio::task::JoinHandle<()>,
}

impl Kubelet {
    pub fn start(client: kube::Client, names: &[&str]) -> Kubelet {
        Kubelet::start_with(client, names, false)
    }

    /// As [`Kubelet::start`]; with `pods`, a Deployment's pods of its current template run
    /// ([`super::pods::roll_pods`]) before it is marked available.
    pub fn start_with(client: kube::Client, names: &[&str], pods: bool) -> Kubelet {
        let names: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
        let pod_api: Api<k8s_openapi::api::core::v1::Pod> = Api::default_namespaced(client.clone());
        let api: Api<Deployment> = Api::default_namespaced(client);
        let task = tokio::spawn(async move {
            loop {
                if let Ok(list) = api.list(&ListParams::default()).await {
                    for d in list.items {
                        if names.contains(d.metadata.name.as_deref().unwrap_or_default()) {
                            if pods && !shows_generation(&d) {
                                super::pods::roll_pods(&pod_api, &d).await;
                            }
                            mark_available(&api, &d).await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Kubelet { task }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether `d`'s status has observed its current generation.
fn shows_generation(d: &Deployment) -> bool {
    let observed = d.status.as_ref().and_then(|s| s.observed_generation);
    observed == Some(d.metadata.generation.unwrap_or(1))
}

/// Target Deployment `web` once promotion has written the rollout's image (`web:v2`, see
/// [`Cluster::create_shift`]) into its template. The phase `Promoted` can be seen before that write
/// lands; a test that then marked the generation it read available left the rollout waiting on
/// the next one, which no one made available (a CI rehearsal of session 28 timed out so).
pub async fn promoted_target(deploys: &Api<Deployment>) -> Deployment {
    promoted(deploys, "web").await
}

/// Deployment `name` once promotion has written `web:v2` into its template (see
/// [`promoted_target`]).
pub async fn promoted(deploys: &Api<Deployment>, name: &str) -> Deployment {
    let what = format!("the promoted template on {name}");
    crate::support::wait_until(super::shift::WAIT, &what, || async {
        let web = deploys.get(name).await.ok()?;
        let image = web
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers.first())
            .and_then(|c| c.image.as_deref());
        (image == Some("web:v2")).then_some(web)
    })
    .await
}

/// Writes an available status for `d`'s current generation, unless it already shows one.
pub async fn mark_available(api: &Api<Deployment>, d: &Deployment) {
    if shows_generation(d) {
        return;
    }
    let generation = d.metadata.generation.unwrap_or(1);
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = json!({ "status": {
        "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
        "readyReplicas": replicas, "availableReplicas": replicas,
        "conditions": [{ "type": "Available", "status": "True", "reason": "MinimumReplicasAvailable" }]
    }});
    let name = d.metadata.name.clone().unwrap_or_default();
    let _ = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
        .await;
}

/// A stand-in for a fleet of proxies, for the tests that are not about traffic (the end-to-end
/// tests run the real proxy, tests/it/kube/e2e.rs): every 100 ms it writes one live proxy Lease
/// that acknowledges the `status.weights.generation` of every TrafficShift in `default`, as a
/// proxy that applied it would; and as the controller's [`ClusterMetrics`] it reports 1000
/// successful requests per refresh, split as the last weights it acknowledged (so the observed
/// split is within tolerance and every analysis passes). Stops when dropped.
///
/// Knobs for the tests of what the controller does with what proxies report:
/// [`FakeProxies::split_as`] (a proxy that does not split as told) and
/// [`FakeProxies::hold_green`] (requests and upgraded connections still open to the preview).
pub struct FakeProxies {
    routes: Arc<Mutex<HashMap<String, FakeRoute>>>,
    /// The preview basis points really served, whatever was acknowledged.
    split: Mutex<Option<u32>>,
    /// In-flight requests and upgraded connections to green, on every route.
    green_held: Mutex<(u64, u64)>,
    task: tokio::task::JoinHandle<()>,
}

/// A route as the fake proxies have it: the preview basis points acknowledged, and the
/// cumulative blue and green requests.
type FakeRoute = (u32, [u64; 2]);

/// The Lease the fake proxies write.
pub const FAKE_LEASE: &str = "crossfade-proxy-fake";

impl FakeProxies {
    pub fn start(client: kube::Client) -> Arc<FakeProxies> {
        FakeProxies::start_in(client, "default")
    }

    /// As [`FakeProxies::start`], the Lease in `lease_namespace` (the proxies'
    /// `--lease-namespace`).
    pub fn start_in(client: kube::Client, lease_namespace: &str) -> Arc<FakeProxies> {
        let routes: Arc<Mutex<HashMap<String, FakeRoute>>> = Arc::default();
        let seen = routes.clone();
        let leases: Api<Lease> = Api::namespaced(client.clone(), lease_namespace);
        let task = tokio::spawn(async move {
            // Read raw, as a proxy reads them (`proxy_source::translate::ShiftView`): a policy
            // that does not decode breaks no route.
            let resource = kube::api::ApiResource::erase::<TrafficShift>(&());
            let shifts: Api<kube::api::DynamicObject> =
                Api::default_namespaced_with(client.clone(), &resource);
            loop {
                if let Ok(list) = shifts.list(&ListParams::default()).await {
                    let mut applied = BTreeMap::new();
                    for shift in &list.items {
                        let route = format!(
                            "default/{}",
                            shift.metadata.name.as_deref().unwrap_or_default()
                        );
                        let weights: Option<crossfade_controller::kube::crd::WeightsStatus> = shift
                            .data
                            .pointer("/status/weights")
                            .and_then(|w| serde_json::from_value(w.clone()).ok());
                        let weights = weights.as_ref();
                        let (bp, generation) =
                            weights.map_or((0, 0), |w| (w.preview.bp(), w.generation));
                        seen.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .entry(route.clone())
                            .or_default()
                            .0 = bp;
                        applied.insert(route, generation);
                    }
                    write_lease(&leases, FAKE_LEASE, &applied, "http://127.0.0.1:1").await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Arc::new(FakeProxies {
            routes,
            split: Mutex::new(None),
            green_held: Mutex::new((0, 0)),
            task,
        })
    }

    /// From now on requests are split with `preview_bp` to green, whatever the weights say.
    pub fn split_as(&self, preview_bp: u32) {
        *self.split.lock().unwrap_or_else(PoisonError::into_inner) = Some(preview_bp);
    }

    /// From now on green has `in_flight` requests and `upgraded` connections open.
    pub fn hold_green(&self, in_flight: u64, upgraded: u64) {
        *self
            .green_held
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = (in_flight, upgraded);
    }
}

impl Drop for FakeProxies {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MetricsSource for FakeProxies {
    fn snapshot(&self, route: &str, slot: Slot) -> crossfade_controller::Result<BackendSnapshot> {
        let routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let requests = routes
            .get(route)
            .map_or(0, |(_, counts)| counts[slot as usize]);
        let (in_flight, upgraded) = match slot {
            Slot::Green => *self
                .green_held
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            Slot::Blue => (0, 0),
        };
        Ok(BackendSnapshot {
            requests,
            in_flight,
            upgraded,
            ..BackendSnapshot::default()
        })
    }
}

impl ClusterMetrics for FakeProxies {
    fn refresh<'a>(&'a self, route: &'a str, _replicas: &'a [&'a Replica]) -> BoxFuture<'a, ()> {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let (bp, counts) = routes.entry(route.to_owned()).or_default();
        let split = *self.split.lock().unwrap_or_else(PoisonError::into_inner);
        let green = u64::from(split.unwrap_or(*bp)) / 10;
        counts[Slot::Green as usize] += green;
        counts[Slot::Blue as usize] += 1000 - green;
        Box::pin(async {})
    }
}

/// Creates or replaces the proxy Lease `name` in `default`: live now for 15 s, acknowledging
/// `applied` (route → generation), with `admin_url` as where its `/metrics` are.
pub async fn write_lease(
    leases: &Api<Lease>,
    name: &str,
    applied: &BTreeMap<String, u64>,
    admin_url: &str,
) {
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": { "name": name, "labels": { "crossfade.dev/proxy": "true" },
            "annotations": {
                "crossfade.dev/applied": serde_json::to_string(applied).expect("json"),
                "crossfade.dev/admin-url": admin_url } },
        "spec": { "holderIdentity": name, "leaseDurationSeconds": 15,
            "renewTime": k8s_openapi::jiff::Timestamp::now().to_string() }
    });
    let params = PatchParams::apply("crossfade-test").force();
    let _ = leases.patch(name, &params, &Patch::Apply(lease)).await;
}

/// A proxy replica's Lease kept live the way a real replica keeps it: written now and renewed
/// every second (each write lasts 15 s), so it counts as live however slow the test machine is,
/// for as long as the test wants it to. [`ReplicaLease::ack`] changes what it acknowledges;
/// [`ReplicaLease::stop`] ends the renewals.
pub struct ReplicaLease {
    applied: tokio::sync::watch::Sender<BTreeMap<String, u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl ReplicaLease {
    /// Starts renewing the proxy Lease `name` in `default`, acknowledging `applied` (route →
    /// generation); see [`write_lease`].
    pub fn start(client: kube::Client, name: &str, applied: BTreeMap<String, u64>) -> ReplicaLease {
        ReplicaLease::start_in(client, "default", name, applied)
    }

    /// As [`ReplicaLease::start`], the Lease in `namespace`.
    pub fn start_in(
        client: kube::Client,
        namespace: &str,
        name: &str,
        applied: BTreeMap<String, u64>,
    ) -> ReplicaLease {
        let (tx, mut rx) = tokio::sync::watch::channel(applied);
        let name = name.to_owned();
        let leases: Api<Lease> = Api::namespaced(client, namespace);
        let task = tokio::spawn(async move {
            loop {
                let applied = rx.borrow_and_update().clone();
                write_lease(&leases, &name, &applied, "http://127.0.0.1:1").await;
                let renew = tokio::time::sleep(Duration::from_secs(1));
                tokio::select! {
                    () = renew => {}
                    changed = rx.changed() => if changed.is_err() { return },
                }
            }
        });
        ReplicaLease { applied: tx, task }
    }

    /// From the next write on (at once), the Lease acknowledges `applied`.
    pub fn ack(&self, applied: BTreeMap<String, u64>) {
        self.applied.send_replace(applied);
    }

    /// Ends the renewals once no write is under way: the Lease is left as last written, and
    /// nothing writes it again (so that deleting it afterwards sticks).
    pub async fn stop(self) {
        drop(self.applied);
        let _ = self.task.await;
    }
}

/// Every status TrafficShift `name` showed, in order, as a watch saw them.
pub struct StatusLog {
    seen: Arc<Mutex<Vec<TrafficShiftStatus>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StatusLog {
    pub fn start(client: kube::Client, name: &str) -> StatusLog {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = seen.clone();
        let api: Api<TrafficShift> = Api::default_namespaced(client);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let name = name.to_owned();
        let task = tokio::spawn(async move {
            let mut events = watcher(api, config).boxed();
            while let Some(event) = events.next().await {
                if let Ok(watcher::Event::Apply(shift) | watcher::Event::InitApply(shift)) = event {
                    if shift.metadata.name.as_deref() != Some(&name) {
                        continue; // the emulator ignores fieldSelector
                    }
                    if let Some(status) = shift.status {
                        let mut seen = into.lock().unwrap_or_else(PoisonError::into_inner);
                        if seen.last() != Some(&status) {
                            seen.push(status);
                        }
                    }
                }
            }
        });
        StatusLog { seen, task }
    }

    pub fn all(&self) -> Vec<TrafficShiftStatus> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until the watch has seen a status for which `check` holds (it may lag a read).
    pub async fn until(&self, what: &str, check: impl Fn(&TrafficShiftStatus) -> bool) {
        crate::support::wait_until(Duration::from_secs(30), what, || async {
            self.all().iter().any(&check).then_some(())
        })
        .await
    }

    /// The preview weights shown, in basis points, consecutive repeats folded.
    pub fn preview_weights(&self) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::new();
        for s in self.all() {
            if let Some(w) = s.weights {
                if out.last() != Some(&w.preview.bp()) {
                    out.push(w.preview.bp());
                }
            }
        }
        out
    }
}

impl Drop for StatusLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}
