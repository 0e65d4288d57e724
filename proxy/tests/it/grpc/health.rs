//! gRPC server faults reach passive health as a 5xx would: an endpoint that answers HTTP 200 with
//! `grpc-status` 14 (UNAVAILABLE) forever is ejected by `outlier.consecutive_5xx`, whether the
//! status comes in a trailers-only head (unary) or in the trailers after streamed answers, and a
//! preview failing that way trips the breaker; client-fault statuses never eject.

use std::time::Duration;

use crossfade_proxy::config::BreakerConfig;
use crossfade_proxy::{EndpointStatus, Percent, RouteConfig, Slot};
use tonic::Code;

use super::{ask, client, drain, grpc_backend, grpc_backend_failing, h2c_route, stream, unary};
use crate::support::{config, start, Running};

/// Route `web`: blue over the h2c endpoints `blue` (all the weight), green over `green`; an
/// endpoint is ejected after `consecutive_5xx` server errors in a row, for a minute (longer than
/// any test here).
fn route_over(
    blue: &[std::net::SocketAddr],
    green: std::net::SocketAddr,
    consecutive_5xx: u32,
) -> RouteConfig {
    let mut route = h2c_route(blue[0], green, 10_000);
    route.blue.endpoints = blue.to_vec();
    route.outlier.consecutive_5xx = consecutive_5xx;
    route.outlier.base_ejection = Duration::from_secs(60);
    route.outlier.max_ejection = Duration::from_secs(60);
    route
}

/// Blue's endpoints' health, in endpoint order.
fn blue_health(proxy: &Running) -> Vec<EndpointStatus> {
    proxy.proxy.status().routes[0].blue.health.clone()
}

/// How a test call reaches the backend's status.
#[derive(Clone, Copy, Debug)]
enum Call {
    /// A unary call: a failure is a trailers-only response (the status in the head).
    Unary,
    /// A server-streaming call of two answers: the status comes in the trailers after them.
    Stream,
}

/// Makes one call asking for `code`; returns the backend that answered something (for a unary
/// failure: none) and the call's final code.
async fn call(
    grpc: &mut tonic::client::Grpc<tonic::transport::Channel>,
    how: Call,
    code: Code,
) -> (Option<String>, Code) {
    match how {
        Call::Unary => match unary(grpc, ask("c", 0, code)).await {
            Ok(answer) => (Some(answer.into_inner().backend), Code::Ok),
            Err(status) => (None, status.code()),
        },
        Call::Stream => {
            let answers = stream(grpc, ask("s", 2, code))
                .await
                .expect("stream starts");
            let (got, end) = drain(answers).await;
            assert_eq!(got.len(), 2, "the answers before the status pass");
            let end = end.err().map_or(Code::Ok, |status| status.code());
            (Some(got[0].backend.clone()), end)
        }
    }
}

async fn unavailable_endpoint_is_ejected_and_calls_move_to_the_healthy_one(how: Call) {
    let bad = grpc_backend_failing("bad", Code::Unavailable).await;
    let good = grpc_backend("good").await;
    let green = grpc_backend("green").await;
    let route = route_over(&[bad.addr, good.addr], green.addr, 3);
    let proxy = start(config(vec![route])).await;
    let mut grpc = client(proxy.addr).await;

    // Round-robin over [bad, good]: the third UNAVAILABLE in a row from `bad` ejects it.
    let mut unavailable = 0;
    for _ in 0..40 {
        let (_, code) = call(&mut grpc, how, Code::Ok).await;
        match code {
            Code::Ok => {}
            Code::Unavailable => unavailable += 1,
            other => panic!("{how:?}: unexpected {other:?}"),
        }
    }
    assert_eq!(
        unavailable, 3,
        "{how:?}: exactly consecutive_5xx failed calls reach the bad endpoint before its ejection"
    );
    let health = blue_health(&proxy);
    assert!(
        !health[0].healthy && health[0].ejected_for_ms.is_some(),
        "{how:?}: {health:?}"
    );
    assert!(health[1].healthy, "{how:?}: {health:?}");
    // Every call now goes to the healthy endpoint.
    for _ in 0..10 {
        let (backend, code) = call(&mut grpc, how, Code::Ok).await;
        assert_eq!(
            (backend.as_deref(), code),
            (Some("good"), Code::Ok),
            "{how:?}"
        );
    }
    // Counted once per call in the backend's errors, as before.
    let errors = proxy.proxy.backend_stats("web", Slot::Blue).unwrap().errors;
    assert_eq!(errors, 3, "{how:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_answering_unavailable_in_trailers_only_responses_is_ejected() {
    unavailable_endpoint_is_ejected_and_calls_move_to_the_healthy_one(Call::Unary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_answering_unavailable_in_stream_trailers_is_ejected() {
    unavailable_endpoint_is_ejected_and_calls_move_to_the_healthy_one(Call::Stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_fault_grpc_statuses_never_eject_an_endpoint() {
    let (a, b) = (grpc_backend("a").await, grpc_backend("b").await);
    let green = grpc_backend("green").await;
    // One server error would eject: client faults must not count as one.
    let proxy = start(config(vec![route_over(&[a.addr, b.addr], green.addr, 1)])).await;
    let mut grpc = client(proxy.addr).await;
    let client_faults = [
        Code::Cancelled,
        Code::InvalidArgument,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unauthenticated,
    ];
    let mut served = std::collections::BTreeMap::<String, u32>::new();
    for how in [Call::Unary, Call::Stream] {
        for code in client_faults {
            for _ in 0..2 {
                let (backend, got) = call(&mut grpc, how, code).await;
                assert_eq!(got, code, "{how:?}");
                if let Some(backend) = backend {
                    *served.entry(backend).or_default() += 1;
                }
            }
        }
    }
    let health = blue_health(&proxy);
    assert!(health.iter().all(|e| e.healthy), "{health:?}");
    // Both endpoints kept taking streams (nobody ejected).
    assert_eq!(served.values().sum::<u32>(), 20, "{served:?}");
    assert!(served.get("a").is_some_and(|&n| n > 0), "{served:?}");
    assert!(served.get("b").is_some_and(|&n| n > 0), "{served:?}");
    assert_eq!(
        proxy.proxy.backend_stats("web", Slot::Blue).unwrap().errors,
        0
    );
}

async fn preview_failing_with_unavailable_trips_its_breaker(how: Call) {
    let blue = grpc_backend("blue").await;
    let green = grpc_backend_failing("green", Code::Unavailable).await;
    let mut route = h2c_route(blue.addr, green.addr, 5_000);
    // Ejection off: the breaker alone must see the faults.
    route.outlier.consecutive_failures = 0;
    route.outlier.consecutive_5xx = 0;
    route.breaker = Some(BreakerConfig {
        max_error_rate: Percent(5_000),
        window: Duration::from_secs(60),
        min_requests: 4,
    });
    let proxy = start(config(vec![route])).await;
    let mut events = proxy.proxy.events();
    let mut grpc = client(proxy.addr).await;
    for _ in 0..40 {
        let _ = call(&mut grpc, how, Code::Ok).await;
    }
    assert!(proxy.proxy.status().routes[0].green.tripped, "{how:?}");
    let tripped = std::iter::from_fn(|| events.try_recv().ok())
        .any(|e| matches!(e, crossfade_proxy::ProxyEvent::BreakerTripped { .. }));
    assert!(tripped, "{how:?}: a BreakerTripped event");
    // Tripped: every call goes to blue.
    for _ in 0..10 {
        let (backend, code) = call(&mut grpc, how, Code::Ok).await;
        assert_eq!(
            (backend.as_deref(), code),
            (Some("blue"), Code::Ok),
            "{how:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_failing_unary_calls_with_unavailable_trips_its_breaker() {
    preview_failing_with_unavailable_trips_its_breaker(Call::Unary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_failing_streams_with_unavailable_in_trailers_trips_its_breaker() {
    preview_failing_with_unavailable_trips_its_breaker(Call::Stream).await;
}

/// Sends `n` WebSocket upgrade requests to `proxy`; each must be answered 502 (upgrades go over
/// HTTP/1.1, which the h2c-only test backends do not speak).
async fn upgrades_answered_502(proxy: &Running, n: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for _ in 0..n {
        let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let request = "GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: upgrade\r\n\
                       Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                       Sec-WebSocket-Version: 13\r\n\r\n";
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut head = vec![0u8; 12];
        tcp.read_exact(&mut head).await.unwrap();
        assert_eq!(head, b"HTTP/1.1 502");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_an_h2c_backend_cannot_read_neither_eject_it_nor_trip_its_breaker() {
    let (blue, green) = (grpc_backend("blue").await, grpc_backend("green").await);
    // All the weight on green, the preview, behind a breaker; the default outlier bound (3
    // failures in a row) and no failing open, so that an ejected endpoint leaves none.
    let mut route = h2c_route(blue.addr, green.addr, 0);
    route.fail_open = false;
    route.breaker = Some(BreakerConfig {
        max_error_rate: Percent(5_000),
        window: Duration::from_secs(60),
        min_requests: 4,
    });
    let proxy = start(config(vec![route])).await;
    upgrades_answered_502(&proxy, 10).await;

    let status = proxy.proxy.status();
    let green_health = &status.routes[0].green.health;
    assert!(!status.routes[0].green.tripped, "the breaker tripped");
    assert!(
        green_health[0].healthy && green_health[0].ejected_for_ms.is_none(),
        "{green_health:?}"
    );
    let mut grpc = client(proxy.addr).await;
    let answer = unary(&mut grpc, ask("c", 0, Code::Ok)).await;
    assert_eq!(
        answer.expect("green still serves").into_inner().backend,
        "green"
    );
    // The client's 502s still count as green's errors: it could not take them.
    let errors = proxy
        .proxy
        .backend_stats("web", Slot::Green)
        .unwrap()
        .errors;
    assert_eq!(errors, 10);
}
