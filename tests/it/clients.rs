//! Real clients that no one here wrote, against a `crossfade proxy` child splitting 70/30 between
//! two sample-app backends: `curl` (HTTP/1.1 keep-alive, `--http2-prior-knowledge`, `-T` with
//! `Expect: 100-continue`, and HTTPS with `--cacert` over HTTP/1.1 and HTTP/2, with a SIGHUP
//! certificate reload), `h2load` (many streams over few h2c connections), `wrk` (HTTP/1.1),
//! hyper's HTTP/2 client with tokio-tungstenite (WebSockets over h2c extended CONNECT, RFC 8441),
//! headless Chromium (a browser's WebSocket over its TLS HTTP/2 connection), and HAProxy as an L4
//! balancer in front, sending the PROXY protocol.
//!
//! Each run asserts zero failed requests, and that green's share is within 6 standard deviations
//! of the configured 30 % (binomial: sigma = sqrt(n p (1 - p))), a bound a correct proxy breaks
//! about once in 10^9 runs. The tools come from Debian (curl, nghttp2-client, wrk; scripts/test.sh
//! installs them): missing, a test fails when scripts/test.sh runs it or under `CI=true`
//! ([`crate::support::tools_required`]) and is skipped loudly otherwise.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio_tungstenite::WebSocketStream;

use crate::support::proxy::requests_total;
use crate::support::{proxy_config, temp_dir, RunningProxy, SampleApp};

/// Green's configured share, in basis points.
const GREEN_BP: u32 = 3_000;

/// Whether `tool` can run. Missing: panics when tools are required (scripts/test.sh, `CI=true`:
/// [`crate::support::tools_required`]), else says so loudly and returns false.
fn have(tool: &str, package: &str) -> bool {
    crate::support::have_tool("clients", tool, package)
}

/// Runs `tool args`, returning its output; panics with stderr when it cannot start.
fn run(tool: &str, args: &[&str]) -> Output {
    Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"))
}

/// Asserts that `green` of `total` is within 6 sigma of [`GREEN_BP`].
fn assert_split(what: &str, green: u64, total: u64) {
    let (n, p) = (total as f64, f64::from(GREEN_BP) / 10_000.0);
    let (expected, sigma) = (n * p, (n * p * (1.0 - p)).sqrt());
    eprintln!(
        "clients: {what}: green {green} of {total} (expected {expected:.0} ± 6 × {sigma:.1})"
    );
    assert!(total > 0, "{what}: no request counted");
    assert!(
        (green as f64 - expected).abs() <= 6.0 * sigma + 1.0,
        "{what}: green got {green} of {total}, expected {expected:.0} ± {:.0}",
        6.0 * sigma
    );
}

/// Two sample apps (versions `blue` and `green`) behind a `crossfade proxy` at 70/30.
struct Setup {
    proxy: RunningProxy,
    _apps: [SampleApp; 2],
}

impl Setup {
    async fn start(dir: &Path, edit: impl FnOnce(&mut Value)) -> Setup {
        let blue = SampleApp::start(dir, "blue", "blue-0", &[]).await;
        let green = SampleApp::start(dir, "green", "green-0", &[]).await;
        let mut config = proxy_config(&[blue.addr], &[green.addr]);
        config["routes"][0]["blue"]["weight"] = json!(f64::from(10_000 - GREEN_BP) / 100.0);
        config["routes"][0]["green"]["weight"] = json!(f64::from(GREEN_BP) / 100.0);
        edit(&mut config);
        let proxy = RunningProxy::start(dir, "proxy.yaml", &config).await;
        Setup {
            proxy,
            _apps: [blue, green],
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy.listen)
    }

    /// `(green, total)` of the proxy's `crossfade_requests_total`, and its 5xx count.
    async fn counted(&self) -> (u64, u64, u64) {
        let metrics = self.proxy.admin.metrics().await;
        let green = requests_total(&metrics, "green") as u64;
        let total = green + requests_total(&metrics, "blue") as u64;
        let errors = metrics.sum("crossfade_requests_total", &[("class", "5xx")]) as u64;
        (green, total, errors)
    }
}

/// Per-response lines `CODE VERSION X-VERSION` from curl's `-w`.
const CURL_FORMAT: &str = "%{http_code} %{http_version} %header{x-version}\n";

/// Parses [`CURL_FORMAT`] lines: asserts every one is 200 over `http_version`, returns
/// `(green, total)`.
fn curl_answers(what: &str, output: &Output, http_version: &str) -> (u64, u64) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{what}: curl failed: {stderr}");
    let (mut green, mut total) = (0, 0);
    for line in stdout.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.first(), Some(&"200"), "{what}: {line}");
        assert_eq!(fields.get(1), Some(&http_version), "{what}: {line}");
        match fields.get(2) {
            Some(&"green") => green += 1,
            Some(&"blue") => {}
            other => panic!("{what}: answered by {other:?}: {line}"),
        }
        total += 1;
    }
    (green, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_http1_keep_alive_and_h2c_prior_knowledge() {
    if !have("curl", "curl") {
        return;
    }
    let dir = temp_dir();
    let setup = Setup::start(dir.path(), |_| {}).await;
    // HTTP/1.1: 600 URLs in one curl, so one keep-alive connection carries them.
    let url = setup.url("/");
    let mut args = vec!["-sS", "--http1.1", "-w", CURL_FORMAT];
    for _ in 0..600 {
        // `-o` applies to one URL: each gets its own.
        args.extend(["-o", "/dev/null", url.as_str()]);
    }
    let output = run("curl", &args);
    let (green, total) = curl_answers("curl http/1.1", &output, "1.1");
    assert_eq!(total, 600);
    assert_split("curl http/1.1", green, total);
    // h2c with prior knowledge: one request per curl process (curl 7.88 breaks on a reused
    // prior-knowledge connection, curl issue 10634).
    let (mut green, mut total) = (0, 0);
    for _ in 0..60 {
        let args = [
            "-sS",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "-w",
            CURL_FORMAT,
            &url,
        ];
        let (g, t) = curl_answers("curl h2c", &run("curl", &args), "2");
        (green, total) = (green + g, total + t);
    }
    assert_eq!(total, 60);
    assert_split("curl h2c", green, total);
    assert_eq!(setup.counted().await.2, 0, "no 5xx");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_upload_with_expect_continue_gets_exactly_one_100() {
    if !have("curl", "curl") {
        return;
    }
    let dir = temp_dir();
    let setup = Setup::start(dir.path(), |_| {}).await;
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let file = dir.path().join("upload.bin");
    std::fs::write(&file, &data).unwrap();
    let sha = format!("{:x}", Sha256::digest(&data));
    let url = setup.url("/upload");
    for _ in 0..5 {
        let args = [
            "-sS",
            "-v",
            "-T",
            file.to_str().unwrap(),
            "-H",
            "Expect: 100-continue",
            "--max-time",
            "30",
            "-w",
            "\n%{http_code}",
            &url,
        ];
        let output = run("curl", &args);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let continues = stderr
            .lines()
            .filter(|l| l.starts_with("< HTTP/1.1 100"))
            .count();
        assert_eq!(
            continues, 1,
            "exactly one 100 Continue; curl said:\n{stderr}"
        );
        assert!(stdout.ends_with("\n201"), "{stdout}");
        assert!(
            stdout.contains(&format!("\"sha256\":\"{sha}\"")),
            "{stdout}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_many_streams_over_few_h2c_connections() {
    if !have("h2load", "nghttp2-client") {
        return;
    }
    let dir = temp_dir();
    let setup = Setup::start(dir.path(), |_| {}).await;
    let url = setup.url("/");
    // 20,000 requests, 4 connections, up to 32 concurrent streams each.
    let output = run("h2load", &["-n", "20000", "-c", "4", "-m", "32", &url]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "h2load failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("Application protocol: h2c"), "{stdout}");
    assert!(
        stdout.contains("requests: 20000 total, 20000 started, 20000 done, 20000 succeeded, 0 failed, 0 errored, 0 timeout"),
        "{stdout}"
    );
    assert!(
        stdout.contains("status codes: 20000 2xx, 0 3xx, 0 4xx, 0 5xx"),
        "{stdout}"
    );
    let (green, total, errors) = setup.counted().await;
    assert_eq!((total, errors), (20_000, 0));
    assert_split("h2load", green, total);
}

/// WebSocket over HTTP/2 (RFC 8441), as a browser opens one on its h2 connection: hyper's HTTP/2
/// client sends extended CONNECTs (`:protocol websocket`) over one h2c connection and
/// tokio-tungstenite speaks WebSocket over each stream. The sample app's `/ws` echo checks the
/// handshake the proxy makes for it (`GET`, `Upgrade: websocket`, a key, version 13); each reply
/// names the backend that holds the session, which follows the weights at the CONNECT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_over_h2c_extended_connect_reach_the_sample_apps_echo() {
    use futures_util::{SinkExt, StreamExt};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio_tungstenite::tungstenite::{protocol::Role, Message};

    let dir = temp_dir();
    let setup = Setup::start(dir.path(), |_| {}).await;
    let stream = tokio::net::TcpStream::connect(setup.proxy.listen)
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut sessions = Vec::new();
    for _ in 0..40 {
        let mut request = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(format!("http://{}/ws", setup.proxy.listen))
            .header("sec-websocket-version", "13")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        request
            .extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        sender.ready().await.unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), http::StatusCode::OK, "{response:?}");
        let upgraded = hyper::upgrade::on(response).await.unwrap();
        let io = TokioIo::new(upgraded);
        sessions.push(WebSocketStream::from_raw_socket(io, Role::Client, None).await);
    }
    let mut green = 0;
    for (n, ws) in sessions.iter_mut().enumerate() {
        for message in 0..3 {
            let text = format!("session {n} message {message}");
            ws.send(Message::text(text.clone())).await.unwrap();
            let reply = match ws.next().await {
                Some(Ok(Message::Text(reply))) => reply.to_string(),
                other => panic!("no echo of {text}: {other:?}"),
            };
            let reply: Value = serde_json::from_str(&reply).unwrap();
            assert_eq!(reply["echo"], text.as_str(), "{reply}");
            let pool = reply["pool"].as_str().unwrap_or_default();
            assert!(pool == "blue" || pool == "green", "{reply}");
            if message == 0 && pool == "green" {
                green += 1;
            }
        }
    }
    // Both backends hold sessions (all 40 on one: p = 0.7^40 or 0.3^40, below 10^-6).
    assert!(
        0 < green && green < 40,
        "green holds {green} of 40 sessions"
    );
    assert_split("websockets over h2c", green, 40);
    for ws in &mut sessions {
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
    }
    let metrics = setup.proxy.admin.metrics().await;
    let errors = metrics.sum("crossfade_requests_total", &[("class", "5xx")]);
    assert_eq!(errors, 0.0);
}

/// A real browser's WebSocket over HTTP/2 (RFC 8441): headless Chromium loads a page that fetches
/// `/` from the proxy over TLS (ALPN `h2`), then opens `wss://` to the same origin, which Chromium
/// sends as an extended CONNECT on that h2 connection since the proxy advertises it; the page shows
/// the sample app's echo. The access log proves the path: a `CONNECT /ws` over HTTP/2, answered 200.
///
/// Chromium's `--dump-dom` dumps at the page's load event: an image from `/slow` (a sample app with
/// 5 s of latency, on the same h2 connection) holds that event while the script runs in real time.
/// (Chromium's virtual time would not do: it holds the page's tasks, the WebSocket's events among
/// them, while a fetch is pending, and runs out right after.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_opens_a_websocket_over_the_proxys_tls_http2_connection() {
    if !crate::report::have_chromium() {
        return;
    }
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let slow = SampleApp::start(dir.path(), "slow", "slow-0", &["--latency", "5000"]).await;
    let (_, chain, key) = certificates("browser");
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, chain).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let access_log = dir.path().join("access.log");
    let mut config = proxy_config(&[blue.addr], &[]);
    config["tls"] = json!({ "cert": cert_path, "key": key_path });
    config["access_log"] = json!(access_log);
    let mut slow_route = config["routes"][0].clone();
    slow_route["name"] = json!("slow");
    slow_route["path_prefix"] = json!("/slow");
    slow_route["blue"]["endpoints"] = json!([slow.addr]);
    config["routes"].as_array_mut().unwrap().push(slow_route);
    let proxy = RunningProxy::start(dir.path(), "proxy.yaml", &config).await;

    let origin = format!("https://127.0.0.1:{}", proxy.listen.port());
    let page = dir.path().join("page.html");
    let script = format!(
        "const get = (path) => fetch('{origin}' + path, {{ mode: 'no-cors', credentials: 'include' }});
         get('/').then(() => {{
           const ws = new WebSocket('{origin}/ws'.replace('https:', 'wss:'));
           ws.onopen = () => ws.send('hello');
           ws.onmessage = (e) => {{ document.body.textContent = 'echo:' + e.data; }};
           ws.onerror = () => {{ document.body.textContent = 'websocket error'; }};
         }}).catch((e) => {{ document.body.textContent = 'fetch failed: ' + e; }});"
    );
    let html = format!(
        "<html><body>waiting<img src=\"{origin}/slow\"><script>{script}</script></body></html>"
    );
    std::fs::write(&page, html).unwrap();
    let output = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .arg("--ignore-certificate-errors")
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("chromium").display()
        ))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&output.stdout);
    let log = std::fs::read_to_string(&access_log).unwrap_or_default();
    assert!(
        dom.contains(r#"echo:{"echo":"hello","instance":"blue-0","pool":"blue","version":"blue"}"#),
        "{dom}\n{log}"
    );
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let connect = lines.iter().find(|l| l["method"] == "CONNECT");
    let connect = connect.unwrap_or_else(|| panic!("no CONNECT in the access log:\n{log}"));
    assert_eq!(connect["path"], "/ws", "{connect}");
    assert_eq!(connect["protocol"], "HTTP/2", "{connect}");
    assert_eq!(connect["status"], 200, "{connect}");
    assert_eq!(connect["backend"], "blue", "{connect}");
}

/// An ingress behind an L4 load balancer: HAProxy in TCP mode passes each connection on with a
/// PROXY protocol v2 header (`send-proxy-v2`, and v1 with `send-proxy`), and the proxy, with
/// `proxy_protocol: true`, takes the header's source as the client. curl connects to HAProxy from
/// 127.0.0.3 (`--interface`), so the access log's `client` is 127.0.0.3 where the TCP peer is
/// HAProxy's 127.0.0.1; a direct connection to the proxy, without a header, gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_in_front_sends_the_proxy_protocol_and_the_client_address_comes_through() {
    if !have("haproxy", "haproxy") || !have("curl", "curl") {
        return;
    }
    let dir = temp_dir();
    let access_log = dir.path().join("access.log");
    let setup = Setup::start(dir.path(), |config| {
        config["proxy_protocol"] = json!(true);
        config["access_log"] = json!(access_log);
    })
    .await;
    let (v2, v1) = (crate::support::free_addr(), crate::support::free_addr());
    let listen = setup.proxy.listen;
    let cfg = format!(
        "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
         listen v2\n  bind {v2}\n  server proxy {listen} send-proxy-v2\n\
         listen v1\n  bind {v1}\n  server proxy {listen} send-proxy\n"
    );
    let cfg_path = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg_path, cfg).unwrap();
    let mut haproxy = std::process::Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(&cfg_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start haproxy");
    let mut answers = Vec::new();
    for front in [v2, v1] {
        let url = format!("http://{front}/");
        // HAProxy may still be binding: curl retries a refused connection.
        let args = [
            "-sS",
            "--retry",
            "20",
            "--retry-connrefused",
            "--retry-delay",
            "0",
            "--interface",
            "127.0.0.3",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url,
        ];
        answers.push(run("curl", &args));
    }
    let direct = run(
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &setup.url("/"),
        ],
    );
    let _ = haproxy.kill();
    let _ = haproxy.wait();
    for answer in &answers {
        assert_eq!(
            String::from_utf8_lossy(&answer.stdout),
            "200",
            "{}",
            String::from_utf8_lossy(&answer.stderr)
        );
    }
    assert_eq!(
        String::from_utf8_lossy(&direct.stdout),
        "000",
        "a direct connection was served"
    );
    let log = std::fs::read_to_string(&access_log).unwrap_or_default();
    let clients: Vec<String> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["client"].to_string())
        .collect();
    assert_eq!(clients, ["\"127.0.0.3\"", "\"127.0.0.3\""], "{log}");
    let metrics = setup.proxy.admin.metrics().await;
    assert_eq!(
        metrics.sum("crossfade_proxy_protocol_refused_total", &[]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrk_short_http1_run() {
    if !have("wrk", "wrk") {
        return;
    }
    let dir = temp_dir();
    let setup = Setup::start(dir.path(), |_| {}).await;
    let url = setup.url("/");
    let output = run("wrk", &["-t", "1", "-c", "8", "-d", "2s", &url]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "wrk failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // wrk prints these lines only when something failed.
    assert!(!stdout.contains("Socket errors"), "{stdout}");
    assert!(!stdout.contains("Non-2xx or 3xx responses"), "{stdout}");
    let done: u64 = stdout
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ")?.0.parse().ok())
        .unwrap_or_else(|| panic!("no request count in:\n{stdout}"));
    let (green, total, errors) = setup.counted().await;
    assert_eq!(errors, 0, "no 5xx");
    // wrk stops with up to 8 requests in flight, which it does not count but the proxy may.
    assert!(
        (done..=done + 8).contains(&total),
        "wrk {done}, proxy {total}"
    );
    assert_split("wrk", green, total);
}

/// A test CA and a leaf for `localhost` it signed: `(ca_pem, chain_pem, key_pem)`.
pub(crate) fn certificates(name: &str) -> (String, String, String) {
    certificates_for(name, "localhost")
}

/// A test CA and a leaf for `host` it signed: `(ca_pem, chain_pem, key_pem)`.
fn certificates_for(name: &str, host: &str) -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("crossfade test CA {name}"),
    );
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![host.to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (
        ca.pem(),
        format!("{}{}", leaf.pem(), ca.pem()),
        key.serialize_pem(),
    )
}

/// `curl --cacert CA https://localhost:PORT/` with `flag` (`--http1.1` or `--http2`).
fn curl_https(ca: &Path, listen: SocketAddr, flag: &str) -> Output {
    curl_https_to("localhost", ca, listen, flag)
}

/// `curl --cacert CA https://HOST:PORT/` with `flag`, `HOST` resolved to the proxy's address,
/// so curl sends `HOST` in SNI and checks the certificate against it.
fn curl_https_to(host: &str, ca: &Path, listen: SocketAddr, flag: &str) -> Output {
    let port = listen.port();
    let resolve = format!("{host}:{port}:127.0.0.1");
    let url = format!("https://{host}:{port}/");
    let ca = ca.to_str().unwrap();
    let args = [
        "-sS",
        flag,
        "--cacert",
        ca,
        "--resolve",
        &resolve,
        "-o",
        "/dev/null",
        "-w",
        CURL_FORMAT,
        &url,
    ];
    run("curl", &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_tls_http1_and_http2_and_a_sighup_certificate_reload() {
    if !have("curl", "curl") {
        return;
    }
    let dir = temp_dir();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let ((ca_one, chain_one, key_one), (ca_two, chain_two, key_two)) =
        (certificates("one"), certificates("two"));
    let (ca_one_path, ca_two_path) = (dir.path().join("ca-one.pem"), dir.path().join("ca-two.pem"));
    for (path, text) in [
        (&cert, &chain_one),
        (&key, &key_one),
        (&ca_one_path, &ca_one),
        (&ca_two_path, &ca_two),
    ] {
        std::fs::write(path, text).unwrap();
    }
    let setup = Setup::start(dir.path(), |config| {
        // Only SIGHUP reloads here (no polling), so the signal is what is tested.
        config["tls"] = json!({ "cert": cert, "key": key, "watch_interval": "0s" });
    })
    .await;
    let listen = setup.proxy.listen;
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let output = curl_https(&ca_one_path, listen, flag);
        assert_eq!(curl_answers(flag, &output, version).1, 1);
    }
    let refused = curl_https(&ca_two_path, listen, "--http2");
    assert!(!refused.status.success(), "CA two is not trusted yet");

    std::fs::write(&key, &key_two).unwrap();
    std::fs::write(&cert, &chain_two).unwrap();
    let pid = Pid::from_raw(setup.proxy.child.pid() as i32);
    kill(pid, Signal::SIGHUP).expect("SIGHUP the proxy");
    let mut reloaded = false;
    for _ in 0..100 {
        if curl_https(&ca_two_path, listen, "--http2").status.success() {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        reloaded,
        "the new certificate was not served after SIGHUP; log:\n{}",
        setup.proxy.child.log()
    );
    let output = curl_https(&ca_two_path, listen, "--http1.1");
    assert_eq!(curl_answers("after reload", &output, "1.1").1, 1);
    assert!(
        !curl_https(&ca_one_path, listen, "--http2").status.success(),
        "the old certificate is gone"
    );
    let metrics = setup.proxy.admin.metrics().await;
    assert_eq!(
        metrics.get("crossfade_tls_reloads_total", &[("result", "ok")]),
        Some(1.0)
    );
}

/// One listener, two domains: curl asking for `shop.example` gets the `tls.sni` pair that names
/// it, curl asking for `localhost` gets `tls.cert`, curl that asks for `shop.example` in SNI
/// and for `localhost` in `Host` gets 421, and a SIGHUP serves a renewed SNI pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_the_certificate_of_the_host_it_asks_for_by_sni() {
    if !have("curl", "curl") {
        return;
    }
    let dir = temp_dir();
    let at = |name: &str| dir.path().join(name);
    let (ca_default, chain_default, key_default) = certificates("default");
    let (ca_shop, chain_shop, key_shop) = certificates_for("shop", "shop.example");
    let (ca_renewed, chain_renewed, key_renewed) = certificates_for("renewed", "shop.example");
    for (name, text) in [
        ("tls.crt", &chain_default),
        ("tls.key", &key_default),
        ("shop.crt", &chain_shop),
        ("shop.key", &key_shop),
        ("ca-default.pem", &ca_default),
        ("ca-shop.pem", &ca_shop),
        ("ca-renewed.pem", &ca_renewed),
    ] {
        std::fs::write(at(name), text).unwrap();
    }
    let setup = Setup::start(dir.path(), |config| {
        config["tls"] = json!({
            "cert": at("tls.crt"),
            "key": at("tls.key"),
            "sni": [{ "cert": at("shop.crt"), "key": at("shop.key") }],
            "watch_interval": "0s",
        });
    })
    .await;
    let listen = setup.proxy.listen;
    let shop = curl_https_to("shop.example", &at("ca-shop.pem"), listen, "--http2");
    assert_eq!(curl_answers("shop.example", &shop, "2").1, 1);
    let default = curl_https_to("localhost", &at("ca-default.pem"), listen, "--http1.1");
    assert_eq!(curl_answers("localhost", &default, "1.1").1, 1);
    let wrong = curl_https_to("shop.example", &at("ca-default.pem"), listen, "--http2");
    assert!(
        !wrong.status.success(),
        "shop.example was given the default certificate"
    );
    // A request for a host the connection's certificate was not picked for (SNI shop.example,
    // Host localhost, which tls.cert serves): 421 Misdirected Request (RFC 9110 §7.4), over
    // HTTP/1.1 and HTTP/2.
    for flag in ["--http1.1", "--http2"] {
        let port = listen.port();
        let resolve = format!("shop.example:{port}:127.0.0.1");
        let url = format!("https://shop.example:{port}/");
        let ca = at("ca-shop.pem");
        let args = [
            "-sS",
            flag,
            "--cacert",
            ca.to_str().unwrap(),
            "--resolve",
            &resolve,
            "-H",
            "Host: localhost",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url,
        ];
        let out = run("curl", &args);
        let code = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            code,
            "421",
            "{flag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    std::fs::write(at("shop.key"), &key_renewed).unwrap();
    std::fs::write(at("shop.crt"), &chain_renewed).unwrap();
    let pid = Pid::from_raw(setup.proxy.child.pid() as i32);
    kill(pid, Signal::SIGHUP).expect("SIGHUP the proxy");
    let renewed = |flag| curl_https_to("shop.example", &at("ca-renewed.pem"), listen, flag);
    let mut reloaded = false;
    for _ in 0..100 {
        if renewed("--http2").status.success() {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        reloaded,
        "the renewed SNI certificate was not served after SIGHUP; log:\n{}",
        setup.proxy.child.log()
    );
    let default = curl_https_to("localhost", &at("ca-default.pem"), listen, "--http1.1");
    assert_eq!(curl_answers("localhost after", &default, "1.1").1, 1);
}

/// `request_id` with shadow traffic: curl's own `X-Request-Id` comes back to it, and the log line
/// of a shadow mismatch (blue and green answer different bodies) names it, so the mirrored
/// request can be found in both backends' logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curls_request_id_comes_back_and_names_the_shadow_mismatch_in_the_log() {
    if !have("curl", "curl") {
        return;
    }
    let dir = temp_dir();
    let setup = Setup::start(dir.path(), |config| {
        config["request_id"] = json!({});
        config["routes"][0]["blue"]["weight"] = json!(100);
        config["routes"][0]["green"]["weight"] = json!(0);
        config["routes"][0]["shadow"] = json!({ "percent": 100 });
    })
    .await;
    let output = run(
        "curl",
        &[
            "-sS",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            "X-Request-Id: trace-5e1f",
            &setup.url("/"),
        ],
    );
    let head = String::from_utf8_lossy(&output.stdout).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("x-request-id: trace-5e1f\r\n"), "{head}");
    let mut logged = None;
    for _ in 0..100 {
        let log = setup.proxy.child.log();
        logged = log
            .lines()
            .find(|l| l.contains("shadow answer differs"))
            .map(str::to_owned);
        if logged.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let line = logged.unwrap_or_else(|| {
        panic!(
            "no shadow mismatch logged; log:\n{}",
            setup.proxy.child.log()
        )
    });
    assert!(line.contains("trace-5e1f"), "{line}");
}
