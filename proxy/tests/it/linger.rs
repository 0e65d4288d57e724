//! Lingering close on client connections (RFC 9112 §9.6): when the proxy answers before it has
//! read a request's body (a backend's early 413 passed through, or the proxy's own 503 and 431)
//! and closes the connection while the client is still uploading, the client still reads the whole
//! answer. Without the lingering close the kernel answers the unread upload with a TCP reset,
//! which fails the client's next write before it has read the answer: measured without it, 4–6
//! of 200 uploads lost the 413, 1–34 the 431 and 2–48 the 503 (three runs each), so each case
//! below failed every time.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crossfade_proxy::{LimitsConfig, Percent, ProxyConfig, RouteConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{client, config, get, route, start, Running};

/// The `Content-Length` each client announces: far more than the socket buffers hold, so the
/// client is still writing at full speed when the answer comes.
const ANNOUNCED: usize = 64 * 1024 * 1024;

/// Uploads per case; the reset races the client's read, so one round proves little.
const ROUNDS: usize = 200;

/// Clients uploading at once, so that the proxy's task is busy when it closes.
const AT_ONCE: usize = 4;

/// A backend that answers `413` with `Connection: close` as soon as it has a request head, then
/// half-closes and reads the rest until the proxy stops: it never resets, so whatever reset a client
/// sees comes from the proxy.
async fn rejecting_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8; 1];
                    match stream.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let answer = "HTTP/1.1 413 Content Too Large\r\ncontent-length: 8\r\n\
                              connection: close\r\n\r\ntoo big\n";
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                let _ = stream.shutdown().await;
                let mut sink = vec![0u8; 64 * 1024];
                let linger =
                    async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} };
                let _ = tokio::time::timeout(Duration::from_secs(5), linger).await;
            });
        }
    });
    addr
}

/// Sends `head` (with `Content-Length: ANNOUNCED`) and then the body at full speed, the way curl
/// uploads: it waits for the socket to be readable or writable, reads first when there is
/// something to read, and stops uploading once an answer begins; a send that fails before that
/// ends the transfer (curl: "Send failure: Connection reset by peer"). Returns the answer's status
/// and body (framed by its `Content-Length`), or what went wrong. Closes the connection once the
/// answer is read, as curl does.
async fn upload(proxy: SocketAddr, head: String) -> Result<(u16, Vec<u8>), String> {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = async {
        send_until_answer(&stream).await?;
        read_answer(&mut stream).await
    };
    tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .unwrap_or_else(|_| Err("no answer within 10s".to_owned()))
}

/// Sends the body until an answer begins (or the whole body is sent).
async fn send_until_answer(stream: &TcpStream) -> Result<(), String> {
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    while sent < ANNOUNCED {
        let ready = stream.ready(Interest::READABLE | Interest::WRITABLE).await;
        if ready.map_err(|e| e.to_string())?.is_readable() {
            return Ok(());
        }
        match stream.try_write(&chunk) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("send failure after {sent} bytes: {e}")),
        }
    }
    Ok(())
}

/// Reads one response: status and `Content-Length` body.
async fn read_answer(read: &mut TcpStream) -> Result<(u16, Vec<u8>), String> {
    let mut buf = Vec::new();
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        fill(read, &mut buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status = head.get(9..12).and_then(|s| s.parse().ok()).ok_or(&head)?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no content-length in {head:?}"))?;
    let mut body = buf.split_off(end + 4);
    while body.len() < length {
        fill(read, &mut body).await?;
    }
    Ok((status, body))
}

/// Appends what one read gives; `Err` on a reset or an early end.
async fn fill(read: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; 16 * 1024];
    match read.read(&mut chunk).await {
        Ok(0) => Err(format!("closed after {} bytes", buf.len())),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Err(e) => Err(format!("{e} after {} bytes", buf.len())),
    }
}

/// `ROUNDS` uploads with `head`, `AT_ONCE` at a time: every one reads `status` and `body` whole.
async fn every_upload_reads_its_answer(proxy: SocketAddr, head: &str, status: u16, body: &[u8]) {
    let mut failures = Vec::new();
    for round in 0..ROUNDS / AT_ONCE {
        let uploads: Vec<_> = (0..AT_ONCE)
            .map(|_| tokio::spawn(upload(proxy, head.to_owned())))
            .collect();
        for (i, upload) in uploads.into_iter().enumerate() {
            match upload.await.unwrap() {
                Ok((s, b)) if s == status && b.starts_with(body) => {}
                other => failures.push(format!("round {round}.{i}: {other:?}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {ROUNDS} uploads lost their {status}:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A route with both weights 0: it answers 503 without reading the body.
fn closed_route() -> RouteConfig {
    let mut route = route(&[], &[], 10_000);
    route.blue.weight = Some(Percent(0));
    route.green.weight = Some(Percent(0));
    route
}

fn post_head(extra: &str) -> String {
    format!("POST /upload HTTP/1.1\r\nhost: app.test\r\n{extra}content-length: {ANNOUNCED}\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backends_early_413_reaches_a_client_still_uploading() {
    let backend = rejecting_backend().await;
    let proxy = start(config(vec![route(&[backend], &[], 10_000)])).await;
    every_upload_reads_its_answer(proxy.addr, &post_head(""), 413, b"too big\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxys_own_503_reaches_a_client_still_uploading() {
    let proxy = start(config(vec![closed_route()])).await;
    every_upload_reads_its_answer(proxy.addr, &post_head(""), 503, b"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxys_own_431_reaches_a_client_still_uploading() {
    let limits = LimitsConfig {
        max_header_bytes: 8 * 1024,
        ..LimitsConfig::default()
    };
    let proxy = start(ProxyConfig {
        limits,
        ..config(vec![closed_route()])
    })
    .await;
    let big = format!("x-big: {}\r\n", "y".repeat(16 * 1024));
    every_upload_reads_its_answer(proxy.addr, &post_head(&big), 431, b"").await;
}

/// One value of the proxy's `/metrics`, by the line's full name and labels.
async fn metric(running: &Running, series: &str) -> Option<f64> {
    let (_, _, text) = get(&client(), &running.admin_url("/metrics")).await;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// How long a wait on the proxy may take: generous, since the tests share two cores with the
/// rest of the suite; a lingering close that never ends the expected way fails at this limit.
const LIMIT: Duration = Duration::from_secs(20);

/// Waits up to [`LIMIT`] for `series` to reach `value`.
async fn wait_for_metric(running: &Running, series: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while tokio::time::Instant::now() < deadline {
        if metric(running, series).await == Some(value) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, _, text) = get(&client(), &running.admin_url("/metrics")).await;
    let lingering: Vec<_> = text.lines().filter(|l| l.contains("lingering")).collect();
    panic!("{series} is not {value} after {LIMIT:?}: {lingering:#?}");
}

/// Reads `stream` to its end (the proxy's FIN), within [`LIMIT`].
async fn wait_for_fin(stream: &mut TcpStream) {
    let mut rest = [0u8; 64];
    let fin = tokio::time::timeout(LIMIT, async {
        while stream.read(&mut rest).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    assert!(
        fin.is_ok(),
        "the proxy did not shut its side within {LIMIT:?}"
    );
}

/// A proxy whose route answers 503 without reading the body, lingering up to 10 minutes while
/// bytes come at most `lingering_timeout` apart and until 1 MiB were discarded.
async fn lingering_proxy(lingering_timeout: Duration) -> Running {
    let limits = LimitsConfig {
        lingering_time: Duration::from_secs(600),
        lingering_timeout,
        lingering_max_bytes: 1024 * 1024,
        ..LimitsConfig::default()
    };
    start(ProxyConfig {
        limits,
        ..config(vec![closed_route()])
    })
    .await
}

/// Connects, sends a request head and reads the 503.
async fn answered(proxy: SocketAddr) -> TcpStream {
    answered_with(proxy, "").await
}

/// Connects, sends a request head with the `extra` header lines and reads the 503.
async fn answered_with(proxy: SocketAddr, extra: &str) -> TcpStream {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(post_head(extra).as_bytes()).await.unwrap();
    let (status, _) = read_answer(&mut stream).await.unwrap();
    assert_eq!(status, 503);
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lingering_close_ends_when_the_client_goes_quiet_or_sends_too_much() {
    let prefix = "crossfade_lingering_closes_total{end=";
    // A client that sends a head, reads the answer and then neither sends nor closes: let go
    // when quiet. The only case that waits for the quiet limit, so the only proxy with a short
    // one; nothing else is on it, so nothing else can be counted quiet.
    let quick = lingering_proxy(Duration::from_millis(300)).await;
    let _quiet = answered(quick.addr).await;
    wait_for_metric(&quick, &format!("{prefix}\"quiet\"}}"), 1.0).await;
    // The other two on a proxy that waits longer for a byte than any wait here: a client slowed
    // down by a loaded machine between two writes (or between the proxy's FIN and its close)
    // is not taken for a quiet one (seen under load with a 300 ms limit: `quiet` counted, the
    // awaited end never).
    let patient = lingering_proxy(Duration::from_secs(600)).await;
    // A client that reads the answer and then sends on forever: let go after
    // lingering_max_bytes. (It sends nothing before the answer: a client still uploading when
    // the answer comes may, on a loaded machine, send the whole lingering_max_bytes before it
    // sees the answer, and then read a reset instead.)
    let mut greedy = answered(patient.addr).await;
    let chunk = vec![b'x'; 64 * 1024];
    let sending = async { while greedy.write_all(&chunk).await.is_ok() {} };
    let ended = tokio::time::timeout(LIMIT, sending).await;
    assert!(ended.is_ok(), "the proxy still reads after {LIMIT:?}");
    wait_for_metric(&patient, &format!("{prefix}\"bytes\"}}"), 1.0).await;
    let discarded = metric(&patient, "crossfade_lingering_discarded_bytes_total").await;
    assert!(discarded.unwrap() >= (1024 * 1024) as f64, "{discarded:?}");
    // And a client that closes after the answer, as curl does: the clean end. It waits for the
    // proxy's FIN first, so the lingering has begun when it closes (had it closed before the
    // proxy shut its side, there would be nothing to linger on, and no count).
    let mut polite = answered(patient.addr).await;
    wait_for_fin(&mut polite).await;
    drop(polite);
    wait_for_metric(&patient, &format!("{prefix}\"closed\"}}"), 1.0).await;
    // Neither was taken for a quiet client.
    let quiet = metric(&patient, &format!("{prefix}\"quiet\"}}")).await;
    assert_eq!(quiet, Some(0.0));
}

/// A client that says `Connection: close` and whose request was read whole sends nothing more
/// (RFC 9112 §9.6: it must not send further requests), so its connection is closed outright once
/// answered, as nginx does, instead of lingered on: a byte it sends anyway meets a reset, and no
/// lingering close is counted. One that says `close` but whose body was not read is lingered on
/// as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_said_close_and_was_read_whole_is_closed_at_once() {
    let proxy = lingering_proxy(Duration::from_secs(600)).await;
    let mut done = TcpStream::connect(proxy.addr).await.unwrap();
    let head = b"GET / HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\n\r\n";
    done.write_all(head).await.unwrap();
    let (status, _) = read_answer(&mut done).await.unwrap();
    assert_eq!(status, 503);
    wait_for_fin(&mut done).await;
    // A lingering close would take and discard these bytes for ten minutes; a closed socket
    // answers the first with a reset, which fails a later write.
    let refused = tokio::time::timeout(LIMIT, async {
        loop {
            if let Err(error) = done.write_all(b"x").await {
                return error.kind();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let kind = refused.expect("the proxy still takes bytes: it lingers");
    assert!(
        matches!(
            kind,
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ),
        "{kind:?}"
    );
    // The control: `close`, but an announced body the proxy did not read. It lingers, and ends
    // cleanly when the client closes after the proxy's FIN.
    let mut unread = answered_with(proxy.addr, "connection: close\r\n").await;
    wait_for_fin(&mut unread).await;
    drop(unread);
    let prefix = "crossfade_lingering_closes_total{end=";
    wait_for_metric(&proxy, &format!("{prefix}\"closed\"}}"), 1.0).await;
    for end in ["quiet", "time", "bytes", "error"] {
        let count = metric(&proxy, &format!("{prefix}\"{end}\"}}")).await;
        assert_eq!(count, Some(0.0), "{end}");
    }
}
