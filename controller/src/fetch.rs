//! One HTTP(S) request at a time, bounded in time and in body size: what the analysis providers
//! ([`crate::analysis::checks`]), the rollout gates ([`crate::gates`]) and the Kubernetes mode's
//! scrapes of the proxies' `/metrics` ([`crate::kube::scrape`]) send.
//!
//! HTTP/1.1 over plain TCP or rustls (the system's trusted roots, loaded once). Pooled keep-alive
//! connections are reused between analyses.
//!
//! Stale keep-alive connections (case C17, hyperium/hyper#3553), as the proxy's upstream handles
//! them: an idle pooled connection is never reused after [`IDLE_TIMEOUT`] (4 s), below the
//! keep-alive of the servers scraped, so a server does not close a connection just as a request
//! reuses it. hyper-util's pool drops a connection found closed at checkout and re-sends a request
//! found canceled before any byte of it was written on a reused connection
//! (`retry_canceled_requests`, on by default). What it leaves is the close that races the write:
//! the server's FIN or RST arrives just after the request went out and the exchange fails before the
//! response head (`connection closed before message completed`). Then a GET or HEAD without a body
//! (safe and idempotent, RFC 9110 §9.2.1–§9.2.2) is sent once more, on a fresh connection, within
//! the same deadline, and logged at debug. A request with a body (a gate's POST) is never sent twice.
//! Each re-send is counted in `crossfade_fetch_resends_total{reason}` ([`Resends`]), so that a
//! server whose keep-alive races the controller's requests shows as a rising rate there.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[cfg(test)]
mod tests;

/// The largest response body read, in bytes (1 MiB); a longer one is an error.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// How long an idle pooled connection may be reused: 4 s, the proxy's `upstream.idle_timeout`.
///
/// Below the idle keep-alive timeouts of the servers the controller reads: Node.js's 5 s, the
/// 10 s `limits.header_read_timeout` after which Crossfade's own proxy and admin listeners close an
/// idle connection, nginx's 75 s. With analyses every 10 s, a longer one (30 s) reused
/// connections that those servers were closing at that very moment (case C17). Expiry
/// runs on tokio's clock: a connection idle this long is dropped at checkout, and idle ones are
/// closed by hyper-util's reaper task.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// A response: status and the whole body.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The response status.
    pub status: StatusCode,
    /// The body, at most [`MAX_BODY_BYTES`].
    pub body: Bytes,
    /// A redirect's `Location` header, as sent (redirects are not followed).
    pub location: Option<String>,
}

impl Reply {
    /// Why a non-2xx answer is not one: `status 500: boom`; a redirect (3xx with a `Location`)
    /// says where it points and that it is not followed (user37b: a gate whose URL redirected
    /// was refused as `status 302`, with no hint to write the URL it points to).
    pub fn refusal(&self) -> String {
        let mut why = format!("status {}", self.status.as_u16());
        if let Some(location) = self
            .location
            .as_deref()
            .filter(|_| self.status.is_redirection())
        {
            let location: String = location.chars().take(200).collect();
            why.push_str(&format!(
                ", a redirect to {location}, which is not followed: write the URL it points to"
            ));
        }
        let excerpt = self.excerpt();
        if !excerpt.is_empty() {
            why.push_str(&format!(": {excerpt}"));
        }
        why
    }

    /// The start of the body as text, for messages: at most 200 characters, one line.
    pub fn excerpt(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        // One line, runs of white space (a pretty-printed JSON body's indentation) as one space.
        let line: Vec<&str> = text
            .split(|c: char| c.is_whitespace() || c.is_control())
            .filter(|w| !w.is_empty())
            .collect();
        line.join(" ").chars().take(200).collect()
    }
}

/// Why a request was sent once more: the closed value set of the `reason` label of
/// `crossfade_fetch_resends_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResendReason {
    /// The server closed the connection (FIN) before the response head: hyper's incomplete
    /// message, a canceled or closed connection, an unexpected EOF. Label value `closed`.
    Closed,
    /// The connection was reset (RST), aborted, or broke on the write (`EPIPE`) before the
    /// response head. Label value `reset`.
    Reset,
}

/// Every [`ResendReason`], in label order.
pub const RESEND_REASONS: [ResendReason; 2] = [ResendReason::Closed, ResendReason::Reset];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The counter of the fetch client's re-sends, `crossfade_fetch_resends_total{reason}`: one
/// process-wide client, so one process-wide counter ([`Resends::global`]), registered by
/// [`Resends::register`]. Tests count into their own ([`Resends::default`]).
#[derive(Clone, Debug, Default)]
pub struct Resends {
    family: Family<ReasonLabels, Counter>,
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;
type PlainClient = Client<HttpConnector, Full<Bytes>>;

/// The process-wide client for `https://`: built on first use; `Err` holds why TLS is unavailable
/// (no trusted roots could be loaded).
fn tls() -> &'static Result<HttpsClient, String> {
    static CLIENT: OnceLock<Result<HttpsClient, String>> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| format!("cannot load the system's trusted root certificates: {e}"))?
            .https_only()
            .enable_http1()
            .build();
        Ok(builder().build(connector))
    })
}

// === impl ResendReason ===

impl ResendReason {
    /// The label value: `closed` or `reset`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResendReason::Closed => "closed",
            ResendReason::Reset => "reset",
        }
    }
}

// === impl Resends ===

impl Resends {
    /// The process-wide counter that [`send`] counts into.
    pub fn global() -> &'static Resends {
        static RESENDS: OnceLock<Resends> = OnceLock::new();
        RESENDS.get_or_init(Resends::default)
    }

    /// Registers the process-wide counter in `registry` (created with the prefix `crossfade`) as
    /// `fetch_resends` (a counter: `crossfade_fetch_resends_total`), its series for every
    /// [`ResendReason`] created at 0 so that `increase()` sees the first re-send. Called by
    /// [`crate::metrics::RolloutMetrics::register`]; each registry gets the same counter.
    pub fn register(registry: &mut Registry) {
        let resends = Resends::global();
        for reason in RESEND_REASONS {
            let _ = resends.family.get_or_create(&labels(reason));
        }
        registry.register(
            "fetch_resends",
            "GET or HEAD requests of the controller's HTTP client (analysis checks, gates, scrapes) \
             sent once more because their connection closed or was reset before the response head, by reason",
            resends.family.clone(),
        );
    }

    /// Re-sends counted so far for `reason`.
    pub fn get(&self, reason: ResendReason) -> u64 {
        self.family.get_or_create(&labels(reason)).get()
    }

    fn count(&self, reason: ResendReason) {
        self.family.get_or_create(&labels(reason)).inc();
    }
}

fn labels(reason: ResendReason) -> ReasonLabels {
    ReasonLabels {
        reason: reason.as_str(),
    }
}

/// Sends one request and reads the whole response within `timeout`.
///
/// `url` must be absolute (`http://` or `https://`); `body`, when given, is sent as
/// `application/json`. Any status is a reply; only transport failures are errors. A GET or HEAD
/// without a body whose connection closed or reset before the response head is sent once more
/// within the same `timeout` (see the module docs) and counted in [`Resends::global`]; any other
/// request is sent once.
///
/// # Errors
/// A short lowercase description naming the URL: a bad URL or header, connect/TLS failures,
/// `timed out after 5s`, a body above [`MAX_BODY_BYTES`].
pub async fn send(
    method: Method,
    url: &str,
    headers: &BTreeMap<String, String>,
    body: Option<Bytes>,
    timeout: Duration,
) -> Result<Reply, String> {
    let request = (method, url, headers, body);
    send_counted(request, timeout, Resends::global()).await
}

/// [`send`], counting re-sends in `resends`.
async fn send_counted(
    (method, url, headers, body): (Method, &str, &BTreeMap<String, String>, Option<Bytes>),
    timeout: Duration,
    resends: &Resends,
) -> Result<Reply, String> {
    let exchange = exchange(method, url, headers, body, resends);
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result.map_err(|e| format!("{url}: {e}")),
        Err(_) => Err(format!(
            "{url}: timed out after {}",
            crate::spec::human(timeout)
        )),
    }
}

async fn exchange(
    method: Method,
    url: &str,
    headers: &BTreeMap<String, String>,
    body: Option<Bytes>,
    resends: &Resends,
) -> Result<Reply, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err("not an http:// or https:// URL".into());
    }
    let https = uri.scheme_str() == Some("https");
    let request = || build(method.clone(), uri.clone(), headers, body.clone());
    let response = match start(request()?, https)?.await {
        Err(e) => match resendable(&method, body.is_none(), &e) {
            Some(reason) => {
                tracing::debug!(url, error = %describe(&e), reason = reason.as_str(), "connection closed before the response head, sending once more");
                resends.count(reason);
                start(request()?, https)?.await
            }
            None => Err(e),
        },
        first => first,
    }
    .map_err(|e| describe(&e))?;
    let status = response.status();
    let location = response
        .headers()
        .get(http::header::LOCATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    Ok(Reply {
        status,
        body,
        location,
    })
}

/// The request: `crossfade` as user agent, JSON accepted unless `headers` name their own
/// `Accept` (the proxies' `/metrics` scrape asks for a text format), and sent when there is a
/// body.
fn build(
    method: Method,
    uri: http::Uri,
    headers: &BTreeMap<String, String>,
    body: Option<Bytes>,
) -> Result<Request<Full<Bytes>>, String> {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(http::header::USER_AGENT, "crossfade");
    if !headers
        .keys()
        .any(|name| name.eq_ignore_ascii_case("accept"))
    {
        request = request.header(http::header::ACCEPT, "application/json");
    }
    if body.is_some() {
        request = request.header(http::header::CONTENT_TYPE, "application/json");
    }
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    request
        .body(Full::new(body.unwrap_or_default()))
        .map_err(|e| format!("bad request: {e}"))
}

/// The client for `http://`: plain TCP, whatever the state of TLS.
fn plain() -> &'static PlainClient {
    static PLAIN: OnceLock<PlainClient> = OnceLock::new();
    PLAIN.get_or_init(|| builder().build(HttpConnector::new()))
}

/// The pool settings of both clients: [`IDLE_TIMEOUT`] on tokio's clock.
fn builder() -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new());
    builder
}

/// Starts `request` on the pooled client of its scheme.
fn start(request: Request<Full<Bytes>>, https: bool) -> Result<ResponseFuture, String> {
    Ok(match https {
        true => tls().as_ref().map_err(Clone::clone)?.request(request),
        false => plain().request(request),
    })
}

/// Why a request that failed with `error` may be sent once more, if it may: a GET or HEAD with no
/// body (safe and idempotent, RFC 9110 §9.2.1–§9.2.2) whose connection was closed or reset before
/// the response head arrived (hyper's incomplete message, canceled or closed, or an EOF:
/// [`ResendReason::Closed`]; an I/O reset, abort or broken pipe: [`ResendReason::Reset`]). Never a
/// connect failure: that is no stale connection.
///
/// hyper-util's error does not say whether the connection was a reused one, so a fresh connection
/// reset before the head is re-sent too; for a bodiless GET or HEAD that is as safe, and it is still
/// at most one more attempt.
fn resendable(
    method: &Method,
    bodiless: bool,
    error: &hyper_util::client::legacy::Error,
) -> Option<ResendReason> {
    if !bodiless || !matches!(*method, Method::GET | Method::HEAD) || error.is_connect() {
        return None;
    }
    let mut chain = std::iter::successors(Some(error as &(dyn std::error::Error + 'static)), |e| {
        e.source()
    });
    chain.find_map(|e| match e.downcast_ref::<hyper::Error>() {
        Some(h) if h.is_incomplete_message() || h.is_canceled() || h.is_closed() => {
            Some(ResendReason::Closed)
        }
        Some(_) => None,
        None => e.downcast_ref::<std::io::Error>().and_then(|io| {
            use std::io::ErrorKind::*;
            match io.kind() {
                ConnectionReset | ConnectionAborted | BrokenPipe => Some(ResendReason::Reset),
                UnexpectedEof => Some(ResendReason::Closed),
                _ => None,
            }
        }),
    })
}

/// The error with its sources: `client error (Connect): tcp connect error: Connection refused`.
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
