//! `headersFrom` in a TrafficShift: its schema, its mapping to the spec's `headers_from`, and bad
//! values named by their TrafficShift field.

use serde_json::{json, Value};

use super::super::{RolloutPolicy, TrafficShift};
use crate::spec::headers::{KeyRef, ValueFrom};
use kube::CustomResourceExt;

fn from_secret(name: &str, key: &str) -> Value {
    json!([{ "name": "Authorization",
             "valueFrom": { "secretKeyRef": { "name": name, "key": key } } }])
}

fn from_config_map(name: &str, key: &str) -> Value {
    json!([{ "name": "X-Scope-OrgID",
             "valueFrom": { "configMapKeyRef": { "name": name, "key": key } } }])
}

fn policy(value: Value) -> RolloutPolicy {
    serde_json::from_value(value).expect("the policy parses")
}

/// The schema of `headersFrom` in the items of the list at `list` under `spec.rollout`, inside
/// their `inner` object when given.
fn headers_from_schema(list: &[&str], inner: Option<&str>) -> Value {
    let crd = serde_json::to_value(TrafficShift::crd()).expect("crd");
    let mut at = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["rollout"];
    for p in list {
        at = &at["properties"][*p];
    }
    at = &at["items"];
    if let Some(inner) = inner {
        at = &at["properties"][inner];
    }
    at["properties"]["headersFrom"].clone()
}

#[test]
fn headers_from_reach_the_rollout_config_as_secret_key_refs() {
    let config = policy(json!({
        "analysis": { "checks": [
            { "name": "p", "max": 1, "prometheus": { "address": "http://p:9090", "query": "up",
              "headersFrom": from_secret("prom-token", "token") } },
            { "name": "w", "min": 1, "web": { "url": "http://kpi", "jsonPath": "$.rate",
              "headers": { "X-Team": "shop" }, "headersFrom": from_secret("kpi-token", "t.1") } }
        ] },
        "gates": [{ "name": "g", "at": "BeforeStep", "url": "http://hooks",
                    "headersFrom": from_secret("gate-token", "token") }]
    }))
    .to_config()
    .expect("valid");
    let secret = |name: &str, key: &str| {
        ValueFrom::SecretKeyRef(KeyRef {
            name: name.into(),
            key: key.into(),
        })
    };
    let checks = &config.analysis.checks;
    let prometheus = checks[0].prometheus.as_ref().expect("prometheus");
    assert_eq!(
        prometheus.headers_from[0].value_from,
        secret("prom-token", "token")
    );
    let web = checks[1].web.as_ref().expect("web");
    assert_eq!(web.headers_from[0].name, "Authorization");
    assert_eq!(web.headers_from[0].value_from, secret("kpi-token", "t.1"));
    assert_eq!(web.headers["X-Team"], "shop");
    assert_eq!(
        config.gates[0].headers_from[0].value_from,
        secret("gate-token", "token")
    );
}

#[test]
fn the_schema_lets_the_api_server_check_headers_from() {
    for (list, inner) in [
        (&["gates"][..], None),
        (&["analysis", "checks"][..], Some("prometheus")),
        (&["analysis", "checks"][..], Some("web")),
    ] {
        let schema = headers_from_schema(list, inner);
        assert_eq!(schema["type"], "array", "{list:?} {inner:?}: {schema}");
        assert_eq!(schema["maxItems"], 16);
        assert_eq!(schema["x-kubernetes-list-type"], "map");
        assert_eq!(schema["x-kubernetes-list-map-keys"], json!(["name"]));
        let item = &schema["items"];
        assert_eq!(item["required"], json!(["name", "valueFrom"]), "{item}");
        assert!(item["properties"]["name"]["pattern"].is_string());
        let source = &item["properties"]["valueFrom"];
        // Exactly one source, as core/v1 EnvVarSource (session 43: or a ConfigMap's key).
        assert_eq!(source["minProperties"], 1, "{source}");
        assert_eq!(source["maxProperties"], 1, "{source}");
        for kind in ["secretKeyRef", "configMapKeyRef"] {
            let selector = &source["properties"][kind];
            assert_eq!(selector["required"], json!(["key", "name"]), "{selector}");
            assert_eq!(selector["properties"]["name"]["maxLength"], 253);
            assert_eq!(
                selector["properties"]["key"]["pattern"],
                "^[-._a-zA-Z0-9]+$"
            );
        }
    }
}

#[test]
fn the_spec_header_fields_are_in_the_crd_by_the_same_name() {
    use super::super::tests::{accepted_fields, camel};
    let item = &headers_from_schema(&["gates"], None)["items"];
    let mut crd: Vec<String> = item["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .cloned()
        .collect();
    let mut spec: Vec<String> = accepted_fields::<crate::spec::headers::HeaderFrom>()
        .iter()
        .map(|f| camel(f))
        .collect();
    crd.sort();
    spec.sort();
    assert_eq!(spec, crd);
}

#[test]
fn bad_headers_from_are_refused_by_their_trafficshift_field() {
    let mut gate = json!({ "name": "g", "at": "BeforeStep", "url": "http://hooks",
        "headers": { "authorization": "x" }, "headersFrom": from_secret("Kpi_Token", "token") });
    let text = policy(json!({ "gates": [gate.clone()] }))
        .to_config()
        .expect_err("refused")
        .to_string();
    for wanted in [
        "spec.rollout.gates[0].headersFrom[0].name: Authorization is also in spec.rollout.gates[0].headers: set it in one place",
        "spec.rollout.gates[0].headersFrom[0].valueFrom.secretKeyRef.name: \"Kpi_Token\" is not a Secret name",
    ] {
        assert!(text.contains(wanted), "{wanted:?} not in:\n{text}");
    }
    // Only a Secret: a file or variable of the controller's own is no source a TrafficShift has.
    gate["headersFrom"] =
        json!([{ "name": "A", "valueFrom": { "file": "/var/run/secrets/token" } }]);
    let refused = serde_json::from_value::<RolloutPolicy>(json!({ "gates": [gate] }));
    let e = refused.expect_err("no file source").to_string();
    assert!(
        e.contains("exactly one of secretKeyRef or configMapKeyRef"),
        "{e}"
    );
}

#[test]
fn a_config_map_key_reaches_the_rollout_config_and_round_trips() {
    let check = json!({ "name": "p", "max": 1.0, "prometheus": { "address": "http://p:9090",
        "query": "up", "headersFrom": from_config_map("prom-tenant", "tenant") } });
    let written = policy(json!({ "analysis": { "checks": [check.clone()] } }));
    let config = written.to_config().expect("valid");
    let prometheus = config.analysis.checks[0]
        .prometheus
        .as_ref()
        .expect("prometheus");
    assert_eq!(prometheus.headers_from[0].name, "X-Scope-OrgID");
    assert_eq!(
        prometheus.headers_from[0].value_from,
        ValueFrom::ConfigMapKeyRef(KeyRef {
            name: "prom-tenant".into(),
            key: "tenant".into(),
        })
    );
    let back = serde_json::to_value(&written).expect("json");
    assert_eq!(back["analysis"]["checks"][0], check, "written back as read");
}

#[test]
fn a_bad_config_map_key_is_refused_by_its_trafficshift_field() {
    let gate = json!({ "name": "g", "at": "BeforeStep", "url": "http://hooks",
        "headersFrom": from_config_map("Prom_Tenant", "a/b") });
    let text = policy(json!({ "gates": [gate] }))
        .to_config()
        .expect_err("refused")
        .to_string();
    for wanted in [
        "spec.rollout.gates[0].headersFrom[0].valueFrom.configMapKeyRef.name: \"Prom_Tenant\" is not a ConfigMap name (a DNS-1123 subdomain)",
        "spec.rollout.gates[0].headersFrom[0].valueFrom.configMapKeyRef.key: \"a/b\" is not a ConfigMap key",
    ] {
        assert!(text.contains(wanted), "{wanted:?} not in:\n{text}");
    }
}

/// Both sources, or neither, in the second header of a Prometheus check: the TrafficShift does
/// not decode, naming that `valueFrom`.
#[test]
fn a_value_from_with_both_sources_or_neither_is_refused_by_its_field() {
    let both = json!({ "secretKeyRef": { "name": "t", "key": "k" },
                       "configMapKeyRef": { "name": "c", "key": "k" } });
    for value_from in [both, json!({})] {
        let headers_from = json!([
            { "name": "A", "valueFrom": { "secretKeyRef": { "name": "t", "key": "k" } } },
            { "name": "B", "valueFrom": value_from }
        ]);
        let object = json!({
            "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift",
            "metadata": { "name": "web", "namespace": "shop", "generation": 1 },
            "spec": { "deployment": "web", "images": { "app": "web:v2" },
                "rollout": { "analysis": { "checks": [{ "name": "p", "max": 1,
                    "prometheus": { "address": "http://p:9090", "query": "up",
                                    "headersFrom": headers_from } }] } } }
        });
        let e = super::super::decode(&object).expect_err("refused");
        assert_eq!(
            e.to_string(),
            "spec.rollout.analysis.checks[0].prometheus.headersFrom[1].valueFrom: exactly one of secretKeyRef or configMapKeyRef",
            "{object}"
        );
    }
}
