//! Limits and timeouts over real sockets: slowloris, 431 and 414, connection and request shedding with
//! `Retry-After`, the per-route request timeout, the connect timeout, and the upstream idle timeout.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use crossfade_proxy::{LimitsConfig, ProxyConfig};
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// A proxy over one blue backend with `limits`.
pub(crate) async fn limited(limits: LimitsConfig) -> (Running, Backend) {
    let blue = backend("blue").await;
    let config = ProxyConfig {
        limits,
        ..config(vec![route(&[blue.addr], &[], 10_000)])
    };
    (start(config).await, blue)
}

/// Reads until the peer closes (or `within` passes, which fails the test); returns the text.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> String {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "still open after {within:?}; read so far: {:?}",
        String::from_utf8_lossy(&seen)
    );
    String::from_utf8_lossy(&seen).into_owned()
}

/// One value of the proxy's `/metrics`, by the line's full name and labels.
pub(crate) async fn metric(running: &Running, series: &str) -> Option<f64> {
    let (_, _, text) = get(&client(), &running.admin_url("/metrics")).await;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn slowloris_client_that_trickles_headers_is_cut_off() {
    let (running, blue) = limited(LimitsConfig {
        header_read_timeout: Duration::from_millis(500),
        ..LimitsConfig::default()
    })
    .await;
    let mut slow = TcpStream::connect(running.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: shop.test\r\n")
        .await
        .unwrap();
    // One header line every 100 ms, for up to 30 s: far longer than the 500 ms allowed.
    let trickle = async {
        for i in 0..300 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let line = format!("X-Trickle-{i}: y\r\n");
            if slow.write_all(line.as_bytes()).await.is_err() {
                return i;
            }
            let mut probe = [0u8; 1];
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(Duration::from_millis(1), slow.read(&mut probe)).await
            {
                return i;
            }
        }
        panic!("a client trickling headers for 30 s was never cut off");
    };
    let lines = trickle.await;
    assert!(lines < 300, "cut off after {lines} header lines");
    assert_eq!(
        blue.hits.load(Ordering::SeqCst),
        0,
        "no half request went upstream"
    );
    // The listener still serves everyone else.
    let (status, _, body) = get(&client(), &running.url("/")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "blue"));
}

/// Reads one response whose body is `blue` off a keep-alive connection (within 10 s).
async fn read_blue(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        while !seen.ends_with(b"blue") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no whole response within 10 s");
    String::from_utf8_lossy(&seen).into_owned()
}

/// hyper keeps a connection's header read timer from one request head to the next and resets it
/// for each (vendor/hyper/PATCHES.md): requests that span several timeouts in all, on one
/// keep-alive connection, are all served.
#[tokio::test]
async fn a_keep_alive_connection_busy_for_longer_than_the_header_read_timeout_stays_open() {
    let (running, blue) = limited(LimitsConfig {
        header_read_timeout: Duration::from_millis(1000),
        ..LimitsConfig::default()
    })
    .await;
    let mut conn = TcpStream::connect(running.addr).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut served = 0;
    while started.elapsed() < Duration::from_millis(3500) {
        conn.write_all(b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n")
            .await
            .unwrap();
        let answer = read_blue(&mut conn).await;
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "request {served}: {answer}"
        );
        served += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(blue.hits.load(Ordering::SeqCst), served);
}

/// The reset timer bounds every head of a connection: a client that trickles the headers of its
/// second request is cut off as one trickling its first.
#[tokio::test]
async fn a_slowloris_second_request_on_a_keep_alive_connection_is_cut_off() {
    let (running, blue) = limited(LimitsConfig {
        header_read_timeout: Duration::from_millis(500),
        ..LimitsConfig::default()
    })
    .await;
    let mut slow = TcpStream::connect(running.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        .await
        .unwrap();
    assert!(read_blue(&mut slow).await.starts_with("HTTP/1.1 200"));
    slow.write_all(b"GET / HTTP/1.1\r\nHost: shop.test\r\n")
        .await
        .unwrap();
    // One header line every 100 ms, for up to 30 s: far longer than the 500 ms allowed.
    let mut cut = false;
    for i in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if slow
            .write_all(format!("X-Trickle-{i}: y\r\n").as_bytes())
            .await
            .is_err()
        {
            cut = true;
            break;
        }
        let mut probe = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(1), slow.read(&mut probe)).await
        {
            cut = true;
            break;
        }
    }
    assert!(
        cut,
        "a second request trickling headers for 30 s was never cut off"
    );
    assert_eq!(
        blue.hits.load(Ordering::SeqCst),
        1,
        "only the first request went upstream"
    );
}

#[tokio::test]
async fn request_head_over_max_header_bytes_gets_431_over_http1_and_http2() {
    let (running, blue) = limited(LimitsConfig {
        max_header_bytes: 16 * 1024,
        ..LimitsConfig::default()
    })
    .await;
    let big = "x".repeat(20 * 1024);
    for (name, client) in [("http/1.1", client()), ("h2c", h2c_client())] {
        let req = Request::get(running.url("/"))
            .header("x-big", big.as_str())
            .body(Full::<Bytes>::default())
            .unwrap();
        let response = client.request(req).await;
        let status = response.map(|r| r.status());
        assert!(
            matches!(status, Ok(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)),
            "{name}: {status:?}"
        );
        // Just under the limit passes.
        let fits = Request::get(running.url("/"))
            .header("x-big", "x".repeat(12 * 1024))
            .body(Full::<Bytes>::default())
            .unwrap();
        assert_eq!(send(&client, fits).await.0, StatusCode::OK, "{name}");
    }
    assert_eq!(
        blue.hits.load(Ordering::SeqCst),
        2,
        "only the requests that fit went upstream"
    );
}

/// A request line that alone does not fit in `limits.max_header_bytes` gets `414 URI Too Long`
/// (RFC 9110 §15.5.15; hyper patch 9 in vendor/hyper), not 431, and reaches no backend; a head
/// over the limit whose request line fits is still 431 (RFC 6585 §5), and a long target that fits
/// is served.
#[tokio::test]
async fn a_request_line_over_max_header_bytes_gets_414_and_long_headers_431() {
    let (running, blue) = limited(LimitsConfig {
        max_header_bytes: 16 * 1024,
        ..LimitsConfig::default()
    })
    .await;
    let long_target = format!("/{}", "a".repeat(20 * 1024));
    let raw = format!("GET {long_target} HTTP/1.1\r\nHost: a\r\n\r\n");
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    // The proxy may answer and close before it has read all of it.
    let _ = stream.write_all(raw.as_bytes()).await;
    let answer = read_to_close(&mut stream, Duration::from_secs(5)).await;
    assert!(
        answer.starts_with("HTTP/1.1 414 URI Too Long\r\n"),
        "{answer:?}"
    );
    // Empty lines before the request line do not count as its end (RFC 9112 §2.2).
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    let _ = stream.write_all(format!("\r\n{raw}").as_bytes()).await;
    let answer = read_to_close(&mut stream, Duration::from_secs(5)).await;
    assert!(
        answer.starts_with("HTTP/1.1 414 "),
        "after CRLF: {answer:?}"
    );
    // The same bytes in a header: the request line ended, the headers are too large.
    let raw = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {long_target}\r\n\r\n");
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    let _ = stream.write_all(raw.as_bytes()).await;
    let answer = read_to_close(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer:?}");
    assert_eq!(blue.hits.load(Ordering::SeqCst), 0, "nothing reached blue");
    let fits = format!("/{}", "a".repeat(12 * 1024));
    assert_eq!(get(&client(), &running.url(&fits)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn requests_over_max_requests_get_503_with_retry_after_and_are_counted() {
    let (running, blue) = limited(LimitsConfig {
        max_requests: 2,
        retry_after: Duration::from_secs(3),
        ..LimitsConfig::default()
    })
    .await;
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let url = running.url("/slow/3000");
            tokio::spawn(async move { get(&client(), &url).await.0 })
        })
        .collect();
    let in_flight = "crossfade_client_requests_in_flight";
    wait_for(|| async { metric(&running, in_flight).await == Some(2.0) }).await;
    let (status, headers, body) = get(&client(), &running.url("/")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "3");
    assert_eq!(
        body,
        "crossfade: overloaded: too many requests (retry later)\n"
    );
    for task in slow {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    let shed = r#"crossfade_shed_total{reason="requests"}"#;
    assert_eq!(metric(&running, shed).await, Some(1.0));
    assert_eq!(metric(&running, in_flight).await, Some(0.0));
    assert_eq!(get(&client(), &running.url("/")).await.0, StatusCode::OK);
    assert_eq!(
        blue.hits.load(Ordering::SeqCst),
        3,
        "the shed request reached no backend"
    );
}

#[tokio::test]
async fn connections_over_max_connections_get_503_then_close_and_the_place_frees() {
    let (running, _blue) = limited(LimitsConfig {
        max_connections: 1,
        ..LimitsConfig::default()
    })
    .await;
    let request = b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n";
    let mut first = TcpStream::connect(running.addr).await.unwrap();
    first.write_all(request).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = first.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    // The first connection is open (keep-alive): the second one is shed.
    let mut second = TcpStream::connect(running.addr).await.unwrap();
    second.write_all(request).await.unwrap();
    let answer = read_to_close(&mut second, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1\r\n"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(
        answer.ends_with("overloaded: too many connections (retry later)\n"),
        "{answer}"
    );
    let shed = r#"crossfade_shed_total{reason="connections"}"#;
    assert_eq!(metric(&running, shed).await, Some(1.0));
    assert_eq!(
        metric(&running, "crossfade_client_connections").await,
        Some(1.0)
    );

    // Once the first connection closes, a new one is served.
    drop(first);
    wait_for(|| async { metric(&running, "crossfade_client_connections").await == Some(0.0) })
        .await;
    let (status, _, body) = get(&client(), &running.url("/")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "blue"));
}

#[tokio::test]
async fn a_shed_http2_connection_gets_503_too() {
    let (running, _blue) = limited(LimitsConfig {
        max_connections: 1,
        ..LimitsConfig::default()
    })
    .await;
    let holder = h2c_client();
    assert_eq!(get(&holder, &running.url("/")).await.0, StatusCode::OK);
    let (status, headers, _) = get(&h2c_client(), &running.url("/")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "1");
    // The first client's connection is still served.
    assert_eq!(get(&holder, &running.url("/")).await.0, StatusCode::OK);
    let shed = r#"crossfade_shed_total{reason="connections"}"#;
    assert_eq!(metric(&running, shed).await, Some(1.0));
}

#[tokio::test]
async fn a_route_response_timeout_overrides_the_proxy_wide_one() {
    let blue = backend("blue").await;
    let mut strict = route(&[blue.addr], &[], 10_000);
    strict.name = "strict".into();
    strict.hosts = vec!["strict.test".into()];
    strict.response_timeout = Some(Duration::from_millis(200));
    let lenient = route(&[blue.addr], &[], 10_000);
    let running = start(config(vec![strict, lenient])).await;
    let client = client();
    let slow = |host: &'static str| {
        Request::get(running.url("/slow/800"))
            .header("host", host)
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    let (status, _, body) = send(&client, slow("strict.test")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        body,
        "crossfade: upstream response timeout (route strict, backend blue)\n"
    );
    let (status, _, body) = send(&client, slow("other.test")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "blue"));
}

#[tokio::test]
async fn an_endpoint_that_never_accepts_gets_504_after_the_connect_timeout() {
    // A listener whose accept queue is full: the kernel drops further SYNs, so a connect hangs.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let full = socket.listen(1).unwrap();
    let addr = full.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await
        {
            fillers.push(stream);
        }
    }
    let mut config = config(vec![route(&[addr], &[], 10_000)]);
    config.upstream.connect_timeout = Duration::from_millis(300);
    let running = start(config).await;
    let (status, _, body) = get(&client(), &running.url("/")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        body,
        "crossfade: upstream connect timeout (route web, backend blue)\n"
    );
    let errors =
        r#"crossfade_upstream_errors_total{route="web",backend="blue",kind="connect_timeout"}"#;
    assert_eq!(metric(&running, errors).await, Some(1.0));
    drop(full);
}

#[tokio::test]
async fn the_proxy_closes_pooled_connections_idle_past_the_idle_timeout() {
    let blue = backend("blue").await;
    let mut config = config(vec![route(&[blue.addr], &[], 10_000)]);
    config.upstream.idle_timeout = Duration::from_millis(300);
    let running = start(config).await;
    assert_eq!(get(&client(), &running.url("/")).await.0, StatusCode::OK);
    assert_eq!(blue.opened.load(Ordering::SeqCst), 1);
    // The backend keeps connections forever: only the proxy's idle timeout can close this one.
    wait_for(|| async { blue.closed.load(Ordering::SeqCst) == 1 }).await;
}

/// Polls `check` every 20 ms for up to 10 s.
pub(crate) async fn wait_for<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not met within 10 s");
}

#[tokio::test]
async fn an_idle_keep_alive_client_connection_is_closed_after_the_header_read_timeout() {
    let (running, _blue) = limited(LimitsConfig {
        header_read_timeout: Duration::from_millis(300),
        ..LimitsConfig::default()
    })
    .await;
    let mut idle = TcpStream::connect(running.addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        .await
        .unwrap();
    // The response, then nothing until the proxy closes: the wait for the next head is bounded.
    let answer = read_to_close(&mut idle, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("blue"), "{answer}");
}

/// hyper lets an idle connection's buffers go 20 ms into the wait for its next head (the
/// `vendor/hyper` patch, PATCHES.md): a head that arrives in pieces with longer pauses is still
/// read whole (a buffer holding part of a head is kept), and a connection that let its buffers go
/// serves its next request, then still closes at the header read timeout.
#[tokio::test]
async fn heads_in_pieces_and_requests_after_pauses_are_served_on_one_connection() {
    let (running, _blue) = limited(LimitsConfig {
        header_read_timeout: Duration::from_secs(2),
        ..LimitsConfig::default()
    })
    .await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    let pause = Duration::from_millis(100);
    for _ in 0..2 {
        for piece in ["GET / HT", "TP/1.1\r\nHost: sh", "op.test\r\n", "\r\n"] {
            stream.write_all(piece.as_bytes()).await.unwrap();
            tokio::time::sleep(pause).await;
        }
        let mut answer = Vec::new();
        while !String::from_utf8_lossy(&answer).ends_with("blue") {
            let mut buf = [0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
                .await
                .expect("an answer within 10 s")
                .unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..n]);
        }
        assert!(answer.starts_with(b"HTTP/1.1 200"));
        // Idle long enough for the buffers to go before the next request.
        tokio::time::sleep(pause).await;
    }
    assert_eq!(
        read_to_close(&mut stream, Duration::from_secs(10)).await,
        ""
    );
}

#[tokio::test]
async fn a_client_that_connects_and_sends_nothing_or_half_a_preface_is_cut_off() {
    let (running, _blue) = limited(LimitsConfig {
        header_read_timeout: Duration::from_millis(300),
        ..LimitsConfig::default()
    })
    .await;
    let mut silent = TcpStream::connect(running.addr).await.unwrap();
    let answer = read_to_close(&mut silent, Duration::from_secs(10)).await;
    assert_eq!(answer, "", "closed without a word");
    // Half of the HTTP/2 preface, then nothing: the protocol is never known, the deadline holds.
    let mut half = TcpStream::connect(running.addr).await.unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    assert_eq!(read_to_close(&mut half, Duration::from_secs(10)).await, "");
    wait_for(|| async { metric(&running, "crossfade_client_connections").await == Some(0.0) })
        .await;
}

/// Trial report §6: the admin listener closes a connection that sends nothing, and a keep-alive
/// connection left idle after its response, within `limits.header_read_timeout`.
#[tokio::test]
async fn an_idle_admin_connection_is_closed_after_the_header_read_timeout() {
    let (running, _blue) = limited(LimitsConfig {
        header_read_timeout: Duration::from_millis(500),
        ..LimitsConfig::default()
    })
    .await;
    let mut silent = TcpStream::connect(running.admin).await.unwrap();
    assert_eq!(read_to_close(&mut silent, Duration::from_secs(5)).await, "");

    let mut kept = TcpStream::connect(running.admin).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut kept, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
}

/// Trial report §6: an admin request whose body stops short of its `Content-Length` gets 408 and
/// the connection is closed, within `limits.header_read_timeout`.
#[tokio::test]
async fn a_short_admin_request_body_gets_408_and_is_closed() {
    let (running, _blue) = limited(LimitsConfig {
        header_read_timeout: Duration::from_millis(500),
        ..LimitsConfig::default()
    })
    .await;
    let mut stream = TcpStream::connect(running.admin).await.unwrap();
    stream
        .write_all(
            b"PUT /routes/web/weights HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n{\"blue\":",
        )
        .await
        .unwrap();
    let answer = read_to_close(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
    assert!(answer.contains("did not arrive in full"), "{answer:?}");
}

/// Opens `n` connections to `addr` that send nothing.
async fn idle_connections(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    held
}

/// Trial report §6: a flood of idle connections below `limits.max_admin_connections` does not
/// keep the admin API from answering.
#[tokio::test]
async fn the_admin_answers_while_a_flood_of_idle_connections_is_held() {
    let (running, _blue) = limited(LimitsConfig::default()).await;
    let held = idle_connections(running.admin, 50).await;
    let (status, _, _) = get(&client(), &running.admin_url("/healthz")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = get(&client(), &running.admin_url("/status")).await;
    assert_eq!(status, StatusCode::OK);
    drop(held);
}

/// Trial 13 N6: idle admin connections, however many one client holds, do not keep `GET
/// /healthz` and `GET /readyz` from answering: at `limits.max_admin_connections` a new connection
/// takes the place of the one that has waited longest for a request, which is closed (before,
/// the probes got 503 and a kubelet probing the admin port restarted a healthy proxy).
#[tokio::test]
async fn probes_answer_while_a_client_holds_more_idle_admin_connections_than_the_limit() {
    let (running, _blue) = limited(LimitsConfig {
        header_read_timeout: Duration::from_secs(120),
        max_admin_connections: 4,
        ..LimitsConfig::default()
    })
    .await;
    // Twice the limit, each with one byte of a request that never ends (the trial's "G").
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut stream = TcpStream::connect(running.admin).await.unwrap();
        stream.write_all(b"G").await.unwrap();
        held.push(stream);
    }
    for path in ["/healthz", "/readyz", "/healthz", "/readyz"] {
        let (status, _, body) = get(&client(), &running.admin_url(path)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body:?}");
    }
    // Places were made by closing the connections that waited longest (accepted in the kernel
    // queue's order): the first four, long before their header read timeout.
    for stream in &mut held[..4] {
        read_to_close(stream, Duration::from_secs(30)).await;
    }
}
