//! docs/spec.md, the reference of the spec's keys, names every field the spec's types accept.

use crossfade_proxy::config::{
    BreakerConfig, HealthConfig, OutlierConfig, ShadowConfig, ShadowIgnore, StickyConfig,
    UpstreamConfig,
};

use super::checks::{PrometheusQuery, WebQuery};
use super::headers::{HeaderFrom, KeyRef, ValueFrom};
use super::*;
use crate::serde_fields::accepted_fields;

/// The reference page, as shipped.
const SPEC_MD: &str = include_str!("../../../docs/spec.md");

/// Every spec type with a map form and the field path docs/spec.md lists its keys under (workload
/// keys once, under `blue.`: `green` takes the same).
fn sections() -> Vec<(&'static str, Vec<String>)> {
    vec![
        ("", accepted_fields::<RunSpec>()),
        ("route.", accepted_fields::<RouteSpec>()),
        ("upstream.", accepted_fields::<UpstreamConfig>()),
        (
            "via.",
            accepted_fields::<crossfade_proxy::config::ViaConfig>(),
        ),
        ("route.health.", accepted_fields::<HealthConfig>()),
        ("route.outlier.", accepted_fields::<OutlierConfig>()),
        ("route.breaker.", accepted_fields::<BreakerConfig>()),
        ("route.sticky.", accepted_fields::<StickyConfig>()),
        ("blue.", accepted_fields::<WorkloadSpec>()),
        ("blue.readiness.", accepted_fields::<ReadinessConfig>()),
        ("rollout.", accepted_fields::<RolloutConfig>()),
        ("rollout.steps[].", accepted_fields::<StepConfig>()),
        ("rollout.analysis.", accepted_fields::<AnalysisConfig>()),
        (
            "rollout.analysis.checks[].",
            accepted_fields::<CheckConfig>(),
        ),
        (
            "rollout.analysis.checks[].prometheus.",
            accepted_fields::<PrometheusQuery>(),
        ),
        (
            "rollout.analysis.checks[].web.",
            accepted_fields::<WebQuery>(),
        ),
        ("rollout.analysis.shadow.", accepted_fields::<ShadowGuard>()),
        (
            "rollout.analysis.shadow.mirror.",
            accepted_fields::<ShadowConfig>(),
        ),
        (
            "rollout.analysis.shadow.mirror.ignore.",
            accepted_fields::<ShadowIgnore>(),
        ),
        ("rollout.gates[].", accepted_fields::<GateConfig>()),
        // The items of every `headers_from` (gates and both query kinds) share one table.
        ("headers_from[].", accepted_fields::<HeaderFrom>()),
        ("headers_from[].value_from.", accepted_fields::<ValueFrom>()),
        (
            "headers_from[].value_from.secret_key_ref.",
            accepted_fields::<KeyRef>(),
        ),
        (
            "headers_from[].value_from.config_map_key_ref.",
            accepted_fields::<KeyRef>(),
        ),
    ]
}

#[test]
fn every_field_the_spec_accepts_is_in_docs_spec_md() {
    let mut missing = Vec::new();
    let mut count = 0;
    for (prefix, fields) in sections() {
        assert!(!fields.is_empty(), "no fields read for `{prefix}`");
        for field in fields {
            count += 1;
            // A key's own table row: `| `rollout.analysis.min_requests` |`.
            let row = format!("| `{prefix}{field}` |");
            if !SPEC_MD.lines().any(|line| line.starts_with(&row)) {
                missing.push(format!("{prefix}{field}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/spec.md has no table row for {missing:?}: add each with its type, unit, default and \
         rule (from the serde defaults, Default impls and controller/src/spec/validate.rs)"
    );
    // The probe read the types' fields, not an empty list that passes trivially.
    assert!(count > 80, "only {count} fields read");
}

#[test]
fn every_key_docs_spec_md_lists_is_a_field_the_spec_accepts() {
    let known: Vec<String> = sections()
        .into_iter()
        .flat_map(|(prefix, fields)| fields.into_iter().map(move |f| format!("{prefix}{f}")))
        .collect();
    let rows: Vec<&str> = SPEC_MD
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once("` |").map(|(key, _)| key))
        .collect();
    assert!(
        rows.len() > 80,
        "only {} key rows in docs/spec.md",
        rows.len()
    );
    for key in rows {
        assert!(
            known.iter().any(|k| k == key),
            "docs/spec.md lists `{key}`, which the spec does not accept"
        );
    }
}
