//! Case C17: a pooled connection that the backend closes as it is reused, HTTP/1.1 or h2c (a dropped
//! HTTP/2 connection, no GOAWAY). Idempotent bodiless requests are re-sent once on a fresh
//! connection; requests with a body, and non-idempotent ones, never are.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// A backend that answers the first request of each connection (after a `100 Continue` when it
/// expects one) and then, on the next request, closes the connection without answering: the worst
/// case of an idle-timeout close racing reuse.
async fn closing_backend() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    counting_backend(serve_once).await
}

/// A backend on a free port serving each connection with `serve`, which counts the requests it
/// answered in the counter returned.
async fn counting_backend<F>(
    serve: fn(TcpStream, Arc<AtomicUsize>) -> F,
) -> (std::net::SocketAddr, Arc<AtomicUsize>)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, count.clone()));
        }
    });
    (addr, answered)
}

async fn serve_once(stream: TcpStream, answered: Arc<AtomicUsize>) {
    let mut reader = BufReader::new(stream);
    let (length, expects) = request_head(&mut reader).await;
    if expects {
        let go_ahead = b"HTTP/1.1 100 Continue\r\n\r\n";
        reader.get_mut().write_all(go_ahead).await.unwrap();
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.unwrap();
    answered.fetch_add(1, Ordering::SeqCst);
    let response = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-pool: blue\r\n\r\nok";
    reader.get_mut().write_all(response).await.unwrap();
    // The next request is read, then the connection is dropped unanswered.
    request_head(&mut reader).await;
}

/// Reads a request head; returns its Content-Length (0 if none) and whether it expects
/// `100-continue`.
pub(crate) async fn request_head(reader: &mut BufReader<TcpStream>) -> (usize, bool) {
    let (mut length, mut expects) = (0, false);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 || line == "\r\n" {
            return (length, expects);
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
            expects |= name.eq_ignore_ascii_case("expect");
        }
    }
}

/// `PUT /doc` of `body` with `Expect: 100-continue`.
fn put_doc_expecting(running: &Running, body: Bytes) -> Request<Full<Bytes>> {
    Request::put(running.url("/doc"))
        .header("expect", "100-continue")
        .body(Full::new(body))
        .unwrap()
}

/// C17 with `Expect: 100-continue`: a `PUT` on a pooled connection that the backend closes as it
/// is reused had only its head written, its body held back for the backend's 100; it goes again
/// whole on a fresh connection, as a bodiless `GET` does, counted as a reset retry (session 40;
/// until then 502).
#[tokio::test]
async fn c17_expect_continue_put_whose_body_was_held_back_is_resent_after_a_reset() {
    let (addr, answered) = closing_backend().await;
    let running = start(config(vec![route(&[addr], &[], 10_000)])).await;
    let client = client();
    for i in 0..3 {
        let put = put_doc_expecting(&running, Bytes::from_static(b"v2"));
        let (status, _, body) = send(&client, put).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "ok"),
            "PUT {i}: {body}"
        );
    }
    assert_eq!(answered.load(Ordering::SeqCst), 3);
    let metrics = get(&client, &running.admin_url("/metrics")).await.2;
    let line = r#"crossfade_retries_total{route="web",backend="blue",reason="reset"} 2"#;
    assert!(metrics.contains(line), "{line} not in\n{metrics}");
}

/// Reads one response head off `reader` (the status line and fields, up to the blank line), and
/// the `content-length` body after it; `None` when the connection ended first or 10 s passed.
async fn read_answer(reader: &mut BufReader<TcpStream>) -> Option<(String, Vec<u8>)> {
    let read = async {
        let mut head = String::new();
        while !head.ends_with("\r\n\r\n") {
            (reader.read_line(&mut head).await.ok()? > 0).then_some(())?;
        }
        let length = head
            .lines()
            .find_map(|line| {
                line.to_ascii_lowercase()
                    .strip_prefix("content-length:")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await.ok()?;
        Some((head, body))
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .ok()
        .flatten()
}

/// C17 with C20's client, which sends its body only after its `100 Continue` (as curl does): a `PUT`
/// held back on a pooled connection the backend closes as it is reused goes again, and the client's
/// 100 comes from the resend's, opened by the backend's 100 on the fresh connection. The proxy's
/// wait for a 100 is 30 s here, so a resend whose 100 would not reach the client (the stall of
/// traefik#7431) hangs the test instead of costing a second. Session 41.
#[tokio::test]
async fn c17_expect_continue_put_from_a_client_that_waits_for_its_100_gets_it_from_the_resend() {
    let (addr, answered) = closing_backend().await;
    let mut config = config(vec![route(&[addr], &[], 10_000)]);
    config.limits.expect_continue_timeout = std::time::Duration::from_secs(30);
    let running = start(config).await;
    let mut reader = BufReader::new(TcpStream::connect(running.addr).await.unwrap());
    for i in 0..3 {
        let head =
            "PUT /doc HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n";
        reader.get_mut().write_all(head.as_bytes()).await.unwrap();
        let interim = read_answer(&mut reader).await;
        let interim = interim.map(|(head, _)| head).unwrap_or_default();
        assert!(
            interim.starts_with("HTTP/1.1 100 "),
            "PUT {i}: no 100 in 10 s: {interim:?}"
        );
        reader.get_mut().write_all(b"v2").await.unwrap();
        let answer = read_answer(&mut reader).await;
        let (head, body) = answer.unwrap_or_else(|| panic!("PUT {i}: no answer"));
        assert!(head.starts_with("HTTP/1.1 200 "), "PUT {i}: {head}");
        assert_eq!(body, b"ok", "PUT {i}");
    }
    assert_eq!(answered.load(Ordering::SeqCst), 3);
}

/// Bytes a [`partial_body_backend`] reads of an upload before it drops the connection.
const PARTLY: usize = 1_000;

/// A backend that answers a `GET` on each connection, and drops the connection after reading the
/// head of any other request (a `100 Continue` sent when it expects one) and the first
/// [`PARTLY`] bytes of its body; counts the heads of those requests it saw.
async fn partial_body_backend() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    counting_backend(serve_gets_drop_uploads).await
}

async fn serve_gets_drop_uploads(stream: TcpStream, uploads: Arc<AtomicUsize>) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let (length, expects) = request_head(&mut reader).await;
        if line.starts_with("GET ") {
            let response = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            reader.get_mut().write_all(response).await.unwrap();
            continue;
        }
        uploads.fetch_add(1, Ordering::SeqCst);
        if expects {
            let go_ahead = b"HTTP/1.1 100 Continue\r\n\r\n";
            reader.get_mut().write_all(go_ahead).await.unwrap();
        }
        let mut part = vec![0; PARTLY.min(length)];
        let _ = reader.read_exact(&mut part).await;
        return;
    }
}

/// The other side of the rule above: a `PUT` whose body the backend asked for (`100 Continue`)
/// and began to read before it dropped the connection is never sent again, on the pooled
/// connection or a fresh one: 502, and the backend saw its head once.
#[tokio::test]
async fn c17_expect_continue_put_whose_body_was_partly_sent_is_never_resent() {
    let (addr, uploads) = partial_body_backend().await;
    let running = start(config(vec![route(&[addr], &[], 10_000)])).await;
    let client = client();
    for fresh in [false, true] {
        if !fresh {
            // The PUT goes on the connection this GET leaves in the pool.
            assert_eq!(get(&client, &running.url("/")).await.0, StatusCode::OK);
        }
        let before = uploads.load(Ordering::SeqCst);
        let put = put_doc_expecting(&running, Bytes::from(vec![b'x'; 64 * 1024]));
        let (status, _, body) = send(&client, put).await;
        let seen = uploads.load(Ordering::SeqCst) - before;
        assert_eq!(
            seen, 1,
            "the backend saw the PUT {seen} times (fresh connection: {fresh})"
        );
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    }
}

#[tokio::test]
async fn c17_reset_reused_connection_is_retried_for_idempotent_bodiless_requests() {
    let (addr, answered) = closing_backend().await;
    let running = start(config(vec![route(&[addr], &[], 10_000)])).await;
    five_gets_each_resent_after_the_first(&running, &answered).await;
}

/// Five GETs in a row through `running`, each on the pooled connection the one before left: all
/// answered `ok` by the backend (which counts them in `answered`), the last four after a reset
/// and one re-send each.
async fn five_gets_each_resent_after_the_first(running: &Running, answered: &AtomicUsize) {
    let client = client();
    for i in 0..5 {
        let (status, _, body) = get(&client, &running.url("/api")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"), "GET {i}");
    }
    assert_eq!(answered.load(Ordering::SeqCst), 5);
    let metrics = get(&client, &running.admin_url("/metrics")).await.2;
    let line = r#"crossfade_retries_total{route="web",backend="blue",reason="reset"} 4"#;
    assert!(metrics.contains(line), "{line} not in\n{metrics}");
}

#[tokio::test]
async fn c17_request_with_a_body_is_not_resent_after_a_reset() {
    let (addr, answered) = closing_backend().await;
    let running = start(config(vec![route(&[addr], &[], 10_000)])).await;
    let client = client();
    assert_eq!(get(&client, &running.url("/")).await.0, StatusCode::OK);
    let put = put_doc(&running);
    let (status, _, body) = send(&client, put).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        body,
        "crossfade: upstream connection reset (route web, backend blue)\n"
    );
    assert_eq!(answered.load(Ordering::SeqCst), 1);
    // A bodiless POST is not idempotent either.
    let post = Request::post(running.url("/"))
        .body(Full::default())
        .unwrap();
    assert_eq!(send(&client, post).await.0, StatusCode::OK);
    let post = Request::post(running.url("/"))
        .body(Full::default())
        .unwrap();
    assert_eq!(send(&client, post).await.0, StatusCode::BAD_GATEWAY);
}

/// An h2c backend (the `h2` crate) that answers the first stream of each connection and then,
/// when the next stream's HEADERS arrive, drops the connection without a GOAWAY or a reset: the
/// C17 race over HTTP/2, a backend whose idle close (or crash) meets a stream the proxy just
/// opened on its pooled connection. Counts the streams it answered.
async fn closing_h2c_backend() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    counting_backend(serve_once_h2c).await
}

async fn serve_once_h2c(stream: TcpStream, answered: Arc<AtomicUsize>) {
    let Ok(mut connection) = h2::server::handshake(stream).await else {
        return;
    };
    let Some(Ok((request, mut respond))) = connection.accept().await else {
        return;
    };
    let mut body = request.into_body();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    answered.fetch_add(1, Ordering::SeqCst);
    let response = http::Response::builder().status(200).body(()).unwrap();
    if let Ok(mut sent) = respond.send_response(response, false) {
        let _ = sent.send_data(Bytes::from_static(b"ok"), true);
    }
    // Driven until the next stream opens; then everything is dropped at once.
    let _next = connection.accept().await;
}

pub(crate) fn h2c_only_route(addr: std::net::SocketAddr) -> crossfade_proxy::RouteConfig {
    let mut route = route(&[addr], &[], 10_000);
    route.blue.protocol = crossfade_proxy::UpstreamProtocol::H2c;
    route
}

/// C17 over an h2c backend: a stream on the pooled HTTP/2 connection that the backend drops
/// (no GOAWAY, no reset) before any response byte is re-sent once on a fresh connection for a
/// bodiless GET, as over HTTP/1.1, and counted as a reset retry (session 40).
#[tokio::test]
async fn c17_h2c_connection_dropped_as_a_stream_opens_is_retried_for_a_get() {
    let (addr, answered) = closing_h2c_backend().await;
    let running = start(config(vec![h2c_only_route(addr)])).await;
    five_gets_each_resent_after_the_first(&running, &answered).await;
}

/// The same drop never re-sends a request whose body was written to the h2c backend (a PUT
/// with a body, a bodiless POST): 502, and the backend answered only the first request.
#[tokio::test]
async fn c17_h2c_connection_dropped_as_a_stream_opens_never_resends_a_body_or_a_post() {
    let (addr, answered) = closing_h2c_backend().await;
    let running = start(config(vec![h2c_only_route(addr)])).await;
    let client = client();
    assert_eq!(get(&client, &running.url("/")).await.0, StatusCode::OK);
    let put = put_doc(&running);
    assert_eq!(send(&client, put).await.0, StatusCode::BAD_GATEWAY);
    assert_eq!(get(&client, &running.url("/")).await.0, StatusCode::OK);
    let post = Request::post(running.url("/"))
        .body(Full::default())
        .unwrap();
    assert_eq!(send(&client, post).await.0, StatusCode::BAD_GATEWAY);
    assert_eq!(answered.load(Ordering::SeqCst), 2);
}

/// `PUT /doc` with a 2-byte body.
fn put_doc(running: &Running) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::PUT)
        .uri(running.url("/doc"))
        .body(Full::new(Bytes::from_static(b"v2")))
        .unwrap()
}

/// An h2c backend (the `h2` crate) that answers the first stream of each connection `200 ok` at
/// once, without asking for or reading its body (no `100 Continue`), and drops the connection
/// when the next stream's HEADERS arrive, as [`closing_h2c_backend`]; counts the streams answered.
async fn early_closing_h2c_backend() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    counting_backend(serve_once_early_h2c).await
}

async fn serve_once_early_h2c(stream: TcpStream, answered: Arc<AtomicUsize>) {
    let Ok(mut connection) = h2::server::handshake(stream).await else {
        return;
    };
    let Some(Ok((_request, mut respond))) = connection.accept().await else {
        return;
    };
    answered.fetch_add(1, Ordering::SeqCst);
    let response = http::Response::builder().status(200).body(()).unwrap();
    if let Ok(mut sent) = respond.send_response(response, false) {
        let _ = sent.send_data(Bytes::from_static(b"ok"), true);
    }
    let _next = connection.accept().await;
}

/// C17 with `Expect: 100-continue` over h2c, on a multi-threaded runtime as in production: a
/// `PUT` held back for its 100 on a pooled h2c connection that the backend drops as the stream
/// opens goes again whole every time. hyper's task that pipes the body to the stream hands it
/// back when it next runs, which may be after the proxy saw the failure: until session 41 the
/// proxy then found no body to resend and answered 502, 1 to 4 times in these 60 `PUT`s.
/// The retry budget is opened wide: every `PUT` after the first is a retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c17_h2c_expect_continue_put_held_back_on_a_dropped_connection_is_resent_every_time() {
    let (addr, answered) = early_closing_h2c_backend().await;
    let mut config = config(vec![h2c_only_route(addr)]);
    config.limits.expect_continue_timeout = std::time::Duration::from_secs(30);
    config.upstream.retry_budget.ratio = crossfade_proxy::Percent(10_000);
    config.upstream.retry_budget.min_per_second = 1_000;
    let running = start(config).await;
    let client = client();
    let mut statuses = Vec::new();
    for _ in 0..60 {
        let put = put_doc_expecting(&running, Bytes::from_static(b"v2"));
        statuses.push(send(&client, put).await.0.as_u16());
    }
    let failed = statuses.iter().filter(|status| **status != 200).count();
    assert_eq!(failed, 0, "answers to 60 PUTs: {statuses:?}");
    assert_eq!(answered.load(Ordering::SeqCst), 60);
}
