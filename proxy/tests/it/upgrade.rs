//! HTTP/1.1 Upgrade tunnels (WebSocket and others): routed by weight at upgrade time, headers kept,
//! non-101 answers passed through, the `upgraded` gauge, and the close at the drain deadline (and
//! at the idle timeout, `idle`; when a table swap removed the endpoint, `removed`); an `Upgrade: h2c`
//! offer is no upgrade (`h2c`).

pub(crate) mod backend;
mod bad_input;
pub(crate) mod extended_connect;
mod h2c;
mod idle;
mod removed;

use std::time::Duration;

use bytes::Bytes;
use crossfade_proxy::Slot;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::support::*;
use backend::HALF_FRAME_TEXT;

/// Polls `check` every 20 ms for up to 5 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..250 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Sends a raw HTTP/1.1 upgrade request for `path` with `Upgrade: protocol`; returns the stream
/// and the response head (lowercased), having read exactly up to its blank line.
async fn raw_upgrade(
    addr: std::net::SocketAddr,
    path: &str,
    protocol: &str,
) -> (TcpStream, String) {
    raw_upgrade_with(addr, path, protocol, "").await
}

/// [`raw_upgrade`] with `more` (whole header lines, each ending in CRLF) in the request head.
async fn raw_upgrade_with(
    addr: std::net::SocketAddr,
    path: &str,
    protocol: &str,
    more: &str,
) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: app.test\r\nConnection: keep-alive, Upgrade, X-Hop\r\n\
         X-Hop: secret\r\nUpgrade: {protocol}\r\n{more}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "head cut short");
        head.push(byte[0]);
    }
    (
        stream,
        String::from_utf8(head).unwrap().to_ascii_lowercase(),
    )
}

async fn metric_line(running: &Running, backend: &str) -> String {
    let (_, _, text) = get(&client(), &running.admin_url("/metrics")).await;
    let prefix = format!("crossfade_upgraded_connections{{route=\"web\",backend=\"{backend}\"}} ");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        .to_owned()
}

async fn status_upgraded(running: &Running, backend: &str) -> u64 {
    let (_, _, text) = get(&client(), &running.admin_url("/status")).await;
    let status: serde_json::Value = serde_json::from_str(&text).unwrap();
    status["routes"][0][backend]["upgraded"].as_u64().unwrap()
}

#[tokio::test]
async fn a_non_websocket_upgrade_is_tunnelled_with_its_headers_and_counted_until_it_closes() {
    let blue = backend::start("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let (mut stream, head) = raw_upgrade(running.addr, "/raw", "echo/1").await;
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    assert!(head.contains("\r\nupgrade: echo/1\r\n"), "{head}");
    assert!(head.contains("\r\nconnection: upgrade\r\n"), "{head}");
    assert!(head.contains("\r\nx-pool: blue\r\n"), "{head}");

    let seen = blue.seen.lock().unwrap()[0].clone();
    assert_eq!(seen["upgrade"], "echo/1");
    assert_eq!(seen["connection"], "upgrade");
    assert!(
        seen.get("x-hop").is_none(),
        "a header named by Connection leaked"
    );

    for message in [&b"hello"[..], &[0u8, 255, 13, 10, 13, 10], &[b'z'; 40_000]] {
        stream.write_all(message).await.unwrap();
        let mut back = vec![0u8; message.len()];
        stream.read_exact(&mut back).await.unwrap();
        assert_eq!(back, message);
    }
    assert_eq!(running.proxy.upgraded("web", Slot::Blue), 1);
    let stats = running.proxy.backend_stats("web", Slot::Blue).unwrap();
    assert_eq!((stats.upgraded, stats.in_flight), (1, 0));
    assert!(metric_line(&running, "blue").await.ends_with(" 1"));
    assert_eq!(status_upgraded(&running, "blue").await, 1);
    assert_eq!(status_upgraded(&running, "green").await, 0);

    // The client half-closes; the backend's echo ends and closes; the tunnel ends both ways.
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    eventually("the gauge to drop to 0", || {
        running.proxy.upgraded("web", Slot::Blue) == 0
    })
    .await;
    assert!(metric_line(&running, "blue").await.ends_with(" 0"));
}

/// Case C19 on an upgrade: its head is built apart from an ordinary request's, and until session
/// 41 a `TE: trailers` went to the backend without `Connection: te` (RFC 9110 §10.1.4: a sender
/// of TE names it in `Connection`). The backend now sees `Connection: upgrade` and then `te`, and
/// nothing else the client's `Connection` named.
#[tokio::test]
async fn c19_an_upgrade_with_te_trailers_names_te_in_connection_beside_upgrade() {
    let blue = backend::start("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let more = "TE: trailers, deflate\r\n";
    let (mut stream, head) = raw_upgrade_with(running.addr, "/raw", "echo/1", more).await;
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    let seen = blue.seen.lock().unwrap()[0].clone();
    let lines = |name: &str| -> Vec<&str> {
        let values = seen.get_all(name).iter();
        values.map(|v| v.to_str().unwrap()).collect()
    };
    assert_eq!(lines("connection"), ["upgrade", "te"], "{seen:?}");
    assert_eq!(lines("te"), ["trailers"], "{seen:?}");
    assert_eq!(lines("upgrade"), ["echo/1"], "{seen:?}");
    assert!(seen.get("x-hop").is_none(), "{seen:?}");
    stream.write_all(b"still a tunnel").await.unwrap();
    let mut back = [0u8; 14];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"still a tunnel");
}

/// A backend that ends its side of a non-WebSocket tunnel first: the client reads the end (the
/// proxy passes the FIN on at once) while its own side stays open and can still send.
#[tokio::test]
async fn a_backend_that_half_closes_a_tunnel_first_is_read_to_its_end_by_the_client() {
    let blue = backend::start("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let (mut stream, head) = raw_upgrade(running.addr, "/bye", "bye/1").await;
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    let mut read = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut read)).await;
    assert!(
        matches!(end, Ok(Ok(3))),
        "the backend's FIN did not reach the client: {end:?}"
    );
    assert_eq!(read, b"bye");
    stream.write_all(b"still here").await.unwrap();
    stream.shutdown().await.unwrap();
    eventually("the gauge to drop to 0", || {
        running.proxy.upgraded("web", Slot::Blue) == 0
    })
    .await;
}

#[tokio::test]
async fn a_426_or_a_200_answer_to_an_upgrade_is_passed_through_as_an_ordinary_response() {
    let blue = backend::start("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let client = client();
    for (path, status, body) in [
        ("/refuse", StatusCode::UPGRADE_REQUIRED, "upgrade refused"),
        ("/ignore", StatusCode::OK, "plain answer"),
    ] {
        let req = Request::get(running.url(path))
            .header("connection", "upgrade")
            .header("upgrade", "other/1")
            .body(Full::<Bytes>::default())
            .unwrap();
        let (got, headers, text) = send(&client, req).await;
        assert_eq!((got, text.as_str()), (status, body), "{path}");
        assert!(
            headers.get("upgrade").is_none(),
            "{path}: hop-by-hop upgrade kept"
        );
    }
    let seen = blue.seen.lock().unwrap().clone();
    assert!(seen.iter().all(|h| h["upgrade"] == "other/1"));
    assert_eq!(running.proxy.upgraded("web", Slot::Blue), 0);
    let stats = running.proxy.backend_stats("web", Slot::Blue).unwrap();
    assert_eq!((stats.requests, stats.errors, stats.in_flight), (2, 0, 0));
}

#[tokio::test]
async fn an_upgrade_to_a_backend_that_refuses_connections_is_answered_502() {
    let refused = refused_addr().await;
    let running = start(config(vec![route(&[refused], &[], 10_000)])).await;
    let (_stream, head) = raw_upgrade(running.addr, "/raw", "echo/1").await;
    assert!(head.starts_with("http/1.1 502 "), "{head}");
    assert_eq!(running.proxy.upgraded("web", Slot::Blue), 0);
}

async fn websocket(running: &Running, path: &str) -> Ws {
    let url = format!("ws://{}{path}", running.addr);
    let (ws, response) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Sends `text` on `ws` (over HTTP/1.1 or an HTTP/2 stream) and returns the echo's text.
pub(crate) async fn echo<S>(ws: &mut WebSocketStream<S>, text: &str) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text(text)).await.unwrap();
    match ws.next().await {
        Some(Ok(Message::Text(reply))) => reply.to_string(),
        other => panic!("no echo for {text}: {other:?}"),
    }
}

#[tokio::test]
async fn websocket_upgrades_follow_the_weights_at_upgrade_time_and_open_sessions_stay() {
    let blue = backend::start("blue").await;
    let green = backend::start("green").await;
    let running = start(config(vec![route(&[blue.addr], &[green.addr], 10_000)])).await;
    let mut on_blue = websocket(&running, "/ws").await;
    assert_eq!(echo(&mut on_blue, "1").await, "blue: 1");

    let weights = crossfade_proxy::Weights {
        blue: 0,
        green: 10_000,
    };
    running.proxy.set_weights("web", weights).unwrap();
    let mut on_green = websocket(&running, "/ws").await;
    assert_eq!(echo(&mut on_green, "2").await, "green: 2");
    // The session opened before the change stays on blue.
    assert_eq!(echo(&mut on_blue, "3").await, "blue: 3");
    assert_eq!(running.proxy.upgraded("web", Slot::Blue), 1);
    assert_eq!(running.proxy.upgraded("web", Slot::Green), 1);

    on_blue.close(None).await.unwrap();
    while on_blue.next().await.is_some() {}
    eventually("blue's gauge to drop to 0", || {
        running.proxy.upgraded("web", Slot::Blue) == 0
    })
    .await;
    assert_eq!(running.proxy.upgraded("web", Slot::Green), 1);
}

/// What a client saw after the proxy closed its session: the close frame, then a clean end.
pub(crate) async fn expect_going_away<S>(ws: &mut WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match ws.next().await {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(frame.code, CloseCode::Away);
            assert_eq!(frame.reason.as_str(), "going away");
        }
        other => panic!("expected close 1001, got {other:?}"),
    }
    // tungstenite answers the close; the proxy then ends the TCP connection with a FIN. A reset
    // would surface here as an I/O error.
    match ws.next().await {
        None => {}
        other => panic!("expected a clean end after the close, got {other:?}"),
    }
}

#[tokio::test]
async fn close_upgraded_sends_1001_to_the_client_and_a_masked_1001_to_the_backend() {
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
    // tungstenite's server refuses unmasked client frames, so a parsed close proves the mask.
    let closes = blue.closes.lock().unwrap().clone();
    let frame = closes[0].as_ref().expect("a close with a code");
    assert_eq!(frame.code, CloseCode::Away);
    eventually("the gauge to drop to 0", || {
        running.proxy.upgraded("web", Slot::Blue) == 0
    })
    .await;
    assert_eq!(running.proxy.close_upgraded("web", Slot::Blue), Some(0));
    assert_eq!(running.proxy.close_upgraded("nope", Slot::Blue), None);
}

#[tokio::test]
async fn the_close_waits_for_the_end_of_the_frame_in_progress() {
    let blue = backend::start("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    // The handshake by hand, so that the half frame's arrival can be seen: once the client has
    // it, the proxy's tunnel is inside the frame when the close is asked for (and the backend
    // sends the rest only once the proxy's close frame reaches it).
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    let request = "GET /half-frame HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\n\
                   Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut read = Vec::new();
    let half = (4 + HALF_FRAME_TEXT) / 2;
    let head_end = loop {
        let mut buf = [0u8; 2048];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&read));
        read.extend_from_slice(&buf[..n]);
        if let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
            if read.len() >= end + 4 + half {
                break end + 4;
            }
        }
    };
    assert!(
        read.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&read)
    );
    running.proxy.close_upgraded("web", Slot::Blue);
    let frames = read.split_off(head_end);
    let mut ws = WebSocketStream::from_partially_read(stream, frames, Role::Client, None).await;
    match ws.next().await {
        Some(Ok(Message::Text(text))) => assert_eq!(text.len(), HALF_FRAME_TEXT),
        other => panic!("expected the whole text frame first, got {other:?}"),
    }
    expect_going_away(&mut ws).await;
}

#[tokio::test]
async fn close_upgraded_shuts_a_non_websocket_tunnel_down_gracefully() {
    let blue = backend::start("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let (mut stream, head) = raw_upgrade(running.addr, "/raw", "echo/1").await;
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    stream.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    stream.read_exact(&mut back).await.unwrap();

    running.proxy.close_upgraded("web", Slot::Blue);
    // A FIN reads as the end of the stream; a reset would be an error.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "{read:?}");
    eventually("the gauge to drop to 0", || {
        running.proxy.upgraded("web", Slot::Blue) == 0
    })
    .await;
}

#[tokio::test]
async fn the_tester_override_header_picks_the_backend_of_an_upgrade() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let blue = backend::start("blue").await;
    let green = backend::start("green").await;
    let mut web = route(&[blue.addr], &[green.addr], 10_000);
    web.override_header = Some("x-crossfade-backend".into());
    let running = start(config(vec![web])).await;
    let mut request = format!("ws://{}/ws", running.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-crossfade-backend", "green".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(echo(&mut ws, "forced").await, "green: forced");
    let seen = green.seen.lock().unwrap()[0].clone();
    assert!(
        seen.get("x-crossfade-backend").is_none(),
        "override header forwarded"
    );
}

#[tokio::test]
async fn proxy_shutdown_closes_websockets_with_1001_and_returns() {
    let blue = backend::start("blue").await;
    let mut running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let mut ws = websocket(&running, "/ws").await;
    stopping_closes_with_1001_and_returns(&mut running, &mut ws).await;
}

/// Stops the proxy while `ws` (open to blue, over HTTP/1.1 or an HTTP/2 stream) echoes: `ws` gets
/// the close 1001 and a clean end, the proxy's task returns within 5 s, blue's gauge is 0.
pub(crate) async fn stopping_closes_with_1001_and_returns<S>(
    running: &mut Running,
    ws: &mut WebSocketStream<S>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    assert_eq!(echo(ws, "hi").await, "blue: hi");
    running.stop();
    expect_going_away(ws).await;
    let task = &mut running.task;
    let served = tokio::time::timeout(Duration::from_secs(5), task).await;
    assert!(matches!(served, Ok(Ok(Ok(())))), "{served:?}");
    assert_eq!(running.proxy.upgraded("web", Slot::Blue), 0);
}

#[tokio::test]
async fn a_client_that_stops_reading_does_not_hold_the_close_off() {
    let blue = backend::start("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let (_stream, head) = raw_upgrade(running.addr, "/flood", "flood/1").await;
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    // The client reads nothing more: the proxy's write toward it blocks once the buffers are full.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(running.proxy.close_upgraded("web", Slot::Blue), Some(1));
    eventually("the stuck tunnel to be dropped", || {
        running.proxy.upgraded("web", Slot::Blue) == 0
    })
    .await;
}
