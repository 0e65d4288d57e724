use super::*;
use crate::config::ProxyConfig;
use crate::error::ErrorKind;

const ROUTE: &str = "routes: [{ name: web, blue: { endpoints: [127.0.0.1:9000] } }]\n";

fn parse(access_log: &str) -> Result<ProxyConfig, ConfigError> {
    ProxyConfig::from_yaml(&format!("access_log: {access_log}\n{ROUTE}"))
}

#[test]
fn access_log_takes_off_stdout_or_a_path_and_is_off_by_default() {
    let config = ProxyConfig::from_yaml(ROUTE).unwrap();
    assert_eq!(config.access_log, AccessLogConfig::Off);
    assert_eq!(parse("off").unwrap().access_log, AccessLogConfig::Off);
    assert_eq!(parse("stdout").unwrap().access_log, AccessLogConfig::Stdout);
    let file = AccessLogConfig::File("/var/log/a.log".into());
    assert_eq!(parse("/var/log/a.log").unwrap().access_log, file);
    let written = serde_json::to_value(parse("/var/log/a.log").unwrap()).unwrap();
    assert_eq!(written["access_log"], "/var/log/a.log");
}

#[test]
fn a_wrong_access_log_value_is_refused_naming_the_field() {
    for value in ["''", "~", "12", "[a]", "true"] {
        let message = parse(value).unwrap_err().to_string();
        assert!(message.contains("access_log"), "{value}: {message}");
        assert!(message.contains("off, stdout or a file path"), "{message}");
    }
}

#[test]
fn an_access_log_file_that_cannot_be_opened_is_refused_naming_access_log() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("access.log");
    let config = AccessLogConfig::File(missing.clone());
    let error = config.check().unwrap_err();
    let problem = &error.problems()[0];
    assert_eq!(problem.path, "access_log");
    assert!(
        problem
            .message
            .starts_with(&format!("cannot open {} for appending", missing.display())),
        "{problem}"
    );
    // A directory is no file to append to either.
    let error = AccessLogConfig::File(dir.path().into())
        .check()
        .unwrap_err();
    assert_eq!(error.problems()[0].path, "access_log");
    assert!(AccessLogConfig::Off.check().is_ok());
}

fn record(served: Served) -> Record {
    let request = Request::post("/a/b?token=secret")
        .header("host", "shop.test")
        .body(())
        .unwrap();
    Record {
        time: SystemTime::UNIX_EPOCH + Duration::from_micros(1_764_619_454_123_456),
        client: HeaderValue::from_static("10.1.2.3"),
        method: request.method().clone(),
        uri: request.uri().clone(),
        host: request.headers().get("host").cloned(),
        version: Version::HTTP_11,
        status: 502,
        served,
        bytes: 12,
        completed: true,
        duration: Duration::from_micros(1_500),
    }
}

fn line(record: &Record) -> serde_json::Value {
    let mut text = Vec::new();
    writer::format(record, &mut text);
    assert_eq!(text.last(), Some(&b'\n'), "one line, newline-terminated");
    assert_eq!(text.iter().filter(|b| **b == b'\n').count(), 1);
    serde_json::from_slice(&text).unwrap()
}

#[test]
fn a_line_has_every_documented_field_and_no_query_string() {
    let error = Error::Upstream {
        route: "web".into(),
        backend: Slot::Green,
        kind: ErrorKind::Reset,
        source: None,
        endpoint: Some("127.0.0.1:9001".parse().unwrap()),
        attempts: 2,
    };
    let value = line(&record(Served::of_error(&error)));
    let expected = serde_json::json!({
        "time": "2025-12-01T20:04:14.123456Z",
        "client": "10.1.2.3",
        "method": "POST",
        "host": "shop.test",
        "path": "/a/b",
        "protocol": "HTTP/1.1",
        "status": 502,
        "route": "web",
        "backend": "green",
        "endpoint": "127.0.0.1:9001",
        "attempts": 2,
        "duration_us": 1500,
        "response_bytes": 12,
        "completed": true,
        "error": "reset",
    });
    assert_eq!(value, expected);
}

#[test]
fn a_local_answer_names_its_reason_and_no_backend_when_none_was_chosen() {
    let value = line(&record(Served::of_error(&Error::NoRoute)));
    assert_eq!(value["error"], "no_route");
    assert_eq!(value["route"], serde_json::Value::Null);
    assert_eq!(value["backend"], serde_json::Value::Null);
    assert_eq!(value["attempts"], 0);
}

#[test]
fn the_warn_budget_admits_so_many_lines_a_second_and_counts_the_rest() {
    let limit = LogLimit::default();
    assert_eq!(limit.admit(7, 2), Some(0));
    assert_eq!(limit.admit(7, 2), Some(0));
    assert_eq!(limit.admit(7, 2), None);
    assert_eq!(limit.admit(7, 2), None);
    assert_eq!(
        limit.admit(8, 2),
        Some(2),
        "the next line says how many were left out"
    );
    assert_eq!(limit.admit(8, 2), Some(0));
    assert_eq!(limit.admit(8, 2), None);
}
