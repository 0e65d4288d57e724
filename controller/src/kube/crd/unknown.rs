//! Pure: the fields of a TrafficShift's `spec` that its CRD schema does not have (trial 10, K11).
//!
//! The typed decode ([`super::decode()`]) ignores unknown keys, as serde does by default; an API
//! server with the schema prunes them, and `kubectl` (strict field validation) refuses them. On a
//! server without the schema (the emulator, or a CRD not installed from `deploy/crd/`) a misspelled
//! policy key (`spec.rollout.holdd`) would otherwise run the defaults silently, while `crossfade
//! run` refuses unknown keys. The walk follows the generated schema ([`TrafficShift::crd`]): each
//! key of an object whose schema lists `properties` must be one of them; maps
//! (`additionalProperties`) and list items are followed; a node whose schema lists neither, or
//! preserves unknown fields, is not looked into.

use std::sync::OnceLock;

use kube::CustomResourceExt;
use serde_json::Value;

use super::TrafficShift;

/// Every field of `spec` (the TrafficShift's `spec` as stored) that the schema does not have, as
/// `spec.rollout.holdd: unknown field; spec.rollout takes analysis, drainTimeout, ...`, in the
/// order found (keys in JSON order). Empty when every field is known.
pub fn unknown_fields(spec: &Value) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(schema) = spec_schema() {
        walk(spec, schema, "spec", &mut found);
    }
    found
}

/// The `spec` property of the generated CRD's schema, built once.
fn spec_schema() -> Option<&'static Value> {
    static SCHEMA: OnceLock<Option<Value>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let crd = serde_json::to_value(TrafficShift::crd()).ok()?;
            let versions = crd.pointer("/spec/versions")?.as_array()?;
            let schema = versions
                .first()?
                .pointer("/schema/openAPIV3Schema/properties/spec")?;
            Some(schema.clone())
        })
        .as_ref()
}

fn walk(value: &Value, schema: &Value, path: &str, found: &mut Vec<String>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        Value::Object(map) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (key, item) in map {
                    let child = format!("{path}.{key}");
                    match properties.get(key) {
                        Some(inner) => walk(item, inner, &child, found),
                        None => {
                            let known: Vec<&str> = properties.keys().map(String::as_str).collect();
                            found.push(format!(
                                "{child}: unknown field; {path} takes {}",
                                known.join(", ")
                            ));
                        }
                    }
                }
            } else if let Some(inner) = schema.get("additionalProperties").filter(|a| a.is_object())
            {
                for (key, item) in map {
                    walk(item, inner, &format!("{path}.{key}"), found);
                }
            }
        }
        Value::Array(items) => {
            if let Some(inner) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(item, inner, &format!("{path}[{i}]"), found);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_field_a_full_spec_uses_is_known() {
        let spec = json!({
            "deployment": "web",
            "images": { "app": "web:v2" },
            "rollout": {
                "steps": [{ "weight": 5, "hold": "1m" }, { "weight": "50%" }, { "weight": 100 }],
                "hold": "10s", "progressDeadline": "2m", "drainTimeout": "30s",
                "analysis": {
                    "maxErrorRate": "1%", "maxP99": "250ms", "minRequests": 50,
                    "onInconclusive": "Rollback",
                    "checks": [{ "name": "ok", "min": 0.99, "prometheus": {
                        "address": "http://prom:9090", "query": "up",
                        "headers": { "X-Team": "shop" },
                        "headersFrom": [{ "name": "Authorization", "valueFrom": {
                            "secretKeyRef": { "name": "t", "key": "token" } } }] } }]
                },
                "gates": [{ "name": "approve", "at": "BeforePromotion", "url": "https://a.example" }]
            },
            "route": { "hosts": ["shop.example"], "pathPrefix": "/", "port": "http" }
        });
        assert_eq!(unknown_fields(&spec), Vec::<String>::new());
    }

    #[test]
    fn unknown_fields_are_named_with_the_fields_their_map_takes() {
        let spec = json!({
            "deployment": "web",
            "images": { "app": "web:v2" },
            "rollout": { "holdd": "5s", "steps": [{ "weight": 5, "wieght": 6 }] },
            "foo": "bar"
        });
        assert_eq!(
            unknown_fields(&spec),
            [
                "spec.foo: unknown field; spec takes deployment, images, rollout, route",
                "spec.rollout.holdd: unknown field; spec.rollout takes analysis, drainTimeout, \
                 gates, hold, progressDeadline, steps, unreadyGrace",
                "spec.rollout.steps[0].wieght: unknown field; spec.rollout.steps[0] takes hold, weight",
            ]
        );
    }
}
