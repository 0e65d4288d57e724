//! The weights body's reader and its refusals.

use super::{parse, route_of};

fn error(body: &str) -> String {
    let faults = parse(body.as_bytes()).unwrap_err();
    assert_eq!(faults.len(), 1, "{faults:?}");
    faults[0].0.clone()
}

#[test]
fn every_wrong_field_of_a_body_is_listed() {
    // Trial report H14: `{"blue":12000,"green":-2000}` named blue only.
    for (body, fields) in [
        (
            r#"{"blue": 12000, "green": -2000}"#,
            vec![Some("blue"), Some("green")],
        ),
        (
            r#"{"green": "x", "blue": 1.5}"#,
            vec![Some("blue"), Some("green")],
        ),
        (r#"{"blue": 12000, "green": 0}"#, vec![Some("blue")]),
        (r#"{"blue": 0, "green": true}"#, vec![Some("green")]),
        (r#"{"blue": 9000, "green": 2000}"#, vec![Some("green")]),
        (r#"{"blue": 12000, "bleu": 1}"#, vec![Some("bleu")]),
        ("[1]", vec![None]),
    ] {
        let faults = parse(body.as_bytes()).unwrap_err();
        let named: Vec<Option<&str>> = faults.iter().map(|(_, field)| field.as_deref()).collect();
        assert_eq!(named, fields, "{body}: {faults:?}");
    }
    // An unknown key is the field at fault, as the body spells it (session 37, user37: the
    // README promised `field` for the first wrong field, and it was left out).
    let faults = parse(br#"{"bleu": 1}"#).unwrap_err();
    assert_eq!(
        faults,
        [(
            "unknown field \"bleu\" (expected \"blue\" and/or \"green\"); did you mean \"blue\"?"
                .to_owned(),
            Some("bleu".to_owned())
        )]
    );
    let faults = parse(br#"{"blue": 12000, "green": -2000}"#).unwrap_err();
    assert_eq!(faults[0].0, "120% is above 100%");
    assert_eq!(
        faults[1].0, "-2000 is below 0 (weights are 0 to 10000 basis points)",
        "{faults:?}"
    );
}

/// Trial 13, N15: a weight past u64 was answered with a float the client never sent
/// (`1.8446744073709552e+19 is not a whole number ...`).
#[test]
fn a_weight_past_u64_is_refused_without_digits_the_client_did_not_send() {
    let message = error(r#"{"blue": 18446744073709551617, "green": 0}"#);
    assert_eq!(
        message,
        "a whole number above 10000 basis points (weights are 0 to 10000, 100%)"
    );
    assert_eq!(
        error(r#"{"blue": 12000.5, "green": 0}"#),
        "12000.5 is not a whole number of basis points (0 to 10000)"
    );
}

#[test]
fn a_refusal_keeps_error_and_field_for_the_first_fault_and_lists_several() {
    let one = super::refused(&[("120% is above 100%".into(), Some("blue".into()))]);
    assert_eq!(
        one.body,
        serde_json::json!({ "error": "120% is above 100%", "field": "blue" })
    );
    let two = super::refused(&[
        ("a".into(), Some("blue".into())),
        ("b".into(), Some("green".into())),
    ]);
    assert_eq!(
        two.body,
        serde_json::json!({
            "error": "a",
            "field": "blue",
            "problems": [
                { "path": "blue", "message": "a" },
                { "path": "green", "message": "b" },
            ],
        })
    );
}

#[test]
fn a_whole_float_weight_is_asked_for_as_an_integer() {
    // Trial 7, G11: 1e4 is whole; the fault is its float form.
    for body in [r#"{"blue": 1e4, "green": 0}"#, r#"{"blue": 10000.0}"#] {
        let message = error(body);
        assert!(
            message.contains("write the weight as an integer") && message.contains("10000"),
            "{message}"
        );
        assert!(!message.contains("not a whole number"), "{message}");
    }
    let message = error(r#"{"blue": 12.5}"#);
    assert!(message.contains("not a whole number"), "{message}");
    let message = error(r#"{"blue": -1}"#);
    assert!(message.contains("-1 is below 0"), "{message}");
    let message = error(r#"{"blue": -0, "green": 10000}"#);
    assert_eq!(message, "-0: a weight is not negative; write 0");
}

#[test]
fn bare_numbers_that_would_be_a_percent_pair_get_a_hint() {
    let message = error(r#"{"blue": 90, "green": 10}"#);
    assert!(
        message.ends_with(r#"(numbers are basis points: did you mean "90%" and "10%"?)"#),
        "{message}"
    );
    let message = error(r#"{"blue": 90, "green": "10%"}"#);
    assert!(message.ends_with(r#"did you mean "90%"?)"#), "{message}");
    // No percent reading sums to 100%: no hint.
    let message = error(r#"{"blue": 90, "green": 20}"#);
    assert!(!message.contains("did you mean"), "{message}");
    assert!(parse(br#"{"blue": 9000, "green": 1000}"#).is_ok());
}

#[test]
fn a_route_name_with_a_slash_is_addressable_raw_or_percent_encoded() {
    // Trial report 6, F8: `<namespace>/<name>` routes (Kubernetes mode) got 404.
    assert_eq!(route_of("/routes/web/weights").as_deref(), Some("web"));
    assert_eq!(
        route_of("/routes/shop/web/weights").as_deref(),
        Some("shop/web")
    );
    assert_eq!(
        route_of("/routes/shop%2Fweb/weights").as_deref(),
        Some("shop/web")
    );
    assert_eq!(
        route_of("/routes/shop%2fweb/weights").as_deref(),
        Some("shop/web")
    );
    assert_eq!(route_of("/routes/a%2Db/weights").as_deref(), Some("a-b"));
    // Malformed escapes are kept as written (and then match no route).
    assert_eq!(route_of("/routes/a%zzb/weights").as_deref(), Some("a%zzb"));
    assert_eq!(route_of("/routes/a%2/weights").as_deref(), Some("a%2"));
    assert_eq!(route_of("/routes/%FF/weights").as_deref(), Some("%FF"));
    assert_eq!(route_of("/routes//weights"), None);
    assert_eq!(route_of("/routes/web"), None);
    assert_eq!(route_of("/status"), None);
}

#[test]
fn a_field_in_another_letter_case_is_told_the_name_to_write() {
    assert_eq!(
        error(r#"{"Blue": 9000, "green": 1000}"#),
        r#"unknown field "Blue" (expected "blue" and/or "green"); did you mean "blue"?"#
    );
    assert_eq!(
        error(r#"{"purple": 1}"#),
        r#"unknown field "purple" (expected "blue" and/or "green")"#
    );
}

/// Cases31: `{"green": 10}` is 0.1% (basis points), a valid canary weight that was applied
/// without a word; the answer now says how it was read. Both sides, a string, or a number above
/// 100 get no note.
#[test]
fn a_lone_small_number_is_applied_with_a_note_saying_it_was_basis_points() {
    assert_eq!(
        super::lone_small_number(br#"{"green": 10}"#).as_deref(),
        Some("green 10 was applied as 10 basis points (0.1%); numbers are basis points: write \"10%\" for 10 percent")
    );
    // A lone bare blue that small is refused instead (check31): it would move 99% to green.
    let refused = super::parse(br#"{"blue": 100}"#).unwrap_err();
    assert_eq!(
        refused,
        [(
            "blue 100 alone is 100 basis points (1%) and gives green the rest (99%): write \"100%\" for 100 percent, or give both sides ({\"blue\": 100, \"green\": 9900}) for basis points".to_owned(),
            Some("blue".to_owned())
        )]
    );
    assert!(super::parse(br#"{"blue": "100%"}"#).is_ok());
    assert!(super::parse(br#"{"blue": 100, "green": 9900}"#).is_ok());
    assert!(super::parse(br#"{"blue": 9000}"#).is_ok());
    for body in [
        r#"{"green": 0}"#,
        r#"{"green": 500}"#,
        r#"{"green": "10%"}"#,
        r#"{"blue": 9990, "green": 10}"#,
        "not json",
    ] {
        assert_eq!(super::lone_small_number(body.as_bytes()), None, "{body}");
    }
}
