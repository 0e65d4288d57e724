//! `spec.rollout.analysis.metricsSource` of a TrafficShift: where the analysis reads the proxies'
//! counters (docs/kubernetes.md, "Analysis through Prometheus").

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::kube::prometheus::{check_address, check_selector};
use crate::spec::Problem;

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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(
    rename_all = "camelCase",
    expecting = "a map of Prometheus settings (address, selector)"
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
}

// === impl MetricsSourcePolicy ===

impl MetricsSourcePolicy {
    /// What is wrong with the address and the selector, each naming its field under `at`
    /// (`spec.rollout.analysis.metricsSource`).
    pub fn problems(&self, at: &str) -> Vec<Problem> {
        let p = &self.prometheus;
        let address = check_address(&p.address).err().map(|message| Problem {
            path: format!("{at}.prometheus.address"),
            message,
        });
        let selector = p.selector.as_deref().map(str::trim).unwrap_or_default();
        let selector = check_selector(selector).err().map(|message| Problem {
            path: format!("{at}.prometheus.selector"),
            message,
        });
        address.into_iter().chain(selector).collect()
    }
}
