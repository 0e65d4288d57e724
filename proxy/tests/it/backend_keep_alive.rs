//! Case C17 with a backend that says how long it keeps idle connections (`Keep-Alive:
//! timeout=N`, Node.js's `server.keepAliveTimeout`) and keeps them for less than the pool's
//! `upstream.idle_timeout` (4 s): the pool takes such a connection again only within N s less
//! 1 s, and never when that leaves nothing, so no request meets the backend's close (session 41).
//! One that says how many more requests it takes (`Keep-Alive: max=M`) gets no more than that
//! on the connection (session 42). The backends count the connections each request came on, so
//! the tests assert the reuse itself rather than the race it would lose.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// A backend answering every request `200 ok` with `Keep-Alive: {keep_alive}` and closing a
/// connection idle for `closes_after` (from its last answer to the next request's first byte),
/// as Node.js does at its `keepAliveTimeout`. Each answered request is recorded as its
/// connection's number (from 1, in accept order) in the list returned.
pub(crate) async fn backend(
    keep_alive: &'static str,
    closes_after: Duration,
) -> (std::net::SocketAddr, Arc<Mutex<Vec<usize>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let addr = accepting(move |stream, number| {
        serve(
            stream,
            number,
            (keep_alive, closes_after),
            Arc::clone(&record),
        )
    })
    .await;
    (addr, seen)
}

/// A backend on a free port that serves each connection it accepts on a task of its own with
/// `serve(stream, number)`, `number` counting the connections from 1 in accept order.
pub(crate) async fn accepting<F>(
    serve: impl Fn(TcpStream, usize) -> F + Send + 'static,
) -> std::net::SocketAddr
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut accepted = 0;
        while let Ok((stream, _)) = listener.accept().await {
            accepted += 1;
            tokio::spawn(serve(stream, accepted));
        }
    });
    addr
}

async fn serve(
    stream: TcpStream,
    number: usize,
    (keep_alive, closes_after): (&'static str, Duration),
    seen: Arc<Mutex<Vec<usize>>>,
) {
    let mut reader = BufReader::new(stream);
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\
         keep-alive: {keep_alive}\r\n\r\nok"
    );
    loop {
        match tokio::time::timeout(closes_after, reader.fill_buf()).await {
            Ok(Ok(bytes)) if !bytes.is_empty() => {}
            // Idle too long (closed, as the backend said it would), or closed by the proxy.
            _ => return,
        }
        let (length, _) = crate::stale::request_head(&mut reader).await;
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        seen.lock().unwrap().push(number);
        if reader.get_mut().write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Sends a `PUT /doc` with a 4 KiB body after each gap in `gaps` through a proxy in front of
/// `backend`; every one must be answered 200 `ok` without the backend's `Keep-Alive`.
async fn puts_after(backend: std::net::SocketAddr, gaps: &[Duration]) {
    let running = start(config(vec![route(&[backend], &[], 10_000)])).await;
    let client = client();
    for (i, gap) in gaps.iter().enumerate() {
        tokio::time::sleep(*gap).await;
        let put = Request::put(running.url("/doc"))
            .body(Full::from(vec![b'd'; 4096]))
            .unwrap();
        let (status, headers, body) = send(&client, put).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"), "PUT {i}");
        assert!(headers.get("keep-alive").is_none(), "PUT {i}: {headers:?}");
    }
}

/// `Keep-Alive: timeout=3`, closed at 3 s: the connection is taken again within 2 s (0.2 s
/// later), and not after (2.5 s later, below the pool's 4 s): a new connection carries the third
/// PUT. Until session 41 the pool took it (one connection for the three).
#[tokio::test]
async fn c17_a_backend_keep_alive_timeout_below_the_pools_bounds_reuse_to_it_less_a_second() {
    let (addr, seen) = backend("timeout=3", Duration::from_secs(3)).await;
    let gaps = [0, 200, 2_500].map(Duration::from_millis);
    puts_after(addr, &gaps).await;
    assert_eq!(*seen.lock().unwrap(), [1, 1, 2], "connection of each PUT");
}

/// Node.js with `keepAliveTimeout` 1 s: `Keep-Alive: timeout=1`, closed after exactly 1 s idle.
/// PUTs with bodies come 0.2 s apart and then about 1 s apart, at the backend's close; a pooled
/// connection met that close, and a written body is never re-sent (502). 1 s less the margin
/// leaves nothing, so no connection is pooled: each PUT has a connection of its own, and all are
/// answered. Until session 41 the second PUT went on the first one's connection.
#[tokio::test]
async fn c17_a_backend_keep_alive_timeout_of_one_second_is_never_reused_and_no_put_fails() {
    let (addr, seen) = backend("timeout=1", Duration::from_secs(1)).await;
    let gaps = [0, 200, 1_000, 990, 1_010, 1_000].map(Duration::from_millis);
    puts_after(addr, &gaps).await;
    assert_eq!(
        *seen.lock().unwrap(),
        [1, 2, 3, 4, 5, 6],
        "connection of each PUT"
    );
}

/// `max=0` (no more requests on this connection) is honoured as well; a malformed `timeout` is
/// ignored (the connection is pooled as any other, and the client sees no error).
#[tokio::test]
async fn c17_a_backend_keep_alive_max_of_0_is_honoured_and_a_malformed_one_ignored() {
    let (addr, seen) = backend("timeout=5, max=0", Duration::from_secs(5)).await;
    puts_after(addr, &[Duration::ZERO, Duration::from_millis(100)]).await;
    assert_eq!(
        *seen.lock().unwrap(),
        [1, 2],
        "max=0: connection of each PUT"
    );

    let (addr, seen) = backend("timeout=soon, max=-1", Duration::from_secs(5)).await;
    puts_after(addr, &[Duration::ZERO, Duration::from_millis(100)]).await;
    assert_eq!(
        *seen.lock().unwrap(),
        [1, 1],
        "malformed: connection of each PUT"
    );
}

/// What a [`counting_backend`] says in `Keep-Alive` on the answer to a connection's request `n`
/// (from 1): the header's value, or `None` for no header.
type Says = fn(usize) -> Option<&'static str>;

/// A backend answering `200 ok` with `Keep-Alive` as `says` has it, that takes `takes` requests
/// on a connection: it reads one more and closes the connection without answering it, so a
/// request sent past the count certainly meets the close (a PUT's body is written: 502). Each
/// request read is recorded as (its connection's number from 1, in accept order; its number on
/// the connection from 1).
async fn counting_backend(
    says: Says,
    takes: usize,
) -> (std::net::SocketAddr, Arc<Mutex<Vec<(usize, usize)>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let addr = accepting(move |stream, number| {
        serve_counted(stream, number, (says, takes), Arc::clone(&record))
    })
    .await;
    (addr, seen)
}

async fn serve_counted(
    stream: TcpStream,
    number: usize,
    (says, takes): (Says, usize),
    seen: Arc<Mutex<Vec<(usize, usize)>>>,
) {
    let mut reader = BufReader::new(stream);
    for n in 1.. {
        match reader.fill_buf().await {
            Ok(bytes) if !bytes.is_empty() => {}
            _ => return,
        }
        let (length, _) = crate::stale::request_head(&mut reader).await;
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        seen.lock().unwrap().push((number, n));
        if n > takes {
            return;
        }
        let keep_alive = says(n).map_or(String::new(), |v| format!("keep-alive: {v}\r\n"));
        let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n{keep_alive}\r\nok");
        if reader.get_mut().write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// `Keep-Alive: timeout=5, max=2` on a connection's first answer only, and a close when a fourth
/// request comes on it: each connection carries three PUTs (the first and the two more the
/// backend said), then the pool lets it go, and every PUT is answered. Until session 42 `max`
/// above 0 was ignored: the fourth PUT went on the first connection, met the close and was
/// answered 502.
#[tokio::test]
async fn c17_a_backend_keep_alive_max_said_once_bounds_the_requests_on_its_connection() {
    let (addr, seen) = counting_backend(|n| (n == 1).then_some("timeout=5, max=2"), 3).await;
    puts_after(addr, &[Duration::ZERO; 7]).await;
    assert_eq!(
        *seen.lock().unwrap(),
        [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3), (3, 1)],
        "(connection, request on it) of each PUT"
    );
}

/// The latest `max` counts, also when it says more than the count so far left: `max=1` on the
/// first two answers of a connection (so three requests), none after, and a close at the fourth.
#[tokio::test]
async fn c17_a_backend_keep_alive_max_said_again_counts_from_its_latest_answer() {
    let (addr, seen) = counting_backend(|n| (n <= 2).then_some("max=1"), 3).await;
    puts_after(addr, &[Duration::ZERO; 4]).await;
    assert_eq!(
        *seen.lock().unwrap(),
        [(1, 1), (1, 2), (1, 3), (2, 1)],
        "(connection, request on it) of each PUT"
    );
}

/// `Keep-Alive: timeout=2` from a backend that never closes by itself: the pool's reaper closes
/// the idle connection, never before the 1 s it may be taken within (so the reuse window is kept)
/// and at most one reaper period (a quarter of the pool's 4 s) after, so by about the backend's
/// own 2 s: the backend sees EOF from the proxy each time. Each close's time after the answer is
/// printed (`--nocapture`); 10 s is a hang guard only.
#[tokio::test]
async fn c17_an_idle_connection_past_its_backend_keep_alive_is_closed_by_the_pool_after_its_window()
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let running = start(config(vec![route(&[addr], &[], 10_000)])).await;
    let client = client();
    let mut closes = Vec::new();
    for i in 0..4 {
        // Shifts each answer against the reaper's ticks.
        tokio::time::sleep(Duration::from_millis(i * 250)).await;
        let put = Request::put(running.url("/doc"))
            .body(Full::from(vec![b'd'; 16]))
            .unwrap();
        let (sent, accepted) = tokio::join!(send(&client, put), async {
            let (stream, _) = listener.accept().await.unwrap();
            let mut reader = BufReader::new(stream);
            let (length, _) = crate::stale::request_head(&mut reader).await;
            reader.read_exact(&mut vec![0; length]).await.unwrap();
            let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nkeep-alive: timeout=2\r\n\r\nok";
            reader.get_mut().write_all(answer.as_bytes()).await.unwrap();
            (reader, tokio::time::Instant::now())
        });
        assert_eq!((sent.0, sent.2.as_str()), (StatusCode::OK, "ok"), "PUT {i}");
        let (mut reader, answered) = accepted;
        let eof = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut [0; 64])).await;
        assert!(
            matches!(eof, Ok(Ok(0))),
            "PUT {i}: the proxy's close: {eof:?}"
        );
        let after = answered.elapsed();
        assert!(
            after >= Duration::from_secs(1),
            "PUT {i}: closed {after:?} after the answer"
        );
        closes.push(after);
    }
    eprintln!("closed by the proxy after the answer: {closes:?}");
}
