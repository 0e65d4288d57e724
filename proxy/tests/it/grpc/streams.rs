//! gRPC calls whose request is a stream too: client streaming and bidirectional streaming (each
//! message passes as it is sent, in lockstep with the answers), messages of many MiB both ways,
//! a client's `grpc-timeout` passed to the backend and its expiry cancelling the backend's call,
//! and a backend that dies in the middle of a stream.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use http::uri::PathAndQuery;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};
use tonic_prost::ProstCodec;

use super::h2c_route;
use crate::limits::wait_for;
use crate::support::{config, start};

/// A message of the calls here: a name, a payload, and a size the answer's payload should have.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Blob {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
    #[prost(uint32, tag = "3")]
    pub size: u32,
}

const COLLECT: &str = "/crossfade.test.Blobs/Collect";
const CHAT: &str = "/crossfade.test.Blobs/Chat";
const BIG: &str = "/crossfade.test.Blobs/Big";
const HANG: &str = "/crossfade.test.Blobs/Hang";
const FEED: &str = "/crossfade.test.Blobs/Feed";
const FLOOD: &str = "/crossfade.test.Blobs/Flood";

/// The size of each answer of [`FLOOD`].
const FLOOD_MESSAGE: usize = 256 << 10;

/// The largest message either side encodes or decodes here: above tonic's 4 MiB default.
const MAX_MESSAGE: usize = 64 << 20;

/// `len` bytes of a pattern that a shifted or truncated copy does not match.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// What a [`BlobBackend`] saw.
#[derive(Default)]
struct Seen {
    /// The `grpc-timeout` of each call to [`HANG`].
    timeouts: Mutex<Vec<Option<String>>>,
    /// Calls whose handler was dropped before it ended (the call was cancelled).
    cancelled: AtomicU64,
    /// Connections accepted.
    accepted: AtomicU64,
    /// Bytes of [`FLOOD`] answers handed to hyper, all calls together.
    flooded: AtomicU64,
}

/// An h2c gRPC backend (hyper's HTTP/2 server, tonic's handlers) for the calls here; `kill`
/// drops every connection it holds at once, as a backend process that dies.
struct BlobBackend {
    addr: SocketAddr,
    seen: Arc<Seen>,
    kill: Arc<Notify>,
}

async fn blob_backend(name: &'static str) -> BlobBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let kill = Arc::new(Notify::new());
    let (s, k) = (seen.clone(), kill.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            s.accepted.fetch_add(1, Ordering::Relaxed);
            let (seen, kill) = (s.clone(), k.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let seen = seen.clone();
                    async move { Ok::<_, Infallible>(serve(name, seen, request).await) }
                });
                let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = connection => {}
                    // Dropped: the socket closes without a GOAWAY.
                    _ = kill.notified() => {}
                }
            });
        }
    });
    BlobBackend { addr, seen, kill }
}

fn server() -> tonic::server::Grpc<ProstCodec<Blob, Blob>> {
    tonic::server::Grpc::new(ProstCodec::default())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

type Blobs = Pin<Box<dyn Stream<Item = Result<Blob, Status>> + Send>>;

async fn serve(
    backend: &'static str,
    seen: Arc<Seen>,
    request: http::Request<Incoming>,
) -> http::Response<tonic::body::Body> {
    match request.uri().path() {
        COLLECT => {
            let collect = tower::service_fn(move |r| collect(backend, r));
            server().client_streaming(collect, request).await
        }
        CHAT => {
            let chat = tower::service_fn(move |r| chat(backend, r));
            server().streaming(chat, request).await
        }
        BIG => {
            let big = tower::service_fn(move |r: tonic::Request<Blob>| async move {
                let ask = r.into_inner();
                Ok::<_, Status>(tonic::Response::new(Blob {
                    name: format!("{backend} got {} bytes", ask.data.len()),
                    data: pattern(ask.size as usize, 7),
                    size: 0,
                }))
            });
            server().unary(big, request).await
        }
        HANG => {
            let timeout = request.headers().get("grpc-timeout");
            let timeout = timeout.map(|v| v.to_str().unwrap().to_owned());
            seen.timeouts.lock().unwrap().push(timeout);
            let hang = tower::service_fn(move |_: tonic::Request<Blob>| {
                let guard = Cancelled(seen.clone(), true);
                async move {
                    std::future::pending::<()>().await;
                    drop(guard);
                    Ok::<tonic::Response<Blob>, Status>(tonic::Response::new(Blob::default()))
                }
            });
            server().unary(hang, request).await
        }
        FEED => {
            let feed = tower::service_fn(move |r| feed(backend, seen.clone(), r));
            server().server_streaming(feed, request).await
        }
        FLOOD => {
            let flood = tower::service_fn(move |_: tonic::Request<Blob>| {
                let seen = seen.clone();
                async move {
                    let answers = futures_util::stream::repeat_with(move || {
                        seen.flooded
                            .fetch_add(FLOOD_MESSAGE as u64, Ordering::Relaxed);
                        Ok(blob("flood", vec![9; FLOOD_MESSAGE], 0))
                    });
                    Ok::<_, Status>(tonic::Response::new(Box::pin(answers) as Blobs))
                }
            });
            server().server_streaming(flood, request).await
        }
        other => panic!("no method {other}"),
    }
}

/// Counts a cancelled call when dropped while armed.
struct Cancelled(Arc<Seen>, bool);

impl Drop for Cancelled {
    fn drop(&mut self) {
        if self.1 {
            self.0.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Client streaming: answers once the client ended, with how many messages and bytes it sent.
async fn collect(
    backend: &'static str,
    request: tonic::Request<Streaming<Blob>>,
) -> Result<tonic::Response<Blob>, Status> {
    let mut blobs = request.into_inner();
    let (mut count, mut bytes) = (0u64, 0u64);
    while let Some(blob) = blobs.message().await? {
        assert_eq!(blob.data, pattern(blob.data.len(), count as u8));
        count += 1;
        bytes += blob.data.len() as u64;
    }
    Ok(tonic::Response::new(Blob {
        name: format!("{backend}: {count} messages, {bytes} bytes"),
        ..Blob::default()
    }))
}

/// Bidirectional: answers each message as it comes, with a payload of the size it asks, and
/// ends when the client ends.
async fn chat(
    backend: &'static str,
    request: tonic::Request<Streaming<Blob>>,
) -> Result<tonic::Response<Blobs>, Status> {
    let blobs = request.into_inner();
    let answers = blobs.map(move |blob| {
        let blob = blob?;
        Ok(Blob {
            name: format!("{backend}: {} ({} bytes)", blob.name, blob.data.len()),
            data: pattern(blob.size as usize, blob.data.len() as u8),
            size: 0,
        })
    });
    Ok(tonic::Response::new(Box::pin(answers) as Blobs))
}

/// Server streaming without an end: one answer each 20 ms until the call is cancelled.
async fn feed(
    backend: &'static str,
    seen: Arc<Seen>,
    _: tonic::Request<Blob>,
) -> Result<tonic::Response<Blobs>, Status> {
    let answers = futures_util::stream::unfold(0u32, move |n| async move {
        if n > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let blob = Blob {
            name: format!("{backend} {n}"),
            ..Blob::default()
        };
        Some((Ok(blob), n + 1))
    });
    let guard = Cancelled(seen, true);
    let answers = answers.map(move |answer| {
        let _ = &guard;
        answer
    });
    Ok(tonic::Response::new(Box::pin(answers) as Blobs))
}

/// A tonic client over one HTTP/2 connection to the proxy.
async fn client(proxy: SocketAddr) -> tonic::client::Grpc<Channel> {
    let channel = Channel::from_shared(format!("http://{proxy}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to the proxy");
    tonic::client::Grpc::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

fn path(method: &'static str) -> PathAndQuery {
    PathAndQuery::from_static(method)
}

fn blob(name: &str, data: Vec<u8>, size: u32) -> Blob {
    Blob {
        name: name.into(),
        data,
        size,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_bidirectional_grpc_streams_pass_each_message_as_it_is_sent() {
    let (blue, green) = (blob_backend("blue").await, blob_backend("green").await);
    let proxy = start(config(vec![h2c_route(blue.addr, green.addr, 10_000)])).await;
    let mut grpc = client(proxy.addr).await;

    // Client streaming: 200 messages, one answer after the client's end.
    grpc.ready().await.unwrap();
    let sent = futures_util::stream::iter((0..200u32).map(|i| blob("m", pattern(100, i as u8), 0)));
    let answer = grpc
        .client_streaming(
            tonic::Request::new(sent),
            path(COLLECT),
            ProstCodec::default(),
        )
        .await
        .expect("a client-streaming call succeeds");
    let answer: Blob = answer.into_inner();
    assert_eq!(answer.name, "blue: 200 messages, 20000 bytes");

    // Bidirectional in lockstep: each answer comes back before the next message is sent, so
    // nothing on the way may hold a message back waiting for more.
    let (to_backend, outgoing) = mpsc::channel::<Blob>(1);
    let outgoing = tokio_stream_from(outgoing);
    grpc.ready().await.unwrap();
    let response = grpc
        .streaming(
            tonic::Request::new(outgoing),
            path(CHAT),
            ProstCodec::default(),
        )
        .await;
    // tonic sends the request head at once but waits for the response head, which a backend
    // sends only once its handler returns: the first message goes before that wait ends.
    let mut answers: Streaming<Blob> = response.expect("the chat starts").into_inner();
    for i in 0..50u32 {
        let message = blob(&format!("line {i}"), vec![b'x'; i as usize], 10);
        to_backend.send(message).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), answers.message())
            .await
            .unwrap_or_else(|_| panic!("no answer to line {i} while the stream stays open"))
            .expect("an answer")
            .expect("not the end");
        assert_eq!(answer.name, format!("blue: line {i} ({i} bytes)"));
        assert_eq!(answer.data, pattern(10, i as u8));
    }
    drop(to_backend);
    assert_eq!(answers.message().await.expect("an OK end"), None);
    answers.trailers().await.expect("OK trailers");
}

/// The receiving half of `receiver` as a `Stream` (no tokio-stream here).
fn tokio_stream_from(mut receiver: mpsc::Receiver<Blob>) -> impl Stream<Item = Blob> {
    futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_messages_of_many_mebibytes_pass_both_ways() {
    let (blue, green) = (blob_backend("blue").await, blob_backend("green").await);
    let proxy = start(config(vec![h2c_route(blue.addr, green.addr, 10_000)])).await;
    let mut grpc = client(proxy.addr).await;

    // Unary: 24 MiB up, 24 MiB down (many times the HTTP/2 windows on both legs).
    let size = 24 << 20;
    grpc.ready().await.unwrap();
    let request = tonic::Request::new(blob("big", pattern(size, 3), size as u32));
    let answer: Blob = grpc
        .unary(request, path(BIG), ProstCodec::default())
        .await
        .expect("a 24 MiB call succeeds")
        .into_inner();
    assert_eq!(answer.name, format!("blue got {size} bytes"));
    assert!(answer.data == pattern(size, 7), "the answer arrives intact");

    // Several large messages each way on one bidirectional stream.
    let (to_backend, outgoing) = mpsc::channel::<Blob>(1);
    grpc.ready().await.unwrap();
    let mut answers: Streaming<Blob> = grpc
        .streaming(
            tonic::Request::new(tokio_stream_from(outgoing)),
            path(CHAT),
            ProstCodec::default(),
        )
        .await
        .expect("the chat starts")
        .into_inner();
    let sizes = [5usize << 20, 9 << 20, 1, 6 << 20];
    let sending = tokio::spawn(async move {
        for (i, size) in sizes.into_iter().enumerate() {
            let message = blob(&format!("part {i}"), pattern(size, size as u8), size as u32);
            to_backend.send(message).await.unwrap();
        }
    });
    for (i, size) in sizes.into_iter().enumerate() {
        let answer = answers.message().await.expect("an answer").expect("more");
        assert_eq!(answer.name, format!("blue: part {i} ({size} bytes)"));
        assert!(answer.data == pattern(size, size as u8), "intact");
    }
    sending.await.unwrap();
    assert_eq!(answers.message().await.expect("an OK end"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_deadline_reaches_the_backend_and_its_expiry_cancels_the_backends_call() {
    let (blue, green) = (blob_backend("blue").await, blob_backend("green").await);
    let proxy = start(config(vec![h2c_route(blue.addr, green.addr, 10_000)])).await;
    let mut grpc = client(proxy.addr).await;

    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(blob("slow", Vec::new(), 0));
    request.set_timeout(Duration::from_millis(400));
    let status = grpc
        .unary::<_, Blob, _>(request, path(HANG), ProstCodec::default())
        .await
        .expect_err("the backend never answers");
    // tonic's client ends the call itself at its deadline (and says CANCELLED).
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    let timeouts = blue.seen.timeouts.lock().unwrap().clone();
    assert_eq!(timeouts.len(), 1);
    let timeout = timeouts[0].clone().expect("the backend sees grpc-timeout");
    assert!(
        timeout.ends_with('m') || timeout.ends_with('u'),
        "{timeout}"
    );
    // The client reset its stream at the deadline: the proxy resets its upstream stream, which
    // drops the backend's handler.
    wait_for(|| async { blue.seen.cancelled.load(Ordering::Relaxed) == 1 }).await;

    // The same for a stream the client drops midway.
    grpc.ready().await.unwrap();
    let mut feed: Streaming<Blob> = grpc
        .server_streaming(
            tonic::Request::new(blob("feed", Vec::new(), 0)),
            path(FEED),
            ProstCodec::default(),
        )
        .await
        .unwrap()
        .into_inner();
    for n in 0..3 {
        let answer = feed.message().await.unwrap().unwrap();
        assert_eq!(answer.name, format!("blue {n}"));
    }
    drop(feed);
    wait_for(|| async { blue.seen.cancelled.load(Ordering::Relaxed) == 2 }).await;
    assert_eq!(blue.seen.accepted.load(Ordering::Relaxed), 1);
    let _ = green;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_dies_mid_stream_fails_the_call_and_the_next_call_reconnects() {
    let (blue, green) = (blob_backend("blue").await, blob_backend("green").await);
    let proxy = start(config(vec![h2c_route(blue.addr, green.addr, 10_000)])).await;
    let mut grpc = client(proxy.addr).await;

    grpc.ready().await.unwrap();
    let mut feed: Streaming<Blob> = grpc
        .server_streaming(
            tonic::Request::new(blob("feed", Vec::new(), 0)),
            path(FEED),
            ProstCodec::default(),
        )
        .await
        .unwrap()
        .into_inner();
    for n in 0..3 {
        let answer = feed.message().await.unwrap().unwrap();
        assert_eq!(answer.name, format!("blue {n}"));
    }
    blue.kill.notify_waiters();
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match feed.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return feed.trailers().await.map(|_| ()),
                Err(status) => return Err(status),
            }
        }
    })
    .await
    .expect("the call ends when its backend dies");
    let status = end.expect_err("a call cut short by its backend is no success");
    // The proxy resets the client's stream (the head went out already); tonic reads the reset
    // as UNKNOWN or INTERNAL.
    assert!(
        matches!(status.code(), Code::Unknown | Code::Internal),
        "{status:?}"
    );
    let stats = proxy
        .proxy
        .backend_stats("web", crossfade_proxy::Slot::Blue)
        .unwrap();
    assert_eq!(
        (stats.requests, stats.errors),
        (1, 1),
        "counted as the backend's error"
    );

    // The next call goes on a new upstream connection.
    grpc.ready().await.unwrap();
    let answer: Blob = grpc
        .unary(
            tonic::Request::new(blob("again", vec![1], 1)),
            path(BIG),
            ProstCodec::default(),
        )
        .await
        .expect("the next call succeeds")
        .into_inner();
    assert_eq!(answer.name, "blue got 1 bytes");
    assert_eq!(blue.seen.accepted.load(Ordering::Relaxed), 2);
    let _ = green;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_their_streams_do_not_stall_other_clients_of_the_backend() {
    let (blue, green) = (blob_backend("blue").await, blob_backend("green").await);
    let proxy = start(config(vec![h2c_route(blue.addr, green.addr, 10_000)])).await;

    // Eight clients, each on its own connection with 64 KiB windows, open an endless stream of
    // 256 KiB answers, read the first and then nothing more (slow or stuck readers: the proxy may
    // hold what their windows refuse, up to its window of each stream upstream).
    let mut held = Vec::new();
    for i in 0..8 {
        let channel = Channel::from_shared(format!("http://{}", proxy.addr))
            .unwrap()
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535)
            .connect()
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let request = tonic::Request::new(blob(&format!("reader {i}"), Vec::new(), 0));
        let call = grpc.server_streaming(request, path(FLOOD), ProstCodec::default());
        // Each on the same upstream connection as the stuck ones before it.
        let first = async {
            let mut flood: Streaming<Blob> = call.await.expect("the stream starts").into_inner();
            flood.message().await.unwrap().expect("a first answer");
            flood
        };
        let flood = tokio::time::timeout(Duration::from_secs(20), first)
            .await
            .unwrap_or_else(|_| panic!("reader {i} got nothing beside the stuck streams"));
        held.push((grpc, flood));
    }
    // All share the proxy's one connection to blue's endpoint, each stream filling its window
    // there (2 MiB): well past 12 MiB in all. A connection window that bound all of them instead
    // (hyper's 5 MiB) stops the backend near 5 MiB plus what the readers took (about 2 MiB).
    let flooded = || blue.seen.flooded.load(Ordering::Relaxed);
    for _ in 0..500 {
        if flooded() >= 12 << 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        flooded() >= 12 << 20,
        "the backend stopped at {} B",
        flooded()
    );
    assert_eq!(blue.seen.accepted.load(Ordering::Relaxed), 1);

    // Another client's call on the same upstream connection is answered: a stuck stream holds
    // its own window, never the whole connection's.
    let mut grpc = client(proxy.addr).await;
    grpc.ready().await.unwrap();
    let request = tonic::Request::new(blob("beside", vec![1; 10], 100_000));
    let call = grpc.unary::<_, Blob, _>(request, path(BIG), ProstCodec::default());
    let answer = tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .unwrap_or_else(|_| panic!("no answer beside stuck streams ({} B flooded)", flooded()))
        .expect("and succeeds")
        .into_inner();
    assert_eq!(answer.data, pattern(100_000, 7));
    drop(held);
}

/// An h2c backend (the test service) that takes at most `max` streams at once per connection.
async fn limited_backend(max: u32) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            s.accepted.fetch_add(1, Ordering::Relaxed);
            let seen = s.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let seen = seen.clone();
                    async move { Ok::<_, Infallible>(serve("blue", seen, request).await) }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(max)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// Opens `streams` endless streams through the proxy to a backend taking `max` streams per
/// connection (two streams per client connection to the proxy), then checks that another
/// client's calls are answered on a second upstream connection while the first still carries
/// its streams.
async fn calls_beside_open_streams(max: u32, streams: u32) {
    let (addr, seen) = limited_backend(max).await;
    let green = blob_backend("green").await;
    let proxy = start(config(vec![h2c_route(addr, green.addr, 10_000)])).await;

    let mut held = Vec::new();
    for i in 0..streams {
        let mut grpc = client(proxy.addr).await;
        if i % 2 == 1 {
            let last: &(tonic::client::Grpc<Channel>, _) = held.last().unwrap();
            grpc = last.0.clone();
        }
        grpc.ready().await.unwrap();
        let request = tonic::Request::new(blob(&format!("watch {i}"), Vec::new(), 0));
        let mut feed: Streaming<Blob> = grpc
            .server_streaming(request, path(FEED), ProstCodec::default())
            .await
            .expect("a stream starts")
            .into_inner();
        feed.message().await.unwrap().expect("a first answer");
        held.push((grpc, feed));
    }
    assert_eq!(
        seen.accepted.load(Ordering::Relaxed),
        1,
        "one connection for the first {streams}"
    );

    let mut grpc = client(proxy.addr).await;
    for _ in 0..5 {
        grpc.ready().await.unwrap();
        let request = tonic::Request::new(blob("beside", vec![1; 10], 10));
        let call = grpc.unary::<_, Blob, _>(request, path(BIG), ProstCodec::default());
        let answer = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .unwrap_or_else(|_| panic!("no answer to a call beside {streams} open streams"))
            .expect("and succeeds")
            .into_inner();
        assert_eq!(answer.data, pattern(10, 7));
    }
    assert_eq!(seen.accepted.load(Ordering::Relaxed), 2);
    // The first connection, no longer handed out, still carries its streams.
    for (_, feed) in held.iter_mut() {
        let answer = feed
            .message()
            .await
            .expect("the stream goes on")
            .expect("more");
        assert!(answer.name.starts_with("blue "), "{}", answer.name);
    }
    assert_eq!(seen.cancelled.load(Ordering::Relaxed), 0);

    // The streams end when their clients go: every handler is dropped.
    drop(held);
    wait_for(|| async { seen.cancelled.load(Ordering::Relaxed) == u64::from(streams) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_a_connections_share_open_another_upstream_connection() {
    // A backend that allows 100 streams per connection (hyper's and tonic's default is 200): at
    // the proxy's own bound.
    calls_beside_open_streams(100, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_at_the_backends_own_lower_limit_open_another_upstream_connection() {
    calls_beside_open_streams(4, 4).await;
}
