//! The analysis counters read from a Prometheus server instead of from each proxy replica: for
//! large fleets, where the controller should not scrape every replica at every analysis.
//!
//! [`PrometheusMetrics`] is a [`ClusterMetrics`]: at each [`ClusterMetrics::refresh`] of a route it
//! sends one instant query (`GET {address}/api/v1/query`, Prometheus HTTP API) for the proxies'
//! own series of the route, the same families [`super::scrape`] reads from `/metrics`
//! (docs/metrics.md): `crossfade_dispatched_requests_total`, `crossfade_backend_errors_total`,
//! `crossfade_request_duration_seconds` and `crossfade_client_abort_wait_seconds` (histograms),
//! `crossfade_in_flight_requests`, `crossfade_upgraded_connections`,
//! `crossfade_unanswered_requests` and the `crossfade_shadow_*` families. The answer holds one
//! series per proxy replica (told apart by the target labels Prometheus adds: `instance`, `job`,
//! `pod`...), which are summed per route and backend by the scraper's rule ([`State::merge`]):
//! each replica adds what its counters rose since its previous reading, and a replica whose
//! counters went down restarted, so all of its new counts are added. The snapshots never go down
//! even though the sum over replicas in Prometheus does when one restarts.
//!
//! What Prometheus answers is as old as its last scrape of each replica: up to one scrape interval
//! behind the proxies (plus the scrape's own duration), so an analysis window read from it lags the
//! traffic by as much, and a window shorter than the scrape interval may see no new requests
//! (inconclusive). A replica that Prometheus failed to scrape has no series in the answer (its
//! staleness marker hides them) and adds nothing until it is scraped again; then it adds what it
//! counted meanwhile. A counter that rises past its old value between two readings after a restart
//! is not seen as a restart (the rule of `rate()` has the same blind spot). Point `address` at one
//! Prometheus: two servers behind one address answer from scrapes taken at other instants, and a
//! counter that goes back from one answer to the next reads as a restart (counted twice).
//!
//! Each query carries the source's request headers: `headers` as written and `headersFrom` read
//! from the TrafficShift namespace's Secrets just before it is sent, as a check's are
//! ([`crate::headers::resolve`]), so a Prometheus behind auth is read with a token that is not
//! written in the TrafficShift, and a rotated Secret is used at the next query. A header that
//! cannot be read fails that query, naming its field.
//!
//! A query that fails (Prometheus unreachable, an error answer, a body that is not one) makes the
//! route's snapshots errors until the next refresh that succeeds, as an unreachable proxy replica
//! does for the scraper: the analysis has no reading then, and a window without one is never a
//! pass.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crossfade_proxy::weight::Slot;
use crossfade_proxy::{BackendSnapshot, ShadowSnapshot};
use futures_util::future::BoxFuture;
use serde_json::Value;

use super::crd::PrometheusSource;
use super::crd::METRICS_SOURCE_FIELD;
use super::proxies::Replica;
use super::scrape::{readings, ClusterMetrics, Readings, Series, SeriesValue, State};
use crate::headers::{LocalValues, Values};
use crate::spec::headers::HeaderFrom;
use crate::traffic::MetricsSource;

#[cfg(test)]
mod tests;

/// How long one query may take (connect to the last body byte): 5 s, a scrape's
/// [`super::scrape::SCRAPE_TIMEOUT`].
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The series names read, as the `__name__` regex of the query (RE2, anchored by Prometheus).
pub const FAMILIES: &str = "crossfade_(dispatched_requests_total|backend_errors_total\
|request_duration_seconds_(bucket|sum)|client_abort_wait_seconds_(bucket|sum)\
|in_flight_requests|upgraded_connections|unanswered_requests|shadow_.+)";

/// The labels the proxies put on the series read (docs/metrics.md); every other label is one that
/// Prometheus' scrape added and tells the replicas apart.
const SERIES_LABELS: [&str; 8] = [
    "__name__",
    "le",
    "route",
    "backend",
    "longer_than",
    "result",
    "kind",
    "reason",
];

/// A [`ClusterMetrics`] that reads the proxies' counters from Prometheus (see the module docs).
pub struct PrometheusMetrics {
    /// The base URL, without a trailing `/`.
    address: String,
    /// Extra label matchers, e.g. `namespace="shop"`; empty for none.
    selector: String,
    /// Request headers with their values written in the spec.
    headers: BTreeMap<String, String>,
    /// Request headers whose values are read through `values` before each query.
    headers_from: Vec<HeaderFrom>,
    values: Arc<dyn Values>,
    state: Mutex<State>,
}

// === impl PrometheusMetrics ===

impl PrometheusMetrics {
    /// A source querying the Prometheus at `address` (its base URL, `http://` or `https://`, e.g.
    /// `http://prometheus.monitoring:9090`), its series narrowed by `selector` when given: label
    /// matchers as written inside a PromQL selector's braces, e.g. `job="crossfade-proxy"`, for a
    /// Prometheus that scrapes more than this fleet's proxies.
    ///
    /// # Errors
    /// Naming `address` or `selector` and what is wrong with it ([`check_address`],
    /// [`check_selector`]).
    pub fn new(address: &str, selector: Option<&str>) -> Result<PrometheusMetrics, String> {
        check_address(address).map_err(|e| format!("address: {e}"))?;
        let selector = selector.unwrap_or_default().trim();
        check_selector(selector).map_err(|e| format!("selector: {e}"))?;
        Ok(PrometheusMetrics {
            address: address.trim_end_matches('/').to_owned(),
            selector: selector.to_owned(),
            headers: BTreeMap::new(),
            headers_from: Vec::new(),
            values: Arc::new(LocalValues),
            state: Mutex::new(State::default()),
        })
    }

    /// The same source, its queries sending `headers` and the `headers_from` values read
    /// through `values` before each query. Both are checked by the spec's rules before a
    /// source is made ([`crate::spec::request_header_problems`]); a header whose value cannot
    /// be read fails the query, naming its field (`spec.rollout.analysis.metricsSource.
    /// prometheus.headersFrom[0]` with [`crate::kube::secrets::ClusterValues`]).
    pub fn with_headers(
        self,
        headers: BTreeMap<String, String>,
        headers_from: Vec<HeaderFrom>,
        values: Arc<dyn Values>,
    ) -> PrometheusMetrics {
        PrometheusMetrics {
            headers,
            headers_from,
            values,
            ..self
        }
    }

    /// The PromQL of `route`'s series: every family read, of both backends, narrowed by the
    /// selector.
    pub fn query(&self, route: &str) -> String {
        let route = route.replace('\\', "\\\\").replace('"', "\\\"");
        let mut matchers =
            format!(r#"__name__=~"{FAMILIES}",route="{route}",backend=~"blue|green""#);
        if !self.selector.is_empty() {
            matchers.push(',');
            matchers.push_str(&self.selector);
        }
        format!("{{{matchers}}}")
    }

    /// Queries `route`'s series, with the source's headers read now, and reads them per
    /// replica.
    async fn read(&self, route: &str) -> Result<Readings, String> {
        let field = format!("{METRICS_SOURCE_FIELD}.prometheus");
        let headers =
            crate::headers::resolve(&*self.values, &field, &self.headers, &self.headers_from)
                .await
                .map_err(|e| format!("prometheus query {}: {e}", self.address))?;
        let url = format!(
            "{}/api/v1/query?{}",
            self.address,
            form_urlencoded::Serializer::new(String::new())
                .append_pair("query", &self.query(route))
                .finish()
        );
        let reply = crate::fetch::send(http::Method::GET, &url, &headers, None, QUERY_TIMEOUT)
            .await
            .map_err(|e| format!("prometheus query {e}"))?;
        let body: Value = serde_json::from_slice(&reply.body).map_err(|_| {
            format!(
                "prometheus query {}: {}, not a Prometheus API answer",
                self.address,
                reply.refusal()
            )
        })?;
        answer_readings(&body).map_err(|e| format!("prometheus query {}: {e}", self.address))
    }
}

/// The readings of each replica in an instant query's answer ([`replica_series`]); a replica
/// whose series cannot be read (latency buckets of another proxy version) is one that could not
/// be read.
///
/// # Errors
/// As [`replica_series`].
pub fn answer_readings(body: &Value) -> Result<Readings, String> {
    Ok(replica_series(body)?
        .into_iter()
        .map(|(replica, series)| {
            let read = readings(&series).map_err(|e| format!("replica {{{replica}}}: {e}"));
            (replica, read)
        })
        .collect())
}

impl ClusterMetrics for PrometheusMetrics {
    /// Queries Prometheus for `route`'s series; `replicas` are not used (Prometheus knows which
    /// replicas it scrapes).
    fn refresh<'a>(&'a self, route: &'a str, _replicas: &'a [&'a Replica]) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let readings = match self.read(route).await {
                Ok(readings) => readings,
                Err(e) => vec![(String::new(), Err(e))],
            };
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.merge(route, readings, "prometheus metrics incomplete");
        })
    }
}

impl MetricsSource for PrometheusMetrics {
    fn snapshot(&self, route: &str, slot: Slot) -> crate::Result<BackendSnapshot> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.snapshot(route, slot, "prometheus not queried yet")
    }

    /// The shadow counters of the requests the proxies mirrored to `slot`, summed over the
    /// replicas as the request counters are; `None` while no replica has shown any.
    fn shadow(&self, route: &str, slot: Slot) -> crate::Result<Option<ShadowSnapshot>> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.shadow(route, slot)
    }
}

/// The [`PrometheusMetrics`] that TrafficShifts name (`spec.rollout.analysis.metricsSource`),
/// one per namespace and source (address, selector, headers), kept for the controller's life:
/// each keeps its totals and its replicas' last readings between reconciles, as the one
/// [`super::scrape::ProxyScraper`] does. The namespace is part of the key because `headersFrom`
/// names Secrets of the TrafficShift's namespace.
#[derive(Default)]
pub struct PrometheusSources {
    by_source: Mutex<HashMap<(String, PrometheusSource), Arc<dyn ClusterMetrics>>>,
}

impl PrometheusSources {
    /// The source of `source` for a TrafficShift of `namespace`, made at the first call with
    /// `values()` (the namespace's Secrets) to read its `headersFrom`. A source that is not
    /// valid (its TrafficShift is refused before any rollout reads it) reads nothing: every
    /// snapshot is an error that says why.
    pub fn get(
        &self,
        source: &PrometheusSource,
        namespace: &str,
        values: impl FnOnce() -> Arc<dyn Values>,
    ) -> Arc<dyn ClusterMetrics> {
        let key = (namespace.to_owned(), source.clone());
        let mut by_source = self
            .by_source
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let made = by_source.entry(key).or_insert_with(|| {
            match PrometheusMetrics::new(&source.address, source.selector.as_deref()) {
                Ok(metrics) => Arc::new(metrics.with_headers(
                    source.headers.clone(),
                    source.headers_from_config(),
                    values(),
                )),
                Err(why) => Arc::new(Unreadable(format!("metricsSource.prometheus.{why}"))),
            }
        });
        Arc::clone(made)
    }
}

/// A metrics source that cannot be read, and why.
struct Unreadable(String);

impl ClusterMetrics for Unreadable {
    fn refresh<'a>(&'a self, _: &'a str, _: &'a [&'a Replica]) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

impl MetricsSource for Unreadable {
    fn snapshot(&self, route: &str, _: Slot) -> crate::Result<BackendSnapshot> {
        Err(crate::Error::traffic(route, self.0.clone()))
    }
}

/// Checks a Prometheus base URL: absolute `http://` or `https://` with a host, no query or
/// fragment (the API path is appended to it).
///
/// # Errors
/// What is wrong, with the value: `"prometheus:9090" is not an http:// or https:// URL`.
pub fn check_address(address: &str) -> Result<(), String> {
    let uri: http::Uri = address
        .parse()
        .map_err(|e| format!("{address:?} is not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!(
            "{address:?} is not an http:// or https:// URL (e.g. http://prometheus:9090)"
        ));
    }
    if uri.query().is_some() || address.contains('#') {
        return Err(format!(
            "{address:?} has a query or fragment; give the base URL, /api/v1/query is appended"
        ));
    }
    Ok(())
}

/// Checks a selector's shape: label matchers without the braces, no `__name__`, `route` or
/// `backend` (the source sets those). Prometheus checks the matchers themselves at the first
/// query and answers `bad_data`, which makes the analysis read nothing.
///
/// # Errors
/// What is wrong: braces, or a label the source sets.
pub fn check_selector(selector: &str) -> Result<(), String> {
    if selector.contains(['{', '}']) {
        return Err(format!(
            "{selector:?}: write the label matchers without braces, e.g. job=\"crossfade-proxy\""
        ));
    }
    for label in ["__name__", "route", "backend"] {
        let names = selector.split(',').map(|m| {
            let end = m.find(['=', '!']).unwrap_or(m.len());
            m[..end].trim()
        });
        if names.clone().any(|n| n == label) {
            return Err(format!(
                "{selector:?} matches on {label}, which the source sets itself"
            ));
        }
    }
    Ok(())
}

/// The series of an instant query's answer, grouped by replica (its labels other than the
/// proxies' own, [`SERIES_LABELS`], as `name="value",...`), `_bucket` series gathered into their
/// histograms.
///
/// # Errors
/// Prometheus' own error (`bad_data: parse error ...`), a result that is not a vector, a sample
/// whose value is not a number.
pub fn replica_series(body: &Value) -> Result<BTreeMap<String, Vec<Series>>, String> {
    let data = crate::analysis::checks::prometheus_data(body)?;
    if data["resultType"] != "vector" {
        return Err(format!(
            "the query returned a {}, expected a vector",
            data["resultType"]
                .as_str()
                .unwrap_or("result of unknown type")
        ));
    }
    let mut histograms: BTreeMap<BucketsKey, Vec<(f64, f64)>> = BTreeMap::new();
    let mut out: BTreeMap<String, Vec<Series>> = BTreeMap::new();
    for result in data["result"].as_array().map_or(&[][..], Vec::as_slice) {
        let (name, mut labels, replica) = series_labels(&result["metric"]);
        let value = sample_value(&result["value"])
            .ok_or_else(|| format!("the sample {result} holds no number"))?;
        let bucket = name
            .strip_suffix("_bucket")
            .zip(labels.get("le").and_then(|le| le.parse::<f64>().ok()));
        match bucket {
            Some((family, le)) => {
                labels.remove("le");
                let key = (replica, family.to_owned(), labels);
                histograms.entry(key).or_default().push((le, value));
            }
            None => out.entry(replica).or_default().push(Series {
                metric: name,
                labels,
                value: SeriesValue::Scalar(value),
            }),
        }
    }
    for ((replica, metric, labels), buckets) in histograms {
        out.entry(replica).or_default().push(Series {
            metric,
            labels,
            value: SeriesValue::Histogram(buckets),
        });
    }
    Ok(out)
}

/// A histogram gathered from its `_bucket` series: its replica, family name and labels without
/// `le`.
type BucketsKey = (String, String, BTreeMap<String, String>);

/// A result's series name, labels (without `__name__`) and replica (see [`replica_series`]).
fn series_labels(metric: &Value) -> (String, BTreeMap<String, String>, String) {
    let mut labels: BTreeMap<String, String> = metric
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect();
    let name = labels.remove("__name__").unwrap_or_default();
    let replica: Vec<String> = labels
        .iter()
        .filter(|(k, _)| !SERIES_LABELS.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    (name, labels, replica.join(","))
}

/// An instant sample's number: `[unix_seconds, "value"]`, values as strings (`"NaN"`, `"+Inf"`).
fn sample_value(sample: &Value) -> Option<f64> {
    sample[1].as_str().and_then(|s| s.parse::<f64>().ok())
}
