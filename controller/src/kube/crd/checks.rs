//! `spec.rollout.analysis.checks` of a TrafficShift: extra metric checks read from Prometheus or a
//! JSON web endpoint at every analysis; mirrors [`crate::spec::CheckConfig`] in camelCase.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::headers::{HeaderFrom, MAX_HEADERS_FROM};
use super::Span;
use crate::spec::checks::{CheckConfig, PrometheusQuery, WebQuery, DEFAULT_TIMEOUT};

/// One check: where its value comes from (exactly one of `prometheus` and `web`) and the range it
/// must stay in (`min`, `max` or both, inclusive). A value out of range fails the analysis, so
/// the preview is rolled back; a value that cannot be read makes it inconclusive.
///
/// Queries and URLs are templates (`{{ route }}` is `<namespace>/<name>`, `{{ preview }}` and
/// `{{ active }}` the backends `green` and `blue`, `{{ preview_version }}` the preview
/// Deployment `<name>-green`, `{{ active_version }}` the target Deployment, `{{ interval }}` the
/// analysis window such as `30s`); docs/judgement.md, "Checks from Prometheus and web endpoints".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(
    rename_all = "camelCase",
    expecting = "a map of check settings (name, prometheus or web, min, max)"
)]
#[schemars(extend(
    "oneOf" = [{ "required": ["prometheus"] }, { "required": ["web"] }],
    "anyOf" = [{ "required": ["min"] }, { "required": ["max"] }]
))]
pub struct Check {
    /// Names the check in verdicts, Events and metrics: letters, digits, `_`, `.`, `-`; unique
    /// within the TrafficShift.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[A-Za-z0-9_.-]+$"))]
    pub name: String,
    /// Read the value with a Prometheus instant query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusCheck>,
    /// Read the value from a JSON document served over HTTP(S).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<WebCheck>,
    /// The lowest passing value (inclusive), in the query's own unit.
    #[serde(
        default,
        deserialize_with = "crossfade_proxy::de::number_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub min: Option<f64>,
    /// The highest passing value (inclusive), in the query's own unit.
    #[serde(
        default,
        deserialize_with = "crossfade_proxy::de::number_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max: Option<f64>,
    /// Bound on one query, connection included; one that times out is inconclusive. Default 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Span>,
}

/// A PromQL instant query (`GET {address}/api/v1/query`, Prometheus HTTP API).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(
    rename_all = "camelCase",
    expecting = "a map of Prometheus query settings (address, query, headers)"
)]
pub struct PrometheusCheck {
    /// The server's base URL, `http://` or `https://`, e.g.
    /// `http://prometheus.monitoring:9090`.
    #[schemars(length(min = 1), regex(pattern = r"^https?://"))]
    pub address: String,
    /// The PromQL expression (a template); it must yield one number (a scalar or a one-sample
    /// vector).
    #[schemars(length(min = 1))]
    pub query: String,
    /// Extra request headers with their values written here, e.g. `X-Team: shop`. Readable by
    /// whoever may read this TrafficShift: put tokens in `headersFrom`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Extra request headers whose values are keys of Secrets or ConfigMaps in this namespace,
    /// read before each query (e.g. an `Authorization` token); a list map keyed by `name`, as a
    /// container's `env[]` with `valueFrom.secretKeyRef` or `configMapKeyRef`. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_HEADERS_FROM),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub headers_from: Vec<HeaderFrom>,
}

/// A JSON document fetched with `GET` and a JSONPath (RFC 9535) to the number in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(
    rename_all = "camelCase",
    expecting = "a map of web query settings (url, jsonPath, headers)"
)]
pub struct WebCheck {
    /// The URL (a template), `http://` or `https://`.
    #[schemars(length(min = 1), regex(pattern = r"^https?://"))]
    pub url: String,
    /// JSONPath (RFC 9535) selecting exactly one number, or a string holding one, e.g.
    /// `$.data.error_rate`.
    #[schemars(length(min = 1))]
    pub json_path: String,
    /// Extra request headers with their values written here, e.g. `X-Team: shop`. Readable by
    /// whoever may read this TrafficShift: put tokens in `headersFrom`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Extra request headers whose values are keys of Secrets or ConfigMaps in this namespace,
    /// read before each query (e.g. an `Authorization` token); a list map keyed by `name`, as a
    /// container's `env[]` with `valueFrom.secretKeyRef` or `configMapKeyRef`. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_HEADERS_FROM),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub headers_from: Vec<HeaderFrom>,
}

// === impl Check ===

impl Check {
    /// The spec's check, an omitted `timeout` at its default
    /// ([`crate::spec::checks::DEFAULT_TIMEOUT`]). Not validated here: the rollout configuration
    /// is validated as a whole.
    pub fn to_config(&self) -> CheckConfig {
        CheckConfig {
            name: self.name.clone(),
            prometheus: self.prometheus.as_ref().map(|p| PrometheusQuery {
                address: p.address.clone(),
                query: p.query.clone(),
                headers: p.headers.clone(),
                headers_from: p.headers_from.iter().map(HeaderFrom::to_config).collect(),
            }),
            web: self.web.as_ref().map(|w| WebQuery {
                url: w.url.clone(),
                json_path: w.json_path.clone(),
                headers: w.headers.clone(),
                headers_from: w.headers_from.iter().map(HeaderFrom::to_config).collect(),
            }),
            min: self.min,
            max: self.max,
            timeout: self.timeout.map_or(DEFAULT_TIMEOUT, |t| t.0),
        }
    }
}
