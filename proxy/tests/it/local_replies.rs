//! The proxy's own answers are counted: `crossfade_requests_total` (per backend, or
//! `backend="none"`), `crossfade_local_responses_total` by reason, and `/status` errors agree.

use crossfade_proxy::status::Status;
use crossfade_proxy::{Slot, Weights};
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::limits::metric;
use crate::support::*;

/// How many requests each test sends.
const N: u32 = 20;

/// A route whose only endpoint is down: the first requests fail to connect (502) until the
/// endpoint is ejected, the rest get "no endpoint" (503); all N are 5xx for blue, in the metrics
/// and in `/status`.
#[tokio::test]
async fn every_answer_for_a_backend_without_a_live_endpoint_is_a_counted_5xx() {
    let dead = refused_addr().await;
    let mut web = route(&[dead], &[], 10_000);
    // The "no endpoint" answers this counts: failing open, the dead endpoint would be tried
    // again (502, an `upstream` local reply, counted the same way).
    web.fail_open = false;
    let running = start(config(vec![web])).await;
    let client = client();
    let mut statuses = Vec::new();
    for _ in 0..N {
        statuses.push(get(&client, &running.url("/")).await.0);
    }
    assert!(
        statuses.iter().all(StatusCode::is_server_error),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&StatusCode::SERVICE_UNAVAILABLE),
        "the endpoint was never ejected: {statuses:?}"
    );
    let series = r#"crossfade_requests_total{route="web",backend="blue",class="5xx"}"#;
    assert_eq!(metric(&running, series).await, Some(f64::from(N)));
    let unavailable = statuses
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    let series = r#"crossfade_local_responses_total{route="web",backend="blue",class="5xx",reason="no_endpoint"}"#;
    assert_eq!(metric(&running, series).await, Some(unavailable as f64));
    let series = r#"crossfade_local_responses_total{route="web",backend="blue",class="5xx",reason="upstream"}"#;
    assert_eq!(
        metric(&running, series).await,
        Some((statuses.len() - unavailable) as f64)
    );
    let (_, _, body) = get(&client, &running.admin_url("/status")).await;
    let status: Status = serde_json::from_str(&body).unwrap();
    assert_eq!(status.routes[0].blue.errors, u64::from(N));
    assert_eq!(status.routes[0].blue.requests, u64::from(N));
    let snapshot = running.proxy.backend_stats("web", Slot::Blue).unwrap();
    assert_eq!(
        (snapshot.requests, snapshot.errors),
        (u64::from(N), u64::from(N))
    );
}

/// A disabled route (weights 0/0): N 503s, counted for the route with `backend="none"`.
#[tokio::test]
async fn a_disabled_route_counts_its_503s_for_no_backend() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    running
        .proxy
        .set_weights("web", Weights { blue: 0, green: 0 })
        .unwrap();
    let client = client();
    for _ in 0..N {
        let (status, _, _) = get(&client, &running.url("/")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let series = r#"crossfade_requests_total{route="web",backend="none",class="5xx"}"#;
    assert_eq!(metric(&running, series).await, Some(f64::from(N)));
    let series = r#"crossfade_local_responses_total{route="web",backend="none",class="5xx",reason="route_disabled"}"#;
    assert_eq!(metric(&running, series).await, Some(f64::from(N)));
    // Nothing was meant for blue.
    let series = r#"crossfade_requests_total{route="web",backend="blue",class="5xx"}"#;
    assert_eq!(metric(&running, series).await, Some(0.0));
}

/// A host no route matches: N 404s, counted with `route=""` and `backend="none"`.
#[tokio::test]
async fn an_unmatched_host_counts_its_404s_for_no_route() {
    let blue = backend("blue").await;
    let mut web = route(&[blue.addr], &[], 10_000);
    web.hosts = vec!["shop.test".to_owned()];
    let running = start(config(vec![web])).await;
    let client = client();
    for _ in 0..N {
        let request = Request::get(running.url("/"))
            .header("host", "elsewhere.test")
            .body(Full::default())
            .unwrap();
        let (status, _, _) = send(&client, request).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let series = r#"crossfade_requests_total{route="",backend="none",class="4xx"}"#;
    assert_eq!(metric(&running, series).await, Some(f64::from(N)));
    let series =
        r#"crossfade_local_responses_total{route="",backend="none",class="4xx",reason="no_route"}"#;
    assert_eq!(metric(&running, series).await, Some(f64::from(N)));
}

/// A request head hyper refuses before the proxy sees it (over `limits.max_header_bytes`): its 431
/// is counted too, as a `bad_head`.
#[tokio::test]
async fn a_request_head_too_large_is_a_counted_431() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let mut stream = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let big = "x".repeat(128 * 1024);
    let head = format!("GET / HTTP/1.1\r\nHost: shop.test\r\nX-Big: {big}\r\n\r\n");
    // The proxy may close before it read everything: the answer is what matters.
    let _ = stream.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    drop(stream);
    let series =
        r#"crossfade_local_responses_total{route="",backend="none",class="4xx",reason="bad_head"}"#;
    // Counted when the connection's task ends, just after the close the client saw.
    let mut counted = None;
    for _ in 0..100 {
        counted = metric(&running, series).await;
        if counted.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(counted, Some(1.0));
    let series = r#"crossfade_requests_total{route="",backend="none",class="4xx"}"#;
    assert_eq!(metric(&running, series).await, Some(1.0));
}
