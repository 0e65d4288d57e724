//! `limits.tunnel_idle_timeout`: a tunnel that moves no byte either way for that long is closed as
//! at a drain deadline (WebSocket: close 1001 to both peers, then FIN; other tunnels: FIN), and
//! counted in `crossfade_tunnel_idle_closes_total`; traffic in either direction keeps it open.

use std::time::Duration;

use crossfade_proxy::{ProxyConfig, Slot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{backend, echo, eventually, expect_going_away, raw_upgrade, websocket};
use crate::support::*;

/// The idle timeout of these tests: long next to a local echo, so that traffic every
/// [`IDLE / 4`] keeps a tunnel open on a loaded machine.
const IDLE: Duration = Duration::from_secs(1);

/// A proxy over one upgrade backend (all weight to blue) with [`IDLE`] as its tunnel idle timeout.
async fn idle_proxy() -> (Running, backend::UpgradeBackend) {
    let blue = backend::start("blue").await;
    let mut config: ProxyConfig = config(vec![route(&[blue.addr], &[], 10_000)]);
    config.limits.tunnel_idle_timeout = IDLE;
    (start(config).await, blue)
}

/// `crossfade_tunnel_idle_closes_total{route="web",backend="blue"}` as `/metrics` shows it.
async fn idle_closes(running: &Running) -> u64 {
    let (_, _, text) = get(&client(), &running.admin_url("/metrics")).await;
    let prefix = "crossfade_tunnel_idle_closes_total{route=\"web\",backend=\"blue\"} ";
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn an_idle_websocket_is_closed_with_1001_to_both_peers_and_counted() {
    let (running, blue) = idle_proxy().await;
    let mut ws = websocket(&running, "/ws").await;
    // Messages every quarter of the timeout, for twice the timeout: the tunnel stays open.
    for i in 0..8 {
        assert_eq!(echo(&mut ws, &i.to_string()).await, format!("blue: {i}"));
        tokio::time::sleep(IDLE / 4).await;
    }
    assert_eq!(idle_closes(&running).await, 0);
    assert_eq!(running.proxy.upgraded("web", Slot::Blue), 1);

    // Silence: closed with 1001 "going away" and a FIN, the backend told the same (masked).
    let closed = tokio::time::timeout(IDLE * 10, expect_going_away(&mut ws)).await;
    assert!(closed.is_ok(), "the idle websocket was not closed");
    eventually("the backend to get a close frame", || {
        !blue.closes.lock().unwrap().is_empty()
    })
    .await;
    let closes = blue.closes.lock().unwrap().clone();
    assert_eq!(closes[0].as_ref().map(|f| f.code), Some(CloseCode::Away));
    eventually("the gauge to drop to 0", || {
        running.proxy.upgraded("web", Slot::Blue) == 0
    })
    .await;
    assert_eq!(idle_closes(&running).await, 1);
}

#[tokio::test]
async fn an_idle_raw_tunnel_gets_a_fin_after_the_idle_timeout() {
    let (running, _blue) = idle_proxy().await;
    let (mut stream, head) = raw_upgrade(running.addr, "/raw", "echo/1").await;
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    for _ in 0..6 {
        stream.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        stream.read_exact(&mut back).await.unwrap();
        tokio::time::sleep(IDLE / 4).await;
    }
    assert_eq!(running.proxy.upgraded("web", Slot::Blue), 1);
    // The client goes silent without closing (a vanished peer): a FIN reads as the end of the
    // stream, a reset would be an error.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(IDLE * 10, stream.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "{read:?}");
    eventually("the gauge to drop to 0", || {
        running.proxy.upgraded("web", Slot::Blue) == 0
    })
    .await;
    assert_eq!(idle_closes(&running).await, 1);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_let_go_after_the_idle_timeout() {
    let (running, _blue) = idle_proxy().await;
    let (_stream, head) = raw_upgrade(running.addr, "/flood", "flood/1").await;
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    // The client reads nothing: once the buffers are full no byte moves, and the tunnel, stuck in
    // a write toward the client, is dropped without anyone calling for a drain.
    let gone = tokio::time::timeout(IDLE * 10, async {
        while running.proxy.upgraded("web", Slot::Blue) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "the stuck tunnel is still open");
    assert_eq!(idle_closes(&running).await, 1);
}
