//! `PUT /routes/{route}/weights`: parse the body (basis points or percent strings), set the split.

use http::StatusCode;
use serde_json::{json, Map, Value};

use super::AdminReply;
use crate::handle::Proxy;
use crate::owner::WeightWriter;
use crate::weight::{Percent, Slot, Weights, FULL_BP};

/// The route named by a `/routes/{route}/weights` path: everything between the fixed prefix and
/// suffix, percent-decoded (RFC 3986 §2.1). A route read from Kubernetes is named
/// `<namespace>/<name>` ([`crate::config::RouteConfig::name`]), so both
/// `/routes/shop/web/weights` and `/routes/shop%2Fweb/weights` (the form URL builders write) name
/// route `shop/web`; the one `/` a name may hold cannot make the path ambiguous. A segment that
/// does not decode (`%zz`, not UTF-8) is taken as written and matches no route (404 naming it).
pub(super) fn route_of(path: &str) -> Option<String> {
    let route = path.strip_prefix("/routes/")?.strip_suffix("/weights")?;
    if route.is_empty() {
        return None;
    }
    Some(percent_decode(route).unwrap_or_else(|| route.to_owned()))
}

/// `%XX` sequences decoded to their bytes; `None` when one is malformed or the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Who writes, from the query string: an operator, or with `force=true` (`force=false` and no
/// query are the same) an operator forcing the write over the route's owner.
pub(super) fn writer(query: Option<&str>) -> Result<WeightWriter, AdminReply> {
    let mut writer = WeightWriter::Operator;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        writer = match pair {
            "force=true" | "force=1" | "force" => WeightWriter::ForcedOperator,
            "force=false" | "force=0" => WeightWriter::Operator,
            other => {
                let message = format!("unknown query parameter {other:?} (only force=true)");
                return Err(AdminReply::error(StatusCode::BAD_REQUEST, message, None));
            }
        };
    }
    Ok(writer)
}

/// Applies a weights body to `route`: 200 with the new generation, 400 naming the fields at fault
/// (see [`refused`]), 404 for an unknown route, or 409 when a rollout owns the route and `writer`
/// does not force.
pub(super) fn put(proxy: &Proxy, route: &str, body: &[u8], writer: WeightWriter) -> AdminReply {
    // The route first: a body is judged against the route it is for (trial 11, L12: an unknown
    // route answered a body error).
    let Some(config) = proxy.route(route) else {
        return AdminReply::from_error(&crate::error::Error::UnknownRoute(route.to_owned()));
    };
    let weights = match parse(body) {
        Ok(weights) => weights,
        Err(problems) => return refused(&problems),
    };
    // The config's rule, named here in the API's words on the body's field; the table's own
    // check (the same rule, in config words) still guards a write that races a change of
    // endpoints.
    let empty: Vec<Fault> = config
        .weighted_without_endpoints(weights)
        .map(|slot| {
            let message = format!(
                "{slot} has no endpoints: it cannot take weight ({})",
                Percent(weights.of(slot))
            );
            (message, Some(slot.as_str()))
        })
        .collect();
    if !empty.is_empty() {
        return refused(&empty);
    }
    match proxy.set_weights_as(route, weights, writer) {
        Ok(generation) => AdminReply::new(
            StatusCode::OK,
            json!({ "generation": generation, "weights": weights }),
        ),
        Err(error) => AdminReply::from_error(&error),
    }
}

/// What is wrong with a body, and the field at fault (`blue`, `green`), `None` for the body as a
/// whole.
type Fault = (String, Option<&'static str>);

/// Every fault of a refused body, in body order (blue before green); never empty.
pub(crate) type ParseError = Vec<Fault>;

/// 400 for a refused body, backward compatible with one fault: `{"error": message, "field":
/// name}` for the first fault (`field` left out when the body as a whole is at fault), and, when
/// several fields are wrong, `"problems": [{"path": "blue", "message": ...}, {"path": "green",
/// ...}]` listing every one, as a refused config lists its problems (trial report H14).
fn refused(problems: &[Fault]) -> AdminReply {
    let Some(((message, field), rest)) = problems.split_first() else {
        return AdminReply::error(StatusCode::BAD_REQUEST, "weights refused", None);
    };
    let mut reply = AdminReply::error(StatusCode::BAD_REQUEST, message.clone(), *field);
    if let (false, Some(object)) = (rest.is_empty(), reply.body.as_object_mut()) {
        let listed: Vec<Value> = problems
            .iter()
            .map(|(message, field)| json!({ "path": field, "message": message }))
            .collect();
        object.insert("problems".to_owned(), Value::Array(listed));
    }
    reply
}

/// Parses `{"blue": 9000, "green": 1000}` (integers are basis points) or `{"blue": "90%"}`
/// (strings are percent and need the `%` sign). A side left out gets what the other leaves of 100 %.
///
/// # Errors
/// Every fault found: not JSON, not an object, an unknown field (each alone); else each of `blue`
/// and `green` that is not a weight (both when both are wrong); else a sum other than 100 % or 0
/// (named on `green`).
pub(crate) fn parse(body: &[u8]) -> Result<Weights, ParseError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| vec![(format!("body is not valid JSON: {e}"), None)])?;
    let Value::Object(object) = value else {
        let message = r#"body must be a JSON object like {"blue": 9000, "green": 1000}"#;
        return Err(vec![(message.to_owned(), None)]);
    };
    if let Some(unknown) = object.keys().find(|k| *k != "blue" && *k != "green") {
        let message = format!("unknown field {unknown:?} (expected \"blue\" and/or \"green\")");
        return Err(vec![(message, None)]);
    }
    let (blue, green) = match (field(&object, Slot::Blue), field(&object, Slot::Green)) {
        (Ok(blue), Ok(green)) => (blue, green),
        (blue, green) => return Err([blue.err(), green.err()].into_iter().flatten().collect()),
    };
    let bare = |slot: Slot| object.get(slot.as_str()).is_some_and(Value::is_number);
    let weights = match (blue, green) {
        (Some(blue), Some(green)) => Weights { blue, green },
        (Some(blue), None) => Weights::with(Slot::Blue, blue),
        (None, Some(green)) => Weights::with(Slot::Green, green),
        (None, None) => {
            return Err(vec![(
                "body must set \"blue\" and/or \"green\"".to_owned(),
                None,
            )])
        }
    };
    if weights.blue + weights.green != FULL_BP && weights.blue + weights.green != 0 {
        let mut message = format!(
            "blue {} + green {} must sum to 100% (10000 basis points) or both be 0",
            Percent(weights.blue),
            Percent(weights.green)
        );
        if let Some(hint) = percent_hint(weights, bare(Slot::Blue), bare(Slot::Green)) {
            message.push(' ');
            message.push_str(&hint);
        }
        return Err(vec![(message, Some("green"))]);
    }
    Ok(weights)
}

/// The hint for bare numbers that were meant as percent (trial 7, G11): `{"blue": 90, "green":
/// 10}` is 0.9% + 0.1%, but read as percent it is a valid pair, so the message asks whether
/// `"90%"` and `"10%"` were meant. `None` when the percent reading would not sum to 100% either.
fn percent_hint(weights: Weights, blue_bare: bool, green_bare: bool) -> Option<String> {
    if !blue_bare && !green_bare {
        return None;
    }
    let as_percent = |bp: u32, bare: bool| if bare { bp.checked_mul(100) } else { Some(bp) };
    let blue = as_percent(weights.blue, blue_bare)?;
    let green = as_percent(weights.green, green_bare)?;
    if blue + green != FULL_BP {
        return None;
    }
    let meant: Vec<String> = [(weights.blue, blue_bare), (weights.green, green_bare)]
        .into_iter()
        .filter(|&(_, bare)| bare)
        .map(|(n, _)| format!("\"{n}%\""))
        .collect();
    Some(format!(
        "(numbers are basis points: did you mean {}?)",
        meant.join(" and ")
    ))
}

fn field(object: &Map<String, Value>, slot: Slot) -> Result<Option<u32>, Fault> {
    let name = slot.as_str();
    let Some(value) = object.get(name) else {
        return Ok(None);
    };
    weight_bp(value)
        .map(Some)
        .map_err(|message| (message, Some(name)))
}

fn weight_bp(value: &Value) -> Result<u32, String> {
    let bp = match value {
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(whole), _) => u32::try_from(whole).unwrap_or(u32::MAX),
            // JSON's `-0` reads as the float -0.0, which the arm below called "-0.0: write the
            // weight as an integer ..., e.g. -0" (trial 19).
            (None, Some(f)) if f == 0.0 && f.is_sign_negative() => {
                return Err("-0: a weight is not negative; write 0".to_owned())
            }
            // `1e4` or `10000.0`: JSON reads a float, whole or not (trial 7, G11).
            (None, Some(f)) if f.fract() == 0.0 && (0.0..=f64::from(FULL_BP)).contains(&f) => {
                return Err(format!(
                    "{n}: write the weight as an integer number of basis points, e.g. {f:.0} \
                     (0 to 10000)"
                ))
            }
            // Past u64, JSON reads a float whose digits are not the ones sent (trial 13, N15):
            // said without echoing them.
            (None, Some(f)) if f.fract() == 0.0 && f > f64::from(FULL_BP) => {
                return Err(
                    "a whole number above 10000 basis points (weights are 0 to 10000, 100%)"
                        .to_owned(),
                )
            }
            (None, Some(f)) if f < 0.0 => {
                return Err(format!(
                    "{n} is below 0 (weights are 0 to 10000 basis points)"
                ))
            }
            _ => {
                return Err(format!(
                    "{n} is not a whole number of basis points (0 to 10000)"
                ))
            }
        },
        Value::String(s) if s.trim_end().ends_with('%') => Percent::parse(s)?.bp(),
        Value::String(s) => {
            return Err(format!(
                "{s:?}: a string weight needs a % sign (\"90%\"); numbers are basis points"
            ))
        }
        other => {
            return Err(format!(
                "{other} is not a weight (basis points or a \"%\" string)"
            ))
        }
    };
    if bp > FULL_BP {
        return Err(format!("{} is above 100%", Percent(bp)));
    }
    Ok(bp)
}

#[cfg(test)]
mod tests {
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
            (r#"{"blue": 12000, "bleu": 1}"#, vec![None]),
            ("[1]", vec![None]),
        ] {
            let faults = parse(body.as_bytes()).unwrap_err();
            let named: Vec<Option<&str>> = faults.iter().map(|(_, field)| *field).collect();
            assert_eq!(named, fields, "{body}: {faults:?}");
        }
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
        let one = super::refused(&[("120% is above 100%".into(), Some("blue"))]);
        assert_eq!(
            one.body,
            serde_json::json!({ "error": "120% is above 100%", "field": "blue" })
        );
        let two = super::refused(&[("a".into(), Some("blue")), ("b".into(), Some("green"))]);
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
}
