//! Bodies stream both ways through `crossfade proxy`: a 1 GiB download and a 1 GiB upload pass while
//! the proxy's peak resident memory stays far below the body size.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};

use crate::support::{proxy_config, temp_dir, RunningProxy, SampleApp};

/// One GiB: the size the issue names for "constant memory".
const BODY: u64 = 1 << 30;

/// The ceiling on the proxy's peak RSS while it moves 1 GiB each way. A proxy that buffered either
/// body would pass 1 GiB; a streaming one stays near its idle size (measured: 17 MiB peak in a debug build),
/// plus its per-connection buffers.
const MAX_PEAK_RSS_KIB: u64 = 64 * 1024;

/// Peak resident set size (`VmHWM`) of `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

async fn connect(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<
    http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>,
> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}

#[tokio::test]
async fn a_gibibyte_each_way_streams_through_in_constant_memory() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let proxy =
        RunningProxy::start(dir.path(), "proxy.json", &proxy_config(&[blue.addr], &[])).await;
    let host = proxy.listen.to_string();

    // Download: the sample app streams byte i = i % 251; check the length and each frame's offset.
    let mut sender = connect(proxy.listen).await;
    let request = http::Request::get(format!("/download?bytes={BODY}"))
        .header(http::header::HOST, &host)
        .body(Empty::new().boxed())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .expect("download response");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut seen = 0u64;
    while let Some(frame) = body.frame().await {
        let data = frame
            .expect("download body")
            .into_data()
            .unwrap_or_default();
        if let Some(&first) = data.first() {
            assert_eq!(u64::from(first), seen % 251, "byte at offset {seen}");
        }
        seen += data.len() as u64;
    }
    assert_eq!(seen, BODY, "download length");

    // Upload: a generated 1 GiB body, hashed as it is produced; the backend answers its sha256.
    let chunk = Bytes::from((0..64 * 1024).map(|i| (i % 253) as u8).collect::<Vec<u8>>());
    let chunks = BODY / chunk.len() as u64;
    let mut hasher = Sha256::new();
    for _ in 0..chunks {
        hasher.update(&chunk);
    }
    let expected = format!("{:x}", hasher.finalize());
    let stream = futures_util::stream::iter(0..chunks)
        .map(move |_| Ok::<_, std::convert::Infallible>(Frame::data(chunk.clone())));
    let mut sender = connect(proxy.listen).await;
    let request = http::Request::put("/upload")
        .header(http::header::HOST, &host)
        .header(http::header::CONTENT_LENGTH, BODY)
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(120), sender.send_request(request))
        .await
        .expect("upload within 120 s")
        .expect("upload response");
    assert_eq!(response.status(), 201);
    let answer = response.into_body().collect().await.unwrap().to_bytes();
    let answer: serde_json::Value = serde_json::from_slice(&answer).expect("JSON answer");
    assert_eq!(answer["bytes"], BODY, "{answer}");
    assert_eq!(answer["sha256"], expected.as_str(), "{answer}");

    let peak = peak_rss_kib(proxy.child.pid());
    assert!(
        peak < MAX_PEAK_RSS_KIB,
        "the proxy's peak RSS was {peak} KiB after moving 1 GiB each way (limit {MAX_PEAK_RSS_KIB} KiB)"
    );
}

/// A client that goes away mid-upload is the client's failure, not the backend's: nothing is counted
/// against the backend (else any client could push a preview over its error limit and force a
/// rollback), and the proxy keeps serving.
#[tokio::test]
async fn a_client_aborting_its_upload_counts_no_error_against_the_backend() {
    use tokio::io::AsyncWriteExt;

    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let proxy =
        RunningProxy::start(dir.path(), "proxy.json", &proxy_config(&[blue.addr], &[])).await;
    for _ in 0..20 {
        let mut stream = tokio::net::TcpStream::connect(proxy.listen).await.unwrap();
        let head = "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n";
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&[b'x'; 1000]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(stream);
    }
    // Let the proxy notice every abort before reading its counters.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = proxy.admin.metrics().await;
    let labels = [("route", "web"), ("backend", "blue")];
    assert_eq!(metrics.sum("crossfade_upstream_errors_total", &labels), 0.0);
    let server_errors = [("route", "web"), ("backend", "blue"), ("class", "5xx")];
    assert_eq!(metrics.sum("crossfade_requests_total", &server_errors), 0.0);
    let status = proxy.admin.status().await;
    assert_eq!(status["routes"][0]["blue"]["errors"], 0, "{status:#}");
    let (code, _) = proxy.admin.get_text("/healthz").await.unwrap();
    assert_eq!(code, 200);
}
