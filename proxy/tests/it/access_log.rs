//! Trial finding H12: the opt-in access log (one JSON line per request, with route, backend,
//! endpoint, status and error kind), and the WARN line of an upstream failure answered 502 that
//! names the endpoint, method and path.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use crossfade_proxy::{AccessLogConfig, Error, Proxy, ProxyMetrics, RequestIdConfig, RouteConfig};
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;

use crate::support::*;

/// Routes `web` (`/`, blue: a live backend) and `dead` (`/dead`, green: connects refused).
async fn two_routes() -> (Vec<RouteConfig>, std::net::SocketAddr, std::net::SocketAddr) {
    let blue = backend("blue").await;
    let dead = refused_addr().await;
    let web = route(&[blue.addr], &[], 10_000);
    let broken = RouteConfig {
        name: "dead".into(),
        path_prefix: "/dead".into(),
        ..route(&[], &[dead], 0)
    };
    (vec![web, broken], blue.addr, dead)
}

/// The lines of the log at `path` once there are `count`, polled (the writer is a thread of its
/// own) within a generous limit for a loaded machine.
async fn lines(path: &Path, count: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("each line is JSON"))
            .collect();
        if lines.len() >= count || tokio::time::Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn post(url: &str) -> Request<Full<Bytes>> {
    Request::post(url)
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap()
}

#[tokio::test]
async fn the_access_log_has_a_line_for_a_200_and_a_502_with_the_documented_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let (routes, blue, dead) = two_routes().await;
    let mut config = config(routes);
    config.access_log = AccessLogConfig::File(path.clone());
    let running = start(config).await;
    let client = client();
    let (status, _, _) = get(&client, &running.url("/hello?token=secret")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = send(&client, post(&running.url("/dead/x?token=secret"))).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let lines = lines(&path, 2).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    let by_status = |status: u64| {
        lines
            .iter()
            .find(|l| l["status"] == status)
            .unwrap_or_else(|| panic!("no {status} line in {lines:?}"))
    };
    let host = running.addr.to_string();
    let ok = by_status(200);
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/hello", "no query string");
    assert_eq!(ok["host"], host.as_str());
    assert_eq!(ok["client"], "127.0.0.1");
    assert_eq!(ok["protocol"], "HTTP/1.1");
    assert_eq!(ok["route"], "web");
    assert_eq!(ok["backend"], "blue");
    assert_eq!(ok["endpoint"], blue.to_string().as_str());
    assert_eq!(ok["attempts"], 1);
    assert_eq!(ok["response_bytes"], 4, "the body `blue`");
    assert_eq!(ok["completed"], true);
    assert_eq!(ok["error"], Value::Null);
    assert!(ok["duration_us"].is_u64(), "{ok}");
    let time = ok["time"].as_str().unwrap();
    assert!(humantime::parse_rfc3339(time).is_ok(), "RFC 3339: {time}");
    assert!(time.ends_with('Z'), "UTC: {time}");
    let failed = by_status(502);
    assert_eq!(failed["method"], "POST");
    assert_eq!(failed["path"], "/dead/x");
    assert_eq!(failed["route"], "dead");
    assert_eq!(failed["backend"], "green");
    assert_eq!(failed["endpoint"], dead.to_string().as_str());
    assert_eq!(failed["attempts"], 1);
    assert_eq!(failed["error"], "connect_refused");
    assert_eq!(failed["response_bytes"], body.len());
    assert_eq!(failed["completed"], true);
}

#[tokio::test]
async fn a_request_no_route_matches_is_logged_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let (routes, _, _) = two_routes().await;
    let routes = vec![RouteConfig {
        hosts: vec!["shop.test".into()],
        ..routes[0].clone()
    }];
    let mut config = config(routes);
    config.access_log = AccessLogConfig::File(path.clone());
    let running = start(config).await;
    let (status, _, _) = get(&client(), &running.url("/nowhere")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let lines = lines(&path, 1).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["status"], 404);
    assert_eq!(lines[0]["error"], "no_route");
    assert_eq!(lines[0]["route"], Value::Null);
    assert_eq!(lines[0]["attempts"], 0);
}

#[tokio::test]
async fn the_access_log_is_off_by_default_and_its_dropped_counter_is_exported() {
    let (routes, _, _) = two_routes().await;
    let config = config(routes);
    assert_eq!(config.access_log, AccessLogConfig::Off);
    let running = start(config).await;
    let client = client();
    let (status, _, _) = get(&client, &running.url("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !running.proxy.reopen_access_log(),
        "no access log file is open"
    );
    let (_, _, metrics) = get(&client, &running.admin_url("/metrics")).await;
    assert!(
        metrics.contains("\ncrossfade_access_log_dropped_total{reason=\"queue_full\"} 0\n"),
        "{metrics}"
    );
}

/// Trial 13 N5: lines lost to failed writes (every write to /dev/full fails with ENOSPC, as on a
/// full disk) were not counted, so the documented alert could not fire. Each is counted under
/// `reason="write_error"`, and the proxy serves on.
#[tokio::test]
async fn access_log_lines_lost_to_write_errors_are_counted_by_reason() {
    let (routes, _, _) = two_routes().await;
    let mut config = config(routes);
    config.access_log = AccessLogConfig::File("/dev/full".into());
    let running = start(config).await;
    let client = client();
    const REQUESTS: usize = 25;
    for _ in 0..REQUESTS {
        let (status, _, _) = get(&client, &running.url("/")).await;
        assert_eq!(status, StatusCode::OK);
    }
    let expected =
        format!("\ncrossfade_access_log_dropped_total{{reason=\"write_error\"}} {REQUESTS}\n");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, _, metrics) = get(&client, &running.admin_url("/metrics")).await;
        if metrics.contains(&expected) {
            assert!(
                metrics.contains("\ncrossfade_access_log_dropped_total{reason=\"queue_full\"} 0\n"),
                "{metrics}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {expected:?} within 20 s:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn an_access_log_file_that_cannot_be_opened_is_refused_at_start_naming_access_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(Vec::new());
    config.access_log = AccessLogConfig::File(dir.path().join("missing").join("access.log"));
    let error = Proxy::new(&config, ProxyMetrics::default()).unwrap_err();
    let Error::Config(error) = error else {
        panic!("not a config error: {error}");
    };
    assert_eq!(error.problems()[0].path, "access_log");
    assert!(error.to_string().contains("for appending"), "{error}");
}

/// Log lines written by the subscriber, one JSON object each.
#[derive(Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    pub(crate) fn warnings(&self) -> Vec<Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["level"] == "WARN")
            .collect()
    }
}

/// On this test's one thread (a current-thread runtime: the proxy's tasks run here too), every
/// event at WARN and above is captured as JSON.
#[tokio::test]
async fn an_upstream_failure_is_warned_with_endpoint_method_path_and_status() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || writer.clone())
        .json()
        .flatten_event(true)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let (routes, _, dead) = two_routes().await;
    let running = start(config(routes)).await;
    let (status, _, _) = send(&client(), post(&running.url("/dead/x?token=secret"))).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let warnings = captured.warnings();
    let line = warnings
        .iter()
        .find(|l| l["kind"] == "connect_refused")
        .unwrap_or_else(|| panic!("no upstream failure warning in {warnings:?}"));
    assert_eq!(line["route"], "dead");
    assert_eq!(line["backend"], "green");
    assert_eq!(line["endpoint"], dead.to_string().as_str());
    assert_eq!(line["method"], "POST");
    assert_eq!(line["path"], "/dead/x", "no query string");
    assert_eq!(line["status"], 502);
    assert_eq!(line["attempts"], 1);
    assert_eq!(line["suppressed"], 0);
}

/// A stop whose `drain_timeout` passes with a request still waiting says how many it drops
/// (`requests`) on its WARN line; their access lines say `drain_timeout`
/// (`client_abort::requests_a_stop_drops_after_its_drain_timeout_are_no_client_aborts`).
#[tokio::test]
async fn a_stop_that_drops_requests_at_its_drain_deadline_warns_how_many() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || writer.clone())
        .json()
        .flatten_event(true)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let hanging = crate::client_abort::Hanging::start().await;
    let mut config = config(vec![route(&[hanging.addr], &[], 10_000)]);
    config.drain_timeout = Duration::from_millis(300);
    let mut running = start(config).await;
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let mut client = tokio::net::TcpStream::connect(running.addr).await.unwrap();
        let request = b"GET /hang HTTP/1.1\r\nHost: shop.test\r\n\r\n";
        tokio::io::AsyncWriteExt::write_all(&mut client, request)
            .await
            .unwrap();
        waiting.push(client);
    }
    hanging.until_requests(2).await;
    running.stop();
    let stopped = tokio::time::timeout(Duration::from_secs(10), &mut running.task).await;
    stopped.expect("stopped").unwrap().unwrap();
    let warnings = captured.warnings();
    let line = warnings
        .iter()
        .find(|l| l["message"] == "drain timeout passed; closing remaining connections")
        .unwrap_or_else(|| panic!("no drain timeout warning in {warnings:?}"));
    assert_eq!(line["requests"], 2, "{line}");
}

/// A request answered by its retry (green's connect refused, then blue, the active slot at weight
/// 0, backs the preview up) is logged where the retry went, with 2 attempts.
#[tokio::test]
async fn a_request_answered_by_its_retry_is_logged_with_the_retry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let blue = backend("blue").await;
    let dead = refused_addr().await;
    let mut config = config(vec![route(&[blue.addr], &[dead], 0)]);
    config.access_log = AccessLogConfig::File(path.clone());
    let running = start(config).await;
    let (status, _, _) = get(&client(), &running.url("/hello")).await;
    assert_eq!(status, StatusCode::OK);
    let lines = lines(&path, 1).await;
    let line = &lines[0];
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["route"], "web", "{line}");
    assert_eq!(line["backend"], "blue", "{line}");
    assert_eq!(line["endpoint"], blue.addr.to_string(), "{line}");
    assert_eq!(line["attempts"], 2, "{line}");
    assert_eq!(line["error"], Value::Null, "{line}");
}

/// `request_id: {}`: a request without an ID gets a new UUID that its backend, its client and its
/// access log line all see; a well-formed incoming ID is kept end to end; a malformed one is
/// replaced; the proxy's own answers (here a 502) carry one too.
#[tokio::test]
async fn a_request_id_reaches_the_backend_the_client_and_the_access_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let blue = backend("blue").await;
    let dead = refused_addr().await;
    let broken = RouteConfig {
        name: "dead".into(),
        path_prefix: "/dead".into(),
        ..route(&[], &[dead], 0)
    };
    let mut config = config(vec![route(&[blue.addr], &[], 10_000), broken]);
    config.access_log = AccessLogConfig::File(path.clone());
    config.request_id = Some(RequestIdConfig::default());
    let running = start(config).await;
    let client = client();
    let id_of = |headers: &http::HeaderMap| {
        let mut lines = headers.get_all("x-request-id").iter();
        let id = lines.next().map(|v| v.to_str().unwrap().to_owned());
        assert!(lines.next().is_none(), "one x-request-id line");
        id
    };

    let (status, headers, _) = get(&client, &running.url("/new")).await;
    assert_eq!(status, StatusCode::OK);
    let made = id_of(&headers).expect("the response carries the ID");
    assert_eq!(made.len(), 36, "a UUID: {made}");
    let seen = id_of(&blue.seen.lock().unwrap()[0]);
    assert_eq!(seen.as_deref(), Some(made.as_str()), "the backend saw it");

    let with = |id: &'static str| {
        Request::get(running.url("/kept"))
            .header("x-request-id", id)
            .body(Full::default())
            .unwrap()
    };
    let (_, headers, _) = send(&client, with("edge-7f3a.1")).await;
    assert_eq!(id_of(&headers).as_deref(), Some("edge-7f3a.1"));
    assert_eq!(
        id_of(&blue.seen.lock().unwrap()[1]).as_deref(),
        Some("edge-7f3a.1")
    );
    let (_, headers, _) = send(&client, with("two words")).await;
    let replaced = id_of(&headers).unwrap();
    assert_ne!(replaced, "two words");
    assert_eq!(
        id_of(&blue.seen.lock().unwrap()[2]).as_deref(),
        Some(replaced.as_str())
    );

    let (status, headers, _) = get(&client, &running.url("/dead/x")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let failed = id_of(&headers).expect("a proxy's own answer carries one too");

    let lines = lines(&path, 4).await;
    let logged: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["path"].as_str().unwrap(),
                l["request_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        logged,
        [
            ("/new", made.as_str()),
            ("/kept", "edge-7f3a.1"),
            ("/kept", replaced.as_str()),
            ("/dead/x", failed.as_str()),
        ]
    );
}

/// Off (the default), nothing is added: no header upstream or back, `request_id` null in the log.
#[tokio::test]
async fn without_request_id_nothing_is_added() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let blue = backend("blue").await;
    let mut config = config(vec![route(&[blue.addr], &[], 10_000)]);
    config.access_log = AccessLogConfig::File(path.clone());
    let running = start(config).await;
    let (status, headers, _) = get(&client(), &running.url("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!headers.contains_key("x-request-id"));
    assert!(!blue.seen.lock().unwrap()[0].contains_key("x-request-id"));
    let lines = lines(&path, 1).await;
    assert_eq!(lines[0]["request_id"], Value::Null, "{lines:?}");
}

/// A request whose client's body fails after the request went upstream (a chunked body cut
/// short by a half-close; a client that sent part of a `Content-Length` body and closed its
/// connection, as a mobile client leaving mid-upload does) is logged with the route, backend,
/// endpoint and attempt it was sent with, and counted as blue's 400 in
/// `crossfade_local_responses_total` (newuser34: both lines said `route` null, `attempts` 0,
/// as if the proxy had refused the request before sending it, and the metric had no route).
#[tokio::test]
async fn a_request_body_that_fails_after_dispatch_is_logged_with_its_route_backend_and_endpoint() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let blue = backend("blue").await;
    let mut config = config(vec![route(&[blue.addr], &[], 10_000)]);
    config.access_log = AccessLogConfig::File(path.clone());
    let running = start(config).await;

    // Cut short: the client half-closes mid-chunk and reads the 400.
    let mut cut = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    cut.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
        .await
        .unwrap();
    cut.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), cut.read_to_end(&mut answer));
    assert!(read.await.is_ok(), "not closed");
    assert!(answer.starts_with(b"HTTP/1.1 400 "), "{answer:?}");

    // Gone: part of a Content-Length body, then the connection closed once blue has it.
    let mut gone = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    gone.write_all(b"PUT /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n0123456789")
        .await
        .unwrap();
    let in_flight = r#"crossfade_in_flight_requests{route="web",backend="blue"}"#;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while crate::limits::metric(&running, in_flight).await != Some(1.0) {
        assert!(tokio::time::Instant::now() < deadline, "never sent to blue");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(gone);

    let lines = lines(&path, 2).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    let endpoint = blue.addr.to_string();
    for (line, method) in lines.iter().zip(["POST", "PUT"]) {
        assert_eq!(line["method"], method, "{line}");
        assert_eq!(line["status"], 400, "{line}");
        assert_eq!(line["error"], "bad_request", "{line}");
        assert_eq!(line["route"], "web", "{line}");
        assert_eq!(line["backend"], "blue", "{line}");
        assert_eq!(line["endpoint"], endpoint.as_str(), "{line}");
        assert_eq!(line["attempts"], 1, "{line}");
    }
    let series = r#"crossfade_local_responses_total{route="web",backend="blue",class="4xx",reason="bad_request"}"#;
    assert_eq!(crate::limits::metric(&running, series).await, Some(2.0));
    let series = r#"crossfade_requests_total{route="web",backend="blue",class="4xx"}"#;
    assert_eq!(crate::limits::metric(&running, series).await, Some(2.0));
}
