//! `spec.rollout.analysis.metricsSource` of a TrafficShift: where the analysis reads the proxies'
//! counters (docs/kubernetes.md, "Analysis through Prometheus").

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::headers::{HeaderFrom, MAX_HEADERS_FROM};
use crate::kube::prometheus::{check_address, check_selector};
use crate::spec::headers::HeaderFrom as SpecHeaderFrom;
use crate::spec::Problem;

/// The field of a TrafficShift's metrics source, in the spec's snake_case as
/// [`crate::headers::resolve`] and the spec's rules name fields (`metricsSource` in the
/// TrafficShift).
pub const METRICS_SOURCE_FIELD: &str = "rollout.analysis.metrics_source";

/// Where the analysis reads the proxies' request, error and latency counters. Omitted: the
/// controller scrapes every live proxy replica's `/metrics` at each analysis
/// ([`crate::kube::scrape::ProxyScraper`]). With `prometheus`: it queries a Prometheus server that
/// scrapes the proxies ([`crate::kube::prometheus::PrometheusMetrics`]), for fleets too large to
/// scrape at every analysis; its readings are up to one scrape interval old.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", expecting = "a map with prometheus")]
pub struct MetricsSourcePolicy {
    /// The Prometheus server to query.
    pub prometheus: PrometheusSource,
}

/// A Prometheus server that scrapes the proxies, and which of its series are theirs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(
    rename_all = "camelCase",
    expecting = "a map of Prometheus settings (address, selector, headers, headersFrom)"
)]
pub struct PrometheusSource {
    /// The server's base URL, `http://` or `https://`, e.g. `http://prometheus.monitoring:9090`;
    /// `/api/v1/query` is appended.
    #[schemars(length(min = 1), regex(pattern = r"^https?://"))]
    pub address: String,
    /// Label matchers that narrow the series to this fleet's proxies, written as inside a PromQL
    /// selector's braces, e.g. `job="crossfade-proxy"`. Not `route`, `backend` or `__name__`,
    /// which the controller sets. Default: none (every `crossfade_*` series of the route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Extra request headers of every query with their values written here, e.g. `X-Scope-OrgID:
    /// shop`. Readable by whoever may read this TrafficShift: put tokens in `headersFrom`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Extra request headers of every query whose values are keys of Secrets or ConfigMaps in
    /// this namespace, read before each query (e.g. an `Authorization` token for a Prometheus
    /// behind auth, an `X-Scope-OrgID` tenant); a list map keyed by `name`, as a check's
    /// `headersFrom`. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_HEADERS_FROM),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub headers_from: Vec<HeaderFrom>,
}

// === impl MetricsSourcePolicy ===

impl MetricsSourcePolicy {
    /// What is wrong with the address, the selector and the headers, each naming its field under
    /// `spec.rollout.analysis.metricsSource.prometheus`; the headers by the rules of a check's
    /// ([`crate::spec::request_header_problems`]).
    pub fn problems(&self) -> Vec<Problem> {
        let p = &self.prometheus;
        let at = format!("{METRICS_SOURCE_FIELD}.prometheus");
        let named = |field: &str, message| Problem {
            path: format!("spec.{}.{field}", super::camel(&at)),
            message,
        };
        let address = check_address(&p.address).err().map(|e| named("address", e));
        let selector = p.selector.as_deref().map(str::trim).unwrap_or_default();
        let selector = check_selector(selector).err().map(|e| named("selector", e));
        let from = p.headers_from_config();
        let headers = crate::spec::request_header_problems(&at, &p.headers, &from);
        let headers = headers.into_iter().map(super::policy::under_spec_problem);
        address.into_iter().chain(selector).chain(headers).collect()
    }
}

// === impl PrometheusSource ===

impl PrometheusSource {
    /// `headersFrom` as the spec's `headers_from` items, which [`crate::headers::resolve`] reads.
    pub fn headers_from_config(&self) -> Vec<SpecHeaderFrom> {
        self.headers_from
            .iter()
            .map(HeaderFrom::to_config)
            .collect()
    }
}
