//! A backend that answers `413 Content Too Large` before reading an upload (RFC 9110 §15.5.14):
//! the client gets that 413, never a 502, with and without `Expect: 100-continue`, with
//! `Content-Length` and chunked bodies; and the client connection afterwards: closed when the
//! rest of the body was not read (RFC 9112 §9.6; the client reads the whole 413, then the end of
//! the connection), or kept when it was, and never out of step.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{config, route, start};

/// The upload each client tries to send: far more than the socket buffers on both hops hold, so
/// the writer is still busy when the 413 arrives.
const UPLOAD: usize = 8 * 1024 * 1024;

/// How a backend turns an upload down.
#[derive(Clone, Copy, Debug)]
enum Reject {
    /// Answers 413 with `Connection: close` as soon as it has the head, then closes the socket
    /// with the body unread (the kernel sends a reset): an abrupt backend.
    AndReset,
    /// Answers 413 with `Connection: close`, then half-closes and reads the rest until the peer
    /// stops (RFC 9112 §9.6's lingering close): a careful backend.
    AndLinger,
}

/// A backend that turns every upload down as `reject` says; returns its address.
async fn rejecting_backend(reject: Reject) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if read_head(&mut stream).await.is_none() {
                    return;
                }
                let answer = "HTTP/1.1 413 Content Too Large\r\ncontent-length: 8\r\n\
                              connection: close\r\n\r\ntoo big\n";
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                match reject {
                    Reject::AndReset => {
                        // Unread bytes in the receive buffer: close() sends a RST.
                        let _ = stream.set_zero_linger();
                    }
                    Reject::AndLinger => {
                        let _ = stream.shutdown().await;
                        let mut sink = vec![0u8; 64 * 1024];
                        let linger = async {
                            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                        };
                        let _ = tokio::time::timeout(Duration::from_secs(2), linger).await;
                    }
                }
            });
        }
    });
    addr
}

/// Reads up to the end of a head (the blank line); the bytes after it stay unread as far as
/// possible (read one at a time). `None` when the peer closed first.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    String::from_utf8(head).ok()
}

/// How the client frames and announces its upload.
#[derive(Clone, Copy, Debug)]
struct Upload {
    chunked: bool,
    expect: bool,
}

/// What the client saw.
#[derive(Debug)]
struct Seen {
    /// The final status, or `None` when the connection failed before one.
    status: Option<u16>,
    /// Whether a `100 Continue` came first.
    continued: bool,
    /// After the response head: what followed it, up to a clean end of the connection (FIN), or
    /// `Err` for a reset.
    end: Result<Vec<u8>, String>,
}

/// Sends one upload through `proxy` the way a client does: the head, then the body while reading
/// the answer (with `expect`, the body waits for a 100, or for 1 s as curl does, and is not sent
/// at all once a final answer came).
async fn upload(proxy: SocketAddr, how: Upload) -> Seen {
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let framing = match how.chunked {
        true => "transfer-encoding: chunked\r\n".to_owned(),
        false => format!("content-length: {UPLOAD}\r\n"),
    };
    let expect = if how.expect {
        "expect: 100-continue\r\n"
    } else {
        ""
    };
    let head = format!("POST /upload HTTP/1.1\r\nhost: app.test\r\n{framing}{expect}\r\n");
    write.write_all(head.as_bytes()).await.unwrap();
    let (go, gate) = tokio::sync::oneshot::channel::<bool>();
    let writer = tokio::spawn(async move {
        if how.expect {
            let send = tokio::time::timeout(Duration::from_secs(1), gate).await;
            if matches!(send, Ok(Ok(false))) {
                return;
            }
        }
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..UPLOAD / chunk.len() {
            let written = match how.chunked {
                true => {
                    let size = format!("{:x}\r\n", chunk.len());
                    let mut frame = size.into_bytes();
                    frame.extend_from_slice(&chunk);
                    frame.extend_from_slice(b"\r\n");
                    write.write_all(&frame).await
                }
                false => write.write_all(&chunk).await,
            };
            if written.is_err() {
                return;
            }
        }
        if how.chunked {
            let _ = write.write_all(b"0\r\n\r\n").await;
        }
        // Keep the write half open: the client waits for the proxy to end the connection.
        std::future::pending::<()>().await;
    });
    let mut buf = Vec::new();
    let mut continued = false;
    let mut go = Some(go);
    let status = loop {
        let Some(status) = read_status(&mut read, &mut buf).await else {
            break None;
        };
        if status == 100 {
            continued = true;
            if let Some(go) = go.take() {
                let _ = go.send(true);
            }
            continue;
        }
        if let Some(go) = go.take() {
            let _ = go.send(false);
        }
        break Some(status);
    };
    let end = match status {
        None => Err("no response".to_owned()),
        Some(_) => read_to_end(&mut read)
            .await
            .map(|rest| [buf, rest].concat()),
    };
    writer.abort();
    Seen {
        status,
        continued,
        end,
    }
}

/// Reads one response head out of `read` (bytes beyond it stay in `buf`); its status code.
async fn read_status(read: &mut tokio::net::tcp::OwnedReadHalf, buf: &mut Vec<u8>) -> Option<u16> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            buf.drain(..end + 4);
            return head.get(9..12)?.parse().ok();
        }
        let mut chunk = [0u8; 4096];
        match read.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads until the proxy ends the connection: what came, on a FIN; `Err` on a reset or after
/// 10 s.
async fn read_to_end(read: &mut tokio::net::tcp::OwnedReadHalf) -> Result<Vec<u8>, String> {
    let mut got = Vec::new();
    let drain = async {
        match read.read_to_end(&mut got).await {
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .unwrap_or_else(|_| Err("the connection stayed open".to_owned()))
        .map(|()| got)
}

/// Every framing and expectation, `rounds` times each, against a backend that turns uploads down
/// as `reject` says: every client gets the 413 with its body (never a 100 before it: the backend
/// did not ask for the body) and then a clean end of its connection, which cannot be kept since
/// the rest of the upload was not read (RFC 9112 §9.6).
async fn every_upload_gets_the_413(reject: Reject, rounds: usize) {
    let backend = rejecting_backend(reject).await;
    let proxy = start(config(vec![route(&[backend], &[], 10_000)])).await;
    let mut failures = Vec::new();
    for round in 0..rounds {
        for chunked in [false, true] {
            for expect in [false, true] {
                let how = Upload { chunked, expect };
                let seen = upload(proxy.addr, how).await;
                let ok = seen.status == Some(413)
                    && !seen.continued
                    && seen.end.as_deref().is_ok_and(|rest| rest == b"too big\n");
                if !ok {
                    failures.push(format!("round {round} {how:?}: {seen:?}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{reject:?}: {} of {} uploads went wrong:\n{}",
        failures.len(),
        rounds * 4,
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_413_from_a_backend_that_resets_reaches_every_client() {
    every_upload_gets_the_413(Reject::AndReset, 25).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_413_from_a_backend_that_lingers_reaches_every_client() {
    every_upload_gets_the_413(Reject::AndLinger, 25).await;
}

/// Sends a `Content-Length` upload of `len` bytes on `stream` and reads the answer's status and
/// its body (`content-length` framed); `None` when the proxy had closed the connection (the write
/// fails or no head comes).
async fn post_and_read(stream: &mut TcpStream, len: usize) -> Option<(u16, String)> {
    let head = format!("POST /upload HTTP/1.1\r\nhost: app.test\r\ncontent-length: {len}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.ok()?;
    stream.write_all(&vec![b'x'; len]).await.ok()?;
    let head = read_head(stream).await?;
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let l = l.to_ascii_lowercase();
            l.strip_prefix("content-length: ").map(str::to_owned)
        })
        .expect("a content-length")
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    Some((status, String::from_utf8(body).unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_early_413_the_client_connection_is_kept_in_step_or_closed() {
    let backend = rejecting_backend(Reject::AndReset).await;
    let proxy = start(config(vec![route(&[backend], &[], 10_000)])).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut kept, mut closed) = (0, 0);
    // Uploads of a few socket buffers: depending on timing the proxy has read each whole (sent
    // on, or discarded after the reset), and keeps the connection, or it has not, and closes it
    // after the 413. Either way the next request never meets the rest of an upload (a 400).
    for round in 0..25 {
        let answer = match post_and_read(&mut stream, 256 * 1024).await {
            Some(answer) => {
                kept += usize::from(round > 0);
                answer
            }
            None => {
                closed += 1;
                stream = TcpStream::connect(proxy.addr).await.unwrap();
                post_and_read(&mut stream, 256 * 1024)
                    .await
                    .expect("a fresh connection is answered")
            }
        };
        assert_eq!(answer, (413, "too big\n".to_owned()), "round {round}");
    }
    eprintln!("connections kept {kept}, closed {closed}");
}

/// Sends an HTTP/2 upload of [`UPLOAD`] bytes (`expect`: with `Expect: 100-continue`) with the
/// `h2` crate, sending as the windows allow, and returns the answer's status and body, or what
/// failed.
async fn h2_upload(proxy: SocketAddr, expect: bool) -> Result<(u16, String), String> {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut request = http::Request::put("http://app.test/upload")
        .header("content-length", UPLOAD.to_string())
        .body(())
        .unwrap();
    if expect {
        request
            .headers_mut()
            .insert("expect", http::HeaderValue::from_static("100-continue"));
    }
    let (response, mut body) = client.send_request(request, false).unwrap();
    // Sends until the stream ends (an answer came and the proxy reset it) or all is sent.
    tokio::spawn(async move {
        let mut left = UPLOAD;
        while left > 0 {
            body.reserve_capacity(left.min(64 * 1024));
            let Some(Ok(n)) = std::future::poll_fn(|cx| body.poll_capacity(cx)).await else {
                return;
            };
            let n = n.min(left);
            left -= n;
            if body
                .send_data(bytes::Bytes::from(vec![b'x'; n]), left == 0)
                .is_err()
            {
                return;
            }
        }
    });
    let answer = async {
        let response = response.await.map_err(|e| format!("no head: {e}"))?;
        let status = response.status().as_u16();
        let mut content = response.into_body();
        let mut got = Vec::new();
        while let Some(chunk) = content.data().await {
            let chunk = chunk.map_err(|e| format!("{status}, then the body failed: {e}"))?;
            let _ = content.flow_control().release_capacity(chunk.len());
            got.extend_from_slice(&chunk);
        }
        Ok((status, String::from_utf8_lossy(&got).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(20), answer)
        .await
        .unwrap_or_else(|_| Err("no answer in 20 s".to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_413_reaches_every_http2_client() {
    for reject in [Reject::AndReset, Reject::AndLinger] {
        let backend = rejecting_backend(reject).await;
        let proxy = start(config(vec![route(&[backend], &[], 10_000)])).await;
        let mut failures = Vec::new();
        for round in 0..10 {
            for expect in [false, true] {
                let answer = h2_upload(proxy.addr, expect).await;
                if answer != Ok((413, "too big\n".to_owned())) {
                    failures.push(format!("round {round}, expect {expect}: {answer:?}"));
                }
            }
        }
        assert!(failures.is_empty(), "{reject:?}:\n{}", failures.join("\n"));
    }
}
