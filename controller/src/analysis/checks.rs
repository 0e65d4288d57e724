//! Reading `rollout.analysis.checks` (Prometheus, web) and folding their results into a verdict.
//!
//! Every analysis reads every check at once (each bounded by its `timeout`). Then:
//!
//! - a value outside its range **fails** the analysis, whatever the judge said;
//! - a check without a value (provider unreachable or erroring, no sample, several samples, NaN, a
//!   JSONPath that matches nothing) makes a passing analysis **inconclusive**: an unreachable
//!   source is never a pass;
//! - otherwise the judge's outcome stands.
//!
//! Each [`CheckResult`] keeps the query as sent, the value, the range and the provider, so that a
//! verdict explains itself in status, events and the state file.

use std::collections::BTreeMap;
use std::time::Duration;

use http::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Outcome, Verdict};
use crate::fetch;
use crate::headers::{resolve, Values};
use crate::spec::checks::{render, PrometheusQuery, ProviderKind, WebQuery};
use crate::spec::CheckConfig;

/// A query's request headers, or why one of them cannot be read.
type Headers = Result<BTreeMap<String, String>, String>;

/// The template variables of one analysis (see [`crate::spec::checks`]).
#[derive(Clone, Debug, Default)]
pub struct Context {
    vars: BTreeMap<&'static str, String>,
}

/// One check's outcome in a verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The check's `name`.
    pub name: String,
    /// Where the value came from.
    pub provider: ProviderKind,
    /// The PromQL query or the URL as sent, templates filled in.
    pub query: String,
    /// The value read, in the query's unit; `None` when there was none (see `error`).
    pub value: Option<f64>,
    /// The lowest passing value, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The highest passing value, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Whether the value is within the range (false without a value).
    pub ok: bool,
    /// Why there is no value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Context {
    /// The variables for an analysis of `route` where `preview`/`active` are the backends' names
    /// (`green`/`blue`), the versions the workloads' names, and `interval` the analysis window
    /// (rendered as whole seconds, at least `1s`, as PromQL range durations are written).
    pub fn new(
        route: &str,
        preview: &str,
        active: &str,
        preview_version: &str,
        active_version: &str,
        interval: Duration,
    ) -> Context {
        let seconds = interval.as_secs_f64().ceil().max(1.0) as u64;
        let vars = BTreeMap::from([
            ("route", route.to_string()),
            ("preview", preview.to_string()),
            ("active", active.to_string()),
            ("preview_version", preview_version.to_string()),
            ("active_version", active_version.to_string()),
            ("interval", format!("{seconds}s")),
        ]);
        Context { vars }
    }
}

impl Context {
    /// A variable's value; empty for a name that is not one of
    /// [`crate::spec::checks::TEMPLATE_VARIABLES`].
    pub fn get(&self, name: &str) -> &str {
        self.vars.get(name).map_or("", String::as_str)
    }
}

impl CheckResult {
    /// `checkout-success 0.97 < min 0.99 (prometheus)`, `error-budget: no value (…)`.
    pub fn describe(&self) -> String {
        let provider = match self.provider {
            ProviderKind::Prometheus => "prometheus",
            ProviderKind::Web => "web",
        };
        match (self.value, &self.error) {
            (Some(v), _) => {
                let bound = match (self.min, self.max) {
                    (Some(min), _) if v < min => format!("< min {min}"),
                    (_, Some(max)) if v > max => format!("> max {max}"),
                    (Some(min), Some(max)) => format!("in [{min}, {max}]"),
                    (Some(min), None) => format!("≥ {min}"),
                    (None, Some(max)) => format!("≤ {max}"),
                    (None, None) => String::new(),
                };
                format!("{} {} {bound} ({provider})", self.name, short(v))
            }
            (None, Some(e)) => format!("{}: no value ({provider}: {e})", self.name),
            (None, None) => format!("{}: no value ({provider})", self.name),
        }
    }
}

/// A number with at most 4 significant decimals: `0.0123`, `250`, `NaN`.
fn short(v: f64) -> String {
    if v.is_finite() && v.fract() != 0.0 {
        let text = format!("{v:.4}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        v.to_string()
    }
}

/// Reads every check concurrently, each query's `headers_from` read through `values` just before
/// it is sent; the results are in `checks` order. A header that cannot be read leaves its check
/// without a value (the error names the field), as an unreachable provider does.
pub async fn evaluate(
    checks: &[CheckConfig],
    context: &Context,
    values: &dyn Values,
) -> Vec<CheckResult> {
    let each = checks.iter().enumerate();
    futures_util::future::join_all(each.map(|(i, c)| evaluate_one(i, c, context, values))).await
}

async fn evaluate_one(
    index: usize,
    check: &CheckConfig,
    context: &Context,
    values: &dyn Values,
) -> CheckResult {
    let at = format!("rollout.analysis.checks[{index}]");
    let (provider, rendered, value) = match (&check.prometheus, &check.web) {
        (Some(p), _) => {
            let path = format!("{at}.prometheus");
            let headers = resolve(values, &path, &p.headers, &p.headers_from).await;
            let (query, value) = prometheus(p, headers, check.timeout, context).await;
            (ProviderKind::Prometheus, query, value)
        }
        (None, Some(w)) => {
            let path = format!("{at}.web");
            let headers = resolve(values, &path, &w.headers, &w.headers_from).await;
            let (url, value) = web(w, headers, check.timeout, context).await;
            (ProviderKind::Web, url, value)
        }
        // Validation refuses a check without a provider; never read as a pass.
        (None, None) => (
            ProviderKind::Web,
            String::new(),
            Err("no provider configured".to_string()),
        ),
    };
    let value = value.and_then(|v| {
        if v.is_nan() {
            Err("the value is NaN".to_string())
        } else {
            Ok(v)
        }
    });
    match value {
        Ok(v) => CheckResult {
            name: check.name.clone(),
            provider,
            query: rendered,
            value: Some(v),
            min: check.min,
            max: check.max,
            ok: check.admits(v),
            error: None,
        },
        Err(e) => CheckResult {
            name: check.name.clone(),
            provider,
            query: rendered,
            value: None,
            min: check.min,
            max: check.max,
            ok: false,
            error: Some(e),
        },
    }
}

/// An instant query: `GET {address}/api/v1/query?query=...` (Prometheus HTTP API).
async fn prometheus(
    p: &PrometheusQuery,
    headers: Headers,
    timeout: Duration,
    context: &Context,
) -> (String, Result<f64, String>) {
    let query = match render(&p.query, &context.vars) {
        Ok(q) => q,
        Err(e) => return (p.query.clone(), Err(e)),
    };
    let address = match render(&p.address, &context.vars) {
        Ok(a) => a,
        Err(e) => return (query, Err(e)),
    };
    let url = format!(
        "{}/api/v1/query?{}",
        address.trim_end_matches('/'),
        form_urlencoded::Serializer::new(String::new())
            .append_pair("query", &query)
            .finish()
    );
    let value = async {
        let reply = fetch::send(Method::GET, &url, &headers?, None, timeout).await?;
        let body: Value = serde_json::from_slice(&reply.body).map_err(|_| {
            format!(
                "status {}, not a Prometheus API answer: {}",
                reply.status.as_u16(),
                reply.excerpt()
            )
        })?;
        prometheus_value(&body)
    }
    .await;
    (query, value)
}

/// The `data` of a Prometheus HTTP API answer whose `status` is `success`.
///
/// # Errors
/// Prometheus' own error, as `prometheus answered bad_data: parse error ...`.
pub fn prometheus_data(body: &Value) -> Result<&Value, String> {
    if body["status"] != "success" {
        return Err(format!(
            "prometheus answered {}: {}",
            body["errorType"].as_str().unwrap_or("an error"),
            body["error"].as_str().unwrap_or("(no message)")
        ));
    }
    Ok(&body["data"])
}

/// The one number of an instant query's answer.
///
/// # Errors
/// Prometheus' own error (`bad_data: parse error ...`), no sample, several samples, a result type
/// other than scalar or vector, a value that is not a number.
pub fn prometheus_value(body: &Value) -> Result<f64, String> {
    let data = prometheus_data(body)?;
    let sample = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => {
            let result = data["result"].as_array().map_or(&[][..], Vec::as_slice);
            match result {
                [] => return Err("the query returned no sample".into()),
                [one] => &one["value"],
                many => {
                    return Err(format!(
                        "the query returned {} samples, expected 1 (aggregate it, e.g. with sum())",
                        many.len()
                    ))
                }
            }
        }
        other => {
            return Err(format!(
                "the query returned a {}, expected a scalar or a one-sample vector",
                other.unwrap_or("result of unknown type")
            ))
        }
    };
    // A sample is [unix_seconds, "value"]; Prometheus writes values as strings ("NaN", "+Inf").
    sample[1]
        .as_str()
        .and_then(|s| s.parse::<f64>().ok())
        .ok_or_else(|| format!("the sample {sample} holds no number"))
}

/// `GET url`, then the JSONPath's one match as a number.
async fn web(
    w: &WebQuery,
    headers: Headers,
    timeout: Duration,
    context: &Context,
) -> (String, Result<f64, String>) {
    let url = match render(&w.url, &context.vars) {
        Ok(u) => u,
        Err(e) => return (w.url.clone(), Err(e)),
    };
    let value = async {
        let reply = fetch::send(Method::GET, &url, &headers?, None, timeout).await?;
        if !reply.status.is_success() {
            return Err(reply.refusal());
        }
        let body: Value = serde_json::from_slice(&reply.body)
            .map_err(|e| format!("the body is not JSON ({e}): {}", reply.excerpt()))?;
        json_value(&body, &w.json_path)
    }
    .await;
    (url, value)
}

/// The number `path` selects in `body`: a JSON number, or a string that parses as one.
///
/// # Errors
/// A path that does not parse (RFC 9535), matches nothing or several nodes, or a node that is not
/// a number.
pub fn json_value(body: &Value, path: &str) -> Result<f64, String> {
    let path = serde_json_path::JsonPath::parse(path)
        .map_err(|e| format!("{path:?} is not a JSONPath: {e}"))?;
    let nodes = path.query(body).all();
    match nodes.as_slice() {
        [] => Err(format!("{path} matches nothing")),
        [one] => match one {
            Value::Number(n) => n
                .as_f64()
                .ok_or_else(|| format!("{path}: {n} is not a number")),
            Value::String(s) => s
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("{path}: {s:?} is not a number")),
            other => Err(format!("{path}: {other} is not a number")),
        },
        many => Err(format!("{path} matches {} nodes, expected 1", many.len())),
    }
}

impl Verdict {
    /// Folds check results into this verdict (see the module docs) and names them in the summary.
    pub fn with_checks(mut self, results: Vec<CheckResult>) -> Verdict {
        if results.is_empty() {
            return self;
        }
        let failed: Vec<String> = results
            .iter()
            .filter(|r| r.value.is_some() && !r.ok)
            .map(CheckResult::describe)
            .collect();
        let missing: Vec<String> = results
            .iter()
            .filter(|r| r.value.is_none())
            .map(CheckResult::describe)
            .collect();
        let note = if !failed.is_empty() {
            self.outcome = Outcome::Fail;
            failed.join(", ")
        } else if !missing.is_empty() {
            if self.outcome == Outcome::Pass {
                self.outcome = Outcome::Inconclusive;
            }
            missing.join(", ")
        } else {
            results
                .iter()
                .map(CheckResult::describe)
                .collect::<Vec<_>>()
                .join(", ")
        };
        self.summary = if self.summary.is_empty() {
            note
        } else {
            format!("{}; {note}", self.summary)
        };
        self.checks = results;
        self
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::analysis::{Finding, Metric};

    #[test]
    fn prometheus_answers_give_one_number_or_say_why_not() {
        let vector = |result: Value| json!({"status": "success", "data": {"resultType": "vector", "result": result}});
        let one = vector(json!([{"metric": {}, "value": [1.0, "0.25"]}]));
        assert_eq!(prometheus_value(&one), Ok(0.25));
        let scalar =
            json!({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3"]}});
        assert_eq!(prometheus_value(&scalar), Ok(3.0));
        let nan = vector(json!([{"metric": {}, "value": [1.0, "NaN"]}]));
        assert!(prometheus_value(&nan).unwrap().is_nan());
        assert_eq!(
            prometheus_value(&vector(json!([]))),
            Err("the query returned no sample".into())
        );
        let two = vector(json!([{"value": [1, "1"]}, {"value": [1, "2"]}]));
        assert!(prometheus_value(&two).unwrap_err().contains("2 samples"));
        let matrix = json!({"status": "success", "data": {"resultType": "matrix", "result": []}});
        assert!(prometheus_value(&matrix).unwrap_err().contains("matrix"));
        let error = json!({"status": "error", "errorType": "bad_data", "error": "parse error"});
        assert_eq!(
            prometheus_value(&error),
            Err("prometheus answered bad_data: parse error".into())
        );
    }

    #[test]
    fn json_paths_select_exactly_one_number() {
        let body = json!({"data": {"rate": 0.5, "text": " 2.5 ", "list": [1, 2], "flag": true}});
        assert_eq!(json_value(&body, "$.data.rate"), Ok(0.5));
        assert_eq!(json_value(&body, "$.data.text"), Ok(2.5));
        assert!(json_value(&body, "$.data.none")
            .unwrap_err()
            .contains("matches nothing"));
        assert!(json_value(&body, "$.data.list[*]")
            .unwrap_err()
            .contains("2 nodes"));
        assert!(json_value(&body, "$.data.flag")
            .unwrap_err()
            .contains("not a number"));
        assert!(json_value(&body, "data.rate")
            .unwrap_err()
            .contains("not a JSONPath"));
    }

    fn result(name: &str, value: Option<f64>, ok: bool) -> CheckResult {
        CheckResult {
            name: name.into(),
            provider: ProviderKind::Prometheus,
            query: "q".into(),
            value,
            min: None,
            max: Some(0.01),
            ok,
            error: value.is_none().then(|| "connection refused".into()),
        }
    }

    fn pass() -> Verdict {
        let requests = Finding {
            metric: Metric::Requests,
            value: 100.0,
            threshold: 50.0,
            ok: true,
            between: None,
            unanswered: 0,
        };
        Verdict::new(Outcome::Pass, vec![requests], None)
    }

    #[test]
    fn an_out_of_range_check_fails_and_a_missing_value_is_never_a_pass() {
        let v = pass().with_checks(vec![result("a", Some(0.005), true)]);
        assert_eq!(v.outcome, Outcome::Pass);
        assert!(
            v.summary.contains("a 0.005 ≤ 0.01 (prometheus)"),
            "{}",
            v.summary
        );

        let v = pass().with_checks(vec![
            result("a", Some(0.02), false),
            result("b", None, false),
        ]);
        assert_eq!(v.outcome, Outcome::Fail);
        assert!(v.summary.contains("a 0.02 > max 0.01"), "{}", v.summary);

        let v = pass().with_checks(vec![result("a", Some(0.0), true), result("b", None, false)]);
        assert_eq!(v.outcome, Outcome::Inconclusive);
        assert!(
            v.summary
                .contains("b: no value (prometheus: connection refused)"),
            "{}",
            v.summary
        );
        assert_eq!(v.checks.len(), 2);

        let mut fail = pass();
        fail.outcome = Outcome::Fail;
        assert_eq!(
            fail.with_checks(vec![result("b", None, false)]).outcome,
            Outcome::Fail
        );
    }

    #[test]
    fn templates_fill_known_variables_and_name_unknown_ones() {
        let ctx = Context::new(
            "web",
            "green",
            "blue",
            "v2",
            "v1",
            Duration::from_millis(1500),
        );
        let text = "r={{route}} p={{ preview }} a={{active}} v={{preview_version}}/{{ active_version }} [{{interval}}]";
        assert_eq!(
            render(text, &ctx.vars).unwrap(),
            "r=web p=green a=blue v=v2/v1 [2s]"
        );
        let err = render("x{{ namespace }}", &ctx.vars).unwrap_err();
        assert!(
            err.starts_with("unknown variable {{ namespace }} (known: route"),
            "{err}"
        );
        assert!(render("x{{ route", &ctx.vars)
            .unwrap_err()
            .contains("unclosed"));
    }
}
