//! Pure: a TrafficShift as the API server holds it (JSON) decoded into [`TrafficShift`], with an
//! error that names the field, e.g. `spec.rollout.steps[1].weight: invalid type: string "ten",
//! expected a percentage ...`.
//!
//! Why not `serde_json::from_value`: its errors carry no position at all. The text parser's carry a
//! line, so the object is written out one field per line, with the field path of every line kept,
//! and parsed back: the line of the error is the field. A value that is wrong as a whole (a missing
//! field, a map a custom deserialiser refuses) is reported at its closing line, i.e. by the path of
//! the map that holds it.

use std::fmt::Write as _;

use serde_json::Value;

use super::TrafficShift;

/// Why a TrafficShift does not decode: the field and serde's reason, and the other fields of
/// `spec` that do not decode either.
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
pub struct DecodeError {
    /// The field path as the TrafficShift spells it (`spec.rollout.hold`, `spec.images.app`,
    /// `spec.rollout.steps[1]`); empty when the object itself is not a map.
    pub field: String,
    /// What is wrong, as serde says it, without the position.
    pub reason: String,
    /// The further fields of `spec` that do not decode, in the order found (each with `more`
    /// empty): [`decode`] reads the object again without each field it refused, so that every
    /// problem is named at once (STYLE.md §5; session 42: only the first was).
    pub more: Vec<DecodeError>,
}

impl std::fmt::Display for DecodeError {
    /// `field: reason`, then each of `more` on a line of its own.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)?;
        for more in &self.more {
            write!(f, "\n{more}")?;
        }
        Ok(())
    }
}

impl DecodeError {
    /// Whether the problem is in `spec` (the user's part; else `metadata` or `status`).
    pub fn in_spec(&self) -> bool {
        self.field == "spec" || self.field.starts_with("spec.")
    }

    /// This error with `unknown` (the fields of `spec` the schema does not have, as
    /// [`super::unknown_fields`] words them: `spec.rollout.holdd: unknown field; ...`) added to
    /// [`DecodeError::more`], up to `MAX_PROBLEMS` (20) problems in all. A problem outside `spec`
    /// takes none: the object is not a TrafficShift's shape, and its spec is not the point.
    /// Session 43: a spec that did not decode was told only of its type errors, while the
    /// `crossfade.dev/rollout` annotation named its unknown fields with them.
    pub fn with_unknown(mut self, unknown: Vec<String>) -> DecodeError {
        if !self.in_spec() {
            return self;
        }
        let room = MAX_PROBLEMS.saturating_sub(1 + self.more.len());
        self.more.extend(unknown.into_iter().take(room).map(
            |problem| match problem.split_once(": ") {
                Some((field, reason)) => DecodeError {
                    field: field.to_owned(),
                    reason: reason.to_owned(),
                    more: Vec::new(),
                },
                None => DecodeError {
                    field: String::new(),
                    reason: problem,
                    more: Vec::new(),
                },
            },
        ));
        self
    }
}

/// The most fields of `spec` [`decode`] names: past it, the object is surely not a TrafficShift
/// someone meant, and each try decodes it all again.
const MAX_PROBLEMS: usize = 20;

/// Decodes `object` (a whole TrafficShift: `apiVersion`, `kind`, `metadata`, `spec`, `status`).
///
/// A field of `spec` that does not decode is left out and the object read again, until it
/// decodes, up to [`MAX_PROBLEMS`] fields: each is named (`more`). What only follows from leaving
/// one out (a required field now missing from its map) is not. An item of a list is left out on
/// its own, and the items after it are named by their index as written ([`Removed`]): every bad
/// step, check or host is named (session 43: the first bad item left out its whole list, hiding
/// the others). A problem outside `spec` (`metadata`, `status`) or of `spec` as a whole ends the
/// search.
///
/// # Errors
/// [`DecodeError`] naming the first field that does not fit the type, or fails a check the type
/// makes while decoding (a duration over 366 days, a share with three decimals, ...), with the
/// others in `more`.
pub fn decode(object: &Value) -> Result<TrafficShift, DecodeError> {
    let mut first = match decode_once(object) {
        Ok(shift) => return Ok(shift),
        Err(e) => e,
    };
    let mut object = object.clone();
    let mut left_out = Vec::new();
    let mut removed = Removed::default();
    let mut next = Some(first.clone());
    while let Some(mut e) = next.take() {
        let Some(at) = leave_out(&mut object, &e.field) else {
            break;
        };
        e.field = removed.as_written(&e.field);
        let at = removed.as_written(&at);
        // A required field of a map something was left out of: only a consequence.
        let consequence = left_out.iter().any(|gone: &String| {
            gone.strip_prefix(&e.field)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        });
        if !consequence && e != first && first.more.len() + 1 < MAX_PROBLEMS {
            first.more.push(e);
        }
        removed.note(&at);
        left_out.push(at);
        if left_out.len() > 2 * MAX_PROBLEMS {
            break;
        }
        next = decode_once(&object).err();
    }
    Err(first)
}

/// The list items [`decode`] left out, by list path as written: to name a field of the object
/// read again (`spec.rollout.steps[1].weight` once `steps[0]` is left out) by its index as
/// written (`spec.rollout.steps[2].weight`).
#[derive(Default)]
struct Removed(Vec<(String, usize)>);

impl Removed {
    /// Records `at` (a path as written) when it is a list item.
    fn note(&mut self, at: &str) {
        if let Some((list, i)) = list_item(at) {
            self.0.push((list.to_owned(), i));
        }
    }

    /// `field` (a path in the object read again) as written: each index counts the items left
    /// out before it.
    fn as_written(&self, field: &str) -> String {
        let mut written = String::new();
        for (n, step) in field.split('.').enumerate() {
            if n > 0 {
                written.push('.');
            }
            let (key, indexes) = step.split_at(step.find('[').unwrap_or(step.len()));
            written.push_str(key);
            for index in indexes.split(']').filter(|i| !i.is_empty()) {
                let Ok(mut i) = index.trim_start_matches('[').parse::<usize>() else {
                    written.push_str(index);
                    written.push(']');
                    continue;
                };
                let mut gone: Vec<usize> = self
                    .0
                    .iter()
                    .filter(|(list, _)| *list == written)
                    .map(|(_, at)| *at)
                    .collect();
                gone.sort_unstable();
                for at in gone {
                    if at <= i {
                        i += 1;
                    }
                }
                let _ = write!(written, "[{i}]");
            }
        }
        written
    }
}

/// `(list, index)` of a path naming a list item (`spec.route.hosts[1]`), else `None`.
fn list_item(path: &str) -> Option<(&str, usize)> {
    let (list, index) = path.strip_suffix(']')?.rsplit_once('[')?;
    Some((list, index.parse().ok()?))
}

/// Removes the field of `spec` at `field` (a list item: that item alone) from `object`; the path
/// removed, or `None` when `field` is not under `spec` or is not there.
fn leave_out(object: &mut Value, field: &str) -> Option<String> {
    let path = field.strip_prefix("spec.")?;
    if let Some((list, i)) = list_item(path) {
        let mut items = &mut object["spec"];
        for step in list.split('.') {
            items = walk(items, step)?;
        }
        let items = items.as_array_mut()?;
        if i >= items.len() {
            return None;
        }
        items.remove(i);
        return Some(format!("spec.{path}"));
    }
    let (parent, key) = match path.rsplit_once('.') {
        Some((parent, key)) => (Some(parent), key),
        None => (None, path),
    };
    let mut map = &mut object["spec"];
    for step in parent.iter().flat_map(|p| p.split('.')) {
        map = walk(map, step)?;
    }
    let map = map.as_object_mut()?;
    if path == "deployment" {
        // Required, and `spec` cannot be left out: any string reads, and `check` says no more.
        *map.get_mut(key)? = Value::String(String::new());
    } else {
        map.remove(key)?;
    }
    Some(format!("spec.{path}"))
}

/// The value at one step of a path (`rollout`, `checks[2]`) under `value`.
fn walk<'v>(value: &'v mut Value, step: &str) -> Option<&'v mut Value> {
    let (key, indexes) = match step.find('[') {
        Some(at) => (&step[..at], &step[at..]),
        None => (step, ""),
    };
    let mut value = value.as_object_mut()?.get_mut(key)?;
    for index in indexes.split(']').filter(|i| !i.is_empty()) {
        let i: usize = index.trim_start_matches('[').parse().ok()?;
        value = value.as_array_mut()?.get_mut(i)?;
    }
    Some(value)
}

/// One reading of `object`: the first field that does not decode.
fn decode_once(object: &Value) -> Result<TrafficShift, DecodeError> {
    let mut lines = Lines::default();
    lines.value(object, "", 0, "");
    lines.text.push('\n');
    serde_json::from_str(&lines.text).map_err(|e| {
        let field = e
            .line()
            .checked_sub(1)
            .and_then(|i| lines.paths.get(i))
            .cloned()
            .unwrap_or_default();
        let full = e.to_string();
        let position = format!(" at line {} column {}", e.line(), e.column());
        let mut reason = full.strip_suffix(&position).unwrap_or(&full).to_owned();
        // As a spec file's error says it (trial 18, T17): `onInconclusive: pause` → `Pause`.
        if let Some(meant) = crossfade_proxy::de::suggestion(&reason) {
            reason = format!("{reason}; did you mean `{meant}`?");
        }
        DecodeError {
            field,
            reason,
            more: Vec::new(),
        }
    })
}

/// JSON text with one field or item per line, and the field path of each line.
#[derive(Default)]
struct Lines {
    text: String,
    /// `paths[i]` is the path of line `i + 1`.
    paths: Vec<String>,
}

impl Lines {
    /// Writes `value` at `path`, the current line already holding `prefix` (its key, if any);
    /// `tail` (a comma or nothing) ends its last line.
    fn value(&mut self, value: &Value, path: &str, depth: usize, tail: &str) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                self.line(path, "{");
                for (i, (key, item)) in map.iter().enumerate() {
                    let child = join(path, key);
                    let key = Value::String(key.clone()).to_string();
                    self.start(depth + 1, &format!("{key}: "));
                    self.value(item, &child, depth + 1, comma(i, map.len()));
                }
                self.start(depth, "}");
                self.line(path, tail);
            }
            Value::Array(items) if !items.is_empty() => {
                self.line(path, "[");
                for (i, item) in items.iter().enumerate() {
                    self.start(depth + 1, "");
                    self.value(
                        item,
                        &format!("{path}[{i}]"),
                        depth + 1,
                        comma(i, items.len()),
                    );
                }
                self.start(depth, "]");
                self.line(path, tail);
            }
            scalar => self.line(path, &format!("{scalar}{tail}")),
        }
    }

    /// Begins a line: indentation and `text`.
    fn start(&mut self, depth: usize, text: &str) {
        let _ = write!(self.text, "{:width$}{text}", "", width = 2 * depth);
    }

    /// Ends the current line with `text`; it belongs to `path`.
    fn line(&mut self, path: &str, text: &str) {
        self.text.push_str(text);
        self.text.push('\n');
        self.paths.push(path.to_owned());
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn comma(i: usize, len: usize) -> &'static str {
    if i + 1 < len {
        ","
    } else {
        ""
    }
}

#[cfg(test)]
mod tests;
