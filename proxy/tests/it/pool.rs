//! The HTTP/1.1 upstream idle stacks: a connection goes back to its endpoint's stack when its
//! response body ends, so idle client connections hold none and any client's next request reuses
//! it; a connection is never shared while a response streams on it; `max_idle_per_endpoint` caps
//! what is kept.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Method, Request, StatusCode};
use http_body_util::Full;

use crate::support::*;

/// Polls `check` every 20 ms for up to 10 s.
async fn wait_for(mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not met within 10 s");
}

#[tokio::test]
async fn client_connections_that_idle_hold_no_upstream_connection() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    // Three clients, each its own keep-alive connection, one after another; all stay open.
    let clients = [client(), client(), client()];
    for client in &clients {
        let (status, _, body) = get(client, &running.url("/")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "blue"));
    }
    assert_eq!(
        blue.opened.load(Ordering::SeqCst),
        1,
        "one upstream connection"
    );
    assert_eq!(blue.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_connection_waiting_for_a_response_is_not_shared() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let (slow_client, fast_client) = (client(), client());
    let slow_url = running.url("/slow/400");
    let slow = tokio::spawn(async move { get(&slow_client, &slow_url).await });
    wait_for(|| blue.hits.load(Ordering::SeqCst) == 1).await;
    // The first connection carries the slow exchange: this request gets a connection of its own
    // and its answer while the slow one is still waiting.
    let (status, _, body) = get(&fast_client, &running.url("/")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "blue"));
    assert!(
        !slow.is_finished(),
        "the fast answer did not wait for the slow one"
    );
    assert_eq!(blue.opened.load(Ordering::SeqCst), 2);
    assert_eq!(slow.await.unwrap().0, StatusCode::OK);
    // Both went back: two sequential requests need no third connection.
    assert_eq!(get(&client(), &running.url("/")).await.0, StatusCode::OK);
    assert_eq!(get(&client(), &running.url("/")).await.0, StatusCode::OK);
    assert_eq!(blue.opened.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_chunked_body_and_an_empty_head_answer_give_their_connection_back() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let (status, _, body) = get(&client(), &running.url("/chunked")).await;
    assert_eq!((status, body.len()), (StatusCode::OK, CHUNKED_LEN));
    // hyper never polls a HEAD answer's (empty) body; the connection goes back all the same.
    let head = Request::builder()
        .method(Method::HEAD)
        .uri(running.url("/"))
        .body(Full::default())
        .unwrap();
    assert_eq!(send(&client(), head).await.0, StatusCode::OK);
    assert_eq!(get(&client(), &running.url("/")).await.0, StatusCode::OK);
    assert_eq!(blue.opened.load(Ordering::SeqCst), 1);
    assert_eq!(blue.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn max_idle_per_endpoint_closes_the_connections_over_it() {
    let blue = backend("blue").await;
    let mut config = config(vec![route(&[blue.addr], &[], 10_000)]);
    config.upstream.max_idle_per_endpoint = 1;
    let running = start(config).await;
    // Two requests at once need two connections; only one may idle afterwards.
    let (a, b) = (client(), client());
    let (url_a, url_b) = (running.url("/slow/200"), running.url("/slow/200"));
    let (first, second) = tokio::join!(get(&a, &url_a), get(&b, &url_b));
    assert_eq!((first.0, second.0), (StatusCode::OK, StatusCode::OK));
    assert_eq!(blue.opened.load(Ordering::SeqCst), 2);
    wait_for(|| blue.closed.load(Ordering::SeqCst) == 1).await;
    assert_eq!(get(&client(), &running.url("/")).await.0, StatusCode::OK);
    assert_eq!(
        blue.opened.load(Ordering::SeqCst),
        2,
        "the kept one is reused"
    );
}

#[tokio::test]
async fn max_idle_per_endpoint_zero_keeps_no_connection() {
    let blue = backend("blue").await;
    let mut config = config(vec![route(&[blue.addr], &[], 10_000)]);
    config.upstream.max_idle_per_endpoint = 0;
    let running = start(config).await;
    let client = client();
    for _ in 0..3 {
        assert_eq!(get(&client, &running.url("/")).await.0, StatusCode::OK);
    }
    assert_eq!(blue.opened.load(Ordering::SeqCst), 3);
    wait_for(|| blue.closed.load(Ordering::SeqCst) == 3).await;
}

#[tokio::test]
async fn http1_upstream_requests_carry_the_origin_form_and_host() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let head = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut reader = BufReader::new(stream);
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            lines.push(line.trim_end().to_owned());
        }
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        reader.get_mut().write_all(answer).await.unwrap();
        lines
    });
    let running = start(config(vec![route(&[addr], &[], 10_000)])).await;
    let request = Request::get(running.url("/a/b?c=d"))
        .header("host", "shop.test")
        .body(Full::default())
        .unwrap();
    assert_eq!(send(&client(), request).await.0, StatusCode::OK);
    let lines = head.await.unwrap();
    assert_eq!(lines[0], "GET /a/b?c=d HTTP/1.1", "{lines:?}");
    assert!(lines.iter().any(|l| l == "host: shop.test"), "{lines:?}");
}
