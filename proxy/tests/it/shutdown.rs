//! The drain of a plain shutdown over real sockets: a keep-alive client that sends its next
//! request as the drain begins gets the whole answer with `Connection: close`, not a reset; an
//! HTTP/2 client gets GOAWAY at once and its stream in flight completes; idle connections are
//! closed cleanly after `drain_grace`, and `serve` returns within `drain_timeout`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crossfade_proxy::ProxyConfig;
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
