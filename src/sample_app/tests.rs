//! In-process tests of the sample app: each starts it on 127.0.0.1:0 and talks HTTP to it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::body::{pattern_byte, CHUNKED_BODY_LEN};
use super::handler::{ErrorBudget, HealthPlan};
use super::{serve, SampleAppArgs};

/// The flags of `crossfade sample-app --version <version>`: every other flag at its default.
fn args(version: &str) -> SampleAppArgs {
    let Command::SampleApp(args) =
        Cli::parse_from(["crossfade", "sample-app", "--version", version]).command;
    args
}

/// A sample app serving in a task of the test's runtime.
struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

async fn start(args: SampleAppArgs) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(args, listener, async move { drop(stopped.await) }));
    Running { addr, stop, task }
}

// === impl Running ===

impl Running {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await.expect("serve task panicked")
    }
}

type TestClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn send(client: &TestClient, req: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, Bytes) {
    let res = client.request(req).await.expect("request");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("response body").to_bytes();
    (parts.status, parts.headers, body)
}

async fn get(client: &TestClient, url: String) -> (StatusCode, HeaderMap, Bytes) {
    let req = Request::get(url).body(Full::default()).expect("request");
    send(client, req).await
}

/// Sends `request` on a fresh connection and reads until the server closes it.
async fn raw(addr: SocketAddr, request: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.expect("read");
    out
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("<missing>")
}

#[test]
fn error_budget_fails_its_exact_share_of_any_hundred_requests() {
    for rate in [0.0, 0.01, 0.2, 0.25, 0.333, 0.5, 1.0] {
        let budget = ErrorBudget::new(rate);
        let fails: Vec<bool> = (0..1000).map(|_| budget.next_fails()).collect();
        let expected = rate * 100.0;
        for window in fails.windows(100) {
            let n = window.iter().filter(|f| **f).count() as f64;
            assert!(
                n == expected.floor() || n == expected.ceil(),
                "rate {rate}: {n} in a window"
            );
        }
    }
}

#[test]
fn health_plan_is_unready_first_and_fails_later() {
    let plan = HealthPlan {
        unready_for: Some(Duration::from_secs(6)),
        fail_after: Some(Duration::from_secs(30)),
        flap: None,
    };
    let at = |s| plan.status(Duration::from_secs(s));
    assert_eq!(at(0), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(at(5), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(at(6), StatusCode::OK);
    assert_eq!(at(29), StatusCode::OK);
    assert_eq!(at(30), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(HealthPlan::default().status(Duration::ZERO), StatusCode::OK);
}

#[test]
fn health_flap_alternates_ok_and_503_then_stays_ok() {
    let plan = HealthPlan {
        flap: Some((Duration::from_secs(3), 2)),
        ..HealthPlan::default()
    };
    let at = |s| plan.status(Duration::from_secs(s)).as_u16();
    let seen: Vec<u16> = (0..15).step_by(3).map(at).collect();
    assert_eq!(seen, [200, 503, 200, 503, 200]);
    assert_eq!(at(100), 200);
}

#[tokio::test]
async fn error_rate_answers_exactly_twenty_of_a_hundred_requests_with_500() {
    let app = start(SampleAppArgs {
        error_rate: 0.2,
        ..args("v1")
    })
    .await;
    let client = client();
    let mut errors = 0;
    for i in 0..100 {
        let (status, _, _) = get(&client, app.url(&format!("/n{i}"))).await;
        errors += usize::from(status == StatusCode::INTERNAL_SERVER_ERROR);
        // Health checks neither fail nor use up the budget.
        let (health, _, _) = get(&client, app.url("/healthz")).await;
        assert_eq!(health, StatusCode::OK);
    }
    assert_eq!(errors, 20);
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn the_latency_file_sets_the_added_latency_while_the_app_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("latency");
    let app = start(SampleAppArgs {
        latency: 150,
        latency_file: Some(path.clone()),
        ..args("v1")
    })
    .await;
    let client = client();
    let timed = |url: String| {
        let client = client.clone();
        async move {
            let started = tokio::time::Instant::now();
            let (status, _, _) = get(&client, url).await;
            assert_eq!(status, StatusCode::OK);
            started.elapsed()
        }
    };
    // No file yet: `--latency`.
    let took = timed(app.url("/")).await;
    assert!(took >= Duration::from_millis(150), "{took:?}");
    // Written while the app runs: read within 100 ms.
    std::fs::write(&path, "400\n").expect("write the latency file");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let took = timed(app.url("/")).await;
    assert!(took >= Duration::from_millis(400), "{took:?}");
    // Not a whole number: `--latency` again.
    std::fs::write(&path, "slow").expect("write the latency file");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let took = timed(app.url("/")).await;
    assert!(took >= Duration::from_millis(150), "{took:?}");
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn the_error_rate_file_sets_the_share_of_500s_while_the_app_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("error-rate");
    let app = start(SampleAppArgs {
        error_rate_file: Some(path.clone()),
        ..args("v1")
    })
    .await;
    let client = client();
    let errors = |n: usize| {
        let (client, url) = (client.clone(), app.url("/"));
        async move {
            let mut errors = 0;
            for _ in 0..n {
                let (status, _, _) = get(&client, url.clone()).await;
                errors += usize::from(status == StatusCode::INTERNAL_SERVER_ERROR);
            }
            errors
        }
    };
    // No file: `--error-rate` (0).
    assert_eq!(errors(20).await, 0);
    // 25%: 25 of any 100 consecutive requests, from within 100 ms of the write.
    std::fs::write(&path, "25%\n").expect("write the error-rate file");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(errors(100).await, 25);
    // Not a rate: `--error-rate` again.
    std::fs::write(&path, "many").expect("write the error-rate file");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(errors(20).await, 0);
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn every_response_carries_pool_instance_and_version() {
    let client = client();
    let app = start(args("v2")).await;
    let port = app.addr.port();
    for path in ["/", "/api", "/healthz", "/upload", "/download"] {
        let (status, headers, _) = get(&client, app.url(path)).await;
        assert_eq!(header(&headers, "x-pool"), "v2", "{path} ({status})");
        assert_eq!(
            header(&headers, "x-instance"),
            format!("v2-{port}"),
            "{path}"
        );
        assert_eq!(header(&headers, "x-version"), "v2", "{path}");
    }
    let (status, _, body) = get(&client, app.url("/any/path")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"v2\n"[..]));
    let (_, _, api) = get(&client, app.url("/api")).await;
    assert_eq!(api.len(), 1024);
    app.shutdown().await.expect("clean shutdown");

    let flags = SampleAppArgs {
        pool: Some("green".into()),
        instance: Some("green-a".into()),
        error_rate: 1.0,
        ..args("v3")
    };
    let app = start(flags).await;
    let (status, headers, _) = get(&client, app.url("/")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(header(&headers, "x-pool"), "green");
    assert_eq!(header(&headers, "x-instance"), "green-a");
    assert_eq!(header(&headers, "x-version"), "v3");
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn chunked_sends_ten_kib_in_three_chunks() {
    let app = start(args("v1")).await;
    let res = raw(
        app.addr,
        "GET /chunked HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    let text = String::from_utf8_lossy(&res).to_ascii_lowercase();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    // 4096 + 4096 + 2048 bytes, then the last chunk.
    let sizes: Vec<&str> = body.split("\r\n").step_by(2).collect();
    assert_eq!(sizes, ["1000", "1000", "800", "0", ""]);

    let (_, _, body) = get(&client(), app.url("/chunked")).await;
    assert_eq!(body.len(), CHUNKED_BODY_LEN);
    assert!(body
        .iter()
        .enumerate()
        .all(|(i, b)| *b == pattern_byte(i as u64)));
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn upload_answers_sha256_and_byte_count() {
    let app = start(args("v1")).await;
    let client = client();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    for (method, data) in [(Method::PUT, b"abc".to_vec()), (Method::POST, big)] {
        let req = Request::builder().method(method).uri(app.url("/upload"));
        let req = req
            .body(Full::new(Bytes::from(data.clone())))
            .expect("request");
        let (status, _, body) = send(&client, req).await;
        assert_eq!(status, StatusCode::CREATED);
        let doc: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(doc["bytes"], data.len());
        assert_eq!(doc["sha256"], format!("{:x}", Sha256::digest(&data)));
    }
    let (status, headers, _) = get(&client, app.url("/upload")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&headers, "allow"), "PUT, POST");
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn download_streams_the_pattern_with_a_content_length() {
    let app = start(args("v1")).await;
    let (status, headers, body) = get(&client(), app.url("/download?bytes=300001")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "content-length"), "300001");
    assert_eq!(body.len(), 300_001);
    assert!(body
        .iter()
        .enumerate()
        .all(|(i, b)| *b == pattern_byte(i as u64)));
    let (status, _, _) = get(&client(), app.url("/download?bytes=lots")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn echo_headers_keeps_repeated_lines_and_answers_with_hop_headers() {
    let app = start(args("v1")).await;
    let req = Request::post(app.url("/echo-headers"))
        .header("x-dup", "a")
        .header("x-dup", "b")
        .header("x-one", "1")
        .body(Full::default())
        .expect("request");
    let (status, headers, body) = send(&client(), req).await;
    assert_eq!(status, StatusCode::OK);
    let doc: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(doc["x-dup"], serde_json::json!(["a", "b"]));
    assert_eq!(doc["x-one"], serde_json::json!(["1"]));
    assert_eq!(header(&headers, "connection"), "X-Backend-Hop");
    assert_eq!(header(&headers, "x-backend-hop"), "y");
    assert_eq!(header(&headers, "keep-alive"), "timeout=99");
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn h2c_with_prior_knowledge_is_served() {
    let app = start(args("v1")).await;
    let h2: TestClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = Request::get(app.url("/echo-headers"))
        .body(Full::default())
        .expect("request");
    let res = h2.request(req).await.expect("h2c request");
    assert_eq!(res.version(), Version::HTTP_2);
    assert_eq!(header(res.headers(), "x-version"), "v1");
    assert!(
        res.headers().get("x-backend-hop").is_none(),
        "no connection headers in HTTP/2"
    );
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn healthz_is_unready_for_the_given_time_then_ok() {
    let flags = SampleAppArgs {
        unready_for: Some(Duration::from_millis(300)),
        ..args("v1")
    };
    let app = start(flags).await;
    let client = client();
    assert_eq!(
        get(&client, app.url("/healthz")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(&client, app.url("/")).await.0,
        StatusCode::OK,
        "only /healthz is unready"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, _, body) = get(&client, app.url("/healthz")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight() {
    let app = start(args("v1")).await;
    let url = app.url("/slow?ms=300");
    let slow = tokio::spawn(async move { get(&client(), url).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let addr = app.addr;
    app.shutdown().await.expect("clean shutdown");
    let (status, _, body) = slow.await.expect("request task");
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"v1\n"[..]));
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn exit_after_ends_serve_with_an_error() {
    let flags = SampleAppArgs {
        exit_after: Some(Duration::from_millis(100)),
        ..args("v1")
    };
    let app = start(flags).await;
    let err = app
        .task
        .await
        .expect("serve task")
        .expect_err("exit-after is an error");
    assert!(err.to_string().contains("--exit-after"), "{err}");
}

#[tokio::test]
async fn idle_timeout_closes_an_idle_keep_alive_connection() {
    let flags = SampleAppArgs {
        idle_timeout: Some(Duration::from_millis(200)),
        ..args("v1")
    };
    let app = start(flags).await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0; 4096];
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n\r\nv1\n") {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before the response ended");
        got.extend_from_slice(&buf[..n]);
    }
    let idle_since = tokio::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    assert_eq!(closed.expect("closed within 5s").expect("clean close"), 0);
    assert!(
        idle_since.elapsed() >= Duration::from_millis(150),
        "closed before the idle timeout"
    );
    app.shutdown().await.expect("clean shutdown");
}

/// The flags as the CLI will see them: a subcommand of a command that propagates `--version`.
#[derive(Debug, clap::Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    SampleApp(SampleAppArgs),
}

#[test]
fn cli_parses_the_flags_and_rejects_bad_values() {
    let parse = |line: &str| Cli::try_parse_from(line.split_whitespace());
    let Command::SampleApp(args) = parse(
        "crossfade sample-app --port 9001 --version v7 --error-rate 0.2 --latency 15 \
         --unready-for 6s --exit-after 1m --idle-timeout 500ms",
    )
    .expect("valid flags")
    .command;
    assert_eq!(
        (args.port, args.version.as_str(), args.error_rate),
        (9001, "v7", 0.2)
    );
    assert_eq!(args.latency, 15);
    assert_eq!(args.unready_for, Some(Duration::from_secs(6)));
    assert_eq!(args.exit_after, Some(Duration::from_secs(60)));
    assert_eq!(args.idle_timeout, Some(Duration::from_millis(500)));

    for bad in [
        "--error-rate 1.5",
        "--error-rate x",
        "--unready-for soon",
        "--port 70000",
    ] {
        let err = parse(&format!("crossfade sample-app --version v1 {bad}")).expect_err(bad);
        assert!(
            err.to_string()
                .contains(bad.split(' ').next().unwrap_or(bad)),
            "{err}"
        );
    }
    parse("crossfade sample-app --port 1").expect_err("--version is required");
    // Trial 19: an empty version started an app answering an empty X-Version and body.
    let empty = Cli::try_parse_from(["crossfade", "sample-app", "--version", ""]);
    let err = empty.expect_err("an empty --version is refused");
    assert!(err.to_string().contains("--version <VERSION>"), "{err}");
}

/// Trial 19: a version that cannot be a header value was refused as `--pool "a\nb"`, a flag not
/// given (the pool defaults to the version); it is named as the `--version` it is.
#[test]
fn a_version_that_is_no_header_value_is_refused_naming_version() {
    let Err(err) = super::handler::App::new(&args("a\nb"), 1) else {
        panic!("a version with a newline is refused")
    };
    assert_eq!(
        err.to_string(),
        "sample-app: --version \"a\\nb\" is not a valid header value"
    );
}

#[tokio::test]
async fn ws_echoes_each_text_message_naming_version_pool_and_instance() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut flags = args("v7");
    flags.pool = Some("green".into());
    flags.instance = Some("green-0".into());
    let app = start(flags).await;
    let (mut ws, response) = tokio_tungstenite::connect_async(format!("ws://{}/ws", app.addr))
        .await
        .expect("websocket handshake");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers()["x-version"], "v7");
    for seq in 0..3 {
        ws.send(Message::text(format!("seq {seq}"))).await.unwrap();
        let Some(Ok(Message::Text(reply))) = ws.next().await else {
            panic!("no reply to seq {seq}");
        };
        let reply: serde_json::Value = serde_json::from_str(reply.as_str()).unwrap();
        assert_eq!(
            reply,
            serde_json::json!({
                "version": "v7", "pool": "green", "instance": "green-0", "echo": format!("seq {seq}")
            })
        );
    }
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![1u8, 2, 3])
    );
    ws.close(None).await.unwrap();
    assert!(matches!(
        ws.next().await,
        Some(Ok(Message::Close(_))) | None
    ));
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn ws_without_an_upgrade_gets_426_and_a_bad_handshake_400() {
    let app = start(args("v1")).await;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let (status, headers, _) = get(&client, app.url("/ws")).await;
    assert_eq!(status, StatusCode::UPGRADE_REQUIRED);
    assert_eq!(headers["upgrade"], "websocket");
    let answer = raw(
        app.addr,
        "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn hang_after_accepts_connections_and_never_answers_health_checks_included() {
    let app = start(SampleAppArgs {
        hang_after: Some(Duration::ZERO),
        ..args("v1")
    })
    .await;
    let client = client();
    for path in ["/healthz", "/api"] {
        let answer = tokio::time::timeout(Duration::from_millis(300), get(&client, app.url(path)));
        assert!(answer.await.is_err(), "{path} was answered");
    }
    let _ = app.stop.send(());
    app.task.abort();
}

/// `--h2c`: HTTP/2 with prior knowledge alone, as a gRPC server: an HTTP/1.1 request gets no
/// HTTP/1.1 answer (the server's SETTINGS frame, then the connection closes), an h2c request
/// its answer.
#[tokio::test]
async fn with_h2c_the_app_speaks_only_http2_with_prior_knowledge() {
    let app = start(SampleAppArgs {
        h2c: true,
        ..args("v1")
    })
    .await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    stream.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    // The server closes with the request unread, which resets the connection: what arrived
    // before the reset may be lost, but no HTTP/1.1 answer ever comes.
    match stream.read_to_end(&mut answer).await {
        Ok(_) => {
            assert!(!answer.starts_with(b"HTTP/1"), "{answer:?}");
            // An HTTP/2 frame header: 24-bit length, then type 4 (SETTINGS).
            assert_eq!(answer.get(3), Some(&4), "{answer:?}");
        }
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }

    let h2c: TestClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let (status, headers, body) = get(&h2c, app.url("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "x-version"), "v1");
    assert_eq!(&body[..], b"v1\n");
    app.shutdown().await.expect("clean shutdown");
}

/// A gRPC call (any path but `/healthz`) gets a framed reply naming the version and
/// `grpc-status: 0` in the trailers; an injected error is a trailers-only `grpc-status: 13`.
#[tokio::test]
async fn a_grpc_call_gets_a_reply_with_its_status_in_the_trailers() {
    let app = start(SampleAppArgs {
        h2c: true,
        error_rate: 0.5,
        ..args("v2")
    })
    .await;
    let h2c: TestClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let req = Request::post(app.url("/crossfade.Sample/Version"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
            .expect("request");
        let res = h2c.request(req).await.expect("grpc call");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(res.headers(), "content-type"), "application/grpc");
        let head_status = res.headers().get("grpc-status").cloned();
        let collected = res.into_body().collect().await.expect("body");
        let trailers = collected.trailers().cloned();
        let body = collected.to_bytes();
        match head_status {
            Some(status) => {
                assert_eq!(status, "13");
                assert!(body.is_empty() && trailers.is_none());
                statuses.push(13);
            }
            None => {
                assert_eq!(&body[..], &[0, 0, 0, 0, 4, 0x0a, 2, b'v', b'2']);
                assert_eq!(trailers.expect("trailers")["grpc-status"], "0");
                statuses.push(0);
            }
        }
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [0, 13], "--error-rate 50% fails one of two calls");
    app.shutdown().await.expect("clean shutdown");
}
