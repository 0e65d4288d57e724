//! Streams an h2c backend refuses without processing them (a `REFUSED_STREAM` reset, RFC 9113
//! §8.7) are replayed once on a fresh connection, body and trailers included, whatever the method;
//! a body over the replay limit (64 KiB) is not (502, counted), and a stream reset for another
//! reason (the backend may have acted on it) is never replayed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

use futures_util::StreamExt;

use super::h2c_route;
use crate::support::{client, config, get, start};

/// What the backend received of one stream: its path, whole body and trailers.
#[derive(Clone, Debug, PartialEq)]
struct Received {
    path: String,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

/// A raw h2 backend (the `h2` crate): the first stream whose path is `/refuse/<reason>` is reset
/// with that reason (`refused` = REFUSED_STREAM at once, before the body is read; `refused-late` =
/// REFUSED_STREAM after the whole body was read; `internal` = INTERNAL_ERROR after the whole body
/// was read, as a backend that failed after acting on it);
/// every other stream is read whole and answered 200 `ok`. Records what each stream carried that
/// was read whole, and counts connections.
struct Backend {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    accepted: Arc<AtomicUsize>,
    /// Streams whose path asked for a reset (only the first is reset).
    resets: Arc<AtomicUsize>,
}

async fn backend() -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::new(AtomicUsize::new(0));
    let resets = Arc::new(AtomicUsize::new(0));
    let (record, count, reset) = (received.clone(), accepted.clone(), resets.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let (record, reset) = (record.clone(), reset.clone());
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(stream).await else {
                    return;
                };
                while let Some(Ok((request, respond))) = connection.accept().await {
                    let (record, reset) = (record.clone(), reset.clone());
                    tokio::spawn(answer(request, respond, record, reset));
                }
            });
        }
    });
    Backend {
        addr,
        received,
        accepted,
        resets,
    }
}

async fn answer(
    request: Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    record: Arc<Mutex<Vec<Received>>>,
    resets: Arc<AtomicUsize>,
) {
    let path = request.uri().path().to_owned();
    let (reason, at_once) = match path.strip_prefix("/refuse/") {
        Some("refused") => (Some(h2::Reason::REFUSED_STREAM), true),
        Some("refused-late") => (Some(h2::Reason::REFUSED_STREAM), false),
        Some("internal") => (Some(h2::Reason::INTERNAL_ERROR), false),
        _ => (None, false),
    };
    // Only the first such stream is reset.
    let reset_now = reason.filter(|_| resets.fetch_add(1, Ordering::SeqCst) == 0);
    if let (Some(reason), true) = (reset_now, at_once) {
        respond.send_reset(reason);
        return;
    }
    let mut body = request.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { return };
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    let Ok(trailers) = body.trailers().await else {
        return;
    };
    // A refused stream was not processed: not recorded.
    let received = Received {
        path,
        body: Bytes::from(bytes),
        trailers,
    };
    if let Some(reason) = reset_now {
        if reason != h2::Reason::REFUSED_STREAM {
            record.lock().unwrap().push(received);
        }
        respond.send_reset(reason);
        return;
    }
    record.lock().unwrap().push(received);
    let response = Response::builder().status(200).body(()).unwrap();
    if let Ok(mut stream) = respond.send_response(response, false) {
        let _ = stream.send_data(Bytes::from_static(b"ok"), true);
    }
}

type Frames = StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, String>>>;

/// A request body that sends `chunks` with a pause between them (so an attempt can be refused
/// while it is still being read), then `grpc-status`-like trailers.
fn slow_body(chunks: Vec<Bytes>) -> Frames {
    let frames = futures_util::stream::iter(chunks).then(|chunk| async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        Ok(Frame::data(chunk))
    });
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", "abc123".parse().unwrap());
    let end = futures_util::stream::once(async move { Ok(Frame::trailers(trailers)) });
    StreamBody::new(Box::pin(frames.chain(end)))
}

/// Sends `POST path` with `body` to the proxy over HTTP/2 as a gRPC call and returns the status
/// and body text; the proxy's own error answers come as a trailers-only gRPC status, returned as
/// its HTTP equivalent here (`grpc-status: 14` as 502; see `grpc::local`).
async fn post(proxy: SocketAddr, path: &str, body: Frames) -> (StatusCode, String) {
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (mut h2, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::post(format!("http://api.example{path}"))
        .header("content-type", "application/grpc")
        .body(body)
        .unwrap();
    let response = h2.send_request(request).await.unwrap();
    let status = match response.headers().get("grpc-status") {
        Some(code) => {
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(code, "14", "UNAVAILABLE: {response:?}");
            StatusCode::BAD_GATEWAY
        }
        None => response.status(),
    };
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The value of the metric line starting with `series` in the proxy's `/metrics`.
async fn metric(admin: &str, series: &str) -> u64 {
    let text = get(&client(), admin).await.2;
    let line = text
        .lines()
        .find(|l| l.starts_with(series))
        .unwrap_or_else(|| panic!("{series} not in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

const REFUSED: &str =
    r#"crossfade_retries_total{route="web",backend="blue",reason="refused_stream"}"#;
const NOT_REPLAYED: &str = r#"crossfade_refused_not_replayed_total{route="web",backend="blue"}"#;

/// A POST of `path` refused once by the backend is answered 200 after one replay that carried the
/// whole body and trailers on a fresh connection.
async fn refused_then_replayed(path: &str) {
    let (blue, green) = (backend().await, backend().await);
    let proxy = start(config(vec![h2c_route(blue.addr, green.addr, 10_000)])).await;
    let metrics = proxy.admin_url("/metrics");
    let chunks: Vec<Bytes> = (0..4)
        .map(|i| Bytes::from(format!("part {i};").repeat(500)))
        .collect();
    let whole: Bytes = chunks.concat().into();
    let (status, body) = post(proxy.addr, path, slow_body(chunks)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"), "{path}");

    let received = blue.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1, "one stream processed: {received:?}");
    assert_eq!(received[0].path, path);
    assert_eq!(received[0].body, whole, "the identical body");
    let trailers = received[0]
        .trailers
        .as_ref()
        .expect("the trailers replayed");
    assert_eq!(trailers["x-checksum"], "abc123");
    assert_eq!(
        blue.resets.load(Ordering::SeqCst),
        2,
        "refused, then replayed"
    );
    assert_eq!(
        blue.accepted.load(Ordering::SeqCst),
        2,
        "replayed on a fresh connection"
    );
    assert_eq!(metric(&metrics, REFUSED).await, 1);
    assert_eq!(metric(&metrics, NOT_REPLAYED).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_post_is_replayed_once_with_its_body_and_trailers() {
    // Refused as its headers arrive, before the body is all read: the replay sends what was read
    // and continues from the client's stream.
    refused_then_replayed("/refuse/refused").await;
    // Refused after the whole body and trailers were sent: the replay comes from the copy alone.
    refused_then_replayed("/refuse/refused-late").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_post_over_the_replay_limit_is_not_replayed() {
    let (blue, green) = (backend().await, backend().await);
    let proxy = start(config(vec![h2c_route(blue.addr, green.addr, 10_000)])).await;
    let metrics = proxy.admin_url("/metrics");
    // 80 KiB, over the 64 KiB limit, all read by the backend before it refuses the stream.
    let chunks = vec![Bytes::from(vec![b'x'; 80 * 1024])];
    let (status, _) = post(proxy.addr, "/refuse/refused-late", slow_body(chunks)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(blue.received.lock().unwrap().is_empty());
    assert_eq!(blue.resets.load(Ordering::SeqCst), 1, "sent once");
    assert_eq!(metric(&metrics, REFUSED).await, 0);
    assert_eq!(metric(&metrics, NOT_REPLAYED).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_reset_for_another_reason_is_never_replayed() {
    let (blue, green) = (backend().await, backend().await);
    let proxy = start(config(vec![h2c_route(blue.addr, green.addr, 10_000)])).await;
    let metrics = proxy.admin_url("/metrics");
    let chunks = vec![Bytes::from_static(b"charge the card")];
    let (status, _) = post(proxy.addr, "/refuse/internal", slow_body(chunks)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let received = blue.received.lock().unwrap().clone();
    assert_eq!(
        received.len(),
        1,
        "processed once, never again: {received:?}"
    );
    assert_eq!(received[0].body, "charge the card");
    assert_eq!(blue.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(metric(&metrics, REFUSED).await, 0);
    assert_eq!(metric(&metrics, NOT_REPLAYED).await, 0);
}
