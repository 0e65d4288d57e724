//! Trial report H14: every keyword field of a `crossfade run` spec and of a `crossfade migrate`
//! file given a value of the wrong shape names its field and the words it takes, never a YAML tag.

use super::{RunSpec, SpecError};
use crate::service::StartRequest;

/// Each keyword field: its path, a `rollout:` section with `@` where the value goes, and the
/// words it takes as messages quote them.
const FIELDS: [(&str, &str, &str); 5] = [
    (
        "rollout.analysis.judge",
        "{ analysis: { judge: @ } }",
        "\"threshold\" or \"sequential\"",
    ),
    (
        "rollout.analysis.fail_when_worse_than",
        "{ analysis: { fail_when_worse_than: @ } }",
        "\"blue\" or \"allowance\"",
    ),
    (
        "rollout.analysis.on_inconclusive",
        "{ analysis: { on_inconclusive: @ } }",
        "\"pause\" or \"rollback\"",
    ),
    (
        "rollout.gates[0].at",
        "{ gates: [{ name: g, at: @, url: http://gate.test/ok }] }",
        "\"before_rollout\" or \"before_step\" or",
    ),
    (
        "rollout.gates[0].on_reject",
        "{ gates: [{ name: g, at: before_step, url: http://gate.test/ok, on_reject: @ }] }",
        "\"wait\" or \"rollback\"",
    ),
];

/// The message each reader gives for `rollout` (with the value in place): the spec's
/// (`crossfade run`, `crossfade check`) and the migrate file's (`crossfade migrate`, `POST
/// /rollout`).
fn messages(rollout: &str) -> [(&'static str, String); 2] {
    let parse_error = |result: Result<(), SpecError>| match result {
        Err(SpecError::Parse(message)) => message,
        other => panic!("{rollout}: expected a parse error, got {other:?}"),
    };
    let spec = format!("blue: {{ endpoints: [127.0.0.1:9000] }}\nrollout: {rollout}");
    let migrate = format!("green: {{ endpoints: [127.0.0.1:9001] }}\nrollout: {rollout}");
    [
        ("spec", parse_error(RunSpec::from_yaml(&spec).map(drop))),
        (
            "migrate",
            parse_error(StartRequest::from_yaml(&migrate).map(drop)),
        ),
    ]
}

#[test]
fn a_keyword_of_the_wrong_shape_names_its_field_and_the_words_it_takes() {
    for (field, rollout, words) in FIELDS {
        for (value, expected) in [
            ("[x]", format!("invalid type: sequence, expected {words}")),
            ("{ a: 1 }", format!("invalid type: map, expected {words}")),
            ("1", format!("invalid type: integer `1`, expected {words}")),
            (
                "true",
                format!("invalid type: boolean `true`, expected {words}"),
            ),
            (
                "\"\"",
                format!("invalid value: string \"\", expected {words}"),
            ),
            ("~", format!("null is not allowed here: expected {words}")),
            ("nope", "unknown variant `nope`, expected ".to_owned()),
        ] {
            for (reader, message) in messages(&rollout.replace('@', value)) {
                let want = format!("{field}: {expected}");
                assert!(
                    message.starts_with(&want),
                    "{reader} {field} = {value}:\n  got  {message}\n  want {want}"
                );
                assert!(!message.contains("YAML tag"), "{reader}: {message}");
            }
        }
    }
}
