//! Trial report H14: every keyword field of a TrafficShift (spec and status) given a value of the
//! wrong shape names its field and the words it takes, in the resource's spelling.

use serde_json::{json, Value};

use super::decode::decode;

/// A TrafficShift whose value at `path` (dotted, `[0]` for a list's first entry) is `value`.
fn shift_with(path: &str, value: Value) -> Value {
    let mut object = json!({
        "apiVersion": "crossfade.dev/v1alpha1",
        "kind": "TrafficShift",
        "metadata": { "name": "web", "namespace": "shop", "generation": 2 },
        "spec": {
            "deployment": "web",
            "images": { "app": "web:v2" },
            "rollout": {
                "analysis": {},
                "gates": [{ "name": "g", "at": "BeforeStep", "url": "http://gate.shop/ok" }],
            },
        },
        "status": {
            "phase": "Progressing",
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "Progressing", "message": "",
                "lastTransitionTime": "2026-12-01T00:00:00Z",
            }],
            "lastVerdict": { "outcome": "Pass", "summary": "", "time": "2026-12-01T00:00:00Z" },
        },
    });
    let mut at = &mut object;
    for key in path.split('.') {
        at = match key.strip_suffix("[0]") {
            Some(list) => &mut at[list][0],
            None => &mut at[key],
        };
    }
    *at = value;
    object
}

/// The keyword fields and the start of the words each takes.
const FIELDS: [(&str, &str); 8] = [
    (
        "spec.rollout.analysis.judge",
        "\"Threshold\" or \"Sequential\"",
    ),
    (
        "spec.rollout.analysis.failWhenWorseThan",
        "\"Blue\" or \"Allowance\"",
    ),
    (
        "spec.rollout.analysis.onInconclusive",
        "\"Pause\" or \"Rollback\"",
    ),
    (
        "spec.rollout.gates[0].at",
        "\"BeforeRollout\" or \"BeforeStep\" or",
    ),
    ("spec.rollout.gates[0].onReject", "\"Wait\" or \"Rollback\""),
    ("status.phase", "\"Pending\" or \"Provisioning\" or"),
    (
        "status.conditions[0].status",
        "\"True\" or \"False\" or \"Unknown\"",
    ),
    (
        "status.lastVerdict.outcome",
        "\"Pass\" or \"Fail\" or \"Inconclusive\"",
    ),
];

#[test]
fn a_keyword_of_the_wrong_shape_names_its_field_and_the_words_it_takes() {
    for (field, words) in FIELDS {
        for (value, reason) in [
            (
                json!(["Blue"]),
                format!("invalid type: sequence, expected {words}"),
            ),
            (
                json!({ "a": 1 }),
                format!("invalid type: map, expected {words}"),
            ),
            (
                json!(1),
                format!("invalid type: integer `1`, expected {words}"),
            ),
            (
                json!(""),
                format!("invalid value: string \"\", expected {words}"),
            ),
            (
                json!("nope"),
                "unknown variant `nope`, expected ".to_owned(),
            ),
        ] {
            let e = decode(&shift_with(field, value.clone()))
                .expect_err("a wrong keyword does not decode");
            // A list is named at its first entry's line (`judge[0]`), the decoder's nearest.
            assert!(e.field.starts_with(field), "{field} = {value}: {e}");
            assert!(
                e.reason.starts_with(&reason),
                "{field} = {value}:\n  got  {}\n  want {reason}",
                e.reason
            );
        }
    }
    // Each word as the controller writes it reads back.
    let shift = decode(&shift_with(
        "spec.rollout.analysis.judge",
        json!("Sequential"),
    ))
    .expect("decodes");
    let status = shift.status.expect("status");
    assert_eq!(status.phase, Some(super::Phase::Progressing));
    assert_eq!(
        status.conditions[0].status,
        super::condition::ConditionStatus::True
    );
    assert_eq!(
        status.last_verdict.map(|v| v.outcome),
        Some(super::VerdictOutcome::Pass)
    );
}
