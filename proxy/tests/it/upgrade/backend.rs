//! A backend that takes upgrades: `/ws` is a WebSocket echo (tokio-tungstenite) whose replies start
//! with the pool name, `/raw` echoes raw bytes after a 101, `/refuse` answers 426, `/ignore` 200, and
//! `/half-frame` sends a text frame in two halves, the second once the proxy's close reaches it, `/flood` writes bytes
//! after its 101 until the connection fails, `/bad-accept` answers a WebSocket handshake 101 with
//! an accept value that does not match its key.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Payload of `/half-frame`'s text message.
pub const HALF_FRAME_TEXT: usize = 1000;

/// A running upgrade backend and what it saw.
#[derive(Clone)]
pub struct UpgradeBackend {
    pub addr: SocketAddr,
    /// Request headers, in arrival order.
    pub seen: Arc<Mutex<Vec<HeaderMap>>>,
    /// Close frames the WebSocket echo received.
    pub closes: Arc<Mutex<Vec<Option<CloseFrame>>>>,
}

/// Starts a backend named `pool` on 127.0.0.1:0.
pub async fn start(pool: &'static str) -> UpgradeBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = UpgradeBackend {
        addr: listener.local_addr().unwrap(),
        seen: Arc::default(),
        closes: Arc::default(),
    };
    let state = backend.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = state.clone();
            let service = service_fn(move |req| answer(pool, state.clone(), req));
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::spawn(connection);
        }
    });
    backend
}

async fn answer(
    pool: &'static str,
    state: UpgradeBackend,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    state.seen.lock().unwrap().push(req.headers().clone());
    let path = req.uri().path().to_owned();
    let mut response = match path.as_str() {
        "/refuse" => {
            let mut r = Response::new(Full::from("upgrade refused"));
            *r.status_mut() = StatusCode::UPGRADE_REQUIRED;
            r.headers_mut().insert(UPGRADE, "other/2".parse().unwrap());
            r
        }
        "/ignore" => Response::new(Full::from("plain answer")),
        _ => {
            let upgrade = hyper::upgrade::on(&mut req);
            let protocol = req.headers()[UPGRADE].clone();
            let mut r = Response::new(Full::default());
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut().insert(UPGRADE, protocol);
            r.headers_mut()
                .insert(CONNECTION, "upgrade".parse().unwrap());
            if let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY) {
                let accept = match path.as_str() {
                    "/bad-accept" => derive_accept_key(b"another key"),
                    _ => derive_accept_key(key.as_bytes()),
                };
                r.headers_mut()
                    .insert(SEC_WEBSOCKET_ACCEPT, accept.parse().unwrap());
            }
            tokio::spawn(async move {
                let Ok(upgraded) = upgrade.await else { return };
                let io = TokioIo::new(upgraded);
                match path.as_str() {
                    "/ws" => ws_echo(pool, io, state).await,
                    "/half-frame" => half_frame(io).await,
                    "/flood" => flood(io).await,
                    "/bye" => bye(io).await,
                    _ => raw_echo(io).await,
                }
            });
            r
        }
    };
    response
        .headers_mut()
        .insert("x-pool", pool.parse().unwrap());
    Ok(response)
}

type Io = TokioIo<hyper::upgrade::Upgraded>;

async fn raw_echo(mut io: Io) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = io.read(&mut buf).await {
        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = io.shutdown().await;
}

async fn ws_echo(pool: &'static str, io: Io, state: UpgradeBackend) {
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    while let Some(Ok(message)) = ws.next().await {
        match message {
            Message::Text(text) => {
                let reply = Message::text(format!("{pool}: {text}"));
                if ws.send(reply).await.is_err() {
                    return;
                }
            }
            Message::Close(frame) => {
                state.closes.lock().unwrap().push(frame);
            }
            _ => {}
        }
    }
}

/// Sends the first half of one text frame of [`HALF_FRAME_TEXT`] bytes, and the second once
/// something comes from the proxy (the close frame it sends when a close is asked for: the other
/// direction is at a frame boundary), so the close is asked for while this frame is in
/// progress; then answers that close frame with a close frame.
async fn half_frame(mut io: Io) {
    let mut frame = vec![0x81, 126];
    frame.extend_from_slice(&(HALF_FRAME_TEXT as u16).to_be_bytes());
    frame.extend(std::iter::repeat_n(b'x', HALF_FRAME_TEXT));
    let (head, tail) = frame.split_at(frame.len() / 2);
    if io.write_all(head).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 1024];
    let Ok(n @ 1..) = io.read(&mut buf).await else {
        return;
    };
    buf.truncate(n);
    if io.write_all(tail).await.is_err() {
        return;
    }
    let mut ws = WebSocketStream::from_partially_read(io, buf, Role::Server, None).await;
    while let Some(Ok(_)) = ws.next().await {}
}

/// Says `bye` and ends its sending side first (a FIN), then reads what the client still sends
/// until the client ends its side: a protocol that half-closes, as a tunnel may carry.
async fn bye(mut io: Io) {
    if io.write_all(b"bye").await.is_err() || io.shutdown().await.is_err() {
        return;
    }
    let mut buf = [0u8; 1024];
    while let Ok(n) = io.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// Writes zeros until a write fails: a client that does not read fills every buffer on the way.
async fn flood(mut io: Io) {
    let chunk = vec![0u8; 64 * 1024];
    while io.write_all(&chunk).await.is_ok() {}
}
