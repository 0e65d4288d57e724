//! Analysis checks from external metric providers (`rollout.analysis.checks`): a Prometheus query or a
//! JSON web endpoint, read at every analysis and held to a range.
//!
//! Queries and URLs are templates: `{{ route }}`, `{{ preview }}` and `{{ active }}` (the backends'
//! names, `blue`/`green` as in the proxy's `backend` label), `{{ preview_version }}` and
//! `{{ active_version }}` (the workloads' names), and `{{ interval }}` (the analysis window as a
//! PromQL duration such as `30s`) are replaced before each query. Any other `{{ ... }}` is an error
//! when the spec is loaded.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::headers::HeaderFrom;

/// The template variables a check may use (see the module docs).
pub const TEMPLATE_VARIABLES: [&str; 6] = [
    "route",
    "preview",
    "active",
    "preview_version",
    "active_version",
    "interval",
];

/// One check: where its value comes from and the range it must stay in.
///
/// ```yaml
/// checks:
///   - name: checkout-success
///     prometheus:
///       address: http://prometheus:9090
///       query: sum(rate(checkout_ok{version="{{ preview_version }}"}[{{ interval }}])) / ...
///     min: 0.99
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a map of check settings (name, prometheus or web, min, max)")]
pub struct CheckConfig {
    /// Names the check in verdicts, events and metrics; unique within the spec, `[A-Za-z0-9_.-]+`, at most 63 characters.
    pub name: String,
    /// Read the value from Prometheus (an instant query). Exactly one of `prometheus` and `web`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusQuery>,
    /// Read the value from a JSON document served over HTTP(S). Exactly one of `prometheus` and `web`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<WebQuery>,
    /// The lowest passing value (inclusive), in the query's own unit. At least one of `min`, `max`.
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
    /// Bound on one query, connection included. Default 5s. A query that times out makes the
    /// analysis inconclusive, never a pass.
    #[serde(default = "default_timeout", with = "crossfade_proxy::duration::serde")]
    pub timeout: Duration,
}

/// A PromQL instant query (`GET {address}/api/v1/query`, Prometheus HTTP API).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a map of Prometheus query settings (address, query, headers, headers_from)")]
pub struct PrometheusQuery {
    /// The server's base URL, `http://` or `https://`, e.g. `http://prometheus:9090`.
    pub address: String,
    /// The PromQL expression (a template). It must yield one number: a scalar, or a vector with
    /// exactly one sample. No sample, several, or NaN make the analysis inconclusive.
    pub query: String,
    /// Extra request headers, e.g. `X-Team`, with their values written here; a name given twice
    /// is refused ([`crossfade_proxy::de::unique_map`]).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "crossfade_proxy::de::unique_map"
    )]
    pub headers: BTreeMap<String, String>,
    /// Extra request headers whose values are read before each query, e.g. an `Authorization`
    /// token from a file (see [`crate::spec::headers`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_from: Vec<HeaderFrom>,
}

/// A JSON document fetched with `GET` and a JSONPath (RFC 9535) to the number in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a map of web query settings (url, json_path, headers, headers_from)")]
pub struct WebQuery {
    /// The URL (a template), `http://` or `https://`.
    pub url: String,
    /// JSONPath (RFC 9535) selecting exactly one number, or a string holding one, e.g.
    /// `$.data.error_rate`.
    pub json_path: String,
    /// Extra request headers, e.g. `X-Team`, with their values written here; a name given twice
    /// is refused ([`crossfade_proxy::de::unique_map`]).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "crossfade_proxy::de::unique_map"
    )]
    pub headers: BTreeMap<String, String>,
    /// Extra request headers whose values are read before each query, e.g. an `Authorization`
    /// token from a file (see [`crate::spec::headers`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_from: Vec<HeaderFrom>,
}

/// A check's `timeout` when it sets none: 5s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

/// Where a check's value comes from, as shown in verdicts: `prometheus` or `web`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// [`PrometheusQuery`].
    Prometheus,
    /// [`WebQuery`].
    Web,
}

super::de::keyword_enum!(
    ProviderKind,
    default None,
    "prometheus" => ProviderKind::Prometheus,
    "web" => ProviderKind::Web,
);

impl CheckConfig {
    /// The provider this check reads from; `None` when neither or both are set (a spec error).
    pub fn provider(&self) -> Option<ProviderKind> {
        match (&self.prometheus, &self.web) {
            (Some(_), None) => Some(ProviderKind::Prometheus),
            (None, Some(_)) => Some(ProviderKind::Web),
            _ => None,
        }
    }

    /// Whether `value` is within `[min, max]`; NaN never is.
    pub fn admits(&self, value: f64) -> bool {
        !value.is_nan()
            && self.min.is_none_or(|min| value >= min)
            && self.max.is_none_or(|max| value <= max)
    }

    /// The range as text: `≥ 0.99`, `≤ 0.01`, `in [0.5, 2]`.
    pub fn range(&self) -> String {
        match (self.min, self.max) {
            (Some(min), Some(max)) => format!("in [{min}, {max}]"),
            (Some(min), None) => format!("≥ {min}"),
            (None, Some(max)) => format!("≤ {max}"),
            (None, None) => "unbounded".into(),
        }
    }
}

/// Replaces every `{{ name }}` of `template` with `vars[name]`.
///
/// # Errors
/// The first placeholder that is not closed or names no variable, e.g. `unknown variable
/// {{ namespace }} (known: route, preview, ...)`.
pub fn render(template: &str, vars: &BTreeMap<&str, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err(format!(
                "unclosed {{{{ at byte {}",
                template.len() - rest.len() + open
            ));
        };
        let name = after[..close].trim();
        match vars.get(name) {
            Some(value) => out.push_str(value),
            None => {
                return Err(format!(
                    "unknown variable {{{{ {name} }}}} (known: {})",
                    TEMPLATE_VARIABLES.join(", ")
                ))
            }
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Placeholder values for checking a template when the spec is loaded.
pub fn sample_variables() -> BTreeMap<&'static str, String> {
    TEMPLATE_VARIABLES
        .iter()
        .map(|v| (*v, "x".to_string()))
        .collect()
}
