//! Upstream pools: one pooled client per backend, its endpoints' authorities, and the
//! classification of upstream failures into [`ErrorKind`].
//!
//! A backend speaks HTTP/1.1 keep-alive by default, or cleartext HTTP/2 with prior knowledge
//! (`protocol: h2c`): one HTTP/2 connection per endpoint (`h2c`, driven directly rather than by
//! hyper-util's pool, so that `:authority` carries the client's host) and every request is a
//! stream on it (RFC 9113 §5), so concurrent requests, gRPC calls included, share it; response
//! trailers (gRPC's `grpc-status`) are body frames and pass through unchanged. A stream an h2c
//! backend refused unprocessed (RFC 9113 §6.8, §8.7) is replayed once there (see `h2c`, `replay`).
//!
//! A backend's [`Upstream`] is shared (by `Arc`) by every table generation in which the backend's
//! endpoints are unchanged, so weight changes keep the pools warm. When the endpoints change, the
//! old `Upstream` is dropped with the last table or request that references it: in-flight requests
//! finish on their connections, idle pooled connections close, and no new request reaches it.
//!
//! Stale keep-alive connections (case C17, hyperium/hyper#3553): the pool closes idle connections
//! after `upstream.idle_timeout` (4 s), below the keep-alive timeouts of common backends, so the
//! backend does not close a connection the proxy is about to reuse. When a reused connection is
//! found closed before any request byte was written, hyper-util's client re-sends the request on a
//! fresh connection by itself (`retry_canceled_requests`, on by default); those internal retries are
//! not visible to the proxy and so not counted. When the close races the write instead (the
//! backend's FIN arrives just after the request went out), the exchange fails with a reset before
//! any response byte: the proxy re-sends a bodiless idempotent request once, and counts it in
//! `crossfade_retries_total{reason="reset"}`. A request with a body is never re-sent once written.
//!
//! Connection affinity ([`Affinity`]): an HTTP/1.x client sends one request after another, so the
//! upstream connection that carried its previous request to an endpoint is free again when the next
//! one arrives. Each client connection keeps that connection per backend and reuses it directly,
//! skipping the shared pool (its lock, its hash map, its checkout future and the body wrapper that
//! hands a connection back). HTTP/2 clients (concurrent streams), a different endpoint than the one
//! held, and anything the held connection cannot take go through the shared pool. A held connection
//! idle longer than `upstream.idle_timeout` is closed rather than reused (C17); one found closed
//! before the request was written is replaced by a fresh connection, as the pool does; and every
//! held connection closes when its backend's pool is dropped (retired or re-endpointed), so no idle
//! connection to a retired backend outlives it.

use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, Response, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{BackendConfig, UpstreamConfig, UpstreamProtocol};
use crate::early::{EarlyResponseConnector, EarlyResponseIo};
use crate::error::{BoxError, ErrorKind};
use crate::expect::ExpectBody;
use crate::health::{BackendHealth, HasHealth};
use crate::stats::BackendStats;
use crate::weight::Slot;

mod h2c;
mod replay;

/// The body sent upstream: the client's streaming body (held back while an `Expect: 100-continue`
/// is pending, see `expect`), or a complete one: empty for bodiless and retried requests, a copy of
/// the client's for a shadow mirror.
pub type UpstreamBody = Either<ExpectBody, Full<Bytes>>;

type HttpClient = Client<EarlyResponseConnector, UpstreamBody>;

/// The machinery's part of a backend: its pool, its endpoints as URI authorities, its stats and its
/// labels.
#[derive(Debug)]
pub struct Upstream {
    route: Arc<str>,
    slot: Slot,
    endpoints: Arc<[SocketAddr]>,
    authorities: Box<[Authority]>,
    client: HttpClient,
    stats: Arc<BackendStats>,
    health: Arc<BackendHealth>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// The protocol spoken to the endpoints.
    protocol: UpstreamProtocol,
    /// How many more retries this backend may make (see [`RetryBudget`]).
    budget: RetryBudget,
    /// Dropped with this pool: every directly driven connection ([`Affinity`]) then closes.
    closing: watch::Sender<()>,
    /// `protocol: h2c`: one HTTP/2 connection per endpoint (see `h2c`).
    h2c: h2c::H2cConnections,
}

/// Why an upstream exchange failed before a response head.
#[derive(Debug)]
pub struct SendError {
    /// The failure's class.
    pub kind: ErrorKind,
    /// The library error behind it.
    pub source: BoxError,
    /// True when the client's own request body failed (the client went away mid-upload): not the
    /// backend's fault (see [`downstream_aborted`]).
    pub downstream_aborted: bool,
    /// With `downstream_aborted`: the client's body was malformed (hyper could not decode its
    /// framing, such as an invalid chunk size, RFC 9112 §7.1) rather than cut short (see
    /// [`downstream_malformed`]).
    pub downstream_malformed: bool,
}

/// The upstream connections one client connection holds, one per backend slot (see the module
/// docs). Only for HTTP/1.x clients, whose requests never overlap.
#[derive(Debug, Default)]
pub struct Affinity {
    held: Mutex<[Option<Held>; 2]>,
}

#[derive(Debug)]
struct Held {
    upstream: Weak<Upstream>,
    endpoint: usize,
    sender: SendRequest<UpstreamBody>,
    idle_since: Instant,
}

// === impl Upstream ===

impl Upstream {
    /// A fresh pool for `endpoints` of (`route`, `slot`) speaking `protocol`, counting into
    /// `stats`.
    pub fn new(
        route: Arc<str>,
        (slot, protocol): (Slot, UpstreamProtocol),
        endpoints: Arc<[SocketAddr]>,
        config: &UpstreamConfig,
        stats: Arc<BackendStats>,
        health: Arc<BackendHealth>,
    ) -> Upstream {
        let authorities = endpoints.iter().map(authority).collect();
        let h2c = h2c::H2cConnections::new(match protocol {
            UpstreamProtocol::H2c => endpoints.len(),
            UpstreamProtocol::Http1 => 0,
        });
        Upstream {
            route,
            slot,
            endpoints,
            authorities,
            client: client(config, protocol),
            stats,
            health,
            connect_timeout: config.connect_timeout,
            idle_timeout: config.idle_timeout,
            protocol,
            budget: RetryBudget::new(&config.retry_budget),
            closing: watch::Sender::new(()),
            h2c,
        }
    }

    /// Whether this pool serves exactly `backend`'s endpoints, in its protocol, for (`route`,
    /// `slot`), so a new table can reuse it.
    pub fn serves(&self, route: &str, slot: Slot, backend: &BackendConfig) -> bool {
        &*self.route == route
            && self.slot == slot
            && self.protocol == backend.protocol
            && *self.endpoints == *backend.endpoints
    }

    /// The HTTP version of requests sent upstream.
    #[inline]
    pub fn version(&self) -> Version {
        match self.protocol {
            UpstreamProtocol::Http1 => Version::HTTP_11,
            UpstreamProtocol::H2c => Version::HTTP_2,
        }
    }

    /// The stats this backend counts into.
    pub fn stats(&self) -> &Arc<BackendStats> {
        &self.stats
    }

    /// The health of this backend's endpoints.
    pub fn health(&self) -> &Arc<BackendHealth> {
        &self.health
    }

    /// The backend's retry budget.
    pub fn budget(&self) -> &RetryBudget {
        &self.budget
    }

    /// The absolute URI of `path` on endpoint `index` (clamped into range): no string formatting,
    /// the authority is prebuilt.
    pub fn uri(&self, index: usize, path: Option<PathAndQuery>) -> Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = self.authorities.get(index).cloned();
        parts.path_and_query = Some(path.unwrap_or_else(|| PathAndQuery::from_static("/")));
        // Scheme, authority and path all come from valid parts.
        Uri::from_parts(parts).unwrap_or_default()
    }

    /// Sends `request` (absolute URI, [`Upstream::version`]) to endpoint `index` and waits for the
    /// response head: over the connection `affinity` holds for this backend and endpoint when there
    /// is one and the backend speaks HTTP/1.1 (see the module docs), else over the shared pool.
    ///
    /// # Errors
    /// The failure's [`ErrorKind`] and the library error.
    pub async fn send(
        self: &Arc<Self>,
        affinity: Option<&Affinity>,
        index: usize,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, SendError> {
        match affinity {
            Some(affinity) if self.protocol == UpstreamProtocol::Http1 => {
                self.send_held(affinity, index, request).await
            }
            _ if self.protocol == UpstreamProtocol::H2c => {
                self.h2c.send(self, index, request).await
            }
            _ => self.pooled(request).await,
        }
    }

    async fn pooled(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, SendError> {
        self.client.request(request).await.map_err(|e| SendError {
            kind: classify(&e),
            downstream_aborted: downstream_aborted(&e),
            downstream_malformed: downstream_malformed(&e),
            source: Box::new(e),
        })
    }

    /// Over the held connection, or a new one that is then held.
    async fn send_held(
        self: &Arc<Self>,
        affinity: &Affinity,
        index: usize,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, SendError> {
        let slot = self.slot.index();
        let (mut sender, reused) = match affinity.take(slot, self, index, self.idle_timeout) {
            // The previous response's end may still be on its way through the connection's task.
            Found::Ready(mut sender) => match sender.ready().await {
                Ok(()) => (sender, true),
                Err(_) => (self.connect(index).await?, false),
            },
            Found::Elsewhere => return self.pooled(request).await,
            Found::None => (self.connect(index).await?, false),
        };
        let mut request = request;
        origin_form(request.uri_mut());
        let result = match sender.try_send_request(request).await {
            // The held connection closed before the request went out (the backend closed it as it
            // idled): nothing was written, so a fresh connection takes the request.
            Err(mut e) if reused => match e.take_message() {
                Some(request) => {
                    sender = self.connect(index).await?;
                    sender.try_send_request(request).await
                }
                None => Err(e),
            },
            result => result,
        };
        match result {
            Ok(response) => {
                affinity.put(slot, self, index, sender);
                Ok(response)
            }
            Err(e) => Err(send_error(e.into_error(), false)),
        }
    }

    /// A new HTTP/1.1 connection to endpoint `index`, driven by its own task until the connection
    /// ends or this pool is dropped.
    async fn connect(&self, index: usize) -> Result<SendRequest<UpstreamBody>, SendError> {
        let stream = self.dial(index).await?;
        let io = TokioIo::new(EarlyResponseIo::new(stream));
        let (sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| send_error(e, true))?;
        let mut closing = self.closing.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                _ = connection => {}
                _ = closing.changed() => {}
            }
        });
        Ok(sender)
    }

    /// A TCP connection (`TCP_NODELAY`) to endpoint `index` within the connect timeout.
    async fn dial(&self, index: usize) -> Result<tokio::net::TcpStream, SendError> {
        let Some(&addr) = self.endpoints.get(index) else {
            return Err(no_such_endpoint());
        };
        let stream =
            match tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(addr))
                .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    let kind = match e.kind() {
                        io::ErrorKind::ConnectionRefused => ErrorKind::ConnectRefused,
                        io::ErrorKind::TimedOut => ErrorKind::ConnectTimeout,
                        _ => ErrorKind::ConnectError,
                    };
                    return Err(connect_error(kind, e));
                }
                Err(_) => {
                    let e = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
                    return Err(connect_error(ErrorKind::ConnectTimeout, e));
                }
            };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

fn connect_error(kind: ErrorKind, error: io::Error) -> SendError {
    SendError {
        kind,
        source: Box::new(error),
        downstream_aborted: false,
        downstream_malformed: false,
    }
}

fn no_such_endpoint() -> SendError {
    let e = io::Error::new(io::ErrorKind::NotFound, "no such endpoint");
    connect_error(ErrorKind::ConnectError, e)
}

/// A backend's retry budget ([`crate::config::RetryBudgetConfig`]): a bucket of retry tokens, in
/// thousandths, that every first attempt fills by the configured ratio and time fills by the
/// configured minimum per second, up to a cap of 10 s of the minimum plus 1000 retries. A retry
/// takes one token or is not made.
#[derive(Debug)]
pub struct RetryBudget {
    /// Tokens × 1000.
    milli: AtomicU64,
    /// Added per first attempt: ratio in basis points / 10.
    per_request: u64,
    /// Added per second: `min_per_second` × 1000.
    per_second: u64,
    cap: u64,
    /// When time last refilled the bucket.
    refilled: Mutex<Instant>,
}

impl RetryBudget {
    /// A budget for `config`, starting with one second of the minimum.
    pub fn new(config: &crate::config::RetryBudgetConfig) -> RetryBudget {
        let per_second = u64::from(config.min_per_second) * 1000;
        RetryBudget {
            milli: AtomicU64::new(per_second),
            per_request: u64::from(config.ratio.0.min(crate::weight::FULL_BP)) / 10,
            per_second,
            cap: per_second * 10 + 1_000_000,
            refilled: Mutex::new(Instant::now()),
        }
    }

    /// Counts a first attempt: its share of a retry goes into the bucket.
    #[inline]
    pub fn deposit(&self) {
        if self.per_request == 0 {
            return;
        }
        let before = self.milli.fetch_add(self.per_request, Relaxed);
        if before + self.per_request > self.cap {
            // Rare (a full bucket): settle back to the cap.
            let _ = self
                .milli
                .fetch_update(Relaxed, Relaxed, |v| Some(v.min(self.cap)));
        }
    }

    /// Takes one retry's token if there is one; false when the budget is spent.
    pub fn try_withdraw(&self) -> bool {
        {
            let mut refilled = self.refilled.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let elapsed_ms =
                u64::try_from(now.duration_since(*refilled).as_millis()).unwrap_or(u64::MAX);
            let add = elapsed_ms.saturating_mul(self.per_second) / 1000;
            if add > 0 {
                *refilled = now;
                let cap = self.cap;
                let _ = self
                    .milli
                    .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_add(add).min(cap)));
            }
        }
        self.milli
            .fetch_update(Relaxed, Relaxed, |v| v.checked_sub(1000))
            .is_ok()
    }
}

/// What [`Affinity::take`] found for a backend slot.
enum Found {
    /// A held connection to the wanted endpoint, open (wait for `ready()` before sending).
    Ready(SendRequest<UpstreamBody>),
    /// A live connection to another endpoint of the same backend: kept, and this request takes the
    /// pool.
    Elsewhere,
    /// Nothing usable: connect.
    None,
}

// === impl Affinity ===

impl Affinity {
    /// Takes the connection held for `slot` if it is to endpoint `index` of `upstream`, open and
    /// idle for less than `idle_timeout`; drops one that is not usable any more.
    fn take(
        &self,
        slot: usize,
        upstream: &Arc<Upstream>,
        index: usize,
        idle_timeout: Duration,
    ) -> Found {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = held.get_mut(slot) else {
            return Found::None;
        };
        let Some(h) = entry.as_ref() else {
            return Found::None;
        };
        let same_pool = std::ptr::eq(h.upstream.as_ptr(), Arc::as_ptr(upstream));
        let usable = same_pool && !h.sender.is_closed() && h.idle_since.elapsed() < idle_timeout;
        if usable && h.endpoint != index {
            return Found::Elsewhere;
        }
        match entry.take() {
            Some(h) if usable => Found::Ready(h.sender),
            _ => Found::None,
        }
    }

    /// Holds `sender` (to endpoint `index` of `upstream`) for `slot`, replacing what was held.
    fn put(
        &self,
        slot: usize,
        upstream: &Arc<Upstream>,
        index: usize,
        sender: SendRequest<UpstreamBody>,
    ) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = held.get_mut(slot) {
            *entry = Some(Held {
                upstream: Arc::downgrade(upstream),
                endpoint: index,
                sender,
                idle_since: Instant::now(),
            });
        }
    }
}

impl HasHealth for Arc<Upstream> {
    #[inline]
    fn health(&self) -> &BackendHealth {
        &self.health
    }
}

fn authority(addr: &SocketAddr) -> Authority {
    Authority::try_from(addr.to_string()).unwrap_or_else(|_| Authority::from_static("invalid"))
}

/// The backend's client: HTTP/1.1 only, or HTTP/2 only for `h2c` (whose requests take `h2c`'s
/// connections instead), `TCP_NODELAY`, connect timeout, an idle timeout below backends' keep-alive timeouts
/// (C17) and an unbounded idle pool, since an idle cap below the concurrency makes the pool churn
/// connections (−41 % throughput in shared/reference/perf).
fn client(config: &UpstreamConfig, protocol: UpstreamProtocol) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(config.connect_timeout));
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(config.idle_timeout)
        .pool_max_idle_per_host(usize::MAX)
        .http2_only(protocol == UpstreamProtocol::H2c)
        .build(EarlyResponseConnector(connector))
}

/// Maps a pooled client's error onto the closed [`ErrorKind`] set by walking its source chain.
pub fn classify(error: &hyper_util::client::legacy::Error) -> ErrorKind {
    classify_chain(error, error.is_connect())
}

/// The [`ErrorKind`] of any error chain; `connect` when it happened while connecting.
fn classify_chain(error: &(dyn StdError + 'static), connect: bool) -> ErrorKind {
    let io_kind = sources(error).find_map(|e| e.downcast_ref::<io::Error>().map(io::Error::kind));
    if connect {
        return match io_kind {
            Some(io::ErrorKind::ConnectionRefused) => ErrorKind::ConnectRefused,
            Some(io::ErrorKind::TimedOut) => ErrorKind::ConnectTimeout,
            _ => ErrorKind::ConnectError,
        };
    }
    let hyper = sources(error).find_map(|e| e.downcast_ref::<hyper::Error>());
    match (hyper, io_kind) {
        (Some(h), _) if h.is_parse() || h.is_parse_status() || h.is_user() => ErrorKind::Protocol,
        (Some(h), _) if h.is_incomplete_message() || h.is_canceled() || h.is_closed() => {
            ErrorKind::Reset
        }
        (_, Some(_)) => ErrorKind::Reset,
        _ => ErrorKind::Protocol,
    }
}

/// A direct connection's error; `connect` when it happened during the handshake.
/// Rewrites an absolute request URI (`http://10.0.0.7:8080/a?q`, as [`Upstream::uri`] builds it
/// for the pool, which keys connections by authority) to the origin form `/a?q` that an HTTP/1.1
/// request to an origin server must carry (RFC 9112 §3.2.1). hyper's connection-level sender
/// writes the URI as given, and an origin server that receives the absolute form must take the
/// host from it and ignore `Host` (RFC 9112 §3.2.2), so the endpoint's address would replace the
/// client's host at the backend. hyper-util's pooled client makes the same rewrite itself.
fn origin_form(uri: &mut Uri) {
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *uri = Uri::from(path);
}

fn send_error(error: hyper::Error, connect: bool) -> SendError {
    SendError {
        kind: classify_chain(&error, connect),
        downstream_aborted: aborted_chain(&error),
        downstream_malformed: malformed_chain(&error),
        source: Box::new(error),
    }
}

/// True when the exchange failed because the **client's** request body failed (the client went away
/// mid-upload): hyper reports a user body error whose cause is the downstream connection's own error.
/// That is no fault of the backend and must not count against it (an untrusted client could otherwise
/// push a preview's error rate over its limit and force a rollback).
pub fn downstream_aborted(error: &hyper_util::client::legacy::Error) -> bool {
    aborted_chain(error)
}

/// True when [`downstream_aborted`] and the client's body failed because hyper could not decode
/// its framing (an invalid chunk size or chunk extension, RFC 9112 §7.1: hyper's decoder reports
/// `InvalidData` or `InvalidInput`), not because the client went away (`UnexpectedEof`, a reset).
pub fn downstream_malformed(error: &hyper_util::client::legacy::Error) -> bool {
    malformed_chain(error)
}

fn malformed_chain(error: &(dyn StdError + 'static)) -> bool {
    aborted_chain(error)
        && sources(error)
            .filter_map(|e| e.downcast_ref::<io::Error>())
            .any(|e| {
                matches!(
                    e.kind(),
                    io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput
                )
            })
}

fn aborted_chain(error: &(dyn StdError + 'static)) -> bool {
    let mut hyper_errors = sources(error).filter_map(|e| e.downcast_ref::<hyper::Error>());
    matches!(hyper_errors.next(), Some(e) if e.is_user()) && hyper_errors.next().is_some()
}

fn sources<'a>(
    error: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(error), |&e| e.source())
}
