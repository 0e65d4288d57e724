//! The Prometheus metrics of `crossfade proxy --kube`'s cluster source, registered in the proxy's
//! `crossfade` registry next to the data path's (catalogue: docs/metrics.md; naming after
//! <https://prometheus.io/docs/practices/naming/>):
//!
//! - `crossfade_kube_trafficshift_refused{route}`: 1 while the latest TrafficShift (or its
//!   EndpointSlices) cannot be applied and the route is left as it was (or not served), else 0.
//! - `crossfade_kube_applied_generation{route}`: the `status.weights.generation` in the routing
//!   table, as the Lease reports it.
//! - `crossfade_kube_lease_renewals_total{result}`: Lease writes by `ok` or `error`.
//! - `crossfade_kube_watch_last_sync_timestamp_seconds{kind}`: when the watch of `TrafficShift`s
//!   or `EndpointSlice`s last showed it is in sync ([`WatchMetrics::event`]); 0 before the first
//!   list completes.
//! - `crossfade_kube_watch_errors_total{kind}`: errors of that watch (each is retried with
//!   kube-runtime's backoff, 0.8 s doubling to 30 s).
//! - `crossfade_backend_info{route,backend,workload,image,image_digest,version}`: what each
//!   backend of a served route runs, from the TrafficShift's status ([`super::info`]), and
//!   `crossfade_backend_workload_timestamp_seconds{route,backend}`: when this replica first saw
//!   the backend run that workload.
//!
//! A route's series go when its TrafficShift is deleted.

use std::sync::atomic::AtomicU64;
use std::sync::PoisonError;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::info::{InfoCollector, Row, Rows};

/// The cluster source's metric families. Cheap to clone; clones share the series.
/// [`KubeSourceMetrics::default`] is an unregistered bundle (nobody scrapes it).
#[derive(Clone, Debug, Default)]
pub struct KubeSourceMetrics {
    refused: Family<RouteLabels, Gauge>,
    applied: Family<RouteLabels, Gauge>,
    renewals: Family<ResultLabels, Counter>,
    watch_synced: Family<KindLabels, Gauge<f64, AtomicU64>>,
    watch_errors: Family<KindLabels, Counter>,
    info: Rows,
}

/// One watch's series (`kind`: `TrafficShift` or `EndpointSlice`), from
/// [`KubeSourceMetrics::watch`].
#[derive(Clone, Debug)]
pub(super) struct WatchMetrics {
    synced: Gauge<f64, AtomicU64>,
    errors: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

impl KubeSourceMetrics {
    /// Registers the families in `registry` (whose prefix, `crossfade`, starts their names).
    pub fn register(registry: &mut Registry) -> KubeSourceMetrics {
        let metrics = KubeSourceMetrics::default();
        registry.register(
            "kube_trafficshift_refused",
            "1 while the TrafficShift's latest input cannot be applied (its route is left as it was), else 0",
            metrics.refused.clone(),
        );
        registry.register(
            "kube_applied_generation",
            "status.weights.generation of the TrafficShift in the routing table (0 before any weights, and while every request goes to the one backend with ready endpoints)",
            metrics.applied.clone(),
        );
        registry.register(
            "kube_lease_renewals",
            "Writes of this replica's Lease, by result (ok, error)",
            metrics.renewals.clone(),
        );
        registry.register(
            "kube_watch_last_sync_timestamp_seconds",
            "Unix time at which the watch of this kind last showed it is in sync: a list or relist completed, or a change arrived (0 before the first list)",
            metrics.watch_synced.clone(),
        );
        registry.register(
            "kube_watch_errors",
            "Errors of the watch of this kind (a failed list, a failed or broken watch, 410 Gone), each retried with backoff",
            metrics.watch_errors.clone(),
        );
        registry.register_collector(Box::new(InfoCollector {
            rows: metrics.info.clone(),
        }));
        for result in ["ok", "error"] {
            let _ = metrics.renewals.get_or_create(&ResultLabels { result });
        }
        for kind in WATCHED_KINDS {
            let _ = metrics.watch(kind);
        }
        metrics
    }

    /// The series of the watch of `kind` (created at 0 on first use).
    pub(super) fn watch(&self, kind: &'static str) -> WatchMetrics {
        let labels = KindLabels { kind };
        WatchMetrics {
            synced: self.watch_synced.get_or_create(&labels).clone(),
            errors: self.watch_errors.get_or_create(&labels).clone(),
        }
    }

    /// Sets `route`'s series: refused or not, and the generation applied (`None`: not served).
    pub(super) fn route(&self, route: &str, refused: bool, applied: Option<u64>) {
        let labels = RouteLabels {
            route: route.to_owned(),
        };
        self.refused.get_or_create(&labels).set(i64::from(refused));
        match applied {
            Some(generation) => {
                let generation = i64::try_from(generation).unwrap_or(i64::MAX);
                self.applied.get_or_create(&labels).set(generation);
            }
            None => {
                self.applied.remove(&labels);
            }
        }
    }

    /// Removes the series of a route whose TrafficShift is gone.
    pub(super) fn forget(&self, route: &str) {
        let labels = RouteLabels {
            route: route.to_owned(),
        };
        self.refused.remove(&labels);
        self.applied.remove(&labels);
        self.backends(route, Vec::new());
    }

    /// Replaces `route`'s `crossfade_backend_info` series with `rows`. A backend that keeps its
    /// workload (digests aside) keeps its `crossfade_backend_workload_timestamp_seconds`; a new
    /// one is stamped now.
    pub(super) fn backends(&self, route: &str, rows: Vec<(crossfade_proxy::weight::Slot, Row)>) {
        let now = crate::metrics::info::unix_now();
        let mut info = self.info.lock().unwrap_or_else(PoisonError::into_inner);
        let old: Vec<_> = rows
            .iter()
            .map(|(slot, row)| {
                let key = (route.to_owned(), *slot);
                info.get(&key)
                    .filter(|(old, _)| super::info::same_workload(old, row))
                    .map_or(now, |(_, since)| *since)
            })
            .collect();
        info.retain(|(r, _), _| r != route);
        info.extend(
            rows.into_iter()
                .zip(old)
                .map(|((slot, row), since)| ((route.to_owned(), slot), (row, since))),
        );
    }

    /// Counts one Lease write.
    pub(super) fn renewal(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.renewals.get_or_create(&ResultLabels { result }).inc();
    }
}

/// The `kind` label values of the watches, exported from the start.
pub(super) const WATCHED_KINDS: [&str; 2] = ["TrafficShift", "EndpointSlice"];

// === impl WatchMetrics ===

impl WatchMetrics {
    /// Records what the watch stream yielded. In sync means the store holds what the API server
    /// holds: when a list or relist completes (`InitDone`; its `Init` and `InitApply` are a list in
    /// progress, the store not yet replaced), and when a live change arrives (`Apply`, `Delete`:
    /// the watch delivers). An error is counted. A quiet watch yields nothing, and
    /// kube-runtime restarts an ended watch (every 290 s) without a word, so an old timestamp
    /// alone does not mean a broken watch (docs/metrics.md, "Proxy in Kubernetes mode").
    pub(super) fn event<K>(
        &self,
        event: &Result<kube::runtime::watcher::Event<K>, kube::runtime::watcher::Error>,
    ) {
        use kube::runtime::watcher::Event;
        match event {
            Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_)) => {
                self.synced.set(crate::metrics::info::unix_now());
            }
            Ok(Event::Init | Event::InitApply(_)) => {}
            Err(_) => {
                self.errors.inc();
            }
        }
    }

    /// The last sync's Unix time in seconds, and the errors counted.
    #[cfg(test)]
    pub(super) fn read(&self) -> (f64, u64) {
        (self.synced.get(), self.errors.get())
    }
}
