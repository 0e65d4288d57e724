//! The listener's answers, and its guards over real sockets.

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

fn get(health: &Health, method: Method, path: &str) -> (StatusCode, String, String) {
    get_accepting(health, method, path, None)
}

/// As [`get`], with `accept` as the request's `Accept`.
fn get_accepting(
    health: &Health,
    method: Method,
    path: &str,
    accept: Option<&str>,
) -> (StatusCode, String, String) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(accept) = accept {
        req = req.header(header::ACCEPT, accept);
    }
    let req = req.body(()).expect("request");
    let res = health.answer(&req);
    let status = res.status();
    let kind = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = futures_util::FutureExt::now_or_never(res.into_body().collect())
        .expect("a full body is ready")
        .expect("infallible")
        .to_bytes();
    (status, kind, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn readyz_is_503_until_set_ready_and_healthz_is_always_200() {
    let health = Health::new(Registry::default());
    assert_eq!(get(&health, Method::GET, "/healthz").0, StatusCode::OK);
    let (status, _, body) = get(&health, Method::GET, "/readyz");
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    );
    health.set_ready();
    let (status, _, body) = get(&health, Method::GET, "/readyz");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
}

/// Prometheus' `Accept` (2.42): OpenMetrics first.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

#[test]
fn metrics_are_openmetrics_for_prometheus_and_other_paths_and_methods_are_refused() {
    let mut registry = Registry::with_prefix("crossfade");
    let rollout = crate::metrics::RolloutMetrics::register(&mut registry);
    let _route = rollout.route("default/web");
    let health = Health::new(registry);
    let (status, kind, body) =
        get_accepting(&health, Method::GET, "/metrics", Some(PROMETHEUS_ACCEPT));
    let openmetrics = crossfade_proxy::exposition::OPENMETRICS_CONTENT_TYPE;
    assert_eq!((status, kind.as_str()), (StatusCode::OK, openmetrics));
    assert!(
        body.contains(r#"crossfade_rollouts_total{route="default/web",outcome="completed"} 0"#),
        "{body}"
    );
    // The duration histogram's series too, before any rollout ends (docs/metrics.md).
    for outcome in crate::metrics::ROLLOUT_OUTCOMES {
        let count = format!(
            r#"crossfade_rollout_duration_seconds_count{{route="default/web",outcome="{outcome}"}} 0"#
        );
        assert!(body.lines().any(|l| l == count), "{count}\n{body}");
    }
    assert!(body.ends_with("# EOF\n"), "{body}");
    // Without `Accept` (curl, most agents): the Prometheus text format 0.0.4, same samples.
    let (status, kind, text) = get(&health, Method::GET, "/metrics");
    let plain = crossfade_proxy::exposition::TEXT_CONTENT_TYPE;
    assert_eq!((status, kind.as_str()), (StatusCode::OK, plain));
    assert!(!text.contains("# EOF"), "{text}");
    assert!(
        text.contains("\n# TYPE crossfade_rollouts_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains(r#"crossfade_rollouts_total{route="default/web",outcome="completed"} 0"#),
        "{text}"
    );
    assert_eq!(
        get(&health, Method::GET, "/status").0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&health, Method::POST, "/metrics").0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    // Trial 20: the 405 had no `Allow` (RFC 9110 §15.5.6 requires one).
    let req = Request::builder()
        .method(Method::DELETE)
        .uri("/healthz")
        .body(())
        .expect("request");
    let res = health.answer(&req);
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        res.headers()
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok()),
        Some("GET, HEAD")
    );
}

/// A listener on a free loopback port, served under `limits` by a task of its own (aborted when
/// the returned handle drops).
async fn listening(limits: LimitsConfig) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let health = Health::new(Registry::default());
    let task = tokio::spawn(async move { health.serve_limited(listener, &limits).await });
    (addr, task)
}

/// Everything `stream` reads until the server closes it (a reset counts as closed), or `None`
/// when it is still open after `within`.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut read = Vec::new();
    let closed = tokio::time::timeout(within, async {
        let mut buf = [0_u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => read.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    closed
        .is_ok()
        .then(|| String::from_utf8_lossy(&read).into_owned())
}

/// A probe on a fresh connection, as a kubelet sends it: the status line of the answer.
async fn probe(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let answer = read_to_close(&mut stream, Duration::from_secs(10)).await;
    let answer = answer.expect("the probe is answered and closed");
    answer.lines().next().unwrap_or_default().to_owned()
}

/// A client that sends half a request head and then nothing (a slowloris) is closed once the
/// header read timeout has passed, without an answer. Before, the listener waited for the rest
/// of the head forever, holding the connection.
#[tokio::test]
async fn a_client_that_sends_half_a_request_head_is_closed_after_the_header_read_timeout() {
    let timeout = Duration::from_millis(400);
    let (addr, _task) = listening(LimitsConfig {
        header_read_timeout: timeout,
        ..limits()
    })
    .await;
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    let started = tokio::time::Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: pro")
        .await
        .expect("write");
    let answer = read_to_close(&mut slow, Duration::from_secs(10)).await;
    assert_eq!(answer.as_deref(), Some(""), "closed without a word");
    let took = started.elapsed();
    assert!(took >= timeout - Duration::from_millis(50), "{took:?}");
    // A keep-alive connection idle after its answer is closed the same way.
    let mut kept = TcpStream::connect(addr).await.expect("connect");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: probe\r\n\r\n")
        .await
        .expect("write");
    let answer = read_to_close(&mut kept, Duration::from_secs(10)).await;
    let answer = answer.expect("closed after the timeout");
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
}

/// Idle connections beyond the cap, however many one client holds, do not keep the probes from
/// their answers: at the cap a new connection takes the place of the one that has waited longest
/// for a request, which is closed. Before, there was no cap: every idle connection stayed open,
/// each holding a file descriptor, for as long as its client liked.
#[tokio::test]
async fn probes_answer_while_a_client_holds_more_idle_connections_than_the_cap() {
    let (addr, _task) = listening(LimitsConfig {
        header_read_timeout: Duration::from_secs(120),
        max_admin_connections: 4,
        ..limits()
    })
    .await;
    // Twice the cap, each with one byte of a request that never ends.
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(b"G").await.expect("write");
        held.push(stream);
    }
    for path in ["/healthz", "/readyz", "/metrics", "/healthz"] {
        let status = probe(addr, path).await;
        let expected = match path {
            "/readyz" => "HTTP/1.1 503 ",
            _ => "HTTP/1.1 200 ",
        };
        assert!(status.starts_with(expected), "{path}: {status:?}");
    }
    // Room was made by closing the connections that waited longest (accepted in the kernel
    // queue's order): the first four, long before their header read timeout.
    for (i, stream) in held[..4].iter_mut().enumerate() {
        let closed = read_to_close(stream, Duration::from_secs(30)).await;
        assert_eq!(closed.as_deref(), Some(""), "held connection {i}");
    }
}
