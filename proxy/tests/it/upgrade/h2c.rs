//! Trial 23: `Upgrade: h2c` (the deprecated HTTP/2 upgrade of a cleartext connection, RFC 9113
//! §3.1, which `curl --http2 http://...` offers) is an offer to the proxy, which ignores it: the
//! request is forwarded as an ordinary one, never tunnelled to the backend.

use std::net::SocketAddr;

use crossfade_proxy::config::UpstreamProtocol;
use crossfade_proxy::Slot;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{config, route, start};

/// An h2c-only backend (hyper's HTTP/2 server, as a gRPC server): every request is answered
/// `h2c answer` plus whether it carried an `upgrade` header.
async fn h2c_only_backend() -> SocketAddr {
    crate::answered_early::h2c_text_backend(|request| {
        match request.headers().contains_key("upgrade") {
            true => "h2c answer, upgrade header",
            false => "h2c answer",
        }
    })
    .await
}

/// Sends `curl --http2 http://...`'s request head (`Connection: Upgrade, HTTP2-Settings`,
/// `Upgrade: h2c`) for `path` and reads the answer to the end of the connection.
async fn h2c_upgrade_offer(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade, HTTP2-Settings, close\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .expect("the answer within 10 s")
        .unwrap();
    String::from_utf8_lossy(&answer).to_ascii_lowercase()
}

#[tokio::test]
async fn an_h2c_upgrade_offer_reaches_an_h2c_backend_as_an_ordinary_request() {
    let mut blue = route(&[h2c_only_backend().await], &[], 10_000);
    blue.blue.protocol = UpstreamProtocol::H2c;
    let running = start(config(vec![blue])).await;
    let answer = h2c_upgrade_offer(running.addr, "/call").await;
    assert!(answer.starts_with("http/1.1 200 "), "{answer}");
    assert!(answer.ends_with("\r\n\r\nh2c answer"), "{answer}");
    let stats = running.proxy.backend_stats("web", Slot::Blue).unwrap();
    assert_eq!((stats.requests, stats.errors, stats.upgraded), (1, 0, 0));
}

#[tokio::test]
async fn an_h2c_upgrade_offer_reaches_an_http1_backend_without_its_upgrade_headers() {
    let blue = super::backend::start("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let answer = h2c_upgrade_offer(running.addr, "/ignore").await;
    assert!(answer.starts_with("http/1.1 200 "), "{answer}");
    let seen = blue.seen.lock().unwrap()[0].clone();
    assert!(seen.get("upgrade").is_none(), "{seen:?}");
    assert!(seen.get("http2-settings").is_none(), "{seen:?}");
    assert_eq!(running.proxy.upgraded("web", Slot::Blue), 0);
}
