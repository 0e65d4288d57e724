//! Test helpers: tiny in-process hyper backends on port 0, a proxy running in-process, clients.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use crossfade_proxy::admin::{serve_admin, AdminAuth};
use crossfade_proxy::{BackendConfig, Proxy, ProxyConfig, ProxyMetrics, RouteConfig};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Size of `/chunked`'s body: three chunks, 10 KB in all (case C18).
pub const CHUNKED_LEN: usize = 10_000;

/// Size of `/big`'s body (chunked): 256 MiB, more than every socket buffer between the backend and
/// a client that reads nothing.
pub const BIG_LEN: usize = 256 * 1024 * 1024;

/// A fake backend: answers with `X-Pool: <pool>` and records what it saw.
#[derive(Clone)]
pub struct Backend {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<HeaderMap>>>,
    /// Connections accepted, and connections ended.
    pub opened: Arc<AtomicUsize>,
    pub closed: Arc<AtomicUsize>,
}

/// Starts a backend. Paths: `/chunked` (chunked 10 KB body), `/big` (chunked, [`BIG_LEN`]
/// bytes), `/slow/{ms}` (waits first),
/// `/echo` (returns the request headers as JSON pairs and sets hop-by-hop response headers),
/// `/upload` (answers the body's length), anything else `pool` as text.
pub async fn backend(pool: &'static str) -> Backend {
    serve_backend(pool, false).await
}

/// [`backend`] over h2c (hyper's HTTP/2 server, prior knowledge): the same paths, recorded alike.
pub async fn backend_over_h2c(pool: &'static str) -> Backend {
    serve_backend(pool, true).await
}

async fn serve_backend(pool: &'static str, h2c: bool) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let backend = Backend {
        addr,
        hits: Arc::default(),
        seen: Arc::default(),
        opened: Arc::default(),
        closed: Arc::default(),
    };
    let state = backend.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            state.opened.fetch_add(1, Ordering::SeqCst);
            let (closed, state) = (state.closed.clone(), state.clone());
            let service = service_fn(move |req| answer(pool, state.clone(), req));
            let io = TokioIo::new(stream);
            tokio::spawn(async move {
                let _ = match h2c {
                    false => {
                        let http1 = hyper::server::conn::http1::Builder::new();
                        http1.serve_connection(io, service).await
                    }
                    true => {
                        let http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                        http2.serve_connection(io, service).await
                    }
                };
                closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    backend
}

async fn answer(
    pool: &'static str,
    state: Backend,
    req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    state.hits.fetch_add(1, Ordering::SeqCst);
    state.seen.lock().unwrap().push(req.headers().clone());
    let path = req.uri().path().to_owned();
    let mut response = if path == "/chunked" {
        Response::new(TestBody::chunks(chunked_body()))
    } else if path == "/big" {
        // Far more than the socket buffers on the way hold: a client that reads nothing stalls it.
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let chunks = vec![Bytes::from_static(&ZEROS); BIG_LEN / ZEROS.len()];
        Response::new(TestBody::chunks(chunks))
    } else if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
        Response::new(TestBody::full(pool))
    } else if path == "/echo" {
        echo(req.headers())
    } else if path == "/upload" {
        let len = req.into_body().collect().await.unwrap().to_bytes().len();
        Response::new(TestBody::full(len.to_string()))
    } else {
        Response::new(TestBody::full(pool))
    };
    response
        .headers_mut()
        .insert("x-pool", pool.parse().unwrap());
    Ok(response)
}

fn echo(headers: &HeaderMap) -> Response<TestBody> {
    let pairs: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    let mut response = Response::new(TestBody::full(serde_json::to_string(&pairs).unwrap()));
    let h = response.headers_mut();
    h.insert("connection", "X-Backend-Hop".parse().unwrap());
    h.insert("x-backend-hop", "y".parse().unwrap());
    h.insert("keep-alive", "timeout=99".parse().unwrap());
    response
}

/// The exact bytes of `/chunked`.
pub fn chunked_body() -> Vec<Bytes> {
    (0..3u8)
        .map(|i| {
            let len = if i < 2 { 3_333 } else { CHUNKED_LEN - 6_666 };
            Bytes::from(vec![b'a' + i; len])
        })
        .collect()
}

/// A body of frames with no known length, so hyper sends it chunked.
pub struct TestBody {
    frames: VecDeque<Bytes>,
    exact: bool,
}

impl TestBody {
    fn full(text: impl Into<String>) -> TestBody {
        TestBody {
            frames: VecDeque::from([Bytes::from(text.into())]),
            exact: true,
        }
    }

    fn chunks(chunks: Vec<Bytes>) -> TestBody {
        TestBody {
            frames: chunks.into(),
            exact: false,
        }
    }
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.frames.pop_front().map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        if self.exact {
            let len: usize = self.frames.iter().map(Bytes::len).sum();
            http_body::SizeHint::with_exact(len as u64)
        } else {
            http_body::SizeHint::default()
        }
    }
}

/// An address where nothing listens (connects are refused), reserved for the rest of the test
/// binary's run: the socket stays bound without listening (Linux answers a connect to it with a
/// reset), so no other process on a shared machine can take the port and accept.
pub async fn refused_addr() -> SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    // Leaked on purpose: one descriptor per call, for the few calls of this test binary.
    std::mem::forget(socket);
    addr
}

/// A route `web` on `/` with the given endpoints and weights in basis points.
pub fn route(blue: &[SocketAddr], green: &[SocketAddr], blue_bp: u32) -> RouteConfig {
    let backend = |endpoints: &[SocketAddr], bp: u32| BackendConfig {
        endpoints: endpoints.to_vec(),
        weight: Some(crossfade_proxy::Percent(bp)),
        ..BackendConfig::default()
    };
    RouteConfig {
        name: "web".into(),
        blue: backend(blue, blue_bp),
        green: backend(green, 10_000 - blue_bp),
        ..RouteConfig::default()
    }
}

/// A proxy and its admin API, running in-process on port 0.
pub struct Running {
    pub proxy: Proxy,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<crossfade_proxy::Result<()>>,
}

/// Starts `config`'s proxy on port 0, with metrics and the admin API.
pub async fn start(config: ProxyConfig) -> Running {
    let mut registry = Registry::with_prefix("crossfade");
    let metrics = ProxyMetrics::register(&mut registry);
    let proxy = Proxy::new(&config, metrics).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = admin_listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let (admin_stop, admin_stopped) = oneshot::channel::<()>();
    let serving = proxy.clone();
    let task = tokio::spawn(async move {
        let result = serving
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await;
        let _ = admin_stop.send(());
        result
    });
    tokio::spawn(serve_admin(
        proxy.clone(),
        Arc::new(registry),
        None,
        AdminAuth::open(),
        admin_listener,
        async move {
            let _ = admin_stopped.await;
        },
    ));
    Running {
        proxy,
        addr,
        admin,
        stop: Some(stop),
        task,
    }
}

impl Running {
    /// Begins shutdown; await `task` to see it finish.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }
}

pub type TestClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// An HTTP/1.1 keep-alive client.
pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 prior-knowledge (h2c) client.
pub fn h2c_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// Sends a request; returns status, headers and the whole body as text.
pub async fn send(
    client: &TestClient,
    req: Request<Full<Bytes>>,
) -> (StatusCode, HeaderMap, String) {
    let response = client.request(req).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// `GET url`.
pub async fn get(client: &TestClient, url: &str) -> (StatusCode, HeaderMap, String) {
    let req = Request::get(url).body(Full::default()).unwrap();
    send(client, req).await
}

/// A config with `routes` and short timeouts.
pub fn config(routes: Vec<RouteConfig>) -> ProxyConfig {
    ProxyConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin: "127.0.0.1:0".parse().unwrap(),
        drain_timeout: Duration::from_secs(5),
        routes,
        ..ProxyConfig::default()
    }
}

/// Whether `tool --version` runs, for a test that needs a real client. Missing: panics with a hint
/// naming the Debian `package` when `CROSSFADE_REQUIRE_TOOLS` is set to anything but empty or `0`
/// (scripts/test.sh exports it after installing every tool) or `CI` is `true`; else prints a loud
/// `SKIPPED` line and returns false, so a bare `cargo test` works on a machine without the tool.
/// The root crate's tests follow the same rule (tests/it/support's `tools_required`; session 44).
pub fn have_tool(test: &str, tool: &str, package: &str) -> bool {
    if std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok()
    {
        return true;
    }
    let hint =
        format!("{tool} is not installed (Debian package {package}; scripts/test.sh installs it)");
    let required = std::env::var("CROSSFADE_REQUIRE_TOOLS")
        .is_ok_and(|v| !v.is_empty() && v != "0")
        || std::env::var("CI").as_deref() == Ok("true");
    assert!(
        !required,
        "{test}: {hint} (required: CROSSFADE_REQUIRE_TOOLS or CI=true is set)"
    );
    eprintln!("\n!!!!! {test}: SKIPPED: {hint} !!!!!\n");
    false
}
