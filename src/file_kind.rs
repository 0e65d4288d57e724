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

/// Every top-level key of the three kinds: a spec's (`RunSpec`), a proxy config's
/// (`ProxyConfig`) and a rollout file's (`green`, `rollout`, both also a spec's). A key written
/// that is none of them is read as the one it was most likely meant to be ([`meant`]); the test
/// `the_known_keys_are_those_the_parsers_accept` keeps the list in step with the types.
const KNOWN_KEYS: [&str; 19] = [
    "listen",
    "admin",
    "route",
    "blue",
    "green",
    "rollout",
    "via",
    "state_file",
    "port_range",
    "drain_grace",
    "routes",
    "trust_forwarded_for",
    "proxy_protocol",
    "drain_timeout",
    "limits",
    "tls",
    "upstream",
    "access_log",
    "request_id",
];

/// The known top-level key `key` is or was most likely meant to be: itself when known, else the
/// known key equal to it but for letter case (`Routes`), else one a small edit away (`rotues`), by
/// the rule of the parsers' "did you mean" ([`crossfade_proxy::de::closest`]), so that the kind a
/// file is told to be and the key its parser suggests agree (trial 17, T10: `Routes:` made
/// `check` read a proxy config as a spec and suggest `route`). `None` when nothing is close.
fn meant(key: &str) -> Option<&'static str> {
    KNOWN_KEYS
        .iter()
        .find(|k| **k == key)
        .copied()
        .or_else(|| crossfade_proxy::de::closest(key, KNOWN_KEYS))
}

/// The kind `text` looks like by its top-level keys ([`top_level_keys`]), or `None` when no key
/// marks a kind: `routes` (or a `route` that is a list) marks a proxy config; `route` or `blue`
/// a spec; then the same keys mistyped or mis-cased ([`meant`]: `Routes`, `Blue`; a key written
/// exactly wins over a near miss); then `state_file`, `listen` or `admin` a spec too (a proxy
/// config always has `routes`); and `green` or `rollout` alone a rollout file. A file that does
/// not parse (a YAML syntax error, a duplicate key) is told by the keys its lines start with, so
/// that its own parser reports the real error (trial 8, H3: `check` called a broken proxy
/// config a spec with "unknown field `routes`").
pub fn guess(text: &str) -> Option<Kind> {
    let keys = top_level_keys(text);
    let lists = listed_keys(text);
    // The kind a key marks, if any, given the key it stands for and whether its value is a list.
    let marks = |key: &str, list: bool| match key {
        "routes" => Some(Kind::ProxyConfig),
        // A spec's `route` is one map; a list is a proxy config's `routes:` mistyped (trial 11, L11).
        "route" if list => Some(Kind::ProxyConfig),
        "route" | "blue" => Some(Kind::Spec),
        _ => None,
    };
    // Among the keys, a proxy config's mark decides first (as `routes` always did).
    let first = |near: bool| {
        let found: Vec<Kind> = keys
            .iter()
            .filter_map(|k| {
                let key = if near {
                    meant(k).filter(|m| *m != k.as_str())?
                } else {
                    k.as_str()
                };
                marks(key, lists.contains(k))
            })
            .collect();
        found
            .iter()
            .find(|kind| **kind == Kind::ProxyConfig)
            .or(found.first())
            .copied()
    };
    let has = |key: &str| keys.iter().any(|k| meant(k) == Some(key));
    first(false).or_else(|| first(true)).or_else(|| {
        if ["state_file", "listen", "admin"].iter().any(|k| has(k)) {
            Some(Kind::Spec)
        } else if has("green") || has("rollout") {
            Some(Kind::Rollout)
        } else {
            None
        }
    })
}

/// The top-level keys of `text` whose value is a list (empty when `text` does not parse as a map).
fn listed_keys(text: &str) -> Vec<String> {
    serde_yaml_ng::from_str::<serde_yaml_ng::Mapping>(text)
        .map(|map| {
            map.iter()
                .filter(|(_, v)| v.is_sequence())
                .filter_map(|(k, _)| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
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

/// What `text` is when it is plainly one of crossfade's settings files (a spec, a proxy config, a
/// rollout file, by [`guess`]): it has a key only they have (`routes`, `route`, `blue`, `green`,
/// `rollout`), and not a state document's `version`. For the error of a `state_file` that names
/// one (trial 19: `state_file:` naming the config itself was called a corrupt state file, and the
/// operator told to remove it to start afresh); a file that merely has a `listen:` is left to be
/// the corrupt state it may be.
pub fn settings_file(text: &str) -> Option<&'static str> {
    let keys = top_level_keys(text);
    let marked = ["routes", "route", "blue", "green", "rollout"];
    if keys.iter().any(|k| k == "version") || !keys.iter().any(|k| marked.contains(&k.as_str())) {
        return None;
    }
    guess(text).map(Kind::described)
}

/// One of crossfade's two state documents (a `state_file`'s JSON), to name the one a command was
/// given when it is the other command's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateKind {
    /// `crossfade run`'s: the route's active slot and workload, its rollouts (a string `route`).
    Run,
    /// `crossfade proxy`'s: the weights in force per route (an object `routes`).
    Proxy,
}

impl StateKind {
    /// What the file is, as an error says it.
    pub fn described(self) -> &'static str {
        match self {
            StateKind::Run => "the state file of a `crossfade run` (its rollouts)",
            StateKind::Proxy => "the state file of a `crossfade proxy` (its routes' weights)",
        }
    }
}

/// Which state document `text` is by its shape: a JSON object with a `version` and a string
/// `route` is a `crossfade run`'s, one with a `version` and an object `routes` a `crossfade
/// proxy`'s; `None` for anything else (corrupt state, which its own error describes). For the
/// error of a `state_file` that names the other command's file (newuser 33: it was called
/// corrupt, and the operator told to remove it and its backup, the other process's state).
pub fn state_kind(text: &str) -> Option<StateKind> {
    let doc: serde_json::Value = serde_json::from_str(text).ok()?;
    let doc = doc.as_object().filter(|d| d.contains_key("version"))?;
    if doc.get("route").is_some_and(serde_json::Value::is_string) {
        Some(StateKind::Run)
    } else if doc.get("routes").is_some_and(serde_json::Value::is_object) {
        Some(StateKind::Proxy)
    } else {
        None
    }
}

/// Top-level keys of a proxy config's settings, which a `crossfade proxy --kube --config FILE`
/// settings file holds without `routes:` (a spec has them too, beside keys of its own).
const PROXY_SETTINGS_ONLY: [&str; 8] = [
    "trust_forwarded_for",
    "proxy_protocol",
    "drain_timeout",
    "limits",
    "tls",
    "upstream",
    "access_log",
    "request_id",
];

/// Top-level keys only a spec or a rollout file has.
const SPEC_ONLY: [&str; 5] = ["route", "blue", "green", "rollout", "port_range"];

/// Whether `text` is the settings file of `crossfade proxy --kube --config FILE`: a proxy
/// config's keys without `routes:` (the routes come from the cluster), told by at least one key
/// only a proxy config has (`limits`, `upstream`, `tls`, ...; or a near miss of one, [`meant`])
/// and none that marks a spec, a rollout file or a proxy config's routes. Trial 25: `crossfade
/// check` read deploy/examples/sidecar.yaml's settings as a spec (`unknown field
/// `drain_timeout``), with no word of what the file was.
pub fn kube_settings(text: &str) -> bool {
    let keys: Vec<&str> = top_level_keys(text)
        .iter()
        .filter_map(|k| meant(k))
        .collect();
    keys.iter().any(|k| PROXY_SETTINGS_ONLY.contains(k))
        && !keys.iter().any(|k| *k == "routes" || SPEC_ONLY.contains(k))
}

/// Whether `text` has top-level keys and each is one that a spec and a proxy config both take
/// (`listen`, `admin`, `via`, `state_file`, or a near miss of one, [`meant`]), so that it may be
/// either with its defining key (`blue:`, `routes:`) left out.
fn shared_keys_only(text: &str) -> bool {
    let keys = top_level_keys(text);
    !keys.is_empty()
        && keys.iter().all(|k| {
            meant(k).is_some_and(|k| ["listen", "admin", "via", "state_file"].contains(&k))
        })
}

/// The hint for a `--kube --config` settings file given where `wanted` is expected.
fn kube_settings_hint(wanted: Kind) -> String {
    format!(
        "(this looks like the settings file of `crossfade proxy --kube --config FILE`: a proxy \
         config's keys without `routes:`, which `crossfade check` checks as such; {})",
        wanted.takes()
    )
}

/// Whether `text` is a state document (`crossfade run`'s `state_file`): a map with the keys only
/// it has, `active_pids` or `last_rollout_id`. Its `route` key would otherwise make [`guess`]
/// call it a spec (trial 22: `crossfade proxy state.json` was told it looked like a rollout
/// spec for `crossfade run`).
fn state_document(text: &str) -> bool {
    top_level_keys(text)
        .iter()
        .any(|k| k == "active_pids" || k == "last_rollout_id")
}

/// The kinds of the Kubernetes objects `text` holds (`ServiceAccount, Role, RoleBinding`) when it
/// is a Kubernetes manifest: one or more YAML documents whose top-level keys include both
/// `apiVersion` and `kind`, read from the lines (a manifest is often several documents, which
/// no crossfade parser reads). `None` for anything else. Session 41: `crossfade run
/// deploy/examples/sidecar.yaml` was told it looked like a proxy config (its RBAC `rules:` read
/// as a near miss of `routes:`), and `check` called it an invalid proxy config.
pub fn kubernetes_kinds(text: &str) -> Option<String> {
    let top = |line: &str, key: &str| -> Option<String> {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let value = rest.split(" #").next().unwrap_or(rest).trim();
        Some(value.trim_matches(['"', '\'']).to_owned())
    };
    let mut versioned = false;
    let mut kinds: Vec<String> = Vec::new();
    for line in text.lines() {
        versioned |= top(line, "apiVersion").is_some_and(|v| !v.is_empty());
        if let Some(kind) = top(line, "kind").filter(|k| !k.is_empty()) {
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
    }
    (versioned && !kinds.is_empty()).then(|| kinds.join(", "))
}

/// The kubectl command that takes a manifest of `kinds` ([`kubernetes_kinds`]): `kubectl apply
/// -k` for a kustomization, else `kubectl apply -f`.
pub fn kubectl_for(kinds: &str) -> &'static str {
    if kinds == "Kustomization" {
        "`kubectl apply -k` (its directory)"
    } else {
        "`kubectl apply -f`"
    }
}

/// The hint for a Kubernetes manifest ([`kubernetes_kinds`]) given where `wanted` is expected.
fn kubernetes_hint(kinds: &str, wanted: Kind) -> String {
    format!(
        "(this looks like a Kubernetes manifest ({kinds}), which {} takes, not crossfade; {})",
        kubectl_for(kinds),
        wanted.takes()
    )
}

/// `error` with a hint appended when it is an unknown-field error and `text` looks like another
/// kind of file than `wanted`: `... unknown field `listen`, expected `green` or `rollout` (this
/// looks like a rollout spec for `crossfade run`; `migrate` takes a file with `green:` and
/// optional `rollout:`)`; a state file given for any of them is called one, and so is a migrate
/// file given to `run`, which a spec's `blue: missing` refuses, and a Kubernetes manifest
/// ([`kubernetes_kinds`]). Any other error is returned as it is.
pub fn with_hint(error: String, text: &str, wanted: Kind) -> String {
    if let Some(kinds) = kubernetes_kinds(text).filter(|_| error.contains("unknown field")) {
        return format!("{error}\n{}", kubernetes_hint(&kinds, wanted));
    }
    // A proxy config without routes is refused naming `routes`, not an unknown field; a spec
    // without `blue:` (the settings' keys are all a spec's since it took `drain_timeout`), for
    // the `blue` it lacks.
    if kube_settings(text)
        && (error.contains("unknown field")
            || (wanted == Kind::ProxyConfig && error.contains("routes: no route"))
            || (wanted == Kind::Spec && error.contains("blue: missing")))
    {
        return format!("{error}\n{}", kube_settings_hint(wanted));
    }
    // A migrate file's keys are all a spec's too: `run` refuses it for the `blue:` it lacks, not
    // for an unknown field, and said no more (session 40).
    if wanted == Kind::Spec && error.contains("blue: missing") && guess(text) == Some(Kind::Rollout)
    {
        return looks_like(error, Kind::Rollout, wanted);
    }
    // Keys that a spec and a proxy config both take (`listen:`, `admin:`) and nothing else: a
    // spec without `blue:` or a proxy config without `routes:`, and `check` cannot tell which
    // (session 44: a proxy config that forgot `routes:` was told only of a spec's `blue:`).
    if wanted == Kind::Spec && error.contains("blue: missing") && shared_keys_only(text) {
        return format!(
            "{error}\n(a spec for `crossfade run` needs `blue:`; if this is a proxy config for \
             `crossfade proxy`, it has no `routes:`, and a proxy config needs at least one route)"
        );
    }
    if !error.contains("unknown field") {
        return error;
    }
    if state_document(text) {
        return format!(
            "{error}\n(this looks like a state file, which `crossfade run` writes where its spec's \
             `state_file:` says and `crossfade report --state FILE` reads; {})",
            wanted.takes()
        );
    }
    match guess(text) {
        Some(kind) if kind != wanted => looks_like(error, kind, wanted),
        _ => match unknown_field(&error).filter(|f| SPEC_ONLY_KEYS.contains(f)) {
            // Two drains share the name: the spec's top-level one is the proxy's, and the one a
            // migrate file most likely meant is the retiring backend's, which it takes under
            // `rollout:` (check34: the hint below sent it to the spec's proxy drain alone).
            Some("drain_timeout") if wanted == Kind::Rollout => format!(
                "{error}\n(a migrate file takes the retiring backend's drain for this rollout as \
                 `rollout: {{ drain_timeout: ... }}`; a top-level `drain_timeout` is the spec's, \
                 the proxy's drain on shutdown, which `crossfade run` reads at its start)"
            ),
            // A rollout file with one of the spec's own keys (`port_range:`): say where it goes.
            Some(field) if wanted == Kind::Rollout => format!(
                "{error}\n(`{field}` is a key of the spec, which `crossfade run` reads at its \
                 start: set it there and restart `crossfade run`; a migrate file takes `green:` \
                 and `rollout:` only)"
            ),
            _ => error,
        },
    }
}

/// `error` with the hint that the file looks like `kind` and what the command that wants `wanted`
/// takes.
fn looks_like(error: String, kind: Kind, wanted: Kind) -> String {
    format!(
        "{error}\n(this looks like {}; {})",
        kind.described(),
        wanted.takes()
    )
}

/// The keys of a spec that a migrate file does not take (a `RunSpec`'s fields but `green` and
/// `rollout`).
const SPEC_ONLY_KEYS: [&str; 16] = [
    "listen",
    "admin",
    "route",
    "blue",
    "state_file",
    "via",
    "port_range",
    "drain_timeout",
    "drain_grace",
    "upstream",
    "trust_forwarded_for",
    "proxy_protocol",
    "limits",
    "tls",
    "access_log",
    "request_id",
];

/// The field an `unknown field `x`, expected ...` error (serde's words) names.
fn unknown_field(error: &str) -> Option<&str> {
    let rest = error.split_once("unknown field `")?.1;
    Some(rest.split_once('`')?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trial 19: a `state_file` naming a settings file is told from a damaged state document.
    #[test]
    fn a_settings_file_is_told_from_a_state_document() {
        let spec = "listen: 127.0.0.1:1\nroute: { name: web }\nblue: {}\n";
        assert_eq!(
            settings_file(spec),
            Some("a rollout spec for `crossfade run`")
        );
        let state = r#"{"version": 1, "route": "web", "active_pids": []}"#;
        assert_eq!(
            settings_file(state),
            None,
            "a state document of another shape"
        );
        assert_eq!(
            settings_file("{\n  \"version\": 1,\n  \"route\": \"we"),
            None
        );
        assert_eq!(settings_file(""), None);
        assert_eq!(
            settings_file("listen: 1\n"),
            None,
            "no key only settings have"
        );
    }

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

    /// Trial 17, T10: a kind's marking key mis-cased or mistyped marks the kind it was meant for,
    /// as its parser's "did you mean" says, also when the file does not parse; a key written
    /// exactly wins over a near miss.
    #[test]
    fn a_near_miss_of_a_marking_key_marks_the_kind_it_was_meant_for() {
        let routes = "\n  - name: web\n    blue: {endpoints: [127.0.0.1:1]}\n";
        for key in ["Routes", "ROUTES", "rotues", "Route", "ROUTE"] {
            let text = format!("listen: 127.0.0.1:1\nadmin: 127.0.0.1:2\n{key}:{routes}");
            assert_eq!(guess(&text), Some(Kind::ProxyConfig), "{key}");
            if !key.eq_ignore_ascii_case("route") {
                // Told by its lines (a `route` list is told only once the file parses).
                let broken = format!("{text}  bogus\n");
                assert_eq!(
                    guess(&broken),
                    Some(Kind::ProxyConfig),
                    "{key}, not parsing"
                );
            }
        }
        for key in ["Route", "ROUTE", "Blue", "BLUE", "bleu"] {
            let text = format!("listen: 127.0.0.1:1\n{key}: {{name: web}}\n");
            assert_eq!(guess(&text), Some(Kind::Spec), "{key}");
        }
        assert_eq!(guess("Green: {}\n"), Some(Kind::Rollout));
        assert_eq!(guess("green: {}\nRollout: {}\n"), Some(Kind::Rollout));
        // Exact beats near: a spec with `blue:` and a stray `Routes:` is a spec.
        assert_eq!(
            guess(&format!("blue: {{}}\nRoutes:{routes}")),
            Some(Kind::Spec)
        );
        // A proxy config's `state_file` (a key both kinds have) does not make it a spec.
        assert_eq!(
            guess(&format!("state_file: s.json\nRoutes:{routes}")),
            Some(Kind::ProxyConfig)
        );
        assert_eq!(meant("Limits"), Some("limits"));
        assert_eq!(meant("bogus"), None);
    }

    /// [`KNOWN_KEYS`] is the union of the top-level keys the three parsers accept (each lists
    /// them when it refuses an unknown one).
    #[test]
    fn the_known_keys_are_those_the_parsers_accept() {
        let listed = |error: String| -> Vec<String> {
            let (_, expected) = error.split_once("expected").expect("a field list");
            let expected = expected.split(" at line").next().unwrap_or(expected);
            expected
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect()
        };
        let probe = "no_such_field_probe: 1\n";
        let spec = listed(
            crossfade_controller::spec::RunSpec::from_yaml(probe)
                .unwrap_err()
                .to_string(),
        );
        let proxy = listed(
            crossfade_proxy::config::ProxyConfig::from_yaml(probe)
                .unwrap_err()
                .to_string(),
        );
        let rollout = listed(
            crossfade_controller::service::StartRequest::read(probe)
                .expect_err("an unknown field")
                .to_string(),
        );
        let mut all: Vec<String> = spec.into_iter().chain(proxy).chain(rollout).collect();
        all.sort();
        all.dedup();
        let mut known: Vec<String> = KNOWN_KEYS.iter().map(|k| (*k).to_owned()).collect();
        known.sort();
        assert_eq!(all, known);
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

    /// Trial 22: a state file given to `run`, `check`, `proxy` or `migrate` is called one, not
    /// a rollout spec (its `route` key made it look like one) nor left without a hint.
    #[test]
    fn a_state_file_given_as_settings_is_called_a_state_file() {
        let state = "{\n  \"version\": 1,\n  \"route\": \"web\",\n  \"active\": \"green\",\n  \"active_pids\": [4242],\n  \"last_rollout_id\": 1,\n  \"events\": []\n}\n";
        let error = "unknown field `version`, expected one of `listen`, ...".to_owned();
        for (wanted, takes) in [
            (Kind::Spec, "`run` takes"),
            (Kind::ProxyConfig, "`proxy` takes"),
            (Kind::Rollout, "`migrate` takes"),
        ] {
            let hinted = with_hint(error.clone(), state, wanted);
            assert!(
                hinted.contains("(this looks like a state file, which `crossfade run` writes"),
                "{hinted}"
            );
            assert!(hinted.contains(takes), "{hinted}");
            assert!(!hinted.contains("rollout spec for"), "{hinted}");
        }
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
        // newuser33 B: a rollout file with one of the spec's keys is told where that key goes.
        let error =
            "unknown field `port_range`, expected `green` or `rollout` at line 2".to_owned();
        let text = "green: {}\nport_range: 25000-25010\n";
        let hinted = with_hint(error.clone(), text, Kind::Rollout);
        assert!(
            hinted.contains(
                "(`port_range` is a key of the spec, which `crossfade run` reads at its start"
            ),
            "{hinted}"
        );
        // A top-level drain_timeout in a migrate file is pointed at `rollout.drain_timeout`, the
        // retiring backend's drain a migrate file takes, not only at the spec's proxy drain.
        let error =
            "unknown field `drain_timeout`, expected `green` or `rollout` at line 2".to_owned();
        let text = "green: {}\ndrain_timeout: 10s\n";
        let hinted = with_hint(error.clone(), text, Kind::Rollout);
        assert!(
            hinted.contains("`rollout: { drain_timeout: ... }`"),
            "{hinted}"
        );
        assert!(hinted.contains("the proxy's drain on shutdown"), "{hinted}");
        let typo = "unknown field `gren`, expected `green` or `rollout`".to_owned();
        assert_eq!(with_hint(typo.clone(), "gren: {}", Kind::Rollout), typo);
        let other = "blue.instances: 0 is below 1".to_owned();
        assert_eq!(with_hint(other.clone(), spec, Kind::ProxyConfig), other);
    }

    /// Trial 25: the settings of `crossfade proxy --kube --config` (deploy/examples/sidecar.yaml's
    /// ConfigMap) are told from a spec, a proxy config and a rollout file.
    #[test]
    fn a_file_of_shared_keys_only_missing_blue_may_be_a_proxy_config_missing_routes() {
        let error = || "blue: missing".to_owned();
        let hinted = with_hint(
            error(),
            "listen: 127.0.0.1:1\nadmin: 127.0.0.1:2\n",
            Kind::Spec,
        );
        assert!(
            hinted.starts_with("blue: missing\n")
                && hinted.contains(
                    "if this is a proxy config for `crossfade proxy`, it has no `routes:`"
                ),
            "{hinted}"
        );
        // A file with a spec's own key is a spec without `blue:`, nothing more to say.
        let spec = "listen: 127.0.0.1:1\nroute: { name: web }\n";
        assert_eq!(with_hint(error(), spec, Kind::Spec), error());
        assert_eq!(with_hint(error(), "", Kind::Spec), error());
    }

    #[test]
    fn kube_settings_are_a_proxy_configs_keys_without_routes() {
        for settings in [
            "drain_timeout: 30s\nlimits: { max_connections: 256 }\n",
            "listen: 0.0.0.0:8080\ntls: { cert: c, key: k }\n",
            "limit: {}\n",
            "state_file: w.json\nupstream: {}\n",
        ] {
            assert!(kube_settings(settings), "{settings}");
        }
        for other in [
            "routes: []\nlimits: {}\n",
            "listen: 127.0.0.1:1\nadmin: 127.0.0.1:2\n",
            "route: { name: web }\nblue: {}\nlimits: {}\n",
            "green: {}\nupstream: {}\n",
            "",
        ] {
            assert!(!kube_settings(other), "{other}");
        }
        let error = "routes: no route: a proxy config needs at least one route".to_owned();
        let hinted = with_hint(error, "limits: {}\n", Kind::ProxyConfig);
        assert!(
            hinted.contains("`crossfade proxy --kube --config FILE`"),
            "{hinted}"
        );
    }

    /// Session 41: a Kubernetes manifest (several documents, RBAC `rules:` a near miss of
    /// `routes:`) is told as one, with its kinds, and its hint wins over the near miss.
    #[test]
    fn a_kubernetes_manifest_is_told_with_its_kinds() {
        let manifest = "# a comment\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\n\
                        ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: \"Role\"\nrules: []\n\
                        ---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: b\n";
        assert_eq!(
            kubernetes_kinds(manifest).as_deref(),
            Some("ServiceAccount, Role")
        );
        let error = "spec does not parse: unknown field `apiVersion`, expected ...".to_owned();
        let hinted = with_hint(error, manifest, Kind::Spec);
        assert!(
            hinted.ends_with(
                "(this looks like a Kubernetes manifest (ServiceAccount, Role), which `kubectl \
                 apply -f` takes, not crossfade; `run` takes a spec with `route:`, `blue:` and \
                 optional `green:` and `rollout:`)"
            ),
            "{hinted}"
        );
        assert_eq!(
            kubernetes_kinds("kind: x\nroutes: []\n"),
            None,
            "no apiVersion"
        );
        assert_eq!(kubernetes_kinds("route: {name: web}\n  kind: x\n"), None);
        assert_eq!(
            kubectl_for("Kustomization"),
            "`kubectl apply -k` (its directory)"
        );
    }
}
