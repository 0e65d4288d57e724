//! The proxy's Prometheus metrics: a collector that reads the per-backend atomics and the table in
//! force at scrape time, so the request path touches nothing but atomics.
//!
//! Names (with the registry's `crossfade` prefix, OpenMetrics text):
//! - `crossfade_requests_total{route,backend,class}`: responses by status class (`1xx`..`5xx`),
//!   including every answer the proxy makes itself: for the backend it was meant for (502/504,
//!   503 "no endpoint", 408), or with `backend="none"` when none was chosen (404 no route, with
//!   `route=""`; 503 for a disabled route or a shed request; 400 and the like).
//! - `crossfade_local_responses_total{route,backend,class,reason}`: those answers of the proxy's
//!   own by [`crate::local::LocalReason`] (`no_route`, `misdirected`, `route_disabled`, `no_endpoint`,
//!   `overloaded`, `bad_request`, `request_timeout`, `upstream`, `bad_head`, `loop_detected`).
//! - `crossfade_request_duration_seconds{route,backend}`: histogram of the time from dispatch (for
//!   an upload, from its end) to the response head (or to the failure); buckets in [`crate::histogram::LATENCY_BOUNDS_SECONDS`].
//! - `crossfade_upstream_errors_total{route,backend,kind}`: upstream failures by closed kind
//!   (`connect_refused`, `connect_timeout`, `connect_error`, `reset`, `response_timeout`, `protocol`).
//! - `crossfade_retries_total{route,backend,reason}`: requests re-sent after failing on `backend`,
//!   by kind of failure: a connect failure (`connect_*`, nothing was written), `reset` before the
//!   response head for an idempotent method none of whose body was sent (a stale pooled
//!   connection, case C17), or `refused_stream`: an h2c stream the backend refused without
//!   processing it (RFC 9113 §6.8, §8.7), replayed with its body on a fresh connection, whatever
//!   the method, up to 3 times (each replay counted).
//! - `crossfade_refused_not_replayed_total{route,backend}`: refused h2c streams not replayed
//!   because the request body was over the replay limit (64 KiB): the client got a 502.
//! - `crossfade_dispatched_requests_total{route,backend}` and `crossfade_backend_errors_total{route,backend}`:
//!   the request and error counts of [`crate::BackendSnapshot`], which the controller's analysis
//!   judges (a controller in Kubernetes mode scrapes them from every proxy replica).
//! - `crossfade_in_flight_requests{route,backend}`: requests dispatched and not yet finished.
//! - `crossfade_client_aborts_total{route,backend}`: requests whose client went away before their
//!   response head (see `forward::Awaiting`); never counted as the backend's errors.
//!   `crossfade_client_abort_wait_seconds{route,backend}`: the same by how long they had waited
//!   (histogram, the duration buckets), which the controller's analysis reads.
//! - `crossfade_unanswered_requests{route,backend,longer_than}`: bodiless requests with no
//!   response head yet that have waited longer than `longer_than` seconds (`0`, and 50 ms to 10 s
//!   on the duration buckets' bounds; see [`crate::stats::unanswered`]).
//! - `crossfade_upgraded_connections{route,backend}`: upgraded connections (WebSocket and other
//!   HTTP/1.1 upgrades) open now; a retired backend's drain waits for it to reach 0.
//! - `crossfade_tunnel_idle_closes_total{route,backend}`: upgraded connections closed after
//!   `limits.tunnel_idle_timeout` without a byte either way.
//! - `crossfade_tunnel_drain_closes_total{route,backend}`: upgraded connections closed by the
//!   endpoint drain, `drain_timeout` after a table swap removed their endpoint (`crate::drain`).
//! - `crossfade_backend_weight_basis_points{route,backend}`: the split in the table in force (the
//!   applied one; a tripped or endpoint-less backend's traffic goes elsewhere regardless).
//! - `crossfade_backend_active{route,backend}`: 1 for the slot in the active role, else 0.
//! - `crossfade_routing_table_generation`: the generation of the table in force.
//! - health: `crossfade_ejections_total{route,backend,reason}`, `crossfade_breaker_trips_total` and
//!   `crossfade_breaker_tripped{route,backend}` (see [`crate::health`]).
//! - listener: `crossfade_shed_total{reason}` (clients answered 503 by a limit: `connections`,
//!   `requests`), `crossfade_client_connections`, `crossfade_client_requests_in_flight`,
//!   `crossfade_lingering_closes_total{end}` (`closed`, `quiet`, `time`, `bytes`, `error`) and
//!   `crossfade_lingering_discarded_bytes_total` (see [`crate::linger`]),
//!   `crossfade_access_log_dropped_total{reason}` (access log lines lost: `queue_full`,
//!   `write_error`, see [`crate::access`]),
//!   `crossfade_client_body_failures_total{reason}` (`aborted`, `malformed`, `timeout`: request
//!   bodies that failed on the client's account, see [`crate::limits::ClientBodyFailure`]),
//!   `crossfade_send_timeouts_total` (client connections closed at `limits.send_timeout`),
//!   `crossfade_h2_stream_send_timeouts_total` (HTTP/2 streams reset at `limits.send_timeout`,
//!   most often for a flow-control window the client never opens),
//!   `crossfade_h2_calm_downs_total` (HTTP/2 connections closed with GOAWAY `ENHANCE_YOUR_CALM`
//!   for premature stream resets, `limits.h2_max_premature_resets`); under
//!   `tls`, `crossfade_tls_reloads_total{result}` (`ok`, `error`) and
//!   `crossfade_tls_last_reload_success` (see [`crate::limits`]).
//! - shadow traffic (see [`crate::shadow`]), per mirror target (`backend` is the preview the
//!   requests were mirrored to), only for routes with `shadow` or with mirrored requests:
//!   `crossfade_shadow_mirrored_total`, `crossfade_shadow_resent_total` (mirrored requests sent a
//!   second time after a reset before any answer), `crossfade_shadow_compared_total{result}` (`matched`,
//!   `mismatched`), `crossfade_shadow_mismatches_total{kind}` (`status`, `header`, `body`; one
//!   comparison may count several), `crossfade_shadow_skipped_total{reason}` (`method`,
//!   `request_body`, `concurrency`, `body_too_large`, `primary_incomplete`),
//!   `crossfade_shadow_errors_total{kind}` (the upstream error kinds, and `body`),
//!   `crossfade_shadow_in_flight`, `crossfade_shadow_request_duration_seconds` (histogram, the
//!   duration buckets: the time from sending a mirrored request to the backend's response head, or
//!   to the failure or `shadow.timeout`) and `crossfade_shadow_unanswered_requests{longer_than}`
//!   (mirrored requests still waiting for their head, the bounds of `crossfade_unanswered_requests`).
//!
//! Weight and active series follow the table in force; counter series of a route that was removed
//! stay (frozen) until restart, so that rates over a window spanning the removal stay correct.

use std::sync::{Arc, OnceLock, PoisonError, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::error::ErrorKind;
use crate::handle::Shared;
use crate::histogram::LATENCY_BOUNDS_SECONDS;
use crate::limits::ShedReason;
use crate::linger::LingerEnd;
use crate::shadow::{MismatchKind, ShadowStats, SkipReason, SHADOW_ERROR_KINDS};
use crate::stats::{BackendStats, RETRY_METHODS, RETRY_REASONS, STATUS_CLASSES};
use crate::weight::Slot;

/// The proxy's metrics, registered once in the caller's registry and bound to the [`Proxy`] built
/// with them.
///
/// [`ProxyMetrics::default`] is an unregistered bundle, for proxies whose metrics nobody scrapes.
/// A bundle exports the first proxy it is given to; later proxies built with a clone are not
/// exported.
///
/// [`Proxy`]: crate::Proxy
#[derive(Clone, Debug, Default)]
pub struct ProxyMetrics {
    proxy: Arc<OnceLock<Weak<Shared>>>,
}

#[derive(Debug)]
struct ProxyCollector {
    proxy: Arc<OnceLock<Weak<Shared>>>,
}

// === impl ProxyMetrics ===

impl ProxyMetrics {
    /// Registers the proxy's collector in `registry`, which the caller created with the prefix
    /// `crossfade`.
    pub fn register(registry: &mut Registry) -> ProxyMetrics {
        let metrics = ProxyMetrics::default();
        registry.register_collector(Box::new(ProxyCollector {
            proxy: Arc::clone(&metrics.proxy),
        }));
        metrics
    }

    pub(crate) fn attach(&self, shared: &Arc<Shared>) {
        // A bundle exports its first proxy only (documented above).
        let _ = self.proxy.set(Arc::downgrade(shared));
    }
}

type Labels<'a, const N: usize> = [(&'static str, &'a str); N];

// === impl ProxyCollector ===

impl Collector for ProxyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(shared) = self.proxy.get().and_then(Weak::upgrade) else {
            return Ok(());
        };
        let stats: Vec<_> = {
            let map = shared.stats.lock().unwrap_or_else(PoisonError::into_inner);
            map.iter()
                .map(|((route, slot), stats)| (Arc::clone(route), *slot, Arc::clone(stats)))
                .collect()
        };
        encode_table(&shared, &mut encoder)?;
        let local = shared.local.snapshot();
        encode_counters(&stats, &local, &mut encoder)?;
        encode_backend_state(&stats, &mut encoder)?;
        encode_latency(&stats, &mut encoder)?;
        encode_unanswered(&stats, &mut encoder)?;
        encode_listener(&shared, &mut encoder)?;
        encode_shadow(&shared, &stats, &mut encoder)?;
        crate::health::metrics::encode(&shared, &mut encoder)
    }
}

/// HELP of `crossfade_backend_weight_basis_points`: the weight in the table in force (docs:
/// the applied split, as against the controller's desired one), not the share traffic gets.
pub const WEIGHT_HELP: &str = "Weight of the backend in the routing table in force (the applied split, as last set by the config, the admin API or the controller), in basis points (10000 = 100%); the backend's traffic follows it only while its breaker is not tripped and it has a healthy endpoint";

/// HELP of `crossfade_retries_total`, as [`crate::forward`]'s `retry_target` decides (trial 8, H9):
/// after a connect failure no byte was sent, so any request goes again, its body included.
pub const RETRIES_HELP: &str = "Requests re-sent after failing here: any request after a connect failure (no byte was sent, so a body goes along whole, whatever the method), a bodiless idempotent one after a reset before the response head, and h2c streams the backend refused unprocessed (refused_stream)";

/// HELP of `crossfade_local_responses_total`: every [`crate::local::LocalReason`] by its label.
pub const LOCAL_RESPONSES_HELP: &str = "Responses the proxy made itself, by the backend they were meant for, status class and reason (no_route, misdirected, route_disabled, no_endpoint, overloaded, bad_request, request_timeout, upstream, bad_head, loop_detected)";

type StatsRow = (Arc<str>, Slot, Arc<BackendStats>);
type LocalRow = (String, crate::local::LocalKey, u64);
type TableRoute = crate::table::Route<Arc<crate::upstream::Upstream>>;

fn encode_table(shared: &Shared, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let table = shared.table.load();
    let generation = ConstGauge::new(i64::try_from(table.generation()).unwrap_or(i64::MAX));
    let metric = encoder.encode_descriptor(
        "routing_table_generation",
        "Generation of the routing table in force; rises by one per published change",
        None,
        MetricType::Gauge,
    )?;
    generation.encode(metric)?;

    let routes = table.routes();
    encode_table_gauge(
        encoder,
        ("backend_weight_basis_points", WEIGHT_HELP),
        routes,
        |route, slot| u64::from(route.weights().of(slot)),
    )?;
    encode_table_gauge(
        encoder,
        ("backend_endpoints", "Endpoints configured for the backend"),
        routes,
        |route, slot| route.backend(slot).endpoints().len() as u64,
    )?;
    encode_table_gauge(
        encoder,
        (
            "backend_healthy_endpoints",
            "Endpoints of the backend that can take requests now (not ejected, passing health checks)",
        ),
        routes,
        |route, slot| {
            let backend = route.backend(slot);
            let configured = backend.endpoints().len();
            backend.upstream().health().healthy_endpoints(configured) as u64
        },
    )?;
    encode_table_gauge(
        encoder,
        (
            "backend_active",
            "1 for the backend in the route's active role, else 0",
        ),
        routes,
        |route, slot| u64::from(route.active() == slot),
    )
}

/// A gauge family with one series per backend of every route of the table in force;
/// `(name, help)`.
fn encode_table_gauge(
    encoder: &mut DescriptorEncoder,
    (name, help): (&str, &str),
    routes: &[TableRoute],
    value: impl Fn(&TableRoute, Slot) -> u64,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for route in routes {
        for slot in Slot::ALL {
            let labels: Labels<2> = [("route", route.name()), ("backend", slot.as_str())];
            metric
                .encode_family(&labels)?
                .encode_gauge(&value(route, slot))?;
        }
    }
    Ok(())
}

fn encode_counters(
    stats: &[StatsRow],
    local: &[LocalRow],
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let kinds = ErrorKind::ALL.map(ErrorKind::as_str);
    encode_requests(stats, local, encoder)?;
    encode_local(local, encoder)?;
    encode_labelled(
        encoder,
        ("upstream_errors", "kind", "Upstream failures by kind"),
        stats,
        kinds,
        BackendStats::upstream_errors,
    )?;
    encode_labelled(
        encoder,
        ("retries", "reason", RETRIES_HELP),
        stats,
        RETRY_REASONS,
        BackendStats::retries,
    )?;
    encode_labelled(
        encoder,
        (
            "retries_by_method",
            "method",
            "The same retries as retries_total, by request method (other: any method re-sent after a connect failure or a refused h2c stream)",
        ),
        stats,
        RETRY_METHODS,
        BackendStats::retry_methods,
    )
}

/// The label value of `backend` for a local reply meant for no backend (none was chosen).
const NO_BACKEND: &str = "none";

/// `crossfade_requests_total`: every response by status class, per backend (the proxy's own
/// answers for a backend included), and the proxy's answers that no backend was chosen for
/// (`backend="none"`; `route=""` when no route matched).
fn encode_requests(
    stats: &[StatsRow],
    local: &[LocalRow],
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(
        "requests",
        "Responses sent, by status class: per backend (the proxy's own answers for it included), and backend none for the proxy's answers when no backend was chosen",
        None,
        MetricType::Counter,
    )?;
    for (route, slot, s) in stats {
        for (class, value) in STATUS_CLASSES.iter().zip(s.classes()) {
            let labels: Labels<3> = [
                ("route", route),
                ("backend", slot.as_str()),
                ("class", class),
            ];
            metric
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }
    }
    // Summed over reasons: one series per (route, class) among those seen.
    let mut unassigned: std::collections::BTreeMap<(&str, usize), u64> = Default::default();
    for (route, (slot, _, class), value) in local {
        if slot.is_none() {
            *unassigned.entry((route.as_str(), *class)).or_default() += value;
        }
    }
    for ((route, class), value) in unassigned {
        let labels: Labels<3> = [
            ("route", route),
            ("backend", NO_BACKEND),
            ("class", STATUS_CLASSES[class]),
        ];
        metric
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
    }
    Ok(())
}

/// `crossfade_local_responses_total`: the proxy's own answers by route, backend (`none`: none
/// was chosen), status class and [`crate::local::LocalReason`].
fn encode_local(
    local: &[LocalRow],
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(
        "local_responses",
        LOCAL_RESPONSES_HELP,
        None,
        MetricType::Counter,
    )?;
    for (route, (slot, reason, class), value) in local {
        let backend = slot.map_or(NO_BACKEND, Slot::as_str);
        let labels: Labels<4> = [
            ("route", route),
            ("backend", backend),
            ("class", STATUS_CLASSES[*class]),
            ("reason", reason.as_str()),
        ];
        metric
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(value, None)?;
    }
    Ok(())
}

/// A counter family with one series per backend and per value of a closed label
/// (`values[i]` is the count for `names[i]`); `(name, label, help)`.
fn encode_labelled<const N: usize>(
    encoder: &mut DescriptorEncoder,
    (name, label, help): (&str, &'static str, &str),
    stats: &[StatsRow],
    names: [&'static str; N],
    values: fn(&BackendStats) -> [u64; N],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (route, slot, s) in stats {
        for (name, value) in names.iter().zip(values(s)) {
            let labels: Labels<3> = [("route", route), ("backend", slot.as_str()), (label, name)];
            metric
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }
    }
    Ok(())
}

/// A family with one series per backend of `stats`: a gauge or a counter; `(name, help)`.
fn encode_per_backend(
    encoder: &mut DescriptorEncoder,
    (name, help): (&str, &str),
    kind: MetricType,
    stats: &[StatsRow],
    value: fn(&BackendStats) -> u64,
) -> Result<(), std::fmt::Error> {
    let counter = matches!(kind, MetricType::Counter);
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (route, slot, s) in stats {
        let labels: Labels<2> = [("route", route), ("backend", slot.as_str())];
        let mut family = metric.encode_family(&labels)?;
        if counter {
            family.encode_counter::<NoLabelSet, _, u64>(&value(s), None)?;
        } else {
            family.encode_gauge(&value(s))?;
        }
    }
    Ok(())
}

/// In-flight requests, the analysis counts, open tunnels and refused retries per backend.
fn encode_backend_state(
    stats: &[StatsRow],
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    encode_per_backend(
        encoder,
        (
            "in_flight_requests",
            "Requests dispatched to the backend and not yet finished",
        ),
        MetricType::Gauge,
        stats,
        BackendStats::in_flight,
    )?;
    encode_per_backend(
        encoder,
        (
            "dispatched_requests",
            "Attempts dispatched to the backend, failed ones retried elsewhere included (the request count of the controller's analysis)",
        ),
        MetricType::Counter,
        stats,
        BackendStats::dispatched,
    )?;
    encode_per_backend(
        encoder,
        (
            "backend_errors",
            "5xx responses, gRPC server-fault statuses and upstream failures of the backend, retried ones and broken response bodies included (the error count of the controller's analysis)",
        ),
        MetricType::Counter,
        stats,
        BackendStats::errors,
    )?;
    encode_per_backend(
        encoder,
        ("client_aborts", CLIENT_ABORTS_HELP),
        MetricType::Counter,
        stats,
        BackendStats::client_aborts,
    )?;
    encode_per_backend(
        encoder,
        (
            "retry_budget_exhausted",
            "Retries not made because the backend's retry budget (upstream.retry_budget) was spent",
        ),
        MetricType::Counter,
        stats,
        BackendStats::budget_exhausted,
    )?;
    encode_per_backend(
        encoder,
        (
            "refused_not_replayed",
            "h2c streams the backend refused unprocessed that were not replayed because the request body was over the replay limit (64 KiB)",
        ),
        MetricType::Counter,
        stats,
        BackendStats::replay_skipped,
    )?;
    encode_per_backend(
        encoder,
        (
            "upgraded_connections",
            "Upgraded connections (WebSocket and other HTTP/1.1 upgrades) open to the backend",
        ),
        MetricType::Gauge,
        stats,
        |s| s.tunnels().open(),
    )?;
    encode_per_backend(
        encoder,
        (
            "tunnel_idle_closes",
            "Upgraded connections closed because no byte moved either way for limits.tunnel_idle_timeout",
        ),
        MetricType::Counter,
        stats,
        |s| s.tunnels().idle_closed(),
    )?;
    encode_per_backend(
        encoder,
        ("tunnel_drain_closes", TUNNEL_DRAIN_CLOSES_HELP),
        MetricType::Counter,
        stats,
        |s| s.tunnels().drain_closed(),
    )
}

/// Help text of `crossfade_client_aborts_total` (docs/metrics.md says the same).
const CLIENT_ABORTS_HELP: &str = "Requests dispatched to the backend whose client went away (closed or reset its connection, reset its HTTP/2 stream) before their response head: the upstream exchange was dropped, logged 499; never an error of the backend";

/// Help text of `crossfade_tunnel_drain_closes_total` (docs/metrics.md says the same).
const TUNNEL_DRAIN_CLOSES_HELP: &str = "Upgraded connections closed because their endpoint left the routing table and drain_timeout passed (WebSockets with 1001 going away, other tunnels with a FIN)";

fn encode_latency(
    stats: &[StatsRow],
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    encode_histogram(
        encoder,
        ("request_duration", "Time from dispatch (for an upload, from its end) to the response head (or to the failure)"),
        stats,
        BackendStats::latency,
    )?;
    encode_histogram(
        encoder,
        ("client_abort_wait", CLIENT_ABORT_WAIT_HELP),
        stats,
        BackendStats::abort_waits,
    )
}

/// Help text of `crossfade_client_abort_wait_seconds` (docs/metrics.md says the same).
const CLIENT_ABORT_WAIT_HELP: &str = "How long the requests counted in client_aborts_total had waited (from dispatch; for an upload, from its end) when their client went away: a lower bound of the backend's response time, read by the controller's analysis";

/// A histogram family in seconds with one series per backend, in the
/// [`LATENCY_BOUNDS_SECONDS`] buckets; `(name, help)`.
fn encode_histogram(
    encoder: &mut DescriptorEncoder,
    (name, help): (&str, &str),
    stats: &[StatsRow],
    histogram: fn(&BackendStats) -> &crate::histogram::LatencyHistogram,
) -> Result<(), std::fmt::Error> {
    let mut metric =
        encoder.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    for (route, slot, s) in stats {
        let snapshot = histogram(s).coarse_snapshot();
        let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_SECONDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(snapshot.counts.iter().copied())
            .collect();
        let labels: Labels<2> = [("route", route), ("backend", slot.as_str())];
        metric
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(
                snapshot.sum_seconds,
                snapshot.count(),
                &buckets,
                None,
            )?;
    }
    Ok(())
}

/// Help text of `crossfade_unanswered_requests` (docs/metrics.md says the same).
const UNANSWERED_HELP: &str = "Bodiless requests dispatched to the backend with no response head yet that have waited longer than longer_than seconds (0: all of them), known to within 31.25 ms; the controller's analysis counts those past max_p99 as slower than it";

/// `crossfade_unanswered_requests{route,backend,longer_than}`: one gauge per bound of
/// [`crate::stats::unanswered::UNANSWERED_BOUNDS_SECONDS`].
fn encode_unanswered(
    stats: &[StatsRow],
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    encode_waiting(
        encoder,
        ("unanswered_requests", UNANSWERED_HELP),
        stats,
        BackendStats::unanswered,
    )
}

/// A gauge family `{route,backend,longer_than}` of requests waiting for their response head, one
/// gauge per bound of [`crate::stats::unanswered::UNANSWERED_BOUNDS_SECONDS`]; `(name, help)`.
fn encode_waiting(
    encoder: &mut DescriptorEncoder,
    (name, help): (&str, &str),
    stats: &[StatsRow],
    waiting: fn(&BackendStats) -> crate::stats::Unanswered,
) -> Result<(), std::fmt::Error> {
    use crate::stats::unanswered::UNANSWERED_BOUNDS_SECONDS;
    let bounds = unanswered_labels();
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (route, slot, s) in stats {
        let unanswered = waiting(s);
        for (bound, text) in UNANSWERED_BOUNDS_SECONDS.iter().zip(&bounds) {
            let labels: Labels<3> = [
                ("route", route),
                ("backend", slot.as_str()),
                ("longer_than", text),
            ];
            metric
                .encode_family(&labels)?
                .encode_gauge(&unanswered.longer_than(*bound))?;
        }
    }
    Ok(())
}

/// The `longer_than` label values of `crossfade_unanswered_requests`, one per bound of
/// [`crate::stats::unanswered::UNANSWERED_BOUNDS_SECONDS`].
fn unanswered_labels() -> Vec<String> {
    crate::stats::unanswered::UNANSWERED_BOUNDS_SECONDS
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Lingering closes of client connections by how they ended, and the bytes they discarded.
fn encode_lingering(
    limits: &crate::limits::Limits,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let mut closes = encoder.encode_descriptor(
        "lingering_closes",
        "Lingering closes of client connections (RFC 9112 §9.6), by how they ended",
        None,
        MetricType::Counter,
    )?;
    for (end, value) in LingerEnd::ALL.iter().zip(limits.lingered.ends()) {
        let labels: Labels<1> = [("end", end.as_str())];
        closes
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
    }
    let mut discarded = encoder.encode_descriptor(
        "lingering_discarded",
        "Bytes of client uploads read and discarded by lingering closes",
        Some(&Unit::Bytes),
        MetricType::Counter,
    )?;
    discarded.encode_counter::<NoLabelSet, _, u64>(&limits.lingered.discarded(), None)?;
    Ok(())
}

/// The listener's families: sheds by reason, open connections, requests in flight, TLS reloads.
fn encode_listener(
    shared: &Shared,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let limits = &shared.limits;
    let mut shed = encoder.encode_descriptor(
        "shed",
        "Clients answered 503 with Retry-After by a listener limit, by reason",
        None,
        MetricType::Counter,
    )?;
    for (reason, value) in ShedReason::ALL.iter().zip(limits.shed_counts()) {
        let labels: Labels<1> = [("reason", reason.as_str())];
        shed.encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
    }
    encode_lingering(limits, encoder)?;
    let mut dropped = encoder.encode_descriptor(
        "access_log_dropped",
        "Access log lines lost, by reason: queue_full (the writer fell behind), write_error (the \
         write failed: a full disk, an I/O error); 0 with the log off",
        None,
        MetricType::Counter,
    )?;
    let log = shared.access.as_ref();
    let reasons = [
        (
            "queue_full",
            log.map_or(0, crate::access::AccessLog::dropped),
        ),
        (
            "write_error",
            log.map_or(0, crate::access::AccessLog::write_failed),
        ),
    ];
    for (reason, lost) in reasons {
        let labels: Labels<1> = [("reason", reason)];
        dropped
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&lost, None)?;
    }
    let mut failures = encoder.encode_descriptor(
        "client_body_failures",
        "Client request bodies that failed on the client's account (never the backend's), by reason",
        None,
        MetricType::Counter,
    )?;
    let reasons = crate::limits::ClientBodyFailure::ALL;
    for (reason, value) in reasons.iter().zip(limits.body_failure_counts()) {
        let labels: Labels<1> = [("reason", reason.as_str())];
        failures
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
    }
    let load =
        |count: &std::sync::atomic::AtomicU64| count.load(std::sync::atomic::Ordering::Relaxed);
    let counters = [
        (
            "proxy_protocol_refused",
            "Client connections closed unanswered because they did not begin with a well-formed \
             PROXY protocol header (proxy_protocol: true); 0 with the setting off",
            load(&shared.proxy_protocol_refused),
        ),
        (
            "h2_calm_downs",
            "HTTP/2 client connections closed with GOAWAY ENHANCE_YOUR_CALM because the client \
             reset more streams after their request went upstream than \
             limits.h2_max_premature_resets allows (Rapid Reset, CVE-2023-44487)",
            load(&shared.h2_calm_downs),
        ),
        (
            "send_timeouts",
            "Client connections closed because a write to the client waited past \
             limits.send_timeout while the client read nothing",
            load(&shared.send_timeouts),
        ),
        (
            "h2_stream_send_timeouts",
            "HTTP/2 streams reset with CANCEL because a response chunk waited past \
             limits.send_timeout for the client to take it (most often a client that opens no \
             flow-control window)",
            load(&shared.h2_stream_send_timeouts),
        ),
    ];
    for (name, help, count) in counters {
        let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        ConstCounter::new(count).encode(metric)?;
    }
    let gauges = [
        (
            "client_connections",
            "Client connections being served (shed ones not included)",
            limits.open_connections(),
        ),
        (
            "client_requests_in_flight",
            "Client requests received and not yet answered to their last byte",
            limits.requests_in_flight(),
        ),
    ];
    for (name, help, value) in gauges {
        let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(metric)?;
    }
    let Some(tls) = &shared.tls else {
        return Ok(());
    };
    let (ok, failed) = tls.reload_counts();
    let mut reloads = encoder.encode_descriptor(
        "tls_reloads",
        "TLS certificate reloads that changed the served pair (ok) or failed and kept the old one",
        None,
        MetricType::Counter,
    )?;
    for (result, value) in [("ok", ok), ("error", failed)] {
        let labels: Labels<1> = [("result", result)];
        reloads
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
    }
    let last = encoder.encode_descriptor(
        "tls_last_reload_success",
        "1 when the last TLS certificate reload succeeded (or none was tried), 0 when it failed",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(i64::from(tls.last_reload_ok())).encode(last)
}

/// The shadow families, for the backends of routes that mirror now or did.
fn encode_shadow(
    shared: &Shared,
    stats: &[StatsRow],
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let table = shared.table.load();
    let rows: Vec<StatsRow> = stats
        .iter()
        .filter(|(route, _, s)| {
            let shadowed = table.route(route).is_some_and(|r| r.shadow().is_some());
            shadowed || s.shadow().mirrored() > 0
        })
        .cloned()
        .collect();
    encode_per_backend(
        encoder,
        (
            "shadow_mirrored",
            "Requests mirrored to the backend as shadow traffic (fire-and-forget, answers compared)",
        ),
        MetricType::Counter,
        &rows,
        |s| s.shadow().mirrored(),
    )?;
    encode_per_backend(
        encoder,
        (
            "shadow_resent",
            "Mirrored requests sent a second time after a reset before any answer (a pooled connection the backend closed as it was reused)",
        ),
        MetricType::Counter,
        &rows,
        |s| s.shadow().resent(),
    )?;
    encode_labelled(
        encoder,
        (
            "shadow_compared",
            "result",
            "Shadow answers compared with the active backend's: status, chosen headers and body hash all equal (matched) or not",
        ),
        &rows,
        ["matched", "mismatched"],
        |s| s.shadow().results(),
    )?;
    encode_labelled(
        encoder,
        (
            "shadow_mismatches",
            "kind",
            "Shadow comparisons that differed, by what differed (one comparison may count several kinds)",
        ),
        &rows,
        MismatchKind::ALL.map(MismatchKind::as_str),
        |s| s.shadow().kinds(),
    )?;
    encode_labelled(
        encoder,
        (
            "shadow_skipped",
            "reason",
            "Requests sampled for shadow traffic that were not compared, by reason",
        ),
        &rows,
        SkipReason::ALL.map(SkipReason::as_str),
        |s| s.shadow().skips(),
    )?;
    encode_labelled(
        encoder,
        (
            "shadow_errors",
            "kind",
            "Mirrored requests that failed on the backend, by kind (body: the body failed mid-stream)",
        ),
        &rows,
        SHADOW_ERROR_KINDS,
        |s| s.shadow().errors(),
    )?;
    encode_per_backend(
        encoder,
        (
            "shadow_in_flight",
            "Mirrored exchanges to the backend in flight now (bounded by shadow.max_in_flight)",
        ),
        MetricType::Gauge,
        &rows,
        |s| ShadowStats::in_flight(s.shadow()),
    )?;
    encode_histogram(
        encoder,
        ("shadow_request_duration", SHADOW_DURATION_HELP),
        &rows,
        shadow_latency,
    )?;
    encode_waiting(
        encoder,
        ("shadow_unanswered_requests", SHADOW_UNANSWERED_HELP),
        &rows,
        |s| s.shadow().unanswered(),
    )?;
    encode_histogram(
        encoder,
        ("shadow_paired_active_duration", SHADOW_PAIRED_ACTIVE_HELP),
        &rows,
        shadow_paired_active,
    )?;
    encode_histogram(
        encoder,
        ("shadow_paired_preview_duration", SHADOW_PAIRED_PREVIEW_HELP),
        &rows,
        shadow_paired_preview,
    )
}

/// The mirror target's response time to mirrored requests.
fn shadow_latency(stats: &BackendStats) -> &crate::histogram::LatencyHistogram {
    stats.shadow().latency()
}

/// The active backend's response time to the paired mirrored requests.
fn shadow_paired_active(stats: &BackendStats) -> &crate::histogram::LatencyHistogram {
    stats.shadow().paired_active()
}

/// The mirror target's response time to the same requests.
fn shadow_paired_preview(stats: &BackendStats) -> &crate::histogram::LatencyHistogram {
    stats.shadow().paired_preview()
}

/// Help text of `crossfade_shadow_request_duration_seconds` (docs/metrics.md says the same).
const SHADOW_DURATION_HELP: &str = "Time from sending a mirrored request to the backend's response head (or to the failure, or to shadow.timeout when none came); the shadow step's analysis holds it to max_p99";

/// Help text of `crossfade_shadow_paired_active_duration_seconds` (docs/metrics.md says the same).
const SHADOW_PAIRED_ACTIVE_HELP: &str = "The active backend's time to its response head on the requests mirrored to the backend whose two times are known (the pairs), from dispatch as crossfade_request_duration_seconds counts it; the shadow step holds the preview's p99 on the same requests to max_p99_ratio times its p99";

/// Help text of `crossfade_shadow_paired_preview_duration_seconds` (docs/metrics.md says the same).
const SHADOW_PAIRED_PREVIEW_HELP: &str = "The backend's time to its response head (or to shadow.timeout when none came) on the same paired mirrored requests, one sample per pair";

/// Help text of `crossfade_shadow_unanswered_requests` (docs/metrics.md says the same).
const SHADOW_UNANSWERED_HELP: &str = "Mirrored requests sent to the backend with no response head yet that have waited longer than longer_than seconds (0: all of them), known to within 31.25 ms; the shadow step's analysis counts those past max_p99 as slower than it";

#[cfg(test)]
mod help_tests {
    use super::*;
    use crate::local::LocalReason;

    /// docs/metrics.md, the catalogue the help texts must agree with.
    const DOCS: &str = include_str!("../../docs/metrics.md");

    /// The docs/metrics.md table row of `name`.
    fn row(name: &str) -> &'static str {
        DOCS.lines()
            .find(|l| l.starts_with(&format!("| `{name}` |")))
            .unwrap_or_else(|| panic!("{name} is not in docs/metrics.md"))
    }

    /// Trial 8, H9: the help of `crossfade_retries_total` said only bodiless requests are retried
    /// after a connect failure; `local_responses` left out `loop_detected`; the weight gauge said
    /// "configured" where the docs say "applied".
    #[test]
    fn help_texts_say_what_the_metrics_count_as_the_docs_do() {
        for reason in LocalReason::ALL {
            assert!(
                LOCAL_RESPONSES_HELP.contains(reason.as_str()),
                "{} not in the help",
                reason.as_str()
            );
            assert!(
                row("crossfade_local_responses_total").contains(&format!("`{}`", reason.as_str()))
            );
        }
        assert!(RETRIES_HELP.contains("any request after a connect failure"));
        assert!(!RETRIES_HELP.contains("bodiless ones after a connect failure"));
        assert!(row("crossfade_retries_total").contains("any request after a connect failure"));
        for text in [WEIGHT_HELP, row("crossfade_backend_weight_basis_points")] {
            assert!(
                text.contains("applied") && !text.contains("Configured"),
                "{text}"
            );
            assert!(
                text.contains("breaker") && text.contains("healthy endpoint"),
                "{text}"
            );
        }
    }

    /// The endpoint drain's counter says in its help what the docs say: which closes it counts.
    #[test]
    fn the_drain_closes_help_says_what_the_docs_say() {
        let row = row("crossfade_tunnel_drain_closes_total");
        for text in [TUNNEL_DRAIN_CLOSES_HELP, row] {
            assert!(
                text.contains("endpoint left the routing table") && text.contains("drain_timeout"),
                "{text}"
            );
        }
    }

    /// The `longer_than` labels of `crossfade_unanswered_requests` are the ones exported since
    /// the gauge came (dashboards and the controller's scrape read them), now that its bounds are
    /// derived from the latency buckets rather than written out again.
    #[test]
    fn the_unanswered_gauges_keep_their_longer_than_labels() {
        let labels = unanswered_labels();
        let before = [
            "0", "0.05", "0.075", "0.1", "0.15", "0.25", "0.5", "0.75", "1", "2.5", "5", "10",
        ];
        assert_eq!(labels, before);
        let listed = format!("`longer_than` is `{}` (", labels.join("`, `"));
        let row = row("crossfade_unanswered_requests");
        assert!(row.contains(&listed), "{listed}\n{row}");
    }

    /// The bucket bounds docs/metrics.md lists are the ones exported, in milliseconds below 1 s.
    #[test]
    fn the_documented_duration_buckets_are_the_exported_ones() {
        let listed: Vec<String> = LATENCY_BOUNDS_SECONDS
            .iter()
            .map(|&b| {
                if b < 1.0 {
                    format!("{} ms", b * 1000.0)
                } else {
                    format!("{b} s")
                }
            })
            .collect();
        let listed = listed.join(", ");
        let row = row("crossfade_request_duration_seconds");
        assert!(
            row.contains(&format!("Buckets {listed} (")),
            "{listed}\n{row}"
        );
    }
}
