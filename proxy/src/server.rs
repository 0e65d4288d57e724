//! The accept loop: one task per client connection (TLS handshake first under `tls`), its protocol
//! told by ALPN or its first bytes ([`crate::preface`]) and served by hyper's HTTP/1.1 or HTTP/2
//! connection within the listener's limits, closed by lingering when the client may still be
//! sending ([`crate::linger`]), and a graceful, bounded drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError};
use std::time::Duration;

use http::header::CONNECTION;
use http::{HeaderValue, Request, Response, Version};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;

use futures_util::future::ready;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::LimitsConfig;
use crate::error::Result;
use crate::forward;
use crate::handle::Shared;
use crate::headers::peer_value;
use crate::idle::{self, Activity, GracefulShutdown, Watcher};
use crate::limits::{Admission, Limited, Limits, RequestPlace, ShedReason};
use crate::linger::{self, HandBack, LingeringIo};
use crate::preface::{Protocol, Rewind};
use crate::tls::Tls;

/// Per-connection context: shared state plus what is known once per connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) shared: Arc<Shared>,
    /// The peer's IP as an `X-Forwarded-For` element, formatted once per connection.
    pub(crate) peer: HeaderValue,
    /// The connection has carried an HTTP/2 request (see [`idle::Context`]).
    multiplexed: AtomicBool,
    /// The position of the certificate pair the client's SNI host name picked in its handshake
    /// ([`Tls::position`]), which each request's host must pick too ([`Conn::misdirected`]);
    /// [`Conn::ANY_HOST`] when nothing is to be compared (no TLS, no `tls.sni`, no SNI sent).
    sni_pair: AtomicU32,
    /// Requests started on the connection (wrapping), for the idle watch.
    requests: AtomicU64,
    /// HTTP/2 streams the client reset after their request went upstream and before the
    /// response head came (`limits.h2_max_premature_resets`).
    premature_resets: AtomicU64,
    /// Where the connection's stream comes back for a lingering close ([`crate::linger`]).
    back: HandBack,
    /// The 1xx responses of the HTTP/1.1 request in flight go here ([`crate::interim`]); set
    /// when hyper's connection is made. HTTP/2 requests carry their own.
    informational: OnceLock<hyper::ext::InformationalSender>,
}

impl Conn {
    /// [`Conn::sni_pair`] when the connection serves any host.
    const ANY_HOST: u32 = u32::MAX;

    /// Whether a request for `host` (its `Host` or `:authority`, with or without `:port`) is
    /// misdirected: the client's SNI host name picked one of the listener's certificate pairs
    /// (`tls.sni`) and `host` would pick another, so the certificate this connection was secured
    /// with is not the one the proxy serves `host` with (and need not be valid for it). RFC 9110
    /// §7.4 has such a request rejected, with 421 Misdirected Request (§15.5.20), which a client
    /// may retry on a new connection (RFC 9113 §9.1.2): an HTTP/2 client that reused ("coalesced")
    /// a connection for another host its certificate covers, or a client whose SNI names one
    /// domain and whose `Host` another (domain fronting). Never for a connection without SNI (a
    /// client connecting by address gets the first pair, and is served as without `tls.sni`),
    /// nor for a request without a host.
    pub(crate) fn misdirected(&self, host: Option<&str>) -> bool {
        let picked = self.sni_pair.load(Ordering::Relaxed);
        if picked == Conn::ANY_HOST {
            return false;
        }
        match (host, &self.shared.tls) {
            (Some(host), Some(tls)) => tls.position(host) != picked as usize,
            _ => false,
        }
    }

    /// A new connection's context, its client at `client` (the TCP peer, or the address a PROXY
    /// protocol header gave).
    fn new(shared: Arc<Shared>, client: std::net::IpAddr) -> Conn {
        Conn {
            shared,
            peer: peer_value(client),
            multiplexed: AtomicBool::new(false),
            sni_pair: AtomicU32::new(Conn::ANY_HOST),
            requests: AtomicU64::new(0),
            premature_resets: AtomicU64::new(0),
            back: HandBack::default(),
            informational: OnceLock::new(),
        }
    }

    /// Where the 1xx responses of a request with `extensions` (its own sender, over HTTP/2, taken
    /// out of them) and `version` go: `None` for an HTTP/1.0 request, which must get none
    /// (RFC 9110 §15.2).
    pub(crate) fn informational(
        &self,
        extensions: &mut http::Extensions,
        version: Version,
    ) -> Option<hyper::ext::InformationalSender> {
        match version {
            Version::HTTP_2 => extensions.remove(),
            Version::HTTP_11 => self.informational.get().cloned(),
            _ => None,
        }
    }

    /// Counts a request whose client went away after it went upstream and before its response
    /// head came (`forward::Awaiting`): on an HTTP/2 connection, the client reset its stream
    /// (an HTTP/1.x client that goes away closes its connection, which ends the matter).
    pub(crate) fn count_premature_reset(&self) {
        if self.multiplexed.load(Ordering::Relaxed) {
            self.premature_resets.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl linger::Holder for Conn {
    fn hand_back(&self) -> &HandBack {
        &self.back
    }

    fn send_timeout(&self) -> Duration {
        self.shared.limits.config.send_timeout
    }

    fn send_timed_out(&self) {
        self.shared.send_timeouts.fetch_add(1, Ordering::Relaxed);
    }
}

impl idle::Context for Conn {
    fn multiplexed(&self) -> bool {
        self.multiplexed.load(Ordering::Relaxed)
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn drain_grace(&self) -> Duration {
        drain_grace(&self.shared)
    }

    fn abusive(&self) -> bool {
        let resets = self.premature_resets.load(Ordering::Relaxed);
        // Zero on nearly every connection: one load and no more.
        resets != 0
            && resets > self.shared.limits.config.h2_max_premature_resets
            && resets.saturating_mul(2) > self.requests.load(Ordering::Relaxed)
    }
}

/// How often the drain looks whether the closed tunnels have ended.
const TUNNEL_POLL: Duration = Duration::from_millis(25);

/// Pause after an accept error (e.g. out of file descriptors) so the loop does not spin.
pub(crate) const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// The connection builders: HTTP/1.1 and HTTP/2 for served connections (each connection is served
/// by the one its protocol needs, see [`crate::preface`]), and hyper-util's auto builder for shed
/// ones (no keep-alive; short-lived, so its size does not matter).
struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<StreamExecutor>,
    shed: auto::Builder<TokioExecutor>,
}

/// Marks the proxy serving as soon as it is called, not when the returned future is first
/// polled: the listener is bound and listening, so the kernel queues connections from now on and
/// the accept loop takes them once it runs. A caller that says "ready" right after handing the
/// listener over (sd_notify `READY=1`, `GET /readyz`) is therefore truthful, whatever the
/// scheduler does next. The future runs the accept loop until `shutdown`, then drains; dropped
/// before it ends, it marks the proxy not serving.
pub(crate) fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = Result<()>> + Send + 'static {
    // Checkers of a proxy built outside a runtime start now (a no-op when they run); endpoints
    // added from now on are not the start's first probe round (`/readyz`).
    shared.health.sync(shared.table.load().configs());
    shared.health.serving();
    shared.serving.store(true, Ordering::Relaxed);
    let serving = NotServingOnDrop(Arc::clone(&shared));
    async move {
        let result = accept_and_drain(shared, listener, shutdown).await;
        drop(serving);
        result
    }
}

/// Clears [`Shared::serving`] when the server's future ends or is dropped.
struct NotServingOnDrop(Arc<Shared>);

impl Drop for NotServingOnDrop {
    fn drop(&mut self) {
        self.0.serving.store(false, Ordering::Relaxed);
    }
}

/// The accept loop until `shutdown`, then the drain (see [`serve`]).
async fn accept_and_drain(
    shared: Arc<Shared>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let config = &shared.limits.config;
    let builders = Arc::new(Builders {
        http1: http1_builder(config),
        http2: http2_builder(config, {
            let shared = Arc::clone(&shared);
            move || {
                shared
                    .h2_stream_send_timeouts
                    .fetch_add(1, Ordering::Relaxed);
            }
        }),
        shed: builder(config, false),
    });
    let graceful = GracefulShutdown::new();
    // Connection tasks are tracked (not collected: each frees itself when its connection ends) and
    // cut by `abort` when a drain's time is up. A `JoinSet` kept every task's handle until the
    // loop reaped it: ~1,500 instructions per connection in the join and the handle's drop
    // (`bench/profile.sh` with `PROFILE_CLOSE`, 2026-12-03).
    let tasks = TaskTracker::new();
    let abort = CancellationToken::new();
    let _watch = shared
        .tls
        .as_ref()
        .map(|tls| AbortOnDrop(tokio::spawn(Arc::clone(tls).watch())));
    let _ = shared.runtime.set(tokio::runtime::Handle::current());
    tokio::pin!(shutdown);
    loop {
        // A place first, then the accept: at the limits the loop stops accepting (see `limits`).
        let admission = tokio::select! {
            admission = shared.limits.admission() => admission,
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = accepted;
        let admission = shared.limits.upgrade(admission);
        let conn = Arc::new(Conn::new(Arc::clone(&shared), peer.ip()));
        let watcher = graceful.watcher();
        let connection = connection(Arc::clone(&builders), watcher, stream, conn, admission);
        // Boxed: the task's future is then a pointer, and tokio's spawn and task cell move that
        // rather than the connection's whole state (~2 KiB), which they copied ~10 times per
        // connection (memcpy ~1,100 instructions per connection in the close profile,
        // docs/bench-2026-12-03e-task-box.md); the box costs one allocation.
        tasks.spawn(Box::pin(Abortable {
            connection,
            wait: abort.clone().cancelled_owned(),
            abort: abort.clone(),
            waiting: false,
        }));
    }
    shared.serving.store(false, Ordering::Relaxed);
    drop(listener);
    if shared.handing_over.load(Ordering::Relaxed) {
        drain_for_successor(graceful, &shared).await;
    } else {
        drain(graceful, &shared).await;
    }
    shared.abandoning.store(true, Ordering::Relaxed);
    abort.cancel();
    tasks.close();
    if let Some(log) = &shared.access {
        // The aborted connections queue their last lines as they are dropped; then the writer
        // writes and flushes everything before the process exits.
        let last = async {
            tasks.wait().await;
            log.flush().await
        };
        if !tokio::time::timeout(ACCESS_LOG_FLUSH, last)
            .await
            .unwrap_or(false)
        {
            tracing::warn!(
                limit = ?ACCESS_LOG_FLUSH,
                "access log: the last lines were not flushed in time; some may be lost"
            );
        }
    }
    Ok(())
}

/// How long a shutdown waits for the access log's writer to write and flush the last lines.
const ACCESS_LOG_FLUSH: Duration = Duration::from_secs(2);

pin_project_lite::pin_project! {
    /// A connection's task: the connection, ended by the drain's `abort` token when the drain's
    /// time is up (dropping the connection closes it). Written out rather than as an `async fn`
    /// (`CancellationToken::run_until_cancelled_owned`), whose state holds its argument beside
    /// the future it awaits: the connection future twice, ~2.3 KiB more per connection
    /// (`tests/idle_memory.rs`).
    struct Abortable<F> {
        #[pin]
        connection: F,
        // Polled once, which registers the task's waker with the token: a tokio task's waker
        // wakes the same task whatever poll it came from. Each later poll of the wait would take
        // the token's lock (~400 instructions per keep-alive request in all).
        #[pin]
        wait: tokio_util::sync::WaitForCancellationFutureOwned,
        abort: CancellationToken,
        waiting: bool,
    }
}

impl<F: Future<Output = ()>> Future for Abortable<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let this = self.project();
        if *this.waiting {
            if this.abort.is_cancelled() {
                return std::task::Poll::Ready(());
            }
        } else if this.wait.poll(cx).is_ready() {
            return std::task::Poll::Ready(());
        } else {
            *this.waiting = true;
        }
        this.connection.poll(cx)
    }
}

/// Accepts the next connection. Accept errors (such as running out of file descriptors) are
/// logged and retried after a pause.
async fn accept(listener: &TcpListener) -> (TcpStream, std::net::SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
}

/// hyper-util's auto (HTTP/1.1 or HTTP/2) connection builder, for the admin API and shed
/// connections; set as [`http1_builder`] and [`http2_builder`] (with `keep_alive` for HTTP/1.1),
/// but with hyper's default writes (`writev`: off the request path, their answers are few) and
/// half-closes honoured: their answers are the proxy's own and at once, so a client that sends its
/// request and shuts down its sending side (`printf ... | nc -N`) gets them.
pub(crate) fn builder(limits: &LimitsConfig, keep_alive: bool) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // As `http1_builder` and `http2_builder`, which say why (but `half_close`, above).
    builder
        .http1()
        .timer(TokioTimer::new())
        .half_close(true)
        .keep_alive(keep_alive)
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(max_header_list_size(limits))
        .keep_alive_interval(h2_keepalive_interval(limits))
        .keep_alive_timeout(limits.h2_keepalive_timeout);
    builder
}

/// hyper's HTTP/1.1 connection builder for served (keep-alive) client connections.
fn http1_builder(limits: &LimitsConfig) -> http1::Builder {
    let mut builder = http1::Builder::new();
    // hyper answers a request head over `max_buf_size` with 431 (RFC 6585 §5) and closes; the
    // header read timeout closes a connection whose head does not arrive in time (slowloris).
    // `half_close(false)` (hyper's default) unless `limits.http1_half_close`: a client that closes
    // its connection (FIN or RST) while its request waits for the response is gone, and the
    // connection ends at once, which drops the request's future: its upstream exchange closes,
    // its in-flight count and unanswered slot go, and it is counted in
    // `crossfade_client_aborts_total` and logged 499 (`forward::Awaiting`).
    // hyper reads the socket for it while the service future is pending (`Conn::poll_read_keep_alive`,
    // `mid_message_detect_eof`) only when half-closes are not honoured. A FIN cannot be told from a
    // half-close (`shutdown(SHUT_WR)`, `nc -N`) before a response is written, so it is taken as the
    // client giving up, as nginx does by default (`proxy_ignore_client_abort off`: "client
    // prematurely closed connection", 499), Envoy (HTTP/1 downstreams do not half-close, envoy#2066)
    // and Pingora (`abort_on_close`, on by default); HAProxy's own `abortonclose` notes say the
    // chance that a closed input channel is a user pressing STOP "is close to 100%". A client that
    // half-closes therefore gets only what was written before its FIN is read (a response body
    // still streaming then is cut off). The admin API and shed connections (`builder`) still
    // honour half-closes. `limits.http1_half_close: true` honours them here too, for deployments
    // whose clients half-close after their request (nginx's `proxy_ignore_client_abort on`): then
    // no abort is noticed while a request waits.
    // `writev(false)`: hyper copies a response's head and body chunks into one buffer and writes
    // it with one `write`, rather than a `writev` of the head and the queued chunks (the floor's
    // setting, as in shared/reference/perf: fewer instructions per small response; the buffer is
    // bounded by `max_buf_size` and released when the connection idles, vendor/hyper patch 2).
    builder
        .timer(TokioTimer::new())
        .half_close(limits.http1_half_close)
        .keep_alive(true)
        .writev(false)
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes);
    builder
}

/// hyper's HTTP/2 connection builder for served client connections; `on_send_timeout` is called
/// for each stream reset at `limits.send_timeout` (below).
fn http2_builder(
    limits: &LimitsConfig,
    on_send_timeout: impl Fn() + Send + Sync + 'static,
) -> http2::Builder<StreamExecutor> {
    let mut builder = http2::Builder::new(StreamExecutor);
    // `SETTINGS_ENABLE_CONNECT_PROTOCOL` (RFC 8441 §3): clients may open WebSockets over HTTP/2
    // with an extended CONNECT (`tunnel`).
    // `max_concurrent_streams`: SETTINGS_MAX_CONCURRENT_STREAMS, streams past it refused
    // (RFC 9113 §5.1.2). h2's own Rapid Reset bound (`max_pending_accept_reset_streams`, 20
    // streams reset before they were accepted) and its bound on streams it resets for protocol
    // errors (`max_local_error_reset_streams`, 1024, the "MadeYouReset" CVE-2025-8671) stay at
    // h2's defaults; resets after a request went upstream are counted by the connection
    // (`limits.h2_max_premature_resets`, `idle::Context::abusive`).
    // `send_timeout` (vendor/hyper patch 22): a response chunk waits at most `limits.send_timeout`
    // for the client to open its flow-control window (RFC 9113 §5.2), then its stream is reset
    // (`CANCEL`), which frees its `max_requests` place and its backend connection. The socket-level
    // bound (`linger::LingeringIo`) cannot see this wait: a client that grants no window reads
    // everything the proxy writes, so no write waits. Timed from the moment a chunk finds no
    // window and cleared by any window granted, as the socket-level bound is cleared by progress.
    builder
        .enable_connect_protocol()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(h2_connection_window(limits))
        .max_header_list_size(max_header_list_size(limits))
        .keep_alive_interval(h2_keepalive_interval(limits))
        .keep_alive_timeout(limits.h2_keepalive_timeout)
        .send_timeout(limits.send_timeout)
        .on_send_timeout(on_send_timeout)
        // The requests that can use a backend's 1xx carry their sender of them (vendor/hyper
        // patch 24, `interim::wants_informational`).
        .informational_responses(Some(crate::interim::wants_informational));
    builder
}

/// Spawns what hyper's HTTP/2 server hands it (each stream's task, `H2Stream`: the service's
/// future and then the response body's pipe, several hundred bytes) boxed, as hyper-util's
/// `TokioExecutor` but for the box: tokio's spawn and task cell then move a pointer rather than the
/// stream's state, which they copied ~5 times per stream (memcpy ~520 instructions per h2c request,
/// docs/bench-2026-12-03e-task-box.md); the box costs one allocation.
#[derive(Clone, Copy, Debug)]
struct StreamExecutor;

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(Box::pin(future));
    }
}

/// h2 answers a header list over SETTINGS_MAX_HEADER_LIST_SIZE with 431 itself (RFC 9113
/// §10.5.1), below hyper and uncounted: it is set above what `limits::head::check` refuses
/// (`limits.max_header_bytes` on the request's HTTP/1.1 form, at most 100 fields), which answers
/// and counts those, and stays as the memory bound on a decoded header list.
fn max_header_list_size(limits: &LimitsConfig) -> u32 {
    crate::limits::head::h2_header_list_cap(limits.max_header_bytes)
}

/// The receive window of each HTTP/2 client stream (RFC 9113 §6.9.2): what the proxy holds of a
/// request body that its backend reads slower than the client sends. hyper's default, 1 MiB.
const H2_STREAM_WINDOW: u32 = 1 << 20;

/// The receive window of an HTTP/2 client connection: room for every stream it may have open
/// ([`H2_STREAM_WINDOW`] × `limits.h2_max_concurrent_streams`, at most RFC 9113's 2^31 − 1), so
/// that only the stream window binds, as in nginx and Envoy. A proxy carries one client
/// connection's streams to many backends: with hyper's default (1 MiB, one stream's worth) a
/// single upload whose backend read slowly held the whole window, and every other request body on
/// that connection (a browser's API calls beside a file upload) stopped until it moved. Memory
/// is still bounded by the stream window per request in flight (`limits.max_requests`).
fn h2_connection_window(limits: &LimitsConfig) -> u32 {
    /// The largest flow-control window (RFC 9113 §6.9.1).
    const MAX_WINDOW: u64 = (1 << 31) - 1;
    let room = u64::from(H2_STREAM_WINDOW) * u64::from(limits.h2_max_concurrent_streams);
    u32::try_from(room.min(MAX_WINDOW)).unwrap_or(u32::MAX)
}

/// Keep-alive PINGs to clients (RFC 9113 §6.7) only when configured: `limits.h2_keepalive_interval`
/// of `0s` (the default) is off, see [`LimitsConfig`].
fn h2_keepalive_interval(limits: &LimitsConfig) -> Option<std::time::Duration> {
    Some(limits.h2_keepalive_interval).filter(|interval| !interval.is_zero())
}

/// One client connection: the TLS handshake when configured, then HTTP.
///
/// The handshake and the first request head must arrive within `limits.header_read_timeout` of the
/// accept: hyper's own header read timeout starts only once it knows the protocol, so a client that
/// connects and sends nothing (or a byte of the HTTP/2 preface) would otherwise hold its place
/// forever.
///
/// This future is every connection's task for the connection's life, so its size is memory per
/// idle connection (`bench/idle.sh`, `tests/idle_memory.rs`): a TLS connection's own future is a
/// separate box ([`tls_connection`]). Written inline here, its state (the handshake's outcome, a
/// `TlsStream` of ~1.4 KiB, and what `http` holds beside it) took ~1.3 KiB of every connection's
/// task, plaintext ones included, by `tests/idle_memory.rs`.
async fn connection(
    builders: Arc<Builders>,
    watcher: Watcher,
    mut stream: TcpStream,
    conn: Arc<Conn>,
    admission: Admission,
) {
    // Latency safety; no throughput effect in request/response traffic (shared/reference/perf).
    let _ = stream.set_nodelay(true);
    let deadline = crate::duration::later(
        Instant::now(),
        conn.shared.limits.config.header_read_timeout,
    );
    let conn = match conn.shared.proxy_protocol {
        false => conn,
        // Boxed, as the TLS handshake below: the header's read would otherwise be part of every
        // connection's future for its whole life.
        true => {
            match Box::pin(crate::proxy_protocol::client_address(&mut stream, deadline)).await {
                Ok(Some(client)) => Arc::new(Conn::new(Arc::clone(&conn.shared), client)),
                Ok(None) => conn,
                Err(refused) => {
                    conn.shared
                        .proxy_protocol_refused
                        .fetch_add(1, Ordering::Relaxed);
                    return tracing::debug!(%refused, "connection closed");
                }
            }
        }
    };
    let stream = LingeringIo::new(stream, Arc::clone(&conn));
    let ending = (admission, deadline);
    let Some(tls) = conn.shared.tls.clone() else {
        return http(&builders, watcher, (stream, None), conn, ending).await;
    };
    Box::pin(tls_connection(tls, builders, watcher, stream, conn, ending)).await;
}

/// A TLS client connection: the handshake by `deadline`, then HTTP in the protocol ALPN told.
async fn tls_connection(
    tls: Arc<Tls>,
    builders: Arc<Builders>,
    watcher: Watcher,
    stream: LingeringIo<Conn>,
    conn: Arc<Conn>,
    (admission, deadline): (Admission, Instant),
) {
    // A TLS client's first byte is a handshake record's (22); an HTTP/1.x client's, the first
    // letter of its method. Such a client is told it reached an HTTPS port, as nginx answers "The
    // plain HTTP request was sent to HTTPS port", rather than dropped without a word (trial 17,
    // T8: curl said "Empty reply from server" and the proxy logged nothing above debug).
    let mut first = [0; 1];
    let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut first)).await;
    if matches!(peeked, Ok(Ok(1))) && first[0].is_ascii_uppercase() {
        let reason = crate::local::LocalReason::BadHead;
        let status = http::StatusCode::BAD_REQUEST;
        conn.shared.local.count("", None, reason, status);
        return Box::pin(plain_http_on_tls(stream, deadline)).await;
    }
    // Boxed, as the shed path in `http`: the TLS handshake and session state (~8 KiB) would
    // otherwise stay part of the connection's future for its whole life.
    let accept = Box::pin(tokio::time::timeout_at(
        deadline,
        tls.acceptor().accept(stream),
    ));
    // The handshake's outcome is taken apart before the next `.await`: a `match` on `accept.await`
    // around that `.await` would keep the whole outcome (a `TlsStream`, ~1.4 KiB) in the future
    // beside the one `http` holds.
    let stream = match accept.await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return tracing::debug!(%error, "TLS handshake failed"),
        Err(_) => return tracing::debug!("TLS handshake timed out"),
    };
    if tls.picks_by_sni() {
        if let Some(name) = stream.get_ref().1.server_name() {
            let position = u32::try_from(tls.position(name)).unwrap_or(Conn::ANY_HOST);
            conn.sni_pair.store(position, Ordering::Relaxed);
        }
    }
    // ALPN told the protocol (RFC 9113 §3.2): `h2` or HTTP/1.1. HTTP/2 with prior knowledge is for
    // cleartext only (§3.3), so the first bytes are not looked at.
    let protocol = match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => Protocol::Http2,
        _ => Protocol::Http1,
    };
    let ending = (admission, deadline);
    http(&builders, watcher, (stream, Some(protocol)), conn, ending).await;
}

/// The answer to a plain HTTP/1.x request on the TLS listener: `400` saying to use `https://`,
/// then the connection closes. What the client sent of its request (up to 16 KiB, by `deadline`)
/// is read first, so that the close does not reset the connection under an unread head before
/// the client has read the answer.
async fn plain_http_on_tls<I: AsyncRead + AsyncWrite + Unpin>(mut stream: I, deadline: Instant) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const BODY: &str = "crossfade: this port serves HTTPS (tls:), and the request came as plain \
                        HTTP: use https://\n";
    let mut head = vec![0; 16 * 1024];
    let mut read = 0;
    while read < head.len() && !head[..read].windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, stream.read(&mut head[read..])).await {
            Ok(Ok(n)) if n > 0 => read += n,
            _ => break,
        }
    }
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: \
         close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let written = tokio::time::timeout_at(deadline, async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    });
    if let Err(error) = written
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    {
        tracing::debug!(%error, "plain HTTP on the TLS listener: the 400 was not sent");
    }
}

/// Serves HTTP on one client connection (within its place, `admission`), then closes it:
/// lingering (see [`crate::linger`]) when hyper shut it down gracefully and handed its stream back
/// to `conn`. Its protocol is `protocol` when ALPN told it, else read off its first bytes.
///
/// A `fn` returning an `async move` block, as [`serve_http`], rather than an `async fn`: that
/// keeps each argument's slot beside the local it moves into (rust-lang/rust#62958), and this
/// future is part of every plaintext connection's task for its life.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice (rust-lang/rust#62958)"
)]
fn http<I>(
    builders: &Builders,
    watcher: Watcher,
    (io, protocol): (I, Option<Protocol>),
    conn: Arc<Conn>,
    (admission, deadline): (Admission, Instant),
) -> impl Future<Output = ()> + Send + '_
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async move {
        let held = Arc::clone(&conn);
        let limits = &held.shared.limits;
        if let Admission::Shed(_) = admission {
            limits.count(ShedReason::Connections);
            let answer = move |grpc| {
                let response = conn.shared.limits.answer(ShedReason::Connections, grpc);
                let reason = crate::local::LocalReason::Overloaded;
                conn.shared
                    .local
                    .count("", None, reason, response_status(grpc));
                response
            };
            Box::pin(serve_shed(
                &builders.shed,
                TokioIo::new(io),
                answer,
                deadline,
            ))
            .await;
            return linger_after(limits, &held.back, Some(deadline)).await;
        }
        let _open = limits.open();
        // Shut down before any request (`idle::serve`): no answer to linger for.
        let (unasked, answered) =
            serve_http(builders, watcher, (io, protocol), conn, deadline).await;
        if let Some(status) = answered {
            let reason = crate::local::LocalReason::BadHead;
            held.shared.local.count("", None, reason, status);
        }
        if !unasked {
            linger_after(limits, &held.back, None).await;
        }
        drop(admission);
    }
}

/// hyper's connection over `io` until it ends; `io` is dropped on return. The protocol is
/// `protocol`, or read off the first bytes ([`Rewind::detect`]) within `deadline` and before
/// the drain asks. True when the connection closed before it carried any request (see
/// [`idle::serve`]; a client that sent no telling bytes in time is one), with the status hyper
/// answered an unacceptable request head with, if it did ([`crate::local::hyper_answer`]).
///
/// hyper's connection is boxed, one box per protocol: this future lives in the connection's task
/// for its whole life, and an HTTP/1.1 connection then holds HTTP/1.1's state alone (712 B in a
/// debug build), not space for HTTP/2's too (hyper-util's auto connection: 1,576 B). A `fn`
/// returning an `async move` block for the reason given at [`http()`]: as `async fn`s the two were
/// 128 B more per connection by `tests/idle_memory.rs`.
fn serve_http<I>(
    builders: &Builders,
    mut watcher: Watcher,
    (io, protocol): (I, Option<Protocol>),
    conn: Arc<Conn>,
    deadline: Instant,
) -> impl Future<Output = (bool, Option<http::StatusCode>)> + Send + '_
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut io = Rewind::new(io);
    async move {
        let protocol = match protocol {
            Some(protocol) => protocol,
            None => match detect(&mut io, &mut watcher, deadline).await {
                Some(protocol) => protocol,
                None => return (true, None),
            },
        };
        let timeout = conn.shared.limits.config.header_read_timeout;
        let context = Arc::clone(&conn);
        let ending = Arc::clone(&conn);
        // Each request's future is boxed: hyper keeps the space for one in flight allocated for the
        // connection's life, and the request path's future is ~5 KiB; boxed, an idle keep-alive
        // connection holds a pointer instead (one allocation per request, see bench/idle.sh).
        let service = service_fn(move |request| {
            // Read by the idle watch, on this task (hyper calls the service from the connection's).
            conn.requests.fetch_add(1, Ordering::Relaxed);
            if request.version() == Version::HTTP_2 {
                conn.multiplexed.store(true, Ordering::Relaxed);
            }
            request_within_limits(Arc::clone(&conn), request)
        });
        // Closes the connection when the drain asks, without a request by `deadline`, or idle.
        let activity = Activity::new(context, timeout);
        // HTTP/1.1 parses what `detect` read where it lies (vendor/hyper patch 18); HTTP/2 reads
        // it back through `Rewind`.
        let read = match protocol {
            Protocol::Http1 => io.take_read(),
            Protocol::Http2 => bytes::BytesMut::new(),
        };
        let io = TokioIo::new(io);
        let (result, unasked) = match protocol {
            Protocol::Http1 => {
                let http1 = &builders.http1;
                // 1xx responses from backends reach this connection's client (`interim`). In a
                // block: a local borrowed (here by `informational`) is kept in the future until its
                // scope ends, and hyper's connection is ~800 bytes that every idle connection would
                // hold twice (`tests/idle_memory.rs`).
                let connection = {
                    let mut connection = http1.serve_connection_with_read_buf(io, read, service);
                    let _ = ending.informational.set(connection.informational());
                    connection.with_upgrades()
                };
                let mut connection = Box::pin(connection);
                let shutdown =
                    |c: Pin<&mut http1::UpgradeableConnection<_, _>>| c.graceful_shutdown();
                // The response in flight went out without `Connection: close` (vendor/hyper
                // patch 15): the drain serves the connection on after it (`idle::serve`).
                let promised =
                    |c: Pin<&mut http1::UpgradeableConnection<_, _>>| c.wrote_keep_alive_head();
                // HTTP/1.x has no premature resets (`idle::Context::abusive` is never true).
                let close = (shutdown, promised, shutdown);
                let served =
                    idle::serve(connection.as_mut(), close, watcher, activity, deadline).await;
                // The client said it closes after its request, and the request was read whole
                // (vendor/hyper patch 17): it sends nothing more, so the close needs no lingering
                // (RFC 9112 §9.6) and the stream closes as soon as hyper lets it go.
                if connection.read_closing_message() {
                    ending.back.close_at_once();
                }
                served
            }
            Protocol::Http2 => {
                let mut connection = Box::pin(builders.http2.serve_connection(io, service));
                let shutdown = |c: Pin<&mut http2::Connection<_, _, _>>| c.graceful_shutdown();
                // GOAWAY promises nothing about a stream in flight.
                let promised = |_: Pin<&mut http2::Connection<_, _, _>>| false;
                // An abusive client: GOAWAY ENHANCE_YOUR_CALM (vendor/hyper patch 21), counted.
                let calm_downs = &ending.shared.h2_calm_downs;
                let calm = |c: Pin<&mut http2::Connection<_, _, _>>| {
                    calm_downs.fetch_add(1, Ordering::Relaxed);
                    c.enhance_your_calm();
                };
                let close = (shutdown, promised, calm);
                idle::serve(connection.as_mut(), close, watcher, activity, deadline).await
            }
        };
        // hyper answered a request head it could not take (400, 431, 414, 505) and closed.
        let mut answered = None;
        if let Err(error) = result {
            answered = crate::local::hyper_answer(&error);
            tracing::debug!(%error, "client connection ended with an error");
        }
        (unasked, answered)
    }
}

/// The protocol of a cleartext connection, read off its first bytes ([`Rewind::detect`]); `None`
/// (the connection is to close) when the client sent no telling bytes by `deadline` (a client that
/// connects and says nothing, or a few bytes of the HTTP/2 preface, holds no place longer than one
/// that sends half a request head), when reading failed, or when the drain asked first.
async fn detect<I: AsyncRead + Unpin>(
    io: &mut Rewind<I>,
    watcher: &mut Watcher,
    deadline: Instant,
) -> Option<Protocol> {
    // `biased`: the first bytes are looked at first, and the drain's watch is polled (its waker
    // registered, then taken out again) only while they have not come; in `select!`'s random
    // order half the connections whose request was already there paid for it (~150 instructions
    // per connection, docs/bench-2026-12-03e-task-box.md). When both are ready, the request is
    // taken and `idle::serve` sees the drain next, as the random order chose half the time.
    tokio::select! {
        biased;
        detected = tokio::time::timeout_at(deadline, io.detect()) => match detected {
            Ok(Ok(protocol)) => Some(protocol),
            Ok(Err(error)) => {
                tracing::debug!(%error, "reading the client's first bytes failed");
                None
            }
            Err(_) => {
                tracing::debug!("no request within the header read timeout; closing");
                None
            }
        },
        () = watcher.asked() => None,
    }
}

/// The lingering close, when hyper handed the connection's stream back to `back` (it shut the
/// stream down gracefully and the client had not closed its side); bounded by `limits` and `cap`.
/// Boxed: only the few connections that linger carry its state.
async fn linger_after(limits: &Limits, back: &HandBack, cap: Option<Instant>) {
    let Some(stream) = back.take() else {
        return;
    };
    if let Some(bounds) = linger::bounds(&limits.config, cap) {
        Box::pin(linger::linger(stream, bounds, &limits.lingered)).await;
    }
}

/// The future of one request, boxed: hyper keeps the space for one in flight allocated for the
/// connection's life, and boxed, an idle keep-alive connection holds a pointer instead.
type Answering = Pin<Box<dyn Future<Output = Result<Response<Limited>, Infallible>> + Send>>;

/// The status a shed answer stands for in the metrics: 503, also when a gRPC client gets it as a
/// gRPC status in an HTTP 200 (docs/metrics.md, "gRPC errors").
fn response_status(_grpc: bool) -> http::StatusCode {
    http::StatusCode::SERVICE_UNAVAILABLE
}

/// Serves one request if a place under `limits.max_requests` is free, else sheds it.
/// `conn` is held by the response body until it ends: the idle watch counts it as in flight.
///
/// Not an `async fn`: the decision is made when hyper calls the service, and the future returned
/// is [`forward::handle`]'s own, boxed as it is, without a second copy of the request or a layer
/// of combinators around it (each would move the response once more on its way out,
/// docs/bench-2026-12-01b-instructions.md).
fn request_within_limits(conn: Arc<Conn>, request: Request<Incoming>) -> Answering {
    let limits = &conn.shared.limits;
    let Some(permit) = limits.request() else {
        limits.count(ShedReason::Requests);
        let grpc = crate::grpc::is_grpc(request.headers());
        let mut response = limits.answer(ShedReason::Requests, grpc);
        // Answered unread: a pending body closes the connection (`unread`).
        if crate::unread::pending(request.version(), request.body()) {
            crate::unread::close(&mut response);
        }
        let reason = crate::local::LocalReason::Overloaded;
        conn.shared
            .local
            .count("", None, reason, response_status(grpc));
        let request_id = (conn.shared.request_ids.as_ref()).map(|ids| {
            let id = ids.of(request.headers());
            ids.answer(response.headers_mut(), &id);
            id
        });
        let line = shed_line(&conn, &request, &response, request_id.as_ref());
        let response = response.map(|body| Limited::new(body, None, None, line));
        return Box::pin(ready(Ok(response)));
    };
    if conn.shared.draining.load(Ordering::Relaxed) && request.version() < Version::HTTP_2 {
        return Box::pin(last_on_connection(conn, request, permit));
    }
    Box::pin(forward::handle(conn, request, permit))
}

/// The access log's line of a request shed by `limits.max_requests`, answered with `response`;
/// `request_id` is its ID when request IDs are on.
#[cold]
fn shed_line(
    conn: &Conn,
    request: &Request<Incoming>,
    response: &Response<crate::body::ProxyBody>,
    request_id: Option<&HeaderValue>,
) -> crate::access::Pending {
    let Some(log) = &conn.shared.access else {
        return crate::access::Pending::OFF;
    };
    let mut line = log.begin(&conn.peer, request, request_id);
    line.failed(&crate::Error::Overloaded(ShedReason::Requests));
    line.answered(response.status());
    line
}

/// A request on an HTTP/1.x connection while draining (a shutdown's or a handover's): its
/// response carries `Connection: close`, so the connection closes after it and the client opens
/// its next one elsewhere (another replica, or the socket a successor now accepts on; RFC 9112
/// §9.6). (A request already in flight when the drain began gets the same from hyper's graceful
/// shutdown if its response head is not written yet; if it is, the connection is served on after
/// that response, see [`idle::serve`].) Kept apart so that the usual path costs one flag load
/// more, no more.
async fn last_on_connection(
    conn: Arc<Conn>,
    request: Request<Incoming>,
    permit: RequestPlace,
) -> Result<Response<Limited>, Infallible> {
    let mut response = forward::handle(conn, request, permit).await?;
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    Ok(response)
}

/// Serves a connection over a connection limit (the data listener's `limits.max_connections` or the
/// admin API's `limits.max_admin_connections`): every request on it is answered by `answer`
/// ([`Limits::answer`](crate::limits::Limits::answer): `503` with `Retry-After` and
/// `Connection: close`, a gRPC status to a gRPC request; HTTP/2: GOAWAY after the first answer),
/// and it is cut at `deadline`.
/// Counting the shed is the caller's: only the data listener's feed `crossfade_shed_total`. Not
/// watched by the drain: it is that short-lived.
pub(crate) async fn serve_shed<I>(
    builder: &auto::Builder<TokioExecutor>,
    io: TokioIo<I>,
    answer: impl Fn(bool) -> Response<crate::body::ProxyBody> + Send + 'static,
    deadline: Instant,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let answered = Arc::new(Notify::new());
    let notify = Arc::clone(&answered);
    let service = service_fn(move |request: Request<Incoming>| {
        let response = answer(crate::grpc::is_grpc(request.headers()));
        notify.notify_one();
        async move { Ok::<_, Infallible>(response) }
    });
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let _ = tokio::time::timeout_at(deadline, async {
        tokio::select! {
            _ = connection.as_mut() => return,
            () = answered.notified() => {}
        }
        connection.as_mut().graceful_shutdown();
        let _ = connection.as_mut().await;
    })
    .await;
}

/// The drain of a shutdown: watched connections are closed as [`close_keep_alive`] says and waited
/// for, at most `drain_timeout`; the caller aborts what remains. Upgraded connections are closed
/// at once (a WebSocket gets 1001 "going away", RFC 6455 §7.4.1: the proxy is going down) and
/// waited for within the same bound.
async fn drain(graceful: GracefulShutdown, shared: &Shared) {
    let (open, timeout) = (graceful.count(), shared.drain_timeout);
    let upgraded = close_tunnels(shared);
    tracing::info!(open, upgraded, "draining client connections");
    let http = close_keep_alive(graceful, shared);
    let both = async { tokio::join!(http, tunnels_closed(shared)) };
    if tokio::time::timeout(timeout, both).await.is_err() {
        // `requests`: those the stop drops now, logged with the error `drain_timeout`.
        tracing::warn!(
            ?timeout,
            requests = in_flight_requests(shared),
            "drain timeout passed; closing remaining connections"
        );
    }
}

/// Closes the watched keep-alive connections without cutting one while its client may be
/// sending on it, for a shutdown and a handover alike; resolves once all have ended. HTTP/1.x
/// responses carry `Connection: close` from now on ([`last_on_connection`]); connections that
/// carried an HTTP/2 request get GOAWAY at once and finish their streams, HTTP/1.x ones with a
/// request in flight close after its response if it can still say `Connection: close`; the idle
/// HTTP/1.x ones are served on for `drain_grace` (at most half of `drain_timeout`, so that what
/// the grace lets in has time to end), or until every connection has ended, and then closed (see
/// [`GracefulShutdown::shutdown_after`]), and so are those whose response in flight had already
/// gone out without `Connection: close`, for `drain_grace` from its end ([`idle::serve`]). Under traffic every HTTP/1.x connection gets its
/// `Connection: close` response well within the grace, so only idle ones are closed, and a
/// client that idled this long has seldom a request on the wire at that moment.
async fn close_keep_alive(graceful: GracefulShutdown, shared: &Shared) {
    shared.draining.store(true, Ordering::Relaxed);
    graceful.shutdown_after(drain_grace(shared)).await;
}

/// How long idle HTTP/1.x connections are served on in a drain: `drain_grace`, at most half of
/// `drain_timeout` (so that what the grace lets in has time to end).
fn drain_grace(shared: &Shared) -> Duration {
    shared.drain_grace.min(shared.drain_timeout / 2)
}

/// The drain after a handover ([`crate::Proxy::hand_over`]): another process accepts now, so no
/// connection is cut while a client may be sending on it ([`close_keep_alive`]). Upgraded
/// connections are left alone until they end or `drain_timeout` passes; then they are closed as
/// by [`crate::Proxy::close_upgraded`] (1001 for WebSockets), which takes at most
/// `tunnel::CLOSE_WAIT` more.
async fn drain_for_successor(graceful: GracefulShutdown, shared: &Shared) {
    let (open, timeout) = (graceful.count(), shared.drain_timeout);
    tracing::info!(
        open,
        upgraded = open_tunnels(shared),
        "draining for the new process"
    );
    let http = close_keep_alive(graceful, shared);
    let both = async { tokio::join!(http, tunnels_ended(shared)) };
    if tokio::time::timeout(timeout, both).await.is_ok() {
        return;
    }
    let upgraded = close_tunnels(shared);
    tracing::warn!(
        ?timeout,
        upgraded,
        requests = in_flight_requests(shared),
        "drain timeout passed; closing upgraded connections and the rest"
    );
    let closed = tokio::time::timeout(crate::tunnel::CLOSE_WAIT, tunnels_closed(shared)).await;
    if closed.is_err() {
        tracing::warn!("upgraded connections did not close in time; cutting them");
    }
}

/// Requests dispatched upstream and not finished now, over every backend (what a stop whose
/// drain timed out drops: `crossfade_in_flight_requests` summed).
fn in_flight_requests(shared: &Shared) -> u64 {
    let stats = shared.stats.lock().unwrap_or_else(PoisonError::into_inner);
    stats.values().map(|s| s.in_flight()).sum()
}

/// Upgraded connections open now, over every backend.
fn open_tunnels(shared: &Shared) -> u64 {
    let stats = shared.stats.lock().unwrap_or_else(PoisonError::into_inner);
    stats.values().map(|s| s.tunnels().open()).sum()
}

/// Resolves once no upgraded connection is open, without asking any to close.
async fn tunnels_ended(shared: &Shared) {
    while open_tunnels(shared) > 0 {
        tokio::time::sleep(TUNNEL_POLL).await;
    }
}

/// Aborts the task when dropped (the certificate watcher ends with the accept loop).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Asks every open tunnel to close; returns how many were open.
fn close_tunnels(shared: &Shared) -> u64 {
    let stats = shared.stats.lock().unwrap_or_else(PoisonError::into_inner);
    stats.values().map(|s| s.tunnels().close_all()).sum()
}

/// Resolves once no tunnel is open; asks again at every look, so a tunnel upgraded by a request
/// that was still in flight when the drain began is closed too.
async fn tunnels_closed(shared: &Shared) {
    while close_tunnels(shared) > 0 {
        tokio::time::sleep(TUNNEL_POLL).await;
    }
}

#[cfg(test)]
mod window_tests {
    use super::*;

    #[test]
    fn the_connection_window_has_room_for_every_stream_up_to_the_largest_window() {
        let limits = |streams| LimitsConfig {
            h2_max_concurrent_streams: streams,
            ..LimitsConfig::default()
        };
        assert_eq!(h2_connection_window(&limits(128)), 128 << 20);
        assert_eq!(h2_connection_window(&limits(1)), 1 << 20);
        assert_eq!(h2_connection_window(&limits(2048)), (1 << 31) - 1);
        assert_eq!(h2_connection_window(&limits(u32::MAX >> 1)), (1 << 31) - 1);
    }
}
