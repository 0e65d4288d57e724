//! WebSocket over HTTP/2 (RFC 8441): an extended CONNECT with `:protocol websocket` is routed by
//! weight like an HTTP/1.1 upgrade, sent to the backend as the RFC 6455 handshake, answered `200`
//! on the client's stream, and then carries the same frames as an HTTP/1.1 tunnel, closed with
//! 1001 the same way. The client here is hyper's HTTP/2 client (prior knowledge) with
//! tokio-tungstenite over the stream, as a browser's WebSocket over an h2 connection.

use std::net::SocketAddr;
use std::time::Duration;

use crossfade_proxy::Slot;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http2::SendRequest;
use hyper::ext::Protocol;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub(crate) use super::echo;
use super::{backend, eventually, expect_going_away, stopping_closes_with_1001_and_returns};
use crate::support::*;

pub(crate) type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// An HTTP/2 connection with prior knowledge to the proxy at `addr`.
async fn h2(addr: SocketAddr) -> SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}

/// Opens an extended CONNECT stream for `protocol` to `path` on `sender` (RFC 8441 §4); returns
/// the answer's status and headers, and the WebSocket over the stream when the status is 200.
pub(crate) async fn extended_connect(
    sender: &mut SendRequest<Empty<Bytes>>,
    path: &str,
    protocol: &'static str,
) -> (StatusCode, HeaderMap, Option<Ws>) {
    extended_connect_with(sender, path, protocol, &[]).await
}

/// [`extended_connect`] with the header lines `more` in the request.
async fn extended_connect_with(
    sender: &mut SendRequest<Empty<Bytes>>,
    path: &str,
    protocol: &'static str,
    more: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Option<Ws>) {
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://app.test{path}"))
        .header("sec-websocket-version", "13")
        .header("sec-websocket-protocol", "chat")
        .body(Empty::new())
        .unwrap();
    for &(name, value) in more {
        let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request.headers_mut().append(name, value.parse().unwrap());
    }
    request
        .extensions_mut()
        .insert(Protocol::from_static(protocol));
    sender.ready().await.unwrap();
    let response = sender.send_request(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    if status != StatusCode::OK {
        let _ = response.into_body().collect().await;
        return (status, headers, None);
    }
    let upgraded = hyper::upgrade::on(response).await.unwrap();
    let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    (status, headers, Some(ws))
}

/// A WebSocket to `path` over a new HTTP/2 connection; panics unless the proxy answers 200.
async fn websocket(running: &Running, path: &str) -> Ws {
    let mut sender = h2(running.addr).await;
    let (status, headers, ws) = extended_connect(&mut sender, path, "websocket").await;
    assert_eq!(status, StatusCode::OK, "{headers:?}");
    ws.unwrap()
}

#[tokio::test]
async fn an_h2_websocket_follows_the_weights_at_its_connect_and_reaches_the_backend_as_an_upgrade()
{
    let blue = backend::start("blue").await;
    let green = backend::start("green").await;
    let running = start(config(vec![route(&[blue.addr], &[green.addr], 10_000)])).await;
    let mut sender = h2(running.addr).await;
    let (status, headers, ws) = extended_connect(&mut sender, "/ws", "websocket").await;
    assert_eq!(status, StatusCode::OK);
    // RFC 8441 §5: no accept value and no upgrade fields over HTTP/2; the backend's own headers
    // and the subprotocol it picked go through.
    for name in ["sec-websocket-accept", "upgrade", "connection"] {
        assert!(headers.get(name).is_none(), "{name} in {headers:?}");
    }
    assert_eq!(headers["x-pool"], "blue");
    let mut on_blue = ws.unwrap();
    assert_eq!(echo(&mut on_blue, "1").await, "blue: 1");

    // What the backend read: an HTTP/1.1 WebSocket handshake with a key of the proxy's and the
    // client's version and subprotocol.
    let seen = blue.seen.lock().unwrap()[0].clone();
    assert_eq!(seen["upgrade"], "websocket");
    assert_eq!(seen["connection"], "upgrade");
    assert_eq!(seen["sec-websocket-version"], "13");
    assert_eq!(seen["sec-websocket-protocol"], "chat");
    assert_eq!(seen["host"], "app.test");
    let key = seen["sec-websocket-key"].to_str().unwrap().to_owned();
    assert_eq!(key.len(), 24, "16 bytes in base64: {key}");

    running
        .proxy
        .set_weights(
            "web",
            crossfade_proxy::Weights {
                blue: 0,
                green: 10_000,
            },
        )
        .unwrap();
    // A second stream on the same connection picks again: green; the first stays on blue.
    let (status, _, ws) = extended_connect(&mut sender, "/ws", "websocket").await;
    assert_eq!(status, StatusCode::OK);
    let mut on_green = ws.unwrap();
    assert_eq!(echo(&mut on_green, "2").await, "green: 2");
    assert_eq!(echo(&mut on_blue, "3").await, "blue: 3");
    assert_eq!(running.proxy.upgraded("web", Slot::Blue), 1);
    assert_eq!(running.proxy.upgraded("web", Slot::Green), 1);
    let stats = running.proxy.backend_stats("web", Slot::Blue).unwrap();
    assert_eq!((stats.upgraded, stats.in_flight, stats.errors), (1, 0, 0));

    on_blue.close(None).await.unwrap();
    while on_blue.next().await.is_some() {}
    eventually("blue's gauge to drop to 0", || {
        running.proxy.upgraded("web", Slot::Blue) == 0
    })
    .await;
    assert_eq!(running.proxy.upgraded("web", Slot::Green), 1);
    assert_eq!(echo(&mut on_green, "4").await, "green: 4");
}

/// Case C19 on an h2 WebSocket: its HTTP/1.1 handshake toward the backend carries the client's
/// `te: trailers` named in `Connection` beside `upgrade` (RFC 9110 §10.1.4; session 41).
#[tokio::test]
async fn c19_an_h2_websocket_with_te_trailers_reaches_the_backend_with_connection_upgrade_and_te() {
    let blue = backend::start("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let mut sender = h2(running.addr).await;
    let te = [("te", "trailers")];
    let (status, headers, ws) = extended_connect_with(&mut sender, "/ws", "websocket", &te).await;
    assert_eq!(status, StatusCode::OK, "{headers:?}");
    assert_eq!(echo(&mut ws.unwrap(), "1").await, "blue: 1");
    let seen = blue.seen.lock().unwrap()[0].clone();
    let connection: Vec<_> = seen.get_all("connection").iter().collect();
    assert_eq!(connection, ["upgrade", "te"], "{seen:?}");
    assert_eq!(seen["te"], "trailers");
    assert_eq!(seen["upgrade"], "websocket");
}

#[tokio::test]
async fn a_retired_backends_h2_websocket_gets_1001_going_away() {
    let blue = backend::start("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let mut ws = websocket(&running, "/ws").await;
    assert_eq!(echo(&mut ws, "before").await, "blue: before");

    assert_eq!(running.proxy.close_upgraded("web", Slot::Blue), Some(1));
    expect_going_away(&mut ws).await;
    eventually("the backend to get a close frame", || {
        !blue.closes.lock().unwrap().is_empty()
    })
    .await;
    eventually("the gauge to drop to 0", || {
        running.proxy.upgraded("web", Slot::Blue) == 0
    })
    .await;
}

#[tokio::test]
async fn proxy_shutdown_closes_h2_websockets_with_1001_and_returns() {
    let blue = backend::start("blue").await;
    let mut running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let mut ws = websocket(&running, "/ws").await;
    stopping_closes_with_1001_and_returns(&mut running, &mut ws).await;
}

/// Each WebSocket over HTTP/2 holds a place under `limits.max_requests` for its life (its stream
/// shares the client's connection, so `max_connections` does not bound its upstream connection),
/// and its CONNECT one more while it is answered (a request's place): with 3 places, two are open
/// and a third is shed with 503, reaching no backend; a closed one frees its place.
#[tokio::test]
async fn h2_websockets_hold_places_under_max_requests_until_they_close() {
    let blue = backend::start("blue").await;
    let mut config = config(vec![route(&[blue.addr], &[], 10_000)]);
    config.limits.max_requests = 3;
    let running = start(config).await;
    let mut sender = h2(running.addr).await;
    let (_, _, first) = extended_connect(&mut sender, "/ws", "websocket").await;
    let (_, _, second) = extended_connect(&mut sender, "/ws", "websocket").await;
    let (mut first, mut second) = (first.unwrap(), second.unwrap());
    assert_eq!(echo(&mut second, "2").await, "blue: 2");
    let (status, headers, _) = extended_connect(&mut sender, "/ws", "websocket").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    assert_eq!(
        blue.seen.lock().unwrap().len(),
        2,
        "the shed one reached the backend"
    );

    first.close(None).await.unwrap();
    while first.next().await.is_some() {}
    eventually("blue's gauge to drop to 1", || {
        running.proxy.upgraded("web", Slot::Blue) == 1
    })
    .await;
    let (status, _, third) = extended_connect(&mut sender, "/ws", "websocket").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo(&mut third.unwrap(), "3").await, "blue: 3");
}

/// The idle watch closes an HTTP/2 connection with no stream in flight for the header read
/// timeout; a WebSocket's stream is in flight for its whole life, however quiet.
#[tokio::test]
async fn an_h2_connection_with_a_quiet_websocket_is_not_closed_as_idle() {
    let blue = backend::start("blue").await;
    let mut config = config(vec![route(&[blue.addr], &[], 10_000)]);
    config.limits.header_read_timeout = Duration::from_millis(200);
    let running = start(config).await;
    let mut ws = websocket(&running, "/ws").await;
    assert_eq!(echo(&mut ws, "a").await, "blue: a");
    // Well past the idle close (three quiet looks half a timeout apart) and its GOAWAY grace.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(echo(&mut ws, "b").await, "blue: b");
    assert_eq!(running.proxy.upgraded("web", Slot::Blue), 1);
}

#[tokio::test]
async fn an_answer_that_does_not_switch_is_passed_through_unless_it_is_a_2xx() {
    let blue = backend::start("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let mut sender = h2(running.addr).await;
    // 426: the backend's refusal reaches the client as it is.
    let (status, headers, _) = extended_connect(&mut sender, "/refuse", "websocket").await;
    assert_eq!(status, StatusCode::UPGRADE_REQUIRED);
    assert_eq!(headers["x-pool"], "blue");
    // 200 without switching: over HTTP/2 that would open the client's stream as a tunnel to
    // nothing, so it is a bad gateway.
    let (status, _, _) = extended_connect(&mut sender, "/ignore", "websocket").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    // A 101 whose accept value does not answer the proxy's key: the handshake failed.
    let (status, _, _) = extended_connect(&mut sender, "/bad-accept", "websocket").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(running.proxy.upgraded("web", Slot::Blue), 0);
    // The connection still serves.
    let (status, _, ws) = extended_connect(&mut sender, "/ws", "websocket").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo(&mut ws.unwrap(), "ok").await, "blue: ok");
}

#[tokio::test]
async fn an_extended_connect_for_another_protocol_is_refused_400() {
    let blue = backend::start("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let mut sender = h2(running.addr).await;
    let (status, _, _) = extended_connect(&mut sender, "/raw", "connect-udp").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        blue.seen.lock().unwrap().is_empty(),
        "the backend saw the request"
    );
}

/// An HTTP/2 connection with prior knowledge to `addr` whose client grants each stream `window`
/// bytes at first (`SETTINGS_INITIAL_WINDOW_SIZE`, RFC 9113 §6.5.2), and more only as it reads.
async fn h2_with_window(addr: SocketAddr, window: u32) -> SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(window)
        .handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

/// `limits.send_timeout` bounds a WebSocket's wait for its client's flow-control window as it
/// bounds a response body's (vendor/hyper patch 23): a client that opens no window on its stream
/// gets `RST_STREAM CANCEL` once the timeout passes, counted, and the tunnel and its backend
/// connection end, rather than holding them for `limits.tunnel_idle_timeout` (an hour). A client
/// that reads slowly, each grant within the timeout, gets every byte though the whole takes
/// several timeouts.
#[tokio::test]
async fn an_h2_websocket_whose_client_opens_no_window_ends_at_send_timeout() {
    let blue = backend::start("blue").await;
    let mut config = config(vec![route(&[blue.addr], &[], 10_000)]);
    config.limits.send_timeout = Duration::from_secs(1);
    let running = start(config).await;
    let counted = || async {
        crate::limits::metric(&running, "crossfade_h2_stream_send_timeouts_total")
            .await
            .unwrap_or(0.0)
    };

    let mut sender = h2_with_window(running.addr, 0).await;
    let (status, _, ws) = extended_connect(&mut sender, "/ws", "websocket").await;
    assert_eq!(status, StatusCode::OK);
    let mut ws = ws.unwrap();
    ws.send(Message::text("held")).await.unwrap();
    // The echo cannot reach the client; the stream ends instead of the echo coming.
    let ended = tokio::time::timeout(Duration::from_secs(30), ws.next())
        .await
        .expect("the stalled WebSocket ends within 30 s");
    assert!(
        !matches!(ended, Some(Ok(Message::Text(_)))),
        "an echo came through a zero window: {ended:?}"
    );
    eventually("the tunnel to end", || {
        running.proxy.upgraded("web", Slot::Blue) == 0
    })
    .await;
    assert_eq!(counted().await, 1.0, "the reset stream is counted");

    // 20 echoes of 1,000 bytes to a client that opens a 1,000-byte window and grants more only as
    // it reads, with a read every 100 ms: several seconds in all, several times the timeout.
    let mut sender = h2_with_window(running.addr, 1_000).await;
    let (status, _, ws) = extended_connect(&mut sender, "/ws", "websocket").await;
    assert_eq!(status, StatusCode::OK);
    let mut ws = ws.unwrap();
    let text = "x".repeat(1_000);
    for _ in 0..20 {
        ws.feed(Message::text(text.clone())).await.unwrap();
    }
    ws.flush().await.unwrap();
    // Each echo is "blue: " and the text in a frame with a 4-byte head (RFC 6455 §5.2).
    let expected = 20 * (4 + 6 + 1_000);
    let raw = ws.get_mut();
    let trickled = async {
        let mut received = 0;
        let mut buf = [0u8; 1_000];
        while received < expected {
            let n = raw.read(&mut buf).await.expect("the stream is open");
            assert!(n > 0, "the stream ended after {received} bytes");
            received += n;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        received
    };
    let received = tokio::time::timeout(Duration::from_secs(60), trickled)
        .await
        .expect("the trickled echoes come whole");
    assert_eq!(received, expected);
    assert_eq!(counted().await, 1.0, "no other stream timed out");
}
