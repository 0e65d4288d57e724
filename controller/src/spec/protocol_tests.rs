//! A workload's `protocol`: read for blue and green alike, refused naming its field and words,
//! carried to the proxy config, to `crossfade migrate` / `POST /rollout` and to state files.

use crossfade_proxy::config::UpstreamProtocol;

use super::*;
use crate::service::StartRequest;
use crate::state::ServiceState;

const BLUE_H2C_GREEN_ENDPOINTS: &str = r#"
blue: { command: ./app, args: ["--port", "{port}"], protocol: h2c }
green: { endpoints: [127.0.0.1:9001] }
"#;

#[test]
fn protocol_is_read_per_workload_and_defaults_to_http1() {
    let spec = RunSpec::from_yaml(BLUE_H2C_GREEN_ENDPOINTS).unwrap();
    assert_eq!(spec.blue.as_ref().unwrap().protocol, UpstreamProtocol::H2c);
    assert_eq!(
        spec.green.as_ref().unwrap().protocol,
        UpstreamProtocol::Http1
    );
    let green_h2c = "blue: { endpoints: [127.0.0.1:9000] }\n\
                     green: { endpoints: [127.0.0.1:9001], protocol: h2c }";
    let spec = RunSpec::from_yaml(green_h2c).unwrap();
    assert_eq!(
        spec.blue.as_ref().unwrap().protocol,
        UpstreamProtocol::Http1
    );
    assert_eq!(spec.green.as_ref().unwrap().protocol, UpstreamProtocol::H2c);
}

#[test]
fn the_active_workloads_protocol_goes_to_its_backend_in_the_proxy_config() {
    let spec = RunSpec::from_yaml(BLUE_H2C_GREEN_ENDPOINTS).unwrap();
    let endpoint: SocketAddr = "127.0.0.1:9000".parse().unwrap();
    let config = spec.proxy_config(Slot::Green, vec![endpoint], UpstreamProtocol::H2c);
    let route = &config.routes[0];
    assert_eq!(route.green.protocol, UpstreamProtocol::H2c);
    assert_eq!(route.green.endpoints, [endpoint]);
    assert_eq!(route.blue.protocol, UpstreamProtocol::Http1);
    config.validate().unwrap();
}

#[test]
fn an_unknown_protocol_is_refused_naming_the_field_and_the_words() {
    for (yaml, field) in [
        (
            "blue: { endpoints: [127.0.0.1:9000] }\ngreen: { endpoints: [127.0.0.1:9001], protocol: grpc }",
            "green.protocol",
        ),
        ("blue: { command: ./app, args: ['{port}'], protocol: http2 }", "blue.protocol"),
    ] {
        let err = RunSpec::from_yaml(yaml).unwrap_err().to_string();
        assert!(err.contains(field), "{err}");
        assert!(err.contains("expected `http1` or `h2c`"), "{err}");
    }
    let err = RunSpec::from_yaml("blue: { endpoints: [127.0.0.1:9000], protocol: [h2c] }")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("blue.protocol: invalid type: sequence, expected \"http1\" or \"h2c\""),
        "{err}"
    );
}

#[test]
fn an_h2c_workload_is_written_with_its_protocol_and_reads_back() {
    let spec = RunSpec::from_yaml(BLUE_H2C_GREEN_ENDPOINTS).unwrap();
    let yaml = serde_yaml_ng::to_string(&spec).unwrap();
    assert!(yaml.contains("protocol: h2c"), "{yaml}");
    assert_eq!(RunSpec::from_yaml(&yaml).unwrap(), spec);
    // The default is left out, as a proxy config's backend leaves it out.
    let green = serde_json::to_value(spec.green.as_ref().unwrap()).unwrap();
    assert!(green.get("protocol").is_none(), "{green}");
}

#[test]
fn describe_says_an_h2c_workload_is_spoken_to_over_h2c() {
    let spec = RunSpec::from_yaml(BLUE_H2C_GREEN_ENDPOINTS).unwrap();
    assert_eq!(
        spec.blue.unwrap().describe(),
        "`./app --port {port}` ×1 instance over h2c"
    );
    assert_eq!(spec.green.unwrap().describe(), "endpoints 127.0.0.1:9001");
}

#[test]
fn a_migrate_file_and_a_post_rollout_body_carry_greens_protocol() {
    let file = "green: { command: ./app-v2, args: ['{port}'], protocol: h2c }";
    let request = StartRequest::from_yaml(file).unwrap();
    assert_eq!(request.green.unwrap().protocol, UpstreamProtocol::H2c);
    let body = br#"{"green": {"endpoints": ["127.0.0.1:9001"], "protocol": "h2c"}}"#;
    let request = StartRequest::from_json(body).unwrap();
    assert_eq!(request.green.unwrap().protocol, UpstreamProtocol::H2c);

    let err = StartRequest::from_yaml("green: { endpoints: [127.0.0.1:9001], protocol: h3 }")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("green.protocol: unknown variant `h3`, expected `http1` or `h2c`"),
        "{err}"
    );
    let body = br#"{"green": {"endpoints": ["127.0.0.1:9001"], "protocol": "H2C"}}"#;
    let err = StartRequest::from_json(body).unwrap_err().to_string();
    assert!(
        err.contains("green.protocol: unknown variant `H2C`, expected `http1` or `h2c`"),
        "{err}"
    );
}

/// State files written before `protocol` existed hold workloads without it: they load as
/// `http1`, and compare equal to a spec's workload that leaves it out (so a restart does not
/// take an unchanged `blue:` for an edit).
#[test]
fn a_state_file_without_protocol_loads_its_workloads_as_http1() {
    let old = r#"{"version":1,"route":"web","active":"green","active_pids":[],
        "last_rollout_id":1,"rollout":null,"events":[],
        "active_workload":{"name":"v2","command":"./app","args":["--port","{port}"],"env":{},
            "workdir":null,"instances":1,"endpoints":[],
            "readiness":{"path":"/healthz","timeout":"1s","interval":"200ms","deadline":"30s"},
            "stop_grace":"10s"}}"#;
    let state: ServiceState = serde_json::from_str(old).unwrap();
    let active = state.active_workload.as_ref().unwrap();
    assert_eq!(active.protocol, UpstreamProtocol::Http1);
    assert_eq!(
        serde_json::to_value(active).unwrap(),
        serde_json::to_value(WorkloadSpec {
            name: Some("v2".into()),
            command: Some("./app".into()),
            args: vec!["--port".into(), "{port}".into()],
            ..WorkloadSpec::default()
        })
        .unwrap()
    );

    // An h2c workload is saved with its protocol and loads back with it.
    let mut state = state;
    state.active_workload.as_mut().unwrap().protocol = UpstreamProtocol::H2c;
    let saved = serde_json::to_string(&state).unwrap();
    assert!(saved.contains(r#""protocol":"h2c""#), "{saved}");
    let again: ServiceState = serde_json::from_str(&saved).unwrap();
    assert_eq!(
        again.active_workload.unwrap().protocol,
        UpstreamProtocol::H2c
    );
}
