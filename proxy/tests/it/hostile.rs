//! Hostile request heads over raw HTTP/1.1 bytes (issue 7): each malformed or ambiguous message gets
//! a 400 (another major HTTP version 505) and reaches no backend; a request framed both by `Content-Length` and `Transfer-Encoding`
//! gets 400, the connection is closed, and no byte of it is forwarded (RFC 9112 §6.3; request
//! smuggling; the patched hyper in vendor/hyper); absolute-form is routed by its authority
//! (RFC 9112 §3.2.2). A higher HTTP/1.x minor version (`HTTP/1.2`) is not hostile: requests and
//! backend responses that carry one are processed as HTTP/1.1 (RFC 9112 §2.3).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use http::StatusCode;

use crate::support::{backend, client, config, get, route, start};

/// Sends `raw` on a new connection and reads until the proxy closes it: the answer, and whether it
/// closed within 5 s.
async fn exchange_closing(proxy: SocketAddr, raw: &[u8]) -> (String, bool) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer));
    let closed = read.await.is_ok();
    (String::from_utf8_lossy(&answer).into_owned(), closed)
}

/// [`exchange_closing`]'s answer alone.
async fn exchange(proxy: SocketAddr, raw: &[u8]) -> String {
    exchange_closing(proxy, raw).await.0
}

/// Messages that must be refused before any byte goes upstream, each with why (RFC 9112 section).
const MALFORMED: [(&str, &[u8]); 19] = [
    ("request line without a target (§3)", b"GET\r\n\r\n"),
    (
        "malformed HTTP version (§2.3; a well-formed other major version gets 505)",
        b"GET / HTTP/1.x\r\nHost: a\r\n\r\n",
    ),
    (
        "control byte in a header value (RFC 9110 §5.5)",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x01c\r\n\r\n",
    ),
    (
        "space in a header name (§5.1)",
        b"GET / HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n",
    ),
    (
        "obsolete line folding (§5.2)",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
    ),
    (
        "two different Content-Length values (§6.3)",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    ),
    (
        "Transfer-Encoding without chunked last (§6.3)",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    ),
    (
        "Transfer-Encoding on HTTP/1.0 (§6.1)",
        b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "a Host with a space and a slash (§3.2; trial 11, L9)",
        b"GET /h HTTP/1.1\r\nHost: a b/c\r\n\r\n",
    ),
    (
        "a target in authority form on a GET (§3.2.3: CONNECT only; trial 23)",
        b"GET a:80 HTTP/1.1\r\nHost: a\r\n\r\n",
    ),
    (
        "an absolute-form target of another scheme than http(s) (§3.2.2; trial 23)",
        b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
    ),
    (
        "userinfo in an absolute-form target (RFC 9110 §4.2.4; trial 23)",
        b"GET http://user@a/ HTTP/1.1\r\nHost: a\r\n\r\n",
    ),
    (
        "a Host with userinfo (§3.2: uri-host [\":\" port])",
        b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n",
    ),
    (
        "a Host with a path (§3.2)",
        b"GET / HTTP/1.1\r\nHost: a/admin\r\n\r\n",
    ),
    (
        "a Host with a second colon, as an IPv6 address without brackets (§3.2; trial 23)",
        b"GET / HTTP/1.1\r\nHost: a:b:c\r\n\r\n",
    ),
    (
        "a Host whose port is not digits (§3.2: port = *DIGIT; trial 23)",
        b"GET / HTTP/1.1\r\nHost: a:80x\r\n\r\n",
    ),
    (
        "a Host with an unclosed IP literal (§3.2; trial 23)",
        b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
    ),
    (
        "a Host with bytes after its IP literal (§3.2; trial 23)",
        b"GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n",
    ),
    (
        "CONNECT (a tunnel to anywhere; the proxy is no forward proxy)",
        b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
    ),
];

#[tokio::test]
async fn malformed_or_ambiguous_heads_get_400_and_reach_no_backend() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    for (what, raw) in MALFORMED {
        let answer = exchange(running.addr, raw).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{what}: {answer:?}");
    }
    assert_eq!(blue.hits.load(Ordering::SeqCst), 0, "nothing reached blue");
    // The proxy still serves a well-formed request.
    let answer = exchange(
        running.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.await.starts_with("HTTP/1.1 200 "));
}

/// A transfer coding the proxy does not implement before `chunked` (`gzip, chunked`) gets 501
/// (RFC 9112 §6.1) and reaches no backend: the header is hop-by-hop, so the backend would get gzip
/// bytes it is not told about (trial 11, L9). Plain `chunked` (any case) is forwarded; valid
/// Host forms (a port, an empty port, an IPv6 literal, an IPvFuture literal, an empty Host on
/// HTTP/1.0) still are.
#[tokio::test]
async fn an_unknown_transfer_coding_gets_501_and_valid_hosts_pass() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    for te in [
        "gzip, chunked",
        "chunked\r\nTransfer-Encoding: x-custom, chunked",
    ] {
        let raw = format!(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        );
        let answer = exchange(running.addr, raw.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 501 "), "{te}: {answer:?}");
    }
    assert_eq!(blue.hits.load(Ordering::SeqCst), 0, "nothing reached blue");
    for raw in [
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a.example:8080\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.0\r\nHost:\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a.example:\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: [v1.fe80::a+en1]\r\nConnection: close\r\n\r\n",
    ] {
        let answer = exchange(running.addr, raw.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1."), "{raw:?}: {answer:?}");
        assert!(answer[9..].starts_with("200 "), "{raw:?}: {answer:?}");
    }
    assert_eq!(blue.hits.load(Ordering::SeqCst), 6);
}

/// A request line with a well-formed version of another major version than 1 gets `505 HTTP
/// Version Not Supported` (RFC 9110 §15.6.6; hyper patch 8 in vendor/hyper), also when the
/// version arrives in pieces; a version that is not of the `HTTP/x.y` form stays 400 (RFC 9112
/// §2.3), as does `PRI * HTTP/2.0` without the rest of the HTTP/2 preface. None reaches a backend.
#[tokio::test]
async fn another_major_http_version_gets_505_and_a_malformed_one_400() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    for version in ["HTTP/2.0", "HTTP/3.0", "HTTP/0.9", "HTTP/9.9"] {
        let raw = format!("GET / {version}\r\nHost: a\r\n\r\n");
        let (answer, closed) = exchange_closing(running.addr, raw.as_bytes()).await;
        assert!(
            answer.starts_with("HTTP/1.1 505 HTTP Version Not Supported\r\n") && closed,
            "{version}: {answer:?}"
        );
    }
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    for piece in [&b"GET /x HTTP/2"[..], b".", b"0", b"\r\nHost: a\r\n\r\n"] {
        stream.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer));
    assert!(read.await.is_ok(), "not closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 505 "), "in pieces: {answer:?}");
    let not_versions: [&[u8]; 4] = [
        b"GET / HTTP/2.0x\r\nHost: a\r\n\r\n",
        b"GET / HTTP/20.0\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.x\r\nHost: a\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
    ];
    for raw in not_versions {
        let answer = exchange(running.addr, raw).await;
        let what = String::from_utf8_lossy(raw);
        assert!(answer.starts_with("HTTP/1.1 400 "), "{what:?}: {answer:?}");
    }
    assert_eq!(blue.hits.load(Ordering::SeqCst), 0, "nothing reached blue");
}

/// RFC 9112 §2.3: a recipient of a higher minor version of a major version it implements SHOULD
/// process the message as the highest minor version it implements. httparse knows only 1.0 and
/// 1.1, so `GET / HTTP/1.2` got 400 (vendor/hyper/PATCHES.md, patch 20). Now it is served as
/// HTTP/1.1: answered `HTTP/1.1 200`, kept alive as HTTP/1.1 is by default (two pipelined
/// requests, two answers), and forwarded as HTTP/1.1 (a proxy sends its own version, RFC 9110
/// §6.2). Versions outside the grammar (`HTTP-version = HTTP-name "/" DIGIT "." DIGIT`) stay 400.
#[tokio::test]
async fn a_higher_http_1_minor_version_is_served_as_http_1_1() {
    let blue = raw_recorder().await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    for minor in ["2", "9"] {
        let raw = format!(
            "GET /first HTTP/1.{minor}\r\nHost: a\r\n\r\n\
             GET /second HTTP/1.{minor}\r\nHost: a\r\nConnection: close\r\n\r\n"
        );
        let (answer, closed) = exchange_closing(running.addr, raw.as_bytes()).await;
        assert!(
            closed,
            "1.{minor}: closed after the second answer: {answer:?}"
        );
        assert_eq!(
            answer.matches("HTTP/1.1 200 OK\r\n").count(),
            2,
            "1.{minor}: both requests answered as HTTP/1.1: {answer:?}"
        );
    }
    let forwarded = String::from_utf8_lossy(&blue.bytes.lock().unwrap()).into_owned();
    assert_eq!(
        forwarded.matches(" HTTP/1.1\r\n").count(),
        4,
        "forwarded as HTTP/1.1: {forwarded:?}"
    );
    assert!(!forwarded.contains("HTTP/1.2") && !forwarded.contains("HTTP/1.9"));
    let not_versions: [&[u8]; 3] = [
        b"GET / HTTP/1.10\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.2x\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.2 \r\nHost: a\r\n\r\n",
    ];
    for raw in not_versions {
        let answer = exchange(running.addr, raw).await;
        let what = String::from_utf8_lossy(raw);
        assert!(answer.starts_with("HTTP/1.1 400 "), "{what:?}: {answer:?}");
    }
}

/// The same for a backend's status line: `HTTP/1.2 200 OK` from a backend was a parse error, so
/// the client got 502; now it is read as HTTP/1.1 and the client gets the backend's answer.
#[tokio::test]
async fn a_backend_answering_a_higher_http_1_minor_version_is_read_as_http_1_1() {
    let answer = b"HTTP/1.2 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nraw";
    let blue = raw_recorder_answering(answer).await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let raw = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let answer = exchange(running.addr, raw).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:?}");
    assert!(answer.ends_with("\r\n\r\nraw"), "{answer:?}");
}

#[tokio::test]
async fn an_absurd_chunk_size_gets_400_and_closes_the_connection() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let raw = b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
                FFFFFFFFFFFFFFFFFFFF\r\nabc\r\n";
    let (answer, closed) = exchange_closing(running.addr, raw).await;
    // The head was valid, so it may have gone upstream; the body never completes there, and the
    // client gets one 400 and a closed connection.
    assert!(answer.starts_with("HTTP/1.1 400 ") && closed, "{answer:?}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer:?}");
    // Trial report §11: the message says the body was malformed, not that the client aborted.
    assert!(
        answer.contains("the request body is malformed"),
        "{answer:?}"
    );
}

/// A chunked body cut short (the client shuts down its sending side mid-chunk) is an abort, told
/// apart from a malformed body.
#[tokio::test]
async fn a_request_body_cut_short_is_reported_as_aborted_not_malformed() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer));
    assert!(read.await.is_ok(), "not closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer:?}");
    assert!(answer.contains("aborted the request body"), "{answer:?}");
}

/// A backend below HTTP: it records every byte it receives and the connections it accepts, and
/// answers each request head with a fixed `200 raw` and a close. A hyper backend cannot witness
/// smuggling, as it would refuse the same conflicting heads itself.
struct RawRecorder {
    addr: SocketAddr,
    bytes: Arc<Mutex<Vec<u8>>>,
    connections: Arc<AtomicUsize>,
}

async fn raw_recorder() -> RawRecorder {
    raw_recorder_answering(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nraw")
        .await
}

/// A [`RawRecorder`] that answers each request head with `answer` and a close.
async fn raw_recorder_answering(answer: &'static [u8]) -> RawRecorder {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let recorder = RawRecorder {
        addr: listener.local_addr().unwrap(),
        bytes: Arc::default(),
        connections: Arc::default(),
    };
    let (bytes, connections) = (recorder.bytes.clone(), recorder.connections.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            connections.fetch_add(1, Ordering::SeqCst);
            let bytes = bytes.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = stream.read(&mut buf).await {
                    bytes.lock().unwrap().extend_from_slice(&buf[..n]);
                    head.extend_from_slice(&buf[..n]);
                    if head.windows(4).any(|w| w == b"\r\n\r\n") {
                        let _ = stream.write_all(answer).await;
                        return;
                    }
                }
            });
        }
    });
    recorder
}

/// The classic request smuggling shapes (CL.TE and TE.CL), and `Transfer-Encoding: chunked` beside
/// several `Content-Length` lines, each with a second request hidden in the body: RFC 9112 §6.3 says
/// such a message ought to be handled as an error. The proxy's hyper is patched for it
/// (vendor/hyper/PATCHES.md): 400, the connection closed, the hidden request never parsed, and the
/// backend never receives a byte.
#[tokio::test]
async fn content_length_with_transfer_encoding_gets_400_closes_and_reaches_no_backend() {
    let blue = raw_recorder().await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let body = format!("0\r\n\r\n{smuggled}");
    let (cl, te) = (
        format!("Content-Length: {}\r\n", body.len()),
        "Transfer-Encoding: chunked\r\n",
    );
    let shapes = [
        ("CL.TE (Content-Length first)", format!("{cl}{te}")),
        ("TE.CL (Transfer-Encoding first)", format!("{te}{cl}")),
        (
            "TE with two equal Content-Length lines",
            format!("{te}{cl}{cl}"),
        ),
        ("two Content-Length lines, then TE", format!("{cl}{cl}{te}")),
        ("TE, CL, TE", format!("{te}{cl}{te}")),
    ];
    for (what, headers) in shapes {
        let raw = format!("POST /upload HTTP/1.1\r\nHost: a\r\n{headers}\r\n{body}");
        let (answer, closed) = exchange_closing(running.addr, raw.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{what}: {answer:?}");
        assert!(closed, "{what}: the connection is closed after the 400");
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "{what}: one response, the hidden request is never parsed: {answer:?}"
        );
    }
    assert_eq!(
        blue.connections.load(Ordering::SeqCst),
        0,
        "no connection to blue"
    );
    assert!(
        blue.bytes.lock().unwrap().is_empty(),
        "no byte reached blue"
    );
    // The recorder does see what is forwarded: a well-framed request reaches it.
    let answer = exchange(
        running.addr,
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
    let seen = String::from_utf8_lossy(&blue.bytes.lock().unwrap()).into_owned();
    assert!(
        seen.starts_with("POST ") && seen.contains("/upload HTTP/1.1\r\n"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn an_absolute_form_target_is_routed_by_its_authority_as_rfc_9112_says() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let raw = b"GET http://other.example/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let answer = exchange(running.addr, raw).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
    let seen = blue.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["host"], "other.example", "{:?}", seen[0]);
}

/// Trial report §5: a client naming `Host` (and the forwarding headers) in `Connection` over
/// HTTP/1.1 still reaches the backend with its `Host` (RFC 9112 §3.2) and the proxy's
/// `X-Forwarded-Host`/`-Proto`; another header it names is still stripped (RFC 9110 §7.6.1).
#[tokio::test]
async fn connection_naming_host_keeps_host_and_the_forwarding_headers_upstream() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let raw = b"GET /echo HTTP/1.1\r\nHost: shop.example\r\n\
                Connection: Host, X-Forwarded-Host, X-Forwarded-Proto, X-Hop, close\r\n\
                X-Hop: 1\r\nX-Forwarded-Proto: https\r\n\r\n";
    let answer = exchange(running.addr, raw).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
    let seen = blue.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let headers = &seen[0];
    assert_eq!(headers["host"], "shop.example", "{headers:?}");
    assert_eq!(headers["x-forwarded-host"], "shop.example", "{headers:?}");
    assert_eq!(headers["x-forwarded-proto"], "http", "{headers:?}");
    assert!(!headers.contains_key("x-hop"), "{headers:?}");
    assert!(!headers.contains_key("connection"), "{headers:?}");
}

/// A backend that answers every request head with `answer` and closes.
async fn answering(answer: &'static [u8]) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = stream.read(&mut buf).await {
                    head.extend_from_slice(&buf[..n]);
                    if head.windows(4).any(|w| w == b"\r\n\r\n") {
                        let _ = stream.write_all(answer).await;
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// How the proxy reads a backend's `Content-Length` (RFC 9110 §8.6, RFC 9112 §6.3): one value of
/// digits; a list of equal values (one length); two lines of equal values; and values that
/// differ or are not numbers, which make the response invalid (502, nothing of it forwarded).
/// (The plain value takes hyper's fast path, vendor/hyper patch 7; the others its general one.)
#[tokio::test]
async fn a_backends_content_length_is_read_as_rfc_9112_says() {
    let cases: [(&str, &'static [u8], Option<&str>); 6] = [
        (
            "one value",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
            Some("abc"),
        ),
        (
            "a list of equal values",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\nConnection: close\r\n\r\nabc",
            Some("abc"),
        ),
        (
            "two equal lines",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
            Some("abc"),
        ),
        (
            "two different lines",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\nConnection: close\r\n\r\nabcd",
            None,
        ),
        (
            "a list of different values",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\nConnection: close\r\n\r\nabcd",
            None,
        ),
        (
            "a signed value",
            b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\nConnection: close\r\n\r\nabc",
            None,
        ),
    ];
    for (what, answer, expected) in cases {
        let backend = answering(answer).await;
        let running = start(config(vec![route(&[backend], &[], 10_000)])).await;
        let (status, _, body) = get(&client(), &running.url("/")).await;
        match expected {
            Some(body_expected) => {
                assert_eq!(status, StatusCode::OK, "{what}");
                assert_eq!(body, body_expected, "{what}");
            }
            None => assert_eq!(status, StatusCode::BAD_GATEWAY, "{what}: {body}"),
        }
    }
}

/// HTTP/2's `:authority` never carries userinfo (RFC 9113 §8.3.1): a request whose does gets 400
/// and reaches no backend, as the HTTP/1.1 absolute form with userinfo does (RFC 9110 §4.2.4);
/// it was routed by the host after the `@` (trial 23).
#[tokio::test]
async fn an_http2_authority_with_userinfo_gets_400() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let h2 = crate::support::h2c_client();
    let (status, _, body) = get(&h2, &format!("http://user@{}/", running.addr)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("userinfo"), "{body}");
    let (status, _, _) = get(&h2, &format!("http://{}/", running.addr)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        blue.hits.load(Ordering::SeqCst),
        1,
        "only the second reached blue"
    );
}
