//! `spec.rollout.analysis.checks`, `spec.rollout.gates` and the refused `analysis.shadow`: their
//! schema, their mapping to the rollout configuration, and bad values named by field.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::spec::{GatePoint, GatePolicy};

fn policy(value: serde_json::Value) -> RolloutPolicy {
    serde_json::from_value(value).expect("the policy parses")
}

fn problems(value: serde_json::Value) -> String {
    policy(value)
        .to_config()
        .expect_err("the policy is refused")
        .to_string()
}

/// The CRD schema at `path` under `spec.rollout`.
fn schema_at(path: &[&str]) -> serde_json::Value {
    let crd = serde_json::to_value(TrafficShift::crd()).expect("crd");
    let mut at = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["rollout"];
    for p in path {
        at = &at["properties"][*p];
    }
    at.clone()
}

#[test]
fn checks_and_gates_reach_the_rollout_config_with_the_specs_defaults() {
    let config = policy(json!({
        "analysis": { "checks": [
            { "name": "error-ratio", "max": 0.05,
              "prometheus": { "address": "http://prometheus:9090", "query": "sum(up{route=\"{{ route }}\"})",
                              "headers": { "Authorization": "Bearer t" } } },
            { "name": "kpi", "min": 0.99, "timeout": "2s",
              "web": { "url": "https://kpi.example/{{ preview_version }}", "jsonPath": "$.data.rate" } }
        ] },
        "gates": [
            { "name": "approve", "at": "BeforePromotion", "url": "http://hooks/approve" },
            { "name": "load-test", "at": "BeforeStep", "url": "http://hooks/load", "onReject": "Rollback",
              "timeout": "30s", "retry": "1m" }
        ]
    }))
    .to_config()
    .expect("valid");
    let [prom, web] = &config.analysis.checks[..] else {
        panic!("two checks: {:?}", config.analysis.checks)
    };
    let p = prom.prometheus.as_ref().expect("prometheus");
    assert_eq!(p.address, "http://prometheus:9090");
    assert_eq!(p.headers["Authorization"], "Bearer t");
    assert_eq!(
        (prom.min, prom.max, prom.timeout),
        (None, Some(0.05), Duration::from_secs(5))
    );
    let w = web.web.as_ref().expect("web");
    assert_eq!(w.json_path, "$.data.rate");
    assert_eq!((web.min, web.timeout), (Some(0.99), Duration::from_secs(2)));
    let [approve, load] = &config.gates[..] else {
        panic!("two gates: {:?}", config.gates)
    };
    assert_eq!(approve.at, GatePoint::BeforePromotion);
    assert_eq!(approve.on_reject, GatePolicy::Wait);
    assert_eq!(
        (approve.timeout, approve.retry),
        (Duration::from_secs(10), Duration::from_secs(10))
    );
    assert_eq!(load.at, GatePoint::BeforeStep);
    assert_eq!(load.on_reject, GatePolicy::Rollback);
    assert_eq!(
        (load.timeout, load.retry),
        (Duration::from_secs(30), Duration::from_secs(60))
    );
}

#[test]
fn bad_checks_and_gates_are_refused_each_by_its_spec_field() {
    let text = problems(json!({
        "analysis": { "checks": [
            { "name": "a", "max": 1, "prometheus": { "address": "http://p:9090", "query": "x{ns=\"{{ namespace }}\"}" } },
            { "name": "b", "min": 2, "max": 1, "web": { "url": "http://kpi", "jsonPath": "data.rate" } },
            { "name": "c", "max": 1 }
        ] },
        "gates": [
            { "name": "g", "at": "BeforeStep", "url": "http://" },
            { "name": "g", "at": "BeforeStep", "url": "http://hooks", "retry": "0s" }
        ]
    }));
    for wanted in [
        "spec.rollout.analysis.checks[0].prometheus.query: unknown variable {{ namespace }}",
        "spec.rollout.analysis.checks[1].web.jsonPath: \"data.rate\" is not a JSONPath",
        "spec.rollout.analysis.checks[1].min: 2 is above max 1",
        "spec.rollout.analysis.checks[2]: needs a provider",
        "spec.rollout.gates[0].url: \"http://\" is not an http:// or https:// URL",
        "spec.rollout.gates[1].name: \"g\" is used by another gate",
        "spec.rollout.gates[1].retry:",
    ] {
        assert!(text.contains(wanted), "{wanted:?} not in:\n{text}");
    }
    for bad in [
        json!({ "gates": [{ "name": "g", "at": "before_step", "url": "http://h" }] }),
        json!({ "gates": [{ "name": "g", "at": "BeforeStep", "url": "http://h", "onReject": "wait" }] }),
        json!({ "gates": [{ "name": "g", "url": "http://h" }] }),
        json!({ "analysis": { "checks": [{ "name": "c", "max": 1, "timeout": "5" }] } }),
    ] {
        assert!(
            serde_json::from_value::<RolloutPolicy>(bad.clone()).is_err(),
            "{bad} accepted"
        );
    }
}

#[test]
fn shadow_is_refused_by_name_never_ignored() {
    let text = problems(json!({
        "steps": [{ "weight": 0 }, { "weight": 50 }, { "weight": 100 }],
        "analysis": { "shadow": { "maxMismatchRate": "1%" } }
    }));
    assert!(
        text.contains(&format!("spec.rollout.analysis.shadow: {SHADOW_REFUSED}")),
        "{text}"
    );
    // The 0% step it would judge is refused too, as without a shadow guard.
    assert!(
        text.contains("spec.rollout.steps[0]: 0% sends the preview no traffic"),
        "{text}"
    );
    let alone = problems(json!({ "analysis": { "shadow": {} } }));
    assert_eq!(
        alone,
        format!("spec.rollout.analysis.shadow: {SHADOW_REFUSED}")
    );
    // The API server refuses it too (a validation rule), and keeps it rather than pruning it.
    let schema = schema_at(&["analysis", "shadow"]);
    assert_eq!(schema["x-kubernetes-preserve-unknown-fields"], true);
    assert_eq!(
        schema["x-kubernetes-validations"],
        json!([{ "rule": "false", "message": SHADOW_REFUSED }])
    );
}

#[test]
fn the_schema_lets_the_api_server_check_names_urls_providers_and_enums() {
    let checks = schema_at(&["analysis", "checks"]);
    assert_eq!(checks["x-kubernetes-list-type"], "map");
    assert_eq!(checks["x-kubernetes-list-map-keys"], json!(["name"]));
    let check = &checks["items"];
    assert_eq!(
        check["oneOf"],
        json!([{ "required": ["prometheus"] }, { "required": ["web"] }])
    );
    assert_eq!(
        check["anyOf"],
        json!([{ "required": ["min"] }, { "required": ["max"] }])
    );
    assert_eq!(check["properties"]["name"]["pattern"], "^[A-Za-z0-9_.-]+$");
    let address = &check["properties"]["prometheus"]["properties"]["address"];
    assert_eq!(address["pattern"], "^https?://");
    assert_eq!(check["properties"]["timeout"]["pattern"], SPAN_PATTERN);
    let gates = schema_at(&["gates"]);
    assert_eq!(gates["x-kubernetes-list-map-keys"], json!(["name"]));
    let gate = &gates["items"];
    assert_eq!(gate["required"], json!(["at", "name", "url"]));
    assert_eq!(
        gate["properties"]["at"]["enum"],
        json!([
            "BeforeRollout",
            "BeforeStep",
            "BeforePromotion",
            "AfterCompletion"
        ])
    );
    assert_eq!(
        gate["properties"]["onReject"]["enum"],
        json!(["Wait", "Rollback"])
    );
    assert_eq!(gate["properties"]["url"]["pattern"], "^https?://");
}

/// The property names of the items of the list at `list` under `spec.rollout`, or of their
/// `inner` object when given.
fn item_properties(list: &[&str], inner: Option<&str>) -> Vec<String> {
    let items = &schema_at(list)["items"];
    let at = match inner {
        Some(name) => &items["properties"][name],
        None => items,
    };
    let props = at["properties"].as_object();
    let props = props.unwrap_or_else(|| panic!("no properties at {list:?} {inner:?}"));
    props.keys().cloned().collect()
}

#[test]
fn every_check_and_gate_field_the_spec_accepts_is_in_the_crd_schema_by_the_same_name() {
    use super::tests::{accepted_fields, camel};
    use crate::spec::checks::{CheckConfig, PrometheusQuery, WebQuery};
    let pairs = [
        (
            accepted_fields::<CheckConfig>(),
            item_properties(&["analysis", "checks"], None),
        ),
        (
            accepted_fields::<PrometheusQuery>(),
            item_properties(&["analysis", "checks"], Some("prometheus")),
        ),
        (
            accepted_fields::<WebQuery>(),
            item_properties(&["analysis", "checks"], Some("web")),
        ),
        (
            accepted_fields::<crate::spec::GateConfig>(),
            item_properties(&["gates"], None),
        ),
    ];
    for (spec, crd) in pairs {
        let mut spec: Vec<String> = spec.iter().map(|f| camel(f)).collect();
        let mut crd = crd;
        spec.sort();
        crd.sort();
        assert_eq!(spec, crd, "the spec's fields (camelCase) against the CRD's");
    }
}
