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

/// `value` (YAML) as `access_log` is refused, saying to write `keyword`, or `./word` for a file
/// of that name.
fn refused_naming(value: &str, keyword: &str, word: &str) {
    let message = parse(value).unwrap_err().to_string();
    assert!(
        message.contains(&format!(
            "access_log: \"{}\" is not a destination this proxy knows",
            value.trim_matches('\'')
        )),
        "{value}: {message}"
    );
    assert!(
        message.contains(&format!("write {keyword}, or ./{word} for such a file")),
        "{message}"
    );
}

/// check32: the rest of that family, the words other tools use for standard output (`-`:
/// gunicorn's and uvicorn's `--access-logfile -`) and for no log (`none`, `disabled`, `false`,
/// `null` quoted), each appended every request to a file of that name beside the config, which
/// `crossfade check` created; each is refused naming the keyword, and `./none` names such a file.
#[test]
fn words_for_standard_output_or_no_log_are_refused_not_taken_for_a_file() {
    for (value, keyword, word) in [
        ("'-'", "stdout", "-"),
        ("none", "off", "none"),
        ("None", "off", "None"),
        ("disabled", "off", "disabled"),
        ("'false'", "off", "false"),
        ("'null'", "off", "null"),
    ] {
        refused_naming(value, keyword, word);
    }
    let file = AccessLogConfig::File("./none".into());
    assert_eq!(parse("./none").unwrap().access_log, file);
    let file = AccessLogConfig::File("-.log".into());
    assert_eq!(parse("-.log").unwrap().access_log, file);
}

/// Session 32: `access_log: stderr` (Caddy's and HAProxy's word for it) appended every request to
/// a file named `stderr` beside the config, as did Caddy's `discard`; both are refused naming
/// the keyword to write, and `./stderr` still names such a file.
#[test]
fn other_proxies_destination_words_are_refused_not_taken_for_a_file() {
    for (value, keyword, word) in [
        ("stderr", "stdout", "stderr"),
        ("STDERR", "stdout", "STDERR"),
        ("' stderr'", "stdout", "stderr"),
        ("discard", "off", "discard"),
        ("Discard", "off", "Discard"),
    ] {
        refused_naming(value, keyword, word);
    }
    let file = AccessLogConfig::File("./stderr".into());
    assert_eq!(parse("./stderr").unwrap().access_log, file);
    let file = AccessLogConfig::File("stderr.log".into());
    assert_eq!(parse("stderr.log").unwrap().access_log, file);
}

#[test]
fn off_or_stdout_in_another_case_or_with_spaces_is_refused_not_taken_for_a_file() {
    for (value, keyword) in [
        ("OFF", "off"),
        ("Off", "off"),
        ("'off '", "off"),
        ("Stdout", "stdout"),
        ("' stdout'", "stdout"),
    ] {
        let message = parse(value).unwrap_err().to_string();
        assert!(
            message.contains(&format!(
                "access_log: \"{}\" is not {keyword}",
                value.trim_matches('\'')
            )),
            "{value}: {message}"
        );
        assert!(
            message.contains(&format!("write {keyword}, or ./")),
            "{message}"
        );
    }
    let file = AccessLogConfig::File("./off".into());
    assert_eq!(parse("./off").unwrap().access_log, file);
    let file = AccessLogConfig::File("offline.log".into());
    assert_eq!(parse("offline.log").unwrap().access_log, file);
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

/// `crossfade check` creates nothing: a missing log file in a directory that takes it passes the
/// check and is not there after it (check32: the check created it).
#[test]
fn checking_a_missing_access_log_file_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    AccessLogConfig::File(path.clone()).check().unwrap();
    assert!(!path.exists(), "the check created {}", path.display());
    std::fs::write(&path, "kept\n").unwrap();
    AccessLogConfig::File(path.clone()).check().unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "kept\n");
}

fn record(served: Served) -> Record {
    let request = Request::post("/a/b?token=secret")
        .header("host", "shop.test")
        .body(())
        .unwrap();
    Record {
        time: SystemTime::UNIX_EPOCH + Duration::from_micros(1_764_619_454_123_456),
        client: HeaderValue::from_static("10.1.2.3"),
        request_id: Some(HeaderValue::from_static(
            "0b6a3c1e-5d0f-4a8e-9c7b-2f1e0d3c4b5a",
        )),
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
    writer::Formatter::default().format(record, &mut text);
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
        "request_id": "0b6a3c1e-5d0f-4a8e-9c7b-2f1e0d3c4b5a",
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

/// The line as `serde_json` writes the documented fields from a struct: the reference the
/// formatter's hand-laid lines must equal byte for byte.
fn reference(record: &Record) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        time: String,
        client: &'a str,
        method: &'a str,
        host: Option<String>,
        path: &'a str,
        protocol: &'static str,
        status: u16,
        route: Option<&'a str>,
        backend: Option<&'static str>,
        endpoint: Option<String>,
        attempts: u8,
        duration_us: u64,
        response_bytes: u64,
        completed: bool,
        error: Option<&'static str>,
        request_id: Option<&'a str>,
    }
    let host = match record.uri.authority() {
        Some(authority) => Some(authority.as_str().rsplit('@').next().unwrap().to_owned()),
        None => (record.host.as_ref()).map(|h| String::from_utf8_lossy(h.as_bytes()).into()),
    };
    let served = &record.served;
    let line = Line {
        time: humantime::format_rfc3339_micros(record.time).to_string(),
        client: record.client.to_str().unwrap_or(""),
        method: record.method.as_str(),
        host,
        path: record.uri.path(),
        protocol: match record.version {
            Version::HTTP_10 => "HTTP/1.0",
            Version::HTTP_11 => "HTTP/1.1",
            Version::HTTP_2 => "HTTP/2",
            _ => "other",
        },
        status: record.status,
        route: served.route.as_deref(),
        backend: served.backend.map(|slot| slot.as_str()),
        endpoint: served.endpoint.map(|e| e.to_string()),
        attempts: served.attempts,
        duration_us: record.duration.as_micros() as u64,
        response_bytes: record.bytes,
        completed: record.completed,
        error: served.error,
        request_id: (record.request_id.as_ref()).map(|id| id.to_str().unwrap()),
    };
    let mut text = serde_json::to_vec(&line).unwrap();
    text.push(b'\n');
    text
}

#[test]
fn the_formatter_writes_what_serde_json_writes_for_hostile_and_repeating_fields() {
    let mut formatter = writer::Formatter::default();
    let mut records = Vec::new();
    // Escapes: a quote, a backslash, control characters and non-ASCII in what the client and
    // the configuration name; IPv6 endpoints; no route, backend or endpoint; HTTP/2's authority
    // with user info; the clock within one second (kept date), across seconds and at the epoch.
    let hostile = HeaderValue::from_bytes(b"a\"b\\c\tz\xff.test").unwrap();
    let times = [
        1_764_619_454_123_456,
        1_764_619_454_999_999,
        1_764_619_455_000_007,
        1_764_619_399_000_000,
        0,
    ];
    for (i, micros) in times.into_iter().enumerate() {
        let mut record = record(Served {
            route: Some(Arc::from(format!("r\"o\\ute\u{1}\u{7f}é{i}").as_str())),
            backend: Some(if i % 2 == 0 { Slot::Blue } else { Slot::Green }),
            endpoint: Some(if i % 2 == 0 {
                "[2001:db8::1]:8443".parse().unwrap()
            } else {
                format!("10.0.0.{i}:80").parse().unwrap()
            }),
            attempts: i as u8,
            error: None,
        });
        record.time = SystemTime::UNIX_EPOCH + Duration::from_micros(micros);
        record.host = Some(hostile.clone());
        // A kept incoming ID may hold any visible ASCII, quotes and backslashes too.
        record.request_id = Some(HeaderValue::from_static("id\"with\\quote"));
        record.completed = i % 2 == 0;
        record.duration = Duration::from_micros(u64::from(u32::MAX) * i as u64);
        record.bytes = u64::MAX - i as u64;
        records.push(record);
    }
    let h2 = Request::get("http://user:pw@shop.test:8080/p%22a?q=1")
        .version(Version::HTTP_2)
        .body(())
        .unwrap();
    let mut second = record(Served::default());
    second.uri = h2.uri().clone();
    second.version = Version::HTTP_2;
    second.method = http::Method::from_bytes(b"PURGE").unwrap();
    second.host = None;
    records.push(second);
    let mut none = record(Served::of_error(&Error::NoRoute));
    none.host = None;
    none.request_id = None;
    records.push(none);
    for record in &records {
        let mut text = b"left as it was\n".to_vec();
        formatter.format(record, &mut text);
        let expected = [b"left as it was\n".as_slice(), &reference(record)].concat();
        assert_eq!(
            String::from_utf8_lossy(&text),
            String::from_utf8_lossy(&expected)
        );
    }
}

/// Under traffic the writer looks at its queue only every `BATCH_INTERVAL`; `flush` (a
/// shutdown's last step) answers only once every line queued before it is on disk.
#[tokio::test]
async fn flush_answers_once_every_line_queued_before_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let log = AccessLogConfig::File(path.clone())
        .start(Arc::default())
        .unwrap()
        .unwrap();
    let client = HeaderValue::from_static("127.0.0.1");
    const LINES: usize = 500;
    for i in 0..LINES {
        let request = Request::get(format!("/r{i}")).body(()).unwrap();
        let mut pending = log.begin(&client, &request, None);
        pending.answered(http::StatusCode::OK);
        pending.end(true);
    }
    assert!(log.flush().await, "the writer answers");
    let text = std::fs::read_to_string(&path).unwrap();
    let paths: Vec<String> = text
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["path"].to_string())
        .collect();
    assert_eq!(paths.len(), LINES);
    for (i, path) in paths.iter().enumerate() {
        assert_eq!(path, &format!("\"/r{i}\""), "in the order queued");
    }
    assert_eq!(log.dropped(), 0);
}
