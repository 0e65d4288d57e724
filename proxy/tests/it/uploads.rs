//! Request bodies on their way upstream (trial 3, finding 1): the response timeout runs from the
//! end of the upload, never while the client is still sending; a client that stalls its upload gets
//! 408 and is never charged to the backend; a backend that stops reading an upload is.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use crossfade_proxy::config::LimitsConfig;
use crossfade_proxy::{ProxyConfig, Slot};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// A proxy in front of `blue` with a 300 ms response timeout and `body_read_timeout`, where a
/// single upstream failure ejects an endpoint.
async fn proxy(blue: SocketAddr, body_read_timeout: Duration) -> Running {
    let mut web = route(&[blue], &[], 10_000);
    web.outlier.consecutive_failures = 1;
    let mut config = ProxyConfig {
        limits: LimitsConfig {
            body_read_timeout,
            ..LimitsConfig::default()
        },
        ..config(vec![web])
    };
    config.upstream.response_timeout = Duration::from_millis(300);
    start(config).await
}

/// Reads one answer with a `content-length`: its status and body.
async fn read_answer(stream: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        fill(stream, &mut buf).await;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no content-length in {head:?}"));
    let mut body = buf.split_off(end + 4);
    while body.len() < length {
        fill(stream, &mut body).await;
    }
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 16 * 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
        .await
        .expect("no answer within 10 s")
        .unwrap();
    assert!(n > 0, "closed after {} bytes", buf.len());
    buf.extend_from_slice(&chunk[..n]);
}

/// The value of one `/metrics` series, by its name and labels.
async fn metric(running: &Running, series: &str) -> f64 {
    let (_, _, text) = get(&client(), &running.admin_url("/metrics")).await;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// An upload that takes at least 1.5 s in ten steps (each well within `body_read_timeout`) is
/// answered, although the response timeout is 300 ms: the timeout waits for the last byte. The
/// latency recorded for the backend (what the analysis judges) runs from the upload's end too, so
/// it is well below the upload's own 1.5 s.
#[tokio::test]
async fn an_upload_slower_than_the_response_timeout_is_answered() {
    let blue = backend("blue").await;
    let running = proxy(blue.addr, Duration::from_secs(5)).await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    let head = "POST /upload HTTP/1.1\r\nhost: app.test\r\ncontent-length: 1000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        stream.write_all(&[b'x'; 100]).await.unwrap();
    }
    assert_eq!(read_answer(&mut stream).await, (200, "1000".to_owned()));
    let stats = running.proxy.backend_stats("web", Slot::Blue).unwrap();
    assert_eq!(stats.errors, 0);
    assert_eq!(stats.latency.count(), 1);
    let seconds = stats.latency.sum_seconds;
    assert!(
        seconds < 1.0,
        "{seconds}s recorded: the client's upload time"
    );
}

/// Clients that start an upload and stop sending get 408 after `body_read_timeout` (not a 504
/// after the response timeout), and none of it counts against the endpoint: no backend error, no
/// ejection (one upstream failure would eject it here), the next request is served; the metrics
/// count them as the clients' failures.
#[tokio::test]
async fn a_stalled_upload_gets_408_and_is_never_charged_to_the_backend() {
    let blue = backend("blue").await;
    let running = proxy(blue.addr, Duration::from_millis(500)).await;
    let head = "POST /upload HTTP/1.1\r\nhost: app.test\r\ncontent-length: 100000\r\n\r\nabc";
    let stalls = (0..3).map(|_| async {
        let mut stream = TcpStream::connect(running.addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let answer = read_answer(&mut stream).await;
        // The rest of the body will never be read: the connection closes (RFC 9110 §15.5.9).
        let mut rest = [0u8; 64];
        let end = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut rest)).await;
        assert!(matches!(end, Ok(Ok(0) | Err(_))), "{end:?}");
        answer
    });
    for (status, body) in futures_util::future::join_all(stalls).await {
        assert_eq!(status, 408, "{body}");
        assert_eq!(
            body,
            "crossfade: request timeout: no request body byte within limits.body_read_timeout\n"
        );
    }
    let stats = running.proxy.backend_stats("web", Slot::Blue).unwrap();
    assert_eq!((stats.errors, stats.in_flight), (0, 0));
    for (series, value) in [
        (
            r#"crossfade_client_body_failures_total{reason="timeout"}"#,
            3.0,
        ),
        (
            r#"crossfade_client_body_failures_total{reason="aborted"}"#,
            0.0,
        ),
        (
            r#"crossfade_backend_errors_total{route="web",backend="blue"}"#,
            0.0,
        ),
        (
            r#"crossfade_ejections_total{route="web",backend="blue",reason="upstream_failure"}"#,
            0.0,
        ),
        (
            r#"crossfade_backend_healthy_endpoints{route="web",backend="blue"}"#,
            1.0,
        ),
    ] {
        assert_eq!(metric(&running, series).await, value, "{series}");
    }
    let (status, _, body) = get(&client(), &running.url("/")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "blue"));
}

/// A backend that accepts an upload's connection and never reads from it holds the upload up: the
/// response timeout runs while the backend owes the next move, so the client gets 504 and the
/// failure is the backend's.
#[tokio::test]
async fn a_backend_that_stops_reading_an_upload_gets_504_after_the_response_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let deaf = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let running = proxy(deaf, Duration::from_secs(60)).await;
    let request = Request::builder()
        .method(Method::POST)
        .uri(running.url("/upload"))
        .body(Full::new(Bytes::from(vec![b'x'; 32 << 20])))
        .unwrap();
    let (status, _, body) = send(&client(), request).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    let stats = running.proxy.backend_stats("web", Slot::Blue).unwrap();
    assert_eq!(stats.errors, 1);
    held.abort();
}

/// An h2c backend that reads each request body whole and answers its length.
async fn h2c_upload_backend() -> SocketAddr {
    use http_body_util::BodyExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service =
                hyper::service::service_fn(|request: Request<hyper::body::Incoming>| async move {
                    let len = match request.into_body().collect().await {
                        Ok(body) => body.to_bytes().len(),
                        Err(_) => 0,
                    };
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
                        len.to_string(),
                    ))))
                });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    addr
}

/// The same over an h2c backend, where the body streams as DATA frames from hyper's own task: a
/// slow upload is answered, a stalled one gets 408 and is not the backend's.
#[tokio::test]
async fn over_an_h2c_backend_a_slow_upload_is_answered_and_a_stalled_one_gets_408() {
    let addr = h2c_upload_backend().await;
    let mut web = route(&[addr], &[], 10_000);
    web.blue.protocol = crossfade_proxy::config::UpstreamProtocol::H2c;
    // The slow upload's 100 ms steps stay well inside the body timeout even when a loaded machine
    // stalls the test for a moment (with 500 ms, one step 450 ms late got a false 408); the stalled
    // one still gets its 408, 2 s later.
    let mut config = ProxyConfig {
        limits: LimitsConfig {
            body_read_timeout: Duration::from_secs(2),
            ..LimitsConfig::default()
        },
        ..config(vec![web])
    };
    config.upstream.response_timeout = Duration::from_millis(300);
    let running = start(config).await;
    let mut slow = TcpStream::connect(running.addr).await.unwrap();
    let head = "POST /upload HTTP/1.1\r\nhost: app.test\r\ncontent-length: 600\r\n\r\n";
    slow.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        slow.write_all(&[b'x'; 100]).await.unwrap();
    }
    assert_eq!(read_answer(&mut slow).await, (200, "600".to_owned()));
    let mut stalled = TcpStream::connect(running.addr).await.unwrap();
    let head = "POST /upload HTTP/1.1\r\nhost: app.test\r\ncontent-length: 600\r\n\r\nabc";
    stalled.write_all(head.as_bytes()).await.unwrap();
    assert_eq!(read_answer(&mut stalled).await.0, 408);
    let stats = running.proxy.backend_stats("web", Slot::Blue).unwrap();
    assert_eq!((stats.errors, stats.in_flight), (0, 0));
}

/// A `GET` (or `HEAD`) with a body of no announced length, as Elasticsearch's `GET _search` is
/// sent: over HTTP/2 without `content-length`, over HTTP/1.1 chunked. hyper's client sends no body
/// for these methods unless told how to frame it, so the body was dropped and the backend
/// answered a request without it (`/upload` answered "0"). It reaches the backend whole now.
#[tokio::test]
async fn a_get_with_a_body_of_unknown_length_reaches_the_backend_with_its_body() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;

    // HTTP/2: HEADERS without END_STREAM and no content-length, then DATA.
    type Frame = Result<http_body::Frame<Bytes>, std::convert::Infallible>;
    let (tx, rx) = tokio::sync::mpsc::channel::<Frame>(2);
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|frame| (frame, rx))
    });
    let body = http_body_util::StreamBody::new(Box::pin(frames));
    let stream = TcpStream::connect(running.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let request = Request::get(running.url("/upload")).body(body).unwrap();
    let answer = tokio::spawn(async move { sender.send_request(request).await });
    tx.send(Ok(http_body::Frame::data(Bytes::from_static(
        b"{\"query\":1}",
    ))))
    .await
    .unwrap();
    drop(tx);
    let response = answer.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let got = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&got[..], b"11", "the backend got the 11-byte body");

    // HTTP/1.1, chunked.
    let mut http1 = TcpStream::connect(running.addr).await.unwrap();
    http1
        .write_all(
            b"GET /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
    assert_eq!(read_answer(&mut http1).await, (200, "5".to_owned()));
}

/// A backend that reads a request head and then, for `/stuck`, never reads again (a backend far
/// slower than its uploader); any other request's `Content-Length` body is read whole and
/// answered `200 got <n>`.
async fn stuck_upload_backend() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if head.starts_with("put /stuck ") {
                    std::future::pending::<()>().await;
                }
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |n| n.trim().parse().unwrap());
                let mut body = vec![0u8; length];
                if stream.read_exact(&mut body).await.is_err() {
                    return;
                }
                let text = format!("got {length}");
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_upload_its_backend_does_not_read_leaves_the_connections_other_uploads_moving() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let backend = stuck_upload_backend().await;
    let proxy = start(config(vec![route(&[backend], &[], 10_000)])).await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);

    // One stream uploads to a backend that reads nothing: it stops once every buffer on the way
    // and its own window at the proxy are full.
    let stuck = http::Request::put("http://app.test/stuck")
        .body(())
        .unwrap();
    let (_response, mut body) = client.send_request(stuck, false).unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let counted = sent.clone();
    tokio::spawn(async move {
        loop {
            body.reserve_capacity(64 * 1024);
            let Some(Ok(n)) = std::future::poll_fn(|cx| body.poll_capacity(cx)).await else {
                return;
            };
            if body
                .send_data(bytes::Bytes::from(vec![b'x'; n]), false)
                .is_err()
            {
                return;
            }
            counted.fetch_add(n, Ordering::Relaxed);
        }
    });
    // Stopped: no more sent in half a second, past the proxy's stream window (1 MiB).
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = sent.load(Ordering::Relaxed);
        if now == last && now > 1 << 20 {
            break;
        }
        last = now;
    }

    // Another upload on the same connection still gets through and is answered.
    let other = http::Request::put("http://app.test/other")
        .header("content-length", "100000")
        .body(())
        .unwrap();
    let (response, mut body) = client.send_request(other, false).unwrap();
    let upload = async move {
        let mut left = 100_000;
        while left > 0 {
            body.reserve_capacity(left);
            let n = std::future::poll_fn(|cx| body.poll_capacity(cx))
                .await
                .unwrap()
                .unwrap()
                .min(left);
            left -= n;
            body.send_data(bytes::Bytes::from(vec![b'y'; n]), left == 0)
                .unwrap();
        }
    };
    let answer = async {
        let response = response.await.unwrap();
        let mut content = response.into_body();
        let mut got = Vec::new();
        while let Some(chunk) = content.data().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        String::from_utf8(got).unwrap()
    };
    let both = async { tokio::join!(upload, answer).1 };
    let answer = tokio::time::timeout(Duration::from_secs(20), both)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "an upload beside one stuck at {} B got no answer",
                sent.load(Ordering::Relaxed)
            )
        });
    assert_eq!(answer, "got 100000");
}
