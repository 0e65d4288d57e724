//! C20 — `Expect: 100-continue` uploads stall, hang, or get reset through the proxy (traefik#2899,
//! traefik#7431, haproxy#3316).
//!
//! Right outcome: A, exactly one `100 Continue` reaches the client, the upload has no ~1 s stall and
//! its sha256 matches; B, a backend that answers 401 without reading gets its 401 to the client in
//! under 1 s, with no reset and no 100, so the client never sends the body (curl's `size_upload` is 0);
//! C, an upload that starts 200 ms before a switch from 50/50 to 0/100 completes with 201 on the
//! backend it started on (here the switch waits until uploads are in flight on blue, so at least
//! one crosses it there, whatever the machine's speed). A real `curl -T FILE -H 'Expect: 100-continue'` (20 MB, as in the case)
//! plus a raw socket that counts the `100 Continue` lines byte for byte. The "within 10% of direct"
//! timing is reported, and asserted as "no stall" (less than direct + 700 ms) so a loaded CI machine
//! does not fail it.
//!
//! Over HTTP/2 (the `c20_h2_*` tests): an h2 client (the `h2` crate, which shows each interim
//! HEADERS frame) that waits for its 100 before it sends the body, as curl does, gets exactly one
//! 100 and then its 201 with the sha256, through the proxy to an HTTP/1.1 backend and to an h2c
//! one; a client that does not wait gets at most one (RFC 9110 §10.1.1 lets a server omit it once
//! content arrived). An early 401 reaches it with no 100, so it never sends the body, and the rest
//! of its request is refused with `RST_STREAM(NO_ERROR)` (RFC 9113 §8.1). Against the h2c backend
//! the proxy's `limits.expect_continue_timeout` is 60 s, longer than the client waits (20 s), so
//! only the backend's own 100 can release the body: no timing is asserted.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::{
    have_tool, missing_tool, proxy_config, temp_dir, Metrics, RunningProxy, SampleApp,
};

/// The case's upload size.
const UPLOAD_BYTES: usize = 20 * 1000 * 1000;
/// Host of the route whose backend rejects uploads.
const REJECTING: &str = "reject.example";

/// What curl reported for one upload.
#[derive(Debug)]
struct Curl {
    status: u16,
    continues: usize,
    seconds: f64,
    uploaded: u64,
    body: String,
    stderr: String,
}

/// `curl -sv -T FILE -H 'Expect: 100-continue' URL`, or `None` (with a loud message) without curl.
///
/// # Panics
/// Without curl when tools are required (scripts/test.sh, `CI=true`:
/// [`crate::support::tools_required`]).
fn curl(file: &Path, url: &str, extra: &[&str]) -> Option<Curl> {
    let mut args = vec!["-sS", "-v", "-T"];
    let file = file.to_str().expect("utf-8 path");
    args.extend([file, "-H", "Expect: 100-continue", "--max-time", "30"]);
    args.extend(extra);
    let format = "\n%{http_code} %{time_total} %{size_upload}";
    args.extend(["-w", format, url]);
    let output = match Command::new("curl").args(&args).output() {
        Ok(output) => output,
        Err(e) => {
            let hint = format!("cannot run curl ({e}); scripts/test.sh installs it");
            missing_tool("c20 (the curl part)", &hint);
            return None;
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let (body, tail) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let fields: Vec<&str> = tail.split_whitespace().collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or("0");
    let continues = stderr
        .lines()
        .filter(|l| l.starts_with("< HTTP/1.1 100"))
        .count();
    Some(Curl {
        status: field(0).parse().unwrap_or(0),
        seconds: field(1).parse().unwrap_or(f64::MAX),
        uploaded: field(2).parse::<f64>().unwrap_or(-1.0) as u64,
        continues,
        body: body.to_owned(),
        stderr,
    })
}

fn upload_file(dir: &Path) -> (std::path::PathBuf, String) {
    let mut data = vec![0u8; UPLOAD_BYTES];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let path = dir.join("20MB.bin");
    std::fs::write(&path, &data).expect("write the upload");
    (path, format!("{:x}", Sha256::digest(&data)))
}

/// A proxy with route `web` (blue, green: ordinary sample apps) and route `reject` (host
/// `reject.example`, its blue answers `/upload` with 401 at once), all over HTTP/1.1.
async fn setup(dir: &Path) -> (RunningProxy, [SampleApp; 3]) {
    setup_with(dir, "http1", None).await
}

/// [`setup`] with every backend spoken to in `protocol` (`http1`, `h2c`), and
/// `limits.expect_continue_timeout` set when given.
async fn setup_with(
    dir: &Path,
    protocol: &str,
    expect_wait: Option<&str>,
) -> (RunningProxy, [SampleApp; 3]) {
    let blue = SampleApp::start(dir, "blue", "blue-0", &[]).await;
    let green = SampleApp::start(dir, "green", "green-0", &[]).await;
    let rejecting = SampleApp::start(dir, "rejecting", "rejecting-0", &["--reject-uploads"]).await;
    let mut config = proxy_config(&[blue.addr], &[green.addr]);
    for backend in ["blue", "green"] {
        config["routes"][0][backend]["protocol"] = json!(protocol);
    }
    if let Some(wait) = expect_wait {
        config["limits"] = json!({ "expect_continue_timeout": wait });
    }
    let reject_route = json!({
        "name": "reject",
        "hosts": [REJECTING],
        "blue": { "endpoints": [rejecting.addr], "weight": 100, "protocol": protocol },
    });
    // First, so that it wins over `web` (any host, same prefix) for its host.
    let routes = config["routes"].as_array_mut().expect("routes");
    routes.insert(0, reject_route);
    let proxy = RunningProxy::start(dir, "proxy.yaml", &config).await;
    (proxy, [blue, green, rejecting])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c20_expect_continue_upload_gets_one_100_and_no_stall() {
    let dir = temp_dir();
    let (proxy, [blue, _green, _rejecting]) = setup(dir.path()).await;
    let (file, sha) = upload_file(dir.path());

    let Some(direct) = curl(&file, &format!("http://{}/upload", blue.addr), &[]) else {
        return raw_upload_gets_one_100(proxy.listen).await;
    };
    let via = curl(&file, &format!("http://{}/upload", proxy.listen), &[]).expect("curl");
    eprintln!(
        "c20 A: direct {:.3} s, via proxy {:.3} s ({:.0}% of direct), 100s seen {}",
        direct.seconds,
        via.seconds,
        100.0 * via.seconds / direct.seconds,
        via.continues
    );
    for (name, run) in [("direct", &direct), ("via proxy", &via)] {
        assert_eq!(run.status, 201, "{name}: {run:?}");
        assert_eq!(run.continues, 1, "{name}: one 100 Continue: {}", run.stderr);
        assert!(
            run.body.contains(&sha),
            "{name}: sha256 {sha}: {}",
            run.body
        );
    }
    assert!(
        via.seconds < direct.seconds + 0.7,
        "stall: {:.3} s via the proxy, {:.3} s direct",
        via.seconds,
        direct.seconds
    );
    raw_upload_gets_one_100(proxy.listen).await;
}

/// The raw-socket variant of A: the 100 arrives promptly, exactly once, before the 201.
async fn raw_upload_gets_one_100(proxy: SocketAddr) {
    let body = vec![b'x'; 1 << 20];
    let mut conn = Raw::connect(proxy).await;
    let head = format!(
        "PUT /upload HTTP/1.1\r\nHost: shop.example\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write(head.as_bytes()).await;
    let started = Instant::now();
    let (status, _) = conn.head().await;
    let waited = started.elapsed();
    assert_eq!(status, 100, "first answer to an Expect upload");
    assert!(waited < Duration::from_millis(900), "100 after {waited:?}");
    conn.write(&body).await;
    let (status, headers) = conn.head().await;
    assert_eq!(status, 201, "a second 100 or no final answer: {headers:?}");
    eprintln!("c20 A raw: 100 after {waited:?}, then 201");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c20_early_401_reaches_the_client_without_the_body_being_sent() {
    let dir = temp_dir();
    let (proxy, [_blue, _green, rejecting]) = setup(dir.path()).await;

    // Raw: the 401 comes first (no 100), quickly, and the connection is closed cleanly, not reset.
    for _ in 0..5 {
        let mut conn = Raw::connect(proxy.listen).await;
        let head = format!(
            "PUT /upload HTTP/1.1\r\nHost: {REJECTING}\r\nExpect: 100-continue\r\nContent-Length: {UPLOAD_BYTES}\r\n\r\n"
        );
        let started = Instant::now();
        conn.write(head.as_bytes()).await;
        let (status, headers) = conn.head().await;
        let elapsed = started.elapsed();
        assert_eq!(status, 401, "{headers:?}");
        assert!(elapsed < Duration::from_secs(1), "401 after {elapsed:?}");
        conn.body(&headers).await;
        eprintln!("c20 B raw: 401 after {elapsed:?}, no 100");
    }

    let (file, _) = upload_file(dir.path());
    let host = format!("Host: {REJECTING}");
    let urls = [
        ("direct", format!("http://{}/upload", rejecting.addr)),
        ("via proxy", format!("http://{}/upload", proxy.listen)),
    ];
    for (name, url) in urls {
        let Some(run) = curl(&file, &url, &["-H", &host]) else {
            return;
        };
        eprintln!(
            "c20 B curl {name}: {} in {:.3} s, {} bytes uploaded, 100s seen {}",
            run.status, run.seconds, run.uploaded, run.continues
        );
        assert_eq!(run.status, 401, "{name}: {}", run.stderr);
        assert!(run.seconds < 1.0, "{name}: {:.3} s", run.seconds);
        assert_eq!(run.continues, 0, "{name}: no 100: {}", run.stderr);
        assert_eq!(run.uploaded, 0, "{name}: the body was sent: {}", run.stderr);
        assert!(!run.stderr.contains("reset"), "{name}: {}", run.stderr);
    }
}

/// Variant C. Each upload is throttled to 2 MB/s (10 s for 20 MB), and the switch from 50/50 to
/// 0/100 is made only once the proxy has dispatched every upload
/// (`crossfade_dispatched_requests_total`) and at least one on blue is still in flight
/// (`crossfade_in_flight_requests`), so uploads are known to be in flight on blue across the
/// switch, however slow the machine: each of those must complete on blue with 201 and its sha256.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c20_upload_during_a_weight_switch_completes_where_it_started() {
    let dir = temp_dir();
    let (proxy, _apps) = setup(dir.path()).await;
    let (file, sha) = upload_file(dir.path());
    if !have_tool("c20 C", "curl", "curl") {
        return;
    }
    proxy.set_weights(5_000, 5_000).await;
    let url = format!("http://{}/upload", proxy.listen);
    let mut uploads = Vec::new();
    let mut in_flight = (0, 0);
    // 6 uploads, then one more at a time until blue has one: at 50/50, 7 + k uploads all on green
    // has probability 2^-(7+k); the bound only keeps a broken proxy from looping forever.
    while uploads.len() < 6 || (in_flight.0 == 0 && uploads.len() < MAX_SWITCH_UPLOADS) {
        let (file, url) = (file.clone(), url.clone());
        uploads.push(tokio::task::spawn_blocking(move || {
            let extra = ["--limit-rate", "2M", "-D", "-"];
            let run = curl(&file, &url, &extra).expect("curl");
            (run, Instant::now())
        }));
        let launched = uploads.len();
        in_flight = wait_dispatched(&proxy, launched).await;
    }
    let switched = Instant::now();
    proxy.set_weights(0, 10_000).await;
    let after_switch = uploads_in_flight(&proxy.admin.metrics().await);
    let mut runs = Vec::new();
    for upload in uploads {
        let (run, finished) = upload.await.expect("join");
        assert_eq!(run.status, 201, "{}", run.stderr);
        // The sha256 of the whole file: no upload was split across the pools.
        assert!(run.body.contains(&sha), "sha256 {sha}: {}", run.body);
        runs.push((pool_of(&run), finished));
    }
    let across: Vec<_> = runs
        .iter()
        .filter(|(pool, finished)| pool == "blue" && *finished > switched)
        .collect();
    eprintln!(
        "c20 C: {} uploads; in flight (blue, green) before the switch {in_flight:?}, after it \
         {after_switch:?}; {} completed on blue after the switch; pools {:?}",
        runs.len(),
        across.len(),
        runs.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
    assert!(
        after_switch.0 >= 1,
        "no upload was in flight on blue across the switch: before {in_flight:?}, after \
         {after_switch:?}"
    );
    assert!(
        across.len() as u64 >= after_switch.0,
        "uploads in flight on blue across the switch: {after_switch:?}, completed on blue after \
         it: {} ({runs:?})",
        across.len()
    );
    let after = curl(&file, &url, &["-D", "-"]).expect("curl");
    assert_eq!(after.status, 201);
    assert_eq!(pool_of(&after), "green", "{}", after.body);
}

/// Upper bound on the uploads variant C starts while waiting for one on blue.
const MAX_SWITCH_UPLOADS: usize = 16;

/// Waits until the proxy has dispatched `launched` uploads to route `web` (counted, not in
/// flight: on a loaded machine the first may end before the last starts), and returns the uploads
/// in flight as (blue, green).
async fn wait_dispatched(proxy: &RunningProxy, launched: usize) -> (u64, u64) {
    let what = format!("{launched} uploads dispatched by the proxy");
    crate::support::wait_until(Duration::from_secs(20), &what, || async {
        let metrics = proxy.admin.metrics().await;
        let labels = [("route", "web")];
        let dispatched = metrics.sum("crossfade_dispatched_requests_total", &labels);
        (dispatched >= launched as f64).then(|| uploads_in_flight(&metrics))
    })
    .await
}

/// `crossfade_in_flight_requests` of route `web` as (blue, green).
fn uploads_in_flight(metrics: &Metrics) -> (u64, u64) {
    let gauge = |backend| {
        let labels = [("route", "web"), ("backend", backend)];
        metrics
            .get("crossfade_in_flight_requests", &labels)
            .unwrap_or(0.0) as u64
    };
    (gauge("blue"), gauge("green"))
}

/// The `X-Pool` of an upload run with `-D -` (its response head is in the body), or `?`.
fn pool_of(run: &Curl) -> String {
    let pool = run.body.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("x-pool")
            .then(|| value.trim().to_owned())
    });
    pool.unwrap_or_else(|| "?".to_owned())
}

/// A raw client connection that reads status lines and heads one at a time.
struct Raw {
    reader: BufReader<TcpStream>,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Raw {
            reader: BufReader::new(stream),
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        let write = self.reader.get_mut().write_all(bytes);
        let written = tokio::time::timeout(Duration::from_secs(10), write).await;
        written.expect("write stalled").expect("write");
    }

    /// One response head (a 1xx or a final one): its status and header lines.
    async fn head(&mut self) -> (u16, Vec<String>) {
        let status_line = self.line().await;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok());
        let mut headers = Vec::new();
        loop {
            let line = self.line().await;
            if line.is_empty() {
                break;
            }
            headers.push(line.to_ascii_lowercase());
        }
        (status.unwrap_or(0), headers)
    }

    /// Reads a `Content-Length` body to its end.
    async fn body(&mut self, headers: &[String]) {
        let length = headers
            .iter()
            .find_map(|h| h.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .expect("content-length");
        let mut body = vec![0; length];
        let read = self.reader.read_exact(&mut body);
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("body stalled")
            .expect("body: connection reset");
    }

    async fn line(&mut self) -> String {
        let mut line = String::new();
        let read = self.reader.read_line(&mut line);
        let n = tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("no answer within 10 s")
            .expect("read: connection reset");
        assert!(n > 0, "connection closed before an answer");
        line.trim_end().to_owned()
    }
}

/// Generous bound on any one wait of the HTTP/2 tests (a loaded CI machine is slow, never this slow).
const H2_WAIT: Duration = Duration::from_secs(20);

/// What one HTTP/2 upload saw.
#[derive(Debug)]
struct H2Upload {
    /// The status of each interim (1xx) response, in order.
    informational: Vec<u16>,
    status: u16,
    body: String,
    /// Whether the body was sent.
    sent: bool,
}

/// An h2c (prior knowledge) client connection to `addr`, driven on its own task.
async fn h2_connect(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// `PUT http://{host}/upload` with `Expect: 100-continue` and `Content-Length: {len}`. With
/// `body` and `wait`, the body is sent only once a 100 arrived (as curl does); with `body` and
/// not `wait`, right after the head; without `body`, never. Returns what came back and the
/// client's half of the stream (to see how the proxy ended it).
async fn h2_upload(
    client: &h2::client::SendRequest<Bytes>,
    host: &str,
    len: usize,
    body: Option<Bytes>,
    wait: bool,
) -> (H2Upload, h2::SendStream<Bytes>) {
    let request = http::Request::builder()
        .method(http::Method::PUT)
        .uri(format!("http://{host}/upload"))
        .header("expect", "100-continue")
        .header("content-length", len)
        .body(())
        .expect("request");
    let mut client = client.clone().ready().await.expect("h2 ready");
    let (mut response, mut stream) = client.send_request(request, false).expect("send head");
    let mut informational = Vec::new();
    let send = |stream: &mut h2::SendStream<Bytes>| match &body {
        Some(body) => {
            stream.send_data(body.clone(), true).expect("send body");
            true
        }
        None => false,
    };
    let mut sent = !wait && send(&mut stream);
    // Interim responses until the final one is next (`None`).
    loop {
        let next = std::future::poll_fn(|cx| response.poll_informational(cx));
        let next = tokio::time::timeout(H2_WAIT, next).await;
        match next.expect("neither a 100 nor a final answer within 20 s") {
            Some(Ok(interim)) => {
                informational.push(interim.status().as_u16());
                if wait && !sent && interim.status() == http::StatusCode::CONTINUE {
                    sent = send(&mut stream);
                }
            }
            Some(Err(e)) => panic!("stream failed before the final answer: {e}"),
            None => break,
        }
    }
    let response = tokio::time::timeout(H2_WAIT, response)
        .await
        .expect("final answer within 20 s")
        .expect("final answer");
    let status = response.status().as_u16();
    let mut received = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = tokio::time::timeout(H2_WAIT, received.data())
        .await
        .expect("response body within 20 s")
    {
        let chunk = chunk.expect("response body");
        let _ = received.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    let body = String::from_utf8_lossy(&bytes).into_owned();
    let upload = H2Upload {
        informational,
        status,
        body,
        sent,
    };
    (upload, stream)
}

/// A 1 MiB upload body and its sha256.
fn h2_body() -> (Bytes, String) {
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i * 31 % 251) as u8).collect();
    let sha = format!("{:x}", Sha256::digest(&data));
    (Bytes::from(data), sha)
}

/// The checks of the HTTP/2 tests against a proxy from [`setup_with`]: A (one 100 to a client
/// that waits, then the 201 and the sha256; at most one to one that does not wait) and B (an early
/// 401 with no 100, the body never sent, the rest refused with `RST_STREAM(NO_ERROR)`).
async fn h2_expect_continue_cases(proxy: SocketAddr, label: &str) {
    let client = h2_connect(proxy).await;
    let (body, sha) = h2_body();
    // A, waiting for the 100: twice on one connection, so a stray second 100 would show.
    for _ in 0..2 {
        let (run, _) = h2_upload(
            &client,
            "shop.example",
            body.len(),
            Some(body.clone()),
            true,
        )
        .await;
        eprintln!("c20 {label} A: {:?} then {}", run.informational, run.status);
        assert_eq!(
            run.informational,
            [100],
            "{label}: exactly one 100: {run:?}"
        );
        assert_eq!(run.status, 201, "{label}: {run:?}");
        assert!(
            run.body.contains(&sha),
            "{label}: sha256 {sha}: {}",
            run.body
        );
    }
    // A, not waiting: the body follows the head at once; a 100 may come or not, never two.
    let (run, _) = h2_upload(
        &client,
        "shop.example",
        body.len(),
        Some(body.clone()),
        false,
    )
    .await;
    eprintln!(
        "c20 {label} A eager: {:?} then {}",
        run.informational, run.status
    );
    assert!(run.informational.len() <= 1, "{label}: {run:?}");
    assert!(
        run.informational.iter().all(|s| *s == 100),
        "{label}: {run:?}"
    );
    assert_eq!(run.status, 201, "{label}: {run:?}");
    assert!(
        run.body.contains(&sha),
        "{label}: sha256 {sha}: {}",
        run.body
    );
    // B: the backend answers 401 without reading.
    for _ in 0..3 {
        let (run, mut stream) =
            h2_upload(&client, REJECTING, UPLOAD_BYTES, Some(body.clone()), true).await;
        eprintln!("c20 {label} B: {:?} then {}", run.informational, run.status);
        assert_eq!(run.status, 401, "{label}: {run:?}");
        assert!(run.informational.is_empty(), "{label}: no 100: {run:?}");
        assert!(!run.sent, "{label}: the body was sent: {run:?}");
        let reset = std::future::poll_fn(|cx| stream.poll_reset(cx));
        let reset = tokio::time::timeout(H2_WAIT, reset).await;
        let reason = reset.expect("the unsent request body was never refused within 20 s");
        assert_eq!(
            reason.expect("RST_STREAM"),
            h2::Reason::NO_ERROR,
            "{label}: the rest of the request is refused without error (RFC 9113 §8.1)"
        );
    }
    // The connection still serves.
    let (run, _) = h2_upload(&client, "shop.example", body.len(), Some(body), true).await;
    assert_eq!(
        (run.informational.as_slice(), run.status),
        (&[100][..], 201),
        "{label}: {run:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c20_h2_client_gets_one_100_and_an_early_401_from_an_http1_backend() {
    let dir = temp_dir();
    let (proxy, _apps) = setup(dir.path()).await;
    h2_expect_continue_cases(proxy.listen, "h2 -> http1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c20_h2_end_to_end_to_an_h2c_backend_gets_the_backends_100_and_its_early_401() {
    let dir = temp_dir();
    // 60 s: only the backend's own 100 can release a body within the clients' 20 s waits.
    let (proxy, _apps) = setup_with(dir.path(), "h2c", Some("60s")).await;
    h2_expect_continue_cases(proxy.listen, "h2 -> h2c").await;

    // An HTTP/1.1 client to the same h2c backend: one 100, the body, then 201.
    let body = vec![b'x'; 1 << 20];
    let mut conn = Raw::connect(proxy.listen).await;
    let head = format!(
        "PUT /upload HTTP/1.1\r\nHost: shop.example\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write(head.as_bytes()).await;
    let (status, headers) = conn.head().await;
    assert_eq!(
        status, 100,
        "http1 -> h2c: first answer to an Expect upload: {headers:?}"
    );
    conn.write(&body).await;
    let (status, headers) = conn.head().await;
    assert_eq!(
        status, 201,
        "http1 -> h2c: a second 100 or no final answer: {headers:?}"
    );

    // And its early 401: no 100, a clean answer.
    let mut conn = Raw::connect(proxy.listen).await;
    let head = format!(
        "PUT /upload HTTP/1.1\r\nHost: {REJECTING}\r\nExpect: 100-continue\r\nContent-Length: {UPLOAD_BYTES}\r\n\r\n"
    );
    conn.write(head.as_bytes()).await;
    let (status, headers) = conn.head().await;
    assert_eq!(status, 401, "http1 -> h2c: {headers:?}");
    conn.body(&headers).await;
}

/// The same family from an HTTP/1.0 client (RFC 9110 §10.1.1: a server ignores an HTTP/1.0
/// request's `100-continue`; such a client sends its body at once): through the proxy to a backend
/// that sends no 100 of its own (as Python's `http.server` does not), the upload is answered with
/// no ~1 s stall (the `expect_continue_timeout` gate), the client gets no 100, and the backend is
/// not asked to expect anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c20_http10_client_expect_is_ignored_and_its_upload_does_not_stall() {
    let dir = temp_dir();
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let backend_addr = backend.local_addr().expect("backend address");
    let heads = tokio::spawn(no_continue_backend(backend, HTTP10_UPLOADS));
    let green = SampleApp::start(dir.path(), "green", "green-0", &[]).await;
    let config = proxy_config(&[backend_addr], &[green.addr]);
    let proxy = RunningProxy::start(dir.path(), "proxy.yaml", &config).await;

    let body = vec![b'x'; 256 * 1024];
    for _ in 0..HTTP10_UPLOADS {
        let mut conn = Raw::connect(proxy.listen).await;
        let head = format!(
            "PUT /upload HTTP/1.0\r\nHost: shop.example\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let started = Instant::now();
        conn.write(head.as_bytes()).await;
        conn.write(&body).await;
        let (status, headers) = conn.head().await;
        let elapsed = started.elapsed();
        eprintln!("c20 HTTP/1.0 Expect: {status} after {elapsed:?}");
        assert_eq!(status, 201, "no 100 to an HTTP/1.0 client: {headers:?}");
        assert!(
            elapsed < Duration::from_millis(600),
            "the upload stalled {elapsed:?}"
        );
    }
    let heads = heads.await.expect("backend task");
    for head in heads {
        assert!(
            !head.to_ascii_lowercase().contains("expect:"),
            "the backend was asked to expect: {head}"
        );
    }
}

/// HTTP/1.0 uploads sent in that test.
const HTTP10_UPLOADS: usize = 3;

/// A backend that never sends `100 Continue`: reads each request head and its `Content-Length`
/// body, answers 201 and closes; returns the heads it read.
async fn no_continue_backend(listener: tokio::net::TcpListener, requests: usize) -> Vec<String> {
    let mut heads = Vec::new();
    for _ in 0..requests {
        let (stream, _) = listener.accept().await.expect("accept");
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.expect("read a head line");
            if line.trim_end().is_empty() {
                break;
            }
            head.push_str(&line);
        }
        let length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_owned())
            })
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await.expect("read the body");
        let answer = "HTTP/1.1 201 Created\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let stream = reader.get_mut();
        stream.write_all(answer.as_bytes()).await.expect("answer");
        let _ = stream.shutdown().await;
        heads.push(head);
    }
    heads
}
