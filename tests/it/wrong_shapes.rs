//! Trial finding F8: a value of the wrong shape, wherever a user writes one, is refused naming its
//! field and what the field takes, in the user's words: no Rust type or path (`u64`, `Duration`,
//! `struct RunSpec`, `crossfade_controller::...`) in any message.
//!
//! Each surface is walked key by key with values of every shape (a list, a map, a negative, a
//! fraction, a boolean, `null`, a word, a number too large for any integer, an empty string):
//! - the rollout spec: every key docs/spec.md lists (`crossfade run`, `crossfade check`);
//! - the body of `POST /rollout` (its `green:` and `rollout:` keys) and of
//!   `PUT /routes/NAME/weights`, over HTTP to a running `crossfade run`;
//! - the proxy config file (`crossfade proxy CONFIG`, `crossfade check`): every key of a config
//!   that sets them all, and every key it serializes;
//! - the `TrafficShift` resource: every property of the CRD's schema;
//! - every flag of every subcommand that takes a value, as `crossfade --help` lists them.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::time::Duration;

use crossfade_controller::kube::crd::TrafficShift;
use crossfade_controller::spec::{RunSpec, SpecError};
use crossfade_proxy::config::{ConfigError, ProxyConfig};
use kube::CustomResourceExt;
use serde_json::{json, Value};

use crate::support::{run_to_end, temp_dir, Admin, Crossfade, Spec};

/// Values of every shape, as JSON text (which is YAML too): a list, a map, a negative number, a
/// fraction, a boolean, `null`, a word, a number above any integer type, an empty string.
const SHAPES: [&str; 9] = [
    "[1]",
    "{\"a\": 1}",
    "-1",
    "1.5",
    "true",
    "null",
    "\"x\"",
    "99999999999999999999",
    "\"\"",
];

/// Stands for the bad value in a document until it is written as text.
const HOLE: &str = "\"@@wrong-shape@@\"";

/// One message a user got for a wrong value.
struct Seen {
    /// Where: `spec`, `POST /rollout`, `proxy config`, `TrafficShift`, `crossfade run`...
    surface: &'static str,
    /// The field as the user knows it (`rollout.hold`, `routes[0].health`, `--hold`).
    field: String,
    /// The value written.
    value: String,
    /// What the user was told.
    message: String,
    /// Whether the message must name `field`: a value refused for its shape. A value of the right
    /// shape that breaks a rule is named by the rule's own problem, possibly of another field.
    must_name: bool,
}

/// The Rust words in `message`: a path (`::` between identifiers, as in `std::time`; an IPv6
/// address such as `[::1]` is no path), a primitive type (`u64`, `f64`...), `struct `, `enum `,
/// `Duration`, `BTreeMap`, `Vec<`, `Option<`.
fn rust_words(message: &str) -> Vec<String> {
    let mut found: Vec<String> = [
        "struct ", "enum ", "Duration", "BTreeMap", "HashMap", "Vec<", "Option<",
    ]
    .iter()
    .filter(|w| message.contains(*w))
    .map(|w| (*w).to_owned())
    .collect();
    let bytes = message.as_bytes();
    let path = message.match_indices("::").any(|(at, _)| {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(at + 2).copied();
        before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
            && after.is_some_and(|a| a.is_ascii_alphabetic() || a == b'_')
    });
    if path {
        found.push("::".to_owned());
    }
    const PRIMITIVES: [&str; 14] = [
        "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize",
        "f32", "f64",
    ];
    found.extend(
        message
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .filter(|word| PRIMITIVES.contains(word))
            .map(str::to_owned),
    );
    found
}

/// The standard library's parse errors, which say what is wrong in a parser's words and not what
/// the field takes (`invalid digit found in string`, `invalid socket address syntax`), and serde
/// YAML's for a derived enum (`expected a YAML tag starting with '!'`, trial report H14).
const PARSER_WORDS: [&str; 6] = [
    "YAML tag",
    "invalid digit",
    "target type",
    "invalid socket address syntax",
    "invalid IP address syntax",
    "invalid float literal",
];

/// Whether `message` names `field`: as `field: ...`, or an entry of it (`field[0]...`); a flag
/// (`--hold`) anywhere.
fn names(message: &str, field: &str) -> bool {
    if field.starts_with("--") {
        return message.contains(field);
    }
    message.contains(&format!("{field}:")) || message.contains(&format!("{field}["))
}

/// Panics listing every message that shows a Rust word or a parser's, or, refusing a shape, does
/// not name its field.
fn assert_user_words(seen: &[Seen]) {
    let mut bad = Vec::new();
    for s in seen {
        let mut words = rust_words(&s.message);
        words.extend(
            PARSER_WORDS
                .iter()
                .filter(|w| s.message.contains(*w))
                .map(|w| (*w).to_owned()),
        );
        if !words.is_empty() {
            bad.push(format!(
                "{} {} = {}: Rust or parser words {words:?} in: {}",
                s.surface, s.field, s.value, s.message
            ));
        }
        // A value of the right shape in a map that lacks a required key is refused naming the
        // key that is missing (`rollout.gates[0]: missing field `url``), not the one written.
        let named = names(&s.message, &s.field) || s.message.contains("missing field");
        if s.must_name && !named {
            bad.push(format!(
                "{} {} = {}: the field is not named in: {}",
                s.surface, s.field, s.value, s.message
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} messages speak Rust or a parser's words, or do not name their field:\n{}",
        bad.len(),
        seen.len(),
        bad.join("\n")
    );
}

/// Sets `path` in `doc` to [`HOLE`]: dotted keys, `name[]` for the first entry of list `name`,
/// making maps and lists on the way (keeping what is there).
fn set_hole(doc: &mut Value, path: &str) {
    let mut at = doc;
    for key in path.split('.') {
        let (name, list) = match key.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (key, false),
        };
        if !at.is_object() {
            *at = json!({});
        }
        at = &mut at[name];
        if list {
            if at.as_array().is_none_or(|a| a.is_empty()) {
                *at = json!([{}]);
            }
            at = &mut at[0];
        }
    }
    *at = Value::String("@@wrong-shape@@".into());
}

/// `doc` as JSON text with `path` holding `shape` (written as is: a number too large for JSON's
/// own reader stays a number).
fn with_shape(doc: &Value, path: &str, shape: &str) -> String {
    let mut doc = doc.clone();
    set_hole(&mut doc, path);
    doc.to_string().replace(HOLE, shape)
}

/// How a field's path reads in a message: `rollout.steps[0].weight` for `rollout.steps[].weight`.
fn named(path: &str) -> String {
    path.replace("[]", "[0]")
}

/// Every key docs/spec.md lists (the first column of its tables), `blue.*` also as `green.*`, and
/// the keys of its shared `headers_from` section under a gate and under a web check.
fn spec_keys() -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/spec.md"))
        .expect("read docs/spec.md");
    let mut keys = BTreeSet::new();
    for line in doc.lines() {
        let Some(key) = line
            .strip_prefix("| `")
            .and_then(|rest| rest.split_once('`'))
            .map(|(key, _)| key)
        else {
            continue;
        };
        if key.starts_with("headers_from[]") {
            keys.insert(format!("rollout.gates[].{key}"));
            keys.insert(format!("rollout.analysis.checks[].web.{key}"));
            continue;
        }
        keys.insert(key.to_owned());
        if let Some(rest) = key.strip_prefix("blue") {
            keys.insert(format!("green{rest}"));
        }
    }
    assert!(keys.len() > 80, "docs/spec.md lists {} keys", keys.len());
    keys.into_iter().collect()
}

/// The smallest valid spec: blue on a static endpoint.
fn base_spec() -> Value {
    json!({ "blue": { "endpoints": ["127.0.0.1:9000"] } })
}

/// Every key of the spec with every shape, through the reader `crossfade run` and `crossfade
/// check` use.
#[test]
fn every_spec_key_refuses_a_wrong_shape_in_user_words() {
    let seen = walk(
        "spec",
        &base_spec(),
        &spec_keys(),
        |text| match RunSpec::from_yaml(text) {
            Ok(_) => None,
            Err(SpecError::Parse(message)) => Some((message, true)),
            Err(e @ SpecError::Invalid(_)) => Some((e.to_string(), false)),
        },
    );
    assert_user_words(&seen);
}

/// Every message `read` gives for `base` with each of `keys` holding each of [`SHAPES`]: `read`
/// answers `None` for a document it accepts, else the message and whether it refused a shape
/// (which must name the field) rather than broke a rule.
fn walk<'k>(
    surface: &'static str,
    base: &Value,
    keys: impl IntoIterator<Item = &'k String>,
    read: impl Fn(&str) -> Option<(String, bool)>,
) -> Vec<Seen> {
    let mut seen = Vec::new();
    for key in keys {
        for shape in SHAPES {
            if let Some((message, must_name)) = read(&with_shape(base, key, shape)) {
                seen.push(Seen {
                    surface,
                    field: named(key),
                    value: shape.into(),
                    message,
                    must_name,
                });
            }
        }
    }
    seen
}

/// A proxy config that sets every key (TLS files are not read by the parse).
const FULL_PROXY_CONFIG: &str = r#"
listen: 127.0.0.1:8080
admin: 127.0.0.1:9901
trust_forwarded_for: true
proxy_protocol: false
drain_timeout: 30s
drain_grace: 1s
access_log: /var/log/crossfade/access.log
limits:
  header_read_timeout: 10s
  body_read_timeout: 30s
  send_timeout: 60s
  expect_continue_timeout: 1s
  max_header_bytes: 65536
  max_connections: 10000
  max_requests: 10000
  retry_after: 1s
  max_admin_connections: 64
  tunnel_idle_timeout: 1h
  lingering_time: 30s
  lingering_timeout: 5s
  lingering_max_bytes: 1048576
  h2_keepalive_interval: 0s
  h2_keepalive_timeout: 20s
  h2_max_concurrent_streams: 128
  h2_max_premature_resets: 500
  http1_half_close: false
request_id: { header: X-Request-Id, keep_incoming: true, in_response: true }
tls: { cert: c.pem, key: k.pem, sni: [{ cert: s.pem, key: s.key }], watch_interval: 10s }
upstream:
  connect_timeout: 2s
  response_timeout: 30s
  idle_timeout: 4s
  max_idle_per_endpoint: 1024
  retry_budget: { ratio: 20, min_per_second: 10 }
  balance: { policy: p2c_peak_ewma, default_rtt: 30ms, decay: 10s }
routes:
  - name: web
    hosts: [example.com]
    sticky: { header: null, cookie: u, client_address: false, set: true }
    override_header: X-Crossfade-Backend
    path_prefix: /
    active: blue
    blue: { endpoints: [127.0.0.1:9000], weight: 100, protocol: http1 }
    green: { endpoints: [127.0.0.1:9001], weight: 0, protocol: h2c }
    health: { path: /healthz, interval: 1s, timeout: 500ms, rise: 2, fall: 2, host: example.com }
    outlier: { consecutive_failures: 3, consecutive_5xx: 0, base_ejection: 1s, max_ejection: 30s, decay_interval: 10s }
    breaker: { max_error_rate: 50, window: 1s, min_requests: 20 }
    fail_open: true
    response_timeout: 10s
    shadow:
      percent: 100
      compare_headers: [content-type]
      max_body_bytes: 1048576
      max_in_flight: 64
      timeout: 10s
      methods: [GET]
      ignore: { paths: [/a], body_paths: [/b] }
      log_per_minute: 6
    balance: { policy: round_robin, default_rtt: 30ms, decay: 10s }
"#;

/// Every key path of `value` (maps' keys, `[]` for a list's first entry), parents first.
fn key_paths(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let path = match prefix {
                    "" => key.clone(),
                    p => format!("{p}.{key}"),
                };
                out.insert(path.clone());
                key_paths(child, &path, out);
            }
        }
        Value::Array(items) => {
            if let Some(first) = items.first().filter(|f| f.is_object()) {
                let path = format!("{prefix}[]");
                key_paths(first, &path, out);
            }
        }
        _ => {}
    }
}

/// Every key of the proxy config with every shape, through the reader `crossfade proxy CONFIG`
/// (and its SIGHUP reload, and `crossfade check`) uses.
#[test]
fn every_proxy_config_key_refuses_a_wrong_shape_in_user_words() {
    let full: Value = serde_yaml_ng::from_str(FULL_PROXY_CONFIG).expect("the full config is YAML");
    let parsed = ProxyConfig::from_yaml(FULL_PROXY_CONFIG).expect("the full config is valid");
    let mut keys = BTreeSet::new();
    key_paths(&full, "", &mut keys);
    let written = serde_json::to_value(&parsed).expect("a config serializes");
    let mut serialized = BTreeSet::new();
    key_paths(&written, "", &mut serialized);
    let missing: Vec<&String> = serialized.difference(&keys).collect();
    assert!(
        missing.is_empty(),
        "keys FULL_PROXY_CONFIG leaves out: {missing:?}"
    );
    let base =
        json!({ "routes": [{ "name": "web", "blue": { "endpoints": ["127.0.0.1:9000"] } }] });
    let seen = walk(
        "proxy config",
        &base,
        &keys,
        |text| match ProxyConfig::from_yaml(text) {
            Ok(_) => None,
            Err(ConfigError::Parse(message)) => Some((message, true)),
            Err(e @ ConfigError::Invalid(_)) => Some((e.to_string(), false)),
        },
    );
    assert_user_words(&seen);
}

/// Every property path of a JSON schema (objects' `properties`, `[]` for `items`, `.key` for an
/// `additionalProperties` map).
fn schema_paths(schema: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let Some(properties) = schema["properties"].as_object() {
        for (key, child) in properties {
            let path = match prefix {
                "" => key.clone(),
                p => format!("{p}.{key}"),
            };
            out.insert(path.clone());
            schema_paths(child, &path, out);
        }
    }
    if schema["items"].is_object() {
        schema_paths(&schema["items"], &format!("{prefix}[]"), out);
    }
    if schema["additionalProperties"].is_object() {
        let path = format!("{prefix}.key");
        out.insert(path.clone());
        schema_paths(&schema["additionalProperties"], &path, out);
    }
}

/// Every property of the TrafficShift's spec with every shape. The API server's schema refuses
/// most of them first; what passes it (or an emulator without one) meets these readers.
#[test]
fn every_trafficshift_key_refuses_a_wrong_shape_in_user_words() {
    let crd = serde_json::to_value(TrafficShift::crd()).expect("the CRD serializes");
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut keys = BTreeSet::new();
    schema_paths(spec, "spec", &mut keys);
    assert!(keys.len() > 40, "the CRD's spec has {} keys", keys.len());
    let base = json!({
        "apiVersion": "crossfade.dev/v1alpha1",
        "kind": "TrafficShift",
        "metadata": { "name": "web", "namespace": "default" },
        "spec": { "deployment": "web", "images": { "web": "web:v2" } },
    });
    let mut seen = Vec::new();
    for key in &keys {
        for shape in SHAPES {
            let text = with_shape(&base, key, shape);
            // With its field path, as a YAML reader gives it (in the words every YAML surface
            // uses); and as the cluster client reads it, without a path.
            if let Err(e) = serde_yaml_ng::from_str::<TrafficShift>(&text) {
                seen.push(Seen {
                    surface: "TrafficShift",
                    field: named(key),
                    value: shape.into(),
                    message: crossfade_proxy::de::user_words(e),
                    must_name: true,
                });
            }
            if let Err(e) = serde_json::from_str::<TrafficShift>(&text) {
                seen.push(Seen {
                    surface: "TrafficShift (JSON)",
                    field: String::new(),
                    value: shape.into(),
                    message: e.to_string(),
                    must_name: false,
                });
            }
        }
    }
    assert_user_words(&seen);
}

/// The bodies of `POST /rollout` (every `green.*` and `rollout.*` key of the spec, every shape)
/// and `PUT /routes/web/weights`, over HTTP to a running `crossfade run`. No body starts a
/// rollout: each is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_body_refuses_a_wrong_shape_in_user_words() {
    let dir = temp_dir();
    let spec = Spec::new();
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(60)).await;
    // Two rules broken in two places, so that whichever key holds the value under test, the
    // request is refused: no instance, and no progress deadline.
    let base = json!({
        "green": { "command": "/nonexistent/crossfade-app", "args": ["{port}"], "instances": 0 },
        "rollout": { "progress_deadline": "0s" },
    });
    let mut seen = Vec::new();
    let keys = spec_keys();
    let body_keys = keys
        .iter()
        .filter(|k| k.starts_with("green") || k.starts_with("rollout"));
    for key in body_keys {
        for shape in SHAPES {
            let text = with_shape(&base, key, shape);
            let (status, answer) = admin
                .request_text("POST", "/rollout", &text)
                .await
                .expect("POST /rollout");
            assert_ne!(status, 202, "{key} = {shape} started a rollout: {answer}");
            let answer: Value = serde_json::from_str(&answer).expect("a JSON answer");
            let message = answer["error"].as_str().unwrap_or_default().to_owned();
            seen.push(Seen {
                surface: "POST /rollout",
                field: named(key),
                value: shape.into(),
                must_name: message.starts_with("request body: "),
                message,
            });
        }
    }
    for field in ["blue", "green"] {
        for shape in SHAPES {
            let text = with_shape(&json!({}), field, shape);
            let (status, answer) = admin
                .request_text("PUT", "/routes/web/weights", &text)
                .await
                .expect("PUT weights");
            if status == 200 {
                continue;
            }
            let answer: Value = serde_json::from_str(&answer).expect("a JSON answer");
            let message = answer["error"].as_str().unwrap_or_default();
            seen.push(Seen {
                surface: "PUT /routes/web/weights",
                field: field.into(),
                value: shape.into(),
                // The field is named in the answer's `field`, as the admin API documents.
                message: format!("{}: {message}", answer["field"].as_str().unwrap_or("?")),
                must_name: true,
            });
        }
    }
    run.terminate(Duration::from_secs(15)).await;
    assert_user_words(&seen);
}

/// Values for a flag: a word, a negative, a fraction, a number above any integer type, empty.
const FLAG_VALUES: [&str; 5] = ["x", "-1", "1.5", "99999999999999999999", ""];

/// The flags of `crossfade SUBCOMMAND` that take a value (`--hold <HOLD>`), from its `--help`.
async fn value_flags(subcommand: &str) -> Vec<String> {
    let help = run_to_end([subcommand, "--help"], Duration::from_secs(30)).await;
    help.stdout
        .lines()
        .map(str::trim_start)
        .filter_map(|line| {
            let flag = line
                .split(", ")
                .find(|part| part.starts_with("--"))
                .or_else(|| line.starts_with("--").then_some(line))?;
            let (name, rest) = flag.split_once(' ')?;
            rest.starts_with('<').then(|| name.to_owned())
        })
        .collect()
}

/// The subcommands `crossfade --help` lists.
async fn subcommands() -> Vec<String> {
    let help = run_to_end(["--help"], Duration::from_secs(30)).await;
    help.stdout
        .split("Commands:")
        .nth(1)
        .and_then(|rest| rest.split("Options:").next())
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// Every flag that takes a value, of every subcommand, with every value. A value the flag accepts
/// meets the unknown flag after it and nothing runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_flag_refuses_a_wrong_value_in_user_words() {
    let mut seen = Vec::new();
    let commands = subcommands().await;
    assert!(commands.len() > 10, "subcommands: {commands:?}");
    for command in commands {
        for flag in value_flags(&command).await {
            for value in FLAG_VALUES {
                let args: Vec<OsString> = [
                    command.as_str(),
                    &format!("{flag}={value}"),
                    "--no-such-flag-probe",
                ]
                .iter()
                .map(OsString::from)
                .collect();
                let out = run_to_end(&args, Duration::from_secs(30)).await;
                if out.stderr.contains("--no-such-flag-probe") {
                    continue;
                }
                seen.push(Seen {
                    surface: "flag",
                    field: flag.clone(),
                    value: format!("crossfade {command} {flag}={value}"),
                    message: out.stderr,
                    must_name: true,
                });
            }
        }
    }
    assert!(seen.len() > 20, "{} flags refused a value", seen.len());
    assert_user_words(&seen);
}

/// Runtry 30: `crossfade demo --help` read "0 to [`MAX_GREEN_LATENCY_MS`] (a minute)" and
/// "10^12 (30 years) was a typo that ran the whole demo (trial 19)": the flag's doc comment, a
/// rustdoc link and the project's own history, printed to the operator as they were. No help text
/// of any subcommand (`-h` or `--help`) holds a rustdoc link or a trial's or session's number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_texts_hold_no_rustdoc_link_and_no_project_history() {
    let commands = subcommands().await;
    assert!(commands.len() > 10, "subcommands: {commands:?}");
    let history = |text: &str| {
        let words: Vec<&str> = text.split_whitespace().collect();
        words.windows(2).any(|w| {
            let number = w[1].trim_end_matches(|c: char| !c.is_ascii_digit());
            ["trial", "session", "runtry"].contains(&w[0].to_ascii_lowercase().as_str())
                && !number.is_empty()
                && number.chars().all(|c| c.is_ascii_digit())
        })
    };
    for command in [String::new()].into_iter().chain(commands) {
        for flag in ["-h", "--help"] {
            let args: Vec<&str> = [command.as_str(), flag]
                .into_iter()
                .filter(|a| !a.is_empty())
                .collect();
            let help = run_to_end(args, Duration::from_secs(30)).await;
            let text = help.stdout;
            assert!(
                !text.contains("[`") && !history(&text),
                "crossfade {command} {flag}: a rustdoc link or the project's history:\n{text}"
            );
        }
    }
}

/// Trial 32 (newuser32, H): a bad value from a flag's environment variable was worded as if the
/// flag had been typed (`invalid value 'localhost:9901' for '--admin <ADMIN>'`), and the user
/// looked for a flag they never gave. It names the variable now; a typed flag keeps clap's words.
#[tokio::test]
async fn a_bad_value_from_an_environment_variable_names_the_variable() {
    use crate::support::child::run_to_end_with;
    let env = [("CROSSFADE_ADMIN", "localhost:9901")];
    let done = run_to_end_with(["status"], &env, Duration::from_secs(20)).await;
    assert_eq!(done.code, Some(2), "{}", done.stderr);
    assert!(
        done.stderr.contains(
            "CROSSFADE_ADMIN=localhost:9901 (the environment variable of --admin): \
             \"localhost:9901\" is not an address"
        ),
        "{}",
        done.stderr
    );
    let typed = run_to_end_with(
        ["status", "--admin", "localhost:1"],
        &env,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(typed.code, Some(2), "{}", typed.stderr);
    assert!(
        typed
            .stderr
            .contains("invalid value 'localhost:1' for '--admin <ADMIN>'"),
        "{}",
        typed.stderr
    );
}
