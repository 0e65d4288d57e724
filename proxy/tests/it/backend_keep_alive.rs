//! Case C17 with a backend that says how long it keeps idle connections (`Keep-Alive:
//! timeout=N`, Node.js's `server.keepAliveTimeout`) and keeps them for less than the pool's
//! `upstream.idle_timeout` (4 s): the pool takes such a connection again only within N s less
//! 1 s, and never when that leaves nothing, so no request meets the backend's close (session 41).
//! The backend counts the connections each request came on, so the tests assert the reuse itself
//! rather than the race it would lose.

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
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        let mut accepted = 0;
        while let Ok((stream, _)) = listener.accept().await {
            accepted += 1;
            let record = Arc::clone(&record);
            tokio::spawn(serve(stream, accepted, (keep_alive, closes_after), record));
        }
    });
    (addr, seen)
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
