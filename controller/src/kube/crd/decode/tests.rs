//! Tests of [`super::decode`]: every field that does not decode is named, by its path as written.

use serde_json::json;

use super::*;

fn shift(spec: Value) -> Value {
    json!({
        "apiVersion": "crossfade.dev/v1alpha1",
        "kind": "TrafficShift",
        "metadata": { "name": "web", "namespace": "shop", "generation": 2 },
        "spec": spec,
    })
}

fn error(spec: Value) -> DecodeError {
    decode(&shift(spec)).expect_err("does not decode")
}

/// The fields `e` names (its own and `more`'s), sorted.
fn sorted_fields(e: &DecodeError) -> Vec<&str> {
    let mut fields: Vec<&str> = [e]
        .into_iter()
        .chain(&e.more)
        .map(|e| e.field.as_str())
        .collect();
    fields.sort_unstable();
    fields
}

#[test]
fn a_valid_trafficshift_decodes_as_from_value_does() {
    let object = shift(json!({
        "deployment": "web",
        "images": { "app": "web:v2" },
        "rollout": {
            "steps": [{ "weight": 5 }, { "weight": "50%", "hold": "1m" }, { "weight": 100 }],
            "hold": "10s"
        },
        "route": { "hosts": ["shop.example"], "port": 8080 }
    }));
    let decoded = decode(&object).expect("decodes");
    let plain: TrafficShift = serde_json::from_value(object).expect("from_value");
    assert_eq!(decoded.spec, plain.spec);
    assert_eq!(decoded.metadata, plain.metadata);
}

/// `steps: []` is refused naming the field, as `crossfade run` refuses `rollout.steps: []`;
/// before (session 38) it was read as left out, and the default steps were rolled out. Left
/// out, the default steps are still taken.
#[test]
fn an_empty_step_list_is_refused_naming_the_field_and_a_missing_one_is_the_default() {
    let e = error(json!({
        "deployment": "web",
        "images": { "app": "web:v2" },
        "rollout": { "steps": [], "hold": "10s" }
    }));
    assert_eq!(e.field, "spec.rollout.steps", "{e}");
    assert!(
        e.reason
            .starts_with("must have at least one step (leave steps out"),
        "{e}"
    );
    let object = shift(json!({ "deployment": "web", "images": { "app": "web:v2" },
        "rollout": { "hold": "10s" } }));
    let decoded = decode(&object).expect("decodes");
    let config = decoded.spec.rollout.to_config().expect("valid");
    assert_eq!(config.steps, crate::spec::RolloutConfig::default().steps);
}

#[test]
fn a_string_where_a_number_goes_is_named_by_its_field() {
    let e = error(json!({
        "deployment": "web",
        "images": { "app": "web:v2" },
        "rollout": { "analysis": { "minRequests": "fifty" } }
    }));
    assert_eq!(e.field, "spec.rollout.analysis.minRequests");
    assert!(
        e.reason.starts_with("invalid type: string \"fifty\""),
        "{e}"
    );
    assert!(!e.reason.contains("line"), "no position in {e}");
    assert!(e.in_spec());
}

/// Trial 20: a spec file's `on_inconclusive: pause` was told `did you mean `Pause`?`, a
/// TrafficShift's `onInconclusive: pause` only the variants.
#[test]
fn a_misspelt_variant_is_told_the_one_meant() {
    let e = error(json!({
        "deployment": "web",
        "images": { "app": "web:v2" },
        "rollout": { "analysis": { "onInconclusive": "pause" } }
    }));
    assert_eq!(e.field, "spec.rollout.analysis.onInconclusive", "{e}");
    assert!(e.reason.ends_with("; did you mean `Pause`?"), "{e}");
}

#[test]
fn a_bad_item_of_a_list_is_named_by_its_index() {
    let e = error(json!({
        "deployment": "web",
        "images": { "app": "web:v2" },
        "rollout": { "steps": [{ "weight": 5 }, { "weight": "ten" }, { "weight": 100 }] }
    }));
    assert_eq!(e.field, "spec.rollout.steps[1].weight", "{e}");
}

/// Session 43: the first bad item of a list left out the whole list, so a second bad step,
/// check or host was named only once the first was fixed. Each is named, by its index as
/// written, and a step left out for a bad weight is not named again for it.
#[test]
fn every_bad_item_of_a_list_is_named_by_its_index_as_written() {
    let check = |name: Value, bound: Value| {
        let mut check = json!({ "name": name,
            "prometheus": { "address": "http://prom:9090", "query": "up" } });
        check["min"] = bound;
        check
    };
    let e = error(json!({
        "deployment": "web",
        "images": { "app": "web:v2" },
        "rollout": {
            "steps": [{ "weight": "ten" }, { "weight": 50 }, { "weight": "most" },
                      { "weight": 100, "hold": "soon" }],
            "analysis": { "checks": [check(json!(5), json!(0.9)), check(json!("b"), json!(0.5)),
                                     check(json!("c"), json!("low"))] }
        },
        "route": { "hosts": ["shop.example", 5, "ok.example", 7] }
    }));
    assert_eq!(
        sorted_fields(&e),
        [
            "spec.rollout.analysis.checks[0].name",
            "spec.rollout.analysis.checks[2].min",
            "spec.rollout.steps[0].weight",
            "spec.rollout.steps[2].weight",
            "spec.rollout.steps[3].hold",
            "spec.route.hosts[1]",
            "spec.route.hosts[3]",
        ],
        "{e}"
    );
    assert!(!e.to_string().contains("missing field"), "{e}");
}

/// Indexes count the items left out before them, list by list (nested lists too).
#[test]
fn a_field_read_again_is_named_by_its_index_as_written() {
    let mut removed = Removed::default();
    removed.note("spec.rollout.analysis.checks[0]");
    removed.note("spec.rollout.analysis.checks[2]");
    removed.note("spec.rollout.analysis.checks[3].prometheus.headersFrom[0]");
    let written = |field: &str| removed.as_written(field);
    assert_eq!(
        written("spec.rollout.analysis.checks[0].min"),
        "spec.rollout.analysis.checks[1].min"
    );
    assert_eq!(
        written("spec.rollout.analysis.checks[1]"),
        "spec.rollout.analysis.checks[3]"
    );
    assert_eq!(
        written("spec.rollout.analysis.checks[1].prometheus.headersFrom[0].name"),
        "spec.rollout.analysis.checks[3].prometheus.headersFrom[1].name"
    );
    assert_eq!(
        written("spec.rollout.steps[0].weight"),
        "spec.rollout.steps[0].weight"
    );
    assert_eq!(written("spec.route.hosts"), "spec.route.hosts");
}

#[test]
fn a_duration_over_366_days_is_named_by_its_field() {
    let e = error(json!({
        "deployment": "web",
        "images": { "app": "web:v2" },
        "rollout": { "hold": "9000h" }
    }));
    assert_eq!(e.field, "spec.rollout.hold", "{e}");
}

/// Session 42: only the first field that did not decode was named; a fix of it then showed
/// the next. Every one is named at once, and what only follows from leaving one out (the
/// required `deployment` missing) is not.
#[test]
fn every_field_that_does_not_decode_is_named_at_once() {
    let e = error(json!({
        "deployment": 5,
        "images": { "app": "web:v2" },
        "rollout": {
            "hold": "9000h",
            "steps": [{ "weight": "ten" }, { "weight": 100 }],
            "analysis": { "minRequests": "fifty" }
        },
        "route": { "port": 70000 }
    }));
    assert_eq!(
        sorted_fields(&e),
        [
            "spec.deployment",
            "spec.rollout.analysis.minRequests",
            "spec.rollout.hold",
            "spec.rollout.steps[0].weight",
            "spec.route.port"
        ],
        "{e}"
    );
    assert!(!e.to_string().contains("missing field"), "{e}");
    assert_eq!(e.to_string().lines().count(), 5, "one a line: {e}");
}

#[test]
fn a_missing_field_is_named_by_the_map_that_lacks_it() {
    let e = error(json!({ "images": { "app": "web:v2" } }));
    assert_eq!(e.to_string(), "spec: missing field `deployment`");
}

#[test]
fn a_bad_status_is_not_in_spec() {
    let mut object = shift(json!({ "deployment": "web", "images": { "app": "web:v2" } }));
    object["status"] = json!({ "step": "two" });
    let e = decode(&object).expect_err("does not decode");
    assert_eq!(e.field, "status.step");
    assert!(!e.in_spec());
}
