//! A real Prometheus that asks for the Prometheus text format 0.0.4 only, as one configured with
//! `scrape_protocols: [PrometheusText0.0.4]` does, scrapes `crossfade proxy` and reads its
//! counters right.
//!
//! The Prometheus the tests run (Debian bookworm's 2.42) predates `scrape_protocols` (2.49) and
//! always names OpenMetrics first. So its scrapes go through [`Relay`], which sets the `Accept`
//! a `scrape_protocols: [PrometheusText0.0.4]` Prometheus sends ([`TEXT_ONLY_ACCEPT`]) and passes
//! the answer back as it is: Prometheus picks its parser by the answer's `Content-Type`, so it
//! reads what the proxy chose.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::prometheus::{series, Prometheus};
use crate::support::{proxy_config, temp_dir, Admin, RunningProxy, SampleApp};

/// The `Accept` of a Prometheus with `scrape_protocols: [PrometheusText0.0.4]`: its
/// `acceptHeader` weighs the listed protocols from `q=0.6` down (five protocols known) and ends
/// with `*/*` one step lower.
const TEXT_ONLY_ACCEPT: &str = "text/plain;version=0.0.4;q=0.6,*/*;q=0.5";

/// The 0.0.4 format's content type, which the proxy must answer with.
const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Requests sent through the proxy before the counters are read.
const REQUESTS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_asking_for_the_text_format_only_reads_the_counters_right() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let config = proxy_config(&[blue.addr], &[]);
    let proxy = RunningProxy::start(dir.path(), "proxy.json", &config).await;
    let relay = Relay::start(proxy.admin.addr).await;
    let Some(prom) = Prometheus::start(dir.path(), relay.addr).await else {
        return;
    };
    let traffic = Admin::new(proxy.listen);
    for _ in 0..REQUESTS {
        let (status, body) = traffic
            .get_text("/")
            .await
            .expect("GET / through the proxy");
        assert_eq!(status, 200, "{body}");
    }
    let within = Duration::from_secs(15);
    let requests =
        format!(r#"sum(crossfade_requests_total{{route="web",backend="blue"}}) == {REQUESTS}"#);
    prom.wait_for(&requests, within).await;
    let latency = format!(
        r#"crossfade_request_duration_seconds_count{{route="web",backend="blue"}} == {REQUESTS}"#
    );
    prom.wait_for(&latency, within).await;
    let buckets =
        r#"crossfade_request_duration_seconds_bucket{route="web",backend="blue",le="+Inf"}"#;
    prom.wait_for(buckets, within).await;
    prom.wait_for("crossfade_build_info == 1", within).await;
    // The family's type as Prometheus recorded it from the `# TYPE` line: a counter, under the
    // name its samples have (in OpenMetrics it would be under `crossfade_requests`).
    let metadata = prom
        .api("metadata", &[("metric", "crossfade_requests_total")])
        .await;
    assert_eq!(
        metadata["data"]["crossfade_requests_total"][0]["type"], "counter",
        "{metadata}"
    );
    let up = prom.query(r#"up{job="crossfade"} == 1"#).await;
    assert_eq!(series(&up), 1, "{up}\n{}", prom.log());
    let seen = relay.content_types();
    assert!(!seen.is_empty(), "no scrape went through the relay");
    assert!(
        seen.iter().all(|kind| kind == TEXT),
        "the proxy answered {seen:?} to {TEXT_ONLY_ACCEPT:?}"
    );
}

/// A one-scrape-per-connection relay in front of an admin API: it sets [`TEXT_ONLY_ACCEPT`] on
/// each request (and `Connection: close`), returns the answer as it came and records its
/// `Content-Type`.
struct Relay {
    addr: SocketAddr,
    content_types: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let content_types = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&content_types);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    if let Err(error) = relay_one(client, target, &seen).await {
                        eprintln!("relay: {error}");
                    }
                });
            }
        });
        Relay {
            addr,
            content_types,
            task,
        }
    }

    /// The `Content-Type` of every answer relayed so far.
    fn content_types(&self) -> Vec<String> {
        let seen = self.content_types.lock();
        seen.unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Relays one request (a bodiless GET) and its answer.
async fn relay_one(
    mut client: TcpStream,
    target: SocketAddr,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let head = read_head(&mut client).await?;
    let mut lines: Vec<&str> = head
        .split("\r\n")
        .filter(|line| !line.is_empty())
        .filter(|line| {
            let name = line.split_once(':').map_or("", |(name, _)| name.trim());
            !["accept", "accept-encoding", "connection"]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n))
        })
        .collect();
    let accept = format!("Accept: {TEXT_ONLY_ACCEPT}");
    lines.extend([accept.as_str(), "Connection: close"]);
    let request = lines.join("\r\n") + "\r\n\r\n";
    let mut server = TcpStream::connect(target).await?;
    server.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    server.read_to_end(&mut answer).await?;
    let text = String::from_utf8_lossy(&answer);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let content_type = head.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-type")
            .then(|| value.trim().to_owned())
    });
    seen.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(content_type.unwrap_or_default());
    client.write_all(&answer).await?;
    client.shutdown().await
}

/// The request head, up to its blank line (at most 64 KiB).
async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut buf = [0_u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > 64 * 1024 {
            return Err(std::io::Error::other("no complete request head"));
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}
