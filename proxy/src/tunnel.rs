//! HTTP/1.1 Upgrade tunnels (RFC 9110 §7.8): WebSocket (RFC 6455) and any other protocol a client
//! switches to.
//!
//! An upgrade request is routed like any request (weights, sticky key, tester override, health) at
//! the moment of the upgrade. It goes over a **dedicated** upstream connection, never the pool,
//! with its `Upgrade` and `Connection: upgrade` headers kept. On `101 Switching Protocols` both
//! connections are handed over by hyper (`hyper::upgrade::on`) and [`splice`] copies bytes both
//! ways until either side closes; any other answer (426, 200, ...) is passed through as an ordinary
//! response. A request with content is no upgrade (`forward` serves it as an ordinary one).
//!
//! Every open tunnel counts in its backend's [`Tunnels`] (the `crossfade_upgraded_connections`
//! gauge), by endpoint, which outlives table swaps like the rest of the backend's stats. When a
//! retired backend's drain deadline passes, [`Tunnels::close_all`] asks each of its tunnels to
//! close; when a table swap removed an endpoint (or its route), the tunnels to that endpoint get
//! `drain_timeout` to end on their own and are then closed the same way
//! ([`Tunnels::close_endpoints`], see `crate::drain`). A closed WebSocket gets a close frame 1001
//! "going away" on both sides, at a frame boundary (`frame`), then a graceful TCP shutdown; any
//! other tunnel gets the graceful shutdown alone.
//!
//! Over HTTP/2 a client asks for a WebSocket with an extended CONNECT (RFC 8441: `:method CONNECT`,
//! `:protocol websocket`; the proxy's HTTP/2 listener advertises `SETTINGS_ENABLE_CONNECT_PROTOCOL`,
//! §3). Backends speak WebSocket over HTTP/1.1, so the proxy sends the backend the RFC 6455
//! handshake (`GET`, `Upgrade: websocket`, a `Sec-WebSocket-Key` of its own, and the client's
//! `Sec-WebSocket-Version`, `-Protocol`, `-Extensions` and `Origin`), checks the backend's
//! `Sec-WebSocket-Accept` (§4.1), and answers the client's stream `200` (RFC 8441 §5); the stream's
//! DATA frames then carry the same WebSocket frames as the backend's TCP connection, and everything
//! below (counting, drain, the 1001 close) is the same. A backend that answers a 2xx other than
//! 101 did not switch: the client gets 502, since a 2xx to a CONNECT would open its stream as a
//! tunnel to nothing. Any other extended CONNECT `:protocol` is answered 400, as plain CONNECT is.
//!
//! # Layout
//! - this file: detecting an upgrade request, the upstream exchange.
//! - `registry`: the open tunnels by backend and endpoint, and their close signals.
//! - `splice`: copying bytes both ways, and the close at the drain deadline.
//! - [`frame`]: WebSocket frame boundaries and the close frame (RFC 6455 §5.2, §5.5.1).

use std::sync::Arc;

use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::error::{BoxError, Error, ErrorKind};
use crate::forward::{connect_retry_target, finish, prepare, TableBackend, TableRoute};
use crate::headers::{set_upgrade, strip_hop_by_hop, Direction};
use crate::health;
use crate::limits::{RequestPlace, ShedReason};
use crate::server::Conn;
use crate::stats::InFlight;
use crate::upstream::ResponseBody;

pub mod frame;
mod idle;
mod registry;
mod splice;

pub use registry::Tunnels;
pub(crate) use registry::{EndpointTunnels, Open};
pub use splice::CLOSE_WAIT;

/// What a client asked to switch to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// `Upgrade: websocket` (RFC 6455 §4.1): the proxy follows its frames to close it cleanly.
    WebSocket,
    /// Any other protocol: bytes are copied blindly.
    Other,
}

/// How a client asked for its tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Handshake {
    /// HTTP/1.1 `Upgrade` (RFC 9110 §7.8): the request goes upstream as it came, and the backend's
    /// 101 back to the client.
    Upgrade,
    /// HTTP/2 extended CONNECT for a WebSocket (RFC 8441 §4, §5): sent upstream as an HTTP/1.1
    /// WebSocket handshake whose `Sec-WebSocket-Key` the proxy makes ([`websocket_handshake`]),
    /// and the backend's 101 answered `200`.
    ExtendedConnect,
}

/// The protocol an HTTP/1.1 request asks to switch to: `Connection` lists `upgrade` and `Upgrade`
/// names one or more protocols (RFC 9110 §7.8). HTTP/1.0 and HTTP/2 requests never upgrade here
/// (§7.8 is HTTP/1.1 only; an `Upgrade` on them is stripped as a hop-by-hop header); an HTTP/2
/// client asks for a WebSocket with an extended CONNECT instead ([`extended_websocket`]).
///
/// `h2c` is never tunnelled ([`tunnelled`]): the upgrade to cleartext HTTP/2 (RFC 7540 §3.2,
/// deprecated by RFC 9113 §3.1; `curl --http2 http://...` still offers it) is between the client
/// and the proxy, which serves HTTP/2 only with prior knowledge and so ignores the offer (RFC 9110
/// §7.8: a server may), as Envoy does. The request is an ordinary one, its `Upgrade` and the
/// `HTTP2-Settings` its `Connection` names stripped as hop-by-hop headers. Passed on, it went to
/// the backend over a dedicated HTTP/1.1 connection: an `h2c`-only backend (gRPC) could not read
/// it (502, counted against its endpoint), and one that accepts it turned the client's connection
/// into a tunnel to one endpoint that no weight change, abort or promotion reached (C12, C15).
pub(crate) fn requested(parts: &Parts) -> Option<(Protocol, Handshake)> {
    if extended_websocket(parts) {
        return Some((Protocol::WebSocket, Handshake::ExtendedConnect));
    }
    if parts.version != Version::HTTP_11 {
        return None;
    }
    // `Upgrade` first: most requests have none, and then this is one lookup.
    let headers = parts.headers.get_all(UPGRADE).iter();
    let mut protocols = headers.flat_map(tokens).filter(|p| tunnelled(p));
    let first = protocols.next()?;
    let connection_upgrade = parts
        .headers
        .get_all(CONNECTION)
        .iter()
        .any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case("upgrade")));
    if !connection_upgrade {
        return None;
    }
    let websocket = |p: &str| p.eq_ignore_ascii_case("websocket");
    let protocol = match websocket(first) || protocols.any(websocket) {
        true => Protocol::WebSocket,
        false => Protocol::Other,
    };
    Some((protocol, Handshake::Upgrade))
}

/// Whether `parts` is an HTTP/2 extended CONNECT for a WebSocket (RFC 8441 §4: `:method CONNECT`
/// with `:protocol websocket`; hyper gives the `:protocol` as the [`hyper::ext::Protocol`]
/// extension, and only on a connection that advertised `SETTINGS_ENABLE_CONNECT_PROTOCOL`).
/// Upgrade tokens compare case-insensitively (RFC 9110 §7.8).
pub(crate) fn extended_websocket(parts: &Parts) -> bool {
    parts.method == http::Method::CONNECT
        && parts.version == Version::HTTP_2
        && parts
            .extensions
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// Whether an upgrade to `protocol` (an `Upgrade` token) is tunnelled: any but `h2c`.
fn tunnelled(protocol: &str) -> bool {
    !protocol.eq_ignore_ascii_case("h2c")
}

/// The `Upgrade` field the backend gets: the client's protocols that are tunnelled.
fn offered(headers: &http::HeaderMap) -> Vec<HeaderValue> {
    let protocols = headers.get_all(UPGRADE).iter().flat_map(tokens);
    let kept: Vec<&str> = protocols.filter(|p| tunnelled(p)).collect();
    HeaderValue::from_str(&kept.join(", "))
        .ok()
        .into_iter()
        .collect()
}

fn tokens(value: &HeaderValue) -> impl Iterator<Item = &str> {
    value
        .to_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The client side of an upgrade request: its pending connection upgrade and the protocol.
pub(crate) struct Upgrade {
    pub(crate) client: OnUpgrade,
    pub(crate) protocol: Protocol,
    /// How the client asked.
    pub(crate) handshake: Handshake,
    /// Whether the tester override forced the backend: a retry stays on it.
    pub(crate) forced: bool,
    /// Whether the request is sent failing open (see `health::fail_open`): its endpoints are
    /// picked among those health holds out too, for a retry as well.
    pub(crate) fail_open: bool,
}

/// Forwards an upgrade request (RFC 9110 §7.8) to the backend picked for it, over a dedicated
/// connection ([`exchange`]); the answer (101 and its tunnel, or any other response) is
/// counted like any response.
///
/// A connect that fails (nothing of the request written) is tried once more where an ordinary
/// request's would be (`forward::connect_retry_target`: the other backend when it may take it,
/// else another endpoint; the retry budget pays for it), so that a client upgrading while a dead
/// preview is not yet ejected is not answered 502 (case C13). Any later failure is never
/// retried: it answers 502/504 and the client upgrades again, to whichever backend the weights
/// then pick.
///
/// Once the endpoint is picked, the request's access log line `log` names it, with the attempt
/// ([`crate::access::Pending::dispatched`]), as an ordinary request's does: so does a 499 when
/// the client goes away before the answer, which is also counted as a client abort ([`Awaiting`]).
pub(crate) async fn forward(
    conn: &Arc<Conn>,
    route: &TableRoute,
    backend: &TableBackend,
    (mut parts, body): (Parts, Incoming),
    upgrade: Upgrade,
    set_cookie: Option<HeaderValue>,
    log: &mut crate::access::Pending,
) -> Result<Response<ProxyBody>, Error> {
    let (protocols, extended) = match upgrade.handshake {
        Handshake::Upgrade => (offered(&parts.headers), None),
        Handshake::ExtendedConnect => {
            // One HTTP/2 connection carries many streams: each WebSocket on it holds a place
            // under `limits.max_requests` for its whole life (an HTTP/1.1 tunnel has a connection
            // of its own, under `max_connections`), so that a few connections cannot open an
            // upstream connection per stream without bound.
            let limits = &conn.shared.limits;
            let Some(place) = limits.request() else {
                limits.count(ShedReason::Requests);
                return Err(Error::Overloaded(ShedReason::Requests));
            };
            let key = websocket_handshake(&mut parts);
            let protocols = vec![HeaderValue::from_static("websocket")];
            (protocols, Some(Extended { key, place }))
        }
    };
    let names = crate::headers::RequestNames::scan(&parts.headers);
    let path = prepare(conn, &mut parts, names)?;
    set_upgrade(&mut parts.headers, protocols);
    // Case C19, as `forward::dispatch` does: RFC 9110 §10.1.4 asks a sender of `TE` to name it
    // in `Connection`. The tunnel's hop is always HTTP/1.1 (`exchange`), so `te` goes on a line
    // of its own beside `Connection: upgrade` (session 41; until then the upgrade's head had
    // `TE: trailers` without it). Only requests whose scan saw `TE` look it up.
    if names.te() {
        crate::headers::name_te_in_connection(&mut parts.headers);
    }
    // For the warning a failure gets (`access::warn`); an upgrade is rare, the copy cheap.
    let line = (parts.method.clone(), path.clone());
    backend.upstream().budget().deposit();
    let fail_open = upgrade.fail_open;
    let mut attempt = Attempt::start(conn, (route, backend), (None, fail_open), 1, log)?;
    let stream = match attempt.connect().await {
        Ok(stream) => stream,
        Err((kind, source)) => {
            let target = kind
                .is_connect()
                .then(|| connect_retry_target(route, backend, upgrade.forced))
                .flatten()
                .filter(|_| withdraw(backend));
            let Some(target) = target else {
                return Err(attempt.failed((kind, source), &line));
            };
            let avoid = Some(attempt.index).filter(|_| std::ptr::eq(target, backend));
            attempt.retried(kind, &line.0);
            attempt = Attempt::start(conn, (route, target), (avoid, fail_open), 2, log)?;
            match attempt.connect().await {
                Ok(stream) => stream,
                Err(failure) => return Err(attempt.failed(failure, &line)),
            }
        }
    };
    let (client, protocol) = (upgrade.client, upgrade.protocol);
    // The route's own response timeout, as an ordinary request's (`RouteConfig::response_timeout`).
    let timeout = route.response_timeout();
    let timeout = timeout.unwrap_or(conn.shared.upstream.response_timeout);
    let answered = exchange(stream, parts, path, body, timeout).await;
    let key = extended.as_ref().map(|e| &e.key);
    match answered.and_then(|response| switched(response, key)) {
        Ok(response) => Ok(attempt.answered(response, client, (protocol, extended), set_cookie)),
        Err(failure) => Err(attempt.failed(failure, &line)),
    }
}

/// What an HTTP/2 extended CONNECT's tunnel has beyond an HTTP/1.1 upgrade's.
struct Extended {
    /// The `Sec-WebSocket-Key` sent upstream ([`websocket_handshake`]), to check the backend's
    /// accept value against ([`switched`]).
    key: HeaderValue,
    /// The stream's place under `limits.max_requests`, held to the tunnel's end.
    place: RequestPlace,
}

/// Turns an HTTP/2 extended CONNECT's `parts` (before [`prepare`]; `Upgrade: websocket` is set
/// after it) into the HTTP/1.1 WebSocket handshake a backend reads (RFC 6455 §4.1): method `GET` and a
/// fresh `Sec-WebSocket-Key` (16 random bytes, base64), which is returned to check the backend's
/// accept value against ([`switched`]). RFC 8441 §5 leaves the key out of HTTP/2 (a client's own
/// is dropped); `Sec-WebSocket-Version`, `-Protocol`, `-Extensions` and `Origin` go on as the
/// client sent them.
fn websocket_handshake(parts: &mut Parts) -> HeaderValue {
    parts.method = http::Method::GET;
    let key = tungstenite::handshake::client::generate_key();
    let key = HeaderValue::from_str(&key).expect("base64 is a valid header value");
    parts.headers.insert(SEC_WEBSOCKET_KEY, key.clone());
    key
}

/// Checks the backend's answer to an extended CONNECT's handshake (`key`: [`websocket_handshake`];
/// `None`, an HTTP/1.1 upgrade, passes everything): a 101 must carry the `Sec-WebSocket-Accept`
/// that `key` gives (RFC 6455 §4.1, the client's check, which the proxy makes for its HTTP/2
/// client), and any other 2xx is refused, since it would answer the client's CONNECT with a
/// tunnel to nothing (RFC 9113 §8.5). Both fail as a protocol error (502); other answers (403,
/// 404, 426, ...) go to the client as they are.
fn switched(
    response: Response<Incoming>,
    key: Option<&HeaderValue>,
) -> Result<Response<Incoming>, Failure> {
    let Some(key) = key else {
        return Ok(response);
    };
    let problem = match response.status() {
        StatusCode::SWITCHING_PROTOCOLS => {
            let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
            let accept = response.headers().get(SEC_WEBSOCKET_ACCEPT);
            if accept.is_some_and(|a| a.as_bytes() == expected.as_bytes()) {
                return Ok(response);
            }
            "the backend's Sec-WebSocket-Accept does not answer the proxy's key"
        }
        status if status.is_success() => {
            "the backend answered a WebSocket handshake with a 2xx other than 101"
        }
        _ => return Ok(response),
    };
    Err((ErrorKind::Protocol, Some(problem.into())))
}

/// Takes a retry from `backend`'s retry budget, counting a refusal.
fn withdraw(backend: &TableBackend) -> bool {
    let taken = backend.upstream().budget().try_withdraw();
    if !taken {
        backend.upstream().stats().record_budget_exhausted();
    }
    taken
}

/// One attempt of an upgrade request: the endpoint picked on a backend, counted in flight from
/// the pick and waited for ([`Awaiting`]) until it connects and is answered or fails.
struct Attempt<'a> {
    conn: &'a Arc<Conn>,
    route: &'a TableRoute,
    backend: &'a TableBackend,
    /// The endpoint's index in `backend`.
    index: usize,
    target: Target,
    number: u8,
    start: Instant,
    awaiting: Awaiting<'a>,
}

impl<'a> Attempt<'a> {
    /// Picks an endpoint of `backend` that is up (another than `avoid` while one is; failing
    /// open, one health holds out when none is up), or fails with no endpoint (503); records the
    /// attempt on the access log line.
    fn start(
        conn: &'a Arc<Conn>,
        (route, backend): (&'a TableRoute, &'a TableBackend),
        (avoid, fail_open): (Option<usize>, bool),
        number: u8,
        log: &mut crate::access::Pending,
    ) -> Result<Attempt<'a>, Error> {
        let upstream = backend.upstream();
        let no_endpoint = || {
            let error = Error::NoEndpoint {
                route: route.name().to_string(),
                backend: backend.slot(),
            };
            upstream.stats().record_local(error.status(), true);
            error
        };
        let index = match fail_open {
            false => health::pick_endpoint(backend, avoid),
            true => health::pick_endpoint_failing_open(backend, avoid),
        };
        let index = index.ok_or_else(no_endpoint)?;
        let endpoint = *backend.endpoints().get(index).ok_or_else(no_endpoint)?;
        let tunnels = Arc::clone(upstream.tunnels(index).ok_or_else(no_endpoint)?);
        // Not counted as waiting for its head (`stats::unanswered`): the guard goes with the tunnel.
        let guard = upstream.stats().dispatch(None);
        let start = Instant::now();
        log.dispatched(route.name(), backend.slot(), Some(endpoint), number);
        Ok(Attempt {
            conn,
            route,
            backend,
            index,
            target: Target {
                endpoint,
                tunnels,
                guard,
            },
            number,
            start,
            awaiting: Awaiting(Some((conn, upstream.stats(), start))),
        })
    }

    /// Connects to the picked endpoint within `upstream.connect_timeout`.
    async fn connect(&self) -> Result<TcpStream, Failure> {
        let timeout = self.conn.shared.upstream.connect_timeout;
        let connected = tokio::time::timeout(timeout, TcpStream::connect(self.target.endpoint));
        match connected.await {
            Err(_elapsed) => Err((ErrorKind::ConnectTimeout, None)),
            Ok(Err(error)) => Err((connect_kind(&error), Some(Box::new(error)))),
            Ok(Ok(stream)) => Ok(stream),
        }
    }

    /// The backend answered `response`: counted, and the client's answer made ([`answer`]).
    /// `extended`: what an HTTP/2 extended CONNECT's tunnel holds, `None` for an HTTP/1.1
    /// upgrade.
    fn answered(
        mut self,
        mut response: Response<Incoming>,
        client: OnUpgrade,
        (protocol, extended): (Protocol, Option<Extended>),
        set_cookie: Option<HeaderValue>,
    ) -> Response<ProxyBody> {
        self.awaiting.answered();
        let upstream = self.backend.upstream();
        let conn = self.conn;
        if response.status() == StatusCode::SWITCHING_PROTOCOLS && extended.is_none() {
            // Before the 101 goes out: the client's stream is the tunnel's from then on. (An
            // HTTP/2 connection stays the client's: only its stream is the tunnel's.)
            crate::linger::Holder::hand_back(&**conn).upgraded();
        }
        if let Some(via) = conn.shared.via() {
            via.append(response.headers_mut(), Version::HTTP_11);
        }
        upstream
            .stats()
            .record_response(response.status(), self.start.elapsed());
        upstream
            .health()
            .record_status(self.index, response.status(), self.route.active());
        let idle = Some(conn.shared.limits.config.tunnel_idle_timeout).filter(|t| !t.is_zero());
        let open = (self.target.guard, self.target.tunnels);
        // An HTTP/2 stream's tunnel holds its connection's context as a request does, so that
        // the idle watch and a drain see a stream in flight (`idle`) until the tunnel ends.
        let stream = extended.map(|e| (Arc::clone(conn), e.place));
        let response = answer(response, open, client, (protocol, idle), stream);
        finish(response, None, set_cookie)
    }

    /// The attempt failed with `kind` and is sent once more: counted as a retried failure.
    fn retried(mut self, kind: ErrorKind, method: &http::Method) {
        self.awaiting.answered();
        let stats = self.backend.upstream().stats();
        let active = self.route.active();
        self.backend
            .upstream()
            .health()
            .record_failure(self.index, kind, active);
        stats.record_failure(kind, self.start.elapsed(), false);
        stats.record_retry(kind, method);
        let (route, backend) = (self.route.name(), self.backend.slot());
        tracing::debug!(%route, %backend, %kind, "upgrade retrying after a failed connect");
    }

    /// The attempt failed: counted, and the error the client gets.
    fn failed(
        mut self,
        (kind, source): Failure,
        (method, path): &(http::Method, Option<PathAndQuery>),
    ) -> Error {
        self.awaiting.answered();
        let upstream = self.backend.upstream();
        let active = self.route.active();
        // The handshake goes to an h2c backend over HTTP/1.1, which one that speaks only HTTP/2
        // answers with its preface or by closing (a protocol error or a reset): that says nothing
        // of the endpoint's health (its own requests succeed), so only a failure to connect is
        // held against it; else a few upgrade requests, which any client may send, ejected every
        // endpoint of a gRPC backend (and with `fail_open: false` took the route down).
        if kind.is_connect() || upstream.version() == Version::HTTP_11 {
            upstream.health().record_failure(self.index, kind, active);
        }
        upstream
            .stats()
            .record_failure(kind, self.start.elapsed(), true);
        let (route, backend) = (self.route.name(), self.backend.slot());
        tracing::debug!(%route, %backend, %kind, ?source, "upgrade failed upstream");
        let error = Error::Upstream {
            route: route.to_string(),
            backend,
            kind,
            source,
            endpoint: Some(self.target.endpoint),
            attempts: self.number,
        };
        let path = path.as_ref().map_or("/", |p| p.path());
        let limit = upstream.stats().warn_limit();
        crate::access::warn::upstream_failed(limit, &error, method, path);
        error
    }
}

/// An upgrade request's wait for its answer (the connect, the handshake, the response head) until
/// [`Awaiting::answered`]. Dropped before that, the request's future was dropped because its
/// client went away, which drops the upstream exchange with it: counted for the backend as an
/// ordinary request's abort is (`forward::Awaiting`;
/// [`crate::stats::BackendStats::record_client_abort`], by how long it had waited), never as
/// its error, unless the proxy is dropping what a stop's drain left after `drain_timeout`.
struct Awaiting<'a>(Option<(&'a Conn, &'a Arc<crate::stats::BackendStats>, Instant)>);

impl Awaiting<'_> {
    /// The exchange ended (an answer or a failure): nothing to count here.
    fn answered(&mut self) {
        self.0 = None;
    }
}

impl Drop for Awaiting<'_> {
    fn drop(&mut self) {
        let Some((conn, stats, start)) = self.0.take() else {
            return;
        };
        let waited = start.elapsed();
        if conn.shared.count_client_abort(stats, waited) {
            tracing::debug!(?waited, "the client went away before the upgrade's answer");
        }
    }
}

/// Where one upgrade request goes: the picked endpoint of a backend.
struct Target {
    /// The endpoint.
    endpoint: std::net::SocketAddr,
    /// The endpoint's open tunnels, where a tunnel to it counts and learns when to close.
    tunnels: Arc<EndpointTunnels>,
    /// Counted as in flight until the answer's head, then as an open tunnel on 101.
    guard: InFlight,
}

/// How an upstream attempt failed before any response head: its kind and the error, if any.
type Failure = (ErrorKind, Option<BoxError>);

/// Sends the upgrade request over `stream`, a dedicated connection to the attempt's endpoint, and
/// returns the backend's response head (101 or any other), its body and upgrade still to come.
///
/// `parts` is ready to send: hop-by-hop headers stripped, `Upgrade` and `Connection: upgrade` put
/// back. The response head must come within `timeout` (the route's response timeout).
async fn exchange(
    stream: TcpStream,
    parts: Parts,
    path: Option<PathAndQuery>,
    body: Incoming,
    timeout: std::time::Duration,
) -> Result<Response<Incoming>, Failure> {
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(error) => return Err((ErrorKind::Protocol, Some(Box::new(error)))),
        };
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "upgrade upstream connection ended with an error");
        }
    });
    let mut parts = parts;
    parts.uri = Uri::from(path.unwrap_or_else(|| PathAndQuery::from_static("/")));
    parts.version = Version::HTTP_11;
    let request = Request::from_parts(parts, body);
    match tokio::time::timeout(timeout, sender.send_request(request)).await {
        Err(_elapsed) => Err((ErrorKind::ResponseTimeout, None)),
        Ok(Err(error)) => Err((response_kind(&error), Some(Box::new(error)))),
        Ok(Ok(response)) => Ok(response),
    }
}

/// The client's answer for the backend's `response`; on 101, starts the tunnel (counted in
/// `endpoint`'s tunnels), closed after `idle` without a byte either way (`None`: never).
/// `stream`: the client asked with an HTTP/2 extended CONNECT on this connection (with the
/// stream's place under `limits.max_requests`), whose tunnel opens with `200` and no `Upgrade` or
/// `Sec-WebSocket-Accept` (RFC 8441 §5); the tunnel holds both to its end.
fn answer(
    mut response: Response<Incoming>,
    (guard, endpoint): (InFlight, Arc<EndpointTunnels>),
    client: OnUpgrade,
    (protocol, idle): (Protocol, Option<std::time::Duration>),
    stream: Option<(Arc<Conn>, RequestPlace)>,
) -> Response<ProxyBody> {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        strip_hop_by_hop(response.headers_mut(), Direction::Response);
        return response.map(|body| ProxyBody::upstream(ResponseBody::unpooled(body), guard));
    }
    let backend = hyper::upgrade::on(&mut response);
    let (mut parts, _empty) = response.into_parts();
    let protocols: Vec<HeaderValue> = parts.headers.get_all(UPGRADE).iter().cloned().collect();
    strip_hop_by_hop(&mut parts.headers, Direction::Response);
    if stream.is_some() {
        parts.status = StatusCode::OK;
        parts.headers.remove(SEC_WEBSOCKET_ACCEPT);
    } else {
        set_upgrade(&mut parts.headers, protocols);
    }
    // Counted as a tunnel before it stops counting as a request, so a drain never sees 0 between.
    let (open, close) = Open::new(guard.stats(), &endpoint);
    drop(guard);
    tokio::spawn(async move {
        let tunnels = open.stats.tunnels();
        match tokio::try_join!(client, backend) {
            Ok(upgraded) => splice::splice(upgraded, (protocol, idle), close, tunnels).await,
            Err(error) => tracing::debug!(%error, "upgrade did not complete"),
        }
        drop(stream);
    });
    Response::from_parts(parts, ProxyBody::full(bytes::Bytes::new()))
}

fn connect_kind(error: &std::io::Error) -> ErrorKind {
    match error.kind() {
        std::io::ErrorKind::ConnectionRefused => ErrorKind::ConnectRefused,
        std::io::ErrorKind::TimedOut => ErrorKind::ConnectTimeout,
        _ => ErrorKind::ConnectError,
    }
}

fn response_kind(error: &hyper::Error) -> ErrorKind {
    if error.is_parse() || error.is_parse_status() || error.is_user() {
        ErrorKind::Protocol
    } else {
        ErrorKind::Reset
    }
}

#[cfg(test)]
mod tests;
