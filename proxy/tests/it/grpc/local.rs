//! The proxy's own answers to gRPC clients: a trailers-only response (HTTP 200, `grpc-status`,
//! percent-encoded `grpc-message`) that a gRPC library reads as the call's status, instead of an
//! HTTP 502/503/504 it can only report as "HTTP status 502". Counted in the metrics as the HTTP
//! error it stands for.

use std::net::SocketAddr;
use std::time::Duration;

use crossfade_proxy::LimitsConfig;
use tokio::net::TcpListener;
use tonic::Code;

use super::{ask, client, drain, grpc_backend, h2c_route, stream, unary};
use crate::limits::{metric, wait_for};
use crate::support::{config, refused_addr, start};

/// An h2c backend (the `h2` crate) that accepts every stream and never answers it.
async fn silent_backend() -> SocketAddr {
    h2_backend(None).await
}

/// An h2c backend (the `h2` crate) that answers every stream after `delay` with a trailers-only
/// gRPC NOT_FOUND (an answer the client can tell from the proxy's own), or never with `None`.
async fn h2_backend(delay: Option<Duration>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(stream).await else {
                    return;
                };
                let mut held = Vec::new();
                while let Some(Ok((request, mut respond))) = connection.accept().await {
                    let Some(delay) = delay else {
                        held.push((request, respond));
                        continue;
                    };
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let response = http::Response::builder()
                            .header("content-type", "application/grpc")
                            .header("grpc-status", "5")
                            .header("grpc-message", "slow")
                            .body(())
                            .unwrap();
                        let _ = respond.send_response(response, true);
                    });
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_to_a_dead_endpoint_gets_unavailable_with_the_proxys_message() {
    let dead = refused_addr().await;
    let proxy = start(config(vec![h2c_route(dead, dead, 10_000)])).await;
    let mut grpc = client(proxy.addr).await;
    let status = unary(&mut grpc, ask("call", 0, Code::Ok))
        .await
        .expect_err("nothing listens at the endpoint");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.message(),
        "crossfade: upstream connect refused (route web, backend blue)",
        "{status:?}"
    );
    // Counted as the 502 it stands for: in the 5xx class and the backend's errors.
    let class = r#"crossfade_requests_total{route="web",backend="blue",class="5xx"}"#;
    assert_eq!(metric(&proxy, class).await, Some(1.0));
    let ok = r#"crossfade_requests_total{route="web",backend="blue",class="2xx"}"#;
    assert_eq!(metric(&proxy, ok).await, Some(0.0));
    let errors = r#"crossfade_backend_errors_total{route="web",backend="blue"}"#;
    assert_eq!(metric(&proxy, errors).await, Some(1.0));
    let refused =
        r#"crossfade_upstream_errors_total{route="web",backend="blue",kind="connect_refused"}"#;
    assert_eq!(metric(&proxy, refused).await, Some(1.0));

    // A plain HTTP/2 client on the same route still gets the HTTP answer.
    let (code, _, body) = crate::support::get(&crate::support::h2c_client(), &proxy.url("/")).await;
    assert_eq!(code, 502);
    assert_eq!(
        body,
        "crossfade: upstream connect refused (route web, backend blue)\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_past_the_response_timeout_gets_deadline_exceeded() {
    let silent = silent_backend().await;
    let mut route = h2c_route(silent, silent, 10_000);
    route.response_timeout = Some(Duration::from_millis(200));
    let proxy = start(config(vec![route])).await;
    let mut grpc = client(proxy.addr).await;
    let status = unary(&mut grpc, ask("call", 0, Code::Ok))
        .await
        .expect_err("the backend never answers");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        status.message(),
        "crossfade: upstream response timeout (route web, backend blue)"
    );
    let timeouts =
        r#"crossfade_upstream_errors_total{route="web",backend="blue",kind="response_timeout"}"#;
    assert_eq!(metric(&proxy, timeouts).await, Some(1.0));
    let class = r#"crossfade_requests_total{route="web",backend="blue",class="5xx"}"#;
    assert_eq!(metric(&proxy, class).await, Some(1.0));
}

/// Proxytry31: a gRPC call longer than the response timeout ended in DEADLINE_EXCEEDED from the
/// proxy whatever the client's own deadline. A call that carries a longer `grpc-timeout` now waits
/// for it; one without keeps the response timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_waits_for_its_own_longer_deadline_past_the_response_timeout() {
    let slow = h2_backend(Some(Duration::from_millis(800))).await;
    let mut route = h2c_route(slow, slow, 10_000);
    route.response_timeout = Some(Duration::from_millis(200));
    let proxy = start(config(vec![route])).await;
    let mut grpc = client(proxy.addr).await;
    grpc.ready().await.expect("channel ready");
    let mut request = tonic::Request::new(ask("call", 0, Code::Ok));
    request.set_timeout(Duration::from_secs(10));
    let path = http::uri::PathAndQuery::from_static(super::UNARY);
    let codec = tonic_prost::ProstCodec::<super::Ask, super::Answer>::default();
    let status = grpc
        .unary(request, path, codec)
        .await
        .expect_err("the backend answers NOT_FOUND");
    assert_eq!(
        status.code(),
        Code::NotFound,
        "the backend's answer: {status:?}"
    );
    assert_eq!(status.message(), "slow");
    let status = unary(&mut grpc, ask("call", 0, Code::Ok))
        .await
        .expect_err("no deadline: the response timeout");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("crossfade: upstream response timeout"),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shed_grpc_call_gets_unavailable_with_retry_after() {
    let (blue, green) = (grpc_backend("blue").await, grpc_backend("green").await);
    let config = crossfade_proxy::ProxyConfig {
        limits: LimitsConfig {
            max_requests: 1,
            retry_after: Duration::from_secs(3),
            ..LimitsConfig::default()
        },
        ..config(vec![h2c_route(blue.addr, green.addr, 10_000)])
    };
    let proxy = start(config).await;
    let mut grpc = client(proxy.addr).await;
    // One stream in flight holds the only place.
    let long = stream(&mut grpc, ask("long", 10, Code::Ok)).await.unwrap();
    let reading = tokio::spawn(drain(long));
    let in_flight = "crossfade_client_requests_in_flight";
    wait_for(|| async { metric(&proxy, in_flight).await == Some(1.0) }).await;
    let status = unary(&mut grpc, ask("shed", 0, Code::Ok))
        .await
        .expect_err("over max_requests");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.message(),
        "crossfade: overloaded: too many requests (retry later)"
    );
    assert_eq!(status.metadata().get("retry-after").unwrap(), "3");
    let shed = r#"crossfade_shed_total{reason="requests"}"#;
    assert_eq!(metric(&proxy, shed).await, Some(1.0));
    let (got, end) = reading.await.unwrap();
    end.expect("the stream in flight ends OK");
    assert_eq!(got.len(), 10);
}
