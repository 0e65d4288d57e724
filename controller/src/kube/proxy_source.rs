//! `crossfade proxy --kube`: the proxy's routes read from the cluster, and its acknowledgement of
//! the weights it applied (the contract in docs/kubernetes.md, "The proxy in the cluster").
//!
//! - Two kube-runtime reflectors watch TrafficShifts (as dynamic objects, so that one malformed
//!   TrafficShift costs only its own route, never the watch of all of them) and EndpointSlices
//!   (`discovery.k8s.io/v1`) in the watched namespace, or all namespaces.
//! - After every change, each TrafficShift is translated ([`translate::translate`]) into a route
//!   `<namespace>/<name>`, and the whole set is published to the proxy in **one** table generation
//!   ([`Proxy::update`]: an `ArcSwap` swap; each request keeps the table it started with, so none is
//!   lost or sees half a change). Nothing is published when nothing changed.
//! - A TrafficShift whose translation fails (unknown port name, malformed `status.weights`, weight
//!   on a backend without ready endpoints...) keeps the route it had, or gets none yet; the reason
//!   is logged once, as an error naming the TrafficShift and the field.
//! - An endpoint that leaves its slice or turns not-ready/terminating leaves the route's next table:
//!   requests in flight finish on it and idle connections to it close (the proxy's pools drain
//!   per backend, see `crossfade_proxy`'s upstream docs); no new request reaches it.
//! - The Lease ([`crate::kube::proxy_lease`]) lists the `status.weights.generation` of every route
//!   in the table and, while any, the refused TrafficShifts with their reasons; renewed every 5 s
//!   and right after either changes; deleted by [`ProxySource::stop`].
//!
//! Manual weight writes through the admin API are overwritten at the route's next change: in this
//! mode the cluster is the source of truth.
//!
//! # Layout
//! - this file: [`ProxySource`] (start, first sync, stop), the reflectors and the apply loop.
//! - [`mod@translate`]: pure, one TrafficShift and its slices → a route.
//! - `apply`: the route set, published in one table generation; bad input keeps a route as it was.
//! - `lease`: the Lease keeper (renewals, server-side apply).
//! - `metrics`: [`KubeSourceMetrics`].
//! - `info`: `crossfade_backend_info` from the TrafficShifts' revisions (images and digests).

mod apply;
mod info;
mod lease;
mod metrics;
pub mod translate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crossfade_proxy::Proxy;
use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject};
use kube::runtime::reflector::{self, store::Writer, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use tokio::sync::{watch, Notify};

pub use metrics::KubeSourceMetrics;
use metrics::WatchMetrics;
pub use translate::{default_hosts, translate, ShiftView, Translated, SERVICE_NAME_LABEL};

use super::crd::TrafficShift;
use super::proxy_lease::{lease_name, ProxyLease, LEASE_DURATION_SECONDS, RENEW_INTERVAL};
use super::shift::{preflight, PreflightError};
use apply::Applier;
use lease::{keep_lease, Reported};

/// The field manager of the proxy's Lease writes (server-side apply).
pub const LEASE_FIELD_MANAGER: &str = "crossfade-proxy";

/// What `crossfade proxy --kube` was told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceOptions {
    /// Watch TrafficShifts and EndpointSlices in this namespace only (all namespaces when `None`,
    /// which needs a ClusterRole). In sidecar mode, the route's namespace.
    pub namespace: Option<String>,
    /// Sidecar mode: serve only this TrafficShift (`(namespace, name)`), for every host and path.
    pub route: Option<(String, String)>,
    /// The replica's identity: the Lease is `crossfade-proxy-<replica>`.
    pub replica: String,
    /// The namespace of the Lease.
    pub lease_namespace: String,
    /// Base URL of this replica's admin API, written to the Lease.
    pub admin_url: String,
}

/// The running source: watchers, the translation loop and the Lease keeper.
pub struct ProxySource {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    lease_task: tokio::task::JoinHandle<()>,
    stop_lease: watch::Sender<bool>,
    synced: watch::Receiver<bool>,
    leases: Api<Lease>,
    lease: String,
}

// === impl SourceOptions ===

impl SourceOptions {
    /// The replica identity when none is given: env `POD_NAME` (Kubernetes downward API), else the
    /// host name, lowercased (a Lease name is a DNS subdomain name).
    pub fn default_replica() -> String {
        std::env::var("POD_NAME")
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|s| s.trim().to_owned())
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".to_owned())
            .to_lowercase()
    }
}

/// The admin URL a replica advertises: `http://<pod_ip>:<port>` when the pod's IP is known (env
/// `POD_IP`, downward API), else `http://<admin>` when the admin listener is bound to a specific
/// address, else `http://<host name>:<port>`.
pub fn admin_url(admin: SocketAddr, pod_ip: Option<&str>, host: &str) -> String {
    if let Some(ip) = pod_ip.and_then(|ip| ip.parse().ok()) {
        return format!("http://{}", SocketAddr::new(ip, admin.port()));
    }
    if !admin.ip().is_unspecified() {
        return format!("http://{admin}");
    }
    format!("http://{host}:{}", admin.port())
}

// === impl ProxySource ===

impl ProxySource {
    /// Checks that the TrafficShift CRD is served, then starts watching and applying into `proxy`
    /// and keeping the Lease, counting into `metrics`.
    ///
    /// # Errors
    /// [`PreflightError`] when the CRD is missing, the API cannot be reached, or the
    /// TrafficShifts or EndpointSlices it watches may not be listed (401, 403).
    pub async fn start(
        client: Client,
        proxy: Proxy,
        options: SourceOptions,
        metrics: KubeSourceMetrics,
    ) -> Result<ProxySource, PreflightError> {
        preflight(&client).await?;
        let resource = ApiResource::erase::<TrafficShift>(&());
        let namespace = options.namespace.as_deref();
        // What it watches, listable: a refusal ends the start naming the grant (trial 30: the
        // proxy never became ready, logging the watch's 403 every second).
        let watched = [
            ("trafficshifts.crossfade.dev", resource.clone()),
            (
                "endpointslices.discovery.k8s.io",
                ApiResource::erase::<EndpointSlice>(&()),
            ),
        ];
        super::shift::check_lists(&client, namespace, &watched, "the proxy's ServiceAccount")
            .await?;
        let (shifts, slices): (Api<DynamicObject>, Api<EndpointSlice>) = match namespace {
            Some(ns) => (
                Api::namespaced_with(client.clone(), ns, &resource),
                Api::namespaced(client.clone(), ns),
            ),
            None => (
                Api::all_with(client.clone(), &resource),
                Api::all(client.clone()),
            ),
        };
        let mut shift_config = watcher::Config::default();
        if let Some((_, name)) = &options.route {
            // Fewer events on a real API server; the loop filters by name anyway.
            shift_config = shift_config.fields(&format!("metadata.name={name}"));
        }
        let changed = Arc::new(Notify::new());
        let shift_writer = Writer::new(resource);
        let shift_store = shift_writer.as_reader();
        let slice_writer = Writer::default();
        let slice_store = slice_writer.as_reader();
        let (applied_tx, applied_rx) = watch::channel(Reported::default());
        let (synced_tx, synced) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(reflect(
                "trafficshifts",
                metrics.watch("TrafficShift"),
                shift_writer,
                watcher(shifts, shift_config),
                Arc::clone(&changed),
            )),
            tokio::spawn(reflect(
                "endpointslices",
                metrics.watch("EndpointSlice"),
                slice_writer,
                watcher(slices, watcher::Config::default()),
                Arc::clone(&changed),
            )),
            tokio::spawn(apply_loop(
                proxy,
                metrics.clone(),
                options.route.clone(),
                (shift_store, slice_store),
                changed,
                applied_tx,
                synced_tx,
            )),
        ];
        let leases: Api<Lease> = Api::namespaced(client, &options.lease_namespace);
        let (stop_lease, stop_rx) = watch::channel(false);
        let keeper = ProxyLease {
            replica: options.replica.clone(),
            admin_url: options.admin_url.clone(),
            applied: BTreeMap::new(),
            applied_uid: BTreeMap::new(),
            refused: BTreeMap::new(),
            renew_time: None,
            lease_duration_seconds: LEASE_DURATION_SECONDS,
        };
        let lease_task = tokio::spawn(keep_lease(
            leases.clone(),
            options.lease_namespace.clone(),
            keeper,
            applied_rx,
            synced.clone(),
            stop_rx,
            metrics,
        ));
        Ok(ProxySource {
            tasks,
            lease_task,
            stop_lease,
            synced,
            leases,
            lease: lease_name(&options.replica),
        })
    }

    /// Resolves once both watches have listed everything and the first route set is in the table.
    pub async fn synced(&self) {
        let mut synced = self.synced.clone();
        let _ = synced.wait_for(|s| *s).await;
    }

    /// Stops watching (the table keeps its routes), lets a Lease write in progress finish (at
    /// most [`RENEW_INTERVAL`]), and deletes the Lease so the controller stops counting this
    /// replica at once. The delete is given up after [`RENEW_INTERVAL`] without an answer (the
    /// Lease then expires after its 15 s), so an API server that hangs never holds up the drain.
    pub async fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        let _ = self.stop_lease.send(true);
        let _ = self.lease_task.await;
        let params = DeleteParams::default();
        let delete = self.leases.delete(&self.lease, &params);
        match tokio::time::timeout(RENEW_INTERVAL, delete).await {
            Ok(Ok(_)) => tracing::info!(lease = %self.lease, "lease deleted"),
            Ok(Err(kube::Error::Api(s))) if s.is_not_found() => {}
            Ok(Err(e)) => {
                tracing::warn!(lease = %self.lease, "cannot delete the lease: {}", crate::kube::api_error_words(&e))
            }
            Err(_) => tracing::warn!(lease = %self.lease,
                "cannot delete the lease: no answer within {}s; it expires on its own",
                RENEW_INTERVAL.as_secs()),
        }
    }
}

/// Feeds a reflector store from a watcher, waking the apply loop after every change. Watch errors
/// are logged, counted in `watch` with each sync, and retried with kube-runtime's default backoff.
async fn reflect<K>(
    what: &'static str,
    watch: WatchMetrics,
    writer: Writer<K>,
    stream: impl futures_util::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
    changed: Arc<Notify>,
) where
    K: kube::Resource + Clone + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let stream = reflector::reflector(writer, stream.default_backoff());
    futures_util::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        watch.event(&event);
        match event {
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Ok(_) => changed.notify_one(),
            Err(e) => tracing::warn!("watching {what}: {}", crate::kube::watch_error_words(&e)),
        }
    }
}

/// Waits for both stores, then recomputes the route set after every change.
async fn apply_loop(
    proxy: Proxy,
    metrics: KubeSourceMetrics,
    only: Option<(String, String)>,
    (shifts, slices): (Store<DynamicObject>, Store<EndpointSlice>),
    changed: Arc<Notify>,
    applied: watch::Sender<Reported>,
    synced: watch::Sender<bool>,
) {
    if shifts.wait_until_ready().await.is_err() || slices.wait_until_ready().await.is_err() {
        return;
    }
    let mut applier = Applier {
        metrics,
        ..Applier::default()
    };
    loop {
        let shifts = shifts.state();
        let slices = slices.state();
        applier.apply(&proxy, only.as_ref(), &shifts, &slices);
        applied.send_if_modified(|current| {
            let now = Reported {
                applied: applier.applied(),
                applied_uid: applier.applied_uid(),
                refused: applier.errors.clone(),
            };
            let differs = *current != now;
            *current = now;
            differs
        });
        synced.send_if_modified(|s| !std::mem::replace(s, true));
        changed.notified().await;
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod watch_tests;
