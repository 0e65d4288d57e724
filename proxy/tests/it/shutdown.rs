//! The drain of a plain shutdown over real sockets: a keep-alive client that sends its next
//! request as the drain begins gets the whole answer with `Connection: close`, not a reset; an
//! HTTP/2 client gets GOAWAY at once and its stream in flight completes; idle connections are
//! closed cleanly after `drain_grace`, and `serve` returns within `drain_timeout`. A response in
//! flight as a drain (a shutdown's or a binary upgrade's handover) begins is the connection's
//! last only if it can still say `Connection: close`; busy keep-alive clients lose no request.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crossfade_proxy::ProxyConfig;
use http::Request;
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::h2raw::{RawH2, DATA, END_STREAM, GOAWAY, HEADERS, PING};
use crate::limits::wait_for;
use crate::support::*;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n";

/// A proxy over one blue backend with `drain_grace` `grace` (and the support's 5 s drain timeout).
async fn proxy(grace: Duration) -> (Backend, Running) {
    let blue = backend("blue").await;
    let config = ProxyConfig {
        drain_grace: grace,
        ..config(vec![route(&[blue.addr], &[], 10_000)])
    };
    let running = start(config).await;
    (blue, running)
}

/// Reads one HTTP/1.1 response off `stream` (its body has a `Content-Length`); returns the head
/// (lowercased) and the body.
async fn response(stream: &mut TcpStream) -> (String, String) {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .expect("a response, not a reset");
        assert!(n > 0, "closed before a whole response: {bytes:?}");
        bytes.extend_from_slice(&chunk[..n]);
        let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&bytes[..end]).to_lowercase();
        let length = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .map(|n| n.trim().parse::<usize>().unwrap())
            .expect("a content-length");
        if bytes.len() >= end + 4 + length {
            let body = String::from_utf8_lossy(&bytes[end + 4..end + 4 + length]).into_owned();
            return (head, body);
        }
    }
}

/// Resolves once the listener is closed: the accept loop has stopped and the drain has begun
/// (both happen in the same poll of the serving task).
async fn drain_begun(running: &Running) {
    let addr = running.addr;
    wait_for(|| async move { TcpStream::connect(addr).await.is_err() }).await;
}

/// Waits for `serve` to return, at most the drain timeout.
async fn served(running: &mut Running) {
    tokio::time::timeout(Duration::from_secs(5), &mut running.task)
        .await
        .expect("serve returns within the drain timeout")
        .unwrap()
        .unwrap();
}

/// The c09 flake: a keep-alive connection idle when the shutdown begins is not closed at once;
/// the request its client sends then gets its whole answer, saying `Connection: close`, and the
/// connection then ends with a FIN.
#[tokio::test]
async fn a_keep_alive_request_sent_as_the_shutdown_begins_gets_its_answer_with_connection_close() {
    let (_blue, mut running) = proxy(Duration::from_secs(2)).await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    stream.write_all(REQUEST).await.unwrap();
    let (head, body) = response(&mut stream).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    assert_eq!(body, "blue");

    running.stop();
    drain_begun(&running).await;
    stream.write_all(REQUEST).await.unwrap();
    let (head, body) = response(&mut stream).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert_eq!(body, "blue");
    let mut rest = Vec::new();
    let end = stream.read_to_end(&mut rest).await;
    assert!(
        matches!(end, Ok(0)),
        "a clean close after the answer: {end:?} {rest:?}"
    );
    served(&mut running).await;
}

/// Clients that stay idle (a keep-alive connection after its request, one that never sent a
/// byte) are closed with a FIN once the grace passes, and `serve` returns within the drain
/// timeout.
#[tokio::test]
async fn idle_connections_are_closed_cleanly_after_the_grace_and_the_shutdown_ends() {
    let (_blue, mut running) = proxy(Duration::from_millis(300)).await;
    let mut kept = TcpStream::connect(running.addr).await.unwrap();
    kept.write_all(REQUEST).await.unwrap();
    let (head, _) = response(&mut kept).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let mut silent = TcpStream::connect(running.addr).await.unwrap();
    wait_for(|| async {
        let (_, _, text) = get(&client(), &running.admin_url("/metrics")).await;
        text.contains("\ncrossfade_client_connections 2\n")
    })
    .await;

    running.stop();
    for stream in [&mut kept, &mut silent] {
        let mut rest = Vec::new();
        let end = stream.read_to_end(&mut rest).await;
        assert!(matches!(end, Ok(0)), "closed with a FIN: {end:?} {rest:?}");
    }
    served(&mut running).await;
}

/// An HTTP/2 connection with a stream in flight gets GOAWAY as the drain begins (well before its
/// response, and before the 2 s grace), the stream then completes, and the final GOAWAY names it
/// as the last one processed (RFC 9113 §6.8).
#[tokio::test]
async fn an_http2_client_gets_goaway_at_once_and_its_stream_in_flight_completes() {
    let (blue, mut running) = proxy(Duration::from_secs(2)).await;
    let mut h2 = RawH2::connect(running.addr).await;
    h2.get_path(1, "/slow/600").await;
    wait_for(|| async { blue.hits.load(Ordering::SeqCst) == 1 }).await;

    running.stop();
    let mut frames = Vec::new();
    let read_all = async {
        while let Some(frame) = h2.frame().await {
            if frame.kind == PING && frame.flags == 0 {
                h2.pong(&frame).await;
            }
            frames.push(frame);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_all)
        .await
        .expect("the connection closes after its stream");
    let first_goaway = frames.iter().position(|f| f.kind == GOAWAY);
    let first_goaway = first_goaway.unwrap_or_else(|| panic!("no GOAWAY: {frames:?}"));
    let answer = frames
        .iter()
        .position(|f| f.kind == HEADERS && f.stream == 1)
        .unwrap_or_else(|| panic!("no response on stream 1: {frames:?}"));
    assert!(
        first_goaway < answer,
        "GOAWAY after the response: {frames:?}"
    );
    let ended = frames.iter().any(|f| {
        (f.kind == DATA || f.kind == HEADERS) && f.stream == 1 && f.flags & END_STREAM != 0
    });
    assert!(ended, "stream 1 did not complete: {frames:?}");
    let last = frames.iter().rev().find(|f| f.kind == GOAWAY).unwrap();
    assert_eq!(&last.payload[..8], &[0, 0, 0, 1, 0, 0, 0, 0], "{last:?}");
    served(&mut running).await;
}

/// A backend whose answers the test paces (trial 11 L2): at `/fed` it answers at once with
/// `Content-Length: 3` and sends the body's bytes as the test feeds them; at `/held` it waits for
/// the first bytes fed before it answers at all (so the proxy has not written the head yet);
/// at `/drip` it sends three bytes 10 ms apart by itself (a response mostly in flight with its
/// head out); anything else is `ok` at once. For each `/fed` and `/held` request, the sender that
/// feeds it comes out of the returned receiver once the request has arrived.
async fn paced_backend() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<tokio::sync::mpsc::Sender<bytes::Bytes>>,
) {
    use tokio::sync::mpsc;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (feeds, fed) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let feeds = feeds.clone();
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let feeds = feeds.clone();
                async move {
                    let path = request.uri().path().to_owned();
                    let (first, rx) = match path.as_str() {
                        "/fed" | "/held" => {
                            let (tx, mut rx) = mpsc::channel(4);
                            feeds.send(tx).unwrap();
                            let first = match path.as_str() {
                                "/held" => rx.recv().await,
                                _ => None,
                            };
                            (first, rx)
                        }
                        "/drip" => {
                            let (tx, rx) = mpsc::channel(4);
                            tokio::spawn(async move {
                                for byte in [b"x", b"y", b"z"] {
                                    tokio::time::sleep(Duration::from_millis(10)).await;
                                    let _ = tx.send(bytes::Bytes::from_static(byte)).await;
                                }
                            });
                            (None, rx)
                        }
                        _ => {
                            let (_, rx) = mpsc::channel(1);
                            (Some(bytes::Bytes::from_static(b"ok")), rx)
                        }
                    };
                    let len = if path == "/" { 2 } else { 3 };
                    let body = Fed { first, rx, len };
                    Ok::<_, std::convert::Infallible>(http::Response::new(body))
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::spawn(connection);
        }
    });
    (addr, fed)
}

/// A body of exactly `len` bytes: `first`, then what comes through `rx`.
struct Fed {
    first: Option<bytes::Bytes>,
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    len: u64,
}

impl http_body::Body for Fed {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        if let Some(first) = self.first.take() {
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(first))));
        }
        self.rx
            .poll_recv(cx)
            .map(|bytes| bytes.map(|b| Ok(http_body::Frame::data(b))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.len)
    }
}

/// A proxy over the paced backend, with a grace and a drain timeout long enough for any load.
async fn paced_proxy() -> (
    Running,
    tokio::sync::mpsc::UnboundedReceiver<tokio::sync::mpsc::Sender<bytes::Bytes>>,
) {
    let (addr, fed) = paced_backend().await;
    let config = ProxyConfig {
        drain_grace: Duration::from_secs(10),
        drain_timeout: Duration::from_secs(20),
        ..config(vec![route(&[addr], &[], 10_000)])
    };
    (start(config).await, fed)
}

/// The drain of a shutdown (`stop`), or of a binary upgrade's handover (`hand_over`, then `stop`).
fn drain(running: &mut Running, handover: bool) {
    if handover {
        running.proxy.hand_over();
    }
    running.stop();
}

/// Waits for `serve` to return, within the paced proxy's drain timeout (and some).
async fn drained(running: &mut Running) {
    tokio::time::timeout(Duration::from_secs(30), &mut running.task)
        .await
        .expect("serve returns within the drain timeout")
        .unwrap()
        .unwrap();
}

/// One client's side of a keep-alive connection: what it read and has not used yet.
struct KeepAlive {
    stream: TcpStream,
    read: Vec<u8>,
}

impl KeepAlive {
    async fn connect(addr: std::net::SocketAddr) -> KeepAlive {
        let stream = TcpStream::connect(addr).await.unwrap();
        KeepAlive {
            stream,
            read: Vec::new(),
        }
    }

    async fn get(&mut self, path: &str) {
        let request = format!("GET {path} HTTP/1.1\r\nHost: shop.test\r\n\r\n");
        self.stream.write_all(request.as_bytes()).await.unwrap();
    }

    /// Reads more; `Err` when the connection ended (a FIN or a reset).
    async fn more(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk).await {
            Ok(0) => Err("closed".into()),
            Ok(n) => {
                self.read.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// The next response head (lowercased), or how the connection ended before it.
    async fn head(&mut self) -> Result<String, String> {
        loop {
            if let Some(end) = self.read.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.read[..end]).to_lowercase();
                self.read.drain(..end + 4);
                return Ok(head);
            }
            self.more().await?;
        }
    }

    /// The next `n` body bytes.
    async fn body(&mut self, n: usize) -> Result<Vec<u8>, String> {
        while self.read.len() < n {
            self.more().await?;
        }
        Ok(self.read.drain(..n).collect())
    }

    /// Whether the connection then ends cleanly (a FIN, nothing more).
    async fn ends(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(self.stream.read_to_end(&mut rest).await, Ok(0)) && self.read.is_empty()
    }
}

/// Trial 11 L2: the response in flight as the drain begins has its head out already, without
/// `Connection: close`. The connection is not closed after it: the client's next request on it
/// gets its answer, saying `Connection: close`, and the connection then ends with a FIN.
async fn a_response_whose_head_went_out_before_the_drain_is_not_the_last(handover: bool) {
    let (mut running, mut fed) = paced_proxy().await;
    let mut client = KeepAlive::connect(running.addr).await;
    client.get("/fed").await;
    let feed = fed.recv().await.unwrap();
    feed.send(bytes::Bytes::from_static(b"a")).await.unwrap();
    let head = client.head().await.unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    assert_eq!(client.body(1).await.unwrap(), b"a");

    drain(&mut running, handover);
    drain_begun(&running).await;
    // The connection's task forwards this byte after the drain asked (one thread: the drain's
    // stage was sent before the listener was seen closed), and looks at the drain as it does.
    feed.send(bytes::Bytes::from_static(b"b")).await.unwrap();
    assert_eq!(client.body(1).await.unwrap(), b"b");
    feed.send(bytes::Bytes::from_static(b"c")).await.unwrap();
    drop(feed);
    assert_eq!(client.body(1).await.unwrap(), b"c");

    client.get("/").await;
    let head = client.head().await.unwrap_or_else(|end| {
        panic!("the request after a response without connection: close was lost ({end})")
    });
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert_eq!(client.body(2).await.unwrap(), b"ok");
    assert!(client.ends().await, "a clean close after the answer");
    drained(&mut running).await;
}

#[tokio::test]
async fn a_shutdown_serves_the_next_request_after_a_response_whose_head_went_out_before_it() {
    a_response_whose_head_went_out_before_the_drain_is_not_the_last(false).await;
}

#[tokio::test]
async fn a_handover_serves_the_next_request_after_a_response_whose_head_went_out_before_it() {
    a_response_whose_head_went_out_before_the_drain_is_not_the_last(true).await;
}

/// The response in flight as the drain begins has no head out yet (the backend has not
/// answered): it says `Connection: close`, and the connection ends after it.
async fn a_response_not_begun_as_the_drain_begins_is_the_last(handover: bool) {
    let (mut running, mut fed) = paced_proxy().await;
    let mut client = KeepAlive::connect(running.addr).await;
    client.get("/held").await;
    let feed = fed.recv().await.unwrap();

    drain(&mut running, handover);
    drain_begun(&running).await;
    feed.send(bytes::Bytes::from_static(b"abc")).await.unwrap();
    drop(feed);
    let head = client.head().await.unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert_eq!(client.body(3).await.unwrap(), b"abc");
    assert!(client.ends().await, "a clean close after the answer");
    drained(&mut running).await;
}

#[tokio::test]
async fn a_response_not_begun_as_a_shutdown_or_handover_begins_says_connection_close() {
    a_response_not_begun_as_the_drain_begins_is_the_last(false).await;
    a_response_not_begun_as_the_drain_begins_is_the_last(true).await;
}

/// One busy keep-alive client: `GET /drip` again as soon as each answer is whole, until an
/// answer says `Connection: close`; then the connection must end. Counts its answers in
/// `answered`. `Err` names the request that got no answer and what the answer before it said.
async fn busy_client(
    addr: std::net::SocketAddr,
    answered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Result<(), String> {
    let mut client = KeepAlive::connect(addr).await;
    let (mut previous, mut n) = (String::from("none"), 0);
    loop {
        n += 1;
        client.get("/drip").await;
        let head = match client.head().await {
            Ok(head) => head,
            Err(end) => return Err(format!("request {n} lost ({end}); previous: {previous}")),
        };
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let body = client.body(3).await;
        assert_eq!(body.as_deref(), Ok(&b"xyz"[..]), "request {n}: {head}");
        answered.fetch_add(1, Ordering::SeqCst);
        if head.contains("\r\nconnection: close") {
            return match client.ends().await {
                true => Ok(()),
                false => Err(format!("no clean close after request {n}'s answer")),
            };
        }
        previous = head;
    }
}

/// Trial 11 L2 under load: keep-alive clients that always have a request in flight (mostly a
/// response whose head is out) through a drain: every request gets its answer, and each
/// connection ends only after an answer that said `Connection: close`.
async fn busy_keep_alive_clients_through_a_drain(handover: bool) {
    const CLIENTS: usize = 4;
    let (mut running, _fed) = paced_proxy().await;
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(busy_client(running.addr, answered.clone())))
        .collect();
    wait_for(|| async { answered.load(Ordering::SeqCst) >= 3 * CLIENTS }).await;

    drain(&mut running, handover);
    for client in clients {
        let ended = tokio::time::timeout(Duration::from_secs(30), client).await;
        let ended = ended.expect("each client's connection ends within the drain");
        ended.unwrap().unwrap();
    }
    drained(&mut running).await;
}

#[tokio::test]
async fn busy_keep_alive_clients_lose_no_request_through_a_shutdown() {
    busy_keep_alive_clients_through_a_drain(false).await;
}

#[tokio::test]
async fn busy_keep_alive_clients_lose_no_request_through_a_handover() {
    busy_keep_alive_clients_through_a_drain(true).await;
}
