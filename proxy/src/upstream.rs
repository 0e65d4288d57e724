//! Upstream pools: one pooled keep-alive HTTP/1.1 client per backend, its endpoints' authorities,
//! and the classification of upstream failures into [`ErrorKind`].
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

use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, Response};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::UpstreamConfig;
use crate::error::ErrorKind;
use crate::expect::ExpectBody;
use crate::health::{BackendHealth, HasHealth};
use crate::stats::BackendStats;
use crate::weight::Slot;

/// The body sent upstream: the client's streaming body (held back while an `Expect: 100-continue`
/// is pending, see `expect`), or nothing (for bodiless and retried requests).
pub type UpstreamBody = Either<ExpectBody, Empty<Bytes>>;

type HttpClient = Client<HttpConnector, UpstreamBody>;

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
}

// === impl Upstream ===

impl Upstream {
    /// A fresh pool for `endpoints` of (`route`, `slot`), counting into `stats`.
    pub fn new(
        route: Arc<str>,
        slot: Slot,
        endpoints: Arc<[SocketAddr]>,
        config: &UpstreamConfig,
        stats: Arc<BackendStats>,
        health: Arc<BackendHealth>,
    ) -> Upstream {
        let authorities = endpoints.iter().map(authority).collect();
        Upstream {
            route,
            slot,
            endpoints,
            authorities,
            client: client(config),
            stats,
            health,
        }
    }

    /// Whether this pool serves exactly `endpoints` for (`route`, `slot`), so a new table can reuse
    /// it.
    pub fn serves(&self, route: &str, slot: Slot, endpoints: &[SocketAddr]) -> bool {
        &*self.route == route && self.slot == slot && &*self.endpoints == endpoints
    }

    /// The stats this backend counts into.
    pub fn stats(&self) -> &Arc<BackendStats> {
        &self.stats
    }

    /// The health of this backend's endpoints.
    pub fn health(&self) -> &BackendHealth {
        &self.health
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

    /// Sends `request` (absolute URI, HTTP/1.1) over the pool and waits for the response head.
    ///
    /// # Errors
    /// The failure's [`ErrorKind`] and the library error.
    pub async fn send(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, (ErrorKind, hyper_util::client::legacy::Error)> {
        self.client
            .request(request)
            .await
            .map_err(|e| (classify(&e), e))
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

/// The backend's client: HTTP/1.1 only, `TCP_NODELAY`, connect timeout, an idle timeout below
/// backends' keep-alive timeouts (C17) and an unbounded idle pool, since an idle cap below the
/// concurrency makes the pool churn connections (−41 % throughput in shared/reference/perf).
fn client(config: &UpstreamConfig) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(config.connect_timeout));
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(config.idle_timeout)
        .pool_max_idle_per_host(usize::MAX)
        .build(connector)
}

/// Maps a client error onto the closed [`ErrorKind`] set by walking its source chain.
pub fn classify(error: &hyper_util::client::legacy::Error) -> ErrorKind {
    let io_kind = sources(error).find_map(|e| e.downcast_ref::<io::Error>().map(io::Error::kind));
    if error.is_connect() {
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

/// True when the exchange failed because the **client's** request body failed (the client went away
/// mid-upload): hyper reports a user body error whose cause is the downstream connection's own error.
/// That is no fault of the backend and must not count against it (an untrusted client could otherwise
/// push a preview's error rate over its limit and force a rollback).
pub fn downstream_aborted(error: &hyper_util::client::legacy::Error) -> bool {
    let mut hyper_errors = sources(error).filter_map(|e| e.downcast_ref::<hyper::Error>());
    matches!(hyper_errors.next(), Some(e) if e.is_user()) && hyper_errors.next().is_some()
}

fn sources<'a>(
    error: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(error), |&e| e.source())
}
