//! Trial 11, L1: a backend that answers a request before the proxy has sent it the whole request
//! body, then lets the rest go (an HTTP/1.1 backend closes or resets its connection, an h2c one
//! resets the stream with `NO_ERROR` after its complete response, RFC 9113 §8.1). The proxy then
//! cannot read the rest of the client's body, so it closes the client's connection after the
//! answer: the forwarded answer must say so (`Connection: close`, RFC 9112 §9.6), or a keep-alive
//! client sends its next request into a closing connection and loses it. The backend was within
//! its rights: none of it counts as an upstream failure. A backend that reads the whole body
//! before answering keeps the client's connection as before.
//!
//! Each client here sends the request head, reads the whole answer, and only then sends the body
//! (so the answer surely came first, whatever the load), then behaves as a keep-alive client: on
//! `Connection: close` it expects a clean end of the connection; otherwise it sends a second
//! request on the same connection and expects its answer.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crossfade_proxy::config::UpstreamProtocol;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::support::{backend, client, config, get, route, start, Running};

/// The announced request body, in bytes: more than the proxy drains of a body it answered itself
/// (64 KiB) and more than one read of it, so it cannot be taken in whole by chance.
const BODY: usize = 100_000;

/// The overall bound of every wait: generous, for a loaded machine; a healthy run takes
/// milliseconds.
const PATIENCE: Duration = Duration::from_secs(20);

/// How an HTTP/1.1 backend lets the rest of the request go after its early answer.
#[derive(Clone, Copy, Debug)]
enum Then {
    /// Closes its socket right after the answer (a FIN: nothing of the body had arrived).
    Closes,
    /// Resets the connection once the client has the answer (close with zero linger: a RST).
    Resets,
}

/// An HTTP/1.1 backend: a `POST` is answered `200 early` as soon as its head is read, without
/// reading its body and without `Connection: close` (as a hyper server does), then the connection
/// ends as `then` says (for `Resets`, when `answered` is notified); a `GET` is answered `200 next`
/// and the connection kept.
async fn http1_backend(then: Then, answered: Arc<Notify>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let answered = answered.clone();
            tokio::spawn(async move {
                while let Some(head) = read_head(&mut stream).await {
                    if head.starts_with("GET ") {
                        let next = "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nnext";
                        if stream.write_all(next.as_bytes()).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    let early = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nearly";
                    if stream.write_all(early.as_bytes()).await.is_err() {
                        return;
                    }
                    if let Then::Resets = then {
                        answered.notified().await;
                        let _ = stream.set_zero_linger();
                    }
                    return;
                }
            });
        }
    });
    addr
}

/// An h2c backend (hyper's HTTP/2 server): `/next` is answered `next`; anything else `early` at
/// once, its request body dropped unread, so the stream is reset with `NO_ERROR` after the
/// complete response (RFC 9113 §8.1; h2 does that for a server whose request body was dropped).
async fn h2c_backend() -> SocketAddr {
    h2c_text_backend(|request| match request.uri().path() {
        "/next" => "next",
        _ => "early",
    })
    .await
}

/// An h2c-only backend (hyper's HTTP/2 server, as a gRPC server) that answers each request 200
/// with the text `answer` gives for it; the request, body unread, is dropped when `answer`
/// returns.
pub(crate) async fn h2c_text_backend(answer: fn(Request<Incoming>) -> &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service_fn(move |request: Request<Incoming>| async move {
                let text = answer(request);
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                    text.as_bytes(),
                ))))
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

/// Reads up to the end of a head (the blank line), one byte at a time so that nothing after it
/// is read; `None` when the peer closed first.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    String::from_utf8(head).ok()
}

/// One response on `stream`: its head (lower-cased) and its `content-length` body; `None` when
/// the connection ended (or failed) before it was whole, or `PATIENCE` passed.
async fn read_response(stream: &mut TcpStream) -> Option<(String, String)> {
    let read = async {
        let head = read_head(stream).await?.to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))?
            .trim()
            .parse()
            .ok()?;
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).await.ok()?;
        Some((head, String::from_utf8(body).ok()?))
    };
    tokio::time::timeout(PATIENCE, read).await.ok().flatten()
}

/// Whether a lower-cased response head announces the connection's end.
fn closes(head: &str) -> bool {
    head.lines()
        .any(|line| line.starts_with("connection:") && line.contains("close"))
}

/// One keep-alive client's exchange through `proxy` (see the module docs): `Ok` with whether the
/// answer said `Connection: close`, or `Err` saying what went wrong. `answered` is notified once
/// the client has the first answer.
async fn early_answer_then_next(proxy: SocketAddr, answered: &Notify) -> Result<bool, String> {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let head = format!("POST /early HTTP/1.1\r\nhost: app.test\r\ncontent-length: {BODY}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let Some((head, body)) = read_response(&mut stream).await else {
        return Err("no answer to the POST".to_owned());
    };
    answered.notify_one();
    if !head.starts_with("http/1.1 200") || body != "early" {
        return Err(format!("the POST got {head:?} {body:?}"));
    }
    // The client sends its body, as a client that did not expect an early answer does; the
    // proxy may have stopped reading it (then it discards it while lingering).
    let _ = tokio::time::timeout(PATIENCE, stream.write_all(&vec![b'x'; BODY])).await;
    if closes(&head) {
        let mut rest = Vec::new();
        return match tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest)).await {
            Ok(Ok(_)) if rest.is_empty() => Ok(true),
            Ok(Ok(_)) => Err(format!("bytes after the last answer: {rest:?}")),
            Ok(Err(e)) => Err(format!("the connection was not closed cleanly: {e}")),
            Err(_) => Err("the connection stayed open after Connection: close".to_owned()),
        };
    }
    let next = "GET /next HTTP/1.1\r\nhost: app.test\r\n\r\n";
    if stream.write_all(next.as_bytes()).await.is_err() {
        return Err(format!(
            "kept without Connection: close ({head:?}), then closed under the next request"
        ));
    }
    match read_response(&mut stream).await {
        Some((_, body)) if body == "next" => Ok(false),
        Some(other) => Err(format!("the next request got {other:?}")),
        None => Err(format!(
            "the answer {head:?} kept the connection without Connection: close, \
             and the next request on it was dropped"
        )),
    }
}

/// `rounds` clients against `proxy` (see [`early_answer_then_next`]), each answered early: every
/// one gets the answer and `Connection: close` (the proxy cannot keep the connection: the backend
/// let the rest of the body go) and a clean close; and nothing counts against the backend.
async fn every_early_answer_says_close(proxy: &Running, answered: &Notify, rounds: usize) {
    let mut failures = Vec::new();
    for round in 0..rounds {
        match early_answer_then_next(proxy.addr, answered).await {
            Ok(true) => {}
            Ok(false) => {
                failures.push(format!("round {round}: answered without Connection: close"))
            }
            Err(e) => failures.push(format!("round {round}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let (_, _, metrics) = get(&client(), &proxy.admin_url("/metrics")).await;
    assert_no_backend_errors(&metrics);
}

/// No upstream error of any kind and no backend error in `metrics` (Prometheus text).
fn assert_no_backend_errors(metrics: &str) {
    let counted: Vec<&str> = metrics
        .lines()
        .filter(|line| {
            line.starts_with("crossfade_upstream_errors_total{")
                || line.starts_with("crossfade_backend_errors_total{")
        })
        .filter(|line| !line.ends_with(" 0"))
        .collect();
    assert!(counted.is_empty(), "counted as failures: {counted:?}");
    assert!(
        metrics.contains(r#"crossfade_backend_errors_total{route="web",backend="blue"} 0"#),
        "no backend error series in\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_backend_that_answers_early_and_closes_gets_connection_close_to_the_client() {
    let answered = Arc::new(Notify::new());
    let backend = http1_backend(Then::Closes, answered.clone()).await;
    let proxy = start(config(vec![route(&[backend], &[], 10_000)])).await;
    every_early_answer_says_close(&proxy, &answered, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_backend_that_answers_early_and_resets_gets_connection_close_to_the_client() {
    let answered = Arc::new(Notify::new());
    let backend = http1_backend(Then::Resets, answered.clone()).await;
    let proxy = start(config(vec![route(&[backend], &[], 10_000)])).await;
    every_early_answer_says_close(&proxy, &answered, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_backend_that_answers_early_and_resets_the_stream_gets_connection_close_to_the_client(
) {
    let backend = h2c_backend().await;
    let mut route = route(&[backend], &[], 10_000);
    route.blue.protocol = UpstreamProtocol::H2c;
    let proxy = start(config(vec![route])).await;
    every_early_answer_says_close(&proxy, &Notify::new(), 5).await;
}

/// The other side: a backend that reads the whole body before it answers (the test backend's
/// `/upload`) keeps the client's connection: no `Connection: close`, and the next request on the
/// connection is answered; its upstream connection is reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_reads_the_whole_body_first_keeps_the_client_connection() {
    let blue = backend("blue").await;
    let proxy = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    for round in 0..5 {
        let head =
            format!("POST /upload HTTP/1.1\r\nhost: app.test\r\ncontent-length: {BODY}\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&vec![b'x'; BODY]).await.unwrap();
        let (head, body) = read_response(&mut stream)
            .await
            .unwrap_or_else(|| panic!("round {round}: no answer"));
        assert_eq!(body, BODY.to_string(), "round {round}");
        assert!(!closes(&head), "round {round}: {head:?}");
    }
    assert_eq!(
        blue.opened.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the upstream connection was not reused"
    );
}
