//! Idle client connections (trial report 3 §4): an HTTP/2 connection with no stream open for
//! `limits.header_read_timeout` gets GOAWAY and is closed, so idle HTTP/2 clients cannot fill
//! `limits.max_connections`; one with a stream open (a slow response head, a body streamed
//! slowly, as a gRPC stream) is not. One that never sends a request gets GOAWAY too at that
//! deadline, and is closed at most `GOAWAY_GRACE` (1 s) later when it answers nothing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use crossfade_proxy::{LimitsConfig, ProxyConfig};
use http::{Request, Response, StatusCode};
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::limits::wait_for;
use crate::support::*;

const IDLE: Duration = Duration::from_millis(300);

/// A proxy with `header_read_timeout` [`IDLE`] over `blue`.
async fn proxy(blue: SocketAddr) -> Running {
    let config = ProxyConfig {
        limits: LimitsConfig {
            header_read_timeout: IDLE,
            ..LimitsConfig::default()
        },
        ..config(vec![route(&[blue], &[], 10_000)])
    };
    start(config).await
}

/// A raw HTTP/2 (prior knowledge) client connection to `addr` and its driving task.
async fn h2_connect(
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    (send, tokio::spawn(connection))
}

/// One GET over `send`; the status and the whole body.
async fn h2_get(send: &mut h2::client::SendRequest<Bytes>, path: &str) -> (StatusCode, Bytes) {
    let request = Request::get(format!("http://shop.test{path}"))
        .body(())
        .unwrap();
    let mut ready = send.clone().ready().await.unwrap();
    let (response, _) = ready.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    let status = response.status();
    let mut body = response.into_body();
    let mut data = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        data.extend_from_slice(&chunk);
    }
    (status, data.freeze())
}

/// A backend whose `/stream` body is 5 chunks of `x`, one every 250 ms (more than the idle
/// timeout between any two, and four of them in all).
async fn streaming_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service_fn(|_request| async {
                let chunks = futures_util::stream::unfold(0, |i| async move {
                    if i == 5 {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    Some((Ok::<_, Infallible>(Frame::data(Bytes::from("x"))), i + 1))
                });
                Ok::<_, Infallible>(Response::new(StreamBody::new(Box::pin(chunks))))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

#[tokio::test]
async fn an_idle_http2_client_connection_gets_goaway_after_the_header_read_timeout() {
    let blue = backend("blue").await;
    let running = proxy(blue.addr).await;
    let (mut send, connection) = h2_connect(running.addr).await;
    let (status, body) = h2_get(&mut send, "/").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"blue"[..]));
    let idle_since = Instant::now();
    // The client says nothing more: the proxy sends GOAWAY and closes, which ends the client's
    // connection cleanly (an abrupt close would be an error here).
    let ended = tokio::time::timeout(Duration::from_secs(10), connection).await;
    let ended = ended.expect("an idle HTTP/2 connection still open after 10 s");
    ended.unwrap().expect("ended by GOAWAY, not cut");
    assert!(
        idle_since.elapsed() >= IDLE,
        "closed before the idle timeout"
    );
    let refused = send.ready().await.map(|_| ()).unwrap_err();
    assert!(refused.is_go_away(), "{refused:?}");
    assert_eq!(refused.reason(), Some(h2::Reason::NO_ERROR), "{refused:?}");
    no_client_connections_left(&running).await;
}

#[tokio::test]
async fn an_http2_connection_with_a_stream_open_is_not_closed_as_idle() {
    let blue = backend("blue").await;
    let streaming = streaming_backend().await;
    let running = proxy(blue.addr).await;
    let (mut send, connection) = h2_connect(running.addr).await;
    // A response head that takes five idle timeouts.
    let (status, body) = h2_get(&mut send, "/slow/1500").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"blue"[..]));
    assert!(!connection.is_finished(), "closed under a slow response");
    drop(running);

    // A body streamed over four idle timeouts, with more than one between two chunks.
    let running = proxy(streaming).await;
    let (mut send, connection) = h2_connect(running.addr).await;
    let (status, body) = h2_get(&mut send, "/stream").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"xxxxx"[..]));
    // Still open and usable right after.
    let (status, _) = h2_get(&mut send, "/stream").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!connection.is_finished(), "closed under a streamed body");
}

#[tokio::test]
async fn an_http2_connection_without_a_request_gets_goaway_before_it_is_closed() {
    let blue = backend("blue").await;
    let running = proxy(blue.addr).await;
    let mut raw = crate::h2raw::RawH2::connect(running.addr).await;
    let connected = Instant::now();
    // The preface and SETTINGS, then nothing, not even the SETTINGS ACK or a PING's answer.
    let frames = raw
        .frames_until_close(Duration::from_secs(10), "a connection without a request")
        .await;
    assert!(
        connected.elapsed() >= IDLE,
        "closed before the header read timeout"
    );
    let goaway = frames
        .iter()
        .find(|f| f.kind == crate::h2raw::GOAWAY)
        .unwrap_or_else(|| panic!("no GOAWAY before the close: {frames:?}"));
    assert_eq!(goaway.stream, 0);
    // No stream was opened, none is refused: last-stream-id 2^31-1 or 0, error code NO_ERROR.
    assert_eq!(&goaway.payload[4..8], &[0, 0, 0, 0], "{goaway:?}");
    no_client_connections_left(&running).await;
}

#[tokio::test]
async fn an_idle_http2_client_that_answers_nothing_is_closed_soon_after_its_goaway() {
    let blue = backend("blue").await;
    let running = proxy(blue.addr).await;
    let mut raw = crate::h2raw::RawH2::connect(running.addr).await;
    raw.get(1).await;
    // The answer, then the client vanishes without a FIN: it reads on here but answers nothing,
    // not the shutdown's PING either (hyper's graceful shutdown waits for that answer).
    let frames = raw
        .frames_until_close(
            Duration::from_secs(10),
            "the connection of an idle HTTP/2 client that answers nothing",
        )
        .await;
    let answered = frames
        .iter()
        .position(|f| f.kind == crate::h2raw::HEADERS && f.stream == 1)
        .unwrap_or_else(|| panic!("no response: {frames:?}"));
    let goaway = frames
        .iter()
        .position(|f| f.kind == crate::h2raw::GOAWAY)
        .unwrap_or_else(|| panic!("no GOAWAY before the close: {frames:?}"));
    assert!(answered < goaway, "{frames:?}");
    no_client_connections_left(&running).await;
}

/// Waits until the proxy counts no open client connection (`crossfade_client_connections 0`).
async fn no_client_connections_left(running: &Running) {
    wait_for(|| async {
        let (_, _, text) = get(&client(), &running.admin_url("/metrics")).await;
        text.contains("\ncrossfade_client_connections 0\n")
    })
    .await;
}
