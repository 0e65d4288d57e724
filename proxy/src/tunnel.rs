//! HTTP/1.1 Upgrade tunnels (RFC 9110 §7.8): WebSocket (RFC 6455) and any other protocol a client
//! switches to.
//!
//! An upgrade request is routed like any request (weights, sticky key, tester override, health) at
//! the moment of the upgrade. It goes over a **dedicated** upstream connection, never the pool,
//! with its `Upgrade` and `Connection: upgrade` headers kept. On `101 Switching Protocols` both
//! connections are handed over by hyper (`hyper::upgrade::on`) and [`splice`] copies bytes both
//! ways until either side closes; any other answer (426, 200, ...) is passed through as an ordinary
//! response.
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
//! HTTP/2 extended CONNECT (RFC 8441, WebSocket over h2) is not supported: such a request is
//! answered like any CONNECT (400).
//!
//! # Layout
//! - this file: detecting an upgrade request, the upstream exchange.
//! - `registry`: the open tunnels by backend and endpoint, and their close signals.
//! - `splice`: copying bytes both ways, and the close at the drain deadline.
//! - [`frame`]: WebSocket frame boundaries and the close frame (RFC 6455 §5.2, §5.5.1).

use std::sync::Arc;

use http::header::{CONNECTION, UPGRADE};
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
use crate::forward::{finish, prepare, TableBackend, TableRoute};
use crate::headers::{set_upgrade, strip_hop_by_hop, Direction};
use crate::health;
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

/// The protocol an HTTP/1.1 request asks to switch to: `Connection` lists `upgrade` and `Upgrade`
/// names one or more protocols (RFC 9110 §7.8). HTTP/1.0 and HTTP/2 requests never upgrade here
/// (§7.8 is HTTP/1.1 only; an `Upgrade` on them is stripped as a hop-by-hop header).
///
/// `h2c` is not a protocol to switch to here: the HTTP/2 upgrade of a cleartext HTTP/1.1
/// connection (deprecated by RFC 9113 §3.1; `curl --http2 http://...` still offers it) is
/// between the client and the proxy, which serves HTTP/2 only with prior knowledge and so
/// ignores the offer (RFC 9110 §7.8: a server may), as Envoy does. Tunnelled, it went to the
/// backend over a dedicated HTTP/1.1 connection: an `h2c` backend could not read it (502,
/// counted against its endpoint). A request offering only `h2c` is an ordinary request, its
/// `Upgrade` and the `HTTP2-Settings` its `Connection` names stripped as hop-by-hop headers.
pub(crate) fn requested(parts: &Parts) -> Option<Protocol> {
    if parts.version != Version::HTTP_11 {
        return None;
    }
    // `Upgrade` first: most requests have none, and then this is one lookup.
    let mut protocols = parts
        .headers
        .get_all(UPGRADE)
        .iter()
        .flat_map(tokens)
        .filter(|p| !p.eq_ignore_ascii_case("h2c"));
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
    Some(match websocket(first) || protocols.any(websocket) {
        true => Protocol::WebSocket,
        false => Protocol::Other,
    })
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
}

/// Forwards an upgrade request (RFC 9110 §7.8) to the backend picked for it, over a dedicated
/// connection ([`exchange`]); the answer (101 and its tunnel, or any other response) is
/// counted like any response. Never retried: a failure answers 502/504 and the client upgrades
/// again, to whichever backend the weights then pick.
///
/// Once the endpoint is picked, the request's access log line `log` names it, one attempt
/// ([`crate::access::Pending::dispatched`]), as an ordinary request's does: so does a 499 when
/// the client goes away before the answer, which is also counted as a client abort ([`Awaiting`]).
pub(crate) async fn forward(
    conn: &Conn,
    route: &TableRoute,
    backend: &TableBackend,
    (mut parts, body): (Parts, Incoming),
    upgrade: Upgrade,
    set_cookie: Option<HeaderValue>,
    log: &mut crate::access::Pending,
) -> Result<Response<ProxyBody>, Error> {
    let protocols: Vec<HeaderValue> = parts.headers.get_all(UPGRADE).iter().cloned().collect();
    let names = crate::headers::RequestNames::scan(&parts.headers);
    let path = prepare(conn, &mut parts, names)?;
    set_upgrade(&mut parts.headers, protocols);
    let upstream = backend.upstream();
    let no_endpoint = || {
        let error = Error::NoEndpoint {
            route: route.name().to_string(),
            backend: backend.slot(),
        };
        upstream.stats().record_local(error.status(), true);
        error
    };
    let index = health::pick_endpoint(backend, None).ok_or_else(no_endpoint)?;
    let endpoint = *backend.endpoints().get(index).ok_or_else(no_endpoint)?;
    let tunnels = Arc::clone(upstream.tunnels(index).ok_or_else(no_endpoint)?);
    // Not counted as waiting for its head (`stats::unanswered`): the guard goes with the tunnel.
    let guard = upstream.stats().dispatch(None);
    let start = Instant::now();
    log.dispatched(route.name(), backend.slot(), Some(endpoint), 1);
    let awaiting = Awaiting(Some((conn, upstream.stats(), start)));
    let target = Target {
        endpoint,
        tunnels,
        guard,
    };
    // For the warning a failure gets (`access::warn`); an upgrade is rare, the copy cheap.
    let line = (parts.method.clone(), path.clone());
    let (client, protocol) = (upgrade.client, upgrade.protocol);
    let exchanged = exchange(conn, target, parts, path, body, client, protocol).await;
    awaiting.answered();
    let (elapsed, active) = (start.elapsed(), route.active());
    match exchanged {
        Ok(mut response) => {
            if let Some(via) = conn.shared.via() {
                via.append(response.headers_mut(), Version::HTTP_11);
            }
            upstream.stats().record_response(response.status(), elapsed);
            upstream
                .health()
                .record_status(index, response.status(), active);
            Ok(finish(response, None, set_cookie))
        }
        Err((kind, source)) => {
            upstream.health().record_failure(index, kind, active);
            upstream.stats().record_failure(kind, elapsed, true);
            let (route, backend) = (route.name(), backend.slot());
            tracing::debug!(%route, %backend, %kind, ?source, "upgrade failed upstream");
            let error = Error::Upstream {
                route: route.to_string(),
                backend,
                kind,
                source,
                endpoint: Some(endpoint),
                attempts: 1,
            };
            let (method, path) = &line;
            let path = path.as_ref().map_or("/", |p| p.path());
            let limit = upstream.stats().warn_limit();
            crate::access::warn::upstream_failed(limit, &error, method, path);
            Err(error)
        }
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
    fn answered(mut self) {
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

/// What the upstream exchange gave: a response for the client, or a failure before any head.
type Exchange = Result<Response<ProxyBody>, (ErrorKind, Option<BoxError>)>;

/// Sends the upgrade request over a dedicated connection to `target` and answers the client: on 101,
/// a 101 with the backend's headers (and `Upgrade`/`Connection` kept), while a task splices the two
/// upgraded connections; otherwise the backend's response as it is.
///
/// `parts` is ready to send: hop-by-hop headers stripped, `Upgrade` and `Connection: upgrade` put
/// back. `client` is the client connection's pending upgrade.
async fn exchange(
    conn: &Conn,
    target: Target,
    mut parts: Parts,
    path: Option<PathAndQuery>,
    body: Incoming,
    client: OnUpgrade,
    protocol: Protocol,
) -> Exchange {
    let upstream = &conn.shared.upstream;
    let connected = tokio::time::timeout(
        upstream.connect_timeout,
        TcpStream::connect(target.endpoint),
    )
    .await;
    let stream = match connected {
        Err(_elapsed) => return Err((ErrorKind::ConnectTimeout, None)),
        Ok(Err(error)) => return Err((connect_kind(&error), Some(Box::new(error)))),
        Ok(Ok(stream)) => stream,
    };
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
    parts.uri = Uri::from(path.unwrap_or_else(|| PathAndQuery::from_static("/")));
    parts.version = Version::HTTP_11;
    let request = Request::from_parts(parts, body);
    let sent = tokio::time::timeout(upstream.response_timeout, sender.send_request(request)).await;
    let response = match sent {
        Err(_elapsed) => return Err((ErrorKind::ResponseTimeout, None)),
        Ok(Err(error)) => return Err((response_kind(&error), Some(Box::new(error)))),
        Ok(Ok(response)) => response,
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        // Before the 101 goes out: the client's stream is the tunnel's from then on.
        crate::linger::Holder::hand_back(conn).upgraded();
    }
    let idle = Some(conn.shared.limits.config.tunnel_idle_timeout).filter(|t| !t.is_zero());
    let open = (target.guard, target.tunnels);
    Ok(answer(response, open, client, (protocol, idle)))
}

/// The client's answer for the backend's `response`; on 101, starts the tunnel (counted in
/// `endpoint`'s tunnels), closed after `idle` without a byte either way (`None`: never).
fn answer(
    mut response: Response<Incoming>,
    (guard, endpoint): (InFlight, Arc<EndpointTunnels>),
    client: OnUpgrade,
    (protocol, idle): (Protocol, Option<std::time::Duration>),
) -> Response<ProxyBody> {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        strip_hop_by_hop(response.headers_mut(), Direction::Response);
        return response.map(|body| ProxyBody::upstream(ResponseBody::unpooled(body), guard));
    }
    let backend = hyper::upgrade::on(&mut response);
    let (mut parts, _empty) = response.into_parts();
    let protocols: Vec<HeaderValue> = parts.headers.get_all(UPGRADE).iter().cloned().collect();
    strip_hop_by_hop(&mut parts.headers, Direction::Response);
    set_upgrade(&mut parts.headers, protocols);
    // Counted as a tunnel before it stops counting as a request, so a drain never sees 0 between.
    let (open, close) = Open::new(guard.stats(), &endpoint);
    drop(guard);
    tokio::spawn(async move {
        let tunnels = open.stats.tunnels();
        match tokio::try_join!(client, backend) {
            Ok(upgraded) => splice::splice(upgraded, (protocol, idle), close, tunnels).await,
            Err(error) => tracing::debug!(%error, "upgrade did not complete"),
        }
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
