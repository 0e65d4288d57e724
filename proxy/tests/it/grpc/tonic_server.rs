//! Both ends on tonic's full stack: two `tonic::transport::Server` backends (blue and green, h2c)
//! serving the Echo service written by hand (no protoc), and a tonic `Channel` client through the
//! proxy. Unary calls split by weight, a server stream arrives in order with its OK status, failing
//! statuses keep their code and message (trailers-only, and in the trailers after data), and a
//! client's deadline (`grpc-timeout`) reaches tonic's server and ends the backend's call.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::PathAndQuery;
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

use super::{
    ask, client, drain, h2c_route, serve, split_calls, stream, stream_in_order, unary, Answer, Ask,
};
use crate::limits::wait_for;
use crate::support::{config, start};

/// The Echo method that answers only after [`SLOW_ANSWER`]: a call for a deadline to cut short.
const SLOW: &str = "/crossfade.test.Echo/Slow";

/// Long enough that a test never waits for it: a Slow call ends early only when it is cut short.
const SLOW_ANSWER: Duration = Duration::from_secs(60);

/// The Echo service of one backend: `Unary` and `Stream` by the file's handlers (`super::serve`),
/// `Slow` here, any other method UNIMPLEMENTED.
#[derive(Clone)]
struct Echo {
    backend: &'static str,
    seen: Arc<Seen>,
}

/// What a backend saw of its Slow calls.
#[derive(Default)]
struct Seen {
    /// The `grpc-timeout` header of each Slow call.
    timeouts: Mutex<Vec<Option<String>>>,
    /// Slow calls whose handler has ended (dropped, since none runs to its answer in a test).
    ended: AtomicU32,
}

// === impl Echo ===

impl NamedService for Echo {
    const NAME: &'static str = "crossfade.test.Echo";
}

type Answering = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl tower::Service<http::Request<Body>> for Echo {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Answering;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Answering {
        let echo = self.clone();
        let path = request.uri().path().to_owned();
        let prefix = format!("/{}/", Self::NAME);
        Box::pin(async move {
            Ok(match path.strip_prefix(&prefix) {
                Some("Unary" | "Stream") => serve(echo.backend, Code::Ok, request).await,
                Some("Slow") => echo.slow(request).await,
                _ => Status::unimplemented(format!("no method {path}")).into_http(),
            })
        })
    }
}

impl Echo {
    /// Records the call's `grpc-timeout`, then answers after [`SLOW_ANSWER`].
    async fn slow(self, request: http::Request<Body>) -> http::Response<Body> {
        let timeout = request.headers().get("grpc-timeout");
        let timeout = timeout.map(|v| v.to_str().unwrap().to_owned());
        self.seen.timeouts.lock().unwrap().push(timeout);
        let answer = tower::service_fn(move |_: tonic::Request<Ask>| {
            let ended = Ended(self.seen.clone());
            async move {
                tokio::time::sleep(SLOW_ANSWER).await;
                drop(ended);
                Ok(tonic::Response::new(Answer {
                    backend: self.backend.into(),
                    seq: 0,
                }))
            }
        });
        let mut grpc = tonic::server::Grpc::new(ProstCodec::<Answer, Ask>::default());
        grpc.unary(answer, request).await
    }
}

/// Counts a Slow handler's end in [`Seen::ended`] when dropped.
struct Ended(Arc<Seen>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.ended.fetch_add(1, Ordering::SeqCst);
    }
}

/// A `tonic::transport::Server` with `backend`'s Echo service on an ephemeral port (HTTP/2 only,
/// as tonic's server is by default).
async fn tonic_backend(backend: &'static str) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let echo = Echo {
        backend,
        seen: seen.clone(),
    };
    let incoming = futures_util::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    });
    tokio::spawn(Server::builder().serve_with_incoming(echo, incoming));
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_servers_behind_the_proxy_share_unary_calls_by_weight_and_stream_in_order() {
    let ((blue, _), (green, _)) = (tonic_backend("blue").await, tonic_backend("green").await);
    let proxy = start(config(vec![h2c_route(blue, green, 7_000)])).await;
    let mut grpc = client(proxy.addr).await;

    let (to_blue, to_green) = split_calls(&mut grpc, 1_000).await;
    // 30% of 1000 is 300, σ = √(1000 · 0.3 · 0.7) ≈ 14.5: within 6σ (±87).
    assert!(
        (213..=387).contains(&to_green),
        "blue {to_blue}, green {to_green}"
    );

    stream_in_order(&mut grpc, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tonic_servers_failing_status_and_a_tonic_clients_deadline_cross_the_proxy() {
    let ((blue, seen), (green, _)) = (tonic_backend("blue").await, tonic_backend("green").await);
    let proxy = start(config(vec![h2c_route(blue, green, 10_000)])).await;
    let mut grpc = client(proxy.addr).await;

    // A unary failure: a trailers-only response, the status in its head.
    let status = unary(&mut grpc, ask("bad", 0, Code::FailedPrecondition))
        .await
        .expect_err("the backend fails the call");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(status.message(), "blue fails bad as asked");

    // A stream failing after its answers: the status comes in the trailers, after the data.
    let answers = stream(&mut grpc, ask("s", 3, Code::DataLoss))
        .await
        .expect("stream");
    let (got, end) = drain(answers).await;
    assert_eq!(got.len(), 3, "the answers before the failure arrive");
    let status = end.expect_err("the trailers carry the failure");
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    assert_eq!(status.message(), "failed after the answers");

    // A deadline: the backend gets it as `grpc-timeout`, and its handler ends well before its answer.
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(ask("slow", 0, Code::Ok));
    request.set_timeout(Duration::from_millis(300));
    let path = PathAndQuery::from_static(SLOW);
    let status = grpc
        .unary::<_, Answer, _>(request, path, ProstCodec::default())
        .await
        .expect_err("the deadline ends the call");
    // tonic's server and client both time the call and both say CANCELLED "Timeout expired".
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    assert_eq!(status.message(), "Timeout expired");
    let timeouts = seen.timeouts.lock().unwrap().clone();
    let [Some(timeout)] = &timeouts[..] else {
        panic!("one Slow call with a grpc-timeout: {timeouts:?}");
    };
    let timeout = grpc_timeout(timeout);
    assert!(
        !timeout.is_zero() && timeout <= Duration::from_millis(300),
        "{timeout:?}"
    );
    wait_for(|| async { seen.ended.load(Ordering::SeqCst) == 1 }).await;

    // The client's connection serves the next call.
    let answer = unary(&mut grpc, ask("after", 0, Code::Ok)).await.unwrap();
    assert_eq!(answer.into_inner().backend, "blue");
}

/// A `grpc-timeout` value: at most 8 digits and a unit (gRPC over HTTP/2, "Timeout").
fn grpc_timeout(value: &str) -> Duration {
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits
        .parse()
        .unwrap_or_else(|_| panic!("grpc-timeout {value}"));
    match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => panic!("grpc-timeout {value}: no unit"),
    }
}
