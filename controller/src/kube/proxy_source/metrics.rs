//! The Prometheus metrics of `crossfade proxy --kube`'s cluster source, registered in the proxy's
//! `crossfade` registry next to the data path's (catalogue: docs/metrics.md; naming after
//! <https://prometheus.io/docs/practices/naming/>):
//!
//! - `crossfade_kube_trafficshift_refused{route}`: 1 while the latest TrafficShift (or its
//!   EndpointSlices) cannot be applied and the route is left as it was (or not served), else 0.
//! - `crossfade_kube_applied_generation{route}`: the `status.weights.generation` in the routing
//!   table, as the Lease reports it.
//! - `crossfade_kube_lease_renewals_total{result}`: Lease writes by `ok` or `error`.
//! - `crossfade_backend_info{route,backend,workload,image,image_digest,version}`: what each
//!   backend of a served route runs, from the TrafficShift's status ([`super::info`]), and
//!   `crossfade_backend_workload_timestamp_seconds{route,backend}`: when this replica first saw
//!   the backend run that workload.
//!
//! A route's series go when its TrafficShift is deleted.

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
    info: Rows,
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
        registry.register_collector(Box::new(InfoCollector {
            rows: metrics.info.clone(),
        }));
        for result in ["ok", "error"] {
            let _ = metrics.renewals.get_or_create(&ResultLabels { result });
        }
        metrics
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
