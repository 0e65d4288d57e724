//! Spec parsing, defaults and validation messages.

use super::*;

const FULL: &str = r#"
listen: 0.0.0.0:8081
admin: 127.0.0.1:9902
route: { name: shop, hosts: [shop.example], path_prefix: /api }
blue:
  name: shop-v1
  command: ./shop
  args: ["--port", "{port}"]
  env: { RUST_LOG: info }
  workdir: /srv/shop
  instances: 2
  readiness: { path: /ready, timeout: 500ms, interval: 100ms, deadline: 20s }
  stop_grace: 5s
green:
  endpoints: [10.0.0.7:8080, 10.0.0.8:8080]
rollout:
  steps: [0.5, "10%", { weight: 50, hold: 1m }, 100]
  hold: 20s
  analysis:
    interval: 5s
    max_error_rate: "0.5%"
    max_p99: 250ms
    max_p99_ratio: 1.5
    min_requests: 100
    max_inconclusive: 4
    on_inconclusive: pause
  progress_deadline: 3m
  drain_timeout: 15s
state_file: /var/lib/crossfade/state.json
port_range: 25100-25199
drain_grace: 2s
"#;

fn problems(yaml: &str) -> Vec<String> {
    match RunSpec::from_yaml(yaml) {
        Err(SpecError::Invalid(p)) => p.iter().map(ToString::to_string).collect(),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn a_full_spec_parses_with_every_field() {
    let spec = RunSpec::from_yaml(FULL).unwrap();
    assert_eq!(spec.listen, "0.0.0.0:8081".parse().unwrap());
    assert_eq!(spec.route.hosts, ["shop.example"]);
    let blue = spec.blue.as_ref().unwrap();
    assert_eq!((blue.instances, blue.stop_grace), (2, secs(5)));
    assert_eq!(blue.readiness.timeout, Duration::from_millis(500));
    assert_eq!(blue.label(Slot::Blue), "shop-v1");
    let green = spec.green.as_ref().unwrap();
    assert_eq!(green.label(Slot::Green), "green");
    let r = &spec.rollout;
    let weights: Vec<u32> = r.steps.iter().map(|s| s.weight.bp()).collect();
    assert_eq!(weights, [50, 1000, 5000, 10_000]);
    assert_eq!((r.hold_of(1), r.hold_of(2)), (secs(20), secs(60)));
    assert_eq!(
        (r.interval_of(2), r.progress_deadline),
        (secs(5), secs(180))
    );
    let a = &r.analysis;
    assert_eq!(
        (a.max_error_rate, a.max_p99_ratio, a.min_requests),
        (0.005, Some(1.5), 100)
    );
    assert_eq!(a.on_inconclusive, InconclusivePolicy::Pause);
    assert_eq!(
        spec.state_file.as_deref(),
        Some(std::path::Path::new("/var/lib/crossfade/state.json"))
    );
    assert_eq!(spec.port_range.and_then(|r| r.ports()), Some(25100..=25199));
    assert_eq!(spec.drain_grace, Some(secs(2)));
}

#[test]
fn defaults_fill_everything_but_blue() {
    let spec = RunSpec::from_yaml("blue: { endpoints: [127.0.0.1:9000] }").unwrap();
    assert_eq!(spec.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(spec.admin, "127.0.0.1:9901".parse().unwrap());
    assert_eq!(
        spec.route,
        RouteSpec {
            name: "web".into(),
            hosts: vec![],
            path_prefix: "/".into(),
            ..RouteSpec::default()
        }
    );
    assert_eq!((spec.green, spec.state_file), (None, None));
    let r = spec.rollout;
    let weights: Vec<u32> = r.steps.iter().map(|s| s.weight.bp()).collect();
    assert_eq!(weights, [500, 2500, 5000, 10_000]);
    assert_eq!(
        (r.hold, r.progress_deadline, r.drain_timeout),
        (secs(10), secs(120), secs(30))
    );
    assert_eq!(
        r.interval_of(0),
        secs(10),
        "the analysis window defaults to the hold"
    );
    assert_eq!(r.analysis, AnalysisConfig::default());
    assert_eq!(
        (r.analysis.max_error_rate, r.analysis.min_requests),
        (0.01, 50)
    );
    let blue = spec.blue.unwrap();
    assert_eq!(blue.readiness, ReadinessConfig::default());
    assert_eq!((blue.instances, blue.stop_grace), (1, secs(10)));
}

#[test]
fn error_rate_accepts_a_percentage_and_zero() {
    for (text, expected) in [
        ("\"1%\"", 0.01),
        ("\"0.5 %\"", 0.005),
        ("0", 0.0),
        ("\"0%\"", 0.0),
    ] {
        let yaml = format!("blue: {{ endpoints: [127.0.0.1:9000] }}\nrollout: {{ analysis: {{ max_error_rate: {text} }} }}");
        let spec = RunSpec::from_yaml(&yaml).unwrap();
        assert!(
            (spec.rollout.analysis.max_error_rate - expected).abs() < 1e-12,
            "{text}"
        );
    }
}

/// Trial report 4: a bare number in a rate field is refused, naming the field and both readings
/// (fraction and percent), in every rate field; a state file's fraction still deserialises.
#[test]
fn a_bare_number_in_a_rate_field_is_refused_showing_both_readings() {
    let yaml = r#"
blue: { endpoints: [127.0.0.1:9000] }
rollout:
  steps: [{ weight: 0, hold: 10s }, 100]
  analysis:
    max_error_rate: 1
    max_error_rate_increase: "0.05"
    shadow: { max_mismatch_rate: 0.02 }
"#;
    assert_eq!(
        problems(yaml),
        [
            "rollout.analysis.max_error_rate: a bare number is ambiguous for a rate: 1 reads as 100% as a fraction, or as 1% as a percentage (how steps read it); write the rate with a % sign, \"100%\" or \"1%\"",
            "rollout.analysis.max_error_rate_increase: a bare number is ambiguous for a rate: 0.05 reads as 5% as a fraction, or as 0.05% as a percentage (how steps read it); write the rate with a % sign, \"5%\" or \"0.05%\"",
            "rollout.analysis.shadow.max_mismatch_rate: a bare number is ambiguous for a rate: 0.02 reads as 2% as a fraction, or as 0.02% as a percentage (how steps read it); write the rate with a % sign, \"2%\" or \"0.02%\"",
        ]
    );
    // Trial 7, G10: only a valid reading is suggested (2 as a fraction is 200%).
    assert_eq!(
        problems("blue: { endpoints: [127.0.0.1:9000] }\nrollout: { analysis: { max_error_rate: 2 } }"),
        ["rollout.analysis.max_error_rate: a bare number is ambiguous for a rate: 2 reads as 200% as a fraction, or as 2% as a percentage (how steps read it); write the rate with a % sign: \"2%\" (the other reading is above 100%)"]
    );
    let found = problems(
        "blue: { endpoints: [127.0.0.1:9000] }\nrollout: { analysis: { max_error_rate: 150 } }",
    );
    assert!(
        found[0].ends_with(
            "write the rate with a % sign, between \"0%\" and \"100%\" (both readings are outside)"
        ),
        "{found:?}"
    );
    let migrate = crate::service::StartRequest::from_yaml(
        "green: { endpoints: [127.0.0.1:9000] }\nrollout: { analysis: { max_error_rate: 0.05 } }",
    );
    let Err(SpecError::Invalid(found)) = migrate else {
        panic!("a migrate file's bare rate is refused: {migrate:?}")
    };
    assert_eq!(found[0].path, "rollout.analysis.max_error_rate");
    // The admin API's `POST /rollout` body follows the same rule (a bare rate, number or string
    // without `%`, is refused naming its field), and takes what `crossfade migrate` writes.
    for (body, path) in [
        (
            r#"{"green": {"endpoints": ["127.0.0.1:9000"]}, "rollout": {"analysis": {"max_error_rate": 0.05}}}"#,
            "rollout.analysis.max_error_rate",
        ),
        (
            r#"{"rollout": {"analysis": {"max_error_rate_increase": "0.02"}}}"#,
            "rollout.analysis.max_error_rate_increase",
        ),
    ] {
        let Err(SpecError::Invalid(found)) =
            crate::service::StartRequest::from_json(body.as_bytes())
        else {
            panic!("a POST /rollout bare rate is refused: {body}")
        };
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, path);
    }
    let written = crate::service::StartRequest::from_yaml(
        "green: { endpoints: [127.0.0.1:9000] }\nrollout: { steps: [0.5, 100], analysis: { max_error_rate: 5% } }",
    )
    .unwrap();
    let body = serde_json::to_vec(&written).unwrap();
    let read = crate::service::StartRequest::from_json(&body).unwrap();
    let rollout = read
        .rollout
        .unwrap()
        .over(&RolloutConfig::default())
        .unwrap();
    assert!((rollout.analysis.max_error_rate - 0.05).abs() < 1e-12);
    assert_eq!(
        rollout.steps[0].weight.bp(),
        50,
        "a bare weight is percent: 0.5%"
    );
    assert!(matches!(
        crate::service::StartRequest::from_json(b"{\"green\": 1}"),
        Err(SpecError::Parse(_))
    ));
    let json: AnalysisConfig = serde_json::from_str(r#"{"max_error_rate": 0.01}"#).unwrap();
    assert!(
        (json.max_error_rate - 0.01).abs() < 1e-12,
        "JSON written by crossfade still reads"
    );
}

#[test]
fn a_bad_spec_lists_every_problem_with_its_field_path() {
    let yaml = r#"
admin: 127.0.0.1:8080
route: { name: "", path_prefix: api }
green:
  command: " "
  endpoints: [127.0.0.1:9000]
  instances: 0
  readiness: { timeout: 0s }
rollout:
  steps: [25, 5, 120, { weight: 50, hold: 0s }]
  hold: 0s
  analysis: { max_error_rate: "150%", min_requests: 0, max_inconclusive: 0, max_p99_ratio: 0.5 }
  drain_timeout: 0s
"#;
    assert_eq!(
        problems(yaml),
        [
            "admin: 127.0.0.1:8080 is also the listen address",
            "route.name: must not be empty",
            "route.path_prefix: \"api\" must start with '/'",
            "blue: missing",
            "green: set either command or endpoints, not both",
            "green.readiness.timeout: must be above 0s",
            "rollout.steps[1]: 5% is not above the previous step (25%)",
            "rollout.steps[2]: 120% is above 100%",
            "rollout.steps[3].hold: 0s is below the minimum of 10ms",
            "rollout.steps: the last step must be 100%, got 50%",
            "rollout.hold: 0s is below the minimum of 10ms",
            "rollout.drain_timeout: must be above 0s",
            "rollout.analysis.max_error_rate: 150% is above 100%",
            "rollout.analysis.max_p99_ratio: 0.5 is below 1 (it is preview p99 as a multiple of active p99)",
            "rollout.analysis.min_requests: 0 would let a window without traffic pass; use at least 1",
            "rollout.analysis.max_inconclusive: 0 is below 1",
        ]
    );
}

#[test]
fn command_workloads_are_checked() {
    let yaml = r#"
blue: { command: "", instances: 0 }
green: { command: ./app, args: ["--port", "8080"], instances: 65 }
"#;
    let port = "{port} must appear in args or env, or the instances cannot be given their ports";
    assert_eq!(
        problems(yaml),
        [
            "blue.command: must not be empty".to_string(),
            "blue.instances: 0 is below 1".into(),
            format!("blue.args: {port}"),
            "green.instances: 65 is above 64".into(),
            format!("green.args: {port}"),
        ]
    );
    let env_port = "blue: { command: ./app, env: { PORT: \"{port}\" } }";
    assert!(RunSpec::from_yaml(env_port).is_ok());
    // Trial 19: a name with a newline passed, and split the log lines it is written in.
    let name = r#"blue: { name: "v2\nINFO forged", endpoints: [127.0.0.1:9] }"#;
    assert_eq!(
        problems(name),
        [
            "blue.name: \"v2\\nINFO forged\" holds a control character (a newline, a tab...), \
          which a log line cannot show as written"
        ]
    );
    // Trial 19: `workdir: ""` passed, and meant the spec file's directory, not the default.
    let empty = r#"blue: { command: ./app, args: ["{port}"], workdir: "" }"#;
    assert_eq!(
        problems(empty),
        [
            "blue.workdir: must not be empty: leave it out for Crossfade's own working directory, \
          or write . for the spec file's"
        ]
    );
}

/// Trial 18's report: `readiness.deadline: 1ms` passed check, and every instance then failed at
/// its first probe (taken as it starts, before it listens). A deadline must leave room for a
/// second probe: at least `timeout + interval`; zero timeout, interval and deadline are refused
/// by their own rules, not this one again.
#[test]
fn a_readiness_deadline_that_leaves_no_room_for_a_second_probe_is_refused() {
    let yaml = r#"
blue: { command: ./app, args: ["{port}"], readiness: { deadline: 1ms } }
green: { command: ./app, args: ["{port}"], readiness: { timeout: 0s, interval: 0s, deadline: 0s } }
"#;
    assert_eq!(
        problems(yaml),
        [
            "blue.readiness.deadline: 1ms is below timeout + interval (1s + 200ms = 1s 200ms): \
             the first probe runs as an instance starts and may take its whole timeout, the next \
             one interval later, so an instance not answering the first could never be found \
             ready; make it at least 1s 200ms",
            "green.readiness.timeout: must be above 0s",
            "green.readiness.interval: 0s is below the minimum of 10ms",
            "green.readiness.deadline: must be above 0s",
        ]
    );
    let exact = "blue: { command: ./app, args: [\"{port}\"], readiness: { timeout: 100ms, \
                 interval: 50ms, deadline: 150ms } }";
    assert!(RunSpec::from_yaml(exact).is_ok());
}

/// Trial 18, T15: a placeholder spelt otherwise than `{port}` is passed to the process as
/// written; each is refused naming its field (`{{port}}` holds `{port}` and passed before).
#[test]
fn a_misspelt_port_placeholder_is_refused_naming_its_field() {
    let yaml = r#"
blue: { command: ./app, args: ["--port", "{{port}}", "--admin={ PORT }", "{}", "{\"a\": 1}"] }
green: { command: ./app, args: ["--port", "{port}", "{port}{port}"], env: { P: "{Port}", Q: "x{prot}" } }
"#;
    let not = "is not the placeholder {port} (one pair of braces, lower case, no spaces), so it \
               would be passed as written; write {port}";
    assert_eq!(
        problems(yaml),
        [
            format!("blue.args[1]: \"{{{{port}}}}\": {{{{port}}}} {not}"),
            format!("blue.args[2]: \"--admin={{ PORT }}\": {{ PORT }} {not}"),
            format!("green.env.P: \"{{Port}}\": {{Port}} {not}"),
            format!("green.env.Q: \"x{{prot}}\": {{prot}} {not}"),
        ]
    );
    use super::validate::{misspelt_placeholder, Misspelt};
    assert_eq!(
        misspelt_placeholder("{{ port }} {port}", false),
        Some(Misspelt::Braces("{{ port }}"))
    );
    assert_eq!(misspelt_placeholder("{port} {x} {", false), None);
}

/// Trial 18's report: `args: [--port, $PORT]` (or `${PORT}`, or in an env value) reached the
/// program as the text `$PORT`, since args are not run through a shell; refused naming the
/// field, saying to write `{port}`. A shell given a script (`sh -c`) expands `$PORT` in its
/// args itself, so there it is fine; in env values it never is.
#[test]
fn a_shell_variable_for_the_port_is_refused_unless_a_shell_runs_it() {
    let yaml = r#"
blue: { command: ./app, args: ["--port", "$PORT", "--url=http://x:${port}/"], env: { PORT: "{port}" } }
green: { command: /bin/sh, args: ["-ec", "exec ./app --port $PORT ${PORT}"], env: { PORT: "{port}", U: "x:$PORT" } }
"#;
    let shell = |value: &str, written: &str| {
        format!(
            "{value:?}: {written} is a shell variable, and args and env are passed to the program \
             as written, not through a shell, so it would get {written} itself; write {{port}}, \
             which is replaced by the instance's port"
        )
    };
    assert_eq!(
        problems(yaml),
        [
            format!("blue.args[1]: {}", shell("$PORT", "$PORT")),
            format!(
                "blue.args[2]: {}",
                shell("--url=http://x:${port}/", "${port}")
            ),
            format!("green.env.U: {}", shell("x:$PORT", "$PORT")),
        ]
    );
    use super::validate::{misspelt_placeholder, Misspelt};
    for fine in ["$1", "$", "${", "$PORTS", "${HOME}", "a$b", "{port}$"] {
        assert_eq!(misspelt_placeholder(fine, false), None, "{fine}");
    }
    assert_eq!(
        misspelt_placeholder("$HOME/${Port}", false),
        Some(Misspelt::Shell("${Port}"))
    );
    assert_eq!(
        misspelt_placeholder("$PORT", true),
        None,
        "a shell expands it"
    );
}

/// Trial 18, T21: an environment variable name that is empty or holds `=` reached the process
/// mangled (`A=B: x` as A="B=x"); a NUL failed its start. Refused naming the field.
#[test]
fn an_environment_variable_name_a_process_cannot_have_is_refused() {
    let yaml = r#"
blue: { command: ./app, args: ["{port}"], env: { "": x, "A=B": x, OK: "a\0b" } }
"#;
    assert_eq!(
        problems(yaml),
        [
            "blue.env: \"\" is not an environment variable name (not empty, no '=' or NUL)",
            "blue.env: \"A=B\" is not an environment variable name (not empty, no '=' or NUL)",
            "blue.env.OK: a value cannot hold a NUL character",
        ]
    );
}

/// Trial 32 (newuser32, B): a NUL in a program, an argument or a directory passed `check` and
/// failed the start naming no field (`nul byte found in provided data`).
#[test]
fn a_nul_in_a_command_its_arguments_or_its_workdir_is_refused_naming_the_field() {
    let yaml = r#"
blue: { command: "./a\0pp", args: ["{port}", "v\0x"], workdir: "d\0ir" }
"#;
    let found = problems(yaml);
    for expected in [
        "blue.command: cannot hold a NUL character",
        "blue.args[1]: cannot hold a NUL character",
        "blue.workdir: cannot hold a NUL character",
    ] {
        assert!(found.iter().any(|p| p == expected), "{expected}: {found:?}");
    }
}

#[test]
fn endpoint_workloads_are_checked() {
    let yaml = r#"
blue: { endpoints: [127.0.0.1:9000, 127.0.0.1:9000, 127.0.0.1:8080], args: [x] }
green: { endpoints: [127.0.0.1:0, 127.0.0.1:9000] }
"#;
    assert_eq!(
        problems(yaml),
        [
            "blue.args: only applies to a command workload",
            "blue.endpoints[1]: 127.0.0.1:9000 is listed twice",
            "blue.endpoints[2]: 127.0.0.1:8080 is the proxy's own listen address: requests to it \
             would loop back into the proxy",
            "green.endpoints[0]: 127.0.0.1:0: port 0 cannot be connected to",
            "green.endpoints[1]: 127.0.0.1:9000 is also a blue endpoint",
        ]
    );
    assert_eq!(
        problems("green: {}")[..2],
        ["blue: missing", "green: set either command or endpoints"]
    );
}

/// Trial 11, L4: a `command` workload's ports are not in its spec, so a preview pointed at one of
/// its running instances was only caught by the instances' endpoints, which the service passes.
#[test]
fn a_preview_endpoint_of_a_running_instance_of_the_active_workload_is_refused() {
    let yaml = r#"
blue: { name: v2, command: ./app, args: ["--port", "{port}"], instances: 2 }
green: { endpoints: [127.0.0.1:9100, 127.0.0.1:26132] }
"#;
    let spec: RunSpec = serde_yaml_ng::from_str(yaml).unwrap();
    let running: [SocketAddr; 2] = [
        "127.0.0.1:26132".parse().unwrap(),
        "127.0.0.1:26133".parse().unwrap(),
    ];
    assert_eq!(
        spec.validate_start(Slot::Green, &[])
            .map_err(|e| e.to_string()),
        Ok(())
    );
    let message = spec
        .validate_start(Slot::Green, &running)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains(
            "green.endpoints[1]: 127.0.0.1:26132 is also an endpoint of v2, active in slot green, \
             where one of its running instances serves"
        ),
        "{message}"
    );
    assert!(!message.contains("green.endpoints[0]"), "{message}");
    // A static active workload is named once, by the spec's own rule.
    let static_yaml = r#"
blue: { name: v2, endpoints: [127.0.0.1:9000] }
green: { endpoints: [127.0.0.1:9000] }
"#;
    let spec: RunSpec = serde_yaml_ng::from_str(static_yaml).unwrap();
    let running: [SocketAddr; 1] = ["127.0.0.1:9000".parse().unwrap()];
    let message = spec
        .validate_start(Slot::Blue, &running)
        .unwrap_err()
        .to_string();
    assert_eq!(
        message.matches("green.endpoints[0]").count(),
        1,
        "{message}"
    );
}

/// Trial 8, H8: after a promotion the active workload serves in slot green and a `POST /rollout`
/// validates it in `blue:`; an endpoint the preview shares with it was called "a blue endpoint",
/// sending the operator to the empty blue slot.
#[test]
fn a_preview_endpoint_of_the_active_workload_names_its_slot() {
    let yaml = r#"
blue: { name: v2, endpoints: [127.0.0.1:9000] }
green: { endpoints: [127.0.0.1:9000] }
"#;
    let spec: RunSpec = serde_yaml_ng::from_str(yaml).unwrap();
    let text = |r: Result<(), SpecError>| r.unwrap_err().to_string();
    let green_active = text(spec.validate_start(Slot::Green, &[]));
    assert!(
        green_active.contains(
            "green.endpoints[0]: 127.0.0.1:9000 is also an endpoint of v2, active in slot green"
        ),
        "{green_active}"
    );
    assert!(!green_active.contains("blue endpoint"), "{green_active}");
    let mut unnamed = spec.clone();
    unnamed.blue.as_mut().unwrap().name = None;
    let blue_active = text(unnamed.validate_start(Slot::Blue, &[]));
    assert!(
        blue_active.contains(
            "green.endpoints[0]: 127.0.0.1:9000 is also an endpoint of the active workload \
             (slot blue)"
        ),
        "{blue_active}"
    );
}

#[test]
fn holds_must_fit_in_the_progress_deadline() {
    let yaml = r#"
blue: { endpoints: [127.0.0.1:9000] }
rollout:
  steps: [10, { weight: 100, hold: 5m }]
  hold: 2m
  analysis: { interval: 2m }
"#;
    assert_eq!(
        problems(yaml),
        [
            "rollout.hold: 2m leaves no time to finish a step within rollout.progress_deadline (2m)",
            "rollout.steps[1].hold: 5m leaves no time to finish the step within rollout.progress_deadline (2m)",
            "rollout.analysis.interval: 2m leaves no time for a window to close within rollout.progress_deadline (2m)",
        ]
    );
}

#[test]
fn invalid_spec_displays_one_problem_per_line() {
    let err = RunSpec::from_yaml("rollout: { steps: [] }").unwrap_err();
    assert_eq!(
        err.to_string(),
        "blue: missing\nrollout.steps: must have at least one step"
    );
}

#[test]
fn parse_errors_keep_serdes_message_with_its_position() {
    let err =
        RunSpec::from_yaml("blue: { endpoints: [127.0.0.1:9000] }\nlisten_on: x\n").unwrap_err();
    let SpecError::Parse(message) = &err else {
        panic!("{err:?}")
    };
    assert!(
        message.contains("unknown field `listen_on`") && message.contains("line 2"),
        "{message}"
    );
    let err = RunSpec::from_yaml("rollout: { steps: [abc] }").unwrap_err();
    assert!(
        err.to_string().contains("\"abc\" is not a percentage"),
        "{err}"
    );
    let err = RunSpec::from_yaml("rollout: { steps: [{ weight: 5, pause: 1s }] }").unwrap_err();
    assert!(err.to_string().contains("unknown field `pause`"), "{err}");
    let err =
        RunSpec::from_yaml("rollout: { analysis: { max_error_rate: \"lots\" } }").unwrap_err();
    assert!(err.to_string().contains("\"lots\" is not a rate"), "{err}");
}

#[test]
fn a_spec_round_trips_through_yaml() {
    let spec = RunSpec::from_yaml(FULL).unwrap();
    let text = serde_yaml_ng::to_string(&spec).unwrap();
    assert_eq!(RunSpec::from_yaml(&text).unwrap(), spec, "{text}");
}

#[test]
fn describe_names_the_workload() {
    let spec = RunSpec::from_yaml(FULL).unwrap();
    assert_eq!(
        spec.blue.unwrap().describe(),
        "`./shop --port {port}` ×2 instances"
    );
    assert_eq!(
        spec.green.unwrap().describe(),
        "endpoints 10.0.0.7:8080, 10.0.0.8:8080"
    );
}

#[test]
fn fractions_print_as_percentages() {
    assert_eq!(fraction_percent(0.021), "2.1%");
    assert_eq!(fraction_percent(1.5), "150%");
    assert_eq!(fraction_percent(0.0), "0%");
    assert_eq!(fraction_percent(0.0025), "0.25%");
}

#[test]
fn workloads_and_rollout_configs_validate_on_their_own() {
    let green = WorkloadSpec {
        command: Some("./app".into()),
        ..WorkloadSpec::default()
    };
    let err = green.validate("green").unwrap_err();
    let port = "{port} must appear in args or env, or the instances cannot be given their ports";
    assert_eq!(err.to_string(), format!("green.args: {port}"));
    let mut rollout = RolloutConfig::default();
    assert_eq!(rollout.validate(), Ok(()));
    rollout.analysis.min_requests = 0;
    rollout.steps.pop();
    assert_eq!(
        rollout.validate().unwrap_err().to_string(),
        "rollout.steps: the last step must be 100%, got 50%\n\
         rollout.analysis.min_requests: 0 would let a window without traffic pass; use at least 1"
    );
}

#[test]
fn the_sequential_judge_is_configured_and_checked() {
    let yaml = r#"
blue: { endpoints: [127.0.0.1:9000] }
rollout:
  analysis: { judge: sequential, alpha: 0.005, beta: 0.1, max_error_rate_increase: "0.5%", max_latency_increase: 10ms }
"#;
    let a = RunSpec::from_yaml(yaml).unwrap().rollout.analysis;
    assert_eq!(
        (a.judge, a.alpha, a.beta),
        (JudgeKind::Sequential, 0.005, 0.1)
    );
    assert!((a.max_error_rate_increase - 0.005).abs() < 1e-12);
    assert_eq!(
        a.max_latency_increase,
        LatencyIncrease::Duration(Duration::from_millis(10))
    );
    let d = AnalysisConfig::default();
    assert_eq!(
        (d.judge, d.alpha, d.beta),
        (JudgeKind::Threshold, 0.01, 0.05)
    );
    assert_eq!(d.max_latency_increase, LatencyIncrease::Fraction(0.2));
    let bad = r#"
blue: { endpoints: [127.0.0.1:9000] }
rollout:
  analysis: { alpha: 0, beta: 0.7, max_error_rate_increase: 0, max_latency_increase: "0%" }
"#;
    assert_eq!(
        problems(bad),
        [
            "rollout.analysis.alpha: 0 is not in (0, 0.5] (it is a probability of a wrong verdict)",
            "rollout.analysis.beta: 0.7 is not in (0, 0.5] (it is a probability of a wrong verdict)",
            "rollout.analysis.max_error_rate_increase: 0% is not in (0%, 100%]",
            "rollout.analysis.max_latency_increase: 0% must be above 0",
        ]
    );
    assert_eq!(d.fail_when_worse_than, FailWhenWorseThan::Blue);
    let a = RunSpec::from_yaml(
        "blue: { endpoints: [127.0.0.1:9000] }\nrollout: { analysis: { judge: sequential, fail_when_worse_than: allowance } }",
    )
    .unwrap()
    .rollout
    .analysis;
    assert_eq!(a.fail_when_worse_than, FailWhenWorseThan::Allowance);
    let err = RunSpec::from_yaml("rollout: { analysis: { fail_when_worse_than: green } }")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("rollout.analysis.fail_when_worse_than: unknown variant `green`, expected `blue` or `allowance`"),
        "{err}"
    );
    let err = RunSpec::from_yaml("rollout: { analysis: { max_latency_increase: fast } }");
    assert!(
        err.unwrap_err()
            .to_string()
            .contains("\"fast\" is not a latency increase"),
        "bad latency increase"
    );
}

#[test]
fn analysis_checks_name_every_problem_with_its_field() {
    let good = r#"
blue: { endpoints: [127.0.0.1:9000] }
rollout:
  analysis:
    checks:
      - name: error-ratio
        prometheus: { address: "http://127.0.0.1:9090", query: 'sum(rate(x{backend="{{ preview }}"}[{{interval}}]))' }
        max: 0.01
      - name: kpi
        web: { url: "https://kpi.example/v/{{ preview_version }}", json_path: "$.data.rate", headers: { Authorization: "Bearer t" } }
        min: 0.9
        timeout: 2s
"#;
    let spec = RunSpec::from_yaml(good).expect("valid checks");
    assert_eq!(spec.rollout.analysis.checks.len(), 2);
    assert_eq!(
        spec.rollout.analysis.checks[0].timeout,
        Duration::from_secs(5)
    );

    let bad = r#"
blue: { endpoints: [127.0.0.1:9000] }
rollout:
  analysis:
    checks:
      - name: a
        prometheus: { address: "prometheus:9090", query: "up{x='{{ namespace }}'}" }
        max: 1
      - name: a
        web: { url: "http://h/x", json_path: "data.rate" }
        min: 2
        max: 1
      - name: "b c"
        timeout: 0s
      - name: d
        prometheus: { address: "http://p", query: "up" }
        web: { url: "http://h", json_path: "$.x" }
"#;
    assert_eq!(
        problems(bad),
        [
            "rollout.analysis.checks[0].prometheus.address: \"prometheus:9090\" is not an http:// or https:// URL",
            "rollout.analysis.checks[0].prometheus.query: unknown variable {{ namespace }} (known: route, preview, active, preview_version, active_version, interval)",
            "rollout.analysis.checks[1].name: \"a\" is used by another check",
            "rollout.analysis.checks[1].web.json_path: \"data.rate\" is not a JSONPath (RFC 9535, e.g. `$.data.rate`): at position 0, parser error",
            "rollout.analysis.checks[1].min: 2 is above max 1",
            "rollout.analysis.checks[2].name: \"b c\" is not a check name (letters, digits, `_`, `.`, `-`)",
            "rollout.analysis.checks[2]: needs a provider: `prometheus` or `web`",
            "rollout.analysis.checks[2]: needs `min`, `max` or both: the range that passes",
            "rollout.analysis.checks[2].timeout: must be above 0s",
            "rollout.analysis.checks[3]: has both `prometheus` and `web`; use one",
            "rollout.analysis.checks[3]: needs `min`, `max` or both: the range that passes",
        ]
    );
}

#[test]
fn gates_parse_with_defaults_and_name_every_problem() {
    let good = r#"
blue: { endpoints: [127.0.0.1:9000] }
rollout:
  gates:
    - { name: load-test, at: before_step, url: "http://127.0.0.1:8080/run", on_reject: rollback, timeout: 30s }
    - { name: approval, at: before_promotion, url: "https://approve.example/ask" }
"#;
    let spec = RunSpec::from_yaml(good).expect("valid gates");
    let g = &spec.rollout.gates[1];
    assert_eq!(
        (g.at, g.on_reject, g.timeout, g.retry),
        (
            GatePoint::BeforePromotion,
            GatePolicy::Wait,
            Duration::from_secs(10),
            Duration::from_secs(10)
        )
    );
    let bad = r#"
blue: { endpoints: [127.0.0.1:9000] }
rollout:
  gates:
    - { name: a, at: before_step, url: "ftp://x", timeout: 0s, retry: 0s, headers: { "bad header": x } }
    - { name: a, at: after_completion, url: "http://x" }
"#;
    assert_eq!(
        problems(bad),
        [
            "rollout.gates[0].url: \"ftp://x\" is not an http:// or https:// URL",
            "rollout.gates[0].timeout: must be above 0s",
            "rollout.gates[0].retry: 0s is below the minimum of 10ms",
            "rollout.gates[0].headers.bad header: is not a header name (RFC 9110 §5.1)",
            "rollout.gates[1].name: \"a\" is used by another gate",
        ]
    );
    let err = RunSpec::from_yaml(
        "blue: { endpoints: [127.0.0.1:9000] }\nrollout: { gates: [{ name: a, at: whenever, url: \"http://x\" }] }",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("unknown variant `whenever`"), "{err}");
}

/// New-user audit D4: a spec's problem quotes a value of 100,000 bytes by its first 64 and its
/// length, naming the field, not whole.
#[test]
fn a_problem_quotes_an_oversized_value_by_its_start_and_length() {
    let url = format!("ftp://{}", "u".repeat(99_994));
    let yaml = format!(
        "blue: {{ endpoints: [127.0.0.1:9000] }}\nrollout:\n  gates:\n    - {{ name: a, at: before_step, url: \"{url}\" }}\n"
    );
    let start = format!("ftp://{}", "u".repeat(58));
    assert_eq!(
        problems(&yaml),
        [format!(
            "rollout.gates[0].url: \"{start}\"… (100000 bytes) is not an http:// or https:// URL"
        )]
    );
}

/// An `after_completion` gate is told once the rollout has completed: nothing is left to roll
/// back, so `on_reject: rollback` there is a promise the rollout cannot keep (trial 22).
#[test]
fn an_after_completion_gate_that_would_roll_back_is_refused_naming_on_reject() {
    let spec = |on_reject: &str| {
        format!(
            "blue: {{ endpoints: [127.0.0.1:9000] }}\nrollout: {{ gates: [{{ name: done, at: after_completion, url: \"http://x\", on_reject: {on_reject} }}] }}"
        )
    };
    let found = problems(&spec("rollback"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("rollout.gates[0].on_reject: rollback cannot act after completion"),
        "{found:?}"
    );
    RunSpec::from_yaml(&spec("wait"))
        .expect("an after_completion gate that waits is a notification");
}

/// The README's example spec stays valid, and judges with thresholds that hold for an identical
/// green on a loaded machine: an absolute p99 bound, no p99 ratio at its small `min_requests`.
#[test]
fn the_example_spec_is_valid_and_has_no_p99_ratio_at_a_small_min_requests() {
    let spec = RunSpec::from_yaml(include_str!("../../../deploy/examples/local.yaml"))
        .expect("deploy/examples/local.yaml is valid");
    let analysis = &spec.rollout.analysis;
    assert_eq!(analysis.max_p99, Some(Duration::from_millis(500)));
    assert!(
        analysis.max_p99_ratio.is_none() || analysis.min_requests >= 1000,
        "a p99 ratio over {} requests compares near-maximum latencies",
        analysis.min_requests
    );
}

#[test]
fn a_zero_step_needs_the_shadow_guard_and_the_guard_needs_a_zero_step() {
    let base = "blue: { endpoints: [\"127.0.0.1:9000\"] }\n";
    let shadow_step = format!(
        "{base}rollout:\n  steps: [{{ weight: 0, hold: 10s }}, 50, 100]\n  analysis:\n    shadow: {{ max_mismatch_rate: \"2%\", min_compared: 20, mirror: {{ compare_headers: [etag] }} }}\n"
    );
    let spec = RunSpec::from_yaml(&shadow_step).unwrap();
    assert!(spec.rollout.is_shadow_step(0));
    assert!(!spec.rollout.is_shadow_step(1));
    let guard = spec.rollout.analysis.shadow.unwrap();
    assert_eq!((guard.max_mismatch_rate, guard.min_compared), (0.02, 20));
    assert_eq!(guard.mirror.compare_headers, ["etag"]);

    let without_guard = format!("{base}rollout: {{ steps: [0, 50, 100] }}\n");
    let error = RunSpec::from_yaml(&without_guard).unwrap_err().to_string();
    assert!(
        error.contains(
            "rollout.steps[0]: 0% sends the preview no traffic to analyse: a first step at 0% is \
             a shadow step, which needs rollout.analysis.shadow to judge it; or start above 0%"
        ),
        "{error}"
    );
    let later = format!("{base}rollout: {{ steps: [10, 0, 100] }}\n");
    let error = RunSpec::from_yaml(&later).unwrap_err().to_string();
    assert!(
        error.contains(
            "rollout.steps[1]: 0% sends the preview no traffic to analyse; only the first step \
             may be 0% (a shadow step, judged by rollout.analysis.shadow)"
        ),
        "{error}"
    );
    let without_step =
        format!("{base}rollout: {{ steps: [10, 100], analysis: {{ shadow: {{}} }} }}\n");
    let error = RunSpec::from_yaml(&without_step).unwrap_err().to_string();
    assert!(
        error.contains("rollout.analysis.shadow: judges the 0% shadow step"),
        "{error}"
    );
    let bad = format!(
        "{base}rollout:\n  steps: [0, 100]\n  analysis: {{ shadow: {{ max_mismatch_rate: \"150%\", min_compared: 0, mirror: {{ max_in_flight: 0 }} }} }}\n"
    );
    let error = RunSpec::from_yaml(&bad).unwrap_err().to_string();
    for path in [
        "rollout.analysis.shadow.max_mismatch_rate",
        "rollout.analysis.shadow.min_compared",
        "rollout.analysis.shadow.mirror.max_in_flight",
    ] {
        assert!(error.contains(path), "{path} not in {error}");
    }
    // Session 43: ranges in words, not Rust's `0%..=100%` and `1..=10000`.
    for said in [
        "rollout.analysis.shadow.max_mismatch_rate: 150% is outside 0% to 100%",
        "rollout.analysis.shadow.mirror.max_in_flight: 0 is outside 1 to 10000",
    ] {
        assert!(error.contains(said), "{said} not in {error}");
    }
}

/// Session 43: a command written as a list, as Kubernetes and Docker take one, was refused with
/// serde's `invalid type: sequence, expected a string`; it says where the arguments go.
#[test]
fn a_command_written_as_a_list_is_told_to_put_its_arguments_in_args() {
    for (command, wanted) in [
        (
            "[python3, app.py, --port, \"{port}\", 8]",
            "blue.command: a list, where command names the program alone: write command: \
             \"python3\" and its arguments in args: [\"app.py\", \"--port\", \"{port}\", \"8\"]",
        ),
        (
            "[./app]",
            "blue.command: a list, where command names the program alone: write command: \"./app\"",
        ),
    ] {
        let yaml = format!("blue: {{ command: {command} }}\n");
        let error = RunSpec::from_yaml(&yaml).unwrap_err().to_string();
        assert!(error.contains(wanted), "{command}: {error}");
    }
    let none = RunSpec::from_yaml("blue: { command: null, endpoints: [\"127.0.0.1:9000\"] }\n");
    assert_eq!(none.map(|spec| spec.blue.and_then(|b| b.command)), Ok(None));
}

/// Trial 22: a green equal to blue rolled out what served already on the first start, and was
/// skipped as "it serves already" on every restart; refused, naming `green`.
#[test]
fn a_green_that_is_the_same_workload_as_blue_is_refused() {
    let app = "{ name: v1, command: /bin/app, args: [--port, \"{port}\"] }";
    let found = problems(&format!("blue: {app}\ngreen: {app}\n"));
    assert_eq!(found.len(), 1, "{found:?}");
    // The whole line, one space between words (until user37 the message carried two runs of 26
    // spaces from a string literal continued without `\`).
    assert_eq!(
        found[0],
        "green: is the same workload as blue (command, args, env, name and the rest): a rollout \
         to it would change nothing; put the new version under green:, or remove green: to only \
         serve blue",
        "{found:?}"
    );
    let v2 = "{ name: v2, command: /bin/app, args: [--port, \"{port}\"] }";
    RunSpec::from_yaml(&format!("blue: {app}\ngreen: {v2}\n"))
        .expect("another name is another version");
}

/// Trial 22: `crossfade migrate` of the workload already active started a rollout "v2 (green) to
/// v2 (blue)"; `POST /rollout` refuses it naming `green`, as a spec's equal green is refused.
#[test]
fn a_rollout_to_the_workload_already_active_is_refused() {
    let app = "{ name: v2, command: /bin/app, args: [--port, \"{port}\"] }";
    let mut spec = RunSpec::from_yaml(&format!("blue: {app}\n")).unwrap();
    spec.green = spec.blue.clone();
    let Err(SpecError::Invalid(found)) = spec.validate_start(Slot::Green, &[]) else {
        panic!("a rollout to the active workload is refused")
    };
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "green");
    assert!(
        found[0]
            .message
            .starts_with("is the workload already active (v2, active in slot green)"),
        "{found:?}"
    );
    spec.green.as_mut().unwrap().name = Some("v3".into());
    spec.validate_start(Slot::Green, &[])
        .expect("another version");
}

/// Trial 22: an analysis waits for its checks, so a check's `timeout` as long as the progress
/// deadline would let the deadline end the step first, naming the step rather than the check.
#[test]
fn a_check_timeout_that_outlasts_the_progress_deadline_is_refused() {
    let spec = |timeout: &str| {
        format!(
            "blue: {{ endpoints: [\"127.0.0.1:9000\"] }}\nrollout:\n  progress_deadline: 1m\n  analysis:\n    checks:\n      - {{ name: slo, web: {{ url: \"http://slo/x\", json_path: \"$.v\" }}, min: 1, timeout: {timeout} }}\n"
        )
    };
    assert_eq!(
        problems(&spec("10m")),
        ["rollout.analysis.checks[0].timeout: 10m leaves no time for an analysis to conclude within rollout.progress_deadline (1m): a source that does not answer would end the step by the deadline, not by the check"]
    );
    RunSpec::from_yaml(&spec("30s")).expect("a check timeout within the deadline");
}

/// Trial 22: a shadow step is judged by comparisons only, so a mirror that sends none (`percent:
/// 0`, no method, `/` ignored) can never pass; each is refused naming its field, all at once.
#[test]
fn a_shadow_step_whose_mirror_sends_nothing_is_refused_naming_the_field() {
    let spec = |mirror: &str| {
        format!(
            "blue: {{ endpoints: [\"127.0.0.1:9000\"] }}\nrollout:\n  steps: [{{ weight: 0, hold: 10s }}, 100]\n  analysis: {{ shadow: {{ mirror: {mirror} }} }}\n"
        )
    };
    let found = problems(&spec(
        "{ percent: 0, methods: [], ignore: { paths: [/logout, /] } }",
    ));
    let paths: Vec<&str> = found
        .iter()
        .map(|p| p.split(": ").next().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "rollout.analysis.shadow.mirror.percent",
            "rollout.analysis.shadow.mirror.methods",
            "rollout.analysis.shadow.mirror.ignore.paths[1]",
        ],
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .all(|p| p.contains("every window would be inconclusive")),
        "{found:?}"
    );
    RunSpec::from_yaml(&spec(
        "{ percent: 0.5, methods: [GET], ignore: { paths: [/logout] } }",
    ))
    .expect("a mirror that sends something");
}

/// Trial report §1, §2, §7: durations that overflow an `Instant` and a `1ns` hold are refused,
/// naming the field.
#[test]
fn rollout_durations_are_bounded_above_and_holds_below() {
    for (field, yaml) in [
        (
            "rollout.progress_deadline",
            "rollout: { steps: [100], progress_deadline: 10000000000000000000s }",
        ),
        (
            "rollout.drain_timeout",
            "rollout: { steps: [100], drain_timeout: 10000000000000000000s }",
        ),
        (
            "rollout.hold",
            "rollout: { steps: [100], hold: 9000000000000000000s }",
        ),
        (
            "rollout.steps[0].hold",
            "rollout: { steps: [{ weight: 100, hold: 367days }] }",
        ),
        (
            "rollout.analysis.interval",
            "rollout: { steps: [100], analysis: { interval: 400days } }",
        ),
    ] {
        let err = RunSpec::from_yaml(yaml).unwrap_err().to_string();
        assert!(
            err.contains(field) && err.contains("above the maximum of 366 days"),
            "{field}: {err}"
        );
    }
    let yaml = "blue: { endpoints: [127.0.0.1:9000] }\nrollout: { steps: [{ weight: 50, hold: 1ms }, 100], hold: 1ns, analysis: { interval: 5ms } }\n";
    let found = problems(yaml);
    for want in [
        "rollout.steps[0].hold: 1ms is below the minimum of 10ms",
        "rollout.hold: 1ns is below the minimum of 10ms",
        "rollout.analysis.interval: 5ms is below the minimum of 10ms",
    ] {
        assert!(found.iter().any(|p| p == want), "{want} not in {found:#?}");
    }
    // A year is allowed, and the rollout machine saturates instead of overflowing.
    let ok = "blue: { endpoints: [127.0.0.1:9000] }\nrollout: { steps: [100], progress_deadline: 366days, drain_timeout: 1y }\n";
    RunSpec::from_yaml(ok).unwrap();
}

/// A value the rate and latency-increase parsers refuse is named by its field's whole path, not
/// only by the enclosing `rollout.analysis` (trial report 4, F1).
#[test]
fn a_refused_rate_or_latency_increase_names_its_field() {
    let cases = [
        (
            "max_error_rate_increase: \"NaN%\"",
            "rollout.analysis.max_error_rate_increase: \"NaN%\" is not a number",
        ),
        (
            "max_error_rate_increase: \"\"",
            "rollout.analysis.max_error_rate_increase: \"\" is not a rate (expected e.g. \"1%\")",
        ),
        (
            "max_error_rate: \"1e309%\"",
            // Trial 19: it said `inf`, not what was written.
            "rollout.analysis.max_error_rate: \"1e309%\" is not a rate between 0% and 100%",
        ),
        (
            "max_latency_increase: -5ms",
            "rollout.analysis.max_latency_increase: \"-5ms\" is not a latency increase",
        ),
        (
            "max_latency_increase: \"nan%\"",
            "rollout.analysis.max_latency_increase: \"nan%\" is not a percentage",
        ),
        (
            "max_latency_increase: 20",
            "rollout.analysis.max_latency_increase: 20 has no unit: expected a latency increase",
        ),
    ];
    for (field, expected) in cases {
        let yaml = format!("blue: {{ endpoints: [127.0.0.1:9000] }}\nrollout: {{ analysis: {{ judge: sequential, {field} }} }}");
        let err = RunSpec::from_yaml(&yaml).unwrap_err().to_string();
        assert!(err.contains(expected), "{field}: {err}");
    }
    // The JSON a state file or `POST /rollout` holds still reads a fraction.
    let json = r#"{"max_error_rate": 0.02, "max_error_rate_increase": "1%"}"#;
    let a: AnalysisConfig = serde_json::from_str(json).unwrap();
    assert_eq!((a.max_error_rate, a.max_error_rate_increase), (0.02, 0.01));
}

/// `POST /rollout`'s body errors name the field too (trial report 4, F1), and JSON's own syntax
/// errors are still JSON's.
#[test]
fn a_rollout_request_body_error_names_its_field() {
    let body = br#"{"green":{"command":"x"},"rollout":{"steps":[50,100],"analysis":{"fail_when_worse_than":"nope"}}}"#;
    let Err(SpecError::Parse(e)) = crate::service::StartRequest::from_json(body) else {
        panic!("an unknown variant is refused")
    };
    assert!(
        e.contains("rollout.analysis.fail_when_worse_than: unknown variant `nope`"),
        "{e}"
    );
    // Trial 7, G11: a body of another shape is told the shape, not a Rust type name.
    for body in [&b"[]"[..], b"1", b"\"x\"", b"null"] {
        let Err(SpecError::Parse(e)) = crate::service::StartRequest::from_json(body) else {
            panic!("a body that is not an object is refused")
        };
        assert!(
            e.starts_with("must be a JSON object like {\"green\""),
            "{e}"
        );
        assert!(!e.contains("StartRequest"), "{e}");
    }
    let Err(SpecError::Parse(e)) = crate::service::StartRequest::from_json(b"{\"green\": []}")
    else {
        panic!("a green that is not a map is refused")
    };
    assert!(!e.contains("struct"), "{e}");
    let Err(SpecError::Parse(e)) = crate::service::StartRequest::from_json(b"{\"green\": ") else {
        panic!("a truncated body is refused")
    };
    assert!(e.contains("EOF"), "{e}");
    let Err(SpecError::Parse(e)) = crate::service::StartRequest::from_json(b"not json") else {
        panic!("a body that is not JSON is refused")
    };
    assert_eq!(e, "not valid JSON: expected ident at line 1 column 2");
    let body = r#"{"green":{"endpoints":["127.0.0.1:9000"]},"rollout":{"steps":[50,100],"analysis":{"max_error_rate":"2%"}}}"#;
    let read = crate::service::StartRequest::from_json(body.as_bytes()).unwrap();
    assert!(
        (read
            .rollout
            .unwrap()
            .over(&RolloutConfig::default())
            .unwrap()
            .analysis
            .max_error_rate
            - 0.02)
            .abs()
            < 1e-12
    );
}

/// A `max_p99_ratio` that is not a finite number is called so, not "below 1" (trial report 4, F7).
#[test]
fn a_max_p99_ratio_that_is_not_a_number_is_called_so() {
    for (text, expected) in [
        (
            ".nan",
            "rollout.analysis.max_p99_ratio: NaN is not a number",
        ),
        (
            ".inf",
            "rollout.analysis.max_p99_ratio: inf is not a number",
        ),
        ("0.5", "rollout.analysis.max_p99_ratio: 0.5 is below 1"),
    ] {
        let yaml = format!(
            "blue: {{ endpoints: [127.0.0.1:9000] }}\nrollout: {{ analysis: {{ max_p99_ratio: {text} }} }}"
        );
        let err = RunSpec::from_yaml(&yaml).unwrap_err().to_string();
        assert!(err.contains(expected), "{text}: {err}");
    }
}

/// The parse error for `value` in `rollout.analysis.<field>`.
fn analysis_error(field: &str, value: &str) -> String {
    let yaml = format!(
        "green: {{ endpoints: [127.0.0.1:1] }}\nrollout:\n  analysis:\n    {field}: {value}\n"
    );
    match RunSpec::from_yaml(&yaml) {
        Err(SpecError::Parse(message)) => message,
        other => panic!("{field}: {value}: expected a parse error, got {other:?}"),
    }
}

/// Trial report 4, F7: a sequence, a map or `null` where a word, a number or a map is expected
/// names the field and what it takes, in a spec writer's words (no YAML tags, no `unit value`,
/// no `f64`, no Rust type names).
#[test]
fn a_value_of_the_wrong_shape_names_its_field_and_what_it_takes() {
    let words = "expected \"blue\" or \"allowance\"";
    for (field, value, expected) in [
        ("fail_when_worse_than", "[blue]", format!("invalid type: sequence, {words}")),
        ("fail_when_worse_than", "{ a: 1 }", format!("invalid type: map, {words}")),
        ("fail_when_worse_than", "1", format!("invalid type: integer `1`, {words}")),
        (
            "fail_when_worse_than",
            "null",
            format!("null is not allowed here: {words} (leave the field out for the default, \"blue\")"),
        ),
        ("fail_when_worse_than", "~", format!("null is not allowed here: {words}")),
        ("fail_when_worse_than", "\"\"", format!("invalid value: string \"\", {words}")),
        (
            "fail_when_worse_than",
            "green",
            "unknown variant `green`, expected `blue` or `allowance`".into(),
        ),
        ("judge", "[sequential]", "invalid type: sequence, expected \"threshold\" or \"sequential\"".into()),
        ("on_inconclusive", "null", "null is not allowed here: expected \"pause\" or \"rollback\" (leave the field out for the default, \"rollback\")".into()),
        ("alpha", "[0.01]", "invalid type: sequence, expected a number such as 0.05".into()),
        ("alpha", "null", "null is not allowed here: expected a number such as 0.05 (leave the field out for its default)".into()),
        ("beta", "\"0.05\"", "invalid type: string \"0.05\", expected a number such as 0.05".into()),
        ("max_p99_ratio", "{ a: 1 }", "invalid type: map, expected a number such as 1.5".into()),
        ("min_requests", "~", "null is not allowed here: expected a whole number such as 50".into()),
        ("min_requests", "-1", "invalid value: integer `-1`, expected a whole number such as 50".into()),
        ("max_inconclusive", "1.5", "invalid type: floating point `1.5`, expected a whole number such as 50".into()),
        ("max_inconclusive", "5000000000", "5000000000 is too large for this field".into()),
        ("max_error_rate", "null", "null is not allowed here: expected a rate such as \"1%\"".into()),
        ("max_latency_increase", "null", "null is not allowed here: expected a latency increase such as \"20%\" or \"10ms\"".into()),
        ("max_latency_increase", "20", "20 has no unit: expected a latency increase such as \"20%\" or \"20ms\"".into()),
        ("shadow", "[1]", "invalid type: sequence, expected a map of shadow settings".into()),
        ("checks", "null", "invalid type: null, expected a sequence".into()),
    ] {
        let message = analysis_error(field, value);
        let named = format!("rollout.analysis.{field}: {expected}");
        assert!(message.starts_with(&named), "{field}: {value}:\n  got {message}\n  want {named}");
    }
    // A map where the whole analysis belongs, and the gates' keywords.
    let err = RunSpec::from_yaml("rollout: { analysis: null }")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("rollout.analysis: invalid type: null, expected a map of analysis settings"),
        "{err}"
    );
    let err =
        RunSpec::from_yaml("rollout: { gates: [{ name: g, at: [before_step], url: http://x }] }")
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("rollout.gates[0].at: invalid type: sequence, expected \"before_rollout\" or"),
        "{err}"
    );
    // A gate's `at` has no default to leave the field out for.
    let err = RunSpec::from_yaml("rollout: { gates: [{ name: g, at: ~, url: http://x }] }")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("rollout.gates[0].at: null is not allowed here: expected \"before_rollout\"")
            && !err.contains("leave the field out"),
        "{err}"
    );
    // Durations and step weights, read by the proxy crate's readers.
    for (yaml, expected) in [
        (
            "rollout: { hold: null }",
            "rollout.hold: null is not allowed here: expected a duration with a unit",
        ),
        (
            "rollout: { hold: true }",
            "rollout.hold: invalid type: boolean `true`, expected a duration with a unit",
        ),
        (
            "rollout: { hold: 30 }",
            "rollout.hold: \"30\" needs a unit (e.g. \"30ms\" or \"30s\")",
        ),
        (
            "rollout: { steps: [{ weight: null }] }",
            "null is not allowed here: expected a percentage such as 25 or \"12.5%\"",
        ),
        (
            "rollout: { steps: [{ weight: [50] }] }",
            "invalid type: sequence, expected a percentage such as 25 or \"12.5%\"",
        ),
    ] {
        let err = RunSpec::from_yaml(yaml).unwrap_err().to_string();
        assert!(err.contains(expected), "{yaml}: {err}");
    }
    // The right shapes still read, in YAML and in JSON.
    let spec = RunSpec::from_yaml(
        "green: { endpoints: [127.0.0.1:1] }\nblue: { endpoints: [127.0.0.1:2] }\nrollout:\n  \
         analysis: { judge: sequential, fail_when_worse_than: allowance, on_inconclusive: pause, \
         alpha: 0.02, beta: 0.1, min_requests: 70, max_inconclusive: 2, max_p99_ratio: ~ }\n",
    )
    .unwrap();
    let a = &spec.rollout.analysis;
    assert_eq!(a.fail_when_worse_than, FailWhenWorseThan::Allowance);
    assert_eq!(
        (a.judge, a.on_inconclusive),
        (JudgeKind::Sequential, InconclusivePolicy::Pause)
    );
    assert_eq!(
        (a.alpha, a.beta, a.min_requests, a.max_inconclusive),
        (0.02, 0.1, 70, 2)
    );
    assert_eq!(a.max_p99_ratio, None);
    let json = serde_json::to_string(&spec.rollout).unwrap();
    let back: RolloutConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, spec.rollout);
}

/// A latency increase whose two-decimal form reads back as another value is written in full, so
/// an accepted spec survives a round trip (found by the `spec_parser` property test).
#[test]
fn a_small_latency_increase_survives_a_round_trip() {
    for text in ["0.001%", "12.345%", "20%", "10ms"] {
        let yaml = format!(
            "blue: {{ endpoints: [127.0.0.1:9000] }}\nrollout: {{ steps: [100], analysis: {{ max_latency_increase: \"{text}\" }} }}\n"
        );
        let spec = RunSpec::from_yaml(&yaml).unwrap();
        let again = RunSpec::from_yaml(&serde_yaml_ng::to_string(&spec).unwrap()).unwrap();
        assert_eq!(again, spec, "{text}");
    }
}

/// newuser34 D: `crossfade run`'s shutdown drain was the proxy's fixed 30 s, which no spec could
/// set (`rollout.drain_timeout` is the retiring backend's). The spec's top-level `drain_timeout`
/// is the proxy config's, with its default and rules, and `drain_grace` is held to half of it.
#[test]
fn drain_timeout_reaches_the_proxy_and_bounds_drain_grace() {
    let spec = |extra: &str| {
        RunSpec::from_yaml(&format!("blue: {{ endpoints: [127.0.0.1:9000] }}\n{extra}"))
    };
    let endpoints = vec![std::net::SocketAddr::from(([127, 0, 0, 1], 9000))];
    for (extra, drain) in [
        ("", Duration::from_secs(30)),
        // The default grace (1 s) is at most half of it.
        ("drain_timeout: 2s", Duration::from_secs(2)),
        (
            "drain_timeout: 2m\ndrain_grace: 45s",
            Duration::from_secs(120),
        ),
        ("drain_timeout: 0s\ndrain_grace: 0s", Duration::ZERO),
        // check34: a drain_timeout below 2 s alone was refused for the default drain_grace (1 s)
        // nobody wrote; unset, the grace is held to half of it.
        ("drain_timeout: 0s", Duration::ZERO),
        ("drain_timeout: 1s", Duration::from_secs(1)),
    ] {
        let read = spec(extra).unwrap_or_else(|e| panic!("{extra}: {e}"));
        assert_eq!(read.drain_timeout, drain, "{extra}");
        let config = read.proxy_config(Slot::Blue, endpoints.clone(), read.blue_protocol());
        assert_eq!(config.drain_timeout, drain, "{extra}");
        assert!(config.drain_grace <= drain / 2, "{extra}");
        assert!(config.validate().is_ok(), "{extra}");
        let grace_warned =
            (config.warnings().iter()).any(|w| w.to_string().contains("drain_grace"));
        assert!(!grace_warned, "{extra}: the proxy cuts no grace");
        // Not the retiring backend's drain.
        assert_eq!(
            read.rollout.drain_timeout,
            RolloutConfig::default().drain_timeout
        );
    }
    for (extra, expected) in [
        (
            "drain_timeout: 4s\ndrain_grace: 3s",
            "drain_grace: 3s is above 2s, half of drain_timeout (4s)",
        ),
        ("drain_timeout: 5", "drain_timeout: \"5\" needs a unit"),
        (
            "drain_timeout: 400days",
            "drain_timeout: \"400days\" is above the maximum of 366 days",
        ),
    ] {
        let message = spec(extra).expect_err(extra).to_string();
        assert!(
            message.contains(expected),
            "{extra}:\n  got  {message}\n  want {expected}"
        );
    }
}

/// `drain_grace` is set from a run spec as a proxy config sets it, and held to the rule the proxy
/// would otherwise apply unsaid: at most half of its shutdown drain.
#[test]
fn drain_grace_reaches_the_proxy_and_is_held_to_half_its_drain() {
    let spec = |extra: &str| {
        RunSpec::from_yaml(&format!("blue: {{ endpoints: [127.0.0.1:9000] }}\n{extra}"))
    };
    let endpoints = vec![std::net::SocketAddr::from(([127, 0, 0, 1], 9000))];
    for (extra, grace) in [
        ("", Duration::from_secs(1)),
        ("drain_grace: 250ms", Duration::from_millis(250)),
        ("drain_grace: 0s", Duration::ZERO),
        ("drain_grace: 15s", Duration::from_secs(15)),
    ] {
        let read = spec(extra).unwrap_or_else(|e| panic!("{extra}: {e}"));
        assert_eq!(read.drain_grace(), grace, "{extra}");
        let config = read.proxy_config(Slot::Blue, endpoints.clone(), read.blue_protocol());
        assert_eq!(config.drain_grace, grace, "{extra}");
        assert!(config.validate().is_ok(), "{extra}");
    }
    for (extra, expected) in [
        (
            "drain_grace: 16s",
            "drain_grace: 16s is above 15s, half of drain_timeout (30s), the proxy's drain on shutdown",
        ),
        ("drain_grace: 5", "drain_grace: \"5\" needs a unit"),
        (
            "drain_grace: 400days",
            "drain_grace: \"400days\" is above the maximum of 366 days",
        ),
        ("drain_grace: [1s]", "drain_grace: invalid type: sequence"),
    ] {
        let message = spec(extra).expect_err(extra).to_string();
        assert!(
            message.contains(expected),
            "{extra}:\n  got  {message}\n  want {expected}"
        );
    }
}

/// Trial 12, M13: an unclosed `[` is a YAML syntax error, reported as one (not as the wrong
/// type the reader met first), in a spec and in a rollout file; a port above 65535 is named.
#[test]
fn an_unclosed_bracket_and_a_port_above_65535_get_the_real_problem() {
    let Err(SpecError::Parse(e)) = RunSpec::from_yaml("blue: [\n") else {
        panic!("an unclosed [ is refused")
    };
    assert!(e.starts_with("YAML syntax: "), "{e}");
    assert!(!e.contains("invalid type"), "{e}");
    assert!(e.contains("line "), "{e}");
    let Err(SpecError::Parse(e)) = crate::service::StartRequest::from_yaml("green: [\n") else {
        panic!("an unclosed [ is refused")
    };
    assert!(e.starts_with("YAML syntax: "), "{e}");
    // Well-formed YAML of the wrong type is still named by its field.
    let Err(SpecError::Parse(e)) = RunSpec::from_yaml("blue: []\n") else {
        panic!("a list for blue is refused")
    };
    assert!(e.starts_with("blue: invalid type: sequence"), "{e}");

    let Err(SpecError::Parse(e)) =
        RunSpec::from_yaml("listen: 127.0.0.1:70000\nblue: { endpoints: [127.0.0.1:9000] }\n")
    else {
        panic!("port 70000 is refused")
    };
    assert!(
        e.starts_with("listen: \"127.0.0.1:70000\" is not an address: port 70000 is above 65535"),
        "{e}"
    );
}

/// Trial 12, M15: a flag's rate reads `20%` and `0.2` alike, with the spec's reader, and a rate
/// out of range or not a rate says both notations.
#[test]
fn a_flag_rate_reads_a_percentage_or_a_fraction() {
    for (text, rate) in [
        ("20%", 0.2),
        ("0.2", 0.2),
        ("0", 0.0),
        ("100%", 1.0),
        ("0.5%", 0.005),
    ] {
        let read = crate::spec::parse_rate(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert!((read - rate).abs() < 1e-12, "{text}: {read}");
    }
    // "150" is above 100% either way: not told to write "150%", which is refused too.
    for text in ["150%", "150", "-1%", "abc", "NaN"] {
        let e = crate::spec::parse_rate(text).expect_err(text);
        assert!(
            e.starts_with(&format!("`{text}` is ")) && e.contains("20% or a fraction such as 0.2"),
            "{text}: {e}"
        );
    }
    // Session 43: `20` meant as 20% was told "`20` is outside 0% to 100%".
    for (text, said) in [
        ("20", "`20` is 2000% as a fraction, above 100%: write 20% for 20 percent (a number without % is a fraction: 0.2 is 20%)"),
        ("1.5", "`1.5` is 150% as a fraction, above 100%: write 1.5% for 1.5 percent"),
    ] {
        let e = crate::spec::parse_rate(text).expect_err(text);
        assert!(e.starts_with(said), "{text}: {e}");
    } // Trial 20: a negative rate says so, not only that it is outside the range.
    for text in ["-5%", "-0.2", "-1e400%"] {
        let e = crate::spec::parse_rate(text).expect_err(text);
        assert!(
            e.starts_with(&format!("`{text}` is negative: a rate cannot be negative")),
            "{text}: {e}"
        );
    }
}

/// `route.sticky` reaches the proxy's route as written (case C08 driven by a rollout), and the
/// proxy's rule for it is reported under the spec's path.
#[test]
fn route_sticky_reaches_the_proxy_route_and_its_problems_name_the_spec_path() {
    let yaml = "route: { sticky: { cookie: cf_user, set: true } }\n\
                blue: { endpoints: [127.0.0.1:9000] }";
    let spec = RunSpec::from_yaml(yaml).unwrap();
    let config = spec.proxy_config(
        Slot::Blue,
        vec!["127.0.0.1:9000".parse().unwrap()],
        spec.blue_protocol(),
    );
    let sticky = config.routes[0].sticky.as_ref().expect("sticky passed on");
    assert_eq!(
        (sticky.cookie.as_deref(), sticky.set),
        (Some("cf_user"), true)
    );
    let both = "route: { sticky: { header: X-User, cookie: c } }\n\
                blue: { endpoints: [127.0.0.1:9000] }";
    assert_eq!(
        problems(both),
        ["route.sticky: set exactly one of header, cookie, client_address"]
    );
}

/// `route.response_timeout` reaches the proxy's route (case C13's hang, in a rollout), and 0 is
/// refused under the spec's path by the proxy's rule.
#[test]
fn route_response_timeout_reaches_the_proxy_route_and_zero_is_refused() {
    let yaml = "route: { response_timeout: 1500ms }\nblue: { endpoints: [127.0.0.1:9000] }";
    let spec = RunSpec::from_yaml(yaml).unwrap();
    let config = spec.proxy_config(
        Slot::Blue,
        vec!["127.0.0.1:9000".parse().unwrap()],
        spec.blue_protocol(),
    );
    assert_eq!(
        config.routes[0].response_timeout,
        Some(Duration::from_millis(1500))
    );
    let zero = "route: { response_timeout: 0s }\nblue: { endpoints: [127.0.0.1:9000] }";
    assert_eq!(problems(zero), ["route.response_timeout: must be above 0s"]);
}

/// The proxy's warnings about the served route reach a spec's warnings under its path: a minted
/// `route.sticky` cookie named `__Host-...` (no browser keeps it without TLS, which a run's proxy
/// never has); an ordinary spec gets none.
#[test]
fn a_sticky_cookie_with_a_host_prefix_is_warned_under_the_spec_path() {
    let yaml = "route: { sticky: { cookie: __Host-u, set: true } }\n\
                blue: { endpoints: [127.0.0.1:9000] }";
    let spec = RunSpec::from_yaml(yaml).unwrap();
    let warnings = spec.warnings(yaml);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("route.sticky.cookie: \"__Host-u\": browsers keep"),
        "{warnings:?}"
    );
    let plain = "blue: { endpoints: [127.0.0.1:9000] }";
    assert_eq!(
        RunSpec::from_yaml(plain).unwrap().warnings(plain),
        Vec::<String>::new()
    );
}

/// Checks and gates are bounded: every analysis records each check's result with the rollout
/// (in Kubernetes mode in the TrafficShift's status, which etcd keeps under 1.5 MB), so a list
/// of a hundred would make those writes fail mid-rollout (kubetry30). 20 pass, 21 do not, each
/// naming the list.
#[test]
fn more_than_twenty_checks_or_gates_are_refused_naming_the_list() {
    let spec = |checks: usize, gates: usize| {
        let mut yaml = String::from("blue: { endpoints: [127.0.0.1:9000] }\nrollout:\n");
        yaml.push_str("  gates:\n");
        for i in 0..gates {
            yaml.push_str(&format!(
                "    - {{ name: g{i}, url: \"http://127.0.0.1:9/g\", at: before_step }}\n"
            ));
        }
        yaml.push_str("  analysis:\n    checks:\n");
        for i in 0..checks {
            yaml.push_str(&format!(
                "      - {{ name: c{i}, web: {{ url: \"http://127.0.0.1:9/c\", json_path: \"$.v\" }}, max: 1 }}\n"
            ));
        }
        yaml
    };
    RunSpec::from_yaml(&spec(MAX_CHECKS, MAX_GATES)).expect("20 of each");
    let refused = problems(&spec(MAX_CHECKS + 1, MAX_GATES + 1));
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused[1].starts_with("rollout.gates: 21 gates is more than 20"),
        "{refused:?}"
    );
    assert!(
        refused[0].starts_with("rollout.analysis.checks: 21 checks is more than 20"),
        "{refused:?}"
    );
}

/// newuser 33: the proxy's rules were checked with a stand-in endpoint 127.0.0.1:1 for the
/// instances' ports, so a spec whose `listen` or `admin` is on port 1 was refused with
/// `route.blue.endpoints[0]: 127.0.0.1:1 is the proxy's own listen address`, a field the spec
/// does not have. Every port the stand-in could take is tried here.
#[test]
fn a_listen_or_admin_on_a_low_port_is_not_taken_for_an_instance_endpoint() {
    for (listen, admin) in [(1, 9901), (2, 1), (1, 2), (3, 1)] {
        let yaml = format!(
            "listen: 127.0.0.1:{listen}\nadmin: 127.0.0.1:{admin}\nroute: {{ name: web }}\n\
             blue: {{ command: /bin/true, args: [\"{{port}}\"] }}\n"
        );
        let spec = RunSpec::from_yaml(&yaml);
        assert!(spec.is_ok(), "listen :{listen}, admin :{admin}: {spec:?}");
    }
}
