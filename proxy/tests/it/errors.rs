//! Error statuses at the edge, and the single safe retry after a connect failure.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crossfade_proxy::{Slot, Weights};
use http::{Method, Request, StatusCode};
use http_body_util::Full;

use crate::support::*;

#[tokio::test]
async fn refused_upstream_gets_502_naming_route_and_backend() {
    let dead = refused_addr().await;
    let running = start(config(vec![route(&[], &[dead], 0)])).await;
    let (status, headers, body) = get(&client(), &running.url("/")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(
        body,
        "crossfade: upstream connect refused (route web, backend green)\n"
    );
    let stats = running.proxy.backend_stats("web", Slot::Green).unwrap();
    assert_eq!((stats.requests, stats.errors, stats.in_flight), (1, 1, 0));
}

#[tokio::test]
async fn slow_upstream_gets_504_after_the_response_timeout() {
    let blue = backend("blue").await;
    let mut config = config(vec![route(&[blue.addr], &[], 10_000)]);
    config.upstream.response_timeout = Duration::from_millis(200);
    let running = start(config).await;
    let started = tokio::time::Instant::now();
    let (status, _, body) = get(&client(), &running.url("/slow/3000")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        body,
        "crossfade: upstream response timeout (route web, backend blue)\n"
    );
}

/// An upstream connection keeps one response timer for the requests it carries, left at an
/// earlier request's deadline while that is no later than the next one's. Over one pooled
/// connection: a request that outlasts the previous request's deadline but not its own gets its
/// response (the timer fired early and moved on), and a request that outlasts its own deadline gets
/// 504 (the moved timer fires again), not a wait without end. Margins of 1.2 s or more either way.
#[tokio::test]
async fn a_pooled_connection_times_each_request_from_its_own_start() {
    let blue = backend("blue").await;
    let mut config = config(vec![route(&[blue.addr], &[], 10_000)]);
    let timeout = Duration::from_millis(4_000);
    config.upstream.response_timeout = timeout;
    // The connection stays pooled across the pause below.
    config.upstream.idle_timeout = Duration::from_secs(120);
    let running = start(config).await;
    let client = client();
    let get = |path: &str| {
        let url = running.url(path);
        let client = client.clone();
        async move {
            let answer = get(&client, &url);
            tokio::time::timeout(Duration::from_secs(60), answer)
                .await
                .expect("an answer within a minute")
        }
    };
    // Opens the connection (a request on a fresh connection has a timer of its own).
    assert_eq!(get("/").await.0, StatusCode::OK);
    // The connection's timer is made here, for this request's deadline.
    let first = tokio::time::Instant::now();
    assert_eq!(get("/").await.0, StatusCode::OK);
    // The next request starts at least 2.5 s after the first, and its answer comes 2.8 s later:
    // after the first request's deadline (4 s from its start), 1.2 s or more before its own.
    tokio::time::sleep_until(first + Duration::from_millis(2_500)).await;
    let (status, _, body) = get("/slow/2800").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "blue"));
    assert!(
        first.elapsed() > timeout,
        "the first deadline passed meanwhile"
    );
    assert_eq!(
        blue.opened.load(Ordering::SeqCst),
        1,
        "one upstream connection"
    );
    // Its timer is at the second request's deadline now, earlier than this one's.
    let (status, _, body) = get("/slow/20000").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        body,
        "crossfade: upstream response timeout (route web, backend blue)\n"
    );
    assert_eq!(blue.opened.load(Ordering::SeqCst), 1, "the same connection");
}

#[tokio::test]
async fn both_weights_zero_gets_503_and_nothing_goes_upstream() {
    let blue = backend("blue").await;
    let green = backend("green").await;
    let running = start(config(vec![route(&[blue.addr], &[green.addr], 10_000)])).await;
    running
        .proxy
        .set_weights("web", Weights { blue: 0, green: 0 })
        .unwrap();
    let client = client();
    for _ in 0..10 {
        let (status, _, body) = get(&client, &running.url("/")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            "crossfade: route web is disabled (both weights are 0)\n"
        );
    }
    assert_eq!(blue.hits.load(Ordering::SeqCst), 0);
    assert_eq!(green.hits.load(Ordering::SeqCst), 0);
}

/// Case C09's proxy half: a crash-looping green refuses connections; bodiless requests that hit it
/// are re-sent to blue, so clients see no error, and the retries are counted.
#[tokio::test]
async fn refused_bodiless_requests_are_retried_once_on_the_other_backend() {
    let blue = backend("blue").await;
    let dead = refused_addr().await;
    let running = start(config(vec![route(&[blue.addr], &[dead], 5_000)])).await;
    let client = client();
    for _ in 0..40 {
        let (status, headers, _) = get(&client, &running.url("/api")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-pool"], "blue");
    }
    let green = running.proxy.backend_stats("web", Slot::Green).unwrap();
    assert!(green.errors > 0, "some requests must have picked green");
    assert_eq!(green.in_flight, 0);
    let metrics = get(&client, &running.admin_url("/metrics")).await.2;
    let line = format!(
        "crossfade_retries_total{{route=\"web\",backend=\"green\",reason=\"connect_refused\"}} {}",
        green.errors
    );
    assert!(metrics.contains(&line), "{line} not in\n{metrics}");
}

/// A dead blue (the active slot) at full weight, green at 0: a request with a body has nowhere else
/// to go (a weight-0 preview gets no request, retries included), so its connect failure is the
/// client's 502. (The active slot at weight 0 does back a preview up: `overflow`.)
#[tokio::test]
async fn a_request_with_a_body_is_not_retried_where_no_other_endpoint_may_take_it() {
    let dead = refused_addr().await;
    let green = backend("green").await;
    let running = start(config(vec![route(&[dead], &[green.addr], 10_000)])).await;
    let req = Request::builder()
        .method(Method::POST)
        .uri(running.url("/upload"))
        .body(Full::new(Bytes::from_static(b"order")))
        .unwrap();
    let (status, _, _) = send(&client(), req).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(green.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn weight_zero_backend_gets_no_retry_either() {
    let dead = refused_addr().await;
    let green = backend("green").await;
    let running = start(config(vec![route(&[dead], &[green.addr], 10_000)])).await;
    let (status, _, _) = get(&client(), &running.url("/")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(green.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn refused_endpoint_is_retried_on_another_endpoint_of_the_same_backend() {
    let dead = refused_addr().await;
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[dead, blue.addr], &[], 10_000)])).await;
    let client = client();
    for _ in 0..10 {
        assert_eq!(get(&client, &running.url("/")).await.0, StatusCode::OK);
    }
}

/// RFC 9112 §3.2: a request with two Host lines gets 400 and reaches no backend (else the proxy could
/// route on one host while the backend acts on the other).
#[tokio::test]
async fn two_host_headers_get_400_and_nothing_goes_upstream() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let request = Request::builder()
        .method(Method::GET)
        .uri(running.url("/"))
        .header("host", "public.example")
        .header("host", "secret.example")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = send(&client(), request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, "crossfade: bad request: more than one host header\n");
    assert_eq!(blue.hits.load(Ordering::SeqCst), 0);
}

/// Blue with a dead endpoint and a live one, nothing to eject it (outlier detection off), green at 0:
/// every request that the round-robin sends to the dead endpoint needs a retry. Round-robin (not
/// the default p2c, which soon avoids the dead endpoint by its cost) so that exactly every other
/// first attempt fails.
async fn half_dead(budget: crossfade_proxy::config::RetryBudgetConfig) -> (Running, Backend) {
    let blue = backend("blue").await;
    let green = backend("green").await;
    let dead = refused_addr().await;
    let mut r = route(&[dead, blue.addr], &[green.addr], 10_000);
    r.outlier.consecutive_failures = 0;
    r.balance = Some(crossfade_proxy::config::BalanceConfig {
        policy: Some(crossfade_proxy::config::BalancePolicy::RoundRobin),
        ..Default::default()
    });
    let mut c = config(vec![r]);
    c.upstream.retry_budget = budget;
    (start(c).await, blue)
}

#[tokio::test]
async fn the_retry_budget_caps_retries_off_a_failing_endpoint_and_counts_the_rest() {
    // Generous default (20% of requests plus 10/s): every connect failure is retried.
    let (running, _blue) = half_dead(Default::default()).await;
    let client = client();
    for _ in 0..20 {
        let (status, _, body) = get(&client, &running.url("/")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // The round-robin put every other first attempt on the dead endpoint: 10 GETs re-sent.
    let (_, _, text) = get(&client, &running.admin_url("/metrics")).await;
    for line in [
        r#"crossfade_retries_total{route="web",backend="blue",reason="connect_refused"} 10"#,
        r#"crossfade_retries_by_method_total{route="web",backend="blue",method="GET"} 10"#,
        r#"crossfade_retries_by_method_total{route="web",backend="blue",method="other"} 0"#,
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    // No share of traffic and one retry per second: a burst of failures is mostly not retried.
    let budget = crossfade_proxy::config::RetryBudgetConfig {
        ratio: crossfade_proxy::Percent(0),
        min_per_second: 1,
    };
    let (running, _blue) = half_dead(budget).await;
    let started = tokio::time::Instant::now();
    let mut failed = 0u64;
    for _ in 0..20 {
        let (status, _, _) = get(&client, &running.url("/")).await;
        if status != StatusCode::OK {
            assert_eq!(status, StatusCode::BAD_GATEWAY);
            failed += 1;
        }
    }
    // The round-robin sends 10 of the 20 first attempts to the dead endpoint (a retry does not move
    // it); the budget allows 1 retry at start plus 1 per second.
    let allowed = 1 + started.elapsed().as_secs() + 1;
    assert!(
        failed + allowed >= 10,
        "{failed} failed, {allowed} retries allowed"
    );
    assert!(failed >= 1, "the budget refused nothing");
    let (_, _, text) = get(&client, &running.admin_url("/metrics")).await;
    let line =
        format!(r#"crossfade_retry_budget_exhausted_total{{route="web",backend="blue"}} {failed}"#);
    assert!(text.contains(&line), "missing {line:?} in\n{text}");
}

/// Trial 3 finding 6: a connect failure means no byte of the request was written, so a request
/// with a body goes to the live endpoint too, whatever its method: no 502, and each body arrives
/// once and whole (its length is echoed), `Expect: 100-continue` included. Counted as retries by
/// method `other` (POST) and `PUT`, within the retry budget.
#[tokio::test]
async fn requests_with_bodies_are_retried_elsewhere_after_a_connect_failure() {
    let (running, blue) = half_dead(Default::default()).await;
    let client = client();
    for i in 0..20usize {
        let method = if i % 4 == 2 {
            Method::PUT
        } else {
            Method::POST
        };
        let mut request = Request::builder()
            .method(method)
            .uri(running.url("/upload"));
        if i % 3 == 0 {
            request = request.header("expect", "100-continue");
        }
        let body = vec![b'a' + (i % 26) as u8; 1_000 + i];
        let request = request.body(Full::new(Bytes::from(body))).unwrap();
        let (status, _, body) = send(&client, request).await;
        assert_eq!((status, body), (StatusCode::OK, (1_000 + i).to_string()));
    }
    assert_eq!(
        blue.hits.load(Ordering::SeqCst),
        20,
        "each body arrives once"
    );
    let (_, _, text) = get(&client, &running.admin_url("/metrics")).await;
    for line in [
        r#"crossfade_retries_total{route="web",backend="blue",reason="connect_refused"} 10"#,
        r#"crossfade_retries_by_method_total{route="web",backend="blue",method="other"} 5"#,
        r#"crossfade_retries_by_method_total{route="web",backend="blue",method="PUT"} 5"#,
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

/// An h2 client's POST (its body a stream of DATA frames) is retried the same way.
#[tokio::test]
async fn an_http2_post_with_a_body_is_retried_elsewhere_after_a_connect_failure() {
    let (running, blue) = half_dead(Default::default()).await;
    let client = h2c_client();
    for i in 0..4usize {
        let request = Request::post(running.url("/upload"))
            .body(Full::new(Bytes::from(vec![b'x'; 5_000 + i])))
            .unwrap();
        let (status, _, body) = send(&client, request).await;
        assert_eq!((status, body), (StatusCode::OK, (5_000 + i).to_string()));
    }
    assert_eq!(blue.hits.load(Ordering::SeqCst), 4);
}

/// A backend endpoint that reads each request whole (head and `content-length` body), counts it
/// and closes the connection without answering: the request reached the backend.
async fn reading_then_closing_backend() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let read = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&read);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).await.unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(("content-length", value)) = line
                        .to_ascii_lowercase()
                        .split_once(':')
                        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                        .as_ref()
                        .map(|(n, v)| (n.as_str(), v.as_str()))
                    {
                        length = value.parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).await.is_ok() {
                    count.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, read)
}

/// The other half of finding 6: a POST or PUT whose body was written is never sent again, even with
/// another endpoint up and the retry budget full: the endpoint that read it and closed gets it
/// once, the live one never sees it, the client gets the 502.
#[tokio::test]
async fn a_request_whose_body_was_sent_is_never_resent_even_with_another_endpoint_up() {
    let (closing, read) = reading_then_closing_backend().await;
    let blue = backend("blue").await;
    let mut r = route(&[closing, blue.addr], &[], 10_000);
    r.outlier.consecutive_failures = 0;
    r.balance = Some(crossfade_proxy::config::BalanceConfig {
        policy: Some(crossfade_proxy::config::BalancePolicy::RoundRobin),
        ..Default::default()
    });
    let running = start(config(vec![r])).await;
    let client = client();
    let mut failed = 0;
    for i in 0..10 {
        let method = if i % 2 == 0 {
            Method::POST
        } else {
            Method::PUT
        };
        let request = Request::builder()
            .method(method)
            .uri(running.url("/upload"))
            .body(Full::new(Bytes::from_static(b"order")))
            .unwrap();
        let (status, _, body) = send(&client, request).await;
        match status {
            StatusCode::OK => assert_eq!(body, "5"),
            StatusCode::BAD_GATEWAY => failed += 1,
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(
        failed, 5,
        "round-robin: every other request to the closing endpoint"
    );
    assert_eq!(read.load(Ordering::SeqCst), 5);
    assert_eq!(
        blue.hits.load(Ordering::SeqCst),
        5,
        "no body was sent twice"
    );
    let (_, _, text) = get(&client, &running.admin_url("/metrics")).await;
    let line = r#"crossfade_retries_total{route="web",backend="blue",reason="reset"} 0"#;
    assert!(text.contains(line), "missing {line:?} in\n{text}");
}

/// What a [`scripted_backend`] does with one request.
enum Reply {
    /// Writes these bytes and waits for the next request on the connection.
    KeepAlive(Vec<u8>),
    /// Writes these bytes and closes.
    Last(Vec<u8>),
    /// Closes without a word.
    Close,
}

/// A raw HTTP/1.1 backend that reads each request head on a connection (no body) and answers as
/// `script` says for its request line.
async fn scripted_backend(script: fn(&str) -> Reply) -> std::net::SocketAddr {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                loop {
                    let (mut target, mut line) = (String::new(), String::new());
                    while reader.read_line(&mut line).await.unwrap_or(0) > 0 && line != "\r\n" {
                        if target.is_empty() {
                            target = line.clone();
                        }
                        line.clear();
                    }
                    if target.is_empty() {
                        return;
                    }
                    let (bytes, last) = match script(&target) {
                        Reply::KeepAlive(bytes) => (bytes, false),
                        Reply::Last(bytes) => (bytes, true),
                        Reply::Close => return,
                    };
                    if reader.get_mut().write_all(&bytes).await.is_err() || last {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A backend that answers `101 Switching Protocols` (no `Upgrade` header either) to a request for
/// `/switch` and then closes, and `200 ok` with keep-alive to anything else.
async fn switching_backend() -> std::net::SocketAddr {
    scripted_backend(|target| match target.contains(" /switch ") {
        true => Reply::Last(b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec()),
        false => Reply::KeepAlive(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()),
    })
    .await
}

/// Reads one response with a `content-length` from `reader`: its status and body.
async fn read_response(reader: &mut tokio::io::BufReader<tokio::net::TcpStream>) -> (u16, String) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let (mut status, mut length) = (String::new(), 0);
    reader.read_line(&mut status).await.unwrap();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.unwrap();
    let code = status.get(9..12).unwrap_or_default().parse().unwrap_or(0);
    (code, String::from_utf8(body).unwrap())
}

/// Trial 3 finding 10 (RFC 9110 §15.2.2: a server must not switch to a protocol the client did not
/// ask for): a backend's 101 to a plain GET is a 502 naming the route, counted as the backend's
/// protocol error, and the client's keep-alive connection lives on: the request pipelined behind
/// it is answered.
#[tokio::test]
async fn an_unasked_101_is_a_502_and_the_client_connection_lives_on() {
    use tokio::io::AsyncWriteExt;
    let switching = switching_backend().await;
    let running = start(config(vec![route(&[switching], &[], 10_000)])).await;
    let stream = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let mut reader = tokio::io::BufReader::new(stream);
    let pipelined = "GET /switch HTTP/1.1\r\nhost: a\r\n\r\nGET /next HTTP/1.1\r\nhost: a\r\n\r\n";
    reader
        .get_mut()
        .write_all(pipelined.as_bytes())
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), read_response(&mut reader)).await;
    assert_eq!(
        first.unwrap(),
        (
            502,
            "crossfade: upstream protocol error (route web, backend blue)\n".to_owned()
        )
    );
    let second = tokio::time::timeout(Duration::from_secs(10), read_response(&mut reader)).await;
    assert_eq!(second.unwrap(), (200, "ok".to_owned()));
    let (_, _, text) = get(&client(), &running.admin_url("/metrics")).await;
    let line = r#"crossfade_upstream_errors_total{route="web",backend="blue",kind="protocol"} 1"#;
    assert!(text.contains(line), "missing {line:?} in\n{text}");
}

/// A backend answering `/lines/{n}` with a head of `n` header lines in all (`content-length`
/// included), keep-alive.
async fn many_headers_backend() -> std::net::SocketAddr {
    scripted_backend(|target| {
        let Some(n) = target
            .split(' ')
            .nth(1)
            .and_then(|path| path.strip_prefix("/lines/"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            return Reply::Close;
        };
        let mut head = String::from("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n");
        for i in 1..n {
            head.push_str(&format!("x-h{i}: v\r\n"));
        }
        head.push_str("\r\nok");
        Reply::KeepAlive(head.into_bytes())
    })
    .await
}

/// Trial 3 finding 11, as the README documents it: a backend response head may have at most 100
/// header lines (hyper's limit, as for requests); one with more is an upstream protocol error, a
/// 502 counted against the endpoint (as nginx's `invalid_header` counts toward `max_fails`).
#[tokio::test]
async fn a_response_head_over_100_lines_is_a_502_counted_against_the_backend() {
    let addr = many_headers_backend().await;
    let running = start(config(vec![route(&[addr], &[], 10_000)])).await;
    // Read raw: the proxy's answer adds `date`, one line more than a hyper client reads.
    let stream = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let mut reader = tokio::io::BufReader::new(stream);
    let request = "GET /lines/100 HTTP/1.1\r\nhost: a\r\n\r\n";
    tokio::io::AsyncWriteExt::write_all(reader.get_mut(), request.as_bytes())
        .await
        .unwrap();
    assert_eq!(read_response(&mut reader).await, (200, "ok".to_owned()));
    let (status, _, body) = get(&client(), &running.url("/lines/101")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        body,
        "crossfade: upstream protocol error (route web, backend blue)\n"
    );
    let stats = running.proxy.backend_stats("web", Slot::Blue).unwrap();
    assert_eq!(stats.errors, 1);
}

/// Trial 23: a backend response framed by both `Content-Length` and `Transfer-Encoding: chunked`
/// is read by its chunks (RFC 9112 §6.3) and forwarded without the `Content-Length`, which an
/// intermediary must remove first since it does not describe the body: `5` over a 2-byte body
/// failed the proxy's write, and the client got an empty reply (logged as a complete 200).
#[tokio::test]
async fn a_response_framed_by_both_content_length_and_chunks_is_forwarded_by_its_chunks() {
    let addr = scripted_backend(|_| {
        Reply::KeepAlive(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n\
              2\r\nok\r\n0\r\n\r\n"
                .to_vec(),
        )
    })
    .await;
    let running = start(config(vec![route(&[addr], &[], 10_000)])).await;
    for (client, name) in [(client(), "HTTP/1.1"), (h2c_client(), "HTTP/2")] {
        let (status, headers, body) = get(&client, &running.url("/")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"), "{name}");
        assert!(
            headers.get("content-length").is_none(),
            "{name}: {headers:?}"
        );
    }
    let stats = running.proxy.backend_stats("web", Slot::Blue).unwrap();
    assert_eq!((stats.requests, stats.errors), (2, 0));
}

/// A backend that answers a head and part of its body and then closes: the client gets what was
/// forwarded (the head and the bytes before the cut) and then the end of the connection, which
/// tells it the response is incomplete (short of its `Content-Length`, or without the last chunk),
/// as nginx and HAProxy forward such a response. Before, hyper dropped the connection with the
/// head and the bytes still in its write buffer: the client read nothing at all (curl: "empty
/// reply from server", exit 52), while the access log said 200 with bytes sent (trial 29).
#[tokio::test]
async fn a_response_cut_short_by_the_backend_reaches_the_client_as_far_as_it_came() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = scripted_backend(|target| {
        if target.contains(" /chunked ") {
            Reply::Last(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec(),
            )
        } else {
            Reply::Last(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly-a-bit".to_vec())
        }
    })
    .await;
    let running = start(config(vec![route(&[backend], &[], 10_000)])).await;
    for (path, body) in [("/length", "only-a-bit"), ("/chunked", "5\r\nhello\r\n")] {
        for _ in 0..5 {
            let mut stream = tokio::net::TcpStream::connect(running.addr).await.unwrap();
            let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut got = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got))
                .await
                .expect("the connection ends")
                .expect("read");
            let got = String::from_utf8_lossy(&got);
            assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{path}: {got:?}");
            let (_, received) = got.split_once("\r\n\r\n").expect("a whole head");
            assert_eq!(received, body, "{path}: {got:?}");
        }
    }
}
