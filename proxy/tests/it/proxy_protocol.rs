//! `proxy_protocol: true`: each connection begins with a PROXY protocol header (HAProxy's
//! specification, v1 text or v2 binary) from an L4 load balancer, and its source address is the
//! client's; a connection without a well-formed one is closed unanswered and reaches no backend.
//! The headers here are written by ppp (the library the proxy parses them with) or by hand, as the
//! specification's examples.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// A v2 `PROXY` header from `source` (IPv4 or IPv6) to the proxy's port.
fn v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    use ppp::v2::{Builder, Command, Protocol, Version};
    Builder::with_addresses(
        Version::Two | Command::Proxy,
        Protocol::Stream,
        (source, destination),
    )
    .build()
    .unwrap()
}

/// The v2 `LOCAL` header a balancer's own health check sends: no addresses.
fn v2_local() -> Vec<u8> {
    use ppp::v2::{Builder, Command, Protocol, Version};
    Builder::with_addresses(
        Version::Two | Command::Local,
        Protocol::Unspecified,
        ppp::v2::Addresses::Unspecified,
    )
    .build()
    .unwrap()
}

async fn proxy_protocol_proxy(backend: &Backend) -> Running {
    let mut config = config(vec![route(&[backend.addr], &[], 10_000)]);
    config.proxy_protocol = true;
    config.trust_forwarded_for = false;
    config.limits.header_read_timeout = Duration::from_secs(2);
    start(config).await
}

/// Writes `prefix` and then a `GET /` (in `pieces` writes, 20 ms apart) on a new connection to
/// `addr`, and reads the whole answer (the request says `close`).
async fn get_after(addr: SocketAddr, prefix: &[u8], pieces: usize) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut bytes = prefix.to_vec();
    bytes.extend_from_slice(b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
    let size = bytes.len().div_ceil(pieces);
    for piece in bytes.chunks(size) {
        stream.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn last_forwarded_for(backend: &Backend) -> String {
    let seen = backend.seen.lock().unwrap();
    let headers = seen.last().expect("the backend saw a request");
    headers["x-forwarded-for"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_headers_source_address_is_the_client_whole_or_in_pieces() {
    let blue = backend("blue").await;
    let running = proxy_protocol_proxy(&blue).await;
    let cases: [(Vec<u8>, &str); 4] = [
        (
            b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\n".to_vec(),
            "203.0.113.7",
        ),
        (
            b"PROXY TCP6 2001:db8::7 2001:db8::1 56324 443\r\n".to_vec(),
            "2001:db8::7",
        ),
        (
            v2("198.51.100.9:40000".parse().unwrap(), running.addr),
            "198.51.100.9",
        ),
        (
            v2(
                "[2001:db8::9]:40000".parse().unwrap(),
                "[2001:db8::1]:443".parse().unwrap(),
            ),
            "2001:db8::9",
        ),
    ];
    for (header, client) in cases {
        // Whole, then split in five writes (the header arrives in pieces, and its end with the
        // request's beginning): the proxy reads exactly the header and leaves the request.
        for pieces in [1, 5] {
            let answer = get_after(running.addr, &header, pieces).await;
            assert!(answer.starts_with("HTTP/1.1 200 "), "{client}: {answer}");
            assert_eq!(last_forwarded_for(&blue), client, "{pieces} pieces");
        }
    }
    // A balancer's health check (v2 LOCAL) and a v1 UNKNOWN: the TCP peer's address stands.
    for header in [v2_local(), b"PROXY UNKNOWN\r\n".to_vec()] {
        let answer = get_after(running.addr, &header, 1).await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        assert_eq!(last_forwarded_for(&blue), "127.0.0.1");
    }
    assert_eq!(blue.hits.load(std::sync::atomic::Ordering::Relaxed), 10);
}

#[tokio::test]
async fn a_connection_without_a_well_formed_header_is_closed_unanswered_and_counted() {
    let blue = backend("blue").await;
    let running = proxy_protocol_proxy(&blue).await;
    let bad: [&[u8]; 4] = [
        b"",
        b"PROXY TCP4 not-an-address 10.0.0.1 1 2\r\n",
        b"PROXY TCP9 1.2.3.4 5.6.7.8 1 2\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff",
    ];
    for header in bad {
        let answer = get_after(running.addr, header, 1).await;
        assert_eq!(answer, "", "{:?}", String::from_utf8_lossy(header));
    }
    // One that sends nothing by the header read timeout.
    let mut silent = TcpStream::connect(running.addr).await.unwrap();
    let mut end = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut end)).await;
    assert!(matches!(read, Ok(Ok(0))), "{read:?}");
    assert_eq!(blue.hits.load(std::sync::atomic::Ordering::Relaxed), 0);
    let (_, _, metrics) = get(&client(), &running.admin_url("/metrics")).await;
    assert!(
        metrics.contains("crossfade_proxy_protocol_refused_total 5\n"),
        "{metrics}"
    );
}

/// HTTP/2 with prior knowledge after the header: the preface detection reads on from where the
/// header ended.
#[tokio::test]
async fn h2c_after_the_header_is_served_with_the_headers_client() {
    let blue = backend("blue").await;
    let running = proxy_protocol_proxy(&blue).await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    let header = v2("192.0.2.44:5000".parse().unwrap(), running.addr);
    stream.write_all(&header).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    for _ in 0..3 {
        let request = Request::get("http://app.test/")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let _ = response.into_body().collect().await;
        assert_eq!(last_forwarded_for(&blue), "192.0.2.44");
    }
}

/// Off (the default), a PROXY header is just bytes before the request line: 400.
#[tokio::test]
async fn without_the_setting_a_proxy_header_is_a_bad_request() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let answer = get_after(running.addr, b"PROXY TCP4 203.0.113.7 10.0.0.1 1 2\r\n", 1).await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert_eq!(blue.hits.load(std::sync::atomic::Ordering::Relaxed), 0);
}
