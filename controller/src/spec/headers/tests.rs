//! `headers_from` in a spec: the sources it reads, relative files taken from the spec's
//! directory, and every bad one named by its field.

use std::path::Path;

use super::*;
use crate::spec::RunSpec;

const BLUE: &str = "blue: { endpoints: [127.0.0.1:9000] }\n";

fn problems(rollout: &str) -> Vec<String> {
    match RunSpec::from_yaml(&format!("{BLUE}{rollout}")) {
        Ok(_) => Vec::new(),
        Err(crate::spec::SpecError::Invalid(problems)) => {
            problems.iter().map(ToString::to_string).collect()
        }
        Err(e) => vec![e.to_string()],
    }
}

#[test]
fn headers_from_read_files_and_variables_and_relative_files_follow_the_spec() {
    let text = format!(
        r#"{BLUE}rollout:
  analysis:
    checks:
      - name: kpi
        min: 0.9
        web:
          url: https://kpi.example/rate
          json_path: $.rate
          headers: {{ X-Team: shop }}
          headers_from: [{{ name: Authorization, value_from: {{ file: secrets/kpi }} }}]
  gates:
    - name: approve
      at: before_promotion
      url: https://approve.example/ask
      headers_from:
        - {{ name: X-Token, value_from: {{ env: APPROVE_TOKEN }} }}
        - {{ name: X-Other, value_from: {{ file: /run/other }} }}
"#
    );
    let spec = RunSpec::load(&text, Path::new("/etc/crossfade")).expect("valid");
    let web = spec.rollout.analysis.checks[0].web.as_ref().expect("web");
    assert_eq!(web.headers["X-Team"], "shop");
    assert_eq!(
        web.headers_from,
        [HeaderFrom {
            name: "Authorization".into(),
            value_from: ValueFrom::File("/etc/crossfade/secrets/kpi".into()),
        }],
        "a relative file is taken from the spec's directory"
    );
    let gate = &spec.rollout.gates[0].headers_from;
    assert_eq!(gate[0].value_from, ValueFrom::Env("APPROVE_TOKEN".into()));
    assert_eq!(gate[1].value_from, ValueFrom::File("/run/other".into()));
    let lists: Vec<String> = spec
        .rollout
        .headers_from_lists()
        .into_iter()
        .map(|(at, list)| format!("{at}:{}", list.len()))
        .collect();
    assert_eq!(
        lists,
        ["rollout.analysis.checks[0].web:1", "rollout.gates[0]:2"]
    );
}

#[test]
fn bad_headers_from_are_refused_each_by_its_field() {
    let bad = r#"rollout:
  gates:
    - name: a
      at: before_step
      url: http://x
      headers: { authorization: t }
      headers_from:
        - { name: "bad header", value_from: { env: T } }
        - { name: Authorization, value_from: { env: "A=B" } }
        - { name: X-T, value_from: { file: "" } }
        - { name: x-t, value_from: { env: T } }
        - { name: X-S, value_from: { secret_key_ref: { name: Kpi_Token, key: "a/b" } } }
"#;
    assert_eq!(
        problems(bad),
        [
            "rollout.gates[0].headers_from[0].name: \"bad header\" is not a header name (RFC 9110 §5.1)",
            "rollout.gates[0].headers_from[1].name: Authorization is also in rollout.gates[0].headers: set it in one place",
            "rollout.gates[0].headers_from[1].value_from.env: \"A=B\" is not an environment variable name",
            "rollout.gates[0].headers_from[2].value_from.file: must not be empty",
            "rollout.gates[0].headers_from[3].name: x-t is listed twice",
            "rollout.gates[0].headers_from[4].value_from.secret_key_ref.name: \"Kpi_Token\" is not a Secret name (a DNS-1123 subdomain)",
            "rollout.gates[0].headers_from[4].value_from.secret_key_ref.key: \"a/b\" is not a Secret key (letters, digits, `-`, `_`, `.`)",
            "rollout.gates[0].headers_from[4].value_from.secret_key_ref: Secrets are read in Kubernetes mode only (a TrafficShift's headersFrom); locally use `file` or `env`",
        ]
    );
}

/// Session 43: a ConfigMap's key is checked as a Secret's, and refused locally the same way.
#[test]
fn a_config_map_key_ref_is_refused_locally_each_problem_by_its_field() {
    let bad = r#"rollout:
  gates:
    - name: a
      at: before_step
      url: http://x
      headers_from:
        - { name: X-Tenant, value_from: { config_map_key_ref: { name: prom-tenant, key: tenant } } }
        - { name: X-Other, value_from: { config_map_key_ref: { name: Prom_Tenant, key: "a/b" } } }
"#;
    assert_eq!(
        problems(bad),
        [
            "rollout.gates[0].headers_from[1].value_from.config_map_key_ref.name: \"Prom_Tenant\" is not a ConfigMap name (a DNS-1123 subdomain)",
            "rollout.gates[0].headers_from[1].value_from.config_map_key_ref.key: \"a/b\" is not a ConfigMap key (letters, digits, `-`, `_`, `.`)",
            "rollout.gates[0].headers_from[0].value_from.config_map_key_ref: ConfigMaps are read in Kubernetes mode only (a TrafficShift's headersFrom); locally use `file` or `env`",
            "rollout.gates[0].headers_from[1].value_from.config_map_key_ref: ConfigMaps are read in Kubernetes mode only (a TrafficShift's headersFrom); locally use `file` or `env`",
        ]
    );
}

#[test]
fn more_headers_from_than_a_trafficshift_admits_are_refused() {
    let many: Vec<String> = (0..=MAX_HEADERS_FROM)
        .map(|i| format!("{{ name: X-H{i}, value_from: {{ env: H{i} }} }}"))
        .collect();
    let text = format!(
        "rollout: {{ gates: [{{ name: a, at: before_step, url: \"http://x\", headers_from: [{}] }}] }}",
        many.join(", ")
    );
    assert_eq!(
        problems(&text),
        ["rollout.gates[0].headers_from: 17 headers, at most 16"]
    );
}

#[test]
fn an_unknown_source_or_two_sources_do_not_parse() {
    let unknown = "rollout: { gates: [{ name: a, at: before_step, url: \"http://x\", \
                   headers_from: [{ name: A, value_from: { vault: x } }] }] }";
    let e = problems(unknown).join("\n");
    assert!(
        e.contains("unknown field `vault`, expected one of `file`, `env`, `secret_key_ref`"),
        "{e}"
    );
    let two = "rollout: { gates: [{ name: a, at: before_step, url: \"http://x\", \
               headers_from: [{ name: A, value_from: { env: T, file: /t } }] }] }";
    let e = problems(two).join("\n");
    assert!(
        e.contains("headers_from[0]: value_from has more than one of `file`, `env`"),
        "{e}"
    );
    let both = "rollout: { gates: [{ name: a, at: before_step, url: \"http://x\", headers_from: \
                [{ name: A, value_from: { secret_key_ref: { name: t, key: k }, \
                config_map_key_ref: { name: t, key: k } } }] }] }";
    let e = problems(both).join("\n");
    assert!(
        e.contains("value_from has more than one of `file`, `env`, `secret_key_ref`, `config_map_key_ref`; use one"),
        "{e}"
    );
}

#[test]
fn a_secret_key_ref_is_valid_in_a_rollout_config_for_kubernetes_mode() {
    let config: crate::spec::RolloutConfig = serde_yaml_ng::from_str(
        "gates: [{ name: a, at: before_step, url: \"http://x\", \
         headers_from: [{ name: Authorization, value_from: { secret_key_ref: { name: kpi-token, key: token } } }] }]",
    )
    .expect("parses");
    config.validate().expect("the shared rules admit it");
    let json = serde_json::to_value(&config.gates[0].headers_from).expect("json");
    assert_eq!(
        json,
        serde_json::json!([{ "name": "Authorization",
            "value_from": { "secret_key_ref": { "name": "kpi-token", "key": "token" } } }]),
        "the state holds the reference"
    );
}
