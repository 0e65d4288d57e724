//! Which of crossfade's three YAML files a text is, to add a hint when a command is given the
//! wrong one: a rollout spec (`crossfade run`, `crossfade check`), a proxy config (`crossfade
//! proxy`), or a rollout file (`crossfade migrate`). Each parser refuses the others' keys as
//! unknown fields, which alone does not say what went wrong.

/// A kind of crossfade file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `crossfade run SPEC`: one `route:`, `blue:`, optional `green:` and `rollout:`.
    Spec,
    /// `crossfade proxy CONFIG`: `routes:` and the proxy's settings.
    ProxyConfig,
    /// `crossfade migrate FILE`: `green:` and optional `rollout:`, nothing else.
    Rollout,
}

impl Kind {
    /// What the file is and which command takes it, as a hint says it.
    fn described(self) -> &'static str {
        match self {
            Kind::Spec => "a rollout spec for `crossfade run`",
            Kind::ProxyConfig => "a proxy config for `crossfade proxy`",
            Kind::Rollout => "a rollout file for `crossfade migrate`",
        }
    }

    /// What the command that wants this kind takes.
    fn takes(self) -> &'static str {
        match self {
            Kind::Spec => {
                "`run` takes a spec with `route:`, `blue:` and optional `green:` and `rollout:`"
            }
            Kind::ProxyConfig => {
                "`proxy` takes a config with `routes:` (a list) and the proxy's settings"
            }
            Kind::Rollout => "`migrate` takes a file with `green:` and optional `rollout:`",
        }
    }
}

/// The kind `text` looks like by its top-level keys ([`top_level_keys`]), or `None` when no key
/// marks a kind: `routes` (or a `route` that is a list) marks a proxy config; `route`, `blue` or
/// `state_file` a spec; `listen` or `admin` with neither of those a spec too (a proxy config
/// always has `routes`); and `green` or `rollout` alone a rollout file. A file that does not parse (a YAML syntax error, a
/// duplicate key) is told by the keys its lines start with, so that its own parser reports the
/// real error (trial 8, H3: `check` called a broken proxy config a spec with "unknown field
/// `routes`").
pub fn guess(text: &str) -> Option<Kind> {
    let keys = top_level_keys(text);
    let has = |key: &str| keys.iter().any(|k| k == key);
    if has("routes") || route_is_a_list(text) {
        Some(Kind::ProxyConfig)
    } else if ["route", "blue", "state_file", "listen", "admin"]
        .iter()
        .any(|k| has(k))
    {
        Some(Kind::Spec)
    } else if has("green") || has("rollout") {
        Some(Kind::Rollout)
    } else {
        None
    }
}

/// Whether `text` is a YAML map whose `route` is a list: a spec's `route` is one map, so this is a
/// proxy config's `routes:` mistyped (trial 11, L11: `check` then reported it as a spec that does
/// not parse, while `crossfade proxy` said "did you mean `routes`").
fn route_is_a_list(text: &str) -> bool {
    serde_yaml_ng::from_str::<serde_yaml_ng::Mapping>(text)
        .ok()
        .and_then(|map| map.get("route").map(serde_yaml_ng::Value::is_sequence))
        .unwrap_or(false)
}

/// The keys of the top-level YAML map `text` holds, in file order. When `text` does not parse as a
/// map, the keys are read from the lines instead: a line starting at column 0 with `key:` (plain
/// or quoted, followed by a space or the line's end) names one; comments, list items and
/// document markers do not. Empty when neither finds a key (a list, a scalar, an empty file).
pub fn top_level_keys(text: &str) -> Vec<String> {
    if let Ok(map) = serde_yaml_ng::from_str::<serde_yaml_ng::Mapping>(text) {
        return map
            .keys()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect();
    }
    text.lines()
        .filter(|line| !line.starts_with([' ', '\t', '#', '-', '.', '%', '{', '[']))
        .filter_map(|line| {
            let (key, rest) = line.split_once(':')?;
            if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
                return None;
            }
            let key = key.trim_end();
            let key = key
                .strip_prefix('"')
                .and_then(|k| k.strip_suffix('"'))
                .or_else(|| key.strip_prefix('\'').and_then(|k| k.strip_suffix('\'')))
                .unwrap_or(key);
            (!key.is_empty()).then(|| key.to_owned())
        })
        .collect()
}

/// `error` with a hint appended when it is an unknown-field error and `text` looks like another
/// kind of file than `wanted`: `... unknown field `listen`, expected `green` or `rollout` (this
/// looks like a rollout spec for `crossfade run`; `migrate` takes a file with `green:` and
/// optional `rollout:`)`. Any other error is returned as it is.
pub fn with_hint(error: String, text: &str, wanted: Kind) -> String {
    if !error.contains("unknown field") {
        return error;
    }
    match guess(text) {
        Some(kind) if kind != wanted => {
            format!(
                "{error}\n(this looks like {}; {})",
                kind.described(),
                wanted.takes()
            )
        }
        _ => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_is_told_by_its_top_level_keys() {
        assert_eq!(guess("listen: 127.0.0.1:1\nblue: {}"), Some(Kind::Spec));
        assert_eq!(guess("route: {name: web}"), Some(Kind::Spec));
        // Trial 11, L11: `routes:` mistyped as `route:`, with its list.
        assert_eq!(
            guess("listen: 127.0.0.1:1\nroute:\n  - name: web\n"),
            Some(Kind::ProxyConfig)
        );
        assert_eq!(
            guess("listen: 127.0.0.1:1\nroutes: []"),
            Some(Kind::ProxyConfig)
        );
        assert_eq!(guess("green: {}\nrollout: {}"), Some(Kind::Rollout));
        assert_eq!(guess("steps: [1]"), None);
        assert_eq!(guess("- a list"), None);
    }

    /// Trial 8, H3: a proxy config with a YAML syntax error or a duplicate key is still a proxy
    /// config, so that `crossfade check` reports its real error and not "unknown field `routes`".
    #[test]
    fn a_file_that_does_not_parse_is_told_by_its_lines() {
        let syntax =
            "listen: 127.0.0.1:1\nroutes:\n  - name: web\n    blue: {endpoints: []}\n  bogus\n";
        assert!(serde_yaml_ng::from_str::<serde_yaml_ng::Mapping>(syntax).is_err());
        assert_eq!(guess(syntax), Some(Kind::ProxyConfig));
        let duplicate = "routes:\n  - name: web\n    shadow: {ignore: [a], ignore: [b]}\n";
        assert!(serde_yaml_ng::from_str::<serde_yaml_ng::Mapping>(duplicate).is_err());
        assert_eq!(guess(duplicate), Some(Kind::ProxyConfig));
        let unclosed = "# a comment: not a key\n\"routes\":\n  - name: [unclosed\n";
        assert_eq!(top_level_keys(unclosed), ["routes"]);
        let spec = "route: {name: web\nblue:\n  endpoints: [127.0.0.1:1]\n";
        assert_eq!(guess(spec), Some(Kind::Spec));
        // `http://x` is not a key: its colon is not followed by a space.
        assert!(top_level_keys("http://x\n- item: 1\n").is_empty());
    }

    #[test]
    fn a_hint_is_added_only_for_an_unknown_field_of_another_kind() {
        let spec = "listen: 127.0.0.1:1\nblue: {}";
        let error = "unknown field `listen`, expected `green` or `rollout`".to_owned();
        let hinted = with_hint(error.clone(), spec, Kind::Rollout);
        assert!(
            hinted.contains("this looks like a rollout spec for `crossfade run`; `migrate` takes"),
            "{hinted}"
        );
        assert_eq!(with_hint(error.clone(), "green: {}", Kind::Rollout), error);
        let other = "blue.instances: 0 is below 1".to_owned();
        assert_eq!(with_hint(other.clone(), spec, Kind::ProxyConfig), other);
    }
}
