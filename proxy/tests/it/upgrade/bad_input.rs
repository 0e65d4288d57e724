//! Upgrades on bad input, either side: an upgrade request with content is served as an ordinary
//! request, and a backend's 101 to a request that asked for no upgrade is a protocol error.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http::header::UPGRADE;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// A raw backend: reads one request head, answers `answer` at once, then echoes whatever comes
/// after the head.
async fn raw_backend(answer: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let _ = stream.write_all(answer.as_bytes()).await;
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = stream.read(&mut buf).await {
                    if stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Reads from `stream` until `len` bytes came, the stream ends or 3 s pass.
async fn read_some(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while got.len() < len {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n @ 1..)) => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    got
}

/// A backend that switches at once, without reading any content, when asked to upgrade (as a
/// WebSocket server does), then echoes raw bytes; any other request is answered `200` with what
/// it read of it: `ordinary: <content>`.
async fn switching_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service_fn(|mut request: http::Request<Incoming>| async move {
                if let Some(protocol) = request.headers().get(UPGRADE).cloned() {
                    let upgrade = hyper::upgrade::on(&mut request);
                    tokio::spawn(async move {
                        let Ok(upgraded) = upgrade.await else { return };
                        let mut io = TokioIo::new(upgraded);
                        let mut buf = [0u8; 1024];
                        while let Ok(n @ 1..) = io.read(&mut buf).await {
                            if io.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                    let response = http::Response::builder()
                        .status(101)
                        .header(UPGRADE, protocol)
                        .header("connection", "upgrade")
                        .body(Full::default())
                        .unwrap();
                    return Ok::<_, Infallible>(response);
                }
                let content = request.into_body().collect().await.unwrap().to_bytes();
                let text = format!("ordinary: {}", String::from_utf8_lossy(&content));
                Ok(http::Response::new(Full::new(Bytes::from(text))))
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::spawn(connection);
        }
    });
    addr
}

/// Reads one response with a `Content-Length` off `stream`: its head (lowercased) and content.
async fn response(stream: &mut TcpStream) -> (String, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |n| n.trim().parse().unwrap());
            if got.len() >= end + 4 + length {
                let content = String::from_utf8_lossy(&got[end + 4..end + 4 + length]);
                return (text[..end].to_owned(), content.into_owned());
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("a response within 10 s")
            .unwrap();
        assert!(
            n > 0,
            "the connection ended after {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn an_upgrade_request_with_content_is_served_as_an_ordinary_request() {
    let blue = switching_backend().await;
    let running = start(config(vec![route(&[blue], &[], 10_000)])).await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    for framing in [
        "Content-Length: 10\r\n\r\n0123456789",
        "Transfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n5\r\n56789\r\n0\r\n\r\n",
    ] {
        let request = format!(
            "POST /raw HTTP/1.1\r\nHost: app.test\r\nConnection: upgrade\r\n\
             Upgrade: echo\r\n{framing}"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let (head, content) = response(&mut stream).await;
        assert!(head.starts_with("http/1.1 200 "), "{framing}: {head}");
        assert_eq!(content, "ordinary: 0123456789", "{framing}");
        assert!(!head.contains("upgrade"), "{head}");
    }
    // The connection stays an HTTP/1.1 one, and an upgrade without content still switches.
    let request = "GET /raw HTTP/1.1\r\nHost: app.test\r\nConnection: upgrade\r\n\
                   Upgrade: echo\r\nContent-Length: 0\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let (head, _) = response(&mut stream).await;
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    stream.write_all(b"tunnel").await.unwrap();
    assert_eq!(read_some(&mut stream, 6).await, b"tunnel");
}

#[tokio::test]
async fn a_101_to_a_request_that_asked_for_no_upgrade_is_a_502() {
    let answer = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\nConnection: upgrade\r\n\r\n\
                  HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!";
    let blue = raw_backend(answer).await;
    let running = start(config(vec![route(&[blue], &[], 10_000)])).await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    for path in ["/first", "/second"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let (head, content) = response(&mut stream).await;
        assert!(head.starts_with("http/1.1 502 "), "{head}");
        assert_eq!(
            content,
            "crossfade: upstream protocol error (route web, backend blue)\n"
        );
    }
    let (code, _, _) = get(&h2c_client(), &running.url("/h2")).await;
    assert_eq!(code, 502);
}

#[tokio::test]
async fn bytes_sent_right_behind_the_upgrade_request_or_the_101_reach_the_other_side() {
    // The backend switches and writes its greeting in the same packet as its 101.
    let answer =
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: upgrade\r\n\r\nhello;";
    let blue = raw_backend(answer).await;
    let running = start(config(vec![route(&[blue], &[], 10_000)])).await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    // The client sends its first bytes of the new protocol with the request, before the 101.
    let request =
        "GET /raw HTTP/1.1\r\nHost: app.test\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\nearly;";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut got = String::new();
    while !got.ends_with("early;") {
        let more = read_some(&mut stream, 1).await;
        assert!(!more.is_empty(), "the tunnel ended after {got:?}");
        got.push_str(&String::from_utf8_lossy(&more));
    }
    let (head, after) = got.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(after, "hello;early;");
}

#[tokio::test]
async fn an_upgrade_waits_for_its_101_at_most_the_routes_response_timeout() {
    // A backend that reads the request and never answers it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let mut web = route(&[silent], &[], 10_000);
    web.response_timeout = Some(Duration::from_millis(300));
    let running = start(config(vec![web])).await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    let request =
        "GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    // Far below the proxy-wide upstream.response_timeout (30 s).
    let answer = tokio::time::timeout(Duration::from_secs(10), response(&mut stream)).await;
    let (head, content) = answer.expect("answered within the route's response timeout");
    assert!(head.starts_with("http/1.1 504 "), "{head}");
    assert_eq!(
        content,
        "crossfade: upstream response timeout (route web, backend blue)\n"
    );
}
