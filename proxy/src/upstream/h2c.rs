//! h2c upstream connections (`protocol: h2c`): one HTTP/2 connection per endpoint, every request a
//! stream on it (RFC 9113 §5), with the client's host as the request's `:authority`.
//!
//! hyper-util's pool keys and dials its connections by the request URI's authority, so through
//! it the `:authority` an h2c backend saw was the endpoint's address, with the client's host in a
//! `Host` header that contradicted it (RFC 9113 §8.3.1 lets a server treat that as malformed), and
//! name-based virtual hosts and gRPC servers saw an IP. Here the connection is chosen by endpoint
//! index and driven with hyper's `client::conn::http2`, so the URI can carry the client's host:
//! the `Host` header the request path set (the client's `Host`, or its HTTP/2 `:authority`, RFC
//! 9113 §8.3.1) moves into `:authority`, as an HTTP/1.1 backend gets that `Host` unchanged. A
//! request without one (HTTP/1.0) keeps the endpoint's address.
//!
//! A connection is made on first use (one at a time per endpoint, so a burst shares it) and
//! replaced once closed (GOAWAY, reset), once [`MAX_STREAMS`] streams (or the backend's own
//! limit) are open on it, or once no request was sent on it for `upstream.idle_timeout` (4 s),
//! before the backend's own idle close can race a new stream (case C17, as the pool did): the old
//! handle is dropped and that connection ends when its streams in flight are done. A request that the closing connection never sent (hyper hands it back) is sent
//! again on a fresh connection, as the pool did. When the backend's `Upstream` is dropped, so are
//! its handles, and each connection ends the same way.
//!
//! Refused streams: a backend closing gracefully sends GOAWAY with the last stream it will process;
//! streams above it, which the proxy may have opened before the GOAWAY arrived, were not processed
//! and may be retried on a new connection (RFC 9113 §6.8), as may a stream reset with
//! `REFUSED_STREAM` (§8.7), whatever the method. h2 fails exactly those streams with the remote
//! GOAWAY or the remote `REFUSED_STREAM` reset as their error (in hyper's error chain; a stream at
//! or below the last-stream-id that the closing connection cuts short fails with the connection's
//! end instead, hyper's `Io` error "stream closed because of a broken pipe", and is not replayed:
//! the request path re-sends it only when it is bodiless and idempotent, as any reset; tests in
//! `proxy h2c_goaway::`, session 42). Such a request is replayed on a fresh connection to the
//! same endpoint (the refusing one is no longer handed out), at most
//! [`MAX_UNPROCESSED_ATTEMPTS`] attempts in all with the hand-backs, each replay counted in
//! `crossfade_retries_total{reason="refused_stream"}`. Its body, whatever was read of it, comes from
//! the copy [`ReplayBody`] keeps (up to [`REPLAY_LIMIT`], 64 KiB, trailers included) and then from
//! the client's stream; a refused request with more of its body read than that is not replayed (502,
//! `crossfade_refused_not_replayed_total`). The copy is freed at the response head. Neither re-send
//! takes from the retry budget: nothing reached the backend's application.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::header::HOST;
use http::request::Parts;
use http::uri::Authority;
use http::{Extensions, HeaderMap, Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;

use super::replay::{ReplayBody, REPLAY_LIMIT};

/// Most attempts of one request that the backend did not process (handed back by a closing
/// connection, or refused: RFC 9113 §8.7 makes any number safe), each on a fresh connection. More
/// than one replay is needed when a burst of requests shares the fresh connection and the backend
/// closes that one too (a rolling restart of its instances); the bound stops a loop against a
/// backend that refuses everything. Fixed, not configuration: it is no retry policy (that is
/// `upstream.retry_budget`, which these attempts do not draw on); the README says why.
const MAX_UNPROCESSED_ATTEMPTS: u32 = 4;

/// The receive window of each stream on an upstream connection (RFC 9113 §6.9.2): what the proxy
/// holds of a response whose client reads slower than its backend sends. hyper's default (2 MiB),
/// set here so that [`CONNECTION_WINDOW`]'s reasoning does not rest on it.
const STREAM_WINDOW: u32 = 2 << 20;

/// The receive window of a whole upstream connection: 1 GiB, as Go's HTTP/2 transport
/// (`transportDefaultConnFlow`), so that only [`STREAM_WINDOW`] binds. The connection carries the
/// streams of many clients: with hyper's default (5 MiB) three clients that stopped reading their
/// streams held the whole window with data the proxy could not pass on, and every other client's
/// response on that connection stalled until they read (h2 gives connection window back only as
/// a stream's data is taken). The proxy still holds at most a stream window per response in
/// flight, as an HTTP/1.1 upstream connection's socket buffer holds a response its client does not
/// read.
const CONNECTION_WINDOW: u32 = 1 << 30;

/// Most streams open at once on one upstream connection; a request that finds its endpoint's
/// connection at it opens another (and makes it the one handed out), as Envoy's HTTP/2 pool does.
/// Every client's requests to an endpoint share its connections, so a backend's
/// `SETTINGS_MAX_CONCURRENT_STREAMS` (hyper's and tonic's 200) would otherwise bound all clients
/// together: long-lived streams (subscriptions, watches) up to it made every other call to the
/// endpoint wait for one to end, up to `response_timeout`. 100 is below the common servers'
/// limits (hyper and tonic 200, nginx 128, Go's 250; grpc-go has none), so a new connection is
/// made before the backend would make a stream wait. A backend that allows fewer on a connection
/// gets a new connection at its own limit (read from its SETTINGS, [`connect`]).
const MAX_STREAMS: u32 = 100;
use super::{send_error, sources, SendError, Upstream, UpstreamBody};

type Sender = SendRequest<ReplayBody<UpstreamBody>>;

/// A stream counted open on its connection ([`MAX_STREAMS`]) until dropped: from the moment a
/// request takes the connection until its response body ends or is dropped (it goes with the
/// response body, `upstream::ResponseBody`).
#[derive(Debug)]
pub(crate) struct OpenStream(Arc<AtomicU32>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// The h2c connections of one backend, by endpoint index.
#[derive(Debug)]
pub(super) struct H2cConnections {
    endpoints: Box<[Endpoint]>,
    /// The clock origin of [`Held::used_ms`].
    start: Instant,
    /// The next connection's [`Held::generation`].
    generations: AtomicU64,
}

#[derive(Debug, Default)]
struct Endpoint {
    /// The live connection, if any.
    held: ArcSwapOption<Held>,
    /// Held while a connection is being made, so concurrent requests wait for that one.
    connecting: tokio::sync::Mutex<()>,
}

/// One endpoint's connection.
#[derive(Debug)]
struct Held {
    sender: Sender,
    /// Streams open on it: requests sent on it whose response body has not ended.
    streams: Arc<AtomicU32>,
    /// The backend's `SETTINGS_MAX_CONCURRENT_STREAMS` on it, as its task last read it.
    limit: Arc<AtomicU32>,
    /// When a request last took it, in milliseconds since [`H2cConnections::start`].
    used_ms: AtomicU64,
    /// Which connection this is, unique within the backend.
    generation: u64,
}

// === impl H2cConnections ===

impl H2cConnections {
    /// No connection yet to any of `n` endpoints.
    pub(super) fn new(n: usize) -> H2cConnections {
        H2cConnections {
            endpoints: (0..n).map(|_| Endpoint::default()).collect(),
            start: Instant::now(),
            generations: AtomicU64::new(0),
        }
    }

    /// Sends `request` (absolute URI to endpoint `index`, `Host` set by the request path) as a
    /// stream on endpoint `index`'s connection, with the `Host` moved into `:authority` (see the
    /// module docs), and waits for the response head. A request the closing connection never sent
    /// is sent on a fresh one; a stream the backend refused unprocessed is replayed on a fresh one,
    /// body and trailers included, when its body was within [`REPLAY_LIMIT`]; at most
    /// [`MAX_UNPROCESSED_ATTEMPTS`] attempts in all.
    ///
    /// # Errors
    /// Connect failures and stream failures, classified like the pool's.
    pub(super) async fn send(
        &self,
        upstream: &Upstream,
        index: usize,
        mut request: Request<UpstreamBody>,
    ) -> Result<(Response<Incoming>, OpenStream), SendError> {
        authority_from_host(&mut request);
        let (parts, body) = request.into_parts();
        let head = Head::of(&parts);
        let (first, replay) = ReplayBody::new(body, REPLAY_LIMIT);
        let request = Request::from_parts(parts, first);
        let mut request = request;
        let mut attempts = 1;
        loop {
            let (mut sender, generation, open) = self.sender(upstream, index).await?;
            let (error, next, refused_stream) = match sender.try_send_request(request).await {
                Ok(response) => {
                    replay.release();
                    return Ok((response, open));
                }
                Err(mut e) => match e.take_message() {
                    // The connection closed before the stream was sent: nothing reached the
                    // backend, and hyper hands the request back whole.
                    Some(returned) => (e.into_error(), returned, false),
                    None => {
                        let error = e.into_error();
                        if !refused(&error) {
                            replay.release();
                            return Err(send_error(error, false));
                        }
                        // The backend did not process the stream (RFC 9113 §6.8, §8.7): whatever
                        // the method, it may go again if its body can be replayed.
                        let Some(body) = replay.again() else {
                            upstream.stats.record_replay_skipped();
                            tracing::debug!(%error, "refused stream not replayed: its body is over the limit");
                            return Err(send_error(error, false));
                        };
                        (error, head.to_request(body), true)
                    }
                },
            };
            // The connection may not show as closed yet (its task is still ending): it is let go
            // explicitly, so the next attempt gets a fresh one.
            drop((sender, open));
            self.forget(index, generation);
            if attempts >= MAX_UNPROCESSED_ATTEMPTS {
                replay.release();
                return Err(send_error(error, false));
            }
            attempts += 1;
            if refused_stream {
                upstream.stats.record_refused_retry(&head.method);
                tracing::debug!(%error, attempts, "replaying a refused stream on a fresh connection");
            }
            request = next;
        }
    }

    /// A live connection to endpoint `index` with a stream counted open on it: the one held, else
    /// (none, closed, idle too long, or at [`MAX_STREAMS`]) a new one, which is held from then
    /// on; with its generation (see [`H2cConnections::forget`]).
    async fn sender(
        &self,
        upstream: &Upstream,
        index: usize,
    ) -> Result<(Sender, u64, OpenStream), SendError> {
        let Some(endpoint) = self.endpoints.get(index) else {
            return Err(super::no_such_endpoint());
        };
        let idle = upstream.idle_timeout;
        if let Some(live) = endpoint.live(self.now_ms(), idle) {
            return Ok(live);
        }
        let _connecting = endpoint.connecting.lock().await;
        // Another request may have connected while this one waited.
        if let Some(live) = endpoint.live(self.now_ms(), idle) {
            return Ok(live);
        }
        let (sender, limit) = connect(upstream, index).await?;
        let generation = self.generations.fetch_add(1, Relaxed);
        let streams = Arc::new(AtomicU32::new(1));
        let open = OpenStream(Arc::clone(&streams));
        endpoint.held.store(Some(Arc::new(Held {
            sender: sender.clone(),
            streams,
            limit,
            used_ms: AtomicU64::new(self.now_ms()),
            generation,
        })));
        Ok((sender, generation, open))
    }

    /// Stops handing out endpoint `index`'s connection `generation` (one that refused a stream),
    /// so the next request makes a fresh one; a newer connection stays. The old one ends when its
    /// streams in flight are done.
    fn forget(&self, index: usize, generation: u64) {
        let Some(endpoint) = self.endpoints.get(index) else {
            return;
        };
        endpoint.held.rcu(|held| match held {
            Some(held) if held.generation == generation => None,
            other => other.clone(),
        });
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

// === impl Endpoint ===

impl Endpoint {
    /// The held connection's handle, marked used at `now_ms`, with a stream counted open on it,
    /// if it is open (a handed-back request means it closed), was used within `idle` and has
    /// fewer streams open than [`MAX_STREAMS`] and the backend's own limit on it. A limit of 0
    /// (not read yet, or a backend that takes no stream for now) is taken as none: a new
    /// connection per request would not get a stream sooner.
    fn live(&self, now_ms: u64, idle: Duration) -> Option<(Sender, u64, OpenStream)> {
        let loaded = self.held.load();
        let held = loaded.as_deref()?;
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        let fresh = now_ms.saturating_sub(held.used_ms.load(Relaxed)) < idle_ms;
        if !fresh || held.sender.is_closed() {
            return None;
        }
        let limit = match held.limit.load(Relaxed) {
            0 => MAX_STREAMS,
            backend => backend.min(MAX_STREAMS),
        };
        let taken = held.streams.fetch_add(1, Relaxed);
        let open = OpenStream(Arc::clone(&held.streams));
        if taken >= limit {
            return None;
        }
        held.used_ms.fetch_max(now_ms, Relaxed);
        Some((held.sender.clone(), held.generation, open))
    }
}

/// A new HTTP/2 connection (prior knowledge, RFC 9113 §3.3) to endpoint `index`, driven by its
/// own task until every handle is dropped and its streams are done, or it fails; with the
/// backend's `SETTINGS_MAX_CONCURRENT_STREAMS` as last read (0 until the task first ran; h2 takes
/// it as unbounded until the backend's SETTINGS come; see [`Endpoint::live`]).
async fn connect(upstream: &Upstream, index: usize) -> Result<(Sender, Arc<AtomicU32>), SendError> {
    let stream = upstream.dial(index).await?;
    let (sender, mut connection) = Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| send_error(e, true))?;
    let limit = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&limit);
    tokio::spawn(async move {
        // The backend's limit is read after each poll of the connection, which reads its
        // SETTINGS frames: so a change is seen by the next request after it arrived.
        let driven = std::future::poll_fn(|cx| {
            let polled = std::future::Future::poll(std::pin::Pin::new(&mut connection), cx);
            let max = connection.current_max_send_streams();
            seen.store(u32::try_from(max).unwrap_or(u32::MAX), Relaxed);
            polled
        });
        if let Err(error) = driven.await {
            tracing::debug!(%error, "h2c upstream connection ended with an error");
        }
    });
    Ok((sender, limit))
}

/// Whether the backend refused the stream without processing any of it, so that it may be sent
/// again whatever its method: a `REFUSED_STREAM` reset from the backend (RFC 9113 §8.7), or a
/// GOAWAY from the backend whose last-stream-id is below the stream (§6.8: h2 fails exactly those
/// streams with the GOAWAY as their error; streams at or below it fail with the connection's end).
/// A stream that was never opened because a GOAWAY had arrived fails with that GOAWAY too.
fn refused(error: &hyper::Error) -> bool {
    sources(error)
        .filter_map(|e| e.downcast_ref::<h2::Error>())
        .any(|e| {
            e.is_remote()
                && (e.is_go_away()
                    || (e.is_reset() && e.reason() == Some(h2::Reason::REFUSED_STREAM)))
        })
}

/// What is needed to build the request again for a replay: everything but the body.
#[derive(Debug)]
struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    extensions: Extensions,
}

impl Head {
    fn of(parts: &Parts) -> Head {
        Head {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            extensions: parts.extensions.clone(),
        }
    }

    fn to_request<B>(&self, body: B) -> Request<B> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        *request.extensions_mut() = self.extensions.clone();
        request
    }
}

/// Moves the request's `Host` into its URI's authority (`:authority` on the wire), leaving no
/// `Host` header (RFC 9113 §8.3.1: a client uses `:authority` instead). A `Host` that is not a
/// valid authority, or none, leaves the URI as it is.
fn authority_from_host(request: &mut Request<UpstreamBody>) {
    let Some(authority) = request
        .headers()
        .get(HOST)
        .and_then(|host| Authority::try_from(host.as_bytes()).ok())
    else {
        return;
    };
    let mut parts = std::mem::take(request.uri_mut()).into_parts();
    parts.authority = Some(authority);
    // Scheme and path are kept from a valid absolute URI, so this cannot fail.
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
        request.headers_mut().remove(HOST);
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{Either, Full};

    use super::*;

    fn request(uri: &str, host: Option<&str>) -> Request<UpstreamBody> {
        let mut builder = Request::get(uri);
        if let Some(host) = host {
            builder = builder.header(HOST, host);
        }
        builder.body(Either::Right(Full::default())).unwrap()
    }

    #[test]
    fn the_host_header_becomes_the_authority() {
        let mut r = request("http://127.0.0.1:9000/a?b=1", Some("shop.example:8080"));
        authority_from_host(&mut r);
        assert_eq!(r.uri().to_string(), "http://shop.example:8080/a?b=1");
        assert!(r.headers().get(HOST).is_none());
    }

    #[test]
    fn without_a_usable_host_the_endpoint_stays_the_authority() {
        for host in [None, Some("bad host"), Some("")] {
            let mut r = request("http://127.0.0.1:9000/a", host);
            authority_from_host(&mut r);
            assert_eq!(r.uri().to_string(), "http://127.0.0.1:9000/a", "{host:?}");
        }
    }
}
