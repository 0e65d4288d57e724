//! Protocol abuse that internet-facing HTTP servers have been hit by, each attacked over a real
//! socket with raw HTTP/2 frames (RFC 9113 §4.1) or raw HTTP/1.1 bytes, where the `h2` client
//! cannot produce the abuse: HTTP/2 Rapid Reset (CVE-2023-44487), the CONTINUATION flood
//! (CVE-2024-27316 family), SETTINGS and PING floods from a client that reads nothing, more
//! concurrent streams than advertised (RFC 9113 §5.1.2), and HTTP/1.1 framing abuse that
//! `hostile.rs` does not cover. Each checks what reaches the backend and how the connection ends,
//! and that other clients are still served.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use http::StatusCode;

use crate::support::{backend, config, get, h2c_client, route, start, Running, CHUNKED_LEN};

/// Frame types (RFC 9113 §6).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

/// Flags (RFC 9113 §6.1, §6.2).
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// Error codes (RFC 9113 §7).
const CANCEL: u32 = 0x8;
const REFUSED_STREAM: u32 = 0x7;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// SETTINGS parameters (RFC 9113 §6.5.2).
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

/// One frame's bytes.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// A SETTINGS frame's payload with `(id, value)` pairs.
fn settings(pairs: &[(u16, u32)]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (id, value) in pairs {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    payload
}

/// The HPACK block of `GET path` for `shop.test` (static-table indexes and literals without
/// indexing, RFC 7541 §6.1, §6.2.2): stateless, so any number of them decode alike.
fn get_block(path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x04, u8::try_from(path.len()).unwrap()];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, 9]);
    block.extend_from_slice(b"shop.test");
    block
}

/// One header field `name: value` as a literal without indexing with a new name (RFC 7541
/// §6.2.2), for values shorter than 127 bytes.
fn literal(name: &str, value: &[u8]) -> Vec<u8> {
    let mut field = vec![0x00, u8::try_from(name.len()).unwrap()];
    field.extend_from_slice(name.as_bytes());
    field.push(u8::try_from(value.len()).unwrap());
    field.extend_from_slice(value);
    field
}

/// A frame as read.
#[derive(Debug)]
struct Frame {
    kind: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Frame {
    /// The error code of a GOAWAY (after the last stream id) or RST_STREAM.
    fn error_code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }
}

/// The next frame, or `None` once the connection is closed (EOF or reset).
async fn read_frame(read: &mut OwnedReadHalf) -> Option<Frame> {
    let mut head = [0u8; 9];
    read.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    read.read_exact(&mut payload).await.ok()?;
    Some(Frame {
        kind: head[3],
        stream,
        payload,
    })
}

/// Every frame until the proxy closes the connection; panics with `what` if it is still open
/// after `bound` (a bound on a hang, not a timing assertion).
async fn frames_until_close(read: &mut OwnedReadHalf, bound: Duration, what: &str) -> Vec<Frame> {
    let mut frames = Vec::new();
    let all = async {
        while let Some(frame) = read_frame(read).await {
            frames.push(frame);
        }
    };
    if tokio::time::timeout(bound, all).await.is_err() {
        panic!("{what}: still open after {bound:?}");
    }
    frames
}

/// Connects with the HTTP/2 preface and a SETTINGS frame of `pairs`, split into halves.
async fn connect(addr: SocketAddr, pairs: &[(u16, u32)]) -> (OwnedReadHalf, OwnedWriteHalf) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &settings(pairs)));
    tcp.write_all(&hello).await.unwrap();
    tcp.into_split()
}

/// Writes `chunks()` until the proxy stops taking them (an error: it closed) or `cap` bytes went
/// out; the bytes written, and whether the proxy closed first.
fn spawn_writer(
    mut write: OwnedWriteHalf,
    cap: usize,
    mut chunk: impl FnMut(usize) -> Vec<u8> + Send + 'static,
) -> tokio::task::JoinHandle<(usize, bool)> {
    tokio::spawn(async move {
        let mut written = 0;
        let mut i = 0;
        while written < cap {
            let bytes = chunk(i);
            i += 1;
            if write.write_all(&bytes).await.is_err() {
                return (written, true);
            }
            written += bytes.len();
        }
        // Keep the socket open until the reader is done.
        std::future::pending::<()>().await;
        (written, false)
    })
}

/// The proxy still serves a well-behaved h2c client.
async fn still_serves(running: &Running) {
    let (status, _, body) = get(&h2c_client(), &running.url("/")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// HTTP/2 Rapid Reset (CVE-2023-44487): streams opened and reset at once, thousands in a row,
/// each for a request the backend takes seconds to answer. The proxy ends the connection with
/// GOAWAY `ENHANCE_YOUR_CALM` after a bounded number, the backend sees a bounded number of
/// requests, and other clients are still served.
#[tokio::test]
async fn rapid_reset_gets_goaway_and_a_bounded_number_of_requests_reach_the_backend() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let (mut read, write) = connect(running.addr, &[]).await;
    let block = get_block("/slow/3000");
    const STREAMS: usize = 20_000;
    let writer = spawn_writer(write, usize::MAX, move |i| {
        if i >= STREAMS {
            return Vec::new();
        }
        let id = u32::try_from(2 * i + 1).unwrap();
        let mut pair = frame(HEADERS, END_STREAM | END_HEADERS, id, &block);
        pair.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
        pair
    });
    let frames = frames_until_close(&mut read, Duration::from_secs(20), "rapid reset").await;
    writer.abort();
    let goaway = frames.iter().find(|f| f.kind == GOAWAY);
    let hits = blue.hits.load(Ordering::SeqCst);
    eprintln!("rapid reset: goaway {goaway:?}, backend requests {hits}");
    let goaway = goaway.expect("a GOAWAY");
    assert_eq!(goaway.error_code(), ENHANCE_YOUR_CALM, "{goaway:?}");
    assert!(hits <= 200, "{hits} requests reached the backend");
    still_serves(&running).await;
}

/// The frame that makes the proxy reset stream `id`.
type Provoke = fn(u32) -> Vec<u8>;

/// "MadeYouReset" (CVE-2025-8671): the client makes the proxy reset each stream itself, so no
/// RST_STREAM of the client's counts: a WINDOW_UPDATE of increment 0 on the stream (RFC 9113
/// §6.9), or DATA on a stream it already ended (§5.1, half-closed). h2 (0.4.20) takes both as
/// connection errors: GOAWAY `PROTOCOL_ERROR` at the first, no request reaches the backend. (Were
/// they stream errors, h2's `max_local_error_reset_streams`, 1024 per connection, and the
/// proxy's premature resets would bound them.) The bound asserted is that second line.
#[tokio::test]
async fn streams_the_client_makes_the_proxy_reset_end_the_connection_after_a_bound() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let block = get_block("/slow/3000");
    let vectors: [(&str, Provoke); 2] = [
        ("WINDOW_UPDATE 0", |id| {
            frame(WINDOW_UPDATE, 0, id, &0u32.to_be_bytes())
        }),
        ("DATA after END_STREAM", |id| frame(DATA, 0, id, b"x")),
    ];
    for (what, provoke) in vectors {
        let (mut read, write) = connect(running.addr, &[]).await;
        let block = block.clone();
        const STREAMS: usize = 20_000;
        let writer = spawn_writer(write, usize::MAX, move |i| {
            if i >= STREAMS {
                return Vec::new();
            }
            let id = u32::try_from(2 * i + 1).unwrap();
            let mut pair = frame(HEADERS, END_STREAM | END_HEADERS, id, &block);
            pair.extend(provoke(id));
            pair
        });
        let frames = frames_until_close(&mut read, Duration::from_secs(20), what).await;
        writer.abort();
        let goaway = frames.iter().find(|f| f.kind == GOAWAY);
        let hits = blue.hits.load(Ordering::SeqCst);
        eprintln!("{what}: goaway {goaway:?}, backend requests {hits}");
        let goaway = goaway.unwrap_or_else(|| panic!("{what}: a GOAWAY"));
        assert_ne!(goaway.error_code(), 0, "{what}: an error code");
        assert!(hits <= 1_100, "{what}: {hits} requests reached the backend");
    }
    still_serves(&running).await;
}

/// Waits until `check` holds, looking every 5 ms; panics with `what` after `bound` (a bound on
/// a hang, not a timing assertion).
async fn until(bound: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let wait = async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    if tokio::time::timeout(bound, wait).await.is_err() {
        panic!("{what}: not within {bound:?}");
    }
}

/// Rapid Reset's variant that h2's own limit (resets of streams not yet accepted) does not see:
/// each round opens 100 streams, waits until their requests reached the backend, and only then
/// resets them all, so every stream was accepted and forwarded. Round after round the backend
/// gets requests at the rate of round trips, not at the rate it answers them. The proxy ends the
/// connection after a bounded number of such premature resets (Envoy's
/// `premature_reset_total_stream_count`, nginx's and Go's per-connection handler bounds).
#[tokio::test]
async fn streams_reset_after_they_reached_the_backend_end_the_connection_after_a_bound() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let (mut read, mut write) = connect(running.addr, &[]).await;
    let closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let closed = closed.clone();
        tokio::spawn(async move {
            let mut frames = Vec::new();
            while let Some(frame) = read_frame(&mut read).await {
                frames.push(frame);
            }
            closed.store(true, Ordering::SeqCst);
            frames
        })
    };
    let block = get_block("/slow/5000");
    const ROUND: usize = 100;
    const ROUNDS: usize = 30;
    let mut next = 1u32;
    for round in 0..ROUNDS {
        let first = next;
        let mut heads = Vec::new();
        for _ in 0..ROUND {
            heads.extend(frame(HEADERS, END_STREAM | END_HEADERS, next, &block));
            next += 2;
        }
        if write.write_all(&heads).await.is_err() {
            break;
        }
        let expected = (round + 1) * ROUND;
        until(Duration::from_secs(10), "the round's requests", || {
            closed.load(Ordering::SeqCst) || blue.hits.load(Ordering::SeqCst) >= expected
        })
        .await;
        let mut resets = Vec::new();
        for id in (first..next).step_by(2) {
            resets.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
        }
        if closed.load(Ordering::SeqCst) || write.write_all(&resets).await.is_err() {
            break;
        }
    }
    let frames = tokio::time::timeout(Duration::from_secs(10), reader).await;
    let hits = blue.hits.load(Ordering::SeqCst);
    eprintln!("accepted-then-reset: backend requests {hits}");
    let frames = frames.expect("the proxy closes the connection").unwrap();
    let goaway = frames.iter().find(|f| f.kind == GOAWAY).expect("a GOAWAY");
    assert_eq!(goaway.error_code(), ENHANCE_YOUR_CALM, "{goaway:?}");
    // `h2_max_premature_resets` (500) and the round in flight when it was passed.
    assert!(hits <= 700, "{hits} requests reached the backend");
    let calm_downs = crate::limits::metric(&running, "crossfade_h2_calm_downs_total").await;
    assert_eq!(calm_downs, Some(1.0), "counted");
    still_serves(&running).await;
}

/// A request whose header block never ends (CVE-2024-27316 family): HEADERS without
/// END_HEADERS, then CONTINUATION after CONTINUATION, as many small frames (h2's count of
/// CONTINUATION frames) or as few full ones (the header list's size). The proxy closes the
/// connection with GOAWAY `ENHANCE_YOUR_CALM` once the block needs more frames than
/// `limits.max_header_bytes` allows (h2's CONTINUATION count, RFC 9113 §6.10), rather than
/// buffering it; nothing reaches the backend.
#[tokio::test]
async fn a_continuation_flood_is_cut_off_at_the_header_limit() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    for (what, per_frame) in [("small frames", 1usize), ("full frames", 140)] {
        let (mut read, write) = connect(running.addr, &[]).await;
        let field = literal("x-flood", &[b'v'; 100]);
        let writer = spawn_writer(write, 64 << 20, move |i| {
            let block: Vec<u8> = field.repeat(per_frame);
            match i {
                0 => frame(HEADERS, END_STREAM, 1, &get_block("/")),
                _ => frame(CONTINUATION, 0, 1, &block),
            }
        });
        let frames = frames_until_close(&mut read, Duration::from_secs(10), what).await;
        // What the client still sends after the GOAWAY is read and dropped by the lingering
        // close (`limits.lingering_max_bytes`), not parsed.
        writer.abort();
        let goaway = frames.iter().find(|f| f.kind == GOAWAY);
        eprintln!("{what}: goaway {goaway:?}");
        let goaway = goaway.unwrap_or_else(|| panic!("{what}: a GOAWAY"));
        assert_eq!(goaway.error_code(), ENHANCE_YOUR_CALM, "{what}: {goaway:?}");
    }
    assert_eq!(blue.hits.load(Ordering::SeqCst), 0);
    still_serves(&running).await;
}

/// SETTINGS and PING floods from a client that never reads: each needs an answer (an ACK,
/// RFC 9113 §6.5.3, §6.7), and a proxy that read on and queued them would grow without bound.
/// h2 answers one at a time and stops reading while the answer cannot be written, so the
/// client's writes block (it cannot send its 64 MiB), and the connection, with no stream open,
/// is closed by the idle watch (`limits.header_read_timeout`).
#[tokio::test]
async fn settings_and_ping_floods_from_a_client_that_never_reads_are_bounded_and_closed() {
    let blue = backend("blue").await;
    let mut config = config(vec![route(&[blue.addr], &[], 10_000)]);
    config.limits.header_read_timeout = Duration::from_millis(500);
    let running = start(config).await;
    for (what, unit) in [
        ("PING", frame(PING, 0, 0, &[7; 8])),
        (
            "SETTINGS",
            frame(
                SETTINGS,
                0,
                0,
                &settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 65_535)]),
            ),
        ),
    ] {
        let (read, write) = connect(running.addr, &[]).await;
        let batch = unit.repeat(4096);
        let writer = spawn_writer(write, 64 << 20, move |_| batch.clone());
        let (written, closed) = tokio::time::timeout(Duration::from_secs(20), writer)
            .await
            .unwrap_or_else(|_| panic!("{what}: the flood neither closed nor finished"))
            .unwrap();
        eprintln!("{what}: {written} bytes written before the close");
        assert!(closed, "{what}: the proxy took all {written} bytes");
        drop(read);
    }
    still_serves(&running).await;
}

/// The `SETTINGS_MAX_CONCURRENT_STREAMS` the proxy at `addr` advertises (RFC 9113 §6.5.2), read
/// off its first SETTINGS; the connection is handed back with the SETTINGS acknowledged, so the
/// bound is in force (§6.5.3).
async fn advertised_streams(addr: SocketAddr) -> (u32, OwnedReadHalf, OwnedWriteHalf) {
    let (mut read, mut write) = connect(addr, &[]).await;
    let first = read_frame(&mut read).await.expect("the proxy's SETTINGS");
    assert_eq!(first.kind, SETTINGS);
    let advertised = first
        .payload
        .chunks(6)
        .find(|p| u16::from_be_bytes([p[0], p[1]]) == SETTINGS_MAX_CONCURRENT_STREAMS)
        .map(|p| u32::from_be_bytes([p[2], p[3], p[4], p[5]]))
        .expect("SETTINGS_MAX_CONCURRENT_STREAMS advertised");
    write
        .write_all(&frame(SETTINGS, 0x1, 0, &[]))
        .await
        .unwrap();
    (advertised, read, write)
}

/// SETTINGS_MAX_CONCURRENT_STREAMS (RFC 9113 §5.1.2, §6.5.2): the proxy advertises
/// `limits.h2_max_concurrent_streams` (by default 128, nginx's; it was hyper's 200), and streams
/// opened past it are refused with RST_STREAM REFUSED_STREAM (§8.7: never processed, safe to
/// retry) without reaching the backend; within it `limits.max_requests` still holds (503).
#[tokio::test]
async fn streams_past_the_advertised_maximum_are_refused_and_reach_no_backend() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let (advertised, _, _) = advertised_streams(running.addr).await;
    assert_eq!(advertised, 128, "the default");
    let mut config = config(vec![route(&[blue.addr], &[], 10_000)]);
    config.limits.h2_max_concurrent_streams = 10;
    config.limits.max_requests = 5;
    let running = start(config).await;
    let (advertised, mut read, mut write) = advertised_streams(running.addr).await;
    assert_eq!(advertised, 10, "the configured bound");
    let extra = 20u32;
    let block = get_block("/slow/3000");
    let mut heads = Vec::new();
    for i in 0..advertised + extra {
        heads.extend(frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, &block));
    }
    write.write_all(&heads).await.unwrap();
    let (mut refused, mut shed) = (Vec::new(), 0);
    let all = async {
        while refused.len() < extra as usize || shed < 5 {
            let frame = read_frame(&mut read).await.expect("open");
            if frame.kind == RST_STREAM {
                assert_eq!(frame.error_code(), REFUSED_STREAM, "{frame:?}");
                refused.push(frame.stream);
            }
            if frame.kind == DATA && String::from_utf8_lossy(&frame.payload).contains("overloaded")
            {
                shed += 1;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), all)
        .await
        .expect("the extra streams refused, the ones over max_requests shed");
    assert!(
        refused.iter().all(|id| *id > 2 * advertised),
        "only streams past the bound: {refused:?}"
    );
    until(
        Duration::from_secs(10),
        "the requests within max_requests",
        || blue.hits.load(Ordering::SeqCst) == 5,
    )
    .await;
    let shed = crate::limits::metric(&running, r#"crossfade_shed_total{reason="requests"}"#).await;
    assert_eq!(shed, Some(5.0));
    assert_eq!(blue.hits.load(Ordering::SeqCst), 5);
}

/// Sends `raw` on a new HTTP/1.1 connection and reads until the proxy closes it (bounded).
async fn exchange_h1(proxy: SocketAddr, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer));
    let _ = read.await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Request smuggling shapes `hostile.rs` does not try, each with a second request hidden where
/// a parser that disagreed would find it: NUL in a header value, `Transfer-Encoding` folded onto
/// a continuation line (obs-fold, RFC 9112 §5.2), `chunked` followed by another coding (§6.3:
/// chunked must be last), `chunked` applied twice (§7: never more than once), a chunk size with
/// a sign or a `0x` prefix (§7.1: `1*HEXDIG`), and a chunk-size line ended by a bare LF. Each is
/// refused with 400 and reaches no backend, and the hidden request is never parsed. `chunked`
/// twice was decoded once and the hidden request served as the next one (a parser that decoded
/// twice, or refused, would disagree); now it is 400 (`headers::transfer_coding_problem`).
#[tokio::test]
async fn more_smuggling_shapes_get_400_and_reach_no_backend() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let hidden = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let shapes: [(&str, String); 8] = [
        (
            "NUL in a header value",
            format!("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n{hidden}"),
        ),
        (
            "Transfer-Encoding on an obs-fold line",
            format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n{hidden}"),
        ),
        (
            "chunked, then gzip",
            format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n{hidden}"),
        ),
        (
            "chunked twice in one line",
            format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n{hidden}"),
        ),
        (
            "chunked on two lines",
            format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{hidden}"),
        ),
        (
            "a chunk size with a sign",
            format!("POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n+3\r\nabc\r\n0\r\n\r\n{hidden}"),
        ),
        (
            "a chunk size with 0x",
            format!("POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n{hidden}"),
        ),
        (
            "a chunk-size line ended by a bare LF",
            format!("POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n{hidden}"),
        ),
    ];
    for (what, raw) in shapes {
        let answer = exchange_h1(running.addr, raw.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{what}: {answer:?}");
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "{what}: one answer, the hidden request never parsed: {answer:?}"
        );
        if !what.starts_with("a chunk") {
            assert_eq!(blue.hits.load(Ordering::SeqCst), 0, "{what}: reached blue");
        }
    }
    // A malformed chunk is found after the head may have gone upstream (as in
    // `hostile::an_absurd_chunk_size_gets_400_and_closes_the_connection`): at most those heads.
    assert!(blue.hits.load(Ordering::SeqCst) <= 3);
    // A plain chunked upload still passes.
    let answer = exchange_h1(
        running.addr,
        b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
    assert!(answer.ends_with("\r\n\r\n3"), "{answer:?}");
}

/// Slowloris on the body over HTTP/2: a stream whose HEADERS leave it open (no END_STREAM) and
/// then sends no DATA gets `408` after `limits.body_read_timeout`, as over HTTP/1.1
/// (`uploads.rs`), and the stream ends; the connection serves on.
#[tokio::test]
async fn an_http2_request_body_that_never_comes_gets_408() {
    let blue = backend("blue").await;
    let mut config = config(vec![route(&[blue.addr], &[], 10_000)]);
    config.limits.body_read_timeout = Duration::from_millis(300);
    let running = start(config).await;
    let (mut read, mut write) = connect(running.addr, &[]).await;
    let mut block = get_block("/upload");
    // `:method POST` (static index 3) in place of GET.
    block[0] = 0x83;
    let heads = frame(HEADERS, END_HEADERS, 1, &block);
    write.write_all(&heads).await.unwrap();
    let answer = async {
        loop {
            let frame = read_frame(&mut read).await.expect("open");
            if frame.kind == DATA && frame.stream == 1 {
                return String::from_utf8_lossy(&frame.payload).into_owned();
            }
            if frame.kind == RST_STREAM && frame.stream == 1 {
                panic!("reset without an answer: {frame:?}");
            }
        }
    };
    let body = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("an answer to the stalled upload");
    assert!(
        body.contains("no request body byte within limits.body_read_timeout"),
        "{body:?}"
    );
    still_serves(&running).await;
}

/// A client that sets its receive window to nothing (SETTINGS_INITIAL_WINDOW_SIZE 0, RFC 9113
/// §6.9.2) and never widens it, while answering PINGs: no response byte can be sent, and the
/// client's socket stays drained, so the socket-level bound does not see the wait. Without a bound
/// on the wait for window, the stream, its `max_requests` place and its backend connection were
/// held for as long as the client liked (128 streams per connection over 79 connections held all
/// 10,000 default places). With `limits.send_timeout` (1 s here; vendor/hyper patch 22, nginx's
/// `send_timeout` bounds the same wait) the stream is reset with `CANCEL`, counted, and its
/// backend connection closed, while the connection itself still serves. A client that opens its
/// window a little at a time, each grant within the timeout but the whole response taking several
/// timeouts, gets all of it: the wait is timed from the last window granted. Counted in
/// `crossfade_h2_stream_send_timeouts_total`.
#[tokio::test]
async fn a_zero_window_client_does_not_hold_its_stream_and_backend_connection_forever() {
    let blue = backend("blue").await;
    let mut config = config(vec![route(&[blue.addr], &[], 10_000)]);
    config.limits.send_timeout = Duration::from_secs(1);
    let running = start(config).await;
    let (mut read, mut write) = connect(running.addr, &[(SETTINGS_INITIAL_WINDOW_SIZE, 0)]).await;
    let heads = frame(HEADERS, END_STREAM | END_HEADERS, 1, &get_block("/chunked"));
    write.write_all(&heads).await.unwrap();
    let ended = async {
        while let Some(frame) = read_frame(&mut read).await {
            if frame.kind == PING && frame.payload.len() == 8 {
                let pong = self::frame(PING, 0x1, 0, &frame.payload);
                let _ = write.write_all(&pong).await;
            }
            if frame.kind == RST_STREAM && frame.stream == 1 {
                return frame.error_code();
            }
        }
        panic!("the connection closed before stream 1 was reset");
    };
    let code = tokio::time::timeout(Duration::from_secs(30), ended)
        .await
        .expect("the stalled stream is reset");
    assert_eq!(code, CANCEL, "RST_STREAM CANCEL");
    until(
        Duration::from_secs(10),
        "the backend connection closed",
        || blue.closed.load(Ordering::SeqCst) == blue.opened.load(Ordering::SeqCst),
    )
    .await;
    let counted = |name: &'static str| {
        let running = &running;
        async move { crate::limits::metric(running, name).await.unwrap_or(0.0) }
    };
    assert_eq!(
        counted("crossfade_h2_stream_send_timeouts_total").await,
        1.0,
        "the reset stream is counted"
    );
    assert_eq!(
        counted("crossfade_send_timeouts_total").await,
        0.0,
        "no connection was closed"
    );

    // The same connection serves a stream whose client opens its window, 500 bytes at a time,
    // each once the last grant's bytes came (20 grants, 150 ms apart: 3 s in all, three times
    // the timeout).
    let heads = frame(HEADERS, END_STREAM | END_HEADERS, 3, &get_block("/chunked"));
    write.write_all(&heads).await.unwrap();
    let trickled = async {
        let (mut granted, mut received) = (0usize, 0usize);
        while received < CHUNKED_LEN {
            if received == granted {
                tokio::time::sleep(Duration::from_millis(150)).await;
                write
                    .write_all(&frame(WINDOW_UPDATE, 0, 3, &500u32.to_be_bytes()))
                    .await
                    .unwrap();
                granted += 500;
            }
            let frame = read_frame(&mut read).await.expect("the connection is open");
            match frame.kind {
                DATA if frame.stream == 3 => received += frame.payload.len(),
                RST_STREAM => panic!("stream {} reset: {:?}", frame.stream, frame),
                PING if frame.payload.len() == 8 => {
                    let pong = self::frame(PING, 0x1, 0, &frame.payload);
                    write.write_all(&pong).await.unwrap();
                }
                _ => {}
            }
        }
        received
    };
    let received = tokio::time::timeout(Duration::from_secs(60), trickled)
        .await
        .expect("the trickled response comes whole");
    assert_eq!(received, CHUNKED_LEN);
    assert_eq!(
        counted("crossfade_h2_stream_send_timeouts_total").await,
        1.0,
        "no other stream timed out"
    );
}

/// The "slow read" attack: a client asks for a large response and reads nothing, so the socket's
/// buffers fill and the proxy's writes wait. Without a bound the stream, its `max_requests` place
/// and its backend connection were held forever. With `limits.send_timeout` (1 s here) the
/// connection is closed, counted, and its backend connection closed; over HTTP/1.1 and over
/// HTTP/2 (a client that opened its flow-control windows wide and reads nothing). A response
/// that is merely slow to come (the client waits with nothing to read) is not cut.
#[tokio::test]
async fn a_client_that_stops_reading_is_closed_at_send_timeout_and_frees_its_backend() {
    let blue = backend("blue").await;
    let mut config = config(vec![route(&[blue.addr], &[], 10_000)]);
    config.limits.send_timeout = Duration::from_secs(1);
    let running = start(config).await;
    let timeouts = || async {
        crate::limits::metric(&running, "crossfade_send_timeouts_total")
            .await
            .unwrap_or(0.0)
    };
    // The count once it reached `n`, or as it stands 30 s on (a bound on a hang, not a timing).
    let counted = |n: f64| async move {
        let mut closed = 0.0;
        for _ in 0..600 {
            closed = timeouts().await;
            if closed >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        closed
    };

    // HTTP/1.1: the request, then nothing read.
    let mut http1 = TcpStream::connect(running.addr).await.unwrap();
    http1
        .write_all(b"GET /big HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        counted(1.0).await,
        1.0,
        "the stalled HTTP/1.1 connection was closed"
    );

    // HTTP/2, windows opened wide so that flow control never holds the response: the socket does.
    let (read, mut write) =
        connect(running.addr, &[(SETTINGS_INITIAL_WINDOW_SIZE, 0x7fff_ffff)]).await;
    let mut opening = frame(WINDOW_UPDATE, 0, 0, &0x7fff_0000u32.to_be_bytes());
    opening.extend(frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &get_block("/big"),
    ));
    write.write_all(&opening).await.unwrap();
    assert_eq!(
        counted(2.0).await,
        2.0,
        "the stalled HTTP/2 connection was closed"
    );
    until(
        Duration::from_secs(10),
        "both backend connections closed",
        || blue.closed.load(Ordering::SeqCst) == blue.opened.load(Ordering::SeqCst),
    )
    .await;
    drop((read, http1));
    // A response that takes longer than send_timeout to come is not a stalled write.
    let (status, _, body) = get(&h2c_client(), &running.url("/slow/1500")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "blue"));
    assert_eq!(timeouts().await, 2.0);
    still_serves(&running).await;
}
