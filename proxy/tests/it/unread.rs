//! The proxy's own answers to HTTP/1.1 requests whose body it had not read (trial 8, H1): a small
//! announced body refused before any attempt is drained and the keep-alive connection serves the
//! next request; any other answer that leaves the connection to close says `Connection: close`
//! (RFC 9112 §9.6), so a keep-alive client never sends its next request into an end of stream.

use std::net::SocketAddr;
use std::time::Duration;

use crossfade_proxy::{LimitsConfig, Percent, ProxyConfig, RouteConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// One response read off a raw connection: its status and its head, lower-cased.
struct Answer {
    status: u16,
    head: String,
}

impl Answer {
    fn closes(&self) -> bool {
        self.head.contains("\r\nconnection: close\r\n")
    }
}

/// Reads one response (head, then a `Content-Length` body) from `stream`, or says why not.
async fn read_answer(stream: &mut TcpStream) -> Result<Answer, String> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await {
            Ok(Ok(0)) => return Err("end of stream (connection closed)".into()),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("no answer in 10 s".into()),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not a response: {head}"))?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buf.len() - head_end;
    while body < len {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err("body cut short".into()),
            Ok(n) => body += n,
        }
    }
    Ok(Answer { status, head })
}

/// Sends a POST to `path` with `body` announced by `Content-Length`, the head first and the body
/// 50 ms later (so that the proxy answers before the body arrived), then a GET on the same
/// connection; returns both answers (the second as an error when the connection was gone).
async fn post_then_get(
    proxy: SocketAddr,
    path: &str,
    host: &str,
    body: &[u8],
) -> (Answer, Result<Answer, String>) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The proxy may have closed already (the failure this file is about): the answers tell.
    let _ = stream.write_all(body).await;
    let first = read_answer(&mut stream).await.unwrap();
    let get = format!("GET /next HTTP/1.1\r\nhost: {host}\r\n\r\n");
    let second = match stream.write_all(get.as_bytes()).await {
        Ok(()) => read_answer(&mut stream).await,
        Err(e) => Err(e.to_string()),
    };
    (first, second)
}

/// A route `web` with both weights 0: every request gets 503 "route disabled".
fn disabled(blue: SocketAddr) -> RouteConfig {
    let mut web = route(&[blue], &[], 10_000);
    web.blue.weight = Some(Percent(0));
    web.green.weight = Some(Percent(0));
    web
}

/// Every answer the proxy makes before reading a small body keeps the connection: route
/// disabled (503), no route for the host (404), a bad path (400), no endpoint up (503).
#[tokio::test]
async fn a_small_body_refused_before_any_attempt_is_drained_and_the_connection_serves_on() {
    let blue = backend("blue").await;
    let mut shop = disabled(blue.addr);
    shop.hosts = vec!["shop.test".to_owned()];
    let dead = refused_addr().await;
    let mut api = route(&[dead], &[], 10_000);
    api.name = "api".into();
    api.hosts = vec!["api.test".to_owned()];
    // The "no endpoint" answer: failing open, the dead endpoint would be tried (502).
    api.fail_open = false;
    // Ejected at its first failure, for the whole test.
    api.outlier = crossfade_proxy::config::OutlierConfig {
        consecutive_failures: 1,
        base_ejection: Duration::from_secs(600),
        max_ejection: Duration::from_secs(600),
        ..Default::default()
    };
    let running = start(config(vec![shop, api])).await;
    // The dead endpoint's connect failure ejects it: later requests get "no endpoint".
    let request = http::Request::get(running.url("/"))
        .header("host", "api.test")
        .body(http_body_util::Full::default())
        .unwrap();
    assert_eq!(
        send(&client(), request).await.0,
        http::StatusCode::BAD_GATEWAY
    );
    let cases = [
        ("/upload", "api.test", 503, "no endpoint"),
        ("/upload", "shop.test", 503, "route disabled"),
        ("/upload", "other.test", 404, "no route"),
        ("/../x", "shop.test", 400, "bad path"),
    ];
    for (path, host, status, what) in cases {
        let (first, second) = post_then_get(running.addr, path, host, b"abc").await;
        assert_eq!(first.status, status, "{what}: {}", first.head);
        assert!(
            !first.closes(),
            "{what}: drained, yet closed: {}",
            first.head
        );
        let second = second.unwrap_or_else(|e| panic!("{what}: the next request got {e}"));
        assert!(second.status >= 200, "{what}: {}", second.head);
    }
    assert_eq!(blue.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// A body too large to drain, or chunked (no announced length): the refusal says
/// `Connection: close` and the connection then closes.
#[tokio::test]
async fn a_large_or_chunked_body_refused_unread_gets_connection_close() {
    let blue = backend("blue").await;
    let running = start(config(vec![disabled(blue.addr)])).await;
    let large = format!(
        "POST /upload HTTP/1.1\r\nhost: shop.test\r\ncontent-length: {}\r\n\r\nabc",
        10 * 1024 * 1024
    );
    let chunked = "POST /upload HTTP/1.1\r\nhost: shop.test\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n";
    let expect =
        "POST /upload HTTP/1.1\r\nhost: shop.test\r\nexpect: 100-continue\r\ncontent-length: 3\r\n\r\n";
    for (what, head) in [
        ("large", large.as_str()),
        ("chunked", chunked),
        ("expect", expect),
    ] {
        let mut stream = TcpStream::connect(running.addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let answer = read_answer(&mut stream).await.unwrap();
        assert_eq!(answer.status, 503, "{what}: {}", answer.head);
        assert!(
            answer.closes(),
            "{what}: closes unannounced: {}",
            answer.head
        );
    }
}

/// A body that stalls gets 408 with `Connection: close` (RFC 9110 §15.5.9); a body cut short by
/// a failed attempt (502) too: the connection cannot carry another request.
#[tokio::test]
async fn a_408_or_502_with_the_body_unread_gets_connection_close() {
    let blue = backend("blue").await;
    let limits = LimitsConfig {
        body_read_timeout: Duration::from_millis(300),
        ..LimitsConfig::default()
    };
    let running = start(ProxyConfig {
        limits,
        ..config(vec![route(&[blue.addr], &[], 10_000)])
    })
    .await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    let stalled = "POST /upload HTTP/1.1\r\nhost: shop.test\r\ncontent-length: 100\r\n\r\nabc";
    stream.write_all(stalled.as_bytes()).await.unwrap();
    let answer = read_answer(&mut stream).await.unwrap();
    assert_eq!(answer.status, 408, "{}", answer.head);
    assert!(answer.closes(), "408 closes unannounced: {}", answer.head);

    let dead = refused_addr().await;
    let running = start(config(vec![route(&[dead], &[], 10_000)])).await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    let head = "POST /upload HTTP/1.1\r\nhost: shop.test\r\ncontent-length: 3\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_answer(&mut stream).await.unwrap();
    assert_eq!(answer.status, 502, "{}", answer.head);
    assert!(answer.closes(), "502 closes unannounced: {}", answer.head);
}
