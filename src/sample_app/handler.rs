//! The sample app's routes and the faults (`--latency`, `--error-rate`, health plan) around them.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::body::{PatternBody, CHUNKED_BODY_LEN, CHUNKED_CHUNK_LEN};
use super::grpc;
use super::websocket::{self, Identity};
use super::SampleAppArgs;

/// Every response body: small ones are `Full`, large ones stream a `PatternBody`.
pub(super) type ResBody = BoxBody<Bytes, Infallible>;

/// `/api` answers exactly this many bytes.
const API_BODY_LEN: usize = 1024;
/// `/slow` without `?ms=` waits this long.
const SLOW_DEFAULT_MS: u64 = 1000;
/// Most bytes of a request body the app reads and drops before answering a route that does not
/// use the body (every route but `/upload` and `/ws`), so that the next request of a keep-alive
/// HTTP/1.1 connection is read after it (trial 11, L5). A longer body is answered without reading
/// the rest, with `Connection: close` (RFC 9112 §9.6), since the connection cannot go on.
const DRAIN_LIMIT: u64 = 64 << 20;

/// The routes, told apart by path alone (see [`App::route`] for their methods).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Health,
    Api,
    Chunked,
    EchoHeaders,
    Upload,
    Download,
    Slow,
    WebSocket,
    Version,
}

/// Shared state of one sample app: identity headers, canned bodies and the fault plan.
pub(super) struct App {
    identity: [(HeaderName, HeaderValue); 3],
    version_body: Bytes,
    api_body: Bytes,
    started: Instant,
    health: HealthPlan,
    errors: ErrorBudget,
    /// `--latency` (or `--latency-file`'s latest reading), in milliseconds.
    latency_ms: AtomicU64,
    /// `--hang-after`: from then on, no request is answered.
    hang_after: Option<Duration>,
    reject_uploads: bool,
    websocket: Arc<Identity>,
}

/// When `/healthz` answers 503: before `unready_for` has elapsed, and from `fail_after` on.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct HealthPlan {
    pub(super) unready_for: Option<Duration>,
    pub(super) fail_after: Option<Duration>,
    /// `(half period, cycles)`: 200 for a half period, then 503 for one, `cycles` times.
    pub(super) flap: Option<(Duration, u32)>,
}

/// Deterministic error injection: the i-th request (from 0) fails iff `floor((i+1)·rate)` is above
/// `floor(i·rate)`, so any n consecutive requests hold `floor(n·rate)` or `ceil(n·rate)` failures.
#[derive(Debug)]
pub(super) struct ErrorBudget {
    /// The rate in parts per million, so the arithmetic is exact integers.
    per_million: AtomicU64,
    seen: AtomicU64,
}

// === impl Route ===

impl Route {
    fn of(path: &str) -> Self {
        match path {
            "/healthz" => Self::Health,
            "/api" => Self::Api,
            "/chunked" => Self::Chunked,
            "/echo-headers" => Self::EchoHeaders,
            "/upload" => Self::Upload,
            "/download" => Self::Download,
            "/slow" => Self::Slow,
            "/ws" => Self::WebSocket,
            _ => Self::Version,
        }
    }
}

// === impl App ===

impl App {
    /// Builds the app for `args`, listening on `port` (which names the default instance).
    pub(super) fn new(args: &SampleAppArgs, port: u16) -> anyhow::Result<Self> {
        let pool = args.pool.clone().unwrap_or_else(|| args.version.clone());
        let instance = args
            .instance
            .clone()
            .unwrap_or_else(|| format!("{pool}-{port}"));
        let header = |flag: &str, value: &str| {
            HeaderValue::try_from(value).with_context(|| {
                format!("sample-app: {flag} {value:?} is not a valid header value")
            })
        };
        // The version first: the pool and the instance default to it, and a bad one was blamed
        // on `--pool`, which the user had not given (trial 19).
        let version = header("--version", &args.version)?;
        let identity = [
            (HeaderName::from_static("x-pool"), header("--pool", &pool)?),
            (
                HeaderName::from_static("x-instance"),
                header("--instance", &instance)?,
            ),
            (HeaderName::from_static("x-version"), version),
        ];
        Ok(Self {
            identity,
            version_body: Bytes::from(format!("{}\n", args.version)),
            api_body: api_body(&args.version, &pool),
            started: Instant::now(),
            health: HealthPlan {
                unready_for: args.unready_for,
                fail_after: args.fail_health_after,
                flap: args.health_flap.map(|d| (d, args.health_flap_cycles)),
            },
            errors: ErrorBudget::new(args.error_rate),
            latency_ms: AtomicU64::new(args.latency),
            hang_after: args.hang_after,
            reject_uploads: args.reject_uploads,
            websocket: Arc::new(Identity {
                version: args.version.clone(),
                pool,
                instance,
            }),
        })
    }

    /// Answers one request; every answer carries `X-Pool`, `X-Instance` and `X-Version`.
    /// From `--hang-after` on, never answers (health checks included) while the connection stays
    /// open: a hung process that still accepts.
    ///
    /// The request body is read before the answer (dropped, up to [`DRAIN_LIMIT`] bytes, on
    /// routes that do not use it), so an HTTP/1.1 connection stays usable for the next request;
    /// when the app answers without having read all of it (a body over the limit, a broken one,
    /// `/upload` with `--reject-uploads`), the answer says `Connection: close`, and the
    /// connection closes after it.
    pub(super) async fn handle(&self, mut req: Request<Incoming>) -> Response<ResBody> {
        if self.hang_after.is_some_and(|h| self.started.elapsed() >= h) {
            std::future::pending::<()>().await;
        }
        let route = Route::of(req.uri().path());
        let http1 = req.version() < Version::HTTP_2;
        let rejects = route == Route::Upload && self.reject_uploads;
        // `/upload` reads its own body (below, or after an injected error); `/ws` has none and
        // hands the request to the upgrade.
        let mut whole = true;
        if !matches!(route, Route::Upload | Route::WebSocket) {
            whole = drain(req.body_mut()).await;
        }
        let mut res = match route {
            Route::Health => self.healthz(),
            _ if crossfade_proxy::grpc::is_grpc(req.headers()) => self.grpc().await,
            _ => self.with_faults(route, req).await,
        };
        if http1 && (!whole || rejects || res.extensions().get::<Unread>().is_some()) {
            res.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        res.headers_mut().extend(self.identity.iter().cloned());
        res
    }

    fn healthz(&self) -> Response<ResBody> {
        let status = self.health.status(self.started.elapsed());
        let body = if status.is_success() {
            "ok"
        } else {
            "unhealthy (fault flag)\n"
        };
        text(status, body)
    }

    /// Sets the latency added to every non-health request, in milliseconds (`--latency-file`).
    pub(super) fn set_latency(&self, ms: u64) {
        self.latency_ms.store(ms, Ordering::Relaxed);
    }

    /// Sets the share of non-health requests answered 500 (`--error-rate-file`).
    pub(super) fn set_error_rate(&self, rate: f64) {
        self.errors.set(rate);
    }

    /// Waits out the added latency, if any.
    async fn delay(&self) {
        let ms = self.latency_ms.load(Ordering::Relaxed);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }

    /// `--latency` first, then `--error-rate`, then the route itself. An injected error on
    /// `/upload` reads (drops) the body first, as the other routes' bodies were before this.
    async fn with_faults(&self, route: Route, mut req: Request<Incoming>) -> Response<ResBody> {
        self.delay().await;
        if self.errors.next_fails() {
            let whole =
                route != Route::Upload || self.reject_uploads || drain(req.body_mut()).await;
            let mut res = text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "injected error (--error-rate)\n",
            );
            if !whole {
                res.extensions_mut().insert(Unread);
            }
            return res;
        }
        self.route(route, req).await
    }

    /// A gRPC call on any path but `/healthz` (its body read already): `--latency`, then
    /// `--error-rate` as gRPC status INTERNAL, then the reply naming the version ([`grpc`]).
    async fn grpc(&self) -> Response<ResBody> {
        self.delay().await;
        if self.errors.next_fails() {
            return grpc::injected_error();
        }
        grpc::reply(&self.websocket.version)
    }

    /// Any method is accepted everywhere except `/upload` (PUT or POST).
    async fn route(&self, route: Route, req: Request<Incoming>) -> Response<ResBody> {
        let query = req.uri().query().map(str::to_owned);
        match route {
            Route::Api => full(StatusCode::OK, "application/json", self.api_body.clone()),
            Route::Chunked => stream(PatternBody::chunked(
                CHUNKED_BODY_LEN as u64,
                CHUNKED_CHUNK_LEN,
            )),
            Route::EchoHeaders => echo_headers(&req),
            Route::Upload if self.reject_uploads => text(
                StatusCode::UNAUTHORIZED,
                "upload rejected (--reject-uploads)\n",
            ),
            Route::Upload => upload(req).await,
            Route::Download => match query_u64(query.as_deref(), "bytes") {
                Some(Ok(n)) => stream(PatternBody::sized(n)),
                _ => text(StatusCode::BAD_REQUEST, "usage: /download?bytes=N\n"),
            },
            Route::Slow => match query_u64(query.as_deref(), "ms").unwrap_or(Ok(SLOW_DEFAULT_MS)) {
                Ok(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    self.version()
                }
                Err(()) => text(StatusCode::BAD_REQUEST, "usage: /slow?ms=N\n"),
            },
            Route::WebSocket => websocket::upgrade(&self.websocket, req),
            Route::Health | Route::Version => self.version(),
        }
    }

    fn version(&self) -> Response<ResBody> {
        full(StatusCode::OK, "text/plain", self.version_body.clone())
    }
}

/// Marks a response given without the whole request body read: [`App::handle`] adds
/// `Connection: close` to it on HTTP/1.
#[derive(Clone, Copy, Debug)]
struct Unread;

/// Reads and drops `body` up to [`DRAIN_LIMIT`] bytes; true when it ended within them, false
/// when it is longer or broke off (the connection then cannot carry another request).
async fn drain(body: &mut Incoming) -> bool {
    let mut read = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return false;
        };
        if let Some(data) = frame.data_ref() {
            read += data.len() as u64;
            if read > DRAIN_LIMIT {
                return false;
            }
        }
    }
    true
}

/// A 1 KiB JSON document naming the version and pool, padded with `x`.
fn api_body(version: &str, pool: &str) -> Bytes {
    let head = serde_json::json!({ "version": version, "pool": pool }).to_string();
    // `{...,"pad":"` + pad + `"}\n` is API_BODY_LEN bytes.
    let pad = API_BODY_LEN.saturating_sub(head.len() + r#","pad":""}"#.len());
    let doc = format!(
        r#"{},"pad":"{}"}}"#,
        &head[..head.len() - 1],
        "x".repeat(pad)
    );
    Bytes::from(doc + "\n")
}

/// `/echo-headers`: every request header as `name → [values]`, one entry per header line.
///
/// On HTTP/1 it also answers with hop-by-hop headers (`Connection: X-Backend-Hop`,
/// `X-Backend-Hop`, `Keep-Alive`) that a proxy must not forward (RFC 9110 §7.6.1). HTTP/2 forbids
/// connection-specific fields (RFC 9113 §8.2.2), so they are left out there.
fn echo_headers<B>(req: &Request<B>) -> Response<ResBody> {
    let mut seen = BTreeMap::<&str, Vec<String>>::new();
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        seen.entry(name.as_str()).or_default().push(value);
    }
    let json = serde_json::to_vec(&seen).unwrap_or_default();
    let mut res = full(StatusCode::OK, "application/json", Bytes::from(json));
    if req.version() < Version::HTTP_2 {
        let headers = res.headers_mut();
        headers.insert(CONNECTION, HeaderValue::from_static("X-Backend-Hop"));
        headers.insert("x-backend-hop", HeaderValue::from_static("y"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=99"));
    }
    res
}

/// `/upload`: streams the body through SHA-256 and answers 201 `{"bytes":N,"sha256":"<hex>"}`.
async fn upload(req: Request<Incoming>) -> Response<ResBody> {
    if req.method() != Method::PUT && req.method() != Method::POST {
        let mut res = text(StatusCode::METHOD_NOT_ALLOWED, "use PUT or POST\n");
        res.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("PUT, POST"));
        return res;
    }
    let mut body = req.into_body();
    let (mut hasher, mut bytes) = (Sha256::new(), 0u64);
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    hasher.update(data);
                    bytes += data.len() as u64;
                }
            }
            Err(error) => {
                let mut res = text(StatusCode::BAD_REQUEST, &format!("reading body: {error}\n"));
                res.extensions_mut().insert(Unread);
                return res;
            }
        }
    }
    let doc = serde_json::json!({ "bytes": bytes, "sha256": format!("{:x}", hasher.finalize()) });
    full(
        StatusCode::CREATED,
        "application/json",
        Bytes::from(doc.to_string() + "\n"),
    )
}

/// The (last) value of `key` in a query string: `None` if absent, `Err` if not a `u64`.
fn query_u64(query: Option<&str>, key: &str) -> Option<Result<u64, ()>> {
    let mut pairs = query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='));
    let (_, value) = pairs.rfind(|(k, _)| *k == key)?;
    Some(value.parse().map_err(drop))
}

pub(super) fn text(status: StatusCode, body: &str) -> Response<ResBody> {
    full(
        status,
        "text/plain",
        Bytes::copy_from_slice(body.as_bytes()),
    )
}

fn full(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<ResBody> {
    let mut res = Response::new(Full::new(body).boxed());
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

fn stream(body: PatternBody) -> Response<ResBody> {
    let mut res = Response::new(body.boxed());
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    res
}

// === impl HealthPlan ===

impl HealthPlan {
    /// The `/healthz` status `elapsed` after start.
    pub(super) fn status(&self, elapsed: Duration) -> StatusCode {
        let starting = self.unready_for.is_some_and(|d| elapsed < d);
        let failing = self.fail_after.is_some_and(|d| elapsed >= d);
        let flapping = self.flap.is_some_and(|(half, cycles)| {
            let n = elapsed.as_nanos() / half.as_nanos().max(1);
            n % 2 == 1 && n < 2 * u128::from(cycles)
        });
        if starting || failing || flapping {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        }
    }
}

// === impl ErrorBudget ===

impl ErrorBudget {
    /// A budget failing `rate` (clamped to `0..=1`) of requests.
    pub(super) fn new(rate: f64) -> Self {
        Self {
            per_million: AtomicU64::new(Self::ppm(rate)),
            seen: AtomicU64::new(0),
        }
    }

    /// `rate` (clamped to `0..=1`) in parts per million.
    fn ppm(rate: f64) -> u64 {
        (rate.clamp(0.0, 1.0) * 1e6).round() as u64
    }

    /// Fails `rate` (clamped to `0..=1`) of the requests from now on (`--error-rate-file`).
    pub(super) fn set(&self, rate: f64) {
        self.per_million.store(Self::ppm(rate), Ordering::Relaxed);
    }

    /// Whether the next request must fail.
    pub(super) fn next_fails(&self) -> bool {
        let i = u128::from(self.seen.fetch_add(1, Ordering::Relaxed));
        let ppm = u128::from(self.per_million.load(Ordering::Relaxed));
        (i + 1) * ppm / 1_000_000 > i * ppm / 1_000_000
    }
}
