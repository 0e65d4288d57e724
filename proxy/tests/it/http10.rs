//! Case C18: an HTTP/1.0 client never gets `Transfer-Encoding: chunked`, whatever the backend sends.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// Reads one response head: the status line and headers (lowercased names).
async fn read_head(reader: &mut BufReader<TcpStream>) -> (String, Vec<(String, String)>) {
    let mut status = String::new();
    reader.read_line(&mut status).await.unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            return (status.trim_end().to_owned(), headers);
        }
        let (name, value) = line.split_once(':').unwrap();
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn expected_body() -> Vec<u8> {
    chunked_body().concat()
}

#[tokio::test]
async fn c18_http10_client_gets_a_close_delimited_or_sized_body() {
    let blue = backend("blue").await;
    let green = backend("green").await;
    let running = start(config(vec![route(&[blue.addr], &[green.addr], 5_000)])).await;
    for _ in 0..6 {
        let mut stream = TcpStream::connect(running.addr).await.unwrap();
        stream
            .write_all(b"GET /chunked HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut reader = BufReader::new(stream);
        let (status, headers) = read_head(&mut reader).await;
        assert!(status.ends_with("200 OK"), "{status}");
        assert_eq!(header(&headers, "transfer-encoding"), None, "{headers:?}");
        let mut body = Vec::new();
        reader.read_to_end(&mut body).await.unwrap();
        assert_eq!(body, expected_body());
        if let Some(len) = header(&headers, "content-length") {
            assert_eq!(len, CHUNKED_LEN.to_string());
        }
    }
}

#[tokio::test]
async fn c18_http10_keep_alive_client_is_not_corrupted_on_its_next_request() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let stream = TcpStream::connect(running.addr).await.unwrap();
    let mut reader = BufReader::new(stream);
    let request = b"GET /chunked HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n";
    reader.get_mut().write_all(request).await.unwrap();
    let (status, headers) = read_head(&mut reader).await;
    assert!(status.ends_with("200 OK"), "{status}");
    assert_eq!(header(&headers, "transfer-encoding"), None, "{headers:?}");
    match header(&headers, "content-length") {
        // Sized: the connection may stay open and the next request must work.
        Some(len) => {
            let mut body = vec![0; len.parse().unwrap()];
            reader.read_exact(&mut body).await.unwrap();
            assert_eq!(body, expected_body());
            reader.get_mut().write_all(request).await.unwrap();
            let (status, _) = read_head(&mut reader).await;
            assert!(status.ends_with("200 OK"), "{status}");
        }
        // Close-delimited: the body runs to EOF and the connection closes.
        None => {
            assert_ne!(header(&headers, "connection"), Some("keep-alive"));
            let mut body = Vec::new();
            reader.read_to_end(&mut body).await.unwrap();
            assert_eq!(body, expected_body());
        }
    }
}

#[tokio::test]
async fn http10_keep_alive_client_keeps_its_connection_for_sized_bodies() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let stream = TcpStream::connect(running.addr).await.unwrap();
    let mut reader = BufReader::new(stream);
    let request = b"GET / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n";
    for _ in 0..3 {
        reader.get_mut().write_all(request).await.unwrap();
        let (status, headers) = read_head(&mut reader).await;
        assert_eq!(status, "HTTP/1.0 200 OK");
        assert_eq!(header(&headers, "content-length"), Some("4"));
        assert_eq!(header(&headers, "connection"), Some("keep-alive"));
        let mut body = [0; 4];
        reader.read_exact(&mut body).await.unwrap();
        assert_eq!(&body, b"blue");
    }
}

/// A response body that never ends and never sends a byte: its stream stays open after the head.
struct Unending;

impl Body for Unending {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Pending
    }
}

/// An h2c backend (hyper's HTTP/2 server) whose answers have no content and whose streams stay
/// open after the head ([`Unending`]): `/no-content` is 204, `/not-modified` 304, anything else
/// 200 without `content-length` (for `HEAD`s), but `/sized`: `sized`, its length known. Only the
/// method and the status tell the proxy that there is no body; the stream never does.
async fn h2c_open_stream_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service_fn(|request: Request<Incoming>| async move {
                let sized = Either::Right(Full::new(Bytes::from_static(b"sized")));
                let (status, body) = match request.uri().path() {
                    "/sized" => (StatusCode::OK, sized),
                    "/no-content" => (StatusCode::NO_CONTENT, Either::Left(Unending)),
                    "/not-modified" => (StatusCode::NOT_MODIFIED, Either::Left(Unending)),
                    _ => (StatusCode::OK, Either::Left(Unending)),
                };
                let mut response = Response::new(body);
                *response.status_mut() = status;
                Ok::<_, Infallible>(response)
            });
            let http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            tokio::spawn(http2.serve_connection(TokioIo::new(stream), service));
        }
    });
    addr
}

/// Case C18: an HTTP/1.0 keep-alive client keeps its connection for answers without content (to
/// `HEAD`, 204, 304; RFC 9110 §9.3.2, §15.3.5, §15.4.5) from an h2c backend whose stream has not
/// ended at the head. Until session 40 they were taken for bodies of unknown length: answered
/// HTTP/1.0 without keep-alive, and the connection closed.
#[tokio::test]
async fn c18_http10_keep_alive_client_keeps_its_connection_for_answers_without_content_over_h2c() {
    let mut route = route(&[h2c_open_stream_backend().await], &[], 10_000);
    route.blue.protocol = crossfade_proxy::UpstreamProtocol::H2c;
    let running = start(config(vec![route])).await;
    let mut reader = BufReader::new(TcpStream::connect(running.addr).await.unwrap());
    let requests = [
        ("HEAD /chunked", "200 OK"),
        ("GET /no-content", "204 No Content"),
        ("GET /not-modified", "304 Not Modified"),
        ("GET /sized", "200 OK"),
        ("HEAD /chunked", "200 OK"),
    ];
    for (line, status) in requests {
        let request = format!("{line} HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n");
        reader
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .unwrap();
        let (got, headers) = read_head(&mut reader).await;
        assert_eq!(got, format!("HTTP/1.0 {status}"), "{line}");
        assert_eq!(
            header(&headers, "connection"),
            Some("keep-alive"),
            "{line}: {headers:?}"
        );
        assert_eq!(
            header(&headers, "transfer-encoding"),
            None,
            "{line}: {headers:?}"
        );
        if line == "GET /sized" {
            let mut body = [0; 5];
            reader.read_exact(&mut body).await.unwrap();
            assert_eq!(&body, b"sized");
        }
    }
}

/// A keep-alive HTTP/1.1 backend that answers each request `401 no` as soon as its head is read,
/// without reading its body, then lets the connection go.
async fn early_401_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                while reader.read_line(&mut line).await.is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                let answer = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\nno";
                let _ = reader.get_mut().write_all(answer).await;
            });
        }
    });
    addr
}

/// Case C18 with C20's early answer (variant B): an HTTP/1.0 keep-alive client whose upload the
/// proxy answers without having read it all, from the backend (an early 401) or its own (a 502
/// after the only endpoint refused), is told `Connection: close` and nothing of keep-alive, and
/// the connection then ends cleanly. Until session 41 hyper added `keep-alive` to the proxy's
/// `close` for a 1.0 client (`connection: close, keep-alive`), and a client that takes the
/// keep-alive token (curl does for HTTP/1.0) sent its next request into the closing connection
/// (vendor/hyper patch 27).
#[tokio::test]
async fn c18_http10_keep_alive_client_answered_before_its_upload_is_told_close_and_no_keep_alive() {
    for (name, endpoint) in [
        ("early 401", early_401_backend().await),
        ("refused", refused_addr().await),
    ] {
        let running = start(config(vec![route(&[endpoint], &[], 10_000)])).await;
        let mut reader = BufReader::new(TcpStream::connect(running.addr).await.unwrap());
        let upload = "POST /upload HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\
                      Content-Length: 100000\r\n\r\n";
        reader.get_mut().write_all(upload.as_bytes()).await.unwrap();
        let (status, headers) = read_head(&mut reader).await;
        let connection: Vec<&str> = headers
            .iter()
            .filter(|(n, _)| n == "connection")
            .map(|(_, v)| v.as_str())
            .collect();
        assert!(status.starts_with("HTTP/1.0 "), "{name}: {status}");
        assert_eq!(connection, ["close"], "{name}: {status} {headers:?}");
        let length: usize = header(&headers, "content-length").unwrap().parse().unwrap();
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await.unwrap();
        // The client sends its body, then finds the connection ended, not waiting for more.
        let _ = reader.get_mut().write_all(&[b'x'; 100_000]).await;
        let mut rest = Vec::new();
        let end = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            reader.read_to_end(&mut rest),
        )
        .await;
        assert!(
            matches!(end, Ok(Ok(0)) | Ok(Err(_))),
            "{name}: the connection stayed open: {end:?}"
        );
    }
}

/// Case C18 at a binary upgrade (the moment a proxy restarts): an HTTP/1.0 keep-alive client's
/// request on its idle connection once the handover's drain began gets its answer with
/// `Connection: close` alone, and the connection then ends. Until session 41 the answer said
/// `close, keep-alive` (see vendor/hyper patch 27); a shutdown's drain was right already, since
/// hyper's graceful shutdown turns keep-alive off by itself.
#[tokio::test]
async fn c18_http10_keep_alive_client_at_a_handover_drain_is_told_close_alone() {
    let blue = backend("blue").await;
    let mut config = config(vec![route(&[blue.addr], &[], 10_000)]);
    config.drain_grace = std::time::Duration::from_secs(2);
    let mut running = start(config).await;
    let mut reader = BufReader::new(TcpStream::connect(running.addr).await.unwrap());
    let request = b"GET / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n";
    let mut connection = Vec::new();
    for handover in [false, true] {
        if handover {
            running.proxy.hand_over();
            running.stop();
            let addr = running.addr;
            crate::limits::wait_for(|| async move { TcpStream::connect(addr).await.is_err() })
                .await;
        }
        reader.get_mut().write_all(request).await.unwrap();
        let (status, headers) = read_head(&mut reader).await;
        assert_eq!(status, "HTTP/1.0 200 OK", "handover: {handover}");
        let mut body = [0; 4];
        reader.read_exact(&mut body).await.unwrap();
        connection.push(header(&headers, "connection").map(str::to_owned));
    }
    let expected = [Some("keep-alive".to_owned()), Some("close".to_owned())];
    assert_eq!(connection, expected, "before and after the handover began");
    let mut rest = Vec::new();
    let end = reader.read_to_end(&mut rest).await;
    assert!(matches!(end, Ok(0)), "a clean close: {end:?} {rest:?}");
}
