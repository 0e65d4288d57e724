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

/// The kind `text` looks like by its top-level keys, or `None` when it is not a YAML map or no
/// key marks a kind: `routes` marks a proxy config; `route`, `blue` or `state_file` a spec;
/// `listen` or `admin` with neither of those a spec too (a proxy config always has `routes`); and
/// `green` or `rollout` alone a rollout file.
pub fn guess(text: &str) -> Option<Kind> {
    let map: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(text).ok()?;
    let has = |key: &str| map.contains_key(key);
    if has("routes") {
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
        assert_eq!(
            guess("listen: 127.0.0.1:1\nroutes: []"),
            Some(Kind::ProxyConfig)
        );
        assert_eq!(guess("green: {}\nrollout: {}"), Some(Kind::Rollout));
        assert_eq!(guess("steps: [1]"), None);
        assert_eq!(guess("- a list"), None);
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
