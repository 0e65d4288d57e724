//! `/ws`: a WebSocket echo (RFC 6455, served with tokio-tungstenite) whose every text reply names
//! the backend that answered, so a client can tell which version holds its session.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use http::header::{HeaderValue, UPGRADE};
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::handler::{text, ResBody};

/// Who answers: the values of `--version`, `--pool` and `--instance`.
#[derive(Debug)]
pub(super) struct Identity {
    pub(super) version: String,
    pub(super) pool: String,
    pub(super) instance: String,
}

/// Answers a WebSocket opening handshake (RFC 6455 §4.2.1) with 101 and echoes in a task: each
/// text message `m` gets `{"version":..,"pool":..,"instance":..,"echo":m}` back, binary messages
/// come back as they are, and a close is answered with a close.
///
/// A request that is not an upgrade gets 426 with `Upgrade: websocket` (RFC 9110 §15.5.22); an
/// upgrade without a key or with a version other than 13 gets 400 (RFC 6455 §4.2.2).
pub(super) fn upgrade(identity: &Arc<Identity>, mut req: Request<Incoming>) -> Response<ResBody> {
    if !wants_websocket(&req) {
        let mut res = text(
            StatusCode::UPGRADE_REQUIRED,
            "/ws is a WebSocket echo: send an Upgrade: websocket request\n",
        );
        res.headers_mut()
            .insert(UPGRADE, HeaderValue::from_static("websocket"));
        return res;
    }
    let version_13 = req
        .headers()
        .get(SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes);
    let Some(key) = req
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .filter(|_| version_13 == Some(b"13"))
    else {
        return text(
            StatusCode::BAD_REQUEST,
            "a WebSocket handshake needs Sec-WebSocket-Key and Sec-WebSocket-Version: 13\n",
        );
    };
    let accept = derive_accept_key(key.as_bytes());
    let pending = hyper::upgrade::on(&mut req);
    let identity = Arc::clone(identity);
    tokio::spawn(async move {
        match pending.await {
            Ok(upgraded) => echo(&identity, TokioIo::new(upgraded)).await,
            Err(error) => tracing::debug!(%error, "sample-app: websocket upgrade failed"),
        }
    });
    let mut res = text(StatusCode::SWITCHING_PROTOCOLS, "");
    let headers = res.headers_mut();
    headers.remove(http::header::CONTENT_TYPE);
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(accept) = HeaderValue::try_from(accept) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    res
}

/// A GET whose `Connection` lists `upgrade` and whose `Upgrade` is `websocket` (RFC 6455 §4.1).
fn wants_websocket<B>(req: &Request<B>) -> bool {
    let has = |name, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .unwrap_or("")
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    req.method() == Method::GET && has(CONNECTION, "upgrade") && has(UPGRADE, "websocket")
}

async fn echo(identity: &Identity, io: TokioIo<hyper::upgrade::Upgraded>) {
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    while let Some(message) = ws.next().await {
        let reply = match message {
            Ok(Message::Text(text)) => Message::text(reply(identity, text.as_str())),
            Ok(Message::Binary(data)) => Message::Binary(data),
            // Pings are answered by tungstenite itself, closes too (then the stream ends).
            Ok(_) => continue,
            Err(error) => {
                tracing::debug!(%error, "sample-app: websocket ended with an error");
                return;
            }
        };
        if ws.send(reply).await.is_err() {
            return;
        }
    }
}

/// The JSON text of a reply to `message`.
pub(super) fn reply(identity: &Identity, message: &str) -> String {
    serde_json::json!({
        "version": identity.version,
        "pool": identity.pool,
        "instance": identity.instance,
        "echo": message,
    })
    .to_string()
}
