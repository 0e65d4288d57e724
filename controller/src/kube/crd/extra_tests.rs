//! `spec.rollout.analysis.checks`, `spec.rollout.gates` and `analysis.shadow`: their
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

/// Trial 22: a TrafficShift's `AfterCompletion` gate with `onReject: Rollback` is refused as a
/// spec's is, named as the TrafficShift spells the field.
#[test]
fn an_after_completion_gate_that_would_roll_back_is_refused_by_its_spec_field() {
    let text = problems(json!({
        "gates": [{ "name": "done", "at": "AfterCompletion", "url": "http://hooks", "onReject": "Rollback" }]
    }));
    assert!(
        text.contains("spec.rollout.gates[0].onReject: rollback cannot act after completion"),
        "{text}"
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
fn the_shadow_guard_reaches_the_rollout_config_with_the_specs_defaults() {
    let config = policy(json!({
        "steps": [{ "weight": 0, "hold": "2s" }, { "weight": 50 }, { "weight": 100 }],
        "analysis": { "shadow": {
            "maxMismatchRate": "0.5%", "minCompared": 20,
            "mirror": { "percent": 50, "compareHeaders": ["etag"], "timeout": "2s",
                        "maxInFlight": 8, "ignore": { "bodyPaths": ["/now"] } } } }
    }))
    .to_config()
    .expect("valid");
    assert!(config.is_shadow_step(0) && !config.is_shadow_step(1));
    let guard = config.analysis.shadow.expect("the guard");
    assert!((guard.max_mismatch_rate - 0.005).abs() < 1e-12, "{guard:?}");
    assert_eq!(guard.min_compared, 20);
    let mirror = &guard.mirror;
    assert_eq!(mirror.percent.bp(), 5000);
    assert_eq!(mirror.compare_headers, ["etag"]);
    assert_eq!(mirror.timeout, Duration::from_secs(2));
    assert_eq!(mirror.max_in_flight, 8);
    assert_eq!(mirror.ignore.body_paths, ["/now"]);
    // Omitted fields take the proxy's defaults.
    let defaults = crossfade_proxy::config::ShadowConfig::default();
    assert_eq!(mirror.methods, defaults.methods);
    assert_eq!(mirror.max_body_bytes, defaults.max_body_bytes);
    assert_eq!(mirror.log_per_minute, defaults.log_per_minute);
    let bare = policy(json!({
        "steps": [{ "weight": 0 }, { "weight": 100 }], "analysis": { "shadow": {} }
    }))
    .to_config()
    .expect("valid");
    assert_eq!(
        bare.analysis.shadow,
        Some(crate::spec::ShadowGuard::default())
    );
}

#[test]
fn a_bad_shadow_guard_is_refused_by_its_field() {
    // No 0% first step to judge.
    let alone = problems(json!({ "analysis": { "shadow": {} } }));
    assert!(
        alone.contains("spec.rollout.analysis.shadow: judges the 0% shadow step"),
        "{alone}"
    );
    // A 0% step without the guard sends the preview nothing and judges nothing.
    let step = problems(json!({ "steps": [{ "weight": 0 }, { "weight": 100 }] }));
    assert!(step.contains("spec.rollout.steps[0]"), "{step}");
    // Mirror settings out of the proxy's bounds, in the TrafficShift's words.
    let text = problems(json!({
        "steps": [{ "weight": 0 }, { "weight": 100 }],
        "analysis": { "shadow": { "mirror": {
            "maxInFlight": 0, "methods": ["CONNECT"], "ignore": { "bodyPaths": ["now"] } } } }
    }));
    for field in [
        "spec.rollout.analysis.shadow.mirror.maxInFlight",
        "spec.rollout.analysis.shadow.mirror.methods[0]",
        "spec.rollout.analysis.shadow.mirror.ignore.bodyPaths[0]",
    ] {
        assert!(text.contains(field), "{field} in {text}");
    }
}

#[test]
fn published_mirror_settings_read_back_as_the_rollouts() {
    let config = crossfade_proxy::config::ShadowConfig {
        compare_headers: vec!["etag".into(), "content-type".into()],
        timeout: Duration::from_millis(1500),
        log_per_minute: 0,
        ..Default::default()
    };
    let published = MirrorPolicy::from_config(&config);
    assert_eq!(published.to_config(), config);
    // Every field is written, so a proxy applies the rollout's settings, not its own defaults.
    let text = serde_json::to_value(&published).expect("json");
    assert_eq!(
        text,
        json!({ "percent": "100%", "compareHeaders": ["etag", "content-type"],
                "maxBodyBytes": 1_048_576, "maxInFlight": 64, "timeout": "1s500ms",
                "methods": ["GET", "HEAD", "OPTIONS"], "ignore": {}, "logPerMinute": 0 })
    );
    let back: MirrorPolicy = serde_json::from_value(text).expect("parses");
    assert_eq!(back, published);
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
