//! gRPC end to end through the proxy: a tonic client, tonic's server helpers behind two h2c
//! backends (`protocol: h2c`), messages derived with prost by hand (no protoc). Unary and
//! server-streaming calls through a weighted split, `grpc-status` trailers to the client, error
//! statuses passed through (server-fault ones counted in the backend's errors, client-fault ones
//! not), streams multiplexed over one upstream connection, and a backend retired under a stream in
//! flight; health probes in HTTP/2. `grpc/tonic_server.rs` has tonic at both ends: its transport
//! server (`tonic::transport::Server`) as the backends.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossfade_proxy::config::UpstreamProtocol;
use crossfade_proxy::{Slot, Weights};
use futures_util::Stream;
use http::uri::PathAndQuery;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

use crate::support::{config, get, route, start};

mod h2c;
mod health;
mod local;
mod refused;
mod streams;
mod tonic_server;

/// The request: who asks, how many answers a stream sends, and a gRPC code to fail with (0: none).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ask {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint32, tag = "2")]
    pub count: u32,
    #[prost(uint32, tag = "3")]
    pub fail_code: u32,
}

/// An answer: the backend that served it and its sequence number in the call.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Answer {
    #[prost(string, tag = "1")]
    pub backend: String,
    #[prost(uint32, tag = "2")]
    pub seq: u32,
}

const UNARY: &str = "/crossfade.test.Echo/Unary";
const STREAM: &str = "/crossfade.test.Echo/Stream";

/// Time between two streamed answers.
const STREAM_GAP: Duration = Duration::from_millis(40);

/// An h2c gRPC backend (hyper's HTTP/2 server, tonic's request/response handling).
struct GrpcBackend {
    addr: SocketAddr,
    /// Connections accepted so far.
    accepted: Arc<AtomicU64>,
    /// Connections open now.
    open: Arc<AtomicI64>,
}

async fn grpc_backend(name: &'static str) -> GrpcBackend {
    grpc_backend_failing(name, Code::Ok).await
}

/// An h2c gRPC backend that fails every call with `forced` (unless `Code::Ok`), whatever it asks:
/// unary calls in a trailers-only response, streams in the trailers after their answers.
async fn grpc_backend_failing(name: &'static str, forced: Code) -> GrpcBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let open = Arc::new(AtomicI64::new(0));
    let (a, o) = (accepted.clone(), open.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            a.fetch_add(1, Ordering::Relaxed);
            o.fetch_add(1, Ordering::Relaxed);
            let open = o.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| async move {
                    Ok::<_, Infallible>(serve(name, forced, request).await)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                open.fetch_sub(1, Ordering::Relaxed);
            });
        }
    });
    GrpcBackend {
        addr,
        accepted,
        open,
    }
}

/// The Echo service's answer to `request`, whichever server read it (hyper's body, or tonic's
/// transport server's): `forced` (unless `Code::Ok`) replaces the code the call asks to fail with.
async fn serve<B>(
    backend: &'static str,
    forced: Code,
    request: http::Request<B>,
) -> http::Response<tonic::body::Body>
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    let codec = ProstCodec::<Answer, Ask>::default();
    let force = move |mut ask: tonic::Request<Ask>| {
        if forced != Code::Ok {
            ask.get_mut().fail_code = forced as u32;
        }
        ask
    };
    match request.uri().path() {
        UNARY => {
            let mut grpc = tonic::server::Grpc::new(codec);
            let answer = tower::service_fn(move |ask| answer_once(backend, force(ask)));
            grpc.unary(answer, request).await
        }
        STREAM => {
            let mut grpc = tonic::server::Grpc::new(codec);
            let answers = tower::service_fn(move |ask| stream_answers(backend, force(ask)));
            grpc.server_streaming(answers, request).await
        }
        // Plain HTTP (an HTTP/1.1 client through the proxy to this h2c backend).
        _ => http::Response::new(tonic::body::Body::new(http_body_util::Full::new(
            bytes::Bytes::from(backend),
        ))),
    }
}

type AnswerStream = Pin<Box<dyn Stream<Item = Result<Answer, Status>> + Send>>;

/// Answers once, or fails with the asked code.
async fn answer_once(
    backend: &'static str,
    request: tonic::Request<Ask>,
) -> Result<tonic::Response<Answer>, Status> {
    let ask = request.into_inner();
    if ask.fail_code != 0 {
        let message = format!("{backend} fails {} as asked", ask.name);
        return Err(Status::new(Code::from(ask.fail_code as i32), message));
    }
    Ok(tonic::Response::new(Answer {
        backend: backend.into(),
        seq: 0,
    }))
}

/// Streams `count` answers [`STREAM_GAP`] apart, then ends OK, or with the asked code.
async fn stream_answers(
    backend: &'static str,
    request: tonic::Request<Ask>,
) -> Result<tonic::Response<AnswerStream>, Status> {
    let ask = request.into_inner();
    let answers = futures_util::stream::unfold(0u32, move |seq| async move {
        if seq > ask.count {
            return None;
        }
        if seq == ask.count {
            let fail = Code::from(ask.fail_code as i32);
            return (ask.fail_code != 0)
                .then(|| (Err(Status::new(fail, "failed after the answers")), seq + 1));
        }
        tokio::time::sleep(STREAM_GAP).await;
        let answer = Answer {
            backend: backend.into(),
            seq,
        };
        Some((Ok(answer), seq + 1))
    });
    Ok(tonic::Response::new(Box::pin(answers) as AnswerStream))
}

/// A tonic client over one HTTP/2 connection to the proxy.
async fn client(proxy: SocketAddr) -> tonic::client::Grpc<Channel> {
    let channel = Channel::from_shared(format!("http://{proxy}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to the proxy");
    tonic::client::Grpc::new(channel)
}

async fn unary(
    grpc: &mut tonic::client::Grpc<Channel>,
    ask: Ask,
) -> Result<tonic::Response<Answer>, Status> {
    grpc.ready().await.expect("channel ready");
    let codec = ProstCodec::<Ask, Answer>::default();
    let path = PathAndQuery::from_static(UNARY);
    grpc.unary(tonic::Request::new(ask), path, codec).await
}

async fn stream(
    grpc: &mut tonic::client::Grpc<Channel>,
    ask: Ask,
) -> Result<tonic::Streaming<Answer>, Status> {
    grpc.ready().await.expect("channel ready");
    let codec = ProstCodec::<Ask, Answer>::default();
    let path = PathAndQuery::from_static(STREAM);
    let response = grpc
        .server_streaming(tonic::Request::new(ask), path, codec)
        .await?;
    Ok(response.into_inner())
}

fn ask(name: &str, count: u32, fail_code: Code) -> Ask {
    Ask {
        name: name.into(),
        count,
        fail_code: fail_code as u32,
    }
}

/// Reads a stream to its end: the answers, then the final status (from the trailers).
async fn drain(mut answers: tonic::Streaming<Answer>) -> (Vec<Answer>, Result<(), Status>) {
    let mut got = Vec::new();
    loop {
        match answers.message().await {
            Ok(Some(answer)) => got.push(answer),
            Ok(None) => break,
            Err(status) => return (got, Err(status)),
        }
    }
    let trailers = answers.trailers().await.map(|_| ());
    (got, trailers)
}

/// Makes `n` unary calls that succeed (grpc-status 0 in the trailers): how many blue answered,
/// and how many green.
async fn split_calls(grpc: &mut tonic::client::Grpc<Channel>, n: u32) -> (u32, u32) {
    let (mut to_blue, mut to_green) = (0, 0);
    for i in 0..n {
        let answer = unary(grpc, ask(&format!("call {i}"), 0, Code::Ok))
            .await
            .expect("a unary call succeeds (grpc-status 0 in the trailers)");
        match answer.into_inner().backend.as_str() {
            "blue" => to_blue += 1,
            "green" => to_green += 1,
            other => panic!("answered by {other}"),
        }
    }
    (to_blue, to_green)
}

/// A server-streaming call of `count` answers: every answer in order, all from one backend, then
/// the OK status in the trailers.
async fn stream_in_order(grpc: &mut tonic::client::Grpc<Channel>, count: u32) {
    let answers = stream(grpc, ask("s", count, Code::Ok))
        .await
        .expect("stream");
    let (got, end) = drain(answers).await;
    assert_eq!(
        got.iter().map(|a| a.seq).collect::<Vec<_>>(),
        (0..count).collect::<Vec<_>>()
    );
    assert!(
        got.windows(2).all(|w| w[0].backend == w[1].backend),
        "one backend per call: {got:?}"
    );
    end.expect("an OK status in the trailers ends the stream");
}

/// Route `web` over two h2c backends, `blue_bp` to blue.
fn h2c_route(blue: SocketAddr, green: SocketAddr, blue_bp: u32) -> crossfade_proxy::RouteConfig {
    let mut route = route(&[blue], &[green], blue_bp);
    route.blue.protocol = UpstreamProtocol::H2c;
    route.green.protocol = UpstreamProtocol::H2c;
    route
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_pass_a_weighted_split_with_their_trailers_and_statuses() {
    let (blue, green) = (grpc_backend("blue").await, grpc_backend("green").await);
    let proxy = start(config(vec![h2c_route(blue.addr, green.addr, 7_000)])).await;
    let mut grpc = client(proxy.addr).await;

    let (to_blue, to_green) = split_calls(&mut grpc, 300).await;
    // 30% of 300 is 90, σ ≈ 7.9: within 6σ.
    assert!(
        (43..=137).contains(&to_green),
        "blue {to_blue}, green {to_green}"
    );

    // An error status passes through (trailers-only response), code and message intact.
    let status = unary(&mut grpc, ask("bad", 0, Code::FailedPrecondition))
        .await
        .expect_err("the backend fails the call");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("fails bad as asked"),
        "{status:?}"
    );

    stream_in_order(&mut grpc, 5).await;

    // A stream that fails after its answers: the status arrives in the trailers, after the data.
    let answers = stream(&mut grpc, ask("s", 3, Code::ResourceExhausted))
        .await
        .expect("stream");
    let (got, end) = drain(answers).await;
    assert_eq!(got.len(), 3);
    let status = end.expect_err("the trailers carry the failure");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    // An HTTP/1.1 client reaches the same h2c backends.
    let (status, _, body) = get(&crate::support::client(), &proxy.url("/plain")).await;
    assert_eq!(status, 200);
    assert!(body == "blue" || body == "green", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_grpc_streams_share_one_upstream_connection_per_endpoint() {
    let (blue, green) = (grpc_backend("blue").await, grpc_backend("green").await);
    let proxy = start(config(vec![h2c_route(blue.addr, green.addr, 10_000)])).await;
    let grpc = client(proxy.addr).await;
    // One call first, so the upstream connection exists before the burst.
    unary(&mut grpc.clone(), ask("warm", 0, Code::Ok))
        .await
        .unwrap();

    let calls = (0..20).map(|i| {
        let mut grpc = grpc.clone();
        tokio::spawn(async move {
            let answers = stream(&mut grpc, ask(&format!("s{i}"), 10, Code::Ok)).await?;
            let (got, end) = drain(answers).await;
            end.map(|()| got.len())
        })
    });
    let results = futures_util::future::join_all(calls).await;
    for result in results {
        assert_eq!(result.unwrap().expect("stream ends OK"), 10);
    }
    assert_eq!(
        blue.accepted.load(Ordering::Relaxed),
        1,
        "20 concurrent streams over one HTTP/2 connection"
    );
    assert_eq!(green.accepted.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_backend_finishes_its_grpc_stream_and_h2_clients_move_at_their_next_call() {
    let (blue, green) = (grpc_backend("blue").await, grpc_backend("green").await);
    let proxy = start(config(vec![h2c_route(blue.addr, green.addr, 0)])).await;
    let mut grpc = client(proxy.addr).await;
    let in_flight = stream(&mut grpc, ask("long", 25, Code::Ok))
        .await
        .expect("stream to green");
    let reading = tokio::spawn(drain(in_flight));
    tokio::time::sleep(STREAM_GAP * 3).await;

    // Retire green: all weight to blue, then green's endpoints leave the table (its pool drops).
    proxy
        .proxy
        .set_weights("web", Weights::all_to(Slot::Blue))
        .unwrap();
    proxy
        .proxy
        .update(|routes| {
            routes[0].green.endpoints.clear();
            Ok(())
        })
        .unwrap();

    // The same client connection (no GOAWAY needed: routing is per call) now reaches blue.
    for i in 0..20 {
        let answer = unary(&mut grpc, ask(&format!("after {i}"), 0, Code::Ok))
            .await
            .expect("calls after the retire succeed");
        assert_eq!(answer.into_inner().backend, "blue");
    }
    let (got, end) = reading.await.unwrap();
    end.expect("the stream in flight on green ends OK");
    assert_eq!(got.len(), 25);
    assert!(got.iter().all(|a| a.backend == "green"));
    // With its last stream done, the retired backend's connection closes (its pool was dropped).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while green.open.load(Ordering::Relaxed) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the retired backend's upstream connection is still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_of_an_h2c_backend_speak_http2() {
    let (blue, green) = (grpc_backend("blue").await, grpc_backend("green").await);
    let mut route = h2c_route(blue.addr, green.addr, 10_000);
    // The backends speak HTTP/2 only: an HTTP/1.1 probe would fail and take them down.
    route.health = Some(crossfade_proxy::config::HealthConfig {
        path: "/plain".into(),
        // Generous: an HTTP/1.1 probe to these backends fails at once, not by the timeout, and a
        // loaded CI machine can take longer than 50 ms to answer a good one.
        interval: Duration::from_millis(250),
        timeout: Duration::from_millis(250),
        rise: 1,
        fall: 1,
        host: None,
    });
    let proxy = start(config(vec![route])).await;
    let probes = |b: &GrpcBackend| b.accepted.load(Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while probes(&blue) < 5 || probes(&green) < 5 {
        assert!(tokio::time::Instant::now() < deadline, "no probes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = proxy.proxy.status();
    for slot in [&status.routes[0].blue, &status.routes[0].green] {
        assert!(slot.health.iter().all(|e| e.checked_up), "{status:?}");
    }
    let mut grpc = client(proxy.addr).await;
    let answer = unary(&mut grpc, ask("checked", 0, Code::Ok)).await.unwrap();
    assert_eq!(answer.into_inner().backend, "blue");
}

/// `crossfade_backend_errors_total{route="web",backend=...}` as the proxy's `/metrics` shows it.
async fn scraped_backend_errors(proxy: &crate::support::Running, backend: &str) -> u64 {
    let (status, _, text) = get(&crate::support::client(), &proxy.admin_url("/metrics")).await;
    assert_eq!(status, 200);
    let prefix = format!(r#"crossfade_backend_errors_total{{route="web",backend="{backend}"}} "#);
    text.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_fault_grpc_statuses_count_as_backend_errors_and_client_faults_do_not() {
    let (blue, green) = (grpc_backend("blue").await, grpc_backend("green").await);
    let proxy = start(config(vec![h2c_route(blue.addr, green.addr, 10_000)])).await;
    let mut grpc = client(proxy.addr).await;
    let errors = || proxy.proxy.backend_stats("web", Slot::Blue).unwrap().errors;

    // Successes and client faults: HTTP 200 with grpc-status 0, 5 (NOT_FOUND), 3, 7, 8.
    unary(&mut grpc, ask("ok", 0, Code::Ok)).await.unwrap();
    for code in [
        Code::NotFound,
        Code::InvalidArgument,
        Code::PermissionDenied,
        Code::ResourceExhausted,
    ] {
        let status = unary(&mut grpc, ask("client fault", 0, code))
            .await
            .expect_err("the backend fails the call");
        assert_eq!(status.code(), code);
    }
    let (got, end) = drain(stream(&mut grpc, ask("s", 2, Code::Ok)).await.unwrap()).await;
    assert_eq!(got.len(), 2);
    end.expect("an OK status in the trailers");
    let (_, end) = drain(
        stream(&mut grpc, ask("s", 2, Code::NotFound))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(end.unwrap_err().code(), Code::NotFound);
    assert_eq!(errors(), 0, "no server fault so far");

    // Server faults in a trailers-only response (the status in the response head).
    for (n, code) in [Code::Internal, Code::Unavailable, Code::Unimplemented]
        .into_iter()
        .enumerate()
    {
        let status = unary(&mut grpc, ask("server fault", 0, code))
            .await
            .expect_err("the backend fails the call");
        assert_eq!(status.code(), code);
        assert_eq!(errors(), n as u64 + 1, "{code:?} counts");
    }

    // A server fault in the trailers after streamed data: the data passes, the status counts.
    let (got, end) = drain(
        stream(&mut grpc, ask("s", 3, Code::Internal))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        got.len(),
        3,
        "the answers before the failure reach the client"
    );
    assert_eq!(end.unwrap_err().code(), Code::Internal);
    // The proxy reads the trailers as it forwards them: counted by the time the client has them.
    assert_eq!(errors(), 4);

    let blue_stats = proxy.proxy.backend_stats("web", Slot::Blue).unwrap();
    assert_eq!(blue_stats.requests, 11);
    assert_eq!(scraped_backend_errors(&proxy, "blue").await, 4);
    assert_eq!(scraped_backend_errors(&proxy, "green").await, 0);
}
