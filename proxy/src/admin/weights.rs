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

/// The most route names a 404 lists: a proxy in a cluster may serve hundreds.
const LISTED_ROUTES: usize = 20;

/// 404 for a route this proxy does not serve, listing those it does (`routes`, and in the
/// message): in Kubernetes mode a route is `<namespace>/<name>`, and `PUT /routes/web/weights`
/// for TrafficShift `default/web` was told only `no route named "web"` (trial 20).
fn unknown_route(proxy: &Proxy, route: &str) -> AdminReply {
    let names: Vec<String> = proxy.routes().into_iter().map(|r| r.name).collect();
    let shown = &names[..names.len().min(LISTED_ROUTES)];
    let listed: Vec<String> = shown.iter().map(|n| format!("{n:?}")).collect();
    let more = match names.len().saturating_sub(LISTED_ROUTES) {
        0 => String::new(),
        n => format!(" and {n} more (GET /status lists them)"),
    };
    let error = crate::error::Error::UnknownRoute(route.to_owned());
    let mut reply = AdminReply::from_error(&error);
    let message = format!("{error} (this proxy's routes: {}{more})", listed.join(", "));
    if let Some(object) = reply.body.as_object_mut() {
        object.insert("error".to_owned(), message.into());
        object.insert("routes".to_owned(), json!(shown));
    }
    reply
}

/// Applies a weights body to `route`: 200 with the new generation, 400 naming the fields at fault
/// (see [`refused`]), 404 for an unknown route, or 409 when a rollout owns the route and `writer`
/// does not force.
pub(super) fn put(proxy: &Proxy, route: &str, body: &[u8], writer: WeightWriter) -> AdminReply {
    let body_bytes = body;
    // The route first: a body is judged against the route it is for (trial 11, L12: an unknown
    // route answered a body error).
    let Some(config) = proxy.route(route) else {
        return unknown_route(proxy, route);
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
            (message, Some(slot.as_str().to_owned()))
        })
        .collect();
    if !empty.is_empty() {
        return refused(&empty);
    }
    match proxy.set_weights_as(route, weights, writer) {
        Ok(generation) => {
            let mut body = json!({ "generation": generation, "weights": weights });
            let notes: Vec<String> = [lone_small_number(body_bytes), disabled(route, weights)]
                .into_iter()
                .flatten()
                .collect();
            if let (false, Some(object)) = (notes.is_empty(), body.as_object_mut()) {
                object.insert("note".to_owned(), notes.join("; ").into());
            }
            AdminReply::new(StatusCode::OK, body)
        }
        Err(error) => AdminReply::from_error(&error),
    }
}

/// A note for weights that disable `route` (both 0): every request on it then gets 503 `route
/// NAME is disabled (both weights are 0)`, documented, but the 200 said nothing of it (trial 44b,
/// finding 10).
fn disabled(route: &str, weights: Weights) -> Option<String> {
    (weights.of(Slot::Blue) == 0 && weights.of(Slot::Green) == 0).then(|| {
        format!(
            "route {route} is now disabled: with both weights 0 every request on it gets 503 \
             until a backend is given weight"
        )
    })
}

/// A note for a body that sets one side alone to a bare number from 1 to 100 (`{"green": 10}`):
/// applied as basis points (0.1%), which is a valid canary weight, but files and `"10%"` read as
/// percent, so the answer says which it was (cases31: a lone number was applied silently, while
/// the same slip with both sides is refused with a hint, [`percent_hint`]).
fn lone_small_number(body: &[u8]) -> Option<String> {
    let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let [(side, value)] = object.iter().collect::<Vec<_>>()[..] else {
        return None;
    };
    let n = value.as_u64().filter(|n| (1..=100).contains(n))?;
    #[allow(clippy::cast_possible_truncation)] // at most 100
    let bp = n as u32;
    Some(format!(
        "{side} {n} was applied as {n} basis points ({}); numbers are basis points: write \"{n}%\" for {n} percent",
        Percent(bp)
    ))
}

/// What is wrong with a body, and the field at fault (`blue`, `green`, or an unknown key as the
/// body spells it), `None` for the body as a whole.
type Fault = (String, Option<String>);

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
    let mut reply = AdminReply::error(StatusCode::BAD_REQUEST, message.clone(), field.as_deref());
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
/// Every fault found: not JSON, not an object, an unknown field (each alone; an unknown field is
/// named as the field at fault, as Kubernetes' strict field validation names one); else each of `blue`
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
        // `{"Blue": ..., "Green": ...}` was told only the field names, not that case matters.
        let hint = crate::de::closest(unknown, ["blue", "green"])
            .map(|known| format!("; did you mean {known:?}?"))
            .unwrap_or_default();
        let message =
            format!("unknown field {unknown:?} (expected \"blue\" and/or \"green\"){hint}");
        return Err(vec![(message, Some(unknown.clone()))]);
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
    // A lone bare blue of 1 to 100 moves 99% or more to green: most likely percent meant
    // (check31: `{"blue": 100}` applied blue 1%, green 99%, with only a note). Refused; both
    // sides, or a string, say which was meant. A lone small green (0.1%) only gets a note
    // ([`lone_small_number`]): the slip is then the safe way round.
    if let (true, None, Some(n)) = (
        bare(Slot::Blue),
        object.get("green"),
        object.get("blue").and_then(Value::as_u64),
    ) {
        if (1..=100).contains(&n) {
            let message = format!(
                "blue {n} alone is {n} basis points ({}) and gives green the rest ({}): write \"{n}%\" for {n} percent, or give both sides ({{\"blue\": {n}, \"green\": {}}}) for basis points",
                Percent(weights.blue),
                Percent(weights.green),
                weights.green
            );
            return Err(vec![(message, Some("blue".to_owned()))]);
        }
    }
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
        return Err(vec![(message, Some("green".to_owned()))]);
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
        .map_err(|message| (message, Some(name.to_owned())))
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
mod tests;
