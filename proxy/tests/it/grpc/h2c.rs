//! h2c upstream connections: the `:authority` an h2c backend sees is the client's host (its `Host`
//! over HTTP/1.1, its `:authority` over HTTP/2), as an HTTP/1.1 backend sees the client's `Host`,
//! so name-based virtual hosts and gRPC servers see the name the client asked for, and no `Host`
//! header contradicts it (RFC 9113 §8.3.1); the connection still goes to the picked endpoint. A
//! connection idle for `upstream.idle_timeout` is replaced, and closes; one the backend closes
//! (GOAWAY) is replaced without failing a call.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::Channel;
use tonic::Code;

use super::{ask, grpc_backend, h2c_route, serve, unary};
use crate::support::{client, config, send, start};

/// What an h2c backend saw of one request: `:authority` and every `Host` header.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    authority: Option<String>,
    hosts: Vec<String>,
}

/// An h2c backend (the gRPC test service) that records what each request says its host is.
async fn recording_backend(name: &'static str) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = record.clone();
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let hosts = request.headers().get_all(HOST).iter();
                record.lock().unwrap().push(Seen {
                    authority: request.uri().authority().map(|a| a.to_string()),
                    hosts: hosts.map(|h| h.to_str().unwrap().to_owned()).collect(),
                });
                async move { Ok::<_, Infallible>(serve(name, Code::Ok, request).await) }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (addr, seen)
}

/// The last request `seen` recorded.
fn last(seen: &Mutex<Vec<Seen>>) -> Seen {
    seen.lock().unwrap().last().cloned().expect("a request")
}

/// What the backend must see for a client that asked for `host`.
fn asked(host: &str) -> Seen {
    Seen {
        authority: Some(host.to_owned()),
        hosts: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_backend_sees_the_clients_host_as_its_authority() {
    let (blue, seen) = recording_backend("blue").await;
    let (green, _) = recording_backend("green").await;
    let proxy = start(config(vec![h2c_route(blue, green, 10_000)])).await;

    // HTTP/1.1 client: its Host becomes the upstream :authority, port included.
    let request = Request::get(format!("http://{}/plain", proxy.addr))
        .header(HOST, "shop.example:8080")
        .body(Full::<Bytes>::default())
        .unwrap();
    let (status, _, body) = send(&client(), request).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "blue"));
    assert_eq!(last(&seen), asked("shop.example:8080"));

    // HTTP/2 client: its :authority passes on.
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut h2, connection) = hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = Request::get("http://api.example/plain")
        .body(Full::default())
        .unwrap();
    let response = h2.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "blue");
    assert_eq!(last(&seen), asked("api.example"));

    // A gRPC client that names its service: the server sees that name.
    let channel = Channel::from_shared(format!("http://{}", proxy.addr))
        .unwrap()
        .origin("http://grpc.example:50051".parse().unwrap())
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    let answer = unary(&mut grpc, ask("who", 0, Code::Ok)).await.unwrap();
    assert_eq!(answer.into_inner().backend, "blue");
    assert_eq!(last(&seen), asked("grpc.example:50051"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_h2c_connection_is_replaced_and_closes() {
    let (blue, green) = (grpc_backend("blue").await, grpc_backend("green").await);
    let mut config = config(vec![h2c_route(blue.addr, green.addr, 10_000)]);
    config.upstream.idle_timeout = Duration::from_millis(300);
    let proxy = start(config).await;
    let channel = Channel::from_shared(format!("http://{}", proxy.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    for _ in 0..3 {
        unary(&mut grpc, ask("busy", 0, Code::Ok)).await.unwrap();
    }
    assert_eq!(
        blue.accepted.load(Ordering::Relaxed),
        1,
        "one connection while busy"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    unary(&mut grpc, ask("after idle", 0, Code::Ok))
        .await
        .unwrap();
    assert_eq!(
        blue.accepted.load(Ordering::Relaxed),
        2,
        "a fresh connection after the idle time"
    );
    // The idle one was let go: only the fresh connection stays open.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while blue.open.load(Ordering::Relaxed) > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the idle connection is still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An h2c backend (the gRPC test service) that serves one request per connection, then closes it
/// gracefully (GOAWAY, RFC 9113 §6.8), as a backend going away or recycling connections does.
async fn one_call_per_connection_backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (served, mut once) = tokio::sync::mpsc::channel::<()>(1);
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let served = served.clone();
                async move {
                    let response = serve(name, Code::Ok, request).await;
                    let _ = served.try_send(());
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(async move {
                let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(connection);
                tokio::select! {
                    _ = connection.as_mut() => return,
                    _ = once.recv() => connection.as_mut().graceful_shutdown(),
                }
                let _ = connection.await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_survive_an_h2c_backend_that_closes_each_connection_after_one_call() {
    let blue = one_call_per_connection_backend("blue").await;
    let (green, _) = recording_backend("green").await;
    let proxy = start(config(vec![h2c_route(blue, green, 10_000)])).await;
    let channel = Channel::from_shared(format!("http://{}", proxy.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let grpc = tonic::client::Grpc::new(channel);
    for i in 0..30 {
        let answer = unary(&mut grpc.clone(), ask(&format!("call {i}"), 0, Code::Ok)).await;
        assert_eq!(
            answer.expect("the call succeeds").into_inner().backend,
            "blue"
        );
    }
    let calls = (0..20).map(|i| {
        let mut grpc = grpc.clone();
        tokio::spawn(async move { unary(&mut grpc, ask(&format!("burst {i}"), 0, Code::Ok)).await })
    });
    let mut failed = Vec::new();
    for call in futures_util::future::join_all(calls).await {
        if let Err(status) = call.unwrap() {
            failed.push(status);
        }
    }
    // A burst shares a connection that gets its GOAWAY after the first call: the streams it took
    // finish, and calls the closing connection never sent go out on a fresh one.
    assert!(failed.is_empty(), "{failed:?}");
}
