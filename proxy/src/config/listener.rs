//! The traffic listener's settings: client-side limits and timeouts, and TLS termination.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Problem;
use crate::shown::outside;

/// hyper's smallest HTTP/1.1 read buffer (its `max_buf_size` panics below it), in bytes.
pub const MIN_HEADER_BYTES: usize = 8 * 1024;

/// The largest `limits.max_header_bytes` accepted, in bytes: far above any real client, low enough
/// that the read buffer of 10,000 connections cannot hold the machine's memory hostage.
pub const MAX_HEADER_BYTES: usize = 1024 * 1024;

/// The largest `limits.h2_max_concurrent_streams`: a client can open at most 2^30 streams on a
/// connection (odd ids below 2^31, RFC 9113 §5.1.1), so anything above is no bound.
pub const MAX_CONCURRENT_STREAMS: u32 = i32::MAX as u32;

/// The shortest `tls.watch_interval` above 0s: 100 ms. Certificates are renewed days before
/// they expire; polling the files more often only burns CPU (1 ms took 6.5 % of a core, trial
/// report 3 §12).
pub const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// Limits on what clients may ask of the proxy, and how long they may take to ask.
///
/// When a limit sheds load the client gets `503 Service Unavailable` with
/// `Retry-After: <retry_after seconds>` (RFC 9110 §15.6.4, §10.2.3), counted in
/// `crossfade_shed_total{reason}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a map of limits (header_read_timeout, max_connections, ...)"
)]
pub struct LimitsConfig {
    /// Longest time a client may take to send a complete HTTP/1.1 request head (request line and
    /// headers), counted from when the proxy starts waiting for it: on a new connection, and after
    /// each response on a keep-alive one (so it also bounds a keep-alive connection's idle time;
    /// an HTTP/2 connection with no stream open for this long gets GOAWAY, RFC 9113 §6.8).
    /// A client that trickles its headers (slowloris) is disconnected when it passes. It also bounds
    /// the TLS handshake. Default 10 s (HAProxy's recommended `timeout http-request`; nginx's
    /// `client_header_timeout` is 60 s, hyper's default 30 s).
    #[serde(with = "crate::duration::serde")]
    pub header_read_timeout: Duration,
    /// Longest time a client may send no byte of a request body it is uploading (nginx's
    /// `client_body_timeout`, an inactivity timer, not a bound on the whole upload). A client that
    /// stalls its upload gets `408 Request Timeout` (RFC 9110 §15.5.9), the upstream request is
    /// abandoned, and nothing counts against the backend (see `upload`): it is the client's fault,
    /// counted in `crossfade_client_body_failures_total{reason="timeout"}`. The upstream response
    /// timeout does not run while the client owes bytes, so this is what bounds a stalled upload.
    /// Above 0. Default 60 s (nginx's `client_body_timeout`).
    #[serde(with = "crate::duration::serde")]
    pub body_read_timeout: Duration,
    /// Longest a write to a client may wait while the client reads nothing (its receive buffer
    /// and the socket's send buffer full): past it the connection is closed, which ends its
    /// requests, frees their `max_requests` places and closes their backend connections, and is
    /// counted in `crossfade_send_timeouts_total`. Timed between two writes that made progress,
    /// not over a whole response (nginx's `send_timeout`), so a slow client that reads, a long
    /// download or a quiet stream (SSE, gRPC, a WebSocket waiting for its next message) is never
    /// cut by it; it also covers upgraded connections and the TLS layer. Over HTTP/2 it also bounds
    /// each stream's wait for the client to open its flow-control window, a WebSocket's stream
    /// (RFC 8441) included (RFC 9113 §5.2; a client
    /// that grants none keeps its socket drained, so no write waits): past it the stream is reset
    /// with `CANCEL`, which frees its place and backend connection, and is counted in
    /// `crossfade_h2_stream_send_timeouts_total`; any window granted restarts it.
    /// Above 0. Default 60 s (nginx's).
    #[serde(with = "crate::duration::serde")]
    pub send_timeout: Duration,
    /// Longest the proxy holds back the body of a request with `Expect: 100-continue` (RFC 9110
    /// §10.1.1) while the backend has given neither its `100 Continue` nor a final answer; then
    /// the body goes upstream anyway (and the client gets its 100), as a client that talks to a
    /// backend that ignores `Expect` does. A backend's 100 or final answer ends the wait at
    /// once, over HTTP/1.1 and h2c alike (see `expect`). At least 10 ms. Default 1 s (curl's
    /// wait, and Go's `Transport.ExpectContinueTimeout` in its default transport).
    #[serde(with = "crate::duration::serde")]
    pub expect_continue_timeout: Duration,
    /// Largest request head a client may send, in bytes: the HTTP/1.1 request line and headers, or
    /// HTTP/2's header list size (RFC 9113 §6.5.2: names, values and 32 bytes per field). Larger
    /// gets `431 Request Header Fields Too Large` (RFC 6585 §5), or `414 URI Too Long` (RFC 9110
    /// §15.5.15) when an HTTP/1.1 request line alone does not fit (hyper patch 9,
    /// `vendor/hyper/PATCHES.md`). Default 65536 (64 KiB: Envoy's
    /// 60 KiB default rounded up; nginx allows 4 × 8 KiB). Between 8192 and 1048576.
    #[serde(deserialize_with = "crate::de::count")]
    pub max_header_bytes: usize,
    /// Most client connections served at once. A connection accepted above it is answered
    /// `503` with `Retry-After` and closed (see [`crate::limits`] for the shed policy). Default
    /// 10000.
    #[serde(deserialize_with = "crate::de::count")]
    pub max_connections: usize,
    /// Most client requests in flight at once, over all connections and routes; a request above
    /// it is answered `503` with `Retry-After` without reaching a backend. Default 10000.
    #[serde(deserialize_with = "crate::de::count")]
    pub max_requests: usize,
    /// The `Retry-After` a shed client gets, in whole seconds (`"1s"`). Default 1 s.
    #[serde(with = "crate::duration::serde")]
    pub retry_after: Duration,
    /// Most admin API connections served at once. The admin listener applies the same shed policy
    /// as the traffic listener (see [`crate::limits`]): a connection above it is answered `503`
    /// with `Retry-After` and closed, and past the shed allowance the admin listener stops
    /// accepting. The admin listener also uses `header_read_timeout` (for the request head, a
    /// keep-alive connection's idle time and a request body, which gets `408 Request Timeout`,
    /// RFC 9110 §15.5.9, when it stops short) and `max_header_bytes`. Default 64: the admin API
    /// has a handful of clients (the CLI, Prometheus, probes), and a low cap bounds the file
    /// descriptors an unauthenticated client can hold there.
    #[serde(deserialize_with = "crate::de::count")]
    pub max_admin_connections: usize,
    /// Longest an upgraded connection (WebSocket or any other HTTP/1.1 Upgrade tunnel, see
    /// [`crate::tunnel`]) may pass no byte in either direction before the proxy closes it: a
    /// WebSocket with a close frame 1001 "going away" to both peers (RFC 6455 §7.4.1) as at a
    /// drain deadline, any other tunnel with a TCP FIN to both. Counted in
    /// `crossfade_tunnel_idle_closes_total`. `0s` turns it off; otherwise at least 10 ms and at
    /// most 366 days. Default 1 h: a peer that vanished without a FIN or RST (a crashed host, a
    /// dropped NAT mapping) is let go within the hour, while an idle but live WebSocket is not
    /// cut: applications that send no keep-alive pings (browsers never ping on their own) are
    /// common, so a read timeout of nginx's 60 s or an ALB's 60 s idle timeout would close them;
    /// 1 h is HAProxy's documented `timeout tunnel` example.
    #[serde(with = "crate::duration::serde")]
    pub tunnel_idle_timeout: Duration,
    /// Longest lingering close of a client connection (RFC 9112 §9.6, see [`crate::linger`]):
    /// when the proxy closes a connection on which the client may still be sending (an answer
    /// given before the request body was read: a backend's early 413, the proxy's own 503, 431 or
    /// 400), it shuts its sending side down (FIN) and reads and discards what the client sends
    /// until the client closes, for at most this long, so that the client reads the answer
    /// instead of a TCP reset. `0s` turns lingering off (the connection is closed at once);
    /// otherwise at least 10 ms. On a connection shed by `max_connections` the lingering also ends
    /// at that connection's `header_read_timeout` deadline. Default 30 s (nginx's
    /// `lingering_time`).
    #[serde(with = "crate::duration::serde")]
    pub lingering_time: Duration,
    /// Longest wait for the client's next byte during a lingering close; a client that sends
    /// nothing for this long is closed on. Above 0 and at most `lingering_time`. Default 5 s
    /// (nginx's `lingering_timeout`).
    #[serde(with = "crate::duration::serde")]
    pub lingering_timeout: Duration,
    /// Most bytes a lingering close reads and discards, in bytes; past them the connection is
    /// closed (the client gets a reset if it is still sending). Bounds the bandwidth a client
    /// can make the proxy spend on one answered connection. At least 1. Default 67108864 (64 MiB:
    /// the bandwidth-delay product of a 10 Gbit/s link at 50 ms, with room for socket buffers).
    #[serde(deserialize_with = "crate::de::count")]
    pub lingering_max_bytes: u64,
    /// How long an HTTP/2 client connection may receive nothing before the proxy sends it a PING
    /// (RFC 9113 §6.7) to learn whether the client is still there; `0s` (the default) sends
    /// none. Otherwise at least 10 ms. A client that does not answer within
    /// `h2_keepalive_timeout` is cut (no GOAWAY: it is presumed gone). Sent whether or not a
    /// stream is open, so it also lets go of a client that vanished without a FIN (a dropped NAT
    /// mapping, a phone that changed networks) while a long stream (a gRPC stream, a slow
    /// download) was open, which `header_read_timeout`'s idle close leaves alone. Off by default
    /// as in Envoy (`connection_keepalive` unset), nginx and HAProxy (which send no HTTP/2
    /// PINGs to clients), and tonic's server: with it on, hyper takes a lock and reads the clock
    /// for every frame received (work on every request), and idle connections without a stream
    /// are already closed by the idle watch. 20 s to 60 s suits NAT-heavy clients.
    #[serde(with = "crate::duration::serde")]
    pub h2_keepalive_interval: Duration,
    /// How long the client has to answer a keep-alive PING (`h2_keepalive_interval`) before the
    /// connection is closed. Above 0 and at least 10 ms. Default 20 s (hyper's and tonic's
    /// default). Unused while `h2_keepalive_interval` is `0s`.
    #[serde(with = "crate::duration::serde")]
    pub h2_keepalive_timeout: Duration,
    /// Most streams an HTTP/2 client may have open at once on one connection: the proxy
    /// advertises it as `SETTINGS_MAX_CONCURRENT_STREAMS` (RFC 9113 §5.1.2, §6.5.2), and a stream
    /// opened past it is refused with `RST_STREAM` `REFUSED_STREAM` (§8.7: never processed, safe
    /// to retry) and reaches no backend. Between 1 and 2147483647. Default 128 (nginx's
    /// `http2_max_concurrent_streams`; Envoy's edge guidance is 100; hyper's own default, used
    /// before, was 200). `max_requests` still bounds the requests over all connections.
    #[serde(deserialize_with = "crate::de::count")]
    pub h2_max_concurrent_streams: u32,
    /// Most premature resets an HTTP/2 client may make on one connection: streams it resets
    /// (`RST_STREAM`) after their request went to a backend and before the response head came
    /// back. Once there are more than this and they are more than half of the connection's
    /// requests, the connection gets `GOAWAY` `ENHANCE_YOUR_CALM` (RFC 9113 §7) and is closed
    /// (at the next frame the client sends, or at the idle watch's next look), counted in
    /// `crossfade_h2_calm_downs_total`. This is the "Rapid Reset" attack
    /// (CVE-2023-44487) in the form h2's own bound does not see: h2 already ends a connection on
    /// which more than 20 streams are reset before the proxy accepted them, but a client that
    /// waits until each request went upstream before resetting it makes the backends do work at
    /// the rate of round trips, never bounded by `h2_max_concurrent_streams`. At least 1.
    /// Default 500 (Envoy's `premature_reset_total_stream_count`, with its same "more than half"
    /// rule); gRPC clients cancelling calls at their deadline stay far below half.
    #[serde(deserialize_with = "crate::de::count")]
    pub h2_max_premature_resets: u64,
    /// Whether an HTTP/1.x client that shuts its sending side down while its request waits for
    /// the response head (a FIN: `nc -N`, `socat`, a client that calls `shutdown(SHUT_WR)` after
    /// its request) still gets its response: `true` honours such half-closes, as nginx's
    /// `proxy_ignore_client_abort on` does. Then the proxy does not read the client's socket while
    /// a request waits, so it notices neither a FIN nor a reset: a client that really went away
    /// keeps its upstream exchange until the backend answers or `upstream.response_timeout`
    /// passes (answered into a closed socket), and is not counted in
    /// `crossfade_client_aborts_total` nor logged 499. `false` (the default) takes a FIN or a
    /// reset while a request waits as the client gone (nginx's default, Envoy, Pingora): the
    /// upstream exchange is dropped at once. Before a response is written a FIN cannot be told
    /// from a close; nearly every client that gives up closes, so only set it for clients known
    /// to half-close. HTTP/2 is not affected (a stream reset or a closed connection always ends
    /// the request), nor are the admin API and shed connections (which always honour
    /// half-closes). Read at start (a reload reports a change as needing a restart).
    pub http1_half_close: bool,
}

/// TLS termination on the traffic listener (rustls, TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`).
///
/// The certificate and key are read at start; a change is picked up without a restart on SIGHUP
/// (`crossfade proxy`), through [`Proxy::reload_tls`](crate::Proxy::reload_tls), and by polling the
/// files every `watch_interval`. A new pair that does not load leaves the old one serving.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a map with cert, key, sni and watch_interval"
)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first: absolute, or relative to the config
    /// file's directory (see [`ProxyConfig::resolve_paths`](super::ProxyConfig::resolve_paths)).
    pub cert: PathBuf,
    /// PEM file with the leaf's private key (PKCS#8, PKCS#1 RSA or SEC1 EC): absolute, or
    /// relative to the config file's directory.
    pub key: PathBuf,
    /// More pairs, for more host names on one listener (one certificate per name, as an ingress
    /// serving several domains needs): a client whose SNI host name (RFC 6066 §3) a pair's leaf
    /// certificate names in its subjectAltName gets that pair, by the rules of RFC 6125 §6.4
    /// (exactly, case aside, or by a wildcard `*.example.com` covering one label). An exact name
    /// beats a wildcard; among equals, the earlier pair in the list, then `cert`/`key`. Any other
    /// client, and one that sends no SNI (a client that connects by IP address), gets
    /// `cert`/`key`. Each pair is reloaded as `cert`/`key` are, on its own. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni: Vec<TlsPair>,
    /// How often the files are checked for a change; `0s` checks on SIGHUP only, otherwise at
    /// least [`MIN_WATCH_INTERVAL`] (100 ms). Default 5 s: a renewed certificate (cert-manager,
    /// certbot) is served within seconds, and reading two small files that often costs nothing.
    #[serde(default = "default_watch_interval", with = "crate::duration::serde")]
    pub watch_interval: Duration,
}

/// One more certificate and key on the TLS listener, served by SNI ([`TlsConfig::sni`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map with cert and key")]
pub struct TlsPair {
    /// PEM file with the certificate chain, leaf first, as [`TlsConfig::cert`]; its leaf must
    /// name at least one DNS host in its subjectAltName (RFC 5280 §4.2.1.6), the names it is
    /// served for.
    pub cert: PathBuf,
    /// PEM file with the leaf's private key, as [`TlsConfig::key`].
    pub key: PathBuf,
}

fn default_watch_interval() -> Duration {
    Duration::from_secs(5)
}

// === impl LimitsConfig ===

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            expect_continue_timeout: Duration::from_secs(1),
            max_header_bytes: 64 * 1024,
            max_connections: 10_000,
            max_requests: 10_000,
            retry_after: Duration::from_secs(1),
            max_admin_connections: 64,
            tunnel_idle_timeout: Duration::from_secs(3600),
            lingering_time: Duration::from_secs(30),
            lingering_timeout: Duration::from_secs(5),
            lingering_max_bytes: 64 * 1024 * 1024,
            h2_keepalive_interval: Duration::ZERO,
            h2_keepalive_timeout: Duration::from_secs(20),
            h2_max_concurrent_streams: 128,
            h2_max_premature_resets: 500,
            http1_half_close: false,
        }
    }
}

/// The shortest timeout not taken for a slip: below it, most often `ms` was written for `s`.
const TIMEOUT_WARNING: Duration = Duration::from_secs(1);

/// The warning for the timeout `field` set to `timeout`, when it is above 0 and below 1 s:
/// `{timeout} is below 1s: {effect} (nginx's default is 60s); was it meant in seconds?`. Shared
/// by the client timeouts ([`LimitsConfig::warnings`]) and the upstream ones.
pub(super) fn below_a_second(field: String, timeout: Duration, effect: &str) -> Option<Problem> {
    (!timeout.is_zero() && timeout < TIMEOUT_WARNING).then(|| {
        let message = format!(
            "{} is below {}: {effect} (nginx's default is 60s); was it meant in seconds?",
            crate::duration::show(timeout),
            crate::duration::show(TIMEOUT_WARNING),
        );
        Problem::new(field, message)
    })
}

impl LimitsConfig {
    /// What is valid but most likely a slip, each naming its field: a timeout that cuts a client
    /// off (`header_read_timeout`, `body_read_timeout`, `send_timeout`) below 1 s, most often
    /// `ms` written for `s`: every client whose network stalls that long would lose its request
    /// or its response (nginx's defaults are 60 s). A warning, not an error: a test bench may
    /// want it.
    pub(super) fn warnings(&self) -> Vec<Problem> {
        [
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("send_timeout", self.send_timeout),
        ]
        .into_iter()
        .filter_map(|(field, timeout)| {
            below_a_second(
                format!("limits.{field}"),
                timeout,
                "every client whose network stalls that long is cut off",
            )
        })
        .collect()
    }

    pub(super) fn check(&self, problems: &mut Vec<Problem>) {
        let mut problem = |field: &str, message: String| {
            problems.push(Problem::new(format!("limits.{field}"), message));
        };
        if self.header_read_timeout.is_zero() {
            problem("header_read_timeout", "must be above 0s".to_owned());
        }
        if self.body_read_timeout.is_zero() {
            problem("body_read_timeout", "must be above 0s".to_owned());
        }
        if self.send_timeout.is_zero() {
            problem("send_timeout", "must be above 0s".to_owned());
        }
        if self.expect_continue_timeout.is_zero() {
            problem("expect_continue_timeout", "must be above 0s".to_owned());
        } else if let Err(message) =
            crate::duration::at_least_interval(self.expect_continue_timeout)
        {
            problem("expect_continue_timeout", message);
        }
        if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&self.max_header_bytes) {
            let message = outside(
                self.max_header_bytes,
                MIN_HEADER_BYTES,
                MAX_HEADER_BYTES,
                "bytes",
            );
            problem("max_header_bytes", message);
        }
        for (field, value) in [
            ("max_connections", self.max_connections),
            ("max_requests", self.max_requests),
            ("max_admin_connections", self.max_admin_connections),
        ] {
            // A tokio semaphore holds at most usize::MAX >> 3 permits.
            if value == 0 || value > u32::MAX as usize {
                problem(field, outside(value, 1, u32::MAX, ""));
            }
        }
        if let Err(message) = crate::duration::at_least_interval(self.tunnel_idle_timeout) {
            problem("tunnel_idle_timeout", message);
        }
        self.check_lingering(&mut problem);
        if let Err(message) = crate::duration::at_least_interval(self.h2_keepalive_interval) {
            problem("h2_keepalive_interval", message);
        }
        if self.h2_keepalive_timeout.is_zero() {
            problem("h2_keepalive_timeout", "must be above 0s".to_owned());
        } else if let Err(message) = crate::duration::at_least_interval(self.h2_keepalive_timeout) {
            problem("h2_keepalive_timeout", message);
        }
        if !(1..=MAX_CONCURRENT_STREAMS).contains(&self.h2_max_concurrent_streams) {
            let message = format!(
                "{} (RFC 9113 §5.1.1: stream ids are 31 bits)",
                outside(
                    self.h2_max_concurrent_streams,
                    1,
                    MAX_CONCURRENT_STREAMS,
                    ""
                )
            );
            problem("h2_max_concurrent_streams", message);
        }
        if self.h2_max_premature_resets == 0 {
            problem("h2_max_premature_resets", "must be at least 1".to_owned());
        }
        if self.retry_after.is_zero() || self.retry_after.subsec_nanos() != 0 {
            let message = format!(
                "{} must be a whole number of seconds, at least 1s (RFC 9110 §10.2.3)",
                crate::duration::show(self.retry_after)
            );
            problem("retry_after", message);
        }
    }
}

impl LimitsConfig {
    fn check_lingering(&self, problem: &mut impl FnMut(&str, String)) {
        if let Err(message) = crate::duration::at_least_interval(self.lingering_time) {
            problem("lingering_time", message);
        }
        if self.lingering_timeout.is_zero() {
            problem("lingering_timeout", "must be above 0s".to_owned());
        } else if !self.lingering_time.is_zero() && self.lingering_timeout > self.lingering_time {
            problem(
                "lingering_timeout",
                "must not be longer than lingering_time".to_owned(),
            );
        }
        if self.lingering_max_bytes == 0 {
            problem("lingering_max_bytes", "must be at least 1".to_owned());
        }
    }
}

// === impl TlsConfig ===

impl TlsConfig {
    pub(super) fn check(&self, problems: &mut Vec<Problem>) {
        let pairs = [("tls".to_owned(), &self.cert, &self.key)]
            .into_iter()
            .chain(
                (self.sni.iter().enumerate())
                    .map(|(i, p)| (format!("tls.sni[{i}]"), &p.cert, &p.key)),
            );
        for (pair, cert, key) in pairs {
            for (field, path) in [("cert", cert), ("key", key)] {
                if path.as_os_str().is_empty() {
                    problems.push(Problem::new(
                        format!("{pair}.{field}"),
                        "must name a PEM file",
                    ));
                }
            }
        }
        let interval = self.watch_interval;
        if !interval.is_zero() && interval < MIN_WATCH_INTERVAL {
            let message = format!(
                "{} is below the minimum of {} (0s checks on SIGHUP only)",
                crate::duration::show(interval),
                crate::duration::show(MIN_WATCH_INTERVAL)
            );
            problems.push(Problem::new("tls.watch_interval", message));
        }
    }
}
