//! Upgraded connections to endpoints that a table swap removed (a reload dropping an endpoint or
//! a whole route) are drained: once `drain_timeout` has passed they are closed as at a drain
//! deadline (WebSocket: close 1001 to both peers, then FIN; other tunnels: FIN). Those to
//! endpoints still in the table stay open whatever the weights.

use std::time::Duration;

use crossfade_proxy::{RouteConfig, Slot, Weights};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{backend, echo, expect_going_away, metric_line, raw_upgrade, websocket, Ws};
use crate::support::*;

/// The proxies' drain timeout here: short, since every close waits for it.
const DRAIN: Duration = Duration::from_secs(1);

/// The overall bound on any wait: generous, so a loaded machine does not fail a test.
const PATIENCE: Duration = Duration::from_secs(20);

async fn drain_proxy(routes: Vec<RouteConfig>) -> Running {
    let mut config = config(routes);
    config.drain_timeout = DRAIN;
    start(config).await
}

/// A route `side` for requests with `Host: app.test` (as [`raw_upgrade`] sends), all weight to
/// blue at `endpoint`; declared before `web`, it matches first.
fn side(endpoint: std::net::SocketAddr) -> RouteConfig {
    RouteConfig {
        name: "side".into(),
        hosts: vec!["app.test".into()],
        ..route(&[endpoint], &[], 10_000)
    }
}

/// Polls `check` every 20 ms until it holds, for at most [`PATIENCE`].
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let wait = async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let waited = tokio::time::timeout(PATIENCE, wait).await;
    assert!(waited.is_ok(), "timed out waiting for {what}");
}

async fn closed_going_away(ws: &mut Ws, what: &str) {
    let closed = tokio::time::timeout(PATIENCE, expect_going_away(ws)).await;
    assert!(closed.is_ok(), "{what} was not closed");
}

/// A raw tunnel to `/raw` (an echo) that has carried one exchange.
async fn raw_tunnel(running: &Running) -> TcpStream {
    let (mut stream, head) = raw_upgrade(running.addr, "/raw", "echo/1").await;
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    assert_eq!(raw_echo(&mut stream, b"ping").await, b"ping");
    stream
}

async fn raw_echo(stream: &mut TcpStream, message: &[u8]) -> Vec<u8> {
    stream.write_all(message).await.unwrap();
    let mut back = vec![0u8; message.len()];
    stream.read_exact(&mut back).await.unwrap();
    back
}

/// Waits for the proxy's FIN on `stream`: the end of the stream (a reset would be an error).
async fn fin(stream: &mut TcpStream, what: &str) {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "{what}: {read:?}");
}

/// `crossfade_tunnel_drain_closes_total{route=route,backend=backend}` as `/metrics` shows it.
async fn drain_closes(running: &Running, route: &str, backend: &str) -> u64 {
    let (_, _, text) = get(&client(), &running.admin_url("/metrics")).await;
    let prefix =
        format!("crossfade_tunnel_drain_closes_total{{route=\"{route}\",backend=\"{backend}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Waits until `backend` has received `n` close frames, all 1001.
async fn backend_told_going_away(backend: &backend::UpgradeBackend, n: usize) {
    until("the backend to get its close frames", || {
        backend.closes.lock().unwrap().len() >= n
    })
    .await;
    let closes = backend.closes.lock().unwrap().clone();
    assert!(
        closes
            .iter()
            .all(|f| f.as_ref().map(|f| f.code) == Some(CloseCode::Away)),
        "{closes:?}"
    );
}

#[tokio::test]
async fn a_reload_that_empties_the_old_backend_closes_its_websocket_with_1001() {
    let blue = backend::start("blue").await;
    let green = backend::start("green").await;
    let running = drain_proxy(vec![route(&[blue.addr], &[green.addr], 10_000)]).await;
    let mut ws = websocket(&running, "/ws").await;
    assert_eq!(echo(&mut ws, "before").await, "blue: before");

    // The report's reload: green takes all the weight, blue's endpoints go.
    let reload = running
        .proxy
        .reload_routes(vec![route(&[], &[green.addr], 0)]);
    reload.unwrap();
    closed_going_away(&mut ws, "the websocket to the removed endpoint").await;
    backend_told_going_away(&blue, 1).await;
    until("blue's gauge to drop to 0", || {
        running.proxy.upgraded("web", Slot::Blue) == 0
    })
    .await;
    assert!(metric_line(&running, "blue").await.ends_with(" 0"));
    let mut on_green = websocket(&running, "/ws").await;
    assert_eq!(echo(&mut on_green, "after").await, "green: after");
}

#[tokio::test]
async fn a_reload_that_removes_one_endpoint_closes_only_the_websockets_to_it() {
    let one = backend::start("one").await;
    let two = backend::start("two").await;
    let running = drain_proxy(vec![route(&[one.addr, two.addr], &[], 10_000)]).await;
    let (mut on_one, mut on_two) = (Vec::new(), Vec::new());
    // Round-robin: a few sessions land on each endpoint.
    for i in 0..6 {
        let mut ws = websocket(&running, "/ws").await;
        match echo(&mut ws, &i.to_string()).await {
            reply if reply.starts_with("one: ") => on_one.push(ws),
            reply if reply.starts_with("two: ") => on_two.push(ws),
            reply => panic!("reply from nowhere: {reply}"),
        }
    }
    assert!(
        !on_one.is_empty() && !on_two.is_empty(),
        "all on one endpoint"
    );

    assert_eq!(drain_closes(&running, "web", "blue").await, 0);
    let reload = running
        .proxy
        .reload_routes(vec![route(&[two.addr], &[], 10_000)]);
    reload.unwrap();
    for ws in &mut on_one {
        closed_going_away(ws, "a websocket to the removed endpoint").await;
    }
    // Each websocket to the removed endpoint counted once; the kept ones not at all.
    assert_eq!(
        drain_closes(&running, "web", "blue").await,
        on_one.len() as u64
    );
    backend_told_going_away(&one, on_one.len()).await;
    let kept = on_two.len() as u64;
    until("the gauge to count only the kept sessions", || {
        running.proxy.upgraded("web", Slot::Blue) == kept
    })
    .await;
    for ws in &mut on_two {
        assert_eq!(echo(ws, "still").await, "two: still");
    }
    assert!(
        two.closes.lock().unwrap().is_empty(),
        "a kept session was closed"
    );
    assert_eq!(
        drain_closes(&running, "web", "blue").await,
        on_one.len() as u64
    );
}

#[tokio::test]
async fn weight_changes_and_a_reload_with_the_same_endpoints_leave_websockets_open() {
    let blue = backend::start("blue").await;
    let green = backend::start("green").await;
    let other = backend::start("other").await;
    let web = || route(&[blue.addr], &[green.addr], 10_000);
    let running = drain_proxy(vec![side(other.addr), web()]).await;
    let mut ws = websocket(&running, "/ws").await;
    assert_eq!(echo(&mut ws, "1").await, "blue: 1");
    let mut sentinel = raw_tunnel(&running).await;

    running
        .proxy
        .set_weights("web", Weights::all_to(Slot::Green))
        .unwrap();
    running
        .proxy
        .reload_routes(vec![side(other.addr), web()])
        .unwrap();
    assert_eq!(echo(&mut ws, "2").await, "blue: 2");
    // Removing the other route drains its tunnel after the same drain timeout: once it is
    // closed, any drain the changes above could have started has had its turn.
    running.proxy.reload_routes(vec![web()]).unwrap();
    fin(&mut sentinel, "the tunnel on the removed route").await;

    assert_eq!(echo(&mut ws, "3").await, "blue: 3");
    assert_eq!(running.proxy.upgraded("web", Slot::Blue), 1);
    assert_eq!(drain_closes(&running, "web", "blue").await, 0);
    assert!(metric_line(&running, "blue").await.ends_with(" 1"));
    assert!(
        blue.closes.lock().unwrap().is_empty(),
        "the session was closed"
    );
}

#[tokio::test]
async fn removing_a_route_closes_its_websockets_and_leaves_other_routes_tunnels_open() {
    let blue = backend::start("blue").await;
    let other = backend::start("other").await;
    let running = drain_proxy(vec![side(other.addr), route(&[blue.addr], &[], 10_000)]).await;
    let mut ws = websocket(&running, "/ws").await;
    assert_eq!(echo(&mut ws, "hi").await, "blue: hi");
    let mut kept = raw_tunnel(&running).await;

    running.proxy.reload_routes(vec![side(other.addr)]).unwrap();
    closed_going_away(&mut ws, "the websocket on the removed route").await;
    backend_told_going_away(&blue, 1).await;
    until("the removed route's gauge to drop to 0", || {
        running.proxy.upgraded("web", Slot::Blue) == 0
    })
    .await;
    assert_eq!(raw_echo(&mut kept, b"still").await, b"still");
    assert_eq!(running.proxy.upgraded("side", Slot::Blue), 1);
}
