//! Upstream pools: one per backend (its connections, its endpoints' authorities), and the
//! classification of upstream failures into [`ErrorKind`].
//!
//! A backend speaks HTTP/1.1 keep-alive by default (the proxy's own idle stacks, below), or
//! cleartext HTTP/2 with prior knowledge (`protocol: h2c`): one HTTP/2 connection per endpoint
//! (`h2c`, driven directly so that `:authority` carries the client's host) and every request is a
//! stream on it (RFC 9113 §5), so concurrent requests, gRPC calls included, share it; response
//! trailers (gRPC's `grpc-status`) are body frames and pass through unchanged. A stream an h2c
//! backend refused unprocessed (RFC 9113 §6.8, §8.7) is replayed there (at most 3 times) (see `h2c`, `replay`).
//!
//! A backend's [`Upstream`] is shared (by `Arc`) by every table generation in which the backend's
//! endpoints are unchanged, so weight changes keep the pools warm. When the endpoints change, the
//! old `Upstream` is dropped with the last table or request that references it: in-flight requests
//! finish on their connections, idle pooled connections close, and no new request reaches it.
//!
//! Stale keep-alive connections (case C17, hyperium/hyper#3553): idle connections are closed
//! after `upstream.idle_timeout` (4 s), below the keep-alive timeouts of common backends, so the
//! backend does not close a connection the proxy is about to reuse. A backend that says it keeps
//! idle connections for less (`Keep-Alive: timeout=N`, Node.js with a short
//! `keepAliveTimeout`) has that connection taken again only within N s less 1 s, and not kept at
//! all when that leaves nothing or it says `max=0` (`keep_alive`; session 41); one that says
//! `max=M` has at most M more requests taken onto it, counted by the connection ([`Link`]'s
//! `left`, session 42): the header is read by the response's hop-by-hop strip, so a response
//! without it pays nothing, and taking a connection of which nothing was said one compare. When a reused connection is
//! found closed before any request byte was written, the request is re-sent on a fresh connection
//! (`h2c` does the same for a request its closing connection hands back); those internal retries
//! are not counted. That includes a close seen only after the request took the connection: hyper
//! hands a request queued on a connection that ended cleanly back only when the connection is
//! dropped, so a [`Link`] drops its connection the moment it ends (kept, the request waited for
//! the response timeout: a 504 after 30 s, once in ~80 runs of a test killing backends under load). When the close races the write instead (the
//! backend's FIN arrives just after the request went out), the exchange fails with a reset before
//! any response byte: the proxy re-sends a bodiless idempotent request once, and counts it in
//! `crossfade_retries_total{reason="reset"}`. A request with a body is never re-sent once written.
//!
//! HTTP/1.1 idle stacks ([`ResponseBody`]): an HTTP/1.1 connection carries one exchange at a time,
//! so the proxy keeps its idle upstream connections itself, one LIFO stack per endpoint, instead of
//! hyper-util's pool (its lock over a hash map keyed by scheme and authority, its checkout future
//! and its absolute-URI round trip cost 10–13 % per request in shared/reference/perf). A request
//! takes the most recently used idle connection to its endpoint, or connects; the connection goes
//! back onto the stack when the response body has ended (not at the head, so another request never
//! waits behind a body still streaming), and is closed instead when the body did not end (the
//! client went away mid-body), when the stack already holds `upstream.max_idle_per_endpoint`
//! connections, or when the connection is closing. So a client keep-alive connection that idles
//! holds no upstream connection: idle upstream connections number at most the peak of concurrent
//! requests per endpoint (and the cap), whatever the number of clients. A connection idle for
//! `upstream.idle_timeout` is never taken again (C17) and is closed by the backend's reaper task
//! (every quarter of the timeout); one found closed before the request was written is replaced by
//! a fresh connection, as hyper-util's pool does; and the stacks are part of the backend's
//! [`Upstream`], so when a retired or re-endpointed backend's pool is dropped every idle connection
//! to it closes, and a connection still carrying a response (which holds the pool) closes when that
//! response ends, so no idle connection to a retired backend outlives it. h2c backends keep one
//! multiplexed connection per endpoint instead (`h2c`).
//!
//! Early answers (`early`): every HTTP/1.1 connection's socket is wrapped so that an answer the
//! backend sent before it stopped reading an upload (a 413) reaches the client instead of a 502.
//!
//! No task of its own drives an HTTP/1.1 connection: the task of the request using it polls it,
//! while waiting for the response head and then from [`ResponseBody`] as the client's connection
//! reads the body, so a request costs no wake-up and no scheduling of a second task (the hop the
//! reference proxies in shared/reference/perf paid per request). An idle connection is polled by
//! no one; the request that takes it drives it once first, so a close by the backend meanwhile is
//! seen and the connection skipped before any request is written onto it.

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper::ext::InformationalSender;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::config::{BackendConfig, UpstreamConfig, UpstreamProtocol};
use crate::early::EarlyResponseIo;
use crate::error::{BoxError, ErrorKind};
use crate::expect::ExpectBody;
use crate::health::{BackendHealth, HasHealth};
use crate::interim::Relay;
use crate::stats::BackendStats;
use crate::tunnel::EndpointTunnels;
use crate::weight::Slot;

/// The body sent upstream: the client's streaming body (held back while an `Expect: 100-continue`
/// is pending, see `expect`), or a complete one: empty for bodiless and retried requests, a copy of
/// the client's for a shadow mirror.
pub type UpstreamBody = Either<ExpectBody, Full<Bytes>>;

mod h2c;
pub(crate) mod keep_alive;
mod replay;

/// The machinery's part of a backend: its pool, its endpoints as URI authorities, its stats and its
/// labels.
#[derive(Debug)]
pub struct Upstream {
    route: Arc<str>,
    slot: Slot,
    endpoints: Arc<[SocketAddr]>,
    authorities: Box<[Authority]>,
    /// `protocol: h2c` only: one HTTP/2 connection per endpoint (see `h2c`).
    h2c: Option<h2c::H2cConnections>,
    /// HTTP/1.1 backends: the idle connections, one stack per endpoint (see the module docs).
    idle: IdleStacks,
    stats: Arc<BackendStats>,
    /// Per endpoint, its entry in the backend's open tunnels (held so the request path takes no
    /// lock to count a tunnel).
    tunnels: Box<[Arc<EndpointTunnels>]>,
    health: Arc<BackendHealth>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// The protocol spoken to the endpoints.
    protocol: UpstreamProtocol,
    /// How many more retries this backend may make (see [`RetryBudget`]).
    budget: RetryBudget,
    /// This proxy's `Via` entries, for the 1xx responses it forwards from these endpoints.
    via: Arc<crate::via::Lazy>,
}

/// Why an upstream exchange failed before a response head.
#[derive(Debug)]
pub struct SendError {
    /// The failure's class.
    pub kind: ErrorKind,
    /// The library error behind it.
    pub source: BoxError,
    /// True when the client's own request body failed (the client went away mid-upload): not the
    /// backend's fault (see `aborted_chain`).
    pub downstream_aborted: bool,
    /// With `downstream_aborted`: the client's body was malformed (hyper could not decode its
    /// framing, such as an invalid chunk size, RFC 9112 §7.1) rather than cut short (see
    /// `malformed_chain`).
    pub downstream_malformed: bool,
}

/// A backend's idle HTTP/1.1 connections: per endpoint, a stack with the most recently used on top
/// (see the module docs).
#[derive(Debug)]
struct IdleStacks {
    stacks: Box<[Mutex<VecDeque<Idle>>]>,
    /// `upstream.max_idle_per_endpoint`.
    max_idle: usize,
    /// Whether the reaper task runs (started with the first connection put back).
    reaping: AtomicBool,
}

/// An idle HTTP/1.1 connection and until when it may be taken: `upstream.idle_timeout` after
/// its last response ended, or less when the backend said so (`keep_alive`).
#[derive(Debug)]
struct Idle {
    link: Link,
    until: Instant,
}

/// One HTTP/1.1 upstream connection: hyper's request handle and the connection itself, which no
/// task of its own drives: the task of the request using it does (while it waits for the response
/// head, then through [`ResponseBody`]), so a request costs no wake-up of another task.
struct Link {
    sender: SendRequest<UpstreamBody>,
    /// Where the 1xx responses the connection reads go: the client of the request in flight
    /// ([`crate::interim`]).
    relay: Arc<Relay>,
    /// `None` once the connection future has completed (closed, or failed). It is dropped then:
    /// a request still queued on a connection that the backend closed cleanly before hyper wrote
    /// it is handed back (with its message, so it is re-sent on a fresh connection) only when the
    /// connection is dropped, and a link kept waiting on it would wait for the response timeout.
    connection: Option<Pin<Box<H1Connection>>>,
    /// The response timer of the requests sent on the connection ([`poll_deadline`]): made at
    /// its first request and kept with it, in the idle stack too.
    timer: Option<Pin<Box<Sleep>>>,
    /// How many more requests the backend takes on the connection, when its `Keep-Alive` said
    /// (`max`, `keep_alive`): set from each response that says it, one less for each request
    /// taken after that; the connection is not pooled at 0. `None`: no limit said.
    left: Option<u32>,
}

/// hyper's HTTP/1.1 client connection over an upstream socket.
type H1Connection = Connection<TokioIo<EarlyResponseIo<TcpStream>>, UpstreamBody>;

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("ended", &self.ended())
            .finish()
    }
}

/// A response body from upstream. Over HTTP/1.1 it carries its connection and puts it back on its
/// endpoint's idle stack once the body has ended (see the module docs); dropped before that, the
/// connection closes.
#[derive(Debug)]
pub struct ResponseBody {
    body: Incoming,
    lease: Option<Lease>,
    /// An h2c response's stream, counted open on its connection until the body ends or is dropped.
    stream: Option<h2c::OpenStream>,
}

/// The HTTP/1.1 connection a response is read from, until its body ends.
#[derive(Debug)]
struct Lease {
    upstream: Arc<Upstream>,
    /// The endpoint's index, or [`NOT_REUSED`]. A `u32` so that [`Lease::idle`] fits in the word.
    endpoint: u32,
    /// How long, in milliseconds, the connection may idle once this response ends, when the
    /// backend's `Keep-Alive` said less than `upstream.idle_timeout` ([`ResponseBody::keep_alive`]).
    idle: Option<NonZeroU32>,
    link: Link,
}

/// A [`Lease`]'s endpoint index once its connection is not to be kept after the response
/// ([`ResponseBody::not_reused`]): no endpoint has it, so `put_idle` drops the connection. An index
/// rather than a flag of its own: a flag would grow every response body by a word.
const NOT_REUSED: u32 = u32::MAX;

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
        via: Arc<crate::via::Lazy>,
    ) -> Upstream {
        let authorities = endpoints.iter().map(authority).collect();
        let h2c =
            (protocol == UpstreamProtocol::H2c).then(|| h2c::H2cConnections::new(endpoints.len()));
        let idle = IdleStacks {
            stacks: endpoints.iter().map(|_| Mutex::default()).collect(),
            max_idle: config.max_idle_per_endpoint,
            reaping: AtomicBool::new(false),
        };
        let tunnels = stats.tunnels().endpoints(&endpoints);
        Upstream {
            route,
            slot,
            endpoints,
            authorities,
            h2c,
            idle,
            stats,
            tunnels,
            health,
            connect_timeout: config.connect_timeout,
            idle_timeout: config.idle_timeout,
            protocol,
            budget: RetryBudget::new(&config.retry_budget),
            via,
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

    /// Endpoint `index`'s entry in the backend's open tunnels, if there is such an endpoint.
    pub(crate) fn tunnels(&self, index: usize) -> Option<&Arc<EndpointTunnels>> {
        self.tunnels.get(index)
    }

    /// The health of this backend's endpoints.
    pub fn health(&self) -> &Arc<BackendHealth> {
        &self.health
    }

    /// The backend's retry budget.
    pub fn budget(&self) -> &RetryBudget {
        &self.budget
    }

    /// Endpoint `index`'s `ip:port` as a URI authority (prebuilt), if there is such an endpoint.
    pub fn authority(&self, index: usize) -> Option<&Authority> {
        self.authorities.get(index)
    }

    /// The request-target of `path` on endpoint `index` (clamped into range), no string
    /// formatting: for HTTP/1.1 the origin form (RFC 9112 §3.2.1: the path and query; `Host`
    /// carries the authority), as nginx and HAProxy send it; for h2c the absolute form to the
    /// endpoint, whose authority `h2c` replaces with the client's host (prebuilt, no formatting).
    pub fn uri(&self, index: usize, path: Option<PathAndQuery>) -> Uri {
        let path = path.unwrap_or_else(|| PathAndQuery::from_static("/"));
        if self.h2c.is_none() {
            return Uri::from(path);
        }
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = self.authorities.get(index).cloned();
        parts.path_and_query = Some(path);
        // Scheme, authority and path all come from valid parts.
        Uri::from_parts(parts).unwrap_or_default()
    }

    /// Sends `request` (target from [`Upstream::uri`], [`Upstream::version`]) to endpoint `index` and waits for the
    /// response head: HTTP/1.1 over an idle connection to the endpoint or a new one (see the module
    /// docs), h2c as a stream on the endpoint's HTTP/2 connection (`h2c`).
    ///
    /// Not an `async fn`: every request's future holds this one, and an `async` body would keep the
    /// request once as its argument and once more inside the future it awaits. The future is
    /// [`Sending`], one hand-written state machine rather than a nest of combinators, so that the
    /// response is moved once on its way out (docs/bench-2026-12-01b-instructions.md). An HTTP/1.1
    /// request taking an idle connection is handed to it when this is called; `now`, when the
    /// attempt started (the caller's clock read, reused), is what the idle connections'
    /// `idle_timeout` is judged against.
    ///
    /// The future keeps the request's response timer ([`Deadlined`]): on an idle connection, the
    /// connection's own ([`poll_deadline`]).
    ///
    /// # Errors
    /// The failure's [`ErrorKind`] and the library error.
    pub(crate) fn send(
        self: &Arc<Self>,
        index: usize,
        mut request: Request<UpstreamBody>,
        now: Instant,
        informational: Option<InformationalSender>,
    ) -> impl Deadlined<Output = Result<Response<ResponseBody>, SendError>> + Send + '_ {
        if let Some(h2c) = &self.h2c {
            if let Some(to) = informational {
                let via = self.via.get().map(|via| via.value(Version::HTTP_2).clone());
                crate::interim::on_h2c_request(&mut request, to, via);
            }
            // Boxed: the h2c exchange's future (its replay state) is larger than the HTTP/1.1 one,
            // and every request's future would otherwise carry room for both.
            return Sending::boxed(async move {
                let sent = h2c.send(self, index, request).await;
                sent.map(|(r, open)| r.map(|body| ResponseBody::h2c(body, open)))
            });
        }
        let request = framed(request);
        let mut informational = informational;
        match self.take_idle(index, now, &mut informational) {
            Some(link) => Sending::Idle {
                exchange: exchange(link, request),
                upstream: self,
                index,
            },
            // Connecting is rare on a warm pool: boxed, out of the common path's future.
            None => Sending::boxed(self.send_fresh(index, request, informational)),
        }
    }

    /// `request` over a new connection to endpoint `index`.
    async fn send_fresh(
        self: &Arc<Self>,
        index: usize,
        request: Request<UpstreamBody>,
        informational: Option<InformationalSender>,
    ) -> Result<Response<ResponseBody>, SendError> {
        let link = self.connect(index).await?;
        link.relay.point(informational);
        match exchange(link, request).await {
            (Ok(response), link) => Ok(self.lease(response, index, link)),
            (Err(e), _) => Err(send_error(e.into_error(), false)),
        }
    }

    /// `response` (from endpoint `index`) with `link`, its connection, which goes back to the idle
    /// stack when the body ends.
    fn lease(
        self: &Arc<Self>,
        response: Response<Incoming>,
        index: usize,
        link: Link,
    ) -> Response<ResponseBody> {
        response.map(|body| ResponseBody {
            body,
            lease: Some(Lease {
                upstream: Arc::clone(self),
                endpoint: u32::try_from(index).unwrap_or(NOT_REUSED),
                idle: None,
                link,
            }),
            stream: None,
        })
    }

    /// The most recently used idle connection to endpoint `index` that is open, ready for a
    /// request and idle for less than `idle_timeout` at `now`; unusable ones met on the way are
    /// closed. Each is driven once first, so that one the backend closed meanwhile is seen closed
    /// (no request is written onto it). One not ready yet (its previous exchange still finishing,
    /// such as an upload the backend answered early) goes to the bottom rather than being waited
    /// for.
    fn take_idle(
        &self,
        index: usize,
        now: Instant,
        informational: &mut Option<InformationalSender>,
    ) -> Option<Link> {
        let mut stack = lock(self.idle.stacks.get(index)?);
        if stack.is_empty() {
            return None;
        }
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..stack.len() {
            let mut idle = stack.pop_back()?;
            if now >= idle.until {
                continue;
            }
            if !idle.link.drive(&mut cx) {
                continue;
            }
            match idle.link.sender.poll_ready(&mut cx) {
                Poll::Ready(Ok(())) => {
                    // Its 1xx responses go to the client of the request it is taken for.
                    idle.link.relay.point(informational.take());
                    idle.link.spend();
                    return Some(idle.link);
                }
                Poll::Ready(Err(_)) => {}
                Poll::Pending => stack.push_front(idle),
            }
        }
        None
    }

    /// Puts `link` (to endpoint `index`; its last response ended) back on the endpoint's idle
    /// stack for `idle_timeout`, or for `idle` milliseconds (shorter, the backend's `Keep-Alive`
    /// said so), unless it is closing, the backend takes no more requests on it, or the stack is
    /// full; drops the connections at the bottom that idled past their time meanwhile.
    fn put_idle(self: &Arc<Self>, index: u32, link: Link, idle: Option<NonZeroU32>) {
        let Some(stack) = self.idle.stacks.get(index as usize) else {
            return;
        };
        if link.ended()
            || link.sender.is_closed()
            || link.left == Some(0)
            || self.idle.max_idle == 0
        {
            return;
        }
        let now = Instant::now();
        let until = match idle {
            None => now + self.idle_timeout,
            Some(millis) => now + Duration::from_millis(u64::from(millis.get())),
        };
        let mut stack = lock(stack);
        while stack.front().is_some_and(|idle| now >= idle.until) {
            stack.pop_front();
        }
        if stack.len() >= self.idle.max_idle {
            return;
        }
        stack.push_back(Idle { link, until });
        drop(stack);
        if !self.idle.reaping.load(Relaxed) && !self.idle.reaping.swap(true, Relaxed) {
            self.start_reaper();
        }
    }

    /// Closes idle connections past `idle_timeout` (or closed by the backend) every quarter of
    /// the timeout, so they close even when no request comes to take them; ends with the pool.
    fn start_reaper(self: &Arc<Self>) {
        // A body dropped outside any runtime (a runtime being torn down) starts none; the next
        // connection put back tries again.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.idle.reaping.store(false, Relaxed);
            return;
        };
        let pool = Arc::downgrade(self);
        let period = (self.idle_timeout / 4).max(Duration::from_millis(10));
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(upstream) = pool.upgrade() else {
                    return;
                };
                upstream.reap();
            }
        });
    }

    fn reap(&self) {
        let now = Instant::now();
        for stack in &self.idle.stacks {
            lock(stack).retain(|idle| now < idle.until && !idle.link.ended());
        }
    }

    /// A new HTTP/1.1 connection to endpoint `index` (driven by the requests that use it).
    async fn connect(&self, index: usize) -> Result<Link, SendError> {
        let stream = self.dial(index).await?;
        Link::handshake(stream, Arc::clone(&self.via)).await
    }

    /// A TCP connection (`TCP_NODELAY`) to endpoint `index` within the connect timeout.
    async fn dial(&self, index: usize) -> Result<TcpStream, SendError> {
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

// === impl Link ===

impl Link {
    /// An HTTP/1.1 connection over `stream`, whose forwarded 1xx responses get `via`'s entry.
    async fn handshake(stream: TcpStream, via: Arc<crate::via::Lazy>) -> Result<Link, SendError> {
        let io = TokioIo::new(EarlyResponseIo::new(stream));
        let relay = Arc::new(Relay::new(via));
        let forwards = Arc::clone(&relay);
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .on_informational(move |response| {
                forwards.forward(response.status(), response.headers());
            })
            .handshake(io)
            .await
            .map_err(|e| send_error(e, true))?;
        Ok(Link {
            sender,
            relay,
            connection: Some(Box::pin(connection)),
            timer: None,
            left: None,
        })
    }

    /// Lets the connection make what progress it can (read, write), without waiting; false once
    /// it has ended, when it is dropped (which hands back a request queued on it unwritten).
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(connection) = self.connection.as_mut() {
            if connection.as_mut().poll(cx).is_ready() {
                self.connection = None;
            }
        }
        self.connection.is_some()
    }

    /// The connection future has completed (closed, or failed).
    fn ended(&self) -> bool {
        self.connection.is_none()
    }

    /// Counts a request taken onto the connection against what the backend said it takes
    /// ([`Link::left`]); one compare for a connection it said nothing of.
    #[inline]
    fn spend(&mut self) {
        if let Some(left) = self.left.as_mut() {
            *left = left.saturating_sub(1);
        }
    }
}

pin_project_lite::pin_project! {
    /// One request on an HTTP/1.1 [`Link`]: waits for the response head, driving the connection
    /// meanwhile (it writes the request, reads the head, or sees the connection end, which
    /// answers the request with an error). Resolves to the outcome and the link.
    struct Exchange<F> {
        #[pin]
        response: F,
        // `None` once resolved.
        link: Option<Link>,
    }
}

/// What an [`Exchange`] resolves to: the response head, or hyper's error (boxed: it may hold the
/// whole request, and this value is moved through every layer above on the common path).
type Exchanged = Result<Response<Incoming>, Box<TrySendError>>;

/// Hands `request` to `link`'s connection (hyper queues it; the connection writes it when driven)
/// and returns the exchange that waits for the response head.
/// `request` for an HTTP/1.1 upstream, with `Transfer-Encoding: chunked` when it is a `GET` or
/// `HEAD` whose body has no known length: hyper's client sends no body at all for those methods
/// unless a framing header asks for one, so a body the client did send (HTTP/2 without
/// `content-length`, HTTP/1.1 chunked: Elasticsearch's `GET _search` is one) was dropped without
/// a word, the backend answering a request that was not the client's. A body of known length gets
/// its `content-length` from hyper as for any method. Costs a method comparison per request.
#[inline]
fn framed(mut request: Request<UpstreamBody>) -> Request<UpstreamBody> {
    let maybe_dropped = matches!(*request.method(), http::Method::GET | http::Method::HEAD)
        && !request.body().is_end_stream()
        && request.body().size_hint().exact().is_none()
        && !request.headers().contains_key(http::header::CONTENT_LENGTH);
    if maybe_dropped {
        request.headers_mut().insert(
            http::header::TRANSFER_ENCODING,
            http::HeaderValue::from_static("chunked"),
        );
    }
    request
}

fn exchange(
    mut link: Link,
    request: Request<UpstreamBody>,
) -> Exchange<impl Future<Output = Result<Response<Incoming>, TrySendError>> + Send> {
    Exchange {
        response: link.sender.try_send_request(request),
        link: Some(link),
    }
}

/// hyper's error for a request it did not get a response to, with the request when it was not sent.
type TrySendError = hyper::client::conn::TrySendError<Request<UpstreamBody>>;

impl<F> Future for Exchange<F>
where
    F: Future<Output = Result<Response<Incoming>, TrySendError>>,
{
    type Output = (Exchanged, Link);

    // Inlined into [`Sending`]'s poll: its outcome is not moved once more on the common path.
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(link) = this.link.as_mut() else {
            // Polled again after it resolved: nothing more will come.
            return Poll::Pending;
        };
        let result = match this.response.as_mut().poll(cx) {
            Poll::Ready(result) => result,
            Poll::Pending => {
                link.drive(cx);
                match this.response.poll(cx) {
                    Poll::Ready(result) => result,
                    Poll::Pending => return Poll::Pending,
                }
            }
        };
        match this.link.take() {
            Some(link) => Poll::Ready((result.map_err(Box::new), link)),
            None => Poll::Pending,
        }
    }
}

impl<F> Exchange<F> {
    /// [`poll_deadline`] with the link's timer; never ready once the exchange resolved.
    fn poll_deadline(self: Pin<&mut Self>, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        match self.project().link.as_mut() {
            Some(link) => poll_deadline(&mut link.timer, deadline, cx),
            None => Poll::Pending,
        }
    }
}

/// Polls a response `timer` for a request's `deadline`: ready once the deadline has passed (the
/// task is woken then).
///
/// The timer is made at the first call and kept (by an upstream connection, [`Link`], for every
/// request it carries): a timer of each request's own was registered in tokio's timer wheel at
/// its first poll and taken out when the request ended, each under the driver's lock, ~500
/// instructions per request (docs/bench-2026-12-02-instructions.md). A kept timer due no later
/// than `deadline` is left as it is: the requests on one connection are one route's, with one
/// timeout, so each deadline is later than the last one's, and a poll only registers the waker.
/// When the timer fires before `deadline`, it is moved there (one re-registration per timeout
/// per busy connection). A `deadline` earlier than the timer (a shorter timeout after a reload)
/// moves it at once.
///
/// A kept timer still fires at the last deadline it was set to, and then wakes the task that
/// polled it last: once per idle connection per timeout, and never on the request path.
fn poll_deadline(
    timer: &mut Option<Pin<Box<Sleep>>>,
    deadline: Instant,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let timer = match timer {
        Some(timer) => {
            if timer.deadline() > deadline {
                timer.as_mut().reset(deadline);
            }
            timer
        }
        None => timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
    };
    while timer.as_mut().poll(cx).is_ready() {
        if timer.deadline() >= deadline {
            return Poll::Ready(());
        }
        // Fired at an earlier request's deadline: on to this one's.
        timer.as_mut().reset(deadline);
    }
    Poll::Pending
}

/// An exchange that keeps the response timer of its request ([`Upstream::send`]'s future).
pub(crate) trait Deadlined: Future {
    /// Ready once `deadline` has passed: the exchange may still be polled, but the caller gives
    /// up on it. Registers the task's waker for `deadline` otherwise. Call it with the same
    /// `deadline` each time.
    fn poll_deadline(self: Pin<&mut Self>, deadline: Instant, cx: &mut Context<'_>) -> Poll<()>;
}

/// What an exchange with one endpoint resolves to: the response head with its body, or why it failed.
type Sent = Result<Response<ResponseBody>, SendError>;

pin_project_lite::pin_project! {
    /// [`Upstream::send`]'s future, one state machine: on an idle HTTP/1.1 connection the
    /// [`Exchange`] until the response head, then the connection leased to the response body; a
    /// request the idle connection handed back unsent (the backend closed it as it idled) goes on
    /// over a fresh connection. Connecting and h2c are boxed, out of the common path's state.
    #[project = SendingProj]
    enum Sending<'a, F> {
        Idle {
            #[pin]
            exchange: Exchange<F>,
            upstream: &'a Arc<Upstream>,
            index: usize,
        },
        Boxed {
            future: Pin<Box<dyn Future<Output = Sent> + Send + 'a>>,
            // The response timer, made at the first `poll_deadline`.
            timer: Option<Pin<Box<Sleep>>>,
        },
    }
}

impl<'a, F> Sending<'a, F> {
    fn boxed(future: impl Future<Output = Sent> + Send + 'a) -> Self {
        Sending::Boxed {
            future: Box::pin(future),
            timer: None,
        }
    }
}

impl<F> Deadlined for Sending<'_, F>
where
    F: Future<Output = Result<Response<Incoming>, TrySendError>>,
{
    fn poll_deadline(self: Pin<&mut Self>, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        match self.project() {
            SendingProj::Idle { exchange, .. } => exchange.poll_deadline(deadline, cx),
            SendingProj::Boxed { timer, .. } => poll_deadline(timer, deadline, cx),
        }
    }
}

impl<F> Future for Sending<'_, F>
where
    F: Future<Output = Result<Response<Incoming>, TrySendError>>,
{
    type Output = Sent;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Sent> {
        let (result, link, upstream, index) = match self.as_mut().project() {
            SendingProj::Boxed { future, .. } => return future.as_mut().poll(cx),
            SendingProj::Idle {
                exchange,
                upstream,
                index,
            } => {
                let (result, link) = std::task::ready!(exchange.poll(cx));
                (result, link, *upstream, *index)
            }
        };
        match result {
            Ok(response) => Poll::Ready(Ok(upstream.lease(response, index, link))),
            // The idle connection closed before the request went out (the backend closed it as it
            // idled): nothing was written, so a fresh connection takes the request.
            Err(mut e) => match e.take_message() {
                // Its 1xx responses, if any, are not forwarded: the client's sender stays with the
                // closed connection's relay (taking it would cost every request a copy of the
                // link; a 1xx is advice, and this is rare).
                Some(request) => {
                    self.set(Sending::boxed(upstream.send_fresh(index, request, None)));
                    self.poll(cx)
                }
                None => Poll::Ready(Err(send_error(e.into_error(), false))),
            },
        }
    }
}

// === impl ResponseBody ===

impl ResponseBody {
    /// A body that carries no connection back (h2c, an upgrade request's own connection).
    pub fn unpooled(body: Incoming) -> ResponseBody {
        ResponseBody {
            body,
            lease: None,
            stream: None,
        }
    }

    /// An h2c response, whose stream counts as open on its connection until the body ends.
    fn h2c(body: Incoming, stream: h2c::OpenStream) -> ResponseBody {
        ResponseBody {
            body,
            lease: None,
            stream: Some(stream),
        }
    }

    /// The connection this response comes on is closed when the body ends instead of going back
    /// to the idle stack: the backend answered before the proxy had sent the whole request body,
    /// and such a backend often closes the connection (hyper-based servers do unless the rest
    /// arrives at once); reused, the next request would meet that close and fail as a reset.
    /// nginx keeps no upstream connection whose request body was not sent either. Closing it also
    /// lets go of the rest of the client's body (the client was told `Connection: close`).
    /// Nothing to do for h2c, whose streams end on their own.
    pub(crate) fn not_reused(&mut self) {
        if let Some(lease) = self.lease.as_mut() {
            lease.endpoint = NOT_REUSED;
        }
    }

    /// Applies the backend's `Keep-Alive` line `value` (read from this response's head by the
    /// hop-by-hop strip, only when there is one) to the connection the response comes on: it is
    /// taken again only within the backend's idle timeout less a margin, for at most its `max`
    /// more requests, or not kept at all (see `keep_alive`). Nothing to do for h2c, which has no
    /// such header (RFC 9113 §8.2.2).
    pub(crate) fn keep_alive(&mut self, value: &http::HeaderValue) {
        let Some(lease) = self.lease.as_mut() else {
            return;
        };
        let hint = keep_alive::hint(value, lease.upstream.idle_timeout);
        if hint.max.is_some() {
            lease.link.left = hint.max;
        }
        match hint.reuse {
            keep_alive::Reuse::AsConfigured => {}
            keep_alive::Reuse::Within(millis) => lease.idle = Some(millis),
            keep_alive::Reuse::Never => {
                tracing::debug!(
                    ?value,
                    "upstream keep-alive too short to reuse the connection"
                );
                lease.endpoint = NOT_REUSED;
            }
        }
    }

    /// The body ended: its connection goes back to the idle stack (an h2c stream: counted closed).
    fn release(&mut self) {
        self.stream = None;
        if let Some(lease) = self.lease.take() {
            lease
                .upstream
                .put_idle(lease.endpoint, lease.link, lease.idle);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    #[inline]
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let mut polled = Pin::new(&mut this.body).poll_frame(cx);
        if let (Poll::Pending, Some(lease)) = (&polled, this.lease.as_mut()) {
            // The connection reads the body into it: drive it, then look again.
            lease.link.drive(cx);
            polled = Pin::new(&mut this.body).poll_frame(cx);
        }
        match &polled {
            Poll::Ready(None) => self.release(),
            // A sized body is done with its last byte (the server may not poll again).
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.release(),
            Poll::Ready(Some(Err(_))) => self.lease = None,
            _ => {}
        }
        polled
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for ResponseBody {
    /// An empty body (a `HEAD` answer, `204`, `304`) is never polled: it ended all the same, and
    /// its connection goes back; any other body dropped before its end closes its connection.
    fn drop(&mut self) {
        if self.body.is_end_stream() {
            self.release();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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
fn send_error(error: hyper::Error, connect: bool) -> SendError {
    SendError {
        kind: classify_chain(&error, connect),
        downstream_aborted: aborted_chain(&error),
        downstream_malformed: malformed_chain(&error),
        source: Box::new(error),
    }
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

/// True when the exchange failed because the **client's** request body failed (the client went away
/// mid-upload): hyper reports a user body error whose cause is the downstream connection's own error.
/// That is no fault of the backend and must not count against it (an untrusted client could otherwise
/// push a preview's error rate over its limit and force a rollback). With `malformed_chain`, the
/// client's body failed because hyper could not decode its framing (an invalid chunk size or chunk
/// extension, RFC 9112 §7.1: hyper's decoder reports `InvalidData` or `InvalidInput`), not because
/// the client went away (`UnexpectedEof`, a reset).
fn aborted_chain(error: &(dyn StdError + 'static)) -> bool {
    let mut hyper_errors = sources(error).filter_map(|e| e.downcast_ref::<hyper::Error>());
    matches!(hyper_errors.next(), Some(e) if e.is_user()) && hyper_errors.next().is_some()
}

fn sources<'a>(
    error: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(error), |&e| e.source())
}

#[cfg(test)]
mod tests;
